/*
 * The verifier end to end on the AWS vectors (tests/vectors/nitro/README.md): every
 * real document verifies at its own timestamp (debug-mode ones only with allow_debug) and is
 * rejected four hours later; every invalid and derived document gets the README's verdict with
 * one exact reason.
 */
#include "verify_helpers.h"

#include <unistd.h>

#include <openssl/bio.h>

#include "base/log.h"
#include "verify/verifier.h"

#define MIN_MS  (60 * 1000LL)
#define HOUR_MS (60 * MIN_MS)

struct real_vector {
    const char *file;
    bool debug;
    int64_t timestamp_ms;
    unsigned n_pcrs;
};

static const struct real_vector reals[TH_REAL_COUNT] = {
    {"real-1.cbor", true, 1684358511808LL, 16},   {"real-2.cbor", false, 1684948068582LL, 16},
    {"real-3.cbor", false, 1665651482136LL, 16},  {"real-4.cbor", true, 1665582606081LL, 16},
    {"real-5.cbor", true, 1695049410860LL, 16},   {"real-6.cbor", false, 1674047239280LL, 16},
    {"real-7.cbor", true, 1674054632312LL, 16},   {"real-8.cbor", false, 1725719859545LL, 16},
    {"real-9.cbor", true, 1725719886508LL, 16},   {"real-10.cbor", false, 1734075478960LL, 16},
    {"real-11.cbor", false, 1745922759691LL, 17}, {"real-12.cbor", false, 1723012689640LL, 16},
    {"real-13.cbor", false, 1723012992231LL, 16}, {"real-14.cbor", false, 1736480402571LL, 16},
    {"real-15.cbor", true, 1679495307405LL, 16},  {"real-16.cbor", true, 1731627989450LL, 16},
    {"real-17.cbor", false, 1762795210812LL, 17}, {"real-18.cbor", false, 1767472867402LL, 16},
};

static const char real2_pcr0[] = "28de6557cce896cf8c580d8674fbc13c45c1a7636545ef022a01007336b8752b"
                                 "9a1cd9ce69df2ecacc7696a1203b45c2";
static const char real2_pcr1[] = "52b919754e1643f4027eeee8ec39cc4a2cb931723de0c93ce5cc8d407467dc43"
                                 "02e86490c01c0d755acfe10dbf657546";
static const char real2_pcr2[] = "3bc780f5f2adc596f55c5d8b85760f1e9e585c7016957673616c0611280c4b99"
                                 "c8877caff00d70567a96979abe59dc0a";

struct fixture {
    struct verifier *v;
    struct policy policy;
};

static int setup(void **state)
{
    char err[256];
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->v = verifier_new(NULL, err, sizeof(err));
    assert_non_null(f->v);
    f->policy.max_age_ms = 5 * MIN_MS;
    f->policy.skew_ms = MIN_MS;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    verifier_free(f->v);
    free(f);
    return 0;
}

/* Offline-style request: no nonce, no binding, PCRs not compared. */
static struct verify_request offline_request(const struct policy *p, int64_t now_ms)
{
    return (struct verify_request){
        .policy = p, .now_ms = now_ms, .binding = BINDING_NONE, .skip_measurements = true};
}

static void verify_file(struct fixture *f, const char *name, const struct verify_request *req,
                        struct verify_result *res)
{
    size_t len;
    uint8_t *buf = th_read_vector(name, &len);
    assert_int_equal(verifier_verify(f->v, req, buf, len, res), 0);
    free(buf);
}

static void assert_rejected(const struct verify_result *res, enum verify_reason reason,
                            const char *text)
{
    if (res->accepted || res->reason_code != reason)
        fail_msg("got \"%s\", want %s", res->reason, verify_reason_string(reason));
    assert_int_equal(res->stage, verify_reason_stage(reason));
    if (text != NULL)
        assert_string_equal(res->reason, text);
}

