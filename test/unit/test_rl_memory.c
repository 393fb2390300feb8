/*
 * Unit tests of the in-process store (src/rl_memory.c): counting, lazy
 * expiry when the injected clock crosses a window edge, exact totals under
 * four concurrent threads, the per-shard memory bound with its eviction
 * order (expired entries before live ones, then the oldest), growth that
 * keeps counts, and the byte bound under a flood of distinct clients.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ratelimit_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int64_t incr(struct gw_rl_memory *m, const char *key, int64_t window_s, int64_t now_s)
{
    int64_t n = -1;
    assert_int_equal(gw_rl_memory_incr(m, key, strlen(key), window_s, now_s, &n), 0);
    return n;
}

static void test_counts_per_key(void **state)
{
    (void)state;
    struct gw_rl_memory *m;
    assert_int_equal(gw_rl_memory_create(&m, 0), 0);
    for (int64_t i = 1; i <= 10; i++)
        assert_int_equal(incr(m, "alpha", 60, 1700000000), i);
    assert_int_equal(incr(m, "beta", 60, 1700000000), 1);
    assert_int_equal(incr(m, "alpha", 60, 1700000001), 11);
    /* keys are bytes, not C strings: an embedded NUL makes another key */
    int64_t n;
    assert_int_equal(gw_rl_memory_incr(m, "alpha\0x", 7, 60, 1700000000, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(gw_rl_memory_entries(m), 3);
    gw_rl_memory_destroy(m);
}

static void test_expiry_at_window_change(void **state)
{
    (void)state;
    struct gw_rl_memory *m;
    assert_int_equal(gw_rl_memory_create(&m, 0), 0);
    const int64_t W = 10, base = 1700000000; /* multiple of 10 */
    assert_int_equal(incr(m, "k", W, base), 1);
    assert_int_equal(incr(m, "k", W, base + 5), 2);
    assert_int_equal(incr(m, "k", W, base + W - 1), 3); /* last second, same window */
    assert_int_equal(incr(m, "k", W, base + W), 1);     /* the edge opens a new window */
    assert_int_equal(incr(m, "k", W, base + W + 1), 2);
    /* a racing worker whose clock read the previous second is counted in
     * the newer window, never resetting it */
    assert_int_equal(incr(m, "k", W, base + W - 1), 3);
    /* skipping several windows also resets */
    assert_int_equal(incr(m, "k", W, base + 10 * W + 3), 1);
    /* the expired entry was reused, not duplicated */
    assert_int_equal(gw_rl_memory_entries(m), 1);
    gw_rl_memory_destroy(m);
}

/* A pass of one unit with a fixed-window rate of L = 2 per 10 s and a
 * token bucket of 1 per second with burst 1, decided at now_us. */
static enum gw_rl_unit_result apply_two(struct gw_rl_memory *m, int64_t now_us, int64_t *fw_count)
{
    static const char *const keys[] = {"rl:{a}:l:fw", "rl:{a}:l:tb"};
    static const size_t lens[] = {11, 11};
    struct gw_rl_spec specs[] = {
        {.algorithm = GW_RL_FIXED_WINDOW, .limit = 2, .window_ms = 10000},
        {.algorithm = GW_RL_TOKEN_BUCKET, .limit = 1, .window_ms = 1000, .burst = 1}};
    struct gw_rl_op ops[] = {{.key = 0, .spec = 0}, {.key = 1, .spec = 1}};
    struct gw_rl_unit unit = {.first = 0, .n = 2};
    struct gw_rl_pass p = {.keys = keys,
                           .key_lens = lens,
                           .nkeys = 2,
                           .specs = specs,
                           .nspecs = 2,
                           .ops = ops,
                           .nops = 2,
                           .units = &unit,
                           .nunits = 1};
    assert_int_equal(gw_rl_memory_apply(m, &p, now_us), 0);
    assert_int_equal(p.now_us, now_us);
    *fw_count = ops[0].a;
    return unit.result;
}

/* Check all, then commit only if all allow: the token bucket refusing
 * leaves the fixed window's count where it was. */
static void test_apply_all_or_nothing(void **state)
{
    (void)state;
    struct gw_rl_memory *m;
    assert_int_equal(gw_rl_memory_create(&m, 0), 0);
    int64_t base = INT64_C(1700000000000000), n = -1; /* a 10 s window edge, in µs */
    assert_int_equal(apply_two(m, base, &n), GW_RL_UNIT_ALLOWED);
    assert_int_equal(n, 0);
    /* 0.5 s later the bucket has no token: refused, nothing counted */
    assert_int_equal(apply_two(m, base + 500000, &n), GW_RL_UNIT_REFUSED);
    assert_int_equal(n, 1);
    assert_int_equal(apply_two(m, base + 600000, &n), GW_RL_UNIT_REFUSED);
    assert_int_equal(n, 1);
    /* a token is back at 1 s: allowed, the window now holds 2 */
    assert_int_equal(apply_two(m, base + 1000000, &n), GW_RL_UNIT_ALLOWED);
    assert_int_equal(n, 1);
    /* the window is full: refused even with a token */
    assert_int_equal(apply_two(m, base + 2000000, &n), GW_RL_UNIT_REFUSED);
    assert_int_equal(n, 2);
    /* the next window starts empty */
    assert_int_equal(apply_two(m, base + 10000000, &n), GW_RL_UNIT_ALLOWED);
    assert_int_equal(n, 0);
    assert_int_equal(gw_rl_memory_ops.ping(m), 0);
    gw_rl_memory_ops.destroy(m);
}

/* incr_by: k requests in one call are numbered like k single calls, in a
 * new entry, an existing one and one whose window just ended; the count
 * saturates instead of wrapping; incr < 1 is refused. */
static void test_incr_by_matches_single_increments(void **state)
{
    (void)state;
    struct gw_rl_memory *m;
    assert_int_equal(gw_rl_memory_create(&m, 0), 0);
    const int64_t W = 10, base = 1700000000;
    int64_t n = 0;
    assert_int_equal(gw_rl_memory_incr_by(m, "a", 1, 3, W, base, &n), 0); /* new: 1..3 */
    assert_int_equal(n, 3);
    assert_int_equal(incr(m, "a", W, base + 1), 4);
    assert_int_equal(gw_rl_memory_incr_by(m, "a", 1, 5, W, base + 2, &n), 0); /* 5..9 */
    assert_int_equal(n, 9);
    assert_int_equal(gw_rl_memory_incr_by(m, "a", 1, 2, W, base + W, &n), 0); /* new window */
    assert_int_equal(n, 2);
    assert_int_equal(gw_rl_memory_entries(m), 1);
    assert_int_equal(gw_rl_memory_incr_by(m, "a", 1, 0, W, base + W, &n), -EINVAL);
    assert_int_equal(gw_rl_memory_incr_by(m, "a", 1, -1, W, base + W, &n), -EINVAL);
    /* saturation at UINT32_MAX (four billion requests in one window) */
    assert_int_equal(gw_rl_memory_incr_by(m, "s", 1, (int64_t)UINT32_MAX - 1, W, base, &n), 0);
    assert_int_equal(n, (int64_t)UINT32_MAX - 1);
    assert_int_equal(gw_rl_memory_incr_by(m, "s", 1, 5, W, base, &n), 0);
    assert_int_equal(n, (int64_t)UINT32_MAX);
    assert_int_equal(gw_rl_memory_incr_by(m, "t", 1, INT64_MAX, W, base, &n), 0);
    assert_int_equal(n, (int64_t)UINT32_MAX);
    gw_rl_memory_destroy(m);
}

/* ---- concurrency ---------------------------------------------------------- */

#define THREADS    4
#define PER_THREAD 20000
#define OWN_KEYS   50

struct worker_arg {
    struct gw_rl_memory *m;
    int id;
    unsigned char *seen; /* THREADS * PER_THREAD + 1 flags, one per n of the shared key */
    int failures;
};

static void *hammer(void *p)
{
    struct worker_arg *a = p;
    char own[32];
    for (int i = 0; i < PER_THREAD; i++) {
        int64_t n = 0;
        if (gw_rl_memory_incr(a->m, "shared", 6, 60, 1700000000, &n) != 0 || n < 1 ||
            n > THREADS * PER_THREAD)
            a->failures++;
        else
            a->seen[n] = 1; /* distinct n per call: each slot written by one thread */
        /* keys of this thread only, spread over many shards */
        int len = snprintf(own, sizeof(own), "t%d-k%d", a->id, i % OWN_KEYS);
        if (gw_rl_memory_incr(a->m, own, (size_t)len, 60, 1700000000, &n) != 0 ||
            n != i / OWN_KEYS + 1)
            a->failures++;
    }
    return NULL;
}

static void test_concurrent_exact_totals(void **state)
{
    (void)state;
    struct gw_rl_memory *m;
    assert_int_equal(gw_rl_memory_create(&m, 0), 0);
    unsigned char *seen = calloc(THREADS * PER_THREAD + 1, 1);
    assert_non_null(seen);
    pthread_t th[THREADS];
    struct worker_arg args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (struct worker_arg){.m = m, .id = i, .seen = seen};
        assert_int_equal(pthread_create(&th[i], NULL, hammer, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(args[i].failures, 0);
    }
    /* every request number 1..N was handed out exactly once */
    for (int n = 1; n <= THREADS * PER_THREAD; n++)
        assert_int_equal(seen[n], 1);
    assert_int_equal(incr(m, "shared", 60, 1700000000), THREADS * PER_THREAD + 1);
    assert_int_equal(gw_rl_memory_entries(m), 1 + THREADS * OWN_KEYS);
    free(seen);
    gw_rl_memory_destroy(m);
}

/* ---- memory bound and eviction -------------------------------------------- */

static void test_bound_holds(void **state)
{
    (void)state;
    struct gw_rl_memory *m;
    assert_int_equal(gw_rl_memory_create(&m, GW_RL_MEMORY_SHARDS * 4), 0);
    assert_int_equal(gw_rl_memory_shard_cap(m), 4);
    char key[32];
    for (int i = 0; i < 20000; i++) {
        int len = snprintf(key, sizeof(key), "client-%d", i);
        int64_t n;
        assert_int_equal(gw_rl_memory_incr(m, key, (size_t)len, 60, 1700000000, &n), 0);
        assert_int_equal(n, 1);
        assert_true(gw_rl_memory_entries(m) <= GW_RL_MEMORY_SHARDS * 4);
    }
    assert_int_equal(gw_rl_memory_entries(m), GW_RL_MEMORY_SHARDS * 4);
    gw_rl_memory_destroy(m);
}

/* Finds count keys that share shard 0, written as "s0-<i>" into keys. */
static void keys_in_one_shard(const struct gw_rl_memory *m, char keys[][16], int count)
{
    int found = 0;
    for (int i = 0; found < count && i < 1000000; i++) {
        char k[16];
        int len = snprintf(k, sizeof(k), "s0-%d", i);
        if (gw_rl_memory_shard_of(m, k, (size_t)len) == 0)
            memcpy(keys[found++], k, sizeof(k));
    }
    assert_int_equal(found, count);
}

static void test_eviction_order(void **state)
{
    (void)state;
    struct gw_rl_memory *m;
    assert_int_equal(gw_rl_memory_create(&m, GW_RL_MEMORY_SHARDS * 4), 0);
    char k[8][16];
    keys_in_one_shard(m, k, 8);
    const char *A = k[0], *B = k[1], *C = k[2], *D = k[3];
    const char *E = k[4], *F = k[5], *G = k[6], *H = k[7];
    const int64_t W = 10, t0 = 1700000000, t1 = t0 + W;

    /* window 0 fills the shard */
    assert_int_equal(incr(m, A, W, t0), 1);
    assert_int_equal(incr(m, B, W, t0), 1);
    assert_int_equal(incr(m, C, W, t0), 1);
    assert_int_equal(incr(m, D, W, t0), 1);
    assert_int_equal(gw_rl_memory_entries(m), 4);

    /* window 1: A comes back first, so it is live and the newest */
    assert_int_equal(incr(m, A, W, t1), 1);
    /* E, F, G take the expired slots of B, C, D, not A's although A was
     * inserted first */
    assert_int_equal(incr(m, E, W, t1), 1);
    assert_int_equal(incr(m, F, W, t1), 1);
    assert_int_equal(incr(m, G, W, t1), 1);
    assert_int_equal(gw_rl_memory_entries(m), 4);
    assert_int_equal(incr(m, A, W, t1), 2);
    assert_int_equal(incr(m, E, W, t1), 2);
    assert_int_equal(incr(m, F, W, t1), 2);
    assert_int_equal(incr(m, G, W, t1), 2);

    /* nothing is expired now: H evicts the oldest live entry, A */
    assert_int_equal(incr(m, H, W, t1), 1);
    assert_int_equal(gw_rl_memory_entries(m), 4);
    assert_int_equal(incr(m, E, W, t1), 3);
    assert_int_equal(incr(m, F, W, t1), 3);
    assert_int_equal(incr(m, G, W, t1), 3);
    assert_int_equal(incr(m, H, W, t1), 2);
    /* A was forgotten: counted from 1 again (evicting E, now the oldest) */
    assert_int_equal(incr(m, A, W, t1), 1);
    assert_int_equal(incr(m, E, W, t1), 1);
    assert_int_equal(gw_rl_memory_entries(m), 4);
    gw_rl_memory_destroy(m);
}

/* Pools and bucket arrays grow in steps (relinking every chain); counts
 * survive each step, and the bytes held never pass the stated bound. */
static void test_growth_keeps_counts(void **state)
{
    (void)state;
    struct gw_rl_memory *m;
    const size_t cap = GW_RL_MEMORY_SHARDS * 512;
    assert_int_equal(gw_rl_memory_create(&m, cap), 0);
    size_t idle = gw_rl_memory_bytes(m);
    assert_true(idle < 64 * 1024); /* an idle store is small */
    char key[32];
    const int N = 20000; /* ~312 per shard: several doublings, no eviction */
    for (int round = 1; round <= 2; round++) {
        for (int i = 0; i < N; i++) {
            int len = snprintf(key, sizeof(key), "grow-%d", i);
            int64_t n = 0;
            assert_int_equal(gw_rl_memory_incr(m, key, (size_t)len, 60, 1700000000, &n), 0);
            if (n != round)
                fail_msg("key %s: count %lld in round %d", key, (long long)n, round);
        }
        assert_true(gw_rl_memory_bytes(m) <= gw_rl_memory_max_bytes(cap));
    }
    assert_int_equal(gw_rl_memory_entries(m), N);
    assert_true(gw_rl_memory_bytes(m) > idle);
    gw_rl_memory_destroy(m);
}

/* A flood of distinct clients fills the store to its cap and no further:
 * the bytes held are exactly the stated bound, whatever the flood size. */
static void test_flood_stays_at_bound(void **state)
{
    (void)state;
    const size_t cap = GW_RL_MEMORY_SHARDS * 256;
    struct gw_rl_memory *m;
    assert_int_equal(gw_rl_memory_create(&m, cap), 0);
    char key[32];
    for (int i = 0; i < 200000; i++) {
        int len = snprintf(key, sizeof(key), "flood-%d", i);
        int64_t n;
        assert_int_equal(gw_rl_memory_incr(m, key, (size_t)len, 60, 1700000000, &n), 0);
        assert_int_equal(n, 1);
    }
    assert_int_equal(gw_rl_memory_entries(m), cap);
    assert_int_equal(gw_rl_memory_bytes(m), gw_rl_memory_max_bytes(cap));
    gw_rl_memory_destroy(m);

    /* The default: a million state keys per window in 52 bytes each. */
    assert_int_equal(GW_RL_MEMORY_DEFAULT_ENTRIES, 1048576);
    size_t max = gw_rl_memory_max_bytes(0);
    assert_true(max >= (size_t)GW_RL_MEMORY_DEFAULT_ENTRIES * 52);
    assert_true(max <= (size_t)GW_RL_MEMORY_DEFAULT_ENTRIES * 52 + 64 * 1024);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts_per_key),
        cmocka_unit_test(test_expiry_at_window_change),
        cmocka_unit_test(test_apply_all_or_nothing),
        cmocka_unit_test(test_incr_by_matches_single_increments),
        cmocka_unit_test(test_concurrent_exact_totals),
        cmocka_unit_test(test_bound_holds),
        cmocka_unit_test(test_eviction_order),
        cmocka_unit_test(test_growth_keeps_counts),
        cmocka_unit_test(test_flood_stays_at_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
