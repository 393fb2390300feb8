/* Diagnostic log on stderr and JSON access log on stdout (see gw/log.h). */
#include "gw/log.h"

#include <jansson.h>
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

void gw_log_access(const struct gw_access_entry *e)
{
    char ts[40];
    format_time(ts, sizeof(ts));
    json_t *o = json_object();
    if (!o)
        return;
    json_object_set_new(o, "ts", json_string(ts));
    json_object_set_new(o, "client", json_string(e->client ? e->client : ""));
    json_object_set_new(o, "method", json_stringn_nocheck(e->method.ptr ? e->method.ptr : "",
                                                          e->method.len));
    /* The request-target is client bytes: json_stringn would reject invalid
     * UTF-8, so fall back to a marker rather than losing the whole line. */
    json_t *path = json_stringn(e->path.ptr ? e->path.ptr : "", e->path.len);
    json_object_set_new(o, "path", path ? path : json_string("<non-utf8>"));
    json_object_set_new(o, "status", json_integer(e->status));
    json_object_set_new(o, "bytes_sent", json_integer((json_int_t)e->bytes_sent));
    json_object_set_new(o, "duration_ms", json_real(e->duration_ms));
    json_object_set_new(o, "upstream_ms",
                        e->upstream_ms < 0 ? json_null() : json_real(e->upstream_ms));
    json_object_set_new(o, "limited", json_boolean(e->limited));
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    json_decref(o);
    if (!s)
        return;
    size_t n = strlen(s);
    char *line = realloc(s, n + 2);
    if (!line) {
        free(s);
        return;
    }
    line[n] = '\n';
    write_all(STDOUT_FILENO, line, n + 1);
    free(line);
}
