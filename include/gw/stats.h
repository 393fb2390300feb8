/*
 * Counters and the latency histogram. Every counter is declared once in
 * GW_STATS_COUNTERS (memcached THREAD_STATS_FIELDS); from that list come the
 * per-worker struct, the sum, the /stats JSON keys and the Prometheus lines.
 * Each worker increments its own struct without locks (relaxed atomics,
 * single writer); readers sum with relaxed loads.
 */
#ifndef GW_STATS_H
#define GW_STATS_H

#include "gw/buf.h"
#include "gw/common.h"

#include <stdatomic.h>

/* X(name, prometheus_result_label or NULL, help text).
 * /stats gets every counter under its own name. In /metrics, counters with a
 * result label form one family gateway_requests_total{result="<label>"};
 * the others are exported as gateway_<name>_total, with requests_total (the
 * received count, a different sum) renamed gateway_requests_received_total
 * because the family owns the gateway_requests_total name. The labels are
 * this fixed list, never a client-controlled value (bounded cardinality).
 * Every finished request is counted under exactly one of proxied,
 * rate_limited, rejected_queue, rejected_store, failed_upstream, closed,
 * bad_request (a response cut off by the upstream is failed_upstream); a dry-run hit
 * is counted under rate_limited_dry_run AND under its eventual outcome
 * (proxied or failed_upstream), so a sum over result must exclude
 * result="rate_limited_dry_run". requests_total also counts requests to the
 * gateway's own endpoints (/health, /stats, /metrics), which have no result. */
#define GW_STATS_COUNTERS(X)                                                                       \
    X(requests_total, NULL, "Requests received from clients, any outcome")                         \
    X(requests_proxied, "proxied", "Requests answered by the upstream")                            \
    X(requests_rate_limited, "rate_limited", "Requests refused with 429")                          \
    X(requests_rate_limited_dry_run, "rate_limited_dry_run",                                       \
      "Requests over the limit let through by dry run (also counted under their outcome)")         \
    X(requests_rejected_queue, "rejected_queue", "Requests refused with 503 by the in-flight cap") \
    X(requests_rejected_store, "rejected_store",                                                   \
      "Requests refused with 503 because the rate-limit store failed (failure mode closed)")       \
    X(requests_failed_upstream, "failed_upstream", "Requests answered 502 or 504")                 \
    X(requests_closed, "closed",                                                                   \
      "Requests whose connection closed before their response was complete (client gone, forced "  \
      "shutdown)")                                                                                 \
    X(requests_bad, "bad_request", "Gateway-generated 4xx other than 429")                         \
    X(requests_delayed, NULL,                                                                      \
      "Requests held by token-bucket shaping (delay) before going on; /stats also as delayed")     \
    X(redis_errors, NULL,                                                                          \
      "Rate-limit checks the store did not answer (failed, or skipped while it was down)")         \
    X(upstream_connections_opened, NULL,                                                           \
      "Connections opened to the upstream (a pool that is too small shows as a high rate)")        \
    X(connections_rejected, NULL, "Client connections closed at accept by MAX_CONNECTIONS")        \
    X(connections_rejected_per_client, NULL,                                                       \
      "Client connections closed at accept by MAX_CONNECTIONS_PER_CLIENT")                         \
    X(tunnels, NULL, "Upgrade tunnels opened (101 Switching Protocols relayed)")

/* Most workers a snapshot reports one by one (WORKER_THREADS' maximum). */
#define GW_STATS_MAX_WORKERS 256

/* Latency histogram bucket upper bounds in seconds (Prometheus le). */
#define GW_STATS_LATENCY_BUCKETS                                                                   \
    {                                                                                              \
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0 \
    }
#define GW_STATS_LATENCY_NBUCKETS 15

struct gw_histogram {
    _Atomic uint64_t buckets[GW_STATS_LATENCY_NBUCKETS + 1]; /* last = +Inf, not cumulative */
    _Atomic uint64_t count;                                  /* observations */
    _Atomic uint64_t sum_us;                                 /* sum in microseconds */
};

