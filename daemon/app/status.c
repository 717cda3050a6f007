#include "app/status.h"

#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "base/clock.h"
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
        if (!proxy_service_attested(d, d->cfg->services[i].name))
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
        json_t *s = proxy_service_readiness(d, d->cfg->services[i].name);
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
        json_t *s = proxy_service_readiness(d, name);
        if (s != NULL && !json_is_true(json_object_get(s, "ready"))) {
            const char *why = json_string_value(json_object_get(s, "reason"));
            w = snprintf(out + n, cap - n, "%s %s: %s", n > 24 ? ";" : "", name,
                         why != NULL ? why : "not attested");
            n += w < 0 ? 0 : ((size_t)w < cap - n ? (size_t)w : cap - n - 1);
        }
        json_decref(s);
    }
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
        json_object_set_new(s, "nonce", json_boolean(svc->nonce == NONCE_QUERY));
        json_object_set_new(s, "policy_digest", json_string(digest));
        /* ready, pins and last_failure come from the service's attested key set. */
        proxy_service_status(d, svc->name, s);
        json_object_set_new(services, svc->name, s);
    }
    json_object_set_new(root, "services", services);
    return root;

out_fail:
    json_decref(services);
    json_decref(root);
    return NULL;
}
