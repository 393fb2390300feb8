/*
 * Scaffolding shared by the integration test files: per-test and per-group
 * process teardown, reading a response or failing, "the gateway still
 * serves" checks, backend_app request counts and waiting on a /stats field.
 * All assertions are cmocka assertions (a failure ends the current test).
 */
#ifndef GWT_SUITE_H
#define GWT_SUITE_H

#include <stdbool.h>

#include "gwtest.h"

/* Stops p with SIGTERM (waiting up to 5 s) and cleans it up, ignoring how it
 * ended. For group teardown of processes the tests did not need to check. */
void gwt_stop_and_cleanup(struct gwt_proc *p);

/* When p runs (pid > 0): stops it with SIGTERM (waiting up to 5 s), dumps its
 * log when it did not exit 0, and cleans it up. Returns 0 when it exited 0 or
 * was not running, else -1 (for a cmocka teardown's return value). */
int gwt_stop_expect_exit0(struct gwt_proc *p);

/* backend_app's request count on backend_port (GET /stats); asserts the
 * read succeeded. */
long long gwt_backend_requests(int backend_port);

/* Reads one response from fd into r (see gwt_read_response) or fails the
 * test naming what (the request that went unanswered). */
void gwt_must_read(int fd, struct gwt_response *r, bool head, const char *what);

/* Reads one /echo reply from fd (status 200, parsed into e; caller calls
 * gwt_echo_free) or fails the test naming what. */
void gwt_read_echo(int fd, struct gwt_echo *e, const char *what);

/* Reads one response from fd and asserts it is backend_app's 200 reply to
 * GET /users/<id> (JSON member "id" equals id). context (may be NULL) is
 * appended to the failure message. Returns whether the response said the
 * connection closes after it (gwt_response.conn_closed). */
bool gwt_expect_user(int fd, int id, const char *context);

/* GET target on port (own connection) answers 200, else fails the test. */
void gwt_assert_serves(int port, const char *target);

/* As gwt_assert_serves, and backend_app on backend_port counted exactly one
 * more request. context (may be NULL) is named in the failure message. */
void gwt_assert_serves_counted(int port, int backend_port, const char *target, const char *context);

/* Polls the JSON counter field of port's path until it equals want, for at
 * most timeout_ms; else fails the test showing the whole reply. what (may be
 * NULL) is named in the failure message. */
void gwt_assert_stat_becomes(int port, const char *path, const char *field, long long want,
                             int timeout_ms, const char *what);

#endif
