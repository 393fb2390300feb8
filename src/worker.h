/*
 * Worker threads: each owns an epoll loop, its client connections, its
 * upstream pool, its Redis connection and its counters. The acceptor hands
 * sockets over through a mutex-protected inbox and the loop's eventfd,
 * written only when the inbox goes from empty to non-empty.
 */
#ifndef GW_WORKER_H
#define GW_WORKER_H

#include "runtime.h"

/* Allocates worker id of srv with its loop and Redis handle. 0 or -errno. */
GW_MUSTCHECK int gw_worker_create(struct gw_worker **out, struct gw_server *srv, int id);

/* Starts the worker's thread. 0 or -errno. */
GW_MUSTCHECK int gw_worker_start(struct gw_worker *w);

/* Queues an accepted socket for w and wakes it; admin: it came from the
 * admin listener. Thread-safe. Returns 0, or -ENOMEM (the caller closes
 * fd). */
GW_MUSTCHECK int gw_worker_handoff(struct gw_worker *w, int fd, const struct sockaddr_storage *peer,
                                   bool admin);

/* Asks the worker to drain (force = close everything now). Thread-safe.
 * The thread exits once it holds no connection. */
void gw_worker_request_drain(struct gw_worker *w, bool force);

/* Joins the thread. */
void gw_worker_join(struct gw_worker *w);

/* Frees a joined (or never started) worker. */
void gw_worker_destroy(struct gw_worker *w);

#endif
