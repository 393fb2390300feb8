/*
 * gateway: command line entry point. Parses flags, loads the configuration
 * from the environment (and --env-file), then runs the server. Exit codes:
 * 0 clean (or drained), 1 runtime failure, 2 bad configuration or usage.
 */
#include "gw/common.h"
#include "gw/config.h"
#include "gw/log.h"
#include "gw/net.h"
#include "gw/rules.h"
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: gateway [--env-file PATH] [--check-config | --healthcheck[=live|ready]]\n"
        "       gateway [--env-file PATH] --check-rules PATH\n"
        "       gateway --version | --help | --print-env-example\n"
        "\n"
        "A rate-limiting, traffic-shaping HTTP/1.1 reverse proxy. Configuration\n"
        "comes from environment variables (see gateway.env.example).\n"
        "\n"
        "  --env-file PATH      load KEY=VALUE lines first (the real environment wins);\n"
        "                       without it, the file GATEWAY_ENV_FILE names, if set\n"
        "  --check-config       validate, print the effective configuration as JSON, exit\n"
        "  --check-rules PATH   validate a rules file, print its normalised form as JSON, exit\n"
        "  --healthcheck[=live|ready]\n"
        "                       GET the health endpoint on GATEWAY_PORT, exit 0 on 200:\n"
        "                       live (default) HEALTH_PATH?probe=live, ready HEALTH_PATH\n"
        "  --print-env-example  print gateway.env.example generated from the defaults\n"
        "  --version            print the version\n");
}

/* The checker's own waits: the Dockerfile's HEALTHCHECK --timeout must
 * exceed their sum (test_container.c reads these two lines). */
#define GW_HEALTHCHECK_CONNECT_MS 2000
#define GW_HEALTHCHECK_READ_MS    2000

/* GETs HEALTH_PATH on the configured port over loopback (the container
 * HEALTHCHECK: the image has no curl): with ready, the readiness probe
 * (backend and Redis); otherwise the liveness probe (?probe=live: the
 * process serves). 0 on 200, 1 otherwise. The connect and the whole
 * response are each bounded in time. */
static int healthcheck(const struct gw_config *cfg, bool ready)
{
    const char *host = cfg->gateway_host;
    if (strcmp(host, "0.0.0.0") == 0)
        host = "127.0.0.1";
    else if (strcmp(host, "::") == 0)
        host = "::1";
    struct sockaddr_storage ss;
    socklen_t len;
    if (gw_net_resolve(host, cfg->gateway_port, &ss, &len) != 0)
        return 1;
    int fd = gw_net_connect(&ss, len);
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int rc = fd < 0                                        ? fd
             : poll(&p, 1, GW_HEALTHCHECK_CONNECT_MS) != 1 ? -ETIMEDOUT
                                                           : gw_net_connect_result(fd);
    if (rc != 0) {
        printf("unhealthy: connect to %s:%d: %s\n", host, cfg->gateway_port, strerror(-rc));
        if (fd >= 0)
            close(fd);
        return 1;
    }
    char target[300];
    snprintf(target, sizeof(target), "%s%s", cfg->health_path, ready ? "" : "?probe=live");
    char req[512];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                     "User-Agent: gateway-healthcheck\r\n\r\n",
                     target);
    if (n < 0 || (size_t)n >= sizeof(req) || send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        close(fd);
        return 1;
    }
    /* Connection: close: read to EOF, bounded in size and in total time. */
    char buf[2048];
    size_t got = 0;
    int64_t deadline = (int64_t)gw_now_ms() + GW_HEALTHCHECK_READ_MS;
    while (got < sizeof(buf) - 1) {
        int64_t left = deadline - (int64_t)gw_now_ms();
        p.events = POLLIN;
        if (left <= 0 || poll(&p, 1, (int)left) != 1)
            break;
        ssize_t r = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    buf[got] = '\0';
    bool ok = got >= 12 && strncmp(buf, "HTTP/1.", 7) == 0 && strncmp(buf + 9, "200", 3) == 0;
    if (ok) {
        printf("healthy\n");
    } else if (got >= 12 && strncmp(buf, "HTTP/1.", 7) == 0) {
        /* Say why: the status and the health body ("redis", "backend"). */
        const char *body = strstr(buf, "\r\n\r\n");
        body = body ? body + 4 : "";
        size_t blen = strcspn(body, "\r\n");
        printf("unhealthy: %s answered %.3s: %.*s\n", target, buf + 9, (int)blen, body);
    } else {
        printf("unhealthy: no HTTP answer from %s:%d within %d ms\n", host, cfg->gateway_port,
               GW_HEALTHCHECK_READ_MS);
    }
    return ok ? 0 : 1;
}

/* A parent may start us with stdin, stdout or stderr closed. The first
 * sockets would then take descriptor 1 or 2 and access-log or diagnostic
 * lines would go into a Redis connection or a client socket: point any
 * closed one at /dev/null first. */
static void ensure_stdio(void)
{
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
            continue;
        int n = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
        if (n >= 0 && n != fd) {
            dup2(n, fd);
            close(n);
        }
    }
}

/* "name PATH" or "name=PATH" at argv[*i]: returns 1 with *out set (and *i
 * moved past PATH), 0 when argv[*i] is not this flag, -1 (reported) when
 * PATH is missing. */
static int path_flag(int argc, char **argv, int *i, const char *name, const char **out)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0 || (a[n] != '\0' && a[n] != '='))
        return 0;
    if (a[n] == '=') {
        *out = a + n + 1;
        return 1;
    }
    if (*i + 1 >= argc) {
        fprintf(stderr, "gateway: %s needs a PATH\n", name);
        return -1;
    }
    *out = argv[++*i];
    return 1;
}

