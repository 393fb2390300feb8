/*
 * Upstream HTTP/1.1 client and per-worker keep-alive pool (see upstream.h).
 * A socket (struct up_sock) lives in the pool while idle and is lent to one
 * client (struct gw_upstream) per exchange; the client keeps its parser and
 * buffers across exchanges on a spare list, so a keep-alive request costs no
 * malloc. Sockets and clients are freed or recycled only at reap, so a
 * callback that puts a client never pulls memory from under its caller.
 */
#include "upstream.h"

#include "gw/log.h"
#include "gw/net.h"
#include "gw/resolve.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

/* Spare clients a pool keeps (bounded memory when idle). */
#define UP_SPARES 256
/* An aborted exchange waits this long at most for its response to end. */
#define UP_ABORT_MS 2000

/* One backend socket. */
struct up_sock {
    struct gw_io io;               /* backend socket */
    struct gw_upstream_pool *pool; /* owning pool */
    struct gw_upstream *client;    /* client using it; NULL while idle */
    struct up_sock *next;          /* idle list / reap list link */
    uint64_t idle_since_ms;        /* when it entered the idle list */
    struct sockaddr_storage peer;  /* the backend address it connects to */
    uint64_t gen;                  /* the address list generation peer was last seen in */
    unsigned idx;                  /* peer's index in that list */
    bool connected;                /* the TCP connect completed */
    bool closing;                  /* unwatched; closed at reap */
};

enum up_phase {
    UP_SPARE = 0,  /* on the spare list */
    UP_CONNECTING, /* waiting for the TCP connect */
    UP_ACTIVE,     /* request and response flowing */
    UP_DONE,       /* response complete, waiting for put */
    UP_FAILED,     /* reported on_error, socket closed, waiting for put */
    UP_ABORTING,   /* owner gone: waiting for the backend to close (gw_upstream_abort) */
    UP_PUT,        /* given back; recycled at reap */
};

struct gw_upstream {
    struct gw_upstream_pool *pool;
    struct up_sock *sock;              /* the socket of this exchange, NULL once closed */
    const struct gw_upstream_cbs *cbs; /* owner's callbacks */
    void *ctx;                         /* owner */
    const struct gw_buf *sink;         /* owner's output towards its client */
    struct gw_upstream *next;          /* spare list / reap list link */
    struct gw_timer timer;             /* connect deadline, then response deadline */
    struct gw_buf out;                 /* request bytes not yet written */
    struct gw_buf in;                  /* response bytes read, not yet parsed */
    struct gw_http_parser resp;        /* response parser */
    const struct gw_http_head *req;    /* request head (borrowed; for the retry) */
    struct gw_proxy_request_ctx pctx;  /* its rewrite context (for the retry) */
    enum gw_framing framing;           /* request body framing towards the backend */
    enum up_phase phase;
    bool reused;                  /* the socket came from the idle list */
    bool retried;                 /* the one retry on a new connection was used */
    unsigned tries;               /* connects started: addresses tried, in order */
    bool retryable;               /* idempotent and body-less: may be sent twice */
    bool rd_ready;                /* epoll said readable and no EAGAIN since */
    bool head_delivered;          /* the final response head went to the owner */
    bool resp_started;            /* at least one response byte was read */
    bool req_ended;               /* send_end was called */
    bool send_failed;             /* the backend stopped reading the request */
    bool req_is_head;             /* the request was HEAD: responses carry no body */
    bool upgrade;                 /* the request asks to upgrade: a 101 opens a tunnel */
    uint64_t rx_ms;               /* last response bytes read (loop clock) */
    uint64_t tx_ms;               /* last request bytes written */
    uint64_t deliver_ms;          /* last response bytes handed to the owner */
    uint64_t end_ms;              /* when the request was complete */
    void (*on_closed)(void *arg); /* aborting: called once the socket is closed */
    void *closed_arg;
};

struct gw_upstream_pool {
    struct gw_loop *loop;
    struct gw_upstream_settings s;
    struct up_sock *idle; /* idle sockets (LIFO) */
    int idle_count;
    struct up_sock *sock_reap; /* sockets closed this iteration */
    struct gw_upstream *spare; /* spare clients */
    int spare_count;
    struct gw_upstream *client_reap; /* clients put this iteration */
    struct gw_upstream *aborting;    /* clients waiting for the backend to close */
    struct gw_resolve_addrs addrs;   /* s.name's list as last read (or s.addr alone) */
    unsigned next;                   /* index in addrs new connects start from */
    bool draining;                   /* pool nothing from now on */
};

