/*
 * Policy bundles: the signed-note envelope (c2sp.org/signed-note) around a strict line-format
 * body. The format is specified in docs/policy-bundles.md; this file is its only parser.
 *
 * Strictness is the point: a bundle is what the daemon trusts, so anything the format does not
 * name (an unknown line, a line out of order, a duplicate, a stray space, upper-case hex, a
 * CR) is refused rather than guessed at. Every size is bounded before it is used.
 */
#include "verify/bundle.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#define EM_DASH     "\xe2\x80\x94"
#define SIG_PREFIX  EM_DASH " "
#define ED25519_SIG 64
#define ALG_ED25519 0x01

static const char *const verdict_names[BUNDLE_VERDICT_COUNT_] = {
    [BUNDLE_OK] = "ok",
    [BUNDLE_MALFORMED] = "malformed",
    [BUNDLE_UNKNOWN_KEY] = "unknown_key",
    [BUNDLE_BAD_SIGNATURE] = "bad_signature",
    [BUNDLE_NOT_FOR_SERVICE] = "not_for_service",
    [BUNDLE_EXPIRED] = "expired",
    [BUNDLE_NOT_YET_VALID] = "not_yet_valid",
    [BUNDLE_ROLLBACK] = "rollback",
    [BUNDLE_VERSION_REUSED] = "version_reused",
    [BUNDLE_UNREADABLE] = "unreadable",
    [BUNDLE_STATE_ERROR] = "state_error",
};

const char *bundle_verdict_name(enum bundle_verdict v)
{
    if ((unsigned)v >= BUNDLE_VERDICT_COUNT_)
        return "other";
    return verdict_names[v];
}

static int fail(char *why, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *why, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, cap, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

bool bundle_key_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n >= POLICY_KEY_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c <= 0x20 || c >= 0x7f || c == '+' || c == ':')
            return false;
    }
    return true;
}

void bundle_key_id(const char *name, const uint8_t pub[POLICY_KEY_LEN], uint8_t id[4])
{
    uint8_t md[SHA256_DIGEST_LENGTH];
    static const uint8_t sep[2] = {0x0a, ALG_ED25519};
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned mdlen = 0;
    memset(md, 0, sizeof(md));
    if (ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
        EVP_DigestUpdate(ctx, name, strlen(name)) == 1 &&
        EVP_DigestUpdate(ctx, sep, sizeof(sep)) == 1 &&
        EVP_DigestUpdate(ctx, pub, POLICY_KEY_LEN) == 1)
        EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    memcpy(id, md, 4);
}

/* ---- Times ----------------------------------------------------------------------------------- */

static int digits(const char *s, size_t n, unsigned *out)
{
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    *out = v;
    return 0;
}

int bundle_parse_time(const char *s, size_t len, int64_t *ms)
{
    static const unsigned mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    unsigned y, mo, d, h, mi, se;
    struct tm tm;
    time_t t;

    if (len != 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' ||
        s[19] != 'Z')
        return -EINVAL;
    if (digits(s, 4, &y) < 0 || digits(s + 5, 2, &mo) < 0 || digits(s + 8, 2, &d) < 0 ||
        digits(s + 11, 2, &h) < 0 || digits(s + 14, 2, &mi) < 0 || digits(s + 17, 2, &se) < 0)
        return -EINVAL;
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || se > 59)
        return -EINVAL;
    if (mo == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return -EINVAL;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = (int)y - 1900;
    tm.tm_mon = (int)mo - 1;
    tm.tm_mday = (int)d;
    tm.tm_hour = (int)h;
    tm.tm_min = (int)mi;
    tm.tm_sec = (int)se;
    t = timegm(&tm);
    if (t == (time_t)-1)
        return -EINVAL;
    *ms = (int64_t)t * 1000;
    return 0;
}

void bundle_format_time(int64_t ms, char out[24])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || strftime(out, 24, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, 24, "invalid");
}

/* ---- Body ------------------------------------------------------------------------------------ */

/* Where the body parser is: each kind of line has its place, in this order. */
enum body_step {
    STEP_HEADER = 0,
    STEP_VERSION,
    STEP_ISSUED,
    STEP_EXPIRES,
    STEP_SERVICES, /* one or more service lines */
    STEP_DEBUG,    /* reached after the first allow_debug line */
    STEP_SETS,     /* one or more measurement lines */
};

static bool starts(const char *line, size_t n, const char *word)
{
    size_t w = strlen(word);
    return n > w && memcmp(line, word, w) == 0 && line[w] == ' ';
}

static int parse_u64_strict(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 20 || (n > 1 && s[0] == '0'))
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        unsigned dgt;
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        dgt = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - dgt) / 10)
            return -ERANGE;
        v = v * 10 + dgt;
    }
    *out = v;
    return 0;
}

