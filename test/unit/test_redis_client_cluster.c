/*
 * The rules sync's Redis client (src/redis_client.c) against a real Redis
 * Cluster on 127.0.0.1: three redis-server masters (gwt_cluster) made
 * by `redis-cli --cluster create`, started and stopped by PID; slots moved
 * with their keys as a reshard does. The client finds the map
 * through the seeds (a dead seed first), sends keys of every master's slots
 * to their owner without a redirect, keeps pipelined replies in order
 * across nodes, follows -ASK while a slot migrates and -MOVED once it has
 * moved (counting each in gw/redis_redirects.h, the map updated by MOVED
 * only), retries -TRYAGAIN a bounded number of times, and computes the
 * same key slots as the servers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "gw/redis_redirects.h"
#include "gwt_cluster.h"
#include "redis_client.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NMASTERS        3
#define CLUSTER_WAIT_MS 20000 /* cluster create and cluster_state:ok, at most */

static struct gwt_cluster g_c;
static int g_dead_port; /* a port nothing listens on: the first seed */

#define node_cmd gwt_cluster_cmd

/* A key fmt % n whose slot master m owns; its slot in *slot. */
static void key_on(int m, const char *fmt, char *key, size_t cap, int *slot)
{
    *slot = gwt_cluster_key_on(&g_c, m, fmt, key, cap);
    if (*slot < 0)
        fail_msg("no key of %s on master %d", fmt, m);
}

static int cluster_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    g_dead_port = gwt_free_port();
    return g_dead_port > 0 ? gwt_cluster_start(&g_c, NMASTERS, false, NULL, CLUSTER_WAIT_MS) : -1;
}

static int cluster_teardown(void **state)
{
    (void)state;
    gwt_cluster_stop(&g_c);
    return 0;
}

/* The cluster target: a dead seed, then master 1 (never master 0 first,
 * so the map must come from the seed that answered). */
struct fixture {
    struct gw_redis_target t;
    struct gw_redis_node seeds[2];
    char host[2][16];
    struct gw_redis_client *cl;
};

static void client_open(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    snprintf(f->host[0], sizeof(f->host[0]), "127.0.0.1");
    snprintf(f->host[1], sizeof(f->host[1]), "127.0.0.1");
    f->seeds[0] = (struct gw_redis_node){f->host[0], g_dead_port};
    f->seeds[1] = (struct gw_redis_node){f->host[1], g_c.port[1]};
    f->t.cluster_nodes = f->seeds;
    f->t.ncluster_nodes = 2;
    char why[200];
    assert_int_equal(gw_redis_client_create(&f->cl, &f->t, 2000, why, sizeof(why)), 0);
    assert_false(gw_redis_client_connected(f->cl));
    int rc = gw_redis_client_connect(f->cl);
    if (rc != 0)
        fail_msg("connect: %s", gw_redis_client_error(f->cl));
    assert_true(gw_redis_client_connected(f->cl));
}

static redisReply *cmd(struct fixture *f, int argc, const char **argv)
{
    redisReply *r = gw_redis_client_command_argv(f->cl, argc, argv, NULL);
    if (r == NULL)
        fail_msg("%s: %s", argv[0], gw_redis_client_error(f->cl));
    return r;
}

static void want_status(redisReply *r, const char *s)
{
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("error reply: %s", r->str);
    assert_int_equal(r->type, REDIS_REPLY_STATUS);
    assert_string_equal(r->str, s);
    freeReplyObject(r);
}

static void want_string(redisReply *r, const char *s)
{
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("error reply: %s", r->str);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_string_equal(r->str, s);
    freeReplyObject(r);
}

static void want_integer(redisReply *r, long long v)
{
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("error reply: %s", r->str);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    assert_int_equal(r->integer, v);
    freeReplyObject(r);
}

