/*
 * Fault-injection helpers (see gwt_fault.h): a scripted fake upstream on its
 * own thread (poll loop over the listening socket, a wake pipe and the
 * accepted connections), a gateway started under a wrapper command, and
 * /proc probes of CPU time and descriptors.
 */
#include "gwt_fault.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_CONNS 64
#define CONN_BUF  (256 * 1024) /* bytes of one request the fake holds at most */
#define LAST_REQ  (64 * 1024)  /* bytes of the last request kept for inspection */

static const char default_reply[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                    "Content-Length: 13\r\n\r\n{\"fake\":true}";

struct fconn {
    int fd;     /* -1 when the slot is free */
    bool held;  /* GWT_FAULT_HOLD: input is dropped */
    char *buf;  /* received bytes not yet consumed */
    size_t len; /* bytes in buf */
};

struct gwt_fault {
    int listen_fd;
    int port;
    int wake[2]; /* pipe: written by gwt_fault_stop */
    pthread_t thread;
    pthread_mutex_t mu; /* guards everything below */
    struct gwt_fault_step *steps;
    size_t nsteps, next_step;
    long requests, connections;
    long peer_closes; /* connections the peer (the gateway) closed or reset */
    char last[LAST_REQ];
    size_t last_len;
    struct fconn conns[MAX_CONNS]; /* thread-owned */
};

/* ---- request framing --------------------------------------------------- */

static const char *find_mem(const char *h, size_t hl, const char *n, size_t nl)
{
    if (nl == 0 || hl < nl)
        return NULL;
    for (size_t i = 0; i + nl <= hl; i++) {
        if (h[i] == n[0] && memcmp(h + i, n, nl) == 0)
            return h + i;
    }
    return NULL;
}

/* Value of header name in head[0..hlen) as a NUL-terminated copy in out. */
static bool header_value(const char *head, size_t hlen, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    const char *p = memchr(head, '\n', hlen);
    while (p && (size_t)(p + 1 - head) < hlen) {
        const char *line = p + 1;
        const char *eol = memchr(line, '\n', hlen - (size_t)(line - head));
        if (!eol)
            break;
        if ((size_t)(eol - line) > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            const char *e = eol;
            while (e > v && (e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
                e--;
            size_t n = GW_MIN((size_t)(e - v), cap - 1);
            memcpy(out, v, n);
            out[n] = '\0';
            return true;
        }
        p = eol;
    }
    return false;
}

/* Length of the complete request at the start of buf (of its head only
 * when head_only), 0 when more bytes are needed, or -1 when it can never
 * complete (the connection is dropped). */
static long request_length(const char *buf, size_t len, bool head_only)
{
    const char *e = find_mem(buf, len, "\r\n\r\n", 4);
    if (!e)
        return len >= CONN_BUF ? -1 : 0;
    size_t hlen = (size_t)(e - buf) + 4;
    if (head_only)
        return (long)hlen;
    char v[64];
    if (header_value(buf, hlen, "content-length", v, sizeof(v))) {
        char *end;
        unsigned long long cl = strtoull(v, &end, 10);
        if (*end != '\0' || hlen + cl > CONN_BUF)
            return -1;
        return hlen + cl <= len ? (long)(hlen + cl) : 0;
    }
    if (header_value(buf, hlen, "transfer-encoding", v, sizeof(v))) {
        /* Walk the chunks (no trailers). */
        size_t pos = hlen;
        for (;;) {
            const char *nl = find_mem(buf + pos, len - pos, "\r\n", 2);
            if (!nl)
                return len >= CONN_BUF ? -1 : 0;
            unsigned long long sz = strtoull(buf + pos, NULL, 16);
            pos = (size_t)(nl - buf) + 2;
            if (sz == 0)
                return pos + 2 <= len ? (long)(pos + 2) : 0;
            if (pos + sz + 2 > CONN_BUF)
                return -1;
            if (pos + sz + 2 > len)
                return 0;
            pos += sz + 2;
        }
    }
    return (long)hlen;
}

/* ---- the fake's thread ------------------------------------------------- */

static void conn_drop(struct fconn *c, bool reset)
{
    if (c->fd < 0)
        return;
    if (reset) {
        struct linger lg = {1, 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    } else {
        shutdown(c->fd, SHUT_RDWR);
    }
    close(c->fd);
    c->fd = -1;
    c->held = false;
    c->len = 0;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* the peer went away: its problem */
        p += w;
        n -= (size_t)w;
    }
}

/* Answers every complete request buffered on c. */
static void serve(struct gwt_fault *f, struct fconn *c)
{
    while (c->fd >= 0 && !c->held) {
        pthread_mutex_lock(&f->mu);
        bool at_head = f->next_step < f->nsteps && f->steps[f->next_step].at_head;
        pthread_mutex_unlock(&f->mu);
        long n = request_length(c->buf, c->len, at_head);
        if (n < 0) {
            conn_drop(c, false);
            return;
        }
        if (n == 0)
            return;
        pthread_mutex_lock(&f->mu);
        f->requests++;
        f->last_len = GW_MIN((size_t)n, sizeof(f->last) - 1);
        memcpy(f->last, c->buf, f->last_len);
        f->last[f->last_len] = '\0';
        struct gwt_fault_step st = {default_reply, sizeof(default_reply) - 1, GWT_FAULT_KEEP,
                                    false};
        char *copy = NULL;
        if (f->next_step < f->nsteps) {
            st = f->steps[f->next_step++];
            if (st.reply) {
                copy = malloc(st.len ? st.len : 1);
                if (copy)
                    memcpy(copy, st.reply, st.len);
                st.reply = copy;
            }
        }
        pthread_mutex_unlock(&f->mu);
        memmove(c->buf, c->buf + n, c->len - (size_t)n);
        c->len -= (size_t)n;
        if (st.reply)
            write_all(c->fd, st.reply, st.len);
        free(copy);
        switch (st.after) {
        case GWT_FAULT_KEEP:
            break;
        case GWT_FAULT_CLOSE:
            conn_drop(c, false);
            return;
        case GWT_FAULT_RESET:
            conn_drop(c, true);
            return;
        case GWT_FAULT_HOLD:
        default:
            c->held = true;
            c->len = 0;
            return;
        }
    }
}

static void *fault_main(void *arg)
{
    struct gwt_fault *f = arg;
    for (;;) {
        struct pollfd pfd[MAX_CONNS + 2];
        int idx[MAX_CONNS + 2];
        nfds_t n = 0;
        pfd[n++] = (struct pollfd){.fd = f->wake[0], .events = POLLIN};
        pfd[n++] = (struct pollfd){.fd = f->listen_fd, .events = POLLIN};
        for (int i = 0; i < MAX_CONNS; i++) {
            if (f->conns[i].fd >= 0) {
                idx[n] = i;
                pfd[n++] = (struct pollfd){.fd = f->conns[i].fd, .events = POLLIN};
            }
        }
        int pr = poll(pfd, n, -1);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr < 0 || (pfd[0].revents & (POLLIN | POLLHUP)))
            break;
        if (pfd[1].revents & POLLIN) {
            int fd = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0) {
                int slot = -1;
                for (int i = 0; i < MAX_CONNS && slot < 0; i++)
                    slot = f->conns[i].fd < 0 ? i : -1;
                if (slot < 0) {
                    close(fd);
                } else {
                    f->conns[slot].fd = fd;
                    f->conns[slot].len = 0;
                    f->conns[slot].held = false;
                    pthread_mutex_lock(&f->mu);
                    f->connections++;
                    pthread_mutex_unlock(&f->mu);
                }
            }
        }
        for (nfds_t k = 2; k < n; k++) {
            if (!pfd[k].revents)
                continue;
            struct fconn *c = &f->conns[idx[k]];
            if (c->fd < 0)
                continue;
            char tmp[16384];
            char *dst = c->held ? tmp : c->buf + c->len;
            size_t room = c->held ? sizeof(tmp) : CONN_BUF - c->len;
            ssize_t got = room ? recv(c->fd, dst, room, 0) : -1;
            if (got < 0 && errno == EINTR)
                continue;
            if (got <= 0) {
                conn_drop(c, false);
                pthread_mutex_lock(&f->mu);
                f->peer_closes++;
                pthread_mutex_unlock(&f->mu);
                continue;
            }
            if (!c->held) {
                c->len += (size_t)got;
                serve(f, c);
            }
        }
    }
    return NULL;
}

/* ---- public ------------------------------------------------------------ */

int gwt_fault_start(struct gwt_fault **out)
{
    *out = NULL;
    struct gwt_fault *f = calloc(1, sizeof(*f));
    if (!f)
        return -ENOMEM;
    pthread_mutex_init(&f->mu, NULL);
    f->listen_fd = -1;
    f->wake[0] = f->wake[1] = -1;
    for (int i = 0; i < MAX_CONNS; i++)
        f->conns[i].fd = -1;
    int rc = 0;
    for (int i = 0; i < MAX_CONNS; i++) {
        f->conns[i].buf = malloc(CONN_BUF);
        if (!f->conns[i].buf) {
            rc = -ENOMEM;
            goto fail;
        }
    }
    if (pipe2(f->wake, O_CLOEXEC) != 0) {
        rc = -errno;
        goto fail;
    }
    f->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (f->listen_fd < 0) {
        rc = -errno;
        goto fail;
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    if (bind(f->listen_fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        listen(f->listen_fd, 128) != 0 ||
        getsockname(f->listen_fd, (struct sockaddr *)&a, &alen) != 0) {
        rc = -errno;
        goto fail;
    }
    f->port = ntohs(a.sin_port);
    int e = pthread_create(&f->thread, NULL, fault_main, f);
    if (e != 0) {
        rc = -e;
        goto fail;
    }
    *out = f;
    return 0;
fail:
    if (f->listen_fd >= 0)
        close(f->listen_fd);
    if (f->wake[0] >= 0) {
        close(f->wake[0]);
        close(f->wake[1]);
    }
    for (int i = 0; i < MAX_CONNS; i++)
        free(f->conns[i].buf);
    pthread_mutex_destroy(&f->mu);
    free(f);
    return rc;
}

static void steps_free(struct gwt_fault_step *s, size_t n)
{
    for (size_t i = 0; s && i < n; i++)
        free((char *)s[i].reply);
    free(s);
}

int gwt_fault_script(struct gwt_fault *f, const struct gwt_fault_step *steps, size_t n)
{
    struct gwt_fault_step *copy = n ? calloc(n, sizeof(*copy)) : NULL;
    if (n && !copy)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        copy[i].after = steps[i].after;
        copy[i].at_head = steps[i].at_head;
        if (!steps[i].reply)
            continue;
        size_t len = steps[i].len ? steps[i].len : strlen(steps[i].reply);
        char *r = malloc(len ? len : 1);
        if (!r) {
            steps_free(copy, i);
            return -ENOMEM;
        }
        memcpy(r, steps[i].reply, len);
        copy[i].reply = r;
        copy[i].len = len;
    }
    pthread_mutex_lock(&f->mu);
    struct gwt_fault_step *old = f->steps;
    size_t oldn = f->nsteps;
    f->steps = copy;
    f->nsteps = n;
    f->next_step = 0;
    f->requests = 0;
    f->connections = 0;
    f->peer_closes = 0;
    f->last_len = 0;
    f->last[0] = '\0';
    pthread_mutex_unlock(&f->mu);
    steps_free(old, oldn);
    return 0;
}

int gwt_fault_port(const struct gwt_fault *f)
{
    return f->port;
}

long gwt_fault_requests(struct gwt_fault *f)
{
    pthread_mutex_lock(&f->mu);
    long n = f->requests;
    pthread_mutex_unlock(&f->mu);
    return n;
}

long gwt_fault_connections(struct gwt_fault *f)
{
    pthread_mutex_lock(&f->mu);
    long n = f->connections;
    pthread_mutex_unlock(&f->mu);
    return n;
}

long gwt_fault_peer_closes(struct gwt_fault *f)
{
    pthread_mutex_lock(&f->mu);
    long n = f->peer_closes;
    pthread_mutex_unlock(&f->mu);
    return n;
}

int gwt_fault_wait_requests(struct gwt_fault *f, long want, int timeout_ms)
{
    long long deadline = gwt_now_ms() + timeout_ms;
    while (gwt_fault_requests(f) < want) {
        if (gwt_now_ms() >= deadline)
            return -ETIMEDOUT;
        usleep(2000);
    }
    return 0;
}

size_t gwt_fault_last_request(struct gwt_fault *f, char *buf, size_t cap)
{
    if (cap == 0)
        return 0;
    pthread_mutex_lock(&f->mu);
    size_t n = GW_MIN(f->last_len, cap - 1);
    memcpy(buf, f->last, n);
    buf[n] = '\0';
    pthread_mutex_unlock(&f->mu);
    return n;
}

void gwt_fault_stop(struct gwt_fault *f)
{
    if (!f)
        return;
    close(f->wake[1]); /* POLLHUP on the read end wakes the thread */
    pthread_join(f->thread, NULL);
    close(f->wake[0]);
    close(f->listen_fd);
    for (int i = 0; i < MAX_CONNS; i++) {
        conn_drop(&f->conns[i], false);
        free(f->conns[i].buf);
    }
    steps_free(f->steps, f->nsteps);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

/* ---- gateway under a wrapper ------------------------------------------- */

int gwt_fault_gateway_wrapped(struct gwt_proc *p, int *port, const char *const wrapper[],
                              const char *const env[])
{
    return gwt_gateway_start_wrapped(p, port, wrapper, env);
}

bool gwt_fault_have_command(const char *name)
{
    if (strchr(name, '/'))
        return access(name, X_OK) == 0;
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/bin:/bin";
    char dir[4096];
    while (*path) {
        size_t n = strcspn(path, ":");
        if (n > 0 && n < sizeof(dir) - strlen(name) - 2) {
            memcpy(dir, path, n);
            snprintf(dir + n, sizeof(dir) - n, "/%s", name);
            struct stat st;
            if (stat(dir, &st) == 0 && S_ISREG(st.st_mode) && access(dir, X_OK) == 0)
                return true;
        }
        path += n;
        if (*path == ':')
            path++;
    }
    return false;
}

/* ---- client-side probes ------------------------------------------------ */

long gwt_fault_bytes_until_eof(int fd, int timeout_ms)
{
    long total = 0;
    long long deadline = gwt_now_ms() + timeout_ms;
    char buf[16384];
    for (;;) {
        long long left = deadline - gwt_now_ms();
        if (left <= 0)
            return -1;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, (int)left);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            return -1;
        ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return total;
        if (n > 0)
            total += n;
        else if (errno != EINTR && errno != EAGAIN)
            return -1;
    }
}

/* ---- /proc probes ------------------------------------------------------ */

long long gwt_fault_cpu_ms(pid_t pid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -EIO;
    buf[n] = '\0';
    /* Field 2 (comm) may hold spaces and parentheses: start after the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return -EPROTO;
    p++;
    /* Fields 3.. follow; utime and stime are fields 14 and 15. */
    unsigned long long utime = 0, stime = 0;
    int field = 2;
    char *save = NULL;
    for (char *tok = strtok_r(p, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        field++;
        if (field == 14)
            utime = strtoull(tok, NULL, 10);
        else if (field == 15) {
            stime = strtoull(tok, NULL, 10);
            break;
        }
    }
    if (field != 15)
        return -EPROTO;
    long hz = sysconf(_SC_CLK_TCK);
    if (hz <= 0)
        hz = 100;
    return (long long)((utime + stime) * 1000ull / (unsigned long long)hz);
}

int gwt_fault_fd_count(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -errno;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (isdigit((unsigned char)e->d_name[0]))
            n++;
    }
    closedir(d);
    return n;
}

int gwt_fault_wait_fds(pid_t pid, int want, int timeout_ms)
{
    long long deadline = gwt_now_ms() + timeout_ms;
    for (;;) {
        int n = gwt_fault_fd_count(pid);
        if (n <= want || gwt_now_ms() >= deadline)
            return n;
        usleep(5000);
    }
}