static void test_real_vectors_at_own_timestamp(void **state)
{
    struct fixture *f = *state;
    struct verify_result res;

    for (size_t i = 0; i < TH_REAL_COUNT; i++) {
        const struct real_vector *rv = &reals[i];
        struct verify_request req = offline_request(&f->policy, rv->timestamp_ms);

        f->policy.allow_debug = false;
        verify_file(f, rv->file, &req, &res);
        if (rv->debug) {
            assert_rejected(&res, VERIFY_R_POLICY_DEBUG,
                            "policy: debug-mode enclave (pcr0, pcr1, pcr2 all zero)");
            /* Policy failures keep the authenticated facts for the log line. */
            assert_true(res.summary.debug_mode);
            assert_int_equal(res.summary.timestamp_ms, rv->timestamp_ms);
        } else {
            if (!res.accepted)
                fail_msg("%s: %s", rv->file, res.reason);
            assert_string_equal(res.reason, "accepted");
            assert_int_equal(res.reason_code, VERIFY_R_OK);
        }

        f->policy.allow_debug = true;
        verify_file(f, rv->file, &req, &res);
        if (!res.accepted)
            fail_msg("%s with allow_debug: %s", rv->file, res.reason);
        assert_int_equal(res.stage, VERIFY_STAGE_NONE);
        assert_int_equal(res.summary.timestamp_ms, rv->timestamp_ms);
        assert_int_equal(res.summary.debug_mode, rv->debug);
        assert_int_equal(__builtin_popcount(res.summary.pcr_mask), rv->n_pcrs);
        assert_true(strncmp(res.summary.module_id, "i-", 2) == 0);
        /* The NSM leaf lives about three hours and was issued just before the document. */
        assert_true(res.summary.leaf_not_before_ms <= rv->timestamp_ms);
        assert_true(res.summary.leaf_not_after_ms > rv->timestamp_ms);
        assert_true(res.summary.leaf_not_after_ms - rv->timestamp_ms <= 3 * HOUR_MS + MIN_MS);
        assert_int_equal(res.summary.matched_set, -1);
    }
}

static void test_real_vectors_rejected_four_hours_later(void **state)
{
    struct fixture *f = *state;
    struct verify_result res;

    f->policy.allow_debug = true;
    f->policy.max_age_ms = 24 * HOUR_MS; /* so that the chain, not freshness, decides */
    for (size_t i = 0; i < TH_REAL_COUNT; i++) {
        struct verify_request req =
            offline_request(&f->policy, reals[i].timestamp_ms + 4 * HOUR_MS);
        verify_file(f, reals[i].file, &req, &res);
        assert_rejected(&res, VERIFY_R_CHAIN_EXPIRED, NULL);
        assert_true(strncmp(res.reason, "chain: certificate expired", 26) == 0);
        /* Nothing unauthenticated leaks into the summary of a chain failure. */
        assert_int_equal(res.summary.module_id[0], '\0');
        assert_int_equal(res.summary.pcr_mask, 0);
    }
    /* The default max_age alone also rejects them, later in the order. */
    f->policy.max_age_ms = 5 * MIN_MS;
    struct verify_request req = offline_request(&f->policy, reals[1].timestamp_ms + 2 * HOUR_MS);
    verify_file(f, "real-2.cbor", &req, &res);
    assert_rejected(&res, VERIFY_R_POLICY_STALE, "policy: document is older than max_age");
}

/* SVR2 TestNotBefore/TestNotAfter, fastcrypto's ±10 min / ±3 h, BlindAI's "expired". */
static void test_upstream_time_cases(void **state)
{
    struct fixture *f = *state;
    struct verify_result res;
    struct verify_request req;

    f->policy.allow_debug = true;
    f->policy.max_age_ms = 24 * HOUR_MS;
    f->policy.skew_ms = 0; /* SVR2 checks the chain alone at these instants */
    req = offline_request(&f->policy, 1684362463000LL - 86400000LL);
    verify_file(f, "real-1.cbor", &req, &res);
    assert_rejected(&res, VERIFY_R_CHAIN_NOT_YET_VALID, NULL);
    req.now_ms = 1684362463000LL + 86400000LL;
    verify_file(f, "real-1.cbor", &req, &res);
    assert_rejected(&res, VERIFY_R_CHAIN_EXPIRED, NULL);
    req.now_ms = 1684362463000LL;
    verify_file(f, "real-1.cbor", &req, &res);
    assert_true(res.accepted);

    /* fastcrypto: valid at 1731627987382 +- 10 min (the skew lets the document timestamp be up
     * to 10 min ahead of the check), invalid at +- 3 h (outside the leaf). */
    f->policy.skew_ms = 11 * MIN_MS;
    req = offline_request(&f->policy, 1731627987382LL - 10 * MIN_MS);
    verify_file(f, "real-16.cbor", &req, &res);
    assert_true(res.accepted);
    req.now_ms = 1731627987382LL + 10 * MIN_MS;
    verify_file(f, "real-16.cbor", &req, &res);
    assert_true(res.accepted);
    f->policy.skew_ms = MIN_MS;
    req = offline_request(&f->policy, 1731627987382LL + 3 * HOUR_MS);
    verify_file(f, "real-16.cbor", &req, &res);
    assert_rejected(&res, VERIFY_R_CHAIN_EXPIRED, NULL);
    req = offline_request(&f->policy, 1731627987382LL - 3 * HOUR_MS);
    verify_file(f, "real-16.cbor", &req, &res);
    assert_rejected(&res, VERIFY_R_CHAIN_NOT_YET_VALID, NULL);

    req = offline_request(&f->policy, 1679509707405LL); /* 2023-03-22 18:28:27.405 */
    verify_file(f, "real-15.cbor", &req, &res);
    assert_rejected(&res, VERIFY_R_CHAIN_EXPIRED, "chain: certificate expired (leaf)");
}

