/*
 * Chunked framing, byte-exact, both directions (SPEC.md §6, issue 14):
 * trailer fields relayed to a chunked receiver (RFC 9112 §7.1.2) and
 * dropped for another framing, framing and hop-by-hop trailer fields never
 * relayed, never merged into the head; chunk extensions (RFC 9112 §7.1.1,
 * quoted strings included) accepted and not forwarded; a bare LF ending a
 * chunk-size line accepted from an origin only. A raw origin written here
 * answers exactly the bytes each test scripts and records what it received.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "gwt_suite.h"
#include "gwtest.h"

/* ---- a raw origin: one connection, one scripted answer ------------------- */

struct origin {
    int lfd, port;
    const char *until; /* the request is in once it holds this and ends in CRLFCRLF */
    const char *reply; /* written at once, then the origin closes */
    char got[8192];    /* the request bytes received */
    size_t got_len;
    pthread_t th;
};

static bool request_in(const struct origin *o)
{
    if (o->got_len < 4 || memcmp(o->got + o->got_len - 4, "\r\n\r\n", 4) != 0)
        return false;
    return o->until == NULL || strstr(o->got, o->until) != NULL;
}

static void *origin_thread(void *arg)
{
    struct origin *o = arg;
    int fd = gwt_accept_timed(o->lfd);
    if (fd < 0)
        return NULL;
    while (!request_in(o) && o->got_len + 1 < sizeof(o->got)) {
        ssize_t r = recv(fd, o->got + o->got_len, sizeof(o->got) - 1 - o->got_len, 0);
        if (r <= 0)
            break;
        o->got_len += (size_t)r;
        o->got[o->got_len] = '\0';
    }
    if (gwt_send_all(fd, o->reply, strlen(o->reply)) == 0)
        shutdown(fd, SHUT_WR);
    char sink[256];
    while (recv(fd, sink, sizeof(sink), 0) > 0)
        ; /* until the gateway closes: no reset may destroy the reply */
    close(fd);
    return NULL;
}

/* Starts the origin and a one-worker gateway in front of it (gw2). */
static void origin_start(struct origin *o, const char *until, const char *reply)
{
    memset(o, 0, sizeof(*o));
    o->until = until;
    o->reply = reply;
    o->lfd = gwt_listen_loopback(0, 8, &o->port);
    assert_int_equal(pthread_create(&o->th, NULL, origin_thread, o), 0);
    assert_int_equal(gwt_gateway_for(&gwt_fx.gw2, &gwt_fx.gport2, o->port,
                                     (const char *[]){"WORKER_THREADS=1", NULL}),
                     0);
}

static void origin_join(struct origin *o)
{
    pthread_join(o->th, NULL);
    close(o->lfd);
}

/* Sends req through the gateway and returns everything until EOF
 * (malloc'd, NUL-terminated). */
static char *exchange(const char *req, size_t *len)
{
    int fd = gwt_connect(gwt_fx.gport2);
    assert_true(fd >= 0);
    assert_int_equal(gwt_send_str(fd, req), 0);
    size_t cap = 65536, n = 0;
    char *b = malloc(cap);
    assert_non_null(b);
    for (;;) {
        ssize_t r = recv(fd, b + n, cap - 1 - n, 0);
        if (r <= 0)
            break;
        n += (size_t)r;
        if (n + 1 >= cap)
            break;
    }
    b[n] = '\0';
    close(fd);
    *len = n;
    return b;
}

/* origin_start(o, until, reply), then exchange(req) and origin_join(o):
 * what the client got until EOF (malloc'd, NUL-terminated); o->got holds
 * what the origin received. */
static char *through_origin(struct origin *o, const char *until, const char *reply, const char *req)
{
    origin_start(o, until, reply);
    size_t n;
    char *got = exchange(req, &n);
    origin_join(o);
    return got;
}

/* The part after the head (CRLFCRLF), or fails. */
static const char *body_of(const char *msg)
{
    const char *e = strstr(msg, "\r\n\r\n");
    if (!e)
        fail_msg("no complete head in: %s", msg);
    return e + 4;
}

static void assert_body(const char *msg, const char *want)
{
    const char *b = body_of(msg);
    if (strcmp(b, want) != 0) {
        gwt_print_escaped("got", b, strlen(b));
        gwt_print_escaped("want", want, strlen(want));
        fail_msg("body bytes differ");
    }
}

/* ---- trailers -------------------------------------------------------------- */

static const char chunked_with_trailers[] =
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum, X-Two\r\n"
    "Connection: close\r\n\r\n"
    "5\r\nhello\r\n0\r\nX-Checksum: abc\r\nContent-Length: 9\r\nX-Two:  two  \r\n"
    "Connection: x\r\n\r\n";

/* An HTTP/1.1 client gets the response chunked with its trailers, minus
 * the framing and hop-by-hop ones; none of them in the head. */
