/*
 * Redis Cluster store of the rate limiter (SPEC.md §12): one per worker,
 * holding the slot map (CLUSTER SLOTS) and one Redis store of rl_redis.c
 * per master (its connect machinery, setup pipeline and script cache).
 *
 * A pass is split by slot: every store key carries a hash tag
 * ("{<client hash>}"), so a unit's ops on one client fall in one slot, and
 * ops of one slot go in one script call whose KEYS are the slot's key
 * bases plus the state keys the script will touch (computed with the
 * Redis clock as last seen), so the server routes the call, and answers
 * MOVED, ASK or TRYAGAIN, by the keys that exist. The calls of every node
 * are queued and sent before any reply is read: a batch costs one round
 * trip of wall time when the map is right. MOVED updates the map and
 * resends the call to the named master, ASK resends it there preceded by
 * ASKING, TRYAGAIN (a slot half migrated) resends it after a short pause
 * while the command timeout lasts, NOSCRIPT resends it as EVAL; each is a
 * further round for those calls only.
 *
 * A unit whose ops fall in several slots (a request under a per-client
 * and a global limit) is decided per slot, each part check-all-then-commit;
 * when one part refuses (or fails), the parts that committed are refunded
 * (the script's refund mode, as of the decision time), so a refused
 * request still consumes from no rate. Between the commit and the refund
 * another request of those slots may see the commit: it errs toward
 * refusing, never toward letting more through.
 *
 * A master that fails affects only its slots: its calls are left
 * UNDECIDED (RATE_LIMIT_FAILURE_MODE decides them), it is reconnected in
 * the background from the periodic probe, and the map is read again (a
 * replica may have taken its slots).
 */
#include "gw/log.h"
#include "gw/redis_redirects.h"
#include "ratelimit_int.h"
#include "redis_conn.h"
#include "redis_sentinel.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SLOTS            GW_REDIS_CLUSTER_SLOTS
#define NODES_MAX        64     /* masters (and addresses seen in redirects) */
#define NO_NODE          0xffff /* slot_node: not served */
#define ROUNDS_MAX       64 /* send/read rounds of one pass (redirects, retries), within the timeout */
#define REFRESH_MIN_MS   100 /* between two map reads */
#define NODE_BACKOFF_MIN 50  /* ms, a failed node's first reconnect delay */
#define NODE_BACKOFF_MAX 2000

/* ---- slots -------------------------------------------------------------- */

unsigned gw_rl_cluster_slot(const char *key, size_t len)
{
    return gw_redis_key_slot(key, len);
}

/* ---- the store -------------------------------------------------------- */

struct node {
    char host[256];
    int port;
    struct gw_rl_redis *r; /* its store (owned) */
    bool up;               /* ready for calls */
    bool connecting;       /* a non-blocking connect is in progress */
    bool master;           /* named by the last map read */
    uint64_t retry_at_ms, backoff_ms;
};

/* One script call: the ops of one slot, or (fast) of one node. */
struct call {
    uint16_t slot; /* the slot (not fast) */
    uint16_t node;
    bool fast; /* keys in ARGV, over every slot of the node: no redirects */
    bool asking, eval, done;
    bool sent, failed;
    bool await_connect;      /* redirected to a master whose connect is under way */
    uint64_t retry_at_ms;    /* TRYAGAIN: not before */
    uint32_t op_first, op_n; /* range of sorted[] */
    struct gw_rl_pass sub;
    uint32_t *op_of;   /* sub op -> pass op */
    uint32_t *unit_of; /* sub unit -> pass unit */
};

struct gw_rl_cluster {
    const struct gw_redis_target *target; /* borrowed */
    int timeout_ms;
    uint16_t slot_node[SLOTS];
    struct node nodes[NODES_MAX];
    size_t nnodes;
    bool mapped;              /* a map was read */
    bool refresh;             /* read the map again at the next chance */
    uint64_t refreshed_at_ms; /* last map read (gw_now_ms) */
    size_t seed_next;         /* the seed the next map read starts with */
    struct gw_rl_redis *seed; /* non-blocking connect's seed link, or NULL */
    bool seed_connecting;
    size_t seed_tries;
    uint64_t warned_at_ms; /* last "refused checks" warning */
    int64_t redis_us;      /* the Redis clock last seen (µs) ... */
    uint64_t redis_at_ms;  /* ... at this gw_now_ms() */
    char err[640];
    /* scratch of one pass, grown as needed: [0] the calls per node, [1]
     * the calls per slot */
    struct arena {
        void *p;
        size_t cap;
    } arena[3]; /* [2]: the residual pass and the units' folded verdicts */
};

static const char *node_name(const struct node *n, char *buf, size_t cap)
{
    snprintf(buf, cap, strchr(n->host, ':') != NULL ? "[%s]:%d" : "%s:%d", n->host, n->port);
    return buf;
}

/* The node at host:port, added (disconnected) when new. When the table
 * is full, a node that no map names any more and that is not connected
 * (an address a failed master, a replaced pod, a redirect left behind) is
 * reused, unless keep (may be NULL) marks it: without that, a long-lived
 * gateway that saw 64 addresses could never add a new master, and its
 * slots would stay in RATE_LIMIT_FAILURE_MODE until a restart. NO_NODE
 * when nothing can be reused or the store cannot be made. */
