/*
 * The gateway's own endpoints (SPEC.md §4): /health, /stats, /metrics,
 * answered by the worker that received the request, never rate limited,
 * never counted against the in-flight cap. Worker thread only.
 */
#ifndef GW_ADMIN_H
#define GW_ADMIN_H

#include "server.h"

enum gw_admin_endpoint {
    GW_ADMIN_NONE = 0,
    GW_ADMIN_HEALTH,
    GW_ADMIN_STATS,
    GW_ADMIN_METRICS,
};

/* Which endpoint the request-target's path (query ignored) names, if any. */
enum gw_admin_endpoint gw_admin_match(const struct gw_config *cfg, struct gw_slice target);

/* Appends the complete response of endpoint ep to out (status line,
 * headers, body unless head_only) and sets *status. The health probes are
 * cached for 1 s: the backend probe process-wide, the Redis PING per worker.
 * Returns 0 or -ENOMEM. */
GW_MUSTCHECK int gw_admin_respond(struct gw_worker *w, enum gw_admin_endpoint ep,
                                  struct gw_slice target, struct gw_buf *out, bool keep_alive,
                                  uint8_t http_minor, bool head_only, int *status);

/* Fills a snapshot of every worker's counters and the process gauges. */
void gw_admin_snapshot(struct gw_server *srv, struct gw_stats_snapshot *s);

#endif
