/*
 * A blocking Redis client on the transport of redis_conn.c (redis_client.h),
 * with Sentinel discovery (redis_sentinel.c) when the target has sentinels.
 */
#include "redis_client.h"

#include "gw/resolve.h"
#include "redis_sentinel.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct gw_redis_client {
    const struct gw_redis_target *t;    /* borrowed */
    int timeout_ms;                     /* each step's bound */
    struct gw_redis_conn conn;          /* the link */
    struct gw_redis_sentinel *sentinel; /* Sentinel mode, else NULL */
    char err[400];                      /* last failure */
};

int gw_redis_client_create(struct gw_redis_client **out, const struct gw_redis_target *t,
                           int timeout_ms, char *why, size_t why_len)
{
    struct gw_redis_client *cl = calloc(1, sizeof(*cl));
    if (cl == NULL)
        return -ENOMEM;
    cl->t = t;
    cl->timeout_ms = timeout_ms > 0 ? timeout_ms : 100;
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

void gw_redis_client_destroy(struct gw_redis_client *cl)
{
    if (cl == NULL)
        return;
    gw_redis_conn_deinit(&cl->conn);
    if (cl->sentinel != NULL) {
        gw_redis_sentinel_deinit(cl->sentinel);
        free(cl->sentinel);
    }
    free(cl);
}

static int fail(struct gw_redis_client *cl, int rc, const char *what)
{
    snprintf(cl->err, sizeof(cl->err), "%s: %.300s", what, gw_redis_conn_error(&cl->conn));
    gw_redis_conn_close(&cl->conn);
    return rc;
}

/* One setup command answered +OK, or the failure. */
static int setup(struct gw_redis_client *cl, int argc, const char **argv, const char *what)
{
    if (gw_redis_client_append_argv(cl, argc, argv, NULL) != 0)
        return -ENOMEM;
    redisReply *rep = gw_redis_client_get_reply(cl);
    if (rep == NULL)
        return -EIO;
    bool ok = rep->type == REDIS_REPLY_STATUS;
    if (!ok)
        snprintf(cl->err, sizeof(cl->err), "%s: %.300s", what,
                 rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
    freeReplyObject(rep);
    if (!ok)
        gw_redis_conn_close(&cl->conn);
    return ok ? 0 : -EACCES;
}

int gw_redis_client_connect(struct gw_redis_client *cl)
{
    const struct gw_redis_target *t = cl->t;
    gw_redis_conn_close(&cl->conn);
    const char *host = t->host;
    int port = t->port;
    if (host == NULL && t->ncluster_nodes > 0) {
        host = t->cluster_nodes[0].host; /* Cluster: a seed (redirects not followed yet) */
        port = t->cluster_nodes[0].port;
    }
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
    char addr[256];
    if (t->unix_path == NULL && gw_resolve_host_text(host, port, 0, addr, sizeof(addr)) != 0) {
        snprintf(cl->err, sizeof(cl->err), "connect: %.200s has no address (yet)", host);
        gw_resolve_kick_host(host, port);
        return -EHOSTUNREACH;
    }
    int rc = gw_redis_conn_start(&cl->conn, t->unix_path != NULL ? NULL : addr, port, t->unix_path,
                                 t->tls_server_name != NULL ? t->tls_server_name : host);
    if (rc == -EINPROGRESS)
        rc = gw_redis_conn_establish(&cl->conn, cl->timeout_ms);
    if (rc == -EAGAIN && cl->conn.state != GW_RCONN_OPEN) {
        gw_redis_conn_close(&cl->conn);
        snprintf(cl->err, sizeof(cl->err), "connect: timed out");
        gw_resolve_kick_host(host, port);
        return -ETIMEDOUT;
    }
    if (rc != 0 && rc != -EAGAIN) {
        gw_resolve_kick_host(host, port);
        return fail(cl, rc, "connect");
    }
    if (t->password != NULL) {
        const char *auth[] = {"AUTH", t->username != NULL ? t->username : t->password, t->password};
        if ((rc = setup(cl, t->username != NULL ? 3 : 2, auth, "AUTH")) != 0)
            return rc;
    }
    if (t->db > 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", t->db);
        if ((rc = setup(cl, 2, (const char *[]){"SELECT", db}, "SELECT")) != 0)
            return rc;
    }
    cl->err[0] = '\0';
    return 0;
}

int gw_redis_client_append_argv(struct gw_redis_client *cl, int argc, const char **argv,
                                const size_t *lens)
{
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (len < 0)
        return -ENOMEM;
    int rc = gw_redis_conn_append(&cl->conn, cmd, (size_t)len);
    explicit_bzero(cmd, (size_t)len); /* AUTH holds a password */
    redisFreeCommand(cmd);
    return rc;
}

redisReply *gw_redis_client_get_reply(struct gw_redis_client *cl)
{
    if (cl->conn.state != GW_RCONN_OPEN) {
        snprintf(cl->err, sizeof(cl->err), "not connected");
        return NULL;
    }
    void *rep = NULL;
    int rc = gw_redis_conn_get_reply(&cl->conn, &rep, cl->timeout_ms);
    if (rc == -EAGAIN) {
        snprintf(cl->err, sizeof(cl->err), "no reply within %d ms", cl->timeout_ms);
        gw_redis_conn_close(&cl->conn); /* the stream is out of step now */
        return NULL;
    }
    if (rc != 0) {
        (void)fail(cl, rc, "reply");
        return NULL;
    }
    redisReply *r = rep;
    if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "READONLY", 8) == 0) {
        /* A replica now: the next connect finds the master again. */
        snprintf(cl->err, sizeof(cl->err), "READONLY: the server is a replica now");
        gw_redis_conn_close(&cl->conn);
    }
    return r;
}

redisReply *gw_redis_client_command_argv(struct gw_redis_client *cl, int argc, const char **argv,
                                         const size_t *lens)
{
    if (gw_redis_client_append_argv(cl, argc, argv, lens) != 0) {
        snprintf(cl->err, sizeof(cl->err), "out of memory");
        return NULL;
    }
    return gw_redis_client_get_reply(cl);
}

bool gw_redis_client_connected(const struct gw_redis_client *cl)
{
    return cl->conn.state == GW_RCONN_OPEN;
}

const char *gw_redis_client_error(const struct gw_redis_client *cl)
{
    return cl->err;
}
