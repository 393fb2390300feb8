/*
 * Unit tests of request path normalisation (src/path.c): dot-segment
 * removal per RFC 3986 §5.2.4 (its §5.4 examples where they apply to an
 * absolute path) and the above-the-root check in every spelling a backend
 * might decode.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "gw/path.h"

/* fn(in) must give want and write no more than the input's length. */
static void check_path_fn(size_t (*fn)(const char *, size_t, char *), const char *in,
                          const char *want)
{
    char out[256];
    memset(out, 'X', sizeof(out));
    size_t n = fn(in, strlen(in), out);
    assert_true(n <= (strlen(in) ? strlen(in) : 1));
    out[n] = '\0';
    if (strcmp(out, want) != 0)
        fail_msg("\"%s\" gives \"%s\", want \"%s\"", in, out, want);
}

static void check_remove(const char *in, const char *want)
{
    check_path_fn(gw_path_remove_dots, in, want);
}

static void test_remove_dots(void **state)
{
    (void)state;
    check_remove("/", "/");
    check_remove("", "/");
    check_remove("/a/b/c", "/a/b/c");
    check_remove("/a/b/c/./../../g", "/a/g"); /* RFC 3986 §5.2.4 example */
    check_remove("/b/c/./g", "/b/c/g");
    check_remove("/b/c/g/", "/b/c/g/");
    check_remove("/b/c/.", "/b/c/");
    check_remove("/b/c/./", "/b/c/");
    check_remove("/b/c/..", "/b/");
    check_remove("/b/c/../", "/b/");
    check_remove("/b/c/../g", "/b/g");
    check_remove("/b/c/../..", "/");
    check_remove("/b/c/../../g", "/g");
    check_remove("/..", "/"); /* clamped, as the RFC's algorithm does */
    check_remove("/../../g", "/g");
    check_remove("/.", "/");
    check_remove("/a//b/../c", "/a//c");
    check_remove("/a//..", "/a/");
    /* encoded dots are dots (RFC 3986 §2.3) */
    check_remove("/a/%2e/b", "/a/b");
    check_remove("/a/%2E%2e/b", "/b");
    check_remove("/a/.%2e/b", "/b");
    check_remove("/a/%2e./b", "/b");
    /* not dot-segments: kept byte for byte */
    check_remove("/g.", "/g.");
    check_remove("/.g", "/.g");
    check_remove("/g..", "/g..");
    check_remove("/..g", "/..g");
    check_remove("/.../x", "/.../x");
    check_remove("/%2e%2e%2e/x", "/%2e%2e%2e/x");
    check_remove("/%2f../x", "/%2f../x");
    check_remove("/%41/%2", "/%41/%2");
}

static void test_climbs_above_root(void **state)
{
    (void)state;
    static const char *const climbs[] = {
        "/..",
        "/../admin",
        "/%2e%2e/admin",
        "/%2E%2E/admin",
        "/.%2e/admin",
        "/a/../../admin",
        "/a/./../../b",
        "/a/b/../../../c",
        "/..%2fadmin",
        "/..%2Fadmin",
        "/a%5c..%5c..%5cb",
        "/a\\..\\..\\b",
        "/x%2f..%2f..",
        "/./../a",
        /* a ".." beside a separator some backend decodes, at any depth */
        "/a/..%2fb",
        "/a\\..\\b",
        "/x\\y/..%2f..%2fadmin",
        "/\\/..%2f..%2fadmin",
        "/%5C/../..\\admin",
        "/a%2fb\\..\\..\\admin",
        "/a/b%5c..",
    };
    static const char *const stays[] = {
        "",       "/",           "/a/..",       "/a/../b",   "/a/b/../../c", "/./a",
        "/...",   "/..a",        "/a..",        "/a//../..", "/%2e%2e%2e/x", "/a/...%2fb",
        "/a%2fb", "no-slash/..", "/a/%2e/../b", "/a\\b",     "/a%5c.%5cb",   "/..a%2f..b",
    };
    for (size_t i = 0; i < sizeof(climbs) / sizeof(climbs[0]); i++) {
        if (!gw_path_climbs_above_root(climbs[i], strlen(climbs[i])))
            fail_msg("%s should climb above the root", climbs[i]);
    }
    for (size_t i = 0; i < sizeof(stays) / sizeof(stays[0]); i++) {
        if (gw_path_climbs_above_root(stays[i], strlen(stays[i])))
            fail_msg("%s should stay below the root", stays[i]);
    }
}

static void check_norm(const char *in, const char *want)
{
    check_path_fn(gw_path_normalize, in, want);
}

/* Every spelling of /login a client might send reaches the same normal
 * form (SPEC.md §10: no spelling of a path escapes its limit). */
static void test_normalize_same_path(void **state)
{
    (void)state;
    static const char *const login[] = {
        "/login",
        "//login",
        "/./login",
        "/%6Cogin",
        "/%6cogin",
        "/a/../login",
        "/login?x",
        "/login?",
        "/login#f",
        "///login?a=/../b",
        "/%2e/login",
        "/a/%2E%2E/login",
        "/a/b/../../login",
        "/../login",
        "/%6C%6F%67%69%6E",
        "http://example.com/login?q",
        "http://h//./login",
        "/.//login",
    };
    for (size_t i = 0; i < sizeof(login) / sizeof(login[0]); i++)
        check_norm(login[i], "/login");
}

/* What must stay distinct: encoded reserved bytes, case, trailing '/'. */
static void test_normalize_distinct(void **state)
{
    (void)state;
    check_norm("/%2Flogin", "/%2Flogin"); /* an encoded '/' is no separator */
    check_norm("/%2flogin", "/%2Flogin"); /* hex digits upper-cased (§6.2.2.1) */
    check_norm("/Login", "/Login");       /* case is kept */
    check_norm("/LOGIN/%7e", "/LOGIN/~");
    check_norm("/login/", "/login/");
    check_norm("/api//v1///x", "/api/v1/x");
    check_norm("/a%20b", "/a%20b");
    check_norm("/a%zzb%4", "/a%zzb%4"); /* malformed escapes kept */
    check_norm("/a%2", "/a%2");
    check_norm("/a/.", "/a/");
    check_norm("/a//..", "/");
    check_norm("", "/");
    check_norm("?x", "/");
    check_norm("*", "*");
    check_norm("example.com:443", "example.com:443");
    check_norm("http://example.com", "/");
    check_norm("http://example.com?x", "/");
    check_norm("/%41%5A%61%7A%30%39%2D%2E%5F%7E", "/AZaz09-._~");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_remove_dots),
        cmocka_unit_test(test_climbs_above_root),
        cmocka_unit_test(test_normalize_same_path),
        cmocka_unit_test(test_normalize_distinct),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
