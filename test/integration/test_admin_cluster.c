/*
 * The admin API's rules sync on a real Redis Cluster (SPEC.md §11, §12):
 * three redis-server masters (gwt_cluster) and two gateways given
 * REDIS_CLUSTER_NODES. A PUT /rules on either is adopted by the other
 * within 2 s, the rules hash living on its slot's master; a limit of 3 a
 * minute holds across both, and a DELETE /ratelimit on one has the client
 * served again by both within 2 s, its forget stream on its own slot's
 * master with its TTL;
 * the rules key's slot moved to another master (keys migrated, as
 * `redis-cli --cluster reshard` does) while both run is followed through
 * -MOVED, and the forget stream's slot caught mid-migration through -ASK,
 * both counted in /metrics as gateway_redis_redirects_total.
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
#include <time.h>

#include <cmocka.h>
#include <jansson.h>

#include "gwt_admin.h"
#include "gwt_cluster.h"
#include "gwt_suite.h"

#define APPLY_MS 2000 /* SPEC: every instance applies a change within 2 s */
#define POLL_MS  10   /* between two probes */
#define NGW      2
#define PREFIX   "admincl"
#define MASTERS  3

static struct gwt_cluster g_c;

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Until every admin port serves version, or the test fails after
 * APPLY_MS + 1 s; returns the ms it took. */
static long wait_version(const int *aports, const char *version, long long t0)
{
    for (;;) {
        int have = 0;
        for (int i = 0; i < NGW; i++) {
            char v[32], src[32];
            gwt_admin_get_rules(aports[i], v, src, NULL);
            have += strcmp(v, version) == 0;
        }
        long ms = (long)(gwt_now_ms() - t0);
        if (have == NGW)
            return ms;
        if (ms > APPLY_MS + 1000)
            fail_msg("version %s not on every gateway after %ld ms", version, ms);
        pause_ms(POLL_MS);
    }
}

