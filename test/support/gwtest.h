/*
 * Integration-test support: spawn real gateway, backend_app and redis-server
 * processes on kernel-chosen ports, wait for them with bounded timeouts, stop
 * them by PID and report how they ended; a raw-socket HTTP/1.1 client that
 * parses responses with llhttp so tests control every byte they send.
 */
#ifndef GWTEST_H
#define GWTEST_H

#include <stdbool.h>
#include <stddef.h>
#include <pthread.h>
#include <signal.h>
#include <sys/types.h>

#include <jansson.h>

#include "gw/common.h"

/* ---- ports ------------------------------------------------------------ */

/* A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read
 * the port, close). Racy by nature: prefer letting the server pick port 0
 * and reading it from its log. Returns the port, or -errno. */
GW_MUSTCHECK int gwt_free_port(void);

/* Waits until a TCP connect to 127.0.0.1:port succeeds, retrying every few
 * ms for at most timeout_ms. Returns 0, or -ETIMEDOUT. */
GW_MUSTCHECK int gwt_wait_port(int port, int timeout_ms);

/* ---- processes -------------------------------------------------------- */

/* A spawned child: its own process group, stdout and stderr appended to one
 * temporary log file. Zero-initialise before gwt_spawn. */
struct gwt_proc {
    pid_t pid;          /* child pid, 0 when none */
    char log_path[256]; /* stdout+stderr of the child (O_APPEND) */
    char name[64];      /* basename of argv[0], for diagnostics */
    bool exited;        /* reaped already (status is valid) */
    int status;         /* raw wait status once exited */
    off_t log_from;     /* gwt_wait_log scans the log from this offset */
    bool stopped;       /* gwt_stop was called (the test saw how it ended) */
    char out_path[256]; /* stdout alone (gwt_spawn_split), else "" */
    off_t out_from;     /* gwt_wait_out scans stdout from this offset */
};

/* gwt_stop result when the child ignored sig for timeout_ms and had to be
 * killed with SIGKILL. Distinct from every exit code and -signal. */
#define GWT_STOP_KILLED (-1000)

/* Starts argv[0] (PATH is searched when it has no '/') with the current
 * environment plus env ("K=V" entries, NULL-terminated, may be NULL; an entry
 * overrides the same variable of the current environment; "K=" sets it empty
 * and a bare "K" without '=' removes it). The child gets its own process
 * group, stdin from /dev/null, dies with the test (PR_SET_PDEATHSIG) and is
 * also killed at test exit if still running. Returns 0 or -errno. */
GW_MUSTCHECK int gwt_spawn(struct gwt_proc *p, const char *const argv[], const char *const env[]);

/* As gwt_spawn, but stdout goes to its own file (p->out_path) and only
 * stderr to p->log_path, so a test can tell the two streams apart. */
GW_MUSTCHECK int gwt_spawn_split(struct gwt_proc *p, const char *const argv[],
                                 const char *const env[]);

/* Polls the child's log (from p->log_from) for a line containing needle, for at
 * most timeout_ms. On success copies that line (without '\n', truncated to
 * cap-1) into line_out (may be NULL) and returns 0. Returns -ETIMEDOUT, or
 * -ESRCH when the child has exited and the line never came. */
GW_MUSTCHECK int gwt_wait_log(struct gwt_proc *p, const char *needle, int timeout_ms,
                              char *line_out, size_t cap);

/* gwt_wait_log on the child's stdout (out_path of gwt_spawn_split, else the
 * shared log), from p->out_from. */
GW_MUSTCHECK int gwt_wait_out(struct gwt_proc *p, const char *needle, int timeout_ms,
                              char *line_out, size_t cap);

/* Makes later gwt_wait_log/gwt_wait_out calls ignore what the files hold now. */
void gwt_log_mark(struct gwt_proc *p);

/* The child's stdout (split) or shared log, malloc'd (caller frees), or NULL. */
char *gwt_out_read(const struct gwt_proc *p);

/* Reads the whole log into a malloc'd NUL-terminated string (caller frees),
 * or NULL. */
char *gwt_log_read(const struct gwt_proc *p);

/* Writes the last max_bytes of the child's log to stderr (for failing tests). */
void gwt_log_dump(const struct gwt_proc *p, size_t max_bytes);

/* True while the child runs (reaps it, without blocking, if it has exited). */
bool gwt_proc_alive(struct gwt_proc *p);

