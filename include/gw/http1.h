/*
 * HTTP/1.x message parser: a thin wrapper over llhttp (strict mode) that
 * collects the head (request line or status line, headers) into storage of
 * bounded size, streams body bytes to a callback and pauses at the end of
 * the head and at the end of the message. No I/O. RFC 9112.
 * Not thread-safe: a parser belongs to one connection.
 */
#ifndef GW_HTTP1_H
#define GW_HTTP1_H

#include "gw/buf.h"
#include "gw/common.h"

#include <llhttp.h>

#define GW_HTTP_MAX_HEADERS 128 /* more header fields than this = 431 */

/* Bytes of chunk extensions accepted on one chunk-size line (400 beyond). */
#define GW_HTTP_MAX_CHUNK_EXT 1024
/* Bytes of one chunk-size line, its ending excluded (400 beyond). */
#define GW_HTTP_MAX_CHUNK_LINE (GW_HTTP_MAX_CHUNK_EXT + 32)

enum gw_http_kind {
    GW_HTTP_REQUEST = 0,
    GW_HTTP_RESPONSE = 1,
};

struct gw_http_header {
    struct gw_slice name;  /* as received (case kept), points into parser storage */
    struct gw_slice value; /* OWS trimmed both ends, points into parser storage */
};

/* A parsed head. Slices point into the owning parser's storage and stay
 * valid until gw_http_parser_reset or _deinit. */
struct gw_http_head {
    int method;                  /* llhttp_method_t (requests) */
    struct gw_slice method_name; /* e.g. "GET" (requests) */
    struct gw_slice target;      /* raw request-target (requests) */
    int status;                  /* status code 100-599 (responses) */
    struct gw_slice reason;      /* reason phrase, may be empty (responses) */
    uint8_t http_major;          /* 1 */
    uint8_t http_minor;          /* 0 or 1 */
    struct gw_http_header headers[GW_HTTP_MAX_HEADERS]; /* in order received */
    size_t header_count;                                /* entries used in headers[] */
    int64_t content_length;                             /* Content-Length value, -1 when absent */
    bool chunked;                                       /* Transfer-Encoding ends in chunked */
    bool keep_alive;       /* llhttp_should_keep_alive() at end of head: the
                              connection may carry another message after this one */
    bool expect_continue;  /* HTTP/1.1 request has Expect: 100-continue
                              (ignored for HTTP/1.0, RFC 9110 §10.1.1) */
    bool has_body;         /* a body follows the head (CL > 0, chunked, or
                              a response read until close); false for HEAD
                              responses, 1xx, 204 and 304 */
    bool body_until_close; /* response body delimited by connection close */
    bool informational;    /* 1xx interim response: GW_HTTP_DONE follows at
                              once; reset, then feed the final response */
    bool upgrade;          /* request carries Upgrade + Connection: upgrade.
                              The parser keeps parsing HTTP after it (the
                              proxy drops Upgrade as hop-by-hop) */
};

/* Receives body bytes (de-chunked payload only, never framing). data points
 * into the buffer given to gw_http_parser_execute and is valid only during
 * the call. Return 0 to continue, -1 to fail the parse (GW_HTTP_ERROR with
 * error_status 500). */
typedef int (*gw_http_body_fn)(void *ctx, const char *data, size_t len);

enum gw_http_result {
    GW_HTTP_NEED_MORE = 0, /* all input consumed, give more bytes */
    GW_HTTP_HEAD,          /* head complete: parser->head is valid */
    GW_HTTP_DONE,          /* message complete (body fully delivered) */
    GW_HTTP_ERROR,         /* parse failed: error_status/error_detail set; the
                              connection's framing is in doubt: close it */
};

/* Error statuses. A request parser reports 400 (malformed or ambiguous
 * framing, including unsupported HTTP versions: we answer 400 rather than
 * 505), 413 (body over max_body_bytes), 431 (head over max_head_bytes or
 * more than GW_HTTP_MAX_HEADERS fields) and 500 (on_body failed). A response
 * parser reports 502 for every protocol error or limit and 500 when on_body
 * failed. error_detail is text fit for a problem+json "detail": it names
 * what was wrong with the message, never parser internals. */
