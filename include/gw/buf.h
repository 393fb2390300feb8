/*
 * Byte buffer with explicit offsets: data[start, end) holds pending bytes,
 * data[end, cap) is free tail (pgbouncer iobuf). Storage is allocated lazily
 * and may be released while empty, so an idle connection holds no buffer.
 * Not thread-safe: a buffer belongs to one connection on one worker.
 */
#ifndef GW_BUF_H
#define GW_BUF_H

#include "gw/common.h"

#include <stdarg.h>

/* Per-direction streaming window: a side stops reading when the other
 * side's pending output reaches this many bytes (backpressure). */
#define GW_STREAM_WINDOW (64 * 1024)
/* Bytes read from a socket per read(2) at most. */
#define GW_READ_CHUNK (16 * 1024)
/* Free room a buffer must have before a read; the read takes all the room
 * there is, so steady traffic never grows a recycled block. */
#define GW_READ_MIN 4096
/* Buffer blocks of this size are recycled through a per-worker pool, so
 * keep-alive requests do not call malloc. */
#define GW_BLOCK_SIZE (16 * 1024)

struct gw_buf {
    char *data;   /* heap storage owned by the buffer, NULL until needed */
    size_t start; /* first pending byte */
    size_t end;   /* one past the last pending byte */
    size_t cap;   /* bytes allocated */
};

/* Pending bytes. */
static inline size_t gw_buf_len(const struct gw_buf *b)
{
    return b->end - b->start;
}

/* First pending byte (valid for gw_buf_len bytes, until the next mutation). */
static inline char *gw_buf_head(const struct gw_buf *b)
{
    return b->data + b->start;
}

/* Free bytes after end, without compaction or growth. */
static inline size_t gw_buf_tail_room(const struct gw_buf *b)
{
    return b->cap - b->end;
}

/* Makes at least n bytes of free tail available, first by moving pending
 * bytes to the front, then by growing storage (doubling). Returns 0 or
 * -ENOMEM; on failure the buffer is unchanged. */
GW_MUSTCHECK int gw_buf_reserve(struct gw_buf *b, size_t n);

/* Appends n bytes copied from p. Returns 0 or -ENOMEM. */
GW_MUSTCHECK int gw_buf_append(struct gw_buf *b, const void *p, size_t n);

/* Appends a NUL-terminated string (without the NUL). Returns 0 or -ENOMEM. */
GW_MUSTCHECK int gw_buf_append_str(struct gw_buf *b, const char *s);

/* Appends printf-formatted text (no NUL kept). Returns 0, -ENOMEM or -EINVAL
 * for a bad format. */
GW_MUSTCHECK int gw_buf_printf(struct gw_buf *b, const char *fmt, ...) GW_PRINTF(2, 3);

/* Marks n bytes after end as written (after filling gw_buf_head+len). */
void gw_buf_commit(struct gw_buf *b, size_t n);

/* Drops n pending bytes from the front (n <= gw_buf_len). When the buffer
 * becomes empty, offsets reset to 0 so the whole storage is free again. */
void gw_buf_consume(struct gw_buf *b, size_t n);

/* Drops every pending byte, keeps storage. */
void gw_buf_clear(struct gw_buf *b);

/* Frees the storage; the buffer becomes empty and reusable. */
void gw_buf_release(struct gw_buf *b);

/* ---- block pool ----
 * Spare GW_BLOCK_SIZE storage blocks (twemproxy mbuf free list): buffers take
 * a block before their first reserve and give it back when they empty, so a
 * keep-alive request does not call malloc. One pool per worker thread; not
 * thread-safe. */
struct gw_buf_pool {
    char **blocks; /* spare blocks, blocks[0..len) */
    size_t len;    /* spare blocks now */
    size_t cap;    /* most spare blocks kept (bounded memory when idle) */
};

/* Prepares a pool keeping at most cap spare blocks. Returns 0 or -ENOMEM. */
GW_MUSTCHECK int gw_buf_pool_init(struct gw_buf_pool *pool, size_t cap);

/* Frees every spare block. Buffers still holding blocks free them with
 * gw_buf_release (or put them back first). */
void gw_buf_pool_deinit(struct gw_buf_pool *pool);

/* Gives a buffer without storage a standard block (a spare, or a new one);
 * a buffer with storage is left alone. On a failed malloc the buffer stays
 * without storage and its next reserve reports -ENOMEM. */
void gw_buf_pool_get(struct gw_buf_pool *pool, struct gw_buf *b);

/* Frees spare blocks beyond keep (memory back after a burst). */
void gw_buf_pool_trim(struct gw_buf_pool *pool, size_t keep);

/* Releases b's storage: a standard block goes back to the pool while it has
 * room, anything else is freed. b becomes empty without storage. */
void gw_buf_pool_put(struct gw_buf_pool *pool, struct gw_buf *b);

#endif
