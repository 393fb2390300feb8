/*
 * Redis store of the rate limiter: one synchronous hiredis connection per
 * worker (SPEC.md §1), one atomic round trip per check. The counting runs
 * in a Lua script loaded once per connection (SCRIPT LOAD) and called with
 * EVALSHA; after a SCRIPT FLUSH or a failover, NOSCRIPT makes us send the
 * body once with EVAL, which also caches it again on the server.
 *
 * Requires the process to ignore SIGPIPE (hiredis writes with write(2)).
 */
#include "ratelimit_int.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/un.h>

/*
 * The check. KEYS[1] is "<prefix>:{<client hash>}"; ARGV[1] is the window
 * in seconds. The window index comes from Redis's own clock (TIME), so
 * every gateway on this Redis agrees on window edges whatever its local
 * clock says. The counter key is KEYS[1] .. ":" .. index, derived inside
 * the script; it is not declared in KEYS, which a single Redis (and
 * Redis 7 with effects replication) accepts. The {hash tag} keeps it in
 * KEYS[1]'s cluster slot, but Redis Cluster is not a supported target.
 *
 * The TTL is the time left to the window end in ms: > 0 and <= the window.
 * It is set on the first request of the window, and again whenever the key
 * has none (PTTL -1), so a key without TTL cannot survive a crash between
 * INCR and PEXPIRE (there is no such gap anyway: scripts are atomic).
 * Returns {n, now_ms}.
 */
const char gw_rl_redis_script[] =
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    "local t = redis.call('TIME')\n"
    "local s = tonumber(t[1])\n"
    "local now_ms = s * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local w = tonumber(ARGV[1])\n"
    "local idx = math.floor(s / w)\n"
    "local key = KEYS[1] .. ':' .. string.format('%d', idx)\n"
    "local n = redis.call('INCR', key)\n"
    "if n == 1 or redis.call('PTTL', key) < 0 then\n"
    "  local ttl = (idx + 1) * w * 1000 - now_ms\n"
    "  if ttl < 1 then ttl = 1 end\n"
    "  redis.call('PEXPIRE', key, ttl)\n"
    "end\n"
    "return {n, now_ms}\n";

struct gw_rl_redis {
    const struct gw_rl_redis_url *url; /* borrowed from struct gw_ratelimit */
    int timeout_ms;                    /* connect and command timeout */
    redisContext *c;                   /* NULL while disconnected */
    char sha[41];                      /* SHA1 of the script, from SCRIPT LOAD */
    char err[160];                     /* last failure, for logs */
};

/* ---- URL ------------------------------------------------------------------ */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Copies [p, p+n) percent-decoded into a new string; NULL on bad escape
 * (*bad set) or no memory. */
static char *pct_decode(const char *p, size_t n, bool *bad)
{
    char *o = malloc(n + 1);
    if (o == NULL)
        return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '%') {
            int hi = i + 2 < n ? hexval(p[i + 1]) : -1;
            int lo = i + 2 < n ? hexval(p[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) { /* %00 would cut the string */
                free(o);
                *bad = true;
                return NULL;
            }
            o[j++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            o[j++] = p[i];
        }
    }
    o[j] = '\0';
    return o;
}

static bool parse_uint(const char *p, size_t n, long max, long *out)
{
    if (n == 0 || n > 10)
        return false;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (p[i] - '0');
    }
    if (v > max)
        return false;
    *out = v;
    return true;
}

void gw_rl_redis_url_deinit(struct gw_rl_redis_url *u)
{
    free(u->host);
    free(u->path);
    free(u->username);
    if (u->password != NULL) {
        memset(u->password, 0, strlen(u->password)); /* secret: do not leave it in freed memory */
        free(u->password);
    }
    memset(u, 0, sizeof(*u));
}

