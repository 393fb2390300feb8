/*
 * Unit tests of the in-flight gate (src/gate.c): fast path, FIFO hand-over
 * order, FULL at MAX_QUEUE_LENGTH, no queue-jumping, cancel of queued and
 * granted waiters, the atomic gauges, and a bounded multi-threaded stress
 * test that checks the cap is never exceeded and no slot leaks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "gw/gate.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- single-threaded fixtures --------------------------------------- */

/* An owner whose wake just counts calls. */
struct fake_owner {
    struct gw_gate_owner owner;
    struct gw_gate *gate; /* for wake_pops_inside */
    int wakes;
    struct gw_gate_waiter *popped_in_wake; /* set by wake_pops_inside */
};

static void wake_count(struct gw_gate_owner *o)
{
    struct fake_owner *f = o->ctx;
    f->wakes++;
}

static void fake_owner_init(struct fake_owner *f, struct gw_gate *g)
{
    memset(f, 0, sizeof(*f));
    f->owner.wake = wake_count;
    f->owner.ctx = f;
    f->gate = g;
}

static struct gw_gate *make_gate(unsigned cap, unsigned max_queue)
{
    struct gw_gate *g = NULL;
    assert_int_equal(gw_gate_create(&g, cap, max_queue), 0);
    assert_non_null(g);
    return g;
}

static void test_create_rejects_zero_cap(void **state)
{
    (void)state;
    struct gw_gate *g = (struct gw_gate *)1;
    assert_int_equal(gw_gate_create(&g, 0, 10), -EINVAL);
    assert_null(g);
    gw_gate_destroy(NULL); /* no-op */
}

static void test_fast_path_and_gauges(void **state)
{
    (void)state;
    struct gw_gate *g = make_gate(2, 4);
    struct fake_owner fo;
    fake_owner_init(&fo, g);
    struct gw_gate_waiter w[3];
    memset(w, 0, sizeof(w));

    assert_int_equal(gw_gate_available(g), 2);
    assert_int_equal(gw_gate_acquire(g, &w[0], &fo.owner), GW_GATE_ACQUIRED);
    assert_int_equal(gw_gate_acquire(g, &w[1], &fo.owner), GW_GATE_ACQUIRED);
    assert_int_equal(gw_gate_in_flight(g), 2);
    assert_int_equal(gw_gate_queue_length(g), 0);
    assert_int_equal(gw_gate_available(g), 0);

    assert_int_equal(gw_gate_acquire(g, &w[2], &fo.owner), GW_GATE_QUEUED);
    assert_int_equal(gw_gate_queue_length(g), 1);
    assert_int_equal(gw_gate_in_flight(g), 2);
    assert_null(gw_gate_pop_granted(g, &fo.owner));
    assert_int_equal(fo.wakes, 0);

    /* Hand-over: the slot moves to w[2]; in_flight unchanged, no post. */
    gw_gate_release(g);
    assert_int_equal(fo.wakes, 1);
    assert_int_equal(gw_gate_queue_length(g), 0);
    assert_int_equal(gw_gate_in_flight(g), 2);
    assert_int_equal(gw_gate_available(g), 0);
    assert_ptr_equal(gw_gate_pop_granted(g, &fo.owner), &w[2]);
    assert_null(gw_gate_pop_granted(g, &fo.owner));

    gw_gate_release(g);
    assert_int_equal(gw_gate_in_flight(g), 1);
    assert_int_equal(gw_gate_available(g), 1);
    gw_gate_release(g);
    assert_int_equal(gw_gate_in_flight(g), 0);
    assert_int_equal(gw_gate_available(g), 2);
    assert_int_equal(fo.wakes, 1);

    /* A popped waiter is idle again and can be reused. */
    assert_int_equal(gw_gate_acquire(g, &w[2], &fo.owner), GW_GATE_ACQUIRED);
    gw_gate_release(g);
    gw_gate_destroy(g);
}

