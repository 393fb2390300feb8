/*
 * Helpers of the distributed rate-limiting integration tests (see
 * gwt_dist.h): redis-server on a chosen port, Redis inspection through
 * hiredis, expected store keys, request bursts and timings, libfaketime.
 */
#include "gwt_dist.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <fcntl.h>
#include <openssl/sha.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define REDIS_START_MS 10000
#define SCAN_MAX       100000

static void pause_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static redisContext *open_ctx(int port, int timeout_ms)
{
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (c == NULL)
        return NULL;
    if (c->err || redisSetTimeout(c, tv) != REDIS_OK) {
        redisFree(c);
        return NULL;
    }
    return c;
}

/* ---- redis-server -------------------------------------------------------- */

int gwt_dist_redis_start_at(struct gwt_proc *p, int port, const char *const extra[])
{
    char ps[16];
    snprintf(ps, sizeof(ps), "%d", port);
    const char *argv[40] = {"redis-server", "--port",           ps,  "--bind",
                            "127.0.0.1",    "--save",           "",  "--appendonly",
                            "no",           "--protected-mode", "no"};
    size_t k = 11;
    for (size_t i = 0; extra != NULL && extra[i] != NULL && k < 39; i++)
        argv[k++] = extra[i];
    argv[k] = NULL;
    int rc = gwt_spawn(p, argv, NULL);
    if (rc != 0)
        return rc;
    long long deadline = gwt_now_ms() + REDIS_START_MS;
    while (gwt_proc_alive(p) && gwt_now_ms() < deadline) {
        redisContext *c = open_ctx(port, 200);
        if (c != NULL) {
            redisReply *r = redisCommand(c, "PING");
            bool up = r != NULL; /* PONG, or NOAUTH when a password is set */
            if (r != NULL)
                freeReplyObject(r);
            redisFree(c);
            if (up)
                return 0;
        }
        pause_ms(5);
    }
    rc = gwt_proc_alive(p) ? -ETIMEDOUT : -EADDRINUSE;
    gwt_log_dump(p, 2000);
    return rc;
}

/* Sends the two-word command argv and tells whether redis replied with a
 * status (+OK). */
static bool status_reply(redisContext *c, const char *const argv[2])
{
    redisReply *r = redisCommandArgv(c, 2, (const char **)argv, NULL);
    bool ok = r != NULL && r->type == REDIS_REPLY_STATUS;
    if (r != NULL)
        freeReplyObject(r);
    return ok;
}

redisContext *gwt_dist_redis(int port, const char *password, int db)
{
    redisContext *c = open_ctx(port, 2000);
    if (c == NULL)
        return NULL;
    char dbs[16];
    snprintf(dbs, sizeof(dbs), "%d", db);
    const char *auth[] = {"AUTH", password};
    const char *select[] = {"SELECT", dbs};
    if ((password != NULL && !status_reply(c, auth)) || !status_reply(c, select)) {
        redisFree(c);
        return NULL;
    }
    return c;
}

long long gwt_dist_redis_calls(int port, const char *const cmds[])
{
    redisContext *c = gwt_dist_redis(port, NULL, 0);
    if (c == NULL)
        return -1;
    redisReply *r = redisCommand(c, "INFO commandstats");
    long long sum = -1;
    if (r != NULL && r->type == REDIS_REPLY_STRING) {
        sum = 0;
        for (size_t i = 0; cmds[i] != NULL; i++) {
            char needle[64];
            snprintf(needle, sizeof(needle), "cmdstat_%s:calls=", cmds[i]);
            const char *at = strstr(r->str, needle);
            if (at != NULL)
                sum += strtoll(at + strlen(needle), NULL, 10);
        }
    }
    if (r != NULL)
        freeReplyObject(r);
    redisFree(c);
    return sum;
}

