/*
 * The transport of a synchronous Redis link (redis_conn.h): non-blocking
 * socket, optional OpenSSL TLS over it, hiredis's redisReader for replies.
 * The socket stays non-blocking for its whole life; every wait is one
 * poll(2) bounded by what the caller allows, so nothing here can hold a
 * worker longer than its REDIS_TIMEOUT_MS. A command costs write, poll and
 * read: the reply is never read before poll says it may be there.
 *
 * Requires the process to ignore SIGPIPE (OpenSSL writes with write(2)).
 */
#include "redis_conn.h"

#include "gw/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define READ_CHUNK 16384 /* bytes read per recv/SSL_read */

/* ---- TLS context ---------------------------------------------------------- */

/* The newest OpenSSL error as text, or fallback. */
static const char *ssl_error_text(char *buf, size_t cap, const char *fallback)
{
    unsigned long e = ERR_peek_last_error();
    if (e == 0) {
        snprintf(buf, cap, "%s", fallback);
    } else {
        ERR_error_string_n(e, buf, cap);
        /* "error:0A000086:SSL routines::certificate verify failed": keep
         * what follows the last ':' group, the part an operator reads. */
        const char *last = strrchr(buf, ':');
        if (last != NULL && last[1] != '\0')
            memmove(buf, last + 1, strlen(last + 1) + 1);
    }
    ERR_clear_error();
    return buf;
}

static int ctx_fail(struct gw_redis_conn *c, char *why, size_t cap, const char *var,
                    const char *path)
{
    char text[160];
    gw_fail(why, cap, "%s=%s: %s", var, path != NULL ? path : "",
            ssl_error_text(text, sizeof(text), "cannot be used"));
    SSL_CTX_free(c->ctx);
    c->ctx = NULL;
    return -EINVAL;
}

static int make_ctx(struct gw_redis_conn *c, const struct gw_redis_target *t, char *why, size_t cap)
{
    static atomic_flag warned = ATOMIC_FLAG_INIT;
    c->ctx = SSL_CTX_new(TLS_client_method());
    if (c->ctx == NULL)
        return -ENOMEM;
    (void)SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
    /* The write buffer moves (it is realloc'd) and partial writes are
     * handled by the caller's loop. */
    SSL_CTX_set_mode(c->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (t->tls_verify) {
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
        if (t->tls_ca_file != NULL) {
            if (SSL_CTX_load_verify_locations(c->ctx, t->tls_ca_file, NULL) != 1)
                return ctx_fail(c, why, cap, "REDIS_TLS_CA_FILE", t->tls_ca_file);
        } else if (SSL_CTX_set_default_verify_paths(c->ctx) != 1) {
            return ctx_fail(c, why, cap, "REDIS_TLS_CA_FILE", "(system trust store)");
        }
    } else {
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
        if (!atomic_flag_test_and_set(&warned))
            gw_warn("REDIS_TLS_VERIFY=off: the Redis server's certificate and name are NOT "
                    "verified; anyone on the network path can pose as Redis and read or change "
                    "rate-limit traffic and the password");
    }
    if (t->tls_cert_file != NULL &&
        SSL_CTX_use_certificate_chain_file(c->ctx, t->tls_cert_file) != 1)
        return ctx_fail(c, why, cap, "REDIS_TLS_CERT_FILE", t->tls_cert_file);
    if (t->tls_key_file != NULL &&
        (SSL_CTX_use_PrivateKey_file(c->ctx, t->tls_key_file, SSL_FILETYPE_PEM) != 1 ||
         SSL_CTX_check_private_key(c->ctx) != 1))
        return ctx_fail(c, why, cap, "REDIS_TLS_KEY_FILE", t->tls_key_file);
    return 0;
}

int gw_redis_conn_init(struct gw_redis_conn *c, const struct gw_redis_target *t, char *why,
                       size_t why_len)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->reader = redisReaderCreate();
    if (c->reader == NULL)
        return -ENOMEM;
    if (t->tls)
        return make_ctx(c, t, why, why_len);
    return 0;
}

