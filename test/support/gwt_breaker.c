/*
 * Helpers of the resilience integration tests (see gwt_breaker.h): raw
 * exchanges read to the close, descriptor and sanitizer probes of a child,
 * redis-server on a fixed port, background keep-alive load threads.
 */
#include "gwt_breaker.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define POLL_STEP_MS 5

static void sleep_ms(int ms)
{
    usleep((useconds_t)ms * 1000);
}

/* Appends n bytes to the growing buffer (*buf, *len, *cap). 0 or -ENOMEM. */
static int grow_append(char **buf, size_t *len, size_t *cap, const char *p, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t nc = *cap ? *cap : 4096;
        while (*len + n + 1 > nc)
            nc *= 2;
        char *b = realloc(*buf, nc);
        if (!b)
            return -ENOMEM;
        *buf = b;
        *cap = nc;
    }
    memcpy(*buf + *len, p, n);
    *len += n;
    (*buf)[*len] = '\0';
    return 0;
}

int gwt_brk_exchange(int port, const void *req, size_t len, size_t piece, bool shut_wr,
                     int timeout_ms, char **out, size_t *out_len)
{
    if (out)
        *out = NULL;
    if (out_len)
        *out_len = 0;
    int fd = gwt_connect(port);
    if (fd < 0)
        return fd;
    const char *p = req;
    size_t off = 0;
    bool peer_gone = false;
    while (off < len) {
        size_t n = piece ? GW_MIN(piece, len - off) : len - off;
        ssize_t w = send(fd, p + off, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EPIPE || errno == ECONNRESET) {
                peer_gone = true; /* the gateway answered and closed: read it */
                break;
            }
            int rc = -errno;
            close(fd);
            return rc;
        }
        off += (size_t)w;
    }
    if (shut_wr && !peer_gone)
        (void)shutdown(fd, SHUT_WR);

    char *buf = NULL;
    size_t blen = 0, bcap = 0;
    int rc = -ETIMEDOUT;
    long long deadline = gwt_now_ms() + timeout_ms;
    if (grow_append(&buf, &blen, &bcap, "", 0) != 0) {
        close(fd);
        return -ENOMEM;
    }
    for (;;) {
        long long left = deadline - gwt_now_ms();
        if (left <= 0)
            break;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int n = poll(&pfd, 1, (int)left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        char chunk[16384];
        ssize_t r = recv(fd, chunk, sizeof(chunk), 0);
        if (r == 0 || (r < 0 && errno == ECONNRESET)) {
            rc = 0;
            break;
        }
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            rc = -errno;
            break;
        }
        if (grow_append(&buf, &blen, &bcap, chunk, (size_t)r) != 0) {
            rc = -ENOMEM;
            break;
        }
    }
    close(fd);
    if (out)
        *out = buf;
    else
        free(buf);
    if (out_len)
        *out_len = blen;
    return rc;
}

int gwt_brk_count(const char *buf, size_t len, const char *needle)
{
    size_t nl = strlen(needle);
    int count = 0;
    const char *p = buf, *end = buf + len;
    while (nl > 0 && p && (size_t)(end - p) >= nl) {
        const char *hit = memmem(p, (size_t)(end - p), needle, nl);
        if (!hit)
            break;
        count++;
        p = hit + nl;
    }
    return count;
}

int gwt_brk_final_status(const char *buf, size_t len)
{
    const char *p = buf, *end = buf + len;
    while (p && end - p >= 12) {
        const char *hit = memmem(p, (size_t)(end - p), "HTTP/1.", 7);
        if (!hit || end - hit < 12)
            return -1;
        int st = atoi(hit + 9);
        if (st >= 200)
            return st;
        p = hit + 12; /* interim response: look for the next status line */
    }
    return -1;
}

