/*
 * Observability test support (gwt_obs.h): Prometheus text lookups, promtool,
 * a real Prometheus on loopback queried through its HTTP API, a counting
 * keep-alive admin client, and a small block-style YAML reader so the
 * deployment examples can be checked as data.
 */
#include "gwt_obs.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- files ------------------------------------------------------------ */

char *gwt_obs_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - 1 - n, f);
        n += got;
        if (n < cap - 1)
            break;
        cap *= 2;
        char *bigger = realloc(buf, cap);
        if (!bigger) {
            free(buf);
            buf = NULL;
        }
        buf = bigger;
    }
    bool err = ferror(f);
    fclose(f);
    if (!buf || err) {
        free(buf);
        errno = err ? EIO : ENOMEM;
        return NULL;
    }
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

int gwt_obs_write_file(const char *path, const char *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    while (len > 0) {
        ssize_t w = write(fd, data, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = w < 0 ? errno : EIO;
            close(fd);
            return -e;
        }
        data += w;
        len -= (size_t)w;
    }
    return close(fd) == 0 ? 0 : -errno;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    int rc = flag == FTW_DP ? rmdir(path) : unlink(path);
    return rc == 0 ? 0 : errno;
}

int gwt_obs_rm_rf(const char *dir)
{
    int rc = nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    if (rc == -1)
        return -errno;
    return -rc;
}

/* ---- Prometheus text ---------------------------------------------------- */

/* Length of the series part of a sample line: the name, and the label set
 * up to its closing brace (label values may contain '}' or spaces when
 * quoted). 0 when the line is malformed. */
static size_t series_len(const char *line, size_t n)
{
    size_t i = 0;
    while (i < n && line[i] != '{' && line[i] != ' ')
        i++;
    if (i < n && line[i] == '{') {
        bool quoted = false;
        for (i++; i < n; i++) {
            if (quoted && line[i] == '\\')
                i++;
            else if (line[i] == '"')
                quoted = !quoted;
            else if (!quoted && line[i] == '}')
                return i + 1;
        }
        return 0;
    }
    return i;
}

int gwt_prom_sample(const char *text, const char *series, double *value)
{
    size_t want = strlen(series);
    for (const char *line = text; line && *line;) {
        const char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) : strlen(line);
        if (n > 0 && line[0] != '#') {
            size_t s = series_len(line, n);
            if (s == want && memcmp(line, series, want) == 0 && s < n && line[s] == ' ') {
                char num[64];
                size_t vn = GW_MIN(n - s - 1, sizeof(num) - 1);
                memcpy(num, line + s + 1, vn);
                num[vn] = '\0';
                char *end = NULL;
                errno = 0;
                double v = strtod(num, &end);
                if (end == num || errno != 0 || (*end != '\0' && *end != ' '))
                    return -EPROTO;
                *value = v;
                return 0;
            }
        }
        line = nl ? nl + 1 : NULL;
    }
    return -ENOENT;
}

int gwt_prom_series(const char *text, char ***out)
{
    size_t cap = 64, count = 0;
    char **v = malloc(cap * sizeof(*v));
    if (!v)
        return -ENOMEM;
    for (const char *line = text; line && *line;) {
        const char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) : strlen(line);
        if (n > 0 && line[0] != '#') {
            size_t s = series_len(line, n);
            if (count == cap) {
                cap *= 2;
                char **bigger = realloc(v, cap * sizeof(*v));
                if (!bigger) {
                    gwt_strv_free(v, (int)count);
                    return -ENOMEM;
                }
                v = bigger;
            }
            v[count] = strndup(line, s);
            if (!v[count]) {
                gwt_strv_free(v, (int)count);
                return -ENOMEM;
            }
            count++;
        }
        line = nl ? nl + 1 : NULL;
    }
    *out = v;
    return (int)count;
}

/* A file under TMPDIR (or /tmp) from a template name; path gets cap bytes. */
static int temp_path(char *path, size_t cap, const char *name, bool dir)
{
    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL || *tmp == '\0')
        tmp = "/tmp";
    snprintf(path, cap, "%s/gwtest-%s-XXXXXX", tmp, name);
    if (dir)
        return mkdtemp(path) ? 0 : -errno;
    int fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0)
        return -errno;
    close(fd);
    return 0;
}

