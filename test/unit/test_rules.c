/*
 * Unit tests of the rules file (src/rules.c, src/rules_yaml.c) and its
 * compiled matcher (src/rules_match.c), SPEC.md §10: JSON and YAML load to
 * the same normal form and version, every error is named by its place,
 * defaults are filled in, and the matcher picks the limits a request meets.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "gw/path.h"
#include "gw/rules.h"

/* Table rows below leave the fields they do not need out. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#define EXAMPLE GW_SOURCE_DIR "/deploy/rules.example.yaml"

/* Parses text; returns the rules (NULL on errors) and the error lines in
 * *errs (caller frees). */
static struct gw_rules *parse(const char *text, enum gw_rules_format fmt,
                              const struct gw_config *cfg, int *rc, char **errs)
{
    size_t len = 0;
    FILE *err = open_memstream(errs, &len);
    assert_non_null(err);
    struct gw_rules *r = NULL;
    *rc = gw_rules_parse(text, strlen(text), fmt, cfg, &r, err, NULL);
    fclose(err);
    assert_true((*rc == 0) == (r != NULL));
    return r;
}

static struct gw_rules *parse_ok(const char *text, enum gw_rules_format fmt)
{
    int rc;
    char *errs;
    struct gw_rules *r = parse(text, fmt, NULL, &rc, &errs);
    if (rc != 0)
        fail_msg("rules refused (%d):\n%s--\n%s", rc, errs, text);
    free(errs);
    return r;
}

/* The example of SPEC.md §10 as JSON, spelled differently (key order,
 * "1m" as 60, "header:x-api-key" in another case). */
static const char example_json[] =
    "{\"limits\":["
    "{\"action\":\"allow\",\"name\":\"monitoring\",\"match\":{\"client_cidrs\":[\"10.20.0.0/"
    "16\"]}},"
    "{\"name\":\"login\",\"match\":{\"path\":\"/login\",\"methods\":[\"POST\"]},\"key\":\"ip\","
    " \"rates\":[{\"window\":60,\"requests\":5},{\"requests\":20,\"window\":\"60m\"}]},"
    "{\"name\":\"api-free\",\"match\":{\"path_prefix\":\"/api/"
    "\",\"headers\":{\"x-plan\":\"free\"}},"
    " \"key\":\"HEADER:X-Api-Key\",\"rates\":[{\"requests\":10,\"window\":\"1000ms\","
    " \"algorithm\":\"gcra\",\"burst\":20,\"delay\":\"0.5s\"},"
    " {\"requests\":10000,\"window\":\"24h\",\"name\":\"api-daily\"}]},"
    "{\"name\":\"api-per-address\",\"match\":{\"path_prefix\":\"/api/\"},\"key\":\"ip\","
    " \"rates\":[{\"requests\":50,\"window\":1}]},"
    "{\"name\":\"api-new-tier\",\"match\":{\"path_prefix\":\"/api/\"},"
    " \"key\":[\"header:X-API-Key\",\"ip\"],\"mode\":\"shadow\","
    " \"rates\":[{\"requests\":100,\"window\":\"10s\",\"algorithm\":\"sliding_window\"}]}"
    "],\"version\":1}";

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *buf = calloc(1, 65536);
    assert_non_null(buf);
    size_t n = fread(buf, 1, 65535, f);
    fclose(f);
    assert_true(n > 0 && n < 65535);
    return buf;
}

