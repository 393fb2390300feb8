/*
 * Counters and latency histograms (gw/stats.h): the per-worker histogram
 * update, the lock-free sum of every worker, quantile estimation, and the
 * two renderings of a snapshot: /stats JSON (jansson) and /metrics in the
 * Prometheus text format 0.0.4. Counter names, JSON keys and HELP/TYPE lines
 * all come from the GW_STATS_COUNTERS X-macro list, never from a hand list.
 */
#include "gw/stats.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Bucket upper bounds in seconds, as declared in the header. */
static const double bounds_s[] = GW_STATS_LATENCY_BUCKETS;
_Static_assert(GW_ARRAY_LEN(bounds_s) == GW_STATS_LATENCY_NBUCKETS,
               "GW_STATS_LATENCY_NBUCKETS must match GW_STATS_LATENCY_BUCKETS");

/* Upper bound of finite bucket i in whole microseconds. Rounded, because
 * e.g. 0.0005 * 1e6 is not exactly 500 in binary floating point; the
 * compiler folds this for constant i. */
static uint64_t bound_us(size_t i)
{
    return (uint64_t)(bounds_s[i] * 1e6 + 0.5);
}

void gw_histogram_observe(struct gw_histogram *h, uint64_t us)
{
    size_t i = 0;
    while (i < GW_STATS_LATENCY_NBUCKETS && us > bound_us(i))
        i++;
    /* Single writer: relaxed adds are enough, readers tolerate skew. */
    atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
}

/* Adds one worker's histogram into a snapshot's plain arrays. */
static void add_histogram(uint64_t buckets[GW_STATS_LATENCY_NBUCKETS + 1], uint64_t *count,
                          uint64_t *sum_us, struct gw_histogram *h)
{
    for (size_t i = 0; i <= GW_STATS_LATENCY_NBUCKETS; i++) {
        uint64_t v = atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        buckets[i] += v;
        /* The count is derived from the buckets read here, not from
         * h->count, so that the +Inf bucket always equals _count even while
         * the worker is in the middle of an observation. */
        *count += v;
    }
    *sum_us += atomic_load_explicit(&h->sum_us, memory_order_relaxed);
}

void gw_stats_add_worker(struct gw_stats_snapshot *out, size_t index, struct gw_stats_worker *w)
{
#define GW_STATS_SUM(name, label, help)                                                            \
    out->name += atomic_load_explicit(&w->name, memory_order_relaxed);
    GW_STATS_COUNTERS(GW_STATS_SUM)
#undef GW_STATS_SUM
    int64_t conns = atomic_load_explicit(&w->connections_active, memory_order_relaxed);
    out->connections_active += conns;
    out->tunnels_active += atomic_load_explicit(&w->tunnels_active, memory_order_relaxed);
    if (index < GW_ARRAY_LEN(out->worker_connections))
        out->worker_connections[index] = conns;
    add_histogram(out->latency_buckets, &out->latency_count, &out->latency_sum_us,
                  &w->request_latency);
    add_histogram(out->upstream_buckets, &out->upstream_count, &out->upstream_sum_us,
                  &w->upstream_latency);
    add_histogram(out->queue_buckets, &out->queue_count, &out->queue_sum_us, &w->queue_wait);
    add_histogram(out->delay_buckets, &out->delay_count, &out->delay_sum_us, &w->ratelimit_delay);
}

void gw_stats_sum(struct gw_stats_worker *const *workers, size_t n, struct gw_stats_snapshot *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < n; i++)
        gw_stats_add_worker(out, i, workers[i]);
}

