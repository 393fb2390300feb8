/*
 * Unit tests of the per-client connection cap (src/client_conns.c): the cap
 * per IPv4 address, IPv6 counted by /64, release freeing the place, entries
 * gone at zero, and many clients and threads at once.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "gw/client_conns.h"

static void v4(uint8_t out[16], uint8_t a, uint8_t b, uint8_t c, uint8_t d)
{
    memset(out, 0, 16);
    out[10] = out[11] = 0xff;
    out[12] = a, out[13] = b, out[14] = c, out[15] = d;
}

static void test_cap_per_ipv4(void **state)
{
    (void)state;
    struct gw_client_conns *t;
    assert_int_equal(gw_client_conns_create(&t, 3), 0);
    uint8_t a[16], b[16];
    v4(a, 10, 0, 0, 1);
    v4(b, 10, 0, 0, 2);
    for (int i = 0; i < 3; i++)
        assert_true(gw_client_conns_acquire(t, a));
    assert_false(gw_client_conns_acquire(t, a)); /* the fourth */
    assert_int_equal(gw_client_conns_count(t, a), 3);
    assert_true(gw_client_conns_acquire(t, b)); /* another client is not affected */
    gw_client_conns_release(t, a);
    assert_int_equal(gw_client_conns_count(t, a), 2);
    assert_true(gw_client_conns_acquire(t, a)); /* a freed place can be taken again */
    for (int i = 0; i < 3; i++)
        gw_client_conns_release(t, a);
    assert_int_equal(gw_client_conns_count(t, a), 0);
    gw_client_conns_release(t, b);
    gw_client_conns_destroy(t); /* under ASan: no entry leaked */
}

static void test_ipv6_by_64(void **state)
{
    (void)state;
    struct gw_client_conns *t;
    assert_int_equal(gw_client_conns_create(&t, 2), 0);
    uint8_t x[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1};
    uint8_t y[16];
    memcpy(y, x, 16);
    y[15] = 0x99; /* same /64, other interface id */
    y[9] = 0x42;
    uint8_t z[16];
    memcpy(z, x, 16);
    z[7] = 2; /* next /64 */
    assert_true(gw_client_conns_acquire(t, x));
    assert_true(gw_client_conns_acquire(t, y));
    assert_false(gw_client_conns_acquire(t, x));
    assert_false(gw_client_conns_acquire(t, y));
    assert_true(gw_client_conns_acquire(t, z));
    assert_int_equal(gw_client_conns_count(t, y), 2);
    gw_client_conns_release(t, y);
    assert_true(gw_client_conns_acquire(t, x));
    gw_client_conns_destroy(t); /* entries still held are freed */
}

static void test_bad_cap(void **state)
{
    (void)state;
    struct gw_client_conns *t = (struct gw_client_conns *)&t;
    assert_int_equal(gw_client_conns_create(&t, 0), -22);
    assert_null(t);
    gw_client_conns_destroy(NULL);
}

#define THREADS 4
#define CLIENTS 5000

static struct gw_client_conns *shared;

/* Each thread takes and gives back one place of CLIENTS clients, twice. */
static void *churn(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < CLIENTS; i++) {
            uint8_t a[16];
            v4(a, 10, (uint8_t)id, (uint8_t)(i >> 8), (uint8_t)i);
            if (!gw_client_conns_acquire(shared, a))
                return (void *)1;
        }
        for (int i = 0; i < CLIENTS; i++) {
            uint8_t a[16];
            v4(a, 10, (uint8_t)id, (uint8_t)(i >> 8), (uint8_t)i);
            gw_client_conns_release(shared, a);
        }
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    assert_int_equal(gw_client_conns_create(&shared, 1), 0);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, churn, (void *)(intptr_t)i), 0);
    for (int i = 0; i < THREADS; i++) {
        void *rv;
        pthread_join(th[i], &rv);
        assert_null(rv);
    }
    uint8_t a[16];
    v4(a, 10, 1, 0, 7);
    assert_int_equal(gw_client_conns_count(shared, a), 0);
    gw_client_conns_destroy(shared);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cap_per_ipv4),
        cmocka_unit_test(test_ipv6_by_64),
        cmocka_unit_test(test_bad_cap),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
