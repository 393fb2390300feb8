/*
 * Rate-limit policies from a rules file, enforced by the real gateway in
 * front of backend_app (SPEC.md §10, §5, §5.1; issue 11), watched from
 * outside only: statuses, the rate-limit headers, the 429 problem body,
 * /stats "limits", /metrics gateway_ratelimit_decisions_total, the access
 * log, and (with redis-server) the store keys. Each test writes its own
 * rules file and starts its own gateway(s) (test/support/gwt_pol.h).
 *
 * Covered: a per-path, per-method limit and every spelling of its path;
 * two rates on one limit (a refusal consumes neither; counts survive a
 * restart on Redis); a second limit refusing leaves the first untouched;
 * RateLimit-Policy / RateLimit / X-RateLimit-* / Retry-After /
 * violated-policies and the access log; key global, a composite key and
 * the RATE_LIMIT_KEY default; mode shadow; action allow (and that
 * X-Forwarded-For cannot buy it); no applicable limit; two gateways
 * sharing a rules-file limit through Redis; live reload on both stores;
 * token bucket and sliding window admitted counts; RATE_LIMIT_DRY_RUN and
 * RATE_LIMIT_HEADERS=off with a rules file. The edges (concurrency,
 * windows' edges, shaping, many limits, IPv6, long keys) are in
 * test_policy_edges.c.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "gwt_dist.h"
#include "gwt_obs.h"
#include "gwt_pol.h"
#include "gwt_suite.h"

/* ---- 1. per path and method ---------------------------------------------- */

/* POST /login 2 a minute: the third POST is refused; GET /login and POST
 * /other are not limited by it and carry no rate-limit header; every
 * spelling of the path (//login, /./login, /%6Cogin, /x/../login, a
 * query) is the same path. A PUT limit of 4 shows that each spelling
 * consumes from it. Refused requests never reach the backend. */
static void test_path_and_method(void **state)
{
    (void)state;
    int port = gwt_pol_start(0,
                             "version: 1\n"
                             "limits:\n"
                             "  - name: login\n"
                             "    match: { methods: [POST], path: /login }\n"
                             "    key: ip\n"
                             "    rates: [{ requests: 2, window: 1m }]\n"
                             "  - name: login-put\n"
                             "    match: { methods: [PUT], path: /login }\n"
                             "    rates: [{ requests: 4, window: 1m }]\n",
                             NULL);
    gwt_avoid_window_edge(60, 8);
    long long passed = 0;
    gwt_pol_expect_pass(port, "POST", "/login", NULL, "login", 1, "1st POST /login");
    passed++;
    gwt_pol_expect_pass(port, "GET", "/login", NULL, NULL, 0, "GET /login");
    gwt_pol_expect_pass(port, "POST", "/other", NULL, NULL, 0, "POST /other");
    passed += 2;
    gwt_pol_expect_pass(port, "POST", "/login", NULL, "login", 0, "2nd POST /login");
    passed++;
    gwt_pol_expect_429(port, "POST", "/login", NULL, "[\"login\"]", "login", "3rd POST /login",
                       NULL);
    static const char *const spellings[] = {
        "//login",      "/./login",   "/%6Cogin",        "/x/../login", "/login?a=1",
        "/%6c%6F%67in", "/%2e/login", "/x/%2E%2e/login", "///login",    NULL};
    for (int i = 0; spellings[i] != NULL; i++) {
        char what[64];
        snprintf(what, sizeof(what), "POST %s after the limit", spellings[i]);
        gwt_pol_expect_429(port, "POST", spellings[i], NULL, "[\"login\"]", "login", what, NULL);
    }
    /* The absolute form (RFC 9112 §3.2.2) is the same path, or refused. */
    struct gwt_response r;
    gwt_pol_send(port, "POST", "http://127.0.0.1/login", NULL, &r);
    if (r.status != 429 && r.status != 400) {
        gwt_print_escaped("response", r.raw_head, strlen(r.raw_head));
        fail_msg("POST http://127.0.0.1/login after the limit: status %d, want 429 (or 400)",
                 r.status);
    }
    int absolute_refused = r.status == 429;
    print_message("  absolute-form POST /login after the limit: %d\n", r.status);
    gwt_response_free(&r);
    gwt_pol_send(port, "POST", "/LOGIN", NULL, &r); /* matching is case-sensitive */
    assert_true(r.status != 429);
    gwt_pol_expect_no_headers(&r, "POST /LOGIN");
    gwt_response_free(&r);
    passed++;
    /* Still free: another method, another path. */
    gwt_pol_expect_pass(port, "GET", "/login", NULL, NULL, 0, "GET /login after the limit");
    gwt_pol_expect_pass(port, "POST", "/other", NULL, NULL, 0, "POST /other after the limit");
    gwt_pol_expect_pass(port, "POST", "/login/x", NULL, NULL, 0, "POST /login/x (another path)");
    gwt_pol_expect_pass(port, "POST", "/login/", NULL, NULL, 0, "POST /login/ (another path)");
    passed += 4;
    /* Each spelling consumes from the PUT limit. */
    gwt_pol_expect_pass(port, "PUT", "//login", NULL, "login-put", 3, "PUT //login");
    gwt_pol_expect_pass(port, "PUT", "/./login", NULL, "login-put", 2, "PUT /./login");
    gwt_pol_expect_pass(port, "PUT", "/%6Cogin", NULL, "login-put", 1, "PUT /%6Cogin");
    gwt_pol_expect_pass(port, "PUT", "/a/../login?q=1", NULL, "login-put", 0,
                        "PUT /a/../login?q=1");
    passed += 4;
    gwt_pol_expect_429(port, "PUT", "/login", NULL, "[\"login-put\"]", "login-put",
                       "5th PUT /login", NULL);
    assert_int_equal(gwt_pol_backend_requests(), passed);
    gwt_pol_expect_limit_stats(port, "login", 2, 1 + 9 + absolute_refused, 0);
    gwt_pol_expect_limit_stats(port, "login-put", 4, 1, 0);
}

/* ---- 2. two rates on one limit ------------------------------------------- */

/* Redis store: 3 a minute and 5 an hour, named. Three pass, then the
 * minute refuses; the hour's counter in Redis holds 3 (the refusals
 * consumed nothing), the minute's too. */
static void test_two_rates_redis(void **state)
{
    (void)state;
    const char *extra[] = {gwt_fx.redis_url, NULL};
    int port = gwt_pol_start(0,
                             "version: 1\n"
                             "limits:\n"
                             "  - name: two\n"
                             "    match: { path_prefix: /users/ }\n"
                             "    rates:\n"
                             "      - { requests: 3, window: 1m, name: per-minute }\n"
                             "      - { requests: 5, window: 1h, name: per-hour }\n",
                             extra);
    gwt_avoid_window_edge(60, 8);
    for (int i = 0; i < 3; i++)
        gwt_pol_expect_pass(port, "GET", "/users/1", NULL, "per-minute", 2 - i,
                            "allowed by both rates");
    for (int i = 0; i < 4; i++) {
        struct gwt_response r;
        gwt_pol_expect_429(port, "GET", "/users/1", NULL, "[\"per-minute\"]", "per-minute",
                           "refused by the minute", &r);
        const char *pol = gwt_header(&r, "RateLimit-Policy");
        assert_string_equal(pol, "\"per-minute\";q=3;w=60, \"per-hour\";q=5;w=3600");
        gwt_response_free(&r);
    }
    assert_int_equal(gwt_pol_backend_requests(), 3);

    char base[128], pattern[192];
    gwt_dist_store_key(GWT_POL_PREFIX, "ip:127.0.0.1", base);
    static const char *const pols[] = {"per-minute", "per-hour"};
    for (int p = 0; p < 2; p++) {
        snprintf(pattern, sizeof(pattern), "%s:two:%s:*", base, pols[p]);
        char **keys = NULL;
        int n = gwt_dist_redis_scan(gwt_fx.rport, NULL, 0, pattern, &keys);
        if (n != 1)
            fail_msg("%d keys match %s, want 1", n, pattern);
        long long v = gwt_dist_redis_get(gwt_fx.rport, keys[0]);
        long long ttl = gwt_dist_redis_pttl(gwt_fx.rport, keys[0]);
        char key[256];
        snprintf(key, sizeof(key), "%s", keys[0]);
        gwt_strv_free(keys, n);
        if (v != 3)
            fail_msg("%s = %lld, want 3 (refused requests consume from no rate)", key, v);
        assert_true(ttl > 0 && ttl <= (p == 0 ? 60000 : 3600000));
    }
    /* A restarted gateway keeps the counts (SPEC §10 store keys): still
     * refused by the minute, and the RateLimit-Policy is the same. */
    assert_int_equal(gwt_stop(&gwt_pol_gws[0], SIGTERM, 5000), 0);
    int port2 = gwt_pol_start(1, NULL, extra);
    gwt_pol_expect_429(port2, "GET", "/users/1", NULL, "[\"per-minute\"]", "per-minute",
                       "after a restart", NULL);
    assert_int_equal(gwt_pol_backend_requests(), 3);
}

