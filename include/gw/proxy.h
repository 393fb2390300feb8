/*
 * Proxy header rewriting and body re-framing (RFC 9110 §7.6, RFC 9112 §6-7):
 * builds the head sent upstream from a parsed client request and the head
 * sent to the client from a parsed upstream response, removing hop-by-hop
 * fields and choosing each side's framing. Pure functions, no I/O.
 * Thread-safe (no shared state).
 */
#ifndef GW_PROXY_H
#define GW_PROXY_H

#include "gw/buf.h"
#include "gw/common.h"
#include "gw/http1.h"

/* How a body is delimited on one side of the proxy. */
enum gw_framing {
    GW_FRAMING_NONE = 0, /* no body */
    GW_FRAMING_LENGTH,   /* Content-Length: exactly n bytes */
    GW_FRAMING_CHUNKED,  /* Transfer-Encoding: chunked, we write chunk framing */
    GW_FRAMING_CLOSE,    /* body ends when we close (responses to HTTP/1.0 clients) */
};

struct gw_proxy_request_ctx {
    const char *client_addr;      /* textual client address appended to X-Forwarded-For */
    const char *base_path;        /* BACKEND_URL base path, "" when none, no trailing '/' */
    const char *backend_hostport; /* "host:port" used as Host when !preserve_host */
    bool preserve_host;           /* PRESERVE_HOST */
    bool upstream_keepalive;      /* false: send Connection: close */
    const char *forwarded_proto;  /* "http" */
    bool upgrade;                 /* forward the client's Upgrade fields with
                                     "Connection: upgrade" (SPEC.md §13) */
};

/* Appends the upstream request head for req to out (RFC 9110 §7.6, RFC 9112 §3):
 *
 *   <method> <target> HTTP/1.1
 *   Host: <preserve_host ? client's host : backend_hostport>
 *   <end-to-end fields of req, in order, unchanged>
 *   X-Forwarded-For: <client's XFF values joined by ", ">, <client_addr>
 *   X-Forwarded-Proto: <forwarded_proto, "http" when NULL>
 *   X-Forwarded-Host: <client's host>              (only when it has one)
 *   Content-Length: <n> | Transfer-Encoding: chunked   (framing)
 *   Connection: close                              (only when !upstream_keepalive)
 *   Upgrade: <the client's>, Connection: upgrade   (instead, when ctx->upgrade)
 *
 * Target: origin-form "/p?q" becomes base_path + "/p?q" with the path's
 * dot-segments removed first (RFC 3986 §5.2.4, gw_path_remove_dots; the
 * parser already refused a path that climbs above the root); absolute-form
 * "http(s)://host[:port]/p?q" becomes base_path + "/p?q" ("/" when the path
 * is empty) and its authority, userinfo dropped, is the client's host instead
 * of the Host field (RFC 9112 §3.2.2); "*" and any other form go unchanged.
 * The client's host is Host (an empty one counts as absent); when it has
 * none (HTTP/1.0) Host falls back to backend_hostport and no
 * X-Forwarded-Host is sent.
 * Removed: hop-by-hop fields (Connection, Keep-Alive, Proxy-Connection, TE,
 * Trailer, Transfer-Encoding, Upgrade) and every field a Connection option
 * names (any casing, OWS, several Connection lines); the client's
 * Content-Length, Host, Expect (the gateway answers 100-continue itself),
 * X-Forwarded-Proto and X-Forwarded-Host. Connection options only ever remove
 * the client's own end-to-end fields: "Connection: X-Forwarded-For" drops the
 * client's XFF values, never the line the gateway writes, and cannot hide
 * Host or the framing. Empty XFF values are skipped; with client_addr NULL
 * or "" only the client's values are sent (no line when there are none).
 * Framing: chunked request -> Transfer-Encoding: chunked, *framing CHUNKED;
 * Content-Length n given -> "Content-Length: n" (also for 0), *framing
 * LENGTH when n > 0 else NONE; no body -> NONE, plus "Content-Length: 0" for
 * POST, PUT and PATCH (RFC 9110 §8.6) so strict backends do not answer 411.
 * No allocation besides growing out once. Returns 0 or -ENOMEM (out then
 * unchanged). Borrowed pointers are only read during the call. */