static uint16_t node_find_add(struct gw_rl_cluster *c, const char *host, size_t host_len, int port,
                              const bool *keep)
{
    for (size_t i = 0; i < c->nnodes; i++)
        if (c->nodes[i].port == port && strlen(c->nodes[i].host) == host_len &&
            memcmp(c->nodes[i].host, host, host_len) == 0)
            return (uint16_t)i;
    if (host_len == 0 || host_len >= sizeof(c->nodes[0].host))
        return NO_NODE;
    size_t at = c->nnodes;
    if (at == NODES_MAX) {
        for (at = 0; at < c->nnodes; at++) {
            const struct node *o = &c->nodes[at];
            if (!o->master && !o->up && !o->connecting && (keep == NULL || !keep[at]))
                break;
        }
        if (at == c->nnodes)
            return NO_NODE;
    }
    char name[256];
    memcpy(name, host, host_len);
    name[host_len] = '\0';
    struct gw_rl_redis *r = NULL;
    if (gw_rl_redis_create_node(&r, c->target, name, port, c->timeout_ms) != 0)
        return NO_NODE;
    if (at < c->nnodes) {
        gw_rl_redis_ops.destroy(c->nodes[at].r);
        for (size_t s = 0; s < SLOTS; s++)
            if (c->slot_node[s] == at)
                c->slot_node[s] = NO_NODE;
    }
    struct node *n = &c->nodes[at];
    memset(n, 0, sizeof(*n));
    memcpy(n->host, name, host_len + 1);
    n->port = port;
    n->r = r;
    n->backoff_ms = NODE_BACKOFF_MIN;
    if (at == c->nnodes)
        c->nnodes++;
    return (uint16_t)at;
}

static void node_down(struct gw_rl_cluster *c, struct node *n, uint64_t now)
{
    char name[300];
    if (n->up)
        gw_warn("rate limit: redis cluster node %s failed (%s); its slots go to "
                "RATE_LIMIT_FAILURE_MODE until it or a replica serves them",
                node_name(n, name, sizeof(name)), gw_rl_redis_last_error(n->r));
    snprintf(c->err, sizeof(c->err), "%s: %s", node_name(n, name, sizeof(name)),
             gw_rl_redis_last_error(n->r));
    gw_rl_redis_disconnect(n->r);
    n->up = false;
    n->connecting = false;
    n->retry_at_ms = now + n->backoff_ms;
    n->backoff_ms = GW_MIN(n->backoff_ms * 2, (uint64_t)NODE_BACKOFF_MAX);
    c->refresh = true;
}

/* Moves a node's (re)connect on without blocking. */
static void node_connect_step(struct gw_rl_cluster *c, struct node *n, uint64_t now)
{
    int rc;
    if (n->connecting)
        rc = gw_rl_redis_connect_poll(n->r, now);
    else if (now >= n->retry_at_ms)
        rc = gw_rl_redis_connect_start(n->r, now);
    else
        return;
    n->connecting = rc == -EINPROGRESS;
    if (rc == 0) {
        char name[300];
        n->up = true;
        n->backoff_ms = NODE_BACKOFF_MIN;
        gw_info("rate limit: redis cluster node %s connected", node_name(n, name, sizeof(name)));
    } else if (rc != -EINPROGRESS) {
        char name[300];
        gw_debug("rate limit: redis cluster node %s: reconnect failed (%s), next in %llu ms",
                 node_name(n, name, sizeof(name)), gw_rl_redis_last_error(n->r),
                 (unsigned long long)n->backoff_ms);
        n->up = false;
        n->retry_at_ms = now + n->backoff_ms;
        n->backoff_ms = GW_MIN(n->backoff_ms * 2, (uint64_t)NODE_BACKOFF_MAX);
        /* The map may name it only because it was read before a replica
         * took its slots over: read it again (at this backoff's pace), or
         * a store without requests on those slots (an idle worker, the
         * health prober) keeps the dead master forever. */
        c->refresh = true;
    }
}

/* The Redis clock now, as estimated from the last reply (this host's
 * wall clock before the first): it only names the state keys a per-slot
 * call declares for routing, the script itself reads TIME. */
static int64_t redis_now_ms(const struct gw_rl_cluster *c)
{
    if (c->redis_us == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    }
    return c->redis_us / 1000 + (int64_t)(gw_now_ms() - c->redis_at_ms);
}

static void saw_redis_clock(struct gw_rl_cluster *c, int64_t us)
{
    if (us > 0) {
        c->redis_us = us;
        c->redis_at_ms = gw_now_ms();
    }
}

/* Reads the map with CLUSTER SLOTS over r (ready). host_asked: the address
 * r talks to, for entries without a host. 0, -EPROTO (bad or error reply:
 * r kept), or -errno (r disconnected). */
static int read_map(struct gw_rl_cluster *c, struct gw_rl_redis *r, const char *host_asked)
{
    void *v = NULL;
    const char *argv[] = {"CLUSTER", "SLOTS"};
    int rc = gw_rl_redis_command_argv(r, 2, argv, &v);
    if (rc != 0) {
        snprintf(c->err, sizeof(c->err), "CLUSTER SLOTS: %s", gw_rl_redis_last_error(r));
        return rc;
    }
    redisReply *rep = v;
    struct gw_redis_slot_range *ranges = malloc(SLOTS * sizeof(*ranges));
    int n = ranges != NULL ? gw_redis_parse_cluster_slots(rep, ranges, SLOTS) : -ENOMEM;
    if (n <= 0) {
        snprintf(c->err, sizeof(c->err), "CLUSTER SLOTS: %s",
                 rep->type == REDIS_REPLY_ERROR ? rep->str
                 : n == 0                       ? "no slot is served"
                                                : "unexpected reply");
        free(ranges);
        freeReplyObject(rep);
        return -EPROTO;
    }
    uint16_t map[SLOTS];
    for (size_t i = 0; i < SLOTS; i++)
        map[i] = NO_NODE;
    bool master[NODES_MAX] = {false};
    int unserved = 0; /* ranges whose master found no room (warned once) */
    for (int i = 0; i < n; i++) {
        const struct gw_redis_slot_range *g = &ranges[i];
        const char *h = g->host != NULL ? g->host : host_asked;
        uint16_t ni =
            node_find_add(c, h, g->host != NULL ? g->host_len : strlen(h), g->port, master);
        if (ni == NO_NODE) {
            if (unserved++ == 0)
                gw_warn("rate limit: redis cluster: no room for master %.*s:%d (%d nodes known); "
                        "its slots go to RATE_LIMIT_FAILURE_MODE",
                        (int)(g->host != NULL ? g->host_len : strlen(h)), h, g->port, NODES_MAX);
            continue; /* those slots stay unserved (failure mode) */
        }
        master[ni] = true;
        for (unsigned s = g->lo; s <= g->hi; s++)
            map[s] = ni;
    }
    free(ranges);
    freeReplyObject(rep);
    memcpy(c->slot_node, map, sizeof(map));
    /* A master of the last map that this one no longer names: a replica
     * took its slots (gateway_redis_failovers_total counts it once per
     * process). */
    bool gone = false;
    for (size_t i = 0; i < c->nnodes; i++)
        gone |= c->nodes[i].master && !master[i];
    for (size_t i = 0; i < c->nnodes; i++) {
        char name[300];
        if (master[i] && !c->nodes[i].master &&
            gw_redis_cluster_note_master(c->nodes[i].host, c->nodes[i].port, gone))
            gw_warn("rate limit: redis cluster master %s took over slots (failover seen)",
                    node_name(&c->nodes[i], name, sizeof(name)));
        c->nodes[i].master = master[i];
    }
    c->mapped = true;
    c->refresh = false;
    c->refreshed_at_ms = gw_now_ms();
    return 0;
}

