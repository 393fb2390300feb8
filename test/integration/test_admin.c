/*
 * The admin API against real gateways (SPEC.md §11): three gateways on one
 * real redis-server; a PUT /rules on one is enforced by all three (the time
 * until each one's responses carry the new policy is measured and
 * printed); an instance restarted comes up with the shared rules; racing
 * PUTs end with every instance on the one version Redis holds; If-Match;
 * GET /ratelimit consumes nothing; DELETE /ratelimit unblocks a client on
 * all three (measured, printed); PUT with a rules file is 409; a
 * non-loopback ADMIN_HOST without a token exits 2; the bearer token; the
 * client port never answers the admin paths; admin requests are never
 * rate limited and logged with "admin":true.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
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

#include "gwt_admin.h"
#include "gwt_suite.h"

#define APPLY_MS 2000 /* SPEC: every instance applies a change within 2 s */
#define POLL_MS  5    /* between two probes */
#define NGW      3

#define TOKEN "test-token-0123456789abcdef"

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* PUT /rules; returns the new version (static) after checking 200. */
static const char *put_rules(int aport, const char *text, const char *headers)
{
    char source[32];
    const char *version = gwt_admin_put_rules(aport, text, headers, source);
    assert_int_equal(strlen(version), 12);
    assert_string_equal(source, "api");
    return version;
}

/* GET /rules: version and source. */
static void get_rules(int aport, char version[32], char source[32])
{
    bool has_rules = false;
    gwt_admin_get_rules(aport, version, source, &has_rules);
    assert_true(has_rules);
}

/* Until each of the n ports enforces the api limit with q per minute,
 * probed round-robin: ms[i] gets the time from t0 to the first probe of
 * port i that saw it; the test fails after APPLY_MS + 1 s. Each probe is
 * its own client, so the probes never run into the limit. */
static void wait_enforced(const int *ports, int n, int q, long long t0, long *ms)
{
    bool done[NGW] = {false};
    for (int left = n, k = 0; left > 0; k++) {
        for (int i = 0; i < n; i++) {
            if (done[i])
                continue;
            char client[64];
            snprintf(client, sizeof(client), "probe-%d-%d-%d", i, q, k);
            bool has = false;
            gwt_admin_api_get(ports[i], client, q, &has);
            long long now = gwt_now_ms() - t0;
            if (has) {
                done[i] = true;
                ms[i] = (long)now;
                left--;
            } else if (now > APPLY_MS + 1000) {
                fail_msg("gateway %d does not enforce api q=%d after %lld ms", i, q, now);
            }
        }
        pause_ms(POLL_MS);
    }
}

struct fleet {
    struct gwt_proc gw[NGW];
    int port[NGW];  /* client ports */
    int aport[NGW]; /* admin ports */
};

static struct fleet fleet;

static void start_one(struct gwt_proc *p, int *port, int *aport)
{
    const char *env[] = {gwt_fx.redis_url, "ADMIN_PORT=0", "RATE_LIMIT_KEY_PREFIX=admintest", NULL};
    memset(p, 0, sizeof(*p));
    assert_int_equal(gwt_gateway_for(p, port, gwt_fx.bport, env), 0);
    *aport = gwt_admin_port_of(p);
}

static void start_fleet(void)
{
    for (int i = 0; i < NGW; i++)
        start_one(&fleet.gw[i], &fleet.port[i], &fleet.aport[i]);
}

/* PUT on one instance, all three enforce within 2 s; a restarted instance
 * starts with the shared rules. */
