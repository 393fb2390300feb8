/*
 * Live reload of RATE_LIMIT_RULES_FILE against the real gateway (SPEC.md §10
 * "Reload" and "Observability"), watched from outside only: /stats
 * rules_version and rules_source, /metrics gateway_rules_info and
 * gateway_rules_reloads_total (promtool-checked), and the log. A file
 * changed in place, a Kubernetes ConfigMap-style "..data" symlink swap,
 * SIGHUP, an invalid file, a deleted then restored file, and no file at all.
 * The time from a write to /stats showing the new version is measured and
 * printed.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "gwt_obs.h"
#include "gwt_suite.h"

#define APPLY_MS  2000 /* SPEC: a change applies within 2 s */
#define SETTLE_MS 5    /* between two /stats polls */

/* A rules file whose one limit allows n requests a minute: n tells
 * versions apart. */
static const char *rules_text(long n)
{
    static char text[256];
    snprintf(text, sizeof(text),
             "version: 1\n"
             "limits:\n"
             "  - name: api\n"
             "    match: { path_prefix: /api/ }\n"
             "    rates: [{ requests: %ld, window: 1m }]\n",
             n);
    return text;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

/* /stats rules_version and rules_source (either may be NULL). */
static void stats_rules(int port, char version[32], char source[32])
{
    struct gwt_response r = {0};
    assert_int_equal(gwt_get(port, "/stats", &r), 0);
    assert_int_equal(r.status, 200);
    json_t *j = gwt_json(&r);
    assert_non_null(j);
    const char *v = json_string_value(json_object_get(j, "rules_version"));
    const char *s = json_string_value(json_object_get(j, "rules_source"));
    if (v == NULL || s == NULL)
        fail_msg("/stats without rules_version or rules_source: %s", r.body);
    assert_int_equal(strlen(v), 12);
    if (version)
        snprintf(version, 32, "%s", v);
    if (source)
        snprintf(source, 32, "%s", s);
    json_decref(j);
    gwt_response_free(&r);
}

/* Polls /stats until rules_version differs from old; returns the ms it
 * took (from the call) or fails the test after APPLY_MS + 1 s. */
static long wait_version_change(int port, const char *old, char now[32])
{
    long long t0 = gwt_now_ms();
    for (;;) {
        stats_rules(port, now, NULL);
        long long ms = gwt_now_ms() - t0;
        if (strcmp(now, old) != 0)
            return (long)ms;
        if (ms > APPLY_MS + 1000)
            fail_msg("rules_version still %s after %lld ms", old, ms);
        struct timespec ts = {0, SETTLE_MS * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* /metrics: promtool-clean; the reload counters and the info series. */
struct rules_metrics {
    double success, failure;
    char info[160]; /* the gateway_rules_info series, e.g. gateway_rules_info{version="…",…} */
};

static void metrics(int port, struct rules_metrics *m)
{
    struct gwt_response r = {0};
    assert_int_equal(gwt_get(port, "/metrics", &r), 0);
    assert_int_equal(r.status, 200);
    char *out = NULL;
    int rc = gwt_promtool_check_metrics(r.body, r.body_len, &out);
    if (rc != 0)
        fail_msg("promtool check metrics exited %d:\n%s", rc, out ? out : "");
    free(out);
    assert_int_equal(
        gwt_prom_sample(r.body, "gateway_rules_reloads_total{result=\"success\"}", &m->success), 0);
    assert_int_equal(
        gwt_prom_sample(r.body, "gateway_rules_reloads_total{result=\"failure\"}", &m->failure), 0);
    const char *info = strstr(r.body, "\ngateway_rules_info{");
    assert_non_null(info);
    size_t n = strcspn(info + 1, " ");
    assert_true(n < sizeof(m->info));
    memcpy(m->info, info + 1, n);
    m->info[n] = '\0';
    double one = 0;
    assert_int_equal(gwt_prom_sample(r.body, m->info, &one), 0);
    assert_true(one == 1.0);
    gwt_response_free(&r);
}

static void expect_info(const struct rules_metrics *m, const char *version, const char *source)
{
    char want[160];
    snprintf(want, sizeof(want), "gateway_rules_info{version=\"%s\",source=\"%s\"}", version,
             source);
    assert_string_equal(m->info, want);
}

/* A directory of its own for each test, removed at the end. */
static void make_dir(char dir[64])
{
    snprintf(dir, 64, "/tmp/gw-reload-it-XXXXXX");
    assert_non_null(mkdtemp(dir));
}

static void remove_dir(const char *dir)
{
    assert_int_equal(gwt_obs_rm_rf(dir), 0);
}

/* Starts gwt_fx.gw2 on path and waits for its watch line. */
static void start_on(const char *path)
{
    char var[300];
    snprintf(var, sizeof(var), "RATE_LIMIT_RULES_FILE=%s", path);
    const char *env[] = {var, "LOG_LEVEL=info", NULL};
    gwt_suite_start_gw2(env);
    assert_int_equal(gwt_wait_log(&gwt_fx.gw2, "watching RATE_LIMIT_RULES_FILE", 5000, NULL, 0), 0);
}

static void sort_longs(long *v, int n)
{
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
            long t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
}

/* Changed in place (truncate and write) and replaced by rename: each new
 * version shows in /stats within 2 s; the latency is printed. */
static void test_file_changed(void **state)
{
    (void)state;
    char dir[64], path[128];
    make_dir(dir);
    snprintf(path, sizeof(path), "%s/rules.yaml", dir);
    write_file(path, rules_text(1));
    start_on(path);
    int port = gwt_fx.gport2;
    char v[32], src[32], now[32];
    stats_rules(port, v, src);
    assert_string_equal(src, "file");
    struct rules_metrics m;
    metrics(port, &m);
    expect_info(&m, v, "file");
    assert_true(m.success == 0 && m.failure == 0);

    enum { ROUNDS = 6 };
    long ms[ROUNDS];
    for (int i = 0; i < ROUNDS; i++) {
        if (i % 2 == 0) {
            write_file(path, rules_text(100 + i)); /* in place */
        } else {
            char tmp[160];
            snprintf(tmp, sizeof(tmp), "%s/.rules.yaml.tmp", dir);
            write_file(tmp, rules_text(100 + i));
            assert_int_equal(rename(tmp, path), 0); /* an editor's or a deployer's save */
        }
        ms[i] = wait_version_change(port, v, now);
        assert_true(ms[i] < APPLY_MS);
        char line[512];
        snprintf(line, sizeof(line), "rules reloaded: version %s (1 limits), was %s", now, v);
        assert_int_equal(gwt_wait_log(&gwt_fx.gw2, line, 2000, NULL, 0), 0);
        snprintf(v, sizeof(v), "%s", now);
    }
    metrics(port, &m);
    expect_info(&m, v, "file");
    assert_true(m.success == ROUNDS && m.failure == 0);
    sort_longs(ms, ROUNDS);
    print_message("  reload latency, file write -> /stats (%d rounds): min %ld ms, median %ld ms, "
                  "max %ld ms\n",
                  ROUNDS, ms[0], ms[ROUNDS / 2], ms[ROUNDS - 1]);
    remove_dir(dir);
}

/* Kubernetes' ConfigMap volume: dir/..2026_01/rules.yaml, dir/..data ->
 * ..2026_01, dir/rules.yaml -> ..data/rules.yaml. An update writes a new
 * timestamped directory, renames a new ..data symlink over the old one and
 * removes the old directory; rules.yaml itself never changes. */
static void test_configmap_swap(void **state)
{
    (void)state;
    char dir[64], p[256], link[160], tmp[160], path[160];
    make_dir(dir);
    snprintf(p, sizeof(p), "%s/..2026_01", dir);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(p, sizeof(p), "%s/..2026_01/rules.yaml", dir);
    write_file(p, rules_text(10));
    snprintf(link, sizeof(link), "%s/..data", dir);
    assert_int_equal(symlink("..2026_01", link), 0);
    snprintf(path, sizeof(path), "%s/rules.yaml", dir);
    assert_int_equal(symlink("..data/rules.yaml", path), 0);
    start_on(path);
    int port = gwt_fx.gport2;
    char v[32], now[32];
    stats_rules(port, v, NULL);

    for (int round = 2; round <= 3; round++) {
        char newdir[64], olddir[64];
        snprintf(newdir, sizeof(newdir), "..2026_0%d", round);
        snprintf(olddir, sizeof(olddir), "..2026_0%d", round - 1);
        snprintf(p, sizeof(p), "%s/%s", dir, newdir);
        assert_int_equal(mkdir(p, 0755), 0);
        snprintf(p, sizeof(p), "%s/%s/rules.yaml", dir, newdir);
        write_file(p, rules_text(10 * round));
        snprintf(tmp, sizeof(tmp), "%s/..data_tmp", dir);
        assert_int_equal(symlink(newdir, tmp), 0);
        assert_int_equal(rename(tmp, link), 0); /* the atomic swap */
        long ms = wait_version_change(port, v, now);
        assert_true(ms < APPLY_MS);
        print_message("  ConfigMap ..data swap -> /stats: %ld ms\n", ms);
        snprintf(p, sizeof(p), "%s/%s/rules.yaml", dir, olddir);
        assert_int_equal(unlink(p), 0);
        snprintf(p, sizeof(p), "%s/%s", dir, olddir);
        assert_int_equal(rmdir(p), 0);
        snprintf(v, sizeof(v), "%s", now);
    }
    struct rules_metrics m;
    metrics(port, &m);
    expect_info(&m, v, "file");
    assert_true(m.success == 2 && m.failure == 0);
    remove_dir(dir);
}

/* An invalid file: the old version stays, the loader's line is logged,
 * one failure is counted (the watch does not count the same content
 * twice); SIGHUP reads it again and counts again; fixed, it applies. */
static void test_invalid_then_sighup(void **state)
{
    (void)state;
    char dir[64], path[128];
    make_dir(dir);
    snprintf(path, sizeof(path), "%s/rules.yaml", dir);
    write_file(path, rules_text(1));
    start_on(path);
    int port = gwt_fx.gport2;
    char v[32], now[32];
    stats_rules(port, v, NULL);

    write_file(path,
               "version: 1\nlimits:\n  - name: api\n    rates: [{ requests: 5, window: 0s }]\n");
    char line[600], want[400];
    snprintf(want, sizeof(want), "rules reload failed: %s: limits[0].rates[0].window: \"0s\"",
             path);
    if (gwt_wait_log(&gwt_fx.gw2, want, APPLY_MS, line, sizeof(line)) != 0) {
        gwt_log_dump(&gwt_fx.gw2, 4000);
        fail_msg("no error line naming the problem");
    }
    assert_non_null(strstr(line, " error "));
    snprintf(want, sizeof(want), "keeping rules version %s", v);
    assert_int_equal(gwt_wait_log(&gwt_fx.gw2, want, 1000, NULL, 0), 0);
    stats_rules(port, now, NULL);
    assert_string_equal(now, v);
    struct rules_metrics m;
    metrics(port, &m);
    expect_info(&m, v, "file");
    assert_true(m.success == 0 && m.failure == 1);

    /* SIGHUP: read again, still invalid, counted again. */
    gwt_log_mark(&gwt_fx.gw2);
    assert_int_equal(kill(gwt_fx.gw2.pid, SIGHUP), 0);
    assert_int_equal(gwt_wait_log(&gwt_fx.gw2, "SIGHUP received: reloading", 2000, NULL, 0), 0);
    assert_int_equal(gwt_wait_log(&gwt_fx.gw2, "rules reload failed (SIGHUP)", 2000, NULL, 0), 0);
    metrics(port, &m);
    assert_true(m.success == 0 && m.failure == 2);

    /* Fixed: applied. */
    write_file(path, rules_text(2));
    assert_true(wait_version_change(port, v, now) < APPLY_MS);
    metrics(port, &m);
    expect_info(&m, now, "file");
    assert_true(m.success == 1 && m.failure == 2);

    /* SIGHUP with nothing changed: a successful reload of the same
     * version, nothing swapped. */
    gwt_log_mark(&gwt_fx.gw2);
    assert_int_equal(kill(gwt_fx.gw2.pid, SIGHUP), 0);
    snprintf(want, sizeof(want), "rules reloaded: version %s unchanged (1 limits; SIGHUP)", now);
    assert_int_equal(gwt_wait_log(&gwt_fx.gw2, want, 2000, NULL, 0), 0);
    metrics(port, &m);
    assert_true(m.success == 2 && m.failure == 2);
    stats_rules(port, v, NULL);
    assert_string_equal(v, now);
    /* Still serving. */
    gwt_assert_serves_user(port, 7);
    remove_dir(dir);
}

/* Deleted: the old rules stay, a failure naming the file; restored with
 * new content: applied. */
static void test_deleted_then_restored(void **state)
{
    (void)state;
    char dir[64], path[128];
    make_dir(dir);
    snprintf(path, sizeof(path), "%s/rules.yaml", dir);
    write_file(path, rules_text(1));
    start_on(path);
    int port = gwt_fx.gport2;
    char v[32], now[32];
    stats_rules(port, v, NULL);

    assert_int_equal(unlink(path), 0);
    char want[300];
    snprintf(want, sizeof(want), "rules reload failed: %s: No such file or directory", path);
    assert_int_equal(gwt_wait_log(&gwt_fx.gw2, want, APPLY_MS, NULL, 0), 0);
    struct rules_metrics m;
    metrics(port, &m);
    assert_true(m.success == 0 && m.failure == 1);
    stats_rules(port, now, NULL);
    assert_string_equal(now, v);
    gwt_assert_serves_user(port, 3);

    write_file(path, rules_text(4));
    assert_true(wait_version_change(port, v, now) < APPLY_MS);
    metrics(port, &m);
    expect_info(&m, now, "file");
    assert_true(m.success == 1 && m.failure == 1);
    remove_dir(dir);
}

/* No file: the RATE_LIMIT_* default limit is the rules in force (source
 * env, counters at 0), and SIGHUP says there is nothing to reload. */
static void test_no_file(void **state)
{
    (void)state;
    const char *env[] = {"LOG_LEVEL=info", NULL};
    gwt_suite_start_gw2(env);
    int port = gwt_fx.gport2;
    char v[32], src[32];
    stats_rules(port, v, src);
    assert_string_equal(src, "env");
    struct rules_metrics m;
    metrics(port, &m);
    expect_info(&m, v, "env");
    assert_true(m.success == 0 && m.failure == 0);
    assert_int_equal(kill(gwt_fx.gw2.pid, SIGHUP), 0);
    assert_int_equal(gwt_wait_log(&gwt_fx.gw2,
                                  "SIGHUP received: no RATE_LIMIT_RULES_FILE, nothing to reload",
                                  2000, NULL, 0),
                     0);
    gwt_assert_serves_user(port, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        GWT_TEST(test_file_changed),
        GWT_TEST(test_configmap_swap),
        GWT_TEST(test_invalid_then_sighup),
        GWT_TEST(test_deleted_then_restored),
        GWT_TEST(test_no_file),
    };
    return cmocka_run_group_tests(tests, gwt_suite_setup_backend, gwt_suite_teardown);
}