static void test_json_and_yaml_same_tree(void **state)
{
    (void)state;
    char *yaml = read_file(EXAMPLE);
    struct gw_rules *y = parse_ok(yaml, GW_RULES_YAML);
    struct gw_rules *j = parse_ok(example_json, GW_RULES_JSON);
    assert_string_equal(y->normalised, j->normalised);
    assert_string_equal(y->version, j->version);
    assert_int_equal(strlen(y->version), GW_RULES_VERSION_LEN);
    assert_int_equal(y->source, GW_RULES_SOURCE_FILE);

    /* the file form loads through gw_rules_load_file (YAML by its name) */
    struct gw_rules *f = NULL;
    assert_int_equal(gw_rules_load_file(EXAMPLE, NULL, &f, stderr, NULL), 0);
    assert_string_equal(f->version, y->version);
    gw_rules_put(f);

    /* the model of the example, defaults filled in */
    assert_int_equal(y->limit_count, 5);
    const struct gw_rules_limit *mon = &y->limits[0], *login = &y->limits[1];
    const struct gw_rules_limit *free_ = &y->limits[2], *tier = &y->limits[4];
    assert_int_equal(y->limits[3].keys[0].kind, GW_RULES_KEY_IP); /* beside the header key */
    assert_true(mon->allow);
    assert_int_equal(mon->cidr_count, 1);
    assert_int_equal(mon->rate_count, 0);
    assert_string_equal(login->rates[0].name, "login-1m");
    assert_string_equal(login->rates[1].name, "login-1h");
    assert_int_equal(login->rates[1].window_ms, 3600000);
    assert_int_equal(login->rates[0].algorithm, GW_RL_FIXED_WINDOW);
    assert_int_equal(login->path_kind, GW_RULES_PATH_EXACT);
    assert_false(login->shadow);
    assert_int_equal(free_->rates[0].algorithm, GW_RL_TOKEN_BUCKET);
    assert_int_equal(free_->rates[0].burst, 20);
    assert_int_equal(free_->rates[0].delay_ms, 500);
    assert_string_equal(free_->rates[0].name, "api-free-1s");
    assert_string_equal(free_->rates[1].name, "api-daily");
    assert_int_equal(free_->keys[0].kind, GW_RULES_KEY_HEADER);
    assert_string_equal(free_->keys[0].header, "x-api-key");
    assert_true(tier->shadow);
    assert_int_equal(tier->key_count, 2);
    assert_string_equal(tier->rates[0].name, "api-new-tier");

    /* a change of meaning changes the version; references count */
    struct gw_rules *y2 = gw_rules_get(y);
    gw_rules_put(y2);
    char *changed = strdup(example_json);
    memcpy(strstr(changed, "\"requests\":100"), "\"requests\":101", 14);
    struct gw_rules *c = parse_ok(changed, GW_RULES_JSON);
    assert_string_not_equal(c->version, y->version);
    gw_rules_put(c);
    free(changed);
    gw_rules_put(j);
    gw_rules_put(y);
    free(yaml);
}

static void test_print_json(void **state)
{
    (void)state;
    struct gw_rules *r = parse_ok(example_json, GW_RULES_JSON);
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    assert_int_equal(gw_rules_print_json(r, out), 0);
    fclose(out);
    /* the printed form is itself a valid rules file with the same version */
    struct gw_rules *again = parse_ok(text, GW_RULES_JSON);
    assert_string_equal(again->version, r->version);
    assert_non_null(strstr(text, "\"window\": \"1m\""));
    assert_non_null(strstr(text, "\"delay\": \"500ms\""));
    gw_rules_put(again);
    gw_rules_put(r);
    free(text);
}

/* Each row: a YAML document and the exact error lines it must give. */
struct err_row {
    const char *doc;
    const char *want;
};

