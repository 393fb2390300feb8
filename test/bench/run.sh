#!/usr/bin/env bash
# `make bench`: the gateway side by side with nginx and HAProxy (issues 6 and 16). Starts on
# loopback an nginx backend with a fixed small JSON body, Redis, and the targets (direct,
# nginx proxy, HAProxy, gateway with memory store / Redis store / every request over the
# limit), runs wrk on them in turn for several rounds, measures CPU per request from /proc,
# Redis commands and reads per request, backend connections opened per 1,000 requests, the
# cost of the Redis deployment modes (plaintext, TLS, a 3-master Redis Cluster), the
# in-flight cap's overhead, the access log's cost beside nginx's, and the gateway's RSS
# with 10k idle connections and through 1 GiB streamed each way; prints Markdown tables.
# The gateway runs at its DEFAULT settings except RATE_LIMIT_REQUESTS=1000000000 and
# ACCESS_LOG=off (see start_gateway in lib.sh); rows that change more say so.
#
# Usage: bash test/bench/run.sh [build-dir]      (build-dir holds gateway and backend_app)
# Environment (defaults in brackets):
#   BENCH_SECONDS [10]  seconds per wrk run      BENCH_ROUNDS [2]       rounds (A B C A B C)
#   BENCH_CONNS ["50 200"]  connection counts    BENCH_WORKERS ["1 2"]  worker passes
#   BENCH_WRK_THREADS [2]   wrk threads          BENCH_UPSTREAM_KEEPALIVE [256] nginx's
#                                                 upstream keepalive (the gateway: its default)
#   BENCH_IDLE_CONNS [10000]                     BENCH_STREAM_BYTES [1073741824]
#   BENCH_PARTS ["table redis-modes cap accesslog memory"]  which parts to run
#   BENCH_OUT [<build-dir>/bench]  results, logs and table.md
#   BENCH_PORT_BASE [18400]  first port tried (each port is checked to be free)
set -uo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/../.." && pwd)
# shellcheck source=lib.sh
. "$BENCH_DIR/lib.sh"

BUILD=$(resolve_build_dir "${1:-build}") || exit 1
[ -x "$BUILD/gateway" ] && [ -x "$BUILD/backend_app" ] ||
    die "$BUILD/gateway or $BUILD/backend_app missing (build first)"

SECS=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-2}
CONNS=${BENCH_CONNS:-"50 200"}
WORKER_PASSES=${BENCH_WORKERS:-"1 2"}
WRK_THREADS=${BENCH_WRK_THREADS:-2}
UPSTREAM_KEEPALIVE=${BENCH_UPSTREAM_KEEPALIVE:-256}
IDLE_CONNS=${BENCH_IDLE_CONNS:-10000}
STREAM_BYTES=${BENCH_STREAM_BYTES:-1073741824}
PARTS=${BENCH_PARTS:-"table redis-modes cap accesslog memory"}
OUT=${BENCH_OUT:-$BUILD/bench}
for v in SECS ROUNDS WRK_THREADS UPSTREAM_KEEPALIVE IDLE_CONNS STREAM_BYTES; do
    [[ ${!v} =~ ^[0-9]+$ ]] && [ "${!v}" -ge 1 ] || die "$v=${!v}: must be a positive integer"
done

BENCH_PKGS="$BENCH_PKGS openssl" # the redis-modes part's certificates
prepare_run "$OUT"

cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -o "$WORK/bench_client" "$BENCH_DIR/bench_client.c" ||
    die "cannot compile bench_client.c"

RESULTS=$OUT/results.tsv
printf 'workers\tconns\tround\ttarget\trps\treqs\tp50_ms\tp99_ms\tcpu_proxy_us\tcpu_redis_us\tredis_cmds_per_req\tredis_reads_per_req\tnon2xx\tsockerr\tbackend_conns_per_1k\n' >"$RESULTS"

MACHINE=$(machine_description)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "== gateway benchmark: $(date -u '+%Y-%m-%d %H:%M UTC')"
log "$MACHINE"
log "wrk: $WRK_THREADS thread(s), keep-alive, ${SECS}s per run, $ROUNDS round(s), connections: $CONNS"
log "gateway: $BUILD/gateway; results and logs: $OUT"

start_redis
start_backend_nginx
log "backend nginx on :$BACKEND_PORT (pid $BACKEND_PID), redis on :$REDIS_PORT (pid $REDIS_PID)"

# ---- part 1: the side-by-side table ---------------------------------------------------

# Targets of one pass, parallel arrays. T_PIDS: PIDs whose CPU counts ("" for direct);
# for nginx the master's children are added at each reading.
T_NAMES=() T_PORTS=() T_PIDS=() T_NGINX=()

add_target() {
    T_NAMES+=("$1")
    T_PORTS+=("$2")
    T_PIDS+=("$3")
    T_NGINX+=("$4")
}

target_pids() {
    local i=$1
    if [ "${T_NGINX[$i]}" = 1 ]; then pid_tree "${T_PIDS[$i]}"; else echo "${T_PIDS[$i]}"; fi
}

