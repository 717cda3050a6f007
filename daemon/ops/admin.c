/*
 * The admin API's server (the endpoints and their rules: admin.h). Requests are parsed by the
 * relay's own strict parser (proxy/http1.h), so the admin listener refuses exactly the heads a
 * service listener refuses; this file adds what is the admin API's alone: one request per
 * connection, no bodies, the URL and Host limits, the loopback Host check, the endpoints.
 */
#include "ops/admin.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/file.h"
#include "base/log.h"
#include "base/metrics.h"
#include "proxy/http1.h"

#define URL_MAX        1024
#define HOST_VALUE_MAX 300
/* No separate header count limit: an empty name is refused, so every header line takes at
 * least four bytes ("a:" CRLF) and ADMIN_REQUEST_MAX bounds the count first. */
#define HEADERS_MAX    (ADMIN_REQUEST_MAX / 4)
#define READ_BUF       4096
#define HEAD_MAX       512
#define LISTEN_BACKLOG 64

union stream_handle {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
};

enum client_state {
    CLIENT_READING = 0, /* waiting for (the rest of) the request */
    CLIENT_WRITING,     /* response queued; then shutdown and close */
    CLIENT_CLOSING,     /* handles closing; freed when both close callbacks ran */
};

struct admin_client {
    struct admin *server;
    struct admin_client *prev;
    struct admin_client *next;
    union stream_handle h;
    uv_timer_t timer;
    uv_write_t write_req;
    uv_shutdown_t shutdown_req;
    int pending_closes;
    enum client_state state;

    struct http1_parser parser; /* the head (target, headers) is stored in it */
    bool has_body;
    bool complete;

    char read_buf[READ_BUF];
    char head[HEAD_MAX];
    char *body; /* malloc'd response body, freed with the client */
    size_t body_len;
};

struct admin {
    uv_loop_t *loop;
    union stream_handle listener;
    bool listener_open;
    bool is_unix;
    bool unlink_on_close;
    char path[CONFIG_PATH_MAX];
    struct admin_source src;
    uint64_t timeout_ms;
    uint32_t max_clients;
    uint32_t n_clients;
    struct admin_client *clients;
    bool closing;
    int pending_closes;
    void (*done)(void *arg);
    void *done_arg;
};

/* ---- Server lifetime ------------------------------------------------------------------------- */

static void server_maybe_finish(struct admin *a)
{
    void (*done)(void *);
    void *arg;

    if (!a->closing || a->pending_closes > 0 || a->clients != NULL)
        return;
    if (a->unlink_on_close && a->path[0] != '\0')
        unlink(a->path);
    done = a->done;
    arg = a->done_arg;
    free(a);
    if (done != NULL)
        done(arg);
}

static void on_client_handle_closed(uv_handle_t *h)
{
    struct admin_client *c = h->data;
    struct admin *a = c->server;

    if (--c->pending_closes > 0)
        return;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        a->clients = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    a->n_clients--;
    http1_parser_free(&c->parser);
    free(c->body);
    free(c);
    server_maybe_finish(a);
}

/* Closes a client (idempotent): both its handles, then frees it from the last close callback. */
static void client_close(struct admin_client *c)
{
    if (c->state == CLIENT_CLOSING)
        return;
    c->state = CLIENT_CLOSING;
    c->pending_closes = 2;
    uv_close(&c->h.handle, on_client_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_client_handle_closed);
}

static void on_timeout(uv_timer_t *t)
{
    struct admin_client *c = t->data;
    log_event(LOG_LEVEL_DEBUG, "admin_timeout", NULL);
    client_close(c);
}

/* ---- Responses ------------------------------------------------------------------------------- */

static const char *status_text(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 421:
        return "Misdirected Request";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Error";
    }
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct admin_client *c = req->data;
    (void)status;
    client_close(c);
}

