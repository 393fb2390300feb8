/*
 * Observability end to end (SPEC.md §4, issue 5): exact /stats and /metrics
 * after a known sequence (promtool on the live output), dry run, per-worker
 * connections, bounded cardinality, liveness vs readiness, and a real
 * Prometheus scraping the gateway and answering every dashboard query.
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

#include "gwt_obs.h"
#include "gwt_suite.h"
#include "gwtest.h"

#define CAPACITY_TYPE "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity"
#define DASHBOARD     GW_SOURCE_DIR "/deploy/grafana/gateway-dashboard.json"

/* Processes of one test, tracked for the teardown: static, since the
 * teardown runs after the test function returned. */
static struct gwt_proc gw, gw2, be, redis;

/* ---- helpers ------------------------------------------------------------ */

static void get_status(int port, const char *raw, int want)
{
    struct gwt_response r;
    int rc = gwt_http(port, raw, &r);
    if (rc != 0 || r.status != want)
        fail_msg("%.40s: rc %d status %d, want %d", raw, rc, r.status, want);
    gwt_response_free(&r);
}

static void get_path(int port, const char *path, int want)
{
    char raw[512];
    snprintf(raw, sizeof(raw), "GET %s HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", path);
    get_status(port, raw, want);
}

/* /stats through the counting admin connection; fails the test on error. */
static json_t *stats(struct gwt_admin *a)
{
    json_t *j = gwt_admin_json(a, "/stats");
    if (!json_is_object(j))
        fail_msg("GET /stats failed");
    return j;
}

/* Polls /stats (each poll counted in a->n) until field == want. */
static void wait_stats_field(struct gwt_admin *a, const char *field, long long want, int timeout_ms)
{
    long long deadline = gwt_now_ms() + timeout_ms, last = GWT_NO_VALUE;
    while (gwt_now_ms() < deadline) {
        json_t *j = stats(a);
        last = gwt_json_int(j, field, GWT_NO_VALUE);
        json_decref(j);
        if (last == want)
            return;
        usleep(10000); /* poll step */
    }
    fail_msg("/stats %s stayed %lld, want %lld (%d ms)", field, last, want, timeout_ms);
}

/* /metrics body through the admin connection (caller frees). */
static char *metrics(struct gwt_admin *a)
{
    struct gwt_response r;
    int rc = gwt_admin_get(a, "/metrics", &r);
    if (rc != 0 || r.status != 200)
        fail_msg("GET /metrics: rc %d status %d", rc, r.status);
    const char *ct = gwt_header(&r, "Content-Type");
    assert_non_null(ct);
    assert_non_null(strstr(ct, "version=0.0.4"));
    char *body = strdup(r.body);
    gwt_response_free(&r);
    assert_non_null(body);
    return body;
}

static void assert_sample(const char *text, const char *series, double want)
{
    double v = -1;
    int rc = gwt_prom_sample(text, series, &v);
    if (rc != 0)
        fail_msg("/metrics: no sample %s (%d)", series, rc);
    if (v != want)
        fail_msg("/metrics: %s is %g, want %g", series, v, want);
}

static void assert_promtool_ok(const char *text)
{
    char *out = NULL;
    int rc = gwt_promtool_check_metrics(text, strlen(text), &out);
    if (rc != 0)
        fail_msg("promtool check metrics exited %d:\n%s", rc, out ? out : "");
    free(out);
}

static void expect_int(json_t *j, const char *field, long long want)
{
    long long v = gwt_json_int(j, field, GWT_NO_VALUE);
    if (v != want)
        fail_msg("/stats %s = %lld, want %lld", field, v, want);
}

static double json_num(json_t *j, const char *obj, const char *field)
{
    json_t *v = json_object_get(json_object_get(j, obj), field);
    if (!json_is_number(v))
        fail_msg("/stats %s.%s missing", obj, field);
    return json_number_value(v);
}

/* ---- the known sequence --------------------------------------------------- */

enum { N_PROXIED = 3, K_REJECTED = 2, M_LIMITED = 2, N_BAD = 1 };

/* n proxied, one 400, one /slow holding the only in-flight slot while k
 * requests are refused 503 (MAX_QUEUE_LENGTH=0), one 502 with the backend
 * stopped, m rate limited: /stats and /metrics say exactly that, and
 * requests_total counts every request including the admin ones. */
