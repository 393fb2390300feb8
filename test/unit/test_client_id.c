/* Unit tests of client identity: peer, trusted X-Forwarded-For walk, API key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "gw/client_id.h"

#include <string.h>

static struct gw_slice S(const char *s) {
    return (struct gw_slice){s, strlen(s)};
}

static void
add_header(struct gw_http_head *h, const char *name, const char *value)
{
    h->headers[h->header_count].name = S(name);
    h->headers[h->header_count].value = S(value);
    h->header_count++;
}

static void trust(struct gw_config *cfg, const char *addr, int prefix)
{
    uint8_t bin[16];
    char text[GW_CLIENT_ADDR_MAX];
    assert_true(gw_client_parse_addr(addr, strlen(addr), bin, text));
    struct gw_cidr *c = &cfg->trusted[cfg->trusted_count++];
    memcpy(c->addr, bin, 16);
    c->prefix =
        (uint8_t)(memcmp(bin, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0 ? 96 + prefix : prefix);
}

static void peer(const char *text, uint8_t bin[16])
{
    char canon[GW_CLIENT_ADDR_MAX];
    assert_true(gw_client_parse_addr(text, strlen(text), bin, canon));
}

/* Identifies the client of a request with head `h` arriving from the peer
 * whose textual address is `peer_text`; fills `key` and `addr`. */
static void identify(const struct gw_config *cfg, const char *peer_text,
                     const struct gw_http_head *h, char key[GW_CLIENT_KEY_MAX],
                     char addr[GW_CLIENT_ADDR_MAX])
{
    uint8_t bin[16];
    peer(peer_text, bin);
    assert_true(gw_client_id(cfg, bin, peer_text, h, key, addr));
}

/* Identifies a request from peer_text carrying the one X-Forwarded-For
 * field xff; asserts the address, and the key when want_key != NULL. */
static void expect_xff(const struct gw_config *cfg, const char *peer_text, const char *xff,
                       const char *want_addr, const char *want_key)
{
    struct gw_http_head h = {0};
    add_header(&h, "X-Forwarded-For", xff);
    char key[GW_CLIENT_KEY_MAX], addr[GW_CLIENT_ADDR_MAX];
    identify(cfg, peer_text, &h, key, addr);
    assert_string_equal(addr, want_addr);
    if (want_key != NULL)
        assert_string_equal(key, want_key);
}

static void test_untrusted_peer_ignores_xff(void **state)
{
    struct gw_config cfg = {0};
    expect_xff(&cfg, "10.0.0.9", "1.2.3.4", "10.0.0.9", "ip:10.0.0.9");
    trust(&cfg, "127.0.0.1", 32); /* a different proxy is trusted, not this peer */
    expect_xff(&cfg, "10.0.0.9", "1.2.3.4", "10.0.0.9", NULL);
}

static void test_trusted_peer_rightmost_untrusted(void **state)
{
    struct gw_config cfg = {0};
    trust(&cfg, "10.0.0.0", 8);
    struct gw_http_head h = {0};
    add_header(&h, "X-Forwarded-For", "9.9.9.9, 5.6.7.8");
    add_header(&h, "Accept", "*/*");
    add_header(&h, "x-forwarded-for", "10.1.1.1 , 10.2.2.2");
    char key[GW_CLIENT_KEY_MAX], addr[GW_CLIENT_ADDR_MAX];
    identify(&cfg, "10.0.0.9", &h, key, addr);
    assert_string_equal(addr, "5.6.7.8"); /* spoofed 9.9.9.9 on the left is ignored */
    assert_string_equal(key, "ip:5.6.7.8");
}

static void test_all_trusted_takes_leftmost(void **state)
{
    struct gw_config cfg = {0};
    trust(&cfg, "10.0.0.0", 8);
    expect_xff(&cfg, "10.0.0.9", "10.3.3.3, 10.2.2.2", "10.3.3.3", NULL);
}

static void test_malformed_stops_walk(void **state)
{
    struct gw_config cfg = {0};
    trust(&cfg, "10.0.0.0", 8);
    expect_xff(&cfg, "10.0.0.9", "1.1.1.1, garbage, 10.4.4.4", "10.4.4.4", NULL);
    /* a malformed rightmost entry leaves the peer itself */
    expect_xff(&cfg, "10.0.0.9", "1.1.1.1, not-an-ip", "10.0.0.9", NULL);
}

static void test_ipv6(void **state)
{
    struct gw_config cfg = {0};
    trust(&cfg, "fd00::", 8);
    expect_xff(&cfg, "fd00::1", "2001:db8::1:2:3:4, [fd00::7]", "2001:db8::1:2:3:4",
               "ip:2001:db8::1:2:3:4");
}

