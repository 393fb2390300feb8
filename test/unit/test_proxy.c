/*
 * Unit tests of src/proxy.c: upstream request head rewriting, client response
 * head framing and chunk encoding, compared byte for byte. Heads are built by
 * hand (no parser involved) so only the rewriting logic is under test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gw/proxy.h"

/* ---- helpers ------------------------------------------------------------ */

static struct gw_slice S(const char *s) {
    return (struct gw_slice){s, strlen(s)};
}

static void
head_init(struct gw_http_head *h)
{
    memset(h, 0, sizeof(*h));
    h->http_major = 1;
    h->http_minor = 1;
    h->content_length = -1;
    h->keep_alive = true;
}

static void req_init(struct gw_http_head *h, const char *method, const char *target)
{
    head_init(h);
    h->method_name = S(method);
    h->target = S(target);
}

static void resp_init(struct gw_http_head *h, int status, const char *reason)
{
    head_init(h);
    h->status = status;
    h->reason = S(reason);
}

static void hdr(struct gw_http_head *h, const char *name, const char *value)
{
    assert_true(h->header_count < GW_HTTP_MAX_HEADERS);
    h->headers[h->header_count].name = S(name);
    h->headers[h->header_count].value = S(value);
    h->header_count++;
}

/* Asserts the pending bytes of b equal expected exactly (no NUL inside). */
static void assert_buf(const struct gw_buf *b, const char *expected)
{
    size_t n = gw_buf_len(b);
    char *got = malloc(n + 1);
    assert_non_null(got);
    if (n)
        memcpy(got, gw_buf_head(b), n);
    got[n] = '\0';
    assert_string_equal(got, expected);
    assert_int_equal(n, strlen(expected));
    free(got);
}

static struct gw_proxy_request_ctx default_req_ctx(void)
{
    return (struct gw_proxy_request_ctx){
        .client_addr = "203.0.113.7",
        .base_path = "",
        .backend_hostport = "127.0.0.1:8001",
        .preserve_host = true,
        .upstream_keepalive = true,
        .forwarded_proto = "http",
    };
}

/* Rewrites req with ctx into a fresh buffer, checks bytes and framing. */
static void check_req(const struct gw_http_head *req, const struct gw_proxy_request_ctx *ctx,
                      const char *expected, enum gw_framing want_framing)
{
    struct gw_buf b = {0};
    enum gw_framing framing = (enum gw_framing) - 1;
    assert_int_equal(gw_proxy_write_request_head(&b, req, ctx, &framing), 0);
    assert_buf(&b, expected);
    assert_int_equal(framing, want_framing);
    gw_buf_release(&b);
}

/* The forwarding fields the gateway appends for the default client/proto,
 * with X-Forwarded-Host set to host (a string literal). */
#define XF_FIELDS(host)                                                                            \
    "X-Forwarded-For: 203.0.113.7\r\n"                                                             \
    "X-Forwarded-Proto: http\r\n"                                                                  \
    "X-Forwarded-Host: " host "\r\n"

static struct gw_http_head H; /* 4+ KiB: keep it off the stack */

/* Rewrites a bodiless request method/target carrying only "Host: h" and
 * checks it is forwarded with want_line as its request line. */
static void check_host_h(const struct gw_proxy_request_ctx *ctx, const char *method,
                         const char *target, const char *want_line)
{
    char expected[512];
    req_init(&H, method, target);
    hdr(&H, "Host", "h");
    snprintf(expected, sizeof(expected), "%s\r\nHost: h\r\n" XF_FIELDS("h") "\r\n", want_line);
    check_req(&H, ctx, expected, GW_FRAMING_NONE);
}

/* ---- request head ------------------------------------------------------- */

static void test_req_basic_get(void **state)
{
    (void)state;
    req_init(&H, "GET", "/users/1?x=1&y=%20");
    hdr(&H, "Host", "example.com");
    hdr(&H, "User-Agent", "t/1");
    hdr(&H, "Accept", "*/*");
    struct gw_proxy_request_ctx ctx = default_req_ctx();
    check_req(&H, &ctx,
              "GET /users/1?x=1&y=%20 HTTP/1.1\r\n"
              "Host: example.com\r\n"
              "User-Agent: t/1\r\n"
              "Accept: */*\r\n" XF_FIELDS("example.com") "\r\n",
              GW_FRAMING_NONE);
}

