/*
 * bench_client: the small HTTP/1.1 clients test/bench/run.sh needs beyond wrk.
 *   idle HOST PORT N HOLD_S   open N keep-alive connections, one GET / each, print "ready N",
 *                             then hold them until SIGTERM or HOLD_S seconds pass
 *   upload HOST PORT BYTES    POST /echo with a Content-Length body from a generator
 *   download HOST PORT BYTES  GET /bytes?n=BYTES and count the body bytes
 * Blocking sockets with SO_RCVTIMEO/SO_SNDTIMEO, so every wait is bounded. Exit 0 on success.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define IO_TIMEOUT_S 30
#define HEAD_MAX     16384
#define CHUNK        (64 * 1024)

static int connect_to(const char *host, int port)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "bench_client: bad IPv4 address %s\n", host);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = IO_TIMEOUT_S, .tv_usec = 0};
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads a response head into buf (NUL-terminated). Returns the head length; body bytes
 * already read are left at buf[head_len .. *got). -1 on error, EOF or an oversized head. */
static long read_head(int fd, char *buf, size_t cap, size_t *got)
{
    *got = 0;
    while (*got + 1 < cap) {
        ssize_t r = read(fd, buf + *got, cap - 1 - *got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        *got += (size_t)r;
        buf[*got] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end != NULL)
            return (long)(end - buf) + 4;
    }
    return -1;
}

static int status_of(const char *head)
{
    int st = 0;
    if (sscanf(head, "HTTP/1.%*d %d", &st) != 1)
        return -1;
    return st;
}

/* Content-Length of a response head, -1 when absent. Case-insensitive name match. */
static long long content_length(const char *head)
{
    const char *p = head;
    while ((p = strchr(p, '\n')) != NULL) {
        p++;
        if (strncasecmp(p, "content-length:", 15) == 0)
            return strtoll(p + 15, NULL, 10);
    }
    return -1;
}

/* Reads exactly n more bytes (discarding them); the last up to cap-1 bytes kept in tail. */
static int drain_body(int fd, long long n, char *tail, size_t cap)
{
    static char scratch[CHUNK];
    size_t tl = 0;
    while (n > 0) {
        size_t want = n < (long long)sizeof(scratch) ? (size_t)n : sizeof(scratch);
        ssize_t r = read(fd, scratch, want);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        n -= r;
        if (tail != NULL) {
            size_t k = (size_t)r < cap - 1 ? (size_t)r : cap - 1;
            if (tl + k > cap - 1) {
                size_t drop = tl + k - (cap - 1);
                memmove(tail, tail + drop, tl - drop);
                tl -= drop;
            }
            memcpy(tail + tl, scratch + (size_t)r - k, k);
            tl += k;
            tail[tl] = '\0';
        }
    }
    return 0;
}

/* One request on fd, response read completely (Content-Length framing). Returns status. */
static int exchange(int fd, const char *req)
{
    char head[HEAD_MAX];
    size_t got;
    if (write_all(fd, req, strlen(req)) < 0)
        return -1;
    long hl = read_head(fd, head, sizeof(head), &got);
    if (hl < 0)
        return -1;
    long long cl = content_length(head);
    long long have = (long long)got - hl;
    if (cl < 0 || have > cl)
        return -1;
    if (drain_body(fd, cl - have, NULL, 0) < 0)
        return -1;
    return status_of(head);
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int cmd_idle(const char *host, int port, long n, long hold_s)
{
    raise_nofile();
    int *fds = calloc((size_t)n, sizeof(int));
    if (fds == NULL)
        return 1;
    char req[256];
    snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: bench-idle\r\n\r\n",
             host, port);
    long ok = 0;
    for (long i = 0; i < n; i++) {
        fds[i] = connect_to(host, port);
        if (fds[i] < 0) {
            fprintf(stderr, "bench_client: connection %ld: connect: %s\n", i, strerror(errno));
            break;
        }
        int st = exchange(fds[i], req);
        if (st != 200) {
            fprintf(stderr, "bench_client: connection %ld: status %d\n", i, st);
            close(fds[i]);
            break;
        }
        ok++;
    }
    printf("ready %ld\n", ok);
    fflush(stdout);
    /* Hold until the script, done measuring, sends SIGTERM (default action: exit, the
     * kernel closes the sockets), or hold_s passes. */
    time_t end = time(NULL) + hold_s;
    while (time(NULL) < end)
        (void)poll(NULL, 0, 1000);
    for (long i = 0; i < ok; i++)
        close(fds[i]);
    free(fds);
    return ok == n ? 0 : 1;
}

