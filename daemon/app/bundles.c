/*
 * Policy bundles in the daemon (bundles.h): file and state-directory I/O around the pure
 * checks of verify/bundle.c, and the decision what stays in force when a bundle is refused.
 */
#include "app/bundles.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/audit.h"
#include "base/file.h"
#include "base/hex.h"
#include "base/log.h"
#include "base/metrics.h"
#include "verify/bundle.h"

/* A bundle as read and judged: the bytes, the parse, and the verdict. */
struct candidate {
    uint8_t *data;
    size_t len;
    struct bundle b;
    size_t signer;
    char detail[256];
};

/* Reads at most BUNDLE_MAX_BYTES of `path` into c->data. -ENOENT when it does not exist. */
static int read_file(const char *path, struct candidate *c)
{
    uint8_t *data = NULL;
    size_t len = 0;
    int rc = file_read(path, BUNDLE_MAX_BYTES, FILE_REGULAR, &data, &len);
    if (rc == 0 && len > BUNDLE_MAX_BYTES) {
        free(data);
        rc = -EINVAL;
    }
    if (rc == -EINVAL)
        snprintf(c->detail, sizeof(c->detail), "not a regular file of at most %d bytes",
                 BUNDLE_MAX_BYTES);
    else if (rc < 0)
        snprintf(c->detail, sizeof(c->detail), "%s", strerror(-rc));
    else {
        c->data = data;
        c->len = len;
    }
    return rc;
}

static void state_path(const struct config *cfg, const struct service_config *svc, char *out,
                       size_t cap, bool tmp)
{
    snprintf(out, cap, "%s/%spolicy-bundle.%s%s", cfg->daemon.state_dir, tmp ? "." : "", svc->name,
             tmp ? ".tmp" : "");
}

/* Writes the accepted bundle as the service's state: temp file, fsync, rename, fsync dir. */
static int write_state(const struct config *cfg, const struct service_config *svc,
                       const struct candidate *c, char *why, size_t cap)
{
    char path[CONFIG_PATH_MAX + 96], tmp[CONFIG_PATH_MAX + 96];
    int rc;

    if (mkdir(cfg->daemon.state_dir, 0700) < 0 && errno != EEXIST) {
        rc = -errno;
        snprintf(why, cap, "state_dir %.150s: %s", cfg->daemon.state_dir, strerror(-rc));
        return rc;
    }
    state_path(cfg, svc, path, sizeof(path), false);
    state_path(cfg, svc, tmp, sizeof(tmp), true);
    rc = file_write_atomic(path, tmp, c->data, c->len, 0600, true);
    if (rc < 0)
        snprintf(why, cap, "%.150s: %s", path, strerror(-rc));
    return rc;
}

/* Signature, service, validity window: what any bundle must pass to be in force now. */
static enum bundle_verdict judge(const struct config *cfg, const struct service_config *svc,
                                 struct candidate *c, int64_t now_ms)
{
    enum bundle_verdict v;
    bool listed = false;
    if (bundle_parse(c->data, c->len, &c->b, c->detail, sizeof(c->detail)) < 0)
        return BUNDLE_MALFORMED;
    v = bundle_verify(&c->b, c->data, cfg->daemon.policy_keys, cfg->daemon.n_policy_keys,
                      &c->signer);
    if (v != BUNDLE_OK) {
        snprintf(c->detail, sizeof(c->detail), "%s",
                 v == BUNDLE_UNKNOWN_KEY ? "no signature from a trusted policy_key"
                                         : "a trusted key's signature does not verify");
        return v;
    }
    for (size_t i = 0; i < c->b.n_services; i++)
        listed = listed || strcmp(c->b.services[i], svc->name) == 0;
    if (!listed) {
        snprintf(c->detail, sizeof(c->detail), "the bundle does not list service %s", svc->name);
        return BUNDLE_NOT_FOR_SERVICE;
    }
    if (now_ms >= c->b.expires_ms + (int64_t)svc->policy_expiry_grace_ms) {
        char t[24];
        bundle_format_time(c->b.expires_ms, t);
        snprintf(c->detail, sizeof(c->detail), "expired at %s (policy_expiry_grace %llu ms)", t,
                 (unsigned long long)svc->policy_expiry_grace_ms);
        return BUNDLE_EXPIRED;
    }
    if (c->b.issued_ms > now_ms + svc->policy.skew_ms) {
        snprintf(c->detail, sizeof(c->detail), "issued in the future (beyond clock_skew)");
        return BUNDLE_NOT_YET_VALID;
    }
    return BUNDLE_OK;
}

