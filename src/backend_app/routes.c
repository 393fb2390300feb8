/*
 * backend_app endpoints (SPEC.md section 8) and the request counters behind
 * GET /stats. Bodies of /bytes and /stream are written from one static
 * pattern buffer, so a response of any size costs no memory.
 */
#include "backend_app.h"
#include "gw/response.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define PATTERN_PERIOD 26                      /* 'a'..'z' */
#define PATTERN_SPAN   (PATTERN_PERIOD * 2048) /* bytes written per send */
#define MAX_BYTES      (1ull << 40)            /* /bytes?n= limit (1 TiB) */
#define MAX_CHUNKS     100000000ull            /* /stream?chunks= limit */
#define MAX_CHUNK_SIZE (1ull << 30)            /* /stream?size= limit (1 GiB) */
#define SMALL_CHUNK    16384                   /* chunks up to this go out in one write */

struct backend_stats backend_stats;

/* PATTERN_SPAN bytes readable from any offset below PATTERN_PERIOD. */
static char pattern[PATTERN_SPAN + PATTERN_PERIOD];

void backend_routes_init(void)
{
    for (size_t i = 0; i < sizeof(pattern); i++)
        pattern[i] = (char)('a' + i % PATTERN_PERIOD);
}

/* ---- counters ---------------------------------------------------------- */

static bool slice_is(struct gw_slice s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.ptr, lit, n) == 0;
}

/* The path part of the request-target (before '?'). */
static struct gw_slice target_path(const struct backend_request *r)
{
    struct gw_slice t = backend_target(r);
    const char *q = t.len ? memchr(t.ptr, '?', t.len) : NULL;
    if (q)
        t.len = (size_t)(q - t.ptr);
    return t;
}

void backend_stats_begin(struct backend_request *r)
{
    struct gw_slice path = target_path(r);
    /* Observing must not disturb the observed: /stats requests are not counted. */
    r->stats_route = slice_is(path, "/stats") || slice_is(path, "/stats/reset");
    if (r->stats_route || r->counted)
        return;
    r->counted = true;
    atomic_fetch_add(&backend_stats.requests, 1);
    uint64_t now = atomic_fetch_add(&backend_stats.in_flight, 1) + 1;
    uint64_t max = atomic_load(&backend_stats.max_concurrency);
    while (now > max && !atomic_compare_exchange_weak(&backend_stats.max_concurrency, &max, now))
        ;
}

void backend_stats_end(struct backend_request *r)
{
    if (!r->counted)
        return;
    r->counted = false;
    atomic_fetch_sub(&backend_stats.in_flight, 1);
}

/* ---- helpers ------------------------------------------------------------ */

const char *backend_reason(int status)
{
    return gw_response_reason(status); /* one reason-phrase table for both binaries */
}

/* Parses a decimal number of at most max; false when empty, not all digits
 * or too large. */
static bool parse_u64(struct gw_slice s, uint64_t max, uint64_t *out)
{
    if (s.len == 0 || s.len > 20)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < s.len; i++) {
        if (s.ptr[i] < '0' || s.ptr[i] > '9')
            return false;
        uint64_t d = (uint64_t)(s.ptr[i] - '0');
        if (v > (max - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* Finds name=value in the query of the request-target. */
static bool query_param(const struct backend_request *r, const char *name, struct gw_slice *value)
{
    struct gw_slice t = backend_target(r);
    const char *q = t.len ? memchr(t.ptr, '?', t.len) : NULL;
    if (!q)
        return false;
    const char *p = q + 1, *end = t.ptr + t.len;
    size_t nlen = strlen(name);
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        const char *kend = eq ? eq : stop;
        if ((size_t)(kend - p) == nlen && memcmp(p, name, nlen) == 0) {
            value->ptr = eq ? eq + 1 : stop;
            value->len = (size_t)(stop - value->ptr);
            return true;
        }
        p = stop + 1;
    }
    return false;
}

/* A numeric query parameter: def when absent; false when present but invalid. */
static bool query_u64(const struct backend_request *r, const char *name, uint64_t def, uint64_t max,
                      uint64_t *out)
{
    struct gw_slice v;
    if (!query_param(r, name, &v)) {
        *out = def;
        return true;
    }
    return parse_u64(v, max, out);
}

/* A JSON string of arbitrary bytes: UTF-8 as is, otherwise each byte read as
 * Latin-1 (obs-text in a field value is legal, RFC 9110 section 5.5). */
static json_t *json_bytes(const char *p, size_t n)
{
    json_t *s = json_stringn(p, n);
    if (s || n > SIZE_MAX / 2)
        return s;
    char *u = malloc(n * 2 + 1);
    if (!u)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch < 0x80) {
            u[k++] = (char)ch;
        } else {
            u[k++] = (char)(0xc0 | (ch >> 6));
            u[k++] = (char)(0x80 | (ch & 0x3f));
        }
    }
    s = json_stringn(u, k);
    free(u);
    return s;
}

