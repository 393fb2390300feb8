/*
 * The rate limiter (SPEC.md §5, §5.1, §10): for each request, finds the
 * applicable limits of the rules in force, derives each limit's client
 * identity from its key and turns it into a store-key digest (SHA-256,
 * cached per worker), answers rates known to refuse from the process-wide
 * over-limit cache (behind a small lock-free per-worker front), and
 * decides the rest in one store call per pass: the request's enforce
 * rates as one unit (check all, commit only if all allow), each shadow
 * limit as a unit of its own. A pass holds the units of up to PASS
 * requests in batch order; Redis decides them in one script call (one
 * round trip), the in-process store under its shard locks. Then it applies
 * RATE_LIMIT_FAILURE_MODE and RATE_LIMIT_DRY_RUN, picks the rate the
 * headers describe, and counts each limit's outcome. A worker whose Redis
 * failed stops asking it and reconnects from its tick, without blocking,
 * with a doubling backoff (100 ms to 2 s).
 *
 * Threads: struct gw_ratelimit is immutable after create except for the
 * rules in force (in a struct gw_rules_holder, announced by its atomic
 * generation), the per-limit counters (atomics; the name table grows under
 * stats_mu), the over-limit cache, whose shards each have a mutex, and the
 * memory store, which locks itself; a struct gw_ratelimit_worker belongs
 * to one worker thread and is never locked.
 */
#include "gw/ratelimit.h"

#include "gw/log.h"
#include "gw/net.h"
#include "gw/path.h"
#include "gw/rl_algo.h"
#include "gw/rules_holder.h"
#include "put.h"
#include "ratelimit_int.h"

#include <assert.h>
#include <errno.h>
#include <llhttp.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define OLC_SHARDS      64   /* over-limit cache shards, one mutex each (power of two) */
#define OLC_SHARD_SLOTS 2048 /* entries per shard (power of two): 131072 in all */
#define OLC_PROBE       8    /* slots looked at per key; a full run is overwritten */
#define OLC_LOCAL_SLOTS 64   /* per-worker front of the over-limit cache (power of two) */
#define BACKOFF_MIN_MS  100
#define BACKOFF_MAX_MS  2000
#define TICK_IDLE_MS    1000
#define CONNECT_POLL_MS 5    /* tick period while a reconnect is in progress */
#define PASS            256  /* requests decided by one store call */
#define PASS_OPS        4096 /* ops of one store call (a request has at most GW_RL_UNIT_OPS_MAX) */
#define SKC_SLOTS       128  /* per-worker cache of identity -> digest (power of two) */
#define SKC_KEY_MAX     96   /* longer identities are hashed on every request */
#define MD_BYTES        16   /* digest bytes in a store key (GW_RL_KEY_HASH_HEX / 2) */
#define IDENT_MAX       4096 /* longest identity (header values over 256 bytes go in as SHA-256) */
#define STATS_MAX       4096 /* limit names counted since start */

/* One rate known to refuse a client until deadline_ms. */
struct olc_slot {
    uint64_t hash;         /* mix of the identity digest and the rate's id */
    uint64_t deadline_ms;  /* gw_now_ms() at which a request would pass again; 0 = empty */
    int64_t reset_epoch_s; /* the rate's reset on the store's clock, for headers */
    uint32_t epoch;        /* per-worker front only: rl->olc_epoch when copied */
};

/* A shard of the over-limit cache: every worker of the process sees a
 * client refused by any of them (SPEC.md §5 "remembered in-process"). */
struct olc_shard {
    pthread_mutex_t mu;
    struct olc_slot slots[OLC_SHARD_SLOTS];
};

/* A cached store-key digest of one identity (the worker's own). */
struct skc_slot {
    uint64_t khash;               /* gw_hash64(seed, identity) */
    uint32_t len;                 /* identity bytes; UINT32_MAX = empty slot */
    unsigned char md[MD_BYTES];   /* first bytes of SHA-256(identity) */
    char hex[GW_RL_KEY_HASH_HEX]; /* md in lower-case hex, as store keys spell it */
    char key[SKC_KEY_MAX];        /* the identity */
};

/* Counters of one limit name. */
struct lim_stats {
    char name[GW_RULES_NAME_MAX + 1];
    _Atomic uint64_t count[GW_RL_OUT_COUNT];
};

struct gw_ratelimit {
    const struct gw_config *cfg;   /* borrowed */
    size_t prefix_len;             /* strlen(RATE_LIMIT_KEY_PREFIX) */
    uint64_t seed;                 /* gw_hash64 seed of the per-worker tables, random per process */
    EVP_MD *sha256;                /* fetched once (NULL: one-shot SHA256()); shared */
    enum gw_rl_failure_mode mode;  /* RATE_LIMIT_FAILURE_MODE */
    bool dry_run;                  /* RATE_LIMIT_DRY_RUN */
    bool use_redis;                /* REDIS_URL or REDIS_SENTINELS set */
    struct gw_redis_target target; /* parsed REDIS_URL (the configuration's parser) */
    struct gw_rl_memory *mem;      /* without Redis, or for failure mode local; else NULL */
    _Atomic int workers;           /* live worker handles */
    struct olc_shard *olc;         /* OLC_SHARDS shards, heap */
    _Atomic uint32_t olc_epoch;    /* bumped when entries are forgotten: fronts drop theirs */
    struct gw_rules_holder *holder; /* the rules in force */
    bool own_holder;                /* created here (gw_ratelimit_create) */
    pthread_mutex_t stats_mu;       /* guards adding to stats */
    struct lim_stats *stats;        /* STATS_MAX entries */
    _Atomic size_t nstats;          /* entries in use (published after the name is written) */
};

/* What a worker derives once from a rules version. */
struct version {
    struct gw_rules *rules;  /* one reference */
    uint64_t gen;            /* rl->rules_gen it was taken at */
    size_t nrates;           /* rates of all limits */
    uint32_t *rate_base;     /* per limit: index of its first rate in the flat arrays */
    struct gw_rl_spec *spec; /* per flat rate */
    uint64_t *rate_id;       /* per flat rate: hash of limit, policy, algorithm, parameters */
    uint16_t *stat;          /* per limit: its rl->stats entry (UINT16_MAX: none) */
    uint32_t *spec_stamp;    /* per flat rate: pass number that last used spec_at */
    uint16_t *spec_at;       /* per flat rate: its index in the pass's specs */
    const struct gw_rules_limit **match; /* gw_rules_match output, limit_count entries */
    bool need_path;                      /* some limit has a path condition */
    bool need_addr;                      /* some limit has client_cidrs */
};

/* An op's place in the request it belongs to. */
struct op_ref {
    uint16_t item;  /* item of the pass */
    uint8_t app;    /* index into the item's decision applied[] */
    uint8_t rate;   /* rate of that limit */
    uint32_t flat;  /* flat rate index */
    uint64_t ohash; /* over-limit cache key */
};

/* Results of the ops of a pass, beside the store's answer. */
enum { OP_NONE = 0, OP_DECIDED, OP_CACHED };

struct op_out {
    uint8_t state; /* OP_* */
    struct gw_rl_result res;
};

/* A request of the pass. */
struct item_state {
    uint32_t first_unit, nunits;
    uint64_t md_hash[GW_RL_APPLY_MAX]; /* per applied limit: first 8 digest bytes */
};

struct gw_ratelimit_worker {
    struct gw_ratelimit *rl;
    void *store;                       /* this worker's shared store (Redis); NULL without */
    const struct gw_rl_store_ops *ops; /* its operations: the only way it is called */
    bool redis_up;                     /* connected and not failed since */
    bool connecting;                   /* a non-blocking reconnect is in progress */
    uint64_t backoff_ms;               /* current reconnect delay */
    uint64_t retry_at_ms;              /* gw_now_ms() of the next reconnect attempt */
    uint64_t warned_at_ms;             /* last error-reply warning, to rate-limit the log */
    uint64_t warned_apply_ms;          /* last "too many limits" warning */
    EVP_MD_CTX *md_ctx;                /* reused SHA-256 context; NULL: one-shot SHA256() */
    struct skc_slot skc[SKC_SLOTS];
    /* Rates this worker saw refuse, direct-mapped on hash: a flood from
     * one client is refused without taking a shard lock that every worker
     * contends for. An entry only ever says "refusing until deadline_ms",
     * as the shared cache does, so it needs no invalidation. */
    struct olc_slot olc_local[OLC_LOCAL_SLOTS];
    struct version v;               /* the rules version this worker decides with */
    uint32_t pass_no;               /* numbers passes for spec_stamp */
    enum gw_rl_pass_mode pass_mode; /* DECIDE, except during admin peek and forget */
    char *path;                     /* normalised path scratch */
    size_t path_cap;
    char ident[IDENT_MAX];
    /* One pass: */
    char *keys;     /* store-key bases, key_cap bytes each */
    size_t key_cap; /* bytes per key slot */
    const char *kptr[PASS_OPS];
    size_t klen[PASS_OPS];
    uint16_t ktable[2 * PASS_OPS]; /* open addressing over key hashes: index + 1 */
    uint64_t khash[PASS_OPS];
    uint16_t kslot[PASS_OPS]; /* each key's ktable slot, cleared by pass_reset */
    size_t nkeys;
    struct gw_rl_spec specs[PASS_OPS];
    size_t nspecs;
    struct gw_rl_op pops[PASS_OPS];
    struct op_ref oref[PASS_OPS];
    size_t nops;
    struct gw_rl_unit units[PASS_OPS];
    bool unit_sent[PASS_OPS]; /* false: decided from the over-limit cache */
    size_t nunits;
    struct gw_rl_unit send_units[PASS_OPS]; /* the units sent to the store ... */
    uint16_t send_map[PASS_OPS];            /* ... and where each came from */
    struct op_out *oo;                      /* PASS_OPS results, heap */
    struct item_state items[PASS];
};

