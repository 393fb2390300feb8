/*
 * Configuration from the environment (SPEC.md §3). One static table of rows
 * {name, type, default, min, max, offset, flags, help} drives parsing,
 * validation, defaults, the masked JSON of --check-config and the text of
 * gateway.env.example, so every default is written exactly once.
 */

/*
 * Rules every row follows (SPEC.md §2: a bad value is an exit-2 start-up
 * error, never a silent default):
 *
 *   unset               -> the row's default, parsed by the same code, so a
 *                          broken default is caught by the unit tests
 *   set to ""           -> an error, except REDIS_URL / TRUSTED_PROXIES
 *                          (F_EMPTY_UNSET) where it means "none"
 *   set, invalid        -> one "config error: NAME=VALUE: reason" line; the
 *                          load goes on so every bad variable is reported
 *                          (HAProxy's accumulated config errors)
 *
 * Integers are decimal only: no sign but '-', no spaces, no 0x, no suffixes.
 * Strings that carry a password (F_SECRET) pass through mask_userinfo()
 * before they reach any output, error lines included.
 */
#include "gw/config.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <unistd.h>

/* Enum fields are written through an int pointer. */
_Static_assert(sizeof(enum gw_rl_algorithm) == sizeof(int), "enum size");
_Static_assert(sizeof(enum gw_rl_failure_mode) == sizeof(int), "enum size");
_Static_assert(sizeof(enum gw_log_level) == sizeof(int), "enum size");

enum opt_type {
    T_INT,     /* int, decimal in [min, max] */
    T_INT64,   /* int64_t, decimal in [min, max] */
    T_BOOL,    /* bool: on/off, true/false, 1/0 */
    T_ENUM,    /* int-sized enum: index into choices */
    T_STRING,  /* char *: visible ASCII, length in [min, max] */
    T_PATH,    /* char *: absolute path of an endpoint, length in [min, max] */
    T_LISTEN,  /* char *: IPv4/IPv6 literal or "localhost" */
    T_BACKEND, /* char *: BACKEND_URL, also fills backend_host/port/... */
    T_REDIS,   /* char *: REDIS_URL, format checked, string kept */
    T_RLKEY,   /* char *: RATE_LIMIT_KEY, also fills rate_limit_key_header */
    T_PROXIES, /* char *: TRUSTED_PROXIES, also fills trusted[] */
    T_FILE,    /* char *: a file path, length in [min, max], no control bytes */
    T_TOKENS,  /* char *: comma-separated tokens (RFC 9110 §5.6.2), or "none" */
    T_NODES,   /* char *: "host[:port],..." (REDIS_SENTINELS, REDIS_CLUSTER_NODES) */
};

#define F_SECRET      0x1u  /* may hold a password: masked in every output */
#define F_EMPTY_UNSET 0x2u  /* an empty value means unset, not invalid */
#define F_AUTO        0x4u  /* T_INT: "auto" is accepted and stored as -1 (resolved after load) */
#define F_OPTIONAL    0x8u  /* T_INT without default: unset (or empty) stores -1, printed as null */
#define F_MASK_ALL    0x10u /* secret as a whole (a token): every output shows "***" */

struct opt {
    const char *name;           /* environment variable */
    enum opt_type type;         /* how to parse and where to store */
    const char *def;            /* default as text; NULL = unset */
    int64_t min;                /* T_INT*: lowest value; T_STRING/T_PATH: shortest */
    int64_t max;                /* T_INT*: highest value; T_STRING/T_PATH: longest;
                                   T_ENUM: index of the last implemented choice */
    size_t off;                 /* offsetof(struct gw_config, field) */
    unsigned flags;             /* F_* */
    const char *const *choices; /* T_ENUM: names by value, NULL-terminated */
    const char *help;           /* one line for gateway.env.example */
};

static const char *const algorithm_names[] = {"fixed_window", "sliding_window", "token_bucket",
                                              "gcra", NULL};
static const char *const failure_names[] = {"open", "closed", "local", NULL};
static const char *const level_names[] = {"debug", "info", "warn", "error", NULL};
static const char *const tls_names[] = {"auto", "on", "off", NULL};

/* clang-format off */
#define MS_MAX 3600000 /* longest timeout: one hour */
#define OFF(f) offsetof(struct gw_config, f)
#define INT(n, d, lo, hi, f, h)           {n, T_INT, d, lo, hi, OFF(f), 0, NULL, h}
#define BOOL(n, d, f, h)                  {n, T_BOOL, d, 0, 1, OFF(f), 0, NULL, h}
#define ENUM(n, d, names, last, f, h)     {n, T_ENUM, d, 0, last, OFF(f), 0, names, h}
#define STR(n, t, d, lo, hi, f, fl, h)    {n, t, d, lo, hi, OFF(f), fl, NULL, h}
/* clang-format on */

