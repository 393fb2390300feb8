/*
 * The rules file (SPEC.md §10): one validator over a jansson tree (read
 * from JSON, or from YAML by rules_yaml.c), which fills the model of
 * rules.h with every default, collects every error with its place, then
 * writes the normalised JSON the version is the SHA-256 of. The matcher is
 * built by rules_match.c.
 */
#include "gw/rules.h"
#include "gw/path.h"
#include "rules_int.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* One validation: where errors go and what the environment defaults are. */
struct vctx {
    FILE *err;                     /* may be NULL */
    const char *prefix;            /* before every error line, may be NULL */
    int errors;                    /* lines reported */
    bool oom;                      /* an allocation failed */
    enum gw_rl_algorithm def_algo; /* RATE_LIMIT_ALGORITHM */
    const char *def_key;           /* RATE_LIMIT_KEY */
};

#define BUCKET_SPAN_MAX_US (100.0 * 366 * 86400 * 1e6) /* B x T of a token bucket */
#define PLACE_MAX          256 /* bytes of a place ("limits[3].rates[0].window") */

static void at(char *out, const char *fmt, ...) GW_PRINTF(2, 3);

/* Writes a place (PLACE_MAX bytes, truncated). */
static void at(char *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, PLACE_MAX, fmt, ap);
    va_end(ap);
}

static void report(struct vctx *c, const char *place, const json_t *value, const char *fmt, ...)
    GW_PRINTF(4, 5);

/* "<prefix><place>: <value>: <reason>" with the value as compact JSON,
 * cut to 80 bytes so a huge value stays one readable line. */
static void report(struct vctx *c, const char *place, const json_t *value, const char *fmt, ...)
{
    c->errors++;
    if (c->err == NULL)
        return;
    char reason[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    /* ASCII only, so that cutting it never splits a UTF-8 sequence. */
    char *v = value ? json_dumps(value, JSON_ENCODE_ANY | JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    if (v != NULL && strlen(v) > 80)
        strcpy(v + 77, "...");
    fprintf(c->err, "%s%s%s%s: %s\n", c->prefix ? c->prefix : "", place, v ? ": " : "", v ? v : "",
            reason);
    free(v);
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "a list";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

#define KEY_TEXT_MAX 68 /* a member name in a place: 64 bytes and "..." */

/* A member name as a place shows it: control bytes as '?' (an error stays
 * one line), cut to 64 bytes. Returns out. */
static const char *key_text(const char *k, char out[KEY_TEXT_MAX])
{
    size_t i = 0;
    for (; k[i] != '\0' && i < 64; i++)
        out[i] = (unsigned char)k[i] < 0x20 || k[i] == 0x7f ? '?' : k[i];
    strcpy(out + i, k[i] != '\0' ? "..." : "");
    return out;
}

/* Reports every member of obj not in allowed (NULL-terminated). */
static void check_fields(struct vctx *c, const char *place, json_t *obj, const char *const *allowed)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        bool known = false;
        for (const char *const *a = allowed; *a != NULL && !known; a++)
            known = strcmp(k, *a) == 0;
        if (!known) {
            char p[PLACE_MAX];
            char kt[KEY_TEXT_MAX];
            at(p, "%s%s%s", place, place[0] ? "." : "", key_text(k, kt));
            report(c, p, NULL, "unknown field");
        }
    }
}

/* True when v is an object with only the given fields (unknown ones are
 * reported, and do not stop the caller); false, reported, otherwise. */
static bool object_with(struct vctx *c, const char *place, json_t *v, const char *const *fields)
{
    if (!json_is_object(v)) {
        report(c, place, v, "must be an object (not %s)", type_name(v));
        return false;
    }
    check_fields(c, place, v, fields);
    return true;
}

static char *xstrdup(struct vctx *c, const char *s)
{
    char *d = strdup(s);
    if (d == NULL)
        c->oom = true;
    return d;
}

/* RFC 9110 §5.6.2 tchar. */
static bool is_tchar(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

static bool is_token(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!is_tchar(s[i]))
            return false;
    return true;
}

static char *lower_dup(struct vctx *c, const char *s)
{
    char *d = xstrdup(c, s);
    for (char *p = d; p != NULL && *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p + 32);
    return d;
}

/* [A-Za-z0-9_.-]{1,64} */
static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > GW_RULES_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '.' || ch == '-'))
            return false;
    }
    return true;
}

/* A string member that must be a name; NULL (reported) when it is not. */
static const char *get_name(struct vctx *c, const char *place, json_t *v)
{
    if (!json_is_string(v)) {
        report(c, place, v, "must be a string");
        return NULL;
    }
    const char *s = json_string_value(v);
    if (strlen(s) != json_string_length(v) || !valid_name(s)) {
        report(c, place, v, "must be 1 to 64 of A-Z a-z 0-9 _ . -");
        return NULL;
    }
    return s;
}

static const char *const algo_names[] = {"fixed_window", "sliding_window", "token_bucket", "gcra"};

const char *gw_rules_algorithm_name(enum gw_rl_algorithm a)
{
    if (a == GW_RL_GCRA)
        a = GW_RL_TOKEN_BUCKET;
    return (unsigned)a < GW_ARRAY_LEN(algo_names) ? algo_names[a] : "fixed_window";
}

/* ---- durations ---------------------------------------------------------- */

/* A duration: an integer of seconds, or a string "<number><unit>" with
 * unit ms, s, m, h or d and a number of digits with an optional fraction,
 * to a whole number of ms. Returns true with *ms set, or false with why. */
