/*
 * Client connection state machine (memcached drive_machine shape). One
 * request at a time per connection; pipelined bytes wait in the input
 * buffer, so responses leave in request order.
 *
 *            first byte                head parsed
 *   IDLE ───────────────▶ HEAD ───────────────────┐
 *    ▲                     │ 408/400/431           ▼
 *    │                     ▼               rate limit ─▶ 429/503 ──┐
 *    │                  RESPOND ◀──────────────────┤               │
 *    │                     ▲                     gate              │
 *    │                     │ 502/503/504          │ no slot        │
 *    │                     │               WAIT_SLOT ─timeout─▶ 503┤
 *    │                     │                      │ slot           │
 *    │                     ├──────────────── CONNECT               │
 *    │                     │                      │                │
 *    │                     │                    PROXY ─────────────┤
 *    │   response queued,  │                                       ▼
 *    └──── request done ───┴──────────── must close ─▶ LINGER ─▶ closed
 *
 * The request and the response keep separate half-states (req_done,
 * resp_head_sent, resp_done) so an early upstream response or a client that
 * keeps sending stay sane. Closing only marks the connection; the reaper
 * frees it at the end of the loop iteration, returns its in-flight slot and
 * closes the descriptor.
 */
#include "conn.h"

#include "acceptor.h"
#include "admin.h"
#include "gw/client_id.h"
#include "gw/health.h"
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
    CS_CONNECT,   /* connecting to the upstream */
    CS_PROXY,     /* streaming request and response */
    CS_RESPOND,   /* response queued; flushing it, reading what is left of the request */
    CS_LINGER,    /* last response written, write side shut, draining input */
    CS_CLOSED,
};

static const char *const state_names[] = {"idle",  "head",    "limit",  "wait_slot", "connect",
                                          "proxy", "respond", "linger", "closed"};

struct gw_conn {
    struct gw_io io;              /* client socket */
    struct gw_worker *w;          /* owning worker */
    struct gw_conn *prev, *next;  /* worker's live list */
    struct gw_conn *reap_next;    /* worker's reap list */
    struct gw_conn *limit_next;   /* worker's pending rate-limit batch */
    struct gw_conn *redrive_next; /* worker's redrive list */
    enum conn_state state;
    struct gw_timer timer;                 /* the one deadline of the current state */
    char client_addr[64];                  /* peer address text */
    char client_ident[GW_CLIENT_ADDR_MAX]; /* identified client (XFF-aware), for logs */
    char rl_key[GW_CLIENT_KEY_MAX];        /* rate-limit key of the current request */
    uint8_t client_bin[16];                /* peer address, IPv4-mapped */
    struct gw_buf in;                      /* client bytes not yet parsed */
    struct gw_buf out;                     /* bytes not yet written to the client */
    struct gw_http_parser *req;            /* request parser, allocated while a request is open */
    struct gw_upstream *up;                /* upstream of the current exchange */
    struct gw_gate_waiter waiter;          /* in-flight gate FIFO entry */
    bool slot_held;                        /* holds an in-flight slot */
    bool closing;                          /* closed; waiting for the reaper */
    bool rd_ready;                         /* epoll said readable and no EAGAIN since: a read
                                              is attempted only then (no empty recv calls) */
    bool redrive_queued;                   /* on the worker's redrive list */
    bool client_eof;                       /* client shut its write side */
    bool must_close;                       /* close after the current response */
    bool draining;                         /* worker draining: no keep-alive */

    /* the current exchange */
    uint64_t start_us;          /* first byte of the request */
    uint64_t upstream_start_us; /* upstream phase start, 0 = not proxied */
    uint64_t queue_start_us;    /* gate wait start */
    uint64_t client_rx_ms;      /* last request bytes read (loop clock) */
    uint64_t client_tx_ms;      /* last response bytes written */
    uint64_t up_rx_ms;          /* last response bytes read from the upstream */
    uint64_t up_tx_ms;          /* last request bytes written to the upstream */
    uint64_t req_done_ms;       /* when the request was fully read */
    uint64_t proxy_start_ms;    /* when the exchange entered PROXY */
    bool keep_alive;            /* client wants and may keep the connection */
    bool req_done;              /* request message fully parsed */
    bool discard_body;          /* body bytes are read and dropped */
    bool resp_head_sent;        /* response head queued: no error page possible now */
    bool resp_done;             /* response fully queued */
    bool resp_started;          /* upstream sent at least one response byte */
    bool retried;               /* the one retry on a fresh connection was used */
    bool limited;               /* the limiter refused it (or would, dry run) */
    bool proxied;               /* response came from the upstream */
    bool awaiting_outcome;      /* counted in requests_total, not yet under a result */
    enum gw_framing up_framing; /* request body framing towards the upstream */
    enum gw_framing cl_framing; /* response body framing towards the client */
    int status;                 /* status sent to the client */
    uint64_t resp_bytes;        /* response bytes queued for the client */
    struct gw_rl_decision rl;   /* rate-limit decision */
    char rl_headers[512];       /* rendered rate-limit header lines */
    size_t rl_headers_len;
};

