#include "proxy/attest.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "base/audit.h"
#include "base/clock.h"
#include "base/hex.h"
#include "build_config.h"
#include "base/log.h"
#include "base/metrics.h"
#include "proxy/http1.h"
#include "proxy/pinset.h"
#include "proxy/pool.h"
#include "proxy/proxy_internal.h"
#include "proxy/egress.h"
#include "proxy/upstream.h"
#include "verify/verifier.h"

#define NONCE_MAX 64

struct attest_job {
    struct upstream *up;
    attest_done_cb done;
    void *arg;
    uint8_t nonce[NONCE_MAX];
    size_t nonce_len;
    struct http1_parser parser;
    uint8_t *body;
    size_t body_len;
    bool complete;
    bool extra_bytes; /* bytes after the response: the connection cannot be trusted to frame */
    bool finished;
    bool keep_alive; /* from the response head: llhttp forgets it once the message ends */
    bool stale;      /* attest_invalidate(): started under settings that were replaced */
    uint64_t started_ns;
};

/* The proxy's own reason names for attestations that reached no verdict (metric labels). */
#define REASON_TIMEOUT     "timeout"
#define REASON_HTTP_STATUS "http_status"
#define REASON_TOO_LARGE   "evidence_too_large"
#define REASON_CLOSED      "connection_closed"
#define REASON_MALFORMED   "malformed_response"
#define REASON_CERT_MARGIN "certificate_expires_within_margin"
#define REASON_INTERNAL    "internal_error"
#define REASON_STALE       "configuration_changed"
#define REASON_SESSION     "session_binding_unavailable"

/* The hex of the first bytes of `b` that fit `cap` with the NUL. */
static void hex_prefix(const uint8_t *b, size_t n, char *out, size_t cap)
{
    hex_encode(b, n < (cap - 1) / 2 ? n : (cap - 1) / 2, out);
}

static void log_attestation(struct attest_job *job, const char *verdict, const char *reason,
                            const char *message, const struct verify_summary *sum)
{
    struct upstream *up = job->up;
    const struct service_config *cfg = up->svc->cfg;
    char pin[17], pcr0[17], dur[24];
    bool ok = strcmp(verdict, "verified") == 0;

    hex_prefix(up->pin, 8, pin, sizeof(pin));
    pcr0[0] = '\0';
    if (sum != NULL && (sum->pcr_mask & 1u))
        hex_prefix(sum->pcrs[0], 8, pcr0, sizeof(pcr0));
    snprintf(dur, sizeof(dur), "%llu",
             (unsigned long long)((uv_hrtime() - job->started_ns) / 1000000u));
    log_event(ok ? LOG_LEVEL_INFO : LOG_LEVEL_WARN, "attestation", "service", up->svc->name, "pin",
              pin, "pcr0", pcr0, "module_id", sum != NULL ? sum->module_id : "", "verdict", verdict,
              "reason", reason, "message", message, "freshness",
              cfg->nonce == NONCE_SESSION ? "nonce, bound to the TLS session"
              : cfg->nonce == NONCE_QUERY ? "nonce"
                                          : "max_age only (the profile sends no nonce)",
              "tls", tls_version(&up->tls), "duration_ms", dur, NULL);
    audit_attestation(up->svc->proxy->env.audit, up->svc->name, job->body, job->body_len, up->pin,
                      sum != NULL ? sum->pcr_mask : 0, sum != NULL ? sum->pcrs : NULL, verdict,
                      reason);
}

/* Ends the job: records the outcome, releases the connection and tells the caller. */
static void finish(struct attest_job *job, struct attest_outcome *o, const char *reason,
                   enum metrics_verdict verdict)
{
    struct upstream *up = job->up;
    struct proxy_service *svc = up->svc;
    attest_done_cb done = job->done;
    void *arg = job->arg;

