/*
 * One client connection (client.h): accept and the max_connections limit, reading into the
 * input buffer, writing answers (held response head, uv_try_write, queued copies), the
 * connection's one deadline and what each kind of timeout does, backpressure on the client
 * side, drain on shutdown or reload, flush, linger and close. What a request does once its
 * bytes are in is the exchange's (exchange.c); client_internal.h maps the files.
 */
#include "proxy/client.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "base/log.h"
#include "base/metrics.h"
#include "proxy/bufcache.h"
#include "proxy/client_internal.h"
#include "proxy/deadline.h"
#include "proxy/errors.h"
#include "proxy/http1.h"
#include "proxy/proxy_internal.h"
#include "proxy/tunnel.h"
#include "proxy/upstream.h"

#define LINGER_MS        2000 /* after a final response, how long unread input is discarded */
#define DRAIN_IDLE_MS    1000 /* on SIGTERM, how long an idle connection may still bring a request */
#define DRAIN_RECHECK_MS 50   /* ... and how soon it is looked at again when bytes are pending */

struct client_write {
    uv_write_t req;
    struct client *c;
    size_t len;
    char data[];
};

/* ---- State, timers --------------------------------------------------------------------------- */

static const char *const state_names[] = {
    [CLIENT_HEAD] = "head",         [CLIENT_CONNECTING] = "connecting",
    [CLIENT_RELAYING] = "relaying", [CLIENT_FLUSHING] = "flushing",
    [CLIENT_LINGER] = "linger",     [CLIENT_TUNNEL] = "tunnel",
    [CLIENT_CLOSING] = "closing",
};

/* The legal transitions (client.h): a request goes head -> connecting -> relaying and back to
 * head, or on to flushing -> linger; a retry goes relaying -> connecting; the proxy may answer
 * (to head or flushing) in head, connecting and relaying; anything but closing may close. */
#ifndef NDEBUG /* read by assert() only */
#define TO(s) (1u << (s))
static const unsigned legal_next[] = {
    [CLIENT_HEAD] = TO(CLIENT_CONNECTING) | TO(CLIENT_FLUSHING) | TO(CLIENT_CLOSING),
    [CLIENT_CONNECTING] =
        TO(CLIENT_RELAYING) | TO(CLIENT_HEAD) | TO(CLIENT_FLUSHING) | TO(CLIENT_CLOSING),
    [CLIENT_RELAYING] = TO(CLIENT_CONNECTING) | TO(CLIENT_HEAD) | TO(CLIENT_FLUSHING) |
                        TO(CLIENT_TUNNEL) | TO(CLIENT_CLOSING),
    [CLIENT_TUNNEL] = TO(CLIENT_FLUSHING) | TO(CLIENT_CLOSING),
    [CLIENT_FLUSHING] = TO(CLIENT_LINGER) | TO(CLIENT_CLOSING),
    [CLIENT_LINGER] = TO(CLIENT_CLOSING),
    [CLIENT_CLOSING] = 0,
};
#undef TO
#endif

void client__log_transition(const struct client *c, const char *event, const char *from,
                            const char *to)
{
    char id[24];
    if (!log_enabled(LOG_LEVEL_DEBUG))
        return;
    snprintf(id, sizeof(id), "%llu", (unsigned long long)c->id);
    log_event(LOG_LEVEL_DEBUG, event, "service", c->svc->name, "conn", id, "from", from, "to", to,
              NULL);
}

void client__set_state(struct client *c, enum client_state to)
{
    if (c->state == to)
        return;
    assert((unsigned)c->state < sizeof(legal_next) / sizeof(legal_next[0]));
    assert(legal_next[c->state] & (1u << to));
    /* Only a connection between exchanges, or one that ends, is without an upstream
     * connection's owner: leaving for head, flushing or closing, the exchange let it go. */
    assert(to == CLIENT_RELAYING || to == CLIENT_CONNECTING || to == CLIENT_CLOSING ||
           c->ex.up == NULL);
    client__log_transition(c, "client_state", state_names[c->state], state_names[to]);
    c->state = to;
}