double gw_stats_quantile_ms(const uint64_t buckets[GW_STATS_LATENCY_NBUCKETS + 1], uint64_t count,
                            double q)
{
    if (count == 0)
        return 0.0;
    if (!(q > 0.0))
        q = 0.0; /* also catches NaN */
    if (q > 1.0)
        q = 1.0;
    double rank = q * (double)count;
    uint64_t below = 0; /* observations in the buckets before i */
    for (size_t i = 0; i <= GW_STATS_LATENCY_NBUCKETS; i++) {
        uint64_t in = buckets[i];
        /* Empty buckets cannot hold the rank (this also skips leading
         * empties when q == 0). */
        if (in == 0 || (double)(below + in) < rank) {
            below += in;
            continue;
        }
        if (i == GW_STATS_LATENCY_NBUCKETS) /* +Inf: no upper bound to interpolate to */
            break;
        double lo = i == 0 ? 0.0 : (double)bound_us(i - 1) / 1000.0;
        double hi = (double)bound_us(i) / 1000.0;
        return lo + (hi - lo) * ((rank - (double)below) / (double)in);
    }
    /* Rank in the +Inf bucket, or count larger than the buckets hold. */
    return (double)bound_us(GW_STATS_LATENCY_NBUCKETS - 1) / 1000.0;
}

/* ---- /stats JSON ---------------------------------------------------- */

/* jansson integers are signed 64-bit: saturate rather than wrap. */
static json_t *json_u64(uint64_t v)
{
    return json_integer(v > (uint64_t)LLONG_MAX ? LLONG_MAX : (json_int_t)v);
}

/* Rounded to a microsecond, so the text stays short (4.95, not
 * 4.9500000000000002). */
static json_t *json_ms(double ms)
{
    return json_real(round(ms * 1000.0) / 1000.0);
}

/* json_object_set_new steals v even on failure and fails on v == NULL, so
 * an allocation failure anywhere is caught by the return value alone. */
static bool put(json_t *obj, const char *key, json_t *v)
{
    return json_object_set_new(obj, key, v) == 0;
}

static int dump_to_buf(const char *buffer, size_t size, void *data)
{
    return gw_buf_append(data, buffer, size) == 0 ? 0 : -1;
}

static const char *redis_state(const struct gw_stats_snapshot *s)
{
    if (!s->redis_enabled)
        return "disabled";
    return s->redis_up ? "connected" : "disconnected";
}

int gw_stats_render_json(const struct gw_stats_snapshot *s, struct gw_buf *out)
{
    json_t *root = json_object();
    json_t *conns = json_array();
    json_t *lat = json_object();
    bool ok = root && conns && lat;

#define GW_STATS_JSON(name, label, help) ok = ok && put(root, #name, json_u64(s->name));
    GW_STATS_COUNTERS(GW_STATS_JSON)
#undef GW_STATS_JSON
    ok = ok && put(root, "delayed", json_u64(s->requests_delayed));
    ok = ok && put(root, "in_flight", json_u64(s->in_flight));
    ok = ok && put(root, "queue_length", json_u64(s->queue_length));
    ok = ok && put(root, "connections_active", json_integer(s->connections_active));
    ok = ok && put(root, "tunnels_active", json_integer(s->tunnels_active));
    ok = ok && put(root, "uptime_seconds", json_integer(s->uptime_s));
    ok = ok && put(root, "worker_threads", json_integer(s->worker_threads));
    ok = ok && put(root, "redis", json_string(redis_state(s)));
    if (s->rules_version[0] != '\0') {
        ok = ok && put(root, "rules_version", json_string(s->rules_version));
        ok = ok && put(root, "rules_source", json_string(s->rules_source ? s->rules_source : ""));
    }
    json_t *limits = s->nlimits > 0 ? json_object() : NULL;
    for (size_t i = 0; ok && limits != NULL && i < s->nlimits; i++) {
        const struct gw_stats_limit *l = &s->limits[i];
        json_t *o = json_pack("{s:I, s:I, s:I, s:I}", "allowed", (json_int_t)l->allowed, "limited",
                              (json_int_t)l->limited, "shadow_limited",
                              (json_int_t)l->shadow_limited, "delayed", (json_int_t)l->delayed);
        ok = o != NULL && json_object_set_new(limits, l->name, o) == 0;
    }
    if (limits != NULL)
        ok = ok && put(root, "limits", limits);

    int nworkers = GW_MIN(GW_MAX(s->worker_threads, 0), (int)GW_ARRAY_LEN(s->worker_connections));
    for (int i = 0; ok && i < nworkers; i++)
        ok = json_array_append_new(conns, json_integer(s->worker_connections[i])) == 0;

    static const struct {
        const char *key;
        double q;
    } quantiles[] = {{"p50", 0.50}, {"p90", 0.90}, {"p99", 0.99}};
    for (size_t i = 0; ok && i < GW_ARRAY_LEN(quantiles); i++)
        ok = put(
            lat, quantiles[i].key,
            json_ms(gw_stats_quantile_ms(s->latency_buckets, s->latency_count, quantiles[i].q)));

    /* The object takes over conns and lat from here on, even on failure. */
    if (ok) {
        ok = put(root, "worker_connections", conns);
        conns = NULL;
        ok = put(root, "latency_ms", lat) && ok;
        lat = NULL;
    }
    if (ok)
        ok = json_dump_callback(root, dump_to_buf, out, JSON_COMPACT | JSON_REAL_PRECISION(9)) == 0;
    json_decref(lat);
    json_decref(conns);
    json_decref(root);
    return ok ? 0 : -ENOMEM;
}

