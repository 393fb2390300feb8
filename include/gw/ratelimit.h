/*
 * The rate limiter (SPEC.md §5, §5.1, §10). One process-wide struct
 * gw_ratelimit holds the configuration, the rules in force (a refcounted
 * struct gw_rules, replaced atomically by gw_ratelimit_publish_rules), the
 * in-process store, the over-limit cache and the per-limit decision
 * counters; each worker thread owns a struct gw_ratelimit_worker with its
 * own Redis connection (when REDIS_URL is set: checks are blocking round
 * trips bounded by REDIS_TIMEOUT_MS, reconnects are non-blocking and
 * advanced by gw_ratelimit_worker_tick). For every request the limiter
 * finds the applicable limits (gw_rules_match), derives each limit's client
 * identity from its key, and decides every rate of every applicable limit
 * in one atomic step per batch (check all, commit only if all allow). The
 * store is a small vtable (src/ratelimit_int.h): Redis (src/rl_redis.c) or
 * memory (src/rl_memory.c). The math lives in gw/rl_algo.h.
 */
#ifndef GW_RATELIMIT_H
#define GW_RATELIMIT_H

#include "gw/buf.h"
#include "gw/common.h"
#include "gw/config.h"
#include "gw/http1.h"
#include "gw/response.h"
#include "gw/rules.h"

/* Limits of one request that the limiter applies (the first ones in file
 * order when more match; a warning is logged). */
#define GW_RL_APPLY_MAX 64

enum gw_rl_verdict {
    GW_RL_ALLOW = 0,   /* forward the request (perhaps after delay_us) */
    GW_RL_LIMITED,     /* answer 429 */
    GW_RL_UNAVAILABLE, /* store failed and RATE_LIMIT_FAILURE_MODE=closed: answer 503 */
    GW_RL_BAD_KEY,     /* a limit's key header came in several field lines: answer 400 */
};

/* What a limit did with one request (gateway_ratelimit_decisions_total). */
enum gw_rl_outcome {
    GW_RL_OUT_ALLOWED = 0,
    GW_RL_OUT_LIMITED,
    GW_RL_OUT_SHADOW_LIMITED,
    GW_RL_OUT_DELAYED,
    GW_RL_OUT_COUNT,
};

/* One applicable limit of a decision. */
struct gw_rl_applied {
    uint16_t limit;   /* index into rules->limits */
    uint16_t refused; /* bit r: rate r refused (or would have, in shadow or dry run) */
    uint8_t outcome;  /* enum gw_rl_outcome */
};

struct gw_rl_decision {
    enum gw_rl_verdict verdict;
    bool over_limit;              /* a rate refused; also true in dry run, where verdict is ALLOW */
    bool store_error;             /* the shared store failed during this check */
    bool has_info;                /* info and policy are valid (false: no rate-limit headers) */
    struct gw_rl_info info;       /* the rate the headers describe (SPEC.md §10 "Headers") */
    const char *policy;           /* its policy name (borrowed from rules) */
    int64_t retry_after_s;        /* LIMITED: Retry-After, >= 1 */
    int64_t delay_us;             /* ALLOW: hold the request this long first (token bucket delay) */
    const struct gw_rules *rules; /* the version that decided (borrowed: valid until the
                                     waiter's done returns, or the next check call) */
    uint8_t napplied;             /* limits that applied, file order */
    struct gw_rl_applied applied[GW_RL_APPLY_MAX];
};

/* Writes the rate-limit header lines of d (each ending in CRLF) to out:
 * RateLimit-Policy listing every rate of every applicable enforce limit in
 * file order ("login-1m";q=5;w=60, ...), then RateLimit and
 * X-RateLimit-Limit/-Remaining/-Reset for the rate d selected
 * (draft-ietf-httpapi-ratelimit-headers-11; GitHub's X- fields). Nothing
 * when !d->has_info. Call while d->rules is valid. 0 or -ENOMEM. */
GW_MUSTCHECK int gw_ratelimit_write_headers(const struct gw_rl_decision *d, struct gw_buf *out);

/* Writes the policy names of every refusing rate of the enforce limits
 * (file order), comma-separated ("login-1m,login-1h"), NUL-ended, to out
 * (cap bytes, cut at a name): the problem body's "violated-policies".
 * Returns the length. Call while d->rules is valid. */
