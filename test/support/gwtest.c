/*
 * Integration-test support (see gwtest.h): child processes with their own
 * process group and log file, bounded waits for ports and log lines, a
 * raw-socket HTTP/1.1 response reader built on llhttp, and Redis helpers.
 * Every wait here has a deadline; nothing blocks without one.
 */
#include "gwtest.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <llhttp.h>
#include <openssl/sha.h>

extern char **environ;

#define POLL_STEP_MS     5
#define START_TIMEOUT_MS 15000 /* generous: ASan builds start slowly */

/* ---- misc ------------------------------------------------------------- */

long long gwt_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void gwt_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    static const char hex[] = "0123456789abcdef";
    SHA256(data, len, md);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

void gwt_strv_free(char **v, int n)
{
    if (v == NULL)
        return;
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* ---- child registry: kill leftovers at exit --------------------------- */

#define MAX_CHILDREN 256
static pid_t children[MAX_CHILDREN];
static pthread_mutex_t children_mu = PTHREAD_MUTEX_INITIALIZER;

static void children_kill_all(void)
{
    pthread_mutex_lock(&children_mu);
    for (int i = 0; i < MAX_CHILDREN; i++) {
        if (children[i] > 0) {
            kill(-children[i], SIGKILL);
            kill(children[i], SIGKILL);
            waitpid(children[i], NULL, 0);
            children[i] = 0;
        }
    }
    pthread_mutex_unlock(&children_mu);
}

static void children_add(pid_t pid)
{
    pthread_mutex_lock(&children_mu);
    for (int i = 0; i < MAX_CHILDREN; i++) {
        if (children[i] == 0) {
            children[i] = pid;
            break;
        }
    }
    pthread_mutex_unlock(&children_mu);
}

static void children_del(pid_t pid)
{
    pthread_mutex_lock(&children_mu);
    for (int i = 0; i < MAX_CHILDREN; i++) {
        if (children[i] == pid)
            children[i] = 0;
    }
    pthread_mutex_unlock(&children_mu);
}

__attribute__((constructor)) static void gwtest_init(void)
{
    /* Writing to a socket the gateway closed must be an error, not death. */
    signal(SIGPIPE, SIG_IGN);
    atexit(children_kill_all);
}

/* ---- ports ------------------------------------------------------------ */

int gwt_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static int connect_once(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int gwt_wait_port(int port, int timeout_ms)
{
    long long deadline = gwt_now_ms() + timeout_ms;
    for (;;) {
        int fd = connect_once(port);
        if (fd >= 0) {
            close(fd);
            return 0;
        }
        if (gwt_now_ms() >= deadline)
            return -ETIMEDOUT;
        sleep_ms(POLL_STEP_MS);
    }
}

/* ---- processes -------------------------------------------------------- */

static size_t env_key_len(const char *kv)
{
    const char *eq = strchr(kv, '=');
    return eq ? (size_t)(eq - kv) : strlen(kv);
}

static bool env_overridden(const char *kv, const char *const env[])
{
    size_t kl = env_key_len(kv);
    for (size_t i = 0; env && env[i]; i++) {
        if (env_key_len(env[i]) == kl && strncmp(env[i], kv, kl) == 0)
            return true;
    }
    return false;
}

/* Current environment with env applied; the array is malloc'd, the strings
 * borrowed. */
static char **env_build(const char *const env[])
{
    size_t n = 0, m = 0;
    while (environ[n])
        n++;
    while (env && env[m])
        m++;
    char **out = calloc(n + m + 1, sizeof(*out));
    if (out == NULL)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!env_overridden(environ[i], env))
            out[k++] = environ[i];
    }
    for (size_t i = 0; i < m; i++) {
        /* Last one wins when the caller lists a variable twice. */
        bool later = false;
        size_t kl = env_key_len(env[i]);
        for (size_t j = i + 1; j < m; j++) {
            if (env_key_len(env[j]) == kl && strncmp(env[j], env[i], kl) == 0)
                later = true;
        }
        if (!later && strchr(env[i], '='))
            out[k++] = (char *)env[i];
    }
    out[k] = NULL;
    return out;
}

/* fork+exec with stdout/stderr to the given fds. Reports exec failure through
 * a close-on-exec pipe so a missing binary is an error here, not a log line. */
