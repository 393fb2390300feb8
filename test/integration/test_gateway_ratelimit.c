/*
 * Integration tests of rate limiting (SPEC.md section 5) with the in-process
 * store and with a real redis-server: exact header values, the 429 problem
 * document, that a refused request never reaches the backend, key TTLs in
 * Redis, one global limit across two gateways, keys by header, headers off,
 * dry run, and the store failure modes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "gwt_suite.h"
#include "gwtest.h"

#define LIMIT      5
#define WINDOW     60
#define QUOTA_TYPE "https://iana.org/assignments/http-problem-types#quota-exceeded"

static struct gwt_proc gwa, gwb;
static int pa, pb;

static long long header_ll(const struct gwt_response *r, const char *name)
{
    const char *v = gwt_header(r, name);
    if (v == NULL)
        fail_msg("header %s missing (status %d)", name, r->status);
    char *end;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end != '\0')
        fail_msg("header %s: \"%s\" is not an integer", name, v);
    return x;
}

/* Checks the five rate-limit fields for request number n of the window
 * (SPEC.md section 5), with reset/t derived from the clock at the request. */
static void assert_rl_headers(const struct gwt_response *r, int limit, int n, long long t_before,
                              long long t_after)
{
    int remaining = limit - n > 0 ? limit - n : 0;
    assert_int_equal(gwt_header_count(r, "X-RateLimit-Limit"), 1);
    assert_int_equal(header_ll(r, "X-RateLimit-Limit"), limit);
    assert_int_equal(header_ll(r, "X-RateLimit-Remaining"), remaining);
    long long reset = header_ll(r, "X-RateLimit-Reset");
    /* The window end is a multiple of W after the request time. */
    assert_int_equal(reset % WINDOW, 0);
    long long lo = (t_before / WINDOW + 1) * WINDOW, hi = (t_after / WINDOW + 1) * WINDOW;
    assert_true(reset >= lo && reset <= hi);
    char want[128];
    snprintf(want, sizeof(want), "\"default\";q=%d;w=%d", limit, WINDOW);
    assert_string_equal(gwt_header(r, "RateLimit-Policy"), want);
    const char *rl = gwt_header(r, "RateLimit");
    assert_non_null(rl);
    int got_r = -1, got_t = -1;
    char tail = 0;
    int k = sscanf(rl, "\"default\";r=%d;t=%d%c", &got_r, &got_t, &tail);
    if (k != 2)
        fail_msg("RateLimit: \"%s\" is not \"default\";r=<n>;t=<n>", rl);
    assert_int_equal(got_r, remaining);
    /* t = seconds to the window end, as seen between t_before and t_after. */
    assert_true(got_t >= reset - t_after - 1 && got_t <= reset - t_before + 1);
    assert_true(got_t >= 0 && got_t <= WINDOW);
}

static void do_get(int port, const char *target, const char *extra, struct gwt_response *r,
                   long long *t0, long long *t1)
{
    char req[512];
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: h\r\n%sConnection: close\r\n\r\n", target,
             extra ? extra : "");
    *t0 = gwt_wall_s();
    assert_int_equal(gwt_http(port, req, r), 0);
    *t1 = gwt_wall_s();
}

static void assert_429(const struct gwt_response *r, long long t_before, long long t_after)
{
    gwt_assert_problem(r, 429, QUOTA_TYPE);
    long long ra = header_ll(r, "Retry-After");
    assert_true(ra >= 1 && ra <= WINDOW);
    long long reset = (t_after / WINDOW + 1) * WINDOW;
    assert_true(ra >= reset - t_after - 1 && ra <= (t_before / WINDOW + 1) * WINDOW - t_before + 1);
    json_t *j = gwt_json(r);
    assert_non_null(j);
    json_t *vp = json_object_get(j, "violated-policies");
    assert_true(json_is_array(vp));
    assert_int_equal(json_array_size(vp), 1);
    assert_string_equal(json_string_value(json_array_get(vp, 0)), "default");
    json_decref(j);
}

/* LIMIT requests pass with exact headers, then 429s that never reach the
 * backend. Returns nothing; the gateway on port is already running. */
