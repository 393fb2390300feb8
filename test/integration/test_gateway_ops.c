/*
 * Integration tests of the gateway as an operator sees it (SPEC.md sections
 * 2, 4 and 7): /health in good and degraded states, /stats counters after a
 * known sequence, /metrics, the access log, graceful drain on SIGTERM,
 * --check-config, --env-file, --healthcheck, --version and --help.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "gwt_suite.h"
#include "gwtest.h"

static json_t *get_json(int port, const char *path, int want_status)
{
    struct gwt_response r;
    assert_int_equal(gwt_get(port, path, &r), 0);
    assert_int_equal(r.status, want_status);
    const char *ct = gwt_header(&r, "Content-Type");
    assert_non_null(ct);
    assert_non_null(strstr(ct, "application/json"));
    json_t *j = gwt_json(&r);
    if (j == NULL)
        fail_msg("%s: body is not JSON: %s", path, r.body);
    gwt_response_free(&r);
    return j;
}

static const char *jstr(json_t *j, const char *key)
{
    json_t *v = json_object_get(j, key);
    if (!json_is_string(v))
        fail_msg("JSON member %s missing or not a string", key);
    return json_string_value(v);
}

static void test_health_ok(void **state)
{
    gwt_suite_start_gw(NULL);
    json_t *j = get_json(gwt_fx.gport, "/health", 200);
    assert_string_equal(jstr(j, "status"), "ok");
    assert_string_equal(jstr(j, "redis"), "disabled");
    assert_string_equal(jstr(j, "backend"), "connected");
    assert_true(json_is_integer(json_object_get(j, "uptime_seconds")));
    assert_true(json_integer_value(json_object_get(j, "uptime_seconds")) >= 0);
    json_decref(j);
    /* Never forwarded, never rate limited. */
    long long reqs = -1;
    assert_int_equal(gwt_backend_stats(gwt_fx.bport, &reqs, NULL), 0);
    assert_int_equal(reqs, 0);
}

static struct gwt_proc redis;

static void test_health_with_redis(void **state)
{
    int rport = 0;
    assert_int_equal(gwt_redis_start(&redis, &rport), 0);
    gwt_track(&redis);
    char url[64];
    snprintf(url, sizeof(url), "REDIS_URL=redis://127.0.0.1:%d", rport);
    const char *env[] = {url, NULL};
    gwt_suite_start_gw(env);
    json_t *j = get_json(gwt_fx.gport, "/health", 200);
    assert_string_equal(jstr(j, "status"), "ok");
    assert_string_equal(jstr(j, "redis"), "connected");
    json_decref(j);
    /* Redis goes away: degraded (the probe is cached for at most 1 s, maybe
     * per worker, so poll until a 503 comes and check that one). */
    assert_int_equal(gwt_stop(&redis, SIGKILL, 3000), -SIGKILL);
    long long deadline = gwt_now_ms() + 3000;
    j = NULL;
    while (j == NULL && gwt_now_ms() < deadline) {
        struct gwt_response r;
        assert_int_equal(gwt_get(gwt_fx.gport, "/health", &r), 0);
        if (r.status == 503)
            j = gwt_json(&r);
        else
            assert_int_equal(r.status, 200);
        gwt_response_free(&r);
        if (j == NULL)
            usleep(50000);
    }
    if (j == NULL)
        fail_msg("/health did not turn 503 within 3 s of Redis dying");
    assert_string_equal(jstr(j, "status"), "degraded");
    assert_string_equal(jstr(j, "redis"), "disconnected");
    json_decref(j);
    gwt_proc_cleanup(&redis);
    /* Fail open by default: still serving. */
    gwt_assert_serves(gwt_fx.gport, "/users/1");
}

