#include "proxy/upstream.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/log.h"
#include "base/metrics.h"
#include "proxy/pool.h"
#include "proxy/proxy_internal.h"
#include "proxy/egress.h"

struct write_req {
    uv_write_t req;
    struct upstream *up;
    size_t len;
    char data[];
};

static const char *const state_names[] = {
    [UP_CONNECTING] = "connecting",
    [UP_PROXYING] = "proxying",
    [UP_HANDSHAKING] = "handshaking",
    [UP_UNVERIFIED] = "unverified",
    [UP_ATTESTING] = "attesting",
    [UP_BUSY] = "busy",
    [UP_IDLE] = "idle",
    [UP_CLOSING] = "closing",
};

const char *upstream_state_name(enum upstream_state s)
{
    return (unsigned)s < sizeof(state_names) / sizeof(state_names[0]) ? state_names[s] : "?";
}

/* The legal transitions (upstream.h): a proxied connection goes through UP_PROXYING (its
 * CONNECT) between TCP and TLS, a direct one skips it; the gate is the only way into UP_BUSY,
 * attest.c's begin/end the only way through UP_ATTESTING, the pool the only way through UP_IDLE,
 * and each of them starts from UP_UNVERIFIED; nothing leaves UP_CLOSING. */
#ifndef NDEBUG /* read by assert() only */
#define TO(s) (1u << (s))
static const unsigned legal_next[] = {
    [UP_CONNECTING] = TO(UP_PROXYING) | TO(UP_HANDSHAKING) | TO(UP_CLOSING),
    [UP_PROXYING] = TO(UP_HANDSHAKING) | TO(UP_CLOSING),
    [UP_HANDSHAKING] = TO(UP_UNVERIFIED) | TO(UP_CLOSING),
    [UP_UNVERIFIED] = TO(UP_ATTESTING) | TO(UP_BUSY) | TO(UP_IDLE) | TO(UP_CLOSING),
    [UP_ATTESTING] = TO(UP_UNVERIFIED) | TO(UP_CLOSING),
    [UP_BUSY] = TO(UP_UNVERIFIED) | TO(UP_CLOSING),
    [UP_IDLE] = TO(UP_UNVERIFIED) | TO(UP_CLOSING),
    [UP_CLOSING] = 0,
};
#undef TO
#endif

static void set_state(struct upstream *up, enum upstream_state to)
{
    if (up->state == to)
        return;
    assert((unsigned)up->state < sizeof(legal_next) / sizeof(legal_next[0]));
    assert(legal_next[up->state] & (1u << to));
    if (log_enabled(LOG_LEVEL_DEBUG)) {
        char id[24];
        snprintf(id, sizeof(id), "%llu", (unsigned long long)up->id);
        /* A tunnelled connection names its proxy hop; for a direct one the NULL key ends the
         * list there. */
        log_event(LOG_LEVEL_DEBUG, "upstream_state", "service", up->svc->name, "conn", id, "from",
                  upstream_state_name(up->state), "to", upstream_state_name(to),
                  up->egress != NULL ? "proxy" : NULL,
                  up->egress != NULL ? up->egress->proxy : NULL, NULL);
    }
    up->state = to;
}

bool upstream_is_closing(const struct upstream *up)
{
    return up->state == UP_CLOSING;
}

bool upstream_input_pending(struct upstream *up)
{
    uv_os_fd_t fd;
    char c;
    if (up->state == UP_CLOSING || uv_fileno((const uv_handle_t *)&up->tcp, &fd) != 0)
        return true;
    /* EAGAIN is the only answer that proves the receive queue empty; anything else fails
     * closed. */
    if (recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) < 0)
        return errno != EAGAIN && errno != EWOULDBLOCK;
    return true;
}

const char *upstream_failure(const struct upstream *up)
{
    return up->fail_msg;
}

unsigned upstream_proxy_refusal(const struct upstream *up)
{
    return up->egress != NULL && up->proxy_result == METRICS_PROXY_REFUSED ? up->egress->status : 0;
}

void upstream_set_handler(struct upstream *up, const struct upstream_handler *h, void *arg)
{
    up->h = h;
    up->arg = arg;
}

/* ---- Closing ------------------------------------------------------------------------------ */

/* One of the pending closes (handles, a cancelled resolver request) finished. */
static void release(struct upstream *up)
{
    struct proxy_service *svc = up->svc;
    struct proxy *p = svc->proxy;

    assert(up->state == UP_CLOSING && up->pending_closes > 0);
    if (--up->pending_closes > 0)
        return;
    assert(!up->gai_active);
    if (up->h != NULL && up->h->on_closed != NULL)
        up->h->on_closed(up, up->arg);
    if (up->counted_open)
        metrics_add_upstream_open(svc->metrics, -1);
    tls_conn_free(&up->tls);
    egress_free(up->egress);
    if (up->prev != NULL)
        up->prev->next = up->next;
    else
        svc->upstreams = up->next;
    if (up->next != NULL)
        up->next->prev = up->prev;
    svc->n_upstreams--;
    svc->n_upstreams_closing--;
    OPENSSL_cleanse(up->outbuf, sizeof(up->outbuf));
    free(up);
    proxy__object_closed(p);
}

