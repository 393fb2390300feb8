/*
 * HTTP/1.1 proxy semantics and conformance (SPEC.md section 6, issue 3 item
 * 1) against a real backend_app and a scripted fake upstream: what reaches
 * the backend (method, raw target, header order, hop-by-hop removal,
 * X-Forwarded-*, Host), every framing in both directions (Content-Length,
 * chunked with extensions and trailers, read-until-close), keep-alive,
 * HEAD/1xx/204/304 without bodies, exactly one 100 Continue (none when the
 * gateway refuses first), pipelining in order, HTTP/1.0 clients,
 * half-close, Set-Cookie, and the 502/504 the gateway generates for
 * upstream failures. Raw bytes in, exact bytes checked at backend_app
 * (/echo) or the fake.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "gwt_fault.h"
#include "gwt_suite.h"
#include "gwtest.h"

static int group_setup(void **state)
{
    return gwt_suite_setup(GWT_FX_GATEWAY | GWT_FX_FAKE_GATEWAY);
}

/* ---- helpers ------------------------------------------------------------ */

/* backend_app bodies are 'a'..'z' repeating from offset 0. */
static void assert_pattern(const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (b[i] != (char)('a' + i % 26))
            fail_msg("body byte %zu is 0x%02x, want '%c'", i, (unsigned char)b[i],
                     (char)('a' + i % 26));
    }
}

static void assert_sha(const struct gwt_echo *e, const char *body, size_t n)
{
    char sha[65];
    gwt_sha256_hex(body, n, sha);
    assert_int_equal(e->body_length, (long long)n);
    assert_string_equal(e->body_sha256, sha);
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

/* Fetches target from the backend directly, for comparison. */
static void direct_get(const char *target, struct gwt_response *r)
{
    assert_int_equal(gwt_get(gwt_fx.bport, target, r), 0);
    assert_int_equal(r->status, 200);
}

/* ---- request framing ---------------------------------------------------- */

/* Content-Length body, raw target and repeated fields reach the backend
 * byte for byte. */
static void test_cl_request_exact(void **state)
{
    int fd = gwt_connect(gwt_fx.gport);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd, "POST /echo?a=1&b=%20x;y HTTP/1.1\r\nHost: h\r\n"
                                      "X-Dup: first\r\nContent-Length: 11\r\nX-Dup: second\r\n"
                                      "Cookie: c=1\r\n\r\nhello world"),
                     0);
    struct gwt_echo e;
    gwt_read_echo(fd, &e, "POST /echo with Content-Length");
    assert_string_equal(e.method, "POST");
    assert_string_equal(e.target, "/echo?a=1&b=%20x;y");
    assert_sha(&e, "hello world", 11);
    const char *cl = gwt_echo_header(&e, "Content-Length");
    assert_non_null(cl);
    assert_string_equal(cl, "11");
    assert_int_equal(gwt_echo_count(&e, "Content-Length"), 1);
    assert_int_equal(gwt_echo_count(&e, "Transfer-Encoding"), 0);
    assert_int_equal(gwt_echo_count(&e, "X-Dup"), 2);
    int i = gwt_echo_index(&e, "X-Dup");
    assert_string_equal(gwt_echo_value(&e, (size_t)i), "first");
    bool second = false;
    for (size_t k = (size_t)i + 1; k < gwt_echo_nheaders(&e); k++)
        second |= strcasecmp(gwt_echo_name(&e, k), "X-Dup") == 0 &&
                  strcmp(gwt_echo_value(&e, k), "second") == 0;
    assert_true(second);
    gwt_echo_free(&e);
    /* The connection is in sync: a second request on it is answered. */
    assert_int_equal(gwt_send_str(fd, "GET /users/2 HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    gwt_expect_user(fd, 2, NULL);
    close(fd);
}

/* Chunked body with chunk extensions and a trailer section: the backend
 * gets exactly the payload, and the next request on the connection parses
 * (the trailers were consumed, not left as a bogus request). The trailers
 * themselves are relayed after the last chunk (byte-exact in test_chunked;
 * backend_app lists them among its headers). */
static void test_chunked_request_ext_trailers(void **state)
{
    int fd = gwt_connect(gwt_fx.gport);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd, "POST /echo HTTP/1.1\r\nHost: h\r\n"
                                      "Transfer-Encoding: chunked\r\n\r\n"
                                      "5;name=value\r\nhello\r\n"
                                      "1;a;b=\"q\"\r\n \r\n"
                                      "5\r\nworld\r\n"
                                      "0;last=1\r\nX-Trailer: t\r\nX-Other: o\r\n\r\n"
                                      "GET /users/3 HTTP/1.1\r\nHost: h\r\n\r\n"),
                     0);
    struct gwt_echo e;
    gwt_read_echo(fd, &e, "chunked POST /echo with extensions and trailers");
    assert_sha(&e, "hello world", 11);
    for (size_t i = 0; i < gwt_echo_nheaders(&e); i++) {
        assert_null(strstr(gwt_echo_value(&e, i), "name=value"));
    }
    gwt_echo_free(&e);
    gwt_expect_user(fd, 3, NULL);
    close(fd);
}

/* Many tiny chunks and one large one add up exactly. */
static void test_chunked_request_sizes(void **state)
{
    size_t cap = 300000, off = 0;
    char *req = malloc(cap);
    char *body = malloc(cap);
    assert_non_null(req);
    assert_non_null(body);
    size_t blen = 0;
    off += (size_t)snprintf(req, cap,
                            "POST /echo HTTP/1.1\r\nHost: h\r\nConnection: close\r\n"
                            "Transfer-Encoding: chunked\r\n\r\n");
    for (int i = 1; i <= 200; i++) {
        size_t n = (size_t)(i % 7 + 1);
        off += (size_t)snprintf(req + off, cap - off, "%zX\r\n", n);
        for (size_t k = 0; k < n; k++)
            body[blen++] = req[off++] = (char)('A' + (i + (int)k) % 26);
        memcpy(req + off, "\r\n", 2);
        off += 2;
    }
    size_t big = 100000;
    off += (size_t)snprintf(req + off, cap - off, "%zx\r\n", big);
    for (size_t k = 0; k < big; k++)
        body[blen++] = req[off++] = (char)('0' + k % 10);
    off += (size_t)snprintf(req + off, cap - off, "\r\n0\r\n\r\n");
    int fd = gwt_connect(gwt_fx.gport);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_all(fd, req, off), 0);
    struct gwt_echo e;
    gwt_read_echo(fd, &e, "chunked POST with 201 chunks");
    assert_sha(&e, body, blen);
    gwt_echo_free(&e);
    close(fd);
    free(req);
    free(body);
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
    int fd = gwt_connect(gwt_fx.gport);
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
    gwt_assert_serves_user(gwt_fx.gport, 42);
}

