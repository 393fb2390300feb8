/*
 * One request's way through the gateway (the exchange half of the client
 * connection module, see the state diagram atop conn.c): the head handed
 * to the admin endpoints or to the rate-limit batch, the in-flight gate,
 * the upstream client and its callbacks, the responses the gateway writes
 * itself, and finish_exchange, where every exchange ends exactly once.
 * Worker thread only.
 */
#include "conn_int.h"

#include "admin.h"
#include "gw/log.h"
#include "gw/response.h"

#include <string.h>
#include <sys/socket.h>

/* CLIENT_BODY_MIN_RATE is averaged over 10 s (SPEC.md §3): 10 samples of
 * the bytes received, one a second. */
#define BODY_RATE_PERIOD_MS 10000
#define BODY_RATE_SAMPLE_MS 1000
#define BODY_RATE_SAMPLES   (BODY_RATE_PERIOD_MS / BODY_RATE_SAMPLE_MS)

static void start_upstream(struct gw_conn *c);

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

static void release_gate_slot(void *gate)
{
    gw_gate_release(gate);
}

void gw_exchange_count(struct gw_conn *c)
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
        .status = ex->status ? ex->status : 499, /* 0: the client left before any answer */
        .bytes_sent = ex->resp_bytes,
        .duration_ms = (double)(now - ex->start_us) / 1000.0,
        .upstream_ms = ex->upstream_start_us ? (double)(now - ex->upstream_start_us) / 1000.0 : -1,
        .limited = ex->limited,
        .policies = ex->rl_policies,
        .admin = c->admin,
    };
    gw_log_access(&e);
}

/* Ends the current exchange: the one place where its result is counted, the
 * latency histograms observed and the access log written (each at most once
 * per request), and where the upstream client, the gate entry and the
 * in-flight slot are given back (every time: idempotent). */
void gw_exchange_finish(struct gw_conn *c, enum exchange_result result)
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
    if (result == RESULT_CLOSED && c->up && c->slot_held) {
        /* The client is gone mid-exchange: the upstream socket is shut now,
         * and the slot is held until the backend is really done with the
         * request (SPEC.md §6), so the cap holds at the backend too. */
        struct gw_upstream *u = c->up;
        c->up = NULL;
        c->slot_held = false;
        gw_upstream_abort(u, release_gate_slot, c->w->srv->gate);
    }
    drop_upstream(c);
    leave_queue(c);
    release_slot(c);
    if (c->state != CS_TUNNEL)
        gw_conn_tunnel_unreserve(c); /* the answer was no 101: no tunnel */
    /* Every request gets its line: answered, cut short by the upstream, or
     * abandoned by its client (status 499 when nothing was sent, as nginx
     * logs it; else the status relayed and the bytes sent so far). */
    if (first && (ex->resp == RESP_DONE || result == RESULT_FAILED_UPSTREAM ||
                  (result == RESULT_CLOSED && ex->counted)))
        log_access(c);
}

/* The response is fully queued: finish the exchange. What happens to the
 * connection next is decided once the output is flushed and the request
 * fully read (respond_progress). */
static void complete_response(struct gw_conn *c, enum exchange_result result)
{
    c->ex.resp = RESP_DONE;
    gw_exchange_finish(c, result);
    if (c->closing)
        return;
    gw_conn_set_state(c, CS_RESPOND);
    gw_conn_arm(c, (uint64_t)cfg_of(c)->client_timeout_ms);
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
        gw_exchange_finish(c, result);
        gw_conn_close(c);
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
    gw_buf_pool_get(&c->w->blocks, &c->out);
    size_t before = gw_buf_len(&c->out);
    uint8_t minor = c->req ? c->req->head.http_minor : 1;
    bool head_only = c->req && c->req->head.method == HTTP_HEAD;
    if (gw_response_write_problem(&c->out, pb, rl_extra(c), keep, minor, head_only) != 0) {
        gw_conn_close(c);
        return;
    }
    ex->resp_bytes += gw_buf_len(&c->out) - before;
    ex->status = pb->status;
    complete_response(c, result);
}

void gw_exchange_respond_error(struct gw_conn *c, int status, const char *detail, bool close_after)
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