# measure WORKERS CONNS ROUND INDEX: one wrk run on target INDEX, one results.tsv line.
declare -A NGINX_RPS NGINX_P99 NGINX_CPU
measure() {
    local w=$1 c=$2 r=$3 i=$4
    local name=${T_NAMES[$4]} pids=() t0 t1 rc0 rc1 c0 c1 s0 s1 a0 a1 cpu_p cpu_r cmds reads bconn
    local out=$WORK/wrk-w$1-c$2-r$3-${T_NAMES[$4]}.txt
    [ -n "${T_PIDS[$i]}" ] && mapfile -t pids < <(target_pids "$i")
    t0=$(cpu_ticks "${pids[@]}")
    rc0=$(cpu_ticks "$REDIS_PID")
    c0=$(redis_calls)
    s0=$(syscr "$REDIS_PID")
    a0=$(backend_accepts)
    run_wrk "${T_PORTS[$i]}" "$c" "$SECS" "$out"
    a1=$(backend_accepts)
    t1=$(cpu_ticks "${pids[@]}")
    rc1=$(cpu_ticks "$REDIS_PID")
    c1=$(redis_calls)
    s1=$(syscr "$REDIS_PID")
    local reqs=$W_REQS
    [ "$reqs" -gt 0 ] || reqs=1
    cpu_p=$(awk -v d=$((t1 - t0)) -v n="$reqs" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
    cpu_r=$(awk -v d=$((rc1 - rc0)) -v n="$reqs" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
    cmds=$(awk -v d=$((c1 - c0)) -v n="$reqs" 'BEGIN { printf "%.3f", d / n }')
    reads=$(awk -v d=$((s1 - s0)) -v n="$reqs" 'BEGIN { printf "%.3f", d / n }')
    # The second reading is one of the connections counted.
    bconn=$(awk -v d=$((${a1:-0} - ${a0:-0} - 1)) -v n="$reqs" 'BEGIN { printf "%.3f", (d < 0 ? 0 : d) * 1000 / n }')
    [ -n "${T_PIDS[$i]}" ] || cpu_p=0
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$w" "$c" "$r" "$name" \
        "$W_RPS" "$W_REQS" "$W_P50" "$W_P99" "$cpu_p" "$cpu_r" "$cmds" "$reads" "$W_NON2XX" \
        "$W_SOCKERR" "$bconn" >>"$RESULTS"
    [ "$((c1 - c0))" -gt 0 ] && echo "w=$w c=$c r=$r $name: $(redis_breakdown)" >>"$WORK/redis-commandstats.log"
    local key="$w/$c/$r" ratio=""
    if [ "$name" = nginx ]; then
        NGINX_RPS[$key]=$W_RPS NGINX_P99[$key]=$W_P99
        NGINX_CPU[$key]=$(awk -v a="$cpu_p" -v b="$cpu_r" 'BEGIN { print a + b }')
    elif [ -n "${NGINX_RPS[$key]:-}" ]; then
        ratio=$(awk -v r="$W_RPS" -v nr="${NGINX_RPS[$key]}" -v p="$W_P99" -v np="${NGINX_P99[$key]}" \
            -v cp="$cpu_p" -v cr="$cpu_r" -v nc="${NGINX_CPU[$key]}" -v d="${T_PIDS[$i]}" 'BEGIN {
            printf "  [×nginx: req/s %.2f, p99 %.2f", r / nr, (np > 0 ? p / np : 0)
            if (d != "" && nc > 0) printf ", CPU %.2f", (cp + cr) / nc
            printf "]" }')
    fi
    printf '  w=%s c=%-3s round %s %-13s %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  CPU %6.2f + Redis %5.2f µs/req  Redis cmds %.2f reads %.2f /req  backend conns %.2f /1k  non-2xx %s err %s%s\n' \
        "$w" "$c" "$r" "$name" "$W_RPS" "$W_P50" "$W_P99" "$cpu_p" "$cpu_r" "$cmds" "$reads" \
        "$bconn" "$W_NON2XX" "$W_SOCKERR" "$ratio" >&2
}

# check_target INDEX: one request must succeed before we measure (429 allowed for the
# over-limit target); the Redis gateways must report Redis connected.
check_target() {
    local i=$1 name=${T_NAMES[$1]} port=${T_PORTS[$1]} resp
    resp=$(http_get "$port" /users/1)
    case "$resp" in
    "HTTP/1.1 200"* | "HTTP/1.1 429"*) ;;
    *) die "$name on :$port did not answer a GET (got: ${resp:0:80})" ;;
    esac
    if [[ $name == gw-redis* ]]; then
        resp=$(http_get "$port" /health)
        [[ $resp == *'"redis":"connected"'* ]] || die "$name: Redis not connected: ${resp##*$'\r\n\r\n'}"
    fi
}

