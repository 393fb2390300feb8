/*
 * A real Redis Cluster on loopback for the integration tests (see
 * gwt_cluster.h): nodes started and stopped by PID, the cluster formed by
 * redis-cli, every wait a bounded poll of what the nodes say.
 */
#include "gwt_cluster.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gwt_dist.h"

#define POLL_MS       20
#define NODE_START_MS 10000
#define START_TRIES   5
#define AGREE_MS      10000 /* after a reshard, for every node to see it */

static void pause_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int remaining(long long deadline)
{
    long long left = deadline - gwt_now_ms();
    return left > 0 ? (int)left : 0;
}

/* ---- commands ----------------------------------------------------------- */

static redisContext *open_port(int port, int timeout_ms)
{
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    redisContext *rc = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (rc == NULL)
        return NULL;
    if (rc->err || redisSetTimeout(rc, tv) != REDIS_OK) {
        redisFree(rc);
        return NULL;
    }
    return rc;
}

redisContext *gwt_cluster_connect(const struct gwt_cluster *c, int i)
{
    return open_port(c->port[i], 2000);
}

static redisReply *vcmd(int port, int timeout_ms, const char *fmt, va_list ap)
{
    redisContext *rc = open_port(port, timeout_ms);
    if (rc == NULL)
        return NULL;
    redisReply *r = redisvCommand(rc, fmt, ap);
    redisFree(rc);
    return r;
}

redisReply *gwt_cluster_cmd(int port, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = vcmd(port, 2000, fmt, ap);
    va_end(ap);
    return r;
}

/* As gwt_cluster_cmd with a short timeout, for polls. */
static redisReply *poll_cmd(int port, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = vcmd(port, 500, fmt, ap);
    va_end(ap);
    return r;
}

/* True when the node on port answers cmd with a status or string reply. */
static bool cmd_ok(int port, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = vcmd(port, 2000, fmt, ap);
    va_end(ap);
    bool ok = r != NULL && r->type != REDIS_REPLY_ERROR;
    if (r != NULL && !ok)
        fprintf(stderr, "gwt_cluster: port %d: %s\n", port, r->str);
    if (r != NULL)
        freeReplyObject(r);
    return ok;
}

int gwt_cluster_count_keys(const struct gwt_cluster *c, int i, const char *pattern)
{
    char **keys = NULL;
    int n = gwt_dist_redis_scan(c->port[i], NULL, 0, pattern, &keys);
    if (n > 0)
        gwt_strv_free(keys, n);
    return n;
}

long long gwt_cluster_errorstat(const struct gwt_cluster *c, const char *name)
{
    long long sum = -1;
    char needle[64];
    snprintf(needle, sizeof(needle), "errorstat_%s:count=", name);
    for (int i = 0; i < c->nodes; i++) {
        if (c->killed[i])
            continue;
        redisReply *r = gwt_cluster_cmd(c->port[i], "INFO errorstats");
        if (r != NULL && r->type == REDIS_REPLY_STRING) {
            const char *at = strstr(r->str, needle);
            sum = (sum < 0 ? 0 : sum) + (at != NULL ? strtoll(at + strlen(needle), NULL, 10) : 0);
        }
        if (r != NULL)
            freeReplyObject(r);
    }
    return sum;
}

/* ---- slots ---------------------------------------------------------------- */

/* CRC16-CCITT as XMODEM uses it: polynomial 0x1021, initial value 0, bits
 * taken most significant first, no final XOR (Redis Cluster spec, "Keys
 * distribution model"). Bitwise: the tests hash a few thousand keys. */
static unsigned crc16_xmodem(const char *s, size_t n)
{
    unsigned crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= (unsigned)(unsigned char)s[i] << 8;
        for (int b = 0; b < 8; b++)
            crc = (crc & 0x8000) ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    }
    return crc;
}

int gwt_cluster_keyslot(const char *key)
{
    size_t n = strlen(key);
    const char *open = strchr(key, '{');
    if (open != NULL) {
        const char *close = strchr(open + 1, '}');
        if (close != NULL && close > open + 1)
            return (int)(crc16_xmodem(open + 1, (size_t)(close - open - 1)) & 16383);
    }
    return (int)(crc16_xmodem(key, n) & 16383);
}

