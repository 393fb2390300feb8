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

static void check_remove(const char *in, const char *want)
{
    char out[256];
    memset(out, 'X', sizeof(out));
    size_t n = gw_path_remove_dots(in, strlen(in), out);
    assert_true(n <= (strlen(in) ? strlen(in) : 1));
    out[n] = '\0';
    assert_string_equal(out, want);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_remove_dots),
        cmocka_unit_test(test_climbs_above_root),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