static void client_event(struct gw_upstream *u, uint32_t events);
static void abort_end(struct gw_upstream *u, bool reset);

/* ---- sockets ---- */

static void sock_close(struct up_sock *s)
{
    if (s->closing)
        return;
    s->closing = true;
    s->client = NULL;
    gw_loop_unwatch(s->pool->loop, &s->io);
    s->next = s->pool->sock_reap;
    s->pool->sock_reap = s;
}

static void unlink_idle(struct up_sock *s)
{
    struct gw_upstream_pool *pool = s->pool;
    struct up_sock **pp = &pool->idle;
    while (*pp && *pp != s)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = s->next;
        pool->idle_count--;
    }
}

static void sock_cb(struct gw_loop *loop, struct gw_io *io, uint32_t events)
{
    struct up_sock *s = gw_container_of(io, struct up_sock, io);
    if (s->closing)
        return;
    if (s->client) {
        client_event(s->client, events);
        return;
    }
    /* Idle: any readiness means the backend closed it or sent bytes nobody
     * asked for. Either way it cannot be reused. */
    unlink_idle(s);
    sock_close(s);
}

static void note_connect(struct gw_upstream_pool *pool, bool ok)
{
    if (pool->s.note_connect)
        pool->s.note_connect(pool->s.note_arg, ok);
}

/* Brings pool->addrs up to the name's current list (one atomic load when
 * nothing changed) and closes the idle sockets whose address left it, so
 * traffic follows a name to its new addresses without waiting for the
 * idle timeout. */
static void refresh_addrs(struct gw_upstream_pool *pool)
{
    if (pool->s.name == NULL || gw_resolve_gen(pool->s.name) == pool->addrs.gen)
        return;
    gw_resolve_read(pool->s.name, &pool->addrs);
    pool->next = 0; /* a new list: its first address first */
    struct up_sock **pp = &pool->idle;
    while (*pp) {
        struct up_sock *s = *pp;
        if (gw_resolve_addrs_contain(&pool->addrs, &s->peer)) {
            s->gen = pool->addrs.gen;
            pp = &s->next;
            continue;
        }
        *pp = s->next;
        pool->idle_count--;
        sock_close(s);
    }
}

/* A connect to s->idx of the list failed: new connects start from the
 * next address, and the name is looked up again soon. */
static void address_failed(struct gw_upstream_pool *pool, const struct up_sock *s)
{
    if (pool->s.name == NULL)
        return;
    if (s->gen == pool->addrs.gen && pool->next == s->idx && pool->addrs.count > 0)
        pool->next = (s->idx + 1) % pool->addrs.count;
    gw_resolve_kick(pool->s.name);
}

/* True while the exchange that made *tries connects may try another
 * address: each address of the list once. */
static bool may_try(const struct gw_upstream_pool *pool, unsigned tries)
{
    return tries < GW_MAX(pool->addrs.count, 1u);
}

/* A pooled socket (when !fresh), or a new one with its connect started to
 * the list's addresses in order from pool->next; a connect that fails at
 * once moves on to the next address. *tries counts the connects started.
 * Returns NULL with *err = -errno (-EHOSTUNREACH: the name has no address
 * yet). */
static struct up_sock *sock_get(struct gw_upstream_pool *pool, bool fresh, unsigned *tries,
                                int *err)
{
    refresh_addrs(pool);
    struct up_sock *s = fresh ? NULL : pool->idle;
    if (s) {
        pool->idle = s->next;
        pool->idle_count--;
        s->next = NULL;
        return s;
    }
    if (pool->addrs.count == 0) {
        *err = -EHOSTUNREACH;
        note_connect(pool, false);
        gw_resolve_kick(pool->s.name);
        return NULL;
    }
    do {
        s = calloc(1, sizeof(*s));
        if (!s) {
            *err = -ENOMEM;
            return NULL;
        }
        s->idx = pool->next % pool->addrs.count;
        s->gen = pool->addrs.gen;
        s->peer = pool->addrs.addr[s->idx];
        (*tries)++;
        int fd = gw_net_connect(&s->peer, pool->addrs.len[s->idx]);
        if (fd >= 0) {
            if (pool->s.stats)
                GW_STAT_INC(pool->s.stats, upstream_connections_opened);
            gw_io_init(&s->io, fd, sock_cb);
            s->pool = pool;
            return s;
        }
        *err = fd;
        if (fd != -ENOMEM) {
            note_connect(pool, false);
            address_failed(pool, s);
        }
        free(s);
    } while (*err != -ENOMEM && may_try(pool, *tries));
    return NULL;
}

