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

/* ---- passes: several rates decided at once (SPEC.md §5.1, §10) ----------- */

/* Most ops in one unit (a request's rates of all its applicable limits). */
#define GW_RL_UNIT_OPS_MAX 256

/* One rate's parameters as a store sees them. */
struct gw_rl_spec {
    enum gw_rl_algorithm algorithm; /* FIXED_WINDOW, SLIDING_WINDOW or TOKEN_BUCKET */
    int64_t limit;                  /* L, 1..10^9 (fixed window: 0 refuses all) */
    int64_t window_ms;              /* W, 1 ms .. GW_RULES_WINDOW_MAX_MS */
    int64_t burst;                  /* token bucket: B >= 1; else ignored */
    int64_t delay_ms;               /* token bucket: shaping allowance >= 0; else ignored */
};

/* One rate check of a unit: the state of store key `key` under `spec`. */
struct gw_rl_op {
    uint16_t key;  /* index into gw_rl_pass.keys */
    uint16_t spec; /* index into gw_rl_pass.specs */
    int64_t a, b;  /* out: the state the unit was decided on: fixed window a = count;
                      sliding window a = previous window's count, b = current's;
                      token bucket a = TAT in µs (0 = none) */
};

/* The unit's verdict as the store gives it. */
enum gw_rl_unit_result {
    GW_RL_UNIT_UNDECIDED = 0, /* not decided (the call failed) */
    GW_RL_UNIT_ALLOWED,       /* every op allowed: each committed */
    GW_RL_UNIT_REFUSED,       /* some op refused: nothing committed */
    GW_RL_UNIT_ERROR,         /* the store refused a key of it (WRONGTYPE): nothing committed */
    GW_RL_UNIT_ELSEWHERE,     /* Cluster, keys_in_argv only: a key is not on the node asked;
                                 nothing committed (the Cluster store asks again by slot) */
};

/* Ops decided together: check all, then commit all iff all allow. */
struct gw_rl_unit {
    uint16_t first, n;             /* ops[first .. first + n) */
    enum gw_rl_unit_result result; /* out */
};

/* A pass: units decided one after the other, in order, each seeing the
 * commits of the ones before it (so a batch gives exactly the decisions of
 * one-by-one checks), all on one reading of the store's clock. Key i is
 * the base "<prefix>:{<hex>}:<limit>:<policy>"; the store appends the
 * algorithm's state suffix (":fw:<W ms>:<index>", ":sw:<W ms>:<index>",
 * ":tb"). Store keys get a TTL no longer than their state needs (fixed
 * window: to the window end; sliding: to the end of the next window;
 * token bucket: until the bucket is full again). */
/* What a pass does with its units. */
enum gw_rl_pass_mode {
    GW_RL_PASS_DECIDE = 0, /* check, and commit the units that allow */
    GW_RL_PASS_PEEK,       /* check only: nothing is committed (admin inspect) */
    GW_RL_PASS_DELETE,     /* delete every op's state keys; op a = keys deleted */
    GW_RL_PASS_REFUND,     /* Redis only: take back one commit of every op made at
                              refund_at_us (Cluster: a unit split over slots) */
};

struct gw_rl_pass {
    enum gw_rl_pass_mode mode;
    const char *const *keys;
    const size_t *key_lens;
    size_t nkeys;
    const struct gw_rl_spec *specs;
    size_t nspecs;
    struct gw_rl_op *ops;
    size_t nops;
    struct gw_rl_unit *units;
    size_t nunits;
    int64_t now_us; /* out: the store's clock (Unix µs) the pass was decided at */
    /* Redis only: more keys declared to the server (after keys) but never
     * read by the script: Cluster routes the call by them. */
    const char *const *extra_keys;
    const size_t *extra_lens;
    size_t nextra;
    int64_t refund_at_us; /* GW_RL_PASS_REFUND: when the commits were made */
    bool keys_in_argv;    /* Redis only: key bases passed as arguments, only extra_keys
                             declared (Cluster: one call per node over many slots, none
                             declared; or one per slot, its state keys declared). A unit
                             answers ELSEWHERE only without extra_keys. */
};

