/*
 * Certificate chain verification (daemon/verify/chain.c) against a test PKI shaped like AWS's
 * (root -> regional -> zonal -> instance -> leaf, P-384, ES384), minted here with OpenSSL: each
 * rule of the Nitro profile has a chain that breaks it and the exact reason it gets, and the
 * intermediate cache accepts only what a full verification would.
 */
#include "verify_helpers.h"

#include <unistd.h>

#include "verify/aws_root.h"
#include "verify/chain.h"

#define BASE    ((time_t)1700000000) /* 2023-11-14T22:13:20Z: the PKI's "now" */
#define BASE_MS ((int64_t)BASE * 1000)
#define SKEW_MS 60000

enum { ROOT = 0, REGIONAL, ZONAL, INSTANCE, LEAF, N_CERTS };

struct pki {
    EVP_PKEY *key[N_CERTS];
    X509 *cert[N_CERTS];
    char root_path[64];
    struct chain *chain;
};

static X509 *mint(struct pki *p, int i, const char *cn, const struct th_cert_opts *o)
{
    X509 *issuer = i == ROOT ? NULL : p->cert[i - 1];
    EVP_PKEY *ikey = i == ROOT ? p->key[ROOT] : p->key[i - 1];
    return th_cert(cn, p->key[i], issuer, ikey, o);
}

static int setup(void **state)
{
    static const char *names[N_CERTS] = {"test.nitro-enclaves", "regional.test", "zonal.test",
                                         "i-0123.test", "i-0123-enc0456.test"};
    static const int pathlen[N_CERTS] = {-1, 2, 1, 0, -1};
    struct pki *p = calloc(1, sizeof(*p));
    char err[256];
    int fd;

    assert_non_null(p);
    for (int i = 0; i < N_CERTS; i++) {
        struct th_cert_opts o = i == LEAF ? th_leaf_opts(BASE) : th_ca_opts(BASE, pathlen[i]);
        p->key[i] = th_key("P-384");
        p->cert[i] = mint(p, i, names[i], &o);
    }
    snprintf(p->root_path, sizeof(p->root_path), "/tmp/attestproxy-chain-XXXXXX");
    fd = mkstemp(p->root_path);
    assert_true(fd >= 0);
    close(fd);
    th_write_pem(p->cert[ROOT], p->root_path);
    p->chain = chain_new(p->root_path, err, sizeof(err));
    if (p->chain == NULL)
        fail_msg("chain_new: %s", err);
    *state = p;
    return 0;
}

static int teardown(void **state)
{
    struct pki *p = *state;
    chain_free(p->chain);
    unlink(p->root_path);
    for (int i = 0; i < N_CERTS; i++) {
        X509_free(p->cert[i]);
        EVP_PKEY_free(p->key[i]);
    }
    free(p);
    return 0;
}

/* A document's chain fields: `leaf` and the root-first cabundle. DER buffers are kept in a
 * small arena released by doc_free(). */
struct doc {
    struct nitro_document d;
    uint8_t *der[NITRO_MAX_CABUNDLE + 1];
    int n_der;
};

static void doc_set(struct doc *doc, X509 *leaf, X509 *const *bundle, size_t n)
{
    size_t len;
    memset(doc, 0, sizeof(*doc));
    uint8_t *der = th_der(leaf, &len);
    doc->der[doc->n_der++] = der;
    doc->d.certificate = (struct cose_bytes){der, len};
    for (size_t i = 0; i < n; i++) {
        der = th_der(bundle[i], &len);
        doc->der[doc->n_der++] = der;
        doc->d.cabundle[i] = (struct cose_bytes){der, len};
    }
    doc->d.n_cabundle = n;
}

static void doc_free(struct doc *doc)
{
    for (int i = 0; i < doc->n_der; i++)
        OPENSSL_free(doc->der[i]);
}

static int run(struct pki *p, struct doc *doc, int64_t now_ms, int64_t skew_ms,
               struct verify_error *err)
{
    X509 *leaf = NULL;
    int64_t nb = 0, na = 0;
    int rc = chain_verify(p->chain, &doc->d, now_ms, skew_ms, &leaf, &nb, &na, err);
    if (rc == 0) {
        assert_non_null(leaf);
        assert_true(nb < na);
    } else {
        assert_null(leaf);
    }
    X509_free(leaf);
    return rc;
}