struct expected {
    const char *file;
    int64_t now_ms;
    bool accept;
    enum verify_reason reason;
    const char *text;
};

static void test_invalid_and_derived_vectors(void **state)
{
    struct fixture *f = *state;
    const int64_t r2 = 1684948068582LL;
    const struct expected cases[] = {
        {"invalid-1-pcr-bitflip.cbor", 1684358511808LL, false, VERIFY_R_SIGNATURE_INVALID,
         "signature: ES384 signature does not verify with the leaf key"},
        {"invalid-2-selfsigned-chain.cbor", r2, false, VERIFY_R_COSE_UNPROTECTED,
         "cose: unprotected header is not an empty map"},
        {"invalid-3-mock-chain.cbor", r2, false, VERIFY_R_CHAIN_ROOT_MISMATCH,
         "chain: cabundle[0] is not the pinned root"},
        {"invalid-4-mock-chain-pcr16.cbor", r2, false, VERIFY_R_CHAIN_ROOT_MISMATCH,
         "chain: cabundle[0] is not the pinned root"},
        {"invalid-5-truncated-key.cbor", 1767472867402LL, false, VERIFY_R_COSE_SIGNATURE_FORMAT,
         "cose: signature is not a 96-byte raw r||s byte string"},
        {"derived-valid-tagged18.cbor", r2, true, VERIFY_R_OK, "accepted"},
        {"derived-valid-malleable-twin.cbor", r2, true, VERIFY_R_OK, "accepted"},
        {"derived-invalid-tag-other.cbor", r2, false, VERIFY_R_COSE_TAG,
         "cose: tag other than a single tag 18"},
        {"derived-invalid-5-elements.cbor", r2, false, VERIFY_R_COSE_ARRAY_LENGTH,
         "cose: COSE_Sign1 array is not 4 elements"},
        {"derived-invalid-trailing-byte.cbor", r2, false, VERIFY_R_COSE_TRAILING,
         "cose: trailing bytes after COSE_Sign1"},
        {"derived-invalid-unprotected-nonempty.cbor", r2, false, VERIFY_R_COSE_UNPROTECTED,
         "cose: unprotected header is not an empty map"},
        {"derived-invalid-sig-der.cbor", r2, false, VERIFY_R_COSE_SIGNATURE_FORMAT,
         "cose: signature is not a 96-byte raw r||s byte string"},
        {"derived-invalid-alg-es256.cbor", r2, false, VERIFY_R_COSE_PROTECTED,
         "cose: protected header is not {1: -35} (ES384)"},
    };
    struct verify_result res;

    f->policy.allow_debug = true; /* invalid-1 derives from a debug-mode document */
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct verify_request req = offline_request(&f->policy, cases[i].now_ms);
        verify_file(f, cases[i].file, &req, &res);
        if (res.accepted != cases[i].accept || strcmp(res.reason, cases[i].text) != 0)
            fail_msg("%s: got %s, want %s", cases[i].file, res.reason, cases[i].text);
        assert_int_equal(res.reason_code, cases[i].reason);
    }
}

