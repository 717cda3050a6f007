/*
 * `attestproxy policy`: key generation, signing, offline verification and display of policy
 * bundles. The format and every check are verify/bundle.c's; this file reads and writes files.
 */
#include "app/policy_cmd.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "app/cli.h"
#include "base/clock.h"
#include "base/args.h"
#include "base/config.h"
#include "base/file.h"
#include "base/hex.h"
#include "verify/bundle.h"

#define DEFAULT_KEY_NAME "attestproxy-policy"

static const char usage[] =
    "Usage: attestproxy policy keygen --out KEYFILE [--key-name NAME]\n"
    "       attestproxy policy sign --key KEYFILE --key-name NAME BODYFILE > BUNDLE\n"
    "       attestproxy policy verify --key NAME:PUB [--key NAME:PUB ...] BUNDLE\n"
    "       attestproxy policy show BUNDLE\n"
    "\n"
    "Signed, versioned policy bundles (docs/policy-bundles.md).\n"
    "  keygen   writes a new Ed25519 private key (PEM, mode 0600) to KEYFILE and prints the\n"
    "           policy_key line that trusts it (NAME defaults to " DEFAULT_KEY_NAME ")\n"
    "  sign     checks BODYFILE strictly and prints it signed with KEYFILE under NAME; a\n"
    "           BODYFILE that is already a signed bundle gets one more signature line\n"
    "  verify   checks the format, a signature by one of the keys (PUB: base64 or the path\n"
    "           of a PEM public key) and that it has not expired at the current time\n"
    "  show     prints the bundle as JSON (nothing is verified)\n"
    "\n"
    "Exit status: 0 success, 1 bundle refused (the reason on stderr), 2 usage error or\n"
    "unreadable file.\n";

