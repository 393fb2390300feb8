/*
 * Private to the rate limiter: the store vtable (STYLE.md "Pluggable
 * parts"), the in-process store (rl_memory.c), the Redis store (rl_redis.c)
 * and the store-key builder shared by both, so that
 * ratelimit.c and the unit tests see one definition.
 */
#ifndef GW_RATELIMIT_INT_H
#define GW_RATELIMIT_INT_H

#include "gw/common.h"
#include "gw/config.h"

/* A counter store. The contract of check():
 *  - counts incr >= 1 requests for key (key_len bytes, opaque) at once in
 *    the fixed window of window_s seconds that contains the store's clock,
 *    atomically (the requests of one client in one batch);
 *  - *now_ms is in/out: on entry the caller's wall clock (Unix ms); on
 *    return the clock the store used to pick the window (Redis TIME for
 *    Redis, the given value for memory), so the caller reports edges that
 *    match the count;
 *  - returns 0 with *count = the post-increment request number n (>= incr):
 *    the requests counted are numbers n - incr + 1 .. n of the window;
 *    -EPROTO when the store answered with an error but stays usable;
 *    any other -errno when the connection is unusable (the caller marks
 *    the store down and reconnects later).
 * limit is passed for algorithms that need it; fixed window ignores it.
 * check_many() is n checks at once (one round trip for a networked store):
 * rcs[i], counts[i] and now_ms[i] (in/out) per key as check() would give
 * them; it returns 0 when the connection survived, else the -errno that
 * made it unusable. ping() returns 0 when the store answers, else -errno
 * (same rule). The connection calls (a store without one answers 0 and
 * never fails): connect() is a blocking (re)connect for start-up;
 * connect_start() begins a non-blocking one (0 ready, -EINPROGRESS: call
 * connect_poll() later, else -errno); probe() checks without blocking
 * that an idle connection is still open; disconnect() drops it;
 * last_error() is the text of the last failure, for logs. destroy() frees
 * the store. Thread-safety is per implementation. */
struct gw_rl_store_ops {
    const char *name;
    int (*check)(void *store, const char *key, size_t key_len, int64_t incr, int64_t limit,
                 int64_t window_s, int64_t *count, int64_t *now_ms);
    int (*check_many)(void *store, const char *const keys[], const size_t key_lens[],
                      const int64_t incrs[], size_t n, int64_t window_s, int64_t counts[],
                      int64_t now_ms[], int rcs[]);
    int (*ping)(void *store);
    int (*connect)(void *store);
    int (*connect_start)(void *store, uint64_t mono_ms);
    int (*connect_poll)(void *store, uint64_t mono_ms);
    int (*probe)(void *store);
    void (*disconnect)(void *store);
    const char *(*last_error)(const void *store);
    void (*destroy)(void *store);
};

/* ---- store keys --------------------------------------------------------- */

/* Hex digits of the client hash in a store key (128 bits of SHA-256). */
#define GW_RL_KEY_HASH_HEX 32

/* Builds the store key of a client: "<prefix>:{<hex>}" where <hex> is the
 * first 16 bytes of SHA-256(client key) in lower-case hex, so no client
 * byte ever reaches Redis. The braces are a Redis Cluster hash tag: the
 * per-window key the script derives from it stays in the same slot.
 * Writes a NUL-terminated string to out (cap bytes) and returns its
 * length, or -ENOSPC when it does not fit. *hash64 (may be NULL) receives
 * the first 8 digest bytes, for in-process tables. Thread-safe. */
GW_MUSTCHECK int gw_rl_store_key(const char *prefix, const char *key, size_t key_len, char *out,
                                 size_t cap, uint64_t *hash64);

/* ---- in-process store (rl_memory.c) -------------------------------------- */

#define GW_RL_MEMORY_SHARDS          64
#define GW_RL_MEMORY_DEFAULT_ENTRIES (1u << 20) /* all shards together: 1,048,576 */
#define GW_RL_MEMORY_ENTRY_BYTES     40         /* one client's entry */

struct gw_rl_memory;

/* Creates the in-process store: GW_RL_MEMORY_SHARDS shards, each a hash
 * table with its own mutex holding at most max(1, max_entries / shards)
 * entries (0 = GW_RL_MEMORY_DEFAULT_ENTRIES). Memory grows with the
 * clients seen in a window, up to gw_rl_memory_max_bytes(max_entries)
 * (44 bytes per entry: 44 MiB for the default); beyond the cap the oldest
 * live entry of a shard is evicted. Returns 0 or -ENOMEM.
 * The store is thread-safe: every worker shares one. */
GW_MUSTCHECK int gw_rl_memory_create(struct gw_rl_memory **out, size_t max_entries);

/* Frees the store and its entries. No other thread may use it. */
void gw_rl_memory_destroy(struct gw_rl_memory *m);

/* Counts incr >= 1 requests of key at once at now_s (Unix seconds, the
 * injected clock) in the window floor(now_s / window_s); *count gets n, the
 * number of the last of them (they are n - incr + 1 .. n; n saturates at
 * UINT32_MAX). An entry of a past window is reset lazily. A full shard
 * reuses its oldest entry (which is an expired one whenever any is
 * expired). A request whose time falls before its entry's window (clocks of
 * racing workers) is counted in the entry's newer window. One window length
 * per store. Returns 0, or -ENOMEM if a shard could not allocate its first
 * entries (-EINVAL for incr < 1). Thread-safe. */
GW_MUSTCHECK int gw_rl_memory_incr_by(struct gw_rl_memory *m, const char *key, size_t key_len,
                                      int64_t incr, int64_t window_s, int64_t now_s,
                                      int64_t *count);

