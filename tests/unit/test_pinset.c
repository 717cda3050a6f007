/*
 * Unit tests for proxy/pinset.c: expiry = min(now + ttl, leaf_not_after - margin) on the
 * monotonic clock, the negative cache, bounded size, clearing, and re-checking verified facts
 * against a changed policy.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/pinset.h"

#define MIN_MS  (60 * 1000)
#define HOUR_MS (60 * MIN_MS)
#define WALL    1700000000000LL /* wall clock at mono 1000 */

static void pin_of(uint8_t pin[PIN_LEN], uint8_t v)
{
    memset(pin, v, PIN_LEN);
}

static struct pin_info info_with_leaf(int64_t leaf_not_after)
{
    struct pin_info info;
    memset(&info, 0, sizeof(info));
    info.leaf_not_after_ms = leaf_not_after;
    info.pcr_mask = 0x7;
    memset(info.pcrs[0], 0xa0, NITRO_PCR_LEN);
    memset(info.pcrs[1], 0xa1, NITRO_PCR_LEN);
    memset(info.pcrs[2], 0xa2, NITRO_PCR_LEN);
    return info;
}

static struct pinset *new_set(void)
{
    struct pinset *ps = malloc(sizeof(*ps));
    assert_non_null(ps);
    pinset_init(ps);
    return ps;
}

static void test_ttl_bounds_expiry(void **state)
{
    struct pinset *ps = new_set();
    uint8_t pin[PIN_LEN];
    struct pin_info info = info_with_leaf(WALL + 3 * HOUR_MS);
    const struct pin_entry *e;
    (void)state;
    pin_of(pin, 1);
    assert_int_equal(pinset_lookup(ps, pin, 1000, NULL), PIN_UNKNOWN);
    assert_int_equal(pinset_add(ps, pin, &info, 1000, WALL, 10 * MIN_MS, MIN_MS), 0);
    e = pinset_find(ps, pin);
    assert_non_null(e);
    assert_int_equal(e->expires_mono_ms, 1000 + 10 * MIN_MS);
    assert_int_equal(e->info.verified_at_ms, WALL);
    assert_int_equal(e->info.expires_at_ms, WALL + 10 * MIN_MS);
    assert_int_equal(pinset_lookup(ps, pin, 1000 + 10 * MIN_MS - 1, NULL), PIN_FRESH);
    assert_int_equal(pinset_lookup(ps, pin, 1000 + 10 * MIN_MS, NULL), PIN_EXPIRED);
    free(ps);
}

/* A request's lookup: the fresh entry in one pass, none otherwise; the serial changes with
 * every write of the entry's facts and is never reused, not even after a clear. */
/* A reload that shortens the TTL (or lengthens cert_margin) shortens the pins already
 * attested, on both clocks; a longer TTL changes nothing until the next attestation. */
static void test_limit_shortens_existing_pins(void **state)
{
    struct pinset *ps = new_set();
    uint8_t pin[PIN_LEN];
    struct pin_info info = info_with_leaf(WALL + 3 * HOUR_MS);
    const struct pin_entry *e;
    uint64_t serial;
    (void)state;
    pin_of(pin, 8);
    assert_int_equal(pinset_add(ps, pin, &info, 1000, WALL, 10 * MIN_MS, MIN_MS), 0);
    serial = pinset_find(ps, pin)->serial;
    assert_int_equal(pinset_limit(ps, 20 * MIN_MS, MIN_MS), 0); /* longer: unchanged */
    assert_int_equal(pinset_find(ps, pin)->expires_mono_ms, 1000 + 10 * MIN_MS);
    assert_int_equal(pinset_limit(ps, 2 * MIN_MS, MIN_MS), 1);
    e = pinset_find(ps, pin);
    assert_int_equal(e->expires_mono_ms, 1000 + 2 * MIN_MS);
    assert_int_equal(e->info.expires_at_ms, WALL + 2 * MIN_MS);
    assert_true(e->serial > serial);
    assert_int_equal(pinset_lookup(ps, pin, 1000 + 2 * MIN_MS, NULL), PIN_EXPIRED);
    /* cert_margin: the leaf ends at WALL + 3 h; a margin of 3 h - 1 min leaves one minute. */
    assert_int_equal(pinset_limit(ps, 2 * MIN_MS, 3 * HOUR_MS - MIN_MS), 1);
    assert_int_equal(pinset_find(ps, pin)->expires_mono_ms, 1000 + MIN_MS);
    free(ps);
}

