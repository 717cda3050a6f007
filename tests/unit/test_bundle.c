/*
 * Unit tests for verify/bundle.c: the C2SP signed-note key id and Ed25519 signature against
 * the specification's published example, a signed bundle round trip, the verdicts of
 * bundle_verify() (ok, unknown key, bad signature), and the strict body and envelope rules, each
 * refusal on its own line.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "verify/bundle.h"

#define HEX96_A                                                                                    \
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000" \
    "0"                                                                                            \
    "001"
#define HEX96_B                                                                                    \
    "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb" \
    "b"                                                                                            \
    "bbb"

static const char good_body[] = "attestproxy-policy-bundle v1\n"
                                "version 7\n"
                                "issued 2026-12-01T00:00:00Z\n"
                                "expires 2027-01-01T00:00:00Z\n"
                                "service demo\n"
                                "service other\n"
                                "allow_debug no\n"
                                "measurement pcr0=" HEX96_A " pcr8=" HEX96_B "\n"
                                "measurement pcr0=" HEX96_B "\n";

static EVP_PKEY *new_key(struct policy_key *pub, const char *name)
{
    EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    size_t len = POLICY_KEY_LEN;
    assert_non_null(pk);
    assert_int_equal(EVP_PKEY_get_raw_public_key(pk, pub->pub, &len), 1);
    snprintf(pub->name, sizeof(pub->name), "%s", name);
    return pk;
}

/* body || "\n" || signature line, in a malloc'd buffer. */
static char *sign(const char *body, EVP_PKEY *pk, const char *name, size_t *len)
{
    char line[512];
    size_t blen = strlen(body);
    int n = bundle_sign_line((const uint8_t *)body, blen, pk, name, line, sizeof(line));
    char *out;
    assert_true(n > 0);
    out = malloc(blen + 1 + (size_t)n + 1);
    assert_non_null(out);
    memcpy(out, body, blen);
    out[blen] = '\n';
    memcpy(out + blen + 1, line, (size_t)n + 1);
    *len = blen + 1 + (size_t)n;
    return out;
}

/* The example of c2sp.org/signed-note (Go's sumdb/note test key "PeterNeumann"): our key id and
 * our signature line must be byte for byte those of the specification, so that any conforming
 * tool can verify our bundles and we theirs. */
static void test_signed_note_known_answer(void **state)
{
    static const char seed_b64[] = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    static const char text[] = "If you think cryptography is the answer to your problem,\n"
                               "then you don't know what your problem is.\n";
    static const char want[] =
        "\xe2\x80\x94 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZ"
        "InNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    static const uint8_t want_id[4] = {0xc7, 0x4f, 0x20, 0xa3};
    uint8_t raw[36], pub[32], id[4];
    size_t plen = sizeof(pub);
    char line[256];
    EVP_PKEY *pk;
    (void)state;
    assert_int_equal(EVP_DecodeBlock(raw, (const unsigned char *)seed_b64, 44), 33);
    assert_int_equal(raw[0], 0x01); /* the algorithm byte: Ed25519 */
    pk = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, raw + 1, 32);
    assert_non_null(pk);
    assert_int_equal(EVP_PKEY_get_raw_public_key(pk, pub, &plen), 1);
    bundle_key_id("PeterNeumann", pub, id);
    assert_memory_equal(id, want_id, 4);
    assert_int_equal(bundle_sign_line((const uint8_t *)text, strlen(text), pk, "PeterNeumann", line,
                                      sizeof(line)),
                     (int)strlen(want));
    assert_string_equal(line, want);
    EVP_PKEY_free(pk);
}

static void test_round_trip(void **state)
{
    struct policy_key key;
    EVP_PKEY *pk = new_key(&key, "release-2026");
    struct bundle *b = malloc(sizeof(*b));
    size_t len, signer = 99;
    char why[200];
    char *data = sign(good_body, pk, "release-2026", &len);
    (void)state;
    assert_int_equal(bundle_parse((const uint8_t *)data, len, b, why, sizeof(why)), 0);
    assert_int_equal(b->version, 7);
    assert_int_equal(b->issued_ms, 1796083200000LL);
    assert_int_equal(b->expires_ms, 1798761600000LL);
    assert_int_equal(b->n_services, 2);
    assert_string_equal(b->services[1], "other");
    assert_false(b->allow_debug);
    assert_int_equal(b->n_sets, 2);
    assert_int_equal(b->sets[0].mask, (1u << 0) | (1u << 8));
    assert_int_equal(b->sets[0].pcr[0][47], 1);
    assert_int_equal(b->sets[0].pcr[8][0], 0xbb);
    assert_int_equal(b->sets[1].mask, 1u);
    assert_int_equal(b->body_len, strlen(good_body));
    assert_int_equal(b->n_sigs, 1);
    assert_int_equal(bundle_verify(b, (const uint8_t *)data, &key, 1, &signer), BUNDLE_OK);
    assert_int_equal(signer, 0);
    free(data);
    free(b);
    EVP_PKEY_free(pk);
}

