/*
 * The resolver (see gw/resolve.h): one thread re-resolves the registered
 * host names on a schedule and on kicks, and publishes each name's address
 * list as an immutable snapshot that readers copy without a lock.
 *
 * Publication. Each name owns GW_SLOTS snapshot slots that are never freed
 * while the resolver runs (type-stable memory, so a reader may touch a slot
 * that is no longer current). A slot's refs counts the readers copying it;
 * the resolver, the only writer, claims a slot that is not current and has
 * no reader with one compare-and-swap 0 -> WRITING (a large negative
 * value), fills it, adds WRITING back (release) and then stores it as
 * current (release). A reader loads current (acquire), increments its refs
 * (acquire): a non-negative old value means the slot is not being written
 * and cannot be until the reader decrements (release) after its copy; a
 * negative one means the slot was retired and is being rewritten, so the
 * reader lets go and loads current again. A reader may copy a list that
 * became stale a moment ago, never a torn one. No list is ever waited for.
 *
 * Locking: mu guards stop and is held by the resolver thread except while
 * it runs a lookup; wake is its condition variable (kicks and stop). The
 * per-name schedule (next_ms, last_ms, failing, last_gen) belongs to
 * whoever resolves: the main thread in gw_resolve_add, the resolver thread
 * after gw_resolve_start. The registry (names, count) changes only before
 * start and after stop.
 */
#include "gw/resolve.h"

#include "gw/log.h"
#include "gw/net.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Snapshot slots per name: one current, the others free or pinned by a
 * reader that is still copying. */
#define GW_SLOTS 4
/* A slot's refs while the resolver fills it (readers see it negative). */
#define WRITING (INT64_MIN / 2)
/* Attempts of a reader that keeps finding retired slots (practically one). */
#define READ_TRIES 64

struct snap {
    _Atomic int64_t refs;      /* readers copying it; WRITING while written */
    struct gw_resolve_addrs a; /* the list, immutable while published */
};

struct gw_resolve_name {
    char *host;                  /* as registered (no brackets) */
    int port;                    /* with every address */
    char what[32];               /* variable it came from, for logs */
    bool numeric;                /* a literal: one fixed snapshot */
    _Atomic(struct snap *) cur;  /* current list, NULL until resolved */
    _Atomic uint64_t gen;        /* cur's generation, 0 until resolved */
    _Atomic bool kicked;         /* a user asked for a new lookup */
    struct snap slots[GW_SLOTS]; /* cur is one of these */
    uint64_t last_gen;           /* resolver: last generation published */
    uint64_t last_ms;            /* resolver: end of the last lookup */
    uint64_t next_ms;            /* resolver: next scheduled lookup */
    bool failing;                /* resolver: the last lookup failed (warned) */
};

static struct {
    pthread_mutex_t mu;                                  /* guards stop; wake's mutex */
    pthread_cond_t wake;                                 /* kicks and stop */
    bool stop;                                           /* leave the loop (under mu) */
    bool running;                                        /* the thread was started */
    pthread_t thread;                                    /* the resolver */
    int interval_ms;                                     /* UPSTREAM_RESOLVE_INTERVAL_MS */
    gw_resolve_lookup_fn lookup;                         /* tests: instead of getaddrinfo */
    void *lookup_ctx;                                    /* its argument */
    struct gw_resolve_name *names[GW_RESOLVE_MAX_NAMES]; /* registered */
    _Atomic int count;                                   /* entries of names[] */
} R = {.mu = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

/* ---- addresses ------------------------------------------------------------ */

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    return false;
}

bool gw_resolve_addrs_contain(const struct gw_resolve_addrs *a, const struct sockaddr_storage *ss)
{
    for (unsigned i = 0; i < a->count; i++)
        if (same_addr(&a->addr[i], ss))
            return true;
    return false;
}

/* Same addresses, whatever the order. */
static bool same_set(const struct gw_resolve_addrs *a, const struct gw_resolve_addrs *b)
{
    if (a->count != b->count)
        return false;
    for (unsigned i = 0; i < a->count; i++)
        if (!gw_resolve_addrs_contain(b, &a->addr[i]))
            return false;
    return true;
}

