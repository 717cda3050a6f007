#include "app/status.h"

#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "base/clock.h"
#include "base/hex.h"
#include "ops/admin.h"
#include "proxy/proxy.h"
#include "verify/policy.h"

bool status_ready(struct daemon *d)
{
    if (d->stopping || !d->listening)
        return false;
    if (!d->cfg->daemon.ready_requires_attestation)
        return true;
    for (size_t i = 0; i < d->cfg->n_services; i++) {
        if (d->proxy == NULL || !proxy_service_attested(d->proxy, d->cfg->services[i].name))
            return false;
    }
    return true;
}

json_t *status_readiness_json(struct daemon *d)
{
    json_t *root = json_object(), *services = json_object();
    const char *reason = NULL;
    bool ready = status_ready(d);

    if (root == NULL || services == NULL) {
        json_decref(root);
        json_decref(services);
        return NULL;
    }
    for (size_t i = 0; i < d->cfg->n_services; i++) {
        json_t *s =
            d->proxy != NULL ? proxy_service_readiness(d->proxy, d->cfg->services[i].name) : NULL;
        if (s != NULL)
            json_object_set_new(services, d->cfg->services[i].name, s);
    }
    if (d->stopping)
        reason = "stopping";
    else if (!d->listening)
        reason = "starting: listeners are not up yet";
    else if (!ready)
        reason = "waiting for attestation (ready_requires_attestation = yes): see services";
    json_object_set_new(root, "ready", json_boolean(ready));
    json_object_set_new(root, "reason", reason != NULL ? json_string(reason) : json_null());
    json_object_set_new(root, "services", services);
    return root;
}

void status_waiting_text(struct daemon *d, char *out, size_t cap)
{
    size_t n;
    int w = snprintf(out, cap, "waiting for attestation:");

    n = w < 0 ? 0 : ((size_t)w < cap ? (size_t)w : cap - 1);
    for (size_t i = 0; i < d->cfg->n_services && n + 1 < cap; i++) {
        const char *name = d->cfg->services[i].name;
        json_t *s = d->proxy != NULL ? proxy_service_readiness(d->proxy, name) : NULL;
        if (s != NULL && !json_is_true(json_object_get(s, "ready"))) {
            const char *why = json_string_value(json_object_get(s, "reason"));
            w = snprintf(out + n, cap - n, "%s %s: %s", n > 24 ? ";" : "", name,
                         why != NULL ? why : "not attested");
            n += w < 0 ? 0 : ((size_t)w < cap - n ? (size_t)w : cap - n - 1);
        }
        json_decref(s);
    }
}

/* "sha256:<hex>" of a pin. */
static json_t *pin_string(const uint8_t pin[PIN_LEN])
{
    char s[8 + PIN_HEX_LEN];
    memcpy(s, "sha256:", 7);
    hex_encode(pin, PIN_LEN, s + 7);
    return json_string(s);
}

/* One attested key of a service, as docs/attestation-status.schema.json describes it. */
static json_t *pin_json(const struct proxy *p, const char *service, const struct pin_entry *e,
                        int64_t now_wall)
{
    json_t *o = json_object(), *pcrs = json_object();
    char hx[2 * NITRO_PCR_LEN + 1];

    if (o == NULL || pcrs == NULL) {
        json_decref(o);
        json_decref(pcrs);
        return NULL;
    }
    for (unsigned i = 0; i < NITRO_PCR_COUNT; i++) {
        static const uint8_t zero[NITRO_PCR_LEN];
        char idx[4];
        if (!(e->info.pcr_mask & (1u << i)))
            continue;
        /* PCRs beyond 2 that are all zero are unused: left out, as the NSM reports them. */
        if (i > 2 && memcmp(e->info.pcrs[i], zero, NITRO_PCR_LEN) == 0)
            continue;
        snprintf(idx, sizeof(idx), "%u", i);
        json_object_set_new(pcrs, idx, json_string(hex_encode(e->info.pcrs[i], NITRO_PCR_LEN, hx)));
    }
    json_object_set_new(o, "pin", pin_string(e->pin));
    json_object_set_new(o, "module_id", json_string(e->info.module_id));
    json_object_set_new(o, "pcrs", pcrs);
    json_object_set_new(o, "document_time", admin_json_time((uint64_t)e->info.document_time_ms));
    json_object_set_new(o, "verified_at", admin_json_time((uint64_t)e->info.verified_at_ms));
    json_object_set_new(o, "expires_at", admin_json_time((uint64_t)e->info.expires_at_ms));
    json_object_set_new(o, "expires_in_seconds",
                        json_integer((json_int_t)((e->info.expires_at_ms - now_wall) / 1000)));
    json_object_set_new(o, "certificate_not_after",
                        admin_json_time((uint64_t)e->info.leaf_not_after_ms));
    json_object_set_new(o, "connections",
                        json_integer((json_int_t)proxy_pin_connections(p, service, e->pin)));
    return o;
}