int gwt_cluster_keyslot_remote(int port, const char *key)
{
    redisReply *r = gwt_cluster_cmd(port, "CLUSTER KEYSLOT %s", key);
    int slot = r != NULL && r->type == REDIS_REPLY_INTEGER ? (int)r->integer : -1;
    if (r != NULL)
        freeReplyObject(r);
    return slot;
}

int gwt_cluster_client_slot(const char *prefix, const char *identity)
{
    char base[128];
    gwt_dist_store_key(prefix, identity, base);
    return gwt_cluster_keyslot(base);
}

static int index_of_port(const struct gwt_cluster *c, long long port)
{
    for (int i = 0; i < c->nodes; i++)
        if (c->port[i] == port)
            return i;
    return -1;
}

/* Slot map as the node on port sees it. Returns 0 or -errno. */
static int slot_map_from(const struct gwt_cluster *c, int port, int owner[GWT_CLUSTER_SLOTS])
{
    redisReply *r = poll_cmd(port, "CLUSTER SLOTS");
    if (r == NULL)
        return -ECONNREFUSED;
    int rc = 0;
    if (r->type != REDIS_REPLY_ARRAY) {
        rc = -EPROTO;
    } else {
        for (int s = 0; s < GWT_CLUSTER_SLOTS; s++)
            owner[s] = -1;
        for (size_t k = 0; k < r->elements && rc == 0; k++) {
            redisReply *e = r->element[k];
            if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
                e->element[0]->type != REDIS_REPLY_INTEGER ||
                e->element[1]->type != REDIS_REPLY_INTEGER ||
                e->element[2]->type != REDIS_REPLY_ARRAY || e->element[2]->elements < 2 ||
                e->element[2]->element[1]->type != REDIS_REPLY_INTEGER) {
                rc = -EPROTO;
                break;
            }
            long long lo = e->element[0]->integer, hi = e->element[1]->integer;
            int who = index_of_port(c, e->element[2]->element[1]->integer);
            for (long long s = lo; s <= hi && s < GWT_CLUSTER_SLOTS && s >= 0; s++)
                owner[s] = who;
        }
    }
    freeReplyObject(r);
    return rc;
}

int gwt_cluster_slot_map(const struct gwt_cluster *c, int owner[GWT_CLUSTER_SLOTS])
{
    int rc = -ECONNREFUSED;
    for (int i = 0; i < c->nodes; i++) {
        if (c->killed[i] || c->port[i] <= 0)
            continue;
        if ((rc = slot_map_from(c, c->port[i], owner)) == 0)
            return 0;
    }
    return rc;
}

int gwt_cluster_slot_owner(const struct gwt_cluster *c, int slot)
{
    static int owner[GWT_CLUSTER_SLOTS];
    if (slot < 0 || slot >= GWT_CLUSTER_SLOTS || gwt_cluster_slot_map(c, owner) != 0)
        return -1;
    return owner[slot];
}

int gwt_cluster_slot_count(const struct gwt_cluster *c, int i)
{
    static int owner[GWT_CLUSTER_SLOTS];
    if (gwt_cluster_slot_map(c, owner) != 0)
        return -1;
    int n = 0;
    for (int s = 0; s < GWT_CLUSTER_SLOTS; s++)
        n += owner[s] == i;
    return n;
}

int gwt_cluster_first_slot(const struct gwt_cluster *c, int i)
{
    static int owner[GWT_CLUSTER_SLOTS];
    if (gwt_cluster_slot_map(c, owner) != 0)
        return -1;
    for (int s = 0; s < GWT_CLUSTER_SLOTS; s++)
        if (owner[s] == i)
            return s;
    return -1;
}

int gwt_cluster_key_on(const struct gwt_cluster *c, int m, const char *fmt, char *key, size_t cap)
{
    static int owner[GWT_CLUSTER_SLOTS];
    if (gwt_cluster_slot_map(c, owner) != 0)
        return -1;
    for (int n = 0; n < 200; n++) {
        snprintf(key, cap, fmt, n);
        int slot = gwt_cluster_keyslot(key);
        if (owner[slot] == m)
            return slot;
    }
    return -1;
}

