/*
 * Driver of test/bench/algorithms.sh (issue 12: Redis CPU per check of each
 * algorithm): PASSES passes of CLIENTS distinct clients, one op each, of one
 * algorithm (0 fixed window, 1 sliding window, 2 token bucket) through the
 * Redis store (src/rl_redis.c, the gateway's own script and call) at
 * 127.0.0.1:PORT. Every check is allowed (limits of 10^9). Exits 0, or 1
 * with a message on stderr when the store fails.
 *
 *   bench_rl_algo PORT ALGORITHM PASSES CLIENTS(1..256)
 */
#include "ratelimit_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLIENTS_MAX 256

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: bench_rl_algo PORT ALGORITHM PASSES CLIENTS\n");
        return 1;
    }
    int port = atoi(argv[1]), algo = atoi(argv[2]), passes = atoi(argv[3]);
    int clients = atoi(argv[4]);
    if (clients < 1 || clients > CLIENTS_MAX || algo < 0 || algo > 2 || passes < 0) {
        fprintf(stderr, "bench_rl_algo: bad arguments\n");
        return 1;
    }
    struct gw_redis_target t = {.host = "127.0.0.1", .port = port};
    struct gw_rl_redis *r = NULL;
    if (gw_rl_redis_create(&r, &t, 60000) != 0 || gw_rl_redis_connect(r) != 0) {
        fprintf(stderr, "bench_rl_algo: cannot connect to 127.0.0.1:%d\n", port);
        return 1;
    }
    static const enum gw_rl_algorithm algos[] = {GW_RL_FIXED_WINDOW, GW_RL_SLIDING_WINDOW,
                                                 GW_RL_TOKEN_BUCKET};
    struct gw_rl_spec spec = {.algorithm = algos[algo],
                              .limit = 1000000000,
                              .window_ms = 60000,
                              .burst = 1000000000};
    static char kb[CLIENTS_MAX][64];
    const char *keys[CLIENTS_MAX];
    size_t lens[CLIENTS_MAX];
    struct gw_rl_op ops[CLIENTS_MAX];
    struct gw_rl_unit units[CLIENTS_MAX];
    for (int i = 0; i < clients; i++) {
        snprintf(kb[i], sizeof(kb[i]), "rl:{%032x}:default:default", (unsigned)i * 7919u);
        keys[i] = kb[i];
        lens[i] = strlen(kb[i]);
        ops[i] = (struct gw_rl_op){.key = (uint16_t)i, .spec = 0};
        units[i] = (struct gw_rl_unit){.first = (uint16_t)i, .n = 1};
    }
    struct gw_rl_pass p = {.keys = keys,
                           .key_lens = lens,
                           .nkeys = (size_t)clients,
                           .specs = &spec,
                           .nspecs = 1,
                           .ops = ops,
                           .nops = (size_t)clients,
                           .units = units,
                           .nunits = (size_t)clients};
    for (int k = 0; k < passes; k++)
        if (gw_rl_redis_apply(r, &p) != 0 || units[0].result != GW_RL_UNIT_ALLOWED) {
            fprintf(stderr, "bench_rl_algo: check failed: %s\n", gw_rl_redis_last_error(r));
            return 1;
        }
    gw_rl_redis_ops.destroy(r);
    return 0;
}
