/*
 * Unit tests of src/response.c: reason phrases, the rate-limit header block,
 * problem+json responses (RFC 9457) and the gateway's own bodies, compared
 * byte for byte, including HTTP/1.0 keep-alive and HEAD variants.
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

#include "gw/response.h"

/* The header block of a single rate named "default" (SPEC.md §5). */
static int write_default(struct gw_buf *b, const struct gw_rl_info *rl)
{
    char list[128];
    int n = snprintf(list, sizeof(list), "\"default\";q=%lld;w=%lld", (long long)rl->limit,
                     (long long)rl->window_s);
    return gw_response_write_ratelimit_headers(b, rl, "default", list, (size_t)n);
}

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

static const struct gw_slice NO_EXTRA = {NULL, 0};

static void check_problem(const struct gw_problem *pb, struct gw_slice extra, bool keep_alive,
                          uint8_t minor, bool head_only, const char *expected)
{
    struct gw_buf b = {0};
    assert_int_equal(gw_response_write_problem(&b, pb, extra, keep_alive, minor, head_only), 0);
    assert_buf(&b, expected);
    gw_buf_release(&b);
}

/* ---- reason phrases ----------------------------------------------------- */

static void test_reason_phrases(void **state)
{
    (void)state;
    static const struct {
        int code;
        const char *reason;
    } rows[] = {
        {100, "Continue"},
        {101, "Switching Protocols"},
        {200, "OK"},
        {201, "Created"},
        {202, "Accepted"},
        {203, "Non-Authoritative Information"},
        {204, "No Content"},
        {205, "Reset Content"},
        {206, "Partial Content"},
        {300, "Multiple Choices"},
        {301, "Moved Permanently"},
        {302, "Found"},
        {303, "See Other"},
        {304, "Not Modified"},
        {305, "Use Proxy"},
        {307, "Temporary Redirect"},
        {308, "Permanent Redirect"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {402, "Payment Required"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {406, "Not Acceptable"},
        {407, "Proxy Authentication Required"},
        {408, "Request Timeout"},
        {409, "Conflict"},
        {410, "Gone"},
        {411, "Length Required"},
        {412, "Precondition Failed"},
        {413, "Content Too Large"},
        {414, "URI Too Long"},
        {415, "Unsupported Media Type"},
        {416, "Range Not Satisfiable"},
        {417, "Expectation Failed"},
        {421, "Misdirected Request"},
        {422, "Unprocessable Content"},
        {426, "Upgrade Required"},
        {429, "Too Many Requests"},
        {431, "Request Header Fields Too Large"},
        {500, "Internal Server Error"},
        {501, "Not Implemented"},
        {502, "Bad Gateway"},
        {503, "Service Unavailable"},
        {504, "Gateway Timeout"},
        {505, "HTTP Version Not Supported"},
        {0, "Unknown"},
        {299, "Unknown"},
        {599, "Unknown"},
        {-1, "Unknown"},
    };
    for (size_t i = 0; i < GW_ARRAY_LEN(rows); i++)
        assert_string_equal(gw_response_reason(rows[i].code), rows[i].reason);
}

/* ---- rate-limit headers ------------------------------------------------- */

static void test_ratelimit_headers(void **state)
{
    (void)state;
    struct gw_buf b = {0};
    struct gw_rl_info rl = {.limit = 5,
                            .remaining = 2,
                            .reset_epoch_s = 1700000040,
                            .reset_after_s = 37,
                            .window_s = 60};
    assert_int_equal(write_default(&b, &rl), 0);
    assert_buf(&b, "X-RateLimit-Limit: 5\r\n"
                   "X-RateLimit-Remaining: 2\r\n"
                   "X-RateLimit-Reset: 1700000040\r\n"
                   "RateLimit-Policy: \"default\";q=5;w=60\r\n"
                   "RateLimit: \"default\";r=2;t=37\r\n");

    /* Appends after what is there; large values are not truncated. */
    rl = (struct gw_rl_info){.limit = 1000000000000,
                             .remaining = 0,
                             .reset_epoch_s = 4102444800,
                             .reset_after_s = 1,
                             .window_s = 86400};
    gw_buf_clear(&b);
    assert_int_equal(gw_buf_append_str(&b, "A: b\r\n"), 0);
    assert_int_equal(write_default(&b, &rl), 0);
    assert_buf(&b, "A: b\r\n"
                   "X-RateLimit-Limit: 1000000000000\r\n"
                   "X-RateLimit-Remaining: 0\r\n"
                   "X-RateLimit-Reset: 4102444800\r\n"
                   "RateLimit-Policy: \"default\";q=1000000000000;w=86400\r\n"
                   "RateLimit: \"default\";r=0;t=1\r\n");

    /* Digit-pair edges and the int64 extremes print like printf would. */
    static const int64_t values[] = {0,   9,    10,         99,        100,       101,
                                     999, 1000, 1234567890, INT64_MAX, INT64_MIN, -7};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        rl = (struct gw_rl_info){.limit = values[i],
                                 .remaining = values[i],
                                 .reset_epoch_s = values[i],
                                 .reset_after_s = values[i],
                                 .window_s = values[i]};
        gw_buf_clear(&b);
        assert_int_equal(write_default(&b, &rl), 0);
        char want[512];
        long long v = (long long)values[i];
        snprintf(want, sizeof(want),
                 "X-RateLimit-Limit: %lld\r\nX-RateLimit-Remaining: %lld\r\n"
                 "X-RateLimit-Reset: %lld\r\nRateLimit-Policy: \"default\";q=%lld;w=%lld\r\n"
                 "RateLimit: \"default\";r=%lld;t=%lld\r\n",
                 v, v, v, v, v, v, v);
        assert_buf(&b, want);
    }
    gw_buf_release(&b);
}

/* ---- problem+json ------------------------------------------------------- */

#define B400                                                                                       \
    "{\"type\":\"about:blank\",\"title\":\"Bad Request\",\"status\":400,"                          \
    "\"detail\":\"Malformed request.\"}"

static void test_problem_400_variants(void **state)
{
    (void)state;
    struct gw_problem pb = {.status = 400, .detail = "Malformed request."};
    /* Closing (the usual answer to a bad request). */
    check_problem(&pb, NO_EXTRA, false, 1, false,
                  "HTTP/1.1 400 Bad Request\r\n"
                  "Content-Type: application/problem+json\r\n"
                  "Content-Length: 87\r\n"
                  "Cache-Control: no-store\r\n"
                  "Connection: close\r\n"
                  "\r\n" B400);
    /* HTTP/1.1 kept open: no Connection field. */
    check_problem(&pb, NO_EXTRA, true, 1, false,
                  "HTTP/1.1 400 Bad Request\r\n"
                  "Content-Type: application/problem+json\r\n"
                  "Content-Length: 87\r\n"
                  "Cache-Control: no-store\r\n"
                  "\r\n" B400);
    /* HTTP/1.0 kept open: says keep-alive. */
    check_problem(&pb, NO_EXTRA, true, 0, false,
                  "HTTP/1.1 400 Bad Request\r\n"
                  "Content-Type: application/problem+json\r\n"
                  "Content-Length: 87\r\n"
                  "Cache-Control: no-store\r\n"
                  "Connection: keep-alive\r\n"
                  "\r\n" B400);
    /* HTTP/1.0 closing. */
    check_problem(&pb, NO_EXTRA, false, 0, false,
                  "HTTP/1.1 400 Bad Request\r\n"
                  "Content-Type: application/problem+json\r\n"
                  "Content-Length: 87\r\n"
                  "Cache-Control: no-store\r\n"
                  "Connection: close\r\n"
                  "\r\n" B400);
}

static void test_problem_413(void **state)
{
    (void)state;
    struct gw_problem pb = {.status = 413, .detail = "Request body exceeds the limit."};
    check_problem(&pb, NO_EXTRA, false, 1, false,
                  "HTTP/1.1 413 Content Too Large\r\n"
                  "Content-Type: application/problem+json\r\n"
                  "Content-Length: 106\r\n"
                  "Cache-Control: no-store\r\n"
                  "Connection: close\r\n"
                  "\r\n"
                  "{\"type\":\"about:blank\",\"title\":\"Content Too Large\",\"status\":413,"
                  "\"detail\":\"Request body exceeds the limit.\"}");
}

#define B429                                                                                       \
    "{\"type\":\"https://iana.org/assignments/http-problem-types#quota-exceeded\","                \
    "\"title\":\"Too Many Requests\",\"status\":429,"                                              \
    "\"detail\":\"Too many requests; retry after the window resets.\","                            \
    "\"violated-policies\":[\"default\"]}"

static void test_problem_429_with_ratelimit(void **state)
{
    (void)state;
    struct gw_buf extra = {0};
    struct gw_rl_info rl = {.limit = 5,
                            .remaining = 0,
                            .reset_epoch_s = 1700000040,
                            .reset_after_s = 17,
                            .window_s = 60};
    assert_int_equal(write_default(&extra, &rl), 0);
    struct gw_slice ex = {gw_buf_head(&extra), gw_buf_len(&extra)};
    struct gw_problem pb = {.status = 429,
                            .type = GW_PROBLEM_QUOTA_EXCEEDED,
                            .detail = "Too many requests; retry after the window resets.",
                            .retry_after_s = 17,
                            .violated = "default"};
    check_problem(&pb, ex, true, 1, false,
                  "HTTP/1.1 429 Too Many Requests\r\n"
                  "Content-Type: application/problem+json\r\n"
                  "Content-Length: 207\r\n"
                  "Cache-Control: no-store\r\n"
                  "Retry-After: 17\r\n"
                  "X-RateLimit-Limit: 5\r\n"
                  "X-RateLimit-Remaining: 0\r\n"
                  "X-RateLimit-Reset: 1700000040\r\n"
                  "RateLimit-Policy: \"default\";q=5;w=60\r\n"
                  "RateLimit: \"default\";r=0;t=17\r\n"
                  "\r\n" B429);
    /* HTTP/1.0 kept open. */
    check_problem(&pb, ex, true, 0, false,
                  "HTTP/1.1 429 Too Many Requests\r\n"
                  "Content-Type: application/problem+json\r\n"
                  "Content-Length: 207\r\n"
                  "Cache-Control: no-store\r\n"
                  "Retry-After: 17\r\n"
                  "X-RateLimit-Limit: 5\r\n"
                  "X-RateLimit-Remaining: 0\r\n"
                  "X-RateLimit-Reset: 1700000040\r\n"
                  "RateLimit-Policy: \"default\";q=5;w=60\r\n"
                  "RateLimit: \"default\";r=0;t=17\r\n"
                  "Connection: keep-alive\r\n"
                  "\r\n" B429);
    /* RATE_LIMIT_HEADERS=off: Retry-After stays. HEAD: length, no body. */
    check_problem(&pb, NO_EXTRA, true, 1, true,
                  "HTTP/1.1 429 Too Many Requests\r\n"
                  "Content-Type: application/problem+json\r\n"
                  "Content-Length: 207\r\n"
                  "Cache-Control: no-store\r\n"
                  "Retry-After: 17\r\n"
                  "\r\n");
    gw_buf_release(&extra);
}

static void test_problem_503_reduced_capacity(void **state)
{
    (void)state;
    struct gw_problem pb = {.status = 503,
                            .type = GW_PROBLEM_REDUCED_CAPACITY,
                            .detail = "The gateway is at capacity.",
                            .retry_after_s = 1};
    check_problem(&pb, NO_EXTRA, true, 1, false,
                  "HTTP/1.1 503 Service Unavailable\r\n"
                  "Content-Type: application/problem+json\r\n"
                  "Content-Length: 167\r\n"
                  "Cache-Control: no-store\r\n"
                  "Retry-After: 1\r\n"
                  "\r\n"
                  "{\"type\":\"https://iana.org/assignments/http-problem-types#temporary-reduced-"
                  "capacity\",\"title\":\"Service Unavailable\",\"status\":503,"
                  "\"detail\":\"The gateway is at capacity.\"}");
}

static void test_problem_502_504(void **state)
{
    (void)state;
    struct gw_problem pb = {.status = 502, .detail = "The upstream could not be reached."};
    check_problem(&pb, NO_EXTRA, true, 1, false,
                  "HTTP/1.1 502 Bad Gateway\r\n"
                  "Content-Type: application/problem+json\r\n"
                  "Content-Length: 103\r\n"
                  "Cache-Control: no-store\r\n"
                  "\r\n"
                  "{\"type\":\"about:blank\",\"title\":\"Bad Gateway\",\"status\":502,"
                  "\"detail\":\"The upstream could not be reached.\"}");
    pb = (struct gw_problem){.status = 504, .detail = "The upstream did not answer in time."};
    check_problem(&pb, NO_EXTRA, false, 0, false,
                  "HTTP/1.1 504 Gateway Timeout\r\n"
                  "Content-Type: application/problem+json\r\n"
                  "Content-Length: 109\r\n"
                  "Cache-Control: no-store\r\n"
                  "Connection: close\r\n"
                  "\r\n"
                  "{\"type\":\"about:blank\",\"title\":\"Gateway Timeout\",\"status\":504,"
                  "\"detail\":\"The upstream did not answer in time.\"}");
}

static void test_problem_escaping_and_defaults(void **state)
{
    (void)state;
    /* JSON escaping is jansson's: quotes and backslashes escaped, UTF-8 kept. */
    struct gw_problem pb = {.status = 408, .detail = "a \"quoted\" \\ caf\xc3\xa9"};
    check_problem(&pb, NO_EXTRA, false, 1, false,
                  "HTTP/1.1 408 Request Timeout\r\n"
                  "Content-Type: application/problem+json\r\n"
                  "Content-Length: 94\r\n"
                  "Cache-Control: no-store\r\n"
                  "Connection: close\r\n"
                  "\r\n"
                  "{\"type\":\"about:blank\",\"title\":\"Request Timeout\",\"status\":408,"
                  "\"detail\":\"a \\\"quoted\\\" \\\\ caf\xc3\xa9\"}");
    /* detail NULL repeats the title; retry_after_s 0 sends no Retry-After. */
    pb = (struct gw_problem){.status = 431};
    check_problem(&pb, NO_EXTRA, false, 1, false,
                  "HTTP/1.1 431 Request Header Fields Too Large\r\n"
                  "Content-Type: application/problem+json\r\n"
                  "Content-Length: 120\r\n"
                  "Cache-Control: no-store\r\n"
                  "Connection: close\r\n"
                  "\r\n"
                  "{\"type\":\"about:blank\",\"title\":\"Request Header Fields Too Large\","
                  "\"status\":431,\"detail\":\"Request Header Fields Too Large\"}");
    /* Invalid UTF-8 in detail is refused, and nothing is written. */
    struct gw_buf b = {0};
    pb = (struct gw_problem){.status = 400, .detail = "bad \xff"};
    assert_int_equal(gw_response_write_problem(&b, &pb, NO_EXTRA, false, 1, false), -EINVAL);
    assert_int_equal(gw_buf_len(&b), 0);
    gw_buf_release(&b);
}

static void test_problem_long_detail(void **state)
{
    (void)state;
    /* Bodies past the 1 KiB stack buffer take the heap path. */
    char detail[3001];
    memset(detail, 'z', 3000);
    detail[3000] = '\0';
    struct gw_problem pb = {.status = 400, .detail = detail};
    struct gw_buf b = {0};
    assert_int_equal(gw_response_write_problem(&b, &pb, NO_EXTRA, true, 1, false), 0);
    static const char prefix[] = "{\"type\":\"about:blank\",\"title\":\"Bad Request\","
                                 "\"status\":400,\"detail\":\"";
    size_t body_len = sizeof(prefix) - 1 + 3000 + 2;
    char head[256];
    snprintf(head, sizeof(head),
             "HTTP/1.1 400 Bad Request\r\nContent-Type: application/problem+json\r\n"
             "Content-Length: %zu\r\nCache-Control: no-store\r\n\r\n",
             body_len);
    size_t head_len = strlen(head);
    assert_int_equal(gw_buf_len(&b), head_len + body_len);
    assert_memory_equal(gw_buf_head(&b), head, head_len);
    assert_memory_equal(gw_buf_head(&b) + head_len, prefix, sizeof(prefix) - 1);
    assert_memory_equal(gw_buf_head(&b) + head_len + sizeof(prefix) - 1, detail, 3000);
    assert_memory_equal(gw_buf_head(&b) + head_len + body_len - 2, "\"}", 2);
    gw_buf_release(&b);
}

/* ---- own bodies, 100 Continue, Date ------------------------------------- */

static void test_write_body(void **state)
{
    (void)state;
    struct gw_buf b = {0};
    static const char body[] = "{\"status\":\"ok\"}";
    assert_int_equal(
        gw_response_write_body(&b, 200, "application/json", body, sizeof(body) - 1, true, 1, false),
        0);
    assert_buf(&b, "HTTP/1.1 200 OK\r\n"
                   "Content-Type: application/json\r\n"
                   "Content-Length: 15\r\n"
                   "Cache-Control: no-store\r\n"
                   "\r\n"
                   "{\"status\":\"ok\"}");
    gw_buf_clear(&b);

    assert_int_equal(
        gw_response_write_body(&b, 503, "application/json", body, sizeof(body) - 1, true, 0, true),
        0);
    assert_buf(&b, "HTTP/1.1 503 Service Unavailable\r\n"
                   "Content-Type: application/json\r\n"
                   "Content-Length: 15\r\n"
                   "Cache-Control: no-store\r\n"
                   "Connection: keep-alive\r\n"
                   "\r\n");
    gw_buf_clear(&b);

    assert_int_equal(
        gw_response_write_body(&b, 200, "text/plain; version=0.0.4", "", 0, false, 1, false), 0);
    assert_buf(&b, "HTTP/1.1 200 OK\r\n"
                   "Content-Type: text/plain; version=0.0.4\r\n"
                   "Content-Length: 0\r\n"
                   "Cache-Control: no-store\r\n"
                   "Connection: close\r\n"
                   "\r\n");
    gw_buf_release(&b);
}

static void test_continue(void **state)
{
    (void)state;
    struct gw_buf b = {0};
    assert_int_equal(gw_response_write_continue(&b), 0);
    assert_buf(&b, "HTTP/1.1 100 Continue\r\n\r\n");
    gw_buf_release(&b);
}

static void test_date(void **state)
{
    (void)state;
    struct gw_buf b = {0};
    assert_int_equal(gw_response_write_date(&b, 784111777), 0);
    assert_buf(&b, "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n");
    gw_buf_clear(&b);
    assert_int_equal(gw_response_write_date(&b, 0), 0);
    assert_buf(&b, "Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n");
    gw_buf_clear(&b);
    assert_int_equal(gw_response_write_date(&b, 1709164800), 0); /* leap day */
    assert_buf(&b, "Date: Thu, 29 Feb 2024 00:00:00 GMT\r\n");
    gw_buf_release(&b);
}

/* The per-thread cache of rendered problem bodies matches inputs by value:
 * the same text in another buffer hits, changed text in the same buffer
 * does not. */
static void test_problem_cache_by_value(void **state)
{
    (void)state;
    char detail[64];
    struct gw_problem pb = {.status = 429, .detail = detail, .violated = "default"};
    struct gw_buf a = {0}, b = {0}, c = {0};
    snprintf(detail, sizeof(detail), "first text");
    assert_int_equal(gw_response_write_problem(&a, &pb, (struct gw_slice){NULL, 0}, true, 1, false),
                     0);
    assert_int_equal(gw_response_write_problem(&b, &pb, (struct gw_slice){NULL, 0}, true, 1, false),
                     0);
    assert_int_equal(gw_buf_len(&a), gw_buf_len(&b));
    assert_memory_equal(gw_buf_head(&a), gw_buf_head(&b), gw_buf_len(&a));
    snprintf(detail, sizeof(detail), "other text!");
    assert_int_equal(gw_response_write_problem(&c, &pb, (struct gw_slice){NULL, 0}, true, 1, false),
                     0);
    c.data[c.end] = '\0';
    assert_non_null(strstr(gw_buf_head(&c), "\"detail\":\"other text!\""));
    assert_null(strstr(gw_buf_head(&c), "first text"));
    pb.violated = NULL;
    gw_buf_clear(&c);
    assert_int_equal(gw_response_write_problem(&c, &pb, (struct gw_slice){NULL, 0}, true, 1, false),
                     0);
    c.data[c.end] = '\0';
    assert_null(strstr(gw_buf_head(&c), "violated-policies"));
    gw_buf_release(&a);
    gw_buf_release(&b);
    gw_buf_release(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reason_phrases),
        cmocka_unit_test(test_ratelimit_headers),
        cmocka_unit_test(test_problem_400_variants),
        cmocka_unit_test(test_problem_413),
        cmocka_unit_test(test_problem_429_with_ratelimit),
        cmocka_unit_test(test_problem_503_reduced_capacity),
        cmocka_unit_test(test_problem_502_504),
        cmocka_unit_test(test_problem_escaping_and_defaults),
        cmocka_unit_test(test_problem_long_detail),
        cmocka_unit_test(test_write_body),
        cmocka_unit_test(test_continue),
        cmocka_unit_test(test_date),
        cmocka_unit_test(test_problem_cache_by_value),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
