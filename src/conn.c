/*
 * Client connection state machine (memcached drive_machine shape). One
 * request at a time per connection; pipelined bytes wait in the input
 * buffer, so responses leave in request order. The upstream half of a
 * proxied exchange belongs to the upstream client (upstream.c), which
 * reports through the up_* callbacks below.
 *
 *            first byte          head parsed, proxied
 *   IDLE ─────────────▶ HEAD ─────────────────────▶ LIMIT (batched rate-limit check)
 *    ▲                   │ admin answer,              │ 429/503      │ allowed: gate
 *    │                   │ 400/408/431                ▼              ├──────────────┐
 *    │                   └──────────────────────▶ RESPOND ◀── 503 ── WAIT_SLOT      │
 *    │                                           ▲  ▲  ▲    timeout   │ slot        │ slot
 *    │                             502 (connect) │  │  │              ▼             │
 *    │                                  CONNECT ─┘  │  │   ┌───── CONNECT ◀── new ──┤
 *    │                                              │  │   │ connected              │ pooled
 *    │             response complete, 408/502/504   │  │   ▼                        │
 *    │                                     PROXY ───┘  └── PROXY ◀──────────────────┘
 *    │  request done, response flushed                      (a stale pooled socket is
 *    └──────────────────────────────────── RESPOND           retried once inside the
 *                                             │ must close    upstream client: PROXY
 *                                             ▼               stays PROXY)
 *                                          LINGER ─▶ CLOSED (from every state)
 *
 * Transitions, one line per state; conn_next[] below is this list and
 * test_conn checks that the two agree:
 *   IDLE      -> HEAD CLOSED
 *   HEAD      -> LIMIT RESPOND CLOSED
 *   LIMIT     -> WAIT_SLOT CONNECT PROXY RESPOND CLOSED
 *   WAIT_SLOT -> CONNECT PROXY RESPOND CLOSED
 *   CONNECT   -> PROXY RESPOND CLOSED
 *   PROXY     -> RESPOND CLOSED
 *   RESPOND   -> IDLE LINGER CLOSED
 *   LINGER    -> CLOSED
 *   CLOSED    ->
 *
 * The request and the response keep separate half-states (struct exchange:
 * req NONE/HEAD/BODY/DONE, resp NONE/HEAD_SENT/DONE) so an early upstream
 * response or a client that keeps sending stay sane. Every exchange ends in
 * finish_exchange, exactly once: one result counter, the histograms, the
 * upstream and the in-flight slot given back, the access log line. Closing
 * only marks the connection; the reaper frees it at the end of the loop
 * iteration and closes the descriptor.
 */
#include "conn.h"

#include "acceptor.h"
#include "admin.h"
#include "gw/client_id.h"
#include "gw/log.h"
#include "gw/net.h"
#include "gw/response.h"
#include "upstream.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* Rounds of one drive before other connections get their turn. */
#define GW_DRIVE_ROUNDS 64

enum conn_state {
    CS_IDLE = 0,  /* keep-alive, waiting for a request's first byte */
    CS_HEAD,      /* reading a request head */
    CS_LIMIT,     /* waiting for the worker's batched rate-limit check */
    CS_WAIT_SLOT, /* parked in the in-flight gate's FIFO */
    CS_CONNECT,   /* the upstream client is connecting */
    CS_PROXY,     /* streaming request and response */
    CS_RESPOND,   /* response queued; flushing it, reading what is left of the request */
    CS_LINGER,    /* last response written, write side shut, draining input */
    CS_CLOSED,
    CS_COUNT
};

static const char *const state_names[CS_COUNT] = {
    "IDLE", "HEAD", "LIMIT", "WAIT_SLOT", "CONNECT", "PROXY", "RESPOND", "LINGER", "CLOSED"};

#define TO(s) (1u << (s))
/* Legal transitions: conn_next[from] has bit `to` set. */
static const unsigned conn_next[CS_COUNT] = {
    [CS_IDLE] = TO(CS_HEAD) | TO(CS_CLOSED),
    [CS_HEAD] = TO(CS_LIMIT) | TO(CS_RESPOND) | TO(CS_CLOSED),
    [CS_LIMIT] = TO(CS_WAIT_SLOT) | TO(CS_CONNECT) | TO(CS_PROXY) | TO(CS_RESPOND) | TO(CS_CLOSED),
    [CS_WAIT_SLOT] = TO(CS_CONNECT) | TO(CS_PROXY) | TO(CS_RESPOND) | TO(CS_CLOSED),
    [CS_CONNECT] = TO(CS_PROXY) | TO(CS_RESPOND) | TO(CS_CLOSED),
    [CS_PROXY] = TO(CS_RESPOND) | TO(CS_CLOSED),
    [CS_RESPOND] = TO(CS_IDLE) | TO(CS_LINGER) | TO(CS_CLOSED),
    [CS_LINGER] = TO(CS_CLOSED),
    [CS_CLOSED] = 0,
};
#undef TO

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
    enum gw_framing cl_framing;            /* response body framing towards the client */
    int status;                            /* status sent to the client */
    uint64_t resp_bytes;                   /* response bytes queued for the client */
    uint64_t start_us;                     /* first byte of the request */
    uint64_t upstream_start_us;            /* upstream phase start, 0 = not proxied */
    uint64_t queue_start_us;               /* gate wait start */
    uint64_t proxy_start_ms;               /* when the exchange entered PROXY */
    struct gw_rl_decision rl;              /* rate-limit decision */
    size_t rl_headers_len;                 /* bytes of rl_headers */
    char rl_key[GW_CLIENT_KEY_MAX];        /* rate-limit key */
    char client_ident[GW_CLIENT_ADDR_MAX]; /* identified client (XFF-aware), for logs */
    char rl_headers[512];                  /* rendered rate-limit header lines */
};

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
    uint64_t client_rx_ms;        /* last request bytes read (loop clock) */
    bool slot_held;               /* holds an in-flight slot */
    bool closing;                 /* closed; waiting for the reaper */
    bool rd_ready;                /* epoll said readable and no EAGAIN since: a read
                                     is attempted only then (no empty recv calls) */
    bool redrive_queued;          /* on the worker's redrive list */
    bool client_eof;              /* client shut its write side */
    bool must_close;              /* close after the current response */
    bool draining;                /* worker draining: no keep-alive */
    struct exchange ex;           /* the current exchange */
};