    if (job->finished)
        return;
    job->finished = true;
    metrics_observe_attestation(svc->metrics, verdict, reason, uv_hrtime() - job->started_ns);
    if (job->stale) {
        o->retry = true;
        o->reusable = false;
    } else if (!o->accepted) {
        uint64_t neg = svc->cfg->negative_cache_ms;
        uint64_t now = uv_now(svc->proxy->env.loop);
        /* A key the verifier rejected leaves the set, and every connection using it is cut,
         * in-flight exchanges included (BRIEF §5): also when its pin had already lapsed while
         * those exchanges ran, or been swept from the set. A fresh pin whose refresh merely
         * obtained no evidence keeps the life it was verified for: if no later refresh
         * succeeds, it lapses at its expiry (TTL lapse). */
        bool was_fresh = pinset_lookup(&svc->pins, up->pin, now, NULL) == PIN_FRESH;
        bool rejected = verdict == METRICS_VERDICT_REJECTED;
        bool removed = (rejected || !was_fresh) && pinset_remove(&svc->pins, up->pin);
        /* Negative first: a request whose exchange the cut below aborts, retried at once on
         * another connection to this key, is refused by the gate instead of attesting it. */
        pinset_add_negative(&svc->pins, up->pin, now, neg);
        if (rejected)
            proxy__abort_pin(svc, up->pin, up, "reattestation_failed", removed);
        pinset_set_failure(&svc->pins, clock_wall_ms(), rejected, reason, o->message, up->pin);
        o->retry_after_s = (unsigned)((neg + 999) / 1000);
        if (o->retry_after_s == 0)
            o->retry_after_s = 1;
        o->reusable = false;
    }
    upstream_set_deadline(up, 0);
    upstream_set_handler(up, NULL, NULL);
    upstream_end_attestation(up);
    if (!o->reusable)
        upstream_close(up, o->accepted ? "evidence response ended the connection"
                                       : "attestation failed");
    http1_parser_free(&job->parser);
    free(job->body);
    OPENSSL_cleanse(job->nonce, sizeof(job->nonce));
    free(job);
    done(up, o, arg);
}

static void fail_unavailable(struct attest_job *job, const char *reason, const char *why)
{
    struct attest_outcome o;
    memset(&o, 0, sizeof(o));
    o.err = PROXY_ERR_ATTESTATION_UNAVAILABLE;
    snprintf(o.message, sizeof(o.message), "attestation unavailable: %s", why);
    log_attestation(job, "error", reason, why, NULL);
    finish(job, &o, reason, METRICS_VERDICT_ERROR);
}

