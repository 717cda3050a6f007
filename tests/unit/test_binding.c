/*
 * Bindings (daemon/verify/binding.c): for every mode of BRIEF §4, the document built the way
 * the mode prescribes is accepted for its peer certificate and refused for another one, and
 * malformed framings are refused with the mode's reason.
 */
#include "verify_helpers.h"

#include "verify/binding.h"

struct peers {
    EVP_PKEY *key;
    X509 *cert;
    X509 *other; /* a second certificate for the same key: same SPKI, different DER */
    X509 *stranger;
    EVP_PKEY *stranger_key;
    X509 *twin; /* another P-256 key under the same name: same type, same SPKI length */
    EVP_PKEY *twin_key;
};

static int setup(void **state)
{
    struct peers *p = calloc(1, sizeof(*p));
    struct th_cert_opts o = th_leaf_opts(time(NULL));
    assert_non_null(p);
    p->key = th_key("P-256");
    p->cert = th_cert("enclave.test", p->key, NULL, p->key, &o);
    p->other = th_cert("enclave.test", p->key, NULL, p->key, &o);
    p->stranger_key = th_key("P-384");
    p->stranger = th_cert("stranger.test", p->stranger_key, NULL, p->stranger_key, &o);
    p->twin_key = th_key("P-256");
    p->twin = th_cert("enclave.test", p->twin_key, NULL, p->twin_key, &o);
    *state = p;
    return 0;
}

static int teardown(void **state)
{
    struct peers *p = *state;
    X509_free(p->cert);
    X509_free(p->other);
    X509_free(p->stranger);
    X509_free(p->twin);
    EVP_PKEY_free(p->key);
    EVP_PKEY_free(p->stranger_key);
    EVP_PKEY_free(p->twin_key);
    free(p);
    return 0;
}

static size_t spki(X509 *x, uint8_t *out)
{
    int n = binding_spki_der(x, out, BINDING_SPKI_MAX);
    assert_true(n > 0);
    return (size_t)n;
}

static void sha256_of(const uint8_t *p, size_t n, uint8_t out[32])
{
    unsigned int len;
    assert_int_equal(EVP_Digest(p, n, out, &len, EVP_sha256(), NULL), 1);
}

static void cert_hash(X509 *x, uint8_t out[32])
{
    unsigned int len;
    assert_int_equal(X509_digest(x, EVP_sha256(), out, &len), 1);
}

static struct nitro_document doc_with(const uint8_t *ud, size_t ud_len, const uint8_t *pk,
                                      size_t pk_len)
{
    struct nitro_document d;
    memset(&d, 0, sizeof(d));
    if (ud != NULL) {
        d.has_user_data = true;
        d.user_data = (struct cose_bytes){ud, ud_len};
    }
    if (pk != NULL) {
        d.has_public_key = true;
        d.public_key = (struct cose_bytes){pk, pk_len};
    }
    return d;
}

static void expect_session(enum binding_mode mode, X509 *peer, const uint8_t *session,
                           const struct nitro_document *d, enum verify_reason reason)
{
    struct verify_error err = {0};
    int rc = binding_check(mode, peer, session, d, &err);
    if (reason == VERIFY_R_OK) {
        if (rc != 0)
            fail_msg("mode %d rejected: %s", mode, verify_reason_string(err.reason));
        return;
    }
    if (rc != VERIFY_REJECT || err.reason != reason)
        fail_msg("mode %d: got %s, want %s", mode,
                 rc == 0 ? "accepted" : verify_reason_string(err.reason),
                 verify_reason_string(reason));
}

static void expect(enum binding_mode mode, X509 *peer, const struct nitro_document *d,
                   enum verify_reason reason)
{
    expect_session(mode, peer, NULL, d, reason);
}

/* Session-bound evidence: user_data = SHA-256(SPKI DER || exporter), computed here by hand. A
 * plain spki_sha256 document (what any native request yields, whatever its nonce) is refused,
 * as are another session's and another key's; only spki_sha256 binds a session. */
