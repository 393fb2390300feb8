/*
 * The admin endpoints of SPEC.md §11 (see admin_api.h): routing, the bearer
 * check, the rules endpoints (read, validate, replace: locally or through
 * Redis, gw/rules_sync.h) and the inspect/unblock of one client
 * (gw_ratelimit_peek / gw_ratelimit_forget on the worker's limiter handle).
 */
#include "admin_api.h"

#include "gw/log.h"
#include "gw/response.h"
#include "gw/rules_sync.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define RULES_PATH     "/rules"
#define VALIDATE_PATH  "/rules/validate"
#define RATELIMIT_PATH "/ratelimit"
#define QUERY_MAX      1024 /* longest limit name or client key taken from a query */

/* ---- routing and authentication --------------------------------------- */

static struct gw_slice path_of(struct gw_slice target)
{
    const char *q = memchr(target.ptr, '?', target.len);
    return (struct gw_slice){target.ptr, q ? (size_t)(q - target.ptr) : target.len};
}

static bool path_is(struct gw_slice path, const char *want)
{
    size_t n = strlen(want);
    return path.len == n && memcmp(path.ptr, want, n) == 0;
}

static bool is_get(int method)
{
    return method == HTTP_GET || method == HTTP_HEAD;
}

enum gw_admin_route gw_admin_api_route(const struct gw_config *cfg, int method,
                                       struct gw_slice target, const char **allow)
{
    struct gw_slice path = path_of(target);
    const char *ok_methods = NULL;
    enum gw_admin_route r = GW_ADMIN_ROUTE_NOT_FOUND;
    if (path_is(path, cfg->health_path) || path_is(path, cfg->stats_path) ||
        path_is(path, cfg->metrics_path)) {
        ok_methods = "GET, HEAD";
        if (is_get(method))
            r = path_is(path, cfg->health_path)  ? GW_ADMIN_ROUTE_HEALTH
                : path_is(path, cfg->stats_path) ? GW_ADMIN_ROUTE_STATS
                                                 : GW_ADMIN_ROUTE_METRICS;
    } else if (path_is(path, RULES_PATH)) {
        ok_methods = "GET, HEAD, PUT";
        if (is_get(method))
            r = GW_ADMIN_ROUTE_RULES_GET;
        else if (method == HTTP_PUT)
            r = GW_ADMIN_ROUTE_RULES_PUT;
    } else if (path_is(path, VALIDATE_PATH)) {
        ok_methods = "POST";
        if (method == HTTP_POST)
            r = GW_ADMIN_ROUTE_RULES_VALIDATE;
    } else if (path_is(path, RATELIMIT_PATH)) {
        ok_methods = "GET, HEAD, DELETE";
        if (is_get(method))
            r = GW_ADMIN_ROUTE_RATELIMIT_GET;
        else if (method == HTTP_DELETE)
            r = GW_ADMIN_ROUTE_RATELIMIT_DELETE;
    } else {
        return GW_ADMIN_ROUTE_NOT_FOUND;
    }
    if (r == GW_ADMIN_ROUTE_NOT_FOUND) {
        if (allow != NULL)
            *allow = ok_methods;
        return GW_ADMIN_ROUTE_BAD_METHOD;
    }
    return r;
}

bool gw_admin_api_route_has_body(enum gw_admin_route r)
{
    return r == GW_ADMIN_ROUTE_RULES_PUT || r == GW_ADMIN_ROUTE_RULES_VALIDATE;
}

