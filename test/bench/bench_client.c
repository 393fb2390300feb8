/*
 * bench_client: the small HTTP/1.1 clients test/bench/run.sh needs beyond wrk.
 *   idle HOST PORT N HOLD_S   open N keep-alive connections, one GET / each, print "ready N",
 *                             then hold them until SIGTERM or HOLD_S seconds pass
 *   upload HOST PORT BYTES    POST /echo with a Content-Length body from a generator
 *   download HOST PORT BYTES  GET /bytes?n=BYTES and count the body bytes
 *   paced HOST PORT RATE SECONDS CONNS
 *                             open-loop load: GET /api/flood at RATE requests/s for SECONDS on
 *                             up to CONNS keep-alive connections (a request waits for a free one,
 *                             counted "late"), and GET /health every 20 ms on its own
 *                             connection; prints the statuses, the 200s per second after the
 *                             first second, and the /health latency p50/p99/max (issue 12's
 *                             shaped flood)
 * Blocking sockets with SO_RCVTIMEO/SO_SNDTIMEO (paced: non-blocking with poll and a deadline),
 * so every wait is bounded. Exit 0 on success.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
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

/* ---- paced: an open-loop flood with a /health probe beside it ---- */

#define PACED_MAX 4096

struct pconn {
    int fd;
    bool busy;
    uint64_t sent_us;
    char buf[HEAD_MAX];
    size_t len;
};

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int nb_connect(const char *host, int port)
{
    int fd = connect_to(host, port);
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    return fd;
}

/* A whole response in c->buf (head + Content-Length body)? Its status,
 * else 0. */
