/*
 * The acceptor thread: accepts client sockets on the listener and hands each
 * to the least-loaded worker; enforces MAX_CONNECTIONS; survives EMFILE by
 * shedding with a spare descriptor and pausing (libuv, memcached).
 */
#ifndef GW_ACCEPTOR_H
#define GW_ACCEPTOR_H

#include "server.h"

/* Starts the acceptor thread on srv->listen_fd. 0 or -errno. */
GW_MUSTCHECK int gw_acceptor_start(struct gw_server *srv);

/* Stops accepting, joins the thread and closes the listener. */
void gw_acceptor_stop(struct gw_server *srv);

#endif
