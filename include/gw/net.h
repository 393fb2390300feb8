/*
 * Addresses and sockets (Redis anet.c shape). The one owner of address
 * text: IP literals, the IPv4-mapped 16-byte form every comparison uses,
 * host[:port] authorities, http:// URLs and CIDR prefixes; plus listening
 * sockets, non-blocking connects and socket options. Thin wrappers over
 * libc; every function is thread-safe (no shared state) and only reads its
 * input strings during the call.
 */
#ifndef GW_NET_H
#define GW_NET_H

#include "gw/buf.h"
#include "gw/common.h"

#include <netinet/in.h>
#include <sys/socket.h>

/* One CIDR prefix (TRUSTED_PROXIES entry), IPv4 stored as IPv4-mapped
 * IPv6 (::ffff:a.b.c.d, RFC 4291 §2.5.5.2) with the prefix counted over
 * the 128-bit form, so one compare serves both families. */
struct gw_cidr {
    uint8_t addr[16]; /* network address, network byte order, host bits zero */
    uint8_t prefix;   /* prefix length in bits over the 128-bit form, 0..128 */
};

/* host[:port] of an authority (RFC 3986 §3.2.2-3.2.3), pointing into the
 * parsed input (borrowed: valid as long as the caller's string). */
struct gw_net_hostport {
    const char *host; /* without brackets, not NUL-terminated */
    size_t host_len;  /* bytes */
    bool v6;          /* host is an IPv6 literal (was written in brackets) */
    int port;         /* given, or the caller's default; 1..65535 */
};

/* An http:// URL taken apart (BACKEND_URL), pointing into the input. */
struct gw_net_http_url {
    struct gw_net_hostport hp; /* authority; port 80 when not given */
    const char *path;          /* base path, "" when none, never ends in '/' */
    size_t path_len;           /* bytes */
};

/* The 16-byte form of an address of family AF_INET (raw = 4 bytes, mapped
 * to ::ffff:a.b.c.d per RFC 4291 §2.5.5.2) or AF_INET6 (raw = 16 bytes,
 * copied); any other family gives all zeros. The only IPv4-mapped
 * conversion of the gateway: peers, X-Forwarded-For entries and CIDRs all
 * pass through it, so they compare byte for byte. Cannot fail. */
void gw_net_addr_map(int family, const void *raw, uint8_t out[16]);

/* Writes the text of a 16-byte address into out (cap bytes, at least
 * INET6_ADDRSTRLEN): IPv4-mapped addresses as dotted IPv4, others in the
 * RFC 5952 canonical IPv6 form. Cannot fail (truncates to "" when cap is
 * too small). */
void gw_net_addr_text(const uint8_t addr[16], char *out, size_t cap);

/* Parses an IP literal of len bytes, without brackets or spaces: IPv4
 * dotted-quad or IPv6 text (RFC 4291 §2.2). Fills out (16-byte form, see
 * gw_net_addr_map) and *is_v4 (may be NULL: true for a dotted quad, false
 * for IPv6 text even when IPv4-mapped). Returns false for anything else
 * (out is then unspecified). */
bool gw_net_parse_addr(const char *s, size_t len, uint8_t out[16], bool *is_v4);

/* Parses an authority's host[:port] of n bytes (RFC 3986 §3.2.2, §3.2.3):
 * "[IPv6]" (an IPv4 literal in brackets is refused), an IPv4 literal, or a
 * registered name of dot-separated labels of letters, digits, '-' and '_'
 * (a final dot allowed, 253 bytes at most; an all-numeric name must be a
 * valid IPv4 literal). The port is 1..65535 in plain decimal; default_port
 * when absent. No userinfo, path or percent-encoding. Fills *out (pointing
 * into s). Returns true, or false with a one-line reason in why (why_len
 * bytes, may be NULL). */
bool gw_net_parse_hostport(const char *s, size_t n, int default_port, struct gw_net_hostport *out,
                           char *why, size_t why_len);

/* Sends what b holds to the non-blocking socket fd until b is empty or the
 * socket is full, consuming what was sent; sets *progress when any byte
 * left (never clears it). Returns 0, or -1 when the peer is gone (errno
 * kept). MSG_NOSIGNAL: a closed peer is an error, not a SIGPIPE. b is the
 * caller's; thread-safe for distinct sockets and buffers. */
int gw_net_send_buf(int fd, struct gw_buf *b, bool *progress);

/* True when text[0..len) is a valid Host field value or request-target
 * authority: uri-host [ ":" port ] (RFC 9110 §7.2), uri-host being an
 * IP-literal in brackets (IPv6, RFC 3986 §3.2.2), an IPv4 address or a
 * reg-name of unreserved characters, sub-delims and pct-encodings; the port
 * at most 5 digits and 65535, possibly empty. An empty value is valid (a
 * target without authority). No userinfo, no whitespace. Pure, thread-safe;
 * text is only read during the call (NULL allowed when len is 0). */
