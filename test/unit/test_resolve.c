/*
 * Unit tests of the resolver (src/resolve.c) with its lookup replaced by a
 * table the test edits (gw_resolve_set_lookup), so every answer, failure
 * and change is the test's: literals never looked up, a name followed on
 * its interval and on kicks (and how soon), a new order that is no change,
 * failures that keep the last list, a start without an address, interval 0,
 * kicks rate-limited, host text for hiredis, and readers copying lists
 * while the resolver publishes new ones (never a torn list). Every wait is
 * bounded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "gw/common.h"
#include "gw/resolve.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* ---- the test's DNS: one answer for every name, edited by the test ---- */

static struct {
    pthread_mutex_t mu;
    char addrs[GW_RESOLVE_MAX_ADDRS][64]; /* IPv4/IPv6 literals of the answer */
    int count;                            /* 0 = the name does not resolve */
    atomic_int lookups;                   /* calls so far */
    int churn;                            /* > 0: each lookup answers a new list (stress) */
} dns = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void dns_set(int count, const char *const addrs[])
{
    pthread_mutex_lock(&dns.mu);
    dns.count = count;
    for (int i = 0; i < count; i++)
        snprintf(dns.addrs[i], sizeof(dns.addrs[i]), "%s", addrs[i]);
    pthread_mutex_unlock(&dns.mu);
}

static void put_addr(struct gw_resolve_addrs *out, const char *text, int port)
{
    struct sockaddr_storage *ss = &out->addr[out->count];
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, text, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        out->len[out->count++] = sizeof(*in4);
    } else if (inet_pton(AF_INET6, text, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        out->len[out->count++] = sizeof(*in6);
    }
}

static int fake_lookup(void *ctx, const char *host, int port, struct gw_resolve_addrs *out)
{
    (void)ctx;
    (void)host;
    int n = atomic_fetch_add(&dns.lookups, 1) + 1;
    out->count = 0;
    pthread_mutex_lock(&dns.mu);
    if (dns.churn > 0) {
        /* Version v: 1..3 addresses 10.v.0.1, 10.v.0.2, ... (readers
         * check that one copy never mixes versions). */
        int v = n % 250 + 1, cnt = n % 3 + 1;
        for (int i = 0; i < cnt; i++) {
            char text[32];
            snprintf(text, sizeof(text), "10.%d.0.%d", v, i + 1);
            put_addr(out, text, port);
        }
    } else {
        for (int i = 0; i < dns.count; i++)
            put_addr(out, dns.addrs[i], port);
    }
    pthread_mutex_unlock(&dns.mu);
    return out->count > 0 ? 0 : EAI_NONAME;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits (at most timeout_ms) for the name's generation to pass gen.
 * Returns the milliseconds it took, or -1. */
static long long wait_gen_after(struct gw_resolve_name *n, uint64_t gen, int timeout_ms)
{
    long long start = now_ms();
    while (now_ms() - start <= timeout_ms) {
        if (gw_resolve_gen(n) > gen)
            return now_ms() - start;
        sleep_ms(2);
    }
    return -1;
}

/* Waits (at most timeout_ms) until more than `than` lookups ran. */
static bool wait_lookups(int than, int timeout_ms)
{
    long long start = now_ms();
    while (now_ms() - start <= timeout_ms) {
        if (atomic_load(&dns.lookups) > than)
            return true;
        sleep_ms(2);
    }
    return false;
}

/* Threads of this process named "gw-resolve" (/proc/self/task/<tid>/comm). */
static int resolver_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e = readdir(d); e != NULL; e = readdir(d)) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], comm[32] = "";
        snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (f != NULL) {
            if (fgets(comm, sizeof(comm), f) != NULL && strncmp(comm, "gw-resolve", 10) == 0)
                n++;
            fclose(f);
        }
    }
    closedir(d);
    return n;
}

static bool holds(const struct gw_resolve_addrs *a, const char *text, int port)
{
    struct gw_resolve_addrs one = {.count = 0};
    put_addr(&one, text, port);
    return one.count == 1 && gw_resolve_addrs_contain(a, &one.addr[0]);
}

