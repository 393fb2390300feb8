/*
 * Integration tests of TLS to Redis (SPEC.md §12, issue 15): a real
 * redis-server with --tls-port and certificates made here by the openssl
 * command (a CA, a server certificate for 127.0.0.1 and localhost, a client
 * certificate, and a second CA that signed none of them). The gateway limits
 * exactly through TLS; a wrong CA or a wrong name is refused with a clear
 * log line and RATE_LIMIT_FAILURE_MODE deciding; a client certificate is
 * given when the server requires one; REDIS_TLS_VERIFY=off works and warns;
 * the password never shows; bad settings are exit 2. Also measures the
 * check's round trip through TLS against plaintext on the same server.
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

#include "gwt_suite.h"
#include "gwt_tls.h"
#include "gwtest.h"
#include "ratelimit_int.h"

#include <errno.h>
#include <hiredis/hiredis.h>

static struct gwt_tls_certs g_certs;
#define g_ca       g_certs.ca
#define g_srv      g_certs.srv
#define g_srv_key  g_certs.srv_key
#define g_cli      g_certs.cli
#define g_cli_key  g_certs.cli_key
#define g_wrong_ca g_certs.wrong_ca

#define PASSWORD "tls-s3cret-Pw"

/* ---- certificates and servers ---------------------------------------------- */

/* redis-server with a TLS port (and a plaintext one when plain_port > 0),
 * tls-auth-clients as given, requirepass when pass != NULL. Waits until the
 * TLS port accepts. */
static void tls_redis_start(struct gwt_proc *p, int *tls_port, int plain_port, bool auth_clients,
                            const char *pass)
{
    *tls_port = gwt_free_port();
    assert_true(*tls_port > 0);
    char tp[16], pp[16];
    snprintf(tp, sizeof(tp), "%d", *tls_port);
    snprintf(pp, sizeof(pp), "%d", plain_port);
    const char *argv[32] = {"redis-server",
                            "--port",
                            pp,
                            "--tls-port",
                            tp,
                            "--bind",
                            "127.0.0.1",
                            "--tls-cert-file",
                            g_srv,
                            "--tls-key-file",
                            g_srv_key,
                            "--tls-ca-cert-file",
                            g_ca,
                            "--tls-auth-clients",
                            auth_clients ? "yes" : "no",
                            "--save",
                            "",
                            "--appendonly",
                            "no"};
    size_t k = 19;
    if (pass != NULL) {
        argv[k++] = "--requirepass";
        argv[k++] = pass;
    }
    argv[k] = NULL;
    memset(p, 0, sizeof(*p));
    assert_int_equal(gwt_spawn(p, argv, NULL), 0);
    if (gwt_wait_port(*tls_port, 10000) != 0) {
        gwt_log_dump(p, 3000);
        fail_msg("redis-server with TLS did not listen on %d", *tls_port);
    }
    if (plain_port > 0)
        assert_int_equal(gwt_wait_port(plain_port, 10000), 0);
}

static void url_env(char *buf, size_t cap, const char *scheme, const char *host, int port)
{
    snprintf(buf, cap, "REDIS_URL=%s://%s:%d", scheme, host, port);
}

static void env_kv(char *buf, size_t cap, const char *k, const char *v)
{
    snprintf(buf, cap, "%s=%s", k, v);
}

/* n GETs of /users/1 on port; the statuses into st. */
static void statuses(int port, int n, int st[])
{
    for (int i = 0; i < n; i++) {
        struct gwt_response r = {0};
        assert_int_equal(gwt_get(port, "/users/1", &r), 0);
        st[i] = r.status;
        gwt_response_free(&r);
    }
}

static void assert_limits_at_3(int port)
{
    gwt_avoid_window_edge(60, 5);
    int st[4];
    statuses(port, 4, st);
    assert_int_equal(st[0], 200);
    assert_int_equal(st[1], 200);
    assert_int_equal(st[2], 200);
    assert_int_equal(st[3], 429);
}

/* /health's "redis" member becomes want within timeout_ms. */
static void assert_health_redis(int port, const char *want, int timeout_ms)
{
    long long deadline = gwt_now_ms() + timeout_ms;
    char last[256] = "";
    for (int i = 0; i < 1000; i++) {
        struct gwt_response r = {0};
        if (gwt_get(port, "/health", &r) == 0) {
            json_t *j = gwt_json(&r);
            const char *v = j != NULL ? json_string_value(json_object_get(j, "redis")) : NULL;
            bool ok = v != NULL && strcmp(v, want) == 0;
            snprintf(last, sizeof(last), "%d %s", r.status, r.body != NULL ? r.body : "");
            json_decref(j);
            gwt_response_free(&r);
            if (ok)
                return;
        }
        if (gwt_now_ms() > deadline)
            break;
        usleep(20000);
    }
    fail_msg("/health redis never became %s (last: %s)", want, last);
}

