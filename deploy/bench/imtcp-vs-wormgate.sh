#!/usr/bin/env bash
# imtcp-vs-wormgate.sh — syslog over TCP: rsyslog's imtcp against
# `wormgate serve`, on the same stream, in the same run.
#
#   deploy/bench/imtcp-vs-wormgate.sh [LINES]      (default 1000000)
#
# Generates LINES lines of the synthetic multi-host Postfix log
# (cmd/wormgate/bench) and sends them, as an MX host's rsyslog would
# forward them, in both of rsyslog's TCP formats:
#   lf     RSYSLOG_TraditionalForwardFormat, LF-terminated;
#   octet  RSYSLOG_SyslogProtocol23Format (RFC 5424) with RFC 6587 octet
#          counting, what deploy/rsyslog-forward.conf sends;
# over 1 and over 4 TCP connections (each MX host's lines on one of them,
# in order), RUNS times each (default 3), alternating:
#   - to an rsyslogd of its own (its own config, pid file and work dir in
#     a temporary directory, a free loopback port; the system's rsyslog is
#     never touched) with imtcp, a filter (mail facility) and omfile. Done:
#     the last line is in the file (see deploy/bench/main.go);
#   - to `wormgate serve` with the dry-run firewall. Done: /metrics shows
#     every message received and every event matched.
# Time is from the first byte sent to done; the tables show the medians
# and rsyslog's median over wormgate's.
#
# The same lines also go through `wormgate check`, with the same config,
# and serve must ban exactly the addresses that check bans. The bench
# config is the default with every rule's window widened to 240h: serve
# counts a rule's window on the clock and check on the log's timestamps,
# and a week of log sent in a second would otherwise fit every window in
# serve and not in check.
#
# Exits 1 when a target is missed: wormgate at least 1.5x faster than
# rsyslog in every format and connection count (medians), 0 messages
# dropped by either, serve's bans equal to check's.
set -euo pipefail
# Both ban lists are sorted bytewise.
export LC_ALL=C

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
lines=${1:-1000000}
runs=${RUNS:-3}
target=1.5

command -v rsyslogd >/dev/null || { echo "imtcp-vs-wormgate: rsyslogd not found (apt-get install -y rsyslog)" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

cd "$root"
go build -o "$work/wormgate" ./cmd/wormgate
go build -o "$work/bench" ./deploy/bench
# The generator ends a session past the count: cut it to exactly LINES.
go run ./cmd/wormgate/bench -lines "$lines" >"$work/generated"
head -n "$lines" "$work/generated" >"$work/maillog"
rm "$work/generated"
echo "log: $(wc -l <"$work/maillog") lines, $(du -m "$work/maillog" | cut -f1) MB; $(nproc) CPUs; $(rsyslogd -v 2>/dev/null | sed -n '1s/ compiled with://p')"

wg_port=$("$work/bench" -free-port)
http_port=$("$work/bench" -free-port)
rs_port=$("$work/bench" -free-port)

# The default config, every rule's window widened (see above), plus the
# bench's listeners; check reads the same file.
{
	echo "matcher:"
	"$work/wormgate" config | sed -n '/^  rules:/,/^[^ #]/p' | sed '$d' | sed 's/^\( *window:\).*/\1 240h0m0s/'
	cat <<EOF
receiver:
  udp_listen: []
  tcp_listen: ["127.0.0.1:$wg_port"]
  allowed_senders: [127.0.0.0/8]
enforcer:
  dry_run: true
  state_dir: ""
  max_new_bans_per_second: 1000000
http:
  listen: 127.0.0.1:$http_port
log:
  level: WARN
EOF
} >"$work/wormgate.yaml"
grep -q 'window: 240h' "$work/wormgate.yaml" || { echo "imtcp-vs-wormgate: no rule windows found in \`wormgate config\`" >&2; exit 1; }

# stop PID: end a process this script started, and wait for it.
stop() {
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
	local keep=()
	for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
	pids=("${keep[@]}")
}

run_rsyslog() { # format conns; prints bench's key=value line
	local dir=$work/rsyslog
	rm -rf "$dir" && mkdir -p "$dir"
	cat >"$dir/rsyslog.conf" <<EOF
global(workDirectory="$dir" maxMessageSize="64k")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="$rs_port")
if \$hostname == "benchend" then {
	action(type="omfile" file="$dir/end.log")
	stop
}
if \$syslogfacility-text == "mail" then action(type="omfile" file="$dir/mail.log")
EOF
	rsyslogd -n -f "$dir/rsyslog.conf" -i "$dir/rsyslogd.pid" 2>"$dir/stderr" &
	local pid=$!
	pids+=("$pid")
	"$work/bench" -log "$work/maillog" -format "$1" -conns "$2" -addr "127.0.0.1:$rs_port" -pid "$pid" \
		-rsyslog-out "$dir/mail.log" -rsyslog-end "$dir/end.log" || { cat "$dir/stderr" >&2; stop "$pid"; return 1; }
	stop "$pid"
}

