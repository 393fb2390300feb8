/*
 * backend_app entry point: reads BACKEND_* from the environment, listens,
 * accepts on the main thread and hands each client socket to its own thread
 * (capped), joining threads as they finish. SIGTERM/SIGINT arrive through a
 * signalfd; shutdown wakes every connection thread, joins them, exits 0.
 */
#include "backend_app.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS         1024          /* beyond, new connections are closed at accept */
#define THREAD_STACK      (1024 * 1024) /* bytes per connection thread */
#define SEND_TIMEOUT_S    300           /* a client that reads nothing this long is dropped */
#define DRAIN_TIMEOUT_MS  3000          /* shutdown waits this long for threads to end */
#define EMFILE_BACKOFF_MS 100           /* accept pause when out of descriptors */

struct backend_config backend_cfg = {.stop_fd = -1};

/* Locking: conns_lock guards conns, nconns and finished. Connection threads
 * take it once, in backend_conn_finish; main takes it to count, register,
 * reap, and to shut every live socket down at exit. A socket is closed only
 * under the lock, so main's shutdown() never reaches a reused number. */
static pthread_mutex_t conns_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t conns_empty = PTHREAD_COND_INITIALIZER;
static struct backend_conn *conns;    /* live connections, newest first */
static size_t nconns;                 /* entries in conns */
static struct backend_conn *finished; /* ended threads to join, linked by next */
static int stop_wfd = -1;             /* write end of the backend_cfg.stop_fd pipe */
static int reap_fds[2] = {-1, -1};    /* a finishing thread writes a byte to wake main */

static void register_conn(struct backend_conn *c)
{
    pthread_mutex_lock(&conns_lock);
    c->prev = NULL;
    c->next = conns;
    if (conns)
        conns->prev = c;
    conns = c;
    nconns++;
    pthread_mutex_unlock(&conns_lock);
}

/* Caller holds conns_lock. */
static void unlink_conn(struct backend_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (--nconns == 0)
        pthread_cond_broadcast(&conns_empty);
}

void backend_conn_finish(struct backend_conn *c)
{
    pthread_mutex_lock(&conns_lock);
    unlink_conn(c);
    close(c->fd);
    c->fd = -1;
    c->prev = NULL;
    c->next = finished;
    finished = c;
    pthread_mutex_unlock(&conns_lock);
    char b = 1;
    /* Pipe full means main is already due to reap. */
    ssize_t GW_UNUSED w = write(reap_fds[1], &b, 1);
}

/* Joins and frees the threads that have finished. Main thread only. */
static void reap(void)
{
    char sink[256];
    while (read(reap_fds[0], sink, sizeof(sink)) > 0)
        ;
    pthread_mutex_lock(&conns_lock);
    struct backend_conn *list = finished;
    finished = NULL;
    pthread_mutex_unlock(&conns_lock);
    while (list) {
        struct backend_conn *next = list->next;
        pthread_join(list->tid, NULL);
        free(list);
        list = next;
    }
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: backend_app [--help | --version]\n"
            "Demo and test upstream of the gateway. Configuration from the environment:\n"
            "  BACKEND_HOST             listen address (default 127.0.0.1)\n"
            "  BACKEND_PORT             listen port, 0 = kernel picks (default 8001)\n"
            "  BACKEND_LOG              on/off: one stderr line per request (default off)\n"
            "  BACKEND_IDLE_TIMEOUT_MS  close a connection idle this long (default 120000)\n"
            "Prints 'backend_app listening on <host>:<port>' on stderr once ready.\n"
            "Endpoints (HEAD works wherever GET does):\n"
            "  GET  /                    JSON greeting\n"
            "  GET  /users/{id}          {\"id\":<id>,\"name\":\"User <id>\"}, 404 unless numeric\n"
            "  ANY  /echo                method, target, version, headers, body length+sha256\n"
            "  ANY  /slow?ms=N           answers after N ms (default 1000, at most 60000; stops if "
            "the client hangs up)\n"
            "  ANY  /status/{code}       that status (200-599) with a JSON body\n"
            "  ANY  /stream?chunks=N&size=B[&delay_ms=D][&close=1]\n"
            "                            N chunks of B bytes (close=1: close-delimited)\n"
            "  ANY  /bytes?n=N           N bytes with Content-Length\n"
            "  GET  /stats               {\"requests\",\"max_concurrency\",\"in_flight\"}\n"
            "  POST /stats/reset         zero the counters (/stats* is never counted)\n"
            "  ANY  /close               partial response, then close\n"
            "  ANY  /noresponse          reads the request, never answers\n");
}

