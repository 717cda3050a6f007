#include "proxy/warm.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "base/clock.h"
#include "base/log.h"
#include "proxy/attest.h"
#include "proxy/client.h"
#include "proxy/pinset.h"
#include "proxy/pool.h"
#include "proxy/proxy_internal.h"
#include "proxy/upstream.h"

static const char *const state_names[] = {
    [WARM_IDLE] = "idle",
    [WARM_CONNECTING] = "connecting",
    [WARM_ATTESTING] = "attesting",
    [WARM_BACKOFF] = "backoff",
};

/* The legal transitions: an attempt goes idle -> connecting -> attesting and ends in idle
 * (success, or nothing more wanted) or backoff (failure); a back-off ends in idle; idle may
 * wait in backoff before an attempt (not_before). */
#ifndef NDEBUG /* read by assert() only */
#define TO(s) (1u << (s))
static const unsigned legal_next[] = {
    [WARM_IDLE] = TO(WARM_CONNECTING) | TO(WARM_BACKOFF),
    [WARM_CONNECTING] = TO(WARM_ATTESTING) | TO(WARM_IDLE) | TO(WARM_BACKOFF),
    [WARM_ATTESTING] = TO(WARM_IDLE) | TO(WARM_BACKOFF),
    [WARM_BACKOFF] = TO(WARM_IDLE),
};
#undef TO
#endif

static void set_state(struct proxy_service *svc, enum warm_state to)
{
    struct warm *w = &svc->warm;
    if (w->state == to)
        return;
    assert(legal_next[w->state] & (1u << to));
    /* The attempt's connection is held exactly while connecting or attesting. */
    assert(to == WARM_CONNECTING || to == WARM_ATTESTING || w->up == NULL);
    log_event(LOG_LEVEL_DEBUG, "warm_state", "service", svc->name, "from", state_names[w->state],
              "to", state_names[to], NULL);
    w->state = to;
}

static uint64_t now_ms(const struct proxy_service *svc)
{
    return uv_now(svc->proxy->env.loop);
}

static bool active(const struct proxy_service *svc)
{
    return svc->warm.enabled && svc->cfg->warm_attestation && !svc->proxy->stopping &&
           !svc->removed;
}

/* No fresh pin at all, or a pin due for refresh that no idle pooled connection can carry (the
 * refresh pass then waits for one: with no traffic, none would ever come). */
static bool wanted(const struct proxy_service *svc, uint64_t now)
{
    if (!pinset_any_fresh(&svc->pins, now))
        return true;
    for (size_t i = 0; i < svc->pins.n; i++) {
        const struct pin_entry *e = &svc->pins.entries[i];
        if (proxy__refresh_due(e, svc->cfg, now) && !pool_has_pin(svc, e->pin))
            return true;
    }
    return false;
}

static void on_timer(uv_timer_t *t);

/* The attempt ended: requests that waited for it go on (they find the pooled connection, or
 * open their own), and the daemon re-evaluates readiness and STATUS=. */
static void attempt_ended(struct proxy_service *svc)
{
    client_warm_done(svc);
    proxy__status_changed(svc->proxy);
}

static void succeeded(struct proxy_service *svc, bool attested)
{
    struct warm *w = &svc->warm;
    uint64_t now = now_ms(svc);

    w->up = NULL;
    w->failures = 0;
    w->backoff_ms = WARM_BACKOFF_MIN_MS;
    w->last_error[0] = '\0';
    /* An attempt that attested nothing (its key was fresh already: another enclave behind the
     * same address, say) made no progress for the pin that wanted it: the next one waits. */
    w->not_before = attested ? now : now + WARM_BACKOFF_MIN_MS;
    set_state(svc, WARM_IDLE);
    log_event(LOG_LEVEL_INFO, "warm_attestation", "service", svc->name, "result",
              attested ? "attested" : "key already attested", "action",
              "connection kept in the pool", NULL);
    attempt_ended(svc);
    warm_check(svc);
}