static int lower_hex(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* "pcr0=HEX pcr8=HEX": single spaces, lower-case hex of exactly 96 digits, each PCR once. */
static int parse_set(const char *s, size_t n, struct measurement_set *set, char *why, size_t cap)
{
    size_t i = 0;
    memset(set, 0, sizeof(*set));
    while (i < n) {
        size_t start = i;
        uint64_t idx;
        while (i < n && s[i] != '=')
            i++;
        if (i == n || i - start < 4 || memcmp(s + start, "pcr", 3) != 0 ||
            parse_u64_strict(s + start + 3, i - start - 3, &idx) < 0 || idx >= NITRO_PCR_COUNT)
            return fail(why, cap, "measurement: expected pcrN=HEX with N in 0..31");
        if (set->mask & (1u << idx))
            return fail(why, cap, "measurement: pcr%u named twice", (unsigned)idx);
        i++;
        if (n - i < 2 * NITRO_PCR_LEN ||
            (n - i > 2 * NITRO_PCR_LEN && s[i + 2 * NITRO_PCR_LEN] != ' '))
            return fail(why, cap, "measurement: pcr%u needs exactly 96 lower-case hex digits",
                        (unsigned)idx);
        for (size_t k = 0; k < NITRO_PCR_LEN; k++) {
            int hi = lower_hex(s[i + 2 * k]), lo = lower_hex(s[i + 2 * k + 1]);
            if (hi < 0 || lo < 0)
                return fail(why, cap, "measurement: pcr%u needs exactly 96 lower-case hex digits",
                            (unsigned)idx);
            set->pcr[idx][k] = (uint8_t)(hi << 4 | lo);
        }
        set->mask |= 1u << idx;
        i += 2 * NITRO_PCR_LEN;
        if (i < n) {
            i++; /* the single space checked above */
            if (i == n)
                return fail(why, cap, "measurement: trailing space");
        }
    }
    if (set->mask == 0)
        return fail(why, cap, "measurement: names no pcr");
    return 0;
}

static bool valid_service(const char *s, size_t n)
{
    if (n == 0 || n >= CONFIG_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

/* One body line (without its newline) at step `*step`. */
static int body_line(struct bundle *b, enum body_step *step, const char *l, size_t n, char *why,
                     size_t cap)
{
    switch (*step) {
    case STEP_HEADER:
        if (n != strlen(BUNDLE_HEADER) || memcmp(l, BUNDLE_HEADER, n) != 0)
            return fail(why, cap, "the first line must be \"" BUNDLE_HEADER "\"");
        *step = STEP_VERSION;
        return 0;
    case STEP_VERSION:
        if (!starts(l, n, "version") || parse_u64_strict(l + 8, n - 8, &b->version) < 0 ||
            b->version == 0)
            return fail(why, cap, "expected \"version N\" (1..18446744073709551615, no leading 0)");
        *step = STEP_ISSUED;
        return 0;
    case STEP_ISSUED:
        if (!starts(l, n, "issued") || bundle_parse_time(l + 7, n - 7, &b->issued_ms) < 0)
            return fail(why, cap, "expected \"issued YYYY-MM-DDTHH:MM:SSZ\"");
        *step = STEP_EXPIRES;
        return 0;
    case STEP_EXPIRES:
        if (!starts(l, n, "expires") || bundle_parse_time(l + 8, n - 8, &b->expires_ms) < 0)
            return fail(why, cap, "expected \"expires YYYY-MM-DDTHH:MM:SSZ\"");
        if (b->expires_ms <= b->issued_ms)
            return fail(why, cap, "expires is not after issued");
        *step = STEP_SERVICES;
        return 0;
    case STEP_SERVICES:
        if (starts(l, n, "service")) {
            const char *s = l + 8;
            size_t sn = n - 8;
            if (!valid_service(s, sn))
                return fail(why, cap, "service: 1-63 of A-Z a-z 0-9 - _ .");
            if (b->n_services == BUNDLE_MAX_SERVICES)
                return fail(why, cap, "more than %d services", BUNDLE_MAX_SERVICES);
            for (size_t i = 0; i < b->n_services; i++) {
                if (strlen(b->services[i]) == sn && memcmp(b->services[i], s, sn) == 0)
                    return fail(why, cap, "service %.*s listed twice", (int)sn, s);
            }
            memcpy(b->services[b->n_services], s, sn);
            b->services[b->n_services++][sn] = '\0';
            return 0;
        }
        if (b->n_services == 0)
            return fail(why, cap, "expected at least one \"service NAME\" line");
        if (n == 14 && memcmp(l, "allow_debug no", 14) == 0)
            b->allow_debug = false;
        else if (n == 15 && memcmp(l, "allow_debug yes", 15) == 0)
            b->allow_debug = true;
        else
            return fail(why, cap, "expected \"service NAME\" or \"allow_debug yes|no\"");
        *step = STEP_DEBUG;
        return 0;
    case STEP_DEBUG:
    case STEP_SETS:
        if (!starts(l, n, "measurement"))
            return fail(why, cap, "unknown line (expected \"measurement pcrN=HEX ...\")");
        if (b->n_sets == POLICY_MAX_SETS)
            return fail(why, cap, "more than %d measurement lines", POLICY_MAX_SETS);
        if (parse_set(l + 12, n - 12, &b->sets[b->n_sets], why, cap) < 0)
            return -EINVAL;
        b->n_sets++;
        *step = STEP_SETS;
        return 0;
    }
    return fail(why, cap, "internal error");
}

int bundle_parse_body(const uint8_t *data, size_t len, struct bundle *out, char *why, size_t cap)
{
    const char *p = (const char *)data;
    enum body_step step = STEP_HEADER;
    size_t pos = 0;
    unsigned line = 0;
    char inner[200];

    memset(out, 0, sizeof(*out));
    if (len == 0 || len > BUNDLE_MAX_BYTES)
        return fail(why, cap, "body is empty or larger than %d bytes", BUNDLE_MAX_BYTES);
    if (p[len - 1] != '\n')
        return fail(why, cap, "body does not end with a newline");
    while (pos < len) {
        const char *nl = memchr(p + pos, '\n', len - pos);
        size_t n = (size_t)(nl - (p + pos));
        line++;
        if (n > BUNDLE_LINE_MAX)
            return fail(why, cap, "line %u: longer than %d bytes", line, BUNDLE_LINE_MAX);
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)p[pos + i];
            if (c < 0x20 || c >= 0x7f)
                return fail(why, cap, "line %u: byte 0x%02x (only printable ASCII)", line, c);
        }
        if (n == 0)
            return fail(why, cap, "line %u: empty line in the body", line);
        if (p[pos] == ' ' || p[pos + n - 1] == ' ')
            return fail(why, cap, "line %u: leading or trailing space", line);
        if (body_line(out, &step, p + pos, n, inner, sizeof(inner)) < 0)
            return fail(why, cap, "line %u: %s", line, inner);
        pos += n + 1;
    }
    if (step != STEP_SETS)
        return fail(why, cap,
                    "incomplete body: it needs version, issued, expires, service, "
                    "allow_debug and at least one measurement line, in this order");
    out->body_len = len;
    return 0;
}

/* ---- Envelope -------------------------------------------------------------------------------- */

/* Standard base64 with padding, strictly: the length a multiple of 4, no whitespace. Returns the
 * decoded length or -EINVAL. */
static int b64_decode(const char *s, size_t n, uint8_t *out, size_t cap)
{
    size_t pad = 0, dec;
    uint8_t tmp[(BUNDLE_SIG_MAX + 4 + 2) / 3 * 3 + 3];
    if (n == 0 || n % 4 != 0 || n / 4 * 3 > sizeof(tmp))
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '+' || c == '/';
        if (c == '=' && i >= n - 2) {
            pad++;
            continue;
        }
        if (!ok || pad > 0)
            return -EINVAL;
    }
    if (EVP_DecodeBlock(tmp, (const unsigned char *)s, (int)n) < 0)
        return -EINVAL;
    dec = n / 4 * 3 - pad;
    if (dec > cap)
        return -EINVAL;
    memcpy(out, tmp, dec);
    return (int)dec;
}

