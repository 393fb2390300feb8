/*
 * Fixed-window math (see gw/rl_algo.h). Kept free of clocks and stores so
 * the edges can be unit-tested exactly; the stores and ratelimit.c feed it
 * the time of whichever clock decided the window (Redis TIME or local).
 */
#include "gw/rl_algo.h"

#include <assert.h>

int64_t gw_rl_algo_window_index(int64_t t_s, int64_t window_s)
{
    assert(window_s >= 1);
    int64_t q = t_s / window_s;
    /* C division truncates toward zero; the window index must floor. */
    if (t_s % window_s != 0 && t_s < 0)
        q--;
    return q;
}

struct gw_rl_window gw_rl_algo_window(int64_t t_s, int64_t window_s)
{
    struct gw_rl_window w;
    w.index = gw_rl_algo_window_index(t_s, window_s);
    /* start <= t, so index * W cannot overflow; start + W can near INT64_MAX. */
    w.start_s = w.index * window_s;
    w.end_s = w.start_s > INT64_MAX - window_s ? INT64_MAX : w.start_s + window_s;
    return w;
}

int64_t gw_rl_algo_reset_after(int64_t t_s, int64_t window_s)
{
    struct gw_rl_window w = gw_rl_algo_window(t_s, window_s);
    int64_t d = w.end_s - t_s;
    return d < 1 ? 1 : d; /* only the saturated end can make it 0 */
}

int64_t gw_rl_algo_remaining(int64_t limit, int64_t n)
{
    return n >= limit ? 0 : limit - n;
}

bool gw_rl_algo_allowed(int64_t n, int64_t limit)
{
    return n <= limit;
}

bool gw_rl_algo_fixed_window(int64_t n, int64_t limit, int64_t t_s, int64_t window_s,
                             struct gw_rl_info *info)
{
    struct gw_rl_window w = gw_rl_algo_window(t_s, window_s);
    info->limit = limit;
    info->remaining = gw_rl_algo_remaining(limit, n);
    info->reset_epoch_s = w.end_s;
    info->reset_after_s = gw_rl_algo_reset_after(t_s, window_s);
    info->window_s = window_s;
    return gw_rl_algo_allowed(n, limit);
}
