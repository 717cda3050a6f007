/*
 * One client connection of the companion: TLS (server side, over proxy/tls.c's ciphertext
 * queues), requests parsed by the daemon's strict HTTP/1 parser (proxy/http1.h), the evidence
 * endpoint answered here, every other request relayed as plain HTTP/1.1 to the application.
 *
 * One exchange at a time: the request parser pauses after a relayed request's head until the
 * application is connected, and after each request until its response is complete; pipelined
 * bytes wait in the TLS input queue. Bodies stream both ways and are never stored whole.
 * Backpressure: the client is not read while more than QUEUE_HIGH bytes wait to go to the
 * application (or its ciphertext waits unparsed), and the application is not read while more
 * than QUEUE_HIGH bytes wait to go to the client.
 *
 * Each exchange has its own application connection (struct app_link), closed when the response
 * ends: the application is on loopback, and a fresh connection keeps one exchange's framing
 * errors from touching the next.
 */
#include "enclave/companion.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/err.h>

#include "base/hex.h"
#include "base/log.h"
#include "enclave/wellknown.h"
#include "proxy/errors.h"
#include "proxy/http1.h"
#include "proxy/tls.h"

#define QUEUE_HIGH   (256 * 1024) /* bytes queued towards one side before the other is paused */
#define READ_CHUNK   (16 * 1024)
#define SERVICE      "enclave" /* the "service" member of error bodies */
#define CONTINUE_100 "HTTP/1.1 100 Continue\r\n\r\n"

enum conn_state {
    ST_HANDSHAKE = 0,
    ST_IDLE,       /* between requests */
    ST_HEAD,       /* a request head is arriving */
    ST_CONNECTING, /* the head is complete, the application is being connected */
    ST_RELAYING,   /* the exchange runs */
    ST_CLOSING,    /* the last bytes go out, then the connection closes */
};

static const char *const state_names[] = {"handshake",  "idle",     "head",
                                          "connecting", "relaying", "closing"};

struct app_link {
    uv_tcp_t tcp;
    uv_connect_t connect;
    struct econn *c; /* NULL once the exchange let go of it */
    size_t queued;   /* bytes in uv_write requests */
    bool reading;
};

struct econn {
    struct companion *co;
    struct econn *prev, *next;
    unsigned long long id;
    union {
        uv_handle_t h;
        uv_stream_t s;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } c;
    uv_timer_t timer;
    int handles; /* open libuv handles of this struct; freed when the last one closed */
    enum conn_state state;
    struct tls_conn tls;
    bool handshake_done;
    bool client_reading;
    bool client_eof;
    size_t client_queued; /* ciphertext bytes in uv_write requests */
    char *plain;          /* decrypted bytes not yet parsed: [plain_off, plain_off + plain_len) */
    size_t plain_off, plain_len;
    struct http1_parser req;
    bool req_paused;  /* after a head (until connected) or a request (until answered) */
    bool body_paused; /* in a body, while QUEUE_HIGH bytes wait for the application: the
                       * parser is fed nothing more (on_app_written() resumes) */
    bool req_kick;    /* resumed: run the parser once even without new bytes, so that a
                       * request paused after its head completes (a GET has no body bytes) */

    /* The exchange in progress. */
    struct app_link *app;
    struct http1_parser resp;
    bool resp_init;
    bool evidence;
    bool session_bound; /* session_nonce=: the document's user_data names the TLS session too */
    uint8_t nonce[WELLKNOWN_NONCE_LEN];
    bool keep_alive, http10, head_request, expect_continue;
    enum http1_framing req_framing, resp_framing;
    bool req_done, resp_started, resp_done, close_after;
    uint64_t body_bytes;
    char *head_out; /* the request head for the application */
    size_t head_out_len;
    unsigned status;
};

struct wreq {
    uv_write_t w;
    void *owner; /* struct econn (client writes) or struct app_link (application writes) */
    size_t len;
    char data[];
};

static void pump(struct econn *c);
static void flush_client(struct econn *c);
static void update_reading(struct econn *c);
static void start_reading(struct econn *c);

/* ---- State, timer, closing ------------------------------------------------------------- */

static void set_state(struct econn *c, enum conn_state s)
{
    if (c->state == s)
        return;
    assert(c->state != ST_CLOSING); /* closing is final */
    if (log_enabled(LOG_LEVEL_DEBUG)) {
        char id[24];
        snprintf(id, sizeof(id), "%llu", c->id);
        log_event(LOG_LEVEL_DEBUG, "conn_state", "conn", id, "from", state_names[c->state], "to",
                  state_names[s], NULL);
    }
    c->state = s;
}

static void on_timer(uv_timer_t *t);

static void arm(struct econn *c, uint64_t ms)
{
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct econn *c = h->data;
    if (--c->handles > 0)
        return;
    tls_conn_free(&c->tls);
    http1_parser_free(&c->req);
    free(c->plain);
    free(c);
}