/* Reads the map again through any node that is up (blocking, one command
 * of at most timeout_ms). */
static void refresh_map(struct gw_rl_cluster *c, uint64_t now)
{
    if (now < c->refreshed_at_ms + REFRESH_MIN_MS)
        return;
    c->refreshed_at_ms = now;
    for (size_t k = 0; k < c->nnodes; k++) {
        struct node *n = &c->nodes[(c->seed_next + k) % c->nnodes];
        if (!n->up)
            continue;
        int rc = read_map(c, n->r, n->host);
        if (rc == 0)
            return;
        if (rc != -EPROTO)
            node_down(c, n, now);
    }
}

int gw_rl_cluster_create(struct gw_rl_cluster **out, const struct gw_redis_target *target,
                         int timeout_ms)
{
    *out = NULL;
    if (target->ncluster_nodes <= 0)
        return -EINVAL;
    struct gw_rl_cluster *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -ENOMEM;
    c->target = target;
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : 100;
    for (size_t i = 0; i < SLOTS; i++)
        c->slot_node[i] = NO_NODE;
    *out = c;
    return 0;
}

static void drop_seed(struct gw_rl_cluster *c)
{
    if (c->seed != NULL) {
        gw_rl_redis_ops.destroy(c->seed);
        c->seed = NULL;
    }
    c->seed_connecting = false;
}

void gw_rl_cluster_disconnect(struct gw_rl_cluster *c)
{
    drop_seed(c);
    for (size_t i = 0; i < c->nnodes; i++) {
        gw_rl_redis_disconnect(c->nodes[i].r);
        c->nodes[i].up = c->nodes[i].connecting = false;
        c->nodes[i].retry_at_ms = 0;
    }
}

static void cluster_destroy(void *store)
{
    struct gw_rl_cluster *c = store;
    if (c == NULL)
        return;
    drop_seed(c);
    for (size_t i = 0; i < c->nnodes; i++)
        gw_rl_redis_ops.destroy(c->nodes[i].r);
    for (size_t i = 0; i < GW_ARRAY_LEN(c->arena); i++)
        free(c->arena[i].p);
    free(c);
}

/* A store for seed i (the caller connects it). */
static int seed_store(struct gw_rl_cluster *c, size_t i, struct gw_rl_redis **out)
{
    const struct gw_redis_node *s =
        &c->target->cluster_nodes[i % (size_t)c->target->ncluster_nodes];
    return gw_rl_redis_create_node(out, c->target, s->host, s->port, c->timeout_ms);
}

static const char *seed_host(const struct gw_rl_cluster *c, size_t i)
{
    return c->target->cluster_nodes[i % (size_t)c->target->ncluster_nodes].host;
}

/* After a map read: every master gets its connect started (blocking: with
 * gw_rl_redis_connect). 0 when at least one master is up. */
static int connect_masters(struct gw_rl_cluster *c, bool blocking, uint64_t now)
{
    size_t up = 0;
    for (size_t i = 0; i < c->nnodes; i++) {
        struct node *n = &c->nodes[i];
        if (!n->master || n->up)
            continue;
        n->retry_at_ms = 0;
        if (blocking) {
            n->connecting = false;
            n->up = gw_rl_redis_connect(n->r) == 0;
            if (!n->up) {
                char name[300];
                gw_warn("rate limit: redis cluster node %s: %s", node_name(n, name, sizeof(name)),
                        gw_rl_redis_last_error(n->r));
                n->retry_at_ms = now + n->backoff_ms;
            }
        } else {
            node_connect_step(c, n, now);
        }
    }
    for (size_t i = 0; i < c->nnodes; i++)
        up += c->nodes[i].up;
    return up > 0 ? 0 : -EINPROGRESS;
}

static int cluster_connect(void *store)
{
    struct gw_rl_cluster *c = store;
    gw_rl_cluster_disconnect(c);
    uint64_t now = gw_now_ms();
    int rc = -EHOSTUNREACH;
    for (int k = 0; k < c->target->ncluster_nodes; k++) {
        size_t i = (c->seed_next + (size_t)k) % (size_t)c->target->ncluster_nodes;
        struct gw_rl_redis *s = NULL;
        if (seed_store(c, i, &s) != 0)
            return -ENOMEM;
        rc = gw_rl_redis_connect(s);
        bool linked = rc == 0;
        if (rc == 0)
            rc = read_map(c, s, seed_host(c, i));
        if (rc != 0) {
            /* read_map's own reason (an error reply such as "cluster
             * support disabled") when the link itself was fine */
            char why[sizeof(c->err)];
            snprintf(why, sizeof(why), "%s", linked ? c->err : gw_rl_redis_last_error(s));
            snprintf(c->err, sizeof(c->err), "seed %s:%d: %.500s", seed_host(c, i),
                     c->target->cluster_nodes[i].port, why);
        }
        gw_rl_redis_ops.destroy(s);
        if (rc == 0) {
            c->seed_next = i;
            break;
        }
    }
    if (rc != 0)
        return rc;
    if (connect_masters(c, true, now) != 0) {
        snprintf(c->err, sizeof(c->err), "no cluster master answered");
        return -EHOSTUNREACH;
    }
    return 0;
}

