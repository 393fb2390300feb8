/*
 * The three-master Redis Cluster of gwt_minicluster.h.
 */
#include "gwt_minicluster.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define STEP_MS 50 /* between two polls */
#define N       GWT_MINICLUSTER_MASTERS

static void pause_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static redisReply *vcmd(int port, const char *fmt, va_list ap)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (c == NULL || c->err) {
        if (c != NULL)
            redisFree(c);
        return NULL;
    }
    (void)redisSetTimeout(c, tv);
    redisReply *r = redisvCommand(c, fmt, ap);
    redisFree(c);
    return r;
}

redisReply *gwt_minicluster_cmd(int port, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = vcmd(port, fmt, ap);
    va_end(ap);
    return r;
}

/* The command answered +OK, else false (the reply on stderr). */
static bool ok_cmd(int port, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = vcmd(port, fmt, ap);
    va_end(ap);
    bool ok = r != NULL && r->type == REDIS_REPLY_STATUS;
    if (!ok)
        fprintf(stderr, "port %d: %s: %s\n", port, fmt,
                r == NULL                      ? "no answer"
                : r->type == REDIS_REPLY_ERROR ? r->str
                                               : "not +OK");
    freeReplyObject(r);
    return ok;
}

static bool node_ok(int port, int nodes)
{
    char known[40];
    snprintf(known, sizeof(known), "cluster_known_nodes:%d\r", nodes);
    redisReply *r = gwt_minicluster_cmd(port, "CLUSTER INFO");
    bool ok = r != NULL && r->type == REDIS_REPLY_STRING &&
              strstr(r->str, "cluster_state:ok") != NULL &&
              strstr(r->str, "cluster_slots_ok:16384") != NULL && strstr(r->str, known) != NULL;
    freeReplyObject(r);
    return ok;
}

/* The reply of a command (a status or bulk string) contains text. */
static bool reply_has(int port, const char *cmd, const char *text)
{
    redisReply *r = gwt_minicluster_cmd(port, cmd);
    bool ok = r != NULL && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) &&
              strstr(r->str, text) != NULL;
    freeReplyObject(r);
    return ok;
}

/* Polls until cond(c, i) or the deadline. */
static bool wait_for(const struct gwt_minicluster *c, int i, long long deadline,
                     bool (*cond)(const struct gwt_minicluster *, int))
{
    while (!cond(c, i) && gwt_now_ms() < deadline)
        pause_ms(STEP_MS);
    return cond(c, i);
}

static bool all_ok(const struct gwt_minicluster *c, int i)
{
    return node_ok(c->port[i], c->nodes);
}

/* Replica 3 + i knows its master (its id in CLUSTER NODES). */
static bool knows_master(const struct gwt_minicluster *c, int i)
{
    return reply_has(c->port[N + i], "CLUSTER NODES", c->id[i]);
}

static bool replica_up(const struct gwt_minicluster *c, int i)
{
    return reply_has(c->port[N + i], "INFO replication", "master_link_status:up");
}

static bool read_id(struct gwt_minicluster *c, int i)
{
    redisReply *r = gwt_minicluster_cmd(c->port[i], "CLUSTER MYID");
    bool ok = r != NULL && r->type == REDIS_REPLY_STRING && r->len < sizeof(c->id[i]);
    if (ok)
        memcpy(c->id[i], r->str, r->len + 1);
    freeReplyObject(r);
    return ok;
}

int gwt_minicluster_start(struct gwt_minicluster *c, bool replicas, int timeout_ms)
{
    long long deadline = gwt_now_ms() + timeout_ms;
    c->nodes = replicas ? 2 * N : N;
    snprintf(c->dir, sizeof(c->dir), "/tmp/gwt-cluster-XXXXXX");
    if (mkdtemp(c->dir) == NULL) {
        c->dir[0] = '\0';
        return -1;
    }
    for (int i = 0; i < c->nodes; i++) {
        c->port[i] = gwt_free_port();
        int bus = c->bus[i] = gwt_free_port();
        if (c->port[i] < 0 || bus < 0)
            goto fail;
        char port[16], busport[16], conf[32];
        snprintf(port, sizeof(port), "%d", c->port[i]);
        snprintf(busport, sizeof(busport), "%d", bus);
        snprintf(conf, sizeof(conf), "nodes-%d.conf", c->port[i]);
        const char *argv[] = {"redis-server",
                              "--port",
                              port,
                              "--bind",
                              "127.0.0.1",
                              "--cluster-enabled",
                              "yes",
                              "--cluster-port",
                              busport,
                              "--cluster-config-file",
                              conf,
                              "--cluster-node-timeout",
                              "2000",
                              "--dir",
                              c->dir,
                              "--save",
                              "",
                              "--appendonly",
                              "no",
                              "--protected-mode",
                              "no",
                              NULL};
        if (gwt_spawn(&c->proc[i], argv, NULL) != 0)
            goto fail;
    }
    for (int i = 0; i < c->nodes; i++) {
        redisReply *r = NULL;
        while ((r = gwt_minicluster_cmd(c->port[i], "PING")) == NULL && gwt_now_ms() < deadline &&
               gwt_proc_alive(&c->proc[i]))
            pause_ms(STEP_MS);
        if (r == NULL) {
            fprintf(stderr, "redis-server on %d never answered\n", c->port[i]);
            gwt_log_dump(&c->proc[i], 2000);
            goto fail;
        }
        freeReplyObject(r);
    }
    char addr[N][32];
    const char *create[5 + N] = {"redis-cli", "--cluster", "create"};
    for (int i = 0; i < N; i++) {
        snprintf(addr[i], sizeof(addr[i]), "127.0.0.1:%d", c->port[i]);
        create[3 + i] = addr[i];
    }
    create[3 + N] = "--cluster-yes";
    create[4 + N] = NULL;
    char *out = NULL, *err = NULL;
    long long left = deadline - gwt_now_ms();
    int rc = gwt_run(create, NULL, left > 0 ? (int)left : 1, &out, &err);
    if (rc != 0)
        fprintf(stderr, "redis-cli --cluster create: %d\n%s\n%s\n", rc, out ? out : "",
                err ? err : "");
    free(out);
    free(err);
    if (rc != 0)
        goto fail;
    for (int i = 0; i < c->nodes; i++) {
        if (!read_id(c, i))
            goto fail;
    }
    for (int i = 0; replicas && i < N; i++) {
        /* Joined, told whose replica it is once it knows that master. */
        if (!ok_cmd(c->port[N + i], "CLUSTER MEET 127.0.0.1 %d %d", c->port[0], c->bus[0]))
            goto fail;
    }
    for (int i = 0; replicas && i < N; i++) {
        if (!wait_for(c, i, deadline, knows_master) ||
            !ok_cmd(c->port[N + i], "CLUSTER REPLICATE %s", c->id[i])) {
            fprintf(stderr, "replica of master %d could not be set up\n", i);
            goto fail;
        }
    }
    for (int i = 0; i < c->nodes; i++) {
        if (!wait_for(c, i, deadline, all_ok)) {
            fprintf(stderr, "node %d never reported cluster_state:ok with %d nodes\n", i, c->nodes);
            goto fail;
        }
    }
    for (int i = 0; replicas && i < N; i++) {
        if (!wait_for(c, i, deadline, replica_up)) {
            fprintf(stderr, "replica of master %d never synchronised\n", i);
            goto fail;
        }
    }
    return 0;
fail:
    gwt_minicluster_stop(c);
    return -1;
}

