/*
 * The rate limiter (SPEC.md §5): turns a client key into a store key,
 * answers repeat offenders from the process-wide over-limit cache, asks the
 * store (Redis per worker, or the shared in-process store) otherwise, and
 * applies RATE_LIMIT_FAILURE_MODE and RATE_LIMIT_DRY_RUN. Checks come one
 * by one or in batches; a batch goes to Redis as one pipeline per CHUNK.
 * A worker whose Redis failed stops asking it and reconnects from its tick,
 * without blocking, with a doubling backoff (100 ms to 2 s).
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
#include <pthread.h>
#include <errno.h>
#include <openssl/sha.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define OLC_SHARDS      64   /* over-limit cache shards, one mutex each (power of two) */
#define OLC_SHARD_SLOTS 2048 /* entries per shard (power of two): 131072 in all */
#define OLC_PROBE       8    /* slots looked at per key; a full run is overwritten */
#define BACKOFF_MIN_MS  100
#define BACKOFF_MAX_MS  2000
#define TICK_IDLE_MS    1000
#define CONNECT_POLL_MS 5  /* tick period while a reconnect is in progress */
#define CHUNK           64 /* checks pipelined to Redis in one round trip */

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

struct gw_ratelimit {
    const struct gw_config *cfg;   /* borrowed */
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
    struct gw_rl_redis *redis; /* this worker's connection; NULL without Redis */
    bool redis_up;             /* connected and not failed since */
    bool connecting;           /* a non-blocking reconnect is in progress */
    uint64_t backoff_ms;       /* current reconnect delay */
    uint64_t retry_at_ms;      /* gw_now_ms() of the next reconnect attempt */
    uint64_t warned_at_ms;     /* last error-reply warning, to rate-limit the log */
    char *keys;                /* store-key scratch: CHUNK keys of key_cap bytes */
    size_t key_cap;
};

/* ---- store keys ------------------------------------------------------------ */

int gw_rl_store_key(const char *prefix, const char *key, size_t key_len, char *out, size_t cap,
                    uint64_t *hash64)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)key, key_len, md);
    if (hash64 != NULL) {
        uint64_t h = 0;
        for (int i = 0; i < 8; i++)
            h = h << 8 | md[i];
        *hash64 = h;
    }
    size_t plen = strlen(prefix);
    size_t need = plen + 3 + GW_RL_KEY_HASH_HEX; /* ":{" hex "}" */
    if (need + 1 > cap || need > INT32_MAX)
        return -ENOSPC;
    char *p = out;
    memcpy(p, prefix, plen);
    p += plen;
    *p++ = ':';
    *p++ = '{';
    for (int i = 0; i < GW_RL_KEY_HASH_HEX / 2; i++) {
        *p++ = hex[md[i] >> 4];
        *p++ = hex[md[i] & 15];
    }
    *p++ = '}';
    *p = '\0';
    return (int)need;
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