static void on_timer(uv_timer_t *t);

void client__set_timer(struct client *c, enum timer_kind kind)
{
    const struct service_config *cfg = c->svc->cfg;
    uint64_t ms = 0;
    c->timer_kind = kind;
    switch (kind) {
    case TIMER_IDLE:
        ms = cfg->client_idle_timeout_ms;
        break;
    case TIMER_HEADER:
        ms = cfg->client_header_timeout_ms;
        break;
    case TIMER_FIRST_BYTE:
        ms = cfg->first_byte_timeout_ms;
        break;
    case TIMER_STREAM_IDLE:
        ms = cfg->stream_idle_timeout_ms;
        break;
    case TIMER_LINGER:
        ms = LINGER_MS;
        break;
    case TIMER_DRAIN:
        ms = DRAIN_IDLE_MS;
        break;
    case TIMER_TUNNEL:
        ms = tunnel__timer_ms(c);
        break;
    case TIMER_NONE:
        break;
    }
    deadline_set(&c->deadline, ms);
}

/* Progress on a streaming body pushes the stream-idle deadline back. */
void client__touch_stream(struct client *c)
{
    if (c->timer_kind == TIMER_STREAM_IDLE)
        client__set_timer(c, TIMER_STREAM_IDLE);
}

/* ---- Closing --------------------------------------------------------------------------------- */

static void on_closed(uv_handle_t *handle)
{
    struct client *c = handle->data;
    struct proxy_service *svc = c->svc;
    struct proxy *p = svc->proxy;

    assert(c->state == CLIENT_CLOSING && c->pending_closes > 0);
    if (--c->pending_closes > 0)
        return;
    assert(c->write_queued == 0 && c->ex.up == NULL);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        svc->clients = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    if (c->counted) {
        svc->n_clients--;
        metrics_add_client_open(svc->metrics, -1);
    }
    if (c->overflow)
        svc->n_overflow--;
    http1_parser_free(&c->req);
    exchange__free(c);
    tunnel__free(c);
    if (c->in != NULL)
        bufcache_input_put(p, c->in);
    free(c);
    proxy__object_closed(p);
}

void client_close(struct client *c, const char *why)
{
    if (c->state == CLIENT_CLOSING)
        return;
    if (log_enabled(LOG_LEVEL_DEBUG)) {
        char id[24];
        snprintf(id, sizeof(id), "%llu", (unsigned long long)c->id);
        log_event(LOG_LEVEL_DEBUG, "client_close", "service", c->svc->name, "conn", id, "why", why,
                  NULL);
    }
    tunnel__client_closing(c, why);
    acquire__release(c, "client connection closed");
    client__set_state(c, CLIENT_CLOSING);
    c->pending_closes = 2;
    uv_close(&c->h.handle, on_closed);
    uv_close((uv_handle_t *)&c->deadline.timer, on_closed);
}

/* ---- Writing to the client ------------------------------------------------------------------- */

static void start_linger(struct client *c);

static void on_written(uv_write_t *req, int status)
{
    struct client_write *w = (struct client_write *)req;
    struct client *c = w->c;

    assert(c->write_queued >= w->len);
    c->write_queued -= w->len;
    free(w);
    if (c->state == CLIENT_CLOSING)
        return;
    if (status < 0) {
        client_close(c, "write to client failed");
        return;
    }
    if (c->state == CLIENT_FLUSHING) {
        if (c->write_queued == 0)
            start_linger(c);
        else
            client__touch_stream(c);
        return;
    }
    if (c->state == CLIENT_TUNNEL) {
        tunnel__client_drained(c);
        return;
    }
    if (c->state == CLIENT_RELAYING || c->out_blocked)
        client__touch_stream(c);
    /* Last: resuming may deliver buffered upstream data, or start the next pipelined request,
     * from inside this call. */
    if (c->ex.up_paused && c->write_queued < CLIENT_WRITE_LOW && c->ex.up != NULL) {
        c->ex.up_paused = false;
        upstream_pause_reading(c->ex.up, false);
    } else if (c->out_blocked && c->write_queued < CLIENT_WRITE_LOW) {
        c->out_blocked = false;
        client__set_timer(c, TIMER_HEADER);
        exchange__process_input(c);
    }
}

