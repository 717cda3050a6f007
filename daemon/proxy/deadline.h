/*
 * A connection's single deadline, re-armed cheaply.
 *
 * A keep-alive connection moves its deadline several times per request (header, first byte,
 * stream idle, idle). Re-arming a libuv timer each time is two heap operations; here a move to
 * a later time only records it, and the timer, still armed for the earlier time, re-arms itself
 * for the rest when it fires (deadline_fired()). Only a move to an earlier time touches the
 * timer. Expiry stays exact: a deadline fires when its own time is reached, not before.
 */
#ifndef ATTESTPROXY_PROXY_DEADLINE_H
#define ATTESTPROXY_PROXY_DEADLINE_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

struct deadline {
    uv_timer_t timer; /* timer.data is the owner's */
    uint64_t due_ms;  /* loop time at which it expires; 0: none */
    uv_timer_cb cb;
};

/** Initialises `d` on `loop`; `cb` runs (with &d->timer) when a deadline may have expired. */
void deadline_init(uv_loop_t *loop, struct deadline *d, uv_timer_cb cb, void *data);

/** Expires `ms` from now; 0 clears it. */
void deadline_set(struct deadline *d, uint64_t ms);

/** For the callback: true when the deadline has expired (it is then cleared); false when it
 *  was cleared or moved later (the timer is re-armed for the rest). */
bool deadline_fired(struct deadline *d);

#endif