run_pass() {
    local w=$1 pass_pids=() i r c
    T_NAMES=() T_PORTS=() T_PIDS=() T_NGINX=()
    local redis_url="redis://127.0.0.1:$REDIS_PORT"
    start_nginx_proxy "nginx-proxy-w$w" "$w"
    add_target nginx "$PROXY_PORT" "$PROXY_PID" 1
    pass_pids+=("$PROXY_PID")
    add_target direct "$BACKEND_PORT" "" 0
    start_haproxy "haproxy-w$w" "$w"
    add_target haproxy "$PROXY_PORT" "$PROXY_PID" 0
    pass_pids+=("$PROXY_PID")
    start_gateway "gw-memory-w$w" "$BACKEND_PORT" WORKER_THREADS="$w"
    add_target gw-memory "$PROXY_PORT" "$PROXY_PID" 0
    pass_pids+=("$PROXY_PID")
    start_gateway "gw-redis-w$w" "$BACKEND_PORT" WORKER_THREADS="$w" REDIS_URL="$redis_url"
    add_target gw-redis "$PROXY_PORT" "$PROXY_PID" 0
    pass_pids+=("$PROXY_PID")
    # Issue 11: the same with a rules file of 50 limits (mixed prefixes,
    # methods, a few regexes) of which one applies to the benchmark's GET.
    start_gateway "gw-redis-rules50-w$w" "$BACKEND_PORT" WORKER_THREADS="$w" REDIS_URL="$redis_url" \
        RATE_LIMIT_RULES_FILE="$RULES50"
    add_target gw-redis-rules50 "$PROXY_PORT" "$PROXY_PID" 0
    pass_pids+=("$PROXY_PID")
    start_gateway "gw-redis-429-w$w" "$BACKEND_PORT" WORKER_THREADS="$w" REDIS_URL="$redis_url" \
        RATE_LIMIT_REQUESTS=1
    add_target gw-redis-429 "$PROXY_PORT" "$PROXY_PID" 0
    pass_pids+=("$PROXY_PID")

    for i in "${!T_NAMES[@]}"; do check_target "$i"; done
    log "-- pass: $w worker(s) per proxy; warm-up 1 s per target"
    for i in "${!T_NAMES[@]}"; do run_wrk "${T_PORTS[$i]}" 50 1 "$WORK/warmup.txt"; done
    for r in $(seq 1 "$ROUNDS"); do
        for c in $CONNS; do
            for i in "${!T_NAMES[@]}"; do measure "$w" "$c" "$r" "$i"; done
        done
    done
    stop_pids "${pass_pids[@]}"
}

# rules50_file PATH: 50 limits, 49 of which do not match GET /users/1: exact
# paths, prefixes with methods, header conditions and POSIX regexes; the
# last matches every request with the default's budget.
rules50_file() {
    local f=$1 i
    {
        echo "version: 1"
        echo "limits:"
        for i in $(seq 1 49); do
            case $((i % 4)) in
            0) echo "  - { name: exact-$i, match: { path: /v1/item-$i }, rates: [ { requests: 100, window: 1m } ] }" ;;
            1) echo "  - { name: prefix-$i, match: { methods: [POST, PUT], path_prefix: /api/v$i/ }, rates: [ { requests: 100, window: 1s }, { requests: 10000, window: 1h } ] }" ;;
            2) echo "  - { name: header-$i, match: { path_prefix: /shop/$i/, headers: { X-Plan: free } }, key: header:X-API-Key, rates: [ { requests: 10, window: 1s, algorithm: token_bucket, burst: 20 } ] }" ;;
            3) echo "  - { name: regex-$i, match: { path_regex: \"/files/[0-9]+/part-$i\" }, rates: [ { requests: 5, window: 10s, algorithm: sliding_window } ] }" ;;
            esac
        done
        echo "  - { name: all, rates: [ { requests: 1000000000, window: 1m } ] }"
    } >"$f"
}
RULES50=$WORK/rules50.yaml
rules50_file "$RULES50"
"$BUILD/gateway" --check-rules "$RULES50" >/dev/null || die "the 50-limit rules file is invalid"

if [[ " $PARTS " == *" table "* ]]; then
    for w in $WORKER_PASSES; do run_pass "$w"; done
fi

# ---- part 1b: Redis deployment modes (issue 15) ----------------------------------------------

# The gateway (1 worker, every request checked in Redis) against one plaintext
# redis-server (the one above), the same over TLS, and a 3-master Redis Cluster, in the
# same rounds; wrk rotates an X-Api-Key header over MODES_KEYS values
# (RATE_LIMIT_KEY=header:X-Api-Key), so the counters spread over all slots and masters.
MODES_TSV=$OUT/redis-modes.tsv
MODES_KEYS=1000
MODES_CONNS=50
MODES=(plain tls cluster)
printf 'round\tmode\trps\treqs\tp50_ms\tp99_ms\tcpu_gw_us\tcpu_redis_us\tscript_calls_per_req\tredis_cmds_per_req\tredis_reads_per_req\tredis_in_bytes_per_req\tredis_out_bytes_per_req\tnon2xx\tsockerr\n' >"$MODES_TSV"
declare -A M_PORT=() M_GW=() M_RPIDS=() M_RPORTS=()

# modes_certs: a CA and a server certificate for 127.0.0.1 in $WORK (ca.pem, srv.pem, srv.key).
modes_certs() {
    (
        cd "$WORK" || exit 1
        K='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes'
        # shellcheck disable=SC2086
        openssl req -x509 $K -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-ca &&
            openssl req -new $K -keyout srv.key -out srv.csr -subj /CN=localhost &&
            printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >srv.ext &&
            openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
                -out srv.pem -extfile srv.ext
    ) >"$WORK/openssl.out" 2>&1 || die "openssl could not make the certificates; see $WORK/openssl.out"
}

# rcli PORT ARGS...: redis-cli to 127.0.0.1:PORT (over TLS for the TLS server), 5 s at most.
rcli() {
    local port=$1 tls=()
    shift
    [ "$port" = "${M_RPORTS[tls]:-}" ] && tls=(--tls --cacert "$WORK/ca.pem")
    timeout 5 redis-cli "${tls[@]}" -h 127.0.0.1 -p "$port" "$@" 2>/dev/null
}

