/*
 * Container and deployment artefacts, checked without Docker or a cluster:
 * the Dockerfile against `make deps`, the build's headers and `ldd` + `dpkg -S`
 * of the built gateway (and shown to fail on broken variants); deploy/'s
 * Kubernetes manifest, prometheus.yml (promtool) and Grafana dashboard.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <ctype.h>
#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "gw/stats.h"
#include "gwt_obs.h"
#include "rules_int.h"
#include "gwtest.h"

#define DOCKERFILE   GW_SOURCE_DIR "/Dockerfile"
#define MAKEFILE     GW_SOURCE_DIR "/Makefile"
#define CMAKELISTS   GW_SOURCE_DIR "/CMakeLists.txt"
#define MAIN_C       GW_SOURCE_DIR "/src/main.c"
#define LLHTTP_CMAKE GW_SOURCE_DIR "/third_party/llhttp/CMakeLists.txt"
#define K8S_MANIFEST GW_SOURCE_DIR "/deploy/kubernetes/gateway-sidecar.yaml"
#define K8S_RULES    GW_SOURCE_DIR "/deploy/kubernetes/gateway-rules.yaml"
#define PROM_DIR     GW_SOURCE_DIR "/deploy/prometheus"
#define DASHBOARD    GW_SOURCE_DIR "/deploy/grafana/gateway-dashboard.json"
#define BASE_IMAGE   "debian:bookworm-slim"

/* Packages every build needs, whatever the Makefile says (issue 5).
 * libcmocka-dev is needed only where CMake configures the tests: the
 * CMakeLists.txt facts below decide it from the Dockerfile's cmake line. */
static const char *const core_build[] = {"build-essential", "cmake",       "pkg-config",
                                         "libhiredis-dev",  "node-llhttp", "libjansson-dev",
                                         "libssl-dev",      NULL};

/* OCI labels the runtime stage must carry. */
static const char *const oci_labels[] = {"org.opencontainers.image.source",
                                         "org.opencontainers.image.version",
                                         "org.opencontainers.image.licenses", NULL};

/* Packages of `make deps` that only the tests, fuzzing or `make run` use:
 * servers and clients the integration tests start (redis-server,
 * redis-sentinel, redis-tools, curl, prometheus with promtool), openssl
 * (the TLS tests' certificates), faketime, and clang with its runtime for
 * the libFuzzer targets. Any other DEPS package is a build dependency and
 * must be in the build stage. */
static const char *const test_only[] = {
    "redis-server", "redis-sentinel", "redis-tools",        "curl", "prometheus",
    "openssl",      "faketime",       "libclang-rt-14-dev", "clang", NULL};

/* In debian:bookworm-slim already: the C library and dynamic loader
 * (libc.so.6, libm.so.6, ld-linux). */
static const char *const base_image_pkgs[] = {"libc6", NULL};

/* Headers the C toolchain brings with build-essential (libc6-dev,
 * linux-libc-dev): allowed without being named in the build stage. */
static const char *const toolchain_header_pkgs[] = {"libc6-dev", "linux-libc-dev", NULL};

/* Sanitizer runtimes and what they pull in: present in `ldd` of an
 * ASan/UBSan/TSan test build only; the image builds Release without them. */
static const char *const sanitizer_pkgs[] = {"libasan8",  "libubsan1",  "libtsan2",
                                             "libgcc-s1", "libstdc++6", NULL};

/* ---- small string sets --------------------------------------------------- */

struct strset {
    char *v[256];
    int n;
};

static bool set_has(const struct strset *s, const char *x)
{
    for (int i = 0; i < s->n; i++) {
        if (strcmp(s->v[i], x) == 0)
            return true;
    }
    return false;
}

static void set_add(struct strset *s, const char *x)
{
    if (set_has(s, x) || s->n == 256)
        return;
    s->v[s->n] = strdup(x);
    assert_non_null(s->v[s->n]);
    s->n++;
}

static void set_free(struct strset *s)
{
    for (int i = 0; i < s->n; i++)
        free(s->v[i]);
    s->n = 0;
}

static bool list_has(const char *const *list, const char *x)
{
    for (; *list; list++) {
        if (strcmp(*list, x) == 0)
            return true;
    }
    return false;
}

/* ---- error collection ------------------------------------------------------- */

struct errs {
    char text[8192];
    int n;
};

static void err_add(struct errs *e, const char *fmt, ...) GW_PRINTF(2, 3);

static void err_add(struct errs *e, const char *fmt, ...)
{
    size_t len = strlen(e->text);
    if (len + 2 >= sizeof(e->text))
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->text + len, sizeof(e->text) - len - 1, fmt, ap);
    va_end(ap);
    len = strlen(e->text);
    e->text[len] = '\n';
    e->text[len + 1] = '\0';
    e->n++;
}

/* ---- running tools ---------------------------------------------------------- */

/* stdout of argv (malloc'd); fails the test when it cannot run. */
static char *run_out(const char *const argv[], int *code)
{
    char *out = NULL, *err = NULL;
    int rc = gwt_run(argv, NULL, 30000, &out, &err);
    if (rc < 0) /* not started, killed by a signal, or timed out */
        fail_msg("could not run %s: %d %s", argv[0], rc, err ? err : "");
    if (code)
        *code = rc;
    free(err);
    if (!out)
        out = strdup("");
    assert_non_null(out);
    return out;
}

/* Owning package of each path (one dpkg -S for all); owner[i] is a
 * malloc'd package name without ":arch", or NULL when dpkg knows none. */
static void dpkg_owners(char *const paths[], int n, char *owner[])
{
    const char *argv[260] = {"dpkg", "-S"};
    assert_true(n <= 256);
    for (int i = 0; i < n; i++) {
        argv[2 + i] = paths[i];
        owner[i] = NULL;
    }
    argv[2 + n] = NULL;
    if (n == 0)
        return;
    char *out = run_out(argv, NULL);
    for (char *line = out; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        char *sep = strstr(line, ": /");
        if (sep && strncmp(line, "diversion", 9) != 0) {
            *sep = '\0';
            const char *path = sep + 2;
            char *pkg = line;
            pkg[strcspn(pkg, ",")] = '\0'; /* first of several owners */
            pkg[strcspn(pkg, ":")] = '\0'; /* no :arch */
            for (int i = 0; i < n; i++) {
                if (!owner[i] && strcmp(paths[i], path) == 0)
                    owner[i] = strdup(pkg);
            }
        }
        line = nl ? nl + 1 : NULL;
    }
    free(out);
}

/* ---- Makefile DEPS ----------------------------------------------------------- */

/* The words of a make variable assignment "NAME = ..." with continuation
 * lines. */
static void make_var(const char *text, const char *name, struct strset *out)
{
    size_t nl = strlen(name);
    for (const char *line = text; line && *line;) {
        const char *eol = strchr(line, '\n');
        if (strncmp(line, name, nl) == 0) {
            const char *p = line + nl;
            while (*p == ' ' || *p == '\t')
                p++;
            if (*p == '?' || *p == ':' || *p == '+')
                p++;
            if (*p == '=') {
                p++;
                for (;;) {
                    const char *end = strchr(p, '\n');
                    size_t len = end ? (size_t)(end - p) : strlen(p);
                    char buf[1024];
                    snprintf(buf, sizeof(buf), "%.*s", (int)len, p);
                    bool cont = len > 0 && buf[len - 1] == '\\';
                    if (cont)
                        buf[len - 1] = ' ';
                    for (char *save = NULL, *w = strtok_r(buf, " \t", &save); w;
                         w = strtok_r(NULL, " \t", &save))
                        set_add(out, w);
                    if (!cont || !end)
                        return;
                    p = end + 1;
                }
            }
        }
        line = eol ? eol + 1 : NULL;
    }
}

/* ---- Dockerfile parsing --------------------------------------------------------- */

struct dinstr {
    char kw[16]; /* upper-cased instruction */
    char *args;  /* the rest, continuation lines joined */
    int stage;   /* 0-based FROM index */
    int line;    /* first line */
};

struct dockerfile {
    struct dinstr v[128];
    int n;
    int nstages;
};

static void df_free(struct dockerfile *d)
{
    for (int i = 0; i < d->n; i++)
        free(d->v[i].args);
    d->n = 0;
}

static void df_parse(const char *text, struct dockerfile *d)
{
    memset(d, 0, sizeof(*d));
    d->nstages = 0;
    char *acc = NULL;
    size_t acc_len = 0;
    int first_line = 0, lineno = 0;
    for (const char *line = text; line && *line;) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        lineno++;
        const char *p = line;
        while (p < line + len && isspace((unsigned char)*p))
            p++;
        bool blank = p == line + len;
        bool comment = !blank && *p == '#';
        if (!blank && !comment) {
            size_t l = (size_t)(line + len - p);
            while (l > 0 && isspace((unsigned char)p[l - 1]))
                l--;
            bool cont = l > 0 && p[l - 1] == '\\';
            if (cont)
                l--;
            if (!acc)
                first_line = lineno;
            acc = realloc(acc, acc_len + l + 2);
            assert_non_null(acc);
            memcpy(acc + acc_len, p, l);
            acc_len += l;
            acc[acc_len++] = ' ';
            acc[acc_len] = '\0';
            if (!cont) {
                assert_true(d->n < 128);
                struct dinstr *in = &d->v[d->n++];
                size_t k = 0;
                while (acc[k] && !isspace((unsigned char)acc[k]) && k < sizeof(in->kw) - 1) {
                    in->kw[k] = (char)toupper((unsigned char)acc[k]);
                    k++;
                }
                in->kw[k] = '\0';
                char *args = acc + k;
                while (isspace((unsigned char)*args))
                    args++;
                size_t al = strlen(args);
                while (al > 0 && isspace((unsigned char)args[al - 1]))
                    args[--al] = '\0';
                in->args = strdup(args);
                assert_non_null(in->args);
                in->line = first_line;
                if (strcmp(in->kw, "FROM") == 0)
                    d->nstages++;
                in->stage = d->nstages - 1;
                free(acc);
                acc = NULL;
                acc_len = 0;
            }
        }
        line = eol ? eol + 1 : NULL;
    }
    free(acc);
}