/* ---- request head ---- */

static void render_rl_headers(struct gw_conn *c)
{
    struct exchange *ex = &c->ex;
    ex->rl_headers_len = 0;
    if (!ex->rl.has_info || !cfg_of(c)->rate_limit_headers)
        return;
    struct gw_buf *b = &c->w->scratch; /* kept across requests: no malloc */
    gw_buf_clear(b);
    if (gw_ratelimit_write_headers(&ex->rl, b) == 0 && gw_buf_len(b) <= sizeof(ex->rl_headers)) {
        memcpy(ex->rl_headers, gw_buf_head(b), gw_buf_len(b));
        ex->rl_headers_len = gw_buf_len(b);
    }
}

static void handle_admin(struct gw_conn *c, enum gw_admin_endpoint ep)
{
    const struct gw_http_head *h = &c->req->head;
    if (h->method != HTTP_GET && h->method != HTTP_HEAD) {
        gw_exchange_respond_error(c, 405, "only GET and HEAD are allowed on this endpoint", false);
        return;
    }
    bool keep = c->ex.keep_alive && !c->draining;
    gw_buf_pool_get(&c->w->blocks, &c->out);
    size_t before = gw_buf_len(&c->out);
    int status = 0;
    if (gw_admin_respond(c->w, ep, h->target, &c->out, keep, h->http_minor, h->method == HTTP_HEAD,
                         &status) != 0) {
        gw_conn_close(c);
        return;
    }
    if (!keep)
        c->must_close = true;
    c->ex.discard_body = true;
    c->ex.resp_bytes += gw_buf_len(&c->out) - before;
    c->ex.status = status;
    complete_response(c, RESULT_NONE);
}

void gw_exchange_answered(struct gw_conn *c, int status, size_t bytes, bool keep)
{
    if (c->req && c->ex.req != REQ_DONE)
        c->ex.discard_body = true; /* keep-alive only if the client sends it anyway */
    if (!keep)
        c->must_close = true;
    c->ex.resp_bytes += bytes;
    c->ex.status = status;
    complete_response(c, result_of_status(status));
}

void gw_exchange_on_head(struct gw_conn *c)
{
    struct gw_worker *w = c->w;
    const struct gw_config *cfg = cfg_of(c);
    const struct gw_http_head *h = &c->req->head;
    gw_exchange_count(c);
    c->ex.req = REQ_BODY;
    c->ex.rate_next_ms = w->loop.now_ms + BODY_RATE_SAMPLE_MS;
    c->ex.keep_alive = h->keep_alive && !c->draining && !c->must_close;
    if (c->admin) {
        gw_exchange_admin_head(c); /* the admin listener: never limited, no slot */
        return;
    }

    enum gw_admin_endpoint ep = gw_admin_match(cfg, h->target);
    if (ep != GW_ADMIN_NONE) {
        handle_admin(c, ep);
        return;
    }
    if (h->method == HTTP_CONNECT) {
        gw_exchange_respond_error(c, 400, "CONNECT is not supported by this gateway", true);
        return;
    }
    c->ex.upgrade = gw_conn_tunnel_wanted(c); /* else Upgrade is dropped as hop-by-hop */

    /* Only the client address here: a key header in several field lines is
     * the limiter's to judge (an enforce limit answers 400, a shadow one or
     * a dry run does not), and it derives each limit's identity itself. */
    gw_client_addr(cfg, c->client_bin, c->client_addr, h, c->ex.client_ident);
    /* The check is batched: every request whose head completed in this loop
     * iteration is checked together before the worker sleeps, so a Redis
     * store sees one pipelined round trip for all of them. */
    gw_conn_set_state(c, CS_LIMIT);
    c->ex.rl_req.head = h;
    c->ex.rl_req.client_addr = c->ex.client_ident[0] ? c->ex.client_ident : c->client_addr;
    c->limit.req = &c->ex.rl_req;
    c->limit.key = NULL; /* the identities come from rl_req */
    c->limit.key_len = 0;
    c->limit.out = &c->ex.rl;
    gw_ratelimit_batch_enqueue(w->limits, &c->limit);
}

