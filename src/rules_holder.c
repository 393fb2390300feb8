/*
 * The rules in force (gw/rules_holder.h): the current rules behind a mutex,
 * a generation number workers poll without locking, and the reload
 * counters.
 *
 * Locking rules
 *  1. h->mu guards h->current and h->last_error. It is held only to swap
 *     the pointer, to add a reference or to copy the error text: never
 *     while rules are parsed or freed (gw_rules_put runs after unlocking).
 *  2. h->generation is written only under h->mu, with release order, after
 *     h->current was set; it is read with acquire order and no lock. A
 *     reader that saw generation G and then takes h->mu sees the rules of
 *     generation G or later.
 *  3. The counters are relaxed atomics: nobody orders anything by them.
 */
#include "gw/rules_holder.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct gw_rules_holder {
    pthread_mutex_t mu;                         /* rule 1 */
    struct gw_rules *current;                   /* one reference held; under mu */
    _Atomic uint64_t generation;                /* rule 2 */
    _Atomic uint64_t reloads_ok;                /* rule 3 */
    _Atomic uint64_t reloads_failed;            /* rule 3 */
    char last_error[GW_RULES_HOLDER_ERROR_MAX]; /* under mu; "" until a failure */
};

int gw_rules_holder_create(struct gw_rules_holder **out, struct gw_rules *initial)
{
    *out = NULL;
    struct gw_rules_holder *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return -ENOMEM;
    int rc = pthread_mutex_init(&h->mu, NULL);
    if (rc != 0) {
        free(h);
        return -rc;
    }
    h->current = initial;
    atomic_init(&h->generation, 1);
    atomic_init(&h->reloads_ok, 0);
    atomic_init(&h->reloads_failed, 0);
    *out = h;
    return 0;
}

void gw_rules_holder_destroy(struct gw_rules_holder *h)
{
    if (h == NULL)
        return;
    gw_rules_put(h->current);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

void gw_rules_holder_publish(struct gw_rules_holder *h, struct gw_rules *r)
{
    pthread_mutex_lock(&h->mu);
    struct gw_rules *old = h->current;
    h->current = r;
    atomic_fetch_add_explicit(&h->generation, 1, memory_order_release);
    pthread_mutex_unlock(&h->mu);
    /* Freed here only if no worker holds the old version any more; else
     * by the last worker's gw_rules_put. */
    gw_rules_put(old);
}

uint64_t gw_rules_holder_generation(const struct gw_rules_holder *h)
{
    /* Cast: C11 atomic loads take a non-const pointer; nothing is written. */
    return atomic_load_explicit(&((struct gw_rules_holder *)h)->generation, memory_order_acquire);
}

struct gw_rules *gw_rules_holder_get(struct gw_rules_holder *h)
{
    pthread_mutex_lock(&h->mu);
    struct gw_rules *r = gw_rules_get(h->current);
    pthread_mutex_unlock(&h->mu);
    return r;
}

void gw_rules_holder_count_reload(struct gw_rules_holder *h, bool ok, const char *error)
{
    if (ok) {
        atomic_fetch_add_explicit(&h->reloads_ok, 1, memory_order_relaxed);
        return;
    }
    pthread_mutex_lock(&h->mu);
    snprintf(h->last_error, sizeof(h->last_error), "%s", error ? error : "");
    pthread_mutex_unlock(&h->mu);
    atomic_fetch_add_explicit(&h->reloads_failed, 1, memory_order_relaxed);
}

void gw_rules_holder_reloads(const struct gw_rules_holder *h, uint64_t *success, uint64_t *failure)
{
    struct gw_rules_holder *m = (struct gw_rules_holder *)h; /* loads only */
    if (success)
        *success = atomic_load_explicit(&m->reloads_ok, memory_order_relaxed);
    if (failure)
        *failure = atomic_load_explicit(&m->reloads_failed, memory_order_relaxed);
}

size_t gw_rules_holder_last_error(struct gw_rules_holder *h, char *buf, size_t cap)
{
    pthread_mutex_lock(&h->mu);
    size_t len = strlen(h->last_error);
    snprintf(buf, cap, "%s", h->last_error);
    pthread_mutex_unlock(&h->mu);
    return len;
}

const char *gw_rules_source_name(enum gw_rules_source source)
{
    switch (source) {
    case GW_RULES_SOURCE_ENV:
        return "env";
    case GW_RULES_SOURCE_FILE:
        return "file";
    case GW_RULES_SOURCE_API:
        return "api";
    case GW_RULES_SOURCE_REDIS:
        return "redis";
    }
    return "unknown";
}
