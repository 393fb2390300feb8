/*
 * Integration tests of malformed and abusive client input (SPEC.md sections
 * 3 and 6): request smuggling vectors answered 400 with the connection
 * closed and nothing reaching the backend, 431 for oversized headers, 413 for
 * oversized bodies, 408 and silent close for slow or idle clients. Every test
 * ends by proving the gateway still serves.
 */
#include <errno.h>
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

#include "gwt_fault.h"
#include "gwt_suite.h"
#include "gwtest.h"

/* A normal request through port reaches the backend: the count grows by one. */
static void assert_serves(int port)
{
    gwt_assert_serves_counted(port, gwt_fx.bport, "/users/5", NULL);
}

/* Sends len bytes on a fresh connection, expects a gateway-generated status,
 * the connection closed, and nothing of it at the backend. */
static void expect_rejected(int port, const char *what, const char *bytes, size_t len, int status)
{
    long long before = gwt_backend_requests(gwt_fx.bport);
    int fd = gwt_connect(port);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_all(fd, bytes, len), 0);
    struct gwt_response r;
    int rc = gwt_read_response(fd, &r, false);
    if (rc != 0 || r.status != status) {
        fprintf(stderr, "case \"%s\": rc %d status %d, want %d\n", what, rc, r.status, status);
        gwt_response_free(&r);
        close(fd);
        fail_msg("case \"%s\" not rejected with %d", what, status);
    }
    gwt_assert_problem(&r, status, NULL);
    gwt_response_free(&r);
    if (!gwt_peer_closed(fd, 3000)) {
        close(fd);
        fail_msg("case \"%s\": connection left open after %d", what, status);
    }
    close(fd);
    /* A later request is the first thing the backend sees. */
    assert_serves(port);
    long long after = gwt_backend_requests(gwt_fx.bport);
    if (after != before + 1)
        fail_msg("case \"%s\": reached the backend (%lld requests, want %lld)", what,
                 after - before - 1, 0LL);
}

#define CASE(s) s, sizeof(s) - 1