static void on_closed(uv_handle_t *handle)
{
    release(handle->data);
}

void upstream_close(struct upstream *up, const char *why)
{
    if (up->state == UP_CLOSING)
        return;
    if (log_enabled(LOG_LEVEL_DEBUG)) {
        char id[24];
        snprintf(id, sizeof(id), "%llu", (unsigned long long)up->id);
        log_event(LOG_LEVEL_DEBUG, "upstream_close", "service", up->svc->name, "conn", id, "why",
                  why, NULL);
    }
    if (up->state == UP_IDLE)
        pool_remove(up->svc, up);
    /* A close_notify is sent when the socket can take it at once; a peer that misses it sees
     * a TCP close, which TLS 1.2+ peers tolerate for HTTP (framing tells them the end). */
    if (up->state >= UP_UNVERIFIED && up->tls.ssl != NULL) {
        size_t n;
        const char *data;
        tls_close_notify(&up->tls);
        data = tls_out_peek(&up->tls, &n);
        if (n > 0) {
            /* Once or never: libuv refuses it while earlier writes are still queued. */
            uv_buf_t b = uv_buf_init((char *)data, (unsigned)(n < UINT32_MAX ? n : UINT32_MAX));
            uv_try_write((uv_stream_t *)&up->tcp, &b, 1);
            tls_out_consume(&up->tls, n);
        }
    }
    set_state(up, UP_CLOSING);
    up->svc->n_upstreams_closing++;
    up->pending_closes = 2;
    if (up->gai_active) {
        /* The resolver callback still has to run (with UV_ECANCELED) before we may free. */
        up->pending_closes++;
        uv_cancel((uv_req_t *)&up->gai);
    }
    uv_close((uv_handle_t *)&up->tcp, on_closed);
    uv_close((uv_handle_t *)&up->deadline.timer, on_closed);
}

/* ---- Writing ------------------------------------------------------------------------------ */

static void fail(struct upstream *up, const char *msg);
static void proxy_answer(struct upstream *up, const char *data, size_t len);
static void proxy_closed(struct upstream *up, int status);
static void proxy_timeout(struct upstream *up);

static void on_written(uv_write_t *req, int status)
{
    struct write_req *w = (struct write_req *)req;
    struct upstream *up = w->up;

    assert(up->write_queued >= w->len);
    up->write_queued -= w->len;
    free(w);
    if (up->state == UP_CLOSING)
        return;
    if (status < 0) {
        char msg[128];
        snprintf(msg, sizeof(msg), "write to upstream failed: %s", uv_strerror(status));
        fail(up, msg);
        return;
    }
    if (up->want_drain && up->write_queued + up->out_len < UPSTREAM_WRITE_LOW) {
        up->want_drain = false;
        if (up->h != NULL && up->h->on_drain != NULL)
            up->h->on_drain(up, up->arg);
    }
}

/* Queues a copy of `data` for writing; on_written() releases it. */
static int queue_write(struct upstream *up, const char *data, size_t len)
{
    struct write_req *w = malloc(sizeof(*w) + len);
    uv_buf_t b;
    int rc;

    if (w == NULL)
        return -ENOMEM;
    w->up = up;
    w->len = len;
    memcpy(w->data, data, len);
    b = uv_buf_init(w->data, (unsigned)len);
    rc = uv_write(&w->req, (uv_stream_t *)&up->tcp, &b, 1, on_written);
    if (rc < 0) {
        free(w);
        return rc;
    }
    up->write_queued += len;
    return 0;
}

/*
 * Sends whatever ciphertext OpenSSL produced, from its queue in place: when nothing is queued
 * on the socket it is written at once (uv_try_write: no allocation, no request, no poll
 * change); only what the socket does not take is copied and queued, keeping the order.
 */
static int send_ciphertext(struct upstream *up)
{
    size_t n, done = 0;
    const char *data = tls_out_peek(&up->tls, &n);
    int rc;

    if (n == 0)
        return 0;
    if (up->write_queued == 0) {
        uv_buf_t b = uv_buf_init((char *)data, (unsigned)(n < UINT32_MAX ? n : UINT32_MAX));
        rc = uv_try_write((uv_stream_t *)&up->tcp, &b, 1);
        if (rc < 0 && rc != UV_EAGAIN && rc != UV_ENOSYS)
            return rc;
        if (rc > 0)
            done = (size_t)rc;
    }
    rc = done < n ? queue_write(up, data + done, n - done) : 0;
    tls_out_consume(&up->tls, n);
    return rc;
}

