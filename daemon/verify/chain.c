#include "verify/chain.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "base/file.h"
#include "verify/aws_root.h"

/* Skew is clamped here only so that window arithmetic cannot overflow; configuration keeps it
 * far smaller. */
#define SKEW_MAX_S ((int64_t)INT32_MAX)

struct cache_entry {
    bool used;
    size_t index;       /* position in cabundle: the entry vouches for this place in the path */
    uint8_t hash[32];   /* SHA-256 of the certificate's DER */
    uint8_t parent[32]; /* SHA-256 of the DER of the issuer it was verified under */
    X509 *cert;
    int64_t not_before_s;
    int64_t not_after_s;
    uint64_t last_used;
};

/*
 * A leaf verdict: the exact path (the leaf's DER digest and that of every cabundle certificate,
 * root first) that a full verification accepted, and the instants at which the verdict holds —
 * the intersection of every certificate's validity, the root's included. Within it the same
 * bytes under the same root give the same answer (nothing else in the verification depends on
 * time: no revocation lists), so the document then needs only its COSE signature checked.
 */
struct leaf_entry {
    bool used;
    size_t n;                               /* cabundle length */
    uint8_t leaf_hash[32];                  /* SHA-256 of the leaf's DER */
    uint8_t bundle[NITRO_MAX_CABUNDLE][32]; /* SHA-256 of each cabundle DER, root first */
    X509 *leaf;                             /* the parsed leaf, handed out with a reference */
    int64_t leaf_not_before_s, leaf_not_after_s;
    int64_t not_before_s, not_after_s; /* the latest notBefore and earliest notAfter of the path */
    uint64_t inserted;
};

struct chain {
    X509 *root;
    uint8_t *root_der;
    size_t root_der_len;
    uint8_t root_hash[32];
    int64_t root_not_before_s;
    int64_t root_not_after_s;
    X509_STORE *store; /* the root and nothing else */
    EVP_MD *sha256;
    struct cache_entry cache[CHAIN_CACHE_MAX];
    struct leaf_entry leaves[CHAIN_LEAF_CACHE_MAX];
    uint64_t tick;
    uint64_t n_warm;
    uint64_t n_leaf;
    uint64_t n_cold;
};

/* The validity shared by every certificate of a verified path, for the leaf verdict cache. */
struct path_window {
    bool cacheable; /* every certificate is one the warm path may stand for */
    int64_t not_before_s;
    int64_t not_after_s;
};

/* The instant and allowance of one verification, for the OpenSSL verify callback. */
struct time_window {
    int64_t t_s;
    int64_t skew_s;
};

/* ---- Time ----------------------------------------------------------------------------------- */

/* Days since 1970-01-01 of a proleptic Gregorian date (the civil-from-days inverse published by
 * H. Hinnant); avoids timegm(), which is not C11 and depends on the C library. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static int time_to_s(const ASN1_TIME *t, int64_t *s)
{
    struct tm tm;
    /* ASN1_TIME_to_tm(NULL, ...) would return the current time: never let that happen. */
    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
        return -EINVAL;
    *s =
        days_from_civil((int64_t)tm.tm_year + 1900, (unsigned)tm.tm_mon + 1, (unsigned)tm.tm_mday) *
            86400 +
        (int64_t)tm.tm_hour * 3600 + (int64_t)tm.tm_min * 60 + tm.tm_sec;
    return 0;
}

int chain_time_to_ms(const ASN1_TIME *t, int64_t *ms)
{
    int64_t s;
    if (time_to_s(t, &s) < 0)
        return -EINVAL;
    *ms = s * 1000;
    return 0;
}

static int cert_window(X509 *x, int64_t *not_before_s, int64_t *not_after_s)
{
    if (time_to_s(X509_get0_notBefore(x), not_before_s) < 0 ||
        time_to_s(X509_get0_notAfter(x), not_after_s) < 0)
        return -EINVAL;
    return 0;
}

/* Certificate validity is judged at whole seconds, as X.509 states it: valid at t when
 * notBefore - skew <= t <= notAfter + skew (both ends inclusive, RFC 5280 §4.1.2.5). */
static bool window_contains(int64_t not_before_s, int64_t not_after_s, int64_t t_s, int64_t skew_s)
{
    return not_before_s - skew_s <= t_s && t_s <= not_after_s + skew_s;
}

