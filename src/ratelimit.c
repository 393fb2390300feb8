/*
 * The rate limiter (SPEC.md §5): turns a client key into a store key,
 * answers repeat offenders from the process-wide over-limit cache (behind a
 * small lock-free per-worker front), asks the
 * store (Redis per worker, or the shared in-process store) otherwise, and
 * applies RATE_LIMIT_FAILURE_MODE and RATE_LIMIT_DRY_RUN. Checks come one
 * by one or in batches; the items of a batch are grouped by client, each
 * client's k requests are counted by one store call (INCRBY k) and handed
 * the numbers n-k+1 .. n in batch order, and the groups go to Redis in one
 * script call per PASS items (one round trip). Store keys are SHA-256 of the client key, kept
 * in a small per-worker cache (a connection sends many requests with one
 * key). A worker whose Redis failed stops asking it and reconnects from its
 * tick, without blocking, with a doubling backoff (100 ms to 2 s).
 *
 * Threads: struct gw_ratelimit is immutable after create except for the
 * over-limit cache, whose shards each have a mutex (a slot is only read or
 * written under its shard's lock), and the memory store, which locks itself;
 * a struct gw_ratelimit_worker belongs to one worker thread and is never
 * locked.
 */
#include "gw/ratelimit.h"

#include "gw/log.h"
#include "gw/rl_algo.h"
#include "ratelimit_int.h"

#include <assert.h>
#include <errno.h>
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
#define CONNECT_POLL_MS 5   /* tick period while a reconnect is in progress */
#define PASS            256 /* items grouped together; their clients share one script call */
#define SKC_SLOTS       128 /* per-worker cache of client key -> digest (power of two) */
#define SKC_KEY_MAX     64  /* longer client keys are hashed on every request */
#define MD_BYTES        16  /* digest bytes in a store key (GW_RL_KEY_HASH_HEX / 2) */

/* One client known to be over its limit until its window ends. */
struct olc_slot {
    uint64_t hash;         /* first 8 bytes of the client's SHA-256 */
    uint64_t deadline_ms;  /* gw_now_ms() at which the window ends; 0 = empty */
    int64_t reset_epoch_s; /* window end on the store's clock, for headers */
};

/* A shard of the over-limit cache: every worker of the process sees a
 * client refused by any of them (SPEC.md §5 "remembered in-process"). */
struct olc_shard {
    pthread_mutex_t mu;
    struct olc_slot slots[OLC_SHARD_SLOTS];
};

/* A cached store-key digest of one client key (the worker's own). */
struct skc_slot {
    uint64_t khash;             /* gw_hash64(seed, client key) */
    uint32_t len;               /* client key bytes; UINT32_MAX = empty slot */
    unsigned char md[MD_BYTES]; /* first bytes of SHA-256(client key) */
    char key[SKC_KEY_MAX];      /* the client key */
};

/* The items of one client in a pass: counted by one store call. Items are
 * chained first .. last in batch order through next_item[]. */
struct group {
    const char *key; /* client key (borrowed from its first item) */
    size_t key_len;  /* bytes */
    uint64_t khash;  /* gw_hash64(seed, key) */
    uint64_t hash;   /* first 8 digest bytes: the over-limit cache's key */
    size_t skey_len; /* store key at keys + index * key_cap */
    uint16_t first;  /* first item */
    uint16_t last;   /* last item */
    uint16_t k;      /* items */
};