/* ---- /metrics, Prometheus text format 0.0.4 -------------------------- */

/* Output state: the first error sticks and later writes are skipped, so
 * the renderer checks once at the end. */
struct prom {
    struct gw_buf *out;
    int rc;
};

static void emit(struct prom *p, const char *fmt, ...) GW_PRINTF(2, 3);

static void emit(struct prom *p, const char *fmt, ...)
{
    if (p->rc)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        p->rc = -EINVAL;
        return;
    }
    /* +1: vsnprintf writes a NUL, which is not committed. */
    p->rc = gw_buf_reserve(p->out, (size_t)n + 1);
    if (p->rc)
        return;
    va_start(ap, fmt);
    vsnprintf(p->out->data + p->out->end, (size_t)n + 1, fmt, ap);
    va_end(ap);
    gw_buf_commit(p->out, (size_t)n);
}

/* Writes s escaped for a HELP text (\\ and \n) or, with in_label, for a
 * quoted label value (also \"). */
static void emit_escaped(struct prom *p, const char *s, bool in_label)
{
    for (; *s; s++) {
        if (*s == '\\')
            emit(p, "\\\\");
        else if (*s == '\n')
            emit(p, "\\n");
        else if (in_label && *s == '"')
            emit(p, "\\\"");
        else
            emit(p, "%c", *s);
    }
}

static void emit_header(struct prom *p, const char *family, const char *type, const char *help)
{
    emit(p, "# HELP %s ", family);
    emit_escaped(p, help, false);
    emit(p, "\n# TYPE %s %s\n", family, type);
}

/* A counter family with two labelled series, e.g. {type="moved"} and
 * {type="ask"} (labels given rendered: name="value"). */
static void emit_counter_pair(struct prom *p, const char *family, const char *help,
                              const char *label_a, uint64_t a, const char *label_b, uint64_t b)
{
    emit_header(p, family, "counter", help);
    emit(p, "%s{%s} %" PRIu64 "\n%s{%s} %" PRIu64 "\n", family, label_a, a, family, label_b, b);
}

/* Formats us microseconds as decimal seconds with integer arithmetic only
 * (exact, and independent of LC_NUMERIC): 500 -> "0.0005", 10000000 -> "10". */
static const char *fmt_seconds(uint64_t us, char buf[32])
{
    uint64_t whole = us / 1000000u, frac = us % 1000000u;
    if (frac == 0) {
        snprintf(buf, 32, "%" PRIu64, whole);
        return buf;
    }
    int digits = 6;
    while (frac % 10 == 0) {
        frac /= 10;
        digits--;
    }
    snprintf(buf, 32, "%" PRIu64 ".%0*" PRIu64, whole, digits, frac);
    return buf;
}

/* One unlabelled counter as its own family gateway_<name>_total; does
 * nothing for a counter with a result label (those form the family). */
