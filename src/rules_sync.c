/*
 * Rules and unblocks shared through Redis (see gw/rules_sync.h): the store
 * script of PUT /rules, the forget stream of DELETE /ratelimit and the
 * poll thread that follows both on every instance.
 *
 * Locking: mu guards c (the connection), last_serial and forget_id; the
 * poller and the admin endpoints take it for one round trip each. Only the
 * poll thread (re)connects, and without mu, so an admin request never
 * waits for a connect: while Redis is down it fails at once. stop is
 * guarded by mu too and signalled through cv.
 */
#include "gw/rules_sync.h"

#include "gw/log.h"
#include "redis_client.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* KEYS[1] <prefix>:rules; ARGV: expected version ("-" = any), version,
 * rules. Returns {serial, previous version} or {-1, stored version}. */
static const char store_script[] =
    "local cur = redis.call('HGET', KEYS[1], 'version') or ''\n"
    "if ARGV[1] ~= '-' and ARGV[1] ~= cur then return {-1, cur} end\n"
    "local serial = redis.call('HINCRBY', KEYS[1], 'serial', 1)\n"
    "redis.call('HSET', KEYS[1], 'version', ARGV[2], 'rules', ARGV[3])\n"
    "redis.call('PERSIST', KEYS[1])\n"
    "return {serial, cur}\n";

/* KEYS[1] <prefix>:forget; ARGV: origin, limit, key, TTL ms, max length.
 * The append and the TTL in one step: the stream never lives without one. */
static const char forget_script[] =
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    "redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[5], '*', 'origin', ARGV[1], 'limit', "
    "ARGV[2], 'key', ARGV[3])\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[4])\n"
    "return 1\n";

struct gw_rules_sync {
    struct gw_rules_holder *holder; /* borrowed */
    struct gw_ratelimit *rl;        /* borrowed: forget_cached */
    const struct gw_config *cfg;    /* borrowed */
    struct gw_redis_target target;  /* gw_config_redis_target (any mode) */
    int timeout_ms;                 /* connect and command timeout */
    bool adopt;                     /* GW_RULES_SYNC_ADOPT */
    char origin[17];                /* this instance's id in the forget stream */
    char *rules_key;                /* "<prefix>:rules" */
    char *forget_key;               /* "<prefix>:forget" */
    pthread_mutex_t mu;
    pthread_cond_t cv;         /* stop, with mu */
    bool stop;                 /* with mu */
    struct gw_redis_client *c; /* with mu; NULL while down (redis_client.h) */
    _Atomic bool down_logged;  /* the outage was logged once */
    uint64_t last_serial;      /* with mu: the serial last adopted or stored (0 = none) */
    char forget_id[48];        /* with mu: last forget stream entry seen */
    bool forget_id_known;      /* with mu: forget_id was read once */
    pthread_t thread;
    bool started;
    _Atomic uint64_t polls, adopted, forgets;
};

/* ---- connection ------------------------------------------------------- */

/* The connection failed: dropped (with mu); the poll thread reconnects. */
static void drop_conn(struct gw_rules_sync *s, const char *what)
{
    if (s->c == NULL)
        return;
    if (!atomic_exchange(&s->down_logged, true))
        gw_warn("rules sync: Redis %s: %s; reconnecting every %d ms", what,
                gw_redis_client_error(s->c)[0] ? gw_redis_client_error(s->c) : "failed",
                GW_RULES_SYNC_POLL_MS);
    gw_redis_client_destroy(s->c);
    s->c = NULL;
}

/* One command, reply checked: NULL (connection dropped, logged) or a reply
 * the caller frees. */
static redisReply *command_argv(struct gw_rules_sync *s, int argc, const char **argv,
                                const size_t *lens, const char *what)
{
    redisReply *rep = gw_redis_client_command_argv(s->c, argc, argv, lens);
    if (rep == NULL) {
        drop_conn(s, what);
        return NULL;
    }
    return rep;
}

/* A new connection, AUTH and SELECT done (blocking, each step bounded by
 * timeout_ms), or NULL (logged once per outage). Called without mu: only
 * the poll thread (and start-up) connects, so an unreachable Redis never
 * makes an admin request wait for a connect. */