static void expect(struct pki *p, X509 *leaf, X509 *const *bundle, size_t n, int64_t now_ms,
                   enum verify_reason reason, const char *detail)
{
    struct doc doc;
    struct verify_error err = {0};
    doc_set(&doc, leaf, bundle, n);
    int rc = run(p, &doc, now_ms, SKEW_MS, &err);
    if (reason == VERIFY_R_OK) {
        if (rc != 0)
            fail_msg("rejected: %s (%s)", verify_reason_string(err.reason), err.detail);
    } else {
        if (rc != VERIFY_REJECT || err.reason != reason)
            fail_msg("got %s (%s), want %s",
                     rc == 0 ? "accepted" : verify_reason_string(err.reason), err.detail,
                     verify_reason_string(reason));
        if (detail != NULL)
            assert_string_equal(err.detail, detail);
    }
    doc_free(&doc);
}

/* The standard bundle: root, regional, zonal, instance. */
static void bundle_of(struct pki *p, X509 **b)
{
    for (int i = 0; i < LEAF; i++)
        b[i] = p->cert[i];
}

static void test_valid_chain_and_cache(void **state)
{
    struct pki *p = *state;
    X509 *b[4];
    struct chain_stats st;
    struct doc doc;
    struct verify_error err;
    X509 *leaf = NULL;
    int64_t nb, na;

    bundle_of(p, b);
    doc_set(&doc, p->cert[LEAF], b, 4);
    assert_int_equal(chain_verify(p->chain, &doc.d, BASE_MS, SKEW_MS, &leaf, &nb, &na, &err), 0);
    assert_int_equal(X509_cmp(leaf, p->cert[LEAF]), 0);
    assert_int_equal(nb, BASE_MS - 60000);
    assert_int_equal(na, BASE_MS + 3 * 3600 * 1000LL);
    X509_free(leaf);
    chain_get_stats(p->chain, &st);
    assert_int_equal(st.cold, 1);
    assert_int_equal(st.warm, 0);
    assert_int_equal(st.cached, 3);

    assert_int_equal(run(p, &doc, BASE_MS + 1000, SKEW_MS, &err), 0);
    chain_get_stats(p->chain, &st);
    assert_int_equal(st.cold, 1);
    assert_int_equal(st.warm, 1);

    chain_clear_cache(p->chain);
    chain_get_stats(p->chain, &st);
    assert_int_equal(st.cached, 0);
    assert_int_equal(run(p, &doc, BASE_MS, SKEW_MS, &err), 0);
    chain_get_stats(p->chain, &st);
    assert_int_equal(st.cold, 2);
    doc_free(&doc);
}

static void test_bundle_shape(void **state)
{
    struct pki *p = *state;
    X509 *b[6];
    EVP_PKEY *k = th_key("P-384");
    struct th_cert_opts o = th_ca_opts(BASE, 1);
    X509 *stray = th_cert("stray.test", k, p->cert[ROOT], p->key[ROOT], &o);

    /* cabundle[0] must be the pinned root itself. */
    b[0] = p->cert[REGIONAL];
    b[1] = p->cert[ZONAL];
    b[2] = p->cert[INSTANCE];
    expect(p, p->cert[LEAF], b, 3, BASE_MS, VERIFY_R_CHAIN_ROOT_MISMATCH, NULL);
    /* A missing link: the instance certificate (now cabundle[2]) has no issuer. */
    b[0] = p->cert[ROOT];
    b[1] = p->cert[REGIONAL];
    b[2] = p->cert[INSTANCE];
    expect(p, p->cert[LEAF], b, 3, BASE_MS, VERIFY_R_CHAIN_UNTRUSTED, "cabundle[2]");
    /* Not root-first order: OpenSSL would find the path, the order check refuses it. */
    b[1] = p->cert[ZONAL];
    b[2] = p->cert[REGIONAL];
    b[3] = p->cert[INSTANCE];
    expect(p, p->cert[LEAF], b, 4, BASE_MS, VERIFY_R_CHAIN_ORDER, NULL);
    /* A certificate that is not on the path. */
    bundle_of(p, b);
    b[4] = b[3];
    b[3] = stray;
    expect(p, p->cert[LEAF], b, 5, BASE_MS, VERIFY_R_CHAIN_ORDER, NULL);
    /* The same certificate twice. */
    bundle_of(p, b);
    b[4] = b[3];
    expect(p, p->cert[LEAF], b, 5, BASE_MS, VERIFY_R_CHAIN_ORDER, NULL);
    /* Only the root: the leaf is not issued by it. */
    expect(p, p->cert[LEAF], b, 1, BASE_MS, VERIFY_R_CHAIN_UNTRUSTED, NULL);
    X509_free(stray);
    EVP_PKEY_free(k);
}