static void test_known_sequence_exact(void **state)
{
    int port_be;
    assert_int_equal(gwt_backend_start(&be, &port_be, NULL), 0);
    gwt_track(&be);
    /* Allowed: n proxied + the slow one + k rejected + the 502; then m 429. */
    char limit[64];
    snprintf(limit, sizeof(limit), "RATE_LIMIT_REQUESTS=%d", N_PROXIED + 1 + K_REJECTED + 1);
    const char *env[] = {"WORKER_THREADS=2",
                         "MAX_CONCURRENT_REQUESTS=1",
                         "MAX_QUEUE_LENGTH=0",
                         "RATE_LIMIT_WINDOW_SECONDS=3600",
                         limit,
                         NULL};
    int gport;
    assert_int_equal(gwt_gateway_for(&gw, &gport, port_be, env), 0);
    gwt_avoid_window_edge(3600, 30);
    struct gwt_admin a;
    gwt_admin_init(&a, gport);

    for (int i = 0; i < N_PROXIED; i++) {
        char path[32];
        snprintf(path, sizeof(path), "/users/%d", i + 1);
        get_path(gport, path, 200);
    }
    /* Duplicate differing Content-Length: 400 at header parse (no quota). */
    get_status(gport,
               "GET /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
               400);

    struct gwt_async slow;
    assert_int_equal(gwt_async_start(&slow, gport,
                                     "GET /slow?ms=1500 HTTP/1.1\r\nHost: h\r\n"
                                     "Connection: close\r\n\r\n"),
                     0);
    wait_stats_field(&a, "in_flight", 1, 3000);
    for (int i = 0; i < K_REJECTED; i++) {
        struct gwt_response r;
        assert_int_equal(gwt_get(gport, "/users/1", &r), 0);
        gwt_assert_problem(&r, 503, CAPACITY_TYPE);
        gwt_response_free(&r);
    }
    assert_int_equal(gwt_async_join(&slow), 0);
    assert_int_equal(slow.resp.status, 200);
    gwt_async_free(&slow);

    /* The backend goes away: a clean 502 from the gateway. */
    assert_int_equal(gwt_stop(&be, SIGTERM, 5000), 0);
    {
        struct gwt_response r;
        assert_int_equal(gwt_get(gport, "/users/1", &r), 0);
        gwt_assert_problem(&r, 502, NULL);
        gwt_response_free(&r);
    }
    for (int i = 0; i < M_LIMITED; i++)
        get_path(gport, "/users/1", 429);

    const long long clients = N_PROXIED + N_BAD + 1 + K_REJECTED + 1 + M_LIMITED;
    json_t *j = stats(&a);
    /* requests_total counts at the request head, so this /stats is in it. */
    expect_int(j, "requests_total", clients + a.n);
    expect_int(j, "requests_proxied", N_PROXIED + 1);
    expect_int(j, "requests_rate_limited", M_LIMITED);
    expect_int(j, "requests_rate_limited_dry_run", 0);
    expect_int(j, "requests_rejected_queue", K_REJECTED);
    expect_int(j, "requests_failed_upstream", 1);
    expect_int(j, "requests_bad", N_BAD);
    expect_int(j, "redis_errors", 0);
    expect_int(j, "in_flight", 0);
    expect_int(j, "queue_length", 0);
    expect_int(j, "worker_threads", 2);
    assert_string_equal(json_string_value(json_object_get(j, "redis")), "disabled");
    json_t *wc = json_object_get(j, "worker_connections");
    assert_int_equal(json_array_size(wc), 2);
    long long per_worker =
        json_integer_value(json_array_get(wc, 0)) + json_integer_value(json_array_get(wc, 1));
    expect_int(j, "connections_active", per_worker);
    assert_true(per_worker >= 1); /* this admin connection at least */
    /* Latency of the 4 proxied requests: 3 fast, one of 1.5 s. The
     * percentiles come from the histogram: p99 interpolates inside the
     * (1 s, 2.5 s] bucket, p50 stays among the fast ones. */
    double p50 = json_num(j, "latency_ms", "p50"), p99 = json_num(j, "latency_ms", "p99");
    if (!(p50 < 1000.0 && p99 > 1000.0 && p99 <= 2500.0))
        fail_msg("latency_ms p50 %g, p99 %g: want p50 < 1000 < p99 <= 2500", p50, p99);
    json_decref(j);

    char *m = metrics(&a);
    assert_sample(m, "gateway_requests_received_total", (double)(clients + a.n));
    assert_sample(m, "gateway_requests_total{result=\"proxied\"}", N_PROXIED + 1);
    assert_sample(m, "gateway_requests_total{result=\"rate_limited\"}", M_LIMITED);
    assert_sample(m, "gateway_requests_total{result=\"rate_limited_dry_run\"}", 0);
    assert_sample(m, "gateway_requests_total{result=\"rejected_queue\"}", K_REJECTED);
    assert_sample(m, "gateway_requests_total{result=\"failed_upstream\"}", 1);
    assert_sample(m, "gateway_requests_total{result=\"bad_request\"}", N_BAD);
    assert_sample(m, "gateway_redis_errors_total", 0);
    assert_sample(m, "gateway_in_flight", 0);
    assert_sample(m, "gateway_in_flight_max", 1);
    assert_sample(m, "gateway_queue_length", 0);
    assert_sample(m, "gateway_queue_length_max", 0);
    assert_sample(m, "gateway_worker_threads", 2);
    assert_sample(m, "gateway_backend_up", 0);
    assert_sample(m, "gateway_build_info{version=\"" GW_VERSION "\"}", 1);
    /* Redis is not configured: no gateway_redis_up series at all. */
    assert_null(strstr(m, "gateway_redis_up"));
    /* Request and upstream histograms: the 4 proxied requests, the slow
     * one above 1 s; le is cumulative. */
    assert_sample(m, "gateway_request_duration_seconds_count", N_PROXIED + 1);
    assert_sample(m, "gateway_request_duration_seconds_bucket{le=\"+Inf\"}", N_PROXIED + 1);
    assert_sample(m, "gateway_request_duration_seconds_bucket{le=\"1\"}", N_PROXIED);
    assert_sample(m, "gateway_request_duration_seconds_bucket{le=\"2.5\"}", N_PROXIED + 1);
    assert_sample(m, "gateway_upstream_duration_seconds_count", N_PROXIED + 1);
    assert_sample(m, "gateway_upstream_duration_seconds_bucket{le=\"1\"}", N_PROXIED);
    double sum = -1;
    assert_int_equal(gwt_prom_sample(m, "gateway_request_duration_seconds_sum", &sum), 0);
    assert_true(sum >= 1.5 && sum < 10.0);
    /* Queue wait: every request that took a slot (n + slow + the 502), all
     * at once (0 s); the k refused ones never waited. */
    assert_sample(m, "gateway_queue_wait_seconds_count", N_PROXIED + 2);
    assert_sample(m, "gateway_queue_wait_seconds_bucket{le=\"0.0005\"}", N_PROXIED + 2);
    assert_promtool_ok(m);
    free(m);
    gwt_admin_close(&a);
}