static int encrypt_staged(struct upstream *up)
{
    int rc;
    if (up->out_len == 0)
        return 0;
    rc = tls_write(&up->tls, up->outbuf, up->out_len);
    up->out_len = 0;
    return rc;
}

int upstream_write(struct upstream *up, const char *data, size_t len)
{
    int rc = 0;
    if (up->state != UP_BUSY && up->state != UP_ATTESTING)
        return -EPERM; /* the trust gate: see upstream.h */
    if (len > sizeof(up->outbuf) - up->out_len) {
        /* It does not fit: what is staged leaves first, then these bytes, encrypted from
         * where they are when the stage could not hold them at all. */
        rc = encrypt_staged(up);
        if (rc == 0 && len >= sizeof(up->outbuf)) {
            rc = tls_write(&up->tls, data, len);
            len = 0;
        }
        if (rc == 0)
            rc = send_ciphertext(up);
        if (rc < 0)
            return rc;
    }
    if (len > 0) {
        assert(up->out_len + len <= sizeof(up->outbuf));
        memcpy(up->outbuf + up->out_len, data, len);
        up->out_len += len;
    }
    return 0;
}

void upstream_flush(struct upstream *up)
{
    int rc;
    if (up->state != UP_BUSY && up->state != UP_ATTESTING)
        return;
    rc = encrypt_staged(up);
    if (rc == 0)
        rc = send_ciphertext(up);
    if (rc < 0)
        fail(up, "cannot write to upstream");
}

bool upstream_write_blocked(struct upstream *up)
{
    /* The writer that is told to stop is the one on_drain resumes, whichever write (a request
     * write or a later flush of staged bytes) took the queue past the bound. */
    if (up->write_queued + up->out_len < UPSTREAM_WRITE_HIGH)
        return false;
    up->want_drain = true;
    return true;
}

/* ---- Reading ------------------------------------------------------------------------------ */

static void fail(struct upstream *up, const char *msg)
{
    const struct upstream_handler *h = up->h;
    if (up->state == UP_CLOSING)
        return;
    snprintf(up->fail_msg, sizeof(up->fail_msg), "%s", msg);
    if (up->state == UP_CONNECTING || up->state == UP_PROXYING || up->state == UP_HANDSHAKING) {
        /* on_connected reports the failure; the close follows it. The proxy hop ended with
         * it when it had not reached TLS. */
        if (up->egress != NULL && up->state != UP_HANDSHAKING)
            metrics_inc_upstream_proxy_connect(up->svc->metrics,
                                               (enum metrics_proxy_result)up->proxy_result);
        metrics_inc_upstream_connection(up->svc->metrics,
                                        (enum metrics_upstream_result)up->fail_result);
        if (h != NULL && h->on_connected != NULL)
            h->on_connected(up, -ECONNABORTED, up->arg);
        upstream_close(up, msg);
        return;
    }
    upstream_close(up, msg);
    if (h != NULL && h->on_error != NULL)
        h->on_error(up, msg, up->arg);
}

static void handshake_done(struct upstream *up)
{
    const struct service_config *cfg = up->svc->cfg;
    bool cert_hash = cfg->binding == BINDING_CERT_SHA256 || cfg->binding == BINDING_NITRIDING ||
                     cfg->binding == BINDING_BLINDAI;
    char id[24], hex[PIN_HEX_LEN + 1];

    assert(up->state == UP_HANDSHAKING && !up->has_pin);
    deadline_set(&up->deadline, 0);
    if (tls_peer_pin(&up->tls, cert_hash, up->pin) < 0) {
        up->fail_result = METRICS_UPSTREAM_TLS_ERROR;
        fail(up, "TLS handshake: the upstream presented no certificate");
        return;
    }
    up->has_pin = true;
    metrics_inc_upstream_connection(up->svc->metrics, METRICS_UPSTREAM_OK);
    metrics_add_upstream_open(up->svc->metrics, 1);
    up->counted_open = true;
    set_state(up, UP_UNVERIFIED);
    if (log_enabled(LOG_LEVEL_DEBUG)) {
        pin_hex(up->pin, hex);
        snprintf(id, sizeof(id), "%llu", (unsigned long long)up->id);
        log_event(LOG_LEVEL_DEBUG, "upstream_connected", "service", up->svc->name, "conn", id,
                  "tls", tls_version(&up->tls), "resumed", tls_resumed(&up->tls) ? "yes" : "no",
                  "pin", hex, NULL);
    }
    if (up->h != NULL && up->h->on_connected != NULL)
        up->h->on_connected(up, 0, up->arg);
}

