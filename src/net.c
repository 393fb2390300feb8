/* Addresses and sockets: address, authority, URL and CIDR parsing, listen,
 * connect, options (see gw/net.h). */
#include "gw/net.h"
#include "gw/path.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <string.h>
#include <unistd.h>

/* ---- address text -------------------------------------------------------- */

void gw_net_addr_map(int family, const void *raw, uint8_t out[16])
{
    memset(out, 0, 16);
    if (family == AF_INET) {
        out[10] = out[11] = 0xff;
        memcpy(out + 12, raw, 4);
    } else if (family == AF_INET6) {
        memcpy(out, raw, 16);
    }
}

void gw_net_addr_text(const uint8_t addr[16], char *out, size_t cap)
{
    /* Compared as bytes, not through IN6_IS_ADDR_V4MAPPED: addr may sit
     * unaligned (inside a packed array such as struct gw_cidr[]), and
     * struct in6_addr needs 4-byte alignment. */
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    const char *text = memcmp(addr, mapped, sizeof(mapped)) == 0
                           ? inet_ntop(AF_INET, addr + 12, out, (socklen_t)cap)
                           : inet_ntop(AF_INET6, addr, out, (socklen_t)cap);
    if (text == NULL && cap > 0)
        out[0] = '\0';
}

bool gw_net_parse_addr(const char *s, size_t len, uint8_t out[16], bool *is_v4)
{
    /* The longest valid IPv6 text is 45 bytes ("ffff:...:255.255.255.255"). */
    char buf[INET6_ADDRSTRLEN + 1];
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    uint8_t raw[16];
    bool v4 = inet_pton(AF_INET, buf, raw) == 1;
    if (!v4 && inet_pton(AF_INET6, buf, raw) != 1)
        return false;
    gw_net_addr_map(v4 ? AF_INET : AF_INET6, raw, out);
    if (is_v4 != NULL)
        *is_v4 = v4;
    return true;
}

/* ---- authorities and URLs ------------------------------------------------- */

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_visible(char c)
{
    return c > 0x20 && c < 0x7f;
}

/* A registered name (RFC 3986 §3.2.2 reg-name, narrowed to what DNS
 * accepts): see gw_net_parse_hostport. All-numeric names must be a valid
 * IPv4 literal, so "300.1.1.1" is refused here, not at connect. */
static bool check_hostname(const char *s, size_t n, char *why, size_t cap)
{
    if (n > 253)
        return gw_fail(why, cap, "host name longer than 253 characters");
    bool numeric = true;
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '.') {
            if (label == 0)
                return gw_fail(why, cap, "empty label in host name");
            label = 0;
            continue;
        }
        if (!(is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' ||
              c == '_'))
            return gw_fail(why, cap, "invalid character '%c' in host name",
                           is_visible(c) ? c : '?');
        if (!is_digit(c))
            numeric = false;
        label++;
    }
    uint8_t a[16];
    bool v4 = false;
    if (numeric && !(gw_net_parse_addr(s, n, a, &v4) && v4))
        return gw_fail(why, cap, "invalid IPv4 address");
    return true;
}

bool gw_net_parse_hostport(const char *s, size_t n, int default_port, struct gw_net_hostport *hp,
                           char *why, size_t cap)
{
    const char *port = NULL;
    size_t port_len = 0;
    hp->v6 = false;
    if (n > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (close == NULL)
            return gw_fail(why, cap, "missing ']' after IPv6 address");
        hp->host = s + 1;
        hp->host_len = (size_t)(close - s) - 1;
        uint8_t a[16];
        bool v4 = false;
        /* Brackets are for IPv6 only (RFC 3986 IP-literal); an IPv4
         * literal inside is malformed. */
        if (!gw_net_parse_addr(hp->host, hp->host_len, a, &v4) || v4)
            return gw_fail(why, cap, "invalid IPv6 address in brackets");
        hp->v6 = true;
        const char *rest = close + 1;
        size_t rest_len = n - (size_t)(rest - s);
        if (rest_len > 0) {
            if (rest[0] != ':')
                return gw_fail(why, cap, "unexpected characters after ']'");
            port = rest + 1;
            port_len = rest_len - 1;
        }
    } else {
        const char *colon = memchr(s, ':', n);
        hp->host = s;
        hp->host_len = colon != NULL ? (size_t)(colon - s) : n;
        if (colon != NULL) {
            port = colon + 1;
            port_len = n - hp->host_len - 1;
            if (memchr(port, ':', port_len) != NULL)
                return gw_fail(why, cap, "an IPv6 address must be written in brackets, e.g. [::1]");
        }
        if (hp->host_len == 0)
            return gw_fail(why, cap, "missing host");
        if (!check_hostname(hp->host, hp->host_len, why, cap))
            return false;
    }
    hp->port = default_port;
    if (port != NULL) {
        int64_t p;
        if (port_len == 0)
            return gw_fail(why, cap, "missing port after ':'");
        if (!gw_parse_digits(port, port_len, 1, 65535, &p))
            return gw_fail(why, cap, "port must be a number between 1 and 65535");
        hp->port = (int)p;
    }
    return true;
}

