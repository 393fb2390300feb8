/*
 * Tests of the rate limiter (src/ratelimit.c) against a real redis-server
 * this file starts on a free 127.0.0.1 port: exact limits and headers, key
 * naming and TTL, NOSCRIPT recovery, the over-limit cache, shared budgets,
 * the three failure modes with a SIGKILLed server and the reconnect
 * backoff, AUTH + SELECT and unix sockets. Also the URL parser, the store
 * key and the memory-only limiter.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "gw/ratelimit.h"
#include "gw/rl_algo.h"
#include "ratelimit_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WAIT_READY_MS 5000
#define LONG_WINDOW   3600 /* tests that must not cross a window edge */

/* ---- process helpers (local on purpose: no dependency on test/support) ---- */

struct redis_proc {
    pid_t pid;      /* 0 when not running */
    int port;       /* TCP port, 0 for unix-only */
    char sock[128]; /* unix socket path, "" for TCP */
    char pass[64];  /* requirepass, "" for none */
};

static pid_t g_live[16];         /* servers started and not yet stopped */
static char g_dir[64];           /* scratch dir: redis --dir and sockets */
static struct redis_proc g_main; /* the server most tests share */
static int g_seq;                /* makes every test's key prefix unique */

static void pause_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A port the kernel considers free right now: bind :0, read it, close. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static redisContext *connect_to(const struct redis_proc *p)
{
    struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
    redisContext *c = p->sock[0] ? redisConnectUnixWithTimeout(p->sock, tv)
                                 : redisConnectWithTimeout("127.0.0.1", p->port, tv);
    if (c != NULL && c->err) {
        redisFree(c);
        return NULL;
    }
    if (c != NULL)
        redisSetTimeout(c, (struct timeval){.tv_sec = 2, .tv_usec = 0});
    return c;
}

/* Starts redis-server and waits (bounded) until it answers PING. */
static void redis_start(struct redis_proc *p)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", p->port);
    const char *argv[24];
    int n = 0;
    argv[n++] = "redis-server";
    argv[n++] = "--port";
    argv[n++] = port;
    argv[n++] = "--bind";
    argv[n++] = "127.0.0.1";
    argv[n++] = "--save";
    argv[n++] = "";
    argv[n++] = "--appendonly";
    argv[n++] = "no";
    argv[n++] = "--dir";
    argv[n++] = g_dir;
    if (p->sock[0]) {
        argv[n++] = "--unixsocket";
        argv[n++] = p->sock;
        argv[n++] = "--unixsocketperm";
        argv[n++] = "700";
    }
    if (p->pass[0]) {
        argv[n++] = "--requirepass";
        argv[n++] = p->pass;
    }
    argv[n] = NULL;

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
        }
        close_range(3, ~0U, 0);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    p->pid = pid;
    for (size_t i = 0; i < GW_ARRAY_LEN(g_live); i++)
        if (g_live[i] == 0) {
            g_live[i] = pid; /* a failing test skips its redis_stop: teardown stops it */
            break;
        }

    uint64_t deadline = gw_now_ms() + WAIT_READY_MS;
    for (;;) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            for (size_t i = 0; i < GW_ARRAY_LEN(g_live); i++)
                if (g_live[i] == pid)
                    g_live[i] = 0;
            p->pid = 0;
            fail_msg("redis-server exited early (status %d)", status);
        }
        redisContext *c = connect_to(p);
        if (c != NULL) {
            redisReply *r = redisCommand(c, "PING"); /* NOAUTH also proves it serves */
            bool up = r != NULL;
            freeReplyObject(r);
            redisFree(c);
            if (up)
                return;
        }
        if (gw_now_ms() > deadline)
            fail_msg("redis-server not ready after %d ms", WAIT_READY_MS);
        pause_ms(10);
    }
}

static void redis_wait_exit(struct redis_proc *p, int sig)
{
    if (p->pid <= 0)
        return;
    for (size_t i = 0; i < GW_ARRAY_LEN(g_live); i++)
        if (g_live[i] == p->pid)
            g_live[i] = 0;
    kill(p->pid, sig);
    uint64_t deadline = gw_now_ms() + 5000;
    while (waitpid(p->pid, NULL, WNOHANG) == 0) {
        if (gw_now_ms() > deadline) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, NULL, 0);
            break;
        }
        pause_ms(5);
    }
    p->pid = 0;
}

static void redis_stop(struct redis_proc *p)
{
    redis_wait_exit(p, SIGTERM);
}

/* Admin connection for assertions, authenticated and on db when asked. */
static redisContext *admin(const struct redis_proc *p, int db)
{
    redisContext *c = connect_to(p);
    assert_non_null(c);
    redisReply *r;
    if (p->pass[0]) {
        r = redisCommand(c, "AUTH %s", p->pass);
        assert_non_null(r);
        assert_int_equal(r->type, REDIS_REPLY_STATUS);
        freeReplyObject(r);
    }
    r = redisCommand(c, "SELECT %d", db);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
    return c;
}

static long long cmd_integer(redisContext *c, const char *fmt, const char *arg)
{
    redisReply *r = redisCommand(c, fmt, arg);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

/* calls= of one command in INFO commandstats (0 when never called). */
static long long cmd_calls(redisContext *c, const char *cmd)
{
    redisReply *r = redisCommand(c, "INFO commandstats");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    char needle[64];
    snprintf(needle, sizeof(needle), "cmdstat_%s:calls=", cmd);
    const char *p = strstr(r->str, needle);
    long long v = p ? strtoll(p + strlen(needle), NULL, 10) : 0;
    freeReplyObject(r);
    return v;
}

/* The only key under prefix, copied to out; fails unless exactly one. */
static void only_key(redisContext *c, const char *prefix, char *out, size_t cap)
{
    redisReply *r = redisCommand(c, "KEYS %s:*", prefix);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 1);
    snprintf(out, cap, "%s", r->element[0]->str);
    freeReplyObject(r);
}

/* ---- limiter helpers --------------------------------------------------------- */

struct setup {
    struct gw_config cfg;
    char prefix[48];
    char url[256];
};

static void make_cfg(struct setup *s, const char *url, int limit, int window_s,
                     enum gw_rl_failure_mode mode)
{
    memset(s, 0, sizeof(*s));
    snprintf(s->prefix, sizeof(s->prefix), "gwt%d_%d", (int)getpid(), ++g_seq);
    if (url != NULL)
        snprintf(s->url, sizeof(s->url), "%s", url);
    s->cfg.redis_url = url != NULL ? s->url : NULL;
    s->cfg.redis_timeout_ms = 200;
    s->cfg.rate_limit_requests = limit;
    s->cfg.rate_limit_window_s = window_s;
    s->cfg.rate_limit_algorithm = GW_RL_FIXED_WINDOW;
    s->cfg.rate_limit_key_prefix = s->prefix;
    s->cfg.rate_limit_failure_mode = mode;
    s->cfg.rate_limit_headers = true;
    s->cfg.worker_threads = 1;
}

static const char *main_url(char *buf, size_t cap)
{
    snprintf(buf, cap, "redis://127.0.0.1:%d", g_main.port);
    return buf;
}

/* Waits (bounded by the window) until at least margin_s seconds remain in
 * the current window, so a short test cannot straddle an edge. */
static void avoid_edge(int64_t window_s, int64_t margin_s)
{
    uint64_t deadline = gw_now_ms() + (uint64_t)(margin_s + 2) * 1000;
    while (gw_rl_algo_reset_after(gw_wall_s(), window_s) <= margin_s) {
        assert_true(gw_now_ms() < deadline);
        pause_ms(10);
    }
}

/* Creates a limiter from cfg and one worker of it (both must succeed). */
static void lim_create(const struct gw_config *cfg, struct gw_ratelimit **rl,
                       struct gw_ratelimit_worker **w)
{
    assert_int_equal(gw_ratelimit_create(rl, cfg), 0);
    assert_int_equal(gw_ratelimit_worker_create(w, *rl), 0);
}

/* Builds the configuration of a limiter on url into s, waits (when
 * edge_margin_s > 0) until that many seconds remain in the window, then
 * creates the limiter and one worker of it. */
static void lim_open(struct setup *s, const char *url, int limit, int window_s,
                     enum gw_rl_failure_mode mode, int64_t edge_margin_s, struct gw_ratelimit **rl,
                     struct gw_ratelimit_worker **w)
{
    make_cfg(s, url, limit, window_s, mode);
    if (edge_margin_s > 0)
        avoid_edge(window_s, edge_margin_s);
    lim_create(&s->cfg, rl, w);
}

/* lim_open on g_main. */
static void lim_main(struct setup *s, int limit, int window_s, enum gw_rl_failure_mode mode,
                     int64_t edge_margin_s, struct gw_ratelimit **rl,
                     struct gw_ratelimit_worker **w)
{
    char url[64];
    lim_open(s, main_url(url, sizeof(url)), limit, window_s, mode, edge_margin_s, rl, w);
}

static void lim_destroy(struct gw_ratelimit *rl, struct gw_ratelimit_worker *w)
{
    gw_ratelimit_worker_destroy(w);
    gw_ratelimit_destroy(rl);
}

static void check(struct gw_ratelimit_worker *w, const char *key, struct gw_rl_decision *d)
{
    gw_ratelimit_check(w, key, strlen(key), d);
}