static bool parse_duration(const json_t *v, int64_t *ms, const char **why)
{
    if (json_is_integer(v)) {
        json_int_t s = json_integer_value(v);
        if (s < 0 || s > GW_RULES_WINDOW_MAX_MS / 1000) {
            *why = "out of range (366d at most)";
            return false;
        }
        *ms = (int64_t)s * 1000;
        return true;
    }
    *why = "must be an integer of seconds or a number with ms, s, m, h or d (e.g. \"500ms\", "
           "\"1m\")";
    if (!json_is_string(v))
        return false;
    const char *s = json_string_value(v);
    size_t n = json_string_length(v), i = 0;
    int64_t whole = 0, frac = 0, scale = 1;
    size_t digits = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9') {
        if (++digits > 12)
            return false;
        whole = whole * 10 + (s[i++] - '0');
    }
    if (i < n && s[i] == '.') {
        i++;
        size_t fd = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            if (++fd > 6)
                return false;
            frac = frac * 10 + (s[i++] - '0');
            scale *= 10;
        }
        if (fd == 0)
            return false;
    }
    if (digits == 0)
        return false;
    const char *u = s + i;
    size_t ul = n - i;
    int64_t unit;
    if (ul == 2 && memcmp(u, "ms", 2) == 0)
        unit = 1;
    else if (ul == 1 && u[0] == 's')
        unit = 1000;
    else if (ul == 1 && u[0] == 'm')
        unit = 60000;
    else if (ul == 1 && u[0] == 'h')
        unit = 3600000;
    else if (ul == 1 && u[0] == 'd')
        unit = 86400000;
    else
        return false;
    if (whole > GW_RULES_WINDOW_MAX_MS / unit) {
        *why = "out of range (366d at most)";
        return false;
    }
    if ((frac * unit) % scale != 0) {
        *why = "must be a whole number of milliseconds";
        return false;
    }
    *ms = whole * unit + frac * unit / scale;
    if (*ms > GW_RULES_WINDOW_MAX_MS) {
        *why = "out of range (366d at most)";
        return false;
    }
    return true;
}

/* Text of ms in its largest exact unit: "1m", "90s", "1500ms" ("0s" for 0):
 * the one spelling of a duration in the normal form. */
static void duration_text(int64_t ms, char *out, size_t cap)
{
    static const struct {
        int64_t ms;
        const char *unit;
    } units[] = {{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}};
    if (ms == 0) {
        snprintf(out, cap, "0s");
        return;
    }
    for (size_t i = 0; i < GW_ARRAY_LEN(units); i++) {
        if (ms % units[i].ms == 0) {
            snprintf(out, cap, "%" PRId64 "%s", ms / units[i].ms, units[i].unit);
            return;
        }
    }
    snprintf(out, cap, "%" PRId64 "ms", ms);
}

/* ---- keys --------------------------------------------------------------- */

/* One key part: "ip", "global" or "header:<Name>" (kind case-insensitive). */
static bool parse_key_part(struct vctx *c, const char *s, struct gw_rules_key *k, const char **why)
{
    k->header = NULL;
    if (strcasecmp(s, "ip") == 0) {
        k->kind = GW_RULES_KEY_IP;
        return true;
    }
    if (strcasecmp(s, "global") == 0) {
        k->kind = GW_RULES_KEY_GLOBAL;
        return true;
    }
    if (strncasecmp(s, "header:", 7) == 0 && is_token(s + 7, 256)) {
        k->kind = GW_RULES_KEY_HEADER;
        k->header = lower_dup(c, s + 7);
        return true;
    }
    *why = "must be ip, global or header:<Name> (Name an HTTP token)";
    return false;
}

static bool same_key(const struct gw_rules_key *a, const struct gw_rules_key *b)
{
    if (a->kind != b->kind)
        return false;
    return a->kind != GW_RULES_KEY_HEADER || strcmp(a->header, b->header) == 0;
}

static void parse_key(struct vctx *c, const char *place, json_t *v, struct gw_rules_limit *l)
{
    char p[PLACE_MAX];
    const char *why = NULL;
    json_t *list = v;
    if (json_is_string(v)) {
        list = NULL;
    } else if (!json_is_array(v) || json_array_size(v) == 0 ||
               json_array_size(v) > GW_RULES_MAX_KEYS) {
        report(c, place, v, "must be a key (ip, global, header:<Name>) or a list of 1 to %d keys",
               GW_RULES_MAX_KEYS);
        return;
    }
    size_t n = list ? json_array_size(list) : 1;
    bool global = false;
    for (size_t i = 0; i < n; i++) {
        json_t *e = list ? json_array_get(list, i) : v;
        if (list)
            at(p, "%s[%zu]", place, i);
        else
            at(p, "%s", place);
        if (!json_is_string(e)) {
            report(c, p, e, "must be a string");
            continue;
        }
        struct gw_rules_key k;
        if (!parse_key_part(c, json_string_value(e), &k, &why)) {
            report(c, p, e, "%s", why);
            continue;
        }
        bool dup = false;
        for (size_t j = 0; j < l->key_count && !dup; j++)
            dup = same_key(&l->keys[j], &k);
        if (dup) {
            free(k.header);
            report(c, p, e, "repeats an earlier part of the key");
            continue;
        }
        global |= k.kind == GW_RULES_KEY_GLOBAL;
        l->keys[l->key_count++] = k;
    }
    if (global && l->key_count > 1)
        report(c, place, v, "global is one bucket for every client: it cannot be combined");
}

/* ---- match -------------------------------------------------------------- */