/* Delivers decrypted data until OpenSSL needs more input, reading is paused or we close. */
static void deliver(struct upstream *up)
{
    char buf[TLS_RECORD_MAX];
    if (up->delivering)
        return; /* a callback resumed reading from inside a delivery; the loop goes on */
    up->delivering = true;
    while (up->state != UP_CLOSING && !up->read_paused) {
        size_t n = 0;
        enum tls_result r;
        if (tls_in_empty(&up->tls))
            break; /* saves a read that could only want more (one per delivery) */
        r = tls_read(&up->tls, buf, sizeof(buf), &n);
        if (r == TLS_OK) {
            if (up->h != NULL && up->h->on_data != NULL)
                up->h->on_data(up, buf, n, up->arg);
            continue;
        }
        if (r == TLS_CLOSED) {
            up->peer_eof = true;
            break;
        }
        if (r == TLS_ERROR) {
            char e[160], msg[192];
            snprintf(msg, sizeof(msg), "TLS error from upstream: %s",
                     tls_error_string(e, sizeof(e)));
            up->delivering = false;
            fail(up, msg);
            return;
        }
        break; /* TLS_WANT */
    }
    up->delivering = false;
    if (up->state == UP_CLOSING)
        return;
    /* Reading can produce output (key updates); send it. */
    if (send_ciphertext(up) < 0) {
        fail(up, "cannot write to upstream");
        return;
    }
    /* An exchange that waits for more (a stream between events, a slow body) holds no record
     * buffers meanwhile; one that ended here leaves them to the next request on the pooled
     * connection, which then allocates nothing (tls.c). */
    if (up->state == UP_BUSY || up->state == UP_ATTESTING)
        (void)tls_release_buffers(&up->tls);
    if (up->peer_eof && !up->read_paused && !up->eof_told) {
        up->eof_told = true;
        if (up->h != NULL && up->h->on_eof != NULL)
            up->h->on_eof(up, up->arg);
    }
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    struct upstream *up = handle->data;
    (void)suggested;
    *buf = uv_buf_init(up->svc->proxy->upstream_readbuf, UPSTREAM_READ_BUF);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct upstream *up = stream->data;
    (void)buf;

    up->svc->proxy->pass_reads++; /* batching under load: proxy.c on_loop_pass() */

    if (up->state == UP_CLOSING || nread == 0)
        return;
    if (nread < 0) {
        uv_read_stop(stream);
        if (up->state == UP_PROXYING) {
            proxy_closed(up, (int)nread);
            return;
        }
        if (nread != UV_EOF) {
            char msg[128];
            snprintf(msg, sizeof(msg), "upstream connection failed: %s", uv_strerror((int)nread));
            up->fail_result = METRICS_UPSTREAM_CONNECT_ERROR;
            fail(up, msg);
            return;
        }
        if (up->state == UP_CONNECTING || up->state == UP_HANDSHAKING) {
            up->fail_result = METRICS_UPSTREAM_TLS_ERROR;
            fail(up, "upstream closed the connection during the TLS handshake");
            return;
        }
        up->peer_eof = true;
        deliver(up);
        return;
    }
    if (up->state == UP_PROXYING) {
        proxy_answer(up, buf->base, (size_t)nread);
        return;
    }
    if (tls_feed(&up->tls, buf->base, (size_t)nread) < 0) {
        fail(up, "out of memory");
        return;
    }
    if (up->state == UP_HANDSHAKING) {
        enum tls_result r = tls_handshake(&up->tls);
        if (send_ciphertext(up) < 0) {
            fail(up, "cannot write to upstream");
            return;
        }
        if (r == TLS_WANT)
            return;
        if (r != TLS_OK) {
            char e[160], msg[192];
            snprintf(msg, sizeof(msg), "TLS handshake with upstream failed: %s",
                     tls_error_string(e, sizeof(e)));
            up->fail_result = METRICS_UPSTREAM_TLS_ERROR;
            fail(up, msg);
            return;
        }
        handshake_done(up);
        if (up->state == UP_CLOSING)
            return;
    }
    if (up->read_paused) {
        /* Keep at most one read's worth of ciphertext buffered while paused. */
        uv_read_stop(stream);
        return;
    }
    deliver(up);
}

void upstream_pause_reading(struct upstream *up, bool paused)
{
    if (up->state == UP_CLOSING || up->read_paused == paused)
        return;
    up->read_paused = paused;
    if (paused) {
        uv_read_stop((uv_stream_t *)&up->tcp);
        return;
    }
    if (!up->peer_eof)
        uv_read_start((uv_stream_t *)&up->tcp, on_alloc, on_read);
    deliver(up);
}

/* ---- Timer -------------------------------------------------------------------------------- */

