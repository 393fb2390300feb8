/*
 * Integration tests of distributed rate limiting (issue 4, SPEC.md §5) with
 * real redis-server and gateway processes: one exact budget across
 * instances (also under concurrency and clock skew via libfaketime), key
 * TTLs after a burst, X-Forwarded-For trust, Redis killed / hung /
 * restarted in each failure mode, the over-limit cache sparing Redis, the
 * API-key mode keeping keys secret, and REDIS_URL with password, db and
 * unix socket.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "gwt_dist.h"
#include "gwt_suite.h"

#define W      60 /* window of most tests, seconds */
#define PREFIX "rl"

static struct gwt_proc gws[4];
static int gp[4];

static void pause_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static long long backend_requests(void)
{
    long long n = -1;
    assert_int_equal(gwt_backend_stats(gwt_fx.bport, &n, NULL), 0);
    return n;
}

/* GET /users/1 as client xff (NULL: the peer) with extra header lines. */
static void get_as(int port, const char *xff, const char *extra, struct gwt_response *r)
{
    char *req = gwt_dist_request("/users/1", xff, extra);
    assert_non_null(req);
    int rc = gwt_http(port, req, r);
    free(req);
    if (rc != 0)
        fail_msg("request to port %d failed: %d", port, rc);
}

static int status_as(int port, const char *xff, const char *extra)
{
    struct gwt_response r;
    get_as(port, xff, extra, &r);
    int s = r.status;
    gwt_response_free(&r);
    return s;
}

/* The window end on the real clock, for requests made now (W-aligned). */
static long long window_end(int window_s)
{
    return (gwt_wall_s() / window_s + 1) * window_s;
}

/* Keys under the prefix in the shared Redis. */
static int count_keys(int port, const char *pattern)
{
    char **keys = NULL;
    int n = gwt_dist_redis_scan(port, NULL, 0, pattern, &keys);
    if (n > 0)
        gwt_strv_free(keys, n);
    return n;
}

/* ---- one budget across instances ------------------------------------------ */

/* Two gateways on one Redis, one client alternating between them: exactly
 * LIMIT requests pass, each instance reports the same X-RateLimit-Reset
 * (the window end on Redis's clock), and once blocked each instance asks
 * Redis once more and then answers from its over-limit cache. */
static void test_two_instances_one_budget(void **state)
{
    const char *env[] = {"RATE_LIMIT_REQUESTS=5", "RATE_LIMIT_WINDOW_SECONDS=60", gwt_fx.redis_url,
                         NULL};
    assert_int_equal(gwt_gateway_for(&gws[0], &gp[0], gwt_fx.bport, env), 0);
    assert_int_equal(gwt_gateway_for(&gws[1], &gp[1], gwt_fx.bport, env), 0);
    gwt_avoid_window_edge(W, 5);
    long long end = window_end(W), reset0 = -1;
    for (int i = 0; i < 14; i++) {
        struct gwt_response r;
        get_as(gp[i % 2], NULL, NULL, &r);
        int want = i < 5 ? 200 : 429;
        if (r.status != want)
            fail_msg("request %d (instance %d): status %d, want %d", i + 1, i % 2, r.status, want);
        long long reset = gwt_dist_header_ll(&r, "X-RateLimit-Reset", -1);
        if (reset0 < 0)
            reset0 = reset;
        if (reset != reset0)
            fail_msg("request %d (instance %d): X-RateLimit-Reset %lld, first was %lld", i + 1,
                     i % 2, reset, reset0);
        assert_int_equal(gwt_dist_header_ll(&r, "X-RateLimit-Remaining", -1), i < 5 ? 4 - i : 0);
        gwt_response_free(&r);
    }
    assert_int_equal(reset0, end);
    assert_int_equal(backend_requests(), 5);
    /* One counter in Redis: the 5 allowed requests; a refusal changes no
     * state (SPEC.md §5.1), and 7 of them never reached Redis. */
    char key[192];
    gwt_dist_fw_key(PREFIX, "ip:127.0.0.1", W, end / W - 1, key);
    assert_int_equal(gwt_dist_redis_get(gwt_fx.rport, key), 5);
    assert_int_equal(count_keys(gwt_fx.rport, "*"), 1);
}

/* The same client hits both instances at once: 40 concurrent requests, 20
 * to each, and still exactly LIMIT pass (the Redis check is atomic). */
static void test_two_instances_concurrent_exact(void **state)
{
    const char *env[] = {"RATE_LIMIT_REQUESTS=7", "WORKER_THREADS=4", gwt_fx.redis_url, NULL};
    assert_int_equal(gwt_gateway_for(&gws[0], &gp[0], gwt_fx.bport, env), 0);
    assert_int_equal(gwt_gateway_for(&gws[1], &gp[1], gwt_fx.bport, env), 0);
    gwt_avoid_window_edge(W, 5);
    enum { N = 40 };
    int statuses[N];
    long long resets[N];
    gwt_dist_burst_same(gp, 2, "/users/1", NULL, N, statuses, resets);
    int ok = 0, limited = 0;
    for (int i = 0; i < N; i++) {
        ok += statuses[i] == 200;
        limited += statuses[i] == 429;
        assert_int_equal(resets[i], resets[0]);
    }
    assert_int_equal(ok, 7);
    assert_int_equal(limited, N - 7);
    assert_int_equal(backend_requests(), 7);
}