bool gwt_cluster_is_master(const struct gwt_cluster *c, int i)
{
    redisReply *r = poll_cmd(c->port[i], "ROLE");
    bool m = r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
             r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "master") == 0;
    if (r != NULL)
        freeReplyObject(r);
    return m;
}

/* ---- waiting on what the nodes say ---------------------------------------- */

/* Integer field "name:" of an INFO-style text, or -1. */
static long long info_field(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = text; p != NULL && *p != '\0';) {
        if (strncmp(p, name, n) == 0 && p[n] == ':')
            return strtoll(p + n + 1, NULL, 10);
        p = strchr(p, '\n');
        p = p != NULL ? p + 1 : NULL;
    }
    return -1;
}

/* The node on port says the cluster is ok, every slot ok, and knows want
 * nodes (or more: a killed node stays known). */
static bool node_ok(int port, int want_known)
{
    redisReply *r = poll_cmd(port, "CLUSTER INFO");
    bool ok = false;
    if (r != NULL && r->type == REDIS_REPLY_STRING) {
        ok = strstr(r->str, "cluster_state:ok") != NULL &&
             info_field(r->str, "cluster_slots_ok") == GWT_CLUSTER_SLOTS &&
             info_field(r->str, "cluster_known_nodes") >= want_known;
    }
    if (r != NULL)
        freeReplyObject(r);
    return ok;
}

static bool all_ok(const struct gwt_cluster *c)
{
    for (int i = 0; i < c->nodes; i++)
        if (!c->killed[i] && !node_ok(c->port[i], c->nodes))
            return false;
    return true;
}

int gwt_cluster_wait_ok(const struct gwt_cluster *c, int timeout_ms)
{
    long long deadline = gwt_now_ms() + timeout_ms;
    for (;;) {
        if (all_ok(c))
            return 0;
        if (gwt_now_ms() >= deadline)
            return -ETIMEDOUT;
        pause_ms(POLL_MS);
    }
}

/* INFO replication of the replica on port says its link to the master is up. */
static bool replica_synced(int port)
{
    redisReply *r = poll_cmd(port, "INFO replication");
    bool up = r != NULL && r->type == REDIS_REPLY_STRING &&
              strstr(r->str, "master_link_status:up") != NULL;
    if (r != NULL)
        freeReplyObject(r);
    return up;
}

/* CLUSTER NODES of the node on port mentions id. */
static bool knows_node(int port, const char *id)
{
    redisReply *r = poll_cmd(port, "CLUSTER NODES");
    bool k = r != NULL && r->type == REDIS_REPLY_STRING && strstr(r->str, id) != NULL;
    if (r != NULL)
        freeReplyObject(r);
    return k;
}

/* An integer field of INFO replication of the node on port, or -1. */
static long long repl_field(int port, const char *name)
{
    redisReply *r = poll_cmd(port, "INFO replication");
    long long v = r != NULL && r->type == REDIS_REPLY_STRING ? info_field(r->str, name) : -1;
    if (r != NULL)
        freeReplyObject(r);
    return v;
}

int gwt_cluster_wait_replicated(const struct gwt_cluster *c, int m, int timeout_ms)
{
    int r = c->masters + m;
    if (m < 0 || m >= c->masters || r >= c->nodes)
        return -EINVAL;
    long long want = repl_field(c->port[m], "master_repl_offset");
    if (want < 0)
        return -EPROTO;
    long long deadline = gwt_now_ms() + timeout_ms;
    for (;;) {
        long long have = repl_field(c->port[r], "slave_repl_offset");
        if (have >= want)
            return 0;
        if (gwt_now_ms() >= deadline)
            return -ETIMEDOUT;
        pause_ms(5);
    }
}

/* ---- nodes ---------------------------------------------------------------- */

/* Two free ports that differ (client and bus). */
static int pick_ports(int *port, int *bus)
{
    for (int tries = 0; tries < 20; tries++) {
        int a = gwt_free_port(), b = gwt_free_port();
        if (a < 0 || b < 0)
            return a < 0 ? a : b;
        if (a != b) {
            *port = a;
            *bus = b;
            return 0;
        }
    }
    return -EADDRINUSE;
}

