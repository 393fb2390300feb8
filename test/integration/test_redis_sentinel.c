/*
 * Integration tests of Sentinel mode (SPEC.md §12, issue 15) with real
 * servers on loopback: a redis-server master, one replica and three
 * redis-sentinel processes (quorum 2, down-after 1000 ms). The gateway finds
 * the master through the sentinels (a dead sentinel first in the list is
 * skipped) and limits exactly; after SENTINEL FAILOVER, and after the master
 * is killed, the limiter is back on the new master within 2 s of the
 * sentinels naming it (measured and printed), gateway_redis_failovers_total
 * counts the changes, and a gateway in open mode answers no 5xx throughout.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "gwt_suite.h"
#include "gwt_tls.h"
#include "gwtest.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <signal.h>

#define NSENT       3
#define MASTER_NAME "gwmaster"

static char g_dir[128];
static struct gwt_proc g_redis[2]; /* [0] first master, [1] first replica */
static int g_rport[2];
static struct gwt_proc g_sent[NSENT];
static int g_sport[NSENT];

static void pause_ms(long ms)
{
    usleep((useconds_t)ms * 1000);
}

static redisContext *rconn(int port)
{
    struct timeval tv = {.tv_sec = 1, .tv_usec = 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (c == NULL || c->err) {
        if (c != NULL)
            redisFree(c);
        return NULL;
    }
    (void)redisSetTimeout(c, tv);
    return c;
}

/* The port the sentinel at sport names for the master, or -1. */
static int named_master_port(int sport)
{
    redisContext *c = rconn(sport);
    if (c == NULL)
        return -1;
    redisReply *r = redisCommand(c, "SENTINEL get-master-addr-by-name %s", MASTER_NAME);
    int port = -1;
    if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2)
        port = atoi(r->element[1]->str);
    if (r != NULL)
        freeReplyObject(r);
    redisFree(c);
    return port;
}

/* An integer-valued reply of a command, or -1. */
static long long rint_cmd(int port, const char *cmd)
{
    redisContext *c = rconn(port);
    if (c == NULL)
        return -1;
    redisReply *r = redisCommand(c, cmd);
    long long v = r != NULL && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    if (r != NULL && r->type == REDIS_REPLY_ARRAY)
        v = (long long)r->elements;
    if (r != NULL)
        freeReplyObject(r);
    redisFree(c);
    return v;
}

/* True when INFO replication of the server at port contains needle. */
static bool info_has(int port, const char *needle)
{
    redisContext *c = rconn(port);
    if (c == NULL)
        return false;
    redisReply *r = redisCommand(c, "INFO replication");
    bool has = r != NULL && r->type == REDIS_REPLY_STRING && strstr(r->str, needle) != NULL;
    if (r != NULL)
        freeReplyObject(r);
    redisFree(c);
    return has;
}

/* Polls pred for at most timeout_ms (every 20 ms) or fails with what. */
#define WAIT_FOR(pred, timeout_ms, what)                                                           \
    do {                                                                                           \
        long long dl_ = gwt_now_ms() + (timeout_ms);                                               \
        while (!(pred) && gwt_now_ms() < dl_)                                                      \
            pause_ms(20);                                                                          \
        if (!(pred))                                                                               \
            fail_msg("timed out waiting for %s", what);                                            \
    } while (0)

static void redis_start(int i, int replica_of)
{
    g_rport[i] = gwt_free_port();
    assert_true(g_rport[i] > 0);
    char ps[16], mp[16];
    snprintf(ps, sizeof(ps), "%d", g_rport[i]);
    snprintf(mp, sizeof(mp), "%d", replica_of);
    const char *argv[24] = {"redis-server", "--port", ps,      "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no",     "--dir", g_dir};
    size_t k = 11;
    if (replica_of > 0) {
        argv[k++] = "--replicaof";
        argv[k++] = "127.0.0.1";
        argv[k++] = mp;
    }
    argv[k] = NULL;
    memset(&g_redis[i], 0, sizeof(g_redis[i]));
    assert_int_equal(gwt_spawn(&g_redis[i], argv, NULL), 0);
    assert_int_equal(gwt_wait_port(g_rport[i], 10000), 0);
}