static void conn_drive(struct gw_conn *c);
static void conn_close(struct gw_conn *c);
static bool flush_client(struct gw_conn *c);
static void start_upstream(struct gw_conn *c);
static bool pump_request(struct gw_conn *c);
static void buf_prepare(struct gw_worker *w, struct gw_buf *b);

static const struct gw_config *cfg_of(const struct gw_conn *c)
{
    return c->w->srv->cfg;
}

/* The one way to change state: asserts the transition is in conn_next[].
 * A state entered again is a no-op. */
static void set_state(struct gw_conn *c, enum conn_state s)
{
    if (c->state == s)
        return;
    if (!(conn_next[c->state] & (1u << s))) {
        /* A bug, not a run-time condition: stop before state is corrupted. */
        gw_error("conn %d: illegal transition %s -> %s", c->io.fd, state_names[c->state],
                 state_names[s]);
        abort();
    }
    gw_debug("conn %d: %s -> %s", c->io.fd, state_names[c->state], state_names[s]);
    c->state = s;
}

static void arm(struct gw_conn *c, uint64_t after_ms)
{
    if (gw_timer_arm(&c->w->loop, &c->timer, c->w->loop.now_ms + after_ms) != 0)
        conn_close(c); /* out of memory for the heap: cannot keep a deadline */
}

/* ---- the end of an exchange ---- */

/* Leaves the gate's FIFO. A waiter granted in the meantime holds a slot
 * from now on (slot_held), which release_slot or the upstream phase uses. */
static void leave_queue(struct gw_conn *c)
{
    if (gw_gate_cancel(c->w->srv->gate, &c->waiter))
        c->slot_held = true;
}

static void release_slot(struct gw_conn *c)
{
    if (c->slot_held) {
        c->slot_held = false;
        gw_gate_release(c->w->srv->gate);
    }
}

/* Gives the upstream client back (it pools the socket when the exchange
 * ended cleanly, else closes it). */
static void drop_upstream(struct gw_conn *c)
{
    if (c->up) {
        struct gw_upstream *u = c->up;
        c->up = NULL;
        gw_upstream_put(u);
    }
}

static void count_request(struct gw_conn *c)
{
    if (!c->ex.counted) {
        c->ex.counted = true;
        GW_STAT_INC(&c->w->stats, requests_total);
    }
}

static enum exchange_result result_of_status(int status)
{
    if (status == 429)
        return RESULT_RATE_LIMITED;
    if (status == 502 || status == 504)
        return RESULT_FAILED_UPSTREAM;
    if (status >= 400 && status < 500)
        return RESULT_BAD;
    return RESULT_NONE;
}

static void log_access(struct gw_conn *c)
{
    if (!cfg_of(c)->access_log || !c->req)
        return;
    uint64_t now = gw_now_us();
    const struct exchange *ex = &c->ex;
    struct gw_access_entry e = {
        .client = ex->client_ident[0] ? ex->client_ident : c->client_addr,
        .method = c->req->head.method_name,
        .path = c->req->head.target,
        .status = ex->status,
        .bytes_sent = ex->resp_bytes,
        .duration_ms = (double)(now - ex->start_us) / 1000.0,
        .upstream_ms = ex->upstream_start_us ? (double)(now - ex->upstream_start_us) / 1000.0 : -1,
        .limited = ex->limited,
    };
    gw_log_access(&e);
}

/* Ends the current exchange: the one place where its result is counted, the
 * latency histograms observed and the access log written (each at most once
 * per request), and where the upstream client, the gate entry and the
 * in-flight slot are given back (every time: idempotent). */
static void finish_exchange(struct gw_conn *c, enum exchange_result result)
{
    struct exchange *ex = &c->ex;
    bool first = !ex->finished;
    if (first) {
        ex->finished = true;
        struct gw_stats_worker *st = &c->w->stats;
        switch (result) {
        case RESULT_PROXIED: {
            GW_STAT_INC(st, requests_proxied);
            uint64_t now = gw_now_us();
            gw_histogram_observe(&st->request_latency, now - ex->start_us);
            if (ex->upstream_start_us)
                gw_histogram_observe(&st->upstream_latency, now - ex->upstream_start_us);
            break;
        }
        case RESULT_RATE_LIMITED:
            GW_STAT_INC(st, requests_rate_limited);
            break;
        case RESULT_REJECTED_QUEUE:
            GW_STAT_INC(st, requests_rejected_queue);
            break;
        case RESULT_REJECTED_STORE:
            GW_STAT_INC(st, requests_rejected_store);
            break;
        case RESULT_FAILED_UPSTREAM:
            GW_STAT_INC(st, requests_failed_upstream);
            break;
        case RESULT_BAD:
            GW_STAT_INC(st, requests_bad);
            break;
        case RESULT_CLOSED:
            if (ex->counted)
                GW_STAT_INC(st, requests_closed);
            break;
        case RESULT_NONE:
        default:
            break;
        }
    }
    drop_upstream(c);
    leave_queue(c);
    release_slot(c);
    if (first && ex->resp == RESP_DONE)
        log_access(c);
}

/* The response is fully queued: finish the exchange. What happens to the
 * connection next is decided once the output is flushed and the request
 * fully read (respond_progress). */
static void complete_response(struct gw_conn *c, enum exchange_result result)
{
    c->ex.resp = RESP_DONE;
    finish_exchange(c, result);
    if (c->closing)
        return;
    set_state(c, CS_RESPOND);
    arm(c, (uint64_t)cfg_of(c)->client_timeout_ms);
}

/* ---- writing responses the gateway generates ---- */

static struct gw_slice rl_extra(const struct gw_conn *c)
{
    return (struct gw_slice){c->ex.rl_headers, c->ex.rl_headers_len};
}