static int node_start(struct gwt_cluster *c, int i, const char *const extra[])
{
    int rc = -EADDRINUSE;
    for (int attempt = 0; attempt < START_TRIES; attempt++) {
        if ((rc = pick_ports(&c->port[i], &c->bus[i])) != 0)
            return rc;
        char ps[16], bs[16], conf[192];
        snprintf(ps, sizeof(ps), "%d", c->port[i]);
        snprintf(bs, sizeof(bs), "%d", c->bus[i]);
        snprintf(conf, sizeof(conf), "%s/nodes-%d.conf", c->dir, c->port[i]);
        const char *argv[48] = {"redis-server", "--port", ps, "--cluster-port", bs, "--bind",
                                "127.0.0.1", "--cluster-enabled", "yes", "--cluster-config-file",
                                conf, "--cluster-node-timeout", "1000", "--save", "",
                                "--appendonly", "no", "--dir", c->dir, "--protected-mode", "no",
                                /* A replica's first sync starts at once, not after 5 s. */
                                "--repl-diskless-sync-delay", "0"};
        size_t k = 23;
        for (size_t j = 0; extra != NULL && extra[j] != NULL && k < 47; j++)
            argv[k++] = extra[j];
        argv[k] = NULL;
        if ((rc = gwt_spawn(&c->proc[i], argv, NULL)) != 0)
            return rc;
        long long deadline = gwt_now_ms() + NODE_START_MS;
        rc = -ETIMEDOUT;
        while (gwt_proc_alive(&c->proc[i]) && gwt_now_ms() < deadline) {
            redisReply *r = poll_cmd(c->port[i], "CLUSTER MYID");
            bool up = r != NULL && r->type == REDIS_REPLY_STRING && r->len == 40;
            if (up)
                snprintf(c->id[i], sizeof(c->id[i]), "%s", r->str);
            if (r != NULL)
                freeReplyObject(r);
            if (up)
                return 0;
            pause_ms(5);
        }
        /* Died (a port taken meanwhile) or never answered: try other ports. */
        if (gwt_proc_alive(&c->proc[i]))
            rc = -ETIMEDOUT;
        else
            rc = -EADDRINUSE;
        gwt_log_dump(&c->proc[i], 2000);
        gwt_proc_cleanup(&c->proc[i]);
    }
    return rc;
}

/* Runs argv (redis-cli) to completion within timeout_ms; its output goes to
 * stderr when it fails. Returns its exit code or -errno. */
static int run_cli(const char *const argv[], int timeout_ms, const char *what)
{
    char *out = NULL, *err = NULL;
    int rc = gwt_run(argv, NULL, timeout_ms, &out, &err);
    if (rc != 0)
        fprintf(stderr, "gwt_cluster: %s ended %d\n---- stdout ----\n%s\n---- stderr ----\n%s\n",
                what, rc, out != NULL ? out : "", err != NULL ? err : "");
    free(out);
    free(err);
    return rc;
}

/* Makes node r a replica of master m: meet, wait until it knows m, replicate. */
static int add_replica(struct gwt_cluster *c, int r, int m, long long deadline)
{
    if (!cmd_ok(c->port[r], "CLUSTER MEET 127.0.0.1 %d %d", c->port[m], c->bus[m]))
        return -EPROTO;
    while (!knows_node(c->port[r], c->id[m])) {
        if (gwt_now_ms() >= deadline)
            return -ETIMEDOUT;
        pause_ms(POLL_MS);
    }
    /* It may know the id before it has the node's role (handshake done,
     * flags not yet gossiped): then REPLICATE says so and is retried. */
    for (;;) {
        redisReply *rep = poll_cmd(c->port[r], "CLUSTER REPLICATE %s", c->id[m]);
        bool ok = rep != NULL && rep->type == REDIS_REPLY_STATUS;
        if (rep != NULL)
            freeReplyObject(rep);
        if (ok)
            return 0;
        if (gwt_now_ms() >= deadline)
            return -ETIMEDOUT;
        pause_ms(POLL_MS);
    }
}

