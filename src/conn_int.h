/*
 * Private to the client connection module (conn.c: the connection and its
 * state machine; exchange.c: one request's way through the gateway;
 * conn_tunnel.c: the upgrade tunnel after a 101): the
 * connection and exchange types and the functions the two files share.
 * Worker thread only. Nothing outside those files and their unit
 * test includes this file.
 */
#ifndef GW_CONN_INT_H
#define GW_CONN_INT_H

#include <stddef.h>
#include <string.h>
#include "conn.h"

#include "gw/client_id.h"
#include "tunnel.h"
#include "upstream.h"

enum conn_state {
    CS_IDLE = 0,  /* keep-alive, waiting for a request's first byte */
    CS_HEAD,      /* reading a request head */
    CS_LIMIT,     /* waiting for the worker's batched rate-limit check */
    CS_DELAY,     /* admitted after a delay (token-bucket shaping): held on the worker's
                     timer, no in-flight slot */
    CS_BODY_WAIT, /* allowed; the body's first window is not in yet: no slot taken */
    CS_WAIT_SLOT, /* parked in the in-flight gate's FIFO */
    CS_CONNECT,   /* the upstream client is connecting */
    CS_PROXY,     /* streaming request and response */
    CS_RESPOND,   /* response queued; flushing it, reading what is left of the request */
    CS_LINGER,    /* last response written, write side shut, draining input */
    CS_ADMIN,     /* reading an admin request's body (SPEC.md §11), then answered */
    CS_TUNNEL,    /* after a 101: relaying bytes both ways (conn_tunnel.c) */
    CS_CLOSED,
    CS_COUNT
};

enum req_half { REQ_NONE = 0, REQ_HEAD, REQ_BODY, REQ_DONE };
enum resp_half { RESP_NONE = 0, RESP_HEAD_SENT, RESP_DONE };

/* How an exchange ended: the one counter finish_exchange increments. */
enum exchange_result {
    RESULT_NONE = 0,        /* the gateway's own endpoints: requests_total only */
    RESULT_PROXIED,         /* response relayed from the upstream */
    RESULT_RATE_LIMITED,    /* 429 */
    RESULT_REJECTED_QUEUE,  /* 503 from the in-flight cap */
    RESULT_REJECTED_STORE,  /* 503, rate limiter unavailable */
    RESULT_FAILED_UPSTREAM, /* 502/504 */
    RESULT_BAD,             /* other 4xx the gateway generated */
    RESULT_CLOSED,          /* the client went away first (nginx 499) */
};

/* Everything of one request/response exchange; cleared as a whole between
 * requests (next_request). */
struct exchange {
    enum req_half req;                     /* request half-state */
    enum resp_half resp;                   /* response half-state */
    bool counted;                          /* counted in requests_total */
    bool finished;                         /* finish_exchange ran */
    bool keep_alive;                       /* client wants and may keep the connection */
    bool discard_body;                     /* body bytes are read and dropped */
    bool limited;                          /* the limiter refused it (or would, dry run) */
    bool upgrade;                          /* forwarded with its Upgrade (SPEC.md §13) */
    bool tunnel_reserved;                  /* holds a place under MAX_TUNNELS */
    enum gw_framing cl_framing;            /* response body framing towards the client */
    int status;                            /* status sent to the client */
    uint64_t resp_bytes;                   /* response bytes queued for the client */
    uint64_t start_us;                     /* first byte of the request */
    uint64_t upstream_start_us;            /* upstream phase start, 0 = not proxied */
    uint64_t queue_start_us;               /* gate wait start */
    uint64_t proxy_start_ms;               /* when the exchange entered PROXY */
    uint64_t tunnel_start_us;              /* the 101 relayed: the tunnel opened */
    uint64_t body_rx;                      /* request body bytes read from the client (raw) */
    size_t chunk_walked;                   /* BODY_WAIT: bytes of the buffered chunked body
                                              checked as whole chunks (they stay buffered) */
    uint64_t rate_next_ms;                 /* CLIENT_BODY_MIN_RATE: next 1 s sample (loop clock) */
    uint64_t rate_ring[10];                /* body_rx sampled once a second, the last 10 s */
    unsigned rate_n, rate_pos;             /* samples held; slot of the oldest (next written) */
    struct gw_rl_decision rl;              /* rate-limit decision */
    size_t rl_headers_len;                 /* bytes of rl_headers */
    char client_ident[GW_CLIENT_ADDR_MAX]; /* identified client (XFF-aware), for logs */
    struct gw_rl_request rl_req;           /* what the limiter reads of the request */
    /* Buffers last: gw_exchange_reset clears everything before them and only
     * marks them empty (their contents count up to rl_headers_len / the
     * NUL), so a request does not pay for zeroing 1.6 KiB. */
    char rl_policies[128]; /* refusing/shadow-refusing policies, for the log */
    char rl_headers[1536]; /* rendered rate-limit header lines */
};