static int64_t floor_div_1000(int64_t ms)
{
    int64_t q = ms / 1000;
    return (ms % 1000 < 0) ? q - 1 : q;
}

/* ---- Certificate helpers -------------------------------------------------------------------- */

static int sha256(const struct chain *c, const uint8_t *data, size_t len, uint8_t out[32])
{
    unsigned int n = 0;
    if (EVP_Digest(data, len, out, &n, c->sha256, NULL) != 1 || n != 32)
        return -ENOMEM;
    return 0;
}

/* Parses one DER certificate, which must use every byte it was given: bytes after the
 * certificate would be data that no check ever looked at. */
static X509 *parse_der(const uint8_t *der, size_t len)
{
    const unsigned char *p = der;
    X509 *x;
    if (len == 0 || len > NITRO_MAX_CERT)
        return NULL;
    x = d2i_X509(NULL, &p, (long)len);
    if (x == NULL)
        return NULL;
    if (p != der + len) {
        X509_free(x);
        return NULL;
    }
    return x;
}

static void position_name(size_t cabundle_index, size_t n, char *out, size_t cap)
{
    if (cabundle_index == 0)
        snprintf(out, cap, "root");
    else if (cabundle_index >= n)
        snprintf(out, cap, "leaf");
    else
        snprintf(out, cap, "cabundle[%zu]", cabundle_index);
}

static bool is_p384(X509 *x)
{
    char group[32];
    size_t len = 0;
    EVP_PKEY *k = X509_get0_pubkey(x);
    if (k == NULL || EVP_PKEY_get_base_id(k) != EVP_PKEY_EC)
        return false;
    if (EVP_PKEY_get_group_name(k, group, sizeof(group), &len) != 1)
        return false;
    return strcmp(group, SN_secp384r1) == 0;
}

static int check_key_and_alg(X509 *x, const char *pos, struct verify_error *err)
{
    uint32_t flags = X509_get_extension_flags(x);
    if (flags & EXFLAG_INVALID)
        return verify_error_set(err, VERIFY_R_CHAIN_EXTENSION, pos);
    if (!is_p384(x))
        return verify_error_set(err, VERIFY_R_CHAIN_KEY, pos);
    if (X509_get_signature_nid(x) != NID_ecdsa_with_SHA384)
        return verify_error_set(err, VERIFY_R_CHAIN_SIGNATURE_ALGORITHM, pos);
    return 0;
}

static bool basic_constraints_critical(X509 *x)
{
    int idx = X509_get_ext_by_NID(x, NID_basic_constraints, -1);
    if (idx < 0)
        return false;
    return X509_EXTENSION_get_critical(X509_get_ext(x, idx)) == 1;
}

/* A CA of the Nitro chain: critical basicConstraints with cA, keyUsage with keyCertSign, and a
 * pathLen (when it has one) that admits the `below` CA certificates under it in this path. */
static int check_ca_profile(X509 *x, size_t below, const char *pos, struct verify_error *err)
{
    uint32_t flags = X509_get_extension_flags(x);
    long pathlen;
    if (!(flags & EXFLAG_BCONS) || !(flags & EXFLAG_CA) || !basic_constraints_critical(x))
        return verify_error_set(err, VERIFY_R_CHAIN_NOT_CA, pos);
    if (!(flags & EXFLAG_KUSAGE) || !(X509_get_key_usage(x) & KU_KEY_CERT_SIGN))
        return verify_error_set(err, VERIFY_R_CHAIN_NOT_CA, pos);
    pathlen = X509_get_pathlen(x);
    if (pathlen >= 0 && (unsigned long)below > (unsigned long)pathlen)
        return verify_error_set(err, VERIFY_R_CHAIN_PATH_LENGTH, pos);
    return 0;
}

/* The NSM leaf: not a CA, no pathLen, keyUsage with digitalSignature. */
static int check_leaf_profile(X509 *x, struct verify_error *err)
{
    uint32_t flags;
    int rc = check_key_and_alg(x, "leaf", err);
    if (rc < 0)
        return rc;
    flags = X509_get_extension_flags(x);
    if ((flags & EXFLAG_CA) || X509_get_pathlen(x) >= 0)
        return verify_error_set(err, VERIFY_R_CHAIN_LEAF, NULL);
    if (!(flags & EXFLAG_KUSAGE) || !(X509_get_key_usage(x) & KU_DIGITAL_SIGNATURE))
        return verify_error_set(err, VERIFY_R_CHAIN_LEAF, NULL);
    return 0;
}

