#!/usr/bin/env bash
# `make run`: starts backend_app on BACKEND_PORT (8001), a local redis-server
# when REDIS_URL points at this machine and redis-server is installed (and
# nothing listens there yet), then the gateway in the foreground with
# gateway.env.example. Ctrl-C (or SIGTERM) stops all three.
set -uo pipefail
BUILD_DIR=${1:-build}
cd "$(dirname "$0")/.."
ENV_FILE=${GATEWAY_ENV_FILE:-gateway.env.example}

# Values as the gateway will see them: the real environment wins over the file.
file_value() { sed -n "s/^[[:space:]]*\(export[[:space:]]\+\)\?$1=//p" "$ENV_FILE" | tail -n 1 | tr -d '"'"'"; }
REDIS_URL_EFF=${REDIS_URL-$(file_value REDIS_URL)}
BACKEND_PORT=${BACKEND_PORT:-8001}

pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
}
trap cleanup INT TERM EXIT

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  for _ in $(seq 1 100); do port_open "$1" && return 0; sleep 0.05; done
  echo "run: nothing listens on port $1 after 5 s" >&2; return 1
}

BACKEND_PORT=$BACKEND_PORT "$BUILD_DIR/backend_app" &
pids+=($!)
wait_port "$BACKEND_PORT" || exit 1

if [[ "$REDIS_URL_EFF" =~ ^redis://(:[^@]*@)?(127\.0\.0\.1|localhost)(:([0-9]+))?(/[0-9]+)?$ ]]; then
  rport=${BASH_REMATCH[4]:-6379}
  if port_open "$rport"; then
    echo "run: using the redis-server already listening on port $rport"
  elif command -v redis-server >/dev/null; then
    redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no \
      --loglevel warning &
    pids+=($!)
    wait_port "$rport" || exit 1
    echo "run: started redis-server on port $rport"
  else
    echo "run: REDIS_URL points at port $rport but redis-server is not installed" >&2
    echo "run: install it with: apt-get install redis-server (or unset REDIS_URL)" >&2
  fi
fi

"$BUILD_DIR/gateway" --env-file "$ENV_FILE" &
gw=$!
pids+=($gw)
wait "$gw"