/* Dry run: over-limit requests pass, counted as rate_limited_dry_run and
 * as their outcome (proxied), never as rate_limited. */
static void test_dry_run_counts(void **state)
{
    const char *env[] = {"RATE_LIMIT_DRY_RUN=on", "RATE_LIMIT_REQUESTS=1",
                         "RATE_LIMIT_WINDOW_SECONDS=3600", NULL};
    int gport;
    assert_int_equal(gwt_gateway_for(&gw, &gport, gwt_fx.bport, env), 0);
    gwt_avoid_window_edge(3600, 30);
    for (int i = 0; i < 3; i++)
        get_path(gport, "/users/7", 200);
    struct gwt_admin a;
    gwt_admin_init(&a, gport);
    json_t *j = stats(&a);
    expect_int(j, "requests_total", 3 + a.n);
    expect_int(j, "requests_proxied", 3);
    expect_int(j, "requests_rate_limited_dry_run", 2);
    expect_int(j, "requests_rate_limited", 0);
    json_decref(j);
    char *m = metrics(&a);
    assert_sample(m, "gateway_requests_total{result=\"rate_limited_dry_run\"}", 2);
    assert_sample(m, "gateway_requests_total{result=\"proxied\"}", 3);
    assert_sample(m, "gateway_requests_total{result=\"rate_limited\"}", 0);
    assert_promtool_ok(m);
    free(m);
    gwt_admin_close(&a);
}

/* /stats lists open connections per worker; with every count settled
 * before the next connect, the acceptor's least-loaded choice spreads 6
 * connections over 3 workers exactly 2/2/2. */