run_wormgate() { # format conns events; prints bench's key=value line, bans in $work/bans-serve
	WORMGATE_SOCKET=$work/control.sock "$work/wormgate" serve --config "$work/wormgate.yaml" 2>"$work/wormgate.stderr" &
	local pid=$!
	pids+=("$pid")
	"$work/bench" -log "$work/maillog" -format "$1" -conns "$2" -addr "127.0.0.1:$wg_port" -pid "$pid" \
		-metrics "http://127.0.0.1:$http_port/metrics" -events "$3" -bans-out "$work/bans-serve" ||
		{ cat "$work/wormgate.stderr" >&2; stop "$pid"; return 1; }
	stop "$pid"
}

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

fail=0
report=()
for format in lf octet; do
	for conns in 1 4; do
		# The lines as sent, markers included (one per connection).
		"$work/bench" -log "$work/maillog" -format "$format" -conns "$conns" -check-input "$work/check.log"
		"$work/wormgate" check --config "$work/wormgate.yaml" "$work/check.log" >"$work/check.bans" 2>"$work/check.summary"
		cut -f1 "$work/check.bans" | sort >"$work/bans-check"
		events=$(sed -n 's/^check: events by kind: //p' "$work/check.summary" | tr ' ' '\n' | cut -d= -f2 | paste -sd+ | bc)
		echo "check ($format, $conns markers): $(sed -n 's/^check: \([0-9]* bans\) by rule.*/\1/p' "$work/check.summary"), $events events"
		: >"$work/rs.times"
		: >"$work/wg.times"
		: >"$work/rs.cpu"
		: >"$work/wg.cpu"
		for run in $(seq "$runs"); do
			# Not in $(...): the trap must know the PIDs they start.
			run_rsyslog "$format" "$conns" >"$work/rs.out" || { echo "rsyslog failed ($format, $conns conns)"; exit 1; }
			run_wormgate "$format" "$conns" "$events" >"$work/wg.out" || { echo "wormgate failed ($format, $conns conns)"; exit 1; }
			rs=$(cat "$work/rs.out")
			wg=$(cat "$work/wg.out")
			echo "$format conns=$conns run $run: rsyslog $(echo "$rs" | field seconds) s, CPU $(echo "$rs" | field cpu) s (written $(echo "$rs" | field written), dropped $(echo "$rs" | field dropped)); wormgate $(echo "$wg" | field seconds) s, CPU $(echo "$wg" | field cpu) s (received $(echo "$wg" | field received), dropped $(echo "$wg" | field dropped))"
			echo "$rs" | field seconds >>"$work/rs.times"
			echo "$wg" | field seconds >>"$work/wg.times"
			echo "$rs" | field cpu >>"$work/rs.cpu"
			echo "$wg" | field cpu >>"$work/wg.cpu"
			if [ "$(echo "$rs" | field dropped)" != 0 ]; then echo "MISSED: rsyslog lost lines"; fail=1; fi
			if [ "$(echo "$wg" | field dropped)" != 0 ]; then echo "MISSED: wormgate dropped messages"; fail=1; fi
			if ! diff -q "$work/bans-check" "$work/bans-serve" >/dev/null; then
				echo "MISSED: serve's bans differ from check's ($(wc -l <"$work/bans-serve") vs $(wc -l <"$work/bans-check")):"
				diff "$work/bans-check" "$work/bans-serve" | head -5
				fail=1
			fi
		done
		rs_med=$(median <"$work/rs.times")
		wg_med=$(median <"$work/wg.times")
		ratio=$(echo "$rs_med / $wg_med" | bc -l)
		report+=("$(printf '%-6s %5d %12.3f %12.3f %8.2fx %12.2f %12.2f' "$format" "$conns" "$rs_med" "$wg_med" "$ratio" \
			"$(median <"$work/rs.cpu")" "$(median <"$work/wg.cpu")")")
		if [ "$(echo "$ratio >= $target" | bc -l)" != 1 ]; then
			echo "MISSED: $format over $conns connection(s): wormgate only $(printf %.2f "$ratio")x rsyslog"
			fail=1
		fi
	done
done

echo
echo "median of $runs, seconds from first byte to last message processed ($(wc -l <"$work/maillog") lines + 1 marker per connection),"
echo "and CPU seconds each process used meanwhile (the machine's load moves the wall times, hardly the CPU)"
printf '%-6s %5s %12s %12s %9s %12s %12s\n' format conns rsyslog wormgate ratio "rsyslog CPU" "wormgate CPU"
printf '%s\n' "${report[@]}"
[ $fail = 0 ] && echo "all targets met (>= ${target}x, 0 drops, serve's bans = check's)"
exit $fail
