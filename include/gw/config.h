/*
 * Gateway configuration: one table of rows (name, type, default, range,
 * field offset, flags) parses the environment, validates, prints the masked
 * JSON of --check-config and generates gateway.env.example (SPEC.md §3).
 */
#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include "gw/common.h"
#include "gw/net.h"

#include <stdio.h>

enum gw_rl_algorithm {
    GW_RL_FIXED_WINDOW = 0,
    GW_RL_SLIDING_WINDOW,
    GW_RL_TOKEN_BUCKET,
    GW_RL_GCRA,
};

enum gw_rl_failure_mode {
    GW_RL_FAIL_OPEN = 0, /* let requests through, count redis_errors */
    GW_RL_FAIL_CLOSED,   /* answer 503 */
    GW_RL_FAIL_LOCAL,    /* decide from the in-process store */
};

enum gw_log_level {
    GW_LOG_DEBUG = 0,
    GW_LOG_INFO,
    GW_LOG_WARN,
    GW_LOG_ERROR,
};

#define GW_CONFIG_MAX_TRUSTED 64

/* REDIS_TLS: auto follows the scheme of REDIS_URL (rediss:// = on). */
enum gw_redis_tls_mode {
    GW_REDIS_TLS_AUTO = 0,
    GW_REDIS_TLS_ON,
    GW_REDIS_TLS_OFF,
};

/* Most entries in REDIS_SENTINELS / REDIS_CLUSTER_NODES. */
#define GW_CONFIG_MAX_REDIS_NODES 16

/* The effective configuration. Strings are owned by the struct (heap, freed
 * by gw_config_deinit). Times are milliseconds unless the name says seconds. */
