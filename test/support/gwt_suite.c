/*
 * Scaffolding shared by the integration test files (see gwt_suite.h):
 * teardown helpers and common cmocka assertions on the gateway and
 * backend_app, so each test file does not redefine them.
 */
#include "gwt_suite.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

struct gwt_fixture gwt_fx;

/* Tracked processes below this index belong to the group (see
 * gwt_stop_tracked_from). */
static int group_tracked;

int gwt_suite_setup(unsigned what)
{
    if (gwt_backend_start(&gwt_fx.backend, &gwt_fx.bport, NULL) != 0)
        return -1;
    if ((what & GWT_FX_GATEWAY) &&
        gwt_gateway_for(&gwt_fx.gw, &gwt_fx.gport, gwt_fx.bport, NULL) != 0)
        return -1;
    if ((what & (GWT_FX_FAKE | GWT_FX_FAKE_GATEWAY)) && gwt_fault_start(&gwt_fx.fake) != 0)
        return -1;
    if (what & GWT_FX_FAKE_GATEWAY) {
        const char *env[] = {"WORKER_THREADS=1", "UPSTREAM_TIMEOUT_MS=3000", NULL};
        if (gwt_gateway_for(&gwt_fx.gwf, &gwt_fx.fport, gwt_fault_port(gwt_fx.fake), env) != 0)
            return -1;
    }
    if (what & GWT_FX_REDIS) {
        if (gwt_redis_start(&gwt_fx.redis, &gwt_fx.rport) != 0)
            return -1;
        snprintf(gwt_fx.redis_url, sizeof(gwt_fx.redis_url), "REDIS_URL=redis://127.0.0.1:%d",
                 gwt_fx.rport);
    }
    group_tracked = gwt_tracked_count();
    return 0;
}

int gwt_suite_setup_backend(void **state)
{
    return gwt_suite_setup(0);
}

int gwt_suite_teardown(void **state)
{
    int rc = gwt_stop_tracked();
    group_tracked = 0;
    gwt_stop_and_cleanup(&gwt_fx.backend);
    gwt_stop_and_cleanup(&gwt_fx.redis);
    gwt_fault_stop(gwt_fx.fake);
    gwt_fx.fake = NULL;
    return rc;
}

int gwt_suite_test_setup(void **state)
{
    if (gwt_fx.rport > 0 && gwt_redis_cmd(gwt_fx.rport, "FLUSHALL") != 0)
        return -1;
    return gwt_backend_reset(gwt_fx.bport) == 0 ? 0 : -1;
}

int gwt_suite_test_teardown(void **state)
{
    return gwt_stop_tracked_from(group_tracked);
}

void gwt_stop_and_cleanup(struct gwt_proc *p)
{
    gwt_stop(p, SIGTERM, 5000);
    gwt_proc_cleanup(p);
}

int gwt_stop_expect_exit0(struct gwt_proc *p)
{
    if (p->pid <= 0)
        return 0;
    int rc = 0;
    int st = gwt_stop(p, SIGTERM, 5000);
    if (st != 0) {
        fprintf(stderr, "per-test %s ended with %d, expected 0\n", p->name, st);
        gwt_log_dump(p, 6000);
        rc = -1;
    }
    gwt_proc_cleanup(p);
    return rc;
}

long long gwt_backend_requests(int backend_port)
{
    long long n = -1;
    assert_int_equal(gwt_backend_stats(backend_port, &n, NULL), 0);
    return n;
}

void gwt_must_read(int fd, struct gwt_response *r, bool head, const char *what)
{
    int rc = gwt_read_response(fd, r, head);
    if (rc != 0) {
        fprintf(stderr, "partial head: %s\n", r->raw_head ? r->raw_head : "(none)");
        gwt_response_free(r);
        fail_msg("%s: no complete response (%s)", what, strerror(-rc));
    }
}

void gwt_read_echo(int fd, struct gwt_echo *e, const char *what)
{
    struct gwt_response r;
    gwt_must_read(fd, &r, false, what);
    assert_int_equal(r.status, 200);
    assert_int_equal(gwt_echo_parse(&r, e), 0);
    gwt_response_free(&r);
}

bool gwt_expect_user(int fd, int id, const char *context)
{
    char what[128];
    snprintf(what, sizeof(what), "GET /users/%d%s%s", id, context ? " " : "",
             context ? context : "");
    struct gwt_response r;
    gwt_must_read(fd, &r, false, what);
    assert_int_equal(r.status, 200);
    json_t *j = gwt_json(&r);
    assert_non_null(j);
    assert_int_equal(gwt_json_int(j, "id", -1), id);
    json_decref(j);
    bool closed = r.conn_closed;
    gwt_response_free(&r);
    return closed;
}

void gwt_assert_serves(int port, const char *target)
{
    struct gwt_response r;
    int rc = gwt_get(port, target, &r);
    if (rc != 0 || r.status != 200) {
        int st = r.status;
        gwt_response_free(&r);
        fail_msg("GET %s: rc %d status %d, want 200", target, rc, st);
    }
    gwt_response_free(&r);
}

