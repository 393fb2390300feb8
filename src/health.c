/*
 * The dependency prober behind /health and /metrics (see gw/health.h): one
 * thread that runs a probe round every GW_HEALTH_INTERVAL_MS while someone
 * asks (a read in the last GW_HEALTH_DEMAND_MS) and sleeps otherwise, so an
 * unmonitored gateway opens no connection of its own to the backend. The
 * workers' own upstream connects update the backend state between rounds.
 *
 * Locking: mu guards stop and is held by the prober only while it sleeps
 * and by a cold reader while it waits for a round; wake (prober) and done
 * (readers) are its condition variables. The snapshot lives in atomics:
 * redis_state and probed_ms are written by the prober alone (release), the
 * backend word by the prober and by workers (compare and swap, the newest
 * observation wins), wanted_ms by readers; readers load them (acquire).
 * They are independent values: a reader may see one round's backend with
 * the next round's Redis, never a torn value.
 */
#include "gw/health.h"

#include "gw/net.h"
#include "gw/resolve.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Longest a backend connect probe waits for the handshake. */
#define BACKEND_PROBE_MAX_MS 500

struct gw_health {
    const struct gw_config *cfg;       /* borrowed */
    struct gw_resolve_name *backend;   /* probed name (its current addresses) */
    struct gw_ratelimit_worker *redis; /* own Redis connection, NULL without REDIS_URL */
    pthread_t thread;                  /* the prober */
    pthread_mutex_t mu;                /* guards stop; the condition variables' mutex */
    pthread_cond_t wake;               /* prober: a cold reader or gw_health_stop */
    pthread_cond_t done;               /* readers: a round ended */
    bool stop;                         /* leave the loop (under mu) */
    _Atomic uint64_t backend_seen;     /* snapshot: (stamp_ms << 1) | up, newest wins */
    _Atomic int redis_state;           /* snapshot: enum gw_rl_store_state */
    _Atomic uint64_t probed_ms;        /* snapshot: end of the last round, 0 = none yet */
    _Atomic uint64_t wanted_ms;        /* last read, 0 = never */
};

/* Publishes a backend state observed at stamp_ms unless a newer one is
 * there already (or as new, when !replace_equal). */
static void publish_backend(struct gw_health *h, uint64_t stamp_ms, bool up, bool replace_equal)
{
    uint64_t want = stamp_ms << 1 | (up ? 1u : 0u);
    uint64_t old = atomic_load_explicit(&h->backend_seen, memory_order_relaxed);
    while ((old >> 1) < stamp_ms || (replace_equal && (old >> 1) == stamp_ms))
        if (atomic_compare_exchange_weak_explicit(&h->backend_seen, &old, want,
                                                  memory_order_release, memory_order_relaxed))
            return;
}

/* A connect to the backend's addresses in order until one accepts; none
 * (or a name without an address yet) is down and asks for a new lookup. */
static bool probe_backend(struct gw_health *h, int timeout)
{
    struct gw_resolve_addrs a;
    gw_resolve_read(h->backend, &a);
    for (unsigned i = 0; i < a.count; i++)
        if (gw_net_probe(&a.addr[i], a.len[i], timeout))
            return true;
    gw_resolve_kick(h->backend);
    return false;
}

/* One probe round: a connect to the backend, then PING; publishes both. */
static void probe_round(struct gw_health *h)
{
    int timeout = GW_MIN(h->cfg->upstream_connect_timeout_ms, BACKEND_PROBE_MAX_MS);
    uint64_t started = gw_now_ms();
    bool up = probe_backend(h, timeout);
    /* A worker's connect outcome noted while this probe ran is as fresh
     * and stays. */
    publish_backend(h, started, up, false);
    enum gw_rl_store_state rs =
        h->redis != NULL ? gw_ratelimit_worker_ping(h->redis) : GW_RL_STORE_DISABLED;
    atomic_store_explicit(&h->redis_state, (int)rs, memory_order_release);
    atomic_store_explicit(&h->probed_ms, gw_now_ms(), memory_order_release);
}

/* The instant due_ms (gw_now_ms scale) as a CLOCK_REALTIME timespec, the
 * clock of the condition variables. (A monotonic condattr would be immune
 * to clock steps, but ThreadSanitizer, as shipped with gcc 12, does not see
 * the mutex released inside such a wait and reports a double lock; a step
 * of the wall clock here only makes one 500 ms round early or late.) */
