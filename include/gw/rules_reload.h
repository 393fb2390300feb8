/*
 * Reloading RATE_LIMIT_RULES_FILE (SPEC.md §10 "Reload"): a thread of its
 * own that re-reads the file on request (SIGHUP) and by itself when it
 * changes, validates it whole off the workers' path and publishes a new
 * version into the rules holder (gw/rules_holder.h).
 *
 * Change detection: inotify on the file's directory (IN_CREATE,
 * IN_MOVED_TO, IN_CLOSE_WRITE, IN_MODIFY, IN_DELETE, IN_ATTRIB for the
 * file's name and for names starting with "..", the entries by which
 * Kubernetes swaps a mounted ConfigMap: the "..data" symlink is renamed over,
 * never the file), so the rename of a new "..data" is seen; events are
 * coalesced for GW_RULES_RELOAD_SETTLE_MS. Besides, every
 * GW_RULES_RELOAD_POLL_MS the file's (dev, inode, size, mtime, ctime),
 * symlinks followed, is compared with the last one seen: the only detector
 * when inotify is unavailable, and a safety net for symlinks that point out
 * of the watched directory. A detected change re-reads the file, and only a
 * content whose SHA-256 differs from the last one read is validated: events
 * that change nothing (touch, chmod, the ConfigMap's other keys) count as
 * nothing.
 *
 * A file still being written is not read: when its size or times move
 * while it is read, or its mtime is less than GW_RULES_RELOAD_SETTLE_MS
 * old, the read is retried GW_RULES_RELOAD_SETTLE_MS later, for at most
 * 2 s (then what is there is read), so an editor or `kubectl cp` writing
 * in place never gets a half-written (and perhaps valid) file published.
 * This also holds for a SIGHUP that arrives mid-write.
 *
 * Outcomes, for a re-read content (or any SIGHUP):
 *  - valid, new version: published; "rules reloaded: version V (N limits)"
 *    at info; counted as a success;
 *  - valid, same version (comments, key order): nothing published; logged at
 *    info; counted as a success;
 *  - invalid or unreadable (missing, a directory, over 4 MiB): the old rules
 *    stay; each of the loader's error lines (gw_rules_parse, "<path>: <place>:
 *    <reason>") logged at error as "rules reload failed: <line>", then a line
 *    naming the version kept; counted as a failure, the first line becomes
 *    the holder's last error. The same unreadable state or the same invalid
 *    content seen again by the watch counts once; a SIGHUP counts again.
 */
#ifndef GW_RULES_RELOAD_H
#define GW_RULES_RELOAD_H

#include "gw/common.h"
#include "gw/config.h"
#include "gw/rules_holder.h"

#define GW_RULES_RELOAD_POLL_MS       1000 /* stat interval */
#define GW_RULES_RELOAD_SETTLE_MS     100  /* quiet time after an event before reading */
#define GW_RULES_RELOAD_SETTLE_MAX_MS 500  /* longest a stream of events defers the read */

/* gw_rules_reloader_start flags. */
#define GW_RULES_RELOAD_NO_INOTIFY 1u /* tests: act as if inotify were unavailable */

struct gw_rules_reloader;

/* Starts watching cfg->rate_limit_rules_file (must be set) for holder h:
 * sets up the inotify watch (or logs at warn that only the stat poll runs,
 * naming why), reads the file once to remember its state (publishing it,
 * as a change, if it no longer holds the holder's version), logs at info
 * "watching RATE_LIMIT_RULES_FILE <path> (<how>)" and starts the thread;
 * every later read happens on that thread. cfg and h are borrowed and must
 * outlive gw_rules_reloader_stop (cfg supplies the defaults the file leaves
 * to the environment). flags: 0 or GW_RULES_RELOAD_NO_INOTIFY. *out is
 * owned by the caller. Returns 0, or -ENOMEM / the -errno of eventfd or
 * pthread_create (then *out is NULL and nothing runs). Call with SIGHUP,
 * SIGTERM and SIGINT blocked, so the thread never takes them. */
GW_MUSTCHECK int gw_rules_reloader_start(struct gw_rules_reloader **out, struct gw_rules_holder *h,
                                         const struct gw_config *cfg, unsigned flags);

/* Asks the thread to re-read and validate the file now, whatever changed
 * (SIGHUP); returns at once. Requests made while one is pending are merged
 * into one read. Thread-safe and async-signal-safe (an atomic store and a
 * write(2) to an eventfd). */
void gw_rules_reloader_request(struct gw_rules_reloader *rl);

/* What the thread did so far (either pointer may be NULL): *checks, the
 * times it examined the file after an event, a changed stat or a request,
 * whether or not the content had changed; *attempts, the reloads among
 * them that ended in one of the outcomes above (counted or not). For tests:
 * wait until one moves. Thread-safe (relaxed loads). */
void gw_rules_reloader_counts(const struct gw_rules_reloader *rl, uint64_t *checks,
                              uint64_t *attempts);

/* Stops and joins the thread (a read in progress finishes first; at most
 * one file read and parse) and frees everything. NULL is a no-op. Not
 * thread-safe against other calls on rl. */
void gw_rules_reloader_stop(struct gw_rules_reloader *rl);

#endif
