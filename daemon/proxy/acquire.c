/*
 * The upstream connection of one exchange (client_internal.h): taken from the pool (newest
 * first) or opened, put through THE GATE (upstream_begin_exchange()) and, when its pin is not
 * attested and fresh, attested over itself (attest.c) and put through the gate again; a
 * request that finds the pool empty while the service's warm attestation runs waits for it.
 * Also letting the connection go, and the one retry rule: an idempotent request whose pooled
 * connection failed before any response byte and before any body byte went up is sent again
 * over another connection, at most MAX_ATTEMPTS in all.
 */
#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "base/clock.h"
#include "base/log.h"
#include "proxy/attest.h"
#include "proxy/client_internal.h"
#include "proxy/errors.h"
#include "proxy/http1.h"
#include "proxy/pool.h"
#include "proxy/proxy_internal.h"
#include "proxy/upstream.h"
#include "proxy/warm.h"

static bool is_idempotent(llhttp_method_t m)
{
    return m == HTTP_GET || m == HTTP_HEAD || m == HTTP_OPTIONS || m == HTTP_TRACE ||
           m == HTTP_PUT || m == HTTP_DELETE;
}

/* Lets go of the upstream connection of the exchange: it is closed unless an attestation runs
 * over it, which then finishes on its own (attest_detach()). A connection with a response in
 * progress is never pooled. */
void acquire__release(struct client *c, const char *why)
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

/* The upstream connection failed during the exchange. Retried only for an idempotent request
 * whose reused (pooled) connection failed before any response byte and before any body byte
 * went out; otherwise 502, or a cut connection when the response had begun. */
void acquire__upstream_failed(struct client *c, const char *msg)
{
    struct exchange *ex = &c->ex;
    assert(c->state == CLIENT_RELAYING || c->state == CLIENT_CLOSING);
    acquire__release(c, msg);
    if (c->state == CLIENT_CLOSING)
        return;
    if (ex->resp_phase == RESP_NONE && ex->reused && is_idempotent(ex->method) && !ex->body_sent &&
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
        exchange__set_acquire(c, ACQUIRE_DUE);
        client__set_state(c, CLIENT_CONNECTING);
        client__set_timer(c, TIMER_NONE);
        exchange__process_input(c);
        return;
    }
    exchange__respond_error(c, PROXY_ERR_UPSTREAM_UNREACHABLE, msg, 0, ex->req_phase != REQ_DONE);
}

static void start_attest(struct client *c, struct upstream *up);

/* The 503 message while the key is negative-cached: with the reason of its failure when that is
 * the service's last one, so that a client sees why (a policy mismatch, say) and not only that
 * it failed "recently". */
static void refused_message(const struct upstream *up, unsigned s, char *msg, size_t cap)
{
    const struct pin_failure *f = &up->svc->pins.last_failure;
    if (f->set && f->has_pin && memcmp(f->pin, up->pin, PIN_LEN) == 0 && f->message[0] != '\0')
        snprintf(msg, cap,
                 "the enclave's key failed attestation recently (%s); it is retried in %u s",
                 f->message, s);
    else
        snprintf(msg, cap, "the enclave's key failed attestation recently; it is retried in %u s",
                 s);
}

/* The connection is open: pass the gate, or attest first. */
static void gate(struct client *c, struct upstream *up)
{
    uint64_t retry_ms = 0;
    enum gate_verdict v;
    char msg[VERIFY_REASON_MAX + 384];
    unsigned s;

    /* Ownership: the connection is this exchange's, just connected or just attested. */
    assert(c->state == CLIENT_CONNECTING && c->ex.acquire == ACQUIRE_STARTED);
    assert(c->ex.up == NULL || c->ex.up == up);
    v = upstream_begin_exchange(up, &retry_ms);

    switch (v) {
    case GATE_PASS:
        relay__start(c, up);
        return;
    case GATE_ATTEST:
    case GATE_REATTEST:
        start_attest(c, up);
        return;
    case GATE_STALE:
        /* Opened before a reload moved the upstream (or changed how it is attested): it may
         * lead to the old enclave. A new connection is tried (the caller runs
         * exchange__process_input). */
        c->ex.up = NULL;
        upstream_close(up, "the upstream settings changed while it was connecting");
        if (c->ex.attempts < MAX_ATTEMPTS)
            exchange__set_acquire(c, ACQUIRE_DUE);
        else
            exchange__respond_error(c, PROXY_ERR_UPSTREAM_UNREACHABLE,
                                    "the upstream settings changed while connecting", 0, false);
        return;
    case GATE_REFUSED:
    case GATE_BAD_STATE:
        break;
    }
    s = (unsigned)((retry_ms + 999) / 1000);
    c->ex.up = up;
    if (v == GATE_REFUSED)
        refused_message(up, s, msg, sizeof(msg));
    else
        snprintf(msg, sizeof(msg), "the upstream connection is not in a state to carry a request");
    exchange__respond_error(
        c, v == GATE_REFUSED ? PROXY_ERR_ATTESTATION_UNAVAILABLE : PROXY_ERR_UPSTREAM_UNREACHABLE,
        msg, s, false);
}