/* ---- tests ------------------------------------------------------------------ */

/* rediss:// with the test CA: exact limiting (4th request 429), /health
 * connected; the same by DNS name (localhost) and with REDIS_TLS_SERVER_NAME
 * naming the certificate's DNS name while connecting to the address. */
static void test_tls_limits_exactly(void **state)
{
    (void)state;
    struct gwt_proc redis;
    int port;
    tls_redis_start(&redis, &port, 0, false, NULL);
    char url[96], ca[256];
    url_env(url, sizeof(url), "rediss", "127.0.0.1", port);
    env_kv(ca, sizeof(ca), "REDIS_TLS_CA_FILE", g_ca);
    const char *env[] = {url, ca, "RATE_LIMIT_REQUESTS=3", "RATE_LIMIT_FAILURE_MODE=closed", NULL};
    gwt_suite_start_gw(env);
    assert_health_redis(gwt_fx.gport, "connected", 5000);
    assert_limits_at_3(gwt_fx.gport);
    /* The rules sync (admin API, SPEC.md §11) read Redis through TLS too. */
    assert_int_equal(gwt_wait_log(&gwt_fx.gw, "no shared rules in Redis", 5000, NULL, 0), 0);
    char *log = gwt_log_read(&gwt_fx.gw);
    assert_non_null(log);
    assert_null(strstr(log, "rules sync: cannot connect"));
    free(log);

    /* By name, and by address with the name to verify given apart; a new
     * prefix each so the counts start afresh. */
    char url2[96];
    url_env(url2, sizeof(url2), "rediss", "localhost", port);
    const char *env2[] = {url2,
                          ca,
                          "RATE_LIMIT_REQUESTS=3",
                          "RATE_LIMIT_FAILURE_MODE=closed",
                          "RATE_LIMIT_KEY_PREFIX=byname",
                          NULL};
    gwt_suite_start_gw2(env2);
    assert_health_redis(gwt_fx.gport2, "connected", 5000);
    assert_limits_at_3(gwt_fx.gport2);
    assert_int_equal(gwt_stop(&gwt_fx.gw2, SIGTERM, 5000), 0);
    gwt_proc_cleanup(&gwt_fx.gw2);

    const char *env3[] = {url,
                          ca,
                          "REDIS_TLS_SERVER_NAME=localhost",
                          "RATE_LIMIT_REQUESTS=3",
                          "RATE_LIMIT_FAILURE_MODE=closed",
                          "RATE_LIMIT_KEY_PREFIX=sni",
                          NULL};
    gwt_suite_start_gw2(env3);
    assert_health_redis(gwt_fx.gport2, "connected", 5000);
    assert_limits_at_3(gwt_fx.gport2);
    gwt_stop_and_cleanup(&redis);
}

/* A server that needs a client certificate (tls-auth-clients yes) and a
 * password: without the certificate the store is down and closed mode
 * answers 503; with REDIS_TLS_CERT_FILE/KEY_FILE and REDIS_PASSWORD it
 * limits. The password is in no log line and masked by --check-config. */
