/* Diagnostic log on stderr and JSON access log on stdout (see gw/log.h). */
#include "gw/log.h"

#include "put.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static _Atomic int g_level = GW_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void gw_log_set_level(enum gw_log_level level)
{
    atomic_store_explicit(&g_level, (int)level, memory_order_relaxed);
}

bool gw_log_enabled(enum gw_log_level level)
{
    return (int)level >= atomic_load_explicit(&g_level, memory_order_relaxed);
}

static size_t format_time(char *out, size_t cap)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    int m = snprintf(out + n, cap - n, ".%03ldZ", ts.tv_nsec / 1000000L);
    return n + (m > 0 ? (size_t)m : 0);
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

void gw_log(enum gw_log_level level, const char *fmt, ...)
{
    if (!gw_log_enabled(level))
        return;
    char line[1024];
    size_t n = format_time(line, sizeof(line));
    n += (size_t)snprintf(line + n, sizeof(line) - n, " %s ", level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    n += (size_t)m;
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    write_all(STDERR_FILENO, line, n);
}

/* ---- access log ---------------------------------------------------------
 *
 * Lines are rendered by hand into a per-thread buffer and written in batches:
 * when the buffer fills, and when its thread calls gw_log_access_flush (a
 * worker does before it sleeps, so a line waits at most one loop iteration
 * and a busy worker writes once per iteration, not once per request, as
 * nginx does with access_log buffer=). Batches go to a queue that one writer
 * thread of the log's own empties into stdout, each batch in one write(2)
 * loop, so lines never interleave even on a pipe (where writes above
 * PIPE_BUF are not atomic), and a stdout that stalls (a full pipe, a paused
 * log collector, a non-blocking descriptor) never stalls a worker: past
 * ACCESS_QUEUE_MAX bytes queued, batches are dropped, counted and warned
 * about.
 *
 * Locking: g_q_mu guards the queue and the writer's state; the per-thread
 * buffers are the calling thread's own. */

#define ACCESS_BUF       (64 * 1024)
#define ACCESS_FLUSH_AT  (48 * 1024) /* flush once this much is buffered */
#define ACCESS_FIXED_MAX 448         /* the line without its strings */

#define ACCESS_QUEUE_MAX (8 * 1024 * 1024) /* bytes queued for the writer at most */

struct batch {
    struct batch *next;
    size_t len;
    char data[];
};

static pthread_mutex_t g_q_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_q_work = PTHREAD_COND_INITIALIZER; /* a batch was queued */
static pthread_cond_t g_q_idle = PTHREAD_COND_INITIALIZER; /* the queue ran empty */
static struct batch *g_q_head, *g_q_tail;
static size_t g_q_bytes; /* bytes queued or being written */
static bool g_writer_up; /* the writer thread runs */
static _Atomic uint64_t g_dropped_lines;
static _Atomic int64_t g_dropped_warned_s; /* last warning, Unix s */

static __thread char t_access[ACCESS_BUF];
static __thread size_t t_access_len;
static __thread time_t t_ts_sec = -1; /* second that t_ts_text shows */
static __thread char t_ts_text[24];   /* "YYYY-MM-DDTHH:MM:SS" */

/* Writes all n bytes to fd, waiting for room when fd is non-blocking;
 * gives up on any other error (the log must never stop the gateway). */
static void write_blocking(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            (void)poll(&pfd, 1, 1000);
        } else {
            return;
        }
    }
}

static void *writer_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&g_q_mu);
    for (;;) {
        while (!g_q_head)
            pthread_cond_wait(&g_q_work, &g_q_mu);
        struct batch *b = g_q_head;
        g_q_head = b->next;
        if (!g_q_head)
            g_q_tail = NULL;
        pthread_mutex_unlock(&g_q_mu);
        write_blocking(STDOUT_FILENO, b->data, b->len);
        pthread_mutex_lock(&g_q_mu);
        g_q_bytes -= b->len;
        free(b);
        if (!g_q_head)
            pthread_cond_broadcast(&g_q_idle);
    }
    return NULL;
}