static int setup(void **state)
{
    (void)state;
    dns.count = 0;
    dns.churn = 0;
    atomic_store(&dns.lookups, 0);
    gw_resolve_set_lookup(fake_lookup, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    gw_resolve_stop();
    gw_resolve_set_lookup(NULL, NULL);
    return 0;
}

/* ---- tests ---- */

static void test_literals_are_never_looked_up(void **state)
{
    (void)state;
    struct gw_resolve_name *v4, *v6, *lh;
    assert_int_equal(gw_resolve_add("127.0.0.1", 8001, "BACKEND_URL", &v4), 0);
    assert_int_equal(gw_resolve_add("::1", 6379, "REDIS_URL", &v6), 0);
    assert_int_equal(gw_resolve_add("localhost", 80, "X", &lh), 0);
    assert_int_equal(gw_resolve_start(10), 0);
    assert_int_equal(resolver_threads(), 0); /* literals only: no resolver thread */
    struct gw_resolve_addrs a;
    assert_int_equal(gw_resolve_read(v4, &a), 1);
    assert_true(holds(&a, "127.0.0.1", 8001));
    assert_false(holds(&a, "127.0.0.1", 8002)); /* the port counts */
    assert_int_equal(gw_resolve_read(v6, &a), 1);
    assert_true(holds(&a, "::1", 6379));
    assert_int_equal(gw_resolve_read(lh, &a), 1);
    assert_true(holds(&a, "127.0.0.1", 80));
    assert_int_equal(gw_resolve_gen(v4), 1);
    gw_resolve_kick(v4); /* a literal ignores kicks */
    assert_false(wait_lookups(0, 100));
    assert_int_equal(gw_resolve_gen(v4), 1);
}

static void test_registry(void **state)
{
    (void)state;
    const char *a1[] = {"10.0.0.1"};
    dns_set(1, a1);
    struct gw_resolve_name *n1, *n2, *n3;
    assert_int_equal(gw_resolve_add("app", 8080, "BACKEND_URL", &n1), 0);
    assert_int_equal(gw_resolve_add("app", 8080, "REDIS_URL", &n2), 0);
    assert_ptr_equal(n1, n2); /* one name, one lookup */
    assert_int_equal(atomic_load(&dns.lookups), 1);
    assert_int_equal(gw_resolve_add("app", 8081, "X", &n3), 0);
    assert_ptr_not_equal(n1, n3);
    assert_ptr_equal(gw_resolve_find("app", 8080), n1);
    assert_null(gw_resolve_find("app", 9));
    assert_null(gw_resolve_find("other", 8080));
    assert_int_equal(gw_resolve_add("", 80, "X", &n3), -EINVAL);
    assert_int_equal(gw_resolve_add("app", 0, "X", &n3), -EINVAL);
    assert_int_equal(gw_resolve_add("app", 65536, "X", &n3), -EINVAL);
    int added = 2;
    for (int port = 1; added < GW_RESOLVE_MAX_NAMES; port++, added++)
        assert_int_equal(gw_resolve_add("10.1.1.1", port, "X", &n3), 0);
    assert_int_equal(gw_resolve_add("10.1.1.1", 999, "X", &n3), -ENOSPC);
}

static void test_name_follows_on_interval(void **state)
{
    (void)state;
    const char *a1[] = {"10.0.0.1"}, *a2[] = {"10.0.0.2"};
    dns_set(1, a1);
    struct gw_resolve_name *n;
    assert_int_equal(gw_resolve_add("app", 8080, "BACKEND_URL", &n), 0);
    struct gw_resolve_addrs a;
    assert_int_equal(gw_resolve_read(n, &a), 1);
    assert_true(holds(&a, "10.0.0.1", 8080));
    uint64_t gen = gw_resolve_gen(n);
    assert_true(gen > 0);
    assert_int_equal(a.gen, gen);
    assert_int_equal(resolver_threads(), 0);
    assert_int_equal(gw_resolve_start(100), 0);
    assert_int_equal(resolver_threads(), 1); /* a name: the resolver thread */
    dns_set(1, a2);
    long long took = wait_gen_after(n, gen, 2000);
    assert_true(took >= 0);
    assert_true(took <= 100 + 900); /* the interval plus slack for a loaded machine */
    assert_int_equal(gw_resolve_read(n, &a), 1);
    assert_true(holds(&a, "10.0.0.2", 8080));
    assert_false(holds(&a, "10.0.0.1", 8080));
    print_message("interval 100 ms: change followed after %lld ms\n", took);
}

static void test_new_order_is_no_change(void **state)
{
    (void)state;
    const char *ab[] = {"10.0.0.1", "10.0.0.2"}, *ba[] = {"10.0.0.2", "10.0.0.1"};
    dns_set(2, ab);
    struct gw_resolve_name *n;
    assert_int_equal(gw_resolve_add("app", 80, "BACKEND_URL", &n), 0);
    uint64_t gen = gw_resolve_gen(n);
    assert_int_equal(gw_resolve_start(5), 0);
    dns_set(2, ba);
    int seen = atomic_load(&dns.lookups);
    assert_true(wait_lookups(seen + 3, 2000));
    assert_int_equal(gw_resolve_gen(n), gen);
    struct gw_resolve_addrs a;
    assert_int_equal(gw_resolve_read(n, &a), 2);
    /* The published order is kept: the first address stays first. */
    assert_true(holds(&a, "10.0.0.1", 80));
    char text[128];
    gw_resolve_format(&a, text, sizeof(text));
    assert_string_equal(text, "10.0.0.1, 10.0.0.2");
}

static void test_failure_keeps_the_last_list(void **state)
{
    (void)state;
    const char *a1[] = {"10.0.0.1"}, *a3[] = {"10.0.0.3"};
    dns_set(1, a1);
    struct gw_resolve_name *n;
    assert_int_equal(gw_resolve_add("app", 80, "BACKEND_URL", &n), 0);
    uint64_t gen = gw_resolve_gen(n);
    assert_int_equal(gw_resolve_start(5), 0);
    dns_set(0, NULL);
    int seen = atomic_load(&dns.lookups);
    assert_true(wait_lookups(seen + 3, 2000));
    struct gw_resolve_addrs a;
    assert_int_equal(gw_resolve_read(n, &a), 1);
    assert_true(holds(&a, "10.0.0.1", 80));
    assert_int_equal(gw_resolve_gen(n), gen);
    dns_set(1, a3); /* and it recovers */
    assert_true(wait_gen_after(n, gen, 2000) >= 0);
    assert_int_equal(gw_resolve_read(n, &a), 1);
    assert_true(holds(&a, "10.0.0.3", 80));
}

static void test_start_without_address_then_resolves(void **state)
{
    (void)state;
    struct gw_resolve_name *n;
    assert_int_equal(gw_resolve_add("app", 6379, "REDIS_URL", &n), 0);
    struct gw_resolve_addrs a;
    assert_int_equal(gw_resolve_read(n, &a), 0);
    assert_int_equal(gw_resolve_gen(n), 0);
    char text[INET6_ADDRSTRLEN];
    assert_int_equal(gw_resolve_host_text("app", 6379, 0, text, sizeof(text)), -EHOSTUNREACH);
    /* Interval 0 = only at start-up; a name without an address is still
     * retried until it has one. */
    assert_int_equal(gw_resolve_start(0), 0);
    const char *a1[] = {"10.0.0.9"};
    dns_set(1, a1);
    long long took = wait_gen_after(n, 0, GW_RESOLVE_RETRY_MS + 1000);
    assert_true(took >= 0);
    assert_int_equal(gw_resolve_host_text("app", 6379, 0, text, sizeof(text)), 0);
    assert_string_equal(text, "10.0.0.9");
    /* Resolved now: with interval 0, neither time nor kicks look it up
     * again (a bounded observation of an absence). */
    int seen = atomic_load(&dns.lookups);
    gw_resolve_kick(n);
    assert_false(wait_lookups(seen, GW_RESOLVE_KICK_MIN_MS + 300));
}

static void test_kick_follows_soon(void **state)
{
    (void)state;
    const char *a1[] = {"10.0.0.1"}, *a2[] = {"10.0.0.2"};
    dns_set(1, a1);
    struct gw_resolve_name *n;
    assert_int_equal(gw_resolve_add("app", 80, "BACKEND_URL", &n), 0);
    uint64_t gen = gw_resolve_gen(n);
    assert_int_equal(gw_resolve_start(3600000), 0); /* the interval alone: an hour */
    dns_set(1, a2);
    long long kicked = now_ms();
    gw_resolve_kick(n);
    long long took = wait_gen_after(n, gen, 3000);
    assert_true(took >= 0);
    /* At most GW_RESOLVE_KICK_MIN_MS after the previous lookup (at add). */
    assert_true(now_ms() - kicked <= GW_RESOLVE_KICK_MIN_MS + 900);
    print_message("kick: change followed after %lld ms\n", took);
}

struct kicker {
    struct gw_resolve_name *n;
    long long until;
};

static void *kick_loop(void *arg)
{
    struct kicker *k = arg;
    while (now_ms() < k->until)
        gw_resolve_kick(k->n);
    return NULL;
}

static void test_kicks_are_rate_limited(void **state)
{
    (void)state;
    const char *a1[] = {"10.0.0.1"};
    dns_set(1, a1);
    struct gw_resolve_name *n;
    assert_int_equal(gw_resolve_add("app", 80, "BACKEND_URL", &n), 0);
    assert_int_equal(gw_resolve_start(3600000), 0);
    int before = atomic_load(&dns.lookups);
    long long start = now_ms();
    struct kicker k = {.n = n, .until = start + 1200};
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&t[i], NULL, kick_loop, &k), 0);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    long long elapsed = now_ms() - start;
    int lookups = atomic_load(&dns.lookups) - before;
    /* Millions of kicks; one lookup per GW_RESOLVE_KICK_MIN_MS at most. */
    assert_true(lookups >= 1);
    assert_true(lookups <= elapsed / GW_RESOLVE_KICK_MIN_MS + 1);
}