/* HTTP method tokens by llhttp_method_t (RTSP's are never parsed). */
static const char *const method_names[64] = {
#define GW_METHOD_NAME(num, name, string) [num] = #string,
    HTTP_METHOD_MAP(GW_METHOD_NAME)
#undef GW_METHOD_NAME
};

/* llhttp_method_t of an exact method token, or -1. */
static int method_number(const char *s)
{
    for (int m = 0; m < 64; m++)
        if (method_names[m] != NULL && strcmp(method_names[m], s) == 0)
            return m;
    return -1;
}

static void parse_methods(struct vctx *c, const char *place, json_t *v, struct gw_rules_limit *l)
{
    if (!json_is_array(v) || json_array_size(v) == 0) {
        report(c, place, v, "must be a non-empty list of methods");
        return;
    }
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e)
    {
        char p[PLACE_MAX];
        at(p, "%s[%zu]", place, i);
        int m = json_is_string(e) ? method_number(json_string_value(e)) : -1;
        if (m < 0) {
            report(c, p, e, "not an HTTP method (methods are upper case, e.g. \"POST\")");
            continue;
        }
        l->methods |= UINT64_C(1) << m;
    }
}

/* A path or path_prefix: a string starting with '/', without '?' or '#',
 * stored in the same normal form request paths are matched in. */
static char *parse_path(struct vctx *c, const char *place, json_t *v)
{
    const char *s = json_string_value(v);
    if (!json_is_string(v) || s[0] != '/' || strlen(s) != json_string_length(v) ||
        strpbrk(s, "?# \t\r\n") != NULL || strlen(s) > 4096) {
        report(c, place, v, "must be a path: '/' then no spaces, '?' or '#' (4096 bytes at most)");
        return NULL;
    }
    size_t n = strlen(s);
    char *out = malloc(n + 1);
    if (out == NULL) {
        c->oom = true;
        return NULL;
    }
    out[gw_path_normalize(s, n, out)] = '\0';
    return out;
}

/* True when pattern s puts a quantifier right after another one ("a++",
 * "a*{9}") outside a bracket expression: POSIX leaves that undefined and
 * glibc's regcomp copies the operand's tree for each, so a few dozen of
 * them take gigabytes (found by fuzz_rules). */
static bool stacked_quantifier(const char *s)
{
    bool after_quant = false, in_bracket = false;
    for (const char *p = s; *p != '\0'; p++) {
        if (in_bracket) {
            if (*p == ']' && p[-1] != '[' && !(p[-1] == '^' && p[-2] == '['))
                in_bracket = false;
            continue;
        }
        if (*p == '\\' && p[1] != '\0') {
            p++;
            after_quant = false;
            continue;
        }
        if (*p == '[') {
            in_bracket = true;
            after_quant = false;
            continue;
        }
        bool quant = *p == '*' || *p == '+' || *p == '?' || *p == '{';
        if (quant && after_quant)
            return true;
        if (*p == '{')
            while (p[1] != '\0' && *p != '}')
                p++;
        after_quant = quant;
    }
    return false;
}

static void parse_regex(struct vctx *c, const char *place, json_t *v, struct gw_rules_limit *l)
{
    const char *s = json_string_value(v);
    if (!json_is_string(v) || strlen(s) != json_string_length(v) || s[0] == '\0' ||
        strlen(s) > 4096) {
        report(c, place, v, "must be a POSIX extended regular expression (4096 bytes at most)");
        return;
    }
    if (stacked_quantifier(s)) {
        report(c, place, v, "a quantifier must not follow another one (a++, a*{2})");
        return;
    }
    regex_t *re = malloc(sizeof(*re));
    if (re == NULL) {
        c->oom = true;
        return;
    }
    int rc = regcomp(re, s, REG_EXTENDED);
    if (rc != 0) {
        char msg[128];
        regerror(rc, re, msg, sizeof(msg));
        free(re);
        report(c, place, v, "not a POSIX extended regular expression: %s", msg);
        return;
    }
    l->regex = re;
    l->path = xstrdup(c, s);
}

static void parse_headers(struct vctx *c, const char *place, json_t *v, struct gw_rules_limit *l)
{
    if (!json_is_object(v) || json_object_size(v) == 0) {
        report(c, place, v, "must be a non-empty map of header name to value or \"*\"");
        return;
    }
    l->headers = calloc(json_object_size(v), sizeof(*l->headers));
    if (l->headers == NULL) {
        c->oom = true;
        return;
    }
    const char *k;
    json_t *e;
    json_object_foreach(v, k, e)
    {
        char p[PLACE_MAX];
        char kt[KEY_TEXT_MAX];
        at(p, "%s.%s", place, key_text(k, kt));
        if (!is_token(k, 256)) {
            report(c, p, NULL, "not an HTTP field name (RFC 9110 section 5.1)");
            continue;
        }
        const char *val = json_string_value(e);
        bool ok = json_is_string(e) && strlen(val) == json_string_length(e);
        for (const char *q = val; ok && *q; q++)
            ok = (unsigned char)*q >= 0x20 && *q != 0x7f;
        if (!ok) {
            report(c, p, e, "must be a string (the exact value, or \"*\" for any)");
            continue;
        }
        bool dup = false;
        for (size_t j = 0; j < l->header_count && !dup; j++)
            dup = strcasecmp(l->headers[j].name, k) == 0;
        if (dup) {
            report(c, p, NULL, "the same header twice (names are case-insensitive)");
            continue;
        }
        struct gw_rules_header *h = &l->headers[l->header_count++];
        h->name = lower_dup(c, k);
        h->value = strcmp(val, "*") == 0 ? NULL : xstrdup(c, val);
    }
}