/*
 * The warm path re-checks a leaf against a cached issuer with X509_check_issued() and
 * X509_verify() instead of the whole of X509_verify_cert(). That is only equivalent when no
 * extension could make X509_verify_cert() look further (name constraints, policy constraints,
 * policy mappings, proxy certificates...). Certificates with any extension outside this list
 * are never cached, and leaves with one always take the cold path.
 */
static bool warm_path_extensions_only(X509 *x)
{
    static const int allowed[] = {NID_basic_constraints,       NID_key_usage,
                                  NID_subject_key_identifier,  NID_authority_key_identifier,
                                  NID_crl_distribution_points, NID_info_access};
    int n = X509_get_ext_count(x);
    for (int i = 0; i < n; i++) {
        int nid = OBJ_obj2nid(X509_EXTENSION_get_object(X509_get_ext(x, i)));
        bool ok = false;
        for (size_t j = 0; j < sizeof(allowed) / sizeof(allowed[0]); j++)
            ok = ok || nid == allowed[j];
        if (!ok)
            return false;
    }
    return true;
}

/* ---- Cache ---------------------------------------------------------------------------------- */

static struct cache_entry *cache_find(struct chain *c, const uint8_t hash[32],
                                      const uint8_t parent[32], size_t index)
{
    for (size_t i = 0; i < CHAIN_CACHE_MAX; i++) {
        struct cache_entry *e = &c->cache[i];
        if (e->used && e->index == index && memcmp(e->hash, hash, 32) == 0 &&
            memcmp(e->parent, parent, 32) == 0)
            return e;
    }
    return NULL;
}

static void cache_drop(struct cache_entry *e)
{
    X509_free(e->cert);
    memset(e, 0, sizeof(*e));
}

static void cache_insert(struct chain *c, X509 *cert, const uint8_t hash[32],
                         const uint8_t parent[32], size_t index, int64_t t_s, int64_t skew_s)
{
    struct cache_entry *slot = cache_find(c, hash, parent, index);
    int64_t nb, na;

    if (slot != NULL) {
        slot->last_used = ++c->tick;
        return;
    }
    if (cert_window(cert, &nb, &na) < 0 || X509_up_ref(cert) != 1)
        return; /* not cached: the next verification simply takes the cold path */
    /* A free slot, else one that has expired at this check time, else the least recently
     * used: the cache never grows beyond CHAIN_CACHE_MAX. */
    for (size_t i = 0; i < CHAIN_CACHE_MAX && slot == NULL; i++) {
        if (!c->cache[i].used)
            slot = &c->cache[i];
    }
    for (size_t i = 0; i < CHAIN_CACHE_MAX && slot == NULL; i++) {
        if (!window_contains(c->cache[i].not_before_s, c->cache[i].not_after_s, t_s, skew_s))
            slot = &c->cache[i];
    }
    for (size_t i = 0; i < CHAIN_CACHE_MAX; i++) {
        if (slot == NULL || c->cache[i].last_used < slot->last_used)
            slot = &c->cache[i];
    }
    if (slot->used)
        cache_drop(slot);
    *slot = (struct cache_entry){
        .used = true,
        .index = index,
        .cert = cert,
        .not_before_s = nb,
        .not_after_s = na,
        .last_used = ++c->tick,
    };
    memcpy(slot->hash, hash, 32);
    memcpy(slot->parent, parent, 32);
}

static void window_narrow(struct path_window *w, int64_t not_before_s, int64_t not_after_s)
{
    if (not_before_s > w->not_before_s)
        w->not_before_s = not_before_s;
    if (not_after_s < w->not_after_s)
        w->not_after_s = not_after_s;
}

/* The verdict for exactly this leaf and cabundle (root first), whatever the time. The digests
 * cover every byte of the path; the root is the pinned one because hashes[0] is its digest
 * (chain_verify compared cabundle[0] with it byte for byte). */
static struct leaf_entry *leaf_match(struct chain *c, const uint8_t leaf_hash[32],
                                     uint8_t hashes[][32], size_t n)
{
    for (size_t i = 0; i < CHAIN_LEAF_CACHE_MAX; i++) {
        struct leaf_entry *e = &c->leaves[i];
        if (e->used && e->n == n && memcmp(e->leaf_hash, leaf_hash, 32) == 0 &&
            memcmp(e->bundle, hashes, n * 32) == 0)
            return e;
    }
    return NULL;
}