static void on_app_closed(uv_handle_t *h)
{
    free(h->data);
}

/* Lets go of the exchange's application connection (closing it) and of its buffers. */
static void exchange_end(struct econn *c)
{
    if (c->app != NULL) {
        c->app->c = NULL;
        uv_close((uv_handle_t *)&c->app->tcp, on_app_closed);
        c->app = NULL;
    }
    if (c->resp_init) {
        http1_parser_free(&c->resp);
        c->resp_init = false;
    }
    free(c->head_out);
    c->head_out = NULL;
    c->evidence = false;
    c->body_paused = false; /* a body that ended paused must not hold the next request */
    c->req_done = c->resp_started = c->resp_done = false;
    c->body_bytes = 0;
    c->status = 0;
}

static void conn_close(struct econn *c)
{
    if (uv_is_closing(&c->c.h))
        return;
    exchange_end(c);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        c->co->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->co->n_conns--;
    uv_close(&c->c.h, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

void conn_abort(struct econn *c)
{
    conn_close(c);
}

/* Closes once everything queued for the client is written. */
static void close_when_flushed(struct econn *c)
{
    if (c->state != ST_CLOSING)
        set_state(c, ST_CLOSING);
    if (c->app != NULL)
        exchange_end(c);
    if (c->client_reading) {
        uv_read_stop(&c->c.s);
        c->client_reading = false;
    }
    flush_client(c);
    if (c->client_queued == 0)
        conn_close(c);
    else
        arm(c, 5000); /* a client that reads nothing does not hold the connection */
}

static void log_request(struct econn *c, const char *kind, unsigned status, const char *code)
{
    char id[24], st[8], bytes[24];
    snprintf(id, sizeof(id), "%llu", c->id);
    snprintf(st, sizeof(st), "%u", status);
    snprintf(bytes, sizeof(bytes), "%" PRIu64, c->body_bytes);
    log_event(LOG_LEVEL_INFO, "request", "conn", id, "kind", kind, "method",
              c->req.method_seen ? llhttp_method_name((llhttp_method_t)c->req.ll.method) : "-",
              "status", st, "error", code, "request_bytes", bytes, NULL);
}

/* Answers with the daemon's JSON error shape and closes. */
static void refuse(struct econn *c, enum proxy_error e, const char *msg)
{
    char out[ERRORS_RESPONSE_MAX];
    int n;

    if (c->state == ST_CLOSING)
        return;
    log_request(c, c->evidence ? "evidence" : "relay", errors_status(e), errors_code_name(e));
    if (!c->resp_started) {
        n = errors_render(e, SERVICE, msg, 0, true, c->head_request, out, sizeof(out));
        if (n > 0 && tls_write(&c->tls, out, (size_t)n) == 0)
            c->resp_started = true;
    }
    close_when_flushed(c);
}

static void on_timer(uv_timer_t *t)
{
    struct econn *c = t->data;
    switch (c->state) {
    case ST_CONNECTING:
        refuse(c, PROXY_ERR_UPSTREAM_UNREACHABLE, "the application did not accept in time");
        break;
    case ST_RELAYING:
        if (!c->req_done && !c->resp_started && !c->body_paused) {
            /* The client stopped sending its body (stream_idle_timeout): not the application's
             * fault, and no answer, as the daemon does with such a client. (With the body
             * paused, the application stopped reading: that is its timeout, 504 below.) */
            log_event(LOG_LEVEL_INFO, "client_timeout", "timeout", "stream_idle_timeout", "why",
                      "the request body stopped arriving", NULL);
            conn_close(c);
            break;
        }
        if (!c->resp_started) {
            refuse(c, PROXY_ERR_UPSTREAM_TIMEOUT, "the application did not answer in time");
            break;
        }
        conn_close(c); /* a stalled stream ends the connection */
        break;
    default:
        conn_close(c);
    }
}

/* ---- Writing --------------------------------------------------------------------------- */

static void on_client_written(uv_write_t *w, int status)
{
    struct wreq *r = (struct wreq *)w;
    struct econn *c = r->owner;
    size_t r_len = r->len;
    c->client_queued -= r_len;
    free(r);
    if (status < 0 || uv_is_closing(&c->c.h))
        return;
    if (c->state == ST_CLOSING) {
        if (c->client_queued == 0)
            conn_close(c);
        return;
    }
    if (c->state == ST_IDLE && c->client_queued < QUEUE_HIGH &&
        c->client_queued + r_len >= QUEUE_HIGH)
        pump(c); /* parsing had stopped at QUEUE_HIGH (pump()) */
    update_reading(c);
}

/* Sends what OpenSSL produced. */
static void flush_client(struct econn *c)
{
    size_t len;
    const char *data = tls_out_peek(&c->tls, &len);
    struct wreq *r;
    uv_buf_t b;

    if (len == 0 || uv_is_closing(&c->c.h))
        return;
    r = malloc(sizeof(*r) + len);
    if (r == NULL) {
        conn_close(c);
        return;
    }
    memcpy(r->data, data, len);
    r->owner = c;
    r->len = len;
    tls_out_consume(&c->tls, len);
    b = uv_buf_init(r->data, (unsigned)len);
    if (uv_write(&r->w, &c->c.s, &b, 1, on_client_written) != 0) {
        free(r);
        conn_close(c);
        return;
    }
    c->client_queued += len;
}

static int client_send(struct econn *c, const char *data, size_t len)
{
    if (len > 0 && tls_write(&c->tls, data, len) != 0)
        return -EIO;
    return 0;
}

static void on_app_written(uv_write_t *w, int status)
{
    struct wreq *r = (struct wreq *)w;
    struct app_link *a = r->owner;
    a->queued -= r->len;
    free(r);
    if (status < 0 || a->c == NULL)
        return;
    if (a->queued < QUEUE_HIGH)
        pump(a->c);
}

static int app_send(struct econn *c, const char *data, size_t len)
{
    struct wreq *r;
    uv_buf_t b;

    if (len == 0)
        return 0;
    r = malloc(sizeof(*r) + len);
    if (r == NULL)
        return -ENOMEM;
    memcpy(r->data, data, len);
    r->owner = c->app;
    r->len = len;
    b = uv_buf_init(r->data, (unsigned)len);
    if (uv_write(&r->w, (uv_stream_t *)&c->app->tcp, &b, 1, on_app_written) != 0) {
        free(r);
        return -EIO;
    }
    c->app->queued += len;
    return 0;
}

/* ---- The application's response ---------------------------------------------------------- */

static int resp_on_head(struct http1_parser *p)
{
    struct econn *c = p->data;
    struct http1_response_opts opts;
    unsigned status = p->ll.status_code;
    size_t cap;
    char *buf;
    int n;
    bool no_body;

    if (status == 101) {
        http1_parser_fail(p, HTTP1_FAIL_CALLBACK, "the application switched protocols");
        return HTTP1_CB_ERROR;
    }
    if (status < 200)
        return HTTP1_CB_SKIP_BODY; /* interim answers are dropped: 100-continue is ours */
    memset(&opts, 0, sizeof(opts));
    no_body = c->head_request || status == 204 || status == 304;
    if (no_body) {
        c->resp_framing = HTTP1_FRAMING_NONE;
        if ((p->ll.flags & F_CONTENT_LENGTH) && status != 204) {
            opts.framing = HTTP1_FRAMING_LENGTH;
            opts.content_length = p->ll.content_length;
        }
    } else if (!(p->ll.flags & F_CHUNKED) && (p->ll.flags & F_CONTENT_LENGTH)) {
        c->resp_framing = opts.framing = HTTP1_FRAMING_LENGTH;
        opts.content_length = p->ll.content_length;
    } else if (c->http10) {
        c->resp_framing = opts.framing = HTTP1_FRAMING_EOF;
        c->close_after = true;
    } else {
        c->resp_framing = opts.framing = HTTP1_FRAMING_CHUNKED;
    }
    if (!c->keep_alive || !c->req_done || c->co->stopping)
        c->close_after = true;
    opts.close = c->close_after;
    cap = p->head.len + 2 * p->head.n + HTTP1_REWRITE_SLACK;
    buf = malloc(cap);
    if (buf == NULL) {
        http1_parser_fail(p, HTTP1_FAIL_CALLBACK, "out of memory");
        return HTTP1_CB_ERROR;
    }
    n = http1_build_response(p, &opts, buf, cap);
    if (n < 0 || client_send(c, buf, (size_t)n) < 0) {
        free(buf);
        http1_parser_fail(p, HTTP1_FAIL_CALLBACK, "cannot write the response head");
        return HTTP1_CB_ERROR;
    }
    free(buf);
    c->resp_started = true;
    c->status = status;
    arm(c, c->co->cfg->stream_idle_timeout_ms);
    return no_body ? HTTP1_CB_SKIP_BODY : HTTP1_CB_OK;
}

static int resp_on_body(struct http1_parser *p, const char *at, size_t len)
{
    struct econn *c = p->data;
    int rc = 0;
    if (len == 0)
        return HTTP1_CB_OK; /* never written as a chunk: "0\r\n\r\n" would end the body */
    if (c->resp_framing == HTTP1_FRAMING_CHUNKED) {
        char ch[HTTP1_CHUNK_HEADER_MAX];
        size_t n = http1_chunk_header(len, ch);
        rc = client_send(c, ch, n) < 0 || client_send(c, at, len) < 0 ||
                     client_send(c, "\r\n", 2) < 0
                 ? -1
                 : 0;
    } else if (c->resp_framing != HTTP1_FRAMING_NONE) {
        rc = client_send(c, at, len);
    }
    if (rc < 0) {
        http1_parser_fail(p, HTTP1_FAIL_CALLBACK, "cannot encrypt the response");
        return HTTP1_CB_ERROR;
    }
    return HTTP1_CB_OK;
}

static int resp_on_complete(struct http1_parser *p)
{
    struct econn *c = p->data;
    if (p->ll.status_code < 200)
        return HTTP1_CB_OK; /* the final response follows */
    if (c->resp_framing == HTTP1_FRAMING_CHUNKED && client_send(c, "0\r\n\r\n", 5) < 0) {
        http1_parser_fail(p, HTTP1_FAIL_CALLBACK, "cannot encrypt the response");
        return HTTP1_CB_ERROR;
    }
    c->resp_done = true;
    return HTTP1_CB_PAUSE;
}

static const struct http1_callbacks resp_cbs = {resp_on_head, resp_on_body, resp_on_complete};

/* The response is complete: the next request, or the end. */
static void response_done(struct econn *c)
{
    log_request(c, "relay", c->status, "-");
    exchange_end(c);
    flush_client(c);
    if (c->close_after || c->client_eof) {
        close_when_flushed(c);
        return;
    }
    set_state(c, ST_IDLE);
    arm(c, c->co->cfg->idle_timeout_ms);
    if (c->req_paused) {
        c->req_paused = false;
        c->req_kick = true;
        http1_parser_resume(&c->req);
    }
    pump(c);
}

/* The application's bytes went wrong, or it closed early. */
static void app_failed(struct econn *c, const char *why)
{
    if (!c->resp_started) {
        refuse(c, PROXY_ERR_UPSTREAM_UNREACHABLE, why);
        return;
    }
    log_request(c, "relay", c->status, "upstream_aborted");
    conn_close(c); /* the client sees a cut body, never a forged end */
}

static void on_app_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    (void)h;
    buf->base = malloc(READ_CHUNK);
    buf->len = buf->base != NULL ? READ_CHUNK : 0;
}

static void on_app_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct app_link *a = s->data;
    struct econn *c = a->c;
    enum http1_status st = HTTP1_NEED_MORE;
    size_t used = 0;

    if (c == NULL || nread == 0) {
        free(buf->base);
        return;
    }
    if (nread < 0) {
        free(buf->base);
        st = http1_parser_finish(&c->resp);
        if (c->resp_done) {
            flush_client(c);
            response_done(c);
        } else {
            app_failed(c, st == HTTP1_ERROR ? c->resp.fail_msg
                                            : "the application closed the connection early");
        }
        return;
    }
    st = http1_parser_execute(&c->resp, buf->base, (size_t)nread, &used);
    free(buf->base);
    if (st == HTTP1_ERROR) {
        app_failed(c, c->resp.fail_msg);
        return;
    }
    flush_client(c);
    if (c->state == ST_CLOSING || uv_is_closing(&c->c.h))
        return;
    if (c->resp_done) {
        response_done(c);
        return;
    }
    arm(c, c->resp_started ? c->co->cfg->stream_idle_timeout_ms : c->co->cfg->response_timeout_ms);
    update_reading(c);
}