# modes_calls PORT...: "scripts commands bytes_in bytes_out" summed over the servers' INFO
# (scripts: EVALSHA + EVAL calls; commands: every commandstats call but our INFO, those
# inside scripts too; bytes: total_net_input_bytes and total_net_output_bytes).
modes_calls() {
    local p
    for p in "$@"; do rcli "$p" INFO stats commandstats; done | tr -d '\r' |
        awk -F'[:=,]' '/^cmdstat_/ && $1 != "cmdstat_info" { s += $3 }
            $1 == "cmdstat_evalsha" || $1 == "cmdstat_eval" { e += $3 }
            $1 == "total_net_input_bytes" { bi += $2 }
            $1 == "total_net_output_bytes" { bo += $2 }
            END { printf "%d %d %.0f %.0f\n", e, s, bi, bo }'
}

# modes_syscr PID...: read-type syscalls of the servers, summed.
modes_syscr() {
    local p t=0
    for p in "$@"; do t=$((t + $(syscr "$p"))); done
    echo "$t"
}

start_redis_tls() {
    modes_certs
    pick_port
    local port=$PORT
    start_bg redis-tls redis-server --bind 127.0.0.1 --port 0 --tls-port "$port" \
        --tls-cert-file "$WORK/srv.pem" --tls-key-file "$WORK/srv.key" \
        --tls-ca-cert-file "$WORK/ca.pem" --tls-auth-clients no --save '' --appendonly no \
        --protected-mode yes --loglevel warning --dir "$WORK" --maxclients 10000
    wait_port "$port" "$BG_PID" redis-tls
    M_RPIDS[tls]=$BG_PID M_RPORTS[tls]=$port
}

# start_redis_cluster: 3 masters on loopback (each with its own bus port), joined with
# redis-cli --cluster create; waits (at most 30 s) until every node says cluster_state:ok.
start_redis_cluster() {
    local k port bus pids=() ports=() addrs=() i ok p
    for k in 1 2 3; do
        pick_port
        port=$PORT
        pick_port
        bus=$PORT
        start_bg "redis-cluster-$k" redis-server --bind 127.0.0.1 --port "$port" \
            --cluster-enabled yes --cluster-config-file "$WORK/nodes-$port.conf" \
            --cluster-port "$bus" --save '' --appendonly no --protected-mode yes \
            --loglevel warning --dir "$WORK" --maxclients 10000
        wait_port "$port" "$BG_PID" "redis-cluster-$k"
        pids+=("$BG_PID")
        ports+=("$port")
        addrs+=("127.0.0.1:$port")
    done
    timeout 60 redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes \
        </dev/null >"$WORK/cluster-create.out" 2>&1 ||
        die "redis-cli --cluster create failed; see $WORK/cluster-create.out"
    for i in $(seq 1 300); do
        ok=0
        for p in "${ports[@]}"; do
            rcli "$p" CLUSTER INFO | tr -d '\r' | grep -qx 'cluster_state:ok' && ok=$((ok + 1))
        done
        [ "$ok" -eq 3 ] && break
        [ "$i" -eq 300 ] && die "the cluster did not reach cluster_state:ok in 30 s"
        sleep 0.1
    done
    M_RPIDS[cluster]="${pids[*]}" M_RPORTS[cluster]="${ports[*]}"
}

# modes_wrk_script PATH: wrk Lua that sends GET /users/1 with X-Api-Key rotating over
# MODES_KEYS values, each wrk thread from its own offset; requests formatted once.
modes_wrk_script() {
    cat >"$1" <<LUA
local n, reqs, i = $MODES_KEYS, {}, 0
local threads = 0
function setup(thread)
    threads = threads + 1
    thread:set("tid", threads)
end
function init(args)
    for k = 1, n do
        reqs[k] = wrk.format("GET", "/users/1", { ["X-Api-Key"] = "bench-key-" .. k })
    end
    i = ((tid or 1) - 1) * 397 % n
end
function request()
    i = i % n + 1
    return reqs[i]
end
LUA
}

