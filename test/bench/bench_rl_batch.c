/*
 * Microbenchmark of the rate limiter's batch path (src/ratelimit.c with the
 * Redis store): per check, the limiter's own CPU, Redis's CPU, Redis
 * commands (INFO commandstats, script-inner commands included) and round
 * trips, for batches shaped like the benchmark's (one client) and others.
 * Standalone (not a ctest test); needs redis-server on PATH (started here on
 * a free loopback port, stopped by PID) and a built gwcore:
 *
 *   gcc -O2 -std=c11 -D_GNU_SOURCE -Iinclude -Isrc -I/usr/share/include/llhttp \
 *       test/bench/bench_rl_batch.c build/libgwcore.a build/third_party/llhttp/libllhttp.a \
 *       -lhiredis -ljansson -lyaml -lssl -lcrypto -lpthread -lm -o bench_rl_batch
 *   ./bench_rl_batch [checks_per_case]      (default 200000)
 *
 * Each case runs for the fixed window, the sliding window and the token
 * bucket in turn (issue 12: Redis CPU per check of each algorithm).
 */
#include "gw/common.h"
#include "gw/config.h"
#include "gw/log.h"
#include "gw/ratelimit.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BATCH_MAX 256

static pid_t g_redis;
static int g_port;

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        perror("free port");
        exit(1);
    }
    close(fd);
    return ntohs(a.sin_port);
}

static redisContext *admin(void)
{
    struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", g_port, tv);
    if (c != NULL && c->err) {
        redisFree(c);
        return NULL;
    }
    return c;
}

/* Starts redis-server on a free port and waits (at most 5 s) for PING. */
static void redis_start(void)
{
    g_port = free_port();
    char port[16];
    snprintf(port, sizeof(port), "%d", g_port);
    g_redis = fork();
    if (g_redis == 0) {
        int null = open("/dev/null", O_RDWR);
        dup2(null, 1);
        dup2(null, 2);
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 500; i++) {
        redisContext *c = admin();
        if (c != NULL) {
            redisReply *r = redisCommand(c, "PING");
            bool up = r != NULL;
            freeReplyObject(r);
            redisFree(c);
            if (up)
                return;
        }
        usleep(10000);
    }
    fprintf(stderr, "redis-server did not start\n");
    kill(g_redis, SIGKILL);
    exit(1);
}

/* Sum of calls= over INFO commandstats, without INFO itself. */
static long long redis_calls(redisContext *c)
{
    redisReply *r = redisCommand(c, "INFO commandstats");
    long long sum = 0;
    if (r == NULL || r->type != REDIS_REPLY_STRING)
        exit(1);
    for (const char *p = r->str; (p = strstr(p, "cmdstat_")) != NULL; p++) {
        if (strncmp(p, "cmdstat_info:", 13) == 0)
            continue;
        const char *q = strstr(p, "calls=");
        if (q != NULL)
            sum += strtoll(q + 6, NULL, 10);
    }
    freeReplyObject(r);
    return sum;
}

/* utime + stime of a process in clock ticks. */
static long long proc_ticks(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL || fgets(buf, sizeof(buf), f) == NULL)
        exit(1);
    fclose(f);
    const char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    /* fields after ")": state(3) ... utime(14) stime(15) */
    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st);
    return (long long)(ut + st);
}

static double self_cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec * 1e6 + ru.ru_utime.tv_usec + ru.ru_stime.tv_sec * 1e6 +
           ru.ru_stime.tv_usec;
}

/* One case: batches of `batch` items over `clients` client keys (item i
 * of a batch is client i % clients), `total` checks in all. */
