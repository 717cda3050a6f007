#include "proxy/client.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

#include "base/hex.h"
#include "base/log.h"
#include "base/metrics.h"
#include "proxy/attest.h"
#include "proxy/deadline.h"
#include "proxy/errors.h"
#include "proxy/http1.h"
#include "proxy/pool.h"
#include "proxy/proxy_internal.h"
#include "proxy/upstream.h"
#include "proxy/warm.h"

#define LINGER_MS        2000 /* after a final response, how long unread input is discarded */
#define DRAIN_IDLE_MS    1000 /* on SIGTERM, how long an idle connection may still bring a request */
#define DRAIN_RECHECK_MS 50   /* ... and how soon it is looked at again when bytes are pending */
#define MAX_ATTEMPTS     3    /* upstream connections tried for one request (retries: see below) */
#define CONTINUE_100     "HTTP/1.1 100 Continue\r\n\r\n"
#define LAST_CHUNK       "0\r\n\r\n"

enum client_state {
    CLIENT_HEAD = 0,   /* reading a request head */
    CLIENT_CONNECTING, /* obtaining an attested upstream connection */
    CLIENT_RELAYING,   /* request up, response down */
    CLIENT_FLUSHING,   /* the last response is being written; then LINGER */
    CLIENT_LINGER,     /* write side shut; unread input discarded until EOF or LINGER_MS */
    CLIENT_CLOSING,
};

enum timer_kind {
    TIMER_NONE = 0,
    TIMER_IDLE,        /* client_idle_timeout: no byte of a next request yet */
    TIMER_HEADER,      /* client_header_timeout: the head must be complete */
    TIMER_FIRST_BYTE,  /* first_byte_timeout: request sent, no response byte yet */
    TIMER_STREAM_IDLE, /* stream_idle_timeout: a body is moving and must keep moving */
    TIMER_LINGER,
    TIMER_DRAIN, /* shutting down: an idle connection's last chance to bring a request */
};

/* How a response body is written to the client. */
enum body_mode {
    BODY_NONE = 0,
    BODY_RAW,     /* as received (Content-Length, or until close for HTTP/1.0 clients) */
    BODY_CHUNKED, /* re-framed as chunks, one per piece received (SSE events flow through) */
};

/* One request/response exchange. Zeroed between requests. */
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
    char *up_head; /* the rewritten request head; kept for a retry until a response byte */
    char *held;    /* the response head, held until body bytes join it (write_parts) */
    size_t held_len;
    size_t up_head_len;
    bool req_done;     /* the whole request was read (and forwarded, once relaying) */
    bool body_checked; /* the whole chunked body was in hand and valid before it went up */
    size_t ahead_len;  /* input bytes the last look-ahead saw (body_valid_so_far) */
    bool body_sent; /* a request body byte went upstream: never replayed after that */

    bool acquiring;    /* acquire() ran for the current attempt */
    bool waiting_warm; /* waits for the service's warm attestation (client_warm_done) */
    unsigned attempts;
    struct upstream *up;
    bool reused;
    bool body_blocked; /* parsing stopped: the upstream's write queue is full */
    bool up_paused;    /* upstream reading stopped: the client's write queue is full */

    bool resp_parser_ready;
    struct http1_parser resp;
    bool resp_started; /* a response byte arrived */
    bool resp_head_sent;
    bool resp_keep_alive;
    bool resp_done;
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

    char *in; /* CLIENT_INPUT_MAX bytes of unparsed input, lent only while needed (input_get) */
    size_t in_off, in_len;
    bool reading;
    bool peer_eof;
    bool close_after; /* close once the response in progress is written */
    size_t write_queued;
    bool out_blocked; /* the next pipelined request waits for write_queued to drain */

    struct http1_parser req;
    bool req_paused;     /* the request parser stopped at a head or a message end */
    bool paused_at_head; /* ... at a head (its body follows) */
    bool processing;     /* inside process_input() */
    bool again;          /* process_input() was asked for while running */
    enum proxy_error pending_err;

    struct exchange ex;
    struct client *prev, *next;
};

struct client_write {
    uv_write_t req;
    struct client *c;
    size_t len;
    char data[];
};

static void process_input(struct client *c);
static void input_put(struct proxy *p, char *buf);
static void respond_error(struct client *c, enum proxy_error e, const char *msg,
                          unsigned retry_after_s, bool force_close);
static void upstream_failed(struct client *c, const char *msg);
static bool client_bytes_pending(struct client *c);

/* ---- State, timers, logging --------------------------------------------------------------- */

static const char *const state_names[] = {
    [CLIENT_HEAD] = "head",         [CLIENT_CONNECTING] = "connecting",
    [CLIENT_RELAYING] = "relaying", [CLIENT_FLUSHING] = "flushing",
    [CLIENT_LINGER] = "linger",     [CLIENT_CLOSING] = "closing",
};

static void set_state(struct client *c, enum client_state to)
{
    if (c->state == to)
        return;
    if (log_enabled(LOG_LEVEL_DEBUG)) {
        char id[24];
        snprintf(id, sizeof(id), "%llu", (unsigned long long)c->id);
        log_event(LOG_LEVEL_DEBUG, "client_state", "service", c->svc->name, "conn", id, "from",
                  state_names[c->state], "to", state_names[to], NULL);
    }
    c->state = to;
}

static void on_timer(uv_timer_t *t);

static void set_timer(struct client *c, enum timer_kind kind)
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
    case TIMER_NONE:
        break;
    }
    deadline_set(&c->deadline, ms);
}

/* Progress on a streaming body pushes the stream-idle deadline back. */
static void touch_stream(struct client *c)
{
    if (c->timer_kind == TIMER_STREAM_IDLE)
        set_timer(c, TIMER_STREAM_IDLE);
}

static void log_request(struct client *c)
{
    struct exchange *ex = &c->ex;
    char status[8], dur[24], bin[24], bout[24], id[24];
    uint64_t now;
    if (!log_enabled(LOG_LEVEL_INFO))
        return; /* nothing is formatted for a line that is not written */
    now = uv_now(c->h.handle.loop);
    snprintf(status, sizeof(status), "%u", ex->status);
    snprintf(dur, sizeof(dur), "%llu", (unsigned long long)(now - ex->started_ms));
    snprintf(bin, sizeof(bin), "%llu", (unsigned long long)ex->bytes_up);
    snprintf(bout, sizeof(bout), "%llu", (unsigned long long)ex->bytes_down);
    snprintf(id, sizeof(id), "%llu", (unsigned long long)c->id);
    /* The request target is not logged: query strings carry secrets often enough. */
    log_event(LOG_LEVEL_INFO, "request", "service", c->svc->name, "conn", id, "method",
              ex->method_known ? llhttp_method_name(ex->method) : "-", "status", status, "error",
              ex->error_code, "reused", ex->reused ? "yes" : "no", "bytes_up", bin, "bytes_down",
              bout, "duration_ms", dur, NULL);
}

