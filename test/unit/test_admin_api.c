/*
 * Unit tests of the admin API's pure parts (src/admin_api.c, SPEC.md §11):
 * the routing of the admin listener, the bearer token check (missing,
 * wrong, longer, shorter, right; the compare is CRYPTO_memcmp), query
 * parameters, problem+json with an errors array, and the ADMIN_*
 * configuration rules (loopback, token, port).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "admin_api.h"
#include "gw/config.h"
#include "gwt_config.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct gw_slice sl(const char *s)
{
    return (struct gw_slice){s, s ? strlen(s) : 0};
}

/* ---- configuration ---- */

struct env {
    const char *const *kv; /* "NAME=value", NULL-terminated */
};

static const char *env_get(void *ctx, const char *name)
{
    const struct env *e = ctx;
    size_t n = strlen(name);
    for (size_t i = 0; e->kv[i]; i++)
        if (strncmp(e->kv[i], name, n) == 0 && e->kv[i][n] == '=')
            return e->kv[i] + n + 1;
    return NULL;
}

/* Loads cfg from kv; returns the error count and the error text in *text
 * (caller frees). */
static int load(struct gw_config *cfg, const char *const *kv, char **text)
{
    struct env e = {kv};
    size_t len = 0;
    FILE *err = open_memstream(text, &len);
    assert_non_null(err);
    int rc = gw_config_load(cfg, env_get, &e, err);
    fclose(err);
    return rc;
}

static void test_config_admin(void **state)
{
    (void)state;
    struct gw_config cfg;
    char *text = NULL;

    const char *none[] = {NULL};
    assert_int_equal(load(&cfg, none, &text), 0);
    assert_int_equal(cfg.admin_port, -1); /* unset: no admin listener */
    assert_string_equal(cfg.admin_host, "127.0.0.1");
    assert_null(cfg.admin_token);
    gw_config_deinit(&cfg);
    free(text);

    const char *empty[] = {"ADMIN_PORT=", "ADMIN_TOKEN=", NULL};
    assert_int_equal(load(&cfg, empty, &text), 0);
    assert_int_equal(cfg.admin_port, -1);
    assert_null(cfg.admin_token);
    gw_config_deinit(&cfg);
    free(text);

    const char *open_host[] = {"ADMIN_HOST=0.0.0.0", "ADMIN_PORT=9000", NULL};
    assert_int_equal(load(&cfg, open_host, &text), 1);
    assert_non_null(strstr(text, "config error: ADMIN_HOST=0.0.0.0: not a loopback address"));
    assert_non_null(strstr(text, "ADMIN_TOKEN"));
    gw_config_deinit(&cfg);
    free(text);

    /* The same host without ADMIN_PORT listens nowhere: no error. */
    const char *no_port[] = {"ADMIN_HOST=0.0.0.0", NULL};
    assert_int_equal(load(&cfg, no_port, &text), 0);
    gw_config_deinit(&cfg);
    free(text);

    const char *tok[] = {"ADMIN_HOST=::", "ADMIN_PORT=9000", "ADMIN_TOKEN=0123456789abcdef-secret",
                         NULL};
    assert_int_equal(load(&cfg, tok, &text), 0);
    assert_string_equal(cfg.admin_token, "0123456789abcdef-secret");
    char *json = gwt_config_json(&cfg);
    assert_null(strstr(json, "secret"));
    assert_non_null(strstr(json, "\"ADMIN_TOKEN\": \"***\""));
    free(json);
    gw_config_deinit(&cfg);
    free(text);

    const char *short_tok[] = {"ADMIN_PORT=9000", "ADMIN_TOKEN=short-secret", NULL};
    assert_int_equal(load(&cfg, short_tok, &text), 1);
    assert_non_null(strstr(text, "ADMIN_TOKEN=***"));
    assert_null(strstr(text, "short-secret")); /* never echoed */
    gw_config_deinit(&cfg);
    free(text);

    const char *same_port[] = {"GATEWAY_PORT=9000", "ADMIN_PORT=9000", NULL};
    assert_int_equal(load(&cfg, same_port, &text), 1);
    assert_non_null(strstr(text, "ADMIN_PORT=9000: same port as GATEWAY_PORT"));
    gw_config_deinit(&cfg);
    free(text);

    const char *bad_port[] = {"ADMIN_PORT=70000", NULL};
    assert_int_equal(load(&cfg, bad_port, &text), 1);
    assert_non_null(strstr(text, "ADMIN_PORT=70000"));
    gw_config_deinit(&cfg);
    free(text);
}

