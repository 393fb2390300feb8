/*
 * Rules and unblocks shared by every instance on one Redis (SPEC.md §11).
 * PUT /rules stores the normalised rules at "<prefix>:rules", a hash
 * {serial, version, rules} and the one key without a TTL: one Lua script
 * checks the optional expected version (If-Match), adds 1 to serial and
 * writes version and rules, atomically, so racing PUTs are ordered by
 * serial and the last one is what every instance ends with. DELETE
 * /ratelimit appends {origin, limit, key} to the stream "<prefix>:forget",
 * whose TTL (GW_RULES_SYNC_FORGET_TTL_MS) each append refreshes.
 *
 * One thread per instance, with a Redis connection of its own, polls every
 * GW_RULES_SYNC_POLL_MS in one pipelined round trip: HGET serial (the cheap
 * version check; the rules are read only when it moved) and XREAD of the
 * forget stream since the last entry seen. A serial that differs from the
 * last one seen brings the stored rules in: parsed and validated like a
 * file, published into the holder with source redis unless they already
 * are the version in force. Each forget of another instance is applied
 * with gw_ratelimit_forget_cached. Nothing of this runs per request.
 *
 * Redis Cluster (SPEC.md §12): every command and script touches one key,
 * so the two keys keep their names (no hash tag) and may live on different
 * masters; the client sends each to its slot's master, follows MOVED and
 * ASK, and the poll's two commands still cost one round trip.
 *
 * Locking: one mutex serialises every use of the connection and the
 * "last serial seen" (the poller's round trip, a PUT's store-and-publish, a
 * forget's append), so an instance never publishes an older serial after
 * a newer one. It is held for at most one Redis round trip (bounded by the
 * connection's timeout), never while connecting (the poll thread alone
 * reconnects, without it), and taken by no worker except for the admin
 * endpoints that need it.
 */
#ifndef GW_RULES_SYNC_H
#define GW_RULES_SYNC_H

#include "gw/common.h"
#include "gw/config.h"
#include "gw/ratelimit.h"
#include "gw/rules_holder.h"

#define GW_RULES_SYNC_POLL_MS 500 /* version and forget poll interval */
#define GW_RULES_SYNC_MIN_TIMEOUT_MS                                                               \
    1000                                  /* the connection's timeout: REDIS_TIMEOUT_MS, at        \
                                             least this (a PUT carries up to 1 MiB) */
#define GW_RULES_SYNC_FORGET_TTL_MS 60000 /* TTL of <prefix>:forget, refreshed per append */
#define GW_RULES_SYNC_FORGET_MAXLEN 10000 /* entries kept in <prefix>:forget (about) */

/* gw_rules_sync_start flags. */
#define GW_RULES_SYNC_ADOPT                                                                        \
    1u /* no rules file: load the stored rules at start and follow                                 \
          every change (without it, only forgets are followed) */

/* gw_rules_sync_store outcomes beyond 0 and -errno. */
#define GW_RULES_SYNC_MISMATCH 1 /* If-Match named another version: nothing stored */

struct gw_rules_sync;

/* Connects to cfg's REDIS_URL (must be set) with a connection of its own
 * and, with GW_RULES_SYNC_ADOPT, reads the stored rules once and publishes
 * them into h (source redis) before returning, so an instance that starts
 * without a rules file serves with the shared rules from its first request;
 * when Redis cannot be read it logs a warning and h keeps what it holds (the
 * RATE_LIMIT_* default); the poller adopts the shared rules as soon as Redis
 * answers. Then starts the poll thread. h, rl and cfg are borrowed and must
 * outlive gw_rules_sync_stop. *out is owned by the caller. Returns 0, or
 * -ENOMEM / the -errno of pthread_create (then *out is NULL). A Redis that
 * does not answer is not an error. Blocks for at most about two connection
 * timeouts. Call with SIGTERM, SIGINT and SIGHUP blocked. */
GW_MUSTCHECK int gw_rules_sync_start(struct gw_rules_sync **out, struct gw_rules_holder *h,
                                     struct gw_ratelimit *rl, const struct gw_config *cfg,
                                     unsigned flags);

/* PUT /rules with Redis: stores r's normalised form and version as the
 * shared rules (the script described above; if_match, when not NULL, must
 * equal the stored version, "" meaning none stored yet), then publishes r
 * into the holder with source api (under the mutex: no later serial can
 * have been adopted in between). Takes over the caller's reference to r whatever happens.
 * *serial (may be NULL) gets the serial stored. Returns 0;
 * GW_RULES_SYNC_MISMATCH when if_match differs (prev, cap bytes, gets the
 * stored version, may be NULL); -ENOTCONN when the connection is down (at
 * once: only the poll thread reconnects) or failed, -EPROTO when Redis
 * refused the script (nothing applied anywhere). Blocks for at most one
 * round trip (the connection's timeout). Thread-safe. */
GW_MUSTCHECK int gw_rules_sync_store(struct gw_rules_sync *s, struct gw_rules *r,
                                     const char *if_match, char *prev, size_t cap,
                                     uint64_t *serial);

/* DELETE /ratelimit: tells every other instance to drop client key
 * (key_len bytes) of limit from its over-limit cache (an entry of the
 * forget stream; this instance's own entries are skipped when polled).
 * Returns 0, -ENOTCONN (down, or failed) or -EPROTO, as gw_rules_sync_store.
 * Blocks for at most one round trip. Thread-safe. */
GW_MUSTCHECK int gw_rules_sync_forget(struct gw_rules_sync *s, const char *limit, const char *key,
                                      size_t key_len);

/* What the poller did so far (any pointer may be NULL): *polls, round trips
 * that succeeded; *adopted, stored rules published (or found in force
 * already); *forgets, other instances' forgets applied. For tests and logs.
 * Thread-safe (relaxed loads). */
void gw_rules_sync_counts(const struct gw_rules_sync *s, uint64_t *polls, uint64_t *adopted,
                          uint64_t *forgets);

/* Publishes r (the caller's reference is taken over) into h as the rules
 * in force and logs "rules changed: version NEW (N limits), was OLD
 * (source S)" at info, S being r->source's name ("rules replaced by the
 * same version V ..." when r has the version in force). For every change
 * that is not a file reload (PUT /rules with and without Redis, the
 * poller). Thread-safe. */
void gw_rules_sync_apply(struct gw_rules_holder *h, struct gw_rules *r);

/* Stops and joins the poll thread, closes the connection, frees s. NULL is
 * a no-op. No other thread may use s any more. */
void gw_rules_sync_stop(struct gw_rules_sync *s);

#endif