/* Packages of every `apt-get install` in stage s. */
static void df_apt_packages(const struct dockerfile *d, int s, struct strset *out)
{
    for (int i = 0; i < d->n; i++) {
        if (d->v[i].stage != s || strcmp(d->v[i].kw, "RUN") != 0)
            continue;
        char *copy = strdup(d->v[i].args);
        assert_non_null(copy);
        bool in_install = false;
        const char *prev = "";
        for (char *save = NULL, *w = strtok_r(copy, " \t", &save); w;
             w = strtok_r(NULL, " \t", &save)) {
            if (strcmp(w, "&&") == 0 || strcmp(w, "||") == 0 || strcmp(w, ";") == 0 ||
                strcmp(w, "|") == 0) {
                in_install = false;
            } else if (strcmp(w, "install") == 0 &&
                       (strcmp(prev, "apt-get") == 0 || strcmp(prev, "apt") == 0)) {
                in_install = true;
            } else if (in_install && w[0] != '-') {
                size_t l = strlen(w);
                bool ends = l > 0 && w[l - 1] == ';';
                if (ends)
                    w[l - 1] = '\0';
                if (*w)
                    set_add(out, w);
                if (ends)
                    in_install = false;
            }
            prev = w;
        }
        free(copy);
    }
}

/* First instruction kw in stage s, or NULL. */
static const struct dinstr *df_find(const struct dockerfile *d, int s, const char *kw)
{
    for (int i = 0; i < d->n; i++) {
        if (d->v[i].stage == s && strcmp(d->v[i].kw, kw) == 0)
            return &d->v[i];
    }
    return NULL;
}

/* Whether some RUN of stage s contains needle. */
static bool df_run_has(const struct dockerfile *d, int s, const char *needle)
{
    for (int i = 0; i < d->n; i++) {
        if (d->v[i].stage == s && strcmp(d->v[i].kw, "RUN") == 0 && strstr(d->v[i].args, needle))
            return true;
    }
    return false;
}

/* ---- what the build really needs ------------------------------------------------ */

/* Something the build needs (a package, a top-level source path) and the
 * CMake options guarding it: "" always, else space-separated names of the
 * options of every enclosing if(GW_...) block, all of which must be ON. */
struct need {
    char what[128];
    char opts[128];
};

struct needs {
    struct need v[256];
    int n;
};

static void need_add(struct needs *n, const char *what, const char *opts)
{
    for (int i = 0; i < n->n; i++) {
        if (strcmp(n->v[i].what, what) == 0 && strcmp(n->v[i].opts, opts) == 0)
            return;
    }
    assert_true(n->n < 256);
    snprintf(n->v[n->n].what, sizeof(n->v[0].what), "%s", what);
    snprintf(n->v[n->n].opts, sizeof(n->v[0].opts), "%s", opts);
    n->n++;
}

struct facts {
    struct strset deps;       /* Makefile DEPS */
    struct needs build_needs; /* packages owning headers / .pc / llhttp sources */
    char build_why[4096];     /* "pkg (path)" lines, for messages */
    struct strset lib_pkgs;   /* packages owning ldd's libraries of the gateway */
    char lib_why[2048];
    struct needs cmake_dirs;  /* top-level source paths CMake reads */
    struct strset options;    /* CMakeLists.txt option() defaults, "GW_X=ON" */
    long healthcheck_wait_ms; /* the checker's connect + response waits */
    char version[32];         /* project(... VERSION x.y.z) */
};

static struct facts facts;

/* Whether CMake option opt is ON for a configure with the -D flags of
 * cmake_line (else its option() default; an unknown option counts as ON). */
static bool option_on(const char *opt, const char *cmake_line)
{
    char flag[96];
    snprintf(flag, sizeof(flag), "-D%s", opt);
    size_t fl = strlen(flag);
    const char *val = NULL;
    for (const char *p = strstr(cmake_line, flag); p; p = strstr(p + 1, flag)) {
        const char *q = p + fl;
        if (strncmp(q, ":BOOL", 5) == 0)
            q += 5;
        if (*q == '=')
            val = q + 1; /* the last -D wins, as in CMake */
    }
    char def[96];
    if (!val) {
        for (int i = 0; i < facts.options.n && !val; i++) {
            size_t l = strlen(opt);
            if (strncmp(facts.options.v[i], opt, l) == 0 && facts.options.v[i][l] == '=')
                val = facts.options.v[i] + l + 1;
        }
        if (!val)
            return true;
    }
    snprintf(def, sizeof(def), "%.*s", (int)strcspn(val, " \t\"'"), val);
    static const char *const off[] = {"OFF", "FALSE", "0", "NO", "N", "IGNORE", ""};
    for (size_t i = 0; i < sizeof(off) / sizeof(off[0]); i++) {
        if (strcasecmp(def, off[i]) == 0)
            return false;
    }
    return true;
}

/* Whether a need applies to a build configured with cmake_line. */
static bool need_active(const struct need *n, const char *cmake_line)
{
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", n->opts);
    for (char *save = NULL, *o = strtok_r(buf, " ", &save); o; o = strtok_r(NULL, " ", &save)) {
        if (!option_on(o, cmake_line))
            return false;
    }
    return true;
}

/* 1: what is needed by the build of cmake_line; 0: only under options it
 * turns off (the first such need in *off); -1: not a need at all. */
static int needs_state(const struct needs *n, const char *what, const char *cmake_line,
                       const struct need **off)
{
    int state = -1;
    for (int i = 0; i < n->n; i++) {
        if (strcmp(n->v[i].what, what) != 0)
            continue;
        if (need_active(&n->v[i], cmake_line))
            return 1;
        if (state < 0 && off)
            *off = &n->v[i];
        state = 0;
    }
    return state;
}

/* The option names of the if(GW_...) blocks enclosing each line of a CMake
 * file: guards[line] (0-based), space-separated; else()/elseif() blocks
 * count as unguarded (conservative: needed). Returns the line count. */
static int cmake_guards(const char *text, char guards[][128], int max_lines)
{
    char stack[32][64];
    int depth = 0, line = 0;
    for (const char *p = text; p && *p && line < max_lines; line++) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        char buf[512];
        snprintf(buf, sizeof(buf), "%.*s", (int)len, p);
        buf[strcspn(buf, "#")] = '\0';
        char *t = buf;
        while (isspace((unsigned char)*t))
            t++;
        guards[line][0] = '\0';
        for (int i = 0; i < depth; i++) {
            if (stack[i][0]) {
                size_t l = strlen(guards[line]);
                snprintf(guards[line] + l, 128 - l, "%s%s", l ? " " : "", stack[i]);
            }
        }
        if (strncmp(t, "if(", 3) == 0 && depth < 32) {
            char cond[64] = "";
            sscanf(t + 3, "%63[A-Za-z0-9_]", cond);
            bool opt = strncmp(cond, "GW_", 3) == 0 && t[3 + strlen(cond)] == ')';
            snprintf(stack[depth++], sizeof(stack[0]), "%s", opt ? cond : "");
        } else if ((strncmp(t, "else(", 5) == 0 || strncmp(t, "elseif(", 7) == 0) && depth > 0) {
            stack[depth - 1][0] = '\0';
        } else if (strncmp(t, "endif(", 6) == 0 && depth > 0) {
            depth--;
        }
        p = eol ? eol + 1 : NULL;
    }
    return line;
}

/* The guards of the line holding text + off. */
static const char *guard_at(const char *text, const char *at, char guards[][128], int lines)
{
    int line = 0;
    for (const char *p = text; p < at; p++)
        line += *p == '\n';
    return line < lines ? guards[line] : "";
}

/* Reads a `set(VAR "value" ...)` from a CMake file. */
static bool cmake_set(const char *text, const char *var, char *out, size_t cap)
{
    char pat[128];
    snprintf(pat, sizeof(pat), "set(%s \"", var);
    const char *p = strstr(text, pat);
    if (!p)
        return false;
    p += strlen(pat);
    const char *q = strchr(p, '"');
    if (!q)
        return false;
    snprintf(out, cap, "%.*s", (int)(q - p), p);
    return true;
}

/* Every `#include <x>` of the C files in dir (one level). */
static void scan_includes(const char *dir, struct strset *out)
{
    DIR *d = opendir(dir);
    if (!d)
        fail_msg("cannot open %s", dir);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l < 3 || (strcmp(e->d_name + l - 2, ".c") != 0 && strcmp(e->d_name + l - 2, ".h") != 0))
            continue;
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        char *text = gwt_obs_read_file(path, NULL);
        assert_non_null(text);
        for (char *p = strstr(text, "#include <"); p; p = strstr(p + 1, "#include <")) {
            char *s = p + 10, *q = strchr(s, '>');
            if (q && q - s < 200) {
                char name[256];
                snprintf(name, sizeof(name), "%.*s", (int)(q - s), s);
                set_add(out, name);
            }
        }
        free(text);
    }
    closedir(d);
}