/* ---- the body's first window and CLIENT_BODY_MIN_RATE ---- */

static void take_slot(struct gw_conn *c);
static void maybe_send_continue(struct gw_conn *c);
static void admitted(struct gw_conn *c);

/* True when the chunked body in b[0..n) ends within it: the chunk sizes are
 * walked up to the last chunk (trailers, if any, follow; they are small).
 * *walked is where the walk resumes: the bytes before it are whole chunks
 * already checked, so a body trickling in many small chunks is walked once,
 * not again on every read.
 * Anything malformed also counts as "in": the request then goes on and the
 * parser refuses it with its exact reason (RFC 9112 §7.1). */
static bool chunked_body_ends_within(const char *b, size_t n, size_t *walked)
{
    size_t pos = *walked;
    for (;; *walked = pos) {
        uint64_t size = 0;
        size_t digits = 0;
        for (; pos < n; pos++) {
            int c = (unsigned char)b[pos], lc = c | 0x20; /* lc: a letter lower-cased */
            int v = c >= '0' && c <= '9' ? c - '0' : lc >= 'a' && lc <= 'f' ? lc - 'a' + 10 : -1;
            if (v < 0)
                break;
            if (++digits > 15)
                return true; /* absurd */
            size = size * 16 + (uint64_t)v;
        }
        if (pos == n)
            return false;
        if (digits == 0)
            return true;
        /* Extensions up to CRLF; a bare CR or LF is malformed. */
        for (; pos < n && b[pos] != '\r'; pos++)
            if (b[pos] == '\n')
                return true;
        if (n - pos < 2)
            return false;
        if (b[pos + 1] != '\n')
            return true;
        pos += 2;
        if (size == 0)
            return true;
        if (size + 2 > n - pos)
            return false;
        pos += (size_t)size;
        if (b[pos] != '\r' || b[pos + 1] != '\n')
            return true;
        pos += 2;
    }
}

/* The request's body is in far enough to take a slot: its first
 * GW_STREAM_WINDOW bytes, or all of it when smaller (SPEC.md §6). */
static bool first_window_ready(struct gw_conn *c)
{
    const struct gw_http_head *h = &c->req->head;
    size_t have = gw_buf_len(&c->in);
    uint64_t window = GW_STREAM_WINDOW, max_body = (uint64_t)cfg_of(c)->max_body_bytes;
    if (max_body > 0 && max_body < window)
        window = max_body + 1; /* a body can be no longer: past it, the parser says 413 */
    if (!h->has_body || have >= window)
        return true;
    if (h->content_length >= 0)
        return have >= (uint64_t)h->content_length;
    return h->chunked ? chunked_body_ends_within(gw_buf_head(&c->in), have, &c->ex.chunk_walked)
                      : true;
}

/* CLIENT_BODY_MIN_RATE as a moving average: body_rx is sampled once a
 * second, and once 10 s of samples exist, less than 10 s worth of the rate
 * since the oldest one is too slow. Time in which the gateway itself did not
 * read (backpressure from a slow upstream) is not held against the client:
 * the samples start over. */
static bool body_rate_ok(struct gw_conn *c)
{
    struct exchange *ex = &c->ex;
    uint64_t rate = (uint64_t)cfg_of(c)->client_body_min_rate, now = c->w->loop.now_ms;
    if (rate == 0 || ex->req != REQ_BODY || now < ex->rate_next_ms)
        return true;
    bool backpressure = gw_buf_len(&c->in) >= GW_STREAM_WINDOW ||
                        (c->state == CS_PROXY && c->up && gw_upstream_send_room(c->up) == 0);
    if (backpressure || now - ex->rate_next_ms >= BODY_RATE_PERIOD_MS) {
        ex->rate_n = ex->rate_pos = 0; /* not the client's doing, or the loop slept: restart */
        ex->rate_next_ms = now + BODY_RATE_SAMPLE_MS;
        return true;
    }
    while (now >= ex->rate_next_ms) {
        ex->rate_ring[ex->rate_pos] = ex->body_rx;
        ex->rate_pos = (ex->rate_pos + 1) % BODY_RATE_SAMPLES;
        if (ex->rate_n < BODY_RATE_SAMPLES)
            ex->rate_n++;
        ex->rate_next_ms += BODY_RATE_SAMPLE_MS;
    }
    if (ex->rate_n < BODY_RATE_SAMPLES)
        return true;
    uint64_t oldest = ex->rate_ring[ex->rate_pos];
    return (ex->body_rx - oldest) * 1000 >= rate * (BODY_RATE_SAMPLES - 1) * BODY_RATE_SAMPLE_MS;
}