/* SPEC.md §3, in its order. */
static const struct opt opts[] = {
    STR("GATEWAY_HOST", T_LISTEN, "0.0.0.0", 0, 0, gateway_host, 0,
        "Listen address: an IPv4 or IPv6 literal or localhost; \"::\" listens dual-stack."),
    INT("GATEWAY_PORT", "8000", 0, 65535, gateway_port, "Listen port; 0 lets the kernel pick one."),
    STR("BACKEND_URL", T_BACKEND, "http://127.0.0.1:8001", 0, 0, backend_url, 0,
        "Upstream as http://host[:port][/base-path]; IPv6 in brackets, port 80 by default, no "
        "https."),
    INT("WORKER_THREADS", "0", 0, 256, worker_threads,
        "Epoll worker threads; 0 = number of online CPUs."),
    INT("MAX_CONNECTIONS_PER_CLIENT", "0", 0, 1000000, max_connections_per_client,
        "Client connections from one address (IPv6: one /64) at once; beyond, closed at accept; 0 "
        "= no cap."),
    INT("MAX_CONNECTIONS", "10000", 1, 1000000, max_connections,
        "Client connections held at once; beyond, new ones are closed at accept."),
    STR("REDIS_URL", T_REDIS, NULL, 0, 0, redis_url, F_SECRET | F_EMPTY_UNSET,
        "Shared store: redis://[:password@]host[:port][/db] or unix:///path/redis.sock; empty = "
        "in-process store (one instance only)."),
    INT("REDIS_TIMEOUT_MS", "100", 1, MS_MAX, redis_timeout_ms,
        "Connect and command timeout of each worker's Redis connection, in ms."),
    STR("REDIS_USERNAME", T_STRING, NULL, 1, 256, redis_username, F_EMPTY_UNSET,
        "Redis ACL user name; wins over the one in REDIS_URL; empty = the URL's (or none)."),
    STR("REDIS_PASSWORD", T_FILE, NULL, 1, 1024, redis_password,
        F_SECRET | F_MASK_ALL | F_EMPTY_UNSET,
        "Redis password (secret, never printed); wins over the one in REDIS_URL."),
    {"REDIS_DB", T_INT, "auto", 0, 1000000, OFF(redis_db), F_AUTO, NULL,
     "Redis database index; auto = the /db of REDIS_URL, else 0."},
    ENUM("REDIS_TLS", "auto", tls_names, GW_REDIS_TLS_OFF, redis_tls,
         "TLS to Redis (and to the sentinels): auto = on for rediss:// URLs; on is needed for "
         "TLS with REDIS_SENTINELS."),
    STR("REDIS_TLS_CA_FILE", T_FILE, NULL, 1, 4096, redis_tls_ca_file, F_EMPTY_UNSET,
        "PEM file of the CAs that sign the Redis server certificate; empty = the system trust "
        "store."),
    STR("REDIS_TLS_CERT_FILE", T_FILE, NULL, 1, 4096, redis_tls_cert_file, F_EMPTY_UNSET,
        "PEM client certificate for servers with tls-auth-clients yes (with REDIS_TLS_KEY_FILE)."),
    STR("REDIS_TLS_KEY_FILE", T_FILE, NULL, 1, 4096, redis_tls_key_file, F_EMPTY_UNSET,
        "PEM private key of REDIS_TLS_CERT_FILE."),
    STR("REDIS_TLS_SERVER_NAME", T_STRING, NULL, 1, 253, redis_tls_server_name, F_EMPTY_UNSET,
        "Name sent as SNI and verified in the server certificate; empty = the host connected to."),
    BOOL("REDIS_TLS_VERIFY", "on", redis_tls_verify,
         "Verify the Redis server certificate and name; off is insecure and logged loudly."),
    STR("REDIS_SENTINELS", T_NODES, NULL, 0, 0, redis_sentinels, F_EMPTY_UNSET,
        "Sentinel mode: host:port,host:port of the sentinels (port 26379 by default); empty = "
        "no Sentinel. Exclusive with REDIS_URL."),
    STR("REDIS_SENTINEL_MASTER", T_STRING, NULL, 1, 256, redis_sentinel_master, F_EMPTY_UNSET,
        "Sentinel mode: the name of the monitored master."),
    STR("REDIS_SENTINEL_USERNAME", T_STRING, NULL, 1, 256, redis_sentinel_username, F_EMPTY_UNSET,
        "Sentinel mode: ACL user name for the sentinels themselves."),
    STR("REDIS_SENTINEL_PASSWORD", T_FILE, NULL, 1, 1024, redis_sentinel_password,
        F_SECRET | F_MASK_ALL | F_EMPTY_UNSET,
        "Sentinel mode: password of the sentinels themselves (secret, never printed)."),
    STR("REDIS_CLUSTER_NODES", T_NODES, NULL, 0, 0, redis_cluster_nodes, F_EMPTY_UNSET,
        "Redis Cluster mode: seed nodes host:port,host:port (port 6379 by default); the slot map "
        "is read from them. Empty = not used."),
    INT("RATE_LIMIT_REQUESTS", "5", 1, 1000000000, rate_limit_requests,
        "Requests allowed per client per window."),
    INT("RATE_LIMIT_WINDOW_SECONDS", "60", 1, 86400 * 366, rate_limit_window_s,
        "Window length in seconds."),
    ENUM("RATE_LIMIT_ALGORITHM", "fixed_window", algorithm_names, GW_RL_GCRA, rate_limit_algorithm,
         "Rate-limit algorithm of the default limit: fixed_window, sliding_window or token_bucket "
         "(gcra is the same as token_bucket)."),
    INT("RATE_LIMIT_BURST", "0", 0, 1000000000, rate_limit_burst,
        "token_bucket only: bucket size; 0 = RATE_LIMIT_REQUESTS."),
    STR("RATE_LIMIT_RULES_FILE", T_FILE, NULL, 1, 4096, rate_limit_rules_file, F_EMPTY_UNSET,
        "Rules file (JSON, or YAML when it ends in .yaml/.yml) stating every limit; empty = one "
        "limit named default made from the RATE_LIMIT_* variables."),
    STR("RATE_LIMIT_KEY", T_RLKEY, "ip", 0, 0, rate_limit_key, 0,
        "Client identity: ip, or header:<Name> (e.g. header:X-API-Key; the client IP when the "
        "header is absent)."),
    STR("RATE_LIMIT_KEY_PREFIX", T_STRING, "rl", 1, 128, rate_limit_key_prefix, 0,
        "Prefix of every Redis key."),
    ENUM("RATE_LIMIT_FAILURE_MODE", "open", failure_names, GW_RL_FAIL_LOCAL,
         rate_limit_failure_mode,
         "When Redis fails: open lets requests through, closed answers 503, local limits per "
         "instance."),
    BOOL("RATE_LIMIT_DRY_RUN", "off", rate_limit_dry_run,
         "Count and report over-limit requests but never block them."),
    BOOL("RATE_LIMIT_HEADERS", "on", rate_limit_headers,
         "Send the X-RateLimit-* and RateLimit/RateLimit-Policy headers (429 keeps Retry-After)."),
    STR("TRUSTED_PROXIES", T_PROXIES, "", 0, 0, trusted_proxies, F_EMPTY_UNSET,
        "Comma-separated IPv4/IPv6 CIDRs or addresses whose X-Forwarded-For is believed; empty = "
        "none."),
    INT("MAX_CONCURRENT_REQUESTS", "100", 1, 1000000, max_concurrent_requests,
        "In-flight upstream requests, all workers together."),
    INT("MAX_QUEUE_LENGTH", "1000", 0, 10000000, max_queue_length,
        "Requests waiting for an in-flight slot; beyond, an immediate 503."),
    INT("QUEUE_TIMEOUT_MS", "5000", 1, MS_MAX, queue_timeout_ms,
        "Longest wait for an in-flight slot before 503, in ms."),
    INT("UPSTREAM_CONNECT_TIMEOUT_MS", "2000", 1, MS_MAX, upstream_connect_timeout_ms,
        "Backend connect timeout in ms; failure = 502."),
    INT("UPSTREAM_TIMEOUT_MS", "30000", 1, MS_MAX, upstream_timeout_ms,
        "No response bytes from the backend for this long = 504, in ms."),
    {"UPSTREAM_KEEPALIVE", T_INT, "auto", 0, 1000000, OFF(upstream_keepalive), F_AUTO, NULL,
     "Idle pooled backend connections per worker; auto = MAX_CONCURRENT_REQUESTS; 0 disables "
     "pooling."},
    INT("UPSTREAM_IDLE_TIMEOUT_MS", "60000", 1, MS_MAX, upstream_idle_timeout_ms,
        "A pooled backend connection idle this long (ms) is closed."),
    INT("UPSTREAM_RESOLVE_INTERVAL_MS", "5000", 0, MS_MAX, upstream_resolve_interval_ms,
        "The backend's and Redis's host names are resolved again this often (ms) and after a "
        "failed connect; 0 = only at start-up."),
    INT("CLIENT_BODY_MIN_RATE", "1024", 0, 1000000000, client_body_min_rate,
        "Bytes/s, averaged over 10 s, below which a request body upload is answered 408; 0 = off."),
    INT("CLIENT_TIMEOUT_MS", "60000", 1, MS_MAX, client_timeout_ms,
        "Idle keep-alive and slow request-header limit in ms (408 if a request was started)."),
    INT("MAX_HEADER_BYTES", "16384", 1024, 1048576, max_header_bytes,
        "Request line + headers limit in bytes; beyond = 431."),
    {"MAX_BODY_BYTES", T_INT64, "10485760", 0, INT64_C(1) << 62, OFF(max_body_bytes), 0, NULL,
     "Request body limit in bytes; beyond = 413; 0 = unlimited."},
    BOOL("PRESERVE_HOST", "on", preserve_host,
         "Forward the client's Host; off sends the backend's host:port."),
    STR("HEALTH_PATH", T_PATH, "/health", 1, 1024, health_path, 0,
        "Path of the gateway's health endpoint."),
    STR("STATS_PATH", T_PATH, "/stats", 1, 1024, stats_path, 0,
        "Path of the gateway's JSON counters."),
    STR("METRICS_PATH", T_PATH, "/metrics", 1, 1024, metrics_path, 0,
        "Path of the gateway's Prometheus metrics."),
    INT("SHUTDOWN_TIMEOUT_MS", "10000", 0, MS_MAX, shutdown_timeout_ms,
        "On SIGTERM/SIGINT, longest drain of in-flight work before exit, in ms."),
    STR("UPGRADE_PROTOCOLS", T_TOKENS, "websocket", 1, 1024, upgrade_protocols, 0,
        "Upgrade tokens forwarded to the backend (comma-separated, e.g. websocket); none = no "
        "protocol upgrade is forwarded."),
    INT("MAX_TUNNELS", "1000", 0, 1000000, max_tunnels,
        "Upgrade tunnels open at once, all workers together; beyond, 503."),
    INT("TUNNEL_IDLE_TIMEOUT_MS", "300000", 1, 86400000, tunnel_idle_timeout_ms,
        "A tunnel with no byte either way for this long (ms) is closed."),
    ENUM("LOG_LEVEL", "info", level_names, GW_LOG_ERROR, log_level,
         "Lowest diagnostic level written to stderr."),
    BOOL("ACCESS_LOG", "on", access_log, "One JSON line per request on stdout."),
    /* SPEC.md §11 */
    STR("ADMIN_HOST", T_LISTEN, "127.0.0.1", 0, 0, admin_host, 0,
        "Admin API listen address; anything but loopback requires ADMIN_TOKEN."),
    {"ADMIN_PORT", T_INT, NULL, 0, 65535, OFF(admin_port), F_OPTIONAL | F_EMPTY_UNSET, NULL,
     "Admin API listen port; empty = no admin listener; 0 lets the kernel pick one."},
    STR("ADMIN_TOKEN", T_STRING, NULL, 16, 4096, admin_token, F_SECRET | F_MASK_ALL | F_EMPTY_UNSET,
        "Bearer token every admin request must carry (at least 16 characters); empty = none "
        "(loopback ADMIN_HOST only)."),
};