static bool parse_bool(const char *v, bool *out)
{
    static const char *yes[] = {"on", "true", "1"}, *no[] = {"off", "false", "0"};
    for (size_t i = 0; i < GW_ARRAY_LEN(yes); i++) {
        if (strcmp(v, yes[i]) == 0 || strcmp(v, no[i]) == 0) {
            *out = strcmp(v, yes[i]) == 0;
            return true;
        }
    }
    return false;
}

static bool parse_long(const char *v, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || end == v || *end || n < min || n > max)
        return false;
    *out = n;
    return true;
}

/* Reads every BACKEND_* variable; prints one line per bad value. Returns the
 * number of errors. */
static int load_config(void)
{
    int errors = 0;
    const char *v;
    long n;
    backend_cfg.host = "127.0.0.1";
    backend_cfg.port = 8001;
    backend_cfg.idle_timeout_ms = 120000;
    if ((v = getenv("BACKEND_HOST")) && *v)
        backend_cfg.host = v;
    if ((v = getenv("BACKEND_PORT"))) {
        if (parse_long(v, 0, 65535, &n))
            backend_cfg.port = (unsigned)n;
        else
            errors +=
                fprintf(stderr, "backend_app: BACKEND_PORT=%s: not a port (0-65535)\n", v) > 0;
    }
    if ((v = getenv("BACKEND_LOG")) && !parse_bool(v, &backend_cfg.log))
        errors += fprintf(stderr, "backend_app: BACKEND_LOG=%s: expected on/off\n", v) > 0;
    if ((v = getenv("BACKEND_IDLE_TIMEOUT_MS"))) {
        if (parse_long(v, 1, 86400000, &n))
            backend_cfg.idle_timeout_ms = (int)n;
        else
            errors +=
                fprintf(stderr, "backend_app: BACKEND_IDLE_TIMEOUT_MS=%s: expected 1-86400000\n",
                        v) > 0;
    }
    return errors;
}

/* Returns a listening socket, or -1 after printing why. */
static int listen_on(const char *host, unsigned port, unsigned *bound_port)
{
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%u", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "backend_app: BACKEND_HOST=%s: %s\n", host, gai_strerror(rc));
        return -1;
    }
    int fd = -1, err = 0;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
            err = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        fprintf(stderr, "backend_app: cannot listen on %s:%u: %s\n", host, port, strerror(err));
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    *bound_port = port;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET)
            *bound_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
            *bound_port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return fd;
}

/* Hands an accepted socket to a new thread; closes it when at the
 * cap or out of resources. */
static void start_conn(int fd, pthread_attr_t *attr)
{
    struct backend_conn *c = NULL;
    pthread_mutex_lock(&conns_lock);
    bool full = nconns >= MAX_CONNS;
    pthread_mutex_unlock(&conns_lock);
    if (full)
        goto fail;
    c = calloc(1, sizeof(*c));
    if (!c)
        goto fail;
    c->fd = fd;
    c->rbuf = malloc(BACKEND_READ_BUF);
    c->sha = EVP_MD_CTX_new();
    if (!c->rbuf || !c->sha)
        goto fail;
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct timeval tv = {.tv_sec = SEND_TIMEOUT_S};
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    register_conn(c);
    if (pthread_create(&c->tid, attr, backend_conn_run, c) != 0) {
        pthread_mutex_lock(&conns_lock);
        unlink_conn(c);
        pthread_mutex_unlock(&conns_lock);
        goto fail;
    }
    return;
fail:
    if (c) {
        EVP_MD_CTX_free(c->sha);
        free(c->rbuf);
        free(c);
    }
    close(fd);
}