static struct gw_redis_client *connect_new(struct gw_rules_sync *s)
{
    struct gw_redis_client *c = NULL;
    char why[200] = "out of memory";
    int rc = gw_redis_client_create(&c, &s->target, s->timeout_ms, why, sizeof(why));
    if (rc == 0 && gw_redis_client_connect(c) != 0) {
        snprintf(why, sizeof(why), "%s", gw_redis_client_error(c));
        rc = -EIO;
    }
    if (rc != 0) {
        if (!atomic_exchange(&s->down_logged, true))
            gw_warn("rules sync: cannot connect to Redis: %s; retrying every %d ms", why,
                    GW_RULES_SYNC_POLL_MS);
        gw_redis_client_destroy(c);
        return NULL;
    }
    if (atomic_exchange(&s->down_logged, false))
        gw_info("rules sync: connected to Redis again");
    return c;
}

/* ---- rules ------------------------------------------------------------ */

void gw_rules_sync_apply(struct gw_rules_holder *h, struct gw_rules *r)
{
    struct gw_rules *cur = gw_rules_holder_get(h);
    if (strcmp(cur->version, r->version) == 0)
        gw_info("rules replaced by the same version %s (%zu limits; source %s, was %s)", r->version,
                r->limit_count, gw_rules_source_name(r->source), gw_rules_source_name(cur->source));
    else
        gw_info("rules changed: version %s (%zu limits), was %s (source %s)", r->version,
                r->limit_count, cur->version, gw_rules_source_name(r->source));
    gw_rules_put(cur);
    gw_rules_holder_publish(h, r);
}

static bool parse_u64(const redisReply *e, uint64_t *out)
{
    if (e == NULL)
        return false;
    if (e->type == REDIS_REPLY_INTEGER) {
        *out = (uint64_t)e->integer;
        return e->integer >= 0;
    }
    if (e->type != REDIS_REPLY_STRING || e->len == 0 || e->len > 20)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < e->len; i++) {
        if (e->str[i] < '0' || e->str[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(e->str[i] - '0');
    }
    *out = v;
    return true;
}

/* The stored rules moved to serial: reads and adopts them. With mu.
 * Returns 0 (adopted, already in force, or invalid: logged and remembered),
 * or -ENOTCONN. */
static int adopt_stored(struct gw_rules_sync *s, uint64_t serial)
{
    const char *argv[] = {"HMGET", s->rules_key, "serial", "version", "rules"};
    redisReply *rep = command_argv(s, 5, argv, NULL, "HMGET");
    if (rep == NULL)
        return -ENOTCONN;
    uint64_t got = 0;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 3 || !parse_u64(rep->element[0], &got) ||
        rep->element[2]->type != REDIS_REPLY_STRING) {
        if (rep->type == REDIS_REPLY_ERROR)
            gw_warn("rules sync: reading %s: %s", s->rules_key, rep->str);
        else if (!(rep->type == REDIS_REPLY_ARRAY && rep->elements == 3 &&
                   rep->element[0]->type == REDIS_REPLY_NIL))
            gw_warn("rules sync: %s is not the hash this gateway writes; ignored", s->rules_key);
        s->last_serial = serial; /* not again until it changes */
        freeReplyObject(rep);
        return 0;
    }
    (void)serial;
    s->last_serial = got;
    const redisReply *text = rep->element[2];
    char *errs = NULL;
    size_t errs_len = 0;
    FILE *err = open_memstream(&errs, &errs_len);
    struct gw_rules *r = NULL;
    int rc = gw_rules_parse(text->str, text->len, GW_RULES_JSON, s->cfg, &r, err, NULL);
    if (err != NULL)
        fclose(err);
    freeReplyObject(rep);
    if (rc != 0) {
        char *nl = errs != NULL ? strchr(errs, '\n') : NULL;
        if (nl != NULL)
            *nl = '\0';
        gw_error("rules sync: the rules stored at %s (serial %llu) are invalid, keeping the rules "
                 "in force: %s",
                 s->rules_key, (unsigned long long)got, errs != NULL ? errs : "out of memory");
        free(errs);
        return 0;
    }
    free(errs);
    r->source = GW_RULES_SOURCE_REDIS;
    struct gw_rules *cur = gw_rules_holder_get(s->holder);
    bool same = strcmp(cur->version, r->version) == 0;
    gw_rules_put(cur);
    atomic_fetch_add_explicit(&s->adopted, 1, memory_order_relaxed);
    if (same) {
        gw_rules_put(r);
        return 0;
    }
    gw_rules_sync_apply(s->holder, r);
    return 0;
}

