/*
 * A minimal real Redis Cluster on 127.0.0.1 for the tests of the rules
 * sync's client (issue 15): three redis-server masters with free client and
 * bus ports, joined by `redis-cli --cluster create`, optionally one replica
 * each (CLUSTER MEET + CLUSTER REPLICATE), waited for with bounded polls of
 * CLUSTER INFO and INFO replication, stopped by PID; one slot moved between
 * masters the way `redis-cli --cluster reshard` does it (IMPORTING,
 * MIGRATING, MIGRATE of its keys, SETSLOT NODE on every master), in two
 * halves so a test can act while the slot is migrating.
 */
#ifndef GWT_MINICLUSTER_H
#define GWT_MINICLUSTER_H

#include <hiredis/hiredis.h>
#include <stdbool.h>

#include "gwtest.h"

#define GWT_MINICLUSTER_MASTERS 3
#define GWT_MINICLUSTER_NODES   (2 * GWT_MINICLUSTER_MASTERS)

/* Node i < 3 is master i as created; node 3 + i, with replicas, is the
 * replica of master i (a master itself after a failover). */
struct gwt_minicluster {
    int nodes;                                   /* 3, or 6 with replicas */
    struct gwt_proc proc[GWT_MINICLUSTER_NODES]; /* redis-server of each node */
    int port[GWT_MINICLUSTER_NODES];             /* client ports */
    int bus[GWT_MINICLUSTER_NODES];              /* cluster bus ports */
    char id[GWT_MINICLUSTER_NODES][41];          /* CLUSTER MYID */
    char dir[64];                                /* nodes-*.conf; removed at stop */
};

/* Starts the three masters and the cluster, then with replicas one replica
 * per master, waiting at most timeout_ms in all for every node to say
 * cluster_state:ok with 16384 slots and every node known, and each
 * replica's link to its master up. Returns 0 or -1 (the reason on stderr;
 * what was started is stopped). Zero c first. */
int gwt_minicluster_start(struct gwt_minicluster *c, bool replicas, int timeout_ms);

/* SIGKILLs node i (by PID) and reaps it. Returns 0 or -1. */
int gwt_minicluster_kill(struct gwt_minicluster *c, int i);

/* Stops every master (SIGTERM, 5 s, then SIGKILL) and removes the folder.
 * Safe on a zeroed or stopped struct. */
void gwt_minicluster_stop(struct gwt_minicluster *c);

/* One printf-style hiredis command on the node on port (2 s timeouts):
 * the reply (caller frees) or NULL. */
redisReply *gwt_minicluster_cmd(int port, const char *fmt, ...);

/* Index of the node owning slot by CLUSTER SLOTS of the first live node
 * that answers, or -1. */
int gwt_minicluster_owner(const struct gwt_minicluster *c, int slot);

/* A key fmt % n (n = 0, 1, ... 199) whose slot master m owns, into key
 * (cap bytes). Returns its slot, or -1 when none of the 200 is. */
int gwt_minicluster_key_on(const struct gwt_minicluster *c, int m, const char *fmt, char *key,
                           size_t cap);

/* First half of moving slot from master `from` to master `to`: IMPORTING
 * on to, MIGRATING on from. Returns 0 or -1. */
int gwt_minicluster_migrate_begin(const struct gwt_minicluster *c, int slot, int from, int to);

/* Second half: MIGRATE of every key still in the slot on from (batches of
 * 100, bounded), then SETSLOT NODE to on to, from and the third master.
 * Returns 0 or -1. */
int gwt_minicluster_migrate_end(const struct gwt_minicluster *c, int slot, int from, int to);

#endif