struct gw_config {
    char *gateway_host;             /* GATEWAY_HOST, listen address */
    int gateway_port;               /* GATEWAY_PORT, 0 = kernel picks (tests) */
    char *backend_url;              /* BACKEND_URL as given */
    char *backend_host;             /* parsed from BACKEND_URL */
    int backend_port;               /* parsed from BACKEND_URL, default 80 */
    char *backend_base_path;        /* parsed, "" when none, never ends in '/' */
    char *backend_authority;        /* "host:port" for Host when PRESERVE_HOST=off,
                                       IPv6 in brackets ("[::1]:8001"); backend_host
                                       itself has no brackets (for getaddrinfo) */
    int worker_threads;             /* WORKER_THREADS, resolved: 0 becomes online CPUs */
    int max_connections;            /* MAX_CONNECTIONS */
    int max_connections_per_client; /* MAX_CONNECTIONS_PER_CLIENT, 0 = no per-client cap */
    char *redis_url;                /* REDIS_URL, NULL when unset */
    int redis_timeout_ms;           /* REDIS_TIMEOUT_MS */
    char *redis_username;           /* REDIS_USERNAME, NULL when unset (wins over the URL's) */
    char *redis_password;           /* REDIS_PASSWORD (secret), NULL when unset */
    int redis_db;                   /* REDIS_DB, -1 = auto (the URL's, else 0) */
    int redis_tls;                  /* REDIS_TLS: enum gw_redis_tls_mode */
    char *redis_tls_ca_file;        /* REDIS_TLS_CA_FILE, NULL = system trust store */
    char *redis_tls_cert_file;      /* REDIS_TLS_CERT_FILE (client certificate), or NULL */
    char *redis_tls_key_file;       /* REDIS_TLS_KEY_FILE (its private key), or NULL */
    char *redis_tls_server_name;    /* REDIS_TLS_SERVER_NAME, NULL = the host connected to */
    bool redis_tls_verify;          /* REDIS_TLS_VERIFY */
    char *redis_sentinels;          /* REDIS_SENTINELS "host:port,...", NULL when unset */
    char *redis_sentinel_master;    /* REDIS_SENTINEL_MASTER */
    char *redis_sentinel_username;  /* REDIS_SENTINEL_USERNAME */
    char *redis_sentinel_password;  /* REDIS_SENTINEL_PASSWORD (secret) */
    char *redis_cluster_nodes;      /* REDIS_CLUSTER_NODES: Cluster seed nodes, or NULL */
    int rate_limit_requests;        /* RATE_LIMIT_REQUESTS */
    int rate_limit_window_s;        /* RATE_LIMIT_WINDOW_SECONDS */
    int rate_limit_burst;           /* RATE_LIMIT_BURST, 0 = RATE_LIMIT_REQUESTS */
    enum gw_rl_algorithm rate_limit_algorithm; /* RATE_LIMIT_ALGORITHM */
    char *rate_limit_key;        /* RATE_LIMIT_KEY as given: "ip" or "header:<Name>" */
    char *rate_limit_key_header; /* <Name> of header:<Name>, NULL for "ip" */
    char *rate_limit_key_prefix; /* RATE_LIMIT_KEY_PREFIX */
    char *rate_limit_rules_file; /* RATE_LIMIT_RULES_FILE, NULL when unset (rules.h) */
    enum gw_rl_failure_mode rate_limit_failure_mode; /* RATE_LIMIT_FAILURE_MODE */
    bool rate_limit_dry_run;                         /* RATE_LIMIT_DRY_RUN */
    bool rate_limit_headers;                         /* RATE_LIMIT_HEADERS */
    char *trusted_proxies;                           /* TRUSTED_PROXIES as given ("" when empty) */
    struct gw_cidr trusted[GW_CONFIG_MAX_TRUSTED];   /* parsed CIDRs */
    int trusted_count;                               /* entries used in trusted[] */
    int max_concurrent_requests;                     /* MAX_CONCURRENT_REQUESTS */
    int max_queue_length;                            /* MAX_QUEUE_LENGTH */
    int queue_timeout_ms;                            /* QUEUE_TIMEOUT_MS */
    int upstream_connect_timeout_ms;                 /* UPSTREAM_CONNECT_TIMEOUT_MS */
    int upstream_timeout_ms;                         /* UPSTREAM_TIMEOUT_MS */
    int upstream_keepalive;           /* UPSTREAM_KEEPALIVE, idle pooled per worker ("auto"
                                         resolved to max_concurrent_requests at load) */
    int upstream_idle_timeout_ms;     /* UPSTREAM_IDLE_TIMEOUT_MS */
    int upstream_resolve_interval_ms; /* UPSTREAM_RESOLVE_INTERVAL_MS, 0 = only at start-up */
    int client_timeout_ms;            /* CLIENT_TIMEOUT_MS */
    int client_body_min_rate;         /* CLIENT_BODY_MIN_RATE, bytes/s over 10 s, 0 = off */
    int max_header_bytes;             /* MAX_HEADER_BYTES */
    int64_t max_body_bytes;           /* MAX_BODY_BYTES, 0 = unlimited */
    bool preserve_host;               /* PRESERVE_HOST */
    char *health_path;                /* HEALTH_PATH */
    char *stats_path;                 /* STATS_PATH */
    char *metrics_path;               /* METRICS_PATH */
    int shutdown_timeout_ms;          /* SHUTDOWN_TIMEOUT_MS */
    char *upgrade_protocols;          /* UPGRADE_PROTOCOLS as given ("none" = no upgrade) */
    int max_tunnels;                  /* MAX_TUNNELS, all workers together */
    int tunnel_idle_timeout_ms;       /* TUNNEL_IDLE_TIMEOUT_MS */
    enum gw_log_level log_level;      /* LOG_LEVEL */
    bool access_log;                  /* ACCESS_LOG */
    char *admin_host;                 /* ADMIN_HOST, the admin listener's address (SPEC.md §11) */
    int admin_port;                   /* ADMIN_PORT, -1 when unset (no admin listener), 0 =
                                         kernel picks (tests) */
    char *admin_token;                /* ADMIN_TOKEN, NULL when unset (secret: never printed) */
};

/* Looks a variable up by name; returns NULL when unset. The returned string
 * is borrowed and must stay valid until gw_config_load returns. */
typedef const char *(*gw_config_getenv_fn)(void *ctx, const char *name);