static void test_verdicts(void **state)
{
    struct policy_key keys[2], other;
    EVP_PKEY *pk = new_key(&keys[1], "release");
    EVP_PKEY *pk2 = new_key(&other, "other");
    struct bundle *b = malloc(sizeof(*b));
    size_t len, signer = 99;
    char why[200];
    char *data = sign(good_body, pk, "release", &len);
    char *p;
    (void)state;
    keys[0] = other;
    /* The trusted key is second in the list: several keys overlap during a rotation. */
    assert_int_equal(bundle_parse((const uint8_t *)data, len, b, why, sizeof(why)), 0);
    assert_int_equal(bundle_verify(b, (const uint8_t *)data, keys, 2, &signer), BUNDLE_OK);
    assert_int_equal(signer, 1);
    /* Signed by a key nobody trusts. */
    assert_int_equal(bundle_verify(b, (const uint8_t *)data, &other, 1, &signer),
                     BUNDLE_UNKNOWN_KEY);
    /* The same name with another key: the key id differs, so the line is not ours. */
    snprintf(other.name, sizeof(other.name), "release");
    assert_int_equal(bundle_verify(b, (const uint8_t *)data, &other, 1, &signer),
                     BUNDLE_UNKNOWN_KEY);
    /* One byte of the body changed after signing: version 7 -> 8. */
    p = strstr(data, "version 7");
    p[8] = '8';
    assert_int_equal(bundle_parse((const uint8_t *)data, len, b, why, sizeof(why)), 0);
    assert_int_equal(b->version, 8);
    assert_int_equal(bundle_verify(b, (const uint8_t *)data, keys, 2, &signer),
                     BUNDLE_BAD_SIGNATURE);
    assert_string_equal(bundle_verdict_name(BUNDLE_BAD_SIGNATURE), "bad_signature");
    assert_string_equal(bundle_verdict_name(BUNDLE_ROLLBACK), "rollback");
    free(data);
    free(b);
    EVP_PKEY_free(pk);
    EVP_PKEY_free(pk2);
}

/* Each body differs from good_body in one way the format refuses. */
static void test_strict_body(void **state)
{
    static const struct {
        const char *from, *to, *why;
    } cases[] = {
        {"attestproxy-policy-bundle v1\n", "attestproxy-policy-bundle v2\n", "first line"},
        {"version 7\n", "version 07\n", "version"},
        {"version 7\n", "version 0\n", "version"},
        {"version 7\n", "version 18446744073709551616\n", "version"},
        {"version 7\n", "version  7\n", "version"},
        {"issued 2026-12-01T00:00:00Z\n", "issued 2026-02-30T00:00:00Z\n", "issued"},
        {"issued 2026-12-01T00:00:00Z\n", "issued 2026-12-01 00:00:00Z\n", "issued"},
        {"expires 2027-01-01T00:00:00Z\n", "expires 2026-12-01T00:00:00Z\n", "not after issued"},
        {"service demo\n", "service de mo\n", "service"},
        {"service other\n", "service demo\n", "listed twice"},
        {"service demo\nservice other\n", "", "service"},
        {"allow_debug no\n", "allow_debug maybe\n", "allow_debug"},
        {"allow_debug no\n", "", "allow_debug"},
        {"allow_debug no\n", "allow_debug no\nallow_debug no\n", "unknown line"},
        {"measurement pcr0=" HEX96_B "\n", "measurement pcr0=" HEX96_B " \n", "trailing space"},
        {"measurement pcr0=" HEX96_B "\n", "measurement pcr0=" HEX96_B "bb\n", "96"},
        {"measurement pcr0=" HEX96_B "\n", "measurement pcr0=" HEX96_B "\r\n", "0x0d"},
        {"measurement pcr0=" HEX96_B "\n", "measurement pcr32=" HEX96_B "\n", "0..31"},
        {"measurement pcr0=" HEX96_B "\n", "measurement pcr00=" HEX96_B "\n", "0..31"},
        {"measurement pcr0=" HEX96_B "\n", "measurement pcr0=" HEX96_B " pcr0=" HEX96_B "\n",
         "twice"},
        {"measurement pcr0=" HEX96_B "\n", "measurement\n", "unknown line"},
        {"pcr8=bbbb", "pcr8=BBBB", "lower-case"},
        {"measurement pcr0=" HEX96_B "\n", "measurement pcr0=" HEX96_B "\nextra line\n",
         "unknown line"},
        {"measurement pcr0=" HEX96_B "\n", "measurement pcr0=" HEX96_B "\n\n", "empty line"},
        {"service demo\n", "service demo\nversion 8\n", "expected"},
        {"measurement pcr0=" HEX96_B "\n", "measurement pcr0=" HEX96_B, "newline"},
    };
    char why[200];
    struct bundle *b = malloc(sizeof(*b));
    (void)state;
    assert_int_equal(
        bundle_parse_body((const uint8_t *)good_body, strlen(good_body), b, why, sizeof(why)), 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char body[4096];
        const char *at = strstr(good_body, cases[i].from);
        size_t pre;
        assert_non_null(at);
        pre = (size_t)(at - good_body);
        snprintf(body, sizeof(body), "%.*s%s%s", (int)pre, good_body, cases[i].to,
                 at + strlen(cases[i].from));
        why[0] = '\0';
        if (bundle_parse_body((const uint8_t *)body, strlen(body), b, why, sizeof(why)) != -EINVAL)
            fail_msg("case %zu accepted: %s", i, cases[i].to);
        if (strstr(why, cases[i].why) == NULL)
            fail_msg("case %zu: reason \"%s\" does not name \"%s\"", i, why, cases[i].why);
    }
    free(b);
}