size_t gw_ratelimit_violated(const struct gw_rl_decision *d, char *out, size_t cap);

/* Writes the policy names of every refusing and shadow-refusing rate,
 * comma-separated ("login-1m,api-new-tier"), NUL-ended, to out (cap bytes,
 * cut at a name). For the access log. Returns the length. Call while
 * d->rules is valid. */
size_t gw_ratelimit_policy_names(const struct gw_rl_decision *d, char *out, size_t cap);

enum gw_rl_store_state {
    GW_RL_STORE_DISABLED = 0, /* no REDIS_URL: in-process store */
    GW_RL_STORE_CONNECTED,
    GW_RL_STORE_DISCONNECTED,
};

struct gw_ratelimit;
struct gw_ratelimit_worker;

/* Creates the process-wide limiter from cfg (borrowed; must outlive it),
 * enforcing the rules made from the RATE_LIMIT_* variables
 * (gw_rules_from_config) until gw_ratelimit_publish_rules replaces them.
 * REDIS_URL is parsed with gw_config_parse_redis_url (the one parser).
 * Returns 0, -EINVAL for a bad window/limit/prefix or REDIS_URL, -ENOMEM.
 * Thread-safe to use after creation. */
GW_MUSTCHECK int gw_ratelimit_create(struct gw_ratelimit **out, const struct gw_config *cfg);

struct gw_rules_holder;

/* As gw_ratelimit_create, but the rules in force are those of holder
 * (borrowed: it must outlive the limiter and its workers), which the
 * server's reloader and admin API publish into; holder NULL is
 * gw_ratelimit_create. Same returns; thread-safe to use after creation. */
GW_MUSTCHECK int gw_ratelimit_create_shared(struct gw_ratelimit **out, const struct gw_config *cfg,
                                            struct gw_rules_holder *holder);

/* Makes rules the rules in force (takes the caller's reference; published
 * into the limiter's holder). Each worker picks them up before its next batch, so a request is
 * decided entirely by one version; the old version is freed when the last worker lets go of it. The
 * over-limit cache forgets the limits whose name, rate or algorithm changed (its entries are keyed
 * by them). Thread-safe. */
void gw_ratelimit_publish_rules(struct gw_ratelimit *rl, struct gw_rules *rules);

/* A new reference to the rules in force (gw_rules_put it). Thread-safe. */
struct gw_rules *gw_ratelimit_rules(struct gw_ratelimit *rl);

/* Decisions of one limit since start, all workers (SPEC.md §10). */
struct gw_rl_limit_stats {
    char name[GW_RULES_NAME_MAX + 1];
    uint64_t count[GW_RL_OUT_COUNT]; /* indexed by enum gw_rl_outcome */
};

/* Copies the counters of every limit seen since start (limits of earlier
 * rules versions included, first seen first) to out, up to cap entries;
 * returns how many there are. Thread-safe (relaxed reads). */
size_t gw_ratelimit_limit_stats(struct gw_ratelimit *rl, struct gw_rl_limit_stats *out, size_t cap);

/* Destroys it; every worker handle must be destroyed first. */
void gw_ratelimit_destroy(struct gw_ratelimit *rl);

/* Creates one worker's handle. With REDIS_URL it connects to Redis (a
 * blocking start-up connect: the connect, then AUTH/SELECT/SCRIPT LOAD,
 * each bounded by REDIS_TIMEOUT_MS); a failed connect is not an error (the
 * handle starts disconnected and reconnects from gw_ratelimit_worker_tick).
 * Returns 0 or -ENOMEM. The handle is used by one thread only. */
GW_MUSTCHECK int gw_ratelimit_worker_create(struct gw_ratelimit_worker **out,
                                            struct gw_ratelimit *rl);

/* Closes the worker's Redis connection and frees the handle (NULL is a
 * no-op). Call on the owning thread, or after it has stopped. */
void gw_ratelimit_worker_destroy(struct gw_ratelimit_worker *w);

/* The parts of a request the limiter reads, borrowed for the check. */
struct gw_rl_request {
    const struct gw_http_head *head; /* method, request-target, headers */
    const char *client_addr;         /* the client address of SPEC.md §5, canonical text */
};