/* Asserts the decision of request n (1-based) for a limit, from the store. */
static void expect_counted(const struct gw_rl_decision *d, int64_t n, int64_t limit,
                           int64_t window_s)
{
    assert_true(d->has_info);
    assert_false(d->store_error);
    assert_int_equal(d->info.limit, limit);
    assert_int_equal(d->info.window_s, window_s);
    assert_int_equal(d->info.remaining, n >= limit ? 0 : limit - n);
    assert_int_equal(d->info.reset_epoch_s % window_s, 0);
    assert_in_range(d->info.reset_after_s, 1, window_s);
    /* reset is reported against Redis's clock, which is this host's */
    int64_t now = gw_wall_s();
    assert_in_range(d->info.reset_epoch_s - d->info.reset_after_s, now - 2, now + 1);
    if (n <= limit) {
        assert_int_equal(d->verdict, GW_RL_ALLOW);
        assert_false(d->over_limit);
    } else {
        assert_int_equal(d->verdict, GW_RL_LIMITED);
        assert_true(d->over_limit);
    }
}

/* Sends checks n = from..to of client key through w, each counted by the
 * store against limit/window_s (expect_counted); d holds the last. */
static void count_through(struct gw_ratelimit_worker *w, const char *key, int from, int to,
                          int64_t limit, int64_t window_s, struct gw_rl_decision *d)
{
    for (int n = from; n <= to; n++) {
        check(w, key, d);
        expect_counted(d, n, limit, window_s);
    }
}

/* ---- group fixture ------------------------------------------------------------ */

static int group_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN); /* as the gateway does: hiredis writes to dead sockets */
    snprintf(g_dir, sizeof(g_dir), "/tmp/gw-rl-test-XXXXXX");
    if (mkdtemp(g_dir) == NULL)
        return -1;
    g_main.port = free_port();
    redis_start(&g_main);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    redis_stop(&g_main);
    for (size_t i = 0; i < GW_ARRAY_LEN(g_live); i++) {
        struct redis_proc left = {.pid = g_live[i]};
        if (left.pid > 0)
            kill(left.pid, SIGCONT); /* in case the test stopped it */
        redis_stop(&left);           /* started by a test that failed before stopping it */
    }
    rmdir(g_dir);
    return 0;
}

/* ---- pure helpers ---------------------------------------------------------------- */

/* REDIS_URL goes through the configuration's parser only: what
 * gw_config_parse_redis_url refuses, the limiter refuses too (its forms are
 * tested in test_config.c). */
static void test_limiter_uses_config_url_parser(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "localhost:6379",  "rediss://localhost:0", "redis://secret@host", /* legacy userinfo */
        "redis://host:0",  "redis://:@host",       "unix://relative.sock",
        "redis://host/db", "redis://h?x=1",
    };
    for (size_t i = 0; i < GW_ARRAY_LEN(bad); i++) {
        struct setup s;
        make_cfg(&s, bad[i], 1, 60, GW_RL_FAIL_OPEN);
        struct gw_redis_target t;
        assert_int_equal(gw_config_parse_redis_url(bad[i], &t, NULL, 0), -EINVAL);
        gw_config_redis_target_deinit(&t);
        struct gw_ratelimit *rl = NULL;
        int rc = gw_ratelimit_create(&rl, &s.cfg);
        if (rc != -EINVAL)
            fail_msg("\"%s\": gw_ratelimit_create gave %d, want -EINVAL", bad[i], rc);
    }
    /* A good URL whose server is absent: created, starts disconnected. */
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/3", free_port());
    struct setup s;
    struct gw_ratelimit *rl;
    struct gw_ratelimit_worker *w;
    lim_open(&s, url, 1, 60, GW_RL_FAIL_OPEN, 0, &rl, &w);
    assert_false(gw_ratelimit_worker_redis_up(w));
    lim_destroy(rl, w);
}

static void test_store_key_hides_client_bytes(void **state)
{
    (void)state;
    char out[128];
    uint64_t h1 = 0, h2 = 0;
    const char raw[] = "evil\r\nKEY\0 *x";
    int n = gw_rl_store_key("rl", raw, sizeof(raw) - 1, out, sizeof(out), &h1);
    assert_int_equal(n, 2 + 2 + GW_RL_KEY_HASH_HEX + 1);
    assert_int_equal(strlen(out), (size_t)n);
    assert_memory_equal(out, "rl:{", 4);
    assert_int_equal(out[n - 1], '}');
    for (int i = 4; i < n - 1; i++)
        assert_non_null(strchr("0123456789abcdef", out[i]));
    /* SHA-256("abc") starts ba7816bf8f01cfea 414140de5dae2223 */
    assert_int_equal(gw_rl_store_key("p", "abc", 3, out, sizeof(out), &h2), 36);
    assert_string_equal(out, "p:{ba7816bf8f01cfea414140de5dae2223}");
    assert_true(h2 == 0xba7816bf8f01cfeaULL);
    assert_true(h1 != h2);
    assert_int_equal(gw_rl_store_key("p", "abc", 3, out, 36, NULL), -ENOSPC);
}

static void test_memory_only_limiter(void **state)
{
    (void)state;
    struct setup s;
    make_cfg(&s, NULL, 3, LONG_WINDOW, GW_RL_FAIL_OPEN);
    avoid_edge(LONG_WINDOW, 3);
    struct gw_ratelimit *rl;
    struct gw_ratelimit_worker *w;
    lim_create(&s.cfg, &rl, &w);
    assert_int_equal(gw_ratelimit_worker_ping(w), GW_RL_STORE_DISABLED);
    assert_false(gw_ratelimit_worker_redis_up(w));
    assert_int_equal(gw_ratelimit_worker_tick(w, gw_now_ms()), 1000);
    struct gw_rl_decision d;
    count_through(w, "198.51.100.7", 1, 5, 3, LONG_WINDOW, &d);
    check(w, "198.51.100.8", &d); /* another client has its own budget */
    expect_counted(&d, 1, 3, LONG_WINDOW);
    lim_destroy(rl, w);
}

/* The fixed-window state key of client under prefix for the "default"
 * limit of window_s seconds in window index idx (SPEC.md §10). */
static void fw_key(char *out, size_t cap, const char *prefix, const char *client, int64_t window_s,
                   long long idx)
{
    char base[96];
    assert_true(gw_rl_store_key(prefix, client, strlen(client), base, sizeof(base), NULL) > 0);
    snprintf(out, cap, "%.96s:default:default:fw:%lld:%lld", base, (long long)window_s * 1000, idx);
}

/* ---- against Redis ------------------------------------------------------------------ */

static void test_exact_limit_key_and_ttl(void **state)
{
    (void)state;
    struct setup s;
    struct gw_ratelimit *rl;
    struct gw_ratelimit_worker *w;
    lim_main(&s, 5, LONG_WINDOW, GW_RL_FAIL_OPEN, 3, &rl, &w);
    assert_true(gw_ratelimit_worker_redis_up(w));
    assert_int_equal(gw_ratelimit_worker_ping(w), GW_RL_STORE_CONNECTED);

    struct gw_rl_decision d;
    int64_t reset = 0;
    for (int n = 1; n <= 6; n++) {
        check(w, "203.0.113.9", &d);
        expect_counted(&d, n, 5, LONG_WINDOW);
        if (n > 1)
            assert_int_equal(d.info.reset_epoch_s, reset);
        reset = d.info.reset_epoch_s;
    }

    /* Key name: <prefix>:{<hash>}:<limit>:<policy>:fw:<W ms>:<window
     * index> (SPEC.md §10), no client bytes. */
    char want[256], got[256], base[128];
    assert_true(gw_rl_store_key(s.prefix, "203.0.113.9", 11, base, sizeof(base), NULL) > 0);
    snprintf(want, sizeof(want), "%s:default:default:fw:%d:%lld", base, LONG_WINDOW * 1000,
             (long long)(reset / LONG_WINDOW - 1));
    redisContext *c = admin(&g_main, 0);
    only_key(c, s.prefix, got, sizeof(got));
    assert_string_equal(got, want);
    assert_null(strstr(got, "203.0.113.9"));
    long long pttl = cmd_integer(c, "PTTL %s", got);
    assert_in_range(pttl, 1, LONG_WINDOW * 1000);
    /* TTL ends at the window end (Redis clock = this host's clock) */
    long long end_ms = (long long)reset * 1000;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long now_ms = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    assert_in_range(now_ms + pttl, end_ms - 1000, end_ms + 1000);
    redisReply *r = redisCommand(c, "GET %s", got);
    assert_non_null(r);
    assert_string_equal(r->str, "5"); /* the sixth, refused, request changed nothing */
    freeReplyObject(r);
    redisFree(c);

    lim_destroy(rl, w);
}