int gwt_dist_redis_scan(int port, const char *password, int db, const char *pattern, char ***keys)
{
    *keys = NULL;
    redisContext *c = gwt_dist_redis(port, password, db);
    if (c == NULL)
        return -ECONNREFUSED;
    char **v = NULL;
    int n = 0, cap = 0, rc = 0;
    char cursor[32] = "0";
    for (int calls = 0; calls < SCAN_MAX; calls++) {
        redisReply *r = redisCommand(c, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
            if (r != NULL)
                freeReplyObject(r);
            rc = -EPROTO;
            break;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        redisReply *arr = r->element[1];
        for (size_t i = 0; i < arr->elements && rc == 0; i++) {
            if (n == SCAN_MAX) {
                rc = -E2BIG;
                break;
            }
            if (n == cap) {
                cap = cap ? cap * 2 : 64;
                char **nv = realloc(v, sizeof(*v) * (size_t)cap);
                if (nv == NULL) {
                    rc = -ENOMEM;
                    break;
                }
                v = nv;
            }
            if ((v[n] = strdup(arr->element[i]->str)) == NULL)
                rc = -ENOMEM;
            else
                n++;
        }
        freeReplyObject(r);
        if (rc != 0 || strcmp(cursor, "0") == 0)
            break;
    }
    redisFree(c);
    if (rc != 0) {
        gwt_strv_free(v, n);
        return rc;
    }
    *keys = v;
    return n;
}

static long long int_command(int port, const char *cmd, const char *key)
{
    redisContext *c = gwt_dist_redis(port, NULL, 0);
    if (c == NULL)
        return GWT_REDIS_ERR;
    long long v = GWT_REDIS_ERR;
    redisReply *r = redisCommand(c, "%s %s", cmd, key);
    if (r != NULL && r->type == REDIS_REPLY_INTEGER)
        v = r->integer;
    else if (r != NULL && r->type == REDIS_REPLY_NIL)
        v = -1;
    else if (r != NULL && r->type == REDIS_REPLY_STRING)
        v = strtoll(r->str, NULL, 10);
    if (r != NULL)
        freeReplyObject(r);
    redisFree(c);
    return v;
}

long long gwt_dist_redis_pttl(int port, const char *key)
{
    return int_command(port, "PTTL", key);
}

long long gwt_dist_redis_get(int port, const char *key)
{
    return int_command(port, "GET", key);
}

/* ---- what the gateway should store ---------------------------------------- */

void gwt_dist_store_key(const char *prefix, const char *client_key, char out[128])
{
    char hex[65];
    gwt_sha256_hex(client_key, strlen(client_key), hex);
    snprintf(out, 128, "%s:{%.32s}", prefix, hex);
}

void gwt_dist_api_client_key(const char *api_key, char out[72])
{
    snprintf(out, 72, "header:x-api-key=%s", api_key);
}

void gwt_dist_fw_key(const char *prefix, const char *client_key, long long window_s,
                     long long index, char out[192])
{
    char base[128];
    gwt_dist_store_key(prefix, client_key, base);
    snprintf(out, 192, "%s:default:default:fw:%lld:%lld", base, window_s * 1000, index);
}

int gwt_dist_client_keys(int port, const char *prefix, const char *client_key)
{
    char base[128], pattern[160];
    gwt_dist_store_key(prefix, client_key, base);
    /* '{' and '}' are not glob characters, only '[', '*', '?' are. */
    snprintf(pattern, sizeof(pattern), "%s:*", base);
    char **keys = NULL;
    int n = gwt_dist_redis_scan(port, NULL, 0, pattern, &keys);
    if (n > 0)
        gwt_strv_free(keys, n);
    return n;
}

/* ---- requests --------------------------------------------------------------- */

char *gwt_dist_request(const char *target, const char *xff, const char *extra)
{
    char *s = NULL;
    char xh[600] = "";
    if (xff != NULL)
        snprintf(xh, sizeof(xh), "X-Forwarded-For: %s\r\n", xff);
    if (asprintf(&s, "GET %s HTTP/1.1\r\nHost: h\r\n%s%sConnection: close\r\n\r\n", target, xh,
                 extra != NULL ? extra : "") < 0)
        return NULL;
    return s;
}

int gwt_dist_burst(const int ports[], char *const reqs[], int n, int statuses[], long long resets[])
{
    if (n < 1 || n > 1024)
        return -EINVAL;
    int *fds = malloc(sizeof(int) * (size_t)n);
    if (fds == NULL)
        return -ENOMEM;
    int first = 0;
    for (int i = 0; i < n; i++) {
        statuses[i] = 0;
        if (resets != NULL)
            resets[i] = -1;
        fds[i] = gwt_connect(ports[i]);
        if (fds[i] < 0) {
            statuses[i] = fds[i];
            first = first ? first : fds[i];
        }
    }
    /* All connections are open before the first byte is sent, and every
     * request is written before the first response is read. */
    for (int i = 0; i < n; i++) {
        if (fds[i] < 0)
            continue;
        int rc = gwt_send_str(fds[i], reqs[i]);
        if (rc != 0) {
            statuses[i] = rc;
            first = first ? first : rc;
        }
    }
    for (int i = 0; i < n; i++) {
        if (fds[i] < 0)
            continue;
        if (statuses[i] == 0) {
            struct gwt_response r;
            int rc = gwt_read_response(fds[i], &r, false);
            if (rc == 0) {
                statuses[i] = r.status;
                if (resets != NULL)
                    resets[i] = gwt_dist_header_ll(&r, "X-RateLimit-Reset", -1);
            } else {
                statuses[i] = rc;
                first = first ? first : rc;
            }
            gwt_response_free(&r);
        }
        close(fds[i]);
    }
    free(fds);
    return first;
}

static long long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int gwt_dist_timed(int port, const char *raw, struct gwt_response *r, long long *us)
{
    long long t0 = now_us();
    int rc = gwt_http(port, raw, r);
    *us = now_us() - t0;
    return rc;
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

long long gwt_dist_percentile(long long *v, int n, int pct)
{
    if (n <= 0)
        return 0;
    qsort(v, (size_t)n, sizeof(*v), cmp_ll);
    int rank = (pct * n + 99) / 100; /* nearest rank, 1-based */
    if (rank < 1)
        rank = 1;
    return v[rank - 1];
}

long long gwt_dist_header_ll(const struct gwt_response *r, const char *name, long long def)
{
    const char *v = gwt_header(r, name);
    if (v == NULL)
        return def;
    char *end;
    long long x = strtoll(v, &end, 10);
    return end == v || *end != '\0' ? def : x;
}

/* ---- libfaketime ------------------------------------------------------------- */

const char *gwt_dist_faketime_lib(void)
{
    static const char *const candidates[] = {
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/faketime/libfaketimeMT.so.1",
        "/usr/local/lib/faketime/libfaketimeMT.so.1",
    };
    for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++)
        if (access(candidates[i], R_OK) == 0)
            return candidates[i];
    return NULL;
}

long long gwt_dist_first_log_epoch(const struct gwt_proc *p)
{
    char *log = gwt_log_read(p);
    if (log == NULL)
        return -1;
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    long long t = -1;
    /* The first line that starts with a timestamp (ASan may print first). */
    for (const char *line = log; line != NULL && *line != '\0';) {
        const char *end = strptime(line, "%Y-%m-%dT%H:%M:%S", &tm);
        if (end != NULL) {
            t = (long long)timegm(&tm);
            break;
        }
        line = strchr(line, '\n');
        line = line != NULL ? line + 1 : NULL;
    }
    free(log);
    return t;
}

void gwt_dist_burst_same(const int ports[], int nports, const char *target, const char *xff, int n,
                         int statuses[], long long resets[])
{
    int *to = calloc((size_t)n, sizeof(*to));
    char **reqs = calloc((size_t)n, sizeof(*reqs));
    assert_non_null(to);
    assert_non_null(reqs);
    for (int i = 0; i < n; i++) {
        to[i] = ports[i % nports];
        reqs[i] = gwt_dist_request(target, xff, NULL);
        assert_non_null(reqs[i]);
    }
    int rc = gwt_dist_burst(to, reqs, n, statuses, resets);
    for (int i = 0; i < n; i++)
        free(reqs[i]);
    free(reqs);
    free(to);
    assert_int_equal(rc, 0);
}
