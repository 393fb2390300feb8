# Summary of test/bench/run.sh: reads results.tsv (one line per wrk run, columns below),
# computes each run's ratios to nginx in the same pass, connection count and round, and
# prints Markdown: one table of medians over rounds, then the issue-16 target checks (the
# gateway at its defaults against nginx) and the issue-6 ones that still apply.
# Columns: workers conns round target rps reqs p50_ms p99_ms cpu_proxy_us cpu_redis_us
#          redis_cmds_per_req redis_reads_per_req non2xx sockerr backend_conns_per_1k
# Portable awk (mawk): no asort, no gawk extensions. median() and add() come from
# median.awk, loaded first (run.sh: awk -f median.awk -f summary.awk).

function fmt_ratio(r) { return r == "" ? "" : sprintf(" (%.2f×)", r) }

BEGIN { FS = "\t" }

$1 == "workers" { next }

{
    nrow++
    W[nrow] = $1; C[nrow] = $2; R[nrow] = $3; T[nrow] = $4
    rps[nrow] = $5; p50[nrow] = $7; p99[nrow] = $8
    cpup[nrow] = $9; cpur[nrow] = $10; cmds[nrow] = $11; reads[nrow] = $12; bconn[nrow] = $15
    err[nrow] = ($6 > 0) ? ($13 + $14) / $6 : 0
    if ($4 == "nginx") {
        k = $1 SUBSEP $2 SUBSEP $3
        n_rps[k] = $5; n_p50[k] = $7; n_p99[k] = $8; n_cpu[k] = $9 + $10
    }
    g = $1 SUBSEP $2 SUBSEP $4
    if (!(g in seen)) { seen[g] = 1; order[++ng] = g }
    if (!(($1) in wseen)) { wseen[$1] = 1; wlist[++nw] = $1 }
    if (!(($2) in cseen)) { cseen[$2] = 1; clist[++nc] = $2 }
}