/* The "pkg (path)" entries of why that name pkg, joined (static buffer). */
static const char *why_for(const char *why, const char *pkg)
{
    static char out[1024];
    out[0] = '\0';
    size_t pl = strlen(pkg);
    for (const char *p = why; (p = strstr(p, pkg)) != NULL; p += pl) {
        bool starts = p == why || (p >= why + 2 && p[-2] == ';' && p[-1] == ' ');
        if (!starts || strncmp(p + pl, " (", 2) != 0)
            continue;
        const char *end = strchr(p, ')');
        size_t l = strlen(out);
        if (end && l + (size_t)(end - p) + 4 < sizeof(out))
            snprintf(out + l, sizeof(out) - l, "%s%.*s", l ? ", " : "", (int)(end - p - pl - 2),
                     p + pl + 2);
    }
    return out;
}

static void why_add(char *buf, size_t cap, const char *pkg, const char *path)
{
    size_t l = strlen(buf);
    if (l + 4 < cap)
        snprintf(buf + l, cap - l, "%s (%s); ", pkg, path);
}

/* Build needs: the owner of every system header the gateway's sources
 * include (src/, include/gw/: what the image's `--target gateway` compiles),
 * of every pkg-config module CMake's configure requires, and of the llhttp
 * sources. */
static void find_build_needs(void)
{
    struct strset headers = {0};
    static const char *const dirs[] = {"/src", "/include/gw"};
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        char d[512];
        snprintf(d, sizeof(d), "%s%s", GW_SOURCE_DIR, dirs[i]);
        scan_includes(d, &headers);
    }
    /* Include directories: the system's, the multiarch one, llhttp's. */
    const char *ma_argv[] = {"gcc", "-print-multiarch", NULL};
    char *ma = run_out(ma_argv, NULL);
    ma[strcspn(ma, "\n")] = '\0';
    char *llcm = gwt_obs_read_file(LLHTTP_CMAKE, NULL);
    assert_non_null(llcm);
    char ll_inc[256], ll_src[256], multi[300];
    assert_true(cmake_set(llcm, "LLHTTP_INCLUDE_DIR", ll_inc, sizeof(ll_inc)));
    assert_true(cmake_set(llcm, "LLHTTP_SRC_DIR", ll_src, sizeof(ll_src)));
    free(llcm);
    snprintf(multi, sizeof(multi), "/usr/include/%s", ma);
    free(ma);
    const char *incdirs[] = {"/usr/include", multi, ll_inc};

    char *paths[256];
    const char *path_opts[256]; /* guards of each path's need */
    int n = 0;
    for (int i = 0; i < 256; i++)
        path_opts[i] = "";
    for (int i = 0; i < headers.n && n < 250; i++) {
        for (size_t k = 0; k < 3; k++) {
            char p[600];
            snprintf(p, sizeof(p), "%s/%s", incdirs[k], headers.v[i]);
            if (access(p, R_OK) == 0) {
                paths[n++] = strdup(p);
                break;
            }
        }
        /* Not found there: a compiler-internal header (stdatomic.h...),
         * which comes with gcc itself. */
    }
    paths[n++] = strdup(ll_src);
    /* pkg-config modules CMake requires: pkg_check_modules(X REQUIRED
     * IMPORTED_TARGET <module>). */
    char *cm = gwt_obs_read_file(CMAKELISTS, NULL);
    assert_non_null(cm);
    static char guards[2048][128];
    int lines = cmake_guards(cm, guards, 2048);
    for (char *p = strstr(cm, "pkg_check_modules("); p && n < 250;
         p = strstr(p + 1, "pkg_check_modules(")) {
        char *end = strchr(p, ')');
        assert_non_null(end);
        char args[256];
        snprintf(args, sizeof(args), "%.*s", (int)(end - p - 18), p + 18);
        char *last = NULL;
        for (char *save = NULL, *w = strtok_r(args, " \t\n", &save); w;
             w = strtok_r(NULL, " \t\n", &save))
            last = w;
        assert_non_null(last);
        const char *pc_argv[] = {"pkg-config", "--variable=pcfiledir", last, NULL};
        char *dir = run_out(pc_argv, NULL);
        dir[strcspn(dir, "\n")] = '\0';
        if (*dir == '\0')
            fail_msg("pkg-config knows no module %s (CMakeLists.txt requires it)", last);
        char pc[512];
        snprintf(pc, sizeof(pc), "%s/%s.pc", dir, last);
        free(dir);
        /* /usr/lib/<multiarch>/pkgconfig is what dpkg records. */
        char real[PATH_MAX];
        path_opts[n] = guard_at(cm, p, guards, lines);
        paths[n++] = strdup(realpath(pc, real) ? real : pc);
    }
    /* Top-level source paths CMake reads: ${CMAKE_SOURCE_DIR}/<dir>/...
     * and add_subdirectory(<dir>...). */
    need_add(&facts.cmake_dirs, "CMakeLists.txt", "");
    static const char *const refs[] = {"${CMAKE_SOURCE_DIR}/", "add_subdirectory("};
    for (size_t r = 0; r < 2; r++) {
        size_t rl = strlen(refs[r]);
        for (char *p = strstr(cm, refs[r]); p; p = strstr(p + 1, refs[r])) {
            char comp[128];
            size_t l = strcspn(p + rl, "/ )\"\n");
            snprintf(comp, sizeof(comp), "%.*s", (int)l, p + rl);
            if (*comp)
                need_add(&facts.cmake_dirs, comp, guard_at(cm, p, guards, lines));
        }
    }
    /* option(GW_X "..." ON|OFF) defaults, and the project's version. */
    for (char *p = strstr(cm, "\noption("); p; p = strstr(p + 1, "\noption(")) {
        char name[64] = "", val[16] = "", line[512];
        snprintf(line, sizeof(line), "%.*s", (int)strcspn(p + 1, "\n"), p + 1);
        const char *q = strrchr(line, ')');
        const char *sp = q;
        while (sp && sp > line && !isspace((unsigned char)sp[-1]))
            sp--;
        if (q && sscanf(line + 7, "%63[A-Za-z0-9_]", name) == 1 && q - sp < 16) {
            snprintf(val, sizeof(val), "%.*s", (int)(q - sp), sp);
            char kv[96];
            snprintf(kv, sizeof(kv), "%s=%s", name, val);
            set_add(&facts.options, kv);
        }
    }
    const char *ver = strstr(cm, " VERSION ");
    assert_non_null(ver);
    sscanf(ver + 9, "%31[0-9.]", facts.version);
    free(cm);

    char *owner[256];
    dpkg_owners(paths, n, owner);
    for (int i = 0; i < n; i++) {
        if (!owner[i])
            fail_msg("dpkg knows no package owning %s (installed by hand?)", paths[i]);
        if (!list_has(toolchain_header_pkgs, owner[i])) {
            need_add(&facts.build_needs, owner[i], path_opts[i]);
            why_add(facts.build_why, sizeof(facts.build_why), owner[i], paths[i]);
        }
        free(owner[i]);
        free(paths[i]);
    }
    set_free(&headers);
}

/* Packages owning the shared libraries `ldd` resolves for binary. */
static void find_lib_pkgs(const char *binary, struct strset *pkgs, char *why, size_t cap)
{
    const char *argv[] = {"ldd", binary, NULL};
    int code = 0;
    char *out = run_out(argv, &code);
    if (code != 0)
        fail_msg("ldd %s exited %d: %s", binary, code, out);
    char *cand[256] = {0};
    int idx[256] = {0}, n = 0, libs = 0;
    for (char *line = out; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        if (strstr(line, "not found"))
            fail_msg("ldd %s: %s", binary, line);
        /* "\tlibx.so.1 => /path (0x...)" or "\t/lib64/ld-linux... (0x...)";
         * the vDSO has no file. */
        char *arrow = strstr(line, "=> ");
        char *path = arrow ? arrow + 3 : line;
        while (*path == ' ' || *path == '\t')
            path++;
        if (*path == '/' && n + 3 <= 256) {
            path[strcspn(path, " (")] = '\0';
            /* dpkg records one spelling: as linked, resolved, or the other
             * side of the /usr merge. */
            char real[PATH_MAX], alt[PATH_MAX + 8];
            cand[n] = strdup(path);
            idx[n++] = libs;
            if (realpath(path, real)) {
                cand[n] = strdup(real);
                idx[n++] = libs;
            }
            if (strncmp(path, "/usr/", 5) == 0)
                snprintf(alt, sizeof(alt), "%s", path + 4);
            else
                snprintf(alt, sizeof(alt), "/usr%s", path);
            cand[n] = strdup(alt);
            idx[n++] = libs;
            libs++;
        }
        line = nl ? nl + 1 : NULL;
    }
    assert_true(libs >= 2); /* at least libc and the loader */
    char *owner[256];
    dpkg_owners(cand, n, owner);
    for (int lib = 0; lib < libs; lib++) {
        const char *pkg = NULL, *path = NULL;
        for (int i = 0; i < n; i++) {
            if (idx[i] == lib && !path)
                path = cand[i];
            if (idx[i] == lib && owner[i] && !pkg)
                pkg = owner[i];
        }
        if (!pkg)
            fail_msg("no package owns %s (ldd %s)", path, binary);
        set_add(pkgs, pkg);
        why_add(why, cap, pkg, path);
    }
    for (int i = 0; i < n; i++) {
        free(cand[i]);
        free(owner[i]);
    }
    free(out);
}