static void test_worker_connections(void **state)
{
    const char *env[] = {"WORKER_THREADS=3", NULL};
    int gport;
    assert_int_equal(gwt_gateway_for(&gw, &gport, gwt_fx.bport, env), 0);
    struct gwt_admin a;
    gwt_admin_init(&a, gport);
    wait_stats_field(&a, "connections_active", 1, 3000); /* the admin one */
    enum { IDLE = 5 };
    int fds[IDLE];
    for (int i = 0; i < IDLE; i++) {
        fds[i] = gwt_connect(gport);
        assert_true(fds[i] >= 0);
        wait_stats_field(&a, "connections_active", 2 + i, 3000);
    }
    json_t *j = stats(&a);
    json_t *wc = json_object_get(j, "worker_connections");
    assert_int_equal(json_array_size(wc), 3);
    for (size_t i = 0; i < 3; i++) {
        long long n = json_integer_value(json_array_get(wc, i));
        if (n != 2)
            fail_msg("worker_connections[%zu] = %lld, want 2 (6 connections, 3 workers)", i, n);
    }
    json_decref(j);
    char *m = metrics(&a);
    assert_sample(m, "gateway_connections_active", IDLE + 1);
    free(m);
    for (int i = 0; i < IDLE; i++)
        close(fds[i]);
    wait_stats_field(&a, "connections_active", 1, 3000);
    gwt_admin_close(&a);
}

/* No client-controlled value becomes a label: after requests with odd
 * paths, methods, hosts, API keys, forwarded-for chains and malformed
 * requests, /metrics has exactly the same series as before, and none of
 * the client's strings appear in /metrics or /stats. */
static void test_cardinality_bounded(void **state)
{
    const char *env[] = {"RATE_LIMIT_KEY=header:X-API-Key", "RATE_LIMIT_REQUESTS=2", NULL};
    int gport;
    assert_int_equal(gwt_gateway_for(&gw, &gport, gwt_fx.bport, env), 0);
    struct gwt_admin a;
    gwt_admin_init(&a, gport);
    char *before = metrics(&a);
    char **s1 = NULL;
    int n1 = gwt_prom_series(before, &s1);
    assert_true(n1 > 20);

    static const char *const methods[] = {"GET", "POST", "DELETE", "PURGE", "OPTIONS"};
    for (int i = 0; i < 25; i++) {
        char raw[512];
        snprintf(raw, sizeof(raw),
                 "%s /zz%dtoken%d?q=zzq%d HTTP/1.1\r\nHost: zzhost%d.example\r\n"
                 "X-API-Key: zzkey%d\r\nX-Forwarded-For: 10.9.%d.1\r\n"
                 "Content-Length: 0\r\nConnection: close\r\n\r\n",
                 methods[i % 5], i, i, i, i, i % 3, i);
        struct gwt_response r;
        assert_int_equal(gwt_http(gport, raw, &r), 0);
        assert_true(r.status > 0);
        gwt_response_free(&r);
    }
    get_status(gport, "GET /zzbad HTTP/1.1\r\nHost: zzbad\r\nBad Header: x\r\n\r\n", 400);
    get_status(gport, "GET /zzconnect HTTP/1.1\r\nHost: h\r\nContent-Length: x\r\n\r\n", 400);

    char *after = metrics(&a);
    char **s2 = NULL;
    int n2 = gwt_prom_series(after, &s2);
    if (n1 != n2)
        fail_msg("series count changed with client traffic: %d -> %d", n1, n2);
    for (int i = 0; i < n1; i++)
        assert_string_equal(s1[i], s2[i]);
    assert_null(strstr(after, "zz"));
    json_t *j = stats(&a);
    char *text = json_dumps(j, 0);
    assert_non_null(text);
    assert_null(strstr(text, "zz"));
    /* Some were limited (2 per key), so the traffic reached several paths. */
    assert_true(gwt_json_int(j, "requests_rate_limited", 0) > 0);
    assert_true(gwt_json_int(j, "requests_proxied", 0) > 0);
    free(text);
    json_decref(j);
    gwt_strv_free(s1, n1);
    gwt_strv_free(s2, n2);
    free(before);
    free(after);
    gwt_admin_close(&a);
}

/* Liveness (/health?probe=live) answers 200 while the process serves even
 * with the backend down; readiness (/health) says 503 degraded then, and
 * /metrics shows gateway_backend_up 0. */