static void test_host_text(void **state)
{
    (void)state;
    const char *two[] = {"10.0.0.1", "2001:db8::7"};
    dns_set(2, two);
    struct gw_resolve_name *n;
    assert_int_equal(gw_resolve_add("redis", 6379, "REDIS_URL", &n), 0);
    char text[INET6_ADDRSTRLEN];
    assert_int_equal(gw_resolve_host_text("redis", 6379, 0, text, sizeof(text)), 0);
    assert_string_equal(text, "10.0.0.1");
    assert_int_equal(gw_resolve_host_text("redis", 6379, 1, text, sizeof(text)), 0);
    assert_string_equal(text, "2001:db8::7"); /* no brackets: hiredis takes it so */
    assert_int_equal(gw_resolve_host_text("redis", 6379, 2, text, sizeof(text)), 0);
    assert_string_equal(text, "10.0.0.1"); /* modulo the count */
    /* Not registered: as written (unit tests of stores without a resolver). */
    assert_int_equal(gw_resolve_host_text("elsewhere", 6379, 0, text, sizeof(text)), 0);
    assert_string_equal(text, "elsewhere");
    char tiny[4];
    assert_int_equal(gw_resolve_host_text("elsewhere", 6379, 0, tiny, sizeof(tiny)), -ENOSPC);
    struct gw_resolve_addrs a;
    gw_resolve_read(n, &a);
    char list[128];
    gw_resolve_format(&a, list, sizeof(list));
    assert_string_equal(list, "10.0.0.1, [2001:db8::7]");
    struct gw_resolve_addrs none = {.count = 0};
    gw_resolve_format(&none, list, sizeof(list));
    assert_string_equal(list, "none");
}