static void test_lookup_fresh_and_serials(void **state)
{
    struct pinset *ps = new_set();
    uint8_t pin[PIN_LEN], other[PIN_LEN];
    struct pin_info info = info_with_leaf(WALL + 3 * HOUR_MS);
    const struct pin_entry *e = NULL;
    uint64_t first, second, retry = 0;
    (void)state;
    pin_of(pin, 8);
    pin_of(other, 9);
    assert_int_equal(pinset_lookup_fresh(ps, pin, 1000, NULL, &e), PIN_UNKNOWN);
    assert_null(e);
    assert_int_equal(pinset_add(ps, pin, &info, 1000, WALL, 10 * MIN_MS, MIN_MS), 0);
    assert_int_equal(pinset_lookup_fresh(ps, pin, 1000, NULL, &e), PIN_FRESH);
    assert_ptr_equal(e, pinset_find(ps, pin));
    first = e->serial;
    assert_true(first > 0);
    assert_int_equal(pinset_add(ps, other, &info, 1000, WALL, 10 * MIN_MS, MIN_MS), 0);
    assert_int_equal(pinset_add(ps, pin, &info, 2000, WALL + 1000, 10 * MIN_MS, MIN_MS), 0);
    assert_int_equal(pinset_lookup_fresh(ps, pin, 2000, NULL, &e), PIN_FRESH);
    second = e->serial;
    assert_true(second > first + 1);
    assert_int_equal(pinset_lookup_fresh(ps, pin, 2000 + 10 * MIN_MS, NULL, &e), PIN_EXPIRED);
    assert_null(e);
    pinset_add_negative(ps, other, 3000, MIN_MS);
    pinset_remove(ps, other);
    assert_int_equal(pinset_lookup_fresh(ps, other, 3000, &retry, &e), PIN_NEGATIVE);
    assert_null(e);
    assert_int_equal(retry, MIN_MS);
    pinset_clear(ps);
    assert_int_equal(pinset_add(ps, pin, &info, 4000, WALL, 10 * MIN_MS, MIN_MS), 0);
    assert_int_equal(pinset_lookup_fresh(ps, pin, 4000, NULL, &e), PIN_FRESH);
    assert_true(e->serial > second);
    free(ps);
}

static void test_renewal_resets_refresh_bookkeeping(void **state)
{
    struct pinset *ps = new_set();
    uint8_t pin[PIN_LEN];
    struct pin_info info = info_with_leaf(WALL + 3 * HOUR_MS);
    struct pin_entry *e;
    (void)state;
    pin_of(pin, 4);
    assert_int_equal(pinset_add(ps, pin, &info, 1000, WALL, 10 * MIN_MS, MIN_MS), 0);
    e = pinset_entry(ps, pin);
    assert_non_null(e);
    assert_false(e->refreshing);
    assert_int_equal(e->refresh_not_before_mono_ms, 0);
    /* A refresh runs, then one obtains no evidence and backs off... */
    e->refreshing = true;
    e->refresh_not_before_mono_ms = 9 * MIN_MS;
    /* ...and a successful attestation renews the entry and starts its bookkeeping afresh. */
    assert_int_equal(pinset_add(ps, pin, &info, 5 * MIN_MS, WALL + 5 * MIN_MS, 10 * MIN_MS, MIN_MS),
                     0);
    e = pinset_entry(ps, pin);
    assert_ptr_equal(e, pinset_find(ps, pin));
    assert_false(e->refreshing);
    assert_int_equal(e->refresh_not_before_mono_ms, 0);
    assert_int_equal(e->expires_mono_ms, 15 * MIN_MS);
    free(ps);
}