/*
 * Writes the concatenation of `parts` (at most 3), after the response head held back by
 * resp_on_head() if there is one, so that a head and the body bytes that came with it leave in
 * one write. When nothing is queued the bytes are written at once (uv_try_write: no request,
 * no copy, no poll change); only what the socket does not take is copied and queued. Returns
 * 0, or closes the client.
 */
int client__write_parts(struct client *c, const uv_buf_t *parts, size_t n)
{
    struct client_write *w;
    uv_buf_t all[4];
    size_t m = 0, total = 0, done = 0, off = 0;
    char *held = c->ex.held;
    uv_buf_t b;
    int rc;

    assert(n <= 3);
    /* Nothing is written once the write side is shut (linger) or the connection closes. */
    assert(c->state != CLIENT_LINGER && c->state != CLIENT_CLOSING);
    if (held != NULL)
        all[m++] = uv_buf_init(held, (unsigned)c->ex.held_len);
    for (size_t i = 0; i < n; i++)
        all[m++] = parts[i];
    c->ex.held = NULL;
    c->ex.held_len = 0;
    for (size_t i = 0; i < m; i++)
        total += all[i].len;
    if (total == 0) {
        free(held);
        return 0;
    }
    if (c->write_queued == 0) {
        rc = uv_try_write(&c->h.stream, all, (unsigned)m);
        if (rc >= 0) {
            done = (size_t)rc;
        } else if (rc != UV_EAGAIN && rc != UV_ENOSYS) {
            free(held);
            client_close(c, "write to client failed");
            return rc;
        }
    }
    c->ex.bytes_down += total;
    metrics_add_bytes(c->svc->metrics, METRICS_DIR_TO_CLIENT, total);
    if (done == total) {
        free(held);
        if (c->state == CLIENT_RELAYING)
            client__touch_stream(c);
        return 0;
    }
    w = malloc(sizeof(*w) + (total - done));
    if (w == NULL) {
        free(held);
        client_close(c, "out of memory");
        return -ENOMEM;
    }
    /* What the socket did not take: the rest of the parts, in order. */
    for (size_t i = 0, skip = done; i < m; i++) {
        size_t take = all[i].len;
        const char *from = all[i].base;
        if (skip >= take) {
            skip -= take;
            continue;
        }
        from += skip;
        take -= skip;
        skip = 0;
        memcpy(w->data + off, from, take);
        off += take;
    }
    free(held);
    w->c = c;
    w->len = off;
    b = uv_buf_init(w->data, (unsigned)off);
    rc = uv_write(&w->req, &c->h.stream, &b, 1, on_written);
    if (rc < 0) {
        free(w);
        client_close(c, "write to client failed");
        return rc;
    }
    c->write_queued += off;
    return 0;
}

/* Sends the held response head on its own (no body bytes came with it). */
int client__flush_held(struct client *c)
{
    return c->ex.held != NULL ? client__write_parts(c, NULL, 0) : 0;
}

int client__write_raw(struct client *c, const char *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    return client__write_parts(c, &b, 1);
}

/* ---- Reading from the client ----------------------------------------------------------------- */

/* Between requests with nothing buffered: the input buffer and the head storage go back to
 * the proxy's caches, and the next request on any connection takes them again (on_alloc), so
 * that keep-alive traffic allocates nothing per request and idle connections hold neither. */