static void on_timer(uv_timer_t *t)
{
    struct upstream *up = t->data;
    if (up->state == UP_CLOSING || !deadline_fired(&up->deadline))
        return;
    if (up->egress != NULL &&
        (up->state == UP_CONNECTING || up->state == UP_PROXYING || up->state == UP_HANDSHAKING)) {
        proxy_timeout(up);
        return;
    }
    if (up->state == UP_CONNECTING || up->state == UP_HANDSHAKING) {
        char msg[160];
        snprintf(msg, sizeof(msg), "connect_timeout (%llu ms) elapsed %s",
                 (unsigned long long)up->svc->cfg->connect_timeout_ms,
                 up->state == UP_CONNECTING ? "before the TCP connection was established"
                                            : "during the TLS handshake");
        up->fail_result = METRICS_UPSTREAM_CONNECT_TIMEOUT;
        fail(up, msg);
        return;
    }
    if (up->h != NULL && up->h->on_timeout != NULL)
        up->h->on_timeout(up, up->arg);
}

void upstream_set_deadline(struct upstream *up, uint64_t ms)
{
    if (up->state == UP_CLOSING)
        return;
    deadline_set(&up->deadline, ms);
}

/* ---- Connecting --------------------------------------------------------------------------- */

static bool keep_session(void *arg, SSL_SESSION *s)
{
    struct upstream *up = arg;
    struct resume_session *rs = &up->svc->resume;
    const struct service_config *cfg = up->svc->cfg;
    bool cert_hash = cfg->binding == BINDING_CERT_SHA256 || cfg->binding == BINDING_NITRIDING ||
                     cfg->binding == BINDING_BLINDAI;
    uint8_t pin[PIN_LEN];

    /* The session is remembered with the pin of the key it was made with, and offered again
     * only while that pin is attested (see upstream_connect()). */
    if (tls_peer_pin(&up->tls, cert_hash, pin) < 0)
        return false;
    if (rs->session != NULL)
        SSL_SESSION_free(rs->session);
    rs->session = s;
    memcpy(rs->pin, pin, PIN_LEN);
    return true;
}

/*
 * TLS starts: over the TCP connection, or inside the tunnel once the proxy said 2xx. `early`
 * holds bytes that arrived with the proxy's answer after its head: they are the start of the
 * TLS stream (the proxy's part ended with the head), so they go to OpenSSL, not away.
 */
static void start_tls(struct upstream *up, const char *early, size_t early_len)
{
    const struct service_config *cfg = up->svc->cfg;
    struct resume_session *rs;
    SSL_SESSION *resume = NULL;
    const char *sni;
    enum tls_result r;
    int rc;

    /* BRIEF §2.7: a resumed session proves possession of the ticket key, not of the attested
     * key, so sessions are kept and offered only when the operator turned resumption on. */
    rs = &up->svc->resume;
    if (cfg->session_resumption && rs->session != NULL &&
        pinset_lookup(&up->svc->pins, rs->pin, uv_now(up->tcp.loop), NULL) == PIN_FRESH)
        resume = rs->session;
    sni = cfg->sni[0] != '\0' ? cfg->sni : cfg->upstream_host;
    rc = tls_conn_init(&up->tls, up->svc->proxy->ssl_ctx, sni, resume,
                       cfg->session_resumption ? keep_session : NULL, up);
    if (rc < 0) {
        up->fail_result = METRICS_UPSTREAM_TLS_ERROR;
        fail(up, "cannot create a TLS connection");
        return;
    }
    assert(up->state == UP_CONNECTING || up->state == UP_PROXYING);
    set_state(up, UP_HANDSHAKING);
    if (up->egress != NULL) {
        /* Through a proxy, connect_timeout is the TLS handshake's alone (the hops before it
         * had their own timeouts), and the socket is read already. */
        deadline_set(&up->deadline, cfg->connect_timeout_ms);
    } else {
        rc = uv_read_start((uv_stream_t *)&up->tcp, on_alloc, on_read);
        if (rc < 0) {
            up->fail_result = METRICS_UPSTREAM_CONNECT_ERROR;
            fail(up, "cannot read from the upstream socket");
            return;
        }
    }
    if (early_len > 0 && tls_feed(&up->tls, early, early_len) < 0) {
        fail(up, "out of memory");
        return;
    }
    r = tls_handshake(&up->tls);
    if (r == TLS_ERROR) {
        char e[160], msg[192];
        snprintf(msg, sizeof(msg), "TLS handshake with upstream failed: %s",
                 tls_error_string(e, sizeof(e)));
        up->fail_result = METRICS_UPSTREAM_TLS_ERROR;
        fail(up, msg);
        return;
    }
    if (send_ciphertext(up) < 0) {
        up->fail_result = METRICS_UPSTREAM_CONNECT_ERROR;
        fail(up, "cannot write to upstream");
    }
}

/* ---- The proxy hop (egress.h) ---------------------------------------------------------------- */

/* The proxy hop failed before TLS: how, for upstream_proxy_connects_total, and why. */
static void proxy_fail(struct upstream *up, enum metrics_proxy_result r, const char *msg)
{
    up->fail_result = METRICS_UPSTREAM_CONNECT_ERROR;
    up->proxy_result = (int)r;
    fail(up, msg);
}