static void test_put_converges_and_restart(void **state)
{
    (void)state;
    start_fleet();
    char v[32], src[32];
    for (int i = 0; i < NGW; i++) {
        get_rules(fleet.aport[i], v, src);
        assert_string_equal(src, "env");
    }
    long worst = 0;
    for (int round = 0; round < 3; round++) {
        int q = 10 + round;
        long long t0 = gwt_now_ms();
        const char *ver = put_rules(fleet.aport[round % NGW], gwt_admin_rules(q), NULL);
        char want[32];
        snprintf(want, sizeof(want), "%s", ver);
        long ms[NGW];
        wait_enforced(fleet.port, NGW, q, t0, ms);
        for (int i = 0; i < NGW; i++) {
            worst = ms[i] > worst ? ms[i] : worst;
            get_rules(fleet.aport[i], v, src);
            assert_string_equal(v, want);
            assert_string_equal(src, i == round % NGW ? "api" : "redis");
        }
        fprintf(stderr,
                "[ MEASURE  ] PUT /rules on gateway %d: enforced by the three after %ld, %ld, "
                "%ld ms\n",
                round % NGW, ms[0], ms[1], ms[2]);
        assert_true(worst <= APPLY_MS);
    }
    /* The rules key is the one key without a TTL. */
    assert_int_equal(gwt_redis_ttl(gwt_fx.rport, "admintest:rules"), -1);

    /* A restarted instance serves the shared rules from its first request. */
    get_rules(fleet.aport[0], v, src);
    assert_int_equal(gwt_stop(&fleet.gw[2], SIGTERM, 5000), 0);
    static struct gwt_proc again;
    int port, aport;
    start_one(&again, &port, &aport);
    char v2[32];
    get_rules(aport, v2, src);
    assert_string_equal(v2, v);
    assert_string_equal(src, "redis");
    bool has = false;
    assert_int_equal(gwt_admin_api_get(port, "restarted-first", 12, &has), 200);
    assert_true(has);
    char *log = gwt_log_read(&again);
    assert_non_null(log);
    assert_non_null(strstr(log, "start-up rules from Redis"));
    free(log);
}

struct put_job {
    int aport;
    const char *text;
    int status;
};

static void *put_thread(void *arg)
{
    struct put_job *j = arg;
    struct gwt_response r = {0};
    size_t blen = strlen(j->text);
    char raw[1024];
    snprintf(raw, sizeof(raw),
             "PUT /rules HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: "
             "%zu\r\n\r\n%s",
             blen, j->text);
    j->status = gwt_http(j->aport, raw, &r) == 0 ? r.status : -1;
    gwt_response_free(&r);
    return NULL;
}

/* Two PUTs racing on two instances: both stored in some order, and every
 * instance ends with the one Redis kept. If-Match refuses a stale version. */
static void test_racing_puts_converge(void **state)
{
    (void)state;
    start_fleet();
    for (int round = 0; round < 5; round++) {
        char ta[320], tb[320];
        snprintf(ta, sizeof(ta), "%s", gwt_admin_rules(100 + 2 * round));
        snprintf(tb, sizeof(tb), "%s", gwt_admin_rules(101 + 2 * round));
        struct put_job a = {fleet.aport[0], ta, 0}, b = {fleet.aport[1], tb, 0};
        pthread_t x, y;
        assert_int_equal(pthread_create(&x, NULL, put_thread, &a), 0);
        assert_int_equal(pthread_create(&y, NULL, put_thread, &b), 0);
        pthread_join(x, NULL);
        pthread_join(y, NULL);
        assert_int_equal(a.status, 200);
        assert_int_equal(b.status, 200);
        /* Within 2 s, all three hold one same version. */
        long long t0 = gwt_now_ms();
        char v[NGW][32], src[32];
        for (;;) {
            for (int i = 0; i < NGW; i++)
                get_rules(fleet.aport[i], v[i], src);
            if (strcmp(v[0], v[1]) == 0 && strcmp(v[1], v[2]) == 0)
                break;
            if (gwt_now_ms() - t0 > APPLY_MS + 1000)
                fail_msg("round %d: versions %s %s %s after racing PUTs", round, v[0], v[1], v[2]);
            pause_ms(POLL_MS);
        }
        fprintf(stderr,
                "[ MEASURE  ] racing PUTs, round %d: one version (%s) everywhere after %lld "
                "ms\n",
                round, v[0], gwt_now_ms() - t0);
    }
    /* If-Match: the version in force passes, a stale one is 412. */
    char v[32], src[32];
    get_rules(fleet.aport[2], v, src);
    char hdr[64];
    snprintf(hdr, sizeof(hdr), "If-Match: \"%s\"\r\n", v);
    const char *nv = put_rules(fleet.aport[2], gwt_admin_rules(7), hdr);
    assert_string_not_equal(nv, v);
    struct gwt_response r = {0};
    gwt_admin_request(fleet.aport[0], "PUT", "/rules", hdr, gwt_admin_rules(8), &r);
    gwt_assert_problem(&r, 412, NULL);
    gwt_response_free(&r);
}

