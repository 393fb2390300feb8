/*
 * Client connection state machine (memcached drive_machine shape). One
 * request at a time per connection; pipelined bytes wait in the input
 * buffer, so responses leave in request order. This file owns the socket,
 * the states and the drive; exchange.c takes a request from its head to
 * its result, and the upstream client (upstream.c) owns the upstream half.
 *
 *             first byte         head parsed                   admitted after a delay
 *   +--> IDLE -----------> HEAD ----------------> LIMIT ----------------> DELAY (timer, no
 *   |                       |                       |   (batched check)     |  slot; then as
 *   |                       |                       |                       |  LIMIT's allowed)
 *   |                       |  admin answer,        |  |  allowed, body's first
 *   |                       |  400/408/414/431      |  |  window not in yet
 *   |                       v                       |  +----------> BODY_WAIT
 *   |                    RESPOND <---- 429/503 -----+  |  allowed      |  window in
 *   |                     ^ ^ ^                        v              v
 *   |                     | | +-- 503 timeout ---- WAIT_SLOT <-- no free slot
 *   |                     | |     408 too slow         | slot granted (or a free one)
 *   |                     | |                          v
 *   |                     | +-- 502 connect failed -- CONNECT  (new upstream socket)
 *   |                     |                            | connected (or pooled: straight on)
 *   |                     |                            v
 *   |                     +-- response complete, --- PROXY --- 101 to an upgrade ---> TUNNEL
 *   |   request done,     |   408/502/504               (bytes both ways until both
 *   |                     |                              sides ended, or idle) --> CLOSED
 *   +-- response flushed -+-- must close --> LINGER --> CLOSED    (any state --> CLOSED)
 *
 * On the admin listener, a request with a body (the rules endpoints) goes
 * from HEAD to ADMIN, where the body is collected (bounded), and from
 * there to RESPOND with the answer; nothing there is rate limited or takes
 * a slot.
 *
 * Transitions, one line per state; conn_next[] below is this list and
 * test_conn checks that the two agree:
 *   IDLE      -> HEAD CLOSED
 *   HEAD      -> LIMIT RESPOND ADMIN CLOSED
 *   LIMIT     -> DELAY BODY_WAIT WAIT_SLOT CONNECT PROXY RESPOND CLOSED
 *   DELAY     -> BODY_WAIT WAIT_SLOT CONNECT PROXY RESPOND CLOSED
 *   BODY_WAIT -> WAIT_SLOT CONNECT PROXY RESPOND CLOSED
 *   WAIT_SLOT -> CONNECT PROXY RESPOND CLOSED
 *   CONNECT   -> PROXY RESPOND CLOSED
 *   PROXY     -> RESPOND TUNNEL CLOSED
 *   RESPOND   -> IDLE LINGER CLOSED
 *   LINGER    -> CLOSED
 *   ADMIN     -> RESPOND CLOSED
 *   TUNNEL    -> CLOSED
 *   CLOSED    ->
 *
 * A stale pooled socket is retried once inside the upstream client, so
 * PROXY stays PROXY. The request and the response keep separate
 * half-states (struct exchange: req NONE/HEAD/BODY/DONE, resp
 * NONE/HEAD_SENT/DONE) so an early upstream response or a client that keeps
 * sending stay sane. Every exchange ends in gw_exchange_finish, exactly
 * once: one result counter, the histograms, the upstream and the in-flight
 * slot given back, the access log line. A tunnel (conn_tunnel.c, SPEC.md
 * §13) finishes its exchange at the 101, so the slot is free while it
 * relays; its own access log line is written when it closes. Closing only
 * marks the connection; the reaper frees it at the end of the loop
 * iteration and closes the descriptor.
 */
#include "conn_int.h"

#include "gw/log.h"
#include "gw/net.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* Rounds of one drive before other connections get their turn. */
#define GW_DRIVE_ROUNDS 64

static const char *const state_names[CS_COUNT] = {
    "IDLE",  "HEAD",    "LIMIT",  "DELAY", "BODY_WAIT", "WAIT_SLOT", "CONNECT",
    "PROXY", "RESPOND", "LINGER", "ADMIN", "TUNNEL",    "CLOSED"};

