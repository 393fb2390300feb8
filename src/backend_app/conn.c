/*
 * backend_app connection thread: blocking reads fed to a strict llhttp
 * parser, one response per request in request order (keep-alive and
 * pipelining), written synchronously. The parser pauses at each message end
 * so the route runs outside llhttp and the rest of the buffer is resumed.
 */
#include "backend_app.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define LINGER_MS    1000         /* lingering close: wait this long for the client's FIN */
#define LINGER_BYTES (256 * 1024) /* and discard at most this much */

static struct backend_conn *conn_of(llhttp_t *p)
{
    return gw_container_of(p, struct backend_conn, parser);
}

/* Header fields and request-target share one buffer, bounded so a client
 * cannot make the header section grow memory without limit. */
static int append_raw(struct backend_conn *c, const char *at, size_t n)
{
    if (gw_buf_len(&c->req.raw) + n > BACKEND_MAX_HEADER_BYTES) {
        c->error_status = 431;
        return HPE_USER;
    }
    if (gw_buf_append(&c->req.raw, at, n) != 0) {
        c->error_status = 500;
        return HPE_USER;
    }
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    struct backend_conn *c = conn_of(p);
    struct backend_request *r = &c->req;
    gw_buf_clear(&r->raw);
    r->target_len = 0;
    r->nheaders = 0;
    r->in_name = false;
    r->head = false;
    r->keep_alive = false;
    r->stats_route = false;
    r->status = 0;
    r->body_len = 0;
    r->start_ms = gw_now_ms();
    if (EVP_DigestInit_ex(c->sha, EVP_sha256(), NULL) != 1) {
        c->error_status = 500;
        return HPE_USER;
    }
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    return append_raw(conn_of(p), at, n);
}

static int on_url_complete(llhttp_t *p)
{
    struct backend_conn *c = conn_of(p);
    c->req.target_len = gw_buf_len(&c->req.raw);
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    struct backend_conn *c = conn_of(p);
    struct backend_request *r = &c->req;
    if (!r->in_name) {
        /* llhttp may split a name across reads: only the first piece opens a field */
        if (r->nheaders == r->cap_headers) {
            size_t cap = r->cap_headers ? r->cap_headers * 2 : 32;
            struct backend_header *h = realloc(r->headers, cap * sizeof(*h));
            if (!h) {
                c->error_status = 500;
                return HPE_USER;
            }
            r->headers = h;
            r->cap_headers = cap;
        }
        struct backend_header *h = &r->headers[r->nheaders++];
        memset(h, 0, sizeof(*h));
        h->name_off = gw_buf_len(&r->raw);
        r->in_name = true;
    }
    return append_raw(c, at, n);
}

static int on_header_field_complete(llhttp_t *p)
{
    struct backend_request *r = &conn_of(p)->req;
    struct backend_header *h = &r->headers[r->nheaders - 1];
    h->name_len = gw_buf_len(&r->raw) - h->name_off;
    h->value_off = gw_buf_len(&r->raw);
    h->value_len = 0;
    r->in_name = false;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    return append_raw(conn_of(p), at, n);
}

static int on_header_value_complete(llhttp_t *p)
{
    struct backend_request *r = &conn_of(p)->req;
    struct backend_header *h = &r->headers[r->nheaders - 1];
    h->value_len = gw_buf_len(&r->raw) - h->value_off;
    return 0;
}

/* RFC 9110 section 10.1.1: Expect: 100-continue asks for an interim answer
 * before the body is sent; only meaningful when a body follows. */
static bool wants_continue(struct backend_conn *c)
{
    struct backend_request *r = &c->req;
    if (r->http_major != 1 || r->http_minor < 1)
        return false;
    if (!(c->parser.flags & F_CHUNKED) && c->parser.content_length == 0)
        return false;
    for (size_t i = 0; i < r->nheaders; i++) {
        const struct backend_header *h = &r->headers[i];
        struct gw_slice name = {r->raw.data + h->name_off, h->name_len};
        struct gw_slice value = {r->raw.data + h->value_off, h->value_len};
        if (gw_slice_eq_nocase(name, "expect") && gw_slice_eq_nocase(value, "100-continue"))
            return true;
    }
    return false;
}

static int on_headers_complete(llhttp_t *p)
{
    struct backend_conn *c = conn_of(p);
    struct backend_request *r = &c->req;
    r->method = llhttp_get_method(p);
    r->http_major = llhttp_get_http_major(p);
    r->http_minor = llhttp_get_http_minor(p);
    r->head = r->method == HTTP_HEAD;
    backend_stats_begin(r);
    if (wants_continue(c)) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (backend_write(c, cont, sizeof(cont) - 1) != 0)
            return HPE_USER;
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    struct backend_conn *c = conn_of(p);
    c->req.body_len += n;
    if (EVP_DigestUpdate(c->sha, at, n) != 1) {
        c->error_status = 500;
        return HPE_USER;
    }
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct backend_conn *c = conn_of(p);
    c->req.keep_alive = llhttp_should_keep_alive(p);
    /* Stop here: the route runs outside llhttp, then parsing resumes at
     * llhttp_get_error_pos with any pipelined bytes that follow. */
    return HPE_PAUSED;
}