/* In-process store, seen through the headers only: 2 a second and 4 an
 * hour. Two pass and three are refused within one second; in the next
 * second the hour still has 2 left (the refusals took nothing): two more
 * pass, the last of them with both rates at 0 (ties go to the larger t:
 * the hour), then both refuse and the hour, the longer wait, is named. */
static void test_two_rates_memory(void **state)
{
    (void)state;
    int port = gwt_pol_start(0,
                             "version: 1\n"
                             "limits:\n"
                             "  - name: two\n"
                             "    match: { path_prefix: /users/ }\n"
                             "    rates:\n"
                             "      - { requests: 2, window: 1s, name: per-second }\n"
                             "      - { requests: 4, window: 1h, name: per-hour }\n",
                             NULL);
    gwt_avoid_window_edge(3600, 8);
    /* Start early in a second (a clock edge, waited for at most 1 s). */
    for (int i = 0; i < 200 && gwt_pol_wall_ms() % 1000 > 300; i++)
        gwt_pol_pause_ms(5);
    long long s0 = gwt_pol_wall_ms() / 1000;
    gwt_pol_expect_pass(port, "GET", "/users/1", NULL, "per-second", 1, "1st");
    gwt_pol_expect_pass(port, "GET", "/users/1", NULL, "per-second", 0, "2nd");
    for (int i = 0; i < 3; i++) {
        long long ra = gwt_pol_expect_429(port, "GET", "/users/1", NULL, "[\"per-second\"]",
                                          "per-second", "refused by the second", NULL);
        assert_int_equal(ra, 1);
    }
    if (gwt_pol_wall_ms() / 1000 != s0)
        fail_msg("the first five requests took more than one second: machine too slow");
    while (gwt_pol_wall_ms() / 1000 == s0) /* the next second: a clock edge */
        gwt_pol_pause_ms(5);
    /* The gateway counts in whole ms (the over-limit cache may hold a
     * refusal a fraction of a ms past the edge): 5 ms into the second. */
    while (gwt_pol_wall_ms() % 1000 < 5)
        gwt_pol_pause_ms(1);
    /* per-second r=1, per-hour r=1: a tie, the hour has the larger t. */
    gwt_pol_expect_pass(port, "GET", "/users/1", NULL, "per-hour", 1,
                        "next second: the hour's budget was not consumed by the refusals");
    gwt_pol_expect_pass(port, "GET", "/users/1", NULL, "per-hour", 0, "4th allowed");
    struct gwt_response r;
    long long ra =
        gwt_pol_expect_429(port, "GET", "/users/1", NULL, "[\"per-second\",\"per-hour\"]",
                           "per-hour", "both refuse", &r);
    long long now = gwt_pol_wall_ms() / 1000;
    long long hour_end = gwt_pol_period_end(now, 3600);
    assert_int_equal(gwt_dist_header_ll(&r, "X-RateLimit-Reset", -1), hour_end);
    assert_int_equal(gwt_dist_header_ll(&r, "X-RateLimit-Limit", -1), 4);
    assert_true(ra >= hour_end - now - 1 && ra <= hour_end - now + 1);
    gwt_response_free(&r);
    assert_int_equal(gwt_pol_backend_requests(), 4);
    gwt_pol_expect_limit_stats(port, "two", 4, 4, 0);
}

/* ---- 3. a second limit refusing consumes nothing from the first ---------- */

static void second_limit_case(int port, const char *store)
{
    char what[128];
    snprintf(what, sizeof(what), "%s: /users/1, wide only", store);
    gwt_pol_expect_pass(port, "GET", "/users/1", NULL, "wide", 9, what);
    snprintf(what, sizeof(what), "%s: /users/2, wide and narrow", store);
    gwt_pol_expect_pass(port, "GET", "/users/2", NULL, "narrow", 1, what);
    gwt_pol_expect_pass(port, "GET", "/users/2", NULL, "narrow", 0, what);
    for (int i = 0; i < 3; i++) {
        struct gwt_response r;
        snprintf(what, sizeof(what), "%s: /users/2 refused by narrow", store);
        gwt_pol_expect_429(port, "GET", "/users/2", NULL, "[\"narrow\"]", "narrow", what, &r);
        assert_string_equal(gwt_header(&r, "RateLimit-Policy"),
                            "\"wide\";q=10;w=60, \"narrow\";q=2;w=60");
        gwt_response_free(&r);
    }
    /* wide: 10 - 3 allowed = 7 before this one, 6 after. */
    snprintf(what, sizeof(what), "%s: /users/1 after narrow refused 3 (wide unchanged)", store);
    gwt_pol_expect_pass(port, "GET", "/users/1", NULL, "wide", 6, what);
    /* SPEC §10: each applicable limit counts once per request; wide did
     * not refuse the 3, so it counts them allowed. */
    gwt_pol_expect_limit_stats(port, "wide", 7, 0, 0);
    gwt_pol_expect_limit_stats(port, "narrow", 2, 3, 0);
}

/* Limits A (wide, 10/min on /users/) and B (narrow, 2/min on /users/2): B
 * refusing leaves A's remaining unchanged; in-process store and Redis. */
static void test_second_limit_refusing(void **state)
{
    (void)state;
    static const char rules[] = "version: 1\n"
                                "limits:\n"
                                "  - name: wide\n"
                                "    match: { path_prefix: /users/ }\n"
                                "    rates: [{ requests: 10, window: 1m }]\n"
                                "  - name: narrow\n"
                                "    match: { path: /users/2 }\n"
                                "    rates: [{ requests: 2, window: 1m }]\n";
    const char *redis[] = {gwt_fx.redis_url, NULL};
    int mport = gwt_pol_start(0, rules, NULL);
    int rport = gwt_pol_start(1, NULL, redis);
    gwt_avoid_window_edge(60, 8);
    second_limit_case(mport, "memory");
    second_limit_case(rport, "redis");
    char base[128], key[256];
    gwt_dist_store_key(GWT_POL_PREFIX, "ip:127.0.0.1", base);
    snprintf(key, sizeof(key), "%s:wide:wide:fw:60000:%lld", base, gwt_pol_wall_ms() / 60000);
    assert_int_equal(gwt_dist_redis_get(gwt_fx.rport, key), 4);
    snprintf(key, sizeof(key), "%s:narrow:narrow:fw:60000:%lld", base, gwt_pol_wall_ms() / 60000);
    assert_int_equal(gwt_dist_redis_get(gwt_fx.rport, key), 2);
}

/* ---- 4. the headers ------------------------------------------------------ */

/* RateLimit-Policy lists every rate of every applicable enforce limit in
 * file order (never the shadow one); RateLimit and X-RateLimit-* name the
 * rate nearest to refusing (smallest remaining; ties to the larger t); a
 * 429 names the refusing rate with the longest wait, Retry-After is that
 * wait, violated-policies every refusing rate in file order; the access
 * log line names the policies. */
