#!/usr/bin/env bash
# nft-bench.sh compares wormgate's kernel writes with `nft -f`, in the same
# run, on 100,000 timed IPv4 bans (198.18.0.0/15, namespace-local sets, no
# traffic). RUNS times each (default 5), medians and ratios at the end:
#   (a) Firewall.Add of 100k new bans into a set-up table   (BenchmarkNFTablesAdd100k)
#   (b) nft -f 'add element inet wormgate blocked4 { ... }' into the same table
#   (c) start-up restore of 100k recorded bans until Ready  (BenchmarkStartup100k)
#   (d) nft -f of the whole ruleset with the 100k elements into an empty namespace
# Needs root, ip, nft and go. Every namespace is created here (or by the Go
# benchmarks, which remove their own) and deleted on exit; the host's
# ruleset is never touched.
set -euo pipefail

RUNS=${RUNS:-5}
N=100000
[[ $EUID -eq 0 ]] || { echo "nft-bench: needs root" >&2; exit 2; }
for bin in ip nft go awk; do
	command -v "$bin" >/dev/null || { echo "nft-bench: $bin not found" >&2; exit 2; }
done

cd "$(dirname "$0")/../../.."
tmp=$(mktemp -d)
namespaces=()
cleanup() {
	for ns in "${namespaces[@]}"; do
		ip netns del "$ns" 2>/dev/null || true
	done
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

# The elements, as nft writes them: 198.18.0.0 onwards, one hour each.
awk -v n="$N" 'BEGIN {
	printf "add element inet wormgate blocked4 { "
	for (i = 0; i < n; i++) {
		printf "%s%d.%d.%d.%d timeout 1h", (i ? ", " : ""), 198, 18 + int(i / 65536), int(i / 256) % 256, i % 256
	}
	print " }"
}' >"$tmp/elements.nft"

# wormgate's ruleset as Setup makes it.
cat >"$tmp/table.nft" <<'NFT'
table inet wormgate {
	set blocked4 { type ipv4_addr; flags timeout; }
	set blocked6 { type ipv6_addr; flags timeout; }
	set ports { type inet_service; elements = { 25, 465, 587 } }
	chain prerouting {
		type filter hook prerouting priority raw; policy accept;
		ip saddr @blocked4 tcp dport @ports counter drop
		ip6 saddr @blocked6 tcp dport @ports counter drop
	}
}
NFT
cat "$tmp/table.nft" "$tmp/elements.nft" >"$tmp/full.nft"

newns() {
	local ns="wgbench-$$-$1"
	ip netns add "$ns"
	namespaces+=("$ns")
	echo "$ns"
}

# nft_ms NS FILE: milliseconds of one `nft -f FILE` inside NS, the tool's
# own start and parse included, `ip netns exec` not.
nft_ms() {
	ip netns exec "$1" bash -c 's=$(date +%s%N); nft -f "$0"; e=$(date +%s%N); echo $(((e - s) / 1000000))' "$2"
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "building the benchmarks" >&2
go test -c -o "$tmp/nft.test" ./enforcer/nft/

# gobench NAME: one line per run, milliseconds per op.
gobench() {
	"$tmp/nft.test" -test.run '^$' -test.bench "^$1\$" -test.benchtime 1x -test.count 1 |
		awk '/^Benchmark/ { printf "%d\n", $3 / 1e6 }'
}

: >"$tmp/a"
: >"$tmp/b"
: >"$tmp/c"
: >"$tmp/d"
for run in $(seq "$RUNS"); do
	# Interleaved, so that both tools see the same load of the machine.
	gobench BenchmarkNFTablesAdd100k >>"$tmp/a"
	ns=$(newns "b$run")
	ip netns exec "$ns" nft -f "$tmp/table.nft"
	nft_ms "$ns" "$tmp/elements.nft" >>"$tmp/b"
	[[ $(ip netns exec "$ns" nft list set inet wormgate blocked4 | grep -o expires | wc -l) -eq $N ]] ||
		{ echo "nft-bench: nft -f did not load $N elements" >&2; exit 1; }
	ip netns del "$ns"

	gobench BenchmarkStartup100k >>"$tmp/c"
	ns=$(newns "d$run")
	nft_ms "$ns" "$tmp/full.nft" >>"$tmp/d"
	ip netns del "$ns"
	echo "run $run: add $(tail -1 "$tmp/a") ms vs nft $(tail -1 "$tmp/b") ms; restore $(tail -1 "$tmp/c") ms vs nft $(tail -1 "$tmp/d") ms" >&2
done

a=$(median <"$tmp/a")
b=$(median <"$tmp/b")
c=$(median <"$tmp/c")
d=$(median <"$tmp/d")
printf '%-44s %8s\n' "median of $RUNS, $N timed IPv4 bans" "ms"
printf '%-44s %8s\n' "(a) wormgate Firewall.Add" "$a"
printf '%-44s %8s\n' "(b) nft -f add element" "$b"
printf '%-44s %8s\n' "(c) wormgate start-up restore (record→Ready)" "$c"
printf '%-44s %8s\n' "(d) nft -f full ruleset" "$d"
awk -v a="$a" -v b="$b" -v c="$c" -v d="$d" 'BEGIN {
	printf "add:     nft/wormgate = %.2fx\n", b / a
	printf "restore: nft/wormgate = %.2fx\n", d / c
}'
