/*
 * In-process fixed-window store, shared by every worker: used when
 * REDIS_URL is unset, and by RATE_LIMIT_FAILURE_MODE=local while Redis is
 * down. Keys are spread over GW_RL_MEMORY_SHARDS shards so workers rarely
 * contend; memory is bounded by a per-shard entry cap.
 *
 * Locking: each shard has one mutex guarding everything in the shard
 * (buckets, entries, age list, counters). No call holds two shard locks;
 * the store struct itself is immutable after creation.
 *
 * A shard is a chained hash table over a pool of 40-byte entries (int32
 * indices, so the pool can grow by realloc; the bucket array doubles with
 * it). Entries also sit on an age list ordered by when their current window
 * started: the head is the oldest, and since windows only move forward it
 * is expired whenever any entry is. A new key takes the head when expired,
 * else grows the pool up to the cap, else evicts the head (the oldest live
 * entry).
 *
 * Memory bound: 44 bytes per entry at most (40 for the entry, 4 for its
 * bucket), so the default cap of 1,048,576 entries is 44 MiB, reached only
 * when a million distinct clients arrive within one window; an idle store
 * holds 64 x 16 entries. test/bench/rl_memory.sh measures it.
 */
#include "ratelimit_int.h"

#include "gw/rl_algo.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define NIL           (-1)
#define INITIAL_ALLOC 16u

struct mentry {
    uint64_t h1, h2; /* 128-bit key identity (two independently seeded hashes) */
    int64_t window;  /* window index of count */
    uint32_t count;  /* requests counted in that window (saturates) */
    int32_t next;    /* bucket chain, NIL ends */
    int32_t older;   /* age list toward the head (oldest), NIL at head */
    int32_t newer;   /* age list toward the tail (newest), NIL at tail */
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
    uint32_t cap; /* entries per shard */
};

/* Keys reaching the store are hex of SHA-256 (ratelimit.c), so the fast
 * non-cryptographic gw_hash64 cannot be flooded; two seeds make a 128-bit
 * id. */
#define SEED1 0x243f6a8885a308d3ULL
#define SEED2 0x13198a2e03707344ULL

unsigned gw_rl_memory_shard_of(const char *key, size_t key_len)
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
static int32_t slot_get(struct shard *s, uint32_t cap, int64_t window)
{
    if (s->oldest != NIL && s->e[s->oldest].window < window) {
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
static uint32_t add_sat(uint32_t count, int64_t incr)
{
    return (uint64_t)incr >= UINT32_MAX - count ? UINT32_MAX : count + (uint32_t)incr;
}

int gw_rl_memory_incr_by(struct gw_rl_memory *m, const char *key, size_t key_len, int64_t incr,
                         int64_t window_s, int64_t now_s, int64_t *count)
{
    if (incr < 1)
        return -EINVAL;
    uint64_t h1 = gw_hash64(SEED1, key, key_len);
    uint64_t h2 = gw_hash64(SEED2, key, key_len);
    struct shard *s = &m->shards[(unsigned)(h1 >> 58) % GW_RL_MEMORY_SHARDS];
    int64_t window = gw_rl_algo_window_index(now_s, window_s);
    int rc = 0;

    pthread_mutex_lock(&s->mu);
    int32_t i = lookup(s, h1, h2);
    if (i != NIL) {
        struct mentry *e = &s->e[i];
        if (e->window < window) {
            /* Lazy expiry: the key's old window is over, start the new one
             * and make it the newest on the age list. */
            e->window = window;
            e->count = add_sat(0, incr);
            age_unlink(s, i);
            age_push_newest(s, i);
        } else {
            e->count = add_sat(e->count, incr);
        }
        *count = e->count;
    } else {
        i = slot_get(s, m->cap, window);
        if (i == NIL) {
            rc = -ENOMEM;
        } else {
            struct mentry *e = &s->e[i];
            e->h1 = h1;
            e->h2 = h2;
            e->window = window;
            e->count = add_sat(0, incr);
            uint32_t b = bucket_of(s, h2);
            e->next = s->buckets[b];
            s->buckets[b] = i;
            age_push_newest(s, i);
            s->used++;
            *count = e->count;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int gw_rl_memory_incr(struct gw_rl_memory *m, const char *key, size_t key_len, int64_t window_s,
                      int64_t now_s, int64_t *count)
{
    return gw_rl_memory_incr_by(m, key, key_len, 1, window_s, now_s, count);
}

static int memory_check(void *store, const char *key, size_t key_len, int64_t incr, int64_t limit,
                        int64_t window_s, int64_t *count, int64_t *now_ms)
{
    (void)limit; /* fixed window counts every request */
    int64_t ms = *now_ms;
    int64_t now_s = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
    return gw_rl_memory_incr_by(store, key, key_len, incr, window_s, now_s, count);
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

static int memory_check_many(void *store, const char *const keys[], const size_t key_lens[],
                             const int64_t incrs[], size_t n, int64_t window_s, int64_t counts[],
                             int64_t now_ms[], int rcs[])
{
    for (size_t i = 0; i < n; i++)
        rcs[i] = memory_check(store, keys[i], key_lens[i], incrs ? incrs[i] : 1, 0, window_s,
                              &counts[i], &now_ms[i]);
    return 0; /* in-process: nothing to lose */
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
    .check = memory_check,
    .check_many = memory_check_many,
    .ping = memory_ping,
    .connect = memory_nothing,
    .connect_start = memory_nothing_at,
    .connect_poll = memory_nothing_at,
    .probe = memory_nothing,
    .disconnect = memory_disconnect,
    .last_error = memory_last_error,
    .destroy = memory_destroy,
};
