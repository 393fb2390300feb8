/*
 * The stores against reference models (SPEC.md §5.1, issue 12): seeded
 * random arrival sequences go through the in-process store
 * (gw_rl_memory_apply, clock injected) and through a reference written
 * here in another formulation: the fixed and sliding windows from the
 * explicit timestamps of admitted requests (Retry-After found by letting
 * the clock run millisecond by millisecond), the token bucket as a level of
 * tokens that refills continuously instead of a theoretical arrival time.
 * Several clients share one store, units of two rates of different
 * algorithms are all-or-nothing (the reference checks both, then commits
 * both only if both allow), and a pass sometimes carries several units at
 * one instant. For every op the state the store decided on, the unit's
 * verdict and the result the limiter computes from that state with rl_algo
 * (decision, remaining, reset, Retry-After in s and ms, shaping delay) must
 * equal the reference's.
 *
 * The same sequences then go through the Redis store (gw_rl_redis_apply,
 * one Lua script, Redis TIME) on a redis-server whose wall clock the test
 * sets to the microsecond (test/support/preload/fakeclock.c, an LD_PRELOAD
 * shim; libfaketime cannot start Debian's jemalloc-linked redis-server), and
 * Redis, the memory store and the reference must agree at every instant.
 * The Redis clock the store reports (pass->now_us) is the clock of the
 * other two, and must equal the instant the test set.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "gw/rl_algo.h"
#include "gwtest.h"
#include "ratelimit_int.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MEMORY_ARRIVALS 100000 /* per scenario and seed, memory store */
#define REDIS_ARRIVALS  2500   /* per scenario and seed, Redis store (a round trip each) */
#define SEEDS           3
#define MAX_RATES       2
#define MAX_CLIENTS     4
#define MAX_UNITS       3 /* units in one pass (arrivals at one instant) */

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

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

/* ---- scenarios ---------------------------------------------------------------- */

struct scenario {
    const char *name;
    int nrates;
    struct gw_rl_spec rates[MAX_RATES];
    int nclients;
    int64_t mean_gap_us; /* between arrivals of all clients together */
};

static const struct scenario scenarios[] = {
    {"fixed_window", 1, {{GW_RL_FIXED_WINDOW, 10, 1000, 0, 0}}, 3, 25000},
    {"fixed_window 1.5 s", 1, {{GW_RL_FIXED_WINDOW, 3, 1500, 0, 0}}, 2, 150000},
    {"sliding_window", 1, {{GW_RL_SLIDING_WINDOW, 10, 1000, 0, 0}}, 3, 25000},
    {"sliding_window 1.5 s", 1, {{GW_RL_SLIDING_WINDOW, 100, 1500, 0, 0}}, 2, 5000},
    {"sliding_window L=1", 1, {{GW_RL_SLIDING_WINDOW, 1, 1000, 0, 0}}, 1, 600000},
    {"token_bucket", 1, {{GW_RL_TOKEN_BUCKET, 10, 1000, 10, 0}}, 3, 25000},
    {"token_bucket burst 20", 1, {{GW_RL_TOKEN_BUCKET, 10, 1000, 20, 0}}, 2, 30000},
    {"token_bucket delay", 1, {{GW_RL_TOKEN_BUCKET, 10, 1000, 20, 500}}, 2, 30000},
    {"token_bucket T=142857us", 1, {{GW_RL_TOKEN_BUCKET, 7, 1000, 5, 250}}, 1, 100000},
    {"sliding+token_bucket unit",
     2,
     {{GW_RL_SLIDING_WINDOW, 10, 1000, 0, 0}, {GW_RL_TOKEN_BUCKET, 4, 1000, 6, 0}},
     3,
     40000},
    {"fixed+token_bucket unit",
     2,
     {{GW_RL_FIXED_WINDOW, 8, 2000, 0, 0}, {GW_RL_TOKEN_BUCKET, 5, 1000, 3, 200}},
     2,
     60000},
    {"fixed+sliding unit",
     2,
     {{GW_RL_FIXED_WINDOW, 12, 1000, 0, 0}, {GW_RL_SLIDING_WINDOW, 20, 3000, 0, 0}},
     2,
     30000},
};

