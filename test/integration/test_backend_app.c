/*
 * Integration test of backend_app: starts the built binary on a port the
 * kernel picks, drives it over raw sockets (responses parsed with llhttp,
 * JSON with jansson) and checks it exits 0 on SIGTERM. Self-contained: the
 * helpers below are static on purpose (no dependency on test/support).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <llhttp.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef GW_BIN_DIR
#error "GW_BIN_DIR must point at the build directory"
#endif

#define START_TIMEOUT_MS  10000 /* wait for the listening line */
#define STOP_TIMEOUT_MS   10000 /* wait for exit after SIGTERM */
#define IO_TIMEOUT_S      10    /* socket send/receive timeout */
#define MAX_HEADERS       32
#define MAX_BODY_KEPT     (4 * 1024 * 1024)
#define GW_TEST_MIN(a, b) ((a) < (b) ? (a) : (b))

/* ---- process helpers ---------------------------------------------------- */

struct backend {
    pid_t pid;      /* 0 when not running */
    int err_fd;     /* read end of the child's stderr */
    unsigned port;  /* from the listening line */
    char log[8192]; /* stderr seen so far (truncated), for failure messages */
    size_t log_len;
};

static struct backend backend;

static long ms_left(const struct timespec *start, long budget_ms)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long used = (now.tv_sec - start->tv_sec) * 1000 + (now.tv_nsec - start->tv_nsec) / 1000000;
    return budget_ms - used;
}

/* Reads what the child wrote to stderr, waiting up to timeout_ms. Returns
 * bytes read, 0 at EOF, -1 on timeout or error. */
static ssize_t read_stderr(struct backend *b, int timeout_ms)
{
    struct pollfd pfd = {.fd = b->err_fd, .events = POLLIN};
    int n = poll(&pfd, 1, timeout_ms);
    if (n <= 0)
        return -1;
    char chunk[1024];
    ssize_t got = read(b->err_fd, chunk, sizeof(chunk));
    if (got > 0) {
        size_t room = sizeof(b->log) - 1 - b->log_len;
        size_t keep = GW_TEST_MIN((size_t)got, room);
        memcpy(b->log + b->log_len, chunk, keep);
        b->log_len += keep;
        b->log[b->log_len] = '\0';
    }
    return got;
}

/* Starts backend_app with BACKEND_PORT=0 and waits (bounded) for its
 * "backend_app listening on <host>:<port>" line. Returns 0 or -1. */