static void sentinel_start(int i)
{
    g_sport[i] = gwt_free_port();
    assert_true(g_sport[i] > 0);
    char path[192];
    snprintf(path, sizeof(path), "%s/sentinel-%d.conf", g_dir, i);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "port %d\nbind 127.0.0.1\ndir %s\n"
            "sentinel monitor %s 127.0.0.1 %d 2\n"
            "sentinel down-after-milliseconds %s 1000\n"
            "sentinel failover-timeout %s 10000\n"
            "sentinel parallel-syncs %s 1\n",
            g_sport[i], g_dir, MASTER_NAME, g_rport[0], MASTER_NAME, MASTER_NAME, MASTER_NAME);
    fclose(f);
    const char *argv[] = {"redis-sentinel", path, NULL};
    memset(&g_sent[i], 0, sizeof(g_sent[i]));
    assert_int_equal(gwt_spawn(&g_sent[i], argv, NULL), 0);
    assert_int_equal(gwt_wait_port(g_sport[i], 10000), 0);
}

/* gateway_redis_failovers_total from /metrics, or -1. */
static long long failovers(int gport)
{
    struct gwt_response r = {0};
    long long v = -1;
    if (gwt_get(gport, "/metrics", &r) == 0 && r.body != NULL) {
        const char *p = strstr(r.body, "\ngateway_redis_failovers_total ");
        if (p != NULL)
            v = atoll(p + strlen("\ngateway_redis_failovers_total "));
    }
    gwt_response_free(&r);
    return v;
}

/* GET /users/1 as client ip (X-Forwarded-For from the trusted loopback);
 * the status, or -1. */
static int get_as(int gport, const char *ip)
{
    char req[256];
    snprintf(req, sizeof(req),
             "GET /users/1 HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: %s\r\nConnection: close\r\n\r\n",
             ip);
    struct gwt_response r = {0};
    int st = gwt_http(gport, req, &r) == 0 ? r.status : -1;
    gwt_response_free(&r);
    return st;
}

static void sentinels_env(char *buf, size_t cap, int dead_port)
{
    snprintf(buf, cap, "REDIS_SENTINELS=127.0.0.1:%d, 127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d",
             dead_port, g_sport[0], g_sport[1], g_sport[2]);
}

/* Keys under the rl: prefix on the server at port. */
static long long keys_on(int port)
{
    return rint_cmd(port, "KEYS rl:*");
}

/* One GET /users/1 as client ip on the open keep-alive connection *fd
 * (reopened on port when the gateway closed it); the status or -1. */
static int get_on(int *fd, int port, const char *ip)
{
    char req[256];
    snprintf(req, sizeof(req), "GET /users/1 HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: %s\r\n\r\n",
             ip);
    struct gwt_response r = {0};
    int st = -1;
    if (*fd >= 0 && gwt_send_str(*fd, req) == 0 && gwt_read_response(*fd, &r, false) == 0)
        st = r.status;
    if (st < 0 || r.conn_closed) {
        if (*fd >= 0)
            close(*fd);
        *fd = gwt_connect(port);
    }
    gwt_response_free(&r);
    return st;
}

/* A failover is under way (started by the caller): measures from the
 * sentinels naming new_port until gateway gclosed (closed mode) answers a
 * fresh client 200 on each of NCONN connections held open at once (the
 * acceptor spreads them over the workers: every worker is on the new
 * master), two rounds in a row, each request's key stored on new_port;
 * meanwhile gopen (open mode) must never answer a 5xx. Returns the time
 * from the naming to the end of those rounds in ms (the first worker's time
 * is printed too). */
