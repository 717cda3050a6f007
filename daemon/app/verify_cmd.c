#include "app/verify_cmd.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "base/config.h"
#include "base/args.h"
#include "base/file.h"
#include "base/hex.h"
#include "verify/chain.h"
#include "verify/cose.h"
#include "verify/evidence.h"
#include "verify/verifier.h"

#define DEFAULT_MAX_AGE_MS (5 * 60 * 1000)
#define DEFAULT_SKEW_MS    (60 * 1000)
#define PEER_CERT_MAX      (64 * 1024)
#define NONCE_MAX          1024
#define NAME_MAX_TEXT      512

static const char usage[] =
    "Usage: attestproxy verify [OPTIONS] FILE\n"
    "\n"
    "Checks one AWS Nitro attestation document offline with the daemon's verifier: COSE_Sign1\n"
    "structure, certificate chain to the pinned root, ES384 signature, then the policy given\n"
    "by the options. FILE holds raw CBOR, base64 or a JSON envelope (sniffed); '-' is stdin.\n"
    "\n"
    "Options:\n"
    "  --root PEM             trust this root instead of the compiled-in AWS Root-G1\n"
    "  --pcr N=HEX            require PCR N (0..31) to equal HEX (96 hex digits); repeat the\n"
    "                         option to name several PCRs: together they form one measurement\n"
    "                         set. Without --pcr, PCRs are not compared (debug mode is still\n"
    "                         rejected unless --allow-debug)\n"
    "  --nonce HEX            require the document's nonce to equal HEX\n"
    "  --at TIME              check at TIME: Unix seconds or RFC 3339 UTC\n"
    "                         (2023-05-24T17:07:50Z, fractional seconds allowed); default now\n"
    "  --max-age DURATION     oldest acceptable document, measured from --at (default 5m)\n"
    "  --skew DURATION        clock skew allowance on certificates and timestamp (default 60s)\n"
    "  --allow-debug          accept debug-mode enclaves (PCR0, PCR1, PCR2 all zero)\n"
    "  --binding MODE         require the document to bind the certificate of --peer-cert:\n"
    "                         spki_sha256, public_key_spki, spki_der, cert_sha256, nitriding,\n"
    "                         blindai\n"
    "  --peer-cert FILE       the TLS peer certificate (PEM or DER) for --binding\n"
    "  --json                 print the decoded document and the verdict as JSON\n"
    "  -h, --help             show this help\n"
    "\n"
    "Exit status: 0 accepted, 1 rejected (the reason is printed on stderr), 2 usage or I/O\n"
    "error.\n";

enum opt_id {
    OPT_ROOT = 256,
    OPT_PCR,
    OPT_NONCE,
    OPT_AT,
    OPT_MAX_AGE,
    OPT_SKEW,
    OPT_ALLOW_DEBUG,
    OPT_BINDING,
    OPT_PEER_CERT,
    OPT_JSON,
};

