/*
 * State shared by the proxy's modules (not part of the proxy's public interface, proxy.h).
 *
 * One `struct proxy` per daemon holds one `struct proxy_service` per configured service. A
 * service owns its listeners, its client connections, its upstream connections (idle ones sit
 * in its pool) and its attested key set. Objects never cache pointers into the configuration:
 * they read `svc->cfg` when they need a setting, so that a reload applies to the next use and
 * the old configuration can be freed at once (a removed service keeps a private copy of its
 * last settings while its connections drain).
 */
#ifndef ATTESTPROXY_PROXY_PROXY_INTERNAL_H
#define ATTESTPROXY_PROXY_PROXY_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "base/config.h"
#include "proxy/client.h"
#include "proxy/http1.h"
#include "proxy/pinset.h"
#include "proxy/proxy.h"
#include "proxy/upstream.h"

struct listener;
struct client;

struct staged_listener {
    struct listener *l;
    char service[CONFIG_NAME_MAX];
    struct staged_listener *next;
};
struct upstream;
struct metrics_service;

/* The idle pool of one service: a LIFO stack of upstream connections (newest on top), and the
 * demand that decides how many of them the purge keeps (pool.c). */
struct pool {
    struct upstream *top;    /* most recently returned */
    struct upstream *bottom; /* least recently returned: evicted first */
    size_t n;
    uv_timer_t purge_timer; /* armed while connections are idle (pool_purge_interval) */
    size_t peak_in_use;     /* most connections in use at once since the last purge */
    size_t est_need;        /* recent demand: decays by half per interval, never below a peak */
};

/* One TLS session kept for resumption, with the pin of the key it was established with. */
struct resume_session {
    SSL_SESSION *session; /* owned reference, or NULL */
    uint8_t pin[PIN_LEN];
};

/* Warm attestation of one service (warm.c). */
enum warm_state {
    WARM_IDLE = 0,   /* nothing runs; warm_check() decides whether an attempt is wanted */
    WARM_CONNECTING, /* an upstream connection is being opened */
    WARM_ATTESTING,  /* its evidence is being fetched and verified */
    WARM_BACKOFF,    /* waiting for the timer before the next attempt */
};

struct warm {
    enum warm_state state;
    bool enabled;         /* the service serves clients (not `attestproxy attest`) */
    uv_timer_t timer;     /* the back-off */
    struct upstream *up;  /* the attempt's connection while CONNECTING or ATTESTING */
    uint64_t backoff_ms;  /* the delay after the next failure */
    uint64_t not_before;  /* monotonic ms: no attempt starts earlier */
    unsigned failures;    /* consecutive failed attempts */
    char last_error[320]; /* why the last attempt failed; "" after a success */
};

struct proxy_service {
    struct proxy *proxy;
    const struct service_config *cfg; /* the live configuration of this service */
    char name[CONFIG_NAME_MAX];
    struct metrics_service *metrics; /* may be NULL: updates are then no-ops */

    struct listener *listeners;
    struct client *clients;     /* every open client connection (doubly linked) */
    size_t n_clients;           /* counted against max_connections */
    size_t n_overflow;          /* connections being refused with 503 (bounded separately) */
    size_t n_tunnels;           /* WebSocket tunnels and admitted handshakes (max_tunnels) */
    struct upstream *upstreams; /* every upstream connection (doubly linked) */
    /* Bumped when a reload changes the upstream, the evidence profile or the trust root: a
     * connection opened before (still connecting or handshaking then) never passes the gate. */
    uint64_t upstream_gen;
    size_t n_upstreams;
    size_t n_upstreams_closing; /* of those, closed and not yet freed */
    struct pool pool;
    struct pinset pins;
    struct resume_session resume;

    uv_timer_t refresh_timer; /* re-attests a pin over an idle pooled connection before expiry */
    bool refresh_waiting;     /* a pin in its refresh window waits for an idle connection */
    struct warm warm;         /* attestation without traffic (warm.c) */
    bool removed;             /* gone from the configuration: draining */
    struct service_config *own_cfg; /* a removed service's private copy of its last settings */
    struct proxy_service *next;
};

