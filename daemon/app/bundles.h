/*
 * Policy bundles in the daemon: each service's policy_bundle file read, verified against the
 * trusted policy_key entries, checked against the highest version accepted before (kept in
 * state_dir, so that a restart cannot roll back) and against its expiry, then applied to the
 * service's policy. The format and its pure checks are verify/bundle.c; docs/policy-bundles.md
 * describes both.
 */
#ifndef ATTESTPROXY_APP_BUNDLES_H
#define ATTESTPROXY_APP_BUNDLES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/config.h"

struct metrics;
struct audit;

#define BUNDLES_DRY_RUN 0x1u /* check-config, attest: verify, never write state_dir */
#define BUNDLES_STRICT                                                                             \
    0x2u /* check-config: a refused bundle file is an error, even when run                         \
            would fall back to the last accepted one in state_dir */

/**
 * Applies the policy bundle of every service of `fresh` that has one. An accepted bundle
 * becomes the service's measurement sets and allow_debug, with not_after = expires +
 * policy_expiry_grace; a newer version is written to state_dir first (temp file, fsync,
 * rename, fsync of the directory). A refused one is logged (event=policy_bundle_refused
 * reason=...), counted (attestproxy_policy_bundle_refused_total) and audited, and then:
 *   - on a reload (`live` != NULL) the service keeps the policy in force in `live`;
 *   - at start (or a service new in this reload), the last accepted bundle in state_dir is
 *     put in force when it still verifies and has not expired;
 *   - otherwise this returns -EINVAL with "FILE: reason: detail" in `err`.
 * `m` and `audit` may be NULL. Returns 0 when every service has a policy.
 */
int bundles_apply(struct config *fresh, const struct config *live, struct metrics *m,
                  struct audit *audit, int64_t now_ms, unsigned flags, char *err, size_t cap);

/**
 * After a reload from `live` to `fresh` was applied: logs (event=policy_bundle_revoked) and
 * audits each service whose bundle this reload revoked — the key that signed it was removed and
 * no bundle a trusted key signed took its place (bundles_apply() then leaves the service with no
 * measurement set, so that it refuses every attestation). Not called for a rejected reload,
 * which changes nothing.
 */
void bundles_announce(const struct config *fresh, const struct config *live, struct audit *audit);

#endif