#define TO(s) (1u << (s))
/* Legal transitions: conn_next[from] has bit `to` set. */
static const unsigned conn_next[CS_COUNT] = {
    [CS_IDLE] = TO(CS_HEAD) | TO(CS_CLOSED),
    [CS_HEAD] = TO(CS_LIMIT) | TO(CS_RESPOND) | TO(CS_ADMIN) | TO(CS_CLOSED),
    [CS_LIMIT] = TO(CS_DELAY) | TO(CS_BODY_WAIT) | TO(CS_WAIT_SLOT) | TO(CS_CONNECT) |
                 TO(CS_PROXY) | TO(CS_RESPOND) | TO(CS_CLOSED),
    [CS_DELAY] = TO(CS_BODY_WAIT) | TO(CS_WAIT_SLOT) | TO(CS_CONNECT) | TO(CS_PROXY) |
                 TO(CS_RESPOND) | TO(CS_CLOSED),
    [CS_BODY_WAIT] =
        TO(CS_WAIT_SLOT) | TO(CS_CONNECT) | TO(CS_PROXY) | TO(CS_RESPOND) | TO(CS_CLOSED),
    [CS_WAIT_SLOT] = TO(CS_CONNECT) | TO(CS_PROXY) | TO(CS_RESPOND) | TO(CS_CLOSED),
    [CS_CONNECT] = TO(CS_PROXY) | TO(CS_RESPOND) | TO(CS_CLOSED),
    [CS_PROXY] = TO(CS_RESPOND) | TO(CS_TUNNEL) | TO(CS_CLOSED),
    [CS_RESPOND] = TO(CS_IDLE) | TO(CS_LINGER) | TO(CS_CLOSED),
    [CS_LINGER] = TO(CS_CLOSED),
    [CS_ADMIN] = TO(CS_RESPOND) | TO(CS_CLOSED),
    [CS_TUNNEL] = TO(CS_CLOSED),
    [CS_CLOSED] = 0,
};
#undef TO

/* The one way to change state: asserts the transition is in conn_next[].
 * A state entered again is a no-op. */
void gw_conn_set_state(struct gw_conn *c, enum conn_state s)
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

void gw_conn_arm(struct gw_conn *c, uint64_t after_ms)
{
    if (gw_timer_arm(&c->w->loop, &c->timer, c->w->loop.now_ms + after_ms) != 0)
        gw_conn_close(c); /* out of memory for the heap: cannot keep a deadline */
}

/* ---- per-worker pools: no malloc per keep-alive request ---- */

static void free_parser(struct gw_conn *c)
{
    if (c->req) {
        gw_http_parser_pool_put(&c->w->parsers, c->req);
        c->req = NULL;
    }
}

static bool get_parser(struct gw_conn *c)
{
    c->req = gw_http_parser_pool_get(&c->w->parsers, gw_exchange_request_body, c);
    return c->req != NULL;
}

/* After a complete exchange on a kept connection: back to IDLE; an idle
 * connection holds no buffers and no parser. */
static void next_request(struct gw_conn *c)
{
    gw_exchange_reset(&c->ex);
    if (gw_buf_len(&c->in) == 0) {
        free_parser(c);
        gw_buf_pool_put(&c->w->blocks, &c->in);
    } else if (c->req) {
        gw_http_parser_reset(c->req);
    }
    if (gw_buf_len(&c->out) == 0)
        gw_buf_pool_put(&c->w->blocks, &c->out);
    gw_conn_set_state(c, CS_IDLE);
    gw_conn_arm(c, (uint64_t)cfg_of(c)->client_timeout_ms);
}

static void start_linger(struct gw_conn *c)
{
    if (c->client_eof) {
        gw_conn_close(c); /* the client sent its FIN: nothing to drain */
        return;
    }
    gw_conn_set_state(c, CS_LINGER);
    shutdown(c->io.fd, SHUT_WR);
    free_parser(c);
    gw_conn_arm(c, GW_LINGER_MS);
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
            gw_conn_drive(c); /* may queue itself again */
    }
    if (w->redrive)
        gw_loop_wake(&w->loop); /* still busy: poll without sleeping */
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

/* Feeds buffered client bytes to the request parser: the head in
 * IDLE/HEAD, the body while proxying (bounded by the upstream's output room)
 * or while discarding. Returns true on progress. */