/* ---- store keys ------------------------------------------------------------ */

static const char hexd[] = "0123456789abcdef";

/* "<prefix>:{<hex of md>}" into out; its length, or -ENOSPC. */
static int format_store_key(const char *prefix, size_t plen, const unsigned char md[MD_BYTES],
                            char *out, size_t cap)
{
    size_t need = plen + 3 + GW_RL_KEY_HASH_HEX; /* ":{" hex "}" */
    if (need + 1 > cap || need > INT32_MAX)
        return -ENOSPC;
    char *p = out;
    memcpy(p, prefix, plen);
    p += plen;
    *p++ = ':';
    *p++ = '{';
    for (int i = 0; i < MD_BYTES; i++) {
        *p++ = hexd[md[i] >> 4];
        *p++ = hexd[md[i] & 15];
    }
    *p++ = '}';
    *p = '\0';
    return (int)need;
}

static uint64_t md_hash64(const unsigned char *md)
{
    uint64_t h = 0;
    for (int i = 0; i < 8; i++)
        h = h << 8 | md[i];
    return h;
}

int gw_rl_store_key(const char *prefix, const char *key, size_t key_len, char *out, size_t cap,
                    uint64_t *hash64)
{
    unsigned char md[SHA256_DIGEST_LENGTH] = {0};
    SHA256((const unsigned char *)key, key_len, md);
    if (hash64 != NULL)
        *hash64 = md_hash64(md);
    return format_store_key(prefix, strlen(prefix), md, out, cap);
}

/* SHA-256 of key with the worker's reused context (no digest fetch, no
 * allocation), falling back to the one-shot call. */
static void sha256(struct gw_ratelimit_worker *w, const char *key, size_t len,
                   unsigned char md[SHA256_DIGEST_LENGTH])
{
    unsigned int mdlen = 0;
    if (w->md_ctx != NULL && EVP_DigestInit_ex(w->md_ctx, w->rl->sha256, NULL) == 1 &&
        EVP_DigestUpdate(w->md_ctx, key, len) == 1 &&
        EVP_DigestFinal_ex(w->md_ctx, md, &mdlen) == 1 && mdlen == SHA256_DIGEST_LENGTH)
        return;
    memset(md, 0, SHA256_DIGEST_LENGTH);
    SHA256((const unsigned char *)key, len, md);
}

static void to_hex(const unsigned char *md, char *hex)
{
    for (int i = 0; i < MD_BYTES; i++) {
        hex[2 * i] = hexd[md[i] >> 4];
        hex[2 * i + 1] = hexd[md[i] & 15];
    }
}

/* The store-key digest of an identity and its hex, from the worker's cache
 * when it holds it (direct-mapped on khash; the bytes are compared). */
static void client_digest(struct gw_ratelimit_worker *w, const char *key, size_t len,
                          unsigned char out[MD_BYTES], char hex[GW_RL_KEY_HASH_HEX])
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    if (len > SKC_KEY_MAX) {
        sha256(w, key, len, md);
        memcpy(out, md, MD_BYTES);
        to_hex(out, hex);
        return;
    }
    uint64_t khash = gw_hash64(w->rl->seed, key, len);
    struct skc_slot *s = &w->skc[khash & (SKC_SLOTS - 1)];
    if (s->len == len && s->khash == khash && memcmp(s->key, key, len) == 0) {
        memcpy(out, s->md, MD_BYTES);
        memcpy(hex, s->hex, GW_RL_KEY_HASH_HEX);
        return;
    }
    sha256(w, key, len, md);
    s->khash = khash;
    s->len = (uint32_t)len;
    memcpy(s->key, key, len);
    memcpy(s->md, md, MD_BYTES);
    to_hex(md, s->hex);
    memcpy(out, md, MD_BYTES);
    memcpy(hex, s->hex, GW_RL_KEY_HASH_HEX);
}

/* ---- over-limit cache -------------------------------------------------------- */

static struct olc_shard *olc_shard_of(const struct gw_ratelimit *rl, uint64_t hash)
{
    return &rl->olc[(hash >> 58) & (OLC_SHARDS - 1)];
}

