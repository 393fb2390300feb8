/*
 * Reference-model tests of the sliding window and the token bucket
 * (src/rl_algo.c, SPEC.md §5.1). Each algorithm is also written here in a
 * different, obviously correct formulation: the sliding window from the
 * explicit timestamps of admitted requests, with Retry-After found by
 * letting the clock run millisecond by millisecond; the token bucket as a
 * level of tokens that refills continuously, instead of a theoretical
 * arrival time. Random arrival sequences (100,000 per algorithm, seed and
 * parameter set) go through both; every decision, remaining count, reset,
 * retry time and shaping delay must be identical.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gw/rl_algo.h"

#define ARRIVALS 100000

/* xorshift64*: a fixed, seedable sequence. */
static uint64_t rng_state;
static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static int64_t ceil_div(int64_t a, int64_t b)
{
    return a / b + (a % b != 0);
}

/* ---- sliding window: the reference ----------------------------------------- */

struct sliding_ref {
    int64_t L, W;
    int64_t *times; /* admitted request times, ascending */
    size_t n, cap;
};

/* Admitted requests in [from, to). */
static int64_t count_between(const struct sliding_ref *m, int64_t from, int64_t to)
{
    int64_t k = 0;
    for (size_t i = m->n; i-- > 0 && m->times[i] >= from;)
        k += m->times[i] < to;
    return k;
}

/* The estimate's test for one more request at t, from the timestamps. */
static bool ref_would_allow(const struct sliding_ref *m, int64_t t)
{
    int64_t i = t / m->W, e = t - i * m->W;
    int64_t c = count_between(m, i * m->W, t + 1);
    int64_t p = count_between(m, (i - 1) * m->W, i * m->W);
    return p * (m->W - e) + (c + 1) * m->W <= m->L * m->W;
}

static void ref_sliding(struct sliding_ref *m, int64_t now, struct gw_rl_result *out)
{
    int64_t W = m->W, L = m->L;
    int64_t i = now / W, e = now - i * W;
    int64_t c = count_between(m, i * W, now + 1);
    int64_t p = count_between(m, (i - 1) * W, i * W);
    memset(out, 0, sizeof(*out));
    out->allowed = p * (W - e) + (c + 1) * W <= L * W;
    if (out->allowed) {
        if (m->n == m->cap) {
            m->cap = m->cap ? 2 * m->cap : 1024;
            m->times = realloc(m->times, m->cap * sizeof(*m->times));
            assert_non_null(m->times);
        }
        m->times[m->n++] = now;
        c++;
    }
    /* remaining = how many more the estimate admits right now, counted
     * as floor of the leftover weight in whole requests. */
    int64_t left = L * W - p * (W - e) - c * W;
    out->info.remaining = left <= 0 ? 0 : left / W;
    out->info.limit = L;
    int64_t end = (i + 1) * W;
    out->info.reset_epoch_s = ceil_div(end, 1000);
    out->info.reset_after_s = ceil_div(end - now, 1000) < 1 ? 1 : ceil_div(end - now, 1000);
    out->info.window_s = ceil_div(W, 1000);
    if (!out->allowed) {
        int64_t t = now + 1;
        while (!ref_would_allow(m, t)) /* at most two windows away */
            t++;
        int64_t s = ceil_div(t - now, 1000);
        out->retry_after_s = s < 1 ? 1 : s;
    }
}

static void expect_same(const struct gw_rl_result *got, const struct gw_rl_result *want,
                        const char *algo, int64_t seed, long k, int64_t now)
{
    if (got->allowed != want->allowed || got->delay_us != want->delay_us ||
        got->retry_after_s != want->retry_after_s || got->info.limit != want->info.limit ||
        got->info.remaining != want->info.remaining ||
        got->info.reset_epoch_s != want->info.reset_epoch_s ||
        got->info.reset_after_s != want->info.reset_after_s ||
        got->info.window_s != want->info.window_s)
        fail_msg("%s seed %lld arrival %ld at %lld: got allowed=%d delay=%lld retry=%lld "
                 "rem=%lld reset=%lld t=%lld, want allowed=%d delay=%lld retry=%lld rem=%lld "
                 "reset=%lld t=%lld",
                 algo, (long long)seed, k, (long long)now, got->allowed, (long long)got->delay_us,
                 (long long)got->retry_after_s, (long long)got->info.remaining,
                 (long long)got->info.reset_epoch_s, (long long)got->info.reset_after_s,
                 want->allowed, (long long)want->delay_us, (long long)want->retry_after_s,
                 (long long)want->info.remaining, (long long)want->info.reset_epoch_s,
                 (long long)want->info.reset_after_s);
}

