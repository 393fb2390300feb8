/*
 * A minimal real Redis Cluster on 127.0.0.1 for the tests of the rules
 * sync's client (issue 15): three redis-server masters with free client and
 * bus ports, joined by `redis-cli --cluster create`, waited for with
 * bounded polls of CLUSTER INFO, stopped by PID; one slot moved between
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

struct gwt_minicluster {
    struct gwt_proc proc[GWT_MINICLUSTER_MASTERS]; /* redis-server of each master */
    int port[GWT_MINICLUSTER_MASTERS];             /* client ports */
    char id[GWT_MINICLUSTER_MASTERS][41];          /* CLUSTER MYID */
    char dir[64];                                  /* nodes-*.conf; removed at stop */
};

/* Starts the three masters and the cluster, waiting at most timeout_ms in
 * all for every node to say cluster_state:ok with 16384 slots and three
 * nodes known. Returns 0 or -1 (the reason on stderr; what was started is
 * stopped). Zero c first. */
int gwt_minicluster_start(struct gwt_minicluster *c, int timeout_ms);

/* Stops every master (SIGTERM, 5 s, then SIGKILL) and removes the folder.
 * Safe on a zeroed or stopped struct. */
void gwt_minicluster_stop(struct gwt_minicluster *c);

/* One printf-style hiredis command on the node on port (2 s timeouts):
 * the reply (caller frees) or NULL. */
redisReply *gwt_minicluster_cmd(int port, const char *fmt, ...);

/* Index of the master owning slot by CLUSTER SLOTS of master 0, or -1. */
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