/* `min_delay_ms`: the failed key's remaining negative cache (nothing is sent to it before). */
static void failed(struct proxy_service *svc, const char *why, uint64_t min_delay_ms, bool record)
{
    struct warm *w = &svc->warm;
    uint64_t delay = w->backoff_ms > min_delay_ms ? w->backoff_ms : min_delay_ms;
    char n[24], in[24];

    w->up = NULL;
    w->failures++;
    w->backoff_ms =
        2 * w->backoff_ms < WARM_BACKOFF_MAX_MS ? 2 * w->backoff_ms : WARM_BACKOFF_MAX_MS;
    w->not_before = now_ms(svc) + delay;
    snprintf(w->last_error, sizeof(w->last_error), "%s", why);
    /* Attestation failures are recorded by attest.c; a connection that never got that far is
     * recorded here, so that /attestation's last_failure says why nothing is attested. */
    if (record)
        pinset_set_failure(&svc->pins, clock_wall_ms(), false, "upstream_unreachable", why, NULL);
    if (!active(svc)) {
        set_state(svc, WARM_IDLE);
        attempt_ended(svc);
        return;
    }
    snprintf(n, sizeof(n), "%u", w->failures);
    snprintf(in, sizeof(in), "%llu", (unsigned long long)delay);
    log_event(LOG_LEVEL_WARN, "warm_attestation_failed", "service", svc->name, "error", why,
              "attempt", n, "retry_in_ms", in, NULL);
    set_state(svc, WARM_BACKOFF);
    uv_timer_start(&w->timer, on_timer, delay, 0);
    attempt_ended(svc);
}

/* The settings changed under the attempt (a reload): it says nothing; start again. */
static void restart(struct proxy_service *svc)
{
    svc->warm.up = NULL;
    set_state(svc, WARM_IDLE);
    attempt_ended(svc);
    warm_check(svc);
}

static void on_attested(struct upstream *up, const struct attest_outcome *o, void *arg)
{
    struct proxy_service *svc = arg;
    if (o->retry) {
        if (!upstream_is_closing(up))
            upstream_close(up, "warm attestation started under replaced settings");
        restart(svc);
        return;
    }
    if (!o->accepted) {
        /* attest.c closed the connection and negative-cached the key. */
        failed(svc, o->message, (uint64_t)o->retry_after_s * 1000u, false);
        return;
    }
    if (!upstream_is_closing(up) && (!o->reusable || !pool_put(svc, up)))
        upstream_close(up, "warm attestation: the connection cannot be pooled");
    succeeded(svc, true);
}

static void on_connected(struct upstream *up, int status, void *arg)
{
    struct proxy_service *svc = arg;
    struct warm *w = &svc->warm;
    uint64_t retry_ms = 0;

    assert(w->state == WARM_CONNECTING && w->up == up);
    if (status < 0) {
        char why[sizeof(w->last_error)];
        snprintf(why, sizeof(why), "cannot reach the enclave: %s", upstream_failure(up));
        failed(svc, why, 0, true); /* the connection closes after this callback */
        return;
    }
    upstream_set_handler(up, NULL, NULL);
    if (!active(svc)) {
        upstream_close(up, "warm attestation no longer wanted");
        w->up = NULL;
        set_state(svc, WARM_IDLE);
        attempt_ended(svc);
        return;
    }
    if (up->gen != svc->upstream_gen) {
        upstream_close(up, "the upstream settings changed while it was connecting");
        restart(svc);
        return;
    }
    switch (pinset_lookup(&svc->pins, up->pin, now_ms(svc), &retry_ms)) {
    case PIN_FRESH:
        /* Attested already: the connection is what a due refresh waited for, or a warm one
         * for the pool. The gate admits it when a request takes it. */
        if (!proxy__refresh_on_idle(svc, up) && !pool_put(svc, up))
            upstream_close(up, "warm connection not pooled (pool_max_idle = 0)");
        succeeded(svc, false);
        return;
    case PIN_NEGATIVE:
        upstream_close(up, "the enclave's key failed attestation recently");
        failed(svc, "the enclave's key failed attestation recently (negative_cache)", retry_ms,
               false);
        return;
    case PIN_UNKNOWN:
    case PIN_EXPIRED:
        break;
    }
    set_state(svc, WARM_ATTESTING);
    if (attest_start(up, on_attested, svc) < 0) {
        upstream_close(up, "warm attestation could not start");
        failed(svc, "attestation could not start", 0, true);
    }
}