/* Decides one request (SPEC.md §5, §5.1, §10): with req, the applicable
 * limits are found by gw_rules_match on the normalised path and each
 * limit's client identity is derived from its key ("ip:<addr>",
 * "header:<name>=<value>", "global", joined by '|'); without req (tests),
 * every limit that matches "GET /" applies and key (key_len bytes) is the
 * identity for every limit. Every rate of every applicable enforce limit
 * is decided in one atomic step (check all, commit only if all allow);
 * each shadow limit (every limit under RATE_LIMIT_DRY_RUN) is decided as
 * if alone. One Redis round trip at most (one EVALSHA), none when an
 * enforce rate is in the over-limit cache or Redis is marked down. Never
 * blocks longer than REDIS_TIMEOUT_MS (send and receive each). Fills *out;
 * never fails. Worker thread only.
 *
 * Store keys are "<RATE_LIMIT_KEY_PREFIX>:{<hex of 16 bytes of
 * SHA-256(identity)>}:<limit>:<policy>" plus the algorithm's suffix (see
 * src/ratelimit_int.h). A refused rate is cached in-process until the
 * instant a request would pass again (131,072 slots in 64 locked shards,
 * keyed by identity and rate): such a rate refuses without a store call.
 * store_error is set when the shared store did not answer: count it as
 * redis_errors. The failure mode then decides: open = ALLOW without info,
 * closed = UNAVAILABLE without info, local = the in-process store decides.
 * Dry run: ALLOW, over_limit set, the refusing rate's remaining 0. */
void gw_ratelimit_check(struct gw_ratelimit_worker *w, const char *key, size_t key_len,
                        struct gw_rl_decision *out);

/* One request of a batch: where the decision goes and what it is about. */
struct gw_rl_batch_item {
    const char *key;                 /* identity when req is NULL (tests); else unused */
    size_t key_len;                  /* bytes */
    struct gw_rl_decision *out;      /* filled by the call */
    const struct gw_rl_request *req; /* the request, or NULL */
};

/* Decides n requests at once, with exactly the decisions of n
 * gw_ratelimit_check calls in order, except that an item is never answered
 * from the over-limit cache an earlier item of the same batch fills (it
 * gets the same verdict from the store instead). The store sees one
 * script call (one round trip, bounded by REDIS_TIMEOUT_MS) per pass of up
 * to 256 items, in which the requests' units are decided in batch order.
 * A failure applies the failure mode to the undecided items. Never fails;
 * worker thread only; the items' key and req are only read during the
 * call; out->rules stays valid until the next call on this worker. */
void gw_ratelimit_check_batch(struct gw_ratelimit_worker *w, struct gw_rl_batch_item *items,
                              size_t n);

/* ---- inspect and unblock one client (admin API, SPEC.md §11) ----
 * The client key is what the limit's key derives: an IP (any spelling,
 * canonicalised), a header value, or their combination joined by '|' in
 * the order of the limit's key parts (global parts take none). */

/* One rate of a limit as one client stands in it. */
struct gw_rl_rate_state {
    const char *policy; /* policy name (borrowed: valid until the next call on this worker) */
    int64_t limit;      /* q */
    int64_t window_s;   /* w */
    int64_t remaining;  /* requests that would pass now, nothing consumed */
    int64_t reset_s;    /* t: seconds to the reset (refusing: until a request would pass) */
};

/* Reads the state of every rate of limit `limit` for client key (key_len
 * bytes) without consuming anything (a peek of the same script, one round
 * trip). Writes up to cap rates to out, *n how many. Returns 0; -ENOENT
 * for an unknown (or action: allow) limit; -EINVAL for a key that does not
 * fit the limit's key parts; -ENOTCONN when Redis is down; -EPROTO when it
 * refused; another -errno when the connection failed (then marked down).
 * Worker thread only. */
GW_MUSTCHECK int gw_ratelimit_peek(struct gw_ratelimit_worker *w, const char *limit,
                                   const char *key, size_t key_len, struct gw_rl_rate_state *out,
                                   size_t cap, size_t *n);

/* Forgets client key in limit `limit`: deletes its store keys (*deleted
 * gets how many held state) and drops it from this process's over-limit
 * cache. Other instances sharing the Redis must be told to call
 * gw_ratelimit_forget_cached. Returns as gw_ratelimit_peek. Worker thread
 * only. */