/* Wakes every connection thread and waits (bounded) until all are gone.
 * Returns the number still running. */
static size_t drain(void)
{
    char b = 1;
    ssize_t GW_UNUSED w = write(stop_wfd, &b, 1); /* never read: stays readable */
    pthread_mutex_lock(&conns_lock);
    for (struct backend_conn *c = conns; c; c = c->next)
        (void)shutdown(c->fd, SHUT_RDWR);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += DRAIN_TIMEOUT_MS / 1000;
    while (nconns > 0 && pthread_cond_timedwait(&conns_empty, &conns_lock, &until) == 0)
        ;
    size_t left = nconns;
    pthread_mutex_unlock(&conns_lock);
    reap();
    return left;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("backend_app %s\n", GW_VERSION);
            return 0;
        }
        fprintf(stderr, "backend_app: unknown argument '%s'\n", argv[i]);
        usage(stderr);
        return 2;
    }
    if (load_config() > 0)
        return 2;

    signal(SIGPIPE, SIG_IGN);
    sigset_t stop_sigs;
    sigemptyset(&stop_sigs);
    sigaddset(&stop_sigs, SIGTERM);
    sigaddset(&stop_sigs, SIGINT);
    /* Blocked before any thread exists, so only the signalfd sees them. */
    pthread_sigmask(SIG_BLOCK, &stop_sigs, NULL);
    int sig_fd = signalfd(-1, &stop_sigs, SFD_CLOEXEC);
    int pipe_fds[2];
    if (sig_fd < 0 || pipe2(pipe_fds, O_CLOEXEC) != 0 ||
        pipe2(reap_fds, O_CLOEXEC | O_NONBLOCK) != 0) {
        fprintf(stderr, "backend_app: signalfd/pipe: %s\n", strerror(errno));
        return 1;
    }
    backend_cfg.stop_fd = pipe_fds[0];
    stop_wfd = pipe_fds[1];
    backend_routes_init();

    unsigned port;
    int lfd = listen_on(backend_cfg.host, backend_cfg.port, &port);
    if (lfd < 0)
        return 1;
    bool v6 = strchr(backend_cfg.host, ':') != NULL;
    fprintf(stderr, "backend_app listening on %s%s%s:%u\n", v6 ? "[" : "", backend_cfg.host,
            v6 ? "]" : "", port);
    fflush(stderr);

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, THREAD_STACK);

    for (;;) {
        struct pollfd pfd[3] = {{.fd = sig_fd, .events = POLLIN},
                                {.fd = reap_fds[0], .events = POLLIN},
                                {.fd = lfd, .events = POLLIN}};
        if (poll(pfd, 3, -1) < 0 && errno != EINTR)
            break;
        if (pfd[0].revents)
            break;
        if (pfd[1].revents)
            reap();
        if (!pfd[2].revents)
            continue;
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0) {
            start_conn(fd, &attr);
        } else if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            /* Out of resources: pause accepting instead of spinning on the backlog. */
            struct pollfd sp = {.fd = sig_fd, .events = POLLIN};
            if (poll(&sp, 1, EMFILE_BACKOFF_MS) > 0)
                break;
        }
    }

    atomic_store(&backend_cfg.stopping, true);
    close(lfd);
    size_t left = drain();
    pthread_attr_destroy(&attr);
    if (left > 0) {
        /* Never seen in practice: skip atexit cleanup rather than race it. */
        fprintf(stderr, "backend_app: %zu connections still open at exit\n", left);
        _exit(0);
    }
    return 0;
}
