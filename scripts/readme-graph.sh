#!/usr/bin/env bash
# Keeps the module graph in README.md true: the block between the lines
# "<!-- module-graph:begin -->" and "<!-- module-graph:end -->" must be
# exactly the output of scripts/module-graph.sh in a ```text fence.
#
# Usage: scripts/readme-graph.sh [--update] [repository-root]
#   (no flag) exit 0 when README.md's block is current, 1 with a diff when not
#   --update    rewrite the block in place
set -euo pipefail
update=0
if [ "${1:-}" = --update ]; then
  update=1
  shift
fi
root=${1:-"$(dirname "$0")/.."}
readme=$root/README.md
graph=$(bash "$root/scripts/module-graph.sh" "$root" 2>/dev/null)
want=$(printf '<!-- module-graph:begin -->\n```text\n%s\n```\n<!-- module-graph:end -->' "$graph")
have=$(sed -n '/^<!-- module-graph:begin -->$/,/^<!-- module-graph:end -->$/p' "$readme")
if [ -z "$have" ]; then
  echo "readme-graph: no module-graph block in $readme" >&2
  exit 1
fi
if [ "$update" = 1 ]; then
  tmp=$(mktemp)
  awk -v block="$want" '
    /^<!-- module-graph:begin -->$/ { print block; skip = 1; next }
    /^<!-- module-graph:end -->$/ { skip = 0; next }
    !skip { print }' "$readme" >"$tmp"
  cat "$tmp" >"$readme"
  rm -f "$tmp"
  exit 0
fi
if [ "$have" != "$want" ]; then
  echo "readme-graph: README.md's module graph is stale; run scripts/readme-graph.sh --update" >&2
  diff <(echo "$have") <(echo "$want") >&2 || true
  exit 1
fi
echo "README.md module graph is current"
