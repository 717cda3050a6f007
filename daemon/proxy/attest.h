/*
 * Attestation over the connection that will carry traffic (BRIEF §2.2, §3).
 *
 * attest_start() sends the service's evidence request over `up` itself — GET evidence_path,
 * with `?nonce=<lowercase hex>` of a fresh CSPRNG nonce when the profile places one — reads the
 * response (bounded by VERIFY_MAX_ENVELOPE, within attestation_timeout), and hands the body to
 * verifier_verify() with the service's current policy, the nonce, the binding and the peer
 * certificate of this TLS connection. On acceptance the pin joins the attested key set with
 * expiry min(now + attestation_ttl, leaf_not_after - cert_margin). On failure the pin is
 * negative-cached for negative_cache and the connection is closed. Every attestation is logged
 * as one "attestation" event and counted in attestproxy_attestations_total.
 */
#ifndef ATTESTPROXY_PROXY_ATTEST_H
#define ATTESTPROXY_PROXY_ATTEST_H

#include <stdbool.h>

#include "proxy/errors.h"

struct upstream;

struct attest_outcome {
    bool accepted;
    enum proxy_error err;   /* when not accepted: ATTESTATION_FAILED (the verifier said no) or
                             * ATTESTATION_UNAVAILABLE (no verdict: timeout, HTTP error, ...) */
    unsigned retry_after_s; /* for ATTESTATION_UNAVAILABLE */
    bool reusable;          /* the connection may carry a request next */
    bool retry;             /* discarded by attest_invalidate(): attest again, nothing failed */
    char message[320];      /* for the client: "attestation failed: policy: ..." */
};

typedef void (*attest_done_cb)(struct upstream *up, const struct attest_outcome *o, void *arg);

/**
 * Starts attesting the peer of `up` (which must be UP_UNVERIFIED and becomes UP_ATTESTING).
 * `done` fires exactly once, never from inside this call; the connection is then UP_UNVERIFIED
 * again (and passes upstream_begin_exchange() when accepted) or closing (on failure, or when it
 * cannot be reused). Returns 0, or a negative code when nothing was started (no callback).
 */
int attest_start(struct upstream *up, attest_done_cb done, void *arg);

/**
 * Called by a client that gives up waiting: the attestation running over `up` (if any) goes
 * on, and its connection is pooled or closed when it ends; the client's callback never fires.
 */
void attest_detach(struct upstream *up);

/**
 * The settings the attestation running over `up` (if any) was started under were replaced
 * (a reload changed the policy, evidence profile, upstream or trust root): when it ends, its
 * result is discarded — nothing enters or leaves the attested key set, the connection closes —
 * and its owner hears `retry`, so that it attests again under the new settings.
 */
void attest_invalidate(struct upstream *up);

#endif
