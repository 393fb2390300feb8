/*
 * Shared definitions for every gateway module: return conventions, the
 * must-check attribute, the monotonic and wall clocks, a string slice, and
 * the two helpers every start-up parser uses (reasons, strict decimals).
 * Leaf of the include graph: includes nothing of ours.
 */
#ifndef GW_COMMON_H
#define GW_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

/* Return conventions (STYLE.md "Errors"):
 *  - setup and syscall-like calls return 0 or -errno;
 *  - I/O steps return one of enum gw_io and the caller switches;
 *  - predicates return bool. */
enum gw_io_result {
    GW_IO_OK = 0,    /* progress made, call again when ready */
    GW_IO_AGAIN = 1, /* would block: wait for readiness */
    GW_IO_EOF = 2,   /* peer closed its write side */
    GW_IO_ERR = 3,   /* fatal error on this descriptor; errno is kept */
};

#define GW_MUSTCHECK         __attribute__((warn_unused_result))
#define GW_UNUSED            __attribute__((unused))
#define GW_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))

#define GW_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define GW_MIN(a, b)    ((a) < (b) ? (a) : (b))
#define GW_MAX(a, b)    ((a) > (b) ? (a) : (b))

/* Recover the enclosing struct from a pointer to one of its members. */
#define gw_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* A borrowed, not NUL-terminated byte range. The owner of the bytes is
 * whoever produced the slice; it stays valid only as long as they say. */
struct gw_slice {
    const char *ptr; /* first byte, may be NULL when len == 0 */
    size_t len;      /* bytes */
};

/* Monotonic clock (CLOCK_MONOTONIC) in milliseconds: for deadlines and
 * durations, never for wall time. Thread-safe, cannot fail. */
uint64_t gw_now_ms(void);

/* Monotonic clock in microseconds, for latency measurement. Thread-safe. */
uint64_t gw_now_us(void);

/* Wall clock (CLOCK_REALTIME) in whole Unix seconds, for fixed-window edges
 * and Retry-After when no shared clock (Redis TIME) is in use. Thread-safe. */
int64_t gw_wall_s(void);

/* A fast seeded 64-bit hash of n bytes at p (murmur3-style mixing, 8 bytes
 * per step), for in-process tables only: not cryptographic, so callers
 * hash only keys a client cannot choose freely (SHA-256 digests) or use a
 * secret per-process seed. p is only read during the call (NULL allowed
 * when n is 0). Pure and thread-safe. */
uint64_t gw_hash64(uint64_t seed, const void *p, size_t n);

/* A 64-bit mixer (murmur3's finaliser): a bijection of x whose every
 * output bit depends on every input bit. Pure, thread-safe. */
uint64_t gw_mix64(uint64_t x);

/* Case-insensitive ASCII comparison of a slice with a NUL-terminated token
 * (header names, RFC 9110 §5.1 field names are case-insensitive). Neither
 * pointer is kept. Thread-safe. Inline so that a literal token's length is
 * a constant and a length mismatch costs one comparison. */
static inline bool gw_slice_eq_nocase(struct gw_slice s, const char *token)
{
    size_t n = strlen(token);
    return s.len == n && (n == 0 || strncasecmp(s.ptr, token, n) == 0);
}

/* Writes a one-line printf-formatted reason into why (why_len bytes,
 * truncated; why may be NULL) and returns false, so a validating parser can
 * `return gw_fail(why, why_len, "...")`. Only why is written. Thread-safe. */
bool gw_fail(char *why, size_t why_len, const char *fmt, ...) GW_PRINTF(3, 4);

/* Strict decimal of exactly n bytes at s (digits only: no sign, spaces or
 * prefix; 1..18 digits) within [min, max]. Returns true with *out set;
 * false leaves *out alone. Pure and thread-safe. */
bool gw_parse_digits(const char *s, size_t n, int64_t min, int64_t max, int64_t *out);

#endif