static int spawn_fds(const char *const argv[], const char *const env[], int out_fd, int err_fd,
                     pid_t *pid_out)
{
    char **envp = env_build(env);
    if (envp == NULL)
        return -ENOMEM;
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0) {
        int e = errno;
        free(envp);
        return -e;
    }
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        free(envp);
        close(pfd[0]);
        close(pfd[1]);
        if (devnull >= 0)
            close(devnull);
        return -e;
    }
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        signal(SIGPIPE, SIG_DFL);
        if (devnull >= 0)
            dup2(devnull, 0);
        dup2(out_fd, 1);
        dup2(err_fd, 2);
        execvpe(argv[0], (char *const *)argv, envp);
        int e = errno;
        ssize_t w = write(pfd[1], &e, sizeof(e));
        (void)w;
        _exit(127);
    }
    close(pfd[1]);
    if (devnull >= 0)
        close(devnull);
    free(envp);
    int child_err = 0;
    ssize_t r;
    do {
        r = read(pfd[0], &child_err, sizeof(child_err));
    } while (r < 0 && errno == EINTR);
    close(pfd[0]);
    if (r == (ssize_t)sizeof(child_err)) {
        waitpid(pid, NULL, 0);
        return -child_err;
    }
    *pid_out = pid;
    return 0;
}

static int make_log(char *path, size_t cap, const char *name)
{
    const char *dir = getenv("TMPDIR");
    if (dir == NULL || *dir == '\0')
        dir = "/tmp";
    snprintf(path, cap, "%s/gwtest-%s-XXXXXX", dir, name);
    int fd = mkostemp(path, O_CLOEXEC | O_APPEND);
    if (fd < 0)
        return -errno;
    return fd;
}

static int spawn_common(struct gwt_proc *p, const char *const argv[], const char *const env[],
                        bool split)
{
    memset(p, 0, sizeof(*p));
    const char *base = strrchr(argv[0], '/');
    snprintf(p->name, sizeof(p->name), "%s", base ? base + 1 : argv[0]);
    int fd = make_log(p->log_path, sizeof(p->log_path), p->name);
    if (fd < 0) {
        p->log_path[0] = '\0';
        return fd;
    }
    int ofd = fd;
    if (split) {
        char tag[80];
        snprintf(tag, sizeof(tag), "%s-stdout", p->name);
        ofd = make_log(p->out_path, sizeof(p->out_path), tag);
        if (ofd < 0) {
            close(fd);
            unlink(p->log_path);
            p->log_path[0] = p->out_path[0] = '\0';
            return ofd;
        }
    }
    pid_t pid = -1;
    int rc = spawn_fds(argv, env, ofd, fd, &pid);
    close(fd);
    if (split)
        close(ofd);
    if (rc != 0) {
        unlink(p->log_path);
        if (split)
            unlink(p->out_path);
        p->log_path[0] = p->out_path[0] = '\0';
        return rc;
    }
    p->pid = pid;
    children_add(pid);
    return 0;
}

int gwt_spawn(struct gwt_proc *p, const char *const argv[], const char *const env[])
{
    return spawn_common(p, argv, env, false);
}

int gwt_spawn_split(struct gwt_proc *p, const char *const argv[], const char *const env[])
{
    return spawn_common(p, argv, env, true);
}

bool gwt_proc_alive(struct gwt_proc *p)
{
    if (p->pid <= 0 || p->exited)
        return false;
    int st;
    pid_t r = waitpid(p->pid, &st, WNOHANG);
    if (r == p->pid) {
        p->exited = true;
        p->status = st;
        children_del(p->pid);
        return false;
    }
    return r == 0;
}

static char *read_file(const char *path)
{
    if (path[0] == '\0')
        return NULL;
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, len = 0;
    char *s = malloc(cap);
    while (s) {
        if (cap - len < 4096) {
            char *t = realloc(s, cap * 2);
            if (t == NULL) {
                free(s);
                s = NULL;
                break;
            }
            s = t;
            cap *= 2;
        }
        size_t n = fread(s + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0)
            break;
    }
    fclose(f);
    if (s)
        s[len] = '\0';
    return s;
}

char *gwt_log_read(const struct gwt_proc *p)
{
    return read_file(p->log_path);
}

char *gwt_out_read(const struct gwt_proc *p)
{
    return read_file(p->out_path[0] ? p->out_path : p->log_path);
}

void gwt_log_mark(struct gwt_proc *p)
{
    struct stat st;
    if (p->log_path[0] && stat(p->log_path, &st) == 0)
        p->log_from = st.st_size;
    if (p->out_path[0] && stat(p->out_path, &st) == 0)
        p->out_from = st.st_size;
}