/* Queues a problem+json response that ends the exchange with result.
 * close_after: the framing of the request is in doubt (or the body will not
 * be read), so the connection closes after. */
static void respond_problem(struct gw_conn *c, const struct gw_problem *pb, bool close_after,
                            enum exchange_result result)
{
    struct exchange *ex = &c->ex;
    if (c->closing)
        return;
    if (ex->resp != RESP_NONE) {
        /* Part of a response already left: the only honest signal left is
         * closing without completing it. */
        finish_exchange(c, result);
        conn_close(c);
        return;
    }
    if (close_after || !c->req)
        c->must_close = true;
    if (c->req && ex->req != REQ_DONE) {
        /* The body was not consumed. Reading it on to keep the connection is
         * only safe when the client will send it (no unanswered Expect). */
        if (c->req->head.expect_continue || pb->status == 413)
            c->must_close = true;
        else
            ex->discard_body = true;
    }
    bool keep = ex->keep_alive && !c->must_close && !c->draining;
    if (!keep)
        c->must_close = true;
    buf_prepare(c->w, &c->out);
    size_t before = gw_buf_len(&c->out);
    uint8_t minor = c->req ? c->req->head.http_minor : 1;
    bool head_only = c->req && c->req->head.method == HTTP_HEAD;
    if (gw_response_write_problem(&c->out, pb, rl_extra(c), keep, minor, head_only) != 0) {
        conn_close(c);
        return;
    }
    ex->resp_bytes += gw_buf_len(&c->out) - before;
    ex->status = pb->status;
    complete_response(c, result);
}

static void respond_error(struct gw_conn *c, int status, const char *detail, bool close_after)
{
    struct gw_problem pb = {.status = status, .detail = detail};
    respond_problem(c, &pb, close_after, result_of_status(status));
}

/* The in-flight cap's answer (SPEC.md §6): 503 with the reduced-capacity
 * type and Retry-After: 1, counted as rejected_queue. */
static void respond_no_capacity(struct gw_conn *c, const char *detail, bool close_after)
{
    struct gw_problem pb = {
        .status = 503, .type = GW_PROBLEM_REDUCED_CAPACITY, .detail = detail, .retry_after_s = 1};
    respond_problem(c, &pb, close_after, RESULT_REJECTED_QUEUE);
}

/* ---- per-worker pools: no malloc per keep-alive request ---- */

static void free_parser(struct gw_conn *c)
{
    if (c->req) {
        gw_http_parser_pool_put(&c->w->parsers, c->req);
        c->req = NULL;
    }
}

static int request_body(void *ctx, const char *data, size_t len);

static bool get_parser(struct gw_conn *c)
{
    c->req = gw_http_parser_pool_get(&c->w->parsers, request_body, c);
    return c->req != NULL;
}

static void buf_prepare(struct gw_worker *w, struct gw_buf *b)
{
    gw_buf_pool_get(&w->blocks, b);
}

static void buf_recycle(struct gw_worker *w, struct gw_buf *b)
{
    gw_buf_pool_put(&w->blocks, b);
}

/* After a complete exchange on a kept connection: back to IDLE; an idle
 * connection holds no buffers and no parser. */
static void next_request(struct gw_conn *c)
{
    memset(&c->ex, 0, sizeof(c->ex));
    if (gw_buf_len(&c->in) == 0) {
        free_parser(c);
        buf_recycle(c->w, &c->in);
    } else if (c->req) {
        gw_http_parser_reset(c->req);
    }
    if (gw_buf_len(&c->out) == 0)
        buf_recycle(c->w, &c->out);
    set_state(c, CS_IDLE);
    arm(c, (uint64_t)cfg_of(c)->client_timeout_ms);
}

static void start_linger(struct gw_conn *c)
{
    if (c->client_eof) {
        conn_close(c); /* the client sent its FIN: nothing to drain */
        return;
    }
    set_state(c, CS_LINGER);
    shutdown(c->io.fd, SHUT_WR);
    free_parser(c);
    arm(c, GW_LINGER_MS);
}

/* ---- request head ---- */

static void render_rl_headers(struct gw_conn *c)
{
    struct exchange *ex = &c->ex;
    ex->rl_headers_len = 0;
    if (!ex->rl.has_info || !cfg_of(c)->rate_limit_headers)
        return;
    struct gw_buf *b = &c->w->scratch; /* kept across requests: no malloc */
    gw_buf_clear(b);
    if (gw_response_write_ratelimit_headers(b, &ex->rl.info) == 0 &&
        gw_buf_len(b) <= sizeof(ex->rl_headers)) {
        memcpy(ex->rl_headers, gw_buf_head(b), gw_buf_len(b));
        ex->rl_headers_len = gw_buf_len(b);
    }
}

static void handle_admin(struct gw_conn *c, enum gw_admin_endpoint ep)
{
    const struct gw_http_head *h = &c->req->head;
    if (h->method != HTTP_GET && h->method != HTTP_HEAD) {
        respond_error(c, 405, "only GET and HEAD are allowed on this endpoint", false);
        return;
    }
    bool keep = c->ex.keep_alive && !c->draining;
    buf_prepare(c->w, &c->out);
    size_t before = gw_buf_len(&c->out);
    int status = 0;
    if (gw_admin_respond(c->w, ep, h->target, &c->out, keep, h->http_minor, h->method == HTTP_HEAD,
                         &status) != 0) {
        conn_close(c);
        return;
    }
    if (!keep)
        c->must_close = true;
    c->ex.discard_body = true;
    c->ex.resp_bytes += gw_buf_len(&c->out) - before;
    c->ex.status = status;
    complete_response(c, RESULT_NONE);
}

