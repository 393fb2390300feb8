/*
 * Unit tests for the HTTP/1.x parser wrapper (src/http1.c): valid requests
 * and responses of every framing fed whole, byte by byte and in random
 * slices (same transcript each way), the smuggling matrix of SPEC.md §6,
 * head/body limits, finish() on truncated messages and pipelining resets.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gw/http1.h"

/* ---- transcript driver -------------------------------------------------- */

enum mode { WHOLE = 0, BYTES, RANDOM };

#define RANDOM_SEEDS 24

struct run {
    char out[16384]; /* transcript of events */
    size_t len;
    char body[8192]; /* body of the current message */
    size_t body_len;
    int body_calls;
    int fail_body; /* on_body returns -1 when set */
    int heads;     /* GW_HTTP_HEAD events */
    int error_status;
    const char *error_detail; /* points at detail_buf: the parser dies with run_stream */
    char detail_buf[256];
};

struct opts {
    enum gw_http_kind kind;
    size_t max_head;
    uint64_t max_body;
    bool no_body; /* set before the first message only */
    bool finish;  /* call gw_http_parser_finish at end of input */
};

static void out(struct run *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(r->out + r->len, sizeof(r->out) - r->len, fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < sizeof(r->out) - r->len);
    r->len += (size_t)n;
}

static int sink(void *ctx, const char *data, size_t len)
{
    struct run *r = ctx;
    assert_true(len > 0);
    assert_true(r->body_len + len <= sizeof(r->body));
    memcpy(r->body + r->body_len, data, len);
    r->body_len += len;
    r->body_calls++;
    return r->fail_body ? -1 : 0;
}

static void record_head(struct run *r, const struct gw_http_head *h, enum gw_http_kind kind)
{
    assert_int_equal(h->http_major, 1);
    if (kind == GW_HTTP_REQUEST) {
        /* The numeric method and the stored name must agree. */
        const char *name = llhttp_method_name((llhttp_method_t)h->method);
        assert_int_equal(h->method_name.len, strlen(name));
        assert_memory_equal(h->method_name.ptr, name, h->method_name.len);
        out(r, "REQ %.*s %.*s 1.%u", (int)h->method_name.len, h->method_name.ptr,
            (int)h->target.len, h->target.ptr, h->http_minor);
        out(r, " cl=%lld te=%d ka=%d body=%d ec=%d up=%d\n", (long long)h->content_length,
            h->chunked, h->keep_alive, h->has_body, h->expect_continue, h->upgrade);
    } else {
        out(r, "RES %d [%.*s] 1.%u", h->status, (int)h->reason.len, h->reason.ptr, h->http_minor);
        out(r, " cl=%lld te=%d ka=%d body=%d close=%d inf=%d\n", (long long)h->content_length,
            h->chunked, h->keep_alive, h->has_body, h->body_until_close, h->informational);
    }
    for (size_t i = 0; i < h->header_count; i++)
        out(r, "  %.*s=[%.*s]\n", (int)h->headers[i].name.len, h->headers[i].name.ptr,
            (int)h->headers[i].value.len, h->headers[i].value.ptr);
}

static void record_done(struct run *r)
{
    out(r, "BODY %zu [%.*s]\nDONE\n", r->body_len, (int)r->body_len, r->body);
    r->body_len = 0;
}

