/*
 * Responses the gateway writes itself (see gw/response.h): reason phrases,
 * the rate-limit header block of SPEC.md §5, RFC 9457 problem+json errors
 * built with jansson, plain bodies of the gateway's own endpoints, 100
 * Continue and the Date field. Pure functions, no I/O, no shared state.
 */
#include "gw/response.h"
#include "put.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *gw_response_reason(int status)
{
    /* RFC 9110 §15, plus 103 (RFC 8297), 428/429/431/511 (RFC 6585) and
     * 451 (RFC 7725). 306 and 418 are reserved as "(Unused)" by RFC 9110. */
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 103:
        return "Early Hints";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 203:
        return "Non-Authoritative Information";
    case 204:
        return "No Content";
    case 205:
        return "Reset Content";
    case 206:
        return "Partial Content";
    case 300:
        return "Multiple Choices";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 305:
        return "Use Proxy";
    case 306:
        return "Unused";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 402:
        return "Payment Required";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 407:
        return "Proxy Authentication Required";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 416:
        return "Range Not Satisfiable";
    case 417:
        return "Expectation Failed";
    case 418:
        return "Unused";
    case 421:
        return "Misdirected Request";
    case 422:
        return "Unprocessable Content";
    case 426:
        return "Upgrade Required";
    case 428:
        return "Precondition Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 451:
        return "Unavailable For Legal Reasons";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    case 511:
        return "Network Authentication Required";
    default:
        return "Unknown";
    }
}

int gw_response_write_ratelimit_headers(struct gw_buf *out, const struct gw_rl_info *rl,
                                        const char *policy, const char *policy_list,
                                        size_t list_len)
{
    /* RateLimit-Policy and RateLimit are structured-field lists (RFC 8941):
     * the policy name is an sf-string, q/w/r/t integer parameters. Written
     * by hand, not with printf: this runs on every proxied request. */
    static const char l1[] = "X-RateLimit-Limit: ", l2[] = "\r\nX-RateLimit-Remaining: ",
                      l3[] = "\r\nX-RateLimit-Reset: ", l4[] = "\r\nRateLimit-Policy: ",
                      l6[] = "\r\nRateLimit: \"", l6b[] = "\";r=", l7[] = ";t=", l8[] = "\r\n";
    size_t plen = strlen(policy);
    size_t bound = sizeof(l1) + sizeof(l2) + sizeof(l3) + sizeof(l4) + list_len + sizeof(l6) +
                   plen + sizeof(l6b) + sizeof(l7) + sizeof(l8) + 5 * 21;
    int rc = gw_buf_reserve(out, bound);
    if (rc)
        return rc;
    char *p = out->data + out->end;
    p = gw_put_i64(GW_PUT_LIT(p, l1), rl->limit);
    p = gw_put_i64(GW_PUT_LIT(p, l2), rl->remaining);
    p = gw_put_i64(GW_PUT_LIT(p, l3), rl->reset_epoch_s);
    p = gw_put(GW_PUT_LIT(p, l4), policy_list, list_len);
    p = gw_put(GW_PUT_LIT(p, l6), policy, plen);
    p = gw_put_i64(GW_PUT_LIT(p, l6b), rl->remaining);
    p = gw_put_i64(GW_PUT_LIT(p, l7), rl->reset_after_s);
    p = GW_PUT_LIT(p, l8);
    out->end = (size_t)(p - out->data);
    return 0;
}

/* Status line, representation and connection fields, then the body.
 * Field order: Content-Type, Content-Length, Cache-Control, Retry-After,
 * extra, Connection. */
static int write_complete(struct gw_buf *out, int status, const char *content_type,
                          const char *body, size_t body_len, int retry_after_s,
                          struct gw_slice extra, bool keep_alive, uint8_t http_minor,
                          bool head_only)
{
    if (!content_type)
        content_type = "application/octet-stream";
    const char *reason = gw_response_reason(status);
    size_t reason_len = strlen(reason), type_len = strlen(content_type);
    const char *conn = "";
    if (!keep_alive)
        conn = "Connection: close\r\n";
    else if (http_minor == 0)
        conn = "Connection: keep-alive\r\n";
    size_t conn_len = strlen(conn);
    size_t send_body = head_only ? 0 : body_len;
    /* Written by hand, not with printf: a 429 flood runs this per request.
     * 20 bytes bound each number. */
    size_t bound = sizeof("HTTP/1.1  \r\nContent-Type: \r\nContent-Length: \r\n"
                          "Cache-Control: no-store\r\nRetry-After: \r\n\r\n") +
                   3 * 20 + reason_len + type_len + extra.len + conn_len + send_body;
    int rc = gw_buf_reserve(out, bound);
    if (rc)
        return rc;
    char *p = out->data + out->end;
    p = gw_put_i64(GW_PUT_LIT(p, "HTTP/1.1 "), status);
    *p++ = ' ';
    p = gw_put(p, reason, reason_len);
    p = gw_put(GW_PUT_LIT(p, "\r\nContent-Type: "), content_type, type_len);
    p = gw_put_i64(GW_PUT_LIT(p, "\r\nContent-Length: "), (int64_t)body_len);
    p = GW_PUT_LIT(p, "\r\nCache-Control: no-store\r\n");
    if (retry_after_s > 0)
        p = GW_PUT_LIT(gw_put_i64(GW_PUT_LIT(p, "Retry-After: "), retry_after_s), "\r\n");
    p = gw_put(p, extra.ptr, extra.len);
    p = gw_put(p, conn, conn_len);
    p = GW_PUT_LIT(p, "\r\n");
    p = gw_put(p, body, send_body);
    out->end = (size_t)(p - out->data);
    return 0;
}

