/*
 * The relay of one exchange (client_internal.h), once its upstream connection passed the gate:
 * the rewritten request head is written up (then 100 Continue to a client that asked), the
 * response is parsed as it is decrypted, its head rewritten (http1_build_response(), the
 * daemon's X-Attestation) and held until body bytes can join it, and the body is written to
 * the client piece by piece (re-framed as chunks when needed). The upstream's events during
 * the exchange (data, end of stream, error, drained write queue) arrive here.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/hex.h"
#include "base/metrics.h"
#include "proxy/bufcache.h"
#include "proxy/client_internal.h"
#include "proxy/http1.h"
#include "proxy/pinset.h"
#include "proxy/proxy_internal.h"
#include "proxy/tunnel.h"
#include "proxy/upstream.h"

#define CONTINUE_100    "HTTP/1.1 100 Continue\r\n\r\n"
#define UPGRADE_HEADERS "Upgrade: websocket\r\nConnection: Upgrade\r\n"

/* ---- Response head rewriting (upstream -> client) -------------------------------------------- */

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

/* The enclave accepted a WebSocket handshake: its 101 is checked (tunnel.c) and rewritten
 * with Upgrade and Connection put back, and held like any head; the message ends with it
 * (resp_on_complete) and the connection becomes a tunnel (r_data). A 101 to anything else, or
 * one that does not answer the handshake, is a bad response (502). */
static int hold_head(struct http1_parser *p, const struct http1_response_opts *opts);

static int resp_on_101(struct http1_parser *p)
{
    struct client *c = p->data;
    struct http1_response_opts opts;
    char extra[512 + 64], why[128];

    if (!tunnel__accept_101(c, p, why, sizeof(why))) {
        http1_parser_fail(p, HTTP1_FAIL_CALLBACK, why);
        return HTTP1_CB_ERROR;
    }
    memset(&opts, 0, sizeof(opts));
    memcpy(extra, UPGRADE_HEADERS, sizeof(UPGRADE_HEADERS) - 1);
    attestation_header(c, extra + sizeof(UPGRADE_HEADERS) - 1,
                       sizeof(extra) - sizeof(UPGRADE_HEADERS) + 1);
    opts.extra_headers = extra;
    c->ex.status = 101;
    return hold_head(p, &opts);
}

/* Rewrites the final response head, held back so that the body bytes of this read leave with
 * it, in one write (r_data() sends it alone when none came). */
static int hold_head(struct http1_parser *p, const struct http1_response_opts *opts)
{
    struct client *c = p->data;
    const char *extra = opts->extra_headers;
    size_t cap = p->head.len + 2 * p->head.n + (extra ? strlen(extra) : 0) + HTTP1_REWRITE_SLACK;
    char *buf = malloc(cap);
    int n;

    if (buf == NULL) {
        http1_parser_fail(p, HTTP1_FAIL_CALLBACK, "out of memory");
        return HTTP1_CB_ERROR;
    }
    n = http1_build_response(p, opts, buf, cap);
    if (n < 0) {
        free(buf);
        http1_parser_fail(p, HTTP1_FAIL_CALLBACK, "cannot write the response head");
        return HTTP1_CB_ERROR;
    }
    c->ex.held = buf;
    c->ex.held_len = (size_t)n;
    exchange__set_resp_phase(c, RESP_BODY);
    metrics_inc_requests(c->svc->metrics, c->ex.status);
    return HTTP1_CB_OK;
}

static int resp_on_head(struct http1_parser *p)
{
    struct client *c = p->data;
    struct exchange *ex = &c->ex;
    struct http1_response_opts opts;
    unsigned status = p->ll.status_code;
    char extra[512];
    bool no_body;
    int rc;

    if (status == 101)
        return resp_on_101(p);
    if (!exchange__transfer_encoding_ok(&p->head)) {
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
        client__set_timer(c, TIMER_STREAM_IDLE);
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
    if (!ex->keep_alive || ex->req_phase != REQ_DONE || !client__more_requests(c) ||
        c->svc->proxy->stopping)
        c->close_after = true;
    opts.close = c->close_after;
    attestation_header(c, extra, sizeof(extra));
    opts.extra_headers = extra[0] ? extra : NULL;

    rc = hold_head(p, &opts);
    if (rc != HTTP1_CB_OK)
        return rc;
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
        if (client__write_parts(c, parts, 3) < 0)
            return HTTP1_CB_ERROR;
    } else if (c->ex.body_mode == BODY_RAW) {
        if (client__write_raw(c, at, len) < 0)
            return HTTP1_CB_ERROR;
    }
    return HTTP1_CB_OK;
}

static int resp_on_complete(struct http1_parser *p)
{
    struct client *c = p->data;
    if (p->ll.status_code == 101 && c->ex.resp_phase == RESP_BODY) {
        exchange__set_resp_phase(c, RESP_DONE); /* the rest is the tunnel's */
        return HTTP1_CB_PAUSE;
    }
    if (p->ll.status_code < 200)
        return HTTP1_CB_OK; /* the final response follows */
    exchange__set_resp_phase(c, RESP_DONE);
    return HTTP1_CB_PAUSE;
}