/* One worker's counters; written only by that worker. */
struct gw_stats_worker {
#define GW_STATS_FIELD(name, label, help) _Atomic uint64_t name;
    GW_STATS_COUNTERS(GW_STATS_FIELD)
#undef GW_STATS_FIELD
    _Atomic int64_t connections_active;   /* client connections this worker holds */
    _Atomic int64_t tunnels_active;       /* upgrade tunnels this worker relays */
    struct gw_histogram request_latency;  /* proxied requests, start to response end */
    struct gw_histogram upstream_latency; /* upstream connect+send to response end */
    struct gw_histogram queue_wait;       /* time spent waiting for an in-flight slot */
    struct gw_histogram ratelimit_delay;  /* time held by token-bucket shaping */
};

/* Adds 1 to one counter of a worker's struct (owner thread only). */
#define GW_STAT_INC(s, name) atomic_fetch_add_explicit(&(s)->name, 1, memory_order_relaxed)

/* Records one observation of us microseconds: bucket i counts values with
 * us <= bound_i (Prometheus le, inclusive), the last bucket the rest.
 * Owner thread only (relaxed atomics, readers may run concurrently). */
void gw_histogram_observe(struct gw_histogram *h, uint64_t us);

/* A summed, plain copy of every worker's counters plus process gauges. */
struct gw_stats_snapshot {
#define GW_STATS_FIELD(name, label, help) uint64_t name;
    GW_STATS_COUNTERS(GW_STATS_FIELD)
#undef GW_STATS_FIELD
    int64_t connections_active;
    int64_t tunnels_active; /* upgrade tunnels open, all workers */
    uint64_t latency_buckets[GW_STATS_LATENCY_NBUCKETS + 1];
    uint64_t latency_count;
    uint64_t latency_sum_us;
    uint64_t upstream_buckets[GW_STATS_LATENCY_NBUCKETS + 1];
    uint64_t upstream_count;
    uint64_t upstream_sum_us;
    uint64_t queue_buckets[GW_STATS_LATENCY_NBUCKETS + 1];
    uint64_t queue_count;
    uint64_t queue_sum_us;
    uint64_t delay_buckets[GW_STATS_LATENCY_NBUCKETS + 1];
    uint64_t delay_count;
    uint64_t delay_sum_us;
    /* gauges filled by the caller */
    uint64_t in_flight;
    uint64_t queue_length;
    int64_t uptime_s;
    int worker_threads;
    bool redis_up; /* meaningful when redis_enabled */
    bool redis_enabled;
    bool redis_sentinel;            /* REDIS_SENTINELS: redis_failovers is meaningful */
    uint64_t redis_failovers;       /* master changes seen (gw_redis_failovers_total) */
    bool redis_cluster;             /* REDIS_CLUSTER_NODES: redis_redirects_* are meaningful */
    uint64_t redis_redirects_moved; /* -MOVED followed (gw_redis_redirects_total(false)) */
    uint64_t redis_redirects_ask;   /* -ASK followed (gw_redis_redirects_total(true)) */
    bool backend_up;
    uint64_t in_flight_max;                           /* MAX_CONCURRENT_REQUESTS */
    uint64_t queue_length_max;                        /* MAX_QUEUE_LENGTH */
    int64_t worker_connections[GW_STATS_MAX_WORKERS]; /* per worker, first worker_threads used */
    /* The rules in force (SPEC.md §10), filled by the caller; rendered only
     * when rules_version is not empty. */
    char rules_version[16];         /* 12 hex digits of the rules' version */
    const char *rules_source;       /* "env", "file" (a static string) */
    uint64_t rules_reloads_success; /* gateway_rules_reloads_total{result="success"} */
    uint64_t rules_reloads_failure; /* gateway_rules_reloads_total{result="failure"} */
    /* Decisions per limit (SPEC.md §10), filled by the caller: limits
     * points to nlimits entries it owns (may be NULL when 0); /stats gets
     * "limits" and /metrics gateway_ratelimit_decisions_total only when
     * nlimits > 0. */
    const struct gw_stats_limit *limits;
    size_t nlimits;
};

