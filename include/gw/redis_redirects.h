/*
 * Redis Cluster redirects followed by this process (SPEC.md §12), with the
 * parsers of CLUSTER SLOTS and of MOVED/ASK replies: the
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

/* One entry of a CLUSTER SLOTS reply: slots lo..hi served by the master at
 * host:port. host points into the reply (host_len bytes); NULL when the
 * reply gives "" (an unknown endpoint: the node asked). */
struct gw_redis_slot_range {
    unsigned lo, hi;
    const char *host;
    size_t host_len;
    int port;
};

/* Parses a CLUSTER SLOTS reply (a hiredis redisReply, borrowed) into out
 * (cap entries; pointers into the reply). Entries whose host is "?" (no
 * endpoint of the preferred type) are left out: their slots stay unserved.
 * Returns the entry count, or -EPROTO for anything but an array of [lo,
 * hi, [host, port, ...], ...] with 0 <= lo <= hi < 16384 and a port in
 * 1..65535 (or more than cap entries). Redis Cluster specification,
 * "CLUSTER SLOTS". Pure; thread-safe. */
int gw_redis_parse_cluster_slots(const void *reply, struct gw_redis_slot_range *out, size_t cap);

/* Parses a redirect error text without its '-' ("MOVED <slot> <host>:<port>"
 * or "ASK ...", an IPv6 host possibly in brackets): true with *ask, *slot,
 * the host (pointing into msg, *host_len bytes, brackets removed; 0 bytes
 * for an empty host, which means the node that replied) and *port; false
 * for any other text. Redis Cluster specification, "Redirection and
 * resharding". Pure; thread-safe. */
bool gw_redis_parse_redirect(const char *msg, bool *ask, unsigned *slot, const char **host,
                             size_t *host_len, int *port);

#endif