static void test_headers(void **state)
{
    (void)state;
    int port = gwt_pol_start(0,
                             "version: 1\n"
                             "limits:\n"
                             "  - name: pol-a\n"
                             "    match: { path_prefix: /users/ }\n"
                             "    rates:\n"
                             "      - { requests: 5, window: 1m }\n"
                             "      - { requests: 3, window: 1h }\n"
                             "  - name: quiet\n"
                             "    match: { path_prefix: /users/ }\n"
                             "    mode: shadow\n"
                             "    rates: [{ requests: 1, window: 1m }]\n"
                             "  - name: pol-b\n"
                             "    match: { path_prefix: /users/ }\n"
                             "    rates: [{ requests: 4, window: 1d }]\n"
                             "  - name: tie\n"
                             "    match: { path: /echo }\n"
                             "    rates:\n"
                             "      - { requests: 2, window: 1m }\n"
                             "      - { requests: 2, window: 1d }\n",
                             NULL);
    gwt_avoid_window_edge(60, 8);
    static const char policy_users[] =
        "\"pol-a-1m\";q=5;w=60, \"pol-a-1h\";q=3;w=3600, \"pol-b\";q=4;w=86400";
    for (int i = 0; i < 4; i++) {
        long long before = gwt_pol_wall_ms() / 1000;
        struct gwt_response r;
        gwt_pol_send(port, "GET", "/users/3", NULL, &r);
        long long after = gwt_pol_wall_ms() / 1000;
        long long hour_end = gwt_pol_period_end(after, 3600);
        assert_string_equal(gwt_header(&r, "RateLimit-Policy"), policy_users);
        assert_int_equal(gwt_header_count(&r, "RateLimit-Policy"), 1);
        struct gwt_pol_rl f;
        gwt_pol_parse_ratelimit(&r, &f, "/users/3");
        /* remaining: pol-a-1m 4,3,2; pol-a-1h 2,1,0; pol-b 3,2,1 */
        assert_string_equal(f.name, "pol-a-1h");
        assert_int_equal(f.r, i < 3 ? 2 - i : 0);
        if (f.t < hour_end - after || f.t > hour_end - before)
            fail_msg("request %d: RateLimit t=%lld, want %lld..%lld", i + 1, f.t, hour_end - after,
                     hour_end - before);
        assert_int_equal(gwt_dist_header_ll(&r, "X-RateLimit-Limit", -1), 3);
        assert_int_equal(gwt_dist_header_ll(&r, "X-RateLimit-Remaining", -1), f.r);
        assert_int_equal(gwt_dist_header_ll(&r, "X-RateLimit-Reset", -1), hour_end);
        if (i < 3) {
            assert_int_equal(r.status, 200);
            assert_null(gwt_header(&r, "Retry-After"));
        } else {
            gwt_assert_problem(&r, 429, GWT_POL_QUOTA_TYPE);
            char v[256];
            gwt_pol_violated(&r, v, sizeof(v));
            assert_string_equal(v, "[\"pol-a-1h\"]");
            long long ra = gwt_dist_header_ll(&r, "Retry-After", -1);
            if (ra < hour_end - after || ra > hour_end - before + 1)
                fail_msg("Retry-After %lld, want about %lld", ra, hour_end - after);
        }
        gwt_response_free(&r);
    }

    /* Two rates with equal remaining: the one with the larger t (1d). */
    long long now = gwt_pol_wall_ms() / 1000;
    long long day_end = gwt_pol_period_end(now, 86400);
    bool distinct = day_end - now > 70; /* not the UTC day's last minute */
    for (int i = 0; i < 2; i++) {
        struct gwt_response r;
        gwt_pol_send(port, "GET", "/echo", NULL, &r);
        assert_int_equal(r.status, 200);
        assert_string_equal(gwt_header(&r, "RateLimit-Policy"),
                            "\"tie-1m\";q=2;w=60, \"tie-1d\";q=2;w=86400");
        struct gwt_pol_rl f;
        gwt_pol_parse_ratelimit(&r, &f, "GET /echo");
        assert_int_equal(f.r, 1 - i);
        if (distinct) {
            assert_string_equal(f.name, "tie-1d");
            assert_int_equal(gwt_dist_header_ll(&r, "X-RateLimit-Reset", -1), day_end);
        }
        gwt_response_free(&r);
    }
    struct gwt_response r;
    long long ra = gwt_pol_expect_429(port, "GET", "/echo", NULL, "[\"tie-1m\",\"tie-1d\"]",
                                      distinct ? "tie-1d" : "tie-1m", "both tie rates refuse", &r);
    if (distinct) {
        long long after = gwt_pol_wall_ms() / 1000;
        if (ra < day_end - after || ra > day_end - now + 1)
            fail_msg("Retry-After %lld, want the day's end in about %lld s", ra, day_end - after);
        assert_int_equal(gwt_dist_header_ll(&r, "X-RateLimit-Reset", -1), day_end);
    }
    gwt_response_free(&r);

    /* The access log names the policies of refused requests. */
    if (gwt_wait_log(&gwt_pol_gws[0], "\"policies\":[\"tie-1m\",\"tie-1d\"]", 3000, NULL, 0) != 0 ||
        gwt_wait_log(&gwt_pol_gws[0], "\"policies\":[\"pol-a-1h\"", 3000, NULL, 0) != 0) {
        gwt_log_dump(&gwt_pol_gws[0], 3000);
        fail_msg("no access log line naming the refused policies");
    }
    /* quiet (shadow) would have refused from the 2nd /users/3 on. */
    gwt_pol_expect_limit_stats(port, "quiet", 1, 0, 3);
    gwt_pol_expect_limit_stats(port, "pol-a", 3, 1, 0);
    gwt_pol_expect_limit_stats(port, "pol-b", 4, 0, 0);
}

/* ---- 5. key global and a composite key ----------------------------------- */

