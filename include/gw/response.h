/*
 * Responses the gateway writes itself: problem+json errors (RFC 9457), the
 * rate-limit header block (SPEC.md §5: X-RateLimit-*, IETF
 * draft-ietf-httpapi-ratelimit-headers-11 RateLimit/RateLimit-Policy) and
 * JSON or text bodies of the gateway's own endpoints. No I/O.
 * Thread-safe, though not stateless: each thread keeps its own small cache
 * of rendered problem+json bodies (_Thread_local, 8 entries, matched by the
 * value of status, type, detail and violated), so threads never
 * share it and a hit returns exactly the bytes a fresh rendering would.
 */
#ifndef GW_RESPONSE_H
#define GW_RESPONSE_H

#include "gw/buf.h"
#include "gw/common.h"

/* Problem type URIs of SPEC.md §5 and §6. */
#define GW_PROBLEM_QUOTA_EXCEEDED "https://iana.org/assignments/http-problem-types#quota-exceeded"
#define GW_PROBLEM_REDUCED_CAPACITY                                                                \
    "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity"

/* Reason phrase of a status code ("Too Many Requests"): RFC 9110 §15 plus
 * 103, 428, 429, 431, 451, 511; "Unknown" for any other. Static storage,
 * never NULL, thread-safe. */
const char *gw_response_reason(int status);

/* The rate-limit state a response reports. Times in Unix seconds / seconds. */
struct gw_rl_info {
    int64_t limit;         /* RATE_LIMIT_REQUESTS */
    int64_t remaining;     /* max(0, limit - n); 0 in dry run when over */
    int64_t reset_epoch_s; /* Unix time of the window end */
    int64_t reset_after_s; /* seconds to window end, >= 1 */
    int64_t window_s;      /* RATE_LIMIT_WINDOW_SECONDS */
};

/* Appends the five rate-limit header lines, each ending in CRLF
 * (draft-ietf-httpapi-ratelimit-headers-11 and GitHub's X- fields):
 * X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset of rl,
 * RateLimit-Policy: <policy_list> (list_len bytes, the rendered sf-list,
 * e.g. "login-1m";q=5;w=60, "login-1h";q=20;w=3600),
 * RateLimit: "<policy>";r=<remaining>;t=<reset_after>. policy is a name
 * of [A-Za-z0-9_.-] (no escaping needed). Pointers are read during the call
 * only. 0 or -ENOMEM. */
GW_MUSTCHECK int gw_response_write_ratelimit_headers(struct gw_buf *out,
                                                     const struct gw_rl_info *rl,
                                                     const char *policy, const char *policy_list,
                                                     size_t list_len);

struct gw_problem {
    int status;           /* 400, 408, 413, 429, 431, 502, 503, 504 */
    const char *type;     /* problem type URI, NULL = "about:blank" */
    const char *detail;   /* what happened, for humans, no internals */
    int retry_after_s;    /* > 0 adds Retry-After (RFC 9110 §10.2.3), 0 none */
    const char *violated; /* 429: comma-separated policy names for the body's
                             "violated-policies" array; NULL = no such member */
};

/* Appends a complete response (RFC 9457):
 *
 *   HTTP/1.1 <status> <reason>
 *   Content-Type: application/problem+json
 *   Content-Length: <body bytes>
 *   Cache-Control: no-store
 *   Retry-After: <retry_after_s>            (when > 0, RFC 9110 §10.2.3)
 *   <extra lines, may be empty>
 *   Connection: close                       (when !keep_alive)
 *   Connection: keep-alive                  (kept HTTP/1.0 client, http_minor 0)
 *
 * and the compact JSON body {"type","title","status","detail"
 * [,"violated-policies":["default"]]} built with jansson, in that key order;
 * type NULL is "about:blank", title is the reason phrase, detail NULL
 * repeats the title. Cache-Control: no-store is sent on every problem: these
 * answers describe a moment (limits, capacity) and must never be replayed by
 * a cache. head_only (HEAD request) omits the body but keeps its length.
 * Returns 0, -ENOMEM, or -EINVAL when type/detail is not UTF-8. */
GW_MUSTCHECK int gw_response_write_problem(struct gw_buf *out, const struct gw_problem *pb,
                                           struct gw_slice extra, bool keep_alive,
                                           uint8_t http_minor, bool head_only);

/* Appends a complete response with the given content type (NULL =
 * application/octet-stream) and body (copied, body_len bytes): the same
 * fields and connection rules as gw_response_write_problem, without
 * Retry-After and extra. Returns 0, -ENOMEM, or -EINVAL for a content type
 * longer than ~300 bytes. */
GW_MUSTCHECK int gw_response_write_body(struct gw_buf *out, int status, const char *content_type,
                                        const char *body, size_t body_len, bool keep_alive,
                                        uint8_t http_minor, bool head_only);

/* Appends "HTTP/1.1 100 Continue\r\n\r\n" (RFC 9110 §10.1.1). 0 or -ENOMEM. */
GW_MUSTCHECK int gw_response_write_continue(struct gw_buf *out);

/* Appends "Date: <IMF-fixdate>\r\n" for epoch_s Unix seconds, e.g.
 * "Date: Sun, 06 Nov 1994 08:49:37 GMT" (RFC 9110 §5.6.7, §6.6.1), for the
 * extra lines of the gateway's own responses. Locale-independent.
 * Returns 0, -ENOMEM, or -EINVAL for a year outside 0..9999. */
GW_MUSTCHECK int gw_response_write_date(struct gw_buf *out, int64_t epoch_s);

#endif