static void sock_put(struct up_sock *s)
{
    struct gw_upstream_pool *pool = s->pool;
    s->client = NULL;
    refresh_addrs(pool);
    bool listed = s->gen == pool->addrs.gen || gw_resolve_addrs_contain(&pool->addrs, &s->peer);
    if (pool->draining || pool->idle_count >= pool->s.keepalive || !listed) {
        sock_close(s);
        return;
    }
    s->gen = pool->addrs.gen;
    s->idle_since_ms = pool->loop->now_ms;
    s->next = pool->idle;
    pool->idle = s;
    pool->idle_count++;
    /* Stay watched: a close by the backend is noticed before reuse. */
    if (gw_loop_watch(pool->loop, &s->io, EPOLLIN) != 0)
        sock_close(s);
}

/* ---- the pool ---- */

static void timer_cb(struct gw_loop *loop, struct gw_timer *t);
static int body_cb(void *ctx, const char *data, size_t len);

int gw_upstream_pool_create(struct gw_upstream_pool **out, struct gw_loop *loop,
                            const struct gw_upstream_settings *s)
{
    struct gw_upstream_pool *pool = calloc(1, sizeof(*pool));
    if (!pool)
        return -ENOMEM;
    pool->loop = loop;
    pool->s = *s;
    if (s->name == NULL) {
        /* A fixed address: a list of one that never changes. */
        pool->addrs.count = 1;
        pool->addrs.gen = 1;
        memcpy(&pool->addrs.addr[0], s->addr,
               GW_MIN((size_t)s->addr_len, sizeof(pool->addrs.addr[0])));
        pool->addrs.len[0] = s->addr_len;
    }
    *out = pool;
    return 0;
}

static void client_free(struct gw_upstream *u)
{
    gw_buf_release(&u->in);
    gw_buf_release(&u->out);
    gw_http_parser_deinit(&u->resp);
    free(u);
}

void gw_upstream_pool_reap(struct gw_upstream_pool *pool)
{
    while (pool->sock_reap) {
        struct up_sock *s = pool->sock_reap;
        pool->sock_reap = s->next;
        if (s->io.fd >= 0)
            close(s->io.fd);
        free(s);
    }
    while (pool->client_reap) {
        struct gw_upstream *u = pool->client_reap;
        pool->client_reap = u->next;
        if (pool->spare_count >= UP_SPARES) {
            client_free(u);
            continue;
        }
        /* Buffers keep their storage while spare: the next exchange reuses
         * them without malloc. */
        gw_buf_clear(&u->in);
        gw_buf_clear(&u->out);
        gw_http_parser_recycle(&u->resp); /* the next exchange may be on another socket */
        u->phase = UP_SPARE;
        u->next = pool->spare;
        pool->spare = u;
        pool->spare_count++;
    }
}

void gw_upstream_pool_drain(struct gw_upstream_pool *pool)
{
    pool->draining = true;
    while (pool->aborting)
        abort_end(pool->aborting, true);
    while (pool->idle) {
        struct up_sock *s = pool->idle;
        pool->idle = s->next;
        pool->idle_count--;
        sock_close(s);
    }
}

void gw_upstream_pool_destroy(struct gw_upstream_pool *pool)
{
    if (!pool)
        return;
    gw_upstream_pool_drain(pool);
    gw_upstream_pool_reap(pool);
    while (pool->spare) {
        struct gw_upstream *u = pool->spare;
        pool->spare = u->next;
        client_free(u);
    }
    free(pool);
}

void gw_upstream_pool_close_expired(struct gw_upstream_pool *pool, uint64_t now_ms)
{
    refresh_addrs(pool);
    uint64_t timeout = (uint64_t)pool->s.idle_timeout_ms;
    /* The pool is LIFO: once one entry has expired, every one after it
     * entered the pool earlier and has expired too. */
    struct up_sock **pp = &pool->idle;
    while (*pp && now_ms - (*pp)->idle_since_ms < timeout)
        pp = &(*pp)->next;
    while (*pp) {
        struct up_sock *s = *pp;
        *pp = s->next;
        pool->idle_count--;
        sock_close(s);
    }
}

void gw_upstream_pool_trim(struct gw_upstream_pool *pool, int keep)
{
    while (pool->spare_count > keep) {
        struct gw_upstream *u = pool->spare;
        pool->spare = u->next;
        pool->spare_count--;
        client_free(u);
    }
}