static void release_idle_input(struct client *c)
{
    struct proxy *p = c->svc->proxy;
    if (c->state != CLIENT_HEAD || c->in_len != 0 || c->in == NULL)
        return;
    bufcache_input_put(p, c->in);
    c->in = NULL;
    c->in_off = 0;
    bufcache_head_put(p, &c->req);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    struct client *c = handle->data;
    struct proxy *p = c->svc->proxy;
    (void)suggested;
    if (c->in == NULL) {
        if ((c->in = bufcache_input_get(p)) == NULL) {
            *buf = uv_buf_init(NULL, 0); /* UV_ENOBUFS: the connection is closed */
            return;
        }
        bufcache_head_take(p, &c->req);
    }
    if (c->state == CLIENT_LINGER) {
        *buf = uv_buf_init(c->in, CLIENT_INPUT_MAX); /* discarded */
    } else {
        /* A request's first read may fill the whole buffer, so that a request of up to
         * CLIENT_INPUT_MAX sent at once is in hand, and validated, before it goes upstream
         * (exchange__body_valid_so_far); body reads while relaying take CLIENT_READ_MAX. */
        size_t room = CLIENT_INPUT_MAX - c->in_len;
        size_t max = c->state == CLIENT_HEAD ? room : CLIENT_READ_MAX;
        *buf = uv_buf_init(c->in + c->in_len, (unsigned)(room < max ? room : max));
    }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void update_reading(struct client *c)
{
    /* A tunnel reads its client with its own callbacks (tunnel.c). */
    bool want = c->state != CLIENT_CLOSING && c->state != CLIENT_FLUSHING &&
                c->state != CLIENT_TUNNEL && !c->peer_eof &&
                (c->state == CLIENT_LINGER || c->in_len < CLIENT_INPUT_MAX);
    if (want == c->reading)
        return;
    c->reading = want;
    if (want) {
        if (uv_read_start(&c->h.stream, on_alloc, on_read) < 0)
            client_close(c, "cannot read from client");
    } else {
        uv_read_stop(&c->h.stream);
    }
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)req;
    (void)status;
}

/* True when the client said it sends nothing after this request (Connection: close, or
 * HTTP/1.0 without keep-alive; RFC 9112 9.6), the request was read whole and no byte of it is
 * left unread: closing then resets nothing, and there is nothing to linger for. */
static bool client_done_sending(const struct client *c)
{
    return c->ex.req_phase == REQ_DONE && !c->ex.keep_alive && c->in_off == c->in_len;
}

/* After a final response: stop sending, and read (and drop) what the client still sends for a
 * moment, so that closing does not reset the connection before the client read the response.
 * A client that is done sending is closed at once instead (the kernel sends what is queued,
 * then the FIN), as nginx does: a shutdown, a wait for its FIN and a read per connection less. */
static void start_linger(struct client *c)
{
    assert(c->state == CLIENT_FLUSHING && c->write_queued == 0);
    if (client_done_sending(c)) {
        client_close(c, "response complete");
        return;
    }
    client__set_state(c, CLIENT_LINGER);
    client__set_timer(c, TIMER_LINGER);
    if (uv_shutdown(&c->shutdown_req, &c->h.stream, on_shutdown) < 0 || c->peer_eof) {
        client_close(c, "response complete");
        return;
    }
    update_reading(c);
}

/* The final response is queued: it must keep moving to the client (stream_idle_timeout), or a
 * client that never reads would hold the connection for good. */
void client__to_flushing(struct client *c)
{
    client__set_state(c, CLIENT_FLUSHING);
    client__set_timer(c, TIMER_STREAM_IDLE);
    update_reading(c);
    if (c->write_queued == 0)
        start_linger(c);
}

/* After the client's end of stream (a half-close), requests it pipelined before it are still
 * answered, in order; the connection closes after the last of them. */
bool client__more_requests(const struct client *c)
{
    return !c->peer_eof || c->in_off < c->in_len;
}

/* Nothing more will be parsed and the client sends no more: the answers already queued are
 * written (stream_idle_timeout), then the connection closes. */
static void end_after_eof(struct client *c)
{
    if (c->write_queued > 0) {
        client__to_flushing(c);
        return;
    }
    client_close(c, c->req.message_begun ? "client closed within a request head"
                                         : "client closed the connection");
}

