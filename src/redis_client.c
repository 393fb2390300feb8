/*
 * A blocking Redis client on the transport of redis_conn.c (redis_client.h),
 * with Sentinel discovery (redis_sentinel.c) when the target has sentinels,
 * and Redis Cluster routing when it has cluster nodes: the slot map read
 * from a seed with CLUSTER SLOTS, one link per master (opened when a
 * command first goes there), each command sent to the master of its key's
 * slot, -MOVED (map updated, resent), -ASK (ASKING + the command on that
 * node, once) and -TRYAGAIN (a few short waits) followed before the caller
 * sees the reply. Pipelined commands may sit on several links: a FIFO of
 * what was sent keeps the replies in the caller's order.
 */
#include "redis_client.h"

#include "gw/redis_redirects.h"
#include "gw/resolve.h"
#include "ratelimit_int.h"
#include "redis_sentinel.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_REDIRECTS    5   /* -MOVED/-ASK followed per command, at most */
#define MAX_TRYAGAIN     4   /* -TRYAGAIN retries per command, at most */
#define TRYAGAIN_WAIT_MS 25  /* first wait before a retry, doubled each time */
#define MAX_NODES        128 /* cluster nodes a client links to, at most */

/* A cluster node: a master named by CLUSTER SLOTS, a redirect or a seed. */
struct cnode {
    char host[256];            /* as the cluster (or the seed list) names it */
    int port;                  /* TCP port */
    struct gw_redis_conn conn; /* the link, opened on first use */
};

/* A command sent in cluster mode whose reply the caller has not taken. */
struct pend {
    int node;          /* the node it was last sent to */
    char *cmd;         /* its RESP bytes (heap), for a resend */
    size_t len;        /* bytes in cmd */
    redisReply *early; /* its reply, read before its turn (a redirect needed the link) */
};

struct gw_redis_client {
    const struct gw_redis_target *t;    /* borrowed */
    int timeout_ms;                     /* each step's bound */
    struct gw_redis_conn conn;          /* the link (not in cluster mode) */
    struct gw_redis_sentinel *sentinel; /* Sentinel mode, else NULL */
    /* Cluster mode (t->ncluster_nodes > 0). */
    bool cluster;                          /* routed by slot */
    bool up;                               /* slot map read, no link failed since */
    int home;                              /* node that answered CLUSTER SLOTS */
    struct cnode *nodes[MAX_NODES];        /* known nodes, heap each */
    int nnodes;                            /* entries in nodes */
    int16_t owner[GW_REDIS_CLUSTER_SLOTS]; /* node index per slot, -1 unknown */
    struct pend *pend;                     /* FIFO of commands awaiting replies */
    size_t npend, pend_cap;                /* entries, capacity */
    char err[400];                         /* last failure */
};

int gw_redis_client_create(struct gw_redis_client **out, const struct gw_redis_target *t,
                           int timeout_ms, char *why, size_t why_len)
{
    struct gw_redis_client *cl = calloc(1, sizeof(*cl));
    if (cl == NULL)
        return -ENOMEM;
    cl->t = t;
    cl->timeout_ms = timeout_ms > 0 ? timeout_ms : 100;
    cl->cluster = t->ncluster_nodes > 0;
    memset(cl->owner, 0xff, sizeof(cl->owner)); /* -1: unknown */
    /* In cluster mode this only checks the TLS settings (each node's link
     * has its own context, like every link). */
    int rc = gw_redis_conn_init(&cl->conn, t, why, why_len);
    if (rc == 0 && t->nsentinels > 0) {
        cl->sentinel = calloc(1, sizeof(*cl->sentinel));
        rc = cl->sentinel == NULL
                 ? -ENOMEM
                 : gw_redis_sentinel_init(cl->sentinel, t, cl->timeout_ms, why, why_len);
    }
    if (rc != 0) {
        gw_redis_client_destroy(cl);
        return rc;
    }
    *out = cl;
    return 0;
}