int gw_upstream_pool_idle(const struct gw_upstream_pool *pool)
{
    return pool->idle_count;
}

/* ---- the client ---- */

static void arm(struct gw_upstream *u, int after_ms)
{
    struct gw_loop *loop = u->pool->loop;
    if (gw_timer_arm(loop, &u->timer, loop->now_ms + (uint64_t)after_ms) != 0)
        gw_warn("upstream: cannot arm a deadline (out of memory)");
}

/* Lends socket s to u and starts waiting for its connect if needed. */
static void attach(struct gw_upstream *u, struct up_sock *s, bool reused)
{
    u->sock = s;
    s->client = u;
    u->reused = reused;
    u->rd_ready = false;
    if (s->connected) {
        u->phase = UP_ACTIVE;
        return;
    }
    u->phase = UP_CONNECTING;
    arm(u, u->pool->s.connect_timeout_ms);
}

static void detach_close(struct gw_upstream *u)
{
    if (u->sock) {
        sock_close(u->sock);
        u->sock = NULL;
    }
}

struct gw_upstream *gw_upstream_get(struct gw_upstream_pool *pool,
                                    const struct gw_upstream_cbs *cbs, void *ctx,
                                    const struct gw_buf *sink, int *err)
{
    struct gw_upstream *u = pool->spare;
    if (u) {
        pool->spare = u->next;
        pool->spare_count--;
    } else {
        u = calloc(1, sizeof(*u));
        if (!u) {
            *err = -ENOMEM;
            return NULL;
        }
        if (gw_http_parser_init(&u->resp, GW_HTTP_RESPONSE,
                                GW_MAX(pool->s.max_head_bytes, (size_t)65536), 0, body_cb,
                                u) != 0) {
            free(u);
            *err = -ENOMEM;
            return NULL;
        }
        u->pool = pool;
        gw_timer_init(&u->timer, timer_cb);
    }
    unsigned tries = 0;
    struct up_sock *s = sock_get(pool, false, &tries, err);
    if (!s) {
        u->next = pool->client_reap; /* recycled at reap like any put client */
        u->phase = UP_PUT;
        pool->client_reap = u;
        return NULL;
    }
    /* Every per-exchange field back to zero; the parser, buffers, timer and
     * pool link survive. */
    u->cbs = cbs;
    u->ctx = ctx;
    u->sink = sink;
    u->next = NULL;
    u->req = NULL;
    u->framing = GW_FRAMING_NONE;
    u->tries = tries;
    u->retried = u->retryable = u->head_delivered = u->resp_started = false;
    u->req_ended = u->send_failed = false;
    u->rx_ms = u->tx_ms = u->deliver_ms = u->end_ms = 0;
    attach(u, s, s->connected);
    return u;
}

static bool method_idempotent(int m)
{
    return m == HTTP_GET || m == HTTP_HEAD || m == HTTP_PUT || m == HTTP_DELETE ||
           m == HTTP_OPTIONS || m == HTTP_TRACE;
}

static int render_head(struct gw_upstream *u)
{
    gw_buf_clear(&u->out);
    gw_http_parser_set_no_body(&u->resp, u->req->method == HTTP_HEAD);
    gw_http_parser_set_upgrade(&u->resp, u->pctx.upgrade);
    return gw_proxy_write_request_head(&u->out, u->req, &u->pctx, &u->framing) != 0 ? -ENOMEM : 0;
}

int gw_upstream_send_head(struct gw_upstream *u, const struct gw_http_head *req,
                          const struct gw_proxy_request_ctx *pctx)
{
    u->req = req;
    u->pctx = *pctx;
    u->retryable = !req->has_body && method_idempotent(req->method);
    u->req_is_head = req->method == HTTP_HEAD;
    u->upgrade = pctx->upgrade;
    return render_head(u);
}

int gw_upstream_send_body(struct gw_upstream *u, const char *data, size_t len)
{
    if (u->send_failed)
        return 0;
    int rc = u->framing == GW_FRAMING_CHUNKED ? gw_proxy_write_chunk(&u->out, data, len)
                                              : gw_buf_append(&u->out, data, len);
    return rc ? -ENOMEM : 0;
}

