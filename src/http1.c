/*
 * HTTP/1.x parser wrapper over llhttp 8.1 in strict mode (see gw/http1.h).
 * llhttp does the tokenising; this file collects the head into bounded
 * storage, pauses llhttp at the end of the head and of the message, and adds
 * the smuggling checks llhttp leaves to its user (RFC 9112 §2.2, §3, §6, §7).
 */
#include "gw/http1.h"
#include "gw/buf.h"
#include "gw/net.h"
#include "gw/path.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Where the current message is. Only execute() and finish() change it, from
 * the events the llhttp callbacks flag (ev_head, ev_last_chunk, ev_done). */
enum phase {
    PH_HEAD = 0,  /* start line and header section */
    PH_HEAD_DONE, /* HEAD reported, llhttp paused after on_headers_complete */
    PH_BODY,      /* body (payload or chunks) */
    PH_TRAILERS,  /* after the last-chunk line: trailer section */
    PH_DONE,      /* DONE reported, waiting for reset */
    PH_ERROR,     /* ERROR reported, waiting for reset */
};

static struct gw_http_parser *parser_of(llhttp_t *ll)
{
    return gw_container_of(ll, struct gw_http_parser, llhttp);
}

/* Records the first error of the message. A response parser reports every
 * protocol error or limit as 502 (what the client is eventually told: the
 * upstream sent something unusable), except a failed body sink, which is
 * the gateway's own failure (500). Returns -1 so that callbacks can
 * `return fail(...)` and make llhttp stop. */
static int fail(struct gw_http_parser *p, int status, const char *detail)
{
    if (p->error_status == 0) {
        p->error_status = (p->kind == GW_HTTP_RESPONSE && status != 500) ? 502 : status;
        p->error_detail = detail;
    }
    return -1;
}

static int fail_body_limit(struct gw_http_parser *p)
{
    snprintf(p->error_buf, sizeof(p->error_buf), "%s body exceeds the limit of %" PRIu64 " bytes",
             p->kind == GW_HTTP_REQUEST ? "request" : "response", p->max_body_bytes);
    return fail(p, 413, p->error_buf);
}

/* The head passed the limit. A request whose request line alone is longer
 * than the limit (no line completed yet, and more bytes of it than the
 * limit, CRLF not counted) gets 414 (RFC 9110 §15.5.15), any other 431 (RFC
 * 6585 §5). The framing scan runs ahead of llhttp over at most the limit
 * plus one byte, so by then it has counted the request line's bytes. */
