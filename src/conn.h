/*
 * Client connection state machine: reads requests, asks the rate limiter
 * and the in-flight gate, streams the exchange through an upstream
 * connection, writes gateway-generated responses. Worker thread only.
 */
#ifndef GW_CONN_H
#define GW_CONN_H

#include "runtime.h"

#include <netinet/in.h>

/* Takes ownership of an accepted, non-blocking socket fd from peer and
 * starts serving it on worker w; admin: it came from the admin listener
 * (SPEC.md §11: authenticated, never rate limited, no in-flight slot, only
 * the gateway's own endpoints). Returns 0, or -errno after closing fd. */
GW_MUSTCHECK int gw_conn_open(struct gw_worker *w, int fd, const struct sockaddr_storage *peer,
                              bool admin);

/* The gate handed this worker a slot for the waiter w (popped from the
 * owner's granted list): the waiting connection proceeds upstream. */
void gw_conn_on_granted(struct gw_worker *w, struct gw_gate_waiter *waiter);

/* Drain (SIGTERM): close now if idle, else close after the current exchange.
 * force closes even mid-exchange (shutdown timeout). */
void gw_conn_drain(struct gw_conn *c, bool force);

/* Drives again the connections whose last drive ran out of rounds while
 * still making progress. Called by the worker before it sleeps; wakes the
 * loop when some still have work, so epoll_wait does not block. */
void gw_conn_run_redrive(struct gw_worker *w);

/* The next connection in the worker's list (closed ones stay listed until
 * the reaper runs), NULL at the end. */
struct gw_conn *gw_conn_next(struct gw_conn *c);

/* Frees connections closed during this loop iteration (reaper: the one place
 * that returns slots, updates connection counts and closes descriptors). */
void gw_conn_reap(struct gw_worker *w);

#endif
