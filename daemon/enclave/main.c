/*
 * attestproxy-enclave: the companion that runs inside a Nitro enclave. It generates its TLS
 * key in memory, serves native-profile evidence from the NSM over that key's TLS connections,
 * and relays every other request to the application in the enclave (docs/enclave.md).
 *
 * The composition root of the enclave side: it may use base, verify, proxy and ops, and
 * nothing of daemon/app (scripts/check-layers).
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <uv.h>

#include "build_config.h"
#include "base/log.h"
#include "enclave/companion.h"
#include "enclave/enclave_config.h"
#include "enclave/identity.h"
#include "enclave/nsm.h"

#define EXIT_OK      0
#define EXIT_RUNTIME 1
#define EXIT_USAGE   2

#define DEFAULT_CONFIG ATTESTPROXY_SYSCONFDIR "/attestproxy/enclave.conf"

static const char usage[] =
    "Usage: attestproxy-enclave [-c FILE] [--check]\n"
    "\n"
    "The enclave side of attestproxy: runs inside an AWS Nitro Enclave, generates its TLS key\n"
    "in memory, answers GET /.well-known/nitro-attestation?nonce=HEX with a fresh NSM\n"
    "attestation document bound to that key, and relays every other request as plain HTTP/1.1\n"
    "to the application in the enclave.\n"
    "\n"
    "Options:\n"
    "  -c, --config FILE   configuration file (default " DEFAULT_CONFIG ")\n"
    "  -t, --check         load the configuration and the NSM backend, then exit\n"
    "  -h, --help          show this help\n"
    "  -V, --version       show the version\n"
    "\n"
    "Signals: SIGTERM and SIGINT stop it (open connections are closed).\n"
    "\n"
    "Exit status: 0 clean stop, 1 runtime failure (the NSM device missing, a listener that\n"
    "cannot bind), 2 usage or configuration error.\n";

struct run {
    uv_loop_t loop;
    uv_signal_t sigterm, sigint;
    struct companion co;
};

static void on_signal(uv_signal_t *s, int signum)
{
    struct run *r = s->data;
    log_event(LOG_LEVEL_INFO, "stopping", "signal", signum == SIGTERM ? "SIGTERM" : "SIGINT", NULL);
    companion_stop(&r->co);
    uv_close((uv_handle_t *)&r->sigterm, NULL);
    uv_close((uv_handle_t *)&r->sigint, NULL);
}

static int run(const struct enclave_config *cfg, bool check_only)
{
    static struct run r; /* the loop and its handles; main() runs once */
    struct identity id;
    struct nsm_backend *nsm;
    char err[512], hexud[65];
    int rc = EXIT_RUNTIME;

    nsm = nsm_backend_open(cfg->nsm, err, sizeof(err));
    if (nsm == NULL) {
        log_event(LOG_LEVEL_ERROR, "nsm_unavailable", "nsm", cfg->nsm, "reason", err, NULL);
        return EXIT_RUNTIME;
    }
    if (strncmp(cfg->nsm, "test:", 5) == 0) {
        log_event(LOG_LEVEL_WARN, "test_nsm", "message",
                  "documents are signed by a TEST chain, not by the NSM", NULL);
        for (unsigned i = 0; i < ENCLAVE_PCRS; i++)
            if ((cfg->test_pcr_mask & (1u << i)) != 0)
                nsm_backend_set_test_pcr(nsm, i, cfg->test_pcrs[i]);
    }
    if (check_only) {
        nsm_backend_free(nsm);
        printf("configuration ok, NSM backend %s\n", cfg->nsm);
        return EXIT_OK;
    }
    if (identity_create(&id, cfg->curve, err, sizeof(err)) != 0) {
        log_event(LOG_LEVEL_ERROR, "tls_failed", "reason", err, NULL);
        nsm_backend_free(nsm);
        return EXIT_RUNTIME;
    }
    for (size_t i = 0; i < 32; i++)
        snprintf(hexud + 2 * i, 3, "%02x", id.user_data[i]);
    log_event(LOG_LEVEL_INFO, "tls_key", "curve",
              cfg->curve == ENCLAVE_CURVE_P256 ? "P-256" : "P-384", "pin", hexud, NULL);

    uv_loop_init(&r.loop);
    memset(&r.co, 0, sizeof(r.co));
    r.co.loop = &r.loop;
    r.co.cfg = cfg;
    r.co.id = &id;
    r.co.nsm = nsm;
    if (companion_listen(&r.co, err, sizeof(err)) != 0) {
        log_event(LOG_LEVEL_ERROR, "listen_failed", "reason", err, NULL);
        companion_stop(&r.co);
        uv_run(&r.loop, UV_RUN_DEFAULT);
        goto out;
    }
    uv_signal_init(&r.loop, &r.sigterm);
    uv_signal_init(&r.loop, &r.sigint);
    r.sigterm.data = r.sigint.data = &r;
    uv_signal_start(&r.sigterm, on_signal, SIGTERM);
    uv_signal_start(&r.sigint, on_signal, SIGINT);
    signal(SIGPIPE, SIG_IGN);
    log_event(LOG_LEVEL_INFO, "started", "version", ATTESTPROXY_VERSION, "nsm", nsm->name, NULL);
    uv_run(&r.loop, UV_RUN_DEFAULT);
    rc = EXIT_OK;
    log_event(LOG_LEVEL_INFO, "stopped", NULL);
out:
    if (uv_loop_close(&r.loop) != 0) {
        log_event(LOG_LEVEL_ERROR, "loop_not_closed", NULL);
        rc = EXIT_RUNTIME;
    }
    identity_free(&id);
    nsm_backend_free(nsm);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check", no_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    static struct enclave_config cfg;
    const char *path = DEFAULT_CONFIG;
    bool check = false;
    char err[1024];
    int c;

    opterr = 0;
    while ((c = getopt_long(argc, argv, "c:thV", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            path = optarg;
            break;
        case 't':
            check = true;
            break;
        case 'h':
            fputs(usage, stdout);
            return EXIT_OK;
        case 'V':
            printf("attestproxy-enclave %s\n", ATTESTPROXY_VERSION);
            return EXIT_OK;
        default:
            fprintf(stderr, "attestproxy-enclave: unknown option or missing argument: %s\n",
                    argv[optind - 1]);
            fputs(usage, stderr);
            return EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "attestproxy-enclave: unexpected argument %s\n", argv[optind]);
        fputs(usage, stderr);
        return EXIT_USAGE;
    }
    if (enclave_config_load(path, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "attestproxy-enclave: %s\n", err);
        return EXIT_USAGE;
    }
    log_configure(cfg.log_level, cfg.log_format, NULL);
    return run(&cfg, check);
}
