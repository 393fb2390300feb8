/* Growable byte buffer with explicit start/end offsets (see gw/buf.h). */
#include "gw/buf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GW_BUF_MIN_CAP 4096

int gw_buf_reserve(struct gw_buf *b, size_t n)
{
    if (b->cap - b->end >= n)
        return 0;
    size_t len = b->end - b->start;
    if (b->start > 0 && b->cap - len >= n) {
        memmove(b->data, b->data + b->start, len);
        b->start = 0;
        b->end = len;
        return 0;
    }
    size_t cap = b->cap ? b->cap : GW_BUF_MIN_CAP;
    while (cap - len < n) {
        if (cap > SIZE_MAX / 2)
            return -ENOMEM;
        cap *= 2;
    }
    char *data = malloc(cap);
    if (!data)
        return -ENOMEM;
    if (len)
        memcpy(data, b->data + b->start, len);
    free(b->data);
    b->data = data;
    b->start = 0;
    b->end = len;
    b->cap = cap;
    return 0;
}

int gw_buf_append(struct gw_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    int rc = gw_buf_reserve(b, n);
    if (rc)
        return rc;
    memcpy(b->data + b->end, p, n);
    b->end += n;
    return 0;
}

int gw_buf_append_str(struct gw_buf *b, const char *s)
{
    return gw_buf_append(b, s, strlen(s));
}

int gw_buf_printf(struct gw_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    if ((size_t)n < sizeof(small))
        return gw_buf_append(b, small, (size_t)n);
    int rc = gw_buf_reserve(b, (size_t)n + 1);
    if (rc)
        return rc;
    va_start(ap, fmt);
    vsnprintf(b->data + b->end, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->end += (size_t)n;
    return 0;
}

void gw_buf_commit(struct gw_buf *b, size_t n)
{
    b->end += n;
}

void gw_buf_consume(struct gw_buf *b, size_t n)
{
    b->start += n;
    if (b->start >= b->end)
        b->start = b->end = 0;
}

void gw_buf_clear(struct gw_buf *b)
{
    b->start = b->end = 0;
}

void gw_buf_release(struct gw_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->start = b->end = b->cap = 0;
}

/* ---- block pool ---- */

int gw_buf_pool_init(struct gw_buf_pool *pool, size_t cap)
{
    pool->blocks = calloc(cap ? cap : 1, sizeof(*pool->blocks));
    pool->len = 0;
    pool->cap = cap;
    return pool->blocks ? 0 : -ENOMEM;
}

void gw_buf_pool_deinit(struct gw_buf_pool *pool)
{
    gw_buf_pool_trim(pool, 0);
    free(pool->blocks);
    pool->blocks = NULL;
    pool->len = pool->cap = 0;
}

void gw_buf_pool_trim(struct gw_buf_pool *pool, size_t keep)
{
    while (pool->len > keep)
        free(pool->blocks[--pool->len]);
}

void gw_buf_pool_get(struct gw_buf_pool *pool, struct gw_buf *b)
{
    if (b->data != NULL)
        return;
    /* Every buffer starts as a standard block so gw_buf_pool_put can keep
     * it; a failed malloc is seen again by the reserve that follows. */
    char *block = pool->len > 0 ? pool->blocks[--pool->len] : malloc(GW_BLOCK_SIZE);
    if (block) {
        b->data = block;
        b->cap = GW_BLOCK_SIZE;
        b->start = b->end = 0;
    }
}

void gw_buf_pool_put(struct gw_buf_pool *pool, struct gw_buf *b)
{
    if (b->data && b->cap == GW_BLOCK_SIZE && pool->len < pool->cap) {
        pool->blocks[pool->len++] = b->data;
        b->data = NULL;
        b->start = b->end = b->cap = 0;
        return;
    }
    gw_buf_release(b);
}
