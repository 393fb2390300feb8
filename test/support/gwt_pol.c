/*
 * Helpers of the rate-limit policy integration tests
 * (test/integration/test_policies.c, test_policy_edges.c): a rules file
 * per test, gateways started on it, requests with the assertions on what
 * SPEC.md §10 says a response carries (RateLimit-Policy, RateLimit,
 * X-RateLimit-*, Retry-After, violated-policies), /stats limits and the
 * rules version. See gwt_pol.h.
 */
#include "gwt_pol.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "gwt_dist.h"
#include "gwt_obs.h"
#include "gwt_suite.h"

/* The gateways of the current test (tracked: the per-test teardown stops
 * them) and the rules file they read. */
struct gwt_proc gwt_pol_gws[GWT_POL_GATEWAYS];
int gwt_pol_gp[GWT_POL_GATEWAYS];
static char rules_dir[64];
char gwt_pol_rules_path[GWT_POL_PATH_MAX];

void gwt_pol_pause_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Wall clock in ms (the in-process store's clock is the same one). */
long long gwt_pol_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int gwt_pol_test_setup(void **state)
{
    rules_dir[0] = '\0';
    gwt_pol_rules_path[0] = '\0';
    return gwt_suite_test_setup(state);
}

int gwt_pol_test_teardown(void **state)
{
    int rc = gwt_suite_test_teardown(state);
    if (rules_dir[0] != '\0' && gwt_obs_rm_rf(rules_dir) != 0)
        rc = -1;
    rules_dir[0] = '\0';
    return rc;
}

/* Writes text to the test's rules file (in place, as an editor does). */
void gwt_pol_write_rules(const char *text)
{
    if (rules_dir[0] == '\0')
        gwt_pol_write_rules_as("rules.yaml", text);
    else
        assert_int_equal(gwt_obs_write_file(gwt_pol_rules_path, text, strlen(text)), 0);
}

void gwt_pol_write_rules_as(const char *name, const char *text)
{
    if (rules_dir[0] == '\0') {
        snprintf(rules_dir, sizeof(rules_dir), "/tmp/gw-policies-XXXXXX");
        assert_non_null(mkdtemp(rules_dir));
    }
    int n = snprintf(gwt_pol_rules_path, sizeof(gwt_pol_rules_path), "%s/%s", rules_dir, name);
    assert_true(n > 0 && (size_t)n < sizeof(gwt_pol_rules_path));
    assert_int_equal(gwt_obs_write_file(gwt_pol_rules_path, text, strlen(text)), 0);
}

/* Starts gateway i on the test's rules file (written first when text is
 * not NULL) with extra environment (NULL-terminated, may be NULL); waits
 * for the reloader's watch line. Returns its port. */
int gwt_pol_start(int i, const char *text, const char *const extra[])
{
    if (text != NULL)
        gwt_pol_write_rules(text);
    char var[200];
    snprintf(var, sizeof(var), "RATE_LIMIT_RULES_FILE=%s", gwt_pol_rules_path);
    const char *env[24] = {var, "LOG_LEVEL=info"};
    size_t k = 2;
    for (size_t j = 0; extra != NULL && extra[j] != NULL && k < 23; j++)
        env[k++] = extra[j];
    env[k] = NULL;
    int rc = gwt_gateway_for(&gwt_pol_gws[i], &gwt_pol_gp[i], gwt_fx.bport, env);
    if (rc != 0) {
        gwt_log_dump(&gwt_pol_gws[i], 4000);
        fail_msg("gateway %d did not start: %d", i, rc);
    }
    if (gwt_wait_log(&gwt_pol_gws[i], "watching RATE_LIMIT_RULES_FILE", 5000, NULL, 0) != 0) {
        gwt_log_dump(&gwt_pol_gws[i], 4000);
        fail_msg("gateway %d: no watch line for %s", i, gwt_pol_rules_path);
    }
    return gwt_pol_gp[i];
}

/* ---- requests and what the answers carry --------------------------------- */

/* One request on its own connection: method target, extra header lines
 * (each ending CRLF, may be NULL); a body-less POST/PUT says
 * Content-Length: 0. Fails the test when no response came. */
void gwt_pol_send(int port, const char *method, const char *target, const char *extra,
                  struct gwt_response *r)
{
    bool cl = strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0;
    size_t cap = strlen(method) + strlen(target) + (extra != NULL ? strlen(extra) : 0) + 128;
    char *raw = malloc(cap);
    assert_non_null(raw);
    snprintf(raw, cap, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%sConnection: close\r\n\r\n", method,
             target, extra != NULL ? extra : "", cl ? "Content-Length: 0\r\n" : "");
    int rc = gwt_http(port, raw, r);
    free(raw);
    if (rc != 0)
        fail_msg("%s %s on port %d: no response (%d)", method, target, port, rc);
}

int gwt_pol_status(int port, const char *method, const char *target, const char *extra)
{
    struct gwt_response r;
    gwt_pol_send(port, method, target, extra, &r);
    int status = r.status;
    gwt_response_free(&r);
    return status;
}

/* "X-Forwarded-For: <addr>\r\n" (+ "X-API-Key: <key>\r\n" when key is not
 * NULL) in a static buffer overwritten by the next call. */
const char *gwt_pol_as_client(const char *addr, const char *key)
{
    static char b[256];
    int n = 0;
    b[0] = '\0';
    if (addr != NULL)
        n = snprintf(b, sizeof(b), "X-Forwarded-For: %s\r\n", addr);
    if (key != NULL)
        snprintf(b + n, sizeof(b) - (size_t)n, "X-API-Key: %s\r\n", key);
    return b;
}

const char *const gwt_pol_rl_headers[] = {
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "RateLimit",
    "RateLimit-Policy",
    "Retry-After",
    NULL,
};

void gwt_pol_expect_no_headers(const struct gwt_response *r, const char *what)
{
    for (int i = 0; gwt_pol_rl_headers[i] != NULL; i++)
        if (gwt_header(r, gwt_pol_rl_headers[i]) != NULL) {
            gwt_print_escaped("response head", r->raw_head, strlen(r->raw_head));
            fail_msg("%s: has %s: %s, want no rate-limit header", what, gwt_pol_rl_headers[i],
                     gwt_header(r, gwt_pol_rl_headers[i]));
        }
}

void gwt_pol_parse_ratelimit(const struct gwt_response *r, struct gwt_pol_rl *f, const char *what)
{
    const char *v = gwt_header(r, "RateLimit");
    if (v == NULL)
        fail_msg("%s: no RateLimit header (status %d)", what, r->status);
    assert_int_equal(gwt_header_count(r, "RateLimit"), 1);
    if (sscanf(v, "\"%79[^\"]\";r=%lld;t=%lld", f->name, &f->r, &f->t) != 3)
        fail_msg("%s: RateLimit \"%s\" is not \"<name>\";r=N;t=N", what, v);
}

/* RateLimit names policy with remaining rem (rem < 0: any), and
 * X-RateLimit-Remaining agrees. */
void gwt_pol_expect_rl(const struct gwt_response *r, const char *policy, long long rem,
                       const char *what)
{
    struct gwt_pol_rl f;
    gwt_pol_parse_ratelimit(r, &f, what);
    if (strcmp(f.name, policy) != 0 || (rem >= 0 && f.r != rem)) {
        gwt_print_escaped("response head", r->raw_head, strlen(r->raw_head));
        fail_msg("%s: RateLimit \"%s\";r=%lld, want \"%s\";r=%lld", what, f.name, f.r, policy, rem);
    }
    long long xr = gwt_dist_header_ll(r, "X-RateLimit-Remaining", -1);
    if (xr != f.r)
        fail_msg("%s: X-RateLimit-Remaining %lld, RateLimit r=%lld", what, xr, f.r);
    assert_true(gwt_dist_header_ll(r, "X-RateLimit-Limit", -1) > 0);
    assert_true(gwt_dist_header_ll(r, "X-RateLimit-Reset", -1) > 0);
    assert_non_null(gwt_header(r, "RateLimit-Policy"));
}

/* A request the limits let through: not 429, not a gateway 5xx; with
 * policy NULL no rate-limit header at all, else RateLimit names policy
 * with remaining rem (rem < 0: any). Returns nothing; frees r. */
void gwt_pol_expect_pass(int port, const char *method, const char *target, const char *extra,
                         const char *policy, long long rem, const char *what)
{
    struct gwt_response r;
    gwt_pol_send(port, method, target, extra, &r);
    if (r.status == 429 || r.status >= 500) {
        gwt_print_escaped("response", r.raw_head, strlen(r.raw_head));
        fail_msg("%s (%s %s): status %d, want it to pass", what, method, target, r.status);
    }
    if (policy == NULL)
        gwt_pol_expect_no_headers(&r, what);
    else
        gwt_pol_expect_rl(&r, policy, rem, what);
    gwt_response_free(&r);
}

/* violated-policies of a 429 body, compact JSON (e.g. ["a","b"]), into out. */
void gwt_pol_violated(const struct gwt_response *r, char *out, size_t cap)
{
    json_t *j = gwt_json(r);
    assert_non_null(j);
    json_t *v = json_object_get(j, "violated-policies");
    char *s = v != NULL ? json_dumps(v, JSON_COMPACT) : NULL;
    snprintf(out, cap, "%s", s != NULL ? s : "(none)");
    free(s);
    json_decref(j);
}

/* A refused request: 429 problem+json quota-exceeded whose
 * violated-policies is violated (compact JSON), RateLimit naming policy
 * with r=0, X-RateLimit-Remaining 0, Retry-After >= 1. Returns
 * Retry-After; *out (may be NULL) gets the response (caller frees). */
long long gwt_pol_expect_429(int port, const char *method, const char *target, const char *extra,
                             const char *violated, const char *policy, const char *what,
                             struct gwt_response *out)
{
    struct gwt_response r;
    gwt_pol_send(port, method, target, extra, &r);
    if (r.status != 429) {
        gwt_print_escaped("response", r.raw_head, strlen(r.raw_head));
        fail_msg("%s (%s %s): status %d, want 429", what, method, target, r.status);
    }
    gwt_assert_problem(&r, 429, GWT_POL_QUOTA_TYPE);
    char got[256];
    gwt_pol_violated(&r, got, sizeof(got));
    if (strcmp(got, violated) != 0)
        fail_msg("%s: violated-policies %s, want %s", what, got, violated);
    gwt_pol_expect_rl(&r, policy, 0, what);
    long long ra = gwt_dist_header_ll(&r, "Retry-After", -1);
    if (ra < 1)
        fail_msg("%s: Retry-After %s", what, gwt_header(&r, "Retry-After"));
    if (out != NULL)
        *out = r;
    else
        gwt_response_free(&r);
    return ra;
}

long long gwt_pol_backend_requests(void)
{
    return gwt_backend_requests(gwt_fx.bport);
}

/* /stats limits.<name>.<outcome>. */
long long gwt_pol_limit_stat(int port, const char *limit, const char *outcome)
{
    char field[160];
    snprintf(field, sizeof(field), "limits.%s.%s", limit, outcome);
    return gwt_stat(port, "/stats", field);
}

void gwt_pol_expect_limit_stats(int port, const char *limit, long long allowed, long long limited,
                                long long shadow_limited)
{
    long long a = gwt_pol_limit_stat(port, limit, "allowed"),
              l = gwt_pol_limit_stat(port, limit, "limited"),
              s = gwt_pol_limit_stat(port, limit, "shadow_limited");
    if (a != allowed || l != limited || s != shadow_limited) {
        struct gwt_response r;
        if (gwt_get(port, "/stats", &r) == 0) {
            fprintf(stderr, "/stats: %s\n", r.body);
            gwt_response_free(&r);
        }
        fail_msg("/stats limits.%s: allowed %lld limited %lld shadow_limited %lld, want %lld %lld "
                 "%lld",
                 limit, a, l, s, allowed, limited, shadow_limited);
    }
}

/* A Unix second boundary of period p after now (the fixed window's end). */
long long gwt_pol_period_end(long long now_s, long long p)
{
    return (now_s / p + 1) * p;
}

void gwt_pol_rules_version(int port, char version[32])
{
    struct gwt_response r;
    assert_int_equal(gwt_get(port, "/stats", &r), 0);
    json_t *j = gwt_json(&r);
    assert_non_null(j);
    const char *v = json_string_value(json_object_get(j, "rules_version"));
    if (v == NULL)
        fail_msg("/stats without rules_version: %s", r.body);
    snprintf(version, 32, "%s", v);
    json_decref(j);
    gwt_response_free(&r);
}

/* Polls /stats until rules_version differs from old; returns the ms it
 * took or fails the test after GWT_POL_APPLY_MS + 1 s. */
long gwt_pol_wait_version(int port, const char *old, char now[32])
{
    long long t0 = gwt_now_ms();
    for (;;) {
        gwt_pol_rules_version(port, now);
        long long ms = gwt_now_ms() - t0;
        if (strcmp(now, old) != 0)
            return (long)ms;
        if (ms > GWT_POL_APPLY_MS + 1000)
            fail_msg("rules_version still %s after %lld ms", old, ms);
        gwt_pol_pause_ms(5);
    }
}

int gwt_pol_group_setup(void **state)
{
    (void)state;
    return gwt_suite_setup(GWT_FX_REDIS);
}