static void on_write(uv_write_t *req, int status)
{
    struct admin_client *c = req->data;

    if (c->state == CLIENT_CLOSING)
        return; /* closed while writing: the close callbacks free everything */
    c->shutdown_req.data = c;
    if (status < 0 || uv_shutdown(&c->shutdown_req, &c->h.stream, on_shutdown) < 0)
        client_close(c);
}

/*
 * Queues the response and moves to WRITING. `body` is malloc'd and becomes the client's (it may
 * be NULL with body_len 0); for HEAD it is counted in Content-Length but not sent.
 */
static void respond(struct admin_client *c, int status, const char *content_type, char *body,
                    size_t body_len, const char *extra_headers)
{
    uv_buf_t bufs[2];
    unsigned nbufs = 1;
    int n;
    bool head_only = c->complete && c->parser.ll.method == HTTP_HEAD;

    uv_read_stop(&c->h.stream);
    c->body = body;
    c->body_len = body_len;
    n = snprintf(c->head, sizeof(c->head),
                 "HTTP/1.1 %d %s\r\n"
                 "Content-Type: %s\r\n"
                 "Content-Length: %zu\r\n"
                 "Cache-Control: no-store\r\n"
                 "X-Content-Type-Options: nosniff\r\n"
                 "%s"
                 "Connection: close\r\n"
                 "\r\n",
                 status, status_text(status), content_type, body_len,
                 extra_headers != NULL ? extra_headers : "");
    if (n < 0 || (size_t)n >= sizeof(c->head)) {
        client_close(c);
        return;
    }
    bufs[0] = uv_buf_init(c->head, (unsigned)n);
    if (body_len > 0 && !head_only) {
        bufs[1] = uv_buf_init(body, (unsigned)body_len);
        nbufs = 2;
    }
    c->state = CLIENT_WRITING;
    /* The response must drain within the same timeout as the request arrived in. */
    uv_timer_start(&c->timer, on_timeout, c->server->timeout_ms, 0);
    c->write_req.data = c;
    if (uv_write(&c->write_req, &c->h.stream, bufs, nbufs, on_write) < 0)
        client_close(c);
}

static void respond_text(struct admin_client *c, int status, const char *text,
                         const char *extra_headers)
{
    size_t n = strlen(text);
    char *body = malloc(n + 1);
    if (body == NULL) {
        client_close(c);
        return;
    }
    memcpy(body, text, n + 1);
    respond(c, status, "text/plain; charset=utf-8", body, n, extra_headers);
}

static void respond_json_error(struct admin_client *c, int status, const char *code,
                               const char *message)
{
    json_t *doc = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message);
    char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
    size_t n;

    json_decref(doc);
    if (text == NULL) {
        respond_text(c, 500, "internal error\n", NULL);
        return;
    }
    n = strlen(text);
    /* json_dumps() allocates with malloc() by default; append the newline in a new buffer so
     * that the body is ours to free() whatever allocator jansson was given. */
    {
        char *body = malloc(n + 2);
        if (body == NULL) {
            free(text);
            client_close(c);
            return;
        }
        memcpy(body, text, n);
        body[n] = '\n';
        body[n + 1] = '\0';
        free(text);
        respond(c, status, "application/json", body, n + 1, NULL);
    }
}

static uint64_t wall_now_ms(const struct admin *a)
{
    struct timespec ts;

    if (a->src.now_ms != NULL)
        return a->src.now_ms(a->src.ctx);
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void serve_metrics(struct admin_client *c)
{
    struct admin *a = c->server;
    char *text = NULL;
    size_t len = 0;

    if (a->src.metrics == NULL) {
        respond_text(c, 404, "no metrics\n", NULL);
        return;
    }
    if (metrics_render(a->src.metrics, wall_now_ms(a), &text, &len) < 0) {
        respond_text(c, 500, "metrics unavailable\n", NULL);
        return;
    }
    respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, NULL);
}