static void leaf_drop(struct leaf_entry *e)
{
    X509_free(e->leaf);
    memset(e, 0, sizeof(*e));
}

/* Records the verdict of a verification that just accepted `leaf` over the path `w` describes.
 * A free slot, else the oldest entry: the cache never holds more than CHAIN_LEAF_CACHE_MAX. */
static void leaf_insert(struct chain *c, const uint8_t leaf_hash[32], uint8_t hashes[][32],
                        size_t n, X509 *leaf, int64_t leaf_nb, int64_t leaf_na,
                        struct path_window w)
{
    struct leaf_entry *slot = NULL;

    if (!w.cacheable || leaf_match(c, leaf_hash, hashes, n) != NULL || X509_up_ref(leaf) != 1)
        return;
    window_narrow(&w, leaf_nb, leaf_na);
    for (size_t i = 0; i < CHAIN_LEAF_CACHE_MAX; i++) {
        if (!c->leaves[i].used) {
            slot = &c->leaves[i];
            break;
        }
        if (slot == NULL || c->leaves[i].inserted < slot->inserted)
            slot = &c->leaves[i];
    }
    if (slot->used)
        leaf_drop(slot);
    *slot = (struct leaf_entry){
        .used = true,
        .n = n,
        .leaf = leaf,
        .leaf_not_before_s = leaf_nb,
        .leaf_not_after_s = leaf_na,
        .not_before_s = w.not_before_s,
        .not_after_s = w.not_after_s,
        .inserted = ++c->tick,
    };
    memcpy(slot->leaf_hash, leaf_hash, 32);
    memcpy(slot->bundle, hashes, n * 32);
}

void chain_clear_cache(struct chain *c)
{
    for (size_t i = 0; i < CHAIN_CACHE_MAX; i++) {
        if (c->cache[i].used)
            cache_drop(&c->cache[i]);
    }
    for (size_t i = 0; i < CHAIN_LEAF_CACHE_MAX; i++) {
        if (c->leaves[i].used)
            leaf_drop(&c->leaves[i]);
    }
}

void chain_get_stats(const struct chain *c, struct chain_stats *out)
{
    out->warm = c->n_warm;
    out->leaf_hits = c->n_leaf;
    out->cold = c->n_cold;
    out->cached = 0;
    out->cached_leaves = 0;
    for (size_t i = 0; i < CHAIN_CACHE_MAX; i++)
        out->cached += c->cache[i].used;
    for (size_t i = 0; i < CHAIN_LEAF_CACHE_MAX; i++)
        out->cached_leaves += c->leaves[i].used;
}

/* ---- Verification --------------------------------------------------------------------------- */

/*
 * OpenSSL checks every certificate's validity at the instant set with
 * X509_VERIFY_PARAM_set_time(). The skew allowance is applied here, per certificate: a time
 * error is forgiven when that certificate's window, widened by the skew on both sides, still
 * contains the instant. Every other error stands.
 */
static int verify_cb(int ok, X509_STORE_CTX *ctx)
{
    const struct time_window *w;
    X509 *cert;
    int64_t nb, na;
    int e;

    if (ok)
        return ok;
    e = X509_STORE_CTX_get_error(ctx);
    if (e != X509_V_ERR_CERT_NOT_YET_VALID && e != X509_V_ERR_CERT_HAS_EXPIRED)
        return 0;
    w = X509_STORE_CTX_get_app_data(ctx);
    cert = X509_STORE_CTX_get_current_cert(ctx);
    if (w == NULL || cert == NULL || cert_window(cert, &nb, &na) < 0)
        return 0;
    if (!window_contains(nb, na, w->t_s, w->skew_s))
        return 0;
    X509_STORE_CTX_set_error(ctx, X509_V_OK);
    return 1;
}