static const struct err_row err_rows[] = {
    {"version: 1\nlimits:\n- {name: a, rates: [{requests: 1, window: 0s}]}\n",
     "limits[0].rates[0].window: \"0s\": must be at least 1 s\n"},
    {"version: 1\nlimits:\n"
     "- {name: a, rates: [{requests: 1, window: 1s}]}\n"
     "- {name: b, rates: [{requests: 1, window: 1s}]}\n"
     "- {name: c, rates: [{requests: 1, window: 0s}]}\n",
     "limits[2].rates[0].window: \"0s\": must be at least 1 s\n"},
    {"version: 1\nlimits: []\ncolour: red\n", "colour: unknown field\n"},
    {"limits: []\n", "version: missing (version: 1)\n"},
    {"version: \"1\"\nlimits: []\n", "version: \"1\": must be 1\n"},
    {"version: 1\n", "limits: missing\n"},
    {"- 1\n", "(document): must be an object with version and limits (not a list)\n"},
    {"version: 1\nlimits:\n- {name: a, bogus: 1, rates: [{requests: 1, window: 1s, size: 2}]}\n",
     "limits[0].bogus: unknown field\nlimits[0].rates[0].size: unknown field\n"},
    {"version: 1\nlimits:\n- {name: a, match: {path: /a, when: now}, rates: [{requests: 1, "
     "window: 1s}]}\n",
     "limits[0].match.when: unknown field\n"},
    /* durations */
    {"version: 1\nlimits:\n- {name: a, rates: [{requests: 1, window: 10}, {requests: 1, window: "
     "1.5}, {requests: 1, window: 5x}, {requests: 1, window: \"-1s\"}, {requests: 1, window: "
     "1.0005s}, {requests: 1, window: 367d}, {requests: 1, window: 999ms}]}\n",
     "limits[0].rates[1].window: 1.5: must be an integer of seconds or a number with ms, s, m, h "
     "or d (e.g. \"500ms\", \"1m\")\n"
     "limits[0].rates[2].window: \"5x\": must be an integer of seconds or a number with ms, s, m, "
     "h or d (e.g. \"500ms\", \"1m\")\n"
     "limits[0].rates[3].window: \"-1s\": must be an integer of seconds or a number with ms, s, "
     "m, h or d (e.g. \"500ms\", \"1m\")\n"
     "limits[0].rates[4].window: \"1.0005s\": must be a whole number of milliseconds\n"
     "limits[0].rates[5].window: \"367d\": out of range (366d at most)\n"
     "limits[0].rates[6].window: \"999ms\": must be at least 1 s\n"},
    {"version: 1\nlimits:\n- {name: a, rates: [{requests: 1, window: 0ms, algorithm: "
     "token_bucket}, {requests: 1000000000, window: 1ms, algorithm: gcra}, {requests: 1, window: "
     "1s, algorithm: leaky}]}\n",
     "limits[0].rates[0].window: \"0ms\": must be more than 0\n"
     "limits[0].rates[1].window: \"1ms\": too short for 1000000000 requests (one token per "
     "microsecond at most)\n"
     "limits[0].rates[2].algorithm: \"leaky\": must be fixed_window, sliding_window, "
     "token_bucket or gcra\n"},
    {"version: 1\nlimits:\n- {name: a, rates: [{requests: 1, window: 1s, burst: 5, delay: 1s}, "
     "{requests: 1000000001, window: 2s}, {window: 3s}, {requests: 1}]}\n",
     "limits[0].rates[0].burst: 5: only for token_bucket (gcra)\n"
     "limits[0].rates[0].delay: \"1s\": only for token_bucket (gcra)\n"
     "limits[0].rates[1].requests: 1000000001: must be an integer from 1 to 1000000000\n"
     "limits[0].rates[2].requests: missing\n"
     "limits[0].rates[3].window: missing\n"},
    /* a bucket that takes more than a century to fill (µs exact in doubles) */
    {"version: 1\nlimits:\n- {name: a, rates: [{requests: 1, window: 366d, algorithm: "
     "token_bucket, burst: 1000}]}\n",
     "limits[0].rates[0].burst: 1000: burst x window / requests must be at most 100 years\n"},
    /* stacked quantifiers: glibc's regcomp would take gigabytes for a few dozen */
    {"version: 1\nlimits:\n- {name: a, action: allow, match: {path_regex: \"/a*+\"}}\n",
     "limits[0].match.path_regex: \"/a*+\": a quantifier must not follow another one (a++, "
     "a*{2})\n"},
    /* CIDRs, regexes, methods, headers, keys */
    {"version: 1\nlimits:\n- {name: a, action: allow, match: {client_cidrs: [10.0.0.0/33, "
     "\"::1/129\", nope, 10.1.2.3]}}\n",
     "limits[0].match.client_cidrs[0]: \"10.0.0.0/33\": prefix length must be 0..32\n"
     "limits[0].match.client_cidrs[1]: \"::1/129\": prefix length must be 0..128\n"
     "limits[0].match.client_cidrs[2]: \"nope\": not an IPv4 or IPv6 address\n"},
    {"version: 1\nlimits:\n- {name: a, action: allow, match: {path_regex: \"^/a(\"}}\n",
     "limits[0].match.path_regex: \"^/a(\": not a POSIX extended regular expression: Unmatched "
     "( or \\(\n"},
    {"version: 1\nlimits:\n- {name: a, action: allow, match: {path: /a, path_regex: /b}}\n",
     "limits[0].match.path_regex: \"/b\": only one of path, path_prefix and path_regex may be "
     "given\n"},
    {"version: 1\nlimits:\n- {name: a, action: allow, match: {path: a, methods: [get, GET]}}\n",
     "limits[0].match.methods[0]: \"get\": not an HTTP method (methods are upper case, e.g. "
     "\"POST\")\n"
     "limits[0].match.path: \"a\": must be a path: '/' then no spaces, '?' or '#' (4096 bytes at "
     "most)\n"},
    {"version: 1\nlimits:\n- {name: a, action: allow, match: {headers: {X-A: 1, X-B: b, x-b: "
     "c}}}\n",
     "limits[0].match.headers.X-A: 1: must be a string (the exact value, or \"*\" for any)\n"
     "limits[0].match.headers.x-b: the same header twice (names are case-insensitive)\n"},
    {"version: 1\nlimits:\n- {name: a, key: [ip, global], rates: [{requests: 1, window: 1s}]}\n"
     "- {name: b, key: [], rates: [{requests: 1, window: 1s}]}\n"
     "- {name: c, key: \"cookie:x\", rates: [{requests: 1, window: 1s}]}\n",
     "limits[0].key: [\"ip\",\"global\"]: global is one bucket for every client: it cannot be "
     "combined\n"
     "limits[1].key: []: must be a key (ip, global, header:<Name>) or a list of 1 to 8 keys\n"
     "limits[2].key: \"cookie:x\": must be ip, global or header:<Name> (Name an HTTP token)\n"},
    /* a 64-character limit name leaves no room for "-1m" (found by fuzz_rules:
     * the normalised form did not load again) */
    {"version: 1\nlimits:\n- {name: "
     "mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm, "
     "rates: [{requests: 1, window: 1m}, {requests: 2, window: 1h, name: hourly}]}\n",
     "limits[0].rates[0].name: "
     "\"mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm-1m\": the derived "
     "policy name is longer than 64; name the rate\n"},
    /* names, modes, actions */
    {"version: 1\nlimits:\n- {name: \"a b\", action: deny}\n- {mode: loud, rates: []}\n"
     "- {name: c, action: allow, mode: shadow, key: ip}\n",
     "limits[0].name: \"a b\": must be 1 to 64 of A-Z a-z 0-9 _ . -\n"
     "limits[0].action: \"deny\": must be allow (or left out)\n"
     "limits[0].rates: missing (a limit needs at least one rate, or action: allow)\n"
     "limits[1].name: missing\n"
     "limits[1].mode: \"loud\": must be enforce or shadow\n"
     "limits[1].rates: []: must be a list of 1 to 16 rates\n"
     "limits[2].key: not allowed with action: allow\n"
     "limits[2].mode: not allowed with action: allow\n"},
    /* duplicates: limit names, explicit and default policy names */
    {"version: 1\nlimits:\n"
     "- {name: login, rates: [{requests: 1, window: 1m}, {requests: 2, window: 60s}]}\n"
     "- {name: login, action: allow}\n"
     "- {name: other, rates: [{requests: 1, window: 1s, name: login-1m}]}\n",
     "limits[1].name: \"login\": duplicate limit name (first at limits[0].name)\n"
     "limits[0].rates[1].name: \"login-1m\": duplicate policy (rate) name (first at "
     "limits[0].rates[0].name)\n"
     "limits[2].rates[0].name: \"login-1m\": duplicate policy (rate) name (first at "
     "limits[0].rates[0].name)\n"},
    /* an error stays one line, ASCII */
    {"version: 1\nlimits: []\n\"a\\nb\": 1\n", "a?b: unknown field\n"},
    {"version: \"\\u00e9\"\nlimits: []\n", "version: \"\\u00E9\": must be 1\n"},
    /* reader errors */
    {"version: 1\nversion: 1\nlimits: []\n", "line 2, column 10: key \"version\" given twice\n"},
    {"a: &x [1]\nb: *x\n", "line 2, column 4: aliases (*name) are not supported\n"},
    {"", "line 1, column 1: empty document\n"},
    {"a: 1\n---\nb: 2\n", "line 2, column 1: more than one YAML document\n"},
    {"version: 1\nlimits: [\n", "line 3, column 1: did not find expected node content\n"},
};

