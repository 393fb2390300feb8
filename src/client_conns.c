/*
 * Per-client connection counts behind MAX_CONNECTIONS_PER_CLIENT (see
 * include/gw/client_conns.h). A hash table of chained entries, split into
 * shards with one mutex each, so the acceptor and the workers closing
 * connections rarely meet on one lock. Entries exist only while a client
 * holds a connection: memory follows the clients connected, not the clients
 * ever seen.
 *
 * Locking: every entry and bucket of a shard is guarded by that shard's
 * mutex; nothing else is shared after create.
 */
#include "gw/client_conns.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#define SHARDS  16
#define BUCKETS 1024 /* per shard */

struct entry {
    struct entry *next;
    uint8_t key[16]; /* address, IPv6 masked to /64 */
    int count;       /* connections held */
};

struct shard {
    pthread_mutex_t mu;
    struct entry *buckets[BUCKETS];
};

struct gw_client_conns {
    int cap;
    uint64_t seed; /* per process: clients choose their addresses */
    struct shard shards[SHARDS];
};

int gw_client_conns_create(struct gw_client_conns **out, int cap)
{
    *out = NULL;
    if (cap < 1)
        return -EINVAL;
    struct gw_client_conns *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->cap = cap;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    t->seed = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)t;
    for (int i = 0; i < SHARDS; i++)
        pthread_mutex_init(&t->shards[i].mu, NULL);
    *out = t;
    return 0;
}

void gw_client_conns_destroy(struct gw_client_conns *t)
{
    if (!t)
        return;
    for (int i = 0; i < SHARDS; i++) {
        for (int b = 0; b < BUCKETS; b++) {
            struct entry *e = t->shards[i].buckets[b];
            while (e) {
                struct entry *next = e->next;
                free(e);
                e = next;
            }
        }
        pthread_mutex_destroy(&t->shards[i].mu);
    }
    free(t);
}

/* The client's key: IPv4-mapped addresses whole, other IPv6 by /64. */
static void client_key(const uint8_t addr[16], uint8_t key[16])
{
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    memcpy(key, addr, 16);
    if (memcmp(addr, v4mapped, sizeof(v4mapped)) != 0)
        memset(key + 8, 0, 8);
}

/* Locks the shard of addr's client and returns the slot holding its entry,
 * or the NULL slot ending its chain; *sh receives the shard to unlock. */
static struct entry **lock_slot(struct gw_client_conns *t, const uint8_t addr[16],
                                struct shard **sh)
{
    uint8_t key[16];
    client_key(addr, key);
    uint64_t h = gw_hash64(t->seed, key, 16);
    *sh = &t->shards[h % SHARDS];
    pthread_mutex_lock(&(*sh)->mu);
    struct entry **pp = &(*sh)->buckets[(h / SHARDS) % BUCKETS];
    while (*pp && memcmp((*pp)->key, key, 16) != 0)
        pp = &(*pp)->next;
    return pp;
}

bool gw_client_conns_acquire(struct gw_client_conns *t, const uint8_t addr[16])
{
    struct shard *sh;
    struct entry **pp = lock_slot(t, addr, &sh);
    bool ok = true;
    if (*pp) {
        ok = (*pp)->count < t->cap;
        if (ok)
            (*pp)->count++;
    } else {
        struct entry *e = malloc(sizeof(*e));
        ok = e != NULL;
        if (ok) {
            client_key(addr, e->key);
            e->count = 1;
            e->next = NULL;
            *pp = e;
        }
    }
    pthread_mutex_unlock(&sh->mu);
    return ok;
}

void gw_client_conns_release(struct gw_client_conns *t, const uint8_t addr[16])
{
    struct shard *sh;
    struct entry **pp = lock_slot(t, addr, &sh);
    struct entry *e = *pp;
    if (e && --e->count == 0) {
        *pp = e->next;
        free(e);
    }
    pthread_mutex_unlock(&sh->mu);
}

int gw_client_conns_count(struct gw_client_conns *t, const uint8_t addr[16])
{
    struct shard *sh;
    struct entry **pp = lock_slot(t, addr, &sh);
    int n = *pp ? (*pp)->count : 0;
    pthread_mutex_unlock(&sh->mu);
    return n;
}
