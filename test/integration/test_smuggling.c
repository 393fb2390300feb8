/*
 * Request-smuggling matrix (SPEC.md section 6, issue 3 item 2): one cmocka
 * test per row, each row one raw request and the status the gateway must
 * answer. Every row checks problem+json, that the connection is closed with
 * nothing after the error, that nothing reached backend_app (its /stats
 * request count is unchanged), and that a normal request is served after it.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
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

/* One row: the bytes sent on a fresh connection and the expected status. */
struct row {
    const char *name;
    const char *bytes;
    size_t len;
    int status;
};

#define ROW(n, s)                                                                                  \
    {                                                                                              \
        n, s, sizeof(s) - 1, 400                                                                   \
    }
#define ROW_STATUS(n, st, s)                                                                       \
    {                                                                                              \
        n, s, sizeof(s) - 1, st                                                                    \
    }
#define POST_H "POST /echo HTTP/1.1\r\nHost: h\r\n"
#define GET_H  "GET /users/1 HTTP/1.1\r\nHost: h\r\n"

/* Rows whose bytes are built at run time (too long to spell out). */
static char long_ext[4096];
static char long_size[256];

static struct row rows[] = {
    /* Content-Length together with Transfer-Encoding, every order and spelling. */
    ROW("CL then TE", POST_H "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX"),
    ROW("TE then CL", POST_H "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\nX"),
    ROW("CL then TE, CL covering the body",
        POST_H "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX"),
    ROW("TE then CL, nothing after the last chunk",
        POST_H "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"),
    ROW("CL 0 with TE", POST_H "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ROW("TE value upper case with CL",
        POST_H "Content-Length: 5\r\nTransfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\nX"),
    ROW("TE name mixed case with CL",
        POST_H "content-length: 5\r\ntRaNsFeR-eNcOdInG: chunked\r\n\r\n0\r\n\r\nX"),
    ROW("TE without space with CL",
        POST_H "Content-Length: 5\r\nTransfer-Encoding:chunked\r\n\r\n0\r\n\r\nX"),
    ROW("TE tab before value with CL",
        POST_H "Content-Length: 5\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\nX"),
    ROW("TE trailing whitespace with CL",
        POST_H "Content-Length: 5\r\nTransfer-Encoding: chunked \t\r\n\r\n0\r\n\r\nX"),
    /* Transfer-Encoding other than exactly one final chunked. */
    ROW("TE chunked then gzip", POST_H "Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
    ROW("TE gzip only", POST_H "Transfer-Encoding: gzip\r\n\r\nabc"),
    ROW("TE gzip then chunked (coding not decoded)",
        POST_H "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
    ROW("TE chunked listed twice", POST_H "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
    ROW("TE header twice", POST_H "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  "0\r\n\r\n"),
    ROW("TE identity", POST_H "Transfer-Encoding: identity\r\n\r\nabc"),
    ROW("TE xchunked", POST_H "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
    ROW("TE chunkedx", POST_H "Transfer-Encoding: chunkedx\r\n\r\n0\r\n\r\n"),
    ROW("TE quoted chunked", POST_H "Transfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n"),
    ROW("TE vertical tab before value", POST_H "Transfer-Encoding:\x0b"
                                               "chunked\r\n\r\n0\r\n\r\n"),
    ROW("TE empty value", POST_H "Transfer-Encoding: \r\n\r\n0\r\n\r\n"),
    ROW("TE in an HTTP/1.0 request",
        "POST /echo HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    /* Content-Length that is not one plain decimal number. */
    ROW("CL twice, equal", POST_H "Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc"),
    ROW("CL twice, different", POST_H "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
    ROW("CL comma list, equal", POST_H "Content-Length: 3, 3\r\n\r\nabc"),
    ROW("CL comma list, different", POST_H "Content-Length: 3,4\r\n\r\nabcd"),
    ROW("CL comma-space list, different", POST_H "Content-Length: 3, 4\r\n\r\nabcd"),
    ROW("CL plus sign", POST_H "Content-Length: +3\r\n\r\nabc"),
    ROW("CL hex", POST_H "Content-Length: 0x3\r\n\r\nabc"),
    ROW("CL negative", POST_H "Content-Length: -1\r\n\r\n"),
    ROW("CL oversized (26 digits)", POST_H "Content-Length: 99999999999999999999999999\r\n\r\n"),
    ROW("CL 2^64", POST_H "Content-Length: 18446744073709551616\r\n\r\n"),
    ROW("CL inner space", POST_H "Content-Length: 1 2\r\n\r\nabcdefghijkl"),
    ROW("CL empty", POST_H "Content-Length: \r\n\r\n"),
    ROW("CL trailing garbage", POST_H "Content-Length: 3x\r\n\r\nabc"),
    /* Chunk framing. */
    ROW("chunk size not hex", POST_H "Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"),
    ROW("chunk size 17 hex digits (overflow)",
        POST_H "Transfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n"),
    ROW("chunk size negative", POST_H "Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n"),
    ROW("chunk size 0x prefix",
        POST_H "Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"),
    ROW("chunk size empty", POST_H "Transfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n"),
    ROW("bare LF after chunk size",
        POST_H "Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"),
    ROW("bare LF after chunk data",
        POST_H "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n"),
    ROW("bare LF in last chunk", POST_H "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\n\n"),
    ROW("bare CR after chunk size",
        POST_H "Transfer-Encoding: chunked\r\n\r\n5\rhello\r\n0\r\n\r\n"),
    ROW("chunk data longer than its size",
        POST_H "Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n"),
    ROW("chunk data without CRLF",
        POST_H "Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n"),
    {"chunk extension over 1024 bytes", long_ext, 0, 400},
    /* Header names and values. */
    ROW("space before colon (CL)", POST_H "Content-Length : 3\r\n\r\nabc"),
    ROW("space before colon (TE)", POST_H "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
    ROW("space before colon (TE in a GET)", GET_H "Transfer-Encoding : chunked\r\n\r\n"),
    ROW("tab before colon", POST_H "Content-Length\t: 3\r\n\r\nabc"),
    ROW("space inside header name", GET_H "X Bad: 1\r\n\r\n"),
    ROW("whitespace before the first header", "GET /users/1 HTTP/1.1\r\n Host: h\r\n\r\n"),
    ROW("obs-fold continuation line", GET_H "X-A: 1\r\n  folded\r\n\r\n"),
    ROW("obs-fold of Transfer-Encoding",
        POST_H "Content-Length: 5\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\nX"),
    ROW("bare CR in value", GET_H "X-A: a\rb\r\n\r\n"),
    ROW("bare LF ends the Host line", "GET /users/1 HTTP/1.1\r\nHost: h\nX-A: 1\r\n\r\n"),
    ROW("bare LF ends a header line", GET_H "X-A: 1\nX-B: 2\r\n\r\n"),
    ROW("NUL in value", GET_H "X-A: a\0b\r\n\r\n"),
    ROW("NUL in name", GET_H "X-\0A: 1\r\n\r\n"),
    ROW("DEL in name", GET_H "X-\x7f"
                             "A: 1\r\n\r\n"),
    ROW("empty header name", GET_H ": v\r\n\r\n"),
    ROW("header line without colon", GET_H "X-A\r\n\r\n"),
    /* Connection options that would strip framing or the gateway's own fields. */
    ROW("Connection names Content-Length", POST_H "Connection: Content-Length\r\n"
                                                  "Content-Length: 4\r\n\r\nabcd"),
    ROW("Connection names content-length among others",
        POST_H "Connection: keep-alive, content-length\r\nContent-Length: 4\r\n\r\nabcd"),
    ROW("Connection names Transfer-Encoding",
        POST_H "Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ROW("Connection names Host", GET_H "Connection: Host\r\n\r\n"),
    ROW("Connection names X-Forwarded-For",
        GET_H "Connection: X-Forwarded-For\r\nX-Forwarded-For: 10.9.8.7\r\n\r\n"),
    /* Request line. */
    ROW("bare LF after request line", "GET /users/1 HTTP/1.1\nHost: h\r\n\r\n"),
    ROW("space in request-target", "GET /users/1 x HTTP/1.1\r\nHost: h\r\n\r\n"),
    ROW("control character in request-target", "GET /users/\x01 HTTP/1.1\r\nHost: h\r\n\r\n"),
    ROW("version HTTP/1.7x", "GET /users/1 HTTP/1.7x\r\nHost: h\r\n\r\n"),
    ROW("version HTTP/2.0", "GET /users/1 HTTP/2.0\r\nHost: h\r\n\r\n"),
    ROW("HTTP/2 connection preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
    ROW("no Host in HTTP/1.1", "GET /users/1 HTTP/1.1\r\nX-A: 1\r\n\r\n"),
    ROW("two Host fields", GET_H "Host: evil\r\n\r\n"),
    ROW("invalid method token", "G@T /users/1 HTTP/1.1\r\nHost: h\r\n\r\n"),
    ROW("lower-case method", "get /users/1 HTTP/1.1\r\nHost: h\r\n\r\n"),
    ROW("CONNECT", "CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n"),
    ROW("garbage instead of a request line", "HELLO\r\n\r\n"),
    /* request-targets that would reach the backend outside the base path */
    ROW("ftp absolute-form", "GET ftp://h/admin HTTP/1.1\r\nHost: h\r\n\r\n"),
    ROW("unknown scheme", "GET foo://h/admin HTTP/1.1\r\nHost: h\r\n\r\n"),
    ROW("asterisk-form with GET", "GET * HTTP/1.1\r\nHost: h\r\n\r\n"),
    ROW("absolute-form without host", "GET http:///echo HTTP/1.1\r\nHost: h\r\n\r\n"),
    ROW("absolute-form with a bad port", "GET http://h:abc/echo HTTP/1.1\r\nHost: h\r\n\r\n"),
    ROW("absolute-form with userinfo", "GET http://u:p@h/echo HTTP/1.1\r\nHost: h\r\n\r\n"),
    ROW("fragment in the request-target", "GET /echo#f HTTP/1.1\r\nHost: h\r\n\r\n"),
    ROW("Host with a space", "GET /echo HTTP/1.1\r\nHost: bad host.example\r\n\r\n"),
    ROW("Host with a slash", "GET /echo HTTP/1.1\r\nHost: h/admin\r\n\r\n"),
    ROW("Host with userinfo", "GET /echo HTTP/1.1\r\nHost: u@h\r\n\r\n"),
    ROW("/../ above the root", "GET /../echo HTTP/1.1\r\nHost: h\r\n\r\n"),
    ROW("%2e%2e above the root", "GET /%2e%2e/echo HTTP/1.1\r\nHost: h\r\n\r\n"),
};

#define NROWS (sizeof(rows) / sizeof(rows[0]))

static void build_runtime_rows(void)
{
    int n =
        snprintf(long_ext, sizeof(long_ext), "%sTransfer-Encoding: chunked\r\n\r\n5;e=", POST_H);
    memset(long_ext + n, 'x', 2000);
    n += 2000;
    n += snprintf(long_ext + n, sizeof(long_ext) - (size_t)n, "\r\nhello\r\n0\r\n\r\n");
    n = snprintf(long_size, sizeof(long_size),
                 "%sConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n", POST_H);
    memset(long_size + n, '0', 100);
    n += 100;
    snprintf(long_size + n, sizeof(long_size) - (size_t)n, "5\r\nhello\r\n0\r\n\r\n");
    for (size_t i = 0; i < NROWS; i++) {
        if (rows[i].len == 0)
            rows[i].len = strlen(rows[i].bytes);
    }
}

static void run_row(void **state)
{
    const struct row *rw = *state;
    gwt_expect_refused(gwt_fx.gport, rw->name, rw->bytes, rw->len, rw->status, GWT_REFUSED_COUNTED);
}

/* Every row above was counted as a bad request, none as a proxied failure. */
static void test_rows_counted_as_bad(void **state)
{
    assert_true(gwt_stat(gwt_fx.gport, "/stats", "requests_bad") >= (long long)NROWS);
}

/* Leading zeros are valid chunk-size syntax (1*HEXDIG): the gateway reads
 * the value, not the digits, and re-frames, so the backend sees a plain
 * 5-byte body whatever a lenient parser downstream would make of the line. */
static void test_leading_zero_chunk_size_normalised(void **state)
{
    struct gwt_response r;
    assert_int_equal(gwt_http(gwt_fx.gport, long_size, &r), 0);
    assert_int_equal(r.status, 200);
    struct gwt_echo e;
    assert_int_equal(gwt_echo_parse(&r, &e), 0);
    assert_int_equal(e.body_length, 5);
    char sha[65];
    gwt_sha256_hex("hello", 5, sha);
    assert_string_equal(e.body_sha256, sha);
    gwt_echo_free(&e);
    gwt_response_free(&r);
}

/* A valid request followed in the same write by a smuggling attempt: the
 * first is answered, the second refused, the connection closed with nothing
 * after the 400, and only one request reaches the backend (in the CL.TE
 * row the "G" would prefix a smuggled request on a confused peer). */
static void test_desync_after_valid_request(void **state)
{
    static const char *const attempts[] = {
        POST_H "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG"
               "ET /users/2 HTTP/1.1\r\nHost: h\r\n\r\n",
        POST_H "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(attempts) / sizeof(attempts[0]); i++) {
        long long before = gwt_backend_requests(gwt_fx.bport);
        int fd = gwt_connect(gwt_fx.gport);
        assert_true(fd >= 0);
        char both[512];
        snprintf(both, sizeof(both), "%s\r\n%s", GET_H, attempts[i]);
        assert_int_equal(gwt_send_str(fd, both), 0); /* one write */
        struct gwt_response r;
        assert_int_equal(gwt_read_response(fd, &r, false), 0);
        assert_int_equal(r.status, 200);
        gwt_response_free(&r);
        assert_int_equal(gwt_read_response(fd, &r, false), 0);
        gwt_assert_problem(&r, 400, NULL);
        gwt_response_free(&r);
        assert_int_equal(gwt_fault_bytes_until_eof(fd, 3000), 0);
        close(fd);
        assert_int_equal(gwt_backend_requests(gwt_fx.bport), before + 1);
        gwt_assert_serves_counted(gwt_fx.gport, gwt_fx.bport, "/users/5",
                                  "desync after a valid request");
    }
}

/* Head-level vectors sent one byte per write: the verdict must not depend
 * on how the bytes are split into segments. */
static void test_vectors_byte_by_byte(void **state)
{
    static const char *const names[] = {"CL then TE", "TE chunked then gzip", "CL twice, different",
                                        "obs-fold of Transfer-Encoding",
                                        "Connection names Content-Length"};
    for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
        const struct row *rw = NULL;
        for (size_t i = 0; i < NROWS && !rw; i++)
            rw = strcmp(rows[i].name, names[k]) == 0 ? &rows[i] : NULL;
        assert_non_null(rw);
        long long before = gwt_backend_requests(gwt_fx.bport);
        int fd = gwt_connect(gwt_fx.gport);
        assert_true(fd >= 0);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        for (size_t i = 0; i < rw->len; i++) {
            /* The gateway may refuse and close before the last byte. */
            if (send(fd, rw->bytes + i, 1, MSG_NOSIGNAL) != 1)
                break;
        }
        struct gwt_response r;
        int rc = gwt_read_response(fd, &r, false);
        if (rc != 0)
            fail_msg("\"%s\" byte by byte: no response (%s)", rw->name, strerror(-rc));
        gwt_assert_problem(&r, 400, NULL);
        gwt_response_free(&r);
        assert_true(gwt_peer_closed(fd, 3000));
        close(fd);
        gwt_assert_serves_counted(gwt_fx.gport, gwt_fx.bport, "/users/5", rw->name);
        if (gwt_backend_requests(gwt_fx.bport) != before + 1)
            fail_msg("\"%s\" byte by byte reached the backend", rw->name);
    }
}

/* A chunked body whose framing breaks after a valid first chunk (of the
 * body's first 64 KiB window), delivered in two writes so the head was
 * already forwarded: the client gets 400 and
 * a closed connection, and the upstream never receives a complete request
 * (no terminating chunk is invented). Uses a fake upstream that counts only
 * complete requests. */
static void test_bad_chunk_mid_stream(void **state)
{
    struct gwt_fault *f = NULL;
    assert_int_equal(gwt_fault_start(&f), 0);
    assert_int_equal(gwt_fault_script(f, NULL, 0), 0);
    char burl[64];
    snprintf(burl, sizeof(burl), "BACKEND_URL=http://127.0.0.1:%d", gwt_fault_port(f));
    struct gwt_proc g2 = {0};
    int p2 = 0;
    const char *env[] = {burl, "WORKER_THREADS=1", "RATE_LIMIT_REQUESTS=100000", NULL};
    assert_int_equal(gwt_gateway_start(&g2, &p2, env), 0);

    static const char *const tails[] = {"zz\r\n", "5\nhello\r\n", "3\r\nhello\r\n", "-1\r\n"};
    for (size_t i = 0; i < sizeof(tails) / sizeof(tails[0]); i++) {
        long conns_before = gwt_fault_connections(f);
        int fd = gwt_connect(p2);
        assert_true(fd >= 0);
        /* A first chunk of 64 KiB: the body's first window is in, so the
         * request takes its slot and its head goes out (SPEC.md §6). */
        assert_int_equal(gwt_send_str(fd, POST_H "Transfer-Encoding: chunked\r\n\r\n"
                                                 "10000\r\n"),
                         0);
        static char window[0x10000 + 2];
        memset(window, 'w', 0x10000);
        memcpy(window + 0x10000, "\r\n", 2);
        assert_int_equal(gwt_send_all(fd, window, sizeof(window)), 0);
        /* Wait until the upstream connection exists (the head went out). */
        long long deadline = gwt_now_ms() + 3000;
        while (gwt_fault_connections(f) == conns_before && gwt_now_ms() < deadline)
            usleep(2000);
        assert_true(gwt_fault_connections(f) > conns_before);
        assert_int_equal(gwt_send_str(fd, tails[i]), 0);
        struct gwt_response r;
        int rc = gwt_read_response(fd, &r, false);
        if (rc != 0)
            fail_msg("bad chunk \"%s\" mid-stream: no response (%s)", tails[i], strerror(-rc));
        gwt_assert_problem(&r, 400, NULL);
        gwt_response_free(&r);
        assert_true(gwt_peer_closed(fd, 3000));
        close(fd);
        if (gwt_fault_requests(f) != 0) {
            char last[512];
            gwt_fault_last_request(f, last, sizeof(last));
            gwt_print_escaped("upstream received a complete request", last, strlen(last));
            fail_msg("bad chunk \"%s\": the upstream got a complete request", tails[i]);
        }
    }
    /* Still serving: the fake answers its default 200. */
    struct gwt_response r;
    assert_int_equal(gwt_get(p2, "/after", &r), 0);
    assert_int_equal(r.status, 200);
    gwt_response_free(&r);
    assert_int_equal(gwt_fault_requests(f), 1);
    assert_int_equal(gwt_stop(&g2, SIGTERM, 5000), 0);
    gwt_proc_cleanup(&g2);
    gwt_fault_stop(f);
}

static int group_setup(void **state)
{
    build_runtime_rows();
    return gwt_suite_setup(GWT_FX_GATEWAY);
}

int main(void)
{
    struct CMUnitTest tests[NROWS + 5];
    size_t n = 0;
    for (size_t i = 0; i < NROWS; i++) {
        tests[n++] = (struct CMUnitTest){
            .name = rows[i].name, .test_func = run_row, .initial_state = &rows[i]};
    }
    tests[n++] = (struct CMUnitTest)GWT_TEST(test_rows_counted_as_bad);
    tests[n++] = (struct CMUnitTest)GWT_TEST(test_leading_zero_chunk_size_normalised);
    tests[n++] = (struct CMUnitTest)GWT_TEST(test_desync_after_valid_request);
    tests[n++] = (struct CMUnitTest)GWT_TEST(test_vectors_byte_by_byte);
    tests[n++] = (struct CMUnitTest)GWT_TEST(test_bad_chunk_mid_stream);
    return cmocka_run_group_tests_name("smuggling", tests, group_setup, gwt_suite_teardown);
}