void gw_redis_conn_close(struct gw_redis_conn *c)
{
    if (c->ssl != NULL) {
        /* Keep the session for the next connect to the same peer: a
         * resumed handshake is one round trip and no certificate check.
         * Not after a TLS failure; otherwise the link is marked shut down
         * quietly (nothing sent), or SSL_free would mark the session not
         * resumable. */
        SSL_SESSION *s = NULL;
        if (c->state == GW_RCONN_OPEN && !c->tls_failed) {
            SSL_set_quiet_shutdown(c->ssl, 1);
            (void)SSL_shutdown(c->ssl);
            s = SSL_get1_session(c->ssl);
        }
        if (s != NULL && SSL_SESSION_is_resumable(s)) {
            SSL_SESSION_free(c->session);
            c->session = s;
        } else {
            SSL_SESSION_free(s);
        }
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->state = GW_RCONN_CLOSED;
    c->tls_failed = false;
    c->out_len = c->out_off = 0;
    if (c->reader != NULL) {
        /* A fresh parser: a half-read reply of the old link must not
         * prefix the new link's first one. */
        redisReaderFree(c->reader);
        c->reader = redisReaderCreate();
    }
    ERR_clear_error();
}

void gw_redis_conn_deinit(struct gw_redis_conn *c)
{
    gw_redis_conn_close(c);
    if (c->reader != NULL)
        redisReaderFree(c->reader);
    SSL_SESSION_free(c->session);
    SSL_CTX_free(c->ctx);
    free(c->out);
    memset(c, 0, sizeof(*c));
    c->fd = -1;
}

/* Records why the link failed, closes it, returns -err. */
static int fail(struct gw_redis_conn *c, int err, const char *fmt, ...) GW_PRINTF(3, 4);
static int fail(struct gw_redis_conn *c, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof(c->err), fmt, ap);
    va_end(ap);
    gw_redis_conn_close(c);
    return -err;
}

/* ---- connect ---------------------------------------------------------------- */

static bool is_ip_literal(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/* Starts the TLS handshake on the connected socket. */
static int tls_begin(struct gw_redis_conn *c)
{
    c->ssl = SSL_new(c->ctx);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1)
        return fail(c, ENOMEM, "TLS: out of memory");
    if (is_ip_literal(c->name)) {
        /* RFC 6066 §3: no SNI for an address; the certificate must name
         * the address itself (subjectAltName IP). */
        if (SSL_get_verify_mode(c->ssl) != SSL_VERIFY_NONE &&
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), c->name) != 1)
            return fail(c, EINVAL, "TLS: bad address %s", c->name);
    } else {
        if (SSL_set_tlsext_host_name(c->ssl, c->name) != 1)
            return fail(c, EINVAL, "TLS: bad server name %s", c->name);
        if (SSL_get_verify_mode(c->ssl) != SSL_VERIFY_NONE && SSL_set1_host(c->ssl, c->name) != 1)
            return fail(c, EINVAL, "TLS: bad server name %s", c->name);
    }
    if (c->session != NULL)
        (void)SSL_set_session(c->ssl, c->session);
    c->state = GW_RCONN_TLS;
    return -EINPROGRESS;
}

/* The socket is connected: TLS next, or open. */
static int connected(struct gw_redis_conn *c)
{
    if (c->ctx != NULL)
        return tls_begin(c);
    c->state = GW_RCONN_OPEN;
    return 0;
}