static void test_fifo_order(void **state)
{
    (void)state;
    struct gw_gate *g = make_gate(1, 16);
    struct fake_owner a, b;
    fake_owner_init(&a, g);
    fake_owner_init(&b, g);
    struct gw_gate_waiter holder = {0};
    struct gw_gate_waiter w[6];
    memset(w, 0, sizeof(w));
    /* Enqueue order w0..w5, alternating owners a, b, a, b, ... */
    struct fake_owner *owner_of[6] = {&a, &b, &a, &b, &a, &b};

    assert_int_equal(gw_gate_acquire(g, &holder, &a.owner), GW_GATE_ACQUIRED);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(gw_gate_acquire(g, &w[i], &owner_of[i]->owner), GW_GATE_QUEUED);
        assert_int_equal(gw_gate_queue_length(g), (unsigned)i + 1);
    }

    /* Each release grants exactly the next waiter in enqueue order, to its
     * owner, and wakes that owner once. */
    for (int i = 0; i < 6; i++) {
        int wakes_a = a.wakes, wakes_b = b.wakes;
        gw_gate_release(g);
        struct fake_owner *o = owner_of[i];
        struct fake_owner *other = o == &a ? &b : &a;
        assert_int_equal(a.wakes + b.wakes, wakes_a + wakes_b + 1);
        assert_int_equal(o == &a ? a.wakes : b.wakes, (o == &a ? wakes_a : wakes_b) + 1);
        assert_null(gw_gate_pop_granted(g, &other->owner));
        assert_ptr_equal(gw_gate_pop_granted(g, &o->owner), &w[i]);
        assert_int_equal(gw_gate_queue_length(g), 5 - (unsigned)i);
        assert_int_equal(gw_gate_in_flight(g), 1);
    }
    gw_gate_release(g);
    assert_int_equal(gw_gate_in_flight(g), 0);
    assert_int_equal(gw_gate_available(g), 1);
    gw_gate_destroy(g);
}

static void test_granted_list_keeps_order(void **state)
{
    (void)state;
    /* Several grants to one owner before it runs are popped oldest first. */
    struct gw_gate *g = make_gate(3, 8);
    struct fake_owner fo;
    fake_owner_init(&fo, g);
    struct gw_gate_waiter h[3], w[3];
    memset(h, 0, sizeof(h));
    memset(w, 0, sizeof(w));
    for (int i = 0; i < 3; i++)
        assert_int_equal(gw_gate_acquire(g, &h[i], &fo.owner), GW_GATE_ACQUIRED);
    for (int i = 0; i < 3; i++)
        assert_int_equal(gw_gate_acquire(g, &w[i], &fo.owner), GW_GATE_QUEUED);
    for (int i = 0; i < 3; i++)
        gw_gate_release(g);
    assert_int_equal(fo.wakes, 3);
    for (int i = 0; i < 3; i++)
        assert_ptr_equal(gw_gate_pop_granted(g, &fo.owner), &w[i]);
    assert_null(gw_gate_pop_granted(g, &fo.owner));
    for (int i = 0; i < 3; i++)
        gw_gate_release(g);
    assert_int_equal(gw_gate_available(g), 3);
    gw_gate_destroy(g);
}