static int seed_begin(struct gw_rl_cluster *c, uint64_t now)
{
    drop_seed(c);
    if (c->seed_tries >= (size_t)c->target->ncluster_nodes) {
        char last[sizeof(c->err)];
        memcpy(last, c->err, sizeof(last));
        snprintf(c->err, sizeof(c->err), "no seed of REDIS_CLUSTER_NODES answered (%.500s)", last);
        return -EHOSTUNREACH;
    }
    c->seed_tries++;
    if (seed_store(c, c->seed_next, &c->seed) != 0)
        return -ENOMEM;
    int rc = gw_rl_redis_connect_start(c->seed, now);
    c->seed_connecting = rc == -EINPROGRESS;
    return rc;
}

/* Moves the non-blocking connect on: the seed link, then the map, then the
 * masters. */
static int cluster_connect_poll(void *store, uint64_t now)
{
    struct gw_rl_cluster *c = store;
    for (;;) {
        if (c->seed != NULL) {
            int rc = c->seed_connecting ? gw_rl_redis_connect_poll(c->seed, now) : 0;
            if (rc == -EINPROGRESS)
                return rc;
            bool linked = rc == 0;
            if (rc == 0)
                rc = read_map(c, c->seed, seed_host(c, c->seed_next));
            if (rc != 0) {
                char why[sizeof(c->err)];
                snprintf(why, sizeof(why), "%s", linked ? c->err : gw_rl_redis_last_error(c->seed));
                snprintf(c->err, sizeof(c->err), "seed %s: %.500s", seed_host(c, c->seed_next),
                         why);
                c->seed_next = (c->seed_next + 1) % (size_t)c->target->ncluster_nodes;
                rc = seed_begin(c, now);
                if (rc == -EINPROGRESS || rc == 0)
                    continue;
                return rc;
            }
            drop_seed(c);
            for (size_t i = 0; i < c->nnodes; i++)
                c->nodes[i].retry_at_ms = 0;
        }
        bool pending = false;
        size_t up = 0;
        for (size_t i = 0; i < c->nnodes; i++) {
            struct node *n = &c->nodes[i];
            if (!n->master || n->up) {
                up += n->up;
                continue;
            }
            node_connect_step(c, n, now);
            up += n->up;
            pending |= n->connecting;
        }
        if (pending)
            return -EINPROGRESS;
        if (up == 0) {
            snprintf(c->err, sizeof(c->err), "no cluster master answered");
            return -EHOSTUNREACH;
        }
        return 0;
    }
}

static int cluster_connect_start(void *store, uint64_t now)
{
    struct gw_rl_cluster *c = store;
    gw_rl_cluster_disconnect(c);
    c->seed_tries = 0;
    int rc = seed_begin(c, now);
    if (rc != 0 && rc != -EINPROGRESS)
        return rc;
    return cluster_connect_poll(c, now);
}

/* The periodic probe: idle links checked, failed nodes reconnected in the
 * background, the map read again after a failure or a redirect. 0 while
 * at least one master is up. */
static int cluster_probe(void *store)
{
    struct gw_rl_cluster *c = store;
    uint64_t now = gw_now_ms();
    size_t up = 0;
    for (size_t i = 0; i < c->nnodes; i++) {
        struct node *n = &c->nodes[i];
        if (n->up && gw_rl_redis_probe(n->r) != 0)
            node_down(c, n, now);
        if (!n->up && n->master)
            node_connect_step(c, n, now);
        up += n->up;
    }
    if (c->refresh)
        refresh_map(c, now);
    if (up == 0) {
        snprintf(c->err, sizeof(c->err), "no cluster master is up");
        return -ENOTCONN;
    }
    return 0;
}

/* Every master answers PING: 0; some do not: -EPROTO (the store stays up,
 * /health says disconnected); none: -ENOTCONN. */
static int cluster_ping(void *store)
{
    struct gw_rl_cluster *c = store;
    size_t up = 0, masters = 0;
    for (size_t i = 0; i < c->nnodes; i++) {
        struct node *n = &c->nodes[i];
        if (!n->master)
            continue;
        masters++;
        if (!n->up)
            continue;
        if (gw_rl_redis_ops.ping(n->r) == 0)
            up++;
        else if (!gw_rl_redis_connected(n->r))
            node_down(c, n, gw_now_ms());
    }
    if (up == 0)
        return -ENOTCONN;
    return up == masters ? 0 : -EPROTO;
}

/* A node connecting is polled every 5 ms (its handshake has a deadline);
 * a node waiting to retry, at its retry time; else the idle period. */
static uint64_t cluster_probe_in_ms(void *store)
{
    struct gw_rl_cluster *c = store;
    uint64_t now = gw_now_ms(), in = UINT64_MAX;
    for (size_t i = 0; i < c->nnodes; i++) {
        const struct node *n = &c->nodes[i];
        if (n->up || !n->master)
            continue;
        in = GW_MIN(in, n->connecting ? 5 : (n->retry_at_ms > now ? n->retry_at_ms - now : 1));
    }
    if (c->refresh)
        in = GW_MIN(in, REFRESH_MIN_MS);
    return in;
}

static void cluster_disconnect(void *store)
{
    gw_rl_cluster_disconnect(store);
}

static const char *cluster_last_error(const void *store)
{
    return ((const struct gw_rl_cluster *)store)->err;
}

/* ---- apply ---------------------------------------------------------------- */

/* The fast path: one call per node, keys in ARGV (many slots); a unit
 * whose key is not on the node (a stale map, a slot being migrated)
 * answers ELSEWHERE and, with every unit of a call that failed, is sent
 * again in the slow path: one call per slot with declared keys, so the
 * server redirects it (MOVED, ASK, TRYAGAIN). */

struct group_op {
    uint16_t group; /* node (fast) or slot */
    uint32_t op;
};

static int by_group(const void *a, const void *b)
{
    const struct group_op *x = a, *y = b;
    if (x->group != y->group)
        return x->group < y->group ? -1 : 1;
    return x->op < y->op ? -1 : x->op > y->op;
}

/* Carves n bytes (aligned) from arena ar at *at. */
static void *carve(struct arena *ar, size_t *at, size_t n)
{
    size_t off = (*at + 15) & ~(size_t)15;
    *at = off + n;
    return (char *)ar->p + off;
}

