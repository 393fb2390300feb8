/*
 * A real Redis Cluster on 127.0.0.1 for the integration tests (SPEC.md §12,
 * issue 15): redis-server nodes started by PID in a temporary folder, joined
 * with `redis-cli --cluster create` (masters) and CLUSTER REPLICATE (one
 * replica per master, optional), waited for with bounded polls of CLUSTER
 * INFO (never a fixed sleep); then resharding with `redis-cli --cluster
 * reshard`, killing a master, key slots (CRC16 of the hash tag) and slot
 * owners, and single commands on one node.
 */
#ifndef GWT_CLUSTER_H
#define GWT_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>

#include <hiredis/hiredis.h>

#include "gwtest.h"

#define GWT_CLUSTER_MAX_NODES 8
#define GWT_CLUSTER_SLOTS     16384

/* One cluster. Nodes [0, masters) are the masters as created (node i holds
 * the i-th third of the slots after gwt_cluster_start); node masters + i is
 * the replica of master i when replicas were asked for. Roles change after a
 * failover: gwt_cluster_role tells the current one. Zero-initialise before
 * gwt_cluster_start. */
struct gwt_cluster {
    int masters;                                 /* masters at creation */
    int nodes;                                   /* masters + replicas */
    char dir[128];                               /* nodes-<port>.conf, logs; removed at stop */
    struct gwt_proc proc[GWT_CLUSTER_MAX_NODES]; /* redis-server of each node */
    int port[GWT_CLUSTER_MAX_NODES];             /* client port */
    int bus[GWT_CLUSTER_MAX_NODES];              /* cluster bus port (cluster-port) */
    char id[GWT_CLUSTER_MAX_NODES][41];          /* CLUSTER MYID */
    bool killed[GWT_CLUSTER_MAX_NODES];          /* gwt_cluster_kill was called */
};

/* Starts masters (1..4) redis-server nodes with cluster-enabled yes,
 * cluster-node-timeout 1000, no persistence, each on a free port and bus
 * port, then `redis-cli --cluster create` of the masters (slots in equal
 * ranges, node 0 lowest), then, with replicas, one replica per master
 * (CLUSTER MEET + CLUSTER REPLICATE, waited until its link is up). extra
 * (NULL-terminated, may be NULL) is appended to every node's arguments,
 * e.g. {"--cluster-require-full-coverage", "no", NULL}. Waits at most
 * timeout_ms in all for every node to report cluster_state:ok, all 16384
 * slots ok and every node known. Returns 0, or -errno (-ETIMEDOUT, or the
 * exit code of redis-cli negated), with what went wrong on stderr; on error
 * the nodes already started are stopped. */
int gwt_cluster_start(struct gwt_cluster *c, int masters, bool replicas, const char *const extra[],
                      int timeout_ms);

/* Stops every node still running (SIGTERM, then SIGKILL after 3 s), reaps
 * them and removes the folder (logs kept with GWT_KEEP_LOGS). Safe on a
 * zeroed or stopped struct. */
void gwt_cluster_stop(struct gwt_cluster *c);

/* Polls every live node (not killed) for at most timeout_ms until each says
 * cluster_state:ok, cluster_slots_ok:16384 and knows every node. Returns 0
 * or -ETIMEDOUT. */
int gwt_cluster_wait_ok(const struct gwt_cluster *c, int timeout_ms);

/* Polls for at most timeout_ms until every live node's CLUSTER SLOTS gives
 * the same owner, a live node, for every slot, and gwt_cluster_wait_ok
 * holds (what redis-cli checks before a reshard: "nodes agree"). Returns 0
 * or -ETIMEDOUT. */
int gwt_cluster_wait_agree(const struct gwt_cluster *c, int timeout_ms);

/* SIGKILLs node i (by PID) and reaps it. Returns 0 or -errno. */
int gwt_cluster_kill(struct gwt_cluster *c, int i);

/* After master i was killed: waits at most timeout_ms until a live node
 * (its replica) is named master of all the slots i held, by every live node,
 * and every live node says cluster_state:ok. Returns the index of the new
 * master, or -ETIMEDOUT. */
int gwt_cluster_wait_failover(const struct gwt_cluster *c, int i, int timeout_ms);

/* Waits at most timeout_ms until the replica of master m (node
 * masters + m) has processed every write m had made when called (its
 * slave_repl_offset reaches m's master_repl_offset). Returns 0, -ETIMEDOUT,
 * or -EPROTO when the offsets cannot be read. (WAIT on a fresh connection
 * would not do: it waits only for that connection's own writes.) */
int gwt_cluster_wait_replicated(const struct gwt_cluster *c, int m, int timeout_ms);

/* ---- slots ---------------------------------------------------------------- */

/* The cluster key slot of key (CRC16-XMODEM of the hash tag, the text
 * between the first '{' and the next '}' when not empty, else of the whole
 * key; mod 16384), computed here. */
int gwt_cluster_keyslot(const char *key);

/* CLUSTER KEYSLOT key asked of the node on port, or -1. */
int gwt_cluster_keyslot_remote(int port, const char *key);

/* The slot of a client identity's store keys ("ip:203.0.113.7" or
 * "header:x-api-key=…"): the slot of "<prefix>:{<32 hex>}" (SPEC.md §10 key
 * layout, gwt_dist_store_key). */
