/*
 * One request/response exchange of a client connection (client_internal.h): the checks of a
 * request head, in order (version, method, target, framing, Host count, then access.c's Host
 * allow-list and token, then the body size), the head rewritten for the enclave, buffered
 * validation of a chunked body before any byte goes up, the body forwarded as it is parsed,
 * the input loop that drives all this, the proxy's own answers, and the end of an exchange
 * (the access log line, the next request or the close). Obtaining the upstream connection is
 * acquire.c's, the response relay.c's.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/log.h"
#include "base/metrics.h"
#include "proxy/access.h"
#include "proxy/bufcache.h"
#include "proxy/client_internal.h"
#include "proxy/errors.h"
#include "proxy/http1.h"
#include "proxy/proxy_internal.h"
#include "proxy/tunnel.h"
#include "proxy/upstream.h"

/* ---- Phases ---------------------------------------------------------------------------------- */

#define TO(s) (1u << (s))

static const char *const req_phase_names[] = {
    [REQ_HEAD] = "head",
    [REQ_BODY] = "body",
    [REQ_DONE] = "done",
};
#ifndef NDEBUG /* read by assert() only */
static const unsigned req_phase_next[] = {
    [REQ_HEAD] = TO(REQ_BODY) | TO(REQ_DONE),
    [REQ_BODY] = TO(REQ_DONE),
    [REQ_DONE] = 0,
};
#endif

static const char *const resp_phase_names[] = {
    [RESP_NONE] = "none",
    [RESP_HEAD] = "head",
    [RESP_BODY] = "body",
    [RESP_DONE] = "done",
};
#ifndef NDEBUG /* read by assert() only */
static const unsigned resp_phase_next[] = {
    [RESP_NONE] = TO(RESP_HEAD),
    [RESP_HEAD] = TO(RESP_BODY),
    [RESP_BODY] = TO(RESP_DONE),
    [RESP_DONE] = 0,
};
#endif

static const char *const acquire_names[] = {
    [ACQUIRE_DUE] = "due",
    [ACQUIRE_STARTED] = "started",
    [ACQUIRE_WAITING_WARM] = "waiting_warm",
};
#ifndef NDEBUG /* read by assert() only */
static const unsigned acquire_next[] = {
    [ACQUIRE_DUE] = TO(ACQUIRE_STARTED),
    [ACQUIRE_STARTED] = TO(ACQUIRE_DUE) | TO(ACQUIRE_WAITING_WARM),
    [ACQUIRE_WAITING_WARM] = TO(ACQUIRE_DUE),
};
#endif

#undef TO

void exchange__set_req_phase(struct client *c, enum req_phase to)
{
    enum req_phase from = c->ex.req_phase;
    assert(req_phase_next[from] & (1u << to));
    client__log_transition(c, "request_phase", req_phase_names[from], req_phase_names[to]);
    c->ex.req_phase = to;
}

void exchange__set_resp_phase(struct client *c, enum resp_phase to)
{
    enum resp_phase from = c->ex.resp_phase;
    assert(resp_phase_next[from] & (1u << to));
    /* A response arrives only over the connection the exchange holds. */
    assert(c->state == CLIENT_RELAYING && c->ex.up != NULL);
    client__log_transition(c, "response_phase", resp_phase_names[from], resp_phase_names[to]);
    c->ex.resp_phase = to;
}

void exchange__set_acquire(struct client *c, enum acquire_step to)
{
    enum acquire_step from = c->ex.acquire;
    assert(acquire_next[from] & (1u << to));
    assert(c->state == CLIENT_CONNECTING || c->state == CLIENT_RELAYING);
    client__log_transition(c, "acquire_step", acquire_names[from], acquire_names[to]);
    c->ex.acquire = to;
}

