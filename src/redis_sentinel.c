/*
 * Master discovery through Redis Sentinel (redis_sentinel.h): a non-blocking
 * walk over the sentinels, one `SENTINEL get-master-addr-by-name` each until
 * one names the master. A sentinel that is down, slow, refuses the AUTH or
 * does not know the master is skipped; the one that answered is asked first
 * next time. Locking: the process-wide last master is guarded by one mutex,
 * the failover count is an atomic; everything else belongs to one thread.
 */
#include "redis_sentinel.h"

#include "gw/resolve.h"
#include "ratelimit_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t g_master_mu = PTHREAD_MUTEX_INITIALIZER;
static char g_master[300];               /* "host:port" last seen, "" before the first */
static _Atomic uint64_t g_failovers = 0; /* changes of g_master */

bool gw_redis_sentinel_note_master(const char *host, int port)
{
    char now[sizeof(g_master)];
    snprintf(now, sizeof(now), "%s:%d", host, port);
    pthread_mutex_lock(&g_master_mu);
    bool changed = g_master[0] != '\0' && strcmp(g_master, now) != 0;
    memcpy(g_master, now, sizeof(now));
    pthread_mutex_unlock(&g_master_mu);
    if (changed)
        atomic_fetch_add_explicit(&g_failovers, 1, memory_order_relaxed);
    return changed;
}

#define CLUSTER_MASTERS_MAX 256
static char g_cluster_masters[CLUSTER_MASTERS_MAX][300]; /* with g_master_mu */
static size_t g_ncluster_masters;

bool gw_redis_cluster_note_master(const char *host, int port, bool gone)
{
    char now[300];
    snprintf(now, sizeof(now), "%s:%d", host, port);
    pthread_mutex_lock(&g_master_mu);
    bool known = false;
    for (size_t i = 0; i < g_ncluster_masters && !known; i++)
        known = strcmp(g_cluster_masters[i], now) == 0;
    bool counted = false;
    if (!known && g_ncluster_masters < CLUSTER_MASTERS_MAX) {
        counted = gone && g_ncluster_masters > 0;
        memcpy(g_cluster_masters[g_ncluster_masters++], now, sizeof(now));
    }
    pthread_mutex_unlock(&g_master_mu);
    if (counted)
        atomic_fetch_add_explicit(&g_failovers, 1, memory_order_relaxed);
    return counted;
}

uint64_t gw_redis_failovers_total(void)
{
    return atomic_load_explicit(&g_failovers, memory_order_relaxed);
}

int gw_redis_sentinel_init(struct gw_redis_sentinel *s, const struct gw_redis_target *t,
                           int timeout_ms, char *why, size_t why_len)
{
    memset(s, 0, sizeof(*s));
    s->t = t;
    s->timeout_ms = timeout_ms > 0 ? timeout_ms : 100;
    return gw_redis_conn_init(&s->conn, t, why, why_len);
}

void gw_redis_sentinel_deinit(struct gw_redis_sentinel *s)
{
    gw_redis_conn_deinit(&s->conn);
}

void gw_redis_sentinel_cancel(struct gw_redis_sentinel *s)
{
    gw_redis_conn_close(&s->conn);
    s->active = false;
}

/* Opens the link to sentinel s->next and queues its questions. */
static int ask_next(struct gw_redis_sentinel *s, uint64_t now_ms)
{
    const struct gw_redis_node *n = &s->t->sentinels[s->next];
    s->npending = 0;
    /* Connect and answer: two timeouts, as for the master. */
    s->deadline_ms = now_ms + 2 * (uint64_t)s->timeout_ms;
    /* A name the resolver follows (server.c registers the sentinels) is
     * connected to by its current address: no DNS on the worker. */
    char addr[256];
    if (gw_resolve_host_text(n->host, n->port, 0, addr, sizeof(addr)) != 0) {
        snprintf(s->conn.err, sizeof(s->conn.err), "connect: %s has no address (yet)", n->host);
        gw_resolve_kick_host(n->host, n->port);
        return -EHOSTUNREACH;
    }
    int rc = gw_redis_conn_start(&s->conn, addr, n->port, NULL,
                                 s->t->tls_server_name != NULL ? s->t->tls_server_name : n->host);
    if (rc != 0 && rc != -EINPROGRESS)
        return rc;
    gw_rl_redis_bound_reader(s->conn.reader); /* no huge announced arrays */
    if (s->t->sentinel_password != NULL) {
        const char *auth[] = {"AUTH",
                              s->t->sentinel_username != NULL ? s->t->sentinel_username
                                                              : s->t->sentinel_password,
                              s->t->sentinel_password};
        if (gw_redis_conn_append_argv(&s->conn, s->t->sentinel_username != NULL ? 3 : 2, auth))
            return -ENOMEM;
        s->npending++;
    }
    const char *q[] = {"SENTINEL", "get-master-addr-by-name", s->t->sentinel_master};
    if (gw_redis_conn_append_argv(&s->conn, 3, q) != 0)
        return -ENOMEM;
    s->npending++;
    return 0;
}