/* Without a client X-Forwarded-For the header is just the client address. */
static void test_xff_set_when_absent(void **state)
{
    struct gwt_response r;
    assert_int_equal(gwt_get(gwt_fx.gport, "/echo", &r), 0);
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
    int fd = gwt_connect(gwt_fx.gport);
    assert_true(fd >= 0);
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        char req[512];
        bool with_body = strcmp(methods[i], "PUT") == 0 || strcmp(methods[i], "PATCH") == 0 ||
                         strcmp(methods[i], "POST") == 0;
        snprintf(req, sizeof(req), "%s /echo/../echo?i=%zu HTTP/1.1\r\nHost: h\r\n%s\r\n%s",
                 methods[i], i, with_body ? "Content-Length: 3\r\n" : "", with_body ? "abc" : "");
        assert_int_equal(gwt_send_str(fd, req), 0);
        struct gwt_response r;
        gwt_must_read(fd, &r, false, req);
        /* Dot-segments are removed on the way (SPEC.md §6, RFC 3986
         * §5.2.4): "/echo/../echo" reaches the backend as "/echo", the
         * query unchanged. */
        assert_int_equal(r.status, 200);
        assert_false(r.conn_closed);
        struct gwt_echo e;
        assert_int_equal(gwt_echo_parse(&r, &e), 0);
        gwt_response_free(&r);
        char want[32];
        snprintf(want, sizeof(want), "/echo?i=%zu", i);
        assert_string_equal(e.method, methods[i]);
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
    gwt_suite_start_gw2(env);
    struct gwt_response r;
    assert_int_equal(gwt_http(gwt_fx.gport2,
                              "GET /echo HTTP/1.1\r\nHost: client.example\r\nConnection: "
                              "close\r\n\r\n",
                              &r),
                     0);
    assert_int_equal(r.status, 200);
    struct gwt_echo e;
    assert_int_equal(gwt_echo_parse(&r, &e), 0);
    char want[64];
    snprintf(want, sizeof(want), "127.0.0.1:%d", gwt_fx.bport);
    assert_int_equal(gwt_echo_count(&e, "Host"), 1);
    assert_string_equal(gwt_echo_header(&e, "Host"), want);
    /* The client's host is still told to the backend. */
    assert_string_equal(gwt_echo_header(&e, "X-Forwarded-Host"), "client.example");
    gwt_echo_free(&e);
    gwt_response_free(&r);
    gwt_assert_serves_user(gwt_fx.gport2, 42);
}