struct gw_ratelimit {
    const struct gw_config *cfg;   /* borrowed */
    size_t prefix_len;             /* strlen(RATE_LIMIT_KEY_PREFIX) */
    uint64_t seed;                 /* gw_hash64 seed of the per-worker tables, random per process */
    EVP_MD *sha256;                /* fetched once (NULL: one-shot SHA256()); shared */
    int64_t limit;                 /* RATE_LIMIT_REQUESTS */
    int64_t window_s;              /* RATE_LIMIT_WINDOW_SECONDS */
    enum gw_rl_failure_mode mode;  /* RATE_LIMIT_FAILURE_MODE */
    bool dry_run;                  /* RATE_LIMIT_DRY_RUN */
    bool use_redis;                /* REDIS_URL set */
    struct gw_redis_target target; /* parsed REDIS_URL (the configuration's parser) */
    struct gw_rl_memory *mem;      /* without Redis, or for failure mode local; else NULL */
    _Atomic int workers;           /* live worker handles */
    struct olc_shard *olc;         /* OLC_SHARDS shards, heap */
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
    char *keys;                        /* store-key scratch: PASS keys of key_cap bytes */
    size_t key_cap;
    EVP_MD_CTX *md_ctx; /* reused SHA-256 context; NULL: one-shot SHA256() */
    struct skc_slot skc[SKC_SLOTS];
    /* Clients this worker saw over their limit, direct-mapped on hash: a
     * flood from one client is refused without taking a shard lock that
     * every worker contends for. An entry only ever says "over the limit
     * until deadline_ms", as the shared cache does, so it needs no
     * invalidation. */
    struct olc_slot olc_local[OLC_LOCAL_SLOTS];
    /* One pass (PASS items) of gw_ratelimit_check_batch: */
    struct group groups[PASS];
    uint16_t next_item[PASS]; /* next item of the same group */
    uint16_t table[2 * PASS]; /* open addressing: group index + 1, 0 = empty */
    uint16_t pending[PASS];   /* groups sent to Redis */
    const char *pkeys[PASS];  /* their store keys ... */
    size_t pklens[PASS];
    int64_t incrs[PASS];  /* ... requests ... */
    int64_t counts[PASS]; /* ... and the answers */
    int64_t store_ms[PASS];
    int rcs[PASS];
};

/* ---- store keys ------------------------------------------------------------ */

