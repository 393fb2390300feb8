/*
 * backend_app: the demo and test upstream of the gateway (SPEC.md section 8).
 * Private interface shared by its files: main.c (configuration, listener,
 * signals, shutdown), conn.c (one blocking thread per client connection, llhttp
 * parsing, response writing), routes.c (the endpoints and the counters) and
 * ws.c (the /ws WebSocket echo).
 */
#ifndef BACKEND_APP_H
#define BACKEND_APP_H

#include "gw/buf.h"
#include "gw/common.h"

#include <jansson.h>
#include <llhttp.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>

#ifndef GW_VERSION
#define GW_VERSION "dev" /* normally set by CMake */
#endif

#define BACKEND_MAX_HEADER_BYTES (64 * 1024) /* request-target + header fields, else 431 */
#define BACKEND_READ_BUF         (64 * 1024) /* bytes read per recv */
#define BACKEND_MAX_DELAY_MS     60000       /* cap of /slow, /stream delay, /noresponse hold */

/* Process-wide settings, written once by main() before the first thread starts. */
struct backend_config {
    const char *host;      /* BACKEND_HOST */
    unsigned port;         /* BACKEND_PORT, 0 = kernel picks */
    bool log;              /* BACKEND_LOG: one stderr line per request */
    int idle_timeout_ms;   /* BACKEND_IDLE_TIMEOUT_MS: idle keep-alive limit */
    int stop_fd;           /* read end of a pipe that becomes readable at shutdown */
    _Atomic bool stopping; /* set once SIGTERM/SIGINT arrived */
};

extern struct backend_config backend_cfg;

/* Request counters of GET /stats; requests to /stats itself are not counted. */
struct backend_stats {
    _Atomic uint64_t requests;        /* requests whose header section completed */
    _Atomic uint64_t in_flight;       /* from headers complete to response fully written */
    _Atomic uint64_t max_concurrency; /* highest in_flight seen since start or reset */
};

extern struct backend_stats backend_stats;

/* One header field as received, as offsets into backend_request.raw (whose
 * storage may move while it grows). */
struct backend_header {
    size_t name_off, name_len;   /* field name bytes */
    size_t value_off, value_len; /* field value bytes (OWS already trimmed by llhttp) */
};

/* The request being parsed on a connection; reset at each message begin. */
struct backend_request {
    struct gw_buf raw;              /* request-target, then header names and values */
    size_t target_len;              /* request-target is raw[0, target_len) */
    struct backend_header *headers; /* in received order */
    size_t nheaders, cap_headers;   /* used and allocated entries */
    bool in_name;                   /* parser is inside a header name */
    bool head;                      /* HEAD: answer without a body */
    bool counted;                   /* holds an in_flight unit that must be returned */
    bool keep_alive;                /* llhttp_should_keep_alive at message complete */
    bool stats_route;               /* /stats or /stats/reset: not counted */
    uint8_t method;                 /* enum llhttp_method */
    uint8_t http_major, http_minor; /* request version */
    int status;                     /* response status, for the log line */
    uint64_t body_len;              /* body bytes received (after de-chunking) */
    uint64_t start_ms;              /* monotonic time of message begin */
};

/* One client connection, owned by its thread. */
struct backend_conn {
    int fd;                     /* client socket, blocking */
    llhttp_t parser;            /* strict request parser */
    struct backend_request req; /* request in progress */
    EVP_MD_CTX *sha;            /* SHA-256 of the body of the current request */
    char *rbuf;                 /* read buffer, BACKEND_READ_BUF bytes */
    int error_status;           /* 4xx chosen by a callback that stopped the parser */
    bool io_failed;             /* a write failed: the connection must close */
    bool close_after;           /* close once the current response is written */
    bool ws;                    /* /ws answered 101: WebSocket frames follow (ws.c) */
    pthread_t tid;              /* its thread, joined by main once finished */
    struct backend_conn *prev;  /* registry of live or finished connections (main.c) */
    struct backend_conn *next;  /* " */
};