static void on_connect_written(uv_write_t *req, int status)
{
    struct upstream *up = req->data;
    char msg[EGRESS_NAME_MAX + 128];

    /* The request carries the proxy credentials: gone once the socket took it. */
    egress_wipe_request(up->egress);
    if (up->state == UP_CLOSING || status >= 0)
        return;
    snprintf(msg, sizeof(msg), "cannot send CONNECT to the upstream proxy %s: %s",
             up->egress->proxy, uv_strerror(status));
    proxy_fail(up, METRICS_PROXY_CONNECT_ERROR, msg);
}

/* TCP to the proxy is up: CONNECT goes out and its answer is awaited in UP_PROXYING. */
static void start_proxying(struct upstream *up)
{
    struct egress *t = up->egress;
    uv_buf_t b = uv_buf_init(t->request, (unsigned)t->request_len);
    int rc;

    set_state(up, UP_PROXYING);
    deadline_set(&up->deadline, up->svc->cfg->upstream_proxy_timeout_ms);
    t->write_req.data = up;
    rc = uv_write(&t->write_req, (uv_stream_t *)&up->tcp, &b, 1, on_connect_written);
    if (rc == 0)
        rc = uv_read_start((uv_stream_t *)&up->tcp, on_alloc, on_read);
    else
        egress_wipe_request(t);
    if (rc < 0) {
        char msg[EGRESS_NAME_MAX + 128];
        snprintf(msg, sizeof(msg), "cannot send CONNECT to the upstream proxy %s: %s", t->proxy,
                 uv_strerror(rc));
        proxy_fail(up, METRICS_PROXY_CONNECT_ERROR, msg);
    }
}

/* Bytes from the proxy while its answer to CONNECT is awaited. */
static void proxy_answer(struct upstream *up, const char *data, size_t len)
{
    struct egress *t = up->egress;
    char msg[2 * EGRESS_NAME_MAX + EGRESS_REASON_MAX + 160];
    size_t used = 0;

    switch (egress_feed(t, data, len, &used)) {
    case EGRESS_NEED_MORE:
        return;
    case EGRESS_ESTABLISHED:
        up->proxy_result = METRICS_PROXY_OK;
        metrics_inc_upstream_proxy_connect(up->svc->metrics, METRICS_PROXY_OK);
        if (log_enabled(LOG_LEVEL_DEBUG)) {
            char id[24], status[8];
            snprintf(id, sizeof(id), "%llu", (unsigned long long)up->id);
            snprintf(status, sizeof(status), "%u", t->status);
            log_event(LOG_LEVEL_DEBUG, "upstream_tunnel", "service", up->svc->name, "conn", id,
                      "proxy", t->proxy, "target", t->target, "status", status, NULL);
        }
        start_tls(up, data + used, len - used);
        return;
    case EGRESS_REFUSED:
        snprintf(msg, sizeof(msg), "the upstream proxy %s refused CONNECT %s: HTTP %u %s", t->proxy,
                 t->target, t->status, t->reason);
        proxy_fail(up, METRICS_PROXY_REFUSED, msg);
        return;
    case EGRESS_BAD_RESPONSE:
    default:
        snprintf(msg, sizeof(msg), "the upstream proxy %s: %s", t->proxy, t->why);
        proxy_fail(up, METRICS_PROXY_BAD_RESPONSE, msg);
        return;
    }
}

/* The proxy closed (status UV_EOF) or reset the connection before its answer was complete. */
static void proxy_closed(struct upstream *up, int status)
{
    char msg[2 * EGRESS_NAME_MAX + 160];
    if (status == UV_EOF)
        snprintf(msg, sizeof(msg),
                 "the upstream proxy %s closed the connection before answering "
                 "CONNECT %s",
                 up->egress->proxy, up->egress->target);
    else
        snprintf(msg, sizeof(msg), "the connection to the upstream proxy %s failed: %s",
                 up->egress->proxy, uv_strerror(status));
    proxy_fail(up, METRICS_PROXY_BAD_RESPONSE, msg);
}

/* The deadline of a proxied connection passed before TLS was done; each hop has its own. */
static void proxy_timeout(struct upstream *up)
{
    const struct service_config *cfg = up->svc->cfg;
    const struct egress *t = up->egress;
    char msg[2 * EGRESS_NAME_MAX + 192];

    if (up->state == UP_CONNECTING) {
        snprintf(msg, sizeof(msg),
                 "upstream_proxy_connect_timeout (%llu ms) elapsed before the TCP connection to "
                 "the upstream proxy %s was established",
                 (unsigned long long)cfg->upstream_proxy_connect_timeout_ms, t->proxy);
        up->proxy_result = METRICS_PROXY_CONNECT_TIMEOUT;
    } else if (up->state == UP_PROXYING) {
        snprintf(msg, sizeof(msg),
                 "upstream_proxy_timeout (%llu ms) elapsed before the upstream proxy %s answered "
                 "CONNECT %s",
                 (unsigned long long)cfg->upstream_proxy_timeout_ms, t->proxy, t->target);
        up->proxy_result = METRICS_PROXY_TIMEOUT;
    } else {
        snprintf(msg, sizeof(msg),
                 "connect_timeout (%llu ms) elapsed during the TLS handshake through the upstream "
                 "proxy %s",
                 (unsigned long long)cfg->connect_timeout_ms, t->proxy);
    }
    up->fail_result = METRICS_UPSTREAM_CONNECT_TIMEOUT;
    fail(up, msg);
}

