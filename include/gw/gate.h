/*
 * The in-flight gate: a process-wide cap on upstream requests
 * (MAX_CONCURRENT_REQUESTS) with a bounded FIFO of waiters
 * (MAX_QUEUE_LENGTH). The fast path is sem_trywait on a POSIX semaphore; a
 * request that gets no slot is parked, never blocking its worker, and a
 * release hands the slot straight to the FIFO head and wakes that waiter's
 * worker (HAProxy queue.c). All functions are thread-safe.
 */
#ifndef GW_GATE_H
#define GW_GATE_H

#include "gw/common.h"

struct gw_gate;
struct gw_gate_owner;

/* A waiter, embedded in the connection that waits. Zero-initialise it (state
 * 0 = idle) before the first gw_gate_acquire; it is reusable once it is idle
 * again (after gw_gate_pop_granted returned it or gw_gate_cancel). Fields are
 * private to gate.c and protected by the gate's mutex. The memory must stay
 * valid while the waiter is queued or granted. */
struct gw_gate_waiter {
    struct gw_gate_waiter *prev, *next; /* FIFO or owner's granted list links */
    struct gw_gate_owner *owner;        /* the worker that is woken on grant */
    int state;                          /* idle, queued, granted */
    uint64_t enqueued_ms;               /* gw_now_ms() when queued */
};

/* One per worker: where granted waiters are collected until the worker runs.
 * Zero-initialise it, then set wake and ctx. It must outlive every waiter
 * queued on its behalf (wake may run on another thread just after a grant). */
struct gw_gate_owner {
    struct gw_gate_waiter *granted_head;       /* private, under the gate mutex */
    struct gw_gate_waiter *granted_tail;       /* private, under the gate mutex */
    void (*wake)(struct gw_gate_owner *owner); /* called (gate mutex NOT held) after
                                                  a grant; must be async-safe wrt
                                                  the worker, e.g. write an eventfd */
    void *ctx;                                 /* for wake */
};

enum gw_gate_result {
    GW_GATE_ACQUIRED = 0, /* the caller holds a slot now */
    GW_GATE_QUEUED,       /* parked; it will be granted via the owner, or time out */
    GW_GATE_FULL,         /* queue at MAX_QUEUE_LENGTH: answer 503 now */
};

/* Creates a gate of cap slots (1..SEM_VALUE_MAX) and a FIFO of at most
 * max_queue waiters (0 = no waiting: FULL whenever no slot is free). *out
 * is owned by the caller (gw_gate_destroy). Returns 0, -EINVAL for a bad cap,
 * -ENOMEM, or the -errno of sem_init/pthread_mutex_init. Not thread-safe. */
GW_MUSTCHECK int gw_gate_create(struct gw_gate **out, unsigned cap, unsigned max_queue);

/* Destroys the gate (NULL is a no-op). No waiter may be queued or granted
 * and no other thread may use it any more. */
void gw_gate_destroy(struct gw_gate *g);

/* Takes a slot if one is free and nobody waits (sem_trywait), else parks w
 * (which must be idle) at the FIFO tail on behalf of owner and returns
 * GW_GATE_QUEUED; GW_GATE_FULL when max_queue waiters are already parked.
 * A newcomer never takes a slot ahead of a queued waiter. w and owner are
 * borrowed and must stay valid until w is idle again. Thread-safe; never
 * blocks beyond the gate mutex. */
GW_MUSTCHECK enum gw_gate_result gw_gate_acquire(struct gw_gate *g, struct gw_gate_waiter *w,
                                                 struct gw_gate_owner *owner);

/* Returns a slot: hands it to the FIFO head (moved to its owner's granted
 * list, then owner->wake(owner) is called on this thread without the gate
 * mutex held) or posts the semaphore when nobody waits. Call exactly once per
 * slot held. Thread-safe. */
void gw_gate_release(struct gw_gate *g);

/* Pops the oldest granted waiter of owner; that waiter is idle again and its
 * connection now holds a slot (release it with gw_gate_release). NULL when
 * none. Thread-safe (normally called by the owner's worker after wake). */
struct gw_gate_waiter *gw_gate_pop_granted(struct gw_gate *g, struct gw_gate_owner *owner);

/* Withdraws w (queue timeout or client gone). Returns true when w had
 * already been granted: it is taken off its owner's granted list and the
 * caller now holds that slot (use it or gw_gate_release it). Returns false
 * when w was still queued (unlinked, no slot) or not waiting at all.
 * Either way w is idle afterwards. Thread-safe: a racing gw_gate_release is
 * serialised by the gate mutex, so the slot is never lost nor doubled. */
GW_MUSTCHECK bool gw_gate_cancel(struct gw_gate *g, struct gw_gate_waiter *w);

/* Slots taken right now (including slots granted to waiters not yet popped),
 * and waiters queued right now. Relaxed atomic reads without the mutex, for
 * /stats and /metrics: each value is exact at some recent instant. */
unsigned gw_gate_in_flight(const struct gw_gate *g);
unsigned gw_gate_queue_length(const struct gw_gate *g);

/* Free slots in the semaphore right now (sem_getvalue), for tests and
 * diagnostics. Thread-safe; the value may be stale when it returns. */
unsigned gw_gate_available(struct gw_gate *g);

#endif