static void test_health_live_vs_ready(void **state)
{
    int dead = gwt_free_port();
    assert_true(dead > 0);
    char burl[64];
    snprintf(burl, sizeof(burl), "BACKEND_URL=http://127.0.0.1:%d", dead);
    const char *env[] = {burl, NULL};
    int gport;
    assert_int_equal(gwt_gateway_for(&gw, &gport, gwt_fx.bport, env), 0);

    struct gwt_response r;
    assert_int_equal(gwt_get(gport, "/health?probe=live", &r), 0);
    assert_int_equal(r.status, 200);
    json_t *j = gwt_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "ok");
    assert_true(json_is_integer(json_object_get(j, "uptime_seconds")));
    assert_null(json_object_get(j, "backend")); /* no dependency probed */
    json_decref(j);
    gwt_response_free(&r);

    assert_int_equal(gwt_http(gport, "HEAD /health?probe=live HTTP/1.1\r\nHost: h\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    gwt_response_free(&r);

    assert_int_equal(gwt_get(gport, "/health", &r), 0);
    assert_int_equal(r.status, 503);
    j = gwt_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "degraded");
    assert_string_equal(json_string_value(json_object_get(j, "backend")), "disconnected");
    json_decref(j);
    gwt_response_free(&r);

    struct gwt_admin a;
    gwt_admin_init(&a, gport);
    char *m = metrics(&a);
    assert_sample(m, "gateway_backend_up", 0);
    free(m);
    gwt_admin_close(&a);

    /* The same gateway in front of a live backend is ready. */
    char good[64];
    snprintf(good, sizeof(good), "BACKEND_URL=http://127.0.0.1:%d", gwt_fx.bport);
    const char *env2[] = {good, NULL};
    int gport2;
    assert_int_equal(gwt_gateway_for(&gw2, &gport2, gwt_fx.bport, env2), 0);
    assert_int_equal(gwt_get(gport2, "/health", &r), 0);
    assert_int_equal(r.status, 200);
    gwt_response_free(&r);
}

/* ---- a real Prometheus ---------------------------------------------------- */

/* Value of the sample of a query result whose label name has value val
 * (val NULL: the first sample), or -1 when absent. */
static double result_value(json_t *result, const char *name, const char *val)
{
    size_t i;
    json_t *s;
    json_array_foreach(result, i, s)
    {
        json_t *metric = json_object_get(s, "metric");
        const char *have = json_string_value(json_object_get(metric, name ? name : ""));
        if (val && (!have || strcmp(have, val) != 0))
            continue;
        const char *v = json_string_value(json_array_get(json_object_get(s, "value"), 1));
        return v ? strtod(v, NULL) : -1;
    }
    return -1;
}

/* Replaces every occurrence of from in s (malloc'd, freed) by to. */
static char *replace_all(char *s, const char *from, const char *to)
{
    size_t fl = strlen(from), tl = strlen(to);
    for (char *at = strstr(s, from); at; at = strstr(s, from)) {
        size_t off = (size_t)(at - s);
        char *n = malloc(strlen(s) - fl + tl + 1);
        assert_non_null(n);
        memcpy(n, s, off);
        memcpy(n + off, to, tl);
        strcpy(n + off + tl, at + fl);
        free(s);
        s = n;
    }
    return s;
}

/* Every "expr" of every panel target in the dashboard, with Grafana's
 * variables made concrete ($instance: all, $__rate_interval: 1m). */
static int dashboard_exprs(char ***out)
{
    json_error_t e;
    json_t *d = json_load_file(DASHBOARD, 0, &e);
    if (!d)
        fail_msg("%s: %s (line %d)", DASHBOARD, e.text, e.line);
    char **v = calloc(64, sizeof(*v));
    assert_non_null(v);
    int n = 0;
    size_t i, k;
    json_t *panel, *t;
    json_array_foreach(json_object_get(d, "panels"), i, panel)
    {
        json_array_foreach(json_object_get(panel, "targets"), k, t)
        {
            const char *expr = json_string_value(json_object_get(t, "expr"));
            if (!expr || n == 64)
                continue;
            char *x = strdup(expr);
            assert_non_null(x);
            x = replace_all(x, "$__rate_interval", "1m");
            x = replace_all(x, "$instance", ".*");
            v[n++] = x;
        }
    }
    json_decref(d);
    *out = v;
    return n;
}

/* Debian's prometheus scrapes the gateway every second: the target is up,
 * gateway_requests_total has the values of a known sequence, and every
 * query of the Grafana dashboard evaluates to data. */