static void test_global_and_composite_keys(void **state)
{
    (void)state;
    const char *extra[] = {"TRUSTED_PROXIES=127.0.0.1/32", NULL};
    int port = gwt_pol_start(0,
                             "version: 1\n"
                             "limits:\n"
                             "  - name: everyone\n"
                             "    match: { path_prefix: /users/ }\n"
                             "    key: global\n"
                             "    rates: [{ requests: 3, window: 1m }]\n"
                             "  - name: per-key-ip\n"
                             "    match: { path: /echo }\n"
                             "    key: [header:X-API-Key, ip]\n"
                             "    rates: [{ requests: 2, window: 1m }]\n",
                             extra);
    gwt_avoid_window_edge(60, 8);
    /* global: two (three) clients share one bucket of 3. */
    gwt_pol_expect_pass(port, "GET", "/users/1", gwt_pol_as_client("192.0.2.1", NULL), "everyone",
                        2, "A");
    gwt_pol_expect_pass(port, "GET", "/users/1", gwt_pol_as_client("192.0.2.2", NULL), "everyone",
                        1, "B");
    gwt_pol_expect_pass(port, "GET", "/users/1", gwt_pol_as_client("192.0.2.1", NULL), "everyone",
                        0, "A again");
    gwt_pol_expect_429(port, "GET", "/users/1", gwt_pol_as_client("192.0.2.2", NULL),
                       "[\"everyone\"]", "everyone", "B after 3 in all", NULL);
    gwt_pol_expect_429(port, "GET", "/users/1", gwt_pol_as_client("192.0.2.1", NULL),
                       "[\"everyone\"]", "everyone", "A after 3 in all", NULL);
    gwt_pol_expect_429(port, "GET", "/users/1", gwt_pol_as_client("192.0.2.3", NULL),
                       "[\"everyone\"]", "everyone", "a third client", NULL);

    /* [header:X-API-Key, ip]: one bucket per (key, address). */
    gwt_pol_expect_pass(port, "GET", "/echo", gwt_pol_as_client("192.0.2.1", "k1"), "per-key-ip", 1,
                        "k1 from A");
    gwt_pol_expect_pass(port, "GET", "/echo", gwt_pol_as_client("192.0.2.1", "k1"), "per-key-ip", 0,
                        "k1 from A");
    gwt_pol_expect_429(port, "GET", "/echo", gwt_pol_as_client("192.0.2.1", "k1"),
                       "[\"per-key-ip\"]", "per-key-ip", "k1 from A, 3rd", NULL);
    gwt_pol_expect_pass(port, "GET", "/echo", gwt_pol_as_client("192.0.2.2", "k1"), "per-key-ip", 1,
                        "k1 from B: its own bucket");
    gwt_pol_expect_pass(port, "GET", "/echo", gwt_pol_as_client("192.0.2.1", "k2"), "per-key-ip", 1,
                        "k2 from A: its own bucket");
    gwt_pol_expect_pass(port, "GET", "/echo", gwt_pol_as_client("192.0.2.1", NULL), "per-key-ip", 1,
                        "no key from A: its own bucket");
    gwt_pol_expect_pass(port, "GET", "/echo", gwt_pol_as_client("192.0.2.2", "k1"), "per-key-ip", 0,
                        "k1 from B, 2nd");
    gwt_pol_expect_429(port, "GET", "/echo", gwt_pol_as_client("192.0.2.2", "k1"),
                       "[\"per-key-ip\"]", "per-key-ip", "k1 from B, 3rd", NULL);
    assert_int_equal(gwt_pol_backend_requests(), 3 + 6);
    /* SPEC §6: a rules key naming a header, and two lines of it: 400. */
    int st = gwt_pol_status(port, "GET", "/echo", "X-API-Key: k7\r\nX-API-Key: k8\r\n");
    if (st != 400)
        fail_msg("two X-API-Key lines on a [header:X-API-Key, ip] limit: status %d, want 400", st);
    assert_int_equal(gwt_pol_backend_requests(), 3 + 6);
}

/* ---- 6. shadow ----------------------------------------------------------- */

static void test_shadow(void **state)
{
    (void)state;
    int port = gwt_pol_start(0,
                             "version: 1\n"
                             "limits:\n"
                             "  - name: watch\n"
                             "    match: { path_prefix: /users/ }\n"
                             "    mode: shadow\n"
                             "    rates: [{ requests: 2, window: 1m }]\n"
                             "  - name: visible\n"
                             "    match: { path: /users/9 }\n"
                             "    rates: [{ requests: 100, window: 1m }]\n",
                             NULL);
    gwt_avoid_window_edge(60, 8);
    for (int i = 0; i < 5; i++)
        gwt_pol_expect_pass(port, "GET", "/users/1", NULL, NULL, 0, "shadow only: never refused");
    for (int i = 0; i < 2; i++) {
        struct gwt_response r;
        gwt_pol_send(port, "GET", "/users/9", NULL, &r);
        assert_int_equal(r.status, 200);
        assert_string_equal(gwt_header(&r, "RateLimit-Policy"), "\"visible\";q=100;w=60");
        gwt_pol_expect_rl(&r, "visible", 99 - i, "/users/9: only the enforce limit shows");
        gwt_response_free(&r);
    }
    assert_int_equal(gwt_pol_backend_requests(), 7);
    gwt_pol_expect_limit_stats(port, "watch", 2, 0, 5);
    gwt_pol_expect_limit_stats(port, "visible", 2, 0, 0);
    assert_int_equal(gwt_stat(port, "/stats", "requests_rate_limited"), 0);

    struct gwt_response m;
    assert_int_equal(gwt_get(port, "/metrics", &m), 0);
    char *out = NULL;
    int rc = gwt_promtool_check_metrics(m.body, m.body_len, &out);
    if (rc != 0)
        fail_msg("promtool check metrics exited %d:\n%s", rc, out ? out : "");
    free(out);
    static const struct {
        const char *series;
        double want;
    } want[] = {
        {"gateway_ratelimit_decisions_total{limit=\"watch\",decision=\"shadow_limited\"}", 5},
        {"gateway_ratelimit_decisions_total{limit=\"watch\",decision=\"allowed\"}", 2},
        {"gateway_ratelimit_decisions_total{limit=\"watch\",decision=\"limited\"}", 0},
        {"gateway_ratelimit_decisions_total{limit=\"visible\",decision=\"allowed\"}", 2},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        double v = -1;
        if (gwt_prom_sample(m.body, want[i].series, &v) != 0 || v != want[i].want)
            fail_msg("%s = %g, want %g", want[i].series, v, want[i].want);
    }
    gwt_response_free(&m);
    if (gwt_wait_log(&gwt_pol_gws[0], "\"policies\":[\"watch\"]", 3000, NULL, 0) != 0) {
        gwt_log_dump(&gwt_pol_gws[0], 3000);
        fail_msg("no access log line naming the shadow policy");
    }
}

/* ---- 7. action allow ----------------------------------------------------- */

static void test_allow(void **state)
{
    (void)state;
    const char *extra[] = {"TRUSTED_PROXIES=127.0.0.1/32", NULL};
    int port = gwt_pol_start(0,
                             "version: 1\n"
                             "limits:\n"
                             "  - name: all\n"
                             "    rates: [{ requests: 1, window: 1m }]\n"
                             "  - name: monitoring\n" /* after: allow wins wherever it stands */
                             "    match: { client_cidrs: [10.20.0.0/16] }\n"
                             "    action: allow\n",
                             extra);
    gwt_avoid_window_edge(60, 8);
    for (int i = 0; i < 5; i++)
        gwt_pol_expect_pass(port, "GET", "/users/1", gwt_pol_as_client("10.20.3.4", NULL), NULL, 0,
                            "10.20.3.4 (allow): never limited, no headers");
    gwt_pol_expect_pass(port, "GET", "/users/1", gwt_pol_as_client("10.21.0.1", NULL), "all", 0,
                        "10.21.0.1");
    gwt_pol_expect_429(port, "GET", "/users/1", gwt_pol_as_client("10.21.0.1", NULL), "[\"all\"]",
                       "all", "10.21.0.1, 2nd", NULL);
    gwt_pol_expect_pass(port, "GET", "/echo", gwt_pol_as_client("10.20.255.1", NULL), NULL, 0,
                        "10.20.255.1 (allow)");
    gwt_pol_expect_pass(port, "GET", "/users/1", NULL, "all", 0,
                        "127.0.0.1 (not in the allow list)");
    gwt_pol_expect_429(port, "GET", "/users/1", NULL, "[\"all\"]", "all", "127.0.0.1, 2nd", NULL);
    assert_int_equal(gwt_pol_backend_requests(), 5 + 1 + 1 + 1);
    /* A client cannot buy the allow list by sending X-Forwarded-For: the
     * trusted proxy appends the real address, which is the client. */
    gwt_pol_expect_pass(port, "GET", "/users/1", gwt_pol_as_client("10.20.3.4, 10.21.0.5", NULL),
                        "all", 0, "10.20.3.4 forwarded for 10.21.0.5");
    gwt_pol_expect_429(port, "GET", "/users/1", gwt_pol_as_client("10.20.3.4, 10.21.0.5", NULL),
                       "[\"all\"]", "all", "10.20.3.4 forwarded for 10.21.0.5, 2nd", NULL);
    /* Nor from a peer that is not a trusted proxy. */
    int untrusted = gwt_pol_start(1, NULL, NULL);
    gwt_pol_expect_pass(untrusted, "GET", "/users/1", gwt_pol_as_client("10.20.3.4", NULL), "all",
                        0, "X-Forwarded-For: 10.20.3.4 from an untrusted peer");
    gwt_pol_expect_429(untrusted, "GET", "/users/1", gwt_pol_as_client("10.20.3.4", NULL),
                       "[\"all\"]", "all", "X-Forwarded-For: 10.20.3.4 from an untrusted peer, 2nd",
                       NULL);
}