static void handle_eof(struct client *c)
{
    c->peer_eof = true;
    update_reading(c);
    switch (c->state) {
    case CLIENT_HEAD:
        /* Pipelined requests still buffered are answered first (or once the queued answers
         * drain: on_written()); exchange__process_input() ends the connection when none is left. */
        exchange__process_input(c);
        return;
    case CLIENT_CONNECTING:
    case CLIENT_RELAYING:
        /* A request still being read that has no unparsed bytes left was abandoned. */
        if (c->ex.req_phase != REQ_DONE && c->in_off == c->in_len) {
            client_close(c, "client closed before the request was complete");
            return;
        }
        if (!client__more_requests(c))
            c->close_after = true;
        return;
    case CLIENT_LINGER:
        client_close(c, "client closed after the final response");
        return;
    default:
        return;
    }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct client *c = stream->data;
    (void)buf;

    c->svc->proxy->pass_reads++; /* batching under load: proxy.c on_loop_pass() */

    if (c->state == CLIENT_CLOSING || nread == 0)
        return;
    if (nread < 0) {
        if (nread == UV_EOF) {
            handle_eof(c);
        } else if (nread == UV_ENOBUFS && c->in == NULL) {
            client_close(c, "out of memory for client input");
        } else if (nread == UV_ENOBUFS) {
            update_reading(c);
        } else {
            client_close(c, "client connection failed");
        }
        return;
    }
    if (c->state == CLIENT_LINGER)
        return; /* dropped */
    assert(c->in != NULL && c->in_len + (size_t)nread <= CLIENT_INPUT_MAX);
    c->in_len += (size_t)nread;
    if (c->state == CLIENT_HEAD && (c->timer_kind == TIMER_IDLE || c->timer_kind == TIMER_DRAIN))
        client__set_timer(c, TIMER_HEADER);
    exchange__process_input(c);
}

/* The input loop (exchange.c) stopped: what it parsed leaves the buffer, a client that closed
 * its side is ended when nothing more can come of it, an idle connection gives its buffers
 * back, and reading starts or stops with the room left. */
void client__after_input(struct client *c)
{
    assert(c->in_off <= c->in_len && c->in_len <= CLIENT_INPUT_MAX);
    /* Only the next request waits for answers to drain: an exchange in progress does not. */
    assert(!c->out_blocked || c->state == CLIENT_HEAD);
    if (c->in_off > 0) {
        memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
        c->in_len -= c->in_off;
        c->in_off = 0;
    }
    if (c->peer_eof) {
        if (c->state == CLIENT_HEAD && !c->out_blocked) {
            end_after_eof(c);
            return;
        }
        if (c->state == CLIENT_RELAYING && c->ex.req_phase != REQ_DONE && c->in_len == 0) {
            client_close(c, "client closed before the request was complete");
            return;
        }
    }
    release_idle_input(c);
    update_reading(c);
}

/* True when the kernel holds bytes from the client that the loop has not read yet. */
static bool client_bytes_pending(struct client *c)
{
    uv_os_fd_t fd;
    int n = 0;
    if (uv_fileno(&c->h.handle, &fd) < 0 || ioctl(fd, FIONREAD, &n) < 0)
        return false;
    return n > 0;
}

/* ---- Timers ---------------------------------------------------------------------------------- */

