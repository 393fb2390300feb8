/*
 * Unit tests of the Redis transport (src/redis_conn.c) against scripted
 * servers on 127.0.0.1 and a unix socket, run on a thread of this process:
 * a reply cut into one-byte writes is parsed whole, pipelined replies come
 * out in order, a reply that never comes costs exactly the wait given and
 * leaves the link usable (get_reply) or closes it (command), EOF and bytes
 * that are not RESP close the link with their errors, the idle probe sees
 * a server that closed or spoke out of turn, and a refused connect reports
 * at once. TLS is covered against a real redis-server by
 * test/integration/test_redis_tls.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "redis_conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* A server's script: wait for `expect` bytes of request, then send each
 * chunk (pausing gap_ms between them), then close when `close_after`. */
struct script {
    size_t expect;
    const char *chunks[8];
    int nchunks;
    int gap_ms;
    bool close_after;
    int hold_ms; /* keep the connection this long before closing */
};

struct server {
    int lfd;
    int port;
    char path[108];
    struct script sc;
    pthread_t th;
};

static void pause_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void *serve(void *arg)
{
    struct server *s = arg;
    int fd = accept(s->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    char buf[4096];
    size_t got = 0;
    while (got < s->sc.expect) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    for (int i = 0; i < s->sc.nchunks; i++) {
        if (i > 0 && s->sc.gap_ms > 0)
            pause_ms(s->sc.gap_ms);
        ssize_t w = write(fd, s->sc.chunks[i], strlen(s->sc.chunks[i]));
        (void)w;
    }
    if (s->sc.hold_ms > 0)
        pause_ms(s->sc.hold_ms);
    if (!s->sc.close_after) {
        /* Until the client closes (bounded by a receive timeout). */
        struct timeval tv = {.tv_sec = 3};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        while (read(fd, buf, sizeof(buf)) > 0)
            ;
    }
    close(fd);
    return NULL;
}

static void server_start(struct server *s, bool unix_socket)
{
    if (unix_socket) {
        snprintf(s->path, sizeof(s->path), "/tmp/gw-rconn-%d.sock", (int)getpid());
        unlink(s->path);
        s->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        strcpy(a.sun_path, s->path);
        assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    } else {
        s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
        socklen_t len = sizeof(a);
        assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &len), 0);
        s->port = ntohs(a.sin_port);
    }
    assert_int_equal(listen(s->lfd, 4), 0);
    assert_int_equal(pthread_create(&s->th, NULL, serve, s), 0);
}

static void server_stop(struct server *s)
{
    shutdown(s->lfd, SHUT_RDWR);
    pthread_join(s->th, NULL);
    close(s->lfd);
    if (s->path[0] != '\0')
        unlink(s->path);
}

static const struct gw_redis_target plain = {.host = "127.0.0.1"};

static void open_conn(struct gw_redis_conn *c, const struct server *s)
{
    assert_int_equal(gw_redis_conn_init(c, &plain, NULL, 0), 0);
    int rc = s->path[0] != '\0' ? gw_redis_conn_start(c, NULL, 0, s->path, NULL)
                                : gw_redis_conn_start(c, "127.0.0.1", s->port, NULL, NULL);
    assert_true(rc == 0 || rc == -EINPROGRESS);
    assert_int_equal(gw_redis_conn_establish(c, 2000), 0);
    assert_int_equal(c->state, GW_RCONN_OPEN);
}

static int64_t ms_since(uint64_t t0)
{
    return (int64_t)(gw_now_ms() - t0);
}

static const char ping[] = "*1\r\n$4\r\nPING\r\n";

/* A reply written one byte at a time, then a pipelined pair. */
static void test_fragmented_and_pipelined(void **state)
{
    (void)state;
    struct server s = {
        .sc = {.expect = 3 * (sizeof(ping) - 1),
               .chunks = {"*", "2", "\r", "\n", ":", "7", "\r\n$2\r\nok\r\n", "+PONG\r\n:42\r\n"},
               .nchunks = 8,
               .gap_ms = 5}};
    server_start(&s, false);
    struct gw_redis_conn c;
    open_conn(&c, &s);
    for (int i = 0; i < 3; i++)
        assert_int_equal(gw_redis_conn_append(&c, ping, sizeof(ping) - 1), 0);
    redisReply *r = NULL;
    assert_int_equal(gw_redis_conn_get_reply(&c, (void **)&r, 2000), 0);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 2);
    assert_int_equal(r->element[0]->integer, 7);
    assert_string_equal(r->element[1]->str, "ok");
    freeReplyObject(r);
    assert_int_equal(gw_redis_conn_get_reply(&c, (void **)&r, 2000), 0);
    assert_string_equal(r->str, "PONG");
    freeReplyObject(r);
    /* Already buffered: no wait at all. */
    assert_int_equal(gw_redis_conn_get_reply(&c, (void **)&r, 0), 0);
    assert_int_equal(r->integer, 42);
    freeReplyObject(r);
    gw_redis_conn_deinit(&c);
    server_stop(&s);
}

/* No reply: get_reply waits exactly its wait and keeps the link; command
 * closes it with -ETIMEDOUT. */
