/*
 * Shaping instead of refusing (SPEC.md §5.1 delay, issue 12) against the
 * real gateway and backend_app: a token bucket with a delay holds the
 * requests beyond its burst on the worker's timer and then forwards them,
 * each no earlier than its place in the bucket; a held request takes no
 * in-flight slot (another request passes with MAX_CONCURRENT_REQUESTS=1);
 * beyond the delay it is 429; a client that leaves while held is
 * forgotten (the backend never sees its request); /stats and /metrics
 * count the held requests.
 */
#include <errno.h>
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

/* 2 requests a second (T = 500 ms), burst 1, held up to 3 s, on /users/;
 * every other path is not limited. */
static const char rules[] = "version: 1\n"
                            "limits:\n"
                            "  - name: shaped\n"
                            "    match: { path_prefix: /users/ }\n"
                            "    key: global\n"
                            "    rates:\n"
                            "      - { requests: 2, window: 1s, algorithm: token_bucket,\n"
                            "          burst: 1, delay: 3s }\n";

static char rules_path[128];

static void start_shaping_gateway(void)
{
    snprintf(rules_path, sizeof(rules_path), "/tmp/gwt-shaping-%d.yaml", (int)getpid());
    FILE *f = fopen(rules_path, "w");
    assert_non_null(f);
    assert_true(fputs(rules, f) >= 0);
    assert_int_equal(fclose(f), 0);
    char file_env[160];
    snprintf(file_env, sizeof(file_env), "RATE_LIMIT_RULES_FILE=%s", rules_path);
    const char *env[] = {file_env, "MAX_CONCURRENT_REQUESTS=1", "WORKER_THREADS=1", NULL};
    gwt_suite_start_gw2(env);
}

static const char get_user[] = "GET /users/1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

/* Four requests at once: one passes at once, three are held 500, 1000 and
 * 1500 ms (their places in the bucket) and then answered 200; meanwhile a
 * request to an unlimited path is served at once although the in-flight
 * cap is 1: the held ones take no slot. */
static void test_held_in_order_without_a_slot(void **state)
{
    (void)state;
    start_shaping_gateway();
    enum { N = 4 };
    struct gwt_async a[N];
    for (int i = 0; i < N; i++)
        assert_int_equal(gwt_async_start(&a[i], gwt_fx.gport2, get_user), 0);
    /* The held requests are counted as soon as the limiter decides. */
    assert_int_equal(gwt_wait_stat(gwt_fx.gport2, "/stats", "delayed", N - 1, 5000), 0);
    long long t0 = gwt_now_ms();
    struct gwt_response r = {0};
    assert_int_equal(gwt_get(gwt_fx.gport2, "/other", &r), 0);
    long long other_ms = gwt_now_ms() - t0;
    gwt_response_free(&r);
    long long elapsed[N];
    for (int i = 0; i < N; i++) {
        assert_int_equal(gwt_async_join(&a[i]), 0);
        assert_int_equal(a[i].resp.status, 200);
        elapsed[i] = a[i].elapsed_ms;
        gwt_async_free(&a[i]);
    }
    qsort(elapsed, N, sizeof(elapsed[0]), cmp_ll);
    printf("held: %lld %lld %lld %lld ms; unlimited request beside them: %lld ms\n", elapsed[0],
           elapsed[1], elapsed[2], elapsed[3], other_ms);
    /* Not earlier than its place (the timer is armed rounded up). Each
     * time is taken from its own thread's start, which may come a little
     * after the first request was decided: 50 ms of slack for that. */
    for (int i = 1; i < N; i++)
        if (elapsed[i] < 500LL * i - 50)
            fail_msg("request %d answered after %lld ms, before its place at %d ms", i, elapsed[i],
                     500 * i);
    /* Not blocked behind the held requests (their longest hold is 1.5 s). */
    assert_true(other_ms < 1000);
    assert_int_equal(gwt_stat(gwt_fx.gport2, "/stats", "limits.shaped.delayed"), N - 1);
    assert_int_equal(gwt_stat(gwt_fx.gport2, "/stats", "limits.shaped.allowed"), 1);
    assert_int_equal(gwt_stat(gwt_fx.gport2, "/stats", "in_flight"), 0);
}

