#!/bin/sh
# Builds and runs test/bench/bench_rl_memory.c: the in-process rate-limit
# store under a flood of distinct clients in one window (default 1,000,000
# keys on 1 and 2 threads, then 3,000,000 to show the cap holds).
# Usage: test/bench/rl_memory.sh [keys]   (from anywhere; needs gcc)
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
gcc -O2 -std=c11 -D_GNU_SOURCE -pthread -Wall -Wextra -Werror \
    -I"$root/include" -I"$root/src" \
    "$root/test/bench/bench_rl_memory.c" "$root/src/rl_memory.c" "$root/src/rl_algo.c" \
    "$root/src/common.c" \
    -o "$out/bench_rl_memory"
keys=${1:-1000000}
"$out/bench_rl_memory" "$keys" 1
"$out/bench_rl_memory" "$keys" 2
"$out/bench_rl_memory" 3000000 2