/* This sentinel failed (why): on to the next one, or the query fails. */
static int skip(struct gw_redis_sentinel *s, uint64_t now_ms, const char *why)
{
    const struct gw_redis_node *n = &s->t->sentinels[s->next];
    snprintf(s->err, sizeof(s->err), "sentinel %s:%d: %s", n->host, n->port, why);
    gw_redis_conn_close(&s->conn);
    s->next = (s->next + 1) % s->t->nsentinels;
    if (++s->tried >= s->t->nsentinels) {
        s->active = false;
        return -EHOSTUNREACH;
    }
    int rc = ask_next(s, now_ms);
    if (rc != 0)
        return skip(s, now_ms, gw_redis_conn_error(&s->conn));
    return -EINPROGRESS;
}

/* Takes one reply: AUTH's OK, or the address. 1 with the answer, 0 for
 * more to read, or a skip. */
static int take(struct gw_redis_sentinel *s, uint64_t now_ms, redisReply *rep)
{
    char why[200];
    int rc = 0;
    if (s->npending == 2) { /* AUTH */
        if (rep->type != REDIS_REPLY_STATUS) {
            snprintf(why, sizeof(why), "AUTH: %s",
                     rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
            rc = -1;
        }
    } else if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
               rep->element[0]->type == REDIS_REPLY_STRING &&
               rep->element[1]->type == REDIS_REPLY_STRING && rep->element[0]->len > 0 &&
               rep->element[0]->len < sizeof(s->host)) {
        char *end = NULL;
        long port = strtol(rep->element[1]->str, &end, 10);
        if (*end != '\0' || port < 1 || port > 65535) {
            snprintf(why, sizeof(why), "bad port in the answer");
            rc = -1;
        } else {
            memcpy(s->host, rep->element[0]->str, rep->element[0]->len);
            s->host[rep->element[0]->len] = '\0';
            s->port = (int)port;
            rc = 1;
        }
    } else if (rep->type == REDIS_REPLY_NIL) {
        snprintf(why, sizeof(why), "does not know master \"%s\"", s->t->sentinel_master);
        rc = -1;
    } else {
        snprintf(why, sizeof(why), "%s",
                 rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
        rc = -1;
    }
    freeReplyObject(rep);
    s->npending--;
    if (rc < 0)
        return skip(s, now_ms, why);
    if (rc == 1) {
        gw_redis_conn_close(&s->conn); /* one question per query: no idle links */
        s->active = false;
    }
    return rc;
}

int gw_redis_sentinel_poll(struct gw_redis_sentinel *s, uint64_t now_ms, int wait_ms)
{
    if (!s->active)
        return -ENOTCONN;
    for (int guard = 0; guard < 4 * GW_CONFIG_MAX_REDIS_NODES + 8; guard++) {
        if (now_ms >= s->deadline_ms) {
            int rc = skip(s, now_ms, "timed out");
            if (rc != -EINPROGRESS)
                return rc;
            continue;
        }
        int left = (int)GW_MIN((uint64_t)wait_ms, s->deadline_ms - now_ms);
        void *rep = NULL;
        int rc = gw_redis_conn_get_reply(&s->conn, &rep, left);
        if (rc == 0) {
            rc = take(s, now_ms, rep);
            if (rc == 1)
                return 0;
            if (rc != 0 && rc != -EINPROGRESS)
                return rc;
            continue;
        }
        if (rc != -EAGAIN) {
            char why[sizeof(s->conn.err)];
            memcpy(why, s->conn.err, sizeof(why));
            rc = skip(s, now_ms, why);
            if (rc != -EINPROGRESS)
                return rc;
            continue;
        }
        if (wait_ms == 0)
            return -EINPROGRESS;
        uint64_t later = gw_now_ms();
        wait_ms -= (int)GW_MIN((uint64_t)wait_ms, later - now_ms);
        now_ms = later;
        if (wait_ms == 0 && now_ms < s->deadline_ms)
            return -EINPROGRESS;
    }
    return -EINPROGRESS;
}

int gw_redis_sentinel_start(struct gw_redis_sentinel *s, uint64_t now_ms)
{
    gw_redis_conn_close(&s->conn);
    s->active = true;
    s->tried = 0;
    s->err[0] = '\0';
    int rc = ask_next(s, now_ms);
    if (rc != 0) {
        rc = skip(s, now_ms, gw_redis_conn_error(&s->conn));
        if (rc != -EINPROGRESS)
            return rc;
    }
    return gw_redis_sentinel_poll(s, now_ms, 0);
}