static void test_req_hop_by_hop_removed(void **state)
{
    (void)state;
    req_init(&H, "GET", "/");
    hdr(&H, "Host", "h");
    hdr(&H, "Connection", "Keep-Alive ,  x-FOO\t,,");
    hdr(&H, "X-Foo", "1");
    hdr(&H, "Keep-Alive", "timeout=5");
    hdr(&H, "X-Keep", "yes");
    hdr(&H, "cONNECTION", "close,X-Bar");
    hdr(&H, "X-Bar", "2");
    hdr(&H, "x-bar", "3");
    hdr(&H, "Proxy-Connection", "keep-alive");
    hdr(&H, "TE", "trailers");
    hdr(&H, "Trailer", "X-Checksum");
    hdr(&H, "Upgrade", "websocket");
    hdr(&H, "Accept", "a");
    hdr(&H, "X-Foo-Bar", "kept: longer name");
    hdr(&H, "X-Fo", "kept: shorter name");
    hdr(&H, "Connection", "");
    struct gw_proxy_request_ctx ctx = default_req_ctx();
    check_req(&H, &ctx,
              "GET / HTTP/1.1\r\n"
              "Host: h\r\n"
              "X-Keep: yes\r\n"
              "Accept: a\r\n"
              "X-Foo-Bar: kept: longer name\r\n"
              "X-Fo: kept: shorter name\r\n" XF_FIELDS("h") "\r\n",
              GW_FRAMING_NONE);
}

/* SPEC.md §13: a forwarded upgrade keeps Upgrade and says Connection:
 * upgrade (even with upstream keep-alive off); the rest stays hop-by-hop. */
static void test_req_upgrade_kept(void **state)
{
    (void)state;
    req_init(&H, "GET", "/ws");
    hdr(&H, "Host", "h");
    hdr(&H, "Connection", "Upgrade, X-Foo");
    hdr(&H, "X-Foo", "1");
    hdr(&H, "Upgrade", "websocket");
    hdr(&H, "Keep-Alive", "timeout=5");
    hdr(&H, "Sec-WebSocket-Key", "k");
    struct gw_proxy_request_ctx ctx = default_req_ctx();
    ctx.upgrade = true;
    ctx.upstream_keepalive = false;
    check_req(&H, &ctx,
              "GET /ws HTTP/1.1\r\n"
              "Host: h\r\n"
              "Upgrade: websocket\r\n"
              "Sec-WebSocket-Key: k\r\n" XF_FIELDS("h") "Connection: upgrade\r\n\r\n",
              GW_FRAMING_NONE);
}

static void test_req_connection_option_drops_named_end_to_end(void **state)
{
    (void)state;
    /* A Connection option naming an ordinary field (Authorization here)
     * removes every line of it, whatever its casing. */
    req_init(&H, "GET", "/a");
    hdr(&H, "authorization", "Bearer x");
    hdr(&H, "Host", "h");
    hdr(&H, "Connection", "AUTHORIZATION");
    hdr(&H, "Authorization", "Bearer y");
    hdr(&H, "Cookie", "a=1");
    struct gw_proxy_request_ctx ctx = default_req_ctx();
    check_req(&H, &ctx,
              "GET /a HTTP/1.1\r\n"
              "Host: h\r\n"
              "Cookie: a=1\r\n" XF_FIELDS("h") "\r\n",
              GW_FRAMING_NONE);
}

static void test_req_xff_merged(void **state)
{
    (void)state;
    req_init(&H, "GET", "/");
    hdr(&H, "Host", "h");
    hdr(&H, "X-Forwarded-For", "198.51.100.1, 198.51.100.2");
    hdr(&H, "Accept", "x");
    hdr(&H, "x-forwarded-for", "198.51.100.3");
    hdr(&H, "X-Forwarded-For", "");
    hdr(&H, "X-FORWARDED-FOR", "2001:db8::1");
    struct gw_proxy_request_ctx ctx = default_req_ctx();
    check_req(&H, &ctx,
              "GET / HTTP/1.1\r\n"
              "Host: h\r\n"
              "Accept: x\r\n"
              "X-Forwarded-For: 198.51.100.1, 198.51.100.2, 198.51.100.3, 2001:db8::1, "
              "203.0.113.7\r\n"
              "X-Forwarded-Proto: http\r\n"
              "X-Forwarded-Host: h\r\n"
              "\r\n",
              GW_FRAMING_NONE);
}

static void test_req_connection_naming_xff_keeps_ours(void **state)
{
    (void)state;
    /* The classic hop-by-hop abuse: the client's XFF goes (it was declared
     * hop-by-hop), ours stays, and Host / framing cannot be hidden. */
    req_init(&H, "POST", "/p");
    H.content_length = 3;
    H.has_body = true;
    hdr(&H, "Host", "h");
    hdr(&H, "X-Forwarded-For", "6.6.6.6");
    hdr(&H, "Connection", "X-Forwarded-For, x-forwarded-proto, Host, Content-Length");
    hdr(&H, "Content-Length", "3");
    struct gw_proxy_request_ctx ctx = default_req_ctx();
    check_req(&H, &ctx,
              "POST /p HTTP/1.1\r\n"
              "Host: h\r\n" XF_FIELDS("h") "Content-Length: 3\r\n"
                                           "\r\n",
              GW_FRAMING_LENGTH);
}