/* The anti-rollback floor: the last accepted bundle in state_dir (parsed, not verified: its
 * signer may have been retired since, and the floor must hold regardless). */
static enum bundle_verdict check_floor(const struct config *cfg, const struct service_config *svc,
                                       struct candidate *c, bool *newer)
{
    char path[CONFIG_PATH_MAX + 96];
    struct candidate *st = calloc(1, sizeof(*st));
    enum bundle_verdict v = BUNDLE_OK;
    int rc;

    *newer = true;
    if (st == NULL)
        return BUNDLE_STATE_ERROR;
    state_path(cfg, svc, path, sizeof(path), false);
    rc = read_file(path, st);
    if (rc == -ENOENT)
        goto out; /* nothing accepted before */
    if (rc < 0 || bundle_parse(st->data, st->len, &st->b, st->detail, sizeof(st->detail)) < 0) {
        snprintf(c->detail, sizeof(c->detail), "%.120s: unreadable: %.120s", path, st->detail);
        v = BUNDLE_STATE_ERROR;
        goto out;
    }
    if (c->b.version < st->b.version) {
        snprintf(c->detail, sizeof(c->detail),
                 "version %llu is lower than version %llu accepted before",
                 (unsigned long long)c->b.version, (unsigned long long)st->b.version);
        v = BUNDLE_ROLLBACK;
    } else if (c->b.version == st->b.version) {
        *newer = false;
        /* The signed text decides: the same version signed again (one more signature line,
         * as a key rotation does) is the same bundle. */
        if (c->b.body_len != st->b.body_len || memcmp(c->data, st->data, c->b.body_len) != 0) {
            snprintf(c->detail, sizeof(c->detail),
                     "version %llu was accepted before with other content",
                     (unsigned long long)c->b.version);
            v = BUNDLE_VERSION_REUSED;
        }
    }
out:
    free(st->data);
    free(st);
    return v;
}

static void put_in_force(const struct config *cfg, struct service_config *svc,
                         const struct candidate *c)
{
    const struct policy_key *k = &cfg->daemon.policy_keys[c->signer];
    memcpy(svc->policy.sets, c->b.sets, c->b.n_sets * sizeof(c->b.sets[0]));
    svc->policy.n_sets = c->b.n_sets;
    svc->policy.allow_debug = c->b.allow_debug;
    svc->policy.not_after_ms = c->b.expires_ms + (int64_t)svc->policy_expiry_grace_ms;
    memset(&svc->bundle, 0, sizeof(svc->bundle));
    svc->bundle.in_force = true;
    svc->bundle.version = c->b.version;
    svc->bundle.issued_ms = c->b.issued_ms;
    svc->bundle.expires_ms = c->b.expires_ms;
    memcpy(svc->bundle.digest, c->b.digest, sizeof(svc->bundle.digest));
    snprintf(svc->bundle.signer, sizeof(svc->bundle.signer), "%s", k->name);
    bundle_key_id(k->name, k->pub, svc->bundle.signer_id);
}

/* Records the bundle put in force; a dry run (check-config, attest) applies nothing the daemon
 * keeps, so it says "verified". */
static void audit_policy(struct audit *audit, const struct service_config *svc, const char *source,
                         unsigned flags)
{
    char digest[65], id[9], issued[24], expires[24], ver[24];
    json_t *f;
    snprintf(ver, sizeof(ver), "%llu", (unsigned long long)svc->bundle.version);
    hex_encode(svc->bundle.digest, sizeof(svc->bundle.digest), digest);
    hex_encode(svc->bundle.signer_id, sizeof(svc->bundle.signer_id), id);
    bundle_format_time(svc->bundle.issued_ms, issued);
    bundle_format_time(svc->bundle.expires_ms, expires);
    f = json_pack("{s:s,s:s,s:I,s:s,s:s,s:s,s:s,s:s,s:I}", "service", svc->name, "source", source,
                  "version", (json_int_t)svc->bundle.version, "digest", digest, "signer",
                  svc->bundle.signer, "signer_key_id", id, "issued", issued, "expires", expires,
                  "measurement_sets", (json_int_t)svc->policy.n_sets);
    audit_append(audit, "policy", f);
    json_decref(f);
    log_event(LOG_LEVEL_INFO,
              flags & BUNDLES_DRY_RUN ? "policy_bundle_verified" : "policy_bundle_applied",
              "service", svc->name, "source", source, "version", ver, "digest", digest, "signer",
              svc->bundle.signer, "expires", expires, NULL);
}

