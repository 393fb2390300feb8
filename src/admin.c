/*
 * /health, /stats and /metrics (SPEC.md §4). The dependency probes run in
 * the prober thread of src/health.c; an answer here only reads its
 * snapshot, so no endpoint waits for the backend or Redis.
 */
#include "admin.h"
#include "redis_sentinel.h"

#include "gw/health.h"
#include "gw/log.h"
#include "gw/redis_redirects.h"
#include "gw/response.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct gw_slice target_path(struct gw_slice target)
{
    const char *q = memchr(target.ptr, '?', target.len);
    return (struct gw_slice){target.ptr, q ? (size_t)(q - target.ptr) : target.len};
}

static bool path_is(struct gw_slice path, const char *want)
{
    size_t n = strlen(want);
    return path.len == n && memcmp(path.ptr, want, n) == 0;
}

enum gw_admin_endpoint gw_admin_match(const struct gw_config *cfg, struct gw_slice target)
{
    struct gw_slice path = target_path(target);
    if (path_is(path, cfg->health_path))
        return GW_ADMIN_HEALTH;
    if (path_is(path, cfg->stats_path))
        return GW_ADMIN_STATS;
    if (path_is(path, cfg->metrics_path))
        return GW_ADMIN_METRICS;
    return GW_ADMIN_NONE;
}

static bool backend_up(struct gw_server *srv)
{
    struct gw_health_snapshot h;
    gw_health_read(srv->health, &h);
    return h.backend_up;
}

static enum gw_rl_store_state redis_state(struct gw_worker *w)
{
    struct gw_health_snapshot h;
    gw_health_read(w->srv->health, &h);
    /* A worker whose own connection is down fails its checks now and
     * reconnects in the background (SPEC.md §5): it says so, whatever the
     * prober's PING saw. */
    if (h.redis == GW_RL_STORE_CONNECTED && !gw_ratelimit_worker_redis_up(w->rl))
        return GW_RL_STORE_DISCONNECTED;
    return h.redis;
}

void gw_admin_snapshot(struct gw_server *srv, struct gw_stats_snapshot *s)
{
    memset(s, 0, sizeof(*s));
    /* Every worker is summed (WORKER_THREADS may exceed what
     * worker_connections lists one by one). */
    for (int i = 0; i < srv->nworkers; i++)
        gw_stats_add_worker(s, (size_t)i, &srv->workers[i]->stats);
    gw_stats_add_worker(s, GW_STATS_MAX_WORKERS, &srv->acceptor_stats); /* listed in no slot */
    s->in_flight = gw_gate_in_flight(srv->gate);
    s->queue_length = gw_gate_queue_length(srv->gate);
    s->in_flight_max = (uint64_t)srv->cfg->max_concurrent_requests;
    s->queue_length_max = (uint64_t)srv->cfg->max_queue_length;
    s->uptime_s = (int64_t)((gw_now_ms() - srv->start_ms) / 1000);
    s->worker_threads = srv->nworkers;
    s->redis_enabled = gw_config_redis_enabled(srv->cfg);
    if (srv->rules) {
        struct gw_rules *r = gw_rules_holder_get(srv->rules);
        snprintf(s->rules_version, sizeof(s->rules_version), "%s", r->version);
        s->rules_source = gw_rules_source_name(r->source);
        gw_rules_put(r);
        gw_rules_holder_reloads(srv->rules, &s->rules_reloads_success, &s->rules_reloads_failure);
    }
    s->redis_sentinel = gw_config_redis_mode(srv->cfg) == GW_REDIS_SENTINEL;
    s->redis_failovers = gw_redis_failovers_total();
    s->redis_cluster = gw_config_redis_mode(srv->cfg) == GW_REDIS_CLUSTER;
    s->redis_redirects_moved = gw_redis_redirects_total(false);
    s->redis_redirects_ask = gw_redis_redirects_total(true);
}

