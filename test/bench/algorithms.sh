#!/usr/bin/env bash
# Issue 12: Redis's cost per check of each algorithm, as instructions (callgrind on
# redis-server), which machine noise does not move: the gateway's own script and call
# (bench_rl_algo.c) send PASSES passes of CLIENTS distinct clients, one check each, to a
# redis-server run under valgrind --tool=callgrind, once per algorithm; a run with one
# pass is subtracted (start-up, script load). Printed and written to algorithms.tsv:
# instructions per check and the ratio to the fixed window (target: sliding window and
# token bucket at most 1.5x).
#
# Usage: bash test/bench/algorithms.sh [BUILD_DIR]
# Environment: ALGO_PASSES [100], ALGO_CLIENTS ["1 64 200"], BENCH_OUT [<build>/bench-algorithms]
set -uo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/../.." && pwd)
# shellcheck source=lib.sh
. "$BENCH_DIR/lib.sh"
BENCH_PKGS="redis-server redis-tools valgrind"
BUILD=$(resolve_build_dir "${1:-build}") || exit 1
PASSES=${ALGO_PASSES:-100}
CLIENTS=${ALGO_CLIENTS:-"1 64 200"}
OUT=${BENCH_OUT:-$BUILD/bench-algorithms}
prepare_run "$OUT"
[ -f "$BUILD/libgwcore.a" ] || die "build first: make build"
cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -I"$REPO/include" -I"$REPO/src" \
    -o "$WORK/bench_rl_algo" "$BENCH_DIR/bench_rl_algo.c" "$BUILD/libgwcore.a" \
    "$BUILD/third_party/llhttp/libllhttp.a" -lhiredis -ljansson -lyaml -lssl -lcrypto \
    -lpthread -lm || die "cannot compile bench_rl_algo.c"

# instructions ALGO PASSES CLIENTS: redis-server's total under callgrind for that run.
instructions() {
    local port pid i total
    pick_port
    port=$PORT
    valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.$port" \
        redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        >"$WORK/redis-$port.log" 2>&1 &
    pid=$!
    for i in $(seq 1 300); do
        redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break
        sleep 0.1
    done
    "$WORK/bench_rl_algo" "$port" "$1" "$2" "$3" || { kill "$pid"; die "driver failed"; }
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1
    for i in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { kill -9 "$pid"; die "redis-server under callgrind did not stop"; }
    wait "$pid" 2>/dev/null
    total=$(callgrind_annotate "$WORK/cg.$port" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
    [ -n "$total" ] || die "no callgrind totals"
    echo "$total"
}

TSV=$OUT/algorithms.tsv
printf 'clients\talgorithm\tinstr_per_check\tratio_to_fixed\n' >"$TSV"
names=(fixed_window sliding_window token_bucket)
log "-- Redis instructions per check (callgrind on redis-server, $PASSES passes)"
for c in $CLIENTS; do
    base=$(instructions 0 1 "$c")
    fixed=""
    for a in 0 1 2; do
        t=$(instructions "$a" "$PASSES" "$c")
        per=$(( (t - base) / (PASSES * c) ))
        [ -n "$fixed" ] || fixed=$per
        ratio=$(awk -v a="$per" -v b="$fixed" 'BEGIN { printf "%.2f", a / b }')
        printf '%s\t%s\t%s\t%s\n' "$c" "${names[$a]}" "$per" "$ratio" >>"$TSV"
        printf '  %3s clients per batch  %-15s %8s instructions per check  %sx fixed\n' \
            "$c" "${names[$a]}" "$per" "$ratio" >&2
    done
done
log "written: $TSV"