bool gw_conn_pump_request(struct gw_conn *c)
{
    bool progress = false;
    while (!c->closing &&
           (gw_buf_len(&c->in) > 0 || (c->req && gw_http_parser_done_pending(c->req)))) {
        size_t feed = gw_buf_len(&c->in);
        switch (c->state) {
        case CS_IDLE:
        case CS_HEAD:
            if (!c->req && !get_parser(c)) {
                gw_conn_close(c);
                return true;
            }
            if (c->state == CS_IDLE) {
                c->ex.start_us = gw_now_us();
                c->ex.req = REQ_HEAD;
                gw_conn_set_state(c, CS_HEAD);
                gw_conn_arm(c, (uint64_t)cfg_of(c)->client_timeout_ms);
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
        case CS_ADMIN:
            if (c->ex.req == REQ_DONE)
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
            gw_exchange_on_head(c);
            /* Go on: a body-less request completes right away, before its
             * response can arrive. */
            break;
        case GW_HTTP_DONE:
            progress = true;
            gw_exchange_on_request_done(c);
            return progress;
        case GW_HTTP_ERROR:
        default:
            gw_exchange_on_request_error(c);
            return true;
        }
    }
    return progress;
}

/* ---- client socket ---- */

bool gw_conn_flush_client(struct gw_conn *c)
{
    bool progress = false;
    if (gw_net_send_buf(c->io.fd, &c->out, &progress) != 0) {
        gw_conn_close(c); /* the client went away */
        return true;
    }
    if (progress && gw_buf_len(&c->out) == 0)
        gw_buf_pool_put(&c->w->blocks, &c->out);
    if (progress && c->state == CS_RESPOND)
        gw_conn_arm(c, (uint64_t)cfg_of(c)->client_timeout_ms);
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
            gw_conn_close(c);
        return n > 0;
    }
    gw_buf_pool_get(&c->w->blocks, &c->in);
    /* Ask for a little room, read as much as the block holds: asking for a
     * whole chunk would grow the block whenever a few bytes are pending. */
    if (gw_buf_reserve(&c->in, GW_READ_MIN) != 0) {
        gw_conn_close(c);
        return true;
    }
    size_t room = gw_buf_tail_room(&c->in);
    ssize_t n = recv(c->io.fd, c->in.data + c->in.end, room, 0);
    if (n > 0) {
        gw_buf_commit(&c->in, (size_t)n);
        c->client_rx_ms = c->w->loop.now_ms;
        if (c->ex.req == REQ_BODY)
            c->ex.body_rx += (uint64_t)n;
        if ((size_t)n < room)
            c->rd_ready = false; /* drained; level-triggered epoll says when more comes */
        return true;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        if (errno == EAGAIN) {
            c->rd_ready = false;
            if (gw_buf_len(&c->in) == 0)
                gw_buf_pool_put(&c->w->blocks, &c->in); /* an idle connection holds no block */
        }
        return false;
    }
    if (n < 0) {
        gw_conn_close(c); /* reset by the client: nothing more can be delivered */
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
        gw_conn_close(c);
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
            gw_conn_close(c); /* the last response is out; nothing else was asked */
        return;
    case CS_HEAD:
        gw_conn_close(c); /* everything buffered was parsed: the head stays incomplete */
        return;
    case CS_PROXY:
    case CS_RESPOND:
    case CS_ADMIN:
        /* The body can no longer complete once the buffer is drained. */
        if (c->ex.req != REQ_DONE && !buffered && !gw_http_parser_done_pending(c->req))
            gw_conn_close(c);
        return;
    case CS_BODY_WAIT:
        /* Everything it sent is buffered and the window is still short:
         * the body cannot complete. */
    case CS_DELAY:
        /* Held by shaping: a client that left is forgotten (SPEC.md §5.1). */
    case CS_WAIT_SLOT:
        /* Queued for an in-flight slot: a client that left is not worth the
         * protected backend's capacity (SPEC.md §6, nginx's 499, HAProxy's
         * abortonclose). Its request is never forwarded; result closed. */
        gw_conn_close(c);
        return;
    default:
        /* LIMIT, CONNECT: the request is on its way; a half-closed client is
         * answered (RFC 9112 §9.6). A client that resets is closed at once
         * (conn_io_cb), its request never forwarded. */
        return;
    }
}