static int fail_head_too_large(struct gw_http_parser *p)
{
    if (p->kind == GW_HTTP_REQUEST && p->phase == PH_HEAD && p->scan_lines == 0 &&
        p->scan_col > p->max_head_bytes)
        return fail(p, 414, "request line too long");
    return fail(p, 431,
                p->kind == GW_HTTP_REQUEST ? "request header section too large"
                                           : "response header section too large");
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static struct gw_slice trim_ows(struct gw_slice s)
{
    while (s.len > 0 && is_ows(s.ptr[0])) {
        s.ptr++;
        s.len--;
    }
    while (s.len > 0 && is_ows(s.ptr[s.len - 1]))
        s.len--;
    return s;
}

/* ---- head storage ------------------------------------------------------ */

/* Appends one span of the element being built (method, target, reason,
 * header name or value). Spans of one element arrive in order and nothing
 * else is appended in between, so the element stays contiguous. */
static int store(struct gw_http_parser *p, const char *at, size_t len)
{
    if (len == 0)
        return 0;
    if (len > p->max_head_bytes - p->storage_used)
        return fail_head_too_large(p);
    memcpy(p->storage + p->storage_used, at, len);
    p->storage_used += len;
    return 0;
}

/* Closes the element being built and returns it. */
static struct gw_slice take_element(struct gw_http_parser *p)
{
    struct gw_slice s = {p->storage + p->elem_off, p->storage_used - p->elem_off};
    p->elem_off = p->storage_used;
    return s;
}

static bool in_head(const struct gw_http_parser *p)
{
    return p->phase == PH_HEAD;
}

/* ---- llhttp callbacks -------------------------------------------------- */

static int on_message_begin(llhttp_t *ll)
{
    parser_of(ll)->started = true;
    return 0;
}

/* Trailer fields that are never relayed: framing, routing, and the
 * hop-by-hop fields (RFC 9110 §6.5.1, §7.6.1). */
static bool trailer_forbidden(struct gw_slice name)
{
    static const char *const names[] = {"content-length", "transfer-encoding", "host", "connection",
                                        "keep-alive",     "proxy-connection",  "te",   "trailer",
                                        "upgrade"};
    for (size_t i = 0; i < GW_ARRAY_LEN(names); i++)
        if (gw_slice_eq_nocase(name, names[i]))
            return true;
    return false;
}

/* The bytes of p->trailers from offset off on (none while it holds no
 * storage yet: an empty name or value appends nothing). */
static struct gw_slice trailer_tail(const struct gw_http_parser *p, size_t off)
{
    if (p->trailers.data == NULL || off >= gw_buf_len(&p->trailers))
        return (struct gw_slice){NULL, 0};
    return (struct gw_slice){gw_buf_head(&p->trailers) + off, gw_buf_len(&p->trailers) - off};
}

/* Trailer bytes go to p->trailers, "Name: value\r\n" per field; the
 * element being built starts at trailer_elem. */
static int store_trailer(struct gw_http_parser *p, const char *at, size_t len)
{
    if (p->phase != PH_TRAILERS || len == 0)
        return 0;
    if (gw_buf_append(&p->trailers, at, len) != 0)
        return fail(p, 500, "the trailer section could not be stored");
    return 0;
}

static int on_span(llhttp_t *ll, const char *at, size_t len)
{
    struct gw_http_parser *p = parser_of(ll);
    return in_head(p) ? store(p, at, len) : store_trailer(p, at, len);
}

static int on_method_complete(llhttp_t *ll)
{
    struct gw_http_parser *p = parser_of(ll);
    p->head.method_name = take_element(p);
    return 0;
}

static int on_url_complete(llhttp_t *ll)
{
    struct gw_http_parser *p = parser_of(ll);
    struct gw_slice t = take_element(p);
    /* llhttp strict mode already refuses these; checked again because a
     * target with a space or CTL would be forwarded verbatim upstream. */
    for (size_t i = 0; i < t.len; i++) {
        unsigned char c = (unsigned char)t.ptr[i];
        if (c <= 0x20 || c == 0x7f)
            return fail(p, 400, "invalid character in request-target");
    }
    p->head.target = t;
    return 0;
}

static int on_status_complete(llhttp_t *ll)
{
    struct gw_http_parser *p = parser_of(ll);
    p->head.reason = take_element(p);
    return 0;
}

static int on_header_field_complete(llhttp_t *ll)
{
    struct gw_http_parser *p = parser_of(ll);
    if (!in_head(p)) {
        /* Trailer fields are kept (p->trailers) for the next hop, and
         * counted. */
        if (++p->trailer_count > GW_HTTP_MAX_HEADERS)
            return fail(p, 400, "too many trailer fields");
        if (p->phase != PH_TRAILERS)
            return 0;
        struct gw_slice name = trailer_tail(p, p->trailer_elem);
        for (size_t i = 0; i < name.len; i++) {
            unsigned char c = (unsigned char)name.ptr[i];
            if (c <= 0x20 || c >= 0x7f || c == ':')
                return fail(p, 400, "invalid character in trailer field name");
        }
        p->trailer_skip = name.len == 0 || trailer_forbidden(name);
        if (gw_buf_append(&p->trailers, ": ", 2) != 0)
            return fail(p, 500, "the trailer section could not be stored");
        p->trailer_value = gw_buf_len(&p->trailers);
        return 0;
    }
    struct gw_slice name = take_element(p);
    if (p->head.header_count >= GW_HTTP_MAX_HEADERS)
        return fail(p, 431, "too many header fields");
    if (name.len == 0)
        return fail(p, 400, "empty header field name");
    for (size_t i = 0; i < name.len; i++) {
        unsigned char c = (unsigned char)name.ptr[i];
        if (c <= 0x20 || c >= 0x7f || c == ':')
            return fail(p, 400, "invalid character in header field name");
    }
    p->head.headers[p->head.header_count].name = name;
    p->in_value = true;
    return 0;
}

static int on_header_value_complete(llhttp_t *ll)
{
    struct gw_http_parser *p = parser_of(ll);
    if (!in_head(p)) {
        if (p->phase != PH_TRAILERS)
            return 0;
        /* OWS trimmed as in the head; a forbidden field is taken back. */
        struct gw_slice v = trailer_tail(p, p->trailer_value);
        struct gw_slice t = trim_ows(v);
        for (size_t i = 0; i < t.len; i++) {
            if (t.ptr[i] == '\r' || t.ptr[i] == '\n' || t.ptr[i] == '\0')
                return fail(p, 400, "bare CR, LF or NUL in a trailer field value");
        }
        size_t keep = p->trailer_skip ? p->trailer_elem : p->trailer_value + t.len;
        if (!p->trailer_skip && t.len > 0 && t.ptr != v.ptr)
            memmove(gw_buf_head(&p->trailers) + p->trailer_value, t.ptr, t.len);
        p->trailers.end = p->trailers.start + keep;
        if (!p->trailer_skip && gw_buf_append(&p->trailers, "\r\n", 2) != 0)
            return fail(p, 500, "the trailer section could not be stored");
        p->trailer_elem = gw_buf_len(&p->trailers);
        return 0;
    }
    struct gw_slice v = trim_ows(take_element(p));
    /* llhttp refuses these in values; a second look costs little and
     * guarantees nothing framing-like is ever forwarded inside a value. */
    for (size_t i = 0; i < v.len; i++) {
        if (v.ptr[i] == '\r' || v.ptr[i] == '\n' || v.ptr[i] == '\0')
            return fail(p, 400, "bare CR, LF or NUL in a header field value");
    }
    /* Give the trimmed trailing whitespace back to the storage. */
    if (v.len > 0)
        p->storage_used = (size_t)(v.ptr + v.len - p->storage);
    p->elem_off = p->storage_used;
    p->head.headers[p->head.header_count].value = v;
    p->head.header_count++;
    p->in_value = false;
    return 0;
}

/* Content-Length = 1*DIGIT (RFC 9110 §8.6), as a non-negative int64. */
static bool parse_content_length(struct gw_slice v, int64_t *out)
{
    if (v.len == 0)
        return false;
    int64_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        char c = v.ptr[i];
        if (c < '0' || c > '9')
            return false;
        if (n > (INT64_MAX - (c - '0')) / 10)
            return false;
        n = n * 10 + (c - '0');
    }
    *out = n;
    return true;
}

/* Walks the elements of a comma-separated field value (RFC 9110 §5.6.1):
 * list_next yields each non-empty OWS-trimmed element in w->el and counts
 * the empty ones in *empty (when not NULL). */
struct list_walk {
    struct gw_slice el; /* current element */
    const char *pos;    /* start of the rest of the value */
    const char *end;    /* end of the value */
    bool done;          /* the last element was read */
};

static void list_start(struct list_walk *w, struct gw_slice v)
{
    static const char nothing[1];
    w->pos = v.ptr ? v.ptr : nothing;
    w->end = w->pos + v.len;
    w->done = false;
}

static bool list_next(struct list_walk *w, size_t *empty)
{
    while (!w->done) {
        const char *comma = memchr(w->pos, ',', (size_t)(w->end - w->pos));
        const char *stop = comma ? comma : w->end;
        struct gw_slice el = trim_ows((struct gw_slice){w->pos, (size_t)(stop - w->pos)});
        if (comma)
            w->pos = comma + 1;
        else
            w->done = true;
        if (el.len > 0) {
            w->el = el;
            return true;
        }
        if (empty)
            (*empty)++;
    }
    return false;
}

/* The framing rules of RFC 9112 §6 that decide where the body ends, applied
 * strictly (SPEC.md §6). llhttp enforces most of them already; they are
 * checked again from the stored head so that what we forward and what
 * llhttp framed can never disagree. */