/* GET /ratelimit consumes nothing; DELETE unblocks on all three within 2 s. */
static void test_inspect_and_unblock(void **state)
{
    (void)state;
    start_fleet();
    gwt_avoid_window_edge(60, 15);
    const char *ver = put_rules(fleet.aport[0], gwt_admin_rules(3), NULL);
    (void)ver;
    long long t0 = gwt_now_ms();
    long ms[NGW];
    wait_enforced(fleet.port, NGW, 3, t0, ms);

    /* One request, then inspections on every instance: remaining stays 2. */
    assert_int_equal(gwt_admin_api_get(fleet.port[0], "alice", 3, NULL), 200);
    for (int k = 0; k < 3; k++) {
        for (int i = 0; i < NGW; i++) {
            struct gwt_response r = {0};
            gwt_admin_request(fleet.aport[i], "GET", "/ratelimit?limit=api&key=alice", NULL, NULL,
                              &r);
            assert_int_equal(r.status, 200);
            json_t *j = gwt_json(&r);
            assert_non_null(j);
            assert_string_equal(json_string_value(json_object_get(j, "limit")), "api");
            assert_string_equal(json_string_value(json_object_get(j, "key")), "alice");
            json_t *rate = json_array_get(json_object_get(j, "rates"), 0);
            assert_non_null(rate);
            assert_int_equal(gwt_json_int(rate, "limit", -1), 3);
            assert_int_equal(gwt_json_int(rate, "window", -1), 60);
            assert_int_equal(gwt_json_int(rate, "remaining", -1), 2);
            long long reset = gwt_json_int(rate, "reset", -1);
            assert_true(reset >= 1 && reset <= 60);
            json_decref(j);
            gwt_response_free(&r);
        }
    }
    /* Two more pass (3 in all), then every instance refuses alice (and so
     * holds her in its over-limit cache). */
    assert_int_equal(gwt_admin_api_get(fleet.port[1], "alice", 3, NULL), 200);
    assert_int_equal(gwt_admin_api_get(fleet.port[2], "alice", 3, NULL), 200);
    for (int i = 0; i < NGW; i++)
        for (int k = 0; k < 2; k++)
            assert_int_equal(gwt_admin_api_get(fleet.port[i], "alice", 3, NULL), 429);

    /* Errors: unknown limit, missing parameter, bad escape. */
    struct gwt_response r = {0};
    gwt_admin_request(fleet.aport[1], "GET", "/ratelimit?limit=nope&key=alice", NULL, NULL, &r);
    gwt_assert_problem(&r, 404, NULL);
    gwt_response_free(&r);
    gwt_admin_request(fleet.aport[1], "GET", "/ratelimit?limit=api", NULL, NULL, &r);
    gwt_assert_problem(&r, 400, NULL);
    gwt_response_free(&r);
    gwt_admin_request(fleet.aport[1], "DELETE", "/ratelimit?key=alice", NULL, NULL, &r);
    gwt_assert_problem(&r, 400, NULL);
    gwt_response_free(&r);
    gwt_admin_request(fleet.aport[1], "GET", "/ratelimit?limit=api&key=%zz", NULL, NULL, &r);
    gwt_assert_problem(&r, 400, NULL);
    gwt_response_free(&r);

    /* DELETE on gateway 1: alice passes again on all three. */
    t0 = gwt_now_ms();
    gwt_admin_request(fleet.aport[1], "DELETE", "/ratelimit?limit=api&key=alice", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    json_t *j = gwt_json(&r);
    assert_non_null(j);
    assert_true(gwt_json_int(j, "deleted", -1) >= 1);
    json_decref(j);
    gwt_response_free(&r);
    gwt_admin_wait_served(fleet.port, NGW, "alice", t0, APPLY_MS + 1000, ms);
    fprintf(stderr,
            "[ MEASURE  ] DELETE /ratelimit on gateway 1: alice served again by the three "
            "after %ld, %ld, %ld ms\n",
            ms[0], ms[1], ms[2]);
    for (int i = 0; i < NGW; i++)
        assert_true(ms[i] <= APPLY_MS);
    /* The forget stream has a TTL; the state keys of alice were deleted and
     * written again by the three requests since. */
    long long ttl = gwt_redis_ttl(gwt_fx.rport, "admintest:forget");
    assert_true(ttl > 0 && ttl <= 60);
}

/* With RATE_LIMIT_RULES_FILE, PUT is 409 and the file stays in force;
 * validation still answers, with its errors as problem+json. */
static void test_put_with_file_is_409(void **state)
{
    (void)state;
    char path[] = "/tmp/gw-admin-rules-XXXXXX.json";
    int fd = mkstemps(path, 5);
    assert_true(fd >= 0);
    const char *text = gwt_admin_rules(5);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    char file_env[96];
    snprintf(file_env, sizeof(file_env), "RATE_LIMIT_RULES_FILE=%s", path);
    const char *env[] = {file_env, "ADMIN_PORT=0", NULL};
    gwt_suite_start_gw2(env);
    int aport = gwt_admin_port_of(&gwt_fx.gw2);
    char v[32], src[32];
    get_rules(aport, v, src);
    assert_string_equal(src, "file");
    struct gwt_response r = {0};
    gwt_admin_request(aport, "PUT", "/rules", NULL, gwt_admin_rules(6), &r);
    gwt_assert_problem(&r, 409, NULL);
    gwt_response_free(&r);
    char v2[32];
    get_rules(aport, v2, src);
    assert_string_equal(v2, v);

    /* POST /rules/validate: YAML accepted, errors listed. */
    gwt_admin_request(aport, "POST", "/rules/validate", "Content-Type: application/yaml\r\n",
                      "version: 1\nlimits:\n  - name: y\n    rates: [{requests: 2, window: 1s}]\n",
                      &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"name\":\"y\""));
    gwt_response_free(&r);
    gwt_admin_request(aport, "POST", "/rules/validate", NULL,
                      "{\"version\":1,\"limits\":[{\"name\":\"x\",\"rates\":[{\"requests\":0,"
                      "\"window\":\"0s\"}],\"bogus\":1}]}",
                      &r);
    gwt_assert_problem(&r, 400, NULL);
    json_t *j = gwt_json(&r);
    json_t *errors = json_object_get(j, "errors");
    assert_true(json_is_array(errors));
    assert_int_equal(json_array_size(errors), 3);
    assert_non_null(strstr(json_string_value(json_array_get(errors, 0)), "bogus"));
    json_decref(j);
    gwt_response_free(&r);
    unlink(path);
}