static void test_session_binding(void **state)
{
    struct peers *p = *state;
    uint8_t der[BINDING_SPKI_MAX + 32], plain[32], bound[32], via_api[32];
    uint8_t session[32], other_session[32];
    size_t n = spki(p->cert, der);
    struct nitro_document d;

    memset(session, 0x5e, sizeof(session));
    memset(other_session, 0x5e, sizeof(other_session));
    other_session[31] ^= 1;
    sha256_of(der, n, plain);
    memcpy(der + n, session, 32);
    sha256_of(der, n + 32, bound);
    assert_int_equal(binding_session_digest(p->cert, session, via_api), 0);
    assert_memory_equal(via_api, bound, 32);

    d = doc_with(bound, 32, NULL, 0);
    expect_session(BINDING_SPKI_SHA256, p->cert, session, &d, VERIFY_R_OK);
    expect_session(BINDING_SPKI_SHA256, p->other, session, &d, VERIFY_R_OK); /* same key */
    expect_session(BINDING_SPKI_SHA256, p->cert, other_session, &d, VERIFY_R_BINDING_SESSION);
    expect_session(BINDING_SPKI_SHA256, p->stranger, session, &d, VERIFY_R_BINDING_SESSION);
    expect_session(BINDING_SPKI_DER, p->cert, session, &d, VERIFY_R_BINDING_MODE);
    d = doc_with(plain, 32, NULL, 0);
    expect_session(BINDING_SPKI_SHA256, p->cert, session, &d, VERIFY_R_BINDING_SESSION);
    expect(BINDING_SPKI_SHA256, p->cert, &d, VERIFY_R_OK);
    d = doc_with(NULL, 0, NULL, 0);
    expect_session(BINDING_SPKI_SHA256, p->cert, session, &d, VERIFY_R_BINDING_USER_DATA_ABSENT);
}

static void test_spki_modes(void **state)
{
    struct peers *p = *state;
    uint8_t der[BINDING_SPKI_MAX];
    uint8_t h[32];
    uint8_t pin[32];
    size_t n = spki(p->cert, der);
    struct nitro_document d;

    sha256_of(der, n, h);
    assert_int_equal(binding_spki_sha256(p->cert, pin), 0);
    assert_memory_equal(pin, h, 32);

    d = doc_with(h, 32, NULL, 0);
    expect(BINDING_SPKI_SHA256, p->cert, &d, VERIFY_R_OK);
    expect(BINDING_SPKI_SHA256, p->other, &d, VERIFY_R_OK); /* re-issued cert, same key */
    expect(BINDING_SPKI_SHA256, p->stranger, &d, VERIFY_R_BINDING_SPKI_SHA256);
    d = doc_with(h, 31, NULL, 0);
    expect(BINDING_SPKI_SHA256, p->cert, &d, VERIFY_R_BINDING_SPKI_SHA256);
    d = doc_with(NULL, 0, h, 32);
    expect(BINDING_SPKI_SHA256, p->cert, &d, VERIFY_R_BINDING_USER_DATA_ABSENT);

    d = doc_with(NULL, 0, der, n);
    expect(BINDING_PUBLIC_KEY_SPKI, p->cert, &d, VERIFY_R_OK);
    expect(BINDING_PUBLIC_KEY_SPKI, p->stranger, &d, VERIFY_R_BINDING_PUBLIC_KEY_SPKI);
    d = doc_with(der, n, NULL, 0);
    expect(BINDING_PUBLIC_KEY_SPKI, p->cert, &d, VERIFY_R_BINDING_PUBLIC_KEY_ABSENT);

    d = doc_with(der, n, NULL, 0);
    expect(BINDING_SPKI_DER, p->cert, &d, VERIFY_R_OK);
    expect(BINDING_SPKI_DER, p->stranger, &d, VERIFY_R_BINDING_SPKI_DER);
    d = doc_with(der, n - 1, NULL, 0);
    expect(BINDING_SPKI_DER, p->cert, &d, VERIFY_R_BINDING_SPKI_DER);
    d = doc_with(NULL, 0, NULL, 0);
    expect(BINDING_SPKI_DER, p->cert, &d, VERIFY_R_BINDING_USER_DATA_ABSENT);
}