/* True when the base path (starting with '/') would change under dot-segment
 * removal or could climb (RFC 3986 §5.2.4): the base path is the boundary no
 * request may cross, so it must be spelled plainly. */
static bool path_has_dot_segments(const char *path, size_t len)
{
    if (gw_path_climbs_above_root(path, len))
        return true;
    char *out = malloc(len + 1);
    if (!out)
        return true;
    size_t n = gw_path_remove_dots(path, len, out);
    bool changed = n != len || memcmp(out, path, len) != 0;
    free(out);
    return changed;
}

bool gw_net_parse_http_url(const char *v, struct gw_net_http_url *out, char *why, size_t cap)
{
    if (strncasecmp(v, "https://", 8) == 0)
        return gw_fail(why, cap,
                       "https is not supported (the gateway speaks plain HTTP/1.1 to the "
                       "backend; use http://)");
    if (strncasecmp(v, "http://", 7) != 0)
        return gw_fail(why, cap, "%s (expected http://host[:port][/base-path])",
                       strstr(v, "://") != NULL ? "unsupported scheme" : "not a URL");
    const char *auth = v + 7;
    size_t alen = strcspn(auth, "/?#");
    if (memchr(auth, '@', alen) != NULL)
        return gw_fail(why, cap, "user information (user@) is not allowed");
    if (!gw_net_parse_hostport(auth, alen, 80, &out->hp, why, cap))
        return false;
    const char *path = auth + alen;
    size_t plen = strlen(path);
    if (strpbrk(path, "?#") != NULL)
        return gw_fail(why, cap, "query and fragment are not allowed in the base path");
    for (size_t i = 0; i < plen; i++)
        if (!is_visible(path[i]))
            return gw_fail(why, cap,
                           "spaces and control characters are not allowed in the base path");
    if (plen > 0 && path_has_dot_segments(path, plen))
        return gw_fail(why, cap, "dot-segments (. or ..) are not allowed in the base path");
    while (plen > 0 && path[plen - 1] == '/')
        plen--;
    out->path = path;
    out->path_len = plen;
    return true;
}

int gw_net_format_hostport(const struct gw_net_hostport *hp, char *out, size_t cap)
{
    return snprintf(out, cap, "%s%.*s%s:%d", hp->v6 ? "[" : "", (int)hp->host_len, hp->host,
                    hp->v6 ? "]" : "", hp->port);
}

/* ---- CIDR ------------------------------------------------------------------ */

bool gw_net_parse_cidr(const char *s, size_t n, struct gw_cidr *c, char *why, size_t cap)
{
    const char *slash = memchr(s, '/', n);
    size_t alen = slash != NULL ? (size_t)(slash - s) : n;
    bool v4 = false;
    if (!gw_net_parse_addr(s, alen, c->addr, &v4))
        return gw_fail(why, cap, "not an IPv4 or IPv6 address");
    int bits = v4 ? 32 : 128;
    int64_t prefix = bits;
    if (slash != NULL && !gw_parse_digits(slash + 1, n - alen - 1, 0, bits, &prefix))
        return gw_fail(why, cap, "prefix length must be 0..%d", bits);
    c->prefix = (uint8_t)(v4 ? prefix + 96 : prefix);
    /* Clear the host bits so matching is a plain prefix compare. */
    for (int i = 0; i < 16; i++) {
        int keep = c->prefix - i * 8;
        if (keep <= 0)
            c->addr[i] = 0;
        else if (keep < 8)
            c->addr[i] &= (uint8_t)(0xff << (8 - keep));
    }
    return true;
}

bool gw_net_cidr_contains(const struct gw_cidr *c, const uint8_t addr[16])
{
    int whole = c->prefix / 8, rest = c->prefix % 8;
    if (memcmp(c->addr, addr, (size_t)whole) != 0)
        return false;
    return rest == 0 || ((addr[whole] ^ c->addr[whole]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

/* ---- sockets --------------------------------------------------------------- */

static int parse_host(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof(*ss));
    if (strcmp(host, "localhost") == 0)
        host = "127.0.0.1";
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        *len = sizeof(*in4);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*in6);
        return 0;
    }
    return -EINVAL;
}