static void test_loopback(void **state)
{
    (void)state;
    assert_true(gw_config_is_loopback("127.0.0.1"));
    assert_true(gw_config_is_loopback("127.1.2.3"));
    assert_true(gw_config_is_loopback("::1"));
    assert_true(gw_config_is_loopback("::ffff:127.0.0.1"));
    assert_true(gw_config_is_loopback("localhost"));
    assert_false(gw_config_is_loopback("0.0.0.0"));
    assert_false(gw_config_is_loopback("::"));
    assert_false(gw_config_is_loopback("10.0.0.1"));
    assert_false(gw_config_is_loopback("128.0.0.1"));
    assert_false(gw_config_is_loopback(NULL));
}

/* ---- routing ---- */

static void test_route(void **state)
{
    (void)state;
    struct gw_config cfg;
    char *text = NULL;
    const char *kv[] = {"HEALTH_PATH=/healthz", NULL};
    assert_int_equal(load(&cfg, kv, &text), 0);
    free(text);
    const char *allow = NULL;
    struct {
        int method;
        const char *target;
        enum gw_admin_route want;
    } cases[] = {
        {HTTP_GET, "/healthz", GW_ADMIN_ROUTE_HEALTH},
        {HTTP_GET, "/healthz?probe=live", GW_ADMIN_ROUTE_HEALTH},
        {HTTP_GET, "/health", GW_ADMIN_ROUTE_NOT_FOUND},
        {HTTP_HEAD, "/stats", GW_ADMIN_ROUTE_STATS},
        {HTTP_GET, "/metrics", GW_ADMIN_ROUTE_METRICS},
        {HTTP_GET, "/rules", GW_ADMIN_ROUTE_RULES_GET},
        {HTTP_HEAD, "/rules", GW_ADMIN_ROUTE_RULES_GET},
        {HTTP_PUT, "/rules", GW_ADMIN_ROUTE_RULES_PUT},
        {HTTP_PUT, "/rules?x=1", GW_ADMIN_ROUTE_RULES_PUT},
        {HTTP_POST, "/rules/validate", GW_ADMIN_ROUTE_RULES_VALIDATE},
        {HTTP_GET, "/ratelimit?limit=a&key=b", GW_ADMIN_ROUTE_RATELIMIT_GET},
        {HTTP_DELETE, "/ratelimit?limit=a&key=b", GW_ADMIN_ROUTE_RATELIMIT_DELETE},
        {HTTP_GET, "/rules/", GW_ADMIN_ROUTE_NOT_FOUND},
        {HTTP_GET, "/Rules", GW_ADMIN_ROUTE_NOT_FOUND},
        {HTTP_GET, "/ratelimits", GW_ADMIN_ROUTE_NOT_FOUND},
        {HTTP_GET, "/", GW_ADMIN_ROUTE_NOT_FOUND},
        {HTTP_GET, "/users/1", GW_ADMIN_ROUTE_NOT_FOUND},
    };
    for (size_t i = 0; i < GW_ARRAY_LEN(cases); i++) {
        enum gw_admin_route got =
            gw_admin_api_route(&cfg, cases[i].method, sl(cases[i].target), &allow);
        if (got != cases[i].want)
            fail_msg("%s: route %d, want %d", cases[i].target, got, cases[i].want);
    }
    assert_int_equal(gw_admin_api_route(&cfg, HTTP_POST, sl("/rules"), &allow),
                     GW_ADMIN_ROUTE_BAD_METHOD);
    assert_string_equal(allow, "GET, HEAD, PUT");
    assert_int_equal(gw_admin_api_route(&cfg, HTTP_GET, sl("/rules/validate"), &allow),
                     GW_ADMIN_ROUTE_BAD_METHOD);
    assert_string_equal(allow, "POST");
    assert_int_equal(gw_admin_api_route(&cfg, HTTP_PUT, sl("/ratelimit"), &allow),
                     GW_ADMIN_ROUTE_BAD_METHOD);
    assert_string_equal(allow, "GET, HEAD, DELETE");
    assert_int_equal(gw_admin_api_route(&cfg, HTTP_DELETE, sl("/stats"), &allow),
                     GW_ADMIN_ROUTE_BAD_METHOD);
    assert_string_equal(allow, "GET, HEAD");
    assert_true(gw_admin_api_route_has_body(GW_ADMIN_ROUTE_RULES_PUT));
    assert_true(gw_admin_api_route_has_body(GW_ADMIN_ROUTE_RULES_VALIDATE));
    assert_false(gw_admin_api_route_has_body(GW_ADMIN_ROUTE_RULES_GET));
    assert_false(gw_admin_api_route_has_body(GW_ADMIN_ROUTE_RATELIMIT_DELETE));
    gw_config_deinit(&cfg);
}