/* Copies the live entry of hash into *out; false when there is none. */
static bool olc_find(const struct gw_ratelimit *rl, uint64_t hash, uint64_t now_ms,
                     struct olc_slot *out)
{
    struct olc_shard *sh = olc_shard_of(rl, hash);
    bool found = false;
    pthread_mutex_lock(&sh->mu);
    for (unsigned i = 0; i < OLC_PROBE; i++) {
        const struct olc_slot *s = &sh->slots[(hash + i) & (OLC_SHARD_SLOTS - 1)];
        if (s->hash == hash && s->deadline_ms > now_ms) {
            *out = *s;
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&sh->mu);
    return found;
}

/* Takes the key's own slot, else an expired one, else the one ending
 * soonest in the probe run: the table never grows. */
/* The worker's own front of the cache, then the shared one (which then
 * fills the front). */
static bool olc_find_local(struct gw_ratelimit_worker *w, uint64_t hash, uint64_t now_ms,
                           struct olc_slot *out)
{
    struct olc_slot *l = &w->olc_local[hash & (OLC_LOCAL_SLOTS - 1)];
    uint32_t epoch = atomic_load_explicit(&w->rl->olc_epoch, memory_order_acquire);
    if (l->hash == hash && l->deadline_ms > now_ms && l->epoch == epoch) {
        *out = *l;
        return true;
    }
    if (!olc_find(w->rl, hash, now_ms, out))
        return false;
    *l = *out;
    l->epoch = epoch;
    return true;
}

static void olc_put(const struct gw_ratelimit *rl, uint64_t hash, uint64_t deadline_ms,
                    int64_t reset_epoch_s, uint64_t now_ms)
{
    struct olc_shard *sh = olc_shard_of(rl, hash);
    pthread_mutex_lock(&sh->mu);
    struct olc_slot *victim = NULL;
    for (unsigned i = 0; i < OLC_PROBE; i++) {
        struct olc_slot *s = &sh->slots[(hash + i) & (OLC_SHARD_SLOTS - 1)];
        if (s->hash == hash || s->deadline_ms <= now_ms) {
            victim = s;
            break;
        }
        if (victim == NULL || s->deadline_ms < victim->deadline_ms)
            victim = s;
    }
    victim->hash = hash;
    victim->deadline_ms = deadline_ms;
    victim->reset_epoch_s = reset_epoch_s;
    pthread_mutex_unlock(&sh->mu);
}

/* ---- clocks ------------------------------------------------------------------ */

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t ceil_div64(int64_t a, int64_t b)
{
    return a / b + (a % b > 0);
}

/* ---- per-limit counters -------------------------------------------------------- */

/* The counters of a limit name, added when first seen; UINT16_MAX when the
 * table is full (the limit is then not counted). */
static uint16_t stats_slot(struct gw_ratelimit *rl, const char *name)
{
    size_t n = atomic_load_explicit(&rl->nstats, memory_order_acquire);
    for (size_t i = 0; i < n; i++)
        if (strcmp(rl->stats[i].name, name) == 0)
            return (uint16_t)i;
    pthread_mutex_lock(&rl->stats_mu);
    n = atomic_load_explicit(&rl->nstats, memory_order_relaxed);
    uint16_t slot = UINT16_MAX;
    for (size_t i = 0; i < n && slot == UINT16_MAX; i++)
        if (strcmp(rl->stats[i].name, name) == 0)
            slot = (uint16_t)i;
    if (slot == UINT16_MAX && n < STATS_MAX) {
        snprintf(rl->stats[n].name, sizeof(rl->stats[n].name), "%s", name);
        atomic_store_explicit(&rl->nstats, n + 1, memory_order_release);
        slot = (uint16_t)n;
    }
    pthread_mutex_unlock(&rl->stats_mu);
    return slot;
}

size_t gw_ratelimit_limit_stats(struct gw_ratelimit *rl, struct gw_rl_limit_stats *out, size_t cap)
{
    size_t n = atomic_load_explicit(&rl->nstats, memory_order_acquire);
    for (size_t i = 0; i < n && i < cap; i++) {
        memcpy(out[i].name, rl->stats[i].name, sizeof(out[i].name));
        for (int k = 0; k < GW_RL_OUT_COUNT; k++)
            out[i].count[k] = atomic_load_explicit(&rl->stats[i].count[k], memory_order_relaxed);
    }
    return n;
}

/* ---- rules versions ------------------------------------------------------------ */

/* The over-limit cache id of a rate: its limit, policy, algorithm and
 * parameters, so a limit changed by a reload misses its old entries. */
static uint64_t rate_id_of(const struct gw_rules_limit *lim, const struct gw_rules_rate *rt)
{
    char id[256];
    int n = snprintf(id, sizeof(id), "%s|%s|%d|%lld|%lld|%lld|%lld", lim->name, rt->name,
                     (int)rt->algorithm, (long long)rt->requests, (long long)rt->window_ms,
                     (long long)rt->burst, (long long)rt->delay_ms);
    return gw_hash64(0x9e3779b97f4a7c15ULL, id, (size_t)GW_MAX(n, 0));
}

static void version_free(struct version *v)
{
    gw_rules_put(v->rules);
    free(v->rate_base);
    free(v->spec);
    free(v->rate_id);
    free(v->stat);
    free(v->spec_stamp);
    free(v->spec_at);
    free((void *)v->match);
    memset(v, 0, sizeof(*v));
}

/* What a worker needs of rules r, computed once: flat rate tables, the
 * over-limit cache ids of the rates (so a changed limit misses its old
 * entries) and the counters of the limits. Takes r's reference. */
static int version_build(struct gw_ratelimit *rl, struct gw_rules *r, uint64_t gen,
                         struct version *v)
{
    memset(v, 0, sizeof(*v));
    v->rules = r;
    v->gen = gen;
    size_t nl = r->limit_count, nr = 0;
    for (size_t i = 0; i < nl; i++)
        nr += r->limits[i].rate_count;
    v->nrates = nr;
    v->rate_base = calloc(nl + 1, sizeof(*v->rate_base));
    v->stat = calloc(nl + 1, sizeof(*v->stat));
    v->match = calloc(nl + 1, sizeof(*v->match));
    v->spec = calloc(nr + 1, sizeof(*v->spec));
    v->rate_id = calloc(nr + 1, sizeof(*v->rate_id));
    v->spec_stamp = calloc(nr + 1, sizeof(*v->spec_stamp));
    v->spec_at = calloc(nr + 1, sizeof(*v->spec_at));
    if (!v->rate_base || !v->stat || !v->match || !v->spec || !v->rate_id || !v->spec_stamp ||
        !v->spec_at) {
        version_free(v);
        return -ENOMEM;
    }
    size_t f = 0;
    for (size_t i = 0; i < nl; i++) {
        const struct gw_rules_limit *lim = &r->limits[i];
        v->rate_base[i] = (uint32_t)f;
        v->stat[i] = stats_slot(rl, lim->name);
        v->need_path |= lim->path_kind != GW_RULES_PATH_ANY;
        v->need_addr |= lim->cidr_count > 0;
        for (size_t k = 0; k < lim->rate_count; k++, f++) {
            const struct gw_rules_rate *rt = &lim->rates[k];
            v->spec[f] = (struct gw_rl_spec){.algorithm = rt->algorithm,
                                             .limit = rt->requests,
                                             .window_ms = rt->window_ms,
                                             .burst = rt->burst,
                                             .delay_ms = rt->delay_ms};
            char id[256];
            int n = snprintf(id, sizeof(id), "%s|%s|%d|%lld|%lld|%lld|%lld", lim->name, rt->name,
                             (int)rt->algorithm, (long long)rt->requests, (long long)rt->window_ms,
                             (long long)rt->burst, (long long)rt->delay_ms);
            v->rate_id[f] = gw_hash64(0x9e3779b97f4a7c15ULL, id, (size_t)GW_MAX(n, 0));
        }
    }
    return 0;
}

/* Picks up the rules in force when they changed since this worker's last
 * pass. On ENOMEM the worker keeps deciding with the version it has. */
static void version_sync(struct gw_ratelimit_worker *w)
{
    struct gw_ratelimit *rl = w->rl;
    uint64_t gen = gw_rules_holder_generation(rl->holder);
    if (gen == w->v.gen && w->v.rules != NULL)
        return;
    /* get returns this generation's rules or newer ones: a newer version
     * is picked up again at the next sync, never an older one kept. */
    struct gw_rules *r = gw_rules_holder_get(rl->holder);
    struct version nv;
    if (version_build(rl, r, gen, &nv) != 0)
        return; /* r's reference was dropped by version_build */
    version_free(&w->v);
    w->v = nv;
}

void gw_ratelimit_publish_rules(struct gw_ratelimit *rl, struct gw_rules *rules)
{
    gw_rules_holder_publish(rl->holder, rules);
}

struct gw_rules *gw_ratelimit_rules(struct gw_ratelimit *rl)
{
    return gw_rules_holder_get(rl->holder);
}

/* The connection failed: decide by RATE_LIMIT_FAILURE_MODE until a
 * background reconnect succeeds. A reconnect counts as a success only once
 * its handshake has run the script itself (rl_redis.c CMD_PROBE), so a Redis
 * that accepts connections but holds script calls (CLIENT PAUSE WRITE during
 * a failover) keeps failing in the background, with a doubling backoff,
 * while requests are decided at once: each worker waits a full
 * REDIS_TIMEOUT_MS only on the request that found the stall. */
static void mark_down(struct gw_ratelimit_worker *w, uint64_t mono_ms)
{
    gw_warn("rate limit: redis unavailable, reconnecting in background (%s)",
            w->ops->last_error(w->store));
    w->ops->disconnect(w->store);
    w->redis_up = false;
    w->connecting = false;
    w->backoff_ms = BACKOFF_MIN_MS;
    w->retry_at_ms = mono_ms + BACKOFF_MIN_MS;
}

/* ---- public API: life cycle ------------------------------------------------------ */

int gw_ratelimit_create(struct gw_ratelimit **out, const struct gw_config *cfg)
{
    return gw_ratelimit_create_shared(out, cfg, NULL);
}

int gw_ratelimit_create_shared(struct gw_ratelimit **out, const struct gw_config *cfg,
                               struct gw_rules_holder *holder)
{
    if (cfg->rate_limit_window_s < 1 || cfg->rate_limit_requests < 0 ||
        cfg->rate_limit_key_prefix == NULL)
        return -EINVAL;

    struct gw_ratelimit *rl = calloc(1, sizeof(*rl));
    if (rl == NULL)
        return -ENOMEM;
    rl->cfg = cfg;
    rl->mode = cfg->rate_limit_failure_mode;
    rl->dry_run = cfg->rate_limit_dry_run;
    rl->use_redis = gw_config_redis_enabled(cfg);
    rl->prefix_len = strlen(cfg->rate_limit_key_prefix);
    if (getrandom(&rl->seed, sizeof(rl->seed), GRND_NONBLOCK) != (ssize_t)sizeof(rl->seed))
        rl->seed = (uint64_t)wall_us() ^ (uint64_t)(uintptr_t)rl;
    /* Fetched once: SHA256() would look the digest up on every call. */
    rl->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    atomic_init(&rl->workers, 0);
    atomic_init(&rl->nstats, 0);
    atomic_init(&rl->olc_epoch, 0);
    pthread_mutex_init(&rl->stats_mu, NULL);

