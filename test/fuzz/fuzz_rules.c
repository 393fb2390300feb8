/*
 * libFuzzer target for the rules loader (src/rules.c, src/rules_yaml.c)
 * and its matcher (src/rules_match.c). First byte of each input: bit 0
 * picks YAML (1) or JSON (0); the rest is the document. Invariants: a
 * refused document reports at least one error line and yields no rules; an
 * accepted one has a 12-hex version, its normalised form loads again to
 * the same version, and the matcher answers requests made from the input
 * within its contract. gw_path_normalize is checked on the same bytes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw/path.h"
#include "gw/rules.h"

#include "fuzz_check.h"

static bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

/* A '%' not followed by two hex digits: kept as it is, so that it may form
 * a new escape with decoded digits after it ("%%34%31" gives "%41"). */
static bool bad_escape(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == '%' && (i + 2 >= n || !is_hex(s[i + 1]) || !is_hex(s[i + 2])))
            return true;
    return false;
}

/* Normal form: never longer than the input, and stable when applied again
 * (when every escape is well formed). */
static void check_normalize(const char *s, size_t n)
{
    char *a = malloc(n + 1), *b = malloc(n + 1);
    CHECK(a != NULL && b != NULL);
    size_t na = gw_path_normalize(s, n, a);
    CHECK(na <= (n ? n : 1));
    if (na > 0 && a[0] == '/' && !bad_escape(s, n)) {
        size_t nb = gw_path_normalize(a, na, b);
        CHECK(nb == na && memcmp(a, b, na) == 0);
    }
    free(a);
    free(b);
}

static void check_match(const struct gw_rules *r, const char *s, size_t n)
{
    static const char *const targets[] = {"/", "/login", "/api/v1/x", "//a/../login?q", "*"};
    const struct gw_rules_limit *out[GW_RULES_MAX_LIMITS], *allow;
    struct gw_http_head h;
    memset(&h, 0, sizeof(h));
    /* one header made from the input: "<first byte>: <rest>" */
    if (n > 1) {
        h.headers[0].name = (struct gw_slice){s, 1};
        h.headers[0].value = (struct gw_slice){s + 1, n - 1};
        h.header_count = 1;
    }
    uint8_t addr[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 20, 1, 2};
    for (size_t t = 0; t < sizeof(targets) / sizeof(targets[0]) + 1; t++) {
        const char *target = t < sizeof(targets) / sizeof(targets[0]) ? targets[t] : s;
        size_t tl = t < sizeof(targets) / sizeof(targets[0]) ? strlen(target) : n;
        char *path = malloc(tl + 1);
        CHECK(path != NULL);
        size_t pl = gw_path_normalize(target, tl, path);
        path[pl] = '\0'; /* as gw_rules_request asks */
        for (int method = 0; method < 70; method += 7) {
            struct gw_rules_request q = {method, {path, pl}, &h, addr};
            size_t count = 0;
            enum gw_rules_verdict v =
                gw_rules_match(r, &q, out, GW_RULES_MAX_LIMITS, &count, &allow);
            CHECK(count <= r->limit_count);
            CHECK((v == GW_RULES_ALLOW) == (allow != NULL));
            CHECK(v != GW_RULES_ALLOW || (count == 0 && allow->allow));
            CHECK((v == GW_RULES_LIMITED) == (count > 0));
            for (size_t i = 0; i < count; i++) {
                CHECK(!out[i]->allow && out[i]->rate_count > 0);
                CHECK(i == 0 || out[i]->index > out[i - 1]->index);
            }
        }
        free(path);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    enum gw_rules_format fmt = (data[0] & 1) ? GW_RULES_YAML : GW_RULES_JSON;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    check_normalize(s, n);

    char *errs = NULL;
    size_t errs_len = 0;
    FILE *err = open_memstream(&errs, &errs_len);
    CHECK(err != NULL);
    struct gw_rules *r = NULL;
    int rc = gw_rules_parse(s, n, fmt, NULL, &r, err, NULL);
    fclose(err);
    if (rc != 0) {
        CHECK(r == NULL);
        CHECK(rc > 0 && errs_len > 0 && errs[errs_len - 1] == '\n');
        size_t lines = 0;
        for (size_t i = 0; i < errs_len; i++)
            lines += errs[i] == '\n';
        CHECK(lines >= 1);
        free(errs);
        return 0;
    }
    free(errs);
    CHECK(r != NULL && strlen(r->version) == GW_RULES_VERSION_LEN);
    struct gw_rules *again = NULL;
    int rc2 = gw_rules_parse(r->normalised, strlen(r->normalised), GW_RULES_JSON, NULL, &again,
                             stderr, NULL);
    CHECK(rc2 == 0);
    CHECK(strcmp(again->version, r->version) == 0);
    CHECK(strcmp(again->normalised, r->normalised) == 0);
    gw_rules_put(again);
    check_match(r, s, n);
    gw_rules_put(gw_rules_get(r));
    gw_rules_put(r);
    return 0;
}