/* Sends sig to the child and waits up to timeout_ms for it to end. Returns
 * its exit code (>= 0), -signo when a signal ended it, or GWT_STOP_KILLED
 * when it had to be SIGKILLed after the timeout (its group too). If it had
 * already ended, returns how it ended without sending anything. Returns
 * -ECHILD when there is no child. The log file is kept (see gwt_proc_cleanup). */
int gwt_stop(struct gwt_proc *p, int sig, int timeout_ms);

/* Kills the child if still running (SIGKILL, whole group), reaps it and
 * removes its log unless GWT_KEEP_LOGS is set in the environment. Safe to call
 * on a zeroed or already cleaned-up struct. */
void gwt_proc_cleanup(struct gwt_proc *p);

/* ---- services --------------------------------------------------------- */

/* Starts redis-server on a free port bound to 127.0.0.1, no persistence, and
 * waits until it answers PING. Returns 0 with *port set, or -errno. */
GW_MUSTCHECK int gwt_redis_start(struct gwt_proc *p, int *port);

/* Starts GW_BIN_DIR/backend_app with BACKEND_PORT=0 plus env, waits for the
 * stderr line "backend_app listening on <host>:<port>" and parses the port. */
GW_MUSTCHECK int gwt_backend_start(struct gwt_proc *p, int *port, const char *const env[]);

/* Starts GW_BIN_DIR/gateway with GATEWAY_HOST=127.0.0.1 GATEWAY_PORT=0 plus
 * env, waits for "gateway listening on <host>:<port>" and parses the port.
 * extra_args (NULL-terminated, may be NULL) are appended to the command. */
GW_MUSTCHECK int gwt_gateway_start(struct gwt_proc *p, int *port, const char *const env[]);
/* gwt_gateway_start with stdout (the access log) apart, see gwt_spawn_split. */
GW_MUSTCHECK int gwt_gateway_start_split(struct gwt_proc *p, int *port, const char *const env[]);
GW_MUSTCHECK int gwt_gateway_start_args(struct gwt_proc *p, int *port, const char *const env[],
                                        const char *const extra_args[]);
/* gwt_gateway_start running wrapper[0..] (NULL-terminated, e.g.
 * {"prlimit", "--nofile=64:64", NULL}) followed by the gateway binary. The
 * wrapper must exec the gateway so that p->pid is the gateway's pid. */
GW_MUSTCHECK int gwt_gateway_start_wrapped(struct gwt_proc *p, int *port,
                                           const char *const wrapper[], const char *const env[]);

/* Runs a command to completion (bounded by timeout_ms, then SIGKILL) with
 * env as in gwt_spawn, capturing stdout and stderr separately into malloc'd
 * strings (caller frees; out pointers may be NULL). Returns the exit code,
 * -signo, GWT_STOP_KILLED, or -errno when it could not be started. */
int gwt_run(const char *const argv[], const char *const env[], int timeout_ms, char **out,
            char **err);

/* gwt_run of GW_BIN_DIR/gateway with args, in the same hermetic environment
 * as gwt_gateway_start (inherited gateway variables removed) plus env. */
int gwt_gateway_run(const char *const args[], const char *const env[], int timeout_ms, char **out,
                    char **err);

/* ---- raw HTTP client -------------------------------------------------- */

/* Blocking TCP socket connected to 127.0.0.1:port with 10 s receive and send
 * timeouts. Returns the fd, or -errno. */
GW_MUSTCHECK int gwt_connect(int port);

/* Accepts one connection on listening socket lfd (blocking) and gives it a
 * 10 s receive timeout. Returns the fd (caller closes), or -1. */
int gwt_accept_timed(int lfd);

/* Reads one HTTP message head (through CRLFCRLF) from fd byte by byte into
 * buf, NUL-terminated, so nothing after the head is consumed. Returns its
 * length, or -1 on EOF, error (a receive timeout included) or when cap
 * bytes do not hold it. */
long gwt_read_head(int fd, char *buf, size_t cap);

/* Writes all n bytes (retrying short writes). Returns 0 or -errno. */
GW_MUSTCHECK int gwt_send_all(int fd, const void *p, size_t n);
GW_MUSTCHECK int gwt_send_str(int fd, const char *s);

/* One parsed HTTP response. All strings are malloc'd, NUL-terminated and
 * owned by the struct: release with gwt_response_free. */