void gwt_log_dump(const struct gwt_proc *p, size_t max_bytes)
{
    char *s = gwt_log_read(p);
    if (s == NULL)
        return;
    size_t n = strlen(s);
    const char *from = n > max_bytes ? s + n - max_bytes : s;
    fprintf(stderr, "---- log of %s (pid %d, %s) ----\n%s\n---- end of log ----\n", p->name,
            (int)p->pid, p->log_path, from);
    free(s);
}

/* Looks for a line containing needle in log[from..]; only complete lines
 * unless final (the writer is gone, a last unterminated line counts). */
static bool find_line(const char *log, size_t from, const char *needle, bool final, char *line_out,
                      size_t cap)
{
    size_t n = strlen(log);
    if (from > n)
        return false;
    const char *p = log + from;
    const char *end = log + n;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL && !final)
            break;
        const char *le = nl ? nl : end;
        size_t ll = (size_t)(le - p);
        size_t nlen = strlen(needle);
        bool hit = false;
        for (size_t i = 0; i + nlen <= ll && !hit; i++)
            hit = memcmp(p + i, needle, nlen) == 0;
        if (hit) {
            if (line_out && cap > 0) {
                size_t c = ll < cap - 1 ? ll : cap - 1;
                memcpy(line_out, p, c);
                line_out[c] = '\0';
            }
            return true;
        }
        if (nl == NULL)
            break;
        p = nl + 1;
    }
    return false;
}

static int wait_in(struct gwt_proc *p, bool out, const char *needle, int timeout_ms, char *line_out,
                   size_t cap)
{
    long long deadline = gwt_now_ms() + timeout_ms;
    off_t from = out && p->out_path[0] ? p->out_from : p->log_from;
    for (;;) {
        bool alive = gwt_proc_alive(p);
        char *log = out ? gwt_out_read(p) : gwt_log_read(p);
        if (log) {
            bool hit = find_line(log, (size_t)from, needle, !alive, line_out, cap);
            free(log);
            if (hit)
                return 0;
        }
        if (!alive)
            return -ESRCH;
        if (gwt_now_ms() >= deadline)
            return -ETIMEDOUT;
        sleep_ms(POLL_STEP_MS);
    }
}

int gwt_wait_log(struct gwt_proc *p, const char *needle, int timeout_ms, char *line_out, size_t cap)
{
    return wait_in(p, false, needle, timeout_ms, line_out, cap);
}

int gwt_wait_out(struct gwt_proc *p, const char *needle, int timeout_ms, char *line_out, size_t cap)
{
    return wait_in(p, true, needle, timeout_ms, line_out, cap);
}

static int decode_status(int st)
{
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return -WTERMSIG(st);
    return -EINVAL;
}

/* SIGKILLs the child and its process group, reaps it (recording how it
 * ended) and forgets it. */
static void kill_and_reap(struct gwt_proc *p)
{
    kill(-p->pid, SIGKILL);
    kill(p->pid, SIGKILL);
    int st;
    if (waitpid(p->pid, &st, 0) == p->pid) {
        p->exited = true;
        p->status = st;
    }
    children_del(p->pid);
}

int gwt_stop(struct gwt_proc *p, int sig, int timeout_ms)
{
    if (p->pid <= 0)
        return -ECHILD;
    p->stopped = true;
    if (!gwt_proc_alive(p)) {
        if (p->exited)
            return decode_status(p->status);
        return -ECHILD;
    }
    kill(p->pid, sig);
    long long deadline = gwt_now_ms() + timeout_ms;
    for (;;) {
        if (!gwt_proc_alive(p)) {
            if (p->exited)
                return decode_status(p->status);
            return -ECHILD;
        }
        if (gwt_now_ms() >= deadline)
            break;
        sleep_ms(POLL_STEP_MS);
    }
    fprintf(stderr, "gwtest: %s (pid %d) ignored signal %d for %d ms: SIGKILL\n", p->name,
            (int)p->pid, sig, timeout_ms);
    kill_and_reap(p);
    return GWT_STOP_KILLED;
}

void gwt_proc_cleanup(struct gwt_proc *p)
{
    if (p->pid > 0 && !p->exited) {
        kill_and_reap(p);
    }
    if (p->log_path[0] && getenv("GWT_KEEP_LOGS") == NULL)
        unlink(p->log_path);
    if (p->out_path[0] && getenv("GWT_KEEP_LOGS") == NULL)
        unlink(p->out_path);
    p->log_path[0] = p->out_path[0] = '\0';
    p->pid = 0;
    /* A struct on a test's stack is gone once the test returns: the
     * teardown must not read it. */
    gwt_untrack(p);
}

