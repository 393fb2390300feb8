/*
 * Dependency probes for /health and /metrics (SPEC.md §4), off the
 * request path: one prober thread connects to the backend and sends Redis
 * PING every GW_HEALTH_INTERVAL_MS, each with its own timeout, and
 * publishes the outcome in an atomic snapshot; workers load it (and note
 * their own upstream connect outcomes into it), so a silent backend or
 * Redis does not stall a worker and a probe storm costs neither a connect
 * nor a PING. Rounds run only while someone reads (GW_HEALTH_DEMAND_MS), so
 * an unmonitored gateway opens no connection of its own to the backend.
 */
#ifndef GW_HEALTH_H
#define GW_HEALTH_H

#include "gw/common.h"
#include "gw/config.h"
#include "gw/ratelimit.h"
#include "gw/resolve.h"

/* Start-to-start period of the probe rounds in milliseconds. A snapshot is
 * at most this plus one round's duration old: under SPEC.md §4's 1 s while
 * the probes answer within their timeouts (backend connect:
 * min(UPSTREAM_CONNECT_TIMEOUT_MS, 500); PING: REDIS_TIMEOUT_MS). */
#define GW_HEALTH_INTERVAL_MS 500

/* Rounds keep running this long (milliseconds) after the last read. */
#define GW_HEALTH_DEMAND_MS 30000

struct gw_health;

/* The published outcome of the last probe round. */
struct gw_health_snapshot {
    bool backend_up;              /* the newest TCP connect to the backend completed */
    enum gw_rl_store_state redis; /* DISABLED without REDIS_URL; else the PING */
    uint64_t probed_ms;           /* gw_now_ms() when the last round ended */
};

/* Creates the prober for the backend's name (gw/resolve.h; borrowed, must
 * outlive gw_health_stop: each round probes its current addresses in order
 * until one accepts, so a name without an address is down) and,
 * when cfg->redis_url is set, its own Redis connection through rl (a
 * gw_ratelimit_worker handle: the same connect, backoff and PING code as the
 * workers'; the connect blocks up to REDIS_TIMEOUT_MS), then starts the
 * prober thread (it inherits the caller's signal mask) idle: no round runs
 * before the first gw_health_read. cfg and rl are borrowed and must outlive
 * gw_health_stop. Returns 0 with *out set, or -ENOMEM / -errno of
 * pthread_create. Startup only. */
GW_MUSTCHECK int gw_health_start(struct gw_health **out, const struct gw_config *cfg,
                                 struct gw_resolve_name *backend, struct gw_ratelimit *rl);

/* Stops the prober thread (waking it from its wait; a round in progress
 * finishes first, bounded by its timeouts), closes its connection and
 * frees h. NULL is a no-op. Call from the thread that started it, before
 * destroying rl. */
void gw_health_stop(struct gw_health *h);

/* Notes the outcome of a worker's own TCP connect to the backend (up: it
 * completed; !up: refused, unreachable or failed), so /health follows
 * real traffic between probe rounds; the newest observation wins over an
 * older probe. One compare-and-swap, no I/O. Thread-safe (any worker). */
void gw_health_note_backend(struct gw_health *h, bool up);

/* Copies the snapshot into *out. Warm (a read within the last
 * GW_HEALTH_DEMAND_MS, so rounds are running): atomic loads only, never
 * blocks, no I/O. Cold (the first read, or the first after an idle
 * GW_HEALTH_DEMAND_MS): wakes the prober and waits for its round, at most
 * min(UPSTREAM_CONNECT_TIMEOUT_MS, 500) + 2 * REDIS_TIMEOUT_MS + 100 ms,
 * which is what one answer cost before the prober existed, now paid once
 * per idle period instead of once per second. Thread-safe (any thread,
 * concurrently with the prober). */
void gw_health_read(struct gw_health *h, struct gw_health_snapshot *out);

#endif
