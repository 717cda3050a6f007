/* proxy/deadline: a deadline moved later fires at its own time, not at the earlier one the
 * timer was armed for; moved earlier it fires earlier; cleared it never fires. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <uv.h>

#include "proxy/deadline.h"

struct probe {
    struct deadline d;
    uint64_t start_ms;
    int fired;
    uint64_t fired_after_ms;
    int wakeups;
};

static void on_timer(uv_timer_t *t)
{
    struct probe *p = t->data;
    p->wakeups++;
    if (!deadline_fired(&p->d))
        return;
    p->fired++;
    p->fired_after_ms = uv_now(t->loop) - p->start_ms;
}

static void run(struct probe *p, uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&p->d.timer, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

static void start(struct probe *p, uv_loop_t *loop)
{
    uv_loop_init(loop);
    deadline_init(loop, &p->d, on_timer, p);
    p->start_ms = uv_now(loop);
}

static void test_moved_later_fires_at_the_later_time(void **state)
{
    uv_loop_t loop;
    struct probe p = {0};
    (void)state;
    start(&p, &loop);
    deadline_set(&p.d, 30);
    deadline_set(&p.d, 120); /* later: the timer stays armed for 30 ms */
    run(&p, &loop);
    assert_int_equal(p.fired, 1);
    assert_true(p.fired_after_ms >= 120);
    assert_int_equal(p.wakeups, 2); /* one early wake-up that re-armed for the rest */
}

static void test_moved_earlier_fires_early(void **state)
{
    uv_loop_t loop;
    struct probe p = {0};
    (void)state;
    start(&p, &loop);
    deadline_set(&p.d, 5000);
    deadline_set(&p.d, 20);
    run(&p, &loop);
    assert_int_equal(p.fired, 1);
    assert_true(p.fired_after_ms >= 20);
    assert_true(p.fired_after_ms < 5000);
    assert_int_equal(p.wakeups, 1);
}

static void test_cleared_never_fires(void **state)
{
    uv_loop_t loop;
    struct probe p = {0};
    (void)state;
    start(&p, &loop);
    deadline_set(&p.d, 20);
    deadline_set(&p.d, 0);
    run(&p, &loop);
    assert_int_equal(p.fired, 0);
    assert_int_equal(p.wakeups, 1); /* the armed timer woke and found nothing due */
}

static void test_set_again_after_expiry(void **state)
{
    uv_loop_t loop;
    struct probe p = {0};
    (void)state;
    start(&p, &loop);
    deadline_set(&p.d, 10);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(p.fired, 1);
    p.start_ms = uv_now(&loop);
    deadline_set(&p.d, 15);
    run(&p, &loop);
    assert_int_equal(p.fired, 2);
    assert_true(p.fired_after_ms >= 15);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_moved_later_fires_at_the_later_time),
        cmocka_unit_test(test_moved_earlier_fires_early),
        cmocka_unit_test(test_cleared_never_fires),
        cmocka_unit_test(test_set_again_after_expiry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
