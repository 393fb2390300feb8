/*
 * Host names that follow DNS (SPEC.md §3 UPSTREAM_RESOLVE_INTERVAL_MS): the
 * backend's and Redis's host names are resolved by one resolver thread
 * (getaddrinfo, so /etc/hosts, DNS and every NSS source the C library
 * knows) at start-up, every UPSTREAM_RESOLVE_INTERVAL_MS, and soon after a
 * user reports a failed connect (gw_resolve_kick). The current address list
 * of each name is published as an immutable snapshot; workers copy it with
 * two atomic read-modify-writes and no lock, never waiting for DNS. A
 * numeric host (IPv4/IPv6 literal, "localhost") is one fixed snapshot and
 * needs no thread. A name that does not resolve is not an error: it simply
 * has no address (a connect to it fails at once) until it resolves.
 *
 * The resolver is process-wide, like the C library's own resolver: names
 * are registered (gw_resolve_add) and the thread started (gw_resolve_start)
 * by the main thread at start-up, found by host and port from any module
 * (gw_resolve_find), and everything is freed by gw_resolve_stop once no
 * other thread reads a name any more.
 */
#ifndef GW_RESOLVE_H
#define GW_RESOLVE_H

#include "gw/common.h"

#include <sys/socket.h>

/* Addresses kept per name: the first ones in getaddrinfo's order (RFC 6724
 * destination address selection), duplicates dropped. */
#define GW_RESOLVE_MAX_ADDRS 8
/* A name without any address yet is retried this often (milliseconds),
 * whatever the interval (0 included), until it resolves. */
#define GW_RESOLVE_RETRY_MS 1000
/* Kicks re-resolve one name at most this often (milliseconds), so a dead
 * backend under load costs DNS one query per period, not one per request. */
#define GW_RESOLVE_KICK_MIN_MS 500
/* Names registered at most (the backend, Redis, and room to grow). */
#define GW_RESOLVE_MAX_NAMES 8

struct gw_resolve_name; /* one host:port the resolver follows */

/* A copy of a name's address list, owned by whoever holds it. */
struct gw_resolve_addrs {
    uint64_t gen;                                       /* list generation; 0 = never resolved */
    unsigned count;                                     /* addresses in addr[], 0 = none */
    struct sockaddr_storage addr[GW_RESOLVE_MAX_ADDRS]; /* with the port set */
    socklen_t len[GW_RESOLVE_MAX_ADDRS];                /* bytes of addr[i] */
};

/* Replaces getaddrinfo for tests: fills out->addr/len/count (count 0 and a
 * gai-style nonzero return when the name does not resolve) for host:port.
 * Called on the resolver thread (and in gw_resolve_add). Returns 0 or a
 * nonzero EAI_* code. */
typedef int (*gw_resolve_lookup_fn)(void *ctx, const char *host, int port,
                                    struct gw_resolve_addrs *out);

/* Tests only: resolve through fn(ctx, ...) instead of getaddrinfo; NULL
 * restores getaddrinfo. Call before gw_resolve_add, from the main thread,
 * while no resolver runs. */
void gw_resolve_set_lookup(gw_resolve_lookup_fn fn, void *ctx);

/* Registers host:port for following (what, e.g. "BACKEND_URL", names it in
 * log lines; copied) and returns it in *out; the same host and port
 * registered twice give the same name. A numeric host (IPv4 or IPv6
 * literal without brackets, or "localhost" as 127.0.0.1) gets its one
 * address now. A name is resolved once now, blocking the caller for as long
 * as getaddrinfo takes (start-up only); when it does not resolve, a warning
 * says so and the name starts without an address. Returns 0; -EINVAL for an
 * empty host or a port outside 1..65535; -ENOSPC beyond
 * GW_RESOLVE_MAX_NAMES; -ENOMEM. Main thread, before gw_resolve_start. */
GW_MUSTCHECK int gw_resolve_add(const char *host, int port, const char *what,
                                struct gw_resolve_name **out);

/* Starts the resolver thread ("gw-resolve"; it inherits the caller's signal mask) when a
 * registered name is not numeric: each such name is resolved again every
 * interval_ms (0 = never again once it has an address), every
 * GW_RESOLVE_RETRY_MS while it has none, and within GW_RESOLVE_KICK_MIN_MS of
 * a kick (ignored with interval_ms 0 once the name has an address). A
 * change of the address list (as a set: a new order alone is no change) is
 * published as a new generation and logged at info; a failed lookup keeps
 * the last addresses (warned once per failure streak). Returns 0 or
 * -errno of pthread_create. Main thread, once. */
GW_MUSTCHECK int gw_resolve_start(int interval_ms);

/* Stops the thread (a lookup in progress finishes first: bounded by the C
 * library's own DNS timeouts) and frees every name. Call after every user
 * of a name has stopped. Safe when nothing was started or added. Main
 * thread. */
void gw_resolve_stop(void);

/* The name registered for host:port, or NULL. Lock-free; thread-safe
 * between gw_resolve_start and gw_resolve_stop (the registry is fixed
 * then). */
struct gw_resolve_name *gw_resolve_find(const char *host, int port);

/* The generation of the name's current list: one atomic load, so a user
 * holding a copy can tell cheaply whether it is still current. 0 until the
 * name first resolves. Thread-safe, never blocks. */
uint64_t gw_resolve_gen(const struct gw_resolve_name *n);

/* Copies the name's current list into *out (about 1 KiB) and returns its
 * count (0: not resolved yet, out->gen 0). Lock-free: the snapshot is
 * pinned by a reference count while copied, never waited for. Thread-safe
 * (any thread, concurrently with the resolver). */
unsigned gw_resolve_read(struct gw_resolve_name *n, struct gw_resolve_addrs *out);

/* Reports that a connect to one of the name's addresses failed (refused,
 * unreachable, timed out) or that it has none: asks the resolver for a new
 * lookup soon (see gw_resolve_start for the pace). One atomic exchange when
 * a kick is pending already; else a short lock to wake the thread. Never
 * waits for DNS. Thread-safe. */
void gw_resolve_kick(struct gw_resolve_name *n);

/* True when a holds ss's address and port (family, address, port; IPv6
 * scope too). Pure. */
bool gw_resolve_addrs_contain(const struct gw_resolve_addrs *a, const struct sockaddr_storage *ss);

/* The numeric text of address i (modulo the count) of the name registered
 * for host:port, written into out (cap bytes, at least INET6_ADDRSTRLEN;
 * IPv6 without brackets), for a client library that resolves what it is
 * given (hiredis): numeric text makes its getaddrinfo do no DNS. A host
 * that is not registered is copied as is. Returns 0; -EHOSTUNREACH when
 * the registered name has no address yet; -ENOSPC when out is too small.
 * Thread-safe, never blocks. */
GW_MUSTCHECK int gw_resolve_host_text(const char *host, int port, unsigned i, char *out,
                                      size_t cap);

/* gw_resolve_kick of the name registered for host:port; nothing when none
 * is. Thread-safe. */
void gw_resolve_kick_host(const char *host, int port);

/* Formats the addresses of a ("127.0.0.1, [::1]" without ports; "none"
 * when empty) into out (cap bytes, truncated). Pure. */
void gw_resolve_format(const struct gw_resolve_addrs *a, char *out, size_t cap);

#endif
