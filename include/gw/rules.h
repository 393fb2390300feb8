/*
 * Rate-limit policies (SPEC.md §10): the rules file (JSON, or YAML turned
 * into the same tree), its validation with every error named by its place,
 * its normalised JSON form and version, the rules made from the
 * RATE_LIMIT_* variables when there is no file, and the matcher compiled
 * once per load that tells which limits apply to a request.
 *
 * Ownership: a struct gw_rules is immutable once made and counted by
 * references. Whoever makes it (gw_rules_parse, gw_rules_load_file,
 * gw_rules_from_config) holds one reference; gw_rules_get adds one,
 * gw_rules_put drops one and frees the rules with the last. Readers on any
 * thread may match and read concurrently while they hold a reference.
 */
#ifndef GW_RULES_H
#define GW_RULES_H

#include "gw/common.h"
#include "gw/config.h"
#include "gw/http1.h"
#include "gw/net.h"

#include <regex.h>
#include <stdio.h>

#define GW_RULES_MAX_LIMITS    1024       /* limits in one file */
#define GW_RULES_MAX_RATES     16         /* rates of one limit */
#define GW_RULES_MAX_KEYS      8          /* parts of one composite key */
#define GW_RULES_NAME_MAX      64         /* longest limit or rate name as written */
#define GW_RULES_FILE_MAX      (4u << 20) /* longest rules file, bytes */
#define GW_RULES_VERSION_LEN   12         /* hex digits of the version */
#define GW_RULES_WINDOW_MAX_MS (INT64_C(366) * 86400 * 1000) /* longest window */

/* Which format gw_rules_parse reads. */
enum gw_rules_format {
    GW_RULES_JSON = 0, /* RFC 8259, duplicate object keys refused */
    GW_RULES_YAML,     /* YAML 1.1 via libyaml; one document, no aliases */
};

/* Where the rules in force come from (/stats rules_source). */
enum gw_rules_source {
    GW_RULES_SOURCE_ENV = 0, /* made from RATE_LIMIT_* (no file) */
    GW_RULES_SOURCE_FILE,    /* RATE_LIMIT_RULES_FILE */
    GW_RULES_SOURCE_API,     /* PUT /rules on this instance (SPEC.md §11) */
    GW_RULES_SOURCE_REDIS,   /* <prefix>:rules in Redis, put by another instance or
                                loaded at start-up (SPEC.md §11) */
};

enum gw_rules_key_kind {
    GW_RULES_KEY_IP = 0, /* the client address of SPEC.md §5 */
    GW_RULES_KEY_HEADER, /* a header's value; the client IP when absent */
    GW_RULES_KEY_GLOBAL, /* one bucket for every client of the limit */
};

/* One part of a limit's key. */
struct gw_rules_key {
    enum gw_rules_key_kind kind;
    char *header; /* GW_RULES_KEY_HEADER: the name, lower-cased; else NULL */
};

enum gw_rules_path_kind {
    GW_RULES_PATH_ANY = 0, /* no path condition */
    GW_RULES_PATH_EXACT,   /* path */
    GW_RULES_PATH_PREFIX,  /* path_prefix (string prefix) */
    GW_RULES_PATH_REGEX,   /* path_regex (POSIX ERE over the whole path) */
};

/* One header condition of match.headers. */
struct gw_rules_header {
    char *name;  /* lower-cased field name (compared case-insensitively) */
    char *value; /* exact value, or NULL for "*" (present, any value) */
};

/* One rate of a limit, every default filled in. */
struct gw_rules_rate {
    char *name;                     /* policy name in headers (default filled) */
    int64_t requests;               /* L, 1..10^9 */
    int64_t window_ms;              /* W in ms (>= 1000 for the window algorithms) */
    enum gw_rl_algorithm algorithm; /* GW_RL_GCRA is stored as GW_RL_TOKEN_BUCKET */
    int64_t burst;                  /* token bucket: B (default requests); else 0 */
    int64_t delay_ms;               /* token bucket: shaping allowance; else 0 */
};