int bundle_parse(const uint8_t *data, size_t len, struct bundle *out, char *why, size_t cap)
{
    const char *p = (const char *)data;
    size_t body_len = 0, pos;
    char inner[200];
    int rc;

    memset(out, 0, sizeof(*out));
    if (len == 0 || len > BUNDLE_MAX_BYTES)
        return fail(why, cap, "empty or larger than %d bytes", BUNDLE_MAX_BYTES);
    if (p[len - 1] != '\n')
        return fail(why, cap, "does not end with a newline");
    /* The signatures follow the LAST blank line (signed-note): the body holds none. */
    for (size_t i = len - 1; i > 0; i--) {
        if (p[i] == '\n' && p[i - 1] == '\n') {
            body_len = i; /* the body keeps its final newline */
            break;
        }
    }
    if (body_len == 0)
        return fail(why, cap, "no blank line before signature lines (not a signed note)");
    /* The body first: its rules are the bundle's. */
    rc = bundle_parse_body(data, body_len, out, inner, sizeof(inner));
    if (rc < 0)
        return fail(why, cap, "%s", inner);
    pos = body_len + 1;
    while (pos < len) {
        const char *nl = memchr(p + pos, '\n', len - pos);
        size_t n = (size_t)(nl - (p + pos)), name_len;
        const char *l = p + pos, *sp;
        struct bundle_sig *sig;
        uint8_t raw[BUNDLE_SIG_MAX + 4];
        int dec;

        if (out->n_sigs == BUNDLE_MAX_SIGS)
            return fail(why, cap, "more than %d signature lines", BUNDLE_MAX_SIGS);
        if (n < 4 || memcmp(l, SIG_PREFIX, 4) != 0)
            return fail(why, cap, "signature line %zu does not start with \"— \"", out->n_sigs + 1);
        sp = memchr(l + 4, ' ', n - 4);
        if (sp == NULL)
            return fail(why, cap, "signature line %zu: expected \"— NAME BASE64\"",
                        out->n_sigs + 1);
        name_len = (size_t)(sp - (l + 4));
        sig = &out->sigs[out->n_sigs];
        if (name_len == 0 || name_len >= sizeof(sig->key_name))
            return fail(why, cap, "signature line %zu: bad key name", out->n_sigs + 1);
        memcpy(sig->key_name, l + 4, name_len);
        sig->key_name[name_len] = '\0';
        if (!bundle_key_name_valid(sig->key_name))
            return fail(why, cap, "signature line %zu: bad key name", out->n_sigs + 1);
        dec = b64_decode(sp + 1, (size_t)(l + n - (sp + 1)), raw, sizeof(raw));
        if (dec < 5)
            return fail(why, cap, "signature line %zu: bad base64 signature", out->n_sigs + 1);
        memcpy(sig->key_id, raw, 4);
        sig->sig_len = (size_t)dec - 4;
        memcpy(sig->sig, raw + 4, sig->sig_len);
        out->n_sigs++;
        pos += n + 1;
    }
    if (out->n_sigs == 0)
        return fail(why, cap, "no signature line");
    {
        unsigned mdlen = 0;
        EVP_Digest(data, len, out->digest, &mdlen, EVP_sha256(), NULL);
    }
    return 0;
}