static void test_health_backend_down(void **state)
{
    const char *env[] = {gwt_dead_url("BACKEND_URL", "http"), NULL};
    gwt_suite_start_gw(env);
    json_t *j = get_json(gwt_fx.gport, "/health", 503);
    assert_string_equal(jstr(j, "status"), "degraded");
    assert_string_equal(jstr(j, "backend"), "disconnected");
    assert_string_equal(jstr(j, "redis"), "disabled");
    json_decref(j);
    /* --healthcheck checks liveness by default: the gateway serves, so it
     * passes with the backend down (a restart would not bring it back);
     * =live says the same. */
    char p[32];
    snprintf(p, sizeof(p), "GATEWAY_PORT=%d", gwt_fx.gport);
    const char *henv[] = {p, NULL};
    const char *live[] = {"--healthcheck", NULL};
    const char *live2[] = {"--healthcheck=live", NULL};
    char *out = NULL;
    assert_int_equal(gwt_gateway_run(live, henv, 8000, &out, NULL), 0);
    assert_non_null(out);
    assert_string_equal(out, "healthy\n");
    free(out);
    assert_int_equal(gwt_gateway_run(live2, henv, 8000, NULL, NULL), 0);
    /* --healthcheck=ready is readiness: fails with the reason on one line. */
    const char *ready[] = {"--healthcheck=ready", NULL};
    out = NULL;
    assert_int_equal(gwt_gateway_run(ready, henv, 8000, &out, NULL), 1);
    assert_non_null(out);
    assert_non_null(strstr(out, "unhealthy: /health answered 503: "));
    assert_non_null(strstr(out, "\"backend\":\"disconnected\""));
    free(out);
    /* Any other mode is a usage error (SPEC.md §2: exit 2). */
    const char *bad[] = {"--healthcheck=deep", NULL};
    char *err = NULL;
    assert_int_equal(gwt_gateway_run(bad, henv, 5000, NULL, &err), 2);
    assert_non_null(err);
    assert_non_null(strstr(err, "--healthcheck=deep"));
    free(err);
}

/* Custom endpoint paths; the default paths are then proxied. */
static void test_custom_admin_paths(void **state)
{
    const char *env[] = {"HEALTH_PATH=/_gw/health", "STATS_PATH=/_gw/stats",
                         "METRICS_PATH=/_gw/metrics", NULL};
    gwt_suite_start_gw(env);
    json_t *j = get_json(gwt_fx.gport, "/_gw/health", 200);
    assert_string_equal(jstr(j, "status"), "ok");
    json_decref(j);
    j = get_json(gwt_fx.gport, "/_gw/stats", 200);
    assert_true(json_is_integer(json_object_get(j, "requests_total")));
    json_decref(j);
    /* /stats now belongs to the backend (its own counters). */
    j = get_json(gwt_fx.gport, "/stats", 200);
    assert_true(json_is_integer(json_object_get(j, "max_concurrency")));
    json_decref(j);
}

static const char *stats_fields[] = {
    "requests_total",
    "requests_proxied",
    "requests_rate_limited",
    "requests_rejected_queue",
    "requests_failed_upstream",
    "requests_bad",
    "in_flight",
    "queue_length",
    "connections_active",
    "redis_errors",
    "uptime_seconds",
    "worker_threads",
};

/* A known sequence: 3 proxied, 2 rate limited, 1 bad request; the counters
 * say exactly that. (502/504 counting: test_gateway_proxy.) */
