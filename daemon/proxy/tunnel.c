/*
 * WebSocket tunnels (tunnel.h): the admission of a handshake, the check of the enclave's 101,
 * and the tunnel that follows — bytes copied both ways with backpressure, its deadline (idle
 * time, maximum life, the freshness of its key's pin), its end (a close frame of the daemon's
 * when the daemon ends it, then the TCP close) and its accounting (metrics, one access-log
 * line). The tunnel never reads a payload: only the header bytes of the enclave's frames are
 * followed (websocket.c), so that the daemon's own close frame lands between two frames.
 */
#include "proxy/tunnel.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/metrics.h"
#include "proxy/bufcache.h"
#include "proxy/client_internal.h"
#include "proxy/pinset.h"
#include "proxy/proxy_internal.h"
#include "proxy/upstream.h"
#include "proxy/websocket.h"

enum tunnel_state {
    TUNNEL_OPEN = 0, /* bytes flow both ways */
    TUNNEL_CLOSING,  /* the enclave side is gone: the client gets what is queued (and the close
                      * frame), then the FIN (client FLUSHING, LINGER) */
    TUNNEL_CLOSED,   /* the client connection closes */
};

struct tunnel {
    enum tunnel_state state;
    struct upstream *up; /* while OPEN */
    uint8_t pin[PIN_LEN];
    uint64_t handshake_ms;       /* the handshake request's start, for the log's duration */
    uint64_t opened_ms;          /* the 101, for tunnel_max_life */
    uint64_t last_active_ms;     /* the last byte in either direction */
    uint64_t pin_valid_until_ms; /* the pin's expiry when last looked at */
    uint64_t bytes_up, bytes_down;
    struct ws_scan down; /* frame boundaries of what the enclave sent */
    bool reading;        /* the client socket is read with the tunnel's callbacks */
    bool client_paused;  /* ... but not now: the upstream's write queue is full */
    bool up_paused;      /* upstream reading stopped: the client's write queue is full */
    uint16_t close_code; /* the close frame sent to the client; 0: none */
};

static const char *const state_names[] = {
    [TUNNEL_OPEN] = "open",
    [TUNNEL_CLOSING] = "closing",
    [TUNNEL_CLOSED] = "closed",
};

static void set_state(struct client *c, enum tunnel_state to)
{
    struct tunnel *t = c->tunnel;
    /* open -> closing -> closed, or open -> closed; nothing leaves closed. */
    assert(to > t->state);
    client__log_transition(c, "tunnel_state", state_names[t->state], state_names[to]);
    t->state = to;
}

static uint64_t now_ms(const struct client *c)
{
    return uv_now(c->h.handle.loop);
}

/* ---- Admission --------------------------------------------------------------------------- */

enum tunnel_admit tunnel__admit(struct client *c, const struct http1_parser *p,
                                enum proxy_error *err, char *msg, size_t cap)
{
    struct proxy_service *svc = c->svc;
    const struct service_config *cfg = svc->cfg;
    const char *origins[CONFIG_MAX_HOSTS];
    enum ws_request_verdict v;

    if (!cfg->allow_websocket)
        return TUNNEL_ADMIT_NO;
    v = ws_check_request(&p->head, p->ll.method == HTTP_GET, p->ll.http_minor, c->ex.ws_key, msg,
                         cap);
    if (v == WS_REQUEST_NOT_WS)
        return TUNNEL_ADMIT_NO;
    *err = PROXY_ERR_BAD_REQUEST;
    if (v == WS_REQUEST_BAD)
        return TUNNEL_ADMIT_REFUSED;
    if ((p->ll.flags & F_CHUNKED) || ((p->ll.flags & F_CONTENT_LENGTH) && p->ll.content_length)) {
        snprintf(msg, cap, "a WebSocket handshake has no body");
        return TUNNEL_ADMIT_REFUSED;
    }
    for (size_t i = 0; i < cfg->n_allowed_origins; i++)
        origins[i] = cfg->allowed_origins[i];
    if (!ws_origin_allowed(&p->head, origins, cfg->n_allowed_origins)) {
        /* Cross-site WebSocket hijacking: a page of another origin, in a browser on this host,
         * must not reach the enclave through the daemon (docs/security.md). */
        *err = PROXY_ERR_ORIGIN_NOT_ALLOWED;
        snprintf(msg, cap, "the Origin of this WebSocket handshake is not in allowed_origins");
        return TUNNEL_ADMIT_REFUSED;
    }
    if (svc->n_tunnels >= cfg->max_tunnels) {
        *err = PROXY_ERR_TOO_MANY_TUNNELS;
        snprintf(msg, cap, "too many WebSocket tunnels: max_tunnels (%u) reached",
                 cfg->max_tunnels);
        return TUNNEL_ADMIT_REFUSED;
    }
    svc->n_tunnels++;
    c->ex.ws = true;
    return TUNNEL_ADMIT_YES;
}

