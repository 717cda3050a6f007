#include "verify/binding.h"

#include <errno.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define NITRIDING_PREFIX "\x12\x20" /* multihash: sha2-256, 32 bytes */
#define BLINDAI_HEAD     "sha256:"
#define BLINDAI_MID      ";sha256:"

int binding_spki_der(X509 *cert, uint8_t *out, size_t cap)
{
    X509_PUBKEY *pub = X509_get_X509_PUBKEY(cert);
    unsigned char *p = out;
    int len;

    if (pub == NULL)
        return -EINVAL;
    len = i2d_X509_PUBKEY(pub, NULL);
    if (len <= 0)
        return -EINVAL;
    if ((size_t)len > cap)
        return -E2BIG;
    return i2d_X509_PUBKEY(pub, &p) == len ? len : -EINVAL;
}

int binding_spki_sha256(X509 *cert, uint8_t out[32])
{
    uint8_t spki[BINDING_SPKI_MAX];
    unsigned int n = 0;
    int len = binding_spki_der(cert, spki, sizeof(spki));
    if (len < 0)
        return len;
    if (EVP_Digest(spki, (size_t)len, out, &n, EVP_sha256(), NULL) != 1 || n != 32)
        return -ENOMEM;
    return 0;
}

static int cert_sha256(X509 *cert, uint8_t out[32])
{
    unsigned int n = 0;
    /* X509_digest() hashes the certificate's DER encoding as received. */
    if (X509_digest(cert, EVP_sha256(), out, &n) != 1 || n != 32)
        return -ENOMEM;
    return 0;
}

static bool bytes_equal(const struct cose_bytes *b, const uint8_t *want, size_t len)
{
    return b->len == len && CRYPTO_memcmp(b->data, want, len) == 0;
}

static enum verify_reason spki_mismatch_reason(enum binding_mode mode)
{
    if (mode == BINDING_PUBLIC_KEY_SPKI)
        return VERIFY_R_BINDING_PUBLIC_KEY_SPKI;
    if (mode == BINDING_SPKI_DER)
        return VERIFY_R_BINDING_SPKI_DER;
    return VERIFY_R_BINDING_SPKI_SHA256;
}

int binding_session_digest(X509 *cert, const uint8_t exporter[BINDING_SESSION_LEN], uint8_t out[32])
{
    uint8_t spki[BINDING_SPKI_MAX + BINDING_SESSION_LEN];
    unsigned int n = 0;
    int len = binding_spki_der(cert, spki, BINDING_SPKI_MAX);
    if (len < 0)
        return len;
    memcpy(spki + len, exporter, BINDING_SESSION_LEN);
    if (EVP_Digest(spki, (size_t)len + BINDING_SESSION_LEN, out, &n, EVP_sha256(), NULL) != 1 ||
        n != 32)
        return -ENOMEM;
    return 0;
}

/* Session-bound: user_data names the key and this TLS session together. */
static int check_session(X509 *peer, const uint8_t *session, const struct nitro_document *doc,
                         struct verify_error *err)
{
    uint8_t digest[32];
    if (binding_session_digest(peer, session, digest) < 0)
        return verify_error_set(err, VERIFY_R_BINDING_SESSION, NULL);
    if (!doc->has_user_data)
        return verify_error_set(err, VERIFY_R_BINDING_USER_DATA_ABSENT, NULL);
    if (!bytes_equal(&doc->user_data, digest, sizeof(digest)))
        return verify_error_set(err, VERIFY_R_BINDING_SESSION, NULL);
    return 0;
}

/* The modes that put a SubjectPublicKeyInfo (or its hash) in the document. */
static int check_spki(enum binding_mode mode, X509 *peer, const struct nitro_document *doc,
                      struct verify_error *err)
{
    uint8_t spki[BINDING_SPKI_MAX];
    uint8_t digest[32];
    unsigned int n = 0;
    int len = binding_spki_der(peer, spki, sizeof(spki));

