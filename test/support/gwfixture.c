/*
 * Helpers shared by the gateway's integration tests (see gwtest.h): reading
 * backend_app's /echo and /stats replies, polling the gateway's /stats,
 * requests on their own threads, problem+json assertions, and keeping a
 * rate-limit test inside one fixed window.
 */
#include "gwtest.h"

#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stdio.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

long long gwt_wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec;
}

/* ---- /echo ------------------------------------------------------------ */

int gwt_echo_parse(const struct gwt_response *r, struct gwt_echo *e)
{
    memset(e, 0, sizeof(*e));
    json_t *j = gwt_json(r);
    if (j == NULL)
        return -EPROTO;
    json_t *m = json_object_get(j, "method");
    json_t *t = json_object_get(j, "target");
    json_t *v = json_object_get(j, "http_version");
    json_t *h = json_object_get(j, "headers");
    json_t *bl = json_object_get(j, "body_length");
    json_t *bs = json_object_get(j, "body_sha256");
    if (!json_is_string(m) || !json_is_string(t) || !json_is_array(h) || !json_is_integer(bl) ||
        !json_is_string(bs)) {
        json_decref(j);
        return -EPROTO;
    }
    e->root = j;
    e->method = json_string_value(m);
    e->target = json_string_value(t);
    e->http_version = json_is_string(v) ? json_string_value(v) : "";
    e->headers = h;
    e->body_length = json_integer_value(bl);
    e->body_sha256 = json_string_value(bs);
    return 0;
}

void gwt_echo_free(struct gwt_echo *e)
{
    if (e->root)
        json_decref(e->root);
    memset(e, 0, sizeof(*e));
}

size_t gwt_echo_nheaders(const struct gwt_echo *e)
{
    return e->headers ? json_array_size(e->headers) : 0;
}

static const char *pair_part(const struct gwt_echo *e, size_t i, size_t part)
{
    json_t *pair = json_array_get(e->headers, i);
    json_t *s = json_array_get(pair, part);
    return json_is_string(s) ? json_string_value(s) : "";
}

const char *gwt_echo_name(const struct gwt_echo *e, size_t i)
{
    return pair_part(e, i, 0);
}

const char *gwt_echo_value(const struct gwt_echo *e, size_t i)
{
    return pair_part(e, i, 1);
}

int gwt_echo_index(const struct gwt_echo *e, const char *name)
{
    for (size_t i = 0; i < gwt_echo_nheaders(e); i++) {
        if (strcasecmp(gwt_echo_name(e, i), name) == 0)
            return (int)i;
    }
    return -1;
}

const char *gwt_echo_header(const struct gwt_echo *e, const char *name)
{
    int i = gwt_echo_index(e, name);
    return i < 0 ? NULL : gwt_echo_value(e, (size_t)i);
}

int gwt_echo_count(const struct gwt_echo *e, const char *name)
{
    int n = 0;
    for (size_t i = 0; i < gwt_echo_nheaders(e); i++)
        n += strcasecmp(gwt_echo_name(e, i), name) == 0;
    return n;
}

/* ---- stats ------------------------------------------------------------ */

int gwt_backend_stats(int port, long long *requests, long long *max_concurrency)
{
    struct gwt_response r;
    int rc = gwt_get(port, "/stats", &r);
    if (rc == 0 && r.status != 200)
        rc = -EPROTO;
    json_t *j = rc == 0 ? gwt_json(&r) : NULL;
    if (rc == 0 && j == NULL)
        rc = -EPROTO;
    if (j) {
        long long a = gwt_json_int(j, "requests", GWT_NO_VALUE);
        long long b = gwt_json_int(j, "max_concurrency", GWT_NO_VALUE);
        if (a == GWT_NO_VALUE || b == GWT_NO_VALUE)
            rc = -EPROTO;
        if (requests)
            *requests = a;
        if (max_concurrency)
            *max_concurrency = b;
        json_decref(j);
    }
    gwt_response_free(&r);
    return rc;
}

int gwt_backend_reset(int port)
{
    struct gwt_response r;
    int rc = gwt_http(port,
                      "POST /stats/reset HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: "
                      "0\r\nConnection: close\r\n\r\n",
                      &r);
    if (rc == 0 && r.status != 200)
        rc = -EPROTO;
    gwt_response_free(&r);
    return rc;
}

long long gwt_stat(int port, const char *path, const char *field)
{
    struct gwt_response r;
    long long v = GWT_NO_VALUE;
    if (gwt_get(port, path, &r) == 0) {
        json_t *j = gwt_json(&r);
        if (j) {
            v = gwt_json_int(j, field, GWT_NO_VALUE);
            json_decref(j);
        }
    }
    gwt_response_free(&r);
    return v;
}

int gwt_wait_stat(int port, const char *path, const char *field, long long want, int timeout_ms)
{
    long long deadline = gwt_now_ms() + timeout_ms;
    for (;;) {
        if (gwt_stat(port, path, field) == want)
            return 0;
        if (gwt_now_ms() >= deadline)
            return -ETIMEDOUT;
        usleep(5000);
    }
}

/* ---- async requests --------------------------------------------------- */

static void *async_main(void *arg)
{
    struct gwt_async *a = arg;
    long long t0 = gwt_now_ms();
    a->rc = gwt_http(a->port, a->request, &a->resp);
    a->elapsed_ms = gwt_now_ms() - t0;
    return NULL;
}