/* Beyond B*T + delay the bucket refuses: 429 with Retry-After, nothing held. */
static void test_beyond_the_delay_refused(void **state)
{
    (void)state;
    start_shaping_gateway();
    /* 1 at once + 6 held (500 .. 3000 ms) fill the delay; the 8th is over. */
    enum { N = 8 };
    int fds[N];
    for (int i = 0; i < N; i++) {
        fds[i] = gwt_connect(gwt_fx.gport2);
        assert_true(fds[i] >= 0);
        assert_int_equal(gwt_send_str(fds[i], get_user), 0);
    }
    int refused = 0, ok = 0;
    for (int i = 0; i < N; i++) {
        struct gwt_response r = {0};
        assert_int_equal(gwt_read_response(fds[i], &r, false), 0);
        if (r.status == 429) {
            refused++;
            assert_non_null(gwt_header(&r, "Retry-After"));
            assert_true(atoi(gwt_header(&r, "Retry-After")) >= 1);
        } else {
            assert_int_equal(r.status, 200);
            ok++;
        }
        gwt_response_free(&r);
        close(fds[i]);
    }
    assert_int_equal(ok, 7);
    assert_int_equal(refused, 1);
    assert_int_equal(gwt_stat(gwt_fx.gport2, "/stats", "limits.shaped.limited"), 1);
}

/* A client that closes while held is forgotten: its request never reaches
 * the backend, and its place is not given to anyone else's request twice. */
static void test_client_leaving_while_held(void **state)
{
    (void)state;
    start_shaping_gateway();
    struct gwt_response r = {0};
    assert_int_equal(gwt_get(gwt_fx.gport2, "/users/1", &r), 0); /* the burst */
    assert_int_equal(r.status, 200);
    gwt_response_free(&r);
    int fd = gwt_connect(gwt_fx.gport2);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd, get_user), 0); /* held ~500 ms */
    assert_int_equal(gwt_wait_stat(gwt_fx.gport2, "/stats", "delayed", 1, 5000), 0);
    close(fd);
    assert_int_equal(gwt_wait_stat(gwt_fx.gport2, "/stats", "requests_closed", 1, 5000), 0);
    /* A later request, held past the first one's place, completes: by then
     * the left one's hold is over, and the backend still saw 2 requests. */
    assert_int_equal(gwt_get(gwt_fx.gport2, "/users/1", &r), 0);
    assert_int_equal(r.status, 200);
    gwt_response_free(&r);
    assert_int_equal(gwt_backend_requests(gwt_fx.bport), 2);
    /* Only the /stats request's own connection is left, once the gateway
     * has seen the earlier clients' FINs. */
    assert_int_equal(gwt_wait_stat(gwt_fx.gport2, "/stats", "connections_active", 1, 5000), 0);
}

/* /metrics: the held requests in decisions and the delay histogram. */
static void test_metrics_count_delays(void **state)
{
    (void)state;
    start_shaping_gateway();
    struct gwt_async a[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(gwt_async_start(&a[i], gwt_fx.gport2, get_user), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(gwt_async_join(&a[i]), 0);
        assert_int_equal(a[i].resp.status, 200);
        gwt_async_free(&a[i]);
    }
    struct gwt_response m = {0};
    assert_int_equal(gwt_get(gwt_fx.gport2, "/metrics", &m), 0);
    assert_non_null(strstr(
        m.body, "gateway_ratelimit_decisions_total{limit=\"shaped\",decision=\"delayed\"} 2\n"));
    assert_non_null(strstr(m.body, "gateway_ratelimit_delay_seconds_count 2\n"));
    assert_non_null(strstr(m.body, "gateway_requests_delayed_total 2\n"));
    gwt_response_free(&m);
}

static int teardown_file(void **state)
{
    if (rules_path[0] != '\0')
        unlink(rules_path);
    return gwt_suite_teardown(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_held_in_order_without_a_slot, gwt_suite_test_setup,
                                        gwt_suite_test_teardown),
        cmocka_unit_test_setup_teardown(test_beyond_the_delay_refused, gwt_suite_test_setup,
                                        gwt_suite_test_teardown),
        cmocka_unit_test_setup_teardown(test_client_leaving_while_held, gwt_suite_test_setup,
                                        gwt_suite_test_teardown),
        cmocka_unit_test_setup_teardown(test_metrics_count_delays, gwt_suite_test_setup,
                                        gwt_suite_test_teardown),
    };
    return cmocka_run_group_tests(tests, gwt_suite_setup_backend, teardown_file);
}
