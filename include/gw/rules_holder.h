/*
 * The rules in force (SPEC.md §10 "Reload"): one process-wide holder of the
 * current struct gw_rules, replaced whole by a reload and read by every
 * worker. A worker keeps its own reference and asks for a new one only when
 * the holder's generation moved, so the per-request cost is one atomic load;
 * a request is decided by the one version its worker held when it started,
 * and an old version is freed with the last reference to it (gw/rules.h).
 * The holder also keeps the reload counters and the last reload error
 * reported by whoever reloads (src/rules_reload.c).
 *
 * Locking: one mutex guards the current pointer and the last error text;
 * it is held only to swap or take a reference, never while rules are parsed
 * or freed. The generation and the counters are atomics read without it.
 */
#ifndef GW_RULES_HOLDER_H
#define GW_RULES_HOLDER_H

#include "gw/common.h"
#include "gw/rules.h"

#define GW_RULES_HOLDER_ERROR_MAX 512 /* bytes kept of the last reload error, NUL included */

struct gw_rules_holder;

/* Makes a holder whose current rules are initial (must not be NULL): the
 * holder takes over the caller's reference. The generation starts at 1 and
 * both reload counters at 0. *out is owned by the caller
 * (gw_rules_holder_destroy). Returns 0, or -ENOMEM / the -errno of
 * pthread_mutex_init; on failure *out is NULL and the reference stays the
 * caller's. Not thread-safe (start-up). */
GW_MUSTCHECK int gw_rules_holder_create(struct gw_rules_holder **out, struct gw_rules *initial);

/* Drops the holder's reference to its current rules (freeing them unless a
 * reader still holds one) and frees the holder. NULL is a no-op. No other
 * thread may use h any more (call it after the workers and the reloader
 * have stopped). */
void gw_rules_holder_destroy(struct gw_rules_holder *h);

/* Makes r (must not be NULL) the current rules: the holder takes over the
 * caller's reference and, under its mutex, swaps the pointer and adds 1 to
 * the generation with release order, so a reader that sees the new
 * generation and then calls gw_rules_holder_get gets r or a later version,
 * never an older one; then, outside the mutex, it drops its reference to
 * the previous rules (which live on while a worker holds them). Counts
 * nothing (see gw_rules_holder_count_reload). Thread-safe. */
void gw_rules_holder_publish(struct gw_rules_holder *h, struct gw_rules *r);

/* The number of rules published so far, the initial ones included (1 after
 * create, +1 per publish). One atomic acquire load, lock-free: a worker
 * calls it once per request and calls gw_rules_holder_get only when the
 * value differs from the one it saw with its current reference.
 * Thread-safe. */
uint64_t gw_rules_holder_generation(const struct gw_rules_holder *h);

/* Returns a new reference to the current rules (never NULL); the caller
 * drops it with gw_rules_put. Takes the holder's mutex for the time of one
 * atomic increment. A reader should read the generation BEFORE calling this
 * (then what it got is at least that generation's rules). Thread-safe. */
struct gw_rules *gw_rules_holder_get(struct gw_rules_holder *h);

/* Counts one reload attempt (SPEC.md §10, gateway_rules_reloads_total):
 * success when ok, else failure, in which case error (may be NULL; one
 * line, cut to GW_RULES_HOLDER_ERROR_MAX - 1 bytes) becomes the last error.
 * A success leaves the last error as it was. Thread-safe. */
void gw_rules_holder_count_reload(struct gw_rules_holder *h, bool ok, const char *error);

/* Reloads counted so far: *success and *failure (either may be NULL).
 * Relaxed atomic loads, lock-free; the two values may be from slightly
 * different instants. Thread-safe. */
void gw_rules_holder_reloads(const struct gw_rules_holder *h, uint64_t *success, uint64_t *failure);

/* Copies the last reload error (the text given to the last failing
 * gw_rules_holder_count_reload; "" when none failed yet) into buf of cap
 * bytes (cap > 0; cut and NUL-terminated). Returns its full length.
 * Thread-safe (takes the mutex). */
size_t gw_rules_holder_last_error(struct gw_rules_holder *h, char *buf, size_t cap);

/* The /stats and gateway_rules_info spelling of a rules source: "env",
 * "file", "api", "redis" (SPEC.md §10 rules_source, §11). Never NULL ("unknown" for a value
 * this build does not know). Thread-safe. */
const char *gw_rules_source_name(enum gw_rules_source source);

#endif