static void test_cert_hash_modes(void **state)
{
    struct peers *p = *state;
    uint8_t h[32];
    uint8_t ud[128];
    struct nitro_document d;

    cert_hash(p->cert, h);
    d = doc_with(h, 32, NULL, 0);
    expect(BINDING_CERT_SHA256, p->cert, &d, VERIFY_R_OK);
    /* The certificate, not the key: a re-issued certificate is a different binding. */
    expect(BINDING_CERT_SHA256, p->other, &d, VERIFY_R_BINDING_CERT_SHA256);

    /* nitriding: 12 20 || h, optionally || 12 20 || 32 bytes. */
    memcpy(ud, "\x12\x20", 2);
    memcpy(ud + 2, h, 32);
    d = doc_with(ud, 34, NULL, 0);
    expect(BINDING_NITRIDING, p->cert, &d, VERIFY_R_OK);
    expect(BINDING_NITRIDING, p->other, &d, VERIFY_R_BINDING_NITRIDING);
    memcpy(ud + 34, "\x12\x20", 2);
    memset(ud + 36, 0x5a, 32);
    d = doc_with(ud, 68, NULL, 0);
    expect(BINDING_NITRIDING, p->cert, &d, VERIFY_R_OK);
    ud[35] = 0x21; /* second multihash framed wrongly */
    expect(BINDING_NITRIDING, p->cert, &d, VERIFY_R_BINDING_NITRIDING);
    ud[35] = 0x20;
    d = doc_with(ud, 67, NULL, 0);
    expect(BINDING_NITRIDING, p->cert, &d, VERIFY_R_BINDING_NITRIDING);
    d = doc_with(ud, 35, NULL, 0);
    expect(BINDING_NITRIDING, p->cert, &d, VERIFY_R_BINDING_NITRIDING);
    ud[0] = 0x13;
    d = doc_with(ud, 34, NULL, 0);
    expect(BINDING_NITRIDING, p->cert, &d, VERIFY_R_BINDING_NITRIDING);

    /* blindai: "sha256:" || h || ";sha256:" || 32 bytes. */
    memcpy(ud, "sha256:", 7);
    memcpy(ud + 7, h, 32);
    memcpy(ud + 39, ";sha256:", 8);
    memset(ud + 47, 0, 32);
    d = doc_with(ud, 79, NULL, 0);
    expect(BINDING_BLINDAI, p->cert, &d, VERIFY_R_OK);
    expect(BINDING_BLINDAI, p->other, &d, VERIFY_R_BINDING_BLINDAI);
    d = doc_with(ud, 78, NULL, 0);
    expect(BINDING_BLINDAI, p->cert, &d, VERIFY_R_BINDING_BLINDAI);
    ud[40] = 'S';
    d = doc_with(ud, 79, NULL, 0);
    expect(BINDING_BLINDAI, p->cert, &d, VERIFY_R_BINDING_BLINDAI);
    d = doc_with(NULL, 0, NULL, 0);
    expect(BINDING_BLINDAI, p->cert, &d, VERIFY_R_BINDING_USER_DATA_ABSENT);
}

/*
 * Values that differ from the right one only in their last byte, or that come from a key of the
 * same type and size: a compare that stops one byte short, or that checks lengths and the
 * (shared) algorithm prefix of the SPKI, accepts them.
 */
static void test_spki_modes_last_byte_and_twin_key(void **state)
{
    struct peers *p = *state;
    uint8_t der[BINDING_SPKI_MAX];
    uint8_t twin_der[BINDING_SPKI_MAX];
    uint8_t h[32];
    size_t n = spki(p->cert, der);
    size_t twin_n = spki(p->twin, twin_der);
    struct nitro_document d;

    /* The twin key really is the same type and size, and its SPKI shares a long prefix. */
    assert_int_equal(twin_n, n);
    assert_memory_equal(twin_der, der, 26);
    assert_memory_not_equal(twin_der, der, n);

    sha256_of(der, n, h);
    h[31] ^= 0x01;
    d = doc_with(h, 32, NULL, 0);
    expect(BINDING_SPKI_SHA256, p->cert, &d, VERIFY_R_BINDING_SPKI_SHA256);
    h[31] ^= 0x01;
    d = doc_with(h, 32, NULL, 0);
    expect(BINDING_SPKI_SHA256, p->cert, &d, VERIFY_R_OK);
    expect(BINDING_SPKI_SHA256, p->twin, &d, VERIFY_R_BINDING_SPKI_SHA256);

    der[n - 1] ^= 0x01;
    d = doc_with(NULL, 0, der, n);
    expect(BINDING_PUBLIC_KEY_SPKI, p->cert, &d, VERIFY_R_BINDING_PUBLIC_KEY_SPKI);
    d = doc_with(der, n, NULL, 0);
    expect(BINDING_SPKI_DER, p->cert, &d, VERIFY_R_BINDING_SPKI_DER);
    der[n - 1] ^= 0x01;
    d = doc_with(NULL, 0, der, n);
    expect(BINDING_PUBLIC_KEY_SPKI, p->cert, &d, VERIFY_R_OK);
    expect(BINDING_PUBLIC_KEY_SPKI, p->twin, &d, VERIFY_R_BINDING_PUBLIC_KEY_SPKI);
    d = doc_with(der, n, NULL, 0);
    expect(BINDING_SPKI_DER, p->cert, &d, VERIFY_R_OK);
    expect(BINDING_SPKI_DER, p->twin, &d, VERIFY_R_BINDING_SPKI_DER);
}