int gw_net_parse_numeric(const char *host, int port, struct sockaddr_storage *out,
                         socklen_t *out_len)
{
    return parse_host(host, port, out, out_len);
}

int gw_net_listen(const char *host, int port, int backlog)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (parse_host(host, port, &ss, &len))
        return -EINVAL;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1, zero = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, backlog) < 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

int gw_net_local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -errno;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

int gw_net_resolve(const char *host, int port, struct sockaddr_storage *out, socklen_t *out_len)
{
    if (parse_host(host, port, out, out_len) == 0)
        return 0;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    char service[16];
    snprintf(service, sizeof(service), "%d", port);
    if (getaddrinfo(host, service, &hints, &res) != 0 || !res)
        return -EHOSTUNREACH;
    memcpy(out, res->ai_addr, res->ai_addrlen);
    *out_len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

void gw_net_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int gw_net_connect(const struct sockaddr_storage *addr, socklen_t len)
{
    int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    gw_net_nodelay(fd);
    if (connect(fd, (const struct sockaddr *)addr, len) < 0 && errno != EINPROGRESS) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

int gw_net_connect_result(int fd)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return -errno;
    return -err;
}

void gw_net_addr_bin(const struct sockaddr_storage *ss, uint8_t out_bin[16])
{
    if (ss->ss_family == AF_INET)
        gw_net_addr_map(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, out_bin);
    else if (ss->ss_family == AF_INET6)
        gw_net_addr_map(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, out_bin);
    else
        memset(out_bin, 0, 16);
}

void gw_net_format_addr(const struct sockaddr_storage *ss, char *out_text, size_t cap,
                        uint8_t out_bin[16])
{
    gw_net_addr_bin(ss, out_bin);
    if (ss->ss_family == AF_INET || ss->ss_family == AF_INET6)
        gw_net_addr_text(out_bin, out_text, cap);
    else
        snprintf(out_text, cap, "unknown");
}

bool gw_net_probe(const struct sockaddr_storage *addr, socklen_t len, int timeout_ms)
{
    int fd = gw_net_connect(addr, len);
    if (fd < 0)
        return false;
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    bool ok = poll(&p, 1, timeout_ms) == 1 && gw_net_connect_result(fd) == 0;
    close(fd);
    return ok;
}

/* ---- uri-host (RFC 9110 §7.2) ---- */

/* RFC 3986 §2.2-2.3 characters of a reg-name besides pct-encoding. */
static bool is_host_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("-._~!$&'()*+,;=", c) != NULL);
}

static bool is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

bool gw_net_valid_uri_host(const char *text, size_t len)
{
    const unsigned char *s = (const unsigned char *)text, *end = s + len;
    if (s == end)
        return true;
    if (*s == '[') {
        const unsigned char *rb = memchr(s, ']', len);
        char lit[INET6_ADDRSTRLEN];
        struct in6_addr a6;
        size_t n = rb ? (size_t)(rb - s - 1) : 0;
        if (!rb || n == 0 || n >= sizeof(lit))
            return false;
        memcpy(lit, s + 1, n);
        lit[n] = '\0';
        if (inet_pton(AF_INET6, lit, &a6) != 1)
            return false;
        s = rb + 1;
    } else {
        while (s < end && *s != ':') {
            if (*s == '%') {
                if (end - s < 3 || !is_hex(s[1]) || !is_hex(s[2]))
                    return false;
                s += 3;
            } else if (is_host_char(*s)) {
                s++;
            } else {
                return false;
            }
        }
    }
    if (s == end)
        return true;
    if (*s++ != ':' || end - s > 5)
        return false;
    unsigned long port = 0;
    for (; s < end; s++) {
        if (*s < '0' || *s > '9')
            return false;
        port = port * 10 + (unsigned long)(*s - '0');
    }
    return port <= 65535;
}

/* ---- buffered send ---- */

int gw_net_send_buf(int fd, struct gw_buf *b, bool *progress)
{
    while (gw_buf_len(b) > 0) {
        ssize_t n = send(fd, gw_buf_head(b), gw_buf_len(b), MSG_NOSIGNAL);
        if (n > 0) {
            gw_buf_consume(b, (size_t)n);
            *progress = true;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        return -1;
    }
    return 0;
}