static void test_reply_timeout(void **state)
{
    (void)state;
    struct server s = {.sc = {.expect = 1}};
    server_start(&s, false);
    struct gw_redis_conn c;
    open_conn(&c, &s);
    assert_int_equal(gw_redis_conn_append(&c, ping, sizeof(ping) - 1), 0);
    void *r = NULL;
    uint64_t t0 = gw_now_ms();
    assert_int_equal(gw_redis_conn_get_reply(&c, &r, 0), -EAGAIN);
    assert_true(ms_since(t0) < 50);
    t0 = gw_now_ms();
    assert_int_equal(gw_redis_conn_get_reply(&c, &r, 120), -EAGAIN);
    assert_in_range(ms_since(t0), 115, 300);
    assert_int_equal(c.state, GW_RCONN_OPEN);
    t0 = gw_now_ms();
    assert_int_equal(gw_redis_conn_command(&c, ping, sizeof(ping) - 1, &r, 80), -ETIMEDOUT);
    assert_in_range(ms_since(t0), 75, 300);
    assert_int_equal(c.state, GW_RCONN_CLOSED);
    assert_non_null(strstr(gw_redis_conn_error(&c), "no reply within 80 ms"));
    gw_redis_conn_deinit(&c);
    server_stop(&s);
}

/* EOF mid-reply, and bytes that are not RESP, over a unix socket. */
static void test_eof_and_garbage(void **state)
{
    (void)state;
    struct server s = {
        .sc = {.expect = 1, .chunks = {"$10\r\nabc"}, .nchunks = 1, .close_after = true}};
    server_start(&s, true);
    struct gw_redis_conn c;
    open_conn(&c, &s);
    void *r = NULL;
    assert_int_equal(gw_redis_conn_command(&c, ping, sizeof(ping) - 1, &r, 2000), -ECONNRESET);
    assert_string_equal(gw_redis_conn_error(&c), "read: closed by the server");
    gw_redis_conn_deinit(&c);
    server_stop(&s);

    struct server g = {
        .sc = {.expect = 1, .chunks = {"HTTP/1.1 400 Bad Request\r\n\r\n"}, .nchunks = 1}};
    server_start(&g, true);
    open_conn(&c, &g);
    assert_int_equal(gw_redis_conn_command(&c, ping, sizeof(ping) - 1, &r, 2000), -EBADMSG);
    assert_non_null(strstr(gw_redis_conn_error(&c), "protocol error"));
    assert_int_equal(c.state, GW_RCONN_CLOSED);
    gw_redis_conn_deinit(&c);
    server_stop(&g);
}

/* The idle probe: quiet is fine; a close or unsolicited bytes are not. */
static void test_probe(void **state)
{
    (void)state;
    struct server s = {.sc = {.expect = 0, .hold_ms = 100, .close_after = true}};
    server_start(&s, false);
    struct gw_redis_conn c;
    open_conn(&c, &s);
    assert_int_equal(gw_redis_conn_probe(&c), 0);
    int rc = 0;
    for (int i = 0; i < 200 && rc == 0; i++) {
        pause_ms(5);
        rc = gw_redis_conn_probe(&c);
    }
    assert_int_equal(rc, -ECONNRESET);
    assert_non_null(strstr(gw_redis_conn_error(&c), "idle connection"));
    gw_redis_conn_deinit(&c);
    server_stop(&s);

    struct server u = {.sc = {.expect = 0, .chunks = {"+surprise\r\n"}, .nchunks = 1}};
    server_start(&u, false);
    open_conn(&c, &u);
    rc = 0;
    for (int i = 0; i < 200 && rc == 0; i++) {
        pause_ms(5);
        rc = gw_redis_conn_probe(&c);
    }
    assert_int_equal(rc, -EPROTO);
    assert_string_equal(gw_redis_conn_error(&c), "idle connection: unexpected data");
    gw_redis_conn_deinit(&c);
    server_stop(&u);
}

/* Nothing listens: the error comes from the connect, at once. */
static void test_refused(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd); /* bound, then released: nothing listens there */
    struct gw_redis_conn c;
    assert_int_equal(gw_redis_conn_init(&c, &plain, NULL, 0), 0);
    int rc = gw_redis_conn_start(&c, "127.0.0.1", ntohs(a.sin_port), NULL, NULL);
    if (rc == -EINPROGRESS)
        rc = gw_redis_conn_establish(&c, 1000);
    assert_int_equal(rc, -ECONNREFUSED);
    assert_string_equal(gw_redis_conn_error(&c), "connect: Connection refused");
    void *r = NULL;
    assert_int_equal(gw_redis_conn_get_reply(&c, &r, 0), -ENOTCONN);
    gw_redis_conn_deinit(&c);
}

/* A CA file that is not a certificate: the TLS context says which
 * variable. */
static void test_tls_context_errors(void **state)
{
    (void)state;
    struct gw_redis_target t = {
        .host = "127.0.0.1", .tls = true, .tls_verify = true, .tls_ca_file = "/etc/hostname"};
    struct gw_redis_conn c;
    char why[256] = "";
    assert_int_equal(gw_redis_conn_init(&c, &t, why, sizeof(why)), -EINVAL);
    assert_non_null(strstr(why, "REDIS_TLS_CA_FILE=/etc/hostname"));
    gw_redis_conn_deinit(&c);
    t.tls_ca_file = NULL; /* the system trust store */
    assert_int_equal(gw_redis_conn_init(&c, &t, why, sizeof(why)), 0);
    assert_non_null(c.ctx);
    gw_redis_conn_deinit(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fragmented_and_pipelined),
        cmocka_unit_test(test_reply_timeout),
        cmocka_unit_test(test_eof_and_garbage),
        cmocka_unit_test(test_probe),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_tls_context_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
