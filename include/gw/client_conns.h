/*
 * Per-client connection cap (MAX_CONNECTIONS_PER_CLIENT): how many client
 * connections each address holds at once, so that one client cannot take
 * every connection the gateway will hold. IPv4 addresses count one by one;
 * IPv6 addresses by /64, the block one subscriber usually gets (RFC 6177),
 * so that walking through one's own /64 does not escape the cap.
 * Thread-safe: sharded mutexes; acquire and release may run on different
 * threads (the acceptor takes, the worker that closes gives back).
 */
#ifndef GW_CLIENT_CONNS_H
#define GW_CLIENT_CONNS_H

#include "gw/common.h"

struct gw_client_conns; /* opaque */

/* Creates a table allowing cap connections per client (cap >= 1). The
 * caller owns *out (gw_client_conns_destroy). Returns 0, -EINVAL for cap < 1
 * or -ENOMEM. */
GW_MUSTCHECK int gw_client_conns_create(struct gw_client_conns **out, int cap);

/* Frees the table and every entry. Safe on NULL. No other call may run
 * concurrently. */
void gw_client_conns_destroy(struct gw_client_conns *t);

/* Counts one more connection of the client at addr (16-byte form of
 * gw_net_addr_bin, only read during the call): true when it is within the
 * cap (the caller must later gw_client_conns_release it), false when the
 * client already holds cap connections or no memory was left for a new
 * client (nothing is counted then; the caller closes the connection).
 * Thread-safe. */
GW_MUSTCHECK bool gw_client_conns_acquire(struct gw_client_conns *t, const uint8_t addr[16]);

/* Gives back one connection taken by a successful gw_client_conns_acquire of
 * the same addr; the client's entry is freed when its count reaches zero.
 * Thread-safe. */
void gw_client_conns_release(struct gw_client_conns *t, const uint8_t addr[16]);

/* Connections the client at addr holds now (0 when unknown). Thread-safe;
 * for tests and diagnostics. */
int gw_client_conns_count(struct gw_client_conns *t, const uint8_t addr[16]);

#endif
