/*
 * Bindings (BRIEF §4): how an attestation document names the TLS peer it speaks for. A document
 * proves an enclave's code; only the binding proves that *this* TLS connection ends in that
 * enclave. Every mode compares with CRYPTO_memcmp against values derived from the peer
 * certificate of the connection the document was fetched over.
 */
#ifndef ATTESTPROXY_VERIFY_BINDING_H
#define ATTESTPROXY_VERIFY_BINDING_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

#include "base/config.h"
#include "verify/cose.h"
#include "verify/reason.h"

#define BINDING_SPKI_MAX 2048 /* DER SubjectPublicKeyInfo of any sane TLS key */

/* Session-bound evidence (docs/evidence-protocol.md §12): the exporter label and length. */
#define BINDING_SESSION_LABEL "EXPORTER-nitro-attestation-session"
#define BINDING_SESSION_LEN   32

/**
 * Checks that `doc` is bound to `peer` under `mode`:
 *   spki_sha256      user_data == SHA-256(peer SPKI DER)                          (32 bytes);
 *                    with `session` (the connection's 32-byte TLS exporter, session-bound
 *                    evidence): user_data == SHA-256(peer SPKI DER || session)
 *   public_key_spki  public_key == peer SPKI DER
 *   spki_der         user_data == peer SPKI DER
 *   cert_sha256      user_data == SHA-256(peer certificate DER)                   (32 bytes)
 *   nitriding        user_data == 12 20 || SHA-256(cert DER) [|| 12 20 || 32 bytes] (34 or 68)
 *   blindai          user_data == "sha256:" || SHA-256(cert DER) || ";sha256:" || 32 bytes (79)
 *   none             nothing (offline verification only)
 * Returns 0, VERIFY_REJECT with the reason in `err`, or -ENOMEM.
 */
int binding_check(enum binding_mode mode, X509 *peer, const uint8_t *session,
                  const struct nitro_document *doc, struct verify_error *err);

/**
 * The user_data of a session-bound document: SHA-256(SPKI DER of `cert` || `exporter`) — what
 * the enclave puts in (the companion, with its own certificate) and what the client checks
 * (with the peer's). Returns 0, or < 0 when the SPKI cannot be encoded.
 */
int binding_session_digest(X509 *cert, const uint8_t exporter[BINDING_SESSION_LEN],
                           uint8_t out[32]);

/**
 * Writes the DER SubjectPublicKeyInfo of `cert` into `out` (cap bytes). Returns its length, or
 * -E2BIG / -EINVAL.
 */
int binding_spki_der(X509 *cert, uint8_t *out, size_t cap);

/** SHA-256 of the DER SubjectPublicKeyInfo of `cert`: the pin of BRIEF §3. Returns 0 or < 0. */
int binding_spki_sha256(X509 *cert, uint8_t out[32]);

#endif
