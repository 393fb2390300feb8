/*
 * Helpers of the admin API's integration tests (SPEC.md §11;
 * test/integration/test_admin.c, test_admin_cluster.c): the admin port a
 * gateway logged, one request to it, PUT and GET /rules, and the rules
 * those tests put (one limit "api" on /users/ keyed by X-Client; the rules
 * sync's unit tests store them too) with a request on the client port that
 * it counts. Every helper fails the
 * current cmocka test on what it checks.
 */
#ifndef GWT_ADMIN_H
#define GWT_ADMIN_H

#include <stdbool.h>

#include "gwtest.h"

/* The port of "admin listening on 127.0.0.1:<port>" in p's log (ADMIN_PORT=0);
 * fails the test (the log dumped) when there is none. */
int gwt_admin_port_of(struct gwt_proc *p);

/* One request to port with Connection: close and Content-Length: headers
 * (may be NULL) are extra lines ("K: V\r\n"), body may be NULL. r gets the
 * response (gwt_response_free it); fails the test when the exchange
 * failed. */
void gwt_admin_request(int port, const char *method, const char *target, const char *headers,
                       const char *body, struct gwt_response *r);

/* Rules JSON with one limit "api" on path prefix /users/, keyed by
 * header:X-Client, n requests per minute: a static buffer, overwritten by
 * the next call. */
const char *gwt_admin_rules(int n);

/* PUT /rules text with headers (may be NULL) on the admin port aport; fails
 * the test unless 200. Returns the new version (a static buffer); source
 * (may be NULL) gets the response's "source". */
const char *gwt_admin_put_rules(int aport, const char *text, const char *headers, char source[32]);

/* GET /rules on aport, which must be 200: its version and source; *has_rules
 * (may be NULL) says whether it carried "rules". */
void gwt_admin_get_rules(int aport, char version[32], char source[32], bool *has_rules);

/* GET /users/1 on the client port as X-Client client (Connection: close):
 * the status. With has_policy, *has_policy says whether RateLimit-Policy
 * names the api limit with quota q (0: any quota). */
int gwt_admin_api_get(int port, const char *client, int q, bool *has_policy);

/* After a DELETE /ratelimit for client at t0 (gwt_now_ms): polls the n
 * client ports round-robin (gwt_admin_api_get, 5 ms between rounds) until
 * each serves client (200); ms[i] gets the time from t0 to port i's first
 * 200. Any other answer than 200 or 429 fails the test, and so does a port
 * still refusing after fail_after_ms. */
void gwt_admin_wait_served(const int *ports, int n, const char *client, long long t0,
                           long fail_after_ms, long ms[]);

#endif
