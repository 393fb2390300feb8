/*
 * Unit tests of the byte buffer (src/buf.c): the offsets invariant
 * start <= end <= cap that gw/buf.h documents, reserve/commit/consume,
 * compaction before growth, doubling growth, reset when empty, and the way
 * workers recycle fixed-size blocks (storage handed in, kept while it fits).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "gw/buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 16384 /* the size workers recycle (GW_BLOCK_SIZE) */

/* The invariant every operation keeps. */
static void check(const struct gw_buf *b)
{
    assert_true(b->start <= b->end);
    assert_true(b->end <= b->cap);
    assert_true((b->data == NULL) == (b->cap == 0));
    assert_int_equal(gw_buf_len(b), b->end - b->start);
    assert_int_equal(gw_buf_tail_room(b), b->cap - b->end);
}

static void test_empty_buffer_allocates_lazily(void **state)
{
    (void)state;
    struct gw_buf b = {0};
    check(&b);
    assert_int_equal(gw_buf_len(&b), 0);
    assert_int_equal(gw_buf_append(&b, "x", 0), 0); /* nothing to add: no storage */
    assert_null(b.data);
    assert_int_equal(gw_buf_append_str(&b, "hello"), 0);
    check(&b);
    assert_non_null(b.data);
    assert_int_equal(b.cap, 4096);
    assert_int_equal(gw_buf_len(&b), 5);
    assert_memory_equal(gw_buf_head(&b), "hello", 5);
    gw_buf_release(&b);
    check(&b);
    assert_null(b.data);
    assert_int_equal(b.start + b.end + b.cap, 0);
    gw_buf_release(&b); /* twice is harmless */
}

static void test_reserve_commit_consume(void **state)
{
    (void)state;
    struct gw_buf b = {0};
    assert_int_equal(gw_buf_reserve(&b, 100), 0);
    check(&b);
    assert_true(gw_buf_tail_room(&b) >= 100);
    assert_int_equal(gw_buf_len(&b), 0);
    /* Fill the reserved room in place, then commit it: what a read(2) does. */
    memcpy(b.data + b.end, "abcdefghij", 10);
    gw_buf_commit(&b, 10);
    check(&b);
    assert_int_equal(gw_buf_len(&b), 10);

    gw_buf_consume(&b, 3);
    check(&b);
    assert_int_equal(b.start, 3);
    assert_memory_equal(gw_buf_head(&b), "defghij", 7);

    /* Consuming the rest resets both offsets, so the whole storage is free. */
    gw_buf_consume(&b, 7);
    check(&b);
    assert_int_equal(b.start, 0);
    assert_int_equal(b.end, 0);
    assert_int_equal(gw_buf_tail_room(&b), b.cap);

    assert_int_equal(gw_buf_append(&b, "xyz", 3), 0);
    gw_buf_clear(&b);
    check(&b);
    assert_int_equal(gw_buf_len(&b), 0);
    assert_non_null(b.data); /* clear keeps storage */
    gw_buf_release(&b);
}

static void test_reserve_compacts_before_growing(void **state)
{
    (void)state;
    struct gw_buf b = {0};
    char fill[4096];
    memset(fill, 'a', sizeof(fill));
    assert_int_equal(gw_buf_append(&b, fill, 4000), 0);
    assert_int_equal(b.cap, 4096);
    gw_buf_consume(&b, 3900);
    check(&b);
    char *before = b.data;
    /* 96 bytes of tail, 3996 free in all: room is made by moving the 100
     * pending bytes to the front, without a new allocation. */
    assert_int_equal(gw_buf_reserve(&b, 1000), 0);
    check(&b);
    assert_ptr_equal(b.data, before);
    assert_int_equal(b.cap, 4096);
    assert_int_equal(b.start, 0);
    assert_int_equal(b.end, 100);
    assert_true(gw_buf_tail_room(&b) >= 1000);
    gw_buf_release(&b);
}

