/*
 * Unit tests of the Redis deployment settings (SPEC.md §12, src/config.c):
 * gw_config_redis_target builds the target from REDIS_URL or
 * REDIS_SENTINELS with REDIS_USERNAME/PASSWORD/DB and REDIS_TLS* applied;
 * the cross-variable rules refuse contradictions; passwords are masked
 * whole in --check-config's JSON and never appear in error lines.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "gw/config.h"
#include "gwt_config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_url_with_overrides(void **state)
{
    (void)state;
    struct gw_config cfg;
    assert_int_equal(
        gwt_config_load_kv(&cfg,
                           GWT_KV({"REDIS_URL", "rediss://olduser:oldpw@redis.example:6380/4"},
                                  {"REDIS_USERNAME", "app"}, {"REDIS_PASSWORD", "s3cret pw"},
                                  {"REDIS_TLS_SERVER_NAME", "redis.internal"},
                                  {"REDIS_TLS_CA_FILE", "/dev/null"}),
                           NULL),
        1); /* /dev/null holds no certificate */
    gw_config_deinit(&cfg);

    assert_int_equal(
        gwt_config_load_kv(&cfg,
                           GWT_KV({"REDIS_URL", "rediss://olduser:oldpw@redis.example:6380/4"},
                                  {"REDIS_USERNAME", "app"}, {"REDIS_PASSWORD", "s3cret pw"},
                                  {"REDIS_TLS_SERVER_NAME", "redis.internal"}),
                           NULL),
        0);
    assert_true(gw_config_redis_enabled(&cfg));
    struct gw_redis_target t;
    assert_int_equal(gw_config_redis_target(&cfg, &t, NULL, 0), 0);
    assert_string_equal(t.host, "redis.example");
    assert_int_equal(t.port, 6380);
    assert_int_equal(t.db, 4);
    assert_string_equal(t.username, "app");
    assert_string_equal(t.password, "s3cret pw");
    assert_true(t.tls);
    assert_true(t.tls_verify);
    assert_null(t.tls_ca_file);
    assert_string_equal(t.tls_server_name, "redis.internal");
    assert_int_equal(t.nsentinels, 0);
    gw_config_redis_target_deinit(&t);

    /* --check-config: the URL's password masked, REDIS_PASSWORD whole. */
    char *buf = gwt_config_json(&cfg);
    assert_non_null(strstr(buf, "\"REDIS_PASSWORD\": \"***\""));
    assert_non_null(strstr(buf, "rediss://olduser:***@redis.example:6380/4"));
    assert_null(strstr(buf, "s3cret"));
    assert_null(strstr(buf, "oldpw"));
    free(buf);
    gw_config_deinit(&cfg);

    /* REDIS_DB agreeing with the URL's, or given without one in it. */
    assert_int_equal(
        gwt_config_load_kv(&cfg, GWT_KV({"REDIS_URL", "redis://h/4"}, {"REDIS_DB", "4"}), NULL), 0);
    gw_config_deinit(&cfg);
    assert_int_equal(
        gwt_config_load_kv(&cfg, GWT_KV({"REDIS_URL", "redis://h"}, {"REDIS_DB", "7"}), NULL), 0);
    assert_int_equal(gw_config_redis_target(&cfg, &t, NULL, 0), 0);
    assert_int_equal(t.db, 7);
    assert_false(t.tls);
    gw_config_redis_target_deinit(&t);
    gw_config_deinit(&cfg);
}

static void test_sentinels(void **state)
{
    (void)state;
    struct gw_config cfg;
    assert_int_equal(
        gwt_config_load_kv(&cfg,
                           GWT_KV({"REDIS_SENTINELS", " 10.0.0.5:26380, sentinel-b ,[::1]:5000"},
                                  {"REDIS_SENTINEL_MASTER", "mymaster"},
                                  {"REDIS_SENTINEL_PASSWORD", "sentpw"}, {"REDIS_PASSWORD", "pw"},
                                  {"REDIS_TLS", "on"}, {"REDIS_TLS_VERIFY", "off"}),
                           NULL),
        0);
    assert_true(gw_config_redis_enabled(&cfg));
    struct gw_redis_target t;
    assert_int_equal(gw_config_redis_target(&cfg, &t, NULL, 0), 0);
    assert_null(t.host);
    assert_int_equal(t.nsentinels, 3);
    assert_string_equal(t.sentinels[0].host, "10.0.0.5");
    assert_int_equal(t.sentinels[0].port, 26380);
    assert_string_equal(t.sentinels[1].host, "sentinel-b");
    assert_int_equal(t.sentinels[1].port, 26379);
    assert_string_equal(t.sentinels[2].host, "::1");
    assert_int_equal(t.sentinels[2].port, 5000);
    assert_string_equal(t.sentinel_master, "mymaster");
    assert_string_equal(t.sentinel_password, "sentpw");
    assert_null(t.sentinel_username);
    assert_string_equal(t.password, "pw");
    assert_true(t.tls);
    assert_false(t.tls_verify);
    gw_config_redis_target_deinit(&t);
    char *buf = gwt_config_json(&cfg);
    assert_non_null(strstr(buf, "\"REDIS_SENTINEL_PASSWORD\": \"***\""));
    assert_null(strstr(buf, "sentpw"));
    free(buf);
    gw_config_deinit(&cfg);

    /* Neither URL nor sentinels: no target. */
    assert_int_equal(gwt_config_load_kv(&cfg, GWT_KV({"GATEWAY_PORT", "0"}), NULL), 0);
    assert_false(gw_config_redis_enabled(&cfg));
    char why[128] = "";
    assert_int_equal(gw_config_redis_target(&cfg, &t, why, sizeof(why)), -EINVAL);
    assert_string_equal(why, "no Redis configured");
    gw_config_redis_target_deinit(&t);
    gw_config_deinit(&cfg);
}

