# Shared helpers of the benchmark scripts (test/bench/run.sh, test/bench/profile.sh):
# tool installation, free loopback ports, starting nginx / HAProxy / Redis / the gateway
# in the background with their PIDs recorded, stopping them by PID, /proc readings
# (CPU ticks, RSS, read syscalls) and one wrk run parsed into numbers. Sourced, not run.
# Callers set BENCH_DIR (this folder), BUILD (absolute build dir) and WORK (a temp dir).

BENCH_PKGS="wrk nginx haproxy redis-server redis-tools"
# shellcheck disable=SC2034 # used by the scripts that source this file
CLK_TCK=$(getconf CLK_TCK)
PIDS=()         # every background process we started, stopped by stop_all
NEXT_PORT=${BENCH_PORT_BASE:-18400}

log() { printf '%s\n' "$*" >&2; }
die() {
    log "bench: $*"
    exit 1
}

# Installs the benchmark's tools when missing (root), else prints the apt command.
ensure_tools() {
    local missing=() p
    for p in $BENCH_PKGS; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    command -v cc >/dev/null || missing+=(gcc)
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -eq 0 ]; then
        log "bench: installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null ||
            die "apt-get install ${missing[*]} failed"
    else
        log "bench: missing packages: ${missing[*]}"
        log "bench: run: sudo apt-get install -y ${missing[*]}"
        exit 1
    fi
}

# prepare_run DIR: what every bench script does first: installs what is missing, raises
# the descriptor limit, makes DIR (OUT, absolute) and a fresh DIR/work (WORK) that nginx's
# workers can read, and stops everything started here when the script exits.
prepare_run() {
    ensure_tools
    raise_nofile
    mkdir -p "$1"
    OUT=$(cd "$1" && pwd)
    WORK=$OUT/work
    rm -rf "$WORK"
    mkdir -p "$WORK"
    chmod 755 "$OUT" "$WORK"
    trap 'trap - EXIT INT TERM; stop_all' EXIT
    trap 'exit 130' INT TERM
}

# Raises the soft descriptor limit (inherited by everything we start) for the 10k test.
raise_nofile() {
    local hard
    hard=$(ulimit -Hn)
    [ "$hard" = unlimited ] && hard=1048576
    [ "$hard" -gt 65536 ] && hard=65536
    ulimit -n "$hard" || die "cannot raise ulimit -n to $hard"
}

# Ports in use on this machine (any TCP state, IPv4 and IPv6), as 4-digit upper hex.
used_ports_hex() {
    awk 'NR > 1 { n = split($2, a, ":"); print a[n] }' /proc/net/tcp /proc/net/tcp6 2>/dev/null |
        sort -u
}

# Prints a port >= NEXT_PORT that nothing uses, and advances NEXT_PORT past it.
# Must run in the current shell (not $(...)) so NEXT_PORT advances: sets PORT.
pick_port() {
    local used hex
    used=$(used_ports_hex)
    for _ in $(seq 1 2000); do
        hex=$(printf '%04X' "$NEXT_PORT")
        NEXT_PORT=$((NEXT_PORT + 1))
        if ! grep -qx "$hex" <<<"$used"; then
            PORT=$((NEXT_PORT - 1))
            return 0
        fi
    done
    die "no free port found from ${BENCH_PORT_BASE:-18400} in 2000 tries"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_port PORT PID NAME: up to 10 s for PORT to accept, failing early if PID died.
wait_port() {
    local i
    for i in $(seq 1 200); do
        port_open "$1" && return 0
        kill -0 "$2" 2>/dev/null || die "$3 exited at start; see $WORK/$3.out"
        sleep 0.05
    done
    die "$3: nothing listens on port $1 after 10 s; see $WORK/$3.out"
}

# start_bg NAME CMD...: runs CMD in the background, output to $WORK/NAME.out; sets BG_PID.
start_bg() {
    local name=$1
    shift
    "$@" >"$WORK/$name.out" 2>&1 &
    BG_PID=$!
    PIDS+=("$BG_PID")
}

# Stops one of our processes: SIGTERM, up to 10 s, then SIGKILL; reaps it.
stop_pid() {
    local pid=$1 i st
    kill -0 "$pid" 2>/dev/null || {
        wait "$pid" 2>/dev/null
        return 0
    }
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 1 100); do
        st=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) || break
        [ -z "$st" ] || [ "$st" = Z ] && break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null && [ "$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)" != Z ]; then
        log "bench: pid $pid ignored SIGTERM for 10 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    return 0
}

