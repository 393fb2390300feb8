/*
 * Redis store of the rate limiter: one synchronous Redis connection per
 * worker (SPEC.md §1), one atomic round trip per batch of checks. The
 * counting runs in a Lua script loaded once per connection (SCRIPT LOAD)
 * and called with EVALSHA, once for all the clients of a batch; after a
 * SCRIPT FLUSH or a failover, NOSCRIPT makes us send the body once with
 * EVAL, which also caches it again on the server.
 *
 * The link is redis_conn.c's transport (a non-blocking socket, TLS for
 * rediss://; hiredis only formats commands and parses replies). A
 * connection is set up without blocking (non-blocking connect and TLS
 * handshake, AUTH, SELECT, SCRIPT LOAD and one key-less call of the script
 * pipelined, replies polled), so a worker can reconnect from its loop
 * while it keeps serving; once ready every command waits at most
 * REDIS_TIMEOUT_MS in poll(2). The address comes from the configuration's
 * one REDIS_URL parser (gw_config_redis_target).
 *
 * Sentinel mode (REDIS_SENTINELS): each connect first asks the sentinels for
 * the master (redis_sentinel.c), then checks with ROLE that it is one. While
 * the sentinels answer but their master does not serve (it died and they
 * have not failed over yet, or it is still a replica), the attempt stays in
 * progress and asks them again every SENTINEL_REASK_MS, for at most
 * SENTINEL_PERSIST_MS: the limiter is back on the new master a few hundred
 * ms after the sentinels name it, whatever the caller's reconnect backoff.
 * A connection also drops and rediscovers on a READONLY reply, and when a
 * background query (about one per second, from the periodic probe) names another
 * master.
 */
#include "gw/resolve.h"
#include "put.h"
#include "ratelimit_int.h"
#include "redis_conn.h"
#include "redis_sentinel.h"

