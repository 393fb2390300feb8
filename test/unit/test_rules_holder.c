/*
 * Unit tests of the rules holder (src/rules_holder.c): publish and get with
 * their references, the generation workers poll, the reload counters and
 * the last error, and readers on several threads while versions are
 * published (run under TSan too: make tsan, or build-tsan's
 * unit_test_rules_holder).
 */
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gw/rules_holder.h"
#include "gwt_config.h"

/* Rules with one limit "a" of n requests per second: n tells versions
 * apart. */
static struct gw_rules *rules_n(long n)
{
    char text[160];
    snprintf(text, sizeof(text),
             "{\"version\":1,\"limits\":[{\"name\":\"a\",\"rates\":[{\"requests\":%ld,"
             "\"window\":\"1s\"}]}]}",
             n);
    return gwt_rules_json(text, NULL);
}

static long rules_requests(const struct gw_rules *r)
{
    return (long)r->limits[0].rates[0].requests;
}

static int refs(struct gw_rules *r)
{
    return atomic_load((_Atomic int *)&r->refs);
}

/* create takes the reference; get adds one; publish drops the old one,
 * which lives on while a reader holds it; destroy drops the last. */
static void test_references(void **state)
{
    (void)state;
    struct gw_rules *one = rules_n(1);
    struct gw_rules_holder *h = NULL;
    assert_int_equal(gw_rules_holder_create(&h, one), 0);
    assert_int_equal(gw_rules_holder_generation(h), 1);
    assert_int_equal(refs(one), 1);

    struct gw_rules *held = gw_rules_holder_get(h);
    assert_ptr_equal(held, one);
    assert_int_equal(refs(one), 2);

    struct gw_rules *two = rules_n(2);
    gw_rules_holder_publish(h, two);
    assert_int_equal(gw_rules_holder_generation(h), 2);
    assert_int_equal(refs(one), 1); /* only the reader's now */
    assert_int_equal(rules_requests(held), 1);
    gw_rules_put(held);

    struct gw_rules *cur = gw_rules_holder_get(h);
    assert_ptr_equal(cur, two);
    assert_int_equal(refs(two), 2);
    gw_rules_holder_destroy(h);
    assert_int_equal(refs(two), 1); /* survives the holder for its reader */
    assert_int_equal(rules_requests(cur), 2);
    gw_rules_put(cur);
    gw_rules_holder_destroy(NULL);
}