struct gw_http_parser {
    llhttp_t llhttp;          /* the llhttp state */
    enum gw_http_kind kind;   /* request or response */
    struct gw_http_head head; /* the current message's head */
    char *storage;            /* head bytes, heap, max_head_bytes long */
    size_t storage_used;      /* bytes used in storage */
    size_t max_head_bytes;    /* request line + headers limit (431 beyond) */
    size_t head_bytes;        /* raw bytes consumed in the head so far */
    uint64_t max_body_bytes;  /* 0 = unlimited; beyond = 413 */
    uint64_t body_bytes;      /* body bytes of the current message so far */
    gw_http_body_fn on_body;  /* body sink, may be NULL (bytes dropped) */
    void *ctx;                /* passed to on_body */
    int phase;                /* private: head, body, trailers, done */
    bool no_body;             /* response to HEAD: no body whatever the headers */
    bool allow_switch;        /* response: 101 accepted (the request asked to upgrade) */
    bool pending_done;        /* private: message ended, DONE not reported yet */
    bool in_value;            /* private: a header name is complete, its value not yet */
    int error_status;         /* 400, 413, 431 (or 502 meaning for responses) */
    const char *error_detail; /* text for the problem body, no internals; static
                                 or in error_buf, valid until reset/deinit */
    /* Private state below: not part of the interface. */
    size_t elem_off;        /* storage offset where the element being built starts */
    size_t trailer_bytes;   /* raw bytes of the trailer section so far */
    size_t trailer_count;   /* trailer fields so far */
    size_t chunk_ext_bytes; /* chunk-extension bytes on the current size line */
    int chunk_state;        /* chunked body: size line, data, or the CRLF after data */
    uint64_t chunk_left;    /* data bytes of the current chunk still to come */
    size_t chunk_line_len;  /* bytes of the current line held in chunk_line */
    char chunk_line[GW_HTTP_MAX_CHUNK_LINE]; /* a chunk-size line, its ending excluded */
    struct gw_buf trailers;                  /* relayable trailer fields, "Name: value\r\n" each */
    size_t trailer_elem;                     /* offset in trailers where the current field starts */
    size_t trailer_value;                    /* offset in trailers where its value starts */
    bool trailer_skip;                       /* the current trailer field is not relayed */
    unsigned scan_lines;                     /* non-empty lines completed in the scanned framing */
    unsigned scan_col;                       /* bytes in the current scanned line, CR excluded */
    char scan_prev;      /* last framing byte scanned (CRLF checks across calls) */
    bool started;        /* a byte of this message's start line was seen */
    bool ev_head;        /* set by callbacks during one llhttp_execute: */
    bool ev_done;        /*   head complete, message complete, */
    bool ev_last_chunk;  /*   last-chunk line parsed (trailers follow) */
    bool ll_at_boundary; /* llhttp is paused right after on_message_complete */
    char error_buf[96];  /* error_detail storage when it carries a number */
};

/* Prepares p for a connection's first message. Allocates max_head_bytes of
 * storage (owned by p). max_body_bytes 0 = unlimited. on_body/ctx may be
 * NULL. Returns 0, -EINVAL (max_head_bytes 0) or -ENOMEM. p must not be
 * copied while in use (moving it between calls is fine). */
GW_MUSTCHECK int gw_http_parser_init(struct gw_http_parser *p, enum gw_http_kind kind,
                                     size_t max_head_bytes, uint64_t max_body_bytes,
                                     gw_http_body_fn on_body, void *ctx);

/* Frees the storage. Safe on a zeroed or already deinitialised parser. */
void gw_http_parser_deinit(struct gw_http_parser *p);

/* Prepares for the next message on the same connection (after GW_HTTP_DONE,
 * keep-alive), or for a fresh connection when the old one was closed, or
 * after GW_HTTP_ERROR (then llhttp is re-initialised: use it only for a new
 * connection). Invalidates the slices of the previous head. Clears no_body,
 * except after an informational (1xx) response: the final response to the
 * same request follows, so no_body is kept. */
void gw_http_parser_reset(struct gw_http_parser *p);

