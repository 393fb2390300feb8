/*
 * Private to the Redis store: the transport of one synchronous Redis link
 * (SPEC.md §12). A non-blocking TCP or unix socket, with an OpenSSL SSL*
 * over it for rediss:// (Debian's hiredis 0.14 has no TLS); hiredis is used
 * only to parse replies (redisReader) and, by callers, to format commands.
 * Every wait is a poll(2) bounded by the caller's timeout, so the same
 * REDIS_TIMEOUT_MS bounds connect, TLS handshake and each command.
 * One thread uses a connection; the SSL_CTX is the connection's own.
 */
#ifndef GW_REDIS_CONN_H
#define GW_REDIS_CONN_H

#include "gw/common.h"
#include "gw/config.h"

#include <hiredis/hiredis.h>
#include <openssl/ssl.h>

enum gw_redis_conn_state {
    GW_RCONN_CLOSED = 0, /* no socket */
    GW_RCONN_CONNECTING, /* connect(2) in progress */
    GW_RCONN_TLS,        /* TLS handshake in progress */
    GW_RCONN_OPEN,       /* established: commands can flow */
};

struct gw_redis_conn {
    int fd;                           /* -1 when closed */
    enum gw_redis_conn_state state;   /* where the link stands */
    SSL_CTX *ctx;                     /* TLS context (owned), NULL = plaintext */
    SSL *ssl;                         /* TLS session of the open socket, or NULL */
    SSL_SESSION *session;             /* last session, resumed on reconnect to the same peer */
    char peer[300];                   /* "host:port" of session, or of the last start */
    char name[256];                   /* TLS: SNI and verified name of this connection */
    bool resumed;                     /* TLS: the last handshake resumed a session */
    bool tls_failed;                  /* TLS: this link failed in TLS itself */
    redisReader *reader;              /* RESP parser (hiredis) */
    char *out;                        /* bytes queued for the server (heap) */
    size_t out_len, out_off, out_cap; /* out[out_off .. out_len) still unsent */
    char err[200];                    /* last failure, for logs (never a password) */
};

/* Prepares c (closed). With t->tls, builds its SSL_CTX: TLS 1.2 or later,
 * the CAs of t->tls_ca_file or the system trust store, verification of the
 * server certificate and name unless t->tls_verify is off (warned about
 * once per process), the client certificate and key when given. Returns 0,
 * -ENOMEM, or -EINVAL with the reason (naming the variable) in why. On
 * failure c is safe to deinit. */
GW_MUSTCHECK int gw_redis_conn_init(struct gw_redis_conn *c, const struct gw_redis_target *t,
                                    char *why, size_t why_len);

/* Closes the link and frees what init allocated. Safe on a zeroed struct. */
void gw_redis_conn_deinit(struct gw_redis_conn *c);

/* Drops the socket (and any unsent or unparsed bytes); the TLS session is
 * kept for resumption. */
void gw_redis_conn_close(struct gw_redis_conn *c);

/* Starts a non-blocking connect to host:port (host a name, resolved here
 * with getaddrinfo, or an IP literal) or, when unix_path is set, to that
 * socket. server_name (may be NULL = host) is the TLS SNI and the name
 * verified in the certificate (an IP literal is checked against the
 * certificate's IP addresses and sent without SNI). An old link is closed
 * first. Returns 0 when established already (unix sockets, plaintext),
 * -EINPROGRESS, or -errno (err set, closed). */
GW_MUSTCHECK int gw_redis_conn_start(struct gw_redis_conn *c, const char *host, int port,
                                     const char *unix_path, const char *server_name);

/* Queues len bytes of RESP (formatted by the caller) to send; may be called
 * while connecting. Returns 0 or -ENOMEM. */
GW_MUSTCHECK int gw_redis_conn_append(struct gw_redis_conn *c, const char *buf, size_t len);

/* Queues one command (argc arguments, hiredis redisFormatCommandArgv).
 * Returns 0 or -ENOMEM. */
GW_MUSTCHECK int gw_redis_conn_append_argv(struct gw_redis_conn *c, int argc, const char **argv);

/* Moves the link on (connect, TLS handshake, sending what is queued,
 * reading) until the next reply is parsed, waiting in poll(2) at most
 * wait_ms in all (0 = never wait). Returns 0 with *reply (a redisReply,
 * caller frees with freeReplyObject), -EAGAIN when none arrived within
 * wait_ms (the link stays usable), or -errno after closing the link: an
 * I/O error, -ECONNRESET for EOF, -ECONNABORTED for a TLS failure
 * (certificate refused, ...), -EBADMSG for bytes that are not RESP. */
GW_MUSTCHECK int gw_redis_conn_get_reply(struct gw_redis_conn *c, void **reply, int wait_ms);

/* Moves connect and TLS handshake on and sends what is queued, waiting at
 * most wait_ms. Returns 0 once established, -EAGAIN while not yet, or
 * -errno (closed) as gw_redis_conn_get_reply. */
GW_MUSTCHECK int gw_redis_conn_establish(struct gw_redis_conn *c, int wait_ms);

/* One command and its reply: append + get_reply with timeout_ms; a reply
 * that does not come within timeout_ms closes the link (-ETIMEDOUT), as
 * the stream would be out of step otherwise. */
GW_MUSTCHECK int gw_redis_conn_command(struct gw_redis_conn *c, const char *buf, size_t len,
                                       void **reply, int timeout_ms);

/* Checks without blocking that an idle open link is still there: 0 when it
 * is (or looks it), else -errno after closing (EOF, reset, unexpected
 * bytes; a TLS record without data, e.g. a session ticket, is fine). */
GW_MUSTCHECK int gw_redis_conn_probe(struct gw_redis_conn *c);

/* Text of the last failure. */
static inline const char *gw_redis_conn_error(const struct gw_redis_conn *c)
{
    return c->err;
}

#endif