/* The name of the first hop, for messages: the enclave's host, or the proxy. */
static void first_hop(const struct upstream *up, char *out, size_t cap)
{
    if (up->egress != NULL)
        snprintf(out, cap, "the upstream proxy %s", up->egress->proxy);
    else
        snprintf(out, cap, "%s", up->svc->cfg->upstream_host);
}

static void on_tcp_connect(uv_connect_t *req, int status)
{
    struct upstream *up = req->data;

    if (up->state == UP_CLOSING)
        return;
    if (status < 0) {
        char msg[CONFIG_HOST_MAX + EGRESS_NAME_MAX + 160];
        if (up->egress != NULL)
            snprintf(msg, sizeof(msg), "cannot connect to the upstream proxy %s: %s",
                     up->egress->proxy, uv_strerror(status));
        else
            snprintf(msg, sizeof(msg), "cannot connect to %s:%u: %s", up->svc->cfg->upstream_host,
                     up->svc->cfg->upstream_port, uv_strerror(status));
        up->fail_result = METRICS_UPSTREAM_CONNECT_ERROR;
        fail(up, msg);
        return;
    }
    uv_tcp_nodelay(&up->tcp, 1);
    if (up->egress != NULL)
        start_proxying(up);
    else
        start_tls(up, NULL, 0);
}

static int start_tcp(struct upstream *up, const struct sockaddr *addr)
{
    up->connect_req.data = up;
    return uv_tcp_connect(&up->connect_req, &up->tcp, addr, on_tcp_connect);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct upstream *up = req->data;
    int rc;

    up->gai_active = false;
    if (up->state == UP_CLOSING) {
        uv_freeaddrinfo(res);
        release(up); /* the extra pending close taken in upstream_close() */
        return;
    }
    if (status < 0 || res == NULL) {
        char msg[CONFIG_HOST_MAX + 160], hop[CONFIG_HOST_MAX + 32];
        first_hop(up, hop, sizeof(hop));
        snprintf(msg, sizeof(msg), "cannot resolve %s: %s", hop, uv_strerror(status));
        uv_freeaddrinfo(res);
        up->fail_result = METRICS_UPSTREAM_RESOLVE_ERROR;
        fail(up, msg);
        return;
    }
    /* The first address is used: getaddrinfo() has ordered them by preference (RFC 6724). */
    rc = start_tcp(up, res->ai_addr);
    uv_freeaddrinfo(res);
    if (rc < 0) {
        char msg[CONFIG_HOST_MAX + 160], hop[CONFIG_HOST_MAX + 32];
        first_hop(up, hop, sizeof(hop));
        snprintf(msg, sizeof(msg), "cannot connect to %s: %s", hop, uv_strerror(rc));
        up->fail_result = METRICS_UPSTREAM_CONNECT_ERROR;
        fail(up, msg);
    }
}

int upstream_connect(struct proxy_service *svc, const struct upstream_handler *h, void *arg,
                     struct upstream **out)
{
    const struct service_config *cfg = svc->cfg;
    uv_loop_t *loop = svc->proxy->env.loop;
    struct upstream *up = calloc(1, sizeof(*up));
    struct sockaddr_storage ss;
    const char *host = cfg->upstream_host;
    uint16_t hport = cfg->upstream_port;
    uint64_t timeout_ms = cfg->connect_timeout_ms;
    char port[8];
    int rc;

    *out = NULL;
    if (up == NULL)
        return -ENOMEM;
    if (cfg->upstream_proxy_host[0] != '\0') {
        /* The first hop is the proxy: the enclave's name is resolved by the proxy, not here. */
        up->egress = egress_new(cfg);
        if (up->egress == NULL) {
            free(up);
            return -ENOMEM;
        }
        host = cfg->upstream_proxy_host;
        hport = cfg->upstream_proxy_port;
        timeout_ms = cfg->upstream_proxy_connect_timeout_ms;
        up->proxy_result = METRICS_PROXY_CONNECT_ERROR;
    }
    up->svc = svc;
    up->id = ++svc->proxy->next_id;
    up->h = h;
    up->arg = arg;
    up->state = UP_CONNECTING;
    up->gen = svc->upstream_gen;
    up->fail_result = METRICS_UPSTREAM_CONNECT_ERROR;
    rc = uv_tcp_init(loop, &up->tcp);
    if (rc < 0) {
        egress_free(up->egress);
        free(up);
        return rc;
    }
    deadline_init(loop, &up->deadline, on_timer, up);
    up->tcp.data = up;
    /* From here on the object is freed only by its close callbacks. */
    up->next = svc->upstreams;
    if (svc->upstreams != NULL)
        svc->upstreams->prev = up;
    svc->upstreams = up;
    svc->n_upstreams++;
    pool_note_in_use(svc);
    proxy__object_opened(svc->proxy);

