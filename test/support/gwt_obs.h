/*
 * Test support for the observability and container tests: reading the
 * Prometheus text format, running promtool, a real Prometheus server on
 * loopback with its HTTP API, a keep-alive admin client that counts its
 * requests, a block-style YAML subset reader (to JSON), and file helpers.
 */
#ifndef GWT_OBS_H
#define GWT_OBS_H

#include "gwtest.h"

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

/* ---- files ------------------------------------------------------------ */

/* Reads a whole file into a malloc'd NUL-terminated string (caller frees);
 * *len (may be NULL) gets its length. Returns NULL with errno set. */
char *gwt_obs_read_file(const char *path, size_t *len);

/* Writes len bytes to path (created or truncated, mode 0600). Returns 0 or
 * -errno. */
GW_MUSTCHECK int gwt_obs_write_file(const char *path, const char *data, size_t len);

/* Removes dir and everything below it (no symlinks followed). Returns 0 or
 * -errno of the first failure. */
GW_MUSTCHECK int gwt_obs_rm_rf(const char *dir);

/* ---- Prometheus text format 0.0.4 -------------------------------------- */

/* Finds the sample whose series (metric name plus label set, exactly as
 * written, e.g. "gateway_requests_total{result=\"proxied\"}") is series and
 * stores its value. Returns 0, -ENOENT when absent, -EPROTO when the value
 * does not parse. */
GW_MUSTCHECK int gwt_prom_sample(const char *text, const char *series, double *value);

/* The series identifiers of every sample line (comments skipped), in
 * order, as a malloc'd array of malloc'd strings (free with gwt_strv_free).
 * Returns the count or -errno. */
GW_MUSTCHECK int gwt_prom_series(const char *text, char ***out);

/* Runs `promtool check metrics` with text on its stdin. Returns promtool's
 * exit code (0 = passes), -errno when it could not run. *output (may be
 * NULL) gets its stdout+stderr, malloc'd. */
int gwt_promtool_check_metrics(const char *text, size_t len, char **output);

/* ---- a real Prometheus ------------------------------------------------- */

struct gwt_prometheus {
    struct gwt_proc proc; /* /usr/bin/prometheus */
    int port;             /* its web/API port on 127.0.0.1 */
    char dir[256];        /* temporary directory: config and TSDB */
};

/* Starts Debian's prometheus on 127.0.0.1 with a generated configuration:
 * scrape_interval 1s, one job named job scraping 127.0.0.1:target_port at
 * metrics_path; storage in a new temporary directory. Waits (at most
 * timeout_ms) until it logs that it is ready. Returns 0, -ENOENT when
 * /usr/bin/prometheus is missing, or another -errno (p is then cleaned up). */
GW_MUSTCHECK int gwt_prometheus_start(struct gwt_prometheus *p, const char *job, int target_port,
                                      const char *metrics_path, int timeout_ms);

/* Runs an instant query (/api/v1/query?query=<promql, URL-encoded>).
 * Returns the "data.result" array (new reference, caller json_decref's) of
 * a "success" reply; NULL on any error, with the reason in err (may be
 * NULL, cap bytes). */
json_t *gwt_prometheus_query(struct gwt_prometheus *p, const char *promql, char *err, size_t cap);

/* Stops it with SIGTERM (bounded wait), removes the temporary directory.
 * Returns the exit status as gwt_stop (0 = clean exit). Safe on a zeroed
 * or stopped struct (returns -ECHILD). */
int gwt_prometheus_stop(struct gwt_prometheus *p);

/* Percent-encodes s for a URL query value (RFC 3986 unreserved kept).
 * Returns 0, or -ENOSPC when out (cap bytes) is too small. */
GW_MUSTCHECK int gwt_url_encode(const char *s, char *out, size_t cap);

/* ---- admin client -------------------------------------------------------- */

/* One keep-alive connection to the gateway for its own endpoints; counts
 * every request sent, so a test can predict requests_total exactly. */
struct gwt_admin {
    int port;
    int fd;      /* -1 when not connected */
    long long n; /* requests sent so far */
};

void gwt_admin_init(struct gwt_admin *a, int port);

/* GET target on the kept connection (connecting first when needed).
 * Returns as gwt_read_response; the caller frees r. */
GW_MUSTCHECK int gwt_admin_get(struct gwt_admin *a, const char *target, struct gwt_response *r);

/* GET target and parse the JSON body (caller json_decref's), or NULL. */
json_t *gwt_admin_json(struct gwt_admin *a, const char *target);

void gwt_admin_close(struct gwt_admin *a);

/* ---- YAML ---------------------------------------------------------------- */

/* Loads the block-style YAML subset used by the files in deploy/ into JSON:
 * mappings, sequences ("- " items, also "- key: v" items), plain, 'single'
 * and "double" quoted scalars, comments, "---" document separators, empty
 * flow collections [] and {}. Plain scalars that are integers become JSON
 * integers, true/false booleans, null/~ null; quoted ones stay strings.
 * Anything else (tabs, anchors, block scalars, non-empty flow collections,
 * duplicate keys, bad indentation) is an error, reported as "line N: why"
 * in err. Returns a JSON array of the documents (caller json_decref's), or
 * NULL. */
json_t *gwt_yaml_load(const char *text, char *err, size_t cap);

#endif
