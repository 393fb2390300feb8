/*
 * The rate limiter's Cluster store against a fake cluster node (SPEC.md
 * §12; README "Redis Cluster"): a thread of this test that speaks RESP on
 * 127.0.0.1, answers the gateway's setup (SCRIPT LOAD, ROLE, the probe
 * EVAL), serves CLUSTER SLOTS with the map the test chooses, and answers
 * every EVALSHA the way the test chooses (-MOVED to itself, -TRYAGAIN,
 * -CLUSTERDOWN, bytes that are not RESP, an array of two billion elements,
 * or nothing at all). The other half of the slots is a real redis-server
 * (standalone: the script runs there like on a master).
 *
 * - A map naming 140 dead addresses at once (more than the limiter store's
 *   64-node table and the rules sync client's 128), then a map naming a new
 *   live master: the new master must be used by both (the dead addresses
 *   no map names any more are forgotten); before, the limiter's slots of
 *   that master stayed in RATE_LIMIT_FAILURE_MODE until a restart.
 * - Each hostile EVALSHA answer: the request on the fake's slots is
 *   decided by RATE_LIMIT_FAILURE_MODE (closed: 503) within about one
 *   REDIS_TIMEOUT_MS (two with a redirect), the real master's clients keep
 *   being served, and the gateway stays up.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "gw/redis_redirects.h"
#include "gwt_suite.h"

#define TIMEOUT_MS 200 /* REDIS_TIMEOUT_MS */
#define NDEAD      140 /* dead addresses in the wide map (> 64 and > 128) */
#define MAX_CLI    32

enum map_mode { MAP_WIDE, MAP_FINAL, MAP_HUGE, MAP_DISABLED };
enum eval_mode { EV_ERR, EV_MOVED_SELF, EV_TRYAGAIN, EV_CLUSTERDOWN, EV_GARBAGE, EV_HUGE, EV_HANG };