bool tunnel__accept_101(struct client *c, const struct http1_parser *p, char *why, size_t cap)
{
    if (!c->ex.ws) {
        snprintf(why, cap, "the upstream switched protocols");
        return false;
    }
    /* An upgrade is HTTP/1.1's (RFC 9110 §7.8), and a 101 ends at its head: framing fields
     * would make the parser take the first tunnel bytes for a body. */
    if (p->ll.http_major != 1 || p->ll.http_minor != 1) {
        snprintf(why, cap, "the enclave's 101 is not HTTP/1.1");
        return false;
    }
    if (http1_head_count(&p->head, HTTP1_FIELD_TRANSFER_ENCODING) > 0 ||
        (p->ll.flags & F_CONTENT_LENGTH)) {
        snprintf(why, cap, "the enclave's 101 has Content-Length or Transfer-Encoding");
        return false;
    }
    return ws_check_response(&p->head, c->ex.ws_key, why, cap);
}

/* ---- The end of a tunnel ----------------------------------------------------------------- */

static void stop_reading(struct client *c)
{
    struct tunnel *t = c->tunnel;
    if (t->reading)
        uv_read_stop(&c->h.stream);
    t->reading = false;
    if (c->in != NULL) {
        bufcache_input_put(c->svc->proxy, c->in);
        c->in = NULL;
    }
    c->in_off = c->in_len = 0;
}

static void log_end(struct client *c, enum metrics_tunnel_close why, const char *detail)
{
    struct tunnel *t = c->tunnel;
    char id[24], dur[24], up[24], down[24], code[8];
    if (!log_enabled(LOG_LEVEL_INFO))
        return;
    snprintf(id, sizeof(id), "%llu", (unsigned long long)c->id);
    snprintf(dur, sizeof(dur), "%llu", (unsigned long long)(now_ms(c) - t->handshake_ms));
    snprintf(up, sizeof(up), "%llu", (unsigned long long)t->bytes_up);
    snprintf(down, sizeof(down), "%llu", (unsigned long long)t->bytes_down);
    if (t->close_code != 0)
        snprintf(code, sizeof(code), "%u", t->close_code);
    else
        snprintf(code, sizeof(code), "-");
    log_event(LOG_LEVEL_INFO, "tunnel", "service", c->svc->name, "conn", id, "status", "101",
              "duration_ms", dur, "bytes_up", up, "bytes_down", down, "close",
              metrics_tunnel_close_name(why), "close_code", code, "detail", detail, NULL);
}

/* The tunnel stops: its upstream connection closes first (nothing more reaches the enclave),
 * the client is no longer read, and the end is counted. True when it was open. */
static bool stop_tunnel(struct client *c, enum metrics_tunnel_close why)
{
    struct tunnel *t = c->tunnel;
    struct proxy_service *svc = c->svc;
    struct upstream *up;

    if (t == NULL || t->state != TUNNEL_OPEN)
        return false;
    up = t->up;
    t->up = NULL;
    if (up != NULL) {
        upstream_set_handler(up, NULL, NULL);
        upstream_close(up, "the tunnel ended");
    }
    stop_reading(c);
    assert(svc->n_tunnels > 0);
    svc->n_tunnels--;
    metrics_add_tunnel_open(svc->metrics, -1);
    metrics_inc_tunnel_closed(svc->metrics, why);
    return true;
}

/*
 * Ends an open tunnel (stop_tunnel()); then the client gets a close frame `code` with `reason`
 * when `code` is not 0 and the enclave's last frame is complete (a frame cut short cannot be
 * followed by another: the client then sees the TCP close alone), what is queued, and the FIN.
 * A client that is gone is closed.
 */
