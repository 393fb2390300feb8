/*
 * Fixed-window rate limiter (SPEC.md §5). One process-wide struct
 * gw_ratelimit holds the configuration and the in-process store; each worker
 * thread owns a struct gw_ratelimit_worker with its own hiredis connection
 * (when REDIS_URL is set: checks are blocking round trips bounded by
 * REDIS_TIMEOUT_MS, reconnects are non-blocking and advanced by
 * gw_ratelimit_worker_tick); the over-limit cache is process-wide. The store is
 * a small vtable (src/ratelimit_int.h): Redis (src/rl_redis.c) or memory
 * (src/rl_memory.c). Window math lives in gw/rl_algo.h.
 */
#ifndef GW_RATELIMIT_H
#define GW_RATELIMIT_H

#include "gw/common.h"
#include "gw/config.h"
#include "gw/response.h"

enum gw_rl_verdict {
    GW_RL_ALLOW = 0,   /* forward the request */
    GW_RL_LIMITED,     /* answer 429 */
    GW_RL_UNAVAILABLE, /* store failed and RATE_LIMIT_FAILURE_MODE=closed: answer 503 */
};

struct gw_rl_decision {
    enum gw_rl_verdict verdict;
    bool over_limit;        /* n > limit; also true in dry run, where verdict is ALLOW */
    bool store_error;       /* the shared store failed during this check */
    bool has_info;          /* info is valid (false when no store could answer) */
    struct gw_rl_info info; /* what the rate-limit headers report */
};

enum gw_rl_store_state {
    GW_RL_STORE_DISABLED = 0, /* no REDIS_URL: in-process store */
    GW_RL_STORE_CONNECTED,
    GW_RL_STORE_DISCONNECTED,
};

struct gw_ratelimit;
struct gw_ratelimit_worker;

/* Creates the process-wide limiter from cfg (borrowed; must outlive it).
 * REDIS_URL is parsed with gw_config_parse_redis_url (the one parser).
 * Returns 0, -EINVAL for a bad window/limit/prefix or REDIS_URL, -ENOTSUP
 * for an algorithm not built yet, -ENOMEM. Thread-safe to use after
 * creation. */
GW_MUSTCHECK int gw_ratelimit_create(struct gw_ratelimit **out, const struct gw_config *cfg);

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

/* Counts one request of the client identified by key (key_len bytes, any
 * bytes; the limiter hashes it before it reaches a store key) and decides
 * (SPEC.md §5). One Redis round trip at most (one EVALSHA running TIME,
 * INCRBY and, for the window's first request, PEXPIRE), none when the client is in
 * the over-limit cache or Redis is marked down. Never blocks longer than
 * REDIS_TIMEOUT_MS (send and receive each). Fills *out; never fails.
 * Worker thread only (the shared parts lock themselves).
 *
 * Store keys are "<RATE_LIMIT_KEY_PREFIX>:{<hex of 16 bytes of
 * SHA-256(key)>}"; Redis appends ":<window index>" (see src/rl_redis.c).
 * A client over its limit is cached until its window ends, in one
 * process-wide table of 131,072 slots (64 locked shards; when a probe run
 * is full the entry ending soonest is overwritten): it gets LIMITED with
 * remaining 0 and the same reset epoch, without a store call.
 * store_error is set when the shared store did not answer this check (the
 * call failed, or Redis is marked down and no call was made): count it as
 * redis_errors, and call gw_ratelimit_worker_tick soon after, since a
 * failure starts the reconnect backoff. The failure mode then decides:
 * open = ALLOW without info, closed = UNAVAILABLE without info, local = the
 * in-process store decides (info valid). Dry run: ALLOW, over_limit set,
 * info.remaining 0. */
void gw_ratelimit_check(struct gw_ratelimit_worker *w, const char *key, size_t key_len,
                        struct gw_rl_decision *out);

/* One request of a batch: the client key (borrowed for the call) and where
 * the decision goes. */
struct gw_rl_batch_item {
    const char *key;            /* client key bytes */
    size_t key_len;             /* bytes */
    struct gw_rl_decision *out; /* filled by the call */
};

/* Decides n requests at once, with exactly the decisions of n
 * gw_ratelimit_check calls in order, except that an item is never answered
 * from the over-limit cache an earlier item of the same batch fills (it
 * gets the same verdict from the store instead). The items are grouped by
 * client key: the k requests of one client are counted at once (Redis:
 * INCRBY k inside the atomic script, so exact across instances) and get
 * the request numbers n-k+1 .. n in their batch order; so the first
 * RATE_LIMIT_REQUESTS of the window pass, the later ones are refused and
 * the over-limit cache learns the client. Clients answered by the
 * over-limit cache cost nothing; the others go to Redis as one script call
 * (EVALSHA, all clients) per 256 items: one round trip, bounded by
 * REDIS_TIMEOUT_MS. A failure leaves the items already answered decided
 * and applies the failure mode to the rest. Never fails; worker thread
 * only; items[i].key is only read during the call. */
void gw_ratelimit_check_batch(struct gw_ratelimit_worker *w, struct gw_rl_batch_item *items,
                              size_t n);

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
 * key, key_len, out and done before gw_ratelimit_batch_enqueue. */
struct gw_rl_waiter {
    struct gw_rl_waiter *prev, *next;      /* private: queue links */
    const char *key;                       /* client key, borrowed until done or cancel */
    size_t key_len;                        /* bytes */
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