static int check_framing(struct gw_http_parser *p, llhttp_t *ll)
{
    struct gw_http_head *h = &p->head;
    bool req = p->kind == GW_HTTP_REQUEST;
    size_t n_cl = 0, n_host = 0, n_te = 0, n_chunked = 0, n_other = 0, n_empty = 0;
    bool chunked_last = false;
    struct gw_slice cl = {0};

    for (size_t i = 0; i < h->header_count; i++) {
        const struct gw_http_header *f = &h->headers[i];
        if (gw_slice_eq_nocase(f->name, "content-length")) {
            n_cl++;
            cl = f->value;
        } else if (gw_slice_eq_nocase(f->name, "host")) {
            n_host++;
            if (req && !gw_net_valid_uri_host(f->value.ptr, f->value.len))
                return fail(p, 400, "invalid Host header");
        } else if (gw_slice_eq_nocase(f->name, "transfer-encoding")) {
            struct list_walk w;
            size_t before = n_chunked + n_other;
            n_te++;
            list_start(&w, f->value);
            while (list_next(&w, &n_empty)) {
                chunked_last = gw_slice_eq_nocase(w.el, "chunked");
                if (chunked_last)
                    n_chunked++;
                else
                    n_other++;
            }
            if (n_chunked + n_other == before)
                n_empty++; /* a Transfer-Encoding with no coding at all */
        } else if (gw_slice_eq_nocase(f->name, "connection")) {
            /* Connection may only name hop-by-hop fields; naming a framing
             * field or Host asks the next hop to drop it (RFC 9110 §7.6.1). */
            struct list_walk w;
            list_start(&w, f->value);
            while (list_next(&w, NULL)) {
                if (gw_slice_eq_nocase(w.el, "content-length") ||
                    gw_slice_eq_nocase(w.el, "transfer-encoding") ||
                    gw_slice_eq_nocase(w.el, "host"))
                    return fail(p, 400, "Connection header names a framing or Host field");
                /* Nor may a client ask us to drop the forwarding fields the
                 * gateway itself vouches for. */
                if (p->kind == GW_HTTP_REQUEST && (gw_slice_eq_nocase(w.el, "x-forwarded-for") ||
                                                   gw_slice_eq_nocase(w.el, "x-forwarded-host") ||
                                                   gw_slice_eq_nocase(w.el, "x-forwarded-proto")))
                    return fail(p, 400, "Connection header names a forwarding field");
            }
        }
    }

    h->content_length = -1;
    if (!req && n_cl > 0 && n_te > 0 && n_chunked == 1 && chunked_last && n_empty == 0) {
        /* An origin sending both: chunked wins and Content-Length is
         * dropped (RFC 9112 §6.3 rule 3); the client gets one framing. */
        n_cl = 0;
    }
    if (n_cl > 1)
        return fail(p, 400, "more than one Content-Length header");
    if (n_cl == 1) {
        if (!parse_content_length(cl, &h->content_length) ||
            (uint64_t)h->content_length != ll->content_length)
            return fail(p, 400, "invalid Content-Length");
        if (n_te > 0)
            return fail(p, 400, "both Content-Length and Transfer-Encoding present");
    }
    if (n_te > 0) {
        if (n_empty > 0)
            return fail(p, 400, "empty element in Transfer-Encoding");
        if (n_chunked > 1)
            return fail(p, 400, "chunked transfer coding applied more than once");
        if (n_chunked == 1 && !chunked_last)
            return fail(p, 400, "chunked is not the final transfer coding");
        if (req && h->http_minor == 0)
            return fail(p, 400, "Transfer-Encoding in an HTTP/1.0 request");
        /* We only decode chunked; any other coding would reach the backend
         * re-framed but still encoded, so it is refused (RFC 9112 §6.1). */
        if (req && (n_chunked != 1 || n_other != 0))
            return fail(p, 400, "unsupported Transfer-Encoding (only chunked is accepted)");
    }
    h->chunked = n_chunked == 1 && chunked_last;
    if (h->chunked != ((ll->flags & F_CHUNKED) != 0))
        return fail(p, 400, "ambiguous Transfer-Encoding");

    if (req) {
        if (n_host > 1)
            return fail(p, 400, "more than one Host header");
        if (n_host == 0 && h->http_minor == 1)
            return fail(p, 400, "missing Host header");
    }
    return 0;
}

/* The four request-target forms of RFC 9112 §3.2, strictly: origin-form
 * ("/path?query"); absolute-form only with the http or https scheme, a
 * non-empty host, an optional port of 1..65535 and no userinfo (RFC 9110
 * §4.2.4: a recipient treats it as an error); asterisk-form only for
 * OPTIONS (authority-form belongs to CONNECT, refused before this). A
 * fragment is never part of a request-target. Anything else would reach
 * the backend outside the configured base path. Returns NULL or what is
 * wrong, for the 400's detail. */
/* The path of a request-target (up to '?'), from p to end: refused when its
 * dot-segments would climb above the root (RFC 3986 §5.2.4), so that no
 * request reaches the backend outside BACKEND_URL's base path. */
static const char *check_path(const char *p, const char *end)
{
    const char *q = memchr(p, '?', (size_t)(end - p));
    if (gw_path_climbs_above_root(p, (size_t)((q ? q : end) - p)))
        return "request-target path climbs above the root";
    return NULL;
}

