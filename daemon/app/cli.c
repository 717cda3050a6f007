#include "app/cli.h"

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "build_config.h"
#include "app/audit_cmd.h"
#include "app/bundles.h"
#include "app/daemon.h"
#include "app/policy_cmd.h"
#include "app/verify_cmd.h"
#include "base/args.h"
#include "base/clock.h"
#include "base/config.h"
#include "ops/health_cmd.h"
#include "verify/verifier.h"

#define DEFAULT_CONFIG ATTESTPROXY_SYSCONFDIR "/attestproxy/attestproxy.conf"

static const char usage_main[] =
    "Usage: attestproxy [COMMAND] [OPTIONS]\n"
    "\n"
    "An attesting reverse proxy for AWS Nitro Enclaves: local apps send plain HTTP to\n"
    "127.0.0.1; attestproxy verifies the enclave's attestation document, pins the TLS key it\n"
    "attested and relays each request only over that pinned channel.\n"
    "\n"
    "Commands:\n"
    "  run [-c FILE]            run in the foreground, logging to stderr (the default command)\n"
    "  check-config [-c FILE]   validate a configuration and print it with defaults filled in\n"
    "  verify [OPTIONS] FILE    check one attestation document offline\n"
    "  attest [-c FILE] SERVICE connect once to SERVICE's enclave, attest it, print the result\n"
    "  health [-c FILE] [--live] ask the running daemon's admin API: exit 0 if ready (alive)\n"
    "  policy keygen|sign|verify|show  signing keys and signed policy bundles\n"
    "  audit verify FILE...     check the audit log's hash chain (and archived documents)\n"
    "  help [COMMAND]           show help for a command\n"
    "\n"
    "Options:\n"
    "  -c, --config FILE        configuration file (default " DEFAULT_CONFIG ")\n"
    "  -h, --help               show this help\n"
    "  -V, --version            show the version\n"
    "\n"
    "Signals: SIGHUP reloads the configuration (an invalid one is logged and ignored);\n"
    "SIGTERM and SIGINT stop the daemon after in-flight exchanges finish (shutdown_timeout).\n"
    "\n"
    "Exit status: 0 success, 1 runtime failure or rejected document, 2 usage or configuration\n"
    "error, 3 (audit verify) a torn last line.\n";

static const char usage_run[] =
    "Usage: attestproxy [run] [-c FILE]\n"
    "\n"
    "Runs the proxy in the foreground until SIGTERM or SIGINT; logs one line per event to\n"
    "stderr (log_format = logfmt | json). SIGHUP reloads the configuration.\n"
    "\n"
    "Options:\n"
    "  -c, --config FILE   configuration file (default " DEFAULT_CONFIG ")\n"
    "  -h, --help          show this help\n"
    "\n"
    "Exit status: 0 after a clean stop, 1 runtime failure, 2 invalid configuration.\n";

static const char usage_check[] =
    "Usage: attestproxy check-config [-c FILE]\n"
    "       attestproxy check-config --reference\n"
    "\n"
    "Loads and validates the configuration, then prints the effective configuration with every\n"
    "default filled in. Errors are reported as FILE:LINE: message. Valid but weak settings (a\n"
    "measurement set without pcr0) are reported on stderr as warning: lines. A policy_bundle\n"
    "is verified as at start (signature, key, service, expiry, version against state_dir);\n"
    "nothing is written.\n"
    "\n"
    "Options:\n"
    "  -c, --config FILE   configuration file (default " DEFAULT_CONFIG ")\n"
    "  --reference         print every key with its default, range and meaning (Markdown)\n"
    "  -h, --help          show this help\n"
    "\n"
    "Exit status: 0 valid, 2 invalid or unreadable.\n";

static const char usage_attest[] =
    "Usage: attestproxy attest [-c FILE] SERVICE\n"
    "\n"
    "Connects once to SERVICE's enclave (its upstream), fetches evidence over that TLS\n"
    "connection and verifies it exactly as the proxy would (trust root, policy, nonce,\n"
    "binding), then prints the verified summary as JSON on stdout: pin, module_id, PCRs,\n"
    "document time, expiry, policy digest. Nothing is relayed and no listener is opened.\n"
    "Logs go to stderr.\n"
    "\n"
    "Options:\n"
    "  -c, --config FILE   configuration file (default " DEFAULT_CONFIG ")\n"
    "  -h, --help          show this help\n"
    "\n"
    "Exit status: 0 attested, 1 refused or unreachable (the reason on stderr), 2 usage,\n"
    "configuration error or unknown service.\n";

static const struct option config_opts[] = {
    {"config", required_argument, NULL, 'c'},
    {"reference", no_argument, NULL, 'R'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* Parses the options shared by run and check-config. Returns -1 to continue, or an exit code. */
static int parse_config_opts(int argc, char **argv, const char *usage, const char **path,
                             bool *reference)
{
    char bad[8];
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+c:h", config_opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            *path = optarg;
            break;
        case 'h':
            fputs(usage, stdout);
            return EXIT_OK;
        case 'R':
            if (reference != NULL) {
                *reference = true;
                break;
            }
            fprintf(stderr, "attestproxy: --reference belongs to check-config\n");
            fputs(usage, stderr);
            return EXIT_USAGE;
        default:
            fprintf(stderr, "attestproxy: unknown option or missing value: %s\n",
                    args_refused(argc, argv, bad, sizeof(bad)));
            fputs(usage, stderr);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "attestproxy: unexpected argument '%s'\n", argv[optind]);
        fputs(usage, stderr);
        return EXIT_USAGE;
    }
    return -1;
}