/* ---- small helpers ------------------------------------------------------ */

static void *field(struct gw_config *cfg, const struct opt *o)
{
    return (char *)cfg + o->off;
}

static const void *cfield(const struct gw_config *cfg, const struct opt *o)
{
    return (const char *)cfg + o->off;
}

static bool is_string_type(enum opt_type t)
{
    return t != T_INT && t != T_INT64 && t != T_BOOL && t != T_ENUM;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_visible(char c)
{
    return c > 0x20 && c < 0x7f;
}

/* RFC 9110 §5.6.2 tchar. */
static bool is_tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static char *dup_n(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p != NULL) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

/* A copy of a URL with the password of its userinfo replaced by "***"
 * ("redis://:***@host"); userinfo without ':' is masked whole. The last
 * '@' ends the userinfo, as in gw_config_parse_redis_url. Malformed input
 * (no scheme) is masked the same way from its first byte, so a password
 * never leaks through an error message. Caller frees; NULL on ENOMEM. */
static char *mask_userinfo(const char *url)
{
    if (url == NULL)
        return NULL;
    const char *auth = strstr(url, "://");
    auth = auth != NULL ? auth + 3 : url;
    const char *at = strrchr(auth, '@');
    if (at == NULL)
        return strdup(url);
    const char *colon = memchr(auth, ':', (size_t)(at - auth));
    const char *keep_end = colon != NULL ? colon + 1 : auth;
    size_t head = (size_t)(keep_end - url);
    size_t tail = strlen(at);
    char *out = malloc(head + 3 + tail + 1);
    if (out == NULL)
        return NULL;
    memcpy(out, url, head);
    memcpy(out + head, "***", 3);
    memcpy(out + head + 3, at, tail + 1);
    return out;
}

/* ---- per-type parsers --------------------------------------------------- */

static bool parse_int(const struct opt *o, const char *v, int64_t *out, char *why, size_t cap)
{
    if ((o->flags & F_AUTO) && strcmp(v, "auto") == 0) {
        *out = -1;
        return true;
    }
    /* strtoll alone would accept leading spaces, '+' and "0x" prefixes. */
    const char *d = v[0] == '-' ? v + 1 : v;
    if (!is_digit(d[0]))
        return gw_fail(why, cap, "not an integer");
    errno = 0;
    char *end = NULL;
    long long x = strtoll(v, &end, 10);
    if (*end != '\0')
        return gw_fail(why, cap, "not an integer");
    if (errno == ERANGE || x < o->min || x > o->max)
        return gw_fail(why, cap, "out of range (%lld..%lld)", (long long)o->min, (long long)o->max);
    *out = x;
    return true;
}

bool gw_config_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"on", "true", "1"};
    static const char *const no[] = {"off", "false", "0"};
    for (size_t i = 0; i < GW_ARRAY_LEN(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

static bool parse_enum(const struct opt *o, const char *v, int *out, char *why, size_t cap)
{
    for (int i = 0; o->choices[i] != NULL; i++) {
        if (strcasecmp(v, o->choices[i]) != 0)
            continue;
        *out = i;
        if (i > o->max)
            return gw_fail(why, cap, "not implemented yet (only %s)", o->choices[0]);
        return true;
    }
    char list[160];
    size_t n = 0;
    list[0] = '\0';
    for (int i = 0; o->choices[i] != NULL && n < sizeof(list); i++)
        n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%s", i ? ", " : "", o->choices[i]);
    return gw_fail(why, cap, "must be one of %s", list);
}

/* v's length within the row's [min, max] and every byte passing ok. */
static bool check_bytes(const struct opt *o, const char *v, bool (*ok)(char), const char *bad,
                        char *why, size_t cap)
{
    size_t n = strlen(v);
    if ((int64_t)n < o->min || (int64_t)n > o->max)
        return gw_fail(why, cap, "length must be %lld..%lld characters", (long long)o->min,
                       (long long)o->max);
    for (size_t i = 0; i < n; i++)
        if (!ok(v[i]))
            return gw_fail(why, cap, "must not contain %s", bad);
    return true;
}

static bool check_string(const struct opt *o, const char *v, char *why, size_t cap)
{
    return check_bytes(o, v, is_visible, "spaces, control or non-ASCII characters", why, cap);
}

/* UPGRADE_PROTOCOLS: "none", or tokens separated by commas with optional
 * spaces around them; a token may carry a "/version" (RFC 9110 §7.8). */
static bool check_tokens(const struct opt *o, const char *v, char *why, size_t cap)
{
    if ((int64_t)strlen(v) > o->max)
        return gw_fail(why, cap, "longer than %lld characters", (long long)o->max);
    if (strcmp(v, "none") == 0)
        return true;
    const char *p = v;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        const char *t = p;
        while (is_tchar(*p) || *p == '/')
            p++;
        if (p == t)
            return gw_fail(why, cap, "must be comma-separated tokens (e.g. websocket) or none");
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0')
            return true;
        if (*p++ != ',')
            return gw_fail(why, cap, "must be comma-separated tokens (e.g. websocket) or none");
    }
}

static bool not_control(char c)
{
    return (unsigned char)c >= 0x20 && c != 0x7f;
}

static bool check_path(const struct opt *o, const char *v, char *why, size_t cap)
{
    if (v[0] != '/')
        return gw_fail(why, cap, "must start with '/'");
    if (!check_string(o, v, why, cap))
        return false;
    if (strpbrk(v, "?#") != NULL)
        return gw_fail(why, cap, "must not contain '?' or '#'");
    return true;
}

/* The file itself is read by its user (rules.c), which reports its errors. */
static bool check_file(const struct opt *o, const char *v, char *why, size_t cap)
{
    return check_bytes(o, v, not_control, "control characters", why, cap);
}

static bool check_listen(const char *v, char *why, size_t cap)
{
    uint8_t a[16];
    if (strcasecmp(v, "localhost") == 0 || gw_net_parse_addr(v, strlen(v), a, NULL))
        return true;
    return gw_fail(why, cap,
                   "must be an IPv4 or IPv6 address literal (e.g. 0.0.0.0 or ::) or "
                   "localhost");
}

static bool parse_backend(const char *v, struct gw_config *cfg, char *why, size_t cap)
{
    struct gw_net_http_url u;
    if (!gw_net_parse_http_url(v, &u, why, cap))
        return false;
    char authority[INET6_ADDRSTRLEN + 256 + 10];
    gw_net_format_hostport(&u.hp, authority, sizeof(authority));
    cfg->backend_host = dup_n(u.hp.host, u.hp.host_len);
    cfg->backend_base_path = dup_n(u.path, u.path_len);
    cfg->backend_authority = strdup(authority);
    cfg->backend_port = u.hp.port;
    if (cfg->backend_host == NULL || cfg->backend_base_path == NULL ||
        cfg->backend_authority == NULL)
        return gw_fail(why, cap, "out of memory");
    return true;
}

static bool parse_rlkey(const char *v, struct gw_config *cfg, char *why, size_t cap)
{
    if (strcasecmp(v, "ip") == 0)
        return true;
    if (strncasecmp(v, "header:", 7) != 0)
        return gw_fail(why, cap, "must be ip or header:<Name>");
    const char *name = v + 7;
    size_t n = strlen(name);
    if (n == 0)
        return gw_fail(why, cap, "missing header name after 'header:'");
    if (n > 256)
        return gw_fail(why, cap, "header name longer than 256 characters");
    for (size_t i = 0; i < n; i++)
        if (!is_tchar(name[i]))
            return gw_fail(why, cap,
                           "header name is not a valid HTTP token (RFC 9110 section 5.6.2)");
    cfg->rate_limit_key_header = strdup(name);
    if (cfg->rate_limit_key_header == NULL)
        return gw_fail(why, cap, "out of memory");
    return true;
}

/* One entry of TRUSTED_PROXIES: "addr" or "addr/prefix", n bytes. */
static bool parse_cidr(const char *s, size_t n, struct gw_cidr *c, char *why, size_t cap)
{
    char reason[64];
    if (gw_net_parse_cidr(s, n, c, reason, sizeof(reason)))
        return true;
    return gw_fail(why, cap, "entry \"%.*s\": %s", (int)GW_MIN(n, 64), s, reason);
}

/* The entry of a comma-separated list that starts at p, with the blanks
 * around it trimmed, into *s and *len; returns its raw length (p[n] is ','
 * or the end). */
static size_t list_entry(const char *p, const char **s, size_t *len)
{
    size_t n = strcspn(p, ",");
    *s = p;
    *len = n;
    while (*len > 0 && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*len)--;
    }
    while (*len > 0 && ((*s)[*len - 1] == ' ' || (*s)[*len - 1] == '\t'))
        (*len)--;
    return n;
}