/* ---- readers against a resolver that publishes all the time ---- */

struct reader {
    struct gw_resolve_name *n;
    long long until;
    long reads, changes, torn;
};

static void *read_loop(void *arg)
{
    struct reader *r = arg;
    uint64_t last = 0;
    struct gw_resolve_addrs a;
    while (now_ms() < r->until) {
        if (gw_resolve_gen(r->n) == last)
            continue;
        gw_resolve_read(r->n, &a);
        r->reads++;
        if (a.gen != last)
            r->changes++;
        last = a.gen;
        /* One version per copy: every address 10.v.0.i with the same v,
         * i = 1..count in order. */
        const struct sockaddr_in *first = (const struct sockaddr_in *)&a.addr[0];
        uint32_t v = (ntohl(first->sin_addr.s_addr) >> 16) & 0xff;
        for (unsigned i = 0; i < a.count; i++) {
            const struct sockaddr_in *in = (const struct sockaddr_in *)&a.addr[i];
            uint32_t want = (10u << 24) | (v << 16) | (i + 1);
            if (in->sin_family != AF_INET || ntohl(in->sin_addr.s_addr) != want)
                r->torn++;
        }
        if (a.count < 1 || a.count > 3)
            r->torn++;
    }
    return NULL;
}

static void test_readers_never_see_a_torn_list(void **state)
{
    (void)state;
    dns.churn = 1;
    struct gw_resolve_name *n;
    assert_int_equal(gw_resolve_add("app", 80, "BACKEND_URL", &n), 0);
    assert_int_equal(gw_resolve_start(1), 0); /* a new list every millisecond */
    struct reader r[2];
    pthread_t t[2];
    long long until = now_ms() + 600;
    for (int i = 0; i < 2; i++) {
        r[i] = (struct reader){.n = n, .until = until};
        assert_int_equal(pthread_create(&t[i], NULL, read_loop, &r[i]), 0);
    }
    long changes = 0;
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(r[i].torn, 0);
        changes += r[i].changes;
    }
    assert_true(changes > 10); /* they did see the lists change under them */
    print_message("readers: %ld list changes seen, %d lookups, none torn\n", changes,
                  atomic_load(&dns.lookups));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_literals_are_never_looked_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_name_follows_on_interval, setup, teardown),
        cmocka_unit_test_setup_teardown(test_new_order_is_no_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failure_keeps_the_last_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_without_address_then_resolves, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kick_follows_soon, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kicks_are_rate_limited, setup, teardown),
        cmocka_unit_test_setup_teardown(test_host_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readers_never_see_a_torn_list, setup, teardown),
    };
    return cmocka_run_group_tests_name("resolve", tests, NULL, NULL);
}