static void emit_counter(struct prom *p, const char *name, const char *label, const char *help,
                         uint64_t v)
{
    if (label)
        return;
    /* requests_total counts every request received; the
     * gateway_requests_total name belongs to the by-result family, and
     * exporting both under one name would double-count any sum. */
    const char *base = strcmp(name, "requests_total") == 0 ? "requests_received_total" : name;
    size_t len = strlen(base);
    bool has_suffix = len >= 6 && strcmp(base + len - 6, "_total") == 0;
    char family[128];
    snprintf(family, sizeof(family), "gateway_%s%s", base, has_suffix ? "" : "_total");
    emit_header(p, family, "counter", help);
    emit(p, "%s %" PRIu64 "\n", family, v);
}

/* One "<result>=<help>" part of the family's HELP line (labelled only). */
static void emit_result_help(struct prom *p, const char **sep, const char *label, const char *help)
{
    if (!label)
        return;
    emit(p, "%s", *sep);
    emit_escaped(p, label, false);
    emit(p, "=");
    emit_escaped(p, help, false);
    *sep = "; ";
}

/* One sample of the by-result family (labelled counters only). */
static void emit_result(struct prom *p, const char *label, uint64_t v)
{
    if (!label)
        return;
    emit(p, "gateway_requests_total{result=\"");
    emit_escaped(p, label, true);
    emit(p, "\"} %" PRIu64 "\n", v);
}

static void emit_gauge(struct prom *p, const char *name, const char *help, int64_t v)
{
    emit_header(p, name, "gauge", help);
    emit(p, "%s %" PRId64 "\n", name, v);
}

static void emit_histogram(struct prom *p, const char *name, const char *help,
                           const uint64_t buckets[GW_STATS_LATENCY_NBUCKETS + 1], uint64_t count,
                           uint64_t sum_us)
{
    char num[32];
    uint64_t cumulative = 0;
    emit_header(p, name, "histogram", help);
    for (size_t i = 0; i < GW_STATS_LATENCY_NBUCKETS; i++) {
        cumulative += buckets[i];
        emit(p, "%s_bucket{le=\"%s\"} %" PRIu64 "\n", name, fmt_seconds(bound_us(i), num),
             cumulative);
    }
    cumulative += buckets[GW_STATS_LATENCY_NBUCKETS];
    emit(p, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, cumulative);
    emit(p, "%s_sum %s\n", name, fmt_seconds(sum_us, num));
    emit(p, "%s_count %" PRIu64 "\n", name, count);
}

int gw_stats_render_prometheus(const struct gw_stats_snapshot *s, const char *version,
                               struct gw_buf *out)
{
    struct prom p = {.out = out, .rc = 0};

    /* Unlabelled counters, each its own family. */
#define GW_STATS_PROM_PLAIN(name, label, help) emit_counter(&p, #name, label, help, s->name);
    GW_STATS_COUNTERS(GW_STATS_PROM_PLAIN)
#undef GW_STATS_PROM_PLAIN

    /* The by-result family: one HELP line made of every result's help
     * text, then one sample per labelled counter. */
    const char *sep = " ";
    emit(&p, "# HELP gateway_requests_total Finished requests by result:");
#define GW_STATS_PROM_HELP(name, label, help) emit_result_help(&p, &sep, label, help);
    GW_STATS_COUNTERS(GW_STATS_PROM_HELP)
#undef GW_STATS_PROM_HELP
    emit(&p, "\n# TYPE gateway_requests_total counter\n");
#define GW_STATS_PROM_LABELLED(name, label, help) emit_result(&p, label, s->name);
    GW_STATS_COUNTERS(GW_STATS_PROM_LABELLED)
#undef GW_STATS_PROM_LABELLED

