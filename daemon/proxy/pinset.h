/*
 * The attested key set of one service (BRIEF §3): the pins whose attestation succeeded, each
 * with the facts that were verified and an expiry, plus a short negative cache of pins whose
 * attestation failed.
 *
 * A pin is SHA-256 over the peer's SubjectPublicKeyInfo DER, or over the certificate DER for
 * the bindings that hash the certificate (cert_sha256, nitriding, blindai).
 *
 * Freshness is decided on the monotonic clock (uv_now), so that a wall-clock step can neither
 * extend nor cut a pin's life; wall-clock values are kept for display (/attestation) only.
 * The set is bounded (PINSET_MAX): adding to a full set evicts the entry that expires first.
 * Pure data structure, no I/O: tests drive it with any clock values.
 */
#ifndef ATTESTPROXY_PROXY_PINSET_H
#define ATTESTPROXY_PROXY_PINSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "verify/policy.h"
#include "verify/verifier.h"

#define PIN_LEN             32
#define PINSET_MAX          64
#define PINSET_NEGATIVE_MAX 64
#define PIN_HEX_LEN         (2 * PIN_LEN)

/* What the verifier established about one pin, plus when it stops being trusted. */
struct pin_info {
    char module_id[VERIFY_MODULE_ID_MAX];
    uint32_t pcr_mask;
    uint8_t pcrs[NITRO_PCR_COUNT][NITRO_PCR_LEN];
    bool debug_mode;
    int64_t document_time_ms;  /* wall clock, from the document */
    int64_t leaf_not_after_ms; /* wall clock, NSM leaf certificate */
    int64_t verified_at_ms;    /* wall clock */
    int64_t expires_at_ms;     /* wall clock, for display */
};

struct pin_entry {
    uint8_t pin[PIN_LEN];
    uint64_t expires_mono_ms; /* fresh while now < expires_mono_ms */
    /* Proactive refresh (core of BRIEF §3): a refresh of this pin is running, and a refresh
     * that could not obtain evidence is not retried before refresh_not_before_mono_ms. */
    bool refreshing;
    uint64_t refresh_not_before_mono_ms;
    struct pin_info info;
    uint64_t serial; /* new whenever `info` is written (pinset_add): copies of it compare it */
};

struct pin_negative {
    uint8_t pin[PIN_LEN];
    uint64_t until_mono_ms;
};

/* The most recent failed attestation, for /attestation. */
struct pin_failure {
    bool set;
    int64_t at_ms;   /* wall clock */
    bool rejected;   /* true: the verifier said no; false: no evidence could be obtained */
    char reason[64]; /* metric label: verify_reason_name() or the proxy's own name */
    char message[VERIFY_REASON_MAX + 96];
    bool has_pin;
    uint8_t pin[PIN_LEN];
};

struct pinset {
    struct pin_entry entries[PINSET_MAX];
    size_t n;
    struct pin_negative negatives[PINSET_NEGATIVE_MAX];
    size_t n_negative;
    struct pin_failure last_failure;
    uint64_t last_serial;
};

enum pin_status {
    PIN_FRESH = 0, /* attested and not expired: the connection may carry requests */
    PIN_UNKNOWN,   /* never attested (or dropped): attest over this connection */
    PIN_EXPIRED,   /* was attested, has expired: re-attest over this connection */
    PIN_NEGATIVE,  /* attestation failed recently: refuse until the negative entry lapses */
};

void pinset_init(struct pinset *ps);

/** Looks `pin` up at monotonic time `now`. For PIN_NEGATIVE, `*retry_after_ms` (optional) is
 *  the time left on the negative entry. A fresh entry wins over a negative one. */
enum pin_status pinset_lookup(const struct pinset *ps, const uint8_t pin[PIN_LEN], uint64_t now,
                              uint64_t *retry_after_ms);

/** pinset_lookup() for a request: the same status, and for PIN_FRESH the entry in `*fresh`,
 *  found with one pass over the set. */
enum pin_status pinset_lookup_fresh(const struct pinset *ps, const uint8_t pin[PIN_LEN],
                                    uint64_t now, uint64_t *retry_after_ms,
                                    const struct pin_entry **fresh);

/** The entry of `pin` (fresh or expired), or NULL. */
const struct pin_entry *pinset_find(const struct pinset *ps, const uint8_t pin[PIN_LEN]);

/** The same, writable (for the refresh bookkeeping of the entry). */
struct pin_entry *pinset_entry(struct pinset *ps, const uint8_t pin[PIN_LEN]);

/**
 * Adds (or replaces) `pin` after a successful attestation at monotonic `now` / wall `now_wall`.
 * Its expiry is min(now + ttl_ms, leaf_not_after_ms - margin_ms), translated to the monotonic
 * clock. Returns 0, or -ETIME when that expiry is not in the future (the leaf certificate ends
 * within the margin): nothing is added then. A negative entry for the pin is removed, and the
 * entry's refresh bookkeeping starts afresh.
 * `info->verified_at_ms` and `info->expires_at_ms` are filled in here.
 */
int pinset_add(struct pinset *ps, const uint8_t pin[PIN_LEN], const struct pin_info *info,
               uint64_t now, int64_t now_wall, uint64_t ttl_ms, uint64_t margin_ms);

/**
 * A reload shortened attestation_ttl or lengthened cert_margin: every entry's expiry becomes
 * min(its expiry, verified_at + ttl_ms, leaf_not_after - margin_ms), on both clocks, and its
 * serial is renewed (copies of its facts are refreshed). A longer TTL waits for the next
 * attestation. Returns how many entries were shortened.
 */
size_t pinset_limit(struct pinset *ps, uint64_t ttl_ms, uint64_t margin_ms);

/** Removes `pin` from the attested set; returns true when it was there. */
bool pinset_remove(struct pinset *ps, const uint8_t pin[PIN_LEN]);

/** Refuses `pin` until now + duration_ms; duration 0 records nothing. */
void pinset_add_negative(struct pinset *ps, const uint8_t pin[PIN_LEN], uint64_t now,
                         uint64_t duration_ms);

/** Drops every attested pin (a policy change); the negative cache is dropped too, since a
 *  failure under the old policy says nothing about the new one. */
void pinset_clear(struct pinset *ps);

/** Removes expired attested entries and lapsed negative ones; returns how many pins it dropped
 *  from the attested set. */
size_t pinset_expire(struct pinset *ps, uint64_t now);

/** True when at least one attested pin is fresh at `now`. */
bool pinset_any_fresh(const struct pinset *ps, uint64_t now);

/** The fresh entry that expires first, or NULL. */
const struct pin_entry *pinset_next_expiry(const struct pinset *ps, uint64_t now);

/**
 * True when the verified facts in `info` still satisfy `policy`: not debug mode unless
 * allowed, and every PCR named by one of the measurement sets present and equal (constant
 * time). Freshness is not re-checked: the document was fresh when it was verified.
 */
bool pinset_info_satisfies(const struct pin_info *info, const struct policy *policy);

/** Records the most recent failure (for /attestation). `pin` may be NULL. */
void pinset_set_failure(struct pinset *ps, int64_t now_wall, bool rejected, const char *reason,
                        const char *message, const uint8_t *pin);

/** Lowercase hex of a pin; `out` receives PIN_HEX_LEN + 1 bytes. */
void pin_hex(const uint8_t pin[PIN_LEN], char out[PIN_HEX_LEN + 1]);

#endif