static void refused(struct metrics *m, struct audit *audit, const struct service_config *svc,
                    const char *file, enum bundle_verdict v, const char *detail, const char *action)
{
    json_t *f;
    log_event(LOG_LEVEL_ERROR, "policy_bundle_refused", "service", svc->name, "file", file,
              "reason", bundle_verdict_name(v), "detail", detail, "action", action, NULL);
    metrics_inc_bundle_refused(m != NULL ? metrics_service(m, svc->name) : NULL,
                               bundle_verdict_name(v));
    f = json_pack("{s:s,s:s,s:s,s:s}", "service", svc->name, "file", file, "reason",
                  bundle_verdict_name(v), "detail", detail);
    audit_append(audit, "policy_bundle_refused", f);
    json_decref(f);
}

/* No bundle in force: no measurement set, so the verifier refuses every document ("no
 * measurement sets configured"), and the policy change drops the pins and cuts what they
 * admitted. Announced by bundles_announce() once the reload is applied. */
static void revoke_bundle(struct service_config *svc)
{
    svc->policy.n_sets = 0;
    svc->policy.allow_debug = false;
    memset(&svc->bundle, 0, sizeof(svc->bundle));
    svc->bundle.revoked = true;
}

void bundles_announce(const struct config *fresh, const struct config *live, struct audit *audit)
{
    for (size_t i = 0; i < fresh->n_services; i++) {
        const struct service_config *svc = &fresh->services[i];
        const struct service_config *was = config_find_service(live, svc->name);
        json_t *f;
        if (!svc->bundle.revoked || (was != NULL && was->bundle.revoked))
            continue;
        log_event(LOG_LEVEL_ERROR, "policy_bundle_revoked", "service", svc->name, "action",
                  "the key that signed the bundle in force is no longer trusted: every attestation "
                  "is refused until a bundle signed by a policy_key is in place",
                  NULL);
        f = json_pack("{s:s}", "service", svc->name);
        audit_append(audit, "policy_bundle_revoked", f);
        json_decref(f);
    }
}

/* The policy of `from` (the live service) kept for `to` (its reloaded configuration). */
static void keep_live(struct service_config *to, const struct service_config *from)
{
    memcpy(to->policy.sets, from->policy.sets, from->policy.n_sets * sizeof(from->policy.sets[0]));
    to->policy.n_sets = from->policy.n_sets;
    to->policy.allow_debug = from->policy.allow_debug;
    to->policy.not_after_ms = from->bundle.expires_ms + (int64_t)to->policy_expiry_grace_ms;
    to->bundle = from->bundle;
}

/* Whether the key that signed the bundle in force is still a policy_key of `fresh` (same name
 * and key): a key removed by a reload no longer vouches for the bundle it signed. */
static bool signer_still_trusted(const struct config *fresh, const struct policy_bundle_info *b)
{
    for (size_t k = 0; k < fresh->daemon.n_policy_keys; k++) {
        uint8_t id[4];
        bundle_key_id(fresh->daemon.policy_keys[k].name, fresh->daemon.policy_keys[k].pub, id);
        if (strcmp(fresh->daemon.policy_keys[k].name, b->signer) == 0 &&
            memcmp(id, b->signer_id, 4) == 0)
            return true;
    }
    return false;
}

