/*
 * Helpers of the admin API's integration tests (see gwt_admin.h).
 */
#include "gwt_admin.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <jansson.h>

#define LISTENING "admin listening on 127.0.0.1:"

/* The string member name of j, or "" (absent or not a string). */
static const char *member(json_t *j, const char *name)
{
    const char *s = json_string_value(json_object_get(j, name));
    return s != NULL ? s : "";
}

int gwt_admin_port_of(struct gwt_proc *p)
{
    char *log = gwt_log_read(p);
    assert_non_null(log);
    const char *at = strstr(log, LISTENING);
    if (at == NULL) {
        gwt_log_dump(p, 4000);
        fail_msg("no admin listening line");
    }
    int port = atoi(at + strlen(LISTENING));
    free(log);
    assert_true(port > 0);
    return port;
}

void gwt_admin_request(int port, const char *method, const char *target, const char *headers,
                       const char *body, struct gwt_response *r)
{
    size_t blen = body ? strlen(body) : 0;
    size_t cap = blen + 1024 + (headers ? strlen(headers) : 0);
    char *raw = malloc(cap);
    assert_non_null(raw);
    snprintf(raw, cap,
             "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%sContent-Length: "
             "%zu\r\n\r\n%s",
             method, target, headers ? headers : "", blen, body ? body : "");
    int rc = gwt_http(port, raw, r);
    free(raw);
    if (rc != 0)
        fail_msg("%s %s on port %d: %s", method, target, port, strerror(-rc));
}

const char *gwt_admin_rules(int n)
{
    static char text[320];
    snprintf(text, sizeof(text),
             "{\"version\":1,\"limits\":[{\"name\":\"api\",\"match\":{\"path_prefix\":\"/users/\"},"
             "\"key\":\"header:X-Client\",\"rates\":[{\"requests\":%d,\"window\":\"1m\"}]}]}",
             n);
    return text;
}

const char *gwt_admin_put_rules(int aport, const char *text, const char *headers, char source[32])
{
    static char version[32];
    struct gwt_response r = {0};
    gwt_admin_request(aport, "PUT", "/rules", headers, text, &r);
    if (r.status != 200)
        fail_msg("PUT /rules: %d %s", r.status, r.body);
    json_t *j = gwt_json(&r);
    assert_non_null(j);
    snprintf(version, sizeof(version), "%s", member(j, "version"));
    if (source != NULL)
        snprintf(source, 32, "%s", member(j, "source"));
    json_decref(j);
    gwt_response_free(&r);
    return version;
}

void gwt_admin_get_rules(int aport, char version[32], char source[32], bool *has_rules)
{
    struct gwt_response r = {0};
    gwt_admin_request(aport, "GET", "/rules", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    json_t *j = gwt_json(&r);
    assert_non_null(j);
    snprintf(version, 32, "%s", member(j, "version"));
    snprintf(source, 32, "%s", member(j, "source"));
    if (has_rules != NULL)
        *has_rules = json_object_get(j, "rules") != NULL;
    json_decref(j);
    gwt_response_free(&r);
}

int gwt_admin_api_get(int port, const char *client, int q, bool *has_policy)
{
    char raw[256];
    snprintf(raw, sizeof(raw),
             "GET /users/1 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Client: %s\r\nConnection: "
             "close\r\n\r\n",
             client);
    struct gwt_response r = {0};
    assert_int_equal(gwt_http(port, raw, &r), 0);
    if (has_policy != NULL) {
        const char *pol = gwt_header(&r, "RateLimit-Policy");
        char want[32];
        snprintf(want, sizeof(want), "\"api\";q=%d;", q);
        *has_policy = pol != NULL && (q == 0 ? strstr(pol, "\"api\"") : strstr(pol, want));
    }
    int status = r.status;
    gwt_response_free(&r);
    return status;
}

void gwt_admin_wait_served(const int *ports, int n, const char *client, long long t0,
                           long fail_after_ms, long ms[])
{
    bool done[64] = {false};
    assert_true(n > 0 && n <= 64);
    for (int left = n; left > 0;) {
        for (int i = 0; i < n; i++) {
            if (done[i])
                continue;
            int st = gwt_admin_api_get(ports[i], client, 0, NULL);
            ms[i] = (long)(gwt_now_ms() - t0);
            if (st == 200) {
                done[i] = true;
                left--;
                continue;
            }
            assert_int_equal(st, 429);
            if (ms[i] > fail_after_ms)
                fail_msg("gateway %d still refuses %s %ld ms after DELETE", i, client, ms[i]);
        }
        struct timespec ts = {0, 5 * 1000000L};
        nanosleep(&ts, NULL);
    }
}