/* SPEC.md section 6 smuggling defence, one vector per case. */
static void test_smuggling_vectors(void **state)
{
    static const struct {
        const char *name;
        const char *bytes;
        size_t len;
    } cases[] = {
        {"CL and TE", CASE("POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nX")},
        {"TE and CL", CASE("POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                           "Content-Length: 3\r\n\r\n0\r\n\r\n")},
        {"TE not final chunked", CASE("POST /echo HTTP/1.1\r\nHost: h\r\n"
                                      "Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n")},
        {"TE gzip only", CASE("POST /echo HTTP/1.1\r\nHost: h\r\n"
                              "Transfer-Encoding: gzip\r\n\r\nabc")},
        {"TE unknown", CASE("POST /echo HTTP/1.1\r\nHost: h\r\n"
                            "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n")},
        {"duplicate differing CL", CASE("POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
                                        "Content-Length: 4\r\n\r\nabcd")},
        {"CL list", CASE("POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 4\r\n\r\nabcd")},
        {"negative CL", CASE("POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n")},
        {"invalid chunk size", CASE("POST /echo HTTP/1.1\r\nHost: h\r\n"
                                    "Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")},
        {"space before colon", CASE("GET /users/1 HTTP/1.1\r\nHost: h\r\n"
                                    "Transfer-Encoding : chunked\r\n\r\n")},
        {"space in header name", CASE("GET /users/1 HTTP/1.1\r\nHost: h\r\nX Bad: 1\r\n\r\n")},
        {"obs-fold", CASE("GET /users/1 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n  folded\r\n\r\n")},
        {"bare CR in value", CASE("GET /users/1 HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n")},
        {"bare LF line end", CASE("GET /users/1 HTTP/1.1\r\nHost: h\nX-A: 1\r\n\r\n")},
        {"NUL in value", CASE("GET /users/1 HTTP/1.1\r\nHost: h\r\nX-A: a\0b\r\n\r\n")},
        {"garbage request line", CASE("HELLO\r\n\r\n")},
        {"bad version", CASE("GET /users/1 HTTP/1.7x\r\nHost: h\r\n\r\n")},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_rejected(gwt_fx.gport, cases[i].name, cases[i].bytes, cases[i].len, 400);
    /* 400s are counted as bad requests, none as proxied failures. */
    assert_true(gwt_stat(gwt_fx.gport, "/stats", "requests_bad") >=
                (long long)(sizeof(cases) / sizeof(cases[0])));
}

/* A valid request followed on the same connection by a smuggled one: the
 * first is answered normally, the second rejected, and only one request
 * reaches the backend. */
static void test_smuggling_after_valid_request(void **state)
{
    long long before = gwt_backend_requests(gwt_fx.bport);
    int fd = gwt_connect(gwt_fx.gport);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd, "GET /users/1 HTTP/1.1\r\nHost: h\r\n\r\n"
                                      "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n"
                                      "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
                     0);
    struct gwt_response r;
    assert_int_equal(gwt_read_response(fd, &r, false), 0);
    assert_int_equal(r.status, 200);
    gwt_response_free(&r);
    assert_int_equal(gwt_read_response(fd, &r, false), 0);
    gwt_assert_problem(&r, 400, NULL);
    gwt_response_free(&r);
    assert_true(gwt_peer_closed(fd, 3000));
    close(fd);
    assert_int_equal(gwt_backend_requests(gwt_fx.bport), before + 1);
    assert_serves(gwt_fx.gport);
}

/* A header section over MAX_HEADER_BYTES (default 16384): 431. One under
 * the limit passes. */
static void test_431_huge_header(void **state)
{
    size_t big = 20000;
    char *req = malloc(big + 256);
    assert_non_null(req);
    int n = snprintf(req, 256, "GET /users/1 HTTP/1.1\r\nHost: h\r\nX-Big: ");
    memset(req + n, 'a', big);
    memcpy(req + n + big, "\r\n\r\n", 5);
    expect_rejected(gwt_fx.gport, "20000-byte header", req, strlen(req), 431);

    /* Many headers adding up beyond the limit. */
    size_t off = (size_t)snprintf(req, 256, "GET /users/1 HTTP/1.1\r\nHost: h\r\n");
    for (int i = 0; off + 64 < big; i++)
        off += (size_t)sprintf(req + off, "X-H%d: %040d\r\n", i, i);
    memcpy(req + off, "\r\n", 3);
    expect_rejected(gwt_fx.gport, "many headers", req, strlen(req), 431);

    /* 12 KB of headers is fine. */
    n = snprintf(req, 256, "GET /echo HTTP/1.1\r\nHost: h\r\nConnection: close\r\nX-Big: ");
    memset(req + n, 'b', 12000);
    memcpy(req + n + 12000, "\r\n\r\n", 5);
    struct gwt_response r;
    assert_int_equal(gwt_http(gwt_fx.gport, req, &r), 0);
    assert_int_equal(r.status, 200);
    struct gwt_echo e;
    assert_int_equal(gwt_echo_parse(&r, &e), 0);
    assert_int_equal(strlen(gwt_echo_header(&e, "X-Big")), 12000);
    gwt_echo_free(&e);
    gwt_response_free(&r);
    free(req);
    assert_serves(gwt_fx.gport);
}

/* A body over MAX_BODY_BYTES: 413, not forwarded; exactly the limit passes. */
static void test_413_body_too_large(void **state)
{
    const char *env[] = {"MAX_BODY_BYTES=1000", NULL};
    assert_int_equal(gwt_gateway_for(&gwt_fx.gw2, &gwt_fx.gport2, gwt_fx.bport, env), 0);
    char *req = malloc(4096);
    assert_non_null(req);
    int n = snprintf(req, 256, "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 2000\r\n\r\n");
    memset(req + n, 'x', 2000);
    expect_rejected(gwt_fx.gport2, "CL 2000 > 1000", req, (size_t)n + 2000, 413);

    n = snprintf(req, 256,
                 "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\nConnection: "
                 "close\r\n\r\n");
    memset(req + n, 'y', 1000);
    req[n + 1000] = '\0';
    struct gwt_response r;
    assert_int_equal(gwt_http(gwt_fx.gport2, req, &r), 0);
    assert_int_equal(r.status, 200);
    struct gwt_echo e;
    assert_int_equal(gwt_echo_parse(&r, &e), 0);
    assert_int_equal(e.body_length, 1000);
    gwt_echo_free(&e);
    gwt_response_free(&r);
    free(req);
    assert_serves(gwt_fx.gport2);
}

/* A request head that stalls: 408 after CLIENT_TIMEOUT_MS, then close. */
static void test_408_slow_header(void **state)
{
    const char *env[] = {"CLIENT_TIMEOUT_MS=300", NULL};
    assert_int_equal(gwt_gateway_for(&gwt_fx.gw2, &gwt_fx.gport2, gwt_fx.bport, env), 0);
    long long before = gwt_backend_requests(gwt_fx.bport);
    int fd = gwt_connect(gwt_fx.gport2);
    assert_true(fd >= 0);
    long long t0 = gwt_now_ms();
    assert_int_equal(gwt_send_str(fd, "GET /users/1 HTTP/1.1\r\nHost: h\r\nX-Slow: "), 0);
    struct gwt_response r;
    assert_int_equal(gwt_read_response(fd, &r, false), 0);
    long long ms = gwt_now_ms() - t0;
    gwt_assert_problem(&r, 408, NULL);
    gwt_response_free(&r);
    assert_true(ms >= 250);
    assert_true(ms < 3000);
    assert_true(gwt_peer_closed(fd, 3000));
    close(fd);
    assert_int_equal(gwt_backend_requests(gwt_fx.bport), before);
    assert_serves(gwt_fx.gport2);
}

/* An idle connection (no request started, or between keep-alive requests)
 * is closed after CLIENT_TIMEOUT_MS without any response bytes. */
static void test_idle_close_silent(void **state)
{
    const char *env[] = {"CLIENT_TIMEOUT_MS=300", NULL};
    assert_int_equal(gwt_gateway_for(&gwt_fx.gw2, &gwt_fx.gport2, gwt_fx.bport, env), 0);
    int fd = gwt_connect(gwt_fx.gport2);
    assert_true(fd >= 0);
    long long t0 = gwt_now_ms();
    assert_int_equal(gwt_fault_bytes_until_eof(fd, 3000), 0);
    long long ms = gwt_now_ms() - t0;
    assert_true(ms >= 250);
    close(fd);

    fd = gwt_connect(gwt_fx.gport2);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd, "GET /users/1 HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    struct gwt_response r;
    assert_int_equal(gwt_read_response(fd, &r, false), 0);
    assert_int_equal(r.status, 200);
    gwt_response_free(&r);
    assert_int_equal(gwt_fault_bytes_until_eof(fd, 3000), 0);
    close(fd);
    assert_serves(gwt_fx.gport2);
}

/* Many connections opened and dropped at once leave nothing behind. */
static void test_connection_churn(void **state)
{
    enum { N = 50 };
    int fds[N];
    for (int i = 0; i < N; i++) {
        fds[i] = gwt_connect(gwt_fx.gport);
        assert_true(fds[i] >= 0);
        if (i % 3 == 0)
            assert_int_equal(gwt_send_str(fds[i], "GET /users/1 HTTP/1.1\r\nHo"), 0);
    }
    for (int i = 0; i < N; i++)
        close(fds[i]);
    assert_serves(gwt_fx.gport);
    /* connections_active comes back down to just the /stats connection. */
    long long deadline = gwt_now_ms() + 3000;
    long long active = -1;
    while (gwt_now_ms() < deadline) {
        active = gwt_stat(gwt_fx.gport, "/stats", "connections_active");
        if (active == 1)
            break;
        usleep(10000);
    }
    assert_int_equal(active, 1);
}

static int group_setup(void **state)
{
    return gwt_suite_setup(GWT_FX_GATEWAY);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        GWT_TEST(test_smuggling_vectors), GWT_TEST(test_smuggling_after_valid_request),
        GWT_TEST(test_431_huge_header),   GWT_TEST(test_413_body_too_large),
        GWT_TEST(test_408_slow_header),   GWT_TEST(test_idle_close_silent),
        GWT_TEST(test_connection_churn),
    };
    return cmocka_run_group_tests_name("gateway_errors", tests, group_setup, gwt_suite_teardown);
}
