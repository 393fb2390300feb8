/*
 * Integration tests of the in-flight cap (SPEC.md sections 1 and 3): the
 * backend never sees more than MAX_CONCURRENT_REQUESTS at once, queued
 * requests are served when a slot frees, a queue timeout or a full queue
 * gives 503 with the reduced-capacity problem type, and the gateway's own
 * endpoints keep answering while the cap is saturated.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "gwt_suite.h"
#include "gwtest.h"

#define CAPACITY_TYPE "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity"

static const char *slow_req(int ms)
{
    static char buf[128];
    snprintf(buf, sizeof(buf), "GET /slow?ms=%d HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
             ms);
    return buf;
}

/* MAX_CONCURRENT_REQUESTS=2: 8 concurrent slow requests all succeed, the
 * backend never sees more than 2 at once, and the waiters were queued. */
static void test_cap_limits_backend_concurrency(void **state)
{
    const char *env[] = {"MAX_CONCURRENT_REQUESTS=2", "WORKER_THREADS=4", NULL};
    gwt_suite_start_gw(env);
    enum { N = 8 };
    struct gwt_async a[N];
    long long t0 = gwt_now_ms();
    for (int i = 0; i < N; i++)
        assert_int_equal(gwt_async_start(&a[i], gwt_fx.gport, slow_req(300)), 0);
    int ok = 0;
    for (int i = 0; i < N; i++) {
        gwt_async_join(&a[i]);
        if (a[i].rc == 0 && a[i].resp.status == 200)
            ok++;
        else
            fprintf(stderr, "request %d: rc %d status %d\n", i, a[i].rc, a[i].resp.status);
        gwt_async_free(&a[i]);
    }
    long long elapsed = gwt_now_ms() - t0;
    assert_int_equal(ok, N);
    long long maxc = -1, reqs = -1;
    assert_int_equal(gwt_backend_stats(gwt_fx.bport, &reqs, &maxc), 0);
    assert_int_equal(reqs, N);
    assert_int_equal(maxc, 2);
    /* 8 requests of 300 ms, 2 at a time: at least 4 rounds. */
    assert_true(elapsed >= 4 * 300 - 50);
    assert_int_equal(gwt_stat(gwt_fx.gport, "/stats", "in_flight"), 0);
    assert_int_equal(gwt_stat(gwt_fx.gport, "/stats", "queue_length"), 0);
    assert_int_equal(gwt_stat(gwt_fx.gport, "/stats", "requests_rejected_queue"), 0);
    gwt_assert_serves(gwt_fx.gport, "/users/1");
}

/* Starts a /slow request holding the only slot and waits until the gateway
 * reports it in flight. */
static void hold_slot(struct gwt_async *h, int ms)
{
    assert_int_equal(gwt_async_start(h, gwt_fx.gport, slow_req(ms)), 0);
    gwt_assert_stat_becomes(gwt_fx.gport, "/stats", "in_flight", 1, 3000, NULL);
}

static void release_slot(struct gwt_async *h)
{
    assert_int_equal(gwt_async_join(h), 0);
    assert_int_equal(h->resp.status, 200);
    gwt_async_free(h);
}

/* The slot is held longer than QUEUE_TIMEOUT_MS: 503, Retry-After: 1, the
 * reduced-capacity problem type, after about the queue timeout. */
static void test_queue_timeout_503(void **state)
{
    const char *env[] = {"MAX_CONCURRENT_REQUESTS=1", "QUEUE_TIMEOUT_MS=100", NULL};
    gwt_suite_start_gw(env);
    struct gwt_async h;
    hold_slot(&h, 1000);
    struct gwt_response r;
    long long t0 = gwt_now_ms();
    assert_int_equal(gwt_get(gwt_fx.gport, "/users/1", &r), 0);
    long long ms = gwt_now_ms() - t0;
    gwt_assert_problem(&r, 503, CAPACITY_TYPE);
    assert_non_null(gwt_header(&r, "Retry-After"));
    assert_string_equal(gwt_header(&r, "Retry-After"), "1");
    gwt_response_free(&r);
    assert_true(ms >= 90);
    assert_true(ms < 900);
    assert_int_equal(gwt_stat(gwt_fx.gport, "/stats", "requests_rejected_queue"), 1);
    release_slot(&h);
    long long reqs = -1;
    assert_int_equal(gwt_backend_stats(gwt_fx.bport, &reqs, NULL), 0);
    assert_int_equal(reqs, 1); /* the 503 never reached the backend */
    gwt_assert_serves(gwt_fx.gport, "/users/1");
}