int gwt_promtool_check_metrics(const char *text, size_t len, char **output)
{
    if (output)
        *output = NULL;
    char path[256];
    int rc = temp_path(path, sizeof(path), "metrics", false);
    if (rc != 0)
        return rc;
    rc = gwt_obs_write_file(path, text, len);
    if (rc != 0) {
        unlink(path);
        return rc;
    }
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "exec promtool check metrics < '%s' 2>&1", path);
    const char *argv[] = {"sh", "-c", cmd, NULL};
    char *out = NULL;
    rc = gwt_run(argv, NULL, 20000, &out, NULL);
    unlink(path);
    if (output)
        *output = out;
    else
        free(out);
    return rc;
}

/* ---- a real Prometheus ---------------------------------------------------- */

int gwt_url_encode(const char *s, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        bool plain = isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
        if (n + (plain ? 1 : 3) >= cap)
            return -ENOSPC;
        if (plain) {
            out[n++] = (char)c;
        } else {
            out[n++] = '%';
            out[n++] = hex[c >> 4];
            out[n++] = hex[c & 15];
        }
    }
    if (n >= cap)
        return -ENOSPC;
    out[n] = '\0';
    return 0;
}

#define PROMETHEUS_BIN "/usr/bin/prometheus"

int gwt_prometheus_start(struct gwt_prometheus *p, const char *job, int target_port,
                         const char *metrics_path, int timeout_ms)
{
    memset(p, 0, sizeof(*p));
    if (access(PROMETHEUS_BIN, X_OK) != 0)
        return -ENOENT;
    int rc = temp_path(p->dir, sizeof(p->dir), "prometheus", true);
    if (rc != 0) {
        p->dir[0] = '\0';
        return rc;
    }
    char cfg_path[300], data_path[300];
    snprintf(cfg_path, sizeof(cfg_path), "%s/prometheus.yml", p->dir);
    snprintf(data_path, sizeof(data_path), "%s/data", p->dir);
    char cfg[1024];
    /* scrape_timeout must not exceed the interval (default 10 s). */
    int n = snprintf(cfg, sizeof(cfg),
                     "global:\n"
                     "  scrape_interval: 1s\n"
                     "  scrape_timeout: 1s\n"
                     "scrape_configs:\n"
                     "  - job_name: '%s'\n"
                     "    metrics_path: '%s'\n"
                     "    static_configs:\n"
                     "      - targets: ['127.0.0.1:%d']\n",
                     job, metrics_path, target_port);
    rc = gwt_obs_write_file(cfg_path, cfg, (size_t)n);
    /* The API port is picked free and may be taken meanwhile: a few tries. */
    for (int attempt = 0; rc == 0 && attempt < 3; attempt++) {
        int port = gwt_free_port();
        if (port < 0) {
            rc = port;
            break;
        }
        char a_cfg[320], a_data[320], a_listen[64];
        snprintf(a_cfg, sizeof(a_cfg), "--config.file=%s", cfg_path);
        snprintf(a_data, sizeof(a_data), "--storage.tsdb.path=%s", data_path);
        snprintf(a_listen, sizeof(a_listen), "--web.listen-address=127.0.0.1:%d", port);
        const char *argv[] = {PROMETHEUS_BIN, a_cfg, a_data, a_listen, "--log.level=info", NULL};
        rc = gwt_spawn(&p->proc, argv, NULL);
        if (rc != 0)
            break;
        rc = gwt_wait_log(&p->proc, "Server is ready to receive web requests", timeout_ms, NULL, 0);
        if (rc == 0) {
            p->port = port;
            return 0;
        }
        gwt_log_dump(&p->proc, 2000);
        gwt_proc_cleanup(&p->proc);
        if (rc != -ESRCH) /* did not die of a taken port: do not retry */
            break;
        rc = 0;
    }
    if (rc == 0)
        rc = -EADDRINUSE;
    if (gwt_obs_rm_rf(p->dir) != 0)
        fprintf(stderr, "could not remove %s\n", p->dir);
    p->dir[0] = '\0';
    return rc;
}

static void set_err(char *err, size_t cap, const char *fmt, ...) GW_PRINTF(3, 4);

