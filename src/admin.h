/*
 * The gateway's own endpoints (SPEC.md §4): /health, /stats, /metrics,
 * answered by the worker that received the request, never rate limited,
 * never counted against the in-flight cap. Worker thread only.
 */
#ifndef GW_ADMIN_H
#define GW_ADMIN_H

#include "runtime.h"

enum gw_admin_endpoint {
    GW_ADMIN_NONE = 0,
    GW_ADMIN_HEALTH,
    GW_ADMIN_STATS,
    GW_ADMIN_METRICS,
};

/* Which endpoint the request-target's path (query ignored) names, if any. */
enum gw_admin_endpoint gw_admin_match(const struct gw_config *cfg, struct gw_slice target);

/* Appends the complete response of endpoint ep to out (status line,
 * headers, body unless head_only) and sets *status. target is the raw
 * request-target (borrowed): for /health, the query "probe=live" selects
 * the liveness answer (200 while the process serves, no dependency probed;
 * for a Kubernetes livenessProbe), any other query the readiness answer
 * (200 only when the backend and, if configured, Redis answer; for a
 * readinessProbe and the container HEALTHCHECK). The dependency states come
 * from the prober's snapshot (gw/health.h, at most about 1 s old), never from
 * I/O here; Redis also reads disconnected while this worker's own connection
 * is down. /metrics uses the same snapshot for gateway_backend_up and
 * gateway_redis_up. Does not block while the gateway is monitored; the first
 * /health or /metrics after GW_HEALTH_DEMAND_MS without one waits for one
 * probe round (see gw_health_read). Returns 0 or -ENOMEM. Worker thread
 * only. */
GW_MUSTCHECK int gw_admin_respond(struct gw_worker *w, enum gw_admin_endpoint ep,
                                  struct gw_slice target, struct gw_buf *out, bool keep_alive,
                                  uint8_t http_minor, bool head_only, int *status);

/* Fills *s with the sum of every worker's counters and histograms, the
 * per-worker connection counts, and the process gauges (in-flight and
 * queue length with their configured maxima, uptime, worker threads,
 * whether Redis is configured). redis_up and backend_up are left false: they
 * need probes, which gw_admin_respond adds. Any thread (relaxed reads). */
void gw_admin_snapshot(struct gw_server *srv, struct gw_stats_snapshot *s);

#endif