int gwt_cluster_start(struct gwt_cluster *c, int masters, bool replicas, const char *const extra[],
                      int timeout_ms)
{
    memset(c, 0, sizeof(*c));
    if (masters < 1 || masters > GWT_CLUSTER_MAX_NODES / 2)
        return -EINVAL;
    long long deadline = gwt_now_ms() + timeout_ms;
    c->masters = masters;
    c->nodes = replicas ? 2 * masters : masters;
    const char *tmp = getenv("TMPDIR");
    snprintf(c->dir, sizeof(c->dir), "%s/gw-cluster-XXXXXX", tmp != NULL && *tmp ? tmp : "/tmp");
    if (mkdtemp(c->dir) == NULL) {
        c->dir[0] = '\0';
        return -errno;
    }
    int rc = 0;
    for (int i = 0; i < c->nodes && rc == 0; i++)
        rc = node_start(c, i, extra);
    if (rc != 0) {
        fprintf(stderr, "gwt_cluster: a node did not start: %s\n", strerror(-rc));
        goto fail;
    }

    /* The masters, slots in equal ranges in the order given. */
    char addr[GWT_CLUSTER_MAX_NODES][32];
    const char *argv[GWT_CLUSTER_MAX_NODES + 8] = {"redis-cli", "--cluster", "create"};
    size_t k = 3;
    for (int i = 0; i < masters; i++) {
        snprintf(addr[i], sizeof(addr[i]), "127.0.0.1:%d", c->port[i]);
        argv[k++] = addr[i];
    }
    argv[k++] = "--cluster-replicas";
    argv[k++] = "0";
    argv[k++] = "--cluster-yes";
    argv[k] = NULL;
    rc = run_cli(argv, remaining(deadline), "redis-cli --cluster create");
    if (rc != 0) {
        rc = rc > 0 ? -rc : rc;
        goto fail;
    }
    for (int i = 0; replicas && i < masters && rc == 0; i++)
        rc = add_replica(c, masters + i, i, deadline);
    if (rc != 0) {
        fprintf(stderr, "gwt_cluster: adding the replicas failed: %s\n", strerror(-rc));
        goto fail;
    }
    if ((rc = gwt_cluster_wait_ok(c, remaining(deadline))) != 0) {
        fprintf(stderr, "gwt_cluster: cluster_state never ok on every node\n");
        goto fail;
    }
    for (int i = masters; i < c->nodes; i++) {
        while (!replica_synced(c->port[i])) {
            if (gwt_now_ms() >= deadline) {
                fprintf(stderr, "gwt_cluster: replica %d never synced\n", i);
                rc = -ETIMEDOUT;
                goto fail;
            }
            pause_ms(POLL_MS);
        }
    }
    return 0;

fail:
    for (int i = 0; i < c->nodes; i++)
        if (c->proc[i].pid > 0)
            gwt_log_dump(&c->proc[i], 1500);
    gwt_cluster_stop(c);
    return rc;
}

void gwt_cluster_stop(struct gwt_cluster *c)
{
    for (int i = 0; i < c->nodes; i++) {
        if (c->proc[i].pid > 0) {
            (void)gwt_stop(&c->proc[i], SIGTERM, 3000);
            gwt_proc_cleanup(&c->proc[i]);
        }
    }
    if (c->dir[0] != '\0') {
        const char *argv[] = {"rm", "-rf", c->dir, NULL};
        (void)gwt_run(argv, NULL, 10000, NULL, NULL);
        c->dir[0] = '\0';
    }
}

int gwt_cluster_kill(struct gwt_cluster *c, int i)
{
    if (i < 0 || i >= c->nodes || c->proc[i].pid <= 0)
        return -EINVAL;
    c->killed[i] = true;
    if (kill(c->proc[i].pid, SIGKILL) != 0)
        return -errno;
    int rc = gwt_stop(&c->proc[i], SIGKILL, 5000);
    return rc == -SIGKILL ? 0 : -ECHILD;
}

/* Every slot of every live node's map is held by a live node, the same one
 * in every map; then *holder gets the owner of slot. */
