/*
 * Configuration and rules from text for the unit tests that drive modules
 * without a gateway (test/unit/test_config*.c, test_rules_*.c): an
 * environment injected into gw_config_load from a table, and rules parsed
 * from JSON. Failures are cmocka assertions (they end the current test).
 */
#ifndef GWT_CONFIG_H
#define GWT_CONFIG_H

#include "gw/config.h"
#include "gw/rules.h"

/* One variable of an injected environment; a table ends with {NULL, NULL}. */
struct gwt_kv {
    const char *k;
    const char *v;
};

/* A {NULL, NULL}-terminated table literal: GWT_KV({"A", "1"}, {"B", "2"}). */
#define GWT_KV(...) ((const struct gwt_kv[]){__VA_ARGS__, {NULL, NULL}})

/* gw_config_load's getenv over ctx, a const struct gwt_kv table: the value
 * of the first entry named name, or NULL. */
const char *gwt_kv_getenv(void *ctx, const char *name);

/* gw_config_load(cfg) from the table kv, its error lines into *err_out
 * (a string the caller frees) or dropped when err_out is NULL. Returns
 * gw_config_load's result. */
int gwt_config_load_kv(struct gw_config *cfg, const struct gwt_kv *kv, char **err_out);

/* gw_config_print_json(cfg) (what --check-config prints) as a string the
 * caller frees; fails the test when it does not print. */
char *gwt_config_json(const struct gw_config *cfg);

/* Rules parsed from the JSON text with cfg (may be NULL), errors on stderr;
 * fails the test unless they parse. The caller owns the reference
 * (gw_rules_put). */
struct gw_rules *gwt_rules_json(const char *text, const struct gw_config *cfg);

#endif