static const char *check_target(struct gw_slice t, int method)
{
    if (t.len == 0)
        return "empty request-target";
    if (memchr(t.ptr, '#', t.len))
        return "fragment in the request-target";
    if (t.ptr[0] == '/')
        return check_path(t.ptr, t.ptr + t.len);
    if (t.len == 1 && t.ptr[0] == '*')
        return method == HTTP_OPTIONS ? NULL : "asterisk-form request-target outside OPTIONS";
    size_t skip = 0;
    if (t.len >= 7 && strncasecmp(t.ptr, "http://", 7) == 0)
        skip = 7;
    else if (t.len >= 8 && strncasecmp(t.ptr, "https://", 8) == 0)
        skip = 8;
    else
        return "request-target is not origin-form or an http(s) absolute-URI";
    const char *a = t.ptr + skip, *end = t.ptr + t.len, *e = a;
    while (e < end && *e != '/' && *e != '?')
        e++;
    if (memchr(a, '@', (size_t)(e - a)))
        return "userinfo in the request-target";
    const char *colon = NULL;
    if (a < e && *a == '[') { /* IP-literal */
        const char *rb = memchr(a, ']', (size_t)(e - a));
        if (!rb || rb == a + 1)
            return "malformed host in the request-target";
        colon = rb + 1 < e ? rb + 1 : NULL;
        if (colon && *colon != ':')
            return "malformed host in the request-target";
    } else {
        colon = memchr(a, ':', (size_t)(e - a));
        if ((colon ? colon : e) == a)
            return "empty host in the request-target";
    }
    if (colon) {
        const char *d = colon + 1;
        unsigned long port = 0;
        if (d == e || e - d > 5)
            return "invalid port in the request-target";
        for (; d < e; d++) {
            if (*d < '0' || *d > '9')
                return "invalid port in the request-target";
            port = port * 10 + (unsigned long)(*d - '0');
        }
        if (port == 0 || port > 65535)
            return "invalid port in the request-target";
    }
    /* The authority replaces Host upstream: the same rules as a Host field. */
    if (!gw_net_valid_uri_host(a, (size_t)(e - a)))
        return "malformed host in the request-target";
    return check_path(e, end);
}

/* The head is complete: validate it, fill in the framing summary, and
 * either pause (a body follows) or tell llhttp to skip the body (1), which
 * runs on_message_complete in the same execute call. */
static int on_headers_complete(llhttp_t *ll)
{
    struct gw_http_parser *p = parser_of(ll);
    struct gw_http_head *h = &p->head;
    bool req = p->kind == GW_HTTP_REQUEST;

    p->ev_head = true;
    h->http_major = ll->http_major;
    h->http_minor = ll->http_minor;
    /* llhttp accepts 0.9 and 2.0 heads; we only speak 1.0 and 1.1. */
    if (h->http_major != 1 || h->http_minor > 1)
        return fail(p, 400, "unsupported HTTP version");
    if (req) {
        h->method = ll->method;
        /* llhttp ends a CONNECT message at its head whatever it declares,
         * and what follows is a tunnel: refuse rather than mis-frame. */
        if (ll->method == HTTP_CONNECT)
            return fail(p, 400, "the CONNECT method is not supported");
        const char *bad = check_target(h->target, (int)ll->method);
        if (bad)
            return fail(p, 400, bad);
    } else {
        h->status = ll->status_code;
        if (h->status < 100 || h->status > 599)
            return fail(p, 502, "invalid status code");
        /* A switch to a protocol that was not asked for is a protocol
         * violation (RFC 9110 §15.2.2) and what follows is not HTTP. */
        if (h->status == 101 && !p->allow_switch)
            return fail(p, 502, "unexpected 101 Switching Protocols");
    }
    if (check_framing(p, ll) != 0)
        return -1;

    bool skip;
    if (req) {
        h->has_body = h->chunked || h->content_length > 0;
        skip = !h->has_body;
        h->expect_continue =
            h->http_minor == 1 && gw_http_head_has_token(h, "expect", "100-continue");
        h->upgrade = ll->upgrade != 0;
    } else {
        /* RFC 9112 §6.3: HEAD responses, 1xx, 204 and 304 end at the head. */
        h->informational = h->status / 100 == 1;
        skip = p->no_body || h->informational || h->status == 204 || h->status == 304;
        if (!skip) {
            h->body_until_close = llhttp_message_needs_eof(ll) != 0;
            h->has_body = h->chunked || h->content_length > 0 || h->body_until_close;
            skip = !h->has_body;
        }
    }
    if (p->max_body_bytes != 0 && h->has_body && h->content_length > 0 &&
        (uint64_t)h->content_length > p->max_body_bytes)
        return fail_body_limit(p);

    if (skip) {
        /* Returning 1 sets this flag too; set it first so that
         * llhttp_should_keep_alive does not take a bodiless response
         * for one delimited by close. */
        ll->flags |= F_SKIPBODY;
        h->keep_alive = llhttp_should_keep_alive(ll) != 0;
        return 1;
    }
    h->keep_alive = llhttp_should_keep_alive(ll) != 0;
    return HPE_PAUSED;
}

static int on_body_span(llhttp_t *ll, const char *at, size_t len)
{
    struct gw_http_parser *p = parser_of(ll);
    if (len == 0)
        return 0;
    p->body_bytes += len;
    if (p->max_body_bytes != 0 && p->body_bytes > p->max_body_bytes)
        return fail_body_limit(p);
    if (p->on_body && p->on_body(p->ctx, at, len) != 0)
        return fail(p, 500, "the message body could not be processed");
    return 0;
}

static int on_chunk_extension(llhttp_t *ll, const char *at, size_t len)
{
    struct gw_http_parser *p = parser_of(ll);
    p->chunk_ext_bytes += len;
    if (p->chunk_ext_bytes > GW_HTTP_MAX_CHUNK_EXT)
        return fail(p, 400, "chunk extensions too long");
    return 0;
}

/* Called after each chunk-size line; llhttp holds the chunk size in
 * content_length. The last chunk pauses so that execute() learns where the
 * trailer section starts and can check its line endings. */
static int on_chunk_header(llhttp_t *ll)
{
    struct gw_http_parser *p = parser_of(ll);
    uint64_t len = ll->content_length;
    p->chunk_ext_bytes = 0;
    if (len == 0) {
        p->ev_last_chunk = true;
        return HPE_PAUSED;
    }
    /* Refuse an oversized chunk before streaming any of it. */
    if (p->max_body_bytes != 0 &&
        (len > p->max_body_bytes || p->body_bytes > p->max_body_bytes - len))
        return fail_body_limit(p);
    return 0;
}

static int on_message_complete(llhttp_t *ll)
{
    parser_of(ll)->ev_done = true;
    return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_method = on_span,
    .on_url = on_span,
    .on_status = on_span,
    .on_header_field = on_span,
    .on_header_value = on_span,
    .on_chunk_extension_name = on_chunk_extension,
    .on_chunk_extension_value = on_chunk_extension,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body_span,
    .on_message_complete = on_message_complete,
    .on_url_complete = on_url_complete,
    .on_status_complete = on_status_complete,
    .on_method_complete = on_method_complete,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value_complete = on_header_value_complete,
    .on_chunk_header = on_chunk_header,
};