/* Re-mints the instance certificate with `o` (its key and issuer unchanged) and checks the
 * chain through it. */
static void expect_instance(struct pki *p, const struct th_cert_opts *o, enum verify_reason reason,
                            const char *detail)
{
    X509 *inst = th_cert("i-0123.test", p->key[INSTANCE], p->cert[ZONAL], p->key[ZONAL], o);
    X509 *b[4];
    bundle_of(p, b);
    b[INSTANCE] = inst;
    chain_clear_cache(p->chain);
    expect(p, p->cert[LEAF], b, 4, BASE_MS, reason, detail);
    X509_free(inst);
}

static void test_ca_profile(void **state)
{
    struct pki *p = *state;
    struct th_cert_opts o;

    o = th_ca_opts(BASE, 0);
    o.ca = false;
    expect_instance(p, &o, VERIFY_R_CHAIN_NOT_CA, "cabundle[3]");
    o = th_ca_opts(BASE, 0);
    o.ku = "critical,digitalSignature";
    expect_instance(p, &o, VERIFY_R_CHAIN_NOT_CA, "cabundle[3]");
    o = th_ca_opts(BASE, 0);
    o.bc_critical = false; /* OpenSSL accepts this; the Nitro profile does not */
    expect_instance(p, &o, VERIFY_R_CHAIN_NOT_CA, "cabundle[3]");
    o = th_ca_opts(BASE, 0);
    o.ku = NULL; /* no keyUsage at all: OpenSSL treats it as "any", the profile does not */
    expect_instance(p, &o, VERIFY_R_CHAIN_NOT_CA, "cabundle[3]");
    o = th_ca_opts(BASE, 0);
    o.md = EVP_sha256();
    expect_instance(p, &o, VERIFY_R_CHAIN_SIGNATURE_ALGORITHM, "cabundle[3]");
    o = th_ca_opts(BASE, 0);
    expect_instance(p, &o, VERIFY_R_OK, NULL);
}

static void test_path_length(void **state)
{
    struct pki *p = *state;
    /* instance (pathLen 0) -> sub-CA -> leaf: one CA too many under the instance. */
    EVP_PKEY *k = th_key("P-384");
    struct th_cert_opts o = th_ca_opts(BASE, 0);
    X509 *sub = th_cert("sub.test", k, p->cert[INSTANCE], p->key[INSTANCE], &o);
    struct th_cert_opts lo = th_leaf_opts(BASE);
    X509 *leaf = th_cert("leaf.sub.test", p->key[LEAF], sub, k, &lo);
    X509 *b[5];
    bundle_of(p, b);
    b[4] = sub;
    expect(p, leaf, b, 5, BASE_MS, VERIFY_R_CHAIN_PATH_LENGTH, NULL);
    X509_free(sub);
    X509_free(leaf);
    EVP_PKEY_free(k);
}

static void test_p384_only(void **state)
{
    struct pki *p = *state;
    X509 *b[4];
    EVP_PKEY *k256 = th_key("P-256");
    struct th_cert_opts o = th_ca_opts(BASE, 0);
    struct th_cert_opts lo = th_leaf_opts(BASE);

    /* A P-256 instance CA (signed with SHA-384 by the zonal CA) issuing the leaf. */
    X509 *inst = th_cert("i-0123.test", k256, p->cert[ZONAL], p->key[ZONAL], &o);
    X509 *leaf = th_cert("i-0123-enc0456.test", p->key[LEAF], inst, k256, &lo);
    bundle_of(p, b);
    b[INSTANCE] = inst;
    expect(p, leaf, b, 4, BASE_MS, VERIFY_R_CHAIN_KEY, "cabundle[3]");
    X509_free(inst);
    X509_free(leaf);

    /* A P-256 leaf. */
    leaf = th_cert("i-0123-enc0456.test", k256, p->cert[INSTANCE], p->key[INSTANCE], &lo);
    bundle_of(p, b);
    expect(p, leaf, b, 4, BASE_MS, VERIFY_R_CHAIN_KEY, "leaf");
    X509_free(leaf);

    /* A leaf signed with ecdsa-with-SHA256. */
    lo.md = EVP_sha256();
    leaf = th_cert("i-0123-enc0456.test", p->key[LEAF], p->cert[INSTANCE], p->key[INSTANCE], &lo);
    expect(p, leaf, b, 4, BASE_MS, VERIFY_R_CHAIN_SIGNATURE_ALGORITHM, "leaf");
    X509_free(leaf);
    EVP_PKEY_free(k256);
}