/* Reads the client while its ciphertext does not pile up unparsed, and the application while
 * the client takes what it is sent. */
static void update_reading(struct econn *c)
{
    bool want;
    if (c->state == ST_CLOSING || uv_is_closing(&c->c.h))
        return;
    want = c->tls.in.len < QUEUE_HIGH && !c->client_eof;
    if (want && !c->client_reading)
        start_reading(c);
    else if (!want && c->client_reading) {
        uv_read_stop(&c->c.s);
        c->client_reading = false;
    }
    if (c->app != NULL && c->state == ST_RELAYING) {
        want = c->client_queued < QUEUE_HIGH;
        if (want && !c->app->reading)
            uv_read_start((uv_stream_t *)&c->app->tcp, on_app_alloc, on_app_read);
        else if (!want && c->app->reading)
            uv_read_stop((uv_stream_t *)&c->app->tcp);
        c->app->reading = want;
    }
}

/* ---- The application connection --------------------------------------------------------- */

static void on_app_connected(uv_connect_t *req, int status)
{
    struct app_link *a = req->data;
    struct econn *c = a->c;
    char msg[CONFIG_HOST_MAX + 128];

    if (c == NULL)
        return;
    if (status < 0) {
        snprintf(msg, sizeof(msg), "the application at %s:%u is unreachable: %s",
                 c->co->cfg->app.host, c->co->cfg->app.port, uv_strerror(status));
        refuse(c, PROXY_ERR_UPSTREAM_UNREACHABLE, msg);
        return;
    }
    if (app_send(c, c->head_out, c->head_out_len) < 0) {
        refuse(c, PROXY_ERR_UPSTREAM_UNREACHABLE, "cannot write to the application");
        return;
    }
    if (c->expect_continue && !c->req_done)
        client_send(c, CONTINUE_100, sizeof(CONTINUE_100) - 1);
    set_state(c, ST_RELAYING);
    arm(c, c->req_done ? c->co->cfg->response_timeout_ms : c->co->cfg->stream_idle_timeout_ms);
    update_reading(c);
    if (c->req_paused) {
        c->req_paused = false;
        c->req_kick = true;
        http1_parser_resume(&c->req);
    }
    pump(c);
}

