/*
 * Upgrade tunnel byte relay (SPEC.md §13, RFC 9110 §7.8): after a 101
 * Switching Protocols, bytes go both ways unchanged between the client and
 * the backend socket until both directions have ended. A FIN read from one
 * side is passed on to the other (shutdown(SHUT_WR)) once everything read
 * before it was written, so a half-close works both ways. Each direction
 * holds at most about GW_STREAM_WINDOW bytes: a side is read only while the
 * buffer towards the other side is under the window (backpressure), so
 * memory does not grow with what is relayed.
 *
 * The relay owns the backend socket and its epoll registration; the client
 * socket stays with its owner (the client connection), which reports its
 * readiness (gw_tunnel_client_readable) and registers the interest
 * gw_tunnel_client_events returns. The two buffers are the owner's, passed
 * to every call. Worker (loop) thread only: nothing here is thread-safe.
 */
#ifndef GW_TUNNEL_H
#define GW_TUNNEL_H

#include "gw/buf.h"
#include "gw/loop.h"

/* One socket of the tunnel. */
struct gw_tunnel_end {
    int fd;              /* the socket (the client's is borrowed) */
    bool rd_ready;       /* epoll said readable and no EAGAIN since */
    bool rd_eof;         /* its FIN was read: nothing more comes from it */
    bool wr_shut;        /* our FIN was sent to it (shutdown SHUT_WR) */
    uint64_t bytes_read; /* bytes read from it, relayed to the other side */
};

struct gw_tunnel {
    struct gw_io io;              /* the backend socket (owned) */
    struct gw_loop *loop;         /* the worker's loop */
    struct gw_buf_pool *blocks;   /* the worker's buffer blocks */
    struct gw_tunnel_end client;  /* client side */
    struct gw_tunnel_end backend; /* backend side */
    uint64_t active_ms;           /* last byte read or written (loop clock) */
    bool failed;                  /* a read or write error: the tunnel must close */
    bool closed;                  /* gw_tunnel_close ran */
    void (*on_event)(void *ctx);  /* the backend socket is ready: drive */
    void *ctx;
};

/* Starts relaying between client_fd (borrowed) and backend_fd (owned from
 * now on: closed by gw_tunnel_close, also when this fails). on_event(ctx)
 * is called when the backend socket becomes ready; the owner then drives.
 * blocks is the pool the two buffers draw their storage from. Both sockets
 * may already hold bytes: they start as readable. Returns 0 or -errno
 * (epoll registration failed). */
GW_MUSTCHECK int gw_tunnel_open(struct gw_tunnel *t, struct gw_loop *loop,
                                struct gw_buf_pool *blocks, int client_fd, int backend_fd,
                                void (*on_event)(void *ctx), void *ctx);

/* The client socket is readable (or hung up): the next drive reads it. */
void gw_tunnel_client_readable(struct gw_tunnel *t);

/* The client's FIN was already read by the owner before the tunnel
 * started: passed on to the backend once to_backend is written. */
void gw_tunnel_client_eof(struct gw_tunnel *t);

/* Moves bytes: writes to_backend (bytes from the client) to the backend and
 * to_client to the client, reads each side while the buffer towards the
 * other is under GW_STREAM_WINDOW, and passes each FIN on. Bounded work per
 * call. Returns true when anything moved; the owner calls it again until
 * it returns false, then registers interest. */
bool gw_tunnel_drive(struct gw_tunnel *t, struct gw_buf *to_backend, struct gw_buf *to_client);

/* True when the tunnel is over: both directions ended (each FIN passed on)
 * or an error. The owner then closes. */
bool gw_tunnel_done(const struct gw_tunnel *t);

/* The epoll events the owner should watch on the client socket; also sets
 * the backend socket's interest (none once both directions with the backend
 * ended: a level-triggered hang-up would fire on every iteration). The owner
 * watches nothing on the client once both directions with it ended. */
uint32_t gw_tunnel_client_events(struct gw_tunnel *t, const struct gw_buf *to_backend,
                                 const struct gw_buf *to_client);

/* Unregisters and closes the backend socket (idempotent). The struct stays
 * valid (an event already fetched for it is ignored) until the owner frees
 * it at the end of the loop iteration. */
void gw_tunnel_close(struct gw_tunnel *t);

#endif