static void test_error_lines(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(err_rows) / sizeof(err_rows[0]); i++) {
        int rc;
        char *errs;
        struct gw_rules *r = parse(err_rows[i].doc, GW_RULES_YAML, NULL, &rc, &errs);
        assert_null(r);
        if (strcmp(errs, err_rows[i].want) != 0)
            fail_msg("row %zu:\n%s\ngave:\n%swant:\n%s", i, err_rows[i].doc, errs,
                     err_rows[i].want);
        int lines = 0;
        for (const char *p = errs; *p; p++)
            lines += *p == '\n';
        assert_int_equal(rc, lines);
        free(errs);
    }
}

static void test_json_reader_errors(void **state)
{
    (void)state;
    int rc;
    char *errs;
    assert_null(
        parse("{\"version\":1,\"limits\":[],\"version\":1}", GW_RULES_JSON, NULL, &rc, &errs));
    assert_int_equal(rc, 1);
    assert_non_null(strstr(errs, "duplicate object key"));
    free(errs);
    assert_null(parse("{\"version\":1,\"limits\":[{\"name\":\"a\",\"rates\":[{\"requests\":5.0,"
                      "\"window\":\"1s\"}]}]}",
                      GW_RULES_JSON, NULL, &rc, &errs));
    assert_string_equal(
        errs, "limits[0].rates[0].requests: 5.0: must be an integer from 1 to 1000000000\n");
    free(errs);
    /* the prefix goes before every line */
    size_t len;
    FILE *err = open_memstream(&errs, &len);
    struct gw_rules *r = NULL;
    rc = gw_rules_parse("{}", 2, GW_RULES_JSON, NULL, &r, err, "P: ");
    fclose(err);
    assert_int_equal(rc, 2);
    assert_string_equal(errs, "P: version: missing (version: 1)\nP: limits: missing\n");
    free(errs);
    /* an unreadable file is one error */
    err = open_memstream(&errs, &len);
    assert_int_equal(gw_rules_load_file("/nonexistent/rules.json", NULL, &r, err, NULL), 1);
    fclose(err);
    assert_string_equal(errs, "/nonexistent/rules.json: No such file or directory\n");
    free(errs);
    /* a directory, and a file over the size limit */
    err = open_memstream(&errs, &len);
    assert_int_equal(gw_rules_load_file("/", NULL, &r, err, NULL), 1);
    fclose(err);
    assert_string_equal(errs, "/: Is a directory\n");
    free(errs);
    char big[] = "/tmp/gw-rules-big-XXXXXX";
    int fd = mkstemp(big);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, GW_RULES_FILE_MAX + 1), 0);
    close(fd);
    err = open_memstream(&errs, &len);
    assert_int_equal(gw_rules_load_file(big, NULL, &r, err, NULL), 1);
    fclose(err);
    unlink(big);
    assert_non_null(strstr(errs, ": larger than 4 MiB\n"));
    free(errs);
}

