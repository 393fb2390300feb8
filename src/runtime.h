/*
 * Private types shared by the runtime modules (acceptor, worker, conn,
 * exchange, admin, server): the process-wide server and the per-thread
 * worker. Types and inline helpers only, no module behind it, so the
 * modules below the server (conn, admin) include it without depending on
 * the server, worker or acceptor. Nothing outside src/ and the tests
 * includes this file.
 */
#ifndef GW_RUNTIME_H
#define GW_RUNTIME_H

#include "gw/buf.h"
#include "gw/client_conns.h"
#include "gw/config.h"
#include "gw/gate.h"
#include "gw/http1.h"
#include "gw/loop.h"
#include "gw/proxy.h"
#include "gw/ratelimit.h"
#include "gw/rules_holder.h"
#include "gw/stats.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>

/* Spare parsers and blocks a worker keeps (bounded memory when idle). */
#define GW_WORKER_SPARES 256
/* Longest a closing connection keeps draining input after its last write. */
#define GW_LINGER_MS 2000

struct gw_worker;
struct gw_conn;
struct gw_health;
struct gw_upstream_pool;
struct gw_rules_reloader;
struct gw_resolve_name;
struct gw_rules_sync;

/* Admin connections held at once (SPEC.md §11); beyond, closed at accept.
 * They count neither under MAX_CONNECTIONS nor per client, so an operator
 * still gets in when clients fill the gateway. */
#define GW_ADMIN_MAX_CONNECTIONS 64

/* An accepted socket travelling from the acceptor to a worker. */
struct gw_handoff {
    int fd;
    struct sockaddr_storage peer;
    bool admin; /* accepted on the admin listener (SPEC.md §11) */
};

struct gw_server {
    struct gw_config *cfg;           /* effective configuration (owned by main) */
    struct gw_gate *gate;            /* in-flight cap */
    struct gw_ratelimit *rl;         /* rate limiter */
    struct gw_resolve_name *backend; /* BACKEND_URL's host as the resolver follows it */
    int listen_fd;                   /* listening socket */
    int port;                        /* bound port */
    struct gw_worker **workers;      /* worker_threads entries */
    int nworkers;
    pthread_t acceptor;                    /* acceptor thread */
    int acceptor_wake_fd;                  /* eventfd: stop the acceptor */
    _Atomic int64_t connections;           /* client connections open, all workers */
    _Atomic int tunnels;                   /* MAX_TUNNELS places taken: tunnels open plus
                                              upgrade requests waiting for their answer */
    struct gw_client_conns *client_conns;  /* per-client counts; NULL when
                                              MAX_CONNECTIONS_PER_CLIENT is 0 */
    struct gw_stats_worker acceptor_stats; /* written by the acceptor thread only */
    _Atomic bool draining;                 /* SIGTERM received */
    _Atomic bool forced_close;             /* SHUTDOWN_TIMEOUT_MS ran out: no new exchange starts */
    uint64_t start_ms;                     /* monotonic start time */
    struct gw_health *health;              /* dependency prober for /health (gw/health.h) */
    struct gw_rules_holder *rules;         /* the rules in force (gw/rules_holder.h): a worker
                                              keeps a reference and takes a new one when
                                              gw_rules_holder_generation moves */
    struct gw_rules_reloader *reloader;    /* RATE_LIMIT_RULES_FILE's reloader; NULL without
                                              a file */
    int admin_fd;                          /* admin listener (ADMIN_PORT), -1 when none */
    int admin_port;                        /* its bound port */
    _Atomic int64_t admin_connections;     /* admin connections open, all workers */
    struct gw_rules_sync *sync;            /* rules and forgets shared through Redis
                                              (gw/rules_sync.h); NULL without REDIS_URL */
};

struct gw_worker {
    struct gw_server *srv;
    int id;
    pthread_t thread;
    struct gw_loop loop;
    pthread_mutex_t inbox_mu; /* guards inbox */
    struct gw_handoff *inbox; /* accepted sockets waiting for this worker */
    size_t inbox_len, inbox_cap;
    struct gw_stats_worker stats;       /* this worker's counters */
    struct gw_ratelimit_worker *rl;     /* own Redis connection */
    struct gw_gate_owner gate_owner;    /* grants from the in-flight gate */
    struct gw_conn *conns;              /* live client connections (list head) */
    struct gw_conn *reap;               /* connections closed this iteration */
    struct gw_rl_batch *limits;         /* requests waiting for the batched rate-limit check */
    uint64_t upstream_warned_ms;        /* last "upstream connect failed" line (rate-limited) */
    struct gw_conn *redrive;            /* connections to drive again before sleeping */
    struct gw_upstream_pool *upstreams; /* keep-alive pool and upstream clients */
    struct gw_timer tick;               /* periodic upkeep: Redis reconnect, drain */
    bool draining;                      /* stop keeping connections alive */
    bool stop;                          /* leave the loop */
    _Atomic int drain_request;          /* set by main: 1 drain, 2 force close */
    _Atomic bool finished;              /* the thread left its loop */
    struct gw_http_parser_pool parsers; /* spare request parsers */
    struct gw_buf_pool blocks;          /* spare buffer blocks */
    struct gw_buf scratch;              /* per-request rendering scratch, kept */
    int64_t trim_peak;                  /* most connections held since the last memory trim */
};

/* Gives back what admitting a client connection took: its place under
 * MAX_CONNECTIONS and, when MAX_CONNECTIONS_PER_CLIENT is set, under its
 * client's cap. addr is the peer in gw_net_addr_bin form (only read), or
 * NULL for an admin connection (its place under GW_ADMIN_MAX_CONNECTIONS).
 * Call exactly once per connection the acceptor handed over, when its
 * descriptor is closed. Thread-safe (atomics and the client table's locks). */
static inline void gw_server_release_connection(struct gw_server *srv, const uint8_t addr[16])
{
    if (addr == NULL) { /* an admin connection */
        atomic_fetch_sub_explicit(&srv->admin_connections, 1, memory_order_relaxed);
        return;
    }
    if (srv->client_conns)
        gw_client_conns_release(srv->client_conns, addr);
    atomic_fetch_sub_explicit(&srv->connections, 1, memory_order_relaxed);
}

#endif