int gw_upstream_send_end_trailers(struct gw_upstream *u, struct gw_slice trailers)
{
    u->req_ended = true;
    u->end_ms = u->pool->loop->now_ms;
    if (u->phase == UP_ACTIVE)
        arm(u, u->pool->s.response_timeout_ms);
    if (u->framing == GW_FRAMING_CHUNKED && !u->send_failed &&
        gw_proxy_write_last_chunk_trailers(&u->out, trailers) != 0)
        return -ENOMEM;
    return 0;
}

int gw_upstream_send_end(struct gw_upstream *u)
{
    return gw_upstream_send_end_trailers(u, (struct gw_slice){NULL, 0});
}

struct gw_slice gw_upstream_trailers(const struct gw_upstream *u)
{
    return gw_http_parser_trailers(&u->resp);
}

size_t gw_upstream_send_room(const struct gw_upstream *u)
{
    size_t len = gw_buf_len(&u->out) + 64;
    return len >= GW_STREAM_WINDOW ? 0 : GW_STREAM_WINDOW - len;
}

bool gw_upstream_connected(const struct gw_upstream *u)
{
    return u->phase != UP_CONNECTING;
}

uint64_t gw_upstream_send_ms(const struct gw_upstream *u)
{
    return u->tx_ms;
}

bool gw_upstream_send_stalled(const struct gw_upstream *u)
{
    return gw_buf_len(&u->out) > 0;
}

bool gw_upstream_send_failed(const struct gw_upstream *u)
{
    return u->send_failed;
}

/* The connect of u's socket failed (nothing was sent on it): its address
 * is marked failed, and the exchange moves on to the next address of the
 * list when it has not tried them all. Returns true when a new connect
 * started (the exchange waits for it), false when the caller fails it. */
static bool connect_next(struct gw_upstream *u)
{
    struct gw_upstream_pool *pool = u->pool;
    address_failed(pool, u->sock);
    if (pool->s.name == NULL || !may_try(pool, u->tries))
        return false;
    detach_close(u);
    int err = 0;
    struct up_sock *s = sock_get(pool, true, &u->tries, &err);
    if (s == NULL) {
        u->sock = NULL;
        return false;
    }
    gw_debug("upstream: trying the next address of the backend's name");
    attach(u, s, false);
    return true;
}

/* The exchange cannot go on on this socket: retry once on a new connection
 * when nothing can have been processed (a pooled socket the backend closed
 * while idle, RFC 9112 §9.3.1), else report to the owner. */
static void fail(struct gw_upstream *u, int status, const char *detail)
{
    bool can_retry = u->reused && !u->resp_started && !u->retried && u->retryable &&
                     status == 502 && u->req != NULL;
    detach_close(u);
    if (can_retry) {
        u->retried = true;
        gw_debug("upstream: pooled connection closed before answering; retrying");
        int err = 0;
        u->tries = 0;
        struct up_sock *s = sock_get(u->pool, true, &u->tries, &err);
        if (s) {
            gw_buf_clear(&u->in);
            gw_http_parser_recycle(&u->resp);
            if (render_head(u) == 0 && (!u->req_ended || gw_upstream_send_end(u) == 0)) {
                attach(u, s, false);
                return;
            }
            sock_close(s);
            detail = "the request could not be forwarded";
        } else {
            gw_warn("upstream connect failed: %s", strerror(-err));
            detail = "the upstream server could not be reached";
        }
    }
    u->phase = UP_FAILED;
    gw_timer_cancel(u->pool->loop, &u->timer);
    u->cbs->on_error(u->ctx, status, detail);
}

static void abort_event(struct gw_upstream *u);

static void client_event(struct gw_upstream *u, uint32_t events)
{
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        u->rd_ready = true; /* an error is found by reading */
    if (u->phase == UP_ABORTING) {
        abort_event(u);
        return;
    }
    if (u->phase == UP_CONNECTING) {
        int rc = gw_net_connect_result(u->sock->io.fd);
        note_connect(u->pool, rc == 0);
        if (rc != 0) {
            gw_warn("upstream connect failed: %s", strerror(-rc));
            if (connect_next(u)) {
                u->cbs->on_event(u->ctx); /* the owner watches the new socket */
                return;
            }
            fail(u, 502, "the upstream server could not be reached");
            u->cbs->on_event(u->ctx);
            return;
        }
        u->sock->connected = true;
        u->phase = UP_ACTIVE;
        gw_timer_cancel(u->pool->loop, &u->timer);
        if (u->req_ended)
            arm(u, u->pool->s.response_timeout_ms);
        u->cbs->on_connect(u->ctx);
    }
    /* Errors and hang-ups are found by the reads and writes of the drive:
     * bytes the backend sent before a reset are still delivered. */
    u->cbs->on_event(u->ctx);
}

