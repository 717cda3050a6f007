/*
 * What is trusted, as plain types: the measurement sets and freshness limits of a policy. The
 * configuration (base/config.h) fills them and the verifier (verify/policy.h) applies them, so
 * they live on the floor both stand on.
 */
#ifndef ATTESTPROXY_BASE_TRUST_H
#define ATTESTPROXY_BASE_TRUST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NITRO_PCR_COUNT     32
#define NITRO_PCR_LEN       48
#define POLICY_MAX_SETS     64
#define POLICY_MAX_KEYS     16 /* policy_key entries in [daemon] */
#define POLICY_KEY_NAME_MAX 64
#define POLICY_KEY_LEN      32 /* an Ed25519 public key */

/*
 * One measurement set: the PCRs it names (bit i of `mask` set = PCR i named) and their 48-byte
 * values. A document satisfies the set when every named PCR is present in the document and
 * equal to the value here. A policy holds several sets and a document must satisfy one of them.
 */
struct measurement_set {
    uint32_t mask;
    uint8_t pcr[NITRO_PCR_COUNT][NITRO_PCR_LEN];
};

struct policy {
    struct measurement_set sets[POLICY_MAX_SETS];
    size_t n_sets;      /* 0 only for the offline `verify` command: PCRs are then not compared. */
    bool allow_debug;   /* Accept documents whose PCR0, PCR1 and PCR2 are all zero. */
    int64_t max_age_ms; /* A document older than now - max_age is stale. */
    int64_t skew_ms;    /* Allowance for clock differences, on certificates and timestamps. */
    /* Unix ms after which no document is accepted: the expiry of the policy bundle in force
     * plus policy_expiry_grace. 0 = the policy never expires (inline or policy_file). Not part
     * of policy_digest(): a new bundle with the same sets changes no measurement. */
    int64_t not_after_ms;
};

/* A key trusted to sign policy bundles (policy_key = NAME:KEY in [daemon]). */
struct policy_key {
    char name[POLICY_KEY_NAME_MAX]; /* the signed-note key name */
    uint8_t pub[POLICY_KEY_LEN];    /* Ed25519 public key */
};

/* The policy bundle a service's policy came from (policy_bundle), for logs, the audit log and
 * /attestation. Filled by the daemon after the bundle was accepted. */
struct policy_bundle_info {
    bool in_force; /* false: the policy is inline or from a policy_file */
    bool revoked;  /* a reload removed the key that signed the bundle in force, and no bundle a
                      trusted key signed replaced it: no measurement set is in force */
    uint64_t version;
    int64_t issued_ms, expires_ms;
    uint8_t digest[32];               /* SHA-256 of the bundle file */
    char signer[POLICY_KEY_NAME_MAX]; /* name of the key whose signature was verified */
    uint8_t signer_id[4];             /* its C2SP key id */
};

#endif