static void test_certificate_bounds_expiry(void **state)
{
    struct pinset *ps = new_set();
    uint8_t pin[PIN_LEN];
    /* The leaf ends in 5 minutes; with a 1 minute margin the pin lives 4 minutes, not 10. */
    struct pin_info info = info_with_leaf(WALL + 5 * MIN_MS);
    (void)state;
    pin_of(pin, 2);
    assert_int_equal(pinset_add(ps, pin, &info, 1000, WALL, 10 * MIN_MS, MIN_MS), 0);
    assert_int_equal(pinset_find(ps, pin)->expires_mono_ms, 1000 + 4 * MIN_MS);
    assert_int_equal(pinset_find(ps, pin)->info.expires_at_ms, WALL + 4 * MIN_MS);
    free(ps);
}

static void test_certificate_within_margin_is_refused(void **state)
{
    struct pinset *ps = new_set();
    uint8_t pin[PIN_LEN];
    struct pin_info info = info_with_leaf(WALL + MIN_MS); /* ends exactly at the margin */
    (void)state;
    pin_of(pin, 3);
    assert_int_equal(pinset_add(ps, pin, &info, 1000, WALL, 10 * MIN_MS, MIN_MS), -ETIME);
    assert_int_equal(pinset_lookup(ps, pin, 1000, NULL), PIN_UNKNOWN);
    assert_int_equal(ps->n, 0);
    free(ps);
}

static void test_negative_cache(void **state)
{
    struct pinset *ps = new_set();
    uint8_t pin[PIN_LEN];
    struct pin_info info = info_with_leaf(WALL + HOUR_MS);
    uint64_t retry = 0;
    (void)state;
    pin_of(pin, 4);
    pinset_add_negative(ps, pin, 1000, 5000);
    assert_int_equal(pinset_lookup(ps, pin, 1000, &retry), PIN_NEGATIVE);
    assert_int_equal(retry, 5000);
    assert_int_equal(pinset_lookup(ps, pin, 5999, &retry), PIN_NEGATIVE);
    assert_int_equal(retry, 1);
    assert_int_equal(pinset_lookup(ps, pin, 6000, NULL), PIN_UNKNOWN);
    /* Zero duration records nothing. */
    pinset_add_negative(ps, pin, 7000, 0);
    assert_int_equal(pinset_lookup(ps, pin, 7000, NULL), PIN_UNKNOWN);
    /* A successful attestation clears the negative entry. */
    pinset_add_negative(ps, pin, 7000, 5000);
    assert_int_equal(pinset_add(ps, pin, &info, 7001, WALL, MIN_MS, 0), 0);
    assert_int_equal(pinset_lookup(ps, pin, 7002, NULL), PIN_FRESH);
    assert_int_equal(ps->n_negative, 0);
    free(ps);
}

static void test_remove_and_expire(void **state)
{
    struct pinset *ps = new_set();
    uint8_t a[PIN_LEN], b[PIN_LEN];
    struct pin_info info = info_with_leaf(WALL + HOUR_MS);
    (void)state;
    pin_of(a, 5);
    pin_of(b, 6);
    assert_int_equal(pinset_add(ps, a, &info, 0, WALL, MIN_MS, 0), 0);
    assert_int_equal(pinset_add(ps, b, &info, 0, WALL, 2 * MIN_MS, 0), 0);
    assert_true(pinset_any_fresh(ps, 0));
    assert_memory_equal(pinset_next_expiry(ps, 0)->pin, a, PIN_LEN);
    assert_int_equal(pinset_expire(ps, MIN_MS), 1);
    assert_int_equal(pinset_lookup(ps, a, MIN_MS, NULL), PIN_UNKNOWN);
    assert_int_equal(pinset_lookup(ps, b, MIN_MS, NULL), PIN_FRESH);
    assert_true(pinset_remove(ps, b));
    assert_false(pinset_remove(ps, b));
    assert_false(pinset_any_fresh(ps, MIN_MS));
    assert_null(pinset_next_expiry(ps, MIN_MS));
    free(ps);
}