/* ---- cluster bookkeeping ------------------------------------------------ */

static void pend_free_all(struct gw_redis_client *cl)
{
    for (size_t i = 0; i < cl->npend; i++) {
        explicit_bzero(cl->pend[i].cmd, cl->pend[i].len);
        redisFreeCommand(cl->pend[i].cmd);
        freeReplyObject(cl->pend[i].early);
    }
    cl->npend = 0;
}

/* Every link closed, the queue dropped: the next use needs a connect. */
static void cluster_down(struct gw_redis_client *cl)
{
    cl->up = false;
    pend_free_all(cl);
    for (int i = 0; i < cl->nnodes; i++)
        gw_redis_conn_close(&cl->nodes[i]->conn);
}

void gw_redis_client_destroy(struct gw_redis_client *cl)
{
    if (cl == NULL)
        return;
    pend_free_all(cl);
    free(cl->pend);
    for (int i = 0; i < cl->nnodes; i++) {
        gw_redis_conn_deinit(&cl->nodes[i]->conn);
        free(cl->nodes[i]);
    }
    gw_redis_conn_deinit(&cl->conn);
    if (cl->sentinel != NULL) {
        gw_redis_sentinel_deinit(cl->sentinel);
        free(cl->sentinel);
    }
    free(cl);
}

/* Index of node host:port (hlen bytes of host), added when new; -ENOMEM,
 * -ENOSPC (too many nodes) or -EINVAL (a name too long). */
static int node_index(struct gw_redis_client *cl, const char *host, size_t hlen, int port)
{
    for (int i = 0; i < cl->nnodes; i++)
        if (cl->nodes[i]->port == port && strlen(cl->nodes[i]->host) == hlen &&
            memcmp(cl->nodes[i]->host, host, hlen) == 0)
            return i;
    if (cl->nnodes == MAX_NODES) {
        snprintf(cl->err, sizeof(cl->err), "more than %d cluster nodes", MAX_NODES);
        return -ENOSPC;
    }
    if (hlen == 0 || hlen >= sizeof(cl->nodes[0]->host) || port <= 0 || port > 65535) {
        snprintf(cl->err, sizeof(cl->err), "a cluster node address that cannot be used");
        return -EINVAL;
    }
    struct cnode *n = calloc(1, sizeof(*n));
    char why[200];
    if (n == NULL || gw_redis_conn_init(&n->conn, cl->t, why, sizeof(why)) != 0) {
        if (n != NULL)
            gw_redis_conn_deinit(&n->conn);
        free(n);
        snprintf(cl->err, sizeof(cl->err), "out of memory");
        return -ENOMEM;
    }
    memcpy(n->host, host, hlen);
    n->port = port;
    cl->nodes[cl->nnodes] = n;
    return cl->nnodes++;
}

/* ---- links ------------------------------------------------------------- */

static int fail_link(struct gw_redis_client *cl, struct gw_redis_conn *c, int rc, const char *what)
{
    snprintf(cl->err, sizeof(cl->err), "%s: %.300s", what, gw_redis_conn_error(c));
    gw_redis_conn_close(c);
    return rc;
}

/* The next reply on link c, waiting at most the timeout: 0 with *rep, or
 * -errno with the link closed and err set. */
static int link_reply(struct gw_redis_client *cl, struct gw_redis_conn *c, redisReply **rep)
{
    void *r = NULL;
    *rep = NULL;
    if (c->state != GW_RCONN_OPEN) {
        snprintf(cl->err, sizeof(cl->err), "not connected");
        return -ENOTCONN;
    }
    int rc = gw_redis_conn_get_reply(c, &r, cl->timeout_ms);
    if (rc == -EAGAIN) {
        snprintf(cl->err, sizeof(cl->err), "no reply within %d ms", cl->timeout_ms);
        gw_redis_conn_close(c); /* the stream is out of step now */
        return -ETIMEDOUT;
    }
    if (rc != 0)
        return fail_link(cl, c, rc, "reply");
    *rep = r;
    return 0;
}