static void expect_leaf(struct pki *p, const struct th_cert_opts *o, enum verify_reason reason,
                        const char *detail)
{
    X509 *leaf =
        th_cert("i-0123-enc0456.test", p->key[LEAF], p->cert[INSTANCE], p->key[INSTANCE], o);
    X509 *b[4];
    bundle_of(p, b);
    expect(p, leaf, b, 4, BASE_MS, reason, detail);
    X509_free(leaf);
}

static void test_leaf_profile(void **state)
{
    struct pki *p = *state;
    struct th_cert_opts o;

    o = th_leaf_opts(BASE);
    o.ca = true;
    expect_leaf(p, &o, VERIFY_R_CHAIN_LEAF, NULL);
    o = th_leaf_opts(BASE);
    o.ku = "keyAgreement";
    expect_leaf(p, &o, VERIFY_R_CHAIN_LEAF, NULL);
    o = th_leaf_opts(BASE);
    o.ku = NULL;
    expect_leaf(p, &o, VERIFY_R_CHAIN_LEAF, NULL);
    o = th_leaf_opts(BASE);
    o.bc = false; /* real leaves carry BC cA=FALSE, but a leaf without BC is still a non-CA */
    expect_leaf(p, &o, VERIFY_R_OK, NULL);
    o = th_leaf_opts(BASE);
    o.extra_nid = NID_ext_key_usage;
    o.extra_nid_value = "critical,serverAuth";
    expect_leaf(p, &o, VERIFY_R_OK, NULL); /* handled extension; the cold path decides */

    /* A leaf signed by the wrong key, while the genuine intermediates are cached: the warm path
     * refuses, and the cold path names the fault. */
    X509 *b[4];
    bundle_of(p, b);
    expect(p, p->cert[LEAF], b, 4, BASE_MS, VERIFY_R_OK, NULL);
    o = th_leaf_opts(BASE);
    X509 *forged =
        th_cert("i-0123-enc0456.test", p->key[LEAF], p->cert[INSTANCE], p->key[ZONAL], &o);
    expect(p, forged, b, 4, BASE_MS, VERIFY_R_CHAIN_BAD_SIGNATURE, "leaf");
    X509_free(forged);
}

static void test_der_strictness(void **state)
{
    struct pki *p = *state;
    X509 *b[4];
    struct doc doc;
    struct verify_error err;
    uint8_t buf[2048];

    bundle_of(p, b);
    doc_set(&doc, p->cert[LEAF], b, 4);
    /* One byte after the leaf's DER. */
    memcpy(buf, doc.d.certificate.data, doc.d.certificate.len);
    buf[doc.d.certificate.len] = 0;
    doc.d.certificate = (struct cose_bytes){buf, doc.d.certificate.len + 1};
    assert_int_equal(run(p, &doc, BASE_MS, SKEW_MS, &err), VERIFY_REJECT);
    assert_int_equal(err.reason, VERIFY_R_CHAIN_BAD_DER);
    assert_string_equal(err.detail, "leaf");
    doc_free(&doc);

    /* A truncated intermediate. */
    doc_set(&doc, p->cert[LEAF], b, 4);
    doc.d.cabundle[2].len -= 1;
    assert_int_equal(run(p, &doc, BASE_MS, SKEW_MS, &err), VERIFY_REJECT);
    assert_int_equal(err.reason, VERIFY_R_CHAIN_BAD_DER);
    assert_string_equal(err.detail, "cabundle[2]");
    doc_free(&doc);
}

