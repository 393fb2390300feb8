/*
 * Worker thread: runs one epoll loop over its connections. Wakes come from
 * the acceptor (new sockets), the in-flight gate (granted slots) and main
 * (drain). The reaper runs before each sleep, so nothing is freed while a
 * callback of the same iteration may still touch it.
 */
#include "worker.h"

#include "conn.h"
#include "gw/health.h"
#include "gw/log.h"
#include "gw/net.h"
#include "upstream.h"

#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TICK_MS 100
/* Connections that must have gone since the last trim for another one. */
#define TRIM_MIN_FREED 64
/* Spare parsers and blocks kept (each) when trimming. */
#define TRIM_KEEP_SPARES 4

/* Upstream connect outcomes feed /health between probe rounds. */
static void note_backend(void *arg, bool ok)
{
    struct gw_server *srv = arg;
    gw_health_note_backend(srv->health, ok);
}

static void gate_wake(struct gw_gate_owner *owner)
{
    struct gw_worker *w = owner->ctx;
    gw_loop_wake(&w->loop);
}

static void take_inbox(struct gw_worker *w)
{
    struct gw_handoff batch[64];
    for (;;) {
        size_t n = 0;
        pthread_mutex_lock(&w->inbox_mu);
        n = GW_MIN(w->inbox_len, GW_ARRAY_LEN(batch));
        if (n > 0) { /* an inbox never used is NULL: no memcpy from it */
            memcpy(batch, w->inbox, n * sizeof(batch[0]));
            memmove(w->inbox, w->inbox + n, (w->inbox_len - n) * sizeof(batch[0]));
            w->inbox_len -= n;
        }
        pthread_mutex_unlock(&w->inbox_mu);
        if (n == 0)
            return;
        for (size_t i = 0; i < n; i++) {
            if (w->draining) {
                uint8_t addr[16];
                gw_net_addr_bin(&batch[i].peer, addr);
                close(batch[i].fd);
                gw_server_release_connection(w->srv, batch[i].admin ? NULL : addr);
                continue;
            }
            if (gw_conn_open(w, batch[i].fd, &batch[i].peer, batch[i].admin) != 0)
                gw_warn("worker %d: could not open connection", w->id);
        }
    }
}

static void check_drain(struct gw_worker *w)
{
    int req = atomic_load_explicit(&w->drain_request, memory_order_acquire);
    if (req == 0)
        return;
    bool force = req == 2;
    if (!w->draining || force) {
        w->draining = true;
        gw_upstream_pool_drain(w->upstreams);
        /* gw_conn_drain may close a connection; closed ones stay linked
         * until the reaper runs, so the walk stays valid. */
        for (struct gw_conn *it = w->conns; it; it = gw_conn_next(it))
            gw_conn_drain(it, force);
    }
}

static void on_wake(struct gw_loop *loop, void *ctx)
{
    struct gw_worker *w = ctx;
    take_inbox(w);
    check_drain(w); /* first: a forced drain answers its queued requests 503 */
    struct gw_gate_waiter *waiter;
    while ((waiter = gw_gate_pop_granted(w->srv->gate, &w->gate_owner)) != NULL)
        gw_conn_on_granted(w, waiter);
}

static void before_sleep(struct gw_loop *loop, void *ctx)
{
    struct gw_worker *w = ctx;
    /* The rate-limit batch may ask for one more non-blocking poll first (to
     * gather requests into one Redis round trip) or have pipelined checks
     * left: then the next epoll_wait does not sleep. */
    if (gw_ratelimit_batch_run(w->limits))
        w->loop.poll_once = true;
    gw_conn_run_redrive(w);
    gw_conn_reap(w);
    gw_upstream_pool_reap(w->upstreams);
    gw_log_access_flush(); /* the iteration's access-log lines, in one write */
    if (w->draining && w->conns == NULL && !w->stop) {
        w->stop = true;
        gw_loop_wake(&w->loop); /* do not sleep: leave the loop now */
    }
}

/* Frees spare parsers and blocks beyond keep of each. */
static void release_spares(struct gw_worker *w, int keep)
{
    gw_http_parser_pool_trim(&w->parsers, (size_t)keep);
    gw_buf_pool_trim(&w->blocks, (size_t)keep);
    gw_upstream_pool_trim(w->upstreams, keep);
}

/* After a burst of connections has gone, give the memory it used back to
 * the kernel: the spares beyond a few, then whatever the allocator keeps
 * free in its arenas (glibc does not return freed memory below the top of
 * a heap by itself, so a 10,000-connection burst would otherwise leave the
 * RSS at its peak for good). Runs from the upkeep tick whenever at least
 * TRIM_MIN_FREED connections have gone since the last trim and the worker
 * holds a quarter or less of its most since then: a few times per burst as
 * it winds down (the last ones freed are trimmed too), never while steady. */
static void trim_after_burst(struct gw_worker *w)
{
    int64_t active = atomic_load_explicit(&w->stats.connections_active, memory_order_relaxed);
    if (active > w->trim_peak)
        w->trim_peak = active;
    if (w->trim_peak - active < TRIM_MIN_FREED || active * 4 > w->trim_peak)
        return;
    release_spares(w, TRIM_KEEP_SPARES);
    malloc_trim(0);
    gw_debug("worker %d: memory trimmed after a burst of %lld connections", w->id,
             (long long)w->trim_peak);
    w->trim_peak = active;
}