/* ---- the reference ------------------------------------------------------------ */

/* One client's state under one rate. Windows: the times (ms) of admitted
 * requests, ascending, from `from` on (older ones are of no use). Bucket: a
 * level F in µs-units (one token = T units) at instant `at`, rising one unit
 * per µs up to B*T; a request takes T units, and with delay may borrow down
 * to -delay units (it then waits until the level is back at zero). */
struct ref {
    int64_t *times;
    size_t from, n, cap;
    bool started;
    int64_t level, at;
};

/* Admitted requests in [lo, hi) (ms). */
static int64_t ref_count(const struct ref *m, int64_t lo, int64_t hi)
{
    int64_t k = 0;
    for (size_t i = m->n; i-- > m->from && m->times[i] >= lo;)
        k += m->times[i] < hi;
    return k;
}

/* What the reference says about one more request at now_us; st_a/st_b get
 * the state it is decided on in the store's terms (fixed: count; sliding:
 * previous, current; bucket: the effective TAT, max(TAT, now)). The result
 * is what the limiter shows for this rate alone: remaining as if it were
 * counted when it is allowed. */
static void ref_check(const struct gw_rl_spec *sp, struct ref *m, int64_t now_us,
                      struct gw_rl_result *out, int64_t *st_a, int64_t *st_b)
{
    memset(out, 0, sizeof(*out));
    out->info.limit = sp->limit;
    out->info.window_s = ceil_div(sp->window_ms, 1000);
    *st_a = *st_b = 0;
    if (sp->algorithm == GW_RL_TOKEN_BUCKET) {
        int64_t T = sp->window_ms * 1000 / sp->limit;
        if (T < 1)
            T = 1;
        int64_t cap = sp->burst * T;
        int64_t F = m->started ? m->level + (now_us - m->at) : cap;
        if (F > cap)
            F = cap;
        *st_a = now_us + (cap - F); /* the instant the level is full again */
        out->allowed = F - T >= -sp->delay_ms * 1000;
        int64_t after = F;
        if (out->allowed) {
            out->delay_us = F >= T ? 0 : T - F;
            after = F - T;
            out->info.remaining = after <= 0 ? 0 : after / T;
        } else {
            int64_t wait = T - F; /* until one token is back: Retry-After */
            out->retry_after_s = ceil_div(wait, 1000000) < 1 ? 1 : ceil_div(wait, 1000000);
            /* Until a request passes at all: with delay, once the level is
             * back at T - delay (it is then held); the over-limit cache
             * keeps the client this long. */
            int64_t pass = wait - sp->delay_ms * 1000;
            out->retry_after_ms = ceil_div(pass, 1000) < 1 ? 1 : ceil_div(pass, 1000);
        }
        int64_t full = cap - after;
        int64_t t = full > 0 ? ceil_div(full, 1000000) : 0;
        out->info.reset_after_s = t < 1 ? 1 : t;
        out->info.reset_epoch_s = floor_div(now_us, 1000000) + out->info.reset_after_s;
        return;
    }
    int64_t L = sp->limit, W = sp->window_ms, now = floor_div(now_us, 1000);
    int64_t i = floor_div(now, W), e = now - i * W, end = (i + 1) * W;
    int64_t c = ref_count(m, i * W, end);
    out->info.reset_epoch_s = ceil_div(end, 1000);
    out->info.reset_after_s = ceil_div(end - now, 1000) < 1 ? 1 : ceil_div(end - now, 1000);
    if (sp->algorithm == GW_RL_FIXED_WINDOW) {
        *st_a = c;
        out->allowed = c + 1 <= L;
        int64_t after = out->allowed ? c + 1 : c;
        out->info.remaining = after >= L ? 0 : L - after;
        if (!out->allowed) {
            out->retry_after_ms = end - now;
            out->retry_after_s = out->info.reset_after_s;
        }
        return;
    }
    int64_t p = ref_count(m, (i - 1) * W, i * W);
    *st_a = p;
    *st_b = c;
    out->allowed = p * (W - e) + (c + 1) * W <= L * W;
    int64_t after = out->allowed ? c + 1 : c;
    int64_t left = L * W - p * (W - e) - after * W;
    out->info.remaining = left <= 0 ? 0 : left / W;
    if (!out->allowed) {
        /* Let the clock run, one ms at a time, with no other arrival: in
         * window i the counts stay, from window i+1 on the current one is
         * the previous. At most two windows away. */
        int64_t t = now + 1;
        for (;; t++) {
            int64_t j = floor_div(t, W), ej = t - j * W;
            int64_t pj = j == i ? p : j == i + 1 ? c : 0, cj = j == i ? c : 0;
            if (pj * (W - ej) + (cj + 1) * W <= L * W)
                break;
            assert_true(t < now + 2 * W + 1);
        }
        out->retry_after_ms = t - now;
        out->retry_after_s = ceil_div(t - now, 1000);
    }
}

