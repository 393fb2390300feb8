/*
 * In-process rate-limit store, shared by every worker: used when REDIS_URL
 * is unset, and by RATE_LIMIT_FAILURE_MODE=local while Redis is down. It
 * holds the same state keys as the Redis script (fixed and sliding window
 * counters, token bucket TATs; see ratelimit_int.h) with the same expiry,
 * and decides with the math of gw/rl_algo.h, so both stores give the same
 * decisions. Keys are spread over GW_RL_MEMORY_SHARDS shards so workers
 * rarely contend; memory is bounded by a per-shard entry cap.
 *
 * Locking: each shard has one mutex guarding everything in the shard
 * (buckets, entries, age list, counters). A unit of a pass locks the
 * shards of all its keys at once, in address order, so two callers never
 * deadlock; every other call holds one shard lock. The store struct itself
 * is immutable after creation.
 *
 * A shard is a chained hash table over a pool of 48-byte entries (int32
 * indices, so the pool can grow by realloc; the bucket array doubles with
 * it). Entries also sit on an age list ordered by when they were last
 * written: the head is the least recently written. A new key takes the
 * head when it has expired, else grows the pool up to the cap, else evicts
 * the head. An expired entry found by a lookup reads as absent.
 *
 * Memory bound: 52 bytes per entry at most (48 for the entry, 4 for its
 * bucket), so the default cap of 1,048,576 entries is 52 MiB, reached only
 * when a million distinct clients arrive within one window; an idle store
 * holds 64 x 16 entries. test/bench/rl_memory.sh measures it.
 */
#include "ratelimit_int.h"

#include "gw/rl_algo.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define NIL           (-1)
#define INITIAL_ALLOC 16u

struct mentry {
    uint64_t h1, h2;   /* 128-bit key identity (two independently seeded hashes) */
    int64_t expire_ms; /* Unix ms at which the state is gone (Redis's PX) */
    int64_t value;     /* a counter, or a token bucket's TAT in µs */
    int32_t next;      /* bucket chain, NIL ends */
    int32_t older;     /* age list toward the head (least recently written), NIL at head */
    int32_t newer;     /* age list toward the tail (most recently written), NIL at tail */
};

_Static_assert(sizeof(struct mentry) == GW_RL_MEMORY_ENTRY_BYTES, "entry size is the memory bound");

struct shard {
    pthread_mutex_t mu;
    int32_t *buckets;           /* mask + 1 chain heads, NIL = empty */
    uint32_t mask;              /* bucket count - 1 (power of two) */
    struct mentry *e;           /* pool, alloc slots */
    uint32_t alloc;             /* slots allocated in e */
    uint32_t top;               /* slots ever handed out (e[0..top) initialised) */
    uint32_t used;              /* entries linked in the table */
    int32_t oldest;             /* age list head */
    int32_t newest;             /* age list tail */
} __attribute__((aligned(64))); /* one cache line per lock, no false sharing */

struct gw_rl_memory {
    struct shard shards[GW_RL_MEMORY_SHARDS];
    uint32_t cap;          /* entries per shard */
    uint64_t seed1, seed2; /* gw_hash64 seeds, random per store */
};

/* Keys reaching the store are hex of SHA-256 (ratelimit.c), so the fast
 * non-cryptographic gw_hash64 cannot be flooded; two seeds make a 128-bit
 * id. */
/* The hash seeds are random per store (getrandom): a client cannot
 * choose keys that land in one shard and evict another client's state. */
#define SEED1 (m->seed1)
#define SEED2 (m->seed2)

unsigned gw_rl_memory_shard_of(const struct gw_rl_memory *m, const char *key, size_t key_len)
{
    return (unsigned)(gw_hash64(SEED1, key, key_len) >> 58) % GW_RL_MEMORY_SHARDS;
}

static uint32_t pow2_at_least(uint32_t n)
{
    uint32_t p = 1;
    while (p < n && p < (1u << 30))
        p <<= 1;
    return p;
}

/* Fresh bucket array of nb heads (a power of two), all empty. */
static int32_t *buckets_new(uint32_t nb)
{
    int32_t *b = malloc(sizeof(int32_t) * nb);
    if (b != NULL)
        for (uint32_t i = 0; i < nb; i++)
            b[i] = NIL;
    return b;
}