int gw_rl_redis_url_parse(const char *url, struct gw_rl_redis_url *out)
{
    memset(out, 0, sizeof(*out));
    if (url == NULL)
        return -EINVAL;
    bool bad = false;
    int rc = -ENOMEM;

    if (strncmp(url, "unix://", 7) == 0) {
        const char *path = url + 7;
        size_t n = strlen(path);
        if (n < 2 || path[0] != '/' || n >= sizeof(((struct sockaddr_un *)0)->sun_path))
            return -EINVAL;
        out->transport = GW_RL_REDIS_UNIX;
        out->path = strdup(path);
        return out->path != NULL ? 0 : -ENOMEM;
    }
    if (strncmp(url, "redis://", 8) != 0)
        return -EINVAL; /* rediss:// (TLS) and anything else: unsupported */

    out->transport = GW_RL_REDIS_TCP;
    out->port = 6379;
    const char *p = url + 8;
    /* The last '@' ends the userinfo: a password may hold '@' or '/'. */
    const char *at = strrchr(p, '@');
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon != NULL) {
            if (colon > p && (out->username = pct_decode(p, (size_t)(colon - p), &bad)) == NULL)
                goto fail;
            if ((out->password = pct_decode(colon + 1, (size_t)(at - colon - 1), &bad)) == NULL)
                goto fail;
        } else if ((out->password = pct_decode(p, (size_t)(at - p), &bad)) == NULL) {
            goto fail; /* "secret@host": legacy form, the userinfo is the password */
        }
        if (out->password[0] == '\0') {
            free(out->password);
            out->password = NULL;
        }
        p = at + 1;
    }

    /* host: "[v6]" or up to ':' or '/' */
    const char *hs = p, *he;
    if (*p == '[') {
        hs = p + 1;
        he = strchr(hs, ']');
        if (he == NULL)
            goto invalid;
        p = he + 1;
    } else {
        he = p + strcspn(p, ":/");
        p = he;
    }
    if (he == hs)
        goto invalid;
    for (const char *q = hs; q < he; q++)
        if (*q <= ' ' || *q == '@' || *q == '?' || *q == '#' || (unsigned char)*q >= 0x7f)
            goto invalid;
    if ((out->host = strndup(hs, (size_t)(he - hs))) == NULL)
        goto fail;

    if (*p == ':') {
        p++;
        size_t n = strcspn(p, "/");
        long port;
        if (!parse_uint(p, n, 65535, &port) || port == 0)
            goto invalid;
        out->port = (int)port;
        p += n;
    }
    if (*p == '/') {
        p++;
        size_t n = strlen(p);
        long db = 0;
        if (n > 0 && !parse_uint(p, n, INT_MAX, &db))
            goto invalid;
        out->db = (int)db;
        p += n;
    }
    if (*p != '\0')
        goto invalid;
    return 0;

invalid:
    bad = true;
fail:
    if (bad)
        rc = -EINVAL;
    gw_rl_redis_url_deinit(out);
    return rc;
}

/* ---- connection ------------------------------------------------------------ */

int gw_rl_redis_create(struct gw_rl_redis **out, const struct gw_rl_redis_url *url, int timeout_ms)
{
    struct gw_rl_redis *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    r->url = url;
    r->timeout_ms = timeout_ms > 0 ? timeout_ms : 100;
    *out = r;
    return 0;
}

void gw_rl_redis_disconnect(struct gw_rl_redis *r)
{
    if (r->c != NULL) {
        redisFree(r->c);
        r->c = NULL;
    }
}

bool gw_rl_redis_connected(const struct gw_rl_redis *r)
{
    return r->c != NULL;
}

const char *gw_rl_redis_last_error(const struct gw_rl_redis *r)
{
    return r->err;
}

/* Records why the connection failed, drops it, returns the -errno. */
static int io_failure(struct gw_rl_redis *r, const char *what)
{
    int saved = errno;
    int rc = -EIO;
    if (r->c != NULL) {
        if (r->c->err == REDIS_ERR_EOF)
            rc = -ECONNRESET;
        else if (r->c->err == REDIS_ERR_IO && (saved == EAGAIN || saved == EWOULDBLOCK))
            rc = -ETIMEDOUT; /* SO_RCVTIMEO/SO_SNDTIMEO from redisSetTimeout fired */
        else if (r->c->err == REDIS_ERR_OOM)
            rc = -ENOMEM;
        snprintf(r->err, sizeof(r->err), "%s: %s", what, r->c->errstr);
    } else {
        snprintf(r->err, sizeof(r->err), "%s: out of memory", what);
        rc = -ENOMEM;
    }
    gw_rl_redis_disconnect(r);
    return rc;
}

/* An error reply during setup: remember it (it never echoes the password)
 * and drop the connection. */
static int reply_failure(struct gw_rl_redis *r, const char *what, redisReply *rep, int rc)
{
    snprintf(r->err, sizeof(r->err), "%s: %s", what,
             rep != NULL && rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
    freeReplyObject(rep);
    gw_rl_redis_disconnect(r);
    return rc;
}

static bool reply_ok(const redisReply *rep)
{
    return rep != NULL && rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "OK") == 0;
}

