/*
 * Redis store of the rate limiter: one synchronous hiredis connection per
 * worker (SPEC.md §1), one atomic round trip per batch of checks. The
 * counting runs in a Lua script loaded once per connection (SCRIPT LOAD)
 * and called with EVALSHA, once for all the clients of a batch; after a
 * SCRIPT FLUSH or a failover, NOSCRIPT makes us send the body once with
 * EVAL, which also caches it again on the server.
 *
 * A connection is set up without blocking (non-blocking connect, AUTH,
 * SELECT, SCRIPT LOAD and one key-less call of the script pipelined,
 * replies polled), so a worker can
 * reconnect from its loop while it keeps serving; once ready the socket is
 * switched to blocking with SO_RCVTIMEO/SO_SNDTIMEO = REDIS_TIMEOUT_MS, so
 * no command waits longer. The address comes from the configuration's one
 * REDIS_URL parser (gw_config_parse_redis_url).
 *
 * Requires the process to ignore SIGPIPE (hiredis writes with write(2)).
 */
#include "put.h"
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
 * The check, for m clients at once. KEYS[i] is "<prefix>:{<client hash>}";
 * ARGV[1] is the window in seconds, ARGV[i + 1] the number k >= 1 of
 * requests of client i counted at once (its requests in one batch). The
 * window index comes from Redis's own clock (TIME, read once), so every
 * gateway on this Redis agrees on window edges whatever its local clock
 * says. Client i's counter key is KEYS[i] .. ":" .. index, derived inside
 * the script; it is not declared in KEYS, which a single Redis (and
 * Redis 7 with effects replication) accepts. The {hash tag} keeps it in
 * KEYS[i]'s cluster slot, but Redis Cluster is not a supported target
 * (nor are several clients per call there).
 *
 * Commands: TIME once per call, INCRBY once per client, and PEXPIRE only
 * when INCRBY created the key (n == k: counters only grow, and only by
 * k >= 1, so the key was absent). The TTL is the time left to the window
 * end in ms, in (0, W*1000]: TIME's seconds are < (idx + 1) * W. The script
 * is atomic, so no other client, and no crash, can see a key between its
 * INCRBY and PEXPIRE: no key ever exists without a TTL. INCRBY runs under
 * pcall so that one bad key (WRONGTYPE) fails only its own client.
 * Returns {now_ms, n_1, ..., n_m}: the requests counted for client i are
 * n_i - k_i + 1 .. n_i; n_i is an error reply when its INCRBY failed.
 */
const char gw_rl_redis_script[] =
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    "local t = redis.call('TIME')\n"
    "local s = tonumber(t[1])\n"
    "local now_ms = s * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local w = tonumber(ARGV[1])\n"
    "local idx = math.floor(s / w)\n"
    "local suffix = ':' .. string.format('%d', idx)\n"
    "local ttl = (idx + 1) * w * 1000 - now_ms\n"
    "if ttl < 1 then ttl = 1 end\n"
    "local out = {now_ms}\n"
    "for i = 1, #KEYS do\n"
    "  local k = tonumber(ARGV[i + 1])\n"
    "  local key = KEYS[i] .. suffix\n"
    "  local n = redis.pcall('INCRBY', key, k)\n"
    "  if n == k then redis.call('PEXPIRE', key, ttl) end\n"
    "  out[i + 1] = n\n"
    "end\n"
    "return out\n";

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
    CMD_PROBE, /* the script itself, with no key: proves writes are served */
};

