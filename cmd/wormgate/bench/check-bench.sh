#!/usr/bin/env bash
# check-bench.sh — how fast `wormgate check` replays a mail log, against
# fail2ban-regex with an equivalent filter on the same file.
#
#   cmd/wormgate/bench/check-bench.sh [LINES]      (default 1000000)
#
# Generates a synthetic multi-host Postfix log of LINES lines (main.go in
# this directory), times `wormgate check` on it (best of 3; peak RSS from
# /usr/bin/time), times fail2ban-regex (Debian package fail2ban) with
# wormgate-equivalent.conf, and prints the ratio. F2B_LINES=N times
# fail2ban-regex on the first N lines only and extrapolates linearly (it
# says so). Exits 1 when a target is missed: >= 1,000,000 lines/s, peak
# RSS < 200 MB, >= 20x fail2ban-regex.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
lines=${1:-1000000}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

command -v fail2ban-regex >/dev/null || { echo "check-bench: fail2ban-regex not found (apt-get install -y fail2ban)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "check-bench: /usr/bin/time not found (apt-get install -y time)" >&2; exit 1; }

cd "$root"
go build -o "$work/wormgate" ./cmd/wormgate
go run ./cmd/wormgate/bench -lines "$lines" >"$work/maillog"
n=$(wc -l <"$work/maillog")
f2b_lines=${F2B_LINES:-$n}
echo "log: $n lines, $(du -m "$work/maillog" | cut -f1) MB, $(cut -d' ' -f2 "$work/maillog" | sort -u | wc -l) hosts"

now() { date +%s.%N; }

best=
for run in 1 2 3; do
	t0=$(now)
	/usr/bin/time -f '%M' -o "$work/rss" "$work/wormgate" check "$work/maillog" >"$work/bans" 2>"$work/summary"
	t1=$(now)
	secs=$(echo "$t1 - $t0" | bc -l)
	rss=$(tail -1 "$work/rss")
	echo "wormgate check run $run: $(printf %.3f "$secs") s, peak RSS $((rss / 1024)) MB"
	if [ -z "$best" ] || [ "$(echo "$secs < $best" | bc -l)" = 1 ]; then best=$secs; best_rss=$rss; fi
done
sed 's/^/  /' "$work/summary"
echo "  $(wc -l <"$work/bans") addresses would be banned"
wg_rate=$(echo "$n / $best" | bc -l)

f2b_log=$work/maillog
if [ "$f2b_lines" -lt "$n" ]; then
	head -n "$f2b_lines" "$work/maillog" >"$work/maillog.head"
	f2b_log=$work/maillog.head
fi
f2b_n=$(wc -l <"$f2b_log")
t0=$(now)
fail2ban-regex "$f2b_log" "$here/wormgate-equivalent.conf" >"$work/f2b" 2>&1
t1=$(now)
f2b_secs=$(echo "$t1 - $t0" | bc -l)
f2b_rate=$(echo "$f2b_n / $f2b_secs" | bc -l)
grep -E '^Lines:' "$work/f2b" | sed 's/^/  fail2ban-regex: /'
if [ "$f2b_n" -lt "$n" ]; then
	echo "fail2ban-regex: $(printf %.2f "$f2b_secs") s for the first $f2b_n lines; extrapolated to $n lines: $(printf %.1f "$(echo "$n / $f2b_rate" | bc -l)") s"
else
	echo "fail2ban-regex: $(printf %.2f "$f2b_secs") s for $f2b_n lines"
fi

ratio=$(echo "$wg_rate / $f2b_rate" | bc -l)
printf 'wormgate check: %.0f lines/s (best of 3), peak RSS %d MB\n' "$wg_rate" $((best_rss / 1024))
printf 'fail2ban-regex: %.0f lines/s\n' "$f2b_rate"
printf 'ratio:          %.1fx\n' "$ratio"

fail=0
[ "$(echo "$wg_rate >= 1000000" | bc -l)" = 1 ] || { echo "MISSED: under 1,000,000 lines/s"; fail=1; }
[ $((best_rss / 1024)) -lt 200 ] || { echo "MISSED: peak RSS 200 MB or more"; fail=1; }
[ "$(echo "$ratio >= 20" | bc -l)" = 1 ] || { echo "MISSED: less than 20x fail2ban-regex"; fail=1; }
[ $fail = 0 ] && echo "all targets met"
exit $fail
