/*
 * Upstream HTTP/1.1 client and the per-worker keep-alive pool it draws its
 * sockets from. A client owns its half of one exchange: the backend socket,
 * the request bytes on their way out, the response parser and buffer, the
 * connect and response deadlines and the retry-once rule. It reports to its
 * owner only through struct gw_upstream_cbs (the shape of h2o's
 * http1client callbacks) and never includes or calls the owner's module.
 * Worker (loop) thread only: nothing here is thread-safe.
 */
#ifndef GW_UPSTREAM_H
#define GW_UPSTREAM_H

#include "gw/buf.h"
#include "gw/http1.h"
#include "gw/loop.h"
#include "gw/proxy.h"
#include "gw/resolve.h"
#include "gw/stats.h"

#include <sys/socket.h>

struct gw_upstream_pool;
struct gw_upstream; /* opaque: one exchange with the backend */

/* What a pool connects to and how long it waits. Copied at create (addr
 * read then); name is borrowed and must outlive the pool. */
struct gw_upstream_settings {
    /* The backend's name as the resolver follows it (gw/resolve.h): new
     * connects go to its current addresses, in order from the last one
     * that did not fail; a connect that fails moves on to the next address
     * (each once per exchange) and kicks the resolver; pooled sockets to an
     * address that left the list are closed. NULL: addr, fixed. */
    struct gw_resolve_name *name;
    const struct sockaddr_storage *addr; /* fixed backend address when name is NULL */
    socklen_t addr_len;                  /* bytes of *addr */
    int keepalive;                       /* idle sockets kept at most; 0 disables pooling */
    int idle_timeout_ms;                 /* UPSTREAM_IDLE_TIMEOUT_MS: an idle socket's life */
    int connect_timeout_ms;              /* UPSTREAM_CONNECT_TIMEOUT_MS */
    int response_timeout_ms;             /* UPSTREAM_TIMEOUT_MS: no response progress */
    size_t max_head_bytes;               /* response head limit */
    struct gw_stats_worker *stats;       /* the worker's counters (connections opened), or NULL */
    /* Told every connect outcome (ok: the TCP connect completed; !ok: it
     * failed), e.g. for /health; may be NULL. Loop thread. */
    void (*note_connect)(void *arg, bool ok);
    void *note_arg;
};

/* How a client reports to its owner; ctx is the owner's pointer given at
 * gw_upstream_get. A callback may call gw_upstream_put on the client (the
 * client touches nothing of it afterwards), but must not free ctx before the
 * loop iteration ends. */
struct gw_upstream_cbs {
    /* The TCP connect completed (not called for a pooled socket). */
    void (*on_connect)(void *ctx);
    /* A response head was parsed: an interim 1xx other than 100 (RFC 9110
     * §15.2), or the final head (status >= 200). A 101 comes only to a request
     * sent with pctx->upgrade and ends the exchange: the owner takes the
     * socket (gw_upstream_take_socket) or gives the client up. head is valid
     * until the next callback. Returns 0, or -1 when the owner gave the
     * client up. */
    int (*on_head)(void *ctx, const struct gw_http_head *head);
    /* Decoded response body bytes (framing removed), at most the owner's room
     * (GW_STREAM_WINDOW minus its pending output). Returns 0, or -1 when the
     * owner cannot take them (the client then fails the exchange). */
    int (*on_body)(void *ctx, const char *data, size_t len);
    /* The response is complete (RFC 9112 §6.3). The owner now calls
     * gw_upstream_put, which pools the socket when it is clean. */
    void (*on_done)(void *ctx);
    /* The exchange failed and cannot be retried: status is 502 (connect
     * failed, closed, invalid response) or 504 (no response progress for
     * UPSTREAM_TIMEOUT_MS); detail is a static text for the client. The
     * socket is already closed; the owner calls gw_upstream_put. */
    void (*on_error)(void *ctx, int status, const char *detail);
    /* The socket became ready: the owner runs its drive, which calls
     * gw_upstream_drive. */
    void (*on_event)(void *ctx);
};

/* Creates worker-local pool state on loop. Returns 0 or -ENOMEM. */
GW_MUSTCHECK int gw_upstream_pool_create(struct gw_upstream_pool **out, struct gw_loop *loop,
                                         const struct gw_upstream_settings *s);

/* Closes every socket and frees the pool. No client may be in use. */
void gw_upstream_pool_destroy(struct gw_upstream_pool *pool);

/* Shutdown: closes the idle sockets now and pools none from now on. */
void gw_upstream_pool_drain(struct gw_upstream_pool *pool);

/* Frees what was closed or put during this loop iteration. Call it where no
 * callback of the iteration can still run (the worker's before_sleep). */
void gw_upstream_pool_reap(struct gw_upstream_pool *pool);

/* Closes the idle sockets pooled for UPSTREAM_IDLE_TIMEOUT_MS or longer at
 * now_ms (monotonic ms), so a quiet gateway does not hold backend
 * connections forever. Called from the worker's upkeep tick (every 100 ms). */
void gw_upstream_pool_close_expired(struct gw_upstream_pool *pool, uint64_t now_ms);

/* Frees spare clients beyond keep (memory back after a burst). */
void gw_upstream_pool_trim(struct gw_upstream_pool *pool, int keep);

/* Idle pooled sockets now (tests, stats). */
int gw_upstream_pool_idle(const struct gw_upstream_pool *pool);

