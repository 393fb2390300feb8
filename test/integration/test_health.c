/*
 * Integration tests of the dependency prober (src/health.c, SPEC.md §4):
 * /health keeps answering at once while the backend does not complete TCP
 * handshakes, because the probes run in the prober thread and workers only
 * read its snapshot; and a gateway nobody monitors opens no connection of
 * its own to the backend.
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

#include "gwtest.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#define MAX_FILL 8

static struct gwt_proc gw;

/* A listener on 127.0.0.1 whose accept queue is full and never drained:
 * Linux drops the SYNs of further connects (tcp_conn_request on a full
 * queue), so they stay pending exactly as against a blackholed address.
 * The queue is filled by connecting until one connect does not complete
 * within 300 ms. */
struct blackhole {
    int listen_fd;
    int port;
    int fill[MAX_FILL];
    int nfill;
};

static void blackhole_open(struct blackhole *b)
{
    b->nfill = 0;
    b->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(b->listen_fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(b->listen_fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(b->listen_fd, 0), 0);
    socklen_t len = sizeof(a);
    assert_int_equal(getsockname(b->listen_fd, (struct sockaddr *)&a, &len), 0);
    b->port = ntohs(a.sin_port);
    bool pending = false;
    while (!pending && b->nfill < MAX_FILL) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        b->fill[b->nfill++] = fd;
        int rc = connect(fd, (struct sockaddr *)&a, sizeof(a));
        assert_true(rc == 0 || errno == EINPROGRESS);
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        pending = rc != 0 && poll(&p, 1, 300) == 0;
    }
    if (!pending)
        fail_msg("the accept queue of a backlog-0 listener never filled");
}

static void blackhole_close(struct blackhole *b)
{
    for (int i = 0; i < b->nfill; i++)
        close(b->fill[i]);
    close(b->listen_fd);
}

/* GET /health: asserts 503 with backend "disconnected"; returns the time
 * the answer took in ms. */
static long long health_degraded_ms(int port)
{
    long long t0 = gwt_now_ms();
    struct gwt_response r;
    assert_int_equal(gwt_get(port, "/health", &r), 0);
    long long took = gwt_now_ms() - t0;
    assert_int_equal(r.status, 503);
    json_t *j = gwt_json(&r);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "degraded");
    assert_string_equal(json_string_value(json_object_get(j, "backend")), "disconnected");
    assert_string_equal(json_string_value(json_object_get(j, "redis")), "disabled");
    json_decref(j);
    gwt_response_free(&r);
    return took;
}

/* The backend never completes a handshake; each probe waits 500 ms for it.
 * After the first (cold) answer, which waits for one round, /health is
 * polled every 50 ms for 3 s, across six probe rounds and three of the old
 * 1 s cache expiries (each of which used to hold a worker for the whole
 * connect timeout): every answer is immediate. */
static void test_health_fast_while_backend_blackholes(void **state)
{
    struct blackhole b;
    blackhole_open(&b);
    const char *env[] = {"UPSTREAM_CONNECT_TIMEOUT_MS=2000", NULL};
    int gport = 0;
    assert_int_equal(gwt_gateway_for(&gw, &gport, b.port, env), 0);

    long long first = health_degraded_ms(gport);
    if (first > 2000)
        fail_msg("cold /health took %lld ms (one probe round is at most ~600)", first);

    long long slowest = 0, end = gwt_now_ms() + 3000;
    int n = 0;
    while (gwt_now_ms() < end && n < 200) {
        long long took = health_degraded_ms(gport);
        if (took > slowest)
            slowest = took;
        n++;
        usleep(50 * 1000);
    }
    assert_true(n >= 10);
    if (slowest >= 250)
        fail_msg("a /health answer took %lld ms while the backend blackholed", slowest);

    /* Liveness never looks at the dependencies. */
    struct gwt_response r;
    assert_int_equal(gwt_get(gport, "/health?probe=live", &r), 0);
    assert_int_equal(r.status, 200);
    gwt_response_free(&r);
    assert_int_equal(gwt_stop_tracked(), 0);
    blackhole_close(&b);
}

/* A gateway without traffic and without /health requests makes no
 * connection of its own to the backend: the listener's queue stays empty
 * until the first /health, whose probe is then the first connection. */
static void test_no_probe_without_demand(void **state)
{
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(lfd, 16), 0);
    socklen_t len = sizeof(a);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &len), 0);
    int gport = 0;
    assert_int_equal(gwt_gateway_for(&gw, &gport, ntohs(a.sin_port), NULL), 0);

    /* Longer than two probe intervals: nothing may arrive. */
    struct pollfd p = {.fd = lfd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 1200), 0);

    struct gwt_response r;
    assert_int_equal(gwt_get(gport, "/health", &r), 0);
    assert_int_equal(r.status, 200);
    gwt_response_free(&r);
    assert_int_equal(poll(&p, 1, 2000), 1);
    int c = accept(lfd, NULL, NULL);
    assert_true(c >= 0);
    close(c);
    assert_int_equal(gwt_stop_tracked(), 0);
    close(lfd);
}

static int test_teardown(void **state)
{
    return gwt_stop_tracked();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_health_fast_while_backend_blackholes, test_teardown),
        cmocka_unit_test_teardown(test_no_probe_without_demand, test_teardown),
    };
    return cmocka_run_group_tests_name("health", tests, NULL, NULL);
}
