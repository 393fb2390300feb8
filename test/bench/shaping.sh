#!/usr/bin/env bash
# Issue 12's shaped flood: clients send 3x their rate to a limit with token
# bucket shaping (delay), open loop (bench_client paced); reported: the rate
# admitted to the backend against the configured one, the gateway's RSS
# before and after, and the latency of the gateway's own /health during the
# flood (a stalled worker would show there). The gateway runs at its
# defaults plus the rules file below.
#
# Usage: bash test/bench/shaping.sh [BUILD_DIR]
# Environment: SHAPE_RATE [200] requests/s the limit admits, SHAPE_OFFER [3]
#   times that offered, SHAPE_SECONDS [10], SHAPE_DELAY [1s], SHAPE_BURST [20],
#   BENCH_OUT [<build-dir>/bench-shaping]
set -uo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/../.." && pwd)
# shellcheck source=lib.sh
. "$BENCH_DIR/lib.sh"

BUILD=$(resolve_build_dir "${1:-build}") || exit 1
RATE=${SHAPE_RATE:-200}
OFFER=${SHAPE_OFFER:-3}
SECS=${SHAPE_SECONDS:-10}
DELAY=${SHAPE_DELAY:-1s}
BURST=${SHAPE_BURST:-20}
UPSTREAM_KEEPALIVE=256 # the nginx backend's side only
OUT=${BENCH_OUT:-$BUILD/bench-shaping}
prepare_run "$OUT"
cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -o "$WORK/bench_client" "$BENCH_DIR/bench_client.c" ||
    die "cannot compile bench_client.c"

RULES=$WORK/shaping.yaml
cat >"$RULES" <<YAML
version: 1
limits:
  - name: flood
    match: { path_prefix: /api/ }
    key: global
    rates:
      - { requests: $RATE, window: 1s, algorithm: token_bucket, burst: $BURST, delay: $DELAY }
YAML
"$BUILD/gateway" --check-rules "$RULES" >/dev/null || die "invalid rules file"

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

start_backend_nginx
start_gateway gw-shaping "$BACKEND_PORT" RATE_LIMIT_RULES_FILE="$RULES"
log "gateway pid $PROXY_PID on :$PROXY_PORT, limit $RATE/s burst $BURST delay $DELAY, offered $((RATE * OFFER))/s for ${SECS}s"
rss0=$(rss_kib "$PROXY_PID")
# RSS once a second during the flood (bounded: SECS + 5 samples).
(for _ in $(seq 1 $((SECS + 5))); do rss_kib "$PROXY_PID" || break; sleep 1; done) >"$WORK/rss.txt" &
sampler=$!
"$WORK/bench_client" paced 127.0.0.1 "$PROXY_PORT" "$((RATE * OFFER))" "$SECS" 2000 |
    tee "$OUT/paced.txt"
kill "$sampler" 2>/dev/null
wait "$sampler" 2>/dev/null
rss1=$(rss_kib "$PROXY_PID")
# Flat: the second half of the samples against the first sample after the start.
read -r rss_first rss_max < <(awk -v h="$SECS" 'NR == 2 { f = $1 } NR >= 2 && NR <= h + 1 { if ($1 > m) m = $1 } END { print f, m }' "$WORK/rss.txt")
admitted=$(awk '/^admitted per second/ { print $NF }' "$OUT/paced.txt")
p99=$(awk '/^health/ { print $8 }' "$OUT/paced.txt")
delayed=$(http_get "$PROXY_PORT" /stats | grep -o '"delayed":[0-9]*' | head -1)
awk -v a="$admitted" -v r="$RATE" -v p="$p99" -v r0="$rss0" -v r1="$rss1" -v d="$delayed" \
    -v f="$rss_first" -v m="$rss_max" 'BEGIN {
    printf "admitted %.1f/s for a limit of %d/s: %.1f%% off (target within 5%%)\n", a, r, 100 * (a - r) / r
    printf "gateway RSS %d KiB idle, %d KiB 1 s into the flood, at most %d KiB during it, %d KiB after\n", r0, f, m, r1
    printf "/health p99 during the flood %.3f ms (target < 10 ms); %s\n", p, d
}' | tee "$OUT/summary.txt"
