# Summary of run.sh's redis-modes part: reads redis-modes.tsv (columns: round mode rps reqs
# p50_ms p99_ms cpu_gw_us cpu_redis_us script_calls_per_req redis_cmds_per_req
# redis_reads_per_req redis_in_bytes_per_req redis_out_bytes_per_req non2xx sockerr) and prints a Markdown table of medians over rounds,
# each mode's ratios to plaintext in the same round (medians of those), and the issue-15
# target checks: gateway CPU per request, cluster and TLS, at most 1.15 × plaintext.
# Portable awk (mawk). median() and add() come from median.awk, loaded first (run.sh:
# awk -f median.awk -f modes_summary.awk).

function ratio(m, what, r) {
    r = median(m SUBSEP what)
    return r == "" ? "" : sprintf(" (%.2f×)", r)
}

BEGIN { FS = "\t" }

$1 == "round" { next }

{
    n++
    R[n] = $1; M[n] = $2; rps[n] = $3; reqs[n] = $4; p99[n] = $6; cg[n] = $7; cr[n] = $8
    calls[n] = $9; cmds[n] = $10; reads[n] = $11; bin[n] = $12; bout[n] = $13
    bad[n] = $14 + $15
    if ($2 == "plain") { prps[$1] = $3; pcg[$1] = $7; pct[$1] = $7 + $8 }
    if (!(($2) in seen)) { seen[$2] = 1; order[++nm] = $2 }
}

END {
    for (i = 1; i <= n; i++) {
        m = M[i]
        add(m SUBSEP "rps", rps[i]); add(m SUBSEP "p99", p99[i]); add(m SUBSEP "cg", cg[i])
        add(m SUBSEP "cr", cr[i]); add(m SUBSEP "ct", cg[i] + cr[i]); add(m SUBSEP "calls", calls[i])
        add(m SUBSEP "cmds", cmds[i]); add(m SUBSEP "reads", reads[i])
        add(m SUBSEP "bin", bin[i]); add(m SUBSEP "bout", bout[i])
        tot[m] += reqs[i]; errs[m] += bad[i]
        if ((R[i] in prps) && prps[R[i]] > 0 && pcg[R[i]] > 0) {
            add(m SUBSEP "r_rps", rps[i] / prps[R[i]])
            add(m SUBSEP "r_cg", cg[i] / pcg[R[i]])
            add(m SUBSEP "r_ct", (cg[i] + cr[i]) / pct[R[i]])
        }
    }
    print "| Redis | req/s (×plain) | p99 ms | gateway CPU µs/req (×plain) | Redis CPU µs/req | total CPU µs/req (×plain) | script calls/req | Redis cmds/req | Redis reads/req | Redis bytes in / out per req | non-2xx or error |"
    print "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for (k = 1; k <= nm; k++) {
        m = order[k]
        printf "| %s | %.0f%s | %.2f | %.1f%s | %.1f | %.1f%s | %.3f | %.2f | %.2f | %.0f / %.0f | %.1f%% |\n",
            (m == "plain" ? "one server, plaintext" : m == "tls" ? "one server, TLS" : \
             m == "cluster" ? "cluster, 3 masters" : m),
            median(m SUBSEP "rps"), ratio(m, "r_rps"), median(m SUBSEP "p99"),
            median(m SUBSEP "cg"), ratio(m, "r_cg"), median(m SUBSEP "cr"),
            median(m SUBSEP "ct"), ratio(m, "r_ct"), median(m SUBSEP "calls"),
            median(m SUBSEP "cmds"), median(m SUBSEP "reads"), median(m SUBSEP "bin"), median(m SUBSEP "bout"),
            (tot[m] > 0 ? 100 * errs[m] / tot[m] : 0)
    }
    print ""
    for (k = 1; k <= nm; k++) {
        m = order[k]
        if (m == "plain" || cnt[m SUBSEP "r_cg"] == 0) continue
        x = median(m SUBSEP "r_cg")
        printf "%s: gateway CPU per request %.2f× plaintext (target ≤ 1.15×) → %s; gateway + Redis CPU %.2f×\n",
            (m == "tls" ? "TLS" : m == "cluster" ? "Cluster" : m), x,
            (x <= 1.15 ? "met" : "**missed**"), median(m SUBSEP "r_ct")
        if (k < nm) print ""
    }
}