/* gateway_redis_redirects_total{type="<type>"} in /metrics of port. */
static long long redirects(int port, const char *type)
{
    struct gwt_response r = {0};
    gwt_admin_request(port, "GET", "/metrics", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    char line[96];
    snprintf(line, sizeof(line), "\ngateway_redis_redirects_total{type=\"%s\"} ", type);
    const char *at = strstr(r.body, line);
    if (at == NULL)
        fail_msg("no %s in /metrics", line + 1);
    long long v = atoll(at + strlen(line));
    gwt_response_free(&r);
    return v;
}

struct fleet {
    struct gwt_proc gw[NGW];
    int port[NGW];
    int aport[NGW];
};

static struct fleet fleet;

/* Two gateways on the cluster, seeded with master 1 then master 0. */
static void start_fleet(void)
{
    static char nodes[96];
    snprintf(nodes, sizeof(nodes), "REDIS_CLUSTER_NODES=127.0.0.1:%d,127.0.0.1:%d", g_c.port[1],
             g_c.port[0]);
    const char *env[] = {nodes, "ADMIN_PORT=0", "RATE_LIMIT_KEY_PREFIX=" PREFIX, NULL};
    for (int i = 0; i < NGW; i++) {
        memset(&fleet.gw[i], 0, sizeof(fleet.gw[i]));
        assert_int_equal(gwt_gateway_for(&fleet.gw[i], &fleet.port[i], gwt_fx.bport, env), 0);
        fleet.aport[i] = gwt_admin_port_of(&fleet.gw[i]);
    }
}

static int slot_of(const char *key)
{
    int slot = gwt_cluster_keyslot_remote(g_c.port[0], key);
    assert_true(slot >= 0);
    return slot;
}

/* The master holding key (CLUSTER KEYSLOT, then CLUSTER SLOTS). */
static int master_of(const char *key)
{
    int m = gwt_cluster_slot_owner(&g_c, slot_of(key));
    assert_true(m >= 0);
    return m;
}

/* PUT on one gateway, the other adopts within 2 s, both ways; the hash on
 * its slot's master; DELETE /ratelimit's stream on its own, with a TTL. */
static void test_put_and_forget(void **state)
{
    (void)state;
    start_fleet();
    char v[32], src[32];
    for (int i = 0; i < NGW; i++) {
        gwt_admin_get_rules(fleet.aport[i], v, src, NULL);
        assert_string_equal(src, "env");
    }
    for (int round = 0; round < 2; round++) {
        long long t0 = gwt_now_ms();
        char want[32];
        snprintf(want, sizeof(want), "%s",
                 gwt_admin_put_rules(fleet.aport[round], gwt_admin_rules(10 + round), NULL, NULL));
        long ms = wait_version(fleet.aport, want, t0);
        gwt_admin_get_rules(fleet.aport[1 - round], v, src, NULL);
        assert_string_equal(src, "redis");
        fprintf(stderr, "[ MEASURE  ] PUT /rules on gateway %d (Cluster): on both after %ld ms\n",
                round, ms);
        assert_true(ms <= APPLY_MS);
    }
    int m = master_of(PREFIX ":rules");
    redisReply *r = gwt_cluster_cmd(g_c.port[m], "HGET %s serial", PREFIX ":rules");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_string_equal(r->str, "2");
    freeReplyObject(r);

    /* 3 a minute for alice across both gateways, then refused by both. */
    gwt_avoid_window_edge(60, 15);
    long long t0 = gwt_now_ms();
    char want[32];
    snprintf(want, sizeof(want), "%s",
             gwt_admin_put_rules(fleet.aport[0], gwt_admin_rules(3), NULL, NULL));
    (void)wait_version(fleet.aport, want, t0);
    for (int k = 0; k < 3; k++)
        assert_int_equal(gwt_admin_api_get(fleet.port[k % NGW], "alice", 0, NULL), 200);
    for (int i = 0; i < NGW; i++)
        for (int k = 0; k < 2; k++)
            assert_int_equal(gwt_admin_api_get(fleet.port[i], "alice", 0, NULL), 429);

    /* DELETE on gateway 1: alice served again by both within 2 s. */
    struct gwt_response resp = {0};
    t0 = gwt_now_ms();
    gwt_admin_request(fleet.aport[1], "DELETE", "/ratelimit?limit=api&key=alice", NULL, NULL,
                      &resp);
    assert_int_equal(resp.status, 200);
    gwt_response_free(&resp);
    long ms[NGW] = {0};
    gwt_admin_wait_served(fleet.port, NGW, "alice", t0, APPLY_MS + 1000, ms);
    fprintf(stderr,
            "[ MEASURE  ] DELETE /ratelimit on gateway 1 (Cluster): alice served again after "
            "%ld, %ld ms\n",
            ms[0], ms[1]);
    for (int i = 0; i < NGW; i++)
        assert_true(ms[i] <= APPLY_MS);
    int f = master_of(PREFIX ":forget");
    r = gwt_cluster_cmd(g_c.port[f], "PTTL %s", PREFIX ":forget");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    assert_true(r->integer > 0 && r->integer <= 60000);
    freeReplyObject(r);
    /* No redirect in a stable cluster. */
    for (int i = 0; i < NGW; i++) {
        assert_int_equal(redirects(fleet.aport[i], "moved"), 0);
        assert_int_equal(redirects(fleet.aport[i], "ask"), 0);
    }
}

/* The rules key's slot moves to another master (its keys migrated) while
 * both gateways run: their polls and the next PUT follow -MOVED (counted),
 * and the PUT is adopted within 2 s as before. The forget stream's slot
 * caught mid-migration, the stream not there yet: the DELETE's script and
 * the polls' XREAD follow -ASK to the importing master (counted). */
static void test_resharded_keys(void **state)
{
    (void)state;
    start_fleet();
    char want[32];
    long long t0 = gwt_now_ms();
    snprintf(want, sizeof(want), "%s",
             gwt_admin_put_rules(fleet.aport[0], gwt_admin_rules(20), NULL, NULL));
    (void)wait_version(fleet.aport, want, t0);
    long long moved0[NGW];
    for (int i = 0; i < NGW; i++)
        moved0[i] = redirects(fleet.aport[i], "moved");

    int slot = slot_of(PREFIX ":rules");
    int from = master_of(PREFIX ":rules"), to = (from + 1) % MASTERS;
    assert_int_equal(gwt_cluster_migrate_begin(&g_c, slot, from, to), 0);
    assert_int_equal(gwt_cluster_migrate_finish(&g_c, slot, from, to), 0);
    assert_int_equal(master_of(PREFIX ":rules"), to);

    /* Each poller meets -MOVED within a poll or two. */
    long long deadline = gwt_now_ms() + APPLY_MS + 1000;
    for (int i = 0; i < NGW; i++) {
        while (redirects(fleet.aport[i], "moved") == moved0[i] && gwt_now_ms() < deadline)
            pause_ms(POLL_MS);
        assert_true(redirects(fleet.aport[i], "moved") > moved0[i]);
    }
    t0 = gwt_now_ms();
    snprintf(want, sizeof(want), "%s",
             gwt_admin_put_rules(fleet.aport[1], gwt_admin_rules(21), NULL, NULL));
    long ms = wait_version(fleet.aport, want, t0);
    fprintf(stderr, "[ MEASURE  ] PUT /rules after the rules slot moved: on both after %ld ms\n",
            ms);
    assert_true(ms <= APPLY_MS);
    redisReply *r = gwt_cluster_cmd(g_c.port[to], "HGET %s serial", PREFIX ":rules");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_string_equal(r->str, "2");
    freeReplyObject(r);

    /* The forget stream: no stream yet, its slot migrating. */
    r = gwt_cluster_cmd(g_c.port[master_of(PREFIX ":forget")], "DEL %s", PREFIX ":forget");
    freeReplyObject(r);
    int fslot = slot_of(PREFIX ":forget");
    int ffrom = master_of(PREFIX ":forget"), fto = (ffrom + 2) % MASTERS;
    long long ask0 = redirects(fleet.aport[0], "ask");
    assert_int_equal(gwt_cluster_migrate_begin(&g_c, fslot, ffrom, fto), 0);
    struct gwt_response resp = {0};
    gwt_admin_request(fleet.aport[0], "DELETE", "/ratelimit?limit=api&key=bob", NULL, NULL, &resp);
    assert_int_equal(resp.status, 200);
    gwt_response_free(&resp);
    assert_true(redirects(fleet.aport[0], "ask") > ask0);
    assert_int_equal(gwt_cluster_migrate_finish(&g_c, fslot, ffrom, fto), 0);
    r = gwt_cluster_cmd(g_c.port[fto], "XLEN %s", PREFIX ":forget");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
}

static int group_setup(void **state)
{
    if (gwt_suite_setup_backend(state) != 0)
        return -1;
    return gwt_cluster_start(&g_c, MASTERS, false, NULL, 20000);
}

static int group_teardown(void **state)
{
    int rc = gwt_suite_teardown(state);
    gwt_cluster_stop(&g_c);
    return rc;
}

/* Each test starts on an empty cluster. */
static int test_setup(void **state)
{
    for (int i = 0; i < MASTERS; i++) {
        redisReply *r = gwt_cluster_cmd(g_c.port[i], "FLUSHALL");
        if (r == NULL)
            return -1;
        freeReplyObject(r);
    }
    return gwt_suite_test_setup(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_and_forget, test_setup, gwt_suite_test_teardown),
        cmocka_unit_test_setup_teardown(test_resharded_keys, test_setup, gwt_suite_test_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