/* What the connection does after a route handler returned. */
enum backend_after {
    BACKEND_KEEP = 0,  /* response complete: go on with the next request */
    BACKEND_CLOSE = 1, /* response complete or aborted: close the connection */
};

/* Thread body of a connection: parses requests until close, answers each,
 * frees what it allocated, then hands c to backend_conn_finish. */
void *backend_conn_run(void *c);

/* Last call of a connection thread (main.c): closes c->fd and moves c from
 * the live registry to the finished list, whose threads main joins and
 * frees. Joining before exit keeps exit() (and library atexit cleanup) from
 * racing threads that are still ending. */
void backend_conn_finish(struct backend_conn *c);

/* Writes all n bytes, retrying on EINTR and short writes (blocking socket).
 * Returns 0, or -1 with c->io_failed set. */
GW_MUSTCHECK int backend_write(struct backend_conn *c, const void *p, size_t n);

/* Like backend_write, for the bytes that complete the response: the request
 * leaves in_flight first, so a client holding the whole response never sees
 * it still counted (a gateway's next request cannot overlap it). */
GW_MUSTCHECK int backend_write_last(struct backend_conn *c, const void *p, size_t n);

/* Writes a status line and header section: Content-Type when ctype is not
 * NULL; Content-Length when length >= 0; Transfer-Encoding: chunked when
 * length == -1; neither when -2 (no body, or delimited by close). Connection
 * follows the request (RFC 9112 section 9.3) and c->close_after. extra is
 * NULL or further "Name: value\r\n" lines. last: no body follows (see
 * backend_write_last). Returns 0 or -1. */
GW_MUSTCHECK int backend_write_head(struct backend_conn *c, int status, const char *ctype,
                                    int64_t length, const char *extra, bool last);

/* Writes a complete response whose body is the compact JSON of j (body left
 * out for HEAD), with extra header lines as in backend_write_head. Takes
 * ownership of j; j NULL means out of memory (500). Returns 0 or -1. */
GW_MUSTCHECK int backend_write_json(struct backend_conn *c, int status, json_t *j,
                                    const char *extra);

/* Waits up to ms milliseconds for shutdown. Returns true if shutdown began. */
bool backend_sleep_ms(int ms);

/* backend_sleep_ms that also ends when the peer on client_fd hangs up
 * (closes, resets or shuts down its write side), as a real handler whose
 * request context is cancelled would: an abandoned request stops counting
 * towards /stats concurrency. client_fd < 0 watches nothing; the fd stays
 * the caller's. Returns true on shutdown or hang-up, false once ms
 * milliseconds passed. Thread-safe (one call per connection thread). */
bool backend_sleep_or_hangup_ms(int client_fd, int ms);

/* Request-target helpers for the routes. */
static inline struct gw_slice backend_target(const struct backend_request *r)
{
    return (struct gw_slice){r->raw.data, r->target_len};
}

/* Called at headers complete (URL known): counts the request. */
void backend_stats_begin(struct backend_request *r);

/* Called just before the last bytes of the response are written, or when
 * the request ends without one (connection closed). Idempotent. */
void backend_stats_end(struct backend_request *r);

/* Answers a complete request (body consumed). The SHA-256 context holds the
 * body digest. Returns what the connection should do next. */
enum backend_after backend_route(struct backend_conn *c);

/* GET /ws: checks the WebSocket handshake (RFC 6455 §4.2.1) and answers
 * 101 with Sec-WebSocket-Accept, setting c->ws; or 400. ws.c. */
enum backend_after backend_ws_route(struct backend_conn *c);

/* After the 101: echoes frames (rest[0..n): bytes that came after the
 * handshake) until a close frame, the client's FIN, an error or shutdown.
 * The caller then closes the connection. ws.c. */
void backend_ws_run(struct backend_conn *c, const char *rest, size_t n);

/* Fills the byte pattern of /bytes and /stream; call once before any thread. */
void backend_routes_init(void);

/* The reason phrase of a status code (RFC 9110 section 15), "" if unknown. */
const char *backend_reason(int status);

#endif