/* "<prefix>:{<hex of md>}" into out; its length, or -ENOSPC. */
static int format_store_key(const char *prefix, size_t plen, const unsigned char md[MD_BYTES],
                            char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    size_t need = plen + 3 + GW_RL_KEY_HASH_HEX; /* ":{" hex "}" */
    if (need + 1 > cap || need > INT32_MAX)
        return -ENOSPC;
    char *p = out;
    memcpy(p, prefix, plen);
    p += plen;
    *p++ = ':';
    *p++ = '{';
    for (int i = 0; i < MD_BYTES; i++) {
        *p++ = hex[md[i] >> 4];
        *p++ = hex[md[i] & 15];
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

/* The store-key digest of a client key, from the worker's cache when it
 * holds the key (direct-mapped on khash; the key bytes are compared). */
static void client_digest(struct gw_ratelimit_worker *w, const char *key, size_t len,
                          uint64_t khash, unsigned char out[MD_BYTES])
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    if (len > SKC_KEY_MAX) {
        sha256(w, key, len, md);
        memcpy(out, md, MD_BYTES);
        return;
    }
    struct skc_slot *s = &w->skc[khash & (SKC_SLOTS - 1)];
    if (s->len == len && s->khash == khash && memcmp(s->key, key, len) == 0) {
        memcpy(out, s->md, MD_BYTES);
        return;
    }
    sha256(w, key, len, md);
    s->khash = khash;
    s->len = (uint32_t)len;
    memcpy(s->key, key, len);
    memcpy(s->md, md, MD_BYTES);
    memcpy(out, md, MD_BYTES);
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
    if (l->hash == hash && l->deadline_ms > now_ms) {
        *out = *l;
        return true;
    }
    if (!olc_find(w->rl, hash, now_ms, out))
        return false;
    *l = *out;
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

/* ---- clocks and decisions -------------------------------------------------- */

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

static void limited(const struct gw_ratelimit *rl, struct gw_rl_decision *out)
{
    out->over_limit = true;
    out->verdict = rl->dry_run ? GW_RL_ALLOW : GW_RL_LIMITED;
}

/* The k items of group g were counted by a store whose clock read store_ms,
 * the last as request n: they are requests n-k+1 .. n, in batch order. */
static void decide_group(struct gw_ratelimit_worker *w, const struct group *g,
                         struct gw_rl_batch_item *items, int64_t n, int64_t store_ms,
                         uint64_t mono_ms)
{
    const struct gw_ratelimit *rl = w->rl;
    int64_t now_s = floor_div(store_ms, 1000);
    int64_t num = n - g->k + 1;
    const struct gw_rl_decision *over = NULL;
    for (size_t c = 0, i = g->first; c < g->k; c++, i = w->next_item[i]) {
        struct gw_rl_decision *out = items[i].out;
        out->has_info = true;
        if (gw_rl_algo_fixed_window(num++, rl->limit, now_s, rl->window_s, &out->info)) {
            out->verdict = GW_RL_ALLOW;
        } else {
            limited(rl, out);
            over = out;
        }
    }
    if (over == NULL)
        return;
    /* Remember the client until its window ends. The deadline is measured
     * on our monotonic clock from the time left on the store's clock, so a
     * skew between this host and Redis cannot stretch or shorten it. */
    int64_t left_ms = over->info.reset_epoch_s * 1000 - store_ms;
    if (left_ms < 1)
        left_ms = 1;
    uint64_t deadline_ms = mono_ms + (uint64_t)left_ms;
    olc_put(rl, g->hash, deadline_ms, over->info.reset_epoch_s, mono_ms);
    w->olc_local[g->hash & (OLC_LOCAL_SLOTS - 1)] = (struct olc_slot){
        .hash = g->hash, .deadline_ms = deadline_ms, .reset_epoch_s = over->info.reset_epoch_s};
}

static void from_cache(const struct gw_ratelimit *rl, const struct olc_slot *s, uint64_t mono_ms,
                       struct gw_rl_decision *out)
{
    uint64_t left_ms = s->deadline_ms - mono_ms; /* > 0: the slot is live */
    out->has_info = true;
    out->info.limit = rl->limit;
    out->info.remaining = 0;
    out->info.reset_epoch_s = s->reset_epoch_s;
    out->info.reset_after_s = (int64_t)((left_ms + 999) / 1000);
    out->info.window_s = rl->window_s;
    limited(rl, out);
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

/* ---- public API -------------------------------------------------------------- */

int gw_ratelimit_create(struct gw_ratelimit **out, const struct gw_config *cfg)
{
    if (cfg->rate_limit_window_s < 1 || cfg->rate_limit_requests < 0 ||
        cfg->rate_limit_key_prefix == NULL)
        return -EINVAL;
    if (cfg->rate_limit_algorithm != GW_RL_FIXED_WINDOW)
        return -ENOTSUP;

    struct gw_ratelimit *rl = calloc(1, sizeof(*rl));
    if (rl == NULL)
        return -ENOMEM;
    rl->cfg = cfg;
    rl->limit = cfg->rate_limit_requests;
    rl->window_s = cfg->rate_limit_window_s;
    rl->mode = cfg->rate_limit_failure_mode;
    rl->dry_run = cfg->rate_limit_dry_run;
    rl->use_redis = cfg->redis_url != NULL && cfg->redis_url[0] != '\0';
    rl->prefix_len = strlen(cfg->rate_limit_key_prefix);
    if (getrandom(&rl->seed, sizeof(rl->seed), GRND_NONBLOCK) != (ssize_t)sizeof(rl->seed))
        rl->seed = (uint64_t)wall_ms() ^ (uint64_t)(uintptr_t)rl;
    /* Fetched once: SHA256() would look the digest up on every call. */
    rl->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    atomic_init(&rl->workers, 0);

    int rc = 0;
    rl->olc = calloc(OLC_SHARDS, sizeof(*rl->olc));
    if (rl->olc == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    for (int i = 0; i < OLC_SHARDS; i++)
        pthread_mutex_init(&rl->olc[i].mu, NULL);
    if (rl->use_redis &&
        (rc = gw_config_parse_redis_url(cfg->redis_url, &rl->target, NULL, 0)) != 0)
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
    free(rl->olc);
    free(rl);
}

int gw_ratelimit_worker_create(struct gw_ratelimit_worker **out, struct gw_ratelimit *rl)
{
    struct gw_ratelimit_worker *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -ENOMEM;
    w->rl = rl;
    w->key_cap = rl->prefix_len + GW_RL_KEY_HASH_HEX + 4;
    if ((w->keys = malloc(w->key_cap * PASS)) == NULL)
        goto fail;
    for (size_t i = 0; i < SKC_SLOTS; i++)
        w->skc[i].len = UINT32_MAX;
    /* NULL (no digest, or no memory) falls back to one-shot SHA256(). */
    w->md_ctx = rl->sha256 != NULL ? EVP_MD_CTX_new() : NULL;
    if (rl->use_redis) {
        struct gw_rl_redis *r = NULL;
        if (gw_rl_redis_create(&r, &rl->target, rl->cfg->redis_timeout_ms) != 0)
            goto fail;
        w->store = r;
        w->ops = &gw_rl_redis_ops;
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
    EVP_MD_CTX_free(w->md_ctx);
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
    EVP_MD_CTX_free(w->md_ctx);
    free(w->keys);
    free(w);
}

static const char *group_skey(const struct gw_ratelimit_worker *w, const struct group *g)
{
    return w->keys + (size_t)(g - w->groups) * w->key_cap;
}

/* The in-process store decides (no Redis, or failure mode local): the
 * group's k requests in one increment. */
static void memory_decide(struct gw_ratelimit_worker *w, const struct group *g,
                          struct gw_rl_batch_item *items, uint64_t mono)
{
    const struct gw_ratelimit *rl = w->rl;
    int64_t n = 0, now_ms = wall_ms();
    int rc = gw_rl_memory_ops.check(rl->mem, group_skey(w, g), g->skey_len, g->k, rl->limit,
                                    rl->window_s, &n, &now_ms);
    if (rc == 0) {
        decide_group(w, g, items, n, now_ms, mono);
        return;
    }
    /* Only when a shard cannot allocate its first entries. */
    for (size_t c = 0, i = g->first; c < g->k; c++, i = w->next_item[i]) {
        items[i].out->store_error = true;
        if (rl->mode == GW_RL_FAIL_CLOSED)
            items[i].out->verdict = GW_RL_UNAVAILABLE;
    }
}

/* Redis did not count this group: RATE_LIMIT_FAILURE_MODE decides. */
static void store_failed(struct gw_ratelimit_worker *w, const struct group *g,
                         struct gw_rl_batch_item *items, uint64_t mono)
{
    for (size_t c = 0, i = g->first; c < g->k; c++, i = w->next_item[i]) {
        items[i].out->store_error = true;
        if (w->rl->mode == GW_RL_FAIL_CLOSED)
            items[i].out->verdict = GW_RL_UNAVAILABLE;
        /* open: ALLOW, no info: nothing trustworthy to report */
    }
    if (w->rl->mode == GW_RL_FAIL_LOCAL)
        memory_decide(w, g, items, mono);
}

/* Clears the decisions and groups the items by client key (n <= PASS):
 * returns the number of groups, each with its store key built. */
static size_t group_items(struct gw_ratelimit_worker *w, struct gw_rl_batch_item *items, size_t n)
{
    const struct gw_ratelimit *rl = w->rl;
    size_t tsize = 4;
    while (tsize < 2 * n)
        tsize <<= 1;
    memset(w->table, 0, tsize * sizeof(w->table[0]));
    size_t ng = 0;
    for (size_t i = 0; i < n; i++) {
        struct gw_rl_decision *out = items[i].out;
        memset(out, 0, sizeof(*out));
        out->verdict = GW_RL_ALLOW;
        const char *key = items[i].key;
        size_t len = items[i].key_len;
        uint64_t kh = gw_hash64(rl->seed, key, len);
        size_t t = kh & (tsize - 1);
        for (; w->table[t] != 0; t = (t + 1) & (tsize - 1)) {
            struct group *g = &w->groups[w->table[t] - 1];
            if (g->khash == kh && g->key_len == len && memcmp(g->key, key, len) == 0)
                break;
        }
        if (w->table[t] != 0) {
            struct group *g = &w->groups[w->table[t] - 1];
            w->next_item[g->last] = (uint16_t)i;
            g->last = (uint16_t)i;
            g->k++;
            continue;
        }
        struct group *g = &w->groups[ng];
        w->table[t] = (uint16_t)(++ng);
        g->key = key;
        g->key_len = len;
        g->khash = kh;
        g->first = g->last = (uint16_t)i;
        g->k = 1;
        unsigned char md[MD_BYTES];
        client_digest(w, key, len, kh, md);
        g->hash = md_hash64(md);
        int klen = format_store_key(rl->cfg->rate_limit_key_prefix, rl->prefix_len, md,
                                    w->keys + (ng - 1) * w->key_cap, w->key_cap);
        assert(klen > 0); /* key_cap was sized for this prefix */
        g->skey_len = (size_t)klen;
    }
    return ng;
}

/* Up to PASS checks: grouped by client; per group the over-limit cache
 * first, then one script call to Redis for all the groups left (or the
 * in-process store). */
static void check_pass(struct gw_ratelimit_worker *w, struct gw_rl_batch_item *items, size_t n)
{
    const struct gw_ratelimit *rl = w->rl;
    uint64_t mono = gw_now_ms();
    size_t ng = group_items(w, items, n), m = 0;

    for (size_t gi = 0; gi < ng; gi++) {
        const struct group *g = &w->groups[gi];
        struct olc_slot hit;
        if (olc_find_local(w, g->hash, mono, &hit)) {
            struct gw_rl_decision *first = items[g->first].out;
            from_cache(rl, &hit, mono, first);
            for (size_t c = 1, i = w->next_item[g->first]; c < g->k; c++, i = w->next_item[i])
                *items[i].out = *first;
        } else if (w->store == NULL) {
            memory_decide(w, g, items, mono);
        } else if (!w->redis_up) {
            store_failed(w, g, items, mono);
        } else {
            w->pending[m] = (uint16_t)gi;
            w->pkeys[m] = group_skey(w, g);
            w->pklens[m] = g->skey_len;
            w->incrs[m] = g->k;
            m++;
        }
    }
    if (m == 0)
        return;

    int rc = w->ops->check_many(w->store, w->pkeys, w->pklens, w->incrs, m, rl->window_s, w->counts,
                                w->store_ms, w->rcs);
    if (rc != 0)
        mark_down(w, mono);
    for (size_t j = 0; j < m; j++) {
        const struct group *g = &w->groups[w->pending[j]];
        if (w->rcs[j] == 0) {
            decide_group(w, g, items, w->counts[j], w->store_ms[j], mono);
            continue;
        }
        if (w->rcs[j] == -EPROTO && mono >= w->warned_at_ms + 1000) {
            /* At most one line per second per worker: the server is
             * answering errors to every check, the log must not flood. */
            w->warned_at_ms = mono;
            gw_warn("rate limit: redis refused the check (%s)", w->ops->last_error(w->store));
        }
        store_failed(w, g, items, mono);
    }
}

void gw_ratelimit_check(struct gw_ratelimit_worker *w, const char *key, size_t key_len,
                        struct gw_rl_decision *out)
{
    struct gw_rl_batch_item item = {.key = key, .key_len = key_len, .out = out};
    check_pass(w, &item, 1);
}

void gw_ratelimit_check_batch(struct gw_ratelimit_worker *w, struct gw_rl_batch_item *items,
                              size_t n)
{
    for (size_t off = 0; off < n; off += PASS)
        check_pass(w, items + off, GW_MIN(n - off, (size_t)PASS));
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
            return TICK_IDLE_MS;
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
                b->items[n] = (struct gw_rl_batch_item){wt->key, wt->key_len, wt->out};
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