/* A chunked upload sent in pieces reaches the backend intact. */
static void test_chunked_request(void **state)
{
    size_t total = 100000;
    char *body = make_body(total, 3);
    char sha[65];
    gwt_sha256_hex(body, total, sha);
    int fd = gwt_connect(gwt_fx.gport);
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
    int fd = gwt_connect(gwt_fx.gport);
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

/* ---- response framing --------------------------------------------------- */

static void test_cl_response_exact(void **state)
{
    int fd = gwt_connect(gwt_fx.gport);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd, "GET /bytes?n=70001 HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    struct gwt_response r;
    gwt_must_read(fd, &r, false, "GET /bytes?n=70001");
    assert_int_equal(r.status, 200);
    assert_false(r.chunked);
    assert_non_null(gwt_header(&r, "Content-Length"));
    assert_string_equal(gwt_header(&r, "Content-Length"), "70001");
    assert_int_equal(r.body_len, 70001);
    assert_pattern(r.body, r.body_len);
    gwt_response_free(&r);
    assert_int_equal(gwt_send_str(fd, "GET /users/4 HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    gwt_expect_user(fd, 4, NULL);
    close(fd);
}

/* The backend's chunked response reaches an HTTP/1.1 client chunked and
 * byte-identical to what the backend sends directly, without a
 * Content-Length, and the connection stays usable. */
static void test_chunked_response(void **state)
{
    struct gwt_response d, r;
    direct_get("/stream?chunks=7&size=1000", &d);
    assert_true(d.chunked);
    assert_int_equal(d.body_len, 7000);
    int fd = gwt_connect(gwt_fx.gport);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd, "GET /stream?chunks=7&size=1000 HTTP/1.1\r\nHost: h\r\n\r\n"),
                     0);
    gwt_must_read(fd, &r, false, "GET /stream?chunks=7&size=1000");
    assert_int_equal(r.status, 200);
    assert_true(r.chunked);
    assert_true(r.chunk_count >= 1);
    assert_null(gwt_header(&r, "Content-Length"));
    assert_int_equal(gwt_header_count(&r, "Content-Length"), 0);
    assert_int_equal(r.body_len, 7000);
    assert_int_equal(r.body_len, d.body_len);
    assert_memory_equal(r.body, d.body, d.body_len);
    assert_pattern(r.body, r.body_len);
    gwt_response_free(&r);
    gwt_response_free(&d);
    assert_int_equal(gwt_send_str(fd, "GET /users/5 HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    gwt_expect_user(fd, 5, NULL);
    close(fd);
}

/* The backend delimits the body by closing: an HTTP/1.1 client gets every
 * byte (the same as the backend sends directly), re-framed so the end is
 * unambiguous (chunked, or close); a kept connection is reusable. */
static void test_close_delimited_response(void **state)
{
    static const struct {
        const char *target;
        size_t len;
        int next_user;
    } rows[] = {
        {"/stream?chunks=3&size=1000&close=1", 3000, 6},
        {"/stream?chunks=4&size=500&close=1", 2000, 8},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct gwt_response d, r;
        direct_get(rows[i].target, &d);
        assert_false(d.chunked);
        assert_int_equal(d.body_len, rows[i].len);
        int fd = gwt_connect(gwt_fx.gport);
        assert_true(fd >= 0);
        char req[256];
        snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: h\r\n\r\n", rows[i].target);
        assert_int_equal(gwt_send_str(fd, req), 0);
        gwt_must_read(fd, &r, false, req);
        assert_int_equal(r.status, 200);
        assert_int_equal(r.body_len, rows[i].len);
        assert_memory_equal(r.body, d.body, d.body_len);
        assert_pattern(r.body, r.body_len);
        bool closed = r.conn_closed;
        assert_true(r.chunked || closed);
        gwt_response_free(&r);
        gwt_response_free(&d);
        if (!closed) {
            snprintf(req, sizeof(req), "GET /users/%d HTTP/1.1\r\nHost: h\r\n\r\n",
                     rows[i].next_user);
            assert_int_equal(gwt_send_str(fd, req), 0);
            gwt_expect_user(fd, rows[i].next_user, "after a re-framed close-delimited response");
        }
        close(fd);
    }
}

/* A fake upstream with a body delimited by close, and an HTTP/1.0 upstream
 * response: both arrive complete; the fake's connection is not reused. */
static void test_close_delimited_from_fake(void **state)
{
    const struct gwt_fault_step steps[] = {
        {"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil-close body", 0, GWT_FAULT_CLOSE,
         false},
        {"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nold!", 0, GWT_FAULT_CLOSE, false},
    };
    gwt_suite_script(steps, 2);
    int fd = gwt_connect(gwt_fx.fport);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd, "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    struct gwt_response r;
    gwt_must_read(fd, &r, false, "read-until-close response from the fake");
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 16);
    assert_string_equal(r.body, "until-close body");
    bool closed = r.conn_closed;
    gwt_response_free(&r);
    if (closed) {
        close(fd);
        fd = gwt_connect(gwt_fx.fport);
        assert_true(fd >= 0);
    }
    assert_int_equal(gwt_send_str(fd, "GET /b HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    gwt_must_read(fd, &r, false, "HTTP/1.0 response from the fake");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "old!");
    closed = r.conn_closed;
    gwt_response_free(&r);
    /* Both upstream connections were closed by the fake: a third request
     * needs a new one and gets the default reply. */
    if (closed) {
        close(fd);
        fd = gwt_connect(gwt_fx.fport);
        assert_true(fd >= 0);
    }
    assert_int_equal(gwt_send_str(fd, "GET /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"),
                     0);
    gwt_must_read(fd, &r, false, "default reply from the fake");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"fake\":true}");
    gwt_response_free(&r);
    close(fd);
    assert_int_equal(gwt_fault_connections(gwt_fx.fake), 3);
}

/* One megabyte with Content-Length arrives intact. */
static void test_bytes_1mb(void **state)
{
    struct gwt_response d, r;
    direct_get("/bytes?n=1000000", &d);
    assert_int_equal(d.body_len, 1000000);
    assert_int_equal(gwt_get(gwt_fx.gport, "/bytes?n=1000000", &r), 0);
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

/* ---- HTTP/1.0 clients --------------------------------------------------- */

/* No chunked coding towards HTTP/1.0: the gateway delimits by close, and
 * the connection closes after the response. */
static void test_http10_no_chunked(void **state)
{
    static const struct {
        const char *req;
        size_t len;
    } rows[] = {
        {"GET /stream?chunks=4&size=50 HTTP/1.0\r\nHost: h\r\n\r\n", 200},
        {"GET /stream?chunks=4&size=50 HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n", 200},
        {"GET /stream?chunks=3&size=100 HTTP/1.0\r\nHost: h\r\n\r\n", 300},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        int fd = gwt_connect(gwt_fx.gport);
        assert_true(fd >= 0);
        assert_int_equal(gwt_send_str(fd, rows[i].req), 0);
        struct gwt_response r;
        gwt_must_read(fd, &r, false, rows[i].req);
        assert_int_equal(r.status, 200);
        assert_false(r.chunked);
        assert_null(gwt_header(&r, "Transfer-Encoding"));
        assert_null(strcasestr(r.raw_head, "Transfer-Encoding"));
        assert_int_equal(r.body_len, rows[i].len);
        assert_pattern(r.body, r.body_len);
        assert_true(r.conn_closed);
        gwt_response_free(&r);
        assert_true(gwt_peer_closed(fd, 3000));
        close(fd);
    }
    struct gwt_response r;
    assert_int_equal(gwt_http(gwt_fx.gport, "GET /users/10 HTTP/1.0\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    assert_false(r.chunked);
    gwt_response_free(&r);
}

/* HTTP/1.0 keep-alive with a Content-Length response: the connection is
 * kept and says so; without keep-alive it closes after the response. */
static void test_http10_keepalive(void **state)
{
    int fd = gwt_connect(gwt_fx.gport);
    assert_true(fd >= 0);
    for (int i = 1; i <= 2; i++) {
        char req[128];
        snprintf(req, sizeof(req), "GET /users/%d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", i);
        assert_int_equal(gwt_send_str(fd, req), 0);
        struct gwt_response r;
        gwt_must_read(fd, &r, false, "HTTP/1.0 keep-alive request");
        assert_int_equal(r.status, 200);
        assert_non_null(gwt_header(&r, "Content-Length"));
        const char *conn = gwt_header(&r, "Connection");
        assert_non_null(conn);
        assert_true(strcasecmp(conn, "keep-alive") == 0);
        assert_false(r.chunked);
        gwt_response_free(&r);
    }
    close(fd);

    fd = gwt_connect(gwt_fx.gport);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd, "GET /users/3 HTTP/1.0\r\n\r\n"), 0);
    gwt_expect_user(fd, 3, NULL);
    assert_int_equal(gwt_fault_bytes_until_eof(fd, 3000), 0);
    close(fd);
}

/* HTTP/1.0 request bodies use Content-Length; the backend gets them whole,
 * and without keep-alive the connection closes after the response. */
static void test_http10_post(void **state)
{
    int fd = gwt_connect(gwt_fx.gport);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd, "POST /echo HTTP/1.0\r\nContent-Length: 6\r\n\r\nfoobar"), 0);
    struct gwt_echo e;
    gwt_read_echo(fd, &e, "HTTP/1.0 POST /echo");
    assert_sha(&e, "foobar", 6);
    assert_string_equal(e.http_version, "1.1");
    gwt_echo_free(&e);
    assert_int_equal(gwt_fault_bytes_until_eof(fd, 3000), 0);
    close(fd);
}

/* ---- bodiless responses ------------------------------------------------- */

/* Sends request i of reqs[0..n) on fd: when pipelined, all of them in one
 * write before the first response is read; else each one just before its
 * own response is read. */
static void send_nth(int fd, const char *const reqs[], size_t n, size_t i, bool pipelined)
{
    if (!pipelined) {
        assert_int_equal(gwt_send_str(fd, reqs[i]), 0);
        return;
    }
    if (i > 0)
        return;
    char buf[2048];
    size_t off = 0;
    for (size_t k = 0; k < n; k++)
        off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s", reqs[k]);
    assert_true(off < sizeof(buf));
    assert_int_equal(gwt_send_all(fd, buf, off), 0);
}

/* HEAD keeps Content-Length and sends no body; after it, the next responses
 * on the connection parse, which they would not if a body byte had slipped
 * out. Pipelined in one write and one request at a time. */
static void test_head_keeps_content_length(void **state)
{
    static const struct {
        bool pipelined;
        const char *reqs[3];
        const char *length;
        int user;
    } rows[] = {
        {true,
         {"HEAD /bytes?n=12345 HTTP/1.1\r\nHost: h\r\n\r\n",
          "HEAD /stream?chunks=2&size=10 HTTP/1.1\r\nHost: h\r\n\r\n",
          "GET /users/2 HTTP/1.1\r\nHost: h\r\n\r\n"},
         "12345",
         2},
        {false,
         {"HEAD /bytes?n=5000 HTTP/1.1\r\nHost: h\r\n\r\n",
          "HEAD /stream?chunks=2&size=10 HTTP/1.1\r\nHost: h\r\n\r\n",
          "GET /users/3 HTTP/1.1\r\nHost: h\r\n\r\n"},
         "5000",
         3},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        int fd = gwt_connect(gwt_fx.gport);
        assert_true(fd >= 0);
        struct gwt_response r;
        send_nth(fd, rows[i].reqs, 3, 0, rows[i].pipelined);
        gwt_must_read(fd, &r, true, rows[i].reqs[0]);
        assert_int_equal(r.status, 200);
        assert_non_null(gwt_header(&r, "Content-Length"));
        assert_string_equal(gwt_header(&r, "Content-Length"), rows[i].length);
        assert_int_equal(r.body_len, 0);
        gwt_response_free(&r);
        send_nth(fd, rows[i].reqs, 3, 1, rows[i].pipelined);
        gwt_must_read(fd, &r, true, rows[i].reqs[1]);
        assert_int_equal(r.status, 200);
        assert_int_equal(r.body_len, 0);
        gwt_response_free(&r);
        send_nth(fd, rows[i].reqs, 3, 2, rows[i].pipelined);
        assert_false(gwt_expect_user(fd, rows[i].user, "on a reused connection after HEAD"));
        close(fd);
    }
}

/* Statuses from backend_app on one connection, pipelined in one write and
 * one at a time: 204 and 304 carry no body and no Transfer-Encoding, 204
 * no Content-Length either (RFC 9110 §8.6); other statuses pass through
 * with the backend's own body, not a gateway problem document. */
static void test_204_304(void **state)
{
    static const int codes[] = {204, 304, 404, 500, 503};
    enum { NCODES = sizeof(codes) / sizeof(codes[0]) };
    char reqs[NCODES + 1][64];
    const char *reqp[NCODES + 1];
    for (size_t k = 0; k < NCODES; k++) {
        snprintf(reqs[k], sizeof(reqs[k]), "GET /status/%d HTTP/1.1\r\nHost: h\r\n\r\n", codes[k]);
        reqp[k] = reqs[k];
    }
    for (int pipelined = 1; pipelined >= 0; pipelined--) {
        int user = pipelined ? 7 : 11;
        snprintf(reqs[NCODES], sizeof(reqs[NCODES]), "GET /users/%d HTTP/1.1\r\nHost: h\r\n\r\n",
                 user);
        reqp[NCODES] = reqs[NCODES];
        int fd = gwt_connect(gwt_fx.gport);
        assert_true(fd >= 0);
        for (size_t k = 0; k < NCODES; k++) {
            send_nth(fd, reqp, NCODES + 1, k, pipelined);
            struct gwt_response r;
            gwt_must_read(fd, &r, false, reqp[k]);
            assert_int_equal(r.status, codes[k]);
            if (codes[k] == 204 || codes[k] == 304) {
                assert_int_equal(r.body_len, 0);
                assert_int_equal(gwt_header_count(&r, "Transfer-Encoding"), 0);
                if (codes[k] == 204)
                    assert_int_equal(gwt_header_count(&r, "Content-Length"), 0);
            } else {
                const char *ct = gwt_header(&r, "Content-Type");
                assert_non_null(ct);
                assert_null(strstr(ct, "problem+json"));
            }
            gwt_response_free(&r);
        }
        send_nth(fd, reqp, NCODES + 1, NCODES, pipelined);
        assert_false(gwt_expect_user(fd, user, "on a reused connection after bodiless statuses"));
        close(fd);
    }
}

/* Upstream bodiless responses whose framing headers promise a body: 304
 * with Content-Length, HEAD with Content-Length, and a 204 followed by
 * stray bytes. The client gets each at once without a body, and the stray
 * bytes never reach it (the dirty upstream connection is not reused). */
static void test_bodiless_from_fake(void **state)
{
    const struct gwt_fault_step steps[] = {
        {"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 1234\r\n\r\n", 0,
         GWT_FAULT_KEEP, false},
        {"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n", 0, GWT_FAULT_KEEP, false},
        {"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello", 0, GWT_FAULT_KEEP, false},
    };
    gwt_suite_script(steps, 3);
    int fd = gwt_connect(gwt_fx.fport);
    assert_true(fd >= 0);
    long long t0 = gwt_now_ms();
    assert_int_equal(
        gwt_send_str(fd, "GET /a HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"v1\"\r\n\r\n"), 0);
    /* Read the head by hand: gwt_read_response (llhttp) would wait for the
     * 1234 bytes a 304 never carries. Stray body bytes would break the
     * parse of the next response read below. */
    char head[2048];
    assert_true(gwt_read_head(fd, head, sizeof(head)) > 0);
    assert_true(strncmp(head, "HTTP/1.1 304 ", 13) == 0);
    assert_non_null(strcasestr(head, "\r\nContent-Length: 1234\r\n"));
    assert_true(gwt_now_ms() - t0 < 2000);
    struct gwt_response r;
    assert_int_equal(gwt_send_str(fd, "HEAD /b HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    gwt_must_read(fd, &r, true, "HEAD answered with Content-Length 999");
    assert_int_equal(r.status, 200);
    assert_non_null(gwt_header(&r, "Content-Length"));
    assert_string_equal(gwt_header(&r, "Content-Length"), "999");
    assert_int_equal(r.body_len, 0);
    gwt_response_free(&r);
    assert_int_equal(gwt_send_str(fd, "GET /c HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    gwt_must_read(fd, &r, false, "204 followed by stray bytes");
    assert_int_equal(r.status, 204);
    assert_int_equal(r.body_len, 0);
    gwt_response_free(&r);
    assert_int_equal(gwt_send_str(fd, "GET /d HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    gwt_must_read(fd, &r, false, "request after the dirty 204");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"fake\":true}");
    gwt_response_free(&r);
    close(fd);
    assert_int_equal(gwt_fault_requests(gwt_fx.fake), 4);
}

/* Interim 1xx responses from the upstream: an HTTP/1.1 client sees 103
 * (without a body) before the final response; an HTTP/1.0 client never
 * does (RFC 9110 §15.2). The final response is intact either way. */
static void test_1xx_from_upstream(void **state)
{
    static const char interim[] = "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
                                  "HTTP/1.1 100 Continue\r\n\r\n"
                                  "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    const struct gwt_fault_step steps[] = {{interim, 0, GWT_FAULT_KEEP, false},
                                           {interim, 0, GWT_FAULT_KEEP, false}};
    gwt_suite_script(steps, 2);
    int fd = gwt_connect(gwt_fx.fport);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd, "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    struct gwt_response r;
    int interims = 0;
    for (;;) {
        gwt_must_read(fd, &r, false, "response after upstream 103 + 100");
        if (r.status >= 200)
            break;
        assert_int_equal(r.body_len, 0);
        interims++;
        gwt_response_free(&r);
        assert_true(interims <= 2);
    }
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok");
    gwt_response_free(&r);
    /* 103 is relayed; the upstream's 100 is not (the gateway answers
     * Expect itself, so a relayed one could be a second 100). */
    assert_int_equal(interims, 1);
    close(fd);

    fd = gwt_connect(gwt_fx.fport);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd, "GET /b HTTP/1.0\r\n\r\n"), 0);
    gwt_must_read(fd, &r, false, "HTTP/1.0 request answered after upstream 1xx");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok");
    gwt_response_free(&r);
    close(fd);
}

/* ---- Expect: 100-continue ----------------------------------------------- */

/* Exactly one 100 Continue (backend_app sends its own, which must not be
 * relayed as a second one), for Content-Length and chunked bodies. */
static void test_expect_continue_once(void **state)
{
    int fd = gwt_connect(gwt_fx.gport);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd, "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n"
                                      "Expect: 100-continue\r\n\r\n"),
                     0);
    /* The 100 comes before any body byte is sent. */
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 3000), 1);
    struct gwt_response r;
    gwt_must_read(fd, &r, false, "interim response to Expect: 100-continue");
    assert_int_equal(r.status, 100);
    assert_int_equal(r.body_len, 0);
    gwt_response_free(&r);
    assert_int_equal(gwt_send_str(fd, "0123456789"), 0);
    gwt_must_read(fd, &r, false, "final response after the body");
    if (r.status == 100)
        fail_msg("a second 100 Continue was sent");
    assert_int_equal(r.status, 200);
    struct gwt_echo e;
    assert_int_equal(gwt_echo_parse(&r, &e), 0);
    assert_sha(&e, "0123456789", 10);
    assert_int_equal(gwt_echo_count(&e, "Expect"), 0);
    gwt_echo_free(&e);
    gwt_response_free(&r);

    /* The same on the kept connection with a chunked body. */
    assert_int_equal(gwt_send_str(fd, "PUT /echo HTTP/1.1\r\nHost: h\r\n"
                                      "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"),
                     0);
    gwt_must_read(fd, &r, false, "interim response to a chunked Expect request");
    assert_int_equal(r.status, 100);
    gwt_response_free(&r);
    assert_int_equal(gwt_send_str(fd, "3\r\nabc\r\n0\r\n\r\n"), 0);
    gwt_must_read(fd, &r, false, "final response to the chunked Expect request");
    if (r.status == 100)
        fail_msg("a second 100 Continue was sent (chunked)");
    assert_int_equal(r.status, 200);
    gwt_response_free(&r);
    close(fd);
}