static int backend_start(struct backend *b)
{
    memset(b, 0, sizeof(*b));
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(p[1], STDERR_FILENO);
        setenv("BACKEND_PORT", "0", 1);
        setenv("BACKEND_HOST", "127.0.0.1", 1);
        unsetenv("BACKEND_LOG");
        execl(GW_BIN_DIR "/backend_app", "backend_app", (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    b->pid = pid;
    b->err_fd = p[0];
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    static const char marker[] = "backend_app listening on ";
    for (;;) {
        const char *line = strstr(b->log, marker);
        const char *eol = line ? strchr(line, '\n') : NULL;
        if (eol) {
            const char *colon = eol;
            while (colon > line && *colon != ':')
                colon--;
            b->port = (unsigned)strtoul(colon + 1, NULL, 10);
            return b->port > 0 ? 0 : -1;
        }
        long left = ms_left(&start, START_TIMEOUT_MS);
        if (left <= 0 || read_stderr(b, (int)left) <= 0) {
            fprintf(stderr, "backend_app did not start; stderr:\n%s\n", b->log);
            return -1;
        }
    }
}

/* Sends SIGTERM and waits (bounded) for the exit; returns the wait status,
 * or -1 when the process had to be killed. */
static int backend_stop(struct backend *b, int sig)
{
    if (b->pid <= 0)
        return -1;
    kill(b->pid, sig);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    /* stderr reaches EOF when the process is gone: no polling with sleeps. */
    for (;;) {
        long left = ms_left(&start, STOP_TIMEOUT_MS);
        ssize_t n = left > 0 ? read_stderr(b, (int)left) : -1;
        if (n == 0)
            break;
        if (n < 0) {
            kill(b->pid, SIGKILL);
            break;
        }
    }
    int status = 0;
    pid_t w = waitpid(b->pid, &status, 0);
    bool timed_out = ms_left(&start, STOP_TIMEOUT_MS) <= 0;
    b->pid = 0;
    close(b->err_fd);
    b->err_fd = -1;
    return w < 0 || timed_out ? -1 : status;
}

/* ---- raw HTTP client ---------------------------------------------------- */

struct header {
    char name[64];
    char value[512];
};

struct response {
    int status;
    struct header headers[MAX_HEADERS];
    int nheaders;
    char *body; /* NUL-terminated, first MAX_BODY_KEPT bytes */
    size_t body_len;
    int nchunks;   /* non-empty chunks of a chunked body */
    bool complete; /* message complete was reached */
};

struct client {
    int fd;
    llhttp_t parser;
    llhttp_settings_t settings;
    struct response *cur; /* response being parsed */
    bool head;            /* the request of cur was HEAD: no body follows */
    bool in_value;        /* last header callback was a value */
    char buf[65536];      /* received, not yet parsed: buf[off, len) */
    size_t off, len;
};

static struct client *client_of(llhttp_t *p)
{
    return (struct client *)((char *)p - offsetof(struct client, parser));
}

static void append_str(char *dst, size_t cap, const char *at, size_t n)
{
    size_t have = strlen(dst);
    size_t keep = GW_TEST_MIN(n, cap - 1 - have);
    memcpy(dst + have, at, keep);
    dst[have + keep] = '\0';
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    struct client *c = client_of(p);
    struct response *r = c->cur;
    if (c->in_value || r->nheaders == 0) {
        if (r->nheaders == MAX_HEADERS)
            return -1;
        memset(&r->headers[r->nheaders++], 0, sizeof(struct header));
        c->in_value = false;
    }
    append_str(r->headers[r->nheaders - 1].name, sizeof(r->headers[0].name), at, n);
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    struct client *c = client_of(p);
    c->in_value = true;
    struct response *r = c->cur;
    append_str(r->headers[r->nheaders - 1].value, sizeof(r->headers[0].value), at, n);
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    struct client *c = client_of(p);
    c->cur->status = llhttp_get_status_code(p);
    /* A response to HEAD has no body whatever its headers say. */
    return c->head && c->cur->status >= 200 ? 1 : 0;
}

static int on_chunk_header(llhttp_t *p)
{
    if (p->content_length > 0)
        client_of(p)->cur->nchunks++;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    struct response *r = client_of(p)->cur;
    if (r->body_len < MAX_BODY_KEPT) {
        size_t keep = GW_TEST_MIN(n, MAX_BODY_KEPT - r->body_len);
        char *nb = realloc(r->body, r->body_len + keep + 1);
        if (!nb)
            return -1;
        r->body = nb;
        memcpy(r->body + r->body_len, at, keep);
        r->body[r->body_len + keep] = '\0';
    }
    r->body_len += n;
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    client_of(p)->cur->complete = true;
    return HPE_PAUSED; /* one response per read_response call */
}

static int tcp_connect(unsigned port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static struct client *client_open(void)
{
    struct client *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->fd = tcp_connect(backend.port);
    assert_true(c->fd >= 0);
    llhttp_settings_init(&c->settings);
    c->settings.on_header_field = on_header_field;
    c->settings.on_header_value = on_header_value;
    c->settings.on_headers_complete = on_headers_complete;
    c->settings.on_chunk_header = on_chunk_header;
    c->settings.on_body = on_body;
    c->settings.on_message_complete = on_message_complete;
    llhttp_init(&c->parser, HTTP_RESPONSE, &c->settings);
    return c;
}

static void client_close(struct client *c)
{
    close(c->fd);
    free(c);
}

static void send_all(int fd, const void *data, size_t n)
{
    const char *p = data;
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        assert_true(w > 0);
        p += w;
        n -= (size_t)w;
    }
}

static void send_str(struct client *c, const char *s)
{
    send_all(c->fd, s, strlen(s));
}

static void response_free(struct response *r)
{
    free(r->body);
    memset(r, 0, sizeof(*r));
}

/* Reads one response (bounded by the socket timeout). head: the request was
 * HEAD. Returns 0 when a complete response was parsed, -1 otherwise. */
static int read_response(struct client *c, struct response *r, bool head)
{
    memset(r, 0, sizeof(*r));
    c->cur = r;
    c->head = head;
    c->in_value = false;
    for (;;) {
        if (c->off < c->len) {
            llhttp_errno_t err = llhttp_execute(&c->parser, c->buf + c->off, c->len - c->off);
            if (err == HPE_PAUSED) {
                c->off = (size_t)(llhttp_get_error_pos(&c->parser) - c->buf);
                llhttp_resume(&c->parser);
                return 0;
            }
            if (err != HPE_OK) {
                fprintf(stderr, "response parse error: %s\n", llhttp_errno_name(err));
                return -1;
            }
            c->off = c->len = 0;
        }
        ssize_t n = recv(c->fd, c->buf, sizeof(c->buf), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            /* EOF ends a close-delimited body */
            llhttp_errno_t err = llhttp_finish(&c->parser);
            return (err == HPE_OK || err == HPE_PAUSED) && r->complete ? 0 : -1;
        }
        c->off = 0;
        c->len = (size_t)n;
    }
}

static const char *header_get(const struct response *r, const char *name)
{
    for (int i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    return NULL;
}

/* One request on a fresh connection; the response is left in *r. */
static void request_once(const char *req, bool head, struct response *r)
{
    struct client *c = client_open();
    send_str(c, req);
    assert_int_equal(read_response(c, r, head), 0);
    client_close(c);
}

static json_t *body_json(const struct response *r)
{
    json_error_t e;
    json_t *j = json_loadb(r->body ? r->body : "", r->body_len, 0, &e);
    if (!j)
        fprintf(stderr, "bad JSON (%s): %.*s\n", e.text, (int)r->body_len, r->body);
    assert_non_null(j);
    return j;
}

static void sha256_hex(const void *data, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned int len = 0;
    assert_int_equal(EVP_Digest(data, n, md, &len, EVP_sha256(), NULL), 1);
    assert_int_equal(len, 32);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* ---- tests -------------------------------------------------------------- */

static void test_users_by_id(void **state)
{
    (void)state;
    struct response r;
    request_once("GET /users/7 HTTP/1.1\r\nHost: t\r\n\r\n", false, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(header_get(&r, "Content-Type"));
    assert_string_equal(header_get(&r, "Content-Type"), "application/json");
    assert_int_equal(r.body_len, strlen("{\"id\":7,\"name\":\"User 7\"}"));
    assert_string_equal(r.body, "{\"id\":7,\"name\":\"User 7\"}");
    response_free(&r);

    request_once("GET /users/seven HTTP/1.1\r\nHost: t\r\n\r\n", false, &r);
    assert_int_equal(r.status, 404);
    json_decref(body_json(&r));
    response_free(&r);
}

static void test_echo_chunked_body(void **state)
{
    (void)state;
    enum { BODY = 100000 };
    unsigned char *body = malloc(BODY);
    assert_non_null(body);
    for (size_t i = 0; i < BODY; i++)
        body[i] = (unsigned char)((i * 31 + 7) % 251);
    char want_sha[65];
    sha256_hex(body, BODY, want_sha);

    struct client *c = client_open();
    send_str(c, "POST /echo?q=1&x=%41 HTTP/1.1\r\nHost: t\r\nX-Test: one\r\n"
                "Transfer-Encoding: chunked\r\nx-test: two\r\n\r\n");
    /* Odd chunk sizes, including one larger than any read buffer. */
    static const size_t sizes[] = {1, 4096, 70000, BODY - 1 - 4096 - 70000};
    size_t off = 0;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        char line[32];
        snprintf(line, sizeof(line), "%zx\r\n", sizes[i]);
        send_str(c, line);
        send_all(c->fd, body + off, sizes[i]);
        send_str(c, "\r\n");
        off += sizes[i];
    }
    send_str(c, "0\r\n\r\n");
    assert_int_equal(off, BODY);

    struct response r;
    assert_int_equal(read_response(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    json_t *j = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "method")), "POST");
    assert_string_equal(json_string_value(json_object_get(j, "target")), "/echo?q=1&x=%41");
    assert_string_equal(json_string_value(json_object_get(j, "http_version")), "1.1");
    assert_int_equal(json_integer_value(json_object_get(j, "body_length")), BODY);
    assert_string_equal(json_string_value(json_object_get(j, "body_sha256")), want_sha);
    /* Headers in received order, names as sent. */
    static const char *want[][2] = {
        {"Host", "t"}, {"X-Test", "one"}, {"Transfer-Encoding", "chunked"}, {"x-test", "two"}};
    json_t *h = json_object_get(j, "headers");
    assert_int_equal(json_array_size(h), 4);
    for (size_t i = 0; i < 4; i++) {
        json_t *pair = json_array_get(h, i);
        assert_string_equal(json_string_value(json_array_get(pair, 0)), want[i][0]);
        assert_string_equal(json_string_value(json_array_get(pair, 1)), want[i][1]);
    }
    json_decref(j);
    response_free(&r);
    client_close(c);
    free(body);
}

static void test_expect_continue(void **state)
{
    (void)state;
    struct client *c = client_open();
    send_str(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                "Expect: 100-continue\r\n\r\n");
    struct response r;
    /* The interim answer must come before we send any body byte. */
    assert_int_equal(read_response(c, &r, false), 0);
    assert_int_equal(r.status, 100);
    response_free(&r);
    send_str(c, "hello");
    assert_int_equal(read_response(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    char want_sha[65];
    sha256_hex("hello", 5, want_sha);
    json_t *j = body_json(&r);
    assert_int_equal(json_integer_value(json_object_get(j, "body_length")), 5);
    assert_string_equal(json_string_value(json_object_get(j, "body_sha256")), want_sha);
    json_decref(j);
    response_free(&r);
    client_close(c);
}

static void test_bytes_length(void **state)
{
    (void)state;
    struct response r;
    request_once("GET /bytes?n=100000 HTTP/1.1\r\nHost: t\r\n\r\n", false, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(header_get(&r, "Content-Length"));
    assert_string_equal(header_get(&r, "Content-Length"), "100000");
    assert_null(header_get(&r, "Transfer-Encoding"));
    assert_int_equal(r.body_len, 100000);
    for (size_t i = 0; i < r.body_len; i++)
        if (r.body[i] != (char)('a' + i % 26))
            fail_msg("byte %zu is %d", i, r.body[i]);
    response_free(&r);
}

static void test_stream_chunked(void **state)
{
    (void)state;
    struct response r;
    request_once("GET /stream?chunks=5&size=1000 HTTP/1.1\r\nHost: t\r\n\r\n", false, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(header_get(&r, "Transfer-Encoding"));
    assert_string_equal(header_get(&r, "Transfer-Encoding"), "chunked");
    assert_null(header_get(&r, "Content-Length"));
    assert_int_equal(r.nchunks, 5);
    assert_int_equal(r.body_len, 5000);
    response_free(&r);
}

static void test_status_503(void **state)
{
    (void)state;
    struct response r;
    request_once("GET /status/503 HTTP/1.1\r\nHost: t\r\n\r\n", false, &r);
    assert_int_equal(r.status, 503);
    json_t *j = body_json(&r);
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 503);
    json_decref(j);
    response_free(&r);

    request_once("GET /status/150 HTTP/1.1\r\nHost: t\r\n\r\n", false, &r);
    assert_int_equal(r.status, 400); /* 1xx cannot be a final status */
    response_free(&r);
}

static void test_head_root(void **state)
{
    (void)state;
    struct client *c = client_open();
    /* HEAD then GET pipelined: if HEAD carried body bytes, the GET response
     * would not parse. */
    send_str(c, "HEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n");
    struct response head, get;
    assert_int_equal(read_response(c, &head, true), 0);
    assert_int_equal(read_response(c, &get, false), 0);
    assert_int_equal(head.status, 200);
    assert_int_equal(get.status, 200);
    assert_int_equal(head.body_len, 0);
    assert_non_null(header_get(&head, "Content-Length"));
    assert_int_equal(strtoul(header_get(&head, "Content-Length"), NULL, 10), get.body_len);
    assert_string_equal(header_get(&head, "Content-Type"), "application/json");
    json_t *j = body_json(&get);
    assert_string_equal(json_string_value(json_object_get(j, "message")), "Hello from backend_app");
    json_decref(j);
    response_free(&head);
    response_free(&get);
    client_close(c);
}

static void test_keepalive_two_requests(void **state)
{
    (void)state;
    struct client *c = client_open();
    struct response r;
    send_str(c, "GET /users/1 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(read_response(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_null(header_get(&r, "Connection"));
    assert_string_equal(r.body, "{\"id\":1,\"name\":\"User 1\"}");
    response_free(&r);

    send_str(c, "GET /users/2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_int_equal(read_response(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"id\":2,\"name\":\"User 2\"}");
    assert_string_equal(header_get(&r, "Connection"), "close");
    response_free(&r);
    /* After Connection: close the server closes: next read is EOF. */
    char b;
    assert_int_equal(recv(c->fd, &b, 1, 0), 0);
    client_close(c);
}

static void test_close_is_partial(void **state)
{
    (void)state;
    int fd = tcp_connect(backend.port);
    assert_true(fd >= 0);
    const char *req = "GET /close HTTP/1.1\r\nHost: t\r\n\r\n";
    send_all(fd, req, strlen(req));
    char got[256];
    size_t len = 0;
    for (;;) {
        ssize_t n = recv(fd, got + len, sizeof(got) - 1 - len, 0);
        assert_true(n >= 0);
        if (n == 0)
            break;
        len += (size_t)n;
    }
    got[len] = '\0';
    assert_string_equal(got, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort");
    close(fd);
}

static void test_stats_max_concurrency(void **state)
{
    (void)state;
    struct response r;
    request_once("POST /stats/reset HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", false, &r);
    assert_int_equal(r.status, 200);
    response_free(&r);

    /* Three requests that overlap: all sent before any answer is read. */
    struct client *c[3];
    for (int i = 0; i < 3; i++) {
        c[i] = client_open();
        send_str(c[i], "GET /slow?ms=300 HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    for (int i = 0; i < 3; i++) {
        assert_int_equal(read_response(c[i], &r, false), 0);
        assert_int_equal(r.status, 200);
        response_free(&r);
        client_close(c[i]);
    }

    request_once("GET /stats HTTP/1.1\r\nHost: t\r\n\r\n", false, &r);
    assert_int_equal(r.status, 200);
    json_t *j = body_json(&r);
    assert_int_equal(json_integer_value(json_object_get(j, "max_concurrency")), 3);
    assert_int_equal(json_integer_value(json_object_get(j, "requests")), 3);
    assert_int_equal(json_integer_value(json_object_get(j, "in_flight")), 0);
    json_decref(j);
    response_free(&r);
}

/* Last test: the process ends with status 0 on SIGTERM, not by a signal,
 * promptly, even with connections in every state: idle after a request
 * (its thread has used OpenSSL), mid-body, and waiting inside /slow. */
static void test_sigterm_exits_zero(void **state)
{
    (void)state;
    struct client *idle = client_open();
    struct response r;
    send_str(idle, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi");
    assert_int_equal(read_response(idle, &r, false), 0);
    assert_int_equal(r.status, 200);
    response_free(&r);
    struct client *upload = client_open();
    send_str(upload, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nab");
    struct client *slow = client_open();
    send_str(slow, "GET /slow?ms=60000 HTTP/1.1\r\nHost: t\r\n\r\n");

    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    int status = backend_stop(&backend, SIGTERM);
    long took_ms = STOP_TIMEOUT_MS - ms_left(&start, STOP_TIMEOUT_MS);
    client_close(idle);
    client_close(upload);
    client_close(slow);
    if (status == -1)
        fail_msg("backend_app did not exit within %d ms of SIGTERM", STOP_TIMEOUT_MS);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("backend_app ended with wait status 0x%x; stderr:\n%s", status, backend.log);
    assert_true(took_ms < 5000); /* no waiting out /slow or the idle timeout */
}

static int group_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    return backend_start(&backend);
}

static int group_teardown(void **state)
{
    (void)state;
    if (backend.pid > 0) {
        int status = backend_stop(&backend, SIGKILL);
        (void)status;
    }
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_users_by_id),        cmocka_unit_test(test_echo_chunked_body),
        cmocka_unit_test(test_expect_continue),    cmocka_unit_test(test_bytes_length),
        cmocka_unit_test(test_stream_chunked),     cmocka_unit_test(test_status_503),
        cmocka_unit_test(test_head_root),          cmocka_unit_test(test_keepalive_two_requests),
        cmocka_unit_test(test_close_is_partial),   cmocka_unit_test(test_stats_max_concurrency),
        cmocka_unit_test(test_sigterm_exits_zero),
    };
    return cmocka_run_group_tests_name("backend_app", tests, group_setup, group_teardown);
}