static void test_time_and_skew(void **state)
{
    struct pki *p = *state;
    X509 *b[4];
    const int64_t leaf_na = BASE_MS + 3 * 3600 * 1000LL;
    const int64_t leaf_nb = BASE_MS - 60000;

    bundle_of(p, b);
    expect(p, p->cert[LEAF], b, 4, BASE_MS + 4 * 3600 * 1000LL, VERIFY_R_CHAIN_EXPIRED, "leaf");
    expect(p, p->cert[LEAF], b, 4, leaf_na + SKEW_MS, VERIFY_R_OK, NULL);
    expect(p, p->cert[LEAF], b, 4, leaf_na + SKEW_MS + 999, VERIFY_R_OK, NULL); /* same second */
    expect(p, p->cert[LEAF], b, 4, leaf_na + SKEW_MS + 1000, VERIFY_R_CHAIN_EXPIRED, "leaf");
    expect(p, p->cert[LEAF], b, 4, leaf_nb - SKEW_MS, VERIFY_R_OK, NULL);
    expect(p, p->cert[LEAF], b, 4, leaf_nb - SKEW_MS - 1, VERIFY_R_CHAIN_NOT_YET_VALID, "leaf");
    /* The whole chain before the CAs were issued (a day before BASE). */
    expect(p, p->cert[LEAF], b, 4, BASE_MS - 2 * 86400 * 1000LL, VERIFY_R_CHAIN_NOT_YET_VALID,
           NULL);

    /* With no skew the leaf expires exactly after its notAfter second. */
    struct doc doc;
    struct verify_error err;
    doc_set(&doc, p->cert[LEAF], b, 4);
    assert_int_equal(run(p, &doc, leaf_na + 999, 0, &err), 0);
    assert_int_equal(run(p, &doc, leaf_na + 1000, 0, &err), VERIFY_REJECT);
    assert_int_equal(err.reason, VERIFY_R_CHAIN_EXPIRED);
    doc_free(&doc);
}

/* A cached intermediate that has expired at the check time is not used: the cold path runs and
 * reports it. */
static void test_cache_honours_validity(void **state)
{
    struct pki *p = *state;
    struct th_cert_opts o = th_ca_opts(BASE, 0);
    struct th_cert_opts lo = th_leaf_opts(BASE + 11 * 3600);
    X509 *b[4];
    X509 *leaf2;
    struct chain_stats before, after;

    o.not_after_s = 10 * 3600;
    X509 *inst = th_cert("i-0123.test", p->key[INSTANCE], p->cert[ZONAL], p->key[ZONAL], &o);
    X509 *leaf = th_cert("i-0123-enc0456.test", p->key[LEAF], inst, p->key[INSTANCE], &lo);
    lo = th_leaf_opts(BASE);
    leaf2 = th_cert("i-0123-enc0456.test", p->key[LEAF], inst, p->key[INSTANCE], &lo);
    bundle_of(p, b);
    b[INSTANCE] = inst;
    chain_clear_cache(p->chain);
    expect(p, leaf2, b, 4, BASE_MS, VERIFY_R_OK, NULL);
    chain_get_stats(p->chain, &before);
    expect(p, leaf, b, 4, (BASE + 11 * 3600) * 1000LL, VERIFY_R_CHAIN_EXPIRED, "cabundle[3]");
    chain_get_stats(p->chain, &after);
    assert_int_equal(after.warm, before.warm);
    X509_free(inst);
    X509_free(leaf);
    X509_free(leaf2);
}

static void test_cache_bounded(void **state)
{
    struct pki *p = *state;
    struct th_cert_opts o = th_ca_opts(BASE, 0);
    struct th_cert_opts lo = th_leaf_opts(BASE);
    struct chain_stats st;
    X509 *b[4];

    bundle_of(p, b);
    chain_clear_cache(p->chain);
    for (int i = 0; i < CHAIN_CACHE_MAX + 8; i++) {
        char cn[32];
        EVP_PKEY *k = th_key("P-384");
        snprintf(cn, sizeof(cn), "i-%04d.test", i);
        X509 *inst = th_cert(cn, k, p->cert[ZONAL], p->key[ZONAL], &o);
        X509 *leaf = th_cert("enc.test", p->key[LEAF], inst, k, &lo);
        b[INSTANCE] = inst;
        expect(p, leaf, b, 4, BASE_MS, VERIFY_R_OK, NULL);
        chain_get_stats(p->chain, &st);
        assert_true(st.cached <= CHAIN_CACHE_MAX);
        X509_free(inst);
        X509_free(leaf);
        EVP_PKEY_free(k);
    }
    assert_int_equal(st.cached, CHAIN_CACHE_MAX);
}

/* ---- The leaf verdict cache ------------------------------------------------------------- */

static struct chain_stats stats(struct pki *p)
{
    struct chain_stats st;
    chain_get_stats(p->chain, &st);
    return st;
}

/* The second verification of the same path is answered by the verdict of the first: no
 * signature checked, the same leaf and validity handed back. */