bool gw_admin_api_token_ok(const char *token, struct gw_slice authorization)
{
    if (token == NULL || authorization.ptr == NULL || authorization.len < 7 ||
        strncasecmp(authorization.ptr, "Bearer ", 7) != 0)
        return false;
    const char *cred = authorization.ptr + 7;
    size_t n = authorization.len - 7;
    while (n > 0 && *cred == ' ') {
        cred++;
        n--;
    }
    size_t tlen = strlen(token);
    /* Constant time over max(n, tlen) bytes: both sides are padded into
     * buffers of that size, so a shorter guess takes no less time than a
     * right-length one, and no byte position shows. */
    size_t m = GW_MAX(n, tlen);
    if (m == 0 || m > 8192)
        return false;
    unsigned char *a = calloc(1, m), *b = calloc(1, m);
    bool ok = false;
    if (a != NULL && b != NULL) {
        memcpy(a, cred, n);
        memcpy(b, token, tlen);
        ok = (CRYPTO_memcmp(a, b, m) == 0) & (n == tlen);
    }
    free(a);
    free(b);
    return ok;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int gw_admin_api_query(struct gw_slice target, const char *name, char *out, size_t cap)
{
    const char *q = memchr(target.ptr, '?', target.len);
    if (q == NULL)
        return -ENOENT;
    const char *p = q + 1, *end = target.ptr + target.len;
    size_t nlen = strlen(name);
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        if (eq != NULL && (size_t)(eq - p) == nlen && memcmp(p, name, nlen) == 0) {
            size_t n = 0;
            for (const char *v = eq + 1; v < pe; v++) {
                char ch = *v;
                if (ch == '%') {
                    int hi = v + 2 < pe ? hex_digit(v[1]) : -1;
                    int lo = hi >= 0 ? hex_digit(v[2]) : -1;
                    if (lo < 0)
                        return -EINVAL;
                    ch = (char)(hi * 16 + lo);
                    v += 2;
                }
                if (ch == '\0')
                    return -EINVAL;
                if (n + 1 >= cap)
                    return -ENOSPC;
                out[n++] = ch;
            }
            out[n] = '\0';
            return (int)n;
        }
        p = pe + 1;
    }
    return -ENOENT;
}

/* ---- writing answers -------------------------------------------------- */

static int write_answer(struct gw_buf *out, int status, const char *ctype, const char *body,
                        size_t len, const char *extra, bool keep_alive, uint8_t minor,
                        bool head_only)
{
    int rc = gw_buf_printf(out,
                           "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                           "Cache-Control: no-store\r\n%s%s\r\n",
                           status, gw_response_reason(status), ctype, len, extra ? extra : "",
                           !keep_alive  ? "Connection: close\r\n"
                           : minor == 0 ? "Connection: keep-alive\r\n"
                                        : "");
    if (rc == 0 && !head_only)
        rc = gw_buf_append(out, body, len);
    return rc != 0 ? -ENOMEM : 0;
}

static int write_json(struct gw_buf *out, int status, json_t *o, bool keep_alive, uint8_t minor,
                      bool head_only)
{
    if (o == NULL)
        return -ENOMEM;
    char *body = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (body == NULL)
        return -ENOMEM;
    size_t len = strlen(body);
    body = realloc(body, len + 2); /* a trailing newline, for curl */
    if (body == NULL)
        return -ENOMEM;
    body[len++] = '\n';
    int rc = write_answer(out, status, "application/json", body, len, NULL, keep_alive, minor,
                          head_only);
    free(body);
    return rc;
}

int gw_admin_api_problem(struct gw_buf *out, int status, const char *detail, const char *errors,
                         size_t errors_len, const char *extra, bool keep_alive, uint8_t http_minor,
                         bool head_only)
{
    json_t *o = json_pack("{s:s, s:s, s:i, s:s}", "type", "about:blank", "title",
                          gw_response_reason(status), "status", status, "detail", detail);
    if (o == NULL)
        return -ENOMEM;
    if (errors != NULL) {
        json_t *arr = json_array();
        for (size_t i = 0; arr != NULL && i < errors_len;) {
            const char *nl = memchr(errors + i, '\n', errors_len - i);
            size_t n = nl ? (size_t)(nl - (errors + i)) : errors_len - i;
            if (n > 0)
                json_array_append_new(arr, json_stringn(errors + i, n));
            i += n + 1;
        }
        json_object_set_new(o, "errors", arr);
    }
    char *body = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (body == NULL)
        return -ENOMEM;
    int rc = write_answer(out, status, "application/problem+json", body, strlen(body), extra,
                          keep_alive, http_minor, head_only);
    free(body);
    return rc;
}

/* ---- rules -------------------------------------------------------------- */

/* {"version", "source", "rules": {...}} of r (rules parsed back from the
 * normalised text, which is JSON by construction). */
static json_t *rules_json(const struct gw_rules *r, bool with_source)
{
    json_t *rules = json_loads(r->normalised, 0, NULL);
    if (rules == NULL)
        return NULL;
    json_t *o = json_object();
    if (o == NULL) {
        json_decref(rules);
        return NULL;
    }
    json_object_set_new(o, "version", json_string(r->version));
    if (with_source)
        json_object_set_new(o, "source", json_string(gw_rules_source_name(r->source)));
    json_object_set_new(o, "limits", json_integer((json_int_t)r->limit_count));
    json_object_set_new(o, "rules", rules);
    return o;
}

