/* Acceptor thread: accept4, pick a worker, hand over (see acceptor.h). */
#include "acceptor.h"

#include "gw/log.h"
#include "gw/net.h"
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define EMFILE_PAUSE_MS 100

static struct gw_worker *pick_worker(struct gw_server *srv, unsigned *rr)
{
    /* Least loaded by open connections; ties go round-robin so an idle
     * start spreads evenly. */
    struct gw_worker *best = NULL;
    int64_t best_load = INT64_MAX;
    for (int i = 0; i < srv->nworkers; i++) {
        struct gw_worker *w = srv->workers[(*rr + (unsigned)i) % (unsigned)srv->nworkers];
        int64_t load = atomic_load_explicit(&w->stats.connections_active, memory_order_relaxed);
        if (load < best_load) {
            best = w;
            best_load = load;
        }
    }
    (*rr)++;
    return best;
}

/* Takes a place for a new client connection under MAX_CONNECTIONS and its
 * client's MAX_CONNECTIONS_PER_CLIENT; false (counted) when either is full.
 * addr receives the peer's 16-byte form for gw_acceptor_release. */
static bool admit(struct gw_server *srv, const struct sockaddr_storage *peer, uint8_t addr[16])
{
    int64_t open_now = atomic_fetch_add_explicit(&srv->connections, 1, memory_order_relaxed);
    if (open_now >= srv->cfg->max_connections) {
        atomic_fetch_sub_explicit(&srv->connections, 1, memory_order_relaxed);
        GW_STAT_INC(&srv->acceptor_stats, connections_rejected);
        return false;
    }
    gw_net_addr_bin(peer, addr);
    if (srv->client_conns && !gw_client_conns_acquire(srv->client_conns, addr)) {
        atomic_fetch_sub_explicit(&srv->connections, 1, memory_order_relaxed);
        GW_STAT_INC(&srv->acceptor_stats, connections_rejected_per_client);
        return false;
    }
    return true;
}

void gw_acceptor_release(struct gw_server *srv, const uint8_t addr[16])
{
    gw_server_release_connection(srv, addr);
}

/* Accepts what waits on the admin listener (SPEC.md §11): at most
 * GW_ADMIN_MAX_CONNECTIONS at once, outside MAX_CONNECTIONS and the
 * per-client caps, handed to the least-loaded worker like any client. */
static void accept_admin(struct gw_server *srv, unsigned *rr)
{
    for (int burst = 0; burst < 16; burst++) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof(peer);
        int fd =
            accept4(srv->admin_fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                gw_warn("admin accept: %s", strerror(errno));
            return;
        }
        int64_t open_now =
            atomic_fetch_add_explicit(&srv->admin_connections, 1, memory_order_relaxed);
        if (open_now >= GW_ADMIN_MAX_CONNECTIONS) {
            atomic_fetch_sub_explicit(&srv->admin_connections, 1, memory_order_relaxed);
            close(fd);
            continue;
        }
        if (gw_worker_handoff(pick_worker(srv, rr), fd, &peer, true) != 0) {
            gw_server_release_connection(srv, NULL);
            close(fd);
        }
    }
}

static void *acceptor_main(void *arg)
{
    struct gw_server *srv = arg;
    unsigned rr = 0;
    int spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
    bool paused = false;
    for (;;) {
        struct pollfd p[3] = {{.fd = srv->acceptor_wake_fd, .events = POLLIN},
                              {.fd = srv->listen_fd, .events = POLLIN},
                              {.fd = srv->admin_fd, .events = POLLIN}};
        int n = poll(p, paused ? 1 : srv->admin_fd >= 0 ? 3 : 2, paused ? EMFILE_PAUSE_MS : -1);
        if (n < 0 && errno != EINTR)
            break;
        if (p[0].revents & POLLIN)
            break;
        if (!paused && srv->admin_fd >= 0 && (p[2].revents & POLLIN))
            accept_admin(srv, &rr);
        if (paused) {
            paused = false;
            continue;
        }
        if (!(p[1].revents & POLLIN))
            continue;
        for (int burst = 0; burst < 64; burst++) {
            struct sockaddr_storage peer;
            socklen_t len = sizeof(peer);
            int fd = accept4(srv->listen_fd, (struct sockaddr *)&peer, &len,
                             SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                    break;
                if (errno == EMFILE || errno == ENFILE) {
                    /* Out of descriptors: use the spare one to accept and
                     * close the head of the backlog, then pause the
                     * listener instead of spinning on it. */
                    gw_warn("accept: %s; shedding a connection and pausing %d ms", strerror(errno),
                            EMFILE_PAUSE_MS);
                    if (spare >= 0) {
                        close(spare);
                        int shed = accept(srv->listen_fd, NULL, NULL);
                        if (shed >= 0)
                            close(shed);
                        spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
                    }
                    paused = true;
                    break;
                }
                gw_warn("accept: %s", strerror(errno));
                break;
            }
            uint8_t addr[16];
            if (!admit(srv, &peer, addr)) {
                close(fd); /* over a connection cap: closed at accept */
                continue;
            }
            struct gw_worker *w = pick_worker(srv, &rr);
            if (gw_worker_handoff(w, fd, &peer, false) != 0) {
                gw_acceptor_release(srv, addr);
                close(fd);
            }
        }
    }
    if (spare >= 0)
        close(spare);
    return NULL;
}

int gw_acceptor_start(struct gw_server *srv)
{
    srv->acceptor_wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (srv->acceptor_wake_fd < 0)
        return -errno;
    int rc = pthread_create(&srv->acceptor, NULL, acceptor_main, srv);
    if (rc) {
        close(srv->acceptor_wake_fd);
        srv->acceptor_wake_fd = -1;
        return -rc;
    }
    return 0;
}

void gw_acceptor_stop(struct gw_server *srv)
{
    if (srv->acceptor_wake_fd < 0)
        return;
    uint64_t one = 1;
    if (write(srv->acceptor_wake_fd, &one, sizeof(one)) < 0)
        gw_warn("acceptor: wake failed: %s", strerror(errno));
    pthread_join(srv->acceptor, NULL);
    close(srv->acceptor_wake_fd);
    srv->acceptor_wake_fd = -1;
    if (srv->listen_fd >= 0) {
        close(srv->listen_fd);
        srv->listen_fd = -1;
    }
    if (srv->admin_fd >= 0) {
        close(srv->admin_fd);
        srv->admin_fd = -1;
    }
}