/* Bytes of one state-key name at most: base + ":sw:<20 digits>:<20 digits>". */
#define STATE_SUFFIX_MAX 48

/* Builds the calls over pass p: one per node (fast) or per slot. op_map
 * and unit_map (may be NULL) turn p's op and unit indices into the
 * caller's. Returns the call count, or -ENOMEM. */
static ssize_t build_calls(struct gw_rl_cluster *c, struct arena *ar, const struct gw_rl_pass *p,
                           bool fast, const uint32_t *op_map, const uint32_t *unit_map,
                           struct call **calls_out)
{
    size_t nops = 0, maxk = 0;
    for (size_t u = 0; u < p->nunits; u++)
        nops += p->units[u].n;
    for (size_t i = 0; i < p->nkeys; i++)
        maxk = GW_MAX(maxk, p->key_lens[i]);
    /* Every array below is carved at most once per op (a call per op at
     * worst), each carve aligned to 16 bytes. */
    size_t per_op = sizeof(struct group_op) + sizeof(struct call) + sizeof(uint32_t) +
                    sizeof(struct gw_rl_op) + sizeof(struct gw_rl_unit) + 2 * sizeof(uint32_t) +
                    sizeof(uint16_t) + 3 * (sizeof(char *) + sizeof(size_t)) +
                    2 * (maxk + STATE_SUFFIX_MAX) + 12 * 16;
    size_t need = nops * per_op + p->nkeys * sizeof(uint32_t) + p->nops * sizeof(uint32_t) + 256;
    if (need > ar->cap) {
        void *a = realloc(ar->p, need);
        if (a == NULL)
            return -ENOMEM;
        ar->p = a;
        ar->cap = need;
    }
    size_t at = 0;
    struct group_op *go = carve(ar, &at, nops * sizeof(*go));
    uint32_t *kslot = carve(ar, &at, p->nkeys * sizeof(*kslot));
    for (size_t i = 0; i < p->nkeys; i++)
        kslot[i] = gw_rl_cluster_slot(p->keys[i], p->key_lens[i]);
    uint32_t *unit_of_op = carve(ar, &at, p->nops * sizeof(uint32_t));
    size_t k = 0;
    for (size_t u = 0; u < p->nunits; u++)
        for (size_t j = 0; j < p->units[u].n; j++, k++) {
            uint32_t op = p->units[u].first + (uint32_t)j;
            unsigned slot = kslot[p->ops[op].key];
            go[k] =
                (struct group_op){.group = fast ? c->slot_node[slot] : (uint16_t)slot, .op = op};
            unit_of_op[op] = (uint32_t)u;
        }
    qsort(go, nops, sizeof(*go), by_group);
    size_t ncalls = 0;
    for (size_t i = 0; i < nops; i++)
        ncalls += i == 0 || go[i].group != go[i - 1].group;
    struct call *calls = carve(ar, &at, ncalls * sizeof(*calls));
    int64_t now_ms = redis_now_ms(c);
    size_t ci = 0;
    for (size_t i = 0; i < nops; ci++) {
        size_t e = i;
        while (e < nops && go[e].group == go[i].group)
            e++;
        size_t n = e - i;
        struct call *cl = &calls[ci];
        memset(cl, 0, sizeof(*cl));
        cl->fast = fast;
        cl->slot = fast ? 0 : go[i].group;
        cl->node = fast ? go[i].group : c->slot_node[go[i].group];
        cl->op_first = (uint32_t)i;
        cl->op_n = (uint32_t)n;
        struct gw_rl_op *ops = carve(ar, &at, n * sizeof(*ops));
        struct gw_rl_unit *units = carve(ar, &at, n * sizeof(*units));
        cl->op_of = carve(ar, &at, n * sizeof(uint32_t));
        cl->unit_of = carve(ar, &at, n * sizeof(uint32_t));
        const char **keys = carve(ar, &at, n * sizeof(char *));
        uint16_t *kidx = carve(ar, &at, n * sizeof(uint16_t));
        size_t *lens = carve(ar, &at, n * sizeof(size_t));
        const char **xkeys = fast ? NULL : carve(ar, &at, 2 * n * sizeof(char *));
        size_t *xlens = fast ? NULL : carve(ar, &at, 2 * n * sizeof(size_t));
        size_t nk = 0, nu = 0, nx = 0;
        uint32_t last_unit = UINT32_MAX;
        for (size_t j = 0; j < n; j++) {
            uint32_t op = go[i + j].op;
            const struct gw_rl_op *src = &p->ops[op];
            /* the key, once per call */
            size_t lk = nk;
            for (size_t q = 0; q < nk; q++)
                if (kidx[q] == src->key) {
                    lk = q;
                    break;
                }
            if (lk == nk) {
                kidx[nk] = src->key;
                keys[nk] = p->keys[src->key];
                lens[nk++] = p->key_lens[src->key];
            }
            uint32_t u = unit_of_op[op];
            if (nu == 0 || last_unit != u) {
                units[nu] = (struct gw_rl_unit){.first = (uint16_t)j, .n = 0};
                cl->unit_of[nu++] = unit_map != NULL ? unit_map[u] : u;
                last_unit = u;
            }
            units[nu - 1].n++;
            ops[j] = (struct gw_rl_op){.key = (uint16_t)lk, .spec = src->spec};
            cl->op_of[j] = op_map != NULL ? op_map[op] : op;
            if (fast)
                continue;
            /* the state keys the script will touch, declared for routing */
            const struct gw_rl_spec *sp = &p->specs[src->spec];
            const char *base = p->keys[src->key];
            size_t blen = p->key_lens[src->key];
            int copies = sp->algorithm == GW_RL_SLIDING_WINDOW ? 2 : 1;
            for (int d = 0; d < copies && nx < 2 * n; d++) {
                char *kb = carve(ar, &at, blen + STATE_SUFFIX_MAX);
                memcpy(kb, base, blen);
                int w;
                if (sp->algorithm == GW_RL_TOKEN_BUCKET) {
                    w = snprintf(kb + blen, STATE_SUFFIX_MAX, ":tb");
                } else {
                    long long idx = (long long)(now_ms / sp->window_ms) - d;
                    w = snprintf(kb + blen, STATE_SUFFIX_MAX, ":%s:%lld:%lld",
                                 sp->algorithm == GW_RL_SLIDING_WINDOW ? "sw" : "fw",
                                 (long long)sp->window_ms, idx);
                }
                xkeys[nx] = kb;
                xlens[nx++] = blen + (size_t)w;
            }
        }
        cl->sub = (struct gw_rl_pass){.mode = p->mode,
                                      .keys = keys,
                                      .key_lens = lens,
                                      .nkeys = nk,
                                      .specs = p->specs,
                                      .nspecs = p->nspecs,
                                      .ops = ops,
                                      .nops = n,
                                      .units = units,
                                      .nunits = nu,
                                      .extra_keys = xkeys,
                                      .extra_lens = xlens,
                                      .nextra = nx,
                                      /* Bases in ARGV on the slow path too: a
                                       * base never exists as a key, and declared
                                       * it would make every call of a slot in
                                       * migration "some keys missing" (TRYAGAIN
                                       * on the source with the state there, and
                                       * on the target after ASK). */
                                      .keys_in_argv = true};
        i = e;
    }
    *calls_out = calls;
    return (ssize_t)ncalls;
}

