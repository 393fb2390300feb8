/*
 * Proxy head rewriting (see gw/proxy.h): turns a parsed client request into
 * the head sent upstream and a parsed upstream response into the head sent to
 * the client, dropping hop-by-hop fields (RFC 9110 §7.6.1) and choosing each
 * side's framing (RFC 9112 §6). Runs once per request per direction, so it
 * computes an upper bound, reserves once and memcpy's straight into the buffer.
 */
#include "gw/proxy.h"
#include "gw/path.h"

#include "gw/response.h"
#include "put.h"

#include <assert.h>
#include <errno.h>
#include <string.h>
#include <strings.h>

/* What a field name means to the proxy. Names are case-insensitive
 * (RFC 9110 §5.1). */
enum field_kind {
    FK_OTHER = 0,         /* end-to-end: forwarded unchanged */
    FK_DROP,              /* named by a Connection option: hop-by-hop */
    FK_CONNECTION,        /* hop-by-hop (RFC 9110 §7.6.1) */
    FK_KEEP_ALIVE,        /* hop-by-hop */
    FK_PROXY_CONNECTION,  /* hop-by-hop (non-standard, still seen) */
    FK_TE,                /* hop-by-hop */
    FK_TRAILER,           /* hop-by-hop */
    FK_TRANSFER_ENCODING, /* hop-by-hop, re-framed */
    FK_UPGRADE,           /* hop-by-hop */
    FK_CONTENT_LENGTH,    /* re-framed from the parsed value */
    FK_HOST,              /* requests: rewritten per PRESERVE_HOST */
    FK_EXPECT,            /* requests: the gateway answers 100-continue itself */
    FK_XFF,               /* requests: merged and appended to */
    FK_XFP,               /* requests: set by the gateway */
    FK_XFH,               /* requests: set by the gateway */
};

#define LIT(s) (s), (sizeof(s) - 1)

static inline bool name_is(struct gw_slice n, const char *lit, size_t lit_len)
{
    return n.len == lit_len && strncasecmp(n.ptr, lit, lit_len) == 0;
}

/* Dispatch on the length first: most names are rejected by one compare. */
static enum field_kind classify(struct gw_slice n)
{
    switch (n.len) {
    case 2:
        return name_is(n, LIT("te")) ? FK_TE : FK_OTHER;
    case 4:
        return name_is(n, LIT("host")) ? FK_HOST : FK_OTHER;
    case 6:
        return name_is(n, LIT("expect")) ? FK_EXPECT : FK_OTHER;
    case 7:
        if (name_is(n, LIT("trailer")))
            return FK_TRAILER;
        return name_is(n, LIT("upgrade")) ? FK_UPGRADE : FK_OTHER;
    case 10:
        if (name_is(n, LIT("connection")))
            return FK_CONNECTION;
        return name_is(n, LIT("keep-alive")) ? FK_KEEP_ALIVE : FK_OTHER;
    case 14:
        return name_is(n, LIT("content-length")) ? FK_CONTENT_LENGTH : FK_OTHER;
    case 15:
        return name_is(n, LIT("x-forwarded-for")) ? FK_XFF : FK_OTHER;
    case 16:
        if (name_is(n, LIT("proxy-connection")))
            return FK_PROXY_CONNECTION;
        return name_is(n, LIT("x-forwarded-host")) ? FK_XFH : FK_OTHER;
    case 17:
        if (name_is(n, LIT("transfer-encoding")))
            return FK_TRANSFER_ENCODING;
        return name_is(n, LIT("x-forwarded-proto")) ? FK_XFP : FK_OTHER;
    default:
        return FK_OTHER;
    }
}

static inline bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Classifies every header of h into kinds[], then marks as FK_DROP each
 * end-to-end field whose name is a connection option (RFC 9110 §7.6.1:
 * Connection: a, b). Fields the gateway rewrites itself keep their kind, so
 * a Connection option can remove the client's copy of X-Forwarded-For but
 * never the one the gateway adds. The token scan is O(options x fields),
 * both bounded by MAX_HEADER_BYTES; real requests carry one or two options. */
