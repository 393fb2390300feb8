/*
 * Process lifecycle: build the shared state (gate, limiter, workers),
 * listen, run until a signal, drain, tear down in reverse order.
 */
#include "server.h"

#include "runtime.h"

#include "acceptor.h"
#include "gw/health.h"
#include "gw/log.h"
#include "gw/rules.h"
#include "gw/net.h"
#include "gw/rules_reload.h"
#include "gw/resolve.h"
#include "gw/rules_sync.h"
#include "worker.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LISTEN_BACKLOG 4096

static void drain_and_join(struct gw_server *srv)
{
    for (int i = 0; i < srv->nworkers; i++)
        gw_worker_request_drain(srv->workers[i], false);
    uint64_t deadline = gw_now_ms() + (uint64_t)srv->cfg->shutdown_timeout_ms;
    for (;;) {
        bool all = true;
        for (int i = 0; i < srv->nworkers; i++)
            all &= atomic_load_explicit(&srv->workers[i]->finished, memory_order_acquire);
        if (all)
            break;
        if (gw_now_ms() >= deadline) {
            gw_warn("shutdown timeout reached; closing remaining connections");
            /* Before any worker closes a holder and so frees its slot. */
            atomic_store_explicit(&srv->forced_close, true, memory_order_release);
            for (int i = 0; i < srv->nworkers; i++)
                gw_worker_request_drain(srv->workers[i], true);
            break;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < srv->nworkers; i++)
        gw_worker_join(srv->workers[i]);
}

/* Waits for SIGTERM or SIGINT and returns it; a SIGHUP in between asks the
 * reloader to re-read RATE_LIMIT_RULES_FILE (SPEC.md §7, §10). */
static int wait_for_signal(struct gw_server *srv)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            if (srv->reloader) {
                gw_info("SIGHUP received: reloading RATE_LIMIT_RULES_FILE %s",
                        srv->cfg->rate_limit_rules_file);
                gw_rules_reloader_request(srv->reloader);
            } else {
                gw_info("SIGHUP received: no RATE_LIMIT_RULES_FILE, nothing to reload");
            }
            continue;
        }
        return sig;
    }
}

/* Registers BACKEND_URL's host and REDIS_URL's TCP host with the resolver
 * (a name that does not resolve yet is not an error) and starts it.
 * Returns 0 or -errno (logged). */
static int start_resolver(struct gw_server *srv)
{
    const struct gw_config *cfg = srv->cfg;
    int rc = gw_resolve_add(cfg->backend_host, cfg->backend_port, "BACKEND_URL", &srv->backend);
    if (rc == 0 && gw_config_redis_enabled(cfg)) {
        struct gw_redis_target t;
        struct gw_resolve_name *redis = NULL;
        if (gw_config_redis_target(cfg, &t, NULL, 0) == 0 && t.host != NULL)
            rc = gw_resolve_add(t.host, t.port, "REDIS_URL", &redis);
        /* The sentinels or cluster seeds too, as far as there is room (one
         * left out is resolved by the worker when it connects). */
        for (int i = 0; rc == 0 && i < t.nsentinels; i++) {
            int src =
                gw_resolve_add(t.sentinels[i].host, t.sentinels[i].port, "REDIS_SENTINELS", &redis);
            if (src == -ENOSPC)
                break;
            rc = src;
        }
        for (int i = 0; rc == 0 && i < t.ncluster_nodes; i++) {
            int src = gw_resolve_add(t.cluster_nodes[i].host, t.cluster_nodes[i].port,
                                     "REDIS_CLUSTER_NODES", &redis);
            if (src == -ENOSPC)
                break;
            rc = src;
        }
        gw_config_redis_target_deinit(&t);
    }
    if (rc == 0)
        rc = gw_resolve_start(cfg->upstream_resolve_interval_ms);
    if (rc)
        gw_error("cannot start the resolver: %s", strerror(-rc));
    return rc;
}