static void test_leaf_verdict_hit(void **state)
{
    struct pki *p = *state;
    X509 *b[4], *leaf = NULL;
    struct doc doc;
    struct verify_error err;
    int64_t nb = 0, na = 0;

    bundle_of(p, b);
    doc_set(&doc, p->cert[LEAF], b, 4);
    assert_int_equal(run(p, &doc, BASE_MS, SKEW_MS, &err), 0);
    assert_int_equal(stats(p).cold, 1);
    assert_int_equal(stats(p).leaf_hits, 0);
    assert_int_equal(stats(p).cached_leaves, 1);
    assert_int_equal(
        chain_verify(p->chain, &doc.d, BASE_MS + 3600 * 1000LL, SKEW_MS, &leaf, &nb, &na, &err), 0);
    assert_int_equal(X509_cmp(leaf, p->cert[LEAF]), 0);
    assert_int_equal(nb, BASE_MS - 60000);
    assert_int_equal(na, BASE_MS + 3 * 3600 * 1000LL);
    X509_free(leaf);
    assert_int_equal(stats(p).cold, 1);
    assert_int_equal(stats(p).leaf_hits, 1);
    assert_int_equal(stats(p).warm, 1);
    /* Emptying the caches drops the verdicts too. */
    chain_clear_cache(p->chain);
    assert_int_equal(stats(p).cached_leaves, 0);
    assert_int_equal(run(p, &doc, BASE_MS, SKEW_MS, &err), 0);
    assert_int_equal(stats(p).cold, 2);
    assert_int_equal(stats(p).leaf_hits, 1);
    doc_free(&doc);
}

/* The verdict stands for the exact intermediates: the same leaf under a re-issued instance CA
 * (same key and name, so the leaf's signature still verifies) that is no CA at all is judged
 * afresh and refused. */
static void test_leaf_verdict_misses_on_changed_intermediate(void **state)
{
    struct pki *p = *state;
    struct th_cert_opts o = th_ca_opts(BASE, 0);
    X509 *b[4];
    uint64_t hits;

    bundle_of(p, b);
    expect(p, p->cert[LEAF], b, 4, BASE_MS, VERIFY_R_OK, NULL);
    expect(p, p->cert[LEAF], b, 4, BASE_MS, VERIFY_R_OK, NULL);
    hits = stats(p).leaf_hits;
    assert_int_equal(hits, 1);
    o.ku = "critical,digitalSignature";
    b[INSTANCE] = th_cert("i-0123.test", p->key[INSTANCE], p->cert[ZONAL], p->key[ZONAL], &o);
    expect(p, p->cert[LEAF], b, 4, BASE_MS, VERIFY_R_CHAIN_NOT_CA, "cabundle[3]");
    assert_int_equal(stats(p).leaf_hits, hits);
    X509_free(b[INSTANCE]);
    /* One intermediate fewer (the zonal one left out) is another path too. */
    bundle_of(p, b);
    b[ZONAL] = p->cert[INSTANCE];
    expect(p, p->cert[LEAF], b, 3, BASE_MS, VERIFY_R_CHAIN_UNTRUSTED, NULL);
    assert_int_equal(stats(p).leaf_hits, hits);
}

/* A cached verdict holds up to the leaf's notAfter (inclusive, at whole seconds) and not a
 * second later, and never past the notAfter of any other certificate of the path. */
