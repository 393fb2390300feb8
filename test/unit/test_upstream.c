/*
 * Unit tests of the upstream HTTP/1.1 client (src/upstream.c) against a
 * loopback listener the test answers by hand: head, body and done callbacks
 * in order and the socket pooled after a clean exchange; a refused connect
 * reported as 502; the retry-once rule on a pooled socket the backend closed
 * while idle; the response deadline (504); backpressure on the owner's
 * output. Only 127.0.0.1; every loop is bounded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "gw/common.h"
#include "gw/loop.h"
#include "gw/resolve.h"
#include "upstream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netdb.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- the owner: records what the client reports ---- */

struct owner {
    struct gw_upstream *u; /* NULL once put */
    struct gw_buf out;     /* stands for the owner's client output (backpressure) */
    int connects, heads, dones, errors;
    int status, err_status;
    char body[8192];
    size_t body_len;
    bool hold_body; /* on_body does not consume: out fills up */
};

static void own_connect(void *ctx)
{
    ((struct owner *)ctx)->connects++;
}

static int own_head(void *ctx, const struct gw_http_head *h)
{
    struct owner *o = ctx;
    o->heads++;
    o->status = h->status;
    return 0;
}

static int own_body(void *ctx, const char *data, size_t len)
{
    struct owner *o = ctx;
    if (o->hold_body)
        return gw_buf_append(&o->out, data, len) == 0 ? 0 : -1;
    size_t n = GW_MIN(len, sizeof(o->body) - o->body_len);
    memcpy(o->body + o->body_len, data, n);
    o->body_len += n;
    return 0;
}

static void own_done(void *ctx)
{
    struct owner *o = ctx;
    o->dones++;
    gw_upstream_put(o->u);
    o->u = NULL;
}

static void own_error(void *ctx, int status, const char *detail)
{
    struct owner *o = ctx;
    (void)detail;
    o->errors++;
    o->err_status = status;
    gw_upstream_put(o->u);
    o->u = NULL;
}

static void own_drive(struct owner *o)
{
    if (o->u)
        gw_upstream_drive(o->u);
    if (o->u)
        gw_upstream_update_interest(o->u);
}

static void own_event(void *ctx)
{
    own_drive(ctx);
}

static const struct gw_upstream_cbs cbs = {
    .on_connect = own_connect,
    .on_head = own_head,
    .on_body = own_body,
    .on_done = own_done,
    .on_error = own_error,
    .on_event = own_event,
};

/* ---- the backend: a loopback listener answered by hand ---- */

struct backend {
    int lfd;        /* listener */
    int fds[4];     /* accepted connections, -1 = none */
    int naccepted;  /* connections accepted so far */
    char req[4096]; /* bytes received on the newest connection */
    size_t req_len;
    const char *answer; /* sent once a whole request head arrived; NULL = never */
    size_t sent;        /* bytes of answer sent */
    bool answered;      /* all of it sent */
};

static struct sockaddr_storage backend_addr;
static socklen_t backend_len;