static bool parse_proxies(const char *v, struct gw_config *cfg, char *why, size_t cap)
{
    cfg->trusted_count = 0;
    if (v[0] == '\0')
        return true;
    const char *p = v;
    for (;;) {
        const char *s;
        size_t len;
        size_t n = list_entry(p, &s, &len);
        if (len == 0)
            return gw_fail(why, cap, "empty entry in the list");
        if (cfg->trusted_count == GW_CONFIG_MAX_TRUSTED)
            return gw_fail(why, cap, "more than %d entries", GW_CONFIG_MAX_TRUSTED);
        if (!parse_cidr(s, len, &cfg->trusted[cfg->trusted_count], why, cap))
            return false;
        cfg->trusted_count++;
        if (p[n] == '\0')
            return true;
        p += n + 1;
    }
}

static void free_nodes(struct gw_redis_node *nodes, int n)
{
    for (int i = 0; i < n; i++)
        free(nodes[i].host);
    free(nodes);
}

/* "host[:port],host[:port]" (spaces around entries allowed, IPv6 in
 * brackets, default_port when absent) into a new array of at most
 * GW_CONFIG_MAX_REDIS_NODES entries. */
static bool parse_nodes(const char *v, int default_port, struct gw_redis_node **out, int *count,
                        char *why, size_t cap)
{
    *out = NULL;
    *count = 0;
    struct gw_redis_node *nodes = calloc(GW_CONFIG_MAX_REDIS_NODES, sizeof(*nodes));
    if (nodes == NULL)
        return gw_fail(why, cap, "out of memory");
    int n = 0;
    const char *p = v;
    for (;;) {
        const char *e;
        size_t elen;
        size_t len = list_entry(p, &e, &elen);
        struct gw_net_hostport hp;
        char reason[128];
        if (elen == 0) {
            free_nodes(nodes, n);
            return gw_fail(why, cap, "empty entry in the list (expected host:port,host:port)");
        }
        if (n == GW_CONFIG_MAX_REDIS_NODES) {
            free_nodes(nodes, n);
            return gw_fail(why, cap, "more than %d entries", GW_CONFIG_MAX_REDIS_NODES);
        }
        if (memmem(e, elen, "://", 3) != NULL) {
            free_nodes(nodes, n);
            return gw_fail(why, cap, "entry \"%.*s\": a host:port, not a URL",
                           (int)GW_MIN(elen, 64), e);
        }
        if (!gw_net_parse_hostport(e, elen, default_port, &hp, reason, sizeof(reason))) {
            free_nodes(nodes, n);
            return gw_fail(why, cap, "entry \"%.*s\": %s", (int)GW_MIN(elen, 64), e, reason);
        }
        nodes[n].host = dup_n(hp.host, hp.host_len);
        nodes[n].port = hp.port;
        if (nodes[n++].host == NULL) {
            free_nodes(nodes, n);
            return gw_fail(why, cap, "out of memory");
        }
        if (p[len] == '\0')
            break;
        p += len + 1;
    }
    *out = nodes;
    *count = n;
    return true;
}

/* Parses v into the field of row o (and its derived fields). */
static bool parse_value(const struct opt *o, const char *v, struct gw_config *cfg, char *why,
                        size_t cap)
{
    int64_t x;
    bool ok = true;
    switch (o->type) {
    case T_INT:
        if (!parse_int(o, v, &x, why, cap))
            return false;
        *(int *)field(cfg, o) = (int)x;
        return true;
    case T_INT64:
        if (!parse_int(o, v, &x, why, cap))
            return false;
        *(int64_t *)field(cfg, o) = x;
        return true;
    case T_BOOL:
        if (!gw_config_parse_bool(v, (bool *)field(cfg, o)))
            return gw_fail(why, cap, "not a boolean (on/off, true/false, 1/0)");
        return true;
    case T_ENUM:
        return parse_enum(o, v, (int *)field(cfg, o), why, cap);
    case T_STRING:
        ok = check_string(o, v, why, cap);
        break;
    case T_PATH:
        ok = check_path(o, v, why, cap);
        break;
    case T_LISTEN:
        ok = check_listen(v, why, cap);
        break;
    case T_BACKEND:
        ok = parse_backend(v, cfg, why, cap);
        break;
    case T_REDIS: {
        struct gw_redis_target t;
        ok = gw_config_parse_redis_url(v, &t, why, cap) == 0;
        gw_config_redis_target_deinit(&t);
        break;
    }
    case T_RLKEY:
        ok = parse_rlkey(v, cfg, why, cap);
        break;
    case T_FILE:
        ok = check_file(o, v, why, cap);
        break;
    case T_TOKENS:
        ok = check_tokens(o, v, why, cap);
        break;
    case T_NODES: {
        struct gw_redis_node *nodes = NULL;
        int n = 0;
        ok = parse_nodes(v, strcmp(o->name, "REDIS_CLUSTER_NODES") == 0 ? 6379 : 26379, &nodes, &n,
                         why, cap);
        free_nodes(nodes, n);
        break;
    }
    case T_PROXIES:
        ok = parse_proxies(v, cfg, why, cap);
        if (!ok)
            cfg->trusted_count = 0; /* never half a list */
        break;
    }
    if (!ok)
        return false;
    char **slot = (char **)field(cfg, o);
    *slot = strdup(v);
    if (*slot == NULL)
        return gw_fail(why, cap, "out of memory");
    return true;
}