/* Runs ARRIVALS random arrivals (mean gap: mean_gap_ms) through the
 * algorithm with counters, as a store keeps them, and through the model. */
static void run_sliding(int64_t L, int64_t W, int64_t mean_gap_ms, uint64_t seed)
{
    rng_state = seed * 0x9e3779b97f4a7c15ull + 1;
    struct sliding_ref m = {.L = L, .W = W};
    int64_t now = 1700000000000 + (int64_t)(rng() % 100000);
    int64_t win = now / W, cur = 0, prev = 0; /* the store's two counters */
    long allowed = 0;
    for (long k = 0; k < ARRIVALS; k++) {
        now += (int64_t)(rng() % (uint64_t)(2 * mean_gap_ms + 1));
        int64_t i = now / W;
        if (i != win) { /* roll the counters as the store's keys expire */
            prev = i == win + 1 ? cur : 0;
            cur = 0;
            win = i;
        }
        struct gw_rl_result got, want;
        gw_rl_algo_sliding_window(L, W, now, prev, cur, &got);
        if (got.allowed) {
            cur++;
            allowed++;
        }
        ref_sliding(&m, now, &want);
        expect_same(&got, &want, "sliding_window", (int64_t)seed, k, now);
    }
    /* The run exercised both answers. */
    assert_true(allowed > ARRIVALS / 10 && allowed < ARRIVALS);
    free(m.times);
}

static void test_sliding_matches_reference(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 3; seed++) {
        run_sliding(10, 1000, 70, seed);  /* ~1.4 x the rate */
        run_sliding(3, 2000, 400, seed);  /* small limit, long window */
        run_sliding(100, 1500, 10, seed); /* a window that is not whole seconds */
        run_sliding(1, 1000, 600, seed);  /* one per window */
    }
}

/* ---- token bucket: the reference --------------------------------------------- */

/* Tokens as a level F in µs-units (one token = T units) that rises one unit
 * per µs up to B*T; a request takes T units. With delay it may borrow down to
 * -delay units and then waits until the level is back to zero. */
struct bucket_ref {
    int64_t T, B, delay_us;
    int64_t level; /* F at `at` */
    int64_t at;    /* µs */
};

static void ref_bucket(struct bucket_ref *m, int64_t L, int64_t W_ms, int64_t now,
                       struct gw_rl_result *out)
{
    int64_t cap = m->B * m->T;
    int64_t F = m->level + (now - m->at);
    if (F > cap)
        F = cap;
    memset(out, 0, sizeof(*out));
    out->info.limit = L;
    out->info.window_s = ceil_div(W_ms, 1000);
    out->allowed = F - m->T >= -m->delay_us;
    if (out->allowed) {
        out->delay_us = F >= m->T ? 0 : m->T - F;
        F -= m->T;
        out->info.remaining = F <= 0 ? 0 : F / m->T;
    } else {
        int64_t s = ceil_div(m->T - F, 1000000);
        out->retry_after_s = s < 1 ? 1 : s;
    }
    m->level = F;
    m->at = now;
    int64_t full = cap - F; /* µs until the level is back at the top */
    int64_t t = full > 0 ? ceil_div(full, 1000000) : 0;
    out->info.reset_after_s = t < 1 ? 1 : t;
    out->info.reset_epoch_s = now / 1000000 + out->info.reset_after_s;
}

static void run_bucket(int64_t L, int64_t B, int64_t W_ms, int64_t delay_ms, int64_t mean_gap_us,
                       uint64_t seed)
{
    rng_state = seed * 0xbf58476d1ce4e5b9ull + 7;
    int64_t T = gw_rl_algo_gcra_interval_us(L, W_ms);
    struct bucket_ref m = {.T = T, .B = B, .delay_us = delay_ms * 1000};
    int64_t now = 1700000000000000 + (int64_t)(rng() % 1000000);
    m.level = B * T; /* a new client's bucket is full */
    m.at = now;
    int64_t tat = 0;
    long allowed = 0, delayed = 0;
    for (long k = 0; k < ARRIVALS; k++) {
        now += (int64_t)(rng() % (uint64_t)(2 * mean_gap_us + 1));
        struct gw_rl_result got, want;
        int64_t next = -1;
        gw_rl_algo_gcra(L, B, W_ms, delay_ms, now, tat, &next, &got);
        if (!got.allowed)
            assert_int_equal(next, tat); /* a refusal changes nothing */
        tat = next;
        allowed += got.allowed;
        delayed += got.delay_us > 0;
        ref_bucket(&m, L, W_ms, now, &want);
        expect_same(&got, &want, delay_ms ? "token_bucket+delay" : "token_bucket", (int64_t)seed, k,
                    now);
    }
    assert_true(allowed > ARRIVALS / 10 && allowed < ARRIVALS);
    if (delay_ms)
        assert_true(delayed > 0);
}