/* ---- the token ---- */

#define TOK "s3cret-token-0123456789"

static void test_token(void **state)
{
    (void)state;
    struct gw_slice missing = {NULL, 0};
    assert_false(gw_admin_api_token_ok(TOK, missing));
    assert_false(gw_admin_api_token_ok(TOK, sl("")));
    assert_false(gw_admin_api_token_ok(TOK, sl("Bearer")));
    assert_false(gw_admin_api_token_ok(TOK, sl("Bearer ")));
    assert_false(gw_admin_api_token_ok(TOK, sl("Basic " TOK)));
    assert_false(gw_admin_api_token_ok(TOK, sl(TOK)));
    assert_false(gw_admin_api_token_ok(TOK, sl("Bearer s3cret-token-0123456780"))); /* 1 byte */
    assert_false(gw_admin_api_token_ok(TOK, sl("Bearer s3cret-token-012345678")));  /* shorter */
    assert_false(gw_admin_api_token_ok(TOK, sl("Bearer " TOK "9")));                /* longer */
    assert_false(gw_admin_api_token_ok(TOK, sl("Bearer " TOK " ")));
    assert_false(gw_admin_api_token_ok(TOK, sl("Bearer S3CRET-TOKEN-0123456789")));
    assert_false(gw_admin_api_token_ok(NULL, sl("Bearer " TOK)));
    /* A token with a NUL after the real one does not pass. */
    char nul[64] = "Bearer " TOK;
    size_t n = strlen(nul);
    nul[n] = '\0';
    assert_false(gw_admin_api_token_ok(TOK, (struct gw_slice){nul, n + 1}));
    assert_true(gw_admin_api_token_ok(TOK, sl("Bearer " TOK)));
    assert_true(gw_admin_api_token_ok(TOK, sl("bearer " TOK)));
    assert_true(gw_admin_api_token_ok(TOK, sl("BEARER   " TOK)));
}

/* The credentials are compared with CRYPTO_memcmp, never memcmp/strcmp:
 * read in the source of gw_admin_api_token_ok. */
static void test_token_compare_is_constant_time(void **state)
{
    (void)state;
    FILE *f = fopen(GW_SOURCE_DIR "/src/admin_api.c", "r");
    assert_non_null(f);
    static char text[128 * 1024];
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    char *fn = strstr(text, "bool gw_admin_api_token_ok(");
    assert_non_null(fn);
    char *end = strstr(fn, "\n}\n");
    assert_non_null(end);
    *end = '\0';
    assert_non_null(strstr(fn, "CRYPTO_memcmp("));
    assert_null(strstr(fn, " memcmp("));
    assert_null(strstr(fn, "strcmp("));
    assert_null(strstr(fn, "strncmp("));
}

/* ---- query parameters ---- */

