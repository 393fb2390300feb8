/*
 * The gateway's top: resolves the upstream, listens, runs the workers and
 * the acceptor, drains on a signal. main's one entry point.
 */
#ifndef GW_SERVER_H
#define GW_SERVER_H

#include "gw/config.h"
#include "gw/rules.h"

/* Runs the gateway until SIGTERM/SIGINT: resolves the upstream, listens,
 * starts the workers and the acceptor, logs "gateway listening on
 * <host>:<port>" on stderr, then drains within SHUTDOWN_TIMEOUT_MS on the
 * signal. rules: the rules loaded from RATE_LIMIT_RULES_FILE (the server
 * takes over the caller's reference), or NULL without a file (the default
 * limit of the RATE_LIMIT_* variables, gw_rules_from_config). With a file,
 * a reloader thread re-reads it on SIGHUP and when it changes
 * (gw/rules_reload.h); without one, SIGHUP is logged and ignored.
 * SIGTERM, SIGINT and SIGHUP must already be blocked in the calling thread
 * (so every thread inherits the mask). Returns the process exit code: 0
 * after a drain, 1 when start-up failed (the reason is logged). */
GW_MUSTCHECK int gw_server_run(struct gw_config *cfg, struct gw_rules *rules);

#endif
