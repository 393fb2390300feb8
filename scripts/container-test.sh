#!/usr/bin/env bash
# shellcheck disable=SC2317  # functions run by trap and by check()
# make test-container: builds the gateway image from the Dockerfile and tests
# it, with no container registry and no Docker daemon (the recipe of
# shared/notes/container-build.md):
#   - debian:bookworm-slim is made locally by debootstrap from the Debian
#     mirror (slimmed like the official -slim) and kept between runs;
#   - podman build --isolation chroot --format docker (chroot isolation needs
#     no OCI runtime and RUN gets the host network; without --format docker
#     podman drops HEALTHCHECK); runc runs the containers (crun refuses the
#     hybrid cgroup layout of these machines);
#   - podman's configuration and storage are private, under
#     <build dir>/container (containers.conf, storage.conf): the base image
#     and the layer cache stay there, nothing global is changed beyond the
#     packages apt installs (as root).
# Then: the image's configuration, its shared libraries and size; the image
# run read-only with every capability dropped (--network host, loopback only)
# beside backend_app on the host: /health, a proxied request, the HEALTHCHECK
# (liveness: healthy with the backend stopped, unhealthy only while the
# gateway itself is wedged by SIGSTOP, healthy again after SIGCONT) and a
# graceful SIGTERM exit 0. Every wait is bounded.
#
# Usage: scripts/container-test.sh [BUILD_DIR]   (default: build)
# Exit: 0 when every check passed, or when podman cannot run on this machine
# (skipped, with the reason); 1 when a check failed. The last line is always
# "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD
BUILD_DIR=${1:-build}
case $BUILD_DIR in /*) ;; *) BUILD_DIR=$SRC/$BUILD_DIR ;; esac
W=$BUILD_DIR/container
BASE=docker.io/library/debian:bookworm-slim
IMAGE=localhost/gateway:test
NAME=gateway-ctest-$$
T0=$(date +%s)
passed=0
failed=0

# ---- reporting ---------------------------------------------------------------
say() { printf '%s\n' "$*"; }
pass() {
  passed=$((passed + 1))
  say "ok    $*"
}
fail() {
  failed=$((failed + 1))
  say "FAIL  $*"
}
# check "what" command...: one check, passed when the command succeeds.
check() {
  local what=$1
  shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}
finish() {
  say "time: $(($(date +%s) - T0)) s in all${build_s:+, image build ${build_s} s}"
  say "$passed passed, $failed failed"
  if [ "$failed" -eq 0 ]; then exit 0; fi
  exit 1
}
skip() {
  say "container tests SKIPPED: $*"
  say "0 passed, 0 failed"
  exit 0
}
# Last lines of a log, indented, for a failure or a skip.
tail_of() { tail -n "${2:-5}" "$1" 2>/dev/null | sed 's/^/      /' || true; }

# ---- clean-up: only what this run started ----------------------------------
be_pid=""
gw_host_pid=""
cgroups_before=""
# What podman and runc create outside $W whatever they are told (runc's
# state root, the blob-info cache of containers/image): removed at the end
# when this run made them and they hold nothing else.
made_runc_root=false
made_var_lib=false
[ -e /run/runc ] || made_runc_root=true
[ -e /var/lib/containers ] || made_var_lib=true
cleanup() {
  set +e
  [ -n "$gw_host_pid" ] && kill -CONT "$gw_host_pid" 2>/dev/null
  if command -v podman >/dev/null 2>&1 && [ -n "${CONTAINERS_CONF:-}" ]; then
    timeout 60 podman rm -f -t 5 "$NAME" >/dev/null 2>&1
  fi
  if [ -n "$be_pid" ]; then
    kill "$be_pid" 2>/dev/null
    wait "$be_pid" 2>/dev/null
  fi
  rm -rf "${W:?}/rootfs" "${W:?}/etc"
  # podman's cgroupfs parent, when this run made it (empty dirs only).
  local d
  for d in /sys/fs/cgroup/libpod_parent /sys/fs/cgroup/*/libpod_parent; do
    [ -d "$d" ] || continue
    case " $cgroups_before " in *" $d "*) continue ;; esac
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  if $made_runc_root; then rmdir /run/runc 2>/dev/null; fi
  if $made_var_lib; then
    rm -f /var/lib/containers/cache/blob-info-cache-v1.boltdb
    rmdir /var/lib/containers/cache /var/lib/containers 2>/dev/null
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- can podman run here? ----------------------------------------------------
say "== container image: build and run with podman (scratch: $W) =="
[ "$(uname -s)" = Linux ] || skip "containers need Linux, this is $(uname -s)"
if [ "$(id -u)" -ne 0 ]; then
  skip "not root: this test runs podman as root (rootless podman needs /etc/subuid and" \
    "/etc/subgid ranges for this user, and this test does not set them up)"