static void test_real_prometheus(void **state)
{
    if (access("/usr/bin/prometheus", X_OK) != 0)
        fail_msg("/usr/bin/prometheus is missing: install Debian's prometheus (make deps)");
    int rport;
    assert_int_equal(gwt_redis_start(&redis, &rport), 0);
    gwt_track(&redis);
    char rurl[64];
    snprintf(rurl, sizeof(rurl), "REDIS_URL=redis://127.0.0.1:%d", rport);
    const char *env[] = {rurl, "RATE_LIMIT_REQUESTS=3", "RATE_LIMIT_WINDOW_SECONDS=3600", NULL};
    int gport;
    assert_int_equal(gwt_gateway_for(&gw, &gport, gwt_fx.bport, env), 0);
    gwt_avoid_window_edge(3600, 30);
    for (int i = 0; i < 5; i++)
        get_path(gport, "/users/3", i < 3 ? 200 : 429);

    struct gwt_prometheus prom;
    int rc = gwt_prometheus_start(&prom, "gateway", gport, "/metrics", 15000);
    if (rc != 0)
        fail_msg("prometheus did not start: %d", rc);

    /* Bounded wait for a scrape showing the target up with our values. */
    char err[512] = "";
    double up = -1, proxied = -1, limited = -1;
    long long deadline = gwt_now_ms() + 20000;
    while (gwt_now_ms() < deadline) {
        json_t *r = gwt_prometheus_query(&prom, "up{job=\"gateway\"}", err, sizeof(err));
        up = r ? result_value(r, NULL, NULL) : -1;
        json_decref(r);
        r = gwt_prometheus_query(&prom, "gateway_requests_total", err, sizeof(err));
        proxied = r ? result_value(r, "result", "proxied") : -1;
        limited = r ? result_value(r, "result", "rate_limited") : -1;
        json_decref(r);
        if (up == 1 && proxied == 3 && limited == 2)
            break;
        usleep(200000); /* scrape interval is 1 s */
    }
    if (!(up == 1 && proxied == 3 && limited == 2)) {
        gwt_log_dump(&prom.proc, 3000);
        int stop = gwt_prometheus_stop(&prom);
        fail_msg("after 20 s: up %g, proxied %g, rate_limited %g (%s; stop %d)", up, proxied,
                 limited, err, stop);
    }

    /* Every dashboard query evaluates to data once two scrapes exist (the
     * rate() ones need two samples). */
    char **exprs = NULL;
    int n = dashboard_exprs(&exprs);
    assert_true(n >= 6);
    int pending = n;
    deadline = gwt_now_ms() + 15000;
    bool *done = calloc((size_t)n, sizeof(bool));
    assert_non_null(done);
    while (pending > 0 && gwt_now_ms() < deadline) {
        for (int i = 0; i < n; i++) {
            if (done[i])
                continue;
            json_t *r = gwt_prometheus_query(&prom, exprs[i], err, sizeof(err));
            if (!r) {
                char msg[600];
                snprintf(msg, sizeof(msg), "%s", err);
                gwt_prometheus_stop(&prom);
                fail_msg("dashboard query rejected: %s: %s", exprs[i], msg);
            }
            if (json_array_size(r) > 0) {
                done[i] = true;
                pending--;
            }
            json_decref(r);
        }
        if (pending > 0)
            usleep(250000);
    }
    for (int i = 0; i < n; i++) {
        if (!done[i]) {
            char q[512];
            snprintf(q, sizeof(q), "%s", exprs[i]);
            gwt_prometheus_stop(&prom);
            fail_msg("dashboard query has no data after 15 s: %s", q);
        }
    }
    json_t *r = gwt_prometheus_query(&prom, "gateway_redis_up", err, sizeof(err));
    assert_non_null(r);
    assert_true(result_value(r, NULL, NULL) == 1);
    json_decref(r);
    for (int i = 0; i < n; i++)
        free(exprs[i]);
    free(exprs);
    free(done);

    char dir[256];
    snprintf(dir, sizeof(dir), "%s", prom.dir);
    assert_int_equal(gwt_prometheus_stop(&prom), 0);
    assert_int_not_equal(access(dir, F_OK), 0); /* temporary directory removed */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        GWT_TEST(test_known_sequence_exact), GWT_TEST(test_dry_run_counts),
        GWT_TEST(test_worker_connections),   GWT_TEST(test_cardinality_bounded),
        GWT_TEST(test_health_live_vs_ready), GWT_TEST(test_real_prometheus),
    };
    return cmocka_run_group_tests(tests, gwt_suite_setup_backend, gwt_suite_teardown);
}
