/*
 * The attested relay: per-service listeners, client HTTP/1.1 connections, upstream TLS
 * connections pinned to attested keys, the idle pool and the attested key sets.
 *
 * Everything runs on the daemon's loop thread. The proxy owns every handle it creates and
 * closes them all in proxy_shutdown(); nothing here outlives the `done` callback.
 *
 * docs/architecture.md describes the path of one request and where the pin check lives.
 */
#ifndef ATTESTPROXY_PROXY_PROXY_H
#define ATTESTPROXY_PROXY_PROXY_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include <uv.h>

#include "base/config.h"
#include "proxy/pinset.h"

struct proxy;
struct verifier;
struct metrics;
struct listenfds;
struct audit;

/*
 * What the proxy uses of the process that runs it, given once to proxy_start() and copied.
 * The proxy reads *cfg and *verifier at each use, so that the owner's swap on a reload is seen
 * by the next request; the owner keeps every pointer valid until proxy_shutdown()'s `done`.
 */
struct proxy_env {
    uv_loop_t *loop;
    struct config *const *cfg;        /* the live configuration */
    struct verifier *const *verifier; /* the live verifier (one trusted root) */
    struct metrics *metrics;          /* counters; NULL: none are kept */
    struct listenfds *lfds;           /* sockets from socket activation; NULL: none */
    void *ctx;                        /* passed to the callbacks */
    /* Readiness or its reason may have changed: an attestation succeeded, a warm attestation
     * attempt ended. NULL: nobody asks. */
    void (*status_changed)(void *ctx);
    struct audit *audit; /* the audit log (base/audit.h); NULL: none is kept */
};

/**
 * Creates the proxy in *out and binds (or adopts from env->lfds, socket activation) every
 * listener of every service in *env->cfg. Returns 0, or a negative errno/UV_E* code after
 * logging which listener failed and why; on failure *out may still be set, and every handle
 * already opened is closed by proxy_shutdown() (the daemon calls it on its abort path).
 * Callbacks: none fire before the loop runs.
 */
int proxy_start(const struct proxy_env *env, struct proxy **out);

/**
 * The first half of a reload, before anything changes: binds every listen address `fresh` adds
 * (to an existing service or with a new one), so that the reload can be rejected whole when
 * one cannot bind. An address held by a listener that `fresh` drops is left for
 * proxy_reload(). Returns 0, or a negative code with the reason in `err` (every listener
 * bound here is closed again). proxy_reload() must follow a success before the loop runs.
 */
int proxy_prepare_reload(struct proxy *p, const struct config *fresh, char *err, size_t cap);

/**
 * Applies a reloaded configuration. *env->cfg already points at the new one; `old_cfg` is the
 * previous one, and the proxy TAKES OWNERSHIP of it (config_free() once nothing refers into it).
 * Limits, timeouts, tokens, Host lists and pool sizes apply to the next request; a changed
 * policy, binding or evidence profile drops the service's attested pins, closes its idle pooled
 * connections and aborts exchanges whose attested measurements fail the new policy. New services
 * are started; removed services stop listening and drain. Listeners follow the new file: those
 * it drops close (their clients finish the exchange in progress, then close), those it adds
 * were bound by proxy_prepare_reload(), and a changed unix_mode is applied to the socket file
 * (clients of a narrowed socket are drained like those of a closed one). `root_changed`: the
 * daemon now trusts a different root certificate (*env->verifier was replaced): every service
 * is treated as changed and no exchange attested under the old root continues.
 */
void proxy_reload(struct proxy *p, const struct config *old_cfg, bool root_changed);

/**
 * Why what was attested for a service under `a` means nothing under `b`, the strongest first:
 * "upstream_changed", "evidence_profile_changed", "policy_changed" (measurement sets,
 * allow_debug, max_age, clock_skew), or NULL when none of it differs.
 */
const char *proxy_attestation_change(const struct service_config *a,
                                     const struct service_config *b);

/**
 * Stops accepting, closes idle client connections and pooled upstream connections at once and
 * lets in-flight exchanges finish for up to the daemon's shutdown_timeout, then closes the
 * rest. `done(env->ctx)` is called exactly once, from a close callback, after the last proxy
 * handle has been closed and the proxy freed, so that uv_loop_close() succeeds right after the
 * loop returns. A second call while stopping does nothing.
 */
void proxy_shutdown(struct proxy *p, void (*done)(void *ctx));

/**
 * True when service `name` has at least one attested pin that has not expired (used by
 * /readyz and READY=1 with ready_requires_attestation). False for an unknown service.
 */
bool proxy_service_attested(const struct proxy *p, const char *name);

/* A service's attested key set as status reports show it (app/status.c renders the JSON). */
struct proxy_service_view {
    const struct pinset *pins; /* borrowed until the loop runs again */
    uint64_t now_mono_ms;      /* pins whose expires_mono_ms has passed are stale */
    bool ready;                /* at least one fresh pin */
};

/** Fills `out` for service `name`; false for an unknown service. */
bool proxy_service_view(const struct proxy *p, const char *name, struct proxy_service_view *out);

/** How many open upstream connections of service `name` have the key `pin`. */
size_t proxy_pin_connections(const struct proxy *p, const char *name, const uint8_t pin[PIN_LEN]);

/**
 * Readiness of service `name` for /readyz and STATUS=: a NEW JSON object {"ready": true} or
 * {"ready": false, "state": ..., "reason": ..., "failed_attempts": N} (warm.c's state and the
 * last error). NULL when out of memory.
 */
json_t *proxy_service_readiness(const struct proxy *p, const char *name);

/* The outcome of proxy_attest_once(). */
struct proxy_attest_result {
    bool accepted;
    char message[400]; /* "accepted", or why not (the verifier's reason, a connect error...) */
    bool has_pin;
    uint8_t pin[32]; /* the peer's pin, when the TLS handshake got that far */
};

/**
 * `attestproxy attest`: creates the proxy in *out with only `service` and no listener,
 * connects once to its upstream and attests the peer over that connection, then calls
 * `done(env->ctx, result)` exactly once (never from inside this call). The caller then reads
 * the result (proxy_service_view() has the pin) and calls proxy_shutdown(). Returns 0, -ENOENT
 * for an unknown service, or another negative code when nothing was started (no callback);
 * proxy_shutdown() is needed whenever *out is set.
 */
int proxy_attest_once(const struct proxy_env *env, const char *service,
                      void (*done)(void *ctx, const struct proxy_attest_result *r),
                      struct proxy **out);

#endif