static void tick_cb(struct gw_loop *loop, struct gw_timer *t)
{
    struct gw_worker *w = gw_container_of(t, struct gw_worker, tick);
    uint64_t next = gw_ratelimit_worker_tick(w->rl, loop->now_ms);
    if (next == 0 || next > TICK_MS)
        next = TICK_MS;
    check_drain(w);
    gw_upstream_pool_close_expired(w->upstreams, loop->now_ms);
    trim_after_burst(w);
    if (gw_timer_arm(loop, &w->tick, loop->now_ms + next) != 0)
        gw_error("worker %d: cannot arm the upkeep timer", w->id);
}

static void *worker_main(void *arg)
{
    struct gw_worker *w = arg;
    gw_debug("worker %d started", w->id);
    while (!w->stop) {
        int rc = gw_loop_run_once(&w->loop, -1);
        if (rc != 0) {
            gw_error("worker %d: epoll_wait failed: %s", w->id, strerror(-rc));
            break;
        }
    }
    /* Leaving: anything still open is closed (forced drain or loop error). */
    for (struct gw_conn *it = w->conns; it; it = gw_conn_next(it))
        gw_conn_drain(it, true);
    gw_upstream_pool_drain(w->upstreams);
    gw_conn_reap(w);
    gw_upstream_pool_reap(w->upstreams);
    gw_log_access_flush();
    atomic_store_explicit(&w->finished, true, memory_order_release);
    gw_debug("worker %d stopped", w->id);
    return NULL;
}

int gw_worker_create(struct gw_worker **out, struct gw_server *srv, int id)
{
    struct gw_worker *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->srv = srv;
    w->id = id;
    int rc = gw_loop_init(&w->loop);
    if (rc) {
        free(w);
        return rc;
    }
    pthread_mutex_init(&w->inbox_mu, NULL);
    w->loop.on_wake = on_wake;
    w->loop.on_wake_ctx = w;
    w->loop.before_sleep = before_sleep;
    w->loop.before_sleep_ctx = w;
    w->gate_owner.wake = gate_wake;
    w->gate_owner.ctx = w;
    rc = gw_ratelimit_worker_create(&w->rl, srv->rl);
    if (rc) {
        gw_loop_deinit(&w->loop);
        pthread_mutex_destroy(&w->inbox_mu);
        free(w);
        return rc;
    }
    const struct gw_config *cfg = srv->cfg;
    struct gw_upstream_settings us = {
        .name = srv->backend,
        .keepalive = cfg->upstream_keepalive,
        .idle_timeout_ms = cfg->upstream_idle_timeout_ms,
        .connect_timeout_ms = cfg->upstream_connect_timeout_ms,
        .response_timeout_ms = cfg->upstream_timeout_ms,
        .max_head_bytes = (size_t)cfg->max_header_bytes,
        .stats = &w->stats,
        .note_connect = note_backend,
        .note_arg = srv,
    };
    if (gw_upstream_pool_create(&w->upstreams, &w->loop, &us) != 0) {
        gw_worker_destroy(w);
        return -ENOMEM;
    }
    if (gw_ratelimit_batch_create(&w->limits, w->rl) != 0 ||
        gw_http_parser_pool_init(&w->parsers, GW_WORKER_SPARES, GW_HTTP_REQUEST,
                                 (size_t)cfg->max_header_bytes,
                                 (uint64_t)cfg->max_body_bytes) != 0 ||
        gw_buf_pool_init(&w->blocks, GW_WORKER_SPARES) != 0) {
        gw_worker_destroy(w);
        return -ENOMEM;
    }
    gw_timer_init(&w->tick, tick_cb);
    if (gw_timer_arm(&w->loop, &w->tick, gw_now_ms() + TICK_MS) != 0) {
        gw_worker_destroy(w);
        return -ENOMEM;
    }
    *out = w;
    return 0;
}

int gw_worker_start(struct gw_worker *w)
{
    return -pthread_create(&w->thread, NULL, worker_main, w);
}

int gw_worker_handoff(struct gw_worker *w, int fd, const struct sockaddr_storage *peer, bool admin)
{
    pthread_mutex_lock(&w->inbox_mu);
    if (w->inbox_len == w->inbox_cap) {
        size_t cap = w->inbox_cap ? w->inbox_cap * 2 : 64;
        struct gw_handoff *p = realloc(w->inbox, cap * sizeof(*p));
        if (!p) {
            pthread_mutex_unlock(&w->inbox_mu);
            return -ENOMEM;
        }
        w->inbox = p;
        w->inbox_cap = cap;
    }
    bool was_empty = w->inbox_len == 0;
    w->inbox[w->inbox_len].fd = fd;
    w->inbox[w->inbox_len].peer = *peer;
    w->inbox[w->inbox_len].admin = admin;
    w->inbox_len++;
    pthread_mutex_unlock(&w->inbox_mu);
    if (was_empty)
        gw_loop_wake(&w->loop);
    return 0;
}

void gw_worker_request_drain(struct gw_worker *w, bool force)
{
    atomic_store_explicit(&w->drain_request, force ? 2 : 1, memory_order_release);
    gw_loop_wake(&w->loop);
}

void gw_worker_join(struct gw_worker *w)
{
    pthread_join(w->thread, NULL);
}

void gw_worker_destroy(struct gw_worker *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->inbox_len; i++)
        close(w->inbox[i].fd);
    free(w->inbox);
    gw_http_parser_pool_deinit(&w->parsers);
    gw_buf_pool_deinit(&w->blocks);
    gw_ratelimit_batch_destroy(w->limits);
    gw_buf_release(&w->scratch);
    gw_upstream_pool_destroy(w->upstreams);
    gw_ratelimit_worker_destroy(w->rl);
    gw_loop_deinit(&w->loop);
    pthread_mutex_destroy(&w->inbox_mu);
    free(w);
}