static bool all_slots_live(const struct gwt_cluster *c, int slot, int *holder)
{
    static int first[GWT_CLUSTER_SLOTS], other[GWT_CLUSTER_SLOTS];
    bool have = false;
    for (int i = 0; i < c->nodes; i++) {
        if (c->killed[i])
            continue;
        int *map = have ? other : first;
        if (slot_map_from(c, c->port[i], map) != 0)
            return false;
        for (int s = 0; s < GWT_CLUSTER_SLOTS; s++) {
            if (map[s] < 0 || c->killed[map[s]] || (have && map[s] != first[s]))
                return false;
        }
        have = true;
    }
    if (!have)
        return false;
    *holder = first[slot];
    return true;
}

int gwt_cluster_wait_agree(const struct gwt_cluster *c, int timeout_ms)
{
    long long deadline = gwt_now_ms() + timeout_ms;
    for (;;) {
        int holder;
        if (all_slots_live(c, 0, &holder) && all_ok(c))
            return 0;
        if (gwt_now_ms() >= deadline)
            return -ETIMEDOUT;
        pause_ms(POLL_MS);
    }
}

int gwt_cluster_wait_failover(const struct gwt_cluster *c, int i, int timeout_ms)
{
    /* A slot i held, from a live node's map still naming i (the node's
     * replica has the same ranges), taken before the maps change. */
    static int owner[GWT_CLUSTER_SLOTS];
    int slot = -1;
    if (gwt_cluster_slot_map(c, owner) == 0)
        for (int s = 0; s < GWT_CLUSTER_SLOTS && slot < 0; s++)
            if (owner[s] == i)
                slot = s;
    long long deadline = gwt_now_ms() + timeout_ms;
    for (;;) {
        int holder = -1;
        if (all_slots_live(c, slot < 0 ? 0 : slot, &holder) && all_ok(c))
            return holder;
        if (gwt_now_ms() >= deadline)
            return -ETIMEDOUT;
        pause_ms(POLL_MS);
    }
}

/* ---- resharding ------------------------------------------------------------ */

/* argv of `redis-cli --cluster reshard` in the caller's buffers. */
static void reshard_argv(const struct gwt_cluster *c, int from, int to, int nslots,
                         const char *argv[16], char addr[32], char ns[16])
{
    snprintf(addr, 32, "127.0.0.1:%d", c->port[from]);
    snprintf(ns, 16, "%d", nslots);
    const char *a[] = {"redis-cli",       "--cluster", "reshard",       addr,
                       "--cluster-from",  c->id[from], "--cluster-to",  c->id[to],
                       "--cluster-slots", ns,          "--cluster-yes", NULL};
    memcpy(argv, a, sizeof(a));
}

int gwt_cluster_reshard(const struct gwt_cluster *c, int from, int to, int nslots, int timeout_ms,
                        long long *ms)
{
    const char *argv[16];
    char addr[32], ns[16];
    reshard_argv(c, from, to, nslots, argv, addr, ns);
    long long t0 = gwt_now_ms();
    int rc = run_cli(argv, timeout_ms, "redis-cli --cluster reshard");
    if (ms != NULL)
        *ms = gwt_now_ms() - t0;
    if (rc == 0 && (rc = gwt_cluster_wait_agree(c, AGREE_MS)) != 0)
        fprintf(stderr, "gwt_cluster: the nodes never agreed on the slots after a reshard\n");
    return rc;
}

int gwt_cluster_reshard_start(const struct gwt_cluster *c, int from, int to, int nslots,
                              struct gwt_proc *p)
{
    const char *argv[16];
    char addr[32], ns[16];
    reshard_argv(c, from, to, nslots, argv, addr, ns);
    return gwt_spawn(p, argv, NULL);
}

int gwt_cluster_reshard_wait(const struct gwt_cluster *c, struct gwt_proc *p, int timeout_ms)
{
    long long deadline = gwt_now_ms() + timeout_ms;
    while (gwt_proc_alive(p) && gwt_now_ms() < deadline)
        pause_ms(POLL_MS);
    int rc = gwt_stop(p, SIGKILL, 1000);
    if (rc == -SIGKILL)
        rc = GWT_STOP_KILLED;
    if (rc != 0) {
        fprintf(stderr, "gwt_cluster: redis-cli --cluster reshard ended %d\n", rc);
        gwt_log_dump(p, 4000);
    }
    gwt_proc_cleanup(p);
    if (rc == 0 && (rc = gwt_cluster_wait_agree(c, AGREE_MS)) != 0)
        fprintf(stderr, "gwt_cluster: the nodes never agreed on the slots after a reshard\n");
    return rc;
}