int gwt_run(const char *const argv[], const char *const env[], int timeout_ms, char **out,
            char **err)
{
    if (out)
        *out = NULL;
    if (err)
        *err = NULL;
    struct gwt_proc po = {0}, pe = {0};
    int ofd = make_log(po.log_path, sizeof(po.log_path), "run-out");
    if (ofd < 0)
        return ofd;
    int efd = make_log(pe.log_path, sizeof(pe.log_path), "run-err");
    if (efd < 0) {
        close(ofd);
        unlink(po.log_path);
        return efd;
    }
    pid_t pid;
    int rc = spawn_fds(argv, env, ofd, efd, &pid);
    close(ofd);
    close(efd);
    if (rc == 0) {
        struct gwt_proc p = {.pid = pid};
        snprintf(p.name, sizeof(p.name), "%s", argv[0]);
        children_add(pid);
        long long deadline = gwt_now_ms() + timeout_ms;
        while (gwt_proc_alive(&p) && gwt_now_ms() < deadline)
            sleep_ms(POLL_STEP_MS);
        rc = gwt_stop(&p, SIGKILL, 1000);
        if (rc == -SIGKILL)
            rc = GWT_STOP_KILLED;
    }
    if (out)
        *out = gwt_log_read(&po);
    if (err)
        *err = gwt_log_read(&pe);
    unlink(po.log_path);
    unlink(pe.log_path);
    return rc;
}

/* ---- services --------------------------------------------------------- */

static int redis_ping(int port)
{
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (c == NULL)
        return -ENOMEM;
    int rc = -ECONNREFUSED;
    if (!c->err) {
        redisSetTimeout(c, tv);
        redisReply *r = redisCommand(c, "PING");
        if (r && r->type == REDIS_REPLY_STATUS)
            rc = 0;
        if (r)
            freeReplyObject(r);
    }
    redisFree(c);
    return rc;
}

int gwt_redis_start(struct gwt_proc *p, int *port)
{
    int rc = -EADDRINUSE;
    for (int attempt = 0; attempt < 5; attempt++) {
        int pt = gwt_free_port();
        if (pt < 0)
            return pt;
        char ps[16];
        snprintf(ps, sizeof(ps), "%d", pt);
        const char *argv[] = {"redis-server", "--port",           ps,   "--bind",
                              "127.0.0.1",    "--save",           "",   "--appendonly",
                              "no",           "--protected-mode", "no", NULL};
        rc = gwt_spawn(p, argv, NULL);
        if (rc != 0)
            return rc;
        long long deadline = gwt_now_ms() + START_TIMEOUT_MS;
        while (gwt_proc_alive(p) && gwt_now_ms() < deadline) {
            if (redis_ping(pt) == 0) {
                *port = pt;
                return 0;
            }
            sleep_ms(POLL_STEP_MS);
        }
        rc = gwt_proc_alive(p) ? -ETIMEDOUT : -EADDRINUSE;
        gwt_log_dump(p, 2000);
        gwt_proc_cleanup(p);
    }
    return rc;
}

/* Parses the port after the last ':' of a "... listening on host:port" line. */
static int parse_listen_port(const char *line)
{
    const char *c = strrchr(line, ':');
    if (c == NULL)
        return -EPROTO;
    char *end;
    long v = strtol(c + 1, &end, 10);
    if (end == c + 1 || v <= 0 || v > 65535)
        return -EPROTO;
    return (int)v;
}

static int start_and_parse(struct gwt_proc *p, int *port, const char *const argv[],
                           const char *const *base_env, const char *const env[], const char *needle,
                           bool split)
{
    const char *merged[128];
    size_t k = 0;
    for (size_t i = 0; base_env[i] && k < 64; i++)
        merged[k++] = base_env[i];
    for (size_t i = 0; env && env[i] && k < 127; i++)
        merged[k++] = env[i];
    merged[k] = NULL;
    int rc = spawn_common(p, argv, merged, split);
    if (rc != 0)
        return rc;
    char line[512];
    rc = gwt_wait_log(p, needle, START_TIMEOUT_MS, line, sizeof(line));
    if (rc != 0) {
        fprintf(stderr, "gwtest: %s did not log \"%s\" (%s)\n", p->name, needle, strerror(-rc));
        gwt_log_dump(p, 4000);
        return rc;
    }
    int pt = parse_listen_port(line);
    if (pt < 0) {
        fprintf(stderr, "gwtest: cannot parse port from \"%s\"\n", line);
        return pt;
    }
    *port = pt;
    return gwt_wait_port(pt, 2000);
}