/* Counts one admitted request at now_us. */
static void ref_commit(const struct gw_rl_spec *sp, struct ref *m, int64_t now_us)
{
    if (sp->algorithm == GW_RL_TOKEN_BUCKET) {
        int64_t T = sp->window_ms * 1000 / sp->limit;
        if (T < 1)
            T = 1;
        int64_t cap = sp->burst * T;
        int64_t F = m->started ? m->level + (now_us - m->at) : cap;
        m->level = (F > cap ? cap : F) - T;
        m->at = now_us;
        m->started = true;
        return;
    }
    int64_t now = floor_div(now_us, 1000);
    if (m->n == m->cap) {
        /* Drop what lies before the previous window, then grow. */
        int64_t keep = (floor_div(now, sp->window_ms) - 1) * sp->window_ms;
        size_t k = m->from;
        while (k < m->n && m->times[k] < keep)
            k++;
        if (k > 0)
            memmove(m->times, m->times + k, (m->n - k) * sizeof(*m->times));
        m->n -= k;
        m->from = 0;
        if (m->n == m->cap) {
            m->cap = m->cap ? 2 * m->cap : 256;
            m->times = realloc(m->times, m->cap * sizeof(*m->times));
            assert_non_null(m->times);
        }
    }
    m->times[m->n++] = now;
}

/* ---- a run: the sequence, the stores, the comparison -------------------------- */

struct run {
    const struct scenario *sc;
    uint64_t seed;
    struct ref refs[MAX_CLIENTS][MAX_RATES];
    char keys[MAX_CLIENTS][MAX_RATES][64];
    const char *kptr[MAX_CLIENTS * MAX_RATES];
    size_t klen[MAX_CLIENTS * MAX_RATES];
    int64_t now_us;
    /* tallies */
    long arrivals, allowed, refused, delayed, passes;
    long partial; /* units refused by one rate while another would allow */
};

static void run_init(struct run *r, const struct scenario *sc, uint64_t seed, const char *prefix)
{
    memset(r, 0, sizeof(*r));
    r->sc = sc;
    r->seed = seed;
    rng_state = seed * 0x9e3779b97f4a7c15ull + 0x1234567;
    for (int c = 0; c < sc->nclients; c++)
        for (int k = 0; k < sc->nrates; k++) {
            snprintf(r->keys[c][k], sizeof(r->keys[c][k]), "%s:{c%d}:limit:%d", prefix, c, k);
            r->kptr[c * sc->nrates + k] = r->keys[c][k];
            r->klen[c * sc->nrates + k] = strlen(r->keys[c][k]);
        }
    /* Start at some instant in 2026, not on a window edge. */
    r->now_us = 1767225600000000 + (int64_t)(rng() % 10000000000ull);
}

static void run_free(struct run *r)
{
    for (int c = 0; c < MAX_CLIENTS; c++)
        for (int k = 0; k < MAX_RATES; k++)
            free(r->refs[c][k].times);
}