struct gwt_response {
    int status;           /* e.g. 200 */
    int http_major;       /* 1 */
    int http_minor;       /* 0 or 1 */
    char *reason;         /* reason phrase */
    char **header_names;  /* header_count names, in order received */
    char **header_values; /* matching values (OWS trimmed by llhttp) */
    size_t header_count;
    char *body;        /* de-chunked body, NUL-terminated (never NULL after a read) */
    size_t body_len;   /* bytes in body */
    bool chunked;      /* framed with Transfer-Encoding: chunked */
    int chunk_count;   /* data chunks seen (not counting the last 0-size one) */
    bool conn_closed;  /* the peer closed the connection during/after it */
    bool keep_alive;   /* llhttp: connection may carry another response */
    char *raw_head;    /* the status line and headers as received, incl. CRLFCRLF */
    size_t wire_bytes; /* bytes of the socket this response consumed */
};

/* Reads exactly one response from fd (bytes after it stay in the socket, so
 * pipelined and keep-alive responses are read by successive calls). A 1xx
 * interim response is returned by itself; call again for the final one.
 * request_was_head: the response has no body whatever its headers say.
 * Handles Content-Length, chunked and read-until-close bodies. r is
 * overwritten (free it first if reused). Returns 0; -ECONNRESET when the peer
 * closed (or reset) before any byte; -ETIMEDOUT when the 10 s socket timeout
 * expired; -EPROTO on a parse error (r->raw_head then holds what came); other
 * -errno. On error r is still safe to free. */
GW_MUSTCHECK int gwt_read_response(int fd, struct gwt_response *r, bool request_was_head);

/* First value of header name (case-insensitive), or NULL. */
const char *gwt_header(const struct gwt_response *r, const char *name);

/* How many times header name occurs (case-insensitive). */
int gwt_header_count(const struct gwt_response *r, const char *name);

void gwt_response_free(struct gwt_response *r);

/* connect + send raw_request + read one response + close. A request starting
 * with "HEAD " is read as a HEAD. Returns as gwt_read_response, or the connect
 * or send error. */
GW_MUSTCHECK int gwt_http(int port, const char *raw_request, struct gwt_response *r);

/* gwt_http of "GET <target> HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close". */
GW_MUSTCHECK int gwt_get(int port, const char *target, struct gwt_response *r);

/* True when, within timeout_ms, reading fd returns EOF or ECONNRESET (data
 * that arrives before is discarded). False on timeout or other errors. */
bool gwt_peer_closed(int fd, int timeout_ms);

/* Parses the body as JSON (caller json_decref's), or NULL. */
json_t *gwt_json(const struct gwt_response *r);

/* Integer member of a JSON object (dotted path "latency_ms.p50" allowed),
 * or def when absent or not a number. */
long long gwt_json_int(json_t *obj, const char *path, long long def);

/* ---- redis ------------------------------------------------------------ */

/* TTL of key in seconds on redis at 127.0.0.1:port: -2 no key, -1 no TTL,
 * GWT_REDIS_ERR when redis could not be asked. */
#define GWT_REDIS_ERR (-100)
long long gwt_redis_ttl(int port, const char *key);

/* Keys matching pattern (KEYS command). *keys gets a malloc'd array of
 * malloc'd strings (free with gwt_strv_free). Returns the count, or -errno. */
GW_MUSTCHECK int gwt_redis_keys(int port, const char *pattern, char ***keys);

/* Runs a command without arguments containing spaces (e.g. "FLUSHALL").
 * Returns 0 when redis replied with anything but an error, else -errno. */
GW_MUSTCHECK int gwt_redis_cmd(int port, const char *cmd);

void gwt_strv_free(char **v, int n);

/* GET /users/1 on the gateway at 127.0.0.1:port with "X-Api-Key: key" and
 * Connection: close; the status, or -1 on a transport error. */
int gwt_api_key_get(int port, const char *key);

/* ---- misc ------------------------------------------------------------- */

/* Monotonic milliseconds. */
long long gwt_now_ms(void);

/* Hex SHA-256 of data (out: 65 bytes). */
void gwt_sha256_hex(const void *data, size_t len, char out[65]);

/* ---- helpers for the gateway's integration tests (gwfixture.c) -------- */

/* A TCP socket (SOCK_STREAM | flags, e.g. SOCK_CLOEXEC) listening on
 * 127.0.0.1 at a port the kernel picks, with backlog; *port gets the port.
 * Returns the fd (caller closes); fails the test on any error. */
int gwt_listen_loopback(int flags, int backlog, int *port);

/* What backend_app's /echo saw: {"method","target","http_version",
 * "headers":[[name,value],...],"body_length","body_sha256"}. The strings are
 * borrowed from root; release with gwt_echo_free. */