static void test_full_set_evicts_first_to_expire(void **state)
{
    struct pinset *ps = new_set();
    uint8_t pin[PIN_LEN];
    struct pin_info info = info_with_leaf(WALL + 100 * HOUR_MS);
    (void)state;
    /* Pin i expires at (i + 1) minutes, except pin 0, which lives longest. */
    for (unsigned i = 0; i < PINSET_MAX; i++) {
        pin_of(pin, (uint8_t)(i + 1));
        assert_int_equal(
            pinset_add(ps, pin, &info, 0, WALL, i == 0 ? 99 * HOUR_MS : (i + 1) * MIN_MS, 0), 0);
    }
    assert_int_equal(ps->n, PINSET_MAX);
    pin_of(pin, 0xee);
    assert_int_equal(pinset_add(ps, pin, &info, 0, WALL, HOUR_MS, 0), 0);
    assert_int_equal(ps->n, PINSET_MAX);
    pin_of(pin, 2); /* expired first: evicted */
    assert_int_equal(pinset_lookup(ps, pin, 0, NULL), PIN_UNKNOWN);
    pin_of(pin, 1);
    assert_int_equal(pinset_lookup(ps, pin, 0, NULL), PIN_FRESH);
    free(ps);
}

static void test_clear_keeps_last_failure(void **state)
{
    struct pinset *ps = new_set();
    uint8_t pin[PIN_LEN];
    struct pin_info info = info_with_leaf(WALL + HOUR_MS);
    (void)state;
    pin_of(pin, 7);
    assert_int_equal(pinset_add(ps, pin, &info, 0, WALL, MIN_MS, 0), 0);
    pinset_add_negative(ps, pin, 0, 1000);
    pinset_set_failure(ps, WALL, true, "policy_pcr_mismatch", "policy: pcrs", pin);
    pinset_clear(ps);
    assert_int_equal(ps->n, 0);
    assert_int_equal(ps->n_negative, 0);
    assert_true(ps->last_failure.set);
    assert_string_equal(ps->last_failure.reason, "policy_pcr_mismatch");
    assert_memory_equal(ps->last_failure.pin, pin, PIN_LEN);
    free(ps);
}

static void test_info_satisfies_policy(void **state)
{
    struct policy *p = calloc(1, sizeof(*p));
    struct pin_info info = info_with_leaf(WALL);
    (void)state;
    assert_non_null(p);
    /* No set: nothing satisfies (the daemon never runs with an empty policy). */
    assert_false(pinset_info_satisfies(&info, p));
    p->n_sets = 2;
    p->sets[0].mask = 1u << 0;
    memset(p->sets[0].pcr[0], 0xbb, NITRO_PCR_LEN);
    p->sets[1].mask = (1u << 0) | (1u << 2);
    memset(p->sets[1].pcr[0], 0xa0, NITRO_PCR_LEN);
    memset(p->sets[1].pcr[2], 0xa2, NITRO_PCR_LEN);
    assert_true(pinset_info_satisfies(&info, p)); /* the second set */
    p->sets[1].pcr[2][47] ^= 1;
    assert_false(pinset_info_satisfies(&info, p));
    p->sets[1].pcr[2][47] ^= 1;
    /* A set naming a PCR the document did not carry does not match. */
    p->sets[1].mask |= 1u << 9;
    assert_false(pinset_info_satisfies(&info, p));
    p->sets[1].mask &= ~(1u << 9);
    /* Debug mode needs allow_debug. */
    info.debug_mode = true;
    assert_false(pinset_info_satisfies(&info, p));
    p->allow_debug = true;
    assert_true(pinset_info_satisfies(&info, p));
    free(p);
}

static void test_pin_hex(void **state)
{
    uint8_t pin[PIN_LEN];
    char hex[PIN_HEX_LEN + 1];
    (void)state;
    for (unsigned i = 0; i < PIN_LEN; i++)
        pin[i] = (uint8_t)(i * 8 + 1);
    pin_hex(pin, hex);
    assert_int_equal(strlen(hex), 64);
    assert_memory_equal(hex, "0109111921", 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ttl_bounds_expiry),
        cmocka_unit_test(test_limit_shortens_existing_pins),
        cmocka_unit_test(test_lookup_fresh_and_serials),
        cmocka_unit_test(test_renewal_resets_refresh_bookkeeping),
        cmocka_unit_test(test_certificate_bounds_expiry),
        cmocka_unit_test(test_certificate_within_margin_is_refused),
        cmocka_unit_test(test_negative_cache),
        cmocka_unit_test(test_remove_and_expire),
        cmocka_unit_test(test_full_set_evicts_first_to_expire),
        cmocka_unit_test(test_clear_keeps_last_failure),
        cmocka_unit_test(test_info_satisfies_policy),
        cmocka_unit_test(test_pin_hex),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