static void test_tls_client_cert_and_password(void **state)
{
    (void)state;
    struct gwt_proc redis;
    int port;
    tls_redis_start(&redis, &port, 0, true, PASSWORD);
    char url[96], ca[256], crt[256], key[256];
    url_env(url, sizeof(url), "rediss", "127.0.0.1", port);
    env_kv(ca, sizeof(ca), "REDIS_TLS_CA_FILE", g_ca);
    env_kv(crt, sizeof(crt), "REDIS_TLS_CERT_FILE", g_cli);
    env_kv(key, sizeof(key), "REDIS_TLS_KEY_FILE", g_cli_key);

    const char *nocert[] = {url,
                            ca,
                            "REDIS_PASSWORD=" PASSWORD,
                            "RATE_LIMIT_REQUESTS=3",
                            "RATE_LIMIT_FAILURE_MODE=closed",
                            NULL};
    gwt_suite_start_gw2(nocert);
    assert_health_redis(gwt_fx.gport2, "disconnected", 5000);
    struct gwt_response r = {0};
    assert_int_equal(gwt_get(gwt_fx.gport2, "/users/1", &r), 0);
    assert_int_equal(r.status, 503);
    gwt_response_free(&r);
    assert_int_equal(gwt_stop(&gwt_fx.gw2, SIGTERM, 5000), 0);
    char *log = gwt_log_read(&gwt_fx.gw2);
    assert_non_null(log);
    assert_null(strstr(log, PASSWORD));
    free(log);
    gwt_proc_cleanup(&gwt_fx.gw2);

    const char *withcert[] = {url,
                              ca,
                              crt,
                              key,
                              "REDIS_USERNAME=default",
                              "REDIS_PASSWORD=" PASSWORD,
                              "RATE_LIMIT_REQUESTS=3",
                              "RATE_LIMIT_FAILURE_MODE=closed",
                              NULL};
    gwt_suite_start_gw(withcert);
    assert_health_redis(gwt_fx.gport, "connected", 5000);
    assert_limits_at_3(gwt_fx.gport);

    /* --check-config: the password masked whole, never printed. */
    const char *args[] = {"--check-config", NULL};
    char *out = NULL, *err = NULL;
    assert_int_equal(gwt_gateway_run(args, withcert, 10000, &out, &err), 0);
    assert_non_null(strstr(out, "\"REDIS_PASSWORD\": \"***\""));
    assert_null(strstr(out, PASSWORD));
    assert_null(strstr(err, PASSWORD));
    free(out);
    free(err);
    assert_int_equal(gwt_stop(&gwt_fx.gw, SIGTERM, 5000), 0);
    log = gwt_log_read(&gwt_fx.gw);
    assert_non_null(log);
    assert_null(strstr(log, PASSWORD));
    free(log);
    gwt_stop_and_cleanup(&redis);
}

/* A server certificate from another CA, or for another name: refused, a
 * log line saying why, /health disconnected, closed mode 503 and open mode
 * lets requests through. REDIS_TLS_VERIFY=off accepts it, with a warning. */
static void test_tls_wrong_ca_and_verify_off(void **state)
{
    (void)state;
    struct gwt_proc redis;
    int port;
    tls_redis_start(&redis, &port, 0, false, NULL);
    char url[96], wrong[256], ca[256];
    url_env(url, sizeof(url), "rediss", "127.0.0.1", port);
    env_kv(wrong, sizeof(wrong), "REDIS_TLS_CA_FILE", g_wrong_ca);
    env_kv(ca, sizeof(ca), "REDIS_TLS_CA_FILE", g_ca);

    const char *closed[] = {url, wrong, "RATE_LIMIT_REQUESTS=3", "RATE_LIMIT_FAILURE_MODE=closed",
                            NULL};
    gwt_suite_start_gw2(closed);
    assert_health_redis(gwt_fx.gport2, "disconnected", 5000);
    struct gwt_response r = {0};
    assert_int_equal(gwt_get(gwt_fx.gport2, "/users/1", &r), 0);
    assert_int_equal(r.status, 503);
    gwt_response_free(&r);
    char line[512];
    assert_int_equal(gwt_wait_log(&gwt_fx.gw2, "certificate refused", 5000, line, sizeof(line)), 0);
    print_message("wrong CA logged: %s\n", line);
    assert_int_equal(gwt_stop(&gwt_fx.gw2, SIGTERM, 5000), 0);
    gwt_proc_cleanup(&gwt_fx.gw2);

    /* The right CA but a name the certificate does not carry. */
    const char *badname[] = {url,
                             ca,
                             "REDIS_TLS_SERVER_NAME=redis.example.net",
                             "RATE_LIMIT_REQUESTS=3",
                             "RATE_LIMIT_FAILURE_MODE=open",
                             NULL};
    gwt_suite_start_gw2(badname);
    assert_health_redis(gwt_fx.gport2, "disconnected", 5000);
    int st[5];
    statuses(gwt_fx.gport2, 5, st); /* open: all through */
    for (int i = 0; i < 5; i++)
        assert_int_equal(st[i], 200);
    assert_int_equal(gwt_wait_log(&gwt_fx.gw2, "certificate refused", 5000, line, sizeof(line)), 0);
    print_message("wrong name logged: %s\n", line);
    assert_int_equal(gwt_stop(&gwt_fx.gw2, SIGTERM, 5000), 0);
    gwt_proc_cleanup(&gwt_fx.gw2);

    const char *off[] = {url,
                         "REDIS_TLS_VERIFY=off",
                         "RATE_LIMIT_REQUESTS=3",
                         "RATE_LIMIT_FAILURE_MODE=closed",
                         "RATE_LIMIT_KEY_PREFIX=noverify",
                         NULL};
    gwt_suite_start_gw2(off);
    assert_int_equal(gwt_wait_log(&gwt_fx.gw2, "REDIS_TLS_VERIFY=off", 5000, NULL, 0), 0);
    assert_health_redis(gwt_fx.gport2, "connected", 5000);
    assert_limits_at_3(gwt_fx.gport2);
    gwt_stop_and_cleanup(&redis);
}