/* ---- Closing ------------------------------------------------------------------------------ */

static void head_storage_put(struct proxy *p, struct http1_parser *parser);

/* Ends the exchange of `c`: its response head storage goes back to the cache. */
static void exchange_free(struct client *c)
{
    struct exchange *ex = &c->ex;
    free(ex->up_head);
    free(ex->held);
    if (ex->resp_parser_ready) {
        head_storage_put(c->svc->proxy, &ex->resp);
        http1_parser_free(&ex->resp); /* whatever was not given back */
    }
    memset(ex, 0, sizeof(*ex));
}

/* Lets go of the upstream connection of the exchange: it is closed unless an attestation runs
 * over it, which then finishes on its own (attest_detach()). A connection with a response in
 * progress is never pooled. */
static void release_upstream(struct client *c, const char *why)
{
    struct upstream *up = c->ex.up;
    c->ex.up = NULL;
    if (up == NULL || upstream_is_closing(up))
        return;
    if (up->state == UP_ATTESTING) {
        attest_detach(up);
        return;
    }
    upstream_close(up, why);
}

static void on_closed(uv_handle_t *handle)
{
    struct client *c = handle->data;
    struct proxy_service *svc = c->svc;
    struct proxy *p = svc->proxy;

    if (--c->pending_closes > 0)
        return;
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
    exchange_free(c);
    if (c->in != NULL)
        input_put(p, c->in);
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
    release_upstream(c, "client connection closed");
    set_state(c, CLIENT_CLOSING);
    c->pending_closes = 2;
    uv_close(&c->h.handle, on_closed);
    uv_close((uv_handle_t *)&c->deadline.timer, on_closed);
}

/* ---- Writing to the client ---------------------------------------------------------------- */

static void start_linger(struct client *c);

static void on_written(uv_write_t *req, int status)
{
    struct client_write *w = (struct client_write *)req;
    struct client *c = w->c;

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
            touch_stream(c);
        return;
    }
    if (c->state == CLIENT_RELAYING || c->out_blocked)
        touch_stream(c);
    /* Last: resuming may deliver buffered upstream data, or start the next pipelined request,
     * from inside this call. */
    if (c->ex.up_paused && c->write_queued < CLIENT_WRITE_LOW && c->ex.up != NULL) {
        c->ex.up_paused = false;
        upstream_pause_reading(c->ex.up, false);
    } else if (c->out_blocked && c->write_queued < CLIENT_WRITE_LOW) {
        c->out_blocked = false;
        set_timer(c, TIMER_HEADER);
        process_input(c);
    }
}

/*
 * Writes the concatenation of `parts` (at most 3), after the response head held back by
 * resp_on_head() if there is one, so that a head and the body bytes that came with it leave in
 * one write. When nothing is queued the bytes are written at once (uv_try_write: no request,
 * no copy, no poll change); only what the socket does not take is copied and queued. Returns
 * 0, or closes the client.
 */