/* Sends `doc` (a reference this function takes) as an indented JSON body with `status`. */
static void respond_doc(struct admin_client *c, int status, json_t *doc)
{
    char *text;
    char *body;
    size_t n;

    if (doc == NULL) {
        respond_json_error(c, 503, "unavailable", "attestation state is not available yet");
        return;
    }
    if (!json_is_object(doc)) {
        json_decref(doc);
        respond_json_error(c, 500, "internal", "attestation state is not a JSON object");
        return;
    }
    text = json_dumps(doc, JSON_INDENT(2) | JSON_ENSURE_ASCII);
    json_decref(doc);
    if (text == NULL) {
        respond_json_error(c, 500, "internal", "attestation state could not be encoded");
        return;
    }
    n = strlen(text);
    if (n + 2 > ADMIN_RESPONSE_MAX) {
        free(text);
        respond_json_error(c, 500, "internal", "attestation state is too large");
        return;
    }
    body = malloc(n + 2);
    if (body == NULL) {
        free(text);
        client_close(c);
        return;
    }
    memcpy(body, text, n);
    body[n] = '\n';
    body[n + 1] = '\0';
    free(text);
    respond(c, status, "application/json", body, n + 1, NULL);
}

static void serve_attestation(struct admin_client *c)
{
    struct admin *a = c->server;
    respond_doc(c, 200, a->src.attestation != NULL ? a->src.attestation(a->src.ctx) : NULL);
}

/* 200 "ready" when ready; otherwise 503 with a JSON body saying why, per service, when the
 * source can tell (plain "not ready" when it cannot). */
static void serve_readyz(struct admin_client *c)
{
    struct admin *a = c->server;
    json_t *why;
    if (a->src.ready == NULL || a->src.ready(a->src.ctx)) {
        respond_text(c, 200, "ready\n", NULL);
        return;
    }
    why = a->src.readiness != NULL ? a->src.readiness(a->src.ctx) : NULL;
    if (why == NULL) {
        respond_text(c, 503, "not ready\n", NULL);
        return;
    }
    respond_doc(c, 503, why);
}

/* True when a Host value names loopback: localhost, 127.0.0.0/8 or [::1], with any port. */
static bool host_is_loopback(const char *h, size_t n)
{
    char name[HOST_VALUE_MAX];
    const char *colon;
    size_t len = n;
    unsigned char addr[sizeof(struct in6_addr)];

    if (n == 0 || n >= sizeof(name))
        return false;
    if (h[0] == '[') {
        const char *close = memchr(h, ']', n);
        if (close == NULL)
            return false;
        len = (size_t)(close - h - 1);
        memcpy(name, h + 1, len);
        name[len] = '\0';
        if ((size_t)(close - h) + 1 < n && close[1] != ':')
            return false;
        return inet_pton(AF_INET6, name, addr) == 1 &&
               memcmp(addr, &in6addr_loopback, sizeof(struct in6_addr)) == 0;
    }
    colon = memchr(h, ':', n);
    if (colon != NULL) {
        len = (size_t)(colon - h);
        for (const char *p = colon + 1; p < h + n; p++) {
            if (*p < '0' || *p > '9')
                return false;
        }
    }
    memcpy(name, h, len);
    name[len] = '\0';
    if (strcasecmp(name, "localhost") == 0 || strcasecmp(name, "localhost.") == 0)
        return true;
    return inet_pton(AF_INET, name, addr) == 1 && addr[0] == 127;
}