static void test_req_xfp_xfh_replaced(void **state)
{
    (void)state;
    req_init(&H, "GET", "/");
    hdr(&H, "X-Forwarded-Proto", "https");
    hdr(&H, "Host", "good.example");
    hdr(&H, "X-Forwarded-Host", "evil.example");
    hdr(&H, "x-forwarded-host", "evil2.example");
    struct gw_proxy_request_ctx ctx = default_req_ctx();
    check_req(&H, &ctx,
              "GET / HTTP/1.1\r\n"
              "Host: good.example\r\n" XF_FIELDS("good.example") "\r\n",
              GW_FRAMING_NONE);
}

static void test_req_host_preserve_off(void **state)
{
    (void)state;
    req_init(&H, "GET", "/x");
    hdr(&H, "Accept", "a");
    hdr(&H, "Host", "client.example:8000");
    struct gw_proxy_request_ctx ctx = default_req_ctx();
    ctx.preserve_host = false;
    ctx.backend_hostport = "10.0.0.5:8001";
    check_req(&H, &ctx,
              "GET /x HTTP/1.1\r\n"
              "Host: 10.0.0.5:8001\r\n"
              "Accept: a\r\n" XF_FIELDS("client.example:8000") "\r\n",
              GW_FRAMING_NONE);
}

static void test_req_no_host_http10(void **state)
{
    (void)state;
    static const char expected[] = "GET / HTTP/1.1\r\n"
                                   "Host: 127.0.0.1:8001\r\n"
                                   "X-Forwarded-For: 203.0.113.7\r\n"
                                   "X-Forwarded-Proto: http\r\n"
                                   "\r\n";
    struct gw_proxy_request_ctx ctx = default_req_ctx();
    for (int preserve = 0; preserve <= 1; preserve++) {
        ctx.preserve_host = preserve;
        req_init(&H, "GET", "/");
        H.http_minor = 0;
        H.keep_alive = false;
        check_req(&H, &ctx, expected, GW_FRAMING_NONE);

        /* An empty Host counts as none. */
        hdr(&H, "Host", "");
        check_req(&H, &ctx, expected, GW_FRAMING_NONE);
    }
}

static void test_req_base_path(void **state)
{
    (void)state;
    struct gw_proxy_request_ctx ctx = default_req_ctx();
    ctx.base_path = "/api";
    check_host_h(&ctx, "GET", "/v1/items?q=1", "GET /api/v1/items?q=1 HTTP/1.1");

    check_host_h(&ctx, "DELETE", "/", "DELETE /api/ HTTP/1.1");

    /* NULL base path is the same as "". */
    ctx.base_path = NULL;
    check_host_h(&ctx, "GET", "/z", "GET /z HTTP/1.1");
}

/* Dot-segments are removed before the base path is joined (RFC 3986
 * §5.2.4), so what the backend sees stays inside it; the query is not a
 * path and keeps its dots. */
static void test_req_base_path_dot_segments(void **state)
{
    (void)state;
    static const struct {
        const char *target, *line;
    } rows[] = {
        {"/a/../b", "GET /api/b HTTP/1.1"},
        {"/a/%2e%2e/b?x=/../y", "GET /api/b?x=/../y HTTP/1.1"},
        {"/./a/./b/.", "GET /api/a/b/ HTTP/1.1"},
        {"/a/b/..", "GET /api/a/ HTTP/1.1"},
        {"/a/..", "GET /api/ HTTP/1.1"},
        {"/a//../b", "GET /api/a/b HTTP/1.1"},
        {"/...", "GET /api/... HTTP/1.1"},
        {"/a..b/.c", "GET /api/a..b/.c HTTP/1.1"},
        {"/%2e%2e%2e", "GET /api/%2e%2e%2e HTTP/1.1"},
        {"http://h/x/../y?q", "GET /api/y?q HTTP/1.1"},
    };
    struct gw_proxy_request_ctx ctx = default_req_ctx();
    ctx.base_path = "/api";
    for (size_t i = 0; i < GW_ARRAY_LEN(rows); i++) {
        char expected[512];
        req_init(&H, "GET", rows[i].target);
        hdr(&H, "Host", "h");
        snprintf(expected, sizeof(expected), "%s\r\nHost: h\r\n" XF_FIELDS("h") "\r\n",
                 rows[i].line);
        check_req(&H, &ctx, expected, GW_FRAMING_NONE);
    }
}

