/*
 * Integration tests of the gateway's proxy semantics (SPEC.md section 6)
 * against a real backend_app: what reaches the backend (seen through /echo),
 * body framings both ways, keep-alive, pipelining, HEAD and bodiless statuses,
 * 100-continue, and the 502/504 the gateway generates for upstream failures.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <poll.h>

#include <cmocka.h>

#include "gwt_suite.h"
#include "gwtest.h"

static struct gwt_proc backend;
static int bport;
static struct gwt_proc gw; /* shared gateway, default settings */
static int gport;
static struct gwt_proc gw2; /* per-test gateway with its own settings */
static int gport2;

static int group_setup(void **state)
{
    if (gwt_backend_start(&backend, &bport, NULL) != 0)
        return -1;
    if (gwt_gateway_for(&gw, &gport, bport, NULL) != 0)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    int rc = gwt_stop_tracked();
    gwt_stop_and_cleanup(&backend);
    return rc;
}

/* Per-test: stop gw2 if a test started one (and check it exited 0). */
static int test_teardown(void **state)
{
    return gwt_stop_expect_exit0(&gw2);
}

/* Proves the shared gateway still serves a normal request. */
static void assert_serves(int port)
{
    struct gwt_response r;
    assert_int_equal(gwt_get(port, "/users/42", &r), 0);
    assert_int_equal(r.status, 200);
    json_t *j = gwt_json(&r);
    assert_non_null(j);
    assert_int_equal(gwt_json_int(j, "id", -1), 42);
    json_decref(j);
    gwt_response_free(&r);
}

static char *make_body(size_t n, unsigned seed)
{
    char *b = malloc(n + 1);
    assert_non_null(b);
    for (size_t i = 0; i < n; i++)
        b[i] = (char)('a' + (i * 7 + seed) % 26);
    b[n] = '\0';
    return b;
}

/* Method, raw request-target, header order and values, hop-by-hop removal
 * (fixed list plus what Connection names), X-Forwarded-*, Host, body digest. */
static void test_echo_headers_and_body(void **state)
{
    const char *body = "hello, backend: 0123456789";
    char sha[65];
    gwt_sha256_hex(body, strlen(body), sha);
    char req[2048];
    snprintf(req, sizeof(req),
             "POST /echo?a=1&b=%%20x&c=%%2F HTTP/1.1\r\n"
             "Host: example.test:8080\r\n"
             "X-Custom-B: second-defined-first\r\n"
             "Connection: keep-alive, X-Drop-Me\r\n"
             "X-Drop-Me: secret\r\n"
             "Keep-Alive: timeout=5\r\n"
             "Proxy-Connection: keep-alive\r\n"
             "TE: trailers\r\n"
             "Trailer: X-Checksum\r\n"
             "Upgrade: h2c\r\n"
             "X-Custom-A: value with  inner  spaces\r\n"
             "X-Forwarded-For: 203.0.113.9\r\n"
             "Content-Type: text/plain\r\n"
             "X-Dup: 1\r\n"
             "X-Dup: 2\r\n"
             "Content-Length: %zu\r\n"
             "\r\n%s",
             strlen(body), body);
    int fd = gwt_connect(gport);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd, req), 0);
    struct gwt_echo e;
    gwt_read_echo(fd, &e, "request to /echo");
    close(fd);

    assert_string_equal(e.method, "POST");
    assert_string_equal(e.target, "/echo?a=1&b=%20x&c=%2F");
    assert_int_equal(e.body_length, (long long)strlen(body));
    assert_string_equal(e.body_sha256, sha);

    /* End-to-end headers arrive unchanged and in order. */
    assert_string_equal(gwt_echo_header(&e, "X-Custom-B"), "second-defined-first");
    assert_string_equal(gwt_echo_header(&e, "X-Custom-A"), "value with  inner  spaces");
    assert_string_equal(gwt_echo_header(&e, "Content-Type"), "text/plain");
    assert_true(gwt_echo_index(&e, "X-Custom-B") < gwt_echo_index(&e, "X-Custom-A"));
    assert_int_equal(gwt_echo_count(&e, "X-Dup"), 2);
    int d1 = gwt_echo_index(&e, "X-Dup");
    assert_string_equal(gwt_echo_value(&e, (size_t)d1), "1");
    assert_string_equal(gwt_echo_value(&e, (size_t)d1 + 1), "2");

    /* Hop-by-hop headers removed, including the one Connection names. */
    assert_null(gwt_echo_header(&e, "X-Drop-Me"));
    assert_null(gwt_echo_header(&e, "Keep-Alive"));
    assert_null(gwt_echo_header(&e, "Proxy-Connection"));
    assert_null(gwt_echo_header(&e, "TE"));
    assert_null(gwt_echo_header(&e, "Trailer"));
    assert_null(gwt_echo_header(&e, "Upgrade"));
    const char *conn = gwt_echo_header(&e, "Connection");
    if (conn != NULL)
        assert_null(strcasestr(conn, "X-Drop-Me"));

    /* X-Forwarded-For: client address appended to the existing list. */
    assert_int_equal(gwt_echo_count(&e, "X-Forwarded-For"), 1);
    assert_string_equal(gwt_echo_header(&e, "X-Forwarded-For"), "203.0.113.9, 127.0.0.1");
    assert_string_equal(gwt_echo_header(&e, "X-Forwarded-Proto"), "http");
    assert_string_equal(gwt_echo_header(&e, "X-Forwarded-Host"), "example.test:8080");
    /* PRESERVE_HOST defaults to on. */
    assert_int_equal(gwt_echo_count(&e, "Host"), 1);
    assert_string_equal(gwt_echo_header(&e, "Host"), "example.test:8080");
    gwt_echo_free(&e);
    assert_serves(gport);
}

