/*
 * The policy stage (daemon/verify/policy.c) on hand-built documents: digest, freshness window
 * edges, nonce, PCR lengths, debug mode, measurement sets (any-of) and their reasons.
 */
#include "verify_helpers.h"

#include "verify/policy.h"

#define NOW 1700000000000LL

static uint8_t pcr_values[NITRO_PCR_COUNT][NITRO_PCR_LEN];
static uint8_t nonce_bytes[32];

/* A document with PCR0..15 = (i+1) repeated, digest SHA384, timestamp NOW, nonce 0xaa... */
static struct nitro_document make_doc(void)
{
    struct nitro_document d;
    memset(&d, 0, sizeof(d));
    d.digest = (struct cose_bytes){(const uint8_t *)"SHA384", 6};
    d.timestamp_ms = NOW;
    for (unsigned i = 0; i < 16; i++) {
        memset(pcr_values[i], (int)(i + 1), NITRO_PCR_LEN);
        d.pcrs[i] = (struct cose_bytes){pcr_values[i], NITRO_PCR_LEN};
        d.pcr_mask |= 1u << i;
    }
    memset(nonce_bytes, 0xaa, sizeof(nonce_bytes));
    d.has_nonce = true;
    d.nonce = (struct cose_bytes){nonce_bytes, sizeof(nonce_bytes)};
    return d;
}

static struct policy make_policy(void)
{
    struct policy p;
    memset(&p, 0, sizeof(p));
    p.max_age_ms = 300000;
    p.skew_ms = 60000;
    /* One set: PCR0 = 01.., PCR8 = 09.. */
    p.sets[0].mask = (1u << 0) | (1u << 8);
    memset(p.sets[0].pcr[0], 1, NITRO_PCR_LEN);
    memset(p.sets[0].pcr[8], 9, NITRO_PCR_LEN);
    p.n_sets = 1;
    return p;
}

static int check(const struct policy *p, const struct nitro_document *d, int64_t now,
                 const uint8_t *nonce, size_t nonce_len, bool skip, int *matched,
                 struct verify_error *err)
{
    struct policy_input in = {now, nonce, nonce_len, skip};
    return policy_check(p, d, &in, matched, err);
}

static void expect(const struct policy *p, const struct nitro_document *d, int64_t now,
                   enum verify_reason reason, const char *detail)
{
    struct verify_error err = {0};
    int matched = 7;
    int rc = check(p, d, now, NULL, 0, false, &matched, &err);
    if (reason == VERIFY_R_OK) {
        if (rc != 0)
            fail_msg("rejected: %s (%s)", verify_reason_string(err.reason), err.detail);
        return;
    }
    if (rc != VERIFY_REJECT || err.reason != reason)
        fail_msg("got %s, want %s", rc == 0 ? "accepted" : verify_reason_string(err.reason),
                 verify_reason_string(reason));
    assert_string_equal(err.detail, detail != NULL ? detail : "");
    assert_int_equal(matched, -1);
}

static void test_digest(void **state)
{
    struct policy p = make_policy();
    struct nitro_document d = make_doc();
    (void)state;
    expect(&p, &d, NOW, VERIFY_R_OK, NULL);
    d.digest = (struct cose_bytes){(const uint8_t *)"SHA256", 6};
    expect(&p, &d, NOW, VERIFY_R_POLICY_DIGEST, NULL);
    d.digest = (struct cose_bytes){(const uint8_t *)"SHA3840", 7};
    expect(&p, &d, NOW, VERIFY_R_POLICY_DIGEST, NULL);
    d.digest = (struct cose_bytes){(const uint8_t *)"sha384", 6};
    expect(&p, &d, NOW, VERIFY_R_POLICY_DIGEST, NULL);
}

static void test_freshness(void **state)
{
    struct policy p = make_policy();
    struct nitro_document d = make_doc();
    (void)state;
    expect(&p, &d, NOW + 300000, VERIFY_R_OK, NULL);
    expect(&p, &d, NOW + 300001, VERIFY_R_POLICY_STALE, NULL);
    expect(&p, &d, NOW - 60000, VERIFY_R_OK, NULL);
    expect(&p, &d, NOW - 60001, VERIFY_R_POLICY_FUTURE, NULL);
    /* Extreme clocks saturate instead of overflowing. */
    expect(&p, &d, INT64_MIN, VERIFY_R_POLICY_FUTURE, NULL);
    expect(&p, &d, INT64_MAX, VERIFY_R_POLICY_STALE, NULL);
    p.max_age_ms = INT64_MAX;
    p.skew_ms = INT64_MAX;
    expect(&p, &d, INT64_MAX, VERIFY_R_OK, NULL);
    expect(&p, &d, 0, VERIFY_R_OK, NULL);
    expect(&p, &d, INT64_MIN + 1, VERIFY_R_POLICY_FUTURE, NULL); /* INT64_MIN + 1 + max = 0 */
}

