#!/usr/bin/env bash
# Profiles the gateway under the benchmark's load (issue 6): nginx backend + Redis as in
# run.sh, the gateway in one mode, wrk keep-alive, then `perf record -g` on the gateway for
# PROFILE_SECONDS and the top of `perf report --no-children`, plus `perf stat` counts per
# request (syscalls, context switches). Without a usable perf, a short run under
# valgrind --tool=callgrind instead.
#
# Usage: bash test/bench/profile.sh [build-dir]
# Environment: PROFILE_MODE [redis] (redis | memory | redis-429), PROFILE_CONNS [200],
#   PROFILE_SECONDS [5], PROFILE_WORKERS [1], PROFILE_TOP [15], BENCH_WRK_THREADS [2],
#   BENCH_OUT [<build-dir>/bench-profile]. The gateway runs at its defaults but
#   RATE_LIMIT_REQUESTS=1000000000 and ACCESS_LOG=off, as in run.sh.
set -uo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/../.." && pwd)
# shellcheck source=lib.sh
. "$BENCH_DIR/lib.sh"

BUILD=$(resolve_build_dir "${1:-build}") || exit 1
[ -x "$BUILD/gateway" ] || die "$BUILD/gateway missing (build first)"

MODE=${PROFILE_MODE:-redis}
CONNS=${PROFILE_CONNS:-200}
PSECS=${PROFILE_SECONDS:-5}
WORKERS=${PROFILE_WORKERS:-1}
TOP=${PROFILE_TOP:-15}
WRK_THREADS=${BENCH_WRK_THREADS:-2}
UPSTREAM_KEEPALIVE=${BENCH_UPSTREAM_KEEPALIVE:-256} # nginx backend side only (lib.sh)
OUT=${BENCH_OUT:-$BUILD/bench-profile}
case "$MODE" in redis | memory | redis-429) ;; *) die "PROFILE_MODE=$MODE: redis, memory or redis-429" ;; esac

prepare_run "$OUT"

start_redis
start_backend_nginx
gw_env=(WORKER_THREADS="$WORKERS")
case "$MODE" in
redis) gw_env+=(REDIS_URL="redis://127.0.0.1:$REDIS_PORT") ;;
redis-429) gw_env+=(REDIS_URL="redis://127.0.0.1:$REDIS_PORT" RATE_LIMIT_REQUESTS=1) ;;
esac

perf_ok=0
if command -v perf >/dev/null && timeout 20 perf record -o "$WORK/probe.data" -- true >/dev/null 2>&1; then
    perf_ok=1
fi

