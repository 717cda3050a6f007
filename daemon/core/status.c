#include "core/status.h"

#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "ops/admin.h"
#include "proxy/proxy.h"

int64_t status_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void put_u64(EVP_MD_CTX *ctx, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (56 - 8 * i));
    EVP_DigestUpdate(ctx, b, sizeof(b));
}

void status_policy_digest(const struct policy *p, char out[72])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t md[32];
    unsigned mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();

    /* A fixed, versioned layout: "attestproxy-policy-v1", then each field big-endian, then each
     * set as its mask followed by the named PCRs in index order. */
    if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        snprintf(out, 72, "sha256:unavailable");
        EVP_MD_CTX_free(ctx);
        return;
    }
    EVP_DigestUpdate(ctx, "attestproxy-policy-v1", 21);
    put_u64(ctx, p->allow_debug ? 1 : 0);
    put_u64(ctx, (uint64_t)p->max_age_ms);
    put_u64(ctx, (uint64_t)p->skew_ms);
    put_u64(ctx, p->n_sets);
    for (size_t i = 0; i < p->n_sets; i++) {
        put_u64(ctx, p->sets[i].mask);
        for (unsigned j = 0; j < NITRO_PCR_COUNT; j++) {
            if (p->sets[i].mask & (1u << j))
                EVP_DigestUpdate(ctx, p->sets[i].pcr[j], NITRO_PCR_LEN);
        }
    }
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    memcpy(out, "sha256:", 7);
    for (unsigned i = 0; i < 32; i++) {
        out[7 + 2 * i] = hex[md[i] >> 4];
        out[8 + 2 * i] = hex[md[i] & 15];
    }
    out[71] = '\0';
}

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
    json_object_set_new(root, "generated_at", admin_json_time((uint64_t)status_wall_ms()));
    json_object_set_new(root, "policy_generation", json_integer((json_int_t)d->generation));
    for (size_t i = 0; i < d->cfg->n_services; i++) {
        const struct service_config *svc = &d->cfg->services[i];
        char digest[72], upstream[CONFIG_HOST_MAX + 16];
        json_t *s = json_object();
        if (s == NULL)
            goto out_fail;
        snprintf(upstream, sizeof(upstream), strchr(svc->upstream_host, ':') ? "[%s]:%u" : "%s:%u",
                 svc->upstream_host, svc->upstream_port);
        status_policy_digest(&svc->policy, digest);
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