/* ---- forgets ---------------------------------------------------------- */

/* Where the forget stream ends now, so that old entries are not replayed.
 * With mu. 0 or -ENOTCONN. */
static int init_forget_id(struct gw_rules_sync *s)
{
    const char *argv[] = {"XREVRANGE", s->forget_key, "+", "-", "COUNT", "1"};
    redisReply *rep = command_argv(s, 6, argv, NULL, "XREVRANGE");
    if (rep == NULL)
        return -ENOTCONN;
    snprintf(s->forget_id, sizeof(s->forget_id), "0-0");
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 1 &&
        rep->element[0]->type == REDIS_REPLY_ARRAY && rep->element[0]->elements == 2 &&
        rep->element[0]->element[0]->type == REDIS_REPLY_STRING &&
        rep->element[0]->element[0]->len < sizeof(s->forget_id))
        snprintf(s->forget_id, sizeof(s->forget_id), "%s", rep->element[0]->element[0]->str);
    s->forget_id_known = true;
    freeReplyObject(rep);
    return 0;
}

static const redisReply *field_of(const redisReply *fields, const char *name)
{
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        const redisReply *k = fields->element[i];
        if (k->type == REDIS_REPLY_STRING && strcmp(k->str, name) == 0 &&
            fields->element[i + 1]->type == REDIS_REPLY_STRING)
            return fields->element[i + 1];
    }
    return NULL;
}

/* XREAD's reply: [[stream, [[id, [field, value, ...]], ...]]]. With mu. */
static void take_forgets(struct gw_rules_sync *s, const redisReply *rep)
{
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 1)
        return; /* nil: nothing new */
    const redisReply *stream = rep->element[0];
    if (stream->type != REDIS_REPLY_ARRAY || stream->elements != 2 ||
        stream->element[1]->type != REDIS_REPLY_ARRAY)
        return;
    const redisReply *entries = stream->element[1];
    for (size_t i = 0; i < entries->elements; i++) {
        const redisReply *e = entries->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
            e->element[0]->type != REDIS_REPLY_STRING || e->element[1]->type != REDIS_REPLY_ARRAY)
            continue;
        if (e->element[0]->len < sizeof(s->forget_id))
            snprintf(s->forget_id, sizeof(s->forget_id), "%s", e->element[0]->str);
        const redisReply *origin = field_of(e->element[1], "origin");
        const redisReply *limit = field_of(e->element[1], "limit");
        const redisReply *key = field_of(e->element[1], "key");
        if (origin == NULL || limit == NULL || key == NULL || strcmp(origin->str, s->origin) == 0)
            continue; /* malformed, or ours (already dropped here) */
        int rc = gw_ratelimit_forget_cached(s->rl, limit->str, key->str, key->len);
        if (rc == 0) {
            atomic_fetch_add_explicit(&s->forgets, 1, memory_order_relaxed);
            gw_info("rules sync: client forgotten in limit %s by another instance", limit->str);
        } else if (rc != -ENOENT) {
            gw_debug("rules sync: forget of limit %s: %s", limit->str, strerror(-rc));
        }
    }
}

/* ---- the poll --------------------------------------------------------- */

/* One round trip: the serial and what the forget stream has since
 * forget_id, pipelined. With mu. */
