/*
 * The rules file from the command line (SPEC.md §10): `gateway
 * --check-rules PATH` prints the normalised form and exits 0, or prints one
 * line per error and exits 2; `--check-config` and start-up validate
 * RATE_LIMIT_RULES_FILE the same way.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "gwtest.h"

#define EXAMPLE GW_SOURCE_DIR "/deploy/rules.example.yaml"

/* Writes text to a new temporary file ending in suffix; returns its path
 * (caller unlinks and frees). */
static char *temp_file(const char *suffix, const char *text)
{
    char *path = malloc(64);
    assert_non_null(path);
    snprintf(path, 64, "/tmp/gw-rules-XXXXXX%s", suffix);
    int fd = mkstemps(path, (int)strlen(suffix));
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
    return path;
}

static int check_rules(const char *path, const char *const env[], char **out, char **err)
{
    const char *args[] = {"--check-rules", path, NULL};
    return gwt_gateway_run(args, env, 5000, out, err);
}

/* The SPEC example: exit 0, the normalised JSON on stdout, nothing on
 * stderr; the printed form checks again to itself. */
static void test_check_rules_ok(void **state)
{
    (void)state;
    char *out = NULL, *err = NULL;
    assert_int_equal(check_rules(EXAMPLE, NULL, &out, &err), 0);
    assert_true(err == NULL || err[0] == '\0');
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    if (j == NULL)
        fail_msg("stdout is not JSON: %s\n%s", je.text, out);
    assert_int_equal(json_integer_value(json_object_get(j, "version")), 1);
    json_t *limits = json_object_get(j, "limits");
    assert_int_equal(json_array_size(limits), 5);
    json_t *login_1h = json_array_get(json_object_get(json_array_get(limits, 1), "rates"), 1);
    assert_string_equal(json_string_value(json_object_get(login_1h, "name")), "login-1h");
    assert_string_equal(json_string_value(json_object_get(login_1h, "window")), "1h");
    json_decref(j);

    char *again_path = temp_file(".json", out);
    char *out2 = NULL, *err2 = NULL;
    assert_int_equal(check_rules(again_path, NULL, &out2, &err2), 0);
    assert_string_equal(out2, out);
    unlink(again_path);
    free(again_path);
    free(out2);
    free(err2);
    free(out);
    free(err);
}

static const char bad_rules[] = "version: 1\n"
                                "limits:\n"
                                "  - name: a\n"
                                "    match: { methods: [post], size: 3 }\n"
                                "    rates: [{ requests: 1, window: 1s }]\n"
                                "  - name: a\n"
                                "    rates: [{ requests: 1, window: 1s }]\n"
                                "  - name: c\n"
                                "    rates: [{ requests: 1, window: 0s }]\n";

static const char *const bad_lines[] = {
    "limits[0].match.size: unknown field",
    ("limits[0].match.methods[0]: \"post\": not an HTTP method (methods are upper case, e.g. "
     "\"POST\")"),
    "limits[2].rates[0].window: \"0s\": must be at least 1 s",
    "limits[1].name: \"a\": duplicate limit name (first at limits[0].name)",
};

/* Errors: exit 2, nothing on stdout, exactly one line per error. */
static void test_check_rules_errors(void **state)
{
    (void)state;
    char *path = temp_file(".yaml", bad_rules);
    char *out = NULL, *err = NULL;
    assert_int_equal(check_rules(path, NULL, &out, &err), 2);
    assert_true(out == NULL || out[0] == '\0');
    char want[1024] = "";
    for (size_t i = 0; i < sizeof(bad_lines) / sizeof(bad_lines[0]); i++) {
        strcat(want, bad_lines[i]);
        strcat(want, "\n");
    }
    assert_string_equal(err, want);
    free(out);
    free(err);

    /* --check-config and a plain start name the variable on every line */
    char var[128];
    snprintf(var, sizeof(var), "RATE_LIMIT_RULES_FILE=%s", path);
    const char *env[] = {var, NULL};
    const char *args[] = {"--check-config", NULL};
    for (int start = 0; start < 2; start++) {
        int rc = gwt_gateway_run(start ? NULL : args, env, 5000, &out, &err);
        assert_int_equal(rc, 2);
        assert_true(out == NULL || strstr(out, "{") == NULL);
        for (size_t i = 0; i < sizeof(bad_lines) / sizeof(bad_lines[0]); i++) {
            char line[512];
            snprintf(line, sizeof(line), "config error: %s: %s\n", var, bad_lines[i]);
            if (strstr(err, line) == NULL)
                fail_msg("missing line: %s\nstderr:\n%s", line, err);
        }
        assert_non_null(strstr(err, "gateway: 4 errors in RATE_LIMIT_RULES_FILE; not starting"));
        free(out);
        free(err);
    }
    unlink(path);
    free(path);
}