/* gw_redis_key_slot agrees with CLUSTER KEYSLOT, hash tags included. */
static void test_key_slot(void **state)
{
    (void)state;
    static const char *const keys[] = {"gw:rules",
                                       "gw:forget",
                                       "foo",
                                       "{user1000}.following",
                                       "foo{}{bar}",
                                       "foo{{bar}}zap",
                                       "foo{bar}{zap}",
                                       "{",
                                       "}{a}",
                                       "a{b",
                                       "",
                                       "rl:{0123abcd}:x"};
    for (size_t i = 0; i < GW_ARRAY_LEN(keys); i++) {
        redisReply *r = node_cmd(g_c.port[0], "CLUSTER KEYSLOT %s", keys[i]);
        assert_non_null(r);
        assert_int_equal(r->type, REDIS_REPLY_INTEGER);
        assert_int_equal((long long)gw_redis_key_slot(keys[i], strlen(keys[i])), r->integer);
        freeReplyObject(r);
    }
    assert_int_equal(gw_redis_key_slot("123456789", 9), 0x31C3 & 16383); /* the spec's check */
}

/* A key on each master: written through the client with no redirect, read
 * back from its owner directly; the rules sync's commands (EVAL with one
 * key, HMGET, XADD, XREAD, XREVRANGE) on keys of different masters. */
static void test_every_master(void **state)
{
    (void)state;
    struct fixture f;
    client_open(&f);
    uint64_t moved0 = gw_redis_redirects_total(false), ask0 = gw_redis_redirects_total(true);
    char key[NMASTERS][32];
    for (int m = 0; m < NMASTERS; m++) {
        int slot;
        key_on(m, "every:%d", key[m], sizeof(key[m]), &slot);
        want_status(cmd(&f, 3, (const char *[]){"SET", key[m], g_c.id[m]}), "OK");
        redisReply *r = node_cmd(g_c.port[m], "GET %s", key[m]);
        assert_non_null(r);
        want_string(r, g_c.id[m]);
    }
    /* The store script's shape: one declared key, on master 2. */
    char hash[32];
    int hslot;
    key_on(2, "hash:%d", hash, sizeof(hash), &hslot);
    const char *eval[] = {"EVAL",
                          "redis.call('HSET', KEYS[1], 'v', ARGV[1]) return "
                          "redis.call('HINCRBY', KEYS[1], 'serial', 1)",
                          "1", hash, "x"};
    want_integer(cmd(&f, 5, eval), 1);
    redisReply *r = cmd(&f, 4, (const char *[]){"HMGET", hash, "serial", "v"});
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_string_equal(r->element[0]->str, "1");
    assert_string_equal(r->element[1]->str, "x");
    freeReplyObject(r);
    /* The forget stream's shape, on master 0: XADD, XREVRANGE, XREAD. */
    char stream[32];
    int slot;
    key_on(0, "stream:%d", stream, sizeof(stream), &slot);
    r = cmd(&f, 5, (const char *[]){"XADD", stream, "*", "origin", "a"});
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    freeReplyObject(r);
    r = cmd(&f, 6, (const char *[]){"XREVRANGE", stream, "+", "-", "COUNT", "1"});
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 1);
    freeReplyObject(r);
    r = cmd(&f, 6, (const char *[]){"XREAD", "COUNT", "10", "STREAMS", stream, "0-0"});
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 1);
    freeReplyObject(r);
    assert_int_equal(gw_redis_redirects_total(false), moved0);
    assert_int_equal(gw_redis_redirects_total(true), ask0);
    want_status(cmd(&f, 1, (const char *[]){"PING"}), "PONG");
    gw_redis_client_destroy(f.cl);
}

/* Pipelined commands on three nodes come back in the order sent (the poll
 * pipelines HGET of the rules and XREAD of the forget stream). */
