/*
 * Unit tests of the fixed-window math (src/rl_algo.c): window index, edges,
 * reset-after, remaining and the allow rule, exactly at window boundaries,
 * with W = 1, with negative and very large times.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "gw/rl_algo.h"

static void test_index_floor(void **state)
{
    (void)state;
    assert_int_equal(gw_rl_algo_window_index(0, 60), 0);
    assert_int_equal(gw_rl_algo_window_index(59, 60), 0);
    assert_int_equal(gw_rl_algo_window_index(60, 60), 1);
    assert_int_equal(gw_rl_algo_window_index(119, 60), 1);
    assert_int_equal(gw_rl_algo_window_index(120, 60), 2);
    /* floor, not truncation, below zero */
    assert_int_equal(gw_rl_algo_window_index(-1, 60), -1);
    assert_int_equal(gw_rl_algo_window_index(-60, 60), -1);
    assert_int_equal(gw_rl_algo_window_index(-61, 60), -2);
}

static void test_window_edges(void **state)
{
    (void)state;
    const int64_t W = 60, base = 1700000040; /* a multiple of 60 */
    struct gw_rl_window w = gw_rl_algo_window(base, W);
    assert_int_equal(w.start_s, base);
    assert_int_equal(w.end_s, base + W);
    assert_int_equal(w.index, base / W);

    /* last second of the window still belongs to it */
    w = gw_rl_algo_window(base + W - 1, W);
    assert_int_equal(w.start_s, base);
    assert_int_equal(w.end_s, base + W);

    /* the end instant is the first second of the next window */
    w = gw_rl_algo_window(base + W, W);
    assert_int_equal(w.start_s, base + W);
    assert_int_equal(w.end_s, base + 2 * W);
    assert_int_equal(w.index, base / W + 1);
}

static void test_reset_after_edges(void **state)
{
    (void)state;
    const int64_t W = 60, base = 1700000040;
    assert_int_equal(gw_rl_algo_reset_after(base, W), 60);
    assert_int_equal(gw_rl_algo_reset_after(base + 1, W), 59);
    assert_int_equal(gw_rl_algo_reset_after(base + 59, W), 1);
    assert_int_equal(gw_rl_algo_reset_after(base + 60, W), 60);
    for (int64_t t = base; t < base + 2 * W; t++) {
        int64_t r = gw_rl_algo_reset_after(t, W);
        assert_in_range(r, 1, W);
        assert_int_equal((t + r) % W, 0); /* lands exactly on an edge */
    }
}

static void test_window_of_one_second(void **state)
{
    (void)state;
    for (int64_t t = 1700000000; t < 1700000010; t++) {
        struct gw_rl_window w = gw_rl_algo_window(t, 1);
        assert_int_equal(w.index, t);
        assert_int_equal(w.start_s, t);
        assert_int_equal(w.end_s, t + 1);
        assert_int_equal(gw_rl_algo_reset_after(t, 1), 1);
    }
}

static void test_large_times(void **state)
{
    (void)state;
    /* 9999-12-31T23:59:59Z with a 1-day window */
    const int64_t t = 253402300799, W = 86400;
    struct gw_rl_window w = gw_rl_algo_window(t, W);
    assert_int_equal(w.end_s, 253402300800);
    assert_int_equal(w.start_s, 253402300800 - 86400);
    assert_int_equal(gw_rl_algo_reset_after(t, W), 1);

    /* near INT64_MAX the end saturates instead of overflowing */
    const int64_t big = INT64_MAX - 3, W2 = 1000;
    w = gw_rl_algo_window(big, W2);
    assert_true(w.start_s <= big);
    assert_true(big - w.start_s < W2);
    assert_int_equal(w.end_s, INT64_MAX);
    assert_in_range(gw_rl_algo_reset_after(big, W2), 1, W2);
}

static void test_remaining_and_allowed(void **state)
{
    (void)state;
    assert_int_equal(gw_rl_algo_remaining(5, 1), 4);
    assert_int_equal(gw_rl_algo_remaining(5, 5), 0);
    assert_int_equal(gw_rl_algo_remaining(5, 6), 0);
    assert_int_equal(gw_rl_algo_remaining(5, 1000), 0);
    assert_int_equal(gw_rl_algo_remaining(0, 1), 0);
    assert_true(gw_rl_algo_allowed(1, 5));
    assert_true(gw_rl_algo_allowed(5, 5));
    assert_false(gw_rl_algo_allowed(6, 5));
    assert_false(gw_rl_algo_allowed(1, 0)); /* limit 0 blocks everything */
}

static void test_fixed_window_decision(void **state)
{
    (void)state;
    const int64_t W = 10, t = 1700000005; /* 5 s into a window ending at ...010 */
    struct gw_rl_info info;
    for (int64_t n = 1; n <= 3; n++) {
        assert_true(gw_rl_algo_fixed_window(n, 3, t, W, &info));
        assert_int_equal(info.limit, 3);
        assert_int_equal(info.remaining, 3 - n);
        assert_int_equal(info.reset_epoch_s, 1700000010);
        assert_int_equal(info.reset_after_s, 5);
        assert_int_equal(info.window_s, W);
    }
    assert_false(gw_rl_algo_fixed_window(4, 3, t, W, &info));
    assert_int_equal(info.remaining, 0);
    assert_int_equal(info.reset_epoch_s, 1700000010);
    assert_int_equal(info.reset_after_s, 5);

    /* at the edge itself the reset jumps a full window ahead */
    assert_true(gw_rl_algo_fixed_window(1, 3, 1700000010, W, &info));
    assert_int_equal(info.reset_epoch_s, 1700000020);
    assert_int_equal(info.reset_after_s, 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_index_floor),           cmocka_unit_test(test_window_edges),
        cmocka_unit_test(test_reset_after_edges),     cmocka_unit_test(test_window_of_one_second),
        cmocka_unit_test(test_large_times),           cmocka_unit_test(test_remaining_and_allowed),
        cmocka_unit_test(test_fixed_window_decision),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