static void conn_drive(struct gw_conn *c);
static void conn_close(struct gw_conn *c);
static bool flush_client(struct gw_conn *c);
static void start_upstream(struct gw_conn *c);
static void finish_response(struct gw_conn *c);
static void maybe_send_continue(struct gw_conn *c);
static void response_complete(struct gw_conn *c);
static bool pump_request(struct gw_conn *c);
static void buf_prepare(struct gw_worker *w, struct gw_buf *b);
static void enter_proxy(struct gw_conn *c);

static const struct gw_config *cfg_of(const struct gw_conn *c)
{
    return c->w->srv->cfg;
}

static void set_state(struct gw_conn *c, enum conn_state s)
{
    gw_debug("conn %d: %s -> %s", c->io.fd, state_names[c->state], state_names[s]);
    c->state = s;
}

static void arm(struct gw_conn *c, uint64_t after_ms)
{
    if (gw_timer_arm(&c->w->loop, &c->timer, c->w->loop.now_ms + after_ms) != 0)
        conn_close(c); /* out of memory for the heap: cannot keep a deadline */
}

/* ---- writing responses the gateway generates ---- */

static void count_status(struct gw_conn *c, int status)
{
    struct gw_stats_worker *st = &c->w->stats;
    if (status == 429)
        GW_STAT_INC(st, requests_rate_limited);
    else if (status == 502 || status == 504)
        GW_STAT_INC(st, requests_failed_upstream);
    else if (status >= 400 && status < 500)
        GW_STAT_INC(st, requests_bad);
}

static struct gw_slice rl_extra(const struct gw_conn *c)
{
    return (struct gw_slice){c->rl_headers, c->rl_headers_len};
}

/* Queues a problem+json response. close_after: the framing of the request is
 * in doubt (or the body will not be read), so the connection closes after. */
static void respond_problem(struct gw_conn *c, const struct gw_problem *pb, bool close_after)
{
    if (c->resp_head_sent) {
        /* Part of a response already left: the only honest signal left is
         * closing without completing it. */
        count_status(c, pb->status);
        c->awaiting_outcome = false;
        conn_close(c);
        return;
    }
    c->awaiting_outcome = false; /* counted below or by the caller (503s) */
    if (close_after || !c->req)
        c->must_close = true;
    if (c->req && !c->req_done) {
        /* The body was not consumed. Reading it on to keep the connection is
         * only safe when the client will send it (no unanswered Expect). */
        if (c->req->head.expect_continue || pb->status == 413)
            c->must_close = true;
        else
            c->discard_body = true;
    }
    bool keep = c->keep_alive && !c->must_close && !c->draining;
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
    c->resp_bytes += gw_buf_len(&c->out) - before;
    c->status = pb->status;
    c->resp_head_sent = true;
    count_status(c, pb->status);
    finish_response(c);
}

static void respond_error(struct gw_conn *c, int status, const char *detail, bool close_after)
{
    struct gw_problem pb = {.status = status, .detail = detail};
    respond_problem(c, &pb, close_after);
}

/* The in-flight cap's answer (SPEC.md §6): 503 with the reduced-capacity
 * type and Retry-After: 1, counted as rejected_queue. */
static void respond_no_capacity(struct gw_conn *c, const char *detail, bool close_after)
{
    GW_STAT_INC(&c->w->stats, requests_rejected_queue);
    struct gw_problem pb = {
        .status = 503, .type = GW_PROBLEM_REDUCED_CAPACITY, .detail = detail, .retry_after_s = 1};
    respond_problem(c, &pb, close_after);
}

/* ---- exchange lifecycle ---- */

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

static void log_access(struct gw_conn *c)
{
    if (!cfg_of(c)->access_log || !c->req)
        return;
    uint64_t now = gw_now_us();
    struct gw_access_entry e = {
        .client = c->client_ident[0] ? c->client_ident : c->client_addr,
        .method = c->req->head.method_name,
        .path = c->req->head.target,
        .status = c->status,
        .bytes_sent = c->resp_bytes,
        .duration_ms = (double)(now - c->start_us) / 1000.0,
        .upstream_ms = c->upstream_start_us ? (double)(now - c->upstream_start_us) / 1000.0 : -1,
        .limited = c->limited,
    };
    gw_log_access(&e);
}

/* The response is fully queued: account for it, give back the upstream and
 * the slot. What happens to the connection next is decided once the output
 * is flushed and the request fully read (respond_progress). */
static void finish_response(struct gw_conn *c)
{
    c->resp_done = true;
    c->awaiting_outcome = false;
    uint64_t now = gw_now_us();
    if (c->proxied) {
        GW_STAT_INC(&c->w->stats, requests_proxied);
        gw_histogram_observe(&c->w->stats.request_latency, now - c->start_us);
        if (c->upstream_start_us)
            gw_histogram_observe(&c->w->stats.upstream_latency, now - c->upstream_start_us);
    }
    if (c->up) {
        struct gw_upstream *u = c->up;
        c->up = NULL;
        bool reusable = c->proxied && c->req_done && u->resp.head.keep_alive &&
                        !u->resp.head.body_until_close && gw_buf_len(&u->out) == 0;
        if (reusable)
            gw_upstream_put(u);
        else
            gw_upstream_close(u);
    }
    release_slot(c);
    log_access(c);
    if (c->state != CS_CLOSED)
        set_state(c, CS_RESPOND);
    arm(c, (uint64_t)cfg_of(c)->client_timeout_ms);
}