static void test_full_at_max_queue(void **state)
{
    (void)state;
    struct gw_gate *g = make_gate(1, 2);
    struct fake_owner fo;
    fake_owner_init(&fo, g);
    struct gw_gate_waiter w[4];
    memset(w, 0, sizeof(w));

    assert_int_equal(gw_gate_acquire(g, &w[0], &fo.owner), GW_GATE_ACQUIRED);
    assert_int_equal(gw_gate_acquire(g, &w[1], &fo.owner), GW_GATE_QUEUED);
    assert_int_equal(gw_gate_acquire(g, &w[2], &fo.owner), GW_GATE_QUEUED);
    assert_int_equal(gw_gate_acquire(g, &w[3], &fo.owner), GW_GATE_FULL);
    assert_int_equal(gw_gate_queue_length(g), 2);
    /* A FULL waiter was not linked anywhere: it can be cancelled as idle. */
    assert_false(gw_gate_cancel(g, &w[3]));

    /* Room again once one leaves the queue. */
    assert_false(gw_gate_cancel(g, &w[1]));
    assert_int_equal(gw_gate_acquire(g, &w[3], &fo.owner), GW_GATE_QUEUED);
    assert_false(gw_gate_cancel(g, &w[2]));
    assert_false(gw_gate_cancel(g, &w[3]));
    gw_gate_release(g);
    assert_int_equal(fo.wakes, 0);
    assert_int_equal(gw_gate_available(g), 1);
    gw_gate_destroy(g);

    /* max_queue 0: no waiting at all. */
    g = make_gate(1, 0);
    memset(w, 0, sizeof(w));
    assert_int_equal(gw_gate_acquire(g, &w[0], &fo.owner), GW_GATE_ACQUIRED);
    assert_int_equal(gw_gate_acquire(g, &w[1], &fo.owner), GW_GATE_FULL);
    assert_int_equal(gw_gate_queue_length(g), 0);
    gw_gate_release(g);
    assert_int_equal(gw_gate_acquire(g, &w[1], &fo.owner), GW_GATE_ACQUIRED);
    gw_gate_release(g);
    gw_gate_destroy(g);
}

static void test_no_queue_jumping(void **state)
{
    (void)state;
    struct gw_gate *g = make_gate(2, 8);
    struct fake_owner fo;
    fake_owner_init(&fo, g);
    struct gw_gate_waiter a = {0}, b = {0}, q1 = {0}, q2 = {0}, late = {0};

    assert_int_equal(gw_gate_acquire(g, &a, &fo.owner), GW_GATE_ACQUIRED);
    assert_int_equal(gw_gate_acquire(g, &b, &fo.owner), GW_GATE_ACQUIRED);
    assert_int_equal(gw_gate_acquire(g, &q1, &fo.owner), GW_GATE_QUEUED);
    assert_int_equal(gw_gate_acquire(g, &q2, &fo.owner), GW_GATE_QUEUED);

    /* A slot frees while two wait: it goes to q1, not to a newcomer, even
     * though q1's worker has not run yet. */
    gw_gate_release(g);
    assert_int_equal(gw_gate_available(g), 0);
    assert_int_equal(gw_gate_acquire(g, &late, &fo.owner), GW_GATE_QUEUED);
    assert_int_equal(gw_gate_queue_length(g), 2);

    /* The newcomer is served after q2. */
    gw_gate_release(g);
    assert_ptr_equal(gw_gate_pop_granted(g, &fo.owner), &q1);
    assert_ptr_equal(gw_gate_pop_granted(g, &fo.owner), &q2);
    assert_null(gw_gate_pop_granted(g, &fo.owner));
    gw_gate_release(g);
    assert_ptr_equal(gw_gate_pop_granted(g, &fo.owner), &late);
    assert_int_equal(gw_gate_queue_length(g), 0);
    assert_int_equal(gw_gate_in_flight(g), 2);

    /* Only once the queue is empty does a newcomer take a posted slot. */
    gw_gate_release(g);
    assert_int_equal(gw_gate_available(g), 1);
    assert_int_equal(gw_gate_acquire(g, &a, &fo.owner), GW_GATE_ACQUIRED);
    gw_gate_release(g);
    gw_gate_release(g);
    assert_int_equal(gw_gate_available(g), 2);
    assert_int_equal(gw_gate_in_flight(g), 0);
    gw_gate_destroy(g);
}

