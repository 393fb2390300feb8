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
BACKEND_URL_EFF=${BACKEND_URL:-$(file_value BACKEND_URL)}
BACKEND_URL_EFF=${BACKEND_URL_EFF:-http://127.0.0.1:8001}
# backend_app listens on the port the gateway will forward to.
if [[ "$BACKEND_URL_EFF" =~ ^http://(127\.0\.0\.1|localhost|\[::1\]):([0-9]+)(/.*)?$ ]]; then
  BACKEND_PORT=${BACKEND_PORT:-${BASH_REMATCH[2]}}
else
  echo "run: BACKEND_URL=$BACKEND_URL_EFF is not on this machine; not starting backend_app"
  BACKEND_PORT=
fi

pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
}
# Ctrl-C or SIGTERM is how `make run` is meant to end: a clean exit, so make
# does not report "Error 130/143".
trap 'cleanup; exit 0' INT TERM
trap cleanup EXIT

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Waits until port $1 accepts, while process $2 (what should listen there) lives.
wait_port() {
  for _ in $(seq 1 100); do
    kill -0 "$2" 2>/dev/null || { echo "run: the process for port $1 exited" >&2; return 1; }
    port_open "$1" && return 0
    sleep 0.05
  done
  echo "run: nothing listens on port $1 after 5 s" >&2; return 1
}

if [ -n "$BACKEND_PORT" ]; then
  if port_open "$BACKEND_PORT"; then
    echo "run: port $BACKEND_PORT is already in use; free it or choose another BACKEND_URL" >&2
    exit 1
  fi
  BACKEND_PORT=$BACKEND_PORT "$BUILD_DIR/backend_app" &
  pids+=($!)
  wait_port "$BACKEND_PORT" "$!" || exit 1
fi

if [[ "$REDIS_URL_EFF" =~ ^redis://(:[^@]*@)?(127\.0\.0\.1|localhost)(:([0-9]+))?(/[0-9]+)?$ ]]; then
  rport=${BASH_REMATCH[4]:-6379}
  if port_open "$rport"; then
    echo "run: using the redis-server already listening on port $rport"
  elif command -v redis-server >/dev/null; then
    redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no \
      --loglevel warning &
    pids+=($!)
    wait_port "$rport" "$!" || exit 1
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
