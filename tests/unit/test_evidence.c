/*
 * Evidence envelopes (daemon/verify/evidence.c): sniffing, strict base64, JSON members, and
 * the two size gates.
 */
#include "verify_helpers.h"

#include "verify/evidence.h"
#include "verify/verifier.h"

static int b64(const char *in, uint8_t *out, size_t cap, size_t *n)
{
    return evidence_decode_base64(in, strlen(in), out, cap, n);
}

static void test_sniff(void **state)
{
    (void)state;
    assert_int_equal(evidence_sniff_format((const uint8_t *)"\x84\x44", 2), EVIDENCE_CBOR);
    assert_int_equal(evidence_sniff_format((const uint8_t *)"\xd2\x84", 2), EVIDENCE_CBOR);
    assert_int_equal(evidence_sniff_format((const uint8_t *)"{\"a\":1}", 7), EVIDENCE_JSON);
    assert_int_equal(evidence_sniff_format((const uint8_t *)" \r\n\t{}", 6), EVIDENCE_JSON);
    assert_int_equal(evidence_sniff_format((const uint8_t *)"hEShATgioFkR", 12), EVIDENCE_BASE64);
    assert_int_equal(evidence_sniff_format((const uint8_t *)"\nhESh", 5), EVIDENCE_BASE64);
    /* Binary that base64 can never start with goes to the COSE decoder for a precise reason. */
    assert_int_equal(evidence_sniff_format((const uint8_t *)"\x85", 1), EVIDENCE_CBOR);
    assert_int_equal(evidence_sniff_format((const uint8_t *)"\xd8\x62", 2), EVIDENCE_CBOR);
    assert_int_equal(evidence_sniff_format((const uint8_t *)"", 0), EVIDENCE_BASE64);
}