static void run_limit_sequence(int port)
{
    gwt_avoid_window_edge(WINDOW, 5);
    for (int n = 1; n <= LIMIT; n++) {
        struct gwt_response r;
        long long t0, t1;
        do_get(port, "/users/1", NULL, &r, &t0, &t1);
        assert_int_equal(r.status, 200);
        assert_rl_headers(&r, LIMIT, n, t0, t1);
        gwt_response_free(&r);
    }
    assert_int_equal(gwt_backend_requests(gwt_fx.bport), LIMIT);
    for (int n = LIMIT + 1; n <= LIMIT + 3; n++) {
        struct gwt_response r;
        long long t0, t1;
        do_get(port, "/users/1", NULL, &r, &t0, &t1);
        assert_429(&r, t0, t1);
        assert_rl_headers(&r, LIMIT, n, t0, t1);
        gwt_response_free(&r);
    }
    /* Refused requests never reached the backend. */
    assert_int_equal(gwt_backend_requests(gwt_fx.bport), LIMIT);
    /* A refused request on a keep-alive connection leaves it usable. */
    int fd = gwt_connect(port);
    assert_true(fd >= 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(gwt_send_str(fd, "GET /users/2 HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
        struct gwt_response r;
        assert_int_equal(gwt_read_response(fd, &r, false), 0);
        assert_int_equal(r.status, 429);
        gwt_response_free(&r);
    }
    close(fd);
    assert_int_equal(gwt_backend_requests(gwt_fx.bport), LIMIT);
    /* The gateway's own endpoints are never rate limited. */
    struct gwt_response r;
    assert_int_equal(gwt_get(port, "/health", &r), 0);
    assert_int_equal(r.status, 200);
    gwt_response_free(&r);
    assert_int_equal(gwt_stat(port, "/stats", "requests_rate_limited"), 5);
    assert_int_equal(gwt_stat(port, "/stats", "requests_proxied"), LIMIT);
}

static void test_memory_store(void **state)
{
    const char *env[] = {"RATE_LIMIT_REQUESTS=5", "RATE_LIMIT_WINDOW_SECONDS=60", NULL};
    assert_int_equal(gwt_gateway_for(&gwa, &pa, gwt_fx.bport, env), 0);
    run_limit_sequence(pa);
}

static void test_redis_store(void **state)
{
    const char *env[] = {"RATE_LIMIT_REQUESTS=5", "RATE_LIMIT_WINDOW_SECONDS=60", gwt_fx.redis_url,
                         NULL};
    assert_int_equal(gwt_gateway_for(&gwa, &pa, gwt_fx.bport, env), 0);
    run_limit_sequence(pa);
    /* Every key under the prefix carries a TTL no longer than the window. */
    char **keys = NULL;
    int n = gwt_redis_keys(gwt_fx.rport, "rl*", &keys);
    assert_true(n >= 1);
    for (int i = 0; i < n; i++) {
        long long ttl = gwt_redis_ttl(gwt_fx.rport, keys[i]);
        if (!(ttl > 0 && ttl <= WINDOW)) {
            char k[256];
            snprintf(k, sizeof(k), "%s", keys[i]);
            gwt_strv_free(keys, n);
            fail_msg("redis key %s has TTL %lld, want (0, %d]", k, ttl, WINDOW);
        }
    }
    gwt_strv_free(keys, n);
    /* Nothing outside the prefix. */
    n = gwt_redis_keys(gwt_fx.rport, "*", &keys);
    gwt_strv_free(keys, n > 0 ? n : 0);
    int m = gwt_redis_keys(gwt_fx.rport, "rl*", &keys);
    gwt_strv_free(keys, m > 0 ? m : 0);
    assert_int_equal(n, m);
    assert_int_equal(gwt_stat(pa, "/stats", "redis_errors"), 0);
}

/* A custom prefix is used for every key. */
static void test_redis_key_prefix(void **state)
{
    const char *env[] = {"RATE_LIMIT_REQUESTS=5", gwt_fx.redis_url, "RATE_LIMIT_KEY_PREFIX=tst9",
                         NULL};
    assert_int_equal(gwt_gateway_for(&gwa, &pa, gwt_fx.bport, env), 0);
    struct gwt_response r;
    assert_int_equal(gwt_get(pa, "/users/1", &r), 0);
    assert_int_equal(r.status, 200);
    gwt_response_free(&r);
    char **keys = NULL;
    int n = gwt_redis_keys(gwt_fx.rport, "tst9*", &keys);
    gwt_strv_free(keys, n > 0 ? n : 0);
    assert_true(n >= 1);
    int all = gwt_redis_keys(gwt_fx.rport, "*", &keys);
    gwt_strv_free(keys, all > 0 ? all : 0);
    assert_int_equal(all, n);
}

/* A client over its limit is remembered in-process until its window ends:
 * emptying Redis does not let it through again. */
static void test_redis_over_limit_remembered(void **state)
{
    const char *env[] = {"RATE_LIMIT_REQUESTS=2", gwt_fx.redis_url, NULL};
    assert_int_equal(gwt_gateway_for(&gwa, &pa, gwt_fx.bport, env), 0);
    gwt_avoid_window_edge(WINDOW, 5);
    int want[] = {200, 200, 429};
    for (int i = 0; i < 3; i++) {
        struct gwt_response r;
        assert_int_equal(gwt_get(pa, "/users/1", &r), 0);
        assert_int_equal(r.status, want[i]);
        gwt_response_free(&r);
    }
    assert_int_equal(gwt_redis_cmd(gwt_fx.rport, "FLUSHALL"), 0);
    for (int i = 0; i < 6; i++) {
        struct gwt_response r;
        assert_int_equal(gwt_get(pa, "/users/1", &r), 0);
        if (r.status != 429)
            fail_msg("request %d after FLUSHALL: status %d, want 429 (over-limit client "
                     "must be remembered in-process)",
                     i + 1, r.status);
        gwt_response_free(&r);
    }
    assert_int_equal(gwt_backend_requests(gwt_fx.bport), 2);
}

/* Two gateways on one Redis: exactly LIMIT requests pass in total. */
static void test_redis_global_limit(void **state)
{
    const char *env[] = {"RATE_LIMIT_REQUESTS=5", "RATE_LIMIT_WINDOW_SECONDS=60", gwt_fx.redis_url,
                         NULL};
    assert_int_equal(gwt_gateway_for(&gwa, &pa, gwt_fx.bport, env), 0);
    assert_int_equal(gwt_gateway_for(&gwb, &pb, gwt_fx.bport, env), 0);
    gwt_avoid_window_edge(WINDOW, 5);
    int ok = 0, limited = 0;
    for (int i = 0; i < 12; i++) {
        struct gwt_response r;
        assert_int_equal(gwt_get(i % 2 ? pb : pa, "/users/1", &r), 0);
        if (r.status == 200)
            ok++;
        else if (r.status == 429)
            limited++;
        else
            fail_msg("unexpected status %d", r.status);
        gwt_response_free(&r);
    }
    assert_int_equal(ok, LIMIT);
    assert_int_equal(limited, 12 - LIMIT);
    assert_int_equal(gwt_backend_requests(gwt_fx.bport), LIMIT);
}

/* RATE_LIMIT_KEY=header:X-API-Key: each key has its own budget; no header
 * means the client address. */
static void test_key_by_header(void **state)
{
    const char *env[] = {"RATE_LIMIT_REQUESTS=2", "RATE_LIMIT_KEY=header:X-API-Key", NULL};
    assert_int_equal(gwt_gateway_for(&gwa, &pa, gwt_fx.bport, env), 0);
    gwt_avoid_window_edge(WINDOW, 5);
    static const struct {
        const char *hdr;
        int status;
    } seq[] = {
        {"X-API-Key: alpha\r\n", 200},
        {"X-API-Key: alpha\r\n", 200},
        {"X-API-Key: alpha\r\n", 429},
        {"X-API-Key: beta\r\n", 200},
        {"x-api-key: beta\r\n", 200},
        {"X-API-Key: beta\r\n", 429},
        {NULL, 200},
        {NULL, 200},
        {NULL, 429},
    };
    for (size_t i = 0; i < sizeof(seq) / sizeof(seq[0]); i++) {
        struct gwt_response r;
        long long t0, t1;
        do_get(pa, "/users/1", seq[i].hdr, &r, &t0, &t1);
        if (r.status != seq[i].status)
            fail_msg("request %zu (%s): status %d, want %d", i, seq[i].hdr ? seq[i].hdr : "no key",
                     r.status, seq[i].status);
        gwt_response_free(&r);
    }
    assert_int_equal(gwt_backend_requests(gwt_fx.bport), 6);
}

/* RATE_LIMIT_HEADERS=off: no rate-limit fields, but 429 keeps Retry-After. */
static void test_headers_off(void **state)
{
    const char *env[] = {"RATE_LIMIT_REQUESTS=1", "RATE_LIMIT_HEADERS=off", NULL};
    assert_int_equal(gwt_gateway_for(&gwa, &pa, gwt_fx.bport, env), 0);
    gwt_avoid_window_edge(WINDOW, 5);
    static const char *fields[] = {"X-RateLimit-Limit", "X-RateLimit-Remaining",
                                   "X-RateLimit-Reset", "RateLimit-Policy", "RateLimit"};
    for (int i = 0; i < 2; i++) {
        struct gwt_response r;
        assert_int_equal(gwt_get(pa, "/users/1", &r), 0);
        assert_int_equal(r.status, i == 0 ? 200 : 429);
        for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++)
            assert_null(gwt_header(&r, fields[f]));
        if (i == 1) {
            assert_non_null(gwt_header(&r, "Retry-After"));
            assert_true(atoi(gwt_header(&r, "Retry-After")) >= 1);
        }
        gwt_response_free(&r);
    }
}

/* RATE_LIMIT_DRY_RUN=on: over-limit requests pass, with r=0, and are counted. */
static void test_dry_run(void **state)
{
    const char *env[] = {"RATE_LIMIT_REQUESTS=1", "RATE_LIMIT_DRY_RUN=on", NULL};
    assert_int_equal(gwt_gateway_for(&gwa, &pa, gwt_fx.bport, env), 0);
    gwt_avoid_window_edge(WINDOW, 5);
    for (int i = 0; i < 3; i++) {
        struct gwt_response r;
        assert_int_equal(gwt_get(pa, "/users/1", &r), 0);
        assert_int_equal(r.status, 200);
        const char *rl = gwt_header(&r, "RateLimit");
        assert_non_null(rl);
        if (i > 0)
            assert_non_null(strstr(rl, ";r=0;"));
        gwt_response_free(&r);
    }
    assert_int_equal(gwt_backend_requests(gwt_fx.bport), 3);
    assert_int_equal(gwt_stat(pa, "/stats", "requests_rate_limited_dry_run"), 2);
    assert_int_equal(gwt_stat(pa, "/stats", "requests_rate_limited"), 0);
}

/* Redis unreachable, failure mode open: requests pass, errors are counted,
 * /health says degraded. */
static void test_redis_down_open(void **state)
{
    const char *url = gwt_dead_url("REDIS_URL", "redis");
    const char *env[] = {"RATE_LIMIT_REQUESTS=1", url, "RATE_LIMIT_FAILURE_MODE=open", NULL};
    assert_int_equal(gwt_gateway_for(&gwa, &pa, gwt_fx.bport, env), 0);
    for (int i = 0; i < 3; i++) {
        struct gwt_response r;
        assert_int_equal(gwt_get(pa, "/users/1", &r), 0);
        assert_int_equal(r.status, 200);
        gwt_response_free(&r);
    }
    assert_true(gwt_stat(pa, "/stats", "redis_errors") >= 1);
    struct gwt_response r;
    assert_int_equal(gwt_get(pa, "/health", &r), 0);
    assert_int_equal(r.status, 503);
    json_t *j = gwt_json(&r);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "degraded");
    assert_string_equal(json_string_value(json_object_get(j, "redis")), "disconnected");
    json_decref(j);
    gwt_response_free(&r);
}

