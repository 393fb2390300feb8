/*
 * The in-flight gate (gw/gate.h): MAX_CONCURRENT_REQUESTS slots in a POSIX
 * semaphore plus one process-wide FIFO of parked waiters. A release hands
 * its slot straight to the FIFO head instead of posting, so a newcomer can
 * never take a slot ahead of someone who waits (HAProxy queue.c).
 *
 * Locking rules
 *  1. g->lock protects the FIFO (g->head, g->tail), every owner's granted
 *     list, and the link/state fields of every waiter that is queued or
 *     granted. Nothing else is ever locked while it is held, and no callback
 *     runs under it: owner->wake is called after unlocking.
 *  2. g->queue_len and g->in_flight are atomics. queue_len is written only
 *     under g->lock; both may be read without it (relaxed: /stats, and the
 *     fast-path shortcut below).
 *  3. sem_post is called only under g->lock and only when the FIFO is empty.
 *     sem_trywait runs either without the lock (fast path) or under it (slow
 *     path, just before a waiter is enqueued).
 *
 * Invariant: FIFO non-empty => semaphore value 0. A waiter is enqueued under
 * the lock right after a sem_trywait under that same lock failed; until the
 * FIFO drains again every release takes the lock, sees the FIFO non-empty
 * and hands its slot over instead of posting; lock-free trywaits can only
 * lower the value. Consequences:
 *  - no queue-jumping: while anyone waits, a newcomer's sem_trywait fails,
 *    even if it read a stale queue_len of 0 (the read is only a shortcut);
 *  - no stranded slot: a release cannot post "just before" a waiter parks,
 *    because the post and the enqueue decision are serialised by the lock;
 *  - no lost slot on cancel: a release and a cancel of the same waiter are
 *    serialised by the lock, so cancel reports "granted" exactly when the
 *    release moved the slot to that waiter.
 *
 * in_flight counts slots held, including slots granted but not yet popped:
 * +1 on a successful sem_trywait, -1 just before sem_post, unchanged when a
 * release hands over (the slot changes hands, it is not returned).
 */
#include "gw/gate.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

/* Values of gw_gate_waiter.state; idle is 0 so a zeroed waiter is ready. */
enum waiter_state {
    WAITER_IDLE = 0, /* not known to the gate */
    WAITER_QUEUED,   /* on the FIFO */
    WAITER_GRANTED,  /* on its owner's granted list, holding a slot */
};

struct gw_gate {
    sem_t slots;                 /* free slots; see the invariant above */
    pthread_mutex_t lock;        /* rule 1 */
    struct gw_gate_waiter *head; /* oldest queued waiter (next to grant) */
    struct gw_gate_waiter *tail; /* newest queued waiter */
    _Atomic unsigned queue_len;  /* waiters on the FIFO (rule 2) */
    _Atomic unsigned in_flight;  /* slots held, granted included */
    unsigned cap;                /* MAX_CONCURRENT_REQUESTS */
    unsigned max_queue;          /* MAX_QUEUE_LENGTH */
};

/* Appends w to the list (*head, *tail). Caller holds g->lock. */
static void list_push_tail(struct gw_gate_waiter **head, struct gw_gate_waiter **tail,
                           struct gw_gate_waiter *w)
{
    w->next = NULL;
    w->prev = *tail;
    if (*tail)
        (*tail)->next = w;
    else
        *head = w;
    *tail = w;
}

/* Unlinks w from the list (*head, *tail). Caller holds g->lock. */
static void list_unlink(struct gw_gate_waiter **head, struct gw_gate_waiter **tail,
                        struct gw_gate_waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        *head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        *tail = w->prev;
    w->prev = w->next = NULL;
}

/* A failed sem_post or an unbalanced release means a slot was invented or
 * lost: the cap could no longer be trusted, so stop loudly. */
static void gate_bug(const char *what)
{
    fprintf(stderr, "gw_gate: internal error: %s\n", what);
    abort();
}

int gw_gate_create(struct gw_gate **out, unsigned cap, unsigned max_queue)
{
    *out = NULL;
    if (cap == 0 || cap > (unsigned)SEM_VALUE_MAX)
        return -EINVAL;
    struct gw_gate *g = calloc(1, sizeof(*g));
    if (!g)
        return -ENOMEM;
    if (sem_init(&g->slots, 0, cap) != 0) {
        int err = errno;
        free(g);
        return -err;
    }
    int rc = pthread_mutex_init(&g->lock, NULL);
    if (rc != 0) {
        sem_destroy(&g->slots);
        free(g);
        return -rc;
    }
    atomic_init(&g->queue_len, 0);
    atomic_init(&g->in_flight, 0);
    g->cap = cap;
    g->max_queue = max_queue;
    *out = g;
    return 0;
}