static const struct option options[] = {
    {"root", required_argument, NULL, OPT_ROOT},
    {"pcr", required_argument, NULL, OPT_PCR},
    {"nonce", required_argument, NULL, OPT_NONCE},
    {"at", required_argument, NULL, OPT_AT},
    {"max-age", required_argument, NULL, OPT_MAX_AGE},
    {"skew", required_argument, NULL, OPT_SKEW},
    {"allow-debug", no_argument, NULL, OPT_ALLOW_DEBUG},
    {"binding", required_argument, NULL, OPT_BINDING},
    {"peer-cert", required_argument, NULL, OPT_PEER_CERT},
    {"json", no_argument, NULL, OPT_JSON},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

struct cmd {
    const char *root;
    const char *file;
    const char *peer_path;
    struct policy policy;
    bool have_pcr;
    uint8_t nonce[NONCE_MAX];
    size_t nonce_len;
    bool have_nonce;
    int64_t at_ms;
    bool have_binding;
    enum binding_mode binding;
    bool json;
};

/* ---- Parsing helpers ------------------------------------------------------------------------ */

/* Decodes exactly `n` bytes of hex from a string of exactly 2n digits. */
static int parse_hex(const char *s, uint8_t *out, size_t cap, size_t *n)
{
    size_t len = strlen(s);
    if (len == 0 || len % 2 != 0 || len / 2 > cap)
        return -EINVAL;
    for (size_t i = 0; i < len / 2; i++) {
        int hi = config_hex_digit((unsigned char)s[2 * i]);
        int lo = config_hex_digit((unsigned char)s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -EINVAL;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    *n = len / 2;
    return 0;
}

static int add_pcr(struct cmd *c, const char *arg)
{
    const char *p = arg;
    unsigned idx = 0;
    size_t n = 0;
    int digits = 0;

    if (strncmp(p, "pcr", 3) == 0 || strncmp(p, "PCR", 3) == 0)
        p += 3; /* "pcr8=..." is accepted too: it is how the configuration spells it */
    for (; isdigit((unsigned char)*p) && digits < 3; p++, digits++)
        idx = idx * 10 + (unsigned)(*p - '0');
    if (digits == 0 || *p != '=' || idx >= NITRO_PCR_COUNT)
        return -EINVAL;
    if (c->policy.sets[0].mask & (1u << idx))
        return -EEXIST;
    if (parse_hex(p + 1, c->policy.sets[0].pcr[idx], NITRO_PCR_LEN, &n) < 0 || n != NITRO_PCR_LEN)
        return -EINVAL;
    c->policy.sets[0].mask |= 1u << idx;
    c->policy.n_sets = 1;
    c->have_pcr = true;
    return 0;
}

static int parse_digits(const char **p, int count, int *out)
{
    int v = 0;
    for (int i = 0; i < count; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return -EINVAL;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += count;
    *out = v;
    return 0;
}

/* Milliseconds from up to 9 fraction digits after a '.'; further precision is dropped. */
static int parse_fraction(const char **p, int64_t *ms)
{
    int digits = 0;
    int64_t v = 0;
    if (**p != '.')
        return 0;
    (*p)++;
    while (isdigit((unsigned char)**p)) {
        if (digits < 3)
            v = v * 10 + (**p - '0');
        digits++;
        (*p)++;
        if (digits > 9)
            return -EINVAL;
    }
    if (digits == 0)
        return -EINVAL;
    for (int i = digits; i < 3; i++)
        v *= 10;
    *ms = v;
    return 0;
}

int verify_cmd_parse_time(const char *s, int64_t *ms)
{
    const char *p = s;
    int64_t frac = 0;

    if (*s == '\0')
        return -EINVAL;
    /* Unix seconds: digits, optionally a fraction. */
    if (strspn(s, "0123456789") > 0 &&
        (s[strspn(s, "0123456789")] == '\0' || s[strspn(s, "0123456789")] == '.')) {
        int64_t sec = 0;
        for (; isdigit((unsigned char)*p); p++) {
            if (sec > (INT64_MAX / 1000 - 9) / 10)
                return -ERANGE;
            sec = sec * 10 + (*p - '0');
        }
        if (parse_fraction(&p, &frac) < 0 || *p != '\0')
            return -EINVAL;
        *ms = sec * 1000 + frac;
        return 0;
    }

    /* RFC 3339 in UTC: YYYY-MM-DDTHH:MM:SS[.frac]Z. The fields are checked here for shape and
     * handed to OpenSSL's ASN.1 time parser, which validates the calendar (month lengths, leap
     * years) exactly as it does for certificate times. */
    int y, mo, d, h, mi, se;
    char gt[80];
    ASN1_TIME *t;
    int rc = -EINVAL;
    if (parse_digits(&p, 4, &y) < 0 || *p++ != '-' || parse_digits(&p, 2, &mo) < 0 || *p++ != '-' ||
        parse_digits(&p, 2, &d) < 0 || (*p != 'T' && *p != 't'))
        return -EINVAL;
    p++;
    if (parse_digits(&p, 2, &h) < 0 || *p++ != ':' || parse_digits(&p, 2, &mi) < 0 || *p++ != ':' ||
        parse_digits(&p, 2, &se) < 0)
        return -EINVAL;
    if (parse_fraction(&p, &frac) < 0 || (*p != 'Z' && *p != 'z') || p[1] != '\0')
        return -EINVAL;
    snprintf(gt, sizeof(gt), "%04d%02d%02d%02d%02d%02dZ", y, mo, d, h, mi, se);
    t = ASN1_TIME_new();
    if (t == NULL)
        return -ENOMEM;
    if (ASN1_TIME_set_string(t, gt) == 1 && ASN1_TIME_check(t) == 1 &&
        chain_time_to_ms(t, ms) == 0) {
        *ms += frac;
        rc = 0;
    }
    ASN1_TIME_free(t);
    ERR_clear_error();
    return rc;
}

static int parse_duration_ms(const char *s, int64_t *out)
{
    uint64_t ms;
    if (config_parse_duration(s, &ms) < 0 || ms > (uint64_t)INT64_MAX / 4)
        return -EINVAL;
    *out = (int64_t)ms;
    return 0;
}

static int64_t wall_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static X509 *load_cert(const char *path)
{
    uint8_t *data = NULL;
    size_t len = 0;
    X509 *x = NULL;
    BIO *bio = NULL;

    if (file_read(path, PEER_CERT_MAX, 0, &data, &len) < 0 || len > PEER_CERT_MAX)
        goto out;
    bio = BIO_new_mem_buf(data, (int)len);
    if (bio != NULL)
        x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    if (x == NULL) {
        const unsigned char *p = data;
        x = d2i_X509(NULL, &p, (long)len);
        if (x != NULL && p != data + len) {
            X509_free(x);
            x = NULL;
        }
    }
out:
    ERR_clear_error();
    BIO_free(bio);
    free(data);
    return x;
}

/* ---- Output --------------------------------------------------------------------------------- */

static void format_time(int64_t ms, char *out, size_t cap)
{
    int64_t sec = ms / 1000;
    int64_t rem = ms % 1000;
    struct tm tm;
    time_t t;
    if (rem < 0) {
        rem += 1000;
        sec -= 1;
    }
    t = (time_t)sec;
    if (gmtime_r(&t, &tm) == NULL) {
        snprintf(out, cap, "?");
        return;
    }
    snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)rem);
}

static json_t *json_hex(const uint8_t *p, size_t n)
{
    char buf[2 * NITRO_MAX_OPTIONAL + 1];
    if (n > NITRO_MAX_OPTIONAL)
        return json_null();
    hex_encode(p, n, buf);
    return json_string(buf);
}

static json_t *json_time(int64_t ms)
{
    char buf[80];
    format_time(ms, buf, sizeof(buf));
    return json_string(buf);
}

int verify_cmd_utf8_whole(const char *out, int n)
{
    int i = n, need;
    unsigned char lead;
    while (i > 0 && ((unsigned char)out[i - 1] & 0xc0) == 0x80 && n - i < 3)
        i--;
    if (i == 0)
        return n;
    lead = (unsigned char)out[i - 1];
    need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
    return need == 1 ? n : (n - (i - 1) >= need ? n : i - 1);
}

static void name_text(const X509_NAME *name, char *out, size_t cap)
{
    BIO *bio = BIO_new(BIO_s_mem());
    int n = 0;
    out[0] = '\0';
    if (bio == NULL)
        return;
    /* RFC 2253 with control bytes escaped; other characters are converted to UTF-8 and kept
     * as they are (ESC_MSB off), which JSON carries: names come from the document. */
    if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0)
        n = BIO_read(bio, out, (int)cap - 1);
    n = n > 0 ? verify_cmd_utf8_whole(out, n) : 0;
    out[n] = '\0';
    BIO_free(bio);
}

static json_t *json_cert(const struct cose_bytes *der)
{
    const unsigned char *p = der->data;
    X509 *x = d2i_X509(NULL, &p, (long)der->len);
    char text[NAME_MAX_TEXT];
    int64_t nb = 0, na = 0;
    json_t *o = json_object();

    if (o == NULL)
        goto out;
    if (x == NULL || p != der->data + der->len) {
        json_object_set_new(o, "error", json_string("certificate does not parse"));
        goto out;
    }
    name_text(X509_get_subject_name(x), text, sizeof(text));
    json_object_set_new(o, "subject", json_string(text));
    name_text(X509_get_issuer_name(x), text, sizeof(text));
    json_object_set_new(o, "issuer", json_string(text));
    if (chain_time_to_ms(X509_get0_notBefore(x), &nb) == 0)
        json_object_set_new(o, "not_before", json_time(nb));
    if (chain_time_to_ms(X509_get0_notAfter(x), &na) == 0)
        json_object_set_new(o, "not_after", json_time(na));
out:
    ERR_clear_error();
    X509_free(x);
    return o;
}

static json_t *json_optional(bool has, const struct cose_bytes *b)
{
    return has ? json_hex(b->data, b->len) : json_null();
}

static json_t *json_document(const struct nitro_document *doc, bool authenticated)
{
    json_t *o = json_object();
    json_t *pcrs = json_object();
    json_t *bundle = json_array();
    char key[8];
    char digest[NITRO_MAX_DIGEST + 1];

    if (o == NULL || pcrs == NULL || bundle == NULL) {
        json_decref(o);
        json_decref(pcrs);
        json_decref(bundle);
        return NULL;
    }
    /* Fields of a rejected document are shown for diagnosis; "authenticated" says whether the
     * chain and signature vouched for them. */
    json_object_set_new(o, "authenticated", json_boolean(authenticated));
    json_object_set_new(o, "tagged", json_boolean(doc->tagged));
    json_object_set_new(o, "module_id", json_string(doc->module_id));
    json_object_set_new(o, "timestamp_ms", json_integer((json_int_t)doc->timestamp_ms));
    json_object_set_new(o, "timestamp", json_time((int64_t)doc->timestamp_ms));
    memcpy(digest, doc->digest.data, doc->digest.len);
    digest[doc->digest.len] = '\0';
    json_object_set_new(o, "digest", json_stringn(digest, doc->digest.len));
    for (unsigned i = 0; i < NITRO_PCR_COUNT; i++) {
        if (doc->pcr_mask & (1u << i)) {
            snprintf(key, sizeof(key), "%u", i);
            json_object_set_new(pcrs, key, json_hex(doc->pcrs[i].data, doc->pcrs[i].len));
        }
    }
    json_object_set_new(o, "pcrs", pcrs);
    json_object_set_new(o, "debug_mode", json_boolean(policy_is_debug(doc)));
    json_object_set_new(o, "certificate", json_cert(&doc->certificate));
    for (size_t i = 0; i < doc->n_cabundle; i++)
        json_array_append_new(bundle, json_cert(&doc->cabundle[i]));
    json_object_set_new(o, "cabundle", bundle);
    json_object_set_new(o, "public_key", json_optional(doc->has_public_key, &doc->public_key));
    json_object_set_new(o, "user_data", json_optional(doc->has_user_data, &doc->user_data));
    json_object_set_new(o, "nonce", json_optional(doc->has_nonce, &doc->nonce));
    return o;
}

static int print_json(const struct cmd *c, const struct verify_result *res,
                      const struct nitro_document *doc, bool decoded)
{
    json_t *root = json_object();
    json_t *verdict = json_object();
    json_t *pol = json_object();
    bool authenticated =
        res->accepted || res->stage == VERIFY_STAGE_POLICY || res->stage == VERIFY_STAGE_BINDING;
    int rc = -ENOMEM;

    if (root == NULL || verdict == NULL || pol == NULL) {
        json_decref(verdict);
        json_decref(pol);
        goto out;
    }
    json_object_set_new(verdict, "accepted", json_boolean(res->accepted));
    json_object_set_new(verdict, "stage", json_string(verify_stage_name(res->stage)));
    json_object_set_new(verdict, "reason", json_string(res->reason));
    json_object_set_new(verdict, "reason_id", json_string(verify_reason_name(res->reason_code)));
    if (res->summary.matched_set >= 0)
        json_object_set_new(verdict, "matched_set", json_integer(res->summary.matched_set));
    json_object_set_new(root, "verdict", verdict);

    json_object_set_new(pol, "checked_at", json_time(c->at_ms));
    json_object_set_new(pol, "checked_at_ms", json_integer((json_int_t)c->at_ms));
    json_object_set_new(pol, "max_age_ms", json_integer((json_int_t)c->policy.max_age_ms));
    json_object_set_new(pol, "skew_ms", json_integer((json_int_t)c->policy.skew_ms));
    json_object_set_new(pol, "allow_debug", json_boolean(c->policy.allow_debug));
    json_object_set_new(pol, "pcrs_compared", json_boolean(c->have_pcr));
    json_object_set_new(pol, "nonce_checked", json_boolean(c->have_nonce));
    json_object_set_new(
        pol, "binding",
        json_string(config_binding_name(c->have_binding ? c->binding : BINDING_NONE)));
    json_object_set_new(pol, "root", json_string(c->root != NULL ? c->root : "aws-root-g1"));
    json_object_set_new(root, "check", pol);
    if (decoded)
        json_object_set_new(root, "document", json_document(doc, authenticated));

    if (json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) == 0) {
        fputc('\n', stdout);
        rc = 0;
    }
out:
    json_decref(root);
    return rc;
}