/* Without Redis, PUT changes this instance; a body over 1 MiB is 413. */
static void test_local_put_and_limits(void **state)
{
    (void)state;
    const char *env[] = {"ADMIN_PORT=0", "RATE_LIMIT_REQUESTS=1", NULL};
    gwt_suite_start_gw2(env);
    int aport = gwt_admin_port_of(&gwt_fx.gw2);
    long long t0 = gwt_now_ms();
    put_rules(aport, gwt_admin_rules(4), NULL);
    long ms[1];
    wait_enforced(&gwt_fx.gport2, 1, 4, t0, ms);
    assert_true(ms[0] <= APPLY_MS);
    char v[32], src[32];
    get_rules(aport, v, src);
    assert_string_equal(src, "api");
    /* Admin requests are never rate limited (RATE_LIMIT_REQUESTS=1). */
    for (int i = 0; i < 20; i++) {
        struct gwt_response r = {0};
        gwt_admin_request(aport, "GET", "/stats", NULL, NULL, &r);
        assert_int_equal(r.status, 200);
        gwt_response_free(&r);
    }
    /* 413 beyond 1 MiB, announced by Content-Length. */
    size_t big = (1u << 20) + 16;
    char *body = malloc(big + 1);
    assert_non_null(body);
    memset(body, ' ', big);
    body[big] = '\0';
    struct gwt_response r = {0};
    gwt_admin_request(aport, "PUT", "/rules", NULL, body, &r);
    gwt_assert_problem(&r, 413, NULL);
    gwt_response_free(&r);
    free(body);
    /* Unknown path and method. */
    gwt_admin_request(aport, "GET", "/nope", NULL, NULL, &r);
    gwt_assert_problem(&r, 404, NULL);
    gwt_response_free(&r);
    gwt_admin_request(aport, "POST", "/rules", NULL, "{}", &r);
    gwt_assert_problem(&r, 405, NULL);
    assert_non_null(gwt_header(&r, "Allow"));
    gwt_response_free(&r);
}