/* One limit's decisions since start: /stats "limits" and
 * gateway_ratelimit_decisions_total{limit,decision}. */
struct gw_stats_limit {
    char name[65];           /* the limit's name ([A-Za-z0-9_.-]{1,64}) */
    uint64_t allowed;        /* decision="allowed" */
    uint64_t limited;        /* decision="limited" */
    uint64_t shadow_limited; /* decision="shadow_limited" */
    uint64_t delayed;        /* decision="delayed" */
};

/* Sums n workers' structs into *out: counters, connections_active,
 * histograms, and worker_connections[i] for the first
 * min(n, GW_STATS_MAX_WORKERS) workers. *out is overwritten entirely, so
 * fill the other gauges (in_flight, uptime_s, worker_threads, redis/backend
 * flags...) after the call. Each histogram's count is taken as the sum of
 * its buckets so that +Inf bucket and _count always agree. workers[] is
 * borrowed. Thread-safe against concurrent writers (relaxed loads; each
 * value is exact at some instant). */
void gw_stats_sum(struct gw_stats_worker *const *workers, size_t n, struct gw_stats_snapshot *out);

/* Adds one worker's counters, connections and histograms into *out (which
 * the caller zeroed first), recording its connections as
 * worker_connections[index] when index < GW_STATS_MAX_WORKERS. For callers
 * that hold no array of workers; gw_stats_sum is this in a loop. Same
 * thread-safety as gw_stats_sum. */
void gw_stats_add_worker(struct gw_stats_snapshot *out, size_t index, struct gw_stats_worker *w);

/* Estimates the q-quantile (0 < q < 1, clamped to [0, 1]) in milliseconds
 * from a histogram by linear interpolation within the bucket that holds rank
 * q*count (as Prometheus histogram_quantile does); the first bucket's lower
 * bound is 0 and a rank in the +Inf bucket reports the last finite bound.
 * 0 when count is 0. Pure function. */
double gw_stats_quantile_ms(const uint64_t buckets[GW_STATS_LATENCY_NBUCKETS + 1], uint64_t count,
                            double q);

/* Appends the /stats JSON object (SPEC.md §4), compact, no trailing
 * newline, built with jansson: every GW_STATS_COUNTERS name in list order,
 * then in_flight, queue_length, connections_active, uptime_seconds,
 * worker_threads, redis ("connected"/"disconnected"/"disabled"),
 * worker_connections (array of worker_threads integers), latency_ms
 * {p50, p90, p99} of proxied requests (milliseconds, rounded to 1 us), and
 * rules_version and rules_source when rules_version is set.
 * Returns 0 or -ENOMEM (out may then hold a partial object). Thread-safe
 * as long as out belongs to the caller. */
GW_MUSTCHECK int gw_stats_render_json(const struct gw_stats_snapshot *s, struct gw_buf *out);

/* Appends the Prometheus text exposition (format 0.0.4) of the snapshot,
 * names prefixed gateway_, HELP/TYPE lines generated from the X-macro list
 * (naming rules above), then the gauges gateway_in_flight, _in_flight_max,
 * _queue_length, _queue_length_max, _connections_active, _redis_up (only
 * when Redis is configured), the counter gateway_redis_failovers_total (only
 * with Sentinel), gateway_redis_redirects_total{type="moved"|"ask"} (only
 * with Cluster),
 * _backend_up, _worker_threads, _uptime_seconds, gateway_build_info{version},
 * when rules_version is set gateway_rules_info{version,source} (always 1)
 * and gateway_rules_reloads_total{result="success"|"failure"}, and the
 * histograms gateway_request_duration_seconds,
 * gateway_upstream_duration_seconds, gateway_queue_wait_seconds and
 * gateway_ratelimit_delay_seconds.
 * Numbers are formatted without floating point, so the output does not
 * depend on the C locale. version (borrowed, may be NULL = "unknown") is
 * escaped as a label value. Returns 0 or -ENOMEM. Thread-safe as long as
 * out belongs to the caller. */
GW_MUSTCHECK int gw_stats_render_prometheus(const struct gw_stats_snapshot *s, const char *version,
                                            struct gw_buf *out);

#endif