/* Two instances whose clocks differ by 25 s (one under libfaketime) still
 * share one budget and report one window end, Redis's, because the window
 * comes from Redis TIME. The test runs while the skewed clock is already in
 * the next window, so local clocks would disagree. */
static void test_clock_skew_one_budget(void **state)
{
#if defined(__SANITIZE_THREAD__)
    /* libfaketime interposes the pthread condition-variable waits itself,
     * hiding the mutex release inside them from ThreadSanitizer's
     * interceptors (a false "double lock" in the health prober). The
     * release and ASan builds run this test. */
    fprintf(stderr, "under ThreadSanitizer with libfaketime: skipped\n");
    skip();
#endif
    const char *lib = gwt_dist_faketime_lib();
    if (lib == NULL) {
        fprintf(stderr, "libfaketime not installed (Debian: faketime): skipped\n");
        skip();
    }
    const int WS = 30, SKEW = 25;
    char preload[256], asan[512];
    snprintf(preload, sizeof(preload), "LD_PRELOAD=%s", lib);
    /* ASan builds: libfaketime is preloaded ahead of the ASan runtime. */
    const char *old_asan = getenv("ASAN_OPTIONS");
    snprintf(asan, sizeof(asan), "ASAN_OPTIONS=%s%sverify_asan_link_order=0",
             old_asan != NULL ? old_asan : "", old_asan != NULL && *old_asan ? ":" : "");
    const char *env_a[] = {"RATE_LIMIT_REQUESTS=4", "RATE_LIMIT_WINDOW_SECONDS=30",
                           gwt_fx.redis_url, NULL};
    const char *env_b[] = {"RATE_LIMIT_REQUESTS=4",
                           "RATE_LIMIT_WINDOW_SECONDS=30",
                           gwt_fx.redis_url,
                           preload,
                           "FAKETIME=+25s",
                           "FAKETIME_DONT_FAKE_MONOTONIC=1",
                           "FAKETIME_NO_CACHE=1",
                           asan,
                           NULL};
    long long started = gwt_wall_s();
    assert_int_equal(gwt_gateway_for(&gws[0], &gp[0], gwt_fx.bport, env_a), 0);
    assert_int_equal(gwt_gateway_for(&gws[1], &gp[1], gwt_fx.bport, env_b), 0);
    /* The preload took effect: instance B logs in the future. */
    long long b_clock = gwt_dist_first_log_epoch(&gws[1]);
    long long skew = b_clock - started;
    if (skew < SKEW - 3 || skew > SKEW + 3)
        fail_msg("instance B's clock is %+lld s off, want about +%d s (libfaketime)", skew, SKEW);
    long long a_clock = gwt_dist_first_log_epoch(&gws[0]);
    assert_true(a_clock >= started - 1 && a_clock <= gwt_wall_s() + 1);

    /* Wait (bounded by one window) until the real clock is 5..26 s into a
     * 30 s window: B's clock (+25 s) is then in the next window. */
    long long deadline = gwt_now_ms() + (WS + 2) * 1000;
    for (;;) {
        long long into = gwt_wall_s() % WS;
        if (into >= 5 && into <= 26)
            break;
        assert_true(gwt_now_ms() < deadline);
        pause_ms(20);
    }
    long long now = gwt_wall_s();
    long long end = (now / WS + 1) * WS;
    assert_true((now + SKEW) / WS != now / WS); /* local windows would differ */

    for (int i = 0; i < 10; i++) {
        struct gwt_response r;
        get_as(gp[i % 2], NULL, NULL, &r);
        int want = i < 4 ? 200 : 429;
        if (r.status != want)
            fail_msg("request %d (instance %c): status %d, want %d", i + 1, "AB"[i % 2], r.status,
                     want);
        long long reset = gwt_dist_header_ll(&r, "X-RateLimit-Reset", -1);
        if (reset != end)
            fail_msg("request %d (instance %c): X-RateLimit-Reset %lld, want %lld (Redis's "
                     "window end)",
                     i + 1, "AB"[i % 2], reset, end);
        if (want == 429) {
            /* Retry-After counts on Redis's clock too, not B's. */
            long long ra = gwt_dist_header_ll(&r, "Retry-After", -1);
            long long t = gwt_wall_s();
            assert_true(ra >= end - t - 1 && ra <= end - t + 1);
        }
        gwt_response_free(&r);
    }
    assert_int_equal(backend_requests(), 4);
    assert_int_equal(count_keys(gwt_fx.rport, "*"), 1);
}

/* ---- keys and TTLs ---------------------------------------------------------- */

/* 200 concurrent first requests from distinct clients (IPv4 and IPv6,
 * through a trusted proxy), split over two instances: 200 keys, each with a
 * TTL in (0, window], each counted once. */