/* Fills *cfg from variables read through getenv_fn (pass NULL for the
 * process environment, getenv). Every variable of SPEC.md §3 is parsed and
 * validated; unset ones take their default (an empty value counts as set
 * and invalid, except for REDIS_URL and TRUSTED_PROXIES where it means
 * unset/none). Errors accumulate: one line per bad variable,
 * "config error: NAME=VALUE: reason" (a REDIS_URL password shown as ***,
 * control bytes as \xNN), is written to err (may be NULL). A set value never
 * falls back to its default. *cfg is overwritten (deinit it before loading
 * again). Returns 0 on success, or the number of errors (> 0); *cfg is then
 * still safe to pass to gw_config_deinit. Not thread-safe (startup only). */
GW_MUSTCHECK int gw_config_load(struct gw_config *cfg, gw_config_getenv_fn getenv_fn, void *ctx,
                                FILE *err);

/* Frees the strings owned by *cfg and zeroes it. Safe on a zeroed struct. */
void gw_config_deinit(struct gw_config *cfg);

/* One host:port of REDIS_SENTINELS (SPEC.md §12). */
struct gw_redis_node {
    char *host; /* name or IP literal, IPv6 without brackets (heap) */
    int port;   /* 26379 when not given */
};

/* Where and how the rate limiter's Redis store connects: REDIS_URL taken
 * apart by gw_config_parse_redis_url, completed by gw_config_redis_target
 * with the other REDIS_* variables (SPEC.md §12). Strings are owned by the
 * struct (heap), released by gw_config_redis_target_deinit. */
struct gw_redis_target {
    char *host;            /* TCP host, IPv6 without brackets; NULL for a Unix socket or Sentinel */
    int port;              /* TCP port, 6379 when not given; 0 for a Unix socket */
    char *unix_path;       /* absolute socket path of unix:///path, else NULL */
    char *username;        /* ACL user (REDIS_USERNAME, else the URL's), NULL when none */
    char *password;        /* AUTH password (REDIS_PASSWORD, else the URL's), NULL when none */
    int db;                /* SELECT index (REDIS_DB, else the URL's /db), 0 by default */
    bool tls;              /* rediss://, or REDIS_TLS=on */
    bool tls_verify;       /* verify the server's certificate and name (REDIS_TLS_VERIFY) */
    char *tls_ca_file;     /* REDIS_TLS_CA_FILE, NULL = the system trust store */
    char *tls_cert_file;   /* client certificate (PEM), NULL when none */
    char *tls_key_file;    /* its private key (PEM), NULL when none */
    char *tls_server_name; /* SNI and verified name; NULL = the host connected to */
    struct gw_redis_node *sentinels;     /* REDIS_SENTINELS, NULL without Sentinel */
    int nsentinels;                      /* entries in sentinels */
    struct gw_redis_node *cluster_nodes; /* REDIS_CLUSTER_NODES (seeds), NULL without Cluster */
    int ncluster_nodes;                  /* entries in cluster_nodes */
    char *sentinel_master;               /* REDIS_SENTINEL_MASTER */
    char *sentinel_username;             /* REDIS_SENTINEL_USERNAME, or NULL */
    char *sentinel_password;             /* REDIS_SENTINEL_PASSWORD, or NULL */
};

/* Parses REDIS_URL: "redis://[[user]:password@]host[:port][/db]" or
 * "rediss://..." (TLS; host a name, an IPv4 literal or an IPv6 literal in
 * brackets; userinfo percent-decoded, RFC 3986 §3.2.1) or
 * "unix:///absolute/path"; schemes in lower case. Query parameters are
 * refused. Fills *out (zeroed first; tls set for rediss://, tls_verify
 * on). Returns 0; -EINVAL when the URL is malformed, with a one-line reason
 * (never containing the password) in why (may be NULL, why_len bytes);
 * -ENOMEM. *out is safe to deinit on every return. Thread-safe. */
GW_MUSTCHECK int gw_config_parse_redis_url(const char *url, struct gw_redis_target *out, char *why,
                                           size_t why_len);

/* Which Redis deployment the configuration names (SPEC.md §12; at most one
 * of the three variables is set in a valid configuration). */