static void backend_start(struct backend *b)
{
    memset(b, 0, sizeof(*b));
    for (int i = 0; i < 4; i++)
        b->fds[i] = -1;
    b->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    assert_true(b->lfd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(b->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(b->lfd, 8), 0);
    socklen_t len = sizeof(backend_addr);
    assert_int_equal(getsockname(b->lfd, (struct sockaddr *)&backend_addr, &len), 0);
    backend_len = len;
}

static void backend_stop(struct backend *b)
{
    for (int i = 0; i < 4; i++)
        if (b->fds[i] >= 0)
            close(b->fds[i]);
    close(b->lfd);
}

/* One non-blocking step: accept, read, answer. */
static void backend_step(struct backend *b)
{
    int fd = accept4(b->lfd, NULL, NULL, SOCK_NONBLOCK);
    if (fd >= 0) {
        assert_true(b->naccepted < 4);
        b->fds[b->naccepted++] = fd;
        b->req_len = 0;
        b->sent = 0;
        b->answered = false;
    }
    if (b->naccepted == 0 || b->fds[b->naccepted - 1] < 0)
        return;
    int cur = b->fds[b->naccepted - 1];
    ssize_t n = recv(cur, b->req + b->req_len, sizeof(b->req) - 1 - b->req_len, 0);
    if (n > 0)
        b->req_len += (size_t)n;
    b->req[b->req_len] = '\0';
    if (b->answer && !b->answered && strstr(b->req, "\r\n\r\n")) {
        size_t len = strlen(b->answer);
        ssize_t w = send(cur, b->answer + b->sent, len - b->sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0)
            b->sent += (size_t)w;
        b->answered = b->sent == len;
    }
}

/* ---- harness ---- */

static struct gw_loop loop;
static struct gw_upstream_pool *pool;

static void reap_hook(struct gw_loop *l, void *ctx)
{
    (void)l;
    gw_upstream_pool_reap(ctx);
}

static void harness_start_name(int response_timeout_ms, struct gw_resolve_name *name)
{
    assert_int_equal(gw_loop_init(&loop), 0);
    struct gw_upstream_settings s = {
        .name = name,
        .addr = &backend_addr,
        .addr_len = backend_len,
        .keepalive = 4,
        .idle_timeout_ms = 60000,
        .connect_timeout_ms = 1000,
        .response_timeout_ms = response_timeout_ms,
        .max_head_bytes = 16384,
        .stats = NULL,
    };
    assert_int_equal(gw_upstream_pool_create(&pool, &loop, &s), 0);
    loop.before_sleep = reap_hook;
    loop.before_sleep_ctx = pool;
}

static void harness_start(int response_timeout_ms)
{
    harness_start_name(response_timeout_ms, NULL);
}

static void harness_stop(void)
{
    gw_upstream_pool_destroy(pool);
    gw_loop_deinit(&loop);
}

static const struct gw_proxy_request_ctx pctx = {
    .client_addr = "127.0.0.1",
    .base_path = "",
    .backend_hostport = "127.0.0.1:1",
    .preserve_host = true,
    .upstream_keepalive = true,
    .forwarded_proto = "http",
};

/* A parsed GET head to forward (the parser owns the slices). */
static void parse_get(struct gw_http_parser *p, const char *raw)
{
    assert_int_equal(gw_http_parser_init(p, GW_HTTP_REQUEST, 8192, 0, NULL, NULL), 0);
    size_t used = 0;
    assert_int_equal(gw_http_parser_execute(p, raw, strlen(raw), &used), GW_HTTP_HEAD);
}

static void start_get(struct owner *o, const struct gw_http_head *req)
{
    int err = 0;
    o->u = gw_upstream_get(pool, &cbs, o, &o->out, &err);
    assert_non_null(o->u);
    assert_int_equal(gw_upstream_send_head(o->u, req, &pctx), 0);
    assert_int_equal(gw_upstream_send_end(o->u), 0);
    own_drive(o);
}

/* Runs loop and backend until the owner gave the client back, at most
 * about 3 s. */
static void run_until_put(struct owner *o, struct backend *b)
{
    for (int i = 0; i < 300 && o->u; i++) {
        assert_int_equal(gw_loop_run_once(&loop, 10), 0);
        if (b)
            backend_step(b);
    }
    assert_null(o->u);
    assert_int_equal(gw_loop_run_once(&loop, 0), 0); /* reap */
}

static const char ok_answer[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

/* ---- tests ---- */

static void test_head_body_done_then_pooled(void **state)
{
    (void)state;
    struct backend b;
    backend_start(&b);
    b.answer = ok_answer;
    harness_start(2000);
    struct gw_http_parser p;
    parse_get(&p, "GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n");

    struct owner o = {0};
    start_get(&o, &p.head);
    run_until_put(&o, &b);
    assert_int_equal(o.connects, 1);
    assert_int_equal(o.heads, 1);
    assert_int_equal(o.status, 200);
    assert_int_equal(o.dones, 1);
    assert_int_equal(o.errors, 0);
    assert_int_equal(o.body_len, 5);
    assert_memory_equal(o.body, "hello", 5);
    assert_non_null(strstr(b.req, "GET /a?x=1 HTTP/1.1\r\n"));
    assert_int_equal(gw_upstream_pool_idle(pool), 1); /* clean keep-alive: pooled */

    /* The next exchange reuses the pooled socket: no new connect. */
    struct owner o2 = {0};
    b.req_len = 0;
    b.sent = 0;
    b.answered = false;
    start_get(&o2, &p.head);
    run_until_put(&o2, &b);
    assert_int_equal(o2.connects, 0);
    assert_int_equal(o2.dones, 1);
    assert_int_equal(b.naccepted, 1);

    gw_http_parser_deinit(&p);
    gw_buf_release(&o.out);
    gw_buf_release(&o2.out);
    harness_stop();
    backend_stop(&b);
}

static void test_connect_refused_is_502(void **state)
{
    (void)state;
    struct backend b;
    backend_start(&b);
    close(b.lfd); /* nobody listens on that port any more */
    b.lfd = socket(AF_INET, SOCK_STREAM, 0);
    harness_start(2000);
    struct gw_http_parser p;
    parse_get(&p, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");

    struct owner o = {0};
    int err = 0;
    o.u = gw_upstream_get(pool, &cbs, &o, &o.out, &err);
    if (o.u) {
        assert_int_equal(gw_upstream_send_head(o.u, &p.head, &pctx), 0);
        assert_int_equal(gw_upstream_send_end(o.u), 0);
        own_drive(&o);
        run_until_put(&o, NULL);
        assert_int_equal(o.errors, 1);
        assert_int_equal(o.err_status, 502);
        assert_int_equal(o.connects, 0);
    } else {
        assert_int_equal(err, -ECONNREFUSED); /* refused at once */
    }
    assert_int_equal(o.heads, 0);
    assert_int_equal(o.dones, 0);
    gw_http_parser_deinit(&p);
    harness_stop();
    backend_stop(&b);
}

/* The backend closes a pooled socket while it idles; the loop has not seen
 * it yet when the next request takes the socket. An idempotent body-less
 * request is sent once more on a new connection and succeeds: the owner
 * never hears of the stale socket. */
static void test_retry_once_on_stale_pooled_socket(void **state)
{
    (void)state;
    struct backend b;
    backend_start(&b);
    b.answer = ok_answer;
    harness_start(2000);
    struct gw_http_parser p;
    parse_get(&p, "GET /r HTTP/1.1\r\nHost: h\r\n\r\n");

    struct owner o = {0};
    start_get(&o, &p.head);
    run_until_put(&o, &b);
    assert_int_equal(gw_upstream_pool_idle(pool), 1);

    close(b.fds[0]); /* the backend drops the idle connection */
    b.fds[0] = -1;
    struct owner o2 = {0};
    start_get(&o2, &p.head); /* takes the stale socket, writes into it */
    run_until_put(&o2, &b);
    assert_int_equal(o2.errors, 0);
    assert_int_equal(o2.dones, 1);
    assert_int_equal(o2.status, 200);
    assert_int_equal(o2.connects, 1); /* the retry's new connection */
    assert_int_equal(b.naccepted, 2);
    assert_non_null(strstr(b.req, "GET /r HTTP/1.1\r\n"));

    gw_http_parser_deinit(&p);
    harness_stop();
    backend_stop(&b);
}

/* A POST is not retried: the stale socket is the owner's 502. */
static void test_no_retry_for_post(void **state)
{
    (void)state;
    struct backend b;
    backend_start(&b);
    b.answer = ok_answer;
    harness_start(2000);
    struct gw_http_parser p, post;
    parse_get(&p, "GET /r HTTP/1.1\r\nHost: h\r\n\r\n");
    parse_get(&post, "POST /r HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n");

    struct owner o = {0};
    start_get(&o, &p.head);
    run_until_put(&o, &b);
    close(b.fds[0]);
    b.fds[0] = -1;
    struct owner o2 = {0};
    int err = 0;
    o2.u = gw_upstream_get(pool, &cbs, &o2, &o2.out, &err);
    assert_non_null(o2.u);
    assert_int_equal(gw_upstream_send_head(o2.u, &post.head, &pctx), 0);
    assert_int_equal(gw_upstream_send_body(o2.u, "hi", 2), 0);
    assert_int_equal(gw_upstream_send_end(o2.u), 0);
    own_drive(&o2);
    run_until_put(&o2, &b);
    assert_int_equal(o2.errors, 1);
    assert_int_equal(o2.err_status, 502);
    assert_int_equal(b.naccepted, 1);

    gw_http_parser_deinit(&p);
    gw_http_parser_deinit(&post);
    harness_stop();
    backend_stop(&b);
}

/* No response byte for UPSTREAM_TIMEOUT_MS once the request is sent: 504. */
static void test_response_timeout_is_504(void **state)
{
    (void)state;
    struct backend b;
    backend_start(&b);
    b.answer = NULL; /* reads the request, never answers */
    harness_start(150);
    struct gw_http_parser p;
    parse_get(&p, "GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");

    struct owner o = {0};
    uint64_t t0 = gw_now_ms();
    start_get(&o, &p.head);
    run_until_put(&o, &b);
    uint64_t took = gw_now_ms() - t0;
    assert_int_equal(o.errors, 1);
    assert_int_equal(o.err_status, 504);
    assert_int_equal(o.heads, 0);
    assert_true(took >= 140 && took < 2000);
    assert_int_equal(gw_upstream_pool_idle(pool), 0); /* never pooled after a failure */

    gw_http_parser_deinit(&p);
    harness_stop();
    backend_stop(&b);
}

/* Backpressure: while the owner's output holds GW_STREAM_WINDOW bytes, no
 * more body is handed over; once it drains, the rest follows. */
static void test_backpressure_on_owner_output(void **state)
{
    (void)state;
    static char answer[4 * GW_STREAM_WINDOW + 128];
    size_t body = 3 * GW_STREAM_WINDOW;
    int hl =
        snprintf(answer, sizeof(answer), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", body);
    memset(answer + hl, 'b', body);
    answer[(size_t)hl + body] = '\0';
    struct backend b;
    backend_start(&b);
    b.answer = answer;
    harness_start(2000);
    struct gw_http_parser p;
    parse_get(&p, "GET /big HTTP/1.1\r\nHost: h\r\n\r\n");

    struct owner o = {.hold_body = true};
    start_get(&o, &p.head);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(gw_loop_run_once(&loop, 10), 0);
        backend_step(&b);
    }
    assert_int_equal(o.heads, 1);
    assert_int_equal(o.dones, 0);
    assert_true(gw_buf_len(&o.out) >= GW_STREAM_WINDOW);
    assert_true(gw_buf_len(&o.out) < 2 * GW_STREAM_WINDOW); /* bounded */
    /* The owner's client reads everything: the rest flows. */
    size_t seen = 0;
    for (int i = 0; i < 400 && o.u; i++) {
        seen += gw_buf_len(&o.out);
        gw_buf_clear(&o.out);
        own_drive(&o);
        assert_int_equal(gw_loop_run_once(&loop, 10), 0);
        backend_step(&b);
    }
    seen += gw_buf_len(&o.out);
    assert_null(o.u);
    assert_int_equal(o.dones, 1);
    assert_int_equal(seen, body);

    gw_buf_release(&o.out);
    gw_http_parser_deinit(&p);
    assert_int_equal(gw_loop_run_once(&loop, 0), 0);
    harness_stop();
    backend_stop(&b);
}

/* ---- a backend name that follows DNS (gw/resolve.h) ---- */

/* The test's DNS for the name: 127.0.0.1 on these ports, in order. */
static atomic_int dns_ports[2];
static atomic_int dns_count;

static int dns_lookup(void *ctx, const char *host, int port, struct gw_resolve_addrs *out)
{
    (void)ctx;
    (void)host;
    (void)port;
    out->count = 0;
    int n = atomic_load(&dns_count);
    for (int i = 0; i < n; i++) {
        struct sockaddr_in *in = (struct sockaddr_in *)&out->addr[i];
        memset(&out->addr[i], 0, sizeof(out->addr[i]));
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)atomic_load(&dns_ports[i]));
        in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        out->len[i] = sizeof(*in);
        out->count++;
    }
    return out->count > 0 ? 0 : EAI_NONAME;
}

static int port_of(const struct sockaddr_storage *ss)
{
    return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

/* A loopback port nobody listens on (bound, then closed). */
static int dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

/* The name's first address refuses: the same exchange moves on to the
 * second and succeeds; the owner hears of one connect only. */
static void test_name_addresses_tried_in_order(void **state)
{
    (void)state;
    struct backend b;
    backend_start(&b);
    b.answer = ok_answer;
    atomic_store(&dns_ports[0], dead_port());
    atomic_store(&dns_ports[1], port_of(&backend_addr));
    atomic_store(&dns_count, 2);
    gw_resolve_set_lookup(dns_lookup, NULL);
    struct gw_resolve_name *name = NULL;
    assert_int_equal(gw_resolve_add("backend.test", 80, "BACKEND_URL", &name), 0);
    harness_start_name(2000, name);
    struct gw_http_parser p;
    parse_get(&p, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");

    struct owner o = {0};
    start_get(&o, &p.head);
    run_until_put(&o, &b);
    assert_int_equal(o.errors, 0);
    assert_int_equal(o.dones, 1);
    assert_int_equal(o.status, 200);
    assert_int_equal(o.connects, 1);
    assert_int_equal(b.naccepted, 1);

    gw_http_parser_deinit(&p);
    gw_buf_release(&o.out);
    harness_stop();
    backend_stop(&b);
    gw_resolve_stop();
    gw_resolve_set_lookup(NULL, NULL);
}

/* The name moves to another address: the pooled socket to the old one is
 * closed at the next upkeep, and the next exchange goes to the new one. */
static void test_name_change_closes_pooled_sockets(void **state)
{
    (void)state;
    struct backend b1, b2;
    backend_start(&b1);
    b1.answer = ok_answer;
    int p1 = port_of(&backend_addr);
    backend_start(&b2);
    b2.answer = ok_answer;
    int p2 = port_of(&backend_addr);
    atomic_store(&dns_ports[0], p1);
    atomic_store(&dns_count, 1);
    gw_resolve_set_lookup(dns_lookup, NULL);
    struct gw_resolve_name *name = NULL;
    assert_int_equal(gw_resolve_add("backend.test", 80, "BACKEND_URL", &name), 0);
    assert_int_equal(gw_resolve_start(5), 0);
    harness_start_name(2000, name);
    struct gw_http_parser p;
    parse_get(&p, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");

    struct owner o = {0};
    start_get(&o, &p.head);
    run_until_put(&o, &b1);
    assert_int_equal(o.dones, 1);
    assert_int_equal(gw_upstream_pool_idle(pool), 1);

    uint64_t gen = gw_resolve_gen(name);
    atomic_store(&dns_ports[0], p2);
    for (int i = 0; i < 400 && gw_resolve_gen(name) == gen; i++)
        poll(NULL, 0, 5);
    assert_true(gw_resolve_gen(name) > gen);
    gw_upstream_pool_close_expired(pool, loop.now_ms);
    assert_int_equal(gw_upstream_pool_idle(pool), 0);

    struct owner o2 = {0};
    start_get(&o2, &p.head);
    run_until_put(&o2, &b2);
    assert_int_equal(o2.dones, 1);
    assert_int_equal(o2.connects, 1);
    assert_int_equal(b1.naccepted, 1);
    assert_int_equal(b2.naccepted, 1);

    gw_http_parser_deinit(&p);
    gw_buf_release(&o.out);
    gw_buf_release(&o2.out);
    harness_stop();
    backend_stop(&b1);
    backend_stop(&b2);
    gw_resolve_stop();
    gw_resolve_set_lookup(NULL, NULL);
}

/* A name without an address: the exchange cannot start (nothing to put). */
static void test_name_without_address(void **state)
{
    (void)state;
    atomic_store(&dns_count, 0);
    gw_resolve_set_lookup(dns_lookup, NULL);
    struct gw_resolve_name *name = NULL;
    assert_int_equal(gw_resolve_add("backend.test", 80, "BACKEND_URL", &name), 0);
    harness_start_name(2000, name);
    struct owner o = {0};
    int err = 0;
    o.u = gw_upstream_get(pool, &cbs, &o, &o.out, &err);
    assert_null(o.u);
    assert_int_equal(err, -EHOSTUNREACH);
    assert_int_equal(gw_loop_run_once(&loop, 0), 0); /* reap */
    harness_stop();
    gw_resolve_stop();
    gw_resolve_set_lookup(NULL, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_head_body_done_then_pooled),
        cmocka_unit_test(test_connect_refused_is_502),
        cmocka_unit_test(test_retry_once_on_stale_pooled_socket),
        cmocka_unit_test(test_no_retry_for_post),
        cmocka_unit_test(test_response_timeout_is_504),
        cmocka_unit_test(test_backpressure_on_owner_output),
        cmocka_unit_test(test_name_addresses_tried_in_order),
        cmocka_unit_test(test_name_change_closes_pooled_sockets),
        cmocka_unit_test(test_name_without_address),
    };
    return cmocka_run_group_tests_name("upstream", tests, NULL, NULL);
}