static void end_tunnel(struct client *c, enum metrics_tunnel_close why, uint16_t code,
                       const char *reason)
{
    struct tunnel *t = c->tunnel;

    if (!stop_tunnel(c, why))
        return;
    if (why == METRICS_TUNNEL_CLIENT_CLOSED) {
        log_end(c, why, reason);
        set_state(c, TUNNEL_CLOSED);
        client_close(c, reason);
        return;
    }
    set_state(c, TUNNEL_CLOSING);
    if (code != 0 && ws_scan_at_boundary(&t->down))
        t->close_code = code;
    log_end(c, why, reason);
    if (t->close_code != 0) {
        uint8_t frame[WS_CLOSE_FRAME_MAX];
        size_t n = ws_close_frame(code, reason, frame);
        if (client__write_raw(c, (const char *)frame, n) < 0)
            return; /* closed */
    }
    client__to_flushing(c);
}

/* ---- Enclave -> client ------------------------------------------------------------------- */

static void t_data(struct upstream *up, const char *data, size_t len, void *arg)
{
    struct client *c = arg;
    struct tunnel *t = c->tunnel;

    assert(t->up == up && t->state == TUNNEL_OPEN);
    ws_scan_feed(&t->down, (const uint8_t *)data, len);
    t->bytes_down += len;
    t->last_active_ms = now_ms(c);
    metrics_add_tunnel_bytes(c->svc->metrics, METRICS_DIR_TO_CLIENT, len);
    if (client__write_raw(c, data, len) < 0)
        return; /* the client is closed, and the tunnel with it */
    if (c->write_queued >= CLIENT_WRITE_HIGH && !t->up_paused) {
        t->up_paused = true;
        upstream_pause_reading(up, true);
    }
}

static void t_eof(struct upstream *up, void *arg)
{
    (void)up;
    end_tunnel(arg, METRICS_TUNNEL_UPSTREAM_CLOSED, 0, "the enclave closed the connection");
}

static void t_error(struct upstream *up, const char *msg, void *arg)
{
    struct client *c = arg;
    (void)msg;
    (void)up;
    /* t->up stays: stop_tunnel() detaches the handler from the closing connection (closing it
     * again does nothing), so its later close callback never reaches a freed client. */
    end_tunnel(c, METRICS_TUNNEL_UPSTREAM_ERROR, WS_CLOSE_INTERNAL_ERROR,
               "upstream_unreachable: the enclave connection failed");
}

static void t_closed(struct upstream *up, void *arg)
{
    struct client *c = arg;
    if (c->tunnel->up != up)
        return;
    c->tunnel->up = NULL;
    end_tunnel(c, METRICS_TUNNEL_UPSTREAM_ERROR, WS_CLOSE_INTERNAL_ERROR,
               "upstream_unreachable: the enclave connection was closed");
}

/* ---- Client -> enclave ------------------------------------------------------------------- */

static void resume_client(struct client *c);

static void t_drain(struct upstream *up, void *arg)
{
    struct client *c = arg;
    (void)up;
    if (c->tunnel->client_paused) {
        c->tunnel->client_paused = false;
        resume_client(c);
    }
}

static const struct upstream_handler tunnel_handler = {
    .on_data = t_data,
    .on_eof = t_eof,
    .on_error = t_error,
    .on_drain = t_drain,
    .on_closed = t_closed,
};

bool tunnel_abort(struct upstream *up, bool policy, const char *reason)
{
    struct client *c;
    if (up->h != &tunnel_handler)
        return false;
    c = up->arg;
    assert(c->tunnel != NULL && c->tunnel->up == up);
    end_tunnel(c, policy ? METRICS_TUNNEL_POLICY_CHANGED : METRICS_TUNNEL_ATTESTATION_FAILED,
               policy ? WS_CLOSE_POLICY : WS_CLOSE_INTERNAL_ERROR, reason);
    return true;
}

/* Bytes from the client go up as they come; the input buffer goes back to the proxy's cache
 * after each read, so an idle tunnel holds none. */
static void forward_up(struct client *c, const char *data, size_t len)
{
    struct tunnel *t = c->tunnel;
    int rc = upstream_write(t->up, data, len);
    if (rc == 0)
        upstream_flush(t->up);
    if (t->state != TUNNEL_OPEN)
        return; /* the flush failed and ended the tunnel */
    if (rc < 0 || upstream_is_closing(t->up)) {
        end_tunnel(c, METRICS_TUNNEL_UPSTREAM_ERROR, WS_CLOSE_INTERNAL_ERROR,
                   "upstream_unreachable: cannot write to the enclave");
        return;
    }
    t->bytes_up += len;
    t->last_active_ms = now_ms(c);
    metrics_add_bytes(c->svc->metrics, METRICS_DIR_TO_UPSTREAM, len);
    metrics_add_tunnel_bytes(c->svc->metrics, METRICS_DIR_TO_UPSTREAM, len);
    if (upstream_write_blocked(t->up) && t->reading) {
        t->client_paused = true;
        uv_read_stop(&c->h.stream);
        t->reading = false;
    }
}