int gwt_backend_start(struct gwt_proc *p, int *port, const char *const env[])
{
    const char *argv[] = {GW_BIN_DIR "/backend_app", NULL};
    const char *base[] = {"BACKEND_PORT=0", "BACKEND_HOST", "BACKEND_LOG",
                          "BACKEND_IDLE_TIMEOUT_MS", NULL};
    return start_and_parse(p, port, argv, base, env, "backend_app listening on ", false);
}

/* Hermetic: nothing of the caller's environment configures the gateway
 * (a bare name removes the variable), then the test's values. */
static const char *const gateway_base_env[] = {"GATEWAY_HOST=127.0.0.1",
                                               "GATEWAY_PORT=0",
                                               "GATEWAY_ENV_FILE",
                                               "BACKEND_URL",
                                               "WORKER_THREADS",
                                               "MAX_CONNECTIONS",
                                               "REDIS_URL",
                                               "REDIS_TIMEOUT_MS",
                                               "RATE_LIMIT_REQUESTS",
                                               "RATE_LIMIT_WINDOW_SECONDS",
                                               "RATE_LIMIT_ALGORITHM",
                                               "RATE_LIMIT_KEY",
                                               "RATE_LIMIT_KEY_PREFIX",
                                               "RATE_LIMIT_FAILURE_MODE",
                                               "RATE_LIMIT_DRY_RUN",
                                               "RATE_LIMIT_HEADERS",
                                               "TRUSTED_PROXIES",
                                               "MAX_CONCURRENT_REQUESTS",
                                               "MAX_QUEUE_LENGTH",
                                               "QUEUE_TIMEOUT_MS",
                                               "UPSTREAM_CONNECT_TIMEOUT_MS",
                                               "UPSTREAM_TIMEOUT_MS",
                                               "UPSTREAM_KEEPALIVE",
                                               "UPSTREAM_RESOLVE_INTERVAL_MS",
                                               "CLIENT_TIMEOUT_MS",
                                               "MAX_HEADER_BYTES",
                                               "MAX_BODY_BYTES",
                                               "PRESERVE_HOST",
                                               "HEALTH_PATH",
                                               "STATS_PATH",
                                               "METRICS_PATH",
                                               "SHUTDOWN_TIMEOUT_MS",
                                               "LOG_LEVEL",
                                               "ACCESS_LOG",
                                               "ADMIN_HOST",
                                               "ADMIN_PORT",
                                               "ADMIN_TOKEN",
                                               NULL};

int gwt_gateway_run(const char *const args[], const char *const env[], int timeout_ms, char **out,
                    char **err)
{
    const char *argv[32] = {GW_BIN_DIR "/gateway"};
    size_t k = 1;
    for (size_t i = 0; args && args[i] && k < 31; i++)
        argv[k++] = args[i];
    argv[k] = NULL;
    const char *merged[128];
    size_t m = 0;
    for (size_t i = 0; gateway_base_env[i] && m < 64; i++)
        merged[m++] = gateway_base_env[i];
    for (size_t i = 0; env && env[i] && m < 127; i++)
        merged[m++] = env[i];
    merged[m] = NULL;
    return gwt_run(argv, merged, timeout_ms, out, err);
}

/* Runs wrapper[0..] (may be NULL), then the gateway binary, then extra_args. */
static int gateway_start(struct gwt_proc *p, int *port, const char *const wrapper[],
                         const char *const env[], const char *const extra_args[], bool split)
{
    const char *argv[48];
    size_t k = 0;
    for (size_t i = 0; wrapper && wrapper[i] && k < 15; i++)
        argv[k++] = wrapper[i];
    argv[k++] = GW_BIN_DIR "/gateway";
    for (size_t i = 0; extra_args && extra_args[i] && k < 47; i++)
        argv[k++] = extra_args[i];
    argv[k] = NULL;
    return start_and_parse(p, port, argv, gateway_base_env, env, "gateway listening on ", split);
}

int gwt_gateway_start_wrapped(struct gwt_proc *p, int *port, const char *const wrapper[],
                              const char *const env[])
{
    return gateway_start(p, port, wrapper, env, NULL, false);
}