/* A rate-limit store. apply() decides a pass (below). ping() returns 0
 * when the store answers, else -errno (same rule). The connection calls (a
 * store without one answers 0 and never fails): connect() is a blocking
 * (re)connect for start-up; connect_start() begins a non-blocking one (0
 * ready, -EINPROGRESS: call connect_poll() later, else -errno); probe()
 * checks without blocking that an idle connection is still open;
 * disconnect() drops it; last_error() is the text of the last failure, for
 * logs. destroy() frees the store. Thread-safety is per implementation. */
struct gw_rl_store_ops {
    const char *name;
    /* apply(): decides a pass (see struct gw_rl_pass) atomically (Redis:
     * one script call, one round trip). Returns 0 (each unit's result
     * set), -EPROTO when the server answered the call with an error but the
     * connection stays usable (units UNDECIDED), any other -errno when the
     * connection is unusable. */
    int (*apply)(void *store, struct gw_rl_pass *pass);
    int (*ping)(void *store);
    int (*connect)(void *store);
    int (*connect_start)(void *store, uint64_t mono_ms);
    int (*connect_poll)(void *store, uint64_t mono_ms);
    int (*probe)(void *store);
    void (*disconnect)(void *store);
    const char *(*last_error)(const void *store);
    void (*destroy)(void *store);
    /* Optional (NULL = TICK_IDLE_MS): ms until a ready store wants probe()
     * again (Cluster: a node reconnecting in the background is polled every
     * few ms). */
    uint64_t (*probe_in_ms)(void *store);
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
#define GW_RL_MEMORY_ENTRY_BYTES     48         /* one state key's entry */

struct gw_rl_memory;

/* Creates the in-process store: GW_RL_MEMORY_SHARDS shards, each a hash
 * table with its own mutex holding at most max(1, max_entries / shards)
 * entries (0 = GW_RL_MEMORY_DEFAULT_ENTRIES). Memory grows with the
 * clients seen in a window, up to gw_rl_memory_max_bytes(max_entries)
 * (52 bytes per entry: 52 MiB for the default); beyond the cap the oldest
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

/* Shard index of a key in store m (its seeds are random), for tests that
 * need keys sharing a shard. */
unsigned gw_rl_memory_shard_of(const struct gw_rl_memory *m, const char *key, size_t key_len);

/* Decides a pass (struct gw_rl_pass) at now_us (Unix µs, the injected
 * clock; pass->now_us is set to it) with the math of gw/rl_algo.h: the
 * shards of a unit's keys are locked together (in index order, so no two
 * callers deadlock), every op checked, then all committed iff all allow.
 * Returns 0, or -ENOMEM when a shard could not allocate (units decided
 * before stay decided, the rest UNDECIDED). Thread-safe. */
GW_MUSTCHECK int gw_rl_memory_apply(struct gw_rl_memory *m, struct gw_rl_pass *pass,
                                    int64_t now_us);

/* Vtable: apply is gw_rl_memory_apply on the process's wall clock. */
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

/* TLS: true when the last connect resumed the previous TLS session (an
 * abbreviated handshake, no certificate chain sent). For tests. */
bool gw_rl_redis_tls_resumed(const struct gw_rl_redis *r);

/* Decides a pass (struct gw_rl_pass) in one round trip: one EVALSHA of
 * gw_rl_redis_script for every unit; after NOSCRIPT (nothing decided) the
 * same call is sent once more with EVAL. Returns 0 with each unit's result
 * (a unit whose key holds another type gets GW_RL_UNIT_ERROR alone) and
 * pass->now_us set from Redis's TIME; -EPROTO when the server refused the
 * call (units UNDECIDED, the connection usable); -ENOTCONN when not ready;
 * else the -errno of the failure, the store then disconnected. The reply
 * read is bounded by timeout_ms. */
GW_MUSTCHECK int gw_rl_redis_apply(struct gw_rl_redis *r, struct gw_rl_pass *pass);

/* Cluster mode: a per-worker store for one node, host:port (host an IP
 * literal or a name, at most 255 bytes; borrowed only during the call),
 * with target's credentials and TLS settings (target borrowed, must
 * outlive the store). Same connect and apply calls as any Redis store.
 * Returns 0, -EINVAL for a bad address, or -ENOMEM. */
GW_MUSTCHECK int gw_rl_redis_create_node(struct gw_rl_redis **out,
                                         const struct gw_redis_target *target, const char *host,
                                         int port, int timeout_ms);
/* Pipelining for Cluster mode: queues one call deciding pass (EVALSHA, or
 * EVAL when eval), preceded by ASKING when asking (its +OK is then the
 * first of the two replies). Nothing is sent yet. Returns 0, -ENOTCONN
 * when not ready, -ENOMEM (then disconnected: the pipeline is broken). */
GW_MUSTCHECK int gw_rl_redis_queue(struct gw_rl_redis *r, const struct gw_rl_pass *pass,
                                   bool asking, bool eval);
/* Sends what is queued, as far as the socket takes it without waiting (the
 * rest goes with the first gw_rl_redis_reply). 0, -ENOTCONN, or -errno
 * after disconnecting. */
GW_MUSTCHECK int gw_rl_redis_flush(struct gw_rl_redis *r);
/* The next reply, in order (a redisReply the caller frees), within
 * timeout_ms. 0, -ENOTCONN, or -errno after disconnecting (-ETIMEDOUT:
 * no reply in time). */
GW_MUSTCHECK int gw_rl_redis_reply(struct gw_rl_redis *r, void **reply);
/* As gw_rl_redis_reply, waiting at most wait_ms (at least 1 ms) instead of
 * the store's timeout: the Cluster store's reads of one round share one
 * deadline, so several hung masters cost one timeout, not one each. */
GW_MUSTCHECK int gw_rl_redis_reply_within(struct gw_rl_redis *r, void **reply, int wait_ms);
/* One command (argv NUL-terminated strings) and its reply, as
 * gw_rl_redis_reply. Only with nothing else in flight. */
GW_MUSTCHECK int gw_rl_redis_command_argv(struct gw_rl_redis *r, int argc, const char **argv,
                                          void **reply);
/* ---- Redis Cluster store (rl_cluster.c) ---------------------------------- */
struct gw_rl_cluster;
/* Creates a disconnected per-worker Cluster store for target (its
 * cluster_nodes are the seeds; borrowed, must outlive the store);
 * timeout_ms bounds connect, handshake and each command (<= 0 means 100).
 * Returns 0, -EINVAL without seeds, or -ENOMEM. One thread uses a store. */
GW_MUSTCHECK int gw_rl_cluster_create(struct gw_rl_cluster **out,
                                      const struct gw_redis_target *target, int timeout_ms);
/* Drops every node's link (and a seed link being made). */
void gw_rl_cluster_disconnect(struct gw_rl_cluster *c);
/* The Redis Cluster slot of key: gw_redis_key_slot (gw/redis_redirects.h). */
unsigned gw_rl_cluster_slot(const char *key, size_t len);
/* Vtable: apply splits the pass by slot, one script call per slot, every
 * node's calls sent before any reply is read; redirects followed (see
 * rl_cluster.c). apply returns 0 while any master answers (units of the
 * failed ones UNDECIDED), -ENOTCONN when none is up. ping answers 0 when
 * every master answers, -EPROTO when some do not. */
extern const struct gw_rl_store_ops gw_rl_cluster_ops;
/* Makes hiredis reader `reader` (a redisReader *) refuse an array reply
 * of more than 65,536 elements instead of allocating its table from the
 * announced count (hiredis 0.14 has no such bound); every other object is
 * built by hiredis as before. Idempotent. Thread-safe. */
void gw_rl_redis_bound_reader(void *reader);

/* The reply check of gw_rl_redis_apply on a reply from anywhere (the
 * fuzz target feeds hiredis's reader with arbitrary bytes): reply is a
 * redisReply, owned and freed here; pass gives the units and ops the reply
 * must answer. Returns 0 with every unit's result and op state set and in
 * range, or -EPROTO with every unit UNDECIDED. r's last error is set. */
GW_MUSTCHECK int gw_rl_redis_take_reply(struct gw_rl_redis *r, void *reply,
                                        struct gw_rl_pass *pass);

/* Vtable: apply is one EVALSHA round trip (EVAL once on NOSCRIPT), each
 * bounded by timeout_ms; a store that is not ready answers -ENOTCONN at
 * once. An I/O failure or timeout disconnects the store. */
extern const struct gw_rl_store_ops gw_rl_redis_ops;

/* The Lua source of the check, exposed for tests. */
extern const char gw_rl_redis_script[];

#endif