int backend_write(struct backend_conn *c, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0 && !c->io_failed) {
        ssize_t w = send(c->fd, s, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            c->io_failed = true;
            break;
        }
        s += w;
        n -= (size_t)w;
    }
    return c->io_failed ? -1 : 0;
}

int backend_write_last(struct backend_conn *c, const void *p, size_t n)
{
    backend_stats_end(&c->req);
    return backend_write(c, p, n);
}

static int format_head(struct backend_conn *c, struct gw_buf *b, int status, const char *ctype,
                       int64_t length, const char *extra)
{
    struct backend_request *r = &c->req;
    r->status = status;
    if (!r->keep_alive || atomic_load(&backend_cfg.stopping))
        c->close_after = true;
    int rc = gw_buf_printf(b, "HTTP/1.1 %d %s\r\n", status, backend_reason(status));
    if (rc == 0 && ctype)
        rc = gw_buf_printf(b, "Content-Type: %s\r\n", ctype);
    if (rc == 0 && length >= 0)
        rc = gw_buf_printf(b, "Content-Length: %lld\r\n", (long long)length);
    else if (rc == 0 && length == -1)
        rc = gw_buf_append_str(b, "Transfer-Encoding: chunked\r\n");
    if (rc == 0 && c->close_after)
        rc = gw_buf_append_str(b, "Connection: close\r\n");
    else if (rc == 0 && r->http_minor == 0)
        rc = gw_buf_append_str(b, "Connection: keep-alive\r\n");
    if (rc == 0 && extra)
        rc = gw_buf_append_str(b, extra);
    if (rc == 0)
        rc = gw_buf_append_str(b, "\r\n");
    return rc;
}

int backend_write_head(struct backend_conn *c, int status, const char *ctype, int64_t length,
                       const char *extra, bool last)
{
    struct gw_buf b = {0};
    int rc = format_head(c, &b, status, ctype, length, extra);
    if (rc == 0 && last)
        rc = backend_write_last(c, gw_buf_head(&b), gw_buf_len(&b));
    else if (rc == 0)
        rc = backend_write(c, gw_buf_head(&b), gw_buf_len(&b));
    else
        c->io_failed = true;
    gw_buf_release(&b);
    return rc ? -1 : 0;
}

int backend_write_json(struct backend_conn *c, int status, json_t *j, const char *extra)
{
    char *body = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    if (!body) {
        status = 500;
        extra = NULL;
        body = strdup("{\"error\":\"out of memory\"}");
        if (!body) {
            c->io_failed = true;
            return -1;
        }
    }
    size_t n = strlen(body);
    /* Head and body in one write: no Nagle/delayed-ACK stall between them. */
    struct gw_buf b = {0};
    int rc = format_head(c, &b, status, "application/json", (int64_t)n, extra);
    if (rc == 0 && !c->req.head)
        rc = gw_buf_append(&b, body, n);
    if (rc == 0)
        rc = backend_write_last(c, gw_buf_head(&b), gw_buf_len(&b));
    else
        c->io_failed = true;
    gw_buf_release(&b);
    free(body);
    return rc ? -1 : 0;
}

bool backend_sleep_or_hangup_ms(int client_fd, int ms)
{
    uint64_t deadline = gw_now_ms() + (uint64_t)(ms > 0 ? ms : 0);
    for (;;) {
        if (atomic_load(&backend_cfg.stopping))
            return true;
        uint64_t now = gw_now_ms();
        if (now >= deadline)
            return false;
        struct pollfd pfd[2] = {{.fd = backend_cfg.stop_fd, .events = POLLIN},
                                {.fd = client_fd, .events = POLLRDHUP}};
        int n = poll(pfd, client_fd >= 0 ? 2 : 1, (int)(deadline - now));
        if (n > 0 && (pfd[0].revents || (client_fd >= 0 && pfd[1].revents)))
            return true;
    }
}

bool backend_sleep_ms(int ms)
{
    return backend_sleep_or_hangup_ms(-1, ms);
}

/* Waits until the client socket is readable. Returns 1 when readable, 0 on
 * idle timeout or shutdown. */
static int wait_readable(int fd, int timeout_ms)
{
    uint64_t deadline = gw_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        if (atomic_load(&backend_cfg.stopping))
            return 0;
        uint64_t now = gw_now_ms();
        if (now >= deadline)
            return 0;
        struct pollfd pfd[2] = {{.fd = fd, .events = POLLIN},
                                {.fd = backend_cfg.stop_fd, .events = POLLIN}};
        int n = poll(pfd, 2, (int)(deadline - now));
        if (n < 0 && errno != EINTR)
            return 0;
        if (n > 0 && pfd[1].revents)
            return 0;
        if (n > 0 && pfd[0].revents)
            return 1;
    }
}

