/*
 * The metrics registry and its Prometheus text exposition (format 0.0.4).
 *
 * Every metric family is fixed here, with fixed label sets (docs/operations.md describes each).
 * Label values are bounded by construction: the service name comes from the configuration,
 * status codes are numbers in 100..599, and every other label value comes from an enum below
 * or, for attestation reasons, from a fixed table (verify_reason_name() and the proxy's own
 * failure names) — never from a peer or a request. As a backstop, the registry refuses to grow
 * past METRICS_SERVICES_MAX services and METRICS_REASONS_MAX reasons.
 *
 * Hot path: the relay resolves a `struct metrics_service *` once per service (when it starts or
 * reloads) and updates through it with plain integer increments; no string is looked up per
 * request. Every update function accepts a NULL handle and then does nothing, so a service whose
 * handle could not be created (registry full) keeps working, unmeasured.
 *
 * Threading: the registry is used from the loop thread only (updates and rendering alike), so
 * counters are plain integers.
 */
#ifndef ATTESTPROXY_BASE_METRICS_H
#define ATTESTPROXY_BASE_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define METRICS_SERVICES_MAX    256
#define METRICS_REASONS_MAX     128        /* distinct attestation reasons, "other" included */
#define METRICS_REASON_NAME_MAX 64         /* reason names are [a-z0-9_]{1,63} */
#define METRICS_RENDER_MAX      (8u << 20) /* the exposition is refused beyond 8 MiB */

struct metrics;
struct metrics_service;

/* upstream_connections_total{result}: how one upstream connection attempt ended. */
enum metrics_upstream_result {
    METRICS_UPSTREAM_OK = 0,          /* "ok": TCP connected and TLS handshake done */
    METRICS_UPSTREAM_RESOLVE_ERROR,   /* "resolve_error": the upstream name did not resolve */
    METRICS_UPSTREAM_CONNECT_ERROR,   /* "connect_error": refused, unreachable, reset */
    METRICS_UPSTREAM_CONNECT_TIMEOUT, /* "connect_timeout": connect_timeout elapsed */
    METRICS_UPSTREAM_TLS_ERROR,       /* "tls_error": the TLS handshake failed */
    METRICS_UPSTREAM_RESULT_COUNT_
};

/* upstream_proxy_connects_total{result}: how one CONNECT through an upstream proxy ended. */
enum metrics_proxy_result {
    METRICS_PROXY_OK = 0,          /* "ok": the proxy answered 2xx; the tunnel is open */
    METRICS_PROXY_CONNECT_ERROR,   /* "connect_error": the proxy did not resolve or refused TCP */
    METRICS_PROXY_CONNECT_TIMEOUT, /* "connect_timeout": upstream_proxy_connect_timeout elapsed */
    METRICS_PROXY_REFUSED,         /* "refused": the proxy answered CONNECT with another status */
    METRICS_PROXY_TIMEOUT,         /* "timeout": upstream_proxy_timeout elapsed before the answer */
    METRICS_PROXY_BAD_RESPONSE,    /* "bad_response": malformed answer, or closed before one */
    METRICS_PROXY_RESULT_COUNT_
};

/* attestations_total{verdict}. */
enum metrics_verdict {
    METRICS_VERDICT_VERIFIED = 0, /* "verified": the pin was added (reason "ok") */
    METRICS_VERDICT_REJECTED,     /* "rejected": evidence obtained, verification refused it */
    METRICS_VERDICT_ERROR,        /* "error": no evidence to verify (timeout, HTTP error, ...) */
    METRICS_VERDICT_COUNT_
};

/* bytes_relayed_total{direction}. */
enum metrics_direction {
    METRICS_DIR_TO_UPSTREAM = 0, /* "to_upstream": request bytes written to the enclave */
    METRICS_DIR_TO_CLIENT,       /* "to_client": response bytes written to the local client */
    METRICS_DIR_COUNT_
};