/* Without a client X-Forwarded-For the header is just the client address. */
static void test_xff_set_when_absent(void **state)
{
    struct gwt_response r;
    assert_int_equal(gwt_get(gport, "/echo", &r), 0);
    assert_int_equal(r.status, 200);
    struct gwt_echo e;
    assert_int_equal(gwt_echo_parse(&r, &e), 0);
    assert_string_equal(e.method, "GET");
    assert_string_equal(e.target, "/echo");
    assert_string_equal(gwt_echo_header(&e, "X-Forwarded-For"), "127.0.0.1");
    assert_string_equal(gwt_echo_header(&e, "X-Forwarded-Host"), "127.0.0.1");
    assert_int_equal(e.body_length, 0);
    gwt_echo_free(&e);
    gwt_response_free(&r);
}

/* Several methods on one keep-alive connection reach the backend as sent. */
static void test_methods_keepalive(void **state)
{
    static const char *methods[] = {"GET", "PUT", "DELETE", "PATCH", "OPTIONS", "POST"};
    int fd = gwt_connect(gport);
    assert_true(fd >= 0);
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        char req[512];
        bool with_body = strcmp(methods[i], "PUT") == 0 || strcmp(methods[i], "PATCH") == 0 ||
                         strcmp(methods[i], "POST") == 0;
        snprintf(req, sizeof(req), "%s /echo/../echo?i=%zu HTTP/1.1\r\nHost: h\r\n%s\r\n%s",
                 methods[i], i, with_body ? "Content-Length: 3\r\n" : "", with_body ? "abc" : "");
        assert_int_equal(gwt_send_str(fd, req), 0);
        /* Dot-segments are removed on the way (SPEC.md §6, RFC 3986
         * §5.2.4): "/echo/../echo" reaches the backend as "/echo", the
         * query unchanged. */
        struct gwt_echo e;
        gwt_read_echo(fd, &e, "request to /echo/../echo");
        char want[32];
        snprintf(want, sizeof(want), "/echo?i=%zu", i);
        assert_string_equal(e.target, want);
        gwt_echo_free(&e);

        snprintf(req, sizeof(req), "%s /echo?i=%zu HTTP/1.1\r\nHost: h\r\n%s\r\n%s", methods[i], i,
                 with_body ? "Content-Length: 3\r\n" : "", with_body ? "abc" : "");
        assert_int_equal(gwt_send_str(fd, req), 0);
        gwt_read_echo(fd, &e, "request to /echo");
        assert_string_equal(e.method, methods[i]);
        assert_string_equal(e.target, want);
        assert_int_equal(e.body_length, with_body ? 3 : 0);
        gwt_echo_free(&e);
    }
    close(fd);
}