bool gw_config_is_trusted(const struct gw_config *cfg, const uint8_t addr[16])
{
    for (int i = 0; i < cfg->trusted_count; i++)
        if (gw_net_cidr_contains(&cfg->trusted[i], addr))
            return true;
    return false;
}

/* ---- REDIS_URL ---------------------------------------------------------- */

static int hex_value(char c)
{
    if (is_digit(c))
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes n bytes into a new string; *bad on malformed escapes or a
 * decoded NUL. NULL on ENOMEM or bad. */
static char *pct_decode(const char *s, size_t n, bool *bad)
{
    *bad = false;
    char *out = malloc(n + 1);
    if (out == NULL)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            out[o++] = s[i];
            continue;
        }
        int hi = i + 1 < n ? hex_value(s[i + 1]) : -1;
        int lo = i + 2 < n ? hex_value(s[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            free(out);
            *bad = true;
            return NULL;
        }
        out[o++] = (char)(hi * 16 + lo);
        i += 2;
    }
    out[o] = '\0';
    return out;
}

/* Releases what *t holds so far, writes msg into why, returns -EINVAL (or
 * -ENOMEM for the out-of-memory message). */
static int redis_fail(struct gw_redis_target *t, char *why, size_t cap, const char *msg)
{
    static const char oom[] = "out of memory";
    gw_config_redis_target_deinit(t);
    gw_fail(why, cap, "%s", msg);
    return strcmp(msg, oom) == 0 ? -ENOMEM : -EINVAL;
}

int gw_config_parse_redis_url(const char *url, struct gw_redis_target *t, char *why, size_t why_len)
{
    static const char usage[] =
        "expected redis://[:password@]host[:port][/db], rediss://... (TLS) or unix:///path";
    memset(t, 0, sizeof(*t));
    for (const char *c = url; *c != '\0'; c++)
        if ((unsigned char)*c <= 0x20 || *c == 0x7f)
            return redis_fail(t, why, why_len, "spaces and control characters are not allowed");

    /* Schemes are matched in lower case only. This is the one REDIS_URL
     * parser: the Redis store (src/ratelimit.c, src/rl_redis.c) connects to
     * exactly what it returns. */
    if (strncmp(url, "unix://", 7) == 0) {
        const char *path = url + 7;
        if (path[0] != '/' || path[1] == '\0')
            return redis_fail(t, why, why_len,
                              "unix:// needs an absolute socket path, e.g. unix:///run/redis.sock");
        if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
            return redis_fail(t, why, why_len, "socket path too long");
        t->unix_path = strdup(path);
        return t->unix_path != NULL ? 0 : redis_fail(t, why, why_len, "out of memory");
    }
    t->tls_verify = true;
    if (strncmp(url, "rediss://", 9) == 0)
        t->tls = true;
    else if (strncmp(url, "redis://", 8) != 0)
        return redis_fail(t, why, why_len, usage);

    const char *a = url + (t->tls ? 9 : 8);
    /* The last '@' ends the userinfo, so a raw '@' in a password works. */
    const char *at = strrchr(a, '@');
    if (at != NULL) {
        const char *colon = memchr(a, ':', (size_t)(at - a));
        if (colon == NULL)
            return redis_fail(t, why, why_len, "user information must be [user]:password@");
        bool bad = false;
        if (colon > a) {
            t->username = pct_decode(a, (size_t)(colon - a), &bad);
            if (t->username == NULL)
                return redis_fail(t, why, why_len,
                                  bad ? "invalid percent-encoding in the user name"
                                      : "out of memory");
        }
        t->password = pct_decode(colon + 1, (size_t)(at - colon - 1), &bad);
        if (t->password == NULL)
            return redis_fail(t, why, why_len,
                              bad ? "invalid percent-encoding in the password" : "out of memory");
        if (t->password[0] == '\0')
            return redis_fail(t, why, why_len, "empty password");
        a = at + 1;
    }
    size_t alen = strcspn(a, "/?#");
    struct gw_net_hostport hp;
    char reason[128];
    if (!gw_net_parse_hostport(a, alen, 6379, &hp, reason, sizeof(reason)))
        return redis_fail(t, why, why_len, reason);
    const char *rest = a + alen;
    if (rest[0] == '?' || rest[0] == '#')
        return redis_fail(t, why, why_len, "query parameters and fragments are not supported");
    if (rest[0] == '/' && rest[1] != '\0') {
        int64_t db;
        if (!gw_parse_digits(rest + 1, strlen(rest + 1), 0, INT_MAX, &db))
            return redis_fail(t, why, why_len, "database must be a non-negative number, e.g. /0");
        t->db = (int)db;
    }
    t->port = hp.port;
    t->host = dup_n(hp.host, hp.host_len);
    return t->host != NULL ? 0 : redis_fail(t, why, why_len, "out of memory");
}

