/*
 * Unit tests of the event loop (src/loop.c): timers fire in deadline order
 * and only once due, a wake from another thread's side is delivered, and
 * poll_once makes exactly one epoll_wait non-blocking (the worker uses it to
 * gather ready requests into a rate-limit batch before a Redis round trip).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "gw/common.h"
#include "gw/loop.h"

static int fired[4];
static int fire_order[4];
static int fire_count;

struct tagged_timer {
    struct gw_timer t;
    int id;
};

static void tagged_cb(struct gw_loop *loop, struct gw_timer *t)
{
    (void)loop;
    struct tagged_timer *tt = gw_container_of(t, struct tagged_timer, t);
    fired[tt->id]++;
    fire_order[fire_count++] = tt->id;
}

static int wakes;

static void on_wake(struct gw_loop *loop, void *ctx)
{
    (void)loop;
    (void)ctx;
    wakes++;
}

static void reset_counts(void)
{
    for (int i = 0; i < 4; i++)
        fired[i] = fire_order[i] = 0;
    fire_count = 0;
    wakes = 0;
}

/* Runs the loop until n timers fired, at most 200 iterations. */
static void run_until_fired(struct gw_loop *loop, int n)
{
    for (int i = 0; i < 200 && fire_count < n; i++)
        assert_int_equal(gw_loop_run_once(loop, 50), 0);
}

static void test_timers_fire_in_order_once(void **state)
{
    (void)state;
    reset_counts();
    struct gw_loop loop;
    assert_int_equal(gw_loop_init(&loop), 0);
    struct tagged_timer t[3];
    uint64_t now = gw_now_ms();
    static const int after[3] = {30, 10, 20};
    for (int i = 0; i < 3; i++) {
        t[i].id = i;
        gw_timer_init(&t[i].t, tagged_cb);
        assert_int_equal(gw_timer_arm(&loop, &t[i].t, now + (uint64_t)after[i]), 0);
        assert_true(gw_timer_armed(&t[i].t));
    }
    run_until_fired(&loop, 3);
    assert_int_equal(fire_count, 3);
    assert_int_equal(fire_order[0], 1);
    assert_int_equal(fire_order[1], 2);
    assert_int_equal(fire_order[2], 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(fired[i], 1);
        assert_false(gw_timer_armed(&t[i].t));
    }
    /* A cancelled timer never fires. */
    assert_int_equal(gw_timer_arm(&loop, &t[0].t, gw_now_ms() + 5), 0);
    gw_timer_cancel(&loop, &t[0].t);
    assert_false(gw_timer_armed(&t[0].t));
    assert_int_equal(gw_loop_run_once(&loop, 30), 0);
    assert_int_equal(fired[0], 1);
    gw_loop_deinit(&loop);
}

static void test_wake_is_delivered(void **state)
{
    (void)state;
    reset_counts();
    struct gw_loop loop;
    assert_int_equal(gw_loop_init(&loop), 0);
    loop.on_wake = on_wake;
    gw_loop_wake(&loop);
    gw_loop_wake(&loop); /* coalesced: one wake-up */
    /* Blocking wait: returns at once because the wake is pending. */
    assert_int_equal(gw_loop_run_once(&loop, -1), 0);
    assert_int_equal(wakes, 1);
    gw_loop_deinit(&loop);
}

/* poll_once: the next wait does not block even with an infinite timeout
 * (had it blocked, the 2 s timer would have fired in it), and the flag is
 * cleared so the wait after it blocks again, here until a timer is due. */
static void test_poll_once(void **state)
{
    (void)state;
    reset_counts();
    struct gw_loop loop;
    assert_int_equal(gw_loop_init(&loop), 0);
    struct tagged_timer far;
    far.id = 0;
    gw_timer_init(&far.t, tagged_cb);
    assert_int_equal(gw_timer_arm(&loop, &far.t, gw_now_ms() + 2000), 0);
    loop.poll_once = true;
    assert_int_equal(gw_loop_run_once(&loop, -1), 0);
    assert_false(loop.poll_once);
    assert_int_equal(fired[0], 0);

    struct tagged_timer near;
    near.id = 1;
    gw_timer_init(&near.t, tagged_cb);
    uint64_t due = gw_now_ms() + 20;
    assert_int_equal(gw_timer_arm(&loop, &near.t, due), 0);
    assert_int_equal(gw_loop_run_once(&loop, -1), 0); /* blocks until near is due */
    assert_int_equal(fired[1], 1);
    assert_true(gw_now_ms() >= due);
    gw_timer_cancel(&loop, &far.t);
    gw_loop_deinit(&loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timers_fire_in_order_once),
        cmocka_unit_test(test_wake_is_delivered),
        cmocka_unit_test(test_poll_once),
    };
    return cmocka_run_group_tests_name("loop", tests, NULL, NULL);
}