static struct fake {
    int port, lfd;
    int real_port; /* the real redis-server (slots 8192-16383 in MAP_FINAL) */
    int dead_port; /* a port nothing listens on */
    pthread_t th;
    atomic_int map, eval;
    atomic_int nslots; /* CLUSTER SLOTS answered */
    atomic_int nevals; /* EVALSHA (and EVAL but the probe) received */
    atomic_bool stop;
} g_f;

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void put(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

static void puts_fd(int fd, const char *s)
{
    put(fd, s, strlen(s));
}

/* One [lo, hi, [host, port, id]] entry appended to buf at *at. */
static void entry(char *buf, size_t cap, size_t *at, int lo, int hi, const char *host, int port)
{
    *at += (size_t)snprintf(buf + *at, cap - *at,
                            "*3\r\n:%d\r\n:%d\r\n*3\r\n$%zu\r\n%s\r\n:%d\r\n$2\r\nid\r\n", lo, hi,
                            strlen(host), host, port);
}

static void send_map(int fd)
{
    static char buf[65536];
    size_t at = 0;
    if (atomic_load(&g_f.map) == MAP_DISABLED) { /* a standalone Redis given as a seed */
        puts_fd(fd, "-ERR This instance has cluster support disabled\r\n");
        atomic_fetch_add(&g_f.nslots, 1);
        return;
    }
    if (atomic_load(&g_f.map) == MAP_HUGE) {
        puts_fd(fd, "*2000000000\r\n"); /* and nothing more */
        atomic_fetch_add(&g_f.nslots, 1);
        return;
    }
    if (atomic_load(&g_f.map) == MAP_WIDE) {
        /* slots 0-8191 the fake, 8192-16383 in NDEAD ranges, each on its
         * own dead address 127.0.0.<2 + i> */
        at += (size_t)snprintf(buf, sizeof(buf), "*%d\r\n", 1 + NDEAD);
        entry(buf, sizeof(buf), &at, 0, 8191, "127.0.0.1", g_f.port);
        int per = 8192 / NDEAD;
        for (int i = 0; i < NDEAD; i++) {
            char host[32];
            snprintf(host, sizeof(host), "127.0.0.%d", 2 + i);
            int lo = 8192 + i * per, hi = i == NDEAD - 1 ? 16383 : lo + per - 1;
            entry(buf, sizeof(buf), &at, lo, hi, host, g_f.dead_port);
        }
    } else {
        at += (size_t)snprintf(buf, sizeof(buf), "*2\r\n");
        entry(buf, sizeof(buf), &at, 0, 8191, "127.0.0.1", g_f.port);
        entry(buf, sizeof(buf), &at, 8192, 16383, "127.0.0.1", g_f.real_port);
    }
    put(fd, buf, at);
    atomic_fetch_add(&g_f.nslots, 1);
}

static bool arg_is(const redisReply *c, size_t i, const char *s)
{
    return c->elements > i && c->element[i]->type == REDIS_REPLY_STRING &&
           strcasecmp(c->element[i]->str, s) == 0;
}

static void answer(int fd, const redisReply *c)
{
    char line[128];
    if (c->type != REDIS_REPLY_ARRAY || c->elements == 0) {
        puts_fd(fd, "-ERR fake: not a command\r\n");
    } else if (arg_is(c, 0, "PING")) {
        puts_fd(fd, "+PONG\r\n");
    } else if (arg_is(c, 0, "CLUSTER") && arg_is(c, 1, "SLOTS")) {
        send_map(fd);
    } else if (arg_is(c, 0, "SCRIPT")) {
        puts_fd(fd, "$40\r\n0123456789abcdef0123456789abcdef01234567\r\n");
    } else if (arg_is(c, 0, "ROLE")) {
        puts_fd(fd, "*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n");
    } else if (arg_is(c, 0, "TIME")) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        char s[24], u[24];
        snprintf(s, sizeof(s), "%lld", (long long)ts.tv_sec);
        snprintf(u, sizeof(u), "%ld", ts.tv_nsec / 1000);
        snprintf(line, sizeof(line), "*2\r\n$%zu\r\n%s\r\n$%zu\r\n%s\r\n", strlen(s), s, strlen(u),
                 u);
        puts_fd(fd, line);
    } else if (arg_is(c, 0, "EVAL") && c->elements == 6 && arg_is(c, 2, "0")) {
        puts_fd(fd, "*2\r\n:1\r\n:0\r\n"); /* the connect's probe */
    } else if (arg_is(c, 0, "EVALSHA") || arg_is(c, 0, "EVAL")) {
        atomic_fetch_add(&g_f.nevals, 1);
        switch (atomic_load(&g_f.eval)) {
        case EV_MOVED_SELF:
            snprintf(line, sizeof(line), "-MOVED 1 127.0.0.1:%d\r\n", g_f.port);
            puts_fd(fd, line);
            break;
        case EV_TRYAGAIN:
            puts_fd(fd, "-TRYAGAIN Multiple keys request during rehashing of slot\r\n");
            break;
        case EV_CLUSTERDOWN:
            puts_fd(fd, "-CLUSTERDOWN The cluster is down\r\n");
            break;
        case EV_GARBAGE:
            puts_fd(fd, "&&& not RESP\r\n");
            break;
        case EV_HUGE:
            puts_fd(fd, "*2000000000\r\n:1\r\n");
            break;
        case EV_HANG:
            break;
        default:
            puts_fd(fd, "-ERR fake node\r\n");
        }
    } else {
        puts_fd(fd, "-ERR fake node\r\n");
    }
}

static void *fake_main(void *arg)
{
    (void)arg;
    struct pollfd pf[1 + MAX_CLI];
    redisReader *rd[1 + MAX_CLI] = {NULL};
    int n = 1;
    pf[0] = (struct pollfd){.fd = g_f.lfd, .events = POLLIN};
    while (!atomic_load(&g_f.stop)) {
        if (poll(pf, (nfds_t)n, 50) <= 0)
            continue;
        if ((pf[0].revents & POLLIN) && n < 1 + MAX_CLI) {
            int fd = accept(g_f.lfd, NULL, NULL);
            if (fd >= 0) {
                pf[n] = (struct pollfd){.fd = fd, .events = POLLIN};
                rd[n++] = redisReaderCreate();
            }
        }
        for (int i = 1; i < n; i++) {
            if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char buf[16384];
            ssize_t got = read(pf[i].fd, buf, sizeof(buf));
            bool drop = got <= 0 || redisReaderFeed(rd[i], buf, (size_t)got) != REDIS_OK;
            void *cmd = NULL;
            while (!drop && redisReaderGetReply(rd[i], &cmd) == REDIS_OK && cmd != NULL) {
                answer(pf[i].fd, cmd);
                freeReplyObject(cmd);
                cmd = NULL;
            }
            if (drop) {
                close(pf[i].fd);
                redisReaderFree(rd[i]);
                pf[i] = pf[n - 1];
                rd[i] = rd[n - 1];
                n--;
                i--;
            }
        }
    }
    for (int i = 1; i < n; i++) {
        close(pf[i].fd);
        redisReaderFree(rd[i]);
    }
    return NULL;
}