static void test_query(void **state)
{
    (void)state;
    char out[32];
    assert_int_equal(
        gw_admin_api_query(sl("/ratelimit?limit=api&key=1.2.3.4"), "limit", out, sizeof(out)), 3);
    assert_string_equal(out, "api");
    assert_int_equal(
        gw_admin_api_query(sl("/ratelimit?limit=api&key=1.2.3.4"), "key", out, sizeof(out)), 7);
    assert_string_equal(out, "1.2.3.4");
    assert_int_equal(gw_admin_api_query(sl("/r?key=k%7Cv%3a1+2"), "key", out, sizeof(out)), 7);
    assert_string_equal(out, "k|v:1+2"); /* '+' is kept */
    assert_int_equal(gw_admin_api_query(sl("/r?key="), "key", out, sizeof(out)), 0);
    assert_string_equal(out, "");
    assert_int_equal(gw_admin_api_query(sl("/r?keys=x&akey=y"), "key", out, sizeof(out)), -ENOENT);
    assert_int_equal(gw_admin_api_query(sl("/r"), "key", out, sizeof(out)), -ENOENT);
    assert_int_equal(gw_admin_api_query(sl("/r?key"), "key", out, sizeof(out)), -ENOENT);
    assert_int_equal(gw_admin_api_query(sl("/r?key=%zz"), "key", out, sizeof(out)), -EINVAL);
    assert_int_equal(gw_admin_api_query(sl("/r?key=%4"), "key", out, sizeof(out)), -EINVAL);
    assert_int_equal(gw_admin_api_query(sl("/r?key=a%00b"), "key", out, sizeof(out)), -EINVAL);
    assert_int_equal(gw_admin_api_query(sl("/r?key=0123456789"), "key", out, 8), -ENOSPC);
    /* The first one wins. */
    assert_int_equal(gw_admin_api_query(sl("/r?key=a&key=b"), "key", out, sizeof(out)), 1);
    assert_string_equal(out, "a");
}

/* ---- problem+json ---- */

static void test_problem_with_errors(void **state)
{
    (void)state;
    struct gw_buf b = {0};
    const char errs[] = "limits[0].name: \"\": must match [A-Za-z0-9_.-]{1,64}\n"
                        "limits[1].rates[0].window: \"0s\": must be at least 1 s\n";
    assert_int_equal(gw_admin_api_problem(&b, 400, "the rules are invalid: 2 errors", errs,
                                          sizeof(errs) - 1, NULL, true, 1, false),
                     0);
    assert_int_equal(gw_buf_append(&b, "", 1), 0);
    const char *t = gw_buf_head(&b);
    assert_true(strncmp(t, "HTTP/1.1 400 Bad Request\r\n", 26) == 0);
    assert_non_null(strstr(t, "Content-Type: application/problem+json\r\n"));
    assert_null(strstr(t, "Connection: close"));
    const char *body = strstr(t, "\r\n\r\n");
    assert_non_null(body);
    json_t *j = json_loads(body + 4, 0, NULL);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 400);
    assert_string_equal(json_string_value(json_object_get(j, "title")), "Bad Request");
    json_t *arr = json_object_get(j, "errors");
    assert_int_equal(json_array_size(arr), 2);
    assert_string_equal(json_string_value(json_array_get(arr, 1)),
                        "limits[1].rates[0].window: \"0s\": must be at least 1 s");
    json_decref(j);
    gw_buf_release(&b);

    /* 401 with its challenge, closing. */
    assert_int_equal(gw_admin_api_problem(&b, 401, "no token", NULL, 0,
                                          "WWW-Authenticate: Bearer realm=\"gateway-admin\"\r\n",
                                          false, 1, false),
                     0);
    assert_int_equal(gw_buf_append(&b, "", 1), 0);
    t = gw_buf_head(&b);
    assert_non_null(strstr(t, "\r\nWWW-Authenticate: Bearer realm=\"gateway-admin\"\r\n"));
    assert_non_null(strstr(t, "\r\nConnection: close\r\n"));
    assert_null(strstr(t, "\"errors\""));
    gw_buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_admin),
        cmocka_unit_test(test_loopback),
        cmocka_unit_test(test_route),
        cmocka_unit_test(test_token),
        cmocka_unit_test(test_token_compare_is_constant_time),
        cmocka_unit_test(test_query),
        cmocka_unit_test(test_problem_with_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
