/*
 * Redis Cluster redirects followed by this process (SPEC.md §12): the
 * process-wide counts behind gateway_redis_redirects_total{type="moved"}
 * and {type="ask"}, and the key slot that decides where a key lives. Any
 * Redis client of the gateway (the rate limiter's cluster store, the rules
 * sync's client) counts each -MOVED or -ASK reply it follows, once.
 */
#ifndef GW_REDIS_REDIRECTS_H
#define GW_REDIS_REDIRECTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GW_REDIS_CLUSTER_SLOTS 16384 /* hash slots of a Redis Cluster */

/* Counts one redirect followed: an -ASK reply when ask, else a -MOVED one.
 * Lock-free (a relaxed atomic add); callable from any thread. */
void gw_redis_redirect_count(bool ask);

/* Redirects counted since the process started: the -ASK ones when ask,
 * else the -MOVED ones. A relaxed atomic load (monotonic, may lag a count
 * made on another thread by an instant); callable from any thread. */
uint64_t gw_redis_redirects_total(bool ask);

/* The Redis Cluster hash slot of a key of len bytes (0 .. 16383): CRC16
 * (XMODEM: polynomial 0x1021, initial 0) of the hash tag, the bytes
 * between the first '{' and the first '}' after it when there are any,
 * else of the whole key; modulo 16384 (Redis Cluster specification, "Key
 * distribution model"). Pure; thread-safe. */
unsigned gw_redis_key_slot(const char *key, size_t len);

#endif
