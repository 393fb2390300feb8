/*
 * Clients that abort (issue 18, SPEC.md §6): a client that resets while its
 * request waits for an in-flight slot is dropped from the queue and never
 * forwarded (result closed); the in-flight slot of a client that aborts
 * mid-exchange (download, upload, reset) is held until the backend is done
 * with the request, so backend_app never sees more than
 * MAX_CONCURRENT_REQUESTS at once. Only 127.0.0.1; every wait is bounded.
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

static const char *slow_req(int ms)
{
    static char buf[128];
    snprintf(buf, sizeof(buf), "GET /slow?ms=%d HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
             ms);
    return buf;
}

static void reset_close(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0}; /* close sends RST */
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
    close(fd);
}

/* Queued clients that reset are dropped at once: they never reach the
 * backend, each counts as closed, and the request holding the slot is not
 * disturbed. */
static void test_queued_clients_that_close_never_reach_backend(void **state)
{
    const char *env[] = {"MAX_CONCURRENT_REQUESTS=1", "QUEUE_TIMEOUT_MS=8000", NULL};
    gwt_suite_start_gw(env);
    struct gwt_async hold;
    assert_int_equal(gwt_async_start(&hold, gwt_fx.gport, slow_req(1500)), 0);
    gwt_assert_stat_becomes(gwt_fx.gport, "/stats", "in_flight", 1, 3000, NULL);
    assert_int_equal(gwt_wait_stat(gwt_fx.bport, "/stats", "in_flight", 1, 3000), 0);

    enum { N = 6 };
    int fds[N];
    for (int i = 0; i < N; i++) {
        fds[i] = gwt_connect(gwt_fx.gport);
        assert_true(fds[i] >= 0);
        char req[128];
        snprintf(req, sizeof(req), "GET /users/%d HTTP/1.1\r\nHost: h\r\n\r\n", i + 1);
        assert_int_equal(gwt_send_str(fds[i], req), 0);
    }
    gwt_assert_stat_becomes(gwt_fx.gport, "/stats", "queue_length", N, 3000, NULL);
    long long t0 = gwt_now_ms();
    for (int i = 0; i < N; i++)
        reset_close(fds[i]);
    /* Dropped while the holder still runs, not served after it. */
    gwt_assert_stat_becomes(gwt_fx.gport, "/stats", "queue_length", 0, 1000, NULL);
    gwt_assert_stat_becomes(gwt_fx.gport, "/stats", "requests_closed", N, 1000, NULL);
    assert_true(gwt_now_ms() - t0 < 1400);
    assert_int_equal(gwt_stat(gwt_fx.gport, "/stats", "in_flight"), 1);

    assert_int_equal(gwt_async_join(&hold), 0);
    assert_int_equal(hold.resp.status, 200);
    gwt_async_free(&hold);
    gwt_assert_stat_becomes(gwt_fx.gport, "/stats", "in_flight", 0, 3000, NULL);
    long long requests = 0;
    assert_int_equal(gwt_backend_stats(gwt_fx.bport, &requests, NULL), 0);
    assert_int_equal(requests, 1); /* only the holder reached the backend */
    assert_int_equal(gwt_stat(gwt_fx.gport, "/stats", "requests_proxied"), 1);
    gwt_assert_serves(gwt_fx.gport, "/users/1");
}

/* One client that aborts mid-exchange, in one of three ways. */
static int start_aborter(int kind)
{
    int fd = gwt_connect(gwt_fx.gport);
    assert_true(fd >= 0);
    static char upload[64 * 1024];
    switch (kind % 3) {
    case 0: /* a download it stops reading, then leaves with unread bytes */
        assert_int_equal(gwt_send_str(fd, "GET /bytes?n=50000000 HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
        break;
    case 1: /* an upload it gives up half-way */
        memset(upload, 'u', sizeof(upload));
        assert_int_equal(gwt_send_str(fd, "POST /echo HTTP/1.1\r\nHost: h\r\n"
                                          "Content-Length: 10000000\r\n\r\n"),
                         0);
        assert_int_equal(gwt_send_all(fd, upload, sizeof(upload)), 0);
        break;
    default: /* a slow request it resets */
        assert_int_equal(gwt_send_str(fd, slow_req(3000)), 0);
        break;
    }
    return fd;
}

/* MAX_CONCURRENT_REQUESTS=5, clients aborting downloads, uploads and
 * resetting while ten more wait for their slots: the backend never sees
 * more than 5 requests at once, every queued request is served, and every
 * slot comes back. */
static void test_cap_holds_at_backend_when_clients_abort(void **state)
{
    const char *env[] = {"MAX_CONCURRENT_REQUESTS=5", "QUEUE_TIMEOUT_MS=20000", NULL};
    gwt_suite_start_gw(env);
    for (int round = 0; round < 3; round++) {
        int fds[5];
        for (int i = 0; i < 5; i++)
            fds[i] = start_aborter(round + i);
        gwt_assert_stat_becomes(gwt_fx.gport, "/stats", "in_flight", 5, 3000, NULL);
        enum { Q = 10 };
        struct gwt_async q[Q];
        for (int i = 0; i < Q; i++)
            assert_int_equal(gwt_async_start(&q[i], gwt_fx.gport, slow_req(150)), 0);
        gwt_assert_stat_becomes(gwt_fx.gport, "/stats", "queue_length", Q, 3000, NULL);
        usleep(100 * 1000); /* downloads and uploads under way */
        for (int i = 0; i < 5; i++) {
            if ((round + i) % 3 == 2)
                reset_close(fds[i]);
            else
                close(fds[i]);
        }
        for (int i = 0; i < Q; i++) {
            assert_int_equal(gwt_async_join(&q[i]), 0);
            assert_int_equal(q[i].resp.status, 200);
            gwt_async_free(&q[i]);
        }
    }
    gwt_assert_stat_becomes(gwt_fx.gport, "/stats", "in_flight", 0, 5000, NULL);
    assert_int_equal(gwt_wait_stat(gwt_fx.bport, "/stats", "in_flight", 0, 5000), 0);
    long long maxc = 0;
    assert_int_equal(gwt_backend_stats(gwt_fx.bport, NULL, &maxc), 0);
    if (maxc > 5)
        fail_msg("backend_app saw %lld requests at once with MAX_CONCURRENT_REQUESTS=5", maxc);
    gwt_assert_serves(gwt_fx.gport, "/users/1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        GWT_TEST(test_queued_clients_that_close_never_reach_backend),
        GWT_TEST(test_cap_holds_at_backend_when_clients_abort),
    };
    return cmocka_run_group_tests_name("abort", tests, gwt_suite_setup_backend, gwt_suite_teardown);
}