static void test_burst_keys_have_ttl(void **state)
{
    const char *env[] = {gwt_fx.redis_url, "TRUSTED_PROXIES=127.0.0.1/32", "RATE_LIMIT_REQUESTS=5",
                         "WORKER_THREADS=4", NULL};
    assert_int_equal(gwt_gateway_for(&gws[0], &gp[0], gwt_fx.bport, env), 0);
    assert_int_equal(gwt_gateway_for(&gws[1], &gp[1], gwt_fx.bport, env), 0);
    gwt_avoid_window_edge(W, 5);
    enum { N = 200 };
    int ports[N], statuses[N];
    char *reqs[N];
    for (int i = 0; i < N; i++) {
        char xff[64];
        if (i % 4 == 3)
            snprintf(xff, sizeof(xff), "2001:db8:%x::%x", i / 256, i);
        else
            snprintf(xff, sizeof(xff), "198.18.%d.%d", i / 250, i % 250 + 1);
        ports[i] = gp[i % 2];
        reqs[i] = gwt_dist_request("/users/1", xff, NULL);
        assert_non_null(reqs[i]);
    }
    int rc = gwt_dist_burst(ports, reqs, N, statuses, NULL);
    for (int i = 0; i < N; i++)
        free(reqs[i]);
    assert_int_equal(rc, 0);
    for (int i = 0; i < N; i++)
        if (statuses[i] != 200)
            fail_msg("request %d: status %d", i, statuses[i]);

    char **keys = NULL;
    int n = gwt_dist_redis_scan(gwt_fx.rport, NULL, 0, PREFIX ":*", &keys);
    assert_int_equal(n, N);
    for (int i = 0; i < n; i++) {
        long long pttl = gwt_dist_redis_pttl(gwt_fx.rport, keys[i]);
        long long v = gwt_dist_redis_get(gwt_fx.rport, keys[i]);
        if (!(pttl > 0 && pttl <= W * 1000) || v != 1) {
            char k[160];
            snprintf(k, sizeof(k), "%s", keys[i]);
            gwt_strv_free(keys, n);
            fail_msg("key %s: PTTL %lld ms (want (0, %d]), value %lld (want 1)", k, pttl, W * 1000,
                     v);
        }
    }
    gwt_strv_free(keys, n);
    /* Every key is the hash of its client: spot-check one of each family. */
    assert_int_equal(gwt_dist_client_keys(gwt_fx.rport, PREFIX, "ip:198.18.0.1"), 1);
    assert_int_equal(gwt_dist_client_keys(gwt_fx.rport, PREFIX, "ip:2001:db8::3"), 1);
    assert_int_equal(backend_requests(), N);
}

/* ---- X-Forwarded-For trust ----------------------------------------------- */

/* From an untrusted peer, X-Forwarded-For is ignored: changing it on every
 * request does not give a new bucket; the only key is the peer's. */
static void test_xff_spoof_from_untrusted_peer(void **state)
{
    const char *env[] = {gwt_fx.redis_url, "RATE_LIMIT_REQUESTS=3",
                         "TRUSTED_PROXIES=10.0.0.0/8,fd00::/8", NULL};
    assert_int_equal(gwt_gateway_for(&gws[0], &gp[0], gwt_fx.bport, env), 0);
    gwt_avoid_window_edge(W, 5);
    for (int i = 0; i < 8; i++) {
        char xff[64];
        snprintf(xff, sizeof(xff), i % 2 ? "203.0.113.%d" : "2001:db8::%d", i + 1);
        int s = status_as(gp[0], xff, NULL);
        if (s != (i < 3 ? 200 : 429))
            fail_msg("request %d spoofing %s: status %d", i + 1, xff, s);
    }
    assert_int_equal(count_keys(gwt_fx.rport, "*"), 1);
    assert_int_equal(gwt_dist_client_keys(gwt_fx.rport, PREFIX, "ip:127.0.0.1"), 1);
    assert_int_equal(backend_requests(), 3);
}

/* From a trusted peer the rightmost untrusted address is the client (IPv4
 * and IPv6, any spelling of it); addresses left of it are the client's own
 * claims and change nothing. */
static void test_xff_trusted_rightmost_untrusted(void **state)
{
    const char *env[] = {gwt_fx.redis_url, "RATE_LIMIT_REQUESTS=2",
                         "TRUSTED_PROXIES=127.0.0.1/32,10.0.0.0/8,fd00::/8", NULL};
    assert_int_equal(gwt_gateway_for(&gws[0], &gp[0], gwt_fx.bport, env), 0);
    gwt_avoid_window_edge(W, 5);
    static const struct {
        const char *xff;
        int status;
    } v4[] = {
        {"198.51.100.1, 203.0.113.50, 10.1.1.1", 200},
        {"6.6.6.6, 203.0.113.50, 10.2.2.2, 10.3.3.3", 200}, /* spoofed left part: same client */
        {"203.0.113.50", 429},
        {"203.0.113.50, 10.9.9.9", 429},
        {"203.0.113.51, 10.1.1.1", 200}, /* another client */
    };
    for (size_t i = 0; i < sizeof(v4) / sizeof(v4[0]); i++) {
        int s = status_as(gp[0], v4[i].xff, NULL);
        if (s != v4[i].status)
            fail_msg("X-Forwarded-For: %s: status %d, want %d", v4[i].xff, s, v4[i].status);
    }
    assert_int_equal(gwt_dist_client_keys(gwt_fx.rport, PREFIX, "ip:203.0.113.50"), 1);
    assert_int_equal(gwt_dist_client_keys(gwt_fx.rport, PREFIX, "ip:203.0.113.51"), 1);

    static const struct {
        const char *xff;
        int status;
    } v6[] = {
        {"2001:db8::bad, 2001:DB8:0:0:0:0:0:ABCD, fd00::1", 200},
        {"[2001:db8::abcd], 10.0.0.7", 200}, /* same address, other spelling */
        {"2001:db8::abcd", 429},
        {"2001:db8::abce", 200}, /* the full address is the key, not a prefix */
    };
    for (size_t i = 0; i < sizeof(v6) / sizeof(v6[0]); i++) {
        int s = status_as(gp[0], v6[i].xff, NULL);
        if (s != v6[i].status)
            fail_msg("X-Forwarded-For: %s: status %d, want %d", v6[i].xff, s, v6[i].status);
    }
    assert_int_equal(gwt_dist_client_keys(gwt_fx.rport, PREFIX, "ip:2001:db8::abcd"), 1);
    assert_int_equal(gwt_dist_client_keys(gwt_fx.rport, PREFIX, "ip:2001:db8::abce"), 1);

    /* Two X-Forwarded-For fields are one list. */
    assert_int_equal(status_as(gp[0], "203.0.113.60", "X-Forwarded-For: 10.0.0.5\r\n"), 200);
    assert_int_equal(gwt_dist_client_keys(gwt_fx.rport, PREFIX, "ip:203.0.113.60"), 1);
    /* Nothing was keyed by the proxy or by a spoofed address. */
    assert_int_equal(gwt_dist_client_keys(gwt_fx.rport, PREFIX, "ip:127.0.0.1"), 0);
    assert_int_equal(gwt_dist_client_keys(gwt_fx.rport, PREFIX, "ip:6.6.6.6"), 0);
    assert_int_equal(gwt_dist_client_keys(gwt_fx.rport, PREFIX, "ip:2001:db8::bad"), 0);
    assert_int_equal(count_keys(gwt_fx.rport, "*"), 5);
}