static int reply_error(struct backend_conn *c, int status, const char *detail)
{
    json_t *j = json_pack("{s:s, s:i, s:s}", "error", backend_reason(status), "status", status,
                          "detail", detail);
    return backend_write_json(c, status, j, NULL);
}

static enum backend_after done(int rc)
{
    return rc == 0 ? BACKEND_KEEP : BACKEND_CLOSE;
}

/* Writes len pattern bytes starting at stream position pos; last: they
 * complete the response (backend_write_last). */
static int write_pattern(struct backend_conn *c, uint64_t pos, uint64_t len, bool last)
{
    while (len > 0) {
        size_t n = (size_t)GW_MIN(len, (uint64_t)PATTERN_SPAN);
        const char *p = pattern + pos % PATTERN_PERIOD;
        if ((last && n == len ? backend_write_last(c, p, n) : backend_write(c, p, n)) != 0)
            return -1;
        pos += n;
        len -= n;
    }
    return 0;
}

/* ---- endpoints ---------------------------------------------------------- */

static enum backend_after route_root(struct backend_conn *c)
{
    json_t *j = json_pack("{s:s, s:s, s:s, s:[s,s,s,s,s,s,s,s,s,s,s,s]}", "message",
                          "Hello from backend_app", "service", "backend_app", "version", GW_VERSION,
                          "endpoints", "/users/{id}", "/echo", "/slow?ms=N", "/status/{code}",
                          "/stream?chunks=N&size=B&delay_ms=D", "/bytes?n=N", "/stats",
                          "/stats/reset", "/close", "/noresponse", "/ws", "/");
    return done(backend_write_json(c, 200, j, NULL));
}

static enum backend_after route_user(struct backend_conn *c, struct gw_slice id)
{
    uint64_t v;
    /* At most 15 digits: every such id is exact as a JSON (double) number. */
    if (id.len > 15 || !parse_u64(id, UINT64_MAX, &v))
        return done(reply_error(c, 404, "no such user"));
    json_t *j = json_object();
    char name[32];
    snprintf(name, sizeof(name), "User %llu", (unsigned long long)v);
    if (j && (json_object_set_new(j, "id", json_integer((json_int_t)v)) != 0 ||
              json_object_set_new(j, "name", json_string(name)) != 0)) {
        json_decref(j);
        j = NULL;
    }
    return done(backend_write_json(c, 200, j, NULL));
}