static void print_human(const struct cmd *c, const struct verify_result *res,
                        const struct nitro_document *doc)
{
    char t[80];
    char hex[2 * NITRO_PCR_LEN + 1];
    const struct verify_summary *s = &res->summary;

    printf("accepted     %s\n", doc->module_id);
    format_time(s->timestamp_ms, t, sizeof(t));
    printf("timestamp    %s (%" PRId64 " ms)\n", t, s->timestamp_ms);
    format_time(c->at_ms, t, sizeof(t));
    printf("checked at   %s (max age %" PRId64 " ms, skew %" PRId64 " ms)\n", t,
           c->policy.max_age_ms, c->policy.skew_ms);
    for (unsigned i = 0; i < 3; i++) {
        hex_encode(s->pcrs[i], NITRO_PCR_LEN, hex);
        printf("pcr%u         %s\n", i, hex);
    }
    if (s->debug_mode)
        printf("debug mode   YES (accepted because of --allow-debug)\n");
    if (c->have_pcr)
        printf("pcrs         match the given measurement set\n");
    else
        printf("pcrs         not compared (no --pcr given)\n");
    printf("nonce        %s\n", c->have_nonce ? "matches --nonce" : "not checked (no --nonce)");
    if (c->have_binding)
        printf("binding      %s to --peer-cert\n", config_binding_name(c->binding));
    else
        printf("binding      not checked (no --binding)\n");
    format_time(s->leaf_not_before_ms, t, sizeof(t));
    printf("leaf valid   %s", t);
    format_time(s->leaf_not_after_ms, t, sizeof(t));
    printf(" to %s\n", t);
}

