/*
 * Rate-limit math (SPEC.md §5 and §5.1): the fixed window, the sliding
 * window (two-window estimate) and the token bucket computed as GCRA, with
 * delay-instead-of-refuse shaping. Pure functions with the clock and the
 * stored state passed in, so tests are exact at every edge and both stores
 * (Redis's Lua script and the in-process store) can be checked against one
 * definition. Integer arithmetic only. No I/O, no state, thread-safe.
 * A window of W has index floor(t / W); it covers [index*W, (index+1)*W) of
 * Unix time, so every instance agrees on its edges.
 */
#ifndef GW_RL_ALGO_H
#define GW_RL_ALGO_H

#include "gw/common.h"
#include "gw/response.h"

/* The fixed window that contains an instant. */
struct gw_rl_window {
    int64_t index;   /* floor(t / W) */
    int64_t start_s; /* index * W, Unix seconds */
    int64_t end_s;   /* (index + 1) * W, Unix seconds (first second of the next window) */
};

/* Window index floor(t_s / window_s) with true floor division, so it is
 * also right for negative t_s. window_s must be >= 1 (asserted).
 * Thread-safe, cannot fail. */
int64_t gw_rl_algo_window_index(int64_t t_s, int64_t window_s);

/* The window containing t_s (Unix seconds), window_s >= 1. end_s saturates
 * at INT64_MAX instead of overflowing. Thread-safe, cannot fail. */
struct gw_rl_window gw_rl_algo_window(int64_t t_s, int64_t window_s);

/* Seconds from t_s to the end of its window: end - t, always in [1, W].
 * This is Retry-After (RFC 9110 §10.2.3) and the "t" of the RateLimit
 * field. Thread-safe, cannot fail. */
int64_t gw_rl_algo_reset_after(int64_t t_s, int64_t window_s);

/* max(0, limit - n): what X-RateLimit-Remaining reports after request n. */
int64_t gw_rl_algo_remaining(int64_t limit, int64_t n);

/* Request number n (1-based, counted in this window) is allowed iff
 * n <= limit. */
bool gw_rl_algo_allowed(int64_t n, int64_t limit);

/* The whole decision for request n seen at t_s: fills *info (limit,
 * remaining, reset epoch, reset-after, window) and returns whether the
 * request is allowed. info is owned by the caller. Thread-safe. */
bool gw_rl_algo_fixed_window(int64_t n, int64_t limit, int64_t t_s, int64_t window_s,
                             struct gw_rl_info *info);

/* The outcome of one sliding-window or token-bucket decision. */
struct gw_rl_result {
    bool allowed;           /* admitted (perhaps after delay_us) */
    int64_t delay_us;       /* token bucket with delay: hold this long first; else 0 */
    int64_t retry_after_s;  /* refused: Retry-After, >= 1 (RFC 9110 §10.2.3); else 0 */
    int64_t retry_after_ms; /* refused: the exact wait in ms (rounded up, >= 1) until one
                               request would pass if no other came; the over-limit cache
                               remembers the client this long; else 0 */
    struct gw_rl_info info; /* headers: limit (L), remaining, reset epoch, t, window */
};

/* Fixed window in ms (SPEC.md §5 and §5.1): limit L >= 0, window_ms W >= 1,
 * now_ms the store's clock (Unix ms), count the requests counted in window
 * floor(now / W) before this one. Allowed iff count + 1 <= L (an allowed
 * request is counted by the caller; a refused one changes nothing).
 * remaining = max(0, L - count'), count' the count after the decision;
 * reset = the window end (t = ceil((end - now) / 1 s), at least 1; reset
 * epoch = ceil(end / 1 s)); refused: retry_after_ms = end - now and
 * retry_after_s = t. Returns out->allowed; *out is overwritten.
 * Thread-safe. */
bool gw_rl_algo_fixed_window_ms(int64_t limit, int64_t window_ms, int64_t now_ms, int64_t count,
                                struct gw_rl_result *out);

/* Sliding window (SPEC.md §5.1; Cloudflare's and HAProxy freq_ctr's
 * two-window estimate). limit L >= 1, window_ms W >= 1, now_ms >= 0 the
 * store's clock (Unix ms); prev and cur are the requests counted in windows
 * i-1 and i, i = floor(now / W), before this request. With e = now - i*W
 * the request is allowed iff prev*(W - e) + (cur + 1)*W <= L*W; an allowed
 * request is counted in window i by the caller (cur + 1), a refused one
 * changes nothing. remaining = max(0, floor((L*W - prev*(W - e) - cur'*W) /
 * W)) with cur' the count after the decision; reset is the end of window i
 * (t = ceil((end - now) / 1 s), at least 1; reset epoch = ceil(end / 1 s)).
 * Refused: retry_after_s is the whole seconds, rounded up and at least 1,
 * to the earliest instant at which one request would pass if no other came:
 * later in window i when cur + 1 <= L, else in window i+1 with prev = cur.
 * Products are computed in 128 bits: no input overflows. Returns
 * out->allowed; *out is overwritten. Thread-safe. */
bool gw_rl_algo_sliding_window(int64_t limit, int64_t window_ms, int64_t now_ms, int64_t prev,
                               int64_t cur, struct gw_rl_result *out);

/* The emission interval T of a token bucket, in µs: W / L rounded down, at
 * least 1 (so a rate above one per µs still has a defined bucket). */
int64_t gw_rl_algo_gcra_interval_us(int64_t limit, int64_t window_ms);

/* Token bucket computed as GCRA (SPEC.md §5.1): bucket size B = burst
 * (>= 1), one token back every T = gw_rl_algo_gcra_interval_us(L, W); tat_us
 * is the stored theoretical arrival time (0 when no state), now_us the
 * store's clock (Unix µs). With new = max(tat, now) + T the request is
 * allowed iff new - now <= B*T, and is then stored: *new_tat_us = new. With
 * delay_ms > 0 a request with B*T < new - now <= B*T + delay is allowed too,
 * stores new, and gets delay_us = new - now - B*T (shaping, nginx limit_req
 * delay=). Refused: *new_tat_us = tat_us (no state change),
 * retry_after_s = seconds until one token is back, rounded up, at least 1,
 * and retry_after_ms = ms (rounded up, at least 1) until one request would
 * pass: with delay_ms > 0 that is delay_ms before the token, the request
 * then being held (so the over-limit cache never refuses what the store
 * would admit).
 * remaining = max(0, floor((B*T - (new - now)) / T)) for an allowed
 * request, 0 for a refused one; t = seconds until the bucket is full again
 * (rounded up, at least 1); reset epoch = floor(now / 1 s) + t; limit = L (not B);
 * window_s = ceil(W / 1 s). Saturating 64-bit arithmetic. Returns
 * out->allowed; *out is overwritten. Thread-safe. */
bool gw_rl_algo_gcra(int64_t limit, int64_t burst, int64_t window_ms, int64_t delay_ms,
                     int64_t now_us, int64_t tat_us, int64_t *new_tat_us, struct gw_rl_result *out);

#endif