static void test_short_window_ttl_and_rollover(void **state)
{
    (void)state;
    struct setup s;
    const int W = 2;
    struct gw_ratelimit *rl;
    struct gw_ratelimit_worker *w;
    lim_main(&s, 1, W, GW_RL_FAIL_OPEN, 0, &rl, &w);

    /* Up to three tries in case a window edge falls between the checks. */
    struct gw_rl_decision d1, d2;
    char key[32];
    for (int attempt = 0; attempt < 3; attempt++) {
        snprintf(key, sizeof(key), "short-%d", attempt);
        check(w, key, &d1);
        check(w, key, &d2);
        if (d1.info.reset_epoch_s == d2.info.reset_epoch_s)
            break;
    }
    expect_counted(&d1, 1, 1, W);
    expect_counted(&d2, 2, 1, W);
    assert_int_equal(d1.info.reset_epoch_s, d2.info.reset_epoch_s);

    redisContext *c = admin(&g_main, 0);
    redisReply *keys = redisCommand(c, "KEYS %s:*", s.prefix);
    assert_non_null(keys);
    assert_true(keys->elements >= 1);
    for (size_t i = 0; i < keys->elements; i++) {
        long long pttl = cmd_integer(c, "PTTL %s", keys->element[i]->str);
        if (pttl != -2 && pttl != 0) /* an earlier attempt's key may be expiring now */
            assert_in_range(pttl, 1, W * 1000);
    }
    freeReplyObject(keys);
    redisFree(c);

    /* The over-limit cache forgets the client when its window ends: poll
     * (bounded) until a check is allowed again, in a later window. */
    uint64_t deadline = gw_now_ms() + (W + 2) * 1000;
    struct gw_rl_decision d;
    for (;;) {
        check(w, key, &d);
        if (d.verdict == GW_RL_ALLOW)
            break;
        assert_int_equal(d.info.reset_epoch_s, d2.info.reset_epoch_s);
        assert_true(gw_now_ms() < deadline);
        pause_ms(5);
    }
    assert_true(d.info.reset_epoch_s > d2.info.reset_epoch_s);
    assert_int_equal(d.info.remaining, 0);
    assert_false(d.over_limit);

    lim_destroy(rl, w);
}

static void test_over_limit_cache_skips_redis(void **state)
{
    (void)state;
    struct setup s;
    struct gw_ratelimit *rl;
    struct gw_ratelimit_worker *w;
    lim_main(&s, 2, LONG_WINDOW, GW_RL_FAIL_OPEN, 3, &rl, &w);
    struct gw_rl_decision d;
    count_through(w, "cached-client", 1, 3, 2, LONG_WINDOW, &d);
    int64_t reset = d.info.reset_epoch_s;

    redisContext *c = admin(&g_main, 0);
    long long evalsha = cmd_calls(c, "evalsha"), eval = cmd_calls(c, "eval");
    for (int i = 0; i < 20; i++) {
        check(w, "cached-client", &d);
        assert_int_equal(d.verdict, GW_RL_LIMITED);
        assert_true(d.over_limit);
        assert_false(d.store_error);
        assert_true(d.has_info);
        assert_int_equal(d.info.remaining, 0);
        assert_int_equal(d.info.limit, 2);
        assert_int_equal(d.info.reset_epoch_s, reset);
        assert_in_range(d.info.reset_after_s, 1, LONG_WINDOW);
        int64_t now = gw_wall_s();
        assert_in_range(d.info.reset_epoch_s - d.info.reset_after_s, now - 2, now + 1);
    }
    assert_int_equal(cmd_calls(c, "evalsha"), evalsha);
    assert_int_equal(cmd_calls(c, "eval"), eval);

    /* Another worker of the process, which never saw the client, refuses
     * it from the shared cache too, with the same window end. */
    struct gw_ratelimit_worker *w2;
    assert_int_equal(gw_ratelimit_worker_create(&w2, rl), 0);
    for (int i = 0; i < 3; i++) {
        check(w2, "cached-client", &d);
        assert_int_equal(d.verdict, GW_RL_LIMITED);
        assert_int_equal(d.info.reset_epoch_s, reset);
    }
    gw_ratelimit_worker_destroy(w2);
    assert_int_equal(cmd_calls(c, "evalsha"), evalsha);
    /* w2's connection ran the script once, key-less, as its handshake's
     * proof that script calls are served; the cached refusals asked nothing. */
    assert_int_equal(cmd_calls(c, "eval"), ++eval);

    /* other clients still go to Redis */
    check(w, "other-client", &d);
    expect_counted(&d, 1, 2, LONG_WINDOW);
    assert_int_equal(cmd_calls(c, "evalsha"), evalsha + 1);
    redisFree(c);
    lim_destroy(rl, w);
}

/* A count beyond any real traffic (a key someone set by hand, or a broken
 * store) is a store error: the request is let through in open mode and
 * requests are never numbered near INT64_MAX, where numbering them would
 * overflow (a fake Redis answering INT64_MAX made UBSan trap). */
static void test_absurd_count_is_store_error(void **state)
{
    (void)state;
    struct setup s;
    struct gw_ratelimit *rl;
    struct gw_ratelimit_worker *w;
    lim_main(&s, 5, LONG_WINDOW, GW_RL_FAIL_OPEN, 3, &rl, &w);
    struct gw_rl_decision d;
    check(w, "198.51.100.7", &d);
    expect_counted(&d, 1, 5, LONG_WINDOW);
    char key[256];
    fw_key(key, sizeof(key), s.prefix, "198.51.100.7", LONG_WINDOW,
           (long long)(d.info.reset_epoch_s / LONG_WINDOW - 1));
    redisContext *c = admin(&g_main, 0);
    /* 2^62 + 1023: the script's Lua numbers are doubles, so the sum must be
     * exact in one (2^62 + 1024) to reach the gateway unchanged. */
    redisReply *r = redisCommand(c, "SET %s 4611686018427388927 KEEPTTL", key);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
    redisFree(c);
    check(w, "198.51.100.7", &d);
    assert_true(d.store_error);
    assert_int_equal(d.verdict, GW_RL_ALLOW);
    lim_destroy(rl, w);
}

static void test_noscript_after_script_flush(void **state)
{
    (void)state;
    struct setup s;
    struct gw_ratelimit *rl;
    struct gw_ratelimit_worker *w;
    lim_main(&s, 10, LONG_WINDOW, GW_RL_FAIL_CLOSED, 3, &rl, &w);
    struct gw_rl_decision d;
    check(w, "flushed", &d);
    expect_counted(&d, 1, 10, LONG_WINDOW);

    redisContext *c = admin(&g_main, 0);
    redisReply *r = redisCommand(c, "SCRIPT FLUSH");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
    long long eval = cmd_calls(c, "eval"), evalsha = cmd_calls(c, "evalsha");

    check(w, "flushed", &d); /* NOSCRIPT, then EVAL: counted exactly once */
    expect_counted(&d, 2, 10, LONG_WINDOW);
    assert_true(gw_ratelimit_worker_redis_up(w));
    assert_int_equal(cmd_calls(c, "eval"), eval + 1);
    assert_int_equal(cmd_calls(c, "evalsha"), evalsha + 1);

    check(w, "flushed", &d); /* EVAL re-cached the script: EVALSHA works again */
    expect_counted(&d, 3, 10, LONG_WINDOW);
    assert_int_equal(cmd_calls(c, "eval"), eval + 1);
    assert_int_equal(cmd_calls(c, "evalsha"), evalsha + 2);
    redisFree(c);
    lim_destroy(rl, w);
}

static void test_two_workers_share_budget(void **state)
{
    (void)state;
    char url[64];
    struct setup s;
    make_cfg(&s, main_url(url, sizeof(url)), 7, LONG_WINDOW, GW_RL_FAIL_OPEN);
    avoid_edge(LONG_WINDOW, 3);
    struct gw_ratelimit *rl;
    struct gw_ratelimit_worker *w1, *w2;
    lim_create(&s.cfg, &rl, &w1);
    assert_int_equal(gw_ratelimit_worker_create(&w2, rl), 0);
    int allowed = 0;
    struct gw_rl_decision d;
    for (int i = 0; i < 20; i++) {
        check(i % 2 ? w2 : w1, "shared-client", &d);
        assert_false(d.store_error);
        assert_true(d.has_info);
        if (d.verdict == GW_RL_ALLOW) {
            allowed++;
            assert_int_equal(d.info.remaining, 7 - allowed);
        } else {
            assert_int_equal(d.verdict, GW_RL_LIMITED);
            assert_int_equal(d.info.remaining, 0);
        }
    }
    assert_int_equal(allowed, 7);
    gw_ratelimit_worker_destroy(w1);
    gw_ratelimit_worker_destroy(w2);
    gw_ratelimit_destroy(rl);
}

static void test_dry_run(void **state)
{
    (void)state;
    char url[64];
    struct setup s;
    make_cfg(&s, main_url(url, sizeof(url)), 2, LONG_WINDOW, GW_RL_FAIL_OPEN);
    s.cfg.rate_limit_dry_run = true;
    avoid_edge(LONG_WINDOW, 3);
    struct gw_ratelimit *rl;
    struct gw_ratelimit_worker *w;
    lim_create(&s.cfg, &rl, &w);
    struct gw_rl_decision d;
    for (int n = 1; n <= 5; n++) { /* 3 from Redis, then 4 and 5 from the cache */
        check(w, "dry", &d);
        assert_int_equal(d.verdict, GW_RL_ALLOW);
        assert_true(d.has_info);
        assert_int_equal(d.over_limit, n > 2);
        assert_int_equal(d.info.remaining, n >= 2 ? 0 : 2 - n);
    }
    lim_destroy(rl, w);
}

/* One limiter + worker per failure mode, all on g_main. */
struct mode_rig {
    struct setup s;
    struct gw_ratelimit *rl;
    struct gw_ratelimit_worker *w;
};