static void on_attested(struct upstream *up, const struct attest_outcome *o, void *arg)
{
    struct client *c = arg;
    /* A client that stopped waiting detached the attestation (attest_detach()). */
    assert(c->ex.up == up && c->state == CLIENT_CONNECTING);
    c->ex.up = NULL;
    if (o->retry && c->ex.attempts < MAX_ATTEMPTS) {
        /* The settings changed while attesting (the connection is closed): start again. */
        exchange__set_acquire(c, ACQUIRE_DUE);
        exchange__process_input(c);
        return;
    }
    if (!o->accepted) {
        exchange__respond_error(c, o->err, o->message, o->retry_after_s, false);
        exchange__process_input(c);
        return;
    }
    if (upstream_is_closing(up)) {
        /* Attested, but the evidence response ended that connection: the next one has the
         * now-attested key and passes the gate at once. */
        if (c->ex.attempts < MAX_ATTEMPTS) {
            exchange__set_acquire(c, ACQUIRE_DUE);
        } else {
            exchange__respond_error(c, PROXY_ERR_UPSTREAM_UNREACHABLE,
                                    "the upstream closed every connection after attestation", 0,
                                    false);
        }
        exchange__process_input(c);
        return;
    }
    gate(c, up);
    exchange__process_input(c);
}

static void start_attest(struct client *c, struct upstream *up)
{
    int rc;
    assert(up->state == UP_UNVERIFIED);
    c->ex.up = up;
    rc = attest_start(up, on_attested, c);
    if (rc < 0)
        exchange__respond_error(c, PROXY_ERR_ATTESTATION_UNAVAILABLE, "attestation could not start",
                                0, false);
}

/* A connection that never reached the enclave is the service's last failure too (as warm.c
 * records it), so that /attestation's last_failure shows an enclave that is down while its
 * pin is still fresh. */
static void record_unreachable(struct client *c, enum proxy_error e, const char *msg)
{
    pinset_set_failure(&c->svc->pins, clock_wall_ms(), false, errors_code_name(e), msg, NULL);
}

static void on_connected(struct upstream *up, int status, void *arg)
{
    struct client *c = arg;
    /* The client closes its connection (and so never hears this) when it goes away. */
    assert(c->ex.up == up && c->state == CLIENT_CONNECTING);
    if (status < 0) {
        char msg[256];
        enum proxy_error e = upstream_proxy_refusal(up) != 0 ? PROXY_ERR_UPSTREAM_PROXY_REFUSED
                                                             : PROXY_ERR_UPSTREAM_UNREACHABLE;
        snprintf(msg, sizeof(msg), "%s", upstream_failure(up));
        c->ex.up = NULL;
        record_unreachable(c, e, msg);
        exchange__respond_error(c, e, msg, 0, false);
        exchange__process_input(c);
        return;
    }
    gate(c, up);
    exchange__process_input(c);
}

static const struct upstream_handler connect_handler = {
    .on_connected = on_connected,
};

void acquire__upstream(struct client *c)
{
    struct proxy_service *svc = c->svc;
    struct upstream *up;
    int rc;

    assert(c->state == CLIENT_CONNECTING && c->ex.acquire == ACQUIRE_STARTED);
    assert(c->ex.up == NULL && c->ex.attempts < MAX_ATTEMPTS);
    c->ex.attempts++;
    while ((up = pool_take(svc)) != NULL) {
        uint64_t retry_ms = 0;
        enum gate_verdict v = upstream_begin_exchange(up, &retry_ms);
        if (v == GATE_PASS) {
            relay__start(c, up);
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
        exchange__set_acquire(c, ACQUIRE_WAITING_WARM);
        c->ex.attempts--;
        return;
    }
    rc = upstream_connect(svc, &connect_handler, c, &up);
    if (rc < 0) {
        char msg[160];
        snprintf(msg, sizeof(msg), "cannot connect to the upstream: %s", uv_strerror(rc));
        record_unreachable(c, PROXY_ERR_UPSTREAM_UNREACHABLE, msg);
        exchange__respond_error(c, PROXY_ERR_UPSTREAM_UNREACHABLE, msg, 0, false);
        return;
    }
    c->ex.up = up;
}