/* Prepares p for a new connection, as if freshly initialised but keeping
 * its storage, limits and body callback (per-worker parser reuse). Unlike
 * gw_http_parser_reset it forgets everything of the previous connection,
 * including llhttp's keep-alive state. Cannot fail. */
void gw_http_parser_recycle(struct gw_http_parser *p);

/* For a response parser: the request was HEAD (or the status forbids a
 * body), so the next response has no body whatever its headers say
 * (RFC 9110 §9.3.2). Set before feeding the response. Cleared by reset
 * after a final response. */
void gw_http_parser_set_no_body(struct gw_http_parser *p, bool no_body);

/* Checks one chunk-size line without its line ending (RFC 9112 §7.1,
 * §7.1.1): chunk-size (hex digits, the value at most 64 bits) then any number of
 * BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] extensions,
 * quoted-pairs included, at most GW_HTTP_MAX_CHUNK_EXT bytes of them and
 * GW_HTTP_MAX_CHUNK_LINE bytes in all (beyond: "chunk extensions too long",
 * or "invalid chunk size" when the digits alone fill that).
 * Returns NULL with *size set, or the reason it is invalid ("invalid chunk
 * size", "invalid chunk extension", "chunk extensions too long"). The
 * parser runs it on every chunk-size line and hands llhttp (which refuses
 * quoted-pairs, several valued extensions and BWS) the bare size only:
 * extensions are never forwarded. Pure, thread-safe. */
const char *gw_http_chunk_line_check(const char *line, size_t len, uint64_t *size);

/* For a response parser: the request carried an Upgrade the gateway
 * forwards (SPEC.md §13), so a 101 Switching Protocols is a valid answer:
 * it reports GW_HTTP_HEAD (informational, done pending) and consumes
 * nothing past its head; the bytes after it are the new protocol's. Without
 * it a 101 is GW_HTTP_ERROR 502 (RFC 9110 §15.2.2: no Upgrade was sent).
 * Kept across gw_http_parser_reset; cleared by recycle. */
void gw_http_parser_set_upgrade(struct gw_http_parser *p, bool allow_switch);

/* Feeds len bytes. Stops at the first event: returns GW_HTTP_HEAD after the
 * head, GW_HTTP_DONE after the message, GW_HTTP_NEED_MORE when the input ran
 * out, GW_HTTP_ERROR on a protocol error or limit. *consumed is the number of
 * bytes of data that were used; the caller feeds the rest again later. Body
 * bytes go to on_body during the call. After GW_HTTP_DONE the parser stays
 * paused until gw_http_parser_reset (calls return GW_HTTP_DONE, consuming
 * nothing). A message without a body (GET, Content-Length: 0, HEAD
 * response, 1xx, 204, 304) reports GW_HTTP_HEAD and then, on the next call
 * (len may be 0), GW_HTTP_DONE consuming nothing. A response with a 1xx
 * status reports GW_HTTP_HEAD then GW_HTTP_DONE; reset, then feed the final
 * response. After GW_HTTP_ERROR every call returns GW_HTTP_ERROR.
 * Smuggling defence (SPEC.md §6), all GW_HTTP_ERROR with status 400: CL with
 * TE; TE other than exactly "chunked" in a request (RFC 9112 §6.1; we do not
 * decode other transfer codings) or any TE in an HTTP/1.0 request; chunked
 * listed twice; a second CL header (even an equal one) or a CL that is not
 * plain decimal digits; bad chunk size; whitespace in or before the colon of
 * a header name; obs-fold; bare CR/LF/NUL in headers; a line ending in bare
 * LF anywhere in the head, chunk framing or trailers (from a request; a
 * response may end any of these lines with a bare LF, RFC 9112 §2.2); a
 * chunk-size line gw_http_chunk_line_check refuses; a Connection header
 * naming Content-Length, Transfer-Encoding or Host; no Host or more than one
 * Host in a request (RFC 9112 §3.2); an invalid method; control characters
 * or spaces in the request-target; HTTP versions other than 1.0 and 1.1;
 * CONNECT (llhttp cannot frame what follows it). data may be NULL when len
 * is 0. */
