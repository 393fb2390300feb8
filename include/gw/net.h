/*
 * Socket helpers (Redis anet.c shape): listening sockets, non-blocking
 * connects, socket options and address formatting. Thin wrappers over libc;
 * thread-safe (no shared state).
 */
#ifndef GW_NET_H
#define GW_NET_H

#include "gw/common.h"

#include <netinet/in.h>
#include <sys/socket.h>

/* Opens a non-blocking listening TCP socket on host:port (IPv4 or IPv6
 * literal, "localhost"; "::" listens dual-stack) with SO_REUSEADDR and the
 * given backlog. Returns the fd, or -errno (-EINVAL for a bad host). */
GW_MUSTCHECK int gw_net_listen(const char *host, int port, int backlog);

/* The port a bound socket listens on, or -errno. */
GW_MUSTCHECK int gw_net_local_port(int fd);

/* Resolves host:port (numeric or name, via getaddrinfo) to the first
 * address. Returns 0 or -EINVAL / -EAI-style -EHOSTUNREACH on failure.
 * May block on DNS: call at startup only. */
GW_MUSTCHECK int gw_net_resolve(const char *host, int port, struct sockaddr_storage *out,
                                socklen_t *out_len);

/* Starts a non-blocking TCP connect to addr with TCP_NODELAY. Returns the fd
 * (the connect may still be in progress: wait for EPOLLOUT then call
 * gw_net_connect_result) or -errno on immediate failure. */
GW_MUSTCHECK int gw_net_connect(const struct sockaddr_storage *addr, socklen_t len);

/* The outcome of a non-blocking connect: 0 or -errno (SO_ERROR). */
GW_MUSTCHECK int gw_net_connect_result(int fd);

/* Sets TCP_NODELAY. Errors are ignored (not all sockets are TCP). */
void gw_net_nodelay(int fd);

/* The address of ss in its 16-byte IPv6 form, IPv4 as IPv4-mapped
 * (::ffff:a.b.c.d, RFC 4291 §2.5.5.2), so one comparison serves both
 * families; all zero for another family. Neither pointer is kept.
 * Thread-safe. */
void gw_net_addr_bin(const struct sockaddr_storage *ss, uint8_t out_bin[16]);

/* Formats the peer address into text ("1.2.3.4" or "2001:db8::1", IPv4-mapped
 * IPv6 shown as IPv4) and its 16-byte IPv4-mapped form. out_text needs
 * INET6_ADDRSTRLEN bytes. */
void gw_net_format_addr(const struct sockaddr_storage *ss, char *out_text, size_t cap,
                        uint8_t out_bin[16]);

/* Blocking connect with timeout_ms to addr, then close: true when the peer
 * accepted. For health probes; blocks the caller up to timeout_ms. */
bool gw_net_probe(const struct sockaddr_storage *addr, socklen_t len, int timeout_ms);

#endif
