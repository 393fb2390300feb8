/* Per-worker keep-alive pool of upstream connections (see upstream.h). */
#include "upstream.h"

#include "conn.h"
#include "gw/log.h"
#include "gw/net.h"

#include <errno.h>
#include <string.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

static void upstream_cb(struct gw_loop *loop, struct gw_io *io, uint32_t events)
{
    struct gw_upstream *u = gw_container_of(io, struct gw_upstream, io);
    if (u->closing)
        return;
    if (u->conn) {
        gw_conn_on_upstream(u->conn, events);
        return;
    }
    /* Idle in the pool: any readiness means the backend closed it or sent
     * bytes nobody asked for. Either way it cannot be reused. */
    struct gw_worker *w = u->w;
    struct gw_upstream **pp = &w->idle;
    while (*pp && *pp != u)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = u->next;
        w->idle_count--;
    }
    gw_upstream_close(u);
}

struct gw_upstream *gw_upstream_get(struct gw_worker *w, bool fresh, int *err)
{
    struct gw_upstream *u = fresh ? NULL : w->idle;
    if (u) {
        w->idle = u->next;
        w->idle_count--;
        u->next = NULL;
        u->reused = true;
        return u;
    }
    u = calloc(1, sizeof(*u));
    if (!u) {
        *err = -ENOMEM;
        return NULL;
    }
    const struct gw_config *cfg = w->srv->cfg;
    if (gw_http_parser_init(&u->resp, GW_HTTP_RESPONSE,
                            (size_t)GW_MAX(cfg->max_header_bytes, 65536), 0, gw_conn_upstream_body,
                            NULL)) {
        free(u);
        *err = -ENOMEM;
        return NULL;
    }
    int fd = gw_net_connect(&w->srv->backend, w->srv->backend_len);
    if (fd < 0) {
        gw_http_parser_deinit(&u->resp);
        free(u);
        *err = fd;
        return NULL;
    }
    GW_STAT_INC(&w->stats, upstream_connections_opened);
    gw_io_init(&u->io, fd, upstream_cb);
    u->w = w;
    u->resp.ctx = u;
    return u;
}

void gw_upstream_watch(struct gw_upstream *u, uint32_t events)
{
    if (gw_loop_watch(&u->w->loop, &u->io, events) != 0)
        gw_warn("upstream: epoll_ctl failed: %s", strerror(errno));
}

void gw_upstream_close(struct gw_upstream *u)
{
    if (u->closing)
        return;
    u->closing = true;
    u->conn = NULL;
    gw_loop_unwatch(&u->w->loop, &u->io);
    u->next = u->w->up_reap;
    u->w->up_reap = u;
}

void gw_upstream_put(struct gw_upstream *u)
{
    struct gw_worker *w = u->w;
    u->conn = NULL;
    if (w->draining || w->idle_count >= w->srv->cfg->upstream_keepalive || gw_buf_len(&u->in) ||
        gw_buf_len(&u->out)) {
        gw_upstream_close(u);
        return;
    }
    /* Buffers keep their storage while pooled: the pool is small and the
     * next request reuses them without malloc. */
    gw_buf_clear(&u->in);
    gw_buf_clear(&u->out);
    gw_http_parser_reset(&u->resp);
    u->idle_since_ms = w->loop.now_ms;
    u->next = w->idle;
    w->idle = u;
    w->idle_count++;
    gw_upstream_watch(u, EPOLLIN);
}

void gw_upstream_reap(struct gw_worker *w)
{
    while (w->up_reap) {
        struct gw_upstream *u = w->up_reap;
        w->up_reap = u->next;
        close(u->io.fd);
        gw_buf_release(&u->in);
        gw_buf_release(&u->out);
        gw_http_parser_deinit(&u->resp);
        free(u);
    }
}

void gw_upstream_close_expired(struct gw_worker *w, uint64_t now_ms)
{
    uint64_t timeout = (uint64_t)w->srv->cfg->upstream_idle_timeout_ms;
    /* The pool is LIFO: once one entry has expired, every one after it
     * entered the pool earlier and has expired too. */
    struct gw_upstream **pp = &w->idle;
    while (*pp && now_ms - (*pp)->idle_since_ms < timeout)
        pp = &(*pp)->next;
    while (*pp) {
        struct gw_upstream *u = *pp;
        *pp = u->next;
        w->idle_count--;
        gw_upstream_close(u);
    }
}

void gw_upstream_close_idle(struct gw_worker *w)
{
    while (w->idle) {
        struct gw_upstream *u = w->idle;
        w->idle = u->next;
        w->idle_count--;
        gw_upstream_close(u);
    }
}
