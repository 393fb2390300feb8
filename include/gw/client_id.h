/*
 * Client identity for rate limiting (SPEC.md §5, §3 RATE_LIMIT_KEY and
 * TRUSTED_PROXIES): the socket peer, or the rightmost untrusted address of
 * X-Forwarded-For when the peer is a trusted proxy, or an API key header.
 * Pure; thread-safe for a const configuration.
 */
#ifndef GW_CLIENT_ID_H
#define GW_CLIENT_ID_H

#include "gw/common.h"
#include "gw/config.h"
#include "gw/http1.h"

/* Longest identity key written by gw_client_id: "k:" + 64 hex digits, or
 * "ip:" + an IPv6 text address. */
#define GW_CLIENT_KEY_MAX  72
#define GW_CLIENT_ADDR_MAX 64

/* The client address of request h received from peer (peer_bin is the
 * IPv4-mapped 16-byte form, peer_text its text), as gw_client_id's
 * addr_out below, without deriving a rate-limit key (the limiter derives
 * each limit's identity itself, gw/ratelimit.h). addr_out gets
 * GW_CLIENT_ADDR_MAX bytes at most, NUL-terminated; h may be NULL.
 * Pointers are only read during the call. Pure, thread-safe. */
void gw_client_addr(const struct gw_config *cfg, const uint8_t peer_bin[16], const char *peer_text,
                    const struct gw_http_head *h, char *addr_out);

/* Identifies the client of request h received from peer (peer_bin is the
 * IPv4-mapped 16-byte form, peer_text its text).
 *  - addr_out (GW_CLIENT_ADDR_MAX bytes) gets the client address: the peer,
 *    or, when the peer is inside TRUSTED_PROXIES, the X-Forwarded-For walk
 *    from the right (several XFF fields form one list, RFC 9110 §5.3):
 *    trusted hops are skipped, the first untrusted address is the client; a
 *    malformed entry stops the walk at the last good address; if every hop is
 *    trusted, the leftmost. IPv6 is kept in full.
 *  - key_out (GW_CLIENT_KEY_MAX bytes) gets the rate-limit key: for
 *    RATE_LIMIT_KEY=header:<Name> with a non-empty header, "k:" + lowercase
 *    hex SHA-256 of the value (no client bytes reach a store key or a log);
 *    otherwise "ip:" + addr_out.
 * Returns false when the request carries more than one field line of the
 * key header (its identity is ambiguous); key_out then holds the "ip:" key.
 * Both outputs are always filled. The gateway itself uses gw_client_addr:
 * this is the RATE_LIMIT_KEY form of a client's identity, for tools and
 * tests. Pure, thread-safe. */
GW_MUSTCHECK bool gw_client_id(const struct gw_config *cfg, const uint8_t peer_bin[16],
                               const char *peer_text, const struct gw_http_head *h, char *key_out,
                               char *addr_out);

/* Parses one X-Forwarded-For element of len bytes: spaces and tabs around
 * it are ignored and IPv6 may be in brackets; the literal itself goes
 * through gw_net_parse_addr (RFC 4291 §2.2). Writes the 16-byte
 * IPv4-mapped form to out_bin and the canonical text (gw_net_addr_text) to
 * out_text (GW_CLIENT_ADDR_MAX bytes). Returns false for anything that is
 * not an address (names, ports, empty). Pure and thread-safe. */
bool gw_client_parse_addr(const char *s, size_t len, uint8_t out_bin[16], char *out_text);

#endif
