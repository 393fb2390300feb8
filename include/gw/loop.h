/*
 * Thin epoll event loop (Redis ae.c shape): level-triggered registration of
 * descriptors whose epoll data points at a struct gw_io embedded in the
 * owner, one timer facility (binary min-heap of deadlines feeding the
 * epoll_wait timeout), an eventfd waker for other threads, and a
 * before_sleep hook. One loop per thread; only gw_loop_wake is thread-safe.
 */
#ifndef GW_LOOP_H
#define GW_LOOP_H

#include "gw/common.h"

#include <stdint.h>

struct gw_loop;
struct gw_io;
struct gw_timer;

/* Called with the epoll events (EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP,
 * EPOLLRDHUP) that fired for io. */
typedef void (*gw_io_fn)(struct gw_loop *loop, struct gw_io *io, uint32_t events);
typedef void (*gw_timer_fn)(struct gw_loop *loop, struct gw_timer *t);
typedef void (*gw_loop_hook_fn)(struct gw_loop *loop, void *ctx);

/* A registered descriptor; embed it in the owning struct. */
struct gw_io {
    int fd;          /* the descriptor, -1 when not registered */
    uint32_t events; /* interest currently registered with epoll (0 = none) */
    bool registered; /* present in the epoll set */
    gw_io_fn cb;     /* readiness callback */
};

/* A one-shot timer; embed it in the owning struct. */
struct gw_timer {
    uint64_t deadline_ms; /* gw_now_ms() value at which it fires */
    size_t heap_index;    /* position in the heap, SIZE_MAX when not armed */
    gw_timer_fn cb;       /* called once at or after deadline */
};

struct gw_loop {
    int epfd;                /* epoll instance */
    int wake_fd;             /* eventfd for gw_loop_wake */
    struct gw_io wake_io;    /* registration of wake_fd */
    gw_loop_hook_fn on_wake; /* called in the loop thread after a wake */
    void *on_wake_ctx;
    gw_loop_hook_fn before_sleep; /* called before each epoll_wait, may be NULL */
    void *before_sleep_ctx;
    struct gw_timer **heap; /* min-heap of armed timers */
    size_t heap_len, heap_cap;
    uint64_t now_ms; /* cached clock, updated each iteration */
    bool poll_once;  /* the next epoll_wait does not block (then cleared) */
};

/* Creates the epoll set and the eventfd. Returns 0 or -errno. */
GW_MUSTCHECK int gw_loop_init(struct gw_loop *loop);

/* Closes descriptors and frees the heap. Registered ios are not touched. */
void gw_loop_deinit(struct gw_loop *loop);

/* Prepares an io for fd (not yet registered). */
void gw_io_init(struct gw_io *io, int fd, gw_io_fn cb);

/* Sets io's interest to events (EPOLLIN and/or EPOLLOUT; 0 keeps it
 * registered with no interest). Adds, modifies or does nothing as needed:
 * no syscall when the interest is unchanged. Returns 0 or -errno. */
GW_MUSTCHECK int gw_loop_watch(struct gw_loop *loop, struct gw_io *io, uint32_t events);

/* Removes io from the epoll set if registered (before closing its fd). */
void gw_loop_unwatch(struct gw_loop *loop, struct gw_io *io);

/* Prepares a timer (not armed). */
void gw_timer_init(struct gw_timer *t, gw_timer_fn cb);

/* Arms (or re-arms) t to fire at deadline_ms (monotonic ms). 0 or -ENOMEM. */
GW_MUSTCHECK int gw_timer_arm(struct gw_loop *loop, struct gw_timer *t, uint64_t deadline_ms);

/* Disarms t if armed. */
void gw_timer_cancel(struct gw_loop *loop, struct gw_timer *t);

/* True while t waits in a loop's heap. Loop thread only. */
static inline bool gw_timer_armed(const struct gw_timer *t)
{
    return t->heap_index != SIZE_MAX;
}

/* Runs one iteration: before_sleep hook, epoll_wait bounded by the nearest
 * timer and max_wait_ms (-1 = no bound), the io callbacks, then expired
 * timers. Returns 0 or -errno from epoll_wait (EINTR is not an error). */
GW_MUSTCHECK int gw_loop_run_once(struct gw_loop *loop, int max_wait_ms);

/* Makes the loop's thread return from epoll_wait and call on_wake.
 * Thread-safe and async-signal-safe. */
void gw_loop_wake(struct gw_loop *loop);

#endif
