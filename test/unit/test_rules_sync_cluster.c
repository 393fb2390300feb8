/*
 * The rules sync (src/rules_sync.c) on a real Redis Cluster, without a
 * gateway around it: two instances (their own holders, REDIS_CLUSTER_NODES
 * seeds) on three redis-server masters (gwt_cluster). Rules stored by
 * one are adopted by the other within 2 s and live on the rules key's
 * master; the forget stream lives on its own master with its TTL; the
 * rules key's slot moved to another master (keys migrated) is followed
 * through -MOVED by both pollers and the next store, and the forget
 * stream's slot caught mid-migration through -ASK, counted in
 * gw/redis_redirects.h. Each master has a replica: the rules key's master
 * killed, the sync finds the promoted replica (the map read again) and a
 * store is accepted and adopted again; the times are printed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "gw/ratelimit.h"
#include "gw/redis_redirects.h"
#include "gw/rules_holder.h"
#include "gw/rules_sync.h"
#include "gwt_admin.h"
#include "gwt_cluster.h"
#include "gwt_config.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define APPLY_MS 2000 /* SPEC: every instance applies a change within 2 s */
#define PREFIX   "synccl"
#define MASTERS  3

static struct gwt_cluster g_c;

static void pause_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* One instance: configuration with the cluster, a memory limiter (the
 * forgets' target), a holder with the default rules, the sync. */
struct instance {
    struct gw_config cfg;
    struct gw_config mem_cfg;
    struct gw_rules_holder *h;
    struct gw_ratelimit *rl;
    struct gw_rules_sync *s;
};

static void instance_start(struct instance *in)
{
    static char nodes[64];
    snprintf(nodes, sizeof(nodes), "127.0.0.1:%d,127.0.0.1:%d", g_c.port[1], g_c.port[0]);
    const struct gwt_kv cl[] = {
        {"REDIS_CLUSTER_NODES", nodes}, {"RATE_LIMIT_KEY_PREFIX", PREFIX}, {NULL, NULL}};
    const struct gwt_kv mem[] = {{"RATE_LIMIT_KEY_PREFIX", PREFIX}, {NULL, NULL}};
    memset(in, 0, sizeof(*in));
    assert_int_equal(gw_config_load(&in->cfg, gwt_kv_getenv, (void *)cl, stderr), 0);
    assert_int_equal(gw_config_load(&in->mem_cfg, gwt_kv_getenv, (void *)mem, stderr), 0);
    struct gw_rules *r = gw_rules_from_config(&in->cfg);
    assert_non_null(r);
    assert_int_equal(gw_rules_holder_create(&in->h, r), 0);
    assert_int_equal(gw_ratelimit_create_shared(&in->rl, &in->mem_cfg, in->h), 0);
    assert_int_equal(gw_rules_sync_start(&in->s, in->h, in->rl, &in->cfg, GW_RULES_SYNC_ADOPT), 0);
}

static void instance_stop(struct instance *in)
{
    gw_rules_sync_stop(in->s);
    gw_ratelimit_destroy(in->rl);
    gw_rules_holder_destroy(in->h);
    gw_config_deinit(&in->cfg);
    gw_config_deinit(&in->mem_cfg);
}

/* Rules with one limit "api", n per minute, parsed for in. */
static struct gw_rules *rules(const struct instance *in, int n)
{
    return gwt_rules_json(gwt_admin_rules(n), &in->cfg);
}

/* Stores n on from; the ms until to's holder has the version. */
static long store_and_wait(struct instance *from, struct instance *to, int n)
{
    struct gw_rules *r = rules(from, n);
    char version[sizeof(r->version)];
    memcpy(version, r->version, sizeof(version));
    long long t0 = gwt_now_ms();
    uint64_t serial = 0;
    int rc = gw_rules_sync_store(from->s, r, NULL, NULL, 0, &serial);
    if (rc != 0)
        fail_msg("store: %d", rc);
    for (;;) {
        struct gw_rules *cur = gw_rules_holder_get(to->h);
        bool same = strcmp(cur->version, version) == 0;
        enum gw_rules_source src = cur->source;
        gw_rules_put(cur);
        long ms = (long)(gwt_now_ms() - t0);
        if (same) {
            assert_int_equal(src, GW_RULES_SOURCE_REDIS);
            return ms;
        }
        if (ms > APPLY_MS + 1000)
            fail_msg("version %s not adopted after %ld ms", version, ms);
        pause_ms(10);
    }
}

static int slot_of(const char *key)
{
    return (int)gw_redis_key_slot(key, strlen(key));
}

static long long node_int(int port, const char *fmt, const char *key)
{
    redisReply *r = gwt_cluster_cmd(port, fmt, key);
    assert_non_null(r);
    if (r->type != REDIS_REPLY_INTEGER)
        fail_msg("%s %s: not an integer (%s)", fmt, key,
                 r->type == REDIS_REPLY_ERROR ? r->str : "?");
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

static void test_store_adopt_and_reshard(void **state)
{
    (void)state;
    struct instance a, b;
    instance_start(&a);
    instance_start(&b);
    uint64_t moved0 = gw_redis_redirects_total(false), ask0 = gw_redis_redirects_total(true);

    /* Both ways, within 2 s; the hash on its slot's master. */
    long ms1 = store_and_wait(&a, &b, 10), ms2 = store_and_wait(&b, &a, 11);
    fprintf(stderr, "[ MEASURE  ] stored on one instance, adopted by the other after %ld, %ld ms\n",
            ms1, ms2);
    assert_true(ms1 <= APPLY_MS && ms2 <= APPLY_MS);
    int rslot = slot_of(PREFIX ":rules");
    int from = gwt_cluster_slot_owner(&g_c, rslot);
    assert_true(from >= 0);
    assert_int_equal(node_int(g_c.port[from], "HLEN %s", PREFIX ":rules"), 3);
    assert_int_equal(node_int(g_c.port[from], "TTL %s", PREFIX ":rules"), -1);

    /* A forget: the stream on its own master, with its TTL. */
    assert_int_equal(gw_rules_sync_forget(a.s, "api", "alice", 5), 0);
    int fslot = slot_of(PREFIX ":forget");
    int ffrom = gwt_cluster_slot_owner(&g_c, fslot);
    assert_int_equal(node_int(g_c.port[ffrom], "XLEN %s", PREFIX ":forget"), 1);
    long long pttl = node_int(g_c.port[ffrom], "PTTL %s", PREFIX ":forget");
    assert_true(pttl > 0 && pttl <= GW_RULES_SYNC_FORGET_TTL_MS);
    assert_int_equal(gw_redis_redirects_total(false), moved0);
    assert_int_equal(gw_redis_redirects_total(true), ask0);

    /* The rules slot moves with its hash: both pollers meet -MOVED. */
    int to = (from + 1) % MASTERS;
    assert_int_equal(gwt_cluster_migrate_begin(&g_c, rslot, from, to), 0);
    assert_int_equal(gwt_cluster_migrate_finish(&g_c, rslot, from, to), 0);
    long long deadline = gwt_now_ms() + APPLY_MS;
    while (gw_redis_redirects_total(false) < moved0 + 2 && gwt_now_ms() < deadline)
        pause_ms(10);
    assert_true(gw_redis_redirects_total(false) >= moved0 + 2);
    uint64_t moved1 = gw_redis_redirects_total(false);
    long ms3 = store_and_wait(&b, &a, 12);
    fprintf(stderr, "[ MEASURE  ] after the rules slot moved: adopted after %ld ms\n", ms3);
    assert_true(ms3 <= APPLY_MS);
    assert_int_equal(gw_redis_redirects_total(false), moved1); /* both maps learnt it */
    assert_int_equal(node_int(g_c.port[to], "HLEN %s", PREFIX ":rules"), 3);

    /* The forget stream's slot migrating, the stream not there yet: the
     * append and the polls' XREAD are asked to the importing master. */
    redisReply *r = gwt_cluster_cmd(g_c.port[ffrom], "DEL %s", PREFIX ":forget");
    freeReplyObject(r);
    int fto = (ffrom + 2) % MASTERS;
    assert_int_equal(gwt_cluster_migrate_begin(&g_c, fslot, ffrom, fto), 0);
    uint64_t ask1 = gw_redis_redirects_total(true);
    assert_int_equal(gw_rules_sync_forget(a.s, "api", "bob", 3), 0);
    assert_true(gw_redis_redirects_total(true) > ask1);
    assert_int_equal(gwt_cluster_migrate_finish(&g_c, fslot, ffrom, fto), 0);
    assert_int_equal(node_int(g_c.port[fto], "XLEN %s", PREFIX ":forget"), 1);
    /* The pollers keep going: one more store is adopted. */
    assert_true(store_and_wait(&a, &b, 13) <= APPLY_MS);
    /* b applied both of a's forgets, the second read from the new master. */
    uint64_t polls = 0, forgets = 0;
    deadline = gwt_now_ms() + APPLY_MS;
    do {
        gw_rules_sync_counts(b.s, &polls, NULL, &forgets);
    } while (forgets < 2 && gwt_now_ms() < deadline && (pause_ms(10), true));
    assert_int_equal(forgets, 2);
    assert_true(polls > 0);
    instance_stop(&a);
    instance_stop(&b);
}

/* The rules key's master killed: once its replica is promoted, a store is
 * accepted again (retried meanwhile, as an operator would) and adopted by
 * the other instance within 2 s. */
static void test_master_failover(void **state)
{
    (void)state;
    struct instance a, b;
    instance_start(&a);
    instance_start(&b);
    assert_true(store_and_wait(&a, &b, 30) <= APPLY_MS);
    int rslot = slot_of(PREFIX ":rules");
    int m = gwt_cluster_slot_owner(&g_c, rslot);
    assert_true(m >= 0 && m < MASTERS);
    long long serial = 0;
    redisReply *r = gwt_cluster_cmd(g_c.port[m], "HGET %s serial", PREFIX ":rules");
    assert_non_null(r);
    serial = atoll(r->str);
    freeReplyObject(r);
    /* The replica has the hash before its master goes. */
    assert_int_equal(node_int(g_c.port[m], "WAIT 1 %s", "5000"), 1);

    long long t0 = gwt_now_ms();
    assert_int_equal(gwt_cluster_kill(&g_c, m), 0);
    int tries = 0, rc = -1;
    char version[32] = "";
    long long promoted_ms = -1; /* first seen in CLUSTER SLOTS */
    while (rc != 0 && gwt_now_ms() - t0 < 20000) {
        if (promoted_ms < 0 && gwt_cluster_slot_owner(&g_c, rslot) == MASTERS + m)
            promoted_ms = gwt_now_ms() - t0;
        struct gw_rules *nr = rules(&a, 31);
        snprintf(version, sizeof(version), "%s", nr->version);
        rc = gw_rules_sync_store(a.s, nr, NULL, NULL, 0, NULL);
        tries++;
        if (rc != 0)
            pause_ms(100);
    }
    long long stored_ms = gwt_now_ms() - t0;
    if (rc != 0)
        fail_msg("no store accepted within 20 s of the master's death (%d)", rc);
    for (;;) {
        struct gw_rules *cur = gw_rules_holder_get(b.h);
        bool same = strcmp(cur->version, version) == 0;
        gw_rules_put(cur);
        if (same)
            break;
        if (gwt_now_ms() - t0 > stored_ms + APPLY_MS)
            fail_msg("b did not adopt %s within 2 s of the store", version);
        pause_ms(10);
    }
    long long adopted_ms = gwt_now_ms() - t0;
    int owner = gwt_cluster_slot_owner(&g_c, rslot);
    fprintf(stderr,
            "[ MEASURE  ] rules master killed: replica promoted (CLUSTER SLOTS) after %lld "
            "ms, a store accepted after %lld ms (%d tries, one per 100 ms), adopted by the "
            "other instance after %lld ms\n",
            promoted_ms, stored_ms, tries, adopted_ms);
    assert_int_equal(owner, MASTERS + m);
    r = gwt_cluster_cmd(g_c.port[owner], "HGET %s serial", PREFIX ":rules");
    assert_non_null(r);
    assert_int_equal(atoll(r->str), serial + 1); /* the replica's copy, one more */
    freeReplyObject(r);
    instance_stop(&a);
    instance_stop(&b);
}

static int group_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    return gwt_cluster_start(&g_c, MASTERS, true, NULL, 30000);
}

static int group_teardown(void **state)
{
    (void)state;
    gwt_cluster_stop(&g_c);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_store_adopt_and_reshard),
        cmocka_unit_test(test_master_failover),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
