/*
 * Upgrade tunnel byte relay (see tunnel.h): two directions of the same
 * shape, each a buffer between a socket read and a socket written, with
 * backpressure at GW_STREAM_WINDOW and the FIN passed on after the last
 * byte. Worker thread only.
 */
#include "tunnel.h"

#include "gw/net.h"

#include <errno.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* Rounds of one drive before other connections get their turn. */
#define TUNNEL_ROUNDS 16

static void tunnel_io_cb(struct gw_loop *loop, struct gw_io *io, uint32_t events)
{
    (void)loop;
    struct gw_tunnel *t = gw_container_of(io, struct gw_tunnel, io);
    if (t->closed)
        return;
    if (events & EPOLLERR) {
        t->failed = true; /* reset by the backend */
    } else if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) {
        /* Errors and the FIN are found by reading. A hang-up after the FIN
         * was read, while the backend still had our bytes to take, means it
         * is gone altogether (reset): nothing would report it again. */
        t->backend.rd_ready = true;
        if ((events & EPOLLHUP) && t->backend.rd_eof && !t->backend.wr_shut)
            t->failed = true;
    }
    t->on_event(t->ctx);
}

int gw_tunnel_open(struct gw_tunnel *t, struct gw_loop *loop, struct gw_buf_pool *blocks,
                   int client_fd, int backend_fd, void (*on_event)(void *ctx), void *ctx)
{
    *t = (struct gw_tunnel){0};
    t->loop = loop;
    t->blocks = blocks;
    t->client.fd = client_fd;
    t->backend.fd = backend_fd;
    t->client.rd_ready = t->backend.rd_ready = true;
    t->active_ms = loop->now_ms;
    t->on_event = on_event;
    t->ctx = ctx;
    gw_io_init(&t->io, backend_fd, tunnel_io_cb);
    gw_net_nodelay(backend_fd);
    int rc = gw_loop_watch(loop, &t->io, EPOLLIN);
    if (rc != 0) {
        gw_tunnel_close(t);
        return rc;
    }
    return 0;
}

void gw_tunnel_client_readable(struct gw_tunnel *t)
{
    t->client.rd_ready = true;
}

void gw_tunnel_client_eof(struct gw_tunnel *t)
{
    t->client.rd_eof = true;
}

/* One step of the direction src -> dst through b: write what is pending,
 * read more while under the window, pass the FIN on once b is empty.
 * Returns true on progress (or an error, which sets failed). */
static bool relay(struct gw_tunnel *t, struct gw_tunnel_end *src, struct gw_tunnel_end *dst,
                  struct gw_buf *b)
{
    bool progress = false;
    if (gw_buf_len(b) > 0) {
        bool sent = false;
        if (gw_net_send_buf(dst->fd, b, &sent) != 0) {
            t->failed = true; /* the receiver is gone (reset, or closed both ways) */
            return true;
        }
        if (sent) {
            progress = true;
            t->active_ms = t->loop->now_ms;
            if (gw_buf_len(b) == 0)
                gw_buf_pool_put(t->blocks, b); /* an idle tunnel holds no block */
        }
    }
    if (src->rd_ready && !src->rd_eof && gw_buf_len(b) < GW_STREAM_WINDOW) {
        /* Room up to the window: one large read instead of several of a
         * block each (a third less CPU per byte relayed, measured). */
        gw_buf_pool_get(t->blocks, b);
        if (gw_buf_reserve(b, GW_STREAM_WINDOW - gw_buf_len(b)) != 0) {
            t->failed = true;
            return true;
        }
        size_t room = gw_buf_tail_room(b);
        ssize_t n = recv(src->fd, b->data + b->end, room, 0);
        if (n > 0) {
            gw_buf_commit(b, (size_t)n);
            src->bytes_read += (uint64_t)n;
            t->active_ms = t->loop->now_ms;
            if ((size_t)n < room)
                src->rd_ready = false; /* drained; epoll says when more comes */
            progress = true;
        } else if (n == 0) {
            src->rd_eof = true;
            progress = true;
        } else if (errno == EAGAIN) {
            src->rd_ready = false;
            if (gw_buf_len(b) == 0)
                gw_buf_pool_put(t->blocks, b);
        } else if (errno != EINTR) {
            t->failed = true; /* reset */
            return true;
        }
    }
    if (src->rd_eof && gw_buf_len(b) == 0 && !dst->wr_shut) {
        /* Everything before the FIN is out: pass the half-close on. */
        (void)shutdown(dst->fd, SHUT_WR);
        dst->wr_shut = true;
        progress = true;
    }
    return progress;
}

bool gw_tunnel_drive(struct gw_tunnel *t, struct gw_buf *to_backend, struct gw_buf *to_client)
{
    bool any = false;
    for (int round = 0; round < TUNNEL_ROUNDS && !t->failed && !t->closed; round++) {
        bool progress = relay(t, &t->client, &t->backend, to_backend);
        if (!t->failed)
            progress |= relay(t, &t->backend, &t->client, to_client);
        if (!progress)
            break;
        any = true;
    }
    return any;
}

bool gw_tunnel_done(const struct gw_tunnel *t)
{
    return t->failed || t->closed || (t->client.wr_shut && t->backend.wr_shut);
}

uint32_t gw_tunnel_client_events(struct gw_tunnel *t, const struct gw_buf *to_backend,
                                 const struct gw_buf *to_client)
{
    uint32_t client = 0, backend = 0;
    if (!t->client.rd_eof && gw_buf_len(to_backend) < GW_STREAM_WINDOW)
        client |= EPOLLIN;
    if (gw_buf_len(to_client) > 0)
        client |= EPOLLOUT;
    if (!t->backend.rd_eof && gw_buf_len(to_client) < GW_STREAM_WINDOW)
        backend |= EPOLLIN;
    if (gw_buf_len(to_backend) > 0)
        backend |= EPOLLOUT;
    if (t->closed)
        return client;
    if (t->backend.rd_eof && t->backend.wr_shut) {
        /* Both directions with the backend ended: a level-triggered hang-up
         * would fire on every iteration while the client drains. */
        gw_loop_unwatch(t->loop, &t->io);
    } else if (gw_loop_watch(t->loop, &t->io, backend) != 0) {
        t->failed = true;
    }
    return client;
}

void gw_tunnel_close(struct gw_tunnel *t)
{
    if (t->closed)
        return;
    t->closed = true;
    gw_loop_unwatch(t->loop, &t->io);
    if (t->io.fd >= 0)
        close(t->io.fd);
    t->io.fd = -1;
    t->backend.fd = -1;
}