static bool starts(const redisReply *rep, const char *word)
{
    size_t n = strlen(word);
    return rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, word, n) == 0 &&
           (rep->str[n] == ' ' || rep->str[n] == '\0');
}

/* What to do with a call after its reply. */
enum outcome { OUT_DONE, OUT_RETRY, OUT_FAILED };

static enum outcome take_call_reply(struct gw_rl_cluster *c, struct call *cl, redisReply *rep,
                                    uint64_t now)
{
    if (starts(rep, "NOSCRIPT")) {
        freeReplyObject(rep);
        cl->eval = true;
        return OUT_RETRY;
    }
    if (cl->fast && rep->type == REDIS_REPLY_ERROR) {
        /* CLUSTERDOWN, a script error: the slow path asks by slot. */
        snprintf(c->err, sizeof(c->err), "%s", rep->str);
        freeReplyObject(rep);
        return OUT_FAILED;
    }
    bool ask;
    unsigned slot;
    const char *host;
    size_t hlen;
    int port;
    if (rep->type == REDIS_REPLY_ERROR &&
        gw_redis_parse_redirect(rep->str, &ask, &slot, &host, &hlen, &port)) {
        if (hlen == 0) { /* an unknown endpoint: the node that replied */
            host = c->nodes[cl->node].host;
            hlen = strlen(host);
        }
        uint16_t ni = node_find_add(c, host, hlen, port, NULL);
        gw_redis_redirect_count(ask);
        snprintf(c->err, sizeof(c->err), "%s", rep->str);
        freeReplyObject(rep);
        if (ni == NO_NODE)
            return OUT_FAILED;
        if (!ask) {
            c->slot_node[cl->slot] = ni;
            c->refresh = true;
        }
        cl->node = ni;
        cl->asking = ask;
        if (!c->nodes[ni].up) {
            c->nodes[ni].master = true;
            node_connect_step(c, &c->nodes[ni], now);
        }
        if (!c->nodes[ni].up && c->nodes[ni].connecting) {
            cl->retry_at_ms = now + 1; /* a new master: run_round waits for its connect */
            cl->await_connect = true;
        }
        return c->nodes[ni].up || c->nodes[ni].connecting ? OUT_RETRY : OUT_FAILED;
    }
    if (starts(rep, "TRYAGAIN")) {
        /* A multi-key call on a slot being migrated: wait for the keys to
         * move. */
        freeReplyObject(rep);
        cl->retry_at_ms = now + 2;
        cl->asking = false;
        if (c->slot_node[cl->slot] != NO_NODE)
            cl->node = c->slot_node[cl->slot];
        return OUT_RETRY;
    }
    int rc = gw_rl_redis_take_reply(c->nodes[cl->node].r, rep, &cl->sub);
    if (rc != 0) {
        /* CLUSTERDOWN (the cluster lost a master it cannot replace: every
         * node refuses), OOM, BUSY, ...: those checks go to the failure
         * mode; said at most once a second per worker. */
        char name[300];
        snprintf(c->err, sizeof(c->err), "%s", gw_rl_redis_last_error(c->nodes[cl->node].r));
        if (now >= c->warned_at_ms + 1000) {
            c->warned_at_ms = now;
            gw_warn(
                "rate limit: redis cluster node %s refused checks (%s); RATE_LIMIT_FAILURE_MODE "
                "decides them",
                node_name(&c->nodes[cl->node], name, sizeof(name)), c->err);
        }
        return OUT_FAILED;
    }
    if (cl->sub.mode != GW_RL_PASS_REFUND)
        saw_redis_clock(c, cl->sub.now_us);
    cl->asking = false;
    return OUT_DONE;
}

/* Milliseconds from now to deadline (gw_now_ms), 0 when past. */
static int ms_until(uint64_t deadline)
{
    uint64_t now = gw_now_ms();
    return now >= deadline ? 0 : (int)GW_MIN(deadline - now, (uint64_t)INT32_MAX);
}

/* Sends every call still to do (all nodes first), then reads the replies.
 * Returns true when a call answered. */