bool gw_net_valid_uri_host(const char *text, size_t len);

/* Parses "http://host[:port][/base-path]" (scheme case-insensitive; host as
 * gw_net_parse_hostport, port 80 by default; RFC 9110 §4.2.1). Refused with
 * a reason: https (no TLS), other schemes, userinfo, a query or fragment,
 * spaces or control bytes in the path. Trailing '/' of the path are
 * dropped, so "http://h/" has the empty base path. Fills *out (pointing
 * into url). Returns true, or false with a reason in why (may be NULL). */
bool gw_net_parse_http_url(const char *url, struct gw_net_http_url *out, char *why, size_t why_len);

/* Writes "host:port" with an IPv6 host in brackets ("[::1]:8001",
 * RFC 3986 §3.2.2) into out (cap bytes, NUL-terminated, truncated).
 * Returns the length it needed, as snprintf. */
int gw_net_format_hostport(const struct gw_net_hostport *hp, char *out, size_t cap);

/* Parses one CIDR of n bytes, "addr" or "addr/prefix" (RFC 4632 §3.1 for
 * IPv4, RFC 4291 §2.3 for IPv6): prefix 0..32 for IPv4, 0..128 for IPv6,
 * the full length when absent. Host bits are cleared. Returns true with
 * *out set, or false with a reason in why (may be NULL): "not an IPv4 or
 * IPv6 address" or "prefix length must be 0..<bits>". */
bool gw_net_parse_cidr(const char *s, size_t n, struct gw_cidr *out, char *why, size_t why_len);

/* True when the 16-byte address (IPv4 as IPv4-mapped) lies inside c. An
 * IPv4 CIDR never contains a native IPv6 address; "::/0" contains all. */
bool gw_net_cidr_contains(const struct gw_cidr *c, const uint8_t addr[16]);

/* Opens a non-blocking listening TCP socket on host:port (IPv4 or IPv6
 * literal, "localhost"; "::" listens dual-stack) with SO_REUSEADDR and the
 * given backlog. Returns the fd, or -errno (-EINVAL for a bad host). */
GW_MUSTCHECK int gw_net_listen(const char *host, int port, int backlog);

/* The port a bound socket listens on, or -errno. */
GW_MUSTCHECK int gw_net_local_port(int fd);

/* Parses a numeric host, an IPv4 or IPv6 literal (no brackets) or
 * "localhost" (taken as 127.0.0.1), with port into *out and *out_len (no
 * DNS). Returns 0, or -EINVAL when host is not numeric. Thread-safe. */
GW_MUSTCHECK int gw_net_parse_numeric(const char *host, int port, struct sockaddr_storage *out,
                                      socklen_t *out_len);

/* Resolves host:port (numeric or name, via getaddrinfo) to the first
 * address, written to *out and *out_len. Returns 0, or -EHOSTUNREACH when
 * the name does not resolve. May block on DNS: call at startup only. */
GW_MUSTCHECK int gw_net_resolve(const char *host, int port, struct sockaddr_storage *out,
                                socklen_t *out_len);

/* Starts a non-blocking TCP connect to addr with TCP_NODELAY. Returns the fd
 * (the connect may still be in progress: wait for EPOLLOUT then call
 * gw_net_connect_result) or -errno on immediate failure. */
GW_MUSTCHECK int gw_net_connect(const struct sockaddr_storage *addr, socklen_t len);

/* The outcome of a non-blocking connect: 0 or -errno (SO_ERROR). */
GW_MUSTCHECK int gw_net_connect_result(int fd);

/* Sets TCP_NODELAY. Errors are ignored (not all sockets are TCP). */
void gw_net_nodelay(int fd);

/* The address of ss in its 16-byte IPv6 form (gw_net_addr_map: IPv4 as
 * IPv4-mapped, RFC 4291 §2.5.5.2), so one comparison serves both families;
 * all zero for another family. Neither pointer is kept. Thread-safe. */
void gw_net_addr_bin(const struct sockaddr_storage *ss, uint8_t out_bin[16]);

/* Formats a socket address into text ("1.2.3.4" or "2001:db8::1",
 * IPv4-mapped IPv6 shown as IPv4, see gw_net_addr_text) and its 16-byte
 * form (gw_net_addr_bin). out_text has cap bytes, at least INET6_ADDRSTRLEN;
 * an unknown family gives "unknown" and zeros. */
void gw_net_format_addr(const struct sockaddr_storage *ss, char *out_text, size_t cap,
                        uint8_t out_bin[16]);

/* Blocking connect with timeout_ms to addr, then close: true when the peer
 * accepted. Blocks the caller up to timeout_ms: never on a worker. */
bool gw_net_probe(const struct sockaddr_storage *addr, socklen_t len, int timeout_ms);

#endif
