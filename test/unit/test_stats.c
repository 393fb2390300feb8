/*
 * Unit tests of the counters module (src/stats.c): histogram bucketing,
 * the sum over workers, quantile interpolation, and the exact /stats JSON
 * and /metrics Prometheus text of a known snapshot, which must also pass
 * `promtool check metrics` when promtool is installed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "gw/stats.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* cmocka's assert_float_equal works in float; compare doubles instead. */
#define assert_near(a, b, eps) assert_near_at((a), (b), (eps), __FILE__, __LINE__)

static void assert_near_at(double a, double b, double eps, const char *file, int line)
{
    if (!(fabs(a - b) <= eps)) {
        print_error("%.12g != %.12g (eps %g)\n", a, b, eps);
        _fail(file, line);
    }
}

static uint64_t load(_Atomic uint64_t *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

/* Renders into a NUL-terminated heap string the caller frees. */
static char *render_json(const struct gw_stats_snapshot *s)
{
    struct gw_buf b = {0};
    assert_int_equal(gw_stats_render_json(s, &b), 0);
    assert_int_equal(gw_buf_append(&b, "", 1), 0);
    char *text = strdup(gw_buf_head(&b));
    gw_buf_release(&b);
    assert_non_null(text);
    return text;
}

static char *render_prom(const struct gw_stats_snapshot *s, const char *version)
{
    struct gw_buf b = {0};
    assert_int_equal(gw_stats_render_prometheus(s, version, &b), 0);
    assert_int_equal(gw_buf_append(&b, "", 1), 0);
    char *text = strdup(gw_buf_head(&b));
    gw_buf_release(&b);
    assert_non_null(text);
    return text;
}

/* ---- histogram ------------------------------------------------------ */

static void test_observe_bucketing(void **state)
{
    (void)state;
    struct gw_histogram h;
    memset(&h, 0, sizeof(h));

    gw_histogram_observe(&h, 0);        /* bucket 0 (le 0.0005) */
    gw_histogram_observe(&h, 500);      /* le is inclusive: still bucket 0 */
    gw_histogram_observe(&h, 501);      /* bucket 1 (le 0.001) */
    gw_histogram_observe(&h, 2500);     /* bucket 2 (le 0.0025), exact bound */
    gw_histogram_observe(&h, 99999);    /* bucket 7 (le 0.1) */
    gw_histogram_observe(&h, 30000000); /* bucket 14 (le 30), last finite */
    gw_histogram_observe(&h, 30000001); /* bucket 15 (+Inf) */
    gw_histogram_observe(&h, UINT64_MAX / 2);

    uint64_t expect[GW_STATS_LATENCY_NBUCKETS + 1] = {0};
    expect[0] = 2;
    expect[1] = 1;
    expect[2] = 1;
    expect[7] = 1;
    expect[14] = 1;
    expect[15] = 2;
    for (int i = 0; i <= GW_STATS_LATENCY_NBUCKETS; i++)
        assert_int_equal(load(&h.buckets[i]), expect[i]);
    assert_int_equal(load(&h.count), 8);
    assert_int_equal(load(&h.sum_us),
                     0 + 500 + 501 + 2500 + 99999 + 30000000 + 30000001 + UINT64_MAX / 2);
}

static void test_sum_three_workers(void **state)
{
    (void)state;
    struct gw_stats_worker w[3];
    memset(w, 0, sizeof(w));
    /* Worker i gets (i + 1) * (k + 1) of the k-th counter of the list, so
     * every counter has a distinct expected sum 6 * (k + 1). */
    for (int i = 0; i < 3; i++) {
        uint64_t k = 0;
#define SET(name, label, help) atomic_store(&w[i].name, (uint64_t)(i + 1) * (++k));
        GW_STATS_COUNTERS(SET)
#undef SET
        atomic_store(&w[i].connections_active, 10 * (i + 1));
        atomic_store(&w[i].tunnels_active, i + 1);
        for (int n = 0; n <= i; n++)
            gw_histogram_observe(&w[i].request_latency, 2000);  /* bucket 2 */
        gw_histogram_observe(&w[i].upstream_latency, 40000000); /* +Inf */
        gw_histogram_observe(&w[i].queue_wait, 100);            /* bucket 0 */
    }
    struct gw_stats_worker *ptrs[3] = {&w[0], &w[1], &w[2]};
    struct gw_stats_snapshot s;
    memset(&s, 0xab, sizeof(s)); /* everything must be overwritten */
    gw_stats_sum(ptrs, 3, &s);

    uint64_t k = 0;
#define CHECK(name, label, help) assert_int_equal(s.name, 6 * (++k));
    GW_STATS_COUNTERS(CHECK)
#undef CHECK
    assert_int_equal(k, 15);
    assert_int_equal(s.connections_active, 60);
    assert_int_equal(s.tunnels_active, 6);
    assert_int_equal(s.worker_connections[0], 10);
    assert_int_equal(s.worker_connections[1], 20);
    assert_int_equal(s.worker_connections[2], 30);
    assert_int_equal(s.worker_connections[3], 0);
    assert_int_equal(s.latency_buckets[2], 6);
    assert_int_equal(s.latency_count, 6);
    assert_int_equal(s.latency_sum_us, 12000);
    assert_int_equal(s.upstream_buckets[GW_STATS_LATENCY_NBUCKETS], 3);
    assert_int_equal(s.upstream_count, 3);
    assert_int_equal(s.upstream_sum_us, 120000000);
    assert_int_equal(s.queue_buckets[0], 3);
    assert_int_equal(s.queue_count, 3);
    assert_int_equal(s.queue_sum_us, 300);
    for (int i = 0; i <= GW_STATS_LATENCY_NBUCKETS; i++) {
        if (i != 2)
            assert_int_equal(s.latency_buckets[i], 0);
    }
    /* Gauges are the caller's: zeroed. */
    assert_int_equal(s.in_flight, 0);
    assert_int_equal(s.queue_length, 0);
    assert_int_equal(s.uptime_s, 0);
    assert_int_equal(s.worker_threads, 0);
    assert_false(s.redis_up);
    assert_false(s.backend_up);

    gw_stats_sum(ptrs, 0, &s);
    assert_int_equal(s.requests_total, 0);
    assert_int_equal(s.latency_count, 0);
}

/* gw_stats_add_worker accumulates past GW_STATS_MAX_WORKERS workers (every
 * counter is summed) while worker_connections lists only the first ones. */
static void test_add_worker_many(void **state)
{
    (void)state;
    enum { N = GW_STATS_MAX_WORKERS + 44 };
    struct gw_stats_worker *w = calloc(N, sizeof(*w));
    assert_non_null(w);
    struct gw_stats_snapshot s;
    memset(&s, 0, sizeof(s));
    for (size_t i = 0; i < N; i++) {
        atomic_store(&w[i].requests_proxied, 2);
        atomic_store(&w[i].connections_active, (int64_t)i);
        gw_histogram_observe(&w[i].request_latency, 700); /* bucket 1 */
        gw_stats_add_worker(&s, i, &w[i]);
    }
    assert_int_equal(s.requests_proxied, 2 * N);
    assert_int_equal(s.connections_active, (int64_t)N * (N - 1) / 2);
    assert_int_equal(s.latency_buckets[1], N);
    assert_int_equal(s.latency_count, N);
    assert_int_equal(s.worker_connections[0], 0);
    assert_int_equal(s.worker_connections[GW_STATS_MAX_WORKERS - 1], GW_STATS_MAX_WORKERS - 1);

    /* /stats lists one count per worker, up to GW_STATS_MAX_WORKERS. */
    s.worker_threads = N;
    char *text = render_json(&s);
    json_t *root = json_loads(text, 0, NULL);
    assert_non_null(root);
    json_t *wc = json_object_get(root, "worker_connections");
    assert_int_equal(json_array_size(wc), GW_STATS_MAX_WORKERS);
    assert_int_equal(json_integer_value(json_array_get(wc, 7)), 7);
    json_decref(root);
    free(text);
    free(w);
}

static void test_quantiles(void **state)
{
    (void)state;
    uint64_t b[GW_STATS_LATENCY_NBUCKETS + 1] = {0};

    assert_true(gw_stats_quantile_ms(b, 0, 0.5) == 0.0);

    /* 50 in (1, 2.5] ms and 50 in (2.5, 5] ms. */
    b[2] = 50;
    b[3] = 50;
    assert_near(gw_stats_quantile_ms(b, 100, 0.50), 2.5, 1e-9);
    assert_near(gw_stats_quantile_ms(b, 100, 0.25), 1.75, 1e-9);
    assert_near(gw_stats_quantile_ms(b, 100, 0.90), 4.5, 1e-9);
    assert_near(gw_stats_quantile_ms(b, 100, 0.99), 4.95, 1e-9);
    assert_near(gw_stats_quantile_ms(b, 100, 1.0), 5.0, 1e-9);
    /* q == 0 lands on the lower bound of the first non-empty bucket. */
    assert_near(gw_stats_quantile_ms(b, 100, 0.0), 1.0, 1e-9);

    /* First bucket interpolates from 0. */
    memset(b, 0, sizeof(b));
    b[0] = 10;
    assert_near(gw_stats_quantile_ms(b, 10, 0.5), 0.25, 1e-9);

    /* Ranks in the +Inf bucket report the last finite bound (30 s). */
    memset(b, 0, sizeof(b));
    b[0] = 90;
    b[GW_STATS_LATENCY_NBUCKETS] = 10;
    assert_near(gw_stats_quantile_ms(b, 100, 0.5), 0.5 * 50 / 90, 1e-9);
    assert_near(gw_stats_quantile_ms(b, 100, 0.95), 30000.0, 1e-9);
    assert_near(gw_stats_quantile_ms(b, 100, 0.99), 30000.0, 1e-9);
}

/* ---- renderings of a known snapshot --------------------------------- */

static void known_snapshot(struct gw_stats_snapshot *s)
{
    memset(s, 0, sizeof(*s));
    s->requests_total = 100;
    s->requests_proxied = 80;
    s->requests_rate_limited = 7;
    s->requests_rate_limited_dry_run = 2;
    s->requests_rejected_queue = 3;
    s->requests_rejected_store = 5;
    s->requests_failed_upstream = 4;
    s->requests_closed = 9;
    s->requests_bad = 6;
    s->redis_errors = 1;
    s->upstream_connections_opened = 12;
    s->connections_rejected = 13;
    s->connections_rejected_per_client = 14;
    s->tunnels = 15;
    s->connections_active = 5;
    s->tunnels_active = 2;
    s->latency_buckets[2] = 50; /* (1, 2.5] ms */
    s->latency_buckets[3] = 30; /* (2.5, 5] ms */
    s->latency_count = 80;
    s->latency_sum_us = 201500;
    s->upstream_buckets[1] = 80;
    s->upstream_count = 80;
    s->upstream_sum_us = 64000;
    s->queue_buckets[GW_STATS_LATENCY_NBUCKETS] = 3;
    s->queue_count = 3;
    s->queue_sum_us = 93000000;
    s->in_flight = 2;
    s->queue_length = 1;
    s->in_flight_max = 100;
    s->queue_length_max = 1000;
    s->uptime_s = 42;
    s->worker_threads = 2;
    s->redis_enabled = true;
    s->redis_up = true;
    s->backend_up = true;
    s->worker_connections[0] = 3;
    s->worker_connections[1] = 2;
    s->worker_connections[2] = 99; /* beyond worker_threads: not shown */
}

static void test_render_json_exact(void **state)
{
    (void)state;
    struct gw_stats_snapshot s;
    known_snapshot(&s);
    char *text = render_json(&s);
    /* p50: rank 40 of 50 in (1, 2.5] -> 2.2; p90: rank 72, 22/30 of
     * (2.5, 5] -> 4.333; p99: rank 79.2 -> 4.933 (rounded to 1 us). */
    const char *expect = "{\"requests_total\":100,\"requests_proxied\":80,"
                         "\"requests_rate_limited\":7,\"requests_rate_limited_dry_run\":2,"
                         "\"requests_rejected_queue\":3,\"requests_rejected_store\":5,"
                         "\"requests_failed_upstream\":4,\"requests_closed\":9,"
                         "\"requests_bad\":6,\"requests_delayed\":0,\"redis_errors\":1,"
                         "\"upstream_connections_opened\":12,\"connections_rejected\":13,"
                         "\"connections_rejected_per_client\":14,\"tunnels\":15,\"delayed\":0,"
                         "\"in_flight\":2,\"queue_length\":1,\"connections_active\":5,"
                         "\"tunnels_active\":2,\"uptime_seconds\":42,"
                         "\"worker_threads\":2,\"redis\":\"connected\","
                         "\"worker_connections\":[3,2],"
                         "\"latency_ms\":{\"p50\":2.2,\"p90\":4.333,\"p99\":4.933}}";
    assert_string_equal(text, expect);

    /* Every SPEC.md §4 key is present with the right JSON type. */
    json_error_t err;
    json_t *root = json_loads(text, 0, &err);
    assert_non_null(root);
    static const char *const int_keys[] = {"requests_total",
                                           "requests_proxied",
                                           "requests_rate_limited",
                                           "requests_rejected_queue",
                                           "requests_rejected_store",
                                           "requests_failed_upstream",
                                           "requests_closed",
                                           "requests_bad",
                                           "in_flight",
                                           "queue_length",
                                           "connections_active",
                                           "redis_errors",
                                           "upstream_connections_opened",
                                           "connections_rejected",
                                           "connections_rejected_per_client",
                                           "uptime_seconds",
                                           "worker_threads",
                                           "requests_rate_limited_dry_run",
                                           "requests_delayed",
                                           "delayed"};
    for (size_t i = 0; i < sizeof(int_keys) / sizeof(int_keys[0]); i++)
        assert_true(json_is_integer(json_object_get(root, int_keys[i])));
    json_t *lat = json_object_get(root, "latency_ms");
    assert_true(json_is_object(lat));
    assert_true(json_is_number(json_object_get(lat, "p50")));
    assert_true(json_is_number(json_object_get(lat, "p90")));
    assert_true(json_is_number(json_object_get(lat, "p99")));
    json_decref(root);
    free(text);
}

static void test_render_json_redis_states(void **state)
{
    (void)state;
    struct gw_stats_snapshot s;
    memset(&s, 0, sizeof(s));
    char *text = render_json(&s);
    json_t *root = json_loads(text, 0, NULL);
    assert_non_null(root);
    assert_string_equal(json_string_value(json_object_get(root, "redis")), "disabled");
    assert_int_equal(json_array_size(json_object_get(root, "worker_connections")), 0);
    /* Empty histogram: quantiles are 0. */
    assert_true(json_number_value(json_object_get(json_object_get(root, "latency_ms"), "p99")) ==
                0.0);
    json_decref(root);
    free(text);

    s.redis_enabled = true;
    s.redis_up = false;
    text = render_json(&s);
    assert_non_null(strstr(text, "\"redis\":\"disconnected\""));
    free(text);
}

/* Expected exposition of known_snapshot(), written by hand from the format
 * description: cumulative buckets, +Inf equal to _count, _sum in seconds. */
static const char expect_prom[] =
    "# HELP gateway_requests_received_total Requests received from clients, any outcome\n"
    "# TYPE gateway_requests_received_total counter\n"
    "gateway_requests_received_total 100\n"
    "# HELP gateway_requests_delayed_total Requests held by token-bucket shaping (delay) before "
    "going on; /stats also as delayed\n"
    "# TYPE gateway_requests_delayed_total counter\n"
    "gateway_requests_delayed_total 0\n"
    "# HELP gateway_redis_errors_total Rate-limit checks the store did not answer (failed, or "
    "skipped while it was down)\n"
    "# TYPE gateway_redis_errors_total counter\n"
    "gateway_redis_errors_total 1\n"
    "# HELP gateway_upstream_connections_opened_total Connections opened to the upstream (a pool "
    "that is too small shows as a high rate)\n"
    "# TYPE gateway_upstream_connections_opened_total counter\n"
    "gateway_upstream_connections_opened_total 12\n"
    "# HELP gateway_connections_rejected_total Client connections closed at accept by "
    "MAX_CONNECTIONS\n"
    "# TYPE gateway_connections_rejected_total counter\n"
    "gateway_connections_rejected_total 13\n"
    "# HELP gateway_connections_rejected_per_client_total Client connections closed at accept by "
    "MAX_CONNECTIONS_PER_CLIENT\n"
    "# TYPE gateway_connections_rejected_per_client_total counter\n"
    "gateway_connections_rejected_per_client_total 14\n"
    "# HELP gateway_tunnels_total Upgrade tunnels opened (101 Switching Protocols relayed)\n"
    "# TYPE gateway_tunnels_total counter\n"
    "gateway_tunnels_total 15\n"
    "# HELP gateway_requests_total Finished requests by result: proxied=Requests answered by the "
    "upstream; rate_limited=Requests refused with 429; rate_limited_dry_run=Requests over the "
    "limit let through by dry run (also counted under their outcome); rejected_queue=Requests "
    "refused with 503 "
    "by the in-flight cap; rejected_store=Requests refused with 503 because the rate-limit store "
    "failed (failure mode closed); failed_upstream=Requests answered 502 or 504; "
    "closed=Requests whose connection closed before their response was complete (client gone, "
    "forced shutdown); "
    "bad_request=Gateway-generated 4xx other than 429\n"
    "# TYPE gateway_requests_total counter\n"
    "gateway_requests_total{result=\"proxied\"} 80\n"
    "gateway_requests_total{result=\"rate_limited\"} 7\n"
    "gateway_requests_total{result=\"rate_limited_dry_run\"} 2\n"
    "gateway_requests_total{result=\"rejected_queue\"} 3\n"
    "gateway_requests_total{result=\"rejected_store\"} 5\n"
    "gateway_requests_total{result=\"failed_upstream\"} 4\n"
    "gateway_requests_total{result=\"closed\"} 9\n"
    "gateway_requests_total{result=\"bad_request\"} 6\n"
    "# HELP gateway_in_flight Upstream requests holding an in-flight slot\n"
    "# TYPE gateway_in_flight gauge\n"
    "gateway_in_flight 2\n"
    "# HELP gateway_in_flight_max The in-flight cap, MAX_CONCURRENT_REQUESTS\n"
    "# TYPE gateway_in_flight_max gauge\n"
    "gateway_in_flight_max 100\n"
    "# HELP gateway_queue_length Requests waiting for an in-flight slot\n"
    "# TYPE gateway_queue_length gauge\n"
    "gateway_queue_length 1\n"
    "# HELP gateway_queue_length_max The wait queue's capacity, MAX_QUEUE_LENGTH\n"
    "# TYPE gateway_queue_length_max gauge\n"
    "gateway_queue_length_max 1000\n"
    "# HELP gateway_connections_active Client connections open\n"
    "# TYPE gateway_connections_active gauge\n"
    "gateway_connections_active 5\n"
    "# HELP gateway_tunnels_active Upgrade tunnels open (WebSocket and other protocols)\n"
    "# TYPE gateway_tunnels_active gauge\n"
    "gateway_tunnels_active 2\n"
    "# HELP gateway_redis_up 1 when the Redis rate-limit store answers, else 0\n"
    "# TYPE gateway_redis_up gauge\n"
    "gateway_redis_up 1\n"
    "# HELP gateway_backend_up 1 when the backend is reachable, else 0\n"
    "# TYPE gateway_backend_up gauge\n"
    "gateway_backend_up 1\n"
    "# HELP gateway_worker_threads Epoll worker threads\n"
    "# TYPE gateway_worker_threads gauge\n"
    "gateway_worker_threads 2\n"
    "# HELP gateway_uptime_seconds Seconds since the gateway started\n"
    "# TYPE gateway_uptime_seconds gauge\n"
    "gateway_uptime_seconds 42\n"
    "# HELP gateway_build_info Build information, always 1\n"
    "# TYPE gateway_build_info gauge\n"
    "gateway_build_info{version=\"1.2.3\"} 1\n"
    "# HELP gateway_request_duration_seconds Proxied requests, from request start to response "
    "end\n"
    "# TYPE gateway_request_duration_seconds histogram\n"
    "gateway_request_duration_seconds_bucket{le=\"0.0005\"} 0\n"
    "gateway_request_duration_seconds_bucket{le=\"0.001\"} 0\n"
    "gateway_request_duration_seconds_bucket{le=\"0.0025\"} 50\n"
    "gateway_request_duration_seconds_bucket{le=\"0.005\"} 80\n"
    "gateway_request_duration_seconds_bucket{le=\"0.01\"} 80\n"
    "gateway_request_duration_seconds_bucket{le=\"0.025\"} 80\n"
    "gateway_request_duration_seconds_bucket{le=\"0.05\"} 80\n"
    "gateway_request_duration_seconds_bucket{le=\"0.1\"} 80\n"
    "gateway_request_duration_seconds_bucket{le=\"0.25\"} 80\n"
    "gateway_request_duration_seconds_bucket{le=\"0.5\"} 80\n"
    "gateway_request_duration_seconds_bucket{le=\"1\"} 80\n"
    "gateway_request_duration_seconds_bucket{le=\"2.5\"} 80\n"
    "gateway_request_duration_seconds_bucket{le=\"5\"} 80\n"
    "gateway_request_duration_seconds_bucket{le=\"10\"} 80\n"
    "gateway_request_duration_seconds_bucket{le=\"30\"} 80\n"
    "gateway_request_duration_seconds_bucket{le=\"+Inf\"} 80\n"
    "gateway_request_duration_seconds_sum 0.2015\n"
    "gateway_request_duration_seconds_count 80\n"
    "# HELP gateway_upstream_duration_seconds Upstream exchanges, from connect or send to "
    "response end\n"
    "# TYPE gateway_upstream_duration_seconds histogram\n"
    "gateway_upstream_duration_seconds_bucket{le=\"0.0005\"} 0\n"
    "gateway_upstream_duration_seconds_bucket{le=\"0.001\"} 80\n"
    "gateway_upstream_duration_seconds_bucket{le=\"0.0025\"} 80\n"
    "gateway_upstream_duration_seconds_bucket{le=\"0.005\"} 80\n"
    "gateway_upstream_duration_seconds_bucket{le=\"0.01\"} 80\n"
    "gateway_upstream_duration_seconds_bucket{le=\"0.025\"} 80\n"
    "gateway_upstream_duration_seconds_bucket{le=\"0.05\"} 80\n"
    "gateway_upstream_duration_seconds_bucket{le=\"0.1\"} 80\n"
    "gateway_upstream_duration_seconds_bucket{le=\"0.25\"} 80\n"
    "gateway_upstream_duration_seconds_bucket{le=\"0.5\"} 80\n"
    "gateway_upstream_duration_seconds_bucket{le=\"1\"} 80\n"
    "gateway_upstream_duration_seconds_bucket{le=\"2.5\"} 80\n"
    "gateway_upstream_duration_seconds_bucket{le=\"5\"} 80\n"
    "gateway_upstream_duration_seconds_bucket{le=\"10\"} 80\n"
    "gateway_upstream_duration_seconds_bucket{le=\"30\"} 80\n"
    "gateway_upstream_duration_seconds_bucket{le=\"+Inf\"} 80\n"
    "gateway_upstream_duration_seconds_sum 0.064\n"
    "gateway_upstream_duration_seconds_count 80\n"
    "# HELP gateway_queue_wait_seconds Time spent waiting for an in-flight slot\n"
    "# TYPE gateway_queue_wait_seconds histogram\n"
    "gateway_queue_wait_seconds_bucket{le=\"0.0005\"} 0\n"
    "gateway_queue_wait_seconds_bucket{le=\"0.001\"} 0\n"
    "gateway_queue_wait_seconds_bucket{le=\"0.0025\"} 0\n"
    "gateway_queue_wait_seconds_bucket{le=\"0.005\"} 0\n"
    "gateway_queue_wait_seconds_bucket{le=\"0.01\"} 0\n"
    "gateway_queue_wait_seconds_bucket{le=\"0.025\"} 0\n"
    "gateway_queue_wait_seconds_bucket{le=\"0.05\"} 0\n"
    "gateway_queue_wait_seconds_bucket{le=\"0.1\"} 0\n"
    "gateway_queue_wait_seconds_bucket{le=\"0.25\"} 0\n"
    "gateway_queue_wait_seconds_bucket{le=\"0.5\"} 0\n"
    "gateway_queue_wait_seconds_bucket{le=\"1\"} 0\n"
    "gateway_queue_wait_seconds_bucket{le=\"2.5\"} 0\n"
    "gateway_queue_wait_seconds_bucket{le=\"5\"} 0\n"
    "gateway_queue_wait_seconds_bucket{le=\"10\"} 0\n"
    "gateway_queue_wait_seconds_bucket{le=\"30\"} 0\n"
    "gateway_queue_wait_seconds_bucket{le=\"+Inf\"} 3\n"
    "gateway_queue_wait_seconds_sum 93\n"
    "gateway_queue_wait_seconds_count 3\n"
    "# HELP gateway_ratelimit_delay_seconds Time requests were held by token-bucket shaping "
    "(delay) before going on\n"
    "# TYPE gateway_ratelimit_delay_seconds histogram\n"
    "gateway_ratelimit_delay_seconds_bucket{le=\"0.0005\"} 0\n"
    "gateway_ratelimit_delay_seconds_bucket{le=\"0.001\"} 0\n"
    "gateway_ratelimit_delay_seconds_bucket{le=\"0.0025\"} 0\n"
    "gateway_ratelimit_delay_seconds_bucket{le=\"0.005\"} 0\n"
    "gateway_ratelimit_delay_seconds_bucket{le=\"0.01\"} 0\n"
    "gateway_ratelimit_delay_seconds_bucket{le=\"0.025\"} 0\n"
    "gateway_ratelimit_delay_seconds_bucket{le=\"0.05\"} 0\n"
    "gateway_ratelimit_delay_seconds_bucket{le=\"0.1\"} 0\n"
    "gateway_ratelimit_delay_seconds_bucket{le=\"0.25\"} 0\n"
    "gateway_ratelimit_delay_seconds_bucket{le=\"0.5\"} 0\n"
    "gateway_ratelimit_delay_seconds_bucket{le=\"1\"} 0\n"
    "gateway_ratelimit_delay_seconds_bucket{le=\"2.5\"} 0\n"
    "gateway_ratelimit_delay_seconds_bucket{le=\"5\"} 0\n"
    "gateway_ratelimit_delay_seconds_bucket{le=\"10\"} 0\n"
    "gateway_ratelimit_delay_seconds_bucket{le=\"30\"} 0\n"
    "gateway_ratelimit_delay_seconds_bucket{le=\"+Inf\"} 0\n"
    "gateway_ratelimit_delay_seconds_sum 0\n"
    "gateway_ratelimit_delay_seconds_count 0\n";

static void test_render_prometheus_exact(void **state)
{
    (void)state;
    struct gw_stats_snapshot s;
    known_snapshot(&s);
    char *text = render_prom(&s, "1.2.3");
    assert_string_equal(text, expect_prom);
    free(text);
}

static void test_render_prometheus_variants(void **state)
{
    (void)state;
    struct gw_stats_snapshot s;
    known_snapshot(&s);
    s.redis_enabled = false; /* no REDIS_URL: no redis_up series */
    s.backend_up = false;
    s.latency_sum_us = 1000001; /* fractional seconds keep leading zeros */
    char *text = render_prom(&s, "a\"b\\c\nd");
    assert_null(strstr(text, "gateway_redis_up"));
    assert_non_null(strstr(text, "\ngateway_backend_up 0\n"));
    assert_non_null(strstr(text, "\ngateway_build_info{version=\"a\\\"b\\\\c\\nd\"} 1\n"));
    assert_non_null(strstr(text, "\ngateway_request_duration_seconds_sum 1.000001\n"));
    free(text);

    s.redis_enabled = true;
    s.redis_up = false;
    text = render_prom(&s, NULL);
    assert_non_null(strstr(text, "\ngateway_redis_up 0\n"));
    assert_non_null(strstr(text, "\ngateway_build_info{version=\"unknown\"} 1\n"));
    assert_null(strstr(text, "gateway_redis_redirects_total"));
    free(text);

    /* Redis Cluster: the redirects followed, by type. */
    s.redis_cluster = true;
    s.redis_redirects_moved = 7;
    s.redis_redirects_ask = 2;
    text = render_prom(&s, NULL);
    assert_non_null(strstr(text, "\n# TYPE gateway_redis_redirects_total counter\n"
                                 "gateway_redis_redirects_total{type=\"moved\"} 7\n"
                                 "gateway_redis_redirects_total{type=\"ask\"} 2\n"));
    free(text);
    s.redis_cluster = false;

    /* The output is appended after what the buffer already holds. */
    struct gw_buf b = {0};
    assert_int_equal(gw_buf_append_str(&b, "X"), 0);
    assert_int_equal(gw_stats_render_prometheus(&s, "v", &b), 0);
    assert_true(gw_buf_len(&b) > 1);
    assert_memory_equal(gw_buf_head(&b), "X# HELP ", 8);
    gw_buf_release(&b);
}

/* Finds an executable in PATH. */
static bool have_program(const char *name)
{
    const char *path = getenv("PATH");
    if (!path)
        return false;
    char *copy = strdup(path);
    assert_non_null(copy);
    bool found = false;
    for (char *save = NULL, *dir = strtok_r(copy, ":", &save); dir && !found;
         dir = strtok_r(NULL, ":", &save)) {
        char full[4096];
        snprintf(full, sizeof(full), "%s/%s", dir, name);
        found = access(full, X_OK) == 0;
    }
    free(copy);
    return found;
}

/* Runs `promtool check metrics` on text; returns its exit status. */
static int promtool_check(const char *text)
{
    char path[] = "/tmp/gw_test_stats_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "promtool check metrics < %s", path);
    int status = system(cmd);
    unlink(path);
    assert_true(status != -1 && WIFEXITED(status));
    return WEXITSTATUS(status);
}

static void test_promtool_check(void **state)
{
    (void)state;
    if (!have_program("promtool")) {
        printf("# promtool not found in PATH: skipping (apt-get install prometheus)\n");
        skip();
    }
    struct gw_stats_snapshot s;
    known_snapshot(&s);
    char *text = render_prom(&s, GW_VERSION);
    assert_int_equal(promtool_check(text), 0);
    free(text);

    /* An empty snapshot (fresh start, Redis disabled) must pass too. */
    memset(&s, 0, sizeof(s));
    text = render_prom(&s, GW_VERSION);
    assert_int_equal(promtool_check(text), 0);
    free(text);

    /* And promtool is really checking: a broken exposition fails. */
    assert_int_not_equal(promtool_check("# TYPE x counter\nx{le=} 1\n"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_observe_bucketing),
        cmocka_unit_test(test_sum_three_workers),
        cmocka_unit_test(test_add_worker_many),
        cmocka_unit_test(test_quantiles),
        cmocka_unit_test(test_render_json_exact),
        cmocka_unit_test(test_render_json_redis_states),
        cmocka_unit_test(test_render_prometheus_exact),
        cmocka_unit_test(test_render_prometheus_variants),
        cmocka_unit_test(test_promtool_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
