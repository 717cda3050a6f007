/*
 * The admin listener: a tiny HTTP/1.1 server on loopback TCP or a Unix socket, separate from the
 * service listeners, serving
 *
 *   GET /healthz      200 "ok\n" while the event loop runs
 *   GET /readyz       200 "ready\n" when source->ready() says so, else 503 "not ready\n"
 *   GET /metrics      the metrics registry, Prometheus text 0.0.4
 *   GET /attestation  application/json from source->attestation(), Cache-Control: no-store
 *
 * HEAD is answered like GET without the body; any other method gets 405 with "Allow: GET, HEAD";
 * an unknown path 404. Each connection carries one request and is then closed
 * ("Connection: close"): the endpoints are polled rarely, and one exchange per connection keeps
 * the state machine trivial. Requests are parsed by the relay's strict parser (proxy/http1.h),
 * so a head a service listener refuses as malformed is refused here too: 400, with the parser's
 * reason in the body. A request head larger than ADMIN_REQUEST_MAX gets 431, a target of 1 KiB
 * or more 414, a request with a body 413; all close the connection. The whole request must arrive
 * within request_timeout and the response must drain within the same time, or the connection is
 * closed. On TCP, a Host header naming anything other than loopback (localhost, 127.0.0.0/8,
 * [::1]) gets 421, so a DNS-rebinding web page cannot read the endpoints through a browser.
 *
 * The server only reads through `struct admin_source`; it never changes daemon state. All of it
 * runs on the loop thread.
 */
#ifndef ATTESTPROXY_OPS_ADMIN_H
#define ATTESTPROXY_OPS_ADMIN_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "base/config.h"

struct metrics;
struct admin;

#define ADMIN_REQUEST_MAX     8192 /* request line + headers */
#define ADMIN_RESPONSE_MAX    (8u << 20)
#define ADMIN_DEFAULT_CLIENTS 32
#define ADMIN_DEFAULT_TIMEOUT 10000 /* ms */

/*
 * What the admin endpoints report. Every callback runs on the loop thread, synchronously while
 * a response is built, and must not close the admin server.
 */
struct admin_source {
    void *ctx; /* passed to every callback */

    /* /readyz: true when the daemon is ready (listeners up, and, with
     * ready_requires_attestation, every service attested; false while stopping).
     * NULL: always ready. */
    bool (*ready)(void *ctx);

    /* /readyz when not ready: a NEW reference to a JSON object saying why (the server takes
     * it), sent as the 503 body. NULL (absent or returning NULL): the body is "not ready". */
    json_t *(*readiness)(void *ctx);

    /* /attestation: a NEW reference to a JSON object following the schema in
     * docs/operations.md ("The /attestation document"); the admin server takes the reference
     * and json_decref()s it. NULL (callback absent or returning NULL): 503 with a JSON error. */
    json_t *(*attestation)(void *ctx);

    /* /metrics: the registry to render (borrowed; must outlive the server). NULL: 404. */
    const struct metrics *metrics;

    /* Wall-clock time in Unix milliseconds for pin_expiry_seconds. NULL: CLOCK_REALTIME. */
    uint64_t (*now_ms)(void *ctx);
};

struct admin_options {
    struct listen_addr addr;     /* cfg->daemon.admin: loopback host:port or a Unix path */
    int fd;                      /* >= 0: adopt this listening socket (socket activation) instead
                                    of binding addr; ownership passes to the server. -1: bind. */
    unsigned unix_mode;          /* permissions of a Unix socket we bind; 0 = 0660 */
    uint64_t request_timeout_ms; /* 0 = ADMIN_DEFAULT_TIMEOUT */
    uint32_t max_clients;        /* concurrent connections; 0 = ADMIN_DEFAULT_CLIENTS; beyond
                                    it new connections are accepted and closed at once */
};

/** Fills `opt` with the defaults for listening on `addr` (fd -1, timeouts and limits 0). */
void admin_options_init(struct admin_options *opt, const struct listen_addr *addr);

/**
 * Creates the admin server and starts listening. `src` is copied; its ctx and metrics must
 * outlive the server. A Unix socket path is unlinked first when a stale socket sits there (never
 * a live one, UV_EADDRINUSE, nor another kind of file, UV_EEXIST), chmod'ed to unix_mode after
 * bind, and unlinked again when the server closes (unless it was adopted through opt->fd).
 *
 * Returns 0 with the server in `*out`, or a negative libuv/errno code (UV_EADDRINUSE,
 * UV_EACCES, -EINVAL for an address that is not loopback, ...) with `*out` NULL: no close is
 * needed then, and an adopted fd has been closed. (A listener handle that was already
 * initialised is closed and freed by the loop's next iteration: run the loop before
 * uv_loop_close(), as the daemon always does.)
 * After 0, the owner must call admin_close() exactly once before closing the loop.
 */
int admin_start(uv_loop_t *loop, const struct admin_options *opt, const struct admin_source *src,
                struct admin **out);

/**
 * The TCP port the server listens on (useful after binding port 0), or a negative code for a
 * Unix socket.
 */
int admin_port(const struct admin *a);

/**
 * Stops accepting, closes every client connection (in-flight responses are cut) and the
 * listener. `done(arg)` (may be NULL) is called exactly once, from the loop, after every handle
 * of the server has closed and its memory has been freed. Idempotent: a second call does nothing.
 */
void admin_close(struct admin *a, void (*done)(void *arg), void *arg);

/**
 * Formats a Unix time in milliseconds as an RFC 3339 UTC string ("2024-05-01T12:00:00.000Z")
 * for the /attestation document. Returns a new json_t string reference, or NULL on failure.
 */
json_t *admin_json_time(uint64_t unix_ms);

#endif