int gw_rl_memory_create(struct gw_rl_memory **out, size_t max_entries)
{
    if (max_entries == 0)
        max_entries = GW_RL_MEMORY_DEFAULT_ENTRIES;
    size_t per = max_entries / GW_RL_MEMORY_SHARDS;
    if (per < 1)
        per = 1;
    if (per > (1u << 30))
        per = 1u << 30;

    struct gw_rl_memory *m = aligned_alloc(64, sizeof(*m));
    if (m == NULL)
        return -ENOMEM;
    memset(m, 0, sizeof(*m));
    m->cap = (uint32_t)per;
    uint64_t seeds[2];
    if (getrandom(seeds, sizeof(seeds), GRND_NONBLOCK) != (ssize_t)sizeof(seeds)) {
        /* No entropy yet (early boot): time and address, still not fixed. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seeds[0] = gw_mix64((uint64_t)ts.tv_nsec ^ (uint64_t)(uintptr_t)m);
        seeds[1] = gw_mix64(seeds[0] ^ (uint64_t)ts.tv_sec);
    }
    m->seed1 = seeds[0];
    m->seed2 = seeds[1] ^ 0x13198a2e03707344ULL;
    /* Buckets grow with the pool (slot_get), so an idle store stays small. */
    uint32_t nb = pow2_at_least(GW_MIN(m->cap, INITIAL_ALLOC));
    int i;
    for (i = 0; i < GW_RL_MEMORY_SHARDS; i++) {
        struct shard *s = &m->shards[i];
        if ((s->buckets = buckets_new(nb)) == NULL)
            goto fail;
        s->mask = nb - 1;
        s->oldest = s->newest = NIL;
        if (pthread_mutex_init(&s->mu, NULL) != 0) {
            free(s->buckets);
            goto fail;
        }
    }
    *out = m;
    return 0;

fail:
    while (--i >= 0) {
        pthread_mutex_destroy(&m->shards[i].mu);
        free(m->shards[i].buckets);
    }
    free(m);
    return -ENOMEM;
}

void gw_rl_memory_destroy(struct gw_rl_memory *m)
{
    if (m == NULL)
        return;
    for (int i = 0; i < GW_RL_MEMORY_SHARDS; i++) {
        pthread_mutex_destroy(&m->shards[i].mu);
        free(m->shards[i].buckets);
        free(m->shards[i].e);
    }
    free(m);
}

size_t gw_rl_memory_shard_cap(const struct gw_rl_memory *m)
{
    return m->cap;
}

size_t gw_rl_memory_bytes(struct gw_rl_memory *m)
{
    size_t n = sizeof(*m);
    for (int i = 0; i < GW_RL_MEMORY_SHARDS; i++) {
        pthread_mutex_lock(&m->shards[i].mu);
        n += (size_t)m->shards[i].alloc * sizeof(struct mentry) +
             ((size_t)m->shards[i].mask + 1) * sizeof(int32_t);
        pthread_mutex_unlock(&m->shards[i].mu);
    }
    return n;
}

size_t gw_rl_memory_max_bytes(size_t max_entries)
{
    if (max_entries == 0)
        max_entries = GW_RL_MEMORY_DEFAULT_ENTRIES;
    size_t per = max_entries / GW_RL_MEMORY_SHARDS;
    per = per < 1 ? 1 : per > (1u << 30) ? (1u << 30) : per;
    return sizeof(struct gw_rl_memory) +
           GW_RL_MEMORY_SHARDS * (per * sizeof(struct mentry) +
                                  (size_t)pow2_at_least((uint32_t)per) * sizeof(int32_t));
}

size_t gw_rl_memory_entries(struct gw_rl_memory *m)
{
    size_t n = 0;
    for (int i = 0; i < GW_RL_MEMORY_SHARDS; i++) {
        pthread_mutex_lock(&m->shards[i].mu);
        n += m->shards[i].used;
        pthread_mutex_unlock(&m->shards[i].mu);
    }
    return n;
}

/* ---- age list and chains (shard lock held) ------------------------------ */

static void age_unlink(struct shard *s, int32_t i)
{
    struct mentry *e = &s->e[i];
    if (e->older != NIL)
        s->e[e->older].newer = e->newer;
    else
        s->oldest = e->newer;
    if (e->newer != NIL)
        s->e[e->newer].older = e->older;
    else
        s->newest = e->older;
    e->older = e->newer = NIL;
}

static void age_push_newest(struct shard *s, int32_t i)
{
    struct mentry *e = &s->e[i];
    e->newer = NIL;
    e->older = s->newest;
    if (s->newest != NIL)
        s->e[s->newest].newer = i;
    else
        s->oldest = i;
    s->newest = i;
}

static uint32_t bucket_of(const struct shard *s, uint64_t h2)
{
    return (uint32_t)h2 & s->mask;
}

static void chain_unlink(struct shard *s, int32_t i)
{
    int32_t *link = &s->buckets[bucket_of(s, s->e[i].h2)];
    while (*link != NIL && *link != i)
        link = &s->e[*link].next;
    if (*link == i)
        *link = s->e[i].next;
}

static int32_t lookup(struct shard *s, uint64_t h1, uint64_t h2)
{
    for (int32_t i = s->buckets[bucket_of(s, h2)]; i != NIL; i = s->e[i].next)
        if (s->e[i].h1 == h1 && s->e[i].h2 == h2)
            return i;
    return NIL;
}

/* Unlinks entry i completely; the slot can then be reused. */
static void entry_remove(struct shard *s, int32_t i)
{
    chain_unlink(s, i);
    age_unlink(s, i);
    s->used--;
}

/* Doubles the pool (up to cap) and, when the pool outgrows the buckets,
 * the bucket array too, relinking every entry. On allocation failure the
 * shard keeps what it has (slot_get then evicts instead of growing). */
static void grow(struct shard *s, uint32_t cap)
{
    uint32_t na = s->alloc == 0 ? INITIAL_ALLOC : s->alloc * 2;
    if (na > cap)
        na = cap;
    uint32_t nb = pow2_at_least(na);
    int32_t *nbk = NULL;
    if (nb > s->mask + 1 && (nbk = buckets_new(nb)) == NULL)
        return;
    struct mentry *ne = realloc(s->e, sizeof(*ne) * na);
    if (ne == NULL) {
        free(nbk);
        return;
    }
    s->e = ne;
    s->alloc = na;
    if (nbk != NULL) {
        /* Every slot below top is linked (slots are only reused, never
         * freed), so relinking them all rebuilds the chains. */
        free(s->buckets);
        s->buckets = nbk;
        s->mask = nb - 1;
        for (uint32_t i = 0; i < s->top; i++) {
            uint32_t b = bucket_of(s, s->e[i].h2);
            s->e[i].next = s->buckets[b];
            s->buckets[b] = (int32_t)i;
        }
    }
}

/* A slot for a new key: see the file comment for the order of choices.
 * Returns NIL only when the pool cannot get its first slots. */
static int32_t slot_get(struct shard *s, uint32_t cap, int64_t now_ms)
{
    if (s->oldest != NIL && s->e[s->oldest].expire_ms <= now_ms) {
        int32_t i = s->oldest; /* expired: reuse before growing */
        entry_remove(s, i);
        return i;
    }
    if (s->top < cap) {
        if (s->top == s->alloc)
            grow(s, cap);
        if (s->top < s->alloc)
            return (int32_t)s->top++;
        /* Out of memory: fall through and evict, staying within what we have. */
    }
    if (s->oldest != NIL) {
        int32_t i = s->oldest;
        entry_remove(s, i);
        return i;
    }
    return NIL;
}

/* count + incr, saturating at UINT32_MAX: past 4e9 the verdict is the same. */
static int64_t add_sat(int64_t count, int64_t incr)
{
    return incr >= (int64_t)UINT32_MAX - count ? (int64_t)UINT32_MAX : count + incr;
}

/* The entry of (h1, h2), created when absent (create) with value 0 and
 * expire_ms 0; NIL when absent and not created, or out of memory. An
 * expired entry reads as absent: its value is reset. Shard lock held. */
static int32_t entry_at(struct gw_rl_memory *m, struct shard *s, uint64_t h1, uint64_t h2,
                        int64_t now_ms, bool create)
{
    int32_t i = lookup(s, h1, h2);
    if (i != NIL) {
        if (s->e[i].expire_ms <= now_ms) {
            s->e[i].value = 0;
            s->e[i].expire_ms = 0;
        }
        return i;
    }
    if (!create)
        return NIL;
    if ((i = slot_get(s, m->cap, now_ms)) == NIL)
        return NIL;
    struct mentry *e = &s->e[i];
    e->h1 = h1;
    e->h2 = h2;
    e->value = 0;
    e->expire_ms = 0;
    uint32_t b = bucket_of(s, h2);
    e->next = s->buckets[b];
    s->buckets[b] = i;
    age_push_newest(s, i);
    s->used++;
    return i;
}

/* Forgets entry i's state: it reads as absent from now on and, made the
 * oldest, is the first slot reused. */
static void entry_expire(struct shard *s, int32_t i)
{
    struct mentry *e = &s->e[i];
    e->value = 0;
    e->expire_ms = INT64_MIN;
    age_unlink(s, i);
    e->older = NIL;
    e->newer = s->oldest;
    if (s->oldest != NIL)
        s->e[s->oldest].older = i;
    else
        s->newest = i;
    s->oldest = i;
}

/* Writes entry i: value and expiry, and makes it the newest. */
static void entry_write(struct shard *s, int32_t i, int64_t value, int64_t expire_ms)
{
    s->e[i].value = value;
    s->e[i].expire_ms = expire_ms;
    if (s->newest != i) {
        age_unlink(s, i);
        age_push_newest(s, i);
    }
}

static struct shard *shard_of(struct gw_rl_memory *m, uint64_t h1)
{
    return &m->shards[(unsigned)(h1 >> 58) % GW_RL_MEMORY_SHARDS];
}

int gw_rl_memory_incr_by(struct gw_rl_memory *m, const char *key, size_t key_len, int64_t incr,
                         int64_t window_s, int64_t now_s, int64_t *count)
{
    if (incr < 1)
        return -EINVAL;
    uint64_t h1 = gw_hash64(SEED1, key, key_len);
    uint64_t h2 = gw_hash64(SEED2, key, key_len);
    struct shard *s = shard_of(m, h1);
    struct gw_rl_window win = gw_rl_algo_window(now_s, window_s);
    int64_t now_ms = now_s * 1000, end_ms = win.end_s * 1000;
    int rc = 0;

    pthread_mutex_lock(&s->mu);
    int32_t i = entry_at(m, s, h1, h2, now_ms, true);
    if (i == NIL) {
        rc = -ENOMEM;
    } else {
        /* A request whose time falls before the entry's window (clocks of
         * racing workers) is counted in the entry's newer window. */
        struct mentry *e = &s->e[i];
        int64_t n = add_sat(e->value, incr);
        entry_write(s, i, n, GW_MAX(e->expire_ms, end_ms));
        *count = n;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ---- passes (several rates at once) ------------------------------------- */

/* A unit's state keys: at most two per op (sliding window). */
#define UNIT_STATES_MAX (2 * GW_RL_UNIT_OPS_MAX)

struct state_ref {
    uint64_t h1, h2;
    struct shard *s;
};

/* Identity of state key (key, suffix words) without building a string:
 * the key is hashed once per seed, the three suffix words mixed in. */
static void state_id(uint64_t k1, uint64_t k2, const uint64_t suf[3], struct state_ref *out,
                     struct gw_rl_memory *m)
{
    uint64_t x = gw_mix64(suf[0] + 0x9e3779b97f4a7c15ULL) ^
                 gw_mix64(suf[1] ^ 0x6a09e667f3bcc909ULL) ^
                 gw_mix64(suf[2] + 0xbb67ae8584caa73bULL);
    out->h1 = gw_mix64(k1 ^ x);
    out->h2 = gw_mix64(k2 + x);
    out->s = shard_of(m, out->h1);
}

static int64_t floor_div64(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

/* The state keys of op (1 or 2) into refs; returns how many. The suffixes
 * are those the Redis script uses (ratelimit_int.h). */
static int op_states(struct gw_rl_memory *m, const struct gw_rl_pass *p, const struct gw_rl_op *op,
                     int64_t now_ms, struct state_ref refs[2])
{
    const struct gw_rl_spec *sp = &p->specs[op->spec];
    const char *key = p->keys[op->key];
    size_t len = p->key_lens[op->key];
    /* The state's identity: the key and a binary suffix with the same
     * parts as the Redis script's text one (algorithm, W, window index),
     * hashed without formatting any text. */
    uint64_t k1 = gw_hash64(SEED1, key, len), k2 = gw_hash64(SEED2, key, len);
    uint64_t suf[3] = {(uint64_t)sp->algorithm, (uint64_t)sp->window_ms, 0};
    if (sp->algorithm == GW_RL_TOKEN_BUCKET) {
        state_id(k1, k2, suf, &refs[0], m);
        return 1;
    }
    int64_t idx = floor_div64(now_ms, sp->window_ms);
    suf[2] = (uint64_t)idx;
    state_id(k1, k2, suf, &refs[0], m);
    if (sp->algorithm != GW_RL_SLIDING_WINDOW)
        return 1;
    suf[2] = (uint64_t)(idx - 1);
    state_id(k1, k2, suf, &refs[1], m);
    return 2;
}

static int64_t state_read(struct gw_rl_memory *m, const struct state_ref *r, int64_t now_ms)
{
    int32_t i = entry_at(m, r->s, r->h1, r->h2, now_ms, false);
    return i == NIL ? 0 : r->s->e[i].value;
}

static int cmp_shard(const void *a, const void *b)
{
    const struct shard *x = *(struct shard *const *)a, *y = *(struct shard *const *)b;
    return x < y ? -1 : x > y;
}

/* Decides one unit with its shards locked. */
static int apply_unit(struct gw_rl_memory *m, struct gw_rl_pass *p, struct gw_rl_unit *u,
                      int64_t now_us)
{
    int64_t now_ms = floor_div64(now_us, 1000);
    struct state_ref refs[UNIT_STATES_MAX];
    int nref[GW_RL_UNIT_OPS_MAX], at[GW_RL_UNIT_OPS_MAX];
    struct shard *locks[UNIT_STATES_MAX];
    size_t nr = 0, nl = 0, n = u->n;
    assert(n <= GW_RL_UNIT_OPS_MAX);
    for (size_t j = 0; j < n; j++) {
        at[j] = (int)nr;
        nref[j] = op_states(m, p, &p->ops[u->first + j], now_ms, &refs[nr]);
        for (int k = 0; k < nref[j]; k++)
            locks[nl++] = refs[nr + (size_t)k].s;
        nr += (size_t)nref[j];
    }
    if (nl <= 16) { /* the usual few: insertion sort, no qsort call */
        for (size_t k = 1; k < nl; k++) {
            struct shard *x = locks[k];
            size_t j = k;
            for (; j > 0 && locks[j - 1] > x; j--)
                locks[j] = locks[j - 1];
            locks[j] = x;
        }
    } else {
        qsort(locks, nl, sizeof(locks[0]), cmp_shard);
    }
    size_t nu = 0;
    for (size_t k = 0; k < nl; k++)
        if (nu == 0 || locks[nu - 1] != locks[k])
            locks[nu++] = locks[k];
    for (size_t k = 0; k < nu; k++)
        pthread_mutex_lock(&locks[k]->mu);

    if (p->mode == GW_RL_PASS_DELETE) {
        for (size_t j = 0; j < n; j++) {
            struct gw_rl_op *op = &p->ops[u->first + j];
            op->a = op->b = 0;
            for (int k = 0; k < nref[j]; k++) {
                const struct state_ref *r = &refs[at[j] + k];
                int32_t i = lookup(r->s, r->h1, r->h2);
                if (i != NIL && r->s->e[i].expire_ms > now_ms)
                    op->a++;
                if (i != NIL)
                    entry_expire(r->s, i);
            }
        }
        for (size_t k = nu; k-- > 0;)
            pthread_mutex_unlock(&locks[k]->mu);
        u->result = GW_RL_UNIT_REFUSED;
        return 0;
    }
    bool all = true;
    int64_t new_tat[GW_RL_UNIT_OPS_MAX];
    for (size_t j = 0; j < n; j++) {
        struct gw_rl_op *op = &p->ops[u->first + j];
        const struct gw_rl_spec *sp = &p->specs[op->spec];
        struct gw_rl_result r;
        op->a = state_read(m, &refs[at[j]], now_ms);
        op->b = 0;
        if (sp->algorithm == GW_RL_TOKEN_BUCKET) {
            gw_rl_algo_gcra(sp->limit, sp->burst, sp->window_ms, sp->delay_ms, now_us, op->a,
                            &new_tat[j], &r);
        } else if (sp->algorithm == GW_RL_SLIDING_WINDOW) {
            op->b = op->a; /* refs[at]: the current window; refs[at + 1]: the previous */
            op->a = state_read(m, &refs[at[j] + 1], now_ms);
            gw_rl_algo_sliding_window(sp->limit, sp->window_ms, now_ms, op->a, op->b, &r);
        } else {
            gw_rl_algo_fixed_window_ms(sp->limit, sp->window_ms, now_ms, op->a, &r);
        }
        if (!r.allowed)
            all = false;
    }
    int rc = 0;
    if (all && p->mode == GW_RL_PASS_DECIDE) {
        for (size_t j = 0; j < n && rc == 0; j++) {
            const struct gw_rl_op *op = &p->ops[u->first + j];
            const struct gw_rl_spec *sp = &p->specs[op->spec];
            const struct state_ref *r = &refs[at[j]];
            int32_t i = entry_at(m, r->s, r->h1, r->h2, now_ms, true);
            if (i == NIL) {
                rc = -ENOMEM;
                break;
            }
            if (sp->algorithm == GW_RL_TOKEN_BUCKET) {
                /* Kept until the bucket is full again: the TAT. */
                entry_write(r->s, i, new_tat[j], floor_div64(new_tat[j] + 999, 1000));
            } else {
                int64_t idx = floor_div64(now_ms, sp->window_ms);
                int64_t spans = sp->algorithm == GW_RL_SLIDING_WINDOW ? 2 : 1;
                int64_t cnt = sp->algorithm == GW_RL_SLIDING_WINDOW ? op->b : op->a;
                entry_write(r->s, i, add_sat(cnt, 1), (idx + spans) * sp->window_ms);
            }
        }
    }
    for (size_t k = nu; k-- > 0;)
        pthread_mutex_unlock(&locks[k]->mu);
    u->result = rc != 0 ? GW_RL_UNIT_UNDECIDED : all ? GW_RL_UNIT_ALLOWED : GW_RL_UNIT_REFUSED;
    return rc;
}

int gw_rl_memory_apply(struct gw_rl_memory *m, struct gw_rl_pass *p, int64_t now_us)
{
    p->now_us = now_us;
    for (size_t u = 0; u < p->nunits; u++) {
        int rc = apply_unit(m, p, &p->units[u], now_us);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int gw_rl_memory_incr(struct gw_rl_memory *m, const char *key, size_t key_len, int64_t window_s,
                      int64_t now_s, int64_t *count)
{
    return gw_rl_memory_incr_by(m, key, key_len, 1, window_s, now_s, count);
}

static int memory_apply(void *store, struct gw_rl_pass *pass)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return gw_rl_memory_apply(store, pass, (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
}

static int memory_ping(void *store)
{
    (void)store; /* in-process: always answers */
    return 0;
}

static void memory_destroy(void *store)
{
    gw_rl_memory_destroy(store);
}

/* No connection: every connection call succeeds at once. */
static int memory_nothing(void *store)
{
    (void)store;
    return 0;
}

static int memory_nothing_at(void *store, uint64_t mono_ms)
{
    (void)store;
    (void)mono_ms;
    return 0;
}

static void memory_disconnect(void *store)
{
    (void)store;
}

static const char *memory_last_error(const void *store)
{
    (void)store;
    return "";
}

const struct gw_rl_store_ops gw_rl_memory_ops = {
    .name = "memory",
    .apply = memory_apply,
    .ping = memory_ping,
    .connect = memory_nothing,
    .connect_start = memory_nothing_at,
    .connect_poll = memory_nothing_at,
    .probe = memory_nothing,
    .disconnect = memory_disconnect,
    .last_error = memory_last_error,
    .destroy = memory_destroy,
};