/* Decides and queues the response to a complete request. */
static void dispatch(struct admin_client *c)
{
    struct admin *a = c->server;
    const struct http1_head *h = &c->parser.head;
    uint8_t method = c->parser.ll.method;
    const char *url = http1_head_str(h, h->target_off);
    size_t hosts = http1_head_count(h, HTTP1_FIELD_HOST);
    int hi = http1_head_find(h, HTTP1_FIELD_HOST, 0);
    const char *host = hi >= 0 ? http1_head_str(h, h->hdrs[hi].value_off) : "";
    size_t host_len = hi >= 0 ? h->hdrs[hi].value_len : 0;
    char path[URL_MAX];
    size_t plen;
    const char *q;

    if (!http1_version_supported(&c->parser)) {
        respond_text(c, 400, "bad request: only HTTP/1.0 and HTTP/1.1 are supported\n", NULL);
        return;
    }
    if (hosts > 1 || host_len >= HOST_VALUE_MAX) {
        respond_text(c, 400, "bad request\n", NULL);
        return;
    }
    if (hosts == 0 && c->parser.ll.http_major == 1 && c->parser.ll.http_minor >= 1) {
        respond_text(c, 400, "bad request: Host is required\n", NULL);
        return;
    }
    if (!a->is_unix && hosts == 1 && !host_is_loopback(host, host_len)) {
        respond_text(c, 421, "misdirected request: Host must name loopback\n", NULL);
        return;
    }
    if (method != HTTP_GET && method != HTTP_HEAD) {
        respond_text(c, 405, "method not allowed\n", "Allow: GET, HEAD\r\n");
        return;
    }

    assert(h->target_len < URL_MAX); /* on_read() answered a longer one with 414 */
    q = memchr(url, '?', h->target_len);
    plen = q != NULL ? (size_t)(q - url) : h->target_len;
    memcpy(path, url, plen);
    path[plen] = '\0';

    if (strcmp(path, "/healthz") == 0) {
        respond_text(c, 200, "ok\n", NULL);
    } else if (strcmp(path, "/readyz") == 0) {
        serve_readyz(c);
    } else if (strcmp(path, "/metrics") == 0) {
        serve_metrics(c);
    } else if (strcmp(path, "/attestation") == 0) {
        serve_attestation(c);
    } else {
        respond_text(c, 404, "not found\n", NULL);
    }
}

/* ---- Request parsing ------------------------------------------------------------------------- */

/* The admin API takes no request body: its first byte ends the parse with 413. */
static int on_request_body(struct http1_parser *p, const char *at, size_t len)
{
    struct admin_client *c = p->data;
    (void)at;
    (void)len;
    c->has_body = true;
    http1_parser_fail(p, HTTP1_FAIL_CALLBACK, "request bodies are not accepted");
    return HTTP1_CB_ERROR;
}

static int on_request_complete(struct http1_parser *p)
{
    struct admin_client *c = p->data;
    c->complete = true;
    /* One request per connection: stop here; anything after it is ignored. */
    return HTTP1_CB_PAUSE;
}