    int rc = -ENOMEM;
    rl->olc = calloc(OLC_SHARDS, sizeof(*rl->olc));
    rl->stats = calloc(STATS_MAX, sizeof(*rl->stats));
    if (rl->olc == NULL || rl->stats == NULL)
        goto fail;
    rl->holder = holder;
    if (holder == NULL) {
        struct gw_rules *r = gw_rules_from_config(cfg);
        if (r == NULL || gw_rules_holder_create(&rl->holder, r) != 0) {
            gw_rules_put(r);
            goto fail;
        }
        rl->own_holder = true;
    }
    for (int i = 0; i < OLC_SHARDS; i++)
        pthread_mutex_init(&rl->olc[i].mu, NULL);
    if (rl->use_redis && (rc = gw_config_redis_target(cfg, &rl->target, NULL, 0)) != 0)
        goto fail;
    if ((!rl->use_redis || rl->mode == GW_RL_FAIL_LOCAL) &&
        (rc = gw_rl_memory_create(&rl->mem, 0)) != 0)
        goto fail;
    *out = rl;
    return 0;

fail:
    gw_config_redis_target_deinit(&rl->target);
    EVP_MD_free(rl->sha256);
    if (rl->olc != NULL) {
        for (int i = 0; i < OLC_SHARDS; i++)
            pthread_mutex_destroy(&rl->olc[i].mu);
    }
    if (rl->own_holder)
        gw_rules_holder_destroy(rl->holder);
    pthread_mutex_destroy(&rl->stats_mu);
    free(rl->stats);
    free(rl->olc);
    free(rl);
    return rc;
}

void gw_ratelimit_destroy(struct gw_ratelimit *rl)
{
    if (rl == NULL)
        return;
    assert(atomic_load(&rl->workers) == 0);
    if (rl->mem != NULL)
        gw_rl_memory_ops.destroy(rl->mem);
    gw_config_redis_target_deinit(&rl->target);
    EVP_MD_free(rl->sha256);
    for (int i = 0; i < OLC_SHARDS; i++)
        pthread_mutex_destroy(&rl->olc[i].mu);
    if (rl->own_holder)
        gw_rules_holder_destroy(rl->holder);
    pthread_mutex_destroy(&rl->stats_mu);
    free(rl->stats);
    free(rl->olc);
    free(rl);
}

int gw_ratelimit_worker_create(struct gw_ratelimit_worker **out, struct gw_ratelimit *rl)
{
    struct gw_ratelimit_worker *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -ENOMEM;
    w->rl = rl;
    /* "<prefix>:{<hex>}:<limit>:<policy>" */
    w->key_cap = rl->prefix_len + GW_RL_KEY_HASH_HEX + 6 + 2 * (GW_RULES_NAME_MAX + 16);
    if ((w->keys = malloc(w->key_cap * PASS_OPS)) == NULL ||
        (w->oo = calloc(PASS_OPS, sizeof(*w->oo))) == NULL)
        goto fail;
    for (size_t i = 0; i < SKC_SLOTS; i++)
        w->skc[i].len = UINT32_MAX;
    /* NULL (no digest, or no memory) falls back to one-shot SHA256(). */
    w->md_ctx = rl->sha256 != NULL ? EVP_MD_CTX_new() : NULL;
    version_sync(w);
    if (w->v.rules == NULL)
        goto fail;
    if (rl->use_redis) {
        /* One Redis store per worker: a Cluster's (the seeds in the
         * target), else one server's (REDIS_URL or Sentinel). */
        bool cluster = rl->target.ncluster_nodes > 0;
        struct gw_rl_cluster *cl = NULL;
        struct gw_rl_redis *r = NULL;
        int rc = cluster ? gw_rl_cluster_create(&cl, &rl->target, rl->cfg->redis_timeout_ms)
                         : gw_rl_redis_create(&r, &rl->target, rl->cfg->redis_timeout_ms);
        if (rc != 0)
            goto fail;
        w->store = cluster ? (void *)cl : (void *)r;
        w->ops = cluster ? &gw_rl_cluster_ops : &gw_rl_redis_ops;
        uint64_t now = gw_now_ms();
        if (w->ops->connect(w->store) == 0) {
            w->redis_up = true;
            w->backoff_ms = BACKOFF_MIN_MS;
        } else {
            mark_down(w, now);
        }
    }
    atomic_fetch_add(&rl->workers, 1);
    *out = w;
    return 0;

fail:
    version_free(&w->v);
    EVP_MD_CTX_free(w->md_ctx);
    free(w->oo);
    free(w->keys);
    free(w);
    return -ENOMEM;
}

void gw_ratelimit_worker_destroy(struct gw_ratelimit_worker *w)
{
    if (w == NULL)
        return;
    if (w->store != NULL)
        w->ops->destroy(w->store);
    atomic_fetch_sub(&w->rl->workers, 1);
    version_free(&w->v);
    EVP_MD_CTX_free(w->md_ctx);
    free(w->path);
    free(w->oo);
    free(w->keys);
    free(w);
}

/* ---- building a pass ---------------------------------------------------------- */

/* Appends src (len bytes) to the identity at *n, cut at IDENT_MAX. */
static void ident_put(char *ident, size_t *n, const char *src, size_t len)
{
    size_t room = IDENT_MAX - *n;
    if (len > room)
        len = room;
    memcpy(ident + *n, src, len);
    *n += len;
}

/* A header value in an identity: as it is up to VALUE_MAX bytes, else
 * "sha256:<hex>" of the whole value, so two long values never share a
 * budget by being cut (an identity has IDENT_MAX bytes). */
#define VALUE_MAX 256

static void ident_put_value(char *ident, size_t *n, const char *v, size_t len)
{
    if (len <= VALUE_MAX) {
        ident_put(ident, n, v, len);
        return;
    }
    unsigned char md[SHA256_DIGEST_LENGTH];
    char hex[7 + 2 * SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)v, len, md);
    memcpy(hex, "sha256:", 7);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        hex[7 + 2 * i] = hexd[md[i] >> 4];
        hex[8 + 2 * i] = hexd[md[i] & 15];
    }
    ident_put(ident, n, hex, sizeof(hex));
}

/* The identity of limit lim for a request (SPEC.md §10 "key"): parts
 * joined by '|'. Returns its length, or -1 when a key header came in
 * several field lines (which budget is the client's is ambiguous). */
static ssize_t identity(struct gw_ratelimit_worker *w, const struct gw_rules_limit *lim,
                        const struct gw_rl_batch_item *it)
{
    char *id = w->ident;
    size_t n = 0;
    for (size_t k = 0; k < lim->key_count; k++) {
        const struct gw_rules_key *part = &lim->keys[k];
        if (k > 0)
            ident_put(id, &n, "|", 1);
        if (part->kind == GW_RULES_KEY_GLOBAL) {
            ident_put(id, &n, "global", 6);
            continue;
        }
        if (it->req == NULL) { /* tests: the caller's key is the client */
            ident_put(id, &n, it->key, it->key_len);
            continue;
        }
        const struct gw_http_header *f = NULL;
        if (part->kind == GW_RULES_KEY_HEADER && it->req->head != NULL) {
            const struct gw_http_head *h = it->req->head;
            for (size_t i = 0; i < h->header_count; i++) {
                if (!gw_slice_eq_nocase(h->headers[i].name, part->header))
                    continue;
                if (f != NULL)
                    return -1;
                f = &h->headers[i];
            }
        }
        if (f != NULL && f->value.len > 0) {
            ident_put(id, &n, "header:", 7);
            ident_put(id, &n, part->header, strlen(part->header));
            ident_put(id, &n, "=", 1);
            ident_put_value(id, &n, f->value.ptr, f->value.len);
        } else {
            const char *a = it->req->client_addr != NULL ? it->req->client_addr : "";
            ident_put(id, &n, "ip:", 3);
            ident_put(id, &n, a, strlen(a));
        }
    }
    return (ssize_t)n;
}

static uint64_t mix64(uint64_t a, uint64_t b)
{
    uint64_t x = a ^ (b + 0x9e3779b97f4a7c15ULL + (a << 6) + (a >> 2));
    x ^= x >> 31;
    x *= 0x7fb5d329728ea185ULL;
    x ^= x >> 27;
    return x;
}

/* The pass index of the store key "<prefix>:{<md>}:<limit>:<policy>",
 * added when new (hash is mix64(md hash, rate id)). */
static uint16_t pass_key(struct gw_ratelimit_worker *w, const char hex[GW_RL_KEY_HASH_HEX],
                         const struct gw_rules_limit *lim, const struct gw_rules_rate *rt,
                         uint64_t hash)
{
    size_t t = hash & (2 * PASS_OPS - 1);
    char *slot = w->keys + w->nkeys * w->key_cap;
    size_t plen = w->rl->prefix_len, nl = strlen(lim->name), pl = strlen(rt->name);
    size_t len = plen + 3 + GW_RL_KEY_HASH_HEX + 2 + nl + pl;
    assert(len + 1 <= w->key_cap); /* key_cap was sized for this */
    char *p = slot;
    memcpy(p, w->rl->cfg->rate_limit_key_prefix, plen);
    p += plen;
    *p++ = ':';
    *p++ = '{';
    memcpy(p, hex, GW_RL_KEY_HASH_HEX);
    p += GW_RL_KEY_HASH_HEX;
    *p++ = '}';
    *p++ = ':';
    memcpy(p, lim->name, nl);
    p += nl;
    *p++ = ':';
    memcpy(p, rt->name, pl);
    p += pl;
    *p = '\0';
    for (; w->ktable[t] != 0; t = (t + 1) & (2 * PASS_OPS - 1)) {
        uint16_t k = (uint16_t)(w->ktable[t] - 1);
        if (w->khash[k] == hash && w->klen[k] == len && memcmp(w->kptr[k], slot, len) == 0)
            return k;
    }
    uint16_t k = (uint16_t)w->nkeys++;
    w->ktable[t] = (uint16_t)(k + 1);
    w->kslot[k] = (uint16_t)t;
    w->khash[k] = hash;
    w->kptr[k] = slot;
    w->klen[k] = len;
    return k;
}

/* The pass index of flat rate f's spec, added when new in this pass. */
static uint16_t pass_spec(struct gw_ratelimit_worker *w, size_t f)
{
    struct version *v = &w->v;
    if (v->spec_stamp[f] == w->pass_no)
        return v->spec_at[f];
    v->spec_stamp[f] = w->pass_no;
    v->spec_at[f] = (uint16_t)w->nspecs;
    w->specs[w->nspecs] = v->spec[f];
    return (uint16_t)w->nspecs++;
}

static void pass_reset(struct gw_ratelimit_worker *w)
{
    if (++w->pass_no == 0) { /* wrapped: no stale stamp may match */
        memset(w->v.spec_stamp, 0, w->v.nrates * sizeof(*w->v.spec_stamp));
        w->pass_no = 1;
    }
    for (size_t k = 0; k < w->nkeys; k++)
        w->ktable[w->kslot[k]] = 0;
    w->nkeys = w->nspecs = w->nops = w->nunits = 0;
}

/* The limits of a request that apply, in file order, into v->match;
 * GW_RULES_NONE or ALLOW end the request's way through the limiter. */