static void test_stats_counters(void **state)
{
    const char *env[] = {"RATE_LIMIT_REQUESTS=3", "WORKER_THREADS=3", NULL};
    gwt_suite_start_gw(env);
    gwt_avoid_window_edge(60, 5);
    struct gwt_response r;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(gwt_get(gwt_fx.gport, "/users/1", &r), 0);
        assert_int_equal(r.status, 200);
        gwt_response_free(&r);
    }
    for (int i = 0; i < 2; i++) {
        assert_int_equal(gwt_get(gwt_fx.gport, "/users/1", &r), 0);
        assert_int_equal(r.status, 429);
        gwt_response_free(&r);
    }
    assert_int_equal(gwt_http(gwt_fx.gport,
                              "GET /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n"
                              "Content-Length: 2\r\n\r\nab",
                              &r),
                     0);
    assert_int_equal(r.status, 400);
    gwt_response_free(&r);

    json_t *j = get_json(gwt_fx.gport, "/stats", 200);
    for (size_t i = 0; i < sizeof(stats_fields) / sizeof(stats_fields[0]); i++) {
        if (!json_is_integer(json_object_get(j, stats_fields[i])))
            fail_msg("/stats: %s missing or not an integer", stats_fields[i]);
    }
    json_t *lat = json_object_get(j, "latency_ms");
    assert_true(json_is_object(lat));
    assert_true(json_is_number(json_object_get(lat, "p50")));
    assert_true(json_is_number(json_object_get(lat, "p90")));
    assert_true(json_is_number(json_object_get(lat, "p99")));
    assert_true(json_number_value(json_object_get(lat, "p50")) >= 0);
    assert_true(json_number_value(json_object_get(lat, "p50")) <=
                json_number_value(json_object_get(lat, "p99")));
    assert_int_equal(gwt_json_int(j, "requests_proxied", -1), 3);
    assert_int_equal(gwt_json_int(j, "requests_rate_limited", -1), 2);
    assert_int_equal(gwt_json_int(j, "requests_bad", -1), 1);
    assert_int_equal(gwt_json_int(j, "requests_failed_upstream", -1), 0);
    assert_int_equal(gwt_json_int(j, "requests_rejected_queue", -1), 0);
    assert_int_equal(gwt_json_int(j, "in_flight", -1), 0);
    assert_int_equal(gwt_json_int(j, "queue_length", -1), 0);
    assert_int_equal(gwt_json_int(j, "redis_errors", -1), 0);
    assert_int_equal(gwt_json_int(j, "worker_threads", -1), 3);
    assert_true(gwt_json_int(j, "connections_active", -1) >= 1);
    assert_true(gwt_json_int(j, "uptime_seconds", -1) >= 0);
    /* 6 client requests, plus possibly this /stats request itself. */
    long long total = gwt_json_int(j, "requests_total", -1);
    if (total < 6 || total > 7)
        fail_msg("requests_total %lld, want 6 (or 7 counting /stats)", total);
    json_decref(j);
}

/* Prometheus text format with the gateway_ prefix; promtool when present. */
static void test_metrics(void **state)
{
    gwt_suite_start_gw(NULL);
    gwt_assert_serves(gwt_fx.gport, "/users/1");
    struct gwt_response r;
    assert_int_equal(gwt_get(gwt_fx.gport, "/metrics", &r), 0);
    assert_int_equal(r.status, 200);
    const char *ct = gwt_header(&r, "Content-Type");
    assert_non_null(ct);
    assert_non_null(strstr(ct, "text/plain"));
    assert_non_null(strstr(ct, "version=0.0.4"));
    assert_non_null(strstr(r.body, "# TYPE gateway_"));
    assert_non_null(strstr(r.body, "_total"));
    assert_non_null(strstr(r.body, "le=\"+Inf\""));
    /* Every sample line is prefixed gateway_. */
    for (char *line = r.body; line && *line;) {
        char *nl = strchr(line, '\n');
        if (*line != '#' && *line != '\n' && strncmp(line, "gateway_", 8) != 0)
            fail_msg("metric line without gateway_ prefix: %.60s", line);
        line = nl ? nl + 1 : NULL;
    }
    if (access("/usr/bin/promtool", X_OK) == 0) {
        char path[] = "/tmp/gwtest-metrics-XXXXXX";
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, r.body, r.body_len), (ssize_t)r.body_len);
        close(fd);
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "promtool check metrics < %s", path);
        const char *argv[] = {"sh", "-c", cmd, NULL};
        char *out = NULL, *err = NULL;
        int rc = gwt_run(argv, NULL, 10000, &out, &err);
        unlink(path);
        if (rc != 0)
            fail_msg("promtool check metrics: %d\n%s%s", rc, out ? out : "", err ? err : "");
        free(out);
        free(err);
    }
    gwt_response_free(&r);
}

