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

#include "base/config.h"
#include "app/daemon.h"

/**
 * Creates d->proxy and binds (or adopts from d->lfds, socket activation) every listener of
 * every service in d->cfg. Returns 0, or a negative errno/UV_E* code after logging which
 * listener failed and why; on failure every handle already opened is closed by a later
 * proxy_shutdown() (the daemon calls it on its abort path) and d->proxy stays valid for that.
 * Callbacks: none fire before the loop runs.
 */
int proxy_start(struct daemon *d);

/**
 * The first half of a reload, before anything changes: binds every listen address `fresh` adds
 * (to an existing service or with a new one), so that the reload can be rejected whole when
 * one cannot bind. An address held by a listener that `fresh` drops is left for
 * proxy_reload(). Returns 0, or a negative code with the reason in `err` (every listener
 * bound here is closed again). proxy_reload() must follow a success before the loop runs.
 */
int proxy_prepare_reload(struct daemon *d, const struct config *fresh, char *err, size_t cap);

/**
 * Applies a reloaded configuration. d->cfg already points at the new one; `old_cfg` is the
 * previous one, and the proxy TAKES OWNERSHIP of it (config_free() once nothing refers into it).
 * Limits, timeouts, tokens, Host lists and pool sizes apply to the next request; a changed
 * policy, binding or evidence profile drops the service's attested pins, closes its idle pooled
 * connections and aborts exchanges whose attested measurements fail the new policy. New services
 * are started; removed services stop listening and drain. Listeners follow the new file: those
 * it drops close (their clients finish the exchange in progress, then close), those it adds
 * were bound by proxy_prepare_reload(), and a changed unix_mode is applied to the socket file
 * (clients of a narrowed socket are drained like those of a closed one). `root_changed`: the daemon
 * now trusts a different root certificate (d->verifier was replaced): every service is treated as
 * changed and no exchange attested under the old root continues.
 */
void proxy_reload(struct daemon *d, const struct config *old_cfg, bool root_changed);

/**
 * Stops accepting, closes idle client connections and pooled upstream connections at once and
 * lets in-flight exchanges finish for up to d->cfg->daemon.shutdown_timeout_ms, then closes the
 * rest. `done(d)` is called exactly once, from a close callback, after the last proxy handle has
 * been closed, so that uv_loop_close() succeeds right after the loop returns. d->proxy is freed
 * before `done` runs and set to NULL. Safe to call when proxy_start() failed or was never
 * called (done then runs on the next loop iteration).
 */
void proxy_shutdown(struct daemon *d, void (*done)(struct daemon *d));

/**
 * True when service `name` has at least one attested pin that has not expired (used by
 * /readyz and READY=1 with ready_requires_attestation). False for an unknown service.
 */
bool proxy_service_attested(struct daemon *d, const char *name);

/**
 * Adds "ready", "pins" and "last_failure" of service `name` to `obj`, the service object of the
 * /attestation document (docs/attestation-status.schema.json). Does nothing for an unknown
 * service. `obj` stays owned by the caller.
 */
void proxy_service_status(struct daemon *d, const char *name, json_t *obj);

/**
 * Readiness of service `name` for /readyz and STATUS=: a NEW JSON object {"ready": true} or
 * {"ready": false, "state": ..., "reason": ..., "failed_attempts": N} (warm.c's state and the
 * last error). NULL when out of memory.
 */
json_t *proxy_service_readiness(struct daemon *d, const char *name);

/**
 * `cb(d)` is called whenever readiness or its reason may have changed: an attestation
 * succeeded, a warm attestation attempt ended. Set after proxy_start(); NULL clears it.
 */
void proxy_set_status_cb(struct daemon *d, void (*cb)(struct daemon *d));

/* The outcome of proxy_attest_once(). */
struct proxy_attest_result {
    bool accepted;
    char message[400]; /* "accepted", or why not (the verifier's reason, a connect error...) */
    bool has_pin;
    uint8_t pin[32]; /* the peer's pin, when the TLS handshake got that far */
};

/**
 * `attestproxy attest`: creates the proxy with only `service` and no listener, connects once to
 * its upstream and attests the peer over that connection, then calls `done` exactly once (never
 * from inside this call). The caller then reads the result (proxy_service_status() has the pin)
 * and calls proxy_shutdown(). Returns 0, -ENOENT for an unknown service, or another negative
 * code when nothing was started (no callback); proxy_shutdown() is needed in every case.
 */
int proxy_attest_once(struct daemon *d, const char *service,
                      void (*done)(struct daemon *d, const struct proxy_attest_result *r));

#endif