static bool run_round(struct gw_rl_cluster *c, struct call *calls, size_t ncalls, uint64_t deadline)
{
    uint64_t now = gw_now_ms();
    bool any = false;
    bool queued[NODES_MAX] = {false};
    for (size_t i = 0; i < ncalls; i++) {
        struct call *cl = &calls[i];
        cl->sent = false;
        if (cl->done || cl->failed || cl->retry_at_ms > now)
            continue;
        /* A call redirected to a master being connected (one a redirect
         * named first: a promoted replica, a node added and given slots)
         * waits for the non-blocking connect while the timeout lasts,
         * instead of falling to RATE_LIMIT_FAILURE_MODE. Only such calls:
         * a failed master being reconnected in the background (a hung one
         * accepts the TCP connect) makes no request wait. */
        if (cl->await_connect && cl->node != NO_NODE && !c->nodes[cl->node].up &&
            c->nodes[cl->node].connecting) {
            node_connect_step(c, &c->nodes[cl->node], now);
            if (c->nodes[cl->node].connecting) {
                cl->retry_at_ms = now + 1;
                continue;
            }
        }
        if (cl->node == NO_NODE || !c->nodes[cl->node].up) {
            cl->failed = true;
            c->refresh = true;
            continue;
        }
        struct node *n = &c->nodes[cl->node];
        if (gw_rl_redis_queue(n->r, &cl->sub, cl->asking, cl->eval) != 0) {
            node_down(c, n, now);
            cl->failed = true;
            continue;
        }
        cl->sent = true;
        queued[cl->node] = true;
    }
    for (size_t ni = 0; ni < c->nnodes; ni++)
        if (queued[ni] && gw_rl_redis_flush(c->nodes[ni].r) != 0)
            node_down(c, &c->nodes[ni], now);
    for (size_t i = 0; i < ncalls; i++) {
        struct call *cl = &calls[i];
        if (!cl->sent)
            continue;
        struct node *n = &c->nodes[cl->node];
        if (!n->up) {
            cl->failed = true;
            continue;
        }
        bool asking = cl->asking;
        void *v = NULL;
        /* Every read of the round waits only until the pass's deadline
         * (replies of the nodes that answered are in their sockets by
         * then): two hung masters cost one REDIS_TIMEOUT_MS, not two. */
        int rc = gw_rl_redis_reply_within(n->r, &v, ms_until(deadline));
        if (rc == 0 && asking) {
            freeReplyObject(v); /* ASKING's +OK */
            rc = gw_rl_redis_reply_within(n->r, &v, ms_until(deadline));
        }
        if (rc != 0) {
            node_down(c, n, gw_now_ms());
            cl->failed = true;
            continue;
        }
        any = true;
        enum outcome o = take_call_reply(c, cl, v, gw_now_ms());
        if (o == OUT_DONE)
            cl->done = true;
        else if (o == OUT_FAILED || gw_now_ms() >= deadline)
            cl->failed = true;
    }
    return any;
}