static void reset_exchange(struct gw_conn *c)
{
    c->start_us = c->upstream_start_us = c->queue_start_us = 0;
    c->keep_alive = c->req_done = c->discard_body = false;
    c->resp_head_sent = c->resp_done = c->resp_started = c->retried = false;
    c->limited = c->proxied = c->awaiting_outcome = false;
    c->up_framing = c->cl_framing = GW_FRAMING_NONE;
    c->status = 0;
    c->resp_bytes = 0;
    c->rl_headers_len = 0;
    c->client_ident[0] = '\0';
    memset(&c->rl, 0, sizeof(c->rl));
}

/* ---- per-worker spares: no malloc per keep-alive request ---- */

static void free_parser(struct gw_conn *c)
{
    struct gw_http_parser *p = c->req;
    if (!p)
        return;
    c->req = NULL;
    struct gw_worker *w = c->w;
    if (w->parser_free_len < GW_WORKER_SPARES) {
        gw_http_parser_recycle(p);
        w->parser_free[w->parser_free_len++] = p;
        return;
    }
    gw_http_parser_deinit(p);
    free(p);
}

static int request_body(void *ctx, const char *data, size_t len);

static bool get_parser(struct gw_conn *c)
{
    struct gw_worker *w = c->w;
    if (w->parser_free_len > 0) {
        c->req = w->parser_free[--w->parser_free_len];
        c->req->ctx = c;
        return true;
    }
    const struct gw_config *cfg = cfg_of(c);
    struct gw_http_parser *p = calloc(1, sizeof(*p));
    if (!p || gw_http_parser_init(p, GW_HTTP_REQUEST, (size_t)cfg->max_header_bytes,
                                  (uint64_t)cfg->max_body_bytes, request_body, c) != 0) {
        free(p);
        return false;
    }
    c->req = p;
    return true;
}

/* Gives an empty buffer a recycled block before its first reserve. */
static void buf_prepare(struct gw_worker *w, struct gw_buf *b)
{
    if (b->data != NULL)
        return;
    /* Every buffer starts as a standard block so buf_recycle can keep it;
     * when no spare is left, a new block (a failed malloc is seen again by
     * the reserve that follows). */
    char *block =
        w->block_free_len > 0 ? w->block_free[--w->block_free_len] : malloc(GW_BLOCK_SIZE);
    if (block) {
        b->data = block;
        b->cap = GW_BLOCK_SIZE;
        b->start = b->end = 0;
    }
}

/* Releases a buffer's storage, keeping standard-size blocks as spares. */
static void buf_recycle(struct gw_worker *w, struct gw_buf *b)
{
    if (b->data && b->cap == GW_BLOCK_SIZE && w->block_free_len < GW_WORKER_SPARES) {
        w->block_free[w->block_free_len++] = b->data;
        b->data = NULL;
        b->start = b->end = b->cap = 0;
        return;
    }
    gw_buf_release(b);
}

/* After a complete exchange on a kept connection: back to IDLE; an idle
 * connection holds no buffers and no parser. */
