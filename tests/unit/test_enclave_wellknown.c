/* The evidence endpoint's request target (daemon/enclave/wellknown.c): exactly 64 lowercase
 * hex digits as the only query parameter, anything else 400, other paths relayed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "enclave/wellknown.h"

#define HEX64 "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

static enum wellknown_target parse(const char *target, uint8_t nonce[32])
{
    return wellknown_parse(target, strlen(target), nonce);
}

static void test_valid_nonce_is_decoded(void **state)
{
    uint8_t nonce[32], want[32];
    (void)state;
    for (int i = 0; i < 32; i++)
        want[i] = (uint8_t)i;
    assert_int_equal(parse(WELLKNOWN_PATH "?nonce=" HEX64, nonce), WELLKNOWN_NONCE);
    assert_memory_equal(nonce, want, 32);
    assert_int_equal(parse(WELLKNOWN_PATH "?nonce=ffffffffffffffffffffffffffffffffffffffffffffff"
                                          "ffffffffffffffffff",
                           nonce),
                     WELLKNOWN_NONCE);
    assert_int_equal(nonce[31], 0xff);
    memset(nonce, 0, sizeof(nonce));
    assert_int_equal(parse(WELLKNOWN_PATH "?session_nonce=" HEX64, nonce), WELLKNOWN_SESSION);
    assert_memory_equal(nonce, want, 32);
}

static void test_bad_nonces_are_refused(void **state)
{
    static const char *const bad[] = {
        WELLKNOWN_PATH,                      /* no query */
        WELLKNOWN_PATH "?",                  /* empty query */
        WELLKNOWN_PATH "?nonce=",            /* empty nonce */
        WELLKNOWN_PATH "?nonce=" HEX64 "0",  /* 65 digits */
        WELLKNOWN_PATH "?nonce=" HEX64 "00", /* 66 digits */
        WELLKNOWN_PATH "?nonce=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1",
        WELLKNOWN_PATH "?nonce=000102030405060708090A0B0C0D0E0F101112131415161718191a1b1c1d1e1f",
        WELLKNOWN_PATH "?nonce=000102030405060708090g0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        WELLKNOWN_PATH "?nonce=" HEX64 "&x=1", /* another parameter after */
        WELLKNOWN_PATH "?x=1&nonce=" HEX64,    /* another parameter before */
        WELLKNOWN_PATH "?Nonce=" HEX64,        /* the name is exact */
        WELLKNOWN_PATH "?nonce=+00102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        WELLKNOWN_PATH "?nonce=%30102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        WELLKNOWN_PATH "?nonce=" HEX64 "#",
        WELLKNOWN_PATH "?session_nonce=" HEX64 "0", /* 65 digits */
        WELLKNOWN_PATH "?session_nonce=" HEX64 "&nonce=" HEX64,
        WELLKNOWN_PATH "?Session_nonce=" HEX64,
        WELLKNOWN_PATH "?session-nonce=" HEX64,
        WELLKNOWN_PATH "?sessionXnonce=" HEX64,
        WELLKNOWN_PATH "?xxxxxxxxnonce=" HEX64,
        WELLKNOWN_PATH
        "?session_nonce=000102030405060708090A0B0C0D0E0F101112131415161718191a1b1c1d1e1f",
    };
    uint8_t nonce[32];
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (parse(bad[i], nonce) != WELLKNOWN_BAD_NONCE)
            fail_msg("accepted: %s", bad[i]);
    }
}

static void test_other_paths_are_relayed(void **state)
{
    uint8_t nonce[32];
    (void)state;
    assert_int_equal(parse("/", nonce), WELLKNOWN_OTHER);
    assert_int_equal(parse("/.well-known/nitro-attestatio?nonce=" HEX64, nonce), WELLKNOWN_OTHER);
    assert_int_equal(parse(WELLKNOWN_PATH "s?nonce=" HEX64, nonce), WELLKNOWN_OTHER);
    assert_int_equal(parse(WELLKNOWN_PATH "/x?nonce=" HEX64, nonce), WELLKNOWN_OTHER);
    assert_int_equal(parse("/enclave/attestation?nonce=" HEX64, nonce), WELLKNOWN_OTHER);
}

static void test_response_head(void **state)
{
    char out[256];
    int n;
    (void)state;
    n = wellknown_response_head(4488, false, out, sizeof(out));
    assert_true(n > 0);
    assert_string_equal(out, "HTTP/1.1 200 OK\r\nContent-Type: application/cbor\r\n"
                             "Content-Length: 4488\r\nCache-Control: no-store\r\n"
                             "Connection: keep-alive\r\n\r\n");
    assert_true(wellknown_response_head(4488, true, out, 20) < 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_nonce_is_decoded),
        cmocka_unit_test(test_bad_nonces_are_refused),
        cmocka_unit_test(test_other_paths_are_relayed),
        cmocka_unit_test(test_response_head),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