/* One limit of the file, every default filled in. */
struct gw_rules_limit {
    char *name;   /* [A-Za-z0-9_.-]{1,64}, unique in the file */
    size_t index; /* position in the file (0-based) */
    bool allow;   /* action: allow (no keys, rates or mode) */
    bool shadow;  /* mode: shadow (decided and counted, never refuses) */
    /* match: every given condition must hold */
    uint64_t methods; /* bit m set for llhttp method m; 0 = any method */
    enum gw_rules_path_kind path_kind;
    char *path;                      /* normal form of path/path_prefix (gw_path_normalize),
                                        the pattern text for a regex; NULL for ANY */
    regex_t *regex;                  /* compiled path_regex (REG_EXTENDED), else NULL */
    struct gw_rules_header *headers; /* match.headers, header_count entries */
    size_t header_count;
    struct gw_cidr *cidrs; /* match.client_cidrs (IPv4 mapped), cidr_count entries */
    size_t cidr_count;
    struct gw_rules_key keys[GW_RULES_MAX_KEYS]; /* key parts in order */
    size_t key_count;                            /* 0 only for an allow limit */
    struct gw_rules_rate *rates;                 /* rate_count entries, file order */
    size_t rate_count;                           /* 0 only for an allow limit */
    char *policy_items;      /* its rates as RateLimit-Policy list members, rendered once:
                                "login-1m";q=5;w=60, "login-1h";q=20;w=3600 ("" for allow) */
    size_t policy_items_len; /* bytes */
};

struct gw_rules_index; /* the compiled matcher, private to src/rules_match.c */

/* A validated, immutable rules set. Fields are read-only for everybody;
 * the struct lives until its last gw_rules_put. */
struct gw_rules {
    struct gw_rules_limit *limits; /* limit_count entries in file order */
    size_t limit_count;
    enum gw_rules_source source;
    char version[GW_RULES_VERSION_LEN + 1]; /* first 12 hex of SHA-256(normalised JSON) */
    char *normalised;             /* the normalised JSON, compact, sorted keys, NUL-ended */
    struct gw_rules_index *index; /* compiled matcher */
    int refs;                     /* private: references (atomic) */
};

/* Parses and validates a rules document of len bytes at text in format fmt
 * (SPEC.md §10). Defaults that come from the environment (the algorithm
 * from RATE_LIMIT_ALGORITHM, the key from RATE_LIMIT_KEY) are read from cfg;
 * cfg may be NULL for the built-in defaults (fixed_window, ip).
 * Every error is collected, not only the first: each is one line
 * "<prefix><place>: <value as JSON>: <reason>" (e.g.
 * "limits[2].rates[0].window: \"0s\": must be at least 1 s"; the value is
 * left out where there is none) written to err (may be NULL); prefix may be
 * NULL. Unknown fields are errors. A document the JSON or YAML reader
 * cannot read is one line "<prefix>line L, column C: <reason>". Values are
 * shown as ASCII JSON cut to 80 bytes and field names with control bytes
 * as '?', so an error is always one line. On success *out gets new rules (one
 * reference, source GW_RULES_SOURCE_FILE) and 0 is returned; otherwise
 * *out is NULL and the number of errors (> 0) is returned, or -ENOMEM.
 * text is only read during the call. Thread-safe (no shared state). */
GW_MUSTCHECK int gw_rules_parse(const char *text, size_t len, enum gw_rules_format fmt,
                                const struct gw_config *cfg, struct gw_rules **out, FILE *err,
                                const char *prefix);

/* Reads the file at path (at most GW_RULES_FILE_MAX bytes; YAML when the
 * name ends in .yaml or .yml, else JSON) and parses it as gw_rules_parse
 * does. An unreadable or oversized file is one error line
 * "<prefix><path>: <reason>". Returns as gw_rules_parse. Blocks on file
 * I/O: start-up, check commands and reloads, never a worker. */