/* A JSON string's value, or "" when v is not a string. */
static const char *jsv(json_t *v)
{
    return json_is_string(v) ? json_string_value(v) : "";
}

static bool sanitizer_build(void)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    return true;
#else
    return false;
#endif
}

/* ---- the checker ------------------------------------------------------------------ */

/* Checks Dockerfile text against the facts; returns the number of
 * problems, each one line in e. */
static int check_dockerfile(const char *text, struct errs *e)
{
    struct dockerfile d;
    df_parse(text, &d);
    memset(e, 0, sizeof(*e));
    if (d.nstages != 2) {
        err_add(e, "want 2 stages (build, runtime), found %d", d.nstages);
        df_free(&d);
        return e->n;
    }
    /* Base images and the build stage's name. */
    char build_name[64] = "";
    for (int s = 0; s < 2; s++) {
        const struct dinstr *from = df_find(&d, s, "FROM");
        char img[128] = "", as[16] = "", name[64] = "";
        sscanf(from->args, "%127s %15s %63s", img, as, name);
        if (strcmp(img, BASE_IMAGE) != 0)
            err_add(e, "stage %d: FROM %s, want %s", s, img, BASE_IMAGE);
        if (s == 0) {
            if (strcasecmp(as, "AS") != 0 || !*name)
                err_add(e, "build stage is not named (FROM ... AS build)");
            snprintf(build_name, sizeof(build_name), "%s", name);
        }
    }
    /* Build stage: `make deps` minus test-only packages, plus what the
     * headers, pkg-config modules and llhttp sources need. */
    struct strset build = {0}, runtime = {0};
    df_apt_packages(&d, 0, &build);
    df_apt_packages(&d, 1, &runtime);
    /* The build stage's cmake lines: their -D options decide which
     * guarded needs apply (GW_BUILD_TESTS=OFF: no cmocka, no test/). */
    char cmake_line[2048] = "";
    for (int k = 0; k < d.n; k++) {
        size_t l = strlen(cmake_line);
        if (d.v[k].stage == 0 && strcmp(d.v[k].kw, "RUN") == 0 && strstr(d.v[k].args, "cmake"))
            snprintf(cmake_line + l, sizeof(cmake_line) - l, "%s ", d.v[k].args);
    }
    const struct need *off = NULL;
    for (int i = 0; i < facts.deps.n; i++) {
        const char *p = facts.deps.v[i];
        if (!list_has(test_only, p) && !set_has(&build, p) &&
            needs_state(&facts.build_needs, p, cmake_line, NULL) != 0)
            err_add(e, "build stage lacks %s, which `make deps` installs for the build", p);
    }
    for (int i = 0; i < build.n; i++) {
        if (!set_has(&facts.deps, build.v[i]))
            err_add(e, "build stage installs %s, which `make deps` does not", build.v[i]);
        else if (list_has(test_only, build.v[i]))
            err_add(e, "build stage installs %s, which only the tests use", build.v[i]);
        else if (needs_state(&facts.build_needs, build.v[i], cmake_line, &off) == 0)
            err_add(e, "build stage installs %s, which the build does not need with %s OFF",
                    build.v[i], off->opts);
    }
    for (const char *const *p = core_build; *p; p++) {
        if (!set_has(&build, *p))
            err_add(e, "build stage lacks core build package %s", *p);
    }
    for (int i = 0; i < facts.build_needs.n; i++) {
        const char *p = facts.build_needs.v[i].what;
        if (need_active(&facts.build_needs.v[i], cmake_line) && !set_has(&build, p))
            err_add(e, "build stage lacks %s (the build reads its %s)", p,
                    why_for(facts.build_why, p));
    }
    if (!df_run_has(&d, 0, "-DCMAKE_BUILD_TYPE=Release"))
        err_add(e, "build stage does not configure -DCMAKE_BUILD_TYPE=Release");
    for (int i = 0; i < facts.cmake_dirs.n; i++) {
        const char *need = facts.cmake_dirs.v[i].what;
        bool seen = false; /* one message per path */
        for (int j = 0; j < i; j++)
            seen |= strcmp(facts.cmake_dirs.v[j].what, need) == 0;
        if (seen)
            continue;
        bool copied = false, named = false;
        for (int k = 0; k < d.n; k++) {
            if (d.v[k].stage != 0 || strcmp(d.v[k].kw, "COPY") != 0)
                continue;
            char src[256] = "";
            sscanf(d.v[k].args, "%255s", src);
            size_t l = strlen(need);
            bool it = strncmp(src, need, l) == 0 && (src[l] == '\0' || src[l] == '/');
            copied |= strcmp(src, ".") == 0 || it;
            named |= it;
        }
        int state = needs_state(&facts.cmake_dirs, need, cmake_line, &off);
        if (state == 1 && !copied)
            err_add(e, "build stage does not COPY %s, which CMakeLists.txt reads", need);
        else if (state == 0 && named)
            err_add(e, "build stage copies %s, which CMakeLists.txt does not read with %s OFF",
                    need, off->opts);
    }

    /* Runtime stage: exactly the packages owning the gateway's libraries
     * (minus the base image's), nothing from the build context. */
    bool copied_gateway = false;
    for (int k = 0; k < d.n; k++) {
        const struct dinstr *in = &d.v[k];
        if (in->stage != 1)
            continue;
        if (strcmp(in->kw, "ADD") == 0)
            err_add(e, "line %d: runtime ADD (configuration comes from the environment only)",
                    in->line);
        if (strcmp(in->kw, "COPY") != 0)
            continue;
        char from[96] = "", src[256] = "", dst[256] = "";
        if (sscanf(in->args, "%95s %255s %255s", from, src, dst) != 3 ||
            strncmp(from, "--from=", 7) != 0 || strcmp(from + 7, build_name) != 0) {
            err_add(e,
                    "line %d: runtime COPY not from the build stage: %s (configuration "
                    "comes from the environment only)",
                    in->line, in->args);
            continue;
        }
        const char *base = strrchr(src, '/') ? strrchr(src, '/') + 1 : src;
        if (strcmp(base, "gateway") != 0) {
            err_add(e, "line %d: runtime copies %s; only the gateway belongs in the image",
                    in->line, base);
            continue;
        }
        copied_gateway = true;
        if (strcmp(dst, "/usr/local/bin/gateway") != 0 && strcmp(dst, "/usr/local/bin/") != 0 &&
            strcmp(dst, "/usr/bin/gateway") != 0)
            err_add(e,
                    "gateway copied to %s: not on the default PATH, HEALTHCHECK "
                    "`gateway --healthcheck` would not find it",
                    dst);
    }
    if (!copied_gateway)
        err_add(e, "runtime stage does not COPY --from=%s the gateway binary", build_name);
    for (int i = 0; i < facts.lib_pkgs.n; i++) {
        const char *p = facts.lib_pkgs.v[i];
        if (list_has(base_image_pkgs, p) || (sanitizer_build() && list_has(sanitizer_pkgs, p)))
            continue;
        if (!set_has(&runtime, p))
            err_add(e, "runtime stage lacks %s (ldd: the gateway links its %s)", p,
                    why_for(facts.lib_why, p));
    }
    for (int i = 0; i < runtime.n; i++) {
        const char *p = runtime.v[i];
        if (!set_has(&facts.lib_pkgs, p))
            err_add(e, "runtime stage installs %s, which no library of the gateway needs", p);
        if (strstr(p, "-dev"))
            err_add(e, "runtime stage installs the development package %s", p);
    }

    /* User, port, signal, health check, entry point. */
    const struct dinstr *user = df_find(&d, 1, "USER");
    if (!user) {
        err_add(e, "runtime stage has no USER: it would run as root");
    } else {
        char u[64];
        snprintf(u, sizeof(u), "%s", user->args);
        u[strcspn(u, ":")] = '\0';
        char *end = NULL;
        long uid = strtol(u, &end, 10);
        bool numeric = *u && end && *end == '\0';
        if (strcmp(u, "root") == 0 || (numeric && uid == 0))
            err_add(e, "USER %s is root", user->args);
        char made[96];
        snprintf(made, sizeof(made), numeric ? "--uid %s" : " %s", u);
        if (!df_run_has(&d, 1, "useradd") || !df_run_has(&d, 1, made))
            err_add(e, "USER %s is not created with useradd in the runtime stage", u);
    }
    const struct dinstr *expose = df_find(&d, 1, "EXPOSE");
    if (!expose || (strcmp(expose->args, "8000") != 0 && strcmp(expose->args, "8000/tcp") != 0))
        err_add(e, "runtime stage does not EXPOSE 8000");
    const struct dinstr *sig = df_find(&d, 1, "STOPSIGNAL");
    if (!sig || strcmp(sig->args, "SIGTERM") != 0)
        err_add(e, "STOPSIGNAL is not SIGTERM (the gateway drains on SIGTERM)");
    const struct dinstr *hc = df_find(&d, 1, "HEALTHCHECK");
    const char *cmd = hc ? strstr(hc->args, "CMD ") : NULL;
    json_t *hcj = cmd ? json_loads(cmd + 4, JSON_DISABLE_EOF_CHECK, NULL) : NULL;
    if (!json_is_array(hcj) || json_array_size(hcj) != 2 ||
        strcmp(jsv(json_array_get(hcj, 0)), "gateway") != 0 ||
        strcmp(jsv(json_array_get(hcj, 1)), "--healthcheck") != 0)
        err_add(e, "HEALTHCHECK is not CMD [\"gateway\", \"--healthcheck\"] (exec form)");
    json_decref(hcj);
    /* The engine's timeout (default 30 s) must outlast the checker's own
     * bounded waits, or a slow answer is killed instead of reported. */
    const char *to = hc ? strstr(hc->args, "--timeout=") : NULL;
    if (to) {
        char unit[8] = "";
        double v = 0;
        sscanf(to + 10, "%lf%7[a-z]", &v, unit);
        double ms = strcmp(unit, "ms") == 0  ? v
                    : strcmp(unit, "s") == 0 ? v * 1000
                    : strcmp(unit, "m") == 0 ? v * 60000
                                             : -1;
        if (!(ms > (double)facts.healthcheck_wait_ms))
            err_add(e,
                    "HEALTHCHECK --timeout=%.*s is not longer than the checker's own waits "
                    "(%ld ms, src/main.c)",
                    (int)strcspn(to + 10, " "), to + 10, facts.healthcheck_wait_ms);
    }
    /* OCI labels; the version is the project's. */
    for (const char *const *l = oci_labels; *l; l++) {
        char want[96];
        snprintf(want, sizeof(want), "%s=", *l);
        const char *at = NULL;
        for (int k = 0; k < d.n && !at; k++) {
            if (d.v[k].stage == 1 && strcmp(d.v[k].kw, "LABEL") == 0)
                at = strstr(d.v[k].args, want);
        }
        if (!at) {
            err_add(e, "runtime stage lacks LABEL %s", *l);
            continue;
        }
        at += strlen(want);
        char val[128];
        snprintf(val, sizeof(val), "%.*s", (int)strcspn(at + (*at == '"'), "\" "),
                 at + (*at == '"'));
        if (!*val)
            err_add(e, "LABEL %s is empty", *l);
        if (strstr(*l, ".version") && strcmp(val, facts.version) != 0)
            err_add(e, "LABEL %s=%s, but CMakeLists.txt says VERSION %s", *l, val, facts.version);
    }
    const struct dinstr *ep = df_find(&d, 1, "ENTRYPOINT");
    json_t *epj = ep ? json_loads(ep->args, 0, NULL) : NULL;
    if (!json_is_array(epj) || json_array_size(epj) < 1 ||
        strcmp(jsv(json_array_get(epj, 0)), "gateway") != 0)
        err_add(e, "ENTRYPOINT is not [\"gateway\"] in exec form (signals must reach it, "
                   "logs go to stdout/stderr unredirected)");
    json_decref(epj);
    for (int k = 0; k < d.n; k++) {
        if (d.v[k].stage == 1 && strstr(d.v[k].args, "--env-file"))
            err_add(e,
                    "line %d: --env-file in the image (configuration comes from the "
                    "environment only)",
                    d.v[k].line);
    }
    set_free(&build);
    set_free(&runtime);
    df_free(&d);
    return e->n;
}