static json_t *failure_json(const struct pin_failure *f)
{
    json_t *fo;
    if (!f->set || (fo = json_object()) == NULL)
        return json_null();
    json_object_set_new(fo, "at", admin_json_time((uint64_t)f->at_ms));
    json_object_set_new(fo, "verdict", json_string(f->rejected ? "rejected" : "error"));
    json_object_set_new(fo, "reason", json_string(f->reason));
    json_object_set_new(fo, "message", json_string(f->message));
    json_object_set_new(fo, "pin", f->has_pin ? pin_string(f->pin) : json_null());
    return fo;
}

/* Adds "ready", "pins" and "last_failure" of service `name` to `obj`, from its attested key
 * set. Nothing when the proxy does not run or has no such service. */
static void service_status(struct daemon *d, const char *name, json_t *obj)
{
    struct proxy_service_view v;
    int64_t now_wall = clock_wall_ms();
    json_t *pins;

    if (d->proxy == NULL || !proxy_service_view(d->proxy, name, &v))
        return;
    pins = json_array();
    for (size_t i = 0; pins != NULL && i < v.pins->n; i++) {
        const struct pin_entry *e = &v.pins->entries[i];
        json_t *pj;
        if (v.now_mono_ms >= e->expires_mono_ms)
            continue;
        pj = pin_json(d->proxy, name, e, now_wall);
        if (pj != NULL)
            json_array_append_new(pins, pj);
    }
    json_object_set_new(obj, "ready", json_boolean(v.ready));
    json_object_set_new(obj, "pins", pins != NULL ? pins : json_array());
    json_object_set_new(obj, "last_failure", failure_json(&v.pins->last_failure));
}

json_t *status_attestation_json(struct daemon *d)
{
    json_t *root = json_object();
    json_t *services = json_object();
    if (root == NULL || services == NULL)
        goto out_fail;
    json_object_set_new(root, "generated_at", admin_json_time((uint64_t)clock_wall_ms()));
    json_object_set_new(root, "policy_generation", json_integer((json_int_t)d->generation));
    for (size_t i = 0; i < d->cfg->n_services; i++) {
        const struct service_config *svc = &d->cfg->services[i];
        char digest[POLICY_DIGEST_LEN], upstream[CONFIG_HOST_MAX + 16];
        json_t *s = json_object();
        if (s == NULL)
            goto out_fail;
        snprintf(upstream, sizeof(upstream), strchr(svc->upstream_host, ':') ? "[%s]:%u" : "%s:%u",
                 svc->upstream_host, svc->upstream_port);
        policy_digest(&svc->policy, digest);
        json_object_set_new(s, "upstream", json_string(upstream));
        json_object_set_new(s, "profile", json_string(config_profile_name(svc->profile)));
        json_object_set_new(s, "binding", json_string(config_binding_name(svc->binding)));
        json_object_set_new(s, "nonce", json_boolean(svc->nonce != NONCE_NONE));
        json_object_set_new(s, "session_bound", json_boolean(svc->nonce == NONCE_SESSION));
        json_object_set_new(s, "policy_digest", json_string(digest));
        /* ready, pins and last_failure come from the service's attested key set. */
        service_status(d, svc->name, s);
        json_object_set_new(services, svc->name, s);
    }
    json_object_set_new(root, "services", services);
    return root;

out_fail:
    json_decref(services);
    json_decref(root);
    return NULL;
}