/* Milliseconds until the next CLIENT_BODY_MIN_RATE sample, or UINT64_MAX. */
static uint64_t body_rate_due_in(const struct gw_conn *c)
{
    if (cfg_of(c)->client_body_min_rate == 0 || c->ex.req != REQ_BODY)
        return UINT64_MAX;
    uint64_t now = c->w->loop.now_ms;
    return c->ex.rate_next_ms > now ? c->ex.rate_next_ms - now : 1;
}

/* Answers a body that stalled or trickles 408, closing (SPEC.md §3). */
static void body_too_slow(struct gw_conn *c, const char *detail)
{
    drop_upstream(c);
    c->ex.req = REQ_DONE; /* nothing more is read: the connection closes */
    c->must_close = true;
    gw_exchange_respond_error(c, 408, detail, false);
}

static void arm_body_wait(struct gw_conn *c)
{
    uint64_t now = c->w->loop.now_ms;
    uint64_t idle_due = c->client_rx_ms + (uint64_t)cfg_of(c)->client_timeout_ms;
    uint64_t in = idle_due > now ? idle_due - now : 1;
    gw_conn_arm(c, GW_MIN(in, body_rate_due_in(c)));
}

bool gw_exchange_body_wait_step(struct gw_conn *c)
{
    if (c->state != CS_BODY_WAIT || !first_window_ready(c))
        return false;
    take_slot(c);
    return true;
}