/* Sends our FIN, then reads and drops what the client still sends for a
 * bounded time, so a last response is not destroyed by a TCP reset caused
 * by unread input (RFC 9112 section 9.6). The caller closes the fd. */
static void linger_close(struct backend_conn *c)
{
    if (!atomic_load(&backend_cfg.stopping) && shutdown(c->fd, SHUT_WR) == 0) {
        uint64_t deadline = gw_now_ms() + LINGER_MS;
        size_t drained = 0;
        while (drained < LINGER_BYTES) {
            uint64_t now = gw_now_ms();
            if (now >= deadline || wait_readable(c->fd, (int)(deadline - now)) != 1)
                break;
            ssize_t n = recv(c->fd, c->rbuf, BACKEND_READ_BUF, 0);
            if (n <= 0 && !(n < 0 && errno == EINTR))
                break;
            if (n > 0)
                drained += (size_t)n;
        }
    }
}

static void log_request(struct backend_conn *c)
{
    struct backend_request *r = &c->req;
    struct gw_slice t = backend_target(r);
    fprintf(stderr, "backend_app: %s %.*s HTTP/%u.%u -> %d (%llu body bytes, %llu ms)\n",
            llhttp_method_name((llhttp_method_t)r->method), (int)t.len, t.ptr, r->http_major,
            r->http_minor, r->status, (unsigned long long)r->body_len,
            (unsigned long long)(gw_now_ms() - r->start_ms));
}

/* Answers a request the parser refused, then the connection closes. */
static void reply_parse_error(struct backend_conn *c, llhttp_errno_t err)
{
    int status = c->error_status ? c->error_status : 400;
    c->close_after = true;
    c->req.head = false;
    json_t *j = json_pack("{s:s, s:s}", "error", backend_reason(status), "detail",
                          status == 400 ? llhttp_errno_name(err) : "request rejected");
    if (backend_write_json(c, status, j, NULL) != 0)
        return;
    if (backend_cfg.log)
        fprintf(stderr, "backend_app: bad request (%s: %s) -> %d\n", llhttp_errno_name(err),
                llhttp_get_error_reason(&c->parser), status);
}

/* Feeds n read bytes to the parser, answering each complete request.
 * Returns false when the connection must close. */
static bool feed(struct backend_conn *c, const char *data, size_t n)
{
    size_t off = 0;
    while (off < n) {
        llhttp_errno_t err = llhttp_execute(&c->parser, data + off, n - off);
        if (err == HPE_OK)
            return true;
        if (err == HPE_PAUSED_UPGRADE)
            return false; /* answered already; we speak nothing after an upgrade */
        if (err != HPE_PAUSED) {
            if (!c->io_failed)
                reply_parse_error(c, err);
            return false;
        }
        off = (size_t)(llhttp_get_error_pos(&c->parser) - data);
        llhttp_resume(&c->parser);
        enum backend_after after = backend_route(c);
        backend_stats_end(&c->req);
        if (backend_cfg.log)
            log_request(c);
        if (c->ws && after == BACKEND_KEEP && !c->io_failed) {
            backend_ws_run(c, data + off, n - off); /* the rest is WebSocket */
            return false;
        }
        if (after == BACKEND_CLOSE || c->io_failed || c->close_after)
            return false;
    }
    return true;
}

void *backend_conn_run(void *arg)
{
    struct backend_conn *c = arg;
    llhttp_settings_t settings;
    llhttp_settings_init(&settings);
    settings.on_message_begin = on_message_begin;
    settings.on_url = on_url;
    settings.on_url_complete = on_url_complete;
    settings.on_header_field = on_header_field;
    settings.on_header_field_complete = on_header_field_complete;
    settings.on_header_value = on_header_value;
    settings.on_header_value_complete = on_header_value_complete;
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
    llhttp_init(&c->parser, HTTP_REQUEST, &settings);

    for (;;) {
        if (wait_readable(c->fd, backend_cfg.idle_timeout_ms) != 1)
            break;
        ssize_t n = recv(c->fd, c->rbuf, BACKEND_READ_BUF, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            /* EOF between requests is a normal close; inside one it is
             * an aborted request and nobody is left to answer. */
            break;
        }
        if (!feed(c, c->rbuf, (size_t)n))
            break;
    }

    backend_stats_end(&c->req);
    if (!c->io_failed)
        linger_close(c);
    gw_buf_release(&c->req.raw);
    free(c->req.headers);
    EVP_MD_CTX_free(c->sha);
    c->sha = NULL;
    free(c->rbuf);
    c->rbuf = NULL;
    backend_conn_finish(c); /* c belongs to main from here on */
    return NULL;
}