GW_MUSTCHECK enum gw_http_result gw_http_parser_execute(struct gw_http_parser *p, const char *data,
                                                        size_t len, size_t *consumed);

/* The peer closed the connection. Returns GW_HTTP_DONE if that completes a
 * message delimited by close (or a bodiless message whose GW_HTTP_DONE was
 * not reported yet), GW_HTTP_ERROR if a message was cut short (status 400,
 * 502 for responses), and GW_HTTP_NEED_MORE when no message had started. */
GW_MUSTCHECK enum gw_http_result gw_http_parser_finish(struct gw_http_parser *p);

/* After GW_HTTP_DONE of a chunked message: its trailer fields (RFC 9112
 * §7.1.2), rendered "Name: value\r\n" per field in the order received
 * (value OWS-trimmed), without the framing, routing and hop-by-hop fields
 * (Content-Length, Transfer-Encoding, Host, Connection, Keep-Alive,
 * Proxy-Connection, TE, Trailer, Upgrade; RFC 9110 §6.5.1), which are
 * dropped. An empty slice when there are none or the message is not done.
 * Valid until gw_http_parser_reset. The fields are never part of head. */
struct gw_slice gw_http_parser_trailers(const struct gw_http_parser *p);

/* True after GW_HTTP_HEAD for a message that already ended with its head
 * (no body: GET, CL 0, HEAD response, 1xx, 204, 304): the next execute
 * call returns GW_HTTP_DONE consuming nothing. A caller that only calls
 * execute while input is buffered must also call it (len 0 is fine) while
 * this is true, or the message never completes. */
bool gw_http_parser_done_pending(const struct gw_http_parser *p);

/* True when the parser is between messages (nothing of a next message
 * has been consumed): after init, after reset, and after GW_HTTP_DONE. */
bool gw_http_parser_idle(const struct gw_http_parser *p);

/* Finds the first header named name (case-insensitive); NULL when absent.
 * The result points into h and shares its lifetime. */
const struct gw_http_header *gw_http_head_find(const struct gw_http_head *h, const char *name);

/* True when any comma-separated element of any header named name equals
 * token case-insensitively (e.g. Connection: keep-alive, close). Elements are
 * trimmed of OWS; empty elements are skipped. RFC 9110 §5.6.1. */
bool gw_http_head_has_token(const struct gw_http_head *h, const char *name, const char *token);

/* ---- parser pool (src/http1_pool.c) ----
 * Spare parsers of one kind and limits, storage kept, so a keep-alive
 * request does not call malloc. One pool per worker thread; not
 * thread-safe. */
struct gw_http_parser_pool {
    struct gw_http_parser **spare; /* spare[0..len) */
    size_t len;                    /* spare parsers now */
    size_t cap;                    /* most spares kept (bounded memory when idle) */
    enum gw_http_kind kind;        /* what the parsers parse */
    size_t max_head_bytes;         /* their limits (gw_http_parser_init) */
    uint64_t max_body_bytes;
};

/* Prepares a pool of parsers of kind with the given limits, keeping at most
 * cap spares. Returns 0 or -ENOMEM. */
GW_MUSTCHECK int gw_http_parser_pool_init(struct gw_http_parser_pool *pool, size_t cap,
                                          enum gw_http_kind kind, size_t max_head_bytes,
                                          uint64_t max_body_bytes);

/* Frees every spare parser. */
void gw_http_parser_pool_deinit(struct gw_http_parser_pool *pool);

/* A parser ready for a new connection (gw_http_parser_recycle state) whose
 * body sink is on_body(ctx, ...); the caller owns it until
 * gw_http_parser_pool_put. NULL when out of memory. */
struct gw_http_parser *gw_http_parser_pool_get(struct gw_http_parser_pool *pool,
                                               gw_http_body_fn on_body, void *ctx);

/* Frees spare parsers beyond keep (memory back after a burst). */
void gw_http_parser_pool_trim(struct gw_http_parser_pool *pool, size_t keep);

/* Gives p back: kept as a spare while the pool has room, else freed. */
void gw_http_parser_pool_put(struct gw_http_parser_pool *pool, struct gw_http_parser *p);

#endif
