/*
 * Unit tests of the Redis Cluster store's pure parts (src/rl_cluster.c):
 * the key slot (checked against values Redis's CLUSTER KEYSLOT gives), the
 * CLUSTER SLOTS reply parser and the MOVED/ASK parser; and of the script's
 * refund mode (src/rl_redis.c, mode 3) on a real redis-server: a decision
 * followed by its refund leaves every algorithm's state as before.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "gwtest.h"
#include "gw/redis_redirects.h"
#include "ratelimit_int.h"

static unsigned slot_of(const char *k)
{
    return gw_rl_cluster_slot(k, strlen(k));
}

/* Expected values from `redis-cli cluster keyslot` (Redis 7.0). */
static void test_key_slot(void **state)
{
    (void)state;
    assert_int_equal(slot_of("123456789"), 12739); /* CRC16/XMODEM check value 0x31c3 */
    assert_int_equal(slot_of("foo"), 12182);
    assert_int_equal(slot_of("{user1000}.following"), 3443);
    assert_int_equal(slot_of("{user1000}.followers"), 3443);
    assert_int_equal(slot_of("foo{}{bar}"), 8363);    /* empty tag: the whole key */
    assert_int_equal(slot_of("foo{{bar}}zap"), 4015); /* tag "{bar" */
    assert_int_equal(slot_of("foo{bar}{zap}"), 5061); /* first tag only: "bar" */
    assert_int_equal(slot_of("bar"), 5061);
    assert_int_equal(slot_of("rl:{4910a05fca96f8656eacd4f7b16774dd}:x"), 3269);
    assert_int_equal(slot_of(""), 0);
    /* A store key and every state key the script derives share the slot. */
    assert_int_equal(slot_of("rl:{4910a05fca96f8656eacd4f7b16774dd}:default:default"),
                     slot_of("rl:{4910a05fca96f8656eacd4f7b16774dd}:default:default:fw:60000:7"));
}

/* A redisReply from RESP text (caller frees). */
static redisReply *reply_of(const char *resp)
{
    redisReader *rd = redisReaderCreate();
    assert_non_null(rd);
    assert_int_equal(redisReaderFeed(rd, resp, strlen(resp)), REDIS_OK);
    void *r = NULL;
    assert_int_equal(redisReaderGetReply(rd, &r), REDIS_OK);
    assert_non_null(r);
    redisReaderFree(rd);
    return r;
}

static void test_parse_slots(void **state)
{
    (void)state;
    struct gw_redis_slot_range g[4];
    redisReply *r = reply_of("*2\r\n"
                             "*3\r\n:0\r\n:5460\r\n*3\r\n$9\r\n127.0.0.1\r\n:7001\r\n$2\r\nid\r\n"
                             "*4\r\n:5461\r\n:16383\r\n*2\r\n$0\r\n\r\n:7002\r\n"
                             "*2\r\n$9\r\n127.0.0.1\r\n:7005\r\n");
    assert_int_equal(gw_redis_parse_cluster_slots(r, g, 4), 2);
    assert_int_equal(g[0].lo, 0);
    assert_int_equal(g[0].hi, 5460);
    assert_int_equal(g[0].port, 7001);
    assert_int_equal(g[0].host_len, 9);
    assert_memory_equal(g[0].host, "127.0.0.1", 9);
    assert_int_equal(g[1].lo, 5461);
    assert_int_equal(g[1].hi, 16383);
    assert_null(g[1].host); /* "": the node asked */
    assert_int_equal(g[1].port, 7002);
    assert_int_equal(gw_redis_parse_cluster_slots(r, g, 1), -EPROTO); /* more than cap */
    freeReplyObject(r);

    static const char *const bad[] = {
        "-ERR This instance has cluster support disabled\r\n",
        "*1\r\n:1\r\n",
        "*1\r\n*3\r\n:5\r\n:4\r\n*2\r\n$1\r\nh\r\n:1\r\n",     /* lo > hi */
        "*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\nh\r\n:1\r\n", /* past the last slot */
        "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n:0\r\n",     /* port 0 */
        "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n:70000\r\n",
        "*1\r\n*3\r\n:0\r\n:1\r\n*1\r\n$1\r\nh\r\n",
        "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n:1\r\n:1\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r = reply_of(bad[i]);
        assert_int_equal(gw_redis_parse_cluster_slots(r, g, 4), -EPROTO);
        freeReplyObject(r);
    }
    /* "?": no endpoint of the preferred type: left out. */
    r = reply_of("*2\r\n*3\r\n:0\r\n:9\r\n*2\r\n$1\r\n?\r\n:7001\r\n"
                 "*3\r\n:10\r\n:16383\r\n*2\r\n$1\r\nh\r\n:7002\r\n");
    assert_int_equal(gw_redis_parse_cluster_slots(r, g, 4), 1);
    assert_int_equal(g[0].lo, 10);
    freeReplyObject(r);
    r = reply_of("*0\r\n");
    assert_int_equal(gw_redis_parse_cluster_slots(r, g, 4), 0); /* no slot served */
    freeReplyObject(r);
}