static void test_nonce(void **state)
{
    struct policy p = make_policy();
    struct nitro_document d = make_doc();
    struct verify_error err;
    uint8_t ours[32];
    int m;
    (void)state;

    memset(ours, 0xaa, sizeof(ours));
    assert_int_equal(check(&p, &d, NOW, ours, sizeof(ours), false, &m, &err), 0);
    ours[31] = 0xab;
    assert_int_equal(check(&p, &d, NOW, ours, sizeof(ours), false, &m, &err), VERIFY_REJECT);
    assert_int_equal(err.reason, VERIFY_R_POLICY_NONCE_MISMATCH);
    ours[31] = 0xaa;
    assert_int_equal(check(&p, &d, NOW, ours, 31, false, &m, &err), VERIFY_REJECT);
    assert_int_equal(err.reason, VERIFY_R_POLICY_NONCE_MISMATCH);
    d.has_nonce = false;
    assert_int_equal(check(&p, &d, NOW, ours, sizeof(ours), false, &m, &err), VERIFY_REJECT);
    assert_int_equal(err.reason, VERIFY_R_POLICY_NONCE_MISSING);
    /* An empty nonce is a nonce, and not ours. */
    d.has_nonce = true;
    d.nonce.len = 0;
    assert_int_equal(check(&p, &d, NOW, ours, sizeof(ours), false, &m, &err), VERIFY_REJECT);
    assert_int_equal(err.reason, VERIFY_R_POLICY_NONCE_MISMATCH);
    /* We sent none: whatever the document carries is not compared. */
    assert_int_equal(check(&p, &d, NOW, NULL, 0, false, &m, &err), 0);
}

static void test_pcr_shape_and_debug(void **state)
{
    struct policy p = make_policy();
    struct nitro_document d = make_doc();
    static const uint8_t zero[NITRO_PCR_LEN];
    (void)state;

    d.pcrs[5].len = 32;
    expect(&p, &d, NOW, VERIFY_R_POLICY_PCR_LENGTH, "pcr5");
    d = make_doc();
    d.pcr_mask &= ~(1u << 2);
    expect(&p, &d, NOW, VERIFY_R_POLICY_PCR_ABSENT, NULL);

    d = make_doc();
    for (unsigned i = 0; i < 3; i++)
        d.pcrs[i].data = zero;
    assert_true(policy_is_debug(&d));
    expect(&p, &d, NOW, VERIFY_R_POLICY_DEBUG, NULL);
    /* allow_debug lets it reach the measurement sets, which still decide. */
    p.allow_debug = true;
    expect(&p, &d, NOW, VERIFY_R_POLICY_PCR_MISMATCH, "pcr0");
    memset(p.sets[0].pcr[0], 0, NITRO_PCR_LEN);
    expect(&p, &d, NOW, VERIFY_R_OK, NULL);
    /* Two zero PCRs out of three is not debug mode. */
    d.pcrs[2].data = pcr_values[2];
    assert_false(policy_is_debug(&d));
}

static void test_measurement_sets(void **state)
{
    struct policy p = make_policy();
    struct nitro_document d = make_doc();
    struct verify_error err;
    int m = 9;
    (void)state;

    assert_int_equal(check(&p, &d, NOW, NULL, 0, false, &m, &err), 0);
    assert_int_equal(m, 0);

    /* Set 0 now wants PCR8 = 0x08..: no longer matches; set 1 (PCR1 only) does. */
    memset(p.sets[0].pcr[8], 8, NITRO_PCR_LEN);
    expect(&p, &d, NOW, VERIFY_R_POLICY_PCR_MISMATCH, "pcr8");
    p.sets[1].mask = 1u << 1;
    memset(p.sets[1].pcr[1], 2, NITRO_PCR_LEN);
    p.n_sets = 2;
    assert_int_equal(check(&p, &d, NOW, NULL, 0, false, &m, &err), 0);
    assert_int_equal(m, 1);

    /* Each PCR matches some set, but no set as a whole. */
    memset(&p.sets, 0, sizeof(p.sets));
    p.sets[0].mask = 0x3;
    memset(p.sets[0].pcr[0], 1, NITRO_PCR_LEN);
    memset(p.sets[0].pcr[1], 0x77, NITRO_PCR_LEN);
    p.sets[1].mask = 0x3;
    memset(p.sets[1].pcr[0], 0x77, NITRO_PCR_LEN);
    memset(p.sets[1].pcr[1], 2, NITRO_PCR_LEN);
    expect(&p, &d, NOW, VERIFY_R_POLICY_PCR_MISMATCH, "no single set matches all pcrs");

    /* A set naming a PCR the document lacks. */
    p.n_sets = 1;
    p.sets[0].mask = 1u << 20;
    expect(&p, &d, NOW, VERIFY_R_POLICY_PCR_MISMATCH, "pcr20");
    /* An empty set matches nothing (config never builds one). */
    p.sets[0].mask = 0;
    expect(&p, &d, NOW, VERIFY_R_POLICY_PCR_MISMATCH, "no single set matches all pcrs");

    p.n_sets = 0;
    expect(&p, &d, NOW, VERIFY_R_POLICY_NO_MEASUREMENTS, NULL);
    p.n_sets = POLICY_MAX_SETS + 1;
    expect(&p, &d, NOW, VERIFY_R_POLICY_NO_MEASUREMENTS, NULL);
    /* Skipping is an explicit request, not the consequence of an empty policy. */
    assert_int_equal(check(&p, &d, NOW, NULL, 0, true, &m, &err), 0);
    assert_int_equal(m, -1);
}