static enum gw_rules_verdict match_limits(struct gw_ratelimit_worker *w,
                                          const struct gw_rl_batch_item *it, size_t *count)
{
    struct gw_rules_request rq = {.method = HTTP_GET};
    uint8_t addr[16] = {0};
    rq.client_addr = addr;
    if (it->req != NULL && it->req->head != NULL) {
        const struct gw_http_head *h = it->req->head;
        rq.method = h->method;
        rq.head = h;
        rq.path = (struct gw_slice){"/", 1};
        /* Normalised and parsed only when some limit looks at them. */
        if (w->v.need_path) {
            size_t need = h->target.len + 2;
            if (need > w->path_cap) {
                char *np = realloc(w->path, need);
                if (np == NULL)
                    return GW_RULES_NONE; /* no memory: not limited, as with no rules */
                w->path = np;
                w->path_cap = need;
            }
            size_t n = gw_path_normalize(h->target.ptr, h->target.len, w->path);
            w->path[n] = '\0';
            rq.path = (struct gw_slice){w->path, n};
        }
        const char *a = it->req->client_addr;
        if (w->v.need_addr && a != NULL)
            (void)gw_net_parse_addr(a, strlen(a), addr, NULL);
    } else {
        rq.path = (struct gw_slice){"/", 1};
    }
    return gw_rules_match(w->v.rules, &rq, w->v.match, w->v.rules->limit_count, count, NULL);
}

/* A limit decided as if alone (its own unit), never refusing: mode:
 * shadow, or every limit under RATE_LIMIT_DRY_RUN (SPEC.md §10). */
static bool decided_alone(const struct gw_ratelimit *rl, const struct gw_rules_limit *lim)
{
    return lim->shadow || rl->dry_run;
}

/* A cached refusal of a rate: the info its headers show. */
static void from_cache(const struct gw_rl_spec *sp, const struct olc_slot *s, uint64_t mono_ms,
                       struct gw_rl_result *r)
{
    uint64_t left_ms = s->deadline_ms - mono_ms; /* > 0: the slot is live */
    memset(r, 0, sizeof(*r));
    r->info.limit = sp->limit;
    r->info.remaining = 0;
    r->info.window_s = ceil_div64(sp->window_ms, 1000);
    r->retry_after_ms = (int64_t)left_ms;
    r->retry_after_s = GW_MAX(1, (int64_t)((left_ms + 999) / 1000));
    /* t and X-RateLimit-Reset keep each algorithm's meaning (SPEC.md
     * §5.1) on every cached refusal, consistent with each other. */
    int64_t now_ms = wall_us() / 1000;
    if (sp->algorithm == GW_RL_SLIDING_WINDOW) {
        /* The end of the window the request falls in now. */
        int64_t end_ms = (now_ms / sp->window_ms + 1) * sp->window_ms;
        r->info.reset_epoch_s = ceil_div64(end_ms, 1000);
        r->info.reset_after_s = GW_MAX(1, ceil_div64(end_ms - now_ms, 1000));
    } else if (sp->algorithm == GW_RL_TOKEN_BUCKET) {
        /* The instant the bucket is full again: fixed while refused (a
         * refusal changes no state). */
        r->info.reset_epoch_s = s->reset_epoch_s;
        r->info.reset_after_s = GW_MAX(1, s->reset_epoch_s - now_ms / 1000);
    } else {
        /* Cached until the window's end, which Reset names. */
        r->info.reset_epoch_s = s->reset_epoch_s;
        r->info.reset_after_s = r->retry_after_s;
    }
}

/* Adds item i's units to the pass. Returns false, adding nothing, when the
 * pass has no room left for them (the caller runs the pass first). */
static bool pass_add(struct gw_ratelimit_worker *w, struct gw_rl_batch_item *items, size_t i,
                     uint64_t mono)
{
    const struct gw_ratelimit *rl = w->rl;
    const struct gw_rules *r = w->v.rules;
    struct gw_rl_batch_item *it = &items[i];
    struct gw_rl_decision *d = it->out;
    struct item_state *is = &w->items[i];
    memset(d, 0, sizeof(*d));
    d->verdict = GW_RL_ALLOW;
    d->rules = r;
    is->first_unit = (uint32_t)w->nunits;
    is->nunits = 0;

    size_t count = 0;
    if (match_limits(w, it, &count) != GW_RULES_LIMITED)
        return true; /* not rate limited: no headers */
    /* Bounded work per request: at most GW_RL_APPLY_MAX limits and
     * GW_RL_UNIT_OPS_MAX rates, the first in file order. */
    size_t nops = 0, napp = 0;
    for (; napp < count && napp < GW_RL_APPLY_MAX; napp++) {
        if (nops + w->v.match[napp]->rate_count > GW_RL_UNIT_OPS_MAX)
            break;
        nops += w->v.match[napp]->rate_count;
    }
    if (napp < count && mono >= w->warned_apply_ms + 10000) {
        w->warned_apply_ms = mono;
        gw_warn("rate limit: a request matched %zu limits; only the first %zu are applied", count,
                napp);
    }
    if (w->nops + nops > PASS_OPS || w->nunits + napp > PASS_OPS || w->nkeys + nops > PASS_OPS)
        return false;

    /* Identities first: a bad key header refuses the request before any
     * rate is counted. */
    unsigned char md[GW_RL_APPLY_MAX][MD_BYTES];
    char hex[GW_RL_APPLY_MAX][GW_RL_KEY_HASH_HEX];
    size_t kept = 0;
    for (size_t j = 0; j < napp; j++) {
        const struct gw_rules_limit *lim = w->v.match[j];
        ssize_t n = identity(w, lim, it);
        if (n < 0) {
            /* Which budget is the client's is ambiguous: an enforce limit
             * refuses the request (400); a shadow limit, or any limit in
             * dry run, never refuses, so it just does not apply. */
            if (!decided_alone(rl, lim)) {
                d->verdict = GW_RL_BAD_KEY;
                return true;
            }
            continue;
        }
        w->v.match[kept] = lim;
        client_digest(w, w->ident, (size_t)n, md[kept], hex[kept]);
        is->md_hash[kept] = md_hash64(md[kept]);
        kept++;
    }
    napp = kept;
    if (napp == 0)
        return true;
    d->napplied = (uint8_t)napp;
    for (size_t j = 0; j < napp; j++)
        d->applied[j].limit = (uint16_t)w->v.match[j]->index;

    /* Units: every enforce limit together, each shadow limit alone (every
     * limit alone in dry run). */
    for (int pass = 0; pass < 2; pass++) {
        bool enforce_pass = pass == 0;
        struct gw_rl_unit *u = NULL;
        for (size_t j = 0; j < napp; j++) {
            const struct gw_rules_limit *lim = w->v.match[j];
            bool alone = decided_alone(rl, lim);
            if (alone == enforce_pass)
                continue;
            if (u == NULL || alone) {
                u = &w->units[w->nunits];
                w->unit_sent[w->nunits] = true;
                w->nunits++;
                is->nunits++;
                u->first = (uint16_t)w->nops;
                u->n = 0;
                u->result = GW_RL_UNIT_UNDECIDED;
            }
            size_t base = w->v.rate_base[lim->index];
            for (size_t k = 0; k < lim->rate_count; k++) {
                size_t o = w->nops++, f = base + k;
                uint64_t h = mix64(is->md_hash[j], w->v.rate_id[f]);
                w->oref[o] = (struct op_ref){.item = (uint16_t)i,
                                             .app = (uint8_t)j,
                                             .rate = (uint8_t)k,
                                             .flat = (uint32_t)f,
                                             .ohash = h};
                w->pops[o].key = pass_key(w, hex[j], lim, &lim->rates[k], h);
                w->pops[o].spec = pass_spec(w, f);
                w->pops[o].a = w->pops[o].b = 0;
                w->oo[o].state = OP_NONE;
                struct olc_slot hit;
                if (olc_find_local(w, h, mono, &hit)) {
                    from_cache(&w->v.spec[f], &hit, mono, &w->oo[o].res);
                    w->oo[o].state = OP_CACHED;
                    w->unit_sent[u - w->units] = false;
                    u->result = GW_RL_UNIT_REFUSED;
                }
                u->n++;
            }
        }
    }
    return true;
}

/* ---- deciding a pass ------------------------------------------------------------ */

/* Runs the units that were not answered by the cache through store ops
 * (or the in-process store when ops is NULL), copying results back. */
static int pass_apply(struct gw_ratelimit_worker *w, bool memory, int64_t *now_us)
{
    size_t m = 0;
    for (size_t u = 0; u < w->nunits; u++) {
        if (!w->unit_sent[u] || w->units[u].result != GW_RL_UNIT_UNDECIDED)
            continue;
        w->send_units[m] = w->units[u];
        w->send_map[m++] = (uint16_t)u;
    }
    if (m == 0)
        return 0;
    struct gw_rl_pass p = {.mode = w->pass_mode,
                           .keys = w->kptr,
                           .key_lens = w->klen,
                           .nkeys = w->nkeys,
                           .specs = w->specs,
                           .nspecs = w->nspecs,
                           .ops = w->pops,
                           .nops = w->nops,
                           .units = w->send_units,
                           .nunits = m};
    int rc = memory ? gw_rl_memory_apply(w->rl->mem, &p, wall_us()) : w->ops->apply(w->store, &p);
    for (size_t j = 0; j < m; j++)
        w->units[w->send_map[j]].result = w->send_units[j].result;
    *now_us = p.now_us;
    return rc;
}