static void test_leaf_verdict_expires(void **state)
{
    struct pki *p = *state;
    struct th_cert_opts o = th_ca_opts(BASE, 0);
    struct th_cert_opts lo = th_leaf_opts(BASE);
    const int64_t leaf_na = BASE_MS + 3 * 3600 * 1000LL;
    X509 *b[4];
    struct doc doc;
    struct verify_error err;

    bundle_of(p, b);
    doc_set(&doc, p->cert[LEAF], b, 4);
    assert_int_equal(run(p, &doc, BASE_MS, 0, &err), 0);
    assert_int_equal(run(p, &doc, leaf_na + 999, 0, &err), 0);
    assert_int_equal(stats(p).leaf_hits, 1);
    assert_int_equal(run(p, &doc, leaf_na + 1000, 0, &err), VERIFY_REJECT);
    assert_int_equal(err.reason, VERIFY_R_CHAIN_EXPIRED);
    assert_string_equal(err.detail, "leaf");
    assert_int_equal(stats(p).leaf_hits, 1);
    /* With the skew allowance, the same boundary moves by the skew. */
    assert_int_equal(run(p, &doc, leaf_na + SKEW_MS + 999, SKEW_MS, &err), 0);
    assert_int_equal(stats(p).leaf_hits, 2);
    assert_int_equal(run(p, &doc, leaf_na + SKEW_MS + 1000, SKEW_MS, &err), VERIFY_REJECT);
    assert_int_equal(stats(p).leaf_hits, 2);
    doc_free(&doc);

    /* An instance CA that expires an hour before the leaf ends the verdict with it. */
    o.not_after_s = 3600;
    b[INSTANCE] = th_cert("i-0123.test", p->key[INSTANCE], p->cert[ZONAL], p->key[ZONAL], &o);
    X509 *leaf = th_cert("i-0123-enc0456.test", p->key[LEAF], b[INSTANCE], p->key[INSTANCE], &lo);
    doc_set(&doc, leaf, b, 4);
    assert_int_equal(run(p, &doc, BASE_MS, 0, &err), 0);
    assert_int_equal(run(p, &doc, BASE_MS + 3600 * 1000LL + 999, 0, &err), 0);
    assert_int_equal(stats(p).leaf_hits, 3);
    assert_int_equal(run(p, &doc, BASE_MS + 3601 * 1000LL, 0, &err), VERIFY_REJECT);
    assert_int_equal(err.reason, VERIFY_R_CHAIN_EXPIRED);
    assert_string_equal(err.detail, "cabundle[3]");
    assert_int_equal(stats(p).leaf_hits, 3);
    doc_free(&doc);
    X509_free(leaf);
    /* The same for a verdict reached over cached intermediates (the warm path). */
    leaf = th_cert("i-0123-enc0456.test", p->key[LEAF], b[INSTANCE], p->key[INSTANCE], &lo);
    doc_set(&doc, leaf, b, 4);
    assert_int_equal(run(p, &doc, BASE_MS, 0, &err), 0);
    assert_int_equal(stats(p).warm, 4); /* the cached intermediates and one leaf check */
    assert_int_equal(stats(p).leaf_hits, 3);
    assert_int_equal(run(p, &doc, BASE_MS + 3600 * 1000LL + 999, 0, &err), 0);
    assert_int_equal(stats(p).leaf_hits, 4);
    assert_int_equal(run(p, &doc, BASE_MS + 3601 * 1000LL, 0, &err), VERIFY_REJECT);
    assert_int_equal(err.reason, VERIFY_R_CHAIN_EXPIRED);
    assert_int_equal(stats(p).leaf_hits, 4);
    doc_free(&doc);
    X509_free(leaf);
    X509_free(b[INSTANCE]);
}

/* A verdict belongs to the root it was reached under: a root_ca change builds a new chain,
 * which starts with no verdict, and a chain pinned to another root refuses the document. */
static void test_leaf_verdict_dropped_with_the_root(void **state)
{
    struct pki *p = *state;
    struct th_cert_opts o = th_ca_opts(BASE, -1);
    char path[] = "/tmp/attestproxy-root2-XXXXXX";
    char msg[256];
    X509 *b[4];
    struct doc doc;
    struct verify_error err;
    struct chain *old = p->chain;
    EVP_PKEY *k = th_key("P-384");
    X509 *other = th_cert("other.nitro-enclaves", k, NULL, k, &o);
    int fd = mkstemp(path);

    assert_true(fd >= 0);
    close(fd);
    th_write_pem(other, path);
    bundle_of(p, b);
    doc_set(&doc, p->cert[LEAF], b, 4);
    assert_int_equal(run(p, &doc, BASE_MS, SKEW_MS, &err), 0);
    assert_int_equal(stats(p).cached_leaves, 1);

    p->chain = chain_new(path, msg, sizeof(msg));
    assert_non_null(p->chain);
    assert_int_equal(run(p, &doc, BASE_MS, SKEW_MS, &err), VERIFY_REJECT);
    assert_int_equal(err.reason, VERIFY_R_CHAIN_ROOT_MISMATCH);
    chain_free(p->chain);

    p->chain = chain_new(p->root_path, msg, sizeof(msg));
    assert_non_null(p->chain);
    assert_int_equal(stats(p).cached_leaves, 0);
    assert_int_equal(run(p, &doc, BASE_MS, SKEW_MS, &err), 0);
    assert_int_equal(stats(p).cold, 1);
    assert_int_equal(stats(p).leaf_hits, 0);
    chain_free(p->chain);
    p->chain = old;

    doc_free(&doc);
    unlink(path);
    X509_free(other);
    EVP_PKEY_free(k);
}