/* Unreadable files, a missing PATH, a JSON syntax error. */
static void test_check_rules_unreadable(void **state)
{
    (void)state;
    char *out = NULL, *err = NULL;
    assert_int_equal(check_rules("/nonexistent/rules.yaml", NULL, &out, &err), 2);
    assert_string_equal(err, "/nonexistent/rules.yaml: No such file or directory\n");
    free(out);
    free(err);

    const char *args[] = {"--check-rules", NULL};
    assert_int_equal(gwt_gateway_run(args, NULL, 5000, &out, &err), 2);
    assert_non_null(strstr(err, "--check-rules needs a PATH"));
    free(out);
    free(err);

    char *path = temp_file(".json", "{\"version\": 1, \"limits\": [}");
    assert_int_equal(check_rules(path, NULL, &out, &err), 2);
    assert_non_null(strstr(err, "line 1, column"));
    unlink(path);
    free(path);
    free(out);
    free(err);
}

/* --check-config accepts a good file and shows the variable; the file's
 * defaults come from RATE_LIMIT_KEY. */
static void test_check_config_with_rules(void **state)
{
    (void)state;
    const char *env[] = {"RATE_LIMIT_RULES_FILE=" EXAMPLE, NULL};
    const char *args[] = {"--check-config", NULL};
    char *out = NULL, *err = NULL;
    assert_int_equal(gwt_gateway_run(args, env, 5000, &out, &err), 0);
    json_t *j = json_loads(out, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "RATE_LIMIT_RULES_FILE")), EXAMPLE);
    json_decref(j);
    free(out);
    free(err);

    char *path = temp_file(".json", "{\"version\":1,\"limits\":[{\"name\":\"a\",\"rates\":"
                                    "[{\"requests\":3,\"window\":\"1m\"}]}]}");
    const char *kenv[] = {"RATE_LIMIT_KEY=header:X-Tenant", NULL};
    assert_int_equal(check_rules(path, kenv, &out, &err), 0);
    assert_non_null(strstr(out, "\"header:x-tenant\""));
    unlink(path);
    free(path);
    free(out);
    free(err);
}

/* A gateway started with a valid file runs, names the rules version it
 * enforces, and stops cleanly. No request is sent. */
static void test_start_with_rules(void **state)
{
    (void)state;
    struct gwt_proc gw = {0};
    int port = 0;
    const char *env[] = {"RATE_LIMIT_RULES_FILE=" EXAMPLE, NULL};
    assert_int_equal(gwt_gateway_start(&gw, &port, env), 0);
    char line[512];
    if (gwt_wait_log(&gw, "rules version", 5000, line, sizeof(line)) != 0) {
        gwt_log_dump(&gw, 4000);
        fail_msg("no rules line in the gateway's log");
    }
    assert_non_null(strstr(line, "5 limits"));
    assert_int_equal(gwt_stop(&gw, SIGTERM, 10000), 0);
    gwt_proc_cleanup(&gw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_rules_ok),
        cmocka_unit_test(test_check_rules_errors),
        cmocka_unit_test(test_check_rules_unreadable),
        cmocka_unit_test(test_check_config_with_rules),
        cmocka_unit_test(test_start_with_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