int gw_server_run(struct gw_config *cfg, struct gw_rules *rules)
{
    struct gw_server *srv = calloc(1, sizeof(*srv));
    if (!srv) {
        gw_rules_put(rules);
        return 1;
    }
    int exit_code = 1, started = 0;
    srv->cfg = cfg;
    srv->listen_fd = -1;
    srv->admin_fd = -1;
    srv->acceptor_wake_fd = -1;
    srv->start_ms = gw_now_ms();

    /* Before anything connects: the names those connects follow. */
    int rc = start_resolver(srv);
    if (rc)
        goto out;
    rc = gw_gate_create(&srv->gate, (unsigned)cfg->max_concurrent_requests,
                        (unsigned)cfg->max_queue_length);
    if (rc) {
        gw_error("cannot create the in-flight gate: %s", strerror(-rc));
        goto out;
    }
    /* The rules in force: the file's (main loaded and validated it), else
     * the default limit of the RATE_LIMIT_* variables. */
    if (rules == NULL)
        rules = gw_rules_from_config(cfg);
    if (rules == NULL || gw_rules_holder_create(&srv->rules, rules) != 0) {
        gw_error("cannot create the rules holder: out of memory");
        goto out;
    }
    rules = NULL; /* the holder's now */
    if (cfg->rate_limit_rules_file) {
        rc = gw_rules_reloader_start(&srv->reloader, srv->rules, cfg, 0);
        if (rc) {
            gw_error("cannot start the rules reloader: %s", strerror(-rc));
            goto out;
        }
    }
    rc = gw_ratelimit_create_shared(&srv->rl, cfg, srv->rules);
    if (rc) {
        gw_error("cannot create the rate limiter: %s", strerror(-rc));
        goto out;
    }
    if (gw_config_redis_enabled(cfg)) {
        /* Rules and unblocks shared by every instance (SPEC.md §11): without
         * a file, the shared rules are loaded here, before serving. */
        rc = gw_rules_sync_start(&srv->sync, srv->rules, srv->rl, cfg,
                                 cfg->rate_limit_rules_file ? 0 : GW_RULES_SYNC_ADOPT);
        if (rc) {
            gw_error("cannot start the rules sync: %s", strerror(-rc));
            goto out;
        }
    }
    if (cfg->max_connections_per_client > 0) {
        rc = gw_client_conns_create(&srv->client_conns, cfg->max_connections_per_client);
        if (rc) {
            gw_error("cannot create the per-client connection table: %s", strerror(-rc));
            goto out;
        }
    }
    rc = gw_health_start(&srv->health, cfg, srv->backend, srv->rl);
    if (rc) {
        gw_error("cannot start the health prober: %s", strerror(-rc));
        goto out;
    }
    srv->listen_fd = gw_net_listen(cfg->gateway_host, cfg->gateway_port, LISTEN_BACKLOG);
    if (srv->listen_fd < 0) {
        gw_error("cannot listen on %s:%d: %s", cfg->gateway_host, cfg->gateway_port,
                 strerror(-srv->listen_fd));
        goto out;
    }
    srv->port = gw_net_local_port(srv->listen_fd);
    if (cfg->admin_port >= 0) {
        srv->admin_fd = gw_net_listen(cfg->admin_host, cfg->admin_port, 64);
        if (srv->admin_fd < 0) {
            gw_error("cannot listen on ADMIN_HOST %s port %d: %s", cfg->admin_host, cfg->admin_port,
                     strerror(-srv->admin_fd));
            goto out;
        }
        srv->admin_port = gw_net_local_port(srv->admin_fd);
    }
    srv->workers = calloc((size_t)cfg->worker_threads, sizeof(*srv->workers));
    if (!srv->workers)
        goto out;
    for (int i = 0; i < cfg->worker_threads; i++) {
        rc = gw_worker_create(&srv->workers[i], srv, i);
        if (rc) {
            gw_error("cannot create worker %d: %s", i, strerror(-rc));
            goto out;
        }
        srv->nworkers++;
    }
    for (; started < srv->nworkers; started++) {
        rc = gw_worker_start(srv->workers[started]);
        if (rc) {
            gw_error("cannot start worker %d: %s", started, strerror(-rc));
            goto out;
        }
    }
    rc = gw_acceptor_start(srv);
    if (rc) {
        gw_error("cannot start the acceptor: %s", strerror(-rc));
        goto out;
    }
    if (srv->admin_fd >= 0)
        gw_info(strchr(cfg->admin_host, ':') ? "admin listening on [%s]:%d (token %s)"
                                             : "admin listening on %s:%d (token %s)",
                cfg->admin_host, srv->admin_port, cfg->admin_token ? "required" : "not required");
    bool v6l = strchr(cfg->gateway_host, ':') != NULL;
    gw_info(v6l ? "gateway listening on [%s]:%d" : "gateway listening on %s:%d", cfg->gateway_host,
            srv->port);
    struct gw_rules *in_force = gw_rules_holder_get(srv->rules);
    char limits[96];
    if (in_force->source == GW_RULES_SOURCE_ENV)
        snprintf(limits, sizeof(limits), "rate limit %d per %d s", cfg->rate_limit_requests,
                 cfg->rate_limit_window_s);
    else
        snprintf(limits, sizeof(limits), "rate-limit rules %s (%zu limits, from %s)",
                 in_force->version, in_force->limit_count, gw_rules_source_name(in_force->source));
    gw_rules_put(in_force);
    static const char *const store_name[] = {[GW_REDIS_NONE] = "memory",
                                             [GW_REDIS_URL] = "redis",
                                             [GW_REDIS_SENTINEL] = "redis sentinel",
                                             [GW_REDIS_CLUSTER] = "redis cluster"};
    gw_info("upstream %s%s, %d workers, %s (%s store), in-flight cap %d", cfg->backend_authority,
            cfg->backend_base_path ? cfg->backend_base_path : "", srv->nworkers, limits,
            store_name[gw_config_redis_mode(cfg)], cfg->max_concurrent_requests);

    int sig = wait_for_signal(srv);
    gw_info("%s received: draining (up to %d ms)", sig == SIGINT ? "SIGINT" : "SIGTERM",
            cfg->shutdown_timeout_ms);
    atomic_store(&srv->draining, true);
    /* No reload during the drain: the rules in force stay to the end. */
    gw_rules_reloader_stop(srv->reloader);
    srv->reloader = NULL;
    gw_acceptor_stop(srv);
    drain_and_join(srv);
    started = 0;
    exit_code = 0;
    /* The last access-log lines, unless stdout is stalled. */
    if (!gw_log_access_drain(1000))
        gw_warn("access log: stdout did not take the last lines within 1 s");
    gw_info("drained; exiting");

out:
    if (started > 0) {
        /* Start-up failed after some workers ran: stop them. */
        gw_acceptor_stop(srv);
        for (int i = 0; i < started; i++)
            gw_worker_request_drain(srv->workers[i], true);
        for (int i = 0; i < started; i++)
            gw_worker_join(srv->workers[i]);
    }
    for (int i = 0; i < srv->nworkers; i++)
        gw_worker_destroy(srv->workers[i]);
    free(srv->workers);
    /* After the workers: they may hold references to the rules, and use
     * the rules sync. */
    gw_rules_sync_stop(srv->sync);
    gw_rules_reloader_stop(srv->reloader);
    gw_rules_holder_destroy(srv->rules);
    gw_rules_put(rules);
    if (srv->listen_fd >= 0)
        close(srv->listen_fd);
    if (srv->admin_fd >= 0)
        close(srv->admin_fd);
    gw_health_stop(srv->health);
    if (srv->rl)
        gw_ratelimit_destroy(srv->rl);
    if (srv->gate)
        gw_gate_destroy(srv->gate);
    gw_client_conns_destroy(srv->client_conns);
    gw_resolve_stop(); /* after every user of a name */
    free(srv);
    return exit_code;
}