/* The math of op o on the state the store decided it on. */
static void op_result(struct gw_ratelimit_worker *w, size_t o, int64_t now_us)
{
    const struct gw_rl_op *op = &w->pops[o];
    const struct gw_rl_spec *sp = &w->specs[op->spec];
    struct op_out *out = &w->oo[o];
    int64_t now_ms = now_us >= 0 ? now_us / 1000 : -((-now_us + 999) / 1000);
    int64_t tat = 0;
    if (sp->algorithm == GW_RL_TOKEN_BUCKET)
        gw_rl_algo_gcra(sp->limit, sp->burst, sp->window_ms, sp->delay_ms, now_us, op->a, &tat,
                        &out->res);
    else if (sp->algorithm == GW_RL_SLIDING_WINDOW)
        gw_rl_algo_sliding_window(sp->limit, sp->window_ms, now_ms, op->a, op->b, &out->res);
    else
        gw_rl_algo_fixed_window_ms(sp->limit, sp->window_ms, now_ms, op->a, &out->res);
    out->state = OP_DECIDED;
}

/* Is rate choice a nearer to refusing than b (SPEC.md §10 "Headers")? */
static bool nearer(const struct gw_rl_result *a, const struct gw_rl_result *b, bool refusing)
{
    if (refusing)
        return a->retry_after_ms > b->retry_after_ms;
    if (a->info.remaining != b->info.remaining)
        return a->info.remaining < b->info.remaining;
    return a->info.reset_after_s > b->info.reset_after_s;
}

/* Turns the units of item i into its decision; counts and caches. */
static void finish_item(struct gw_ratelimit_worker *w, struct gw_rl_batch_item *items, size_t i,
                        uint64_t mono)
{
    struct gw_ratelimit *rl = w->rl;
    struct gw_rl_decision *d = items[i].out;
    const struct item_state *is = &w->items[i];
    if (d->verdict == GW_RL_BAD_KEY || is->nunits == 0)
        return;
    bool enforce_refused = false, any_refused = false, undecided = false, store_error = false;
    int64_t delay = 0;
    /* Per unit: refused, or not decided (the failure mode's case). */
    for (uint32_t u = is->first_unit; u < is->first_unit + is->nunits; u++) {
        const struct gw_rl_unit *un = &w->units[u];
        bool alone =
            decided_alone(rl, &w->v.rules->limits[d->applied[w->oref[un->first].app].limit]);
        if (un->result == GW_RL_UNIT_UNDECIDED || un->result == GW_RL_UNIT_ERROR) {
            /* The failure mode is for limits that can refuse: a shadow
             * limit (every limit in dry run) only goes unreported. */
            store_error = true;
            if (!alone)
                undecided = true;
            continue;
        }
        bool refused = un->result == GW_RL_UNIT_REFUSED;
        for (size_t o = un->first; o < (size_t)un->first + un->n; o++) {
            const struct op_ref *ref = &w->oref[o];
            const struct op_out *out = &w->oo[o];
            if (out->state == OP_NONE || out->res.allowed)
                continue;
            d->applied[ref->app].refused |= (uint16_t)(1u << ref->rate);
        }
        if (!refused) {
            if (!alone)
                for (size_t o = un->first; o < (size_t)un->first + un->n; o++)
                    delay = GW_MAX(delay, w->oo[o].res.delay_us);
            continue;
        }
        any_refused = true;
        if (!alone)
            enforce_refused = true;
    }
    if (store_error)
        d->store_error = true;
    if (undecided && rl->mode == GW_RL_FAIL_CLOSED)
        d->verdict = GW_RL_UNAVAILABLE;
    if (enforce_refused && d->verdict == GW_RL_ALLOW)
        d->verdict = GW_RL_LIMITED;
    d->over_limit = enforce_refused || (rl->dry_run && any_refused);
    if (d->verdict == GW_RL_ALLOW && !d->over_limit)
        d->delay_us = delay;

    /* The rate the headers describe: among the rates of the limits that
     * show in headers (not mode: shadow), the refusing one with the
     * longest wait, else the one with the least remaining. */
    const struct gw_rl_result *sel = NULL;
    const char *sel_name = NULL;
    bool refusing = d->over_limit;
    for (uint32_t u = is->first_unit; u < is->first_unit + is->nunits; u++) {
        const struct gw_rl_unit *un = &w->units[u];
        for (size_t o = un->first; o < (size_t)un->first + un->n; o++) {
            const struct op_ref *ref = &w->oref[o];
            const struct gw_rules_limit *lim = &w->v.rules->limits[d->applied[ref->app].limit];
            const struct op_out *out = &w->oo[o];
            if (lim->shadow || out->state == OP_NONE || (refusing && out->res.allowed))
                continue;
            if (un->result != GW_RL_UNIT_ALLOWED && un->result != GW_RL_UNIT_REFUSED)
                continue;
            if (sel == NULL || nearer(&out->res, sel, refusing)) {
                sel = &out->res;
                sel_name = lim->rates[ref->rate].name;
            }
        }
    }
    if (sel != NULL) {
        d->has_info = true;
        d->info = sel->info;
        d->policy = sel_name;
        if (refusing) {
            d->info.remaining = 0;
            d->retry_after_s = GW_MAX(1, sel->retry_after_s);
        }
    }

    /* Outcomes per limit, and the over-limit cache. */
    for (size_t j = 0; j < d->napplied; j++) {
        struct gw_rl_applied *ap = &d->applied[j];
        const struct gw_rules_limit *lim = &w->v.rules->limits[ap->limit];
        bool alone = decided_alone(rl, lim);
        if (ap->refused != 0)
            ap->outcome = alone ? GW_RL_OUT_SHADOW_LIMITED : GW_RL_OUT_LIMITED;
        else if (!alone && d->delay_us > 0)
            ap->outcome = GW_RL_OUT_DELAYED;
        else if (!alone && d->verdict == GW_RL_UNAVAILABLE)
            ap->outcome = GW_RL_OUT_LIMITED;
        else
            ap->outcome = GW_RL_OUT_ALLOWED;
        uint16_t slot = w->v.stat[ap->limit];
        if (slot != UINT16_MAX)
            atomic_fetch_add_explicit(&rl->stats[slot].count[ap->outcome], 1, memory_order_relaxed);
    }
    for (uint32_t u = is->first_unit; u < is->first_unit + is->nunits; u++) {
        const struct gw_rl_unit *un = &w->units[u];
        for (size_t o = un->first; o < (size_t)un->first + un->n; o++) {
            const struct op_out *out = &w->oo[o];
            if (out->state != OP_DECIDED || out->res.allowed)
                continue;
            /* Remembered until a request would pass again, measured on our
             * monotonic clock from the wait on the store's clock, so a skew
             * between this host and Redis cannot stretch or shorten it. */
            uint64_t deadline = mono + (uint64_t)GW_MAX(1, out->res.retry_after_ms);
            uint64_t h = w->oref[o].ohash;
            olc_put(rl, h, deadline, out->res.info.reset_epoch_s, mono);
            w->olc_local[h & (OLC_LOCAL_SLOTS - 1)] = (struct olc_slot){
                .hash = h,
                .deadline_ms = deadline,
                .reset_epoch_s = out->res.info.reset_epoch_s,
                .epoch = atomic_load_explicit(&rl->olc_epoch, memory_order_relaxed)};
        }
    }
}

/* Decides the pass built from items[from .. to). */
static void pass_run(struct gw_ratelimit_worker *w, struct gw_rl_batch_item *items, size_t count,
                     uint64_t mono)
{
    struct gw_ratelimit *rl = w->rl;
    int64_t now_us = 0;
    if (w->store == NULL) {
        (void)pass_apply(w, true, &now_us); /* ENOMEM: units left undecided */
    } else if (w->redis_up) {
        int rc = pass_apply(w, false, &now_us);
        if (rc != 0 && rc != -EPROTO)
            mark_down(w, mono);
        if (rc == -EPROTO && mono >= w->warned_at_ms + 1000) {
            /* At most one line per second per worker: the server is
             * answering errors to every check, the log must not flood. */
            w->warned_at_ms = mono;
            gw_warn("rate limit: redis refused the check (%s)", w->ops->last_error(w->store));
        }
    }
    /* Units Redis left undecided (or refused with a wrong-type key): the
     * failure mode decides; local asks the in-process store. */
    bool any_undecided = false;
    for (size_t u = 0; u < w->nunits; u++)
        if (w->unit_sent[u] &&
            (w->units[u].result == GW_RL_UNIT_UNDECIDED || w->units[u].result == GW_RL_UNIT_ERROR))
            any_undecided = true;
    if (any_undecided && w->store != NULL && rl->mode == GW_RL_FAIL_LOCAL) {
        bool local[PASS_OPS];
        for (size_t u = 0; u < w->nunits; u++) {
            if (w->units[u].result == GW_RL_UNIT_ERROR)
                w->units[u].result = GW_RL_UNIT_UNDECIDED;
            local[u] = w->unit_sent[u] && w->units[u].result == GW_RL_UNIT_UNDECIDED;
        }
        int64_t local_us = 0;
        (void)pass_apply(w, true, &local_us);
        if (now_us == 0)
            now_us = local_us;
        for (size_t i = 0; i < count; i++) {
            const struct item_state *is = &w->items[i];
            for (uint32_t u = is->first_unit; u < is->first_unit + is->nunits; u++)
                if (local[u])
                    items[i].out->store_error = true; /* Redis did not answer it */
        }
    }
    for (size_t u = 0; u < w->nunits; u++) {
        const struct gw_rl_unit *un = &w->units[u];
        if (!w->unit_sent[u] ||
            (un->result != GW_RL_UNIT_ALLOWED && un->result != GW_RL_UNIT_REFUSED))
            continue;
        for (size_t o = un->first; o < (size_t)un->first + un->n; o++)
            op_result(w, o, now_us);
    }
    for (size_t i = 0; i < count; i++)
        finish_item(w, items, i, mono);
}