/* A limit without key uses RATE_LIMIT_KEY (here header:X-API-Key, the
 * client address when absent). */
static void test_key_default_from_env(void **state)
{
    (void)state;
    const char *extra[] = {"RATE_LIMIT_KEY=header:X-API-Key", NULL};
    int port = gwt_pol_start(0,
                             "version: 1\n"
                             "limits:\n"
                             "  - name: by-env-key\n"
                             "    rates: [{ requests: 1, window: 1m }]\n",
                             extra);
    gwt_avoid_window_edge(60, 8);
    gwt_pol_expect_pass(port, "GET", "/users/1", gwt_pol_as_client(NULL, "alpha"), "by-env-key", 0,
                        "alpha");
    gwt_pol_expect_429(port, "GET", "/users/1", gwt_pol_as_client(NULL, "alpha"),
                       "[\"by-env-key\"]", "by-env-key", "alpha, 2nd", NULL);
    gwt_pol_expect_pass(port, "GET", "/users/1", gwt_pol_as_client(NULL, "beta"), "by-env-key", 0,
                        "beta");
    gwt_pol_expect_pass(port, "GET", "/users/1", NULL, "by-env-key", 0, "no key: the address");
    gwt_pol_expect_429(port, "GET", "/users/1", NULL, "[\"by-env-key\"]", "by-env-key",
                       "no key: the address, 2nd", NULL);
    /* The gateway's own endpoints are never rate limited (SPEC §4), even
     * under a limit without match and for a client it refuses. */
    static const char *const own[] = {"/health", "/stats", "/metrics", NULL};
    for (int i = 0; own[i] != NULL; i++)
        for (int k = 0; k < 3; k++) {
            struct gwt_response r;
            gwt_pol_send(port, "GET", own[i], NULL, &r);
            if (r.status != 200)
                fail_msg("GET %s from a refused client: status %d", own[i], r.status);
            gwt_pol_expect_no_headers(&r, own[i]);
            gwt_response_free(&r);
        }
}

/* ---- 8. no limit applies ------------------------------------------------- */

static void test_no_limit_applies(void **state)
{
    (void)state;
    int port = gwt_pol_start(0,
                             "version: 1\n"
                             "limits:\n"
                             "  - name: echo-post\n"
                             "    match: { methods: [POST], path: /echo }\n"
                             "    rates: [{ requests: 1, window: 1m }]\n"
                             "  - name: get-only\n"
                             "    match: { methods: [GET], path: /users/5 }\n"
                             "    rates: [{ requests: 1, window: 1m }]\n",
                             NULL);
    gwt_avoid_window_edge(60, 8);
    for (int i = 0; i < 4; i++)
        gwt_pol_expect_pass(port, "GET", "/users/1", NULL, NULL, 0, "GET /users/1 (no limit)");
    gwt_pol_expect_pass(port, "GET", "/echo", NULL, NULL, 0, "GET /echo (method not matched)");
    gwt_pol_expect_pass(port, "POST", "/echo", NULL, "echo-post", 0, "POST /echo");
    gwt_pol_expect_429(port, "POST", "/echo", NULL, "[\"echo-post\"]", "echo-post",
                       "POST /echo, 2nd", NULL);
    gwt_pol_expect_pass(port, "GET", "/users/1", NULL, NULL, 0,
                        "GET /users/1 after a refusal elsewhere");
    gwt_pol_expect_pass(port, "HEAD", "/users/1", NULL, NULL, 0, "HEAD /users/1");
    /* methods are exact: a GET limit does not apply to HEAD. */
    for (int i = 0; i < 3; i++)
        gwt_pol_expect_pass(port, "HEAD", "/users/5", NULL, NULL, 0,
                            "HEAD /users/5 (GET-only limit)");
    gwt_pol_expect_pass(port, "GET", "/users/5", NULL, "get-only", 0, "GET /users/5");
}

/* ---- 9. two gateways on one Redis ---------------------------------------- */

static void test_two_gateways_one_redis(void **state)
{
    (void)state;
    const char *extra[] = {gwt_fx.redis_url, "TRUSTED_PROXIES=127.0.0.1/32", NULL};
    gwt_pol_start(0,
                  "version: 1\n"
                  "limits:\n"
                  "  - name: shared\n"
                  "    match: { path_prefix: /users/ }\n"
                  "    rates:\n"
                  "      - { requests: 7, window: 1m }\n"
                  "      - { requests: 50, window: 1h }\n",
                  extra);
    gwt_pol_start(1, NULL, extra);
    gwt_avoid_window_edge(60, 8);
    /* One client alternating between the two. */
    for (int i = 0; i < 10; i++) {
        char what[64];
        snprintf(what, sizeof(what), "request %d on gateway %d", i + 1, i % 2);
        if (i < 7)
            gwt_pol_expect_pass(gwt_pol_gp[i % 2], "GET", "/users/1", NULL, "shared-1m", 6 - i,
                                what);
        else
            gwt_pol_expect_429(gwt_pol_gp[i % 2], "GET", "/users/1", NULL, "[\"shared-1m\"]",
                               "shared-1m", what, NULL);
    }
    /* Another client, 40 requests at once, 20 to each gateway. */
    enum { N = 40 };
    int statuses[N];
    gwt_dist_burst_same(gwt_pol_gp, 2, "/users/2", "192.0.2.50", N, statuses, NULL);
    int ok = 0, limited = 0;
    for (int i = 0; i < N; i++) {
        ok += statuses[i] == 200;
        limited += statuses[i] == 429;
    }
    if (ok != 7 || limited != N - 7)
        fail_msg("burst over two gateways: %d passed, %d refused, want 7 and %d", ok, limited,
                 N - 7);
    assert_int_equal(gwt_pol_backend_requests(), 14);
    /* In Redis: each client's two rates hold exactly 7. */
    static const char *const idents[] = {"ip:127.0.0.1", "ip:192.0.2.50"};
    long long idx_m = gwt_pol_wall_ms() / 60000, idx_h = gwt_pol_wall_ms() / 3600000;
    for (int c = 0; c < 2; c++) {
        char base[128], key[256];
        gwt_dist_store_key(GWT_POL_PREFIX, idents[c], base);
        snprintf(key, sizeof(key), "%s:shared:shared-1m:fw:60000:%lld", base, idx_m);
        assert_int_equal(gwt_dist_redis_get(gwt_fx.rport, key), 7);
        snprintf(key, sizeof(key), "%s:shared:shared-1h:fw:3600000:%lld", base, idx_h);
        assert_int_equal(gwt_dist_redis_get(gwt_fx.rport, key), 7);
    }
    long long lim = gwt_pol_limit_stat(gwt_pol_gp[0], "shared", "limited") +
                    gwt_pol_limit_stat(gwt_pol_gp[1], "shared", "limited");
    long long all = gwt_pol_limit_stat(gwt_pol_gp[0], "shared", "allowed") +
                    gwt_pol_limit_stat(gwt_pol_gp[1], "shared", "allowed");
    assert_int_equal(all, 14);
    assert_int_equal(lim, 3 + N - 7);
}

/* ---- 10. reload ---------------------------------------------------------- */

static const char *reload_rules(int changed_requests)
{
    static char text[512];
    snprintf(text, sizeof(text),
             "version: 1\n"
             "limits:\n"
             "  - name: changed\n"
             "    match: { path_prefix: /users/ }\n"
             "    rates: [{ requests: %d, window: 1m }]\n"
             "  - name: kept\n"
             "    match: { path: /echo }\n"
             "    rates: [{ requests: 3, window: 1m }]\n",
             changed_requests);
    return text;
}

/* A limit's requests changed in the file: enforced within 2 s (raised: the
 * refused client passes again, with the new q; lowered: refused at once);
 * an unchanged limit keeps its counts across both reloads. */
