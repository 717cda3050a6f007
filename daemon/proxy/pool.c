#include "proxy/pool.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "base/log.h"
#include "proxy/proxy_internal.h"
#include "proxy/upstream.h"

static void on_purge_timer(uv_timer_t *t);

void pool_init(struct proxy_service *svc, uv_loop_t *loop)
{
    struct pool *p = &svc->pool;
    memset(p, 0, sizeof(*p));
    uv_timer_init(loop, &p->purge_timer);
    p->purge_timer.data = svc;
    proxy__object_opened(svc->proxy);
}

static void on_purge_timer_closed(uv_handle_t *h)
{
    struct proxy_service *svc = h->data;
    proxy__object_closed(svc->proxy);
}

void pool_close(struct proxy_service *svc)
{
    uv_close((uv_handle_t *)&svc->pool.purge_timer, on_purge_timer_closed);
}

/* Connections of the service in use: busy, attesting or being opened — neither idle in the
 * pool nor closed (a closed one is freed a loop iteration later). */
static size_t in_use(const struct proxy_service *svc)
{
    assert(svc->pool.n + svc->n_upstreams_closing <= svc->n_upstreams);
    return svc->n_upstreams - svc->n_upstreams_closing - svc->pool.n;
}

void pool_note_in_use(struct proxy_service *svc)
{
    size_t n = in_use(svc);
    if (n > svc->pool.peak_in_use)
        svc->pool.peak_in_use = n;
}

size_t pool_purge_count(size_t in_use_now, size_t idle, size_t peak, size_t *est_need)
{
    size_t need = peak > *est_need ? peak : *est_need;
    size_t total = in_use_now + idle, excess, n;

    if (need < 1)
        need = 1;
    excess = total > need ? total - need : 0;
    n = excess / 2 + excess % 2;
    /* The estimate forgets a past peak by half per interval, so that demand which comes back
     * within a few intervals (a periodic burst) still finds its connections. */
    *est_need = (*est_need + peak) / 2;
    if (*est_need < peak)
        *est_need = peak;
    return n < idle ? n : idle;
}

/* Every pool_purge_interval while connections are idle: closes the surplus above recent demand
 * gradually, least recently used first. The timer is re-armed from the live configuration, so
 * a reload changes the interval from the next tick on; it stops when the pool is empty (an idle
 * daemon has no timer to wake it) and pool_put() starts it again. */
static void on_purge_timer(uv_timer_t *t)
{
    struct proxy_service *svc = t->data;
    struct pool *p = &svc->pool;
    size_t n;

    if (svc->proxy->stopping || svc->removed)
        return;
    n = pool_purge_count(in_use(svc), p->n, p->peak_in_use, &p->est_need);
    p->peak_in_use = in_use(svc);
    /* Nothing idle: the timer stops until pool_put() starts it again. The peak goes on being
     * recorded meanwhile, so the demand of a burst that kept every connection busy is known to
     * the purge that follows it. */
    if (p->n == 0)
        return;
    if (n > 0 && log_enabled(LOG_LEVEL_DEBUG)) {
        char closed[24], idle[24], need[24];
        snprintf(closed, sizeof(closed), "%zu", n);
        snprintf(idle, sizeof(idle), "%zu", p->n - n);
        snprintf(need, sizeof(need), "%zu", p->est_need);
        log_event(LOG_LEVEL_DEBUG, "pool_purge", "service", svc->name, "closed", closed, "idle",
                  idle, "demand", need, NULL);
    }
    for (; n > 0 && p->bottom != NULL; n--)
        upstream_close(p->bottom, "pool purge: idle beyond recent demand");
    uv_timer_start(t, on_purge_timer, svc->cfg->pool_purge_interval_ms, 0);
}

static void unlink_up(struct pool *p, struct upstream *up)
{
    assert(up->state == UP_IDLE && p->n > 0);
    if (up->pool_prev != NULL)
        up->pool_prev->pool_next = up->pool_next;
    else
        p->top = up->pool_next;
    if (up->pool_next != NULL)
        up->pool_next->pool_prev = up->pool_prev;
    else
        p->bottom = up->pool_prev;
    up->pool_prev = up->pool_next = NULL;
    p->n--;
}