fi
need=()
for tool in podman:podman runc:runc debootstrap:debootstrap curl:curl; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool#*:}")
done
if [ "${#need[@]}" -gt 0 ]; then
  say "installing ${need[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt_install() {
    timeout 900 apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 \
      "${need[@]}" \
      >"$BUILD_DIR/container-apt.log" 2>&1
  }
  mkdir -p "$BUILD_DIR"
  if ! apt_install; then
    timeout 300 apt-get update -q >>"$BUILD_DIR/container-apt.log" 2>&1 || true
    apt_install || skip "podman cannot be installed: apt-get install ${need[*]} failed:" \
      "$(tail -n 2 "$BUILD_DIR/container-apt.log" | tr '\n' ' ')"
  fi
fi

# Every podman call is bounded (a tighter timeout where one is given).
podman() { timeout 300 podman "$@"; }

# Private podman configuration. No CAP_SYS_RESOURCE here: podman's default
# rlimits (1048576) fail with EPERM, so explicit ones (nproc at most 32768,
# where podman lowers itself); cgroupfs (no systemd); runc.
mkdir -p "$W/tmp" "$W/etc" "$W/net.d"
nofile=$(ulimit -Hn)
nproc=$(ulimit -Hu)
if [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; then nproc=32768; fi
if [ "$nofile" = unlimited ] || [ "$nofile" -gt 1048576 ]; then nofile=1048576; fi
cat >"$W/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$W/events.log"
tmp_dir = "$W/tmp"
image_copy_tmp_dir = "$W/tmp"
volume_path = "$W/volumes"
[network]
network_config_dir = "$W/net.d"
EOF
cat >"$W/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$W/storage"
runroot = "$W/run"
EOF
export CONTAINERS_CONF=$W/containers.conf CONTAINERS_STORAGE_CONF=$W/storage.conf
for d in /sys/fs/cgroup/libpod_parent /sys/fs/cgroup/*/libpod_parent; do
  [ -d "$d" ] && cgroups_before="$cgroups_before $d"
done
if ! timeout 60 podman info >"$W/info.log" 2>&1; then
  skip "podman does not work here: $(tail -n 2 "$W/info.log" | tr '\n' ' ')"
fi

# ---- debian:bookworm-slim, made locally (what debuerreotype does for -slim) ---
mirror() {
  local m
  m=$(awk '/^URIs:/ && $2 ~ /\/debian\/?$/ {print $2; exit}' \
    /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$m" ] || m=$(awk '/^deb / && $2 ~ /\/debian\/?$/ {print $2; exit}' \
    /etc/apt/sources.list 2>/dev/null || true)
  printf '%s\n' "${m:-http://deb.debian.org/debian}"
}
make_base() {
  local R=$W/rootfs M
  M=$(mirror)
  M=${M%/}
  rm -rf "$R"
  say "making $BASE with debootstrap from $M (first run only)"
  if ! timeout 1200 debootstrap --variant=minbase bookworm "$R" "$M" >"$W/debootstrap.log" 2>&1; then
    return 1
  fi
  printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
    'path-exclude /usr/share/man/*' 'path-exclude /usr/share/groff/*' \
    'path-exclude /usr/share/info/*' 'path-exclude /usr/share/lintian/*' \
    'path-exclude /usr/share/linda/*' 'path-exclude /usr/share/locale/*' \
    'path-include /usr/share/locale/locale.alias' >"$R/etc/dpkg/dpkg.cfg.d/docker"
  cat >"$R/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo 'Acquire::Languages "none";' >"$R/etc/apt/apt.conf.d/docker-no-languages"
  echo 'Acquire::GzipIndexes "true";' >"$R/etc/apt/apt.conf.d/docker-gzip-indexes"
  rm -f "$R/etc/apt/sources.list"
  cat >"$R/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $M
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${M%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  find "$R/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
  find "$R/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$R"/usr/share/{man,groff,info,lintian,linda}/*
  find "$R/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/archives/*.deb "$R"/var/cache/apt/*.bin \
    "$R"/var/log/*.log "$R"/tmp/*
  : >"$R/etc/hostname"
  : >"$R/etc/resolv.conf"
  tar -C "$R" --numeric-owner -c . | timeout 600 podman import -q --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$BASE" >/dev/null
  rm -rf "$R"
}
if ! podman image exists "$BASE"; then
  make_base || skip "no base image: debootstrap from $(mirror) failed:" \
    "$(tail -n 2 "$W/debootstrap.log" | tr '\n' ' ')"
fi
# A container that does nothing: if this fails, podman cannot run here.
if ! timeout 120 podman run --rm --pull=never --network host "$BASE" true >"$W/probe.log" 2>&1; then
  skip "podman cannot run a container on this machine: $(tail -n 3 "$W/probe.log" | tr '\n' ' ')"
fi

# ---- build ----------------------------------------------------------------------
# The build stage is tagged too ($IMAGE-build): its layers (the apt install
# above all) are the cache of the next run, while the images and layers a
# rebuild supersedes become untagged and are pruned.
say "building $IMAGE from $SRC/Dockerfile (log: $W/build.log)"
b0=$(date +%s)
build() {
  timeout 1800 podman build --isolation chroot --format docker --pull=never --layers \
    --force-rm -f "$SRC/Dockerfile" "$@" "$SRC" >>"$W/build.log" 2>&1
}
: >"$W/build.log"
if ! build --target build -t "$IMAGE-build" || ! build -t "$IMAGE"; then
  build_s=$(($(date +%s) - b0))
  fail "image builds from the Dockerfile"
  tail_of "$W/build.log" 15
  finish
fi
build_s=$(($(date +%s) - b0))
pass "image builds from the Dockerfile (${build_s} s)"
timeout 300 podman image prune -f >/dev/null 2>&1 || true

# ---- the image's configuration ----------------------------------------------
inspect() { podman image inspect --format "$1" "$IMAGE"; }
eq() {
  [ "$1" = "$2" ] && return 0
  say "      got:  $1"
  say "      want: $2"
  return 1
}
check "runs as uid 10001 (USER 10001:10001)" eq "$(inspect '{{.Config.User}}')" "10001:10001"
check "ENTRYPOINT [\"gateway\"]" eq "$(inspect '{{json .Config.Entrypoint}}')" '["gateway"]'
check "EXPOSE 8000/tcp" eq "$(inspect '{{json .Config.ExposedPorts}}')" '{"8000/tcp":{}}'
check "STOPSIGNAL SIGTERM" eq "$(inspect '{{.Config.StopSignal}}')" "SIGTERM"
check "HEALTHCHECK CMD gateway --healthcheck" eq "$(inspect '{{json .HealthCheck.Test}}')" \
  '["CMD","gateway","--healthcheck"]'
hc_timeout=$(inspect '{{.HealthCheck.Timeout}}')
check "HEALTHCHECK timeout $hc_timeout > the checker's 4 s of waits" \
  test "$(inspect '{{printf "%d" .HealthCheck.Timeout}}')" -gt 4000000000
version=$(timeout 60 podman run --rm --pull=never --network host "$IMAGE" --version 2>/dev/null || true)
check "label org.opencontainers.image.version = gateway --version ($version)" \
  eq "gateway $(inspect '{{index .Labels "org.opencontainers.image.version"}}')" "$version"
for l in source licenses; do
  v=$(inspect "{{index .Labels \"org.opencontainers.image.$l\"}}")
  check "label org.opencontainers.image.$l ($v)" test -n "$v"
done
ldd_out=$(timeout 60 podman run --rm --pull=never --network host --entrypoint ldd "$IMAGE" \
  /usr/local/bin/gateway 2>&1) && ldd_rc=0 || ldd_rc=$?
if [ "$ldd_rc" -eq 0 ] && ! grep -q 'not found' <<<"$ldd_out"; then
  pass "ldd inside the image: every library found ($(grep -c '=>' <<<"$ldd_out") linked)"
else
  fail "ldd inside the image: every library found"
  sed 's/^/      /' <<<"$ldd_out"
fi
size=$(inspect '{{.Size}}')
size_mb=$(((size + 524288) / 1048576))
base_mb=$((($(podman image inspect --format '{{.Size}}' "$BASE") + 524288) / 1048576))
check "image size ${size_mb} MiB (base ${base_mb} MiB, +$((size_mb - base_mb)) MiB) within 150 MiB" \
  test "$size_mb" -le 150

# ---- run it beside backend_app ------------------------------------------------
if [ ! -x "$BUILD_DIR/backend_app" ]; then
  say "building backend_app in $BUILD_DIR"
  [ -f "$BUILD_DIR/CMakeCache.txt" ] ||
    cmake -S "$SRC" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$BUILD_DIR" -j 2 --target backend_app >/dev/null
fi
BACKEND_HOST=127.0.0.1 BACKEND_PORT=0 "$BUILD_DIR/backend_app" >"$W/backend.log" 2>&1 &
be_pid=$!
bport=""
for _ in $(seq 100); do
  bport=$(sed -n 's/.*backend_app listening on [0-9.]*:\([0-9]*\).*/\1/p' "$W/backend.log" | head -n 1)
  [ -n "$bport" ] && break
  sleep 0.1
done
[ -n "$bport" ] || {
  fail "backend_app starts on a kernel-chosen port"
  tail_of "$W/backend.log"
  finish
}

# A loopback port nobody listens on (from /proc/net/tcp{,6}), for the
# gateway: its HEALTHCHECK must know the port, so it cannot be 0.
free_port() {
  local used p
  used=$(awk 'NR > 1 && $4 == "0A" { split($2, a, ":"); print strtonum("0x" a[2]) }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null | sort -u)
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 30000))
    grep -qx "$p" <<<"$used" || {
      echo "$p"
      return 0
    }
  done
  return 1
}
gport=$(free_port)
# The configuration reaches the container as an env file named by
# GATEWAY_ENV_FILE only: the HEALTHCHECK finds the port through it too.
cat >"$W/etc/gateway.env" <<EOF
GATEWAY_HOST=127.0.0.1
GATEWAY_PORT=$gport
BACKEND_URL=http://127.0.0.1:$bport
WORKER_THREADS=2
RATE_LIMIT_REQUESTS=1000
EOF
chmod 0755 "$W/etc"
chmod 0644 "$W/etc/gateway.env"
# podman warns that healthcheck timers need systemd: harmless, the checks
# below run them with `podman healthcheck run`.
if ! timeout 120 podman run -d --pull=never --name "$NAME" --network host \
  --read-only --read-only-tmpfs=false --cap-drop ALL --security-opt no-new-privileges \
  -v "$W/etc/gateway.env:/etc/gateway/gateway.env:ro" \
  -e GATEWAY_ENV_FILE=/etc/gateway/gateway.env "$IMAGE" >"$W/run.log" 2>&1; then
  fail "container starts (read-only, no capabilities, --network host)"
  tail_of "$W/run.log"
  finish