void gwt_assert_serves_counted(int port, int backend_port, const char *target, const char *context)
{
    long long before = gwt_backend_requests(backend_port);
    struct gwt_response r;
    int rc = gwt_get(port, target, &r);
    if (rc != 0 || r.status != 200) {
        int st = r.status;
        gwt_response_free(&r);
        fail_msg("%s%s%snormal request GET %s failed (rc %d, status %d)", context ? "after \"" : "",
                 context ? context : "", context ? "\": " : "", target, rc, st);
    }
    gwt_response_free(&r);
    assert_int_equal(gwt_backend_requests(backend_port), before + 1);
}

void gwt_assert_stat_becomes(int port, const char *path, const char *field, long long want,
                             int timeout_ms, const char *what)
{
    if (gwt_wait_stat(port, path, field, want, timeout_ms) == 0)
        return;
    struct gwt_response r;
    int rc = gwt_get(port, path, &r);
    char body[1200];
    snprintf(body, sizeof(body), "%s", rc == 0 && r.body ? r.body : "(no reply)");
    gwt_response_free(&r);
    fail_msg("%s%sport %d %s %s did not become %lld within %d ms: %s", what ? what : "",
             what ? ": " : "", port, path, field, want, timeout_ms, body);
}

void gwt_suite_start_gw(const char *const env[])
{
    assert_int_equal(gwt_gateway_for(&gwt_fx.gw, &gwt_fx.gport, gwt_fx.bport, env), 0);
}

void gwt_suite_start_gw2(const char *const env[])
{
    assert_int_equal(gwt_gateway_for(&gwt_fx.gw2, &gwt_fx.gport2, gwt_fx.bport, env), 0);
}

const char *gwt_dead_url(const char *var, const char *scheme)
{
    static char url[96];
    int dead = gwt_free_port();
    assert_true(dead > 0);
    snprintf(url, sizeof(url), "%s=%s://127.0.0.1:%d", var, scheme, dead);
    return url;
}

void gwt_assert_serves_user(int port, int id)
{
    char target[32];
    snprintf(target, sizeof(target), "/users/%d", id);
    struct gwt_response r;
    assert_int_equal(gwt_get(port, target, &r), 0);
    assert_int_equal(r.status, 200);
    json_t *j = gwt_json(&r);
    assert_non_null(j);
    assert_int_equal(gwt_json_int(j, "id", -1), id);
    json_decref(j);
    gwt_response_free(&r);
}

void gwt_suite_script(const struct gwt_fault_step *steps, size_t n)
{
    assert_int_equal(gwt_fault_script(gwt_fx.fake, steps, n), 0);
}

void gwt_print_escaped(const char *what, const char *b, size_t n)
{
    fprintf(stderr, "%s (%zu bytes): \"", what, n);
    for (size_t i = 0; i < n && i < 400; i++) {
        unsigned char c = (unsigned char)b[i];
        if (c == '\r')
            fputs("\\r", stderr);
        else if (c == '\n')
            fputs("\\n", stderr);
        else if (c == '\t')
            fputs("\\t", stderr);
        else if (c < 0x20 || c >= 0x7f)
            fprintf(stderr, "\\x%02x", c);
        else
            fputc(c, stderr);
    }
    fputs(n > 400 ? "...\"\n" : "\"\n", stderr);
}

void gwt_expect_refused(int port, const char *what, const void *bytes, size_t len, int status,
                        unsigned flags)
{
    bool counted = flags & GWT_REFUSED_COUNTED;
    long long before = counted ? gwt_backend_requests(gwt_fx.bport) : 0;
    int fd = gwt_connect(port);
    assert_true(fd >= 0);
    int sent = gwt_send_all(fd, bytes, len);
    if (!(flags & GWT_REFUSED_MAY_CLOSE))
        assert_int_equal(sent, 0);
    struct gwt_response r;
    int rc = gwt_read_response(fd, &r, false);
    if (rc != 0 || r.status != status) {
        gwt_print_escaped("request", bytes, len);
        fprintf(stderr, "response head: %s\n", r.raw_head ? r.raw_head : "(none)");
        int st = r.status;
        gwt_response_free(&r);
        close(fd);
        fail_msg("\"%s\": expected %d, got %s %d", what, status, rc ? strerror(-rc) : "status",
                 rc ? rc : st);
    }
    gwt_assert_problem(&r, status, NULL);
    gwt_response_free(&r);
    long extra = gwt_fault_bytes_until_eof(fd, 3000);
    close(fd);
    if (extra != 0)
        fail_msg("\"%s\": %s after the %d", what, extra < 0 ? "connection left open" : "more bytes",
                 status);
    if (!counted)
        return;
    gwt_assert_serves_counted(port, gwt_fx.bport, "/users/5", what);
    long long after = gwt_backend_requests(gwt_fx.bport);
    if (after != before + 1) {
        gwt_print_escaped("request", bytes, len);
        fail_msg("\"%s\": %lld request(s) of it reached the backend", what, after - before - 1);
    }
}