static enum verify_reason map_x509_error(int e)
{
    switch (e) {
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return VERIFY_R_CHAIN_NOT_YET_VALID;
    case X509_V_ERR_CERT_HAS_EXPIRED:
        return VERIFY_R_CHAIN_EXPIRED;
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
    case X509_V_ERR_UNABLE_TO_DECRYPT_CERT_SIGNATURE:
    case X509_V_ERR_UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY:
        return VERIFY_R_CHAIN_BAD_SIGNATURE;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_UNTRUSTED:
    case X509_V_ERR_CERT_CHAIN_TOO_LONG:
        return VERIFY_R_CHAIN_UNTRUSTED;
    case X509_V_ERR_INVALID_CA:
    case X509_V_ERR_KEYUSAGE_NO_CERTSIGN:
        return VERIFY_R_CHAIN_NOT_CA;
    case X509_V_ERR_PATH_LENGTH_EXCEEDED:
        return VERIFY_R_CHAIN_PATH_LENGTH;
    case X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION:
    case X509_V_ERR_INVALID_EXTENSION:
        return VERIFY_R_CHAIN_EXTENSION;
    default:
        return VERIFY_R_CHAIN_OTHER;
    }
}

/* The path OpenSSL built must be exactly leaf, cabundle[n-1], ..., cabundle[1], root: the
 * document's order (root first) with every certificate used once. */
static bool path_is_cabundle(X509_STORE_CTX *ctx, X509 *leaf, X509 *const *certs, size_t n,
                             X509 *root)
{
    STACK_OF(X509) *built = X509_STORE_CTX_get0_chain(ctx);
    if (built == NULL || sk_X509_num(built) != (int)n + 1)
        return false;
    if (X509_cmp(sk_X509_value(built, 0), leaf) != 0)
        return false;
    for (size_t k = 1; k < n; k++) {
        if (X509_cmp(sk_X509_value(built, (int)k), certs[n - k]) != 0)
            return false;
    }
    return X509_cmp(sk_X509_value(built, (int)n), root) == 0;
}

static int verify_cold(struct chain *c, const struct nitro_document *doc, uint8_t hashes[][32],
                       X509 *leaf, int64_t t_s, int64_t skew_s, struct path_window *pw,
                       struct verify_error *err)
{
    size_t n = doc->n_cabundle;
    X509 *certs[NITRO_MAX_CABUNDLE] = {NULL};
    STACK_OF(X509) *untrusted = NULL;
    X509_STORE_CTX *ctx = NULL;
    X509_VERIFY_PARAM *param;
    struct time_window w = {t_s, skew_s};
    char pos[VERIFY_DETAIL_MAX];
    long root_pathlen;
    int rc = -ENOMEM;

    for (size_t i = 1; i < n; i++) {
        certs[i] = parse_der(doc->cabundle[i].data, doc->cabundle[i].len);
        if (certs[i] == NULL) {
            position_name(i, n, pos, sizeof(pos));
            rc = verify_error_set(err, VERIFY_R_CHAIN_BAD_DER, pos);
            goto out;
        }
    }
    untrusted = sk_X509_new_null();
    if (untrusted == NULL)
        goto out;
    for (size_t i = 1; i < n; i++) {
        if (sk_X509_push(untrusted, certs[i]) <= 0)
            goto out;
    }
    ctx = X509_STORE_CTX_new();
    if (ctx == NULL || X509_STORE_CTX_init(ctx, c->store, leaf, untrusted) != 1)
        goto out;
    param = X509_STORE_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_time(param, (time_t)t_s);
    /* None of these is set by default; clearing them states the contract: the pinned root is
     * the only anchor, real leaves lack AKI (X509_STRICT would refuse them), no proxy certs. */
    X509_VERIFY_PARAM_clear_flags(param, X509_V_FLAG_PARTIAL_CHAIN | X509_V_FLAG_X509_STRICT |
                                             X509_V_FLAG_ALLOW_PROXY_CERTS |
                                             X509_V_FLAG_NO_CHECK_TIME);
    if (X509_STORE_CTX_set_app_data(ctx, &w) != 1)
        goto out;
    X509_STORE_CTX_set_verify_cb(ctx, verify_cb);