static void test_pipeline_across_nodes(void **state)
{
    (void)state;
    struct fixture f;
    client_open(&f);
    char key[NMASTERS][32];
    for (int m = 0; m < NMASTERS; m++) {
        int slot;
        key_on(m, "pipe:%d", key[m], sizeof(key[m]), &slot);
        want_status(cmd(&f, 3, (const char *[]){"SET", key[m], g_c.id[m]}), "OK");
    }
    for (int round = 0; round < 3; round++)
        for (int m = 0; m < NMASTERS; m++)
            assert_int_equal(gw_redis_client_append_argv(
                                 f.cl, 2, (const char *[]){"GET", key[(m + round) % 3]}, NULL),
                             0);
    for (int round = 0; round < 3; round++)
        for (int m = 0; m < NMASTERS; m++) {
            redisReply *r = gw_redis_client_get_reply(f.cl);
            assert_non_null(r);
            want_string(r, g_c.id[(m + round) % 3]);
        }
    gw_redis_client_destroy(f.cl);
}

/* One slot of master a migrates to master b: a write of a key not yet
 * moved is answered -ASK and lands on b (ASKING), counted as ask, the map
 * unchanged; once the slot is b's, the stale map meets -MOVED, counted,
 * and the next command goes straight to b. */
static void test_ask_then_moved(void **state)
{
    (void)state;
    const int a = 0, b = 2;
    struct fixture f;
    client_open(&f);
    char key[32], other[32];
    int slot, other_slot;
    key_on(a, "mig:%d", key, sizeof(key), &slot);
    key_on(b, "onb:%d", other, sizeof(other), &other_slot);
    want_status(cmd(&f, 3, (const char *[]){"SET", other, "on-b"}), "OK");
    want_integer(cmd(&f, 2, (const char *[]){"EXISTS", key}), 0); /* learnt a's link */

    assert_int_equal(gwt_cluster_migrate_begin(&g_c, slot, a, b), 0);

    uint64_t moved0 = gw_redis_redirects_total(false), ask0 = gw_redis_redirects_total(true);
    /* Pipelined behind a command for b: the ASK's resend on b's link must
     * not take the GET's reply. */
    assert_int_equal(
        gw_redis_client_append_argv(f.cl, 4, (const char *[]){"HSET", key, "f", "v"}, NULL), 0);
    assert_int_equal(gw_redis_client_append_argv(f.cl, 2, (const char *[]){"GET", other}, NULL), 0);
    redisReply *r = gw_redis_client_get_reply(f.cl);
    assert_non_null(r);
    want_integer(r, 1);
    r = gw_redis_client_get_reply(f.cl);
    assert_non_null(r);
    want_string(r, "on-b");
    assert_int_equal(gw_redis_redirects_total(true), ask0 + 1);
    assert_int_equal(gw_redis_redirects_total(false), moved0);
    /* The key is on b (ASKING there), not on a. */
    r = node_cmd(g_c.port[a], "EXISTS %s", key);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ERROR); /* -ASK again: a does not have it */
    freeReplyObject(r);
    /* ASK does not change the map: the next command asks a again. */
    r = cmd(&f, 3, (const char *[]){"HGET", key, "f"});
    want_string(r, "v");
    assert_int_equal(gw_redis_redirects_total(true), ask0 + 2);

    /* The migration ends: the slot is b's, told to every node. */
    assert_int_equal(gwt_cluster_migrate_finish(&g_c, slot, a, b), 0);
    r = cmd(&f, 3, (const char *[]){"HGET", key, "f"});
    want_string(r, "v");
    assert_int_equal(gw_redis_redirects_total(false), moved0 + 1);
    assert_int_equal(gw_redis_redirects_total(true), ask0 + 2);
    r = cmd(&f, 3, (const char *[]){"HGET", key, "f"});
    want_string(r, "v");
    assert_int_equal(gw_redis_redirects_total(false), moved0 + 1); /* the map learnt it */

    /* Back to a with its key (MIGRATE), as redis-cli --cluster reshard
     * does: this client's map is stale again. */
    assert_int_equal(gwt_cluster_migrate_begin(&g_c, slot, b, a), 0);
    assert_int_equal(gwt_cluster_migrate_finish(&g_c, slot, b, a), 0);
    want_string(cmd(&f, 3, (const char *[]){"HGET", key, "f"}), "v");
    assert_int_equal(gw_redis_redirects_total(false), moved0 + 2);
    assert_int_equal(gw_redis_redirects_total(true), ask0 + 2);
    want_integer(cmd(&f, 2, (const char *[]){"DEL", key}), 1);
    gw_redis_client_destroy(f.cl);
}