GW_MUSTCHECK int gw_proxy_write_request_head(struct gw_buf *out, const struct gw_http_head *req,
                                             const struct gw_proxy_request_ctx *ctx,
                                             enum gw_framing *framing);

struct gw_proxy_response_ctx {
    uint8_t client_minor;  /* client's HTTP/1.x minor version */
    bool request_is_head;  /* the request was HEAD: no body is written */
    bool keep_alive;       /* the client connection may stay open */
    struct gw_slice extra; /* pre-rendered "Name: value\r\n" lines to add (e.g. the
                              rate-limit block); not used for 1xx */
    bool upgrade;          /* a 101 that opens a tunnel: its Upgrade fields and
                              "Connection: upgrade" are kept (SPEC.md §13) */
};

/* Appends the client response head for resp (RFC 9110 §7.6, RFC 9112 §6):
 *
 *   HTTP/1.1 <status> <upstream reason, or gw_response_reason() if empty>
 *   <end-to-end fields of resp, in order; repeated ones like Set-Cookie kept>
 *   <ctx->extra>
 *   Content-Length: <n> | Transfer-Encoding: chunked  (framing, see below)
 *   Connection: close | Connection: keep-alive
 *
 * HTTP/1.0 clients get "HTTP/1.1" too (RFC 9110 §6.2). Hop-by-hop fields and
 * those named by Connection are removed; Content-Length and
 * Transfer-Encoding are re-written from the parsed values. Framing:
 *  - 1xx: status line and end-to-end fields only (no extra, no framing, no
 *    Connection), *framing NONE, *must_close false; a 101 with ctx->upgrade
 *    also keeps Upgrade and says "Connection: upgrade". The caller must not
 *    forward a 1xx to an HTTP/1.0 client (RFC 9110 §15.2).
 *  - HEAD response, 204, 304: *framing NONE; HEAD and 304 keep the
 *    upstream's Content-Length value, 204 never has one.
 *  - upstream Content-Length n: "Content-Length: n", LENGTH (NONE for 0).
 *  - chunked or close-delimited upstream body: HTTP/1.1 client ->
 *    "Transfer-Encoding: chunked", CHUNKED; HTTP/1.0 client -> no framing
 *    field, CLOSE and *must_close true.
 *  - no body at all: "Content-Length: 0", NONE.
 * *must_close is also true when !keep_alive. "Connection: close" is sent
 * whenever *must_close; "Connection: keep-alive" for an HTTP/1.0 client whose
 * connection stays open; nothing for a kept HTTP/1.1 client.
 * Returns 0 or -ENOMEM (out then unchanged). */
GW_MUSTCHECK int gw_proxy_write_response_head(struct gw_buf *out, const struct gw_http_head *resp,
                                              const struct gw_proxy_response_ctx *ctx,
                                              enum gw_framing *framing, bool *must_close);

/* Appends one chunk carrying len payload bytes ("<hex>\r\n<data>\r\n").
 * len 0 appends nothing (a zero chunk would end the body). 0 or -ENOMEM. */
GW_MUSTCHECK int gw_proxy_write_chunk(struct gw_buf *out, const char *data, size_t len);

/* Appends the last chunk and empty trailer section ("0\r\n\r\n"). 0 or -ENOMEM. */
GW_MUSTCHECK int gw_proxy_write_last_chunk(struct gw_buf *out);

/* Appends the last chunk, the trailer fields (rendered "Name: value\r\n"
 * lines, e.g. gw_http_parser_trailers; may be empty) and the empty line
 * that ends the message (RFC 9112 §7.1.2). 0 or -ENOMEM. */
GW_MUSTCHECK int gw_proxy_write_last_chunk_trailers(struct gw_buf *out, struct gw_slice trailers);

/* Bytes of framing gw_proxy_write_chunk adds around a payload at most. */
#define GW_PROXY_CHUNK_OVERHEAD 20

#endif
