/*
 * Unit tests of the address parsers of src/net.c: IP literals and their
 * IPv4-mapped form (RFC 4291), host[:port] authorities (RFC 3986 §3.2.2),
 * http:// URLs with and without a base path, CIDRs from /0 to /128 and
 * matching, and the text of socket addresses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "gw/net.h"

#include <arpa/inet.h>
#include <string.h>

static const uint8_t MAPPED_PREFIX[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* Parses a NUL-terminated literal; fails the test when it is refused. */
static void addr(const char *s, uint8_t out[16], bool *v4)
{
    assert_true(gw_net_parse_addr(s, strlen(s), out, v4));
}

static void test_parse_addr_valid(void **state)
{
    (void)state;
    uint8_t a[16];
    bool v4 = false;
    addr("192.0.2.7", a, &v4);
    assert_true(v4);
    assert_memory_equal(a, MAPPED_PREFIX, 12);
    assert_memory_equal(a + 12, "\xc0\x00\x02\x07", 4);

    addr("2001:db8::1", a, &v4);
    assert_false(v4);
    assert_memory_equal(a, "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01", 16);

    /* IPv6 text of an IPv4-mapped address: same bytes, but not "v4". */
    uint8_t b[16];
    addr("::ffff:192.0.2.7", b, &v4);
    assert_false(v4);
    addr("192.0.2.7", a, NULL);
    assert_memory_equal(a, b, 16);

    addr("::", a, NULL);
    assert_memory_equal(a, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16);
    addr("0.0.0.0", a, NULL);
    addr("255.255.255.255", a, NULL);
    addr("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255", a, NULL); /* 45 bytes, the longest */

    /* Only len bytes are read. */
    assert_true(gw_net_parse_addr("10.0.0.1:80", 8, a, &v4));
    assert_true(v4);
    assert_memory_equal(a + 12, "\x0a\x00\x00\x01", 4);
}

static void test_parse_addr_invalid(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "256.0.0.1",
        "1.2.3",
        "1.2.3.4.5",
        "01.2.3.4x",
        " 1.2.3.4",
        "1.2.3.4 ",
        "[::1]",
        "::1::2",
        "2001:db8::g",
        "12345::",
        "localhost",
        "example.com",
        "1.2.3.4/24",
        "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255x", /* longer than any literal */
    };
    uint8_t a[16];
    for (size_t i = 0; i < GW_ARRAY_LEN(bad); i++)
        assert_false(gw_net_parse_addr(bad[i], strlen(bad[i]), a, NULL));
}

static void test_addr_map_and_text(void **state)
{
    (void)state;
    uint8_t a[16];
    char text[INET6_ADDRSTRLEN];
    struct in_addr v4;
    assert_int_equal(inet_pton(AF_INET, "198.51.100.9", &v4), 1);
    gw_net_addr_map(AF_INET, &v4, a);
    assert_memory_equal(a, MAPPED_PREFIX, 12);
    gw_net_addr_text(a, text, sizeof(text));
    assert_string_equal(text, "198.51.100.9");

    struct in6_addr v6;
    assert_int_equal(inet_pton(AF_INET6, "2001:DB8:0:0::10", &v6), 1);
    gw_net_addr_map(AF_INET6, &v6, a);
    assert_memory_equal(a, &v6, 16);
    gw_net_addr_text(a, text, sizeof(text));
    assert_string_equal(text, "2001:db8::10"); /* canonical lower-case form */

    gw_net_addr_map(AF_UNIX, &v6, a);
    assert_memory_equal(a, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16);

    /* Socket addresses of both families; the mapped form is shown as IPv4. */
    struct sockaddr_storage ss = {0};
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    in6->sin6_family = AF_INET6;
    assert_int_equal(inet_pton(AF_INET6, "::ffff:10.1.2.3", &in6->sin6_addr), 1);
    gw_net_format_addr(&ss, text, sizeof(text), a);
    assert_string_equal(text, "10.1.2.3");
    uint8_t want[16];
    addr("10.1.2.3", want, NULL);
    assert_memory_equal(a, want, 16);

    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
    in4->sin_family = AF_INET;
    in4->sin_addr = v4;
    gw_net_format_addr(&ss, text, sizeof(text), a);
    assert_string_equal(text, "198.51.100.9");
    addr("198.51.100.9", want, NULL);
    assert_memory_equal(a, want, 16);

    ss.ss_family = AF_UNIX;
    gw_net_format_addr(&ss, text, sizeof(text), a);
    assert_string_equal(text, "unknown");
}

/* host[:port] of s: expects success with the given host, v6 flag and port. */
static void hostport_ok(const char *s, const char *host, bool v6, int port)
{
    struct gw_net_hostport hp;
    char why[128] = "";
    assert_true(gw_net_parse_hostport(s, strlen(s), 8080, &hp, why, sizeof(why)));
    assert_int_equal(hp.host_len, strlen(host));
    assert_memory_equal(hp.host, host, hp.host_len);
    assert_int_equal(hp.v6, v6);
    assert_int_equal(hp.port, port);
}