/* Every line on stdout is a JSON object (diagnostics go to stderr). */
static void assert_stdout_all_json(const struct gwt_proc *p)
{
    char *out = gwt_out_read(p);
    assert_non_null(out);
    int lines = 0;
    for (char *line = out; *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        if (*line) {
            json_error_t e;
            json_t *j = json_loads(line, 0, &e);
            if (!json_is_object(j)) {
                char copy[200];
                snprintf(copy, sizeof(copy), "%s", line);
                free(out);
                fail_msg("stdout line is not a JSON object: %s", copy);
            }
            json_decref(j);
            lines++;
        }
        if (!nl)
            break;
        line = nl + 1;
    }
    free(out);
    assert_true(lines >= 1);
}

/* One JSON line per request on stdout with the SPEC fields. */
static void test_access_log(void **state)
{
    char burl[64];
    snprintf(burl, sizeof(burl), "BACKEND_URL=http://127.0.0.1:%d", gwt_fx.bport);
    const char *env0[] = {burl, "WORKER_THREADS=2", "RATE_LIMIT_REQUESTS=100000", NULL};
    int rc = gwt_gateway_start_split(&gwt_fx.gw, &gwt_fx.gport, env0);
    gwt_track(&gwt_fx.gw);
    assert_int_equal(rc, 0);
    struct gwt_response r;
    assert_int_equal(gwt_get(gwt_fx.gport, "/users/4242?probe=access-log", &r), 0);
    assert_int_equal(r.status, 200);
    size_t body_len = r.body_len;
    gwt_response_free(&r);
    char line[4096];
    assert_int_equal(gwt_wait_out(&gwt_fx.gw, "/users/4242", 3000, line, sizeof(line)), 0);
    json_error_t err;
    json_t *j = json_loads(line, 0, &err);
    if (j == NULL)
        fail_msg("access log line is not JSON: %s", line);
    static const char *fields[] = {"ts",         "client",      "method",      "path",   "status",
                                   "bytes_sent", "duration_ms", "upstream_ms", "limited"};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        if (json_object_get(j, fields[i]) == NULL)
            fail_msg("access log line lacks \"%s\": %s", fields[i], line);
    }
    assert_string_equal(jstr(j, "method"), "GET");
    assert_non_null(strstr(jstr(j, "path"), "/users/4242"));
    assert_non_null(strstr(jstr(j, "client"), "127.0.0.1"));
    assert_int_equal(gwt_json_int(j, "status", -1), 200);
    assert_true(gwt_json_int(j, "bytes_sent", -1) >= (long long)body_len);
    assert_true(json_is_number(json_object_get(j, "duration_ms")));
    assert_true(json_is_number(json_object_get(j, "upstream_ms")));
    assert_true(json_is_false(json_object_get(j, "limited")));
    json_decref(j);
    /* Not on stderr. */
    char *stderr_text = gwt_log_read(&gwt_fx.gw);
    assert_non_null(stderr_text);
    bool on_stderr = strstr(stderr_text, "/users/4242") != NULL;
    free(stderr_text);
    assert_false(on_stderr);
    assert_stdout_all_json(&gwt_fx.gw);

    /* A 429 is logged with limited=true. */
    assert_int_equal(gwt_stop(&gwt_fx.gw, SIGTERM, 5000), 0);
    gwt_proc_cleanup(&gwt_fx.gw);
    const char *env[] = {"RATE_LIMIT_REQUESTS=1", NULL};
    gwt_suite_start_gw(env);
    gwt_avoid_window_edge(60, 3);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(gwt_get(gwt_fx.gport, "/users/4343", &r), 0);
        assert_int_equal(r.status, i == 0 ? 200 : 429);
        gwt_response_free(&r);
    }
    assert_int_equal(gwt_wait_log(&gwt_fx.gw, "\"status\":429", 3000, line, sizeof(line)), 0);
    j = json_loads(line, 0, &err);
    assert_non_null(j);
    assert_true(json_is_true(json_object_get(j, "limited")));
    json_decref(j);
}

