/*
 * The companion's TLS identity: an EC key generated in memory at start (never written, never
 * exported), a self-signed certificate for it, the server SSL_CTX that presents them, and
 * user_data = SHA-256(SPKI DER), the value every attestation document carries so that a client
 * can tell that the key of its TLS connection is the one the enclave attested
 * (docs/evidence-protocol.md, §4). Trust comes from the document, not from the certificate.
 *
 * Session tickets are off (SSL_OP_NO_TICKET, no TLS 1.3 tickets) and there is no session cache:
 * every connection proves possession of the attested key with a full handshake.
 */
#ifndef ATTESTPROXY_ENCLAVE_IDENTITY_H
#define ATTESTPROXY_ENCLAVE_IDENTITY_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "enclave/enclave_config.h"

struct identity {
    EVP_PKEY *key;
    X509 *cert;
    SSL_CTX *ctx;
    uint8_t user_data[32]; /* SHA-256 of the certificate's SubjectPublicKeyInfo DER */
};

/** Generates the key and certificate and makes the server context. Returns 0 or -1 (err). */
int identity_create(struct identity *id, enum enclave_curve curve, char *err, size_t cap);
void identity_free(struct identity *id);

#endif