static const struct http1_callbacks response_cbs = {resp_on_head, resp_on_body, resp_on_complete};

/* ---- Relay handlers (upstream events during an exchange) ------------------------------------- */

static void r_data(struct upstream *up, const char *data, size_t len, void *arg)
{
    struct client *c = arg;
    struct exchange *ex = &c->ex;
    enum http1_status st;
    size_t used = 0;

    assert(ex->up == up && ex->resp_phase != RESP_DONE);

    /* The request head may be replayed no more: the upstream has answered. first_byte_timeout
     * runs on until the final response's head (resp_on_head): an interim 100 Continue does
     * not start the stream. */
    if (ex->resp_phase == RESP_NONE)
        exchange__set_resp_phase(c, RESP_HEAD);
    client__touch_stream(c);
    st = http1_parser_execute(&ex->resp, data, len, &used);
    if (c->state == CLIENT_CLOSING || client__flush_held(c) < 0)
        return;
    if (st == HTTP1_ERROR) {
        char msg[192];
        snprintf(msg, sizeof(msg), "bad response from the upstream: %s", ex->resp.fail_msg);
        ex->attempts = MAX_ATTEMPTS; /* a malformed answer is not retried */
        acquire__upstream_failed(c, msg);
        return;
    }
    if (ex->resp_phase == RESP_DONE && ex->status == 101) {
        tunnel__start(c, data + used, len - used);
        return;
    }
    if (ex->resp_phase == RESP_DONE) {
        exchange__finish(c, used == len);
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
    assert(ex->up == up);
    if (ex->resp_phase != RESP_NONE && http1_parser_finish(&ex->resp) != HTTP1_ERROR &&
        ex->resp_phase == RESP_DONE) {
        exchange__finish(c, false);
        return;
    }
    if (c->state == CLIENT_CLOSING)
        return;
    acquire__upstream_failed(
        c, ex->resp_phase != RESP_NONE
               ? "the upstream closed the connection before the response was complete"
               : "the upstream closed the connection without responding");
}

static void r_error(struct upstream *up, const char *msg, void *arg)
{
    (void)up;
    assert(((struct client *)arg)->ex.up == up);
    acquire__upstream_failed(arg, msg);
}

static void r_drain(struct upstream *up, void *arg)
{
    struct client *c = arg;
    (void)up;
    assert(c->ex.up == up);
    if (c->ex.body_blocked) {
        c->ex.body_blocked = false;
        client__touch_stream(c);
        exchange__process_input(c);
    }
}

static const struct upstream_handler relay_handler = {
    .on_data = r_data,
    .on_eof = r_eof,
    .on_error = r_error,
    .on_drain = r_drain,
};

/* ---- Starting the relay ---------------------------------------------------------------------- */

void relay__start(struct client *c, struct upstream *up)
{
    struct exchange *ex = &c->ex;
    int rc;

    /* Ownership: the gate passed for this exchange a moment ago, over this connection. */
    assert(c->state == CLIENT_CONNECTING && up->state == UP_BUSY);
    assert(ex->up == NULL || ex->up == up);
    /* More of the body may have come while the connection was obtained. The connection
     * carried nothing of this request: it goes back to the pool. */
    ex->up = NULL;
    if (!exchange__body_valid_so_far(c)) {
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
        bufcache_head_take(c->svc->proxy, &ex->resp);
        ex->resp_parser_ready = true;
    }
    client__set_state(c, CLIENT_RELAYING);
    /* No handler while writing the head: a failure is seen below, not as a callback. */
    upstream_set_handler(up, NULL, NULL);
    rc = upstream_write(up, ex->up_head, ex->up_head_len);
    if (rc == 0)
        upstream_flush(up);
    if (rc < 0 || upstream_is_closing(up)) {
        acquire__upstream_failed(c, "cannot write to the upstream");
        return;
    }
    ex->bytes_up += ex->up_head_len;
    metrics_add_bytes(c->svc->metrics, METRICS_DIR_TO_UPSTREAM, ex->up_head_len);
    upstream_set_handler(up, &relay_handler, c);
    if (ex->expect_continue && ex->req_phase != REQ_DONE && ex->req_body_bytes == 0) {
        uv_buf_t b = uv_buf_init((char *)CONTINUE_100, sizeof(CONTINUE_100) - 1);
        ex->expect_continue = false;
        if (client__write_parts(c, &b, 1) < 0)
            return;
        ex->bytes_down -= b.len; /* interim: not part of the response */
    }
    client__set_timer(c, ex->req_phase == REQ_DONE ? TIMER_FIRST_BYTE : TIMER_STREAM_IDLE);
    if (client__paused_at_head(c)) {
        c->req_paused = false;
        http1_parser_resume(&c->req);
    }
}