static void test_counters_and_error(void **state)
{
    (void)state;
    struct gw_rules_holder *h = NULL;
    assert_int_equal(gw_rules_holder_create(&h, rules_n(1)), 0);
    uint64_t ok = 99, bad = 99;
    gw_rules_holder_reloads(h, &ok, &bad);
    assert_int_equal(ok, 0);
    assert_int_equal(bad, 0);
    char buf[GW_RULES_HOLDER_ERROR_MAX];
    assert_int_equal(gw_rules_holder_last_error(h, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "");

    const char *why = "limits[0].rates[0].window: \"0s\": too short";
    gw_rules_holder_count_reload(h, false, why);
    gw_rules_holder_count_reload(h, true, NULL);
    gw_rules_holder_count_reload(h, true, "ignored");
    gw_rules_holder_reloads(h, &ok, NULL);
    gw_rules_holder_reloads(h, NULL, &bad);
    assert_int_equal(ok, 2);
    assert_int_equal(bad, 1);
    /* A success keeps the last error. */
    assert_int_equal(gw_rules_holder_last_error(h, buf, sizeof(buf)), strlen(why));
    assert_string_equal(buf, why);
    char small[8];
    assert_int_equal(gw_rules_holder_last_error(h, small, sizeof(small)), strlen(why));
    assert_string_equal(small, "limits[");

    /* A long error is cut, never overflows. */
    char big[2 * GW_RULES_HOLDER_ERROR_MAX];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    gw_rules_holder_count_reload(h, false, big);
    assert_int_equal(gw_rules_holder_last_error(h, buf, sizeof(buf)),
                     GW_RULES_HOLDER_ERROR_MAX - 1);
    gw_rules_holder_count_reload(h, false, NULL);
    assert_int_equal(gw_rules_holder_last_error(h, buf, sizeof(buf)), 0);
    gw_rules_holder_reloads(h, NULL, &bad);
    assert_int_equal(bad, 3);
    gw_rules_holder_destroy(h);

    assert_string_equal(gw_rules_source_name(GW_RULES_SOURCE_ENV), "env");
    assert_string_equal(gw_rules_source_name(GW_RULES_SOURCE_FILE), "file");
    assert_string_equal(gw_rules_source_name((enum gw_rules_source)77), "unknown");
}

/* ---- threads ------------------------------------------------------------ */

#define READERS  4
#define VERSIONS 200
#define MAX_MS   30000 /* a reader's bound in time, far above what it needs */

struct race {
    struct gw_rules_holder *h;
    _Atomic bool done; /* the publisher finished */
    long swaps[READERS];
    const char *fail[READERS];
};

struct reader_arg {
    struct race *race;
    int id;
};

/* A worker's side: one acquire load per "request"; a new reference only
 * when the generation moved. Rules published for generation g carry g
 * requests, so a reader checks it never gets rules older than the
 * generation it saw, and never goes back in time. */
static void *reader(void *p)
{
    struct reader_arg *a = p;
    struct race *race = a->race;
    uint64_t seen = gw_rules_holder_generation(race->h);
    struct gw_rules *mine = gw_rules_holder_get(race->h);
    long last = rules_requests(mine);
    int64_t deadline = (int64_t)gw_now_ms() + MAX_MS;
    for (long i = 0;; i++) {
        if ((i & 1023) == 0) {
            if ((int64_t)gw_now_ms() > deadline)
                break;
            sched_yield(); /* let the publisher run on a busy machine */
        }
        bool finished = atomic_load(&race->done);
        uint64_t gen = gw_rules_holder_generation(race->h);
        if (gen != seen) {
            struct gw_rules *r = gw_rules_holder_get(race->h);
            if (rules_requests(r) < (long)gen) {
                race->fail[a->id] = "got rules older than the generation read before";
                gw_rules_put(r);
                break;
            }
            gw_rules_put(mine);
            mine = r;
            seen = gen;
            race->swaps[a->id]++;
        }
        /* "Decide a request" with the version held: read it whole. */
        long n = rules_requests(mine);
        if (n < last || strcmp(mine->limits[0].name, "a") != 0) {
            race->fail[a->id] = "went back to an older version";
            break;
        }
        last = n;
        if (finished && gen == VERSIONS + 1)
            break;
    }
    if (race->fail[a->id] == NULL && last != VERSIONS + 1)
        race->fail[a->id] = "never reached the last version";
    gw_rules_put(mine);
    return NULL;
}

static void test_readers_while_publishing(void **state)
{
    (void)state;
    struct race race = {0};
    assert_int_equal(gw_rules_holder_create(&race.h, rules_n(1)), 0);
    pthread_t th[READERS];
    struct reader_arg args[READERS];
    for (int i = 0; i < READERS; i++) {
        args[i] = (struct reader_arg){&race, i};
        assert_int_equal(pthread_create(&th[i], NULL, reader, &args[i]), 0);
    }
    /* The reloader's side: parse off the readers, publish, count. */
    for (long g = 2; g <= VERSIONS + 1; g++) {
        gw_rules_holder_publish(race.h, rules_n(g));
        gw_rules_holder_count_reload(race.h, true, NULL);
    }
    atomic_store(&race.done, true);
    for (int i = 0; i < READERS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    for (int i = 0; i < READERS; i++) {
        if (race.fail[i])
            fail_msg("reader %d: %s", i, race.fail[i]);
        /* A reader that started late may see the last version at once. */
        assert_true(race.swaps[i] <= VERSIONS);
    }
    uint64_t ok = 0;
    gw_rules_holder_reloads(race.h, &ok, NULL);
    assert_int_equal(ok, VERSIONS);
    struct gw_rules *last = gw_rules_holder_get(race.h);
    assert_int_equal(rules_requests(last), VERSIONS + 1);
    assert_int_equal(refs(last), 2); /* the readers gave theirs back */
    gw_rules_put(last);
    gw_rules_holder_destroy(race.h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_references),
        cmocka_unit_test(test_counters_and_error),
        cmocka_unit_test(test_readers_while_publishing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