void gw_resolve_format(const struct gw_resolve_addrs *a, char *out, size_t cap)
{
    if (cap == 0)
        return;
    out[0] = '\0';
    if (a->count == 0) {
        snprintf(out, cap, "none");
        return;
    }
    size_t used = 0;
    for (unsigned i = 0; i < a->count && used < cap; i++) {
        char text[INET6_ADDRSTRLEN];
        uint8_t bin[16];
        gw_net_format_addr(&a->addr[i], text, sizeof(text), bin);
        bool v6 = a->addr[i].ss_family == AF_INET6 && strchr(text, ':') != NULL;
        int n = snprintf(out + used, cap - used, v6 ? "%s[%s]" : "%s%s", i ? ", " : "", text);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

/* getaddrinfo's answer, in its order, duplicates dropped, at most
 * GW_RESOLVE_MAX_ADDRS. Returns 0 or an EAI_* code (EAI_NONAME for an
 * answer without a TCP address). */
static int lookup_gai(const char *host, int port, struct gw_resolve_addrs *out)
{
    char service[8];
    snprintf(service, sizeof(service), "%d", port);
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc != 0)
        return rc;
    out->count = 0;
    for (struct addrinfo *ai = res; ai && out->count < GW_RESOLVE_MAX_ADDRS; ai = ai->ai_next) {
        if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
            ai->ai_addrlen > sizeof(struct sockaddr_storage))
            continue;
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof(ss));
        memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
        if (gw_resolve_addrs_contain(out, &ss))
            continue;
        out->addr[out->count] = ss;
        out->len[out->count] = ai->ai_addrlen;
        out->count++;
    }
    freeaddrinfo(res);
    return out->count > 0 ? 0 : EAI_NONAME;
}

static const char *lookup_error(int rc, int saved_errno)
{
    return rc == EAI_SYSTEM ? strerror(saved_errno) : gai_strerror(rc);
}

/* ---- snapshots ------------------------------------------------------------ */

/* Publishes list as the name's new current snapshot. Resolver side only.
 * Returns false when every other slot is still pinned by a reader (then
 * nothing changed; the next lookup tries again). */
static bool publish(struct gw_resolve_name *n, const struct gw_resolve_addrs *list)
{
    struct snap *cur = atomic_load_explicit(&n->cur, memory_order_relaxed);
    for (int i = 0; i < GW_SLOTS; i++) {
        struct snap *s = &n->slots[i];
        int64_t idle = 0;
        if (s == cur || !atomic_compare_exchange_strong_explicit(
                            &s->refs, &idle, WRITING, memory_order_acquire, memory_order_relaxed))
            continue;
        s->a = *list;
        s->a.gen = ++n->last_gen;
        /* Readers that bumped refs meanwhile let go again on their own. */
        atomic_fetch_sub_explicit(&s->refs, WRITING, memory_order_release);
        atomic_store_explicit(&n->cur, s, memory_order_release);
        atomic_store_explicit(&n->gen, s->a.gen, memory_order_release);
        return true;
    }
    return false;
}

/* Pins the current snapshot, or returns NULL when there is none. */
static struct snap *snap_get(struct gw_resolve_name *n)
{
    for (int i = 0; i < READ_TRIES; i++) {
        struct snap *s = atomic_load_explicit(&n->cur, memory_order_acquire);
        if (s == NULL)
            return NULL;
        if (atomic_fetch_add_explicit(&s->refs, 1, memory_order_acquire) >= 0)
            return s;
        /* Retired and being rewritten: current has moved on. */
        atomic_fetch_sub_explicit(&s->refs, 1, memory_order_relaxed);
    }
    return NULL;
}

static void snap_put(struct snap *s)
{
    atomic_fetch_sub_explicit(&s->refs, 1, memory_order_release);
}

uint64_t gw_resolve_gen(const struct gw_resolve_name *n)
{
    return atomic_load_explicit(&n->gen, memory_order_acquire);
}

unsigned gw_resolve_read(struct gw_resolve_name *n, struct gw_resolve_addrs *out)
{
    struct snap *s = snap_get(n);
    out->gen = 0;
    out->count = 0;
    if (s == NULL)
        return 0;
    out->gen = s->a.gen;
    out->count = s->a.count;
    memcpy(out->addr, s->a.addr, s->a.count * sizeof(out->addr[0]));
    memcpy(out->len, s->a.len, s->a.count * sizeof(out->len[0]));
    snap_put(s);
    return out->count;
}

/* ---- lookups -------------------------------------------------------------- */

/* One lookup of n (no lock held: it may block on DNS), then publication and
 * the log lines of what changed. */