static const struct gw_http_header *find(const struct gw_http_head *h, const char *name)
{
    return gw_http_head_find(h, name);
}

static bool is_yaml(const struct gw_http_head *h)
{
    const struct gw_http_header *ct = find(h, "Content-Type");
    if (ct == NULL)
        return false;
    static const char *const yaml[] = {"application/yaml", "application/x-yaml", "text/yaml",
                                       "text/x-yaml"};
    for (size_t i = 0; i < GW_ARRAY_LEN(yaml); i++) {
        size_t n = strlen(yaml[i]);
        if (ct->value.len >= n && strncasecmp(ct->value.ptr, yaml[i], n) == 0 &&
            (ct->value.len == n || ct->value.ptr[n] == ';' || ct->value.ptr[n] == ' '))
            return true;
    }
    return false;
}

/* Parses and validates a rules document; on failure writes the 400 with
 * the errors array to out and returns NULL (*rc 0 or -ENOMEM). */
static struct gw_rules *parse_body(struct gw_worker *w, const struct gw_http_head *h,
                                   const char *body, size_t len, struct gw_buf *out, bool keep,
                                   bool head_only, int *status, int *rc)
{
    char *errs = NULL;
    size_t errs_len = 0;
    FILE *err = open_memstream(&errs, &errs_len);
    if (err == NULL) {
        *rc = -ENOMEM;
        return NULL;
    }
    struct gw_rules *r = NULL;
    int n = gw_rules_parse(body != NULL ? body : "", len,
                           is_yaml(h) ? GW_RULES_YAML : GW_RULES_JSON, w->srv->cfg, &r, err, NULL);
    fclose(err);
    *rc = 0;
    if (n == 0) {
        free(errs);
        return r;
    }
    if (n < 0) {
        free(errs);
        *rc = -ENOMEM;
        return NULL;
    }
    char detail[96];
    snprintf(detail, sizeof(detail), "the rules are invalid: %d error%s; nothing was applied", n,
             n == 1 ? "" : "s");
    *status = 400;
    *rc = gw_admin_api_problem(out, 400, detail, errs, errs_len, NULL, keep, h->http_minor,
                               head_only);
    free(errs);
    return NULL;
}

static int rules_get(struct gw_worker *w, const struct gw_http_head *h, struct gw_buf *out,
                     bool keep, bool head_only, int *status)
{
    struct gw_rules *r = gw_rules_holder_get(w->srv->rules);
    json_t *o = rules_json(r, true);
    gw_rules_put(r);
    *status = 200;
    return write_json(out, 200, o, keep, h->http_minor, head_only);
}

static int rules_validate(struct gw_worker *w, const struct gw_http_head *h, const char *body,
                          size_t len, struct gw_buf *out, bool keep, int *status)
{
    int rc;
    struct gw_rules *r = parse_body(w, h, body, len, out, keep, false, status, &rc);
    if (r == NULL)
        return rc;
    json_t *o = rules_json(r, false);
    gw_rules_put(r);
    *status = 200;
    return write_json(out, 200, o, keep, h->http_minor, false);
}

/* If-Match: "<version>" (quotes optional; "*" = any). Writes the version
 * into buf and returns it, or NULL when absent or "*". */
static const char *if_match(const struct gw_http_head *h, char *buf, size_t cap)
{
    const struct gw_http_header *f = find(h, "If-Match");
    if (f == NULL)
        return NULL;
    struct gw_slice v = f->value;
    if (v.len >= 2 && v.ptr[0] == '"' && v.ptr[v.len - 1] == '"') {
        v.ptr++;
        v.len -= 2;
    }
    if (v.len == 1 && v.ptr[0] == '*')
        return NULL;
    snprintf(buf, cap, "%.*s", (int)GW_MIN(v.len, cap - 1), v.ptr);
    return buf;
}

