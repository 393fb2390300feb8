/*
 * Scaffolding shared by the integration test files: per-test and per-group
 * process teardown, reading a response or failing, "the gateway still
 * serves" checks, backend_app request counts and waiting on a /stats field.
 * All assertions are cmocka assertions (a failure ends the current test).
 */
#ifndef GWT_SUITE_H
#define GWT_SUITE_H

#include <stdbool.h>

#include "gwt_fault.h"
#include "gwtest.h"

/* ---- the shared fixture -------------------------------------------------- */

/* What gwt_suite_setup starts for a group (backend_app always). */
enum {
    GWT_FX_GATEWAY = 1u << 0,      /* a gateway with gwt_gateway_for defaults (gw) */
    GWT_FX_FAKE = 1u << 1,         /* the scripted fake upstream (fake) */
    GWT_FX_FAKE_GATEWAY = 1u << 2, /* + a one-worker gateway in front of it (gwf) */
    GWT_FX_REDIS = 1u << 3,        /* redis-server, emptied before each test */
};

/* The processes of one test binary's group fixture. Fields a group did not
 * ask for stay zero. gw2 is the usual slot for a per-test gateway. */
struct gwt_fixture {
    struct gwt_proc backend; /* backend_app, for the whole group */
    int bport;
    struct gwt_proc gw; /* GWT_FX_GATEWAY: shared gateway; else a per-test one */
    int gport;
    struct gwt_proc gw2; /* per-test gateway with its own settings */
    int gport2;
    struct gwt_fault *fake; /* GWT_FX_FAKE: scripted upstream */
    struct gwt_proc gwf;    /* GWT_FX_FAKE_GATEWAY: WORKER_THREADS=1, UPSTREAM_TIMEOUT_MS=3000 */
    int fport;
    struct gwt_proc redis; /* GWT_FX_REDIS */
    int rport;
    char redis_url[64]; /* "REDIS_URL=redis://127.0.0.1:<rport>" */
};

extern struct gwt_fixture gwt_fx;

/* Group setup: starts backend_app and what (GWT_FX_* flags) into gwt_fx.
 * Processes started here outlive the tests (gwt_suite_test_teardown leaves
 * them). Returns 0 or -1 (a cmocka group setup's value). */
int gwt_suite_setup(unsigned what);

/* cmocka group setup of the commonest fixture: backend_app only. */
int gwt_suite_setup_backend(void **state);

/* cmocka group teardown: stops every tracked process (exit 0 expected),
 * then backend_app, redis-server and the fake. Returns 0 or -1. */
int gwt_suite_teardown(void **state);

/* cmocka per-test setup: empties redis (when the group has one) and zeroes
 * backend_app's counters. Returns 0 or -1. */
int gwt_suite_test_setup(void **state);

/* cmocka per-test teardown: stops the processes tracked since the group
 * setup (the test's gateways, see gwt_gateway_for), each expected to exit 0
 * after SIGTERM. Returns 0 or -1. */
int gwt_suite_test_teardown(void **state);

/* Start a gateway in front of gwt_fx.backend with gwt_gateway_for's test
 * defaults plus env, into gwt_fx.gw (gport) or gwt_fx.gw2 (gport2), or fail
 * the test. Tracked: gwt_suite_test_teardown stops it. */
void gwt_suite_start_gw(const char *const env[]);
void gwt_suite_start_gw2(const char *const env[]);

/* "<var>=<scheme>://127.0.0.1:<port>" for a loopback port nothing listens
 * on (gwt_free_port), e.g. gwt_dead_url("REDIS_URL", "redis"), in a static
 * buffer overwritten by the next call; fails the test when no port could
 * be had. */
const char *gwt_dead_url(const char *var, const char *scheme);

/* GET /users/<id> on port (own connection) is backend_app's 200 reply for
 * that id, else the test fails. */
void gwt_assert_serves_user(int port, int id);

/* gwt_fault_script on gwt_fx.fake, or fail the test. */
void gwt_suite_script(const struct gwt_fault_step *steps, size_t n);

/* A test entry with the fixture's per-test setup and teardown. */
#define GWT_TEST(f)                                                                                \
    cmocka_unit_test_setup_teardown(f, gwt_suite_test_setup, gwt_suite_test_teardown)

/* ---- helpers ------------------------------------------------------------- */

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

/* Prints what and the first 400 bytes of b[0..n) to stderr, with \r, \n,
 * \t and other control bytes escaped (for failure messages). */
void gwt_print_escaped(const char *what, const char *b, size_t n);

/* How gwt_expect_refused judges an exchange (flags, or 0). */
enum {
    GWT_REFUSED_COUNTED = 1u << 0,   /* none of it reached gwt_fx.backend, and a
                                        normal GET /users/5 is served and counted after it */
    GWT_REFUSED_MAY_CLOSE = 1u << 1, /* the gateway may close before reading every
                                        byte: a failed send is not an error */
};

/* Sends len bytes on a fresh connection to port and requires the gateway's
 * own problem+json response with status, then the connection closed with
 * nothing after it; what names the case in failure messages (the bytes are
 * printed, escaped, when the status is wrong). */
void gwt_expect_refused(int port, const char *what, const void *bytes, size_t len, int status,
                        unsigned flags);

#endif