    emit_gauge(&p, "gateway_in_flight", "Upstream requests holding an in-flight slot",
               (int64_t)s->in_flight);
    emit_gauge(&p, "gateway_in_flight_max", "The in-flight cap, MAX_CONCURRENT_REQUESTS",
               (int64_t)s->in_flight_max);
    emit_gauge(&p, "gateway_queue_length", "Requests waiting for an in-flight slot",
               (int64_t)s->queue_length);
    emit_gauge(&p, "gateway_queue_length_max", "The wait queue's capacity, MAX_QUEUE_LENGTH",
               (int64_t)s->queue_length_max);
    emit_gauge(&p, "gateway_connections_active", "Client connections open", s->connections_active);
    emit_gauge(&p, "gateway_tunnels_active", "Upgrade tunnels open (WebSocket and other protocols)",
               s->tunnels_active);
    if (s->redis_enabled)
        emit_gauge(&p, "gateway_redis_up", "1 when the Redis rate-limit store answers, else 0",
                   s->redis_up ? 1 : 0);
    if (s->redis_sentinel || s->redis_cluster) {
        emit_counter(&p, "redis_failovers_total", NULL,
                     "Redis master changes seen (Sentinel naming a new master, or a Cluster "
                     "replica taking over a master's slots)",
                     s->redis_failovers);
    }
    if (s->redis_cluster)
        emit_counter_pair(&p, "gateway_redis_redirects_total",
                          "Redis Cluster redirects followed by type: moved (the slot has a new "
                          "master), ask (the slot is migrating)",
                          "type=\"moved\"", s->redis_redirects_moved, "type=\"ask\"",
                          s->redis_redirects_ask);
    emit_gauge(&p, "gateway_backend_up", "1 when the backend is reachable, else 0",
               s->backend_up ? 1 : 0);
    emit_gauge(&p, "gateway_worker_threads", "Epoll worker threads", s->worker_threads);
    emit_gauge(&p, "gateway_uptime_seconds", "Seconds since the gateway started", s->uptime_s);
    emit_header(&p, "gateway_build_info", "gauge", "Build information, always 1");
    emit(&p, "gateway_build_info{version=\"");
    emit_escaped(&p, version ? version : "unknown", true);
    emit(&p, "\"} 1\n");
    if (s->rules_version[0] != '\0') {
        emit_header(&p, "gateway_rules_info", "gauge",
                    "The rate-limit rules in force, always 1: version (first 12 hex digits of the "
                    "SHA-256 of the normalised rules) and source (env, file, api or redis)");
        emit(&p, "gateway_rules_info{version=\"");
        emit_escaped(&p, s->rules_version, true);
        emit(&p, "\",source=\"");
        emit_escaped(&p, s->rules_source ? s->rules_source : "", true);
        emit(&p, "\"} 1\n");
        emit_counter_pair(&p, "gateway_rules_reloads_total",
                          "Reloads of RATE_LIMIT_RULES_FILE by result: success (valid, applied or "
                          "unchanged), failure (invalid or unreadable, old rules kept)",
                          "result=\"success\"", s->rules_reloads_success, "result=\"failure\"",
                          s->rules_reloads_failure);
    }

    if (s->nlimits > 0) {
        emit_header(&p, "gateway_ratelimit_decisions_total", "counter",
                    "Rate-limit decisions per limit of the rules: allowed, limited (a rate "
                    "refused), shadow_limited (a shadow limit would have refused), delayed");
        static const char *const names[] = {"allowed", "limited", "shadow_limited", "delayed"};
        for (size_t i = 0; i < s->nlimits; i++) {
            const struct gw_stats_limit *l = &s->limits[i];
            const uint64_t v[] = {l->allowed, l->limited, l->shadow_limited, l->delayed};
            for (size_t k = 0; k < 4; k++) {
                emit(&p, "gateway_ratelimit_decisions_total{limit=\"");
                emit_escaped(&p, l->name, true);
                emit(&p, "\",decision=\"%s\"} %" PRIu64 "\n", names[k], v[k]);
            }
        }
    }

    emit_histogram(&p, "gateway_request_duration_seconds",
                   "Proxied requests, from request start to response end", s->latency_buckets,
                   s->latency_count, s->latency_sum_us);
    emit_histogram(&p, "gateway_upstream_duration_seconds",
                   "Upstream exchanges, from connect or send to response end", s->upstream_buckets,
                   s->upstream_count, s->upstream_sum_us);
    emit_histogram(&p, "gateway_queue_wait_seconds", "Time spent waiting for an in-flight slot",
                   s->queue_buckets, s->queue_count, s->queue_sum_us);
    emit_histogram(&p, "gateway_ratelimit_delay_seconds",
                   "Time requests were held by token-bucket shaping (delay) before going on",
                   s->delay_buckets, s->delay_count, s->delay_sum_us);
    return p.rc ? -ENOMEM : 0;
}