static uint32_t next_rand(uint32_t *s)
{
    /* xorshift32: deterministic, good enough to pick slice sizes. */
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static size_t slice_size(enum mode m, uint32_t *rng, size_t left)
{
    switch (m) {
    case WHOLE:
        return left;
    case BYTES:
        return 1;
    default: {
        size_t n = 1 + next_rand(rng) % 23;
        return n < left ? n : left;
    }
    }
}

/* Feeds data to a fresh parser in slices chosen by mode, handling events
 * the way a connection would (reset after DONE), and writes a transcript. */
static void run_stream(const struct opts *o, const char *data, size_t len, enum mode m,
                       uint32_t seed, struct run *r)
{
    struct gw_http_parser p;
    size_t pos = 0, limit = 0;
    uint32_t rng = seed ? seed : 1;
    bool failed = false;

    memset(r, 0, sizeof(*r));
    assert_int_equal(
        gw_http_parser_init(&p, o->kind, o->max_head ? o->max_head : 8192, o->max_body, sink, r),
        0);
    gw_http_parser_set_no_body(&p, o->no_body);
    for (int guard = 0;; guard++) {
        assert_true(guard < 200000);
        if (pos == limit && limit < len)
            limit += slice_size(m, &rng, len - limit);
        size_t used = (size_t)-1;
        enum gw_http_result res = gw_http_parser_execute(&p, data + pos, limit - pos, &used);
        assert_true(used <= limit - pos);
        pos += used;
        if (res == GW_HTTP_NEED_MORE) {
            assert_int_equal(pos, limit);
            if (pos == len)
                break;
        } else if (res == GW_HTTP_HEAD) {
            r->heads++;
            record_head(r, &p.head, o->kind);
        } else if (res == GW_HTTP_DONE) {
            /* Stays DONE, consuming nothing, until reset. */
            size_t again = 7;
            assert_int_equal(gw_http_parser_execute(&p, data + pos, limit - pos, &again),
                             GW_HTTP_DONE);
            assert_int_equal(again, 0);
            assert_true(gw_http_parser_idle(&p));
            record_done(r);
            gw_http_parser_reset(&p);
            assert_true(gw_http_parser_idle(&p));
        } else {
            assert_int_equal(res, GW_HTTP_ERROR);
            r->error_status = p.error_status;
            assert_non_null(p.error_detail);
            snprintf(r->detail_buf, sizeof(r->detail_buf), "%s", p.error_detail);
            r->error_detail = r->detail_buf;
            assert_true(strlen(p.error_detail) > 0);
            /* No parser internals in text meant for clients. */
            assert_null(strstr(p.error_detail, "HPE_"));
            assert_null(strstr(p.error_detail, "llhttp"));
            assert_null(strstr(p.error_detail, "callback"));
            out(r, "ERROR %d\n", p.error_status);
            /* Sticky until reset. */
            assert_int_equal(gw_http_parser_execute(&p, "x", 1, &used), GW_HTTP_ERROR);
            failed = true;
            break;
        }
    }
    if (o->finish && !failed) {
        enum gw_http_result res = gw_http_parser_finish(&p);
        if (res == GW_HTTP_DONE) {
            out(r, "EOF\n");
            record_done(r);
        } else if (res == GW_HTTP_ERROR) {
            r->error_status = p.error_status;
            snprintf(r->detail_buf, sizeof(r->detail_buf), "%s",
                     p.error_detail ? p.error_detail : "");
            r->error_detail = p.error_detail ? r->detail_buf : NULL;
            out(r, "EOF ERROR %d\n", p.error_status);
        } else {
            out(r, "EOF IDLE\n");
        }
    }
    gw_http_parser_deinit(&p);
}

/* Runs whole, byte by byte and in RANDOM_SEEDS random slicings; every run
 * must give the same transcript, equal to expect when expect is not NULL.
 * The result of the whole-buffer run is left in *r. */
static void check_all_modes(const char *name, const struct opts *o, const char *data, size_t len,
                            const char *expect, struct run *r)
{
    static struct run other;
    run_stream(o, data, len, WHOLE, 0, r);
    if (expect && strcmp(r->out, expect) != 0)
        fail_msg("%s (whole): transcript\n%s\nexpected\n%s", name, r->out, expect);
    for (int i = 0; i <= RANDOM_SEEDS; i++) {
        enum mode m = i == 0 ? BYTES : RANDOM;
        run_stream(o, data, len, m, 0x9e3779b9u * (uint32_t)(i + 1), &other);
        if (strcmp(other.out, r->out) != 0)
            fail_msg("%s (%s, seed %d): transcript\n%s\ndiffers from whole\n%s", name,
                     m == BYTES ? "bytes" : "random", i, other.out, r->out);
        /* The first error found must not depend on slicing either. */
        if ((other.error_detail == NULL) != (r->error_detail == NULL) ||
            (r->error_detail && strcmp(other.error_detail, r->error_detail) != 0))
            fail_msg("%s (%s, seed %d): error \"%s\" differs from whole \"%s\"", name,
                     m == BYTES ? "bytes" : "random", i,
                     other.error_detail ? other.error_detail : "-",
                     r->error_detail ? r->error_detail : "-");
    }
}

#define S(lit) lit, sizeof(lit) - 1

/* ---- valid requests ----------------------------------------------------- */

struct valid_case {
    const char *name;
    const char *data;
    size_t len;
    const char *expect;
};

static const struct valid_case valid_requests[] = {
    {"GET with OWS and empty value",
     S("GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nX-Pad: \t v a l \t\r\nEmpty:\r\n"
       "Sp:   \r\n\r\n"),
     "REQ GET /a?b=c 1.1 cl=-1 te=0 ka=1 body=0 ec=0 up=0\n"
     "  Host=[example.com]\n  X-Pad=[v a l]\n  Empty=[]\n  Sp=[]\n"
     "BODY 0 []\nDONE\n"},
    {"POST with Content-Length",
     S("POST /submit HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world"),
     "REQ POST /submit 1.1 cl=11 te=0 ka=1 body=1 ec=0 up=0\n"
     "  Host=[a]\n  Content-Length=[11]\nBODY 11 [hello world]\nDONE\n"},
    {"CL body that looks like framing",
     S("PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\na\nb\r c\n\t "),
     "REQ PUT /x 1.1 cl=9 te=0 ka=1 body=1 ec=0 up=0\n"
     "  Host=[a]\n  Content-Length=[9]\nBODY 9 [a\nb\r c\n\t ]\nDONE\n"},
    {"CL body with NUL, bare CR and fold-like bytes right after the head",
     S("PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nz\0\n \r\r"),
     "REQ PUT /x 1.1 cl=6 te=0 ka=1 body=1 ec=0 up=0\n"
     "  Host=[a]\n  Content-Length=[6]\nBODY 6 [z]\nDONE\n"},
    {"chunked with extensions and trailers",
     S("POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
       "5;name=val\r\nhello\r\n6;flag\r\n world\r\n3;q=\"a b\"\r\n!\n!\r\n"
       "0\r\nX-Trailer: t\r\nX-Other: u\r\n\r\n"),
     "REQ POST /up 1.1 cl=-1 te=1 ka=1 body=1 ec=0 up=0\n"
     "  Host=[a]\n  Transfer-Encoding=[chunked]\nBODY 14 [hello world!\n!]\nDONE\n"},
    {"chunked, upper-case hex, Chunked token, last-chunk extension",
     S("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  Chunked \r\n\r\n"
       "A\r\n0123456789\r\n00\r\n\r\n"),
     "REQ POST / 1.1 cl=-1 te=1 ka=1 body=1 ec=0 up=0\n"
     "  Host=[a]\n  Transfer-Encoding=[Chunked]\nBODY 10 [0123456789]\nDONE\n"},
    {"request-target forms: absolute http/https with port and IP literal, OPTIONS *",
     S("GET HTTP://h:8080/a?b HTTP/1.1\r\nHost: a\r\n\r\n"
       "GET https://[::1]:443 HTTP/1.1\r\nHost: a\r\n\r\n"
       "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
     "REQ GET HTTP://h:8080/a?b 1.1 cl=-1 te=0 ka=1 body=0 ec=0 up=0\n  Host=[a]\nBODY 0 []\nDONE\n"
     "REQ GET https://[::1]:443 1.1 cl=-1 te=0 ka=1 body=0 ec=0 up=0\n  Host=[a]\nBODY 0 []\nDONE\n"
     "REQ OPTIONS * 1.1 cl=-1 te=0 ka=1 body=0 ec=0 up=0\n  Host=[a]\nBODY 0 []\nDONE\n"},
    {"two pipelined requests",
     S("GET /one HTTP/1.1\r\nHost: a\r\n\r\n"
       "POST /two HTTP/1.1\r\nHost: b\r\nContent-Length: 3\r\n\r\nabc"),
     "REQ GET /one 1.1 cl=-1 te=0 ka=1 body=0 ec=0 up=0\n  Host=[a]\nBODY 0 []\nDONE\n"
     "REQ POST /two 1.1 cl=3 te=0 ka=1 body=1 ec=0 up=0\n"
     "  Host=[b]\n  Content-Length=[3]\nBODY 3 [abc]\nDONE\n"},
    {"three pipelined: chunked, CL 0, GET",
     S("POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
       "POST /z HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
       "GET /g HTTP/1.1\r\nHost: a\r\n\r\n"),
     "REQ POST /c 1.1 cl=-1 te=1 ka=1 body=1 ec=0 up=0\n"
     "  Host=[a]\n  Transfer-Encoding=[chunked]\nBODY 2 [hi]\nDONE\n"
     "REQ POST /z 1.1 cl=0 te=0 ka=1 body=0 ec=0 up=0\n"
     "  Host=[a]\n  Content-Length=[0]\nBODY 0 []\nDONE\n"
     "REQ GET /g 1.1 cl=-1 te=0 ka=1 body=0 ec=0 up=0\n  Host=[a]\nBODY 0 []\nDONE\n"},
    {"HTTP/1.0 without keep-alive", S("GET / HTTP/1.0\r\nUser-Agent: t\r\n\r\n"),
     "REQ GET / 1.0 cl=-1 te=0 ka=0 body=0 ec=0 up=0\n  User-Agent=[t]\nBODY 0 []\nDONE\n"},
    {"HTTP/1.0 with keep-alive, pipelined",
     S("GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
       "POST /b HTTP/1.0\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok"),
     "REQ GET /a 1.0 cl=-1 te=0 ka=1 body=0 ec=0 up=0\n  Connection=[keep-alive]\n"
     "BODY 0 []\nDONE\n"
     "REQ POST /b 1.0 cl=2 te=0 ka=1 body=1 ec=0 up=0\n"
     "  Connection=[Keep-Alive]\n  Content-Length=[2]\nBODY 2 [ok]\nDONE\n"},
    {"HTTP/1.1 Connection: close", S("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, Close\r\n\r\n"),
     "REQ GET / 1.1 cl=-1 te=0 ka=0 body=0 ec=0 up=0\n"
     "  Host=[a]\n  Connection=[foo, Close]\nBODY 0 []\nDONE\n"},
    {"Expect: 100-continue, any case",
     S("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\nhi"),
     "REQ POST / 1.1 cl=2 te=0 ka=1 body=1 ec=1 up=0\n"
     "  Host=[a]\n  Expect=[100-Continue]\n  Content-Length=[2]\nBODY 2 [hi]\nDONE\n"},
    {"Expect ignored in HTTP/1.0",
     S("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi"),
     "REQ POST / 1.0 cl=2 te=0 ka=0 body=1 ec=0 up=0\n"
     "  Expect=[100-continue]\n  Content-Length=[2]\nBODY 2 [hi]\nDONE\n"},
    {"leading empty line before the request line", S("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
     "REQ GET / 1.1 cl=-1 te=0 ka=1 body=0 ec=0 up=0\n  Host=[a]\nBODY 0 []\nDONE\n"},
    {"Upgrade request then another request",
     S("GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
       "GET /next HTTP/1.1\r\nHost: a\r\n\r\n"),
     "REQ GET /ws 1.1 cl=-1 te=0 ka=1 body=0 ec=0 up=1\n"
     "  Host=[a]\n  Upgrade=[websocket]\n  Connection=[Upgrade]\nBODY 0 []\nDONE\n"
     "REQ GET /next 1.1 cl=-1 te=0 ka=1 body=0 ec=0 up=0\n  Host=[a]\nBODY 0 []\nDONE\n"},
    {"Upgrade request with a body then another request",
     S("POST /h2c HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
       "Content-Length: 2\r\n\r\nhiGET /n HTTP/1.1\r\nHost: a\r\n\r\n"),
     "REQ POST /h2c 1.1 cl=2 te=0 ka=1 body=1 ec=0 up=1\n"
     "  Host=[a]\n  Upgrade=[h2c]\n  Connection=[Upgrade, HTTP2-Settings]\n"
     "  Content-Length=[2]\nBODY 2 [hi]\nDONE\n"
     "REQ GET /n 1.1 cl=-1 te=0 ka=1 body=0 ec=0 up=0\n  Host=[a]\nBODY 0 []\nDONE\n"},
    {"absolute-form and asterisk-form targets",
     S("GET http://a.example/p?q HTTP/1.1\r\nHost: a.example\r\n\r\n"
       "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
     "REQ GET http://a.example/p?q 1.1 cl=-1 te=0 ka=1 body=0 ec=0 up=0\n"
     "  Host=[a.example]\nBODY 0 []\nDONE\n"
     "REQ OPTIONS * 1.1 cl=-1 te=0 ka=1 body=0 ec=0 up=0\n  Host=[a]\nBODY 0 []\nDONE\n"},
    {"every valid Host form (RFC 9110 §7.2, RFC 3986 §3.2.2)",
     S("GET / HTTP/1.1\r\nHost: Example.COM:8080\r\n\r\n"
       "GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n"
       "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
       "GET / HTTP/1.1\r\nHost: a_b~c!$&'()*+,;=%41:\r\n\r\n"
       "GET / HTTP/1.1\r\nHost: \r\n\r\n"),
     "REQ GET / 1.1 cl=-1 te=0 ka=1 body=0 ec=0 up=0\n  Host=[Example.COM:8080]\nBODY 0 []\nDONE\n"
     "REQ GET / 1.1 cl=-1 te=0 ka=1 body=0 ec=0 up=0\n  Host=[[2001:db8::1]:80]\nBODY 0 []\nDONE\n"
     "REQ GET / 1.1 cl=-1 te=0 ka=1 body=0 ec=0 up=0\n  Host=[127.0.0.1]\nBODY 0 []\nDONE\n"
     "REQ GET / 1.1 cl=-1 te=0 ka=1 body=0 ec=0 up=0\n  Host=[a_b~c!$&'()*+,;=%41:]\nBODY 0 "
     "[]\nDONE\n"
     "REQ GET / 1.1 cl=-1 te=0 ka=1 body=0 ec=0 up=0\n  Host=[]\nBODY 0 []\nDONE\n"},
    {"obs-text in a value, repeated fields kept in order",
     S("GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\nAccept: a\r\naccept: b\r\n\r\n"),
     "REQ GET / 1.1 cl=-1 te=0 ka=1 body=0 ec=0 up=0\n"
     "  Host=[a]\n  X=[caf\xc3\xa9]\n  Accept=[a]\n  accept=[b]\nBODY 0 []\nDONE\n"},
};

static void test_valid_requests(void **state)
{
    (void)state;
    struct opts o = {.kind = GW_HTTP_REQUEST};
    static struct run r;
    for (size_t i = 0; i < GW_ARRAY_LEN(valid_requests); i++) {
        const struct valid_case *c = &valid_requests[i];
        check_all_modes(c->name, &o, c->data, c->len, c->expect, &r);
    }
}

/* ---- valid responses ---------------------------------------------------- */

struct response_case {
    const char *name;
    const char *data;
    size_t len;
    bool no_body;
    bool finish;
    const char *expect;
};

static const struct response_case valid_responses[] = {
    /* Tolerance toward origins (RFC 9112 §2.2, §6.3; SPEC.md §6). */
    {"bare LF after the status line, a field and the head",
     S("HTTP/1.1 200 OK\nContent-Length: 2\nX: y\n\nhi"), false, true,
     "RES 200 [OK] 1.1 cl=2 te=0 ka=1 body=1 close=0 inf=0\n  Content-Length=[2]\n  X=[y]\n"
     "BODY 2 [hi]\nDONE\nEOF IDLE\n"},
    {"HTTP/1.0 without a length, bare LFs", S("HTTP/1.0 200 OK\nServer: x\n\nhello\nworld"), false,
     true,
     "RES 200 [OK] 1.0 cl=-1 te=0 ka=0 body=1 close=1 inf=0\n  Server=[x]\n"
     "EOF\nBODY 11 [hello\nworld]\nDONE\n"},
    {"Content-Length and chunked: chunked wins",
     S("HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n"
       "2\r\nhi\r\n0\r\n\r\n"),
     false, true,
     "RES 200 [OK] 1.1 cl=-1 te=1 ka=1 body=1 close=0 inf=0\n  Content-Length=[9]\n"
     "  Transfer-Encoding=[chunked]\nBODY 2 [hi]\nDONE\nEOF IDLE\n"},
    {"Content-Length", S("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"), false, true,
     "RES 200 [OK] 1.1 cl=5 te=0 ka=1 body=1 close=0 inf=0\n  Content-Length=[5]\n"
     "BODY 5 [hello]\nDONE\nEOF IDLE\n"},
    {"chunked with trailer",
     S("HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
       "3\r\nabc\r\n1;x=y\r\nd\r\n0\r\nServer-Timing: 1\r\n\r\n"),
     false, true,
     "RES 201 [Created] 1.1 cl=-1 te=1 ka=1 body=1 close=0 inf=0\n"
     "  Transfer-Encoding=[chunked]\nBODY 4 [abcd]\nDONE\nEOF IDLE\n"},
    {"read until close", S("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nstream\ndata"),
     false, true,
     "RES 200 [OK] 1.1 cl=-1 te=0 ka=0 body=1 close=1 inf=0\n  Content-Type=[text/plain]\n"
     "EOF\nBODY 11 [stream\ndata]\nDONE\n"},
    {"read until close, empty body", S("HTTP/1.0 200 OK\r\n\r\n"), false, true,
     "RES 200 [OK] 1.0 cl=-1 te=0 ka=0 body=1 close=1 inf=0\nEOF\nBODY 0 []\nDONE\n"},
    {"non-chunked transfer coding: until close",
     S("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzzz"), false, true,
     "RES 200 [OK] 1.1 cl=-1 te=0 ka=0 body=1 close=1 inf=0\n  Transfer-Encoding=[gzip]\n"
     "EOF\nBODY 3 [zzz]\nDONE\n"},
    {"1xx then final",
     S("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
       "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
     false, true,
     "RES 100 [Continue] 1.1 cl=-1 te=0 ka=1 body=0 close=0 inf=1\nBODY 0 []\nDONE\n"
     "RES 103 [Early Hints] 1.1 cl=-1 te=0 ka=1 body=0 close=0 inf=1\n  Link=[</s.css>]\n"
     "BODY 0 []\nDONE\n"
     "RES 200 [OK] 1.1 cl=2 te=0 ka=1 body=1 close=0 inf=0\n  Content-Length=[2]\n"
     "BODY 2 [ok]\nDONE\nEOF IDLE\n"},
    {"HEAD: no body whatever CL says; cleared for the next response",
     S("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
       "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
     true, true,
     "RES 200 [OK] 1.1 cl=100 te=0 ka=1 body=0 close=0 inf=0\n  Content-Length=[100]\n"
     "BODY 0 []\nDONE\n"
     "RES 200 [OK] 1.1 cl=2 te=0 ka=1 body=1 close=0 inf=0\n  Content-Length=[2]\n"
     "BODY 2 [ok]\nDONE\nEOF IDLE\n"},
    {"HEAD: chunked, no body", S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), true,
     true,
     "RES 200 [OK] 1.1 cl=-1 te=1 ka=1 body=0 close=0 inf=0\n  Transfer-Encoding=[chunked]\n"
     "BODY 0 []\nDONE\nEOF IDLE\n"},
    {"HEAD: neither CL nor TE is not read until close", S("HTTP/1.1 200 OK\r\n\r\n"), true, true,
     "RES 200 [OK] 1.1 cl=-1 te=0 ka=1 body=0 close=0 inf=0\nBODY 0 []\nDONE\nEOF IDLE\n"},
    {"HEAD: 103 then final keeps no_body",
     S("HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"), true, true,
     "RES 103 [Early Hints] 1.1 cl=-1 te=0 ka=1 body=0 close=0 inf=1\nBODY 0 []\nDONE\n"
     "RES 200 [OK] 1.1 cl=10 te=0 ka=1 body=0 close=0 inf=0\n  Content-Length=[10]\n"
     "BODY 0 []\nDONE\nEOF IDLE\n"},
    {"204 with CL has no body",
     S("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"
       "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"),
     false, true,
     "RES 204 [No Content] 1.1 cl=5 te=0 ka=1 body=0 close=0 inf=0\n  Content-Length=[5]\n"
     "BODY 0 []\nDONE\n"
     "RES 200 [OK] 1.1 cl=1 te=0 ka=1 body=1 close=0 inf=0\n  Content-Length=[1]\n"
     "BODY 1 [x]\nDONE\nEOF IDLE\n"},
    {"304", S("HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 42\r\n\r\n"), false,
     true,
     "RES 304 [Not Modified] 1.1 cl=42 te=0 ka=1 body=0 close=0 inf=0\n  ETag=[\"x\"]\n"
     "  Content-Length=[42]\nBODY 0 []\nDONE\nEOF IDLE\n"},
    {"CL 0", S("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"), false, true,
     "RES 404 [Not Found] 1.1 cl=0 te=0 ka=1 body=0 close=0 inf=0\n  Content-Length=[0]\n"
     "BODY 0 []\nDONE\nEOF IDLE\n"},
    {"HTTP/1.0 keep-alive with CL",
     S("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nz"), false, true,
     "RES 200 [OK] 1.0 cl=1 te=0 ka=1 body=1 close=0 inf=0\n  Connection=[keep-alive]\n"
     "  Content-Length=[1]\nBODY 1 [z]\nDONE\nEOF IDLE\n"},
    {"Connection: close with CL",
     S("HTTP/1.1 500 Oops\r\nConnection: close\r\nContent-Length: 1\r\n\r\nz"), false, true,
     "RES 500 [Oops] 1.1 cl=1 te=0 ka=0 body=1 close=0 inf=0\n  Connection=[close]\n"
     "  Content-Length=[1]\nBODY 1 [z]\nDONE\nEOF IDLE\n"},
    {"empty reason phrase", S("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n"), false, false,
     "RES 200 [] 1.1 cl=0 te=0 ka=1 body=0 close=0 inf=0\n  Content-Length=[0]\n"
     "BODY 0 []\nDONE\n"},
};

static void test_valid_responses(void **state)
{
    (void)state;
    static struct run r;
    for (size_t i = 0; i < GW_ARRAY_LEN(valid_responses); i++) {
        const struct response_case *c = &valid_responses[i];
        struct opts o = {.kind = GW_HTTP_RESPONSE, .no_body = c->no_body, .finish = c->finish};
        check_all_modes(c->name, &o, c->data, c->len, c->expect, &r);
    }
}

/* ---- smuggling matrix --------------------------------------------------- */

struct bad_case {
    const char *name;
    const char *data;
    size_t len;
    int status;         /* expected error_status */
    bool head_seen;     /* the error comes after the head was reported (body) */
    const char *detail; /* expected error_detail: the row fails for its own reason */
};

#define PFX "POST / HTTP/1.1\r\nHost: a\r\n"
#define CHK PFX "Transfer-Encoding: chunked\r\n\r\n"
#define GET "GET / HTTP/1.1\r\nHost: a\r\n"

static const struct bad_case bad_requests[] = {
    /* Content-Length and Transfer-Encoding */
    {"CL then TE", S(PFX "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400,
     false, "conflicting Content-Length or Transfer-Encoding headers"},
    {"TE then CL", S(PFX "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"), 400,
     false, "conflicting Content-Length or Transfer-Encoding headers"},
    {"TE then CL 0", S(PFX "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n"), 400,
     false, "conflicting Content-Length or Transfer-Encoding headers"},
    {"TE not ending in chunked", S(PFX "Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"), 400,
     false, "invalid Transfer-Encoding"},
    {"TE gzip only", S(PFX "Transfer-Encoding: gzip\r\n\r\nabc"), 400, false,
     "unsupported Transfer-Encoding (only chunked is accepted)"},
    {"TE gzip, chunked (only chunked accepted)",
     S(PFX "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"), 400, false,
     "unsupported Transfer-Encoding (only chunked is accepted)"},
    {"TE identity", S(PFX "Transfer-Encoding: identity\r\n\r\n"), 400, false,
     "unsupported Transfer-Encoding (only chunked is accepted)"},
    {"TE chunked, chunked", S(PFX "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"), 400,
     false, "invalid Transfer-Encoding"},
    {"TE chunked twice as fields",
     S(PFX "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400, false,
     "invalid Transfer-Encoding"},
    {"TE gzip then chunked as fields",
     S(PFX "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400, false,
     "unsupported Transfer-Encoding (only chunked is accepted)"},
    {"TE empty element", S(PFX "Transfer-Encoding: , chunked\r\n\r\n0\r\n\r\n"), 400, false,
     "empty element in Transfer-Encoding"},
    {"TE empty", S(PFX "Transfer-Encoding:\r\n\r\n"), 400, false,
     "empty element in Transfer-Encoding"},
    {"TE xchunked", S(PFX "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"), 400, false,
     "unsupported Transfer-Encoding (only chunked is accepted)"},
    {"TE in HTTP/1.0", S("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400,
     false, "Transfer-Encoding in an HTTP/1.0 request"},
    /* Content-Length values */
    {"duplicate CL equal", S(PFX "Content-Length: 1\r\nContent-Length: 1\r\n\r\nx"), 400, false,
     "conflicting Content-Length or Transfer-Encoding headers"},
    {"duplicate CL differing", S(PFX "Content-Length: 1\r\nContent-Length: 2\r\n\r\nxy"), 400,
     false, "conflicting Content-Length or Transfer-Encoding headers"},
    {"CL comma list", S(PFX "Content-Length: 1, 1\r\n\r\nx"), 400, false, "invalid Content-Length"},
    {"CL plus sign", S(PFX "Content-Length: +1\r\n\r\nx"), 400, false, "invalid Content-Length"},
    {"CL hex", S(PFX "Content-Length: 0x1\r\n\r\nx"), 400, false, "invalid Content-Length"},
    {"CL negative", S(PFX "Content-Length: -1\r\n\r\nx"), 400, false, "invalid Content-Length"},
    {"CL empty", S(PFX "Content-Length: \r\n\r\nx"), 400, false, "invalid Content-Length"},
    {"CL two numbers", S(PFX "Content-Length: 1 1\r\n\r\nx"), 400, false, "invalid Content-Length"},
    {"CL overflow", S(PFX "Content-Length: 99999999999999999999999\r\n\r\nx"), 400, false,
     "invalid Content-Length"},
    {"CL above INT64_MAX", S(PFX "Content-Length: 9223372036854775808\r\n\r\nx"), 400, false,
     "invalid Content-Length"},
    {"CL UINT64_MAX", S(PFX "Content-Length: 18446744073709551615\r\n\r\nx"), 400, false,
     "invalid Content-Length"},
    /* chunk framing */
    {"chunk size not hex", S(CHK "zz\r\nab\r\n0\r\n\r\n"), 400, true, "invalid chunk size"},
    {"chunk size overflow", S(CHK "fffffffffffffffff\r\nab\r\n0\r\n\r\n"), 400, true,
     "invalid chunk size"},
    {"chunk size negative", S(CHK "-1\r\nab\r\n0\r\n\r\n"), 400, true, "invalid chunk size"},
    {"chunk size empty", S(CHK "\r\nab\r\n0\r\n\r\n"), 400, true, "invalid chunk size"},
    {"chunk size leading space", S(CHK " 1\r\na\r\n0\r\n\r\n"), 400, true, "invalid chunk size"},
    {"chunk size trailing space", S(CHK "1 \r\na\r\n0\r\n\r\n"), 400, true, "invalid chunk size"},
    {"chunk size 0x prefix", S(CHK "0x1\r\na\r\n0\r\n\r\n"), 400, true, "invalid chunk size"},
    {"bare LF after chunk size", S(CHK "1\na\r\n0\r\n\r\n"), 400, true, "invalid chunk size"},
    {"bare LF after chunk data", S(CHK "1\r\na\n0\r\n\r\n"), 400, true,
     "malformed line ending or chunk framing"},
    {"chunk data longer than size", S(CHK "1\r\nab\r\n0\r\n\r\n"), 400, true,
     "malformed line ending or chunk framing"},
    {"bare LF after last chunk", S(CHK "0\n\r\n"), 400, true, "invalid chunk size"},
    {"bare LF ending the trailer section", S(CHK "0\r\n\n"), 400, true,
     "line terminated by a bare LF"},
    {"bare LF ending a trailer field", S(CHK "0\r\nT: v\n\r\n"), 400, true,
     "line terminated by a bare LF"},
    {"bare LF after trailer fields", S(CHK "0\r\nT: v\r\n\n"), 400, true,
     "line terminated by a bare LF"},
    {"obs-fold in trailer", S(CHK "0\r\nT: v\r\n w\r\n\r\n"), 400, true,
     "obs-fold (header line starting with whitespace)"},
    {"bare CR in trailer", S(CHK "0\r\nT: v\rw\r\n\r\n"), 400, true, "bare CR not followed by LF"},
    {"chunk extensions too long",
     S(CHK "1;aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
           "\r\na\r\n0\r\n\r\n"),
     400, true, "chunk extensions too long"},
    /* line endings and folding in the head */
    {"bare LF after request line", S("GET / HTTP/1.1\nHost: a\r\n\r\n"), 400, false,
     "line terminated by a bare LF"},
    {"bare LF after a header", S(GET "X: a\n\r\n"), 400, false, "line terminated by a bare LF"},
    {"bare LF ending the head", S(GET "X: a\r\n\n"), 400, false, "line terminated by a bare LF"},
    {"bare LF only head", S("GET / HTTP/1.1\nHost: a\n\n"), 400, false,
     "line terminated by a bare LF"},
    {"bare LF before request line", S("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400, false,
     "line terminated by a bare LF"},
    {"bare CR before request line", S("\rGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400, false,
     "bare CR not followed by LF"},
    {"obs-fold SP", S(GET "X: a\r\n b\r\n\r\n"), 400, false,
     "obs-fold (header line starting with whitespace)"},
    {"obs-fold HTAB", S(GET "X: a\r\n\tb\r\n\r\n"), 400, false,
     "obs-fold (header line starting with whitespace)"},
    {"first header line starts with SP", S("GET / HTTP/1.1\r\n Host: a\r\n\r\n"), 400, false,
     "obs-fold (header line starting with whitespace)"},
    {"space before colon", S(GET "X : a\r\n\r\n"), 400, false,
     "invalid character in a header field"},
    {"tab before colon", S(GET "X\t: a\r\n\r\n"), 400, false,
     "invalid character in a header field"},
    {"space inside name", S(GET "X Y: a\r\n\r\n"), 400, false,
     "invalid character in a header field"},
    {"empty name", S(GET ": a\r\n\r\n"), 400, false, "empty header field name"},
    {"non-token name", S(GET "X\"Y: a\r\n\r\n"), 400, false, "invalid character in a header field"},
    {"no colon", S(GET "Xyz\r\n\r\n"), 400, false, "invalid character in a header field"},
    {"bare CR in value", S(GET "X: a\rb\r\n\r\n"), 400, false, "bare CR not followed by LF"},
    {"bare CR ending value", S(GET "X: a\r\r\n\r\n"), 400, false, "bare CR not followed by LF"},
    {"NUL in value", S(GET "X: a\0b\r\n\r\n"), 400, false,
     "NUL byte in the start line or header fields"},
    {"NUL in name", S(GET "X\0: a\r\n\r\n"), 400, false,
     "NUL byte in the start line or header fields"},
    {"CTL in value", S(GET "X: a\x01z\r\n\r\n"), 400, false, "invalid character in a header field"},
    {"DEL in value", S(GET "X: a\x7fz\r\n\r\n"), 400, false, "invalid character in a header field"},
    /* hop-by-hop abuse */
    {"Connection names Content-Length",
     S(PFX "Connection: Content-Length\r\nContent-Length: 1\r\n\r\nx"), 400, false,
     "Connection header names a framing or Host field"},
    {"Connection names Transfer-Encoding",
     S(PFX "Connection: keep-alive, transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n"
           "0\r\n\r\n"),
     400, false, "Connection header names a framing or Host field"},
    {"Connection names Host", S(GET "Connection: close\r\nConnection: HOST\r\n\r\n"), 400, false,
     "Connection header names a framing or Host field"},
    {"Connection names X-Forwarded-For",
     S(GET "Connection: X-Forwarded-For\r\nX-Forwarded-For: 10.9.8.7\r\n\r\n"), 400, false,
     "Connection header names a forwarding field"},
    {"Connection names x-forwarded-proto", S(GET "Connection: close, x-forwarded-proto\r\n\r\n"),
     400, false, "Connection header names a forwarding field"},
    /* Host */
    {"missing Host in HTTP/1.1", S("GET / HTTP/1.1\r\nX: a\r\n\r\n"), 400, false,
     "missing Host header"},
    {"two Host fields", S(GET "Host: b\r\n\r\n"), 400, false, "more than one Host header"},
    /* request line */
    {"invalid method char", S("G@T / HTTP/1.1\r\nHost: a\r\n\r\n"), 400, false, "invalid method"},
    {"lower-case method", S("get / HTTP/1.1\r\nHost: a\r\n\r\n"), 400, false, "invalid method"},
    {"unknown method", S("FOO / HTTP/1.1\r\nHost: a\r\n\r\n"), 400, false, "invalid method"},
    {"missing method", S(" / HTTP/1.1\r\nHost: a\r\n\r\n"), 400, false, "invalid method"},
    {"CONNECT", S("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"), 400, false,
     "the CONNECT method is not supported"},
    {"CTL in target", S("GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n"), 400, false,
     "invalid request-target"},
    {"DEL in target", S("GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n"), 400, false,
     "invalid request-target"},
    {"TAB in target", S("GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n"), 400, false,
     "invalid request-target"},
    {"NUL in target", S("GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n"), 400, false,
     "NUL byte in the start line or header fields"},
    {"space in target", S("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"), 400, false,
     "malformed start line"},
    {"non-ASCII in target", S("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"), 400, false,
     "invalid request-target"},
    {"double space after method", S("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), 400, false,
     "malformed request line"},
    {"double space before version", S("GET /  HTTP/1.1\r\nHost: a\r\n\r\n"), 400, false,
     "malformed request line"},
    {"space after version", S("GET / HTTP/1.1 \r\nHost: a\r\n\r\n"), 400, false,
     "unsupported HTTP version"},
    {"HTTP/1.2", S("GET / HTTP/1.2\r\nHost: a\r\n\r\n"), 400, false, "unsupported HTTP version"},
    {"HTTP/2.0", S("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 400, false, "unsupported HTTP version"},
    {"HTTP/0.9 with version", S("GET / HTTP/0.9\r\nHost: a\r\n\r\n"), 400, false,
     "unsupported HTTP version"},
    {"HTTP/0.9 simple request", S("GET /\r\n\r\n"), 400, false, "unsupported HTTP version"},
    {"HTTP/11", S("GET / HTTP/11\r\nHost: a\r\n\r\n"), 400, false, "unsupported HTTP version"},
    {"lower-case http", S("GET / http/1.1\r\nHost: a\r\n\r\n"), 400, false, "malformed start line"},
    {"HTTP/2 preface", S("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 400, false,
     "HTTP/2 is not supported"},
    /* request-target forms (RFC 9112 §3.2) */
    {"ftp absolute-form", S("GET ftp://h/admin HTTP/1.1\r\nHost: a\r\n\r\n"), 400, false,
     "request-target is not origin-form or an http(s) absolute-URI"},
    {"unknown scheme", S("GET foo://h/admin HTTP/1.1\r\nHost: a\r\n\r\n"), 400, false,
     "request-target is not origin-form or an http(s) absolute-URI"},
    {"asterisk-form with GET", S("GET * HTTP/1.1\r\nHost: a\r\n\r\n"), 400, false,
     "asterisk-form request-target outside OPTIONS"},
    {"absolute-form without host", S("GET http:///echo HTTP/1.1\r\nHost: a\r\n\r\n"), 400, false,
     "empty host in the request-target"},
    {"absolute-form, scheme only", S("GET http:// HTTP/1.1\r\nHost: a\r\n\r\n"), 400, false,
     "empty host in the request-target"},
    {"absolute-form, empty host before port", S("GET http://:80/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400,
     false, "empty host in the request-target"},
    {"absolute-form, port not a number", S("GET http://h:abc/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400,
     false, "invalid port in the request-target"},
    {"absolute-form, port too large", S("GET http://h:99999/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400,
     false, "invalid port in the request-target"},
    {"absolute-form, port 0", S("GET http://h:0/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400, false,
     "invalid port in the request-target"},
    {"absolute-form, empty port", S("GET http://h:/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400, false,
     "invalid port in the request-target"},
    {"absolute-form with userinfo", S("GET http://u:pw@h/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400, false,
     "userinfo in the request-target"},
    /* the authority replaces Host upstream, so it meets the Host rules */
    {"absolute-form, bad IP literal", S("GET http://[zz]/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400, false,
     "malformed host in the request-target"},
    {"absolute-form, bad pct-encoding", S("GET http://a%/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400, false,
     "malformed host in the request-target"},
    {"absolute-form, stray bracket", S("GET http://a]b/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400, false,
     "malformed host in the request-target"},
    {"absolute-form, unclosed IP literal", S("GET http://[::1/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400,
     false, "malformed host in the request-target"},
    {"fragment in origin-form", S("GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n"), 400, false,
     "fragment in the request-target"},
    /* Host (RFC 9110 §7.2, RFC 3986 §3.2.2) */
    {"Host with a space", S("GET / HTTP/1.1\r\nHost: bad host.example\r\n\r\n"), 400, false,
     "invalid Host header"},
    {"Host with a slash", S("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), 400, false,
     "invalid Host header"},
    {"Host with userinfo", S("GET / HTTP/1.1\r\nHost: u@a\r\n\r\n"), 400, false,
     "invalid Host header"},
    {"Host port not a number", S("GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n"), 400, false,
     "invalid Host header"},
    {"Host port too large", S("GET / HTTP/1.1\r\nHost: a:65536\r\n\r\n"), 400, false,
     "invalid Host header"},
    {"Host two colons", S("GET / HTTP/1.1\r\nHost: a:1:2\r\n\r\n"), 400, false,
     "invalid Host header"},
    {"Host bad IPv6 literal", S("GET / HTTP/1.1\r\nHost: [::g]\r\n\r\n"), 400, false,
     "invalid Host header"},
    {"Host unbracketed IPv6", S("GET / HTTP/1.1\r\nHost: ::1\r\n\r\n"), 400, false,
     "invalid Host header"},
    {"Host bad pct-encoding", S("GET / HTTP/1.1\r\nHost: a%zz\r\n\r\n"), 400, false,
     "invalid Host header"},
    /* dot-segments climbing above the root (RFC 3986 §5.2.4) */
    {"/../ above the root", S("GET /../admin HTTP/1.1\r\nHost: a\r\n\r\n"), 400, false,
     "request-target path climbs above the root"},
    {"%2e%2e above the root", S("GET /%2e%2E/admin HTTP/1.1\r\nHost: a\r\n\r\n"), 400, false,
     "request-target path climbs above the root"},
    {"climb after a segment", S("GET /a/../../admin?x HTTP/1.1\r\nHost: a\r\n\r\n"), 400, false,
     "request-target path climbs above the root"},
    {"absolute-form climbing", S("GET http://h/../admin HTTP/1.1\r\nHost: a\r\n\r\n"), 400, false,
     "request-target path climbs above the root"},
    /* pipelining after a message that closes the connection */
    {"data after Connection: close",
     S(GET "Connection: close\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400, true,
     "data after a message that closes the connection"},
    {"data after HTTP/1.0 without keep-alive", S("GET / HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\n\r\n"),
     400, true, "data after a message that closes the connection"},
};

static const struct bad_case bad_responses[] = {
    {"duplicate CL", S("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx"), 502,
     false, "conflicting Content-Length or Transfer-Encoding headers"},
    {"CL not a number", S("HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\nx"), 502, false,
     "invalid Content-Length"},
    {"chunked not last", S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"), 502,
     false, "chunked is not the final transfer coding"},
    {"chunked twice", S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"), 502,
     false, "chunked transfer coding applied more than once"},
    {"obs-fold", S("HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n"), 502, false,
     "obs-fold (header line starting with whitespace)"},
    {"space before colon", S("HTTP/1.1 200 OK\r\nX : a\r\nContent-Length: 0\r\n\r\n"), 502, false,
     "invalid character in a header field"},
    {"bad chunk size", S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nq\r\n"), 502, true,
     "invalid chunk size"},
    {"status 600", S("HTTP/1.1 600 X\r\nContent-Length: 0\r\n\r\n"), 502, false,
     "invalid status code"},
    {"status 099", S("HTTP/1.1 099 X\r\nContent-Length: 0\r\n\r\n"), 502, false,
     "invalid status code"},
    {"two-digit status", S("HTTP/1.1 20 X\r\nContent-Length: 0\r\n\r\n"), 502, false,
     "invalid status code"},
    {"HTTP/2.0", S("HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"), 502, false,
     "unsupported HTTP version"},
    {"101 Switching Protocols",
     S("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"),
     502, false, "unexpected 101 Switching Protocols"},
    {"Connection names Content-Length",
     S("HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 0\r\n\r\n"), 502, false,
     "Connection header names a framing or Host field"},
    {"not HTTP", S("SSH-2.0-OpenSSH_9.2\r\n"), 502, false, "malformed start line"},
};

static void check_bad(const struct bad_case *c, enum gw_http_kind kind)
{
    static struct run r;
    struct opts o = {.kind = kind};
    check_all_modes(c->name, &o, c->data, c->len, NULL, &r);
    if (r.error_status != c->status)
        fail_msg("%s: status %d, expected %d; transcript\n%s", c->name, r.error_status, c->status,
                 r.out);
    if (strcmp(r.error_detail, c->detail) != 0)
        fail_msg("%s: detail \"%s\", expected \"%s\"", c->name, r.error_detail, c->detail);
    /* Head-level defects must be refused before anything is reported, so
     * nothing of the message can reach the backend. */
    if (!c->head_seen && r.heads != 0)
        fail_msg("%s: HEAD reported before the error\n%s", c->name, r.out);
    if (c->head_seen && r.heads == 0)
        fail_msg("%s: expected the error after the head\n%s", c->name, r.out);
}

static void test_smuggling_requests(void **state)
{
    (void)state;
    for (size_t i = 0; i < GW_ARRAY_LEN(bad_requests); i++)
        check_bad(&bad_requests[i], GW_HTTP_REQUEST);
}

/* SPEC.md §13: with set_upgrade, a 101 is a head (informational, done
 * pending) and the bytes after it are left unconsumed for the tunnel. */
static void test_response_101_when_upgrading(void **state)
{
    (void)state;
    struct gw_http_parser p;
    assert_int_equal(gw_http_parser_init(&p, GW_HTTP_RESPONSE, 4096, 0, NULL, NULL), 0);
    gw_http_parser_set_upgrade(&p, true);
    static const char in[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             "Connection: upgrade\r\n\r\n\x81\x05hello";
    size_t used = 0;
    assert_int_equal(gw_http_parser_execute(&p, in, sizeof(in) - 1, &used), GW_HTTP_HEAD);
    assert_int_equal(used, sizeof(in) - 1 - 7);
    assert_int_equal(p.head.status, 101);
    assert_true(p.head.informational);
    assert_false(p.head.has_body);
    assert_true(gw_http_parser_done_pending(&p));
    /* recycle forgets it: a 101 is refused again. */
    gw_http_parser_recycle(&p);
    assert_int_equal(gw_http_parser_execute(&p, in, sizeof(in) - 1, &used), GW_HTTP_ERROR);
    assert_int_equal(p.error_status, 502);
    gw_http_parser_deinit(&p);
}

/* Trailer fields are kept for the next hop, rendered, OWS trimmed, without
 * the framing and hop-by-hop ones, and never in the head. */
static void test_trailers_kept(void **state)
{
    (void)state;
    struct gw_http_parser p;
    assert_int_equal(gw_http_parser_init(&p, GW_HTTP_REQUEST, 4096, 0, NULL, NULL), 0);
    static const char in[] = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                             "1\r\nx\r\n0\r\nA: 1\r\nHost: h\r\nConnection: x\r\n"
                             "B-B:\t two words \r\nTE: trailers\r\n\r\n";
    size_t used = 0, off = 0;
    assert_int_equal(gw_http_parser_execute(&p, in, sizeof(in) - 1, &used), GW_HTTP_HEAD);
    off += used;
    assert_int_equal(gw_http_parser_trailers(&p).len, 0);
    assert_int_equal(gw_http_parser_execute(&p, in + off, sizeof(in) - 1 - off, &used),
                     GW_HTTP_DONE);
    struct gw_slice t = gw_http_parser_trailers(&p);
    assert_int_equal(t.len, strlen("A: 1\r\nB-B: two words\r\n"));
    assert_memory_equal(t.ptr, "A: 1\r\nB-B: two words\r\n", t.len);
    assert_int_equal(p.head.header_count, 2);
    gw_http_parser_reset(&p);
    assert_int_equal(gw_http_parser_trailers(&p).len, 0);
    gw_http_parser_deinit(&p);
}

/* RFC 9112 §7.1.1 chunk extensions, the pre-pass's own verdicts. */
static void test_chunk_line_check(void **state)
{
    (void)state;
    static const struct {
        const char *line;
        uint64_t size; /* when valid */
        const char *why;
    } rows[] = {
        {"3;foo=\"b\\\"r\"", 3, NULL},
        {"1;a=b;c=d", 1, NULL},
        {"A;a;b=\"q\"", 10, NULL},
        {"1 ;a=b", 1, NULL},
        {"1; a = b", 1, NULL},
        {"1\t;\ta\t=\t\"x y\"", 1, NULL},
        {"1;a=\"\"", 1, NULL},
        {"1;a=\"\\\t\x80\"", 1, NULL},
        {"0000000000000000000000ff", 255, NULL},
        {"ffffffffffffffff", UINT64_MAX, NULL},
        {"0;last", 0, NULL},
        {"", 0, "invalid chunk size"},
        {"g", 0, "invalid chunk size"},
        {"1g", 0, "invalid chunk size"},
        {"1 ", 0, "invalid chunk size"},
        {"10000000000000000", 0, "invalid chunk size"},
        {"-1", 0, "invalid chunk size"},
        {"1;", 0, "invalid chunk extension"},
        {"1;=b", 0, "invalid chunk extension"},
        {"1;a=", 0, "invalid chunk extension"},
        {"1;a=b c", 0, "invalid chunk extension"},
        {"1;a=\"x", 0, "invalid chunk extension"},
        {"1;a=\"\\", 0, "invalid chunk extension"},
        {"1;a=\"\x01\"", 0, "invalid chunk extension"},
        {"1;a=\"\\\x7f\"", 0, "invalid chunk extension"},
        {"1;a\"=b", 0, "invalid chunk extension"},
        {"1 x", 0, "invalid chunk extension"},
        {"1;a=b;", 0, "invalid chunk extension"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        uint64_t size = 12345;
        const char *why = gw_http_chunk_line_check(rows[i].line, strlen(rows[i].line), &size);
        if ((why == NULL) != (rows[i].why == NULL) || (why && strcmp(why, rows[i].why) != 0))
            fail_msg("%s: got %s, want %s", rows[i].line, why ? why : "valid",
                     rows[i].why ? rows[i].why : "valid");
        if (!why)
            assert_int_equal(size, rows[i].size);
    }
    char big[GW_HTTP_MAX_CHUNK_EXT + 8] = "1;a=";
    memset(big + 4, 'x', sizeof(big) - 5);
    big[sizeof(big) - 1] = '\0';
    uint64_t size;
    assert_string_equal(gw_http_chunk_line_check(big, strlen(big), &size),
                        "chunk extensions too long");
}

/* Through the parser, split at every byte: valid extensions decode to the
 * payload alone; from an origin a bare LF may end the size and data lines. */
static void test_chunk_extensions_parsed(void **state)
{
    (void)state;
    static const char req[] = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "3;foo=\"b\\\"r\"\r\nabc\r\n1;a=b;c=d\r\nd\r\n0 ; z = \"1\"\r\n\r\n";
    static const char resp[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                               "3;foo=\"b\\\"r\"\nabc\n1;a=b;c=d\r\nd\n0\nT: v\n\n";
    const char *msgs[] = {req, resp};
    for (int k = 0; k < 2; k++) {
        size_t len = strlen(msgs[k]);
        for (size_t split = 1; split < len; split++) {
            struct run r = {0};
            struct gw_http_parser p;
            assert_int_equal(
                gw_http_parser_init(&p, k ? GW_HTTP_RESPONSE : GW_HTTP_REQUEST, 4096, 0, sink, &r),
                0);
            const char *b = msgs[k];
            size_t off = 0, used = 0;
            enum gw_http_result res = GW_HTTP_NEED_MORE;
            for (int guard = 0; guard < 100 && res != GW_HTTP_DONE && res != GW_HTTP_ERROR;
                 guard++) {
                size_t end = off < split ? split : len;
                res = gw_http_parser_execute(&p, b + off, end - off, &used);
                off += used;
            }
            if (res != GW_HTTP_DONE)
                fail_msg("%s split at %zu: result %d (%s)", k ? "response" : "request", split, res,
                         p.error_detail ? p.error_detail : "-");
            assert_int_equal(r.body_len, 4);
            assert_memory_equal(r.body, "abcd", 4);
            gw_http_parser_deinit(&p);
        }
    }
}

static void test_bad_responses(void **state)
{
    (void)state;
    for (size_t i = 0; i < GW_ARRAY_LEN(bad_responses); i++)
        check_bad(&bad_responses[i], GW_HTTP_RESPONSE);
}

/* Inputs the fuzzer found where the first error reported depended on how
 * the input was sliced (a bare LF or NUL accepted by llhttp, then a later
 * error): each must give the same status and detail in every mode. */
static const struct bad_case fuzz_regressions[] = {
    {"status line, NUL, bare LF", S("HTTP/1.1 100 \0@ntinu\nLink:\x04HTTP/ "), 502, false,
     "NUL byte in the start line or header fields"},
    {"bare LF in request line then empty name",
     S("GET /oneost\n: a HTTP/1.0\r\na HTTP/1.0\r\nConnection: keep-alive\r\r\n\r\n"), 400, false,
     "line terminated by a bare LF"},
};

static void test_fuzz_regressions(void **state)
{
    (void)state;
    check_bad(&fuzz_regressions[0], GW_HTTP_RESPONSE);
    check_bad(&fuzz_regressions[1], GW_HTTP_REQUEST);
}

/* ---- limits --------------------------------------------------------------- */

static char *make_request(size_t headers, size_t value_len, size_t pad, size_t *len_out)
{
    size_t cap = 256 + headers * (value_len + 32) + pad;
    char *b = malloc(cap);
    assert_non_null(b);
    size_t n = (size_t)snprintf(b, cap, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (size_t i = 0; i < headers; i++) {
        n += (size_t)snprintf(b + n, cap - n, "X-%zu:", i);
        memset(b + n, ' ', pad);
        n += pad;
        memset(b + n, 'v', value_len);
        n += value_len;
        b[n++] = '\r';
        b[n++] = '\n';
    }
    b[n++] = '\r';
    b[n++] = '\n';
    assert_true(n <= cap);
    *len_out = n;
    return b;
}

static void expect_status(const char *name, enum gw_http_kind kind, size_t max_head,
                          uint64_t max_body, const char *data, size_t len, int status,
                          struct run *r)
{
    struct opts o = {.kind = kind, .max_head = max_head, .max_body = max_body};
    check_all_modes(name, &o, data, len, NULL, r);
    if (r->error_status != status)
        fail_msg("%s: status %d, expected %d\n%s", name, r->error_status, status, r->out);
}

static void test_head_limits(void **state)
{
    (void)state;
    static struct run r;
    size_t len;
    char *b;

    /* Stored bytes over the limit (one long value). */
    b = make_request(1, 2000, 0, &len);
    expect_status("long value", GW_HTTP_REQUEST, 1024, 0, b, len, 431, &r);
    assert_int_equal(r.heads, 0);
    assert_string_equal(r.error_detail, "request header section too large");
    expect_status("long value, response", GW_HTTP_RESPONSE, 32, 0,
                  S("HTTP/1.1 200 OK\r\nX: vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv\r\n\r\n"),
                  502, &r);
    free(b);

    /* Raw bytes over the limit though little is stored (OWS padding). */
    b = make_request(1, 1, 1500, &len);
    expect_status("padding", GW_HTTP_REQUEST, 1024, 0, b, len, 431, &r);
    free(b);

    /* A request line longer than the limit: 414 (RFC 9110 §15.5.15); a
     * request line within it followed by too many header bytes stays 431. */
    {
        char t[2100];
        int n = snprintf(t, sizeof(t), "GET /%0*d HTTP/1.1\r\nHost: a\r\n\r\n", 2000, 7);
        expect_status("long target", GW_HTTP_REQUEST, 1024, 0, t, (size_t)n, 414, &r);
        n = snprintf(t, sizeof(t), "GET /%0*d HTTP/1.1\r\nHost: a\r\nX: %0*d\r\n\r\n", 900, 7, 500,
                     1);
        expect_status("short line, long head", GW_HTTP_REQUEST, 1024, 0, t, (size_t)n, 431, &r);
        /* A request line of exactly the limit (CRLF not counted) is not
         * longer than it: 431; one byte more: 414. */
        n = snprintf(t, sizeof(t), "GET /%0*d HTTP/1.1\r\nHost: a\r\n\r\n", 1024 - 14, 7);
        expect_status("line of exactly the limit", GW_HTTP_REQUEST, 1024, 0, t, (size_t)n, 431, &r);
        n = snprintf(t, sizeof(t), "GET /%0*d HTTP/1.1\r\nHost: a\r\n\r\n", 1024 - 13, 7);
        expect_status("line one over the limit", GW_HTTP_REQUEST, 1024, 0, t, (size_t)n, 414, &r);
        /* The line ends within the limit: the header section trips it. */
        n = snprintf(t, sizeof(t), "GET /%0*d HTTP/1.1\r\nHost: a\r\n\r\n", 1024 - 16, 7);
        expect_status("line at the limit", GW_HTTP_REQUEST, 1024, 0, t, (size_t)n, 431, &r);
    }

    /* Exactly at the limit passes; one byte more fails. */
    b = make_request(3, 10, 0, &len);
    {
        struct opts o = {.kind = GW_HTTP_REQUEST, .max_head = len};
        check_all_modes("head at the limit", &o, b, len, NULL, &r);
        assert_int_equal(r.error_status, 0);
        assert_int_equal(r.heads, 1);
        expect_status("head one over", GW_HTTP_REQUEST, len - 1, 0, b, len, 431, &r);
    }
    free(b);

    /* Header count: GW_HTTP_MAX_HEADERS fields pass (Host is one), one more fails. */
    b = make_request(GW_HTTP_MAX_HEADERS - 1, 1, 0, &len);
    {
        struct opts o = {.kind = GW_HTTP_REQUEST, .max_head = 65536};
        run_stream(&o, b, len, WHOLE, 0, &r);
        assert_int_equal(r.error_status, 0);
        assert_int_equal(r.heads, 1);
    }
    free(b);
    b = make_request(GW_HTTP_MAX_HEADERS, 1, 0, &len);
    expect_status("too many headers", GW_HTTP_REQUEST, 65536, 0, b, len, 431, &r);
    assert_string_equal(r.error_detail, "too many header fields");
    free(b);
}

static void test_trailer_limits(void **state)
{
    (void)state;
    static struct run r;
    static char b[8192];
    size_t n = (size_t)snprintf(b, sizeof(b), CHK "1\r\nx\r\n0\r\n");

    /* Trailer bytes beyond max_head_bytes: 400 even though nothing is stored. */
    for (int i = 0; i < 30; i++)
        n += (size_t)snprintf(b + n, sizeof(b) - n, "T-%d: %060d\r\n", i, i);
    n += (size_t)snprintf(b + n, sizeof(b) - n, "\r\n");
    expect_status("large trailers", GW_HTTP_REQUEST, 1024, 0, b, n, 400, &r);
    assert_string_equal(r.error_detail, "trailer section too large");
    assert_int_equal(r.heads, 1);

    /* The same trailers fit a larger limit and are dropped from the head. */
    {
        struct opts o = {.kind = GW_HTTP_REQUEST, .max_head = 4096};
        check_all_modes("trailers fit", &o, b, n, NULL, &r);
        assert_int_equal(r.error_status, 0);
        assert_null(strstr(r.out, "T-1"));
        assert_non_null(strstr(r.out, "BODY 1 [x]\nDONE\n"));
    }

    /* Too many trailer fields. */
    n = (size_t)snprintf(b, sizeof(b), CHK "0\r\n");
    for (int i = 0; i <= GW_HTTP_MAX_HEADERS; i++)
        n += (size_t)snprintf(b + n, sizeof(b) - n, "t:\r\n");
    n += (size_t)snprintf(b + n, sizeof(b) - n, "\r\n");
    expect_status("many trailers", GW_HTTP_REQUEST, 65536, 0, b, n, 400, &r);
    assert_string_equal(r.error_detail, "too many trailer fields");
}

static void test_body_limits(void **state)
{
    (void)state;
    static struct run r;

    /* CL over the limit: refused at the head, nothing streamed. */
    expect_status("CL over limit", GW_HTTP_REQUEST, 0, 10,
                  S(PFX "Content-Length: 11\r\n\r\nhello world"), 413, &r);
    assert_int_equal(r.heads, 0);
    assert_int_equal(r.body_calls, 0);
    assert_string_equal(r.error_detail, "request body exceeds the limit of 10 bytes");

    /* CL at the limit passes. */
    {
        struct opts o = {.kind = GW_HTTP_REQUEST, .max_body = 11};
        check_all_modes("CL at limit", &o, S(PFX "Content-Length: 11\r\n\r\nhello world"), NULL,
                        &r);
        assert_int_equal(r.error_status, 0);
        assert_non_null(strstr(r.out, "BODY 11 [hello world]"));
    }

    /* One chunk over the limit: refused at its size line. */
    expect_status("chunk over limit", GW_HTTP_REQUEST, 0, 10,
                  S(CHK "b\r\nhello world\r\n0\r\n\r\n"), 413, &r);
    assert_int_equal(r.heads, 1);
    assert_int_equal(r.body_calls, 0);

    /* Several chunks adding up past the limit. */
    expect_status("chunks over limit", GW_HTTP_REQUEST, 0, 10,
                  S(CHK "4\r\nabcd\r\n4\r\nefgh\r\n4\r\nijkl\r\n0\r\n\r\n"), 413, &r);
    assert_true(r.body_len <= 10);

    /* Chunks exactly at the limit pass. */
    {
        struct opts o = {.kind = GW_HTTP_REQUEST, .max_body = 10};
        check_all_modes("chunks at limit", &o, S(CHK "4\r\nabcd\r\n6\r\nefghij\r\n0\r\n\r\n"), NULL,
                        &r);
        assert_int_equal(r.error_status, 0);
        assert_non_null(strstr(r.out, "BODY 10 [abcdefghij]"));
    }

    /* A huge chunk size does not overflow the limit arithmetic. */
    expect_status("huge chunk", GW_HTTP_REQUEST, 0, 10, S(CHK "ffffffffffffffff\r\nab"), 413, &r);

    /* Responses read until close are limited too (502 for responses). */
    expect_status("until-close over limit", GW_HTTP_RESPONSE, 0, 4,
                  S("HTTP/1.1 200 OK\r\n\r\nabcdef"), 502, &r);
    assert_string_equal(r.error_detail, "response body exceeds the limit of 4 bytes");
}

/* ---- finish, reset, pipelining ---------------------------------------- */

static struct gw_http_parser *new_parser(enum gw_http_kind kind, struct run *r)
{
    static struct gw_http_parser p;
    memset(r, 0, sizeof(*r));
    assert_int_equal(gw_http_parser_init(&p, kind, 4096, 0, sink, r), 0);
    return &p;
}

static enum gw_http_result feed(struct gw_http_parser *p, const char *s, size_t *used)
{
    size_t dummy;
    return gw_http_parser_execute(p, s, strlen(s), used ? used : &dummy);
}

static void test_finish(void **state)
{
    (void)state;
    static struct run r;
    struct gw_http_parser *p;
    size_t used;

    /* Nothing started: idle, finish says nothing was cut. */
    p = new_parser(GW_HTTP_REQUEST, &r);
    assert_true(gw_http_parser_idle(p));
    assert_int_equal(gw_http_parser_finish(p), GW_HTTP_NEED_MORE);
    gw_http_parser_deinit(p);

    /* Truncated head. */
    p = new_parser(GW_HTTP_REQUEST, &r);
    assert_int_equal(feed(p, "GET / HTTP/1.1\r\nHos", &used), GW_HTTP_NEED_MORE);
    assert_false(gw_http_parser_idle(p));
    assert_int_equal(gw_http_parser_finish(p), GW_HTTP_ERROR);
    assert_int_equal(p->error_status, 400);
    gw_http_parser_deinit(p);

    /* Truncated CL body. */
    p = new_parser(GW_HTTP_REQUEST, &r);
    assert_int_equal(feed(p, PFX "Content-Length: 5\r\n\r\nab", &used), GW_HTTP_HEAD);
    assert_int_equal(feed(p, "ab", &used), GW_HTTP_NEED_MORE);
    assert_int_equal(gw_http_parser_finish(p), GW_HTTP_ERROR);
    assert_int_equal(p->error_status, 400);
    gw_http_parser_deinit(p);

    /* Truncated chunked body, and truncated trailers (responses: 502). */
    p = new_parser(GW_HTTP_RESPONSE, &r);
    assert_int_equal(feed(p, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", &used),
                     GW_HTTP_HEAD);
    assert_int_equal(feed(p, "5\r\nab", &used), GW_HTTP_NEED_MORE);
    assert_int_equal(gw_http_parser_finish(p), GW_HTTP_ERROR);
    assert_int_equal(p->error_status, 502);
    gw_http_parser_deinit(p);

    p = new_parser(GW_HTTP_RESPONSE, &r);
    assert_int_equal(feed(p, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", &used),
                     GW_HTTP_HEAD);
    assert_int_equal(feed(p, "0\r\nX: y\r\n", &used), GW_HTTP_NEED_MORE);
    assert_int_equal(gw_http_parser_finish(p), GW_HTTP_ERROR);
    gw_http_parser_deinit(p);

    /* Read-until-close: finish right after HEAD (empty body) completes it. */
    p = new_parser(GW_HTTP_RESPONSE, &r);
    assert_int_equal(feed(p, "HTTP/1.1 200 OK\r\n\r\n", &used), GW_HTTP_HEAD);
    assert_true(p->head.body_until_close);
    assert_int_equal(gw_http_parser_finish(p), GW_HTTP_DONE);
    assert_int_equal(gw_http_parser_finish(p), GW_HTTP_NEED_MORE);
    /* After reset the parser works again (llhttp re-initialised). */
    gw_http_parser_reset(p);
    assert_int_equal(feed(p, "HTTP/1.1 204 No Content\r\n\r\n", &used), GW_HTTP_HEAD);
    assert_int_equal(gw_http_parser_execute(p, NULL, 0, &used), GW_HTTP_DONE);
    gw_http_parser_deinit(p);

    /* A bodiless message whose DONE is pending completes on finish. */
    p = new_parser(GW_HTTP_REQUEST, &r);
    assert_int_equal(feed(p, GET "\r\n", &used), GW_HTTP_HEAD);
    assert_int_equal(gw_http_parser_finish(p), GW_HTTP_DONE);
    gw_http_parser_deinit(p);

    /* Leading empty lines only: no message started. */
    p = new_parser(GW_HTTP_REQUEST, &r);
    assert_int_equal(feed(p, "\r\n", &used), GW_HTTP_NEED_MORE);
    assert_int_equal(gw_http_parser_finish(p), GW_HTTP_NEED_MORE);
    gw_http_parser_deinit(p);
}

static void test_pipelined_reset(void **state)
{
    (void)state;
    static struct run r;
    static const char two[] = "POST /first HTTP/1.1\r\nHost: one\r\nContent-Length: 3\r\n\r\nabc"
                              "GET /second HTTP/1.1\r\nHost: two\r\n\r\n";
    struct gw_http_parser *p = new_parser(GW_HTTP_REQUEST, &r);
    size_t len = sizeof(two) - 1, pos = 0, used;

    assert_int_equal(gw_http_parser_execute(p, two, len, &used), GW_HTTP_HEAD);
    size_t head1 = strlen("POST /first HTTP/1.1\r\nHost: one\r\nContent-Length: 3\r\n\r\n");
    assert_int_equal(used, head1);
    assert_int_equal(p->head_bytes, head1);
    assert_false(gw_http_parser_idle(p));
    assert_true(gw_slice_eq_nocase(p->head.target, "/first"));
    assert_false(gw_http_parser_done_pending(p)); /* a body follows */
    pos += used;

    assert_int_equal(gw_http_parser_execute(p, two + pos, len - pos, &used), GW_HTTP_DONE);
    assert_int_equal(used, 3);
    assert_int_equal(p->body_bytes, 3);
    assert_memory_equal(r.body, "abc", 3);
    pos += used;

    /* Paused: nothing more is consumed before reset. */
    assert_int_equal(gw_http_parser_execute(p, two + pos, len - pos, &used), GW_HTTP_DONE);
    assert_int_equal(used, 0);
    assert_true(gw_http_parser_idle(p));

    gw_http_parser_reset(p);
    assert_int_equal(p->storage_used, 0);
    assert_int_equal(p->body_bytes, 0);
    assert_int_equal(p->head.header_count, 0);
    assert_true(gw_http_parser_idle(p));

    assert_int_equal(gw_http_parser_execute(p, two + pos, len - pos, &used), GW_HTTP_HEAD);
    assert_int_equal(used, len - pos);
    assert_true(gw_slice_eq_nocase(p->head.target, "/second"));
    assert_true(gw_slice_eq_nocase(p->head.method_name, "GET"));
    assert_int_equal(p->head.method, HTTP_GET);
    assert_false(p->head.has_body);
    assert_true(gw_http_parser_done_pending(p));
    /* DONE with no bytes left to feed. */
    assert_int_equal(gw_http_parser_execute(p, NULL, 0, &used), GW_HTTP_DONE);
    assert_int_equal(used, 0);
    assert_false(gw_http_parser_done_pending(p));
    gw_http_parser_reset(p);

    /* A third message after reset, fed byte by byte. */
    static const char third[] = "DELETE /x HTTP/1.1\r\nHost: a\r\n\r\n";
    enum gw_http_result res = GW_HTTP_NEED_MORE;
    for (size_t i = 0; i < sizeof(third) - 1; i++) {
        res = gw_http_parser_execute(p, third + i, 1, &used);
        assert_int_equal(used, 1);
        if (i + 1 < sizeof(third) - 1)
            assert_int_equal(res, GW_HTTP_NEED_MORE);
    }
    assert_int_equal(res, GW_HTTP_HEAD);
    assert_int_equal(p->head.method, HTTP_DELETE);
    gw_http_parser_deinit(p);
    /* deinit is idempotent */
    gw_http_parser_deinit(p);
}

static void test_reset_after_error(void **state)
{
    (void)state;
    static struct run r;
    struct gw_http_parser *p = new_parser(GW_HTTP_REQUEST, &r);
    size_t used;

    assert_int_equal(feed(p, "GET / HTTP/1.1\nHost: a\r\n\r\n", &used), GW_HTTP_ERROR);
    assert_int_equal(p->error_status, 400);
    gw_http_parser_reset(p);
    assert_int_equal(p->error_status, 0);
    assert_null(p->error_detail);
    assert_int_equal(feed(p, GET "\r\n", &used), GW_HTTP_HEAD);
    gw_http_parser_deinit(p);

    /* Reset in the middle of a body (connection dropped): fresh state. */
    p = new_parser(GW_HTTP_REQUEST, &r);
    assert_int_equal(feed(p, PFX "Content-Length: 10\r\n\r\nabc", &used), GW_HTTP_HEAD);
    assert_int_equal(feed(p, "abc", &used), GW_HTTP_NEED_MORE);
    gw_http_parser_reset(p);
    assert_int_equal(feed(p, GET "\r\n", &used), GW_HTTP_HEAD);
    assert_true(gw_slice_eq_nocase(p->head.method_name, "GET"));
    gw_http_parser_deinit(p);
}

/* A parser reused for a new connection (per-worker spares) forgets the old
 * connection's Connection: close, which would otherwise fail the next parse. */
static void test_recycle_for_new_connection(void **state)
{
    (void)state;
    static struct run r;
    struct gw_http_parser *p = new_parser(GW_HTTP_REQUEST, &r);
    size_t used;
    assert_int_equal(feed(p, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", &used),
                     GW_HTTP_HEAD);
    assert_int_equal(feed(p, "", &used), GW_HTTP_DONE);
    gw_http_parser_recycle(p);
    assert_int_equal(feed(p, GET "\r\n", &used), GW_HTTP_HEAD);
    assert_true(p->head.keep_alive);
    assert_int_equal(feed(p, "", &used), GW_HTTP_DONE);
    /* recycled in the middle of a body too */
    gw_http_parser_recycle(p);
    assert_int_equal(feed(p, PFX "Content-Length: 10\r\n\r\nabc", &used), GW_HTTP_HEAD);
    gw_http_parser_recycle(p);
    assert_int_equal(feed(p, GET "\r\n", &used), GW_HTTP_HEAD);
    gw_http_parser_deinit(p);
}

static int failing_sink(void *ctx, const char *data, size_t len)
{
    (void)ctx;
    (void)data;
    (void)len;
    return -1;
}

static void test_body_callback_failure(void **state)
{
    (void)state;
    struct gw_http_parser p;
    size_t used;
    assert_int_equal(gw_http_parser_init(&p, GW_HTTP_RESPONSE, 1024, 0, failing_sink, NULL), 0);
    assert_int_equal(feed(&p, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", &used),
                     GW_HTTP_HEAD);
    assert_int_equal(feed(&p, "ok", &used), GW_HTTP_ERROR);
    assert_int_equal(p.error_status, 500);
    gw_http_parser_deinit(&p);

    /* A NULL sink drops bytes but still counts them. */
    assert_int_equal(gw_http_parser_init(&p, GW_HTTP_REQUEST, 1024, 0, NULL, NULL), 0);
    assert_int_equal(feed(&p, PFX "Content-Length: 2\r\n\r\n", &used), GW_HTTP_HEAD);
    assert_int_equal(feed(&p, "ok", &used), GW_HTTP_DONE);
    assert_int_equal(p.body_bytes, 2);
    gw_http_parser_deinit(&p);
}

static void test_init_args(void **state)
{
    (void)state;
    struct gw_http_parser p;
    assert_int_equal(gw_http_parser_init(&p, GW_HTTP_REQUEST, 0, 0, NULL, NULL), -EINVAL);
    gw_http_parser_deinit(&p);
    memset(&p, 0, sizeof(p));
    gw_http_parser_deinit(&p);
}

static void test_head_helpers(void **state)
{
    (void)state;
    static struct run r;
    struct gw_http_parser *p = new_parser(GW_HTTP_REQUEST, &r);
    size_t used;
    assert_int_equal(feed(p,
                          GET "Connection: keep-alive ,, Upgrade\r\nconnection: x-Custom\r\n"
                              "X-Empty:\r\nAccept: text/html;q=0.9, */*\r\n\r\n",
                          &used),
                     GW_HTTP_HEAD);
    const struct gw_http_head *h = &p->head;
    const struct gw_http_header *f = gw_http_head_find(h, "CONNECTION");
    assert_non_null(f);
    assert_true(gw_slice_eq_nocase(f->value, "keep-alive ,, Upgrade"));
    assert_null(gw_http_head_find(h, "connectio"));
    assert_null(gw_http_head_find(h, "Content-Length"));
    assert_true(gw_http_head_has_token(h, "connection", "upgrade"));
    assert_true(gw_http_head_has_token(h, "Connection", "KEEP-ALIVE"));
    assert_true(gw_http_head_has_token(h, "Connection", "x-custom")); /* second field */
    assert_false(gw_http_head_has_token(h, "Connection", "close"));
    assert_false(gw_http_head_has_token(h, "Connection", ""));
    assert_false(gw_http_head_has_token(h, "Connection", "keep"));
    assert_false(gw_http_head_has_token(h, "X-Empty", ""));
    assert_true(gw_http_head_has_token(h, "Accept", "*/*"));
    assert_false(gw_http_head_has_token(h, "Accept", "text/html"));
    assert_false(gw_http_head_has_token(h, "Missing", "x"));
    gw_http_parser_deinit(p);
}

static void test_keep_alive_and_connection_close(void **state)
{
    (void)state;
    static struct run r;
    struct gw_http_parser *p = new_parser(GW_HTTP_RESPONSE, &r);
    size_t used;
    /* A chunked response with Connection: close: not kept alive, and llhttp
     * refuses more data after it once resumed by reset. */
    assert_int_equal(feed(p,
                          "HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n"
                          "\r\n",
                          &used),
                     GW_HTTP_HEAD);
    assert_false(p->head.keep_alive);
    assert_int_equal(feed(p, "0\r\n\r\n", &used), GW_HTTP_DONE);
    gw_http_parser_reset(p);
    assert_int_equal(feed(p, "HTTP/1.1 200 OK\r\n\r\n", &used), GW_HTTP_ERROR);
    assert_int_equal(p->error_status, 502);
    gw_http_parser_deinit(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_requests),
        cmocka_unit_test(test_valid_responses),
        cmocka_unit_test(test_smuggling_requests),
        cmocka_unit_test(test_bad_responses),
        cmocka_unit_test(test_response_101_when_upgrading),
        cmocka_unit_test(test_trailers_kept),
        cmocka_unit_test(test_chunk_line_check),
        cmocka_unit_test(test_chunk_extensions_parsed),
        cmocka_unit_test(test_fuzz_regressions),
        cmocka_unit_test(test_head_limits),
        cmocka_unit_test(test_trailer_limits),
        cmocka_unit_test(test_body_limits),
        cmocka_unit_test(test_finish),
        cmocka_unit_test(test_pipelined_reset),
        cmocka_unit_test(test_reset_after_error),
        cmocka_unit_test(test_recycle_for_new_connection),
        cmocka_unit_test(test_body_callback_failure),
        cmocka_unit_test(test_init_args),
        cmocka_unit_test(test_head_helpers),
        cmocka_unit_test(test_keep_alive_and_connection_close),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
