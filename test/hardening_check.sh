#!/usr/bin/env bash
# Checks the hardening of a built binary from its ELF headers (issue 17): PIE,
# full RELRO (GNU_RELRO + BIND_NOW), stack protector, and, when the second
# argument is ON (optimised builds), _FORTIFY_SOURCE (checked *_chk calls).
# Usage: test/hardening_check.sh BINARY [ON|OFF]
# Prints one line per check and "N passed, N failed"; exit 1 on any failure.
set -uo pipefail
bin=${1:?binary}
fortify=${2:-OFF}
command -v readelf >/dev/null || { echo "readelf missing (binutils)"; exit 1; }
passed=0 failed=0
check() { # NAME COMMAND...
    local name=$1
    shift
    if "$@" >/dev/null 2>&1; then
        echo "ok: $name"
        passed=$((passed + 1))
    else
        echo "FAILED: $name"
        failed=$((failed + 1))
    fi
}
header=$(readelf -h "$bin")
segments=$(readelf -lW "$bin")
dynamic=$(readelf -dW "$bin")
symbols=$(readelf -sW --dyn-syms "$bin")
check "PIE (ELF type DYN)" grep -q 'Type:[[:space:]]*DYN' <<<"$header"
check "RELRO segment (GNU_RELRO)" grep -q 'GNU_RELRO' <<<"$segments"
check "immediate binding (BIND_NOW / FLAGS_1 NOW)" grep -Eq 'BIND_NOW|FLAGS_1.*NOW' <<<"$dynamic"
check "stack protector (__stack_chk_fail)" grep -q '__stack_chk_fail' <<<"$symbols"
check "no executable stack (GNU_STACK RW)" grep -Eq 'GNU_STACK.* RW ' <<<"$segments"
if [ "$fortify" = ON ]; then
    check "_FORTIFY_SOURCE (__*_chk calls)" grep -Eq '__[a-z_]+_chk(@|$| )' <<<"$symbols"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