/* Problem bodies repeat (every 429 of a flood is the same text), so each
 * thread keeps the last few it rendered; a hit compares the inputs by value,
 * never by pointer, and skips jansson entirely. */
#define PROBLEM_CACHE_SLOTS 8
#define PROBLEM_CACHE_TEXT  256
#define PROBLEM_CACHE_BODY  1024

struct problem_cache_slot {
    int status; /* 0 = empty */
    char violated[PROBLEM_CACHE_TEXT];
    char type[PROBLEM_CACHE_TEXT];
    char detail[PROBLEM_CACHE_TEXT];
    char body[PROBLEM_CACHE_BODY];
    size_t body_len;
};

static _Thread_local struct problem_cache_slot problem_cache[PROBLEM_CACHE_SLOTS];
static _Thread_local unsigned problem_cache_next;

static struct problem_cache_slot *problem_cache_find(const struct gw_problem *pb, const char *type,
                                                     const char *detail)
{
    for (unsigned i = 0; i < PROBLEM_CACHE_SLOTS; i++) {
        struct problem_cache_slot *e = &problem_cache[i];
        if (e->status == pb->status &&
            strcmp(e->violated, pb->violated != NULL ? pb->violated : "") == 0 &&
            strcmp(e->type, type) == 0 && strcmp(e->detail, detail) == 0)
            return e;
    }
    return NULL;
}

static void problem_cache_put(const struct gw_problem *pb, const char *type, const char *detail,
                              const char *body, size_t len)
{
    const char *violated = pb->violated != NULL ? pb->violated : "";
    if (strlen(type) >= PROBLEM_CACHE_TEXT || strlen(detail) >= PROBLEM_CACHE_TEXT ||
        strlen(violated) >= PROBLEM_CACHE_TEXT || len > PROBLEM_CACHE_BODY)
        return; /* unusual sizes are simply rendered each time */
    struct problem_cache_slot *e = &problem_cache[problem_cache_next++ % PROBLEM_CACHE_SLOTS];
    e->status = pb->status;
    memcpy(e->violated, violated, strlen(violated) + 1);
    memcpy(e->type, type, strlen(type) + 1);
    memcpy(e->detail, detail, strlen(detail) + 1);
    memcpy(e->body, body, len);
    e->body_len = len;
}

int gw_response_write_problem(struct gw_buf *out, const struct gw_problem *pb,
                              struct gw_slice extra, bool keep_alive, uint8_t http_minor,
                              bool head_only)
{
    const char *title = gw_response_reason(pb->status);
    const char *type = pb->type ? pb->type : "about:blank";
    const char *detail = pb->detail ? pb->detail : title;
    const struct problem_cache_slot *hit = problem_cache_find(pb, type, detail);
    if (hit)
        return write_complete(out, pb->status, "application/problem+json", hit->body, hit->body_len,
                              pb->retry_after_s, extra, keep_alive, http_minor, head_only);

    json_t *obj = json_pack("{s:s, s:s, s:i, s:s}", "type", type, "title", title, "status",
                            pb->status, "detail", detail);
    if (!obj)
        return -EINVAL; /* type or detail not UTF-8, or out of memory */
    if (pb->violated != NULL) {
        /* Comma-separated policy names, [A-Za-z0-9_.-] each. */
        json_t *arr = json_array();
        for (const char *p = pb->violated; arr != NULL && *p != '\0';) {
            const char *end = strchr(p, ',');
            size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
            if (n > 0 && json_array_append_new(arr, json_stringn(p, n)) != 0) {
                json_decref(arr);
                arr = NULL;
            }
            p += n + (end != NULL);
        }
        if (arr == NULL || json_object_set_new(obj, "violated-policies", arr) != 0) {
            json_decref(obj);
            return -ENOMEM;
        }
    }

    /* Objects keep insertion order (jansson >= 2.8), so the keys come out as
     * type, title, status, detail, violated-policies. */
    char small[1024];
    char *body = small;
    size_t len = json_dumpb(obj, small, sizeof(small), JSON_COMPACT);
    if (len > sizeof(small)) {
        body = json_dumps(obj, JSON_COMPACT);
        len = body ? strlen(body) : 0;
    }
    json_decref(obj);
    if (!body || len == 0)
        return -ENOMEM;
    problem_cache_put(pb, type, detail, body, len);

    int rc = write_complete(out, pb->status, "application/problem+json", body, len,
                            pb->retry_after_s, extra, keep_alive, http_minor, head_only);
    if (body != small)
        free(body);
    return rc;
}

int gw_response_write_body(struct gw_buf *out, int status, const char *content_type,
                           const char *body, size_t body_len, bool keep_alive, uint8_t http_minor,
                           bool head_only)
{
    return write_complete(out, status, content_type, body, body_len, 0, (struct gw_slice){NULL, 0},
                          keep_alive, http_minor, head_only);
}

int gw_response_write_continue(struct gw_buf *out)
{
    static const char line[] = "HTTP/1.1 100 Continue\r\n\r\n";
    return gw_buf_append(out, line, sizeof(line) - 1);
}

int gw_response_write_date(struct gw_buf *out, int64_t epoch_s)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t t = (time_t)epoch_s;
    struct tm tm;
    if (!gmtime_r(&t, &tm) || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 0)
        return -EINVAL;
    /* IMF-fixdate by hand: strftime's %a/%b follow the locale. */
    return gw_buf_printf(out, "Date: %s, %02d %s %04d %02d:%02d:%02d GMT\r\n", days[tm.tm_wday],
                         tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                         tm.tm_sec);
}
