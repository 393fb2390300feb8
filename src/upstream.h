/*
 * Per-worker pool of keep-alive upstream connections (UPSTREAM_KEEPALIVE
 * idle sockets at most). Idle sockets stay watched so a close by the backend
 * is noticed before reuse. Worker thread only.
 */
#ifndef GW_UPSTREAM_H
#define GW_UPSTREAM_H

#include "server.h"

/* Returns a pooled connection (reused = true) or starts a new non-blocking
 * connect (connected = false; wait for EPOLLOUT). The caller owns it until
 * gw_upstream_put / gw_upstream_close. Returns NULL with *err = -errno when
 * the connect failed at once. fresh skips the pool (retry after a pooled
 * connection failed). */
struct gw_upstream *gw_upstream_get(struct gw_worker *w, bool fresh, int *err);

/* Returns a clean connection (response complete, no unread bytes) to the
 * pool, or closes it when the pool is full or disabled. */
void gw_upstream_put(struct gw_upstream *u);

/* Closes a connection now (unwatched at once, freed at reap). */
void gw_upstream_close(struct gw_upstream *u);

/* Frees upstreams closed during this iteration. */
void gw_upstream_reap(struct gw_worker *w);

/* Closes the pooled connections idle for UPSTREAM_IDLE_TIMEOUT_MS or longer
 * at now_ms (monotonic ms), so a quiet gateway does not hold backend
 * connections forever. Called from the worker's upkeep tick (every 100 ms). */
void gw_upstream_close_expired(struct gw_worker *w, uint64_t now_ms);

/* Closes every idle pooled connection (shutdown). */
void gw_upstream_close_idle(struct gw_worker *w);

/* Sets the upstream socket's epoll interest; errors close it on the next
 * event. */
void gw_upstream_watch(struct gw_upstream *u, uint32_t events);

#endif