static void parse_cidrs(struct vctx *c, const char *place, json_t *v, struct gw_rules_limit *l)
{
    if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > 4096) {
        report(c, place, v, "must be a list of 1 to 4096 CIDRs");
        return;
    }
    l->cidrs = calloc(json_array_size(v), sizeof(*l->cidrs));
    if (l->cidrs == NULL) {
        c->oom = true;
        return;
    }
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e)
    {
        char p[PLACE_MAX], why[96];
        at(p, "%s[%zu]", place, i);
        if (!json_is_string(e)) {
            report(c, p, e, "must be a string");
            continue;
        }
        if (!gw_net_parse_cidr(json_string_value(e), json_string_length(e),
                               &l->cidrs[l->cidr_count], why, sizeof(why))) {
            report(c, p, e, "%s", why);
            continue;
        }
        l->cidr_count++;
    }
}

static void parse_match(struct vctx *c, const char *place, json_t *v, struct gw_rules_limit *l)
{
    static const char *const fields[] = {"methods", "path",         "path_prefix", "path_regex",
                                         "headers", "client_cidrs", NULL};
    if (!object_with(c, place, v, fields))
        return;
    char p[PLACE_MAX];
    json_t *e;
    if ((e = json_object_get(v, "methods")) != NULL) {
        at(p, "%s.methods", place);
        parse_methods(c, p, e, l);
    }
    int paths = 0;
    static const char *const path_fields[] = {"path", "path_prefix", "path_regex"};
    for (int k = 0; k < 3; k++) {
        if ((e = json_object_get(v, path_fields[k])) == NULL)
            continue;
        at(p, "%s.%s", place, path_fields[k]);
        if (++paths > 1) {
            report(c, p, e, "only one of path, path_prefix and path_regex may be given");
            continue;
        }
        l->path_kind = (enum gw_rules_path_kind)(GW_RULES_PATH_EXACT + k);
        if (k < 2)
            l->path = parse_path(c, p, e);
        else
            parse_regex(c, p, e, l);
    }
    if ((e = json_object_get(v, "headers")) != NULL) {
        at(p, "%s.headers", place);
        parse_headers(c, p, e, l);
    }
    if ((e = json_object_get(v, "client_cidrs")) != NULL) {
        at(p, "%s.client_cidrs", place);
        parse_cidrs(c, p, e, l);
    }
}

/* ---- rates -------------------------------------------------------------- */

static bool int_in(const json_t *v, int64_t lo, int64_t hi, int64_t *out)
{
    if (!json_is_integer(v))
        return false;
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return false;
    *out = (int64_t)x;
    return true;
}

static void parse_rate(struct vctx *c, const char *place, json_t *v, struct gw_rules_rate *r,
                       const char **name_given)
{
    static const char *const fields[] = {"requests", "window", "algorithm", "burst",
                                         "delay",    "name",   NULL};
    *name_given = NULL;
    if (!object_with(c, place, v, fields))
        return;
    char p[PLACE_MAX];
    json_t *e;
    const char *why;

    r->algorithm = c->def_algo;
    if ((e = json_object_get(v, "algorithm")) != NULL) {
        at(p, "%s.algorithm", place);
        int a = -1;
        for (size_t i = 0; json_is_string(e) && i < GW_ARRAY_LEN(algo_names); i++)
            if (strcmp(json_string_value(e), algo_names[i]) == 0)
                a = (int)i;
        if (a < 0)
            report(c, p, e, "must be fixed_window, sliding_window, token_bucket or gcra");
        else
            r->algorithm = (enum gw_rl_algorithm)a;
    }
    if (r->algorithm == GW_RL_GCRA)
        r->algorithm = GW_RL_TOKEN_BUCKET;
    bool bucket = r->algorithm == GW_RL_TOKEN_BUCKET;

    at(p, "%s.requests", place);
    if ((e = json_object_get(v, "requests")) == NULL)
        report(c, p, NULL, "missing");
    else if (!int_in(e, 1, 1000000000, &r->requests))
        report(c, p, e, "must be an integer from 1 to 1000000000");

    at(p, "%s.window", place);
    if ((e = json_object_get(v, "window")) == NULL) {
        report(c, p, NULL, "missing");
    } else if (!parse_duration(e, &r->window_ms, &why)) {
        report(c, p, e, "%s", why);
    } else if (!bucket && r->window_ms < 1000) {
        report(c, p, e, "must be at least 1 s");
        r->window_ms = 0;
    } else if (r->window_ms < 1) {
        report(c, p, e, "must be more than 0");
    } else if (bucket && r->requests > 0 && r->window_ms * 1000 / r->requests < 1) {
        report(c, p, e, "too short for %" PRId64 " requests (one token per microsecond at most)",
               r->requests);
    }

    at(p, "%s.burst", place);
    if ((e = json_object_get(v, "burst")) != NULL) {
        if (!bucket)
            report(c, p, e, "only for token_bucket (gcra)");
        else if (!int_in(e, 1, 1000000000, &r->burst))
            report(c, p, e, "must be an integer from 1 to 1000000000");
        else if (r->requests > 0 && r->window_ms > 0 &&
                 (double)r->burst * (double)(r->window_ms * 1000 / r->requests) >
                     BUCKET_SPAN_MAX_US)
            /* The store keeps bucket times in µs, exact below 2^53 (Redis's
             * Lua numbers are doubles): a bucket that takes longer than a
             * century to fill is refused. */
            report(c, p, e, "burst x window / requests must be at most 100 years");
    } else if (bucket) {
        r->burst = r->requests;
    }

    at(p, "%s.delay", place);
    if ((e = json_object_get(v, "delay")) != NULL) {
        if (!bucket)
            report(c, p, e, "only for token_bucket (gcra)");
        else if (!parse_duration(e, &r->delay_ms, &why))
            report(c, p, e, "%s", why);
        else if (r->delay_ms > 3600000)
            report(c, p, e, "must be at most 1h");
    }

    if ((e = json_object_get(v, "name")) != NULL) {
        at(p, "%s.name", place);
        *name_given = get_name(c, p, e);
    }
}