/* The bearer token on every admin path; access log "admin":true; the
 * client port never answers the admin paths. */
static void test_token_log_and_client_port(void **state)
{
    (void)state;
    struct gwt_proc p = {0};
    int port = 0;
    char burl[64];
    snprintf(burl, sizeof(burl), "BACKEND_URL=http://127.0.0.1:%d", gwt_fx.bport);
    const char *env[] = {burl, "WORKER_THREADS=2", "ADMIN_PORT=0", "ADMIN_TOKEN=" TOKEN, NULL};
    assert_int_equal(gwt_gateway_start_split(&p, &port, env), 0);
    gwt_track(&p);
    int aport = gwt_admin_port_of(&p);
    const char *paths[] = {"/rules", "/stats", "/health", "/metrics",
                           "/ratelimit?limit=default&key=127.0.0.1"};
    for (size_t i = 0; i < GW_ARRAY_LEN(paths); i++) {
        struct gwt_response r = {0};
        gwt_admin_request(aport, "GET", paths[i], NULL, NULL, &r);
        gwt_assert_problem(&r, 401, NULL);
        assert_non_null(gwt_header(&r, "WWW-Authenticate"));
        assert_non_null(strstr(gwt_header(&r, "WWW-Authenticate"), "Bearer"));
        gwt_response_free(&r);
        gwt_admin_request(aport, "GET", paths[i],
                          "Authorization: Bearer wrong-token-0123456789abcd\r\n", NULL, &r);
        gwt_assert_problem(&r, 401, NULL);
        gwt_response_free(&r);
        gwt_admin_request(aport, "GET", paths[i], "Authorization: Bearer " TOKEN "x\r\n", NULL, &r);
        assert_int_equal(r.status, 401);
        gwt_response_free(&r);
        gwt_admin_request(aport, "GET", paths[i], "Authorization: bearer " TOKEN "\r\n", NULL, &r);
        assert_int_equal(r.status, 200);
        gwt_response_free(&r);
    }
    assert_int_equal(gwt_wait_out(&p, "\"path\":\"/rules\",\"status\":200", 2000, NULL, 0), 0);
    char line[1024];
    assert_int_equal(gwt_wait_out(&p, "\"admin\":true", 2000, line, sizeof(line)), 0);

    /* The client port: /rules and /ratelimit go to the backend like any
     * path (backend_app counts them), and its lines carry no admin. */
    long long before = gwt_backend_requests(gwt_fx.bport);
    struct gwt_response r = {0};
    gwt_admin_request(port, "GET", "/rules", NULL, NULL, &r);
    assert_null(strstr(r.body, "\"version\""));
    gwt_response_free(&r);
    gwt_admin_request(port, "PUT", "/rules", NULL, gwt_admin_rules(1), &r);
    gwt_response_free(&r);
    gwt_admin_request(port, "DELETE", "/ratelimit?limit=default&key=127.0.0.1", NULL, NULL, &r);
    gwt_response_free(&r);
    assert_int_equal(gwt_backend_requests(gwt_fx.bport), before + 3);
    char *out = gwt_out_read(&p);
    assert_non_null(out);
    for (const char *l = out; (l = strstr(l, "\"path\":\"/rules\"")) != NULL; l++) {
        const char *eol = strchr(l, '\n');
        const char *adm = strstr(l, "\"admin\":true");
        const char *up = strstr(l, "\"upstream_ms\":null");
        /* Admin lines are never proxied; proxied lines are never admin. */
        if (adm != NULL && adm < eol)
            assert_true(up != NULL && up < eol);
    }
    free(out);
}

