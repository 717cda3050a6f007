/*
 * Access rules of a service, applied to each request head before anything else happens to it:
 * the Host allow-list (421) and the bearer token (401). The comparisons themselves are the
 * pure functions of http1.h (http1_host_allowed(), http1_bearer_matches()); this module knows
 * the service's settings: the configured list, or by default the loopback names and the
 * addresses the service listens on.
 */
#ifndef ATTESTPROXY_PROXY_ACCESS_H
#define ATTESTPROXY_PROXY_ACCESS_H

#include <stdbool.h>
#include <stddef.h>

#include "base/config.h"
#include "proxy/errors.h"

struct http1_head;

/* Room for access_check()'s message (a Host value is quoted up to 200 bytes). */
#define ACCESS_MSG_MAX (CONFIG_HOST_MAX + 96)

/**
 * Checks the complete request head `h` (with at most one Host field: counted by the caller)
 * against service `cfg`: its Host, when present, must be allowed; when a token is configured,
 * exactly one Authorization field must carry it. Returns true when the request may go on;
 * otherwise sets *err and writes the message for the client into `msg` (`cap` bytes).
 */
bool access_check(const struct service_config *cfg, const struct http1_head *h,
                  enum proxy_error *err, char *msg, size_t cap);

#endif
