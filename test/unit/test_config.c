/*
 * Unit tests of src/config.c: defaults, every value type in its valid and
 * invalid forms, accumulated errors, BACKEND_URL / REDIS_URL / TRUSTED_PROXIES
 * parsing, masking in --check-config JSON, env files, and that the committed
 * gateway.env.example is exactly what the table generates.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <jansson.h>

#include "gw/config.h"
#include "gwt_config.h"

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s != '\0'; s++)
        n += *s == '\n';
    return n;
}

/* name=value loads without error; cfg is left loaded for the caller. */
static void expect_ok(struct gw_config *cfg, const char *name, const char *value)
{
    char *err = NULL;
    int rc = gwt_config_load_kv(cfg, GWT_KV({name, value}), &err);
    if (rc != 0)
        fail_msg("%s=%s: expected success, got %d: %s", name, value, rc, err);
    assert_string_equal(err, "");
    free(err);
}

/* name=value gives exactly one error line, which names the variable and
 * value and contains needle (may be NULL). */
static void expect_bad(const char *name, const char *value, const char *needle)
{
    struct gw_config cfg;
    char *err = NULL;
    int rc = gwt_config_load_kv(&cfg, GWT_KV({name, value}), &err);
    if (rc != 1)
        fail_msg("%s=\"%s\": expected 1 error, got %d: %s", name, value, rc, err);
    char head[512];
    snprintf(head, sizeof(head), "config error: %s=%s: ", name, value);
    if (strncmp(err, head, strlen(head)) != 0)
        fail_msg("expected prefix \"%s\", got \"%s\"", head, err);
    assert_int_equal(count_lines(err), 1);
    if (needle != NULL && strstr(err, needle) == NULL)
        fail_msg("expected \"%s\" in \"%s\"", needle, err);
    free(err);
    gw_config_deinit(&cfg);
}

static char *capture_example(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(gw_config_print_env_example(f), 0);
    assert_int_equal(fclose(f), 0);
    return buf;
}

/* Names of every variable, from the KEY= lines of the generated example.
 * Returns the count; names[i] are malloc'd. */
static int variable_names(char *names[], int cap)
{
    char *text = capture_example();
    int n = 0;
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        if (line[0] == '#')
            continue;
        char *eq = strchr(line, '=');
        assert_non_null(eq);
        assert_true(n < cap);
        names[n++] = strndup(line, (size_t)(eq - line));
    }
    free(text);
    return n;
}

/* Removes every gateway variable from the real environment, so tests that
 * use it start clean whatever the caller's shell exported. */
static void unset_gateway_env(void)
{
    char *names[64];
    int n = variable_names(names, 64);
    for (int i = 0; i < n; i++) {
        unsetenv(names[i]);
        free(names[i]);
    }
}

static void addr_v4(uint8_t out[16], const char *s)
{
    memset(out, 0, 16);
    out[10] = out[11] = 0xff;
    assert_int_equal(inet_pton(AF_INET, s, out + 12), 1);
}

static void addr_v6(uint8_t out[16], const char *s)
{
    assert_int_equal(inet_pton(AF_INET6, s, out), 1);
}

static bool trusted_v4(const struct gw_config *cfg, const char *s)
{
    uint8_t a[16];
    addr_v4(a, s);
    return gw_config_is_trusted(cfg, a);
}

static bool trusted_v6(const struct gw_config *cfg, const char *s)
{
    uint8_t a[16];
    addr_v6(a, s);
    return gw_config_is_trusted(cfg, a);
}

/* ---- defaults ------------------------------------------------------------ */

static void test_defaults(void **state)
{
    struct gw_config cfg;
    char *err = NULL;
    assert_int_equal(gwt_config_load_kv(&cfg, GWT_KV({"UNRELATED", "x"}), &err), 0);
    assert_string_equal(err, "");
    free(err);

    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    assert_string_equal(cfg.gateway_host, "0.0.0.0");
    assert_int_equal(cfg.gateway_port, 8000);
    assert_string_equal(cfg.backend_url, "http://127.0.0.1:8001");
    assert_string_equal(cfg.backend_host, "127.0.0.1");
    assert_int_equal(cfg.backend_port, 8001);
    assert_string_equal(cfg.backend_base_path, "");
    assert_string_equal(cfg.backend_authority, "127.0.0.1:8001");
    assert_int_equal(cfg.worker_threads, cpus < 1 ? 1 : (cpus > 256 ? 256 : cpus));
    assert_int_equal(cfg.max_connections, 10000);
    assert_null(cfg.redis_url);
    assert_int_equal(cfg.redis_timeout_ms, 100);
    assert_int_equal(cfg.rate_limit_requests, 5);
    assert_int_equal(cfg.rate_limit_window_s, 60);
    assert_int_equal(cfg.rate_limit_algorithm, GW_RL_FIXED_WINDOW);
    assert_string_equal(cfg.rate_limit_key, "ip");
    assert_null(cfg.rate_limit_key_header);
    assert_string_equal(cfg.rate_limit_key_prefix, "rl");
    assert_int_equal(cfg.rate_limit_failure_mode, GW_RL_FAIL_OPEN);
    assert_false(cfg.rate_limit_dry_run);
    assert_true(cfg.rate_limit_headers);
    assert_string_equal(cfg.trusted_proxies, "");
    assert_int_equal(cfg.trusted_count, 0);
    assert_int_equal(cfg.max_concurrent_requests, 100);
    assert_int_equal(cfg.max_queue_length, 1000);
    assert_int_equal(cfg.queue_timeout_ms, 5000);
    assert_int_equal(cfg.upstream_connect_timeout_ms, 2000);
    assert_int_equal(cfg.upstream_timeout_ms, 30000);
    assert_int_equal(cfg.upstream_keepalive, 100); /* auto = MAX_CONCURRENT_REQUESTS */
    assert_int_equal(cfg.upstream_idle_timeout_ms, 60000);
    assert_int_equal(cfg.max_connections_per_client, 0);
    assert_int_equal(cfg.client_timeout_ms, 60000);
    assert_int_equal(cfg.max_header_bytes, 16384);
    assert_true(cfg.max_body_bytes == 10485760);
    assert_true(cfg.preserve_host);
    assert_string_equal(cfg.health_path, "/health");
    assert_string_equal(cfg.stats_path, "/stats");
    assert_string_equal(cfg.metrics_path, "/metrics");
    assert_int_equal(cfg.shutdown_timeout_ms, 10000);
    assert_int_equal(cfg.log_level, GW_LOG_INFO);
    assert_true(cfg.access_log);
    gw_config_deinit(&cfg);
    assert_null(cfg.gateway_host);
    gw_config_deinit(&cfg); /* safe on a zeroed struct */
}