END {
    for (i = 1; i <= nrow; i++) {
        g = W[i] SUBSEP C[i] SUBSEP T[i]
        k = W[i] SUBSEP C[i] SUBSEP R[i]
        add(g SUBSEP "rps", rps[i]); add(g SUBSEP "p50", p50[i]); add(g SUBSEP "p99", p99[i])
        add(g SUBSEP "cpup", cpup[i]); add(g SUBSEP "cpur", cpur[i])
        add(g SUBSEP "cmds", cmds[i]); add(g SUBSEP "reads", reads[i]); add(g SUBSEP "err", err[i])
        add(g SUBSEP "bconn", bconn[i])
        if (T[i] != "direct") add(g SUBSEP "cpu", cpup[i] + cpur[i])
        if ((k in n_rps) && n_rps[k] > 0) {
            add(g SUBSEP "r_rps", rps[i] / n_rps[k])
            if (n_p50[k] > 0) add(g SUBSEP "r_p50", p50[i] / n_p50[k])
            if (n_p99[k] > 0) add(g SUBSEP "r_p99", p99[i] / n_p99[k])
            if (T[i] != "direct" && n_cpu[k] > 0)
                add(g SUBSEP "r_cpu", (cpup[i] + cpur[i]) / n_cpu[k])
        }
    }
    print "| workers | conns | target | req/s (×nginx) | p50 ms (×nginx) | p99 ms (×nginx) | proxy CPU µs/req | Redis CPU µs/req | total CPU µs/req (×nginx) | Redis cmds/req | Redis reads/req | backend conns /1k req | non-2xx or error |"
    print "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for (wi = 1; wi <= nw; wi++) for (ci = 1; ci <= nc; ci++) for (o = 1; o <= ng; o++) {
        g = order[o]
        split(g, parts, SUBSEP)
        if (parts[1] != wlist[wi] || parts[2] != clist[ci]) continue
        t = parts[3]
        M[g, "rps"] = median(g SUBSEP "rps"); M[g, "r_rps"] = median(g SUBSEP "r_rps")
        M[g, "cpu"] = median(g SUBSEP "cpu"); M[g, "r_cpu"] = median(g SUBSEP "r_cpu")
        M[g, "r_p99"] = median(g SUBSEP "r_p99")
        M[g, "cmds"] = median(g SUBSEP "cmds"); M[g, "reads"] = median(g SUBSEP "reads")
        M[g, "bconn"] = median(g SUBSEP "bconn")
        cpu_cell = (t == "direct") ? "–" : sprintf("%.1f", median(g SUBSEP "cpup"))
        tot_cell = (t == "direct") ? "–" : sprintf("%.1f%s", M[g, "cpu"], fmt_ratio(M[g, "r_cpu"]))
        printf "| %s | %s | %s | %.0f%s | %.2f%s | %.2f%s | %s | %.1f | %s | %.2f | %.2f | %.2f | %.1f%% |\n",
            parts[1], parts[2], t,
            M[g, "rps"], fmt_ratio(M[g, "r_rps"]),
            median(g SUBSEP "p50"), fmt_ratio(median(g SUBSEP "r_p50")),
            median(g SUBSEP "p99"), fmt_ratio(M[g, "r_p99"]),
            cpu_cell, median(g SUBSEP "cpur"), tot_cell,
            M[g, "cmds"], M[g, "reads"], M[g, "bconn"], 100 * median(g SUBSEP "err")
    }
    print ""
    print "Targets: the gateway at its defaults (Redis store) against nginx with as many workers (issue 16;"
    print "medians of same-round ratios), then the issue-6 ones that still apply:"
    print ""
    for (wi = 1; wi <= nw; wi++) for (ci = 1; ci <= nc; ci++) {
        w = wlist[wi]; c = clist[ci]
        r = w SUBSEP c SUBSEP "gw-redis"; m = w SUBSEP c SUBSEP "gw-memory"; o = w SUBSEP c SUBSEP "gw-redis-429"
        nx = w SUBSEP c SUBSEP "nginx"
        pre = sprintf("- %s worker(s), %s conns: ", w, c)
        if ((r, "r_rps") in M) {
            check(pre "gw-redis req/s ≥ 1.0× nginx", M[r, "r_rps"], ">=", 1.0)
            check(pre "gw-redis CPU (gateway + Redis) ≤ 1.0× nginx", M[r, "r_cpu"], "<=", 1.0)
            check(pre "gw-redis p99 ≤ 1.2× nginx", M[r, "r_p99"], "<=", 1.2)
            if ((nx, "bconn") in M)
                check(pre "gw-redis backend conns /1k req ≤ nginx's (" sprintf("%.2f", M[nx, "bconn"]) ")",
                      M[r, "bconn"], "<=", M[nx, "bconn"] + 0.005)
            check(pre "gw-redis Redis commands/req ≤ 1", M[r, "cmds"], "<=", 1.0)
            if (c >= 200) check(pre "gw-redis Redis reads (round trips)/req ≤ 0.5", M[r, "reads"], "<=", 0.5)
        }
        if ((m, "r_rps") in M) check(pre "gw-memory req/s ≥ 1.15× nginx", M[m, "r_rps"], ">=", 1.15)
        r50 = w SUBSEP c SUBSEP "gw-redis-rules50"
        if (((r50, "cpu") in M) && ((r, "cpu") in M) && M[r, "cpu"] > 0) {
            check(pre "50-limit rules CPU ≤ 1.05× the default limit's", M[r50, "cpu"] / M[r, "cpu"], "<=", 1.05)
            check(pre "50-limit rules Redis commands/req ≤ the default limit's", M[r50, "cmds"], "<=", M[r, "cmds"] + 0.05)
        }
        if (((o, "rps") in M) && ((r, "rps") in M) && M[r, "rps"] > 0) {
            check(pre "over-limit req/s ≥ 2× gw-redis", M[o, "rps"] / M[r, "rps"], ">=", 2.0)
            check(pre "over-limit Redis commands/req = 0", M[o, "cmds"], "<=", 0.001)
        }
    }
}

function check(what, x, op, lim, ok) {
    ok = (op == ">=") ? (x >= lim) : (x <= lim)
    printf "%s: %.2f → %s\n", what, x, ok ? "met" : "**missed**"
}