/* ---- limits ------------------------------------------------------------- */

static void parse_limit(struct vctx *c, const char *place, json_t *v, struct gw_rules_limit *l)
{
    static const char *const fields[] = {"name", "match", "key", "rates", "mode", "action", NULL};
    if (!object_with(c, place, v, fields))
        return;
    char p[PLACE_MAX];
    json_t *e;

    at(p, "%s.name", place);
    if ((e = json_object_get(v, "name")) == NULL) {
        report(c, p, NULL, "missing");
    } else {
        const char *n = get_name(c, p, e);
        if (n != NULL)
            l->name = xstrdup(c, n);
    }

    if ((e = json_object_get(v, "action")) != NULL) {
        at(p, "%s.action", place);
        if (json_is_string(e) && strcmp(json_string_value(e), "allow") == 0)
            l->allow = true;
        else
            report(c, p, e, "must be allow (or left out)");
    }

    if ((e = json_object_get(v, "match")) != NULL) {
        at(p, "%s.match", place);
        parse_match(c, p, e, l);
    }

    if (l->allow) {
        static const char *const not_with_allow[] = {"key", "rates", "mode"};
        for (size_t i = 0; i < GW_ARRAY_LEN(not_with_allow); i++) {
            if ((e = json_object_get(v, not_with_allow[i])) == NULL)
                continue;
            at(p, "%s.%s", place, not_with_allow[i]);
            report(c, p, NULL, "not allowed with action: allow");
        }
        return;
    }

    if ((e = json_object_get(v, "mode")) != NULL) {
        at(p, "%s.mode", place);
        const char *m = json_string_value(e);
        if (m != NULL && strcmp(m, "shadow") == 0)
            l->shadow = true;
        else if (m == NULL || strcmp(m, "enforce") != 0)
            report(c, p, e, "must be enforce or shadow");
    }

    at(p, "%s.key", place);
    if ((e = json_object_get(v, "key")) != NULL) {
        parse_key(c, p, e, l);
    } else {
        json_t *def = json_string(c->def_key);
        if (def == NULL)
            c->oom = true;
        else
            parse_key(c, "RATE_LIMIT_KEY", def, l);
        json_decref(def);
    }

    at(p, "%s.rates", place);
    e = json_object_get(v, "rates");
    if (e == NULL) {
        report(c, p, NULL, "missing (a limit needs at least one rate, or action: allow)");
        return;
    }
    if (!json_is_array(e) || json_array_size(e) == 0 || json_array_size(e) > GW_RULES_MAX_RATES) {
        report(c, p, e, "must be a list of 1 to %d rates", GW_RULES_MAX_RATES);
        return;
    }
    l->rates = calloc(json_array_size(e), sizeof(*l->rates));
    if (l->rates == NULL) {
        c->oom = true;
        return;
    }
    l->rate_count = json_array_size(e);
    for (size_t i = 0; i < l->rate_count; i++) {
        char rp[PLACE_MAX];
        at(rp, "%s[%zu]", p, i);
        const char *given;
        struct gw_rules_rate *r = &l->rates[i];
        parse_rate(c, rp, json_array_get(e, i), r, &given);
        if (given != NULL) {
            r->name = xstrdup(c, given);
        } else if (l->name != NULL && l->rate_count == 1) {
            r->name = xstrdup(c, l->name);
        } else if (l->name != NULL && r->window_ms > 0) {
            char w[32], buf[GW_RULES_NAME_MAX + 40];
            duration_text(r->window_ms, w, sizeof(w));
            snprintf(buf, sizeof(buf), "%s-%s", l->name, w);
            if (!valid_name(buf)) {
                /* Every policy name goes into headers and store keys, and
                 * the normalised form must load again: too long a limit
                 * name needs its rates named. */
                char np[PLACE_MAX];
                at(np, "%s.name", rp);
                json_t *jv = json_string(buf);
                report(c, np, jv, "the derived policy name is longer than 64; name the rate");
                json_decref(jv);
                continue;
            }
            r->name = xstrdup(c, buf);
        }
    }
}

/* ---- duplicates --------------------------------------------------------- */

struct named {
    const char *name;
    size_t limit, rate; /* place: limits[limit] (.rates[rate] when rate != SIZE_MAX) */
};

static int named_cmp(const void *a, const void *b)
{
    const struct named *x = a, *y = b;
    int d = strcmp(x->name, y->name);
    if (d != 0)
        return d;
    if (x->limit != y->limit)
        return x->limit < y->limit ? -1 : 1;
    return x->rate < y->rate ? -1 : x->rate > y->rate;
}

static void place_of(const struct named *n, char *out)
{
    if (n->rate == SIZE_MAX)
        at(out, "limits[%zu].name", n->limit);
    else
        at(out, "limits[%zu].rates[%zu].name", n->limit, n->rate);
}

/* Reports each repeated name after its first use, in name order. With r
 * (policy names), a repeat between two limits of the same name is left out:
 * the repeated limit name is reported already. */