GW_MUSTCHECK int gw_ratelimit_forget(struct gw_ratelimit_worker *w, const char *limit,
                                     const char *key, size_t key_len, int64_t *deleted);

/* Drops client key of limit `limit` from this process's over-limit cache
 * only (every worker sees it at its next check). 0, -ENOENT, -EINVAL or
 * -ENOMEM. Thread-safe. */
GW_MUSTCHECK int gw_ratelimit_forget_cached(struct gw_ratelimit *rl, const char *limit,
                                            const char *key, size_t key_len);

/* Store state for /health: DISABLED without Redis; otherwise sends PING
 * (when connected) and reports the outcome. Worker thread only. */
enum gw_rl_store_state gw_ratelimit_worker_ping(struct gw_ratelimit_worker *w);

/* Background upkeep from the worker loop: notices a connection the server
 * closed while idle (a non-blocking poll, no command), and reconnects a
 * down Redis connection when its backoff has elapsed (100 ms after the failure, then
 * doubling to 2 s while attempts fail). now_ms is gw_now_ms(). Never
 * blocks: the attempt is a non-blocking connect with AUTH/SELECT/SCRIPT
 * LOAD pipelined, advanced by later ticks (every 5 ms while in progress)
 * and abandoned after REDIS_TIMEOUT_MS per phase. Returns the delay in ms
 * until it next wants to run (for the loop timer): 1000 when nothing is
 * pending. Worker thread only. */
uint64_t gw_ratelimit_worker_tick(struct gw_ratelimit_worker *w, uint64_t now_ms);

/* True when this worker has Redis configured and its connection is up (no
 * I/O, unlike gw_ratelimit_worker_ping). Worker thread only. */
bool gw_ratelimit_worker_redis_up(const struct gw_ratelimit_worker *w);

/* ---- the worker's batch of pending checks ----
 * Requests whose head completed during one loop iteration wait here and are
 * decided together before the worker sleeps, so a Redis store sees one
 * pipelined round trip for all of them. Worker thread only. */

/* Most checks sent to the store in one batch. */
#define GW_RL_BATCH_MAX 256

struct gw_rl_batch;

/* A request waiting for its decision; embed it in the owner. The owner sets
 * req (or key and key_len), out and done before gw_ratelimit_batch_enqueue;
 * done may use out->rules until it returns. */
struct gw_rl_waiter {
    struct gw_rl_waiter *prev, *next;      /* private: queue links */
    const char *key;                       /* identity when req is NULL (tests) */
    size_t key_len;                        /* bytes */
    const struct gw_rl_request *req;       /* the request, borrowed until done or cancel */
    struct gw_rl_decision *out;            /* where the decision goes */
    void (*done)(struct gw_rl_waiter *wt); /* called once, out filled */
    int state;                             /* private: idle, queued, deciding */
};

/* Creates worker w's batch. Returns 0 or -ENOMEM. */
GW_MUSTCHECK int gw_ratelimit_batch_create(struct gw_rl_batch **out, struct gw_ratelimit_worker *w);

/* Frees a batch; waiters still queued are forgotten without a call. */
void gw_ratelimit_batch_destroy(struct gw_rl_batch *b);

/* Queues wt (not already queued) for the next run. */
void gw_ratelimit_batch_enqueue(struct gw_rl_batch *b, struct gw_rl_waiter *wt);

/* Takes wt out: it is not decided, or if its decision is being made, its
 * done is not called. No-op for a waiter that is not waiting. Call it
 * before the owner is freed. */
void gw_ratelimit_batch_cancel(struct gw_rl_batch *b, struct gw_rl_waiter *wt);

/* Before the worker sleeps: decides every queued waiter (in batches of
 * GW_RL_BATCH_MAX, one gw_ratelimit_check_batch each) and calls its done;
 * waiters queued by those calls (pipelined requests) are decided in further
 * rounds, 16 at most. With Redis up, a non-empty batch is first deferred
 * once by one non-blocking poll, so requests that became ready meanwhile
 * join the same round trip. Returns true when the caller must poll again
 * without sleeping (deferred, or waiters left). */
bool gw_ratelimit_batch_run(struct gw_rl_batch *b);

#endif