/* The deadline moves with progress instead of being re-armed on every read:
 * UPSTREAM_TIMEOUT_MS without response bytes read, or handed to the owner
 * (a slow reader of a large response is not an upstream timeout). */
static void timer_cb(struct gw_loop *loop, struct gw_timer *t)
{
    struct gw_upstream *u = gw_container_of(t, struct gw_upstream, timer);
    if (u->phase == UP_ABORTING) {
        abort_end(u, true); /* the backend did not close in time */
        return;
    }
    if (u->phase == UP_CONNECTING) {
        note_connect(u->pool, false);
        if (connect_next(u)) {
            u->cbs->on_event(u->ctx); /* the owner watches the new socket */
            return;
        }
        fail(u, 502, "timed out connecting to the upstream server");
        u->cbs->on_event(u->ctx);
        return;
    }
    if (u->phase != UP_ACTIVE || !u->req_ended)
        return;
    uint64_t due = GW_MAX(GW_MAX(u->rx_ms, u->deliver_ms), u->end_ms) +
                   (uint64_t)u->pool->s.response_timeout_ms;
    if (due > loop->now_ms) {
        arm(u, (int)(due - loop->now_ms));
        return;
    }
    u->retried = true;
    fail(u, 504, "the upstream server did not answer in time");
    u->cbs->on_event(u->ctx);
}

static int body_cb(void *ctx, const char *data, size_t len)
{
    struct gw_upstream *u = ctx;
    if (u->phase == UP_ABORTING)
        return 0; /* nobody wants it any more */
    if (u->phase != UP_ACTIVE)
        return -1;
    u->deliver_ms = u->pool->loop->now_ms;
    return u->cbs->on_body(u->ctx, data, len);
}

static bool flush(struct gw_upstream *u)
{
    bool progress = false;
    if (u->phase != UP_ACTIVE || gw_buf_len(&u->out) == 0)
        return false;
    if (gw_net_send_buf(u->sock->io.fd, &u->out, &progress) != 0) {
        /* The backend stopped reading (it may have answered early and
         * closed). What it sent before is still readable: the reads relay a
         * complete response or fail the exchange. The rest of the request is
         * dropped. */
        gw_buf_clear(&u->out);
        u->send_failed = true;
        return true;
    }
    if (progress)
        u->tx_ms = u->pool->loop->now_ms;
    return progress;
}

/* Hands a final or interim head to the owner. Returns false when the
 * exchange ended meanwhile. */
static bool deliver_head(struct gw_upstream *u)
{
    const struct gw_http_head *rh = &u->resp.head;
    if (rh->status == 101) {
        if (!u->upgrade) {
            fail(u, 502, "the upstream switched protocols"); /* nobody asked it to */
            return false;
        }
        /* The exchange ends here: the owner takes the socket over
         * (gw_upstream_take_socket) and puts the client. */
        u->head_delivered = true;
        gw_timer_cancel(u->pool->loop, &u->timer);
        (void)u->cbs->on_head(u->ctx, rh);
        return false;
    }
    if (rh->status == 100)
        return true; /* the gateway answers Expect itself */
    if (rh->status >= 200)
        u->head_delivered = true;
    if (u->cbs->on_head(u->ctx, rh) != 0)
        return false;
    return u->phase == UP_ACTIVE;
}

static void complete(struct gw_upstream *u)
{
    u->phase = UP_DONE;
    gw_timer_cancel(u->pool->loop, &u->timer);
    u->cbs->on_done(u->ctx);
}