static void handle_request_head(struct gw_conn *c)
{
    struct gw_worker *w = c->w;
    const struct gw_config *cfg = cfg_of(c);
    const struct gw_http_head *h = &c->req->head;
    count_request(c);
    c->ex.req = REQ_BODY;
    c->ex.keep_alive = h->keep_alive && !c->draining && !c->must_close;

    enum gw_admin_endpoint ep = gw_admin_match(cfg, h->target);
    if (ep != GW_ADMIN_NONE) {
        handle_admin(c, ep);
        return;
    }
    if (h->method == HTTP_CONNECT) {
        respond_error(c, 400, "CONNECT is not supported by this gateway", true);
        return;
    }

    if (!gw_client_id(cfg, c->client_bin, c->client_addr, h, c->ex.rl_key, c->ex.client_ident)) {
        respond_error(c, 400, "more than one field line of the rate-limit key header", false);
        return;
    }
    /* The check is batched: every request whose head completed in this loop
     * iteration is checked together before the worker sleeps, so a Redis
     * store sees one pipelined round trip for all of them. */
    set_state(c, CS_LIMIT);
    c->limit.key = c->ex.rl_key;
    c->limit.key_len = strlen(c->ex.rl_key);
    c->limit.out = &c->ex.rl;
    gw_ratelimit_batch_enqueue(w->limits, &c->limit);
}

/* The rate-limit decision arrived: answer 429/503 or go on to the gate. */
static void after_limit(struct gw_conn *c)
{
    struct gw_worker *w = c->w;
    const struct gw_config *cfg = cfg_of(c);
    struct exchange *ex = &c->ex;
    if (ex->rl.store_error)
        GW_STAT_INC(&w->stats, redis_errors);
    if (ex->rl.over_limit) {
        ex->limited = true;
        if (cfg->rate_limit_dry_run)
            GW_STAT_INC(&w->stats, requests_rate_limited_dry_run);
    }
    render_rl_headers(c);
    if (ex->rl.verdict == GW_RL_LIMITED) {
        struct gw_problem pb = {
            .status = 429,
            .type = GW_PROBLEM_QUOTA_EXCEEDED,
            .detail = "rate limit exceeded; retry after the window resets",
            .retry_after_s = (int)GW_MAX(1, ex->rl.info.reset_after_s),
            .violated_default = true,
        };
        respond_problem(c, &pb, false, RESULT_RATE_LIMITED);
        return;
    }
    if (ex->rl.verdict == GW_RL_UNAVAILABLE) {
        struct gw_problem pb = {
            .status = 503, .detail = "rate limiter unavailable", .retry_after_s = 1};
        respond_problem(c, &pb, false, RESULT_REJECTED_STORE);
        return;
    }

    switch (gw_gate_acquire(w->srv->gate, &c->waiter, &w->gate_owner)) {
    case GW_GATE_ACQUIRED:
        c->slot_held = true;
        gw_histogram_observe(&w->stats.queue_wait, 0);
        start_upstream(c);
        return;
    case GW_GATE_QUEUED:
        ex->queue_start_us = gw_now_us();
        set_state(c, CS_WAIT_SLOT);
        arm(c, (uint64_t)cfg->queue_timeout_ms);
        return;
    case GW_GATE_FULL:
    default:
        respond_no_capacity(c, "too many requests in flight; queue is full", false);
        return;
    }
}

/* The batch decided: go on, and drive what the decision unblocked. */
static void limit_done(struct gw_rl_waiter *wt)
{
    struct gw_conn *c = gw_container_of(wt, struct gw_conn, limit);
    if (c->closing || c->state != CS_LIMIT)
        return;
    after_limit(c);
    if (!c->closing)
        conn_drive(c);
}

void gw_conn_run_redrive(struct gw_worker *w)
{
    struct gw_conn *list = w->redrive;
    w->redrive = NULL;
    while (list) {
        struct gw_conn *c = list;
        list = c->redrive_next;
        c->redrive_queued = false;
        if (!c->closing)
            conn_drive(c); /* may queue itself again */
    }
    if (w->redrive)
        gw_loop_wake(&w->loop); /* still busy: poll without sleeping */
}

/* ---- the upstream half: callbacks of the upstream client ---- */

/* The client expects 100 Continue before sending the body: send it once we
 * are ready to forward (RFC 9110 §10.1.1). */
static void maybe_send_continue(struct gw_conn *c)
{
    const struct gw_http_head *h = &c->req->head;
    if (h->expect_continue && c->ex.req != REQ_DONE && h->http_minor >= 1 &&
        c->req->body_bytes == 0 && gw_buf_len(&c->in) == 0) {
        buf_prepare(c->w, &c->out);
        if (gw_response_write_continue(&c->out) != 0)
            conn_close(c);
        c->req->head.expect_continue = false; /* once */
    }
}

/* While the request body flows, the PROXY deadline is CLIENT_TIMEOUT_MS
 * without progress on it; it moves with progress instead of being re-armed
 * on every read. Once the request is complete, the upstream client's
 * response deadline takes over. */
static void enter_proxy(struct gw_conn *c)
{
    set_state(c, CS_PROXY);
    c->ex.proxy_start_ms = c->w->loop.now_ms;
    if (c->ex.req == REQ_DONE)
        gw_timer_cancel(&c->w->loop, &c->timer);
    else
        arm(c, (uint64_t)cfg_of(c)->client_timeout_ms);
}

static void up_on_connect(void *ctx)
{
    struct gw_conn *c = ctx;
    if (c->state == CS_CONNECT)
        enter_proxy(c);
}