static void test_limits(void **state)
{
    char *body = malloc(BUNDLE_MAX_BYTES * 2);
    struct bundle *b = malloc(sizeof(*b));
    char why[200];
    size_t n;
    (void)state;
    /* 65 measurement lines: one more than a policy holds. */
    n = (size_t)snprintf(body, BUNDLE_MAX_BYTES, "%.*s",
                         (int)(strstr(good_body, "measurement") - good_body), good_body);
    for (int i = 0; i < POLICY_MAX_SETS + 1; i++)
        n += (size_t)snprintf(body + n, BUNDLE_MAX_BYTES - n, "measurement pcr0=" HEX96_A "\n");
    assert_int_equal(bundle_parse_body((const uint8_t *)body, n, b, why, sizeof(why)), -EINVAL);
    assert_non_null(strstr(why, "more than 64 measurement"));
    assert_int_equal(bundle_parse_body((const uint8_t *)body, n - 114, b, why, sizeof(why)), 0);
    /* Larger than the bound: refused before it is looked at. */
    memset(body, 'a', BUNDLE_MAX_BYTES + 1);
    assert_int_equal(bundle_parse((const uint8_t *)body, BUNDLE_MAX_BYTES + 1, b, why, sizeof(why)),
                     -EINVAL);
    free(body);
    free(b);
}

static void test_envelope(void **state)
{
    struct policy_key key;
    EVP_PKEY *pk = new_key(&key, "k");
    struct bundle *b = malloc(sizeof(*b));
    char why[200], buf[8192];
    size_t len;
    char *data = sign(good_body, pk, "k", &len);
    const char *sigline = data + strlen(good_body) + 1;
    (void)state;
    /* No blank line: a body alone is not a signed note. */
    assert_int_equal(
        bundle_parse((const uint8_t *)good_body, strlen(good_body), b, why, sizeof(why)), -EINVAL);
    /* "--" instead of the em dash. */
    snprintf(buf, sizeof(buf), "%s\n-- k %s", good_body, sigline + 6);
    assert_int_equal(bundle_parse((const uint8_t *)buf, strlen(buf), b, why, sizeof(why)), -EINVAL);
    /* Base64 with a character outside the alphabet. */
    snprintf(buf, sizeof(buf), "%s", data);
    buf[strlen(buf) - 5] = '*';
    assert_int_equal(bundle_parse((const uint8_t *)buf, strlen(buf), b, why, sizeof(why)), -EINVAL);
    /* A second signature from an unknown key is ignored; 17 lines are too many. */
    snprintf(buf, sizeof(buf), "%s%s", data, sigline);
    assert_int_equal(bundle_parse((const uint8_t *)buf, strlen(buf), b, why, sizeof(why)), 0);
    assert_int_equal(b->n_sigs, 2);
    len = (size_t)snprintf(buf, sizeof(buf), "%s", data);
    for (int i = 0; i < BUNDLE_MAX_SIGS; i++)
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s", sigline);
    assert_int_equal(bundle_parse((const uint8_t *)buf, len, b, why, sizeof(why)), -EINVAL);
    assert_non_null(strstr(why, "more than 16"));
    free(data);
    free(b);
    EVP_PKEY_free(pk);
}

static void test_times_and_names(void **state)
{
    int64_t ms;
    char out[24];
    (void)state;
    assert_int_equal(bundle_parse_time("2024-02-29T23:59:59Z", 20, &ms), 0);
    bundle_format_time(ms, out);
    assert_string_equal(out, "2024-02-29T23:59:59Z");
    assert_int_equal(bundle_parse_time("2023-02-29T00:00:00Z", 20, &ms), -EINVAL);
    assert_int_equal(bundle_parse_time("2023-01-01T24:00:00Z", 20, &ms), -EINVAL);
    assert_int_equal(bundle_parse_time("2023-01-01T00:00:00+", 20, &ms), -EINVAL);
    assert_true(bundle_key_name_valid("example.com/policy"));
    assert_false(bundle_key_name_valid("a b"));
    assert_false(bundle_key_name_valid("a+b"));
    assert_false(bundle_key_name_valid("a:b"));
    assert_false(bundle_key_name_valid(""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signed_note_known_answer),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_verdicts),
        cmocka_unit_test(test_strict_body),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_envelope),
        cmocka_unit_test(test_times_and_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
