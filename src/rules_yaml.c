/*
 * YAML rules files (SPEC.md §10): libyaml's event parser turned into the
 * jansson tree a JSON file gives, so one validator serves both formats.
 * Plain scalars are typed as YAML 1.2's core schema does; quoted ones stay
 * strings. Aliases are refused (no billion laughs), as are several
 * documents and nesting deeper than MAX_DEPTH.
 */
#include "rules_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define MAX_DEPTH 64

struct frame {
    json_t *node; /* borrowed: owned by its parent (or the root) */
    char *key;    /* mapping: the key waiting for its value, else NULL */
};

struct reader {
    struct frame stack[MAX_DEPTH];
    int depth;
    json_t *root;
    char *why;
    size_t why_len;
    bool failed;
};

static void fail_at(struct reader *rd, const yaml_mark_t *m, const char *fmt, ...) GW_PRINTF(3, 4);

static void fail_at(struct reader *rd, const yaml_mark_t *m, const char *fmt, ...)
{
    if (rd->failed)
        return;
    rd->failed = true;
    char msg[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(rd->why, rd->why_len, "line %zu, column %zu: %s", m->line + 1, m->column + 1, msg);
}

static bool all_digits(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/* [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
static bool is_float(const char *s, size_t n)
{
    size_t i = 0;
    if (i < n && (s[i] == '-' || s[i] == '+'))
        i++;
    size_t int_digits = 0, frac_digits = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9') {
        i++;
        int_digits++;
    }
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            i++;
            frac_digits++;
        }
    }
    if (int_digits == 0 && frac_digits == 0)
        return false;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '-' || s[i] == '+'))
            i++;
        size_t e = i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == e)
            return false;
    }
    return i == n;
}

static bool one_of(const char *s, size_t n, const char *const *words)
{
    for (; *words != NULL; words++)
        if (strlen(*words) == n && memcmp(*words, s, n) == 0)
            return true;
    return false;
}

/* The typed value of a scalar event (new reference), NULL when its bytes
 * are not UTF-8 or on ENOMEM. */
static json_t *scalar_value(const yaml_event_t *ev)
{
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
    static const char *const trues[] = {"true", "True", "TRUE", NULL};
    static const char *const falses[] = {"false", "False", "FALSE", NULL};
    const char *s = (const char *)ev->data.scalar.value;
    size_t n = ev->data.scalar.length;
    const char *tag = (const char *)ev->data.scalar.tag;
    bool plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
                 (tag == NULL || strcmp(tag, "!") != 0) &&
                 (tag == NULL || strcmp(tag, YAML_STR_TAG) != 0);
    if (plain) {
        if (one_of(s, n, nulls))
            return json_null();
        if (one_of(s, n, trues))
            return json_true();
        if (one_of(s, n, falses))
            return json_false();
        size_t d = n > 0 && (s[0] == '-' || s[0] == '+') ? 1 : 0;
        if (all_digits(s + d, n - d) && n < 64) {
            char buf[64];
            memcpy(buf, s, n);
            buf[n] = '\0';
            errno = 0;
            long long v = strtoll(buf, NULL, 10);
            if (errno == 0)
                return json_integer(v);
            return json_real(strtod(buf, NULL));
        }
        if (is_float(s, n) && n < 64) {
            char buf[64];
            memcpy(buf, s, n);
            buf[n] = '\0';
            return json_real(strtod(buf, NULL));
        }
    }
    return json_stringn(s, n);
}

/* Adds v (a new reference, stolen) where the parser stands. A container
 * is then entered (pushed). */
static void add(struct reader *rd, const yaml_event_t *ev, json_t *v, bool container)
{
    if (v == NULL) {
        fail_at(rd, &ev->start_mark, "not valid UTF-8 (or out of memory)");
        return;
    }
    if (rd->depth == 0) {
        if (rd->root != NULL) {
            json_decref(v);
            fail_at(rd, &ev->start_mark, "more than one top-level value");
            return;
        }
        rd->root = v;
    } else {
        struct frame *f = &rd->stack[rd->depth - 1];
        if (json_is_array(f->node)) {
            if (json_array_append_new(f->node, v) != 0)
                fail_at(rd, &ev->start_mark, "out of memory");
        } else if (f->key == NULL) {
            /* a mapping waits for a key: only a scalar can be one */
            json_decref(v);
            if (container || ev->type != YAML_SCALAR_EVENT) {
                fail_at(rd, &ev->start_mark, "a mapping key must be a plain value");
                return;
            }
            f->key = strndup((const char *)ev->data.scalar.value, ev->data.scalar.length);
            if (f->key == NULL || strlen(f->key) != ev->data.scalar.length)
                fail_at(rd, &ev->start_mark, "a mapping key must not contain NUL");
            return;
        } else {
            if (json_object_get(f->node, f->key) != NULL) {
                json_decref(v);
                fail_at(rd, &ev->start_mark, "key \"%.64s\" given twice", f->key);
                return;
            }
            if (json_object_set_new(f->node, f->key, v) != 0)
                fail_at(rd, &ev->start_mark, "key is not valid UTF-8 (or out of memory)");
            free(f->key);
            f->key = NULL;
        }
    }
    if (!container || rd->failed)
        return;
    if (rd->depth == MAX_DEPTH) {
        fail_at(rd, &ev->start_mark, "nested deeper than %d levels", MAX_DEPTH);
        return;
    }
    rd->stack[rd->depth++] = (struct frame){v, NULL};
}

json_t *gw_rules_yaml_read(const char *text, size_t len, char *why, size_t why_len)
{
    struct reader rd = {.why = why, .why_len = why_len};
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) {
        snprintf(why, why_len, "out of memory");
        return NULL;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    int docs = 0;
    bool done = false;
    while (!done && !rd.failed) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            fail_at(&rd, &p.problem_mark, "%s", p.problem ? p.problem : "YAML syntax error");
            break;
        }
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (++docs > 1)
                fail_at(&rd, &ev.start_mark, "more than one YAML document");
            break;
        case YAML_ALIAS_EVENT:
            fail_at(&rd, &ev.start_mark, "aliases (*name) are not supported");
            break;
        case YAML_SCALAR_EVENT:
            add(&rd, &ev, scalar_value(&ev), false);
            break;
        case YAML_SEQUENCE_START_EVENT:
            add(&rd, &ev, json_array(), true);
            break;
        case YAML_MAPPING_START_EVENT:
            add(&rd, &ev, json_object(), true);
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            if (rd.depth > 0) {
                rd.depth--;
                free(rd.stack[rd.depth].key);
                rd.stack[rd.depth].key = NULL;
            }
            break;
        default:
            break;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    for (int i = 0; i < rd.depth; i++)
        free(rd.stack[i].key);
    if (!rd.failed && rd.root == NULL)
        snprintf(why, why_len, "line 1, column 1: empty document");
    if (rd.failed || rd.root == NULL) {
        json_decref(rd.root);
        return NULL;
    }
    return rd.root;
}