/* A client that sends the body without waiting: at most one 100, then the
 * final response. */
static void test_expect_body_sent_at_once(void **state)
{
    int fd = gwt_connect(gwt_fx.gport);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd, "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
                                      "Expect: 100-continue\r\nConnection: close\r\n\r\nhello"),
                     0);
    struct gwt_response r;
    gwt_must_read(fd, &r, false, "Expect with the body already sent");
    int interims = 0;
    while (r.status == 100) {
        interims++;
        gwt_response_free(&r);
        gwt_must_read(fd, &r, false, "final response (Expect, body sent at once)");
    }
    assert_true(interims <= 1);
    assert_int_equal(r.status, 200);
    struct gwt_echo e;
    assert_int_equal(gwt_echo_parse(&r, &e), 0);
    assert_sha(&e, "hello", 5);
    gwt_echo_free(&e);
    gwt_response_free(&r);
    close(fd);
}

/* A body carrying requests, sent after the gateway refused without a 100:
 * the bytes must never be parsed as requests. key names the rate-limit key
 * header value the embedded requests carry. */
static char *smuggling_body(size_t len, const char *key)
{
    char *b = malloc(len + 1);
    assert_non_null(b);
    char one[128];
    int n =
        snprintf(one, sizeof(one), "GET /users/77 HTTP/1.1\r\nHost: h\r\nX-Key: %s\r\n\r\n", key);
    for (size_t i = 0; i < len; i++)
        b[i] = one[i % (size_t)n];
    b[len] = '\0';
    return b;
}