static void classify_all(const struct gw_http_head *h, size_t count, uint8_t *kinds)
{
    bool has_connection = false;
    for (size_t i = 0; i < count; i++) {
        kinds[i] = (uint8_t)classify(h->headers[i].name);
        has_connection |= kinds[i] == FK_CONNECTION;
    }
    if (!has_connection)
        return;
    for (size_t c = 0; c < count; c++) {
        if (kinds[c] != FK_CONNECTION)
            continue;
        const char *v = h->headers[c].value.ptr;
        const char *end = v + h->headers[c].value.len;
        while (v < end) {
            /* One list element: skip OWS and empty elements ("a, ,b"). */
            while (v < end && (is_ows(*v) || *v == ','))
                v++;
            const char *tok = v;
            while (v < end && *v != ',')
                v++;
            const char *tok_end = v;
            while (tok_end > tok && is_ows(tok_end[-1]))
                tok_end--;
            struct gw_slice t = {tok, (size_t)(tok_end - tok)};
            if (t.len == 0)
                continue;
            for (size_t i = 0; i < count; i++) {
                if ((kinds[i] == FK_OTHER || kinds[i] == FK_XFF) &&
                    h->headers[i].name.len == t.len &&
                    strncasecmp(h->headers[i].name.ptr, t.ptr, t.len) == 0)
                    kinds[i] = FK_DROP;
            }
        }
    }
}

/* ---- raw writers: the caller has reserved room ------------------------- */

static inline char *put_field(char *p, struct gw_slice name, struct gw_slice value)
{
    p = gw_put(p, name.ptr, name.len);
    p = GW_PUT_LIT(p, ": ");
    p = gw_put(p, value.ptr, value.len);
    return GW_PUT_LIT(p, "\r\n");
}

/* Bytes put_field writes. */
static inline size_t field_size(const struct gw_http_header *f)
{
    return f->name.len + f->value.len + 4;
}

/* ---- request ----------------------------------------------------------- */

/* The request-target to send upstream and, for absolute-form, the authority
 * that replaces Host (RFC 9112 §3.2.2). */
struct target_parts {
    struct gw_slice path;      /* origin-form path[?query], or "*" etc. */
    bool root;                 /* path was empty: send "/" before it */
    bool use_base;             /* prefix base_path */
    struct gw_slice authority; /* absolute-form host[:port], len 0 otherwise */
};

static bool has_prefix_nocase(struct gw_slice s, const char *lit, size_t lit_len)
{
    return s.len >= lit_len && strncasecmp(s.ptr, lit, lit_len) == 0;
}

/* origin-form ("/p?q") gets the base path prefixed. absolute-form
 * ("http://host/p?q", what clients send to proxies) is reduced to origin-form
 * with the base path, its authority (userinfo dropped) becoming the client's
 * Host. asterisk-form ("*", OPTIONS) goes unchanged. The request parser
 * admits nothing else (http1.c check_target, RFC 9112 §3.2); userinfo is
 * still dropped here for heads built by other callers. */
static void split_target(struct gw_slice t, struct target_parts *out)
{
    out->path = t;
    out->root = false;
    out->use_base = t.len > 0 && t.ptr[0] == '/';
    out->authority = (struct gw_slice){NULL, 0};

    size_t skip = 0;
    if (has_prefix_nocase(t, LIT("http://")))
        skip = sizeof("http://") - 1;
    else if (has_prefix_nocase(t, LIT("https://")))
        skip = sizeof("https://") - 1;
    if (!skip)
        return;
    const char *a = t.ptr + skip;
    const char *end = t.ptr + t.len;
    const char *p = a;
    while (p < end && *p != '/' && *p != '?' && *p != '#')
        p++;
    for (const char *q = p; q > a; q--) {
        if (q[-1] == '@') { /* userinfo is never forwarded (RFC 9110 §4.2.4) */
            a = q;
            break;
        }
    }
    out->authority = (struct gw_slice){a, (size_t)(p - a)};
    out->path = (struct gw_slice){p, (size_t)(end - p)};
    out->root = p == end || *p != '/';
    out->use_base = true;
}

/* Writes the target's path with its dot-segments removed (RFC 3986 §5.2.4),
 * then its query unchanged; other forms ("*") go as they are. Never longer
 * than the target, so the caller's bound holds. */
static char *put_target_path(char *p, const struct target_parts *tp)
{
    const char *s = tp->path.ptr;
    size_t n = tp->path.len;
    if (n == 0 || s[0] != '/')
        return gw_put(p, s, n);
    const char *q = memchr(s, '?', n);
    size_t plen = q ? (size_t)(q - s) : n;
    p += gw_path_remove_dots(s, plen, p);
    return gw_put(p, s + plen, n - plen);
}