static const struct http1_callbacks request_callbacks = {
    .on_body = on_request_body,
    .on_complete = on_request_complete,
};

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct admin_client *c = h->data;
    (void)suggested;
    *buf = uv_buf_init(c->read_buf, sizeof(c->read_buf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct admin_client *c = s->data;
    enum http1_status st;
    size_t used;
    char msg[sizeof(c->parser.fail_msg) + 16];

    if (c->state != CLIENT_READING)
        return;
    if (nread < 0) {
        client_close(c); /* EOF before a complete request, or a read error */
        return;
    }
    if (nread == 0)
        return;
    st = http1_parser_execute(&c->parser, buf->base, (size_t)nread, &used);
    /* The target is stored as it arrives: a long one is refused as soon as it is seen, before
     * the rest of its head. */
    if (c->parser.head.target_len >= URL_MAX) {
        respond_text(c, 414, "uri too long\n", NULL);
        return;
    }
    if (st == HTTP1_NEED_MORE)
        return;
    if (st == HTTP1_PAUSED && c->complete) {
        dispatch(c);
        return;
    }
    if (c->parser.fail == HTTP1_FAIL_TOO_LARGE) {
        respond_text(c, 431, "request too large\n", NULL);
    } else if (c->has_body) {
        respond_text(c, 413, "request bodies are not accepted\n", NULL);
    } else {
        /* The parser's reason, the one the relay gives for the same head. */
        snprintf(msg, sizeof(msg), "bad request: %s\n", c->parser.fail_msg);
        respond_text(c, 400, msg, NULL);
    }
}

/* ---- Listener -------------------------------------------------------------------------------- */

static void on_connection(uv_stream_t *server, int status)
{
    struct admin *a = server->data;
    struct admin_client *c;
    int rc;

    if (status < 0 || a->closing)
        return;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    c->server = a;
    rc = a->is_unix ? uv_pipe_init(a->loop, &c->h.pipe, 0) : uv_tcp_init(a->loop, &c->h.tcp);
    if (rc < 0) {
        free(c);
        return;
    }
    c->h.handle.data = c;
    /* From here the client is in the list and is freed only by its close callbacks. */
    uv_timer_init(a->loop, &c->timer);
    c->timer.data = c;
    c->next = a->clients;
    if (a->clients != NULL)
        a->clients->prev = c;
    a->clients = c;
    a->n_clients++;

    rc = uv_accept(server, &c->h.stream);
    if (rc < 0 || a->n_clients > a->max_clients) {
        if (rc == 0)
            log_event(LOG_LEVEL_WARN, "admin_busy", "action", "connection closed", NULL);
        client_close(c);
        return;
    }
    /* The head of one request is bounded by ADMIN_REQUEST_MAX (431 beyond); its storage is
     * allocated as bytes arrive and freed with the client. */
    if (http1_parser_init(&c->parser, HTTP_REQUEST, ADMIN_REQUEST_MAX, HEADERS_MAX,
                          &request_callbacks, c) < 0) {
        client_close(c);
        return;
    }
    uv_timer_start(&c->timer, on_timeout, a->timeout_ms, 0);
    if (uv_read_start(&c->h.stream, on_alloc, on_read) < 0)
        client_close(c);
}

static void on_listener_closed(uv_handle_t *h)
{
    struct admin *a = h->data;
    a->pending_closes--;
    server_maybe_finish(a);
}

static bool tcp_is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        return memcmp(&in6->sin6_addr, &in6addr_loopback, sizeof(struct in6_addr)) == 0;
    }
    return false;
}

void admin_options_init(struct admin_options *opt, const struct listen_addr *addr)
{
    memset(opt, 0, sizeof(*opt));
    if (addr != NULL)
        opt->addr = *addr;
    opt->fd = -1;
}

/* Binds (or adopts) and listens; on failure the caller closes the listener handle if open. */
static int open_listener(struct admin *a, const struct admin_options *opt)
{
    struct sockaddr_storage ss;
    int rc;

    memset(&ss, 0, sizeof(ss));
    if (opt->fd >= 0) {
        socklen_t len = sizeof(ss);
        if (getsockname(opt->fd, (struct sockaddr *)&ss, &len) == -1) {
            rc = -errno;
            close(opt->fd);
            return rc;
        }
        a->is_unix = ss.ss_family == AF_UNIX;
        if (!a->is_unix && !tcp_is_loopback(&ss)) {
            close(opt->fd);
            return -EINVAL;
        }
        rc = a->is_unix ? uv_pipe_init(a->loop, &a->listener.pipe, 0)
                        : uv_tcp_init(a->loop, &a->listener.tcp);
        if (rc < 0) {
            close(opt->fd);
            return rc;
        }
        a->listener_open = true;
        a->listener.handle.data = a;
        rc = a->is_unix ? uv_pipe_open(&a->listener.pipe, opt->fd)
                        : uv_tcp_open(&a->listener.tcp, opt->fd);
        if (rc < 0) {
            close(opt->fd);
            return rc;
        }
    } else if (opt->addr.is_unix) {
        a->is_unix = true;
        if (opt->addr.path[0] == '\0' || strlen(opt->addr.path) >= sizeof(a->path))
            return -EINVAL;
        memcpy(a->path, opt->addr.path, strlen(opt->addr.path) + 1);
        /* A socket left behind by a previous run would make bind fail; a live one (a service's
         * listener) or anything else at that path is not ours to remove. */
        rc = file_clear_stale_socket(a->path);
        if (rc < 0)
            return rc;
        rc = uv_pipe_init(a->loop, &a->listener.pipe, 0);
        if (rc < 0)
            return rc;
        a->listener_open = true;
        a->listener.handle.data = a;
        {
            /* Never wider than its mode, not even between bind() and chmod(): the umask is
             * narrowed around bind() (one thread), as for the service listeners. */
            mode_t mode = opt->unix_mode != 0 ? (mode_t)opt->unix_mode : 0660;
            mode_t old = umask((mode_t)(~mode & 0777));
            rc = uv_pipe_bind(&a->listener.pipe, a->path);
            umask(old);
            if (rc < 0)
                return rc;
            a->unlink_on_close = true;
            if (chmod(a->path, mode) == -1)
                return -errno;
        }
    } else {
        if (strchr(opt->addr.host, ':') != NULL)
            rc = uv_ip6_addr(opt->addr.host, opt->addr.port, (struct sockaddr_in6 *)&ss);
        else
            rc = uv_ip4_addr(opt->addr.host, opt->addr.port, (struct sockaddr_in *)&ss);
        if (rc < 0)
            return rc;
        if (!tcp_is_loopback(&ss))
            return -EINVAL; /* the admin API is never exposed beyond this host */
        rc = uv_tcp_init(a->loop, &a->listener.tcp);
        if (rc < 0)
            return rc;
        a->listener_open = true;
        a->listener.handle.data = a;
        rc = uv_tcp_bind(&a->listener.tcp, (const struct sockaddr *)&ss, 0);
        if (rc < 0)
            return rc;
    }
    return uv_listen(&a->listener.stream, LISTEN_BACKLOG, on_connection);
}