/* enforcement_events_total{event}: what live enforcement (BRIEF §5) did. */
enum metrics_enforce_event {
    METRICS_ENFORCE_PIN_DROPPED = 0,   /* "pin_dropped": an attested key left the set */
    METRICS_ENFORCE_CONNECTION_CLOSED, /* "connection_closed": an idle pooled connection closed */
    METRICS_ENFORCE_EXCHANGE_ABORTED,  /* "exchange_aborted": an in-flight exchange was cut */
    METRICS_ENFORCE_EVENT_COUNT_
};

/* enforcement_events_total{reason}: why. */
enum metrics_enforce_reason {
    METRICS_ENFORCE_POLICY_CHANGED = 0,   /* "policy_changed": SIGHUP or the policy file */
    METRICS_ENFORCE_REATTESTATION_FAILED, /* "reattestation_failed": a known pin failed */
    METRICS_ENFORCE_TTL_LAPSED,           /* "ttl_lapsed": expired without a refresh */
    METRICS_ENFORCE_REASON_COUNT_
};

/* tunnels_closed_total{reason}: why a WebSocket tunnel ended (proxy/tunnel.c). */
enum metrics_tunnel_close {
    METRICS_TUNNEL_CLIENT_CLOSED = 0,  /* "client_closed": the client closed or failed */
    METRICS_TUNNEL_UPSTREAM_CLOSED,    /* "upstream_closed": the enclave closed */
    METRICS_TUNNEL_UPSTREAM_ERROR,     /* "upstream_error": the enclave connection failed */
    METRICS_TUNNEL_IDLE_TIMEOUT,       /* "idle_timeout": tunnel_idle_timeout */
    METRICS_TUNNEL_MAX_LIFE,           /* "max_life": tunnel_max_life */
    METRICS_TUNNEL_POLICY_CHANGED,     /* "policy_changed": policy, profile, upstream or root */
    METRICS_TUNNEL_ATTESTATION_FAILED, /* "attestation_failed": the key failed re-attestation */
    METRICS_TUNNEL_TTL_LAPSED,         /* "ttl_lapsed": the key's pin expired */
    METRICS_TUNNEL_SHUTDOWN,           /* "shutdown": the daemon or the listener stops */
    METRICS_TUNNEL_CLOSE_COUNT_
};

/** Creates an empty registry; NULL when out of memory. Free with metrics_free(). */
struct metrics *metrics_new(void);

/** Frees the registry and every service handle in it; NULL is a no-op. */
void metrics_free(struct metrics *m);

/**
 * Returns the handle of service `name`, creating it (all values zero) on first use. Handles
 * stay valid until metrics_free(), across reloads: a service removed from the configuration
 * keeps its counters (they must never go backwards) — the proxy should set its gauges to zero.
 * Returns NULL for an empty or over-long name (CONFIG_NAME_MAX), when the registry already holds
 * METRICS_SERVICES_MAX services, or when out of memory.
 */
struct metrics_service *metrics_service(struct metrics *m, const char *name);

/** attestproxy_requests_total{service,code}: one response sent; codes outside 100..599 are
 *  counted as code="other". */
void metrics_inc_requests(struct metrics_service *ms, unsigned code);

/** attestproxy_upstream_connections_total{service,result}: one connection attempt ended. */
void metrics_inc_upstream_connection(struct metrics_service *ms, enum metrics_upstream_result r);

/** attestproxy_upstream_proxy_connects_total{service,result}: one CONNECT through the
 *  service's upstream proxy ended (services without a proxy never count one). */
void metrics_inc_upstream_proxy_connect(struct metrics_service *ms, enum metrics_proxy_result r);

/** attestproxy_upstream_connections_open{service}: +1 when one opens, -1 when it closes. */
void metrics_add_upstream_open(struct metrics_service *ms, int delta);

/** attestproxy_pool_reuse_total{service}: a request was sent on a reused pooled connection. */
void metrics_inc_pool_reuse(struct metrics_service *ms);