static int response_done(struct pconn *c)
{
    c->buf[c->len < sizeof(c->buf) ? c->len : sizeof(c->buf) - 1] = '\0';
    char *end = strstr(c->buf, "\r\n\r\n");
    if (end == NULL)
        return 0;
    size_t head = (size_t)(end + 4 - c->buf);
    long cl = 0;
    char *h = strcasestr(c->buf, "\r\nContent-Length:");
    if (h != NULL && h < end)
        cl = strtol(h + 17, NULL, 10);
    if (c->len < head + (size_t)cl)
        return 0;
    int status = atoi(c->buf + 9);
    size_t used = head + (size_t)cl;
    memmove(c->buf, c->buf + used, c->len - used);
    c->len -= used;
    return status ? status : -1;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmd_paced(const char *host, int port, double rate, int secs, int nconns)
{
    static struct pconn cs[PACED_MAX + 1];
    static struct pollfd pfd[PACED_MAX + 1];
    static uint64_t health_lat[100000];
    if (nconns < 1 || nconns > PACED_MAX || rate <= 0 || secs < 1)
        return 2;
    static const char req[] = "GET /api/flood HTTP/1.1\r\nHost: bench\r\n\r\n";
    static const char hreq[] = "GET /health HTTP/1.1\r\nHost: bench\r\n\r\n";
    long ok_per_s[3600] = {0}, st2xx = 0, st429 = 0, other = 0, late = 0, sent = 0;
    size_t nh = 0;
    struct pconn *hc = &cs[PACED_MAX];
    hc->fd = nb_connect(host, port);
    if (hc->fd < 0)
        return 1;
    for (int i = 0; i < nconns; i++)
        cs[i].fd = -1;
    uint64_t t0 = mono_us(), end = t0 + (uint64_t)secs * 1000000u, next = t0, next_h = t0;
    uint64_t drain_end = end + 3000000u; /* held requests finish */
    for (;;) {
        uint64_t now = mono_us();
        if (now >= drain_end)
            break;
        while (now < end && next <= now) { /* due requests */
            int idle = -1;
            for (int i = 0; i < nconns && idle < 0; i++)
                if (!cs[i].busy)
                    idle = i;
            if (idle < 0) {
                late++;
                next += (uint64_t)(1e6 / rate);
                continue;
            }
            struct pconn *c = &cs[idle];
            if (c->fd < 0 && (c->fd = nb_connect(host, port)) < 0)
                return 1;
            if (send(c->fd, req, sizeof(req) - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof(req) - 1)) {
                close(c->fd);
                c->fd = -1;
                other++;
            } else {
                c->busy = true;
                c->sent_us = now;
                c->len = 0;
                sent++;
            }
            next += (uint64_t)(1e6 / rate);
        }
        if (now < end && next_h <= now && !hc->busy) {
            if (send(hc->fd, hreq, sizeof(hreq) - 1, MSG_NOSIGNAL) == (ssize_t)(sizeof(hreq) - 1)) {
                hc->busy = true;
                hc->sent_us = now;
            }
            next_h = now + 20000;
        }
        int n = 0, map[PACED_MAX + 1];
        for (int i = 0; i <= PACED_MAX; i++) {
            if (i >= nconns && i != PACED_MAX)
                continue;
            if (cs[i].fd >= 0 && cs[i].busy) {
                pfd[n] = (struct pollfd){.fd = cs[i].fd, .events = POLLIN};
                map[n++] = i;
            }
        }
        int wait_ms = 1;
        if (poll(pfd, (nfds_t)n, wait_ms) < 0)
            return 1;
        for (int k = 0; k < n; k++) {
            if (!(pfd[k].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            struct pconn *c = &cs[map[k]];
            ssize_t r = recv(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len, 0);
            if (r <= 0) {
                close(c->fd);
                c->fd = -1;
                c->busy = false;
                other++;
                if (c == hc)
                    return 1;
                continue;
            }
            c->len += (size_t)r;
            int status = response_done(c);
            if (status == 0)
                continue;
            c->busy = false;
            uint64_t at = mono_us();
            if (c == hc) {
                if (nh < sizeof(health_lat) / sizeof(health_lat[0]))
                    health_lat[nh++] = at - c->sent_us;
                continue;
            }
            if (status == 200) {
                st2xx++;
                uint64_t sec = (at - t0) / 1000000u;
                if (sec < 3600)
                    ok_per_s[sec]++;
            } else if (status == 429) {
                st429++;
            } else {
                other++;
            }
        }
        if (now >= end) {
            bool any = false;
            for (int i = 0; i < nconns; i++)
                any = any || cs[i].busy;
            if (!any)
                break;
        }
    }
    long steady = 0;
    for (int s = 1; s < secs; s++)
        steady += ok_per_s[s];
    qsort(health_lat, nh, sizeof(health_lat[0]), cmp_u64);
    printf("sent %ld (late %ld) 200 %ld 429 %ld other %ld\n", sent, late, st2xx, st429, other);
    printf("admitted per second (seconds 1..%d) %.1f\n", secs - 1,
           secs > 1 ? (double)steady / (secs - 1) : 0.0);
    if (nh > 0)
        printf("health n %zu p50 %.3f ms p99 %.3f ms max %.3f ms\n", nh,
               health_lat[nh / 2] / 1000.0, health_lat[(nh * 99) / 100] / 1000.0,
               health_lat[nh - 1] / 1000.0);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 7 && strcmp(argv[1], "paced") == 0)
        return cmd_paced(argv[2], atoi(argv[3]), atof(argv[4]), atoi(argv[5]), atoi(argv[6]));
    if (argc == 6 && strcmp(argv[1], "idle") == 0)
        return cmd_idle(argv[2], atoi(argv[3]), atol(argv[4]), atol(argv[5]));
    if (argc == 5 && strcmp(argv[1], "upload") == 0)
        return cmd_upload(argv[2], atoi(argv[3]), atoll(argv[4]));
    if (argc == 5 && strcmp(argv[1], "download") == 0)
        return cmd_download(argv[2], atoi(argv[3]), atoll(argv[4]));
    fprintf(stderr, "usage: bench_client idle HOST PORT N HOLD_S | upload HOST PORT BYTES | "
                    "download HOST PORT BYTES | paced HOST PORT RATE SECONDS CONNS\n");
    return 2;
}