fi
started=$(date +%s)
gw_host_pid=$(podman inspect --format '{{.State.Pid}}' "$NAME")
http() { curl -s --max-time 3 -o "$W/body" -w '%{http_code}' "http://127.0.0.1:$gport$1" || true; }
# wait_status PATH CODE SECONDS: polls until PATH answers CODE.
wait_status() {
  local _
  for _ in $(seq $(($3 * 10))); do
    [ "$(http "$1")" = "$2" ] && return 0
    sleep 0.1
  done
  say "      $1 answered $(http "$1"): $(cat "$W/body" 2>/dev/null)"
  return 1
}
check "GET /health 200 (backend connected) on 127.0.0.1:$gport from the env file" \
  wait_status /health 200 15
grep -q '"backend":"connected"' "$W/body" || fail "/health says backend connected"
check "proxied GET /users/7 reaches backend_app" eq "$(http /users/7) $(cat "$W/body")" \
  '200 {"id":7,"name":"User 7"}'
check "the gateway runs as uid 10001" eq "$(podman exec "$NAME" id -u 2>&1)" 10001
check "no capabilities (CapEff of the gateway: 0)" eq \
  "$(podman exec "$NAME" sh -c "awk '/^CapEff/ {print \$2}' /proc/1/status" 2>&1)" \
  0000000000000000
