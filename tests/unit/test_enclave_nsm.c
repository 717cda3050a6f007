/* The NSM request and response CBOR of daemon/enclave/nsm.c: the exact request bytes, the
 * driver's size caps, {"Error": ...} answers and malformed answers. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "enclave/nsm.h"

static void fill(uint8_t *b, size_t n, uint8_t seed)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(seed + i);
}

static void test_request_is_the_exact_nsm_shape(void **state)
{
    uint8_t ud[32], nonce[32], out[NSM_REQUEST_MAX], want[200];
    size_t w = 0;
    int n;
    (void)state;
    fill(ud, sizeof(ud), 0x10);
    fill(nonce, sizeof(nonce), 0x80);
    /* {"Attestation": {"user_data": h'..', "nonce": h'..', "public_key": null}} */
    want[w++] = 0xa1;
    want[w++] = 0x6b;
    memcpy(want + w, "Attestation", 11), w += 11;
    want[w++] = 0xa3;
    want[w++] = 0x69;
    memcpy(want + w, "user_data", 9), w += 9;
    want[w++] = 0x58, want[w++] = 32;
    memcpy(want + w, ud, 32), w += 32;
    want[w++] = 0x65;
    memcpy(want + w, "nonce", 5), w += 5;
    want[w++] = 0x58, want[w++] = 32;
    memcpy(want + w, nonce, 32), w += 32;
    want[w++] = 0x6a;
    memcpy(want + w, "public_key", 10), w += 10;
    want[w++] = 0xf6;
    n = nsm_encode_request(ud, sizeof(ud), nonce, sizeof(nonce), out, sizeof(out));
    assert_int_equal(n, (int)w);
    assert_memory_equal(out, want, w);
}

static void test_request_limits(void **state)
{
    uint8_t big[NSM_USER_DATA_MAX + 1] = {0}, out[NSM_REQUEST_MAX];
    (void)state;
    assert_int_equal(nsm_encode_request(big, sizeof(big), big, 32, out, sizeof(out)), -EINVAL);
    assert_int_equal(nsm_encode_request(big, 32, big, sizeof(big), out, sizeof(out)), -EINVAL);
    /* The largest fields fit the driver's 4096 bytes; a smaller buffer is refused, not cut. */
    assert_true(nsm_encode_request(big, 512, big, 512, out, sizeof(out)) > 1024);
    assert_int_equal(nsm_encode_request(big, 512, big, 512, out, 100), -EMSGSIZE);
}

/* {"Attestation": {"document": h'<doc>'}} by hand. */
static size_t good_response(const uint8_t *doc, size_t len, uint8_t *out)
{
    size_t w = 0;
    out[w++] = 0xa1;
    out[w++] = 0x6b;
    memcpy(out + w, "Attestation", 11), w += 11;
    out[w++] = 0xa1;
    out[w++] = 0x68;
    memcpy(out + w, "document", 8), w += 8;
    out[w++] = 0x59, out[w++] = (uint8_t)(len >> 8), out[w++] = (uint8_t)len;
    memcpy(out + w, doc, len), w += len;
    return w;
}

static void test_response_document(void **state)
{
    uint8_t doc[4500], resp[NSM_RESPONSE_MAX], out[NSM_DOCUMENT_MAX];
    char err[128];
    size_t n;
    (void)state;
    fill(doc, sizeof(doc), 0x84);
    n = good_response(doc, sizeof(doc), resp);
    assert_int_equal(nsm_decode_response(resp, n, out, sizeof(out), err, sizeof(err)),
                     (int)sizeof(doc));
    assert_memory_equal(out, doc, sizeof(doc));
    /* A document larger than the caller's buffer is refused. */
    assert_int_equal(nsm_decode_response(resp, n, out, 4499, err, sizeof(err)), -EMSGSIZE);
}