static void note_dropped(const char *p, size_t n)
{
    uint64_t lines = 0;
    for (const char *q = p; (q = memchr(q, '\n', (size_t)(p + n - q))) != NULL; q++)
        lines++;
    uint64_t total = atomic_fetch_add(&g_dropped_lines, lines) + lines;
    int64_t now = gw_wall_s(), last = atomic_load(&g_dropped_warned_s);
    if (now - last >= 10 && atomic_compare_exchange_strong(&g_dropped_warned_s, &last, now))
        gw_warn("access log: stdout is not keeping up; %llu lines dropped so far",
                (unsigned long long)total);
}

/* Queues a copy of p[0..n) (whole lines) for the writer thread, starting it
 * the first time. */
static void write_out(const char *p, size_t n)
{
    struct batch *b = malloc(sizeof(*b) + n);
    if (!b) {
        note_dropped(p, n);
        return;
    }
    memcpy(b->data, p, n);
    b->len = n;
    b->next = NULL;
    pthread_mutex_lock(&g_q_mu);
    if (!g_writer_up) {
        pthread_t t;
        g_writer_up = pthread_create(&t, NULL, writer_main, NULL) == 0;
        if (g_writer_up)
            pthread_detach(t);
    }
    if (!g_writer_up || g_q_bytes + n > ACCESS_QUEUE_MAX) {
        pthread_mutex_unlock(&g_q_mu);
        note_dropped(p, n);
        free(b);
        return;
    }
    if (g_q_tail)
        g_q_tail->next = b;
    else
        g_q_head = b;
    g_q_tail = b;
    g_q_bytes += n;
    pthread_cond_signal(&g_q_work);
    pthread_mutex_unlock(&g_q_mu);
}

bool gw_log_access_drain(int timeout_ms)
{
    gw_log_access_flush();
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&g_q_mu);
    int rc = 0;
    while (g_q_bytes > 0 && rc == 0)
        rc = pthread_cond_timedwait(&g_q_idle, &g_q_mu, &until);
    bool empty = g_q_bytes == 0;
    pthread_mutex_unlock(&g_q_mu);
    return empty;
}

uint64_t gw_log_access_dropped(void)
{
    return atomic_load(&g_dropped_lines);
}

void gw_log_access_flush(void)
{
    if (t_access_len == 0)
        return;
    write_out(t_access, t_access_len);
    t_access_len = 0;
}

/* True when s[0..n) is well-formed UTF-8 (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF). */
static bool utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        unsigned lo = 0x80, hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) {
            len = 2;
        } else if (c >= 0xe0 && c <= 0xef) {
            len = 3;
            if (c == 0xe0)
                lo = 0xa0; /* overlong */
            else if (c == 0xed)
                hi = 0x9f; /* surrogates */
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4;
            if (c == 0xf0)
                lo = 0x90; /* overlong */
            else if (c == 0xf4)
                hi = 0x8f; /* above U+10FFFF */
        } else {
            return false;
        }
        if (n - i < len || s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t k = 2; k < len; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xbf)
                return false;
        i += len;
    }
    return true;
}

/* A JSON string (RFC 8259 §7) of s, quotes included: '"', '\' and control
 * characters escaped; bytes that are not UTF-8 replaced by a marker, as the
 * request-target is client bytes. Needs 2 + 6 * n bytes at p at most. */
static char *put_json_string(char *p, struct gw_slice s)
{
    static const char hex[] = "0123456789abcdef";
    *p++ = '"';
    if (s.len && !utf8_valid((const unsigned char *)s.ptr, s.len)) {
        p = GW_PUT_LIT(p, "<non-utf8>\"");
        return p;
    }
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c == '"' || c == '\\') {
            *p++ = '\\';
            *p++ = (char)c;
        } else if (c < 0x20) {
            p = GW_PUT_LIT(p, "\\u00");
            *p++ = hex[c >> 4];
            *p++ = hex[c & 15];
        } else {
            *p++ = (char)c;
        }
    }
    *p++ = '"';
    return p;
}

/* ms with three decimals ("12.345"), always with a decimal point so that
 * JSON readers see a real number, as before. Negative values print 0. */
static char *put_ms(char *p, double ms)
{
    uint64_t us = ms > 0 ? (uint64_t)(ms * 1000.0 + 0.5) : 0;
    p = gw_put_u64(p, us / 1000);
    *p++ = '.';
    unsigned frac = (unsigned)(us % 1000);
    *p++ = (char)('0' + frac / 100);
    *p++ = (char)('0' + frac / 10 % 10);
    *p++ = (char)('0' + frac % 10);
    return p;
}

