/*
 * Helpers of the resilience ("breaker") integration tests: raw exchanges
 * that read until the gateway closes, response counting in a byte stream,
 * descriptor counts and sanitizer findings of a child, a redis-server on a
 * fixed port (so a test can kill -9 it and start it again on the same
 * address), and background keep-alive load on threads.
 */
#ifndef GWT_BREAKER_H
#define GWT_BREAKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <pthread.h>
#include <sys/types.h>

#include "gwtest.h"

/* Connects to 127.0.0.1:port, sends len bytes of req in pieces of at most
 * piece bytes (0 = all at once), shuts the write side when shut_wr, then
 * reads until the peer closes or timeout_ms passes. *out gets a malloc'd
 * NUL-terminated copy of everything received (caller frees; may be NULL),
 * *out_len its length (may be NULL). Returns 0 when the peer closed (EOF or
 * reset) in time, -ETIMEDOUT when the connection was still open at the
 * deadline (*out then holds what came), or -errno when connecting or
 * sending failed (a send failing because the gateway already closed is not
 * an error: the reply is read all the same). Not thread-safe per call. */
GW_MUSTCHECK int gwt_brk_exchange(int port, const void *req, size_t len, size_t piece, bool shut_wr,
                                  int timeout_ms, char **out, size_t *out_len);

/* Occurrences of needle in buf[0..len) (overlaps not counted). */
int gwt_brk_count(const char *buf, size_t len, const char *needle);

/* Status code of the first final (non-1xx) response in buf, or -1. */
int gwt_brk_final_status(const char *buf, size_t len);

/* Descriptor counts of a process: see gwt_fault_fd_count and
 * gwt_fault_wait_fds in gwt_fault.h. */

/* True when the child's log holds a sanitizer report (AddressSanitizer,
 * LeakSanitizer, UndefinedBehaviorSanitizer or "runtime error:"); the
 * matching line is copied to what (may be NULL). */
bool gwt_brk_log_has_sanitizer(const struct gwt_proc *p, char *what, size_t cap);

/* Starts redis-server bound to 127.0.0.1:port (no persistence) and waits
 * up to timeout_ms until it answers PING. Returns 0 or -errno (-EADDRINUSE
 * when it exited, e.g. the port is still taken). */
GW_MUSTCHECK int gwt_brk_redis_start_on(struct gwt_proc *p, int port, int timeout_ms);

/* Background keep-alive load: nthreads threads each send GET target over
 * one connection (reconnecting after an error or a close) until
 * gwt_brk_load_stop, and count what came back. */
#define GWT_BRK_LOAD_MAX_THREADS 16
struct gwt_brk_load {
    int port;
    char request[256];
    int nthreads;
    pthread_t threads[GWT_BRK_LOAD_MAX_THREADS];
    atomic_bool stop;
    atomic_long ok;          /* 2xx */
    atomic_long limited;     /* 429 */
    atomic_long unavailable; /* 503 */
    atomic_long other;       /* any other status */
    atomic_long errors;      /* connect/read failures, truncated responses */
    atomic_long timeouts;    /* reads that hit the 10 s socket timeout */
};

/* Starts the load (l is owned by the caller and must stay valid until
 * gwt_brk_load_stop returns). Returns 0 or -errno. */
GW_MUSTCHECK int gwt_brk_load_start(struct gwt_brk_load *l, int port, const char *target,
                                    int nthreads);

/* Stops and joins the load threads. */
void gwt_brk_load_stop(struct gwt_brk_load *l);

/* Total responses of any status seen so far. */
long gwt_brk_load_responses(struct gwt_brk_load *l);

#endif