    if (X509_verify_cert(ctx) != 1) {
        int e = X509_STORE_CTX_get_error(ctx);
        int depth = X509_STORE_CTX_get_error_depth(ctx);
        enum verify_reason reason;
        if (e == X509_V_OK)
            e = X509_V_ERR_UNSPECIFIED;
        reason = map_x509_error(e);
        if (reason == VERIFY_R_CHAIN_OTHER)
            snprintf(pos, sizeof(pos), "%s", X509_verify_cert_error_string(e));
        else
            position_name(depth <= 0           ? n
                          : (size_t)depth >= n ? 0
                                               : n - (size_t)depth,
                          n, pos, sizeof(pos));
        rc = verify_error_set(err, reason, pos);
        goto out;
    }
    if (!path_is_cabundle(ctx, leaf, certs, n, c->root)) {
        rc = verify_error_set(err, VERIFY_R_CHAIN_ORDER, NULL);
        goto out;
    }
    root_pathlen = X509_get_pathlen(c->root);
    if (root_pathlen >= 0 && (unsigned long)(n - 1) > (unsigned long)root_pathlen) {
        rc = verify_error_set(err, VERIFY_R_CHAIN_PATH_LENGTH, "root");
        goto out;
    }
    for (size_t i = 1; i < n; i++) {
        position_name(i, n, pos, sizeof(pos));
        if ((rc = check_key_and_alg(certs[i], pos, err)) < 0 ||
            (rc = check_ca_profile(certs[i], n - 1 - i, pos, err)) < 0)
            goto out;
    }
    /* Cache the verified prefix; it stops at the first certificate that is not cacheable, as
     * everything under it could never be found by a warm lookup anyway. */
    for (size_t i = 1; i < n && warm_path_extensions_only(certs[i]); i++)
        cache_insert(c, certs[i], hashes[i], hashes[i - 1], i, t_s, skew_s);
    for (size_t i = 1; i < n && pw->cacheable; i++) {
        int64_t nb, na;
        pw->cacheable = warm_path_extensions_only(certs[i]) && cert_window(certs[i], &nb, &na) == 0;
        if (pw->cacheable)
            window_narrow(pw, nb, na);
    }
    c->n_cold++;
    rc = 0;
out:
    if (rc != 0)
        ERR_clear_error();
    X509_STORE_CTX_free(ctx);
    sk_X509_free(untrusted); /* the stack only borrowed certs[] */
    for (size_t i = 1; i < n; i++)
        X509_free(certs[i]);
    return rc;
}

/* Accepts only; returns false whenever anything differs from a previously verified path, and
 * the cold path then decides. */
static bool verify_warm(struct chain *c, const struct nitro_document *doc, uint8_t hashes[][32],
                        X509 *leaf, int64_t leaf_nb, int64_t leaf_na, int64_t t_s, int64_t skew_s,
                        struct path_window *w)
{
    size_t n = doc->n_cabundle;
    struct cache_entry *e[NITRO_MAX_CABUNDLE] = {NULL};
    X509 *issuer;
    uint32_t flags;

    if (n < 2)
        return false;
    if (!window_contains(c->root_not_before_s, c->root_not_after_s, t_s, skew_s))
        return false;
    for (size_t i = 1; i < n; i++) {
        e[i] = cache_find(c, hashes[i], hashes[i - 1], i);
        if (e[i] == NULL || !window_contains(e[i]->not_before_s, e[i]->not_after_s, t_s, skew_s))
            return false;
    }
    issuer = e[n - 1]->cert;
    flags = X509_get_extension_flags(leaf);
    if ((flags & (EXFLAG_INVALID | EXFLAG_CRITICAL | EXFLAG_PROXY)) ||
        !warm_path_extensions_only(leaf))
        return false;
    if (!window_contains(leaf_nb, leaf_na, t_s, skew_s))
        return false;
    if (X509_check_issued(issuer, leaf) != X509_V_OK)
        return false;
    if (X509_verify(leaf, X509_get0_pubkey(issuer)) != 1) {
        ERR_clear_error();
        return false;
    }
    for (size_t i = 1; i < n; i++) {
        e[i]->last_used = ++c->tick;
        window_narrow(w, e[i]->not_before_s, e[i]->not_after_s);
    }
    c->n_warm++;
    return true;
}

int chain_verify(struct chain *c, const struct nitro_document *doc, int64_t now_ms, int64_t skew_ms,
                 X509 **leaf_out, int64_t *leaf_not_before_ms, int64_t *leaf_not_after_ms,
                 struct verify_error *err)
{
    size_t n = doc->n_cabundle;
    uint8_t hashes[NITRO_MAX_CABUNDLE][32], leaf_hash[32];
    int64_t t_s = floor_div_1000(now_ms);
    int64_t skew_s = skew_ms <= 0 ? 0 : skew_ms / 1000;
    int64_t leaf_nb, leaf_na;
    struct path_window w = {true, c->root_not_before_s, c->root_not_after_s};
    const struct leaf_entry *hit;
    X509 *leaf = NULL;
    int rc;

