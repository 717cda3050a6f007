/*
 * COSE_Sign1 and the Nitro attestation payload (BRIEF §2.3): strict decoding of the document
 * bytes into a `struct nitro_document`, and the ES384 signature check over the Sig_structure.
 *
 * Decoding uses libcbor's streaming decoder (cbor_stream_decode), which reads one item header
 * at a time from the caller's buffer and never allocates. The parser above it is driven by the
 * document's fixed schema: it descends only into the structures it expects (the COSE array,
 * the payload map, `pcrs`, `cabundle`) and rejects anything else on sight instead of skipping
 * it, so there is no generic recursion and no input-controlled allocation at all. Every
 * `struct cose_bytes` in the result points into the caller's buffer, which must outlive it.
 */
#ifndef ATTESTPROXY_VERIFY_COSE_H
#define ATTESTPROXY_VERIFY_COSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "verify/policy.h"
#include "verify/reason.h"
#include "verify/verifier.h"

#define COSE_PROTECTED_ES384 "\xa1\x01\x38\x22" /* {1: -35}, the only protected header */
#define COSE_PROTECTED_LEN   4
#define COSE_MAX_PAYLOAD     16384
#define COSE_SIGNATURE_LEN   96   /* raw r || s, 48 bytes each */
#define NITRO_MAX_CABUNDLE   8    /* AWS chains hold 4; room for a deeper future chain */
#define NITRO_MAX_CERT       1024 /* DER bytes per certificate */
#define NITRO_MAX_OPTIONAL   1024 /* public_key, user_data, nonce (real-8/9 carry 1024) */
#define NITRO_MAX_DIGEST     64   /* the digest name; policy then requires "SHA384" */

/* A byte range inside the decoded document. */
struct cose_bytes {
    const uint8_t *data;
    size_t len;
};

struct nitro_document {
    /* COSE_Sign1. */
    bool tagged; /* wrapped in tag 18 */
    struct cose_bytes protected_hdr;
    struct cose_bytes payload;
    struct cose_bytes signature;

    /* Payload fields. */
    char module_id[VERIFY_MODULE_ID_MAX]; /* printable ASCII, NUL-terminated */
    struct cose_bytes digest;             /* text, not NUL-terminated */
    uint64_t timestamp_ms;
    uint32_t pcr_mask; /* bit i set: PCR i present */
    struct cose_bytes pcrs[NITRO_PCR_COUNT];
    struct cose_bytes certificate;
    struct cose_bytes cabundle[NITRO_MAX_CABUNDLE]; /* root first */
    size_t n_cabundle;
    /* Optional fields: has_* is false when the key is absent or null. */
    bool has_public_key, has_user_data, has_nonce;
    struct cose_bytes public_key, user_data, nonce;
};

/**
 * Decodes the COSE_Sign1 structure of `buf` (untagged or tag 18; exactly 4 elements; protected
 * header exactly a1 01 38 22; empty unprotected map; payload 1..16384 bytes; 96-byte signature;
 * no trailing bytes) into the COSE fields of `doc`. Returns 0 or VERIFY_REJECT (reason in err).
 */
int cose_decode_sign1(const uint8_t *buf, size_t len, struct nitro_document *doc,
                      struct verify_error *err);

/**
 * Decodes `doc->payload` into the payload fields of `doc`: the 9 known keys only, no duplicates,
 * definite or indefinite maps, types and sizes per tests/vectors/nitro/README.md, null only
 * for public_key, user_data and nonce. Returns 0 or VERIFY_REJECT.
 */
int cose_decode_payload(struct nitro_document *doc, struct verify_error *err);

/** cose_decode_sign1() followed by cose_decode_payload(); `doc` is zeroed first. */
int cose_decode_document(const uint8_t *buf, size_t len, struct nitro_document *doc,
                         struct verify_error *err);

/**
 * Checks the ES384 signature of `doc` with `key` (the leaf certificate's P-384 key): SHA-384 over
 * ["Signature1", protected as received, h'', payload], the raw 96-byte r||s converted to an
 * ECDSA_SIG. High-S signatures are accepted, as plain ECDSA does. `sha384` may be a prefetched
 * SHA-384 EVP_MD or NULL. Returns 0, VERIFY_REJECT or -ENOMEM.
 */
int cose_verify_signature(const struct nitro_document *doc, EVP_PKEY *key, EVP_MD *sha384,
                          struct verify_error *err);

#endif