static void test_response_error(void **state)
{
    static const uint8_t resp[] = {0xa1, 0x65, 'E', 'r', 'r', 'o', 'r', 0x6f, 'I', 'n', 'v', 'a',
                                   'l',  'i',  'd', 'A', 'r', 'g', 'u', 'm',  'e', 'n', 't'};
    uint8_t out[64];
    char err[128];
    (void)state;
    assert_int_equal(nsm_decode_response(resp, sizeof(resp), out, sizeof(out), err, sizeof(err)),
                     -EPROTO);
    assert_non_null(strstr(err, "InvalidArgument"));
}

static void test_response_oversize(void **state)
{
    static uint8_t resp[NSM_RESPONSE_MAX + 1];
    uint8_t doc[16], out[64];
    char err[128];
    size_t n;
    (void)state;
    fill(doc, sizeof(doc), 1);
    n = good_response(doc, sizeof(doc), resp);
    assert_int_equal(nsm_decode_response(resp, n, out, sizeof(out), err, sizeof(err)), 16);
    /* What the driver could never return is refused before it is parsed. */
    assert_int_equal(
        nsm_decode_response(resp, NSM_RESPONSE_MAX + 1, out, sizeof(out), err, sizeof(err)),
        -EMSGSIZE);
}

static void test_response_malformed(void **state)
{
    uint8_t doc[16], resp[256], out[64];
    char err[128];
    size_t n;
    (void)state;
    fill(doc, sizeof(doc), 1);
    n = good_response(doc, sizeof(doc), resp);

    /* Trailing bytes after the one item. */
    resp[n] = 0x00;
    assert_int_equal(nsm_decode_response(resp, n + 1, out, sizeof(out), err, sizeof(err)),
                     -EBADMSG);
    /* Cut short. */
    assert_int_equal(nsm_decode_response(resp, n - 1, out, sizeof(out), err, sizeof(err)),
                     -EBADMSG);
    /* Another variant name. */
    resp[3] = 'X';
    assert_int_equal(nsm_decode_response(resp, n, out, sizeof(out), err, sizeof(err)), -EBADMSG);
    resp[3] = 't';
    /* The document as a text string instead of a byte string. */
    resp[23] = 0x79;
    assert_int_equal(nsm_decode_response(resp, n, out, sizeof(out), err, sizeof(err)), -EBADMSG);
    resp[23] = 0x59;
    assert_int_equal(nsm_decode_response(resp, n, out, sizeof(out), err, sizeof(err)), 16);
    /* An empty document, and not CBOR at all. */
    n = good_response(doc, 0, resp);
    assert_int_equal(nsm_decode_response(resp, n, out, sizeof(out), err, sizeof(err)), -EBADMSG);
    assert_int_equal(
        nsm_decode_response((const uint8_t *)"hello", 5, out, sizeof(out), err, sizeof(err)),
        -EBADMSG);
    /* A second pair beside "Attestation". */
    n = good_response(doc, sizeof(doc), resp);
    resp[0] = 0xa2;
    resp[n] = 0x61, resp[n + 1] = 'x', resp[n + 2] = 0x01;
    assert_int_equal(nsm_decode_response(resp, n + 3, out, sizeof(out), err, sizeof(err)),
                     -EBADMSG);
}

static void test_backend_open_refuses_missing_device(void **state)
{
    char err[256];
    (void)state;
    assert_null(nsm_backend_open("/nonexistent/nsm", err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent/nsm"));
    assert_null(nsm_backend_open("nsm", err, sizeof(err)));
    assert_null(nsm_backend_open("test:/nonexistent/chain", err, sizeof(err)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_is_the_exact_nsm_shape),
        cmocka_unit_test(test_request_limits),
        cmocka_unit_test(test_response_document),
        cmocka_unit_test(test_response_error),
        cmocka_unit_test(test_response_oversize),
        cmocka_unit_test(test_response_malformed),
        cmocka_unit_test(test_backend_open_refuses_missing_device),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