/* Sends the refused request's body anyway; ignores errors (the gateway may
 * have closed already). */
static void send_anyway(int fd, const char *b, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        b += w;
        n -= (size_t)w;
    }
}

/* 413 for a Content-Length over MAX_BODY_BYTES comes instead of 100; the
 * body sent after it is not parsed as requests. */
static void test_expect_refused_413(void **state)
{
    const char *env[] = {"MAX_BODY_BYTES=100", NULL};
    gwt_suite_start_gw2(env);
    long long before = gwt_backend_requests(gwt_fx.bport);
    int fd = gwt_connect(gwt_fx.gport2);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd, "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n"
                                      "Expect: 100-continue\r\n\r\n"),
                     0);
    struct gwt_response r;
    gwt_must_read(fd, &r, false, "Expect with Content-Length over MAX_BODY_BYTES");
    if (r.status == 100)
        fail_msg("100 Continue sent for a request refused with 413");
    gwt_assert_problem(&r, 413, NULL);
    gwt_response_free(&r);
    char *body = smuggling_body(1000, "k");
    send_anyway(fd, body, 1000);
    free(body);
    long extra = gwt_fault_bytes_until_eof(fd, 3000);
    close(fd);
    if (extra != 0)
        fail_msg("after the 413: %s", extra < 0 ? "connection left open" : "more responses sent");
    gwt_assert_serves(gwt_fx.gport2, "/users/42");
    assert_int_equal(gwt_backend_requests(gwt_fx.bport), before + 1);
}

