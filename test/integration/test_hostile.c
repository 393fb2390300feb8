/*
 * Integration tests of what an attacker tries against the gateway and what a
 * sick dependency does to it (issue 18): request-targets that climb out of
 * BACKEND_URL's base path, signals that must not kill the process, and the
 * limits that keep one client from taking what belongs to all. Each test
 * drives the real gateway over raw sockets and checks the backend's side.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "gwt_fault.h"
#include "gwt_suite.h"
#include "gwtest.h"

static struct gwt_fault *fake; /* scripted upstream: shows the forwarded request line */
static struct gwt_proc gw;     /* the gateway under test (tracked, stopped per test) */

static int group_setup(void **state)
{
    (void)state;
    return gwt_fault_start(&fake) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    gwt_fault_stop(fake);
    return 0;
}

static int test_teardown(void **state)
{
    (void)state;
    return gwt_stop_tracked();
}

/* Starts a gateway in front of the fake upstream with BACKEND_URL's base
 * path base plus env (NULL-terminated, may be NULL). */
static void start_gateway_base(struct gwt_proc *p, int *port, const char *base,
                               const char *const env[])
{
    char burl[96];
    snprintf(burl, sizeof(burl), "BACKEND_URL=http://127.0.0.1:%d%s", gwt_fault_port(fake), base);
    const char *merged[32] = {burl};
    size_t k = 1;
    for (size_t i = 0; env && env[i] && k < 31; i++)
        merged[k++] = env[i];
    merged[k] = NULL;
    assert_int_equal(gwt_gateway_for(p, port, 1 /* replaced by BACKEND_URL */, merged), 0);
}

/* Sends "GET <target>" on a fresh connection and returns the status. When
 * forwarded_line is not NULL, it receives the request line the upstream saw
 * (empty when nothing reached it). */
static int get_via(int port, const char *target, char *forwarded_line, size_t cap)
{
    assert_int_equal(gwt_fault_script(fake, NULL, 0), 0);
    int fd = gwt_connect(port);
    assert_true(fd >= 0);
    char req[512];
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", target);
    assert_int_equal(gwt_send_str(fd, req), 0);
    struct gwt_response r;
    if (gwt_read_response(fd, &r, false) != 0)
        fail_msg("GET %s: no response", target);
    int status = r.status;
    gwt_response_free(&r);
    close(fd);
    if (forwarded_line) {
        forwarded_line[0] = '\0';
        if (gwt_fault_requests(fake) > 0) {
            char raw[2048];
            gwt_fault_last_request(fake, raw, sizeof(raw));
            char *eol = strstr(raw, "\r\n");
            if (eol)
                *eol = '\0';
            size_t n = GW_MIN(strlen(raw), cap - 1);
            memcpy(forwarded_line, raw, n);
            forwarded_line[n] = '\0';
        }
    }
    return status;
}

/* Finding 1: no spelling of "../" takes a request outside the base path
 * (RFC 3986 §5.2.4); the ones that stay inside are forwarded normalised. */
static void test_base_path_escape(void **state)
{
    (void)state;
    int port;
    start_gateway_base(&gw, &port, "/api", NULL);

    static const char *const escapes[] = {
        "/../admin",     "/%2e%2e/admin", "/a/../../admin",         "/%2E%2e/admin",
        "/.%2e/admin",   "/..%2fadmin",   "/a/%2e%2e/%2e%2e/admin", "http://t/../admin",
        "/../admin?x=1",
    };
    char line[256];
    for (size_t i = 0; i < GW_ARRAY_LEN(escapes); i++) {
        int status = get_via(port, escapes[i], line, sizeof(line));
        if (status != 400 || line[0] != '\0')
            fail_msg("%s: status %d, upstream saw \"%s\" (want 400, nothing)", escapes[i], status,
                     line);
    }

    static const struct {
        const char *target, *line;
    } inside[] = {
        {"/a/../admin", "GET /api/admin HTTP/1.1"},
        {"/a/%2e%2e/admin?q=/../x", "GET /api/admin?q=/../x HTTP/1.1"},
        {"/./users/./7", "GET /api/users/7 HTTP/1.1"},
        {"/users/..", "GET /api/ HTTP/1.1"},
        {"/...", "GET /api/... HTTP/1.1"},
        {"/users/1", "GET /api/users/1 HTTP/1.1"},
    };
    for (size_t i = 0; i < GW_ARRAY_LEN(inside); i++) {
        int status = get_via(port, inside[i].target, line, sizeof(line));
        if (status != 200 || strcmp(line, inside[i].line) != 0)
            fail_msg("%s: status %d, upstream saw \"%s\", want \"%s\"", inside[i].target, status,
                     line, inside[i].line);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_base_path_escape, test_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
