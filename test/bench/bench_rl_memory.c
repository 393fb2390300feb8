/*
 * Benchmark of the in-process rate-limit store (src/rl_memory.c): a flood of
 * N distinct client keys (default 1,000,000) inside one fixed window, then
 * the same keys again; prints RSS growth, the store's own byte count and
 * its bound, and nanoseconds per check. Standalone (not a ctest test):
 *
 *   gcc -O2 -std=c11 -D_GNU_SOURCE -pthread -Iinclude -Isrc \
 *       test/bench/bench_rl_memory.c src/rl_memory.c src/rl_algo.c -o bench_rl_memory
 *   ./bench_rl_memory [distinct_keys] [threads]
 *
 * test/bench/rl_memory.sh does both from the repository root.
 */
#include "ratelimit_int.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WINDOW_S 60
#define NOW_S    1700000010 /* any instant: every check falls in one window */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Resident set size of this process in KiB, from /proc/self/status. */
static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL)
        return -1;
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "VmRSS:", 6) == 0)
            kib = strtol(line + 6, NULL, 10);
    fclose(f);
    return kib;
}

/* A store key shaped like the limiter's, "rl:{<32 hex>}", for client i:
 * the hex is a bijective mix of i, so keys are distinct and spread. */
static int make_key(uint64_t i, char out[48])
{
    uint64_t a = i * 0x9e3779b97f4a7c15ULL, b = (i ^ 0xda942042e4dd58b5ULL) * 0xbf58476d1ce4e5b9ULL;
    a ^= a >> 31;
    b ^= b >> 29;
    return snprintf(out, 48, "rl:{%016llx%016llx}", (unsigned long long)a, (unsigned long long)b);
}

struct job {
    struct gw_rl_memory *m;
    uint64_t from, to; /* client indices [from, to) */
    int64_t want;      /* expected count of every check (1 first pass, 2 second) */
    uint64_t errors;   /* checks that failed or counted wrong */
    volatile int sink; /* keeps the format-only loop from being optimised away */
    bool format_only;  /* measure key formatting alone */
};

static void *run(void *p)
{
    struct job *j = p;
    char key[48];
    for (uint64_t i = j->from; i < j->to; i++) {
        int len = make_key(i, key);
        if (j->format_only) {
            j->sink += key[len - 2];
            continue;
        }
        int64_t n = 0;
        if (gw_rl_memory_incr(j->m, key, (size_t)len, WINDOW_S, NOW_S, &n) != 0 || n != j->want)
            j->errors++;
    }
    return NULL;
}

/* Runs one pass over [0, n) on t threads; returns elapsed ns. */
static uint64_t pass(struct gw_rl_memory *m, uint64_t n, int t, int64_t want, bool format_only,
                     uint64_t *errors)
{
    pthread_t th[64];
    struct job jobs[64];
    uint64_t t0 = now_ns();
    for (int k = 0; k < t; k++) {
        jobs[k] = (struct job){.m = m,
                               .from = n * (uint64_t)k / (uint64_t)t,
                               .to = n * (uint64_t)(k + 1) / (uint64_t)t,
                               .want = want,
                               .format_only = format_only};
        if (pthread_create(&th[k], NULL, run, &jobs[k]) != 0) {
            perror("pthread_create");
            exit(1);
        }
    }
    for (int k = 0; k < t; k++) {
        pthread_join(th[k], NULL);
        *errors += jobs[k].errors;
    }
    return now_ns() - t0;
}

#define REPS 3 /* timings are the best of REPS fresh stores (shared CI hosts are noisy) */

int main(int argc, char **argv)
{
    uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
    int threads = argc > 2 ? atoi(argv[2]) : 1;
    if (n == 0 || threads < 1 || threads > 64) {
        fprintf(stderr, "usage: %s [distinct_keys>0] [threads 1..64]\n", argv[0]);
        return 2;
    }
    uint64_t errors = 0;
    uint64_t fmt_ns = UINT64_MAX, ins_ns = UINT64_MAX, hit_ns = UINT64_MAX;
    long rss0 = rss_kib(), rss_idle = 0, rss_full = 0, rss_end = 0;
    size_t entries = 0, bytes = 0;
    for (int rep = 0; rep < REPS; rep++) {
        uint64_t f = pass(NULL, n, threads, 0, true, &errors);
        fmt_ns = f < fmt_ns ? f : fmt_ns;
        struct gw_rl_memory *m;
        if (gw_rl_memory_create(&m, 0) != 0) {
            fprintf(stderr, "cannot create the store\n");
            return 1;
        }
        if (rep == 0)
            rss_idle = rss_kib();
        uint64_t t = pass(m, n, threads, 1, false, &errors);
        ins_ns = t < ins_ns ? t : ins_ns;
        if (rep == 0) {
            rss_full = rss_kib();
            entries = gw_rl_memory_entries(m);
            bytes = gw_rl_memory_bytes(m);
        }
        /* Past the cap old clients were evicted, so a second pass counts 2
         * only for those still held: check exactness only when all fit. */
        uint64_t err2 = 0;
        t = pass(m, n, threads, 2, false, &err2);
        hit_ns = t < hit_ns ? t : hit_ns;
        if (n <= GW_RL_MEMORY_DEFAULT_ENTRIES)
            errors += err2;
        if (rep == 0)
            rss_end = rss_kib();
        gw_rl_memory_destroy(m);
    }

    double per = (double)n;
    printf("in-process store: %llu distinct keys in one %d s window, %d thread(s)\n",
           (unsigned long long)n, WINDOW_S, threads);
    printf("  cap                 %u entries (%d shards), %d bytes per entry + 4 per bucket\n",
           (unsigned)GW_RL_MEMORY_DEFAULT_ENTRIES, GW_RL_MEMORY_SHARDS, GW_RL_MEMORY_ENTRY_BYTES);
    printf("  entries held        %zu\n", entries);
    printf("  store bytes         %.1f MiB (bound %.1f MiB)\n", (double)bytes / 1048576.0,
           (double)gw_rl_memory_max_bytes(0) / 1048576.0);
    printf("  RSS growth          create %+.1f MiB, after first pass %+.1f MiB, after second "
           "%+.1f MiB\n",
           (double)(rss_idle - rss0) / 1024.0, (double)(rss_full - rss0) / 1024.0,
           (double)(rss_end - rss0) / 1024.0);
    printf("  ns per check        new key %.0f, known key %.0f per thread (best of %d; key "
           "formatting, %.0f ns, subtracted)\n",
           ((double)ins_ns - (double)fmt_ns) * threads / per,
           ((double)hit_ns - (double)fmt_ns) * threads / per, REPS, (double)fmt_ns * threads / per);
    printf("  throughput          %.2f M new-key checks/s, %.2f M known-key checks/s (all "
           "threads, formatting included)\n",
           per / ((double)ins_ns / 1e3), per / ((double)hit_ns / 1e3));
    printf("  wrong counts        %llu\n", (unsigned long long)errors);
    return errors == 0 ? 0 : 1;
}