static void verify_evidence(struct attest_job *job)
{
    struct upstream *up = job->up;
    struct proxy_service *svc = up->svc;
    const struct service_config *cfg = svc->cfg;
    struct verify_request req;
    struct verify_result res;
    struct attest_outcome o;
    uint8_t session[BINDING_SESSION_LEN];
    unsigned status = job->parser.ll.status_code;
    int rc;

    memset(&o, 0, sizeof(o));
    if (job->stale) {
        fail_unavailable(job, REASON_STALE, "the configuration changed while attesting");
        return;
    }
    /* Session-bound evidence needs an exporter unique to this session: said before the status,
     * which from an enclave refusing such a session (400) would hide the reason. */
    if (cfg->nonce == NONCE_SESSION) {
        const char *why = NULL;
        if (tls_session_exporter(&up->tls, session, &why) < 0) {
            fail_unavailable(job, REASON_SESSION, why);
            return;
        }
    }
    if (status != 200) {
        char why[96];
        snprintf(why, sizeof(why), "the evidence endpoint answered HTTP %u", status);
        fail_unavailable(job, REASON_HTTP_STATUS, why);
        return;
    }
    memset(&req, 0, sizeof(req));
    req.policy = &cfg->policy;
    req.now_ms = clock_wall_ms();
    req.nonce = job->nonce_len > 0 ? job->nonce : NULL;
    req.nonce_len = job->nonce_len;
    if (cfg->nonce == NONCE_SESSION)
        req.session_exporter = session; /* the document must name this session with the key */
    req.binding = cfg->binding;
    req.peer_cert = tls_peer_cert(&up->tls);
    memset(&res, 0, sizeof(res));
    rc = verifier_verify(*svc->proxy->env.verifier, &req, job->body, job->body_len, &res);
    if (rc < 0 || !res.accepted) {
        const char *reason = rc < 0 ? REASON_INTERNAL : verify_reason_name(res.reason_code);
        const char *hint = rc < 0 ? NULL : egress_binding_hint(cfg, res.reason_code);
        static const char prefix[] = "attestation failed: ";
        o.err = rc == 0 && res.reason_code == VERIFY_R_POLICY_EXPIRED
                    ? PROXY_ERR_POLICY_EXPIRED
                    : PROXY_ERR_ATTESTATION_FAILED;
        /* Through an upstream proxy, a document bound to another key than this connection's
         * most likely means the proxy terminated TLS with a key of its own. */
        snprintf(o.message, sizeof(o.message), "%s%s%s%s", prefix,
                 rc < 0 ? "internal error while verifying" : res.reason, hint != NULL ? "; " : "",
                 hint != NULL ? hint : "");
        log_attestation(job, "rejected", reason, o.message + sizeof(prefix) - 1, &res.summary);
        finish(job, &o, reason, METRICS_VERDICT_REJECTED);
        return;
    }

    {
        struct pin_info info;
        memset(&info, 0, sizeof(info));
        snprintf(info.module_id, sizeof(info.module_id), "%s", res.summary.module_id);
        info.pcr_mask = res.summary.pcr_mask;
        memcpy(info.pcrs, res.summary.pcrs, sizeof(info.pcrs));
        info.debug_mode = res.summary.debug_mode;
        info.document_time_ms = res.summary.timestamp_ms;
        info.leaf_not_after_ms = res.summary.leaf_not_after_ms;
        rc = pinset_add(&svc->pins, up->pin, &info, uv_now(svc->proxy->env.loop), req.now_ms,
                        cfg->attestation_ttl_ms, cfg->cert_margin_ms);
    }
    if (rc < 0) {
        const char *why = "the enclave's attestation certificate expires within cert_margin";
        o.err = PROXY_ERR_ATTESTATION_FAILED;
        snprintf(o.message, sizeof(o.message), "attestation failed: %s", why);
        log_attestation(job, "rejected", REASON_CERT_MARGIN, why, &res.summary);
        finish(job, &o, REASON_CERT_MARGIN, METRICS_VERDICT_REJECTED);
        return;
    }
    o.accepted = true;
    up->attested_here = true;
    /* Bytes past the evidence response, in this record or a later one, would become the
     * answer to the request that follows on this connection: also a later record that the
     * enclave sent with the response but that still waits in the socket (the request is
     * written as soon as this function returns, so nothing there can be its answer). */
    o.reusable = job->keep_alive && !job->extra_bytes && tls_in_empty(&up->tls) &&
                 !upstream_input_pending(up);
    log_attestation(job, "verified", "ok", res.reason[0] ? res.reason : "accepted", &res.summary);
    {
        const struct pin_entry *next = pinset_next_expiry(&svc->pins, uv_now(svc->proxy->env.loop));
        if (next != NULL)
            metrics_set_pin_expiry(svc->metrics, (uint64_t)next->info.expires_at_ms);
    }
    finish(job, &o, "ok", METRICS_VERDICT_VERIFIED);
    proxy__status_changed(svc->proxy);
    proxy__schedule_refresh(svc);
}

/* ---- Response parsing --------------------------------------------------------------------- */

static int on_head(struct http1_parser *p)
{
    struct attest_job *job = p->data;
    if ((job->parser.ll.flags & F_CONTENT_LENGTH) &&
        job->parser.ll.content_length > VERIFY_MAX_ENVELOPE) {
        http1_parser_fail(p, HTTP1_FAIL_CALLBACK, "the evidence response is larger than 64 KiB");
        return HTTP1_CB_ERROR;
    }
    job->keep_alive = llhttp_should_keep_alive(&job->parser.ll) != 0;
    return HTTP1_CB_OK;
}