/* 429 comes instead of 100; the body sent after it carries requests under
 * another rate-limit key, which would be allowed: none is answered or
 * reaches the backend. */
static void test_expect_refused_429(void **state)
{
    const char *env[] = {"RATE_LIMIT_REQUESTS=1", "RATE_LIMIT_WINDOW_SECONDS=60",
                         "RATE_LIMIT_KEY=header:X-Key", NULL};
    gwt_suite_start_gw2(env);
    gwt_avoid_window_edge(60, 10);
    struct gwt_response r;
    assert_int_equal(gwt_http(gwt_fx.gport2,
                              "GET /users/1 HTTP/1.1\r\nHost: h\r\nX-Key: spent\r\n"
                              "Connection: close\r\n\r\n",
                              &r),
                     0);
    assert_int_equal(r.status, 200);
    gwt_response_free(&r);
    long long before = gwt_backend_requests(gwt_fx.bport);
    int fd = gwt_connect(gwt_fx.gport2);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd, "POST /echo HTTP/1.1\r\nHost: h\r\nX-Key: spent\r\n"
                                      "Content-Length: 500\r\nExpect: 100-continue\r\n\r\n"),
                     0);
    gwt_must_read(fd, &r, false, "Expect from a client over its limit");
    if (r.status == 100)
        fail_msg("100 Continue sent for a request refused with 429");
    gwt_assert_problem(&r, 429, "https://iana.org/assignments/http-problem-types#quota-exceeded");
    gwt_response_free(&r);
    char *body = smuggling_body(500, "fresh");
    send_anyway(fd, body, 500);
    free(body);
    long extra = gwt_fault_bytes_until_eof(fd, 3000);
    close(fd);
    if (extra != 0)
        fail_msg("after the 429: %s", extra < 0 ? "connection left open" : "more responses sent");
    assert_int_equal(gwt_backend_requests(gwt_fx.bport), before);
    /* A request under a fresh key still goes through. */
    assert_int_equal(gwt_http(gwt_fx.gport2,
                              "GET /users/2 HTTP/1.1\r\nHost: h\r\nX-Key: other\r\n"
                              "Connection: close\r\n\r\n",
                              &r),
                     0);
    assert_int_equal(r.status, 200);
    gwt_response_free(&r);
    assert_int_equal(gwt_backend_requests(gwt_fx.bport), before + 1);
}

/* ---- pipelining ---------------------------------------------------------- */

/* Mixed pipelined requests in one write: a slow one first, bodies of both
 * framings, HEAD, a chunked response, and Connection: close last. */
static void test_pipelining_in_order(void **state)
{
    int fd = gwt_connect(gwt_fx.gport);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd,
                                  "GET /slow?ms=200 HTTP/1.1\r\nHost: h\r\n\r\n"
                                  "GET /users/7 HTTP/1.1\r\nHost: h\r\n\r\n"
                                  "POST /echo?p=3 HTTP/1.1\r\nHost: h\r\nContent-Length: "
                                  "4\r\n\r\nwxyz"
                                  "POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: "
                                  "chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n"
                                  "HEAD /bytes?n=10 HTTP/1.1\r\nHost: h\r\n\r\n"
                                  "GET /stream?chunks=2&size=5 HTTP/1.1\r\nHost: h\r\n\r\n"
                                  "PUT /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyz"
                                  "GET /users/9 HTTP/1.1\r\nHost: h\r\n\r\n"
                                  "GET /users/8 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"),
                     0);
    struct gwt_response r;
    gwt_must_read(fd, &r, false, "pipelined 1: GET /slow?ms=200");
    assert_int_equal(r.status, 200);
    json_t *j = gwt_json(&r);
    assert_non_null(j);
    assert_int_equal(gwt_json_int(j, "slept_ms", -1), 200);
    json_decref(j);
    gwt_response_free(&r);
    assert_false(gwt_expect_user(fd, 7, "pipelined 2, on a reused connection"));
    struct gwt_echo e;
    gwt_read_echo(fd, &e, "pipelined 3: POST /echo?p=3 with Content-Length");
    assert_string_equal(e.target, "/echo?p=3");
    assert_int_equal(e.body_length, 4);
    assert_sha(&e, "wxyz", 4);
    gwt_echo_free(&e);
    gwt_read_echo(fd, &e, "pipelined 4: chunked POST /echo");
    assert_string_equal(e.method, "POST");
    assert_sha(&e, "abcd", 4);
    gwt_echo_free(&e);
    gwt_must_read(fd, &r, true, "pipelined 5: HEAD /bytes?n=10");
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    gwt_response_free(&r);
    gwt_must_read(fd, &r, false, "pipelined 6: GET /stream");
    assert_int_equal(r.body_len, 10);
    assert_pattern(r.body, 10);
    gwt_response_free(&r);
    gwt_read_echo(fd, &e, "pipelined 7: PUT /echo");
    assert_string_equal(e.method, "PUT");
    assert_sha(&e, "xyz", 3);
    gwt_echo_free(&e);
    assert_false(gwt_expect_user(fd, 9, "pipelined 8, on a reused connection"));
    gwt_expect_user(fd, 8, NULL);
    assert_int_equal(gwt_fault_bytes_until_eof(fd, 3000), 0);
    close(fd);
}