static void set_err(char *err, size_t cap, const char *fmt, ...)
{
    if (!err || cap == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

json_t *gwt_prometheus_query(struct gwt_prometheus *p, const char *promql, char *err, size_t cap)
{
    char enc[4096], target[4200];
    if (gwt_url_encode(promql, enc, sizeof(enc)) != 0) {
        set_err(err, cap, "query too long");
        return NULL;
    }
    snprintf(target, sizeof(target), "/api/v1/query?query=%s", enc);
    struct gwt_response r;
    int rc = gwt_get(p->port, target, &r);
    if (rc != 0) {
        set_err(err, cap, "GET %s: %s", target, strerror(-rc));
        gwt_response_free(&r);
        return NULL;
    }
    json_t *j = gwt_json(&r);
    json_t *status = json_object_get(j, "status");
    json_t *result = json_object_get(json_object_get(j, "data"), "result");
    if (r.status != 200 || !json_is_string(status) ||
        strcmp(json_string_value(status), "success") != 0 || !json_is_array(result)) {
        set_err(err, cap, "%d %.300s", r.status, r.body ? r.body : "");
        json_decref(j);
        gwt_response_free(&r);
        return NULL;
    }
    json_incref(result);
    json_decref(j);
    gwt_response_free(&r);
    return result;
}

int gwt_prometheus_stop(struct gwt_prometheus *p)
{
    int rc = -ECHILD;
    if (p->proc.pid) {
        rc = gwt_stop(&p->proc, SIGTERM, 10000);
        if (rc != 0)
            gwt_log_dump(&p->proc, 2000);
        gwt_proc_cleanup(&p->proc);
    }
    if (p->dir[0]) {
        if (gwt_obs_rm_rf(p->dir) != 0)
            fprintf(stderr, "could not remove %s\n", p->dir);
        p->dir[0] = '\0';
    }
    return rc;
}

/* ---- admin client ---------------------------------------------------------- */

void gwt_admin_init(struct gwt_admin *a, int port)
{
    a->port = port;
    a->fd = -1;
    a->n = 0;
}

int gwt_admin_get(struct gwt_admin *a, const char *target, struct gwt_response *r)
{
    memset(r, 0, sizeof(*r));
    if (a->fd < 0) {
        a->fd = gwt_connect(a->port);
        if (a->fd < 0) {
            int e = a->fd;
            a->fd = -1;
            return e;
        }
    }
    char req[1024];
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", target);
    int rc = gwt_send_str(a->fd, req);
    if (rc == 0) {
        a->n++;
        rc = gwt_read_response(a->fd, r, false);
    }
    if (rc != 0 || r->conn_closed || !r->keep_alive)
        gwt_admin_close(a);
    return rc;
}

json_t *gwt_admin_json(struct gwt_admin *a, const char *target)
{
    struct gwt_response r;
    json_t *j = NULL;
    if (gwt_admin_get(a, target, &r) == 0 && r.status == 200)
        j = gwt_json(&r);
    gwt_response_free(&r);
    return j;
}

void gwt_admin_close(struct gwt_admin *a)
{
    if (a->fd >= 0)
        close(a->fd);
    a->fd = -1;
}

/* ---- YAML subset ------------------------------------------------------------ */

struct yline {
    int indent;  /* columns of leading spaces */
    char *text;  /* content, comment and trailing blanks removed */
    int lineno;  /* 1-based, for messages */
    bool docsep; /* a "---" line */
};

struct yparser {
    struct yline *lines;
    size_t n, i;
    char *err;
    size_t cap;
    bool failed;
};

static void yfail(struct yparser *y, int lineno, const char *why)
{
    if (!y->failed)
        set_err(y->err, y->cap, "line %d: %s", lineno, why);
    y->failed = true;
}

/* Cuts a comment: '#' at the start or after a blank, outside quotes. */
static void strip_comment(char *s)
{
    char q = 0;
    for (char *c = s; *c; c++) {
        if (q) {
            if (*c == q && !(q == '"' && c[-1] == '\\'))
                q = 0;
        } else if (*c == '\'' || *c == '"') {
            q = *c;
        } else if (*c == '#' && (c == s || c[-1] == ' ')) {
            *c = '\0';
            break;
        }
    }
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\r'))
        s[--n] = '\0';
}

/* Offset of the ':' that ends a mapping key (followed by a blank or the
 * end), outside quotes; -1 when the text is not a "key: ..." entry. */
static long key_colon(const char *s)
{
    char q = 0;
    for (const char *c = s; *c; c++) {
        if (q) {
            if (*c == q && !(q == '"' && c[-1] == '\\'))
                q = 0;
        } else if ((*c == '\'' || *c == '"') && c == s) {
            q = *c;
        } else if (*c == ':' && (c[1] == '\0' || c[1] == ' ')) {
            return c - s;
        }
    }
    return -1;
}

/* A scalar's JSON value; quoted scalars are strings, plain ones typed. */
static json_t *yscalar(struct yparser *y, int lineno, const char *s)
{
    size_t n = strlen(s);
    if (n >= 2 && s[0] == '\'' && s[n - 1] == '\'') {
        char *out = malloc(n);
        if (!out)
            return NULL;
        size_t k = 0;
        for (size_t i = 1; i + 1 < n; i++) {
            out[k++] = s[i];
            if (s[i] == '\'' && s[i + 1] == '\'')
                i++;
        }
        out[k] = '\0';
        json_t *j = json_string(out);
        free(out);
        return j;
    }
    if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
        char *out = malloc(n);
        if (!out)
            return NULL;
        size_t k = 0;
        for (size_t i = 1; i + 1 < n; i++) {
            if (s[i] == '\\' && i + 2 < n) {
                i++;
                out[k++] = s[i] == 'n' ? '\n' : s[i] == 't' ? '\t' : s[i];
            } else {
                out[k++] = s[i];
            }
        }
        out[k] = '\0';
        json_t *j = json_string(out);
        free(out);
        return j;
    }
    if (strcmp(s, "[]") == 0)
        return json_array();
    if (strcmp(s, "{}") == 0)
        return json_object();
    if (strchr("[{&*!|>%@`'\"", s[0])) {
        yfail(y, lineno, "unsupported YAML (flow collection, anchor, tag, block scalar or quote)");
        return NULL;
    }
    if (strcmp(s, "true") == 0)
        return json_true();
    if (strcmp(s, "false") == 0)
        return json_false();
    if (strcmp(s, "null") == 0 || strcmp(s, "~") == 0)
        return json_null();
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*s && end && *end == '\0' && errno == 0 && (isdigit((unsigned char)s[0]) || s[0] == '-'))
        return json_integer(v);
    return json_string(s);
}

