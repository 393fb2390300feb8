/*
 * Configuration and rules from text for the unit tests (see gwt_config.h).
 */
#include "gwt_config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

const char *gwt_kv_getenv(void *ctx, const char *name)
{
    for (const struct gwt_kv *e = ctx; e->k != NULL; e++)
        if (strcmp(e->k, name) == 0)
            return e->v;
    return NULL;
}

int gwt_config_load_kv(struct gw_config *cfg, const struct gwt_kv *kv, char **err_out)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *err = open_memstream(&buf, &len);
    assert_non_null(err);
    int rc = gw_config_load(cfg, gwt_kv_getenv, (void *)kv, err);
    assert_int_equal(fclose(err), 0);
    if (err_out != NULL)
        *err_out = buf;
    else
        free(buf);
    return rc;
}

struct gw_rules *gwt_rules_json(const char *text, const struct gw_config *cfg)
{
    struct gw_rules *r = NULL;
    assert_int_equal(gw_rules_parse(text, strlen(text), GW_RULES_JSON, cfg, &r, stderr, NULL), 0);
    return r;
}

char *gwt_config_json(const struct gw_config *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(gw_config_print_json(cfg, f), 0);
    assert_int_equal(fclose(f), 0);
    return buf;
}
