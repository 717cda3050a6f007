/*
 * The idle pool of one service: upstream connections that finished an exchange and may carry
 * another, kept LIFO (the most recently used first: its TCP/TLS state is the warmest and the
 * least likely to have been closed by the enclave).
 *
 * How many stay is decided by demand, not by a small fixed number. A connection that finishes
 * an exchange is always pooled (up to the hard cap pool_max_idle, which bounds memory: about
 * 40 KiB per idle TLS connection, docs/architecture.md); closing it because others happen to
 * be idle at that instant would make the next request pay a full TLS handshake whenever more
 * exchanges end together than the pool keeps. Instead, every pool_purge_interval the purge
 * closes half of the connections beyond recent demand — the most connections in use at once
 * during the last interval, or an estimate of it that decays by half per interval — taking the
 * least recently used first, so a burst's surplus goes away gradually and a load that comes
 * back within a few intervals finds its connections still open. Independently, an idle
 * connection is closed after pool_idle_timeout (keep it below the enclave's keep-alive
 * timeout), when the peer closes it or sends anything.
 *
 * A pooled connection is not trusted because it is pooled: whoever takes it passes the pin
 * check of upstream_begin_exchange() again before writing a byte.
 */
#ifndef ATTESTPROXY_PROXY_POOL_H
#define ATTESTPROXY_PROXY_POOL_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "proxy/pinset.h"

struct proxy_service;
struct upstream;
struct pool;

/** Initialises the pool of `svc` and its purge timer on `loop` (one object of the proxy's
 *  accounting until pool_close() has closed the timer). */
void pool_init(struct proxy_service *svc, uv_loop_t *loop);

/** Closes the purge timer (shutdown); the pool itself must be empty or emptied by the caller. */
void pool_close(struct proxy_service *svc);

/** Pools `up` (state UP_IDLE). Returns false when the pool takes none (pool_max_idle 0, the
 *  proxy stopping, the service removed); the caller then closes it. */
bool pool_put(struct proxy_service *svc, struct upstream *up);

/** Takes the most recently pooled connection (now UP_UNVERIFIED, marked reused), or NULL. */
struct upstream *pool_take(struct proxy_service *svc);

/** Takes an idle connection whose peer has `pin`, or NULL (for refreshing that pin). */
struct upstream *pool_take_pin(struct proxy_service *svc, const uint8_t pin[PIN_LEN]);

/** True when an idle connection whose peer has `pin` is in the pool. */
bool pool_has_pin(const struct proxy_service *svc, const uint8_t pin[PIN_LEN]);

/** Unlinks `up` if pooled (upstream_close() calls it). */
void pool_remove(struct proxy_service *svc, struct upstream *up);

/** Closes every pooled connection; returns how many. */
size_t pool_close_all(struct proxy_service *svc, const char *why);

/** A connection of `svc` was opened or taken from the pool: records the demand the purge
 *  keeps connections for. */
void pool_note_in_use(struct proxy_service *svc);

/**
 * The purge rule, a pure function. `in_use` connections are in use now and `idle` are pooled;
 * `peak` is the most in use at once during the interval that just ended and `*est_need` the
 * demand estimated so far. Demand is max(peak, *est_need, 1): one idle connection is left to
 * pool_idle_timeout, so that a lone request after a quiet spell finds it. Returns how many idle
 * connections to close now — half of the connections beyond demand, rounded up, at most `idle`
 * — and moves `*est_need` halfway towards `peak` (never below it).
 */
size_t pool_purge_count(size_t in_use, size_t idle, size_t peak, size_t *est_need);

#endif