void gw_conn_drive(struct gw_conn *c)
{
    /* One round runs every step once; each step says whether it moved
     * anything, and the steps after a close are skipped. */
    typedef bool (*drive_step)(struct gw_conn *);
    static const drive_step steps[] = {gw_conn_flush_client,       read_client,
                                       gw_conn_pump_request,       gw_exchange_body_wait_step,
                                       gw_exchange_drive_upstream, respond_progress};
    bool progress = false;
    for (int round = 0; round < GW_DRIVE_ROUNDS && !c->closing && c->state != CS_TUNNEL; round++) {
        progress = false;
        for (size_t i = 0; i < GW_ARRAY_LEN(steps) && !c->closing && c->state != CS_TUNNEL; i++)
            progress |= steps[i](c);
        if (!progress)
            break;
    }
    if (c->state == CS_TUNNEL) {
        gw_conn_tunnel_drive(c); /* no HTTP any more: the relay runs it */
        return;
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
    if (c->state == CS_TUNNEL) {
        gw_conn_tunnel_event(c, events);
        return;
    }
    if ((events & EPOLLERR) || ((events & EPOLLHUP) && !(events & EPOLLIN))) {
        gw_conn_close(c);
        return;
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP))
        c->rd_ready = true;
    gw_conn_drive(c);
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
        gw_conn_close(c);
        return;
    case CS_HEAD:
        gw_exchange_count(c);
        c->ex.req = REQ_DONE; /* the rest is never read */
        gw_exchange_respond_error(c, 408, "the request was not received in time", true);
        break;
    case CS_BODY_WAIT:
        gw_exchange_body_wait_timeout(c);
        break;
    case CS_DELAY:
        gw_exchange_delay_done(c);
        break;
    case CS_WAIT_SLOT:
        gw_exchange_queue_timeout(c);
        break;
    case CS_PROXY:
        gw_exchange_proxy_timeout(c);
        break;
    case CS_ADMIN:
        gw_exchange_admin_body_timeout(c);
        break;
    case CS_TUNNEL:
        gw_conn_tunnel_timeout(c);
        return;
    default:
        return;
    }
    if (!c->closing)
        gw_conn_drive(c);
}

/* ---- open / close / reap ---- */

int gw_conn_open(struct gw_worker *w, int fd, const struct sockaddr_storage *peer, bool admin)
{
    struct gw_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        uint8_t addr[16];
        gw_net_addr_bin(peer, addr);
        close(fd);
        gw_server_release_connection(w->srv, admin ? NULL : addr);
        return -ENOMEM;
    }
    c->w = w;
    c->admin = admin;
    gw_io_init(&c->io, fd, conn_io_cb);
    gw_timer_init(&c->timer, conn_timer_cb);
    c->limit.done = gw_exchange_limit_done;
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
    gw_conn_arm(c, (uint64_t)w->srv->cfg->client_timeout_ms);
    if (c->closing)
        return -ENOMEM;
    gw_conn_drive(c); /* registers interest; bytes may already be waiting */
    return 0;
}

/* The single close path: ends the exchange (a request without its response
 * counts as closed), marks the connection and lists it for the reaper. */
void gw_conn_close(struct gw_conn *c)
{
    if (c->closing)
        return;
    if (c->tunnel)
        gw_conn_tunnel_end(c);
    gw_exchange_finish(c, RESULT_CLOSED);
    gw_ratelimit_batch_cancel(c->w->limits, &c->limit);
    c->closing = true;
    gw_conn_set_state(c, CS_CLOSED);
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
        gw_exchange_shutdown(c);
        return;
    }
    if (force || c->state == CS_IDLE) {
        gw_conn_close(c);
        return;
    }
    c->must_close = true;
    gw_conn_drive(c);
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
        gw_buf_pool_put(&w->blocks, &c->in);
        gw_buf_pool_put(&w->blocks, &c->out);
        free_parser(c);
        free(c->tunnel);
        atomic_fetch_sub_explicit(&w->stats.connections_active, 1, memory_order_relaxed);
        gw_server_release_connection(w->srv, c->admin ? NULL : c->client_bin);
        gw_exchange_admin_release(c);
        free(c);
    }
}