/**
 * attestproxy_attestations_total{service,verdict,reason} and
 * attestproxy_attestation_duration_seconds{service}: one attestation finished after
 * `duration_ns` (uv_hrtime() difference). `reason` must come from a fixed table: "ok" for a
 * verified document, verify_reason_name() for a rejection, the proxy's own names ("timeout",
 * "http_status", ...) for errors; NULL means "ok" for VERIFIED and "unknown" otherwise. A name
 * that is not [a-z0-9_]{1,63}, or a new name once METRICS_REASONS_MAX are known, is counted as
 * reason="other". Not a hot path: the reason is found by a linear search.
 */
void metrics_observe_attestation(struct metrics_service *ms, enum metrics_verdict verdict,
                                 const char *reason, uint64_t duration_ns);

/**
 * attestproxy_pin_expiry_seconds{service}: the earliest expiry (Unix time in ms, wall clock) of
 * the service's attested pins; 0 when it has none, in which case the series is not exposed.
 * The rendered value is that time minus the render time, so it falls between updates.
 */
void metrics_set_pin_expiry(struct metrics_service *ms, uint64_t earliest_expiry_unix_ms);

/**
 * attestproxy_policy_bundle_refused_total{service,reason}: a policy bundle was refused;
 * `reason` comes from a fixed table (bundle_verdict_name(): "bad_signature", "rollback", ...)
 * and is interned like attestation reasons.
 */
void metrics_inc_bundle_refused(struct metrics_service *ms, const char *reason);

/** attestproxy_policy_generation: bumped when what is trusted changes (a reload that changes a
 *  service's policy, evidence profile or upstream, adds or removes a service, or changes the
 *  trust root); a reload that changes nothing of that leaves it. */
void metrics_set_policy_generation(struct metrics *m, uint64_t generation);

/** attestproxy_reloads_total{result="applied"|"rejected"}: configuration reloads. */
void metrics_inc_reload(struct metrics *m, bool applied);

/** attestproxy_bytes_relayed_total{service,direction}: `n` body/header bytes relayed. */
void metrics_add_bytes(struct metrics_service *ms, enum metrics_direction d, uint64_t n);

/** attestproxy_enforcement_events_total{service,event,reason}: one enforcement action. */
void metrics_inc_enforcement(struct metrics_service *ms, enum metrics_enforce_event e,
                             enum metrics_enforce_reason r);

/** attestproxy_client_connections_open{service}: +1 on accept, -1 on close. */
void metrics_add_client_open(struct metrics_service *ms, int delta);

/** attestproxy_tunnels_open{service}: +1 when a WebSocket tunnel starts, -1 when it ends. */
void metrics_add_tunnel_open(struct metrics_service *ms, int delta);

/** attestproxy_tunnels_closed_total{service,reason}: one tunnel ended. */
void metrics_inc_tunnel_closed(struct metrics_service *ms, enum metrics_tunnel_close why);

/** attestproxy_tunnel_bytes_total{service,direction}: `n` bytes relayed through a tunnel (also
 *  counted in bytes_relayed_total). */
void metrics_add_tunnel_bytes(struct metrics_service *ms, enum metrics_direction d, uint64_t n);

/**
 * Renders the whole registry as Prometheus text exposition 0.0.4 (serve it as
 * "text/plain; version=0.0.4; charset=utf-8"). `now_unix_ms` is the wall-clock time used for
 * pin_expiry_seconds. On success returns 0 and a malloc'd NUL-terminated text in `*out` (length
 * in `*len`) that the caller free()s. Returns -ENOMEM, or -E2BIG past METRICS_RENDER_MAX.
 */
int metrics_render(const struct metrics *m, uint64_t now_unix_ms, char **out, size_t *len);

/* Label values of the enums above, e.g. "connect_timeout"; never NULL. */
const char *metrics_upstream_result_name(enum metrics_upstream_result r);
const char *metrics_proxy_result_name(enum metrics_proxy_result r);
const char *metrics_verdict_name(enum metrics_verdict v);
const char *metrics_direction_name(enum metrics_direction d);
const char *metrics_enforce_event_name(enum metrics_enforce_event e);
const char *metrics_enforce_reason_name(enum metrics_enforce_reason r);
const char *metrics_tunnel_close_name(enum metrics_tunnel_close r);

#endif