static X509 *load_der_cert(const char *name)
{
    size_t len;
    uint8_t *der = th_read_vector(name, &len);
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    assert_non_null(x);
    free(der);
    return x;
}

static void test_spki_der_bindings(void **state)
{
    struct fixture *f = *state;
    const char *docs[] = {"real-5.cbor", "real-6.cbor", "real-7.cbor"};
    const char *certs[] = {"bind-real-5-tls-cert.der", "bind-real-6-tls-cert.der",
                           "bind-real-7-tls-cert.der"};
    const int64_t ts[] = {1695049410860LL, 1674047239280LL, 1674054632312LL};
    struct verify_result res;

    f->policy.allow_debug = true; /* real-5 and real-7 are debug-mode documents */
    for (size_t i = 0; i < 3; i++) {
        X509 *own = load_der_cert(certs[i]);
        X509 *other = load_der_cert(certs[(i + 1) % 3]);
        struct verify_request req = offline_request(&f->policy, ts[i]);
        req.binding = BINDING_SPKI_DER;
        req.peer_cert = own;
        verify_file(f, docs[i], &req, &res);
        if (!res.accepted)
            fail_msg("%s: %s", docs[i], res.reason);

        req.peer_cert = other;
        verify_file(f, docs[i], &req, &res);
        assert_rejected(&res, VERIFY_R_BINDING_SPKI_DER, "binding: user_data is not the peer key");
        /* Binding failures keep the verified facts for the log. */
        assert_int_equal(res.summary.timestamp_ms, ts[i]);

        req.peer_cert = own;
        req.binding = BINDING_SPKI_SHA256;
        verify_file(f, docs[i], &req, &res);
        assert_rejected(&res, VERIFY_R_BINDING_SPKI_SHA256,
                        "binding: user_data does not hash the peer key");

        req.binding = BINDING_PUBLIC_KEY_SPKI;
        verify_file(f, docs[i], &req, &res);
        assert_rejected(&res, VERIFY_R_BINDING_PUBLIC_KEY_ABSENT, "binding: public_key is absent");

        req.binding = BINDING_SPKI_DER;
        req.peer_cert = NULL;
        verify_file(f, docs[i], &req, &res);
        assert_rejected(&res, VERIFY_R_BINDING_NO_PEER, NULL);
        X509_free(own);
        X509_free(other);
    }
}

static char *base64_of(const uint8_t *p, size_t n, bool wrap)
{
    size_t cap = 4 * ((n + 2) / 3) + 1;
    char *flat = malloc(cap);
    char *out = malloc(cap + cap / 76 + 2);
    size_t o = 0;
    assert_non_null(flat);
    assert_non_null(out);
    int len = EVP_EncodeBlock((unsigned char *)flat, p, (int)n);
    for (int i = 0; i < len; i++) {
        out[o++] = flat[i];
        if (wrap && i % 76 == 75)
            out[o++] = '\n';
    }
    out[o] = '\0';
    free(flat);
    return out;
}

static void test_envelopes(void **state)
{
    struct fixture *f = *state;
    const char *keys[] = {"attestation_doc", "attestation_document", "document", "body"};
    size_t len;
    uint8_t *doc = th_read_vector("real-2.cbor", &len);
    struct verify_request req = offline_request(&f->policy, 1684948068582LL);
    struct verify_result res;
    char *b64 = base64_of(doc, len, false);
    char *wrapped = base64_of(doc, len, true);
    char json[16384];

    assert_int_equal(verifier_verify(f->v, &req, (uint8_t *)b64, strlen(b64), &res), 0);
    assert_true(res.accepted);
    assert_int_equal(verifier_verify(f->v, &req, (uint8_t *)wrapped, strlen(wrapped), &res), 0);
    assert_true(res.accepted);
    for (size_t i = 0; i < 4; i++) {
        int n = snprintf(json, sizeof(json), " {\"other\": 1, \"%s\": \"%s\"}\n", keys[i], b64);
        assert_true(n > 0 && (size_t)n < sizeof(json));
        assert_int_equal(verifier_verify(f->v, &req, (uint8_t *)json, (size_t)n, &res), 0);
        if (!res.accepted)
            fail_msg("%s: %s", keys[i], res.reason);
    }
    int n = snprintf(json, sizeof(json), "{\"document\": \"%s\", \"body\": \"%s\"}", b64, b64);
    assert_true(n > 0 && (size_t)n < sizeof(json));
    assert_int_equal(verifier_verify(f->v, &req, (uint8_t *)json, (size_t)n, &res), 0);
    assert_rejected(&res, VERIFY_R_ENVELOPE_JSON_AMBIGUOUS, NULL);

    assert_int_equal(verifier_verify(f->v, &req, (const uint8_t *)"", 0, &res), 0);
    assert_rejected(&res, VERIFY_R_ENVELOPE_EMPTY, "envelope: evidence is empty");
    free(b64);
    free(wrapped);
    free(doc);
}