struct proxy {
    struct proxy_env env; /* the loop, the live configuration and verifier, callbacks */
    SSL_CTX *ssl_ctx;     /* client context shared by every upstream connection */
    struct proxy_service *services;
    /* Listeners a reload bound before it swapped the configuration (proxy_prepare_reload),
     * each waiting for the service named in its staged_for; attached by proxy_reload(). */
    struct staged_listener *staged;
    size_t open_objects; /* listeners, clients, upstreams and service timers not yet closed */
    uint64_t next_id;    /* connection ids for logs */
    bool stopping;
    bool draining_forced;
    uv_timer_t shutdown_timer;
    bool shutdown_timer_open;
    void (*done)(void *ctx); /* proxy_shutdown()'s, called with env.ctx */
    void *attest_once; /* state of `attestproxy attest` (attest_once.c); freed with the proxy */
    uv_prepare_t pass; /* runs before each poll: batching under load (on_loop_pass) */
    bool pass_open;
    unsigned pass_reads;                   /* socket reads handled since the last poll */
    char *input_cache[CLIENT_INPUT_CACHE]; /* idle client input buffers (client.c) */
    size_t n_input_cache;
    struct http1_storage head_cache[CLIENT_INPUT_CACHE]; /* idle head storage (both ways) */
    size_t n_head_cache;
    /* One read buffer for every upstream socket: its ciphertext is handed to OpenSSL inside
     * the read callback, so no connection needs its own (upstream.c on_alloc). */
    char upstream_readbuf[UPSTREAM_READ_BUF];
};

/* Bookkeeping used by every object's final close callback: when the proxy is stopping and
 * the last object closed, the shutdown completes. */
void proxy__object_opened(struct proxy *p);
void proxy__object_closed(struct proxy *p);

/* Re-arms the service's refresh timer for the attested pin that expires first. */
void proxy__schedule_refresh(struct proxy_service *svc);

/* Calls the daemon's status callback, if any (proxy_set_status_cb). */
void proxy__status_changed(struct proxy *p);

/* True when pin entry `e` should be re-attested now: inside its refresh window, not being
 * refreshed, and not backing off after a refresh that obtained no evidence. */
bool proxy__refresh_due(const struct pin_entry *e, const struct service_config *cfg, uint64_t now);

/* `up` is about to go idle while a pin waits in its refresh window: if `up` has that pin,
 * its refresh starts over `up` (which the refresh then owns) and true is returned. */
bool proxy__refresh_on_idle(struct proxy_service *svc, struct upstream *up);

/* Cuts every connection of `svc` whose peer has `pin` (except `keep`), in-flight exchanges
 * included, and counts it as an enforcement event with `reason`. `was_pinned`: the pin was
 * just removed from the set (counted as a dropped pin); when it was not and no connection
 * used the key (a first attestation refused), nothing is logged. */
void proxy__abort_pin(struct proxy_service *svc, const uint8_t pin[PIN_LEN], struct upstream *keep,
                      const char *reason, bool was_pinned);

/* Whether a loop pass that handled `pass_reads` socket reads, with `in_flight` exchanges in
 * flight, sleeps batch_wait_us before the next poll (proxy.c, on_loop_pass): a busy pass, but
 * not one so busy that the events had gathered already, and only with enough exchanges in
 * flight that the wait hides behind other clients' work. */
bool proxy__batch_waits(unsigned pass_reads, size_t in_flight);

/* The live configuration (the owner swaps it on reload; read it at each use). */
static inline const struct config *proxy__cfg(const struct proxy *p)
{
    return *p->env.cfg;
}

/* The proxy of proxy_start() with only `service` and no listeners (`attestproxy attest`), in
 * *out. NULL when the service does not exist or the proxy cannot be created; *out, when set,
 * is closed by proxy_shutdown() either way. */
struct proxy_service *proxy__start_unlistened(const struct proxy_env *env, const char *service,
                                              struct proxy **out);

#endif