int gwt_gateway_start_args(struct gwt_proc *p, int *port, const char *const env[],
                           const char *const extra_args[])
{
    return gateway_start(p, port, NULL, env, extra_args, false);
}

int gwt_gateway_start_split(struct gwt_proc *p, int *port, const char *const env[])
{
    return gateway_start(p, port, NULL, env, NULL, true);
}

int gwt_gateway_start(struct gwt_proc *p, int *port, const char *const env[])
{
    return gwt_gateway_start_args(p, port, env, NULL);
}

/* ---- raw HTTP client -------------------------------------------------- */

int gwt_connect(int port)
{
    int fd = connect_once(port);
    if (fd < 0)
        return fd;
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

int gwt_accept_timed(int lfd)
{
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

long gwt_read_head(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t got = recv(fd, buf + n, 1, 0);
        if (got <= 0)
            return -1;
        n++;
        buf[n] = '\0';
        if (n >= 4 && memcmp(buf + n - 4, "\r\n\r\n", 4) == 0)
            return (long)n;
    }
    return -1;
}

int gwt_send_all(int fd, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN ? -ETIMEDOUT : -errno;
        }
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

int gwt_send_str(int fd, const char *s)
{
    return gwt_send_all(fd, s, strlen(s));
}

/* Growable byte string. */
struct sbuf {
    char *p;
    size_t len, cap;
};

static int sbuf_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->len + n + 1)
            nc *= 2;
        char *t = realloc(b->p, nc);
        if (t == NULL)
            return -ENOMEM;
        b->p = t;
        b->cap = nc;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static char *sbuf_take(struct sbuf *b)
{
    char *p = b->p ? b->p : strdup("");
    b->p = NULL;
    b->len = b->cap = 0;
    return p;
}

struct rctx {
    struct gwt_response *r;
    struct sbuf field, value, reason, body;
    bool head;
    bool headers_done;
    bool complete;
    bool oom;
    size_t hcap;
};

static struct rctx *ctx_of(llhttp_t *h)
{
    return h->data;
}

static int on_status(llhttp_t *h, const char *at, size_t n)
{
    struct rctx *c = ctx_of(h);
    c->oom |= sbuf_add(&c->reason, at, n) != 0;
    return 0;
}

static int on_header_field(llhttp_t *h, const char *at, size_t n)
{
    struct rctx *c = ctx_of(h);
    c->oom |= sbuf_add(&c->field, at, n) != 0;
    return 0;
}

static int on_header_value(llhttp_t *h, const char *at, size_t n)
{
    struct rctx *c = ctx_of(h);
    c->oom |= sbuf_add(&c->value, at, n) != 0;
    return 0;
}

static int on_header_value_complete(llhttp_t *h)
{
    struct rctx *c = ctx_of(h);
    struct gwt_response *r = c->r;
    if (r->header_count == c->hcap) {
        size_t nc = c->hcap ? c->hcap * 2 : 16;
        char **nn = realloc(r->header_names, nc * sizeof(*nn));
        if (nn == NULL)
            return -1;
        r->header_names = nn;
        char **nv = realloc(r->header_values, nc * sizeof(*nv));
        if (nv == NULL)
            return -1;
        r->header_values = nv;
        c->hcap = nc;
    }
    r->header_names[r->header_count] = sbuf_take(&c->field);
    r->header_values[r->header_count] = sbuf_take(&c->value);
    r->header_count++;
    return 0;
}

static int on_headers_complete(llhttp_t *h)
{
    struct rctx *c = ctx_of(h);
    c->headers_done = true;
    c->r->status = h->status_code;
    c->r->http_major = h->http_major;
    c->r->http_minor = h->http_minor;
    c->r->chunked = (h->flags & F_CHUNKED) != 0;
    /* 1: the message has no body (a response to HEAD). */
    return c->head ? 1 : 0;
}

static int on_body(llhttp_t *h, const char *at, size_t n)
{
    struct rctx *c = ctx_of(h);
    c->oom |= sbuf_add(&c->body, at, n) != 0;
    return 0;
}

static int on_chunk_header(llhttp_t *h)
{
    if (h->content_length > 0)
        ctx_of(h)->r->chunk_count++;
    return 0;
}

static int on_message_complete(llhttp_t *h)
{
    struct rctx *c = ctx_of(h);
    c->complete = true;
    c->r->keep_alive = llhttp_should_keep_alive(h) != 0;
    /* Stop right after this message so the next one stays in the socket. */
    return HPE_PAUSED;
}

