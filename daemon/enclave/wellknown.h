/*
 * The evidence endpoint of the native profile (docs/evidence-protocol.md, §3):
 *   GET /.well-known/nitro-attestation?nonce=<64 lowercase hex digits>
 * and of its session-bound form (§12), whose document nonce the connection derives:
 *   GET /.well-known/nitro-attestation?session_nonce=<64 lowercase hex digits>
 * Pure functions: recognising the request target and writing the response head.
 */
#ifndef ATTESTPROXY_ENCLAVE_WELLKNOWN_H
#define ATTESTPROXY_ENCLAVE_WELLKNOWN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WELLKNOWN_PATH      "/.well-known/nitro-attestation"
#define WELLKNOWN_NONCE_LEN 32

enum wellknown_target {
    WELLKNOWN_OTHER = 0, /* not the evidence path: relayed to the application */
    WELLKNOWN_NONCE,     /* the evidence path with a valid nonce, decoded into nonce[] */
    WELLKNOWN_SESSION,   /* the same with session_nonce=: the document's user_data also names
                            the TLS session (binding_session_digest()) */
    WELLKNOWN_BAD_NONCE, /* the evidence path with anything else for a query: 400 */
};

/**
 * Classifies a request target (not NUL-terminated). The query must be exactly "nonce=" (or
 * "session_nonce=") and 64 lowercase hex digits: no other parameter, no uppercase, no other
 * length. The nonce is never replaced by another one.
 */
enum wellknown_target wellknown_parse(const char *target, size_t len,
                                      uint8_t nonce[WELLKNOWN_NONCE_LEN]);

/** Writes the head of the 200 response for a document of `len` bytes (raw CBOR). Returns its
 *  length or -ENOSPC. */
int wellknown_response_head(size_t len, bool close, char *out, size_t cap);

#endif