static int app_connect(struct econn *c)
{
    const struct listen_addr *app = &c->co->cfg->app;
    struct sockaddr_storage ss;
    struct app_link *a;
    int rc;

    if (uv_ip4_addr(app->host, app->port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(app->host, app->port, (struct sockaddr_in6 *)&ss) != 0)
        return -EINVAL;
    a = calloc(1, sizeof(*a));
    if (a == NULL)
        return -ENOMEM;
    rc = uv_tcp_init(c->co->loop, &a->tcp);
    if (rc < 0) {
        free(a);
        return rc;
    }
    a->c = c;
    a->tcp.data = a;
    a->connect.data = a;
    c->app = a; /* closed by exchange_end() from here on */
    uv_tcp_nodelay(&a->tcp, 1);
    rc = uv_tcp_connect(&a->connect, &a->tcp, (struct sockaddr *)&ss, on_app_connected);
    if (rc < 0)
        return rc;
    return http1_parser_init(&c->resp, HTTP_RESPONSE, HTTP1_RESPONSE_HEAD_MAX,
                             HTTP1_RESPONSE_HEADERS_MAX, &resp_cbs, c) == 0
               ? (c->resp_init = true, 0)
               : -ENOMEM;
}

/* ---- The client's requests --------------------------------------------------------------- */

/* Fails the request from inside a parser callback. */
static int req_refuse(struct econn *c, enum proxy_error e, const char *msg)
{
    refuse(c, e, msg);
    http1_parser_fail(&c->req, HTTP1_FAIL_CALLBACK, msg);
    return HTTP1_CB_ERROR;
}

/* max_body_size = 0 means no limit, as in the daemon's [service] key. */
static bool body_over_limit(const struct enclave_config *cfg, uint64_t bytes)
{
    return cfg->max_body_size != 0 && bytes > cfg->max_body_size;
}

static int req_on_head(struct http1_parser *p)
{
    struct econn *c = p->data;
    const struct http1_head *h = &p->head;
    const char *target = http1_head_str(h, h->target_off);
    const struct enclave_config *cfg = c->co->cfg;
    struct http1_request_opts opts;
    char authority[CONFIG_HOST_MAX + 16];
    enum wellknown_target kind;
    int hi, n;
    size_t cap;

    exchange_end(c);
    c->head_request = p->ll.method == HTTP_HEAD;
    c->http10 = p->ll.http_minor == 0;
    c->keep_alive = llhttp_should_keep_alive(&p->ll) != 0 && !c->http10;
    c->close_after = false;
    if (!http1_version_supported(p))
        return req_refuse(c, PROXY_ERR_BAD_REQUEST, "only HTTP/1.0 and HTTP/1.1 are supported");
    if (p->ll.method == HTTP_CONNECT)
        return req_refuse(c, PROXY_ERR_BAD_REQUEST, "CONNECT is not supported");
    if (!(h->target_len > 0 && target[0] == '/') &&
        !(p->ll.method == HTTP_OPTIONS && h->target_len == 1 && target[0] == '*'))
        return req_refuse(c, PROXY_ERR_BAD_REQUEST, "the request target must be origin-form");
    if (http1_head_count(h, HTTP1_FIELD_HOST) > 1 ||
        (!c->http10 && http1_head_count(h, HTTP1_FIELD_HOST) != 1))
        return req_refuse(c, PROXY_ERR_BAD_REQUEST, "exactly one Host header is required");
    if ((p->ll.flags & F_CONTENT_LENGTH) && body_over_limit(cfg, p->ll.content_length))
        return req_refuse(c, PROXY_ERR_PAYLOAD_TOO_LARGE, "the request body is too large");

    kind = wellknown_parse(target, h->target_len, c->nonce);
    switch (kind) {
    case WELLKNOWN_BAD_NONCE:
        c->evidence = true;
        return req_refuse(c, PROXY_ERR_BAD_REQUEST,
                          "nonce must be exactly 64 lowercase hex digits (32 bytes)");
    case WELLKNOWN_SESSION:
    case WELLKNOWN_NONCE:
        c->evidence = true;
        c->session_bound = kind == WELLKNOWN_SESSION;
        if (p->ll.method != HTTP_GET)
            return req_refuse(c, PROXY_ERR_BAD_REQUEST, "the evidence endpoint answers GET only");
        return HTTP1_CB_OK; /* answered when the request is complete */
    case WELLKNOWN_OTHER:
        break;
    }

    hi = http1_head_find(h, HTTP1_FIELD_HOST, 0);
    if (hi >= 0 && h->hdrs[hi].value_len < sizeof(authority)) {
        memcpy(authority, h->buf + h->hdrs[hi].value_off, h->hdrs[hi].value_len);
        authority[h->hdrs[hi].value_len] = '\0';
    } else {
        snprintf(authority, sizeof(authority), "%s:%u", cfg->app.host, cfg->app.port);
    }
    memset(&opts, 0, sizeof(opts));
    opts.authority = authority;
    opts.keep_forwarded = true; /* the parent's proxies are the client's business */
    if (p->ll.flags & F_CHUNKED)
        opts.framing = HTTP1_FRAMING_CHUNKED;
    else if (p->ll.flags & F_CONTENT_LENGTH) {
        opts.framing = HTTP1_FRAMING_LENGTH;
        opts.content_length = p->ll.content_length;
    }
    c->req_framing = opts.framing;
    n = http1_head_find(h, HTTP1_FIELD_EXPECT, 0);
    c->expect_continue = n >= 0 && h->hdrs[n].value_len == 12 &&
                         strncasecmp(h->buf + h->hdrs[n].value_off, "100-continue", 12) == 0;
    cap = h->len + 2 * h->n + strlen(authority) + HTTP1_REWRITE_SLACK;
    c->head_out = malloc(cap);
    if (c->head_out == NULL)
        return req_refuse(c, PROXY_ERR_UPSTREAM_UNREACHABLE, "out of memory");
    n = http1_build_request(p, &opts, c->head_out, cap);
    if (n < 0)
        return req_refuse(c, PROXY_ERR_HEADER_TOO_LARGE, "the request head is too large");
    c->head_out_len = (size_t)n;
    set_state(c, ST_CONNECTING);
    arm(c, cfg->connect_timeout_ms);
    if (app_connect(c) < 0)
        return req_refuse(c, PROXY_ERR_UPSTREAM_UNREACHABLE, "cannot connect to the application");
    c->req_paused = true;
    return HTTP1_CB_PAUSE; /* the body waits until the application is connected */
}

static int req_on_body(struct http1_parser *p, const char *at, size_t len)
{
    struct econn *c = p->data;
    int rc = 0;

    if (len == 0)
        return HTTP1_CB_OK; /* an empty span (a parser run without bytes) is no chunk */
    c->body_bytes += len;
    if (body_over_limit(c->co->cfg, c->body_bytes))
        return req_refuse(c, PROXY_ERR_PAYLOAD_TOO_LARGE, "the request body is too large");
    if (c->evidence)
        return HTTP1_CB_OK; /* a body on the evidence request is read and ignored */
    if (c->req_framing == HTTP1_FRAMING_CHUNKED) {
        char ch[HTTP1_CHUNK_HEADER_MAX];
        size_t n = http1_chunk_header(len, ch);
        rc = app_send(c, ch, n) < 0 || app_send(c, at, len) < 0 || app_send(c, "\r\n", 2) < 0 ? -1
                                                                                              : 0;
    } else {
        rc = app_send(c, at, len);
    }
    if (rc < 0)
        return req_refuse(c, PROXY_ERR_UPSTREAM_UNREACHABLE, "cannot write to the application");
    /* A body that keeps coming is not idle: stream_idle_timeout runs from its last byte. */
    arm(c, c->co->cfg->stream_idle_timeout_ms);
    /* Past QUEUE_HIGH, pump() feeds the parser no more until the application took it. */
    if (c->app->queued >= QUEUE_HIGH)
        c->body_paused = true;
    return HTTP1_CB_OK;
}

/* The evidence request is complete: a fresh document for this connection's key and nonce. */
static int answer_evidence(struct econn *c)
{
    uint8_t *doc = malloc(NSM_DOCUMENT_MAX);
    char head[256], err[256], nonce_hex[17];
    uint8_t user_data[32];
    int n, h;

    if (doc == NULL)
        return req_refuse(c, PROXY_ERR_ATTESTATION_UNAVAILABLE, "out of memory");
    if (c->session_bound) {
        /* user_data names this TLS session with the key (evidence-protocol.md §12): no plain
         * request, whatever its nonce, yields such a document. */
        const char *why = NULL;
        uint8_t exporter[BINDING_SESSION_LEN];
        if (tls_session_exporter(&c->tls, exporter, &why) < 0) {
            free(doc);
            return req_refuse(c, PROXY_ERR_BAD_REQUEST, why);
        }
        if (binding_session_digest(c->co->id->cert, exporter, user_data) < 0) {
            free(doc);
            return req_refuse(c, PROXY_ERR_ATTESTATION_UNAVAILABLE, "cannot hash the key");
        }
        OPENSSL_cleanse(exporter, sizeof(exporter));
    } else {
        memcpy(user_data, c->co->id->user_data, sizeof(user_data));
    }
    n = nsm_get_document(c->co->nsm, user_data, sizeof(user_data), c->nonce, sizeof(c->nonce), doc,
                         NSM_DOCUMENT_MAX, err, sizeof(err));
    if (n < 0) {
        free(doc);
        log_event(LOG_LEVEL_WARN, "nsm_failed", "backend", c->co->nsm->name, "reason", err, NULL);
        return req_refuse(c, PROXY_ERR_ATTESTATION_UNAVAILABLE, err);
    }
    if (!c->keep_alive)
        c->close_after = true;
    h = wellknown_response_head((size_t)n, c->close_after, head, sizeof(head));
    if (h < 0 || client_send(c, head, (size_t)h) < 0 ||
        client_send(c, (char *)doc, (size_t)n) < 0) {
        free(doc);
        return req_refuse(c, PROXY_ERR_ATTESTATION_UNAVAILABLE, "cannot write the document");
    }
    /* The document is not kept: the next request asks the NSM again (no caching across
     * nonces, docs/evidence-protocol.md §4). */
    free(doc);
    hex_encode(c->nonce, 8, nonce_hex);
    log_event(LOG_LEVEL_INFO, "evidence", "backend", c->co->nsm->name, "nonce_prefix", nonce_hex,
              "session_bound", c->session_bound ? "yes" : "no", NULL);
    c->evidence = false;
    c->resp_started = false;
    if (c->close_after) {
        close_when_flushed(c);
        http1_parser_fail(&c->req, HTTP1_FAIL_CALLBACK, "closing");
        return HTTP1_CB_ERROR;
    }
    set_state(c, ST_IDLE);
    arm(c, c->co->cfg->idle_timeout_ms);
    return HTTP1_CB_OK;
}

static int req_on_complete(struct http1_parser *p)
{
    struct econn *c = p->data;
    c->req_done = true;
    if (c->evidence)
        return answer_evidence(c);
    if (c->req_framing == HTTP1_FRAMING_CHUNKED && app_send(c, "0\r\n\r\n", 5) < 0)
        return req_refuse(c, PROXY_ERR_UPSTREAM_UNREACHABLE, "cannot write to the application");
    if (!c->resp_started)
        arm(c, c->co->cfg->response_timeout_ms);
    c->req_paused = true; /* one exchange at a time: resumed by response_done() */
    return HTTP1_CB_PAUSE;
}

static const struct http1_callbacks req_cbs = {req_on_head, req_on_body, req_on_complete};

/* Feeds the parser what is decrypted, and decrypts more, while the exchange can take it. */
static void pump(struct econn *c)
{
    while (c->state != ST_CLOSING && !uv_is_closing(&c->c.h) && c->handshake_done) {
        enum http1_status st;
        size_t used = 0;

        if (c->req_paused)
            break;
        /* A client that does not read its answers gets no further request parsed: pipelined
         * evidence requests would otherwise each cost a document and queue it without bound.
         * on_client_written() resumes once the queue drained below QUEUE_HIGH. */
        if (c->state == ST_IDLE && c->client_queued >= QUEUE_HIGH)
            break;
        if (c->body_paused) {
            if (c->app == NULL || c->app->queued >= QUEUE_HIGH)
                break;
            c->body_paused = false;
        }
        if (c->plain_len == 0 && !c->req_kick) {
            enum tls_result r;
            size_t got = 0;
            if (c->plain == NULL && (c->plain = malloc(READ_CHUNK)) == NULL) {
                conn_close(c);
                return;
            }
            c->plain_off = 0;
            /* SSL_get_error() reads this thread's error queue: a stale entry from any earlier
             * OpenSSL call (a PEM decoder, the document signer) would turn "want more" into a
             * fatal error and cut a healthy connection. */
            ERR_clear_error();
            r = tls_read(&c->tls, c->plain, READ_CHUNK, &got);
            if (r == TLS_WANT)
                break;
            if (r != TLS_OK) {
                if (r == TLS_ERROR && log_enabled(LOG_LEVEL_DEBUG)) {
                    char id[24], e[256];
                    snprintf(id, sizeof(id), "%llu", c->id);
                    log_event(LOG_LEVEL_DEBUG, "tls_read_failed", "conn", id, "reason",
                              tls_error_string(e, sizeof(e)), NULL);
                }
                c->client_eof = true;
                break;
            }
            c->plain_len = got;
        }
        c->req_kick = false;
        if (c->state == ST_IDLE && c->plain_len > 0) {
            set_state(c, ST_HEAD);
            arm(c, c->co->cfg->header_timeout_ms);
        }
        st = http1_parser_execute(&c->req, c->plain != NULL ? c->plain + c->plain_off : "",
                                  c->plain_len, &used);
        c->plain_off += used;
        c->plain_len -= used;
        if (st == HTTP1_ERROR) {
            if (c->req.fail == HTTP1_FAIL_TOO_LARGE)
                refuse(c, PROXY_ERR_HEADER_TOO_LARGE, c->req.fail_msg);
            else if (c->req.fail != HTTP1_FAIL_CALLBACK)
                refuse(c, PROXY_ERR_BAD_REQUEST, c->req.fail_msg);
            else
                close_when_flushed(c);
            return;
        }
        if (st == HTTP1_PAUSED)
            break; /* req_paused or body_paused says why */
    }
    flush_client(c);
    if (c->client_eof && c->state != ST_CLOSING) {
        /* A request cut short, or none in progress: nothing more will come. */
        if (c->state == ST_RELAYING && c->req_done)
            c->close_after = true;
        else if (c->state == ST_CONNECTING || c->state == ST_RELAYING)
            app_failed(c, "the client went away");
        else
            conn_close(c);
        return;
    }
    update_reading(c);
}

/* ---- The client socket ------------------------------------------------------------------- */

static void on_client_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    (void)h;
    buf->base = malloc(READ_CHUNK);
    buf->len = buf->base != NULL ? READ_CHUNK : 0;
}