static bool ed25519_verify(const uint8_t pub[POLICY_KEY_LEN], const uint8_t *msg, size_t len,
                           const uint8_t *sig, size_t sig_len)
{
    EVP_PKEY *pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, POLICY_KEY_LEN);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = false;
    if (pk != NULL && ctx != NULL && sig_len == ED25519_SIG &&
        EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pk) == 1)
        ok = EVP_DigestVerify(ctx, sig, sig_len, msg, len) == 1;
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pk);
    return ok;
}

enum bundle_verdict bundle_verify(const struct bundle *b, const uint8_t *data,
                                  const struct policy_key *keys, size_t n_keys, size_t *signer)
{
    for (size_t s = 0; s < b->n_sigs; s++) {
        const struct bundle_sig *sig = &b->sigs[s];
        for (size_t k = 0; k < n_keys; k++) {
            uint8_t id[4];
            if (strcmp(keys[k].name, sig->key_name) != 0)
                continue;
            bundle_key_id(keys[k].name, keys[k].pub, id);
            if (CRYPTO_memcmp(id, sig->key_id, 4) != 0)
                continue;
            /* The first line from a trusted key decides (signed-note): a failure is not
             * excused by another line. */
            if (!ed25519_verify(keys[k].pub, data, b->body_len, sig->sig, sig->sig_len))
                return BUNDLE_BAD_SIGNATURE;
            *signer = k;
            return BUNDLE_OK;
        }
    }
    return BUNDLE_UNKNOWN_KEY;
}

int bundle_sign_line(const uint8_t *body, size_t len, EVP_PKEY *pkey, const char *name, char *line,
                     size_t cap)
{
    uint8_t raw[4 + ED25519_SIG], pub[POLICY_KEY_LEN];
    char b64[((4 + ED25519_SIG) + 2) / 3 * 4 + 1];
    size_t sig_len = ED25519_SIG, pub_len = sizeof(pub);
    EVP_MD_CTX *ctx = NULL;
    int n, rc = -EIO;

    if (!bundle_key_name_valid(name) || EVP_PKEY_get_id(pkey) != EVP_PKEY_ED25519)
        return -EINVAL;
    if (EVP_PKEY_get_raw_public_key(pkey, pub, &pub_len) != 1 || pub_len != sizeof(pub))
        goto out;
    bundle_key_id(name, pub, raw);
    ctx = EVP_MD_CTX_new();
    if (ctx == NULL || EVP_DigestSignInit(ctx, NULL, NULL, NULL, pkey) != 1 ||
        EVP_DigestSign(ctx, raw + 4, &sig_len, body, len) != 1 || sig_len != ED25519_SIG)
        goto out;
    EVP_EncodeBlock((unsigned char *)b64, raw, (int)sizeof(raw));
    n = snprintf(line, cap, SIG_PREFIX "%s %s\n", name, b64);
    rc = (n < 0 || (size_t)n >= cap) ? -ENOSPC : n;
out:
    EVP_MD_CTX_free(ctx);
    return rc;
}