/* Runs rounds until every call is done or failed, or the deadline. */
static bool run_calls(struct gw_rl_cluster *c, struct call *calls, size_t ncalls, int rounds,
                      uint64_t deadline)
{
    bool answered = false;
    for (int round = 0; round < rounds; round++) {
        answered |= run_round(c, calls, ncalls, deadline);
        bool todo = false;
        uint64_t wake = UINT64_MAX;
        for (size_t i = 0; i < ncalls; i++)
            if (!calls[i].done && !calls[i].failed) {
                todo = true;
                wake = GW_MIN(wake, calls[i].retry_at_ms);
            }
        uint64_t now = gw_now_ms();
        if (!todo || now >= deadline)
            break;
        if (wake > now) {
            /* TRYAGAIN: a slot in migration; its keys move within ms. */
            uint64_t ms = GW_MIN(wake, deadline) - now;
            struct timespec ts = {0, (long)ms * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    return answered;
}

/* Takes back the commits of the parts of units that other parts refused
 * (whole[u] != 1): each finished call is sent again in refund mode with
 * only those units (redirects followed like any call), within the
 * timeout. */
static void refund(struct gw_rl_cluster *c, struct call *calls, size_t ncalls, const uint8_t *whole)
{
    bool any = false;
    for (size_t i = 0; i < ncalls; i++) {
        struct call *cl = &calls[i];
        size_t k = 0;
        for (size_t u = 0; u < cl->sub.nunits && cl->done; u++)
            if (cl->sub.units[u].result == GW_RL_UNIT_ALLOWED && whole[cl->unit_of[u]] != 1)
                cl->sub.units[k++] = cl->sub.units[u];
        /* Folded already: the call is free to be sent again. */
        cl->failed = k == 0; /* nothing to take back: not sent */
        if (k == 0)
            continue;
        cl->sub.nunits = k;
        cl->sub.mode = GW_RL_PASS_REFUND;
        cl->sub.refund_at_us = cl->sub.now_us;
        cl->done = cl->asking = cl->await_connect = false;
        cl->retry_at_ms = 0;
        any = true;
    }
    if (any)
        (void)run_calls(c, calls, ncalls, ROUNDS_MAX, gw_now_ms() + (uint64_t)c->timeout_ms);
}

/* Folds the parts of calls into whole[] (1 all allowed, 2 refused, 3
 * error, 4 undecided: refused beats error beats undecided beats allowed)
 * and the ops' state into p. Fast calls that failed, and their ELSEWHERE
 * units, are skipped: the slow path decided them. */
static void fold(struct call *calls, size_t ncalls, struct gw_rl_pass *p, uint8_t *whole,
                 int64_t *now_us)
{
    for (size_t i = 0; i < ncalls; i++) {
        struct call *cl = &calls[i];
        if (cl->fast && !cl->done)
            continue;
        if (cl->done)
            *now_us = GW_MAX(*now_us, cl->sub.now_us);
        for (size_t u = 0; u < cl->sub.nunits; u++) {
            const struct gw_rl_unit *su = &cl->sub.units[u];
            enum gw_rl_unit_result r = cl->done ? su->result : GW_RL_UNIT_UNDECIDED;
            if (r == GW_RL_UNIT_ELSEWHERE)
                continue;
            for (size_t j = su->first; j < (size_t)su->first + su->n && cl->done; j++) {
                p->ops[cl->op_of[j]].a = cl->sub.ops[j].a;
                p->ops[cl->op_of[j]].b = cl->sub.ops[j].b;
            }
            uint32_t pu = cl->unit_of[u];
            uint8_t v = r == GW_RL_UNIT_ALLOWED   ? 1
                        : r == GW_RL_UNIT_REFUSED ? 2
                        : r == GW_RL_UNIT_ERROR   ? 3
                                                  : 4;
            if (v == 2 || (v == 3 && whole[pu] != 2) || (v == 4 && whole[pu] == 1))
                whole[pu] = v;
        }
    }
}

/* Bytes residual_pass lays out for pass p (zeroed by the caller). */
#define RESIDUAL_BYTES(p)                                                                          \
    ((p)->nops * (1 + sizeof(struct gw_rl_op) + sizeof(uint32_t)) +                                \
     (p)->nunits * (sizeof(struct gw_rl_unit) + sizeof(uint32_t)) + 64)

/* The ops the fast path left (its failed calls, its ELSEWHERE units), as a
 * pass of their own in unit order (one unit per unit of p that has any),
 * laid out in m (RESIDUAL_BYTES(p), zeroed: the scratch arena). */
static void residual_pass(const struct call *calls, size_t ncalls, const struct gw_rl_pass *p,
                          struct gw_rl_pass *res, uint32_t **op_map, uint32_t **unit_map, char *m)
{
    bool *again = (bool *)m;
    struct gw_rl_op *ops = (struct gw_rl_op *)(m + ((p->nops + 15) & ~(size_t)15));
    uint32_t *om = (uint32_t *)(ops + p->nops);
    struct gw_rl_unit *units = (struct gw_rl_unit *)(om + p->nops + 1);
    uint32_t *um = (uint32_t *)(units + p->nunits);
    size_t any = 0;
    for (size_t i = 0; i < ncalls; i++) {
        const struct call *cl = &calls[i];
        for (size_t u = 0; u < cl->sub.nunits; u++) {
            const struct gw_rl_unit *su = &cl->sub.units[u];
            if (cl->done && su->result != GW_RL_UNIT_ELSEWHERE)
                continue;
            for (size_t j = su->first; j < (size_t)su->first + su->n; j++) {
                again[cl->op_of[j]] = true;
                any++;
            }
        }
    }
    size_t no = 0, nu = 0;
    for (size_t u = 0; u < p->nunits && any > 0; u++) {
        size_t first = no;
        for (size_t j = 0; j < p->units[u].n; j++) {
            uint32_t op = p->units[u].first + (uint32_t)j;
            if (!again[op])
                continue;
            ops[no] = p->ops[op];
            om[no++] = op;
        }
        if (no > first) {
            units[nu] = (struct gw_rl_unit){.first = (uint16_t)first, .n = (uint16_t)(no - first)};
            um[nu++] = (uint32_t)u;
        }
    }
    *res = *p;
    res->ops = ops;
    res->nops = no;
    res->units = units;
    res->nunits = nu;
    *op_map = om;
    *unit_map = um;
}

static int cluster_apply(void *store, struct gw_rl_pass *p)
{
    struct gw_rl_cluster *c = store;
    for (size_t u = 0; u < p->nunits; u++)
        p->units[u].result = GW_RL_UNIT_UNDECIDED;
    if (p->nunits == 0)
        return 0;
    size_t up = 0;
    for (size_t i = 0; i < c->nnodes; i++)
        up += c->nodes[i].up;
    if (!c->mapped || up == 0)
        return -ENOTCONN;
    uint64_t deadline = gw_now_ms() + (uint64_t)c->timeout_ms;
    /* Fast path: one call per node (a second round only for NOSCRIPT). */
    struct call *fast = NULL, *slow = NULL;
    ssize_t nf = build_calls(c, &c->arena[0], p, true, NULL, NULL, &fast);
    if (nf < 0)
        return (int)nf;
    bool answered = run_calls(c, fast, (size_t)nf, 2, deadline);
    /* Slow path: what the fast one left, per slot, redirects followed. */
    size_t rbytes = RESIDUAL_BYTES(p);
    struct arena *sc = &c->arena[2];
    if (rbytes + p->nunits > sc->cap) {
        void *a = realloc(sc->p, rbytes + p->nunits);
        if (a == NULL)
            return -ENOMEM;
        sc->p = a;
        sc->cap = rbytes + p->nunits;
    }
    memset(sc->p, 0, rbytes);
    struct gw_rl_pass res;
    uint32_t *op_map = NULL, *unit_map = NULL;
    residual_pass(fast, (size_t)nf, p, &res, &op_map, &unit_map, sc->p);
    ssize_t ns = 0;
    if (res.nunits > 0) {
        ns = build_calls(c, &c->arena[1], &res, false, op_map, unit_map, &slow);
        if (ns < 0)
            return (int)ns;
        /* The slow path has its own timeout: a stale map costs one more
         * round trip, not a failure. */
        answered |= run_calls(c, slow, (size_t)ns, ROUNDS_MAX,
                              GW_MAX(deadline, gw_now_ms() + (uint64_t)c->timeout_ms));
    }
    uint8_t *whole = (uint8_t *)sc->p + rbytes;
    memset(whole, 1, p->nunits);
    int64_t now_us = 0;
    fold(fast, (size_t)nf, p, whole, &now_us);
    fold(slow, (size_t)ns, p, whole, &now_us);
    for (size_t u = 0; u < p->nunits; u++)
        p->units[u].result = whole[u] == 1   ? GW_RL_UNIT_ALLOWED
                             : whole[u] == 2 ? GW_RL_UNIT_REFUSED
                             : whole[u] == 3 ? GW_RL_UNIT_ERROR
                                             : GW_RL_UNIT_UNDECIDED;
    p->now_us = now_us;
    if (p->mode == GW_RL_PASS_DECIDE) {
        refund(c, fast, (size_t)nf, whole);
        refund(c, slow, (size_t)ns, whole);
    }
    up = 0;
    for (size_t i = 0; i < c->nnodes; i++)
        up += c->nodes[i].up;
    if (!answered && up == 0)
        return -ENOTCONN;
    return 0;
}

const struct gw_rl_store_ops gw_rl_cluster_ops = {
    .name = "redis-cluster",
    .apply = cluster_apply,
    .ping = cluster_ping,
    .connect = cluster_connect,
    .connect_start = cluster_connect_start,
    .connect_poll = cluster_connect_poll,
    .probe = cluster_probe,
    .disconnect = cluster_disconnect,
    .last_error = cluster_last_error,
    .destroy = cluster_destroy,
    .probe_in_ms = cluster_probe_in_ms,
};