#include "gw/log.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * The decision of a pass (ratelimit_int.h struct gw_rl_pass), for every
 * unit of a batch in one call. KEYS are the state-key bases
 * "<prefix>:{<client hash>}:<limit>:<policy>"; ARGV is
 *   the mode (0 decide, 1 peek: never commit, 2 delete: DEL every op's
 *   state keys, the count in the op's first number),
 *   S, then S specs of 5 numbers (algorithm 0 fixed / 1 sliding / 2 token
 *   bucket, L, W in ms, B, delay in ms), NK and NK key bases (see below),
 *   U, then per unit: its op count n and n pairs (key index, spec index),
 *   1-based.
 * The clock is Redis's own (TIME, read once), so every gateway on this
 * Redis agrees on window edges and bucket times whatever its local clock
 * says. Units are decided in order, each seeing the commits of the ones
 * before: every op of a unit is checked, and only when all allow are they
 * all committed (a refused request consumes from no rate). State is read
 * once per key (GET, under pcall so a WRONGTYPE key fails only its unit,
 * answer 3) and written once at the end: a new key with SET PX (fixed
 * window: to the window end; sliding: to the end of the next window; token
 * bucket: until the bucket is full again), an existing counter with SET
 * KEEPTTL, a bucket's TAT always with its new PX. The script is atomic, so
 * nothing can see a key without its TTL. State keys are derived inside the
 * script (":fw:<W>:<i>", ":sw:<W>:<i>", ":tb"); they share KEYS[i]'s hash
 * tag, hence its cluster slot. Lua numbers are doubles: the sliding
 * window's products (L*W up to 3.2e19) are compared exactly, directly
 * when L*W < 2^53 (every product is then exact) and in base-2^24 limbs
 * otherwise; every other quantity stays below 2^53 (microsecond clocks, and
 * B*T bounded by the rules' validation).
 * Mode 3 (refund, Redis Cluster: a request whose rates live in several
 * slots was refused by another slot) takes back one commit of every op,
 * as decided at the Unix µs given as the last ARGV (the window of that
 * moment): a counter is decremented, a bucket's TAT moved back by T, both
 * with KEEPTTL; a key gone since is left alone; the units answer 2.
 * KEYS past the ones the units name are not read: Cluster mode declares
 * the state keys there so the server routes (and redirects) the call by
 * them. After the specs comes NK: 0, the key bases are KEYS; else the NK
 * bases follow in ARGV and are not declared (Cluster mode's one call per
 * node, whose keys span slots: legal for a script without flags as long
 * as every key is on the node; a key that is not answers 4 for its unit,
 * and the unit is sent again by slot).
 * Returns {sec, usec, then per unit: its result (1 allowed, 2 refused,
 * 3 a key of another type, 4 a key not on this node) and two numbers per op: the state it was
 * decided on (fixed: count, 0; sliding: previous and current counts; bucket: TAT in µs, 0)}.
 */
const char gw_rl_redis_script[] =
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    "local t = redis.call('TIME')\n"
    "local sec, usec = tonumber(t[1]), tonumber(t[2])\n"
    "local mode = tonumber(ARGV[1]) or 0\n"
    "if mode == 3 then\n"
    "  local at = tonumber(ARGV[#ARGV]) or 0\n"
    "  sec, usec = math.floor(at / 1000000), at % 1000000\n"
    "end\n"
    "local now_us = sec * 1000000 + usec\n"
    "local now_ms = sec * 1000 + math.floor(usec / 1000)\n"
    "local floor = math.floor\n"
    "local B24 = 16777216\n"
    "local function mul(a, b)\n"
    "  local ah, al = floor(a / B24), a % B24\n"
    "  local bh, bl = floor(b / B24), b % B24\n"
    "  local lo = al * bl\n"
    "  local mid = ah * bl + al * bh + floor(lo / B24)\n"
    "  return ah * bh + floor(mid / B24), mid % B24, lo % B24\n"
    "end\n"
    "local function le(a, b, c, d)\n"
    "  local h1, m1, l1 = mul(a, b)\n"
    "  local h2, m2, l2 = mul(c, d)\n"
    "  if h1 ~= h2 then return h1 < h2 end\n"
    "  if m1 ~= m2 then return m1 < m2 end\n"
    "  return l1 <= l2\n"
    "end\n"
    "local function fmt(x) return string.format('%d', x) end\n"
    "local val, fresh, ttl, dirty, nd = {}, {}, {}, {}, 0\n"
    "local gerr = 3\n"
    "local function get(k)\n"
    "  local v = val[k]\n"
    "  if v == nil then\n"
    "    local r = redis.pcall('GET', k)\n"
    "    if type(r) == 'table' then\n"
    "      gerr = string.find(tostring(r.err), 'WRONGTYPE', 1, true) and 3 or 4\n"
    "      return nil\n"
    "    end\n"
    "    if r == false then v = 0; fresh[k] = true\n"
    "    else v = tonumber(r); if v == nil then return nil end end\n"
    "    val[k] = v\n"
    "  end\n"
    "  return v\n"
    "end\n"
    "local ns = tonumber(ARGV[2]) or 0\n"
    "local P = {}\n"
    "local a = 3\n"
    "for s = 1, ns do\n"
    "  local al, w, l = tonumber(ARGV[a]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 1])\n"
    "  local o = (s - 1) * 10\n"
    "  P[o + 1], P[o + 2], P[o + 3], P[o + 4], P[o + 5] = al, l, w, tonumber(ARGV[a + 3]), "
    "tonumber(ARGV[a + 4])\n"
    "  if al == 2 then\n"
    "    local tt = floor(w * 1000 / l)\n"
    "    if tt < 1 then tt = 1 end\n"
    "    P[o + 6], P[o + 7] = tt, ':tb'\n"
    "  else\n"
    "    local idx = floor(now_ms / w)\n"
    "    local pre = (al == 1 and ':sw:' or ':fw:') .. fmt(w) .. ':'\n"
    "    P[o + 7], P[o + 8], P[o + 9] = pre .. fmt(idx), pre .. fmt(idx - 1), now_ms - idx * w\n"
    "    P[o + 10] = (idx + (al == 1 and 2 or 1)) * w - now_ms\n"
    "  end\n"
    "  a = a + 5\n"
    "end\n"
    "local K = KEYS\n"
    "local nk = tonumber(ARGV[a]) or 0\n"
    "a = a + 1\n"
    "if nk > 0 then\n"
    "  K = {}\n"
    "  for i = 1, nk do K[i] = ARGV[a + i - 1] end\n"
    "  a = a + nk\n"
    "end\n"
    "local nu = tonumber(ARGV[a]) or 0\n"
    "a = a + 1\n"
    "local out, no = {sec, usec}, 2\n"
    "local Q = {}\n"
    "for u = 1, nu do\n"
    "  local n = tonumber(ARGV[a])\n"
    "  a = a + 1\n"
    "  local ok, bad = true, false\n"
    "  local at = no + 1\n"
    "  no = no + 1 + 2 * n\n"
    "  for j = 1, n do\n"
    "    local key = K[tonumber(ARGV[a])]\n"
    "    local o = (tonumber(ARGV[a + 1]) - 1) * 10\n"
    "    a = a + 2\n"
    "    local al, sa, sb = P[o + 1], 0, 0\n"
    "    local k1 = key .. P[o + 7]\n"
    "    local q = 4 * j\n"
    "    Q[q - 3], Q[q] = k1, al == 2\n"
    "    if mode == 2 then\n"
    "      if al == 2 then sa = redis.call('DEL', k1)\n"
    "      else sa = redis.call('DEL', k1, key .. P[o + 8]) end\n"
    "      ok = false\n"
    "    elseif mode == 3 then\n"
    "      local v = get(k1)\n"
    "      if v ~= nil and not fresh[k1] then\n"
    "        if al == 2 then v = v - P[o + 6] else v = v - 1 end\n"
    "        if v >= 0 then\n"
    "          val[k1] = v\n"
    "          if not dirty[k1] then dirty[k1] = true; nd = nd + 1; dirty[nd] = k1 end\n"
    "        end\n"
    "      end\n"
    "      ok = false\n"
    "    else\n"
    "      local v = get(k1)\n"
    "      if v == nil then bad = gerr\n"
    "      elseif al == 2 then\n"
    "        local tt = P[o + 6]\n"
    "        local base = v\n"
    "        if now_us > base then base = now_us end\n"
    "        local nt = base + tt\n"
    "        if nt - now_us > P[o + 4] * tt + P[o + 5] * 1000 then ok = false end\n"
    "        Q[q - 2], Q[q - 1], sa = nt, math.ceil((nt - now_us) / 1000), v\n"
    "      elseif al == 1 then\n"
    "        local p = get(key .. P[o + 8])\n"
    "        if p == nil then bad = gerr else\n"
    "          local room = P[o + 2] - v - 1\n"
    "          local l, w = P[o + 2], P[o + 3]\n"
    "          if room < 0 then ok = false\n"
    "          elseif p <= l and l * w < 9007199254740992 then\n"
    "            if p * (w - P[o + 9]) > room * w then ok = false end\n"
    "          elseif not le(p, w - P[o + 9], room, w) then ok = false end\n"
    "          Q[q - 2], Q[q - 1], sa, sb = v + 1, P[o + 10], p, v\n"
    "        end\n"
    "      else\n"
    "        if v + 1 > P[o + 2] then ok = false end\n"
    "        Q[q - 2], Q[q - 1], sa = v + 1, P[o + 10], v\n"
    "      end\n"
    "    end\n"
    "    out[at + 2 * j - 1], out[at + 2 * j] = sa, sb\n"
    "  end\n"
    "  out[at] = (bad and mode ~= 3) and bad or (ok and 1 or 2)\n"
    "  if ok and not bad and mode == 0 then\n"
    "    for j = 1, n do\n"
    "      local q = 4 * j\n"
    "      local k = Q[q - 3]\n"
    "      val[k] = Q[q - 2]\n"
    "      if fresh[k] or Q[q] then ttl[k] = Q[q - 1] end\n"
    "      if not dirty[k] then dirty[k] = true; nd = nd + 1; dirty[nd] = k end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "for i = 1, nd do\n"
    "  local k = dirty[i]\n"
    "  if ttl[k] then redis.call('SET', k, fmt(val[k]), 'PX', fmt(ttl[k]))\n"
    "  else redis.call('SET', k, fmt(val[k]), 'KEEPTTL') end\n"
    "end\n"
    "return out\n";

/* Where a connection attempt stands. READY is the only state in which
 * checks run; the others answer -ENOTCONN at once. */
enum phase {
    PH_DOWN = 0,   /* no socket */
    PH_CONNECTING, /* non-blocking connect(2) (and TLS handshake) in progress */
    PH_HANDSHAKE,  /* AUTH / SELECT / SCRIPT LOAD sent, replies pending */
    PH_READY,      /* script loaded: checks run, each bounded by timeout_ms */
    PH_DISCOVER,   /* Sentinel: asking the sentinels for the master */
    PH_WAIT,       /* Sentinel: the master failed; asking again at reask_at_ms */
};

#define SENTINEL_REASK_MS   100   /* between two questions while the master fails */
#define SENTINEL_PERSIST_MS 60000 /* then the attempt fails (the caller backs off) */
#define SENTINEL_WATCH_MS   1000  /* master-change query from the periodic probe */

/* The setup commands, in the order they are pipelined and answered. */
enum setup_cmd {
    CMD_AUTH,
    CMD_SELECT,
    CMD_SCRIPT_LOAD,
    CMD_PROBE, /* the script itself, with no key: proves writes are served */
    CMD_ROLE,  /* ROLE must say master (or be refused by the server) */
};

struct gw_rl_redis {
    const struct gw_redis_target *target; /* borrowed from struct gw_ratelimit */
    int timeout_ms;                       /* connect and command timeout */
    struct gw_redis_conn conn;            /* the link (redis_conn.h) */
    enum phase phase;
    uint64_t deadline_ms;       /* gw_now_ms() at which the current phase times out */
    enum setup_cmd pending[5];  /* setup replies still expected, in order */
    int npending, next_pending; /* pending[next_pending .. npending) are outstanding */
    char sha[41];               /* SHA1 of the script, from SCRIPT LOAD */
    char err[640];              /* last failure, for logs (never the password) */
    char *cmds;                 /* RESP of a check call, built here (heap) */
    size_t cmds_cap;            /* bytes allocated at cmds */
    unsigned addr_next;         /* which of the host's addresses the next connect uses */
    /* Sentinel mode only (NULL / unused otherwise): */
    struct gw_redis_sentinel *sentinel; /* discovery of the master */
    struct gw_redis_sentinel *watch;    /* the periodic probe's master-change query */
    char master_host[256];              /* the master connected to (or being) */
    int master_port;
    bool persist;         /* keep asking while the sentinels answer (not at start-up) */
    bool sentinel_failed; /* the last failure was no sentinel answering */
    uint64_t give_up_ms;  /* end of the persisting attempt */
    uint64_t reask_at_ms; /* PH_WAIT: when to ask again */
    uint64_t watch_at_ms; /* next master-change query */
    /* Cluster node (gw_rl_redis_create_node): the address used instead of
     * the target's host; node_port 0 otherwise. */
    char node_host[256];
    int node_port;
};

/* ---- bounded replies ---------------------------------------------------------- */

/* hiredis 0.14's reader allocates an array's element table from the
 * announced count before any element arrives, so "*555555555\r\n" from a
 * broken or hostile peer would cost 4 GiB at once (found by
 * fuzz_resp_reply). Its object functions are wrapped: an array larger than
 * any reply we expect is refused (the reader then fails like out of memory
 * and the connection is dropped); everything else is hiredis's own. */
#define RESP_MAX_ELEMENTS 65536

static const redisReplyObjectFunctions *hiredis_fn; /* the reader's defaults */
static redisReplyObjectFunctions bounded_fn;
static pthread_once_t bounded_once = PTHREAD_ONCE_INIT;

static void *bounded_array(const redisReadTask *task, int elements)
{
    if (elements < 0 || elements > RESP_MAX_ELEMENTS)
        return NULL;
    return hiredis_fn->createArray(task, elements);
}

static void bounded_init(void)
{
    redisReader *rd = redisReaderCreate();
    if (rd == NULL)
        return;
    static redisReplyObjectFunctions defaults;
    defaults = *rd->fn;
    hiredis_fn = &defaults;
    bounded_fn = defaults;
    bounded_fn.createArray = bounded_array;
    redisReaderFree(rd);
}

void gw_rl_redis_bound_reader(void *reader)
{
    redisReader *rd = reader;
    pthread_once(&bounded_once, bounded_init);
    if (rd != NULL && hiredis_fn != NULL && rd->fn != NULL &&
        rd->fn->createArray == hiredis_fn->createArray)
        rd->fn = &bounded_fn;
}

/* ---- connection ------------------------------------------------------------ */

int gw_rl_redis_create(struct gw_rl_redis **out, const struct gw_redis_target *target,
                       int timeout_ms)
{
    struct gw_rl_redis *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    r->target = target;
    r->timeout_ms = timeout_ms > 0 ? timeout_ms : 100;
    r->persist = true;
    int rc = gw_redis_conn_init(&r->conn, target, r->err, sizeof(r->err));
    if (rc == 0 && target->nsentinels > 0) {
        r->sentinel = calloc(1, sizeof(*r->sentinel));
        r->watch = calloc(1, sizeof(*r->watch));
        rc = r->sentinel == NULL || r->watch == NULL
                 ? -ENOMEM
                 : gw_redis_sentinel_init(r->sentinel, target, r->timeout_ms, r->err,
                                          sizeof(r->err));
        if (rc == 0)
            rc = gw_redis_sentinel_init(r->watch, target, r->timeout_ms, r->err, sizeof(r->err));
    }
    if (rc != 0) {
        gw_redis_conn_deinit(&r->conn);
        if (r->sentinel != NULL)
            gw_redis_sentinel_deinit(r->sentinel);
        if (r->watch != NULL)
            gw_redis_sentinel_deinit(r->watch);
        free(r->sentinel);
        free(r->watch);
        free(r);
        return rc;
    }
    *out = r;
    return 0;
}

int gw_rl_redis_create_node(struct gw_rl_redis **out, const struct gw_redis_target *target,
                            const char *host, int port, int timeout_ms)
{
    if (host == NULL || strlen(host) >= sizeof((*out)->node_host) || port <= 0 || port > 65535)
        return -EINVAL;
    int rc = gw_rl_redis_create(out, target, timeout_ms);
    if (rc != 0)
        return rc;
    snprintf((*out)->node_host, sizeof((*out)->node_host), "%s", host);
    (*out)->node_port = port;
    return 0;
}

void gw_rl_redis_disconnect(struct gw_rl_redis *r)
{
    gw_redis_conn_close(&r->conn);
    if (r->sentinel != NULL) {
        gw_redis_sentinel_cancel(r->sentinel);
        gw_redis_sentinel_cancel(r->watch);
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

bool gw_rl_redis_tls_resumed(const struct gw_rl_redis *r)
{
    return r->conn.resumed;
}

/* The host text the transport connects to: for a host name the resolver
 * follows (gw/resolve.h), the numeric text of one of its current addresses,
 * so the transport's getaddrinfo does no DNS on the worker; the host as
 * written otherwise. Returns 0, or -EHOSTUNREACH while the name has no address. */
static int connect_host(struct gw_rl_redis *r, const char *host, int port, char *out, size_t cap)
{
    return gw_resolve_host_text(host, port, r->addr_next, out, cap);
}

/* A TCP connect failed (refused, unreachable, timed out): the next attempt
 * uses the host's next address, and the resolver looks the name up again. */
static void connect_failed(struct gw_rl_redis *r)
{
    if (r->target->unix_path != NULL)
        return;
    r->addr_next++;
    gw_resolve_kick_host(r->master_host, r->master_port);
}

/* The link failed with rc (it is closed already): record why, drop the
 * attempt, return rc. */
static int io_failure(struct gw_rl_redis *r, const char *what, int rc)
{
    const char *e = gw_redis_conn_error(&r->conn);
    size_t wl = strlen(what);
    if (strncmp(e, what, wl) == 0 && e[wl] == ':')
        snprintf(r->err, sizeof(r->err), "%s", e); /* "connect: ..." already */
    else
        snprintf(r->err, sizeof(r->err), "%s: %s", what, e);
    gw_rl_redis_disconnect(r);
    return rc;
}

/* A failure described by an errno value (deadline, out of memory). */
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

static const char *const setup_name[] = {"AUTH", "SELECT", "SCRIPT LOAD", "probe EVAL", "ROLE"};

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
    case CMD_ROLE:
        /* Sentinel named it (or REDIS_URL points at it), but it may not
         * have taken the role yet (or anymore): only a master takes the
         * checks. A server that refuses ROLE itself (a managed service that
         * renamed it, an ACL user without it) is taken at its word; READONLY
         * replies still catch a replica. */
        if (rep->type != REDIS_REPLY_ERROR &&
            (rep->type != REDIS_REPLY_ARRAY || rep->elements < 1 ||
             rep->element[0]->type != REDIS_REPLY_STRING ||
             strcmp(rep->element[0]->str, "master"))) {
            snprintf(r->err, sizeof(r->err), "ROLE: %s:%d is %s, not a master", r->master_host,
                     r->master_port,
                     rep->type == REDIS_REPLY_ARRAY && rep->elements > 0 &&
                             rep->element[0]->type == REDIS_REPLY_STRING
                         ? rep->element[0]->str
                         : "unknown");
            freeReplyObject(rep);
            gw_rl_redis_disconnect(r);
            return -EROFS;
        }
        if (r->sentinel != NULL && gw_redis_sentinel_note_master(r->master_host, r->master_port))
            gw_warn("rate limit: redis master is now %s:%d (failover seen)", r->master_host,
                    r->master_port);
        break;
    }
    freeReplyObject(rep);
    return 0;
}

/* Advances the attempt, waiting at most wait_ms (0 = never block) for the
 * socket. Returns 0 when ready, -EINPROGRESS when more is needed, else the
 * failure's -errno (the store is then PH_DOWN). */
static int open_master(struct gw_rl_redis *r, uint64_t now_ms, const char *host, int port);
static int discover(struct gw_rl_redis *r, uint64_t now_ms);

static int step_inner(struct gw_rl_redis *r, uint64_t now_ms, int wait_ms)
{
    for (;;) {
        if (r->phase == PH_READY)
            return 0;
        if (r->phase == PH_DOWN)
            return -ENOTCONN;
        if (r->phase == PH_WAIT) {
            if (now_ms < r->reask_at_ms)
                return -EINPROGRESS;
            int rc = discover(r, now_ms);
            if (rc != 0)
                return rc;
            continue;
        }
        if (r->phase == PH_DISCOVER) {
            int rc = gw_redis_sentinel_poll(r->sentinel, now_ms, wait_ms);
            if (rc == -EINPROGRESS)
                return rc;
            if (rc != 0) {
                snprintf(r->err, sizeof(r->err), "no sentinel answered (%s)", r->sentinel->err);
                gw_rl_redis_disconnect(r);
                r->sentinel_failed = true;
                return -EHOSTUNREACH;
            }
            rc = open_master(r, now_ms, r->sentinel->host, r->sentinel->port);
            if (rc != 0)
                return rc;
            continue;
        }
        if (now_ms >= r->deadline_ms) {
            if (r->phase == PH_CONNECTING)
                connect_failed(r);
            return errno_failure(r, r->phase == PH_CONNECTING ? "connect" : "handshake", ETIMEDOUT);
        }
        int left = (int)GW_MIN((uint64_t)wait_ms, r->deadline_ms - now_ms);
        int rc;
        if (r->phase == PH_CONNECTING) {
            rc = gw_redis_conn_establish(&r->conn, left);
            if (rc == 0 || (rc == -EAGAIN && r->conn.state == GW_RCONN_OPEN)) {
                /* Connected (and TLS done): the handshake has its own
                 * timeout. */
                r->phase = PH_HANDSHAKE;
                r->deadline_ms = now_ms + (uint64_t)r->timeout_ms;
                continue;
            }
        } else {
            void *rep = NULL;
            rc = gw_redis_conn_get_reply(&r->conn, &rep, left);
            if (rc == 0) {
                rc = take_setup_reply(r, r->pending[r->next_pending++], rep);
                if (rc != 0)
                    return rc;
                if (r->next_pending == r->npending) {
                    r->phase = PH_READY;
                    r->err[0] = '\0';
                    return 0;
                }
                continue;
            }
        }
        if (rc != -EAGAIN) {
            if (r->phase == PH_CONNECTING)
                connect_failed(r);
            return io_failure(r, r->phase == PH_CONNECTING ? "connect" : "handshake", rc);
        }
        /* now_ms is the caller's clock (a test may run it ahead): only a
         * blocking caller, which passed gw_now_ms(), has it advanced. */
        if (wait_ms == 0)
            return -EINPROGRESS;
        uint64_t later = gw_now_ms();
        wait_ms -= (int)GW_MIN((uint64_t)wait_ms, later - now_ms);
        now_ms = later;
        if (wait_ms == 0 && now_ms < r->deadline_ms)
            return -EINPROGRESS;
    }
}

/* step_inner, and in Sentinel mode the persistence: a master that fails
 * while the sentinels answer makes the attempt wait and ask again instead
 * of failing (see the top of the file). */
static int connect_step(struct gw_rl_redis *r, uint64_t now_ms, int wait_ms)
{
    r->sentinel_failed = false;
    int rc = step_inner(r, now_ms, wait_ms);
    if (rc == 0 || rc == -EINPROGRESS || r->sentinel == NULL || !r->persist || r->sentinel_failed ||
        now_ms >= r->give_up_ms)
        return rc;
    gw_debug("rate limit: redis master not usable (%s), asking the sentinels again", r->err);
    r->phase = PH_WAIT;
    r->reask_at_ms = now_ms + SENTINEL_REASK_MS;
    return -EINPROGRESS;
}

/* Queues one setup command and remembers which reply to expect. */
static int queue_setup(struct gw_rl_redis *r, enum setup_cmd cmd, int argc, const char **argv)
{
    r->pending[r->npending++] = cmd;
    return gw_redis_conn_append_argv(&r->conn, argc, argv);
}

/* Sentinel mode: starts asking the sentinels (PH_DISCOVER). 0 or -errno. */
static int discover(struct gw_rl_redis *r, uint64_t now_ms)
{
    gw_redis_conn_close(&r->conn);
    r->phase = PH_DISCOVER;
    int rc = gw_redis_sentinel_start(r->sentinel, now_ms);
    if (rc == 0 || rc == -EINPROGRESS)
        return 0; /* step_inner takes the answer */
    snprintf(r->err, sizeof(r->err), "no sentinel answered (%s)", r->sentinel->err);
    gw_rl_redis_disconnect(r);
    r->sentinel_failed = true;
    return -EHOSTUNREACH;
}

/* Starts the connection to host:port (the URL's, or the master the
 * sentinels named) with the whole setup pipelined; PH_CONNECTING. 0 or
 * -errno. */
static int open_master(struct gw_rl_redis *r, uint64_t now_ms, const char *host, int port)
{
    const struct gw_redis_target *t = r->target;
    r->npending = r->next_pending = 0;
    snprintf(r->master_host, sizeof(r->master_host), "%s", host != NULL ? host : "");
    r->master_port = port;
    /* Non-blocking connect: a Redis that does not answer SYNs (or a full
     * backlog) costs the worker loop nothing; only the attempt's deadline. */
    /* A host name the resolver follows is connected to by one of its
     * current addresses (no DNS on the worker); TLS still checks the name. */
    char addr[256];
    if (t->unix_path == NULL) {
        int hrc = connect_host(r, host, port, addr, sizeof(addr));
        if (hrc != 0) {
            connect_failed(r);
            snprintf(r->err, sizeof(r->err), "connect: %s has no address (yet)", host);
            return hrc;
        }
    }
    int rc = gw_redis_conn_start(&r->conn, t->unix_path != NULL ? NULL : addr, port, t->unix_path,
                                 t->tls_server_name != NULL ? t->tls_server_name : host);
    if (rc != 0 && rc != -EINPROGRESS) {
        connect_failed(r);
        return io_failure(r, "connect", rc);
    }
    /* Bounded replies (see gw_rl_redis_bound_reader): the link's parser is
     * new after every connect. */
    gw_rl_redis_bound_reader(r->conn.reader);

    /* Pipeline the whole setup now; the replies are read in order. */
    char db[16];
    snprintf(db, sizeof(db), "%d", t->db);
    rc = 0;
    if (t->password != NULL) {
        const char *auth[] = {"AUTH", t->username != NULL ? t->username : t->password, t->password};
        rc = queue_setup(r, CMD_AUTH, t->username != NULL ? 3 : 2, auth);
    }
    if (rc == 0 && t->db > 0)
        rc = queue_setup(r, CMD_SELECT, 2, (const char *[]){"SELECT", db});
    if (rc == 0)
        rc = queue_setup(r, CMD_SCRIPT_LOAD, 3,
                         (const char *[]){"SCRIPT", "LOAD", gw_rl_redis_script});
    /* A connection that answers AUTH and SCRIPT LOAD may still not run the
     * check: a Redis under CLIENT PAUSE WRITE (as during a failover) holds
     * every script call. Running the script once, with no key (TIME only,
     * nothing stored), is the proof; until it answers within the handshake
     * deadline the connection is not ready and requests are decided by
     * RATE_LIMIT_FAILURE_MODE without waiting. */
    /* ROLE: a replica (not yet promoted, or demoted) never takes checks. */
    if (rc == 0)
        rc = queue_setup(r, CMD_ROLE, 1, (const char *[]){"ROLE"});
    if (rc == 0)
        rc = queue_setup(r, CMD_PROBE, 6,
                         (const char *[]){"EVAL", gw_rl_redis_script, "0", "0", "0", "0"});
    if (rc != 0)
        return errno_failure(r, "setup", ENOMEM);
    r->phase = PH_CONNECTING;
    r->deadline_ms = now_ms + (uint64_t)r->timeout_ms;
    return 0;
}

int gw_rl_redis_connect_start(struct gw_rl_redis *r, uint64_t now_ms)
{
    gw_rl_redis_disconnect(r);
    int rc;
    if (r->sentinel != NULL) {
        r->give_up_ms = now_ms + SENTINEL_PERSIST_MS;
        r->sentinel_failed = false;
        rc = discover(r, now_ms);
    } else if (r->node_port != 0) {
        rc = open_master(r, now_ms, r->node_host, r->node_port);
    } else {
        rc = open_master(r, now_ms, r->target->host, r->target->port);
    }
    if (rc != 0)
        return rc;
    return connect_step(r, now_ms, 0);
}

int gw_rl_redis_connect_poll(struct gw_rl_redis *r, uint64_t now_ms)
{
    return connect_step(r, now_ms, 0);
}

/* Sentinel mode, from the periodic probe (every tick of the worker): a query of the sentinels runs
 * in the background (started on one probe, read on a later one); when they name another master than
 * the one connected to, the connection is dropped so the reconnect rediscovers. 0, or -ESTALE after
 * disconnecting. */
static int watch_master(struct gw_rl_redis *r)
{
    uint64_t now = gw_now_ms();
    int rc = -ENOTCONN;
    if (r->watch->active)
        rc = gw_redis_sentinel_poll(r->watch, now, 0);
    if (rc == 0 &&
        (strcmp(r->watch->host, r->master_host) != 0 || r->watch->port != r->master_port)) {
        snprintf(r->err, sizeof(r->err), "the sentinels name a new master %s:%d (was %s:%d)",
                 r->watch->host, r->watch->port, r->master_host, r->master_port);
        gw_rl_redis_disconnect(r);
        return -ESTALE;
    }
    /* The next question goes out now and is read at the next probe, so an
     * answer is never older than one probe interval. A query still in
     * progress (or failed: no sentinel answered) keeps the master. */
    if (!r->watch->active && now >= r->watch_at_ms) {
        r->watch_at_ms = now + SENTINEL_WATCH_MS / 2;
        int started = gw_redis_sentinel_start(r->watch, now);
        (void)started; /* read at the next probe */
    }
    return 0;
}

int gw_rl_redis_probe(struct gw_rl_redis *r)
{
    if (r->phase != PH_READY)
        return -ENOTCONN;
    int rc = gw_redis_conn_probe(&r->conn);
    if (rc != 0) {
        snprintf(r->err, sizeof(r->err), "%s", gw_redis_conn_error(&r->conn));
        gw_rl_redis_disconnect(r);
        return rc;
    }
    return r->sentinel != NULL ? watch_master(r) : 0;
}

int gw_rl_redis_connect(struct gw_rl_redis *r)
{
    uint64_t now = gw_now_ms();
    /* Blocking: no persistence (at start-up a dead master must not hold
     * the gateway for SENTINEL_PERSIST_MS). */
    r->persist = false;
    int rc = gw_rl_redis_connect_start(r, now);
    /* Each phase has its own deadline (Sentinel: each sentinel's too), so
     * the loop is bounded. */
    for (int i = 0; rc == -EINPROGRESS && i < 4 * GW_CONFIG_MAX_REDIS_NODES + 8; i++)
        rc = connect_step(r, gw_now_ms(), 2 * r->timeout_ms + 10);
    r->persist = true;
    if (rc == -EINPROGRESS)
        rc = errno_failure(r, "connect", ETIMEDOUT);
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
 * 142,000, and state far below int64 overflow. */
#define STORE_SEC_MAX ((int64_t)1 << 42)
#define STATE_MAX     (((int64_t)1 << 62) - 1)
/* Bytes put_bulk writes at most for len bytes. */
#define BULK_MAX(len) ((len) + 26)

/* Renders "<cmd> <script> <nkeys> <key>... <S> <spec>... <U> <unit>..."
 * (EVALSHA <sha> or EVAL <body>; see gw_rl_redis_script) into r->cmds,
 * grown as needed: hiredis then formats nothing and allocates nothing per
 * argument. Returns the bytes or -ENOMEM. */
static ssize_t render_apply(struct gw_rl_redis *r, bool eval, const struct gw_rl_pass *p)
{
    const char *script = eval ? gw_rl_redis_script : r->sha;
    size_t slen = eval ? sizeof(gw_rl_redis_script) - 1 : 40;
    bool refund = p->mode == GW_RL_PASS_REFUND;
    size_t nargs = 3 + p->nkeys + p->nextra + 1 + 1 + 5 * p->nspecs + 1 + 1 + (refund ? 1 : 0);
    for (size_t u = 0; u < p->nunits; u++)
        nargs += 1 + 2 * (size_t)p->units[u].n;
    size_t need = 24 + BULK_MAX(7) + BULK_MAX(slen) + (nargs - 2) * BULK_MAX(20);
    for (size_t i = 0; i < p->nkeys; i++)
        need += p->key_lens[i];
    for (size_t i = 0; i < p->nextra; i++)
        need += p->extra_lens[i];
    if (need > r->cmds_cap) {
        size_t cap = GW_MAX(need, r->cmds_cap * 2);
        char *nb = realloc(r->cmds, cap);
        if (nb == NULL)
            return -ENOMEM;
        r->cmds = nb;
        r->cmds_cap = cap;
    }
    char *o = r->cmds;
    *o++ = '*';
    o = gw_put_u64(o, nargs);
    *o++ = '\r';
    *o++ = '\n';
    o = eval ? put_bulk(o, "EVAL", 4) : put_bulk(o, "EVALSHA", 7);
    o = put_bulk(o, script, slen);
    bool argv_keys = p->keys_in_argv;
    o = put_bulk_u64(o, (argv_keys ? 0 : p->nkeys) + p->nextra);
    for (size_t i = 0; i < p->nkeys && !argv_keys; i++)
        o = put_bulk(o, p->keys[i], p->key_lens[i]);
    for (size_t i = 0; i < p->nextra; i++)
        o = put_bulk(o, p->extra_keys[i], p->extra_lens[i]);
    o = put_bulk_u64(o, (uint64_t)p->mode);
    o = put_bulk_u64(o, p->nspecs);
    for (size_t i = 0; i < p->nspecs; i++) {
        const struct gw_rl_spec *sp = &p->specs[i];
        unsigned algo = sp->algorithm == GW_RL_TOKEN_BUCKET     ? 2
                        : sp->algorithm == GW_RL_SLIDING_WINDOW ? 1
                                                                : 0;
        o = put_bulk_u64(o, algo);
        o = put_bulk_u64(o, (uint64_t)sp->limit);
        o = put_bulk_u64(o, (uint64_t)sp->window_ms);
        o = put_bulk_u64(o, (uint64_t)sp->burst);
        o = put_bulk_u64(o, (uint64_t)sp->delay_ms);
    }
    o = put_bulk_u64(o, argv_keys ? p->nkeys : 0);
    for (size_t i = 0; i < p->nkeys && argv_keys; i++)
        o = put_bulk(o, p->keys[i], p->key_lens[i]);
    o = put_bulk_u64(o, p->nunits);
    for (size_t u = 0; u < p->nunits; u++) {
        const struct gw_rl_unit *un = &p->units[u];
        o = put_bulk_u64(o, un->n);
        for (size_t j = 0; j < un->n; j++) {
            o = put_bulk_u64(o, (uint64_t)p->ops[un->first + j].key + 1);
            o = put_bulk_u64(o, (uint64_t)p->ops[un->first + j].spec + 1);
        }
    }
    if (refund)
        o = put_bulk_u64(o, (uint64_t)GW_MAX(p->refund_at_us, 0));
    return o - r->cmds;
}

static bool is_noscript(const redisReply *rep)
{
    return rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) == 0;
}

static bool int_in(const redisReply *e, int64_t lo, int64_t hi)
{
    return e->type == REDIS_REPLY_INTEGER && e->integer >= lo && e->integer <= hi;
}

/* Takes the reply of one call (freed here): 0 with every unit's result
 * and ops' state, or -EPROTO (units left UNDECIDED) when the server refused
 * the call (OOM, BUSY, READONLY, ...) or answered something else. -EPROTO
 * is not a broken connection: the caller applies its failure mode. */
static int take_apply_reply(struct gw_rl_redis *r, redisReply *rep, struct gw_rl_pass *p)
{
    int rc = -EPROTO;
    size_t want = 2;
    for (size_t u = 0; u < p->nunits; u++)
        want += 1 + 2 * (size_t)p->units[u].n;
    if (rep->type == REDIS_REPLY_ERROR) {
        snprintf(r->err, sizeof(r->err), "check: %s", rep->str);
    } else if (rep->type != REDIS_REPLY_ARRAY || rep->elements != want ||
               !int_in(rep->element[0], 1, STORE_SEC_MAX) || !int_in(rep->element[1], 0, 999999)) {
        snprintf(r->err, sizeof(r->err), "check: unexpected reply type %d", rep->type);
    } else {
        size_t at = 2;
        bool good = true;
        p->now_us = rep->element[0]->integer * 1000000 + rep->element[1]->integer;
        for (size_t u = 0; u < p->nunits && good; u++) {
            struct gw_rl_unit *un = &p->units[u];
            const redisReply *res = rep->element[at++];
            good = int_in(res, 1, 4);
            for (size_t j = 0; j < un->n && good; j++, at += 2) {
                /* State no real Redis holds is refused too: the math must
                 * not overflow on it. */
                good = int_in(rep->element[at], 0, STATE_MAX) &&
                       int_in(rep->element[at + 1], 0, STATE_MAX);
                p->ops[un->first + j].a = rep->element[at]->integer;
                p->ops[un->first + j].b = rep->element[at + 1]->integer;
            }
            if (good)
                un->result = res->integer == 1   ? GW_RL_UNIT_ALLOWED
                             : res->integer == 2 ? GW_RL_UNIT_REFUSED
                             : res->integer == 4 && p->keys_in_argv && p->nextra == 0
                                 ? GW_RL_UNIT_ELSEWHERE
                                 : GW_RL_UNIT_ERROR;
            if (good && un->result == GW_RL_UNIT_ERROR)
                snprintf(r->err, sizeof(r->err), "check: a state key holds another type");
        }
        if (good) {
            rc = 0;
        } else {
            snprintf(r->err, sizeof(r->err), "check: unexpected state in the reply");
            for (size_t u = 0; u < p->nunits; u++)
                p->units[u].result = GW_RL_UNIT_UNDECIDED;
        }
    }
    freeReplyObject(rep);
    return rc;
}

int gw_rl_redis_take_reply(struct gw_rl_redis *r, void *reply, struct gw_rl_pass *pass)
{
    for (size_t u = 0; u < pass->nunits; u++)
        pass->units[u].result = GW_RL_UNIT_UNDECIDED;
    return take_apply_reply(r, reply, pass);
}

static bool is_readonly_error(const redisReply *e)
{
    return e->type == REDIS_REPLY_ERROR &&
           (strncmp(e->str, "READONLY", 8) == 0 || strstr(e->str, " READONLY ") != NULL);
}

/* A READONLY error, for the call or for any element of its reply. */
static bool says_readonly(const redisReply *rep)
{
    if (is_readonly_error(rep))
        return true;
    for (size_t i = 0; rep->type == REDIS_REPLY_ARRAY && i < rep->elements; i++)
        if (is_readonly_error(rep->element[i]))
            return true;
    return false;
}

/* Sends one call (EVALSHA, or EVAL when eval) for the pass and reads its
 * reply into *rep. 0, or the connection's -errno (then disconnected). */
static int call_apply(struct gw_rl_redis *r, bool eval, const struct gw_rl_pass *p,
                      redisReply **rep)
{
    const char *what = eval ? "EVAL" : "EVALSHA";
    ssize_t len = render_apply(r, eval, p);
    if (len < 0) {
        snprintf(r->err, sizeof(r->err), "%s: out of memory", what);
        gw_rl_redis_disconnect(r); /* nothing was sent: the next connect starts clean */
        return -ENOMEM;
    }
    /* One buffer, one write, one round trip; the wait for the reply is
     * bounded by timeout_ms. */
    void *reply = NULL;
    int rc = gw_redis_conn_command(&r->conn, r->cmds, (size_t)len, &reply, r->timeout_ms);
    if (rc != 0)
        return io_failure(r, what, rc);
    if (says_readonly(reply)) {
        /* The server became a replica (failover; a managed endpoint that
         * moved): reconnect, which asks the sentinels (or re-resolves the
         * host) again. */
        snprintf(r->err, sizeof(r->err), "%s: READONLY: %s:%d is a replica now", what,
                 r->master_host, r->master_port);
        freeReplyObject(reply);
        gw_rl_redis_disconnect(r);
        return -EROFS;
    }
    *rep = reply;
    return 0;
}

int gw_rl_redis_queue(struct gw_rl_redis *r, const struct gw_rl_pass *p, bool asking, bool eval)
{
    if (r->phase != PH_READY)
        return -ENOTCONN;
    static const char asking_cmd[] = "*1\r\n$6\r\nASKING\r\n";
    if (asking && gw_redis_conn_append(&r->conn, asking_cmd, sizeof(asking_cmd) - 1) != 0)
        return -ENOMEM;
    ssize_t len = render_apply(r, eval, p);
    if (len < 0 || gw_redis_conn_append(&r->conn, r->cmds, (size_t)len) != 0) {
        /* Half a pipeline may be queued: the link is out of step. */
        snprintf(r->err, sizeof(r->err), "%s: out of memory", eval ? "EVAL" : "EVALSHA");
        gw_rl_redis_disconnect(r);
        return -ENOMEM;
    }
    return 0;
}

int gw_rl_redis_flush(struct gw_rl_redis *r)
{
    if (r->phase != PH_READY)
        return -ENOTCONN;
    int rc = gw_redis_conn_establish(&r->conn, 0);
    if (rc == 0 || rc == -EAGAIN)
        return 0; /* the rest goes out while the replies are awaited */
    return io_failure(r, "send", rc);
}

int gw_rl_redis_reply(struct gw_rl_redis *r, void **reply)
{
    return gw_rl_redis_reply_within(r, reply, r->timeout_ms);
}

int gw_rl_redis_reply_within(struct gw_rl_redis *r, void **reply, int wait_ms)
{
    *reply = NULL;
    if (r->phase != PH_READY)
        return -ENOTCONN;
    int rc = gw_redis_conn_get_reply(&r->conn, reply, GW_MAX(wait_ms, 1));
    if (rc == -EAGAIN)
        return errno_failure(r, "reply", ETIMEDOUT); /* the stream is out of step */
    if (rc != 0)
        return io_failure(r, "reply", rc);
    return 0;
}

int gw_rl_redis_command_argv(struct gw_rl_redis *r, int argc, const char **argv, void **reply)
{
    *reply = NULL;
    if (r->phase != PH_READY)
        return -ENOTCONN;
    if (gw_redis_conn_append_argv(&r->conn, argc, argv) != 0)
        return errno_failure(r, argv[0], ENOMEM);
    return gw_rl_redis_reply(r, reply);
}

int gw_rl_redis_apply(struct gw_rl_redis *r, struct gw_rl_pass *p)
{
    for (size_t u = 0; u < p->nunits; u++)
        p->units[u].result = GW_RL_UNIT_UNDECIDED;
    if (r->phase != PH_READY)
        return -ENOTCONN;
    if (p->nunits == 0)
        return 0;
    redisReply *rep = NULL;
    int rc = call_apply(r, false, p, &rep);
    if (rc == 0 && is_noscript(rep)) {
        /* Script cache flushed (SCRIPT FLUSH, restart behind a proxy,
         * failover): the script did not run, nothing was counted. EVAL
         * runs the body and caches it again, so the next call is back to
         * EVALSHA with the same SHA1. */
        freeReplyObject(rep);
        rep = NULL;
        rc = call_apply(r, true, p, &rep);
    }
    if (rc != 0)
        return rc;
    return take_apply_reply(r, rep, p);
}

static int redis_ping(void *store)
{
    struct gw_rl_redis *r = store;
    if (r->phase != PH_READY)
        return -ENOTCONN;
    static const char ping[] = "*1\r\n$4\r\nPING\r\n";
    redisReply *rep = NULL;
    int rc = gw_redis_conn_command(&r->conn, ping, sizeof(ping) - 1, (void **)&rep, r->timeout_ms);
    if (rc != 0)
        return io_failure(r, "PING", rc);
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
    gw_redis_conn_deinit(&r->conn);
    if (r->sentinel != NULL) {
        gw_redis_sentinel_deinit(r->sentinel);
        gw_redis_sentinel_deinit(r->watch);
        free(r->sentinel);
        free(r->watch);
    }
    free(r->cmds);
    free(r);
}

static int redis_apply(void *store, struct gw_rl_pass *pass)
{
    return gw_rl_redis_apply(store, pass);
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
    .apply = redis_apply,
    .ping = redis_ping,
    .connect = redis_connect,
    .connect_start = redis_connect_start,
    .connect_poll = redis_connect_poll,
    .probe = redis_probe,
    .disconnect = redis_disconnect,
    .last_error = redis_last_error,
    .destroy = redis_destroy,
};