int gw_rl_redis_connect(struct gw_rl_redis *r)
{
    gw_rl_redis_disconnect(r);
    const struct gw_rl_redis_url *u = r->url;
    struct timeval tv = {.tv_sec = r->timeout_ms / 1000, .tv_usec = (r->timeout_ms % 1000) * 1000};

    if (u->transport == GW_RL_REDIS_UNIX)
        r->c = redisConnectUnixWithTimeout(u->path, tv);
    else
        r->c = redisConnectWithTimeout(u->host, u->port, tv);
    if (r->c == NULL || r->c->err)
        return io_failure(r, "connect");
    /* Children spawned later (tests, exec) must not inherit the socket. */
    (void)fcntl(r->c->fd, F_SETFD, FD_CLOEXEC);
    if (redisSetTimeout(r->c, tv) != REDIS_OK)
        return io_failure(r, "set timeout");
    if (u->transport == GW_RL_REDIS_TCP)
        (void)redisEnableKeepAlive(r->c);

    redisReply *rep;
    if (u->password != NULL) {
        if (u->username != NULL)
            rep = redisCommand(r->c, "AUTH %s %s", u->username, u->password);
        else
            rep = redisCommand(r->c, "AUTH %s", u->password);
        if (rep == NULL)
            return io_failure(r, "AUTH");
        if (!reply_ok(rep))
            return reply_failure(r, "AUTH", rep, -EACCES);
        freeReplyObject(rep);
    }
    if (u->db > 0) {
        rep = redisCommand(r->c, "SELECT %d", u->db);
        if (rep == NULL)
            return io_failure(r, "SELECT");
        if (!reply_ok(rep))
            return reply_failure(r, "SELECT", rep, -EPROTO);
        freeReplyObject(rep);
    }
    rep = redisCommand(r->c, "SCRIPT LOAD %s", gw_rl_redis_script);
    if (rep == NULL)
        return io_failure(r, "SCRIPT LOAD");
    if (rep->type != REDIS_REPLY_STRING || rep->len != 40)
        return reply_failure(r, "SCRIPT LOAD", rep, -EPROTO);
    memcpy(r->sha, rep->str, 40);
    r->sha[40] = '\0';
    freeReplyObject(rep);
    r->err[0] = '\0';
    return 0;
}

/* ---- store operations ------------------------------------------------------ */

static int redis_check(void *store, const char *key, size_t key_len, int64_t limit,
                       int64_t window_s, int64_t *count, int64_t *now_ms)
{
    struct gw_rl_redis *r = store;
    (void)limit; /* fixed window counts every request */
    if (r->c == NULL)
        return -ENOTCONN;

    char wbuf[24];
    int wlen = snprintf(wbuf, sizeof(wbuf), "%lld", (long long)window_s);
    const char *argv[5] = {"EVALSHA", r->sha, "1", key, wbuf};
    size_t lens[5] = {7, 40, 1, key_len, (size_t)wlen};

    redisReply *rep = redisCommandArgv(r->c, 5, argv, lens);
    if (rep == NULL)
        return io_failure(r, "EVALSHA");
    if (rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) == 0) {
        /* Script cache flushed (SCRIPT FLUSH, restart behind a proxy,
         * failover): EVAL runs the body and caches it again, so the next
         * check is back to EVALSHA with the same SHA1. */
        freeReplyObject(rep);
        argv[0] = "EVAL";
        lens[0] = 4;
        argv[1] = gw_rl_redis_script;
        lens[1] = sizeof(gw_rl_redis_script) - 1;
        rep = redisCommandArgv(r->c, 5, argv, lens);
        if (rep == NULL)
            return io_failure(r, "EVAL");
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        /* The server is there but refused (OOM, BUSY, READONLY, ...): not a
         * broken connection, the caller applies its failure mode. */
        snprintf(r->err, sizeof(r->err), "check: %s", rep->str);
        freeReplyObject(rep);
        return -EPROTO;
    }
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
        rep->element[0]->type != REDIS_REPLY_INTEGER ||
        rep->element[1]->type != REDIS_REPLY_INTEGER || rep->element[0]->integer < 1) {
        snprintf(r->err, sizeof(r->err), "check: unexpected reply type %d", rep->type);
        freeReplyObject(rep);
        return -EPROTO;
    }
    *count = rep->element[0]->integer;
    *now_ms = rep->element[1]->integer;
    freeReplyObject(rep);
    return 0;
}

static int redis_ping(void *store)
{
    struct gw_rl_redis *r = store;
    if (r->c == NULL)
        return -ENOTCONN;
    redisReply *rep = redisCommand(r->c, "PING");
    if (rep == NULL)
        return io_failure(r, "PING");
    bool ok = rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "PONG") == 0;
    if (!ok)
        snprintf(r->err, sizeof(r->err), "PING: %s",
                 rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
    freeReplyObject(rep);
    return ok ? 0 : -EPROTO;
}

static void redis_destroy(void *store)
{
    struct gw_rl_redis *r = store;
    if (r == NULL)
        return;
    gw_rl_redis_disconnect(r);
    free(r);
}

const struct gw_rl_store_ops gw_rl_redis_ops = {
    .name = "redis",
    .check = redis_check,
    .ping = redis_ping,
    .destroy = redis_destroy,
};