/* Methods that define a meaning for content: a bodiless one still gets
 * Content-Length: 0 so strict backends do not answer 411 (RFC 9110 §8.6). */
static bool method_wants_length(struct gw_slice m)
{
    return (m.len == 4 && memcmp(m.ptr, "POST", 4) == 0) ||
           (m.len == 3 && memcmp(m.ptr, "PUT", 3) == 0) ||
           (m.len == 5 && memcmp(m.ptr, "PATCH", 5) == 0);
}

int gw_proxy_write_request_head(struct gw_buf *out, const struct gw_http_head *req,
                                const struct gw_proxy_request_ctx *ctx, enum gw_framing *framing)
{
    size_t count = GW_MIN(req->header_count, (size_t)GW_HTTP_MAX_HEADERS);
    uint8_t kinds[GW_HTTP_MAX_HEADERS];
    classify_all(req, count, kinds);

    struct target_parts tp;
    split_target(req->target, &tp);

    const char *base = ctx->base_path ? ctx->base_path : "";
    size_t base_len = tp.use_base ? strlen(base) : 0;
    const char *client = ctx->client_addr;
    size_t client_len = client ? strlen(client) : 0;
    const char *backend = ctx->backend_hostport ? ctx->backend_hostport : "";
    size_t backend_len = strlen(backend);
    const char *proto = ctx->forwarded_proto ? ctx->forwarded_proto : "http";
    size_t proto_len = strlen(proto);

    /* The client's host: absolute-form authority wins over Host
     * (RFC 9112 §3.2.2); an empty Host counts as none. Connection options
     * never hide it: Host is routing data, not a hop-by-hop field. */
    struct gw_slice client_host = tp.authority;
    size_t bound = 0, xff_count = 0;
    for (size_t i = 0; i < count; i++) {
        const struct gw_http_header *f = &req->headers[i];
        if (kinds[i] == FK_HOST && client_host.len == 0)
            client_host = f->value;
        if (kinds[i] == FK_XFF && f->value.len > 0)
            xff_count++;
        bound += field_size(f);
    }
    struct gw_slice host = ctx->preserve_host && client_host.len
                               ? client_host
                               : (struct gw_slice){backend, backend_len};

    bound += req->method_name.len + 1 + base_len + 1 + tp.path.len + sizeof(" HTTP/1.1\r\n");
    bound += sizeof("Host: \r\n") + host.len;
    bound += sizeof("X-Forwarded-For: \r\n") + 2 * xff_count + client_len;
    bound += sizeof("X-Forwarded-Proto: \r\n") + proto_len;
    bound += sizeof("X-Forwarded-Host: \r\n") + client_host.len;
    bound +=
        sizeof("Content-Length: \r\n") + GW_PUT_U64_DIGITS; /* > "Transfer-Encoding: chunked" */
    bound += sizeof("Connection: close\r\n") + 2;

    int rc = gw_buf_reserve(out, bound);
    if (rc)
        return rc;
    char *const start = out->data + out->end;
    char *p = start;

    /* Request line (RFC 9112 §3): always HTTP/1.1 upstream. */
    p = gw_put(p, req->method_name.ptr, req->method_name.len);
    *p++ = ' ';
    p = gw_put(p, base, base_len);
    if (tp.root)
        *p++ = '/';
    p = put_target_path(p, &tp);
    p = GW_PUT_LIT(p, " HTTP/1.1\r\n");

    /* Host first (RFC 9112 §3.2), then the end-to-end fields in order. */
    p = GW_PUT_LIT(p, "Host: ");
    p = gw_put(p, host.ptr, host.len);
    p = GW_PUT_LIT(p, "\r\n");
    for (size_t i = 0; i < count; i++) {
        if (kinds[i] == FK_OTHER || (ctx->upgrade && kinds[i] == FK_UPGRADE))
            p = put_field(p, req->headers[i].name, req->headers[i].value);
    }

    /* X-Forwarded-For: every earlier hop the client listed, in order, then
     * the client itself as one field line. */
    if (xff_count || client_len) {
        p = GW_PUT_LIT(p, "X-Forwarded-For: ");
        bool first = true;
        for (size_t i = 0; i < count; i++) {
            if (kinds[i] != FK_XFF || req->headers[i].value.len == 0)
                continue;
            if (!first)
                p = GW_PUT_LIT(p, ", ");
            p = gw_put(p, req->headers[i].value.ptr, req->headers[i].value.len);
            first = false;
        }
        if (client_len) {
            if (!first)
                p = GW_PUT_LIT(p, ", ");
            p = gw_put(p, client, client_len);
        }
        p = GW_PUT_LIT(p, "\r\n");
    }
    p = GW_PUT_LIT(p, "X-Forwarded-Proto: ");
    p = gw_put(p, proto, proto_len);
    p = GW_PUT_LIT(p, "\r\n");
    if (client_host.len) {
        p = GW_PUT_LIT(p, "X-Forwarded-Host: ");
        p = gw_put(p, client_host.ptr, client_host.len);
        p = GW_PUT_LIT(p, "\r\n");
    }

    /* Framing (RFC 9112 §6.1-6.3): the parser already rejected CL+TE. */
    if (req->chunked) {
        p = GW_PUT_LIT(p, "Transfer-Encoding: chunked\r\n");
        *framing = GW_FRAMING_CHUNKED;
    } else if (req->content_length >= 0) {
        p = GW_PUT_LIT(p, "Content-Length: ");
        p = gw_put_u64(p, (uint64_t)req->content_length);
        p = GW_PUT_LIT(p, "\r\n");
        *framing = req->content_length > 0 ? GW_FRAMING_LENGTH : GW_FRAMING_NONE;
    } else {
        if (method_wants_length(req->method_name))
            p = GW_PUT_LIT(p, "Content-Length: 0\r\n");
        *framing = GW_FRAMING_NONE;
    }
    if (ctx->upgrade)
        p = GW_PUT_LIT(p, "Connection: upgrade\r\n"); /* the one hop-by-hop kept (§13) */
    else if (!ctx->upstream_keepalive)
        p = GW_PUT_LIT(p, "Connection: close\r\n");
    p = GW_PUT_LIT(p, "\r\n");

    assert((size_t)(p - start) <= bound);
    gw_buf_commit(out, (size_t)(p - start));
    return 0;
}