static void on_timer(uv_timer_t *t)
{
    struct client *c = t->data;
    struct exchange *ex = &c->ex;
    char msg[160];

    if (c->state == CLIENT_CLOSING || !deadline_fired(&c->deadline))
        return;
    switch (c->timer_kind) {
    case TIMER_IDLE:
        client_close(c, "client_idle_timeout");
        return;
    case TIMER_HEADER:
        log_event(LOG_LEVEL_INFO, "client_timeout", "service", c->svc->name, "timeout",
                  "client_header_timeout", NULL);
        client_close(c, "client_header_timeout");
        return;
    case TIMER_FIRST_BYTE:
        snprintf(msg, sizeof(msg),
                 "no response from the upstream within first_byte_timeout (%llu ms)",
                 (unsigned long long)c->svc->cfg->first_byte_timeout_ms);
        exchange__respond_error(c, PROXY_ERR_UPSTREAM_TIMEOUT, msg, 0, false);
        return;
    case TIMER_STREAM_IDLE:
        if (c->state == CLIENT_FLUSHING || ex->up_paused || c->out_blocked) {
            /* The final response is queued, or the upstream (or the next pipelined request) is
             * paused because the client's write queue is full: the client, not the enclave,
             * stopped reading. */
            log_event(LOG_LEVEL_INFO, "client_timeout", "service", c->svc->name, "timeout",
                      "stream_idle_timeout", "why", "the client stopped reading the response",
                      NULL);
            client_close(c, "the client stopped reading the response");
            return;
        }
        if (ex->req_phase != REQ_DONE && !ex->body_blocked) {
            log_event(LOG_LEVEL_INFO, "client_timeout", "service", c->svc->name, "timeout",
                      "stream_idle_timeout", "why", "the client stopped sending the request body",
                      NULL);
            client_close(c, "the client stopped sending the request body");
            return;
        }
        snprintf(msg, sizeof(msg), "the upstream stalled for stream_idle_timeout (%llu ms)",
                 (unsigned long long)c->svc->cfg->stream_idle_timeout_ms);
        exchange__respond_error(c, PROXY_ERR_UPSTREAM_TIMEOUT, msg, 0, ex->req_phase != REQ_DONE);
        return;
    case TIMER_LINGER:
        client_close(c, "linger time over");
        return;
    case TIMER_TUNNEL:
        tunnel__on_timer(c);
        return;
    case TIMER_DRAIN:
        /* Request bytes that reached the socket but not yet the loop would be reset by a
         * close: they are read and answered (with Connection: close) instead. */
        if (client_bytes_pending(c)) {
            deadline_set(&c->deadline, DRAIN_RECHECK_MS);
            return;
        }
        client_close(c, "shutting down: idle connection");
        return;
    case TIMER_NONE:
        return;
    }
}

/* ---- Draining and accepting ------------------------------------------------------------------ */

/*
 * Shutting down. Every response from now on says Connection: close. A connection with a request
 * in progress finishes it. An idle one (between requests, or accepted and not yet sent to) is
 * not closed at once: a client may be sending its next request right now, and a close would
 * answer it with nothing (curl's "empty reply", exit 52) or a reset. It gets DRAIN_IDLE_MS to
 * bring one, which is answered, with Connection: close; then it is closed, unless request
 * bytes are waiting in the socket. A client under load sends within that time and moves to a
 * new connection (the next instance, with socket activation); an idle pool's connections close.
 */
void client_drain(struct client *c)
{
    if (c->state == CLIENT_TUNNEL) {
        tunnel__drain(c); /* 1001, then the close: a tunnel has no end to wait for */
        return;
    }
    c->close_after = true;
    if (c->state == CLIENT_HEAD && !c->req.message_begun && c->in_len == c->in_off)
        client__set_timer(c, TIMER_DRAIN);
}

void client_drain_all(struct proxy_service *svc)
{
    /* Closed clients stay linked until their close callbacks, so the walk is safe. */
    for (struct client *c = svc->clients; c != NULL; c = c->next) {
        if (c->state != CLIENT_CLOSING)
            client_drain(c);
    }
}

void client_drain_listener(struct proxy_service *svc, uint64_t listener_id, const char *why)
{
    for (struct client *c = svc->clients; c != NULL; c = c->next) {
        if (c->state == CLIENT_CLOSING ||
            (listener_id != CLIENT_ANY_LISTENER && c->listener_id != listener_id))
            continue;
        /* A request whose head is not complete has passed none of the checks yet: it would be
         * judged by the new configuration although it arrived through a socket that
         * configuration no longer has. Only exchanges admitted already finish. */
        if (c->state == CLIENT_HEAD)
            client_close(c, why);
        else if (c->state == CLIENT_TUNNEL)
            tunnel__drain(c);
        else
            c->close_after = true;
    }
}