int admin_start(uv_loop_t *loop, const struct admin_options *opt, const struct admin_source *src,
                struct admin **out)
{
    struct admin *a;
    int rc;

    *out = NULL;
    a = calloc(1, sizeof(*a));
    if (a == NULL) {
        if (opt->fd >= 0)
            close(opt->fd);
        return -ENOMEM;
    }
    a->loop = loop;
    a->src = *src;
    a->timeout_ms = opt->request_timeout_ms != 0 ? opt->request_timeout_ms : ADMIN_DEFAULT_TIMEOUT;
    a->max_clients = opt->max_clients != 0 ? opt->max_clients : ADMIN_DEFAULT_CLIENTS;
    rc = open_listener(a, opt);
    if (rc < 0) {
        if (a->unlink_on_close)
            unlink(a->path);
        if (a->listener_open) {
            /* The handle is freed with the server by the loop's next iteration. */
            a->closing = true;
            a->unlink_on_close = false;
            a->pending_closes = 1;
            uv_close(&a->listener.handle, on_listener_closed);
        } else {
            free(a);
        }
        return rc;
    }
    *out = a;
    return 0;
}

int admin_port(const struct admin *a)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);

    if (a->is_unix)
        return -EINVAL;
    if (uv_tcp_getsockname(&a->listener.tcp, (struct sockaddr *)&ss, &len) < 0)
        return -EINVAL;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

void admin_close(struct admin *a, void (*done)(void *arg), void *arg)
{
    struct admin_client *c;
    struct admin_client *next;

    if (a == NULL || a->closing)
        return;
    a->closing = true;
    a->done = done;
    a->done_arg = arg;
    a->pending_closes = 1;
    uv_close(&a->listener.handle, on_listener_closed);
    for (c = a->clients; c != NULL; c = next) {
        next = c->next;
        client_close(c);
    }
}

json_t *admin_json_time(uint64_t unix_ms)
{
    char buf[40];
    char out[48];
    struct tm tm;
    time_t t = (time_t)(unix_ms / 1000u);

    if (gmtime_r(&t, &tm) == NULL)
        return NULL;
    if (strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
        return NULL;
    snprintf(out, sizeof(out), "%s.%03uZ", buf, (unsigned)(unix_ms % 1000u));
    return json_string(out);
}