static void on_client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct econn *c = s->data;

    if (nread < 0) {
        free(buf->base);
        c->client_eof = true;
        if (c->client_reading) {
            uv_read_stop(s);
            c->client_reading = false;
        }
        pump(c);
        return;
    }
    if (nread > 0 && tls_feed(&c->tls, buf->base, (size_t)nread) < 0) {
        free(buf->base);
        conn_close(c);
        return;
    }
    free(buf->base);
    if (!c->handshake_done) {
        enum tls_result r;
        ERR_clear_error();
        r = tls_handshake(&c->tls);
        if (r == TLS_WANT) {
            flush_client(c);
            return;
        }
        if (r != TLS_OK) {
            char id[24], e[256];
            snprintf(id, sizeof(id), "%llu", c->id);
            log_event(LOG_LEVEL_DEBUG, "handshake_failed", "conn", id, "reason",
                      tls_error_string(e, sizeof(e)), NULL);
            flush_client(c); /* the alert */
            close_when_flushed(c);
            return;
        }
        c->handshake_done = true;
        set_state(c, ST_IDLE);
        arm(c, c->co->cfg->idle_timeout_ms);
    }
    pump(c);
}

static void start_reading(struct econn *c)
{
    if (uv_read_start(&c->c.s, on_client_alloc, on_client_read) == 0)
        c->client_reading = true;
}

