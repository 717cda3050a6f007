#include "enclave/identity.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "proxy/tls.h"
#include "verify/verifier.h"

static X509 *self_signed(EVP_PKEY *key)
{
    X509 *x = X509_new();
    X509_NAME *name;
    uint8_t serial[16];
    BIGNUM *bn = NULL;
    bool ok;

    if (x == NULL)
        return NULL;
    ok = RAND_bytes(serial, sizeof(serial)) == 1 &&
         (bn = BN_bin2bn(serial, sizeof(serial), NULL)) != NULL &&
         BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL && X509_set_version(x, 2) == 1 &&
         X509_gmtime_adj(X509_getm_notBefore(x), -3600) != NULL &&
         X509_gmtime_adj(X509_getm_notAfter(x), 365L * 86400) != NULL &&
         X509_set_pubkey(x, key) == 1 && (name = X509_get_subject_name(x)) != NULL &&
         X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                    (const unsigned char *)"attestproxy-enclave", -1, -1, 0) == 1 &&
         X509_set_issuer_name(x, name) == 1 && X509_sign(x, key, EVP_sha384()) > 0;
    BN_free(bn);
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

int identity_create(struct identity *id, enum enclave_curve curve, char *err, size_t cap)
{
    char e[256];

    memset(id, 0, sizeof(*id));
    id->key = EVP_EC_gen(curve == ENCLAVE_CURVE_P256 ? "P-256" : "P-384");
    if (id->key == NULL) {
        snprintf(err, cap, "cannot generate the TLS key: %s", tls_error_string(e, sizeof(e)));
        goto fail;
    }
    id->cert = self_signed(id->key);
    if (id->cert == NULL) {
        snprintf(err, cap, "cannot make the certificate: %s", tls_error_string(e, sizeof(e)));
        goto fail;
    }
    if (verifier_spki_pin(id->cert, id->user_data) != 0) {
        snprintf(err, cap, "cannot hash the SubjectPublicKeyInfo");
        goto fail;
    }
    id->ctx = SSL_CTX_new(TLS_server_method());
    if (id->ctx == NULL || SSL_CTX_set_min_proto_version(id->ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_use_certificate(id->ctx, id->cert) != 1 ||
        SSL_CTX_use_PrivateKey(id->ctx, id->key) != 1 || SSL_CTX_check_private_key(id->ctx) != 1) {
        snprintf(err, cap, "cannot make the TLS context: %s", tls_error_string(e, sizeof(e)));
        goto fail;
    }
    /* No resumption at all: a ticket or cached session would let a handshake succeed without
     * the attested key (docs/evidence-protocol.md, §2). No renegotiation: the key of a
     * connection is the one of its only handshake. */
    SSL_CTX_set_options(id->ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_num_tickets(id->ctx, 0);
    SSL_CTX_set_session_cache_mode(id->ctx, SSL_SESS_CACHE_OFF);
    return 0;
fail:
    identity_free(id);
    return -1;
}

void identity_free(struct identity *id)
{
    SSL_CTX_free(id->ctx);
    X509_free(id->cert);
    EVP_PKEY_free(id->key);
    memset(id, 0, sizeof(*id));
}