/* One line per problem, naming the variable; never a password. */
static void test_refused(void **state)
{
    (void)state;
    static const struct {
        struct gwt_kv kv[5];
        int errors;
        const char *want;
    } cases[] = {
        {{{"REDIS_URL", "redis://h"}, {"REDIS_SENTINELS", "h:1"}, {"REDIS_SENTINEL_MASTER", "m"}},
         1,
         "config error: REDIS_SENTINELS=h:1: only one of REDIS_URL, REDIS_SENTINELS and "
         "REDIS_CLUSTER_NODES may be set"},
        {{{"REDIS_CLUSTER_NODES", "a:7000,b:7001"}, {"REDIS_DB", "2"}},
         1,
         "config error: REDIS_DB=2: must be 0 with REDIS_CLUSTER_NODES"},
        {{{"REDIS_CLUSTER_NODES", "a:7000"}, {"REDIS_URL", "redis://h"}},
         1,
         "config error: REDIS_CLUSTER_NODES=a:7000: only one of REDIS_URL"},
        {{{"REDIS_CLUSTER_NODES", "a:7000,"}}, 1, "REDIS_CLUSTER_NODES=a:7000,: empty entry"},
        {{{"REDIS_CLUSTER_NODES", "redis://a:7000"}},
         1,
         "REDIS_CLUSTER_NODES=redis://a:7000: entry \"redis://a:7000\": a host:port, not a URL"},
        {{{"REDIS_SENTINEL_MASTER", "m"}},
         1,
         "config error: REDIS_SENTINEL_MASTER=m: only used with REDIS_SENTINELS"},
        {{{"REDIS_SENTINELS", "h"},
          {"REDIS_SENTINEL_MASTER", "m"},
          {"REDIS_SENTINEL_USERNAME", "u"}},
         1,
         "config error: REDIS_SENTINEL_USERNAME=u: needs REDIS_SENTINEL_PASSWORD"},
        {{{"REDIS_URL", "rediss://h"}, {"REDIS_TLS", "off"}},
         1,
         "config error: REDIS_TLS=off: contradicts REDIS_URL's rediss://"},
        {{{"REDIS_URL", "unix:///run/r.sock"}, {"REDIS_TLS", "on"}},
         1,
         "REDIS_TLS=on: TLS is not available over a unix socket"},
        {{{"REDIS_URL", "rediss://h"}, {"REDIS_TLS_CERT_FILE", "/etc/hostname"}},
         2,
         "config error: REDIS_TLS_CERT_FILE=/etc/hostname: needs REDIS_TLS_KEY_FILE"},
        {{{"REDIS_URL", "redis://h"}, {"REDIS_TLS_SERVER_NAME", "x"}},
         1,
         "config error: REDIS_TLS_SERVER_NAME=x: set, but TLS to Redis is off"},
        {{{"REDIS_URL", "redis://h"}, {"REDIS_TLS", "maybe"}},
         1,
         "config error: REDIS_TLS=maybe: must be one of auto, on, off"},
        {{{"REDIS_URL", "redis://h"}, {"REDIS_DB", "-1"}}, 1, "config error: REDIS_DB=-1"},
        {{{"REDIS_URL", "redis://h"}, {"REDIS_PASSWORD", "bad\npw"}},
         1,
         "config error: REDIS_PASSWORD=***: must not contain control characters"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct gw_config cfg;
        char *err = NULL;
        int rc = gwt_config_load_kv(&cfg, cases[i].kv, &err);
        if (rc != cases[i].errors || strstr(err, cases[i].want) == NULL)
            fail_msg("case %zu: %d errors (want %d): \"%s\", wanted \"%s\"", i, rc, cases[i].errors,
                     err, cases[i].want);
        assert_null(strstr(err, "pw\n"));
        free(err);
        gw_config_deinit(&cfg);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_with_overrides),
        cmocka_unit_test(test_sentinels),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