# modes_measure ROUND MODE: one wrk run, one redis-modes.tsv line.
modes_measure() {
    local r=$1 m=$2 g0 g1 rc0 rc1 s0 s1 x0 x1 e0 e1 i0 i1 o0 o1 cpu_g cpu_r calls cmds reads reqs
    local bin bout
    local -a rpids rports
    read -ra rpids <<<"${M_RPIDS[$m]}"
    read -ra rports <<<"${M_RPORTS[$m]}"
    local out=$WORK/wrk-modes-r$r-$m.txt
    g0=$(cpu_ticks "${M_GW[$m]}")
    rc0=$(cpu_ticks "${rpids[@]}")
    read -r e0 x0 i0 o0 < <(modes_calls "${rports[@]}")
    s0=$(modes_syscr "${rpids[@]}")
    run_wrk "${M_PORT[$m]}" "$MODES_CONNS" "$SECS" "$out" "$MODES_LUA"
    g1=$(cpu_ticks "${M_GW[$m]}")
    rc1=$(cpu_ticks "${rpids[@]}")
    read -r e1 x1 i1 o1 < <(modes_calls "${rports[@]}")
    s1=$(modes_syscr "${rpids[@]}")
    reqs=$W_REQS
    [ "$reqs" -gt 0 ] || reqs=1
    cpu_g=$(awk -v d=$((g1 - g0)) -v n="$reqs" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
    cpu_r=$(awk -v d=$((rc1 - rc0)) -v n="$reqs" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
    calls=$(awk -v d=$((e1 - e0)) -v n="$reqs" 'BEGIN { printf "%.3f", d / n }')
    cmds=$(awk -v d=$((x1 - x0)) -v n="$reqs" 'BEGIN { printf "%.3f", d / n }')
    reads=$(awk -v d=$((s1 - s0)) -v n="$reqs" 'BEGIN { printf "%.3f", d / n }')
    bin=$(awk -v d=$((i1 - i0)) -v n="$reqs" 'BEGIN { printf "%.1f", d / n }')
    bout=$(awk -v d=$((o1 - o0)) -v n="$reqs" 'BEGIN { printf "%.1f", d / n }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$m" "$W_RPS" \
        "$W_REQS" "$W_P50" "$W_P99" "$cpu_g" "$cpu_r" "$calls" "$cmds" "$reads" "$bin" "$bout" \
        "$W_NON2XX" "$W_SOCKERR" >>"$MODES_TSV"
    printf '  round %s %-8s %8.0f req/s  p99 %6.2f ms  gateway CPU %6.2f + Redis %5.2f µs/req  scripts %.3f cmds %.2f reads %.2f bytes in %s out %s /req  non-2xx %s err %s\n' \
        "$r" "$m" "$W_RPS" "$W_P99" "$cpu_g" "$cpu_r" "$calls" "$cmds" "$reads" "$bin" "$bout" \
        "$W_NON2XX" "$W_SOCKERR" >&2
}

if [[ " $PARTS " == *" redis-modes "* ]]; then
    log "-- Redis modes: gateway 1 worker, $MODES_CONNS connections, X-Api-Key over $MODES_KEYS values; plaintext, TLS, 3-master cluster"
    M_RPIDS[plain]=$REDIS_PID M_RPORTS[plain]=$REDIS_PORT
    start_redis_tls
    start_redis_cluster
    log "  redis: plaintext :$REDIS_PORT, TLS :${M_RPORTS[tls]}, cluster :${M_RPORTS[cluster]// /, :}"
    MODES_LUA=$WORK/apikeys.lua
    modes_wrk_script "$MODES_LUA"
    modes_env=(RATE_LIMIT_KEY=header:X-Api-Key)
    start_gateway gw-modes-plain "$BACKEND_PORT" "${modes_env[@]}" \
        REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
    M_PORT[plain]=$PROXY_PORT M_GW[plain]=$PROXY_PID
    start_gateway gw-modes-tls "$BACKEND_PORT" "${modes_env[@]}" \
        REDIS_URL="rediss://127.0.0.1:${M_RPORTS[tls]}" REDIS_TLS_CA_FILE="$WORK/ca.pem"
    M_PORT[tls]=$PROXY_PORT M_GW[tls]=$PROXY_PID
    cl_nodes=""
    for p in ${M_RPORTS[cluster]}; do cl_nodes+="${cl_nodes:+,}127.0.0.1:$p"; done
    start_gateway gw-modes-cluster "$BACKEND_PORT" "${modes_env[@]}" REDIS_CLUSTER_NODES="$cl_nodes"
    M_PORT[cluster]=$PROXY_PORT M_GW[cluster]=$PROXY_PID
    for m in "${MODES[@]}"; do
        resp=$(http_get "${M_PORT[$m]}" /health)
        [[ $resp == *'"redis":"connected"'* ]] ||
            die "gw-modes-$m: Redis not connected: ${resp##*$'\r\n\r\n'}; see $WORK/gw-modes-$m.out"
        run_wrk "${M_PORT[$m]}" "$MODES_CONNS" 1 "$WORK/warmup.txt" "$MODES_LUA"
    done
    for r in $(seq 1 "$ROUNDS"); do
        for m in "${MODES[@]}"; do modes_measure "$r" "$m"; done
    done
    # Every key reached every master (the cluster's keys per node).
    for p in ${M_RPORTS[cluster]}; do
        log "  cluster node :$p holds $(rcli "$p" DBSIZE) keys"
    done
    read -ra cl_pids <<<"${M_RPIDS[cluster]}"
    stop_pids "${M_GW[plain]}" "${M_GW[tls]}" "${M_GW[cluster]}" "${cl_pids[@]}" "${M_RPIDS[tls]}"
fi

# ---- part 2: in-flight cap overhead ----------------------------------------------------

CAP_TSV=$OUT/cap.tsv
printf 'round\ttarget\trps\treqs\tp50_ms\tp99_ms\tcpu_us\tnon2xx\tsockerr\n' >"$CAP_TSV"
if [[ " $PARTS " == *" cap "* ]]; then
    log "-- in-flight cap: memory store, 1 worker, 200 connections, cap 100 vs 1000000"
    start_gateway gw-nocap "$BACKEND_PORT" MAX_CONCURRENT_REQUESTS=1000000
    nocap_port=$PROXY_PORT nocap_pid=$PROXY_PID
    start_gateway gw-cap100 "$BACKEND_PORT" MAX_CONCURRENT_REQUESTS=100
    cap_port=$PROXY_PORT cap_pid=$PROXY_PID
    run_wrk "$nocap_port" 50 1 "$WORK/warmup.txt"
    run_wrk "$cap_port" 50 1 "$WORK/warmup.txt"
    for r in $(seq 1 "$ROUNDS"); do
        for t in nocap cap100; do
            if [ $t = nocap ]; then port=$nocap_port pid=$nocap_pid; else port=$cap_port pid=$cap_pid; fi
            t0=$(cpu_ticks "$pid")
            run_wrk "$port" 200 "$SECS" "$WORK/wrk-cap-r$r-$t.txt"
            t1=$(cpu_ticks "$pid")
            reqs=$W_REQS
            [ "$reqs" -gt 0 ] || reqs=1
            cpu=$(awk -v d=$((t1 - t0)) -v n="$reqs" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$t" "$W_RPS" "$W_REQS" "$W_P50" \
                "$W_P99" "$cpu" "$W_NON2XX" "$W_SOCKERR" >>"$CAP_TSV"
            printf '  round %s %-7s %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  CPU %6.2f µs/req  non-2xx %s err %s\n' \
                "$r" "$t" "$W_RPS" "$W_P50" "$W_P99" "$cpu" "$W_NON2XX" "$W_SOCKERR" >&2
        done
    done
    stop_pids "$nocap_pid" "$cap_pid"
fi

# ---- part 2b: the access log's cost --------------------------------------------------------

# Both sides log every request (SPEC §7: ACCESS_LOG=on is the gateway's default): the
# gateway its JSON lines to stdout (a file here), nginx its default combined log to a file.
# The same pair with logging off gives each side's cost per logged request.
LOG_TSV=$OUT/accesslog.tsv
printf 'round\ttarget\trps\treqs\tcpu_us\n' >"$LOG_TSV"
if [[ " $PARTS " == *" accesslog "* ]]; then
    log "-- access log: memory store, 1 worker, 200 connections, log on and off, gateway and nginx"
    start_nginx_proxy nginx-log 1 "$WORK/nginx-access.log"
    nlog_port=$PROXY_PORT nlog_pid=$PROXY_PID
    start_nginx_proxy nginx-nolog 1
    nnolog_port=$PROXY_PORT nnolog_pid=$PROXY_PID
    start_gateway gw-log "$BACKEND_PORT" ACCESS_LOG=on
    glog_port=$PROXY_PORT glog_pid=$PROXY_PID
    start_gateway gw-nolog "$BACKEND_PORT"
    gnolog_port=$PROXY_PORT gnolog_pid=$PROXY_PID
    declare -A LOG_PORT=([nginx-log]=$nlog_port [nginx-nolog]=$nnolog_port [gw-log]=$glog_port
        [gw-nolog]=$gnolog_port)
    declare -A LOG_PID=([nginx-log]=$nlog_pid [nginx-nolog]=$nnolog_pid [gw-log]=$glog_pid
        [gw-nolog]=$gnolog_pid)
    for t in nginx-log nginx-nolog gw-log gw-nolog; do
        run_wrk "${LOG_PORT[$t]}" 50 1 "$WORK/warmup.txt"
    done
    for r in $(seq 1 "$ROUNDS"); do
        for t in nginx-log nginx-nolog gw-log gw-nolog; do
            if [[ $t == nginx* ]]; then mapfile -t pids < <(pid_tree "${LOG_PID[$t]}"); else pids=("${LOG_PID[$t]}"); fi
            t0=$(cpu_ticks "${pids[@]}")
            run_wrk "${LOG_PORT[$t]}" 200 "$SECS" "$WORK/wrk-log-r$r-$t.txt"
            t1=$(cpu_ticks "${pids[@]}")
            reqs=$W_REQS
            [ "$reqs" -gt 0 ] || reqs=1
            cpu=$(awk -v d=$((t1 - t0)) -v n="$reqs" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
            printf '%s\t%s\t%s\t%s\t%s\n' "$r" "$t" "$W_RPS" "$W_REQS" "$cpu" >>"$LOG_TSV"
            printf '  round %s %-11s %8.0f req/s  CPU %6.2f µs/req\n' "$r" "$t" "$W_RPS" "$cpu" >&2
        done
    done
    log "  log lines written: gateway $(grep -c '^{' "$WORK/gw-log.out"), nginx $(wc -l <"$WORK/nginx-access.log")"
    stop_pids "$nlog_pid" "$nnolog_pid" "$glog_pid" "$gnolog_pid"
fi

# ---- part 3: memory ------------------------------------------------------------------------

MEM_TSV=$OUT/memory.tsv
printf 'test\tbaseline_kib\tpeak_kib\tgrowth_kib\tok\tseconds\tnote\n' >"$MEM_TSV"

# sample_rss PID WATCH_PID MAX_SAMPLES: VmRSS of PID every 100 ms while WATCH_PID runs;
# prints the highest value (KiB).
sample_rss() {
    local pid=$1 watch=$2 max=0 v i
    for i in $(seq 1 "$3"); do
        v=$(rss_kib "$pid")
        [ -n "$v" ] && [ "$v" -gt "$max" ] && max=$v
        kill -0 "$watch" 2>/dev/null || break
        [ "$(awk '{ print $3 }' "/proc/$watch/stat" 2>/dev/null)" = Z ] && break
        sleep 0.1
    done
    echo "$max"
}

if [[ " $PARTS " == *" memory "* ]]; then
    log "-- memory: $IDLE_CONNS idle keep-alive connections (memory store, 1 worker)"
    start_gateway gw-idle "$BACKEND_PORT" MAX_CONNECTIONS=$((IDLE_CONNS + 1000))
    idle_pid=$PROXY_PID idle_port=$PROXY_PORT
    http_get "$idle_port" /users/1 >/dev/null
    base=$(rss_kib "$idle_pid")
    start_bg idle-client "$WORK/bench_client" idle 127.0.0.1 "$idle_port" "$IDLE_CONNS" 300
    client_pid=$BG_PID
    t_start=$(date +%s)
    ok=0
    for _ in $(seq 1 1800); do # up to 180 s to open and use them
        grep -q '^ready' "$WORK/idle-client.out" 2>/dev/null && break
        kill -0 "$client_pid" 2>/dev/null || break
        sleep 0.1
    done
    opened=$(awk '/^ready/ { print $2 }' "$WORK/idle-client.out")
    sleep 1 # let the gateway finish any work on the last connections
    peak=$(rss_kib "$idle_pid")
    active=$(http_get "$idle_port" /stats | grep -o '"connections_active":[0-9]*' | cut -d: -f2)
    [ "${opened:-0}" -eq "$IDLE_CONNS" ] && ok=1
    printf 'idle-%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$IDLE_CONNS" "$base" "$peak" $((peak - base)) "$ok" \
        $(($(date +%s) - t_start)) "opened ${opened:-0}, gateway connections_active ${active:-?}" >>"$MEM_TSV"
    log "  idle: baseline $base KiB, with ${opened:-0} idle connections $peak KiB (gateway reports ${active:-?} active)"
    stop_pids "$client_pid" "$idle_pid"

    log "-- memory: $STREAM_BYTES bytes up and down through the gateway (backend_app)"
    pick_port
    app_port=$PORT
    start_bg backend-app env -i PATH="$PATH" BACKEND_HOST=127.0.0.1 BACKEND_PORT="$app_port" \
        "$BUILD/backend_app"
    app_pid=$BG_PID
    wait_port "$app_port" "$app_pid" backend-app
    start_gateway gw-stream "$app_port" MAX_BODY_BYTES=0 UPSTREAM_TIMEOUT_MS=120000
    st_pid=$PROXY_PID st_port=$PROXY_PORT
    http_get "$st_port" /users/1 >/dev/null
    for dir in upload download; do
        base=$(rss_kib "$st_pid")
        t_start=$(date +%s)
        start_bg "$dir-client" timeout 600 "$WORK/bench_client" "$dir" 127.0.0.1 "$st_port" \
            "$STREAM_BYTES"
        client_pid=$BG_PID
        peak=$(sample_rss "$st_pid" "$client_pid" 6000)
        wait "$client_pid"
        rc=$?
        stop_pids "$client_pid"
        secs=$(($(date +%s) - t_start))
        ok=$([ $rc -eq 0 ] && echo 1 || echo 0)
        printf '%s-%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$dir" "$STREAM_BYTES" "$base" "$peak" \
            $((peak - base)) "$ok" "$secs" "$(tr '\n' ' ' <"$WORK/$dir-client.out")" >>"$MEM_TSV"
        log "  $dir: baseline $base KiB, peak $peak KiB, growth $((peak - base)) KiB, ${secs}s, client exit $rc"
    done
    stop_pids "$st_pid" "$app_pid"
fi

# ---- summary ----------------------------------------------------------------------------------

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
{
    echo "Machine: $(echo "$MACHINE" | head -1); load average at start $LOAD_START, at end $LOAD_END" \
        "(anything else running on the box shows up as noise; ratios come from the same round)."
    echo
    echo "Versions: $(echo "$MACHINE" | tail -1)"
    echo
    echo "Command: \`make bench\` (\`bash test/bench/run.sh build\`), wrk $WRK_THREADS thread(s), keep-alive," \
        "${SECS} s per run, $ROUNDS rounds, targets in turn; medians over rounds; ratios to nginx" \
        "in the same round. Proxies: nginx \`worker_processes N\`, HAProxy \`nbthread N\`, gateway" \
        "\`WORKER_THREADS=N\`; the gateway at its defaults (\`UPSTREAM_KEEPALIVE=auto\`," \
        "\`MAX_CONCURRENT_REQUESTS=100\`) but \`RATE_LIMIT_REQUESTS=1000000000\` and \`ACCESS_LOG=off\`;" \
        "nginx \`keepalive $UPSTREAM_KEEPALIVE\` to the backend. Backend conns = connections the backend" \
        "accepted per 1,000 requests (nginx stub_status). CPU = utime+stime" \
        "from /proc of the proxy process (nginx: master + workers) / requests; Redis reads = read(2)" \
        "calls of redis-server (≈ round trips); Redis cmds = INFO commandstats calls (commands a Lua script" \
        "runs count too)."
    echo
    if [ "$(wc -l <"$RESULTS")" -gt 1 ]; then
        awk -f "$BENCH_DIR/median.awk" -f "$BENCH_DIR/summary.awk" "$RESULTS"
        echo
    fi
    if [ "$(wc -l <"$MODES_TSV")" -gt 1 ]; then
        echo "Redis deployment modes (issue 15; gateway 1 worker, $MODES_CONNS connections," \
            "\`RATE_LIMIT_KEY=header:X-Api-Key\` with wrk rotating the header over $MODES_KEYS values," \
            "every request allowed and checked in Redis; medians over rounds; ratios to plaintext in" \
            "the same round; Redis CPU, calls and reads summed over the cluster's 3 masters; script" \
            "calls = EVALSHA + EVAL, Redis cmds = every INFO commandstats call, those inside scripts too):"
        echo
        awk -f "$BENCH_DIR/median.awk" -f "$BENCH_DIR/modes_summary.awk" "$MODES_TSV"
        echo
    fi
    if [ "$(wc -l <"$CAP_TSV")" -gt 1 ]; then
        echo "In-flight cap (memory store, 1 worker, 200 connections; medians):"
        echo
        echo "| MAX_CONCURRENT_REQUESTS | req/s | p50 ms | p99 ms | CPU µs/req | non-2xx |"
        echo "| ---: | ---: | ---: | ---: | ---: | ---: |"
        awk -F'\t' 'NR > 1 { n[$2]++; rps[$2, n[$2]] = $3; p50[$2, n[$2]] = $5; p99[$2, n[$2]] = $6
                cpu[$2, n[$2]] = $7; e[$2] += $8 + $9 }
            function med(a, t, k, i, j, x, v) { k = n[t]; for (i = 1; i <= k; i++) v[i] = a[t, i]
                for (i = 2; i <= k; i++) { x = v[i]; for (j = i - 1; j >= 1 && v[j] > x; j--) v[j + 1] = v[j]; v[j + 1] = x }
                return (k % 2) ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2 }
            END { for (t in n) { R[t] = med(rps, t); C[t] = med(cpu, t) }
                split("nocap cap100", ts, " ")
                for (i = 1; i <= 2; i++) { t = ts[i]; if (!(t in n)) continue
                    printf "| %s | %.0f | %.2f | %.2f | %.1f | %d |\n", (t == "nocap" ? "1000000" : "100"),
                        R[t], med(p50, t), med(p99, t), C[t], e[t] }
                if (("nocap" in n) && ("cap100" in n) && R["nocap"] > 0)
                    printf "\nCap 100 vs no contention: req/s %.3f×, CPU per request %.3f×\n",
                        R["cap100"] / R["nocap"], C["cap100"] / C["nocap"] }' "$CAP_TSV"
        echo
    fi
    if [ "$(wc -l <"$LOG_TSV")" -gt 1 ]; then
        echo "Access log (memory store, 1 worker, 200 connections; medians; gateway JSON lines to a" \
            "file, nginx's default combined log to a file, unbuffered):"
        echo
        echo "| target | req/s | CPU µs/req | cost of logging µs/req |"
        echo "| --- | ---: | ---: | ---: |"
        awk -F'\t' 'NR > 1 { n[$2]++; rps[$2, n[$2]] = $3; cpu[$2, n[$2]] = $5 }
            function med(a, t, k, i, j, x, v) { k = n[t]; for (i = 1; i <= k; i++) v[i] = a[t, i]
                for (i = 2; i <= k; i++) { x = v[i]; for (j = i - 1; j >= 1 && v[j] > x; j--) v[j + 1] = v[j]; v[j + 1] = x }
                return (k % 2) ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2 }
            END { split("nginx-log nginx-nolog gw-log gw-nolog", ts, " ")
                for (i = 1; i <= 4; i++) if (ts[i] in n) C[ts[i]] = med(cpu, ts[i])
                for (i = 1; i <= 4; i++) { t = ts[i]; if (!(t in n)) continue
                    printf "| %s | %.0f | %.1f | %s |\n", t, med(rps, t), C[t],
                        (t ~ /-log$/) ? sprintf("%.2f", C[t] - C[(t == "gw-log") ? "gw-nolog" : "nginx-nolog"]) : "" }
                if (C["nginx-log"] > 0) {
                    x = C["gw-log"] / C["nginx-log"]
                    printf "\nAccess log on, both sides: gateway CPU per request %.2f× nginx → %s\n", x,
                        (x <= 1.0 ? "met" : "**missed**") } }' "$LOG_TSV"
        echo
    fi
    if [ "$(wc -l <"$MEM_TSV")" -gt 1 ]; then
        echo "Gateway memory (VmRSS, memory store, 1 worker; streams sampled every 100 ms):"
        echo
        echo "| test | baseline MiB | peak MiB | growth MiB | target | result | notes |"
        echo "| --- | ---: | ---: | ---: | --- | --- | --- |"
        awk -F'\t' 'NR > 1 {
            idle = ($1 ~ /^idle/)
            tgt = idle ? "< 64 MiB RSS" : "< 16 MiB growth"
            x = idle ? $3 / 1024 : $4 / 1024
            res = ($5 != 1) ? "**failed**" : ((x < (idle ? 64 : 16)) ? "met" : "**missed**")
            printf "| %s | %.1f | %.1f | %.1f | %s | %s | %s%s |\n", $1, $2 / 1024, $3 / 1024, $4 / 1024,
                tgt, res, $7, ($6 > 0 ? sprintf(" (%d s)", $6) : "") }' "$MEM_TSV"
        echo
    fi
} >"$OUT/table.md"

echo
echo "## Benchmark results"
echo
cat "$OUT/table.md"
log "bench: done; table in $OUT/table.md, raw results in $OUT/*.tsv, wrk outputs in $WORK"