/* Clears c's exchange for the next request (everything but the buffers at
 * its end, which are marked empty). */
static inline void gw_exchange_reset(struct exchange *ex)
{
    memset(ex, 0, offsetof(struct exchange, rl_policies));
    ex->rl_policies[0] = '\0';
}

struct gw_conn {
    struct gw_io io;              /* client socket */
    struct gw_worker *w;          /* owning worker */
    struct gw_conn *prev, *next;  /* worker's live list */
    struct gw_conn *reap_next;    /* worker's reap list */
    struct gw_rl_waiter limit;    /* entry in the worker's rate-limit batch */
    struct gw_conn *redrive_next; /* worker's redrive list */
    enum conn_state state;        /* changed only by set_state */
    struct gw_timer timer;        /* the one deadline of the current state */
    char client_addr[64];         /* peer address text */
    uint8_t client_bin[16];       /* peer address, IPv4-mapped */
    struct gw_buf in;             /* client bytes not yet parsed */
    struct gw_buf out;            /* bytes not yet written to the client */
    struct gw_http_parser *req;   /* request parser, allocated while a request is open */
    struct gw_upstream *up;       /* upstream client of the current exchange */
    struct gw_gate_waiter waiter; /* in-flight gate FIFO entry */
    struct gw_tunnel *tunnel;     /* the relay after a 101 (CS_TUNNEL), freed at reap */
    uint64_t client_rx_ms;        /* last request bytes read (loop clock) */
    bool slot_held;               /* holds an in-flight slot */
    bool closing;                 /* closed; waiting for the reaper */
    bool rd_ready;                /* epoll said readable and no EAGAIN since: a read
                                     is attempted only then (no empty recv calls) */
    bool redrive_queued;          /* on the worker's redrive list */
    bool client_eof;              /* client shut its write side */
    bool must_close;              /* close after the current response */
    bool draining;                /* worker draining: no keep-alive */
    bool admin;                   /* accepted on the admin listener (SPEC.md §11) */
    struct gw_buf admin_body;     /* ADMIN: the admin request's body so far (heap) */
    struct exchange ex;           /* the current exchange */
};

static inline const struct gw_config *cfg_of(const struct gw_conn *c)
{
    return c->w->srv->cfg;
}

/* ---- conn.c ---- */

/* The one way to change state: aborts on a transition missing from the
 * table atop conn.c (a bug); entering the current state again is a no-op. */
void gw_conn_set_state(struct gw_conn *c, enum conn_state s);

/* (Re)arms the connection's one deadline after_ms from now (loop clock);
 * closes the connection when the timer heap cannot grow. */
void gw_conn_arm(struct gw_conn *c, uint64_t after_ms);

/* The single close path (see conn.c). */
void gw_conn_close(struct gw_conn *c);

/* Runs the connection's steps until nothing moves (bounded), then sets
 * its epoll interest and its upstream client's. */
void gw_conn_drive(struct gw_conn *c);

/* Writes pending output to the client; true on progress (or a close). */
bool gw_conn_flush_client(struct gw_conn *c);

/* Feeds buffered client bytes to the request parser; true on progress. */
bool gw_conn_pump_request(struct gw_conn *c);

/* ---- exchange.c ---- */

/* Counts the request in requests_total, once per exchange. */
void gw_exchange_count(struct gw_conn *c);

/* Ends the exchange with result (counted once) and gives back the upstream
 * client, the gate entry and the in-flight slot (idempotent). */
void gw_exchange_finish(struct gw_conn *c, enum exchange_result result);

/* Queues a problem+json error response (RFC 9457) ending the exchange. */
void gw_exchange_respond_error(struct gw_conn *c, int status, const char *detail, bool close_after);

/* The request head was parsed (RFC 9112 §2): admin answer, or on to the
 * rate-limit batch. */
void gw_exchange_on_head(struct gw_conn *c);

/* The request message is complete (RFC 9112 §6). */
void gw_exchange_on_request_done(struct gw_conn *c);