static int group_setup(void **state)
{
    char *mk = gwt_obs_read_file(MAKEFILE, NULL);
    if (!mk)
        return -1;
    make_var(mk, "DEPS", &facts.deps);
    free(mk);
    if (facts.deps.n == 0)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    set_free(&facts.deps);
    set_free(&facts.lib_pkgs);
    set_free(&facts.options);
    return 0;
}

static void load_facts(void)
{
    static bool loaded;
    if (loaded)
        return;
    find_build_needs();
    char *mainc = gwt_obs_read_file(MAIN_C, NULL);
    assert_non_null(mainc);
    static const char *const waits[] = {"#define GW_HEALTHCHECK_CONNECT_MS ",
                                        "#define GW_HEALTHCHECK_READ_MS "};
    for (size_t i = 0; i < 2; i++) {
        const char *w = strstr(mainc, waits[i]);
        if (!w)
            fail_msg("src/main.c has no \"%s\"", waits[i]);
        facts.healthcheck_wait_ms += strtol(w + strlen(waits[i]), NULL, 10);
    }
    free(mainc);
    find_lib_pkgs(GW_BIN_DIR "/gateway", &facts.lib_pkgs, facts.lib_why, sizeof(facts.lib_why));
    loaded = true;
}

/* ---- Dockerfile tests ------------------------------------------------------------------ */

/* The facts the checker relies on are what this machine says. */
static void test_facts(void **state)
{
    load_facts();
    for (const char *const *p = core_build; *p; p++) {
        if (!set_has(&facts.deps, *p))
            fail_msg("Makefile DEPS lacks %s", *p);
    }
    /* Every DEPS package is classified: test-only ones are named here. */
    for (const char *const *p = test_only; *p; p++) {
        if (!set_has(&facts.deps, *p))
            fail_msg("test_only lists %s, which Makefile DEPS no longer has", *p);
    }
    /* The libraries the gateway links come from these packages. */
    assert_true(set_has(&facts.lib_pkgs, "libc6"));
    assert_true(set_has(&facts.lib_pkgs, "libhiredis0.14"));
    assert_true(set_has(&facts.lib_pkgs, "libjansson4"));
    assert_true(set_has(&facts.lib_pkgs, "libssl3")); /* libcrypto.so.3 */
    /* The headers and modules the build reads map to the -dev packages. */
    const char *def = ""; /* a configure with the option() defaults */
    assert_int_equal(needs_state(&facts.build_needs, "libhiredis-dev", def, NULL), 1);
    assert_int_equal(needs_state(&facts.build_needs, "libjansson-dev", def, NULL), 1);
    assert_int_equal(needs_state(&facts.build_needs, "libssl-dev", def, NULL), 1);
    assert_int_equal(needs_state(&facts.build_needs, "node-llhttp", def, NULL), 1);
    assert_int_equal(needs_state(&facts.cmake_dirs, "src", def, NULL), 1);
    assert_int_equal(needs_state(&facts.cmake_dirs, "third_party", def, NULL), 1);
    /* cmocka and test/ only when the tests are configured (the default). */
    assert_true(set_has(&facts.options, "GW_BUILD_TESTS=ON"));
    assert_true(set_has(&facts.options, "GW_FUZZ=OFF"));
    const char *no_tests = "cmake -S . -B build -DGW_BUILD_TESTS=OFF";
    assert_int_equal(needs_state(&facts.build_needs, "libcmocka-dev", def, NULL), 1);
    assert_int_equal(needs_state(&facts.build_needs, "libcmocka-dev", no_tests, NULL), 0);
    assert_int_equal(needs_state(&facts.cmake_dirs, "test", def, NULL), 1);
    assert_int_equal(needs_state(&facts.cmake_dirs, "test", no_tests, NULL), 0);
    assert_int_equal(
        needs_state(&facts.cmake_dirs, "test", "-DGW_BUILD_TESTS=OFF -DGW_FUZZ=ON", NULL), 1);
    assert_int_equal(needs_state(&facts.cmake_dirs, "src", no_tests, NULL), 1);
    assert_true(facts.healthcheck_wait_ms > 0);
    assert_non_null(strchr(facts.version, '.'));
}

static void test_dockerfile_consistent(void **state)
{
    load_facts();
    char *text = gwt_obs_read_file(DOCKERFILE, NULL);
    assert_non_null(text);
    struct errs e;
    if (check_dockerfile(text, &e) != 0) {
        print_error("%s", e.text);
        fail_msg("Dockerfile: %d problem(s), listed above", e.n);
    }
    free(text);
}

/* Replaces the first occurrence of from at or after the start of stage
 * (0 build, 1 runtime: after the second FROM) with to. */
static char *mutate(const char *text, int stage, const char *from, const char *to)
{
    const char *start = text;
    if (stage == 1) {
        start = strstr(text, "\nFROM ");
        assert_non_null(start);
        start = strstr(start + 1, "\nFROM ");
        assert_non_null(start);
    }
    const char *at = strstr(start, from);
    if (!at)
        fail_msg("replace: \"%s\" not found (after stage %d start)", from, stage);
    size_t off = (size_t)(at - text);
    char *out = malloc(strlen(text) - strlen(from) + strlen(to) + 1);
    assert_non_null(out);
    memcpy(out, text, off);
    strcpy(out + off, to);
    strcat(out, at + strlen(from));
    return out;
}

