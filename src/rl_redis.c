/*
 * Redis store of the rate limiter: one synchronous hiredis connection per
 * worker (SPEC.md §1), one atomic round trip per check. The counting runs
 * in a Lua script loaded once per connection (SCRIPT LOAD) and called with
 * EVALSHA; after a SCRIPT FLUSH or a failover, NOSCRIPT makes us send the
 * body once with EVAL, which also caches it again on the server.
 *
 * A connection is set up without blocking (non-blocking connect, AUTH,
 * SELECT and SCRIPT LOAD pipelined, replies polled), so a worker can
 * reconnect from its loop while it keeps serving; once ready the socket is
 * switched to blocking with SO_RCVTIMEO/SO_SNDTIMEO = REDIS_TIMEOUT_MS, so
 * no command waits longer. The address comes from the configuration's one
 * REDIS_URL parser (gw_config_parse_redis_url).
 *
 * Requires the process to ignore SIGPIPE (hiredis writes with write(2)).
 */
#include "ratelimit_int.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>

/*
 * The check. KEYS[1] is "<prefix>:{<client hash>}"; ARGV[1] is the window
 * in seconds, ARGV[2] the number k >= 1 of requests counted at once (the
 * requests of one client in one batch). The window index comes from
 * Redis's own clock (TIME), so every gateway on this Redis agrees on window
 * edges whatever its local clock says. The counter key is KEYS[1] .. ":" ..
 * index, derived inside the script; it is not declared in KEYS, which a
 * single Redis (and Redis 7 with effects replication) accepts. The {hash
 * tag} keeps it in KEYS[1]'s cluster slot, but Redis Cluster is not a
 * supported target.
 *
 * Commands: TIME and INCRBY on every call, PEXPIRE only when INCRBY
 * created the key (n == k: counters only grow, and only by k >= 1, so the
 * key was absent). The TTL is the time left to the window end in ms, in
 * (0, W*1000]: TIME's seconds are < (idx + 1) * W. The script is atomic,
 * so no other client, and no crash, can see the key between INCRBY and
 * PEXPIRE: no key ever exists without a TTL. Returns {n, now_ms}: the
 * requests counted are n - k + 1 .. n.
 */
const char gw_rl_redis_script[] =
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    "local t = redis.call('TIME')\n"
    "local s = tonumber(t[1])\n"
    "local now_ms = s * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local w = tonumber(ARGV[1])\n"
    "local k = tonumber(ARGV[2])\n"
    "local idx = math.floor(s / w)\n"
    "local key = KEYS[1] .. ':' .. string.format('%d', idx)\n"
    "local n = redis.call('INCRBY', key, k)\n"
    "if n == k then\n"
    "  local ttl = (idx + 1) * w * 1000 - now_ms\n"
    "  if ttl < 1 then ttl = 1 end\n"
    "  redis.call('PEXPIRE', key, ttl)\n"
    "end\n"
    "return {n, now_ms}\n";

/* Where a connection attempt stands. READY is the only state in which
 * checks run; the others answer -ENOTCONN at once. */
enum phase {
    PH_DOWN = 0,   /* no socket */
    PH_CONNECTING, /* non-blocking connect(2) in progress */
    PH_HANDSHAKE,  /* AUTH / SELECT / SCRIPT LOAD sent, replies pending */
    PH_READY,      /* blocking socket with timeouts, script loaded */
};

/* The setup commands, in the order they are pipelined and answered. */
enum setup_cmd {
    CMD_AUTH,
    CMD_SELECT,
    CMD_SCRIPT_LOAD,
};

struct gw_rl_redis {
    const struct gw_redis_target *target; /* borrowed from struct gw_ratelimit */
    int timeout_ms;                       /* connect and command timeout */
    redisContext *c;                      /* NULL while PH_DOWN */
    enum phase phase;
    uint64_t deadline_ms;       /* gw_now_ms() at which the current phase times out */
    enum setup_cmd pending[3];  /* setup replies still expected, in order */
    int npending, next_pending; /* pending[next_pending .. npending) are outstanding */
    char sha[41];               /* SHA1 of the script, from SCRIPT LOAD */
    char err[160];              /* last failure, for logs (never the password) */
    char *cmds;                 /* RESP of a pipeline of checks, built here (heap) */
    size_t cmds_cap;            /* bytes allocated at cmds */
};