int gwt_cluster_migrate_begin(const struct gwt_cluster *c, int slot, int from, int to)
{
    if (!cmd_ok(c->port[to], "CLUSTER SETSLOT %d IMPORTING %s", slot, c->id[from]) ||
        !cmd_ok(c->port[from], "CLUSTER SETSLOT %d MIGRATING %s", slot, c->id[to]))
        return -EPROTO;
    return 0;
}

int gwt_cluster_migrate_keys(const struct gwt_cluster *c, int slot, int from, int to)
{
    redisContext *rc = gwt_cluster_connect(c, from);
    if (rc == NULL)
        return -ECONNREFUSED;
    int moved = -EPROTO;
    redisReply *keys = redisCommand(rc, "CLUSTER GETKEYSINSLOT %d 1000", slot);
    if (keys != NULL && keys->type == REDIS_REPLY_ARRAY) {
        moved = 0;
        if (keys->elements > 0) {
            size_t n = keys->elements;
            const char **argv = calloc(n + 8, sizeof(*argv));
            size_t *lens = calloc(n + 8, sizeof(*lens));
            char port[16];
            snprintf(port, sizeof(port), "%d", c->port[to]);
            const char *head[] = {"MIGRATE", "127.0.0.1", port, "", "0", "5000", "KEYS"};
            if (argv != NULL && lens != NULL) {
                for (size_t i = 0; i < 7; i++)
                    argv[i] = head[i];
                for (size_t i = 0; i < n; i++)
                    argv[7 + i] = keys->element[i]->str;
                for (size_t i = 0; i < n + 7; i++)
                    lens[i] = strlen(argv[i]);
                redisReply *r = redisCommandArgv(rc, (int)(n + 7), argv, lens);
                if (r != NULL && r->type == REDIS_REPLY_STATUS)
                    moved = (int)n;
                else
                    fprintf(stderr, "gwt_cluster: MIGRATE: %s\n",
                            r != NULL && r->str != NULL ? r->str : "no reply");
                if (r != NULL)
                    freeReplyObject(r);
            }
            free(argv);
            free(lens);
        }
    }
    if (keys != NULL)
        freeReplyObject(keys);
    redisFree(rc);
    return moved;
}

int gwt_cluster_migrate_end(const struct gwt_cluster *c, int slot, int from, int to)
{
    if (!cmd_ok(c->port[to], "CLUSTER SETSLOT %d NODE %s", slot, c->id[to]) ||
        !cmd_ok(c->port[from], "CLUSTER SETSLOT %d NODE %s", slot, c->id[to]))
        return -EPROTO;
    for (int i = 0; i < c->nodes; i++)
        if (i != to && i != from && !c->killed[i] && gwt_cluster_is_master(c, i))
            (void)cmd_ok(c->port[i], "CLUSTER SETSLOT %d NODE %s", slot, c->id[to]);
    return gwt_cluster_wait_agree(c, AGREE_MS);
}

int gwt_cluster_migrate_finish(const struct gwt_cluster *c, int slot, int from, int to)
{
    int moved = 1;
    for (int round = 0; round < 100 && moved > 0; round++)
        moved = gwt_cluster_migrate_keys(c, slot, from, to);
    if (moved != 0)
        return moved < 0 ? moved : -EAGAIN;
    return gwt_cluster_migrate_end(c, slot, from, to);
}

void gwt_cluster_nodes_env(const struct gwt_cluster *c, const int idx[], int n, char *out,
                           size_t cap)
{
    size_t k = (size_t)snprintf(out, cap, "REDIS_CLUSTER_NODES=");
    for (int j = 0; j < n && k < cap; j++)
        k += (size_t)snprintf(out + k, cap - k, "%s127.0.0.1:%d", j ? "," : "", c->port[idx[j]]);
}