/* ---- Request checks -------------------------------------------------------------------------- */

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
bool exchange__transfer_encoding_ok(const struct http1_head *h)
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
    enum proxy_error denied;
    enum tunnel_admit ws = TUNNEL_ADMIT_NO;
    char msg[ACCESS_MSG_MAX];
    int rc;
    size_t cap;

    exchange__free(c);
    ex->started_ms = uv_now(c->h.handle.loop);
    ex->method = (llhttp_method_t)p->ll.method;
    ex->method_known = true;
    ex->head_request = ex->method == HTTP_HEAD;
    ex->http10 = p->ll.http_minor == 0;
    ex->keep_alive = llhttp_should_keep_alive(&p->ll) != 0 && !ex->http10;

    if (!http1_version_supported(p))
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
    if (!exchange__transfer_encoding_ok(h))
        return refuse(c, PROXY_ERR_BAD_REQUEST,
                      "Transfer-Encoding must be exactly 'chunked' (in one header field): other "
                      "transfer codings are not relayed");
    /* HTTP/1.0 has no chunked coding: such framing is faulty (RFC 9112 6.1). */
    if (ex->http10 && http1_head_find(h, HTTP1_FIELD_TRANSFER_ENCODING, 0) >= 0)
        return refuse(c, PROXY_ERR_BAD_REQUEST,
                      "Transfer-Encoding is not allowed in an HTTP/1.0 request");
    if (hosts > 1 || (hosts == 0 && !ex->http10))
        return refuse(c, PROXY_ERR_BAD_REQUEST, "a request must carry exactly one Host header");
    if (!access_check(cfg, h, &denied, msg, sizeof(msg)))
        return refuse(c, denied, msg);
    if (http1_head_find(h, HTTP1_FIELD_UPGRADE, 0) >= 0) {
        ws = tunnel__admit(c, p, &denied, msg, sizeof(msg));
        if (ws == TUNNEL_ADMIT_REFUSED)
            return refuse(c, denied, msg);
    }

    ex->max_body = cfg->max_body_size;
    if (p->ll.flags & F_CHUNKED) {
        ex->req_framing = HTTP1_FRAMING_CHUNKED;
    } else if ((p->ll.flags & F_CONTENT_LENGTH) && p->ll.content_length > 0) {
        ex->req_framing = HTTP1_FRAMING_LENGTH;
        ex->req_content_length = p->ll.content_length;
        if (ex->max_body > 0 && ex->req_content_length > ex->max_body)
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
    opts.upgrade = ws == TUNNEL_ADMIT_YES ? "websocket" : NULL;
    cap = h->len + 2 * h->n + strlen(cfg->upstream_authority) + HTTP1_REWRITE_SLACK;
    ex->up_head = malloc(cap);
    if (ex->up_head == NULL)
        return refuse(c, PROXY_ERR_UPSTREAM_UNREACHABLE, "out of memory");
    rc = http1_build_request(p, &opts, ex->up_head, cap);
    if (rc < 0)
        return refuse(c, PROXY_ERR_HEADER_TOO_LARGE, "request head too large");
    ex->up_head_len = (size_t)rc;

    client__set_state(c, CLIENT_CONNECTING);
    client__set_timer(c, TIMER_NONE);
    if (ex->req_framing == HTTP1_FRAMING_NONE)
        return HTTP1_CB_OK; /* on_complete follows at once and pauses */
    exchange__set_req_phase(c, REQ_BODY);
    return HTTP1_CB_PAUSE;
}

static int req_on_body(struct http1_parser *p, const char *at, size_t len)
{
    struct client *c = p->data;
    struct exchange *ex = &c->ex;
    char ch[HTTP1_CHUNK_HEADER_MAX];
    int rc = 0;

    assert(ex->req_phase == REQ_BODY && ex->req_framing != HTTP1_FRAMING_NONE);
    if (c->state != CLIENT_RELAYING || ex->up == NULL)
        return refuse(c, PROXY_ERR_UPSTREAM_UNREACHABLE, "the upstream connection is gone");
    ex->req_body_bytes += len;
    if (ex->max_body > 0 && ex->req_body_bytes > ex->max_body)
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
    client__touch_stream(c);
    return HTTP1_CB_OK;
}

static int req_on_complete(struct http1_parser *p)
{
    struct client *c = p->data;
    struct exchange *ex = &c->ex;

    exchange__set_req_phase(c, REQ_DONE);
    if (c->state == CLIENT_RELAYING && ex->up != NULL) {
        if (ex->req_framing == HTTP1_FRAMING_CHUNKED) {
            /* Trailers are not forwarded: the last chunk ends the body. */
            if (upstream_write(ex->up, LAST_CHUNK, 5) < 0)
                return refuse(c, PROXY_ERR_UPSTREAM_UNREACHABLE, "cannot write to the upstream");
            ex->body_sent = true;
        }
    }
    /* Pipelined requests wait, unparsed, until this one is answered. The staged bytes leave
     * in exchange__process_input(), once the parser has returned: a failed write there may answer
     * the client and start the next request, which must not happen inside this callback. */
    return HTTP1_CB_PAUSE;
}

const struct http1_callbacks exchange__request_cbs = {req_on_head, req_on_body, req_on_complete};

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
    exchange__respond_error(c, e, msg, 0, true);
}

/*
 * Buffered validation (docs/security.md): a chunked body whose bytes are already in the input
 * buffer (at most CLIENT_INPUT_MAX) is parsed to its end before any byte of the request goes
 * upstream, so that broken framing is refused while the enclave has seen nothing. A body that
 * goes on past what is in hand is checked as far as it goes, again when the upstream is ready,
 * and then streamed: a framing error found later aborts the exchange mid-way. Returns false
 * when the request was refused (answered and closing).
 */