/* A multi-key command of a migrating slot whose keys are split between the
 * two nodes gets -TRYAGAIN: retried a bounded number of times (the server
 * counts the calls), then returned as the error; when the keys are all
 * on the source, the same command succeeds. */
static void test_tryagain_bounded(void **state)
{
    (void)state;
    const int a = 1, b = 0;
    struct fixture f;
    client_open(&f);
    char k1[32], k2[40];
    int slot;
    key_on(a, "{try%d}", k1, sizeof(k1), &slot);
    snprintf(k2, sizeof(k2), "%s:second", k1);
    /* k1 is "{tryN}", a hash tag: k2 shares its slot. */
    want_status(cmd(&f, 3, (const char *[]){"SET", k1, "one"}), "OK");
    assert_int_equal(gwt_cluster_migrate_begin(&g_c, slot, a, b), 0);
    redisReply *r = node_cmd(g_c.port[a], "CONFIG RESETSTAT");
    freeReplyObject(r);
    long long t0 = gwt_now_ms();
    r = gw_redis_client_command_argv(f.cl, 3, (const char *[]){"MGET", k1, k2}, NULL);
    long long took = gwt_now_ms() - t0;
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ERROR);
    assert_memory_equal(r->str, "TRYAGAIN", 8);
    freeReplyObject(r);
    assert_true(took >= 25 + 50 + 100 + 200);
    assert_true(took < 5000);
    r = node_cmd(g_c.port[a], "INFO commandstats");
    assert_non_null(r);
    const char *mget = strstr(r->str, "cmdstat_mget:");
    assert_non_null(mget);
    /* 1 + 4 retries, each refused before it ran. */
    assert_non_null(strstr(mget, "rejected_calls=5"));
    freeReplyObject(r);
    /* The migration called off: the same command is served. */
    for (int m = 0; m < NMASTERS; m++) {
        r = node_cmd(g_c.port[m], "CLUSTER SETSLOT %d STABLE", slot);
        want_status(r, "OK");
    }
    want_status(cmd(&f, 3, (const char *[]){"SET", k2, "two"}), "OK");
    r = cmd(&f, 3, (const char *[]){"MGET", k1, k2});
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_string_equal(r->element[0]->str, "one");
    assert_string_equal(r->element[1]->str, "two");
    freeReplyObject(r);
    gw_redis_client_destroy(f.cl);
}

/* Only dead seeds: connect fails with a reason naming the last one, and
 * commands fail without touching anything. */
static void test_no_seed(void **state)
{
    (void)state;
    char host[] = "127.0.0.1";
    struct gw_redis_node seed = {host, g_dead_port};
    struct gw_redis_target t = {.cluster_nodes = &seed, .ncluster_nodes = 1};
    struct gw_redis_client *cl = NULL;
    char why[200];
    assert_int_equal(gw_redis_client_create(&cl, &t, 500, why, sizeof(why)), 0);
    assert_int_not_equal(gw_redis_client_connect(cl), 0);
    assert_non_null(strstr(gw_redis_client_error(cl), "no cluster seed answered"));
    assert_false(gw_redis_client_connected(cl));
    assert_null(gw_redis_client_command_argv(cl, 1, (const char *[]){"PING"}, NULL));
    gw_redis_client_destroy(cl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_slot),
        cmocka_unit_test(test_every_master),
        cmocka_unit_test(test_pipeline_across_nodes),
        cmocka_unit_test(test_ask_then_moved),
        cmocka_unit_test(test_tryagain_bounded),
        cmocka_unit_test(test_no_seed),
    };
    return cmocka_run_group_tests(tests, cluster_setup, cluster_teardown);
}