/* The checker fails on each way the Dockerfile could drift. */
static void test_dockerfile_checker_catches_drift(void **state)
{
    load_facts();
    char *text = gwt_obs_read_file(DOCKERFILE, NULL);
    assert_non_null(text);
    static const struct {
        int stage;
        const char *from, *to, *expect;
    } cases[] = {
        {1, "libjansson4 libssl3", "libjansson4", "runtime stage lacks libssl3"},
        {1, "libjansson4 libssl3", "libjansson4 libssl3 curl", "installs curl, which no library"},
        {1, "recommends libhiredis0.14", "recommends libhiredis-dev",
         "development package libhiredis-dev"},
        /* Without GW_BUILD_TESTS=OFF, CMake needs cmocka and test/. */
        {0, " -DGW_BUILD_TESTS=OFF", "", "build stage lacks libcmocka-dev"},
        {0, " -DGW_BUILD_TESTS=OFF", " -DGW_BUILD_TESTS=ON", "does not COPY test"},
        {0, " -DGW_BUILD_TESTS=OFF", " -DGW_BUILD_TESTS=OFF -DGW_FUZZ=ON", "does not COPY test"},
        /* With it, they are dead weight. */
        {0, " libssl-dev", " libssl-dev libcmocka-dev",
         "libcmocka-dev, which the build does not need with GW_BUILD_TESTS OFF"},
        {0, "COPY src ./src", "COPY src ./src\nCOPY test ./test",
         "copies test, which CMakeLists.txt does not read with GW_BUILD_TESTS OFF"},
        {0, "COPY src ./src", "COPY src ./src\nCOPY scripts ./scripts",
         "copies scripts, which CMakeLists.txt does not read with GW_BUILD_TESTS OFF"},
        {0, " -DGW_BUILD_TESTS=OFF", " -DGW_BUILD_TESTS=ON", "does not COPY scripts"},
        {0, " libssl-dev", " libssl-dev redis-server", "redis-server, which only the tests"},
        {0, "node-llhttp", "nodejs", "build stage lacks node-llhttp"},
        {0, "Release", "Debug", "CMAKE_BUILD_TYPE=Release"},
        {0, "COPY third_party", "COPY docs", "does not COPY third_party"},
        {1, "FROM debian:bookworm-slim", "FROM ubuntu:24.04", "want debian:bookworm-slim"},
        {1, "USER 10001:10001", "USER root", "is root"},
        {1, "USER 10001:10001", "USER 4242", "not created with useradd"},
        {1, "EXPOSE 8000", "EXPOSE 8080", "EXPOSE 8000"},
        {1, "STOPSIGNAL SIGTERM", "STOPSIGNAL SIGKILL", "STOPSIGNAL"},
        {1, "\"--healthcheck\"", "\"--version\"", "HEALTHCHECK"},
        {1, "--timeout=5s", "--timeout=3s", "HEALTHCHECK --timeout=3s is not longer"},
        {1, "--timeout=5s", "--timeout=4000ms", "HEALTHCHECK --timeout=4000ms is not longer"},
        {1, "image.version=\"", "image.version=\"9", "but CMakeLists.txt says VERSION"},
        {1, "org.opencontainers.image.licenses=", "org.example.licenses=",
         "lacks LABEL org.opencontainers.image.licenses"},
        {1, "org.opencontainers.image.source=\"", "org.opencontainers.image.source=\"\" x=\"",
         "LABEL org.opencontainers.image.source is empty"},
        {1, "ENTRYPOINT [\"gateway\"]", "ENTRYPOINT gateway > /var/log/gw.log", "ENTRYPOINT"},
        {1, "ENTRYPOINT [\"gateway\"]", "ENTRYPOINT [\"gateway\", \"--env-file\", \"/gw.env\"]",
         "--env-file"},
        {1, "USER ", "COPY gateway.env.example /etc/gateway.env\nUSER ", "not from the build"},
        {1, "/usr/local/bin/gateway", "/opt/gateway", "not on the default PATH"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *bad = mutate(text, cases[i].stage, cases[i].from, cases[i].to);
        struct errs e;
        int n = check_dockerfile(bad, &e);
        if (n == 0 || !strstr(e.text, cases[i].expect))
            fail_msg("mutation %zu (\"%s\" -> \"%s\") not caught as \"%s\"; checker said:\n%s", i,
                     cases[i].from, cases[i].to, cases[i].expect, e.text);
        free(bad);
    }
    free(text);
}

/* ---- the YAML reader the manifest tests use --------------------------------------------- */

static void test_yaml_reader(void **state)
{
    char err[256] = "";
    json_t *docs = gwt_yaml_load("# c\n"
                                 "a: 1\n"
                                 "b:\n"
                                 "  - x: \"8000\"   # comment\n"
                                 "    y: 'it''s'\n"
                                 "  - plain text\n"
                                 "  -\n"
                                 "    - 2\n"
                                 "c:\n"
                                 "- true\n"
                                 "d: {}\n"
                                 "e: http://h:1/p\n"
                                 "---\n"
                                 "f: ~\n",
                                 err, sizeof(err));
    if (!docs)
        fail_msg("yaml: %s", err);
    char *s = json_dumps(docs, JSON_COMPACT | JSON_PRESERVE_ORDER);
    assert_string_equal(s, "[{\"a\":1,\"b\":[{\"x\":\"8000\",\"y\":\"it's\"},\"plain text\",[2]],"
                           "\"c\":[true],\"d\":{},\"e\":\"http://h:1/p\"},{\"f\":null}]");
    free(s);
    json_decref(docs);
    /* It refuses what it does not understand, with the line. */
    static const struct {
        const char *text, *why;
    } bad[] = {
        {"a:\n\tb: 1\n", "line 2: tab"},
        {"a: 1\na: 2\n", "line 2: duplicate"},
        {"a:\n  b: 1\n    c: 2\n", "line 3"},
        {"a: [1, 2]\n", "line 1: unsupported"},
        {"a: |\n  x\n", "line 1: unsupported"},
        {"a: &x 1\n", "line 1: unsupported"},
        {"- a\nb: 1\n", "line 2"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        json_t *j = gwt_yaml_load(bad[i].text, err, sizeof(err));
        if (j || !strstr(err, bad[i].why))
            fail_msg("yaml case %zu accepted or wrong message: \"%s\"", i, err);
    }
}

/* ---- Kubernetes ----------------------------------------------------------------------------- */

static json_t *find_by_name(json_t *arr, const char *name)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        const char *n = json_string_value(json_object_get(v, "name"));
        if (n && strcmp(n, name) == 0)
            return v;
    }
    return NULL;
}

/* Dotted path lookup ("spec.template.spec"). */
static json_t *jget(json_t *j, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *save = NULL, *k = strtok_r(buf, ".", &save); k && j; k = strtok_r(NULL, ".", &save))
        j = json_object_get(j, k);
    return j;
}

static const char *jstr(json_t *j, const char *path)
{
    json_t *v = jget(j, path);
    if (!json_is_string(v))
        fail_msg("manifest: %s missing or not a string", path);
    return json_string_value(v);
}

/* A port given as a number or a quoted number, or -1. */
static long long jint(json_t *v)
{
    if (json_is_integer(v))
        return json_integer_value(v);
    if (json_is_string(v)) {
        char *end = NULL;
        long long n = strtoll(json_string_value(v), &end, 10);
        if (end && *end == '\0')
            return n;
    }
    return -1;
}

/* Kubernetes CPU quantity ("2", 2, "1500m") in whole CPUs, rounded up the
 * way resourceFieldRef with divisor 1 does. */
static long long cpus(json_t *v)
{
    if (json_is_integer(v))
        return json_integer_value(v);
    const char *s = json_string_value(v);
    if (!s)
        fail_msg("cpu limit missing");
    char *end = NULL;
    double x = strtod(s, &end);
    if (end && strcmp(end, "m") == 0)
        x /= 1000.0;
    else if (!end || *end)
        fail_msg("cpu quantity %s not understood", s);
    return (long long)ceil(x);
}

/* The probe's port resolved against the container's named ports. */
static long long probe_port(json_t *container, json_t *probe)
{
    json_t *port = jget(probe, "httpGet.port");
    if (json_is_string(port) && jint(port) < 0) {
        json_t *p = find_by_name(json_object_get(container, "ports"), json_string_value(port));
        return p ? jint(json_object_get(p, "containerPort")) : -1;
    }
    return jint(port);
}

/* The rules ConfigMap of K8S_RULES as the kubelet mounts it for the
 * gateway container gw of pod: the container mounts it whole (no subPath,
 * which would never be updated) at the directory of rules_file, whose last
 * component is one of its keys. Lays the volume out in a new directory
 * tmp (64 bytes) the way the kubelet does (tmp/..<ts>/<key>, tmp/..data ->
 * ..<ts>, tmp/<key> -> ..data/<key>) and writes the path of tmp/<key> to
 * path (256 bytes). The caller removes tmp. */