/* Durations and default names in their largest exact unit. */
static void test_windows_and_names(void **state)
{
    (void)state;
    struct gw_rules *r = parse_ok("version: 1\nlimits:\n- name: w\n  rates:\n"
                                  "  - {requests: 1, window: 90}\n"
                                  "  - {requests: 1, window: 1500ms}\n"
                                  "  - {requests: 1, window: 2.5m}\n"
                                  "  - {requests: 1, window: 2d}\n"
                                  "  - {requests: 1, window: 0.25h, algorithm: token_bucket}\n"
                                  "  - {requests: 1, window: 10ms, algorithm: gcra, delay: 0}\n",
                                  GW_RULES_YAML);
    const struct gw_rules_rate *rt = r->limits[0].rates;
    static const char *const names[] = {"w-90s", "w-1500ms", "w-150s", "w-2d", "w-15m", "w-10ms"};
    assert_int_equal(rt[0].window_ms, 90000);
    assert_int_equal(rt[1].window_ms, 1500);
    assert_int_equal(rt[3].window_ms, 172800000);
    assert_int_equal(rt[4].window_ms, 900000);
    assert_int_equal(rt[5].window_ms, 10);
    assert_int_equal(rt[5].burst, 1);
    assert_int_equal(rt[2].window_ms, 150000);
    for (size_t i = 0; i < 6; i++)
        assert_string_equal(rt[i].name, names[i]);
    gw_rules_put(r);
    /* rates 0 and 2 share w-90s: refused as duplicates */
    int rc;
    char *errs;
    assert_null(parse("version: 1\nlimits:\n- {name: w, rates: [{requests: 1, window: 90}, "
                      "{requests: 2, window: 1.5m}]}\n",
                      GW_RULES_YAML, NULL, &rc, &errs));
    assert_non_null(strstr(errs, "limits[0].rates[1].name: \"w-90s\": duplicate"));
    free(errs);
}

static const char *test_env(void *ctx, const char *name)
{
    (void)ctx;
    if (strcmp(name, "RATE_LIMIT_KEY") == 0)
        return "header:X-Key";
    if (strcmp(name, "RATE_LIMIT_REQUESTS") == 0)
        return "7";
    if (strcmp(name, "RATE_LIMIT_WINDOW_SECONDS") == 0)
        return "30";
    return NULL;
}

/* The environment's defaults: algorithm and key; and the rules made
 * without a file. */
