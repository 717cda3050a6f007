#include "proxy/pool.h"

#include <string.h>

#include <openssl/crypto.h>

#include "core/log.h"
#include "proxy/proxy_internal.h"
#include "proxy/upstream.h"

void pool_init(struct pool *p)
{
    memset(p, 0, sizeof(*p));
}

static void unlink_up(struct pool *p, struct upstream *up)
{
    if (up->pool_prev != NULL)
        up->pool_prev->pool_next = up->pool_next;
    else
        p->top = up->pool_next;
    if (up->pool_next != NULL)
        up->pool_next->pool_prev = up->pool_prev;
    else
        p->bottom = up->pool_prev;
    up->pool_prev = up->pool_next = NULL;
    up->in_pool = false;
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

    if (max == 0 || svc->proxy->stopping || svc->removed || up->in_pool)
        return false;
    /* A pin in its refresh window whose connections were all busy is re-attested over the
     * first one that goes idle, before a waiting request can take it again. */
    if (svc->refresh_waiting && proxy__refresh_on_idle(svc, up))
        return true;
    while (p->n >= max && p->bottom != NULL)
        upstream_close(p->bottom, "pool full: least recently used connection closed");
    upstream__set_idle(up, true);
    upstream_set_handler(up, &idle_handler, NULL);
    up->pool_prev = NULL;
    up->pool_next = p->top;
    if (p->top != NULL)
        p->top->pool_prev = up;
    p->top = up;
    if (p->bottom == NULL)
        p->bottom = up;
    up->in_pool = true;
    p->n++;
    /* Reading goes on while idle so that a close by the enclave is noticed at once. Resuming
     * may deliver buffered bytes, which close the connection (idle_data); it is the pool's
     * either way, so true is returned. */
    upstream_set_deadline(up, svc->cfg->pool_idle_timeout_ms);
    upstream_pause_reading(up, false);
    return true;
}

static struct upstream *take(struct proxy_service *svc, struct upstream *up)
{
    unlink_up(&svc->pool, up);
    upstream_set_deadline(up, 0);
    upstream_set_handler(up, NULL, NULL);
    upstream__set_idle(up, false);
    up->reused = true;
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
    if (up->in_pool)
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