int gw_redis_conn_start(struct gw_redis_conn *c, const char *host, int port, const char *unix_path,
                        const char *server_name)
{
    gw_redis_conn_close(c);
    c->err[0] = '\0';
    c->resumed = false;
    char peer[sizeof(c->peer)];
    snprintf(peer, sizeof(peer), "%s:%d", unix_path != NULL ? unix_path : host, port);
    if (strcmp(peer, c->peer) != 0) {
        /* A session is only offered to the peer that issued it. */
        SSL_SESSION_free(c->session);
        c->session = NULL;
        memcpy(c->peer, peer, sizeof(peer));
    }
    snprintf(c->name, sizeof(c->name), "%s",
             server_name != NULL ? server_name : (host != NULL ? host : "localhost"));

    struct sockaddr_storage ss;
    socklen_t slen;
    memset(&ss, 0, sizeof(ss));
    if (unix_path != NULL) {
        struct sockaddr_un *un = (struct sockaddr_un *)&ss;
        un->sun_family = AF_UNIX;
        if (strlen(unix_path) >= sizeof(un->sun_path))
            return fail(c, ENAMETOOLONG, "connect: socket path too long");
        strcpy(un->sun_path, unix_path);
        slen = sizeof(*un);
    } else {
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
        struct addrinfo *res = NULL;
        char ps[8];
        snprintf(ps, sizeof(ps), "%d", port);
        /* An IP literal resolves without any lookup. */
        hints.ai_flags = is_ip_literal(host) ? AI_NUMERICHOST : 0;
        int gai = getaddrinfo(host, ps, &hints, &res);
        if (gai != 0 || res == NULL)
            return fail(c, EHOSTUNREACH, "connect: cannot resolve %s: %s", host, gai_strerror(gai));
        memcpy(&ss, res->ai_addr, res->ai_addrlen);
        slen = res->ai_addrlen;
        freeaddrinfo(res);
    }
    c->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return fail(c, errno, "connect: socket: %s", strerror(errno));
    if (ss.ss_family != AF_UNIX) {
        int one = 1;
        (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        (void)setsockopt(c->fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    }
    if (connect(c->fd, (struct sockaddr *)&ss, slen) == 0)
        return connected(c);
    if (errno != EINPROGRESS && errno != EAGAIN)
        return fail(c, errno, "connect: %s", strerror(errno));
    c->state = GW_RCONN_CONNECTING;
    return -EINPROGRESS;
}

/* ---- I/O steps ---------------------------------------------------------------- */

int gw_redis_conn_append(struct gw_redis_conn *c, const char *buf, size_t len)
{
    if (c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    if (c->out_len + len > c->out_cap) {
        size_t cap = GW_MAX(c->out_len + len, c->out_cap * 2);
        char *nb = realloc(c->out, cap);
        if (nb == NULL)
            return -ENOMEM;
        c->out = nb;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, buf, len);
    c->out_len += len;
    return 0;
}

int gw_redis_conn_append_argv(struct gw_redis_conn *c, int argc, const char **argv)
{
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, NULL);
    if (len < 0)
        return -ENOMEM;
    int rc = gw_redis_conn_append(c, cmd, (size_t)len);
    /* The command may hold a password. */
    explicit_bzero(cmd, (size_t)len);
    redisFreeCommand(cmd);
    return rc;
}

/* Maps a failed SSL_* call to an error; 0 with *want set when it only has
 * to wait for the socket. */
static int ssl_status(struct gw_redis_conn *c, int ret, const char *what, short *want)
{
    int e = SSL_get_error(c->ssl, ret);
    if (e == SSL_ERROR_WANT_READ) {
        *want |= POLLIN;
        return 0;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        *want |= POLLOUT;
        return 0;
    }
    if (e == SSL_ERROR_ZERO_RETURN)
        return fail(c, ECONNRESET, "%s: closed by the server", what);
    if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
        int err = errno != 0 ? errno : ECONNRESET;
        return fail(c, err, "%s: %s", what, errno != 0 ? strerror(errno) : "closed by the server");
    }
    char text[160];
    c->tls_failed = true; /* a protocol failure: its session is not reused */
    long vr = SSL_get_verify_result(c->ssl);
    if (c->state == GW_RCONN_TLS && vr != X509_V_OK)
        return fail(c, ECONNABORTED, "TLS handshake with %s: certificate refused: %s", c->name,
                    X509_verify_cert_error_string(vr));
    return fail(c, ECONNABORTED, "%s: %s", what, ssl_error_text(text, sizeof(text), "TLS error"));
}

/* One non-blocking step of connect / handshake. 0 when open; -EINPROGRESS
 * with *want set; -errno when failed. ready: poll reported the socket. */
static int step_establish(struct gw_redis_conn *c, short revents, short *want)
{
    if (c->state == GW_RCONN_CONNECTING) {
        if (revents == 0) {
            *want |= POLLOUT;
            return -EINPROGRESS;
        }
        int soerr = 0;
        socklen_t len = sizeof(soerr);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0)
            soerr = errno;
        if (soerr != 0)
            return fail(c, soerr, "connect: %s", strerror(soerr));
        int rc = connected(c);
        if (rc != -EINPROGRESS)
            return rc;
    }
    if (c->state == GW_RCONN_TLS) {
        int ret = SSL_connect(c->ssl);
        if (ret == 1) {
            c->resumed = SSL_session_reused(c->ssl) == 1;
            c->state = GW_RCONN_OPEN;
            return 0;
        }
        int rc = ssl_status(c, ret, "TLS handshake", want);
        return rc != 0 ? rc : -EINPROGRESS;
    }
    return c->state == GW_RCONN_OPEN ? 0 : -ENOTCONN;
}