static struct timespec deadline_of(uint64_t due_ms)
{
    uint64_t now = gw_now_ms();
    uint64_t wait = due_ms > now ? due_ms - now : 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)(wait / 1000);
    ts.tv_nsec += (long)(wait % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static bool in_demand(struct gw_health *h, uint64_t now)
{
    uint64_t wanted = atomic_load_explicit(&h->wanted_ms, memory_order_acquire);
    return wanted != 0 && now - GW_MIN(wanted, now) < GW_HEALTH_DEMAND_MS;
}

static void *prober_main(void *arg)
{
    struct gw_health *h = arg;
    uint64_t next_round = 0;
    pthread_mutex_lock(&h->mu);
    while (!h->stop) {
        uint64_t now = gw_now_ms();
        bool active = in_demand(h, now);
        if (active && now >= next_round) {
            next_round = now + GW_HEALTH_INTERVAL_MS;
            pthread_mutex_unlock(&h->mu);
            probe_round(h);
            pthread_mutex_lock(&h->mu);
            pthread_cond_broadcast(&h->done);
            continue;
        }
        /* Sleep until the next round (in demand) or until a cold reader
         * wakes us (idle: the bound only keeps the Redis upkeep going). */
        uint64_t due = active ? next_round : now + GW_HEALTH_DEMAND_MS;
        /* A Redis connection that went down is reconnected in steps, by
         * the same upkeep the workers run (non-blocking, with backoff). */
        if (h->redis != NULL)
            due = GW_MIN(due, now + gw_ratelimit_worker_tick(h->redis, now));
        struct timespec ts = deadline_of(due);
        pthread_cond_timedwait(&h->wake, &h->mu, &ts);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

int gw_health_start(struct gw_health **out, const struct gw_config *cfg,
                    struct gw_resolve_name *backend, struct gw_ratelimit *rl)
{
    struct gw_health *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return -ENOMEM;
    h->cfg = cfg;
    h->backend = backend;
    int rc = -ENOMEM;
    if (gw_config_redis_enabled(cfg) && gw_ratelimit_worker_create(&h->redis, rl) != 0)
        goto fail_alloc;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    rc = -pthread_cond_init(&h->wake, &ca);
    if (rc != 0)
        goto fail_attr;
    rc = -pthread_cond_init(&h->done, &ca);
    if (rc != 0)
        goto fail_wake;
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&h->mu, NULL);
    rc = -pthread_create(&h->thread, NULL, prober_main, h);
    if (rc != 0)
        goto fail_sync;
    *out = h;
    return 0;

fail_sync:
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->done);
fail_wake:
    pthread_cond_destroy(&h->wake);
fail_attr:
    pthread_condattr_destroy(&ca);
    gw_ratelimit_worker_destroy(h->redis);
fail_alloc:
    free(h);
    return rc;
}

void gw_health_stop(struct gw_health *h)
{
    if (h == NULL)
        return;
    pthread_mutex_lock(&h->mu);
    h->stop = true;
    pthread_cond_signal(&h->wake);
    pthread_mutex_unlock(&h->mu);
    pthread_join(h->thread, NULL);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->wake);
    pthread_cond_destroy(&h->done);
    gw_ratelimit_worker_destroy(h->redis);
    free(h);
}

void gw_health_note_backend(struct gw_health *h, bool up)
{
    publish_backend(h, gw_now_ms(), up, true);
}

void gw_health_read(struct gw_health *h, struct gw_health_snapshot *out)
{
    uint64_t now = gw_now_ms();
    uint64_t before = atomic_exchange_explicit(&h->wanted_ms, now, memory_order_acq_rel);
    bool warm = atomic_load_explicit(&h->probed_ms, memory_order_acquire) != 0 && before != 0 &&
                now - GW_MIN(before, now) < GW_HEALTH_DEMAND_MS;
    if (!warm) {
        /* Cold: nobody asked lately, so no round ran; wake the prober and
         * wait for a round that ends after now, as long as one may take. */
        uint64_t bound =
            now + (uint64_t)GW_MIN(h->cfg->upstream_connect_timeout_ms, BACKEND_PROBE_MAX_MS) +
            (h->redis != NULL ? (uint64_t)h->cfg->redis_timeout_ms * 2 : 0) + 100;
        struct timespec ts = deadline_of(bound);
        pthread_mutex_lock(&h->mu);
        pthread_cond_signal(&h->wake);
        while (atomic_load_explicit(&h->probed_ms, memory_order_acquire) < now &&
               pthread_cond_timedwait(&h->done, &h->mu, &ts) != ETIMEDOUT)
            ;
        pthread_mutex_unlock(&h->mu);
    }
    out->backend_up = (atomic_load_explicit(&h->backend_seen, memory_order_acquire) & 1u) != 0;
    out->redis =
        (enum gw_rl_store_state)atomic_load_explicit(&h->redis_state, memory_order_acquire);
    out->probed_ms = atomic_load_explicit(&h->probed_ms, memory_order_acquire);
}