/* ---- response ---------------------------------------------------------- */

int gw_proxy_write_response_head(struct gw_buf *out, const struct gw_http_head *resp,
                                 const struct gw_proxy_response_ctx *ctx, enum gw_framing *framing,
                                 bool *must_close)
{
    size_t count = GW_MIN(resp->header_count, (size_t)GW_HTTP_MAX_HEADERS);
    uint8_t kinds[GW_HTTP_MAX_HEADERS];
    classify_all(resp, count, kinds);

    struct gw_slice reason = resp->reason;
    if (reason.len == 0) {
        const char *r = gw_response_reason(resp->status);
        reason = (struct gw_slice){r, strlen(r)};
    }
    int status = resp->status;
    bool interim = status >= 100 && status < 200;
    bool bodiless = ctx->request_is_head || status == 204 || status == 304;

    size_t bound = sizeof("HTTP/1.1  \r\n") + 11 + reason.len;
    for (size_t i = 0; i < count; i++)
        bound += field_size(&resp->headers[i]);
    bound += ctx->extra.len;
    bound +=
        sizeof("Content-Length: \r\n") + GW_PUT_U64_DIGITS; /* > "Transfer-Encoding: chunked" */
    bound += sizeof("Connection: keep-alive\r\n") + 2;

    int rc = gw_buf_reserve(out, bound);
    if (rc)
        return rc;
    char *const start = out->data + out->end;
    char *p = start;

    /* Status line: our version, not the upstream's (RFC 9110 §6.2). */
    p = GW_PUT_LIT(p, "HTTP/1.1 ");
    p = gw_put_u64(p, status < 0 ? 0u : (uint64_t)status);
    *p++ = ' ';
    p = gw_put(p, reason.ptr, reason.len);
    p = GW_PUT_LIT(p, "\r\n");

    /* End-to-end fields in order; in a response Host, Expect and X-Forwarded-*
     * mean nothing to us and pass like any other field. */
    for (size_t i = 0; i < count; i++) {
        switch (kinds[i]) {
        case FK_OTHER:
        case FK_HOST:
        case FK_EXPECT:
        case FK_XFF:
        case FK_XFP:
        case FK_XFH:
            p = put_field(p, resp->headers[i].name, resp->headers[i].value);
            break;
        case FK_UPGRADE:
            if (ctx->upgrade && status == 101)
                p = put_field(p, resp->headers[i].name, resp->headers[i].value);
            break;
        default:
            break;
        }
    }

    if (interim) {
        /* 1xx: no content, no framing, no extra lines (they belong to the
         * final response), and the connection's fate is decided by the final
         * response (RFC 9110 §15.2). */
        *framing = GW_FRAMING_NONE;
        *must_close = false;
        if (ctx->upgrade && status == 101)
            p = GW_PUT_LIT(p, "Connection: upgrade\r\n");
        p = GW_PUT_LIT(p, "\r\n");
        assert((size_t)(p - start) <= bound);
        gw_buf_commit(out, (size_t)(p - start));
        return 0;
    }

    p = gw_put(p, ctx->extra.ptr, ctx->extra.len);
    bool close = !ctx->keep_alive;
    if (bodiless) {
        /* HEAD and 304 advertise the length the GET would have had
         * (RFC 9110 §8.6); 204 must not carry one. */
        if (status != 204 && resp->content_length >= 0 && !resp->chunked) {
            p = GW_PUT_LIT(p, "Content-Length: ");
            p = gw_put_u64(p, (uint64_t)resp->content_length);
            p = GW_PUT_LIT(p, "\r\n");
        }
        *framing = GW_FRAMING_NONE;
    } else if (!resp->chunked && resp->content_length >= 0) {
        p = GW_PUT_LIT(p, "Content-Length: ");
        p = gw_put_u64(p, (uint64_t)resp->content_length);
        p = GW_PUT_LIT(p, "\r\n");
        *framing = resp->content_length > 0 ? GW_FRAMING_LENGTH : GW_FRAMING_NONE;
    } else if (resp->chunked || resp->body_until_close || resp->has_body) {
        /* Length unknown: re-chunk for HTTP/1.1, delimit by close for 1.0
         * (RFC 9112 §6.3 item 8, §7). */
        if (ctx->client_minor >= 1) {
            p = GW_PUT_LIT(p, "Transfer-Encoding: chunked\r\n");
            *framing = GW_FRAMING_CHUNKED;
        } else {
            *framing = GW_FRAMING_CLOSE;
            close = true;
        }
    } else {
        /* No body at all: say so, so a kept connection stays in sync. */
        p = GW_PUT_LIT(p, "Content-Length: 0\r\n");
        *framing = GW_FRAMING_NONE;
    }

    if (close)
        p = GW_PUT_LIT(p, "Connection: close\r\n");
    else if (ctx->client_minor == 0)
        p = GW_PUT_LIT(p, "Connection: keep-alive\r\n");
    p = GW_PUT_LIT(p, "\r\n");
    *must_close = close;

    assert((size_t)(p - start) <= bound);
    gw_buf_commit(out, (size_t)(p - start));
    return 0;
}