/* ---- integers -------------------------------------------------------------- */

static void test_int_valid(void **state)
{
    struct gw_config cfg;
    expect_ok(&cfg, "GATEWAY_PORT", "0");
    assert_int_equal(cfg.gateway_port, 0);
    gw_config_deinit(&cfg);
    expect_ok(&cfg, "GATEWAY_PORT", "65535");
    assert_int_equal(cfg.gateway_port, 65535);
    gw_config_deinit(&cfg);
    expect_ok(&cfg, "GATEWAY_PORT", "08080"); /* decimal, not octal */
    assert_int_equal(cfg.gateway_port, 8080);
    gw_config_deinit(&cfg);
    expect_ok(&cfg, "WORKER_THREADS", "3");
    assert_int_equal(cfg.worker_threads, 3);
    gw_config_deinit(&cfg);
    expect_ok(&cfg, "MAX_HEADER_BYTES", "1024");
    assert_int_equal(cfg.max_header_bytes, 1024);
    gw_config_deinit(&cfg);
    expect_ok(&cfg, "MAX_QUEUE_LENGTH", "0");
    assert_int_equal(cfg.max_queue_length, 0);
    gw_config_deinit(&cfg);
    expect_ok(&cfg, "RATE_LIMIT_WINDOW_SECONDS", "31622400");
    assert_int_equal(cfg.rate_limit_window_s, 86400 * 366);
    gw_config_deinit(&cfg);
    expect_ok(&cfg, "RATE_LIMIT_REQUESTS", "1000000000");
    assert_int_equal(cfg.rate_limit_requests, 1000000000);
    gw_config_deinit(&cfg);
    expect_ok(&cfg, "UPSTREAM_KEEPALIVE", "0");
    assert_int_equal(cfg.upstream_keepalive, 0);
    gw_config_deinit(&cfg);
    expect_ok(&cfg, "UPSTREAM_KEEPALIVE", "7");
    assert_int_equal(cfg.upstream_keepalive, 7);
    gw_config_deinit(&cfg);
    expect_ok(&cfg, "MAX_CONNECTIONS_PER_CLIENT", "64");
    assert_int_equal(cfg.max_connections_per_client, 64);
    gw_config_deinit(&cfg);

    /* auto follows MAX_CONCURRENT_REQUESTS wherever that row stands. */
    char *err = NULL;
    assert_int_equal(
        gwt_config_load_kv(
            &cfg, GWT_KV({"UPSTREAM_KEEPALIVE", "auto"}, {"MAX_CONCURRENT_REQUESTS", "333"}), &err),
        0);
    assert_int_equal(cfg.upstream_keepalive, 333);
    free(err);
    gw_config_deinit(&cfg);
}

static void test_int_invalid(void **state)
{
    static const char *const bad_syntax[] = {
        "abc", "12x", " 5", "5 ", "+5", "0x10", "1e3", "-", "--1", "5.0", "1 2",
    };
    for (size_t i = 0; i < sizeof(bad_syntax) / sizeof(bad_syntax[0]); i++)
        expect_bad("GATEWAY_PORT", bad_syntax[i], "not an integer");
    static const char *const bad_range[] = {
        "-1", "65536", "99999999999999999999", "-99999999999999999999", "9223372036854775807",
    };
    for (size_t i = 0; i < sizeof(bad_range) / sizeof(bad_range[0]); i++)
        expect_bad("GATEWAY_PORT", bad_range[i], "out of range (0..65535)");
    expect_bad("GATEWAY_PORT", "", "empty value");
    expect_bad("WORKER_THREADS", "257", "out of range (0..256)");
    expect_bad("MAX_CONNECTIONS", "0", "out of range");
    expect_bad("MAX_HEADER_BYTES", "1023", "out of range (1024..1048576)");
    expect_bad("UPSTREAM_TIMEOUT_MS", "0", "out of range (1..3600000)");
    expect_bad("SHUTDOWN_TIMEOUT_MS", "3600001", "out of range");
    expect_bad("RATE_LIMIT_WINDOW_SECONDS", "31622401", "out of range");
    expect_bad("UPSTREAM_KEEPALIVE", "-1", "out of range (0..1000000)");
    expect_bad("UPSTREAM_KEEPALIVE", "AUTO", "not an integer");
    expect_bad("UPSTREAM_KEEPALIVE", "autox", "not an integer");
    expect_bad("GATEWAY_PORT", "auto", "not an integer"); /* only rows that say so */
    expect_bad("UPSTREAM_IDLE_TIMEOUT_MS", "0", "out of range (1..3600000)");
    expect_bad("MAX_CONNECTIONS_PER_CLIENT", "-1", "out of range");

    /* A bad value never falls back to the default, and the exact line. */
    struct gw_config cfg;
    char *err = NULL;
    assert_int_equal(gwt_config_load_kv(&cfg, GWT_KV({"GATEWAY_PORT", "abc"}), &err), 1);
    assert_string_equal(err, "config error: GATEWAY_PORT=abc: not an integer\n");
    assert_int_not_equal(cfg.gateway_port, 8000);
    free(err);
    gw_config_deinit(&cfg);

    /* Control bytes are escaped so one error stays one line. */
    assert_int_equal(gwt_config_load_kv(&cfg, GWT_KV({"GATEWAY_PORT", "1\n2"}), &err), 1);
    assert_string_equal(err, "config error: GATEWAY_PORT=1\\x0a2: not an integer\n");
    free(err);
    gw_config_deinit(&cfg);
}