static void rules_volume(json_t *pod, json_t *gw, const char *rules_file, char *tmp, char *path)
{
    char *text = gwt_obs_read_file(K8S_RULES, NULL);
    assert_non_null(text);
    char why[256] = "";
    json_t *cm = gw_rules_yaml_read(text, strlen(text), why, sizeof(why));
    free(text);
    if (!cm)
        fail_msg("%s: %s", K8S_RULES, why);
    assert_string_equal(jstr(cm, "kind"), "ConfigMap");
    const char *slash = strrchr(rules_file, '/');
    assert_non_null(slash);
    char mount_path[256];
    snprintf(mount_path, sizeof(mount_path), "%.*s", (int)(slash - rules_file), rules_file);
    const char *key = slash + 1;
    json_t *mount = NULL, *m;
    size_t i;
    json_array_foreach(json_object_get(gw, "volumeMounts"), i, m)
    {
        const char *mp = json_string_value(json_object_get(m, "mountPath"));
        if (mp && strcmp(mp, mount_path) == 0)
            mount = m;
    }
    if (!mount)
        fail_msg("RATE_LIMIT_RULES_FILE=%s: no volumeMount at %s", rules_file, mount_path);
    if (json_object_get(mount, "subPath"))
        fail_msg("the rules volume is mounted with subPath: it would never be updated");
    json_t *vol = find_by_name(jget(pod, "spec.volumes"), jstr(mount, "name"));
    assert_non_null(vol);
    assert_string_equal(jstr(vol, "configMap.name"), jstr(cm, "metadata.name"));
    json_t *data = jget(cm, "data");
    const char *rules = json_string_value(json_object_get(data, key));
    if (!rules)
        fail_msg("%s has no key %s", K8S_RULES, key);

    snprintf(tmp, 64, "/tmp/gw-k8s-rules-XXXXXX");
    assert_non_null(mkdtemp(tmp));
    char p[256], q[512];
    snprintf(p, sizeof(p), "%s/..2026_01_01_00_00_00.1", tmp);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(q, sizeof(q), "%s/%s", p, key);
    assert_int_equal(gwt_obs_write_file(q, rules, strlen(rules)), 0);
    snprintf(p, sizeof(p), "%s/..data", tmp);
    assert_int_equal(symlink("..2026_01_01_00_00_00.1", p), 0);
    snprintf(q, sizeof(q), "..data/%s", key);
    snprintf(path, 256, "%s/%s", tmp, key);
    assert_int_equal(symlink(q, path), 0);
    json_decref(cm);
}

static void test_kubernetes_manifest(void **state)
{
    char *text = gwt_obs_read_file(K8S_MANIFEST, NULL);
    assert_non_null(text);
    char err[256] = "";
    json_t *docs = gwt_yaml_load(text, err, sizeof(err));
    free(text);
    if (!docs)
        fail_msg("%s: %s", K8S_MANIFEST, err);
    json_t *deploy = NULL, *svc = NULL;
    size_t i;
    json_t *doc;
    json_array_foreach(docs, i, doc)
    {
        const char *kind = json_string_value(json_object_get(doc, "kind"));
        if (kind && strcmp(kind, "Deployment") == 0)
            deploy = doc;
        if (kind && strcmp(kind, "Service") == 0)
            svc = doc;
    }
    assert_non_null(deploy);
    assert_non_null(svc);
    json_t *pod = jget(deploy, "spec.template");
    json_t *containers = jget(pod, "spec.containers");
    assert_true(json_array_size(containers) == 2); /* app + sidecar */
    json_t *gw = find_by_name(containers, "gateway");
    assert_non_null(gw);
    assert_non_null(strstr(jstr(gw, "image"), "gateway"));
    json_t *app = json_array_get(containers, json_array_get(containers, 0) == gw ? 1 : 0);
    long long app_port =
        jint(jget(json_array_get(json_object_get(app, "ports"), 0), "containerPort"));
    assert_true(app_port > 0);

    /* The gateway's port, probes and annotations agree. */
    json_t *http = find_by_name(json_object_get(gw, "ports"), "http");
    assert_non_null(http);
    long long gw_port = jint(json_object_get(http, "containerPort"));
    assert_int_equal(gw_port, 8000);
    json_t *live = json_object_get(gw, "livenessProbe");
    json_t *ready = json_object_get(gw, "readinessProbe");
    assert_string_equal(jstr(live, "httpGet.path"), "/health?probe=live");
    assert_string_equal(jstr(ready, "httpGet.path"), "/health");
    assert_int_equal(probe_port(gw, live), gw_port);
    assert_int_equal(probe_port(gw, ready), gw_port);
    json_t *ann = jget(pod, "metadata.annotations");
    assert_string_equal(json_string_value(json_object_get(ann, "prometheus.io/scrape")), "true");
    assert_int_equal(jint(json_object_get(ann, "prometheus.io/port")), gw_port);
    assert_string_equal(json_string_value(json_object_get(ann, "prometheus.io/path")), "/metrics");
    /* The Service sends its traffic to the gateway, not around it. */
    json_t *sport = json_array_get(jget(svc, "spec.ports"), 0);
    json_t *target = json_object_get(sport, "targetPort");
    assert_true((json_is_string(target) && strcmp(json_string_value(target), "http") == 0) ||
                jint(target) == gw_port);

    /* WORKER_THREADS follows the CPU limit. */
    long long cpu = cpus(jget(gw, "resources.limits.cpu"));
    assert_true(cpu >= 1);
    json_t *env = json_object_get(gw, "env");
    json_t *wt = find_by_name(env, "WORKER_THREADS");
    assert_non_null(wt);
    json_t *ref = jget(wt, "valueFrom.resourceFieldRef");
    if (ref) {
        assert_string_equal(jstr(ref, "resource"), "limits.cpu");
        assert_string_equal(jstr(ref, "containerName"), "gateway");
        assert_int_equal(jint(json_object_get(ref, "divisor")), 1);
    } else {
        assert_int_equal(jint(json_object_get(wt, "value")), cpu);
    }

    /* The environment is a valid configuration for the real binary, names
     * only known variables, and means what the manifest intends. */
    const char *cenv[64];
    char store[64][512];
    int n = 0;
    json_t *var;
    char rules_tmp[64] = "", rules_path[256] = "";
    json_array_foreach(env, i, var)
    {
        const char *name = jstr(var, "name");
        json_t *value = json_object_get(var, "value");
        assert_true(n < 63);
        if (strcmp(name, "WORKER_THREADS") == 0 && !value) {
            snprintf(store[n], sizeof(store[n]), "%s=%lld", name, cpu);
        } else if (strcmp(name, "RATE_LIMIT_RULES_FILE") == 0 && json_is_string(value)) {
            /* The ConfigMap's rules, where the pod would see them. */
            rules_volume(pod, gw, json_string_value(value), rules_tmp, rules_path);
            snprintf(store[n], sizeof(store[n]), "%s=%s", name, rules_path);
        } else if (json_is_string(value)) {
            snprintf(store[n], sizeof(store[n]), "%s=%s", name, json_string_value(value));
        } else if (strcmp(name, "ADMIN_TOKEN") == 0 && jget(var, "valueFrom.secretKeyRef")) {
            /* A secret: any value of the right shape stands for it. */
            snprintf(store[n], sizeof(store[n]), "%s=%s", name, "0123456789abcdef0123456789abcdef");
        } else if (jget(var, "valueFrom.secretKeyRef") != NULL) {
            /* A secret (REDIS_PASSWORD): any value; --check-config masks it. */
            snprintf(store[n], sizeof(store[n]), "%s=from-a-secret", name);
        } else {
            fail_msg("env %s: a string value (or WORKER_THREADS' resourceFieldRef, or a "
                     "secretKeyRef) expected",
                     name);
        }
        cenv[n] = store[n];
        n++;
    }
    cenv[n] = NULL;
    const char *args[] = {"--check-config", NULL};
    char *out = NULL, *errs = NULL;
    int rc = gwt_gateway_run(args, cenv, 10000, &out, &errs);
    if (rc != 0)
        fail_msg("gateway --check-config with the manifest's env exited %d: %s", rc, errs);
    json_t *eff = json_loads(out, 0, NULL);
    assert_non_null(eff);
    json_array_foreach(env, i, var)
    {
        const char *name = jstr(var, "name");
        if (!json_object_get(eff, name))
            fail_msg("env %s is not a gateway variable", name);
    }
    assert_int_equal(json_integer_value(json_object_get(eff, "WORKER_THREADS")), cpu);
    assert_null(strstr(out, "from-a-secret")); /* secrets are masked */
    if (rules_tmp[0]) {
        /* --check-config loaded and validated the ConfigMap's rules. */
        assert_string_equal(json_string_value(json_object_get(eff, "RATE_LIMIT_RULES_FILE")),
                            rules_path);
        assert_int_equal(gwt_obs_rm_rf(rules_tmp), 0);
    }
    assert_int_equal(json_integer_value(json_object_get(eff, "GATEWAY_PORT")), gw_port);
    /* The admin API stays inside the pod: on loopback, and its port is
     * neither a container port nor in the Service (SPEC.md §11). */
    json_t *admin_port = json_object_get(eff, "ADMIN_PORT");
    if (json_is_integer(admin_port)) {
        const char *ah = json_string_value(json_object_get(eff, "ADMIN_HOST"));
        assert_true(strcmp(ah, "127.0.0.1") == 0 || strcmp(ah, "::1") == 0);
        long long ap = json_integer_value(admin_port);
        json_t *cp;
        size_t k;
        json_array_foreach(json_object_get(gw, "ports"), k, cp)
            assert_true(jint(json_object_get(cp, "containerPort")) != ap);
        json_array_foreach(jget(svc, "spec.ports"), k, cp)
        {
            json_t *tp = json_object_get(cp, "targetPort");
            assert_true(json_is_string(tp) || jint(tp) != ap);
            assert_true(jint(json_object_get(cp, "port")) != ap);
        }
    }
    char backend[64];
    snprintf(backend, sizeof(backend), "http://127.0.0.1:%lld", app_port);
    assert_string_equal(json_string_value(json_object_get(eff, "BACKEND_URL")), backend);
    /* The pod's grace period covers the preStop pause and the drain. */
    long long grace = jint(jget(pod, "spec.terminationGracePeriodSeconds"));
    long long drain_ms = json_integer_value(json_object_get(eff, "SHUTDOWN_TIMEOUT_MS"));
    long long pre_s = jint(json_array_get(jget(gw, "lifecycle.preStop.exec.command"), 1));
    assert_true(pre_s >= 0);
    if (!(grace * 1000 > drain_ms + pre_s * 1000))
        fail_msg("terminationGracePeriodSeconds %lld <= preStop %lld s + SHUTDOWN_TIMEOUT_MS %lld",
                 grace, pre_s, drain_ms);
    json_decref(eff);
    free(out);
    free(errs);

    /* Same non-root uid as the image's USER. */
    char *df = gwt_obs_read_file(DOCKERFILE, NULL);
    assert_non_null(df);
    const char *u = strstr(df, "\nUSER ");
    assert_non_null(u);
    assert_int_equal(jint(jget(gw, "securityContext.runAsUser")), strtol(u + 6, NULL, 10));
    free(df);
    json_decref(docs);
}