void client_warm_done(struct proxy_service *svc)
{
    /* Closed clients stay linked until their close callbacks, so the walk is safe. */
    for (struct client *c = svc->clients; c != NULL; c = c->next) {
        if (c->state == CLIENT_CONNECTING && c->ex.acquire == ACQUIRE_WAITING_WARM) {
            exchange__set_acquire(c, ACQUIRE_DUE);
            exchange__process_input(c);
        }
    }
}

void client_close_all(struct proxy_service *svc, const char *why)
{
    for (struct client *c = svc->clients; c != NULL; c = c->next)
        client_close(c, why);
}

bool client_accept(struct proxy_service *svc, uv_stream_t *server, bool is_unix,
                   uint64_t listener_id)
{
    uv_loop_t *loop = server->loop;
    struct client *c = calloc(1, sizeof(*c));
    int rc;

    if (c == NULL) {
        log_event(LOG_LEVEL_WARN, "accept_failed", "service", svc->name, "error", "out of memory",
                  "action", "retried in 100 ms", NULL);
        return false;
    }
    rc = is_unix ? uv_pipe_init(loop, &c->h.pipe, 0) : uv_tcp_init(loop, &c->h.tcp);
    if (rc < 0) {
        free(c);
        log_event(LOG_LEVEL_WARN, "accept_failed", "service", svc->name, "error", uv_strerror(rc),
                  "action", "retried in 100 ms", NULL);
        return false;
    }
    deadline_init(loop, &c->deadline, on_timer, c);
    c->h.handle.data = c;
    c->svc = svc;
    c->id = ++svc->proxy->next_id;
    c->is_unix = is_unix;
    c->listener_id = listener_id;
    c->state = CLIENT_HEAD;
    /* From here the client is freed only by its close callbacks. */
    c->next = svc->clients;
    if (svc->clients != NULL)
        svc->clients->prev = c;
    svc->clients = c;
    proxy__object_opened(svc->proxy);
    http1_parser_init(&c->req, HTTP_REQUEST, svc->cfg->max_header_bytes, svc->cfg->max_headers,
                      &exchange__request_cbs, c);

    rc = uv_accept(server, &c->h.stream);
    if (rc < 0) {
        client_close(c, "accept failed");
        return true;
    }
    if (svc->proxy->stopping) {
        client_close(c, "shutting down");
        return true;
    }
    if (svc->n_clients >= svc->cfg->max_connections) {
        /* Beyond max_connections: answered at once with 503 and closed, so that a client sees
         * why instead of hanging in the accept queue. The refusals are bounded too. */
        char buf[ERRORS_RESPONSE_MAX];
        int n;
        if (svc->n_overflow >= CLIENT_OVERFLOW_MAX) {
            client_close(c, "max_connections reached");
            return true;
        }
        c->overflow = true;
        svc->n_overflow++;
        log_event(LOG_LEVEL_WARN, "connection_refused", "service", svc->name, "why",
                  "max_connections reached", NULL);
        n = errors_render(PROXY_ERR_TOO_MANY_CONNECTIONS, svc->name,
                          "too many connections: max_connections reached", 1, true, false, buf,
                          sizeof(buf));
        c->ex.status = 503;
        if (n < 0 || client__write_raw(c, buf, (size_t)n) < 0) {
            client_close(c, "cannot answer");
            return true;
        }
        metrics_inc_requests(svc->metrics, 503);
        client__to_flushing(c);
        return true;
    }
    c->counted = true;
    svc->n_clients++;
    metrics_add_client_open(svc->metrics, 1);
    if (!is_unix)
        uv_tcp_nodelay(&c->h.tcp, 1);
    client__set_timer(c, TIMER_IDLE);
    update_reading(c);
    return true;
}