static enum backend_after route_echo(struct backend_conn *c)
{
    struct backend_request *r = &c->req;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    if (EVP_DigestFinal_ex(c->sha, md, &mdlen) != 1)
        return done(reply_error(c, 500, "digest failed"));
    for (unsigned int i = 0; i < mdlen; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    hex[2 * mdlen] = '\0';

    char version[8];
    snprintf(version, sizeof(version), "%u.%u", r->http_major, r->http_minor);
    json_t *headers = json_array();
    for (size_t i = 0; headers && i < r->nheaders; i++) {
        const struct backend_header *h = &r->headers[i];
        json_t *pair = json_pack("[o,o]", json_bytes(r->raw.data + h->name_off, h->name_len),
                                 json_bytes(r->raw.data + h->value_off, h->value_len));
        if (json_array_append_new(headers, pair) != 0) {
            json_decref(headers);
            headers = NULL;
        }
    }
    struct gw_slice t = backend_target(r);
    json_t *j = json_pack("{s:s, s:o, s:s, s:o, s:I, s:s}", "method",
                          llhttp_method_name((llhttp_method_t)r->method), "target",
                          json_bytes(t.ptr, t.len), "http_version", version, "headers", headers,
                          "body_length", (json_int_t)r->body_len, "body_sha256", hex);
    return done(backend_write_json(c, 200, j, NULL));
}

static enum backend_after route_slow(struct backend_conn *c)
{
    uint64_t ms;
    if (!query_u64(&c->req, "ms", 1000, UINT64_MAX, &ms))
        return done(reply_error(c, 400, "ms must be a non-negative integer"));
    ms = GW_MIN(ms, (uint64_t)BACKEND_MAX_DELAY_MS);
    if (backend_sleep_or_hangup_ms(c->fd, (int)ms))
        return BACKEND_CLOSE;
    return done(backend_write_json(c, 200, json_pack("{s:I}", "slept_ms", (json_int_t)ms), NULL));
}

static enum backend_after route_status(struct backend_conn *c, struct gw_slice code)
{
    uint64_t v;
    if (!parse_u64(code, 999, &v) || v < 200 || v > 599)
        return done(reply_error(c, 400, "status must be an integer from 200 to 599"));
    int status = (int)v;
    /* RFC 9110 sections 15.3.5 and 15.4.5: 204 and 304 carry no content. */
    if (status == 204 || status == 304)
        return done(backend_write_head(c, status, NULL, -2, NULL, true));
    json_t *j = json_pack("{s:i, s:s}", "status", status, "reason", backend_reason(status));
    return done(backend_write_json(c, status, j, NULL));
}

static enum backend_after route_stream(struct backend_conn *c)
{
    struct backend_request *r = &c->req;
    uint64_t chunks, size, delay, close_framing;
    if (!query_u64(r, "chunks", 1, MAX_CHUNKS, &chunks) ||
        !query_u64(r, "size", 1024, MAX_CHUNK_SIZE, &size) ||
        !query_u64(r, "delay_ms", 0, BACKEND_MAX_DELAY_MS, &delay) ||
        !query_u64(r, "close", 0, 1, &close_framing))
        return done(reply_error(c, 400, "bad chunks, size, delay_ms or close parameter"));
    /* HTTP/1.0 has no chunked coding: delimit the body by closing instead. */
    bool chunked = !close_framing && !(r->http_major == 1 && r->http_minor == 0);
    if (!chunked)
        c->close_after = true;
    bool empty = chunks == 0 || size == 0;
    bool head_last = r->head || (empty && !chunked);
    if (backend_write_head(c, 200, "application/octet-stream", chunked ? -1 : -2, NULL,
                           head_last) != 0)
        return BACKEND_CLOSE;
    if (r->head)
        return BACKEND_KEEP;
    uint64_t pos = 0;
    char small[SMALL_CHUNK + 32];
    for (uint64_t i = 0; size > 0 && i < chunks; i++) {
        if (i > 0 && delay > 0 && backend_sleep_ms((int)delay))
            return BACKEND_CLOSE;
        if (!chunked) {
            if (write_pattern(c, pos, size, i + 1 == chunks) != 0)
                return BACKEND_CLOSE;
        } else if (size <= SMALL_CHUNK) {
            /* Size line, data and CRLF in one write. */
            int n = snprintf(small, sizeof(small), "%llx\r\n", (unsigned long long)size);
            memcpy(small + n, pattern + pos % PATTERN_PERIOD, (size_t)size);
            memcpy(small + n + size, "\r\n", 2);
            if (backend_write(c, small, (size_t)n + (size_t)size + 2) != 0)
                return BACKEND_CLOSE;
        } else {
            int n = snprintf(small, sizeof(small), "%llx\r\n", (unsigned long long)size);
            if (backend_write(c, small, (size_t)n) != 0 ||
                write_pattern(c, pos, size, false) != 0 || backend_write(c, "\r\n", 2) != 0)
                return BACKEND_CLOSE;
        }
        pos += size;
    }
    if (chunked && backend_write_last(c, "0\r\n\r\n", 5) != 0)
        return BACKEND_CLOSE;
    return chunked ? BACKEND_KEEP : BACKEND_CLOSE;
}

static enum backend_after route_bytes(struct backend_conn *c)
{
    uint64_t n;
    if (!query_u64(&c->req, "n", 1024, MAX_BYTES, &n))
        return done(reply_error(c, 400, "n must be an integer up to 2^40"));
    bool head_last = c->req.head || n == 0;
    if (backend_write_head(c, 200, "application/octet-stream", (int64_t)n, NULL, head_last) != 0)
        return BACKEND_CLOSE;
    if (head_last)
        return BACKEND_KEEP;
    return done(write_pattern(c, 0, n, true));
}

static enum backend_after route_stats(struct backend_conn *c)
{
    json_t *j =
        json_pack("{s:I, s:I, s:I}", "requests", (json_int_t)atomic_load(&backend_stats.requests),
                  "max_concurrency", (json_int_t)atomic_load(&backend_stats.max_concurrency),
                  "in_flight", (json_int_t)atomic_load(&backend_stats.in_flight));
    return done(backend_write_json(c, 200, j, NULL));
}

static enum backend_after route_stats_reset(struct backend_conn *c)
{
    atomic_store(&backend_stats.requests, 0);
    /* Requests still running are the new high-water mark; in_flight stays
     * exact because each of them decrements it when it ends. */
    atomic_store(&backend_stats.max_concurrency, atomic_load(&backend_stats.in_flight));
    return done(backend_write_json(c, 200, json_pack("{s:b}", "reset", 1), NULL));
}

/* Fault injection: promises 100 bytes, sends 5, closes. */
static enum backend_after route_close(struct backend_conn *c)
{
    static const char partial[] = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort";
    c->req.status = 200;
    if (backend_write_last(c, partial, sizeof(partial) - 1) == 0)
        (void)shutdown(c->fd, SHUT_RDWR);
    return BACKEND_CLOSE;
}

/* Fault injection: never answers; holds the connection until the client
 * closes, shutdown, or BACKEND_MAX_DELAY_MS. Input is read and dropped. */
static enum backend_after route_noresponse(struct backend_conn *c)
{
    uint64_t deadline = gw_now_ms() + BACKEND_MAX_DELAY_MS;
    for (;;) {
        uint64_t now = gw_now_ms();
        if (now >= deadline || atomic_load(&backend_cfg.stopping))
            break;
        struct pollfd pfd[2] = {{.fd = c->fd, .events = POLLIN},
                                {.fd = backend_cfg.stop_fd, .events = POLLIN}};
        int n = poll(pfd, 2, (int)(deadline - now));
        if (n < 0 && errno != EINTR)
            break;
        if (n <= 0)
            continue;
        if (pfd[1].revents)
            break;
        ssize_t got = recv(c->fd, c->rbuf, BACKEND_READ_BUF, 0);
        if (got == 0 || (got < 0 && errno != EINTR))
            break;
    }
    return BACKEND_CLOSE;
}

static enum backend_after method_not_allowed(struct backend_conn *c, const char *allow)
{
    json_t *j = json_pack("{s:s, s:i}", "error", "Method Not Allowed", "status", 405);
    return done(backend_write_json(c, 405, j, allow));
}

enum backend_after backend_route(struct backend_conn *c)
{
    struct backend_request *r = &c->req;
    struct gw_slice path = target_path(r);
    bool get = r->method == HTTP_GET || r->method == HTTP_HEAD;
    static const char allow_get[] = "Allow: GET, HEAD\r\n";