static void rig_open(struct mode_rig *m, enum gw_rl_failure_mode mode, int limit)
{
    lim_main(&m->s, limit, LONG_WINDOW, mode, 0, &m->rl, &m->w);
    assert_true(gw_ratelimit_worker_redis_up(m->w));
}

static void rig_close(struct mode_rig *m)
{
    lim_destroy(m->rl, m->w);
}

static void test_redis_killed_and_restarted(void **state)
{
    (void)state;
    struct mode_rig open, closed, local;
    rig_open(&open, GW_RL_FAIL_OPEN, 3);
    rig_open(&closed, GW_RL_FAIL_CLOSED, 3);
    rig_open(&local, GW_RL_FAIL_LOCAL, 3);
    avoid_edge(LONG_WINDOW, 5);
    struct gw_rl_decision d;
    check(open.w, "before", &d);
    expect_counted(&d, 1, 3, LONG_WINDOW);

    redis_wait_exit(&g_main, SIGKILL);

    /* open: let through, flag the error, report nothing */
    check(open.w, "c1", &d);
    assert_int_equal(d.verdict, GW_RL_ALLOW);
    assert_true(d.store_error);
    assert_false(d.has_info);
    assert_false(d.over_limit);
    assert_false(gw_ratelimit_worker_redis_up(open.w));
    assert_int_equal(gw_ratelimit_worker_ping(open.w), GW_RL_STORE_DISCONNECTED);

    /* closed: 503 */
    check(closed.w, "c1", &d);
    assert_int_equal(d.verdict, GW_RL_UNAVAILABLE);
    assert_true(d.store_error);
    assert_false(d.has_info);

    /* local: the in-process store enforces the same limit */
    for (int n = 1; n <= 5; n++) {
        check(local.w, "c1", &d);
        /* the 5th is answered by the over-limit cache: no store was asked */
        assert_int_equal(d.store_error, n <= 4);
        assert_true(d.has_info);
        assert_int_equal(d.info.limit, 3);
        assert_int_equal(d.info.remaining, n >= 3 ? 0 : 3 - n);
        assert_int_equal(d.verdict, n <= 3 ? GW_RL_ALLOW : GW_RL_LIMITED);
        assert_int_equal(d.info.reset_epoch_s % LONG_WINDOW, 0);
    }

    /* marked down: no waiting for a timeout on later checks */
    uint64_t t0 = gw_now_us();
    for (int i = 0; i < 50; i++) {
        char key[16];
        snprintf(key, sizeof(key), "fast-%d", i);
        check(open.w, key, &d);
        assert_int_equal(d.verdict, GW_RL_ALLOW);
        assert_true(d.store_error);
    }
    uint64_t took_us = gw_now_us() - t0;
    assert_true(took_us < 50000);

    /* Backoff: nothing before 100 ms, then 200, 400, ... capped at 2 s
     * while the server stays down (refused connects fail at once). */
    uint64_t now = gw_now_ms();
    uint64_t delay = gw_ratelimit_worker_tick(open.w, now);
    assert_in_range(delay, 1, 100);
    assert_false(gw_ratelimit_worker_redis_up(open.w));
    static const uint64_t want[] = {200, 400, 800, 1600, 2000, 2000};
    for (size_t i = 0; i < GW_ARRAY_LEN(want); i++) {
        now += delay;
        delay = gw_ratelimit_worker_tick(open.w, now);
        assert_int_equal(delay, want[i]);
        assert_false(gw_ratelimit_worker_redis_up(open.w));
        /* just before the next attempt is due: no attempt, exact wait left */
        assert_int_equal(gw_ratelimit_worker_tick(open.w, now + delay - 1), 1);
    }

    /* Same port again: past the backoff each worker reconnects, without
     * blocking: a tick starts the attempt, later ticks (5 ms apart) finish it. */
    redis_start(&g_main);
    now += delay;
    struct mode_rig *rigs[] = {&open, &closed, &local};
    for (size_t r = 0; r < GW_ARRAY_LEN(rigs); r++) {
        uint64_t t = r == 0 ? now : gw_now_ms() + 2100;
        uint64_t dl = gw_ratelimit_worker_tick(rigs[r]->w, t);
        for (int i = 0; i < 400 && dl != 1000; i++) {
            assert_int_equal(dl, 5);
            assert_false(gw_ratelimit_worker_redis_up(rigs[r]->w));
            pause_ms(1);
            t = gw_now_ms() + 2100;
            dl = gw_ratelimit_worker_tick(rigs[r]->w, t);
        }
        assert_int_equal(dl, 1000);
    }
    for (size_t r = 0; r < GW_ARRAY_LEN(rigs); r++) {
        assert_true(gw_ratelimit_worker_redis_up(rigs[r]->w));
        assert_int_equal(gw_ratelimit_worker_ping(rigs[r]->w), GW_RL_STORE_CONNECTED);
        count_through(rigs[r]->w, "after-restart", 1, 4, 3, LONG_WINDOW, &d);
        redisContext *c = admin(&g_main, 0);
        char key[160];
        only_key(c, rigs[r]->s.prefix, key, sizeof(key)); /* counted in Redis, not locally */
        redisFree(c);
    }
    rig_close(&open);
    rig_close(&closed);
    rig_close(&local);
}

static void test_password_and_db(void **state)
{
    (void)state;
    struct redis_proc p = {.port = free_port()};
    snprintf(p.pass, sizeof(p.pass), "p@ss/w:rd");
    redis_start(&p);

    char url[128];
    snprintf(url, sizeof(url), "redis://:p%%40ss%%2Fw%%3Ard@127.0.0.1:%d/5", p.port);
    struct setup s;
    struct gw_ratelimit *rl;
    struct gw_ratelimit_worker *w;
    lim_open(&s, url, 2, LONG_WINDOW, GW_RL_FAIL_OPEN, 3, &rl, &w);
    assert_true(gw_ratelimit_worker_redis_up(w));
    struct gw_rl_decision d;
    count_through(w, "authed", 1, 3, 2, LONG_WINDOW, &d);
    redisContext *c5 = admin(&p, 5), *c0 = admin(&p, 0);
    char key[160];
    only_key(c5, s.prefix, key, sizeof(key));
    assert_int_equal(cmd_integer(c0, "EXISTS %s", key), 0); /* not in db 0 */
    redisFree(c5);
    redisFree(c0);
    lim_destroy(rl, w);

    /* A wrong password is a store failure, not a crash or a hang. */
    snprintf(url, sizeof(url), "redis://:wrong@127.0.0.1:%d/5", p.port);
    lim_open(&s, url, 2, LONG_WINDOW, GW_RL_FAIL_OPEN, 0, &rl, &w);
    assert_false(gw_ratelimit_worker_redis_up(w));
    assert_int_equal(gw_ratelimit_worker_ping(w), GW_RL_STORE_DISCONNECTED);
    check(w, "authed", &d);
    assert_int_equal(d.verdict, GW_RL_ALLOW);
    assert_true(d.store_error);
    lim_destroy(rl, w);
    redis_stop(&p);
}

static void test_unix_socket(void **state)
{
    (void)state;
    struct redis_proc p = {.port = 0};
    snprintf(p.sock, sizeof(p.sock), "%s/redis.sock", g_dir);
    redis_start(&p);

    char url[160];
    snprintf(url, sizeof(url), "unix://%s", p.sock);
    struct setup s;
    struct gw_ratelimit *rl;
    struct gw_ratelimit_worker *w;
    lim_open(&s, url, 3, LONG_WINDOW, GW_RL_FAIL_CLOSED, 3, &rl, &w);
    assert_true(gw_ratelimit_worker_redis_up(w));
    struct gw_rl_decision d;
    count_through(w, "via-unix", 1, 4, 3, LONG_WINDOW, &d);
    redisContext *c = admin(&p, 0);
    char key[160];
    only_key(c, s.prefix, key, sizeof(key));
    long long pttl = cmd_integer(c, "PTTL %s", key);
    assert_in_range(pttl, 1, LONG_WINDOW * 1000);
    redisFree(c);
    lim_destroy(rl, w);
    redis_stop(&p);
    unlink(p.sock);
}

/* ---- batches ------------------------------------------------------------- */

/* A batch decides like single checks in order, with one EVALSHA for all
 * the clients not answered by the over-limit cache (one INCRBY each, their
 * requests merged); 150 clients still go in one call. */