/* Redis unreachable at start-up: a warning, the RATE_LIMIT_* default, and
 * PUT refused at once (503) rather than applied to this instance alone. */
static void test_redis_down_at_start(void **state)
{
    (void)state;
    const char *env[] = {gwt_dead_url("REDIS_URL", "redis"), "ADMIN_PORT=0", NULL};
    gwt_suite_start_gw2(env);
    int aport = gwt_admin_port_of(&gwt_fx.gw2);
    char *log = gwt_log_read(&gwt_fx.gw2);
    assert_non_null(log);
    assert_non_null(strstr(log, "cannot read the shared rules from Redis at start-up"));
    free(log);
    char v[32], src[32];
    get_rules(aport, v, src);
    assert_string_equal(src, "env");
    long long t0 = gwt_now_ms();
    struct gwt_response r = {0};
    gwt_admin_request(aport, "PUT", "/rules", NULL, gwt_admin_rules(9), &r);
    gwt_assert_problem(&r, 503, NULL);
    gwt_response_free(&r);
    assert_true(gwt_now_ms() - t0 < 500); /* no connect attempt on the request's path */
    char v2[32];
    get_rules(aport, v2, src);
    assert_string_equal(v2, v);
}

/* A non-loopback ADMIN_HOST without ADMIN_TOKEN is a start-up error. */
static void test_non_loopback_without_token_exits_2(void **state)
{
    (void)state;
    const char *env[] = {"ADMIN_HOST=0.0.0.0", "ADMIN_PORT=0", NULL};
    char *out = NULL, *err = NULL;
    const char *check[] = {"--check-config", NULL};
    assert_int_equal(gwt_gateway_run(check, env, 10000, &out, &err), 2);
    assert_non_null(strstr(err, "ADMIN_HOST=0.0.0.0"));
    assert_non_null(strstr(err, "ADMIN_TOKEN"));
    free(out);
    free(err);
    const char *none[] = {NULL};
    assert_int_equal(gwt_gateway_run(none, env, 10000, &out, &err), 2);
    assert_non_null(strstr(err, "ADMIN_HOST=0.0.0.0"));
    free(out);
    free(err);
    /* With a token it is accepted, and the token never printed. */
    const char *env2[] = {"ADMIN_HOST=::", "ADMIN_PORT=0", "ADMIN_TOKEN=" TOKEN, NULL};
    assert_int_equal(gwt_gateway_run(check, env2, 10000, &out, &err), 0);
    assert_null(strstr(out, TOKEN));
    assert_non_null(strstr(out, "\"ADMIN_TOKEN\": \"***\""));
    free(out);
    free(err);
}

static int redis_setup(void **state)
{
    (void)state;
    return gwt_suite_setup(GWT_FX_REDIS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        GWT_TEST(test_put_converges_and_restart), GWT_TEST(test_racing_puts_converge),
        GWT_TEST(test_inspect_and_unblock),       GWT_TEST(test_put_with_file_is_409),
        GWT_TEST(test_local_put_and_limits),      GWT_TEST(test_token_log_and_client_port),
        GWT_TEST(test_redis_down_at_start),       GWT_TEST(test_non_loopback_without_token_exits_2),
    };
    return cmocka_run_group_tests(tests, redis_setup, gwt_suite_teardown);
}