static int rules_put(struct gw_worker *w, const struct gw_http_head *h, const char *body,
                     size_t len, struct gw_buf *out, bool keep, int *status)
{
    struct gw_server *srv = w->srv;
    uint8_t minor = h->http_minor;
    if (srv->cfg->rate_limit_rules_file != NULL) {
        *status = 409;
        return gw_admin_api_problem(out, 409,
                                    "RATE_LIMIT_RULES_FILE is set: the file is the source of "
                                    "truth; change the file instead",
                                    NULL, 0, NULL, keep, minor, false);
    }
    int rc;
    struct gw_rules *r = parse_body(w, h, body, len, out, keep, false, status, &rc);
    if (r == NULL)
        return rc;
    struct gw_rules *cur = gw_rules_holder_get(srv->rules);
    char previous[GW_RULES_VERSION_LEN + 1];
    snprintf(previous, sizeof(previous), "%s", cur->version);
    gw_rules_put(cur);
    char version[GW_RULES_VERSION_LEN + 1];
    snprintf(version, sizeof(version), "%s", r->version);
    char match_buf[64];
    const char *match = if_match(h, match_buf, sizeof(match_buf));
    bool shared = srv->sync != NULL;
    if (shared) {
        char stored[64] = "";
        int src = gw_rules_sync_store(srv->sync, r, match, stored, sizeof(stored), NULL);
        if (src == GW_RULES_SYNC_MISMATCH) {
            char detail[160];
            snprintf(detail, sizeof(detail),
                     "If-Match %s: the shared rules are version %s; nothing was applied", match,
                     stored[0] ? stored : "(none)");
            *status = 412;
            return gw_admin_api_problem(out, 412, detail, NULL, 0, NULL, keep, minor, false);
        }
        if (src != 0) {
            *status = 503;
            return gw_admin_api_problem(out, 503,
                                        "the rules could not be stored in Redis; nothing was "
                                        "applied",
                                        NULL, 0, NULL, keep, minor, false);
        }
    } else {
        if (match != NULL && strcmp(match, previous) != 0) {
            gw_rules_put(r);
            char detail[160];
            snprintf(detail, sizeof(detail),
                     "If-Match %s: the rules in force are version %s; nothing was applied", match,
                     previous);
            *status = 412;
            return gw_admin_api_problem(out, 412, detail, NULL, 0, NULL, keep, minor, false);
        }
        r->source = GW_RULES_SOURCE_API;
        gw_rules_sync_apply(srv->rules, r);
    }
    json_t *o = json_pack("{s:s, s:s, s:s, s:b}", "version", version, "previous_version", previous,
                          "source", "api", "shared", shared);
    *status = 200;
    return write_json(out, 200, o, keep, minor, false);
}

/* ---- one client's state ------------------------------------------------- */

/* Reads limit= and key= of the query; on failure writes the 400 and
 * returns false (*rc the write's result). */
static bool client_params(const struct gw_http_head *h, char *limit, char *key, size_t cap,
                          size_t *key_len, struct gw_buf *out, bool keep, bool head_only,
                          int *status, int *rc)
{
    int nl = gw_admin_api_query(h->target, "limit", limit, cap);
    int nk = gw_admin_api_query(h->target, "key", key, cap);
    const char *detail = NULL;
    if (nl == -ENOENT || nl == 0)
        detail = "missing query parameter limit=<name>";
    else if (nk == -ENOENT)
        detail = "missing query parameter key=<client key>";
    else if (nl < 0 || nk < 0)
        detail = "bad query parameter: a malformed %-escape, a NUL byte, or over 1023 bytes";
    if (detail == NULL) {
        *key_len = (size_t)nk;
        return true;
    }
    *status = 400;
    *rc = gw_admin_api_problem(out, 400, detail, NULL, 0, NULL, keep, h->http_minor, head_only);
    return false;
}

/* The answer of a limiter call that failed (peek or forget). */
static int limiter_error(int err, const char *limit, const struct gw_http_head *h,
                         struct gw_buf *out, bool keep, bool head_only, int *status)
{
    char detail[QUERY_MAX + 96];
    if (err == -ENOENT) {
        *status = 404;
        snprintf(detail, sizeof(detail),
                 "no limit named \"%.64s\" with rates in the rules in force", limit);
    } else if (err == -EINVAL) {
        *status = 400;
        snprintf(detail, sizeof(detail),
                 "the key does not fit the key parts of limit \"%.64s\" (parts joined by '|')",
                 limit);
    } else {
        *status = 503;
        snprintf(detail, sizeof(detail), "the rate-limit store is unavailable (%s)",
                 strerror(-err));
    }
    return gw_admin_api_problem(out, *status, detail, NULL, 0, NULL, keep, h->http_minor,
                                head_only);
}