/* ---- Redis outages ----------------------------------------------------------- */

/* p99 in µs of n sequential requests, each from a new client (distinct
 * X-Forwarded-For, so none is limited); every one must get want. */
static long long p99_us(int port, int n, int want, const char *tag)
{
    long long *v = calloc((size_t)n, sizeof(*v));
    assert_non_null(v);
    static int seq;
    for (int i = 0; i < n; i++) {
        char xff[64];
        seq++;
        snprintf(xff, sizeof(xff), "100.64.%d.%d", seq / 200, seq % 200 + 1);
        char *req = gwt_dist_request("/users/1", xff, NULL);
        assert_non_null(req);
        struct gwt_response r;
        int rc = gwt_dist_timed(port, req, &r, &v[i]);
        free(req);
        if (rc != 0 || r.status != want)
            fail_msg("%s request %d: rc %d status %d, want %d", tag, i + 1, rc, r.status, want);
        gwt_response_free(&r);
    }
    long long p = gwt_dist_percentile(v, n, 99);
    free(v);
    return p;
}

/* The lowest p99_us of `runs` runs of n requests: scheduling noise on a
 * shared host inflates single runs, an added wait inflates every run. */
static long long best_p99_us(int port, int runs, int n, int want, const char *tag)
{
    long long best = -1;
    for (int i = 0; i < runs; i++) {
        long long p = p99_us(port, n, want, tag);
        best = best < 0 || p < best ? p : best;
    }
    return best;
}

/* Polls every 20 ms, until deadline_ms (gwt_now_ms), with bursts of four
 * concurrent requests from fresh clients (concurrent connections are
 * spread over the gateway's workers), until a whole burst is counted in
 * Redis: every worker limits through Redis again. Returns gwt_now_ms() of
 * success, or -1. */
static long long wait_counted(int port, int redis_port, long long deadline_ms, const char *tag)
{
    static int seq;
    enum { B = 4 };
    while (gwt_now_ms() < deadline_ms) {
        int ports[B], statuses[B];
        char *reqs[B];
        char clients[B][40];
        for (int i = 0; i < B; i++) {
            char xff[32];
            seq++;
            snprintf(xff, sizeof(xff), "100.100.%d.%d", seq / 200, seq % 200 + 1);
            snprintf(clients[i], sizeof(clients[i]), "ip:%s", xff);
            ports[i] = port;
            reqs[i] = gwt_dist_request("/users/1", xff, NULL);
            assert_non_null(reqs[i]);
        }
        int rc = gwt_dist_burst(ports, reqs, B, statuses, NULL);
        for (int i = 0; i < B; i++)
            free(reqs[i]);
        assert_int_equal(rc, 0);
        int counted = 0;
        for (int i = 0; i < B; i++) {
            if (statuses[i] != 200 && statuses[i] != 503)
                fail_msg("%s: status %d while waiting for Redis", tag, statuses[i]);
            counted += gwt_dist_client_keys(redis_port, PREFIX, clients[i]) == 1;
        }
        if (counted == B)
            return gwt_now_ms();
        pause_ms(20);
    }
    return -1;
}

/* Redis SIGKILLed under three gateways, one per failure mode: open passes
 * with no added latency, closed answers 503, local enforces the limit from
 * memory; /health says disconnected. Redis restarted on the same port:
 * each gateway limits through Redis again within 3 s, without a restart. */