static int fake_start(void)
{
    g_f.lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (g_f.lfd < 0)
        return -1;
    int one = 1;
    setsockopt(g_f.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (bind(g_f.lfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(g_f.lfd, 64) != 0 ||
        getsockname(g_f.lfd, (struct sockaddr *)&a, &len) != 0)
        return -1;
    g_f.port = ntohs(a.sin_port);
    g_f.dead_port = gwt_free_port();
    atomic_store(&g_f.stop, false);
    return pthread_create(&g_f.th, NULL, fake_main, NULL) == 0 ? 0 : -1;
}

static void fake_stop(void)
{
    if (g_f.lfd <= 0)
        return;
    atomic_store(&g_f.stop, true);
    pthread_join(g_f.th, NULL);
    close(g_f.lfd);
    g_f.lfd = 0;
}

/* An API key "<prefix><n>" whose hash tag's slot is below 8192 (the fake)
 * or not (the real redis-server). */
static void key_in_half(bool low, const char *prefix, char out[32])
{
    for (int n = 0; n < 1000; n++) {
        char id[64], hex[65], tag[40];
        snprintf(out, 32, "%s%d", prefix, n);
        snprintf(id, sizeof(id), "header:x-api-key=%s", out);
        gwt_sha256_hex(id, strlen(id), hex);
        snprintf(tag, sizeof(tag), "{%.32s}", hex);
        if ((gw_redis_key_slot(tag, strlen(tag)) < 8192) == low)
            return;
    }
    fail_msg("no key found");
}

static void start_gateway(struct gwt_proc *p, int *port)
{
    static char nodes[64];
    snprintf(nodes, sizeof(nodes), "REDIS_CLUSTER_NODES=127.0.0.1:%d", g_f.port);
    const char *env[] = {nodes,
                         "WORKER_THREADS=1",
                         "REDIS_TIMEOUT_MS=200",
                         "RATE_LIMIT_KEY=header:X-Api-Key",
                         "RATE_LIMIT_REQUESTS=1000000",
                         "RATE_LIMIT_FAILURE_MODE=closed",
                         NULL};
    assert_int_equal(gwt_gateway_for(p, port, gwt_fx.bport, env), 0);
}

/* 80 dead addresses in one map fill the store's node table; a new live
 * master named next must still be used. */
static void test_new_master_after_many_dead_addresses(void **state)
{
    (void)state;
    char hi[32];
    key_in_half(false, "hi", hi);
    atomic_store(&g_f.map, MAP_WIDE);
    atomic_store(&g_f.eval, EV_ERR);
    struct gwt_proc gw = {0};
    int port = 0;
    start_gateway(&gw, &port);
    /* The worker read the wide map (its connect): the key's slot is on a
     * dead address. */
    long long t0 = gwt_now_ms();
    while (atomic_load(&g_f.nslots) < 3 && gwt_now_ms() - t0 < 5000)
        pause_ms(10);
    assert_int_equal(gwt_api_key_get(port, hi), 503);
    atomic_store(&g_f.map, MAP_FINAL);
    t0 = gwt_now_ms();
    int status = 0;
    while ((status = gwt_api_key_get(port, hi)) != 200 && gwt_now_ms() - t0 < 8000)
        pause_ms(50);
    fprintf(stderr, "[ MEASURE  ] new master after %d dead addresses: %d after %lld ms\n", NDEAD,
            status, gwt_now_ms() - t0);
    assert_int_equal(status, 200);
    assert_int_equal(gwt_stop(&gw, SIGTERM, 5000), 0);
    gwt_proc_cleanup(&gw);
}

/* The same for the rules sync's client (src/redis_client.c, 128 nodes;
 * the sync makes a new client after a failure, so its table starts empty
 * again: this passed before too, kept as a guard): the rules key c:rules
 * lives in the upper half; once the map names the real master, PUT /rules
 * must reach it. */
static void test_rules_sync_new_master_after_many_dead_addresses(void **state)
{
    (void)state;
    assert_true(gw_redis_key_slot("c:rules", 7) >= 8192);
    atomic_store(&g_f.map, MAP_WIDE);
    atomic_store(&g_f.eval, EV_ERR);
    static char nodes[64];
    snprintf(nodes, sizeof(nodes), "REDIS_CLUSTER_NODES=127.0.0.1:%d", g_f.port);
    const char *env[] = {nodes,          "WORKER_THREADS=1",        "REDIS_TIMEOUT_MS=200",
                         "ADMIN_PORT=0", "RATE_LIMIT_KEY_PREFIX=c", NULL};
    struct gwt_proc gw = {0};
    int port = 0;
    assert_int_equal(gwt_gateway_for(&gw, &port, gwt_fx.bport, env), 0);
    char line[256];
    assert_int_equal(gwt_wait_log(&gw, "admin listening on 127.0.0.1:", 5000, line, sizeof(line)),
                     0);
    int aport = atoi(strstr(line, "127.0.0.1:") + strlen("127.0.0.1:"));
    assert_true(aport > 0);
    /* the rules sync read the wide map: its rules key is on a dead address */
    assert_int_equal(gwt_wait_log(&gw, "rules sync: cannot read the shared rules", 5000, NULL, 0),
                     0);
    atomic_store(&g_f.map, MAP_FINAL);
    const char *body = "{\"version\":1,\"limits\":[{\"name\":\"api\",\"key\":\"ip\","
                       "\"rates\":[{\"requests\":7,\"window\":\"1m\"}]}]}";
    char raw[512];
    snprintf(raw, sizeof(raw),
             "PUT /rules HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(body), body);
    long long t0 = gwt_now_ms();
    int status = 0;
    while (gwt_now_ms() - t0 < 8000) {
        struct gwt_response r = {0};
        status = gwt_http(aport, raw, &r) == 0 ? r.status : -1;
        gwt_response_free(&r);
        if (status == 200)
            break;
        pause_ms(100);
    }
    fprintf(stderr,
            "[ MEASURE  ] rules sync, new master after %d dead addresses: PUT /rules %d "
            "after %lld ms\n",
            NDEAD, status, gwt_now_ms() - t0);
    assert_int_equal(status, 200);
    redisContext *rc = redisConnect("127.0.0.1", g_f.real_port);
    assert_non_null(rc);
    redisReply *v = redisCommand(rc, "HGET c:rules serial");
    assert_non_null(v);
    assert_int_equal(v->type, REDIS_REPLY_STRING);
    freeReplyObject(v);
    redisFree(rc);
    assert_int_equal(gwt_stop(&gw, SIGTERM, 5000), 0);
    gwt_proc_cleanup(&gw);
}

/* CPU seconds (user + system) the process has used so far. */
static double cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* fields after the command name */
    assert_non_null(p);
    unsigned long long ut = 0, st = 0;
    /* ") S ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime" */
    assert_int_equal(
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st), 2);
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* A seed answering CLUSTER SLOTS with "*2000000000" and nothing more: the
 * limiter's links refused it already; the rules sync's links did not (a
 * 16 GB element table allocated, then seconds of CPU freeing it, every
 * 500 ms): the gateway must start promptly and stay idle. */
static void test_huge_slot_map_reply_costs_nothing(void **state)
{
    (void)state;
    atomic_store(&g_f.map, MAP_HUGE);
    atomic_store(&g_f.eval, EV_ERR);
    struct gwt_proc gw = {0};
    int port = 0;
    long long t0 = gwt_now_ms();
    start_gateway(&gw, &port);
    long long started = gwt_now_ms() - t0;
    /* the rules sync retried at least twice meanwhile (every 500 ms) */
    double c0 = cpu_s(gw.pid);
    long long w0 = gwt_now_ms();
    int before = atomic_load(&g_f.nslots);
    while (gwt_now_ms() - w0 < 2000)
        pause_ms(100);
    double used = cpu_s(gw.pid) - c0;
    fprintf(stderr,
            "[ MEASURE  ] CLUSTER SLOTS *2000000000: listening after %lld ms, then %.2f CPU s in "
            "2 s (%d map reads)\n",
            started, used, atomic_load(&g_f.nslots) - before);
    assert_true(started < 3000);
    assert_true(used < 0.5);
    assert_int_equal(gwt_api_key_get(port, "any"), 503);
    assert_int_equal(gwt_stop(&gw, SIGTERM, 5000), 0);
    gwt_proc_cleanup(&gw);
}

/* A seed that is not a cluster node (a standalone Redis): the limiter's
 * warning says why ("cluster support disabled"); it said "(seed
 * 127.0.0.1:<port>: )", the reason overwritten by the link's (empty) one. */
static void test_standalone_seed_named_in_warning(void **state)
{
    (void)state;
    atomic_store(&g_f.map, MAP_DISABLED);
    struct gwt_proc gw = {0};
    int port = 0;
    start_gateway(&gw, &port);
    char needle[160];
    snprintf(needle, sizeof(needle),
             "rate limit: redis unavailable, reconnecting in background (seed 127.0.0.1:%d: "
             "CLUSTER SLOTS: ERR This instance has cluster support disabled",
             g_f.port);
    if (gwt_wait_log(&gw, needle, 3000, NULL, 0) != 0) {
        gwt_log_dump(&gw, 3000);
        fail_msg("no warning naming the reason");
    }
    assert_int_equal(gwt_api_key_get(port, "any"), 503);
    assert_int_equal(gwt_stop(&gw, SIGTERM, 5000), 0);
    gwt_proc_cleanup(&gw);
}

/* Every hostile EVALSHA answer of the fake: its clients get 503 within
 * about one timeout (two with redirects), the real master's are served. */
static void test_hostile_replies_bounded(void **state)
{
    (void)state;
    char lo[32], hi[32];
    key_in_half(true, "lo", lo);
    key_in_half(false, "hi", hi);
    atomic_store(&g_f.map, MAP_FINAL);
    atomic_store(&g_f.eval, EV_ERR);
    struct gwt_proc gw = {0};
    int port = 0;
    start_gateway(&gw, &port);
    long long t0 = gwt_now_ms();
    while (gwt_api_key_get(port, hi) != 200 && gwt_now_ms() - t0 < 5000)
        pause_ms(20);
    static const struct {
        int mode;
        const char *name;
    } modes[] = {{EV_MOVED_SELF, "MOVED to itself"}, {EV_TRYAGAIN, "TRYAGAIN forever"},
                 {EV_CLUSTERDOWN, "CLUSTERDOWN"},    {EV_GARBAGE, "not RESP"},
                 {EV_HUGE, "2e9-element array"},     {EV_HANG, "no reply"}};
    for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
        for (int k = 0; k < 3; k++) {
            /* until the worker's link to the fake is up again (a call
             * reaches it), then the hostile answer */
            atomic_store(&g_f.eval, EV_ERR);
            t0 = gwt_now_ms();
            for (;;) {
                int before = atomic_load(&g_f.nevals);
                assert_int_equal(gwt_api_key_get(port, lo), 503);
                if (atomic_load(&g_f.nevals) > before)
                    break;
                assert_true(gwt_now_ms() - t0 < 5000);
                pause_ms(20);
            }
            atomic_store(&g_f.eval, modes[m].mode);
            long long a = gwt_now_ms();
            int s = gwt_api_key_get(port, lo);
            long long took = gwt_now_ms() - a;
            fprintf(stderr, "[ MEASURE  ] %s: %d after %lld ms\n", modes[m].name, s, took);
            assert_int_equal(s, 503);
            assert_true(took < 2 * TIMEOUT_MS + 150);
            /* the other master's client: served (it may wait behind one
             * reconnect of the fake, never fail) */
            t0 = gwt_now_ms();
            while ((s = gwt_api_key_get(port, hi)) != 200 && gwt_now_ms() - t0 < 3000)
                pause_ms(20);
            assert_int_equal(s, 200);
        }
    }
    assert_true(gwt_proc_alive(&gw));
    assert_int_equal(gwt_stop(&gw, SIGTERM, 5000), 0);
    gwt_proc_cleanup(&gw);
}

static int group_setup(void **state)
{
    (void)state;
    if (gwt_suite_setup(GWT_FX_REDIS) != 0)
        return -1;
    g_f.real_port = gwt_fx.rport;
    return fake_start();
}

static int group_teardown(void **state)
{
    fake_stop();
    return gwt_suite_teardown(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        GWT_TEST(test_new_master_after_many_dead_addresses),
        GWT_TEST(test_rules_sync_new_master_after_many_dead_addresses),
        GWT_TEST(test_huge_slot_map_reply_costs_nothing),
        GWT_TEST(test_standalone_seed_named_in_warning),
        GWT_TEST(test_hostile_replies_bounded),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