static void test_preserve_host_off(void **state)
{
    const char *env[] = {"PRESERVE_HOST=off", NULL};
    assert_int_equal(gwt_gateway_for(&gw2, &gport2, bport, env), 0);
    struct gwt_response r;
    assert_int_equal(gwt_http(gport2,
                              "GET /echo HTTP/1.1\r\nHost: client.example\r\nConnection: "
                              "close\r\n\r\n",
                              &r),
                     0);
    assert_int_equal(r.status, 200);
    struct gwt_echo e;
    assert_int_equal(gwt_echo_parse(&r, &e), 0);
    char want[64];
    snprintf(want, sizeof(want), "127.0.0.1:%d", bport);
    assert_int_equal(gwt_echo_count(&e, "Host"), 1);
    assert_string_equal(gwt_echo_header(&e, "Host"), want);
    /* The client's host is still told to the backend. */
    assert_string_equal(gwt_echo_header(&e, "X-Forwarded-Host"), "client.example");
    gwt_echo_free(&e);
    gwt_response_free(&r);
    assert_serves(gport2);
}

/* A chunked upload sent in pieces reaches the backend intact. */
static void test_chunked_request(void **state)
{
    size_t total = 100000;
    char *body = make_body(total, 3);
    char sha[65];
    gwt_sha256_hex(body, total, sha);
    int fd = gwt_connect(gport);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd, "POST /echo HTTP/1.1\r\nHost: h\r\n"
                                      "Transfer-Encoding: chunked\r\n\r\n"),
                     0);
    size_t off = 0, sizes[] = {1, 4095, 30000, 7, 65897};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        char line[32];
        snprintf(line, sizeof(line), "%zx\r\n", sizes[i]);
        assert_int_equal(gwt_send_str(fd, line), 0);
        assert_int_equal(gwt_send_all(fd, body + off, sizes[i]), 0);
        assert_int_equal(gwt_send_str(fd, "\r\n"), 0);
        off += sizes[i];
    }
    assert_int_equal(off, total);
    assert_int_equal(gwt_send_str(fd, "0\r\n\r\n"), 0);
    struct gwt_echo e;
    gwt_read_echo(fd, &e, "request to /echo");
    assert_int_equal(e.body_length, (long long)total);
    assert_string_equal(e.body_sha256, sha);
    gwt_echo_free(&e);
    /* The connection is still usable afterwards. */
    assert_int_equal(gwt_send_str(fd, "GET /users/5 HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    struct gwt_response r;
    gwt_must_read(fd, &r, false, "GET /users/5 after a chunked upload (keep-alive)");
    assert_int_equal(r.status, 200);
    gwt_response_free(&r);
    close(fd);
    free(body);
}

/* A 2 MB Content-Length upload streams through intact. */
static void test_large_upload(void **state)
{
    size_t total = 2 * 1024 * 1024;
    char *body = make_body(total, 11);
    char sha[65];
    gwt_sha256_hex(body, total, sha);
    int fd = gwt_connect(gport);
    assert_true(fd >= 0);
    char head[256];
    snprintf(head, sizeof(head), "PUT /echo HTTP/1.1\r\nHost: h\r\nContent-Length: %zu\r\n\r\n",
             total);
    assert_int_equal(gwt_send_str(fd, head), 0);
    assert_int_equal(gwt_send_all(fd, body, total), 0);
    struct gwt_echo e;
    gwt_read_echo(fd, &e, "request to /echo");
    assert_string_equal(e.method, "PUT");
    assert_int_equal(e.body_length, (long long)total);
    assert_string_equal(e.body_sha256, sha);
    gwt_echo_free(&e);
    close(fd);
    free(body);
}

/* Fetches target from the backend directly, for comparison. */
static void direct_get(const char *target, struct gwt_response *r)
{
    assert_int_equal(gwt_get(bport, target, r), 0);
    assert_int_equal(r->status, 200);
}

/* The backend's chunked response reaches an HTTP/1.1 client chunked and
 * byte-identical. */
static void test_chunked_response(void **state)
{
    struct gwt_response d, r;
    direct_get("/stream?chunks=7&size=1000", &d);
    assert_true(d.chunked);
    assert_int_equal(d.body_len, 7000);
    assert_int_equal(gwt_get(gport, "/stream?chunks=7&size=1000", &r), 0);
    assert_int_equal(r.status, 200);
    assert_true(r.chunked);
    assert_true(r.chunk_count >= 1);
    assert_null(gwt_header(&r, "Content-Length"));
    assert_int_equal(r.body_len, d.body_len);
    assert_memory_equal(r.body, d.body, d.body_len);
    gwt_response_free(&r);
    gwt_response_free(&d);
}

/* A close-delimited backend response is re-framed for a keep-alive client:
 * the body arrives whole, and framing lets the connection be reused. */
static void test_close_delimited_response(void **state)
{
    struct gwt_response d;
    direct_get("/stream?chunks=4&size=500&close=1", &d);
    assert_false(d.chunked);
    assert_int_equal(d.body_len, 2000);
    int fd = gwt_connect(gport);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd, "GET /stream?chunks=4&size=500&close=1 HTTP/1.1\r\n"
                                      "Host: h\r\n\r\n"),
                     0);
    struct gwt_response r;
    gwt_must_read(fd, &r, false, "GET /stream?close=1");
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 2000);
    assert_memory_equal(r.body, d.body, d.body_len);
    /* If the gateway kept the connection open it must have framed the body. */
    if (!r.conn_closed) {
        gwt_response_free(&r);
        assert_int_equal(gwt_send_str(fd, "GET /users/8 HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
        gwt_must_read(fd, &r, false, "GET /users/8 after a re-framed close-delimited response");
        assert_int_equal(r.status, 200);
    }
    gwt_response_free(&r);
    gwt_response_free(&d);
    close(fd);
}

/* An HTTP/1.0 client never gets chunked framing, and its connection closes. */
static void test_http10_client(void **state)
{
    int fd = gwt_connect(gport);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd, "GET /stream?chunks=3&size=100 HTTP/1.0\r\nHost: h\r\n\r\n"),
                     0);
    struct gwt_response r;
    gwt_must_read(fd, &r, false, "HTTP/1.0 GET /stream");
    assert_int_equal(r.status, 200);
    assert_false(r.chunked);
    assert_null(gwt_header(&r, "Transfer-Encoding"));
    assert_int_equal(r.body_len, 300);
    gwt_response_free(&r);
    assert_true(gwt_peer_closed(fd, 3000));
    close(fd);

    assert_int_equal(gwt_http(gport, "GET /users/10 HTTP/1.0\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    assert_false(r.chunked);
    gwt_response_free(&r);
}

/* One megabyte with Content-Length arrives intact. */
static void test_bytes_1mb(void **state)
{
    struct gwt_response d, r;
    direct_get("/bytes?n=1000000", &d);
    assert_int_equal(d.body_len, 1000000);
    assert_int_equal(gwt_get(gport, "/bytes?n=1000000", &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 1000000);
    const char *cl = gwt_header(&r, "Content-Length");
    if (cl != NULL)
        assert_string_equal(cl, "1000000");
    else
        assert_true(r.chunked);
    char s1[65], s2[65];
    gwt_sha256_hex(d.body, d.body_len, s1);
    gwt_sha256_hex(r.body, r.body_len, s2);
    assert_string_equal(s1, s2);
    gwt_response_free(&r);
    gwt_response_free(&d);
}

/* Several requests, one after the other, on one connection. */
static void test_keepalive(void **state)
{
    int fd = gwt_connect(gport);
    assert_true(fd >= 0);
    for (int i = 1; i <= 5; i++) {
        char req[128];
        snprintf(req, sizeof(req), "GET /users/%d HTTP/1.1\r\nHost: h\r\n\r\n", i);
        assert_int_equal(gwt_send_str(fd, req), 0);
        assert_false(gwt_expect_user(fd, i, "on a reused connection"));
    }
    /* A body in between does not desynchronise the stream. */
    assert_int_equal(gwt_send_str(fd, "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: "
                                      "5\r\n\r\nabcde"),
                     0);
    struct gwt_echo e;
    gwt_read_echo(fd, &e, "request to /echo");
    assert_int_equal(e.body_length, 5);
    gwt_echo_free(&e);
    assert_int_equal(gwt_send_str(fd, "GET /users/6 HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    assert_false(gwt_expect_user(fd, 6, "on a reused connection"));
    close(fd);
}

/* Requests written in one go are answered in request order, even when the
 * first is the slowest. */
static void test_pipelining(void **state)
{
    int fd = gwt_connect(gport);
    assert_true(fd >= 0);
    const char *reqs = "GET /slow?ms=150 HTTP/1.1\r\nHost: h\r\n\r\n"
                       "GET /users/7 HTTP/1.1\r\nHost: h\r\n\r\n"
                       "POST /echo?p=3 HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nwxyz"
                       "GET /users/9 HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_int_equal(gwt_send_str(fd, reqs), 0);
    struct gwt_response r;
    gwt_must_read(fd, &r, false, "first pipelined request (GET /slow?ms=150)");
    assert_int_equal(r.status, 200);
    json_t *j = gwt_json(&r);
    assert_non_null(j);
    assert_int_equal(gwt_json_int(j, "slept_ms", -1), 150);
    json_decref(j);
    gwt_response_free(&r);
    assert_false(gwt_expect_user(fd, 7, "on a reused connection"));
    struct gwt_echo e;
    gwt_read_echo(fd, &e, "request to /echo");
    assert_string_equal(e.target, "/echo?p=3");
    assert_int_equal(e.body_length, 4);
    gwt_echo_free(&e);
    assert_false(gwt_expect_user(fd, 9, "on a reused connection"));
    close(fd);
}

/* HEAD gets headers only; the next response on the connection is intact. */
static void test_head(void **state)
{
    int fd = gwt_connect(gport);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd, "HEAD /bytes?n=5000 HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    struct gwt_response r;
    gwt_must_read(fd, &r, true, "HEAD /bytes?n=5000");
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    const char *cl = gwt_header(&r, "Content-Length");
    if (cl != NULL)
        assert_string_equal(cl, "5000");
    gwt_response_free(&r);
    assert_int_equal(gwt_send_str(fd, "HEAD /stream?chunks=2&size=10 HTTP/1.1\r\nHost: h\r\n\r\n"),
                     0);
    gwt_must_read(fd, &r, true, "HEAD /stream after HEAD /bytes on one connection");
    assert_int_equal(r.status, 200);
    gwt_response_free(&r);
    /* Had any body byte followed a HEAD response, this parse would fail. */
    assert_int_equal(gwt_send_str(fd, "GET /users/3 HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    assert_false(gwt_expect_user(fd, 3, "on a reused connection"));
    close(fd);
}

/* 204 and 304 carry no body; other statuses pass through untouched. */
static void test_bodiless_and_passthrough_statuses(void **state)
{
    int fd = gwt_connect(gport);
    assert_true(fd >= 0);
    static const int codes[] = {204, 304, 404, 500, 503};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        char req[128];
        snprintf(req, sizeof(req), "GET /status/%d HTTP/1.1\r\nHost: h\r\n\r\n", codes[i]);
        assert_int_equal(gwt_send_str(fd, req), 0);
        struct gwt_response r;
        gwt_must_read(fd, &r, false, req);
        assert_int_equal(r.status, codes[i]);
        if (codes[i] == 204 || codes[i] == 304) {
            assert_int_equal(r.body_len, 0);
        } else {
            /* The backend's own body, not a gateway problem document. */
            const char *ct = gwt_header(&r, "Content-Type");
            assert_non_null(ct);
            assert_null(strstr(ct, "problem+json"));
        }
        gwt_response_free(&r);
    }
    assert_int_equal(gwt_send_str(fd, "GET /users/11 HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    assert_false(gwt_expect_user(fd, 11, "on a reused connection"));
    close(fd);
}

/* Expect: 100-continue: the client gets 100 before sending the body. */
static void test_expect_continue(void **state)
{
    int fd = gwt_connect(gport);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd, "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n"
                                      "Expect: 100-continue\r\n\r\n"),
                     0);
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 3000), 1);
    struct gwt_response r;
    gwt_must_read(fd, &r, false, "100-continue interim response");
    assert_int_equal(r.status, 100);
    gwt_response_free(&r);
    assert_int_equal(gwt_send_str(fd, "0123456789"), 0);
    struct gwt_echo e;
    gwt_read_echo(fd, &e, "request to /echo");
    assert_int_equal(e.body_length, 10);
    gwt_echo_free(&e);
    close(fd);
}

/* The backend promises 100 bytes, sends 5 and closes: the client must not
 * receive a response that looks complete, and the gateway keeps serving. */
static void test_upstream_truncated(void **state)
{
    struct gwt_response r;
    int rc = gwt_get(gport, "/close", &r);
    bool complete_200 = rc == 0 && r.status == 200 && r.body_len == 100;
    assert_false(complete_200);
    gwt_response_free(&r);
    assert_serves(gport);
}

/* A client that vanishes mid-body does not disturb the gateway. */
static void test_client_vanishes(void **state)
{
    int fd = gwt_connect(gport);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd, "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: "
                                      "100000\r\n\r\nonly-a-little"),
                     0);
    close(fd);
    fd = gwt_connect(gport);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd, "GET /slow?ms=2000 HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    close(fd);
    assert_serves(gport);
}

/* BACKEND_URL pointing at a closed port: 502 problem+json. */
static void test_502_backend_closed(void **state)
{
    int dead = gwt_free_port();
    assert_true(dead > 0);
    char burl[64];
    snprintf(burl, sizeof(burl), "BACKEND_URL=http://127.0.0.1:%d", dead);
    const char *env[] = {burl, NULL};
    assert_int_equal(gwt_gateway_for(&gw2, &gport2, bport, env), 0);
    struct gwt_response r;
    assert_int_equal(gwt_get(gport2, "/users/1", &r), 0);
    gwt_assert_problem(&r, 502, NULL);
    gwt_response_free(&r);
    /* Keep-alive still works after an upstream failure. */
    int fd = gwt_connect(gport2);
    assert_true(fd >= 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(gwt_send_str(fd, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
        gwt_must_read(fd, &r, false,
                      i ? "second GET / on one connection (502 expected)"
                        : "first GET / on one connection (502 expected)");
        gwt_assert_problem(&r, 502, NULL);
        gwt_response_free(&r);
    }
    close(fd);
    assert_int_equal(gwt_stat(gport2, "/stats", "requests_failed_upstream"), 3);
}

/* A backend that never answers: 504 after UPSTREAM_TIMEOUT_MS. */
static void test_504_upstream_timeout(void **state)
{
    const char *env[] = {"UPSTREAM_TIMEOUT_MS=200", NULL};
    assert_int_equal(gwt_gateway_for(&gw2, &gport2, bport, env), 0);
    struct gwt_response r;
    long long t0 = gwt_now_ms();
    assert_int_equal(gwt_get(gport2, "/noresponse", &r), 0);
    long long ms = gwt_now_ms() - t0;
    gwt_assert_problem(&r, 504, NULL);
    gwt_response_free(&r);
    assert_true(ms >= 150);
    assert_true(ms < 3000);
    assert_int_equal(gwt_stat(gport2, "/stats", "requests_failed_upstream"), 1);
    assert_serves(gport2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_echo_headers_and_body, test_teardown),
        cmocka_unit_test_teardown(test_xff_set_when_absent, test_teardown),
        cmocka_unit_test_teardown(test_methods_keepalive, test_teardown),
        cmocka_unit_test_teardown(test_preserve_host_off, test_teardown),
        cmocka_unit_test_teardown(test_chunked_request, test_teardown),
        cmocka_unit_test_teardown(test_large_upload, test_teardown),
        cmocka_unit_test_teardown(test_chunked_response, test_teardown),
        cmocka_unit_test_teardown(test_close_delimited_response, test_teardown),
        cmocka_unit_test_teardown(test_http10_client, test_teardown),
        cmocka_unit_test_teardown(test_bytes_1mb, test_teardown),
        cmocka_unit_test_teardown(test_keepalive, test_teardown),
        cmocka_unit_test_teardown(test_pipelining, test_teardown),
        cmocka_unit_test_teardown(test_head, test_teardown),
        cmocka_unit_test_teardown(test_bodiless_and_passthrough_statuses, test_teardown),
        cmocka_unit_test_teardown(test_expect_continue, test_teardown),
        cmocka_unit_test_teardown(test_upstream_truncated, test_teardown),
        cmocka_unit_test_teardown(test_client_vanishes, test_teardown),
        cmocka_unit_test_teardown(test_502_backend_closed, test_teardown),
        cmocka_unit_test_teardown(test_504_upstream_timeout, test_teardown),
    };
    return cmocka_run_group_tests_name("gateway_proxy", tests, group_setup, group_teardown);
}