/* Failure mode closed: 503 while Redis is unreachable, nothing proxied. */
static void test_redis_down_closed(void **state)
{
    const char *url = gwt_dead_url("REDIS_URL", "redis");
    const char *env[] = {url, "RATE_LIMIT_FAILURE_MODE=closed", NULL};
    assert_int_equal(gwt_gateway_for(&gwa, &pa, gwt_fx.bport, env), 0);
    struct gwt_response r;
    assert_int_equal(gwt_get(pa, "/users/1", &r), 0);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(gwt_header(&r, "Content-Type"), "application/problem+json"));
    gwt_response_free(&r);
    assert_int_equal(gwt_backend_requests(gwt_fx.bport), 0);
    /* Counted under its own result, in /stats and in /metrics. */
    assert_int_equal(gwt_stat(pa, "/stats", "requests_rejected_store"), 1);
    assert_int_equal(gwt_stat(pa, "/stats", "requests_bad"), 0);
    assert_int_equal(gwt_get(pa, "/metrics", &r), 0);
    assert_non_null(strstr(r.body, "gateway_requests_total{result=\"rejected_store\"} 1\n"));
    gwt_response_free(&r);
}

/* Failure mode local: the same limit is enforced from the in-process store. */
static void test_redis_down_local(void **state)
{
    const char *url = gwt_dead_url("REDIS_URL", "redis");
    const char *env[] = {url, "RATE_LIMIT_FAILURE_MODE=local", "RATE_LIMIT_REQUESTS=2", NULL};
    assert_int_equal(gwt_gateway_for(&gwa, &pa, gwt_fx.bport, env), 0);
    gwt_avoid_window_edge(WINDOW, 5);
    int want[] = {200, 200, 429};
    for (int i = 0; i < 3; i++) {
        struct gwt_response r;
        assert_int_equal(gwt_get(pa, "/users/1", &r), 0);
        assert_int_equal(r.status, want[i]);
        gwt_response_free(&r);
    }
}

static int group_setup(void **state)
{
    return gwt_suite_setup(GWT_FX_REDIS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        GWT_TEST(test_memory_store),
        GWT_TEST(test_redis_store),
        GWT_TEST(test_redis_key_prefix),
        GWT_TEST(test_redis_global_limit),
        GWT_TEST(test_redis_over_limit_remembered),
        GWT_TEST(test_key_by_header),
        GWT_TEST(test_headers_off),
        GWT_TEST(test_dry_run),
        GWT_TEST(test_redis_down_open),
        GWT_TEST(test_redis_down_closed),
        GWT_TEST(test_redis_down_local),
    };
    return cmocka_run_group_tests_name("gateway_ratelimit", tests, group_setup, gwt_suite_teardown);
}
