/*
 * Raw writers for rendering into room the caller has already reserved
 * (gw_buf_reserve with a bound): no checks, each returns the new end. Shared
 * by the proxy's head rewriting and the responses the gateway writes itself,
 * both on the per-request path, hence no printf.
 */
#ifndef GW_PUT_H
#define GW_PUT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define GW_PUT_U64_DIGITS 20 /* decimal digits of UINT64_MAX; gw_put_i64 needs one more */

/* n may be 0 with s NULL (empty slices). */
static inline char *gw_put(char *p, const void *s, size_t n)
{
    if (n)
        memcpy(p, s, n);
    return p + n;
}

#define GW_PUT_LIT(p, s) gw_put((p), (s), sizeof(s) - 1)

/* u in decimal, two digits per division. */
static inline char *gw_put_u64(char *p, uint64_t u)
{
    static const char pairs[] = "00010203040506070809101112131415161718192021222324"
                                "25262728293031323334353637383940414243444546474849"
                                "50515253545556575859606162636465666768697071727374"
                                "75767778798081828384858687888990919293949596979899";
    char tmp[GW_PUT_U64_DIGITS];
    char *t = tmp + sizeof(tmp);
    while (u >= 100) {
        unsigned d = (unsigned)(u % 100);
        u /= 100;
        t -= 2;
        memcpy(t, pairs + 2 * d, 2);
    }
    if (u >= 10) {
        t -= 2;
        memcpy(t, pairs + 2 * u, 2);
    } else {
        *--t = (char)('0' + u);
    }
    return gw_put(p, t, (size_t)(tmp + sizeof(tmp) - t));
}

/* v in decimal, with a leading '-' when negative (INT64_MIN included). */
static inline char *gw_put_i64(char *p, int64_t v)
{
    if (v >= 0)
        return gw_put_u64(p, (uint64_t)v);
    *p++ = '-';
    return gw_put_u64(p, (uint64_t)0 - (uint64_t)v);
}

#endif