static void report_duplicates(struct vctx *c, struct named *v, size_t n, const char *what,
                              const struct gw_rules *r)
{
    qsort(v, n, sizeof(*v), named_cmp);
    for (size_t i = 1; i < n; i++) {
        size_t first = i - 1;
        for (; i < n && strcmp(v[i].name, v[first].name) == 0; i++) {
            const char *a = r ? r->limits[v[i].limit].name : NULL;
            const char *b = r ? r->limits[v[first].limit].name : NULL;
            if (a != NULL && b != NULL && v[i].limit != v[first].limit && strcmp(a, b) == 0)
                continue;
            char p[PLACE_MAX], fp[PLACE_MAX];
            place_of(&v[i], p);
            place_of(&v[first], fp);
            json_t *s = json_string(v[i].name);
            report(c, p, s, "duplicate %s name (first at %s)", what, fp);
            json_decref(s);
        }
    }
}

static void check_duplicates(struct vctx *c, struct gw_rules *r)
{
    size_t total = 0;
    for (size_t i = 0; i < r->limit_count; i++)
        total += r->limits[i].rate_count;
    struct named *v = malloc((GW_MAX(total, r->limit_count) + 1) * sizeof(*v));
    if (v == NULL) {
        c->oom = true;
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < r->limit_count; i++)
        if (r->limits[i].name != NULL)
            v[n++] = (struct named){r->limits[i].name, i, SIZE_MAX};
    report_duplicates(c, v, n, "limit", NULL);
    n = 0;
    for (size_t i = 0; i < r->limit_count; i++)
        for (size_t j = 0; j < r->limits[i].rate_count; j++)
            if (r->limits[i].rates[j].name != NULL)
                v[n++] = (struct named){r->limits[i].rates[j].name, i, j};
    report_duplicates(c, v, n, "policy (rate)", r);
    free(v);
}

/* ---- normalised form ---------------------------------------------------- */

static int set_new(json_t *obj, const char *k, json_t *v)
{
    return v == NULL ? -1 : json_object_set_new(obj, k, v);
}

static json_t *key_json(const struct gw_rules_key *k)
{
    if (k->kind == GW_RULES_KEY_IP)
        return json_string("ip");
    if (k->kind == GW_RULES_KEY_GLOBAL)
        return json_string("global");
    char *s = malloc(strlen(k->header) + 8);
    if (s == NULL)
        return NULL;
    strcpy(s, "header:");
    strcat(s, k->header);
    json_t *j = json_string(s);
    free(s);
    return j;
}

static json_t *cidr_json(const struct gw_cidr *cidr)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    char text[INET6_ADDRSTRLEN + 8];
    gw_net_addr_text(cidr->addr, text, INET6_ADDRSTRLEN);
    bool v4 = memcmp(cidr->addr, mapped, 12) == 0 && cidr->prefix >= 96;
    size_t n = strlen(text);
    snprintf(text + n, sizeof(text) - n, "/%u", v4 ? cidr->prefix - 96u : cidr->prefix);
    return json_string(text);
}

static json_t *match_json(const struct gw_rules_limit *l)
{
    static const char *const path_keys[] = {NULL, "path", "path_prefix", "path_regex"};
    json_t *m = json_object();
    int rc = m == NULL ? -1 : 0;
    if (rc == 0 && l->methods != 0) {
        json_t *a = json_array();
        rc = set_new(m, "methods", a);
        for (int i = 0; rc == 0 && i < 64; i++)
            if (l->methods & (UINT64_C(1) << i))
                rc = json_array_append_new(a, json_string(method_names[i]));
    }
    if (rc == 0 && l->path_kind != GW_RULES_PATH_ANY)
        rc = set_new(m, path_keys[l->path_kind], json_string(l->path));
    if (rc == 0 && l->header_count > 0) {
        json_t *h = json_object();
        rc = set_new(m, "headers", h);
        for (size_t i = 0; rc == 0 && i < l->header_count; i++)
            rc = set_new(h, l->headers[i].name,
                         json_string(l->headers[i].value ? l->headers[i].value : "*"));
    }
    if (rc == 0 && l->cidr_count > 0) {
        json_t *a = json_array();
        rc = set_new(m, "client_cidrs", a);
        for (size_t i = 0; rc == 0 && i < l->cidr_count; i++)
            rc = json_array_append_new(a, cidr_json(&l->cidrs[i]));
    }
    if (rc != 0) {
        json_decref(m);
        return NULL;
    }
    return m;
}