static void test_base64(void **state)
{
    uint8_t out[16];
    size_t n = 0;
    (void)state;

    assert_int_equal(b64("aGVsbG8=", out, sizeof(out), &n), 0);
    assert_int_equal(n, 5);
    assert_memory_equal(out, "hello", 5);
    assert_int_equal(b64("aGVsbG8", out, sizeof(out), &n), 0); /* unpadded */
    assert_int_equal(n, 5);
    assert_int_equal(b64("aGVs\r\nbG8h", out, sizeof(out), &n), 0);
    assert_int_equal(n, 6);
    assert_memory_equal(out, "hello!", 6);
    assert_int_equal(b64(" aG Vs bG 8= \n", out, sizeof(out), &n), 0);
    assert_int_equal(n, 5);
    assert_int_equal(b64("aA==", out, sizeof(out), &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(b64("", out, sizeof(out), &n), 0);
    assert_int_equal(n, 0);

    assert_int_equal(b64("aGVsbG8=aGVs", out, sizeof(out), &n), -EINVAL); /* after padding */
    assert_int_equal(b64("aG=sbG8=", out, sizeof(out), &n), -EINVAL);     /* '=' inside */
    assert_int_equal(b64("a===", out, sizeof(out), &n), -EINVAL);
    assert_int_equal(b64("aGVsb", out, sizeof(out), &n), -EINVAL); /* a lone final char */
    assert_int_equal(b64("aGV=", out, sizeof(out), &n), 0);
    assert_int_equal(b64("aG=", out, sizeof(out), &n), -EINVAL);      /* incomplete padded quad */
    assert_int_equal(b64("aGVs-G8_", out, sizeof(out), &n), -EINVAL); /* base64url */
    assert_int_equal(b64("aGVs\0"
                         "bG8=",
                         out, sizeof(out), &n),
                     0); /* strlen stops at NUL */
    assert_int_equal(evidence_decode_base64("aGVs\0"
                                            "bG8=",
                                            9, out, sizeof(out), &n),
                     -EINVAL);
    assert_int_equal(b64("aGVsbG8gd29ybGQh", out, 11, &n), -E2BIG);
    assert_int_equal(b64("aGVsbG8gd29ybGQh", out, 12, &n), 0);
}

static void expect(const char *body, size_t len, enum verify_reason reason)
{
    static uint8_t scratch[VERIFY_MAX_INPUT];
    const uint8_t *doc;
    size_t doc_len;
    struct verify_error err = {0};
    int rc = evidence_decode((const uint8_t *)body, len, scratch, &doc, &doc_len, &err);
    if (reason == VERIFY_R_OK) {
        assert_int_equal(rc, 0);
        return;
    }
    if (rc != VERIFY_REJECT || err.reason != reason)
        fail_msg("got %s, want %s", rc == 0 ? "ok" : verify_reason_string(err.reason),
                 verify_reason_string(reason));
}

static void test_envelope_errors(void **state)
{
    (void)state;
    expect("", 0, VERIFY_R_ENVELOPE_EMPTY);
    expect(" \n ", 3, VERIFY_R_ENVELOPE_EMPTY);
    expect("a!!!", 4, VERIFY_R_ENVELOPE_BAD_BASE64);
    expect("aGVs\vbG8=", 9, VERIFY_R_ENVELOPE_BAD_BASE64); /* only space, tab, CR, LF */
    expect("{", 1, VERIFY_R_ENVELOPE_BAD_JSON);
    expect("{} x", 4, VERIFY_R_ENVELOPE_BAD_JSON);
    expect("{\"document\": \"aGVs\", \"document\": \"aGVs\"}", 40, VERIFY_R_ENVELOPE_BAD_JSON);
    expect("{\"doc\": \"aGVs\"}", 15, VERIFY_R_ENVELOPE_JSON_NO_DOCUMENT);
    expect("{\"document\": 5}", 15, VERIFY_R_ENVELOPE_JSON_NO_DOCUMENT);
    expect("{\"document\": \"aGVs\", \"body\": \"aGVs\"}", 36, VERIFY_R_ENVELOPE_JSON_AMBIGUOUS);
    expect("{\"document\": \"a!Vs\"}", 20, VERIFY_R_ENVELOPE_BAD_BASE64);
    expect("{\"document\": \"\"}", 16, VERIFY_R_ENVELOPE_EMPTY);
    expect("{\"body\": \"aGVs\\nbG8=\"}", 22, VERIFY_R_OK); /* JSON-escaped newline */
}

static void test_size_gates(void **state)
{
    static uint8_t body[VERIFY_MAX_ENVELOPE + 1];
    static char text[VERIFY_MAX_ENVELOPE + 1];
    static uint8_t scratch[VERIFY_MAX_INPUT];
    const uint8_t *doc;
    size_t doc_len;
    struct verify_error err;
    (void)state;

    /* Raw CBOR: up to 16 KiB, handed over without a copy. */
    body[0] = 0x84;
    assert_int_equal(evidence_decode(body, VERIFY_MAX_INPUT, scratch, &doc, &doc_len, &err), 0);
    assert_ptr_equal(doc, body);
    assert_int_equal(doc_len, VERIFY_MAX_INPUT);
    assert_int_equal(evidence_decode(body, VERIFY_MAX_INPUT + 1, scratch, &doc, &doc_len, &err),
                     VERIFY_REJECT);
    assert_int_equal(err.reason, VERIFY_R_ENVELOPE_DOC_TOO_LARGE);
    assert_int_equal(evidence_decode(body, sizeof(body), scratch, &doc, &doc_len, &err),
                     VERIFY_REJECT);
    assert_int_equal(err.reason, VERIFY_R_ENVELOPE_TOO_LARGE);

    /* base64 of 16 KiB + 3 bytes: within 64 KiB, but the document is too large. */
    size_t chars = 4 * ((VERIFY_MAX_INPUT + 3) / 3);
    memset(text, 'A', chars);
    expect(text, chars, VERIFY_R_ENVELOPE_DOC_TOO_LARGE);
    chars = 4 * (VERIFY_MAX_INPUT / 3); /* 16383 bytes */
    expect(text, chars, VERIFY_R_OK);

    /* The envelope bound itself: "aGVsbG8=" padded with newlines to exactly 65 536 bytes is
     * decoded; one more newline is refused on its size alone. Base64 and JSON alike. */
    memset(text, '\n', sizeof(text));
    memcpy(text, "aGVsbG8=", 8);
    assert_int_equal(
        evidence_decode((const uint8_t *)text, VERIFY_MAX_ENVELOPE, scratch, &doc, &doc_len, &err),
        0);
    assert_int_equal(doc_len, 5);
    assert_memory_equal(doc, "hello", 5);
    expect(text, VERIFY_MAX_ENVELOPE + 1, VERIFY_R_ENVELOPE_TOO_LARGE);
    memset(text, ' ', sizeof(text));
    memcpy(text, "{\"document\": \"aGVsbG8=\"}", 24);
    assert_int_equal(
        evidence_decode((const uint8_t *)text, VERIFY_MAX_ENVELOPE, scratch, &doc, &doc_len, &err),
        0);
    assert_int_equal(doc_len, 5);
    assert_memory_equal(doc, "hello", 5);
    expect(text, VERIFY_MAX_ENVELOPE + 1, VERIFY_R_ENVELOPE_TOO_LARGE);
}

static void test_real_document_round_trip(void **state)
{
    static uint8_t scratch[VERIFY_MAX_INPUT];
    size_t len, doc_len;
    uint8_t *raw = th_read_vector("real-8.cbor", &len);
    char *text = malloc(4 * ((len + 2) / 3) + 1);
    const uint8_t *doc;
    struct verify_error err;
    (void)state;

    int n = EVP_EncodeBlock((unsigned char *)text, raw, (int)len);
    assert_int_equal(evidence_decode((uint8_t *)text, (size_t)n, scratch, &doc, &doc_len, &err), 0);
    assert_int_equal(doc_len, len);
    assert_memory_equal(doc, raw, len);
    free(text);
    free(raw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sniff),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_envelope_errors),
        cmocka_unit_test(test_size_gates),
        cmocka_unit_test(test_real_document_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