void gw_gate_destroy(struct gw_gate *g)
{
    if (!g)
        return;
    assert(g->head == NULL && "gw_gate_destroy with queued waiters");
    pthread_mutex_destroy(&g->lock);
    sem_destroy(&g->slots);
    free(g);
}

enum gw_gate_result gw_gate_acquire(struct gw_gate *g, struct gw_gate_waiter *w,
                                    struct gw_gate_owner *owner)
{
    assert(w->state == WAITER_IDLE && "waiter already queued or granted");

    /* Fast path without the lock. The queue_len test only saves a futile
     * trywait; the invariant is what keeps newcomers behind waiters. */
    if (atomic_load_explicit(&g->queue_len, memory_order_relaxed) == 0 &&
        sem_trywait(&g->slots) == 0) {
        atomic_fetch_add_explicit(&g->in_flight, 1, memory_order_relaxed);
        return GW_GATE_ACQUIRED;
    }

    pthread_mutex_lock(&g->lock);
    /* The FIFO may have drained (and a slot been posted) since the read. */
    if (g->head == NULL && sem_trywait(&g->slots) == 0) {
        pthread_mutex_unlock(&g->lock);
        atomic_fetch_add_explicit(&g->in_flight, 1, memory_order_relaxed);
        return GW_GATE_ACQUIRED;
    }
    if (atomic_load_explicit(&g->queue_len, memory_order_relaxed) >= g->max_queue) {
        pthread_mutex_unlock(&g->lock);
        return GW_GATE_FULL;
    }
    /* No post can happen between the failed trywait above and this enqueue
     * (rule 3), so the waiter cannot miss a slot. */
    w->owner = owner;
    w->state = WAITER_QUEUED;
    w->enqueued_ms = gw_now_ms();
    list_push_tail(&g->head, &g->tail, w);
    atomic_fetch_add_explicit(&g->queue_len, 1, memory_order_relaxed);
    pthread_mutex_unlock(&g->lock);
    return GW_GATE_QUEUED;
}

void gw_gate_release(struct gw_gate *g)
{
    struct gw_gate_owner *wake_owner = NULL;

    pthread_mutex_lock(&g->lock);
    struct gw_gate_waiter *w = g->head;
    if (w) {
        /* Hand-over: the slot moves to the head waiter, in_flight unchanged. */
        list_unlink(&g->head, &g->tail, w);
        atomic_fetch_sub_explicit(&g->queue_len, 1, memory_order_relaxed);
        w->state = WAITER_GRANTED;
        list_push_tail(&w->owner->granted_head, &w->owner->granted_tail, w);
        wake_owner = w->owner;
    } else {
        if (atomic_load_explicit(&g->in_flight, memory_order_relaxed) == 0)
            gate_bug("release without a slot held");
        /* Decrement before posting so in_flight never reads above cap. */
        atomic_fetch_sub_explicit(&g->in_flight, 1, memory_order_relaxed);
        if (sem_post(&g->slots) != 0)
            gate_bug("sem_post failed");
    }
    pthread_mutex_unlock(&g->lock);

    if (wake_owner && wake_owner->wake)
        wake_owner->wake(wake_owner);
}

struct gw_gate_waiter *gw_gate_pop_granted(struct gw_gate *g, struct gw_gate_owner *owner)
{
    pthread_mutex_lock(&g->lock);
    struct gw_gate_waiter *w = owner->granted_head;
    if (w) {
        list_unlink(&owner->granted_head, &owner->granted_tail, w);
        w->state = WAITER_IDLE;
        w->owner = NULL;
    }
    pthread_mutex_unlock(&g->lock);
    return w;
}

bool gw_gate_cancel(struct gw_gate *g, struct gw_gate_waiter *w)
{
    bool granted = false;

    pthread_mutex_lock(&g->lock);
    switch (w->state) {
    case WAITER_QUEUED:
        list_unlink(&g->head, &g->tail, w);
        atomic_fetch_sub_explicit(&g->queue_len, 1, memory_order_relaxed);
        break;
    case WAITER_GRANTED:
        /* The slot already moved to w; the caller now owns it. */
        list_unlink(&w->owner->granted_head, &w->owner->granted_tail, w);
        granted = true;
        break;
    default:
        break;
    }
    w->state = WAITER_IDLE;
    w->owner = NULL;
    pthread_mutex_unlock(&g->lock);
    return granted;
}

unsigned gw_gate_in_flight(const struct gw_gate *g)
{
    return atomic_load_explicit(&g->in_flight, memory_order_relaxed);
}

unsigned gw_gate_queue_length(const struct gw_gate *g)
{
    return atomic_load_explicit(&g->queue_len, memory_order_relaxed);
}

unsigned gw_gate_available(struct gw_gate *g)
{
    int v = 0;
    if (sem_getvalue(&g->slots, &v) != 0 || v < 0)
        return 0;
    return (unsigned)v;
}
