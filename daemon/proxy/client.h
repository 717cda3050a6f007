/*
 * One client connection: HTTP/1.1 from a local application, relayed request by request over an
 * attested upstream connection.
 *
 * States (client__set_state() logs every transition at debug level; the files that implement a
 * connection and their internal interface: client_internal.h):
 *   HEAD        reading a request head (client_header_timeout; client_idle_timeout between
 *               keep-alive requests)
 *   CONNECTING  the head is valid; an upstream connection is being obtained: from the pool, or
 *               connected, and attested over that same connection when its pin is not fresh
 *   RELAYING    the request goes up (head, then the body as it arrives) and the response comes
 *               down as it arrives; first_byte_timeout, then stream_idle_timeout
 *   CLOSING     closing; freed in the last close callback
 * Requests on one connection are handled one at a time in order: pipelined bytes stay in the
 * bounded input buffer, unparsed, until the previous response is complete.
 *
 * Backpressure: the request body is parsed (and so forwarded) only while the upstream's write
 * queue is below UPSTREAM_WRITE_HIGH; otherwise the input buffer fills and reading stops. The
 * upstream is read only while the client's write queue is below CLIENT_WRITE_HIGH, and the next
 * pipelined request is parsed only then too (a client that pipelines without reading gets no
 * further answers queued). No body is ever held in full: at most CLIENT_INPUT_MAX + the two
 * queue bounds per connection.
 */
#ifndef ATTESTPROXY_PROXY_CLIENT_H
#define ATTESTPROXY_PROXY_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#define CLIENT_INPUT_MAX (64 * 1024)
/* One read takes at most this much: an upload's body then goes to the enclave in writes of
 * two TLS records, which it starts decrypting while the next piece is read, instead of 64 KiB
 * writes that loopback TCP splits at its MSS (docs/benchmarks.md, "Upload write size"). */
#define CLIENT_READ_MAX     (32 * 1024)
#define CLIENT_INPUT_CACHE  64 /* idle input buffers kept for reuse, per proxy */
#define CLIENT_WRITE_HIGH   (256 * 1024)
#define CLIENT_WRITE_LOW    (64 * 1024)
#define CLIENT_OVERFLOW_MAX 64 /* connections beyond max_connections being refused at once */

struct proxy_service;
struct client;

/**
 * Accepts a connection from `server` for `svc`. Beyond max_connections the connection is
 * answered "503 too_many_connections" and closed. Errors are logged. Returns false when the
 * connection could not be taken at all (no memory for it): it is still queued, and libuv
 * accepts nothing more on `server` until it is, so the caller tries again later.
 */
bool client_accept(struct proxy_service *svc, uv_stream_t *server, bool is_unix,
                   uint64_t listener_id);

/** Closes the connection (idempotent). */
void client_close(struct client *c, const char *why);

/**
 * Shutdown: closes the connection now if it is between requests, else marks it to close after
 * the response in progress (which then carries "Connection: close").
 */
void client_drain(struct client *c);

/**
 * A reload closed (or narrowed the permissions of) listener `listener_id`: its clients whose
 * request has not been admitted yet (still reading a head) are closed with `why`; an exchange
 * in progress finishes and its answer carries "Connection: close".
 */
void client_drain_listener(struct proxy_service *svc, uint64_t listener_id, const char *why);

/* client_drain_listener() for every listener of the service: a reload removed the service. */
#define CLIENT_ANY_LISTENER UINT64_MAX

/** client_drain() or client_close() on every client of `svc`. */
void client_drain_all(struct proxy_service *svc);

/* The service's warm attestation attempt ended (warm.c): requests that waited for it in
 * acquire__upstream() go on, finding its connection in the pool or opening their own. */
void client_warm_done(struct proxy_service *svc);
void client_close_all(struct proxy_service *svc, const char *why);

#endif