    if (slice_is(path, "/echo"))
        return route_echo(c);
    if (slice_is(path, "/ws"))
        return backend_ws_route(c);
    if (slice_is(path, "/slow"))
        return route_slow(c);
    if (slice_is(path, "/stream"))
        return route_stream(c);
    if (slice_is(path, "/bytes"))
        return route_bytes(c);
    if (slice_is(path, "/close"))
        return route_close(c);
    if (slice_is(path, "/noresponse"))
        return route_noresponse(c);
    if (path.len > 8 && memcmp(path.ptr, "/status/", 8) == 0)
        return route_status(c, (struct gw_slice){path.ptr + 8, path.len - 8});
    if (slice_is(path, "/stats/reset")) {
        if (r->method != HTTP_POST)
            return method_not_allowed(c, "Allow: POST\r\n");
        return route_stats_reset(c);
    }
    if (slice_is(path, "/stats"))
        return get ? route_stats(c) : method_not_allowed(c, allow_get);
    if (slice_is(path, "/"))
        return get ? route_root(c) : method_not_allowed(c, allow_get);
    if (path.len > 7 && memcmp(path.ptr, "/users/", 7) == 0) {
        if (!get)
            return method_not_allowed(c, allow_get);
        return route_user(c, (struct gw_slice){path.ptr + 7, path.len - 7});
    }
    return done(reply_error(c, 404, "no such route"));
}