    deadline_set(&up->deadline, timeout_ms);
    if (uv_ip4_addr(host, hport, (struct sockaddr_in *)&ss) == 0 ||
        uv_ip6_addr(host, hport, (struct sockaddr_in6 *)&ss) == 0) {
        rc = start_tcp(up, (const struct sockaddr *)&ss);
    } else {
        struct addrinfo hints;
        memset(&hints, 0, sizeof(hints));
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_ADDRCONFIG;
        snprintf(port, sizeof(port), "%u", hport);
        up->gai.data = up;
        rc = uv_getaddrinfo(loop, &up->gai, on_resolved, host, port, &hints);
        if (rc == 0)
            up->gai_active = true;
    }
    if (rc < 0) {
        upstream_close(up, "connect could not start");
        return rc;
    }
    *out = up;
    return 0;
}

/* ---- The gate and the exchange ------------------------------------------------------------ */

enum gate_verdict upstream_begin_exchange(struct upstream *up, uint64_t *retry_after_ms)
{
    const struct pin_entry *e;
    /* Ownership: callers hand over a connection just connected, taken from the pool or just
     * attested, which is UP_UNVERIFIED with its pin. The check stays for builds without
     * asserts: the gate fails closed. */
    assert(up->state == UP_UNVERIFIED && up->has_pin);
    if (up->state != UP_UNVERIFIED || !up->has_pin)
        return GATE_BAD_STATE;
    if (up->gen != up->svc->upstream_gen)
        return GATE_STALE;
    switch (
        pinset_lookup_fresh(&up->svc->pins, up->pin, uv_now(up->tcp.loop), retry_after_ms, &e)) {
    case PIN_FRESH:
        /* Session-bound evidence binds a document to one TLS session: a key attested over
         * another connection proves nothing about this one (whoever holds the key could sit
         * on it), so each connection is attested over itself before its first request. */
        if (up->svc->cfg->nonce == NONCE_SESSION && !up->attested_here)
            return GATE_ATTEST;
        break;
    case PIN_UNKNOWN:
        return GATE_ATTEST;
    case PIN_EXPIRED:
        return GATE_REATTEST;
    case PIN_NEGATIVE:
    default:
        return GATE_REFUSED;
    }
    /* The facts of the attestation that admits this exchange (about 1.7 KiB): copied when the
     * entry was written since the last exchange of this connection, not for every request. */
    if (!up->has_info || up->info_serial != e->serial) {
        up->info = e->info;
        up->info_serial = e->serial;
        up->has_info = true;
    }
    up->exchanges++;
    set_state(up, UP_BUSY);
    return GATE_PASS;
}

void upstream_end_exchange(struct upstream *up, bool reusable)
{
    /* Ownership: only the exchange the gate admitted ends it, and it may have been cut from
     * outside meanwhile (then closing, and nothing is left to do). */
    assert(up->state == UP_BUSY || up->state == UP_CLOSING);
    if (up->state != UP_BUSY)
        return;
    upstream_set_deadline(up, 0);
    set_state(up, UP_UNVERIFIED);
    /* Bytes already received past the response (a later record, possibly not yet decrypted)
     * would become the answer to the next request sent over this connection. */
    if (reusable && !tls_in_empty(&up->tls)) {
        upstream_close(up, "the upstream sent bytes past the response");
        return;
    }
    if (reusable && up->out_len == 0 && !up->peer_eof && pool_put(up->svc, up))
        return;
    upstream_close(up, reusable ? "not pooled" : "exchange ended the connection");
}

int upstream_begin_attestation(struct upstream *up)
{
    if (up->state != UP_UNVERIFIED)
        return -EINVAL;
    set_state(up, UP_ATTESTING);
    return 0;
}

void upstream_end_attestation(struct upstream *up)
{
    if (up->state == UP_ATTESTING)
        set_state(up, UP_UNVERIFIED);
}

void upstream__set_idle(struct upstream *up, bool idle)
{
    assert(idle ? up->state == UP_UNVERIFIED : up->state == UP_IDLE);
    set_state(up, idle ? UP_IDLE : UP_UNVERIFIED);
}

void upstream_abort(struct upstream *up, const char *msg)
{
    fail(up, msg);
}