static void test_req_absolute_form(void **state)
{
    (void)state;
    struct gw_proxy_request_ctx ctx = default_req_ctx();
    ctx.base_path = "/api";
    req_init(&H, "GET", "http://user:pw@Example.com:8080/p?q=1");
    hdr(&H, "Host", "ignored.example");
    check_req(&H, &ctx,
              "GET /api/p?q=1 HTTP/1.1\r\n"
              "Host: Example.com:8080\r\n" XF_FIELDS("Example.com:8080") "\r\n",
              GW_FRAMING_NONE);

    ctx.preserve_host = false;
    check_req(&H, &ctx,
              "GET /api/p?q=1 HTTP/1.1\r\n"
              "Host: 127.0.0.1:8001\r\n" XF_FIELDS("Example.com:8080") "\r\n",
              GW_FRAMING_NONE);

    /* Empty path becomes "/", the query stays. */
    ctx.preserve_host = true;
    ctx.base_path = "";
    req_init(&H, "GET", "HTTPS://h2?x=1");
    check_req(&H, &ctx,
              "GET /?x=1 HTTP/1.1\r\n"
              "Host: h2\r\n" XF_FIELDS("h2") "\r\n",
              GW_FRAMING_NONE);

    req_init(&H, "GET", "http://h3");
    check_req(&H, &ctx,
              "GET / HTTP/1.1\r\n"
              "Host: h3\r\n" XF_FIELDS("h3") "\r\n",
              GW_FRAMING_NONE);
}

static void test_req_asterisk_form(void **state)
{
    (void)state;
    struct gw_proxy_request_ctx ctx = default_req_ctx();
    ctx.base_path = "/api";
    check_host_h(&ctx, "OPTIONS", "*", "OPTIONS * HTTP/1.1");
}

static void test_req_content_length(void **state)
{
    (void)state;
    req_init(&H, "POST", "/upload");
    H.content_length = 1048576;
    H.has_body = true;
    hdr(&H, "Host", "h");
    hdr(&H, "content-length", "1048576");
    hdr(&H, "Content-Type", "application/octet-stream");
    struct gw_proxy_request_ctx ctx = default_req_ctx();
    check_req(
        &H, &ctx,
        "POST /upload HTTP/1.1\r\n"
        "Host: h\r\n"
        "Content-Type: application/octet-stream\r\n" XF_FIELDS("h") "Content-Length: 1048576\r\n"
                                                                    "\r\n",
        GW_FRAMING_LENGTH);
}

static void test_req_chunked(void **state)
{
    (void)state;
    req_init(&H, "PUT", "/c");
    H.chunked = true;
    H.has_body = true;
    hdr(&H, "Host", "h");
    hdr(&H, "Transfer-Encoding", "chunked");
    hdr(&H, "Content-Type", "text/plain");
    struct gw_proxy_request_ctx ctx = default_req_ctx();
    check_req(&H, &ctx,
              "PUT /c HTTP/1.1\r\n"
              "Host: h\r\n"
              "Content-Type: text/plain\r\n" XF_FIELDS("h") "Transfer-Encoding: chunked\r\n"
                                                            "\r\n",
              GW_FRAMING_CHUNKED);
}

static void test_req_zero_and_absent_length(void **state)
{
    (void)state;
    struct gw_proxy_request_ctx ctx = default_req_ctx();
    static const char tail_cl0[] = "Host: h\r\n" XF_FIELDS("h") "Content-Length: 0\r\n"
                                                                "\r\n";
    static const char tail_none[] = "Host: h\r\n" XF_FIELDS("h") "\r\n";
    char expected[512];
    /* Given Content-Length: 0 is forwarded whatever the method. Absent:
     * POST, PUT and PATCH still announce an empty body, others do not. */
    static const struct {
        const char *method;
        bool given_cl0;
        const char *tail;
    } rows[] = {
        {"POST", true, tail_cl0},      {"GET", true, tail_cl0},      {"DELETE", true, tail_cl0},
        {"POST", false, tail_cl0},     {"PUT", false, tail_cl0},     {"PATCH", false, tail_cl0},
        {"GET", false, tail_none},     {"DELETE", false, tail_none}, {"HEAD", false, tail_none},
        {"OPTIONS", false, tail_none}, {"post", false, tail_none},
    };
    for (size_t i = 0; i < GW_ARRAY_LEN(rows); i++) {
        req_init(&H, rows[i].method, "/");
        if (rows[i].given_cl0) {
            H.content_length = 0;
            hdr(&H, "Content-Length", "0");
        }
        hdr(&H, "Host", "h");
        snprintf(expected, sizeof(expected), "%s / HTTP/1.1\r\n%s", rows[i].method, rows[i].tail);
        check_req(&H, &ctx, expected, GW_FRAMING_NONE);
    }
}

static void test_req_expect_removed(void **state)
{
    (void)state;
    req_init(&H, "POST", "/e");
    H.content_length = 10;
    H.has_body = true;
    H.expect_continue = true;
    hdr(&H, "Host", "h");
    hdr(&H, "Expect", "100-continue");
    hdr(&H, "Content-Length", "10");
    hdr(&H, "X-A", "b");
    struct gw_proxy_request_ctx ctx = default_req_ctx();
    check_req(&H, &ctx,
              "POST /e HTTP/1.1\r\n"
              "Host: h\r\n"
              "X-A: b\r\n" XF_FIELDS("h") "Content-Length: 10\r\n"
                                          "\r\n",
              GW_FRAMING_LENGTH);
}