static void check_batch(struct gw_ratelimit_worker *w, struct gw_rl_batch_item *items, size_t n)
{
    version_sync(w);
    uint64_t mono = gw_now_ms();
    size_t from = 0, k = 0; /* the pass holds items[from .. from + k) */
    pass_reset(w);
    while (from + k < n) {
        if (k < PASS && pass_add(w, items + from, k, mono)) {
            k++;
            continue;
        }
        if (k == 0) {
            /* Cannot happen: one request (<= GW_RL_UNIT_OPS_MAX ops) always
             * fits an empty pass. Let it through rather than spin. */
            assert(0);
            from++;
            continue;
        }
        pass_run(w, items + from, k, mono);
        pass_reset(w);
        from += k;
        k = 0;
    }
    if (k > 0)
        pass_run(w, items + from, k, mono);
}

/* ---- public API: inspect and forget one client (admin, SPEC.md §11) ------------ */

/* The identity of limit lim for an operator's client key: the key's
 * '|'-separated parts go to the limit's ip and header parts in order
 * (global parts take none). -EINVAL when the parts do not fit. */
static ssize_t admin_identity(const struct gw_rules_limit *lim, const char *key, size_t len,
                              char *id)
{
    size_t n = 0, pos = 0;
    bool first_part = true;
    for (size_t k = 0; k < lim->key_count; k++) {
        const struct gw_rules_key *part = &lim->keys[k];
        if (k > 0)
            ident_put(id, &n, "|", 1);
        if (part->kind == GW_RULES_KEY_GLOBAL) {
            ident_put(id, &n, "global", 6);
            continue;
        }
        if (!first_part) {
            if (pos >= len || key[pos] != '|')
                return -EINVAL;
            pos++;
        }
        first_part = false;
        size_t end = pos;
        while (end < len && key[end] != '|')
            end++;
        if (part->kind == GW_RULES_KEY_IP) {
            uint8_t bin[16];
            char text[64];
            if (!gw_net_parse_addr(key + pos, end - pos, bin, NULL))
                return -EINVAL;
            gw_net_addr_text(bin, text, sizeof(text));
            ident_put(id, &n, "ip:", 3);
            ident_put(id, &n, text, strlen(text));
        } else {
            if (end == pos)
                return -EINVAL;
            ident_put(id, &n, "header:", 7);
            ident_put(id, &n, part->header, strlen(part->header));
            ident_put(id, &n, "=", 1);
            ident_put_value(id, &n, key + pos, end - pos);
        }
        pos = end;
    }
    if (pos != len && !(first_part && len == 0))
        return -EINVAL;
    return (ssize_t)n;
}

static const struct gw_rules_limit *find_limit(const struct gw_rules *r, const char *name)
{
    for (size_t i = 0; i < r->limit_count; i++)
        if (!r->limits[i].allow && strcmp(r->limits[i].name, name) == 0)
            return &r->limits[i];
    return NULL;
}

/* One unit per rate of lim for identity digest md, run in mode. Returns
 * the store's clock, or a -errno. */
static int inspect_pass(struct gw_ratelimit_worker *w, const struct gw_rules_limit *lim,
                        const unsigned char md[MD_BYTES], enum gw_rl_pass_mode mode,
                        int64_t *now_us)
{
    char hex[GW_RL_KEY_HASH_HEX];
    to_hex(md, hex);
    pass_reset(w);
    size_t base = w->v.rate_base[lim->index];
    uint64_t mh = md_hash64(md);
    for (size_t k = 0; k < lim->rate_count; k++) {
        size_t o = w->nops++;
        w->pops[o].key = pass_key(w, hex, lim, &lim->rates[k], mix64(mh, w->v.rate_id[base + k]));
        w->pops[o].spec = pass_spec(w, base + k);
        w->units[w->nunits] = (struct gw_rl_unit){.first = (uint16_t)o, .n = 1};
        w->unit_sent[w->nunits++] = true;
    }
    w->pass_mode = mode;
    int rc;
    if (w->store == NULL)
        rc = pass_apply(w, true, now_us);
    else if (w->redis_up)
        rc = pass_apply(w, false, now_us);
    else
        rc = -ENOTCONN;
    w->pass_mode = GW_RL_PASS_DECIDE;
    if (rc == 0)
        for (size_t u = 0; u < w->nunits; u++)
            if (w->units[u].result == GW_RL_UNIT_UNDECIDED ||
                w->units[u].result == GW_RL_UNIT_ERROR)
                rc = -EPROTO;
    if (rc != 0 && rc != -EPROTO && rc != -ENOTCONN && w->store != NULL)
        mark_down(w, gw_now_ms());
    return rc;
}

/* Drops the over-limit cache entries of every rate of lim for md. */
static void forget_cached(struct gw_ratelimit *rl, const struct gw_rules_limit *lim,
                          const unsigned char md[MD_BYTES])
{
    uint64_t mh = md_hash64(md);
    for (size_t k = 0; k < lim->rate_count; k++) {
        uint64_t h = mix64(mh, rate_id_of(lim, &lim->rates[k]));
        struct olc_shard *sh = olc_shard_of(rl, h);
        pthread_mutex_lock(&sh->mu);
        for (unsigned i = 0; i < OLC_PROBE; i++) {
            struct olc_slot *sl = &sh->slots[(h + i) & (OLC_SHARD_SLOTS - 1)];
            if (sl->hash == h)
                sl->deadline_ms = 0;
        }
        pthread_mutex_unlock(&sh->mu);
    }
    /* Every worker's front drops what it copied (they refill from the
     * shared table). */
    atomic_fetch_add_explicit(&rl->olc_epoch, 1, memory_order_release);
}

/* The limit named limit in this worker's rules and the digest of the
 * identity an operator's client key gives it. 0, -ENOENT or -EINVAL. */
static int admin_client(struct gw_ratelimit_worker *w, const char *limit, const char *key,
                        size_t key_len, const struct gw_rules_limit **lim,
                        unsigned char md[MD_BYTES])
{
    version_sync(w);
    if ((*lim = find_limit(w->v.rules, limit)) == NULL)
        return -ENOENT;
    ssize_t idn = admin_identity(*lim, key, key_len, w->ident);
    if (idn < 0)
        return -EINVAL;
    char hex[GW_RL_KEY_HASH_HEX];
    client_digest(w, w->ident, (size_t)idn, md, hex);
    return 0;
}

int gw_ratelimit_peek(struct gw_ratelimit_worker *w, const char *limit, const char *key,
                      size_t key_len, struct gw_rl_rate_state *out, size_t cap, size_t *n)
{
    unsigned char md[MD_BYTES];
    const struct gw_rules_limit *lim = NULL;
    int rc0 = admin_client(w, limit, key, key_len, &lim, md);
    if (rc0 != 0)
        return rc0;
    int64_t now_us = 0;
    int rc = inspect_pass(w, lim, md, GW_RL_PASS_PEEK, &now_us);
    if (rc != 0)
        return rc;
    *n = 0;
    for (size_t o = 0; o < w->nops && *n < cap; o++) {
        op_result(w, o, now_us);
        const struct gw_rl_result *r = &w->oo[o].res;
        struct gw_rl_rate_state *st = &out[(*n)++];
        st->policy = lim->rates[o].name;
        st->limit = r->info.limit;
        st->window_s = r->info.window_s;
        /* Nothing was consumed: what one more request would have left,
         * plus that request. */
        st->remaining = r->allowed ? r->info.remaining + 1 : 0;
        st->reset_s = r->allowed ? r->info.reset_after_s : GW_MAX(1, r->retry_after_s);
    }
    return 0;
}

int gw_ratelimit_forget(struct gw_ratelimit_worker *w, const char *limit, const char *key,
                        size_t key_len, int64_t *deleted)
{
    unsigned char md[MD_BYTES];
    const struct gw_rules_limit *lim = NULL;
    int rc0 = admin_client(w, limit, key, key_len, &lim, md);
    if (rc0 != 0)
        return rc0;
    forget_cached(w->rl, lim, md);
    int64_t now_us = 0;
    int rc = inspect_pass(w, lim, md, GW_RL_PASS_DELETE, &now_us);
    if (rc != 0)
        return rc;
    *deleted = 0;
    for (size_t o = 0; o < w->nops; o++)
        *deleted += w->pops[o].a;
    return 0;
}

