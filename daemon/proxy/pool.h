/*
 * The idle pool of one service: upstream connections that finished an exchange and may carry
 * another, kept LIFO (the most recently used first: its TCP/TLS state is the warmest and the
 * least likely to have been closed by the enclave) and bounded by pool_max_idle (the least
 * recently used goes first). An idle connection is closed after pool_idle_timeout (keep it
 * below the enclave's keep-alive timeout), when the peer closes it or sends anything.
 *
 * A pooled connection is not trusted because it is pooled: whoever takes it passes the pin
 * check of upstream_begin_exchange() again before writing a byte.
 */
#ifndef ATTESTPROXY_PROXY_POOL_H
#define ATTESTPROXY_PROXY_POOL_H

#include <stdbool.h>

#include "proxy/pinset.h"

struct proxy_service;
struct upstream;
struct pool;

void pool_init(struct pool *p);

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

#endif