static void test_redis_killed_then_restarted(void **state)
{
    struct gwt_proc r2 = {0};
    int port = 0;
    for (int attempt = 0; attempt < 5; attempt++) {
        port = gwt_free_port();
        assert_true(port > 0);
        if (gwt_dist_redis_start_at(&r2, port, NULL) == 0)
            break;
        gwt_proc_cleanup(&r2);
        port = 0;
    }
    assert_true(port > 0);
    char url[64];
    snprintf(url, sizeof(url), "REDIS_URL=redis://127.0.0.1:%d", port);
    const int TIMEOUT_MS = 200;
    const char *common[] = {url, "RATE_LIMIT_REQUESTS=3", "TRUSTED_PROXIES=127.0.0.1/32",
                            "REDIS_TIMEOUT_MS=200"};
    static const char *const modes[] = {"RATE_LIMIT_FAILURE_MODE=open",
                                        "RATE_LIMIT_FAILURE_MODE=closed",
                                        "RATE_LIMIT_FAILURE_MODE=local"};
    for (int g = 0; g < 3; g++) {
        const char *env[] = {common[0], common[1], common[2], common[3], modes[g], NULL};
        assert_int_equal(gwt_gateway_for(&gws[g], &gp[g], gwt_fx.bport, env), 0);
    }
    const int OPEN = gp[0], CLOSED = gp[1], LOCAL = gp[2];
    gwt_avoid_window_edge(W, 10);

    /* Redis up: the baseline. */
    (void)p99_us(OPEN, 10, 200, "warm-up");
    long long base = best_p99_us(OPEN, 3, 100, 200, "baseline");
    assert_int_equal(status_as(CLOSED, "192.0.2.1", NULL), 200);
    assert_int_equal(status_as(LOCAL, "192.0.2.1", NULL), 200);
    long long errors0 = gwt_stat(OPEN, "/stats", "redis_errors");
    assert_int_equal(errors0, 0);

    assert_int_equal(gwt_stop(&r2, SIGKILL, 2000), -SIGKILL);

    /* open: every request passes, no slower than with Redis up (p99 of
     * 100 sequential requests, best of three runs on each side). */
    long long after = best_p99_us(OPEN, 3, 100, 200, "open, Redis down");
    fprintf(stderr, "p99 (best of 3 x 100) with Redis up %lld us, after SIGKILL %lld us\n", base,
            after);
    if (after > base + 5000 || after >= TIMEOUT_MS * 1000)
        fail_msg("open mode p99 %lld us after the kill, baseline %lld us (limit +5 ms, and "
                 "below REDIS_TIMEOUT_MS)",
                 after, base);
    assert_true(gwt_stat(OPEN, "/stats", "redis_errors") >= 1);

    /* closed: 503 problem, fast, nothing forwarded. */
    long long before_backend = backend_requests();
    for (int i = 0; i < 5; i++) {
        char *req = gwt_dist_request("/users/1", "192.0.2.2", NULL);
        struct gwt_response r;
        long long us;
        assert_int_equal(gwt_dist_timed(CLOSED, req, &r, &us), 0);
        free(req);
        gwt_assert_problem(&r, 503, NULL);
        assert_true(us < TIMEOUT_MS * 1000);
        gwt_response_free(&r);
    }
    assert_int_equal(backend_requests(), before_backend);

    /* local: the same limit from the in-process store. */
    int want[] = {200, 200, 200, 429, 429};
    for (int i = 0; i < 5; i++) {
        struct gwt_response r;
        get_as(LOCAL, "192.0.2.3", NULL, &r);
        if (r.status != want[i])
            fail_msg("local mode request %d: status %d, want %d", i + 1, r.status, want[i]);
        assert_int_equal(gwt_dist_header_ll(&r, "X-RateLimit-Limit", -1), 3);
        gwt_response_free(&r);
    }

    /* /health tells the operator (its probe result may be cached for up
     * to 1 s, SPEC.md §4: poll for 2 s at most). */
    for (int g = 0; g < 3; g++) {
        long long deadline = gwt_now_ms() + 2000;
        for (;;) {
            struct gwt_response r;
            assert_int_equal(gwt_get(gp[g], "/health", &r), 0);
            json_t *j = gwt_json(&r);
            assert_non_null(j);
            bool down = r.status == 503 &&
                        strcmp(json_string_value(json_object_get(j, "redis")), "disconnected") == 0;
            json_decref(j);
            gwt_response_free(&r);
            if (down)
                break;
            if (gwt_now_ms() > deadline)
                fail_msg("%s mode: /health does not report Redis down", g == 0   ? "open"
                                                                        : g == 1 ? "closed"
                                                                                 : "local");
            pause_ms(50);
        }
    }

    /* Same port again. */
    assert_int_equal(gwt_dist_redis_start_at(&r2, port, NULL), 0);
    long long restarted = gwt_now_ms();
    const char *tags[] = {"open", "closed", "local"};
    for (int g = 0; g < 3; g++) {
        long long at = wait_counted(gp[g], port, restarted + 3000, tags[g]);
        if (at < 0)
            fail_msg("%s mode: not limiting through Redis 3 s after the restart", tags[g]);
        fprintf(stderr, "%s mode: counted in Redis %lld ms after the restart\n", tags[g],
                at - restarted);
    }
    /* And the limit holds through Redis again: each request counted once. */
    for (int g = 0; g < 3; g++) {
        char xff[32], client[40];
        snprintf(xff, sizeof(xff), "192.0.2.%d", 50 + g);
        snprintf(client, sizeof(client), "ip:%s", xff);
        for (int i = 0; i < 4; i++) {
            int s = status_as(gp[g], xff, NULL);
            if (s != (i < 3 ? 200 : 429))
                fail_msg("%s mode after restart, request %d: status %d", tags[g], i + 1, s);
        }
        char key[192];
        gwt_dist_fw_key(PREFIX, client, W, gwt_wall_s() / W, key);
        assert_int_equal(gwt_dist_redis_get(port, key), 3); /* the 4th was refused */
    }
    gwt_stop(&r2, SIGTERM, 5000);
    gwt_proc_cleanup(&r2);
}

/* Redis stops answering (SIGSTOP) under an open-mode gateway: one request
 * waits REDIS_TIMEOUT_MS, then the worker stops asking; for 2.5 s, while
 * reconnect attempts keep failing, no request waits on Redis. */