/* Expects a refusal whose reason contains `reason`. */
static void hostport_bad(const char *s, const char *reason)
{
    struct gw_net_hostport hp;
    char why[128] = "";
    assert_false(gw_net_parse_hostport(s, strlen(s), 8080, &hp, why, sizeof(why)));
    if (strstr(why, reason) == NULL)
        fail_msg("%s: reason \"%s\" lacks \"%s\"", s, why, reason);
    /* why may be NULL. */
    assert_false(gw_net_parse_hostport(s, strlen(s), 8080, &hp, NULL, 0));
}

static void test_hostport(void **state)
{
    (void)state;
    hostport_ok("backend", "backend", false, 8080);
    hostport_ok("backend:1", "backend", false, 1);
    hostport_ok("backend:65535", "backend", false, 65535);
    hostport_ok("api.example.com.", "api.example.com.", false, 8080);
    hostport_ok("my_host-1", "my_host-1", false, 8080);
    hostport_ok("127.0.0.1:8001", "127.0.0.1", false, 8001);
    hostport_ok("[::1]", "::1", true, 8080);
    hostport_ok("[::1]:8001", "::1", true, 8001);
    hostport_ok("[2001:db8::ffff:1.2.3.4]:9", "2001:db8::ffff:1.2.3.4", true, 9);

    hostport_bad("", "missing host");
    hostport_bad(":80", "missing host");
    hostport_bad("host:", "missing port");
    hostport_bad("host:0", "port must be");
    hostport_bad("host:65536", "port must be");
    hostport_bad("host:+80", "port must be");
    hostport_bad("host:8 0", "port must be");
    hostport_bad("host:99999999999999999999", "port must be");
    hostport_bad("::1", "must be written in brackets");
    hostport_bad("[::1", "missing ']'");
    hostport_bad("[1.2.3.4]:80", "invalid IPv6 address in brackets");
    hostport_bad("[fe80::1%eth0]", "invalid IPv6 address in brackets");
    hostport_bad("[::1]x", "unexpected characters after ']'");
    hostport_bad("a..b", "empty label");
    hostport_bad(".a", "empty label");
    hostport_bad("ho st", "invalid character '?'");
    hostport_bad("h/st", "invalid character '/'");
    hostport_bad("h\x01st", "invalid character '?'");
    hostport_bad("300.1.1.1", "invalid IPv4 address");
    hostport_bad("1.2.3", "invalid IPv4 address");
    char longname[300];
    memset(longname, 'a', 254);
    longname[254] = '\0';
    hostport_bad(longname, "longer than 253");
    longname[253] = '\0';
    hostport_ok(longname, longname, false, 8080);
}

/* Parses url; expects the given host, port and base path. */
static void url_ok(const char *url, const char *host, int port, const char *path)
{
    struct gw_net_http_url u;
    char why[160] = "";
    if (!gw_net_parse_http_url(url, &u, why, sizeof(why)))
        fail_msg("%s refused: %s", url, why);
    assert_int_equal(u.hp.host_len, strlen(host));
    assert_memory_equal(u.hp.host, host, u.hp.host_len);
    assert_int_equal(u.hp.port, port);
    assert_int_equal(u.path_len, strlen(path));
    assert_memory_equal(u.path, path, u.path_len);
}

static void url_bad(const char *url, const char *reason)
{
    struct gw_net_http_url u;
    char why[160] = "";
    assert_false(gw_net_parse_http_url(url, &u, why, sizeof(why)));
    if (strstr(why, reason) == NULL)
        fail_msg("%s: reason \"%s\" lacks \"%s\"", url, why, reason);
}

static void test_http_url(void **state)
{
    (void)state;
    url_ok("http://backend", "backend", 80, "");
    url_ok("http://backend/", "backend", 80, "");
    url_ok("HTTP://backend:8001", "backend", 8001, "");
    url_ok("http://127.0.0.1:8001/api", "127.0.0.1", 8001, "/api");
    url_ok("http://[::1]:8001/api/v1//", "::1", 8001, "/api/v1");
    url_ok("http://[::1]/a%20b", "::1", 80, "/a%20b");

    url_bad("https://backend", "https is not supported");
    url_bad("ftp://backend", "unsupported scheme");
    url_bad("backend:8001", "not a URL");
    url_bad("http://user@backend", "user information");
    url_bad("http://backend/api?x=1", "query and fragment");
    url_bad("http://backend?x=1", "query and fragment");
    url_bad("http://backend/#top", "query and fragment");
    url_bad("http://backend/a b", "spaces and control characters");
    url_bad("http://", "missing host");
    url_bad("http://backend:0/", "port must be");
    url_bad("http://::1/", "must be written in brackets");

    struct gw_net_http_url u;
    assert_true(gw_net_parse_http_url("http://[::1]:8001/x", &u, NULL, 0));
    char auth[64];
    assert_int_equal(gw_net_format_hostport(&u.hp, auth, sizeof(auth)), 10);
    assert_string_equal(auth, "[::1]:8001");
    assert_true(gw_net_parse_http_url("http://backend/x", &u, NULL, 0));
    gw_net_format_hostport(&u.hp, auth, sizeof(auth));
    assert_string_equal(auth, "backend:80");
}