if [ $perf_ok -eq 1 ]; then
    start_gateway gw-profile "$BACKEND_PORT" "${gw_env[@]}"
    gw=$PROXY_PID
    run_wrk "$PROXY_PORT" 50 1 "$WORK/warmup.txt"
    # One wrk run long enough for a perf record window and a perf stat window.
    start_bg wrk timeout $((2 * PSECS + 40)) wrk -t"$WRK_THREADS" -c"$CONNS" -d"$((2 * PSECS + 4))s" \
        --latency "http://127.0.0.1:$PROXY_PORT/users/1"
    wrk_pid=$BG_PID
    sleep 2
    ev=()
    timeout 20 perf record -o "$WORK/probe2.data" -e cycles -- true >/dev/null 2>&1 || ev=(-e cpu-clock)
    timeout $((PSECS + 30)) perf record "${ev[@]}" --call-graph "${PROFILE_CALLGRAPH:-dwarf}" -p "$gw" -o "$OUT/perf.data" -- sleep "$PSECS" \
        >"$WORK/perf-record.out" 2>&1 || log "profile: perf record failed; see $WORK/perf-record.out"
    stat_events=task-clock,context-switches,cpu-migrations,page-faults
    timeout 20 perf stat -e raw_syscalls:sys_enter -- true >/dev/null 2>&1 &&
        stat_events=$stat_events,raw_syscalls:sys_enter
    q0=$(http_get "$PROXY_PORT" /stats | grep -o '"requests_total":[0-9]*' | cut -d: -f2)
    c0=$(redis_calls)
    t0=$(cpu_ticks "$gw")
    timeout $((PSECS + 30)) perf stat -e "$stat_events" -p "$gw" -o "$WORK/perf-stat.txt" -- sleep "$PSECS" \
        >/dev/null 2>&1
    t1=$(cpu_ticks "$gw")
    c1=$(redis_calls)
    q1=$(http_get "$PROXY_PORT" /stats | grep -o '"requests_total":[0-9]*' | cut -d: -f2)
    nreq=$((${q1:-0} - ${q0:-0}))
    wait "$wrk_pid"
    stop_pids "$wrk_pid"
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$WORK/wrk.out")
    echo "## Gateway profile: mode $MODE, $WORKERS worker(s), $CONNS connections, perf record ${ev[*]:-(cycles)} --call-graph ${PROFILE_CALLGRAPH:-dwarf}, ${PSECS} s"
    echo
    echo "wrk over the whole run (slowed while perf record runs): ${rps:-?} req/s; during perf stat: $((nreq / PSECS)) req/s; $(machine_description | head -1)"
    echo
    echo "Top $TOP symbols (perf report --no-children, self time):"
    echo
    echo '```'
    perf report -i "$OUT/perf.data" --no-children --sort dso,sym --stdio -g none 2>/dev/null |
        grep -v '^#' | grep -v '^$' | head -n "$TOP"
    echo '```'
    echo
    echo "Inclusive time (perf report --children) of the gateway's user-space functions, top 25:"
    echo
    echo '```'
    perf report -i "$OUT/perf.data" --children --sort dso,sym --stdio -g none 2>/dev/null |
        grep -v '^#' | grep -v '^$' | grep -v '\[k\]' |
        grep -v -E ' (clone3|start_thread|__libc_start_main|_start|main)$' | head -n 25
    echo '```'
    echo
    echo "perf stat over ${PSECS} s ($nreq requests by the gateway's /stats):"
    echo
    echo '```'
    grep -E 'task-clock|context-switches|cpu-migrations|page-faults|sys_enter' "$WORK/perf-stat.txt"
    echo '```'
    if [ "$nreq" -gt 0 ]; then
        awk -v n="$nreq" -v ticks=$((t1 - t0)) -v hz="$CLK_TCK" -v calls=$((c1 - c0)) '
            /raw_syscalls:sys_enter/ { gsub(",", "", $1); sc = $1 }
            /context-switches/ { gsub(",", "", $1); cs = $1 }
            END {
                printf "\nApprox. per request: %.1f syscalls, %.2f context switches, %.1f µs gateway CPU, %.2f Redis commands\n",
                    sc / n, cs / n, ticks * 1e6 / hz / n, calls / n }' "$WORK/perf-stat.txt"
    fi
    echo
    echo "perf.data: $OUT/perf.data (perf report -i $OUT/perf.data --no-children)"
else
    log "profile: perf not usable; falling back to valgrind --tool=callgrind (slow; short run)"
    command -v valgrind >/dev/null || die "neither perf nor valgrind is available (apt-get install valgrind)"
    pick_port
    port=$PORT
    start_bg gw-callgrind env -i PATH="$PATH" GATEWAY_HOST=127.0.0.1 GATEWAY_PORT="$port" \
        BACKEND_URL="http://127.0.0.1:$BACKEND_PORT" RATE_LIMIT_REQUESTS=1000000000 ACCESS_LOG=off \
        RATE_LIMIT_KEY_PREFIX=bench-callgrind "${gw_env[@]}" \
        valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" "$BUILD/gateway"
    gw=$BG_PID
    for _ in $(seq 1 300); do port_open "$port" && break; sleep 0.1; done
    port_open "$port" || die "gateway under valgrind did not listen in 30 s"
    run_wrk "$port" "$CONNS" "$PSECS" "$WORK/wrk-callgrind.txt"
    stop_pids "$gw"
    echo "## Gateway profile (callgrind): mode $MODE, $CONNS connections, ${PSECS} s, $W_RPS req/s under valgrind"
    echo
    echo '```'
    callgrind_annotate "$OUT/callgrind.out" 2>/dev/null | sed -n '/^Ir/,$p' | head -n $((TOP + 3))
    echo '```'
fi
