/*
 * libFuzzer target for the HTTP/1.x request parser (src/http1.c). Each input
 * is parsed as a connection stream three ways (whole, byte by byte, random
 * slices) and the transcripts must agree; structural invariants of the
 * parsed head are checked on every event. fuzz_http1_response.c reuses it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw/http1.h"

#include "fuzz_check.h"

#ifndef FUZZ_KIND
#define FUZZ_KIND GW_HTTP_REQUEST
#endif

struct digest {
    uint64_t h;         /* FNV-1a over the transcript */
    uint64_t body_hash; /* FNV-1a over the current body */
    uint64_t body_len;
};

static void mix(uint64_t *h, const void *data, size_t len)
{
    const unsigned char *b = data;
    for (size_t i = 0; i < len; i++) {
        *h ^= b[i];
        *h *= 1099511628211ull;
    }
}

static void mix_u64(uint64_t *h, uint64_t v)
{
    mix(h, &v, sizeof(v));
}

static int sink(void *ctx, const char *data, size_t len)
{
    struct digest *d = ctx;
    CHECK(len > 0);
    mix(&d->body_hash, data, len);
    d->body_len += len;
    return 0;
}

static bool within(const struct gw_http_parser *p, struct gw_slice s)
{
    if (s.len == 0)
        return true;
    return s.ptr >= p->storage && s.ptr + s.len <= p->storage + p->storage_used;
}

static void check_head(const struct gw_http_parser *p)
{
    const struct gw_http_head *h = &p->head;
    CHECK(h->http_major == 1 && h->http_minor <= 1);
    CHECK(h->header_count <= GW_HTTP_MAX_HEADERS);
    CHECK(p->head_bytes <= p->max_head_bytes);
    CHECK(p->storage_used <= p->max_head_bytes);
    CHECK(!(h->chunked && h->content_length >= 0));
    CHECK(within(p, h->method_name) && within(p, h->target) && within(p, h->reason));
    for (size_t i = 0; i < h->header_count; i++) {
        const struct gw_http_header *f = &h->headers[i];
        CHECK(f->name.len > 0 && within(p, f->name) && within(p, f->value));
        for (size_t j = 0; j < f->value.len; j++)
            CHECK(f->value.ptr[j] != '\r' && f->value.ptr[j] != '\n' && f->value.ptr[j] != 0);
        if (f->value.len > 0) {
            CHECK(f->value.ptr[0] != ' ' && f->value.ptr[0] != '\t');
            CHECK(f->value.ptr[f->value.len - 1] != ' ' && f->value.ptr[f->value.len - 1] != '\t');
        }
    }
    if (p->kind == GW_HTTP_REQUEST) {
        CHECK(h->target.len > 0);
        for (size_t j = 0; j < h->target.len; j++)
            CHECK((unsigned char)h->target.ptr[j] > 0x20 && h->target.ptr[j] != 0x7f);
        CHECK(h->has_body == (h->chunked || h->content_length > 0));
        CHECK(!h->body_until_close);
        CHECK(gw_http_head_find(h, "host") != NULL || h->http_minor == 0);
    } else {
        CHECK(h->status >= 100 && h->status <= 599 && h->status != 101);
    }
    if (p->max_body_bytes && h->has_body && h->content_length > 0)
        CHECK((uint64_t)h->content_length <= p->max_body_bytes);
}

