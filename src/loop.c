/*
 * epoll event loop with a min-heap of timers and an eventfd waker
 * (see gw/loop.h). Level-triggered: callers state their interest after each
 * step, and gw_loop_watch skips the syscall when nothing changed.
 */
#include "gw/loop.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define MAX_EVENTS 256

static void wake_cb(struct gw_loop *loop, struct gw_io *io, uint32_t events)
{
    uint64_t v;
    /* Drain the counter; a failed read only means someone else drained it. */
    if (read(io->fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        return;
    if (loop->on_wake)
        loop->on_wake(loop, loop->on_wake_ctx);
}

int gw_loop_init(struct gw_loop *loop)
{
    *loop = (struct gw_loop){.epfd = -1, .wake_fd = -1};
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0)
        return -errno;
    loop->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (loop->wake_fd < 0) {
        int rc = -errno;
        close(loop->epfd);
        return rc;
    }
    gw_io_init(&loop->wake_io, loop->wake_fd, wake_cb);
    int rc = gw_loop_watch(loop, &loop->wake_io, EPOLLIN);
    if (rc) {
        close(loop->wake_fd);
        close(loop->epfd);
        return rc;
    }
    loop->now_ms = gw_now_ms();
    return 0;
}

void gw_loop_deinit(struct gw_loop *loop)
{
    if (loop->wake_fd >= 0)
        close(loop->wake_fd);
    if (loop->epfd >= 0)
        close(loop->epfd);
    free(loop->heap);
    loop->heap = NULL;
    loop->heap_len = loop->heap_cap = 0;
    loop->epfd = loop->wake_fd = -1;
}

void gw_io_init(struct gw_io *io, int fd, gw_io_fn cb)
{
    io->fd = fd;
    io->events = 0;
    io->registered = false;
    io->cb = cb;
}

int gw_loop_watch(struct gw_loop *loop, struct gw_io *io, uint32_t events)
{
    if (io->registered && io->events == events)
        return 0;
    /* RDHUP only with EPOLLIN: level-triggered, it would fire forever while
     * the owner is not reading. */
    struct epoll_event ev = {.events = events | ((events & EPOLLIN) ? EPOLLRDHUP : 0u),
                             .data.ptr = io};
    int op = io->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(loop->epfd, op, io->fd, &ev) < 0)
        return -errno;
    io->registered = true;
    io->events = events;
    return 0;
}

void gw_loop_unwatch(struct gw_loop *loop, struct gw_io *io)
{
    if (!io->registered)
        return;
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, io->fd, NULL);
    io->registered = false;
    io->events = 0;
}

/* ---- timer heap ---- */

static void heap_swap(struct gw_loop *loop, size_t a, size_t b)
{
    struct gw_timer *t = loop->heap[a];
    loop->heap[a] = loop->heap[b];
    loop->heap[b] = t;
    loop->heap[a]->heap_index = a;
    loop->heap[b]->heap_index = b;
}

static void heap_up(struct gw_loop *loop, size_t i)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (loop->heap[parent]->deadline_ms <= loop->heap[i]->deadline_ms)
            break;
        heap_swap(loop, parent, i);
        i = parent;
    }
}

static void heap_down(struct gw_loop *loop, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < loop->heap_len && loop->heap[l]->deadline_ms < loop->heap[m]->deadline_ms)
            m = l;
        if (r < loop->heap_len && loop->heap[r]->deadline_ms < loop->heap[m]->deadline_ms)
            m = r;
        if (m == i)
            return;
        heap_swap(loop, i, m);
        i = m;
    }
}

void gw_timer_init(struct gw_timer *t, gw_timer_fn cb)
{
    t->deadline_ms = 0;
    t->heap_index = SIZE_MAX;
    t->cb = cb;
}

void gw_timer_cancel(struct gw_loop *loop, struct gw_timer *t)
{
    size_t i = t->heap_index;
    if (i == SIZE_MAX)
        return;
    size_t last = loop->heap_len - 1;
    if (i != last) {
        heap_swap(loop, i, last);
        loop->heap_len--;
        heap_down(loop, i);
        heap_up(loop, i);
    } else {
        loop->heap_len--;
    }
    t->heap_index = SIZE_MAX;
}

int gw_timer_arm(struct gw_loop *loop, struct gw_timer *t, uint64_t deadline_ms)
{
    if (t->heap_index != SIZE_MAX) {
        uint64_t old = t->deadline_ms;
        t->deadline_ms = deadline_ms;
        if (deadline_ms < old)
            heap_up(loop, t->heap_index);
        else
            heap_down(loop, t->heap_index);
        return 0;
    }
    if (loop->heap_len == loop->heap_cap) {
        size_t cap = loop->heap_cap ? loop->heap_cap * 2 : 64;
        struct gw_timer **h = realloc(loop->heap, cap * sizeof(*h));
        if (!h)
            return -ENOMEM;
        loop->heap = h;
        loop->heap_cap = cap;
    }
    t->deadline_ms = deadline_ms;
    t->heap_index = loop->heap_len;
    loop->heap[loop->heap_len++] = t;
    heap_up(loop, t->heap_index);
    return 0;
}

int gw_loop_run_once(struct gw_loop *loop, int max_wait_ms)
{
    if (loop->before_sleep)
        loop->before_sleep(loop, loop->before_sleep_ctx);
    int timeout = max_wait_ms;
    if (loop->poll_once) {
        loop->poll_once = false;
        timeout = 0;
    }
    if (timeout != 0 && loop->heap_len > 0) {
        uint64_t now = gw_now_ms();
        uint64_t d = loop->heap[0]->deadline_ms;
        int until = d <= now ? 0 : (int)GW_MIN(d - now, (uint64_t)INT32_MAX);
        if (timeout < 0 || until < timeout)
            timeout = until;
    }
    struct epoll_event events[MAX_EVENTS];
    int n = epoll_wait(loop->epfd, events, MAX_EVENTS, timeout);
    if (n < 0 && errno != EINTR)
        return -errno;
    loop->now_ms = gw_now_ms();
    for (int i = 0; i < n; i++) {
        struct gw_io *io = events[i].data.ptr;
        io->cb(loop, io, events[i].events);
    }
    loop->now_ms = gw_now_ms();
    while (loop->heap_len > 0 && loop->heap[0]->deadline_ms <= loop->now_ms) {
        struct gw_timer *t = loop->heap[0];
        gw_timer_cancel(loop, t);
        t->cb(loop, t);
    }
    return 0;
}

void gw_loop_wake(struct gw_loop *loop)
{
    uint64_t one = 1;
    ssize_t rc = write(loop->wake_fd, &one, sizeof(one));
    (void)rc; /* EAGAIN: the counter is already non-zero, a wake is pending */
}
