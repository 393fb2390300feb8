/*
 * The acceptor thread: accepts client sockets on the listener and hands each
 * to the least-loaded worker; enforces MAX_CONNECTIONS and
 * MAX_CONNECTIONS_PER_CLIENT (counted in its own stats struct, summed with
 * the workers'); survives EMFILE by
 * shedding with a spare descriptor and pausing (libuv, memcached).
 */
#ifndef GW_ACCEPTOR_H
#define GW_ACCEPTOR_H

#include "runtime.h"

/* Starts the acceptor thread on srv->listen_fd and, when it is >= 0,
 * srv->admin_fd (the admin listener, SPEC.md §11: its connections are
 * handed over marked admin). 0 or -errno. */
GW_MUSTCHECK int gw_acceptor_start(struct gw_server *srv);

/* Gives back what admitting a client connection took: its place under
 * MAX_CONNECTIONS and, when MAX_CONNECTIONS_PER_CLIENT is set, under its
 * client's cap. addr is the peer in gw_net_addr_bin form (only read). Call
 * exactly once per connection the acceptor handed over, from any thread,
 * when its descriptor is closed. */
void gw_acceptor_release(struct gw_server *srv, const uint8_t addr[16]);

/* Stops accepting, joins the thread and closes the listeners. */
void gw_acceptor_stop(struct gw_server *srv);

#endif