static void test_batch_matches_single_checks(void **state)
{
    (void)state;
    struct setup s;
    struct gw_ratelimit *rl;
    struct gw_ratelimit_worker *w;
    lim_main(&s, 3, LONG_WINDOW, GW_RL_FAIL_OPEN, 3, &rl, &w);
    struct gw_rl_decision d;
    for (int i = 0; i < 4; i++)
        check(w, "blocked", &d); /* now in the over-limit cache */
    assert_int_equal(d.verdict, GW_RL_LIMITED);

    static const char *const keys[] = {"a", "b", "a", "blocked", "a", "a", "b", "c"};
    static const int want_remaining[] = {2, 2, 1, 0, 0, 0, 1, 2};
    static const enum gw_rl_verdict want_verdict[] = {GW_RL_ALLOW,   GW_RL_ALLOW, GW_RL_ALLOW,
                                                      GW_RL_LIMITED, GW_RL_ALLOW, GW_RL_LIMITED,
                                                      GW_RL_ALLOW,   GW_RL_ALLOW};
    enum { N = GW_ARRAY_LEN(keys) };
    struct gw_rl_decision out[N];
    struct gw_rl_batch_item items[N];
    for (size_t i = 0; i < N; i++)
        items[i] = (struct gw_rl_batch_item){keys[i], strlen(keys[i]), &out[i], NULL};
    redisContext *c = admin(&g_main, 0);
    long long evalsha = cmd_calls(c, "evalsha");
    gw_ratelimit_check_batch(w, items, N);
    for (size_t i = 0; i < N; i++) {
        assert_false(out[i].store_error);
        assert_true(out[i].has_info);
        if (out[i].verdict != want_verdict[i] || out[i].info.remaining != want_remaining[i])
            fail_msg("item %zu (%s): verdict %d remaining %lld, want %d and %d", i, keys[i],
                     out[i].verdict, (long long)out[i].info.remaining, want_verdict[i],
                     want_remaining[i]);
        assert_int_equal(out[i].info.reset_epoch_s, out[0].info.reset_epoch_s);
    }
    /* a, b and c: one call for the three; "blocked" was cached */
    assert_int_equal(cmd_calls(c, "evalsha"), evalsha + 1);
    /* "a" is over its limit now: cached, no Redis call */
    check(w, "a", &d);
    assert_int_equal(d.verdict, GW_RL_LIMITED);
    assert_int_equal(cmd_calls(c, "evalsha"), evalsha + 1);

    /* 150 distinct clients: one call, every one counted once. */
    enum { M = 150 };
    static char names[M][16];
    static struct gw_rl_decision many[M];
    static struct gw_rl_batch_item mitems[M];
    for (int i = 0; i < M; i++) {
        int len = snprintf(names[i], sizeof(names[i]), "many-%d", i);
        mitems[i] = (struct gw_rl_batch_item){names[i], (size_t)len, &many[i], NULL};
    }
    evalsha = cmd_calls(c, "evalsha");
    long long sets = cmd_calls(c, "set");
    gw_ratelimit_check_batch(w, mitems, M);
    for (int i = 0; i < M; i++) {
        assert_int_equal(many[i].verdict, GW_RL_ALLOW);
        assert_int_equal(many[i].info.remaining, 2);
    }
    assert_int_equal(cmd_calls(c, "evalsha"), evalsha + 1);
    assert_int_equal(cmd_calls(c, "set"), sets + M);
    redisFree(c);
    lim_destroy(rl, w);
}

/* ---- merged checks: a batch equals the same checks one by one ------------ */

/* Runs keys[0..n) through lim as one batch (batch true) or as n single
 * checks, decisions to out. */
static void run_checks(struct gw_ratelimit_worker *w, const char *const keys[], size_t n,
                       bool batch, struct gw_rl_decision out[])
{
    struct gw_rl_batch_item *items = calloc(n, sizeof(*items));
    assert_non_null(items);
    for (size_t i = 0; i < n; i++) {
        if (batch)
            items[i] = (struct gw_rl_batch_item){keys[i], strlen(keys[i]), &out[i], NULL};
        else
            gw_ratelimit_check(w, keys[i], strlen(keys[i]), &out[i]);
    }
    if (batch)
        gw_ratelimit_check_batch(w, items, n);
    free(items);
}

/* The decision a client sees, field by field (reset_after_s may differ by a
 * second: a cached answer rounds the time left on another clock). */
static void expect_same_decision(const struct gw_rl_decision *got,
                                 const struct gw_rl_decision *want, size_t i, const char *key)
{
    if (got->verdict != want->verdict || got->over_limit != want->over_limit ||
        got->store_error != want->store_error || got->has_info != want->has_info ||
        got->info.remaining != want->info.remaining || got->info.limit != want->info.limit ||
        got->info.reset_epoch_s != want->info.reset_epoch_s ||
        got->info.window_s != want->info.window_s ||
        llabs((long long)(got->info.reset_after_s - want->info.reset_after_s)) > 1)
        fail_msg("item %zu (%s): batch gave verdict %d over %d remaining %lld reset %lld, "
                 "single checks gave verdict %d over %d remaining %lld reset %lld",
                 i, key, got->verdict, got->over_limit, (long long)got->info.remaining,
                 (long long)got->info.reset_epoch_s, want->verdict, want->over_limit,
                 (long long)want->info.remaining, (long long)want->info.reset_epoch_s);
}

/* GET of the counter of a client under prefix (0 when absent). */
static long long counter_of(redisContext *c, const char *prefix, const char *client,
                            int64_t window_s)
{
    char key[256];
    fw_key(key, sizeof(key), prefix, client, window_s, (long long)(gw_wall_s() / window_s));
    redisReply *r = redisCommand(c, "GET %s", key);
    assert_non_null(r);
    long long v = r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : 0;
    freeReplyObject(r);
    return v;
}

/* Two limiters on one Redis (two prefixes): one gets a sequence of
 * batches, the other the same checks one by one. Every decision matches,
 * across the limit boundary (inside a batch and between batches, and past
 * a 256-item pass), with a client already cached before the batch; the
 * batch counts every request once; afterwards the over-limit cache holds
 * every client the batches refused (no Redis call for them). */
static void test_batch_merged_equals_sequential(void **state)
{
    (void)state;
    char url[64];
    struct setup sb, sq;
    const int LIMIT = 5;
    make_cfg(&sb, main_url(url, sizeof(url)), LIMIT, LONG_WINDOW, GW_RL_FAIL_OPEN);
    make_cfg(&sq, url, LIMIT, LONG_WINDOW, GW_RL_FAIL_OPEN);
    avoid_edge(LONG_WINDOW, 5);
    struct gw_ratelimit *rlb, *rlq;
    struct gw_ratelimit_worker *wb, *wq;
    lim_create(&sb.cfg, &rlb, &wb);
    lim_create(&sq.cfg, &rlq, &wq);

    /* Client names: short ones, one of 100 bytes (past the per-worker
     * store-key cache's key size) and one differing from it in its last
     * byte only. */
    char long1[101], long2[101];
    memset(long1, 'x', 100);
    long1[100] = '\0';
    memcpy(long2, long1, sizeof(long1));
    long2[99] = 'y';
    const char *const clients[] = {"c0", "c1", "c2", "c3", "pre", long1, long2};
    enum { NC = GW_ARRAY_LEN(clients) };
    long long sent[NC] = {0};

    /* "pre" is over its limit (and cached) in both limiters beforehand. */
    struct gw_rl_decision d;
    for (int i = 0; i <= LIMIT; i++) {
        check(wb, "pre", &d);
        check(wq, "pre", &d);
    }
    assert_int_equal(d.verdict, GW_RL_LIMITED);

    /* Four batches from a fixed pseudo-random stream of clients. */
    static const size_t sizes[] = {7, 12, 3, 20};
    uint32_t x = 12345;
    redisContext *c = admin(&g_main, 0);
    for (size_t b = 0; b < GW_ARRAY_LEN(sizes); b++) {
        const char *keys[32];
        struct gw_rl_decision got[32], want[32];
        size_t n = sizes[b];
        for (size_t i = 0; i < n; i++) {
            x = x * 1103515245u + 12345u;
            size_t ci = (x >> 16) % NC;
            keys[i] = clients[ci];
            if (strcmp(clients[ci], "pre") != 0)
                sent[ci]++;
        }
        run_checks(wb, keys, n, true, got);
        run_checks(wq, keys, n, false, want);
        for (size_t i = 0; i < n; i++)
            expect_same_decision(&got[i], &want[i], i, keys[i]);
    }
    /* The batch limiter counted each allowed request once and no refused
     * one (SPEC.md §5.1: a denied request changes no state). */
    for (size_t ci = 0; ci < NC; ci++) {
        if (strcmp(clients[ci], "pre") == 0)
            continue;
        long long v = counter_of(c, sb.prefix, clients[ci], LONG_WINDOW);
        assert_int_equal(v, sent[ci] > LIMIT ? LIMIT : sent[ci]);
    }
    /* Every client over its limit now is cached: no Redis call at all. */
    long long evalsha = cmd_calls(c, "evalsha");
    for (size_t ci = 0; ci < NC; ci++) {
        if (sent[ci] <= LIMIT && strcmp(clients[ci], "pre") != 0)
            continue;
        check(wb, clients[ci], &d);
        assert_int_equal(d.verdict, GW_RL_LIMITED);
        assert_int_equal(d.info.remaining, 0);
    }
    assert_int_equal(cmd_calls(c, "evalsha"), evalsha);

    /* One client, 300 requests in one batch (two passes of 256 and 44)
     * with a limit that falls in the second pass: same decisions. */
    enum { BIG = 300 };
    struct setup sb2, sq2;
    make_cfg(&sb2, url, 260, LONG_WINDOW, GW_RL_FAIL_OPEN);
    make_cfg(&sq2, url, 260, LONG_WINDOW, GW_RL_FAIL_OPEN);
    struct gw_ratelimit *rlb2, *rlq2;
    struct gw_ratelimit_worker *wb2, *wq2;
    lim_create(&sb2.cfg, &rlb2, &wb2);
    lim_create(&sq2.cfg, &rlq2, &wq2);
    static const char *bkeys[BIG];
    static struct gw_rl_decision bgot[BIG], bwant[BIG];
    for (size_t i = 0; i < BIG; i++)
        bkeys[i] = "big";
    evalsha = cmd_calls(c, "evalsha");
    run_checks(wb2, bkeys, BIG, true, bgot);
    assert_int_equal(cmd_calls(c, "evalsha"), evalsha + 2); /* one call per pass */
    run_checks(wq2, bkeys, BIG, false, bwant);
    int allowed = 0;
    for (size_t i = 0; i < BIG; i++) {
        expect_same_decision(&bgot[i], &bwant[i], i, "big");
        allowed += bgot[i].verdict == GW_RL_ALLOW;
    }
    assert_int_equal(allowed, 260);
    assert_int_equal(counter_of(c, sb2.prefix, "big", LONG_WINDOW), 260); /* refused: not counted */
    redisFree(c);
    gw_ratelimit_worker_destroy(wb2);
    gw_ratelimit_destroy(rlb2);
    gw_ratelimit_worker_destroy(wq2);
    gw_ratelimit_destroy(rlq2);
    gw_ratelimit_worker_destroy(wb);
    gw_ratelimit_destroy(rlb);
    gw_ratelimit_worker_destroy(wq);
    gw_ratelimit_destroy(rlq);
}