static json_t *ynode(struct yparser *y, int indent);

static bool is_item(const char *t)
{
    return t[0] == '-' && (t[1] == '\0' || t[1] == ' ');
}

static bool at_level(struct yparser *y, int indent)
{
    return y->i < y->n && !y->lines[y->i].docsep && y->lines[y->i].indent == indent;
}

/* The value after "key:" or "-" with nothing on the line: a nested block,
 * or null when none follows. */
static json_t *ynested(struct yparser *y, int parent_indent, bool allow_same_indent_seq)
{
    if (y->i < y->n && !y->lines[y->i].docsep) {
        struct yline *l = &y->lines[y->i];
        if (l->indent > parent_indent)
            return ynode(y, l->indent);
        if (allow_same_indent_seq && l->indent == parent_indent && is_item(l->text))
            return ynode(y, l->indent);
    }
    return json_null();
}

static json_t *yseq(struct yparser *y, int indent)
{
    json_t *arr = json_array();
    while (!y->failed && at_level(y, indent) && is_item(y->lines[y->i].text)) {
        struct yline *l = &y->lines[y->i];
        char *rest = l->text + 1;
        while (*rest == ' ')
            rest++;
        json_t *v;
        if (*rest == '\0') {
            y->i++;
            v = ynested(y, indent, false);
        } else if (key_colon(rest) >= 0 || is_item(rest)) {
            /* "- key: v": a mapping (or nested sequence) whose first entry
             * sits on this line, the others aligned under it. */
            l->indent += (int)(rest - l->text);
            l->text = rest;
            v = ynode(y, l->indent);
        } else {
            v = yscalar(y, l->lineno, rest);
            y->i++;
        }
        if (!v || json_array_append_new(arr, v) != 0)
            yfail(y, l->lineno, "bad sequence item");
    }
    return arr;
}