/* ---- connection ------------------------------------------------------------ */

int gw_rl_redis_create(struct gw_rl_redis **out, const struct gw_redis_target *target,
                       int timeout_ms)
{
    struct gw_rl_redis *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    r->target = target;
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
    r->phase = PH_DOWN;
    r->npending = r->next_pending = 0;
}

bool gw_rl_redis_connected(const struct gw_rl_redis *r)
{
    return r->phase == PH_READY;
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
        snprintf(r->err, sizeof(r->err), "%s: %s", what,
                 r->c->err ? r->c->errstr : strerror(saved));
    } else {
        snprintf(r->err, sizeof(r->err), "%s: out of memory", what);
        rc = -ENOMEM;
    }
    gw_rl_redis_disconnect(r);
    return rc;
}

/* A failure described by an errno value (poll, SO_ERROR, deadline). */
static int errno_failure(struct gw_rl_redis *r, const char *what, int err)
{
    snprintf(r->err, sizeof(r->err), "%s: %s", what,
             err == ETIMEDOUT ? "timed out" : strerror(err));
    gw_rl_redis_disconnect(r);
    return -err;
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

static const char *const setup_name[] = {"AUTH", "SELECT", "SCRIPT LOAD"};

/* Checks one setup reply (owned: freed here). 0, or the failure's -errno. */
static int take_setup_reply(struct gw_rl_redis *r, enum setup_cmd cmd, redisReply *rep)
{
    switch (cmd) {
    case CMD_AUTH:
        if (!reply_ok(rep))
            return reply_failure(r, setup_name[cmd], rep, -EACCES);
        break;
    case CMD_SELECT:
        if (!reply_ok(rep))
            return reply_failure(r, setup_name[cmd], rep, -EPROTO);
        break;
    case CMD_SCRIPT_LOAD:
        if (rep->type != REDIS_REPLY_STRING || rep->len != 40)
            return reply_failure(r, setup_name[cmd], rep, -EPROTO);
        memcpy(r->sha, rep->str, 40);
        r->sha[40] = '\0';
        break;
    }
    freeReplyObject(rep);
    return 0;
}

/* The handshake is done: from now on the socket is blocking with
 * SO_RCVTIMEO/SO_SNDTIMEO = timeout_ms, so every command is bounded. */
static int make_ready(struct gw_rl_redis *r)
{
    struct timeval tv = {.tv_sec = r->timeout_ms / 1000, .tv_usec = (r->timeout_ms % 1000) * 1000};
    int fl = fcntl(r->c->fd, F_GETFL);
    if (fl < 0 || fcntl(r->c->fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
        return errno_failure(r, "fcntl", errno);
    /* hiredis keys blocking reads (redisGetReply looping until a reply)
     * on this flag; the context was created non-blocking. */
    r->c->flags |= REDIS_BLOCK;
    if (redisSetTimeout(r->c, tv) != REDIS_OK)
        return io_failure(r, "set timeout");
    if (r->target->unix_path == NULL)
        (void)redisEnableKeepAlive(r->c);
    r->phase = PH_READY;
    r->err[0] = '\0';
    return 0;
}

/* Advances the attempt, waiting at most wait_ms (0 = never block) for the
 * socket. Returns 0 when ready, -EINPROGRESS when more is needed, else the
 * failure's -errno (the store is then PH_DOWN). */
static int connect_step(struct gw_rl_redis *r, uint64_t now_ms, int wait_ms)
{
    for (;;) {
        if (r->phase == PH_READY)
            return 0;
        if (r->phase == PH_DOWN)
            return -ENOTCONN;
        short want = POLLIN;
        if (r->phase == PH_CONNECTING) {
            want = POLLOUT;
        } else {
            /* Hand the replies that are already buffered to the checks. */
            while (r->next_pending < r->npending) {
                void *rep = NULL;
                if (redisGetReplyFromReader(r->c, &rep) != REDIS_OK)
                    return io_failure(r, setup_name[r->pending[r->next_pending]]);
                if (rep == NULL)
                    break;
                int rc = take_setup_reply(r, r->pending[r->next_pending++], rep);
                if (rc != 0)
                    return rc;
            }
            if (r->next_pending == r->npending)
                return make_ready(r);
            int done = 0;
            if (redisBufferWrite(r->c, &done) != REDIS_OK)
                return io_failure(r, "write");
            if (!done)
                want |= POLLOUT;
        }
        if (now_ms >= r->deadline_ms)
            return errno_failure(r, r->phase == PH_CONNECTING ? "connect" : "handshake", ETIMEDOUT);
        struct pollfd pfd = {.fd = r->c->fd, .events = want};
        int left = (int)GW_MIN((uint64_t)wait_ms, r->deadline_ms - now_ms);
        int n = poll(&pfd, 1, left);
        if (n < 0 && errno != EINTR)
            return errno_failure(r, "poll", errno);
        if (n <= 0) {
            if (wait_ms == 0)
                return -EINPROGRESS;
            uint64_t later = gw_now_ms();
            wait_ms -= (int)GW_MIN((uint64_t)wait_ms, later - now_ms);
            now_ms = later;
            continue;
        }
        if (r->phase == PH_CONNECTING) {
            int soerr = 0;
            socklen_t len = sizeof(soerr);
            if (getsockopt(r->c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0)
                soerr = errno;
            if (soerr != 0)
                return errno_failure(r, "connect", soerr);
            r->phase = PH_HANDSHAKE;
            r->deadline_ms = now_ms + (uint64_t)r->timeout_ms; /* its own timeout */
        } else if (pfd.revents & (POLLIN | POLLERR | POLLHUP)) {
            if (redisBufferRead(r->c) != REDIS_OK)
                return io_failure(r, "read");
        }
    }
}

int gw_rl_redis_connect_start(struct gw_rl_redis *r, uint64_t now_ms)
{
    gw_rl_redis_disconnect(r);
    const struct gw_redis_target *t = r->target;
    /* Non-blocking connect: a Redis that does not answer SYNs (or a full
     * backlog) costs the worker loop nothing; only the attempt's deadline. */
    if (t->unix_path != NULL)
        r->c = redisConnectUnixNonBlock(t->unix_path);
    else
        r->c = redisConnectNonBlock(t->host, t->port);
    if (r->c == NULL || r->c->err)
        return io_failure(r, "connect");
    /* Children spawned later (tests, exec) must not inherit the socket. */
    (void)fcntl(r->c->fd, F_SETFD, FD_CLOEXEC);

    /* Pipeline the whole setup now; the replies are read in order. */
    int rc = REDIS_OK;
    if (t->password != NULL) {
        if (t->username != NULL)
            rc = redisAppendCommand(r->c, "AUTH %s %s", t->username, t->password);
        else
            rc = redisAppendCommand(r->c, "AUTH %s", t->password);
        r->pending[r->npending++] = CMD_AUTH;
    }
    if (rc == REDIS_OK && t->db > 0) {
        rc = redisAppendCommand(r->c, "SELECT %d", t->db);
        r->pending[r->npending++] = CMD_SELECT;
    }
    if (rc == REDIS_OK) {
        rc = redisAppendCommand(r->c, "SCRIPT LOAD %s", gw_rl_redis_script);
        r->pending[r->npending++] = CMD_SCRIPT_LOAD;
    }
    if (rc != REDIS_OK)
        return io_failure(r, "setup");
    r->phase = PH_CONNECTING;
    r->deadline_ms = now_ms + (uint64_t)r->timeout_ms;
    return connect_step(r, now_ms, 0);
}

int gw_rl_redis_connect_poll(struct gw_rl_redis *r, uint64_t now_ms)
{
    return connect_step(r, now_ms, 0);
}

int gw_rl_redis_probe(struct gw_rl_redis *r)
{
    if (r->phase != PH_READY)
        return -ENOTCONN;
    /* Between commands a healthy connection has nothing to read: RESP2
     * sends no unsolicited data. Readable means EOF (the server died or
     * closed us for idleness), an error, or a desynchronised stream. */
    struct pollfd pfd = {.fd = r->c->fd, .events = POLLIN};
    if (poll(&pfd, 1, 0) <= 0)
        return 0;
    char byte;
    ssize_t n = recv(r->c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    int err = n == 0 ? ECONNRESET : n < 0 ? errno : EPROTO;
    snprintf(r->err, sizeof(r->err), "idle connection: %s",
             n == 0  ? "closed by the server"
             : n < 0 ? strerror(err)
                     : "unexpected data");
    gw_rl_redis_disconnect(r);
    return -err;
}

int gw_rl_redis_connect(struct gw_rl_redis *r)
{
    uint64_t now = gw_now_ms();
    int rc = gw_rl_redis_connect_start(r, now);
    /* Each phase has its own deadline, so two timeouts bound the loop. */
    while (rc == -EINPROGRESS)
        rc = connect_step(r, gw_now_ms(), 2 * r->timeout_ms + 10);
    return rc;
}

/* ---- store operations ------------------------------------------------------ */

/* Decimal digits of v (no sign: every number sent is >= 0) at p; returns
 * the count. */
static size_t put_u64(char *p, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < n; i++)
        p[i] = tmp[n - 1 - i];
    return n;
}

/* One RESP bulk string: "$<len>\r\n<bytes>\r\n". */
static char *put_bulk(char *p, const char *s, size_t len)
{
    *p++ = '$';
    p += put_u64(p, len);
    *p++ = '\r';
    *p++ = '\n';
    memcpy(p, s, len);
    p += len;
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

/* Bytes put_bulk writes at most for len bytes. */
#define BULK_MAX(len) ((len) + 26)

/* Renders "EVALSHA <sha> 1 <key> <window> <incr>" for every check into
 * r->cmds (grown as needed) and queues it in one append: hiredis formats
 * nothing and allocates nothing per command. Returns the bytes or -ENOMEM. */
static ssize_t render_evalsha(struct gw_rl_redis *r, const char *const keys[],
                              const size_t key_lens[], const int64_t incrs[], size_t n,
                              const char *wbuf, size_t wlen)
{
    size_t need = 0;
    for (size_t i = 0; i < n; i++)
        need += 4 + BULK_MAX(7) + BULK_MAX(40) + BULK_MAX(1) + BULK_MAX(key_lens[i]) +
                BULK_MAX(wlen) + BULK_MAX(20);
    if (need > r->cmds_cap) {
        size_t cap = GW_MAX(need, r->cmds_cap * 2);
        char *nb = realloc(r->cmds, cap);
        if (nb == NULL)
            return -ENOMEM;
        r->cmds = nb;
        r->cmds_cap = cap;
    }
    char *p = r->cmds, num[20];
    for (size_t i = 0; i < n; i++) {
        memcpy(p, "*6\r\n", 4);
        p += 4;
        p = put_bulk(p, "EVALSHA", 7);
        p = put_bulk(p, r->sha, 40);
        p = put_bulk(p, "1", 1);
        p = put_bulk(p, keys[i], key_lens[i]);
        p = put_bulk(p, wbuf, wlen);
        size_t il = put_u64(num, incrs != NULL ? (uint64_t)incrs[i] : 1);
        p = put_bulk(p, num, il);
    }
    return p - r->cmds;
}

static bool is_noscript(const redisReply *rep)
{
    return rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) == 0;
}

/* Takes one check reply (freed here) for an increment of incr: 0 with
 * *count (>= incr) and *now_ms, or -EPROTO when the server refused (OOM,
 * BUSY, READONLY, ...) or answered something else: not a broken
 * connection, the caller applies its failure mode. */
static int take_check_reply(struct gw_rl_redis *r, redisReply *rep, int64_t incr, int64_t *count,
                            int64_t *now_ms)
{
    int rc = 0;
    if (rep->type == REDIS_REPLY_ERROR) {
        snprintf(r->err, sizeof(r->err), "check: %s", rep->str);
        rc = -EPROTO;
    } else if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
               rep->element[0]->type != REDIS_REPLY_INTEGER ||
               rep->element[1]->type != REDIS_REPLY_INTEGER || rep->element[0]->integer < incr) {
        snprintf(r->err, sizeof(r->err), "check: unexpected reply type %d", rep->type);
        rc = -EPROTO;
    } else {
        *count = rep->element[0]->integer;
        *now_ms = rep->element[1]->integer;
    }
    freeReplyObject(rep);
    return rc;
}

#define RC_NOSCRIPT 1 /* internal mark in rcs[]: answered NOSCRIPT, to resend */

/* After an I/O failure at reply i: that check, every later one and every
 * one still waiting for its EVAL get rc. */
static int fail_rest(int rcs[], size_t from, size_t n, int rc)
{
    for (size_t j = 0; j < n; j++)
        if (j >= from || rcs[j] == RC_NOSCRIPT)
            rcs[j] = rc;
    return rc;
}

int gw_rl_redis_check_many(struct gw_rl_redis *r, const char *const keys[], const size_t key_lens[],
                           const int64_t incrs[], size_t n, int64_t window_s, int64_t counts[],
                           int64_t now_ms[], int rcs[])
{
    if (r->phase != PH_READY)
        return fail_rest(rcs, 0, n, -ENOTCONN);
    if (n == 0)
        return 0;
    char wbuf[24];
    size_t wlen = put_u64(wbuf, (uint64_t)window_s);

    /* Every command is buffered first; the first read flushes them all
     * (one write, one round trip), each read bounded by the timeout. */
    ssize_t len = render_evalsha(r, keys, key_lens, incrs, n, wbuf, wlen);
    if (len < 0) {
        snprintf(r->err, sizeof(r->err), "EVALSHA: out of memory");
        gw_rl_redis_disconnect(r); /* nothing was sent: the next connect starts clean */
        return fail_rest(rcs, 0, n, -ENOMEM);
    }
    if (redisAppendFormattedCommand(r->c, r->cmds, (size_t)len) != REDIS_OK)
        return fail_rest(rcs, 0, n, io_failure(r, "EVALSHA"));
    size_t noscript = 0;
    for (size_t i = 0; i < n; i++) {
        void *rep = NULL;
        if (redisGetReply(r->c, &rep) != REDIS_OK || rep == NULL)
            return fail_rest(rcs, i, n, io_failure(r, "EVALSHA"));
        if (is_noscript(rep)) {
            /* Script cache flushed (SCRIPT FLUSH, restart behind a proxy,
             * failover): the script did not run, nothing was counted. EVAL
             * runs the body and caches it again, so the next check is back
             * to EVALSHA with the same SHA1. */
            freeReplyObject(rep);
            rcs[i] = RC_NOSCRIPT;
            noscript++;
            continue;
        }
        rcs[i] = take_check_reply(r, rep, incrs != NULL ? incrs[i] : 1, &counts[i], &now_ms[i]);
    }
    if (noscript == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (rcs[i] != RC_NOSCRIPT)
            continue;
        char num[20];
        size_t il = put_u64(num, incrs != NULL ? (uint64_t)incrs[i] : 1);
        const char *argv[] = {"EVAL", gw_rl_redis_script, "1", keys[i], wbuf, num};
        const size_t lens[] = {4, sizeof(gw_rl_redis_script) - 1, 1, key_lens[i], wlen, il};
        if (redisAppendCommandArgv(r->c, 6, argv, lens) != REDIS_OK)
            return fail_rest(rcs, n, n, io_failure(r, "EVAL"));
    }
    for (size_t i = 0; i < n; i++) {
        if (rcs[i] != RC_NOSCRIPT)
            continue;
        void *rep = NULL;
        if (redisGetReply(r->c, &rep) != REDIS_OK || rep == NULL)
            return fail_rest(rcs, n, n, io_failure(r, "EVAL"));
        rcs[i] = take_check_reply(r, rep, incrs != NULL ? incrs[i] : 1, &counts[i], &now_ms[i]);
    }
    return 0;
}

static int redis_check(void *store, const char *key, size_t key_len, int64_t incr, int64_t limit,
                       int64_t window_s, int64_t *count, int64_t *now_ms)
{
    (void)limit; /* fixed window counts every request */
    int rc1 = 0;
    int rc = gw_rl_redis_check_many(store, &key, &key_len, &incr, 1, window_s, count, now_ms, &rc1);
    return rc != 0 ? rc : rc1;
}

static int redis_ping(void *store)
{
    struct gw_rl_redis *r = store;
    if (r->phase != PH_READY)
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
    free(r->cmds);
    free(r);
}

const struct gw_rl_store_ops gw_rl_redis_ops = {
    .name = "redis",
    .check = redis_check,
    .ping = redis_ping,
    .destroy = redis_destroy,
};