/* ---- Main ----------------------------------------------------------------------------------- */

static int usage_error(const char *msg, const char *arg)
{
    fprintf(stderr, "attestproxy verify: %s%s%s\nTry 'attestproxy verify --help'.\n", msg,
            arg != NULL ? ": " : "", arg != NULL ? arg : "");
    return VERIFY_CMD_USAGE;
}

static int parse_args(int argc, char **argv, struct cmd *c)
{
    char bad[8];
    int o;
    size_t n;

    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (o) {
        case 'h':
            fputs(usage, stdout);
            return VERIFY_CMD_ACCEPTED;
        case OPT_ROOT:
            c->root = optarg;
            break;
        case OPT_PCR: {
            int rc = add_pcr(c, optarg);
            if (rc == -EEXIST)
                return usage_error("--pcr names the same PCR twice", optarg);
            if (rc < 0)
                return usage_error("--pcr wants N=HEX with N in 0..31 and 96 hex digits", optarg);
            break;
        }
        case OPT_NONCE:
            if (parse_hex(optarg, c->nonce, sizeof(c->nonce), &n) < 0)
                return usage_error("--nonce wants 2..2048 hex digits", optarg);
            c->nonce_len = n;
            c->have_nonce = true;
            break;
        case OPT_AT:
            if (verify_cmd_parse_time(optarg, &c->at_ms) < 0)
                return usage_error("--at wants Unix seconds or RFC 3339 UTC (…Z)", optarg);
            break;
        case OPT_MAX_AGE:
            if (parse_duration_ms(optarg, &c->policy.max_age_ms) < 0)
                return usage_error("--max-age wants a duration such as 30s or 5m", optarg);
            break;
        case OPT_SKEW:
            if (parse_duration_ms(optarg, &c->policy.skew_ms) < 0)
                return usage_error("--skew wants a duration such as 60s", optarg);
            break;
        case OPT_ALLOW_DEBUG:
            c->policy.allow_debug = true;
            break;
        case OPT_BINDING:
            if (config_parse_binding(optarg, &c->binding) < 0)
                return usage_error("unknown --binding", optarg);
            c->have_binding = true;
            break;
        case OPT_PEER_CERT:
            c->peer_path = optarg;
            break;
        case OPT_JSON:
            c->json = true;
            break;
        default:
            return usage_error("unknown option or missing value",
                               args_refused(argc, argv, bad, sizeof(bad)));
        }
    }
    if (optind != argc - 1)
        return usage_error(optind >= argc ? "missing FILE" : "exactly one FILE expected", NULL);
    if (c->have_binding != (c->peer_path != NULL))
        return usage_error("--binding and --peer-cert go together", NULL);
    c->file = argv[optind];
    return -1;
}

