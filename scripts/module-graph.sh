#!/usr/bin/env bash
# Prints the module dependency graph from the `#include "..."` lines of
# src/*.c, src/*.h and include/gw/*.h, one line per module, dependencies
# sorted:
#
#   conn -> admin, client_id, common, ...
#   common ->
#
# A module is a file name without directory and extension, so src/conn.c,
# src/conn.h and include/gw/conn.h are one module; a private header
# <module>_int.h belongs to <module>. Includes that name no file of the tree
# (llhttp.h, system headers) are left out.
#
# Exit 1 when headers include each other in a cycle (printed on stderr as
# "include cycle among: a, b"): include guards hide such a cycle from the
# compiler, but whichever header is read first then misses the other's
# declarations. Modules that depend on each other through different files
# (conn.c includes upstream.h, upstream.c includes conn.h) are not an
# include cycle; they are listed on stderr as "note: modules depend on each
# other: ..." and leave the exit status 0.
#
# Usage: scripts/module-graph.sh [source-root]   (default: this repository)
set -euo pipefail
root=${1:-"$(dirname "$0")/.."}
cd "$root"
shopt -s nullglob
files=(src/*.c src/*.h include/gw/*.h)
if ((${#files[@]} == 0)); then
  echo "module-graph: no src/*.c, src/*.h or include/gw/*.h under $root" >&2
  exit 2
fi

awk -v known="${files[*]}" '
function module(path,    m) {
    m = path
    sub(/.*\//, "", m)
    sub(/\.[ch]$/, "", m)
    sub(/_int$/, "", m)
    return m
}
# Adds edge v -> w to graph g once; nodes are remembered in first-seen order.
function edge(g, v, w) {
    node(g, v)
    node(g, w)
    if ((g, v, w) in has)
        return
    has[g, v, w] = 1
    adj[g, v] = adj[g, v] " " w
}
function node(g, v) {
    if ((g, v) in seen)
        return
    seen[g, v] = 1
    nodes[g] = nodes[g] " " v
}
# Sorts the words of s (insertion sort: the lists are short), joined by sep.
function sorted(s, sep,    a, n, i, j, t, out) {
    n = split(s, a, " ")
    for (i = 2; i <= n; i++)
        for (j = i; j > 1 && a[j - 1] > a[j]; j--) {
            t = a[j]; a[j] = a[j - 1]; a[j - 1] = t
        }
    out = ""
    for (i = 1; i <= n; i++)
        out = out (i > 1 ? sep : "") a[i]
    return out
}
# Tarjan: every strongly connected component of graph g with more than one
# node, or one node including itself, is stored in comps[g, k].
function strong(g, v,    succ, n, i, w, comp, cnt) {
    idx[g, v] = low[g, v] = ++counter
    stk[++sp] = v
    on[g, v] = 1
    n = split(adj[g, v], succ, " ")
    for (i = 1; i <= n; i++) {
        w = succ[i]
        if (!((g, w) in idx)) {
            strong(g, w)
            if (low[g, w] < low[g, v])
                low[g, v] = low[g, w]
        } else if (on[g, w] && idx[g, w] < low[g, v]) {
            low[g, v] = idx[g, w]
        }
    }
    if (low[g, v] != idx[g, v])
        return
    comp = ""
    cnt = 0
    do {
        w = stk[sp--]
        on[g, w] = 0
        comp = comp " " w
        cnt++
    } while (w != v)
    if (cnt > 1 || (g, v, v) in has)
        comps[g, ++ncomps[g]] = sorted(comp, ", ")
}
function components(g,    list, n, i) {
    n = split(nodes[g], list, " ")
    for (i = 1; i <= n; i++)
        if (!((g, list[i]) in idx))
            strong(g, list[i])
}
BEGIN {
    n = split(known, k, " ")
    for (i = 1; i <= n; i++) {
        exists[k[i]] = 1
        node("mod", module(k[i]))
    }
}
/^[ \t]*#[ \t]*include[ \t]*"/ {
    name = $0
    sub(/^[^"]*"/, "", name)
    sub(/".*/, "", name)
    if (name ~ /^gw\//)
        target = "include/" name
    else
        target = "src/" name
    if (!(target in exists))
        next
    if (FILENAME ~ /\.h$/)
        edge("file", FILENAME, target)
    if (module(FILENAME) != module(target))
        edge("mod", module(FILENAME), module(target))
}
END {
    n = split(sorted(nodes["mod"], " "), mods, " ")
    for (i = 1; i <= n; i++) {
        deps = sorted(adj["mod", mods[i]], ", ")
        print mods[i] " ->" (deps == "" ? "" : " " deps)
    }
    components("file")
    components("mod")
    for (i = 1; i <= ncomps["mod"]; i++)
        print "note: modules depend on each other: " comps["mod", i] > "/dev/stderr"
    for (i = 1; i <= ncomps["file"]; i++)
        print "include cycle among: " comps["file", i] > "/dev/stderr"
    exit (ncomps["file"] > 0 ? 1 : 0)
}
' "${files[@]}"