#define NCONN 4
static long long follow_failover(int gclosed, int gopen, int new_port, long long want_failovers,
                                 int *seq, const char *what)
{
    long long t_named = -1, t_first = -1, t_all = -1, start = gwt_now_ms();
    int refused = 0, open_5xx = 0, good_rounds = 0;
    int fds[NCONN];
    for (int i = 0; i < NCONN; i++)
        fds[i] = gwt_connect(gclosed);
    while (gwt_now_ms() - start < 30000 && t_all < 0) {
        if (t_named < 0 && named_master_port(g_sport[(*seq) % NSENT]) == new_port)
            t_named = gwt_now_ms();
        long long before = t_named >= 0 ? keys_on(new_port) : -1;
        int ok = 0;
        for (int i = 0; i < NCONN; i++) {
            char ip[32];
            snprintf(ip, sizeof(ip), "10.%d.%d.%d", 100 + (*seq >> 16) % 100, (*seq >> 8) & 255,
                     *seq & 255);
            (*seq)++;
            int st = get_on(&fds[i], gclosed, ip);
            refused += st == 503;
            ok += st == 200;
            if (get_as(gopen, ip) >= 500)
                open_5xx++;
        }
        bool counted = t_named >= 0 && failovers(gclosed) >= want_failovers &&
                       keys_on(new_port) - before == ok;
        if (counted && ok > 0 && t_first < 0)
            t_first = gwt_now_ms();
        good_rounds = counted && ok == NCONN ? good_rounds + 1 : 0;
        if (good_rounds == 2)
            t_all = gwt_now_ms();
        pause_ms(5);
    }
    for (int i = 0; i < NCONN; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    if (t_named < 0 || t_all < 0)
        fail_msg("%s: named %lld, recovered %lld", what, t_named, t_all);
    print_message("%s: sentinels named the new master %lld ms after the start; first request "
                  "limited on it %lld ms later, every worker %lld ms later (closed mode "
                  "answered %d x 503 in between; open mode 5xx: %d)\n",
                  what, t_named - start, t_first - t_named, t_all - t_named, refused, open_5xx);
    assert_int_equal(open_5xx, 0);
    return t_all - t_named;
}

/* The whole story on one set of servers: discovery and exact limits, then
 * SENTINEL FAILOVER, then the (new) master killed. */
static void test_sentinel_limits_and_failovers(void **state)
{
    (void)state;
    redis_start(0, 0);
    redis_start(1, g_rport[0]);
    WAIT_FOR(info_has(g_rport[1], "master_link_status:up"), 15000, "the replica to sync");
    for (int i = 0; i < NSENT; i++)
        sentinel_start(i);
    /* Every sentinel knows the replica and the other two sentinels (hello
     * messages every 2 s), so a quorum can form when the master dies. */
    for (int i = 0; i < NSENT; i++) {
        char cmd[96];
        snprintf(cmd, sizeof(cmd), "SENTINEL replicas %s", MASTER_NAME);
        WAIT_FOR(rint_cmd(g_sport[i], cmd) == 1, 20000, "a sentinel to see the replica");
        snprintf(cmd, sizeof(cmd), "SENTINEL sentinels %s", MASTER_NAME);
        WAIT_FOR(rint_cmd(g_sport[i], cmd) == NSENT - 1, 20000, "the sentinels to meet");
    }

    int dead = gwt_free_port();
    char sent[256];
    sentinels_env(sent, sizeof(sent), dead);
    const char *envc[] = {sent,
                          "REDIS_SENTINEL_MASTER=" MASTER_NAME,
                          "RATE_LIMIT_REQUESTS=3",
                          "RATE_LIMIT_WINDOW_SECONDS=3600",
                          "RATE_LIMIT_FAILURE_MODE=closed",
                          "LOG_LEVEL=debug",
                          "TRUSTED_PROXIES=127.0.0.1",
                          "WORKER_THREADS=2",
                          NULL};
    const char *envo[] = {sent,
                          "REDIS_SENTINEL_MASTER=" MASTER_NAME,
                          "RATE_LIMIT_REQUESTS=3",
                          "RATE_LIMIT_WINDOW_SECONDS=3600",
                          "RATE_LIMIT_FAILURE_MODE=open",
                          "RATE_LIMIT_KEY_PREFIX=open",
                          "TRUSTED_PROXIES=127.0.0.1",
                          "WORKER_THREADS=2",
                          NULL};
    gwt_suite_start_gw(envc);
    gwt_suite_start_gw2(envo);
    int gc = gwt_fx.gport, go = gwt_fx.gport2;

    /* Limits exactly, on the master. */
    gwt_avoid_window_edge(3600, 60);
    assert_int_equal(get_as(gc, "192.0.2.1"), 200);
    assert_int_equal(get_as(gc, "192.0.2.1"), 200);
    assert_int_equal(get_as(gc, "192.0.2.1"), 200);
    assert_int_equal(get_as(gc, "192.0.2.1"), 429);
    assert_true(keys_on(g_rport[0]) >= 1);
    assert_int_equal(failovers(gc), 0);

    /* SENTINEL FAILOVER: the replica becomes the master. */
    int seq = 1;
    redisContext *c = rconn(g_sport[0]);
    assert_non_null(c);
    redisReply *r = redisCommand(c, "SENTINEL FAILOVER %s", MASTER_NAME);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
    redisFree(c);
    long long t1 = follow_failover(gc, go, g_rport[1], 1, &seq, "SENTINEL FAILOVER");
    assert_true(t1 <= 2000);

    /* Counts of a client go on on the new master (replicated): the client
     * that used its 3 is still refused by a gateway started now (so from
     * the count in Redis, not from an over-limit cache). */
    static struct gwt_proc g3;
    int p3;
    assert_int_equal(gwt_gateway_for(&g3, &p3, gwt_fx.bport, envc), 0);
    assert_int_equal(get_as(p3, "192.0.2.1"), 429);
    assert_int_equal(get_as(p3, "192.0.2.2"), 200);

    /* The old master comes back as a replica; wait for it to sync before
     * killing the new master, so a quorum can promote it. */
    WAIT_FOR(info_has(g_rport[0], "master_link_status:up"), 20000, "the old master to replicate");
    for (int i = 0; i < NSENT; i++) {
        char cmd[96];
        snprintf(cmd, sizeof(cmd), "SENTINEL replicas %s", MASTER_NAME);
        WAIT_FOR(rint_cmd(g_sport[i], cmd) == 1, 20000, "a sentinel to see the new replica");
    }

    /* Kill the master: the sentinels agree it is down after 1 s and fail
     * over to the old one. */
    assert_int_equal(kill(g_redis[1].pid, SIGKILL), 0);
    long long t2 = follow_failover(gc, go, g_rport[0], 2, &seq, "master killed");
    assert_true(t2 <= 2000);
    assert_int_equal(gwt_stop(&g_redis[1], SIGKILL, 5000), -SIGKILL);

    /* Exact again on the new master. */
    gwt_avoid_window_edge(3600, 60);
    assert_int_equal(get_as(gc, "192.0.2.99"), 200);
    assert_int_equal(get_as(gc, "192.0.2.99"), 200);
    assert_int_equal(get_as(gc, "192.0.2.99"), 200);
    assert_int_equal(get_as(gc, "192.0.2.99"), 429);
    assert_int_equal(failovers(gc), 2);
}

/* No sentinel reachable: the store is down, closed mode refuses, and the
 * log says which sentinels failed. */
static void test_sentinel_none_reachable(void **state)
{
    (void)state;
    char sent[128];
    int a = gwt_free_port();
    snprintf(sent, sizeof(sent), "REDIS_SENTINELS=127.0.0.1:%d", a);
    const char *env[] = {sent, "REDIS_SENTINEL_MASTER=" MASTER_NAME,
                         "RATE_LIMIT_FAILURE_MODE=closed", NULL};
    gwt_suite_start_gw2(env);
    assert_int_equal(gwt_wait_log(&gwt_fx.gw2, "no sentinel answered", 5000, NULL, 0), 0);
    struct gwt_response r = {0};
    assert_int_equal(gwt_get(gwt_fx.gport2, "/users/1", &r), 0);
    assert_int_equal(r.status, 503);
    gwt_response_free(&r);
}

/* TLS everywhere and passwords on both the sentinel and the master: one
 * master (TLS port only) and one sentinel (TLS port only, quorum 1). The
 * gateway (REDIS_TLS=on) finds the master through the sentinel and limits
 * exactly; with a wrong sentinel password no sentinel answers and closed
 * mode refuses. */
static void test_sentinel_tls_and_passwords(void **state)
{
    (void)state;
    struct gwt_tls_certs certs;
    assert_int_equal(gwt_tls_certs_make(&certs), 0);
    int mport = gwt_free_port(), sport = gwt_free_port();
    char mp[16];
    snprintf(mp, sizeof(mp), "%d", mport);
    const char *margv[] = {"redis-server",
                           "--port",
                           "0",
                           "--tls-port",
                           mp,
                           "--bind",
                           "127.0.0.1",
                           "--tls-cert-file",
                           certs.srv,
                           "--tls-key-file",
                           certs.srv_key,
                           "--tls-ca-cert-file",
                           certs.ca,
                           "--tls-auth-clients",
                           "no",
                           "--requirepass",
                           "master-pw",
                           "--save",
                           "",
                           "--appendonly",
                           "no",
                           NULL};
    static struct gwt_proc master, sentinel;
    memset(&master, 0, sizeof(master));
    memset(&sentinel, 0, sizeof(sentinel));
    assert_int_equal(gwt_spawn(&master, margv, NULL), 0);
    assert_int_equal(gwt_wait_port(mport, 10000), 0);
    char path[256];
    snprintf(path, sizeof(path), "%s/sentinel-tls.conf", certs.dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "port 0\ntls-port %d\nbind 127.0.0.1\ndir %s\n"
            "tls-cert-file %s\ntls-key-file %s\ntls-ca-cert-file %s\n"
            "tls-auth-clients no\ntls-replication yes\nrequirepass sentinel-pw\n"
            "sentinel monitor tlsmaster 127.0.0.1 %d 1\n"
            "sentinel auth-pass tlsmaster master-pw\n",
            sport, certs.dir, certs.srv, certs.srv_key, certs.ca, mport);
    fclose(f);
    const char *sargv[] = {"redis-sentinel", path, NULL};
    assert_int_equal(gwt_spawn(&sentinel, sargv, NULL), 0);
    assert_int_equal(gwt_wait_port(sport, 10000), 0);

    char sent[96], ca[256];
    snprintf(sent, sizeof(sent), "REDIS_SENTINELS=127.0.0.1:%d", sport);
    snprintf(ca, sizeof(ca), "REDIS_TLS_CA_FILE=%s", certs.ca);
    const char *env[] = {sent,
                         ca,
                         "REDIS_TLS=on",
                         "REDIS_SENTINEL_MASTER=tlsmaster",
                         "REDIS_SENTINEL_PASSWORD=sentinel-pw",
                         "REDIS_PASSWORD=master-pw",
                         "RATE_LIMIT_REQUESTS=3",
                         "RATE_LIMIT_WINDOW_SECONDS=3600",
                         "RATE_LIMIT_FAILURE_MODE=closed",
                         "TRUSTED_PROXIES=127.0.0.1",
                         NULL};
    gwt_suite_start_gw2(env);
    /* The rules sync (SPEC.md §11) found the master through the sentinel. */
    assert_int_equal(gwt_wait_log(&gwt_fx.gw2, "no shared rules in Redis", 5000, NULL, 0), 0);
    gwt_avoid_window_edge(3600, 60);
    assert_int_equal(get_as(gwt_fx.gport2, "198.51.100.1"), 200);
    assert_int_equal(get_as(gwt_fx.gport2, "198.51.100.1"), 200);
    assert_int_equal(get_as(gwt_fx.gport2, "198.51.100.1"), 200);
    assert_int_equal(get_as(gwt_fx.gport2, "198.51.100.1"), 429);
    assert_int_equal(gwt_stop(&gwt_fx.gw2, SIGTERM, 5000), 0);
    char *log = gwt_log_read(&gwt_fx.gw2);
    assert_non_null(log);
    assert_null(strstr(log, "sentinel-pw"));
    assert_null(strstr(log, "master-pw"));
    free(log);
    gwt_proc_cleanup(&gwt_fx.gw2);

    const char *bad[] = {sent,
                         ca,
                         "REDIS_TLS=on",
                         "REDIS_SENTINEL_MASTER=tlsmaster",
                         "REDIS_SENTINEL_PASSWORD=wrong-pw",
                         "REDIS_PASSWORD=master-pw",
                         "RATE_LIMIT_FAILURE_MODE=closed",
                         NULL};
    gwt_suite_start_gw2(bad);
    char line[512];
    assert_int_equal(gwt_wait_log(&gwt_fx.gw2, "no sentinel answered", 5000, line, sizeof(line)),
                     0);
    print_message("wrong sentinel password logged: %s\n", line);
    assert_non_null(strstr(line, "AUTH"));
    assert_int_equal(get_as(gwt_fx.gport2, "198.51.100.2"), 503);
    gwt_stop_and_cleanup(&sentinel);
    gwt_stop_and_cleanup(&master);
    gwt_tls_certs_remove(&certs);
}

/* Runs a command without arguments containing spaces on the server at
 * port; asserts it answered without an error. */
static void rcmd(int port, const char *cmd)
{
    redisContext *c = rconn(port);
    assert_non_null(c);
    redisReply *r = redisCommand(c, cmd);
    assert_non_null(r);
    assert_true(r->type != REDIS_REPLY_ERROR);
    freeReplyObject(r);
    redisFree(c);
}

/* REDIS_URL's server demoted to a replica without dropping its clients (a
 * managed endpoint during its failover): the next check is refused with
 * READONLY, the worker drops the link, reconnects only to a master (ROLE)
 * and RATE_LIMIT_FAILURE_MODE decides meanwhile (log lines say why); once
 * the server is a master again, every worker limits through it. */
static void test_readonly_replica(void **state)
{
    (void)state;
    static struct gwt_proc a, b;
    int aport = gwt_free_port(), bport = gwt_free_port();
    char ap[16], bp[16];
    snprintf(ap, sizeof(ap), "%d", aport);
    snprintf(bp, sizeof(bp), "%d", bport);
    const char *aargv[] = {"redis-server", "--port", ap,  "--bind", "127.0.0.1", "--save", "",
                           "--appendonly", "no",     NULL};
    const char *bargv[] = {"redis-server", "--port", bp,  "--bind", "127.0.0.1", "--save", "",
                           "--appendonly", "no",     NULL};
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    assert_int_equal(gwt_spawn(&a, aargv, NULL), 0);
    assert_int_equal(gwt_spawn(&b, bargv, NULL), 0);
    assert_int_equal(gwt_wait_port(aport, 10000), 0);
    assert_int_equal(gwt_wait_port(bport, 10000), 0);

    char url[64];
    snprintf(url, sizeof(url), "REDIS_URL=redis://127.0.0.1:%d", aport);
    const char *env[] = {url,
                         "RATE_LIMIT_REQUESTS=3",
                         "RATE_LIMIT_WINDOW_SECONDS=3600",
                         "RATE_LIMIT_FAILURE_MODE=closed",
                         "LOG_LEVEL=debug",
                         "TRUSTED_PROXIES=127.0.0.1",
                         NULL};
    gwt_suite_start_gw2(env);
    assert_int_equal(get_as(gwt_fx.gport2, "203.0.113.1"), 200);

    /* Demoted, clients kept: READONLY, then ROLE refuses the reconnect. */
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "REPLICAOF 127.0.0.1 %d", bport);
    rcmd(aport, cmd);
    int st = 0;
    for (int i = 0; i < 100 && st != 503; i++)
        st = get_as(gwt_fx.gport2, "203.0.113.1");
    assert_int_equal(st, 503);
    char line[512];
    assert_int_equal(gwt_wait_log(&gwt_fx.gw2, "READONLY", 5000, line, sizeof(line)), 0);
    print_message("demoted: %s\n", line);
    assert_int_equal(gwt_wait_log(&gwt_fx.gw2, "not a master", 5000, NULL, 0), 0);

    /* A master again: every worker back (fresh clients on new connections,
     * spread over the workers, 6 in a row), within the reconnect backoff. */
    rcmd(aport, "REPLICAOF NO ONE");
    gwt_avoid_window_edge(3600, 60);
    long long t0 = gwt_now_ms();
    int streak = 0;
    for (int i = 0; streak < 6 && gwt_now_ms() - t0 < 10000; i++) {
        char ip[32];
        snprintf(ip, sizeof(ip), "203.0.114.%d", i % 250);
        streak = get_as(gwt_fx.gport2, ip) == 200 ? streak + 1 : 0;
        if (streak == 0)
            pause_ms(20);
    }
    assert_int_equal(streak, 6);
    print_message("promoted again: every worker limiting %lld ms later\n", gwt_now_ms() - t0);
    assert_int_equal(get_as(gwt_fx.gport2, "203.0.113.2"), 200);
    assert_int_equal(get_as(gwt_fx.gport2, "203.0.113.2"), 200);
    assert_int_equal(get_as(gwt_fx.gport2, "203.0.113.2"), 200);
    assert_int_equal(get_as(gwt_fx.gport2, "203.0.113.2"), 429);
    gwt_stop_and_cleanup(&b);
    gwt_stop_and_cleanup(&a);
}

static int group_setup(void **state)
{
    snprintf(g_dir, sizeof(g_dir), "/tmp/gw-sentinel-XXXXXX");
    if (mkdtemp(g_dir) == NULL)
        return -1;
    return gwt_suite_setup(0);
}

static int group_teardown(void **state)
{
    int rc = gwt_suite_teardown(state);
    for (int i = 0; i < NSENT; i++)
        gwt_stop_and_cleanup(&g_sent[i]);
    for (int i = 0; i < 2; i++)
        gwt_stop_and_cleanup(&g_redis[i]);
    const char *argv[] = {"rm", "-rf", g_dir, NULL};
    (void)gwt_run(argv, NULL, 10000, NULL, NULL);
    return rc;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        GWT_TEST(test_sentinel_limits_and_failovers),
        GWT_TEST(test_sentinel_none_reachable),
        GWT_TEST(test_sentinel_tls_and_passwords),
        GWT_TEST(test_readonly_replica),
    };
    if (getenv("GWT_FILTER") != NULL)
        cmocka_set_test_filter(getenv("GWT_FILTER"));
    return cmocka_run_group_tests_name("redis_sentinel", tests, group_setup, group_teardown);
}