static void test_api_key_hashed(void **state)
{
    struct gw_config cfg = {0};
    cfg.rate_limit_key_header = "X-API-Key";
    struct gw_http_head h = {0};
    add_header(&h, "x-api-key", "abc");
    char key[GW_CLIENT_KEY_MAX], addr[GW_CLIENT_ADDR_MAX];
    identify(&cfg, "127.0.0.1", &h, key, addr);
    /* SHA-256("abc") */
    assert_string_equal(key, "k:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_string_equal(addr, "127.0.0.1");
    struct gw_http_head empty = {0};
    add_header(&empty, "X-API-Key", "");
    identify(&cfg, "127.0.0.1", &empty, key, addr);
    assert_string_equal(key, "ip:127.0.0.1"); /* empty header falls back to the address */
}

/* Two lines of the key header make the identity ambiguous (issue 18: the
 * first line used to win, so a client could pick its budget): refused. */
static void test_api_key_repeated(void **state)
{
    struct gw_config cfg = {0};
    cfg.rate_limit_key_header = "X-API-Key";
    struct gw_http_head h = {0};
    add_header(&h, "X-API-Key", "gold");
    add_header(&h, "Accept", "*/*");
    add_header(&h, "x-api-key", "silver");
    uint8_t bin[16];
    peer("127.0.0.1", bin);
    char key[GW_CLIENT_KEY_MAX], addr[GW_CLIENT_ADDR_MAX];
    assert_false(gw_client_id(&cfg, bin, "127.0.0.1", &h, key, addr));
    assert_string_equal(key, "ip:127.0.0.1");
    /* Without a header key, repeats of some header do not matter. */
    cfg.rate_limit_key_header = NULL;
    assert_true(gw_client_id(&cfg, bin, "127.0.0.1", &h, key, addr));
}

/* Several XFF fields are one list; the rightmost untrusted address may sit
 * in an earlier field; an IPv4-mapped IPv6 entry is the IPv4 client. */
static void test_fields_form_one_list(void **state)
{
    struct gw_config cfg = {0};
    trust(&cfg, "10.0.0.0", 8);
    trust(&cfg, "fd00::", 8);
    struct gw_http_head h = {0};
    add_header(&h, "X-Forwarded-For", "6.6.6.6, ::ffff:203.0.113.5");
    add_header(&h, "X-Forwarded-For", "fd00::9");
    add_header(&h, "X-Forwarded-For", "10.9.9.9,10.8.8.8");
    char key[GW_CLIENT_KEY_MAX], addr[GW_CLIENT_ADDR_MAX];
    identify(&cfg, "10.0.0.1", &h, key, addr);
    assert_string_equal(addr, "203.0.113.5");
    assert_string_equal(key, "ip:203.0.113.5");
    /* a port or an empty element is malformed: the walk stops before it */
    expect_xff(&cfg, "10.0.0.1", "7.7.7.7, 203.0.113.5:443, 10.1.1.1", "10.1.1.1", NULL);
    expect_xff(&cfg, "10.0.0.1", "7.7.7.7,,10.1.1.2", "10.1.1.2", NULL);
}

/* A header packed with trusted hops is walked in one pass: 200 requests
 * with ~1,800 hops each stay far below what a quadratic walk costs. */
static void test_long_trusted_chain_is_linear(void **state)
{
    struct gw_config cfg = {0};
    trust(&cfg, "10.0.0.0", 8);
    static char big[16384];
    size_t n = 0;
    while (n + 10 < sizeof(big)) {
        memcpy(big + n, "10.0.0.1, ", 10);
        n += 10;
    }
    memcpy(big + n - 2, "\0", 1); /* drop the final ", " */
    struct gw_http_head h = {0};
    add_header(&h, "X-Forwarded-For", big);
    uint8_t bin[16];
    peer("10.0.0.2", bin);
    char key[GW_CLIENT_KEY_MAX], addr[GW_CLIENT_ADDR_MAX];
    uint64_t t0 = gw_now_us();
    for (int i = 0; i < 200; i++)
        identify(&cfg, "10.0.0.2", &h, key, addr);
    uint64_t took_ms = (gw_now_us() - t0) / 1000;
    assert_string_equal(addr, "10.0.0.1"); /* all trusted: the leftmost */
    if (took_ms > 1000)
        fail_msg("200 walks of %zu bytes took %llu ms", n, (unsigned long long)took_ms);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_untrusted_peer_ignores_xff),
        cmocka_unit_test(test_trusted_peer_rightmost_untrusted),
        cmocka_unit_test(test_all_trusted_takes_leftmost),
        cmocka_unit_test(test_malformed_stops_walk),
        cmocka_unit_test(test_ipv6),
        cmocka_unit_test(test_api_key_hashed),
        cmocka_unit_test(test_api_key_repeated),
        cmocka_unit_test(test_fields_form_one_list),
        cmocka_unit_test(test_long_trusted_chain_is_linear),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
