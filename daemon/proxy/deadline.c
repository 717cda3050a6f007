#include "proxy/deadline.h"

void deadline_init(uv_loop_t *loop, struct deadline *d, uv_timer_cb cb, void *data)
{
    uv_timer_init(loop, &d->timer);
    d->timer.data = data;
    d->due_ms = 0;
    d->cb = cb;
}

void deadline_set(struct deadline *d, uint64_t ms)
{
    if (ms == 0) {
        d->due_ms = 0; /* an armed timer finds nothing due and stays off */
        return;
    }
    d->due_ms = uv_now(d->timer.loop) + ms;
    if (!uv_is_active((uv_handle_t *)&d->timer) || uv_timer_get_due_in(&d->timer) > ms)
        uv_timer_start(&d->timer, d->cb, ms, 0);
}

bool deadline_fired(struct deadline *d)
{
    uint64_t now = uv_now(d->timer.loop);
    if (d->due_ms == 0)
        return false;
    if (now < d->due_ms) {
        uv_timer_start(&d->timer, d->cb, d->due_ms - now, 0);
        return false;
    }
    d->due_ms = 0;
    return true;
}
