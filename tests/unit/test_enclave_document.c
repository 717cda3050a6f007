/* The test backend's documents (daemon/enclave/nsm_test.c) verify with the daemon's own
 * verifier against the test chain's root, with the simulator's PCRs, the requested nonce and
 * user_data = SHA-256(SPKI) of the companion's TLS key; and each wrong expectation is refused.
 * The chain is made by tests/sim/chain.py, the one the Python simulator uses. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "base/clock.h"
#include "enclave/identity.h"
#include "enclave/nsm.h"
#include "verify/verifier.h"

static char chain_dir[256];

static int make_chain(void **state)
{
    const char *root = getenv("SOURCE_ROOT");
    char cmd[1024];
    (void)state;
    snprintf(chain_dir, sizeof(chain_dir), "/tmp/test_enclave_document.XXXXXX");
    if (mkdtemp(chain_dir) == NULL)
        return -1;
    snprintf(cmd, sizeof(cmd),
             "/usr/bin/python3 -c 'import sys; sys.path.insert(0, \"%s/tests/sim\"); "
             "import chain; chain.Chain.create().save(\"%s\")'",
             root != NULL ? root : ".", chain_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int remove_chain(void **state)
{
    char cmd[512];
    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", chain_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* The simulator's PCRs: SHA-384 of "attestproxy-sim-pcrN" for 0, 1, 2 (4 is not in the set). */
static void sim_policy(struct policy *p)
{
    memset(p, 0, sizeof(*p));
    p->n_sets = 1;
    for (unsigned i = 0; i <= 2; i++) {
        char seed[32];
        int n = snprintf(seed, sizeof(seed), "attestproxy-sim-pcr%u", i);
        EVP_Digest(seed, (size_t)n, p->sets[0].pcr[i], NULL, EVP_sha384(), NULL);
        p->sets[0].mask |= 1u << i;
    }
    p->max_age_ms = 300000;
    p->skew_ms = 60000;
}

struct fixture {
    struct nsm_test *nsm;
    struct verifier *v;
    struct identity id;
    struct policy policy;
    uint8_t nonce[32];
    uint8_t doc[NSM_DOCUMENT_MAX];
    int len;
};

static void setup_fixture(struct fixture *f)
{
    char err[512], root[300];
    memset(f, 0, sizeof(*f));
    f->nsm = nsm_test_new(chain_dir, err, sizeof(err));
    if (f->nsm == NULL)
        fail_msg("%s", err);
    snprintf(root, sizeof(root), "%s/root.pem", chain_dir);
    f->v = verifier_new(root, err, sizeof(err));
    if (f->v == NULL)
        fail_msg("%s", err);
    assert_int_equal(identity_create(&f->id, ENCLAVE_CURVE_P384, err, sizeof(err)), 0);
    sim_policy(&f->policy);
    for (int i = 0; i < 32; i++)
        f->nonce[i] = (uint8_t)(0xa0 + i);
}

static void free_fixture(struct fixture *f)
{
    identity_free(&f->id);
    verifier_free(f->v);
    nsm_test_free(f->nsm);
}

static void document(struct fixture *f, int64_t now)
{
    char err[256];
    f->len = nsm_test_document(f->nsm, now, f->id.user_data, 32, f->nonce, 32, f->doc,
                               sizeof(f->doc), err, sizeof(err));
    if (f->len < 0)
        fail_msg("%s", err);
}

static void verify(struct fixture *f, int64_t now, X509 *peer, const uint8_t *nonce,
                   struct verify_result *res)
{
    struct verify_request req = {
        .policy = &f->policy,
        .now_ms = now,
        .nonce = nonce,
        .nonce_len = 32,
        .binding = BINDING_SPKI_SHA256,
        .peer_cert = peer,
    };
    assert_int_equal(verifier_verify(f->v, &req, f->doc, (size_t)f->len, res), 0);
}

