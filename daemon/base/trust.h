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

#endif
