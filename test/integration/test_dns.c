/*
 * Integration tests of names that follow DNS (SPEC.md §3
 * UPSTREAM_RESOLVE_INTERVAL_MS, src/resolve.c): the real gateway resolves
 * BACKEND_URL's and REDIS_URL's host names through the C library
 * (getaddrinfo, NSS "files") while the test moves a name from 127.0.0.1 to
 * 127.0.0.2, where a second backend_app (or redis-server) listens on the
 * same port.
 *
 * The name lives in a private hosts file: the gateway runs in a mount
 * namespace of its own (unshare -m) where that file is bind-mounted over
 * /etc/hosts and a one-line "hosts: files" over /etc/nsswitch.conf, so its
 * unmodified getaddrinfo reads the test's names and asks no DNS server.
 * This is the path a real deployment takes for Docker's --add-host and
 * Kubernetes' hostAliases (both are /etc/hosts lines); glibc's HOSTALIASES
 * does not serve (it only renames a name before a DNS query, and there is
 * no DNS server here). The file is rewritten in place with records of one
 * fixed length, so the bind-mounted inode stays the same. Where mount
 * namespaces are not available the tests skip and say why.
 *
 * Measured and printed: the time from the hosts-file change to the first
 * request served by the new address, (a) with the old backend still up
 * (the interval path), (b) with it gone (the kick path), (c) from a start
 * before the name existed.
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

#include "gw/resolve.h"
#include "gwt_suite.h"
#include "gwtest.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>

#define APP_NAME   "gwdnsapp"
#define REDIS_NAME "gwdnsredis"
#define RECORD     40 /* bytes of one hosts-file line, padded */
#define INTERVAL   500

static char hosts_path[64], nss_path[64];
static char env_hosts[96], env_nss[96];
static const char *wrapper[12];
static bool ns_ok;
/* The processes of the running test (tracked: static storage). */
static struct gwt_proc procs[5];

static struct gwt_proc *procs_reset(void)
{
    memset(procs, 0, sizeof(procs));
    return procs;
}

/* ---- the private hosts file ---------------------------------------------- */

/* One fixed-length line: "<addr> <name>" padded with spaces, or a comment
 * when addr is NULL (the name does not resolve). */
static void record(char out[RECORD], const char *addr, const char *name)
{
    char line[RECORD + 1];
    if (addr != NULL)
        snprintf(line, sizeof(line), "%s %s", addr, name);
    else
        snprintf(line, sizeof(line), "# no %s", name);
    size_t n = strlen(line);
    memset(line + n, ' ', RECORD - 1 - n);
    line[RECORD - 1] = '\n';
    memcpy(out, line, RECORD);
}

/* Rewrites the hosts file in place (same inode, same length): app's and
 * Redis's addresses, NULL for a name that does not resolve. */
