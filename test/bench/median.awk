# Medians over rounds for the bench summaries (summary.awk, modes_summary.awk), loaded
# before them: awk -f median.awk -f summary.awk results.tsv. add(key, x) records one value
# under key; median(key) is the median of those recorded ("" when none). Uses the globals
# cnt[] and val[]. Portable awk (mawk): no asort, no gawk extensions.

function median(key, n, i, j, t, v) {
    n = cnt[key]
    for (i = 1; i <= n; i++) v[i] = val[key, i]
    for (i = 2; i <= n; i++) {
        t = v[i]
        for (j = i - 1; j >= 1 && v[j] > t; j--) v[j + 1] = v[j]
        v[j + 1] = t
    }
    if (n == 0) return ""
    if (n % 2) return v[(n + 1) / 2]
    return (v[n / 2] + v[n / 2 + 1]) / 2
}

function add(key, x) {
    cnt[key]++
    val[key, cnt[key]] = x
}