static void test_reload(void **state)
{
    (void)state;
    const char *redis[] = {gwt_fx.redis_url, NULL};
    gwt_pol_start(0, reload_rules(2), NULL);
    gwt_pol_start(1, NULL, redis);
    static const char *const store[] = {"memory", "redis"};
    gwt_avoid_window_edge(60, 10);
    char v1[32], v2[32], v3[32], w[32];
    gwt_pol_rules_version(gwt_pol_gp[0], v1);
    gwt_pol_rules_version(gwt_pol_gp[1], w);
    assert_string_equal(v1, w);
    char what[128];
    for (int g = 0; g < 2; g++) {
        int port = gwt_pol_gp[g];
        snprintf(what, sizeof(what), "%s: before the reloads", store[g]);
        gwt_pol_expect_pass(port, "GET", "/echo", NULL, "kept", 2, what);
        gwt_pol_expect_pass(port, "GET", "/users/1", NULL, "changed", 1, what);
        gwt_pol_expect_pass(port, "GET", "/users/1", NULL, "changed", 0, what);
        gwt_pol_expect_429(port, "GET", "/users/1", NULL, "[\"changed\"]", "changed", what, NULL);
    }

    /* Raised to 5. */
    long long t0 = gwt_now_ms();
    gwt_pol_write_rules(reload_rules(5));
    long ms = gwt_pol_wait_version(gwt_pol_gp[0], v1, v2);
    assert_true(gwt_pol_wait_version(gwt_pol_gp[1], v1, w) < GWT_POL_APPLY_MS);
    assert_string_equal(v2, w);
    for (int g = 0; g < 2; g++) {
        int port = gwt_pol_gp[g];
        struct gwt_response r;
        gwt_pol_send(port, "GET", "/users/1", NULL, &r);
        long long applied = gwt_now_ms() - t0;
        if (r.status != 200)
            fail_msg("%s: after raising the limit to 5: status %d (RateLimit-Policy %s)", store[g],
                     r.status,
                     gwt_header(&r, "RateLimit-Policy") ? gwt_header(&r, "RateLimit-Policy") : "-");
        assert_string_equal(gwt_header(&r, "RateLimit-Policy"), "\"changed\";q=5;w=60");
        struct gwt_pol_rl f;
        snprintf(what, sizeof(what), "%s: changed after raising", store[g]);
        gwt_pol_parse_ratelimit(&r, &f, what);
        gwt_response_free(&r);
        /* Whether the changed rate's count survives is the store's
         * choice (SPEC promises it for unchanged limits only); what
         * passes next must agree with the remaining it announced. */
        assert_true(f.r == 2 || f.r == 4);
        for (long long i = f.r - 1; i >= 0; i--)
            gwt_pol_expect_pass(port, "GET", "/users/1", NULL, "changed", i, what);
        gwt_pol_expect_429(port, "GET", "/users/1", NULL, "[\"changed\"]", "changed", what, NULL);
        print_message("  %s: raised limit enforced %lld ms after the write (version seen in %ld "
                      "ms); the changed rate's count was %s\n",
                      store[g], applied, ms, f.r == 2 ? "kept" : "reset");
        assert_true(applied < GWT_POL_APPLY_MS + 500);
        snprintf(what, sizeof(what), "%s: kept after the first reload", store[g]);
        gwt_pol_expect_pass(port, "GET", "/echo", NULL, "kept", 1, what);
    }

    /* Lowered to 1: refused at once. */
    t0 = gwt_now_ms();
    gwt_pol_write_rules(reload_rules(1));
    ms = gwt_pol_wait_version(gwt_pol_gp[0], v2, v3);
    assert_true(gwt_pol_wait_version(gwt_pol_gp[1], v2, w) < GWT_POL_APPLY_MS);
    for (int g = 0; g < 2; g++) {
        int port = gwt_pol_gp[g];
        struct gwt_response r;
        snprintf(what, sizeof(what), "%s: changed lowered to 1", store[g]);
        gwt_pol_expect_429(port, "GET", "/users/1", NULL, "[\"changed\"]", "changed", what, &r);
        assert_string_equal(gwt_header(&r, "RateLimit-Policy"), "\"changed\";q=1;w=60");
        gwt_response_free(&r);
        assert_true(gwt_now_ms() - t0 < GWT_POL_APPLY_MS + 500);
        snprintf(what, sizeof(what), "%s: kept after the second reload", store[g]);
        gwt_pol_expect_pass(port, "GET", "/echo", NULL, "kept", 0, what);
        gwt_pol_expect_429(port, "GET", "/echo", NULL, "[\"kept\"]", "kept", what, NULL);
    }
}

/* ---- 11. algorithms ------------------------------------------------------ */

/* Token bucket 1/s, burst 3, fresh client: 3 pass (remaining 2, 1, 0), the
 * 4th and 5th are refused with Retry-After 1; the next admission comes
 * one second after the first request (one token back), no sooner, and
 * the request after it is refused again. */
static void token_bucket_case(int port, const char *target, const char *policy,
                              const char *policy_header, const char *what)
{
    char msg[160];
    long long t_first = gwt_now_ms();
    for (int i = 0; i < 3; i++) {
        struct gwt_response r;
        gwt_pol_send(port, "GET", target, NULL, &r);
        snprintf(msg, sizeof(msg), "%s: burst request %d", what, i + 1);
        if (r.status != 200)
            fail_msg("%s: status %d", msg, r.status);
        gwt_pol_expect_rl(&r, policy, 2 - i, msg);
        assert_string_equal(gwt_header(&r, "RateLimit-Policy"), policy_header);
        assert_int_equal(gwt_dist_header_ll(&r, "X-RateLimit-Limit", -1), 1); /* L, not B */
        struct gwt_pol_rl f;
        gwt_pol_parse_ratelimit(&r, &f, msg);
        assert_int_equal(f.t, i + 1); /* seconds until the bucket is full again */
        long long reset = gwt_dist_header_ll(&r, "X-RateLimit-Reset", -1),
                  now = gwt_pol_wall_ms() / 1000;
        if (reset < now + f.t - 1 || reset > now + f.t)
            fail_msg("%s: X-RateLimit-Reset %lld, want now (%lld) + t (%lld)", msg, reset, now,
                     f.t);
        gwt_response_free(&r);
    }
    long long t_after = gwt_now_ms();
    for (int i = 0; i < 2; i++) {
        snprintf(msg, sizeof(msg), "%s: request %d after the burst", what, 4 + i);
        char v[96];
        snprintf(v, sizeof(v), "[\"%s\"]", policy);
        assert_int_equal(gwt_pol_expect_429(port, "GET", target, NULL, v, policy, msg, NULL), 1);
    }
    if (gwt_now_ms() - t_first >= 1000)
        fail_msg("%s: the burst took a second: machine too slow", what);
    /* A token is back 1 s after the first request (T = 1 s). */
    long long admitted = -1;
    for (int i = 0; i < 200 && admitted < 0; i++) {
        long long before = gwt_now_ms();
        struct gwt_response r;
        gwt_pol_send(port, "GET", target, NULL, &r);
        if (r.status == 200) {
            admitted = gwt_now_ms();
            gwt_pol_expect_rl(&r, policy, 0, what);
        } else if (r.status == 429) {
            if (before - t_after > 1000 + 100)
                fail_msg("%s: still refused %lld ms after the burst", what, before - t_after);
        } else {
            fail_msg("%s: status %d while waiting for a token", what, r.status);
        }
        gwt_response_free(&r);
        if (admitted < 0)
            gwt_pol_pause_ms(20);
    }
    assert_true(admitted > 0);
    if (admitted - t_first < 1000)
        fail_msg("%s: a request passed %lld ms after the first, before a token was back", what,
                 admitted - t_first);
    snprintf(msg, sizeof(msg), "%s: right after the refill", what);
    char v[96];
    snprintf(v, sizeof(v), "[\"%s\"]", policy);
    gwt_pol_expect_429(port, "GET", target, NULL, v, policy, msg, NULL);
}

