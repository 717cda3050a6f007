/*
 * The Nitro attestation verifier: evidence bytes in, one verdict out.
 *
 * verifier_verify() runs every check of BRIEF §2.3–§2.4 in order — size gate, envelope sniffing,
 * strict CBOR/COSE_Sign1, payload, certificate chain to the pinned root, ES384 signature, policy
 * (digest, freshness, nonce, PCRs, debug mode) and the binding to the TLS peer — and stops at the
 * first failure with one named reason. It never returns a partially verified result: on
 * rejection the summary is zeroed except for what is needed to log the failure.
 *
 * The verifier is synchronous and CPU-bound (one P-384 verify for the document plus chain work,
 * most of it cached); it allocates within a fixed budget per call and keeps a bounded cache of
 * verified intermediate certificates keyed by DER hash. Because of that cache a verifier is not
 * thread-safe: use it from one thread (the loop), or one verifier per thread.
 *
 * The checks, their order, every reason string and the decisions behind them are documented in
 * docs/attestation.md.
 */
#ifndef ATTESTPROXY_VERIFY_VERIFIER_H
#define ATTESTPROXY_VERIFY_VERIFIER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

#include "base/config.h"
#include "verify/policy.h"
#include "verify/reason.h" /* enum verify_stage, enum verify_reason and their strings */

#define VERIFY_MAX_INPUT     (16 * 1024) /* size gate on the decoded document */
#define VERIFY_MAX_ENVELOPE  (64 * 1024) /* size gate on an evidence HTTP body (base64/JSON) */
#define VERIFY_MODULE_ID_MAX 128
#define VERIFY_REASON_MAX    160

/* What the caller asks for. Pointers are borrowed for the duration of the call. */
struct verify_request {
    const struct policy *policy;
    int64_t now_ms;       /* wall-clock time of the check, Unix ms: the injectable clock */
    const uint8_t *nonce; /* the nonce we sent, or NULL when the profile sends none */
    size_t nonce_len;
    enum binding_mode binding; /* BINDING_NONE only for offline verification */
    X509 *peer_cert;           /* the TLS peer's leaf certificate; required unless BINDING_NONE */
    const uint8_t *session_exporter; /* session-bound evidence: the connection's 32-byte TLS
                                      * exporter, bound into user_data (binding.h); else NULL */
    bool skip_measurements;          /* offline `verify` without --pcr only: PCR sets not compared.
                                      * Otherwise a policy without sets is a rejection
                                      * ("policy: no measurement sets configured"), never a pass. */
};

/* The verified facts, filled on acceptance (and module_id/pcr0/timestamp on policy failures,
 * for the log line). */
struct verify_summary {
    char module_id[VERIFY_MODULE_ID_MAX];
    int64_t timestamp_ms;
    uint32_t pcr_mask; /* which PCRs the document carries */
    uint8_t pcrs[NITRO_PCR_COUNT][NITRO_PCR_LEN];
    bool debug_mode;            /* PCR0, PCR1, PCR2 all zero */
    int64_t leaf_not_after_ms;  /* expiry of the NSM leaf certificate */
    int matched_set;            /* index of the measurement set, -1 if none compared */
    int64_t leaf_not_before_ms; /* issue time of the NSM leaf certificate */
};

struct verify_result {
    bool accepted;
    enum verify_stage stage;
    char reason[VERIFY_REASON_MAX]; /* e.g. "policy: pcrs match no measurement set (pcr0)" */
    struct verify_summary summary;
    enum verify_reason reason_code; /* VERIFY_R_OK on acceptance; label metrics with
                                     * verify_reason_name(reason_code) */
};

/* Counters of one verifier, for metrics and benchmarks. */
struct verifier_stats {
    uint64_t accepted;
    uint64_t rejected;
    uint64_t chain_warm;      /* chain checks served by a cache (at most one P-384 verify) */
    uint64_t chain_leaf_hits; /* of those, by a cached leaf verdict (no signature checked) */
    uint64_t chain_cold;      /* full OpenSSL chain verifications */
    size_t cached_certs;      /* intermediates in the cache now (at most CHAIN_CACHE_MAX) */
    size_t cached_leaves;     /* leaf verdicts in the cache now (at most CHAIN_LEAF_CACHE_MAX) */
};

struct verifier;

/**
 * Creates a verifier trusting exactly one root: `root_pem_path` when non-NULL, otherwise the
 * compiled-in AWS Nitro Enclaves Root-G1. Returns NULL (and writes a message into err) when the
 * root cannot be loaded; the daemon then exits. The verifier owns its root and cache; free it with
 * verifier_free().
 */
struct verifier *verifier_new(const char *root_pem_path, char *err, size_t cap);
void verifier_free(struct verifier *v);

/**
 * Verifies evidence `body` (raw COSE, base64 or JSON envelope, sniffed per BRIEF §4) against
 * `req`. Returns 0 and fills `res` in every case a verdict was reached (accepted or not); returns
 * a negative errno only for internal failures (allocation), which callers treat as rejection.
 */
int verifier_verify(struct verifier *v, const struct verify_request *req, const uint8_t *body,
                    size_t len, struct verify_result *res);

/** True when `a` and `b` trust the same root certificate (byte for byte). */
bool verifier_same_root(const struct verifier *a, const struct verifier *b);

/** SHA-256 of the certificate's SubjectPublicKeyInfo DER: the pin of BRIEF §3. */
int verifier_spki_pin(X509 *cert, uint8_t out[32]);

/** Copies the verifier's counters. */
void verifier_get_stats(const struct verifier *v, struct verifier_stats *out);

/**
 * Drops every cached intermediate certificate. Nothing requires it for correctness (entries are
 * re-checked for validity at each use); benchmarks use it to measure cold verification.
 */
void verifier_clear_cache(struct verifier *v);

#endif
