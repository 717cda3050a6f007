/*
 * What the files of one client connection share (not part of the proxy's interface):
 *
 *   client.c    the connection: accept, read, write, timers, drain, linger, close, and the
 *               client side of backpressure
 *   exchange.c  one request/response exchange: the request checks, buffered validation, the
 *               input loop, the proxy's own answers and the end of an exchange
 *   acquire.c   obtaining an attested upstream connection for the exchange (pool, connect,
 *               the gate, attestation over that connection), letting it go, the retry
 *   relay.c     the relay proper: the request head written up, the response head rewritten,
 *               the upstream's events while the exchange runs
 *   access.c    the service's Host allow-list and bearer token
 *   bufcache.c  the per-proxy caches of input buffers and head storage
 *
 * A request goes client.c (bytes in) -> exchange.c (head checked) -> acquire.c (connection
 * obtained, the gate passed) -> relay.c (head up, response down) -> exchange.c (the exchange
 * ends) -> client.c (next request, or flush and close). Names shared between these files have
 * the double-underscore prefix of the file that defines them.
 */
#ifndef ATTESTPROXY_PROXY_CLIENT_INTERNAL_H
#define ATTESTPROXY_PROXY_CLIENT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "proxy/client.h"
#include "proxy/deadline.h"
#include "proxy/errors.h"
#include "proxy/http1.h"
#include "proxy/websocket.h"

struct proxy_service;
struct tunnel;
struct upstream;

#define MAX_ATTEMPTS 3           /* upstream connections tried for one request (acquire.c) */
#define LAST_CHUNK   "0\r\n\r\n" /* the end of a chunked body, without trailers */

enum client_state {
    CLIENT_HEAD = 0,   /* reading a request head */
    CLIENT_CONNECTING, /* obtaining an attested upstream connection */
    CLIENT_RELAYING,   /* request up, response down */
    CLIENT_FLUSHING,   /* the last response is being written; then LINGER */
    CLIENT_LINGER,     /* write side shut; unread input discarded until EOF or LINGER_MS */
    CLIENT_TUNNEL,     /* a WebSocket tunnel (tunnel.c) after a 101; then FLUSHING or CLOSING */
    CLIENT_CLOSING,
};

enum timer_kind {
    TIMER_NONE = 0,
    TIMER_IDLE,        /* client_idle_timeout: no byte of a next request yet */
    TIMER_HEADER,      /* client_header_timeout: the head must be complete */
    TIMER_FIRST_BYTE,  /* first_byte_timeout: request sent, no response byte yet */
    TIMER_STREAM_IDLE, /* stream_idle_timeout: a body is moving and must keep moving */
    TIMER_LINGER,
    TIMER_DRAIN,  /* shutting down: an idle connection's last chance to bring a request */
    TIMER_TUNNEL, /* a tunnel's idle time, maximum life and pin freshness (tunnel.c) */
};

/* How a response body is written to the client. */
enum body_mode {
    BODY_NONE = 0,
    BODY_RAW,     /* as received (Content-Length, or until close for HTTP/1.0 clients) */
    BODY_CHUNKED, /* re-framed as chunks, one per piece received (SSE events flow through) */
};

/* How far the request of an exchange has been read (and, once relaying, forwarded). Set with
 * exchange__set_req_phase(): head -> body -> done, or head -> done for a request without a
 * body. */
enum req_phase {
    REQ_HEAD = 0, /* the head is not complete */
    REQ_BODY,     /* the head was admitted; body bytes are still to come */
    REQ_DONE,     /* the whole request was read */
};

/* How far the response of an exchange has come. Set with exchange__set_resp_phase():
 * none -> head -> body -> done, each step once. */
enum resp_phase {
    RESP_NONE = 0, /* no byte from the upstream yet: the request may still be retried */
    RESP_HEAD,     /* bytes came, the final head is not complete (interims are dropped) */
    RESP_BODY,     /* the final head was rewritten (held or written): the client has an answer */
    RESP_DONE,     /* the response is complete */
};

