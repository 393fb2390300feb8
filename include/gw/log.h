/*
 * Diagnostics on stderr ("<ISO time> <level> <message>") filtered by
 * LOG_LEVEL, and the JSON access log on stdout (SPEC.md §7), one line per
 * request written with a single write(2) so lines from workers never mix.
 */
#ifndef GW_LOG_H
#define GW_LOG_H

#include "gw/common.h"
#include "gw/config.h"

/* Sets the lowest level written. Call before threads start. */
void gw_log_set_level(enum gw_log_level level);

/* True when a message at level would be written. Thread-safe. */
bool gw_log_enabled(enum gw_log_level level);

/* Writes one diagnostic line to stderr. Thread-safe (one write per line). */
void gw_log(enum gw_log_level level, const char *fmt, ...) GW_PRINTF(2, 3);

/* Debug and info lines are checked before the call: they sit on per-request
 * paths, where a filtered varargs call would still cost its set-up. */
#define gw_debug(...)                                                                              \
    do {                                                                                           \
        if (gw_log_enabled(GW_LOG_DEBUG))                                                          \
            gw_log(GW_LOG_DEBUG, __VA_ARGS__);                                                     \
    } while (0)
#define gw_info(...)                                                                               \
    do {                                                                                           \
        if (gw_log_enabled(GW_LOG_INFO))                                                           \
            gw_log(GW_LOG_INFO, __VA_ARGS__);                                                      \
    } while (0)
#define gw_warn(...)  gw_log(GW_LOG_WARN, __VA_ARGS__)
#define gw_error(...) gw_log(GW_LOG_ERROR, __VA_ARGS__)

/* One access-log record. Strings are borrowed for the duration of the call. */
struct gw_access_entry {
    const char *client;     /* client address (rate-limit identity source) */
    struct gw_slice method; /* request method */
    struct gw_slice path;   /* raw request-target */
    int status;             /* status sent to the client */
    uint64_t bytes_sent;    /* bytes written to the client for this response */
    double duration_ms;     /* request start to response end */
    double upstream_ms;     /* upstream connect+response time, < 0 when not proxied */
    bool limited;           /* the rate limiter refused it (or would, in dry run) */
    const char *policies;   /* comma-separated names of the refusing and shadow-refusing
                               policies ([A-Za-z0-9_.-] each), NULL or "" for none */
    bool admin;             /* served on the admin listener: "admin":true (SPEC.md §11) */
    bool tunnel;            /* an upgrade tunnel's line, written when it closed: */
    uint64_t tunnel_bytes_to_backend; /*   bytes relayed client -> backend after the 101 */
    uint64_t tunnel_bytes_to_client;  /*   bytes relayed backend -> client after the 101 */
    double tunnel_ms;                 /*   from the 101 to the close */
};

/* Appends one JSON line (RFC 8259) for e to the calling thread's access-log
 * buffer: ts (UTC, ms), client, method, path (a request-target that is not
 * UTF-8 is logged as "<non-utf8>"), status, bytes_sent, duration_ms and
 * upstream_ms (3 decimals; null when not proxied), limited, and policies
 * (an array of names) when there are any, and "admin":true for a
 * request of the admin listener; for a tunnel (SPEC.md §13) also
 * tunnel_bytes_to_backend, tunnel_bytes_to_client and tunnel_ms (its
 * bytes_sent includes the relayed bytes). The buffer is
 * handed to the writer thread (see gw_log_access_flush) when it holds 48
 * KiB, or when the thread calls gw_log_access_flush: a thread that logs must
 * call it before it idles (a worker does before each epoll_wait) and before
 * it exits. Lines are never split or interleaved between threads. No
 * allocation, no syscall per line (one copy per batch).
 * Thread-safe (per-thread buffers). Errors are ignored (logging must never
 * fail a request). */
void gw_log_access(const struct gw_access_entry *e);

/* Hands the calling thread's buffered access-log lines to the log's writer
 * thread, which writes them to stdout in order, each batch whole. Never
 * blocks on stdout: when 8 MiB are already queued (stdout stalled), the
 * batch is dropped, counted (gw_log_access_dropped) and warned about at most
 * every 10 s. Cheap when nothing is buffered. Thread-safe. */
void gw_log_access_flush(void);

/* Flushes the calling thread's lines, then waits up to timeout_ms (ms) until
 * the writer has written everything queued. Returns true when it has; false
 * when stdout did not take it in time (the lines stay queued). For shutdown
 * and tests. Thread-safe. */
bool gw_log_access_drain(int timeout_ms);

/* Access-log lines dropped since start because stdout did not keep up.
 * Thread-safe. */
uint64_t gw_log_access_dropped(void);

#endif