GW_MUSTCHECK int gw_rules_load_file(const char *path, const struct gw_config *cfg,
                                    struct gw_rules **out, FILE *err, const char *prefix);

/* Makes the rules used without a file: one limit named "default" matching
 * every request, keyed by RATE_LIMIT_KEY, with one rate of
 * RATE_LIMIT_REQUESTS per RATE_LIMIT_WINDOW_SECONDS, RATE_LIMIT_ALGORITHM
 * and RATE_LIMIT_BURST (SPEC.md §10). Source GW_RULES_SOURCE_ENV. Returns
 * new rules with one reference, or NULL on ENOMEM. Thread-safe for a
 * const cfg. */
GW_MUSTCHECK struct gw_rules *gw_rules_from_config(const struct gw_config *cfg);

/* Adds a reference to r and returns it. Thread-safe (atomic). */
struct gw_rules *gw_rules_get(struct gw_rules *r);

/* Drops a reference; the last one frees the rules, its limits, regexes and
 * matcher. NULL is ignored. Thread-safe (atomic); the caller must not use
 * r afterwards. */
void gw_rules_put(struct gw_rules *r);

/* Writes the normalised form of r as indented JSON (sorted keys, every
 * default filled in, windows and delays in their largest exact unit, "1m",
 * "1500ms") and a newline to out; it is itself a valid rules file of the same
 * version.
 * Returns 0 or -EIO (or -ENOMEM). Thread-safe. */
GW_MUSTCHECK int gw_rules_print_json(const struct gw_rules *r, FILE *out);

/* Human name of an algorithm as the file spells it ("fixed_window", ...).
 * Never NULL. Thread-safe. */
const char *gw_rules_algorithm_name(enum gw_rl_algorithm a);

/* ---- matching ----------------------------------------------------------- */

/* The parts of a request the match conditions read. Borrowed for the call. */
struct gw_rules_request {
    int method;                      /* llhttp_method_t of the request */
    struct gw_slice path;            /* normal form (gw_path_normalize), followed by a NUL
                                        byte (path.ptr[path.len] == 0: the sanitizers'
                                        regexec reads up to it despite REG_STARTEND) */
    const struct gw_http_head *head; /* headers; may be NULL (no headers) */
    const uint8_t *client_addr;      /* 16 bytes, IPv4 mapped: the client address of
                                        SPEC.md §5 (after TRUSTED_PROXIES) */
};

/* What gw_rules_match found. */
enum gw_rules_verdict {
    GW_RULES_NONE = 0, /* no limit applies: not rate limited, no headers */
    GW_RULES_LIMITED,  /* the limits written to out apply, in file order */
    GW_RULES_ALLOW,    /* an action: allow limit matched (*allowed_by): skip every limit */
};

/* Finds the limits of r whose match holds for req (SPEC.md §10): when an
 * action: allow limit matches, returns GW_RULES_ALLOW and nothing else is
 * written (*allowed_by, may be NULL, gets the first such limit); otherwise
 * writes the applicable limits in file order to out (up to cap entries;
 * cap >= r->limit_count always suffices), sets *count to how many and
 * returns GW_RULES_LIMITED, or GW_RULES_NONE when none applies. The
 * pointers written point into r and live as long as the caller's
 * reference. Cost: per request, a few binary searches over the path table
 * plus the conditions of the candidate limits only. Thread-safe for any
 * number of concurrent callers holding a reference; takes no lock of its
 * own (glibc's regexec locks each compiled path_regex while it runs, so
 * callers meeting the same regex take turns for its duration). */
enum gw_rules_verdict gw_rules_match(const struct gw_rules *r, const struct gw_rules_request *req,
                                     const struct gw_rules_limit **out, size_t cap, size_t *count,
                                     const struct gw_rules_limit **allowed_by);

#endif