/* The calls= delta of each command the check may run, over one action. */
struct cmd_counts {
    long long evalsha, eval, time, incrby, incr, pexpire, pttl, expire, set, get;
};

static void read_counts(redisContext *c, struct cmd_counts *out)
{
    out->evalsha = cmd_calls(c, "evalsha");
    out->eval = cmd_calls(c, "eval");
    out->time = cmd_calls(c, "time");
    out->incrby = cmd_calls(c, "incrby");
    out->incr = cmd_calls(c, "incr");
    out->pexpire = cmd_calls(c, "pexpire");
    out->pttl = cmd_calls(c, "pttl");
    out->expire = cmd_calls(c, "expire");
    out->set = cmd_calls(c, "set");
    out->get = cmd_calls(c, "get");
}

static long long counts_total(const struct cmd_counts *a, const struct cmd_counts *b)
{
    return (b->evalsha - a->evalsha) + (b->eval - a->eval) + (b->time - a->time) +
           (b->incrby - a->incrby) + (b->incr - a->incr) + (b->pexpire - a->pexpire) +
           (b->pttl - a->pttl) + (b->expire - a->expire) + (b->set - a->set) + (b->get - a->get);
}

/* k checks of one client in one batch cost Redis one EVALSHA running TIME,
 * one GET and one SET (with PX for a new key, KEEPTTL for an existing
 * one): 4 commands whatever k is (INFO commandstats counts the commands a
 * script runs). The new key has its TTL in (0, W] and holds k. */
static void test_batch_command_counts_and_ttl(void **state)
{
    (void)state;
    struct setup s;
    enum { K = 20 };
    struct gw_ratelimit *rl;
    struct gw_ratelimit_worker *w;
    lim_main(&s, 1000, LONG_WINDOW, GW_RL_FAIL_OPEN, 3, &rl, &w);
    struct gw_rl_decision out[K];
    struct gw_rl_batch_item items[K];
    for (int i = 0; i < K; i++)
        items[i] = (struct gw_rl_batch_item){"203.0.113.50", 12, &out[i], NULL};

    redisContext *c = admin(&g_main, 0);
    struct cmd_counts a, b;
    read_counts(c, &a);
    gw_ratelimit_check_batch(w, items, K); /* a new key */
    read_counts(c, &b);
    for (int i = 0; i < K; i++)
        expect_counted(&out[i], i + 1, 1000, LONG_WINDOW);
    assert_int_equal(b.evalsha - a.evalsha, 1);
    assert_int_equal(b.time - a.time, 1);
    assert_int_equal(b.get - a.get, 1);
    assert_int_equal(b.set - a.set, 1);
    assert_int_equal(counts_total(&a, &b), 4);

    char key[160];
    only_key(c, s.prefix, key, sizeof(key));
    long long pttl = cmd_integer(c, "PTTL %s", key);
    assert_in_range(pttl, 1, LONG_WINDOW * 1000);
    assert_int_equal(counter_of(c, s.prefix, "203.0.113.50", LONG_WINDOW), K);

    read_counts(c, &a);
    gw_ratelimit_check_batch(w, items, K); /* the key exists: its TTL is kept */
    read_counts(c, &b);
    for (int i = 0; i < K; i++)
        expect_counted(&out[i], K + i + 1, 1000, LONG_WINDOW);
    assert_int_equal(b.evalsha - a.evalsha, 1);
    assert_int_equal(b.pexpire - a.pexpire, 0);
    assert_int_equal(counts_total(&a, &b), 4);
    /* the TTL was not touched: still the window end */
    long long pttl2 = cmd_integer(c, "PTTL %s", key);
    assert_in_range(pttl2, 1, pttl);

    /* A single check costs the same 4 commands. */
    read_counts(c, &a);
    check(w, "203.0.113.50", &out[0]);
    read_counts(c, &b);
    expect_counted(&out[0], 2 * K + 1, 1000, LONG_WINDOW);
    assert_int_equal(counts_total(&a, &b), 4);

    /* 10 new clients, 3 requests each, in one batch: one EVALSHA and one
     * TIME for all, one GET and one SET per client (22 commands for 30
     * requests, 0.73 per request), whether the keys are new or not. */
    enum { C = 10, R = 3 };
    char names[C][16];
    struct gw_rl_decision mout[C * R];
    struct gw_rl_batch_item mitems[C * R];
    for (int i = 0; i < C * R; i++) {
        int len = snprintf(names[i % C], sizeof(names[i % C]), "mc-%d", i % C);
        mitems[i] = (struct gw_rl_batch_item){names[i % C], (size_t)len, &mout[i], NULL};
    }
    for (int round = 0; round < 2; round++) {
        read_counts(c, &a);
        gw_ratelimit_check_batch(w, mitems, C * R);
        read_counts(c, &b);
        for (int i = 0; i < C * R; i++)
            expect_counted(&mout[i], round * R + i / C + 1, 1000, LONG_WINDOW);
        assert_int_equal(b.evalsha - a.evalsha, 1);
        assert_int_equal(b.time - a.time, 1);
        assert_int_equal(b.get - a.get, C);
        assert_int_equal(b.set - a.set, C);
        assert_int_equal(counts_total(&a, &b), 2 + 2 * C);
    }
    redisFree(c);
    lim_destroy(rl, w);
}

/* With a 1 s window, every key a merged batch creates carries a TTL in
 * (0, 1000] ms, checked right away, over many windows' worth of keys (the
 * TTL is set in the same script call that creates the key, never later). */
static void test_batch_ttl_short_window(void **state)
{
    (void)state;
    struct setup s;
    const int W = 1;
    struct gw_ratelimit *rl;
    struct gw_ratelimit_worker *w;
    lim_main(&s, 3, W, GW_RL_FAIL_OPEN, 0, &rl, &w);
    redisContext *c = admin(&g_main, 0);
    enum { K = 5 };
    struct gw_rl_decision out[K];
    struct gw_rl_batch_item items[K];
    int checked = 0;
    for (int round = 0; round < 40; round++) {
        char name[32];
        snprintf(name, sizeof(name), "ttl-%d", round);
        for (int i = 0; i < K; i++)
            items[i] = (struct gw_rl_batch_item){name, strlen(name), &out[i], NULL};
        gw_ratelimit_check_batch(w, items, K);
        int allowed = 0;
        for (int i = 0; i < K; i++) {
            assert_false(out[i].store_error);
            allowed += out[i].verdict == GW_RL_ALLOW;
        }
        assert_int_equal(allowed, 3);
        redisReply *keys = redisCommand(c, "KEYS %s:*", s.prefix);
        assert_non_null(keys);
        assert_int_equal(keys->type, REDIS_REPLY_ARRAY);
        for (size_t i = 0; i < keys->elements; i++) {
            long long pttl = cmd_integer(c, "PTTL %s", keys->element[i]->str);
            if (pttl == -2 || pttl == 0)
                continue; /* expired, or expiring this very millisecond, since KEYS */
            if (pttl < 1 || pttl > W * 1000)
                fail_msg("key %s: PTTL %lld, want (0, %d]", keys->element[i]->str, pttl, W * 1000);
            checked++;
        }
        freeReplyObject(keys);
        pause_ms(25);
    }
    assert_true(checked >= 40);
    redisFree(c);
    lim_destroy(rl, w);
}

/* After SCRIPT FLUSH, a merged batch gets NOSCRIPT (nothing counted) and
 * is resent once with EVAL: every request still counted once and decided
 * as in order; the next batch is back to EVALSHA. */