static void test_defaults_from_config(void **state)
{
    (void)state;
    struct gw_config cfg;
    assert_int_equal(gw_config_load(&cfg, test_env, NULL, stderr), 0);

    int rc;
    char *errs;
    struct gw_rules *r = parse("{\"version\":1,\"limits\":[{\"name\":\"a\",\"rates\":[{"
                               "\"requests\":1,\"window\":1}]}]}",
                               GW_RULES_JSON, &cfg, &rc, &errs);
    assert_int_equal(rc, 0);
    free(errs);
    assert_int_equal(r->limits[0].keys[0].kind, GW_RULES_KEY_HEADER);
    assert_string_equal(r->limits[0].keys[0].header, "x-key");
    gw_rules_put(r);

    struct gw_rules *d = gw_rules_from_config(&cfg);
    assert_non_null(d);
    assert_int_equal(d->source, GW_RULES_SOURCE_ENV);
    assert_int_equal(d->limit_count, 1);
    assert_string_equal(d->limits[0].name, "default");
    assert_string_equal(d->limits[0].rates[0].name, "default");
    assert_int_equal(d->limits[0].rates[0].requests, 7);
    assert_int_equal(d->limits[0].rates[0].window_ms, 30000);
    assert_int_equal(d->limits[0].path_kind, GW_RULES_PATH_ANY);
    /* the same limit written in a file has the same normal form */
    struct gw_rules *f = parse_ok("{\"version\":1,\"limits\":[{\"name\":\"default\",\"key\":"
                                  "\"header:x-key\",\"rates\":[{\"requests\":7,\"window\":\"30s\"}"
                                  "]}]}",
                                  GW_RULES_JSON);
    assert_string_equal(d->normalised, f->normalised);
    assert_string_equal(d->version, f->version);
    gw_rules_put(f);
    gw_rules_put(d);
    gw_config_deinit(&cfg);
}

/* ---- matcher ------------------------------------------------------------ */

struct req {
    int method;
    const char *target;
    const char *headers[4][2];
    const char *addr;
};

/* Runs the matcher; writes the names of the applicable limits, comma
 * separated, or "ALLOW:<name>" or "" to out. */
static void run_match(const struct gw_rules *r, const struct req *q, char *out, size_t cap)
{
    struct gw_http_head h;
    memset(&h, 0, sizeof(h));
    for (size_t i = 0; i < 4 && q->headers[i][0] != NULL; i++) {
        h.headers[i].name = (struct gw_slice){q->headers[i][0], strlen(q->headers[i][0])};
        h.headers[i].value = (struct gw_slice){q->headers[i][1], strlen(q->headers[i][1])};
        h.header_count++;
    }
    char path[512];
    size_t n = gw_path_normalize(q->target, strlen(q->target), path);
    path[n] = '\0'; /* as gw_rules_request asks */
    uint8_t addr[16];
    assert_true(gw_net_parse_addr(q->addr ? q->addr : "192.0.2.1",
                                  strlen(q->addr ? q->addr : "192.0.2.1"), addr, NULL));
    struct gw_rules_request rq = {q->method, {path, n}, &h, addr};
    const struct gw_rules_limit *got[GW_RULES_MAX_LIMITS], *allow = NULL;
    size_t count = 99;
    enum gw_rules_verdict v = gw_rules_match(r, &rq, got, GW_RULES_MAX_LIMITS, &count, &allow);
    out[0] = '\0';
    if (v == GW_RULES_ALLOW) {
        assert_non_null(allow);
        assert_int_equal(count, 0);
        snprintf(out, cap, "ALLOW:%s", allow->name);
        return;
    }
    assert_int_equal(v == GW_RULES_NONE, count == 0);
    size_t o = 0;
    for (size_t i = 0; i < count; i++) {
        if (i > 0)
            assert_true(got[i]->index > got[i - 1]->index); /* file order */
        o += (size_t)snprintf(out + o, cap - o, "%s%s", i ? "," : "", got[i]->name);
    }
}

#define GET  1 /* llhttp HTTP_GET */
#define POST 3 /* llhttp HTTP_POST */
#define PUT  4 /* llhttp HTTP_PUT */

static const char match_rules[] =
    "version: 1\n"
    "limits:\n"
    "- {name: login, match: {methods: [POST], path: /login}, rates: [{requests: 5, window: 1m}]}\n"
    "- {name: api, match: {path_prefix: /api/}, rates: [{requests: 5, window: 1m}]}\n"
    "- {name: apiv1, match: {path_prefix: /api/v1/}, rates: [{requests: 5, window: 1m}]}\n"
    "- {name: users, match: {path_regex: \"/users/[0-9]+\"}, rates: [{requests: 5, window: 1m}]}\n"
    "- {name: free, match: {headers: {X-Plan: free}}, rates: [{requests: 5, window: 1m}]}\n"
    "- {name: keyed, match: {headers: {x-api-key: \"*\"}, methods: [GET, PUT]}, rates: "
    "[{requests: 5, window: 1m}]}\n"
    "- {name: lan, match: {client_cidrs: [10.0.0.0/8, \"2001:db8::/32\"]}, rates: "
    "[{requests: 5, window: 1m}]}\n"
    "- {name: all, rates: [{requests: 5, window: 1m}]}\n"
    "- {name: probe, match: {path: /healthz, client_cidrs: [192.0.2.0/24]}, action: allow}\n"
    "- {name: again, match: {path: /login}, rates: [{requests: 5, window: 1m}]}\n"
    /* regexes with and without a literal start (the index files the first
     * under it: the answers must not change) */
    "- {name: opt, match: {path_regex: \"/ab*c\"}, rates: [{requests: 5, window: 1m}]}\n"
    "- {name: alt, match: {path_regex: \"/q|/r/s\"}, rates: [{requests: 5, window: 1m}]}\n"
    "- {name: anch, match: {path_regex: \"^/z[0-9]\"}, rates: [{requests: 5, window: 1m}]}\n";