static void hosts_set(const char *app, const char *redis)
{
    char buf[2 * RECORD];
    record(buf, app, APP_NAME);
    record(buf + RECORD, redis, REDIS_NAME);
    int fd = open(hosts_path, O_WRONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
    close(fd);
}

/* Two addresses for the app's name (the Redis line holds the second). */
static void hosts_set_app2(const char *first, const char *second)
{
    char buf[2 * RECORD];
    record(buf, first, APP_NAME);
    record(buf + RECORD, second, APP_NAME);
    int fd = open(hosts_path, O_WRONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
    close(fd);
}

static void write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(hosts_path, sizeof(hosts_path), "/tmp/gwt-dns-hosts-XXXXXX");
    snprintf(nss_path, sizeof(nss_path), "/tmp/gwt-dns-nss-XXXXXX");
    int h = mkstemp(hosts_path), n = mkstemp(nss_path);
    if (h < 0 || n < 0)
        return -1;
    close(h);
    close(n);
    write_file(nss_path, "hosts: files\n");
    char buf[2 * RECORD];
    record(buf, NULL, APP_NAME);
    record(buf + RECORD, NULL, REDIS_NAME);
    int fd = open(hosts_path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
        return -1;
    close(fd);
    snprintf(env_hosts, sizeof(env_hosts), "GWT_DNS_HOSTS=%s", hosts_path);
    snprintf(env_nss, sizeof(env_nss), "GWT_DNS_NSS=%s", nss_path);

    /* The wrapper execs the gateway ($0) in its own mount namespace; as
     * non-root, in a user namespace of its own too (-r). */
    size_t k = 0;
    wrapper[k++] = "unshare";
    if (geteuid() != 0)
        wrapper[k++] = "-r";
    wrapper[k++] = "-m";
    wrapper[k++] = "--propagation";
    wrapper[k++] = "private";
    wrapper[k++] = "sh";
    wrapper[k++] = "-c";
    wrapper[k++] = "mount --bind \"$GWT_DNS_HOSTS\" /etc/hosts && "
                   "mount --bind \"$GWT_DNS_NSS\" /etc/nsswitch.conf && exec \"$0\" \"$@\"";
    wrapper[k] = NULL;

    /* Can this machine do it? The same wrapper around getent. */
    hosts_set("127.0.0.1", NULL);
    const char *probe[16];
    size_t p = 0;
    for (; wrapper[p]; p++)
        probe[p] = wrapper[p];
    probe[p++] = "getent";
    probe[p++] = "hosts";
    probe[p++] = APP_NAME;
    probe[p] = NULL;
    const char *env[] = {env_hosts, env_nss, NULL};
    char *out = NULL, *err = NULL;
    int rc = gwt_run(probe, env, 10000, &out, &err);
    ns_ok = rc == 0 && out != NULL && strstr(out, "127.0.0.1") != NULL;
    if (!ns_ok)
        fprintf(stderr,
                "test_dns: a private /etc/hosts needs a mount namespace (unshare -m, as root or "
                "with unprivileged user namespaces); here it failed (exit %d: %s): the tests "
                "skip\n",
                rc, err ? err : "");
    free(out);
    free(err);
    hosts_set(NULL, NULL);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    int rc = gwt_stop_tracked();
    unlink(hosts_path);
    unlink(nss_path);
    return rc;
}

static int test_teardown(void **state)
{
    (void)state;
    return gwt_stop_tracked();
}

/* ---- helpers ------------------------------------------------------------- */

static void need_ns(void)
{
    if (!ns_ok) {
        fprintf(stderr, "no mount namespace for a private /etc/hosts: skipped\n");
        skip();
    }
}

/* Starts the gateway in its namespace with env (plus the test's file
 * paths), tracked. */
static void start_gateway(struct gwt_proc *gw, int *port, const char *const env[])
{
    const char *merged[32];
    size_t k = 0;
    merged[k++] = "WORKER_THREADS=2";
    merged[k++] = "RATE_LIMIT_REQUESTS=100000";
    merged[k++] = env_hosts;
    merged[k++] = env_nss;
    for (size_t i = 0; env[i] && k < 31; i++)
        merged[k++] = env[i];
    merged[k] = NULL;
    assert_int_equal(gwt_gateway_start_wrapped(gw, port, wrapper, merged), 0);
    gwt_track(gw);
}

/* backend_app on host:port (port 0: the kernel picks), tracked. */
static int start_backend(struct gwt_proc *p, const char *host, int port)
{
    char h[64], pt[32];
    snprintf(h, sizeof(h), "BACKEND_HOST=%s", host);
    snprintf(pt, sizeof(pt), "BACKEND_PORT=%d", port);
    const char *env[] = {h, pt, NULL};
    int got = 0;
    assert_int_equal(gwt_backend_start(p, &got, env), 0);
    gwt_track(p);
    return got;
}

/* Requests backend_app at ip:port has served (its GET /stats "requests"),
 * or -1. */
static long long served_at(const char *ip, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    long long n = -1;
    struct gwt_response r = {0};
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        gwt_send_str(fd, "GET /stats HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n") == 0 &&
        gwt_read_response(fd, &r, false) == 0 && r.status == 200) {
        json_t *j = gwt_json(&r);
        n = gwt_json_int(j, "requests", -1);
        json_decref(j);
    }
    gwt_response_free(&r);
    close(fd);
    return n;
}

static int get_status(int port, const char *target)
{
    struct gwt_response r = {0};
    int rc = gwt_get(port, target, &r);
    int status = rc == 0 ? r.status : rc;
    gwt_response_free(&r);
    return status;
}

/* GET /health: its "backend" or "redis" field (copied into out). */
static int health_field(int port, const char *field, char *out, size_t cap)
{
    struct gwt_response r = {0};
    int rc = gwt_get(port, "/health", &r);
    int status = rc == 0 ? r.status : rc;
    out[0] = '\0';
    json_t *j = rc == 0 ? gwt_json(&r) : NULL;
    const char *v = j ? json_string_value(json_object_get(j, field)) : NULL;
    snprintf(out, cap, "%s", v ? v : "");
    json_decref(j);
    gwt_response_free(&r);
    return status;
}

/* Polls GET /health until field equals want, at most timeout_ms. Returns
 * the ms it took, or -1. */
static long long wait_health(int port, const char *field, const char *want, int timeout_ms)
{
    long long t0 = gwt_now_ms();
    char v[32];
    while (gwt_now_ms() - t0 <= timeout_ms) {
        health_field(port, field, v, sizeof(v));
        if (strcmp(v, want) == 0)
            return gwt_now_ms() - t0;
        usleep(10 * 1000);
    }
    return -1;
}

/* Sends GET /users/1 through the gateway every ~5 ms until backend_app at
 * ip:port has served more than base requests, at most timeout_ms. Returns
 * the ms from t0 to the first such request answered, or -1; *bad counts
 * answers other than 200 meanwhile. */
static long long wait_served(int gport, const char *ip, int bport, long long base, long long t0,
                             int timeout_ms, int *bad)
{
    while (gwt_now_ms() - t0 <= timeout_ms) {
        int st = get_status(gport, "/users/1");
        long long answered = gwt_now_ms();
        if (st != 200)
            (*bad)++;
        if (served_at(ip, bport) > base)
            return answered - t0;
        usleep(5 * 1000);
    }
    return -1;
}

/* ---- tests --------------------------------------------------------------- */

/* The name moves to 127.0.0.2 while the old backend keeps serving: the
 * gateway follows within the interval (plus slack), closes its pooled
 * connections to the old address, and sends nothing there afterwards. */
static void test_backend_follows_name_change(void **state)
{
    (void)state;
    need_ns();
    struct gwt_proc *a = procs_reset(), *b = a + 1, *gw = a + 2;
    int port = start_backend(a, "127.0.0.1", 0);
    assert_int_equal(start_backend(b, "127.0.0.2", port), port);
    hosts_set("127.0.0.1", NULL);
    char url[96], interval[64];
    snprintf(url, sizeof(url), "BACKEND_URL=http://" APP_NAME ":%d", port);
    snprintf(interval, sizeof(interval), "UPSTREAM_RESOLVE_INTERVAL_MS=%d", INTERVAL);
    int gport = 0;
    const char *env[] = {url, interval, NULL};
    start_gateway(gw, &gport, env);
    assert_int_equal(
        gwt_wait_log(gw, "resolve: BACKEND_URL host " APP_NAME " is 127.0.0.1", 2000, NULL, 0), 0);
    for (int i = 0; i < 10; i++)
        assert_int_equal(get_status(gport, "/users/1"), 200);
    assert_int_equal(served_at("127.0.0.1", port), 10);
    assert_int_equal(served_at("127.0.0.2", port), 0);

    hosts_set("127.0.0.2", NULL);
    long long t0 = gwt_now_ms();
    int bad = 0;
    long long took = wait_served(gport, "127.0.0.2", port, 0, t0, INTERVAL + 3000, &bad);
    assert_true(took >= 0);
    print_message("old backend up, interval %d ms: traffic followed the name after %lld ms "
                  "(%d failed requests)\n",
                  INTERVAL, took, bad);
    assert_int_equal(bad, 0); /* the old address served until the switch */
    assert_true(took <= INTERVAL + 1000);
    assert_int_equal(
        gwt_wait_log(gw, "host " APP_NAME " changed: 127.0.0.1 -> 127.0.0.2", 1000, NULL, 0), 0);
    /* Afterwards nothing goes to the old address, pooled connections
     * included. */
    long long old = served_at("127.0.0.1", port), fresh = served_at("127.0.0.2", port);
    for (int i = 0; i < 20; i++)
        assert_int_equal(get_status(gport, "/users/1"), 200);
    assert_int_equal(served_at("127.0.0.1", port), old);
    assert_int_equal(served_at("127.0.0.2", port), fresh + 20);
}

/* The name moves and the old backend goes away (a recreated container):
 * the first failed connect kicks the resolver, so traffic follows long
 * before the interval (an hour here). */
static void test_failed_connect_kicks_resolution(void **state)
{
    (void)state;
    need_ns();
    struct gwt_proc *a = procs_reset(), *b = a + 1, *gw = a + 2;
    int port = start_backend(a, "127.0.0.1", 0);
    assert_int_equal(start_backend(b, "127.0.0.2", port), port);
    hosts_set("127.0.0.1", NULL);
    char url[96];
    snprintf(url, sizeof(url), "BACKEND_URL=http://" APP_NAME ":%d", port);
    int gport = 0;
    const char *env[] = {url, "UPSTREAM_RESOLVE_INTERVAL_MS=3600000", NULL};
    start_gateway(gw, &gport, env);
    /* Traffic for longer than GW_RESOLVE_KICK_MIN_MS since the start-up
     * lookup, so the kick below is not held back by its rate limit: the
     * common case, a backend that moves long after the last lookup. */
    long long started = gwt_now_ms();
    while (gwt_now_ms() - started < GW_RESOLVE_KICK_MIN_MS + 100)
        assert_int_equal(get_status(gport, "/users/1"), 200);

    hosts_set("127.0.0.2", NULL);
    assert_int_equal(gwt_stop(a, SIGTERM, 5000), 0);
    long long t0 = gwt_now_ms();
    int bad = 0;
    long long took = wait_served(gport, "127.0.0.2", port, 0, t0, 3000, &bad);
    assert_true(took >= 0);
    print_message("old backend gone, interval 1 h: traffic followed the name after %lld ms "
                  "(%d requests answered 502 meanwhile)\n",
                  took, bad);
    assert_true(took <= 1000);
    assert_true(bad <= 5); /* refused connects to the old address until the lookup */
    assert_int_equal(get_status(gport, "/users/1"), 200);
}

/* A start before the name exists (a compose or pod start-up race) is not
 * fatal: 502 and backend "disconnected" until it resolves, then service. */
static void test_start_before_name_exists(void **state)
{
    (void)state;
    need_ns();
    struct gwt_proc *a = procs_reset(), *gw = a + 2;
    int port = start_backend(a, "127.0.0.1", 0);
    hosts_set(NULL, NULL);
    char url[96];
    snprintf(url, sizeof(url), "BACKEND_URL=http://" APP_NAME ":%d", port);
    int gport = 0;
    const char *env[] = {url, NULL};
    start_gateway(gw, &gport, env);
    assert_int_equal(gwt_wait_log(gw, "host " APP_NAME " does not resolve", 1000, NULL, 0), 0);
    struct gwt_response r = {0};
    assert_int_equal(gwt_get(gport, "/users/1", &r), 0);
    gwt_assert_problem(&r, 502, NULL);
    gwt_response_free(&r);
    char v[32];
    assert_int_equal(health_field(gport, "backend", v, sizeof(v)), 503);
    assert_string_equal(v, "disconnected");
    assert_int_equal(served_at("127.0.0.1", port), 0);

    hosts_set("127.0.0.1", NULL);
    long long t0 = gwt_now_ms();
    int bad = 0;
    long long took = wait_served(gport, "127.0.0.1", port, 0, t0, 3000, &bad);
    assert_true(took >= 0);
    print_message("started unresolved: served %lld ms after the name appeared (%d answered 502 "
                  "meanwhile)\n",
                  took, bad);
    assert_true(wait_health(gport, "backend", "connected", 2000) >= 0);
    assert_true(gwt_proc_alive(gw));
}

/* A name with two addresses, one of them dead (nothing listens on
 * 127.0.0.3): every request is served, by the live one, whatever order
 * getaddrinfo gives them in; with no pooling every request connects anew. */
static void test_dead_address_of_a_name_is_skipped(void **state)
{
    (void)state;
    need_ns();
    struct gwt_proc *a = procs_reset(), *b = a + 1, *gw = a + 2;
    int port = start_backend(a, "127.0.0.1", 0); /* only to have a port */
    assert_int_equal(start_backend(b, "127.0.0.2", port), port);
    hosts_set_app2("127.0.0.3", "127.0.0.2");
    char url[96];
    snprintf(url, sizeof(url), "BACKEND_URL=http://" APP_NAME ":%d", port);
    int gport = 0;
    const char *env[] = {url, "UPSTREAM_KEEPALIVE=0", NULL};
    start_gateway(gw, &gport, env);
    char line[256];
    assert_int_equal(gwt_wait_log(gw, "host " APP_NAME " is ", 2000, line, sizeof(line)), 0);
    assert_non_null(strstr(line, "127.0.0.3"));
    assert_non_null(strstr(line, "127.0.0.2"));
    for (int i = 0; i < 20; i++)
        assert_int_equal(get_status(gport, "/users/1"), 200);
    assert_int_equal(served_at("127.0.0.2", port), 20);
    assert_int_equal(served_at("127.0.0.1", port), 0);
    assert_true(wait_health(gport, "backend", "connected", 2000) >= 0);
}

/* Redis by name: a start before the name exists degrades (redis
 * "disconnected", requests decided by the failure mode) without blocking
 * a worker on DNS; once the name resolves the workers connect; when it
 * moves to another Redis and the old one stops, they follow. */
static void test_redis_follows_name(void **state)
{
    (void)state;
    need_ns();
    struct gwt_proc *a = procs_reset(), *gw = a + 2, *r1 = a + 3, *r2 = a + 4;
    int port = start_backend(a, "127.0.0.1", 0);
    int rport = 0;
    assert_int_equal(gwt_redis_start(r1, &rport), 0);
    gwt_track(r1);
    hosts_set(NULL, NULL);
    char url[96], rurl[96];
    snprintf(url, sizeof(url), "BACKEND_URL=http://127.0.0.1:%d", port);
    snprintf(rurl, sizeof(rurl), "REDIS_URL=redis://" REDIS_NAME ":%d", rport);
    int gport = 0;
    const char *env[] = {url, rurl, "UPSTREAM_RESOLVE_INTERVAL_MS=500", "WORKER_THREADS=1", NULL};
    start_gateway(gw, &gport, env);
    char v[32];
    assert_int_equal(health_field(gport, "redis", v, sizeof(v)), 503);
    assert_string_equal(v, "disconnected");
    assert_int_equal(get_status(gport, "/users/1"), 200); /* fail open */

    hosts_set(NULL, "127.0.0.1");
    long long took = wait_health(gport, "redis", "connected", 10000);
    assert_true(took >= 0);
    print_message("redis: connected %lld ms after its name appeared\n", took);
    char **keys = NULL;
    long long t0 = gwt_now_ms();
    int n = 0;
    while (n <= 0 && gwt_now_ms() - t0 < 10000) {
        assert_int_equal(get_status(gport, "/users/1"), 200);
        n = gwt_redis_keys(rport, "rl:*", &keys);
        gwt_strv_free(keys, n > 0 ? n : 0);
        keys = NULL;
        usleep(20 * 1000);
    }
    assert_true(n > 0); /* the limiter counts in Redis reached by name */

    /* A second redis-server on 127.0.0.2, same port; the name moves and the
     * first one stops. */
    char portarg[16];
    snprintf(portarg, sizeof(portarg), "%d", rport);
    const char *argv2[] = {"redis-server", "--port", portarg,        "--bind", "127.0.0.2",
                           "--save",       "",       "--appendonly", "no",     NULL};
    assert_int_equal(gwt_spawn(r2, argv2, NULL), 0);
    gwt_track(r2);
    assert_int_equal(gwt_wait_log(r2, "Ready to accept connections", 10000, NULL, 0), 0);
    hosts_set(NULL, "127.0.0.2");
    assert_int_equal(gwt_stop(r1, SIGTERM, 5000), 0);
    t0 = gwt_now_ms();
    bool moved = false;
    while (!moved && gwt_now_ms() - t0 < 15000) {
        assert_int_equal(get_status(gport, "/users/1"), 200);
        const char *cli[] = {"redis-cli", "-h",        "127.0.0.2", "-p", portarg,
                             "--scan",    "--pattern", "rl:*",      NULL};
        char *out = NULL;
        if (gwt_run(cli, NULL, 5000, &out, NULL) == 0 && out != NULL && out[0] != '\0')
            moved = true;
        free(out);
        if (!moved)
            usleep(50 * 1000);
    }
    assert_true(moved);
    print_message("redis: counting on the new address %lld ms after the move\n", gwt_now_ms() - t0);
    assert_int_equal(wait_health(gport, "redis", "connected", 5000) >= 0, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_backend_follows_name_change, test_teardown),
        cmocka_unit_test_teardown(test_failed_connect_kicks_resolution, test_teardown),
        cmocka_unit_test_teardown(test_start_before_name_exists, test_teardown),
        cmocka_unit_test_teardown(test_dead_address_of_a_name_is_skipped, test_teardown),
        cmocka_unit_test_teardown(test_redis_follows_name, test_teardown),
    };
    return cmocka_run_group_tests_name("dns", tests, group_setup, group_teardown);
}