bool gwt_brk_log_has_sanitizer(const struct gwt_proc *p, char *what, size_t cap)
{
    static const char *const marks[] = {"AddressSanitizer", "LeakSanitizer",
                                        "UndefinedBehaviorSanitizer", "runtime error:"};
    char *log = gwt_log_read(p);
    if (!log)
        return false;
    bool found = false;
    for (size_t i = 0; i < sizeof(marks) / sizeof(marks[0]) && !found; i++) {
        const char *hit = strstr(log, marks[i]);
        if (!hit)
            continue;
        found = true;
        if (what && cap > 0) {
            const char *bol = hit;
            while (bol > log && bol[-1] != '\n')
                bol--;
            const char *eol = strchr(hit, '\n');
            size_t n = eol ? (size_t)(eol - bol) : strlen(bol);
            snprintf(what, cap, "%.*s", (int)GW_MIN(n, cap - 1), bol);
        }
    }
    free(log);
    return found;
}

int gwt_brk_redis_start_on(struct gwt_proc *p, int port, int timeout_ms)
{
    char ps[16];
    snprintf(ps, sizeof(ps), "%d", port);
    const char *argv[] = {"redis-server", "--port",           ps,   "--bind",
                          "127.0.0.1",    "--save",           "",   "--appendonly",
                          "no",           "--protected-mode", "no", NULL};
    int rc = gwt_spawn(p, argv, NULL);
    if (rc != 0)
        return rc;
    long long deadline = gwt_now_ms() + timeout_ms;
    while (gwt_proc_alive(p)) {
        if (gwt_redis_cmd(port, "PING") == 0)
            return 0;
        if (gwt_now_ms() >= deadline)
            return -ETIMEDOUT;
        sleep_ms(POLL_STEP_MS);
    }
    return -EADDRINUSE;
}

static void *load_main(void *arg)
{
    struct gwt_brk_load *l = arg;
    int fd = -1;
    while (!atomic_load(&l->stop)) {
        if (fd < 0) {
            fd = gwt_connect(l->port);
            if (fd < 0) {
                atomic_fetch_add(&l->errors, 1);
                sleep_ms(10); /* back off from a refused connect, bounded by stop */
                continue;
            }
        }
        if (gwt_send_str(fd, l->request) != 0) {
            atomic_fetch_add(&l->errors, 1);
            close(fd);
            fd = -1;
            continue;
        }
        struct gwt_response r;
        int rc = gwt_read_response(fd, &r, false);
        if (rc == 0) {
            if (r.status >= 200 && r.status < 300)
                atomic_fetch_add(&l->ok, 1);
            else if (r.status == 429)
                atomic_fetch_add(&l->limited, 1);
            else if (r.status == 503)
                atomic_fetch_add(&l->unavailable, 1);
            else
                atomic_fetch_add(&l->other, 1);
            if (!r.keep_alive || r.conn_closed) {
                close(fd);
                fd = -1;
            }
        } else {
            if (rc == -ETIMEDOUT)
                atomic_fetch_add(&l->timeouts, 1);
            else
                atomic_fetch_add(&l->errors, 1);
            close(fd);
            fd = -1;
        }
        gwt_response_free(&r);
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

int gwt_brk_load_start(struct gwt_brk_load *l, int port, const char *target, int nthreads)
{
    memset(l, 0, sizeof(*l));
    l->port = port;
    snprintf(l->request, sizeof(l->request), "GET %s HTTP/1.1\r\nHost: h\r\n\r\n", target);
    atomic_init(&l->stop, false);
    if (nthreads > GWT_BRK_LOAD_MAX_THREADS)
        nthreads = GWT_BRK_LOAD_MAX_THREADS;
    for (int i = 0; i < nthreads; i++) {
        int rc = pthread_create(&l->threads[i], NULL, load_main, l);
        if (rc != 0) {
            gwt_brk_load_stop(l);
            return -rc;
        }
        l->nthreads = i + 1;
    }
    return 0;
}

void gwt_brk_load_stop(struct gwt_brk_load *l)
{
    atomic_store(&l->stop, true);
    for (int i = 0; i < l->nthreads; i++)
        pthread_join(l->threads[i], NULL);
    l->nthreads = 0;
}

long gwt_brk_load_responses(struct gwt_brk_load *l)
{
    return atomic_load(&l->ok) + atomic_load(&l->limited) + atomic_load(&l->unavailable) +
           atomic_load(&l->other);
}