static void test_cert_hash_modes_last_byte(void **state)
{
    struct peers *p = *state;
    uint8_t h[32];
    uint8_t ud[128];
    struct nitro_document d;

    cert_hash(p->cert, h);
    h[31] ^= 0x01;
    d = doc_with(h, 32, NULL, 0);
    expect(BINDING_CERT_SHA256, p->cert, &d, VERIFY_R_BINDING_CERT_SHA256);
    h[31] ^= 0x01;
    d = doc_with(h, 32, NULL, 0);
    expect(BINDING_CERT_SHA256, p->twin, &d, VERIFY_R_BINDING_CERT_SHA256);

    /* nitriding, 34 bytes: the last byte is the hash's last byte. */
    memcpy(ud, "\x12\x20", 2);
    memcpy(ud + 2, h, 32);
    ud[33] ^= 0x01;
    d = doc_with(ud, 34, NULL, 0);
    expect(BINDING_NITRIDING, p->cert, &d, VERIFY_R_BINDING_NITRIDING);
    ud[33] ^= 0x01;
    expect(BINDING_NITRIDING, p->twin, &d, VERIFY_R_BINDING_NITRIDING);
    /* nitriding, 68 bytes: the certificate hash's last byte (33) is checked; the last byte of
     * the whole (67) belongs to the application key hash, which is not interpreted. */
    memcpy(ud + 34, "\x12\x20", 2);
    memset(ud + 36, 0x5a, 32);
    ud[33] ^= 0x01;
    d = doc_with(ud, 68, NULL, 0);
    expect(BINDING_NITRIDING, p->cert, &d, VERIFY_R_BINDING_NITRIDING);
    ud[33] ^= 0x01;
    ud[67] ^= 0x01;
    expect(BINDING_NITRIDING, p->cert, &d, VERIFY_R_OK);
    ud[67] ^= 0x01;
    d = doc_with(ud, 69, NULL, 0);
    expect(BINDING_NITRIDING, p->cert, &d, VERIFY_R_BINDING_NITRIDING);

    /* blindai: the last byte of the hash (38) and of ";sha256:" (46) are checked; the last
     * byte of the whole (78) belongs to the uninterpreted second hash. */
    memcpy(ud, "sha256:", 7);
    memcpy(ud + 7, h, 32);
    memcpy(ud + 39, ";sha256:", 8);
    memset(ud + 47, 0, 33);
    d = doc_with(ud, 79, NULL, 0);
    expect(BINDING_BLINDAI, p->cert, &d, VERIFY_R_OK);
    expect(BINDING_BLINDAI, p->twin, &d, VERIFY_R_BINDING_BLINDAI);
    ud[38] ^= 0x01;
    expect(BINDING_BLINDAI, p->cert, &d, VERIFY_R_BINDING_BLINDAI);
    ud[38] ^= 0x01;
    ud[46] = ';';
    expect(BINDING_BLINDAI, p->cert, &d, VERIFY_R_BINDING_BLINDAI);
    ud[46] = ':';
    ud[78] ^= 0x01;
    expect(BINDING_BLINDAI, p->cert, &d, VERIFY_R_OK);
    ud[78] ^= 0x01;
    /* One byte too long (80 bytes, the extra byte zero) is refused. */
    d = doc_with(ud, 80, NULL, 0);
    expect(BINDING_BLINDAI, p->cert, &d, VERIFY_R_BINDING_BLINDAI);
}

static void test_modes_and_peers(void **state)
{
    struct peers *p = *state;
    struct nitro_document d = doc_with(NULL, 0, NULL, 0);
    expect(BINDING_NONE, NULL, &d, VERIFY_R_OK);
    expect(BINDING_SPKI_SHA256, NULL, &d, VERIFY_R_BINDING_NO_PEER);
    expect((enum binding_mode)99, p->cert, &d, VERIFY_R_BINDING_MODE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spki_modes),
        cmocka_unit_test(test_session_binding),
        cmocka_unit_test(test_cert_hash_modes),
        cmocka_unit_test(test_spki_modes_last_byte_and_twin_key),
        cmocka_unit_test(test_cert_hash_modes_last_byte),
        cmocka_unit_test(test_modes_and_peers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