static void test_growth_doubles_and_keeps_bytes(void **state)
{
    (void)state;
    struct gw_buf b = {0};
    char chunk[1000];
    for (int i = 0; i < 100; i++) {
        memset(chunk, 'A' + i % 26, sizeof(chunk));
        assert_int_equal(gw_buf_append(&b, chunk, sizeof(chunk)), 0);
        check(&b);
        /* Capacity is the minimum doubled as often as needed. */
        assert_int_equal(b.cap & (b.cap - 1), 0);
        assert_true(b.cap >= 4096);
    }
    assert_int_equal(gw_buf_len(&b), 100000);
    assert_int_equal(b.cap, 131072);
    for (int i = 0; i < 100; i++)
        assert_int_equal(gw_buf_head(&b)[i * 1000 + 999], 'A' + i % 26);

    /* Growth with pending bytes not at the front keeps exactly those bytes. */
    gw_buf_consume(&b, 99990);
    assert_int_equal(gw_buf_reserve(&b, 300000), 0);
    check(&b);
    assert_int_equal(b.start, 0);
    assert_int_equal(gw_buf_len(&b), 10);
    assert_memory_equal(gw_buf_head(&b), "VVVVVVVVVV", 10);
    assert_true(gw_buf_tail_room(&b) >= 300000);

    /* An impossible size fails and leaves the buffer as it was. */
    struct gw_buf copy = b;
    assert_int_equal(gw_buf_reserve(&b, SIZE_MAX - 8), -ENOMEM);
    assert_memory_equal(&copy, &b, sizeof(b));
    gw_buf_release(&b);
}

static void test_printf(void **state)
{
    (void)state;
    struct gw_buf b = {0};
    assert_int_equal(gw_buf_printf(&b, "%s=%d;", "n", 42), 0);
    check(&b);
    assert_int_equal(gw_buf_len(&b), 5);
    assert_memory_equal(gw_buf_head(&b), "n=42;", 5);
    /* Longer than the 256-byte fast path: formatted straight into the tail. */
    char big[1001];
    memset(big, 'q', 1000);
    big[1000] = '\0';
    assert_int_equal(gw_buf_printf(&b, "[%s]", big), 0);
    check(&b);
    assert_int_equal(gw_buf_len(&b), 5 + 1002);
    assert_int_equal(gw_buf_head(&b)[5], '[');
    assert_int_equal(gw_buf_head(&b)[1006], ']');
    gw_buf_release(&b);
}

/* Workers hand a recycled block to an empty buffer by setting data and cap
 * (src/conn.c) and take it back when the buffer is done with it; the
 * buffer must keep using that block, compacting rather than reallocating,
 * while the pending bytes fit. */
static void test_recycled_block_is_kept(void **state)
{
    (void)state;
    char *block = malloc(BLOCK);
    assert_non_null(block);
    struct gw_buf b = {.data = block, .cap = BLOCK};
    check(&b);
    char chunk[4096];
    memset(chunk, 'r', sizeof(chunk));
    for (int round = 0; round < 50; round++) {
        assert_int_equal(gw_buf_reserve(&b, sizeof(chunk)), 0);
        memcpy(b.data + b.end, chunk, sizeof(chunk));
        gw_buf_commit(&b, sizeof(chunk));
        check(&b);
        /* Keep a few bytes pending so offsets wander through the block. */
        gw_buf_consume(&b, gw_buf_len(&b) - (size_t)round % 7);
        check(&b);
        assert_ptr_equal(b.data, block);
        assert_int_equal(b.cap, BLOCK);
    }
    /* Empty again: the block can go back to the free list as it is. */
    gw_buf_clear(&b);
    assert_ptr_equal(b.data, block);
    assert_int_equal(gw_buf_tail_room(&b), BLOCK);

    /* More than a block pending: the buffer grows off the block (freeing
     * it) and the bytes survive. */
    for (int i = 0; i < 5; i++)
        assert_int_equal(gw_buf_append(&b, chunk, sizeof(chunk)), 0);
    check(&b);
    assert_int_equal(b.cap, 2 * BLOCK);
    assert_int_equal(gw_buf_len(&b), 5 * sizeof(chunk));
    gw_buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_buffer_allocates_lazily),
        cmocka_unit_test(test_reserve_commit_consume),
        cmocka_unit_test(test_reserve_compacts_before_growing),
        cmocka_unit_test(test_growth_doubles_and_keeps_bytes),
        cmocka_unit_test(test_printf),
        cmocka_unit_test(test_recycled_block_is_kept),
    };
    return cmocka_run_group_tests_name("buf", tests, NULL, NULL);
}