static void test_nonce(void **state)
{
    struct fixture *f = *state;
    size_t len;
    uint8_t *buf = th_read_vector("real-3.cbor", &len);
    struct nitro_document doc;
    struct verify_error err;
    uint8_t nonce[256];
    struct verify_request req = offline_request(&f->policy, 1665651482136LL);
    struct verify_result res;

    assert_int_equal(cose_decode_document(buf, len, &doc, &err), 0);
    assert_true(doc.has_nonce);
    assert_int_equal(doc.nonce.len, sizeof(nonce));
    memcpy(nonce, doc.nonce.data, sizeof(nonce));

    req.nonce = nonce;
    req.nonce_len = sizeof(nonce);
    assert_int_equal(verifier_verify(f->v, &req, buf, len, &res), 0);
    assert_true(res.accepted);

    nonce[255] ^= 1;
    assert_int_equal(verifier_verify(f->v, &req, buf, len, &res), 0);
    assert_rejected(&res, VERIFY_R_POLICY_NONCE_MISMATCH, "policy: nonce does not match");
    nonce[255] ^= 1;
    req.nonce_len = 32; /* a prefix is not the nonce */
    assert_int_equal(verifier_verify(f->v, &req, buf, len, &res), 0);
    assert_rejected(&res, VERIFY_R_POLICY_NONCE_MISMATCH, NULL);
    free(buf);

    /* real-2 carries nonce = null: a nonce we sent cannot be absent. */
    req = offline_request(&f->policy, 1684948068582LL);
    req.nonce = nonce;
    req.nonce_len = 32;
    verify_file(f, "real-2.cbor", &req, &res);
    assert_rejected(&res, VERIFY_R_POLICY_NONCE_MISSING, "policy: nonce missing from document");
}

static void set_pcr(struct measurement_set *s, unsigned i, const char *hex)
{
    assert_int_equal(th_unhex(hex, s->pcr[i], NITRO_PCR_LEN), NITRO_PCR_LEN);
    s->mask |= 1u << i;
}

static void test_measurement_sets(void **state)
{
    struct fixture *f = *state;
    struct verify_request req = offline_request(&f->policy, 1684948068582LL);
    struct verify_result res;

    req.skip_measurements = false;
    f->policy.n_sets = 0;
    verify_file(f, "real-2.cbor", &req, &res);
    assert_rejected(&res, VERIFY_R_POLICY_NO_MEASUREMENTS,
                    "policy: no measurement sets configured");

    /* Set 0 names another image; set 1 is real-2's. Any of them suffices. */
    memset(f->policy.sets, 0, sizeof(f->policy.sets));
    set_pcr(&f->policy.sets[0], 0, real2_pcr1);
    set_pcr(&f->policy.sets[1], 0, real2_pcr0);
    set_pcr(&f->policy.sets[1], 1, real2_pcr1);
    set_pcr(&f->policy.sets[1], 2, real2_pcr2);
    f->policy.n_sets = 2;
    verify_file(f, "real-2.cbor", &req, &res);
    assert_true(res.accepted);
    assert_int_equal(res.summary.matched_set, 1);
    uint8_t want[NITRO_PCR_LEN];
    th_unhex(real2_pcr0, want, sizeof(want));
    assert_memory_equal(res.summary.pcrs[0], want, NITRO_PCR_LEN);

    f->policy.n_sets = 1;
    verify_file(f, "real-2.cbor", &req, &res);
    assert_rejected(&res, VERIFY_R_POLICY_PCR_MISMATCH,
                    "policy: pcrs match no measurement set (pcr0)");

    /* A set naming PCR16, which real-2 does not carry, cannot match. */
    memset(f->policy.sets, 0, sizeof(f->policy.sets));
    set_pcr(&f->policy.sets[0], 0, real2_pcr0);
    set_pcr(&f->policy.sets[0], 16, real2_pcr0);
    verify_file(f, "real-2.cbor", &req, &res);
    assert_rejected(&res, VERIFY_R_POLICY_PCR_MISMATCH,
                    "policy: pcrs match no measurement set (pcr16)");

    /* A debug-mode document is refused even by a set of zeros, unless allow_debug. */
    memset(f->policy.sets, 0, sizeof(f->policy.sets));
    f->policy.sets[0].mask = 0x7;
    req.now_ms = 1684358511808LL;
    verify_file(f, "real-1.cbor", &req, &res);
    assert_rejected(&res, VERIFY_R_POLICY_DEBUG, NULL);
    f->policy.allow_debug = true;
    verify_file(f, "real-1.cbor", &req, &res);
    assert_true(res.accepted);
    assert_int_equal(res.summary.matched_set, 0);
}