/* Frees a secret string without leaving it in freed heap memory. */
static void free_secret(char *s)
{
    if (s != NULL) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

void gw_config_redis_target_deinit(struct gw_redis_target *t)
{
    free(t->host);
    free(t->unix_path);
    free(t->username);
    free_secret(t->password);
    free(t->tls_ca_file);
    free(t->tls_cert_file);
    free(t->tls_key_file);
    free(t->tls_server_name);
    free_nodes(t->sentinels, t->nsentinels);
    free_nodes(t->cluster_nodes, t->ncluster_nodes);
    free(t->sentinel_master);
    free(t->sentinel_username);
    free_secret(t->sentinel_password);
    memset(t, 0, sizeof(*t));
}

static bool nonempty(const char *v)
{
    return v != NULL && v[0] != '\0';
}

enum gw_redis_mode gw_config_redis_mode(const struct gw_config *cfg)
{
    return nonempty(cfg->redis_url)             ? GW_REDIS_URL
           : nonempty(cfg->redis_sentinels)     ? GW_REDIS_SENTINEL
           : nonempty(cfg->redis_cluster_nodes) ? GW_REDIS_CLUSTER
                                                : GW_REDIS_NONE;
}

bool gw_config_redis_enabled(const struct gw_config *cfg)
{
    return gw_config_redis_mode(cfg) != GW_REDIS_NONE;
}

/* *dst = a copy of src when src is set (the old value freed); false on ENOMEM. */
static bool override(char **dst, const char *src, bool secret)
{
    if (src == NULL)
        return true;
    char *copy = strdup(src);
    if (copy == NULL)
        return false;
    if (secret)
        free_secret(*dst);
    else
        free(*dst);
    *dst = copy;
    return true;
}

int gw_config_redis_target(const struct gw_config *cfg, struct gw_redis_target *t, char *why,
                           size_t why_len)
{
    memset(t, 0, sizeof(*t));
    enum gw_redis_mode mode = gw_config_redis_mode(cfg);
    if (mode == GW_REDIS_URL) {
        int rc = gw_config_parse_redis_url(cfg->redis_url, t, why, why_len);
        if (rc != 0)
            return rc;
    } else if (mode == GW_REDIS_SENTINEL) {
        if (!parse_nodes(cfg->redis_sentinels, 26379, &t->sentinels, &t->nsentinels, why, why_len))
            return redis_fail(t, NULL, 0, "REDIS_SENTINELS");
        if (cfg->redis_sentinel_master == NULL)
            return redis_fail(t, why, why_len, "REDIS_SENTINELS needs REDIS_SENTINEL_MASTER");
    } else if (mode == GW_REDIS_CLUSTER) {
        if (!parse_nodes(cfg->redis_cluster_nodes, 6379, &t->cluster_nodes, &t->ncluster_nodes, why,
                         why_len))
            return redis_fail(t, NULL, 0, "REDIS_CLUSTER_NODES");
    } else {
        return redis_fail(t, why, why_len, "no Redis configured");
    }
    if (cfg->redis_tls == GW_REDIS_TLS_ON)
        t->tls = true;
    else if (cfg->redis_tls == GW_REDIS_TLS_OFF)
        t->tls = false;
    t->tls_verify = cfg->redis_tls_verify;
    /* REDIS_DB = auto is -1; a value that contradicts the URL's /db is
     * refused at load, and 0 (also a zeroed, hand-built configuration)
     * leaves the URL's. */
    if (cfg->redis_db > 0)
        t->db = cfg->redis_db;
    bool ok = override(&t->username, cfg->redis_username, false) &&
              override(&t->password, cfg->redis_password, true) &&
              override(&t->tls_ca_file, cfg->redis_tls_ca_file, false) &&
              override(&t->tls_cert_file, cfg->redis_tls_cert_file, false) &&
              override(&t->tls_key_file, cfg->redis_tls_key_file, false) &&
              override(&t->tls_server_name, cfg->redis_tls_server_name, false) &&
              override(&t->sentinel_master, cfg->redis_sentinel_master, false) &&
              override(&t->sentinel_username, cfg->redis_sentinel_username, false) &&
              override(&t->sentinel_password, cfg->redis_sentinel_password, true);
    return ok ? 0 : redis_fail(t, why, why_len, "out of memory");
}

/* ---- load --------------------------------------------------------------- */

static const char *process_getenv(void *ctx, const char *name)
{
    return getenv(name);
}

/* Writes v with control and DEL bytes escaped, so one error stays one line. */
static void put_escaped(FILE *out, const char *v)
{
    for (const unsigned char *p = (const unsigned char *)v; *p != '\0'; p++) {
        if (*p < 0x20 || *p == 0x7f)
            fprintf(out, "\\x%02x", *p);
        else
            fputc(*p, out);
    }
}

static void report(FILE *err, const struct opt *o, const char *v, const char *why)
{
    if (err == NULL)
        return;
    char *masked = (o->flags & F_SECRET) && !(o->flags & F_MASK_ALL) ? mask_userinfo(v) : NULL;
    fprintf(err, "config error: %s=", o->name);
    if (o->flags & F_SECRET)
        put_escaped(err, masked != NULL ? masked : "***");
    else
        put_escaped(err, v);
    fprintf(err, ": %s\n", why);
    free(masked);
}

static const struct opt *find_opt(const char *name)
{
    for (size_t i = 0; i < GW_ARRAY_LEN(opts); i++)
        if (strcmp(opts[i].name, name) == 0)
            return &opts[i];
    return NULL;
}

bool gw_config_is_loopback(const char *host)
{
    if (host == NULL)
        return false;
    if (strcasecmp(host, "localhost") == 0)
        return true;
    uint8_t a[16];
    if (!gw_net_parse_addr(host, strlen(host), a, NULL))
        return false;
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(a, mapped, sizeof(mapped)) == 0)
        return a[12] == 127; /* 127.0.0.0/8 */
    static const uint8_t one[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    return memcmp(a, one, sizeof(one)) == 0;
}

/* The admin listener (SPEC.md §11): one that other hosts can reach needs a
 * token, and it cannot share the client listener's port. */
static int check_admin(const struct gw_config *cfg, FILE *err)
{
    if (cfg->admin_port < 0 || cfg->admin_host == NULL)
        return 0;
    int errors = 0;
    if (cfg->admin_token == NULL && !gw_config_is_loopback(cfg->admin_host)) {
        report(err, find_opt("ADMIN_HOST"), cfg->admin_host,
               "not a loopback address and ADMIN_TOKEN is unset: set ADMIN_TOKEN, or listen on "
               "127.0.0.1 or ::1");
        errors++;
    }
    if (cfg->admin_port != 0 && cfg->admin_port == cfg->gateway_port) {
        char v[16];
        snprintf(v, sizeof(v), "%d", cfg->admin_port);
        report(err, find_opt("ADMIN_PORT"), v, "same port as GATEWAY_PORT");
        errors++;
    }
    return errors;
}

/* Checks that span variables: the three endpoint paths must differ, or one
 * endpoint would hide another. */
static int check_cross(const struct gw_config *cfg, FILE *err)
{
    static const char *const paths[] = {"HEALTH_PATH", "STATS_PATH", "METRICS_PATH"};
    int errors = 0;
    for (size_t i = 1; i < GW_ARRAY_LEN(paths); i++) {
        const struct opt *a = find_opt(paths[i]);
        const char *va = *(char *const *)cfield(cfg, a);
        for (size_t j = 0; j < i && va != NULL; j++) {
            const struct opt *b = find_opt(paths[j]);
            const char *vb = *(char *const *)cfield(cfg, b);
            if (vb != NULL && strcmp(va, vb) == 0) {
                char why[64];
                snprintf(why, sizeof(why), "same path as %s", b->name);
                report(err, a, va, why);
                errors++;
                break;
            }
        }
    }
    errors += check_admin(cfg, err);
    return errors;
}

/* Reports a cross-variable problem on row `name` (whose value is v). */
static int report_named(FILE *err, const char *name, const char *v, const char *why)
{
    const struct opt *o = find_opt(name);
    report(err, o, v != NULL ? v : "", why);
    return 1;
}

/* A PEM file of the REDIS_TLS_* variables: readable and holding what it
 * should (a certificate, or a private key), so a typo is an exit-2 error at
 * start-up rather than a TLS failure on every connect. */
static int check_pem(FILE *err, const char *name, const char *path, bool key, EVP_PKEY **pkey,
                     X509 **cert)
{
    FILE *f = fopen(path, "r");
    char why[256];
    if (f == NULL) {
        snprintf(why, sizeof(why), "cannot read the file: %s", strerror(errno));
        return report_named(err, name, path, why);
    }
    bool ok;
    if (key) {
        EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        ok = k != NULL;
        if (pkey != NULL)
            *pkey = k;
        else
            EVP_PKEY_free(k);
    } else {
        X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
        ok = x != NULL;
        if (cert != NULL)
            *cert = x;
        else
            X509_free(x);
    }
    fclose(f);
    ERR_clear_error();
    if (ok)
        return 0;
    return report_named(err, name, path,
                        key ? "no PEM private key in the file (an encrypted key is not supported)"
                            : "no PEM certificate in the file");
}

/* SPEC.md §12: one Redis deployment, Sentinel settings only with
 * REDIS_SENTINELS, REDIS_TLS_* only with TLS, a client certificate with
 * its key, readable certificate files. */
static int check_redis(const struct gw_config *cfg, FILE *err)
{
    int errors = 0;
    const char *url = cfg->redis_url, *sent = cfg->redis_sentinels;
    const char *cluster = cfg->redis_cluster_nodes;
    int modes = (url != NULL) + (sent != NULL) + (cluster != NULL);
    if (modes > 1) {
        const char *name = cluster != NULL ? "REDIS_CLUSTER_NODES" : "REDIS_SENTINELS";
        errors += report_named(err, name, cluster != NULL ? cluster : sent,
                               "only one of REDIS_URL, REDIS_SENTINELS and REDIS_CLUSTER_NODES "
                               "may be set");
    }
    if (cluster != NULL && cfg->redis_db > 0) {
        char v[16];
        snprintf(v, sizeof(v), "%d", cfg->redis_db);
        errors += report_named(err, "REDIS_DB", v,
                               "must be 0 with REDIS_CLUSTER_NODES (a Redis "
                               "Cluster has only database 0)");
    }
    if (sent != NULL && cfg->redis_sentinel_master == NULL)
        errors += report_named(err, "REDIS_SENTINELS", sent, "needs REDIS_SENTINEL_MASTER");
    static const char *const sentinel_only[] = {"REDIS_SENTINEL_MASTER", "REDIS_SENTINEL_USERNAME",
                                                "REDIS_SENTINEL_PASSWORD"};
    for (size_t i = 0; i < GW_ARRAY_LEN(sentinel_only) && sent == NULL; i++) {
        const char *v = *(char *const *)cfield(cfg, find_opt(sentinel_only[i]));
        if (v != NULL)
            errors += report_named(err, sentinel_only[i], v, "only used with REDIS_SENTINELS");
    }
    if (cfg->redis_sentinel_username != NULL && cfg->redis_sentinel_password == NULL)
        errors += report_named(err, "REDIS_SENTINEL_USERNAME", cfg->redis_sentinel_username,
                               "needs REDIS_SENTINEL_PASSWORD");

    /* TLS: from the URL's scheme unless REDIS_TLS says otherwise. */
    bool url_tls = url != NULL && strncmp(url, "rediss://", 9) == 0;
    bool url_unix = url != NULL && strncmp(url, "unix://", 7) == 0;
    bool tls = url_tls;
    if (cfg->redis_tls == GW_REDIS_TLS_ON) {
        tls = true;
        if (url != NULL && !url_tls)
            errors += report_named(err, "REDIS_TLS", "on",
                                   url_unix ? "TLS is not available over a unix socket"
                                            : "REDIS_URL is redis://; use rediss:// for TLS");
    } else if (cfg->redis_tls == GW_REDIS_TLS_OFF) {
        tls = false;
        if (url_tls)
            errors += report_named(err, "REDIS_TLS", "off", "contradicts REDIS_URL's rediss://");
    }
    static const char *const tls_only[] = {"REDIS_TLS_CA_FILE", "REDIS_TLS_CERT_FILE",
                                           "REDIS_TLS_KEY_FILE", "REDIS_TLS_SERVER_NAME"};
    for (size_t i = 0; i < GW_ARRAY_LEN(tls_only) && !tls; i++) {
        const char *v = *(char *const *)cfield(cfg, find_opt(tls_only[i]));
        if (v != NULL)
            errors += report_named(err, tls_only[i], v,
                                   "set, but TLS to Redis is off (use rediss:// in REDIS_URL, or "
                                   "REDIS_TLS=on with REDIS_SENTINELS or REDIS_CLUSTER_NODES)");
    }
    if (tls) {
        const char *ca = cfg->redis_tls_ca_file, *crt = cfg->redis_tls_cert_file;
        const char *key = cfg->redis_tls_key_file;
        if ((crt == NULL) != (key == NULL))
            errors += report_named(err, crt != NULL ? "REDIS_TLS_CERT_FILE" : "REDIS_TLS_KEY_FILE",
                                   crt != NULL ? crt : key,
                                   crt != NULL ? "needs REDIS_TLS_KEY_FILE"
                                               : "needs REDIS_TLS_CERT_FILE");
        if (ca != NULL)
            errors += check_pem(err, "REDIS_TLS_CA_FILE", ca, false, NULL, NULL);
        EVP_PKEY *pk = NULL;
        X509 *x = NULL;
        int bad = 0;
        if (crt != NULL)
            bad += check_pem(err, "REDIS_TLS_CERT_FILE", crt, false, NULL, &x);
        if (key != NULL)
            bad += check_pem(err, "REDIS_TLS_KEY_FILE", key, true, &pk, NULL);
        if (bad == 0 && x != NULL && pk != NULL && X509_check_private_key(x, pk) != 1)
            bad += report_named(err, "REDIS_TLS_KEY_FILE", key,
                                "does not match the certificate of REDIS_TLS_CERT_FILE");
        ERR_clear_error();
        EVP_PKEY_free(pk);
        X509_free(x);
        errors += bad;
    }
    if (cfg->redis_db >= 0 && url != NULL && !url_unix) {
        struct gw_redis_target ut;
        if (gw_config_parse_redis_url(url, &ut, NULL, 0) == 0 && ut.db != 0 &&
            ut.db != cfg->redis_db) {
            char why[96];
            snprintf(why, sizeof(why), "contradicts the database /%d of REDIS_URL", ut.db);
            char v[16];
            snprintf(v, sizeof(v), "%d", cfg->redis_db);
            errors += report_named(err, "REDIS_DB", v, why);
        }
        gw_config_redis_target_deinit(&ut);
    }
    if (cfg->redis_username != NULL && cfg->redis_password == NULL &&
        (url == NULL || strchr(url, '@') == NULL))
        errors += report_named(err, "REDIS_USERNAME", cfg->redis_username,
                               "needs a password (REDIS_PASSWORD or one in REDIS_URL)");
    return errors;
}

static int online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        return 1;
    return (int)GW_MIN(n, 256);
}