static void test_req_upstream_close_and_proto(void **state)
{
    (void)state;
    req_init(&H, "GET", "/");
    hdr(&H, "Host", "h");
    hdr(&H, "Connection", "keep-alive");
    struct gw_proxy_request_ctx ctx = default_req_ctx();
    ctx.upstream_keepalive = false;
    ctx.forwarded_proto = NULL; /* defaults to http */
    check_req(&H, &ctx,
              "GET / HTTP/1.1\r\n"
              "Host: h\r\n" XF_FIELDS("h") "Connection: close\r\n"
                                           "\r\n",
              GW_FRAMING_NONE);
    ctx.forwarded_proto = "https";
    check_req(&H, &ctx,
              "GET / HTTP/1.1\r\n"
              "Host: h\r\n"
              "X-Forwarded-For: 203.0.113.7\r\n"
              "X-Forwarded-Proto: https\r\n"
              "X-Forwarded-Host: h\r\n"
              "Connection: close\r\n"
              "\r\n",
              GW_FRAMING_NONE);
}

static void test_req_no_client_addr(void **state)
{
    (void)state;
    struct gw_proxy_request_ctx ctx = default_req_ctx();
    ctx.client_addr = NULL;
    req_init(&H, "GET", "/");
    hdr(&H, "Host", "h");
    check_req(&H, &ctx,
              "GET / HTTP/1.1\r\n"
              "Host: h\r\n"
              "X-Forwarded-Proto: http\r\n"
              "X-Forwarded-Host: h\r\n"
              "\r\n",
              GW_FRAMING_NONE);
    hdr(&H, "X-Forwarded-For", "192.0.2.1");
    check_req(&H, &ctx,
              "GET / HTTP/1.1\r\n"
              "Host: h\r\n"
              "X-Forwarded-For: 192.0.2.1\r\n"
              "X-Forwarded-Proto: http\r\n"
              "X-Forwarded-Host: h\r\n"
              "\r\n",
              GW_FRAMING_NONE);
}

static void test_req_appends_and_many_large_headers(void **state)
{
    (void)state;
    /* The bound must hold with a full header table of long values, and the
     * head must be appended after bytes already pending. */
    static char names[GW_HTTP_MAX_HEADERS][16];
    static char value[700];
    memset(value, 'v', sizeof(value) - 1);
    value[sizeof(value) - 1] = '\0';
    req_init(&H, "GET", "/big");
    hdr(&H, "Host", "h");
    for (int i = 1; i < GW_HTTP_MAX_HEADERS; i++) {
        snprintf(names[i], sizeof(names[i]), "X-H%d", i);
        hdr(&H, names[i], value);
    }
    size_t cap = 200000;
    char *expected = malloc(cap);
    assert_non_null(expected);
    size_t n = (size_t)snprintf(expected, cap, "PENDINGGET /big HTTP/1.1\r\nHost: h\r\n");
    for (int i = 1; i < GW_HTTP_MAX_HEADERS; i++)
        n += (size_t)snprintf(expected + n, cap - n, "%s: %s\r\n", names[i], value);
    snprintf(expected + n, cap - n,
             "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: http\r\n"
             "X-Forwarded-Host: h\r\n\r\n");

    struct gw_buf b = {0};
    assert_int_equal(gw_buf_append_str(&b, "XXPENDING"), 0);
    gw_buf_consume(&b, 2);
    enum gw_framing framing;
    struct gw_proxy_request_ctx ctx = default_req_ctx();
    assert_int_equal(gw_proxy_write_request_head(&b, &H, &ctx, &framing), 0);
    assert_buf(&b, expected);
    assert_int_equal(framing, GW_FRAMING_NONE);
    gw_buf_release(&b);
    free(expected);
}

/* ---- response head ------------------------------------------------------ */

static void check_resp(const struct gw_http_head *resp, const struct gw_proxy_response_ctx *ctx,
                       const char *expected, enum gw_framing want_framing, bool want_close)
{
    struct gw_buf b = {0};
    enum gw_framing framing = (enum gw_framing) - 1;
    bool must_close = !want_close;
    assert_int_equal(gw_proxy_write_response_head(&b, resp, ctx, &framing, &must_close), 0);
    assert_buf(&b, expected);
    assert_int_equal(framing, want_framing);
    assert_int_equal(must_close, want_close);
    gw_buf_release(&b);
}

enum up_kind { UP_CL5, UP_CL0, UP_CHUNKED, UP_CLOSE };