static int up_on_head(void *ctx, const struct gw_http_head *rh)
{
    struct gw_conn *c = ctx;
    struct exchange *ex = &c->ex;
    buf_prepare(c->w, &c->out);
    size_t before = gw_buf_len(&c->out);
    if (rh->status < 200) {
        /* Interim responses (103 Early Hints) go to HTTP/1.1 clients, never
         * to HTTP/1.0 ones (RFC 9110 §15.2). */
        if (c->req->head.http_minor < 1)
            return 0;
        struct gw_proxy_response_ctx ictx = {.client_minor = c->req->head.http_minor,
                                             .keep_alive = true};
        enum gw_framing unused_framing;
        bool unused_close = false;
        if (gw_proxy_write_response_head(&c->out, rh, &ictx, &unused_framing, &unused_close) != 0) {
            conn_close(c);
            return -1;
        }
        ex->resp_bytes += gw_buf_len(&c->out) - before;
        return 0;
    }
    struct gw_proxy_response_ctx pctx = {
        .client_minor = c->req->head.http_minor,
        .request_is_head = c->req->head.method == HTTP_HEAD,
        .keep_alive = ex->keep_alive && !c->draining && !c->must_close,
        .extra = rl_extra(c),
    };
    bool must_close = false;
    if (gw_proxy_write_response_head(&c->out, rh, &pctx, &ex->cl_framing, &must_close) != 0) {
        conn_close(c);
        return -1;
    }
    ex->resp_bytes += gw_buf_len(&c->out) - before;
    if (must_close)
        c->must_close = true;
    ex->status = rh->status;
    ex->resp = RESP_HEAD_SENT;
    return 0;
}

static int up_on_body(void *ctx, const char *data, size_t len)
{
    struct gw_conn *c = ctx;
    /* c->out may have been emptied and recycled by a flush since the head:
     * take a standard block again, or the body would grow a buffer of its
     * own size per read (a malloc per window while streaming). */
    buf_prepare(c->w, &c->out);
    size_t before = gw_buf_len(&c->out);
    int rc = 0;
    switch (c->ex.cl_framing) {
    case GW_FRAMING_CHUNKED:
        rc = gw_proxy_write_chunk(&c->out, data, len);
        break;
    case GW_FRAMING_LENGTH:
    case GW_FRAMING_CLOSE:
        rc = gw_buf_append(&c->out, data, len);
        break;
    case GW_FRAMING_NONE:
    default:
        break;
    }
    c->ex.resp_bytes += gw_buf_len(&c->out) - before;
    if (rc != 0) {
        conn_close(c);
        return -1;
    }
    return 0;
}

/* The upstream response ended: close the client framing and finish. */
static void up_on_done(void *ctx)
{
    struct gw_conn *c = ctx;
    struct exchange *ex = &c->ex;
    if (ex->cl_framing == GW_FRAMING_CHUNKED) {
        buf_prepare(c->w, &c->out);
        size_t before = gw_buf_len(&c->out);
        if (gw_proxy_write_last_chunk(&c->out) != 0) {
            conn_close(c);
            return;
        }
        ex->resp_bytes += gw_buf_len(&c->out) - before;
    }
    if (gw_upstream_send_failed(c->up))
        ex->discard_body = true;
    if (ex->req != REQ_DONE)
        pump_request(c); /* the request may be complete but not yet parsed to its end */
    if (ex->req != REQ_DONE)
        c->must_close = true; /* early response: the rest of the body is unread */
    if (!c->closing)
        complete_response(c, RESULT_PROXIED);
}

static void up_on_error(void *ctx, int status, const char *detail)
{
    struct gw_conn *c = ctx;
    if (gw_upstream_send_failed(c->up))
        c->ex.discard_body = true;
    drop_upstream(c);
    release_slot(c);
    if (c->ex.resp == RESP_HEAD_SENT) {
        /* Truncated: never let it look complete. A response that stalled
         * mid-body counts as closed, one the upstream cut as failed. */
        finish_exchange(c, status == 504 ? RESULT_CLOSED : RESULT_FAILED_UPSTREAM);
        /* Hand over what the client already has of it (the head and whole
         * chunks, never the last chunk), then close, so the client sees a
         * response cut short rather than an empty reply, and can never take
         * it for a complete one. */
        flush_client(c);
        if (!c->closing)
            conn_close(c);
        return;
    }
    respond_error(c, status, detail, false); /* an unread body is discarded or closes */
}

static void up_on_event(void *ctx)
{
    struct gw_conn *c = ctx;
    if (!c->closing)
        conn_drive(c);
}

static const struct gw_upstream_cbs up_cbs = {
    .on_connect = up_on_connect,
    .on_head = up_on_head,
    .on_body = up_on_body,
    .on_done = up_on_done,
    .on_error = up_on_error,
    .on_event = up_on_event,
};

static void start_upstream(struct gw_conn *c)
{
    struct gw_worker *w = c->w;
    const struct gw_config *cfg = cfg_of(c);
    int err = 0;
    struct gw_upstream *u = gw_upstream_get(w->upstreams, &up_cbs, c, &c->out, &err);
    if (!u) {
        gw_warn("upstream connect to %s failed: %s", cfg->backend_authority, strerror(-err));
        respond_error(c, 502, "the upstream server could not be reached", false);
        return;
    }
    c->up = u;
    if (!c->ex.upstream_start_us)
        c->ex.upstream_start_us = gw_now_us();
    struct gw_proxy_request_ctx ctx = {
        .client_addr = c->client_addr,
        .base_path = cfg->backend_base_path ? cfg->backend_base_path : "",
        .backend_hostport = cfg->backend_authority,
        .preserve_host = cfg->preserve_host,
        .upstream_keepalive = cfg->upstream_keepalive > 0,
        .forwarded_proto = "http",
    };
    if (gw_upstream_send_head(u, &c->req->head, &ctx) != 0 ||
        (c->ex.req == REQ_DONE && gw_upstream_send_end(u) != 0)) {
        drop_upstream(c);
        respond_error(c, 502, "the request could not be forwarded", false);
        return;
    }
    maybe_send_continue(c);
    if (c->closing)
        return;
    if (gw_upstream_connected(u)) {
        enter_proxy(c);
    } else {
        set_state(c, CS_CONNECT);
        gw_timer_cancel(&w->loop, &c->timer); /* the upstream client times the connect */
    }
    /* No epoll_ctl here: the drive loop writes the head at once and
     * update_interest registers only what is still needed (a pooled
     * connection usually keeps its EPOLLIN interest unchanged). */
}

static bool drive_upstream(struct gw_conn *c)
{
    if (c->state != CS_PROXY || !c->up)
        return false; /* the upstream is used only once connected and proxying */
    return gw_upstream_drive(c->up);
}