/* ACCESS_LOG=off: no access lines, even after the drain flushed everything. */
static void test_access_log_off(void **state)
{
    const char *env[] = {"ACCESS_LOG=off", NULL};
    gwt_suite_start_gw(env);
    struct gwt_response r;
    assert_int_equal(gwt_get(gwt_fx.gport, "/users/5151", &r), 0);
    assert_int_equal(r.status, 200);
    gwt_response_free(&r);
    assert_int_equal(gwt_stop(&gwt_fx.gw, SIGTERM, 5000), 0);
    char *log = gwt_log_read(&gwt_fx.gw);
    assert_non_null(log);
    bool found = strstr(log, "/users/5151") != NULL;
    free(log);
    gwt_proc_cleanup(&gwt_fx.gw);
    assert_false(found);
}

/* SIGTERM while a request is in flight: it completes with 200, new
 * connections are refused, and the gateway exits 0. */
static void test_sigterm_drains(void **state)
{
    gwt_suite_start_gw(NULL);
    struct gwt_async a;
    assert_int_equal(gwt_async_start(&a, gwt_fx.gport,
                                     "GET /slow?ms=500 HTTP/1.1\r\nHost: h\r\nConnection: "
                                     "close\r\n\r\n"),
                     0);
    assert_int_equal(gwt_wait_stat(gwt_fx.gport, "/stats", "in_flight", 1, 3000), 0);
    long long t0 = gwt_now_ms();
    int st = gwt_stop(&gwt_fx.gw, SIGTERM, 5000);
    long long ms = gwt_now_ms() - t0;
    assert_int_equal(gwt_async_join(&a), 0);
    assert_int_equal(a.resp.status, 200);
    json_t *j = gwt_json(&a.resp);
    assert_non_null(j);
    assert_int_equal(gwt_json_int(j, "slept_ms", -1), 500);
    json_decref(j);
    gwt_async_free(&a);
    assert_int_equal(st, 0);
    assert_true(ms < 4000);
    /* Gone: the port no longer accepts. */
    assert_true(gwt_connect(gwt_fx.gport) < 0);
    gwt_proc_cleanup(&gwt_fx.gw);
}

/* When SHUTDOWN_TIMEOUT_MS runs out, a request still queued for an in-flight
 * slot gets a 503 (it never reached the backend), not a bare close. */