    *leaf_out = NULL;
    if (skew_s > SKEW_MAX_S)
        skew_s = SKEW_MAX_S;
    if (n == 0 || n > NITRO_MAX_CABUNDLE)
        return verify_error_set(err, VERIFY_R_CHAIN_UNTRUSTED, NULL);
    /* cabundle[0] is compared, never trusted: the anchor is the pinned root alone. */
    if (doc->cabundle[0].len != c->root_der_len ||
        CRYPTO_memcmp(doc->cabundle[0].data, c->root_der, c->root_der_len) != 0)
        return verify_error_set(err, VERIFY_R_CHAIN_ROOT_MISMATCH, NULL);

    memcpy(hashes[0], c->root_hash, 32);
    for (size_t i = 1; i < n; i++) {
        if ((rc = sha256(c, doc->cabundle[i].data, doc->cabundle[i].len, hashes[i])) < 0)
            return rc;
    }
    if ((rc = sha256(c, doc->certificate.data, doc->certificate.len, leaf_hash)) < 0)
        return rc;
    /* The exact path was accepted before and every certificate of it is valid now: the verdict
     * stands without a signature check, and the leaf needs no parsing either. */
    hit = leaf_match(c, leaf_hash, hashes, n);
    if (hit != NULL && window_contains(hit->not_before_s, hit->not_after_s, t_s, skew_s) &&
        X509_up_ref(hit->leaf) == 1) {
        c->n_warm++;
        c->n_leaf++;
        *leaf_out = hit->leaf;
        *leaf_not_before_ms = hit->leaf_not_before_s * 1000;
        *leaf_not_after_ms = hit->leaf_not_after_s * 1000;
        return 0;
    }
    leaf = parse_der(doc->certificate.data, doc->certificate.len);
    if (leaf == NULL)
        return verify_error_set(err, VERIFY_R_CHAIN_BAD_DER, "leaf");
    if (cert_window(leaf, &leaf_nb, &leaf_na) < 0) {
        rc = verify_error_set(err, VERIFY_R_CHAIN_BAD_DER, "leaf validity");
        goto out;
    }
    if (!verify_warm(c, doc, hashes, leaf, leaf_nb, leaf_na, t_s, skew_s, &w)) {
        w = (struct path_window){true, c->root_not_before_s, c->root_not_after_s};
        rc = verify_cold(c, doc, hashes, leaf, t_s, skew_s, &w, err);
        if (rc < 0)
            goto out;
    }
    rc = check_leaf_profile(leaf, err);
    if (rc < 0)
        goto out;
    /* Only leaves the warm path could check stand for a cached verdict (the same caution as
     * for intermediates: nothing that would make a full verification look further). */
    w.cacheable =
        w.cacheable && warm_path_extensions_only(leaf) &&
        !(X509_get_extension_flags(leaf) & (EXFLAG_INVALID | EXFLAG_CRITICAL | EXFLAG_PROXY));
    leaf_insert(c, leaf_hash, hashes, n, leaf, leaf_nb, leaf_na, w);
    *leaf_out = leaf;
    leaf = NULL;
    *leaf_not_before_ms = leaf_nb * 1000;
    *leaf_not_after_ms = leaf_na * 1000;
out:
    X509_free(leaf);
    return rc;
}

/* ---- Root ----------------------------------------------------------------------------------- */

#define ROOT_PEM_MAX (64 * 1024)

static X509 *load_pem_root(const char *path, char *err, size_t cap)
{
    BIO *bio = NULL;
    X509 *root = NULL;
    X509 *extra = NULL;
    uint8_t *pem = NULL;
    size_t len = 0;
    /* Read as a regular file only: a FIFO at the path would hold a reload until written to. */
    int rc = file_read(path, ROOT_PEM_MAX, FILE_REGULAR, &pem, &len);

    if (rc == 0 && len > ROOT_PEM_MAX)
        rc = -EFBIG;
    if (rc < 0) {
        snprintf(err, cap, "root_ca %s: cannot open: %s", path, file_strerror(-rc));
        goto out;
    }
    bio = BIO_new_mem_buf(pem, (int)len);
    if (bio == NULL) {
        snprintf(err, cap, "root_ca %s: out of memory", path);
        goto out;
    }
    root = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    if (root == NULL) {
        snprintf(err, cap, "root_ca %s: no PEM certificate", path);
        goto out;
    }
    /* One file, one anchor: a bundle would silently widen what is trusted. */
    extra = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    if (extra != NULL) {
        snprintf(err, cap, "root_ca %s: holds more than one certificate", path);
        X509_free(root);
        root = NULL;
    }
out:
    ERR_clear_error();
    X509_free(extra);
    BIO_free(bio);
    free(pem);
    return root;
}