/* MAX_QUEUE_LENGTH=0: no waiting at all, 503 at once. */
static void test_queue_length_zero(void **state)
{
    const char *env[] = {"MAX_CONCURRENT_REQUESTS=1", "MAX_QUEUE_LENGTH=0", "QUEUE_TIMEOUT_MS=5000",
                         NULL};
    gwt_suite_start_gw(env);
    struct gwt_async h;
    hold_slot(&h, 800);
    struct gwt_response r;
    long long t0 = gwt_now_ms();
    assert_int_equal(gwt_get(gwt_fx.gport, "/users/1", &r), 0);
    long long ms = gwt_now_ms() - t0;
    gwt_assert_problem(&r, 503, CAPACITY_TYPE);
    assert_string_equal(gwt_header(&r, "Retry-After"), "1");
    gwt_response_free(&r);
    assert_true(ms < 500);
    release_slot(&h);
    gwt_assert_serves(gwt_fx.gport, "/users/1");
}

/* A queued request waits for the slot and is then served; the queue shows
 * in /stats meanwhile. */
static void test_queued_request_served(void **state)
{
    const char *env[] = {"MAX_CONCURRENT_REQUESTS=1", "QUEUE_TIMEOUT_MS=5000", NULL};
    gwt_suite_start_gw(env);
    struct gwt_async h, q;
    hold_slot(&h, 600);
    long long t0 = gwt_now_ms();
    assert_int_equal(gwt_async_start(&q, gwt_fx.gport,
                                     "GET /users/77 HTTP/1.1\r\nHost: h\r\nConnection: "
                                     "close\r\n\r\n"),
                     0);
    gwt_assert_stat_becomes(gwt_fx.gport, "/stats", "queue_length", 1, 3000, NULL);
    release_slot(&h);
    assert_int_equal(gwt_async_join(&q), 0);
    long long ms = gwt_now_ms() - t0;
    assert_int_equal(q.resp.status, 200);
    json_t *j = gwt_json(&q.resp);
    assert_non_null(j);
    assert_int_equal(gwt_json_int(j, "id", -1), 77);
    json_decref(j);
    gwt_async_free(&q);
    assert_true(ms >= 300); /* it really waited for the holder */
    long long maxc = -1;
    assert_int_equal(gwt_backend_stats(gwt_fx.bport, NULL, &maxc), 0);
    assert_int_equal(maxc, 1);
    assert_int_equal(gwt_stat(gwt_fx.gport, "/stats", "queue_length"), 0);
}

/* /health and /stats answer at once while every slot is taken. */
static void test_admin_while_saturated(void **state)
{
    const char *env[] = {"MAX_CONCURRENT_REQUESTS=1", "QUEUE_TIMEOUT_MS=5000",
                         "MAX_QUEUE_LENGTH=10", NULL};
    gwt_suite_start_gw(env);
    struct gwt_async h, q;
    hold_slot(&h, 1000);
    /* And one more waiting in the queue. */
    assert_int_equal(gwt_async_start(&q, gwt_fx.gport, slow_req(10)), 0);
    gwt_assert_stat_becomes(gwt_fx.gport, "/stats", "queue_length", 1, 3000, NULL);

    struct gwt_response r;
    long long t0 = gwt_now_ms();
    assert_int_equal(gwt_get(gwt_fx.gport, "/health", &r), 0);
    long long ms = gwt_now_ms() - t0;
    assert_int_equal(r.status, 200);
    assert_true(ms < 500);
    const char *ct = gwt_header(&r, "Content-Type");
    assert_non_null(ct);
    assert_non_null(strstr(ct, "application/json"));
    json_t *j = gwt_json(&r);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "ok");
    assert_string_equal(json_string_value(json_object_get(j, "redis")), "disabled");
    assert_string_equal(json_string_value(json_object_get(j, "backend")), "connected");
    assert_true(json_is_integer(json_object_get(j, "uptime_seconds")));
    assert_true(json_integer_value(json_object_get(j, "uptime_seconds")) >= 0);
    json_decref(j);
    gwt_response_free(&r);

    assert_int_equal(gwt_get(gwt_fx.gport, "/stats", &r), 0);
    assert_int_equal(r.status, 200);
    j = gwt_json(&r);
    assert_non_null(j);
    assert_int_equal(gwt_json_int(j, "in_flight", -1), 1);
    assert_int_equal(gwt_json_int(j, "queue_length", -1), 1);
    json_decref(j);
    gwt_response_free(&r);

    assert_int_equal(gwt_get(gwt_fx.gport, "/metrics", &r), 0);
    assert_int_equal(r.status, 200);
    gwt_response_free(&r);

    release_slot(&h);
    assert_int_equal(gwt_async_join(&q), 0);
    assert_int_equal(q.resp.status, 200);
    gwt_async_free(&q);
}