static void test_redis_hung_no_added_wait(void **state)
{
    struct gwt_proc r3 = {0};
    int port = 0;
    for (int attempt = 0; attempt < 5 && port == 0; attempt++) {
        port = gwt_free_port();
        if (port <= 0 || gwt_dist_redis_start_at(&r3, port, NULL) != 0) {
            gwt_proc_cleanup(&r3);
            port = 0;
        }
    }
    assert_true(port > 0);
    char url[64];
    snprintf(url, sizeof(url), "REDIS_URL=redis://127.0.0.1:%d", port);
    const int T = 500;
    const char *env[] = {url,
                         "REDIS_TIMEOUT_MS=500",
                         "WORKER_THREADS=1",
                         "TRUSTED_PROXIES=127.0.0.1/32",
                         "RATE_LIMIT_REQUESTS=3",
                         NULL};
    assert_int_equal(gwt_gateway_for(&gws[0], &gp[0], gwt_fx.bport, env), 0);
    gwt_avoid_window_edge(W, 10);
    (void)p99_us(gp[0], 10, 200, "warm-up");
    long long base = best_p99_us(gp[0], 3, 100, 200, "baseline");

    assert_int_equal(kill(r3.pid, SIGSTOP), 0);
    /* The request that finds Redis hung waits one timeout, no more. */
    char *req = gwt_dist_request("/users/1", "192.0.2.77", NULL);
    struct gwt_response r;
    long long us;
    assert_int_equal(gwt_dist_timed(gp[0], req, &r, &us), 0);
    free(req);
    assert_int_equal(r.status, 200);
    gwt_response_free(&r);
    assert_true(us >= (T - 20) * 1000LL && us < (T + 200) * 1000LL);

    /* Then, for 2.5 s (reconnect attempts 100 ms after the failure, then
     * 200, 400, 800 ms after each failed attempt),
     * requests do not wait for Redis. */
    enum { MAXN = 4000 };
    long long *v = calloc(MAXN, sizeof(*v));
    assert_non_null(v);
    int n = 0;
    long long worst = 0, until = gwt_now_ms() + 2500;
    while (n < MAXN && gwt_now_ms() < until) {
        char xff[64];
        snprintf(xff, sizeof(xff), "100.65.%d.%d", n / 200, n % 200 + 1);
        req = gwt_dist_request("/users/1", xff, NULL);
        assert_int_equal(gwt_dist_timed(gp[0], req, &r, &v[n]), 0);
        free(req);
        assert_int_equal(r.status, 200);
        gwt_response_free(&r);
        worst = v[n] > worst ? v[n] : worst;
        if (getenv("GWT_DEBUG_SLOW") && v[n] > 20000)
            fprintf(stderr, "slow request %d: %lld us at +%lld ms\n", n, v[n],
                    gwt_now_ms() - (until - 2500));
        n++;
    }
    long long p99 = gwt_dist_percentile(v, n, 99);
    /* A reconnect that blocked the worker would hold a request for about
     * REDIS_TIMEOUT_MS at each attempt (about 4 in 2.5 s); one slow request
     * is allowed for scheduling noise on a busy host. */
    int stalled = 0;
    for (int i = 0; i < n; i++)
        stalled += v[i] >= T * 1000LL * 8 / 10;
    free(v);
    fprintf(stderr,
            "hung Redis: baseline p99 %lld us; %d requests in 2.5 s, p99 %lld us, "
            "worst %lld us\n",
            base, n, p99, worst);
    assert_true(n >= 100);
    /* Not "baseline + 5 ms" as after a SIGKILL: thousands of back-to-back
     * requests on a shared host are noisier than 100; the bound that
     * matters is far below the Redis timeout. */
    if (p99 >= T * 1000 / 4)
        fail_msg("p99 %lld us with Redis hung (baseline %lld us), REDIS_TIMEOUT_MS=%d", p99, base,
                 T);
    if (stalled > 1)
        fail_msg("%d requests waited >= %d ms while Redis was hung (REDIS_TIMEOUT_MS=%d): the "
                 "reconnect must not block the worker",
                 stalled, T * 8 / 10, T);

    /* Redis answers again: limiting resumes without a restart. */
    assert_int_equal(kill(r3.pid, SIGCONT), 0);
    long long resumed = gwt_now_ms();
    long long at = wait_counted(gp[0], port, resumed + 3000, "after SIGCONT");
    if (at < 0)
        fail_msg("not limiting through Redis 3 s after SIGCONT");
    gwt_stop(&r3, SIGTERM, 5000);
    gwt_proc_cleanup(&r3);
}

/* ---- over-limit cache -------------------------------------------------------- */

/* Once a client is refused, its next 100 requests (new connections and
 * keep-alive, on every worker) cost Redis nothing: INFO commandstats shows
 * no new EVALSHA or EVAL. Another client still goes to Redis. */