static int check_root(struct chain *c, char *err, size_t cap)
{
    struct verify_error ve;
    EVP_PKEY *key = X509_get0_pubkey(c->root);
    if (check_key_and_alg(c->root, "root", &ve) < 0) {
        snprintf(err, cap, "root certificate: %s", verify_reason_string(ve.reason));
        return -EINVAL;
    }
    if (check_ca_profile(c->root, 0, "root", &ve) < 0) {
        snprintf(err, cap, "root certificate: %s", verify_reason_string(ve.reason));
        return -EINVAL;
    }
    if (X509_check_issued(c->root, c->root) != X509_V_OK || key == NULL ||
        X509_verify(c->root, key) != 1) {
        snprintf(err, cap, "root certificate is not self-signed");
        return -EINVAL;
    }
    if (cert_window(c->root, &c->root_not_before_s, &c->root_not_after_s) < 0) {
        snprintf(err, cap, "root certificate has an unreadable validity period");
        return -EINVAL;
    }
    return 0;
}

struct chain *chain_new(const char *root_pem_path, char *err, size_t cap)
{
    struct chain *c = calloc(1, sizeof(*c));
    int len;

    if (c == NULL) {
        snprintf(err, cap, "out of memory");
        return NULL;
    }
    c->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (c->sha256 == NULL) {
        snprintf(err, cap, "SHA-256 is not available");
        goto fail;
    }
    if (root_pem_path != NULL) {
        c->root = load_pem_root(root_pem_path, err, cap);
        if (c->root == NULL)
            goto fail;
    } else {
        uint8_t digest[32];
        if (sha256(c, aws_root_g1_der, aws_root_g1_der_len, digest) < 0 ||
            CRYPTO_memcmp(digest, aws_root_g1_sha256, 32) != 0) {
            snprintf(err, cap, "compiled-in AWS Nitro root does not match SHA-256 %s",
                     AWS_ROOT_G1_SHA256_HEX);
            goto fail;
        }
        c->root = parse_der(aws_root_g1_der, aws_root_g1_der_len);
        if (c->root == NULL) {
            snprintf(err, cap, "compiled-in AWS Nitro root does not parse");
            goto fail;
        }
    }
    /* The DER compared with cabundle[0] is re-encoded from the parsed certificate; OpenSSL keeps
     * the received encoding, so for the compiled-in root it is the checked bytes. */
    len = i2d_X509(c->root, &c->root_der);
    if (len <= 0 || (size_t)len > NITRO_MAX_CERT) {
        snprintf(err, cap, "root certificate cannot be encoded in at most %d bytes",
                 NITRO_MAX_CERT);
        goto fail;
    }
    c->root_der_len = (size_t)len;
    if (root_pem_path == NULL && (c->root_der_len != aws_root_g1_der_len ||
                                  memcmp(c->root_der, aws_root_g1_der, aws_root_g1_der_len) != 0)) {
        snprintf(err, cap, "compiled-in AWS Nitro root does not re-encode to itself");
        goto fail;
    }
    if (sha256(c, c->root_der, c->root_der_len, c->root_hash) < 0) {
        snprintf(err, cap, "SHA-256 failed");
        goto fail;
    }
    if (check_root(c, err, cap) < 0)
        goto fail;
    /* A store with the root alone: no X509_STORE_set_default_paths(), no system CAs. */
    c->store = X509_STORE_new();
    if (c->store == NULL || X509_STORE_add_cert(c->store, c->root) != 1) {
        snprintf(err, cap, "cannot build the certificate store");
        goto fail;
    }
    return c;
fail:
    ERR_clear_error();
    chain_free(c);
    return NULL;
}

void chain_free(struct chain *c)
{
    if (c == NULL)
        return;
    chain_clear_cache(c);
    X509_STORE_free(c->store);
    OPENSSL_free(c->root_der);
    X509_free(c->root);
    EVP_MD_free(c->sha256);
    free(c);
}

const uint8_t *chain_root_der(const struct chain *c, size_t *len)
{
    *len = c->root_der_len;
    return c->root_der;
}