struct gwt_echo {
    json_t *root;
    const char *method;
    const char *target;
    const char *http_version;
    json_t *headers; /* array of [name, value] */
    long long body_length;
    const char *body_sha256;
};

/* Parses r->body as an /echo reply. Returns 0, or -EPROTO (e is then zeroed). */
GW_MUSTCHECK int gwt_echo_parse(const struct gwt_response *r, struct gwt_echo *e);
void gwt_echo_free(struct gwt_echo *e);
size_t gwt_echo_nheaders(const struct gwt_echo *e);
const char *gwt_echo_name(const struct gwt_echo *e, size_t i);
const char *gwt_echo_value(const struct gwt_echo *e, size_t i);
/* Index of the first header called name (case-insensitive), or -1. */
int gwt_echo_index(const struct gwt_echo *e, const char *name);
/* First value of header name, or NULL. */
const char *gwt_echo_header(const struct gwt_echo *e, const char *name);
/* Number of headers called name. */
int gwt_echo_count(const struct gwt_echo *e, const char *name);

/* backend_app GET /stats: requests and max_concurrency (either may be NULL).
 * Returns 0 or -errno. */
GW_MUSTCHECK int gwt_backend_stats(int port, long long *requests, long long *max_concurrency);
/* backend_app POST /stats/reset. Returns 0 or -errno. */
GW_MUSTCHECK int gwt_backend_reset(int port);

/* GET path on port and return integer JSON member field ("a.b" allowed) of
 * the reply, or GWT_NO_VALUE when the request or the field failed. */
#define GWT_NO_VALUE (-999999999LL)
long long gwt_stat(int port, const char *path, const char *field);

/* Polls gwt_stat(port, path, field) until it equals want, for at most
 * timeout_ms. Returns 0, or -ETIMEDOUT. */
GW_MUSTCHECK int gwt_wait_stat(int port, const char *path, const char *field, long long want,
                               int timeout_ms);

/* A request on its own thread (connect, send, read one response, close). */
struct gwt_async {
    pthread_t thread;
    int port;
    char *request; /* owned copy */
    struct gwt_response resp;
    int rc; /* as gwt_http */
    long long elapsed_ms;
    bool started;
};

/* Starts raw_request to port on a new thread. Returns 0 or -errno. */
GW_MUSTCHECK int gwt_async_start(struct gwt_async *a, int port, const char *raw_request);
/* Joins it; returns a->rc. The caller frees a->resp with gwt_async_free. */
int gwt_async_join(struct gwt_async *a);
void gwt_async_free(struct gwt_async *a);

/* Problem-details checks (RFC 9457, SPEC.md section 6), with cmocka
 * assertions: status, Content-Type application/problem+json, a JSON body with
 * type (about:blank when type is NULL), a non-empty title, status, detail. */
void gwt_assert_problem(const struct gwt_response *r, int status, const char *type);

/* Sleeps, when needed, until the current fixed window of length window_s
 * has at least margin_s seconds left, so a test's requests fall into one
 * window. Waits at most margin_s seconds. */
void gwt_avoid_window_edge(int window_s, int margin_s);

/* Wall clock, Unix seconds. */
long long gwt_wall_s(void);

/* Starts a gateway in front of backend_app on backend_port with the test
 * defaults WORKER_THREADS=2, RATE_LIMIT_REQUESTS=100000, then env (which
 * overrides them), and tracks it for gwt_stop_tracked. Returns 0 or -errno. */
GW_MUSTCHECK int gwt_gateway_for(struct gwt_proc *p, int *port, int backend_port,
                                 const char *const env[]);

/* Adds p to the list gwt_stop_tracked stops (at most 128 at once). */
void gwt_track(struct gwt_proc *p);

/* Takes p off that list (gwt_proc_cleanup does it: a struct on a test's
 * stack must not be read by the teardown after the test returned). */
void gwt_untrack(const struct gwt_proc *p);

/* For per-test teardown: sends SIGTERM to every tracked process still
 * running, waits up to 5 s each, cleans them up and empties the list. A
 * process that did not exit 0 gets its log dumped to stderr. Returns 0 when
 * all exited 0 (or had been stopped and checked by the test), else -1. */
int gwt_stop_tracked(void);

/* How many processes are tracked now (a mark for gwt_stop_tracked_from). */
int gwt_tracked_count(void);

/* As gwt_stop_tracked, for the processes tracked after mark only; the
 * earlier ones stay tracked and running. */
int gwt_stop_tracked_from(int mark);

#endif