enum gw_redis_mode {
    GW_REDIS_NONE = 0, /* no Redis: the in-process store */
    GW_REDIS_URL,      /* REDIS_URL: one server */
    GW_REDIS_SENTINEL, /* REDIS_SENTINELS */
    GW_REDIS_CLUSTER,  /* REDIS_CLUSTER_NODES */
};

/* The Redis mode of cfg (an empty variable counts as unset). Pure;
 * thread-safe for a const cfg. */
enum gw_redis_mode gw_config_redis_mode(const struct gw_config *cfg);

/* True when a Redis store is configured (REDIS_URL, REDIS_SENTINELS or
 * REDIS_CLUSTER_NODES).
 * Thread-safe for a const cfg. */
bool gw_config_redis_enabled(const struct gw_config *cfg);

/* Builds the whole Redis target of a loaded (valid) configuration: REDIS_URL,
 * REDIS_SENTINELS or REDIS_CLUSTER_NODES with REDIS_USERNAME/PASSWORD/DB and the REDIS_TLS_*
 * settings applied (SPEC.md §12). Fills *out (zeroed first). Returns 0,
 * -EINVAL (no Redis configured, or a value gw_config_load would refuse;
 * reason in why, may be NULL) or -ENOMEM; *out is safe to deinit on every
 * return. Thread-safe for a const cfg. */
GW_MUSTCHECK int gw_config_redis_target(const struct gw_config *cfg, struct gw_redis_target *out,
                                        char *why, size_t why_len);

/* Frees the strings of *t (passwords wiped first) and zeroes it. Safe on a
 * zeroed struct. */
void gw_config_redis_target_deinit(struct gw_redis_target *t);

/* Reads KEY=VALUE lines from path (blank lines and '#' comments skipped,
 * optional surrounding quotes removed, optional leading "export ") and sets
 * each variable with setenv(..., overwrite=0) so the real environment wins.
 * Returns 0, or -errno when the file cannot be read; a malformed line is
 * reported on err with its line number and counts as -EINVAL (the other
 * lines are still applied; every malformed line is reported). When a key
 * repeats in the file, its last line wins. A key that is not a gateway
 * variable only draws a warning. An unreadable file (-errno other than
 * -EINVAL) is not printed: the caller names it. Startup only (setenv). */
GW_MUSTCHECK int gw_config_load_env_file(const char *path, FILE *err);

/* Writes the effective configuration as one JSON object (keys are the
 * variable names, values typed: numbers, booleans, strings) followed by a
 * newline to out. The password of REDIS_URL is masked as "***", and so
 * are REDIS_PASSWORD and REDIS_SENTINEL_PASSWORD whole.
 * WORKER_THREADS shows the resolved count. REDIS_URL is null when unset.
 * Returns 0, -ENOMEM or -EIO. Thread-safe for a const cfg. */
GW_MUSTCHECK int gw_config_print_json(const struct gw_config *cfg, FILE *out);

/* Writes gateway.env.example text: every variable, its default and a
 * one-line comment, generated from the same table. Returns 0 or -EIO. */
GW_MUSTCHECK int gw_config_print_env_example(FILE *out);

/* True when host (an ADMIN_HOST / GATEWAY_HOST value) names only the
 * loopback interface: "localhost", 127.0.0.0/8 or ::1 (IPv4-mapped
 * included). "0.0.0.0" and "::" are not loopback. Thread-safe. */
bool gw_config_is_loopback(const char *host);

/* Parses a boolean the way every boolean variable does: on/off, true/false,
 * 1/0 (case-insensitive). Returns true on success with *out set. */
bool gw_config_parse_bool(const char *s, bool *out);

/* True when the 16-byte address (IPv4 as IPv4-mapped) is inside any of
 * cfg->trusted (gw_net_cidr_contains). IPv4 entries are stored mapped (prefix + 96), so
 * "0.0.0.0/0" trusts every IPv4 peer and no IPv6 one, while "::/0" trusts
 * everybody. Thread-safe for a const cfg. */
bool gw_config_is_trusted(const struct gw_config *cfg, const uint8_t addr[16]);

#endif