static void test_response_trailers_relayed(void **state)
{
    struct origin o;
    char *got = through_origin(&o, NULL, chunked_with_trailers,
                               "GET /t HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_body(got, "5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Two: two\r\n\r\n");
    char *head_end = strstr(got, "\r\n\r\n");
    *head_end = '\0';
    assert_non_null(strstr(got, "\r\nTransfer-Encoding: chunked"));
    assert_null(strcasestr(got, "X-Checksum"));
    assert_null(strcasestr(got, "Content-Length"));
    free(got);
}

/* An HTTP/1.0 client reads until close: no place for trailers, dropped. */
static void test_response_trailers_dropped_for_http10(void **state)
{
    struct origin o;
    char *got =
        through_origin(&o, NULL, chunked_with_trailers, "GET /t HTTP/1.0\r\nHost: a\r\n\r\n");
    assert_body(got, "hello");
    assert_null(strcasestr(got, "X-Checksum"));
    free(got);
}

/* A chunked request's trailers reach the backend after the last chunk. */
static void test_request_trailers_forwarded(void **state)
{
    struct origin o;
    char *got =
        through_origin(&o, "\r\n0\r\n", "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
                       "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                       "Connection: close\r\n\r\n"
                       "5\r\nhello\r\n0\r\nX-Sig: s1\r\nHost: evil\r\nX-Empty:\r\n\r\n");
    assert_non_null(strstr(got, "HTTP/1.1 204 "));
    assert_body(o.got, "5\r\nhello\r\n0\r\nX-Sig: s1\r\nX-Empty: \r\n\r\n");
    char *head_end = strstr(o.got, "\r\n\r\n");
    *head_end = '\0';
    assert_null(strcasestr(o.got, "X-Sig"));
    assert_non_null(strstr(o.got, "\r\nHost: a\r\n"));
    free(got);
}

/* ---- chunk extensions, bare LF from an origin ------------------------------- */

/* Decodes a chunked body whose size lines must be bare hex (no extension
 * reached the receiver) and CRLF-terminated; returns the payload
 * (malloc'd) or fails. rest gets what follows the last chunk. */
static char *dechunk_plain(const char *b, const char **rest)
{
    char *out = malloc(strlen(b) + 1);
    assert_non_null(out);
    size_t n = 0;
    for (int guard = 0; guard < 1000; guard++) {
        const char *e = strstr(b, "\r\n");
        if (!e)
            fail_msg("chunk-size line without CRLF: %s", b);
        for (const char *q = b; q < e; q++)
            if (!strchr("0123456789abcdefABCDEF", *q))
                fail_msg("chunk-size line is not bare hex: %.*s", (int)(e - b), b);
        size_t size = strtoul(b, NULL, 16);
        b = e + 2;
        if (size == 0) {
            *rest = b;
            out[n] = '\0';
            return out;
        }
        memcpy(out + n, b, size);
        n += size;
        b += size;
        if (strncmp(b, "\r\n", 2) != 0)
            fail_msg("chunk data not followed by CRLF");
        b += 2;
    }
    fail_msg("too many chunks");
    return NULL;
}

/* RFC 9112 §7.1.1 extensions from a client (quoted-pair, several, BWS) are
 * accepted and stripped: the backend sees bare size lines. */
static void test_request_chunk_extensions_stripped(void **state)
{
    struct origin o;
    char *got =
        through_origin(&o, "\r\n0\r\n", "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
                       "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                       "Connection: close\r\n\r\n"
                       "3;foo=\"b\\\"r\"\r\nabc\r\n1;a=b;c=d\r\nd\r\n2 ; x = \"y z\"\r\nef\r\n"
                       "0;last\r\n\r\n");
    assert_non_null(strstr(got, "HTTP/1.1 204 "));
    const char *rest;
    char *payload = dechunk_plain(body_of(o.got), &rest);
    assert_string_equal(payload, "abcdef");
    assert_string_equal(rest, "\r\n");
    free(payload);
    free(got);
}

/* From an origin: extensions stripped too, and a bare LF may end the
 * chunk-size and data lines (RFC 9112 §2.2); the client gets CRLF. */
static void test_response_chunk_extensions_and_bare_lf(void **state)
{
    struct origin o;
    char *got =
        through_origin(&o, NULL,
                       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                       "3;foo=\"b\\\"r\"\nabc\n1;a=b;c=d\r\nd\r\n2\nef\n0\nX-T: t\n\n",
                       "GET /t HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_non_null(strstr(got, "HTTP/1.1 200 "));
    const char *rest;
    char *payload = dechunk_plain(body_of(got), &rest);
    assert_string_equal(payload, "abcdef");
    assert_string_equal(rest, "X-T: t\r\n\r\n");
    free(payload);
    free(got);
}

/* Invalid extensions and a client's bare LF stay 400, nothing forwarded. */
static void test_bad_chunk_lines_refused(void **state)
{
    gwt_suite_start_gw(NULL);
    static const char *const bodies[] = {"1;a=b c\r\nx\r\n0\r\n\r\n", "1;=b\r\nx\r\n0\r\n\r\n",
                                         "1;a=\"x\r\nx\r\n0\r\n\r\n", "1;a=b;\r\nx\r\n0\r\n\r\n",
                                         "1\nx\r\n0\r\n\r\n",         "1\r\nx\n0\r\n\r\n",
                                         "1 \r\nx\r\n0\r\n\r\n"};
    for (size_t i = 0; i < GW_ARRAY_LEN(bodies); i++) {
        char req[256];
        int len = snprintf(req, sizeof(req),
                           "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n%s",
                           bodies[i]);
        gwt_expect_refused(gwt_fx.gport, bodies[i], req, (size_t)len, 400,
                           GWT_REFUSED_COUNTED | GWT_REFUSED_MAY_CLOSE);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        GWT_TEST(test_response_trailers_relayed),
        GWT_TEST(test_response_trailers_dropped_for_http10),
        GWT_TEST(test_request_trailers_forwarded),
        GWT_TEST(test_request_chunk_extensions_stripped),
        GWT_TEST(test_response_chunk_extensions_and_bare_lf),
        GWT_TEST(test_bad_chunk_lines_refused),
    };
    return cmocka_run_group_tests_name("chunked", tests, gwt_suite_setup_backend,
                                       gwt_suite_teardown);
}