/* Starts an exchange: takes a pooled idle socket, or starts a non-blocking
 * connect (on_connect follows). cbs (static storage) and ctx are the owner;
 * sink is the owner's output buffer towards its client, read only to apply
 * backpressure (the response is read and parsed only while sink holds less
 * than GW_STREAM_WINDOW bytes). The owner holds the client until
 * gw_upstream_put. Returns NULL with *err = -errno when the connect failed at
 * once to every address tried (nothing to put); -EHOSTUNREACH while the
 * backend's name has no address. */
struct gw_upstream *gw_upstream_get(struct gw_upstream_pool *pool,
                                    const struct gw_upstream_cbs *cbs, void *ctx,
                                    const struct gw_buf *sink, int *err);

/* Queues the request head for req rewritten for the backend (RFC 9110 §7.6,
 * gw_proxy_write_request_head) and chooses the body framing towards it.
 * req and pctx's strings are borrowed until gw_upstream_put: an idempotent
 * request without a body (RFC 9110 §9.2.2) that finds its pooled socket
 * closed before any response byte is sent once more on a new connection,
 * and its head is rendered again. A HEAD request expects no response body.
 * Returns 0 or -ENOMEM. */
GW_MUSTCHECK int gw_upstream_send_head(struct gw_upstream *u, const struct gw_http_head *req,
                                       const struct gw_proxy_request_ctx *pctx);

/* Queues len request body bytes, framed as chosen by send_head (chunked
 * re-encoding, RFC 9112 §7.1). Bytes are dropped once the backend stopped
 * reading (gw_upstream_send_failed). Returns 0 or -ENOMEM. */
GW_MUSTCHECK int gw_upstream_send_body(struct gw_upstream *u, const char *data, size_t len);

/* The request is complete: queues the last chunk when chunked and starts the
 * response deadline. Returns 0 or -ENOMEM. */
GW_MUSTCHECK int gw_upstream_send_end(struct gw_upstream *u);

/* gw_upstream_send_end relaying the request's trailer fields (rendered
 * lines, gw_http_parser_trailers) after the last chunk when the body goes
 * chunked; dropped otherwise (RFC 9112 §7.1.2). Returns 0 or -ENOMEM. */
GW_MUSTCHECK int gw_upstream_send_end_trailers(struct gw_upstream *u, struct gw_slice trailers);

/* In on_done: the response's trailer fields (gw_http_parser_trailers), valid
 * until gw_upstream_put. */
struct gw_slice gw_upstream_trailers(const struct gw_upstream *u);

/* Request body bytes the owner may still queue before the outgoing window
 * (GW_STREAM_WINDOW, framing included) is full: backpressure on the client. */
size_t gw_upstream_send_room(const struct gw_upstream *u);

/* True once the TCP connect completed (at once for a pooled socket). */
bool gw_upstream_connected(const struct gw_upstream *u);

/* Loop time (ms) request bytes last left for the backend, 0 = none yet:
 * progress of an upload the owner times. */
uint64_t gw_upstream_send_ms(const struct gw_upstream *u);

/* True while queued request bytes wait for the backend to read them. */
bool gw_upstream_send_stalled(const struct gw_upstream *u);

/* True once the backend stopped accepting request bytes (it may have
 * answered early and closed); later body bytes are dropped. */
bool gw_upstream_send_failed(const struct gw_upstream *u);

/* One step of the exchange: writes queued request bytes, reads response
 * bytes (while under the window) and parses them into callbacks. Returns true
 * when anything moved. The client may have been put when it returns. */
bool gw_upstream_drive(struct gw_upstream *u);

/* Sets the socket's epoll interest from what is pending (write while request
 * bytes wait or the connect runs; read while under the window). Call it at
 * the end of the owner's drive. */
void gw_upstream_update_interest(struct gw_upstream *u);

/* The owner's client is gone mid-exchange: the request is withdrawn. When
 * nothing can have reached the backend yet (still connecting) or the
 * response is complete, this is gw_upstream_put followed by on_closed(arg).
 * Otherwise the socket's write side is shut at once (the backend sees the
 * client leave), and u lives on without its owner, reading, parsing and
 * dropping what still arrives, until the response is complete, the backend
 * closes its side (EOF or reset) or 2 s pass (then the socket is reset);
 * only then is the socket closed and on_closed(arg) called, so a resource tied to
 * the exchange (an in-flight slot) is held until the backend is really done
 * with it. gw_upstream_pool_drain ends every such wait at once. The owner
 * must not touch u after the call; cbs are never called again. */
void gw_upstream_abort(struct gw_upstream *u, void (*on_closed)(void *arg), void *arg);

/* After on_head reported a 101 to a request sent with pctx->upgrade: hands
 * the backend socket to the caller, who owns (and closes) the returned
 * descriptor from now on; the response bytes already read past the 101's
 * head (the new protocol's first bytes) are appended to rest. The socket is
 * no longer watched by the pool and never pooled. The caller then calls
 * gw_upstream_put. Returns the descriptor, -EINVAL when u holds no active
 * socket, or -ENOMEM (rest unchanged, u untouched). RFC 9110 §7.8. */
GW_MUSTCHECK int gw_upstream_take_socket(struct gw_upstream *u, struct gw_buf *rest);

/* Ends the owner's use of u: the socket goes back to the pool when the
 * exchange finished cleanly (response complete and keep-alive, request sent
 * whole, nothing unread), else it is closed (an exchange cut short never
 * leaves a half-sent request on a reusable socket). u is invalid after. */
void gw_upstream_put(struct gw_upstream *u);

#endif