int gwt_async_start(struct gwt_async *a, int port, const char *raw_request)
{
    memset(a, 0, sizeof(*a));
    a->port = port;
    a->rc = -EINPROGRESS;
    a->request = strdup(raw_request);
    if (a->request == NULL)
        return -ENOMEM;
    int e = pthread_create(&a->thread, NULL, async_main, a);
    if (e != 0) {
        free(a->request);
        a->request = NULL;
        return -e;
    }
    a->started = true;
    return 0;
}

int gwt_async_join(struct gwt_async *a)
{
    if (a->started) {
        pthread_join(a->thread, NULL);
        a->started = false;
    }
    return a->rc;
}

void gwt_async_free(struct gwt_async *a)
{
    gwt_async_join(a);
    gwt_response_free(&a->resp);
    free(a->request);
    a->request = NULL;
}

/* ---- assertions ------------------------------------------------------- */

void gwt_assert_problem(const struct gwt_response *r, int status, const char *type)
{
    assert_int_equal(r->status, status);
    const char *ct = gwt_header(r, "Content-Type");
    assert_non_null(ct);
    assert_true(strncasecmp(ct, "application/problem+json", 24) == 0);
    json_t *j = gwt_json(r);
    if (j == NULL)
        fail_msg("problem body is not JSON: %.*s", (int)r->body_len, r->body);
    json_t *jt = json_object_get(j, "type");
    json_t *jtitle = json_object_get(j, "title");
    json_t *js = json_object_get(j, "status");
    json_t *jd = json_object_get(j, "detail");
    bool ok =
        json_is_string(jt) && json_is_string(jtitle) && json_is_integer(js) && json_is_string(jd);
    if (!ok) {
        json_decref(j);
        fail_msg("problem body lacks type/title/status/detail: %.*s", (int)r->body_len, r->body);
    }
    char got_type[256];
    snprintf(got_type, sizeof(got_type), "%s", json_string_value(jt));
    long long got_status = json_integer_value(js);
    size_t title_len = strlen(json_string_value(jtitle));
    json_decref(j);
    assert_string_equal(got_type, type ? type : "about:blank");
    assert_int_equal(got_status, status);
    assert_true(title_len > 0);
}

void gwt_avoid_window_edge(int window_s, int margin_s)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double t = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    double into = t - (double)((long long)(t / window_s) * window_s);
    double left = window_s - into;
    if (left < margin_s) {
        /* Wait for the clock edge (not an event), plus a little slack. */
        useconds_t us = (useconds_t)((left + 0.05) * 1e6);
        usleep(us);
    }
}

/* ---- tracked processes ------------------------------------------------ */

#define MAX_TRACKED 128
static struct gwt_proc *tracked[MAX_TRACKED]; /* NULL: untracked (indices stay put: marks) */
static int ntracked;

void gwt_untrack(const struct gwt_proc *p)
{
    for (int i = 0; i < ntracked; i++)
        if (tracked[i] == p)
            tracked[i] = NULL;
}

void gwt_track(struct gwt_proc *p)
{
    for (int i = 0; i < ntracked; i++) {
        if (tracked[i] == p)
            return;
    }
    if (ntracked < MAX_TRACKED)
        tracked[ntracked++] = p;
}

int gwt_tracked_count(void)
{
    return ntracked;
}

int gwt_stop_tracked(void)
{
    return gwt_stop_tracked_from(0);
}

int gwt_stop_tracked_from(int mark)
{
    int rc = 0;
    if (mark < 0 || mark > ntracked)
        mark = 0;
    for (int i = mark; i < ntracked; i++) {
        struct gwt_proc *p = tracked[i];
        if (p == NULL || p->pid <= 0)
            continue;
        if (p->stopped && p->exited) {
            /* The test stopped it itself and checked the result. */
            gwt_proc_cleanup(p);
            continue;
        }
        bool was_running = gwt_proc_alive(p);
        int st = gwt_stop(p, SIGTERM, 5000);
        if (st != 0) {
            fprintf(stderr, "gwtest: %s pid %d ended with %d (%s), expected exit 0\n", p->name,
                    (int)p->pid, st, was_running ? "after SIGTERM" : "before teardown");
            gwt_log_dump(p, 6000);
            rc = -1;
        } else if (getenv("GWT_DUMP_LOGS")) {
            gwt_log_dump(p, 6000);
        }
        gwt_proc_cleanup(p);
    }
    ntracked = mark;
    return rc;
}

int gwt_gateway_for(struct gwt_proc *p, int *port, int backend_port, const char *const env[])
{
    char burl[64];
    snprintf(burl, sizeof(burl), "BACKEND_URL=http://127.0.0.1:%d", backend_port);
    const char *merged[96] = {burl, "WORKER_THREADS=2", "RATE_LIMIT_REQUESTS=100000"};
    size_t k = 3;
    for (size_t i = 0; env && env[i] && k < 95; i++)
        merged[k++] = env[i];
    merged[k] = NULL;
    int rc = gwt_gateway_start(p, port, merged);
    if (p->pid > 0)
        gwt_track(p);
    return rc;
}

int gwt_listen_loopback(int flags, int backlog, int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | flags, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, backlog), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    *port = ntohs(a.sin_port);
    return fd;
}