static void test_int64(void **state)
{
    struct gw_config cfg;
    expect_ok(&cfg, "MAX_BODY_BYTES", "0");
    assert_true(cfg.max_body_bytes == 0);
    gw_config_deinit(&cfg);
    expect_ok(&cfg, "MAX_BODY_BYTES", "4611686018427387904");
    assert_true(cfg.max_body_bytes == (INT64_C(1) << 62));
    gw_config_deinit(&cfg);
    expect_ok(&cfg, "MAX_BODY_BYTES", "5000000000");
    assert_true(cfg.max_body_bytes == INT64_C(5000000000));
    gw_config_deinit(&cfg);
    expect_bad("MAX_BODY_BYTES", "4611686018427387905", "out of range");
    expect_bad("MAX_BODY_BYTES", "9223372036854775808", "out of range");
    expect_bad("MAX_BODY_BYTES", "-1", "out of range");
    expect_bad("MAX_BODY_BYTES", "10M", "not an integer");
}

/* ---- booleans and enums ---------------------------------------------------- */

static void test_bool(void **state)
{
    static const char *const yes[] = {"on", "ON", "true", "True", "TRUE", "1"};
    static const char *const no[] = {"off", "Off", "false", "FALSE", "0"};
    struct gw_config cfg;
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        expect_ok(&cfg, "RATE_LIMIT_DRY_RUN", yes[i]);
        assert_true(cfg.rate_limit_dry_run);
        gw_config_deinit(&cfg);
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        expect_ok(&cfg, "ACCESS_LOG", no[i]);
        assert_false(cfg.access_log);
        gw_config_deinit(&cfg);
    }
    static const char *const bad[] = {"yes", "no", "2", "onn", " on", "of", "t"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_bad("PRESERVE_HOST", bad[i], "not a boolean");
    expect_bad("RATE_LIMIT_HEADERS", "", "empty value");

    bool b = false;
    assert_true(gw_config_parse_bool("On", &b));
    assert_true(b);
    assert_true(gw_config_parse_bool("0", &b));
    assert_false(b);
    assert_false(gw_config_parse_bool("", &b));
}

static void test_enum(void **state)
{
    static const struct {
        const char *text;
        int value;
    } levels[] = {{"debug", GW_LOG_DEBUG},
                  {"INFO", GW_LOG_INFO},
                  {"Warn", GW_LOG_WARN},
                  {"error", GW_LOG_ERROR}};
    struct gw_config cfg;
    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
        expect_ok(&cfg, "LOG_LEVEL", levels[i].text);
        assert_int_equal(cfg.log_level, levels[i].value);
        gw_config_deinit(&cfg);
    }
    expect_ok(&cfg, "RATE_LIMIT_FAILURE_MODE", "closed");
    assert_int_equal(cfg.rate_limit_failure_mode, GW_RL_FAIL_CLOSED);
    gw_config_deinit(&cfg);
    expect_ok(&cfg, "RATE_LIMIT_FAILURE_MODE", "local");
    assert_int_equal(cfg.rate_limit_failure_mode, GW_RL_FAIL_LOCAL);
    gw_config_deinit(&cfg);
    expect_ok(&cfg, "RATE_LIMIT_ALGORITHM", "fixed_window");
    assert_int_equal(cfg.rate_limit_algorithm, GW_RL_FIXED_WINDOW);
    gw_config_deinit(&cfg);

    expect_bad("LOG_LEVEL", "verbose", "must be one of debug, info, warn, error");
    expect_bad("RATE_LIMIT_FAILURE_MODE", "half", "must be one of open, closed, local");
    expect_bad("RATE_LIMIT_ALGORITHM", "leaky_bucket",
               "must be one of fixed_window, sliding_window, token_bucket, gcra");
    expect_bad("LOG_LEVEL", "", "empty value");

    /* Every algorithm of SPEC.md §5.1 is accepted; gcra is token_bucket's
     * other name. */
    static const struct {
        const char *text;
        int value;
    } algos[] = {{"sliding_window", GW_RL_SLIDING_WINDOW},
                 {"token_bucket", GW_RL_TOKEN_BUCKET},
                 {"gcra", GW_RL_GCRA}};
    for (size_t i = 0; i < sizeof(algos) / sizeof(algos[0]); i++) {
        expect_ok(&cfg, "RATE_LIMIT_ALGORITHM", algos[i].text);
        assert_int_equal(cfg.rate_limit_algorithm, algos[i].value);
        gw_config_deinit(&cfg);
    }
    expect_ok(&cfg, "RATE_LIMIT_BURST", "20");
    assert_int_equal(cfg.rate_limit_burst, 20);
    gw_config_deinit(&cfg);
    expect_bad("RATE_LIMIT_BURST", "-1", "out of range (0..1000000000)");
}

/* ---- strings, paths, listen address, rate-limit key ------------------------ */

static void test_strings_and_paths(void **state)
{
    struct gw_config cfg;
    expect_ok(&cfg, "RATE_LIMIT_KEY_PREFIX", "gw:rl");
    assert_string_equal(cfg.rate_limit_key_prefix, "gw:rl");
    gw_config_deinit(&cfg);
    expect_bad("RATE_LIMIT_KEY_PREFIX", "", "empty value");
    expect_bad("RATE_LIMIT_KEY_PREFIX", "a b", "spaces");
    char long_prefix[130];
    memset(long_prefix, 'p', 129);
    long_prefix[129] = '\0';
    expect_bad("RATE_LIMIT_KEY_PREFIX", long_prefix, "length must be 1..128");

    expect_ok(&cfg, "HEALTH_PATH", "/healthz");
    assert_string_equal(cfg.health_path, "/healthz");
    gw_config_deinit(&cfg);
    expect_ok(&cfg, "METRICS_PATH", "/-/metrics");
    assert_string_equal(cfg.metrics_path, "/-/metrics");
    gw_config_deinit(&cfg);
    expect_bad("HEALTH_PATH", "health", "must start with '/'");
    expect_bad("STATS_PATH", "", "empty value");
    expect_bad("STATS_PATH", "/a b", "spaces");
    expect_bad("METRICS_PATH", "/m?x=1", "'?' or '#'");

    /* Two endpoints on one path would hide one of them. */
    char *err = NULL;
    assert_int_equal(gwt_config_load_kv(&cfg, GWT_KV({"STATS_PATH", "/health"}), &err), 1);
    assert_string_equal(err, "config error: STATS_PATH=/health: same path as HEALTH_PATH\n");
    free(err);
    gw_config_deinit(&cfg);
}

