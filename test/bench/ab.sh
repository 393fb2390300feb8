#!/usr/bin/env bash
# A/B of two gateway builds in one run (issue 10: "no performance regression"):
# the same nginx backend, the two gateways started side by side with the same
# settings, wrk on each in turn, rounds alternating A B A B, medians printed
# with B's ratio to A. Only the gateway changes, so the ratio is the change.
#
# Usage: bash test/bench/ab.sh BUILD_A BUILD_B [VAR=VALUE...]
#   BUILD_A, BUILD_B: build directories holding gateway (e.g. a checkout of the
#   older commit built in /tmp/ab-a, and build); VAR=VALUE are passed to both
#   gateways on top of lib.sh's benchmark settings (start_gateway).
# Environment: BENCH_SECONDS [8], BENCH_ROUNDS [3], BENCH_CONNS ["50 200"],
#   BENCH_WRK_THREADS [2], BENCH_OUT [<BUILD_B>/bench-ab]
set -uo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/../.." && pwd)
# shellcheck source=lib.sh
. "$BENCH_DIR/lib.sh"

A=$(resolve_build_dir "${1:?build dir A}") || exit 1
B=$(resolve_build_dir "${2:?build dir B}") || exit 1
shift 2
SECS=${BENCH_SECONDS:-8}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS=${BENCH_CONNS:-"50 200"}
WRK_THREADS=${BENCH_WRK_THREADS:-2}
UPSTREAM_KEEPALIVE=256 # the nginx backend's side only
OUT=${BENCH_OUT:-$B/bench-ab}
prepare_run "$OUT"

start_backend_nginx
BUILD=$A start_gateway gw-a "$BACKEND_PORT" "$@"
a_port=$PROXY_PORT a_pid=$PROXY_PID
BUILD=$B start_gateway gw-b "$BACKEND_PORT" "$@"
b_port=$PROXY_PORT b_pid=$PROXY_PID
log "A: $A/gateway (pid $a_pid), B: $B/gateway (pid $b_pid), settings: ${*:-lib.sh defaults}"
run_wrk "$a_port" 50 1 "$WORK/warmup.txt"
run_wrk "$b_port" 50 1 "$WORK/warmup.txt"
TSV=$OUT/ab.tsv
printf 'conns\tround\tbuild\trps\tp99_ms\tcpu_us\n' >"$TSV"
for r in $(seq 1 "$ROUNDS"); do
    for c in $CONNS; do
        for t in a b; do
            if [ $t = a ]; then port=$a_port pid=$a_pid; else port=$b_port pid=$b_pid; fi
            t0=$(cpu_ticks "$pid")
            run_wrk "$port" "$c" "$SECS" "$WORK/wrk-$c-$r-$t.txt"
            t1=$(cpu_ticks "$pid")
            reqs=$W_REQS
            [ "$reqs" -gt 0 ] || reqs=1
            cpu=$(awk -v d=$((t1 - t0)) -v n="$reqs" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
            printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$c" "$r" "$t" "$W_RPS" "$W_P99" "$cpu" >>"$TSV"
            log "  c=$c round $r $t: $W_RPS req/s, p99 $W_P99 ms, CPU $cpu µs/req"
        done
    done
done
echo "| conns | A req/s | B req/s (×A) | A p99 ms | B p99 ms (×A) | A CPU µs/req | B CPU µs/req (×A) |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
awk -F'\t' 'NR > 1 { k = $1 SUBSEP $3; n[k]++; rps[k, n[k]] = $4; p99[k, n[k]] = $5; cpu[k, n[k]] = $6
        if (!($1 in seen)) { seen[$1] = 1; order[++nc] = $1 } }
    function med(a, k, m, i, j, x, v) { m = n[k]; for (i = 1; i <= m; i++) v[i] = a[k, i]
        for (i = 2; i <= m; i++) { x = v[i]; for (j = i - 1; j >= 1 && v[j] > x; j--) v[j + 1] = v[j]; v[j + 1] = x }
        return (m % 2) ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2 }
    END { for (i = 1; i <= nc; i++) { c = order[i]; a = c SUBSEP "a"; b = c SUBSEP "b"
        ra = med(rps, a); rb = med(rps, b); pa = med(p99, a); pb = med(p99, b); ca = med(cpu, a); cb = med(cpu, b)
        printf "| %s | %.0f | %.0f (%.2f×) | %.2f | %.2f (%.2f×) | %.1f | %.1f (%.2f×) |\n", c, ra, rb, rb / ra,
            pa, pb, pb / pa, ca, cb, cb / ca } }' "$TSV"