static json_t *limit_json(const struct gw_rules_limit *l)
{
    json_t *o = json_object();
    int rc = o == NULL ? -1 : 0;
    if (rc == 0)
        rc = set_new(o, "name", json_string(l->name));
    if (rc == 0)
        rc = set_new(o, "match", match_json(l));
    if (rc == 0 && l->allow)
        rc = set_new(o, "action", json_string("allow"));
    if (rc == 0 && !l->allow) {
        rc = set_new(o, "mode", json_string(l->shadow ? "shadow" : "enforce"));
        json_t *keys = json_array(), *rates = json_array();
        if (rc == 0)
            rc = set_new(o, "key", keys);
        else
            json_decref(keys);
        if (rc == 0)
            rc = set_new(o, "rates", rates);
        else
            json_decref(rates);
        for (size_t i = 0; rc == 0 && i < l->key_count; i++)
            rc = json_array_append_new(keys, key_json(&l->keys[i]));
        for (size_t i = 0; rc == 0 && i < l->rate_count; i++) {
            const struct gw_rules_rate *r = &l->rates[i];
            json_t *ro = json_object();
            rc = json_array_append_new(rates, ro);
            if (rc == 0)
                rc = set_new(ro, "name", json_string(r->name));
            if (rc == 0)
                rc = set_new(ro, "requests", json_integer(r->requests));
            char text[32];
            duration_text(r->window_ms, text, sizeof(text));
            if (rc == 0)
                rc = set_new(ro, "window", json_string(text));
            if (rc == 0)
                rc = set_new(ro, "algorithm", json_string(gw_rules_algorithm_name(r->algorithm)));
            if (rc == 0 && r->algorithm == GW_RL_TOKEN_BUCKET) {
                rc = set_new(ro, "burst", json_integer(r->burst));
                duration_text(r->delay_ms, text, sizeof(text));
                if (rc == 0)
                    rc = set_new(ro, "delay", json_string(text));
            }
        }
    }
    if (rc != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* Fills r->normalised and r->version. Returns 0 or -ENOMEM. */
static int normalise(struct gw_rules *r)
{
    json_t *root = json_object(), *limits = json_array();
    int rc = root == NULL || limits == NULL ? -1 : 0;
    if (rc == 0)
        rc = set_new(root, "version", json_integer(1));
    if (rc == 0) {
        rc = json_object_set(root, "limits", limits);
    }
    for (size_t i = 0; rc == 0 && i < r->limit_count; i++)
        rc = json_array_append_new(limits, limit_json(&r->limits[i]));
    if (rc == 0)
        r->normalised = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(limits);
    json_decref(root);
    if (r->normalised == NULL)
        return -ENOMEM;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(r->normalised, strlen(r->normalised), md, &mdlen, EVP_sha256(), NULL) != 1)
        return -ENOMEM;
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < GW_RULES_VERSION_LEN / 2; i++) {
        r->version[2 * i] = hex[md[i] >> 4];
        r->version[2 * i + 1] = hex[md[i] & 15];
    }
    r->version[GW_RULES_VERSION_LEN] = '\0';
    return 0;
}

/* ---- lifetime ----------------------------------------------------------- */

static void limit_free(struct gw_rules_limit *l)
{
    free(l->name);
    free(l->path);
    if (l->regex != NULL) {
        regfree(l->regex);
        free(l->regex);
    }
    for (size_t i = 0; i < l->header_count; i++) {
        free(l->headers[i].name);
        free(l->headers[i].value);
    }
    free(l->headers);
    free(l->cidrs);
    for (size_t i = 0; i < l->key_count; i++)
        free(l->keys[i].header);
    for (size_t i = 0; i < l->rate_count; i++)
        free(l->rates[i].name);
    free(l->rates);
    free(l->policy_items);
}

/* Renders each limit's RateLimit-Policy members (SPEC.md §10 "Headers";
 * draft-ietf-httpapi-ratelimit-headers-11: sf-string name, q and w in
 * whole seconds, rounded up) once per load. 0 or -ENOMEM. */
static int render_policy_items(struct gw_rules *r)
{
    for (size_t i = 0; i < r->limit_count; i++) {
        struct gw_rules_limit *l = &r->limits[i];
        size_t cap = 1 + l->rate_count * (GW_RULES_NAME_MAX + 64), n = 0;
        if ((l->policy_items = malloc(cap)) == NULL)
            return -ENOMEM;
        l->policy_items[0] = '\0';
        for (size_t k = 0; k < l->rate_count; k++) {
            const struct gw_rules_rate *rt = &l->rates[k];
            int m = snprintf(l->policy_items + n, cap - n, "%s\"%s\";q=%lld;w=%lld",
                             k > 0 ? ", " : "", rt->name, (long long)rt->requests,
                             (long long)((rt->window_ms + 999) / 1000));
            if (m < 0 || (size_t)m >= cap - n)
                return -ENOMEM; /* cannot happen: cap holds the longest member */
            n += (size_t)m;
        }
        l->policy_items_len = n;
    }
    return 0;
}

static void rules_free(struct gw_rules *r)
{
    if (r == NULL)
        return;
    gw_rules_index_destroy(r->index);
    for (size_t i = 0; i < r->limit_count; i++)
        limit_free(&r->limits[i]);
    free(r->limits);
    free(r->normalised);
    free(r);
}

struct gw_rules *gw_rules_get(struct gw_rules *r)
{
    __atomic_add_fetch(&r->refs, 1, __ATOMIC_RELAXED);
    return r;
}

void gw_rules_put(struct gw_rules *r)
{
    if (r != NULL && __atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL) == 0)
        rules_free(r);
}

/* Normal form, version and matcher of a model; frees r on failure. */
static struct gw_rules *finish(struct gw_rules *r)
{
    if (normalise(r) != 0 || gw_rules_index_create(r) != 0 || render_policy_items(r) != 0) {
        rules_free(r);
        return NULL;
    }
    r->refs = 1;
    return r;
}

/* ---- entry points ------------------------------------------------------- */