/* ---- raw framing scan -------------------------------------------------- */

/* Bytes scan_framing must look at one by one; runs of other bytes (after
 * anything but CR) cannot offend and are skipped in bulk. */
static const bool framing_special[256] = {
    ['\r'] = true, ['\n'] = true, ['\0'] = true, [' '] = true, ['\t'] = true,
};

/* Checks line structure over raw head or trailer bytes, which llhttp strict
 * mode lets through: a line ending in bare LF (accepted after the start
 * line, at the end of the header section and of the trailers), a folded
 * line (obs-fold, accepted as part of the value), a bare CR, NUL, and
 * repeated spaces in the request line. RFC 9112 §2.2, §5.2.
 * Returns the index of the first offending byte with *why set, or, with
 * *why NULL, the index just past the empty line that ends the head (or the
 * trailers), or n; the state is advanced over the bytes before that index.
 * In a response a bare LF is no offence: the scan stops at it with
 * *inject_cr set, and the caller feeds llhttp a CR before the LF.
 * The state carries over between execute calls, so the verdict does not
 * depend on how the input is sliced. Bytes after the head are never
 * scanned: llhttp pauses at the end of every head, so they are body or the
 * next message. */
static size_t scan_framing(struct gw_http_parser *p, const char *s, size_t n, const char **why,
                           bool *inject_cr)
{
    char prev = p->scan_prev;
    bool request_line = p->kind == GW_HTTP_REQUEST && p->phase == PH_HEAD;
    size_t i;

    *why = NULL;
    for (i = 0; i < n; i++) {
        char c = s[i];
        if (!framing_special[(unsigned char)c] && prev != '\r') {
            size_t j = i + 1;
            while (j < n && !framing_special[(unsigned char)s[j]])
                j++;
            p->scan_col += (unsigned)(j - i);
            prev = s[j - 1];
            i = j - 1;
            continue;
        }
        if (c == '\n' && prev != '\r') {
            if (p->kind == GW_HTTP_REQUEST) {
                *why = "line terminated by a bare LF";
            } else {
                /* From an origin a bare LF ends a line (RFC 9112 §2.2):
                 * the caller hands llhttp a CR before it. */
                *inject_cr = true;
                break;
            }
        } else if (prev == '\r' && c != '\n')
            *why = "bare CR not followed by LF";
        else if (c == '\0')
            *why = "NUL byte in the start line or header fields";
        else if (prev == '\n' && is_ows(c))
            *why = "obs-fold (header line starting with whitespace)";
        else if (request_line && p->scan_lines == 0 && c == ' ' && prev == ' ')
            *why = "malformed request line";
        if (*why)
            break;
        prev = c;
        if (c == '\n') {
            bool empty = p->scan_col == 0;
            if (!empty)
                p->scan_lines++;
            p->scan_col = 0;
            /* The empty line ends the head (or trailers): what follows is
             * body or the next message, not judged here. */
            if (empty && (p->phase == PH_TRAILERS || p->scan_lines > 0)) {
                i++;
                break;
            }
        } else if (c != '\r') {
            p->scan_col++;
        }
    }
    p->scan_prev = prev;
    return i;
}

/* ---- chunk framing pre-pass -------------------------------------------- */

/* Where a chunked body is, for the pre-pass below. */
enum chunk_state {
    CK_SIZE = 0, /* a chunk-size line (with its extensions) */
    CK_DATA,     /* chunk data: chunk_left bytes */
    CK_DATA_END, /* the line ending after chunk data */
};

static bool is_tchar_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* RFC 9110 §5.6.4: qdtext and the byte after a backslash (obs-text kept). */
static bool is_qdtext(unsigned char c)
{
    return c == '\t' || c == ' ' || c == 0x21 || (c >= 0x23 && c <= 0x5b) ||
           (c >= 0x5d && c <= 0x7e) || c >= 0x80;
}

static bool is_quoted_pair_byte(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c <= 0x7e) || c >= 0x80;
}

/* The chunk-size digits at the start of s: their count (0: none, or a
 * value over 64 bits), the value in *v. */