static int ratelimit_get(struct gw_worker *w, const struct gw_http_head *h, struct gw_buf *out,
                         bool keep, bool head_only, int *status)
{
    char limit[QUERY_MAX], key[QUERY_MAX];
    size_t key_len = 0;
    int rc = 0;
    if (!client_params(h, limit, key, sizeof(limit), &key_len, out, keep, head_only, status, &rc))
        return rc;
    struct gw_rl_rate_state st[GW_RULES_MAX_RATES];
    size_t n = 0;
    int err = gw_ratelimit_peek(w->rl, limit, key, key_len, st, GW_ARRAY_LEN(st), &n);
    if (err != 0)
        return limiter_error(err, limit, h, out, keep, head_only, status);
    json_t *rates = json_array();
    for (size_t i = 0; rates != NULL && i < n; i++)
        json_array_append_new(rates, json_pack("{s:s, s:I, s:I, s:I, s:I}", "policy", st[i].policy,
                                               "limit", (json_int_t)st[i].limit, "window",
                                               (json_int_t)st[i].window_s, "remaining",
                                               (json_int_t)st[i].remaining, "reset",
                                               (json_int_t)st[i].reset_s));
    json_t *o = json_object();
    if (o != NULL) {
        json_object_set_new(o, "limit", json_string(limit));
        json_object_set_new(o, "key", json_stringn(key, key_len));
        json_object_set_new(o, "rates", rates ? rates : json_array());
    } else {
        json_decref(rates);
    }
    *status = 200;
    return write_json(out, 200, o, keep, h->http_minor, head_only);
}

static int ratelimit_delete(struct gw_worker *w, const struct gw_http_head *h, struct gw_buf *out,
                            bool keep, int *status)
{
    char limit[QUERY_MAX], key[QUERY_MAX];
    size_t key_len = 0;
    int rc = 0;
    if (!client_params(h, limit, key, sizeof(limit), &key_len, out, keep, false, status, &rc))
        return rc;
    int64_t deleted = 0;
    int err = gw_ratelimit_forget(w->rl, limit, key, key_len, &deleted);
    if (err != 0)
        return limiter_error(err, limit, h, out, keep, false, status);
    bool broadcast = false;
    if (w->srv->sync != NULL) {
        int berr = gw_rules_sync_forget(w->srv->sync, limit, key, key_len);
        broadcast = berr == 0;
        if (berr != 0)
            gw_warn("admin: forget in limit %s: the other instances could not be told (%s)", limit,
                    strerror(-berr));
    }
    gw_info("admin: client forgotten in limit %s (%lld state keys deleted)", limit,
            (long long)deleted);
    json_t *o = json_pack("{s:I}", "deleted", (json_int_t)deleted);
    if (o != NULL && w->srv->sync != NULL)
        json_object_set_new(o, "broadcast", json_boolean(broadcast));
    *status = 200;
    return write_json(out, 200, o, keep, h->http_minor, false);
}

int gw_admin_api_respond(struct gw_worker *w, enum gw_admin_route r,
                         const struct gw_http_head *head, const char *body, size_t body_len,
                         struct gw_buf *out, bool keep_alive, int *status)
{
    bool head_only = head->method == HTTP_HEAD;
    switch (r) {
    case GW_ADMIN_ROUTE_RULES_GET:
        return rules_get(w, head, out, keep_alive, head_only, status);
    case GW_ADMIN_ROUTE_RULES_VALIDATE:
        return rules_validate(w, head, body, body_len, out, keep_alive, status);
    case GW_ADMIN_ROUTE_RULES_PUT:
        return rules_put(w, head, body, body_len, out, keep_alive, status);
    case GW_ADMIN_ROUTE_RATELIMIT_GET:
        return ratelimit_get(w, head, out, keep_alive, head_only, status);
    case GW_ADMIN_ROUTE_RATELIMIT_DELETE:
        return ratelimit_delete(w, head, out, keep_alive, status);
    default:
        *status = 404;
        return gw_admin_api_problem(out, 404, "no such admin endpoint", NULL, 0, NULL, keep_alive,
                                    head->http_minor, head_only);
    }
}