static int on_body(struct http1_parser *p, const char *at, size_t len)
{
    struct attest_job *job = p->data;
    if (len > VERIFY_MAX_ENVELOPE - job->body_len) {
        http1_parser_fail(p, HTTP1_FAIL_CALLBACK, "the evidence response is larger than 64 KiB");
        return HTTP1_CB_ERROR;
    }
    memcpy(job->body + job->body_len, at, len);
    job->body_len += len;
    return HTTP1_CB_OK;
}

static int on_complete(struct http1_parser *p)
{
    struct attest_job *job = p->data;
    /* An interim 1xx response is skipped; the final one ends the exchange. */
    if (job->parser.ll.status_code < 200) {
        job->body_len = 0;
        return HTTP1_CB_OK;
    }
    job->complete = true;
    return HTTP1_CB_PAUSE;
}

static const struct http1_callbacks response_cbs = {on_head, on_body, on_complete};

static void parse_failed(struct attest_job *job)
{
    const char *msg = job->parser.fail_msg;
    bool too_large = strstr(msg, "larger than") != NULL || job->parser.fail == HTTP1_FAIL_TOO_LARGE;
    char why[192];
    snprintf(why, sizeof(why), "bad evidence response: %s", msg);
    fail_unavailable(job, too_large ? REASON_TOO_LARGE : REASON_MALFORMED, why);
}

static void up_data(struct upstream *up, const char *data, size_t len, void *arg)
{
    struct attest_job *job = arg;
    size_t used = 0;
    enum http1_status st;
    (void)up;

    if (job->complete) {
        job->extra_bytes = true;
        return;
    }
    st = http1_parser_execute(&job->parser, data, len, &used);
    if (st == HTTP1_ERROR) {
        parse_failed(job);
        return;
    }
    if (job->complete) {
        job->extra_bytes = used < len;
        verify_evidence(job);
    }
}

static void up_eof(struct upstream *up, void *arg)
{
    struct attest_job *job = arg;
    (void)up;
    if (!job->complete && http1_parser_finish(&job->parser) == HTTP1_ERROR) {
        parse_failed(job);
        return;
    }
    if (!job->complete) {
        fail_unavailable(job, REASON_CLOSED,
                         "the upstream closed the connection before the evidence response ended");
        return;
    }
    job->extra_bytes = true; /* the connection is gone: not reusable */
    verify_evidence(job);
}

static void up_error(struct upstream *up, const char *msg, void *arg)
{
    struct attest_job *job = arg;
    char why[256];
    (void)up;
    snprintf(why, sizeof(why), "the connection failed while fetching evidence: %s", msg);
    fail_unavailable(job, REASON_CLOSED, why);
}

static void up_timeout(struct upstream *up, void *arg)
{
    struct attest_job *job = arg;
    char why[128];
    snprintf(why, sizeof(why), "attestation_timeout (%llu ms) elapsed",
             (unsigned long long)up->svc->cfg->attestation_timeout_ms);
    fail_unavailable(job, REASON_TIMEOUT, why);
}

/* Closed from outside (shutdown, enforcement): the job ends as an error so that its owner
 * hears of it and the job is freed. */
static void up_closed(struct upstream *up, void *arg)
{
    (void)up;
    fail_unavailable(arg, REASON_CLOSED, "the connection was closed during attestation");
}

static const struct upstream_handler attest_handler = {
    .on_data = up_data,
    .on_eof = up_eof,
    .on_error = up_error,
    .on_timeout = up_timeout,
    .on_closed = up_closed,
};

/* ---- Detaching ---------------------------------------------------------------------------- */

/* The client that wanted this connection went away: the attestation still completes (its
 * result serves the next request), and the connection goes to the pool or is closed. */