/* While idle, the connection belongs to the pool: anything but silence ends it. */
static void idle_data(struct upstream *up, const char *data, size_t len, void *arg)
{
    (void)data;
    (void)len;
    (void)arg;
    upstream_close(up, "unexpected data on an idle upstream connection");
}

static void idle_eof(struct upstream *up, void *arg)
{
    (void)arg;
    upstream_close(up, "upstream closed an idle connection");
}

static void idle_timeout(struct upstream *up, void *arg)
{
    (void)arg;
    upstream_close(up, "pool_idle_timeout");
}

static const struct upstream_handler idle_handler = {
    .on_data = idle_data,
    .on_eof = idle_eof,
    .on_timeout = idle_timeout,
};

bool pool_put(struct proxy_service *svc, struct upstream *up)
{
    struct pool *p = &svc->pool;
    uint32_t max = svc->cfg->pool_max_idle;

    /* Ownership: a connection comes here from the end of an exchange or an attestation,
     * never closing and never while another handler still expects its callbacks. */
    assert(up->svc == svc && up->state == UP_UNVERIFIED);
    if (max == 0 || svc->proxy->stopping || svc->removed || up->state == UP_IDLE)
        return false;
    /* A pin in its refresh window whose connections were all busy is re-attested over the
     * first one that goes idle, before a waiting request can take it again. */
    if (svc->refresh_waiting && proxy__refresh_on_idle(svc, up))
        return true;
    /* The hard cap bounds memory only: the purge, not this, adapts the pool to demand. */
    while (p->n >= max && p->bottom != NULL)
        upstream_close(p->bottom, "pool_max_idle reached: least recently used connection closed");
    upstream__set_idle(up, true);
    upstream_set_handler(up, &idle_handler, NULL);
    up->pool_prev = NULL;
    up->pool_next = p->top;
    if (p->top != NULL)
        p->top->pool_prev = up;
    p->top = up;
    if (p->bottom == NULL)
        p->bottom = up;
    p->n++;
    /* Reading goes on while idle so that a close by the enclave is noticed at once. Resuming
     * may deliver buffered bytes, which close the connection (idle_data); it is the pool's
     * either way, so true is returned. */
    upstream_set_deadline(up, svc->cfg->pool_idle_timeout_ms);
    if (!uv_is_active((uv_handle_t *)&p->purge_timer))
        uv_timer_start(&p->purge_timer, on_purge_timer, svc->cfg->pool_purge_interval_ms, 0);
    upstream_pause_reading(up, false);
    return true;
}

static struct upstream *take(struct proxy_service *svc, struct upstream *up)
{
    assert(up->state == UP_IDLE);
    unlink_up(&svc->pool, up);
    upstream_set_deadline(up, 0);
    upstream_set_handler(up, NULL, NULL);
    upstream__set_idle(up, false);
    up->reused = true;
    pool_note_in_use(svc);
    return up;
}

struct upstream *pool_take(struct proxy_service *svc)
{
    if (svc->pool.top == NULL)
        return NULL;
    return take(svc, svc->pool.top);
}

struct upstream *pool_take_pin(struct proxy_service *svc, const uint8_t pin[PIN_LEN])
{
    for (struct upstream *up = svc->pool.top; up != NULL; up = up->pool_next) {
        if (up->has_pin && CRYPTO_memcmp(up->pin, pin, PIN_LEN) == 0)
            return take(svc, up);
    }
    return NULL;
}

bool pool_has_pin(const struct proxy_service *svc, const uint8_t pin[PIN_LEN])
{
    for (const struct upstream *up = svc->pool.top; up != NULL; up = up->pool_next) {
        if (up->has_pin && CRYPTO_memcmp(up->pin, pin, PIN_LEN) == 0)
            return true;
    }
    return false;
}

void pool_remove(struct proxy_service *svc, struct upstream *up)
{
    if (up->state == UP_IDLE)
        unlink_up(&svc->pool, up);
}

size_t pool_close_all(struct proxy_service *svc, const char *why)
{
    size_t n = 0;
    while (svc->pool.top != NULL) {
        upstream_close(svc->pool.top, why);
        n++;
    }
    return n;
}
