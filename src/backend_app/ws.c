/*
 * backend_app's /ws: a WebSocket echo endpoint (RFC 6455), enough for the
 * gateway's tunnel tests. The handshake answers 101 with
 * Sec-WebSocket-Accept (SHA-1 and base64 from OpenSSL, §4.2.2); then every
 * data frame is echoed unmasked with the same opcode and FIN bit, streamed
 * as its payload arrives (a frame of any size costs one read buffer), a
 * ping gets its pong, a close its close. The connection's thread blocks on
 * its socket, so a client that stops reading stops the echo (backpressure).
 */
#include "backend_app.h"

#include <errno.h>
#include <openssl/evp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11" /* RFC 6455 §1.3 */

/* First value of request header name (case-insensitive), or a NULL slice. */
static struct gw_slice header(const struct backend_request *r, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < r->nheaders; i++) {
        const struct backend_header *h = &r->headers[i];
        if (h->name_len == n && strncasecmp(r->raw.data + h->name_off, name, n) == 0)
            return (struct gw_slice){r->raw.data + h->value_off, h->value_len};
    }
    return (struct gw_slice){NULL, 0};
}

static bool contains_nocase(struct gw_slice s, const char *word)
{
    size_t n = strlen(word);
    for (size_t i = 0; s.ptr && i + n <= s.len; i++)
        if (strncasecmp(s.ptr + i, word, n) == 0)
            return true;
    return false;
}

enum backend_after backend_ws_route(struct backend_conn *c)
{
    struct backend_request *r = &c->req;
    struct gw_slice key = header(r, "sec-websocket-key");
    if (r->method != HTTP_GET || !contains_nocase(header(r, "upgrade"), "websocket") ||
        !contains_nocase(header(r, "connection"), "upgrade") || key.len == 0 || key.len > 64) {
        json_t *j = json_pack("{s:s, s:s}", "error", "Bad Request", "detail",
                              "a WebSocket handshake needs GET, Upgrade: websocket, Connection: "
                              "upgrade and Sec-WebSocket-Key");
        c->close_after = true;
        if (backend_write_json(c, 400, j, NULL) != 0)
            c->io_failed = true;
        return BACKEND_CLOSE;
    }
    char in[64 + sizeof(WS_GUID)];
    memcpy(in, key.ptr, key.len);
    memcpy(in + key.len, WS_GUID, sizeof(WS_GUID) - 1);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    char accept[64];
    if (EVP_Digest(in, key.len + sizeof(WS_GUID) - 1, md, &md_len, EVP_sha1(), NULL) != 1) {
        c->io_failed = true;
        return BACKEND_CLOSE;
    }
    EVP_EncodeBlock((unsigned char *)accept, md, (int)md_len);
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                     accept);
    r->status = 101;
    if (backend_write_last(c, head, (size_t)n) != 0)
        return BACKEND_CLOSE;
    c->ws = true;
    return BACKEND_KEEP;
}

/* ---- framing ---- */

struct ws_in {
    struct backend_conn *c;
    char *buf;       /* c->rbuf: bytes received, not yet used */
    size_t off, len; /* unused bytes are buf[off, len) */
    bool eof;        /* the client sent its FIN (or reset) */
};

/* Makes at least need bytes available (need <= BACKEND_READ_BUF). Returns
 * false at EOF, shutdown or an error. */
static bool fill(struct ws_in *in, size_t need)
{
    while (in->len - in->off < need) {
        if (in->off > 0) {
            memmove(in->buf, in->buf + in->off, in->len - in->off);
            in->len -= in->off;
            in->off = 0;
        }
        if (atomic_load(&backend_cfg.stopping))
            return false;
        struct pollfd pfd[2] = {{.fd = in->c->fd, .events = POLLIN},
                                {.fd = backend_cfg.stop_fd, .events = POLLIN}};
        int pn = poll(pfd, 2, backend_cfg.idle_timeout_ms);
        if (pn < 0 && errno == EINTR)
            continue;
        if (pn <= 0 || pfd[1].revents)
            return false;
        ssize_t n = recv(in->c->fd, in->buf + in->len, BACKEND_READ_BUF - in->len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            in->eof = true;
            return false;
        }
        in->len += (size_t)n;
    }
    return true;
}

static int write_frame_head(struct backend_conn *c, unsigned first, uint64_t len)
{
    unsigned char h[10];
    size_t n = 0;
    h[n++] = (unsigned char)first;
    if (len < 126) {
        h[n++] = (unsigned char)len;
    } else if (len <= 0xffff) {
        h[n++] = 126;
        h[n++] = (unsigned char)(len >> 8);
        h[n++] = (unsigned char)len;
    } else {
        h[n++] = 127;
        for (int i = 7; i >= 0; i--)
            h[n++] = (unsigned char)(len >> (8 * i));
    }
    return backend_write(c, h, n);
}

/* One frame from in: echoed (data), answered (ping, close) or dropped
 * (pong). Returns false when the connection is over. */
static bool echo_frame(struct ws_in *in)
{
    struct backend_conn *c = in->c;
    if (!fill(in, 2))
        return false;
    unsigned char b0 = (unsigned char)in->buf[in->off], b1 = (unsigned char)in->buf[in->off + 1];
    unsigned opcode = b0 & 0x0f;
    bool masked = b1 & 0x80;
    uint64_t len = b1 & 0x7f;
    size_t hlen = 2 + (len == 126 ? 2 : len == 127 ? 8 : 0) + (masked ? 4 : 0);
    if (!fill(in, hlen))
        return false;
    const unsigned char *p = (const unsigned char *)in->buf + in->off + 2;
    if (len == 126) {
        len = (uint64_t)p[0] << 8 | p[1];
        p += 2;
    } else if (len == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | p[i];
        p += 8;
    }
    unsigned char mask[4] = {0, 0, 0, 0};
    if (masked)
        memcpy(mask, p, 4);
    in->off += hlen;
    if (!masked || (opcode >= 8 && len > 125)) {
        /* RFC 6455 §5.1, §5.5: client frames are masked, control frames short. */
        static const unsigned char close_1002[] = {0x88, 0x02, 0x03, 0xea};
        if (backend_write(c, close_1002, sizeof(close_1002)) != 0)
            c->io_failed = true;
        return false;
    }
    bool control = opcode >= 8;
    unsigned reply = opcode == 9 ? 10u : opcode; /* a ping gets a pong */
    bool drop = opcode == 10;                    /* a pong is not answered */
    if (!drop && write_frame_head(c, (b0 & 0x80) | reply, len) != 0)
        return false;
    uint64_t pos = 0;
    while (pos < len) {
        if (in->off == in->len && !fill(in, 1))
            return false;
        size_t n = in->len - in->off;
        if (n > len - pos)
            n = (size_t)(len - pos);
        char *d = in->buf + in->off;
        for (size_t i = 0; i < n; i++)
            d[i] ^= (char)mask[(pos + i) & 3];
        if (!drop && backend_write(c, d, n) != 0)
            return false;
        in->off += n;
        pos += n;
    }
    return !(control && opcode == 8); /* after a close, the connection ends */
}

void backend_ws_run(struct backend_conn *c, const char *rest, size_t n)
{
    struct ws_in in = {.c = c, .buf = c->rbuf};
    /* Frames that came with the handshake come first; rest may point into
     * rbuf itself. */
    memmove(in.buf, rest, n);
    in.len = n;
    while (!c->io_failed && echo_frame(&in))
        ;
    if (backend_cfg.log)
        fprintf(stderr, "backend_app: /ws closed (%s)\n", in.eof ? "client FIN" : "done");
}