refused() { ! "$@" >/dev/null 2>&1; }
check "root filesystem read-only (touch / refused)" refused podman exec "$NAME" touch /probe
hc() { timeout 30 podman healthcheck run "$NAME" >"$W/hc.log" 2>&1; }
hc_status() {
  podman inspect --format '{{.State.Health.Status}}' "$NAME" 2>/dev/null ||
    podman inspect --format '{{.State.Healthcheck.Status}}' "$NAME"
}
check "podman healthcheck run: healthy" hc

# Liveness: the backend going away is not the gateway's fault.
kill "$be_pid"
wait "$be_pid" 2>/dev/null || true
be_pid=""
check "backend stopped: GET /health 503 (readiness)" wait_status /health 503 5
check "backend stopped: gateway --healthcheck=ready fails in the container" \
  eq "$(podman exec "$NAME" gateway --healthcheck=ready >/dev/null 2>&1 && echo 0 || echo $?)" 1
check "backend stopped: podman healthcheck run still healthy (liveness)" hc
check "backend stopped: health status healthy" eq "$(hc_status)" healthy

# Wedged: the gateway stopped (SIGSTOP) still has its socket, so connects
# succeed and nothing answers: each check fails within the checker's own
# bounded wait, and after --retries=3 failures the container is unhealthy.
# Failures inside --start-period=5s do not count: wait until it is over.
start_period=$(($(inspect '{{printf "%d" .HealthCheck.StartPeriod}}') / 1000000000))
while [ "$(date +%s)" -le $((started + start_period)) ]; do sleep 0.2; done
kill -STOP "$gw_host_pid"
t=$(date +%s)
fails=0
for _ in 1 2 3; do hc || fails=$((fails + 1)); done
hc_s=$(($(date +%s) - t))
check "gateway SIGSTOPped: 3 of 3 health checks fail (${hc_s} s for 3)" eq "$fails" 3
check "gateway SIGSTOPped: health status unhealthy" eq "$(hc_status)" unhealthy
kill -CONT "$gw_host_pid"
check "gateway SIGCONTinued: podman healthcheck run healthy again" hc
check "gateway SIGCONTinued: health status healthy" eq "$(hc_status)" healthy

# Graceful stop: SIGTERM, drain, exit 0 well before podman's SIGKILL.
t=$(date +%s)
timeout 60 podman stop -t 20 "$NAME" >/dev/null 2>&1 || true
stop_s=$(($(date +%s) - t))
check "podman stop (SIGTERM): exit code 0 in ${stop_s} s" eq \
  "$(podman inspect --format '{{.State.ExitCode}}' "$NAME")" 0
check "SIGTERM drain logged" grep -q 'SIGTERM received' <(podman logs "$NAME" 2>&1)
gw_host_pid=""
finish