static void next_request(struct gw_conn *c)
{
    reset_exchange(c);
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

static bool method_idempotent(int m)
{
    return m == HTTP_GET || m == HTTP_HEAD || m == HTTP_PUT || m == HTTP_DELETE ||
           m == HTTP_OPTIONS || m == HTTP_TRACE;
}

static void render_rl_headers(struct gw_conn *c)
{
    c->rl_headers_len = 0;
    if (!c->rl.has_info || !cfg_of(c)->rate_limit_headers)
        return;
    struct gw_buf *b = &c->w->scratch; /* kept across requests: no malloc */
    gw_buf_clear(b);
    if (gw_response_write_ratelimit_headers(b, &c->rl.info) == 0 &&
        gw_buf_len(b) <= sizeof(c->rl_headers)) {
        memcpy(c->rl_headers, gw_buf_head(b), gw_buf_len(b));
        c->rl_headers_len = gw_buf_len(b);
    }
}

static void handle_admin(struct gw_conn *c, enum gw_admin_endpoint ep)
{
    const struct gw_http_head *h = &c->req->head;
    if (h->method != HTTP_GET && h->method != HTTP_HEAD) {
        respond_error(c, 405, "only GET and HEAD are allowed on this endpoint", false);
        return;
    }
    bool keep = c->keep_alive && !c->draining;
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
    c->discard_body = true;
    c->resp_bytes += gw_buf_len(&c->out) - before;
    c->status = status;
    c->resp_head_sent = true;
    finish_response(c);
}

static void handle_request_head(struct gw_conn *c)
{
    struct gw_worker *w = c->w;
    const struct gw_config *cfg = cfg_of(c);
    const struct gw_http_head *h = &c->req->head;
    GW_STAT_INC(&w->stats, requests_total);
    c->keep_alive = h->keep_alive && !c->draining && !c->must_close;

    enum gw_admin_endpoint ep = gw_admin_match(cfg, h->target);
    if (ep != GW_ADMIN_NONE) {
        handle_admin(c, ep);
        return;
    }
    c->awaiting_outcome = true; /* until a result counts it, or the connection closes */
    if (h->method == HTTP_CONNECT) {
        respond_error(c, 400, "CONNECT is not supported by this gateway", true);
        return;
    }

    if (!gw_client_id(cfg, c->client_bin, c->client_addr, h, c->rl_key, c->client_ident)) {
        respond_error(c, 400, "more than one field line of the rate-limit key header", false);
        return;
    }
    /* The check is batched: every request whose head completed in this loop
     * iteration is checked together before the worker sleeps, so a Redis
     * store sees one pipelined round trip for all of them. */
    set_state(c, CS_LIMIT);
    c->limit_next = NULL;
    if (w->limit_tail)
        w->limit_tail->limit_next = c;
    else
        w->limit_head = c;
    w->limit_tail = c;
}

/* The rate-limit decision arrived: answer 429/503 or go on to the gate. */
static void after_limit(struct gw_conn *c)
{
    struct gw_worker *w = c->w;
    const struct gw_config *cfg = cfg_of(c);
    if (c->rl.store_error)
        GW_STAT_INC(&w->stats, redis_errors);
    if (c->rl.over_limit) {
        c->limited = true;
        if (cfg->rate_limit_dry_run)
            GW_STAT_INC(&w->stats, requests_rate_limited_dry_run);
    }
    render_rl_headers(c);
    if (c->rl.verdict == GW_RL_LIMITED) {
        struct gw_problem pb = {
            .status = 429,
            .type = GW_PROBLEM_QUOTA_EXCEEDED,
            .detail = "rate limit exceeded; retry after the window resets",
            .retry_after_s = (int)GW_MAX(1, c->rl.info.reset_after_s),
            .violated_default = true,
        };
        respond_problem(c, &pb, false);
        return;
    }
    if (c->rl.verdict == GW_RL_UNAVAILABLE) {
        GW_STAT_INC(&w->stats, requests_rejected_store);
        struct gw_problem pb = {
            .status = 503, .detail = "rate limiter unavailable", .retry_after_s = 1};
        respond_problem(c, &pb, false);
        return;
    }

    switch (gw_gate_acquire(w->srv->gate, &c->waiter, &w->gate_owner)) {
    case GW_GATE_ACQUIRED:
        c->slot_held = true;
        gw_histogram_observe(&w->stats.queue_wait, 0);
        start_upstream(c);
        return;
    case GW_GATE_QUEUED:
        c->queue_start_us = gw_now_us();
        set_state(c, CS_WAIT_SLOT);
        arm(c, (uint64_t)cfg->queue_timeout_ms);
        return;
    case GW_GATE_FULL:
    default:
        respond_no_capacity(c, "too many requests in flight; queue is full", false);
        return;
    }
}

void gw_conn_run_limit_batch(struct gw_worker *w)
{
    /* Bounded: each round can only add requests that were pipelined behind
     * the ones just answered. */
    for (int round = 0; round < 16 && w->limit_head; round++) {
        struct gw_conn *list = w->limit_head;
        w->limit_head = w->limit_tail = NULL;
        struct gw_rl_batch_item items[GW_LIMIT_BATCH_MAX];
        struct gw_conn *conns[GW_LIMIT_BATCH_MAX];
        while (list) {
            size_t n = 0;
            for (; list && n < GW_LIMIT_BATCH_MAX; list = list->limit_next) {
                if (list->closing || list->state != CS_LIMIT)
                    continue;
                conns[n] = list;
                items[n] = (struct gw_rl_batch_item){list->rl_key, strlen(list->rl_key), &list->rl};
                n++;
            }
            if (n == 0)
                break;
            gw_ratelimit_check_batch(w->rl, items, n);
            for (size_t i = 0; i < n; i++) {
                struct gw_conn *c = conns[i];
                if (c->closing)
                    continue;
                after_limit(c);
                conn_drive(c);
            }
        }
    }
    if (w->limit_head)
        gw_loop_wake(&w->loop); /* more pipelined checks: poll without sleeping */
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

/* ---- upstream side ---- */

static void upstream_failed(struct gw_conn *c, int status, const char *detail)
{
    struct gw_upstream *u = c->up;
    const struct gw_http_head *h = &c->req->head;
    bool can_retry = u && u->reused && !c->resp_started && !c->retried && !h->has_body &&
                     method_idempotent(h->method) && status == 502;
    if (u) {
        c->up = NULL;
        gw_upstream_close(u);
    }
    if (can_retry) {
        c->retried = true;
        gw_debug("conn %d: pooled upstream closed before answering; retrying", c->io.fd);
        start_upstream(c);
        return;
    }
    c->proxied = false;
    release_slot(c);
    if (c->resp_head_sent) {
        GW_STAT_INC(&c->w->stats, requests_failed_upstream);
        c->awaiting_outcome = false;
        /* Truncated: hand over what the client already has of it (the head
         * and whole chunks, never the last chunk), then close, so the client
         * sees a response cut short rather than an empty reply, and can
         * never take it for a complete one. */
        flush_client(c);
        if (!c->closing)
            conn_close(c);
        return;
    }
    respond_error(c, status, detail, false); /* an unread body is discarded or closes */
}

static void start_upstream(struct gw_conn *c)
{
    struct gw_worker *w = c->w;
    const struct gw_config *cfg = cfg_of(c);
    int err = 0;
    struct gw_upstream *u = gw_upstream_get(w, c->retried, &err);
    if (!u) {
        release_slot(c);
        if (err != -ENOMEM)
            gw_health_note_backend(w->srv->health, false);
        gw_warn("upstream connect to %s failed: %s", w->srv->cfg->backend_authority,
                strerror(-err));
        respond_error(c, 502, "the upstream server could not be reached", false);
        return;
    }
    u->conn = c;
    c->up = u;
    if (!c->upstream_start_us)
        c->upstream_start_us = gw_now_us();
    struct gw_proxy_request_ctx ctx = {
        .client_addr = c->client_addr,
        .base_path = cfg->backend_base_path ? cfg->backend_base_path : "",
        .backend_hostport = w->srv->cfg->backend_authority,
        .preserve_host = cfg->preserve_host,
        .upstream_keepalive = cfg->upstream_keepalive > 0,
        .forwarded_proto = "http",
    };
    gw_buf_clear(&u->out);
    buf_prepare(w, &u->out);
    if (gw_proxy_write_request_head(&u->out, &c->req->head, &ctx, &c->up_framing) != 0) {
        upstream_failed(c, 502, "the request could not be forwarded");
        return;
    }
    gw_http_parser_set_no_body(&u->resp, c->req->head.method == HTTP_HEAD);
    c->proxied = true;
    maybe_send_continue(c);
    if (u->connected) {
        enter_proxy(c);
    } else {
        set_state(c, CS_CONNECT);
        arm(c, (uint64_t)cfg->upstream_connect_timeout_ms);
    }
    /* No epoll_ctl here: the drive loop writes the head at once and
     * update_interest registers only what is still needed (a pooled
     * connection usually keeps its EPOLLIN interest unchanged). */
}

/* The client expects 100 Continue before sending the body: send it once we
 * are ready to forward (RFC 9110 §10.1.1). */
static void maybe_send_continue(struct gw_conn *c)
{
    const struct gw_http_head *h = &c->req->head;
    if (h->expect_continue && !c->req_done && h->http_minor >= 1 && c->req->body_bytes == 0 &&
        gw_buf_len(&c->in) == 0) {
        buf_prepare(c->w, &c->out);
        if (gw_response_write_continue(&c->out) != 0)
            conn_close(c);
        c->req->head.expect_continue = false; /* once */
    }
}

int gw_conn_upstream_body(void *ctx, const char *data, size_t len)
{
    struct gw_upstream *u = ctx;
    struct gw_conn *c = u->conn;
    if (!c)
        return -1;
    /* c->out may have been emptied and recycled by a flush since the head:
     * take a standard block again, or the body would grow a buffer of its
     * own size per read (a malloc per window while streaming). */
    buf_prepare(c->w, &c->out);
    size_t before = gw_buf_len(&c->out);
    int rc = 0;
    switch (c->cl_framing) {
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
    c->resp_bytes += gw_buf_len(&c->out) - before;
    return rc ? -1 : 0;
}

static void on_response_head(struct gw_conn *c)
{
    struct gw_upstream *u = c->up;
    const struct gw_http_head *rh = &u->resp.head;
    if (rh->status >= 100 && rh->status < 200) {
        /* Interim responses: 101 would need a tunnel the gateway does not
         * offer; 100 is the gateway's own business (it answers Expect itself);
         * others (103 Early Hints) go to HTTP/1.1 clients, never to HTTP/1.0
         * ones (RFC 9110 §15.2). */
        if (rh->status == 101) {
            upstream_failed(c, 502, "the upstream switched protocols");
            return;
        }
        if (rh->status != 100 && c->req->head.http_minor >= 1) {
            struct gw_proxy_response_ctx ictx = {.client_minor = c->req->head.http_minor,
                                                 .keep_alive = true};
            enum gw_framing unused_framing;
            bool unused_close = false;
            buf_prepare(c->w, &c->out);
            size_t before = gw_buf_len(&c->out);
            if (gw_proxy_write_response_head(&c->out, rh, &ictx, &unused_framing, &unused_close) !=
                0) {
                conn_close(c);
                return;
            }
            c->resp_bytes += gw_buf_len(&c->out) - before;
        }
        return; /* the DONE of the interim message resets the parser */
    }
    struct gw_proxy_response_ctx ctx = {
        .client_minor = c->req->head.http_minor,
        .request_is_head = c->req->head.method == HTTP_HEAD,
        .keep_alive = c->keep_alive && !c->draining && !c->must_close,
        .extra = rl_extra(c),
    };
    bool must_close = false;
    buf_prepare(c->w, &c->out);
    size_t before = gw_buf_len(&c->out);
    if (gw_proxy_write_response_head(&c->out, rh, &ctx, &c->cl_framing, &must_close) != 0) {
        conn_close(c);
        return;
    }
    c->resp_bytes += gw_buf_len(&c->out) - before;
    if (must_close)
        c->must_close = true;
    c->status = rh->status;
    c->resp_head_sent = true;
}

/* The upstream response ended: close the client framing and finish. */
static void response_complete(struct gw_conn *c)
{
    if (c->cl_framing == GW_FRAMING_CHUNKED) {
        buf_prepare(c->w, &c->out);
        size_t before = gw_buf_len(&c->out);
        if (gw_proxy_write_last_chunk(&c->out) != 0) {
            conn_close(c);
            return;
        }
        c->resp_bytes += gw_buf_len(&c->out) - before;
    }
    if (!c->req_done)
        pump_request(c); /* the request may be complete but not yet parsed to its end */
    if (!c->req_done)
        c->must_close = true; /* early response: the rest of the body is unread */
    if (!c->closing)
        finish_response(c);
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

/* Feeds buffered upstream bytes into the response parser while the client's
 * output has room. Returns true on progress. */
static bool pump_response(struct gw_conn *c)
{
    bool progress = false;
    if (c->state != CS_PROXY)
        return false; /* the upstream is used only once connected and proxying */
    /* A message without a body completes on one more execute call with no
     * input, so the loop also runs while DONE is pending. */
    while (c->up && !c->closing &&
           (gw_buf_len(&c->up->in) > 0 || gw_http_parser_done_pending(&c->up->resp))) {
        size_t out_len = gw_buf_len(&c->out);
        if (c->resp_head_sent && out_len >= GW_STREAM_WINDOW)
            break;
        struct gw_upstream *u = c->up;
        size_t room = c->resp_head_sent ? GW_STREAM_WINDOW - out_len : gw_buf_len(&u->in);
        size_t feed = GW_MIN(gw_buf_len(&u->in), GW_MAX(room, (size_t)1));
        size_t used = 0;
        enum gw_http_result r = feed_parser(&u->resp, &u->in, feed, &used, &progress);
        switch (r) {
        case GW_HTTP_NEED_MORE:
            if (used == 0)
                return progress;
            break;
        case GW_HTTP_HEAD:
            progress = true;
            on_response_head(c);
            break;
        case GW_HTTP_DONE:
            progress = true;
            if (u->resp.head.status >= 100 && u->resp.head.status < 200) {
                gw_http_parser_reset(&u->resp);
                gw_http_parser_set_no_body(&u->resp, c->req->head.method == HTTP_HEAD);
                break;
            }
            response_complete(c);
            return progress;
        case GW_HTTP_ERROR:
        default:
            gw_warn("upstream sent a malformed response: %s",
                    u->resp.error_detail ? u->resp.error_detail : "?");
            upstream_failed(c, 502, "the upstream server sent an invalid response");
            return progress;
        }
    }
    return progress;
}

/* Sends what b holds to fd until it is empty or the socket is full;
 * *progress when any byte left. Returns 0, or -1 when the peer is gone
 * (errno other than EAGAIN/EINTR). */
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

/* Writes pending request bytes to the upstream. Returns true on progress. */
static bool flush_upstream(struct gw_conn *c)
{
    struct gw_upstream *u = c->state == CS_PROXY ? c->up : NULL;
    bool progress = false;
    if (!u)
        return false;
    if (send_buffered(u->io.fd, &u->out, &progress) != 0) {
        /* The upstream stopped reading (it may have answered early and
         * closed). What it sent before is still readable: read_upstream
         * relays a complete response or fails the exchange. The rest of the
         * request body is dropped. */
        gw_buf_clear(&u->out);
        c->discard_body = true;
        return true;
    }
    if (progress)
        c->up_tx_ms = c->w->loop.now_ms;
    return progress;
}

/* Reads response bytes from the upstream. Returns true on progress. */
static bool read_upstream(struct gw_conn *c)
{
    struct gw_upstream *u = c->state == CS_PROXY ? c->up : NULL;
    if (!u || !u->rd_ready || gw_buf_len(&u->in) >= GW_STREAM_WINDOW)
        return false;
    buf_prepare(c->w, &u->in);
    if (gw_buf_reserve(&u->in, GW_READ_MIN) != 0) {
        conn_close(c);
        return true;
    }
    size_t room = gw_buf_tail_room(&u->in);
    ssize_t n = recv(u->io.fd, u->in.data + u->in.end, room, 0);
    if (n > 0) {
        if ((size_t)n < room)
            u->rd_ready = false;
        gw_buf_commit(&u->in, (size_t)n);
        c->resp_started = true;
        c->up_rx_ms = c->w->loop.now_ms; /* the deadline moves lazily (proxy_timeout) */
        return true;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        if (errno == EAGAIN)
            u->rd_ready = false;
        return false;
    }
    /* EOF or error from the upstream. */
    if (n == 0 && c->resp_started && gw_buf_len(&u->in) == 0) {
        enum gw_http_result r = gw_http_parser_finish(&u->resp);
        if (r == GW_HTTP_DONE) {
            if (!c->resp_head_sent)
                on_response_head(c);
            if (!c->closing)
                response_complete(c);
            return true;
        }
    }
    if (n == 0 && gw_buf_len(&u->in) > 0)
        return false; /* parse what is buffered first; EOF is seen again */
    upstream_failed(c, 502, "the upstream server closed the connection");
    return true;
}

/* ---- request body ---- */

static int request_body(void *ctx, const char *data, size_t len)
{
    struct gw_conn *c = ctx;
    if (c->discard_body || !c->up)
        return 0;
    int rc = c->up_framing == GW_FRAMING_CHUNKED ? gw_proxy_write_chunk(&c->up->out, data, len)
                                                 : gw_buf_append(&c->up->out, data, len);
    return rc ? -1 : 0;
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
                c->start_us = gw_now_us();
                set_state(c, CS_HEAD);
                arm(c, (uint64_t)cfg_of(c)->client_timeout_ms);
            }
            break;
        case CS_PROXY:
            if (c->req_done || !c->up)
                return progress;
            if (gw_buf_len(&c->up->out) + 64 >= GW_STREAM_WINDOW)
                return progress;
            feed = GW_MIN(feed, GW_STREAM_WINDOW - gw_buf_len(&c->up->out) - 64);
            break;
        case CS_RESPOND:
            if (c->req_done || !c->discard_body)
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
            c->req_done = true;
            c->req_done_ms = c->w->loop.now_ms;
            if (c->up && c->up_framing == GW_FRAMING_CHUNKED && !c->discard_body &&
                gw_proxy_write_last_chunk(&c->up->out) != 0)
                conn_close(c);
            return progress;
        case GW_HTTP_ERROR:
        default:
            progress = true;
            if (c->state == CS_HEAD)
                GW_STAT_INC(&c->w->stats, requests_total);
            gw_debug("conn %d: bad request: %s", c->io.fd,
                     c->req->error_detail ? c->req->error_detail : "?");
            if (c->up) {
                struct gw_upstream *u = c->up;
                c->up = NULL;
                gw_upstream_close(u); /* never let a half-sent request be reused */
                release_slot(c);
            }
            if (c->state == CS_WAIT_SLOT) {
                leave_queue(c);
                release_slot(c);
            }
            c->req_done = true; /* nothing more is read: the connection closes */
            respond_error(c, c->req->error_status ? c->req->error_status : 400,
                          c->req->error_detail ? c->req->error_detail : "malformed request", true);
            return progress;
        }
    }
    return progress;
}

/* ---- client socket ---- */

static bool flush_client(struct gw_conn *c)
{
    bool progress = false;
    if (send_buffered(c->io.fd, &c->out, &progress) != 0) {
        conn_close(c); /* the client went away */
        return true;
    }
    if (progress)
        c->client_tx_ms = c->w->loop.now_ms;
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
        if (!c->req_done && c->discard_body)
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
        /* Reset by the client: nothing more can be delivered. */
        if (c->state == CS_WAIT_SLOT)
            leave_queue(c); /* conn_close returns the slot if one was granted */
        conn_close(c);
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
    if (!c->req_done || gw_buf_len(&c->out) >= GW_STREAM_WINDOW)
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
    struct gw_upstream *u = c->up;
    if (u && !u->closing) {
        uint32_t uev = 0;
        if (!u->connected || gw_buf_len(&u->out) > 0)
            uev |= EPOLLOUT;
        if (u->connected && gw_buf_len(&u->in) < GW_STREAM_WINDOW && !c->resp_done &&
            gw_buf_len(&c->out) < GW_STREAM_WINDOW)
            uev |= EPOLLIN;
        gw_upstream_watch(u, uev);
    }
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
        if (!c->req_done && !buffered && !gw_http_parser_done_pending(c->req))
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
    static const drive_step steps[] = {flush_client,   read_client,     pump_request,
                                       flush_upstream, pump_response,   read_upstream,
                                       pump_response,  respond_progress};
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

void gw_conn_on_upstream(struct gw_conn *c, uint32_t events)
{
    if (c->closing)
        return;
    struct gw_upstream *u = c->up;
    if (u && (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
        u->rd_ready = true; /* an error is found by reading */
    if (c->state == CS_CONNECT && u && !u->connected) {
        int rc = gw_net_connect_result(u->io.fd);
        gw_health_note_backend(c->w->srv->health, rc == 0);
        if (rc != 0) {
            gw_warn("upstream connect to %s failed: %s", c->w->srv->cfg->backend_authority,
                    strerror(-rc));
            upstream_failed(c, 502, "the upstream server could not be reached");
            update_interest(c);
            return;
        }
        u->connected = true;
        enter_proxy(c);
    }
    /* Errors and hang-ups are found by the reads and writes of the drive:
     * bytes the upstream sent before a reset are still delivered. */
    conn_drive(c);
}

static void conn_io_cb(struct gw_loop *loop, struct gw_io *io, uint32_t events)
{
    struct gw_conn *c = gw_container_of(io, struct gw_conn, io);
    if (c->closing)
        return;
    if ((events & EPOLLERR) || ((events & EPOLLHUP) && !(events & EPOLLIN))) {
        if (c->state == CS_WAIT_SLOT)
            leave_queue(c);
        conn_close(c);
        return;
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP))
        c->rd_ready = true;
    conn_drive(c);
}

/* The PROXY deadline moves with progress instead of re-arming the timer on
 * every read and write: while the request body flows, CLIENT_TIMEOUT_MS
 * without progress on it; afterwards, UPSTREAM_TIMEOUT_MS without response
 * bytes from the upstream or written to the client (a slow reader of a
 * large response is not an upstream timeout). */
static uint64_t proxy_due(const struct gw_conn *c)
{
    const struct gw_config *cfg = cfg_of(c);
    if (!c->req_done)
        return GW_MAX(GW_MAX(c->client_rx_ms, c->up_tx_ms), c->proxy_start_ms) +
               (uint64_t)cfg->client_timeout_ms;
    uint64_t last = GW_MAX(GW_MAX(c->up_rx_ms, c->client_tx_ms), c->req_done_ms);
    return GW_MAX(last, c->proxy_start_ms) + (uint64_t)cfg->upstream_timeout_ms;
}

static void enter_proxy(struct gw_conn *c)
{
    const struct gw_config *cfg = cfg_of(c);
    set_state(c, CS_PROXY);
    c->proxy_start_ms = c->w->loop.now_ms;
    arm(c, (uint64_t)GW_MIN(cfg->client_timeout_ms, cfg->upstream_timeout_ms));
}

static void conn_timer_cb(struct gw_loop *loop, struct gw_timer *t)
{
    struct gw_conn *c = gw_container_of(t, struct gw_conn, timer);
    if (c->closing)
        return;
    switch (c->state) {
    case CS_IDLE:
    case CS_LINGER:
        conn_close(c);
        return;
    case CS_HEAD:
        GW_STAT_INC(&c->w->stats, requests_total);
        c->req_done = true; /* the rest is never read */
        respond_error(c, 408, "the request was not received in time", true);
        break;
    case CS_WAIT_SLOT:
        leave_queue(c);
        if (c->slot_held) {
            /* Granted just now: go ahead with the slot. */
            gw_histogram_observe(&c->w->stats.queue_wait, gw_now_us() - c->queue_start_us);
            start_upstream(c);
            break;
        }
        gw_histogram_observe(&c->w->stats.queue_wait, gw_now_us() - c->queue_start_us);
        respond_no_capacity(c, "timed out waiting for an in-flight slot", false);
        break;
    case CS_CONNECT:
        upstream_failed(c, 502, "timed out connecting to the upstream server");
        break;
    case CS_PROXY: {
        uint64_t due = proxy_due(c);
        if (due > loop->now_ms) {
            arm(c, due - loop->now_ms); /* there was progress since it was armed */
            return;
        }
        if (c->resp_head_sent) {
            conn_close(c); /* stalled mid-response: never let it look complete */
            return;
        }
        struct gw_upstream *u = c->up;
        bool upstream_stalled = u && gw_buf_len(&u->out) > 0;
        c->up = NULL;
        if (u)
            gw_upstream_close(u);
        c->retried = true;
        if (!c->req_done && !upstream_stalled) {
            /* The client stopped sending its body. */
            c->req_done = true; /* nothing more is read: the connection closes */
            c->must_close = true;
            upstream_failed(c, 408, "the request body was not received in time");
        } else {
            upstream_failed(c, 504, "the upstream server did not answer in time");
        }
        break;
    }
    case CS_RESPOND:
        conn_close(c); /* the client stopped reading or sending */
        return;
    default:
        return;
    }
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
    gw_histogram_observe(&w->stats.queue_wait, gw_now_us() - c->queue_start_us);
    start_upstream(c);
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
    gw_net_format_addr(peer, c->client_addr, sizeof(c->client_addr), c->client_bin);
    gw_net_nodelay(fd);
    c->draining = w->draining;
    c->rd_ready = true; /* the request may already be waiting */
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    atomic_fetch_add_explicit(&w->stats.connections_active, 1, memory_order_relaxed);
    set_state(c, CS_IDLE);
    arm(c, (uint64_t)w->srv->cfg->client_timeout_ms);
    if (c->closing)
        return -ENOMEM;
    conn_drive(c); /* registers interest; bytes may already be waiting */
    return 0;
}

static void conn_close(struct gw_conn *c)
{
    if (c->closing)
        return;
    if (c->awaiting_outcome) {
        /* The client went away (or a forced shutdown cut it) before its
         * response was complete: nginx's 499. */
        c->awaiting_outcome = false;
        GW_STAT_INC(&c->w->stats, requests_closed);
    }
    c->closing = true;
    c->state = CS_CLOSED;
    gw_loop_unwatch(&c->w->loop, &c->io);
    gw_timer_cancel(&c->w->loop, &c->timer);
    if (c->up) {
        gw_upstream_close(c->up);
        c->up = NULL;
    }
    leave_queue(c);
    release_slot(c);
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
            gw_histogram_observe(&c->w->stats.queue_wait, gw_now_us() - c->queue_start_us);
        }
        if (c->up) {
            gw_upstream_close(c->up);
            c->up = NULL;
        }
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
    /* A closed connection may still be listed for a rate-limit decision or
     * a redrive; unlink those before anything is freed. */
    struct gw_conn **pp = &w->redrive;
    while (*pp) {
        if ((*pp)->closing) {
            (*pp)->redrive_queued = false;
            *pp = (*pp)->redrive_next;
        } else {
            pp = &(*pp)->redrive_next;
        }
    }
    struct gw_conn *tail = NULL;
    pp = &w->limit_head;
    while (*pp) {
        if ((*pp)->closing) {
            *pp = (*pp)->limit_next;
        } else {
            tail = *pp;
            pp = &(*pp)->limit_next;
        }
    }
    w->limit_tail = tail;
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