static void finish_response(struct rctx *c, struct sbuf *raw)
{
    struct gwt_response *r = c->r;
    r->reason = sbuf_take(&c->reason);
    r->body_len = c->body.len;
    r->body = sbuf_take(&c->body);
    free(c->field.p);
    free(c->value.p);
    /* Keep the head only (up to and including the blank line). */
    if (raw->p) {
        char *e = strstr(raw->p, "\r\n\r\n");
        if (e && c->headers_done)
            e[4] = '\0';
    }
    r->raw_head = sbuf_take(raw);
}

int gwt_read_response(int fd, struct gwt_response *r, bool request_was_head)
{
    memset(r, 0, sizeof(*r));
    struct rctx c = {.r = r, .head = request_was_head};
    llhttp_settings_t s;
    llhttp_settings_init(&s);
    s.on_status = on_status;
    s.on_header_field = on_header_field;
    s.on_header_value = on_header_value;
    s.on_header_value_complete = on_header_value_complete;
    s.on_headers_complete = on_headers_complete;
    s.on_body = on_body;
    s.on_chunk_header = on_chunk_header;
    s.on_message_complete = on_message_complete;
    llhttp_t h;
    llhttp_init(&h, HTTP_RESPONSE, &s);
    h.data = &c;

    struct sbuf raw = {0};
    static const size_t bufsz = 65536;
    char *buf = malloc(bufsz);
    if (buf == NULL)
        return -ENOMEM;
    int rc = 0;
    size_t consumed_total = 0;
    for (;;) {
        ssize_t n = recv(fd, buf, bufsz, MSG_PEEK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            rc = -ETIMEDOUT;
            break;
        }
        if (n < 0 && errno != ECONNRESET) {
            rc = -errno;
            break;
        }
        if (n <= 0) {
            /* EOF (or reset): ends a read-until-close body, else an error. */
            r->conn_closed = true;
            if (consumed_total == 0) {
                rc = -ECONNRESET;
                break;
            }
            llhttp_errno_t e = llhttp_finish(&h);
            rc = (c.complete && (e == HPE_OK || e == HPE_PAUSED)) ? 0 : -EPROTO;
            break;
        }
        bool had_head = c.headers_done;
        llhttp_errno_t e = llhttp_execute(&h, buf, (size_t)n);
        size_t used;
        if (e == HPE_OK) {
            used = (size_t)n;
        } else if (e == HPE_PAUSED && c.complete) {
            used = (size_t)(llhttp_get_error_pos(&h) - buf);
        } else {
            sbuf_add(&raw, buf, (size_t)n);
            fprintf(stderr, "gwtest: response parse error %s (%s)\n", llhttp_errno_name(e),
                    llhttp_get_error_reason(&h));
            rc = -EPROTO;
            break;
        }
        if (!had_head && sbuf_add(&raw, buf, used) != 0)
            c.oom = true;
        /* Consume exactly what the parser used (it is already buffered). */
        size_t left = used;
        while (left > 0) {
            ssize_t g = recv(fd, buf, left, 0);
            if (g < 0 && errno == EINTR)
                continue;
            if (g <= 0) {
                rc = -EIO;
                break;
            }
            left -= (size_t)g;
        }
        consumed_total += used;
        if (rc != 0 || c.complete)
            break;
    }
    free(buf);
    r->wire_bytes = consumed_total;
    if (c.oom)
        rc = -ENOMEM;
    finish_response(&c, &raw);
    return rc;
}

const char *gwt_header(const struct gwt_response *r, const char *name)
{
    for (size_t i = 0; i < r->header_count; i++) {
        if (strcasecmp(r->header_names[i], name) == 0)
            return r->header_values[i];
    }
    return NULL;
}

int gwt_header_count(const struct gwt_response *r, const char *name)
{
    int n = 0;
    for (size_t i = 0; i < r->header_count; i++)
        n += strcasecmp(r->header_names[i], name) == 0;
    return n;
}

void gwt_response_free(struct gwt_response *r)
{
    for (size_t i = 0; i < r->header_count; i++) {
        free(r->header_names[i]);
        free(r->header_values[i]);
    }
    free(r->header_names);
    free(r->header_values);
    free(r->reason);
    free(r->body);
    free(r->raw_head);
    memset(r, 0, sizeof(*r));
}