/* Values equal in their first 47 bytes and different only in byte 47, the last one: a compare
 * that stops short of the end (47 bytes, or a length off by one) accepts them. */
static void test_pcr_differs_in_last_byte(void **state)
{
    struct policy p = make_policy();
    struct nitro_document d = make_doc();
    static uint8_t near[NITRO_PCR_LEN];
    static uint8_t near_zero[NITRO_PCR_LEN];
    static const uint8_t zero[NITRO_PCR_LEN];
    struct verify_error err;
    int m = 9;
    (void)state;

    /* The set wants PCR0 = 01 x 48; the document's PCR0 is 01 x 47 then 02. */
    memset(near, 1, sizeof(near));
    near[47] = 0x02;
    d.pcrs[0].data = near;
    expect(&p, &d, NOW, VERIFY_R_POLICY_PCR_MISMATCH, "pcr0");

    /* The same for a PCR later in the set (PCR8 = 09 x 47 then 08). */
    d = make_doc();
    memset(near, 9, sizeof(near));
    near[47] = 0x08;
    d.pcrs[8].data = near;
    expect(&p, &d, NOW, VERIFY_R_POLICY_PCR_MISMATCH, "pcr8");

    /* A second set that differs from the document only in its last byte does not match
     * either; the first set still does, and is the one reported. */
    d = make_doc();
    p.sets[1].mask = 1u << 1;
    memset(p.sets[1].pcr[1], 2, NITRO_PCR_LEN);
    p.sets[1].pcr[1][47] = 0x03;
    p.n_sets = 2;
    assert_int_equal(check(&p, &d, NOW, NULL, 0, false, &m, &err), 0);
    assert_int_equal(m, 0);
    p.sets[0].pcr[0][47] = 0x00;
    expect(&p, &d, NOW, VERIFY_R_POLICY_PCR_MISMATCH, "pcr0");

    /* PCR0 zero but for its last byte, PCR1 and PCR2 zero: not debug mode. */
    d = make_doc();
    near_zero[47] = 0x01;
    d.pcrs[0].data = near_zero;
    d.pcrs[1].data = zero;
    d.pcrs[2].data = zero;
    assert_false(policy_is_debug(&d));
    d.pcrs[0].data = zero;
    assert_true(policy_is_debug(&d));
}

/* A policy bundle's expiry (not_after_ms) refuses every document from that instant on, and is
 * not part of the policy digest (a new bundle with the same sets is no policy change). */
static void test_expired_policy_admits_nothing(void **state)
{
    struct nitro_document d = make_doc();
    struct policy p = make_policy();
    char before[POLICY_DIGEST_LEN], after[POLICY_DIGEST_LEN];
    (void)state;
    policy_digest(&p, before);
    p.not_after_ms = NOW + 1;
    policy_digest(&p, after);
    assert_string_equal(before, after);
    expect(&p, &d, NOW, VERIFY_R_OK, NULL);
    expect(&p, &d, NOW + 1, VERIFY_R_POLICY_EXPIRED, NULL);
    p.not_after_ms = 0; /* inline and policy_file policies never expire */
    expect(&p, &d, NOW, VERIFY_R_OK, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_digest),
        cmocka_unit_test(test_expired_policy_admits_nothing),
        cmocka_unit_test(test_freshness),
        cmocka_unit_test(test_nonce),
        cmocka_unit_test(test_pcr_shape_and_debug),
        cmocka_unit_test(test_measurement_sets),
        cmocka_unit_test(test_pcr_differs_in_last_byte),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