static void test_over_limit_cache_spares_redis(void **state)
{
    const char *env[] = {gwt_fx.redis_url, "RATE_LIMIT_REQUESTS=3", "WORKER_THREADS=4",
                         "TRUSTED_PROXIES=127.0.0.1/32", NULL};
    assert_int_equal(gwt_gateway_for(&gws[0], &gp[0], gwt_fx.bport, env), 0);
    gwt_avoid_window_edge(W, 5);
    const char *blocked = "192.0.2.9";
    for (int i = 0; i < 4; i++)
        assert_int_equal(status_as(gp[0], blocked, NULL), i < 3 ? 200 : 429);
    static const char *const evals[] = {"evalsha", "eval", NULL};
    long long before = gwt_dist_redis_calls(gwt_fx.rport, evals);
    assert_true(before >= 4);

    struct gwt_response first;
    get_as(gp[0], blocked, NULL, &first);
    assert_int_equal(first.status, 429);
    long long reset = gwt_dist_header_ll(&first, "X-RateLimit-Reset", -1);
    gwt_response_free(&first);
    for (int i = 1; i < 50; i++)
        assert_int_equal(status_as(gp[0], blocked, NULL), 429);
    int fd = gwt_connect(gp[0]);
    assert_true(fd >= 0);
    for (int i = 0; i < 50; i++) {
        assert_int_equal(gwt_send_str(fd, "GET /users/1 HTTP/1.1\r\nHost: h\r\n"
                                          "X-Forwarded-For: 192.0.2.9\r\n\r\n"),
                         0);
        struct gwt_response r;
        assert_int_equal(gwt_read_response(fd, &r, false), 0);
        assert_int_equal(r.status, 429);
        assert_int_equal(gwt_dist_header_ll(&r, "X-RateLimit-Reset", -1), reset);
        assert_int_equal(gwt_dist_header_ll(&r, "X-RateLimit-Remaining", -1), 0);
        assert_true(gwt_dist_header_ll(&r, "Retry-After", -1) >= 1);
        gwt_response_free(&r);
    }
    close(fd);
    long long after = gwt_dist_redis_calls(gwt_fx.rport, evals);
    if (after != before)
        fail_msg("100 refused requests cost Redis %lld EVALSHA/EVAL calls, want 0", after - before);
    assert_int_equal(backend_requests(), 3);
    assert_int_equal(gwt_stat(gp[0], "/stats", "requests_rate_limited"), 101);
    /* Another client is still counted in Redis: exactly one more call. */
    assert_int_equal(status_as(gp[0], "192.0.2.10", NULL), 200);
    assert_int_equal(gwt_dist_redis_calls(gwt_fx.rport, evals), before + 1);
}

/* ---- API-key mode ----------------------------------------------------------------- */

/* RATE_LIMIT_KEY=header:X-API-Key with Redis: two keys from one address
 * have separate budgets; the key values never appear in the logs (access
 * log and debug diagnostics), /stats, /metrics or Redis, where each key is
 * stored as a hash. */
static void test_api_key_mode(void **state)
{
    const char *env[] = {
        gwt_fx.redis_url,  "RATE_LIMIT_REQUESTS=2", "RATE_LIMIT_KEY=header:X-API-Key",
        "LOG_LEVEL=debug", "ACCESS_LOG=on",         NULL};
    assert_int_equal(gwt_gateway_for(&gws[0], &gp[0], gwt_fx.bport, env), 0);
    gwt_avoid_window_edge(W, 5);
    static const char *const secrets[] = {"sk_live_Alpha7Secret", "sk_live_Bravo8Secret"};
    static const struct {
        int key; /* index in secrets, -1 = no header */
        int status;
    } seq[] = {{0, 200}, {0, 200}, {0, 429}, {1, 200}, {1, 200}, {1, 429}, {-1, 200}, {0, 429}};
    for (size_t i = 0; i < sizeof(seq) / sizeof(seq[0]); i++) {
        char hdr[128] = "";
        if (seq[i].key >= 0)
            snprintf(hdr, sizeof(hdr), "X-API-Key: %s\r\n", secrets[seq[i].key]);
        int s = status_as(gp[0], NULL, hdr);
        if (s != seq[i].status)
            fail_msg("request %zu (key %d): status %d, want %d", i + 1, seq[i].key, s,
                     seq[i].status);
    }
    for (int k = 0; k < 2; k++) {
        char client[72];
        gwt_dist_api_client_key(secrets[k], client);
        assert_int_equal(gwt_dist_client_keys(gwt_fx.rport, PREFIX, client), 1);
    }
    assert_int_equal(gwt_dist_client_keys(gwt_fx.rport, PREFIX, "ip:127.0.0.1"), 1);
    assert_int_equal(count_keys(gwt_fx.rport, "*"), 3);

    /* Read /stats and /metrics, then stop the gateway so its log is complete. */
    struct gwt_response st, me;
    assert_int_equal(gwt_get(gp[0], "/stats", &st), 0);
    assert_int_equal(gwt_get(gp[0], "/metrics", &me), 0);
    assert_int_equal(st.status, 200);
    assert_int_equal(me.status, 200);
    assert_int_equal(gwt_stop(&gws[0], SIGTERM, 5000), 0);
    char *log = gwt_log_read(&gws[0]);
    assert_non_null(log);
    assert_non_null(strstr(log, "\"status\":429")); /* the access log is there */
    char **keys = NULL;
    int n = gwt_dist_redis_scan(gwt_fx.rport, NULL, 0, "*", &keys);
    assert_int_equal(n, 3);
    for (int k = 0; k < 2; k++) {
        const char *needle = secrets[k] + 8; /* "Alpha7Secret": any part of the value */
        if (strstr(log, needle) != NULL)
            fail_msg("API key value found in the gateway log");
        assert_null(strstr(st.body, needle));
        assert_null(strstr(me.body, needle));
        for (int i = 0; i < n; i++)
            assert_null(strstr(keys[i], needle));
    }
    gwt_strv_free(keys, n);
    free(log);
    gwt_response_free(&st);
    gwt_response_free(&me);
}