static void test_cancel_queued(void **state)
{
    (void)state;
    struct gw_gate *g = make_gate(1, 8);
    struct fake_owner fo;
    fake_owner_init(&fo, g);
    struct gw_gate_waiter h = {0}, w[3];
    memset(w, 0, sizeof(w));

    assert_false(gw_gate_cancel(g, &h)); /* idle: nothing to do */
    assert_int_equal(gw_gate_acquire(g, &h, &fo.owner), GW_GATE_ACQUIRED);
    for (int i = 0; i < 3; i++)
        assert_int_equal(gw_gate_acquire(g, &w[i], &fo.owner), GW_GATE_QUEUED);

    /* Cancel from the middle: no slot, order of the rest kept. */
    assert_false(gw_gate_cancel(g, &w[1]));
    assert_int_equal(gw_gate_queue_length(g), 2);
    assert_false(gw_gate_cancel(g, &w[1])); /* twice is harmless */
    assert_int_equal(gw_gate_in_flight(g), 1);

    gw_gate_release(g);
    assert_ptr_equal(gw_gate_pop_granted(g, &fo.owner), &w[0]);
    gw_gate_release(g);
    assert_ptr_equal(gw_gate_pop_granted(g, &fo.owner), &w[2]);
    assert_int_equal(gw_gate_queue_length(g), 0);

    /* Cancel the last queued one (head and tail at once), then the slot
     * is posted rather than handed to it. */
    assert_int_equal(gw_gate_acquire(g, &w[1], &fo.owner), GW_GATE_QUEUED);
    assert_false(gw_gate_cancel(g, &w[1]));
    int wakes = fo.wakes;
    gw_gate_release(g);
    assert_int_equal(fo.wakes, wakes);
    assert_null(gw_gate_pop_granted(g, &fo.owner));
    assert_int_equal(gw_gate_available(g), 1);
    assert_int_equal(gw_gate_in_flight(g), 0);
    gw_gate_destroy(g);
}

static void test_cancel_granted(void **state)
{
    (void)state;
    struct gw_gate *g = make_gate(1, 8);
    struct fake_owner fo;
    fake_owner_init(&fo, g);
    struct gw_gate_waiter h = {0}, w1 = {0}, w2 = {0};

    assert_int_equal(gw_gate_acquire(g, &h, &fo.owner), GW_GATE_ACQUIRED);
    assert_int_equal(gw_gate_acquire(g, &w1, &fo.owner), GW_GATE_QUEUED);
    assert_int_equal(gw_gate_acquire(g, &w2, &fo.owner), GW_GATE_QUEUED);
    gw_gate_release(g); /* granted to w1, its worker has not popped it yet */
    assert_int_equal(fo.wakes, 1);

    /* Cancel races in (queue timeout): the caller now holds w1's slot. */
    assert_true(gw_gate_cancel(g, &w1));
    assert_null(gw_gate_pop_granted(g, &fo.owner)); /* off the granted list */
    assert_false(gw_gate_cancel(g, &w1));           /* idle now */
    assert_int_equal(gw_gate_in_flight(g), 1);
    assert_int_equal(gw_gate_available(g), 0);

    /* Giving that slot back hands it on to w2: nothing leaked. */
    gw_gate_release(g);
    assert_int_equal(fo.wakes, 2);
    assert_ptr_equal(gw_gate_pop_granted(g, &fo.owner), &w2);
    gw_gate_release(g);
    assert_int_equal(gw_gate_in_flight(g), 0);
    assert_int_equal(gw_gate_available(g), 1);
    gw_gate_destroy(g);
}

/* A wake that re-enters the gate: deadlocks if release called it with the
 * gate mutex held (the alarm below turns that into a failure). */
static void wake_pops_inside(struct gw_gate_owner *o)
{
    struct fake_owner *f = o->ctx;
    f->wakes++;
    f->popped_in_wake = gw_gate_pop_granted(f->gate, o);
}