int verify_cmd_main(int argc, char **argv)
{
    struct cmd *c = calloc(1, sizeof(*c));
    struct verifier *v = NULL;
    struct verify_result res;
    struct verify_request req;
    struct nitro_document doc;
    struct verify_error derr;
    uint8_t *body = NULL;
    uint8_t *scratch = NULL;
    const uint8_t *doc_bytes;
    size_t len = 0, doc_len = 0;
    X509 *peer = NULL;
    char err[256];
    bool decoded = false;
    int rc = VERIFY_CMD_USAGE;

    if (c == NULL)
        return VERIFY_CMD_USAGE;
    c->at_ms = wall_clock_ms();
    c->policy.max_age_ms = DEFAULT_MAX_AGE_MS;
    c->policy.skew_ms = DEFAULT_SKEW_MS;
    rc = parse_args(argc, argv, c);
    if (rc >= 0)
        goto out;
    rc = VERIFY_CMD_USAGE;

    /* One byte more than the limit is read: an oversized input reaches the verifier and is
     * rejected by its own size gate. */
    int io = file_read(c->file, VERIFY_MAX_ENVELOPE, 0, &body, &len);
    if (io < 0) {
        fprintf(stderr, "attestproxy verify: cannot read %s: %s\n", c->file, strerror(-io));
        goto out;
    }
    if (c->peer_path != NULL && (peer = load_cert(c->peer_path)) == NULL) {
        fprintf(stderr, "attestproxy verify: %s is not a PEM or DER certificate\n", c->peer_path);
        goto out;
    }
    v = verifier_new(c->root, err, sizeof(err));
    if (v == NULL) {
        fprintf(stderr, "attestproxy verify: %s\n", err);
        goto out;
    }

    req = (struct verify_request){
        .policy = &c->policy,
        .now_ms = c->at_ms,
        .nonce = c->have_nonce ? c->nonce : NULL,
        .nonce_len = c->nonce_len,
        .binding = c->have_binding ? c->binding : BINDING_NONE,
        .peer_cert = peer,
        .skip_measurements = !c->have_pcr,
    };
    /* A negative return is an internal failure (allocation), not a verdict on the document. */
    if (verifier_verify(v, &req, body, len, &res) < 0) {
        fprintf(stderr, "attestproxy verify: %s\n", res.reason);
        goto out;
    }

    /* The decoded fields are printed from a second, independent decode of the same bytes: the
     * verifier hands out verified facts only. */
    scratch = malloc(VERIFY_MAX_INPUT);
    if (scratch != NULL && evidence_decode(body, len, scratch, &doc_bytes, &doc_len, &derr) == 0 &&
        cose_decode_document(doc_bytes, doc_len, &doc, &derr) == 0)
        decoded = true;

    if (c->json && print_json(c, &res, &doc, decoded) < 0)
        fprintf(stderr, "attestproxy verify: cannot write JSON\n");
    if (res.accepted) {
        if (!c->json)
            print_human(c, &res, &doc);
        rc = VERIFY_CMD_ACCEPTED;
    } else {
        fprintf(stderr, "rejected: %s\n", res.reason);
        rc = VERIFY_CMD_REJECTED;
    }
out:
    fflush(stdout);
    X509_free(peer);
    verifier_free(v);
    free(scratch);
    free(body);
    free(c);
    return rc;
}
