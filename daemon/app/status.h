/*
 * What the daemon reports about itself: readiness (systemd READY, /readyz), the policy digest of
 * each service, and the /attestation document of the admin API.
 *
 * The pins themselves live in the proxy's attested key sets; this module assembles the parts
 * that belong to the configuration and asks the proxy for the rest.
 */
#ifndef ATTESTPROXY_APP_STATUS_H
#define ATTESTPROXY_APP_STATUS_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "app/daemon.h"

/** /readyz and READY=1: listeners are up, not stopping and, with ready_requires_attestation,
 *  every service has an attested pin. */
bool status_ready(struct daemon *d);

/**
 * Why the daemon is or is not ready, for the body of /readyz: a new reference to
 * {"ready": bool, "reason": "...", "services": {NAME: {"ready": bool, "state": "...",
 * "reason": "...", "failed_attempts": N}}}. A service's entry is listed even when
 * ready_requires_attestation is off (then it does not decide readiness). NULL on allocation
 * failure.
 */
json_t *status_readiness_json(struct daemon *d);

/**
 * One line for systemd's STATUS= while the daemon waits for attestation: "waiting for
 * attestation: NAME: REASON; NAME: REASON" for every service without a fresh pin, cut at `cap`.
 */
void status_waiting_text(struct daemon *d, char *out, size_t cap);

/** The /attestation document (schema: docs/attestation-status.schema.json); a new reference. */
json_t *status_attestation_json(struct daemon *d);

#endif
