/*
 * The matcher compiled once per rules load (SPEC.md §10 match): per-method
 * bitsets of the limits a method admits, exact paths and path prefixes in
 * tables sorted by (length, bytes) searched by bisection (a path_regex
 * with a literal start, like "/files/[0-9]+", sits in the prefix table
 * under that start, so its regex only runs for paths that begin with it),
 * and a bitset of the limits with no table entry (no path condition, or a
 * regex without a literal start). A request
 * costs a few bisections and bitset ANDs; regexes, headers and CIDRs are
 * checked only for the candidates left. Immutable after build: readers
 * share it without locks.
 */
#include "rules_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define WORDS_MAX  (GW_RULES_MAX_LIMITS / 64)
#define ANY_METHOD 64 /* row of by_method for a method number outside 0..63 */

struct entry {
    const char *s;  /* normal-form path, owned by the limit */
    size_t len;     /* bytes */
    uint32_t limit; /* index into rules->limits */
};

struct gw_rules_index {
    size_t words;        /* 64-bit words of one bitset */
    uint64_t *by_method; /* (ANY_METHOD + 1) bitsets: limits admitting method m */
    uint64_t *untabled;  /* limits with no exact/prefix entry (checked every time) */
    uint64_t *allow;     /* limits with action: allow */
    struct entry *exact; /* path entries, sorted by (len, bytes) */
    size_t exact_count;
    struct entry *prefix; /* path_prefix entries, sorted by (len, bytes) */
    size_t prefix_count;
    size_t *prefix_lens; /* distinct prefix lengths, ascending */
    size_t prefix_len_count;
    char **owned; /* literal starts of regexes (prefix entries), one per limit or NULL */
    size_t owned_count;
};

/* The literal text every match of POSIX ERE pattern re must start with
 * (path_regex must match the whole path, so it is anchored at the start):
 * the bytes before the first special character, less the last one when a
 * quantifier follows it; nothing when the pattern has an alternation
 * anywhere. Returns its length (0: none); the text is re[0..len) (after a
 * leading '^', which *skip counts). */
static size_t regex_literal_start(const char *re, size_t *skip)
{
    *skip = re[0] == '^';
    if (strchr(re, '|') != NULL)
        return 0;
    const char *p = re + *skip;
    size_t n = 0;
    while (p[n] != '\0' && strchr(".[]()*+?{}|^$\\", p[n]) == NULL)
        n++;
    if (n > 0 && p[n] != '\0' && strchr("*?{+", p[n]) != NULL)
        n--; /* "ab*": the b may be absent */
    return n;
}

static int entry_cmp(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    int d = memcmp(x->s, y->s, x->len);
    if (d != 0)
        return d;
    return x->limit < y->limit ? -1 : x->limit > y->limit;
}

static void bit_set(uint64_t *set, size_t i)
{
    set[i / 64] |= UINT64_C(1) << (i % 64);
}

void gw_rules_index_destroy(struct gw_rules_index *ix)
{
    if (ix == NULL)
        return;
    free(ix->by_method);
    free(ix->untabled);
    free(ix->allow);
    free(ix->exact);
    free(ix->prefix);
    free(ix->prefix_lens);
    for (size_t i = 0; i < ix->owned_count; i++)
        free(ix->owned[i]);
    free(ix->owned);
    free(ix);
}

/* Puts regex limit l (index i) in the prefix table under its literal
 * start; false when it has none (or no memory: it is then checked on every
 * request, which is only slower). */
static bool add_regex_start(struct gw_rules_index *ix, const struct gw_rules_limit *l, size_t i)
{
    size_t skip = 0, len = regex_literal_start(l->path, &skip);
    if (len == 0)
        return false;
    char *lit = strndup(l->path + skip, len);
    if (lit == NULL)
        return false;
    ix->owned[ix->owned_count++] = lit;
    ix->prefix[ix->prefix_count++] = (struct entry){lit, len, (uint32_t)i};
    return true;
}

int gw_rules_index_create(struct gw_rules *r)
{
    struct gw_rules_index *ix = calloc(1, sizeof(*ix));
    if (ix == NULL)
        return -ENOMEM;
    size_t n = r->limit_count;
    ix->words = (n + 63) / 64;
    size_t w = ix->words ? ix->words : 1;
    ix->by_method = calloc((ANY_METHOD + 1) * w, sizeof(uint64_t));
    ix->untabled = calloc(w, sizeof(uint64_t));
    ix->allow = calloc(w, sizeof(uint64_t));
    ix->exact = calloc(n + 1, sizeof(*ix->exact));
    ix->prefix = calloc(n + 1, sizeof(*ix->prefix));
    ix->prefix_lens = calloc(n + 1, sizeof(size_t));
    ix->owned = calloc(n + 1, sizeof(char *));
    if (!ix->by_method || !ix->untabled || !ix->allow || !ix->exact || !ix->prefix ||
        !ix->prefix_lens || !ix->owned) {
        gw_rules_index_destroy(ix);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const struct gw_rules_limit *l = &r->limits[i];
        for (int m = 0; m <= ANY_METHOD; m++)
            if (l->methods == 0 || (m < 64 && (l->methods & (UINT64_C(1) << m))))
                bit_set(ix->by_method + (size_t)m * w, i);
        if (l->allow)
            bit_set(ix->allow, i);
        struct entry e = {l->path, l->path ? strlen(l->path) : 0, (uint32_t)i};
        if (l->path_kind == GW_RULES_PATH_EXACT)
            ix->exact[ix->exact_count++] = e;
        else if (l->path_kind == GW_RULES_PATH_PREFIX)
            ix->prefix[ix->prefix_count++] = e;
        else if (l->path_kind == GW_RULES_PATH_REGEX && add_regex_start(ix, l, i))
            ; /* a candidate only for paths starting with its literal text */
        else
            bit_set(ix->untabled, i);
    }
    qsort(ix->exact, ix->exact_count, sizeof(*ix->exact), entry_cmp);
    qsort(ix->prefix, ix->prefix_count, sizeof(*ix->prefix), entry_cmp);
    for (size_t i = 0; i < ix->prefix_count; i++)
        if (i == 0 || ix->prefix[i].len != ix->prefix[i - 1].len)
            ix->prefix_lens[ix->prefix_len_count++] = ix->prefix[i].len;
    r->index = ix;
    return 0;
}