/* Sends what is queued until done or the socket is full. 0, or -errno. */
static int step_write(struct gw_redis_conn *c, short *want)
{
    while (c->out_off < c->out_len) {
        size_t n = c->out_len - c->out_off;
        if (c->ssl != NULL) {
            int w = SSL_write(c->ssl, c->out + c->out_off, (int)GW_MIN(n, (size_t)INT32_MAX));
            if (w <= 0)
                return ssl_status(c, w, "write", want);
            c->out_off += (size_t)w;
        } else {
            ssize_t w = send(c->fd, c->out + c->out_off, n, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    *want |= POLLOUT;
                    return 0;
                }
                if (errno == EINTR)
                    continue;
                return fail(c, errno, "write: %s", strerror(errno));
            }
            c->out_off += (size_t)w;
        }
    }
    c->out_off = c->out_len = 0;
    return 0;
}

/* Reads what the socket holds into the parser. 0 (*got: bytes read), or
 * -errno. */
static int step_read(struct gw_redis_conn *c, short *want, size_t *got)
{
    char buf[READ_CHUNK];
    for (;;) {
        ssize_t r;
        if (c->ssl != NULL) {
            int n = SSL_read(c->ssl, buf, sizeof(buf));
            if (n <= 0)
                return ssl_status(c, n, "read", want);
            r = n;
        } else {
            r = recv(c->fd, buf, sizeof(buf), 0);
            if (r == 0)
                return fail(c, ECONNRESET, "read: closed by the server");
            if (r < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    *want |= POLLIN;
                    return 0;
                }
                if (errno == EINTR)
                    continue;
                return fail(c, errno, "read: %s", strerror(errno));
            }
        }
        if (redisReaderFeed(c->reader, buf, (size_t)r) != REDIS_OK)
            return fail(c, ENOMEM, "read: out of memory");
        *got += (size_t)r;
        /* A short read means the socket (or, TLS, the record buffer) is
         * empty: skip the read that would only say EAGAIN; poll tells when
         * more comes. */
        if ((size_t)r < sizeof(buf) && (c->ssl == NULL || !SSL_has_pending(c->ssl))) {
            *want |= POLLIN;
            return 0;
        }
    }
}

/* Takes a parsed reply, if one is complete. 1 with *reply, 0, or -EBADMSG. */
static int take_reply(struct gw_redis_conn *c, void **reply)
{
    void *rep = NULL;
    if (redisReaderGetReply(c->reader, &rep) != REDIS_OK)
        return fail(c, EBADMSG, "protocol error: %s", c->reader->errstr);
    if (rep == NULL)
        return 0;
    *reply = rep;
    return 1;
}