/* ---- request body ---- */

static int request_body(void *ctx, const char *data, size_t len)
{
    struct gw_conn *c = ctx;
    if (c->ex.discard_body || !c->up)
        return 0;
    return gw_upstream_send_body(c->up, data, len) != 0 ? -1 : 0;
}

/* Runs parser p over the first feed bytes of in and consumes what it used
 * (*used); sets *progress when it used any. */
static enum gw_http_result feed_parser(struct gw_http_parser *p, struct gw_buf *in, size_t feed,
                                       size_t *used, bool *progress)
{
    enum gw_http_result r = gw_http_parser_execute(p, gw_buf_head(in), feed, used);
    gw_buf_consume(in, *used);
    if (*used)
        *progress = true;
    return r;
}

/* The request message is complete (RFC 9112 §6). */
static void request_done(struct gw_conn *c)
{
    c->ex.req = REQ_DONE;
    if (c->up && gw_upstream_send_end(c->up) != 0)
        conn_close(c);
    if (!c->closing && c->state == CS_PROXY)
        gw_timer_cancel(&c->w->loop, &c->timer); /* the response deadline is upstream's */
}

/* A request the parser refused (RFC 9112 §2.2, §6.3): answered and closed. */
static void request_error(struct gw_conn *c)
{
    count_request(c);
    gw_debug("conn %d: bad request: %s", c->io.fd,
             c->req->error_detail ? c->req->error_detail : "?");
    drop_upstream(c); /* never let a half-sent request be reused */
    leave_queue(c);
    release_slot(c);
    c->ex.req = REQ_DONE; /* nothing more is read: the connection closes */
    respond_error(c, c->req->error_status ? c->req->error_status : 400,
                  c->req->error_detail ? c->req->error_detail : "malformed request", true);
}

/* Feeds buffered client bytes to the request parser: the head in
 * IDLE/HEAD, the body while proxying (bounded by the upstream's output room)
 * or while discarding. Returns true on progress. */
static bool pump_request(struct gw_conn *c)
{
    bool progress = false;
    while (!c->closing &&
           (gw_buf_len(&c->in) > 0 || (c->req && gw_http_parser_done_pending(c->req)))) {
        size_t feed = gw_buf_len(&c->in);
        switch (c->state) {
        case CS_IDLE:
        case CS_HEAD:
            if (!c->req && !get_parser(c)) {
                conn_close(c);
                return true;
            }
            if (c->state == CS_IDLE) {
                c->ex.start_us = gw_now_us();
                c->ex.req = REQ_HEAD;
                set_state(c, CS_HEAD);
                arm(c, (uint64_t)cfg_of(c)->client_timeout_ms);
            }
            break;
        case CS_PROXY: {
            if (c->ex.req == REQ_DONE || !c->up)
                return progress;
            size_t room = gw_upstream_send_room(c->up);
            if (room == 0)
                return progress;
            feed = GW_MIN(feed, room);
            break;
        }
        case CS_RESPOND:
            if (c->ex.req == REQ_DONE || !c->ex.discard_body)
                return progress;
            break;
        case CS_WAIT_SLOT:
        case CS_CONNECT:
            /* Body bytes wait in the buffer until the upstream is ready, but a
             * body-less request is complete now. */
            if (!gw_http_parser_done_pending(c->req))
                return progress;
            feed = 0;
            break;
        default:
            return progress;
        }
        size_t used = 0;
        enum gw_http_result r = feed_parser(c->req, &c->in, feed, &used, &progress);
        switch (r) {
        case GW_HTTP_NEED_MORE:
            if (used == 0)
                return progress;
            break;
        case GW_HTTP_HEAD:
            progress = true;
            handle_request_head(c);
            /* Go on: a body-less request completes right away, before its
             * response can arrive. */
            break;
        case GW_HTTP_DONE:
            progress = true;
            request_done(c);
            return progress;
        case GW_HTTP_ERROR:
        default:
            request_error(c);
            return true;
        }
    }
    return progress;
}

/* ---- client socket ---- */

/* Sends what b holds to fd until it is empty or the socket is full;
 * *progress when any byte left. Returns 0, or -1 when the peer is gone. */