static void test_bucket_matches_reference(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 3; seed++) {
        run_bucket(10, 10, 1000, 0, 70000, seed);   /* ~1.4 x the rate */
        run_bucket(10, 20, 1000, 0, 60000, seed);   /* burst above the rate */
        run_bucket(10, 20, 1000, 500, 60000, seed); /* shaping */
        run_bucket(3, 1, 60000, 0, 15000000, seed); /* slow rate, no burst */
        run_bucket(7, 5, 1000, 250, 100000, seed);  /* T not a whole ms: 142857 µs */
    }
}

/* ---- exact cases from SPEC.md §5.1 ------------------------------------------ */

static void test_sliding_exact(void **state)
{
    (void)state;
    struct gw_rl_result r;
    /* L=10, W=60 s, 30 s into window i with p=10 from window i-1 and c=4:
     * 10*30000 + 5*60000 = 600000 <= 600000: allowed, remaining 0. */
    int64_t start = 1700000040000; /* a multiple of 60,000 */
    assert_true(gw_rl_algo_sliding_window(10, 60000, start + 30000, 10, 4, &r));
    assert_int_equal(r.info.remaining, 0);
    assert_int_equal(r.info.reset_after_s, 30);
    assert_int_equal(r.info.reset_epoch_s, start / 1000 + 60);
    assert_int_equal(r.info.window_s, 60);
    /* The next one is refused; one request is back once p's weight falls
     * by one request's worth: 10*(60000 - e) + 6*60000 <= 600000 at e = 36 s. */
    assert_false(gw_rl_algo_sliding_window(10, 60000, start + 30000, 10, 5, &r));
    assert_int_equal(r.retry_after_s, 6);
    /* c = L: only the next window helps, where p = c = 10: e'' = 6 s. */
    assert_false(gw_rl_algo_sliding_window(10, 60000, start + 59000, 0, 10, &r));
    assert_int_equal(r.retry_after_s, 1 + 6);
}

static void test_gcra_exact(void **state)
{
    (void)state;
    struct gw_rl_result r;
    int64_t now = 1700000000000000, tat = 0, next;
    /* L=10 per 1 s, B=2: T = 100 ms; two pass at once, the third waits 100 ms. */
    assert_int_equal(gw_rl_algo_gcra_interval_us(10, 1000), 100000);
    assert_true(gw_rl_algo_gcra(10, 2, 1000, 0, now, tat, &next, &r));
    assert_int_equal(r.info.remaining, 1);
    assert_int_equal(r.info.limit, 10);
    tat = next;
    assert_true(gw_rl_algo_gcra(10, 2, 1000, 0, now, tat, &next, &r));
    assert_int_equal(r.info.remaining, 0);
    tat = next;
    assert_int_equal(tat, now + 200000);
    assert_false(gw_rl_algo_gcra(10, 2, 1000, 0, now, tat, &next, &r));
    assert_int_equal(next, tat);
    assert_int_equal(r.retry_after_s, 1); /* 100 ms, rounded up */
    assert_int_equal(r.info.reset_after_s, 1);
    /* With delay 150 ms the third is held 100 ms, the fourth 200 ms is too long. */
    assert_true(gw_rl_algo_gcra(10, 2, 1000, 150, now, tat, &next, &r));
    assert_int_equal(r.delay_us, 100000);
    tat = next;
    assert_false(gw_rl_algo_gcra(10, 2, 1000, 150, now, tat, &next, &r));
    /* A rate above one per µs still has T = 1 µs. */
    assert_int_equal(gw_rl_algo_gcra_interval_us(1000000000, 1), 1);
    /* Huge windows and bursts do not overflow. */
    assert_true(gw_rl_algo_gcra(1, 1000000000, (int64_t)86400000 * 366, 0, now, 0, &next, &r));
    assert_int_equal(r.info.remaining, 1000000000 - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sliding_exact),
        cmocka_unit_test(test_gcra_exact),
        cmocka_unit_test(test_sliding_matches_reference),
        cmocka_unit_test(test_bucket_matches_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