/* gw_rl_memory_incr_by with incr 1. */
GW_MUSTCHECK int gw_rl_memory_incr(struct gw_rl_memory *m, const char *key, size_t key_len,
                                   int64_t window_s, int64_t now_s, int64_t *count);

/* Bytes the store holds now (pools and bucket arrays, not malloc
 * overhead); takes each shard lock in turn. */
size_t gw_rl_memory_bytes(struct gw_rl_memory *m);

/* The most gw_rl_memory_bytes can reach for a store created with
 * max_entries (0 = the default). Pure, thread-safe. */
size_t gw_rl_memory_max_bytes(size_t max_entries);

/* Entries in use, all shards (takes each shard lock in turn). */
size_t gw_rl_memory_entries(struct gw_rl_memory *m);

/* Entries a shard may hold (its memory bound). */
size_t gw_rl_memory_shard_cap(const struct gw_rl_memory *m);

/* Shard index of a key, for tests that need keys sharing a shard. */
unsigned gw_rl_memory_shard_of(const char *key, size_t key_len);

/* Vtable over gw_rl_memory_incr_by (check uses floor(*now_ms / 1000)). */
extern const struct gw_rl_store_ops gw_rl_memory_ops;

/* ---- Redis store (rl_redis.c) -------------------------------------------- */

struct gw_rl_redis;

/* Creates a disconnected per-worker Redis store. target (REDIS_URL as
 * parsed by gw_config_parse_redis_url) is borrowed and must outlive it;
 * timeout_ms is the connect and command timeout (<= 0 means 100). Returns
 * 0 or -ENOMEM. One thread uses a store. */
GW_MUSTCHECK int gw_rl_redis_create(struct gw_rl_redis **out, const struct gw_redis_target *target,
                                    int timeout_ms);

/* Starts a (re)connect without blocking: drops any old connection, starts a
 * non-blocking connect and queues AUTH, SELECT and SCRIPT LOAD, then makes
 * what progress it can without waiting. now_ms is gw_now_ms(). Returns 0
 * when the store is ready already, -EINPROGRESS when
 * gw_rl_redis_connect_poll must be called again, or a failure as
 * gw_rl_redis_connect. The connect and the handshake each must finish
 * within timeout_ms of their start or the attempt fails with -ETIMEDOUT. */
GW_MUSTCHECK int gw_rl_redis_connect_start(struct gw_rl_redis *r, uint64_t now_ms);

/* Advances an attempt begun by gw_rl_redis_connect_start; never blocks.
 * Same returns; -ENOTCONN when no attempt is in progress. */
GW_MUSTCHECK int gw_rl_redis_connect_poll(struct gw_rl_redis *r, uint64_t now_ms);

/* Blocking (re)connect, for start-up: gw_rl_redis_connect_start, then
 * waits in poll(2) until ready or failed; at most about 2 * timeout_ms.
 * Returns 0, or -errno leaving the store disconnected: -EACCES when AUTH
 * is refused, -EPROTO for another error reply, -ETIMEDOUT, -ENOMEM,
 * -ECONNREFUSED and other connect errors, -EIO for other I/O failures
 * (details in gw_rl_redis_last_error). */
GW_MUSTCHECK int gw_rl_redis_connect(struct gw_rl_redis *r);

/* Checks, without blocking, that an idle ready connection is still open:
 * 0 when it is (or looks it), else -errno after disconnecting (EOF after a
 * server restart, a reset, unexpected bytes). -ENOTCONN when not ready. */
GW_MUSTCHECK int gw_rl_redis_probe(struct gw_rl_redis *r);

/* Closes the connection or drops the attempt in progress, if any. */
void gw_rl_redis_disconnect(struct gw_rl_redis *r);

/* True when checks can run (set up and not failed since). */
bool gw_rl_redis_connected(const struct gw_rl_redis *r);

/* Text of the last failure, for logs (never contains the password). */
const char *gw_rl_redis_last_error(const struct gw_rl_redis *r);

/* n checks in one round trip: one EVALSHA of the script for all n keys
 * (keys[i], key_lens[i] bytes, counting incrs[i] >= 1 requests; incrs NULL
 * = 1 each; keys should be distinct: a repeated key is counted twice),
 * rendered into one RESP buffer; after NOSCRIPT (nothing counted) the same
 * call is sent once more with EVAL. For each i, rcs[i] is 0 with counts[i]
 * (the number of the last of the incrs[i] requests) and now_ms[i] (as the
 * vtable's check), or -EPROTO when the server refused the call or that
 * key's increment, or the connection's -errno when there was no reply.
 * Returns 0 when the connection survived (some rcs[i] may still be
 * -EPROTO), else the -errno of the failure, the store then disconnected.
 * The reply read is bounded by timeout_ms. */
GW_MUSTCHECK int gw_rl_redis_check_many(struct gw_rl_redis *r, const char *const keys[],
                                        const size_t key_lens[], const int64_t incrs[], size_t n,
                                        int64_t window_s, int64_t counts[], int64_t now_ms[],
                                        int rcs[]);

/* Vtable: check is one EVALSHA round trip (EVAL once on NOSCRIPT), each
 * bounded by timeout_ms; a store that is not ready answers -ENOTCONN at
 * once. An I/O failure or timeout disconnects the store. */
extern const struct gw_rl_store_ops gw_rl_redis_ops;

/* The Lua source of the check, exposed for tests. */
extern const char gw_rl_redis_script[];

#endif