int gwt_http(int port, const char *raw_request, struct gwt_response *r)
{
    memset(r, 0, sizeof(*r));
    int fd = gwt_connect(port);
    if (fd < 0)
        return fd;
    int rc = gwt_send_str(fd, raw_request);
    if (rc == 0)
        rc = gwt_read_response(fd, r, strncmp(raw_request, "HEAD ", 5) == 0);
    close(fd);
    return rc;
}

int gwt_get(int port, const char *target, struct gwt_response *r)
{
    char req[2048];
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
             target);
    return gwt_http(port, req, r);
}

bool gwt_peer_closed(int fd, int timeout_ms)
{
    long long deadline = gwt_now_ms() + timeout_ms;
    char buf[4096];
    for (;;) {
        long long left = deadline - gwt_now_ms();
        if (left <= 0)
            return false;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int pr = poll(&pfd, 1, (int)left);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            return false;
        ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n == 0)
            return true;
        if (n < 0) {
            if (errno == ECONNRESET)
                return true;
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return false;
        }
    }
}

json_t *gwt_json(const struct gwt_response *r)
{
    if (r->body == NULL)
        return NULL;
    json_error_t err;
    return json_loadb(r->body, r->body_len, 0, &err);
}

long long gwt_json_int(json_t *obj, const char *path, long long def)
{
    char key[128];
    const char *p = path;
    json_t *cur = obj;
    while (cur && *p) {
        const char *dot = strchr(p, '.');
        size_t kl = dot ? (size_t)(dot - p) : strlen(p);
        if (kl >= sizeof(key))
            return def;
        memcpy(key, p, kl);
        key[kl] = '\0';
        cur = json_is_object(cur) ? json_object_get(cur, key) : NULL;
        p = dot ? dot + 1 : p + kl;
    }
    if (cur && json_is_integer(cur))
        return json_integer_value(cur);
    if (cur && json_is_real(cur))
        return (long long)json_real_value(cur);
    return def;
}

/* ---- redis ------------------------------------------------------------ */

static redisContext *redis_open(int port)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (c == NULL)
        return NULL;
    if (c->err) {
        redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    return c;
}

long long gwt_redis_ttl(int port, const char *key)
{
    redisContext *c = redis_open(port);
    if (c == NULL)
        return GWT_REDIS_ERR;
    long long v = GWT_REDIS_ERR;
    redisReply *r = redisCommand(c, "TTL %s", key);
    if (r && r->type == REDIS_REPLY_INTEGER)
        v = r->integer;
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return v;
}

int gwt_redis_keys(int port, const char *pattern, char ***keys)
{
    *keys = NULL;
    redisContext *c = redis_open(port);
    if (c == NULL)
        return -ECONNREFUSED;
    int rc = -EPROTO;
    redisReply *r = redisCommand(c, "KEYS %s", pattern);
    if (r && r->type == REDIS_REPLY_ARRAY) {
        char **v = calloc(r->elements + 1, sizeof(*v));
        if (v == NULL) {
            rc = -ENOMEM;
        } else {
            for (size_t i = 0; i < r->elements; i++)
                v[i] = strndup(r->element[i]->str ? r->element[i]->str : "", r->element[i]->len);
            *keys = v;
            rc = (int)r->elements;
        }
    }
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return rc;
}

int gwt_redis_cmd(int port, const char *cmd)
{
    redisContext *c = redis_open(port);
    if (c == NULL)
        return -ECONNREFUSED;
    const char *argv[16];
    size_t argl[16];
    int argc = 0;
    char *copy = strdup(cmd);
    for (char *save = NULL, *t = copy ? strtok_r(copy, " ", &save) : NULL; t && argc < 16;
         t = strtok_r(NULL, " ", &save)) {
        argv[argc] = t;
        argl[argc++] = strlen(t);
    }
    redisReply *r = argc ? redisCommandArgv(c, argc, argv, argl) : NULL;
    free(copy);
    int rc = (r && r->type != REDIS_REPLY_ERROR) ? 0 : -EPROTO;
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return rc;
}

int gwt_api_key_get(int port, const char *key)
{
    char raw[256];
    snprintf(raw, sizeof(raw),
             "GET /users/1 HTTP/1.1\r\nHost: t\r\nX-Api-Key: %s\r\nConnection: close\r\n\r\n", key);
    struct gwt_response r = {0};
    int status = gwt_http(port, raw, &r) == 0 ? r.status : -1;
    gwt_response_free(&r);
    return status;
}