int gw_config_load(struct gw_config *cfg, gw_config_getenv_fn getenv_fn, void *ctx, FILE *err)
{
    memset(cfg, 0, sizeof(*cfg));
    if (getenv_fn == NULL)
        getenv_fn = process_getenv;
    int errors = 0;
    bool workers_ok = false;
    for (size_t i = 0; i < GW_ARRAY_LEN(opts); i++) {
        const struct opt *o = &opts[i];
        const char *v = getenv_fn(ctx, o->name);
        bool is_default = false;
        if (v == NULL || (v[0] == '\0' && (o->flags & F_EMPTY_UNSET))) {
            v = o->def;
            is_default = true;
        }
        if (v == NULL) {
            if (o->flags & F_OPTIONAL)
                *(int *)field(cfg, o) = -1;
            continue; /* unset and no default: the field stays NULL */
        }
        char why[256];
        bool ok;
        if (v[0] == '\0' && !is_default)
            ok = gw_fail(why, sizeof(why), "empty value (unset the variable for the default%s%s)",
                         o->def != NULL && o->def[0] != '\0' ? " " : "",
                         o->def != NULL ? o->def : "");
        else
            ok = parse_value(o, v, cfg, why, sizeof(why));
        if (!ok) {
            if (is_default) {
                /* A bug in the table, not the operator's fault: say so. */
                char msg[300];
                snprintf(msg, sizeof(msg), "built-in default is invalid: %s", why);
                report(err, o, v, msg);
            } else {
                report(err, o, v, why);
            }
            errors++;
        } else if (o->off == OFF(worker_threads)) {
            workers_ok = true;
        }
    }
    if (workers_ok && cfg->worker_threads == 0)
        cfg->worker_threads = online_cpus();
    /* auto: room for every in-flight request in each worker's pool, so that
     * below the cap no request pays for a new backend connection. */
    if (cfg->upstream_keepalive < 0)
        cfg->upstream_keepalive = cfg->max_concurrent_requests;
    errors += check_cross(cfg, err);
    errors += check_redis(cfg, err);
    return errors;
}