/* Request n counted by a store whose clock read store_ms. */
static void decide(struct gw_ratelimit_worker *w, uint64_t hash, int64_t n, int64_t store_ms,
                   uint64_t mono_ms, struct gw_rl_decision *out)
{
    const struct gw_ratelimit *rl = w->rl;
    int64_t now_s = floor_div(store_ms, 1000);
    out->has_info = true;
    if (gw_rl_algo_fixed_window(n, rl->limit, now_s, rl->window_s, &out->info)) {
        out->verdict = GW_RL_ALLOW;
        return;
    }
    limited(rl, out);
    /* Remember the client until its window ends. The deadline is measured
     * on our monotonic clock from the time left on the store's clock, so a
     * skew between this host and Redis cannot stretch or shorten it. */
    int64_t left_ms = out->info.reset_epoch_s * 1000 - store_ms;
    if (left_ms < 1)
        left_ms = 1;
    olc_put(rl, hash, mono_ms + (uint64_t)left_ms, out->info.reset_epoch_s, mono_ms);
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

static void mark_down(struct gw_ratelimit_worker *w, uint64_t mono_ms)
{
    gw_warn("rate limit: redis unavailable, reconnecting in background (%s)",
            gw_rl_redis_last_error(w->redis));
    gw_rl_redis_disconnect(w->redis);
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
    gw_rl_memory_destroy(rl->mem);
    gw_config_redis_target_deinit(&rl->target);
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
    w->key_cap = strlen(rl->cfg->rate_limit_key_prefix) + GW_RL_KEY_HASH_HEX + 4;
    if ((w->keys = malloc(w->key_cap * CHUNK)) == NULL)
        goto fail;
    if (rl->use_redis) {
        if (gw_rl_redis_create(&w->redis, &rl->target, rl->cfg->redis_timeout_ms) != 0)
            goto fail;
        uint64_t now = gw_now_ms();
        if (gw_rl_redis_connect(w->redis) == 0) {
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
    free(w->keys);
    free(w);
    return -ENOMEM;
}

void gw_ratelimit_worker_destroy(struct gw_ratelimit_worker *w)
{
    if (w == NULL)
        return;
    if (w->redis != NULL)
        gw_rl_redis_ops.destroy(w->redis);
    atomic_fetch_sub(&w->rl->workers, 1);
    free(w->keys);
    free(w);
}

/* The in-process store decides (no Redis, or failure mode local). */
static void memory_decide(struct gw_ratelimit_worker *w, const char *skey, size_t sklen,
                          uint64_t hash, uint64_t mono, struct gw_rl_decision *out)
{
    const struct gw_ratelimit *rl = w->rl;
    int64_t n = 0, now_ms = wall_ms();
    int rc = gw_rl_memory_ops.check(rl->mem, skey, sklen, rl->limit, rl->window_s, &n, &now_ms);
    if (rc != 0) {
        /* Only when a shard cannot allocate its first entries. */
        out->store_error = true;
        if (rl->mode == GW_RL_FAIL_CLOSED)
            out->verdict = GW_RL_UNAVAILABLE;
        return;
    }
    decide(w, hash, n, now_ms, mono, out);
}

/* Redis did not answer this check: RATE_LIMIT_FAILURE_MODE decides. */
static void store_failed(struct gw_ratelimit_worker *w, const char *skey, size_t sklen,
                         uint64_t hash, uint64_t mono, struct gw_rl_decision *out)
{
    out->store_error = true;
    if (w->rl->mode == GW_RL_FAIL_OPEN)
        return; /* ALLOW, no info: nothing trustworthy to report */
    if (w->rl->mode == GW_RL_FAIL_CLOSED) {
        out->verdict = GW_RL_UNAVAILABLE;
        return;
    }
    memory_decide(w, skey, sklen, hash, mono, out);
}

/* Up to CHUNK checks: the over-limit cache first, then one pipelined
 * round trip to Redis for the rest (or the in-process store). */
static void check_chunk(struct gw_ratelimit_worker *w, struct gw_rl_batch_item *items, size_t n)
{
    const struct gw_ratelimit *rl = w->rl;
    const char *skeys[CHUNK];
    size_t sklens[CHUNK], pending[CHUNK], m = 0;
    uint64_t hashes[CHUNK];
    uint64_t mono = gw_now_ms();

    for (size_t i = 0; i < n; i++) {
        struct gw_rl_decision *out = items[i].out;
        memset(out, 0, sizeof(*out));
        out->verdict = GW_RL_ALLOW;
        char *skey = w->keys + i * w->key_cap;
        int klen = gw_rl_store_key(rl->cfg->rate_limit_key_prefix, items[i].key, items[i].key_len,
                                   skey, w->key_cap, &hashes[i]);
        assert(klen > 0); /* key_cap was sized for this prefix */
        skeys[i] = skey;
        sklens[i] = (size_t)klen;
        struct olc_slot hit;
        if (olc_find(rl, hashes[i], mono, &hit))
            from_cache(rl, &hit, mono, out);
        else if (w->redis == NULL)
            memory_decide(w, skey, sklens[i], hashes[i], mono, out);
        else if (!w->redis_up)
            store_failed(w, skey, sklens[i], hashes[i], mono, out);
        else
            pending[m++] = i;
    }
    if (m == 0)
        return;

    const char *pk[CHUNK];
    size_t pl[CHUNK];
    int64_t counts[CHUNK], store_ms[CHUNK];
    int rcs[CHUNK];
    for (size_t j = 0; j < m; j++) {
        pk[j] = skeys[pending[j]];
        pl[j] = sklens[pending[j]];
    }
    int rc = gw_rl_redis_check_many(w->redis, pk, pl, m, rl->window_s, counts, store_ms, rcs);
    if (rc != 0)
        mark_down(w, mono);
    for (size_t j = 0; j < m; j++) {
        size_t i = pending[j];
        if (rcs[j] == 0) {
            decide(w, hashes[i], counts[j], store_ms[j], mono, items[i].out);
            continue;
        }
        if (rcs[j] == -EPROTO && mono >= w->warned_at_ms + 1000) {
            /* At most one line per second per worker: the server is
             * answering errors to every check, the log must not flood. */
            w->warned_at_ms = mono;
            gw_warn("rate limit: redis refused the check (%s)", gw_rl_redis_last_error(w->redis));
        }
        store_failed(w, skeys[i], sklens[i], hashes[i], mono, items[i].out);
    }
}

void gw_ratelimit_check(struct gw_ratelimit_worker *w, const char *key, size_t key_len,
                        struct gw_rl_decision *out)
{
    struct gw_rl_batch_item item = {.key = key, .key_len = key_len, .out = out};
    check_chunk(w, &item, 1);
}

void gw_ratelimit_check_batch(struct gw_ratelimit_worker *w, struct gw_rl_batch_item *items,
                              size_t n)
{
    for (size_t off = 0; off < n; off += CHUNK)
        check_chunk(w, items + off, GW_MIN(n - off, (size_t)CHUNK));
}

enum gw_rl_store_state gw_ratelimit_worker_ping(struct gw_ratelimit_worker *w)
{
    if (w->redis == NULL)
        return GW_RL_STORE_DISABLED;
    if (!w->redis_up)
        return GW_RL_STORE_DISCONNECTED;
    int rc = gw_rl_redis_ops.ping(w->redis);
    if (rc == 0)
        return GW_RL_STORE_CONNECTED;
    if (rc != -EPROTO)
        mark_down(w, gw_now_ms());
    return GW_RL_STORE_DISCONNECTED;
}

uint64_t gw_ratelimit_worker_tick(struct gw_ratelimit_worker *w, uint64_t now_ms)
{
    if (w->redis == NULL)
        return TICK_IDLE_MS;
    if (w->redis_up) {
        /* A worker without traffic would otherwise learn of a Redis
         * restart only from the next request's failed check. */
        if (gw_rl_redis_probe(w->redis) == 0)
            return TICK_IDLE_MS;
        mark_down(w, now_ms);
        return BACKOFF_MIN_MS;
    }
    int rc;
    if (w->connecting) {
        rc = gw_rl_redis_connect_poll(w->redis, now_ms);
    } else {
        if (now_ms < w->retry_at_ms)
            return w->retry_at_ms - now_ms;
        rc = gw_rl_redis_connect_start(w->redis, now_ms);
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
             gw_rl_redis_last_error(w->redis), (unsigned long long)w->backoff_ms);
    return w->backoff_ms;
}

bool gw_ratelimit_worker_redis_up(const struct gw_ratelimit_worker *w)
{
    return w->redis != NULL && w->redis_up;
}
