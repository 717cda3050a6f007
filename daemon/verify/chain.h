/*
 * The certificate chain of a Nitro document (BRIEF §2.3, §2.5): `certificate` (the NSM leaf)
 * must chain through `cabundle[n-1] ... cabundle[1]` to `cabundle[0]`, which must be byte-equal
 * to the one pinned root; nothing else is trusted.
 *
 * A full ("cold") verification runs OpenSSL's X509_verify_cert() with an X509_STORE holding only
 * the pinned root (no default paths, no X509_STRICT, no PARTIAL_CHAIN), the intermediates as
 * untrusted certificates, and the check time set explicitly; then checks that OpenSSL built
 * exactly the root-first path the document gave, and applies the Nitro profile on top: P-384
 * keys and ecdsa-with-SHA384 everywhere, critical basicConstraints cA + keyCertSign + pathLen on
 * CAs, and a non-CA leaf with digitalSignature and no pathLen.
 *
 * Intermediates that passed a cold verification are cached (keyed by the SHA-256 of their DER
 * and of their issuer's DER, bounded, honouring validity at each check time). When every
 * intermediate of a document is cached, a "warm" verification checks only the leaf against its
 * cached issuer: one P-384 signature verification. The warm path can only accept; whenever any
 * of its checks fails, the cold path runs and produces the verdict, so both paths give the same
 * reasons.
 *
 * A second cache holds leaf verdicts (CHAIN_LEAF_CACHE_MAX, the oldest evicted first): the NSM
 * leaf certificate of an enclave is reused for hours, and a document whose leaf and cabundle
 * are byte for byte (by SHA-256) a path that a verification accepted, checked at an instant
 * within the validity of every certificate of that path (leaf, intermediates and root, with the
 * skew allowance), gets the same verdict without any certificate signature check: only the
 * COSE signature then remains (verifier.c). A document always needs a chain valid at `now`:
 * past the leaf's notAfter (or any certificate's) the entry is not used and the full path runs.
 * Both caches belong to one `struct chain`, built for one pinned root: a root_ca change builds
 * a new verifier, so no verdict outlives the root it was reached under. The caches make a
 * `struct chain` single-threaded: use one per thread.
 */
#ifndef ATTESTPROXY_VERIFY_CHAIN_H
#define ATTESTPROXY_VERIFY_CHAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

#include "verify/cose.h"
#include "verify/reason.h"

#define CHAIN_CACHE_MAX      32 /* cached intermediates: regional + zonal + instance per host */
#define CHAIN_LEAF_CACHE_MAX 64 /* cached leaf verdicts: one per enclave key in use at a time */

struct chain;

struct chain_stats {
    uint64_t warm;        /* verifications that used a cache (either kind) */
    uint64_t leaf_hits;   /* of those, answered by a cached leaf verdict (no signature check) */
    uint64_t cold;        /* full OpenSSL verifications */
    size_t cached;        /* intermediates in the cache now */
    size_t cached_leaves; /* leaf verdicts in the cache now */
};

/**
 * Loads the trust anchor: the PEM file at `root_pem_path` (exactly one certificate) when
 * non-NULL, otherwise the compiled-in AWS Root-G1, whose SHA-256 must equal the published value.
 * The root must be a self-signed P-384 CA signed with ecdsa-with-SHA384. Returns NULL with a
 * message in `err` on any failure; the daemon then refuses to start.
 */
struct chain *chain_new(const char *root_pem_path, char *err, size_t cap);

/** Frees the root, the store and the cache; NULL is a no-op. */
void chain_free(struct chain *c);

/**
 * Verifies the chain of `doc` at `now_ms` with `skew_ms` of allowance on every certificate's
 * validity window (see docs/attestation.md). On success returns 0, the parsed leaf in `*leaf`
 * (the caller frees it with X509_free) and its validity in `*leaf_not_before_ms` and
 * `*leaf_not_after_ms`. Returns VERIFY_REJECT with the reason in `err`, or -ENOMEM.
 */
int chain_verify(struct chain *c, const struct nitro_document *doc, int64_t now_ms, int64_t skew_ms,
                 X509 **leaf, int64_t *leaf_not_before_ms, int64_t *leaf_not_after_ms,
                 struct verify_error *err);

/** The pinned root's DER (owned by `c`). */
const uint8_t *chain_root_der(const struct chain *c, size_t *len);

void chain_get_stats(const struct chain *c, struct chain_stats *out);

/** Empties both caches (benchmarks measure cold verification with it). */
void chain_clear_cache(struct chain *c);

/** Converts a certificate time to Unix milliseconds. Returns 0 or -EINVAL. */
int chain_time_to_ms(const ASN1_TIME *t, int64_t *ms);

#endif