int gw_ratelimit_forget_cached(struct gw_ratelimit *rl, const char *limit, const char *key,
                               size_t key_len)
{
    struct gw_rules *r = gw_rules_holder_get(rl->holder);
    const struct gw_rules_limit *lim = find_limit(r, limit);
    int rc = -ENOENT;
    if (lim != NULL) {
        char *id = malloc(IDENT_MAX);
        ssize_t idn = id != NULL ? admin_identity(lim, key, key_len, id) : -ENOMEM;
        rc = idn < 0 ? (int)idn : 0;
        if (rc == 0) {
            unsigned char md[SHA256_DIGEST_LENGTH];
            SHA256((const unsigned char *)id, (size_t)idn, md);
            forget_cached(rl, lim, md);
        }
        free(id);
    }
    gw_rules_put(r);
    return rc;
}

/* ---- public API: checks and headers ------------------------------------------- */

void gw_ratelimit_check(struct gw_ratelimit_worker *w, const char *key, size_t key_len,
                        struct gw_rl_decision *out)
{
    struct gw_rl_batch_item item = {.key = key, .key_len = key_len, .out = out};
    check_batch(w, &item, 1);
}

void gw_ratelimit_check_batch(struct gw_ratelimit_worker *w, struct gw_rl_batch_item *items,
                              size_t n)
{
    check_batch(w, items, n);
}

int gw_ratelimit_write_headers(const struct gw_rl_decision *d, struct gw_buf *out)
{
    if (!d->has_info || d->rules == NULL)
        return 0;
    /* The members were rendered once per load (gw_rules_limit.policy_items):
     * here they are only joined. */
    char list[2048];
    size_t n = 0;
    for (size_t j = 0; j < d->napplied; j++) {
        const struct gw_rules_limit *lim = &d->rules->limits[d->applied[j].limit];
        if (lim->shadow || lim->policy_items_len == 0)
            continue;
        size_t need = lim->policy_items_len + (n > 0 ? 2 : 0);
        if (n + need > sizeof(list))
            break; /* a field this long is cut at a member */
        if (n > 0) {
            list[n++] = ',';
            list[n++] = ' ';
        }
        memcpy(list + n, lim->policy_items, lim->policy_items_len);
        n += lim->policy_items_len;
    }
    return gw_response_write_ratelimit_headers(out, &d->info, d->policy, list, n);
}

/* The names of d's refusing rates, comma-separated, file order, into out
 * (cap bytes, cut at a name); shadow limits too when with_shadow. */
static size_t refusing_names(const struct gw_rl_decision *d, bool with_shadow, char *out,
                             size_t cap)
{
    size_t n = 0;
    if (cap == 0)
        return 0;
    out[0] = '\0';
    for (size_t j = 0; d->rules != NULL && j < d->napplied; j++) {
        const struct gw_rl_applied *ap = &d->applied[j];
        const struct gw_rules_limit *lim = &d->rules->limits[ap->limit];
        if (ap->refused == 0 || (lim->shadow && !with_shadow))
            continue;
        for (size_t k = 0; k < lim->rate_count; k++) {
            if (!(ap->refused & (1u << k)))
                continue;
            size_t len = strlen(lim->rates[k].name);
            if (n + len + 2 > cap)
                return n;
            if (n > 0)
                out[n++] = ',';
            memcpy(out + n, lim->rates[k].name, len);
            n += len;
            out[n] = '\0';
        }
    }
    return n;
}

size_t gw_ratelimit_violated(const struct gw_rl_decision *d, char *out, size_t cap)
{
    return refusing_names(d, false, out, cap);
}

size_t gw_ratelimit_policy_names(const struct gw_rl_decision *d, char *out, size_t cap)
{
    return refusing_names(d, true, out, cap);
}

enum gw_rl_store_state gw_ratelimit_worker_ping(struct gw_ratelimit_worker *w)
{
    if (w->store == NULL)
        return GW_RL_STORE_DISABLED;
    if (!w->redis_up)
        return GW_RL_STORE_DISCONNECTED;
    int rc = w->ops->ping(w->store);
    if (rc == 0)
        return GW_RL_STORE_CONNECTED;
    if (rc != -EPROTO)
        mark_down(w, gw_now_ms());
    return GW_RL_STORE_DISCONNECTED;
}

uint64_t gw_ratelimit_worker_tick(struct gw_ratelimit_worker *w, uint64_t now_ms)
{
    if (w->store == NULL)
        return TICK_IDLE_MS;
    if (w->redis_up) {
        /* A worker without traffic would otherwise learn of a Redis
         * restart only from the next request's failed check. */
        if (w->ops->probe(w->store) == 0)
            return w->ops->probe_in_ms != NULL
                       ? GW_MAX(GW_MIN(w->ops->probe_in_ms(w->store), (uint64_t)TICK_IDLE_MS), 1)
                       : TICK_IDLE_MS;
        mark_down(w, now_ms);
        return BACKOFF_MIN_MS;
    }
    int rc;
    if (w->connecting) {
        rc = w->ops->connect_poll(w->store, now_ms);
    } else {
        if (now_ms < w->retry_at_ms)
            return w->retry_at_ms - now_ms;
        rc = w->ops->connect_start(w->store, now_ms);
    }
    if (rc == -EINPROGRESS) {
        /* Nothing here blocks: come back soon to move the attempt on. */
        w->connecting = true;
        return CONNECT_POLL_MS;
    }
    w->connecting = false;
    if (rc == 0) {
        gw_info("rate limit: redis connection restored");
        w->redis_up = true;
        w->backoff_ms = BACKOFF_MIN_MS;
        return TICK_IDLE_MS;
    }
    w->backoff_ms = GW_MIN(w->backoff_ms * 2, (uint64_t)BACKOFF_MAX_MS);
    w->retry_at_ms = now_ms + w->backoff_ms;
    gw_debug("rate limit: redis reconnect failed (%s), next try in %llu ms",
             w->ops->last_error(w->store), (unsigned long long)w->backoff_ms);
    return w->backoff_ms;
}

bool gw_ratelimit_worker_redis_up(const struct gw_ratelimit_worker *w)
{
    return w->store != NULL && w->redis_up;
}

/* ---- the worker's batch of pending checks ---------------------------------------- */

enum { WAITER_IDLE = 0, WAITER_QUEUED, WAITER_DECIDING };

struct gw_rl_batch {
    struct gw_ratelimit_worker *w;
    struct gw_rl_waiter *head, *tail; /* queued, in arrival order */
    size_t len;                       /* waiters queued */
    bool deferred;                    /* the batch waited one non-blocking poll already */
    struct gw_rl_batch_item items[GW_RL_BATCH_MAX];
    struct gw_rl_waiter *deciding[GW_RL_BATCH_MAX];
};

int gw_ratelimit_batch_create(struct gw_rl_batch **out, struct gw_ratelimit_worker *w)
{
    struct gw_rl_batch *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return -ENOMEM;
    b->w = w;
    *out = b;
    return 0;
}

void gw_ratelimit_batch_destroy(struct gw_rl_batch *b)
{
    free(b);
}

void gw_ratelimit_batch_enqueue(struct gw_rl_batch *b, struct gw_rl_waiter *wt)
{
    wt->state = WAITER_QUEUED;
    wt->next = NULL;
    wt->prev = b->tail;
    if (b->tail)
        b->tail->next = wt;
    else
        b->head = wt;
    b->tail = wt;
    b->len++;
}

static void unlink_waiter(struct gw_rl_batch *b, struct gw_rl_waiter *wt)
{
    if (wt->prev)
        wt->prev->next = wt->next;
    else
        b->head = wt->next;
    if (wt->next)
        wt->next->prev = wt->prev;
    else
        b->tail = wt->prev;
    wt->prev = wt->next = NULL;
    b->len--;
}

void gw_ratelimit_batch_cancel(struct gw_rl_batch *b, struct gw_rl_waiter *wt)
{
    if (wt->state == WAITER_QUEUED)
        unlink_waiter(b, wt);
    wt->state = WAITER_IDLE; /* DECIDING: its done is skipped */
}

bool gw_ratelimit_batch_run(struct gw_rl_batch *b)
{
    if (b->head == NULL) {
        b->deferred = false;
        return false;
    }
    /* Before a Redis round trip, look once more, without sleeping, for
     * requests that became ready meanwhile: they join the same batch (one
     * epoll_wait(0) against a round trip; at 2 workers x 25 connections it
     * cut round trips per request by about a quarter). */
    if (!b->deferred && gw_ratelimit_worker_redis_up(b->w)) {
        b->deferred = true;
        return true;
    }
    b->deferred = false;
    /* Bounded: each round can only add requests that were pipelined behind
     * the ones just answered. */
    for (int round = 0; round < 16 && b->head; round++) {
        size_t left = b->len; /* those queued before this round */
        while (left > 0 && b->head) {
            size_t n = 0;
            while (b->head && n < GW_RL_BATCH_MAX && left > 0) {
                struct gw_rl_waiter *wt = b->head;
                left--;
                unlink_waiter(b, wt);
                wt->state = WAITER_DECIDING;
                b->deciding[n] = wt;
                b->items[n] = (struct gw_rl_batch_item){wt->key, wt->key_len, wt->out, wt->req};
                n++;
            }
            gw_ratelimit_check_batch(b->w, b->items, n);
            for (size_t i = 0; i < n; i++) {
                struct gw_rl_waiter *wt = b->deciding[i];
                if (wt->state != WAITER_DECIDING)
                    continue; /* cancelled by an earlier done */
                wt->state = WAITER_IDLE;
                wt->done(wt);
            }
        }
    }
    return b->head != NULL;
}