static int write_parts(struct client *c, const uv_buf_t *parts, size_t n)
{
    struct client_write *w;
    uv_buf_t all[4];
    size_t m = 0, total = 0, done = 0, off = 0;
    char *held = c->ex.held;
    uv_buf_t b;
    int rc;

    assert(n <= 3);
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
            touch_stream(c);
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
static int flush_held(struct client *c)
{
    return c->ex.held != NULL ? write_parts(c, NULL, 0) : 0;
}

static int write_raw(struct client *c, const char *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    return write_parts(c, &b, 1);
}

/* ---- Reading from the client -------------------------------------------------------------- */

/*
 * Input buffers. A connection holds one only while it has unparsed input or a request in
 * progress: an idle keep-alive connection holds neither it nor head storage, so that thousands
 * of idle clients cost a few KiB each (docs/benchmarks.md). Returned buffers are kept for reuse,
 * up to CLIENT_INPUT_CACHE of them, so that a busy daemon does not allocate one per request.
 */
static char *input_get(struct proxy *p)
{
    if (p->n_input_cache > 0)
        return p->input_cache[--p->n_input_cache];
    return malloc(CLIENT_INPUT_MAX);
}

static void input_put(struct proxy *p, char *buf)
{
    if (p->n_input_cache < CLIENT_INPUT_CACHE)
        p->input_cache[p->n_input_cache++] = buf;
    else
        free(buf);
}

void client_input_cache_free(struct proxy *p)
{
    while (p->n_input_cache > 0)
        free(p->input_cache[--p->n_input_cache]);
    while (p->n_head_cache > 0)
        http1_storage_free(&p->head_cache[--p->n_head_cache]);
}

/* Head storage of a parser between messages goes back to the proxy's cache (or is freed when
 * the cache is full, or when it grew past its first sizes); head_storage_take() gives it to
 * the next parser that has none. Request parsers and response parsers share it. */
static void head_storage_put(struct proxy *p, struct http1_parser *parser)
{
    struct http1_storage st;
    if (!http1_parser_release(parser, &st))
        return;
    if (p->n_head_cache < CLIENT_INPUT_CACHE)
        p->head_cache[p->n_head_cache++] = st;
    else
        http1_storage_free(&st);
}

static void head_storage_take(struct proxy *p, struct http1_parser *parser)
{
    if (parser->head.buf == NULL && parser->head.hdrs == NULL && p->n_head_cache > 0)
        http1_parser_adopt(parser, &p->head_cache[--p->n_head_cache]);
}

/* Between requests with nothing buffered: the input buffer and the head storage go back to
 * the proxy's caches, and the next request on any connection takes them again (on_alloc), so
 * that keep-alive traffic allocates nothing per request and idle connections hold neither. */
static void release_idle_input(struct client *c)
{
    struct proxy *p = c->svc->proxy;
    if (c->state != CLIENT_HEAD || c->in_len != 0 || c->in == NULL)
        return;
    input_put(p, c->in);
    c->in = NULL;
    c->in_off = 0;
    head_storage_put(p, &c->req);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    struct client *c = handle->data;
    struct proxy *p = c->svc->proxy;
    (void)suggested;
    if (c->in == NULL) {
        if ((c->in = input_get(p)) == NULL) {
            *buf = uv_buf_init(NULL, 0); /* UV_ENOBUFS: the connection is closed */
            return;
        }
        head_storage_take(p, &c->req);
    }
    if (c->state == CLIENT_LINGER) {
        *buf = uv_buf_init(c->in, CLIENT_INPUT_MAX); /* discarded */
    } else {
        /* A request's first read may fill the whole buffer, so that a request of up to
         * CLIENT_INPUT_MAX sent at once is in hand, and validated, before it goes upstream
         * (body_valid_so_far); body reads while relaying take CLIENT_READ_MAX. */
        size_t room = CLIENT_INPUT_MAX - c->in_len;
        size_t max = c->state == CLIENT_HEAD ? room : CLIENT_READ_MAX;
        *buf = uv_buf_init(c->in + c->in_len, (unsigned)(room < max ? room : max));
    }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void update_reading(struct client *c)
{
    bool want = c->state != CLIENT_CLOSING && c->state != CLIENT_FLUSHING && !c->peer_eof &&
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
    return c->ex.req_done && !c->ex.keep_alive && c->in_off == c->in_len;
}

/* After a final response: stop sending, and read (and drop) what the client still sends for a
 * moment, so that closing does not reset the connection before the client read the response.
 * A client that is done sending is closed at once instead (the kernel sends what is queued,
 * then the FIN), as nginx does: a shutdown, a wait for its FIN and a read per connection less. */
static void start_linger(struct client *c)
{
    if (client_done_sending(c)) {
        client_close(c, "response complete");
        return;
    }
    set_state(c, CLIENT_LINGER);
    set_timer(c, TIMER_LINGER);
    if (uv_shutdown(&c->shutdown_req, &c->h.stream, on_shutdown) < 0 || c->peer_eof) {
        client_close(c, "response complete");
        return;
    }
    update_reading(c);
}

/* The final response is queued: it must keep moving to the client (stream_idle_timeout), or a
 * client that never reads would hold the connection for good. */
static void to_flushing(struct client *c)
{
    set_state(c, CLIENT_FLUSHING);
    set_timer(c, TIMER_STREAM_IDLE);
    update_reading(c);
    if (c->write_queued == 0)
        start_linger(c);
}

/* After the client's end of stream (a half-close), requests it pipelined before it are still
 * answered, in order; the connection closes after the last of them. */
static bool more_requests(const struct client *c)
{
    return !c->peer_eof || c->in_off < c->in_len;
}

/* Nothing more will be parsed and the client sends no more: the answers already queued are
 * written (stream_idle_timeout), then the connection closes. */
static void end_after_eof(struct client *c)
{
    if (c->write_queued > 0) {
        to_flushing(c);
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
         * drain: on_written()); process_input() ends the connection when none is left. */
        process_input(c);
        return;
    case CLIENT_CONNECTING:
    case CLIENT_RELAYING:
        /* A request still being read that has no unparsed bytes left was abandoned. */
        if (!c->ex.req_done && c->in_off == c->in_len) {
            client_close(c, "client closed before the request was complete");
            return;
        }
        if (!more_requests(c))
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
    c->in_len += (size_t)nread;
    if (c->state == CLIENT_HEAD && (c->timer_kind == TIMER_IDLE || c->timer_kind == TIMER_DRAIN))
        set_timer(c, TIMER_HEADER);
    process_input(c);
}

/* ---- Request checks ----------------------------------------------------------------------- */

static bool host_allowed(const struct service_config *cfg, const char *v, size_t len)
{
    const char *list[CONFIG_MAX_HOSTS + 3 + CONFIG_MAX_LISTEN];
    char bracketed[CONFIG_MAX_LISTEN][CONFIG_HOST_MAX + 2];
    size_t n = 0;

    if (cfg->n_allowed_hosts > 0) {
        for (size_t i = 0; i < cfg->n_allowed_hosts; i++)
            list[n++] = cfg->allowed_hosts[i];
    } else {
        list[n++] = "localhost";
        list[n++] = "127.0.0.1";
        list[n++] = "[::1]";
        for (size_t i = 0; i < cfg->n_listen; i++) {
            const struct listen_addr *a = &cfg->listen[i];
            if (a->is_unix)
                continue;
            if (strchr(a->host, ':') != NULL) {
                snprintf(bracketed[i], sizeof(bracketed[i]), "[%s]", a->host);
                list[n++] = bracketed[i];
            } else {
                list[n++] = a->host;
            }
        }
    }
    return http1_host_allowed(v, len, list, n);
}

static int refuse(struct client *c, enum proxy_error e, const char *msg)
{
    c->pending_err = e;
    http1_parser_fail(&c->req, HTTP1_FAIL_CALLBACK, msg);
    return HTTP1_CB_ERROR;
}

/* True when the message has no Transfer-Encoding, or exactly one Transfer-Encoding field whose
 * value is "chunked" (without case, whitespace around it ignored). Any other coding ("gzip,
 * chunked", a second field, an empty value) is refused: bodies are re-framed as chunked, so
 * another coding would be dropped and the body handed on with a changed meaning. */
static bool transfer_encoding_ok(const struct http1_head *h)
{
    int i = http1_head_find(h, HTTP1_FIELD_TRANSFER_ENCODING, 0);
    const char *v;
    size_t len;

    if (i < 0)
        return true;
    if (http1_head_count(h, HTTP1_FIELD_TRANSFER_ENCODING) != 1)
        return false;
    v = h->buf + h->hdrs[i].value_off;
    len = h->hdrs[i].value_len;
    while (len > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        len--;
    }
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    return len == 7 && strncasecmp(v, "chunked", 7) == 0;
}

static bool is_idempotent(llhttp_method_t m)
{
    return m == HTTP_GET || m == HTTP_HEAD || m == HTTP_OPTIONS || m == HTTP_TRACE ||
           m == HTTP_PUT || m == HTTP_DELETE;
}

/* The request head is complete: check it, and prepare what goes upstream. */
static int req_on_head(struct http1_parser *p)
{
    struct client *c = p->data;
    const struct service_config *cfg = c->svc->cfg;
    const struct http1_head *h = &p->head;
    struct exchange *ex = &c->ex;
    struct http1_request_opts opts;
    const char *target = http1_head_str(h, h->target_off);
    size_t hosts = http1_head_count(h, HTTP1_FIELD_HOST);
    int hi, rc;
    size_t cap;

    exchange_free(c);
    ex->started_ms = uv_now(c->h.handle.loop);
    ex->method = (llhttp_method_t)p->ll.method;
    ex->method_known = true;
    ex->head_request = ex->method == HTTP_HEAD;
    ex->http10 = p->ll.http_minor == 0;
    ex->keep_alive = llhttp_should_keep_alive(&p->ll) != 0 && !ex->http10;

    if (p->ll.http_major != 1 || p->ll.http_minor > 1)
        return refuse(c, PROXY_ERR_BAD_REQUEST, "only HTTP/1.0 and HTTP/1.1 are supported");
    if (ex->method == HTTP_CONNECT)
        return refuse(c, PROXY_ERR_BAD_REQUEST,
                      "CONNECT is not supported: this is a reverse proxy");
    if (!(h->target_len > 0 && target[0] == '/') &&
        !(ex->method == HTTP_OPTIONS && h->target_len == 1 && target[0] == '*'))
        return refuse(c, PROXY_ERR_BAD_REQUEST,
                      "the request target must be a path (origin-form): this is a reverse proxy, "
                      "not a forward proxy");
    /* A fragment is never part of a request target (RFC 9112 3.2); the enclave could read
     * "/a#/../b" otherwise than a client that meant "/a". */
    if (memchr(target, '#', h->target_len) != NULL)
        return refuse(c, PROXY_ERR_BAD_REQUEST,
                      "the request target contains a fragment ('#'), which is never sent");
    if (!transfer_encoding_ok(h))
        return refuse(c, PROXY_ERR_BAD_REQUEST,
                      "Transfer-Encoding must be exactly 'chunked' (in one header field): other "
                      "transfer codings are not relayed");
    /* HTTP/1.0 has no chunked coding: such framing is faulty (RFC 9112 6.1). */
    if (ex->http10 && http1_head_find(h, HTTP1_FIELD_TRANSFER_ENCODING, 0) >= 0)
        return refuse(c, PROXY_ERR_BAD_REQUEST,
                      "Transfer-Encoding is not allowed in an HTTP/1.0 request");
    if (hosts > 1 || (hosts == 0 && !ex->http10))
        return refuse(c, PROXY_ERR_BAD_REQUEST, "a request must carry exactly one Host header");
    hi = http1_head_find(h, HTTP1_FIELD_HOST, 0);
    if (hi >= 0 &&
        !host_allowed(cfg, http1_head_str(h, h->hdrs[hi].value_off), h->hdrs[hi].value_len)) {
        char msg[CONFIG_HOST_MAX + 96];
        snprintf(msg, sizeof(msg), "Host '%.*s' is not allowed for this service",
                 (int)(h->hdrs[hi].value_len > 200 ? 200 : h->hdrs[hi].value_len),
                 http1_head_str(h, h->hdrs[hi].value_off));
        return refuse(c, PROXY_ERR_HOST_NOT_ALLOWED, msg);
    }
    if (cfg->token[0] != '\0') {
        int ai = http1_head_find(h, HTTP1_FIELD_AUTHORIZATION, 0);
        if (ai < 0 || http1_head_count(h, HTTP1_FIELD_AUTHORIZATION) != 1 ||
            !http1_bearer_matches(http1_head_str(h, h->hdrs[ai].value_off), h->hdrs[ai].value_len,
                                  cfg->token))
            return refuse(c, PROXY_ERR_UNAUTHORIZED,
                          "a valid bearer token is required (Authorization: Bearer ...)");
    }

    if (p->ll.flags & F_CHUNKED) {
        ex->req_framing = HTTP1_FRAMING_CHUNKED;
    } else if ((p->ll.flags & F_CONTENT_LENGTH) && p->ll.content_length > 0) {
        ex->req_framing = HTTP1_FRAMING_LENGTH;
        ex->req_content_length = p->ll.content_length;
        if (cfg->max_body_size > 0 && ex->req_content_length > cfg->max_body_size)
            return refuse(c, PROXY_ERR_PAYLOAD_TOO_LARGE,
                          "the request body is larger than max_body_size");
    } else {
        ex->req_framing = HTTP1_FRAMING_NONE;
    }
    for (int i = http1_head_find(h, HTTP1_FIELD_EXPECT, 0); i >= 0;
         i = http1_head_find(h, HTTP1_FIELD_EXPECT, (size_t)i + 1)) {
        if (h->hdrs[i].value_len == 12 &&
            strncasecmp(http1_head_str(h, h->hdrs[i].value_off), "100-continue", 12) == 0)
            ex->expect_continue = !ex->http10 && ex->req_framing != HTTP1_FRAMING_NONE;
    }

    memset(&opts, 0, sizeof(opts));
    opts.authority = cfg->upstream_authority;
    opts.keep_forwarded = cfg->keep_forwarded;
    opts.strip_authorization = cfg->token[0] != '\0';
    opts.framing = ex->req_framing;
    opts.content_length = ex->req_content_length;
    cap = h->len + 2 * h->n + strlen(cfg->upstream_authority) + HTTP1_REWRITE_SLACK;
    ex->up_head = malloc(cap);
    if (ex->up_head == NULL)
        return refuse(c, PROXY_ERR_UPSTREAM_UNREACHABLE, "out of memory");
    rc = http1_build_request(p, &opts, ex->up_head, cap);
    if (rc < 0)
        return refuse(c, PROXY_ERR_HEADER_TOO_LARGE, "request head too large");
    ex->up_head_len = (size_t)rc;

    set_state(c, CLIENT_CONNECTING);
    set_timer(c, TIMER_NONE);
    if (ex->req_framing == HTTP1_FRAMING_NONE)
        return HTTP1_CB_OK; /* on_complete follows at once and pauses */
    c->paused_at_head = true;
    return HTTP1_CB_PAUSE;
}

static int req_on_body(struct http1_parser *p, const char *at, size_t len)
{
    struct client *c = p->data;
    struct exchange *ex = &c->ex;
    const struct service_config *cfg = c->svc->cfg;
    char ch[HTTP1_CHUNK_HEADER_MAX];
    int rc = 0;

    if (c->state != CLIENT_RELAYING || ex->up == NULL)
        return refuse(c, PROXY_ERR_UPSTREAM_UNREACHABLE, "the upstream connection is gone");
    ex->req_body_bytes += len;
    if (cfg->max_body_size > 0 && ex->req_body_bytes > cfg->max_body_size)
        return refuse(c, PROXY_ERR_PAYLOAD_TOO_LARGE,
                      "the request body is larger than max_body_size");
    if (ex->req_framing == HTTP1_FRAMING_CHUNKED) {
        size_t n = http1_chunk_header(len, ch);
        rc = upstream_write(ex->up, ch, n);
        if (rc == 0)
            rc = upstream_write(ex->up, at, len);
        if (rc == 0)
            rc = upstream_write(ex->up, "\r\n", 2);
        ex->bytes_up += n + 2;
    } else {
        rc = upstream_write(ex->up, at, len);
    }
    if (rc < 0)
        return refuse(c, PROXY_ERR_UPSTREAM_UNREACHABLE, "cannot write to the upstream");
    ex->body_sent = true;
    ex->bytes_up += len;
    metrics_add_bytes(c->svc->metrics, METRICS_DIR_TO_UPSTREAM, len);
    touch_stream(c);
    return HTTP1_CB_OK;
}

static int req_on_complete(struct http1_parser *p)
{
    struct client *c = p->data;
    struct exchange *ex = &c->ex;

    ex->req_done = true;
    c->paused_at_head = false;
    if (c->state == CLIENT_RELAYING && ex->up != NULL) {
        if (ex->req_framing == HTTP1_FRAMING_CHUNKED) {
            /* Trailers are not forwarded: the last chunk ends the body. */
            if (upstream_write(ex->up, LAST_CHUNK, 5) < 0)
                return refuse(c, PROXY_ERR_UPSTREAM_UNREACHABLE, "cannot write to the upstream");
            ex->body_sent = true;
        }
    }
    /* Pipelined requests wait, unparsed, until this one is answered. The staged bytes leave
     * in process_input(), once the parser has returned: a failed write there may answer the
     * client and start the next request, which must not happen inside this callback. */
    return HTTP1_CB_PAUSE;
}

static const struct http1_callbacks request_cbs = {req_on_head, req_on_body, req_on_complete};

/* The request could not be parsed or was refused: answer and close. */
static void request_failed(struct client *c)
{
    enum proxy_error e;
    const char *msg = c->req.fail_msg;
    if (!c->ex.method_known && c->req.method_seen) {
        c->ex.method = (llhttp_method_t)c->req.ll.method;
        c->ex.method_known = true;
    }
    switch (c->req.fail) {
    case HTTP1_FAIL_CALLBACK:
        e = c->pending_err;
        break;
    case HTTP1_FAIL_TOO_LARGE:
        e = PROXY_ERR_HEADER_TOO_LARGE;
        break;
    default:
        e = PROXY_ERR_BAD_REQUEST;
        break;
    }
    if (e == PROXY_ERR_BAD_REQUEST || e == PROXY_ERR_HEADER_TOO_LARGE) {
        char id[24];
        snprintf(id, sizeof(id), "%llu", (unsigned long long)c->id);
        log_event(LOG_LEVEL_INFO, "bad_request", "service", c->svc->name, "conn", id, "why", msg,
                  NULL);
    }
    respond_error(c, e, msg, 0, true);
}

/*
 * Buffered validation (docs/security.md): a chunked body whose bytes are already in the input
 * buffer (at most CLIENT_INPUT_MAX) is parsed to its end before any byte of the request goes
 * upstream, so that broken framing is refused while the enclave has seen nothing. A body that
 * goes on past what is in hand is checked as far as it goes, again when the upstream is ready,
 * and then streamed: a framing error found later aborts the exchange mid-way. Returns false
 * when the request was refused (answered and closing).
 */
static bool body_valid_so_far(struct client *c)
{
    struct exchange *ex = &c->ex;
    char why[sizeof(c->req.fail_msg)];
    enum http1_status st;

    if (ex->req_framing != HTTP1_FRAMING_CHUNKED || ex->body_checked || !c->paused_at_head ||
        c->in_len - c->in_off == ex->ahead_len)
        return true;
    ex->ahead_len = c->in_len - c->in_off;
    st = http1_parser_check_ahead(&c->req, c->in + c->in_off, c->in_len - c->in_off, why,
                                  sizeof(why));
    if (st == HTTP1_PAUSED)
        ex->body_checked = true;
    if (st != HTTP1_ERROR)
        return true;
    http1_parser_fail(&c->req, HTTP1_FAIL_BAD_MESSAGE, why);
    request_failed(c);
    return false;
}

/* ---- Exchange lifecycle ------------------------------------------------------------------- */

/* Ready for the next request on this connection. */
static void exchange_next(struct client *c)
{
    exchange_free(c);
    set_state(c, CLIENT_HEAD);
    set_timer(c, c->in_off < c->in_len ? TIMER_HEADER : TIMER_IDLE);
    if (c->req_paused) {
        c->req_paused = false;
        c->paused_at_head = false;
        http1_parser_resume(&c->req);
    }
    process_input(c);
}

static void respond_error(struct client *c, enum proxy_error e, const char *msg,
                          unsigned retry_after_s, bool force_close)
{
    struct exchange *ex = &c->ex;
    char buf[ERRORS_RESPONSE_MAX];
    bool keep;
    int n;

    if (c->state == CLIENT_CLOSING)
        return;
    release_upstream(c, "request answered by the proxy");
    if (ex->resp_head_sent) {
        client_close(c, msg);
        return;
    }
    keep = !force_close && ex->req_done && ex->keep_alive && !c->close_after && more_requests(c) &&
           !c->svc->proxy->stopping;
    ex->status = errors_status(e);
    ex->error_code = errors_code_name(e);
    n = errors_render(e, c->svc->name, msg, retry_after_s, !keep, ex->head_request, buf,
                      sizeof(buf));
    if (n < 0 || write_raw(c, buf, (size_t)n) < 0) {
        client_close(c, "cannot answer the client");
        return;
    }
    metrics_inc_requests(c->svc->metrics, ex->status);
    if (ex->started_ms == 0)
        ex->started_ms = uv_now(c->h.handle.loop);
    log_request(c);
    if (keep)
        exchange_next(c);
    else
        to_flushing(c);
}

/* The response is complete: the upstream goes back to the pool when it can carry another. */
static void finish_exchange(struct client *c, bool upstream_reusable)
{
    struct exchange *ex = &c->ex;
    struct upstream *up = ex->up;

    if (ex->body_mode == BODY_CHUNKED && write_raw(c, LAST_CHUNK, 5) < 0)
        return;
    ex->up = NULL;
    if (up != NULL)
        upstream_end_exchange(up, upstream_reusable && ex->resp_keep_alive && ex->req_done);
    log_request(c);
    if (c->close_after || !ex->req_done || !more_requests(c) || !ex->keep_alive ||
        c->svc->proxy->stopping)
        to_flushing(c);
    else
        exchange_next(c);
}

/* ---- Response parsing (upstream -> client) ------------------------------------------------ */

static void format_time(int64_t ms, char *out, size_t cap)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    char date[40];
    gmtime_r(&s, &tm);
    if (strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
        date[0] = '\0';
    snprintf(out, cap, "%s.%03dZ", date, (int)(ms % 1000));
}

/* "X-Attestation: pin=sha256:<hex>; pcr0=<hex>; verified_at=<time>" for attestation_header. */
static void attestation_header(struct client *c, char *out, size_t cap)
{
    const struct upstream *up = c->ex.up;
    char pin[PIN_HEX_LEN + 1], pcr0[2 * NITRO_PCR_LEN + 1], when[64];

    out[0] = '\0';
    if (!c->svc->cfg->attestation_header || up == NULL || !up->has_info)
        return;
    pin_hex(up->pin, pin);
    hex_encode(up->info.pcrs[0], NITRO_PCR_LEN, pcr0);
    format_time(up->info.verified_at_ms, when, sizeof(when));
    snprintf(out, cap, "X-Attestation: pin=sha256:%s; pcr0=%s; verified_at=%s\r\n", pin, pcr0,
             when);
}

static int resp_on_head(struct http1_parser *p)
{
    struct client *c = p->data;
    struct exchange *ex = &c->ex;
    struct http1_response_opts opts;
    unsigned status = p->ll.status_code;
    char extra[512];
    char *buf;
    size_t cap;
    bool no_body;
    int n;

    if (status == 101) {
        http1_parser_fail(p, HTTP1_FAIL_CALLBACK, "the upstream switched protocols");
        return HTTP1_CB_ERROR;
    }
    if (!transfer_encoding_ok(&p->head)) {
        http1_parser_fail(p, HTTP1_FAIL_CALLBACK,
                          "the response has a transfer coding other than chunked");
        return HTTP1_CB_ERROR;
    }
    /* Interim responses are dropped (100-continue is answered here). Like 204 and 304 they
     * never have a body, whatever Content-Length says (RFC 9112 6.3); llhttp 8.1 would wait
     * for one. */
    if (status < 200)
        return HTTP1_CB_SKIP_BODY;
    if (c->timer_kind == TIMER_FIRST_BYTE)
        set_timer(c, TIMER_STREAM_IDLE);
    ex->status = status;
    ex->resp_keep_alive = llhttp_should_keep_alive(&p->ll) != 0;
    memset(&opts, 0, sizeof(opts));
    no_body = ex->head_request || status == 204 || status == 304;
    if (no_body) {
        ex->body_mode = BODY_NONE;
        if ((p->ll.flags & F_CONTENT_LENGTH) && status != 204) {
            opts.framing = HTTP1_FRAMING_LENGTH;
            opts.content_length = p->ll.content_length;
        }
    } else if (!(p->ll.flags & F_CHUNKED) && (p->ll.flags & F_CONTENT_LENGTH)) {
        ex->body_mode = BODY_RAW;
        opts.framing = HTTP1_FRAMING_LENGTH;
        opts.content_length = p->ll.content_length;
    } else if (ex->http10) {
        /* Chunked or close-delimited upstream, HTTP/1.0 client: the body runs to the close. */
        ex->body_mode = BODY_RAW;
        opts.framing = HTTP1_FRAMING_EOF;
        c->close_after = true;
    } else {
        ex->body_mode = BODY_CHUNKED;
        opts.framing = HTTP1_FRAMING_CHUNKED;
    }
    /* An answer that comes before the whole request was read ends the connection (the rest of
     * the body cannot be told from a next request unless it is read through), and says so. */
    if (!ex->keep_alive || !ex->req_done || !more_requests(c) || c->svc->proxy->stopping)
        c->close_after = true;
    opts.close = c->close_after;
    attestation_header(c, extra, sizeof(extra));
    opts.extra_headers = extra[0] ? extra : NULL;

    cap = p->head.len + 2 * p->head.n + strlen(extra) + HTTP1_REWRITE_SLACK;
    buf = malloc(cap);
    if (buf == NULL) {
        http1_parser_fail(p, HTTP1_FAIL_CALLBACK, "out of memory");
        return HTTP1_CB_ERROR;
    }
    n = http1_build_response(p, &opts, buf, cap);
    if (n < 0) {
        free(buf);
        http1_parser_fail(p, HTTP1_FAIL_CALLBACK, "cannot write the response head");
        return HTTP1_CB_ERROR;
    }
    /* Held back so that the body bytes of this read leave with it, in one write; r_data()
     * sends it alone when none came. */
    ex->held = buf;
    ex->held_len = (size_t)n;
    ex->resp_head_sent = true;
    metrics_inc_requests(c->svc->metrics, status);
    return no_body ? HTTP1_CB_SKIP_BODY : HTTP1_CB_OK;
}

static int resp_on_body(struct http1_parser *p, const char *at, size_t len)
{
    struct client *c = p->data;
    if (c->ex.body_mode == BODY_CHUNKED) {
        char ch[HTTP1_CHUNK_HEADER_MAX];
        uv_buf_t parts[3];
        size_t n = http1_chunk_header(len, ch);
        parts[0] = uv_buf_init(ch, (unsigned)n);
        parts[1] = uv_buf_init((char *)at, (unsigned)len);
        parts[2] = uv_buf_init((char *)"\r\n", 2);
        if (write_parts(c, parts, 3) < 0)
            return HTTP1_CB_ERROR;
    } else if (c->ex.body_mode == BODY_RAW) {
        if (write_raw(c, at, len) < 0)
            return HTTP1_CB_ERROR;
    }
    return HTTP1_CB_OK;
}

static int resp_on_complete(struct http1_parser *p)
{
    struct client *c = p->data;
    if (p->ll.status_code < 200)
        return HTTP1_CB_OK; /* the final response follows */
    c->ex.resp_done = true;
    return HTTP1_CB_PAUSE;
}

static const struct http1_callbacks response_cbs = {resp_on_head, resp_on_body, resp_on_complete};

/* ---- Relay handlers (upstream events during an exchange) ---------------------------------- */

static void r_data(struct upstream *up, const char *data, size_t len, void *arg)
{
    struct client *c = arg;
    struct exchange *ex = &c->ex;
    enum http1_status st;
    size_t used = 0;

    /* The request head may be replayed no more: the upstream has answered. first_byte_timeout
     * runs on until the final response's head (resp_on_head): an interim 100 Continue does
     * not start the stream. */
    ex->resp_started = true;
    touch_stream(c);
    st = http1_parser_execute(&ex->resp, data, len, &used);
    if (c->state == CLIENT_CLOSING || flush_held(c) < 0)
        return;
    if (st == HTTP1_ERROR) {
        char msg[192];
        snprintf(msg, sizeof(msg), "bad response from the upstream: %s", ex->resp.fail_msg);
        ex->attempts = MAX_ATTEMPTS; /* a malformed answer is not retried */
        upstream_failed(c, msg);
        return;
    }
    if (ex->resp_done) {
        finish_exchange(c, used == len);
        return;
    }
    if (c->write_queued >= CLIENT_WRITE_HIGH && !ex->up_paused) {
        ex->up_paused = true;
        upstream_pause_reading(up, true);
    }
}

static void r_eof(struct upstream *up, void *arg)
{
    struct client *c = arg;
    struct exchange *ex = &c->ex;
    (void)up;
    if (ex->resp_started && http1_parser_finish(&ex->resp) != HTTP1_ERROR && ex->resp_done) {
        finish_exchange(c, false);
        return;
    }
    if (c->state == CLIENT_CLOSING)
        return;
    upstream_failed(c, ex->resp_started
                           ? "the upstream closed the connection before the response was complete"
                           : "the upstream closed the connection without responding");
}

static void r_error(struct upstream *up, const char *msg, void *arg)
{
    (void)up;
    upstream_failed(arg, msg);
}

static void r_drain(struct upstream *up, void *arg)
{
    struct client *c = arg;
    (void)up;
    if (c->ex.body_blocked) {
        c->ex.body_blocked = false;
        touch_stream(c);
        process_input(c);
    }
}

static const struct upstream_handler relay_handler = {
    .on_data = r_data,
    .on_eof = r_eof,
    .on_error = r_error,
    .on_drain = r_drain,
};

/* The upstream connection failed during the exchange. Retried only for an idempotent request
 * whose reused (pooled) connection failed before any response byte and before any body byte
 * went out; otherwise 502, or a cut connection when the response had begun. */
static void upstream_failed(struct client *c, const char *msg)
{
    struct exchange *ex = &c->ex;
    release_upstream(c, msg);
    if (c->state == CLIENT_CLOSING)
        return;
    if (!ex->resp_started && ex->reused && is_idempotent(ex->method) && !ex->body_sent &&
        ex->attempts < MAX_ATTEMPTS) {
        char id[24];
        snprintf(id, sizeof(id), "%llu", (unsigned long long)c->id);
        log_event(LOG_LEVEL_DEBUG, "request_retry", "service", c->svc->name, "conn", id, "why", msg,
                  NULL);
        if (ex->resp_parser_ready) {
            http1_parser_free(&ex->resp);
            ex->resp_parser_ready = false;
        }
        ex->reused = false;
        ex->acquiring = false;
        set_state(c, CLIENT_CONNECTING);
        set_timer(c, TIMER_NONE);
        process_input(c);
        return;
    }
    respond_error(c, PROXY_ERR_UPSTREAM_UNREACHABLE, msg, 0, !ex->req_done);
}

/* ---- Obtaining an attested upstream connection -------------------------------------------- */

static void relay_start(struct client *c, struct upstream *up)
{
    struct exchange *ex = &c->ex;
    int rc;

    /* More of the body may have come while the connection was obtained. The connection
     * carried nothing of this request: it goes back to the pool. */
    ex->up = NULL;
    if (!body_valid_so_far(c)) {
        upstream_end_exchange(up, true);
        return;
    }
    ex->up = up;
    ex->reused = up->reused;
    if (up->reused)
        metrics_inc_pool_reuse(c->svc->metrics);
    if (!ex->resp_parser_ready) {
        http1_parser_init(&ex->resp, HTTP_RESPONSE, HTTP1_RESPONSE_HEAD_MAX,
                          HTTP1_RESPONSE_HEADERS_MAX, &response_cbs, c);
        head_storage_take(c->svc->proxy, &ex->resp);
        ex->resp_parser_ready = true;
    }
    set_state(c, CLIENT_RELAYING);
    /* No handler while writing the head: a failure is seen below, not as a callback. */
    upstream_set_handler(up, NULL, NULL);
    rc = upstream_write(up, ex->up_head, ex->up_head_len);
    if (rc == 0)
        upstream_flush(up);
    if (rc < 0 || upstream_is_closing(up)) {
        upstream_failed(c, "cannot write to the upstream");
        return;
    }
    ex->bytes_up += ex->up_head_len;
    metrics_add_bytes(c->svc->metrics, METRICS_DIR_TO_UPSTREAM, ex->up_head_len);
    upstream_set_handler(up, &relay_handler, c);
    if (ex->expect_continue && !ex->req_done && ex->req_body_bytes == 0) {
        uv_buf_t b = uv_buf_init((char *)CONTINUE_100, sizeof(CONTINUE_100) - 1);
        ex->expect_continue = false;
        if (write_parts(c, &b, 1) < 0)
            return;
        ex->bytes_down -= b.len; /* interim: not part of the response */
    }
    set_timer(c, ex->req_done ? TIMER_FIRST_BYTE : TIMER_STREAM_IDLE);
    if (c->req_paused && c->paused_at_head) {
        c->req_paused = false;
        c->paused_at_head = false;
        http1_parser_resume(&c->req);
    }
}

static void start_attest(struct client *c, struct upstream *up);

/* The connection is open: pass the gate, or attest first. */
static void gate(struct client *c, struct upstream *up)
{
    uint64_t retry_ms = 0;
    enum gate_verdict v = upstream_begin_exchange(up, &retry_ms);
    char msg[192];
    unsigned s;

    switch (v) {
    case GATE_PASS:
        relay_start(c, up);
        return;
    case GATE_ATTEST:
    case GATE_REATTEST:
        start_attest(c, up);
        return;
    case GATE_STALE:
        /* Opened before a reload moved the upstream (or changed how it is attested): it may
         * lead to the old enclave. A new connection is tried (the caller runs process_input). */
        c->ex.up = NULL;
        upstream_close(up, "the upstream settings changed while it was connecting");
        if (c->ex.attempts < MAX_ATTEMPTS)
            c->ex.acquiring = false;
        else
            respond_error(c, PROXY_ERR_UPSTREAM_UNREACHABLE,
                          "the upstream settings changed while connecting", 0, false);
        return;
    case GATE_REFUSED:
    case GATE_BAD_STATE:
        break;
    }
    s = (unsigned)((retry_ms + 999) / 1000);
    c->ex.up = up;
    snprintf(msg, sizeof(msg),
             "the enclave's key failed attestation recently; it is retried in %u s", s);
    respond_error(
        c, v == GATE_REFUSED ? PROXY_ERR_ATTESTATION_UNAVAILABLE : PROXY_ERR_UPSTREAM_UNREACHABLE,
        msg, s, false);
}

static void on_attested(struct upstream *up, const struct attest_outcome *o, void *arg)
{
    struct client *c = arg;
    c->ex.up = NULL;
    if (o->retry && c->ex.attempts < MAX_ATTEMPTS) {
        /* The settings changed while attesting (the connection is closed): start again. */
        c->ex.acquiring = false;
        process_input(c);
        return;
    }
    if (!o->accepted) {
        respond_error(c, o->err, o->message, o->retry_after_s, false);
        process_input(c);
        return;
    }
    if (upstream_is_closing(up)) {
        /* Attested, but the evidence response ended that connection: the next one has the
         * now-attested key and passes the gate at once. */
        if (c->ex.attempts < MAX_ATTEMPTS) {
            c->ex.acquiring = false;
        } else {
            respond_error(c, PROXY_ERR_UPSTREAM_UNREACHABLE,
                          "the upstream closed every connection after attestation", 0, false);
        }
        process_input(c);
        return;
    }
    gate(c, up);
    process_input(c);
}

static void start_attest(struct client *c, struct upstream *up)
{
    int rc;
    c->ex.up = up;
    rc = attest_start(up, on_attested, c);
    if (rc < 0)
        respond_error(c, PROXY_ERR_ATTESTATION_UNAVAILABLE, "attestation could not start", 0,
                      false);
}

static void on_connected(struct upstream *up, int status, void *arg)
{
    struct client *c = arg;
    if (status < 0) {
        char msg[256];
        snprintf(msg, sizeof(msg), "%s", upstream_failure(up));
        c->ex.up = NULL;
        respond_error(c, PROXY_ERR_UPSTREAM_UNREACHABLE, msg, 0, false);
        process_input(c);
        return;
    }
    gate(c, up);
    process_input(c);
}

static const struct upstream_handler connect_handler = {
    .on_connected = on_connected,
};

static void acquire(struct client *c)
{
    struct proxy_service *svc = c->svc;
    struct upstream *up;
    int rc;

    c->ex.attempts++;
    while ((up = pool_take(svc)) != NULL) {
        uint64_t retry_ms = 0;
        enum gate_verdict v = upstream_begin_exchange(up, &retry_ms);
        if (v == GATE_PASS) {
            relay_start(c, up);
            return;
        }
        if (v == GATE_ATTEST || v == GATE_REATTEST) {
            /* A pooled connection whose key is not (or no longer) attested is attested over
             * itself before it carries anything. */
            start_attest(c, up);
            return;
        }
        upstream_close(up, "pooled connection's key is refused");
    }
    if (warm_in_progress(svc)) {
        /* The service attests its enclave already and has no fresh pin: this request waits
         * for that attestation instead of making a second one (bounded by connect_timeout and
         * attestation_timeout, as its own would be), and does not count it as an attempt. */
        c->ex.waiting_warm = true;
        c->ex.attempts--;
        return;
    }
    rc = upstream_connect(svc, &connect_handler, c, &up);
    if (rc < 0) {
        char msg[160];
        snprintf(msg, sizeof(msg), "cannot connect to the upstream: %s", uv_strerror(rc));
        respond_error(c, PROXY_ERR_UPSTREAM_UNREACHABLE, msg, 0, false);
        return;
    }
    c->ex.up = up;
}

/* ---- The input loop ----------------------------------------------------------------------- */

static void process_input(struct client *c)
{
    if (c->processing) {
        c->again = true;
        return;
    }
    c->processing = true;
    do {
        c->again = false;
        while (c->state != CLIENT_CLOSING) {
            enum http1_status st;
            size_t used = 0;
            if (c->state == CLIENT_CONNECTING) {
                /* Body bytes that came while the connection is obtained are looked at now:
                 * broken framing is refused before the request goes up. */
                if (c->ex.acquiring) {
                    (void)body_valid_so_far(c);
                    break;
                }
                c->ex.acquiring = true;
                acquire(c);
                continue;
            }
            if (c->state != CLIENT_HEAD && c->state != CLIENT_RELAYING)
                break;
            if (c->req_paused || c->in_off == c->in_len)
                break;
            if (c->state == CLIENT_HEAD && c->write_queued >= CLIENT_WRITE_HIGH) {
                /* A client that pipelines and does not read: its answers wait in the write
                 * queue, so the next request waits too (on_written() resumes), its bytes stay
                 * in the bounded input buffer, and reading stops when that is full. */
                c->out_blocked = true;
                set_timer(c, TIMER_STREAM_IDLE); /* the answers must keep moving */
                break;
            }
            if (c->state == CLIENT_RELAYING) {
                if (c->ex.req_done)
                    break;
                if (upstream_write_blocked(c->ex.up)) {
                    c->ex.body_blocked = true;
                    break;
                }
            }
            st = http1_parser_execute(&c->req, c->in + c->in_off, c->in_len - c->in_off, &used);
            c->in_off += used;
            if (c->state == CLIENT_CLOSING)
                break;
            if (st == HTTP1_ERROR) {
                request_failed(c);
                break;
            }
            if (st == HTTP1_PAUSED)
                c->req_paused = true;
            if (st == HTTP1_PAUSED && c->state == CLIENT_CONNECTING && !body_valid_so_far(c))
                break;
            if (c->state == CLIENT_RELAYING && c->ex.up != NULL) {
                upstream_flush(c->ex.up);
                /* The request is complete: its answer is due within first_byte_timeout. */
                if (c->state == CLIENT_RELAYING && c->ex.req_done && !c->ex.resp_head_sent)
                    set_timer(c, TIMER_FIRST_BYTE);
            }
        }
    } while (c->again && c->state != CLIENT_CLOSING);
    c->processing = false;
    if (c->state == CLIENT_CLOSING)
        return;

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
        if (c->state == CLIENT_RELAYING && !c->ex.req_done && c->in_len == 0) {
            client_close(c, "client closed before the request was complete");
            return;
        }
    }
    release_idle_input(c);
    update_reading(c);
}

/* ---- Timers ------------------------------------------------------------------------------- */

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
        respond_error(c, PROXY_ERR_UPSTREAM_TIMEOUT, msg, 0, false);
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
        if (!ex->req_done && !ex->body_blocked) {
            log_event(LOG_LEVEL_INFO, "client_timeout", "service", c->svc->name, "timeout",
                      "stream_idle_timeout", "why", "the client stopped sending the request body",
                      NULL);
            client_close(c, "the client stopped sending the request body");
            return;
        }
        snprintf(msg, sizeof(msg), "the upstream stalled for stream_idle_timeout (%llu ms)",
                 (unsigned long long)c->svc->cfg->stream_idle_timeout_ms);
        respond_error(c, PROXY_ERR_UPSTREAM_TIMEOUT, msg, 0, !ex->req_done);
        return;
    case TIMER_LINGER:
        client_close(c, "linger time over");
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

/* ---- Accepting ---------------------------------------------------------------------------- */

/* True when the kernel holds bytes from the client that the loop has not read yet. */
static bool client_bytes_pending(struct client *c)
{
    uv_os_fd_t fd;
    int n = 0;
    if (uv_fileno(&c->h.handle, &fd) < 0 || ioctl(fd, FIONREAD, &n) < 0)
        return false;
    return n > 0;
}

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
    c->close_after = true;
    if (c->state == CLIENT_HEAD && !c->req.message_begun && c->in_len == c->in_off)
        set_timer(c, TIMER_DRAIN);
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
        if (c->state == CLIENT_CLOSING || c->listener_id != listener_id)
            continue;
        /* A request whose head is not complete has passed none of the checks yet: it would be
         * judged by the new configuration although it arrived through a socket that
         * configuration no longer has. Only exchanges admitted already finish. */
        if (c->state == CLIENT_HEAD)
            client_close(c, why);
        else
            c->close_after = true;
    }
}

void client_warm_done(struct proxy_service *svc)
{
    /* Closed clients stay linked until their close callbacks, so the walk is safe. */
    for (struct client *c = svc->clients; c != NULL; c = c->next) {
        if (c->state == CLIENT_CONNECTING && c->ex.waiting_warm) {
            c->ex.waiting_warm = false;
            c->ex.acquiring = false;
            process_input(c);
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
                      &request_cbs, c);

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
        if (n < 0 || write_raw(c, buf, (size_t)n) < 0) {
            client_close(c, "cannot answer");
            return true;
        }
        metrics_inc_requests(svc->metrics, 503);
        to_flushing(c);
        return true;
    }
    c->counted = true;
    svc->n_clients++;
    metrics_add_client_open(svc->metrics, 1);
    if (!is_unix)
        uv_tcp_nodelay(&c->h.tcp, 1);
    set_timer(c, TIMER_IDLE);
    update_reading(c);
    return true;
}