static size_t size_digits(const unsigned char *s, size_t len, uint64_t *out)
{
    size_t i = 0;
    uint64_t v = 0;
    for (; i < len; i++) {
        int c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            break;
        if (v >> 60)
            return 0; /* more than 64 bits (leading zeros are fine) */
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return i;
}

/* The verdict on a line too long to hold whole, from its first digits. */
static const char *too_long(size_t digits)
{
    return digits == 0 || digits >= GW_HTTP_MAX_CHUNK_LINE ? "invalid chunk size"
                                                           : "chunk extensions too long";
}

const char *gw_http_chunk_line_check(const char *line, size_t len, uint64_t *size)
{
    const unsigned char *s = (const unsigned char *)line;
    uint64_t v = 0;
    size_t i = size_digits(s, len, &v);
    if (i == 0)
        return "invalid chunk size";
    if (len > GW_HTTP_MAX_CHUNK_LINE || len - i > GW_HTTP_MAX_CHUNK_EXT)
        return too_long(i);
    /* chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ) */
    for (bool first = true; i < len; first = false) {
        size_t start = i;
        while (i < len && (s[i] == ' ' || s[i] == '\t'))
            i++;
        if (i == len)
            return first ? "invalid chunk size" /* whitespace after the size alone */
                         : "invalid chunk extension";
        if (s[i] != ';')
            return first && start == i ? "invalid chunk size" : "invalid chunk extension";
        i++;
        while (i < len && (s[i] == ' ' || s[i] == '\t'))
            i++;
        size_t name = i;
        while (i < len && is_tchar_byte(s[i]))
            i++;
        if (i == name)
            return "invalid chunk extension";
        size_t after_name = i;
        while (i < len && (s[i] == ' ' || s[i] == '\t'))
            i++;
        if (i == len || s[i] != '=') {
            i = after_name; /* no value: the BWS belongs to the next ";" */
            continue;
        }
        i++;
        while (i < len && (s[i] == ' ' || s[i] == '\t'))
            i++;
        if (i < len && s[i] == '"') {
            for (i++;; i++) {
                if (i == len)
                    return "invalid chunk extension"; /* unterminated */
                if (s[i] == '"')
                    break;
                if (s[i] == '\\') {
                    if (++i == len || !is_quoted_pair_byte(s[i]))
                        return "invalid chunk extension";
                } else if (!is_qdtext(s[i])) {
                    return "invalid chunk extension";
                }
            }
            i++;
        } else {
            size_t val = i;
            while (i < len && is_tchar_byte(s[i]))
                i++;
            if (i == val)
                return "invalid chunk extension";
        }
    }
    *size = v;
    return NULL;
}

/* Gives llhttp n bytes of framing that are not input (a canonical size line
 * or CRLF). Returns llhttp's result; a pause must come at their end. */
static llhttp_errno_t feed_framing(struct gw_http_parser *p, const char *b, size_t n)
{
    llhttp_errno_t err = llhttp_execute(&p->llhttp, b, n);
    if (err == HPE_PAUSED && llhttp_get_error_pos(&p->llhttp) != b + n)
        return HPE_INTERNAL;
    return err;
}

/* The chunked body, with llhttp fed canonical framing: every chunk-size
 * line is checked by gw_http_chunk_line_check and replaced by "<hex>\r\n"
 * (extensions stripped; llhttp 8.1 refuses valid ones), the line after each
 * chunk's data by "\r\n", and from an origin a bare LF ends either line
 * (RFC 9112 §2.2; a request's stays an error). Data goes to llhttp as it
 * is. Returns llhttp's result (HPE_USER after fail()); *used is the input
 * consumed, all of it on HPE_OK (a partial line is held in chunk_line). */
static llhttp_errno_t chunk_feed(struct gw_http_parser *p, const char *s, size_t n, size_t *used)
{
    bool req = p->kind == GW_HTTP_REQUEST;
    size_t i = 0;
    *used = 0;
    while (i < n) {
        if (p->chunk_state == CK_DATA) {
            size_t k = (size_t)GW_MIN((uint64_t)(n - i), p->chunk_left);
            llhttp_errno_t err = llhttp_execute(&p->llhttp, s + i, k);
            if (err != HPE_OK) {
                *used = i;
                return err == HPE_PAUSED ? HPE_INTERNAL : err; /* no pause in data */
            }
            i += k;
            p->chunk_left -= k;
            if (p->chunk_left == 0) {
                p->chunk_state = CK_DATA_END;
                p->chunk_line_len = 0;
            }
            continue;
        }
        const char *lf = memchr(s + i, '\n', n - i);
        size_t take = lf ? (size_t)(lf - (s + i)) : n - i;
        if (take > sizeof(p->chunk_line) - p->chunk_line_len) {
            *used = i;
            if (p->chunk_state == CK_DATA_END)
                fail(p, 400, "malformed line ending or chunk framing");
            else {
                /* The line is longer than GW_HTTP_MAX_CHUNK_LINE: judged as
                 * gw_http_chunk_line_check judges such a line. */
                memcpy(p->chunk_line + p->chunk_line_len, s + i,
                       sizeof(p->chunk_line) - p->chunk_line_len);
                uint64_t v;
                fail(p, 400,
                     too_long(size_digits((const unsigned char *)p->chunk_line,
                                          sizeof(p->chunk_line), &v)));
            }
            return HPE_USER;
        }
        memcpy(p->chunk_line + p->chunk_line_len, s + i, take);
        p->chunk_line_len += take;
        i += take;
        if (!lf)
            break;
        i++; /* the LF */
        size_t ll = p->chunk_line_len;
        bool crlf = ll > 0 && p->chunk_line[ll - 1] == '\r';
        if (crlf)
            ll--;
        p->chunk_line_len = 0;
        *used = i;
        if (memchr(p->chunk_line, '\r', ll)) {
            fail(p, 400, "bare CR not followed by LF");
            return HPE_USER;
        }
        if (p->chunk_state == CK_DATA_END) {
            if (ll != 0 || (!crlf && req)) {
                fail(p, 400, "malformed line ending or chunk framing");
                return HPE_USER;
            }
            llhttp_errno_t err = feed_framing(p, "\r\n", 2);
            if (err != HPE_OK)
                return err;
            p->chunk_state = CK_SIZE;
            continue;
        }
        uint64_t size = 0;
        const char *why = gw_http_chunk_line_check(p->chunk_line, ll, &size);
        if (why == NULL && !crlf && req)
            why = "invalid chunk size"; /* a bare LF (what llhttp said before) */
        if (why) {
            fail(p, 400, why);
            return HPE_USER;
        }
        char hex[20];
        int hn = snprintf(hex, sizeof(hex), "%" PRIx64 "\r\n", size);
        llhttp_errno_t err = feed_framing(p, hex, (size_t)hn);
        if (size == 0) {
            /* The last chunk: on_chunk_header paused; trailers follow. */
            return err;
        }
        if (err != HPE_OK)
            return err;
        p->chunk_state = CK_DATA;
        p->chunk_left = size;
    }
    *used = n;
    return HPE_OK;
}

/* ---- errors from llhttp ------------------------------------------------ */

static const char *llhttp_detail(llhttp_errno_t err)
{
    switch (err) {
    case HPE_INVALID_METHOD:
        return "invalid method";
    case HPE_INVALID_URL:
        return "invalid request-target";
    case HPE_INVALID_VERSION:
        return "unsupported HTTP version";
    case HPE_INVALID_CONSTANT:
        return "malformed start line";
    case HPE_INVALID_STATUS:
        return "invalid status code";
    case HPE_INVALID_HEADER_TOKEN:
        return "invalid character in a header field";
    case HPE_UNEXPECTED_SPACE:
        return "unexpected whitespace in the header section";
    case HPE_INVALID_CONTENT_LENGTH:
        return "invalid Content-Length";
    case HPE_UNEXPECTED_CONTENT_LENGTH:
        return "conflicting Content-Length or Transfer-Encoding headers";
    case HPE_INVALID_TRANSFER_ENCODING:
        return "invalid Transfer-Encoding";
    case HPE_INVALID_CHUNK_SIZE:
        return "invalid chunk size";
    case HPE_CR_EXPECTED:
    case HPE_LF_EXPECTED:
    case HPE_STRICT:
        return "malformed line ending or chunk framing";
    case HPE_CLOSED_CONNECTION:
        return "data after a message that closes the connection";
    case HPE_PAUSED_UPGRADE:
        return "protocol upgrade is not supported";
    case HPE_PAUSED_H2_UPGRADE:
        return "HTTP/2 is not supported";
    default:
        return "malformed HTTP message";
    }
}

static enum gw_http_result parse_error(struct gw_http_parser *p, llhttp_errno_t err)
{
    if (p->error_status == 0)
        fail(p, 400, llhttp_detail(err));
    p->phase = PH_ERROR;
    p->pending_done = false;
    return GW_HTTP_ERROR;
}

/* ---- public API -------------------------------------------------------- */

static void clear_message(struct gw_http_parser *p)
{
    /* headers[] (4 KiB) is not cleared: entries past header_count are never
     * read, and this runs twice per proxied request. */
    struct gw_http_head *h = &p->head;
    memset(h, 0, offsetof(struct gw_http_head, headers));
    memset(&h->header_count, 0, sizeof(*h) - offsetof(struct gw_http_head, header_count));
    h->content_length = -1;
    p->storage_used = 0;
    p->elem_off = 0;
    p->head_bytes = 0;
    p->body_bytes = 0;
    p->phase = PH_HEAD;
    p->pending_done = false;
    p->in_value = false;
    p->error_status = 0;
    p->error_detail = NULL;
    p->error_buf[0] = '\0';
    p->trailer_bytes = 0;
    p->trailer_count = 0;
    gw_buf_clear(&p->trailers);
    p->trailer_elem = p->trailer_value = 0;
    p->trailer_skip = false;
    p->chunk_ext_bytes = 0;
    p->chunk_state = CK_SIZE;
    p->chunk_left = 0;
    p->chunk_line_len = 0;
    p->scan_lines = 0;
    p->scan_col = 0;
    p->scan_prev = 0;
    p->started = false;
    p->ev_head = p->ev_done = p->ev_last_chunk = false;
    p->ll_at_boundary = false;
}

static void init_llhttp(struct gw_http_parser *p)
{
    llhttp_init(&p->llhttp, p->kind == GW_HTTP_REQUEST ? HTTP_REQUEST : HTTP_RESPONSE, &settings);
    p->llhttp.data = p;
    /* Responses only: let llhttp frame "Transfer-Encoding: chunked" with a
     * Content-Length as chunked (check_framing drops the length); requests
     * carrying both stay refused. */
    if (p->kind == GW_HTTP_RESPONSE)
        llhttp_set_lenient_chunked_length(&p->llhttp, 1);
}

int gw_http_parser_init(struct gw_http_parser *p, enum gw_http_kind kind, size_t max_head_bytes,
                        uint64_t max_body_bytes, gw_http_body_fn on_body, void *ctx)
{
    memset(p, 0, sizeof(*p));
    if (max_head_bytes == 0)
        return -EINVAL;
    p->storage = malloc(max_head_bytes);
    if (!p->storage)
        return -ENOMEM;
    p->kind = kind;
    p->max_head_bytes = max_head_bytes;
    p->max_body_bytes = max_body_bytes;
    p->on_body = on_body;
    p->ctx = ctx;
    init_llhttp(p);
    clear_message(p);
    return 0;
}

void gw_http_parser_deinit(struct gw_http_parser *p)
{
    gw_buf_release(&p->trailers);
    free(p->storage);
    p->storage = NULL;
    p->max_head_bytes = 0;
    p->storage_used = 0;
}

void gw_http_parser_reset(struct gw_http_parser *p)
{
    bool keep_no_body = p->head.informational && p->no_body;

    /* After a complete message llhttp sits paused right after
     * on_message_complete with its own per-message state already cleared
     * at the next step; resuming lets it run its keep-alive check (in strict
     * mode, data after a message that closes the connection is an error).
     * After an interim response or an upgrade request, or when the message
     * was cut short or failed, start llhttp afresh. */
    if (p->ll_at_boundary && !p->head.informational && !p->head.upgrade)
        llhttp_resume(&p->llhttp);
    else
        init_llhttp(p);
    clear_message(p);
    p->no_body = keep_no_body;
}

void gw_http_parser_recycle(struct gw_http_parser *p)
{
    init_llhttp(p);
    clear_message(p);
    p->no_body = false;
    p->allow_switch = false;
}

void gw_http_parser_set_upgrade(struct gw_http_parser *p, bool allow_switch)
{
    p->allow_switch = allow_switch;
}

void gw_http_parser_set_no_body(struct gw_http_parser *p, bool no_body)
{
    p->no_body = no_body;
}

enum gw_http_result gw_http_parser_execute(struct gw_http_parser *p, const char *data, size_t len,
                                           size_t *consumed)
{
    static const char nothing[1];
    size_t off = 0;

    *consumed = 0;
    if (p->phase == PH_ERROR)
        return GW_HTTP_ERROR;
    if (p->phase == PH_DONE)
        return GW_HTTP_DONE;
    if (p->pending_done) {
        /* The bodiless message ended in the call that reported HEAD. */
        p->pending_done = false;
        p->phase = PH_DONE;
        return GW_HTTP_DONE;
    }
    if (data == NULL) {
        data = nothing;
        len = 0;
    }
    if (p->phase == PH_HEAD_DONE) {
        llhttp_resume(&p->llhttp);
        p->phase = PH_BODY;
    }

    for (;;) {
        int phase0 = p->phase;
        const char *start = data + off;
        size_t n = len - off;

        if (phase0 == PH_BODY && p->head.chunked) {
            size_t used = 0;
            p->ev_head = p->ev_done = p->ev_last_chunk = false;
            llhttp_errno_t err = chunk_feed(p, start, n, &used);
            if (err != HPE_OK && err != HPE_PAUSED) {
                *consumed = off;
                return parse_error(p, err);
            }
            off += used;
            if (err == HPE_OK) {
                *consumed = len;
                return GW_HTTP_NEED_MORE;
            }
            if (!p->ev_last_chunk) {
                *consumed = off;
                return parse_error(p, HPE_INTERNAL);
            }
            p->phase = PH_TRAILERS; /* the trailer section is scanned as before */
            p->scan_prev = '\n';
            p->scan_col = 0;
            llhttp_resume(&p->llhttp);
            continue;
        }

        /* Give llhttp at most one byte past the head (or trailer) limit, so
         * the limit trips at the same byte however the input is sliced and
         * llhttp never chews through an oversized head. */
        if (phase0 == PH_HEAD)
            n = GW_MIN(n, p->max_head_bytes - p->head_bytes + 1);
        else if (phase0 == PH_TRAILERS)
            n = GW_MIN(n, p->max_head_bytes - p->trailer_bytes + 1);

        /* Framing bytes are checked before llhttp sees them, and llhttp is
         * stopped short of the first offending byte: if it completes the
         * head (or trailers) before that byte, the byte was body or the next
         * message and is not judged here; otherwise the offence is the
         * first error of the message, at the same byte however sliced. */
        const char *why = NULL;
        bool inject_cr = false;
        if (phase0 == PH_HEAD || phase0 == PH_TRAILERS)
            n = scan_framing(p, start, n, &why, &inject_cr);

        p->ev_head = p->ev_done = p->ev_last_chunk = false;
        llhttp_errno_t err = llhttp_execute(&p->llhttp, start, n);
        if (err != HPE_OK && err != HPE_PAUSED) {
            *consumed = off;
            return parse_error(p, err);
        }
        size_t used = err == HPE_OK ? n : (size_t)(llhttp_get_error_pos(&p->llhttp) - start);
        if (err == HPE_OK && inject_cr) {
            /* An origin's bare LF: llhttp (strict) sees CRLF. The CR is
             * not input, so it counts toward nothing. */
            err = llhttp_execute(&p->llhttp, "\r", 1);
            if (err != HPE_OK) {
                *consumed = off;
                return parse_error(p, err);
            }
            p->scan_prev = '\r';
        }
        if (err == HPE_OK && why) {
            fail(p, 400, why);
            *consumed = off;
            return parse_error(p, HPE_USER);
        }
        if (phase0 == PH_HEAD) {
            p->head_bytes += used;
            if (p->head_bytes > p->max_head_bytes) {
                fail_head_too_large(p);
                *consumed = off;
                return parse_error(p, HPE_USER);
            }
        } else if (phase0 == PH_TRAILERS) {
            p->trailer_bytes += used;
            if (p->trailer_bytes > p->max_head_bytes) {
                fail(p, 400, "trailer section too large");
                *consumed = off;
                return parse_error(p, HPE_USER);
            }
        }
        off += used;

        if (err == HPE_OK) {
            if (off < len)
                continue; /* unreachable with the caps above; kept safe */
            *consumed = len;
            return GW_HTTP_NEED_MORE;
        }
        if (p->ev_last_chunk) {
            /* Internal pause only: from here on the bytes are trailers. */
            p->phase = PH_TRAILERS;
            p->scan_prev = '\n';
            p->scan_col = 0;
            llhttp_resume(&p->llhttp);
            continue;
        }
        *consumed = off;
        if (p->ev_head) {
            if (p->ev_done) {
                p->pending_done = true;
                p->ll_at_boundary = true;
                p->phase = PH_BODY;
            } else {
                p->phase = PH_HEAD_DONE;
            }
            return GW_HTTP_HEAD;
        }
        if (p->ev_done) {
            p->phase = PH_DONE;
            p->ll_at_boundary = true;
            return GW_HTTP_DONE;
        }
        /* A pause none of our callbacks asked for cannot happen. */
        return parse_error(p, HPE_INTERNAL);
    }
}

enum gw_http_result gw_http_parser_finish(struct gw_http_parser *p)
{
    if (p->phase == PH_ERROR)
        return GW_HTTP_ERROR;
    if (p->phase == PH_DONE)
        return GW_HTTP_NEED_MORE;
    if (p->pending_done) {
        p->pending_done = false;
        p->phase = PH_DONE;
        return GW_HTTP_DONE;
    }
    switch (p->phase) {
    case PH_HEAD:
        if (!p->started)
            return GW_HTTP_NEED_MORE;
        fail(p, 400, "connection closed before the header section was complete");
        break;
    case PH_HEAD_DONE:
    case PH_BODY:
        if (p->head.body_until_close) {
            /* llhttp is left mid-body; reset re-initialises it. */
            p->phase = PH_DONE;
            return GW_HTTP_DONE;
        }
        fail(p, 400, "connection closed before the body was complete");
        break;
    default:
        fail(p, 400, "connection closed before the trailer section was complete");
        break;
    }
    p->phase = PH_ERROR;
    return GW_HTTP_ERROR;
}

struct gw_slice gw_http_parser_trailers(const struct gw_http_parser *p)
{
    if (p->phase != PH_DONE || gw_buf_len(&p->trailers) == 0)
        return (struct gw_slice){NULL, 0};
    return (struct gw_slice){gw_buf_head(&p->trailers), gw_buf_len(&p->trailers)};
}

bool gw_http_parser_done_pending(const struct gw_http_parser *p)
{
    return p->pending_done;
}

bool gw_http_parser_idle(const struct gw_http_parser *p)
{
    return p->phase == PH_DONE || (p->phase == PH_HEAD && p->head_bytes == 0 && !p->started);
}

const struct gw_http_header *gw_http_head_find(const struct gw_http_head *h, const char *name)
{
    for (size_t i = 0; i < h->header_count; i++) {
        if (gw_slice_eq_nocase(h->headers[i].name, name))
            return &h->headers[i];
    }
    return NULL;
}

bool gw_http_head_has_token(const struct gw_http_head *h, const char *name, const char *token)
{
    for (size_t i = 0; i < h->header_count; i++) {
        if (!gw_slice_eq_nocase(h->headers[i].name, name))
            continue;
        struct list_walk w;
        list_start(&w, h->headers[i].value);
        while (list_next(&w, NULL)) {
            if (gw_slice_eq_nocase(w.el, token))
                return true;
        }
    }
    return false;
}
