/*
 * Integration tests of the upstream keep-alive pool (SPEC.md section 3,
 * UPSTREAM_KEEPALIVE and UPSTREAM_IDLE_TIMEOUT_MS): at the defaults a burst
 * below the in-flight cap opens no more backend connections than it has
 * requests in flight, an idle pooled connection is closed after its timeout,
 * and a pooled connection the backend closes is dropped without failing a
 * request. gateway_upstream_connections_opened_total shows each of these.
 */
#include <errno.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "gwt_fault.h"
#include "gwt_suite.h"
#include "gwtest.h"

static struct gwt_proc gw;

/* The shared fixture (test/support/gwt_suite): backend_app and the scripted
 * fake upstream for the group; per test, backend counters zeroed and every
 * gateway the test started stopped, each expected to exit 0. */
static int group_setup(void **state)
{
    (void)state;
    return gwt_suite_setup(GWT_FX_FAKE);
}

static long long opened(int port)
{
    return gwt_stat(port, "/stats", "upstream_connections_opened");
}

#define CLIENTS 60
#define ROUNDS  10

/* Sends ROUNDS rounds of one request on each of CLIENTS keep-alive client
 * connections (all sent before any answer is read, so up to CLIENTS are in
 * flight at once) and returns the backend connections the gateway opened. */
static long long burst_opened(struct gwt_proc *p, const char *keepalive)
{
    const char *env[] = {"WORKER_THREADS=1", keepalive, NULL};
    int port;
    const char *const *e = env;
    if (!keepalive)
        env[1] = NULL;
    assert_int_equal(gwt_gateway_for(p, &port, gwt_fx.bport, e), 0);
    int fds[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        fds[i] = gwt_connect(port);
        assert_true(fds[i] >= 0);
    }
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < CLIENTS; i++)
            assert_int_equal(gwt_send_str(fds[i], "GET /users/3 HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
        for (int i = 0; i < CLIENTS; i++)
            gwt_expect_user(fds[i], 3, "burst");
    }
    for (int i = 0; i < CLIENTS; i++)
        close(fds[i]);
    assert_int_equal(gwt_stat(port, "/stats", "requests_proxied"), CLIENTS * ROUNDS);
    long long n = opened(port);
    assert_int_equal(gwt_stop(p, SIGTERM, 5000), 0);
    return n;
}

/* Issue 16: the default pool (auto = MAX_CONCURRENT_REQUESTS) never churns
 * below the cap; a small explicit pool does, and the counter shows it. */
static void test_default_pool_does_not_churn(void **state)
{
    (void)state;
    static struct gwt_proc small_pool;
    long long at_default = burst_opened(&gw, NULL);
    if (at_default > CLIENTS)
        fail_msg("defaults opened %lld backend connections for %d in flight", at_default, CLIENTS);
    long long small = burst_opened(&small_pool, "UPSTREAM_KEEPALIVE=8");
    if (small < CLIENTS + (ROUNDS - 1) * (CLIENTS - 8) / 2)
        fail_msg("a pool of 8 opened only %lld connections: the counter misses churn", small);
}

/* A pooled connection idle for UPSTREAM_IDLE_TIMEOUT_MS is closed; the next
 * request opens a new one. */
static void test_idle_timeout_closes_pooled(void **state)
{
    (void)state;
    assert_int_equal(gwt_fault_script(gwt_fx.fake, NULL, 0), 0);
    const char *env[] = {"WORKER_THREADS=1", "UPSTREAM_IDLE_TIMEOUT_MS=300", NULL};
    int port;
    assert_int_equal(gwt_gateway_for(&gw, &port, gwt_fault_port(gwt_fx.fake), env), 0);

    gwt_assert_serves(port, "/a");
    long long t0 = gwt_now_ms();
    gwt_assert_serves(port, "/b"); /* within the timeout: the same connection */
    assert_int_equal(gwt_fault_connections(gwt_fx.fake), 1);
    long long waited = -1;
    for (int i = 0; i < 300; i++) { /* at most 3 s */
        if (gwt_fault_peer_closes(gwt_fx.fake) == 1) {
            waited = gwt_now_ms() - t0;
            break;
        }
        usleep(10000);
    }
    if (waited < 0)
        fail_msg("the idle pooled connection was not closed within 3 s");
    if (waited < 250)
        fail_msg("the pooled connection was closed after %lld ms, before its 300 ms", waited);
    gwt_assert_serves(port, "/c");
    assert_int_equal(gwt_fault_connections(gwt_fx.fake), 2);
    assert_int_equal(opened(port), 2);
}

/* The backend closes every connection right after its response (as a
 * backend with a short keep-alive timeout does): each request still
 * succeeds, none is counted as an upstream failure. */
static void test_backend_closed_pooled_is_dropped(void **state)
{
    (void)state;
    enum { N = 20 };
    struct gwt_fault_step steps[N];
    for (int i = 0; i < N; i++)
        steps[i] = (struct gwt_fault_step){
            .reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", .after = GWT_FAULT_CLOSE};
    assert_int_equal(gwt_fault_script(gwt_fx.fake, steps, N), 0);
    int port;
    const char *env[] = {"WORKER_THREADS=1", NULL};
    assert_int_equal(gwt_gateway_for(&gw, &port, gwt_fault_port(gwt_fx.fake), env), 0);
    int fd = gwt_connect(port);
    assert_true(fd >= 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(gwt_send_str(fd, "GET /x HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
        struct gwt_response r;
        gwt_must_read(fd, &r, false, "request after the backend closed its connection");
        if (r.status != 200)
            fail_msg("request %d: status %d", i, r.status);
        gwt_response_free(&r);
    }
    close(fd);
    assert_int_equal(gwt_stat(port, "/stats", "requests_failed_upstream"), 0);
    assert_int_equal(gwt_stat(port, "/stats", "requests_proxied"), N);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        GWT_TEST(test_default_pool_does_not_churn),
        GWT_TEST(test_idle_timeout_closes_pooled),
        GWT_TEST(test_backend_closed_pooled_is_dropped),
    };
    return cmocka_run_group_tests(tests, group_setup, gwt_suite_teardown);
}
