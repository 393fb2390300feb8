/*
 * Helpers for the distributed rate-limiting integration tests
 * (test/integration/test_distributed_limit.c): redis-server on a chosen port
 * (so a test can restart it where it was), Redis inspection (SCAN, PTTL,
 * INFO commandstats), the store key a client should get, a burst of
 * concurrent requests, timed requests and percentiles, and libfaketime.
 */
#ifndef GWT_DIST_H
#define GWT_DIST_H

#include "gwtest.h"

#include <hiredis/hiredis.h>

/* ---- redis-server -------------------------------------------------------- */

/* Starts redis-server bound to 127.0.0.1:port (port > 0: e.g. to restart a
 * killed server on the port it had), without persistence, with extra
 * arguments appended (NULL-terminated, may be NULL; e.g. "--requirepass",
 * "pw" or "--unixsocket", path). Waits at most 10 s until it answers on the
 * port (a NOAUTH error counts as an answer). Returns 0 or -errno
 * (-EADDRINUSE when it exited early, -ETIMEDOUT). */
GW_MUSTCHECK int gwt_dist_redis_start_at(struct gwt_proc *p, int port, const char *const extra[]);

/* A hiredis connection to 127.0.0.1:port with 2 s timeouts, after AUTH
 * password (NULL = none) and SELECT db. Returns NULL on any failure. The
 * caller frees it with redisFree. */
redisContext *gwt_dist_redis(int port, const char *password, int db);

/* Total calls= of the named commands (lower case, e.g. "evalsha") in INFO
 * commandstats of the server on port (no password). Returns the sum (0
 * when none ran yet) or -1 when Redis could not be asked. */
long long gwt_dist_redis_calls(int port, const char *const cmds[]);

/* Every key matching pattern, found with SCAN (never KEYS), on the server
 * on port, database db, with password (may be NULL). *keys gets a
 * malloc'd array of malloc'd strings (free with gwt_strv_free). At most
 * 100,000 keys and 100,000 SCAN calls. Returns the count or -errno. */
GW_MUSTCHECK int gwt_dist_redis_scan(int port, const char *password, int db, const char *pattern,
                                     char ***keys);

/* PTTL of key in ms (-2 no key, -1 no TTL), or GWT_REDIS_ERR. */
long long gwt_dist_redis_pttl(int port, const char *key);

/* Integer value of key (GET), -1 when absent, GWT_REDIS_ERR on error. */
long long gwt_dist_redis_get(int port, const char *key);

/* ---- what the gateway should store ---------------------------------------- */

/* The store key base of a client identity ("ip:<addr>" or
 * "header:<name>=<value>"), without the limit, policy and state suffix:
 * "<prefix>:{<first 16 bytes of SHA-256(identity) in hex>}" (SPEC.md §10
 * key layout, documented in gw/ratelimit.h). out gets at most 128 bytes. */
void gwt_dist_store_key(const char *prefix, const char *client_key, char out[128]);

/* The identity of an X-API-Key value: "header:x-api-key=<value>". */
void gwt_dist_api_client_key(const char *api_key, char out[72]);

/* The fixed-window state key of the "default" limit for client_key in
 * window index of window_s seconds (SPEC.md §10 key layout). */
void gwt_dist_fw_key(const char *prefix, const char *client_key, long long window_s,
                     long long index, char out[192]);

/* How many Redis keys (any window) belong to a client: SCAN for
 * "<store key>:*" on the server on port. Returns the count or -errno. */
int gwt_dist_client_keys(int port, const char *prefix, const char *client_key);

/* ---- requests --------------------------------------------------------------- */

/* "GET <target> HTTP/1.1" with Host, the optional X-Forwarded-For value
 * (xff, may be NULL) and extra header lines (extra, each ending in CRLF,
 * may be NULL), and Connection: close. Returns a malloc'd string. */
char *gwt_dist_request(const char *target, const char *xff, const char *extra);

/* A burst: opens n connections (n <= 1024), ports[i] the gateway of
 * request i, then writes every reqs[i], then reads every response, so the
 * gateways see all n requests at once. statuses[i] gets the status or
 * -errno. resets[i] (may be NULL) gets X-RateLimit-Reset or -1. Returns 0
 * when every request got a response, else the first -errno. */
GW_MUSTCHECK int gwt_dist_burst(const int ports[], char *const reqs[], int n, int statuses[],
                                long long resets[]);

/* gwt_dist_burst of n (<= 1024) copies of gwt_dist_request(target, xff,
 * NULL), request i to ports[i % nports]; statuses and resets (may be NULL)
 * as there. A cmocka assertion fails the test when a request cannot be
 * built or the burst returns an error. */
void gwt_dist_burst_same(const int ports[], int nports, const char *target, const char *xff, int n,
                         int statuses[], long long resets[]);

/* gwt_http timed from before connect to the last response byte, in µs. */
GW_MUSTCHECK int gwt_dist_timed(int port, const char *raw, struct gwt_response *r, long long *us);

/* The pct-th percentile (nearest rank, 1..100) of n values; sorts v. */
long long gwt_dist_percentile(long long *v, int n, int pct);

/* Integer value of header name, or def when absent or not an integer. */
long long gwt_dist_header_ll(const struct gwt_response *r, const char *name, long long def);

/* ---- libfaketime ------------------------------------------------------------- */

/* Path of the multithreaded libfaketime preload library (Debian package
 * libfaketime), or NULL when it is not installed. */
const char *gwt_dist_faketime_lib(void);

/* Unix seconds of the first log line timestamp ("2026-11-29T16:55:29.424Z
 * ...") in the child's log, or -1. Shows which clock the child runs on. */
long long gwt_dist_first_log_epoch(const struct gwt_proc *p);

#endif