static void t_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    struct client *c = handle->data;
    (void)suggested;
    if (c->in == NULL && (c->in = bufcache_input_get(c->svc->proxy)) == NULL) {
        *buf = uv_buf_init(NULL, 0); /* UV_ENOBUFS */
        return;
    }
    *buf = uv_buf_init(c->in, CLIENT_READ_MAX);
}

static void t_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct client *c = stream->data;
    struct tunnel *t = c->tunnel;
    (void)buf;

    c->svc->proxy->pass_reads++;
    if (nread > 0 && t->state == TUNNEL_OPEN)
        forward_up(c, c->in, (size_t)nread);
    if (c->in != NULL) {
        bufcache_input_put(c->svc->proxy, c->in);
        c->in = NULL;
    }
    if (nread < 0 && t->state == TUNNEL_OPEN)
        end_tunnel(c, METRICS_TUNNEL_CLIENT_CLOSED, 0,
                   nread == UV_EOF ? "the client closed the connection"
                                   : "the client connection failed");
}

static void resume_client(struct client *c)
{
    struct tunnel *t = c->tunnel;
    if (t->reading || t->state != TUNNEL_OPEN)
        return;
    if (uv_read_start(&c->h.stream, t_alloc, t_read) < 0) {
        end_tunnel(c, METRICS_TUNNEL_CLIENT_CLOSED, 0, "cannot read from the client");
        return;
    }
    t->reading = true;
}

void tunnel__client_drained(struct client *c)
{
    struct tunnel *t = c->tunnel;
    if (t->state == TUNNEL_OPEN && t->up_paused && c->write_queued < CLIENT_WRITE_LOW) {
        t->up_paused = false;
        upstream_pause_reading(t->up, false); /* may deliver, and end the tunnel, from here */
    }
}

/* ---- Start ------------------------------------------------------------------------------- */

void tunnel__start(struct client *c, const char *rest, size_t len)
{
    struct exchange *ex = &c->ex;
    struct proxy_service *svc = c->svc;
    struct upstream *up = ex->up;
    const struct pin_entry *e = NULL;
    uint64_t now = now_ms(c), retry = 0;
    struct tunnel *t;

    /* Ownership: the handshake's exchange holds the connection the gate admitted for it. */
    assert(c->state == CLIENT_RELAYING && ex->ws && ex->resp_phase == RESP_DONE);
    assert(up != NULL && up->state == UP_BUSY && c->tunnel == NULL);
    t = calloc(1, sizeof(*t));
    if (t == NULL) {
        client_close(c, "out of memory for a tunnel");
        return;
    }
    t->up = up;
    memcpy(t->pin, up->pin, PIN_LEN);
    t->handshake_ms = ex->started_ms;
    t->opened_ms = t->last_active_ms = now;
    if (pinset_lookup_fresh(&svc->pins, up->pin, now, &retry, &e) == PIN_FRESH && e != NULL)
        t->pin_valid_until_ms = e->expires_mono_ms;
    else
        t->pin_valid_until_ms = now; /* looked at again at once: the first deadline ends it */
    t->bytes_up = ex->bytes_up;
    t->bytes_down = ex->bytes_down;
    /* The exchange's reservation of max_tunnels and its connection move to the tunnel. */
    ex->ws = false;
    ex->up = NULL;
    c->tunnel = t;
    exchange__free(c);
    bufcache_head_put(svc->proxy, &c->req);
    upstream_set_handler(up, &tunnel_handler, c);
    upstream_set_deadline(up, 0);
    client__set_state(c, CLIENT_TUNNEL);
    client__log_transition(c, "tunnel_state", "handshake", state_names[TUNNEL_OPEN]);
    metrics_add_tunnel_open(svc->metrics, 1);
    client__set_timer(c, TIMER_TUNNEL);

    /* The client socket is read with the tunnel's callbacks from now on. */
    if (c->reading) {
        uv_read_stop(&c->h.stream);
        c->reading = false;
    }
    if (c->in != NULL && c->in_len > c->in_off) {
        /* A client that sent frames right behind its handshake. */
        forward_up(c, c->in + c->in_off, c->in_len - c->in_off);
        if (t->state != TUNNEL_OPEN)
            return;
    }
    if (c->in != NULL) {
        bufcache_input_put(svc->proxy, c->in);
        c->in = NULL;
    }
    c->in_off = c->in_len = 0;
    if (c->peer_eof) {
        end_tunnel(c, METRICS_TUNNEL_CLIENT_CLOSED, 0, "the client closed the connection");
        return;
    }
    if (c->close_after || svc->proxy->stopping) {
        /* Drained while the handshake was in flight (a stop, or its listener removed by a
         * reload): the tunnel is not left open, it goes away as the others did. */
        tunnel__drain(c);
        return;
    }
    if (!t->client_paused)
        resume_client(c);
    if (len > 0 && t->state == TUNNEL_OPEN)
        t_data(up, rest, len, c);
}

