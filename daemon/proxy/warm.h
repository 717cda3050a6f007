/*
 * Warm attestation (warm_attestation = yes, the default): a service attests its enclave on its
 * own, without waiting for a request, at start and whenever it has no fresh pin, and opens a
 * connection for the refresh of a pin that has no idle pooled one. One attempt per service at a
 * time, over one upstream connection: it passes the same verifier as any other, and once
 * attested the connection goes to the pool, so that the first request finds it warm. A failed
 * attempt is retried after a back-off (WARM_BACKOFF_MIN_MS doubling to WARM_BACKOFF_MAX_MS, and
 * never before the failed key's negative_cache ends); the reason is kept for /readyz and STATUS=.
 *
 * The trust decision stays with the gate (upstream_begin_exchange()): this module only decides
 * *when* to attest, never admits a connection to carry requests. Everything runs on the loop.
 */
#ifndef ATTESTPROXY_PROXY_WARM_H
#define ATTESTPROXY_PROXY_WARM_H

#include <stdbool.h>
#include <stddef.h>

#define WARM_BACKOFF_MIN_MS 1000u
#define WARM_BACKOFF_MAX_MS 30000u

struct proxy_service;

/** Initialises the service's warm state and its timer (one proxy object until warm_close()). */
void warm_init(struct proxy_service *svc);

/** The service serves clients from now on: warm attempts may start (warm_check()). */
void warm_enable(struct proxy_service *svc);

/**
 * Starts an attempt when the service wants one (no fresh pin, or a pin due for refresh with no
 * idle pooled connection), it is enabled, and no attempt or back-off runs. Cheap; called after
 * every change of the attested key set. Callbacks: none from inside the call.
 */
void warm_check(struct proxy_service *svc);

/** The service stops (shutdown, removal): the timer stops and an attempt's connection closes. */
void warm_stop(struct proxy_service *svc);

/** Closes the timer; the proxy object is released in its close callback. */
void warm_close(struct proxy_service *svc);

/** True while an attempt runs and the service has no fresh pin: a request waits for it rather
 *  than attesting a connection of its own (client.c acquire()). */
bool warm_in_progress(const struct proxy_service *svc);

/**
 * Why the service is not (yet) attested, for /readyz and STATUS=: the state ("attesting",
 * "backoff", "off"...) in `*state` and a sentence in `why`. Only meaningful when the service has
 * no fresh pin.
 */
void warm_reason(const struct proxy_service *svc, const char **state, char *why, size_t cap);

#endif