static int validate(json_t *root, const struct gw_config *cfg, struct gw_rules **out, FILE *err,
                    const char *prefix, int errors_so_far)
{
    struct vctx c = {.err = err,
                     .prefix = prefix,
                     .errors = errors_so_far,
                     .def_algo = cfg ? cfg->rate_limit_algorithm : GW_RL_FIXED_WINDOW,
                     .def_key = cfg && cfg->rate_limit_key ? cfg->rate_limit_key : "ip"};
    if (c.def_algo == GW_RL_GCRA)
        c.def_algo = GW_RL_TOKEN_BUCKET;
    struct gw_rules *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    r->source = GW_RULES_SOURCE_FILE;
    static const char *const fields[] = {"version", "limits", NULL};
    json_t *e;
    if (root == NULL) {
        /* the reader already reported */
    } else if (!json_is_object(root)) {
        report(&c, "(document)", NULL, "must be an object with version and limits (not %s)",
               type_name(root));
    } else {
        check_fields(&c, "", root, fields);
        e = json_object_get(root, "version");
        if (e == NULL)
            report(&c, "version", NULL, "missing (version: 1)");
        else if (!json_is_integer(e) || json_integer_value(e) != 1)
            report(&c, "version", e, "must be 1");
        e = json_object_get(root, "limits");
        if (e == NULL) {
            report(&c, "limits", NULL, "missing");
        } else if (!json_is_array(e) || json_array_size(e) > GW_RULES_MAX_LIMITS) {
            report(&c, "limits", json_is_array(e) ? NULL : e, "must be a list of at most %d limits",
                   GW_RULES_MAX_LIMITS);
        } else if (json_array_size(e) > 0) {
            r->limits = calloc(json_array_size(e), sizeof(*r->limits));
            if (r->limits == NULL)
                c.oom = true;
            else
                r->limit_count = json_array_size(e);
            for (size_t i = 0; i < r->limit_count; i++) {
                char p[32];
                at(p, "limits[%zu]", i);
                r->limits[i].index = i;
                parse_limit(&c, p, json_array_get(e, i), &r->limits[i]);
            }
            check_duplicates(&c, r);
        }
    }
    if (c.oom || c.errors > 0) {
        rules_free(r);
        *out = NULL;
        return c.oom ? -ENOMEM : c.errors;
    }
    *out = finish(r);
    return *out == NULL ? -ENOMEM : 0;
}

int gw_rules_parse(const char *text, size_t len, enum gw_rules_format fmt,
                   const struct gw_config *cfg, struct gw_rules **out, FILE *err,
                   const char *prefix)
{
    *out = NULL;
    char why[256];
    json_t *root;
    if (fmt == GW_RULES_YAML) {
        root = gw_rules_yaml_read(text, len, why, sizeof(why));
    } else {
        json_error_t je;
        root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
        if (root == NULL)
            snprintf(why, sizeof(why), "line %d, column %d: %s", je.line, je.column, je.text);
    }
    if (root == NULL) {
        if (err != NULL)
            fprintf(err, "%s%s\n", prefix ? prefix : "", why);
        return 1;
    }
    int rc = validate(root, cfg, out, err, prefix, 0);
    json_decref(root);
    return rc;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

int gw_rules_load_file(const char *path, const struct gw_config *cfg, struct gw_rules **out,
                       FILE *err, const char *prefix)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        if (err != NULL)
            fprintf(err, "%s%s: %s\n", prefix ? prefix : "", path, strerror(errno));
        return 1;
    }
    char *buf = malloc(GW_RULES_FILE_MAX + 1);
    if (buf == NULL) {
        fclose(f);
        return -ENOMEM;
    }
    errno = 0;
    size_t n = fread(buf, 1, GW_RULES_FILE_MAX + 1, f);
    int read_errno = ferror(f) ? (errno ? errno : EIO) : 0; /* EISDIR for a directory */
    fclose(f);
    if (read_errno != 0 || n > GW_RULES_FILE_MAX) {
        if (err != NULL)
            fprintf(err, "%s%s: %s\n", prefix ? prefix : "", path,
                    read_errno ? strerror(read_errno) : "larger than 4 MiB");
        free(buf);
        return 1;
    }
    enum gw_rules_format fmt =
        ends_with(path, ".yaml") || ends_with(path, ".yml") ? GW_RULES_YAML : GW_RULES_JSON;
    int rc = gw_rules_parse(buf, n, fmt, cfg, out, err, prefix);
    free(buf);
    return rc;
}

struct gw_rules *gw_rules_from_config(const struct gw_config *cfg)
{
    struct gw_rules *r = calloc(1, sizeof(*r));
    struct vctx c = {0};
    if (r == NULL)
        return NULL;
    r->source = GW_RULES_SOURCE_ENV;
    r->limits = calloc(1, sizeof(*r->limits));
    if (r->limits == NULL) {
        free(r);
        return NULL;
    }
    r->limit_count = 1;
    struct gw_rules_limit *l = &r->limits[0];
    l->name = xstrdup(&c, "default");
    const char *why;
    if (!parse_key_part(&c, cfg->rate_limit_key ? cfg->rate_limit_key : "ip", &l->keys[0], &why))
        l->keys[0] = (struct gw_rules_key){GW_RULES_KEY_IP, NULL};
    l->key_count = 1;
    l->rates = calloc(1, sizeof(*l->rates));
    if (l->rates != NULL) {
        l->rate_count = 1;
        struct gw_rules_rate *rt = &l->rates[0];
        rt->name = xstrdup(&c, "default");
        rt->requests = cfg->rate_limit_requests;
        rt->window_ms = (int64_t)cfg->rate_limit_window_s * 1000;
        rt->algorithm = cfg->rate_limit_algorithm == GW_RL_GCRA ? GW_RL_TOKEN_BUCKET
                                                                : cfg->rate_limit_algorithm;
        if (rt->algorithm == GW_RL_TOKEN_BUCKET)
            rt->burst = cfg->rate_limit_burst > 0 ? cfg->rate_limit_burst : rt->requests;
    }
    if (c.oom || l->rates == NULL) {
        rules_free(r);
        return NULL;
    }
    return finish(r);
}

int gw_rules_print_json(const struct gw_rules *r, FILE *out)
{
    json_t *tree = json_loads(r->normalised, 0, NULL);
    if (tree == NULL)
        return -ENOMEM;
    int rc = json_dumpf(tree, out, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(tree);
    if (rc != 0 || fputc('\n', out) == EOF)
        return -EIO;
    return 0;
}
