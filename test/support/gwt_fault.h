/*
 * Fault-injection helpers for the gateway's integration tests: a scripted
 * fake upstream (a thread with a listening socket on 127.0.0.1 that answers
 * each request it receives with the next scripted reply, garbage included),
 * a gateway started under a wrapper command (e.g. prlimit), and /proc
 * probes of a child's CPU time and open descriptors.
 */
#ifndef GWT_FAULT_H
#define GWT_FAULT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "gwtest.h"

/* What the fake upstream does with a connection after writing a reply. */
enum gwt_fault_after {
    GWT_FAULT_KEEP = 0, /* keep it open and read the next request */
    GWT_FAULT_CLOSE,    /* shut it down and close it (FIN) */
    GWT_FAULT_RESET,    /* close it with SO_LINGER 0 (RST) */
    GWT_FAULT_HOLD,     /* never answer again; read and drop input until
                           the peer closes or the fake stops */
};

/* One scripted answer: consumed by the next complete request the fake
 * receives (in arrival order, whatever the connection). */
struct gwt_fault_step {
    const char *reply;          /* bytes written at once; NULL = write nothing */
    size_t len;                 /* bytes of reply; 0 = strlen(reply) */
    enum gwt_fault_after after; /* then what happens to the connection */
    bool at_head;               /* answer as soon as the request head is in,
                                   without waiting for its body; the rest of
                                   the request is then dropped, so use it with
                                   HOLD, CLOSE or RESET */
};

struct gwt_fault; /* opaque; one listening socket and its thread */

/* Starts a fake upstream on 127.0.0.1 (kernel-chosen port, see
 * gwt_fault_port). It reads requests (head up to CRLFCRLF, then a
 * Content-Length or chunked body, no trailers) and answers each with the
 * next step of the script set by gwt_fault_script; when the script is used
 * up it answers with a 200 keep-alive JSON reply ({"fake":true}). *out is
 * owned by the caller: release with gwt_fault_stop. Returns 0 or -errno.
 * Thread-safe with respect to the fake's own thread; call from one test
 * thread. */
GW_MUSTCHECK int gwt_fault_start(struct gwt_fault **out);

/* Replaces the script with a copy of steps[0..n) (reply bytes are copied)
 * and zeroes the request and connection counters. Connections already open
 * stay open. Returns 0 or -ENOMEM. */
GW_MUSTCHECK int gwt_fault_script(struct gwt_fault *f, const struct gwt_fault_step *steps,
                                  size_t n);

/* The fake's TCP port on 127.0.0.1. */
int gwt_fault_port(const struct gwt_fault *f);

/* Complete requests received since the last gwt_fault_script. */
long gwt_fault_requests(struct gwt_fault *f);

/* Connections accepted since the last gwt_fault_script. */
long gwt_fault_connections(struct gwt_fault *f);

/* Connections the peer closed (EOF or reset seen by the fake) since the last
 * gwt_fault_script; a connection the fake closed itself is not counted. */
long gwt_fault_peer_closes(struct gwt_fault *f);

/* Polls until gwt_fault_requests(f) >= want, for at most timeout_ms.
 * Returns 0, or -ETIMEDOUT. */
GW_MUSTCHECK int gwt_fault_wait_requests(struct gwt_fault *f, long want, int timeout_ms);

/* Copies the raw bytes of the last complete request (head and body,
 * truncated to cap-1) into buf, NUL-terminated. Returns the bytes copied. */
size_t gwt_fault_last_request(struct gwt_fault *f, char *buf, size_t cap);

/* Stops the thread, closes every socket and frees f. Safe on NULL. */
void gwt_fault_stop(struct gwt_fault *f);

/* ---- gateway under a wrapper ------------------------------------------ */

/* As gwt_gateway_start (hermetic environment, GATEWAY_HOST=127.0.0.1,
 * GATEWAY_PORT=0, waits for "gateway listening on" and parses the port),
 * but runs wrapper[0..] followed by the gateway binary, e.g.
 * {"prlimit", "--nofile=64:64", NULL}. The wrapper must exec the gateway
 * so that p->pid is the gateway's pid. Returns 0 or -errno. */
GW_MUSTCHECK int gwt_fault_gateway_wrapped(struct gwt_proc *p, int *port,
                                           const char *const wrapper[], const char *const env[]);

/* True when name resolves to an executable file on PATH (or is one). */
bool gwt_fault_have_command(const char *name);

/* ---- client-side probes ---------------------------------------------- */

/* Reads fd until EOF (or ECONNRESET) for at most timeout_ms, discarding the
 * data. Returns the bytes received before EOF, or -1 when the connection
 * was still open at the deadline (or another error occurred). */
long gwt_fault_bytes_until_eof(int fd, int timeout_ms);

/* ---- /proc probes ------------------------------------------------------ */

/* User + system CPU time of process pid in milliseconds (from
 * /proc/<pid>/stat, all threads), or -errno. */
long long gwt_fault_cpu_ms(pid_t pid);

/* Number of open descriptors of process pid (entries of /proc/<pid>/fd),
 * or -errno. */
int gwt_fault_fd_count(pid_t pid);

/* Polls until gwt_fault_fd_count(pid) <= want, for at most timeout_ms.
 * Returns the last count seen (<= want on success). */
int gwt_fault_wait_fds(pid_t pid, int want, int timeout_ms);

#endif