/* Sets the bit of every entry of t equal to s[0..len). */
static void lookup(const struct entry *t, size_t count, const char *s, size_t len, uint64_t *cand)
{
    size_t lo = 0, hi = count;
    while (lo < hi) { /* first entry not below (len, s) */
        size_t mid = lo + (hi - lo) / 2;
        const struct entry *e = &t[mid];
        int d = e->len != len ? (e->len < len ? -1 : 1) : memcmp(e->s, s, len);
        if (d < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (; lo < count && t[lo].len == len && memcmp(t[lo].s, s, len) == 0; lo++)
        bit_set(cand, t[lo].limit);
}

static bool headers_hold(const struct gw_rules_limit *l, const struct gw_http_head *h)
{
    for (size_t i = 0; i < l->header_count; i++) {
        const struct gw_rules_header *c = &l->headers[i];
        bool found = false;
        for (size_t j = 0; h != NULL && j < h->header_count && !found; j++) {
            const struct gw_http_header *f = &h->headers[j];
            if (!gw_slice_eq_nocase(f->name, c->name))
                continue;
            found = c->value == NULL || (f->value.len == strlen(c->value) &&
                                         memcmp(f->value.ptr, c->value, f->value.len) == 0);
        }
        if (!found)
            return false;
    }
    return true;
}

static bool regex_holds(const regex_t *re, struct gw_slice path)
{
    regmatch_t m[1];
    m[0].rm_so = 0;
    m[0].rm_eo = (regoff_t)path.len;
    /* REG_STARTEND: the path is a slice, not a C string. POSIX picks the
     * leftmost-longest match, so a match of the whole path is found when
     * one exists. */
    if (regexec(re, path.ptr ? path.ptr : "", 1, m, REG_STARTEND) != 0)
        return false;
    return m[0].rm_so == 0 && (size_t)m[0].rm_eo == path.len;
}

/* The conditions the tables did not decide: regex, headers, CIDRs. */
static bool rest_holds(const struct gw_rules_limit *l, const struct gw_rules_request *req)
{
    if (l->path_kind == GW_RULES_PATH_REGEX && !regex_holds(l->regex, req->path))
        return false;
    if (l->header_count > 0 && !headers_hold(l, req->head))
        return false;
    if (l->cidr_count > 0) {
        bool in = false;
        for (size_t i = 0; i < l->cidr_count && !in; i++)
            in = req->client_addr != NULL && gw_net_cidr_contains(&l->cidrs[i], req->client_addr);
        if (!in)
            return false;
    }
    return true;
}

enum gw_rules_verdict gw_rules_match(const struct gw_rules *r, const struct gw_rules_request *req,
                                     const struct gw_rules_limit **out, size_t cap, size_t *count,
                                     const struct gw_rules_limit **allowed_by)
{
    const struct gw_rules_index *ix = r->index;
    size_t w = ix->words;
    *count = 0;
    if (allowed_by != NULL)
        *allowed_by = NULL;
    if (w == 0)
        return GW_RULES_NONE;
    uint64_t cand[WORDS_MAX];
    memcpy(cand, ix->untabled, w * sizeof(uint64_t));
    const char *p = req->path.ptr;
    size_t plen = req->path.len;
    if (ix->exact_count > 0)
        lookup(ix->exact, ix->exact_count, p, plen, cand);
    for (size_t i = 0; i < ix->prefix_len_count && ix->prefix_lens[i] <= plen; i++)
        lookup(ix->prefix, ix->prefix_count, p, ix->prefix_lens[i], cand);
    int m = req->method >= 0 && req->method < 64 ? req->method : ANY_METHOD;
    const uint64_t *admits = ix->by_method + (size_t)m * w;
    for (size_t i = 0; i < w; i++)
        cand[i] &= admits[i];

    /* An allow limit anywhere in the file wins over every other. */
    for (size_t i = 0; i < w; i++) {
        for (uint64_t bits = cand[i] & ix->allow[i]; bits != 0; bits &= bits - 1) {
            const struct gw_rules_limit *l = &r->limits[i * 64 + (size_t)__builtin_ctzll(bits)];
            if (rest_holds(l, req)) {
                if (allowed_by != NULL)
                    *allowed_by = l;
                return GW_RULES_ALLOW;
            }
        }
    }
    for (size_t i = 0; i < w; i++) {
        for (uint64_t bits = cand[i] & ~ix->allow[i]; bits != 0; bits &= bits - 1) {
            const struct gw_rules_limit *l = &r->limits[i * 64 + (size_t)__builtin_ctzll(bits)];
            if (*count < cap && rest_holds(l, req))
                out[(*count)++] = l;
        }
    }
    return *count > 0 ? GW_RULES_LIMITED : GW_RULES_NONE;
}