void gw_exchange_body_wait_timeout(struct gw_conn *c)
{
    uint64_t now = c->w->loop.now_ms;
    if (now - c->client_rx_ms >= (uint64_t)cfg_of(c)->client_timeout_ms) {
        body_too_slow(c, "the request body was not received in time");
        return;
    }
    if (!body_rate_ok(c)) {
        body_too_slow(c, "the request body arrived more slowly than CLIENT_BODY_MIN_RATE");
        return;
    }
    arm_body_wait(c);
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
    (void)gw_ratelimit_policy_names(&ex->rl, ex->rl_policies, sizeof(ex->rl_policies));
    if (ex->rl.verdict == GW_RL_BAD_KEY) {
        gw_exchange_respond_error(c, 400, "more than one field line of a rate-limit key header",
                                  false);
        return;
    }
    if (ex->rl.verdict == GW_RL_LIMITED) {
        char violated[256];
        (void)gw_ratelimit_violated(&ex->rl, violated, sizeof(violated));
        struct gw_problem pb = {
            .status = 429,
            .type = GW_PROBLEM_QUOTA_EXCEEDED,
            .detail = "rate limit exceeded; retry after the window resets",
            .retry_after_s = (int)GW_MIN(GW_MAX(1, ex->rl.retry_after_s), INT32_MAX),
            .violated = violated,
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

    if (ex->rl.delay_us > 0) {
        /* Shaping (SPEC.md §5.1 delay): held on the worker's timer, with no
         * in-flight slot and no thread waiting; the place in the bucket is
         * already reserved. */
        GW_STAT_INC(&w->stats, requests_delayed);
        gw_histogram_observe(&w->stats.ratelimit_delay, (uint64_t)ex->rl.delay_us);
        gw_conn_set_state(c, CS_DELAY);
        gw_conn_arm(c, (uint64_t)((ex->rl.delay_us + 999) / 1000));
        return;
    }
    admitted(c);
}

/* Admitted by the limiter (at once, or after its delay): on to the gate
 * once the body's first window is in. */
static void admitted(struct gw_conn *c)
{
    if (c->ex.upgrade && !gw_conn_tunnel_reserve(c)) {
        respond_no_capacity(c, "too many tunnels are open", false);
        return;
    }
    if (!first_window_ready(c)) {
        /* The backend is not made to wait for a slow client: no slot until
         * the body's first window is in (HAProxy's http-buffer-request).
         * A client that waits for 100 Continue gets it now, once. */
        maybe_send_continue(c);
        if (c->closing)
            return;
        gw_conn_set_state(c, CS_BODY_WAIT);
        arm_body_wait(c);
        return;
    }
    take_slot(c);
}

void gw_exchange_delay_done(struct gw_conn *c)
{
    admitted(c);
}

/* Asks the in-flight gate for a slot: go on, queue, or 503. */
static void take_slot(struct gw_conn *c)
{
    struct gw_worker *w = c->w;
    const struct gw_config *cfg = cfg_of(c);
    struct exchange *ex = &c->ex;
    switch (gw_gate_acquire(w->srv->gate, &c->waiter, &w->gate_owner)) {
    case GW_GATE_ACQUIRED:
        c->slot_held = true;
        gw_histogram_observe(&w->stats.queue_wait, 0);
        start_upstream(c);
        return;
    case GW_GATE_QUEUED:
        ex->queue_start_us = gw_now_us();
        gw_conn_set_state(c, CS_WAIT_SLOT);
        gw_conn_arm(c, (uint64_t)cfg->queue_timeout_ms);
        return;
    case GW_GATE_FULL:
    default:
        respond_no_capacity(c, "too many requests in flight; queue is full", false);
        return;
    }
}

/* The batch decided: go on, and drive what the decision unblocked. */
void gw_exchange_limit_done(struct gw_rl_waiter *wt)
{
    struct gw_conn *c = gw_container_of(wt, struct gw_conn, limit);
    if (c->closing || c->state != CS_LIMIT)
        return;
    after_limit(c);
    if (!c->closing)
        gw_conn_drive(c);
}

/* ---- the upstream half: callbacks of the upstream client ---- */

/* The client expects 100 Continue before sending the body: send it once we
 * are ready to forward (RFC 9110 §10.1.1). */
static void maybe_send_continue(struct gw_conn *c)
{
    const struct gw_http_head *h = &c->req->head;
    if (h->expect_continue && c->ex.req != REQ_DONE && h->http_minor >= 1 &&
        c->req->body_bytes == 0 && gw_buf_len(&c->in) == 0) {
        gw_buf_pool_get(&c->w->blocks, &c->out);
        if (gw_response_write_continue(&c->out) != 0)
            gw_conn_close(c);
        c->req->head.expect_continue = false; /* once */
    }
}

/* While the request body flows, the PROXY deadline is CLIENT_TIMEOUT_MS
 * without progress on it; it moves with progress instead of being re-armed
 * on every read. Once the request is complete, the upstream client's
 * response deadline takes over. */
static void enter_proxy(struct gw_conn *c)
{
    gw_conn_set_state(c, CS_PROXY);
    c->ex.proxy_start_ms = c->w->loop.now_ms;
    if (c->ex.req == REQ_DONE)
        gw_timer_cancel(&c->w->loop, &c->timer);
    else
        gw_conn_arm(c, GW_MIN((uint64_t)cfg_of(c)->client_timeout_ms, body_rate_due_in(c)));
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
    if (rh->status == 101)
        return gw_conn_tunnel_start(c, rh); /* only ever to a forwarded Upgrade */
    gw_buf_pool_get(&c->w->blocks, &c->out);
    size_t before = gw_buf_len(&c->out);
    if (rh->status < 200) {
        /* Interim responses (103 Early Hints) go to HTTP/1.1 clients, never
         * to HTTP/1.0 ones (RFC 9110 §15.2). A 100 Continue never: the
         * gateway answered the client's Expect itself (it is not
         * forwarded), so the client gets exactly one. */
        if (c->req->head.http_minor < 1 || rh->status == 100)
            return 0;
        struct gw_proxy_response_ctx ictx = {.client_minor = c->req->head.http_minor,
                                             .keep_alive = true};
        enum gw_framing unused_framing;
        bool unused_close = false;
        if (gw_proxy_write_response_head(&c->out, rh, &ictx, &unused_framing, &unused_close) != 0) {
            gw_conn_close(c);
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
        gw_conn_close(c);
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
    gw_buf_pool_get(&c->w->blocks, &c->out);
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
        gw_conn_close(c);
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
        gw_buf_pool_get(&c->w->blocks, &c->out);
        size_t before = gw_buf_len(&c->out);
        /* Trailers go on to a chunked client; another framing has no
         * place for them and they are dropped (RFC 9112 §7.1.2). */
        if (gw_proxy_write_last_chunk_trailers(&c->out, gw_upstream_trailers(c->up)) != 0) {
            gw_conn_close(c);
            return;
        }
        ex->resp_bytes += gw_buf_len(&c->out) - before;
    }
    if (gw_upstream_send_failed(c->up))
        ex->discard_body = true;
    if (ex->req != REQ_DONE)
        gw_conn_pump_request(c); /* the request may be complete but not yet parsed to its end */
    if (ex->req != REQ_DONE)
        c->must_close = true; /* early response: the rest of the body is unread */
    if (!c->closing)
        complete_response(c, RESULT_PROXIED);
}

/* Ends a connection whose response was cut short: hands over what the
 * client already has of it (the head and whole chunks, never the last
 * chunk), then closes, so the client sees a response cut short rather than
 * an empty reply. A client reading until close (an HTTP/1.0 client of a
 * body without length) would take a FIN for the end of a complete
 * response: it gets a reset instead (RFC 9112 §6.3, §9.6). */
static void close_cut_response(struct gw_conn *c)
{
    gw_conn_flush_client(c);
    if (c->closing)
        return;
    if (c->ex.cl_framing == GW_FRAMING_CLOSE) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        (void)setsockopt(c->io.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    gw_conn_close(c);
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
        gw_exchange_finish(c, status == 504 ? RESULT_CLOSED : RESULT_FAILED_UPSTREAM);
        close_cut_response(c);
        return;
    }
    gw_exchange_respond_error(c, status, detail, false); /* an unread body is discarded or closes */
}

static void up_on_event(void *ctx)
{
    struct gw_conn *c = ctx;
    if (!c->closing)
        gw_conn_drive(c);
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
        /* At most one line per second per worker: a backend that is down
         * (or a name without an address) must not flood the log. */
        if (w->loop.now_ms >= w->upstream_warned_ms + 1000) {
            w->upstream_warned_ms = w->loop.now_ms;
            gw_warn("upstream connect to %s failed: %s", cfg->backend_authority, strerror(-err));
        }
        gw_exchange_respond_error(c, 502, "the upstream server could not be reached", false);
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
        .upgrade = c->ex.upgrade,
    };
    if (gw_upstream_send_head(u, &c->req->head, &ctx) != 0 ||
        (c->ex.req == REQ_DONE && gw_upstream_send_end(u) != 0)) {
        drop_upstream(c);
        gw_exchange_respond_error(c, 502, "the request could not be forwarded", false);
        return;
    }
    maybe_send_continue(c);
    if (c->closing)
        return;
    if (gw_upstream_connected(u)) {
        enter_proxy(c);
    } else {
        gw_conn_set_state(c, CS_CONNECT);
        gw_timer_cancel(&w->loop, &c->timer); /* the upstream client times the connect */
    }
    /* No epoll_ctl here: the drive loop writes the head at once and
     * update_interest registers only what is still needed (a pooled
     * connection usually keeps its EPOLLIN interest unchanged). */
}

bool gw_exchange_drive_upstream(struct gw_conn *c)
{
    if (c->state != CS_PROXY || !c->up)
        return false; /* the upstream is used only once connected and proxying */
    return gw_upstream_drive(c->up);
}

/* ---- request body ---- */

int gw_exchange_request_body(void *ctx, const char *data, size_t len)
{
    struct gw_conn *c = ctx;
    if (c->state == CS_ADMIN)
        return gw_exchange_admin_body(c, data, len);
    if (c->ex.discard_body || !c->up)
        return 0;
    return gw_upstream_send_body(c->up, data, len) != 0 ? -1 : 0;
}

/* The request message is complete (RFC 9112 §6). */
void gw_exchange_on_request_done(struct gw_conn *c)
{
    c->ex.req = REQ_DONE;
    if (c->state == CS_ADMIN) {
        gw_exchange_admin_done(c);
        return;
    }
    if (c->up && gw_upstream_send_end_trailers(c->up, gw_http_parser_trailers(c->req)) != 0)
        gw_conn_close(c);
    if (!c->closing && c->state == CS_PROXY)
        gw_timer_cancel(&c->w->loop, &c->timer); /* the response deadline is upstream's */
}

/* A request the parser refused (RFC 9112 §2.2, §6.3): answered and closed. */
void gw_exchange_on_request_error(struct gw_conn *c)
{
    gw_exchange_count(c);
    gw_debug("conn %d: bad request: %s", c->io.fd,
             c->req->error_detail ? c->req->error_detail : "?");
    drop_upstream(c); /* never let a half-sent request be reused */
    leave_queue(c);
    release_slot(c);
    c->ex.req = REQ_DONE; /* nothing more is read: the connection closes */
    gw_exchange_respond_error(c, c->req->error_status ? c->req->error_status : 400,
                              c->req->error_detail ? c->req->error_detail : "malformed request",
                              true);
}

/* PROXY while the request body flows: CLIENT_TIMEOUT_MS without body bytes
 * read from the client or written to the upstream. */
void gw_exchange_proxy_timeout(struct gw_conn *c)
{
    struct exchange *ex = &c->ex;
    if (ex->req == REQ_DONE)
        return; /* the upstream client's response deadline runs */
    uint64_t now = c->w->loop.now_ms;
    uint64_t last = GW_MAX(c->client_rx_ms, ex->proxy_start_ms);
    if (c->up)
        last = GW_MAX(last, gw_upstream_send_ms(c->up));
    uint64_t due = last + (uint64_t)cfg_of(c)->client_timeout_ms;
    if (ex->resp != RESP_HEAD_SENT && !body_rate_ok(c)) {
        body_too_slow(c, "the request body arrived more slowly than CLIENT_BODY_MIN_RATE");
        return;
    }
    if (due > now) {
        /* There was progress since it was armed. */
        gw_conn_arm(c, GW_MIN(due - now, body_rate_due_in(c)));
        return;
    }
    if (ex->resp == RESP_HEAD_SENT) {
        close_cut_response(c); /* stalled mid-response: never let it look complete */
        return;
    }
    bool upstream_stalled = c->up && gw_upstream_send_stalled(c->up);
    drop_upstream(c);
    if (upstream_stalled) {
        gw_exchange_respond_error(c, 504, "the upstream server did not answer in time", false);
        return;
    }
    /* The client stopped sending its body. */
    ex->req = REQ_DONE; /* nothing more is read: the connection closes */
    c->must_close = true;
    gw_exchange_respond_error(c, 408, "the request body was not received in time", false);
}

void gw_exchange_queue_timeout(struct gw_conn *c)
{
    leave_queue(c);
    gw_histogram_observe(&c->w->stats.queue_wait, gw_now_us() - c->ex.queue_start_us);
    if (c->slot_held)
        start_upstream(c); /* granted just now: go ahead with the slot */
    else
        respond_no_capacity(c, "timed out waiting for an in-flight slot", false);
}

void gw_exchange_shutdown(struct gw_conn *c)
{
    /* Still queued, or granted a slot (perhaps one a closing peer just
     * freed) but not yet connected: nothing reached the backend, so it gets
     * a 503 it may retry elsewhere, not a bare close. One non-blocking send;
     * the connection closes either way. */
    if (c->state == CS_WAIT_SLOT) {
        leave_queue(c);
        gw_histogram_observe(&c->w->stats.queue_wait, gw_now_us() - c->ex.queue_start_us);
    }
    drop_upstream(c);
    release_slot(c);
    respond_no_capacity(c, "the gateway is shutting down", true);
    if (!c->closing)
        gw_conn_flush_client(c);
    if (!c->closing)
        gw_conn_close(c);
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
        gw_conn_drive(c);
}