static int cmd_run(int argc, char **argv)
{
    const char *path = DEFAULT_CONFIG;
    int rc = parse_config_opts(argc, argv, usage_run, &path, NULL);
    if (rc >= 0)
        return rc;
    return daemon_run(path);
}

static void print_warning(void *arg, const char *service, const char *msg)
{
    (void)arg;
    fprintf(stderr, "warning: service %s: %s\n", service, msg);
}

static int cmd_check_config(int argc, char **argv)
{
    const char *path = DEFAULT_CONFIG;
    char err[CONFIG_ERROR_MAX];
    struct config *cfg;
    struct verifier *verifier;
    bool reference = false;
    int rc = parse_config_opts(argc, argv, usage_check, &path, &reference);
    if (rc >= 0)
        return rc;
    if (reference) {
        config_print_reference(stdout);
        return EXIT_OK;
    }
    if (config_load(path, &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return EXIT_USAGE;
    }
    /* A policy bundle file is verified as `run` verifies it (signature, key, service, expiry,
     * version against state_dir), so that one a reload would refuse is caught here; a refused
     * file is an error even where run would fall back to the last accepted bundle in state_dir.
     * Nothing is written. */
    if (bundles_apply(cfg, NULL, NULL, NULL, clock_wall_ms(), BUNDLES_DRY_RUN | BUNDLES_STRICT, err,
                      sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        config_free(cfg);
        return EXIT_USAGE;
    }
    /* The trust root is loaded as `run` would load it: a root_ca that cannot be read or holds
     * no single certificate makes `run` exit 2, so it fails the check too. */
    verifier = verifier_new(cfg->daemon.root_ca[0] ? cfg->daemon.root_ca : NULL, err, sizeof(err));
    if (verifier == NULL) {
        fprintf(stderr, "%s: %s\n", path, err);
        config_free(cfg);
        return EXIT_USAGE;
    }
    verifier_free(verifier);
    config_print(cfg, stdout);
    config_warnings(cfg, print_warning, NULL);
    config_free(cfg);
    return EXIT_OK;
}

static int cmd_attest(int argc, char **argv)
{
    char bad[8];
    const char *path = DEFAULT_CONFIG;
    const char *service;
    int c;

    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+c:h", config_opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            path = optarg;
            break;
        case 'h':
            fputs(usage_attest, stdout);
            return EXIT_OK;
        default:
            fprintf(stderr, "attestproxy: attest: unknown option or missing value: %s\n",
                    args_refused(argc, argv, bad, sizeof(bad)));
            fputs(usage_attest, stderr);
            return EXIT_USAGE;
        }
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "attestproxy: attest needs exactly one SERVICE\n");
        fputs(usage_attest, stderr);
        return EXIT_USAGE;
    }
    service = argv[optind];
    return daemon_attest(path, service);
}

struct command {
    const char *name;
    int (*main)(int argc, char **argv);
    const char *usage; /* NULL: the command prints its own help on --help */
};

static const struct command commands[] = {
    {"run", cmd_run, usage_run},       {"check-config", cmd_check_config, usage_check},
    {"verify", verify_cmd_main, NULL}, {"attest", cmd_attest, usage_attest},
    {"health", health_cmd_main, NULL}, {"policy", policy_cmd_main, NULL},
    {"audit", audit_cmd_main, NULL},
};

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    }
    return NULL;
}

int cli_main(int argc, char **argv)
{
    const struct command *cmd;

    if (argc >= 2 && (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0)) {
        printf("attestproxy %s\n", ATTESTPROXY_VERSION);
        return EXIT_OK;
    }
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(usage_main, stdout);
        return EXIT_OK;
    }
    if (argc >= 2 && strcmp(argv[1], "help") == 0) {
        if (argc == 2) {
            fputs(usage_main, stdout);
            return EXIT_OK;
        }
        cmd = find_command(argv[2]);
        if (cmd == NULL) {
            fprintf(stderr, "attestproxy: unknown command '%s' (see attestproxy --help)\n",
                    argv[2]);
            return EXIT_USAGE;
        }
        if (cmd->usage != NULL) {
            fputs(cmd->usage, stdout);
            return EXIT_OK;
        }
        {
            char *help_argv[] = {argv[2], "--help", NULL};
            return cmd->main(2, help_argv);
        }
    }
    /* No command, or an option first: `run` is the default command. */
    if (argc < 2 || argv[1][0] == '-')
        return cmd_run(argc, argv);
    cmd = find_command(argv[1]);
    if (cmd == NULL) {
        fprintf(stderr, "attestproxy: unknown command '%s' (see attestproxy --help)\n", argv[1]);
        return EXIT_USAGE;
    }
    return cmd->main(argc - 1, argv + 1);
}