static const struct option opts[] = {
    {"out", required_argument, NULL, 'o'},
    {"key", required_argument, NULL, 'k'},
    {"key-name", required_argument, NULL, 'n'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* Reads at most BUNDLE_MAX_BYTES of `path` ("-" = stdin) into a malloc'd buffer. */
static uint8_t *read_all(const char *path, size_t *len)
{
    uint8_t *buf = NULL;
    int rc = file_read(path, BUNDLE_MAX_BYTES, 0, &buf, len);
    if (rc < 0) {
        fprintf(stderr, "attestproxy: policy: %s: %s\n", path, strerror(-rc));
        return NULL;
    }
    if (*len > BUNDLE_MAX_BYTES) {
        fprintf(stderr, "attestproxy: policy: %s: larger than %d bytes\n", path, BUNDLE_MAX_BYTES);
        free(buf);
        return NULL;
    }
    return buf;
}

static int cmd_keygen(const char *out, const char *name)
{
    EVP_PKEY *pk = NULL;
    FILE *fp = NULL;
    uint8_t pub[POLICY_KEY_LEN], id[4];
    size_t plen = sizeof(pub);
    char b64[48], idhex[9];
    int fd, rc = EXIT_USAGE;

    if (!bundle_key_name_valid(name)) {
        fprintf(stderr, "attestproxy: policy keygen: invalid key name '%s'\n", name);
        return EXIT_USAGE;
    }
    pk = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (pk == NULL || EVP_PKEY_get_raw_public_key(pk, pub, &plen) != 1) {
        fprintf(stderr, "attestproxy: policy keygen: key generation failed\n");
        goto out;
    }
    /* Never over an existing key: a typo must not destroy the only copy of a signing key. */
    fd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || (fp = fdopen(fd, "w")) == NULL) {
        fprintf(stderr, "attestproxy: policy keygen: %s: %s\n", out, strerror(errno));
        if (fd >= 0)
            close(fd);
        goto out;
    }
    if (PEM_write_PrivateKey(fp, pk, NULL, NULL, 0, NULL, NULL) != 1 || fflush(fp) != 0 ||
        fsync(fileno(fp)) != 0) {
        fprintf(stderr, "attestproxy: policy keygen: %s: write failed\n", out);
        goto out;
    }
    EVP_EncodeBlock((unsigned char *)b64, pub, POLICY_KEY_LEN);
    bundle_key_id(name, pub, id);
    hex_encode(id, sizeof(id), idhex);
    printf("policy_key = %s:%s\n", name, b64);
    fprintf(stderr, "key id %s; sign with: attestproxy policy sign --key %s --key-name %s BODY\n",
            idhex, out, name);
    rc = EXIT_OK;
out:
    if (fp != NULL)
        fclose(fp);
    EVP_PKEY_free(pk);
    return rc;
}

static int cmd_sign(const char *keyfile, const char *name, const char *bodyfile)
{
    struct bundle *b = malloc(sizeof(*b));
    EVP_PKEY *pk = NULL;
    FILE *fp = NULL;
    uint8_t *data = NULL;
    size_t len = 0, body_len;
    char why[256], line[512];
    int n, rc = EXIT_USAGE;

    if (b == NULL || (data = read_all(bodyfile, &len)) == NULL)
        goto out;
    /* A signed bundle gets one more signature (a key rotation's overlap); a body is signed. */
    if (bundle_parse(data, len, b, why, sizeof(why)) == 0) {
        body_len = b->body_len;
    } else if (bundle_parse_body(data, len, b, why, sizeof(why)) == 0) {
        body_len = len;
    } else {
        fprintf(stderr, "attestproxy: policy sign: %s: %s\n", bodyfile, why);
        rc = EXIT_RUNTIME;
        goto out;
    }
    fp = fopen(keyfile, "re");
    pk = fp != NULL ? PEM_read_PrivateKey(fp, NULL, NULL, NULL) : NULL;
    if (pk == NULL) {
        fprintf(stderr, "attestproxy: policy sign: %s: not a PEM private key\n", keyfile);
        goto out;
    }
    n = bundle_sign_line(data, body_len, pk, name, line, sizeof(line));
    if (n < 0) {
        fprintf(stderr, "attestproxy: policy sign: %s\n",
                n == -EINVAL ? "the key is not Ed25519, or the key name is invalid"
                             : "signing failed");
        goto out;
    }
    fwrite(data, 1, len, stdout);
    if (len == body_len)
        fputc('\n', stdout); /* the blank line between the body and the signatures */
    fputs(line, stdout);
    rc = fflush(stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;
out:
    if (fp != NULL)
        fclose(fp);
    EVP_PKEY_free(pk);
    free(data);
    free(b);
    return rc;
}

static int cmd_verify(const struct policy_key *keys, size_t n_keys, const char *file)
{
    struct bundle *b = malloc(sizeof(*b));
    uint8_t *data = NULL;
    size_t len = 0, signer = 0;
    char why[256], t[24], idhex[9];
    enum bundle_verdict v;
    int64_t now = clock_wall_ms();
    int rc = EXIT_USAGE;

    if (b == NULL || (data = read_all(file, &len)) == NULL)
        goto out;
    rc = EXIT_RUNTIME;
    if (bundle_parse(data, len, b, why, sizeof(why)) < 0) {
        fprintf(stderr, "refused: malformed: %s\n", why);
        goto out;
    }
    v = bundle_verify(b, data, keys, n_keys, &signer);
    if (v != BUNDLE_OK) {
        fprintf(stderr, "refused: %s\n", bundle_verdict_name(v));
        goto out;
    }
    bundle_format_time(b->expires_ms, t);
    if (now >= b->expires_ms) {
        fprintf(stderr, "refused: expired: at %s\n", t);
        goto out;
    }
    {
        uint8_t id[4];
        bundle_key_id(keys[signer].name, keys[signer].pub, id);
        hex_encode(id, sizeof(id), idhex);
    }
    printf("ok: version %llu signed by %s (key id %s), expires %s\n",
           (unsigned long long)b->version, keys[signer].name, idhex, t);
    rc = EXIT_OK;
out:
    free(data);
    free(b);
    return rc;
}

static int cmd_show(const char *file)
{
    struct bundle *b = malloc(sizeof(*b));
    uint8_t *data = NULL;
    size_t len = 0;
    char why[256], t[24], hex[2 * NITRO_PCR_LEN + 1];
    json_t *o, *arr;
    int rc = EXIT_USAGE;

    if (b == NULL || (data = read_all(file, &len)) == NULL)
        goto out;
    if (bundle_parse(data, len, b, why, sizeof(why)) < 0) {
        fprintf(stderr, "refused: malformed: %s\n", why);
        rc = EXIT_RUNTIME;
        goto out;
    }
    o = json_object();
    json_object_set_new(o, "format", json_string(BUNDLE_HEADER));
    json_object_set_new(o, "version", json_integer((json_int_t)b->version));
    bundle_format_time(b->issued_ms, t);
    json_object_set_new(o, "issued", json_string(t));
    bundle_format_time(b->expires_ms, t);
    json_object_set_new(o, "expires", json_string(t));
    arr = json_array();
    for (size_t i = 0; i < b->n_services; i++)
        json_array_append_new(arr, json_string(b->services[i]));
    json_object_set_new(o, "services", arr);
    json_object_set_new(o, "allow_debug", json_boolean(b->allow_debug));
    arr = json_array();
    for (size_t s = 0; s < b->n_sets; s++) {
        json_t *set = json_object();
        for (unsigned i = 0; i < NITRO_PCR_COUNT; i++) {
            char name[8];
            if (!(b->sets[s].mask & (1u << i)))
                continue;
            snprintf(name, sizeof(name), "pcr%u", i);
            hex_encode(b->sets[s].pcr[i], NITRO_PCR_LEN, hex);
            json_object_set_new(set, name, json_string(hex));
        }
        json_array_append_new(arr, set);
    }
    json_object_set_new(o, "measurements", arr);
    hex_encode(b->digest, sizeof(b->digest), hex);
    json_object_set_new(o, "sha256", json_string(hex));
    arr = json_array();
    for (size_t i = 0; i < b->n_sigs; i++) {
        char id[9];
        hex_encode(b->sigs[i].key_id, 4, id);
        json_array_append_new(
            arr, json_pack("{s:s,s:s}", "key_name", b->sigs[i].key_name, "key_id", id));
    }
    json_object_set_new(o, "signatures", arr);
    json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
    json_decref(o);
    rc = EXIT_OK;
out:
    free(data);
    free(b);
    return rc;
}

int policy_cmd_main(int argc, char **argv)
{
    char bad[8];
    struct policy_key keys[POLICY_MAX_KEYS];
    const char *out = NULL, *keyfile = NULL, *name = NULL, *sub;
    size_t n_keys = 0;
    char why[256];
    int c;

    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(usage, stdout);
        return EXIT_OK;
    }
    if (argc < 2) {
        fputs(usage, stderr);
        return EXIT_USAGE;
    }
    sub = argv[1];
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc - 1, argv + 1, "+h", opts, NULL)) != -1) {
        switch (c) {
        case 'o':
            out = optarg;
            break;
        case 'n':
            name = optarg;
            break;
        case 'k':
            keyfile = optarg;
            if (strcmp(sub, "verify") == 0) {
                if (n_keys == POLICY_MAX_KEYS ||
                    config_parse_policy_key(optarg, &keys[n_keys], why, sizeof(why)) < 0) {
                    fprintf(stderr, "attestproxy: policy verify: --key %s: %s\n", optarg,
                            n_keys == POLICY_MAX_KEYS ? "too many keys" : why);
                    return EXIT_USAGE;
                }
                n_keys++;
            }
            break;
        case 'h':
            fputs(usage, stdout);
            return EXIT_OK;
        default:
            fprintf(stderr, "attestproxy: policy %s: unknown option or missing value: %s\n", sub,
                    args_refused(argc - 1, argv + 1, bad, sizeof(bad)));
            fputs(usage, stderr);
            return EXIT_USAGE;
        }
    }
    optind++; /* getopt ran over argv + 1 */
    if (strcmp(sub, "keygen") == 0 && out != NULL && optind == argc)
        return cmd_keygen(out, name != NULL ? name : DEFAULT_KEY_NAME);
    if (strcmp(sub, "sign") == 0 && keyfile != NULL && name != NULL && optind + 1 == argc)
        return cmd_sign(keyfile, name, argv[optind]);
    if (strcmp(sub, "verify") == 0 && n_keys > 0 && optind + 1 == argc)
        return cmd_verify(keys, n_keys, argv[optind]);
    if (strcmp(sub, "show") == 0 && optind + 1 == argc)
        return cmd_show(argv[optind]);
    if (strcmp(sub, "keygen") != 0 && strcmp(sub, "sign") != 0 && strcmp(sub, "verify") != 0 &&
        strcmp(sub, "show") != 0)
        fprintf(stderr, "attestproxy: policy: unknown subcommand '%s'\n", sub);
    else
        fprintf(stderr, "attestproxy: policy %s: missing or extra arguments\n", sub);
    fputs(usage, stderr);
    return EXIT_USAGE;
}