static void test_freshness_and_skew(void **state)
{
    struct fixture *f = *state;
    const int64_t ts = 1684948068582LL;
    struct verify_request req = offline_request(&f->policy, ts + 5 * MIN_MS);
    struct verify_result res;

    verify_file(f, "real-2.cbor", &req, &res); /* exactly max_age old */
    assert_true(res.accepted);
    req.now_ms = ts + 5 * MIN_MS + 1;
    verify_file(f, "real-2.cbor", &req, &res);
    assert_rejected(&res, VERIFY_R_POLICY_STALE, NULL);
    req.now_ms = ts - MIN_MS; /* exactly skew ahead */
    verify_file(f, "real-2.cbor", &req, &res);
    assert_true(res.accepted);
    req.now_ms = ts - MIN_MS - 1;
    verify_file(f, "real-2.cbor", &req, &res);
    assert_rejected(&res, VERIFY_R_POLICY_FUTURE, "policy: document timestamp is after now + skew");

    /* The leaf expires at 20:07:48; 30 s later it is accepted only thanks to the skew. */
    f->policy.max_age_ms = 4 * HOUR_MS;
    req.now_ms = 1684958868000LL + 30000;
    verify_file(f, "real-2.cbor", &req, &res);
    assert_true(res.accepted);
    f->policy.skew_ms = 0;
    verify_file(f, "real-2.cbor", &req, &res);
    assert_rejected(&res, VERIFY_R_CHAIN_EXPIRED, "chain: certificate expired (leaf)");
}

static void test_intermediate_cache(void **state)
{
    struct fixture *f = *state;
    struct verifier_stats st;
    struct verify_result res;
    struct verify_request req = offline_request(&f->policy, 1723012689640LL);

    verifier_clear_cache(f->v);
    verifier_get_stats(f->v, &st);
    assert_int_equal(st.cached_certs, 0);
    assert_int_equal(st.cached_leaves, 0);
    uint64_t cold = st.chain_cold, warm = st.chain_warm, leaf = st.chain_leaf_hits;

    verify_file(f, "real-12.cbor", &req, &res);
    assert_true(res.accepted);
    verifier_get_stats(f->v, &st);
    assert_int_equal(st.chain_cold, cold + 1);
    assert_int_equal(st.cached_certs, 3);
    assert_int_equal(st.cached_leaves, 1); /* a real NSM leaf qualifies for the verdict cache */

    /* real-13: same intermediates and leaf, five minutes later: served by the leaf's cached
     * verdict, only its COSE signature checked. */
    req.now_ms = 1723012992231LL;
    verify_file(f, "real-13.cbor", &req, &res);
    assert_true(res.accepted);
    verifier_get_stats(f->v, &st);
    assert_int_equal(st.chain_warm, warm + 1);
    assert_int_equal(st.chain_leaf_hits, leaf + 1);
    assert_int_equal(st.chain_cold, cold + 1);

    /* Four hours later neither cache can accept; the cold path names the reason. */
    req.now_ms += 4 * HOUR_MS;
    verify_file(f, "real-13.cbor", &req, &res);
    assert_rejected(&res, VERIFY_R_CHAIN_EXPIRED, NULL);
    verifier_get_stats(f->v, &st);
    assert_int_equal(st.chain_leaf_hits, leaf + 1);

    /* Every vector through one verifier: the cache stays bounded. */
    for (size_t i = 0; i < TH_REAL_COUNT; i++) {
        req.now_ms = reals[i].timestamp_ms;
        verify_file(f, reals[i].file, &req, &res);
    }
    verifier_get_stats(f->v, &st);
    assert_true(st.cached_certs <= 32);
    assert_true(st.cached_leaves <= 64);
    assert_true(st.accepted > 0 && st.rejected > 0);
}