static void test_match(void **state)
{
    (void)state;
    struct gw_rules *r = parse_ok(match_rules, GW_RULES_YAML);
    static const struct {
        struct req q;
        const char *want;
    } rows[] = {
        {{POST, "/login"}, "login,all,again"},
        {{GET, "/login"}, "all,again"},
        {{POST, "//login?x=1"}, "login,all,again"},
        {{POST, "/%6Cogin"}, "login,all,again"},
        {{POST, "/a/../login"}, "login,all,again"},
        {{POST, "/Login"}, "all"},    /* case-sensitive */
        {{POST, "/%2Flogin"}, "all"}, /* an encoded '/' is not a separator */
        {{POST, "/login/"}, "all"},   /* exact is exact */
        {{GET, "/api/x"}, "api,all"},
        {{GET, "/api"}, "all"},
        {{GET, "/api/v1/x"}, "api,apiv1,all"},
        {{GET, "/api/./v1/../v1/x"}, "api,apiv1,all"},
        {{GET, "/users/42"}, "users,all"},
        {{GET, "/users/42/x"}, "all"}, /* a regex matches the whole path */
        {{GET, "/x/users/42"}, "all"},
        {{GET, "/users/"}, "all"},
        {{GET, "/", {{"x-plan", "free"}}}, "free,all"},
        {{GET, "/", {{"X-PLAN", "Free"}}}, "all"},      /* values are exact */
        {{GET, "/", {{"X-Api-Key", ""}}}, "keyed,all"}, /* "*": present */
        {{PUT, "/", {{"X-Api-Key", "k"}, {"X-Plan", "free"}}}, "free,keyed,all"},
        {{POST, "/", {{"X-Api-Key", "k"}}}, "all"},
        {{GET, "/", {{0}}, "10.1.2.3"}, "lan,all"},
        {{GET, "/", {{0}}, "2001:db8::1"}, "lan,all"},
        {{GET, "/", {{0}}, "::ffff:10.0.0.1"}, "lan,all"},
        {{GET, "/", {{0}}, "11.0.0.1"}, "all"},
        {{GET, "/healthz", {{0}}, "192.0.2.9"}, "ALLOW:probe"},
        {{GET, "/healthz", {{0}}, "198.51.100.1"}, "all"},
        {{GET, "/healthz?x", {{0}}, "192.0.2.9"}, "ALLOW:probe"},
        {{99, "/healthz", {{0}}, "192.0.2.9"}, "ALLOW:probe"}, /* method outside the mask */
        {{99, "/login"}, "all,again"},
        {{GET, "/ac"}, "all,opt"}, /* the b is optional: the start is "/a" */
        {{GET, "/abbc"}, "all,opt"},
        {{GET, "/r/s"}, "all,alt"}, /* alternation: no literal start */
        {{GET, "/q"}, "all,alt"},
        {{GET, "/z7"}, "all,anch"},
        {{GET, "/z"}, "all"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char got[512];
        run_match(r, &rows[i].q, got, sizeof(got));
        if (strcmp(got, rows[i].want) != 0)
            fail_msg("row %zu (%s): got \"%s\", want \"%s\"", i, rows[i].q.target, got,
                     rows[i].want);
    }
    /* cap bounds what is written */
    char path[] = "/login";
    uint8_t addr[16] = {0};
    struct gw_rules_request rq = {POST, {path, 6}, NULL, addr};
    const struct gw_rules_limit *one[1];
    size_t count;
    assert_int_equal(gw_rules_match(r, &rq, one, 1, &count, NULL), GW_RULES_LIMITED);
    assert_int_equal(count, 1);
    assert_string_equal(one[0]->name, "login");
    gw_rules_put(r);

    /* no limits: nothing applies */
    r = parse_ok("{\"version\":1,\"limits\":[]}", GW_RULES_JSON);
    char got[64];
    struct req q = {GET, "/"};
    run_match(r, &q, got, sizeof(got));
    assert_string_equal(got, "");
    gw_rules_put(r);
}

/* Readers on several threads share one rules set, each with its own
 * reference; the last put (on whichever thread) frees it. */
struct reader_arg {
    struct gw_rules *rules; /* the reader's own reference */
    int mismatches;
};

static void *reader(void *p)
{
    struct reader_arg *a = p;
    static const struct req login = {POST, "//login?x"}, api = {GET, "/api/v1/users/7"};
    for (int i = 0; i < 2000; i++) {
        char got[256];
        run_match(a->rules, i % 2 ? &login : &api, got, sizeof(got));
        a->mismatches += strcmp(got, i % 2 ? "login,all,again" : "api,apiv1,all") != 0;
    }
    gw_rules_put(a->rules);
    return NULL;
}

static void test_match_concurrent(void **state)
{
    (void)state;
    struct gw_rules *r = parse_ok(match_rules, GW_RULES_YAML);
    pthread_t t[4];
    struct reader_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (struct reader_arg){gw_rules_get(r), 0};
        assert_int_equal(pthread_create(&t[i], NULL, reader, &args[i]), 0);
    }
    gw_rules_put(r); /* the readers hold it now */
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(args[i].mismatches, 0);
    }
}