static int apply_one(struct config *fresh, struct service_config *svc,
                     const struct service_config *live_svc, struct metrics *m, struct audit *audit,
                     int64_t now_ms, unsigned flags, char *err, size_t cap)
{
    struct candidate *c = calloc(1, sizeof(*c));
    enum bundle_verdict v;
    bool newer = false;
    int rc = 0;

    if (c == NULL) {
        snprintf(err, cap, "out of memory");
        return -ENOMEM;
    }
    if (read_file(svc->policy_bundle, c) < 0)
        v = BUNDLE_UNREADABLE;
    else
        v = judge(fresh, svc, c, now_ms);
    if (v == BUNDLE_OK)
        v = check_floor(fresh, svc, c, &newer);
    if (v == BUNDLE_OK && newer && !(flags & BUNDLES_DRY_RUN) &&
        write_state(fresh, svc, c, c->detail, sizeof(c->detail)) < 0)
        v = BUNDLE_STATE_ERROR;
    if (v == BUNDLE_OK) {
        put_in_force(fresh, svc, c);
        if (live_svc == NULL || !live_svc->bundle.in_force ||
            memcmp(live_svc->bundle.digest, svc->bundle.digest, 32) != 0)
            audit_policy(audit, svc, "policy_bundle", flags);
        goto out;
    }

    /* check-config judges the file the operator is about to put in force: a refused one is an
     * error there, whatever run would fall back on. */
    if (flags & BUNDLES_STRICT) {
        snprintf(err, cap, "%s: policy bundle refused: %s: %s", svc->policy_bundle,
                 bundle_verdict_name(v), c->detail);
        rc = -EINVAL;
        goto out;
    }
    /* Refused: what was in force stays in force, unless the reload removed the key that signed
     * it (then only a bundle the new keys verify, or none, and the reload is refused). */
    if (live_svc != NULL && live_svc->bundle.in_force &&
        signer_still_trusted(fresh, &live_svc->bundle)) {
        refused(m, audit, svc, svc->policy_bundle, v, c->detail,
                "keeping the policy bundle in force");
        keep_live(svc, live_svc);
        goto out;
    }
    {
        /* At start: the last accepted bundle, if it still verifies and has not expired. */
        struct candidate *st = calloc(1, sizeof(*st));
        char path[CONFIG_PATH_MAX + 96];
        enum bundle_verdict sv = BUNDLE_STATE_ERROR;
        state_path(fresh, svc, path, sizeof(path), false);
        if (st != NULL && read_file(path, st) == 0)
            sv = judge(fresh, svc, st, now_ms);
        if (sv == BUNDLE_OK) {
            refused(m, audit, svc, svc->policy_bundle, v, c->detail,
                    "the last accepted bundle (state_dir) is in force");
            put_in_force(fresh, svc, st);
            audit_policy(audit, svc, "state_dir", flags);
        } else if (live_svc != NULL && (live_svc->bundle.revoked ||
                                        (live_svc->bundle.in_force &&
                                         !signer_still_trusted(fresh, &live_svc->bundle)))) {
            /* A running service whose bundle was signed by a key this reload removes (or one
             * already revoked so): removing the key is the revocation (policy-bundles.md). The
             * reload applies with no measurement set in force, so that every attestation is
             * refused — failing closed until a bundle a trusted key signed is in place —
             * rather than being rejected, which would keep the removed key trusted. */
            refused(m, audit, svc, svc->policy_bundle, v, c->detail,
                    "no bundle signed by a trusted key: every attestation is refused until one "
                    "is in place");
            revoke_bundle(svc);
        } else {
            if (!(flags & BUNDLES_DRY_RUN))
                refused(m, audit, svc, svc->policy_bundle, v, c->detail,
                        "no valid policy bundle is in force: the service cannot start");
            snprintf(err, cap, "%s: policy bundle refused: %s: %s", svc->policy_bundle,
                     bundle_verdict_name(v), c->detail);
            rc = -EINVAL;
        }
        if (st != NULL)
            free(st->data);
        free(st);
    }
out:
    free(c->data);
    free(c);
    return rc;
}

int bundles_apply(struct config *fresh, const struct config *live, struct metrics *m,
                  struct audit *audit, int64_t now_ms, unsigned flags, char *err, size_t cap)
{
    for (size_t i = 0; i < fresh->n_services; i++) {
        struct service_config *svc = &fresh->services[i];
        const struct service_config *live_svc =
            live != NULL ? config_find_service(live, svc->name) : NULL;
        int rc;
        if (svc->policy_bundle[0] == '\0')
            continue;
        rc = apply_one(fresh, svc, live_svc, m, audit, now_ms, flags, err, cap);
        if (rc < 0)
            return rc;
    }
    return 0;
}