static struct gw_cidr cidr(const char *s)
{
    struct gw_cidr c;
    char why[96] = "";
    if (!gw_net_parse_cidr(s, strlen(s), &c, why, sizeof(why)))
        fail_msg("%s refused: %s", s, why);
    return c;
}

/* Does the CIDR text contain the address text? */
static bool contains(const char *c, const char *a)
{
    struct gw_cidr cc = cidr(c);
    uint8_t bin[16];
    addr(a, bin, NULL);
    return gw_net_cidr_contains(&cc, bin);
}

static void test_cidr_parse(void **state)
{
    (void)state;
    struct gw_cidr c = cidr("10.1.2.3/8");
    assert_int_equal(c.prefix, 96 + 8);
    uint8_t want[16];
    addr("10.0.0.0", want, NULL);
    assert_memory_equal(c.addr, want, 16); /* host bits cleared */

    c = cidr("192.0.2.7");
    assert_int_equal(c.prefix, 128);
    c = cidr("0.0.0.0/0");
    assert_int_equal(c.prefix, 96);
    c = cidr("2001:db8::1/128");
    assert_int_equal(c.prefix, 128);
    addr("2001:db8::1", want, NULL);
    assert_memory_equal(c.addr, want, 16);
    c = cidr("2001:db8:ffff::/33");
    assert_int_equal(c.prefix, 33);
    addr("2001:db8:8000::", want, NULL);
    assert_memory_equal(c.addr, want, 16);
    c = cidr("::/0");
    assert_int_equal(c.prefix, 0);

    static const struct {
        const char *s, *reason;
    } bad[] = {
        {"", "not an IPv4 or IPv6 address"},
        {"/8", "not an IPv4 or IPv6 address"},
        {"host/8", "not an IPv4 or IPv6 address"},
        {"10.0.0.0/33", "prefix length must be 0..32"},
        {"10.0.0.0/", "prefix length must be 0..32"},
        {"10.0.0.0/-1", "prefix length must be 0..32"},
        {"10.0.0.0/8/8", "prefix length must be 0..32"},
        {"::/129", "prefix length must be 0..128"},
        {"::/1x", "prefix length must be 0..128"},
    };
    for (size_t i = 0; i < GW_ARRAY_LEN(bad); i++) {
        char why[96] = "";
        assert_false(gw_net_parse_cidr(bad[i].s, strlen(bad[i].s), &c, why, sizeof(why)));
        assert_string_equal(why, bad[i].reason);
    }
}

static void test_cidr_contains(void **state)
{
    (void)state;
    assert_true(contains("10.0.0.0/8", "10.255.1.2"));
    assert_false(contains("10.0.0.0/8", "11.0.0.1"));
    assert_true(contains("192.168.1.0/25", "192.168.1.127"));
    assert_false(contains("192.168.1.0/25", "192.168.1.128"));
    assert_true(contains("192.0.2.7/32", "192.0.2.7"));
    assert_false(contains("192.0.2.7/32", "192.0.2.6"));

    /* IPv4-mapped matching: an IPv4 CIDR matches the ::ffff: form of its
     * addresses, never a native IPv6 address. */
    assert_true(contains("10.0.0.0/8", "::ffff:10.9.9.9"));
    assert_true(contains("::ffff:10.0.0.0/104", "10.1.1.1"));
    assert_true(contains("0.0.0.0/0", "203.0.113.1"));
    assert_false(contains("0.0.0.0/0", "2001:db8::1"));
    assert_false(contains("0.0.0.0/0", "::"));

    /* ::/0 contains everything, /128 exactly one address. */
    assert_true(contains("::/0", "2001:db8::1"));
    assert_true(contains("::/0", "127.0.0.1"));
    assert_true(contains("2001:db8::1/128", "2001:db8::1"));
    assert_false(contains("2001:db8::1/128", "2001:db8::2"));
    assert_true(contains("2001:db8::/32", "2001:db8:ffff::1"));
    assert_false(contains("2001:db8::/32", "2001:db9::1"));
    assert_true(contains("fe80::/10", "febf::1"));
    assert_false(contains("fe80::/10", "fec0::1"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_addr_valid),  cmocka_unit_test(test_parse_addr_invalid),
        cmocka_unit_test(test_addr_map_and_text), cmocka_unit_test(test_hostport),
        cmocka_unit_test(test_http_url),          cmocka_unit_test(test_cidr_parse),
        cmocka_unit_test(test_cidr_contains),
    };
    return cmocka_run_group_tests_name("net", tests, NULL, NULL);
}