/* ---- Prometheus configuration ------------------------------------------------------------------
 */

static int promtool(const char *sub, const char *path, char **out)
{
    const char *argv[] = {"promtool", "check", sub, path, NULL};
    char *o = NULL, *e = NULL;
    int rc = gwt_run(argv, NULL, 30000, &o, &e);
    size_t l = (o ? strlen(o) : 0) + (e ? strlen(e) : 0) + 1;
    *out = malloc(l);
    assert_non_null(*out);
    snprintf(*out, l, "%s%s", o ? o : "", e ? e : "");
    free(o);
    free(e);
    return rc;
}

static void test_prometheus_config(void **state)
{
    if (access("/usr/bin/promtool", X_OK) != 0)
        fail_msg("promtool is missing: install Debian's prometheus (make deps)");
    char *out = NULL;
    int rc = promtool("rules", PROM_DIR "/gateway-alerts.yml", &out);
    if (rc != 0)
        fail_msg("promtool check rules: %d\n%s", rc, out);
    free(out);

    /* As written: valid, unless this promtool lacks Kubernetes discovery
     * (Debian's build), which is the one error allowed. */
    rc = promtool("config", PROM_DIR "/prometheus.yml", &out);
    bool no_k8s_sd = rc != 0 && strstr(out, "field kubernetes_sd_configs not found");
    if (rc != 0 && !no_k8s_sd)
        fail_msg("promtool check config prometheus.yml: %d\n%s", rc, out);
    free(out);

    /* Everything else of the file, with the discovery swapped for static
     * targets (and the rule file made absolute), must pass regardless. */
    char *text = gwt_obs_read_file(PROM_DIR "/prometheus.yml", NULL);
    assert_non_null(text);
    assert_non_null(strstr(text, "kubernetes_sd_configs:\n      - role: pod\n"));
    assert_non_null(strstr(text, "\n  - gateway-alerts.yml\n"));
    const char *annotations[] = {"scrape", "port", "path"};
    for (size_t i = 0; i < 3; i++) {
        char meta[128];
        snprintf(meta, sizeof(meta), "__meta_kubernetes_pod_annotation_prometheus_io_%s",
                 annotations[i]);
        if (!strstr(text, meta))
            fail_msg("prometheus.yml does not use the pod annotation prometheus.io/%s",
                     annotations[i]);
    }
    assert_non_null(strstr(text, "metrics_path: /metrics"));
    char dir[256];
    snprintf(dir, sizeof(dir), "/tmp/gwtest-promcfg-XXXXXX");
    assert_non_null(mkdtemp(dir));
    char path[300];
    char *variant = mutate(text, 0, "kubernetes_sd_configs:\n      - role: pod\n",
                           "static_configs:\n      - targets: ['10.0.0.7:8000']\n");
    char *variant2 =
        mutate(variant, 0, "\n  - gateway-alerts.yml\n", "\n  - " PROM_DIR "/gateway-alerts.yml\n");
    free(variant);
    const char *buf = variant2;
    int len = (int)strlen(buf);
    snprintf(path, sizeof(path), "%s/prometheus.yml", dir);
    assert_int_equal(gwt_obs_write_file(path, buf, (size_t)len), 0);
    rc = promtool("config", path, &out);
    assert_int_equal(gwt_obs_rm_rf(dir), 0);
    if (rc != 0)
        fail_msg("promtool check config (static variant): %d\n%s\n%s", rc, out, buf);
    assert_non_null(strstr(out, "1 rule files found"));
    free(out);
    free(variant2);
    free(text);
}

/* ---- Grafana dashboard --------------------------------------------------------------------------
 */

/* Metric names the gateway exports, from its own renderer (Redis on). */
static char *exported_metrics(void)
{
    struct gw_stats_snapshot s;
    memset(&s, 0, sizeof(s));
    s.redis_enabled = true;
    struct gw_buf b = {0};
    assert_int_equal(gw_stats_render_prometheus(&s, "test", &b), 0);
    assert_int_equal(gw_buf_append(&b, "", 1), 0);
    char *text = strdup(gw_buf_head(&b));
    gw_buf_release(&b);
    assert_non_null(text);
    return text;
}

static void test_grafana_dashboard(void **state)
{
    json_error_t e;
    json_t *d = json_load_file(DASHBOARD, 0, &e);
    if (!d)
        fail_msg("%s: not valid JSON: %s (line %d)", DASHBOARD, e.text, e.line);
    assert_true(json_is_string(json_object_get(d, "title")));
    assert_true(json_is_string(json_object_get(d, "uid")));
    assert_true(json_is_integer(json_object_get(d, "schemaVersion")));
    json_t *panels = json_object_get(d, "panels");
    assert_true(json_array_size(panels) >= 5);
    char *exported = exported_metrics();

    /* Each required panel: title -> substrings its queries must hold. */
    static const struct {
        const char *title;
        const char *expr[3];
    } want[] = {
        {"Request rate by result", {"sum by (result) (rate(gateway_requests_total{", NULL}},
        {"Latency p50 / p99",
         {"histogram_quantile(0.5, sum by (le) (rate(gateway_request_duration_seconds_bucket{",
          "histogram_quantile(0.99, sum by (le) (rate(gateway_request_duration_seconds_bucket{",
          NULL}},
        {"In-flight vs cap", {"(gateway_in_flight{", "(gateway_in_flight_max{", NULL}},
        {"Queue length", {"(gateway_queue_length{", "(gateway_queue_length_max{", NULL}},
        {"Redis up", {"gateway_redis_up{", NULL}},
    };
    bool found[sizeof(want) / sizeof(want[0])] = {0};
    int ids[64], nids = 0;
    size_t i, k;
    json_t *p, *t;
    json_array_foreach(panels, i, p)
    {
        const char *title = json_string_value(json_object_get(p, "title"));
        assert_non_null(title);
        assert_true(json_is_string(json_object_get(p, "type")));
        assert_true(json_is_object(json_object_get(p, "gridPos")));
        json_t *id = json_object_get(p, "id");
        assert_true(json_is_integer(id));
        for (int x = 0; x < nids; x++)
            assert_int_not_equal(ids[x], json_integer_value(id));
        ids[nids++] = (int)json_integer_value(id);
        json_t *targets = json_object_get(p, "targets");
        assert_true(json_array_size(targets) >= 1);
        json_array_foreach(targets, k, t)
        {
            const char *expr = json_string_value(json_object_get(t, "expr"));
            if (!expr)
                fail_msg("panel \"%s\": target without expr", title);
            assert_true(json_is_string(json_object_get(t, "refId")));
            /* Every gateway_* name used is one the gateway exports. */
            for (const char *m = strstr(expr, "gateway_"); m; m = strstr(m + 1, "gateway_")) {
                char name[128], line_start[132];
                size_t l = strspn(m, "abcdefghijklmnopqrstuvwxyz0123456789_");
                snprintf(name, sizeof(name), "%.*s", (int)l, m);
                snprintf(line_start, sizeof(line_start), "\n%s", name);
                const char *hit = strstr(exported, line_start);
                if (!hit || (hit[strlen(line_start)] != ' ' && hit[strlen(line_start)] != '{'))
                    fail_msg("panel \"%s\" uses %s, which the gateway does not export", title,
                             name);
                m += l - 1;
            }
        }
        for (size_t w = 0; w < sizeof(want) / sizeof(want[0]); w++) {
            if (strcmp(title, want[w].title) != 0)
                continue;
            found[w] = true;
            for (const char *const *x = want[w].expr; *x; x++) {
                bool hit = false;
                json_array_foreach(targets, k, t)
                {
                    hit |= strstr(json_string_value(json_object_get(t, "expr")), *x) != NULL;
                }
                if (!hit)
                    fail_msg("panel \"%s\" has no query with %s", title, *x);
            }
        }
    }
    for (size_t w = 0; w < sizeof(want) / sizeof(want[0]); w++) {
        if (!found[w])
            fail_msg("dashboard has no panel \"%s\"", want[w].title);
    }
    free(exported);
    json_decref(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_facts),
        cmocka_unit_test(test_dockerfile_consistent),
        cmocka_unit_test(test_dockerfile_checker_catches_drift),
        cmocka_unit_test(test_yaml_reader),
        cmocka_unit_test(test_kubernetes_manifest),
        cmocka_unit_test(test_prometheus_config),
        cmocka_unit_test(test_grafana_dashboard),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
