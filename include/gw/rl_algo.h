/*
 * Fixed-window rate-limit math (SPEC.md §5), pure and with the clock passed
 * in so tests are exact at window edges. No I/O, no state, thread-safe.
 * A window of W seconds has index floor(t / W); it covers [index*W,
 * (index+1)*W) in Unix seconds, so every instance agrees on its edges.
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

#endif
