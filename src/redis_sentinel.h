/*
 * Private to the Redis store: asking Redis Sentinel where the master is
 * (SPEC.md §12). One query walks the sentinels of REDIS_SENTINELS, starting
 * with the last one that answered, and asks each `SENTINEL
 * get-master-addr-by-name <REDIS_SENTINEL_MASTER>` over redis_conn.c's
 * transport (TLS and REDIS_SENTINEL_USERNAME/PASSWORD as configured), without
 * blocking: start, then poll until an answer or every sentinel failed. Also
 * the process-wide count of master changes (gateway_redis_failovers_total).
 * One thread uses a query object.
 */
#ifndef GW_REDIS_SENTINEL_H
#define GW_REDIS_SENTINEL_H

#include "redis_conn.h"

#include <stdint.h>

struct gw_redis_sentinel {
    const struct gw_redis_target *t; /* borrowed; t->sentinels is the list */
    int timeout_ms;                  /* bounds each sentinel's connect and reply */
    struct gw_redis_conn conn;       /* link to the sentinel being asked */
    int next;                        /* index of the sentinel to ask (the last good one) */
    int tried;                       /* sentinels tried in this query */
    bool active;                     /* a query is in progress */
    int npending;                    /* replies still expected from this sentinel */
    uint64_t deadline_ms;            /* this sentinel's attempt times out then */
    char host[256];                  /* the answer: master host ... */
    int port;                        /* ... and port */
    char err[300];                   /* why the last query failed, for logs */
};

/* Prepares s for target t (t->nsentinels > 0). Returns 0, -ENOMEM, or
 * -EINVAL with the reason in why (TLS settings). Safe to deinit after a
 * failure. */
GW_MUSTCHECK int gw_redis_sentinel_init(struct gw_redis_sentinel *s,
                                        const struct gw_redis_target *t, int timeout_ms, char *why,
                                        size_t why_len);

void gw_redis_sentinel_deinit(struct gw_redis_sentinel *s);

/* Starts a query at now_ms (gw_now_ms() or the caller's clock) and moves it
 * on as far as it can without waiting. Returns as gw_redis_sentinel_poll. */
GW_MUSTCHECK int gw_redis_sentinel_start(struct gw_redis_sentinel *s, uint64_t now_ms);

/* Moves the query on, waiting at most wait_ms in poll(2). Returns 0 with
 * s->host and s->port set to the master the sentinels name, -EINPROGRESS,
 * or -EHOSTUNREACH when no sentinel answered (s->err says why, for the
 * last one). -ENOTCONN when no query is in progress. */
GW_MUSTCHECK int gw_redis_sentinel_poll(struct gw_redis_sentinel *s, uint64_t now_ms, int wait_ms);

/* Drops a query in progress. */
void gw_redis_sentinel_cancel(struct gw_redis_sentinel *s);

/* Records that a connection of this process found host:port to be the
 * master; counts a failover when that differs from the master recorded
 * before (the first one counts nothing). Returns true when it changed.
 * Thread-safe. */
bool gw_redis_sentinel_note_master(const char *host, int port);

/* Redis Cluster: records host:port as a master the slot map names, with
 * gone true when the same map no longer names a master recorded before
 * (a replica took over). Counts a failover the first time any connection
 * of the process sees a new master while an old one is gone. Returns true
 * when it counted. Thread-safe. */
bool gw_redis_cluster_note_master(const char *host, int port, bool gone);

/* Master changes this process has seen (gateway_redis_failovers_total).
 * Thread-safe. */
uint64_t gw_redis_failovers_total(void);

#endif