/* 50 requests in one write, answered in order. */
static void test_pipelining_depth(void **state)
{
    enum { N = 50 };
    char *req = malloc(N * 64);
    assert_non_null(req);
    size_t off = 0;
    for (int i = 0; i < N; i++)
        off += (size_t)sprintf(req + off, "GET /users/%d HTTP/1.1\r\nHost: h\r\n\r\n", 100 + i);
    int fd = gwt_connect(gwt_fx.gport);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_all(fd, req, off), 0);
    free(req);
    for (int i = 0; i < N; i++)
        gwt_expect_user(fd, 100 + i, NULL);
    close(fd);
}

/* Connection: close ends the exchange: a request pipelined after it is
 * neither answered nor forwarded. */
static void test_pipelined_after_close(void **state)
{
    long long before = gwt_backend_requests(gwt_fx.bport);
    int fd = gwt_connect(gwt_fx.gport);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd,
                                  "GET /users/1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
                                  "GET /users/2 HTTP/1.1\r\nHost: h\r\n\r\n"),
                     0);
    gwt_expect_user(fd, 1, NULL);
    assert_int_equal(gwt_fault_bytes_until_eof(fd, 3000), 0);
    close(fd);
    assert_int_equal(gwt_backend_requests(gwt_fx.bport), before + 1);
}

/* Several requests, one after the other, on one connection. */
static void test_keepalive(void **state)
{
    int fd = gwt_connect(gwt_fx.gport);
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

/* ---- half-close and early responses ------------------------------------- */

/* A client may shut its write side once its request is sent (RFC 9112
 * §9.6 only says the server closes after answering): the request sent
 * before the FIN is answered, then the connection closes. Run on a gateway
 * without upstream pooling, so the request needs a fresh upstream connect
 * while the FIN is already waiting (regression found by the breaker on
 * 14588ac, fixed in f5455cb: no response at all, as with
 * printf 'POST ...' | nc -N). */
static void test_half_close_after_post(void **state)
{
    const char *env[] = {"UPSTREAM_KEEPALIVE=0", NULL};
    gwt_suite_start_gw2(env);
    int fd = gwt_connect(gwt_fx.gport2);
    assert_true(fd >= 0);
    assert_int_equal(
        gwt_send_str(fd, "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"), 0);
    assert_int_equal(shutdown(fd, SHUT_WR), 0);
    struct gwt_echo e;
    gwt_read_echo(fd, &e, "POST /echo then FIN (UPSTREAM_KEEPALIVE=0)");
    assert_sha(&e, "hello", 5);
    gwt_echo_free(&e);
    assert_int_equal(gwt_fault_bytes_until_eof(fd, 3000), 0);
    close(fd);
    gwt_assert_serves(gwt_fx.gport2, "/users/1");
}

/* Pipelined requests followed by a FIN: every one is answered, in order,
 * then the connection closes (same regression as above: none was). */
static void test_half_close_after_pipelined(void **state)
{
    int fd = gwt_connect(gwt_fx.gport);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd, "GET /users/1 HTTP/1.1\r\nHost: h\r\n\r\n"
                                      "GET /users/2 HTTP/1.1\r\nHost: h\r\n\r\n"),
                     0);
    assert_int_equal(shutdown(fd, SHUT_WR), 0);
    gwt_expect_user(fd, 1, NULL);
    gwt_expect_user(fd, 2, NULL);
    assert_int_equal(gwt_fault_bytes_until_eof(fd, 3000), 0);
    close(fd);
}

/* The upstream answers (413) as soon as it has the head, before the rest
 * of the body:
 * the client gets that response promptly and intact, the connection closes
 * (the rest of the body is never read as requests), and the gateway goes
 * on serving. */
static void test_early_upstream_response(void **state)
{
    const struct gwt_fault_step steps[] = {
        {"HTTP/1.1 413 Payload Too Large\r\nContent-Type: text/plain\r\n"
         "Content-Length: 4\r\n\r\nnope",
         0, GWT_FAULT_HOLD, true},
    };
    gwt_suite_script(steps, 1);
    int fd = gwt_connect(gwt_fx.fport);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd, "POST /upload HTTP/1.1\r\nHost: h\r\n"
                                      "Content-Length: 1000000\r\n\r\n"),
                     0);
    /* The body's first 64 KiB: only then does the request take a slot and
     * reach the upstream (SPEC.md §6). */
    char *first = smuggling_body(70000, "f");
    send_anyway(fd, first, 70000);
    free(first);
    struct gwt_response r;
    gwt_must_read(fd, &r, false, "early 413 from the upstream");
    assert_int_equal(r.status, 413);
    assert_string_equal(r.body, "nope");
    const char *ct = gwt_header(&r, "Content-Type");
    assert_non_null(ct);
    assert_string_equal(ct, "text/plain");
    gwt_response_free(&r);
    char *body = smuggling_body(4000, "x");
    send_anyway(fd, body, 4000);
    free(body);
    assert_int_equal(gwt_fault_bytes_until_eof(fd, 3000), 0);
    close(fd);
    assert_int_equal(gwt_get(gwt_fx.fport, "/next", &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"fake\":true}");
    gwt_response_free(&r);
    assert_int_equal(gwt_fault_requests(gwt_fx.fake), 2);
}

/* No 100 Continue to an HTTP/1.0 client (RFC 9110 §10.1.1), which sends
 * its body anyway after a while. */
static void test_expect_http10_no_continue(void **state)
{
    int fd = gwt_connect(gwt_fx.gport);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd, "POST /echo HTTP/1.0\r\nContent-Length: 3\r\n"
                                      "Expect: 100-continue\r\n\r\n"),
                     0);
    /* Absence check, bounded: nothing may arrive before the body is sent. */
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 300), 0);
    assert_int_equal(gwt_send_str(fd, "abc"), 0);
    struct gwt_echo e;
    gwt_read_echo(fd, &e, "HTTP/1.0 POST with Expect");
    assert_sha(&e, "abc", 3);
    gwt_echo_free(&e);
    close(fd);
}

/* ---- upstream failures and vanishing clients ---------------------------- */

/* A client that vanishes mid-body does not disturb the gateway. */
static void test_client_vanishes(void **state)
{
    int fd = gwt_connect(gwt_fx.gport);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd, "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: "
                                      "100000\r\n\r\nonly-a-little"),
                     0);
    close(fd);
    fd = gwt_connect(gwt_fx.gport);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd, "GET /slow?ms=2000 HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    close(fd);
    gwt_assert_serves_user(gwt_fx.gport, 42);
}