/* Feeds buffered response bytes into the parser while the owner has room. */
static bool pump(struct gw_upstream *u)
{
    bool progress = false;
    /* A message without a body completes on one more execute call with no
     * input, so the loop also runs while DONE is pending. */
    while (u->phase == UP_ACTIVE &&
           (gw_buf_len(&u->in) > 0 || gw_http_parser_done_pending(&u->resp))) {
        size_t sink_len = gw_buf_len(u->sink);
        if (u->head_delivered && sink_len >= GW_STREAM_WINDOW)
            break;
        size_t room = u->head_delivered ? GW_STREAM_WINDOW - sink_len : gw_buf_len(&u->in);
        size_t feed = GW_MIN(gw_buf_len(&u->in), GW_MAX(room, (size_t)1));
        size_t used = 0;
        enum gw_http_result r = gw_http_parser_execute(&u->resp, gw_buf_head(&u->in), feed, &used);
        gw_buf_consume(&u->in, used);
        if (used)
            progress = true;
        switch (r) {
        case GW_HTTP_NEED_MORE:
            if (used == 0)
                return progress;
            break;
        case GW_HTTP_HEAD:
            if (!deliver_head(u))
                return true;
            progress = true;
            break;
        case GW_HTTP_DONE:
            progress = true;
            if (u->resp.head.status >= 100 && u->resp.head.status < 200) {
                gw_http_parser_reset(&u->resp);
                gw_http_parser_set_no_body(&u->resp, u->req_is_head);
                break;
            }
            complete(u);
            return true;
        case GW_HTTP_ERROR:
        default:
            if (u->phase != UP_ACTIVE)
                return true; /* the owner refused the body and gave the client up */
            gw_warn("upstream sent a malformed response: %s",
                    u->resp.error_detail ? u->resp.error_detail : "?");
            fail(u, 502, "the upstream server sent an invalid response");
            return true;
        }
    }
    return progress;
}

static bool read_some(struct gw_upstream *u)
{
    if (u->phase != UP_ACTIVE || !u->rd_ready || gw_buf_len(&u->in) >= GW_STREAM_WINDOW)
        return false;
    if (gw_buf_reserve(&u->in, GW_READ_MIN) != 0) {
        fail(u, 502, "the upstream response could not be buffered");
        return true;
    }
    size_t room = gw_buf_tail_room(&u->in);
    ssize_t n = recv(u->sock->io.fd, u->in.data + u->in.end, room, 0);
    if (n > 0) {
        if ((size_t)n < room)
            u->rd_ready = false;
        gw_buf_commit(&u->in, (size_t)n);
        u->resp_started = true;
        u->rx_ms = u->pool->loop->now_ms; /* the deadline moves lazily (timer_cb) */
        return true;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        if (errno == EAGAIN)
            u->rd_ready = false;
        return false;
    }
    /* EOF or error from the backend. */
    if (n == 0 && u->resp_started && gw_buf_len(&u->in) == 0) {
        if (gw_http_parser_finish(&u->resp) == GW_HTTP_DONE) {
            if (!u->head_delivered && !deliver_head(u))
                return true;
            complete(u);
            return true;
        }
    }
    if (n == 0 && gw_buf_len(&u->in) > 0)
        return false; /* parse what is buffered first; EOF is seen again */
    fail(u, 502, "the upstream server closed the connection");
    return true;
}

bool gw_upstream_drive(struct gw_upstream *u)
{
    bool progress = flush(u);
    progress |= pump(u);
    if (read_some(u)) {
        progress = true;
        pump(u);
    }
    return progress;
}

void gw_upstream_update_interest(struct gw_upstream *u)
{
    struct up_sock *s = u->sock;
    if (!s || s->closing || u->phase == UP_PUT)
        return;
    uint32_t ev = 0;
    if (u->phase == UP_CONNECTING || gw_buf_len(&u->out) > 0)
        ev |= EPOLLOUT;
    if (u->phase == UP_ACTIVE && gw_buf_len(&u->in) < GW_STREAM_WINDOW &&
        gw_buf_len(u->sink) < GW_STREAM_WINDOW)
        ev |= EPOLLIN;
    if (gw_loop_watch(u->pool->loop, &s->io, ev) != 0)
        gw_warn("upstream: epoll_ctl failed: %s", strerror(errno));
}

int gw_upstream_take_socket(struct gw_upstream *u, struct gw_buf *rest)
{
    struct up_sock *s = u->sock;
    if (s == NULL || u->phase != UP_ACTIVE)
        return -EINVAL;
    if (gw_buf_len(&u->in) > 0 && gw_buf_append(rest, gw_buf_head(&u->in), gw_buf_len(&u->in)) != 0)
        return -ENOMEM;
    gw_buf_clear(&u->in);
    gw_timer_cancel(u->pool->loop, &u->timer);
    gw_loop_unwatch(u->pool->loop, &s->io);
    int fd = s->io.fd;
    s->io.fd = -1; /* the reaper frees the struct and leaves the descriptor alone */
    sock_close(s);
    u->sock = NULL;
    u->phase = UP_DONE;
    return fd;
}

/* ---- aborted exchanges ---- */

/* The wait is over: close the socket now (a reset when the backend may
 * still be sending), give the resource back, recycle the client. */
