/*
 * Fixed-window math (see gw/rl_algo.h). Kept free of clocks and stores so
 * the edges can be unit-tested exactly; the stores and ratelimit.c feed it
 * the time of whichever clock decided the window (Redis TIME or local).
 */
#include "gw/rl_algo.h"

#include <assert.h>
#include <string.h>

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

/* ---- sliding window and token bucket (SPEC.md §5.1) ---------------------- */

typedef __int128 wide;

/* floor(a / b) for b > 0 and any a. */
static wide floor_div(wide a, wide b)
{
    wide q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

/* ceil(a / b) for a >= 0, b > 0. */
static int64_t ceil_div(int64_t a, int64_t b)
{
    return a / b + (a % b != 0);
}

static int64_t clamp64(wide v)
{
    return v > INT64_MAX ? INT64_MAX : v < INT64_MIN ? INT64_MIN : (int64_t)v;
}

bool gw_rl_algo_fixed_window_ms(int64_t limit, int64_t window_ms, int64_t now_ms, int64_t count,
                                struct gw_rl_result *out)
{
    assert(window_ms >= 1);
    int64_t i = now_ms / window_ms; /* 64-bit floor division: this runs per request */
    if (now_ms % window_ms != 0 && now_ms < 0)
        i--;
    int64_t end_ms = i >= INT64_MAX / window_ms - 1 ? INT64_MAX : (i + 1) * window_ms;
    bool allowed = count < limit;
    int64_t after = allowed ? count + 1 : count;
    memset(out, 0, sizeof(*out));
    out->allowed = allowed;
    out->info.limit = limit;
    out->info.remaining = after >= limit ? 0 : limit - after;
    out->info.reset_epoch_s = ceil_div(end_ms, 1000);
    out->info.reset_after_s = GW_MAX(1, ceil_div(end_ms - now_ms, 1000));
    out->info.window_s = ceil_div(window_ms, 1000);
    if (!allowed) {
        out->retry_after_ms = GW_MAX(1, end_ms - now_ms);
        out->retry_after_s = out->info.reset_after_s;
    }
    return allowed;
}

/* Earliest e' in [e, W) of the current window at which p*(W - e') + (c + 1)*W
 * <= L*W holds, or W when none does. */
static int64_t earliest_in_window(int64_t L, int64_t W, int64_t e, int64_t p, int64_t c)
{
    wide k = (wide)(L - c - 1) * W; /* room for the earlier window's weight */
    if (k < 0)
        return W;
    if (p == 0)
        return e;
    wide room = k / p; /* W - e' <= floor(k / p) */
    wide at = (wide)W - room;
    if (at < e)
        at = e;
    return at >= W ? W : (int64_t)at;
}

bool gw_rl_algo_sliding_window(int64_t limit, int64_t window_ms, int64_t now_ms, int64_t prev,
                               int64_t cur, struct gw_rl_result *out)
{
    assert(limit >= 1 && window_ms >= 1);
    const int64_t L = limit, W = window_ms;
    int64_t i = (int64_t)floor_div(now_ms, W);
    int64_t e = now_ms - i * W;
    wide weight = (wide)prev * (W - e);
    bool allowed = weight + (wide)(cur + 1) * W <= (wide)L * W;
    int64_t after = allowed ? cur + 1 : cur;
    wide rem = floor_div((wide)L * W - weight - (wide)after * W, W);

    memset(out, 0, sizeof(*out));
    out->allowed = allowed;
    out->info.limit = L;
    out->info.remaining = rem < 0 ? 0 : clamp64(rem);
    int64_t end_ms = clamp64((wide)(i + 1) * W);
    out->info.reset_epoch_s = ceil_div(end_ms, 1000);
    out->info.reset_after_s = GW_MAX(1, ceil_div(end_ms - now_ms, 1000));
    out->info.window_s = ceil_div(W, 1000);
    if (!allowed) {
        int64_t wait_ms;
        int64_t at = earliest_in_window(L, W, e, prev, cur);
        if (at < W) {
            wait_ms = at - e;
        } else {
            /* Next window: what is counted now becomes the earlier window. */
            int64_t next = earliest_in_window(L, W, 0, cur, 0);
            wait_ms = (W - e) + next;
        }
        out->retry_after_ms = GW_MAX(1, wait_ms);
        out->retry_after_s = GW_MAX(1, ceil_div(wait_ms, 1000));
    }
    return allowed;
}

int64_t gw_rl_algo_gcra_interval_us(int64_t limit, int64_t window_ms)
{
    assert(limit >= 1 && window_ms >= 1);
    int64_t t = clamp64((wide)window_ms * 1000 / limit);
    return t < 1 ? 1 : t;
}

bool gw_rl_algo_gcra(int64_t limit, int64_t burst, int64_t window_ms, int64_t delay_ms,
                     int64_t now_us, int64_t tat_us, int64_t *new_tat_us, struct gw_rl_result *out)
{
    assert(limit >= 1 && burst >= 1 && window_ms >= 1 && delay_ms >= 0);
    const int64_t T = gw_rl_algo_gcra_interval_us(limit, window_ms);
    const wide BT = (wide)burst * T;
    const wide base = tat_us > now_us ? tat_us : now_us;
    const wide fresh = base + T;      /* the new TAT if this request is stored */
    const wide need = fresh - now_us; /* > 0 */
    const wide hold = need - BT;      /* > 0: over the burst by this much */

    memset(out, 0, sizeof(*out));
    out->info.limit = limit;
    out->info.window_s = ceil_div(window_ms, 1000);
    bool allowed = hold <= 0 || hold <= (wide)delay_ms * 1000;
    wide tat_after = tat_us;
    if (allowed) {
        tat_after = fresh;
        out->delay_us = hold > 0 ? clamp64(hold) : 0;
        wide rem = floor_div(BT - need, T);
        out->info.remaining = rem < 0 ? 0 : clamp64(rem);
    } else {
        /* One token is back when max(tat, now') + T - now' <= B*T, that is
         * at now' = tat - (B - 1)*T (tat > now here: a refusal needs it). */
        wide wait = (wide)tat_us - (wide)(burst - 1) * T - now_us;
        int64_t wait_us = clamp64(wait < 0 ? 0 : wait);
        /* With delay a request passes (held) delay before that token: at
         * now' = tat - (B - 1)*T - delay. The over-limit cache must let
         * the client through by then, not refuse what the store admits. */
        wide pass = wait - (wide)delay_ms * 1000;
        int64_t pass_us = clamp64(pass < 0 ? 0 : pass);
        out->retry_after_ms = GW_MAX(1, ceil_div(pass_us, 1000));
        out->retry_after_s = GW_MAX(1, ceil_div(wait_us, 1000000));
    }
    out->allowed = allowed;
    *new_tat_us = clamp64(tat_after);
    /* Full again when the stored TAT is reached. */
    wide full = tat_after - now_us;
    int64_t t = full > 0 ? ceil_div(clamp64(full), 1000000) : 0;
    out->info.reset_after_s = GW_MAX(1, t);
    out->info.reset_epoch_s = clamp64(floor_div(now_us, 1000000) + out->info.reset_after_s);
    return allowed;
}