static void test_wake_called_without_mutex(void **state)
{
    (void)state;
    struct gw_gate *g = make_gate(1, 4);
    struct fake_owner fo;
    fake_owner_init(&fo, g);
    fo.owner.wake = wake_pops_inside;
    struct gw_gate_waiter h = {0}, w = {0};

    alarm(10);
    assert_int_equal(gw_gate_acquire(g, &h, &fo.owner), GW_GATE_ACQUIRED);
    assert_int_equal(gw_gate_acquire(g, &w, &fo.owner), GW_GATE_QUEUED);
    gw_gate_release(g);
    alarm(0);
    assert_int_equal(fo.wakes, 1);
    assert_ptr_equal(fo.popped_in_wake, &w);
    gw_gate_release(g);
    gw_gate_destroy(g);
}

/* ---- multi-threaded stress ------------------------------------------ */

#define STRESS_THREADS 4
#define STRESS_CYCLES  2000
#define STRESS_CAP     3
#define STRESS_LIMIT_S 30 /* whole test budget; a stuck waiter fails, not hangs */

struct stress_shared {
    struct gw_gate *gate;
    atomic_int concurrent;     /* slots in use as observed by the threads */
    atomic_int max_concurrent; /* highest value seen */
    atomic_int violations;     /* times concurrent exceeded the cap */
    atomic_int failures;       /* FULL, or a grant that never came */
    atomic_long queued;        /* acquisitions that had to wait */
    atomic_long cancelled_queued, cancelled_granted;
    struct timespec deadline; /* CLOCK_MONOTONIC */
    pthread_barrier_t start;  /* all threads begin together */
};

struct stress_thread {
    struct stress_shared *sh;
    struct gw_gate_owner owner;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* signalled by wake */
    pthread_t tid;
    unsigned seed;
};

