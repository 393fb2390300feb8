/*
 * libFuzzer target for what the rate limiter reads from the network: RESP
 * bytes through hiredis's reply reader, bounded as the Redis store bounds
 * it (gw_rl_redis_bound_reader: a huge announced array once cost 4 GiB), and
 * every complete reply through the store's reply check
 * (gw_rl_redis_take_reply), and the Cluster store's CLUSTER SLOTS and
 * MOVED/ASK parsers. First byte of each input: the shape of the
 * pass the reply must answer (bits 0-2: units, 1..8; bits 3-5: ops per
 * unit, 1..8); the rest is the byte stream. Invariants: the reader either
 * errs or yields replies; a reply the check accepts sets every unit to
 * ALLOWED, REFUSED or ERROR and every op's state to [0, 2^62); a refused
 * one leaves every unit UNDECIDED; nothing leaks or reads out of bounds
 * (ASan) and no arithmetic is undefined (UBSan).
 */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdint.h>
#include <string.h>

#include "gw/redis_redirects.h"
#include "ratelimit_int.h"

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The Cluster store's parsers on the same reply: CLUSTER SLOTS ranges in
 * bounds, redirects with a slot and port in range and a host inside the
 * text. */
static void cluster_parsers(const redisReply *reply)
{
    static struct gw_redis_slot_range g[16384];
    int n = gw_redis_parse_cluster_slots(reply, g, sizeof(g) / sizeof(g[0]));
    CHECK(n == -EPROTO || (n >= 0 && reply->type == REDIS_REPLY_ARRAY));
    for (int i = 0; i < n; i++) {
        CHECK(g[i].lo <= g[i].hi && g[i].hi < 16384);
        CHECK(g[i].port > 0 && g[i].port <= 65535);
        CHECK(g[i].host == NULL || g[i].host_len > 0);
    }
    if (reply->type == REDIS_REPLY_ERROR || reply->type == REDIS_REPLY_STATUS) {
        bool ask;
        unsigned slot;
        const char *host;
        size_t hl;
        int port;
        if (gw_redis_parse_redirect(reply->str, &ask, &slot, &host, &hl, &port)) {
            CHECK(slot < 16384 && port > 0 && port <= 65535);
            CHECK(hl <= 255 && host > reply->str && host + hl <= reply->str + strlen(reply->str));
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t nunits = (size_t)(data[0] & 7) + 1, per = (size_t)((data[0] >> 3) & 7) + 1;
    struct gw_rl_unit units[8];
    struct gw_rl_op ops[64];
    struct gw_rl_spec spec = {.algorithm = GW_RL_FIXED_WINDOW, .limit = 5, .window_ms = 1000};
    const char *keys[1] = {"rl:{00}:default:default"};
    size_t klens[1] = {23};
    for (size_t u = 0; u < nunits; u++)
        units[u] = (struct gw_rl_unit){.first = (uint16_t)(u * per), .n = (uint16_t)per};
    for (size_t o = 0; o < nunits * per; o++)
        ops[o] = (struct gw_rl_op){.key = 0, .spec = 0, .a = -1, .b = -1};
    struct gw_rl_pass pass = {.keys = keys,
                              .key_lens = klens,
                              .nkeys = 1,
                              .specs = &spec,
                              .nspecs = 1,
                              .ops = ops,
                              .nops = nunits * per,
                              .units = units,
                              .nunits = nunits};

    struct gw_redis_target target;
    memset(&target, 0, sizeof(target));
    struct gw_rl_redis *r = NULL;
    CHECK(gw_rl_redis_create(&r, &target, 100) == 0);
    redisReader *rd = redisReaderCreate();
    CHECK(rd != NULL);
    gw_rl_redis_bound_reader(rd); /* as the store's connection has it */
    if (redisReaderFeed(rd, (const char *)data + 1, size - 1) == REDIS_OK) {
        for (int i = 0; i < 64; i++) {
            void *reply = NULL;
            if (redisReaderGetReply(rd, &reply) != REDIS_OK || reply == NULL)
                break;
            cluster_parsers(reply);
            int rc = gw_rl_redis_take_reply(r, reply, &pass);
            CHECK(rc == 0 || rc == -EPROTO);
            for (size_t u = 0; u < nunits; u++) {
                enum gw_rl_unit_result res = units[u].result;
                if (rc != 0) {
                    CHECK(res == GW_RL_UNIT_UNDECIDED);
                    continue;
                }
                CHECK(res == GW_RL_UNIT_ALLOWED || res == GW_RL_UNIT_REFUSED ||
                      res == GW_RL_UNIT_ERROR);
                for (size_t j = 0; j < per; j++) {
                    const struct gw_rl_op *op = &ops[units[u].first + j];
                    CHECK(op->a >= 0 && op->a < ((int64_t)1 << 62));
                    CHECK(op->b >= 0 && op->b < ((int64_t)1 << 62));
                }
            }
            if (rc == 0)
                CHECK(pass.now_us > 0);
        }
    }
    redisReaderFree(rd);
    gw_rl_redis_ops.destroy(r);
    return 0;
}