# Stops (in reverse start order) the given PIDs and drops them from PIDS.
stop_pids() {
    local pid keep=() p drop
    for ((i = $# ; i >= 1 ; i--)); do stop_pid "${!i}"; done
    for p in "${PIDS[@]}"; do
        drop=0
        for pid in "$@"; do [ "$p" = "$pid" ] && drop=1; done
        [ $drop -eq 0 ] && keep+=("$p")
    done
    PIDS=("${keep[@]}")
}

stop_all() {
    local i
    for ((i = ${#PIDS[@]} - 1 ; i >= 0 ; i--)); do stop_pid "${PIDS[$i]}"; done
    PIDS=()
}

# ---- /proc readings -----------------------------------------------------------------

# The PID and its direct children (nginx master + workers).
pid_tree() {
    local pid=$1
    echo "$pid"
    tr ' ' '\n' 2>/dev/null <"/proc/$pid/task/$pid/children" | grep -v '^$'
}

# Sum of utime+stime (clock ticks, all threads) of the given PIDs.
cpu_ticks() {
    local total=0 pid s
    for pid in "$@"; do
        s=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        s=${s##*) }
        # shellcheck disable=SC2086
        set -- $s
        total=$((total + ${12} + ${13}))
    done
    echo "$total"
}

# VmRSS of PID in KiB.
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }

# Read-type syscalls of PID so far (for Redis: one read per client round trip).
syscr() { awk '/^syscr:/ { print $2 }' "/proc/$1/io" 2>/dev/null; }

# Total calls in Redis INFO commandstats, leaving out the INFO calls we make ourselves.
redis_calls() {
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" INFO commandstats 2>/dev/null | tr -d '\r' |
        awk -F'[:=,]' '/^cmdstat_/ && $1 != "cmdstat_info" { s += $3 } END { print s + 0 }'
}

# Per-command calls, "name=calls" space-separated (for the detailed log).
redis_breakdown() {
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" INFO commandstats 2>/dev/null | tr -d '\r' |
        awk -F'[:=,]' '/^cmdstat_/ && $1 != "cmdstat_info" { sub("cmdstat_", "", $1); printf "%s=%s ", $1, $3 }'
}

# ---- processes under test --------------------------------------------------------------

# fill TEMPLATE OUT KEY=VALUE...: copies a config template replacing @KEY@ by VALUE.
fill() {
    local in=$1 out=$2 kv args=()
    shift 2
    for kv in "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
    sed "${args[@]}" "$in" >"$out"
}

start_redis() {
    pick_port
    REDIS_PORT=$PORT
    start_bg redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' \
        --appendonly no --protected-mode yes --loglevel warning --dir "$WORK" --maxclients 10000
    REDIS_PID=$BG_PID
    wait_port "$REDIS_PORT" "$REDIS_PID" redis
}

start_backend_nginx() {
    pick_port
    BACKEND_PORT=$PORT
    mkdir -p "$WORK/nginx-backend-tmp"
    fill "$BENCH_DIR/nginx-backend.conf.in" "$WORK/nginx-backend.conf" "WORK=$WORK" \
        "PORT=$BACKEND_PORT"
    start_bg nginx-backend nginx -p "$WORK" -c "$WORK/nginx-backend.conf"
    BACKEND_PID=$BG_PID
    wait_port "$BACKEND_PORT" "$BACKEND_PID" nginx-backend
}

# start_nginx_proxy NAME WORKERS [ACCESS_LOG_FILE]: sets PROXY_PORT, PROXY_PID. With a
# file, nginx writes its default access log (combined format, unbuffered) there.
start_nginx_proxy() {
    local name=$1 workers=$2 access=${3:-}
    pick_port
    PROXY_PORT=$PORT
    mkdir -p "$WORK/$name-tmp"
    fill "$BENCH_DIR/nginx-proxy.conf.in" "$WORK/$name.conf" "WORK=$WORK" "PORT=$PROXY_PORT" \
        "BACKEND_PORT=$BACKEND_PORT" "WORKERS=$workers" "KEEPALIVE=$UPSTREAM_KEEPALIVE"
    # The pid and tmp paths in the template are nginx-proxy*; give each instance its own.
    sed -i -e "s|nginx-proxy\.pid|$name.pid|; s|nginx-proxy\.err|$name.err|" \
        -e "s|nginx-proxy-tmp|$name-tmp|g" "$WORK/$name.conf"
    [ -n "$access" ] && sed -i -e "s|access_log off;|access_log $access;|" "$WORK/$name.conf"
    start_bg "$name" nginx -p "$WORK" -c "$WORK/$name.conf"
    PROXY_PID=$BG_PID
    wait_port "$PROXY_PORT" "$PROXY_PID" "$name"
}

# start_haproxy NAME WORKERS: sets PROXY_PORT, PROXY_PID.
start_haproxy() {
    local name=$1 workers=$2
    pick_port
    PROXY_PORT=$PORT
    # HAProxy needs about 2 descriptors per connection and refuses to start without them.
    local maxconn=$((($(ulimit -n) - 200) / 2))
    [ "$maxconn" -gt 30000 ] && maxconn=30000
    fill "$BENCH_DIR/haproxy.cfg.in" "$WORK/$name.cfg" "PORT=$PROXY_PORT" \
        "BACKEND_PORT=$BACKEND_PORT" "WORKERS=$workers" "MAXCONN=$maxconn"
    start_bg "$name" haproxy -db -f "$WORK/$name.cfg"
    PROXY_PID=$BG_PID
    wait_port "$PROXY_PORT" "$PROXY_PID" "$name"
}

# start_gateway NAME BACKEND_PORT VAR=VALUE...: the gateway with a clean environment (so
# nothing from the caller's environment, such as REDIS_URL, leaks in) at its DEFAULT
# settings except: where it listens and what it proxies, WORKER_THREADS=1 (the table
# sets 1 and 2), RATE_LIMIT_REQUESTS=1000000000 (no request is over the limit),
# ACCESS_LOG=off (the access-log part turns it on) and a key prefix per target (so
# targets sharing one Redis keep apart counters); then the given variables. Sets
# PROXY_PORT, PROXY_PID.
start_gateway() {
    local name=$1 bport=$2
    shift 2
    pick_port
    PROXY_PORT=$PORT
    start_bg "$name" env -i PATH="$PATH" \
        GATEWAY_HOST=127.0.0.1 GATEWAY_PORT="$PROXY_PORT" \
        BACKEND_URL="http://127.0.0.1:$bport" \
        WORKER_THREADS=1 RATE_LIMIT_REQUESTS=1000000000 ACCESS_LOG=off \
        RATE_LIMIT_KEY_PREFIX="bench-$name" \
        "$@" "$BUILD/gateway"
    PROXY_PID=$BG_PID
    wait_port "$PROXY_PORT" "$PROXY_PID" "$name"
}

# backend_accepts: connections the nginx backend has accepted so far (stub_status). The
# reading itself is one of them.
backend_accepts() {
    http_get "$BACKEND_PORT" /nginx_status | awk '/^ *[0-9]+ +[0-9]+ +[0-9]+ *$/ { print $1; exit }'
}

# http_get PORT PATH: the status line and body of one HTTP/1.1 request (bash only).
http_get() {
    local port=$1 path=$2
    timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" || exit 1
        printf "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" "$1" >&3
        cat <&3' "$port" "$path" 2>/dev/null
}

# ---- wrk ------------------------------------------------------------------------------

# Converts a wrk duration (e.g. 812.00us, 1.23ms, 2.00s, 1.5m) to milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        u = v; sub(/^[0-9.]+/, "", u); n = v + 0
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.3f", n }'
}

# run_wrk PORT CONNS SECONDS OUTFILE [LUA_SCRIPT]: runs wrk (with the script when given)
# and sets W_RPS W_REQS W_P50 W_P99 W_NON2XX W_SOCKERR from its output.
run_wrk() {
    local port=$1 conns=$2 secs=$3 out=$4 threads=$WRK_THREADS script=()
    [ -n "${5:-}" ] && script=(-s "$5")
    [ "$threads" -gt "$conns" ] && threads=$conns
    timeout $((secs + 30)) wrk -t"$threads" -c"$conns" -d"${secs}s" --timeout 5s --latency \
        "${script[@]}" "http://127.0.0.1:$port/users/1" >"$out" 2>&1 ||
        log "bench: wrk exited non-zero; see $out"
    W_RPS=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    W_REQS=$(awk '/requests in/ { print $1 }' "$out")
    W_P50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    W_P99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    W_NON2XX=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    W_NON2XX=${W_NON2XX:-0}
    W_SOCKERR=$(awk '/Socket errors:/ { gsub(",", ""); print $4 + $6 + $8 + $10 }' "$out")
    W_SOCKERR=${W_SOCKERR:-0}
    [ -n "$W_RPS" ] && [ -n "$W_REQS" ] && [ "$W_REQS" -gt 0 ] || {
        log "bench: wrk produced no result; see $out"
        W_RPS=0 W_REQS=0
    }
}

machine_description() {
    local cpu mem
    cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    mem=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
    echo "$(nproc) CPU ($cpu), $mem RAM, Linux $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "$(nginx -v 2>&1 | sed 's/.*: //'), HAProxy $(haproxy -v 2>/dev/null | awk 'NR == 1 { print $3 }'), Redis $(redis-server --version | sed 's/.* v=\([^ ]*\).*/\1/'), wrk $(wrk --version 2>&1 | awk 'NR == 1 { print $2 }')"
}

# Prints the absolute path of build dir $1 (as given, or relative to the
# repository); dies when it does not exist. Needs REPO set.
resolve_build_dir() {
    if [ -d "$1" ]; then
        (cd "$1" && pwd)
    elif [ -d "$REPO/$1" ]; then
        (cd "$REPO/$1" && pwd)
    else
        die "build directory $1 not found (build first: make build)"
    fi
}