struct gw_rl_redis {
    const struct gw_redis_target *target; /* borrowed from struct gw_ratelimit */
    int timeout_ms;                       /* connect and command timeout */
    redisContext *c;                      /* NULL while PH_DOWN */
    enum phase phase;
    uint64_t deadline_ms;       /* gw_now_ms() at which the current phase times out */
    enum setup_cmd pending[4];  /* setup replies still expected, in order */
    int npending, next_pending; /* pending[next_pending .. npending) are outstanding */
    char sha[41];               /* SHA1 of the script, from SCRIPT LOAD */
    char err[160];              /* last failure, for logs (never the password) */
    char *cmds;                 /* RESP of a check call, built here (heap) */
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

static const char *const setup_name[] = {"AUTH", "SELECT", "SCRIPT LOAD", "probe EVAL"};

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
    case CMD_PROBE:
        if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 1 ||
            rep->element[0]->type != REDIS_REPLY_INTEGER)
            return reply_failure(r, setup_name[cmd], rep, -EPROTO);
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
    /* A connection that answers AUTH and SCRIPT LOAD may still not run the
     * check: a Redis under CLIENT PAUSE WRITE (as during a failover) holds
     * every script call. Running the script once, with no key (TIME only,
     * nothing stored), is the proof; until it answers within the handshake
     * deadline the connection is not ready and requests are decided by
     * RATE_LIMIT_FAILURE_MODE without waiting. */
    if (rc == REDIS_OK) {
        rc = redisAppendCommand(r->c, "EVAL %s 0 1", gw_rl_redis_script);
        r->pending[r->npending++] = CMD_PROBE;
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

/* One RESP bulk string: "$<len>\r\n<bytes>\r\n". */
static char *put_bulk(char *p, const char *s, size_t len)
{
    *p++ = '$';
    p = gw_put_u64(p, len);
    *p++ = '\r';
    *p++ = '\n';
    memcpy(p, s, len);
    p += len;
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

/* One RESP bulk string holding v in decimal. */
static char *put_bulk_u64(char *p, uint64_t v)
{
    char num[GW_PUT_U64_DIGITS];
    return put_bulk(p, num, (size_t)(gw_put_u64(num, v) - num));
}

/* Sanity bounds on what a store reply may carry: a Redis clock before year
 * 142,000 and a count far below int64 overflow. */
#define STORE_MS_MAX ((int64_t)1 << 52)
#define COUNT_MAX    ((int64_t)1 << 62)
/* Bytes put_bulk writes at most for len bytes. */
#define BULK_MAX(len) ((len) + 26)

/* Renders "<cmd> <script> <n> <key>... <window> <incr>..." (EVALSHA <sha>
 * or EVAL <body>) into r->cmds, grown as needed: hiredis then formats
 * nothing and allocates nothing per argument. Returns the bytes or
 * -ENOMEM. */
static ssize_t render_check(struct gw_rl_redis *r, bool eval, const char *const keys[],
                            const size_t key_lens[], const int64_t incrs[], size_t n,
                            const char *wbuf, size_t wlen)
{
    const char *script = eval ? gw_rl_redis_script : r->sha;
    size_t slen = eval ? sizeof(gw_rl_redis_script) - 1 : 40;
    size_t need = 24 + BULK_MAX(7) + BULK_MAX(slen) + BULK_MAX(20) + BULK_MAX(wlen);
    for (size_t i = 0; i < n; i++)
        need += BULK_MAX(key_lens[i]) + BULK_MAX(20);
    if (need > r->cmds_cap) {
        size_t cap = GW_MAX(need, r->cmds_cap * 2);
        char *nb = realloc(r->cmds, cap);
        if (nb == NULL)
            return -ENOMEM;
        r->cmds = nb;
        r->cmds_cap = cap;
    }
    char *p = r->cmds;
    *p++ = '*';
    p = gw_put_u64(p, 4 + 2 * (uint64_t)n);
    *p++ = '\r';
    *p++ = '\n';
    p = eval ? put_bulk(p, "EVAL", 4) : put_bulk(p, "EVALSHA", 7);
    p = put_bulk(p, script, slen);
    p = put_bulk_u64(p, n);
    for (size_t i = 0; i < n; i++)
        p = put_bulk(p, keys[i], key_lens[i]);
    p = put_bulk(p, wbuf, wlen);
    for (size_t i = 0; i < n; i++)
        p = put_bulk_u64(p, incrs != NULL ? (uint64_t)incrs[i] : 1);
    return p - r->cmds;
}

static bool is_noscript(const redisReply *rep)
{
    return rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) == 0;
}

/* Takes the reply of one call for n clients (freed here). Per client rcs[i]
 * is 0 with counts[i] (>= its incr) and now_ms[i], or -EPROTO when its
 * INCRBY failed; every client gets -EPROTO when the server refused the
 * call (OOM, BUSY, READONLY, ...) or answered something else. -EPROTO is
 * not a broken connection: the caller applies its failure mode. */
static void take_check_reply(struct gw_rl_redis *r, redisReply *rep, const int64_t incrs[],
                             size_t n, int64_t counts[], int64_t now_ms[], int rcs[])
{
    if (rep->type == REDIS_REPLY_ERROR) {
        snprintf(r->err, sizeof(r->err), "check: %s", rep->str);
    } else if (rep->type != REDIS_REPLY_ARRAY || rep->elements != n + 1 ||
               rep->element[0]->type != REDIS_REPLY_INTEGER || rep->element[0]->integer <= 0 ||
               rep->element[0]->integer > STORE_MS_MAX) {
        snprintf(r->err, sizeof(r->err), "check: unexpected reply type %d", rep->type);
    } else {
        for (size_t i = 0; i < n; i++) {
            const redisReply *e = rep->element[i + 1];
            /* A count no real Redis reaches is refused too: the caller
             * numbers requests from it and must not overflow. */
            if (e->type == REDIS_REPLY_INTEGER && e->integer >= (incrs != NULL ? incrs[i] : 1) &&
                e->integer <= COUNT_MAX) {
                counts[i] = e->integer;
                now_ms[i] = rep->element[0]->integer;
                rcs[i] = 0;
            } else {
                snprintf(r->err, sizeof(r->err), "check: %s",
                         e->type == REDIS_REPLY_ERROR ? e->str : "unexpected count");
                rcs[i] = -EPROTO;
            }
        }
        freeReplyObject(rep);
        return;
    }
    for (size_t i = 0; i < n; i++)
        rcs[i] = -EPROTO;
    freeReplyObject(rep);
}

static void fail_all(int rcs[], size_t n, int rc)
{
    for (size_t i = 0; i < n; i++)
        rcs[i] = rc;
}

/* Sends one call (EVALSHA, or EVAL when eval) for the n clients and reads
 * its reply into *rep. 0, or the connection's -errno (then disconnected). */
static int call_check(struct gw_rl_redis *r, bool eval, const char *const keys[],
                      const size_t key_lens[], const int64_t incrs[], size_t n, int64_t window_s,
                      redisReply **rep)
{
    const char *what = eval ? "EVAL" : "EVALSHA";
    char wbuf[24];
    size_t wlen = (size_t)(gw_put_u64(wbuf, (uint64_t)window_s) - wbuf);
    ssize_t len = render_check(r, eval, keys, key_lens, incrs, n, wbuf, wlen);
    if (len < 0) {
        snprintf(r->err, sizeof(r->err), "%s: out of memory", what);
        gw_rl_redis_disconnect(r); /* nothing was sent: the next connect starts clean */
        return -ENOMEM;
    }
    /* One buffer, one write, one round trip; the read is bounded by the
     * socket timeout. */
    if (redisAppendFormattedCommand(r->c, r->cmds, (size_t)len) != REDIS_OK)
        return io_failure(r, what);
    void *reply = NULL;
    if (redisGetReply(r->c, &reply) != REDIS_OK || reply == NULL)
        return io_failure(r, what);
    *rep = reply;
    return 0;
}

int gw_rl_redis_check_many(struct gw_rl_redis *r, const char *const keys[], const size_t key_lens[],
                           const int64_t incrs[], size_t n, int64_t window_s, int64_t counts[],
                           int64_t now_ms[], int rcs[])
{
    if (r->phase != PH_READY) {
        fail_all(rcs, n, -ENOTCONN);
        return -ENOTCONN;
    }
    if (n == 0)
        return 0;
    redisReply *rep = NULL;
    int rc = call_check(r, false, keys, key_lens, incrs, n, window_s, &rep);
    if (rc == 0 && is_noscript(rep)) {
        /* Script cache flushed (SCRIPT FLUSH, restart behind a proxy,
         * failover): the script did not run, nothing was counted. EVAL
         * runs the body and caches it again, so the next call is back to
         * EVALSHA with the same SHA1. */
        freeReplyObject(rep);
        rep = NULL;
        rc = call_check(r, true, keys, key_lens, incrs, n, window_s, &rep);
    }
    if (rc != 0) {
        fail_all(rcs, n, rc);
        return rc;
    }
    take_check_reply(r, rep, incrs, n, counts, now_ms, rcs);
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

static int redis_check_many(void *store, const char *const keys[], const size_t key_lens[],
                            const int64_t incrs[], size_t n, int64_t window_s, int64_t counts[],
                            int64_t now_ms[], int rcs[])
{
    return gw_rl_redis_check_many(store, keys, key_lens, incrs, n, window_s, counts, now_ms, rcs);
}

static int redis_connect(void *store)
{
    return gw_rl_redis_connect(store);
}

static int redis_connect_start(void *store, uint64_t mono_ms)
{
    return gw_rl_redis_connect_start(store, mono_ms);
}

static int redis_connect_poll(void *store, uint64_t mono_ms)
{
    return gw_rl_redis_connect_poll(store, mono_ms);
}

static int redis_probe(void *store)
{
    return gw_rl_redis_probe(store);
}

static void redis_disconnect(void *store)
{
    gw_rl_redis_disconnect(store);
}

static const char *redis_last_error(const void *store)
{
    return gw_rl_redis_last_error(store);
}

const struct gw_rl_store_ops gw_rl_redis_ops = {
    .name = "redis",
    .check = redis_check,
    .check_many = redis_check_many,
    .ping = redis_ping,
    .connect = redis_connect,
    .connect_start = redis_connect_start,
    .connect_poll = redis_connect_poll,
    .probe = redis_probe,
    .disconnect = redis_disconnect,
    .last_error = redis_last_error,
    .destroy = redis_destroy,
};