/* The next instant: a random gap (0 included, so some arrivals share an
 * instant), and now and then, when the next edge of the first rate's
 * window is near, exactly on it or 1 µs / 1 ms before it, where the
 * algorithms change their mind. */
static int64_t next_instant(struct run *r)
{
    uint64_t x = rng();
    int64_t span = 2 * r->sc->mean_gap_us + 1;
    int64_t t = r->now_us + (int64_t)(x % (uint64_t)span);
    if ((x >> 40) % 16 == 0) {
        int64_t W = r->sc->rates[0].window_ms * 1000;
        int64_t edge = (floor_div(r->now_us, W) + 1) * W;
        int64_t back[] = {0, 1, 1000};
        int64_t e = edge - back[(x >> 50) % 3];
        if (e >= r->now_us && e - r->now_us < span)
            t = e;
    }
    return t;
}

/* One pass: n units (client picks[u]), each of every rate of the
 * scenario. */
struct pass_buf {
    struct gw_rl_op ops[MAX_UNITS * MAX_RATES];
    struct gw_rl_unit units[MAX_UNITS];
    struct gw_rl_pass pass;
};

static void pass_build(struct run *r, struct pass_buf *b, const int picks[], int n)
{
    memset(b, 0, sizeof(*b));
    int o = 0;
    for (int u = 0; u < n; u++) {
        b->units[u].first = (uint16_t)o;
        b->units[u].n = (uint16_t)r->sc->nrates;
        for (int k = 0; k < r->sc->nrates; k++, o++) {
            b->ops[o].key = (uint16_t)(picks[u] * r->sc->nrates + k);
            b->ops[o].spec = (uint16_t)k;
        }
    }
    b->pass.mode = GW_RL_PASS_DECIDE;
    b->pass.keys = r->kptr;
    b->pass.key_lens = r->klen;
    b->pass.nkeys = (size_t)(r->sc->nclients * r->sc->nrates);
    b->pass.specs = r->sc->rates;
    b->pass.nspecs = (size_t)r->sc->nrates;
    b->pass.ops = b->ops;
    b->pass.nops = (size_t)o;
    b->pass.units = b->units;
    b->pass.nunits = (size_t)n;
}

/* The limiter's math (ratelimit.c op_result) on the state op was decided on. */
static void op_result(const struct gw_rl_spec *sp, const struct gw_rl_op *op, int64_t now_us,
                      struct gw_rl_result *out)
{
    int64_t now_ms = floor_div(now_us, 1000), tat;
    if (sp->algorithm == GW_RL_TOKEN_BUCKET)
        gw_rl_algo_gcra(sp->limit, sp->burst, sp->window_ms, sp->delay_ms, now_us, op->a, &tat,
                        out);
    else if (sp->algorithm == GW_RL_SLIDING_WINDOW)
        gw_rl_algo_sliding_window(sp->limit, sp->window_ms, now_ms, op->a, op->b, out);
    else
        gw_rl_algo_fixed_window_ms(sp->limit, sp->window_ms, now_ms, op->a, out);
}

/* The op's state in the reference's terms: a bucket's TAT is effective
 * only when later than now (the stores keep a spent TAT up to its key's
 * expiry, which rounds to ms; 0 = none). */
static void op_state(const struct gw_rl_spec *sp, const struct gw_rl_op *op, int64_t now_us,
                     int64_t *a, int64_t *b)
{
    *a = op->a;
    *b = op->b;
    if (sp->algorithm == GW_RL_TOKEN_BUCKET)
        *a = op->a > now_us ? op->a : now_us;
}

static void fail_op(const struct run *r, const char *store, long k, int u, int rate,
                    const char *what, long long got, long long want)
{
    fail_msg("%s, seed %llu, %s store: arrival %ld (unit %d, rate %d) at %lld us: %s %lld, "
             "want %lld",
             r->sc->name, (unsigned long long)r->seed, store, k, u, rate, (long long)r->now_us,
             what, got, want);
}