/* ---- fields -------------------------------------------------------------- */

/* Several Set-Cookie fields (one with commas in Expires) pass as separate,
 * byte-exact fields in order (RFC 6265 §3: never folded into one). */
static void test_set_cookie_intact(void **state)
{
    const struct gwt_fault_step steps[] = {
        {"HTTP/1.1 200 OK\r\nSet-Cookie: a=1; Path=/; HttpOnly\r\n"
         "Set-Cookie: b=2; Expires=Wed, 21 Oct 2015 07:28:00 GMT; Secure\r\n"
         "X-Between: x\r\nset-cookie: c=3; SameSite=Strict\r\nContent-Length: 2\r\n\r\nok",
         0, GWT_FAULT_KEEP, false},
    };
    gwt_suite_script(steps, 1);
    struct gwt_response r;
    assert_int_equal(gwt_get(gwt_fx.fport, "/cookies", &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok");
    assert_int_equal(gwt_header_count(&r, "Set-Cookie"), 3);
    static const char *const want[] = {"a=1; Path=/; HttpOnly",
                                       "b=2; Expires=Wed, 21 Oct 2015 07:28:00 GMT; Secure",
                                       "c=3; SameSite=Strict"};
    size_t k = 0;
    for (size_t i = 0; i < r.header_count; i++) {
        if (strcasecmp(r.header_names[i], "Set-Cookie") == 0)
            assert_string_equal(r.header_values[i], want[k++]);
    }
    assert_non_null(strstr(r.raw_head, "\r\nSet-Cookie: b=2; Expires=Wed, 21 Oct 2015 07:28:00 "
                                       "GMT; Secure\r\n"));
    gwt_response_free(&r);
}

/* Hop-by-hop fields of the response (fixed list and those Connection
 * names) are removed; end-to-end ones pass. */
static void test_response_hop_by_hop(void **state)
{
    const struct gwt_fault_step steps[] = {
        {"HTTP/1.1 200 OK\r\nConnection: X-Up-Hop\r\nX-Up-Hop: secret\r\n"
         "Keep-Alive: timeout=5\r\nX-End: e\r\nUpgrade: h2c\r\nTrailer: X-T\r\n"
         "Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n",
         0, GWT_FAULT_KEEP, false},
    };
    gwt_suite_script(steps, 1);
    struct gwt_response r;
    assert_int_equal(gwt_get(gwt_fx.fport, "/hop", &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok");
    assert_null(gwt_header(&r, "X-Up-Hop"));
    assert_null(gwt_header(&r, "Keep-Alive"));
    assert_null(gwt_header(&r, "Upgrade"));
    assert_null(gwt_header(&r, "Trailer"));
    assert_non_null(gwt_header(&r, "X-End"));
    gwt_response_free(&r);
}

/* Hop-by-hop fields of the request never reach the upstream. */
static void test_request_hop_by_hop(void **state)
{
    struct gwt_response r;
    assert_int_equal(gwt_http(gwt_fx.gport,
                              "GET /echo HTTP/1.1\r\nHost: h\r\n"
                              "Connection: X-Hop, keep-alive, close\r\nX-Hop: 1\r\n"
                              "Keep-Alive: 300\r\nTE: trailers\r\nUpgrade: h2c\r\n"
                              "Proxy-Connection: keep-alive\r\nTrailer: X-T\r\n"
                              "X-Keep: k\r\n\r\n",
                              &r),
                     0);
    assert_int_equal(r.status, 200);
    struct gwt_echo e;
    assert_int_equal(gwt_echo_parse(&r, &e), 0);
    static const char *const gone[] = {"X-Hop",   "Keep-Alive", "TE",
                                       "Upgrade", "Trailer",    "Proxy-Connection"};
    for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++) {
        if (gwt_echo_header(&e, gone[i]))
            fail_msg("hop-by-hop field %s reached the backend", gone[i]);
    }
    const char *conn = gwt_echo_header(&e, "Connection");
    assert_true(conn == NULL || strstr(conn, "X-Hop") == NULL);
    assert_non_null(gwt_echo_header(&e, "X-Keep"));
    gwt_echo_free(&e);
    gwt_response_free(&r);
    gwt_assert_serves(gwt_fx.gport, "/users/42");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        GWT_TEST(test_cl_request_exact),
        GWT_TEST(test_chunked_request_ext_trailers),
        GWT_TEST(test_chunked_request_sizes),
        GWT_TEST(test_echo_headers_and_body),
        GWT_TEST(test_xff_set_when_absent),
        GWT_TEST(test_methods_keepalive),
        GWT_TEST(test_preserve_host_off),
        GWT_TEST(test_chunked_request),
        GWT_TEST(test_large_upload),
        GWT_TEST(test_cl_response_exact),
        GWT_TEST(test_chunked_response),
        GWT_TEST(test_close_delimited_response),
        GWT_TEST(test_close_delimited_from_fake),
        GWT_TEST(test_bytes_1mb),
        GWT_TEST(test_http10_no_chunked),
        GWT_TEST(test_http10_keepalive),
        GWT_TEST(test_http10_post),
        GWT_TEST(test_head_keeps_content_length),
        GWT_TEST(test_204_304),
        GWT_TEST(test_bodiless_from_fake),
        GWT_TEST(test_1xx_from_upstream),
        GWT_TEST(test_expect_continue_once),
        GWT_TEST(test_expect_body_sent_at_once),
        GWT_TEST(test_expect_refused_413),
        GWT_TEST(test_expect_refused_429),
        GWT_TEST(test_pipelining_in_order),
        GWT_TEST(test_pipelining_depth),
        GWT_TEST(test_pipelined_after_close),
        GWT_TEST(test_keepalive),
        GWT_TEST(test_half_close_after_post),
        GWT_TEST(test_half_close_after_pipelined),
        GWT_TEST(test_early_upstream_response),
        GWT_TEST(test_expect_http10_no_continue),
        GWT_TEST(test_client_vanishes),
        GWT_TEST(test_set_cookie_intact),
        GWT_TEST(test_response_hop_by_hop),
        GWT_TEST(test_request_hop_by_hop),
    };
    return cmocka_run_group_tests_name("conformance", tests, group_setup, gwt_suite_teardown);
}