static void test_document_verifies(void **state)
{
    static const uint8_t prefix[] = {0x84, 0x44, 0xa1, 0x01, 0x38, 0x22, 0xa0, 0x59};
    struct fixture f;
    struct verify_result res;
    int64_t now = clock_wall_ms();
    (void)state;
    setup_fixture(&f);
    document(&f, now);
    /* Untagged, {1: -35}, {}, a payload with a two-byte length: the NSM's first bytes. */
    assert_memory_equal(f.doc, prefix, sizeof(prefix));
    verify(&f, now, f.id.cert, f.nonce, &res);
    if (!res.accepted)
        fail_msg("refused: %s", res.reason);
    assert_int_equal(res.summary.timestamp_ms, now);
    assert_int_equal(res.summary.pcr_mask, 0xffff);
    assert_false(res.summary.debug_mode);
    free_fixture(&f);
}

static void test_wrong_expectations_are_refused(void **state)
{
    struct fixture f;
    struct verify_result res;
    struct identity other;
    uint8_t nonce[32];
    char err[256];
    int64_t now = clock_wall_ms();
    (void)state;
    setup_fixture(&f);
    document(&f, now);

    /* Another nonce than the one asked for. */
    memcpy(nonce, f.nonce, 32);
    nonce[31] ^= 1;
    verify(&f, now, f.id.cert, nonce, &res);
    assert_false(res.accepted);
    assert_int_equal(res.stage, VERIFY_STAGE_POLICY);

    /* Another TLS key than the one the document names. */
    assert_int_equal(identity_create(&other, ENCLAVE_CURVE_P256, err, sizeof(err)), 0);
    verify(&f, now, other.cert, f.nonce, &res);
    assert_false(res.accepted);
    assert_int_equal(res.stage, VERIFY_STAGE_BINDING);
    identity_free(&other);

    /* Another PCR0 than the policy's. */
    f.policy.sets[0].pcr[0][0] ^= 1;
    verify(&f, now, f.id.cert, f.nonce, &res);
    assert_false(res.accepted);
    assert_int_equal(res.stage, VERIFY_STAGE_POLICY);
    f.policy.sets[0].pcr[0][0] ^= 1;

    /* test_pcr: a PCR set in the backend is the one its documents carry. */
    {
        uint8_t pcr[48];
        memset(pcr, 0x5a, sizeof(pcr));
        assert_int_equal(nsm_test_set_pcr(f.nsm, 1, pcr), 0);
        assert_int_equal(nsm_test_set_pcr(f.nsm, 16, pcr), -EINVAL);
        document(&f, now);
        verify(&f, now, f.id.cert, f.nonce, &res);
        assert_false(res.accepted);
        memcpy(f.policy.sets[0].pcr[1], pcr, sizeof(pcr));
        verify(&f, now, f.id.cert, f.nonce, &res);
        if (!res.accepted)
            fail_msg("refused: %s", res.reason);
    }

    /* A document ten minutes old (max_age 5 min). */
    document(&f, now - 600000);
    verify(&f, now, f.id.cert, f.nonce, &res);
    assert_false(res.accepted);
    free_fixture(&f);
}

static void test_each_document_is_fresh(void **state)
{
    struct fixture f;
    uint8_t first[NSM_DOCUMENT_MAX];
    int first_len;
    int64_t now = clock_wall_ms();
    (void)state;
    setup_fixture(&f);
    document(&f, now);
    memcpy(first, f.doc, (size_t)f.len);
    first_len = f.len;
    document(&f, now);
    /* Same inputs, new signature (ECDSA is randomised): nothing is replayed from a cache. */
    assert_int_equal(f.len > 96 ? 1 : 0, 1);
    assert_true(first_len != f.len || memcmp(first, f.doc, (size_t)f.len) != 0);
    free_fixture(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_document_verifies),
        cmocka_unit_test(test_wrong_expectations_are_refused),
        cmocka_unit_test(test_each_document_is_fresh),
    };
    return cmocka_run_group_tests(tests, make_chain, remove_chain);
}