static int cmd_upload(const char *host, int port, long long bytes)
{
    int fd = connect_to(host, port);
    if (fd < 0) {
        perror("bench_client: connect");
        return 1;
    }
    char head[HEAD_MAX];
    int hl = snprintf(head, sizeof(head),
                      "POST /echo HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: "
                      "application/octet-stream\r\nContent-Length: %lld\r\n\r\n",
                      host, port, bytes);
    if (write_all(fd, head, (size_t)hl) < 0)
        return 1;
    static char chunk[CHUNK];
    for (size_t i = 0; i < sizeof(chunk); i++)
        chunk[i] = (char)('a' + i % 26);
    long long left = bytes;
    while (left > 0) {
        size_t n = left < (long long)sizeof(chunk) ? (size_t)left : sizeof(chunk);
        if (write_all(fd, chunk, n) < 0) {
            perror("bench_client: upload write");
            return 1;
        }
        left -= (long long)n;
    }
    size_t got;
    long rhl = read_head(fd, head, sizeof(head), &got);
    if (rhl < 0) {
        fprintf(stderr, "bench_client: upload: no response head\n");
        return 1;
    }
    int st = status_of(head);
    long long cl = content_length(head);
    char body[4096];
    size_t have = got - (size_t)rhl;
    memcpy(body, head + rhl, have < sizeof(body) - 1 ? have : sizeof(body) - 1);
    body[have < sizeof(body) - 1 ? have : sizeof(body) - 1] = '\0';
    if (cl > (long long)have &&
        drain_body(fd, cl - (long long)have, body + strlen(body), sizeof(body) - strlen(body)) < 0)
        return 1;
    char want[64];
    snprintf(want, sizeof(want), "%lld", bytes);
    close(fd);
    if (st != 200 || strstr(body, want) == NULL) {
        fprintf(stderr, "bench_client: upload: status %d, body %.200s\n", st, body);
        return 1;
    }
    printf("upload ok %lld bytes\n", bytes);
    return 0;
}

static int cmd_download(const char *host, int port, long long bytes)
{
    int fd = connect_to(host, port);
    if (fd < 0) {
        perror("bench_client: connect");
        return 1;
    }
    char req[256];
    snprintf(req, sizeof(req), "GET /bytes?n=%lld HTTP/1.1\r\nHost: %s:%d\r\n\r\n", bytes, host,
             port);
    if (write_all(fd, req, strlen(req)) < 0)
        return 1;
    char head[HEAD_MAX];
    size_t got;
    long hl = read_head(fd, head, sizeof(head), &got);
    if (hl < 0)
        return 1;
    int st = status_of(head);
    long long cl = content_length(head);
    long long have = (long long)got - hl;
    if (st != 200 || cl != bytes || have > cl) {
        fprintf(stderr, "bench_client: download: status %d, content-length %lld\n", st, cl);
        return 1;
    }
    if (drain_body(fd, cl - have, NULL, 0) < 0) {
        fprintf(stderr, "bench_client: download: short body\n");
        return 1;
    }
    close(fd);
    printf("download ok %lld bytes\n", bytes);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 6 && strcmp(argv[1], "idle") == 0)
        return cmd_idle(argv[2], atoi(argv[3]), atol(argv[4]), atol(argv[5]));
    if (argc == 5 && strcmp(argv[1], "upload") == 0)
        return cmd_upload(argv[2], atoi(argv[3]), atoll(argv[4]));
    if (argc == 5 && strcmp(argv[1], "download") == 0)
        return cmd_download(argv[2], atoi(argv[3]), atoll(argv[4]));
    fprintf(stderr, "usage: bench_client idle HOST PORT N HOLD_S | upload HOST PORT BYTES | "
                    "download HOST PORT BYTES\n");
    return 2;
}