/* ---- Deadline ------------------------------------------------------------------------------ */

uint64_t tunnel__timer_ms(struct client *c)
{
    const struct tunnel *t = c->tunnel;
    const struct service_config *cfg = c->svc->cfg;
    uint64_t now = now_ms(c), due = t->pin_valid_until_ms;

    if (t->last_active_ms + cfg->tunnel_idle_timeout_ms < due)
        due = t->last_active_ms + cfg->tunnel_idle_timeout_ms;
    if (cfg->tunnel_max_life_ms > 0 && t->opened_ms + cfg->tunnel_max_life_ms < due)
        due = t->opened_ms + cfg->tunnel_max_life_ms;
    return due > now ? due - now : 1;
}

void tunnel__on_timer(struct client *c)
{
    struct tunnel *t = c->tunnel;
    struct proxy_service *svc = c->svc;
    const struct service_config *cfg = svc->cfg;
    uint64_t now = now_ms(c), retry = 0;

    if (t->state != TUNNEL_OPEN)
        return;
    if (now >= t->pin_valid_until_ms) {
        /* A tunnel lives only while its key's pin is fresh; the pin is re-attested before it
         * expires over another connection (the refresh, or a warm attestation). */
        const struct pin_entry *e = NULL;
        if (pinset_lookup_fresh(&svc->pins, t->pin, now, &retry, &e) == PIN_FRESH && e != NULL) {
            t->pin_valid_until_ms = e->expires_mono_ms;
        } else {
            metrics_inc_enforcement(svc->metrics, METRICS_ENFORCE_EXCHANGE_ABORTED,
                                    METRICS_ENFORCE_TTL_LAPSED);
            end_tunnel(c, METRICS_TUNNEL_TTL_LAPSED, WS_CLOSE_INTERNAL_ERROR,
                       "ttl_lapsed: the enclave's attestation expired without a refresh");
            return;
        }
    }
    if (cfg->tunnel_max_life_ms > 0 && now >= t->opened_ms + cfg->tunnel_max_life_ms) {
        end_tunnel(c, METRICS_TUNNEL_MAX_LIFE, WS_CLOSE_GOING_AWAY, "tunnel_max_life");
        return;
    }
    if (now >= t->last_active_ms + cfg->tunnel_idle_timeout_ms) {
        end_tunnel(c, METRICS_TUNNEL_IDLE_TIMEOUT, WS_CLOSE_GOING_AWAY, "tunnel_idle_timeout");
        return;
    }
    client__set_timer(c, TIMER_TUNNEL);
}

/* ---- Client connection hooks ------------------------------------------------------------- */

void tunnel__drain(struct client *c)
{
    end_tunnel(c, METRICS_TUNNEL_SHUTDOWN, WS_CLOSE_GOING_AWAY, "shutting_down");
}

void tunnel__client_closing(struct client *c, const char *why)
{
    struct tunnel *t = c->tunnel;
    if (t == NULL)
        return;
    if (stop_tunnel(c, METRICS_TUNNEL_CLIENT_CLOSED))
        log_end(c, METRICS_TUNNEL_CLIENT_CLOSED, why);
    if (t->state != TUNNEL_CLOSED)
        set_state(c, TUNNEL_CLOSED);
}

void tunnel__free(struct client *c)
{
    assert(c->tunnel == NULL || c->tunnel->up == NULL);
    free(c->tunnel);
    c->tunnel = NULL;
}
