/*
 * The attestation policy: which enclave measurements are trusted, and how fresh a document must
 * be. A policy is immutable once built; a reload builds a new one and swaps the pointer.
 */
#ifndef ATTESTPROXY_VERIFY_POLICY_H
#define ATTESTPROXY_VERIFY_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NITRO_PCR_COUNT 32
#define NITRO_PCR_LEN   48
#define POLICY_MAX_SETS 64

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
};

struct nitro_document;
struct verify_error;

/*
 * What the policy stage needs besides the document: the clock, the nonce we sent (NULL when
 * the profile sends none) and whether measurement sets are compared at all.
 */
struct policy_input {
    int64_t now_ms;
    const uint8_t *nonce;
    size_t nonce_len;
    bool skip_measurements; /* offline `verify` without --pcr only; never in the daemon */
};

/**
 * Checks an authenticated document against `p`, in this order: digest == "SHA384"; timestamp
 * within [now - max_age, now + skew]; nonce equal to ours when we sent one; every PCR 48
 * bytes; PCR0-2 present and, unless allow_debug, not all zero; one measurement set matching
 * (constant-time compares). Returns 0 with the index of the matching set in `*matched_set`
 * (-1 when sets were skipped), or VERIFY_REJECT with the reason in `err`.
 */
int policy_check(const struct policy *p, const struct nitro_document *doc,
                 const struct policy_input *in, int *matched_set, struct verify_error *err);

/** True when PCR0, PCR1 and PCR2 are all present and all zero bytes (a debug-mode enclave). */
bool policy_is_debug(const struct nitro_document *doc);

#endif