/* At most CHAIN_LEAF_CACHE_MAX verdicts; the oldest goes first. */
static void test_leaf_verdict_cache_bounded(void **state)
{
    struct pki *p = *state;
    struct th_cert_opts lo = th_leaf_opts(BASE);
    enum { N = CHAIN_LEAF_CACHE_MAX + 8 };
    X509 *leaves[N];
    X509 *b[4];
    uint64_t hits;

    bundle_of(p, b);
    for (int i = 0; i < N; i++) {
        leaves[i] = th_cert("enc.test", p->key[LEAF], p->cert[INSTANCE], p->key[INSTANCE], &lo);
        expect(p, leaves[i], b, 4, BASE_MS, VERIFY_R_OK, NULL);
        assert_int_equal(stats(p).cached_leaves,
                         i + 1 < CHAIN_LEAF_CACHE_MAX ? i + 1 : CHAIN_LEAF_CACHE_MAX);
    }
    hits = stats(p).leaf_hits;
    assert_int_equal(hits, 0);
    expect(p, leaves[N - 1], b, 4, BASE_MS, VERIFY_R_OK, NULL); /* among the newest: kept */
    assert_int_equal(stats(p).leaf_hits, hits + 1);
    expect(p, leaves[0], b, 4, BASE_MS, VERIFY_R_OK, NULL); /* the oldest: evicted */
    assert_int_equal(stats(p).leaf_hits, hits + 1);
    assert_int_equal(stats(p).cached_leaves, CHAIN_LEAF_CACHE_MAX);
    for (int i = 0; i < N; i++)
        X509_free(leaves[i]);
}

static void test_roots(void **state)
{
    struct pki *p = *state;
    char err[256];
    char path[] = "/tmp/attestproxy-root-XXXXXX";
    struct chain *c;
    size_t len;
    const uint8_t *der;
    int fd = mkstemp(path);
    FILE *f;

    assert_true(fd >= 0);
    close(fd);

    c = chain_new(NULL, err, sizeof(err));
    assert_non_null(c);
    der = chain_root_der(c, &len);
    assert_int_equal(len, aws_root_g1_der_len);
    assert_memory_equal(der, aws_root_g1_der, len);
    chain_free(c);

    assert_null(chain_new("/nonexistent", err, sizeof(err)));

    /* Two certificates in one root file. */
    f = fopen(path, "w");
    assert_non_null(f);
    PEM_write_X509(f, p->cert[ROOT]);
    PEM_write_X509(f, p->cert[REGIONAL]);
    fclose(f);
    assert_null(chain_new(path, err, sizeof(err)));
    assert_non_null(strstr(err, "more than one"));

    /* Not a certificate. */
    f = fopen(path, "w");
    fputs("hello\n", f);
    fclose(f);
    assert_null(chain_new(path, err, sizeof(err)));

    /* A P-256 root, a non-CA root, a root that is not self-signed. */
    EVP_PKEY *k = th_key("P-256");
    struct th_cert_opts o = th_ca_opts(BASE, -1);
    X509 *bad = th_cert("p256 root", k, NULL, k, &o);
    th_write_pem(bad, path);
    assert_null(chain_new(path, err, sizeof(err)));
    X509_free(bad);
    EVP_PKEY_free(k);
    o.ca = false;
    bad = th_cert("leaf root", p->key[ROOT], NULL, p->key[ROOT], &o);
    th_write_pem(bad, path);
    assert_null(chain_new(path, err, sizeof(err)));
    X509_free(bad);
    th_write_pem(p->cert[REGIONAL], path);
    assert_null(chain_new(path, err, sizeof(err)));
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_valid_chain_and_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bundle_shape, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ca_profile, setup, teardown),
        cmocka_unit_test_setup_teardown(test_path_length, setup, teardown),
        cmocka_unit_test_setup_teardown(test_p384_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leaf_profile, setup, teardown),
        cmocka_unit_test_setup_teardown(test_der_strictness, setup, teardown),
        cmocka_unit_test_setup_teardown(test_time_and_skew, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_honours_validity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_roots, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leaf_verdict_hit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leaf_verdict_misses_on_changed_intermediate, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_leaf_verdict_expires, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leaf_verdict_dropped_with_the_root, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leaf_verdict_cache_bounded, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
