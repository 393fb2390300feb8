/*
 * Per-worker pool of spare HTTP/1.x parsers (see gw/http1.h): a parser keeps
 * its head storage while spare, so a keep-alive request costs no malloc.
 */
#include "gw/http1.h"

#include <errno.h>
#include <stdlib.h>

int gw_http_parser_pool_init(struct gw_http_parser_pool *pool, size_t cap, enum gw_http_kind kind,
                             size_t max_head_bytes, uint64_t max_body_bytes)
{
    pool->spare = calloc(cap ? cap : 1, sizeof(*pool->spare));
    pool->len = 0;
    pool->cap = cap;
    pool->kind = kind;
    pool->max_head_bytes = max_head_bytes;
    pool->max_body_bytes = max_body_bytes;
    return pool->spare ? 0 : -ENOMEM;
}

void gw_http_parser_pool_trim(struct gw_http_parser_pool *pool, size_t keep)
{
    while (pool->len > keep) {
        struct gw_http_parser *p = pool->spare[--pool->len];
        gw_http_parser_deinit(p);
        free(p);
    }
}

void gw_http_parser_pool_deinit(struct gw_http_parser_pool *pool)
{
    gw_http_parser_pool_trim(pool, 0);
    free(pool->spare);
    pool->spare = NULL;
    pool->len = pool->cap = 0;
}

struct gw_http_parser *gw_http_parser_pool_get(struct gw_http_parser_pool *pool,
                                               gw_http_body_fn on_body, void *ctx)
{
    struct gw_http_parser *p;
    if (pool->len > 0) {
        p = pool->spare[--pool->len];
    } else {
        p = calloc(1, sizeof(*p));
        if (!p || gw_http_parser_init(p, pool->kind, pool->max_head_bytes, pool->max_body_bytes,
                                      on_body, ctx) != 0) {
            free(p);
            return NULL;
        }
    }
    p->on_body = on_body;
    p->ctx = ctx;
    return p;
}

void gw_http_parser_pool_put(struct gw_http_parser_pool *pool, struct gw_http_parser *p)
{
    if (pool->len < pool->cap) {
        gw_http_parser_recycle(p);
        pool->spare[pool->len++] = p;
        return;
    }
    gw_http_parser_deinit(p);
    free(p);
}