static void test_gateway_host(void **state)
{
    static const char *const good[] = {"0.0.0.0",   "::",        "::1",       "127.0.0.1",
                                       "localhost", "LocalHost", "fe80::1:2", "::ffff:10.0.0.1"};
    struct gw_config cfg;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        expect_ok(&cfg, "GATEWAY_HOST", good[i]);
        assert_string_equal(cfg.gateway_host, good[i]);
        gw_config_deinit(&cfg);
    }
    static const char *const bad[] = {"example.com", "[::1]",      "256.1.1.1", "1.2.3",
                                      " 0.0.0.0",    "0.0.0.0:80", ":::"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_bad("GATEWAY_HOST", bad[i], "IPv4 or IPv6 address literal");
    expect_bad("GATEWAY_HOST", "", "empty value");
}

static void test_rate_limit_key(void **state)
{
    struct gw_config cfg;
    expect_ok(&cfg, "RATE_LIMIT_KEY", "ip");
    assert_string_equal(cfg.rate_limit_key, "ip");
    assert_null(cfg.rate_limit_key_header);
    gw_config_deinit(&cfg);
    expect_ok(&cfg, "RATE_LIMIT_KEY", "header:X-API-Key");
    assert_string_equal(cfg.rate_limit_key, "header:X-API-Key");
    assert_string_equal(cfg.rate_limit_key_header, "X-API-Key");
    gw_config_deinit(&cfg);
    expect_ok(&cfg, "RATE_LIMIT_KEY", "header:x_token!#$%&'*+.^`|~9");
    assert_string_equal(cfg.rate_limit_key_header, "x_token!#$%&'*+.^`|~9");
    gw_config_deinit(&cfg);

    expect_bad("RATE_LIMIT_KEY", "header:", "missing header name");
    expect_bad("RATE_LIMIT_KEY", "header:X Key", "valid HTTP token");
    expect_bad("RATE_LIMIT_KEY", "header:X:Y", "valid HTTP token");
    expect_bad("RATE_LIMIT_KEY", "header:X(1)", "valid HTTP token");
    expect_bad("RATE_LIMIT_KEY", "cookie:session", "must be ip or header:<Name>");
    expect_bad("RATE_LIMIT_KEY", "ipv4", "must be ip or header:<Name>");
    expect_bad("RATE_LIMIT_KEY", "", "empty value");
}

/* ---- BACKEND_URL ------------------------------------------------------------ */