static void stress_wake(struct gw_gate_owner *o)
{
    struct stress_thread *t = o->ctx;
    pthread_mutex_lock(&t->mu);
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static void use_slot(struct stress_shared *sh, unsigned *seed)
{
    int now = atomic_fetch_add(&sh->concurrent, 1) + 1;
    if (now > STRESS_CAP)
        atomic_fetch_add(&sh->violations, 1);
    int seen = atomic_load(&sh->max_concurrent);
    while (now > seen && !atomic_compare_exchange_weak(&sh->max_concurrent, &seen, now))
        ;
    /* Hold the slot a little so the others pile up behind it. */
    for (int i = 1 + rand_r(seed) % 8; i > 0; i--)
        sched_yield();
    atomic_fetch_sub(&sh->concurrent, 1);
    gw_gate_release(sh->gate);
}

/* Waits (bounded) until the gate grants w to this thread's owner. */
static bool wait_granted(struct stress_thread *t, struct gw_gate_waiter *w)
{
    bool ok = true;
    pthread_mutex_lock(&t->mu);
    for (;;) {
        struct gw_gate_waiter *got = gw_gate_pop_granted(t->sh->gate, &t->owner);
        if (got) {
            ok = got == w; /* one waiter per thread: it must be ours */
            break;
        }
        if (pthread_cond_timedwait(&t->cv, &t->mu, &t->sh->deadline) == ETIMEDOUT) {
            /* Last look, then give up: cancel returns the slot if it came. */
            if (gw_gate_cancel(t->sh->gate, w))
                gw_gate_release(t->sh->gate);
            ok = false;
            break;
        }
    }
    pthread_mutex_unlock(&t->mu);
    return ok;
}

static void *stress_main(void *arg)
{
    struct stress_thread *t = arg;
    struct stress_shared *sh = t->sh;
    pthread_barrier_wait(&sh->start);
    for (int i = 0; i < STRESS_CYCLES && atomic_load(&sh->failures) == 0; i++) {
        struct gw_gate_waiter w = {0};
        switch (gw_gate_acquire(sh->gate, &w, &t->owner)) {
        case GW_GATE_ACQUIRED:
            use_slot(sh, &t->seed);
            break;
        case GW_GATE_QUEUED:
            atomic_fetch_add(&sh->queued, 1);
            if (rand_r(&t->seed) % 4 == 0) {
                /* Give up at once, racing with releases on other threads:
                 * either no slot (queued) or we hold the granted one. */
                if (gw_gate_cancel(sh->gate, &w)) {
                    atomic_fetch_add(&sh->cancelled_granted, 1);
                    use_slot(sh, &t->seed);
                } else {
                    atomic_fetch_add(&sh->cancelled_queued, 1);
                }
            } else if (wait_granted(t, &w)) {
                use_slot(sh, &t->seed);
            } else {
                atomic_fetch_add(&sh->failures, 1);
            }
            break;
        case GW_GATE_FULL:
            atomic_fetch_add(&sh->failures, 1);
            break;
        }
    }
    return NULL;
}

static void test_stress_threads(void **state)
{
    (void)state;
    struct stress_shared sh;
    memset(&sh, 0, sizeof(sh));
    sh.gate = make_gate(STRESS_CAP, 16);
    /* pthread_cond_timedwait uses CLOCK_REALTIME unless told otherwise. */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    clock_gettime(CLOCK_MONOTONIC, &sh.deadline);
    sh.deadline.tv_sec += STRESS_LIMIT_S;
    assert_int_equal(pthread_barrier_init(&sh.start, NULL, STRESS_THREADS), 0);

    struct stress_thread th[STRESS_THREADS];
    memset(th, 0, sizeof(th));
    for (int i = 0; i < STRESS_THREADS; i++) {
        th[i].sh = &sh;
        th[i].owner.wake = stress_wake;
        th[i].owner.ctx = &th[i];
        th[i].seed = 12345u + (unsigned)i;
        pthread_mutex_init(&th[i].mu, NULL);
        pthread_cond_init(&th[i].cv, &ca);
    }
    for (int i = 0; i < STRESS_THREADS; i++)
        assert_int_equal(pthread_create(&th[i].tid, NULL, stress_main, &th[i]), 0);
    for (int i = 0; i < STRESS_THREADS; i++)
        assert_int_equal(pthread_join(th[i].tid, NULL), 0);

    printf("# stress: max concurrency %d/%d, queued %ld, cancelled queued %ld, "
           "cancelled granted %ld\n",
           atomic_load(&sh.max_concurrent), STRESS_CAP, atomic_load(&sh.queued),
           atomic_load(&sh.cancelled_queued), atomic_load(&sh.cancelled_granted));
    assert_int_equal(atomic_load(&sh.failures), 0);
    assert_int_equal(atomic_load(&sh.violations), 0);
    assert_in_range(atomic_load(&sh.max_concurrent), 1, STRESS_CAP);
    /* Every slot came back: nothing leaked, nothing invented. */
    assert_int_equal(gw_gate_available(sh.gate), STRESS_CAP);
    assert_int_equal(gw_gate_in_flight(sh.gate), 0);
    assert_int_equal(gw_gate_queue_length(sh.gate), 0);
    for (int i = 0; i < STRESS_THREADS; i++) {
        assert_null(gw_gate_pop_granted(sh.gate, &th[i].owner));
        pthread_cond_destroy(&th[i].cv);
        pthread_mutex_destroy(&th[i].mu);
    }
    pthread_condattr_destroy(&ca);
    pthread_barrier_destroy(&sh.start);
    gw_gate_destroy(sh.gate);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_rejects_zero_cap),
        cmocka_unit_test(test_fast_path_and_gauges),
        cmocka_unit_test(test_fifo_order),
        cmocka_unit_test(test_granted_list_keeps_order),
        cmocka_unit_test(test_full_at_max_queue),
        cmocka_unit_test(test_no_queue_jumping),
        cmocka_unit_test(test_cancel_queued),
        cmocka_unit_test(test_cancel_granted),
        cmocka_unit_test(test_wake_called_without_mutex),
        cmocka_unit_test(test_stress_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