static void expect_result(const struct run *r, const char *store, long k, int u, int rate,
                          const struct gw_rl_result *got, const struct gw_rl_result *want)
{
#define SAME(f)                                                                                    \
    do {                                                                                           \
        if ((long long)got->f != (long long)want->f)                                               \
            fail_op(r, store, k, u, rate, #f, (long long)got->f, (long long)want->f);              \
    } while (0)
    SAME(allowed);
    SAME(delay_us);
    SAME(retry_after_s);
    SAME(retry_after_ms);
    SAME(info.limit);
    SAME(info.remaining);
    SAME(info.reset_epoch_s);
    SAME(info.reset_after_s);
    SAME(info.window_s);
#undef SAME
}

/* Compares a decided pass with the reference at r->now_us, unit by unit
 * (each seeing the commits of the ones before), and commits the
 * reference's allowed units. other (may be NULL) is the same pass decided
 * by a second store, compared op by op with the first. */
static void compare_pass(struct run *r, const char *store, const struct pass_buf *b,
                         const int picks[], const char *other_name, const struct pass_buf *other)
{
    const struct scenario *sc = r->sc;
    for (size_t u = 0; u < b->pass.nunits; u++) {
        struct ref *refs = r->refs[picks[u]];
        bool all = true;
        struct gw_rl_result want[MAX_RATES];
        for (int k = 0; k < sc->nrates; k++) {
            const struct gw_rl_op *op = &b->ops[b->units[u].first + k];
            int64_t wa, wb, ga, gb;
            ref_check(&sc->rates[k], &refs[k], r->now_us, &want[k], &wa, &wb);
            all &= want[k].allowed;
            op_state(&sc->rates[k], op, r->now_us, &ga, &gb);
            if (ga != wa)
                fail_op(r, store, r->arrivals, (int)u, k, "state a", ga, wa);
            if (gb != wb)
                fail_op(r, store, r->arrivals, (int)u, k, "state b", gb, wb);
            struct gw_rl_result got;
            op_result(&sc->rates[k], op, r->now_us, &got);
            expect_result(r, store, r->arrivals, (int)u, k, &got, &want[k]);
            if (other != NULL) {
                const struct gw_rl_op *oo = &other->ops[b->units[u].first + k];
                int64_t oa, ob;
                op_state(&sc->rates[k], oo, r->now_us, &oa, &ob);
                if (oa != ga || ob != gb)
                    fail_op(r, other_name, r->arrivals, (int)u, k,
                            "state a/b differs from the "
                            "other store's, a",
                            oa, ga);
            }
        }
        enum gw_rl_unit_result wr = all ? GW_RL_UNIT_ALLOWED : GW_RL_UNIT_REFUSED;
        if (b->units[u].result != wr)
            fail_op(r, store, r->arrivals, (int)u, -1, "unit result", b->units[u].result, wr);
        if (other != NULL && other->units[u].result != wr)
            fail_op(r, other_name, r->arrivals, (int)u, -1, "unit result", other->units[u].result,
                    wr);
        if (all) {
            for (int k = 0; k < sc->nrates; k++)
                ref_commit(&sc->rates[k], &refs[k], r->now_us);
            r->allowed++;
            for (int k = 0; k < sc->nrates; k++)
                if (want[k].delay_us > 0) {
                    r->delayed++;
                    break;
                }
        } else {
            r->refused++;
            for (int k = 0; k < sc->nrates; k++)
                if (want[k].allowed) {
                    r->partial++;
                    break;
                }
        }
        r->arrivals++;
    }
    r->passes++;
}

/* The units of the next pass: usually one arrival, sometimes two or three
 * at the same instant (clients may repeat). Returns how many. */
static int next_picks(struct run *r, int picks[MAX_UNITS])
{
    uint64_t x = rng();
    int n = x % 8 == 0 ? 2 + (int)((x >> 8) % (MAX_UNITS - 1)) : 1;
    for (int u = 0; u < n; u++)
        picks[u] = (int)((x >> (16 + 8 * u)) % (uint64_t)r->sc->nclients);
    return n;
}

static void check_tallies(const struct run *r, long arrivals)
{
    /* Every scenario sends faster than its rate: both answers occur, in
     * every seed. */
    if (r->allowed < arrivals / 20 || r->refused < arrivals / 20)
        fail_msg("%s seed %llu: %ld allowed, %ld refused of %ld: the sequence does not exercise "
                 "both answers",
                 r->sc->name, (unsigned long long)r->seed, r->allowed, r->refused, r->arrivals);
    bool delays = false;
    for (int k = 0; k < r->sc->nrates; k++)
        delays |= r->sc->rates[k].algorithm == GW_RL_TOKEN_BUCKET && r->sc->rates[k].delay_ms > 0;
    /* Units of two rates: some were refused by one rate alone, so
     * all-or-nothing was exercised (the other rate consumed nothing). */
    if (r->sc->nrates > 1 && r->partial < arrivals / 100)
        fail_msg("%s seed %llu: only %ld units refused by one rate alone", r->sc->name,
                 (unsigned long long)r->seed, r->partial);
    if (delays && r->delayed == 0)
        fail_msg("%s seed %llu: no request was delayed", r->sc->name, (unsigned long long)r->seed);
}

/* ---- the memory store ------------------------------------------------------- */

static void run_memory(const struct scenario *sc, uint64_t seed, long *compared)
{
    struct gw_rl_memory *m;
    assert_int_equal(gw_rl_memory_create(&m, 0), 0);
    struct run r;
    run_init(&r, sc, seed, "rl");
    struct pass_buf b;
    int picks[MAX_UNITS];
    while (r.arrivals < MEMORY_ARRIVALS) {
        r.now_us = next_instant(&r);
        int n = next_picks(&r, picks);
        pass_build(&r, &b, picks, n);
        assert_int_equal(gw_rl_memory_apply(m, &b.pass, r.now_us), 0);
        assert_int_equal(b.pass.now_us, r.now_us);
        compare_pass(&r, "memory", &b, picks, NULL, NULL);
    }
    check_tallies(&r, MEMORY_ARRIVALS);
    *compared += r.arrivals;
    run_free(&r);
    gw_rl_memory_destroy(m);
}

static void test_memory_store_matches_reference(void **state)
{
    (void)state;
    long compared = 0;
    uint64_t t0 = gw_now_ms();
    for (size_t s = 0; s < GW_ARRAY_LEN(scenarios); s++)
        for (uint64_t seed = 1; seed <= SEEDS; seed++)
            run_memory(&scenarios[s], seed, &compared);
    fprintf(stderr, "memory store: %ld arrivals compared (%zu scenarios x %d seeds) in %llu ms\n",
            compared, GW_ARRAY_LEN(scenarios), SEEDS, (unsigned long long)(gw_now_ms() - t0));
}

/* ---- the Redis store, on a clock the test sets ---------------------------------- */

struct fake_redis {
    struct gwt_proc proc;
    int port;
    char clock_path[128];
    int64_t *clock; /* shared with the server's shim */
    struct gw_redis_target target;
    struct gw_rl_redis *store;
};

static const char *fakeclock_lib(void)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/gwt_fakeclock.so", GW_BIN_DIR);
    return access(path, R_OK) == 0 ? path : NULL;
}