static void test_batch_noscript_merged(void **state)
{
    (void)state;
    struct setup s;
    struct gw_ratelimit *rl;
    struct gw_ratelimit_worker *w;
    lim_main(&s, 4, LONG_WINDOW, GW_RL_FAIL_CLOSED, 3, &rl, &w);
    struct gw_rl_decision d;
    check(w, "ns-a", &d); /* ns-a: 1 */
    expect_counted(&d, 1, 4, LONG_WINDOW);

    redisContext *c = admin(&g_main, 0);
    redisReply *r = redisCommand(c, "SCRIPT FLUSH");
    assert_non_null(r);
    freeReplyObject(r);
    static const char *const keys[] = {"ns-a", "ns-b", "ns-a", "ns-a", "ns-b", "ns-a", "ns-c"};
    static const int64_t want_n[] = {2, 1, 3, 4, 2, 5, 1};
    enum { N = GW_ARRAY_LEN(keys) };
    struct gw_rl_decision out[N];
    struct gw_rl_batch_item items[N];
    for (size_t i = 0; i < N; i++)
        items[i] = (struct gw_rl_batch_item){keys[i], strlen(keys[i]), &out[i], NULL};
    struct cmd_counts a, b;
    read_counts(c, &a);
    gw_ratelimit_check_batch(w, items, N);
    read_counts(c, &b);
    for (size_t i = 0; i < N; i++)
        expect_counted(&out[i], want_n[i], 4, LONG_WINDOW);
    assert_true(gw_ratelimit_worker_redis_up(w));
    assert_int_equal(b.evalsha - a.evalsha, 1); /* answered NOSCRIPT */
    assert_int_equal(b.eval - a.eval, 1);
    assert_int_equal(b.set - a.set, 3); /* one per client, in the EVAL */
    assert_int_equal(counter_of(c, s.prefix, "ns-a", LONG_WINDOW), 4); /* the 5th was refused */
    assert_int_equal(counter_of(c, s.prefix, "ns-b", LONG_WINDOW), 2);
    assert_int_equal(counter_of(c, s.prefix, "ns-c", LONG_WINDOW), 1);

    read_counts(c, &a);
    items[0] = (struct gw_rl_batch_item){"ns-b", 4, &out[0], NULL};
    items[1] = (struct gw_rl_batch_item){"ns-b", 4, &out[1], NULL};
    gw_ratelimit_check_batch(w, items, 2);
    read_counts(c, &b);
    expect_counted(&out[0], 3, 4, LONG_WINDOW);
    expect_counted(&out[1], 4, 4, LONG_WINDOW);
    assert_int_equal(b.evalsha - a.evalsha, 1);
    assert_int_equal(b.eval - a.eval, 0);
    redisFree(c);
    lim_destroy(rl, w);
}

/* One client's counter broken (a non-integer value under its key, as a
 * stray write would leave): only that client's checks fail (failure mode
 * closed: 503 with store_error); the other clients of the same script
 * call are counted and decided; the connection stays up. */
static void test_batch_bad_key_fails_alone(void **state)
{
    (void)state;
    struct setup s;
    struct gw_ratelimit *rl;
    struct gw_ratelimit_worker *w;
    lim_main(&s, 5, LONG_WINDOW, GW_RL_FAIL_CLOSED, 3, &rl, &w);
    char key[256];
    fw_key(key, sizeof(key), s.prefix, "broken", LONG_WINDOW,
           (long long)(gw_wall_s() / LONG_WINDOW));
    redisContext *c = admin(&g_main, 0);
    redisReply *r = redisCommand(c, "SET %s not-a-number EX 60", key);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);

    static const char *const keys[] = {"fine-1", "broken", "fine-2", "broken", "fine-1"};
    enum { N = GW_ARRAY_LEN(keys) };
    struct gw_rl_decision out[N];
    struct gw_rl_batch_item items[N];
    for (size_t i = 0; i < N; i++)
        items[i] = (struct gw_rl_batch_item){keys[i], strlen(keys[i]), &out[i], NULL};
    gw_ratelimit_check_batch(w, items, N);
    expect_counted(&out[0], 1, 5, LONG_WINDOW);
    expect_counted(&out[2], 1, 5, LONG_WINDOW);
    expect_counted(&out[4], 2, 5, LONG_WINDOW);
    for (size_t i = 1; i < N; i += 2) {
        assert_true(out[i].store_error);
        assert_int_equal(out[i].verdict, GW_RL_UNAVAILABLE);
        assert_false(out[i].has_info);
    }
    assert_true(gw_ratelimit_worker_redis_up(w));
    assert_int_equal(counter_of(c, s.prefix, "fine-1", LONG_WINDOW), 2);
    redisFree(c);
    lim_destroy(rl, w);
}

/* The per-worker store-key cache is exact: more clients than its slots,
 * asked twice in several orders, each counted under its own SHA-256 key
 * (as gw_rl_store_key names it), never another client's. */
static void test_store_key_cache_exact(void **state)
{
    (void)state;
    struct setup s;
    struct gw_ratelimit *rl;
    struct gw_ratelimit_worker *w;
    lim_main(&s, 100, LONG_WINDOW, GW_RL_FAIL_OPEN, 3, &rl, &w);
    enum { M = 400 };
    static char names[M][24];
    for (int i = 0; i < M; i++)
        snprintf(names[i], sizeof(names[i]), "10.0.%d.%d", i / 256, i % 256);
    struct gw_rl_decision d;
    for (int pass = 0; pass < 3; pass++)
        for (int j = 0; j < M; j++) {
            int i = pass == 1 ? M - 1 - j : (j * 7) % M; /* 7 is prime to 400 */
            gw_ratelimit_check(w, names[i], strlen(names[i]), &d);
            assert_false(d.store_error);
            assert_int_equal(d.info.remaining, 100 - (pass + 1));
        }
    redisContext *c = admin(&g_main, 0);
    for (int i = 0; i < M; i += 37)
        assert_int_equal(counter_of(c, s.prefix, names[i], LONG_WINDOW), 3);
    redisFree(c);
    lim_destroy(rl, w);
}

/* A batch while Redis is down applies the failure mode to every item
 * (local: the in-process store, in order). */
static void test_batch_store_down(void **state)
{
    (void)state;
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", free_port());
    struct setup s;
    struct gw_ratelimit *rl;
    struct gw_ratelimit_worker *w;
    lim_open(&s, url, 2, LONG_WINDOW, GW_RL_FAIL_LOCAL, 3, &rl, &w);
    assert_false(gw_ratelimit_worker_redis_up(w));
    struct gw_rl_decision out[4];
    struct gw_rl_batch_item items[4];
    for (int i = 0; i < 4; i++)
        items[i] = (struct gw_rl_batch_item){"x", 1, &out[i], NULL};
    gw_ratelimit_check_batch(w, items, 4);
    for (int i = 0; i < 4; i++) {
        assert_true(out[i].store_error || i == 3); /* the 4th: over-limit cache */
        assert_int_equal(out[i].verdict, i < 2 ? GW_RL_ALLOW : GW_RL_LIMITED);
    }
    lim_destroy(rl, w);
}

/* ---- REDIS_TIMEOUT_MS bounds every step ----------------------------------- */

/* A TCP listener on 127.0.0.1 with the given backlog that never accepts:
 * the kernel completes handshakes into the backlog, nobody ever answers. */
static int silent_listener(int backlog, int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, backlog), 0);
    socklen_t len = sizeof(a);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static int64_t elapsed_ms_since(uint64_t t0_us)
{
    return (int64_t)((gw_now_us() - t0_us) / 1000);
}

static void test_timeout_bounds_connect_and_handshake(void **state)
{
    (void)state;
    const int T = 150;
    int port;
    int lfd = silent_listener(16, &port);
    struct gw_redis_target t = {.host = "127.0.0.1", .port = port};
    struct gw_rl_redis *r;
    assert_int_equal(gw_rl_redis_create(&r, &t, T), 0);

    /* The connect succeeds (backlog), SCRIPT LOAD is never answered. */
    uint64_t t0 = gw_now_us();
    assert_int_equal(gw_rl_redis_connect(r), -ETIMEDOUT);
    int64_t took = elapsed_ms_since(t0);
    assert_in_range(took, T - 5, 2 * T + 50);
    assert_false(gw_rl_redis_connected(r));
    assert_non_null(strstr(gw_rl_redis_last_error(r), "handshake"));

    /* Non-blocking: start and poll return at once while the server says
     * nothing; the attempt fails at its deadline, not later. */
    uint64_t now = gw_now_ms();
    t0 = gw_now_us();
    assert_int_equal(gw_rl_redis_connect_start(r, now), -EINPROGRESS);
    assert_true(elapsed_ms_since(t0) <
                T / 2); /* far below one timeout, with slack for a loaded CI */
    int rc = -EINPROGRESS;
    int polls = 0;
    while (rc == -EINPROGRESS && polls < 1000) {
        pause_ms(2);
        uint64_t p0 = gw_now_us();
        rc = gw_rl_redis_connect_poll(r, gw_now_ms());
        assert_true(elapsed_ms_since(p0) < T / 2); /* a poll never waits */
        polls++;
    }
    assert_int_equal(rc, -ETIMEDOUT);
    assert_in_range(gw_now_ms() - now, T - 5, 2 * T + 50);
    assert_int_equal(gw_rl_redis_connect_poll(r, gw_now_ms()), -ENOTCONN);
    gw_rl_redis_ops.destroy(r);
    close(lfd);
}

/* connect(2) itself never completes: a listener with a full accept queue
 * drops further SYNs, so only the connect timeout ends the attempt. */
static void test_timeout_bounds_connect_syscall(void **state)
{
    (void)state;
    const int T = 150;
    int port;
    int lfd = silent_listener(0, &port);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fill[4];
    for (int i = 0; i < 4; i++) {
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        assert_true(fill[i] >= 0);
        (void)connect(fill[i], (struct sockaddr *)&a, sizeof(a));
    }
    pause_ms(20);
    struct gw_redis_target t = {.host = "127.0.0.1", .port = port};
    struct gw_rl_redis *r;
    assert_int_equal(gw_rl_redis_create(&r, &t, T), 0);
    uint64_t t0 = gw_now_us();
    int rc = gw_rl_redis_connect(r);
    int64_t took = elapsed_ms_since(t0);
    assert_int_equal(rc, -ETIMEDOUT);
    assert_in_range(took, T - 5, T + 50);
    assert_string_equal(gw_rl_redis_last_error(r), "connect: timed out");
    gw_rl_redis_ops.destroy(r);
    for (int i = 0; i < 4; i++)
        close(fill[i]);
    close(lfd);
}