static int respond_health(struct gw_worker *w, struct gw_slice target, struct gw_buf *out,
                          bool keep_alive, uint8_t minor, bool head_only, int *status)
{
    struct gw_server *srv = w->srv;
    struct gw_slice query = {NULL, 0};
    const char *q = memchr(target.ptr, '?', target.len);
    if (q)
        query = (struct gw_slice){q + 1, target.len - (size_t)(q + 1 - target.ptr)};
    json_t *o = json_object();
    if (!o)
        return -1;
    int64_t uptime = (int64_t)((gw_now_ms() - srv->start_ms) / 1000);
    if (gw_slice_eq_nocase(query, "probe=live")) {
        /* Liveness: the process answers; dependencies are not its concern. */
        *status = 200;
        json_object_set_new(o, "status", json_string("ok"));
        json_object_set_new(o, "uptime_seconds", json_integer(uptime));
    } else {
        enum gw_rl_store_state rs = redis_state(w);
        bool be = backend_up(srv);
        bool ok = be && rs != GW_RL_STORE_DISCONNECTED;
        *status = ok ? 200 : 503;
        json_object_set_new(o, "status", json_string(ok ? "ok" : "degraded"));
        json_object_set_new(o, "redis",
                            json_string(rs == GW_RL_STORE_DISABLED    ? "disabled"
                                        : rs == GW_RL_STORE_CONNECTED ? "connected"
                                                                      : "disconnected"));
        json_object_set_new(o, "backend", json_string(be ? "connected" : "disconnected"));
        json_object_set_new(o, "uptime_seconds", json_integer(uptime));
    }
    char *body = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!body)
        return -1;
    int rc = gw_response_write_body(out, *status, "application/json", body, strlen(body),
                                    keep_alive, minor, head_only);
    free(body);
    return rc;
}

int gw_admin_respond(struct gw_worker *w, enum gw_admin_endpoint ep, struct gw_slice target,
                     struct gw_buf *out, bool keep_alive, uint8_t http_minor, bool head_only,
                     int *status)
{
    if (ep == GW_ADMIN_HEALTH)
        return respond_health(w, target, out, keep_alive, http_minor, head_only, status);
    struct gw_stats_snapshot snap;
    gw_admin_snapshot(w->srv, &snap);
    /* Per-limit decisions: a heap copy, freed below. */
    struct gw_rl_limit_stats *ls = NULL;
    struct gw_stats_limit *sl = NULL;
    size_t nl = gw_ratelimit_limit_stats(w->srv->rl, NULL, 0);
    if (nl > 0 && (ls = calloc(nl, sizeof(*ls))) != NULL &&
        (sl = calloc(nl, sizeof(*sl))) != NULL) {
        nl = GW_MIN(nl, gw_ratelimit_limit_stats(w->srv->rl, ls, nl));
        for (size_t i = 0; i < nl; i++) {
            memcpy(sl[i].name, ls[i].name, sizeof(sl[i].name));
            sl[i].allowed = ls[i].count[GW_RL_OUT_ALLOWED];
            sl[i].limited = ls[i].count[GW_RL_OUT_LIMITED];
            sl[i].shadow_limited = ls[i].count[GW_RL_OUT_SHADOW_LIMITED];
            sl[i].delayed = ls[i].count[GW_RL_OUT_DELAYED];
        }
        snap.limits = sl;
        snap.nlimits = nl;
    }
    if (snap.redis_enabled)
        snap.redis_up = redis_state(w) == GW_RL_STORE_CONNECTED;
    struct gw_buf body = {0};
    int rc;
    const char *ctype;
    if (ep == GW_ADMIN_STATS) {
        rc = gw_stats_render_json(&snap, &body);
        ctype = "application/json";
    } else {
        /* /stats does not report the backend; only /metrics pays for the
         * (cached) probe. */
        snap.backend_up = backend_up(w->srv);
        rc = gw_stats_render_prometheus(&snap, GW_VERSION, &body);
        ctype = "text/plain; version=0.0.4; charset=utf-8";
    }
    if (rc == 0) {
        *status = 200;
        rc = gw_response_write_body(out, 200, ctype, gw_buf_head(&body), gw_buf_len(&body),
                                    keep_alive, http_minor, head_only);
    }
    gw_buf_release(&body);
    free(ls);
    free(sl);
    return rc;
}