bool exchange__body_valid_so_far(struct client *c)
{
    struct exchange *ex = &c->ex;
    char why[sizeof(c->req.fail_msg)];
    enum http1_status st;

    if (ex->req_framing != HTTP1_FRAMING_CHUNKED || ex->body_checked ||
        !client__paused_at_head(c) || c->in_len - c->in_off == ex->ahead_len)
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

/* ---- Answers and the end of an exchange ------------------------------------------------------ */

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

/* Ends the exchange of `c`: its response head storage goes back to the cache. */
void exchange__free(struct client *c)
{
    struct exchange *ex = &c->ex;
    /* Ownership: the upstream connection was released or handed back before. */
    assert(ex->up == NULL);
    if (ex->ws) {
        /* An admitted handshake that did not become a tunnel gives its place back. */
        assert(c->svc->n_tunnels > 0);
        c->svc->n_tunnels--;
    }
    free(ex->up_head);
    free(ex->held);
    if (ex->resp_parser_ready) {
        bufcache_head_put(c->svc->proxy, &ex->resp);
        http1_parser_free(&ex->resp); /* whatever was not given back */
    }
    memset(ex, 0, sizeof(*ex));
}

/* Ready for the next request on this connection. */
static void exchange_next(struct client *c)
{
    exchange__free(c);
    client__set_state(c, CLIENT_HEAD);
    client__set_timer(c, c->in_off < c->in_len ? TIMER_HEADER : TIMER_IDLE);
    if (c->req_paused) {
        c->req_paused = false;
        http1_parser_resume(&c->req);
    }
    exchange__process_input(c);
}

void exchange__respond_error(struct client *c, enum proxy_error e, const char *msg,
                             unsigned retry_after_s, bool force_close)
{
    struct exchange *ex = &c->ex;
    char buf[ERRORS_RESPONSE_MAX];
    bool keep;
    int n;

    if (c->state == CLIENT_CLOSING)
        return;
    acquire__release(c, "request answered by the proxy");
    if (ex->resp_phase >= RESP_BODY) {
        client_close(c, msg);
        return;
    }
    keep = !force_close && ex->req_phase == REQ_DONE && ex->keep_alive && !c->close_after &&
           client__more_requests(c) && !c->svc->proxy->stopping;
    ex->status = errors_status(e);
    ex->error_code = errors_code_name(e);
    n = errors_render(e, c->svc->name, msg, retry_after_s, !keep, ex->head_request, buf,
                      sizeof(buf));
    if (n < 0 || client__write_raw(c, buf, (size_t)n) < 0) {
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
        client__to_flushing(c);
}

/* The response is complete: the upstream goes back to the pool when it can carry another. */
void exchange__finish(struct client *c, bool upstream_reusable)
{
    struct exchange *ex = &c->ex;
    struct upstream *up = ex->up;

    assert(c->state == CLIENT_RELAYING && ex->resp_phase == RESP_DONE);
    if (ex->body_mode == BODY_CHUNKED && client__write_raw(c, LAST_CHUNK, 5) < 0)
        return;
    ex->up = NULL;
    if (up != NULL)
        upstream_end_exchange(up, upstream_reusable && ex->resp_keep_alive &&
                                      ex->req_phase == REQ_DONE);
    log_request(c);
    if (c->close_after || ex->req_phase != REQ_DONE || !client__more_requests(c) ||
        !ex->keep_alive || c->svc->proxy->stopping)
        client__to_flushing(c);
    else
        exchange_next(c);
}

/* ---- The input loop -------------------------------------------------------------------------- */

void exchange__process_input(struct client *c)
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
                if (c->ex.acquire != ACQUIRE_DUE) {
                    (void)exchange__body_valid_so_far(c);
                    break;
                }
                exchange__set_acquire(c, ACQUIRE_STARTED);
                acquire__upstream(c);
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
                client__set_timer(c, TIMER_STREAM_IDLE); /* the answers must keep moving */
                break;
            }
            if (c->state == CLIENT_RELAYING) {
                if (c->ex.req_phase == REQ_DONE)
                    break;
                /* Relaying holds a connection: a failed one ended the relay already. */
                assert(c->ex.up != NULL);
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
            if (st == HTTP1_PAUSED && c->state == CLIENT_CONNECTING &&
                !exchange__body_valid_so_far(c))
                break;
            if (c->state == CLIENT_RELAYING && c->ex.up != NULL) {
                upstream_flush(c->ex.up);
                /* The request is complete: its answer is due within first_byte_timeout. */
                if (c->state == CLIENT_RELAYING && c->ex.req_phase == REQ_DONE &&
                    c->ex.resp_phase < RESP_BODY)
                    client__set_timer(c, TIMER_FIRST_BYTE);
            }
        }
    } while (c->again && c->state != CLIENT_CLOSING);
    c->processing = false;
    if (c->state == CLIENT_CLOSING)
        return;

    client__after_input(c);
}