/* RATE_LIMIT_ALGORITHM=token_bucket RATE_LIMIT_BURST=3, 1 a second, no
 * rules file: the default limit. */
static void test_token_bucket_env(void **state)
{
    (void)state;
    const char *env[] = {"RATE_LIMIT_ALGORITHM=token_bucket", "RATE_LIMIT_BURST=3",
                         "RATE_LIMIT_REQUESTS=1", "RATE_LIMIT_WINDOW_SECONDS=1", NULL};
    gwt_suite_start_gw2(env);
    token_bucket_case(gwt_fx.gport2, "/users/1", "default", "\"default\";q=1;w=1",
                      "RATE_LIMIT_* token bucket");
}

static const char algo_rules[] = "version: 1\n"
                                 "limits:\n"
                                 "  - name: tb\n"
                                 "    match: { path_prefix: /users/ }\n"
                                 "    rates: [{ requests: 1, window: 1s, algorithm: token_bucket, "
                                 "burst: 3 }]\n"
                                 "  - name: sw\n"
                                 "    match: { path: /echo }\n"
                                 "    rates: [{ requests: 3, window: 1m, algorithm: "
                                 "sliding_window }]\n";

/* Sliding window 3 a minute, fresh client (p = 0): 3 pass, the 4th is
 * refused; RateLimit t = the end of window i; Retry-After = the end of
 * window i plus W/L = 20 s (SPEC §5.1: c + 1 > L, so in window i+1 with
 * p = c = 3: allowed iff 3*(W - e) + W <= 3*W, e >= W/3). */
static void sliding_case(int port, const char *what)
{
    char msg[160];
    for (int i = 0; i < 3; i++) {
        snprintf(msg, sizeof(msg), "%s: request %d", what, i + 1);
        gwt_pol_expect_pass(port, "GET", "/echo", NULL, "sw", 2 - i, msg);
    }
    long long before = gwt_pol_wall_ms();
    struct gwt_response r;
    snprintf(msg, sizeof(msg), "%s: 4th", what);
    long long ra = gwt_pol_expect_429(port, "GET", "/echo", NULL, "[\"sw\"]", "sw", msg, &r);
    long long after = gwt_pol_wall_ms();
    long long end_ms = gwt_pol_period_end(before / 1000, 60) * 1000;
    long long lo = (end_ms + 20000 - after + 999) / 1000,
              hi = (end_ms + 20000 - before + 999) / 1000;
    if (ra < lo || ra > hi)
        fail_msg("%s: Retry-After %lld, want %lld..%lld (window end + W/L)", msg, ra, lo, hi);
    struct gwt_pol_rl f;
    gwt_pol_parse_ratelimit(&r, &f, msg);
    if (f.t < (end_ms - after) / 1000 || f.t > (end_ms - before + 999) / 1000)
        fail_msg("%s: RateLimit t=%lld, want the end of the window", msg, f.t);
    assert_int_equal(gwt_dist_header_ll(&r, "X-RateLimit-Reset", -1), end_ms / 1000);
    gwt_response_free(&r);
    /* The 5th is answered from the over-limit cache: the same instant. */
    snprintf(msg, sizeof(msg), "%s: 5th (over-limit cache)", what);
    before = gwt_pol_wall_ms();
    long long ra5 = gwt_pol_expect_429(port, "GET", "/echo", NULL, "[\"sw\"]", "sw", msg, &r);
    after = gwt_pol_wall_ms();
    lo = (end_ms + 20000 - after + 999) / 1000;
    hi = (end_ms + 20000 - before + 999) / 1000;
    if (ra5 < lo - 1 || ra5 > hi)
        fail_msg("%s: Retry-After %lld, want %lld..%lld (as the 4th's)", msg, ra5, lo, hi);
    assert_int_equal(gwt_dist_header_ll(&r, "X-RateLimit-Reset", -1), end_ms / 1000);
    gwt_response_free(&r);
}

/* The same rules file on the in-process store and on Redis: the same
 * admitted counts (SPEC §5.1: same decisions in both stores). */
static void test_algorithms_rules_file(void **state)
{
    (void)state;
    const char *redis[] = {gwt_fx.redis_url, NULL};
    gwt_pol_start(0, algo_rules, NULL);
    gwt_pol_start(1, NULL, redis);
    gwt_avoid_window_edge(60, 8);
    sliding_case(gwt_pol_gp[0], "sliding window, memory");
    sliding_case(gwt_pol_gp[1], "sliding window, redis");
    token_bucket_case(gwt_pol_gp[0], "/users/1", "tb", "\"tb\";q=1;w=1", "token bucket, memory");
    token_bucket_case(gwt_pol_gp[1], "/users/1", "tb", "\"tb\";q=1;w=1", "token bucket, redis");
    /* SPEC §5.1: every key has a TTL no longer than its state needs
     * (sliding window <= 2W, token bucket <= the time until full: 3 s). */
    char base[128], pattern[192];
    gwt_dist_store_key(GWT_POL_PREFIX, "ip:127.0.0.1", base);
    static const struct {
        const char *limit;
        long long max_ms;
    } ttl[] = {{"sw", 120000}, {"tb", 3000}};
    for (int i = 0; i < 2; i++) {
        snprintf(pattern, sizeof(pattern), "%s:%s:*", base, ttl[i].limit);
        char **keys = NULL;
        int n = gwt_dist_redis_scan(gwt_fx.rport, NULL, 0, pattern, &keys);
        if (n < 1)
            fail_msg("no Redis key matches %s", pattern);
        for (int k = 0; k < n; k++) {
            long long pttl = gwt_dist_redis_pttl(gwt_fx.rport, keys[k]);
            if (pttl <= 0 || pttl > ttl[i].max_ms)
                fail_msg("%s: PTTL %lld ms, want 1..%lld", keys[k], pttl, ttl[i].max_ms);
        }
        gwt_strv_free(keys, n);
    }
}

/* ---- RATE_LIMIT_DRY_RUN and RATE_LIMIT_HEADERS with a rules file --------- */

/* Dry run: every limit is shadow, nothing is refused, but an enforce
 * limit's headers are still sent (r=0 once it would refuse) while a
 * mode: shadow limit sends none; /stats counts the would-be refusals. */
static void test_dry_run(void **state)
{
    (void)state;
    const char *extra[] = {"RATE_LIMIT_DRY_RUN=on", NULL};
    int port = gwt_pol_start(0,
                             "version: 1\n"
                             "limits:\n"
                             "  - name: strict\n"
                             "    match: { path_prefix: /users/ }\n"
                             "    rates: [{ requests: 1, window: 1m }]\n"
                             "  - name: quiet\n"
                             "    match: { path_prefix: /users/ }\n"
                             "    mode: shadow\n"
                             "    rates: [{ requests: 1, window: 1m }]\n",
                             extra);
    gwt_avoid_window_edge(60, 8);
    for (int i = 0; i < 3; i++) {
        struct gwt_response r;
        gwt_pol_send(port, "GET", "/users/1", NULL, &r);
        if (r.status != 200)
            fail_msg("dry run, request %d: status %d", i + 1, r.status);
        assert_string_equal(gwt_header(&r, "RateLimit-Policy"), "\"strict\";q=1;w=60");
        gwt_pol_expect_rl(&r, "strict", 0, "dry run");
        assert_null(gwt_header(&r, "Retry-After"));
        gwt_response_free(&r);
    }
    assert_int_equal(gwt_pol_backend_requests(), 3);
    assert_int_equal(gwt_stat(port, "/stats", "requests_rate_limited"), 0);
    assert_int_equal(gwt_stat(port, "/stats", "requests_rate_limited_dry_run"), 2);
    gwt_pol_expect_limit_stats(port, "strict", 1, 0, 2);
    gwt_pol_expect_limit_stats(port, "quiet", 1, 0, 2);
}