/* A Redis that stops answering (SIGSTOP): the check in flight waits
 * REDIS_TIMEOUT_MS once, then the worker marks Redis down, later checks
 * do not wait at all, reconnect ticks never block, and after SIGCONT the
 * worker is back. */
static void test_hung_redis_command_timeout(void **state)
{
    (void)state;
    const int T = 150;
    struct redis_proc p = {.port = free_port()};
    redis_start(&p);
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", p.port);
    struct setup s;
    make_cfg(&s, url, 100, LONG_WINDOW, GW_RL_FAIL_OPEN);
    s.cfg.redis_timeout_ms = T;
    struct gw_ratelimit *rl;
    struct gw_ratelimit_worker *w;
    lim_create(&s.cfg, &rl, &w);
    assert_true(gw_ratelimit_worker_redis_up(w));
    struct gw_rl_decision d;
    check(w, "hung", &d);
    assert_false(d.store_error);

    assert_int_equal(kill(p.pid, SIGSTOP), 0);
    uint64_t t0 = gw_now_us();
    check(w, "hung", &d);
    int64_t took = elapsed_ms_since(t0);
    assert_true(d.store_error);
    assert_int_equal(d.verdict, GW_RL_ALLOW);
    assert_in_range(took, T - 5, T + 100);
    assert_false(gw_ratelimit_worker_redis_up(w));

    /* Marked down: 100 checks take no Redis time at all. */
    t0 = gw_now_us();
    for (int i = 0; i < 100; i++) {
        check(w, "hung", &d);
        assert_true(d.store_error);
    }
    assert_true(elapsed_ms_since(t0) <
                T / 2); /* far below one timeout, with slack for a loaded CI */

    /* Reconnect attempts against the stopped server (the kernel still
     * accepts) run for a while; no single tick blocks. */
    uint64_t start = gw_now_ms(), worst_us = 0;
    int ticks = 0;
    while (gw_now_ms() - start < 3 * (uint64_t)T + 200 && ticks < 5000) {
        uint64_t k0 = gw_now_us();
        (void)gw_ratelimit_worker_tick(w, gw_now_ms());
        uint64_t k = gw_now_us() - k0;
        worst_us = k > worst_us ? k : worst_us;
        ticks++;
        pause_ms(1);
    }
    assert_true(worst_us < (uint64_t)T * 1000 / 2);
    assert_false(gw_ratelimit_worker_redis_up(w));

    assert_int_equal(kill(p.pid, SIGCONT), 0);
    /* Bounded: the backoff is at most 2 s, then an attempt of a few ms. */
    uint64_t deadline = gw_now_ms() + 2000 + 2 * (uint64_t)T + 500;
    while (!gw_ratelimit_worker_redis_up(w) && gw_now_ms() < deadline) {
        (void)gw_ratelimit_worker_tick(w, gw_now_ms());
        pause_ms(2);
    }
    assert_true(gw_ratelimit_worker_redis_up(w));
    check(w, "hung", &d);
    assert_false(d.store_error);
    assert_true(d.has_info);
    lim_destroy(rl, w);
    redis_stop(&p);
}

/* Admin inspect (SPEC.md §11): peek reads without consuming, forget
 * deletes the client's keys and unblocks it from the over-limit cache. */
static void test_peek_and_forget(void **state)
{
    (void)state;
    struct setup s;
    struct gw_ratelimit *rl;
    struct gw_ratelimit_worker *w;
    lim_main(&s, 3, LONG_WINDOW, GW_RL_FAIL_OPEN, 3, &rl, &w);
    struct gw_rl_decision d;
    /* The default limit is keyed by ip: the identity is "ip:<addr>". */
    check(w, "ip:203.0.113.77", &d);
    struct gw_rl_rate_state st[4];
    size_t n = 0;
    for (int i = 0; i < 2; i++) { /* twice: nothing consumed */
        assert_int_equal(gw_ratelimit_peek(w, "default", "203.0.113.77", 12, st, 4, &n), 0);
        assert_int_equal(n, 1);
        assert_string_equal(st[0].policy, "default");
        assert_int_equal(st[0].limit, 3);
        assert_int_equal(st[0].window_s, LONG_WINDOW);
        assert_int_equal(st[0].remaining, 2);
        assert_in_range(st[0].reset_s, 1, LONG_WINDOW);
    }
    check(w, "ip:203.0.113.77", &d);
    check(w, "ip:203.0.113.77", &d);
    check(w, "ip:203.0.113.77", &d);
    assert_int_equal(d.verdict, GW_RL_LIMITED);
    assert_int_equal(gw_ratelimit_peek(w, "default", "203.0.113.77", 12, st, 4, &n), 0);
    assert_int_equal(st[0].remaining, 0);
    /* Unknown limit, a key that is no IP. */
    assert_int_equal(gw_ratelimit_peek(w, "nope", "203.0.113.77", 12, st, 4, &n), -ENOENT);
    assert_int_equal(gw_ratelimit_peek(w, "default", "not-an-ip", 9, st, 4, &n), -EINVAL);
    int64_t deleted = -1;
    assert_int_equal(gw_ratelimit_forget(w, "default", "203.0.113.77", 12, &deleted), 0);
    assert_int_equal(deleted, 1);
    /* Unblocked at once, the cache forgot it too: a full budget again. */
    check(w, "ip:203.0.113.77", &d);
    assert_int_equal(d.verdict, GW_RL_ALLOW);
    assert_int_equal(d.info.remaining, 2);
    lim_destroy(rl, w);
}

/* A refusal answered by the over-limit cache keeps each algorithm's t and
 * X-RateLimit-Reset consistent (Reset = now + t, never past): a sliding
 * window names the end of the current window, a token bucket the instant
 * it is full again (found by a new-user run: Reset stayed at the first
 * refusal's value while t moved). */
static void test_cached_refusal_headers(void **state)
{
    (void)state;
    static const enum gw_rl_algorithm algos[] = {GW_RL_SLIDING_WINDOW, GW_RL_TOKEN_BUCKET};
    for (size_t a = 0; a < 2; a++) {
        struct setup s;
        make_cfg(&s, NULL, 2, 10, GW_RL_FAIL_OPEN);
        s.cfg.rate_limit_algorithm = algos[a];
        struct gw_ratelimit *rl;
        struct gw_ratelimit_worker *w;
        lim_create(&s.cfg, &rl, &w);
        struct gw_rl_decision d;
        for (int i = 0; i < 2; i++) {
            check(w, "ip:198.51.100.9", &d);
            assert_int_equal(d.verdict, GW_RL_ALLOW);
        }
        for (int i = 0; i < 3; i++) { /* the store's refusal, then the cache's */
            check(w, "ip:198.51.100.9", &d);
            assert_int_equal(d.verdict, GW_RL_LIMITED);
            long long now = (long long)gw_wall_s();
            assert_true(d.info.reset_epoch_s >= now);
            long long diff = d.info.reset_epoch_s - now - d.info.reset_after_s;
            if (diff < -1 || diff > 1)
                fail_msg("algorithm %d, refusal %d: Reset %lld, now %lld, t %lld", (int)algos[a], i,
                         (long long)d.info.reset_epoch_s, now, (long long)d.info.reset_after_s);
            assert_true(d.retry_after_s >= 1);
        }
        lim_destroy(rl, w);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limiter_uses_config_url_parser),
        cmocka_unit_test(test_store_key_hides_client_bytes),
        cmocka_unit_test(test_memory_only_limiter),
        cmocka_unit_test(test_exact_limit_key_and_ttl),
        cmocka_unit_test(test_short_window_ttl_and_rollover),
        cmocka_unit_test(test_over_limit_cache_skips_redis),
        cmocka_unit_test(test_absurd_count_is_store_error),
        cmocka_unit_test(test_noscript_after_script_flush),
        cmocka_unit_test(test_two_workers_share_budget),
        cmocka_unit_test(test_dry_run),
        cmocka_unit_test(test_redis_killed_and_restarted),
        cmocka_unit_test(test_password_and_db),
        cmocka_unit_test(test_unix_socket),
        cmocka_unit_test(test_batch_matches_single_checks),
        cmocka_unit_test(test_batch_merged_equals_sequential),
        cmocka_unit_test(test_batch_command_counts_and_ttl),
        cmocka_unit_test(test_batch_ttl_short_window),
        cmocka_unit_test(test_batch_noscript_merged),
        cmocka_unit_test(test_batch_bad_key_fails_alone),
        cmocka_unit_test(test_store_key_cache_exact),
        cmocka_unit_test(test_batch_store_down),
        cmocka_unit_test(test_timeout_bounds_connect_and_handshake),
        cmocka_unit_test(test_timeout_bounds_connect_syscall),
        cmocka_unit_test(test_hung_redis_command_timeout),
        cmocka_unit_test(test_peek_and_forget),
        cmocka_unit_test(test_cached_refusal_headers),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