static void resolve_one(struct gw_resolve_name *n)
{
    struct gw_resolve_addrs fresh;
    fresh.count = 0;
    errno = 0;
    int rc = R.lookup != NULL ? R.lookup(R.lookup_ctx, n->host, n->port, &fresh)
                              : lookup_gai(n->host, n->port, &fresh);
    int saved = errno;
    if (rc == 0 && fresh.count == 0)
        rc = EAI_NONAME;
    struct gw_resolve_addrs old;
    gw_resolve_read(n, &old);
    char was[256];
    gw_resolve_format(&old, was, sizeof(was));
    if (rc != 0) {
        if (!n->failing) {
            if (old.count == 0)
                gw_warn("resolve: %s host %s does not resolve (%s); connects to it fail until it "
                        "does",
                        n->what, n->host, lookup_error(rc, saved));
            else
                gw_warn("resolve: %s host %s does not resolve (%s); keeping %s", n->what, n->host,
                        lookup_error(rc, saved), was);
        }
        n->failing = true;
        return;
    }
    bool recovered = n->failing;
    n->failing = false;
    if (old.count > 0 && same_set(&old, &fresh)) {
        if (recovered)
            gw_info("resolve: %s host %s resolves again: %s", n->what, n->host, was);
        return;
    }
    if (!publish(n, &fresh)) {
        gw_debug("resolve: %s host %s: every snapshot slot is in use; publishing later", n->what,
                 n->host);
        return;
    }
    char now[256];
    gw_resolve_format(&fresh, now, sizeof(now));
    if (old.count == 0)
        gw_info("resolve: %s host %s is %s", n->what, n->host, now);
    else
        gw_info("resolve: %s host %s changed: %s -> %s", n->what, n->host, was, now);
}

static bool has_address(const struct gw_resolve_name *n)
{
    return atomic_load_explicit(&n->cur, memory_order_relaxed) != NULL;
}

/* When the resolver would look n up next, on its own schedule. */
static void schedule(struct gw_resolve_name *n)
{
    uint64_t retry = GW_RESOLVE_RETRY_MS;
    if (R.interval_ms > 0 && (uint64_t)R.interval_ms < retry)
        retry = (uint64_t)R.interval_ms;
    if (!has_address(n))
        n->next_ms = n->last_ms + retry;
    else if (R.interval_ms > 0)
        n->next_ms = n->last_ms + (uint64_t)R.interval_ms;
    else
        n->next_ms = UINT64_MAX;
}

/* The next lookup of n, a pending kick counted. */
static uint64_t due_of(struct gw_resolve_name *n)
{
    if (n->numeric)
        return UINT64_MAX;
    uint64_t due = n->next_ms;
    if (atomic_load_explicit(&n->kicked, memory_order_acquire) &&
        (R.interval_ms > 0 || !has_address(n)))
        due = GW_MIN(due, n->last_ms + GW_RESOLVE_KICK_MIN_MS);
    return due;
}

/* due_ms (gw_now_ms scale) as a CLOCK_REALTIME timespec, the condition
 * variable's clock (as in health.c: ThreadSanitizer, as shipped with gcc
 * 12, misreads waits on a monotonic condattr). */
