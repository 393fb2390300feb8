/*
 * The admin listener's endpoints (SPEC.md §11): request routing, the bearer
 * token check, and the answers of GET/PUT /rules, POST /rules/validate and
 * GET/DELETE /ratelimit. The connection side (reading a body, the access
 * log, keep-alive) is src/exchange_admin.c's. Worker thread only, except
 * the pure helpers (route, token check, query parameters).
 */
#ifndef GW_ADMIN_API_H
#define GW_ADMIN_API_H

#include "runtime.h"

/* Longest request body of an admin endpoint (a rules document); beyond,
 * 413. */
#define GW_ADMIN_BODY_MAX (1u << 20)

enum gw_admin_route {
    GW_ADMIN_ROUTE_NOT_FOUND = 0,    /* no such path on the admin listener: 404 */
    GW_ADMIN_ROUTE_BAD_METHOD,       /* a known path, another method: 405 (with Allow) */
    GW_ADMIN_ROUTE_HEALTH,           /* HEALTH_PATH (GET, HEAD) */
    GW_ADMIN_ROUTE_STATS,            /* STATS_PATH (GET, HEAD) */
    GW_ADMIN_ROUTE_METRICS,          /* METRICS_PATH (GET, HEAD) */
    GW_ADMIN_ROUTE_RULES_GET,        /* GET/HEAD /rules */
    GW_ADMIN_ROUTE_RULES_PUT,        /* PUT /rules (a body) */
    GW_ADMIN_ROUTE_RULES_VALIDATE,   /* POST /rules/validate (a body) */
    GW_ADMIN_ROUTE_RATELIMIT_GET,    /* GET/HEAD /ratelimit?limit=&key= */
    GW_ADMIN_ROUTE_RATELIMIT_DELETE, /* DELETE /ratelimit?limit=&key= */
};

/* Which endpoint of the admin listener method (an llhttp method) on the
 * request-target target (its path, query ignored; matched exactly, no
 * normalisation) names. For BAD_METHOD, *allow (may be NULL) gets the
 * Allow field value of the path ("GET, HEAD, PUT"). Thread-safe. */
enum gw_admin_route gw_admin_api_route(const struct gw_config *cfg, int method,
                                       struct gw_slice target, const char **allow);

/* True when the route reads a request body (PUT /rules, POST
 * /rules/validate). */
bool gw_admin_api_route_has_body(enum gw_admin_route r);

/* The bearer check of SPEC.md §11: true when authorization (the value of
 * the Authorization field; .ptr NULL when absent) is "Bearer <token>"
 * (scheme case-insensitive, RFC 9110 §11.1 and RFC 6750 §2.1, one or more
 * spaces) and the credentials equal token. The credentials are compared in
 * constant time (CRYPTO_memcmp over the longer length, so neither the
 * position of the first difference nor the token's length shows in the
 * time taken beyond the length of what was sent). Thread-safe. */
bool gw_admin_api_token_ok(const char *token, struct gw_slice authorization);

/* Finds query parameter name in target's query and writes its value,
 * percent-decoded ('+' is kept as is), NUL-terminated, into out (cap
 * bytes). Returns the value's length; -ENOENT when absent; -EINVAL for a
 * bad %-escape or a decoded NUL; -ENOSPC when it does not fit.
 * Thread-safe. */
GW_MUSTCHECK int gw_admin_api_query(struct gw_slice target, const char *name, char *out,
                                    size_t cap);

/* Appends the complete answer of route r (not HEALTH, STATS, METRICS,
 * NOT_FOUND or BAD_METHOD: those are src/admin.c's and exchange_admin.c's)
 * to out and sets *status. head: the request head (the target, the
 * Content-Type and If-Match fields); body, body_len: the request body for
 * the routes that read one (else NULL, 0). Every error is problem+json.
 * PUT /rules and DELETE /ratelimit act (publish rules, delete state) and
 * block on Redis for at most one round trip each. Returns 0 or -ENOMEM.
 * Worker thread only (the limiter handle of w). */
GW_MUSTCHECK int gw_admin_api_respond(struct gw_worker *w, enum gw_admin_route r,
                                      const struct gw_http_head *head, const char *body,
                                      size_t body_len, struct gw_buf *out, bool keep_alive,
                                      int *status);

/* Appends a problem+json answer (RFC 9457) of status with detail and,
 * when errors is not NULL, an "errors" array of its lines (errors_len
 * bytes, one error per line); extra: whole header lines added (e.g.
 * "WWW-Authenticate: Bearer\r\n"), may be NULL. Returns 0 or -ENOMEM.
 * Thread-safe. */
GW_MUSTCHECK int gw_admin_api_problem(struct gw_buf *out, int status, const char *detail,
                                      const char *errors, size_t errors_len, const char *extra,
                                      bool keep_alive, uint8_t http_minor, bool head_only);

#endif