int gwt_cluster_client_slot(const char *prefix, const char *identity);

/* Index of the node that owns slot according to CLUSTER SLOTS of the first
 * live node that answers, or -1. */
int gwt_cluster_slot_owner(const struct gwt_cluster *c, int slot);

/* Fills owner[16384] with the node index owning each slot (-1 when none)
 * from CLUSTER SLOTS of the first live node that answers. Returns 0 or
 * -errno. */
int gwt_cluster_slot_map(const struct gwt_cluster *c, int owner[GWT_CLUSTER_SLOTS]);

/* How many slots node i owns (gwt_cluster_slot_map), or -1. */
int gwt_cluster_slot_count(const struct gwt_cluster *c, int i);

/* Lowest slot owned by node i, or -1. */
int gwt_cluster_first_slot(const struct gwt_cluster *c, int i);

/* A key fmt % n (n = 0, 1, ... 199) whose slot node m owns, into key (cap
 * bytes). Returns its slot, or -1 when none of the 200 is (or the slot map
 * could not be read). */
int gwt_cluster_key_on(const struct gwt_cluster *c, int m, const char *fmt, char *key, size_t cap);

/* True when node i says it is a master (ROLE). */
bool gwt_cluster_is_master(const struct gwt_cluster *c, int i);

/* ---- commands ----------------------------------------------------------- */

/* A hiredis connection to node i with 2 s timeouts, or NULL. The caller
 * frees it with redisFree. */
redisContext *gwt_cluster_connect(const struct gwt_cluster *c, int i);

/* Runs a printf-style hiredis command on the node on port and returns its
 * reply (caller frees with freeReplyObject), or NULL when the node could
 * not be asked. */
redisReply *gwt_cluster_cmd(int port, const char *fmt, ...);

/* Number of keys matching pattern on node i (SCAN), or -errno. */
int gwt_cluster_count_keys(const struct gwt_cluster *c, int i, const char *pattern);

/* Sum over the live nodes of INFO errorstats' count for the error prefix
 * name ("MOVED", "ASK", "TRYAGAIN"): how many such replies the nodes sent
 * since they started. -1 when no node answered. */
long long gwt_cluster_errorstat(const struct gwt_cluster *c, const char *name);

/* Runs `redis-cli --cluster reshard` moving nslots slots from node from to
 * node to (redis-cli takes the source's lowest slots), as a child process
 * waited for at most timeout_ms. *ms (may be NULL) gets how long it ran.
 * Then waits (at most 10 s more) until every node agrees on the new map
 * (gwt_cluster_wait_agree), so reshards can follow each other. Returns
 * redis-cli's exit code (0 = done), GWT_STOP_KILLED, or -errno; its output
 * goes to stderr when it failed. */
int gwt_cluster_reshard(const struct gwt_cluster *c, int from, int to, int nslots, int timeout_ms,
                        long long *ms);

/* Starts the same reshard without waiting (for traffic meanwhile); p gets
 * the child, whose output is in p->log_path. Wait with gwt_cluster_reshard_wait. */
int gwt_cluster_reshard_start(const struct gwt_cluster *c, int from, int to, int nslots,
                              struct gwt_proc *p);

/* Waits at most timeout_ms for a reshard started by gwt_cluster_reshard_start
 * (SIGKILL after), cleans p up, then waits as gwt_cluster_reshard for the
 * nodes to agree; returns as gwt_cluster_reshard. */
int gwt_cluster_reshard_wait(const struct gwt_cluster *c, struct gwt_proc *p, int timeout_ms);

/* A slot migration by hand, in the steps redis-cli takes (Redis Cluster
 * specification, "Live resharding"), so a test can stop between them:
 * begin: CLUSTER SETSLOT slot IMPORTING on to, then MIGRATING on from;
 * keys: moves the slot's keys (CLUSTER GETKEYSINSLOT, MIGRATE ... KEYS, at
 * most 1000) from from to to and returns how many, or -errno;
 * end: CLUSTER SETSLOT slot NODE <to> on to, from and every other live
 * master (a promoted replica too), then waits (at most 10 s) until every node agrees. Each returns
 * 0 or -errno (the node's error on stderr). */
int gwt_cluster_migrate_begin(const struct gwt_cluster *c, int slot, int from, int to);
int gwt_cluster_migrate_keys(const struct gwt_cluster *c, int slot, int from, int to);
int gwt_cluster_migrate_end(const struct gwt_cluster *c, int slot, int from, int to);

/* The second half of a migration begun with gwt_cluster_migrate_begin, for
 * a test that acts while the slot is MIGRATING and then has it moved:
 * gwt_cluster_migrate_keys until none is left in the slot on from (at most
 * 100 rounds), then gwt_cluster_migrate_end. Returns 0 or -errno
 * (-EAGAIN when keys were still left after the rounds). */
int gwt_cluster_migrate_finish(const struct gwt_cluster *c, int slot, int from, int to);

/* "REDIS_CLUSTER_NODES=127.0.0.1:<port of idx[0]>,..." for the n nodes
 * listed (n <= 8), into out (cap bytes). */
void gwt_cluster_nodes_env(const struct gwt_cluster *c, const int idx[], int n, char *out,
                           size_t cap);

#endif