static void poll_once(struct gw_rules_sync *s)
{
    if (s->c == NULL)
        return;
    if (!s->forget_id_known && init_forget_id(s) != 0)
        return;
    const char *hget[] = {"HGET", s->rules_key, "serial"};
    const char *xread[] = {"XREAD", "COUNT", "256", "STREAMS", s->forget_key, s->forget_id};
    if (gw_redis_client_append_argv(s->c, 3, hget, NULL) != 0 ||
        gw_redis_client_append_argv(s->c, 6, xread, NULL) != 0) {
        drop_conn(s, "poll");
        return;
    }
    redisReply *rs = NULL, *rx = NULL;
    if ((rs = gw_redis_client_get_reply(s->c)) == NULL ||
        (rx = gw_redis_client_get_reply(s->c)) == NULL) {
        freeReplyObject(rs);
        drop_conn(s, "poll");
        return;
    }
    atomic_fetch_add_explicit(&s->polls, 1, memory_order_relaxed);
    take_forgets(s, rx);
    freeReplyObject(rx);
    uint64_t serial = 0;
    bool stored = parse_u64(rs, &serial);
    freeReplyObject(rs);
    if (s->adopt && stored && serial != s->last_serial)
        (void)adopt_stored(s, serial);
}

static void *sync_main(void *arg)
{
    struct gw_rules_sync *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        if (s->c == NULL) {
            /* Connect without mu: admin requests meanwhile fail fast. */
            pthread_mutex_unlock(&s->mu);
            struct gw_redis_client *c = connect_new(s);
            pthread_mutex_lock(&s->mu);
            if (c != NULL && s->c == NULL)
                s->c = c;
            else if (c != NULL)
                gw_redis_client_destroy(c);
        }
        poll_once(s);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += (long)GW_RULES_SYNC_POLL_MS * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        while (!s->stop && pthread_cond_timedwait(&s->cv, &s->mu, &ts) != ETIMEDOUT) {
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static char *join_key(const char *prefix, const char *suffix)
{
    size_t n = strlen(prefix) + 1 + strlen(suffix) + 1;
    char *k = malloc(n);
    if (k != NULL)
        snprintf(k, n, "%s:%s", prefix, suffix);
    return k;
}

static void destroy(struct gw_rules_sync *s)
{
    gw_redis_client_destroy(s->c);
    gw_config_redis_target_deinit(&s->target);
    free(s->rules_key);
    free(s->forget_key);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

int gw_rules_sync_start(struct gw_rules_sync **out, struct gw_rules_holder *h,
                        struct gw_ratelimit *rl, const struct gw_config *cfg, unsigned flags)
{
    *out = NULL;
    struct gw_rules_sync *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -ENOMEM;
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    s->holder = h;
    s->rl = rl;
    s->cfg = cfg;
    s->adopt = (flags & GW_RULES_SYNC_ADOPT) != 0;
    s->timeout_ms = GW_MAX(cfg->redis_timeout_ms, GW_RULES_SYNC_MIN_TIMEOUT_MS);
    uint8_t id[8] = {0};
    if (getrandom(id, sizeof(id), 0) != (ssize_t)sizeof(id)) {
        uint64_t t = gw_now_ms() ^ (uint64_t)getpid() << 32;
        memcpy(id, &t, sizeof(id));
    }
    for (size_t i = 0; i < sizeof(id); i++)
        snprintf(s->origin + 2 * i, 3, "%02x", id[i]);
    char why[160];
    s->rules_key = join_key(cfg->rate_limit_key_prefix, "rules");
    s->forget_key = join_key(cfg->rate_limit_key_prefix, "forget");
    if (s->rules_key == NULL || s->forget_key == NULL ||
        gw_config_redis_target(cfg, &s->target, why, sizeof(why)) != 0) {
        destroy(s);
        return -ENOMEM; /* the URL was validated at load: only memory can fail */
    }
    if (s->adopt) {
        /* Before serving: the shared rules, or the default with a warning. */
        s->c = connect_new(s); /* no thread yet */
        pthread_mutex_lock(&s->mu);
        const char *hget[] = {"HGET", s->rules_key, "serial"};
        redisReply *rep = s->c != NULL ? command_argv(s, 3, hget, NULL, "HGET") : NULL;
        uint64_t serial = 0;
        if (rep == NULL) {
            gw_warn("rules sync: cannot read the shared rules from Redis at start-up; enforcing "
                    "the RATE_LIMIT_* default until Redis answers");
        } else if (rep->type == REDIS_REPLY_NIL) {
            gw_info("rules sync: no shared rules in Redis (%s) yet; enforcing the RATE_LIMIT_* "
                    "default",
                    s->rules_key);
        } else if (parse_u64(rep, &serial)) {
            if (adopt_stored(s, serial) == 0)
                gw_info("rules sync: start-up rules from Redis %s (serial %llu)", s->rules_key,
                        (unsigned long long)s->last_serial);
        }
        freeReplyObject(rep);
        pthread_mutex_unlock(&s->mu);
    }
    int rc = pthread_create(&s->thread, NULL, sync_main, s);
    if (rc != 0) {
        destroy(s);
        return -rc;
    }
    s->started = true;
    *out = s;
    return 0;
}

int gw_rules_sync_store(struct gw_rules_sync *s, struct gw_rules *r, const char *if_match,
                        char *prev, size_t cap, uint64_t *serial)
{
    pthread_mutex_lock(&s->mu);
    int rc = s->c != NULL ? 0 : -ENOTCONN;
    redisReply *rep = NULL;
    if (rc == 0) {
        const char *argv[] = {
            "EVAL",     store_script, "1", s->rules_key, if_match ? if_match : "-",
            r->version, r->normalised};
        rep = command_argv(s, 7, argv, NULL, "EVAL");
        if (rep == NULL)
            rc = -ENOTCONN;
    }
    if (rc == 0 && (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
                    rep->element[0]->type != REDIS_REPLY_INTEGER ||
                    rep->element[1]->type != REDIS_REPLY_STRING)) {
        gw_warn("rules sync: storing the rules at %s: %s", s->rules_key,
                rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
        rc = -EPROTO;
    }
    if (rc == 0) {
        if (prev != NULL && cap > 0)
            snprintf(prev, cap, "%s", rep->element[1]->str);
        if (rep->element[0]->integer < 0) {
            rc = GW_RULES_SYNC_MISMATCH;
        } else {
            uint64_t got = (uint64_t)rep->element[0]->integer;
            if (serial != NULL)
                *serial = got;
            /* Under mu: the poller cannot have adopted a later serial in
             * between, so this is the newest this instance has seen. */
            s->last_serial = got;
            r->source = GW_RULES_SOURCE_API;
            gw_rules_sync_apply(s->holder, r);
            r = NULL;
        }
    }
    freeReplyObject(rep);
    pthread_mutex_unlock(&s->mu);
    gw_rules_put(r);
    return rc;
}

int gw_rules_sync_forget(struct gw_rules_sync *s, const char *limit, const char *key,
                         size_t key_len)
{
    char ttl[24], maxlen[24];
    snprintf(ttl, sizeof(ttl), "%d", GW_RULES_SYNC_FORGET_TTL_MS);
    snprintf(maxlen, sizeof(maxlen), "%d", GW_RULES_SYNC_FORGET_MAXLEN);
    const char *argv[] = {"EVAL", forget_script, "1", s->forget_key, s->origin,
                          limit,  key,           ttl, maxlen};
    size_t lens[GW_ARRAY_LEN(argv)];
    for (size_t i = 0; i < GW_ARRAY_LEN(argv); i++)
        lens[i] = strlen(argv[i]);
    lens[6] = key_len;
    pthread_mutex_lock(&s->mu);
    int rc = s->c != NULL ? 0 : -ENOTCONN;
    if (rc == 0) {
        redisReply *rep = command_argv(s, (int)GW_ARRAY_LEN(argv), argv, lens, "EVAL");
        if (rep == NULL) {
            rc = -ENOTCONN;
        } else if (rep->type == REDIS_REPLY_ERROR) {
            gw_warn("rules sync: appending to %s: %s", s->forget_key, rep->str);
            rc = -EPROTO;
        }
        freeReplyObject(rep);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void gw_rules_sync_counts(const struct gw_rules_sync *s, uint64_t *polls, uint64_t *adopted,
                          uint64_t *forgets)
{
    if (polls != NULL)
        *polls = atomic_load_explicit(&s->polls, memory_order_relaxed);
    if (adopted != NULL)
        *adopted = atomic_load_explicit(&s->adopted, memory_order_relaxed);
    if (forgets != NULL)
        *forgets = atomic_load_explicit(&s->forgets, memory_order_relaxed);
}

void gw_rules_sync_stop(struct gw_rules_sync *s)
{
    if (s == NULL)
        return;
    if (s->started) {
        pthread_mutex_lock(&s->mu);
        s->stop = true;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
    }
    destroy(s);
}