/* Where obtaining the exchange's upstream connection stands (acquire.c). Set with
 * exchange__set_acquire(): due -> started -> (waiting_warm -> due | due for a new attempt). */
enum acquire_step {
    ACQUIRE_DUE = 0,      /* the input loop runs acquire__upstream() at its next pass */
    ACQUIRE_STARTED,      /* it ran for this attempt: connecting, attesting, or relaying */
    ACQUIRE_WAITING_WARM, /* it waits for the service's warm attestation (client_warm_done) */
};

/*
 * One request/response exchange. Zeroed between requests. Its states are the three phase
 * enums above; the bools that remain are independent facts (what the request asked for, what
 * went up already) or backpressure on one direction each (body_blocked, up_paused), which can
 * hold at the same time and in any phase.
 */
struct exchange {
    llhttp_method_t method;
    bool method_known; /* llhttp's method 0 is DELETE: a request refused earlier logs "-" */
    bool head_request;
    bool http10;
    bool keep_alive; /* the client allows another request after this one */
    bool expect_continue;
    enum http1_framing req_framing;
    uint64_t req_content_length;
    uint64_t req_body_bytes;
    uint64_t max_body; /* max_body_size when the head was admitted: a reload does not change
                          the limit of a body already streaming (0 = none) */
    char *up_head;     /* the rewritten request head; kept for a retry until a response byte */
    char *held;        /* the response head, held until body bytes join it (client__write_parts) */
    size_t held_len;
    size_t up_head_len;
    enum req_phase req_phase;
    bool body_checked; /* the whole chunked body was in hand and valid before it went up */
    size_t ahead_len;  /* input bytes the last look-ahead saw (exchange__body_valid_so_far) */
    bool body_sent;    /* a request body byte went upstream: never replayed after that */

    bool ws; /* an admitted WebSocket handshake: holds one of the service's max_tunnels */
    char ws_key[WS_KEY_LEN + 1];

    enum acquire_step acquire;
    unsigned attempts;
    struct upstream *up;
    bool reused;
    bool body_blocked; /* parsing stopped: the upstream's write queue is full */
    bool up_paused;    /* upstream reading stopped: the client's write queue is full */

    bool resp_parser_ready;
    struct http1_parser resp;
    enum resp_phase resp_phase;
    bool resp_keep_alive;
    enum body_mode body_mode;
    unsigned status;

    uint64_t started_ms;
    uint64_t bytes_up, bytes_down;
    const char *error_code; /* set when the proxy answered itself */
};

struct client {
    struct proxy_service *svc;
    uint64_t id;
    uint64_t listener_id; /* the listener that accepted it */
    enum client_state state;
    union {
        uv_tcp_t tcp;
        uv_pipe_t pipe;
        uv_stream_t stream;
        uv_handle_t handle;
    } h;
    struct deadline deadline; /* of timer_kind */
    uv_shutdown_t shutdown_req;
    enum timer_kind timer_kind;
    int pending_closes;
    bool is_unix;
    bool overflow; /* refused beyond max_connections */
    bool counted;  /* counted in svc->n_clients */

    char *in; /* CLIENT_INPUT_MAX bytes of unparsed input, lent only while needed (bufcache) */
    size_t in_off, in_len;
    bool reading;
    bool peer_eof;
    bool close_after; /* close once the response in progress is written */
    size_t write_queued;
    bool out_blocked; /* the next pipelined request waits for write_queued to drain */

    struct http1_parser req;
    /* The request parser stopped (HTTP1_PAUSED) and must be resumed before it parses again:
     * at a head whose body follows while the request phase is REQ_BODY (relay__start()
     * resumes it), at the message end once it is REQ_DONE (the next exchange resumes it). */
    bool req_paused;
    bool processing; /* inside exchange__process_input() */
    bool again;      /* it was asked for while running */
    enum proxy_error pending_err;