static struct timespec deadline_of(uint64_t due_ms)
{
    uint64_t now = gw_now_ms();
    uint64_t wait = due_ms > now ? due_ms - now : 0;
    if (wait > 3600000)
        wait = 3600000; /* woken by a kick or stop anyway */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)(wait / 1000);
    ts.tv_nsec += (long)(wait % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static void *resolver_main(void *arg)
{
    (void)arg;
    int count = atomic_load_explicit(&R.count, memory_order_acquire);
    pthread_mutex_lock(&R.mu);
    while (!R.stop) {
        uint64_t earliest = UINT64_MAX;
        for (int i = 0; i < count && !R.stop; i++) {
            struct gw_resolve_name *n = R.names[i];
            if (due_of(n) <= gw_now_ms()) {
                atomic_store_explicit(&n->kicked, false, memory_order_release);
                pthread_mutex_unlock(&R.mu);
                resolve_one(n);
                pthread_mutex_lock(&R.mu);
                n->last_ms = gw_now_ms();
                schedule(n);
            }
            earliest = GW_MIN(earliest, due_of(n));
        }
        if (R.stop || earliest <= gw_now_ms())
            continue;
        struct timespec ts = deadline_of(earliest);
        pthread_cond_timedwait(&R.wake, &R.mu, &ts);
    }
    pthread_mutex_unlock(&R.mu);
    return NULL;
}

/* ---- registry ------------------------------------------------------------- */

void gw_resolve_set_lookup(gw_resolve_lookup_fn fn, void *ctx)
{
    R.lookup = fn;
    R.lookup_ctx = ctx;
}

struct gw_resolve_name *gw_resolve_find(const char *host, int port)
{
    if (host == NULL)
        return NULL;
    int count = atomic_load_explicit(&R.count, memory_order_acquire);
    for (int i = 0; i < count; i++)
        if (R.names[i]->port == port && strcmp(R.names[i]->host, host) == 0)
            return R.names[i];
    return NULL;
}

int gw_resolve_add(const char *host, int port, const char *what, struct gw_resolve_name **out)
{
    if (host == NULL || host[0] == '\0' || port < 1 || port > 65535)
        return -EINVAL;
    struct gw_resolve_name *n = gw_resolve_find(host, port);
    if (n != NULL) {
        *out = n;
        return 0;
    }
    int count = atomic_load_explicit(&R.count, memory_order_relaxed);
    if (count >= GW_RESOLVE_MAX_NAMES)
        return -ENOSPC;
    n = calloc(1, sizeof(*n));
    if (n == NULL || (n->host = strdup(host)) == NULL) {
        free(n);
        return -ENOMEM;
    }
    n->port = port;
    snprintf(n->what, sizeof(n->what), "%s", what ? what : "upstream");
    struct gw_resolve_addrs fixed = {.count = 1};
    if (gw_net_parse_numeric(host, port, &fixed.addr[0], &fixed.len[0]) == 0) {
        n->numeric = true;
        (void)publish(n, &fixed); /* every slot is free */
        n->next_ms = UINT64_MAX;
    } else {
        resolve_one(n);
        n->last_ms = gw_now_ms();
    }
    R.names[count] = n;
    atomic_store_explicit(&R.count, count + 1, memory_order_release);
    *out = n;
    return 0;
}

int gw_resolve_start(int interval_ms)
{
    R.interval_ms = interval_ms < 0 ? 0 : interval_ms;
    R.stop = false;
    bool any = false;
    int count = atomic_load_explicit(&R.count, memory_order_relaxed);
    for (int i = 0; i < count; i++) {
        if (!R.names[i]->numeric) {
            schedule(R.names[i]);
            any = true;
        }
    }
    if (!any)
        return 0; /* literals only: nothing ever changes */
    int rc = pthread_create(&R.thread, NULL, resolver_main, NULL);
    if (rc != 0)
        return -rc;
    (void)pthread_setname_np(R.thread, "gw-resolve"); /* top -H, ps -L, gdb */
    R.running = true;
    return 0;
}

void gw_resolve_stop(void)
{
    if (R.running) {
        pthread_mutex_lock(&R.mu);
        R.stop = true;
        pthread_cond_signal(&R.wake);
        pthread_mutex_unlock(&R.mu);
        pthread_join(R.thread, NULL);
        R.running = false;
    }
    int count = atomic_load_explicit(&R.count, memory_order_relaxed);
    atomic_store_explicit(&R.count, 0, memory_order_release);
    for (int i = 0; i < count; i++) {
        free(R.names[i]->host);
        free(R.names[i]);
        R.names[i] = NULL;
    }
}

/* ---- users ---------------------------------------------------------------- */

void gw_resolve_kick(struct gw_resolve_name *n)
{
    if (n == NULL || n->numeric || atomic_exchange_explicit(&n->kicked, true, memory_order_acq_rel))
        return; /* a literal never changes; a pending kick covers this one */
    pthread_mutex_lock(&R.mu);
    pthread_cond_signal(&R.wake);
    pthread_mutex_unlock(&R.mu);
}

void gw_resolve_kick_host(const char *host, int port)
{
    gw_resolve_kick(gw_resolve_find(host, port));
}

int gw_resolve_host_text(const char *host, int port, unsigned i, char *out, size_t cap)
{
    struct gw_resolve_name *n = gw_resolve_find(host, port);
    if (n == NULL) {
        if (strlen(host) >= cap)
            return -ENOSPC;
        memcpy(out, host, strlen(host) + 1);
        return 0;
    }
    if (cap < INET6_ADDRSTRLEN)
        return -ENOSPC;
    struct gw_resolve_addrs a;
    if (gw_resolve_read(n, &a) == 0)
        return -EHOSTUNREACH;
    uint8_t bin[16];
    gw_net_format_addr(&a.addr[i % a.count], out, cap, bin);
    return 0;
}