/* Queues one command on link c. 0 or -ENOMEM. */
static int link_append(struct gw_redis_conn *c, int argc, const char **argv, const size_t *lens)
{
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (len < 0)
        return -ENOMEM;
    int rc = gw_redis_conn_append(c, cmd, (size_t)len);
    explicit_bzero(cmd, (size_t)len); /* AUTH holds a password */
    redisFreeCommand(cmd);
    return rc;
}

/* One setup command on link c answered +OK, or the failure (link closed). */
static int setup(struct gw_redis_client *cl, struct gw_redis_conn *c, int argc, const char **argv,
                 const char *what)
{
    if (link_append(c, argc, argv, NULL) != 0)
        return -ENOMEM;
    redisReply *rep = NULL;
    if (link_reply(cl, c, &rep) != 0)
        return -EIO;
    bool ok = rep->type == REDIS_REPLY_STATUS;
    if (!ok)
        snprintf(cl->err, sizeof(cl->err), "%s: %.300s", what,
                 rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
    freeReplyObject(rep);
    if (!ok)
        gw_redis_conn_close(c);
    return ok ? 0 : -EACCES;
}

/* Opens link c to host:port (or the target's unix socket): connect, TLS,
 * AUTH, SELECT, each bounded by the timeout. 0 or -errno with err set. */
static int link_open(struct gw_redis_client *cl, struct gw_redis_conn *c, const char *host,
                     int port)
{
    const struct gw_redis_target *t = cl->t;
    gw_redis_conn_close(c);
    char addr[256];
    if (t->unix_path == NULL && gw_resolve_host_text(host, port, 0, addr, sizeof(addr)) != 0) {
        snprintf(cl->err, sizeof(cl->err), "connect: %.200s has no address (yet)", host);
        gw_resolve_kick_host(host, port);
        return -EHOSTUNREACH;
    }
    int rc = gw_redis_conn_start(c, t->unix_path != NULL ? NULL : addr, port, t->unix_path,
                                 t->tls_server_name != NULL ? t->tls_server_name : host);
    if (rc == -EINPROGRESS)
        rc = gw_redis_conn_establish(c, cl->timeout_ms);
    if (rc == -EAGAIN && c->state != GW_RCONN_OPEN) {
        gw_redis_conn_close(c);
        snprintf(cl->err, sizeof(cl->err), "connect: timed out");
        gw_resolve_kick_host(host, port);
        return -ETIMEDOUT;
    }
    if (rc != 0 && rc != -EAGAIN) {
        gw_resolve_kick_host(host, port);
        return fail_link(cl, c, rc, "connect");
    }
    /* Bounded replies, as the limiter's links: "*2000000000" from a
     * broken or hostile node (CLUSTER SLOTS, any reply) made hiredis
     * allocate a 16 GB element table and spend seconds of CPU freeing it,
     * every 500 ms while the rules sync retried. */
    gw_rl_redis_bound_reader(c->reader);
    if (t->password != NULL) {
        const char *auth[] = {"AUTH", t->username != NULL ? t->username : t->password, t->password};
        if ((rc = setup(cl, c, t->username != NULL ? 3 : 2, auth, "AUTH")) != 0)
            return rc;
    }
    if (t->db > 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", t->db);
        if ((rc = setup(cl, c, 2, (const char *[]){"SELECT", db}, "SELECT")) != 0)
            return rc;
    }
    return 0;
}

/* Node i's link, opened when it is not. 0 or -errno with err naming it. */
static int node_link(struct gw_redis_client *cl, int i)
{
    struct cnode *n = cl->nodes[i];
    if (n->conn.state == GW_RCONN_OPEN)
        return 0;
    int rc = link_open(cl, &n->conn, n->host, n->port);
    if (rc != 0) {
        char why[sizeof(cl->err)];
        snprintf(why, sizeof(why), "cluster node %.100s:%d: %.250s", n->host, n->port, cl->err);
        memcpy(cl->err, why, sizeof(why));
    }
    return rc;
}

/* ---- the slot map ------------------------------------------------------- */

/* Fills owner from a CLUSTER SLOTS reply of node from
 * (gw_redis_parse_cluster_slots; an empty host is the node asked).
 * Returns the number of slots mapped, or -errno. */
static int read_slots(struct gw_redis_client *cl, int from, const redisReply *rep)
{
    struct gw_redis_slot_range *g = malloc(GW_REDIS_CLUSTER_SLOTS * sizeof(*g));
    if (g == NULL)
        return -ENOMEM;
    int n = gw_redis_parse_cluster_slots(rep, g, GW_REDIS_CLUSTER_SLOTS);
    if (n < 0) {
        snprintf(cl->err, sizeof(cl->err), "CLUSTER SLOTS: %.300s",
                 rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
        free(g);
        return -EPROTO;
    }
    memset(cl->owner, 0xff, sizeof(cl->owner));
    int mapped = 0;
    for (int i = 0; i < n; i++) {
        const char *host = g[i].host != NULL ? g[i].host : cl->nodes[from]->host;
        size_t hlen = g[i].host != NULL ? g[i].host_len : strlen(host);
        int idx = node_index(cl, host, hlen, g[i].port);
        if (idx == -ENOMEM) {
            free(g);
            return idx;
        }
        if (idx < 0)
            continue;
        for (unsigned sl = g[i].lo; sl <= g[i].hi; sl++)
            cl->owner[sl] = (int16_t)idx;
        mapped += (int)(g[i].hi - g[i].lo + 1);
    }
    free(g);
    return mapped;
}

/* Tries the seeds in turn until one answers CLUSTER SLOTS. */
static int cluster_connect(struct gw_redis_client *cl)
{
    const struct gw_redis_target *t = cl->t;
    cluster_down(cl);
    char last[sizeof(cl->err)] = "no seed";
    for (int i = 0; i < t->ncluster_nodes; i++) {
        const struct gw_redis_node *seed = &t->cluster_nodes[i];
        int idx = node_index(cl, seed->host, strlen(seed->host), seed->port);
        if (idx == -ENOMEM)
            return idx;
        if (idx < 0 || node_link(cl, idx) != 0) {
            memcpy(last, cl->err, sizeof(last));
            continue;
        }
        struct gw_redis_conn *c = &cl->nodes[idx]->conn;
        redisReply *rep = NULL;
        if (link_append(c, 2, (const char *[]){"CLUSTER", "SLOTS"}, NULL) != 0)
            return -ENOMEM;
        if (link_reply(cl, c, &rep) != 0) {
            snprintf(last, sizeof(last), "%s:%d: %.300s", seed->host, seed->port, cl->err);
            continue;
        }
        int mapped = read_slots(cl, idx, rep);
        freeReplyObject(rep);
        if (mapped == -ENOMEM)
            return mapped;
        if (mapped <= 0) {
            snprintf(last, sizeof(last), "%s:%d: %.300s", seed->host, seed->port,
                     mapped == 0 ? "CLUSTER SLOTS maps no slot" : cl->err);
            gw_redis_conn_close(c);
            continue;
        }
        cl->home = idx;
        cl->up = true;
        /* Every master's link now, outside the caller's lock (the rules
         * sync connects without it): a command then never waits for a
         * connect, unless a redirect names a new node. A master that does
         * not answer is tried again when a command goes there. A seed
         * the map names otherwise ("localhost" for 127.0.0.1) is closed:
         * only key-less commands would use it. */
        bool owns[MAX_NODES] = {false};
        for (int s = 0; s < GW_REDIS_CLUSTER_SLOTS; s++)
            if (cl->owner[s] >= 0)
                owns[cl->owner[s]] = true;
        for (int n = 0; n < cl->nnodes; n++) {
            if (owns[n])
                (void)node_link(cl, n);
            else
                gw_redis_conn_close(&cl->nodes[n]->conn);
        }
        cl->err[0] = '\0';
        return 0;
    }
    snprintf(cl->err, sizeof(cl->err), "no cluster seed answered (%.300s)", last);
    return -EHOSTUNREACH;
}

/* ---- connect ------------------------------------------------------------ */

int gw_redis_client_connect(struct gw_redis_client *cl)
{
    const struct gw_redis_target *t = cl->t;
    if (cl->cluster)
        return cluster_connect(cl);
    gw_redis_conn_close(&cl->conn);
    const char *host = t->host;
    int port = t->port;
    if (cl->sentinel != NULL) {
        uint64_t now = gw_now_ms();
        int rc = gw_redis_sentinel_start(cl->sentinel, now);
        /* Each sentinel has its own deadline: the loop is bounded. */
        for (int i = 0; rc == -EINPROGRESS && i < 4 * GW_CONFIG_MAX_REDIS_NODES + 8; i++)
            rc = gw_redis_sentinel_poll(cl->sentinel, gw_now_ms(), 2 * cl->timeout_ms + 10);
        if (rc != 0) {
            gw_redis_sentinel_cancel(cl->sentinel);
            snprintf(cl->err, sizeof(cl->err), "no sentinel answered (%.300s)", cl->sentinel->err);
            return -EHOSTUNREACH;
        }
        host = cl->sentinel->host;
        port = cl->sentinel->port;
    }
    int rc = link_open(cl, &cl->conn, host, port);
    if (rc == 0)
        cl->err[0] = '\0';
    return rc;
}

/* ---- commands ----------------------------------------------------------- */

static bool name_is(const char *arg, size_t len, const char *name)
{
    return len == strlen(name) && strncasecmp(arg, name, len) == 0;
}

/* The slot of the command's key, or -1 for a command without one (PING,
 * CLUSTER ...). The key is EVAL/EVALSHA/FCALL's first declared key, the
 * first stream after XREAD's STREAMS, else the first argument. */
static int command_slot(int argc, const char **argv, const size_t *lens)
{
#define ARG_LEN(i) (lens != NULL ? lens[i] : strlen(argv[i]))
    if (argc < 2)
        return -1;
    size_t len0 = ARG_LEN(0);
    static const char *const keyless[] = {"PING",   "ECHO",    "CLUSTER", "INFO",  "AUTH",
                                          "SELECT", "ASKING",  "ROLE",    "TIME",  "SCRIPT",
                                          "CLIENT", "COMMAND", "HELLO",   "CONFIG"};
    for (size_t i = 0; i < GW_ARRAY_LEN(keyless); i++)
        if (name_is(argv[0], len0, keyless[i]))
            return -1;
    int k = 1;
    if (name_is(argv[0], len0, "EVAL") || name_is(argv[0], len0, "EVALSHA") ||
        name_is(argv[0], len0, "EVAL_RO") || name_is(argv[0], len0, "EVALSHA_RO") ||
        name_is(argv[0], len0, "FCALL") || name_is(argv[0], len0, "FCALL_RO")) {
        if (argc < 4 || ARG_LEN(2) == 0 || argv[2][0] < '1' || argv[2][0] > '9')
            return -1; /* no key declared */
        k = 3;
    } else if (name_is(argv[0], len0, "XREAD") || name_is(argv[0], len0, "XREADGROUP")) {
        k = -1;
        for (int i = 1; i + 1 < argc && k < 0; i++)
            if (name_is(argv[i], ARG_LEN(i), "STREAMS"))
                k = i + 1;
        if (k < 0)
            return -1;
    }
    return (int)gw_redis_key_slot(argv[k], ARG_LEN(k));
#undef ARG_LEN
}

/* The node a command for slot goes to: the slot's master when known, else
 * the node that gave the map (it redirects if need be). */
static int route(const struct gw_redis_client *cl, int slot)
{
    if (slot >= 0 && cl->owner[slot] >= 0)
        return cl->owner[slot];
    return cl->home;
}

static int cluster_append(struct gw_redis_client *cl, int argc, const char **argv,
                          const size_t *lens)
{
    if (!cl->up) {
        snprintf(cl->err, sizeof(cl->err), "not connected");
        return -ENOTCONN;
    }
    if (cl->npend == cl->pend_cap) {
        size_t cap = cl->pend_cap ? 2 * cl->pend_cap : 8;
        struct pend *p = realloc(cl->pend, cap * sizeof(*p));
        if (p == NULL)
            return -ENOMEM;
        cl->pend = p;
        cl->pend_cap = cap;
    }
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (len < 0)
        return -ENOMEM;
    int node = route(cl, command_slot(argc, argv, lens));
    int rc = node_link(cl, node);
    if (rc == 0)
        rc = gw_redis_conn_append(&cl->nodes[node]->conn, cmd, (size_t)len);
    if (rc != 0) {
        explicit_bzero(cmd, (size_t)len);
        redisFreeCommand(cmd);
        if (rc != -ENOMEM)
            cluster_down(cl);
        return rc;
    }
    cl->pend[cl->npend++] = (struct pend){.node = node, .cmd = cmd, .len = (size_t)len};
    return 0;
}

int gw_redis_client_append_argv(struct gw_redis_client *cl, int argc, const char **argv,
                                const size_t *lens)
{
    if (cl->cluster)
        return cluster_append(cl, argc, argv, lens);
    return link_append(&cl->conn, argc, argv, lens);
}

/* "-MOVED <slot> <host>:<port>" or "-ASK ..." (gw_redis_parse_redirect):
 * the node index it names (added when new; an empty host is the node that
 * replied), and *slot. -EPROTO when malformed, -ENOMEM. */
static int redirect_target(struct gw_redis_client *cl, const redisReply *rep, int from, int *slot)
{
    bool ask;
    unsigned s;
    const char *host;
    size_t hlen;
    int port;
    if (!gw_redis_parse_redirect(rep->str, &ask, &s, &host, &hlen, &port))
        return -EPROTO;
    if (hlen == 0) {
        host = cl->nodes[from]->host;
        hlen = strlen(host);
    }
    *slot = (int)s;
    return node_index(cl, host, hlen, port);
}

static bool error_is(const redisReply *rep, const char *code)
{
    size_t n = strlen(code);
    return rep->type == REDIS_REPLY_ERROR && rep->len >= n && strncmp(rep->str, code, n) == 0 &&
           (rep->len == n || rep->str[n] == ' ');
}

/* Sends the head command again to node (ASKING first when asking) and reads
 * its reply. Replies still due on that link for later commands are read
 * first and kept, so the link's FIFO and ours stay in step. 0 or -errno. */
static int resend(struct gw_redis_client *cl, int node, bool asking, redisReply **rep)
{
    *rep = NULL;
    int rc = node_link(cl, node);
    if (rc != 0)
        return rc;
    struct gw_redis_conn *c = &cl->nodes[node]->conn;
    for (size_t j = 1; j < cl->npend; j++)
        if (cl->pend[j].node == node && cl->pend[j].early == NULL &&
            (rc = link_reply(cl, c, &cl->pend[j].early)) != 0)
            return rc;
    static const char asking_cmd[] = "*1\r\n$6\r\nASKING\r\n";
    if ((asking && gw_redis_conn_append(c, asking_cmd, sizeof(asking_cmd) - 1) != 0) ||
        gw_redis_conn_append(c, cl->pend[0].cmd, cl->pend[0].len) != 0)
        return -ENOMEM;
    cl->pend[0].node = node;
    if (asking) {
        /* +OK; anything else shows in the command's own reply. */
        if ((rc = link_reply(cl, c, rep)) != 0)
            return rc;
        freeReplyObject(*rep);
        *rep = NULL;
    }
    return link_reply(cl, c, rep);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* The head command's reply, redirects followed. NULL when a link failed
 * (everything is then closed). */
static redisReply *cluster_reply(struct gw_redis_client *cl)
{
    if (!cl->up || cl->npend == 0) {
        snprintf(cl->err, sizeof(cl->err), cl->up ? "no command sent" : "not connected");
        return NULL;
    }
    /* Every link's queue on its way first: pipelined commands to several
     * nodes cost one round trip, not one per node. */
    for (int i = 0; i < cl->nnodes; i++) {
        struct gw_redis_conn *c = &cl->nodes[i]->conn;
        if (c->state == GW_RCONN_OPEN && c->out_off < c->out_len) {
            int rc = gw_redis_conn_establish(c, 0);
            if (rc != 0 && rc != -EAGAIN) {
                (void)fail_link(cl, c, rc, "send");
                cluster_down(cl);
                return NULL;
            }
        }
    }
    struct pend *head = &cl->pend[0];
    redisReply *rep = head->early;
    head->early = NULL;
    if (rep == NULL && link_reply(cl, &cl->nodes[head->node]->conn, &rep) != 0) {
        cluster_down(cl);
        return NULL;
    }
    int redirects = 0, tries = 0;
    bool asking = false;
    for (;;) {
        bool moved = error_is(rep, "MOVED"), ask = error_is(rep, "ASK");
        int node = head->node;
        if (moved || ask) {
            if (redirects == MAX_REDIRECTS)
                break; /* the caller gets the last redirect as an error */
            int slot = 0;
            int to = redirect_target(cl, rep, head->node, &slot);
            if (to == -ENOMEM) {
                freeReplyObject(rep);
                cluster_down(cl);
                return NULL;
            }
            if (to < 0)
                break;
            redirects++;
            gw_redis_redirect_count(ask);
            if (moved)
                cl->owner[slot] = (int16_t)to;
            node = to;
            asking = ask;
        } else if (error_is(rep, "TRYAGAIN") && tries < MAX_TRYAGAIN) {
            /* A multi-key command during a slot's migration: the keys are
             * on their way. Same node, same ASKING, a moment later. */
            sleep_ms(TRYAGAIN_WAIT_MS << tries);
            tries++;
        } else {
            break;
        }
        freeReplyObject(rep);
        if (resend(cl, node, asking, &rep) != 0) {
            freeReplyObject(rep);
            cluster_down(cl);
            return NULL;
        }
    }
    explicit_bzero(head->cmd, head->len);
    redisFreeCommand(head->cmd);
    cl->npend--;
    memmove(cl->pend, cl->pend + 1, cl->npend * sizeof(*cl->pend));
    return rep;
}

redisReply *gw_redis_client_get_reply(struct gw_redis_client *cl)
{
    redisReply *r = NULL;
    if (cl->cluster) {
        r = cluster_reply(cl);
    } else if (link_reply(cl, &cl->conn, &r) != 0) {
        return NULL;
    }
    if (r != NULL && error_is(r, "READONLY")) {
        /* A replica now: the next connect finds the master again (asks the
         * sentinels, or reads the cluster's slot map). */
        snprintf(cl->err, sizeof(cl->err), "READONLY: the server is a replica now");
        if (cl->cluster)
            cluster_down(cl);
        else
            gw_redis_conn_close(&cl->conn);
    }
    return r;
}

redisReply *gw_redis_client_command_argv(struct gw_redis_client *cl, int argc, const char **argv,
                                         const size_t *lens)
{
    int rc = gw_redis_client_append_argv(cl, argc, argv, lens);
    if (rc != 0) {
        if (rc == -ENOMEM)
            snprintf(cl->err, sizeof(cl->err), "out of memory");
        return NULL;
    }
    return gw_redis_client_get_reply(cl);
}

bool gw_redis_client_connected(const struct gw_redis_client *cl)
{
    return cl->cluster ? cl->up : cl->conn.state == GW_RCONN_OPEN;
}

const char *gw_redis_client_error(const struct gw_redis_client *cl)
{
    return cl->err;
}