static char *put_timestamp(char *p)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != t_ts_sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        if (strftime(t_ts_text, sizeof(t_ts_text), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
            t_ts_text[0] = '\0';
        t_ts_sec = ts.tv_sec;
    }
    p = gw_put(p, t_ts_text, strlen(t_ts_text));
    unsigned msec = (unsigned)(ts.tv_nsec / 1000000L);
    *p++ = '.';
    *p++ = (char)('0' + msec / 100);
    *p++ = (char)('0' + msec / 10 % 10);
    *p++ = (char)('0' + msec % 10);
    *p++ = 'Z';
    return p;
}

/* Renders e's line (with its newline) at p, which has room for
 * line_bound(e) bytes; returns the end. */
static char *render_access(char *p, const struct gw_access_entry *e)
{
    const char *client = e->client ? e->client : "";
    p = GW_PUT_LIT(p, "{\"ts\":\"");
    p = put_timestamp(p);
    p = GW_PUT_LIT(p, "\",\"client\":");
    p = put_json_string(p, (struct gw_slice){client, strlen(client)});
    p = GW_PUT_LIT(p, ",\"method\":");
    p = put_json_string(p, e->method);
    p = GW_PUT_LIT(p, ",\"path\":");
    p = put_json_string(p, e->path);
    p = GW_PUT_LIT(p, ",\"status\":");
    p = gw_put_i64(p, e->status);
    p = GW_PUT_LIT(p, ",\"bytes_sent\":");
    p = gw_put_u64(p, e->bytes_sent);
    p = GW_PUT_LIT(p, ",\"duration_ms\":");
    p = put_ms(p, e->duration_ms);
    p = GW_PUT_LIT(p, ",\"upstream_ms\":");
    if (e->upstream_ms < 0)
        p = GW_PUT_LIT(p, "null");
    else
        p = put_ms(p, e->upstream_ms);
    p = GW_PUT_LIT(p, ",\"limited\":");
    if (e->limited)
        p = GW_PUT_LIT(p, "true");
    else
        p = GW_PUT_LIT(p, "false");
    if (e->policies != NULL && e->policies[0] != '\0') {
        /* Names of [A-Za-z0-9_.-] (rules validation): no escaping. */
        p = GW_PUT_LIT(p, ",\"policies\":[\"");
        for (const char *q = e->policies; *q != '\0'; q++) {
            if (*q == ',')
                p = GW_PUT_LIT(p, "\",\"");
            else
                *p++ = *q;
        }
        p = GW_PUT_LIT(p, "\"]");
    }
    if (e->admin)
        p = GW_PUT_LIT(p, ",\"admin\":true");
    if (e->tunnel) {
        p = GW_PUT_LIT(p, ",\"tunnel_bytes_to_backend\":");
        p = gw_put_u64(p, e->tunnel_bytes_to_backend);
        p = GW_PUT_LIT(p, ",\"tunnel_bytes_to_client\":");
        p = gw_put_u64(p, e->tunnel_bytes_to_client);
        p = GW_PUT_LIT(p, ",\"tunnel_ms\":");
        p = put_ms(p, e->tunnel_ms);
    }
    p = GW_PUT_LIT(p, "}\n");
    return p;
}

static size_t line_bound(const struct gw_access_entry *e)
{
    size_t client = e->client ? strlen(e->client) : 0;
    size_t pol = (e->policies ? 16 + 3 * strlen(e->policies) : 0) + (e->admin ? 16 : 0);
    return ACCESS_FIXED_MAX + 6 * (client + e->method.len + e->path.len) + pol;
}

void gw_log_access(const struct gw_access_entry *e)
{
    size_t bound = line_bound(e);
    if (bound > ACCESS_BUF - t_access_len)
        gw_log_access_flush();
    if (bound > ACCESS_BUF) {
        /* A huge request-target: its own allocation, written at once. */
        char *line = malloc(bound);
        if (!line)
            return;
        write_out(line, (size_t)(render_access(line, e) - line));
        free(line);
        return;
    }
    char *end = render_access(t_access + t_access_len, e);
    t_access_len = (size_t)(end - t_access);
    if (t_access_len >= ACCESS_FLUSH_AT)
        gw_log_access_flush();
}
