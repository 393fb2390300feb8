/*
 * Unit tests of the access log (src/log.c): every line is one JSON object
 * (RFC 8259) whatever bytes the request-target holds, lines are buffered
 * per thread and written only on flush or when the buffer fills, and a
 * line larger than the buffer still comes out whole.
 */
#include <fcntl.h>
#include <signal.h>
#include <time.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "gw/log.h"

static int saved_stdout = -1;
static char path[64];

/* stdout goes to a temporary file for the test. */
static int setup(void **state)
{
    (void)state;
    fflush(stdout);
    snprintf(path, sizeof(path), "/tmp/gw-test-log-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    saved_stdout = dup(STDOUT_FILENO);
    dup2(fd, STDOUT_FILENO);
    close(fd);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    fflush(stdout);
    dup2(saved_stdout, STDOUT_FILENO);
    close(saved_stdout);
    unlink(path);
    return 0;
}

/* Everything written to stdout so far (malloc'd, NUL-terminated). */
static char *written(size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    assert_non_null(s);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    fclose(f);
    if (len)
        *len = (size_t)n;
    return s;
}

static struct gw_access_entry entry(const char *path_bytes, size_t path_len)
{
    return (struct gw_access_entry){.client = "203.0.113.7",
                                    .method = {"GET", 3},
                                    .path = {path_bytes, path_len},
                                    .status = 200,
                                    .bytes_sent = 1234,
                                    .duration_ms = 1.5,
                                    .upstream_ms = -1,
                                    .limited = false};
}

static void test_escaping_and_fields(void **state)
{
    (void)state;
    static const struct {
        const char *bytes, *want;
    } rows[] = {
        {"/plain?a=1", "/plain?a=1"},
        {"/q\"uo\\te", "/q\"uo\\te"},
        {"/ctl\x01\x1f\t", "/ctl\x01\x1f\t"},
        {"/utf8/\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80",
         "/utf8/\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"},
        {"/bad\xff", "<non-utf8>"},
        {"/overlong\xc0\xaf", "<non-utf8>"},
        {"/surrogate\xed\xa0\x80", "<non-utf8>"},
        {"/cut\xe2\x82", "<non-utf8>"},
        {"", ""},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct gw_access_entry e = entry(rows[i].bytes, strlen(rows[i].bytes));
        e.upstream_ms = i % 2 ? -1 : 0.25;
        e.limited = i == 2;
        gw_log_access(&e);
    }
    assert_true(gw_log_access_drain(5000));
    char *out = written(NULL);
    char *line = out;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = '\0';
        json_error_t err;
        json_t *j = json_loads(line, 0, &err);
        if (!j)
            fail_msg("line %zu is not JSON (%s): %s", i, err.text, line);
        assert_string_equal(json_string_value(json_object_get(j, "path")), rows[i].want);
        assert_string_equal(json_string_value(json_object_get(j, "client")), "203.0.113.7");
        assert_string_equal(json_string_value(json_object_get(j, "method")), "GET");
        assert_int_equal(json_integer_value(json_object_get(j, "status")), 200);
        assert_int_equal(json_integer_value(json_object_get(j, "bytes_sent")), 1234);
        assert_true(json_is_real(json_object_get(j, "duration_ms")));
        assert_true(json_real_value(json_object_get(j, "duration_ms")) == 1.5);
        if (i % 2)
            assert_true(json_is_null(json_object_get(j, "upstream_ms")));
        else
            assert_true(json_real_value(json_object_get(j, "upstream_ms")) == 0.25);
        assert_true(json_is_boolean(json_object_get(j, "limited")));
        assert_int_equal(json_is_true(json_object_get(j, "limited")), i == 2);
        const char *ts = json_string_value(json_object_get(j, "ts"));
        assert_non_null(ts);
        assert_int_equal(strlen(ts), 24); /* 2026-12-06T04:02:08.123Z */
        assert_int_equal(ts[23], 'Z');
        json_decref(j);
        line = nl + 1;
    }
    assert_string_equal(line, "");
    free(out);
}

/* Lines wait in the thread's buffer until a flush or until 48 KiB are
 * buffered: no write per request. */
static void test_buffered_until_flush(void **state)
{
    (void)state;
    struct gw_access_entry e = entry("/buffered", 9);
    gw_log_access(&e);
    gw_log_access(&e);
    size_t len;
    free(written(&len));
    assert_int_equal(len, 0);
    /* Enough lines to pass the flush threshold go out by themselves (to the
     * writer thread: wait for it, at most 5 s). */
    for (int i = 0; i < 1000; i++)
        gw_log_access(&e);
    for (int i = 0; i < 500; i++) {
        free(written(&len));
        if (len >= 48 * 1024)
            break;
        usleep(10000);
    }
    assert_true(len >= 48 * 1024);
    assert_true(gw_log_access_drain(5000));
    char *out = written(&len);
    size_t lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += out[i] == '\n';
    assert_int_equal(lines, 1002);
    free(out);
}

/* A request-target larger than the buffer is written whole, in order after
 * what was buffered before it. */
static void test_huge_line(void **state)
{
    (void)state;
    struct gw_access_entry small = entry("/before", 7);
    gw_log_access(&small);
    size_t n = 200 * 1024;
    char *big = malloc(n);
    assert_non_null(big);
    memset(big, 'a', n);
    big[0] = '/';
    struct gw_access_entry e = entry(big, n);
    gw_log_access(&e);
    assert_true(gw_log_access_drain(5000));
    char *out = written(NULL);
    char *nl = strchr(out, '\n');
    assert_non_null(nl);
    assert_non_null(strstr(out, "\"/before\""));
    assert_true(strstr(out, "\"/before\"") < nl);
    json_error_t err;
    json_t *j = json_loads(nl + 1, JSON_DISABLE_EOF_CHECK, &err);
    assert_non_null(j);
    assert_int_equal(strlen(json_string_value(json_object_get(j, "path"))), n);
    json_decref(j);
    free(out);
    free(big);
}

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A stdout nobody reads (a full pipe) never stalls the threads that log:
 * past the queue's bound, lines are dropped and counted. */
static void test_stalled_stdout_never_blocks(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    int p[2];
    assert_int_equal(pipe(p), 0);
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    dup2(p[1], STDOUT_FILENO);
    close(p[1]);
    uint64_t before = gw_log_access_dropped();
    struct gw_access_entry e = entry("/stalled", 8);
    long long t0 = mono_ms();
    for (int i = 0; i < 100000; i++) /* about 20 MB: more than the pipe and the queue */
        gw_log_access(&e);
    gw_log_access_flush();
    long long took = mono_ms() - t0;
    uint64_t dropped = gw_log_access_dropped() - before;
    /* Unstall: the writer's blocked write fails (EPIPE), what is queued goes
     * to /dev/null. */
    int null = open("/dev/null", O_WRONLY);
    dup2(null, STDOUT_FILENO);
    close(null);
    close(p[0]);
    assert_true(gw_log_access_drain(10000));
    dup2(saved, STDOUT_FILENO);
    close(saved);
    if (took > 3000)
        fail_msg("logging blocked for %lld ms on a stalled stdout", took);
    if (dropped == 0)
        fail_msg("nothing was dropped although stdout took nothing");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_escaping_and_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_buffered_until_flush, setup, teardown),
        cmocka_unit_test_setup_teardown(test_huge_line, setup, teardown),
        cmocka_unit_test(test_stalled_stdout_never_blocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