static void test_roots(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct verify_result res;
    struct verify_request req = offline_request(&f->policy, 1684948068582LL);
    struct verifier *v = verifier_new(th_vector_path("aws-nitro-root-g1.pem"), err, sizeof(err));
    size_t len;
    uint8_t *buf = th_read_vector("real-2.cbor", &len);

    assert_non_null(v);
    assert_int_equal(verifier_verify(v, &req, buf, len, &res), 0);
    assert_true(res.accepted);
    verifier_free(v);

    err[0] = '\0';
    assert_null(verifier_new("/nonexistent/root.pem", err, sizeof(err)));
    assert_true(strstr(err, "cannot open") != NULL);

    /* Another root: the AWS documents no longer chain to anything trusted. */
    EVP_PKEY *k = th_key("P-384");
    struct th_cert_opts o = th_ca_opts(time(NULL), -1);
    X509 *root = th_cert("test root", k, NULL, k, &o);
    char path[] = "/tmp/attestproxy-test-root-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    th_write_pem(root, path);
    v = verifier_new(path, err, sizeof(err));
    assert_non_null(v);
    assert_int_equal(verifier_verify(v, &req, buf, len, &res), 0);
    assert_rejected(&res, VERIFY_R_CHAIN_ROOT_MISMATCH, NULL);
    verifier_free(v);
    unlink(path);
    X509_free(root);
    EVP_PKEY_free(k);
    free(buf);
}

static void test_misuse_is_rejection(void **state)
{
    struct fixture *f = *state;
    struct verify_request req = offline_request(NULL, 0);
    struct verify_result res;
    uint8_t pin[32];

    assert_true(verifier_verify(f->v, &req, (const uint8_t *)"x", 1, &res) < 0);
    assert_false(res.accepted);
    assert_int_equal(res.stage, VERIFY_STAGE_INTERNAL);
    assert_string_equal(res.reason, "internal: verifier error");
    assert_true(verifier_spki_pin(NULL, pin) < 0);
}

static void test_reason_table(void **state)
{
    (void)state;
    for (int r = 0; r < VERIFY_R_COUNT_; r++) {
        const char *msg = verify_reason_string((enum verify_reason)r);
        const char *stage = verify_stage_name(verify_reason_stage((enum verify_reason)r));
        size_t n = strlen(stage);
        if (r != VERIFY_R_OK && (strncmp(msg, stage, n) != 0 || msg[n] != ':' || msg[n + 1] != ' '))
            fail_msg("reason %d \"%s\" does not start with \"%s: \"", r, msg, stage);
        assert_true(strlen(msg) + VERIFY_DETAIL_MAX + 3 < VERIFY_REASON_MAX);
        for (int s = 0; s < r; s++) {
            assert_string_not_equal(verify_reason_name((enum verify_reason)r),
                                    verify_reason_name((enum verify_reason)s));
            assert_string_not_equal(msg, verify_reason_string((enum verify_reason)s));
        }
    }
    assert_string_equal(verify_reason_string((enum verify_reason)9999), "internal: verifier error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_real_vectors_at_own_timestamp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_real_vectors_rejected_four_hours_later, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_upstream_time_cases, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_and_derived_vectors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spki_der_bindings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_envelopes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nonce, setup, teardown),
        cmocka_unit_test_setup_teardown(test_measurement_sets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_freshness_and_skew, setup, teardown),
        cmocka_unit_test_setup_teardown(test_intermediate_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_roots, setup, teardown),
        cmocka_unit_test_setup_teardown(test_misuse_is_rejection, setup, teardown),
        cmocka_unit_test(test_reason_table),
    };
    /* allow_debug acceptances log a warning each; the tests check verdicts, not log lines. */
    log_configure(LOG_LEVEL_ERROR, LOG_FORMAT_LOGFMT, NULL);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