static void test_parse_redirect(void **state)
{
    (void)state;
    bool ask;
    unsigned slot;
    const char *host;
    size_t hl;
    int port;
    assert_true(
        gw_redis_parse_redirect("MOVED 3999 127.0.0.1:6381", &ask, &slot, &host, &hl, &port));
    assert_false(ask);
    assert_int_equal(slot, 3999);
    assert_int_equal(hl, 9);
    assert_memory_equal(host, "127.0.0.1", 9);
    assert_int_equal(port, 6381);
    assert_true(gw_redis_parse_redirect("ASK 16383 [::1]:7000", &ask, &slot, &host, &hl, &port));
    assert_true(ask);
    assert_int_equal(slot, 16383);
    assert_int_equal(hl, 3);
    assert_memory_equal(host, "::1", 3);
    assert_true(
        gw_redis_parse_redirect("MOVED 0 redis-2.example:6379", &ask, &slot, &host, &hl, &port));
    assert_int_equal(hl, 15);
    /* An empty host: the node that replied (an unknown endpoint). */
    assert_true(gw_redis_parse_redirect("MOVED 7 :6380", &ask, &slot, &host, &hl, &port));
    assert_int_equal(hl, 0);
    assert_int_equal(port, 6380);
    static const char *const bad[] = {
        "MOVED",        "MOVED 3999",   "MOVED 16384 h:1",   "MOVED x h:1",
        "MOVED 1 h:",   "MOVED 1 h:0",  "MOVED 1 h:65536",   "MOVED 1 h:1x",
        "ASKING 1 h:1", "TRYAGAIN",     "MOVED 1 h:1234567", "MOVED 1 h",
        "moved 1 h:1",  "MOVED 1  h:1", "MOVED 1 []:1",      "NOSCRIPT No match",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(gw_redis_parse_redirect(bad[i], &ask, &slot, &host, &hl, &port));
}

/* ---- refund mode on a real Redis ---------------------------------------- */

static struct gwt_proc g_redis;
static int g_port;

static int redis_setup(void **state)
{
    (void)state;
    return gwt_redis_start(&g_redis, &g_port) == 0 ? 0 : -1;
}

static int redis_teardown(void **state)
{
    (void)state;
    gwt_proc_cleanup(&g_redis);
    return 0;
}

static long long get_int(redisContext *c, const char *key)
{
    redisReply *r = redisCommand(c, "GET %s", key);
    assert_non_null(r);
    long long v = r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : -1;
    freeReplyObject(r);
    return v;
}

/* Finds the one key matching pattern; returns its value. */
static long long value_of(redisContext *c, const char *pattern)
{
    char **keys = NULL;
    int n = gwt_redis_keys(g_port, pattern, &keys);
    assert_int_equal(n, 1);
    long long v = get_int(c, keys[0]);
    gwt_strv_free(keys, n);
    return v;
}

static void test_refund_mode(void **state)
{
    (void)state;
    struct gw_redis_target t = {.host = "127.0.0.1", .port = g_port};
    struct gw_rl_redis *r = NULL;
    assert_int_equal(gw_rl_redis_create(&r, &t, 1000), 0);
    assert_int_equal(gw_rl_redis_connect(r), 0);
    redisContext *c = redisConnect("127.0.0.1", g_port);
    assert_non_null(c);

    const struct gw_rl_spec specs[3] = {
        {.algorithm = GW_RL_FIXED_WINDOW, .limit = 5, .window_ms = 60000},
        {.algorithm = GW_RL_SLIDING_WINDOW, .limit = 5, .window_ms = 60000},
        {.algorithm = GW_RL_TOKEN_BUCKET, .limit = 5, .window_ms = 60000, .burst = 5},
    };
    const char *keys[1] = {"rf:{abc}:l:p"};
    size_t lens[1] = {strlen(keys[0])};
    struct gw_rl_op ops[3] = {{.key = 0, .spec = 0}, {.key = 0, .spec = 1}, {.key = 0, .spec = 2}};
    struct gw_rl_unit unit = {.first = 0, .n = 3};
    struct gw_rl_pass p = {.mode = GW_RL_PASS_DECIDE,
                           .keys = keys,
                           .key_lens = lens,
                           .nkeys = 1,
                           .specs = specs,
                           .nspecs = 3,
                           .ops = ops,
                           .nops = 3,
                           .units = &unit,
                           .nunits = 1};
    /* Two decisions: counts 2, TAT two emission intervals ahead. */
    assert_int_equal(gw_rl_redis_apply(r, &p), 0);
    assert_int_equal(unit.result, GW_RL_UNIT_ALLOWED);
    assert_int_equal(gw_rl_redis_apply(r, &p), 0);
    assert_int_equal(unit.result, GW_RL_UNIT_ALLOWED);
    int64_t at = p.now_us;
    assert_int_equal(value_of(c, "rf:{abc}:l:p:fw:*"), 2);
    assert_int_equal(value_of(c, "rf:{abc}:l:p:sw:*"), 2);
    long long tat = value_of(c, "rf:{abc}:l:p:tb");

    /* Refund the second one as of its decision time. */
    p.mode = GW_RL_PASS_REFUND;
    p.refund_at_us = at;
    assert_int_equal(gw_rl_redis_apply(r, &p), 0);
    assert_int_equal(unit.result, GW_RL_UNIT_REFUSED);
    assert_int_equal(value_of(c, "rf:{abc}:l:p:fw:*"), 1);
    assert_int_equal(value_of(c, "rf:{abc}:l:p:sw:*"), 1);
    assert_int_equal(value_of(c, "rf:{abc}:l:p:tb"), tat - 12000000); /* T = 60 s / 5 */
    /* TTLs kept. */
    assert_true(gwt_redis_ttl(g_port, "rf:{abc}:l:p:tb") > 0);

    /* A refund for a key gone since creates nothing. */
    keys[0] = "rf:{zzz}:l:p";
    lens[0] = strlen(keys[0]);
    assert_int_equal(gw_rl_redis_apply(r, &p), 0);
    char **none = NULL;
    assert_int_equal(gwt_redis_keys(g_port, "rf:{zzz}*", &none), 0);
    gwt_strv_free(none, 0);

    /* Extra declared keys are not read: the decision is the same. */
    keys[0] = "rf:{abc}:l:p";
    lens[0] = strlen(keys[0]);
    const char *extra[1] = {"rf:{abc}:l:p:fw:60000:0"};
    size_t elens[1] = {strlen(extra[0])};
    p.mode = GW_RL_PASS_DECIDE;
    p.extra_keys = extra;
    p.extra_lens = elens;
    p.nextra = 1;
    assert_int_equal(gw_rl_redis_apply(r, &p), 0);
    assert_int_equal(unit.result, GW_RL_UNIT_ALLOWED);
    assert_int_equal(value_of(c, "rf:{abc}:l:p:fw:*"), 2);
    redisFree(c);
    gw_rl_redis_ops.destroy(r);
}

int main(void)
{
    const struct CMUnitTest pure[] = {
        cmocka_unit_test(test_key_slot),
        cmocka_unit_test(test_parse_slots),
        cmocka_unit_test(test_parse_redirect),
    };
    const struct CMUnitTest live[] = {
        cmocka_unit_test(test_refund_mode),
    };
    int failed = cmocka_run_group_tests(pure, NULL, NULL);
    failed += cmocka_run_group_tests(live, redis_setup, redis_teardown);
    return failed;
}