static uint64_t run(const char *data, size_t len, size_t max_head, uint64_t max_body, bool no_body,
                    int mode, uint32_t seed)
{
    struct gw_http_parser p;
    struct digest d = {14695981039346656037ull, 14695981039346656037ull, 0};
    size_t pos = 0, limit = 0;
    uint32_t rng = seed | 1;

    if (gw_http_parser_init(&p, FUZZ_KIND, max_head, max_body, sink, &d) != 0)
        abort();
    gw_http_parser_set_no_body(&p, no_body);
    for (int guard = 0;; guard++) {
        CHECK(guard < 1000000);
        if (pos == limit && limit < len) {
            size_t n = len - limit;
            if (mode == 1) {
                n = 1;
            } else if (mode == 2) {
                rng ^= rng << 13;
                rng ^= rng >> 17;
                rng ^= rng << 5;
                n = GW_MIN(n, 1 + rng % 64);
            }
            limit += n;
        }
        size_t used = 0;
        enum gw_http_result r = gw_http_parser_execute(&p, data + pos, limit - pos, &used);
        CHECK(used <= limit - pos);
        pos += used;
        if (r != GW_HTTP_NEED_MORE) /* how often input ran out depends on slicing */
            mix_u64(&d.h, (uint64_t)r);
        if (r == GW_HTTP_NEED_MORE) {
            CHECK(pos == limit);
            if (pos == len)
                break;
        } else if (r == GW_HTTP_HEAD) {
            const struct gw_http_head *h = &p.head;
            check_head(&p);
            mix(&d.h, h->target.ptr ? h->target.ptr : "", h->target.len);
            mix_u64(&d.h, (uint64_t)h->status);
            mix_u64(&d.h, (uint64_t)h->content_length);
            mix_u64(&d.h, h->header_count);
            mix_u64(&d.h, (uint64_t)h->has_body | (uint64_t)h->keep_alive << 1 |
                              (uint64_t)h->chunked << 2 | (uint64_t)h->body_until_close << 3 |
                              (uint64_t)h->expect_continue << 4);
            for (size_t i = 0; i < h->header_count; i++) {
                mix(&d.h, h->headers[i].name.ptr, h->headers[i].name.len);
                mix(&d.h, h->headers[i].value.ptr ? h->headers[i].value.ptr : "",
                    h->headers[i].value.len);
            }
        } else if (r == GW_HTTP_DONE) {
            CHECK(d.body_len == p.body_bytes);
            if (p.head.content_length >= 0 && p.head.has_body)
                CHECK(p.body_bytes == (uint64_t)p.head.content_length);
            if (!p.head.has_body)
                CHECK(p.body_bytes == 0);
            if (max_body)
                CHECK(p.body_bytes <= max_body);
            mix_u64(&d.h, d.body_hash);
            mix_u64(&d.h, d.body_len);
            d.body_hash = 14695981039346656037ull;
            d.body_len = 0;
            CHECK(gw_http_parser_idle(&p));
            gw_http_parser_reset(&p);
        } else {
            CHECK(r == GW_HTTP_ERROR);
            CHECK(p.error_detail != NULL && p.error_detail[0] != '\0');
            mix_u64(&d.h, (uint64_t)p.error_status);
            mix(&d.h, p.error_detail, strlen(p.error_detail));
            break;
        }
    }
    if (p.error_status == 0) {
        enum gw_http_result r = gw_http_parser_finish(&p);
        mix_u64(&d.h, 100 + (uint64_t)r);
        if (r == GW_HTTP_DONE) {
            mix_u64(&d.h, d.body_hash);
            mix_u64(&d.h, d.body_len);
        }
    }
    gw_http_parser_deinit(&p);
    return d.h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    /* First byte: limits and flags; the rest is the stream. */
    uint8_t cfg = data[0];
    size_t max_head = (cfg & 1) ? 64 + (cfg >> 2) * 4 : 8192;
    uint64_t max_body = (cfg & 2) ? (uint64_t)(cfg >> 3) : 0;
    bool no_body = (cfg & 4) != 0;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;

    uint64_t whole = run(s, n, max_head, max_body, no_body, 0, 0);
    uint64_t sliced = run(s, n, max_head, max_body, no_body, 2, (uint32_t)size * 2654435761u);
    CHECK(whole == sliced);
    if (n <= 2048) {
        uint64_t bytes = run(s, n, max_head, max_body, no_body, 1, 0);
        CHECK(whole == bytes);
    }
    return 0;
}