/* A conn with its client handle initialised (c->c): starts TLS and reading. */
static int conn_begin(struct econn *c)
{
    struct companion *co = c->co;
    if (tls_conn_init_server(&c->tls, co->id->ctx) < 0 ||
        http1_parser_init(&c->req, HTTP_REQUEST, co->cfg->max_header_bytes, co->cfg->max_headers,
                          &req_cbs, c) < 0) {
        conn_close(c);
        return -ENOMEM;
    }
    arm(c, co->cfg->header_timeout_ms); /* the handshake */
    start_reading(c);
    return 0;
}

static struct econn *conn_new(struct companion *co)
{
    struct econn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->co = co;
    c->id = ++co->next_id;
    uv_timer_init(co->loop, &c->timer);
    c->timer.data = c;
    c->handles = 2; /* the timer and the client handle, initialised next */
    c->next = co->conns;
    if (co->conns != NULL)
        co->conns->prev = c;
    co->conns = c;
    co->n_conns++;
    return c;
}

int conn_accept_tcp(struct companion *co, uv_stream_t *server)
{
    struct econn *c = conn_new(co);
    int rc;
    if (c == NULL)
        return -ENOMEM;
    uv_tcp_init(co->loop, &c->c.tcp);
    c->c.h.data = c;
    rc = uv_accept(server, &c->c.s);
    if (rc < 0 || co->n_conns > co->cfg->max_connections) {
        conn_close(c);
        return rc < 0 ? rc : -EMFILE;
    }
    uv_tcp_nodelay(&c->c.tcp, 1);
    return conn_begin(c);
}

int conn_adopt_fd(struct companion *co, int fd)
{
    struct econn *c = conn_new(co);
    int rc;
    if (c == NULL) {
        close(fd);
        return -ENOMEM;
    }
    uv_pipe_init(co->loop, &c->c.pipe, 0);
    c->c.h.data = c;
    rc = uv_pipe_open(&c->c.pipe, fd);
    if (rc < 0 || co->n_conns > co->cfg->max_connections) {
        if (rc < 0)
            close(fd);
        conn_close(c);
        return rc < 0 ? rc : -EMFILE;
    }
    return conn_begin(c);
}