/* Slots are returned when clients vanish while queued or in flight. */
static void test_slots_returned_on_client_abort(void **state)
{
    const char *env[] = {"MAX_CONCURRENT_REQUESTS=1", "QUEUE_TIMEOUT_MS=3000", NULL};
    gwt_suite_start_gw(env);
    /* In flight, then the client goes away. */
    int fd = gwt_connect(gwt_fx.gport);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd, slow_req(300)), 0);
    gwt_assert_stat_becomes(gwt_fx.gport, "/stats", "in_flight", 1, 3000, NULL);
    /* Queued, then the client goes away. */
    int fd2 = gwt_connect(gwt_fx.gport);
    assert_true(fd2 >= 0);
    assert_int_equal(gwt_send_str(fd2, slow_req(10)), 0);
    gwt_assert_stat_becomes(gwt_fx.gport, "/stats", "queue_length", 1, 3000, NULL);
    close(fd2);
    close(fd);
    gwt_assert_stat_becomes(gwt_fx.gport, "/stats", "in_flight", 0, 3000, NULL);
    gwt_assert_stat_becomes(gwt_fx.gport, "/stats", "queue_length", 0, 3000, NULL);
    /* The single slot is usable again, twice in a row. */
    gwt_assert_serves(gwt_fx.gport, "/users/1");
    gwt_assert_serves(gwt_fx.gport, "/users/1");
}

/* Clients that reset mid-request: the gateway closes their upstream
 * connections, backend_app stops the abandoned work (as a handler whose
 * request was cancelled would), and the backend still never sees more than
 * MAX_CONCURRENT_REQUESTS at once when new requests take the freed slots. */
static void test_cap_holds_after_client_resets(void **state)
{
    const char *env[] = {"MAX_CONCURRENT_REQUESTS=2", NULL};
    gwt_suite_start_gw(env);
    int fds[2];
    for (int i = 0; i < 2; i++) {
        fds[i] = gwt_connect(gwt_fx.gport);
        assert_true(fds[i] >= 0);
        assert_int_equal(gwt_send_str(fds[i], slow_req(5000)), 0);
    }
    gwt_assert_stat_becomes(gwt_fx.gport, "/stats", "in_flight", 2, 3000, NULL);
    assert_int_equal(gwt_wait_stat(gwt_fx.bport, "/stats", "in_flight", 2, 3000), 0);
    for (int i = 0; i < 2; i++) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0}; /* close sends RST */
        assert_int_equal(setsockopt(fds[i], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
        close(fds[i]);
    }
    gwt_assert_stat_becomes(gwt_fx.gport, "/stats", "in_flight", 0, 3000, NULL);
    assert_int_equal(gwt_wait_stat(gwt_fx.bport, "/stats", "in_flight", 0, 3000), 0);
    /* Both are counted under result "closed" (nginx's 499), nothing else. */
    gwt_assert_stat_becomes(gwt_fx.gport, "/stats", "requests_closed", 2, 3000, NULL);
    assert_int_equal(gwt_stat(gwt_fx.gport, "/stats", "requests_proxied"), 0);
    assert_int_equal(gwt_stat(gwt_fx.gport, "/stats", "requests_failed_upstream"), 0);
    struct gwt_async a[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(gwt_async_start(&a[i], gwt_fx.gport, slow_req(300)), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(gwt_async_join(&a[i]), 0);
        assert_int_equal(a[i].resp.status, 200);
        gwt_async_free(&a[i]);
    }
    long long maxc = 0;
    assert_int_equal(gwt_backend_stats(gwt_fx.bport, NULL, &maxc), 0);
    assert_true(maxc <= 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        GWT_TEST(test_cap_limits_backend_concurrency),
        GWT_TEST(test_queue_timeout_503),
        GWT_TEST(test_queue_length_zero),
        GWT_TEST(test_queued_request_served),
        GWT_TEST(test_admin_while_saturated),
        GWT_TEST(test_slots_returned_on_client_abort),
        GWT_TEST(test_cap_holds_after_client_resets),
    };
    return cmocka_run_group_tests_name("gateway_cap", tests, gwt_suite_setup_backend,
                                       gwt_suite_teardown);
}
