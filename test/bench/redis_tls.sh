#!/usr/bin/env bash
# TLS to Redis against plaintext (issue 15): one redis-server with a plaintext and a TLS
# port (certificates made here with openssl), backend_app as the upstream, and the
# gateway (1 worker, every request checked in Redis: RATE_LIMIT_REQUESTS=10^9) started
# once with redis:// and once with rediss://; wrk drives each for SECONDS, in ROUNDS
# alternating rounds. Prints requests/s and the gateway's CPU per 1,000 requests
# (utime+stime from /proc) of each, and the TLS/plaintext ratios.
# Usage: test/bench/redis_tls.sh [BUILD_DIR] [SECONDS] [ROUNDS] [CONNS]
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH_DIR/../.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
SECS=${2:-5}
ROUNDS=${3:-3}
CONNS=${4:-16}
WRK_THREADS=2
# shellcheck source=test/bench/lib.sh
. "$BENCH_DIR/lib.sh"
BENCH_PKGS="wrk redis-server openssl" # this script needs no nginx or HAProxy
[ -x "$BUILD/gateway" ] && [ -x "$BUILD/backend_app" ] || die "build first: make build"
prepare_run "$(mktemp -d /tmp/gw-bench-redis-tls-XXXXXX)"

# Certificates: a CA and a server certificate for 127.0.0.1.
(
    cd "$WORK"
    K='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes'
    # shellcheck disable=SC2086
    openssl req -x509 $K -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-ca 2>/dev/null
    # shellcheck disable=SC2086
    openssl req -new $K -keyout srv.key -out srv.csr -subj /CN=localhost 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >srv.ext
    openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -out srv.pem -extfile srv.ext 2>/dev/null
)
pick_port
PLAIN=$PORT
pick_port
TLSP=$PORT
start_bg redis redis-server --bind 127.0.0.1 --port "$PLAIN" --tls-port "$TLSP" \
    --tls-cert-file "$WORK/srv.pem" --tls-key-file "$WORK/srv.key" \
    --tls-ca-cert-file "$WORK/ca.pem" --tls-auth-clients no --save '' --appendonly no \
    --dir "$WORK"
wait_port "$TLSP" "$BG_PID" redis
pick_port
BACKEND_PORT=$PORT
start_bg backend env BACKEND_PORT="$BACKEND_PORT" "$BUILD/backend_app"
wait_port "$BACKEND_PORT" "$BG_PID" backend

start_gateway gw-plain "$BACKEND_PORT" REDIS_URL="redis://127.0.0.1:$PLAIN"
P_PORT=$PROXY_PORT P_PID=$PROXY_PID
start_gateway gw-tls "$BACKEND_PORT" REDIS_URL="rediss://127.0.0.1:$TLSP" \
    REDIS_TLS_CA_FILE="$WORK/ca.pem"
T_PORT=$PROXY_PORT T_PID=$PROXY_PID

declare -A reqs=() ticks=() rps=()
for r in $(seq 1 "$ROUNDS"); do
    for v in plain tls; do
        if [ $v = plain ]; then port=$P_PORT pid=$P_PID; else port=$T_PORT pid=$T_PID; fi
        c0=$(cpu_ticks "$pid")
        run_wrk "$port" "$CONNS" "$SECS" "$WORK/wrk-$v-$r.txt"
        c1=$(cpu_ticks "$pid")
        [ "$W_NON2XX" = 0 ] && [ "$W_SOCKERR" = 0 ] || die "$v: errors; see $WORK/wrk-$v-$r.txt"
        reqs[$v]=$((${reqs[$v]:-0} + W_REQS))
        ticks[$v]=$((${ticks[$v]:-0} + c1 - c0))
        rps[$v]="${rps[$v]:-} $W_RPS"
        log "round $r $v: $W_RPS req/s, $((c1 - c0)) ticks for $W_REQS requests"
    done
done
grep -q "redis connection" "$WORK/gw-tls.out" && log "$(grep 'redis' "$WORK/gw-tls.out" | head -3)"
awk -v pr="${reqs[plain]}" -v pt="${ticks[plain]}" -v tr="${reqs[tls]}" -v tt="${ticks[tls]}" \
    -v hz="$CLK_TCK" -v rp="${rps[plain]}" -v rt="${rps[tls]}" 'BEGIN {
    cp = pt / hz * 1e6 / pr; ct = tt / hz * 1e6 / tr
    printf "| Redis link | req/s per round | gateway CPU per request |\n| --- | --- | --- |\n"
    printf "| plaintext | %s | %.1f us |\n| TLS | %s | %.1f us |\n", rp, cp, rt, ct
    printf "TLS / plaintext CPU per request: %.2f x\n", ct / cp }'