static void run_case(struct gw_ratelimit_worker *w, redisContext *c, const char *name, size_t batch,
                     size_t clients, long total)
{
    static char names[BATCH_MAX][32];
    static struct gw_rl_decision out[BATCH_MAX];
    static struct gw_rl_batch_item items[BATCH_MAX];
    for (size_t i = 0; i < batch; i++) {
        int len = snprintf(names[i], sizeof(names[i]), "198.51.%zu.%zu", (i % clients) / 250,
                           (i % clients) % 250);
        items[i] = (struct gw_rl_batch_item){names[i], (size_t)len, &out[i], NULL};
    }
    long batches = total / (long)batch;
    long long calls0 = redis_calls(c), ticks0 = proc_ticks(g_redis);
    double cpu0 = self_cpu_us();
    uint64_t t0 = gw_now_us();
    long errors = 0;
    for (long b = 0; b < batches; b++) {
        gw_ratelimit_check_batch(w, items, batch);
        for (size_t i = 0; i < batch; i++)
            errors += out[i].store_error || out[i].verdict != GW_RL_ALLOW;
    }
    uint64_t wall = gw_now_us() - t0;
    double cpu = self_cpu_us() - cpu0;
    long long ticks = proc_ticks(g_redis) - ticks0, calls = redis_calls(c) - calls0;
    double n = (double)batches * (double)batch;
    printf("%-28s %9.0f checks/s  limiter CPU %6.2f us  Redis CPU %6.2f us  Redis cmds %5.3f  "
           "round trips %5.3f  per check%s\n",
           name, n / ((double)wall / 1e6), cpu / n,
           (double)ticks * 1e6 / (double)sysconf(_SC_CLK_TCK) / n, (double)calls / n,
           (double)batches / n, errors ? "  (ERRORS)" : "");
}

int main(int argc, char **argv)
{
    long total = argc > 1 ? strtol(argv[1], NULL, 10) : 200000;
    if (total < BATCH_MAX)
        total = BATCH_MAX;
    signal(SIGPIPE, SIG_IGN);
    gw_log_set_level(GW_LOG_ERROR);
    redis_start();
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", g_port);
    redisContext *c = admin();
    if (c == NULL)
        return 1;
    /* Issue 12: the same cases for each algorithm, one limiter each (Redis
     * CPU per check of the sliding window and token bucket against the
     * fixed window's, in the same run). */
    static const struct {
        enum gw_rl_algorithm algo;
        const char *name;
    } algos[] = {{GW_RL_FIXED_WINDOW, "fixed_window"},
                 {GW_RL_SLIDING_WINDOW, "sliding_window"},
                 {GW_RL_TOKEN_BUCKET, "token_bucket"}};
    struct gw_ratelimit *rl = NULL;
    struct gw_ratelimit_worker *w = NULL;
    for (size_t a = 0; a < sizeof(algos) / sizeof(algos[0]); a++) {
        struct gw_config cfg = {
            .redis_url = url,
            .redis_timeout_ms = 1000,
            .rate_limit_requests = 1000000000, /* never over: the gw-redis steady state */
            .rate_limit_window_s = 3600,
            .rate_limit_algorithm = algos[a].algo,
            .rate_limit_key_prefix = "bench",
            .rate_limit_failure_mode = GW_RL_FAIL_OPEN,
            .worker_threads = 1,
        };
        if (gw_ratelimit_create(&rl, &cfg) != 0 || gw_ratelimit_worker_create(&w, rl) != 0 ||
            !gw_ratelimit_worker_redis_up(w)) {
            fprintf(stderr, "limiter setup failed\n");
            kill(g_redis, SIGTERM);
            return 1;
        }
        printf("-- %s\n", algos[a].name);
        run_case(w, c, "warm-up", 64, 1, total / 4);
        run_case(w, c, "single checks, 1 client", 1, 1, total / 8);
        run_case(w, c, "batch 16, 1 client", 16, 1, total);
        run_case(w, c, "batch 64, 1 client", 64, 1, total);
        run_case(w, c, "batch 200, 1 client", 200, 1, total);
        run_case(w, c, "batch 64, 8 clients", 64, 8, total);
        run_case(w, c, "batch 64, 64 clients", 64, 64, total);
        run_case(w, c, "batch 200, 200 clients", 200, 200, total);
        if (a + 1 < sizeof(algos) / sizeof(algos[0])) {
            gw_ratelimit_worker_destroy(w);
            gw_ratelimit_destroy(rl);
        }
    }
    redisFree(c);
    gw_ratelimit_worker_destroy(w);
    gw_ratelimit_destroy(rl);
    kill(g_redis, SIGTERM);
    waitpid(g_redis, NULL, 0);
    return 0;
}