/* ---- REDIS_URL forms --------------------------------------------------------------- */

/* The gateway binary with redis://:password@host:port/db (password with
 * percent-escapes) and with unix:///path: limits work, keys land in the
 * selected database, /health says connected. */
static void test_redis_url_password_db_and_unix(void **state)
{
    char dir[] = "/tmp/gw-dist-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char sock[128];
    snprintf(sock, sizeof(sock), "%s/redis.sock", dir);
    struct gwt_proc r4 = {0};
    int port = 0;
    const char *extra[] = {"--requirepass",
                           "s3cr/t@x",
                           "--unixsocket",
                           sock,
                           "--unixsocketperm",
                           "700",
                           "--dir",
                           dir,
                           NULL};
    for (int attempt = 0; attempt < 5 && port == 0; attempt++) {
        port = gwt_free_port();
        if (port <= 0 || gwt_dist_redis_start_at(&r4, port, extra) != 0) {
            gwt_proc_cleanup(&r4);
            port = 0;
        }
    }
    assert_true(port > 0);
    /* The same server on both transports; the unix socket also needs AUTH,
     * which unix:// cannot carry, so it gets a second, password-free server. */
    struct gwt_proc r5 = {0};
    char sock5[128];
    snprintf(sock5, sizeof(sock5), "%s/open.sock", dir);
    int port5 = 0;
    const char *extra5[] = {"--unixsocket", sock5, "--unixsocketperm", "700", "--dir", dir, NULL};
    for (int attempt = 0; attempt < 5 && port5 == 0; attempt++) {
        port5 = gwt_free_port();
        if (port5 <= 0 || gwt_dist_redis_start_at(&r5, port5, extra5) != 0) {
            gwt_proc_cleanup(&r5);
            port5 = 0;
        }
    }
    assert_true(port5 > 0);

    char url_tcp[128], url_unix[160];
    snprintf(url_tcp, sizeof(url_tcp), "REDIS_URL=redis://:s3cr%%2Ft%%40x@127.0.0.1:%d/2", port);
    snprintf(url_unix, sizeof(url_unix), "REDIS_URL=unix://%s", sock5);
    const char *env_tcp[] = {url_tcp, "RATE_LIMIT_REQUESTS=2", NULL};
    const char *env_unix[] = {url_unix, "RATE_LIMIT_REQUESTS=2", NULL};
    assert_int_equal(gwt_gateway_for(&gws[0], &gp[0], gwt_fx.bport, env_tcp), 0);
    assert_int_equal(gwt_gateway_for(&gws[1], &gp[1], gwt_fx.bport, env_unix), 0);
    gwt_avoid_window_edge(W, 5);
    for (int g = 0; g < 2; g++) {
        for (int i = 0; i < 3; i++)
            assert_int_equal(status_as(gp[g], NULL, NULL), i < 2 ? 200 : 429);
        struct gwt_response r;
        assert_int_equal(gwt_get(gp[g], "/health", &r), 0);
        json_t *j = gwt_json(&r);
        assert_non_null(j);
        assert_string_equal(json_string_value(json_object_get(j, "redis")), "connected");
        json_decref(j);
        gwt_response_free(&r);
        assert_int_equal(gwt_stat(gp[g], "/stats", "redis_errors"), 0);
    }
    char **keys = NULL;
    assert_int_equal(gwt_dist_redis_scan(port, "s3cr/t@x", 2, PREFIX ":*", &keys), 1);
    gwt_strv_free(keys, 1);
    assert_int_equal(gwt_dist_redis_scan(port, "s3cr/t@x", 0, "*", &keys), 0);
    assert_int_equal(gwt_dist_redis_scan(port5, NULL, 0, PREFIX ":*", &keys), 1);
    gwt_strv_free(keys, 1);
    /* The password is not logged. */
    assert_int_equal(gwt_stop(&gws[0], SIGTERM, 5000), 0);
    char *log = gwt_log_read(&gws[0]);
    assert_non_null(log);
    assert_null(strstr(log, "s3cr"));
    free(log);

    gwt_stop(&r4, SIGTERM, 5000);
    gwt_proc_cleanup(&r4);
    gwt_stop(&r5, SIGTERM, 5000);
    gwt_proc_cleanup(&r5);
    unlink(sock);
    unlink(sock5);
    rmdir(dir);
}

static int group_setup(void **state)
{
    return gwt_suite_setup(GWT_FX_REDIS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        GWT_TEST(test_two_instances_one_budget),
        GWT_TEST(test_two_instances_concurrent_exact),
        GWT_TEST(test_clock_skew_one_budget),
        GWT_TEST(test_burst_keys_have_ttl),
        GWT_TEST(test_xff_spoof_from_untrusted_peer),
        GWT_TEST(test_xff_trusted_rightmost_untrusted),
        GWT_TEST(test_redis_killed_then_restarted),
        GWT_TEST(test_redis_hung_no_added_wait),
        GWT_TEST(test_over_limit_cache_spares_redis),
        GWT_TEST(test_api_key_mode),
        GWT_TEST(test_redis_url_password_db_and_unix),
    };
    /* GWT_FILTER=test_redis_* runs a subset (cmocka glob). */
    if (getenv("GWT_FILTER") != NULL)
        cmocka_set_test_filter(getenv("GWT_FILTER"));
    return cmocka_run_group_tests_name("distributed_limit", tests, group_setup, gwt_suite_teardown);
}