static int send_buffered(int fd, struct gw_buf *b, bool *progress)
{
    while (gw_buf_len(b) > 0) {
        ssize_t n = send(fd, gw_buf_head(b), gw_buf_len(b), MSG_NOSIGNAL);
        if (n > 0) {
            gw_buf_consume(b, (size_t)n);
            *progress = true;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        return -1;
    }
    return 0;
}

static bool flush_client(struct gw_conn *c)
{
    bool progress = false;
    if (send_buffered(c->io.fd, &c->out, &progress) != 0) {
        conn_close(c); /* the client went away */
        return true;
    }
    if (progress && gw_buf_len(&c->out) == 0)
        buf_recycle(c->w, &c->out);
    if (progress && c->state == CS_RESPOND)
        arm(c, (uint64_t)cfg_of(c)->client_timeout_ms);
    return progress;
}

static bool want_client_read(const struct gw_conn *c)
{
    if (c->client_eof || c->closing)
        return false;
    size_t len = gw_buf_len(&c->in);
    switch (c->state) {
    case CS_IDLE:
    case CS_HEAD:
        return len < (size_t)cfg_of(c)->max_header_bytes + GW_READ_CHUNK;
    case CS_LINGER:
        return true;
    case CS_RESPOND:
        if (c->ex.req != REQ_DONE && c->ex.discard_body)
            return len < GW_STREAM_WINDOW;
        return len < GW_STREAM_WINDOW && !c->must_close;
    default:
        return len < GW_STREAM_WINDOW;
    }
}

static bool read_client(struct gw_conn *c)
{
    if (!c->rd_ready || !want_client_read(c))
        return false;
    if (c->state == CS_LINGER) {
        char sink[4096];
        ssize_t n = recv(c->io.fd, sink, sizeof(sink), 0);
        if (n < 0 && errno == EAGAIN)
            c->rd_ready = false;
        else if (n == 0 || (n < 0 && errno != EINTR))
            conn_close(c);
        return n > 0;
    }
    buf_prepare(c->w, &c->in);
    /* Ask for a little room, read as much as the block holds: asking for a
     * whole chunk would grow the block whenever a few bytes are pending. */
    if (gw_buf_reserve(&c->in, GW_READ_MIN) != 0) {
        conn_close(c);
        return true;
    }
    size_t room = gw_buf_tail_room(&c->in);
    ssize_t n = recv(c->io.fd, c->in.data + c->in.end, room, 0);
    if (n > 0) {
        gw_buf_commit(&c->in, (size_t)n);
        c->client_rx_ms = c->w->loop.now_ms;
        if ((size_t)n < room)
            c->rd_ready = false; /* drained; level-triggered epoll says when more comes */
        return true;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        if (errno == EAGAIN) {
            c->rd_ready = false;
            if (gw_buf_len(&c->in) == 0)
                buf_recycle(c->w, &c->in); /* an idle connection holds no block */
        }
        return false;
    }
    if (n < 0) {
        conn_close(c); /* reset by the client: nothing more can be delivered */
        return true;
    }
    /* FIN: the client finished sending. Buffered bytes may still complete
     * its request, which is then answered before closing (half-close);
     * check_client_eof closes once nothing more can come of it. */
    c->client_eof = true;
    return true;
}

/* In RESPOND: once the response is flushed and the request fully read,
 * close or go back to IDLE. Returns true on a state change. */
static bool respond_progress(struct gw_conn *c)
{
    if (c->state != CS_RESPOND)
        return false;
    if (c->must_close || c->draining) {
        if (gw_buf_len(&c->out) == 0) {
            start_linger(c);
            return true;
        }
        return false;
    }
    if (c->ex.req != REQ_DONE || gw_buf_len(&c->out) >= GW_STREAM_WINDOW)
        return false;
    next_request(c);
    return true;
}

static void update_interest(struct gw_conn *c)
{
    if (c->closing)
        return;
    uint32_t ev = 0;
    if (want_client_read(c))
        ev |= EPOLLIN;
    if (gw_buf_len(&c->out) > 0)
        ev |= EPOLLOUT;
    if (gw_loop_watch(&c->w->loop, &c->io, ev) != 0) {
        conn_close(c);
        return;
    }
    if (c->up)
        gw_upstream_update_interest(c->up);
}

/* After a client FIN: close once the connection can produce nothing more
 * for the client, i.e. no request can complete from what is buffered. */
static void check_client_eof(struct gw_conn *c)
{
    if (!c->client_eof || c->closing)
        return;
    bool buffered = gw_buf_len(&c->in) > 0;
    switch (c->state) {
    case CS_IDLE:
        if (!buffered && gw_buf_len(&c->out) == 0)
            conn_close(c); /* the last response is out; nothing else was asked */
        return;
    case CS_HEAD:
        conn_close(c); /* everything buffered was parsed: the head stays incomplete */
        return;
    case CS_PROXY:
    case CS_RESPOND:
        /* The body can no longer complete once the buffer is drained. */
        if (c->ex.req != REQ_DONE && !buffered && !gw_http_parser_done_pending(c->req))
            conn_close(c);
        return;
    default:
        return; /* LIMIT, WAIT_SLOT, CONNECT: the buffered body waits its turn */
    }
}

static void conn_drive(struct gw_conn *c)
{
    /* One round runs every step once; each step says whether it moved
     * anything, and the steps after a close are skipped. */
    typedef bool (*drive_step)(struct gw_conn *);
    static const drive_step steps[] = {flush_client, read_client, pump_request, drive_upstream,
                                       respond_progress};
    bool progress = false;
    for (int round = 0; round < GW_DRIVE_ROUNDS && !c->closing; round++) {
        progress = false;
        for (size_t i = 0; i < GW_ARRAY_LEN(steps) && !c->closing; i++)
            progress |= steps[i](c);
        if (!progress)
            break;
    }
    check_client_eof(c);
    if (progress && !c->closing && !c->redrive_queued) {
        /* Out of rounds while still moving: no event may come for what is
         * left (e.g. a full input buffer waiting for the upstream window
         * just emptied), so drive it again before the worker sleeps. */
        c->redrive_queued = true;
        c->redrive_next = c->w->redrive;
        c->w->redrive = c;
    }
    update_interest(c);
}

/* ---- callbacks ---- */

static void conn_io_cb(struct gw_loop *loop, struct gw_io *io, uint32_t events)
{
    struct gw_conn *c = gw_container_of(io, struct gw_conn, io);
    if (c->closing)
        return;
    if ((events & EPOLLERR) || ((events & EPOLLHUP) && !(events & EPOLLIN))) {
        conn_close(c);
        return;
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP))
        c->rd_ready = true;
    conn_drive(c);
}

/* PROXY while the request body flows: CLIENT_TIMEOUT_MS without body bytes
 * read from the client or written to the upstream. */
static void proxy_timeout(struct gw_conn *c)
{
    struct exchange *ex = &c->ex;
    if (ex->req == REQ_DONE)
        return; /* the upstream client's response deadline runs */
    uint64_t now = c->w->loop.now_ms;
    uint64_t last = GW_MAX(c->client_rx_ms, ex->proxy_start_ms);
    if (c->up)
        last = GW_MAX(last, gw_upstream_send_ms(c->up));
    uint64_t due = last + (uint64_t)cfg_of(c)->client_timeout_ms;
    if (due > now) {
        arm(c, due - now); /* there was progress since it was armed */
        return;
    }
    if (ex->resp == RESP_HEAD_SENT) {
        conn_close(c); /* stalled mid-response: never let it look complete */
        return;
    }
    bool upstream_stalled = c->up && gw_upstream_send_stalled(c->up);
    drop_upstream(c);
    if (upstream_stalled) {
        respond_error(c, 504, "the upstream server did not answer in time", false);
        return;
    }
    /* The client stopped sending its body. */
    ex->req = REQ_DONE; /* nothing more is read: the connection closes */
    c->must_close = true;
    respond_error(c, 408, "the request body was not received in time", false);
}