static void test_backend_url_valid(void **state)
{
    static const struct {
        const char *url, *host;
        int port;
        const char *base, *authority;
    } cases[] = {
        {"http://127.0.0.1:8001", "127.0.0.1", 8001, "", "127.0.0.1:8001"},
        {"http://backend", "backend", 80, "", "backend:80"},
        {"http://backend.svc.cluster.local:9000/", "backend.svc.cluster.local", 9000, "",
         "backend.svc.cluster.local:9000"},
        {"http://[::1]:9000/api/v1/", "::1", 9000, "/api/v1", "[::1]:9000"},
        {"http://[2001:db8::10]", "2001:db8::10", 80, "", "[2001:db8::10]:80"},
        {"http://[::ffff:10.0.0.1]:81/x", "::ffff:10.0.0.1", 81, "/x", "[::ffff:10.0.0.1]:81"},
        {"HTTP://Example.COM:80/base//", "Example.COM", 80, "/base", "Example.COM:80"},
        {"http://10.0.0.5:65535/a/b", "10.0.0.5", 65535, "/a/b", "10.0.0.5:65535"},
        {"http://my_host:1/%7Euser", "my_host", 1, "/%7Euser", "my_host:1"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct gw_config cfg;
        expect_ok(&cfg, "BACKEND_URL", cases[i].url);
        assert_string_equal(cfg.backend_url, cases[i].url);
        assert_string_equal(cfg.backend_host, cases[i].host);
        assert_int_equal(cfg.backend_port, cases[i].port);
        assert_string_equal(cfg.backend_base_path, cases[i].base);
        assert_string_equal(cfg.backend_authority, cases[i].authority);
        gw_config_deinit(&cfg);
    }
}

static void test_backend_url_invalid(void **state)
{
    static const struct {
        const char *url, *reason;
    } cases[] = {
        {"https://example.com", "https is not supported"},
        {"ftp://example.com", "unsupported scheme"},
        {"127.0.0.1:8001", "not a URL"},
        {"http://", "missing host"},
        {"http://:80", "missing host"},
        {"http://h:0", "port must be a number between 1 and 65535"},
        {"http://h:65536", "port must be"},
        {"http://h:80x", "port must be"},
        {"http://h:1/api/../x", "dot-segments (. or ..) are not allowed in the base path"},
        {"http://h:1/./api", "dot-segments (. or ..) are not allowed in the base path"},
        {"http://h:1/api/%2E%2e", "dot-segments (. or ..) are not allowed in the base path"},
        {"http://h:-1", "port must be"},
        {"http://h:", "missing port"},
        {"http://[::1", "missing ']'"},
        {"http://[zz::]:80", "invalid IPv6"},
        {"http://[1.2.3.4]:80", "invalid IPv6"},
        {"http://[]:80", "invalid IPv6"},
        {"http://::1:80", "brackets"},
        {"http://[::1]x", "unexpected characters after ']'"},
        {"http://u:p@h", "user information"},
        {"http://h/a?b", "query"},
        {"http://h?x", "query"},
        {"http://h#frag", "query"},
        {"http://h/a b", "spaces"},
        {"http://300.1.1.1", "invalid IPv4"},
        {"http://a..b", "empty label"},
        {"http://h!x", "invalid character"},
        {"", "empty value"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_bad("BACKEND_URL", cases[i].url, cases[i].reason);
}

/* ---- REDIS_URL ---------------------------------------------------------------- */

static void test_redis_url_valid(void **state)
{
    static const struct {
        const char *url, *host, *unix_path, *user, *password;
        int port, db;
    } cases[] = {
        {"redis://localhost", "localhost", NULL, NULL, NULL, 6379, 0},
        {"redis://:secret@10.0.0.1:6380/2", "10.0.0.1", NULL, NULL, "secret", 6380, 2},
        {"redis://[::1]:6379/0", "::1", NULL, NULL, NULL, 6379, 0},
        {"redis://app:p%40ss%3Aw@redis.internal/15", "redis.internal", NULL, "app", "p@ss:w", 6379,
         15},
        {"redis://:p@ss@h", "h", NULL, NULL, "p@ss", 6379, 0},
        {"redis://h/", "h", NULL, NULL, NULL, 6379, 0},
        {"unix:///var/run/redis.sock", NULL, "/var/run/redis.sock", NULL, NULL, 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct gw_redis_target t;
        char why[128] = "";
        int rc = gw_config_parse_redis_url(cases[i].url, &t, why, sizeof(why));
        if (rc != 0)
            fail_msg("%s: %s", cases[i].url, why);
        if (cases[i].host != NULL)
            assert_string_equal(t.host, cases[i].host);
        else
            assert_null(t.host);
        if (cases[i].unix_path != NULL)
            assert_string_equal(t.unix_path, cases[i].unix_path);
        else
            assert_null(t.unix_path);
        if (cases[i].user != NULL)
            assert_string_equal(t.username, cases[i].user);
        else
            assert_null(t.username);
        if (cases[i].password != NULL)
            assert_string_equal(t.password, cases[i].password);
        else
            assert_null(t.password);
        assert_int_equal(t.port, cases[i].port);
        assert_int_equal(t.db, cases[i].db);
        gw_config_redis_target_deinit(&t);
        assert_null(t.host);

        /* The config keeps the string exactly as given. */
        struct gw_config cfg;
        expect_ok(&cfg, "REDIS_URL", cases[i].url);
        assert_string_equal(cfg.redis_url, cases[i].url);
        gw_config_deinit(&cfg);
    }

    /* Empty means unset: the in-process store. */
    struct gw_config cfg;
    expect_ok(&cfg, "REDIS_URL", "");
    assert_null(cfg.redis_url);
    gw_config_deinit(&cfg);
}

static void test_redis_url_invalid(void **state)
{
    char long_path[200] = "unix:///";
    memset(long_path + 8, 'a', 150);
    long_path[158] = '\0';
    static const struct {
        const char *url, *reason;
    } cases[] = {
        {"http://h", "expected redis://"},
        {"h:6379", "expected redis://"},
        {"rediss://h:0", "port must be"},
        {"REDIS://h", "expected redis://"},
        {"redis://", "missing host"},
        {"redis://h:0", "port must be"},
        {"redis://h:abc", "port must be"},
        {"redis://h/abc", "database must be"},
        {"redis://h/-1", "database must be"},
        {"redis://h/0/1", "database must be"},
        {"redis://h?db=1", "query"},
        {"redis://:@h", "empty password"},
        {"redis://:%zz@h", "percent-encoding"},
        {"redis://:%00@h", "percent-encoding"},
        {"unix://relative.sock", "absolute"},
        {"unix:///", "absolute"},
        {"redis://h 1", "spaces"},
        {"redis://::1", "brackets"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        /* With a password the error shows it masked: checked further down. */
        if (strchr(cases[i].url, '@') == NULL)
            expect_bad("REDIS_URL", cases[i].url, cases[i].reason);
        struct gw_redis_target t;
        char why[128] = "";
        assert_int_equal(gw_config_parse_redis_url(cases[i].url, &t, why, sizeof(why)), -EINVAL);
        if (strstr(why, cases[i].reason) == NULL)
            fail_msg("%s: expected \"%s\" in \"%s\"", cases[i].url, cases[i].reason, why);
        assert_null(t.host);
        assert_null(t.password);
    }
    expect_bad("REDIS_URL", long_path, "too long");
}

static void test_redis_password_masked_in_errors(void **state)
{
    static const struct {
        const char *url, *shown;
    } cases[] = {
        {"redis://:hunter2@h:99999", "redis://:***@h:99999"},
        {"redis://user:hunter2@h/x", "redis://user:***@h/x"},
        {"redis://hunter2@h", "redis://***@h"},
        {":hunter2@h", ":***@h"},
        {"rediss://:hunter2@h:0", "rediss://:***@h:0"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct gw_config cfg;
        char *err = NULL;
        assert_int_equal(gwt_config_load_kv(&cfg, GWT_KV({"REDIS_URL", cases[i].url}), &err), 1);
        char want[128];
        snprintf(want, sizeof(want), "config error: REDIS_URL=%s: ", cases[i].shown);
        if (strncmp(err, want, strlen(want)) != 0)
            fail_msg("expected \"%s\" in \"%s\"", want, err);
        assert_null(strstr(err, "hunter2"));
        free(err);
        gw_config_deinit(&cfg);

        char why[128] = "";
        struct gw_redis_target t;
        assert_int_equal(gw_config_parse_redis_url(cases[i].url, &t, why, sizeof(why)), -EINVAL);
        assert_true(why[0] != '\0');
        assert_null(strstr(why, "hunter2"));
    }
}

/* ---- TRUSTED_PROXIES ------------------------------------------------------------ */

static void test_trusted_proxies_parse(void **state)
{
    struct gw_config cfg;
    const char *list = "10.1.2.3/8, 192.168.1.1 ,2001:db8::/32,\t::ffff:172.16.0.0/108, 0.0.0.0/0";
    expect_ok(&cfg, "TRUSTED_PROXIES", list);
    assert_string_equal(cfg.trusted_proxies, list);
    assert_int_equal(cfg.trusted_count, 5);
    static const int prefixes[] = {104, 128, 32, 108, 96};
    for (int i = 0; i < 5; i++)
        assert_int_equal(cfg.trusted[i].prefix, prefixes[i]);
    uint8_t a[16];
    addr_v4(a, "10.0.0.0"); /* host bits cleared */
    assert_memory_equal(cfg.trusted[0].addr, a, 16);
    addr_v4(a, "192.168.1.1");
    assert_memory_equal(cfg.trusted[1].addr, a, 16);
    addr_v6(a, "2001:db8::");
    assert_memory_equal(cfg.trusted[2].addr, a, 16);
    addr_v4(a, "172.16.0.0");
    assert_memory_equal(cfg.trusted[3].addr, a, 16);
    gw_config_deinit(&cfg);

    expect_ok(&cfg, "TRUSTED_PROXIES", "");
    assert_int_equal(cfg.trusted_count, 0);
    assert_string_equal(cfg.trusted_proxies, "");
    gw_config_deinit(&cfg);

    /* 64 entries fit, 65 do not. */
    char many[65 * 16] = "";
    for (int i = 0; i < 65; i++) {
        char one[20];
        snprintf(one, sizeof(one), "%s10.0.0.%d", i ? "," : "", i);
        strcat(many, one);
        if (i == 63) {
            expect_ok(&cfg, "TRUSTED_PROXIES", many);
            assert_int_equal(cfg.trusted_count, 64);
            gw_config_deinit(&cfg);
        }
    }
    expect_bad("TRUSTED_PROXIES", many, "more than 64 entries");

    static const struct {
        const char *list, *reason;
    } bad[] = {
        {"10.0.0.0/33", "entry \"10.0.0.0/33\": prefix length must be 0..32"},
        {"::/129", "prefix length must be 0..128"},
        {"10.0.0.0/", "prefix length"},
        {"10.0.0.0/x", "prefix length"},
        {"10.0.0.0/-1", "prefix length"},
        {"10.0.0.0/+8", "prefix length"},
        {"foo", "entry \"foo\": not an IPv4 or IPv6 address"},
        {"10.0.0.0/8,,1.1.1.1", "empty entry"},
        {"10.0.0.0/8,", "empty entry"},
        {"1.2.3.4 5.6.7.8", "not an IPv4 or IPv6 address"},
        {"[::1]", "not an IPv4 or IPv6 address"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_bad("TRUSTED_PROXIES", bad[i].list, bad[i].reason);
}

static void test_is_trusted(void **state)
{
    struct gw_config cfg;
    expect_ok(&cfg, "TRUSTED_PROXIES",
              "10.0.0.0/8,192.168.1.7/32,10.128.0.0/9,2001:db8::/33,::1/128");
    assert_true(trusted_v4(&cfg, "10.255.1.2"));
    assert_false(trusted_v4(&cfg, "11.0.0.1"));
    assert_true(trusted_v4(&cfg, "192.168.1.7"));
    assert_false(trusted_v4(&cfg, "192.168.1.8"));
    assert_true(trusted_v6(&cfg, "2001:db8:7fff::1"));
    assert_false(trusted_v6(&cfg, "2001:db8:8000::1")); /* bit 33 set */
    assert_false(trusted_v6(&cfg, "2001:db9::"));
    assert_true(trusted_v6(&cfg, "::1"));
    assert_false(trusted_v6(&cfg, "::2"));
    assert_true(trusted_v6(&cfg, "::ffff:10.1.1.1")); /* mapped form, written as IPv6 */
    assert_false(trusted_v6(&cfg, "::a01:101"));      /* IPv4-compatible is not mapped */
    assert_false(trusted_v4(&cfg, "0.0.0.1"));
    gw_config_deinit(&cfg);

    /* An odd prefix inside one byte. */
    expect_ok(&cfg, "TRUSTED_PROXIES", "10.128.0.0/9");
    assert_true(trusted_v4(&cfg, "10.200.0.1"));
    assert_false(trusted_v4(&cfg, "10.100.0.1"));
    gw_config_deinit(&cfg);

    /* IPv4 /0 is every IPv4 peer and no IPv6 one. */
    expect_ok(&cfg, "TRUSTED_PROXIES", "0.0.0.0/0");
    assert_true(trusted_v4(&cfg, "1.2.3.4"));
    assert_true(trusted_v4(&cfg, "255.255.255.255"));
    assert_false(trusted_v6(&cfg, "2001:db8::1"));
    gw_config_deinit(&cfg);

    /* IPv6 /0 is everybody, mapped IPv4 included. */
    expect_ok(&cfg, "TRUSTED_PROXIES", "::/0");
    assert_true(trusted_v6(&cfg, "2001:db8::1"));
    assert_true(trusted_v4(&cfg, "1.2.3.4"));
    gw_config_deinit(&cfg);

    /* A mapped /128 equals the bare IPv4 address. */
    expect_ok(&cfg, "TRUSTED_PROXIES", "::ffff:127.0.0.1/128");
    assert_true(trusted_v4(&cfg, "127.0.0.1"));
    assert_false(trusted_v4(&cfg, "127.0.0.2"));
    gw_config_deinit(&cfg);

    expect_ok(&cfg, "TRUSTED_PROXIES", "");
    assert_false(trusted_v4(&cfg, "127.0.0.1"));
    assert_false(trusted_v6(&cfg, "::1"));
    gw_config_deinit(&cfg);
}

/* ---- accumulated errors ---------------------------------------------------------- */

static void test_many_errors(void **state)
{
    static const char *const names[] = {"GATEWAY_PORT",       "LOG_LEVEL",       "BACKEND_URL",
                                        "RATE_LIMIT_DRY_RUN", "TRUSTED_PROXIES", "MAX_BODY_BYTES",
                                        "REDIS_URL"};
    struct gw_config cfg;
    char *err = NULL;
    int rc =
        gwt_config_load_kv(&cfg,
                           GWT_KV({"GATEWAY_PORT", "x"}, {"LOG_LEVEL", "loud"},
                                  {"BACKEND_URL", "https://h"}, {"RATE_LIMIT_DRY_RUN", "maybe"},
                                  {"TRUSTED_PROXIES", "1.2.3.4/40"}, {"MAX_BODY_BYTES", "-5"},
                                  {"REDIS_URL", "redis://:pw@h:0"}, {"MAX_CONNECTIONS", "500"}),
                           &err);
    assert_int_equal(rc, 7);
    assert_int_equal(count_lines(err), 7);
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char needle[64];
        snprintf(needle, sizeof(needle), "config error: %s=", names[i]);
        if (strstr(err, needle) == NULL)
            fail_msg("\"%s\" missing from: %s", needle, err);
    }
    for (const char *line = err; *line != '\0'; line = strchr(line, '\n') + 1)
        assert_int_equal(strncmp(line, "config error: ", 14), 0);
    /* The good variables around them still load. */
    assert_int_equal(cfg.max_connections, 500);
    assert_string_equal(cfg.gateway_host, "0.0.0.0");
    free(err);
    gw_config_deinit(&cfg);

    /* err may be NULL: the count is still returned. */
    assert_int_equal(gw_config_load(&cfg, gwt_kv_getenv,
                                    (void *)GWT_KV({"GATEWAY_PORT", "x"}, {"LOG_LEVEL", "x"}),
                                    NULL),
                     2);
    gw_config_deinit(&cfg);
}

/* ---- --check-config JSON ------------------------------------------------------------ */

static void test_print_json(void **state)
{
    struct gw_config cfg;
    assert_int_equal(
        gwt_config_load_kv(&cfg,
                           GWT_KV({"REDIS_URL", "redis://:s3cret@cache:6380/1"},
                                  {"WORKER_THREADS", "4"}, {"RATE_LIMIT_DRY_RUN", "on"},
                                  {"TRUSTED_PROXIES", "10.0.0.0/8"}, {"LOG_LEVEL", "WARN"},
                                  {"MAX_BODY_BYTES", "5000000000"}),
                           NULL),
        0);
    char *text = gwt_config_json(&cfg);
    gw_config_deinit(&cfg);
    assert_null(strstr(text, "s3cret"));
    size_t n = strlen(text);
    assert_true(n > 2 && text[n - 1] == '\n' && text[n - 2] == '}');

    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    if (j == NULL)
        fail_msg("invalid JSON: %s: %s", jerr.text, text);
    assert_true(json_is_object(j));
    assert_string_equal(json_string_value(json_object_get(j, "REDIS_URL")),
                        "redis://:***@cache:6380/1");
    assert_true(json_is_integer(json_object_get(j, "GATEWAY_PORT")));
    assert_int_equal(json_integer_value(json_object_get(j, "GATEWAY_PORT")), 8000);
    assert_int_equal(json_integer_value(json_object_get(j, "WORKER_THREADS")), 4);
    assert_true(json_is_integer(json_object_get(j, "MAX_BODY_BYTES")));
    assert_true(json_integer_value(json_object_get(j, "MAX_BODY_BYTES")) == 5000000000LL);
    assert_true(json_is_true(json_object_get(j, "RATE_LIMIT_DRY_RUN")));
    assert_true(json_is_true(json_object_get(j, "ACCESS_LOG")));
    assert_true(json_is_boolean(json_object_get(j, "PRESERVE_HOST")));
    assert_string_equal(json_string_value(json_object_get(j, "LOG_LEVEL")), "warn");
    assert_string_equal(json_string_value(json_object_get(j, "RATE_LIMIT_ALGORITHM")),
                        "fixed_window");
    assert_string_equal(json_string_value(json_object_get(j, "RATE_LIMIT_FAILURE_MODE")), "open");
    assert_string_equal(json_string_value(json_object_get(j, "TRUSTED_PROXIES")), "10.0.0.0/8");
    assert_string_equal(json_string_value(json_object_get(j, "BACKEND_URL")),
                        "http://127.0.0.1:8001");
    assert_string_equal(json_string_value(json_object_get(j, "HEALTH_PATH")), "/health");

    /* Exactly the variables of the table: the same set as the example. */
    char *names[64];
    int count = variable_names(names, 64);
    assert_int_equal(json_object_size(j), (size_t)count);
    for (int i = 0; i < count; i++) {
        if (json_object_get(j, names[i]) == NULL)
            fail_msg("%s missing from JSON", names[i]);
        free(names[i]);
    }
    json_decref(j);
    free(text);

    /* Unset REDIS_URL prints as null. */
    assert_int_equal(gwt_config_load_kv(&cfg, GWT_KV({"X", "y"}), NULL), 0);
    text = gwt_config_json(&cfg);
    gw_config_deinit(&cfg);
    j = json_loads(text, 0, &jerr);
    assert_non_null(j);
    assert_true(json_is_null(json_object_get(j, "REDIS_URL")));
    json_decref(j);
    free(text);

    /* A unix socket URL has nothing to mask. */
    assert_int_equal(gwt_config_load_kv(&cfg, GWT_KV({"REDIS_URL", "unix:///tmp/r.sock"}), NULL),
                     0);
    text = gwt_config_json(&cfg);
    gw_config_deinit(&cfg);
    assert_non_null(strstr(text, "\"unix:///tmp/r.sock\""));
    free(text);
}

/* ---- env files ----------------------------------------------------------------------- */

/* Writes content (len bytes) to a new temporary file; path gets its name. */
static void write_temp(char path[64], const char *content, size_t len)
{
    const char *dir = getenv("TMPDIR");
    snprintf(path, 64, "%s/gw_config_XXXXXX", dir != NULL && strlen(dir) < 40 ? dir : "/tmp");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, len), (ssize_t)len);
    assert_int_equal(close(fd), 0);
}

static void test_env_file(void **state)
{
    static const char *const test_vars[] = {"GW_T_ALPHA", "GW_T_BETA",  "GW_T_GAMMA", "GW_T_SPACED",
                                            "GW_T_DUP",   "GW_T_EMPTY", "GW_T_EQ",    "GW_T_CRLF"};
    unset_gateway_env();
    for (size_t i = 0; i < sizeof(test_vars) / sizeof(test_vars[0]); i++)
        unsetenv(test_vars[i]);

    static const char content[] = "# a comment\n"                  /* 1 */
                                  "\n"                             /* 2 */
                                  "export GW_T_ALPHA=one\n"        /* 3 */
                                  "GW_T_BETA=\"two words\"\n"      /* 4 */
                                  "GW_T_GAMMA='single'\n"          /* 5 */
                                  "GATEWAY_PORT=1234\n"            /* 6 */
                                  "  GW_T_SPACED = padded  \n"     /* 7 */
                                  "this is not valid\n"            /* 8 */
                                  "GW_T_QUOTE=\"unterminated\n"    /* 9 */
                                  "=novalue\n"                     /* 10 */
                                  "GW_T_DUP=first\n"               /* 11 */
                                  "GW_T_DUP=second\n"              /* 12 */
                                  "GW_T_EMPTY=\n"                  /* 13 */
                                  "GW_T_EQ=a=b\n"                  /* 14 */
                                  "LOG_LEVEL=debug\n"              /* 15 */
                                  "   # indented comment\n"        /* 16 */
                                  "GW_T_CRLF=dos\r\n"              /* 17 */
                                  "1BAD=x\n"                       /* 18 */
                                  "RATE_LIMIT_KEY=header:X-Key\n"; /* 19, no final newline */
    char path[64];
    write_temp(path, content, sizeof(content) - 2);

    /* The real environment wins over the file. */
    assert_int_equal(setenv("GATEWAY_PORT", "9999", 1), 0);

    char *buf = NULL;
    size_t len = 0;
    FILE *err = open_memstream(&buf, &len);
    assert_non_null(err);
    assert_int_equal(gw_config_load_env_file(path, err), -EINVAL);
    assert_int_equal(fclose(err), 0);

    static const int bad_lines[] = {8, 9, 10, 18};
    for (size_t i = 0; i < sizeof(bad_lines) / sizeof(bad_lines[0]); i++) {
        char needle[128];
        snprintf(needle, sizeof(needle), "config error: %s:%d: malformed line", path, bad_lines[i]);
        if (strstr(buf, needle) == NULL)
            fail_msg("\"%s\" missing from: %s", needle, buf);
    }
    /* Not a gateway variable: a warning, not an error. */
    assert_non_null(strstr(buf, "config warning: "));
    assert_non_null(strstr(buf, "GW_T_ALPHA is not a gateway variable"));
    assert_null(strstr(buf, "LOG_LEVEL is not"));
    int errors = 0;
    for (const char *p = buf; (p = strstr(p, "config error: ")) != NULL; p++)
        errors++;
    assert_int_equal(errors, 4);
    free(buf);

    assert_string_equal(getenv("GATEWAY_PORT"), "9999");
    assert_string_equal(getenv("GW_T_ALPHA"), "one");
    assert_string_equal(getenv("GW_T_BETA"), "two words");
    assert_string_equal(getenv("GW_T_GAMMA"), "single");
    assert_string_equal(getenv("GW_T_SPACED"), "padded");
    assert_string_equal(getenv("GW_T_DUP"), "second");
    assert_string_equal(getenv("GW_T_EMPTY"), "");
    assert_string_equal(getenv("GW_T_EQ"), "a=b");
    assert_string_equal(getenv("GW_T_CRLF"), "dos");
    assert_string_equal(getenv("LOG_LEVEL"), "debug");
    assert_string_equal(getenv("RATE_LIMIT_KEY"), "header:X-Key");
    assert_null(getenv("GW_T_QUOTE"));

    /* End to end through the process environment (getenv_fn NULL). */
    struct gw_config cfg;
    assert_int_equal(gw_config_load(&cfg, NULL, NULL, NULL), 0);
    assert_int_equal(cfg.gateway_port, 9999);
    assert_int_equal(cfg.log_level, GW_LOG_DEBUG);
    assert_string_equal(cfg.rate_limit_key_header, "X-Key");
    gw_config_deinit(&cfg);

    unlink(path);
    unset_gateway_env();
    for (size_t i = 0; i < sizeof(test_vars) / sizeof(test_vars[0]); i++)
        unsetenv(test_vars[i]);
}

static void test_env_file_errors(void **state)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *err = open_memstream(&buf, &len);
    assert_non_null(err);
    assert_int_equal(gw_config_load_env_file("/nonexistent-dir/gateway.env", err), -ENOENT);
    assert_int_equal(fclose(err), 0);
    assert_string_equal(buf, ""); /* main names the file, not printed twice */
    free(buf);

    /* A NUL byte inside a line is malformed, and nothing of it is set. */
    unsetenv("GW_T_NUL");
    char path[64];
    write_temp(path, "GW_T_NUL=a\0b\n", 13);
    assert_int_equal(gw_config_load_env_file(path, NULL), -EINVAL);
    assert_null(getenv("GW_T_NUL"));
    unlink(path);
}

/* ---- gateway.env.example ---------------------------------------------------------------- */

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open %s: %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    assert_non_null(out);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        assert_int_equal(fwrite(chunk, 1, n, out), n);
    fclose(f);
    assert_int_equal(fclose(out), 0);
    return buf;
}

static void test_env_example_matches_file(void **state)
{
    char *generated = capture_example();
    char *committed = read_file(GW_SOURCE_DIR "/gateway.env.example");
    if (strcmp(generated, committed) != 0)
        fail_msg("gateway.env.example differs from gw_config_print_env_example(); regenerate it "
                 "(make env-example). Expected:\n%s",
                 generated);
    free(generated);
    free(committed);
}

static void test_env_example_gives_defaults(void **state)
{
    /* Every line is a comment or NAME=default with a one-line comment above. */
    char *text = capture_example();
    const char *prev = NULL;
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        if (line[0] != '#') {
            assert_non_null(prev);
            assert_true(prev[0] == '#' && prev[1] == ' ' && strlen(prev) > 10);
        }
        prev = line;
    }
    free(text);

    /* Loading the file yields exactly the defaults. */
    struct gw_config def, cfg;
    assert_int_equal(gwt_config_load_kv(&def, GWT_KV({"X", "y"}), NULL), 0);
    char *want = gwt_config_json(&def);
    gw_config_deinit(&def);

    unset_gateway_env();
    char *buf = NULL;
    size_t len = 0;
    FILE *err = open_memstream(&buf, &len);
    assert_non_null(err);
    assert_int_equal(gw_config_load_env_file(GW_SOURCE_DIR "/gateway.env.example", err), 0);
    assert_int_equal(fclose(err), 0);
    assert_string_equal(buf, ""); /* no warnings either */
    free(buf);
    assert_int_equal(gw_config_load(&cfg, NULL, NULL, NULL), 0);
    char *got = gwt_config_json(&cfg);
    gw_config_deinit(&cfg);
    unset_gateway_env();
    assert_string_equal(got, want);
    free(got);
    free(want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_int_valid),
        cmocka_unit_test(test_int_invalid),
        cmocka_unit_test(test_int64),
        cmocka_unit_test(test_bool),
        cmocka_unit_test(test_enum),
        cmocka_unit_test(test_strings_and_paths),
        cmocka_unit_test(test_gateway_host),
        cmocka_unit_test(test_rate_limit_key),
        cmocka_unit_test(test_backend_url_valid),
        cmocka_unit_test(test_backend_url_invalid),
        cmocka_unit_test(test_redis_url_valid),
        cmocka_unit_test(test_redis_url_invalid),
        cmocka_unit_test(test_redis_password_masked_in_errors),
        cmocka_unit_test(test_trusted_proxies_parse),
        cmocka_unit_test(test_is_trusted),
        cmocka_unit_test(test_many_errors),
        cmocka_unit_test(test_print_json),
        cmocka_unit_test(test_env_file),
        cmocka_unit_test(test_env_file_errors),
        cmocka_unit_test(test_env_example_matches_file),
        cmocka_unit_test(test_env_example_gives_defaults),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