static void test_forced_shutdown_answers_queued(void **state)
{
    const char *env[] = {"MAX_CONCURRENT_REQUESTS=1", "QUEUE_TIMEOUT_MS=30000",
                         "SHUTDOWN_TIMEOUT_MS=300", NULL};
    gwt_suite_start_gw(env);
    struct gwt_async holder, queued;
    assert_int_equal(
        gwt_async_start(&holder, gwt_fx.gport, "GET /slow?ms=3000 HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    assert_int_equal(gwt_wait_stat(gwt_fx.gport, "/stats", "in_flight", 1, 3000), 0);
    assert_int_equal(
        gwt_async_start(&queued, gwt_fx.gport, "GET /users/1 HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    assert_int_equal(gwt_wait_stat(gwt_fx.gport, "/stats", "queue_length", 1, 3000), 0);
    long long t0 = gwt_now_ms();
    assert_int_equal(gwt_stop(&gwt_fx.gw, SIGTERM, 5000), 0);
    assert_true(gwt_now_ms() - t0 < 2500);
    assert_int_equal(gwt_async_join(&queued), 0);
    assert_int_equal(queued.resp.status, 503);
    assert_string_equal(gwt_header(&queued.resp, "Retry-After"), "1");
    assert_string_equal(gwt_header(&queued.resp, "Connection"), "close");
    gwt_async_free(&queued);
    gwt_async_join(&holder); /* cut off by the forced close: no answer expected */
    gwt_async_free(&holder);
    gwt_proc_cleanup(&gwt_fx.gw);
}

/* SIGTERM on an idle keep-alive client does not wait for it. */
static void test_sigterm_idle_client(void **state)
{
    gwt_suite_start_gw(NULL);
    int fd = gwt_connect(gwt_fx.gport);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd, "GET /users/1 HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    struct gwt_response r;
    assert_int_equal(gwt_read_response(fd, &r, false), 0);
    assert_int_equal(r.status, 200);
    gwt_response_free(&r);
    long long t0 = gwt_now_ms();
    assert_int_equal(gwt_stop(&gwt_fx.gw, SIGTERM, 5000), 0);
    assert_true(gwt_now_ms() - t0 < 3000);
    assert_true(gwt_peer_closed(fd, 1000));
    close(fd);
    gwt_proc_cleanup(&gwt_fx.gw);
}

static void test_sigint_exit0(void **state)
{
    gwt_suite_start_gw(NULL);
    gwt_assert_serves(gwt_fx.gport, "/users/1");
    assert_int_equal(gwt_stop(&gwt_fx.gw, SIGINT, 5000), 0);
    gwt_proc_cleanup(&gwt_fx.gw);
}

static void test_check_config_bad_value(void **state)
{
    static const struct {
        const char *var;
        const char *value;
    } bad[] = {
        {"RATE_LIMIT_REQUESTS", "abc"},  {"GATEWAY_PORT", "70000"},
        {"RATE_LIMIT_ALGORITHM", "lru"}, {"BACKEND_URL", "ftp://x"},
        {"PRESERVE_HOST", "maybe"},      {"MAX_CONCURRENT_REQUESTS", "-3"},
        {"REDIS_URL", "http://r:6379"},  {"RATE_LIMIT_WINDOW_SECONDS", "10s"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char kv[128];
        snprintf(kv, sizeof(kv), "%s=%s", bad[i].var, bad[i].value);
        const char *env[] = {kv, NULL};
        const char *args[] = {"--check-config", NULL};
        char *out = NULL, *err = NULL;
        int rc = gwt_gateway_run(args, env, 5000, &out, &err);
        bool named = err && strstr(err, bad[i].var) && strstr(err, bad[i].value);
        if (rc != 2 || !named) {
            fprintf(stderr, "stderr: %s\n", err ? err : "(none)");
            free(out);
            free(err);
            fail_msg("%s: exit %d (want 2), message names variable and value: %s", kv, rc,
                     named ? "yes" : "no");
        }
        free(out);
        free(err);
    }
}

/* Errors accumulate: every bad variable on its own line. Starting the
 * gateway (not just --check-config) with a bad value also exits 2. */
static void test_check_config_accumulates(void **state)
{
    const char *env[] = {"RATE_LIMIT_REQUESTS=abc", "QUEUE_TIMEOUT_MS=soon", NULL};
    const char *args[] = {"--check-config", NULL};
    char *out = NULL, *err = NULL;
    int rc = gwt_gateway_run(args, env, 5000, &out, &err);
    assert_int_equal(rc, 2);
    assert_non_null(err);
    assert_non_null(strstr(err, "RATE_LIMIT_REQUESTS"));
    assert_non_null(strstr(err, "QUEUE_TIMEOUT_MS"));
    free(out);
    free(err);

    rc = gwt_gateway_run(NULL, env, 5000, &out, &err);
    assert_int_equal(rc, 2);
    assert_non_null(err);
    assert_non_null(strstr(err, "abc"));
    free(out);
    free(err);
}

/* A good configuration: exit 0, JSON on stdout, password masked. */
static void test_check_config_ok(void **state)
{
    const char *env[] = {"REDIS_URL=redis://:s3cr3tpw@127.0.0.1:6399/2", "RATE_LIMIT_REQUESTS=77",
                         NULL};
    const char *args[] = {"--check-config", NULL};
    char *out = NULL, *err = NULL;
    int rc = gwt_gateway_run(args, env, 5000, &out, &err);
    assert_int_equal(rc, 0);
    assert_non_null(out);
    json_error_t e;
    json_t *j = json_loads(out, 0, &e);
    if (j == NULL)
        fail_msg("--check-config stdout is not JSON: %s", out);
    assert_null(strstr(out, "s3cr3tpw"));
    assert_true(err == NULL || strstr(err, "s3cr3tpw") == NULL);
    assert_non_null(strstr(out, "77"));
    json_decref(j);
    free(out);
    free(err);
}

static void test_version_help(void **state)
{
    const char *a1[] = {"--version", NULL};
    const char *a2[] = {"--help", NULL};
    char *out = NULL, *err = NULL;
    assert_int_equal(gwt_gateway_run(a1, NULL, 5000, &out, &err), 0);
    assert_true((out && *out) || (err && *err));
    free(out);
    free(err);
    assert_int_equal(gwt_gateway_run(a2, NULL, 5000, &out, &err), 0);
    assert_true((out && strstr(out, "--check-config")) || (err && strstr(err, "--check-config")));
    free(out);
    free(err);
}

/* Writes text to a new temporary file; path gets its name. */
static void write_temp(char path[], const char *text)
{
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

/* --env-file: file values apply, the real environment wins. */
static void test_env_file(void **state)
{
    char path[] = "/tmp/gwtest-envfile-XXXXXX";
    write_temp(path, "# comment line\n"
                     "HEALTH_PATH=/from-file-health\n"
                     "WORKER_THREADS=3\n"
                     "\n");
    const char *args[] = {"--env-file", path, NULL};
    char burl[64];
    snprintf(burl, sizeof(burl), "BACKEND_URL=http://127.0.0.1:%d", gwt_fx.bport);
    /* gwt_gateway_for sets WORKER_THREADS=2 in the environment. */
    const char *env[] = {burl, "WORKER_THREADS=2", "RATE_LIMIT_REQUESTS=100000", NULL};
    int rc = gwt_gateway_start_args(&gwt_fx.gw, &gwt_fx.gport, env, args);
    gwt_track(&gwt_fx.gw);
    unlink(path);
    assert_int_equal(rc, 0);
    json_t *j = get_json(gwt_fx.gport, "/from-file-health", 200);
    assert_string_equal(jstr(j, "status"), "ok");
    json_decref(j);
    assert_int_equal(gwt_stat(gwt_fx.gport, "/stats", "worker_threads"), 2);
}

/* GATEWAY_ENV_FILE names the env file for every mode: the server and
 * --healthcheck read the same GATEWAY_PORT (and HEALTH_PATH) from it;
 * --env-file wins over it; a missing file is a start-up error. */
static void test_env_file_variable(void **state)
{
    int port = gwt_free_port();
    assert_true(port > 0);
    char path[] = "/tmp/gwtest-envvar-XXXXXX";
    char text[256];
    snprintf(text, sizeof(text),
             "GATEWAY_PORT=%d\nBACKEND_URL=http://127.0.0.1:%d\nHEALTH_PATH=/file-health\n", port,
             gwt_fx.bport);
    write_temp(path, text);
    char var[64];
    snprintf(var, sizeof(var), "GATEWAY_ENV_FILE=%s", path);
    /* A bare GATEWAY_PORT removes the harness's GATEWAY_PORT=0, which as
     * real environment would win over the file. */
    const char *env[] = {"GATEWAY_PORT", var, "WORKER_THREADS=2", NULL};
    int rc = gwt_gateway_start(&gwt_fx.gw, &gwt_fx.gport, env);
    gwt_track(&gwt_fx.gw);
    assert_int_equal(rc, 0);
    assert_int_equal(gwt_fx.gport, port);
    json_t *j = get_json(gwt_fx.gport, "/file-health", 200);
    assert_string_equal(jstr(j, "backend"), "connected");
    json_decref(j);

    /* Both probes find the gateway through the file alone. */
    const char *henv[] = {"GATEWAY_PORT", var, NULL};
    const char *live[] = {"--healthcheck", NULL};
    const char *ready[] = {"--healthcheck=ready", NULL};
    assert_int_equal(gwt_gateway_run(live, henv, 8000, NULL, NULL), 0);
    assert_int_equal(gwt_gateway_run(ready, henv, 8000, NULL, NULL), 0);
    const char *cc[] = {"--check-config", NULL};
    char *out = NULL;
    assert_int_equal(gwt_gateway_run(cc, henv, 5000, &out, NULL), 0);
    json_t *eff = json_loads(out, 0, NULL);
    assert_non_null(eff);
    assert_int_equal(json_integer_value(json_object_get(eff, "GATEWAY_PORT")), port);
    json_decref(eff);
    free(out);

    /* --env-file wins: its port has no listener, so the check fails. */
    int dead = gwt_free_port();
    assert_true(dead > 0);
    char other[] = "/tmp/gwtest-envvar2-XXXXXX";
    snprintf(text, sizeof(text), "GATEWAY_PORT=%d\n", dead);
    write_temp(other, text);
    const char *with_flag[] = {"--healthcheck", "--env-file", other, NULL};
    out = NULL;
    assert_int_equal(gwt_gateway_run(with_flag, henv, 8000, &out, NULL), 1);
    assert_non_null(out);
    assert_non_null(strstr(out, "unhealthy: connect to"));
    free(out);
    unlink(other);

    /* A file that cannot be read: exit 2, naming the variable. */
    unlink(path);
    char *err = NULL;
    assert_int_equal(gwt_gateway_run(live, henv, 5000, NULL, &err), 2);
    assert_non_null(err);
    assert_non_null(strstr(err, "GATEWAY_ENV_FILE"));
    free(err);
}

/* --healthcheck: 0 against a healthy gateway, 1 when nothing listens. */
static void test_healthcheck_command(void **state)
{
    gwt_suite_start_gw(NULL);
    char p[32];
    snprintf(p, sizeof(p), "GATEWAY_PORT=%d", gwt_fx.gport);
    const char *env[] = {p, NULL};
    const char *args[] = {"--healthcheck", NULL};
    assert_int_equal(gwt_gateway_run(args, env, 5000, NULL, NULL), 0);
    /* A wedged gateway (stopped: the kernel still completes the connect)
     * fails within the checker's own bounded wait. */
    assert_int_equal(kill(gwt_fx.gw.pid, SIGSTOP), 0);
    long long t0 = gwt_now_ms();
    char *out = NULL;
    int rc = gwt_gateway_run(args, env, 8000, &out, NULL);
    long long took = gwt_now_ms() - t0;
    assert_int_equal(kill(gwt_fx.gw.pid, SIGCONT), 0);
    assert_int_equal(rc, 1);
    assert_non_null(out);
    assert_non_null(strstr(out, "unhealthy: no HTTP answer"));
    free(out);
    assert_true(took < 4000);
    assert_int_equal(gwt_gateway_run(args, env, 5000, NULL, NULL), 0);
    int dead = gwt_free_port();
    assert_true(dead > 0);
    snprintf(p, sizeof(p), "GATEWAY_PORT=%d", dead);
    assert_int_equal(gwt_gateway_run(args, env, 5000, NULL, NULL), 1);
}

int main(void)
{
#define T(f) GWT_TEST(f)
    const struct CMUnitTest tests[] = {
        GWT_TEST(test_health_ok),
        GWT_TEST(test_health_with_redis),
        GWT_TEST(test_health_backend_down),
        GWT_TEST(test_custom_admin_paths),
        GWT_TEST(test_stats_counters),
        GWT_TEST(test_metrics),
        GWT_TEST(test_access_log),
        GWT_TEST(test_access_log_off),
        GWT_TEST(test_sigterm_drains),
        GWT_TEST(test_sigterm_idle_client),
        GWT_TEST(test_forced_shutdown_answers_queued),
        GWT_TEST(test_sigint_exit0),
        GWT_TEST(test_check_config_bad_value),
        GWT_TEST(test_check_config_accumulates),
        GWT_TEST(test_check_config_ok),
        GWT_TEST(test_version_help),
        GWT_TEST(test_env_file),
        GWT_TEST(test_healthcheck_command),
        GWT_TEST(test_env_file_variable),
    };
    return cmocka_run_group_tests_name("gateway_ops", tests, gwt_suite_setup_backend,
                                       gwt_suite_teardown);
}