static void conn_timer_cb(struct gw_loop *loop, struct gw_timer *t)
{
    struct gw_conn *c = gw_container_of(t, struct gw_conn, timer);
    if (c->closing)
        return;
    switch (c->state) {
    case CS_IDLE:
    case CS_LINGER:
    case CS_RESPOND: /* the client stopped reading or sending */
        conn_close(c);
        return;
    case CS_HEAD:
        count_request(c);
        c->ex.req = REQ_DONE; /* the rest is never read */
        respond_error(c, 408, "the request was not received in time", true);
        break;
    case CS_WAIT_SLOT:
        leave_queue(c);
        gw_histogram_observe(&c->w->stats.queue_wait, gw_now_us() - c->ex.queue_start_us);
        if (c->slot_held)
            start_upstream(c); /* granted just now: go ahead with the slot */
        else
            respond_no_capacity(c, "timed out waiting for an in-flight slot", false);
        break;
    case CS_PROXY:
        proxy_timeout(c);
        break;
    default:
        return;
    }
    if (!c->closing)
        conn_drive(c);
}

void gw_conn_on_granted(struct gw_worker *w, struct gw_gate_waiter *waiter)
{
    struct gw_conn *c = gw_container_of(waiter, struct gw_conn, waiter);
    if (c->closing || c->state != CS_WAIT_SLOT) {
        gw_gate_release(w->srv->gate); /* nobody to use it */
        return;
    }
    if (atomic_load_explicit(&w->srv->forced_close, memory_order_acquire)) {
        /* The slot was freed by a forced close of its holder: the request
         * must not start now, it gets the shutdown 503 like every queued
         * one (gw_conn_drain, whatever order the workers see the stop). */
        gw_gate_release(w->srv->gate);
        gw_conn_drain(c, true);
        return;
    }
    c->slot_held = true;
    gw_histogram_observe(&w->stats.queue_wait, gw_now_us() - c->ex.queue_start_us);
    start_upstream(c);
    if (!c->closing)
        conn_drive(c);
}

/* ---- open / close / reap ---- */

int gw_conn_open(struct gw_worker *w, int fd, const struct sockaddr_storage *peer)
{
    struct gw_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        uint8_t addr[16];
        gw_net_addr_bin(peer, addr);
        close(fd);
        gw_acceptor_release(w->srv, addr);
        return -ENOMEM;
    }
    c->w = w;
    gw_io_init(&c->io, fd, conn_io_cb);
    gw_timer_init(&c->timer, conn_timer_cb);
    c->limit.done = limit_done;
    gw_net_format_addr(peer, c->client_addr, sizeof(c->client_addr), c->client_bin);
    gw_net_nodelay(fd);
    c->draining = w->draining;
    c->rd_ready = true; /* the request may already be waiting */
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    atomic_fetch_add_explicit(&w->stats.connections_active, 1, memory_order_relaxed);
    c->state = CS_IDLE; /* calloc'd: the initial state */
    arm(c, (uint64_t)w->srv->cfg->client_timeout_ms);
    if (c->closing)
        return -ENOMEM;
    conn_drive(c); /* registers interest; bytes may already be waiting */
    return 0;
}

/* The single close path: ends the exchange (a request without its response
 * counts as closed), marks the connection and lists it for the reaper. */
static void conn_close(struct gw_conn *c)
{
    if (c->closing)
        return;
    finish_exchange(c, RESULT_CLOSED);
    gw_ratelimit_batch_cancel(c->w->limits, &c->limit);
    c->closing = true;
    set_state(c, CS_CLOSED);
    gw_loop_unwatch(&c->w->loop, &c->io);
    gw_timer_cancel(&c->w->loop, &c->timer);
    c->reap_next = c->w->reap;
    c->w->reap = c;
}

struct gw_conn *gw_conn_next(struct gw_conn *c)
{
    return c->next;
}

void gw_conn_drain(struct gw_conn *c, bool force)
{
    if (c->closing)
        return;
    c->draining = true;
    if (force && (c->state == CS_WAIT_SLOT || c->state == CS_CONNECT)) {
        /* Still queued, or granted a slot (perhaps one a closing peer just
         * freed) but not yet connected: nothing reached the backend, so it
         * gets a 503 it may retry elsewhere, not a bare close. One
         * non-blocking send; the connection closes either way. */
        if (c->state == CS_WAIT_SLOT) {
            leave_queue(c);
            gw_histogram_observe(&c->w->stats.queue_wait, gw_now_us() - c->ex.queue_start_us);
        }
        drop_upstream(c);
        release_slot(c);
        respond_no_capacity(c, "the gateway is shutting down", true);
        if (!c->closing)
            flush_client(c);
        if (!c->closing)
            conn_close(c);
        return;
    }
    if (force || c->state == CS_IDLE) {
        conn_close(c);
        return;
    }
    c->must_close = true;
    conn_drive(c);
}

void gw_conn_reap(struct gw_worker *w)
{
    if (!w->reap)
        return;
    /* A closed connection may still be listed for a redrive; unlink it
     * before anything is freed. */
    struct gw_conn **pp = &w->redrive;
    while (*pp) {
        if ((*pp)->closing) {
            (*pp)->redrive_queued = false;
            *pp = (*pp)->redrive_next;
        } else {
            pp = &(*pp)->redrive_next;
        }
    }
    while (w->reap) {
        struct gw_conn *c = w->reap;
        w->reap = c->reap_next;
        if (c->prev)
            c->prev->next = c->next;
        else
            w->conns = c->next;
        if (c->next)
            c->next->prev = c->prev;
        close(c->io.fd);
        buf_recycle(w, &c->in);
        buf_recycle(w, &c->out);
        free_parser(c);
        atomic_fetch_sub_explicit(&w->stats.connections_active, 1, memory_order_relaxed);
        gw_acceptor_release(w->srv, c->client_bin);
        free(c);
    }
}