/* A 200 from upstream with the given framing plus its own connection fields. */
static void make_upstream(struct gw_http_head *h, enum up_kind kind)
{
    resp_init(h, 200, "OK");
    hdr(h, "Content-Type", "text/plain");
    switch (kind) {
    case UP_CL5:
        hdr(h, "Content-Length", "5");
        h->content_length = 5;
        h->has_body = true;
        break;
    case UP_CL0:
        hdr(h, "Content-Length", "0");
        h->content_length = 0;
        break;
    case UP_CHUNKED:
        hdr(h, "Transfer-Encoding", "chunked");
        h->chunked = true;
        h->has_body = true;
        break;
    case UP_CLOSE:
        h->body_until_close = true;
        h->has_body = true;
        h->keep_alive = false;
        break;
    }
    hdr(h, "Connection", "keep-alive");
    hdr(h, "Keep-Alive", "timeout=5");
    hdr(h, "X-Up", "1");
}

/* A 101 that opens a tunnel keeps Upgrade and says Connection: upgrade;
 * without ctx.upgrade (never relayed so) both are dropped. */
static void test_resp_101_upgrade(void **state)
{
    (void)state;
    resp_init(&H, 101, "Switching Protocols");
    hdr(&H, "Upgrade", "websocket");
    hdr(&H, "Connection", "Upgrade");
    hdr(&H, "Sec-WebSocket-Accept", "abc=");
    struct gw_proxy_response_ctx ctx = {.client_minor = 1, .keep_alive = true, .upgrade = true};
    check_resp(&H, &ctx,
               "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
               "Sec-WebSocket-Accept: abc=\r\nConnection: upgrade\r\n\r\n",
               GW_FRAMING_NONE, false);
    ctx.upgrade = false;
    check_resp(&H, &ctx, "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: abc=\r\n\r\n",
               GW_FRAMING_NONE, false);
}

#define RH "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Up: 1\r\n"

static void test_resp_framing_matrix(void **state)
{
    (void)state;
    static const struct {
        enum up_kind kind;
        uint8_t minor;
        bool keep_alive;
        const char *expected;
        enum gw_framing framing;
        bool must_close;
    } rows[] = {
        {UP_CL5, 1, true, RH "Content-Length: 5\r\n\r\n", GW_FRAMING_LENGTH, false},
        {UP_CL5, 1, false, RH "Content-Length: 5\r\nConnection: close\r\n\r\n", GW_FRAMING_LENGTH,
         true},
        {UP_CL5, 0, true, RH "Content-Length: 5\r\nConnection: keep-alive\r\n\r\n",
         GW_FRAMING_LENGTH, false},
        {UP_CL5, 0, false, RH "Content-Length: 5\r\nConnection: close\r\n\r\n", GW_FRAMING_LENGTH,
         true},
        {UP_CL0, 1, true, RH "Content-Length: 0\r\n\r\n", GW_FRAMING_NONE, false},
        {UP_CL0, 1, false, RH "Content-Length: 0\r\nConnection: close\r\n\r\n", GW_FRAMING_NONE,
         true},
        {UP_CL0, 0, true, RH "Content-Length: 0\r\nConnection: keep-alive\r\n\r\n", GW_FRAMING_NONE,
         false},
        {UP_CL0, 0, false, RH "Content-Length: 0\r\nConnection: close\r\n\r\n", GW_FRAMING_NONE,
         true},
        {UP_CHUNKED, 1, true, RH "Transfer-Encoding: chunked\r\n\r\n", GW_FRAMING_CHUNKED, false},
        {UP_CHUNKED, 1, false, RH "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
         GW_FRAMING_CHUNKED, true},
        {UP_CHUNKED, 0, true, RH "Connection: close\r\n\r\n", GW_FRAMING_CLOSE, true},
        {UP_CHUNKED, 0, false, RH "Connection: close\r\n\r\n", GW_FRAMING_CLOSE, true},
        {UP_CLOSE, 1, true, RH "Transfer-Encoding: chunked\r\n\r\n", GW_FRAMING_CHUNKED, false},
        {UP_CLOSE, 1, false, RH "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
         GW_FRAMING_CHUNKED, true},
        {UP_CLOSE, 0, true, RH "Connection: close\r\n\r\n", GW_FRAMING_CLOSE, true},
        {UP_CLOSE, 0, false, RH "Connection: close\r\n\r\n", GW_FRAMING_CLOSE, true},
    };
    for (size_t i = 0; i < GW_ARRAY_LEN(rows); i++) {
        make_upstream(&H, rows[i].kind);
        struct gw_proxy_response_ctx ctx = {
            .client_minor = rows[i].minor,
            .keep_alive = rows[i].keep_alive,
        };
        print_message("row %zu\n", i);
        check_resp(&H, &ctx, rows[i].expected, rows[i].framing, rows[i].must_close);
    }
}