static json_t *ymap(struct yparser *y, int indent)
{
    json_t *obj = json_object();
    while (!y->failed && at_level(y, indent)) {
        struct yline *l = &y->lines[y->i];
        if (is_item(l->text)) {
            yfail(y, l->lineno, "sequence item where a mapping key was expected");
            break;
        }
        long c = key_colon(l->text);
        if (c <= 0) {
            yfail(y, l->lineno, "expected \"key: value\"");
            break;
        }
        l->text[c] = '\0';
        json_t *key = yscalar(y, l->lineno, l->text);
        char *val = l->text + c + 1;
        while (*val == ' ')
            val++;
        int lineno = l->lineno;
        y->i++;
        json_t *v = *val ? yscalar(y, lineno, val) : ynested(y, indent, true);
        char kbuf[256];
        const char *k = NULL;
        if (json_is_string(key)) {
            k = json_string_value(key);
        } else if (json_is_integer(key)) {
            snprintf(kbuf, sizeof(kbuf), "%lld", (long long)json_integer_value(key));
            k = kbuf;
        }
        if (!k || !v) {
            yfail(y, lineno, "bad key or value");
        } else if (json_object_get(obj, k)) {
            yfail(y, lineno, "duplicate key");
        } else if (json_object_set(obj, k, v) != 0) {
            yfail(y, lineno, "out of memory");
        }
        json_decref(key);
        json_decref(v);
    }
    return obj;
}

static json_t *ynode(struct yparser *y, int indent)
{
    json_t *v = is_item(y->lines[y->i].text) ? yseq(y, indent) : ymap(y, indent);
    /* Whatever follows must close this block: less indented, or a separator. */
    if (!y->failed && y->i < y->n && !y->lines[y->i].docsep && y->lines[y->i].indent > indent)
        yfail(y, y->lines[y->i].lineno, "unexpected indentation");
    return v;
}

json_t *gwt_yaml_load(const char *text, char *err, size_t cap)
{
    struct yparser y = {.err = err, .cap = cap};
    char *copy = strdup(text);
    size_t nlines = 1;
    for (const char *c = text; *c; c++)
        nlines += *c == '\n';
    y.lines = calloc(nlines, sizeof(*y.lines));
    json_t *docs = json_array();
    if (!copy || !y.lines || !docs) {
        set_err(err, cap, "out of memory");
        goto fail;
    }
    int lineno = 0;
    /* Empty and comment-only lines are dropped but counted, so messages
     * name the right line. */
    for (char *cur = copy; cur;) {
        char *nl = strchr(cur, '\n');
        if (nl)
            *nl = '\0';
        lineno++;
        int ind = 0;
        while (cur[ind] == ' ')
            ind++;
        if (cur[ind] == '\t') {
            yfail(&y, lineno, "tab in indentation");
            goto fail;
        }
        char *content = cur + ind;
        strip_comment(content);
        if (*content) {
            struct yline *l = &y.lines[y.n++];
            l->indent = ind;
            l->text = content;
            l->lineno = lineno;
            l->docsep = ind == 0 && strcmp(content, "---") == 0;
        }
        cur = nl ? nl + 1 : NULL;
    }
    while (y.i < y.n && !y.failed) {
        if (y.lines[y.i].docsep) {
            y.i++;
            continue;
        }
        if (y.lines[y.i].indent != 0) {
            yfail(&y, y.lines[y.i].lineno, "document does not start at column 0");
            break;
        }
        json_t *doc = ynode(&y, 0);
        if (json_array_append_new(docs, doc) != 0)
            yfail(&y, y.lines[y.i < y.n ? y.i : y.n - 1].lineno, "out of memory");
        /* A document ends at "---" or the end, never at a sibling node of
         * another kind ("- a" then "b: 1"). */
        if (!y.failed && y.i < y.n && !y.lines[y.i].docsep)
            yfail(&y, y.lines[y.i].lineno, "mapping and sequence mixed at one level");
    }
    if (y.failed)
        goto fail;
    free(y.lines);
    free(copy);
    return docs;
fail:
    json_decref(docs);
    free(y.lines);
    free(copy);
    return NULL;
}