    /* A peer key whose SPKI cannot be encoded (or exceeds any sane size) matches nothing. */
    if (len < 0)
        return verify_error_set(err, spki_mismatch_reason(mode), NULL);
    switch (mode) {
    case BINDING_SPKI_SHA256:
        if (!doc->has_user_data)
            return verify_error_set(err, VERIFY_R_BINDING_USER_DATA_ABSENT, NULL);
        if (EVP_Digest(spki, (size_t)len, digest, &n, EVP_sha256(), NULL) != 1 || n != 32)
            return -ENOMEM;
        if (!bytes_equal(&doc->user_data, digest, sizeof(digest)))
            return verify_error_set(err, VERIFY_R_BINDING_SPKI_SHA256, NULL);
        return 0;
    case BINDING_PUBLIC_KEY_SPKI:
        if (!doc->has_public_key)
            return verify_error_set(err, VERIFY_R_BINDING_PUBLIC_KEY_ABSENT, NULL);
        if (!bytes_equal(&doc->public_key, spki, (size_t)len))
            return verify_error_set(err, VERIFY_R_BINDING_PUBLIC_KEY_SPKI, NULL);
        return 0;
    case BINDING_SPKI_DER:
    default:
        if (!doc->has_user_data)
            return verify_error_set(err, VERIFY_R_BINDING_USER_DATA_ABSENT, NULL);
        if (!bytes_equal(&doc->user_data, spki, (size_t)len))
            return verify_error_set(err, VERIFY_R_BINDING_SPKI_DER, NULL);
        return 0;
    }
}

/* The modes that hash the whole peer certificate. */
static int check_cert_hash(enum binding_mode mode, X509 *peer, const struct nitro_document *doc,
                           struct verify_error *err)
{
    uint8_t h[32];
    uint8_t want[sizeof(BLINDAI_HEAD) - 1 + 32 + sizeof(BLINDAI_MID) - 1];
    const struct cose_bytes *ud = &doc->user_data;
    bool ok;

    if (!doc->has_user_data)
        return verify_error_set(err, VERIFY_R_BINDING_USER_DATA_ABSENT, NULL);
    if (cert_sha256(peer, h) < 0)
        return -ENOMEM;

    switch (mode) {
    case BINDING_CERT_SHA256:
        if (!bytes_equal(ud, h, sizeof(h)))
            return verify_error_set(err, VERIFY_R_BINDING_CERT_SHA256, NULL);
        return 0;
    case BINDING_NITRIDING:
        /* 12 20 || h, optionally followed by a second multihash (the enclave's application
         * key) that the proxy does not interpret but whose framing must be right. */
        memcpy(want, NITRIDING_PREFIX, 2);
        memcpy(want + 2, h, 32);
        ok = (ud->len == 34 || ud->len == 68) && CRYPTO_memcmp(ud->data, want, 34) == 0;
        if (ok && ud->len == 68)
            ok = CRYPTO_memcmp(ud->data + 34, NITRIDING_PREFIX, 2) == 0;
        if (!ok)
            return verify_error_set(err, VERIFY_R_BINDING_NITRIDING, NULL);
        return 0;
    case BINDING_BLINDAI:
    default: {
        /* "sha256:" || h || ";sha256:" || 32 bytes (a second hash the proxy does not use). */
        size_t head = sizeof(BLINDAI_HEAD) - 1;
        size_t mid = sizeof(BLINDAI_MID) - 1;
        memcpy(want, BLINDAI_HEAD, head);
        memcpy(want + head, h, 32);
        memcpy(want + head + 32, BLINDAI_MID, mid);
        ok = ud->len == sizeof(want) + 32 && CRYPTO_memcmp(ud->data, want, sizeof(want)) == 0;
        if (!ok)
            return verify_error_set(err, VERIFY_R_BINDING_BLINDAI, NULL);
        return 0;
    }
    }
}

int binding_check(enum binding_mode mode, X509 *peer, const uint8_t *session,
                  const struct nitro_document *doc, struct verify_error *err)
{
    if (mode == BINDING_NONE)
        return 0;
    if (peer == NULL)
        return verify_error_set(err, VERIFY_R_BINDING_NO_PEER, NULL);
    if (session != NULL) /* session-bound evidence binds through spki_sha256 only */
        return mode == BINDING_SPKI_SHA256 ? check_session(peer, session, doc, err)
                                           : verify_error_set(err, VERIFY_R_BINDING_MODE, NULL);
    switch (mode) {
    case BINDING_SPKI_SHA256:
    case BINDING_PUBLIC_KEY_SPKI:
    case BINDING_SPKI_DER:
        return check_spki(mode, peer, doc, err);
    case BINDING_CERT_SHA256:
    case BINDING_NITRIDING:
    case BINDING_BLINDAI:
        return check_cert_hash(mode, peer, doc, err);
    case BINDING_NONE:
    default:
        return verify_error_set(err, VERIFY_R_BINDING_MODE, NULL);
    }
}