void gw_config_deinit(struct gw_config *cfg)
{
    for (size_t i = 0; i < GW_ARRAY_LEN(opts); i++) {
        if (!is_string_type(opts[i].type))
            continue;
        char **slot = (char **)field(cfg, &opts[i]);
        if (*slot != NULL && (opts[i].flags & F_SECRET))
            explicit_bzero(*slot, strlen(*slot));
        free(*slot);
    }
    free(cfg->backend_host);
    free(cfg->backend_base_path);
    free(cfg->backend_authority);
    free(cfg->rate_limit_key_header);
    memset(cfg, 0, sizeof(*cfg));
}

/* ---- env file ----------------------------------------------------------- */

struct env_entry {
    char *key;
    char *val;
    unsigned line;
};

static bool is_key_char(char c, bool first)
{
    return c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (!first && is_digit(c));
}

static char *skip_blank(char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

static void trim_right(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
}

/* Splits one line in place. Returns 1 with *key and *val set, 0 for a blank or
 * comment line, -1 with a reason when malformed. */
static int split_env_line(char *line, char **key, char **val, const char **why)
{
    trim_right(line);
    char *p = skip_blank(line);
    if (*p == '\0' || *p == '#')
        return 0;
    if (strncmp(p, "export", 6) == 0 && (p[6] == ' ' || p[6] == '\t'))
        p = skip_blank(p + 6);
    char *k = p;
    if (!is_key_char(*p, true)) {
        *why = "expected KEY=VALUE with KEY made of letters, digits and '_'";
        return -1;
    }
    while (is_key_char(*p, false))
        p++;
    char *kend = p;
    p = skip_blank(p);
    if (*p != '=') {
        *why = "expected KEY=VALUE with KEY made of letters, digits and '_'";
        return -1;
    }
    *kend = '\0';
    char *v = skip_blank(p + 1);
    size_t n = strlen(v);
    if (n > 0 && (v[0] == '"' || v[0] == '\'')) {
        if (n < 2 || v[n - 1] != v[0]) {
            *why = "unterminated quote";
            return -1;
        }
        v[n - 1] = '\0';
        v++;
    }
    *key = k;
    *val = v;
    return 1;
}

int gw_config_load_env_file(const char *path, FILE *err)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -errno; /* the caller names the file and the reason */
    struct env_entry *ents = NULL;
    size_t count = 0, cap = 0;
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t len;
    unsigned lineno = 0;
    int rc = 0;
    while ((len = getline(&line, &line_cap, f)) >= 0) {
        lineno++;
        char *key, *val;
        const char *why = "";
        int kind = (size_t)len != strlen(line) ? (why = "NUL byte in line", -1)
                                               : split_env_line(line, &key, &val, &why);
        if (kind == 0)
            continue;
        if (kind < 0) {
            if (err != NULL)
                fprintf(err, "config error: %s:%u: malformed line: %s\n", path, lineno, why);
            rc = -EINVAL;
            continue;
        }
        if (count == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            struct env_entry *n = realloc(ents, ncap * sizeof(*n));
            if (n == NULL) {
                rc = -ENOMEM;
                break;
            }
            ents = n;
            cap = ncap;
        }
        ents[count].key = strdup(key);
        ents[count].val = strdup(val);
        ents[count].line = lineno;
        count++;
        if (ents[count - 1].key == NULL || ents[count - 1].val == NULL) {
            rc = -ENOMEM;
            break;
        }
    }
    if (ferror(f) && rc == 0)
        rc = -EIO;
    free(line);
    fclose(f);

    for (size_t i = 0; i < count && rc != -ENOMEM; i++) {
        bool later = false;
        for (size_t j = i + 1; j < count && !later; j++)
            later = strcmp(ents[i].key, ents[j].key) == 0;
        if (later)
            continue; /* the last line for a key wins */
        if (find_opt(ents[i].key) == NULL && err != NULL)
            fprintf(err, "config warning: %s:%u: %s is not a gateway variable\n", path,
                    ents[i].line, ents[i].key);
        /* overwrite=0: the real environment wins over the file. */
        if (setenv(ents[i].key, ents[i].val, 0) != 0 && rc == 0)
            rc = -errno;
    }
    for (size_t i = 0; i < count; i++) {
        free(ents[i].key);
        free(ents[i].val);
    }
    free(ents);
    return rc;
}

/* ---- output ------------------------------------------------------------- */

static json_t *json_value(const struct gw_config *cfg, const struct opt *o)
{
    const void *p = cfield(cfg, o);
    switch (o->type) {
    case T_INT:
        if ((o->flags & F_OPTIONAL) && *(const int *)p < 0)
            return json_null();
        if ((o->flags & F_AUTO) && *(const int *)p < 0)
            return json_string("auto"); /* resolved later (REDIS_DB: the URL's /db, else 0) */
        return json_integer(*(const int *)p);
    case T_INT64:
        return json_integer(*(const int64_t *)p);
    case T_BOOL:
        return json_boolean(*(const bool *)p);
    case T_ENUM: {
        int v = *(const int *)p;
        int n = 0;
        while (o->choices[n] != NULL)
            n++;
        return v >= 0 && v < n ? json_string(o->choices[v]) : json_integer(v);
    }
    default:
        break;
    }
    const char *s = *(char *const *)p;
    if (s == NULL)
        return json_null();
    if (!(o->flags & F_SECRET))
        return json_string(s);
    if (o->flags & F_MASK_ALL)
        return json_string("***");
    char *masked = mask_userinfo(s);
    json_t *j = masked != NULL ? json_string(masked) : NULL;
    free(masked);
    return j;
}

int gw_config_print_json(const struct gw_config *cfg, FILE *out)
{
    json_t *obj = json_object();
    if (obj == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < GW_ARRAY_LEN(opts); i++) {
        if (json_object_set_new(obj, opts[i].name, json_value(cfg, &opts[i])) != 0) {
            json_decref(obj);
            return -ENOMEM;
        }
    }
    int rc = json_dumpf(obj, out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(obj);
    if (rc != 0 || fputc('\n', out) == EOF || fflush(out) == EOF)
        return -EIO;
    return 0;
}

int gw_config_print_env_example(FILE *out)
{
    fputs("# gateway.env.example: every variable the gateway reads, set to its default.\n"
          "# Generated from the table in src/config.c: regenerate with `make env-example`,\n"
          "# do not edit by hand. KEY=VALUE lines without quotes, usable with\n"
          "# `gateway --env-file` and `docker run --env-file`; the real environment wins.\n",
          out);
    for (size_t i = 0; i < GW_ARRAY_LEN(opts); i++) {
        const struct opt *o = &opts[i];
        fprintf(out, "\n# %s", o->help);
        if (o->type == T_INT || o->type == T_INT64)
            fprintf(out, " Range %lld..%lld.", (long long)o->min, (long long)o->max);
        else if (o->type == T_BOOL)
            fputs(" on/off.", out);
        else if (o->type == T_ENUM) {
            /* Only the implemented choices; reserved names are refused. */
            for (int c = 0; o->choices[c] != NULL && c <= o->max; c++)
                fprintf(out, "%s%s", c == 0 ? " One of: " : ", ", o->choices[c]);
            fputc('.', out);
        }
        fprintf(out, "\n%s=%s\n", o->name, o->def != NULL ? o->def : "");
    }
    if (ferror(out) || fflush(out) == EOF)
        return -EIO;
    return 0;
}