/* Loads RATE_LIMIT_RULES_FILE when set (SPEC.md §10) so that a bad file is
 * a start-up error like a bad variable; every error is one "config error:"
 * line on stderr. Returns 0 with *out the rules (NULL without a file; the
 * caller puts them), or the number of errors. */
static int load_rules_file(const struct gw_config *cfg, struct gw_rules **out)
{
    *out = NULL;
    if (cfg->rate_limit_rules_file == NULL)
        return 0;
    char prefix[64 + 4096];
    snprintf(prefix, sizeof(prefix),
             "config error: RATE_LIMIT_RULES_FILE=%s: ", cfg->rate_limit_rules_file);
    int rc = gw_rules_load_file(cfg->rate_limit_rules_file, cfg, out, stderr, prefix);
    if (rc == -ENOMEM)
        fprintf(stderr, "%sout of memory\n", prefix);
    return rc < 0 ? 1 : rc;
}

/* --check-rules PATH: the normalised form on stdout and exit 0, or one
 * line per error on stderr and exit 2 (SPEC.md §10). The defaults the file
 * leaves to the environment (algorithm, key) come from cfg. */
static int check_rules(const char *path, const struct gw_config *cfg)
{
    struct gw_rules *rules = NULL;
    int rc = gw_rules_load_file(path, cfg, &rules, stderr, NULL);
    if (rc != 0) {
        if (rc == -ENOMEM)
            fprintf(stderr, "gateway: out of memory\n");
        return 2;
    }
    rc = gw_rules_print_json(rules, stdout);
    gw_rules_put(rules);
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    ensure_stdio();
    const char *env_file = NULL, *rules_path = NULL;
    bool check = false, health = false, ready = false;
    int flag;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--version") == 0) {
            printf("gateway %s\n", GW_VERSION);
            return 0;
        } else if (strcmp(a, "--print-env-example") == 0) {
            return gw_config_print_env_example(stdout) == 0 ? 0 : 1;
        } else if (strcmp(a, "--check-config") == 0) {
            check = true;
        } else if (strcmp(a, "--healthcheck") == 0 || strcmp(a, "--healthcheck=live") == 0) {
            health = true;
            ready = false;
        } else if (strcmp(a, "--healthcheck=ready") == 0) {
            health = true;
            ready = true;
        } else if (strncmp(a, "--healthcheck=", 14) == 0) {
            fprintf(stderr, "gateway: --healthcheck=%s: want live or ready\n", a + 14);
            return 2;
        } else if ((flag = path_flag(argc, argv, &i, "--check-rules", &rules_path)) != 0 ||
                   (flag = path_flag(argc, argv, &i, "--env-file", &env_file)) != 0) {
            if (flag < 0)
                return 2;
        } else {
            fprintf(stderr, "gateway: unknown argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    /* GATEWAY_ENV_FILE names the file for every mode (a container's
     * HEALTHCHECK reads what the server read); --env-file wins. */
    const char *env_from = "--env-file";
    if (!env_file && getenv("GATEWAY_ENV_FILE") && *getenv("GATEWAY_ENV_FILE")) {
        env_file = getenv("GATEWAY_ENV_FILE");
        env_from = "GATEWAY_ENV_FILE";
    }
    if (env_file) {
        int rc = gw_config_load_env_file(env_file, stderr);
        if (rc) {
            fprintf(stderr, "gateway: %s %s: %s\n", env_from, env_file,
                    rc == -EINVAL ? "malformed lines (see above)" : strerror(-rc));
            return 2;
        }
    }
    struct gw_config cfg;
    int errors = gw_config_load(&cfg, NULL, NULL, stderr);
    if (errors) {
        fprintf(stderr, "gateway: %d configuration error%s; not starting\n", errors,
                errors == 1 ? "" : "s");
        gw_config_deinit(&cfg);
        return 2;
    }
    if (rules_path != NULL) {
        int rc = check_rules(rules_path, &cfg);
        gw_config_deinit(&cfg);
        return rc;
    }
    struct gw_rules *file_rules = NULL;
    if (!health) {
        errors = load_rules_file(&cfg, &file_rules);
        if (errors) {
            fprintf(stderr, "gateway: %d error%s in RATE_LIMIT_RULES_FILE; not starting\n", errors,
                    errors == 1 ? "" : "s");
            gw_config_deinit(&cfg);
            return 2;
        }
    }
    if (check || health) {
        gw_rules_put(file_rules);
        file_rules = NULL;
    }
    if (check) {
        int rc = gw_config_print_json(&cfg, stdout);
        gw_config_deinit(&cfg);
        return rc == 0 ? 0 : 1;
    }
    if (health) {
        int rc = healthcheck(&cfg, ready);
        gw_config_deinit(&cfg);
        return rc;
    }
    gw_log_set_level(cfg.log_level);
    if (file_rules != NULL)
        gw_info("RATE_LIMIT_RULES_FILE %s: rules version %s, %zu limits", cfg.rate_limit_rules_file,
                file_rules->version, file_rules->limit_count);
    /* SIGPIPE: a peer that vanished is an I/O error, not a reason to die.
     * SIGUSR1/SIGUSR2 have no use yet; their default action would end the
     * process (SPEC.md §7: ignored). */
    signal(SIGPIPE, SIG_IGN);
    signal(SIGUSR1, SIG_IGN);
    signal(SIGUSR2, SIG_IGN);
    /* Block the shutdown signals before any thread starts: every thread
     * inherits the mask and the main thread takes them with sigwait. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    int code = gw_server_run(&cfg, file_rules); /* takes the rules' reference */
    gw_config_deinit(&cfg);
    return code;
}
