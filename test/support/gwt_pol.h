/*
 * Helpers of the rate-limit policy integration tests
 * (test/integration/test_policies.c and test_policy_edges.c, SPEC.md §10):
 * each test writes its own rules file (a temporary directory removed by
 * the per-test teardown) and starts up to GWT_POL_GATEWAYS gateways on
 * it in front of the group's backend_app; requests on their own
 * connections; cmocka assertions on what a response must carry
 * (RateLimit-Policy, RateLimit, X-RateLimit-*, Retry-After, the 429
 * problem body's violated-policies), /stats "limits" and rules_version.
 * Every assertion fails the current test; nothing here is thread-safe
 * (one test thread).
 */
#ifndef GWT_POL_H
#define GWT_POL_H

#include <stdbool.h>

#include "gwtest.h"

#define GWT_POL_QUOTA_TYPE "https://iana.org/assignments/http-problem-types#quota-exceeded"
#define GWT_POL_PREFIX     "rl" /* RATE_LIMIT_KEY_PREFIX's default */
#define GWT_POL_APPLY_MS   2000 /* SPEC §10: a changed file applies within 2 s */
#define GWT_POL_GATEWAYS   4    /* gateways one test may start */
#define GWT_POL_PATH_MAX   160

/* The gateways of the current test (gwt_pol_start) and their ports;
 * tracked, so the per-test teardown stops them. */
extern struct gwt_proc gwt_pol_gws[GWT_POL_GATEWAYS];
extern int gwt_pol_gp[GWT_POL_GATEWAYS];
/* The current test's rules file ("" until gwt_pol_write_rules). */
extern char gwt_pol_rules_path[GWT_POL_PATH_MAX];

/* Every rate-limit response header of SPEC §5 (NULL-terminated). */
extern const char *const gwt_pol_rl_headers[];

/* cmocka group setup: backend_app and redis-server (GWT_FX_REDIS). */
int gwt_pol_group_setup(void **state);
/* Per-test setup and teardown: gwt_suite_test_setup / _teardown, and the
 * teardown removes the test's rules directory. Return 0 or -1. */
int gwt_pol_test_setup(void **state);
int gwt_pol_test_teardown(void **state);
#define GWT_POL_TEST(f)                                                                            \
    cmocka_unit_test_setup_teardown(f, gwt_pol_test_setup, gwt_pol_test_teardown)

/* Sleeps ms milliseconds (between polls of a bounded wait). */
void gwt_pol_pause_ms(long ms);

/* Wall clock in ms (CLOCK_REALTIME: the in-process store's clock). */
long long gwt_pol_wall_ms(void);

/* The end of the period p (seconds) that Unix second now_s is in: a fixed
 * window's end. */
long long gwt_pol_period_end(long long now_s, long long p);

/* Writes text to the test's rules file (rules.yaml in a fresh temporary
 * directory on the first call), in place as an editor does. */
void gwt_pol_write_rules(const char *text);

/* Makes name (e.g. "rules.json") in the test's directory the rules file
 * and writes text to it; gwt_pol_start then uses it. */
void gwt_pol_write_rules_as(const char *name, const char *text);

/* Starts gateway i (0 .. GWT_POL_GATEWAYS-1) on the test's rules file
 * (written first when text is not NULL) with gwt_gateway_for's defaults,
 * LOG_LEVEL=info and extra (NULL-terminated "K=V", may be NULL); waits for
 * the reloader's watch line. Returns its port (also gwt_pol_gp[i]). */
int gwt_pol_start(int i, const char *text, const char *const extra[]);

/* One request on its own connection: "method target HTTP/1.1" with Host,
 * extra header lines (each ending CRLF, may be NULL; any length),
 * Content-Length: 0 unless GET/HEAD, Connection: close. r gets the
 * response (caller frees); fails the test when none came. */
void gwt_pol_send(int port, const char *method, const char *target, const char *extra,
                  struct gwt_response *r);

/* gwt_pol_send, then frees the response: returns its status code (fails
 * the test when no response came). */
int gwt_pol_status(int port, const char *method, const char *target, const char *extra);

/* "X-Forwarded-For: <addr>\r\n" (addr may be NULL) plus
 * "X-API-Key: <key>\r\n" when key is not NULL, in a static buffer that
 * the next call overwrites. */
const char *gwt_pol_as_client(const char *addr, const char *key);

/* The response carries none of gwt_pol_rl_headers; what names the case. */
void gwt_pol_expect_no_headers(const struct gwt_response *r, const char *what);

/* The RateLimit field: "<name>";r=<remaining>;t=<seconds>. */
struct gwt_pol_rl {
    char name[80];
    long long r, t;
};

/* Parses the one RateLimit field of r into f, or fails the test. */
void gwt_pol_parse_ratelimit(const struct gwt_response *r, struct gwt_pol_rl *f, const char *what);

/* RateLimit names policy with remaining rem (rem < 0: any);
 * X-RateLimit-Remaining agrees; X-RateLimit-Limit, -Reset and
 * RateLimit-Policy are present. */
void gwt_pol_expect_rl(const struct gwt_response *r, const char *policy, long long rem,
                       const char *what);

/* Sends a request the limits must let through (not 429, not 5xx): with
 * policy NULL it carries no rate-limit header, else RateLimit names policy
 * with remaining rem (rem < 0: any). */
void gwt_pol_expect_pass(int port, const char *method, const char *target, const char *extra,
                         const char *policy, long long rem, const char *what);

/* violated-policies of a 429 problem body as compact JSON (["a","b"]), or
 * "(none)", into out (cap bytes). */
void gwt_pol_violated(const struct gwt_response *r, char *out, size_t cap);

/* Sends a request that must be refused: 429 problem+json quota-exceeded,
 * violated-policies equal to violated (compact JSON), RateLimit naming
 * policy with r=0, X-RateLimit-Remaining 0, Retry-After >= 1. Returns
 * Retry-After; *out (may be NULL) gets the response (caller frees). */
long long gwt_pol_expect_429(int port, const char *method, const char *target, const char *extra,
                             const char *violated, const char *policy, const char *what,
                             struct gwt_response *out);

/* backend_app's request count (the group's backend). */
long long gwt_pol_backend_requests(void);

/* /stats limits.<limit>.<outcome> (allowed, limited, shadow_limited,
 * delayed), or GWT_NO_VALUE. */
long long gwt_pol_limit_stat(int port, const char *limit, const char *outcome);

/* /stats limits.<limit> has exactly these counts (the reply is printed
 * when not). */
void gwt_pol_expect_limit_stats(int port, const char *limit, long long allowed, long long limited,
                                long long shadow_limited);

/* /stats rules_version into version (12 hex digits and NUL). */
void gwt_pol_rules_version(int port, char version[32]);

/* Polls /stats until rules_version differs from old (every 5 ms, at most
 * GWT_POL_APPLY_MS + 1 s, else fails the test); now gets the new one.
 * Returns the ms it took. */
long gwt_pol_wait_version(int port, const char *old, char now[32]);

#endif