static void abort_end(struct gw_upstream *u, bool reset)
{
    struct gw_upstream_pool *pool = u->pool;
    struct gw_upstream **pp = &pool->aborting;
    while (*pp && *pp != u)
        pp = &(*pp)->next;
    if (*pp)
        *pp = u->next;
    gw_timer_cancel(pool->loop, &u->timer);
    struct up_sock *s = u->sock;
    u->sock = NULL;
    if (reset) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        (void)setsockopt(s->io.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    sock_close(s);
    /* Closed now, not at reap: the backend must see it before the resource
     * (the in-flight slot) can start another exchange. */
    close(s->io.fd);
    s->io.fd = -1;
    u->phase = UP_PUT;
    u->req = NULL;
    u->next = pool->client_reap;
    pool->client_reap = u;
    void (*done)(void *) = u->on_closed;
    u->on_closed = NULL;
    if (done)
        done(u->closed_arg);
}

/* Parses and drops buffered response bytes; ends the wait when the
 * response is complete (or cannot be parsed). Returns true when it ended. */
static bool abort_parse(struct gw_upstream *u)
{
    for (int i = 0; i < 1024 && (gw_buf_len(&u->in) > 0 || gw_http_parser_done_pending(&u->resp));
         i++) {
        size_t used = 0;
        enum gw_http_result r =
            gw_http_parser_execute(&u->resp, gw_buf_head(&u->in), gw_buf_len(&u->in), &used);
        gw_buf_consume(&u->in, used);
        if (r == GW_HTTP_DONE && u->resp.head.status >= 100 && u->resp.head.status < 200) {
            gw_http_parser_reset(&u->resp);
            gw_http_parser_set_no_body(&u->resp, u->req_is_head);
            continue;
        }
        if (r == GW_HTTP_DONE || r == GW_HTTP_ERROR) {
            abort_end(u, r == GW_HTTP_ERROR);
            return true;
        }
        if (r == GW_HTTP_NEED_MORE && used == 0)
            break;
    }
    return false;
}

/* Readable while aborting: drop what arrives until the response ends or
 * the backend closes. */
static void abort_event(struct gw_upstream *u)
{
    for (int i = 0; i < 64 && u->rd_ready; i++) {
        if (gw_buf_reserve(&u->in, GW_READ_MIN) != 0) {
            abort_end(u, true);
            return;
        }
        size_t room = gw_buf_tail_room(&u->in);
        ssize_t n = recv(u->sock->io.fd, u->in.data + u->in.end, room, 0);
        if (n > 0) {
            gw_buf_commit(&u->in, (size_t)n);
            if (abort_parse(u))
                return;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            u->rd_ready = false;
            return;
        }
        abort_end(u, false); /* EOF or reset: the backend is done */
        return;
    }
}

void gw_upstream_abort(struct gw_upstream *u, void (*on_closed)(void *arg), void *arg)
{
    struct gw_upstream_pool *pool = u->pool;
    if (u->phase != UP_ACTIVE || u->sock == NULL || pool->draining) {
        gw_upstream_put(u);
        on_closed(arg);
        return;
    }
    u->phase = UP_ABORTING;
    u->req = NULL; /* the owner's request head goes with the owner */
    u->cbs = NULL;
    u->ctx = NULL;
    u->sink = NULL;
    u->on_closed = on_closed;
    u->closed_arg = arg;
    gw_buf_clear(&u->out);
    (void)shutdown(u->sock->io.fd, SHUT_WR);
    u->next = pool->aborting;
    pool->aborting = u;
    arm(u, UP_ABORT_MS);
    if (abort_parse(u)) /* what is buffered may complete it already */
        return;
    if (gw_loop_watch(pool->loop, &u->sock->io, EPOLLIN) != 0)
        abort_end(u, true);
}

void gw_upstream_put(struct gw_upstream *u)
{
    if (u->phase == UP_PUT)
        return;
    struct gw_upstream_pool *pool = u->pool;
    gw_timer_cancel(pool->loop, &u->timer);
    if (u->sock) {
        bool clean = u->phase == UP_DONE && u->req_ended && !u->send_failed &&
                     u->resp.head.keep_alive && !u->resp.head.body_until_close &&
                     gw_buf_len(&u->out) == 0 && gw_buf_len(&u->in) == 0;
        if (clean)
            sock_put(u->sock);
        else
            sock_close(u->sock);
        u->sock = NULL;
    }
    u->phase = UP_PUT;
    u->req = NULL;
    u->next = pool->client_reap;
    pool->client_reap = u;
}