/* 200 limits of every kind: the tables give the same answers as checking
 * every limit by hand. */
static void test_match_many(void **state)
{
    (void)state;
    char *doc = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&doc, &len);
    fprintf(f, "version: 1\nlimits:\n");
    for (int i = 0; i < 200; i++) {
        switch (i % 4) {
        case 0:
            fprintf(f, "- {name: e%d, match: {path: /p/%d}, rates: [{requests: 1, window: 1s}]}\n",
                    i, i / 4);
            break;
        case 1:
            fprintf(f,
                    "- {name: p%d, match: {path_prefix: /p/%d}, rates: [{requests: 1, window: "
                    "1s}]}\n",
                    i, i / 8);
            break;
        case 2:
            fprintf(f,
                    "- {name: r%d, match: {path_regex: \"/p/%d[0-9]*\", methods: [GET]}, rates: "
                    "[{requests: 1, window: 1s}]}\n",
                    i, i / 20);
            break;
        default:
            fprintf(f,
                    "- {name: m%d, match: {methods: [%s]}, rates: [{requests: 1, window: 1s}]}\n",
                    i, i % 8 == 3 ? "POST" : "GET");
        }
    }
    fclose(f);
    struct gw_rules *r = parse_ok(doc, GW_RULES_YAML);
    free(doc);
    assert_int_equal(r->limit_count, 200);
    for (int t = 0; t < 60; t++) {
        for (int method = GET; method <= POST; method += POST - GET) {
            char target[32];
            snprintf(target, sizeof(target), "/p/%d", t);
            char path[32];
            size_t n = gw_path_normalize(target, strlen(target), path);
            path[n] = '\0'; /* for the reference checks below */
            uint8_t addr[16] = {0};
            struct gw_rules_request rq = {method, {path, n}, NULL, addr};
            const struct gw_rules_limit *got[GW_RULES_MAX_LIMITS];
            size_t count;
            (void)gw_rules_match(r, &rq, got, GW_RULES_MAX_LIMITS, &count, NULL);
            size_t k = 0;
            for (size_t i = 0; i < r->limit_count; i++) {
                const struct gw_rules_limit *l = &r->limits[i];
                bool m = l->methods == 0 || (l->methods & (UINT64_C(1) << method));
                if (l->path_kind == GW_RULES_PATH_EXACT)
                    m = m && strcmp(l->path, path) == 0;
                else if (l->path_kind == GW_RULES_PATH_PREFIX)
                    m = m && strncmp(l->path, path, strlen(l->path)) == 0;
                else if (l->path_kind == GW_RULES_PATH_REGEX) {
                    regmatch_t pm[1];
                    m = m && regexec(l->regex, path, 1, pm, 0) == 0 && pm[0].rm_so == 0 &&
                        (size_t)pm[0].rm_eo == n;
                }
                if (!m)
                    continue;
                assert_true(k < count);
                assert_ptr_equal(got[k], l);
                k++;
            }
            assert_int_equal(k, count);
        }
    }
    gw_rules_put(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_and_yaml_same_tree),
        cmocka_unit_test(test_print_json),
        cmocka_unit_test(test_error_lines),
        cmocka_unit_test(test_json_reader_errors),
        cmocka_unit_test(test_windows_and_names),
        cmocka_unit_test(test_defaults_from_config),
        cmocka_unit_test(test_match),
        cmocka_unit_test(test_match_many),
        cmocka_unit_test(test_match_concurrent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