/* Whether an executable called name is in $PATH. */
static bool in_path(const char *name)
{
    const char *path = getenv("PATH");
    char dir[512], full[600];
    for (const char *p = path; p != NULL && *p;) {
        const char *colon = strchr(p, ':');
        size_t n = colon ? (size_t)(colon - p) : strlen(p);
        if (n > 0 && n < sizeof(dir)) {
            memcpy(dir, p, n);
            dir[n] = '\0';
            snprintf(full, sizeof(full), "%s/%s", dir, name);
            if (access(full, X_OK) == 0)
                return true;
        }
        p = colon ? colon + 1 : NULL;
    }
    return false;
}

static void set_clock(struct fake_redis *f, int64_t us)
{
    __atomic_store_n(f->clock, us, __ATOMIC_RELEASE);
}

/* Starts redis-server with the clock shim at instant start_us; false when
 * it cannot be (no redis-server, no shim): the caller skips. */
static bool fake_redis_start(struct fake_redis *f, int64_t start_us)
{
    memset(f, 0, sizeof(*f));
    const char *lib = fakeclock_lib();
    if (lib == NULL) {
        fprintf(stderr, "gwt_fakeclock.so not built: skipped\n");
        return false;
    }
    snprintf(f->clock_path, sizeof(f->clock_path), "/tmp/gwt-fakeclock-%d", (int)getpid());
    int fd = open(f->clock_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, sizeof(int64_t)), 0);
    f->clock = mmap(NULL, sizeof(int64_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    assert_true(f->clock != MAP_FAILED);
    set_clock(f, start_us);

    char preload[600], file[200], ps[16];
    snprintf(preload, sizeof(preload), "LD_PRELOAD=%s", lib);
    snprintf(file, sizeof(file), "GWT_FAKECLOCK_FILE=%s", f->clock_path);
    const char *env[] = {preload, file, NULL};
    int port = gwt_free_port();
    assert_true(port > 0);
    snprintf(ps, sizeof(ps), "%d", port);
    const char *argv[] = {"redis-server", "--port",           ps,   "--bind",
                          "127.0.0.1",    "--save",           "",   "--appendonly",
                          "no",           "--protected-mode", "no", NULL};
    if (!in_path("redis-server")) {
        fprintf(stderr, "redis-server not installed: skipped\n");
        return false;
    }
    assert_int_equal(gwt_spawn(&f->proc, argv, env), 0);
    if (gwt_wait_port(port, 10000) != 0) {
        gwt_log_dump(&f->proc, 2000);
        fail_msg("redis-server under %s did not listen on %d", lib, port);
    }
    f->port = port;
    f->target.host = "127.0.0.1";
    f->target.port = port;
    assert_int_equal(gw_rl_redis_create(&f->store, &f->target, 2000), 0);
    /* The handshake reads the socket with timeouts on the monotonic clock,
     * which the shim leaves alone; only the wall clock is the test's. */
    long long deadline = gwt_now_ms() + 10000;
    int rc;
    while ((rc = gw_rl_redis_connect(f->store)) != 0 && gwt_now_ms() < deadline)
        ;
    if (rc != 0)
        fail_msg("Redis store did not connect: %d %s", rc, gw_rl_redis_last_error(f->store));
    return true;
}

static struct fake_redis g_redis; /* the test's server, stopped by its teardown */

static void fake_redis_stop(struct fake_redis *f)
{
    if (f->store != NULL)
        gw_rl_redis_ops.destroy(f->store);
    if (f->proc.pid > 0) {
        gwt_stop(&f->proc, SIGTERM, 5000);
        gwt_proc_cleanup(&f->proc);
    }
    if (f->clock != NULL && f->clock != MAP_FAILED)
        munmap(f->clock, sizeof(int64_t));
    if (f->clock_path[0] != '\0')
        unlink(f->clock_path);
}

/* Runs REDIS_ARRIVALS of a scenario through Redis (at instants the test
 * sets), the memory store and the reference. */
static void run_redis(struct fake_redis *f, const struct scenario *sc, uint64_t seed,
                      long *compared)
{
    struct gw_rl_memory *m;
    assert_int_equal(gw_rl_memory_create(&m, 0), 0);
    char prefix[32];
    snprintf(prefix, sizeof(prefix), "rl%llu", (unsigned long long)seed);
    struct run r;
    run_init(&r, sc, seed, prefix);
    struct pass_buf b, mb;
    int picks[MAX_UNITS];
    while (r.arrivals < REDIS_ARRIVALS) {
        r.now_us = next_instant(&r);
        set_clock(f, r.now_us);
        int n = next_picks(&r, picks);
        pass_build(&r, &b, picks, n);
        int rc = gw_rl_redis_apply(f->store, &b.pass);
        if (rc != 0)
            fail_msg("%s seed %llu: gw_rl_redis_apply: %d %s", sc->name, (unsigned long long)seed,
                     rc, gw_rl_redis_last_error(f->store));
        /* Redis's TIME is the instant the test set. */
        if (b.pass.now_us != r.now_us)
            fail_msg("Redis TIME %lld us, the test set %lld us", (long long)b.pass.now_us,
                     (long long)r.now_us);
        pass_build(&r, &mb, picks, n);
        assert_int_equal(gw_rl_memory_apply(m, &mb.pass, b.pass.now_us), 0);
        compare_pass(&r, "redis", &b, picks, "memory", &mb);
    }
    check_tallies(&r, REDIS_ARRIVALS);
    *compared += r.arrivals;
    run_free(&r);
    gw_rl_memory_destroy(m);
}

static void test_redis_store_matches_reference(void **state)
{
    (void)state;
    struct fake_redis *fr = &g_redis;
    int64_t start = 1767225600000000;
    if (!fake_redis_start(fr, start))
        skip(); /* the teardown cleans up */
    long compared = 0;
    uint64_t t0 = gw_now_ms();
    for (size_t s = 0; s < GW_ARRAY_LEN(scenarios); s++)
        for (uint64_t seed = 1; seed <= SEEDS; seed++) {
            /* Each run starts later than the last one ended, on an
             * empty server. */
            redisContext *c = redisConnect("127.0.0.1", fr->port);
            assert_true(c != NULL && !c->err);
            redisReply *rep = redisCommand(c, "FLUSHALL");
            assert_non_null(rep);
            freeReplyObject(rep);
            redisFree(c);
            run_redis(fr, &scenarios[s], seed, &compared);
        }
    fprintf(stderr,
            "redis store: %ld arrivals compared with the memory store and the reference "
            "(%zu scenarios x %d seeds) in %llu ms\n",
            compared, GW_ARRAY_LEN(scenarios), SEEDS, (unsigned long long)(gw_now_ms() - t0));
}

/* Stops the server and removes the clock file even when the test failed. */
static int redis_teardown(void **state)
{
    (void)state;
    fake_redis_stop(&g_redis);
    memset(&g_redis, 0, sizeof(g_redis));
    return 0;
}

/* A token bucket with delay (L = 10 per 1 s, B = 10, delay 500 ms): 15
 * pass at once (5 of them held), the 16th is refused. Retry-After names the
 * token (600 ms away: 1 s), but a request passes, held 500 ms, after
 * 100 ms: the over-limit cache remembers the client that long, not longer,
 * or it would refuse what the store admits. */
static void test_gcra_delay_cache_wait(void **state)
{
    (void)state;
    const int64_t now = 1767225600000000;
    int64_t tat = 0, next;
    struct gw_rl_result r;
    for (int i = 0; i < 15; i++) {
        assert_true(gw_rl_algo_gcra(10, 10, 1000, 500, now, tat, &next, &r));
        assert_int_equal(r.delay_us, i < 10 ? 0 : (i - 9) * 100000);
        tat = next;
    }
    assert_false(gw_rl_algo_gcra(10, 10, 1000, 500, now, tat, &next, &r));
    assert_int_equal(r.retry_after_s, 1);
    assert_int_equal(r.retry_after_ms, 100);
    assert_false(gw_rl_algo_gcra(10, 10, 1000, 500, now + 99999, tat, &next, &r));
    assert_int_equal(r.retry_after_ms, 1);
    assert_true(gw_rl_algo_gcra(10, 10, 1000, 500, now + 100000, tat, &next, &r));
    assert_int_equal(r.delay_us, 500000);
    /* Without delay the two waits are the same instant. */
    tat = now + 1000000;
    assert_false(gw_rl_algo_gcra(10, 10, 1000, 0, now, tat, &next, &r));
    assert_int_equal(r.retry_after_ms, 100);
    assert_int_equal(r.retry_after_s, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gcra_delay_cache_wait),
        cmocka_unit_test(test_memory_store_matches_reference),
        cmocka_unit_test_teardown(test_redis_store_matches_reference, redis_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