static void detached_done(struct upstream *up, const struct attest_outcome *o, void *arg)
{
    (void)arg;
    if (upstream_is_closing(up))
        return;
    if (!o->accepted || !o->reusable || !pool_put(up->svc, up))
        upstream_close(up, "attested for a client that went away");
}

void attest_detach(struct upstream *up)
{
    struct attest_job *job;
    if (up->h != &attest_handler)
        return;
    job = up->arg;
    job->done = detached_done;
    job->arg = NULL;
}

void attest_invalidate(struct upstream *up)
{
    if (up->h == &attest_handler)
        ((struct attest_job *)up->arg)->stale = true;
}

/* ---- Start -------------------------------------------------------------------------------- */

int attest_start(struct upstream *up, attest_done_cb done, void *arg)
{
    const struct service_config *cfg = up->svc->cfg;
    struct attest_job *job;
    char *req = NULL;
    size_t cap = CONFIG_PATH_MAX + 2 * NONCE_MAX + CONFIG_HOST_MAX + 256, n = 0;
    int rc = -ENOMEM, w;

    job = calloc(1, sizeof(*job));
    if (job == NULL)
        return -ENOMEM;
    job->up = up;
    job->done = done;
    job->arg = arg;
    job->started_ns = uv_hrtime();
    job->body = malloc(VERIFY_MAX_ENVELOPE);
    req = malloc(cap);
    if (job->body == NULL || req == NULL)
        goto out_free;
    http1_parser_init(&job->parser, HTTP_RESPONSE, HTTP1_RESPONSE_HEAD_MAX,
                      HTTP1_RESPONSE_HEADERS_MAX, &response_cbs, job);

    if (cfg->nonce != NONCE_NONE) {
        job->nonce_len = cfg->nonce_bytes < NONCE_MAX ? cfg->nonce_bytes : NONCE_MAX;
        if (RAND_bytes(job->nonce, (int)job->nonce_len) != 1) {
            rc = -EIO;
            goto out_free;
        }
    }
    w = snprintf(req, cap, "GET %s", cfg->evidence_path);
    if (w < 0 || (size_t)w >= cap)
        goto out_free;
    n = (size_t)w;
    if (job->nonce_len > 0) {
        char hex[2 * NONCE_MAX + 1];
        hex_prefix(job->nonce, job->nonce_len, hex, sizeof(hex));
        w = snprintf(req + n, cap - n, "%s%snonce=%s", strchr(cfg->evidence_path, '?') ? "&" : "?",
                     cfg->nonce == NONCE_SESSION ? "session_" : "", hex);
        if (w < 0 || (size_t)w >= cap - n)
            goto out_free;
        n += (size_t)w;
    }
    w = snprintf(req + n, cap - n,
                 " HTTP/1.1\r\nHost: %s\r\n"
                 "Accept: application/cbor, application/json, text/plain\r\n"
                 "User-Agent: attestproxy/%s\r\n\r\n",
                 cfg->upstream_authority, ATTESTPROXY_VERSION);
    if (w < 0 || (size_t)w >= cap - n)
        goto out_free;
    n += (size_t)w;

    rc = upstream_begin_attestation(up);
    if (rc < 0)
        goto out_free;
    /* No handler while writing: a write failure closes the connection without calling back,
     * and is reported by the return value instead. */
    upstream_set_handler(up, NULL, NULL);
    rc = upstream_write(up, req, n);
    if (rc == 0)
        upstream_flush(up);
    if (rc < 0 || upstream_is_closing(up)) {
        upstream_end_attestation(up);
        rc = rc < 0 ? rc : -EIO;
        goto out_free;
    }
    upstream_set_handler(up, &attest_handler, job);
    upstream_set_deadline(up, cfg->attestation_timeout_ms);
    free(req);
    return 0;

out_free:
    http1_parser_free(&job->parser);
    free(job->body);
    free(job);
    free(req);
    return rc;
}