/* The parser refused the request: answered and closed. */
void gw_exchange_on_request_error(struct gw_conn *c);

/* Request body sink of the parser (ctx is the connection). 0 or -1. */
int gw_exchange_request_body(void *ctx, const char *data, size_t len);

/* Drive step: the upstream client's I/O while proxying; true on progress. */
bool gw_exchange_drive_upstream(struct gw_conn *c);

/* BODY_WAIT: once the body's first window is buffered, goes on to the
 * in-flight gate. Returns true on progress. */
bool gw_exchange_body_wait_step(struct gw_conn *c);

/* BODY_WAIT's deadline: CLIENT_TIMEOUT_MS without a body byte, or a body
 * slower than CLIENT_BODY_MIN_RATE, is answered 408 and closed. */
void gw_exchange_body_wait_timeout(struct gw_conn *c);

/* Deadlines of WAIT_SLOT and PROXY. */
void gw_exchange_queue_timeout(struct gw_conn *c);
void gw_exchange_proxy_timeout(struct gw_conn *c);

/* A request held by shaping (CS_DELAY) has waited its delay: go on. */
void gw_exchange_delay_done(struct gw_conn *c);

/* The rate-limit batch decided c's request. */
void gw_exchange_limit_done(struct gw_rl_waiter *wt);

/* Forced shutdown of a request that has not reached the backend (queued,
 * or connecting): 503 reduced capacity, then close. */
void gw_exchange_shutdown(struct gw_conn *c);

/* A response the gateway wrote itself (bytes of it appended to c->out)
 * ends the exchange with status; keep: the connection may carry another
 * request (else it closes after). A request body not read yet is read and
 * dropped. */
void gw_exchange_answered(struct gw_conn *c, int status, size_t bytes, bool keep);

/* ---- exchange_admin.c: requests on the admin listener (SPEC.md §11) ---- */

/* The head of an admin connection's request: authenticated, routed, and
 * answered, or on to ADMIN to read its body. */
void gw_exchange_admin_head(struct gw_conn *c);

/* Body sink while in ADMIN: collects up to GW_ADMIN_BODY_MAX bytes,
 * beyond answers 413 and closes. 0. */
int gw_exchange_admin_body(struct gw_conn *c, const char *data, size_t len);

/* The body is complete (ADMIN): answered. */
void gw_exchange_admin_done(struct gw_conn *c);

/* ADMIN's deadline: CLIENT_TIMEOUT_MS without a body byte is 408. */
void gw_exchange_admin_body_timeout(struct gw_conn *c);

/* Frees what an admin exchange holds (the body buffer); at the reaper. */
void gw_exchange_admin_release(struct gw_conn *c);

/* ---- conn_tunnel.c: upgrade tunnels (SPEC.md §13) ---- */

/* True when the request's Upgrade is forwarded: Upgrade with Connection:
 * upgrade on a body-less HTTP/1.1 request, every protocol it offers listed
 * in UPGRADE_PROTOCOLS, and the worker not draining. */
bool gw_conn_tunnel_wanted(const struct gw_conn *c);

/* Takes a place under MAX_TUNNELS (all workers) for the upgrade request;
 * false when none is left (the request gets 503). */
bool gw_conn_tunnel_reserve(struct gw_conn *c);

/* Gives the place back (idempotent): the answer was not a 101. */
void gw_conn_tunnel_unreserve(struct gw_conn *c);

/* The backend answered 101 to the upgrade request: relays the 101, takes
 * the backend socket from the upstream client, finishes the exchange (the
 * in-flight slot is given back) and enters CS_TUNNEL. 0, or -1 when the
 * connection was closed. */
int gw_conn_tunnel_start(struct gw_conn *c, const struct gw_http_head *rh);

/* CS_TUNNEL's drive: relays, closes when the tunnel is over, sets the
 * client socket's interest. */
void gw_conn_tunnel_drive(struct gw_conn *c);

/* Epoll events on the client socket in CS_TUNNEL. */
void gw_conn_tunnel_event(struct gw_conn *c, uint32_t events);

/* CS_TUNNEL's deadline: TUNNEL_IDLE_TIMEOUT_MS without a byte either way
 * closes it. */
void gw_conn_tunnel_timeout(struct gw_conn *c);

/* From the close path: the tunnel's access log line and gauges, its
 * MAX_TUNNELS place back, the backend socket closed. */
void gw_conn_tunnel_end(struct gw_conn *c);

#endif