/* RATE_LIMIT_HEADERS=off: no rate-limit header on a pass; a 429 keeps
 * Retry-After (and its violated-policies body) only. */
static void test_headers_off(void **state)
{
    (void)state;
    const char *extra[] = {"RATE_LIMIT_HEADERS=off", NULL};
    int port = gwt_pol_start(0,
                             "version: 1\n"
                             "limits:\n"
                             "  - name: small\n"
                             "    match: { path_prefix: /users/ }\n"
                             "    rates: [{ requests: 1, window: 1m }]\n",
                             extra);
    gwt_avoid_window_edge(60, 8);
    gwt_pol_expect_pass(port, "GET", "/users/1", NULL, NULL, 0, "headers off: a pass");
    struct gwt_response r;
    gwt_pol_send(port, "GET", "/users/1", NULL, &r);
    gwt_assert_problem(&r, 429, GWT_POL_QUOTA_TYPE);
    assert_true(gwt_dist_header_ll(&r, "Retry-After", -1) >= 1);
    for (int i = 0; gwt_pol_rl_headers[i] != NULL; i++)
        if (strcmp(gwt_pol_rl_headers[i], "Retry-After") != 0 &&
            gwt_header(&r, gwt_pol_rl_headers[i]) != NULL)
            fail_msg("headers off: the 429 has %s", gwt_pol_rl_headers[i]);
    char v[128];
    gwt_pol_violated(&r, v, sizeof(v));
    assert_string_equal(v, "[\"small\"]");
    gwt_response_free(&r);
}

/* ---- the example file of SPEC §10 (and the README) ------------------- */

static const char spec_example[] =
    "version: 1\n"
    "limits:\n"
    "  - name: monitoring\n"
    "    match: { client_cidrs: [10.20.0.0/16] }\n"
    "    action: allow\n"
    "  - name: login\n"
    "    match: { methods: [POST], path: /login }\n"
    "    key: ip\n"
    "    rates:\n"
    "      - { requests: 5, window: 1m }\n"
    "      - { requests: 20, window: 1h }\n"
    "  - name: api-free\n"
    "    match: { path_prefix: /api/, headers: { X-Plan: free } }\n"
    "    key: header:X-API-Key\n"
    "    rates:\n"
    "      - { requests: 10, window: 1s, algorithm: token_bucket, burst: 20, delay: 500ms }\n"
    "      - { requests: 10000, window: 1d, name: api-daily }\n"
    "  - name: api-new-tier\n"
    "    match: { path_prefix: /api/ }\n"
    "    key: [header:X-API-Key, ip]\n"
    "    rates: [ { requests: 100, window: 10s, algorithm: sliding_window } ]\n"
    "    mode: shadow\n";

/* The file the README shows, as it behaves: the README's 429 for the
 * sixth POST /login, the monitoring range never limited, api-free's two
 * rates in RateLimit-Policy without the shadow api-new-tier, which is
 * still counted. */
static void test_spec_example(void **state)
{
    (void)state;
    const char *extra[] = {"TRUSTED_PROXIES=127.0.0.1/32", NULL};
    int port = gwt_pol_start(0, spec_example, extra);
    gwt_avoid_window_edge(60, 8);
    const char *c = gwt_pol_as_client("192.0.2.7", NULL);
    char client[64];
    snprintf(client, sizeof(client), "%s", c);
    for (int i = 0; i < 5; i++)
        gwt_pol_expect_pass(port, "POST", "/login", client, "login-1m", 4 - i, "POST /login");
    struct gwt_response r;
    gwt_pol_expect_429(port, "POST", "/login", client, "[\"login-1m\"]", "login-1m",
                       "the sixth POST /login", &r);
    assert_string_equal(gwt_header(&r, "RateLimit-Policy"),
                        "\"login-1m\";q=5;w=60, \"login-1h\";q=20;w=3600");
    assert_int_equal(gwt_dist_header_ll(&r, "X-RateLimit-Limit", -1), 5);
    gwt_response_free(&r);
    for (int i = 0; i < 7; i++)
        gwt_pol_expect_pass(port, "POST", "/login", gwt_pol_as_client("10.20.1.2", NULL), NULL, 0,
                            "POST /login from the monitoring range");
    gwt_pol_send(port, "GET", "/api/items", "X-Plan: free\r\nX-API-Key: k1\r\n", &r);
    assert_true(r.status != 429 && r.status < 500);
    assert_string_equal(gwt_header(&r, "RateLimit-Policy"),
                        "\"api-free-1s\";q=10;w=1, \"api-daily\";q=10000;w=86400");
    gwt_pol_expect_rl(&r, "api-free-1s", 19, "GET /api/items, free plan");
    gwt_response_free(&r);
    gwt_pol_expect_pass(port, "GET", "/api/items", "X-Plan: pro\r\nX-API-Key: k1\r\n", NULL, 0,
                        "GET /api/items, pro plan: only the shadow limit applies");
    gwt_pol_expect_limit_stats(port, "login", 5, 1, 0);
    gwt_pol_expect_limit_stats(port, "api-free", 1, 0, 0);
    gwt_pol_expect_limit_stats(port, "api-new-tier", 2, 0, 0);
}

/* ---- JSON and YAML ------------------------------------------------------ */

/* The same rules as JSON and as YAML: one rules version (the SHA-256 of
 * the normalised rules), and the JSON file enforces them the same way. */
static void test_json_and_yaml(void **state)
{
    (void)state;
    gwt_pol_write_rules_as("rules.yaml", "version: 1\n"
                                         "limits:\n"
                                         "  - name: j\n"
                                         "    match: { methods: [GET], path_prefix: /users/ }\n"
                                         "    rates:\n"
                                         "      - { requests: 2, window: 1m }\n"
                                         "      - { requests: 10, window: 1h }\n");
    int yport = gwt_pol_start(0, NULL, NULL);
    gwt_pol_write_rules_as("rules.json",
                           "{\"version\":1,\"limits\":[{\"name\":\"j\",\"match\":{\"methods\":"
                           "[\"GET\"],\"path_prefix\":\"/users/\"},\"rates\":[{\"requests\":2,"
                           "\"window\":\"1m\"},{\"requests\":10,\"window\":3600}]}]}");
    int jport = gwt_pol_start(1, NULL, NULL);
    char vy[32], vj[32];
    gwt_pol_rules_version(yport, vy);
    gwt_pol_rules_version(jport, vj);
    assert_string_equal(vy, vj);
    gwt_avoid_window_edge(60, 8);
    gwt_pol_expect_pass(jport, "GET", "/users/1", NULL, "j-1m", 1, "JSON rules, 1st");
    gwt_pol_expect_pass(jport, "GET", "/users/1", NULL, "j-1m", 0, "JSON rules, 2nd");
    gwt_pol_expect_429(jport, "GET", "/users/1", NULL, "[\"j-1m\"]", "j-1m", "JSON rules, 3rd",
                       NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        GWT_POL_TEST(test_path_and_method),
        GWT_POL_TEST(test_two_rates_redis),
        GWT_POL_TEST(test_two_rates_memory),
        GWT_POL_TEST(test_second_limit_refusing),
        GWT_POL_TEST(test_headers),
        GWT_POL_TEST(test_global_and_composite_keys),
        GWT_POL_TEST(test_shadow),
        GWT_POL_TEST(test_allow),
        GWT_POL_TEST(test_key_default_from_env),
        GWT_POL_TEST(test_no_limit_applies),
        GWT_POL_TEST(test_two_gateways_one_redis),
        GWT_POL_TEST(test_reload),
        GWT_POL_TEST(test_token_bucket_env),
        GWT_POL_TEST(test_algorithms_rules_file),
        GWT_POL_TEST(test_dry_run),
        GWT_POL_TEST(test_headers_off),
        GWT_POL_TEST(test_spec_example),
        GWT_POL_TEST(test_json_and_yaml),
    };
    return cmocka_run_group_tests(tests, gwt_pol_group_setup, gwt_suite_teardown);
}