/* Closed by someone else while connecting (shutdown, the service's stop). */
static void on_closed(struct upstream *up, void *arg)
{
    struct proxy_service *svc = arg;
    if (svc->warm.up != up)
        return;
    failed(svc, "the connection was closed while connecting", 0, false);
}

static const struct upstream_handler connect_handler = {
    .on_connected = on_connected,
    .on_closed = on_closed,
};

static void start_attempt(struct proxy_service *svc)
{
    struct warm *w = &svc->warm;
    int rc;

    set_state(svc, WARM_CONNECTING);
    rc = upstream_connect(svc, &connect_handler, svc, &w->up);
    if (rc < 0) {
        char why[160];
        snprintf(why, sizeof(why), "cannot connect to the upstream: %s", uv_strerror(rc));
        failed(svc, why, 0, true);
    }
}

static void on_timer(uv_timer_t *t)
{
    struct proxy_service *svc = t->data;
    if (svc->warm.state != WARM_BACKOFF)
        return;
    set_state(svc, WARM_IDLE);
    warm_check(svc);
}

void warm_check(struct proxy_service *svc)
{
    struct warm *w = &svc->warm;
    uint64_t now;

    if (w->state != WARM_IDLE || !active(svc))
        return;
    now = now_ms(svc);
    if (!wanted(svc, now))
        return;
    if (now < w->not_before) {
        set_state(svc, WARM_BACKOFF);
        uv_timer_start(&w->timer, on_timer, w->not_before - now, 0);
        return;
    }
    start_attempt(svc);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct proxy_service *svc = h->data;
    proxy__object_closed(svc->proxy);
}

void warm_init(struct proxy_service *svc)
{
    struct warm *w = &svc->warm;
    memset(w, 0, sizeof(*w));
    w->backoff_ms = WARM_BACKOFF_MIN_MS;
    uv_timer_init(svc->proxy->env.loop, &w->timer);
    w->timer.data = svc;
    proxy__object_opened(svc->proxy);
}

void warm_enable(struct proxy_service *svc)
{
    svc->warm.enabled = true;
    warm_check(svc);
}

void warm_stop(struct proxy_service *svc)
{
    struct warm *w = &svc->warm;
    struct upstream *up = w->up;
    uv_timer_stop(&w->timer);
    if (w->state == WARM_BACKOFF)
        set_state(svc, WARM_IDLE);
    /* Its outcome (on_closed while connecting, attest.c's while attesting) then finds the
     * service stopping and starts nothing more. */
    if (up != NULL && !upstream_is_closing(up))
        upstream_close(up, "the service stops");
}

void warm_close(struct proxy_service *svc)
{
    uv_close((uv_handle_t *)&svc->warm.timer, on_timer_closed);
}

bool warm_in_progress(const struct proxy_service *svc)
{
    const struct warm *w = &svc->warm;
    return (w->state == WARM_CONNECTING || w->state == WARM_ATTESTING) &&
           !pinset_any_fresh(&svc->pins, now_ms(svc));
}

void warm_reason(const struct proxy_service *svc, const char **state, char *why, size_t cap)
{
    const struct warm *w = &svc->warm;
    uint64_t now = now_ms(svc);

    if (!svc->cfg->warm_attestation || !w->enabled) {
        *state = "waiting_for_request";
        snprintf(why, cap,
                 "no attested enclave yet: with warm_attestation = no the first request "
                 "attests it");
        return;
    }
    *state = state_names[w->state];
    if (w->last_error[0] != '\0' && w->state == WARM_BACKOFF) {
        uint64_t left = w->not_before > now ? w->not_before - now : 0;
        snprintf(why, cap, "%s (attempt %u failed; next in %llu s)", w->last_error, w->failures,
                 (unsigned long long)((left + 999) / 1000));
    } else if (w->last_error[0] != '\0') {
        snprintf(why, cap, "%s (attempt %u failed; retrying now)", w->last_error, w->failures);
    } else if (w->state == WARM_CONNECTING) {
        snprintf(why, cap, "connecting to the enclave");
    } else if (w->state == WARM_ATTESTING) {
        snprintf(why, cap, "attesting the enclave");
    } else {
        snprintf(why, cap, "no attested enclave");
    }
}
