/*
 * The attestation policy: which enclave measurements are trusted, and how fresh a document must
 * be. A policy is immutable once built; a reload builds a new one and swaps the pointer.
 */
#ifndef ATTESTPROXY_VERIFY_POLICY_H
#define ATTESTPROXY_VERIFY_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/trust.h"

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

#define POLICY_DIGEST_LEN 72 /* "sha256:" + 64 hex digits + NUL */

/**
 * SHA-256 over a canonical encoding of the policy (measurement sets, allow_debug, max_age,
 * clock_skew): equal policies give equal digests, and any change to what is trusted changes
 * it. Written as "sha256:<64 hex>" into `out`.
 */
void policy_digest(const struct policy *p, char out[POLICY_DIGEST_LEN]);

/** True when PCR0, PCR1 and PCR2 are all present and all zero bytes (a debug-mode enclave). */
bool policy_is_debug(const struct nitro_document *doc);

#endif