/* Bad TLS and deployment settings are start-up errors, exit 2, one line
 * naming each variable. */
static void test_tls_config_errors(void **state)
{
    (void)state;
    static const struct {
        const char *env[4];
        const char *want;
    } cases[] = {
        {{"REDIS_URL=rediss://127.0.0.1:6380", "REDIS_TLS_CA_FILE=/nonexistent/ca.pem"},
         "config error: REDIS_TLS_CA_FILE=/nonexistent/ca.pem: cannot read the file"},
        {{"REDIS_URL=redis://127.0.0.1:6380", "REDIS_TLS_CA_FILE=/etc/hostname"},
         "config error: REDIS_TLS_CA_FILE=/etc/hostname: set, but TLS to Redis is off"},
        {{"REDIS_URL=rediss://127.0.0.1:6380", "REDIS_TLS_CA_FILE=/etc/hostname"},
         "config error: REDIS_TLS_CA_FILE=/etc/hostname: no PEM certificate"},
        {{"REDIS_URL=redis://127.0.0.1:6380", "REDIS_TLS=on"}, "config error: REDIS_TLS=on"},
        {{"REDIS_URL=redis://127.0.0.1:6380", "REDIS_TLS_VERIFY=maybe"},
         "config error: REDIS_TLS_VERIFY=maybe"},
        {{"REDIS_URL=redis://127.0.0.1:6380", "REDIS_SENTINELS=127.0.0.1:26379",
          "REDIS_SENTINEL_MASTER=m"},
         "only one of REDIS_URL, REDIS_SENTINELS and REDIS_CLUSTER_NODES"},
        {{"REDIS_CLUSTER_NODES=127.0.0.1:7000", "REDIS_DB=1"}, "config error: REDIS_DB=1"},
        {{"REDIS_SENTINELS=127.0.0.1:26379"}, "needs REDIS_SENTINEL_MASTER"},
        {{"REDIS_SENTINELS=127.0.0.1:0", "REDIS_SENTINEL_MASTER=m"},
         "config error: REDIS_SENTINELS=127.0.0.1:0"},
        {{"REDIS_URL=redis://127.0.0.1:6380/2", "REDIS_DB=3"}, "config error: REDIS_DB=3"},
        {{"REDIS_URL=redis://127.0.0.1:6380", "REDIS_USERNAME=app"},
         "config error: REDIS_USERNAME=app: needs a password"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *args[] = {"--check-config", NULL};
        char *err = NULL;
        int rc = gwt_gateway_run(args, cases[i].env, 10000, NULL, &err);
        if (rc != 2 || err == NULL || strstr(err, cases[i].want) == NULL)
            fail_msg("case %zu: exit %d, stderr \"%s\", wanted \"%s\"", i, rc,
                     err != NULL ? err : "", cases[i].want);
        free(err);
    }
    /* A client certificate with its key, valid: accepted. */
    char ca[256], crt[256], key[256];
    env_kv(ca, sizeof(ca), "REDIS_TLS_CA_FILE", g_ca);
    env_kv(crt, sizeof(crt), "REDIS_TLS_CERT_FILE", g_cli);
    env_kv(key, sizeof(key), "REDIS_TLS_KEY_FILE", g_srv_key); /* not its key */
    const char *mismatch[] = {"REDIS_URL=rediss://127.0.0.1:6380", ca, crt, key, NULL};
    const char *args[] = {"--check-config", NULL};
    char *err = NULL;
    assert_int_equal(gwt_gateway_run(args, mismatch, 10000, NULL, &err), 2);
    assert_non_null(strstr(err, "REDIS_TLS_KEY_FILE"));
    assert_non_null(strstr(err, "does not match"));
    free(err);
    env_kv(key, sizeof(key), "REDIS_TLS_KEY_FILE", g_cli_key);
    err = NULL;
    assert_int_equal(gwt_gateway_run(args, mismatch, 10000, NULL, &err), 0);
    free(err);
}

/* ---- the check's round trip: TLS against plaintext ------------------------ */

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

/* n one-key checks through a store on target; p50 and p99 in µs. */
static void time_checks(const struct gw_redis_target *t, int n, long long *p50, long long *p99)
{
    struct gw_rl_redis *r = NULL;
    assert_int_equal(gw_rl_redis_create(&r, t, 1000), 0);
    assert_int_equal(gw_rl_redis_connect(r), 0);
    long long *us = calloc((size_t)n, sizeof(*us));
    assert_non_null(us);
    struct gw_rl_spec spec = {
        .algorithm = GW_RL_FIXED_WINDOW, .limit = 1000000000, .window_ms = 60000};
    for (int i = 0; i < n + 200; i++) {
        char key[32];
        int kl = snprintf(key, sizeof(key), "bench:{%d}:l:p", i % 64);
        const char *keys[] = {key};
        size_t lens[] = {(size_t)kl};
        struct gw_rl_op op = {.key = 0, .spec = 0};
        struct gw_rl_unit unit = {.first = 0, .n = 1};
        struct gw_rl_pass pass = {.keys = keys,
                                  .key_lens = lens,
                                  .nkeys = 1,
                                  .specs = &spec,
                                  .nspecs = 1,
                                  .ops = &op,
                                  .nops = 1,
                                  .units = &unit,
                                  .nunits = 1};
        long long t0 = (long long)gw_now_us();
        assert_int_equal(gw_rl_redis_apply(r, &pass), 0);
        assert_int_equal(unit.result, GW_RL_UNIT_ALLOWED);
        if (i >= 200) /* warm-up first */
            us[i - 200] = (long long)gw_now_us() - t0;
    }
    if (t->tls) {
        /* A reconnect resumes the TLS session (abbreviated handshake). */
        assert_false(gw_rl_redis_tls_resumed(r));
        gw_rl_redis_disconnect(r);
        assert_int_equal(gw_rl_redis_connect(r), 0);
        assert_true(gw_rl_redis_tls_resumed(r));
    }
    qsort(us, (size_t)n, sizeof(*us), cmp_ll);
    *p50 = us[n / 2];
    *p99 = us[n * 99 / 100];
    free(us);
    gw_rl_redis_ops.destroy(r);
}

static void test_tls_check_latency(void **state)
{
    (void)state;
    struct gwt_proc redis;
    int port, plain = gwt_free_port();
    assert_true(plain > 0);
    tls_redis_start(&redis, &port, plain, false, NULL);
    struct gw_redis_target tt = {
        .host = "127.0.0.1", .port = port, .tls = true, .tls_verify = true, .tls_ca_file = g_ca};
    struct gw_redis_target pt = {.host = "127.0.0.1", .port = plain};
    long long tls50, tls99, pl50, pl99;
    const int n = 3000;
    time_checks(&pt, n, &pl50, &pl99);
    time_checks(&tt, n, &tls50, &tls99);
    print_message("check round trip over %d calls: plaintext p50 %lld us p99 %lld us; "
                  "TLS p50 %lld us p99 %lld us\n",
                  n, pl50, pl99, tls50, tls99);
    /* Loose: only that TLS is the same order of magnitude (sessions are not
     * renegotiated per command). */
    assert_true(tls50 < 10 * pl50 + 1000);
    gwt_stop_and_cleanup(&redis);
}

static int group_setup(void **state)
{
    if (gwt_tls_certs_make(&g_certs) != 0)
        return -1;
    return gwt_suite_setup(0);
}

static int group_teardown(void **state)
{
    int rc = gwt_suite_teardown(state);
    gwt_tls_certs_remove(&g_certs);
    return rc;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        GWT_TEST(test_tls_limits_exactly),          GWT_TEST(test_tls_client_cert_and_password),
        GWT_TEST(test_tls_wrong_ca_and_verify_off), GWT_TEST(test_tls_config_errors),
        GWT_TEST(test_tls_check_latency),
    };
    if (getenv("GWT_FILTER") != NULL)
        cmocka_set_test_filter(getenv("GWT_FILTER"));
    return cmocka_run_group_tests_name("redis_tls", tests, group_setup, group_teardown);
}