/* The driver of establish and get_reply: steps until the link is open (and,
 * when reply != NULL, a reply is parsed), polling at most wait_ms. */
static int drive(struct gw_redis_conn *c, void **reply, int wait_ms)
{
    if (c->state == GW_RCONN_CLOSED)
        return -ENOTCONN;
    uint64_t start = gw_now_ms();
    short revents = 0;
    bool first = true;
    for (;;) {
        short want = 0;
        int rc;
        if (c->state != GW_RCONN_OPEN) {
            rc = step_establish(c, revents, &want);
            if (rc != 0 && rc != -EINPROGRESS)
                return rc;
        }
        if (c->state == GW_RCONN_OPEN) {
            if (reply != NULL && (rc = take_reply(c, reply)) != 0)
                return rc < 0 ? rc : 0;
            if ((rc = step_write(c, &want)) != 0)
                return rc;
            if (reply == NULL && c->out_off == c->out_len)
                return 0;
            /* Read only when poll said so (or a TLS record may be
             * buffered inside OpenSSL), never speculatively right after a
             * write: the answer cannot be there yet. */
            if (reply != NULL && ((revents & (POLLIN | POLLERR | POLLHUP)) ||
                                  (c->ssl != NULL && SSL_pending(c->ssl) > 0))) {
                size_t got = 0;
                if ((rc = step_read(c, &want, &got)) != 0)
                    return rc;
                if (got > 0 && (rc = take_reply(c, reply)) != 0)
                    return rc < 0 ? rc : 0;
            }
            if (reply != NULL)
                want |= POLLIN;
        }
        uint64_t now = gw_now_ms();
        int left = wait_ms - (int)GW_MIN(now - start, (uint64_t)wait_ms);
        if (left <= 0 && !first)
            return -EAGAIN;
        first = false;
        struct pollfd pfd = {.fd = c->fd, .events = want != 0 ? want : POLLIN};
        int n = poll(&pfd, 1, left);
        if (n < 0 && errno != EINTR)
            return fail(c, errno, "poll: %s", strerror(errno));
        revents = n > 0 ? pfd.revents : 0;
        if (n <= 0 && left <= 0)
            return -EAGAIN;
        if (revents & POLLNVAL)
            return fail(c, EBADF, "poll: socket closed");
    }
}

int gw_redis_conn_establish(struct gw_redis_conn *c, int wait_ms)
{
    return drive(c, NULL, wait_ms);
}

int gw_redis_conn_get_reply(struct gw_redis_conn *c, void **reply, int wait_ms)
{
    *reply = NULL;
    return drive(c, reply, wait_ms);
}

int gw_redis_conn_command(struct gw_redis_conn *c, const char *buf, size_t len, void **reply,
                          int timeout_ms)
{
    if (c->state != GW_RCONN_OPEN)
        return -ENOTCONN;
    if (gw_redis_conn_append(c, buf, len) != 0)
        return fail(c, ENOMEM, "command: out of memory");
    int rc = gw_redis_conn_get_reply(c, reply, timeout_ms);
    if (rc == -EAGAIN)
        return fail(c, ETIMEDOUT, "no reply within %d ms", timeout_ms);
    return rc;
}

int gw_redis_conn_probe(struct gw_redis_conn *c)
{
    if (c->state != GW_RCONN_OPEN)
        return -ENOTCONN;
    /* Between commands a healthy link has nothing to read: RESP2 sends no
     * unsolicited data. Readable means EOF, an error, a desynchronised
     * stream, or (TLS) a record without data such as a session ticket. */
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    if (poll(&pfd, 1, 0) <= 0)
        return 0;
    short want = 0;
    size_t got = 0;
    int rc = step_read(c, &want, &got);
    if (rc != 0) {
        char why[sizeof(c->err)];
        snprintf(why, sizeof(why), "idle connection: %.180s", c->err);
        memcpy(c->err, why, sizeof(why));
        return rc;
    }
    if (got > 0)
        return fail(c, EPROTO, "idle connection: unexpected data");
    return 0;
}