int gwt_minicluster_kill(struct gwt_minicluster *c, int i)
{
    if (c->proc[i].pid <= 0)
        return -1;
    int rc = gwt_stop(&c->proc[i], SIGKILL, 5000);
    gwt_proc_cleanup(&c->proc[i]);
    return rc == -SIGKILL ? 0 : -1;
}

void gwt_minicluster_stop(struct gwt_minicluster *c)
{
    for (int i = 0; i < GWT_MINICLUSTER_NODES; i++) {
        if (c->proc[i].pid > 0) {
            int rc = gwt_stop(&c->proc[i], SIGTERM, 5000);
            if (rc != 0)
                fprintf(stderr, "redis-server on %d ended with %d\n", c->port[i], rc);
        }
        gwt_proc_cleanup(&c->proc[i]);
    }
    if (c->dir[0] != '\0') {
        const char *rm[] = {"rm", "-rf", c->dir, NULL};
        if (gwt_run(rm, NULL, 10000, NULL, NULL) != 0)
            fprintf(stderr, "could not remove %s\n", c->dir);
        c->dir[0] = '\0';
    }
}

int gwt_minicluster_owner(const struct gwt_minicluster *c, int slot)
{
    redisReply *r = NULL;
    for (int i = 0; i < c->nodes && r == NULL; i++)
        if (c->proc[i].pid > 0)
            r = gwt_minicluster_cmd(c->port[i], "CLUSTER SLOTS");
    int owner = -1;
    for (size_t i = 0; r != NULL && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->elements >= 3 && e->element[0]->integer <= slot && slot <= e->element[1]->integer)
            for (int m = 0; m < c->nodes; m++)
                if (e->element[2]->element[1]->integer == c->port[m])
                    owner = m;
    }
    freeReplyObject(r);
    return owner;
}

int gwt_minicluster_key_on(const struct gwt_minicluster *c, int m, const char *fmt, char *key,
                           size_t cap)
{
    for (int n = 0; n < 200; n++) {
        snprintf(key, cap, fmt, n);
        redisReply *r = gwt_minicluster_cmd(c->port[0], "CLUSTER KEYSLOT %s", key);
        int slot = r != NULL && r->type == REDIS_REPLY_INTEGER ? (int)r->integer : -1;
        freeReplyObject(r);
        if (slot >= 0 && gwt_minicluster_owner(c, slot) == m)
            return slot;
    }
    return -1;
}

int gwt_minicluster_migrate_begin(const struct gwt_minicluster *c, int slot, int from, int to)
{
    return ok_cmd(c->port[to], "CLUSTER SETSLOT %d IMPORTING %s", slot, c->id[from]) &&
                   ok_cmd(c->port[from], "CLUSTER SETSLOT %d MIGRATING %s", slot, c->id[to])
               ? 0
               : -1;
}

int gwt_minicluster_migrate_end(const struct gwt_minicluster *c, int slot, int from, int to)
{
    for (int round = 0; round < 100; round++) {
        redisReply *r = gwt_minicluster_cmd(c->port[from], "CLUSTER GETKEYSINSLOT %d 100", slot);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
            freeReplyObject(r);
            return -1;
        }
        size_t n = r->elements;
        for (size_t i = 0; i < n; i++) {
            if (!ok_cmd(c->port[from], "MIGRATE 127.0.0.1 %d %b 0 5000", c->port[to],
                        r->element[i]->str, r->element[i]->len)) {
                freeReplyObject(r);
                return -1;
            }
        }
        freeReplyObject(r);
        if (n == 0)
            break;
    }
    int third = 3 - from - to;
    return ok_cmd(c->port[to], "CLUSTER SETSLOT %d NODE %s", slot, c->id[to]) &&
                   ok_cmd(c->port[from], "CLUSTER SETSLOT %d NODE %s", slot, c->id[to]) &&
                   ok_cmd(c->port[third], "CLUSTER SETSLOT %d NODE %s", slot, c->id[to])
               ? 0
               : -1;
}