/* ---- chunked body (RFC 9112 §7.1) -------------------------------------- */

int gw_proxy_write_chunk(struct gw_buf *out, const char *data, size_t len)
{
    if (len == 0)
        return 0;
    int rc = gw_buf_reserve(out, len + GW_PROXY_CHUNK_OVERHEAD);
    if (rc)
        return rc;
    static const char hex[] = "0123456789abcdef";
    char tmp[2 * sizeof(size_t)];
    size_t n = 0;
    for (size_t v = len; v; v >>= 4)
        tmp[n++] = hex[v & 0xf];
    char *const start = out->data + out->end;
    char *p = start;
    while (n)
        *p++ = tmp[--n];
    p = GW_PUT_LIT(p, "\r\n");
    p = gw_put(p, data, len);
    p = GW_PUT_LIT(p, "\r\n");
    gw_buf_commit(out, (size_t)(p - start));
    return 0;
}

int gw_proxy_write_last_chunk(struct gw_buf *out)
{
    return gw_buf_append(out, "0\r\n\r\n", 5);
}

int gw_proxy_write_last_chunk_trailers(struct gw_buf *out, struct gw_slice trailers)
{
    if (trailers.len == 0)
        return gw_proxy_write_last_chunk(out);
    int rc = gw_buf_reserve(out, trailers.len + 5);
    if (rc)
        return rc;
    char *const start = out->data + out->end;
    char *p = GW_PUT_LIT(start, "0\r\n");
    p = gw_put(p, trailers.ptr, trailers.len);
    p = GW_PUT_LIT(p, "\r\n");
    gw_buf_commit(out, (size_t)(p - start));
    return 0;
}