static void test_resp_head_request(void **state)
{
    (void)state;
    struct gw_proxy_response_ctx ctx = {
        .client_minor = 1, .keep_alive = true, .request_is_head = true};
    /* The length a GET would have had is kept; no body follows. */
    resp_init(&H, 200, "OK");
    hdr(&H, "Content-Length", "1234");
    hdr(&H, "ETag", "\"x\"");
    H.content_length = 1234;
    check_resp(&H, &ctx, "HTTP/1.1 200 OK\r\nETag: \"x\"\r\nContent-Length: 1234\r\n\r\n",
               GW_FRAMING_NONE, false);

    /* Chunked upstream: nothing to say about the length. */
    resp_init(&H, 200, "OK");
    hdr(&H, "Transfer-Encoding", "chunked");
    H.chunked = true;
    check_resp(&H, &ctx, "HTTP/1.1 200 OK\r\n\r\n", GW_FRAMING_NONE, false);

    /* HTTP/1.0 client kept open, then closing. */
    ctx.client_minor = 0;
    check_resp(&H, &ctx, "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n", GW_FRAMING_NONE,
               false);
    ctx.keep_alive = false;
    check_resp(&H, &ctx, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", GW_FRAMING_NONE, true);
}

static void test_resp_204_304(void **state)
{
    (void)state;
    struct gw_proxy_response_ctx ctx = {.client_minor = 1, .keep_alive = true};
    resp_init(&H, 204, "No Content");
    hdr(&H, "Content-Length", "0");
    hdr(&H, "X-A", "1");
    H.content_length = 0;
    check_resp(&H, &ctx, "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n", GW_FRAMING_NONE, false);

    resp_init(&H, 304, "");
    hdr(&H, "ETag", "\"v1\"");
    hdr(&H, "Content-Length", "99");
    H.content_length = 99;
    check_resp(&H, &ctx, "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 99\r\n\r\n",
               GW_FRAMING_NONE, false);

    resp_init(&H, 304, "Not Modified");
    hdr(&H, "ETag", "\"v1\"");
    ctx.client_minor = 0;
    check_resp(&H, &ctx,
               "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nConnection: keep-alive\r\n\r\n",
               GW_FRAMING_NONE, false);
}

static void test_resp_interim(void **state)
{
    (void)state;
    static const char extra[] = "X-RateLimit-Limit: 5\r\n";
    struct gw_proxy_response_ctx ctx = {
        .client_minor = 1, .keep_alive = false, .extra = {extra, sizeof(extra) - 1}};
    resp_init(&H, 100, "");
    check_resp(&H, &ctx, "HTTP/1.1 100 Continue\r\n\r\n", GW_FRAMING_NONE, false);

    resp_init(&H, 103, "Early Hints");
    hdr(&H, "Link", "</style.css>; rel=preload; as=style");
    hdr(&H, "Connection", "close");
    hdr(&H, "Content-Length", "0");
    check_resp(&H, &ctx,
               "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n",
               GW_FRAMING_NONE, false);
}

static void test_resp_set_cookie_and_extra(void **state)
{
    (void)state;
    static const char extra[] = "X-RateLimit-Limit: 5\r\nX-RateLimit-Remaining: 4\r\n";
    struct gw_proxy_response_ctx ctx = {
        .client_minor = 1, .keep_alive = true, .extra = {extra, sizeof(extra) - 1}};
    resp_init(&H, 200, "OK");
    hdr(&H, "Set-Cookie", "a=1; Path=/");
    hdr(&H, "Content-Length", "2");
    hdr(&H, "Vary", "Accept");
    hdr(&H, "set-cookie", "b=2, c=3; Expires=Wed, 21 Oct 2015 07:28:00 GMT");
    hdr(&H, "Set-Cookie", "d=4");
    H.content_length = 2;
    H.has_body = true;
    check_resp(&H, &ctx,
               "HTTP/1.1 200 OK\r\n"
               "Set-Cookie: a=1; Path=/\r\n"
               "Vary: Accept\r\n"
               "set-cookie: b=2, c=3; Expires=Wed, 21 Oct 2015 07:28:00 GMT\r\n"
               "Set-Cookie: d=4\r\n"
               "X-RateLimit-Limit: 5\r\n"
               "X-RateLimit-Remaining: 4\r\n"
               "Content-Length: 2\r\n"
               "\r\n",
               GW_FRAMING_LENGTH, false);
}

static void test_resp_hop_by_hop_and_reason(void **state)
{
    (void)state;
    struct gw_proxy_response_ctx ctx = {.client_minor = 1, .keep_alive = true};
    resp_init(&H, 404, "");
    hdr(&H, "Connection", "x-internal,  Keep-Alive");
    hdr(&H, "X-Internal", "secret");
    hdr(&H, "Proxy-Connection", "keep-alive");
    hdr(&H, "Upgrade", "h2c");
    hdr(&H, "Trailer", "X-T");
    hdr(&H, "TE", "trailers");
    hdr(&H, "Server", "b");
    hdr(&H, "Host", "kept-in-responses");
    hdr(&H, "Content-Length", "3");
    H.content_length = 3;
    H.has_body = true;
    check_resp(&H, &ctx,
               "HTTP/1.1 404 Not Found\r\nServer: b\r\nHost: kept-in-responses\r\n"
               "Content-Length: 3\r\n\r\n",
               GW_FRAMING_LENGTH, false);

    /* The upstream's own reason phrase is kept; unknown codes get one. */
    resp_init(&H, 200, "Fine Thanks");
    H.content_length = 0;
    check_resp(&H, &ctx, "HTTP/1.1 200 Fine Thanks\r\nContent-Length: 0\r\n\r\n", GW_FRAMING_NONE,
               false);
    resp_init(&H, 599, "");
    H.content_length = 0;
    check_resp(&H, &ctx, "HTTP/1.1 599 Unknown\r\nContent-Length: 0\r\n\r\n", GW_FRAMING_NONE,
               false);
}

static void test_resp_no_body_indicated(void **state)
{
    (void)state;
    /* No length, not chunked, not close-delimited: an empty body, said so. */
    struct gw_proxy_response_ctx ctx = {.client_minor = 1, .keep_alive = true};
    resp_init(&H, 200, "OK");
    check_resp(&H, &ctx, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", GW_FRAMING_NONE, false);
}

/* ---- chunks ------------------------------------------------------------- */

static void test_chunks(void **state)
{
    (void)state;
    struct gw_buf b = {0};
    assert_int_equal(gw_proxy_write_chunk(&b, "hello", 5), 0);
    assert_buf(&b, "5\r\nhello\r\n");
    gw_buf_clear(&b);

    assert_int_equal(gw_proxy_write_chunk(&b, "x", 0), 0);
    assert_int_equal(gw_buf_len(&b), 0);

    char data[4096];
    memset(data, 'd', sizeof(data));
    assert_int_equal(gw_proxy_write_chunk(&b, data, 300), 0);
    assert_int_equal(gw_buf_len(&b), 5 + 300 + 2);
    assert_memory_equal(gw_buf_head(&b), "12c\r\n", 5);
    assert_memory_equal(gw_buf_head(&b) + 305, "\r\n", 2);
    gw_buf_clear(&b);

    assert_int_equal(gw_proxy_write_chunk(&b, data, 4096), 0);
    assert_int_equal(gw_buf_len(&b), 6 + 4096 + 2);
    assert_memory_equal(gw_buf_head(&b), "1000\r\n", 6);
    assert_int_equal(gw_proxy_write_chunk(&b, "ab", 2), 0);
    assert_int_equal(gw_proxy_write_last_chunk(&b), 0);
    assert_memory_equal(gw_buf_head(&b) + 6 + 4096, "\r\n2\r\nab\r\n0\r\n\r\n", 14);
    assert_int_equal(gw_buf_len(&b), 6 + 4096 + 2 + 7 + 5);
    gw_buf_release(&b);

    assert_int_equal(gw_proxy_write_last_chunk(&b), 0);
    assert_buf(&b, "0\r\n\r\n");
    gw_buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_req_basic_get),
        cmocka_unit_test(test_req_hop_by_hop_removed),
        cmocka_unit_test(test_req_upgrade_kept),
        cmocka_unit_test(test_req_connection_option_drops_named_end_to_end),
        cmocka_unit_test(test_req_xff_merged),
        cmocka_unit_test(test_req_connection_naming_xff_keeps_ours),
        cmocka_unit_test(test_req_xfp_xfh_replaced),
        cmocka_unit_test(test_req_host_preserve_off),
        cmocka_unit_test(test_req_no_host_http10),
        cmocka_unit_test(test_req_base_path),
        cmocka_unit_test(test_req_base_path_dot_segments),
        cmocka_unit_test(test_req_absolute_form),
        cmocka_unit_test(test_req_asterisk_form),
        cmocka_unit_test(test_req_content_length),
        cmocka_unit_test(test_req_chunked),
        cmocka_unit_test(test_req_zero_and_absent_length),
        cmocka_unit_test(test_req_expect_removed),
        cmocka_unit_test(test_req_upstream_close_and_proto),
        cmocka_unit_test(test_req_no_client_addr),
        cmocka_unit_test(test_req_appends_and_many_large_headers),
        cmocka_unit_test(test_resp_framing_matrix),
        cmocka_unit_test(test_resp_101_upgrade),
        cmocka_unit_test(test_resp_head_request),
        cmocka_unit_test(test_resp_204_304),
        cmocka_unit_test(test_resp_interim),
        cmocka_unit_test(test_resp_set_cookie_and_extra),
        cmocka_unit_test(test_resp_hop_by_hop_and_reason),
        cmocka_unit_test(test_resp_no_body_indicated),
        cmocka_unit_test(test_chunks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