    struct exchange ex;
    struct tunnel *tunnel; /* after a 101 (CLIENT_TUNNEL and its end), else NULL */
    struct client *prev, *next;
};

/* The request parser waits at an admitted head for its upstream connection. */
static inline bool client__paused_at_head(const struct client *c)
{
    return c->req_paused && c->ex.req_phase == REQ_BODY;
}

/* ---- client.c: the connection ------------------------------------------------------------ */

/* Moves the connection to `to` (a legal transition: asserted), logged at debug. */
void client__set_state(struct client *c, enum client_state to);

/* Logs one transition of the connection or its exchange at debug: event=<event> from= to=. */
void client__log_transition(const struct client *c, const char *event, const char *from,
                            const char *to);

/* Arms the connection's one deadline for `kind` (TIMER_NONE stops it). */
void client__set_timer(struct client *c, enum timer_kind kind);

/* Progress on a streaming body pushes the stream-idle deadline back. */
void client__touch_stream(struct client *c);

/* Writes to the client (see client.c). Each returns 0, or closes the client and returns < 0. */
int client__write_parts(struct client *c, const uv_buf_t *parts, size_t n);
int client__write_raw(struct client *c, const char *data, size_t len);
int client__flush_held(struct client *c);

/* The final response is queued: FLUSHING, then linger or close. */
void client__to_flushing(struct client *c);

/* False once the client half-closed and no byte of a further request is buffered. */
bool client__more_requests(const struct client *c);

/* After the input loop: compacts the input buffer, ends a connection whose client is gone,
 * gives an idle connection's buffers back and starts or stops reading. */
void client__after_input(struct client *c);

/* ---- exchange.c: one exchange ------------------------------------------------------------ */

/* Parses and acts on buffered input until it has to wait (re-entrant: a call from inside
 * runs the loop again). May close the client. */
void exchange__process_input(struct client *c);

/* The proxy answers the request itself (an error) and goes on with the next request, or
 * flushes and closes (`force_close`, or when the connection cannot be kept). */
void exchange__respond_error(struct client *c, enum proxy_error e, const char *msg,
                             unsigned retry_after_s, bool force_close);

/* The response is complete: the upstream goes back to the pool when it can carry another. */
void exchange__finish(struct client *c, bool upstream_reusable);

/* The phases of the exchange (the enums above): each asserts that the step is legal and logs
 * it at debug. */
void exchange__set_req_phase(struct client *c, enum req_phase to);
void exchange__set_resp_phase(struct client *c, enum resp_phase to);
void exchange__set_acquire(struct client *c, enum acquire_step to);

/* The request parser's callbacks (client_accept() creates the parser). */
extern const struct http1_callbacks exchange__request_cbs;

/* Frees what the exchange holds (its upstream connection must be released already) and
 * zeroes it. */
void exchange__free(struct client *c);

/* Buffered validation of a chunked body (exchange.c). False when the request was refused. */
bool exchange__body_valid_so_far(struct client *c);

/* True when a message's Transfer-Encoding is absent or exactly "chunked". */
bool exchange__transfer_encoding_ok(const struct http1_head *h);

/* ---- acquire.c: the upstream connection of an exchange ----------------------------------- */

/* Obtains an attested connection for the exchange: one from the pool that passes the gate,
 * else a new one (attested over itself); or waits for the service's warm attestation. */
void acquire__upstream(struct client *c);

/* Lets go of the exchange's upstream connection (closed, or left to its attestation). */
void acquire__release(struct client *c, const char *why);

/* The upstream connection failed during the exchange: retried when allowed, else answered. */
void acquire__upstream_failed(struct client *c, const char *msg);

/* ---- relay.c: the relay ------------------------------------------------------------------ */

/* `up` passed the gate for this exchange (UP_BUSY): the head goes up, the relay starts. */
void relay__start(struct client *c, struct upstream *up);

#endif
