#!/usr/bin/env bash
# The 2003 outbreak replayed with the real programs, in four network
# namespaces and documentation addresses only:
#
#   worm   203.0.113.66-71,80-85  2001:db8:66::66,80  --uplink 1--+
#                                                              gw --- mx
#   clean  198.51.100.7/24     2001:db8:77::7/64   --uplink 2--+
#
#   gw  203.0.113.1 198.51.100.1 192.0.2.1 (+ 2001:db8:{66,77,25}::1), forwards,
#       runs `wormgate serve --config deploy/example.yaml`
#   mx  192.0.2.25 2001:db8:25::25: Postfix with deploy/header_checks and
#       deploy/body_checks, rsyslog with deploy/rsyslog-forward.conf
#
# Usage (as root; needs ip, nft, postfix, rsyslogd, swaks, unshare):
#   lab.sh run            build the lab, replay the worm, show the ban, tear down
#   lab.sh up DIR         build the lab; its state lives in DIR (created, 0755)
#   lab.sh down DIR       stop the lab's processes and delete its namespaces
#   lab.sh wormgate-stop DIR | wormgate-start DIR
# WORMGATE=/path/to/binary uses that binary instead of building one.
#
# Nothing outside DIR and the lab's own namespaces is touched: Postfix runs
# from DIR with its own main.cf and queue, rsyslog with its own config, and
# both see a private /dev (in their own mount namespace) whose log socket is
# rsyslog's. Processes are stopped by the PIDs the lab recorded.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
deploy=$(dirname "$here")
repo=$(dirname "$deploy")

die() { echo "lab: $*" >&2; exit 1; }

# alive PID NAME: PID runs and is the program NAME (not a reused PID, not a zombie).
alive() {
	local pid=$1 name=$2 stat
	[[ -n $pid && -r /proc/$pid/stat ]] || return 1
	stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
	[[ ${stat#*) } != Z* ]] || return 1
	[[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name"* ]]
}

# stop PIDFILE NAME: SIGTERM, then SIGKILL after 10 s.
stop() {
	local pidfile=$1 name=$2 pid i
	[[ -r $pidfile ]] || return 0
	pid=$(tr -dc 0-9 <"$pidfile")
	if alive "$pid" "$name"; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 100; i++)); do
			alive "$pid" "$name" || break
			sleep 0.1
		done
		if alive "$pid" "$name"; then
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	rm -f "$pidfile"
}

load() {
	dir=${1:?state directory}
	[[ -f $dir/lab.env ]] || die "$dir is not a lab directory"
	# shellcheck source=/dev/null
	. "$dir/lab.env"
}

in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# veth GW_NS GW_DEV OTHER_NS OTHER_DEV: a cable from the gateway to a host.
veth() {
	ip -n "$1" link add "$2" type veth peer name "$4" netns "$3"
	ip -n "$1" link set "$2" up
	ip -n "$3" link set "$4" up
}

addr() { # NS DEV PREFIX...
	local ns=$1 dev=$2 p
	shift 2
	for p in "$@"; do
		if [[ $p == *:* ]]; then
			ip -n "$ns" addr add "$p" dev "$dev" nodad
		else
			ip -n "$ns" addr add "$p" dev "$dev"
		fi
	done
}

wormgate_start() {
	load "$1"
	alive "$(cat "$dir/gw/wormgate.pid" 2>/dev/null)" wormgate && die "wormgate already running"
	# ip netns exec execs wormgate: $! is wormgate's PID.
	# The control socket (wormgate ban/unban/why) in the lab's directory,
	# not the host's /run/wormgate.
	WORMGATE_SOCKET=$dir/gw/control.sock ip netns exec "$NS_GW" "$WORMGATE_BIN" serve --config "$dir/gw/wormgate.yaml" >>"$dir/gw/wormgate.log" 2>&1 &
	local pid=$!
	echo $pid >"$dir/gw/wormgate.pid"
	local i
	for ((i = 0; i < 100; i++)); do
		if in_ns "$NS_GW" bash -c 'exec 3<>/dev/tcp/127.0.0.1/9514 && printf "GET /healthz HTTP/1.0\r\n\r\n" >&3 && grep -q "200 OK" <&3' 2>/dev/null; then
			return 0
		fi
		alive $pid wormgate || alive $pid ip || { cat "$dir/gw/wormgate.log" >&2; die "wormgate exited"; }
		sleep 0.1
	done
	die "wormgate not healthy after 10 s"
}

wormgate_stop() {
	load "$1"
	stop "$dir/gw/wormgate.pid" wormgate
}

mx_start() {
	local d=$dir/mx
	mkdir -p "$d/postfix" "$d/spool" "$d/data" "$d/rsyslog" "$d/dev" "$d/sasl"
	chown postfix "$d/data"
	cp "$deploy/header_checks" "$deploy/body_checks" "$d/"
	chmod 644 "$d/header_checks" "$d/body_checks"
	cat >"$d/postfix/main.cf" <<EOF
# The lab's MX: only what the lab needs, nothing shared with the host's Postfix.
compatibility_level = 3.6
queue_directory = $d/spool
data_directory = $d/data
myhostname = mx1.example.test
mydomain = example.test
myorigin = \$myhostname
mydestination = mx.example.test, \$myhostname
inet_interfaces = all
inet_protocols = all
mynetworks = 127.0.0.0/8 [::1]/128
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
# No DNS in the lab: no reverse lookups of clients, no MX lookups.
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
# Accepted mail is discarded: nothing is delivered to host mailboxes.
local_transport = discard:lab
local_recipient_maps =
alias_maps =
alias_database =
biff = no
smtputf8_enable = no
header_checks = regexp:$d/header_checks
body_checks = regexp:$d/body_checks
# SMTP AUTH on, as on most MX hosts that also take submissions: smtpd then
# accepts (and logs as sasl_sender=) the MAIL FROM AUTH= parameter of
# unauthenticated clients too, which the trust tests aim at wormgate.
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = $d/sasl
EOF
	cat >"$d/sasl/smtpd.conf" <<EOF
pwcheck_method: auxprop
auxprop_plugin: sasldb
sasldb_path: $d/sasl/sasldb2
mech_list: PLAIN LOGIN
EOF
	cat >"$d/postfix/master.cf" <<'EOF'
# service type  private unpriv  chroot  wakeup  maxproc command
smtp      inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
	# The snippet under test is the shipped one; only the target changes.
	sed 's/wormgate\.example\.net/192.0.2.1/' "$deploy/rsyslog-forward.conf" >"$d/60-wormgate.conf"
	grep -q 'target="192.0.2.1"' "$d/60-wormgate.conf" || die "rsyslog-forward.conf has no target to set"
	cat >"$d/rsyslog.conf" <<EOF
# The lab MX's rsyslog: what Debian's rsyslog.conf provides, then the snippet.
global(workDirectory="$d/rsyslog" localHostname="mx1")
module(load="imuxsock")
*.* action(type="omfile" file="$d/all.log" template="RSYSLOG_FileFormat")
include(file="$d/60-wormgate.conf")
EOF
	rsyslogd -N1 -f "$d/rsyslog.conf" >"$d/rsyslog-check.log" 2>&1 || { cat "$d/rsyslog-check.log" >&2; die "rsyslog config invalid"; }
	# Runs in a private mount namespace: /dev is replaced by $d/dev, so
	# /dev/log is rsyslog's socket for this MX only.
	cat >"$d/start.sh" <<EOF
set -eu
for n in null zero full random urandom tty; do
	: >"$d/dev/\$n"
	mount --bind "/dev/\$n" "$d/dev/\$n"
done
ln -sfn /proc/self/fd "$d/dev/fd"
ln -sfn /proc/self/fd/0 "$d/dev/stdin"
ln -sfn /proc/self/fd/1 "$d/dev/stdout"
ln -sfn /proc/self/fd/2 "$d/dev/stderr"
mount --rbind "$d/dev" /dev
rsyslogd -f "$d/rsyslog.conf" -i "$d/rsyslogd.pid"
i=0
while [ ! -S /dev/log ]; do
	i=\$((i + 1)); [ \$i -lt 100 ] || { echo "no /dev/log from rsyslogd" >&2; exit 1; }
	sleep 0.1
done
postfix -c "$d/postfix" start
EOF
	in_ns "$NS_MX" unshare --mount --propagation private sh "$d/start.sh" >"$d/start.log" 2>&1 ||
		{ cat "$d/start.log" >&2; die "mx start failed"; }
	local i
	for ((i = 0; i < 100; i++)); do
		[[ -s $d/spool/pid/master.pid ]] && in_ns "$NS_MX" bash -c 'exec 3<>/dev/tcp/192.0.2.25/25' 2>/dev/null && return 0
		sleep 0.1
	done
	die "postfix not listening after 10 s"
}

mx_stop() {
	stop "$dir/mx/spool/pid/master.pid" master
	stop "$dir/mx/rsyslogd.pid" rsyslogd
}

up() {
	dir=${1:?state directory}
	[[ ! -e $dir || -z $(ls -A "$dir") ]] || die "$dir exists and is not empty"
	mkdir -p "$dir"
	# Postfix's unprivileged processes must reach the queue below it.
	chmod 755 "$dir"
	local p
	p=wgl$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
	local bin=${WORMGATE:-}
	if [[ -z $bin ]]; then
		bin=$dir/wormgate
		(cd "$repo" && go build -o "$bin" ./cmd/wormgate)
	fi
	cat >"$dir/lab.env" <<EOF
NS_WORM=$p-worm
NS_CLEAN=$p-clean
NS_GW=$p-gw
NS_MX=$p-mx
WORMGATE_BIN=$(realpath "$bin")
EOF
	load "$dir"
	trap 'echo "lab: up failed, tearing down" >&2; down "$dir"' ERR
	local ns
	for ns in "$NS_WORM" "$NS_CLEAN" "$NS_GW" "$NS_MX"; do
		ip netns add "$ns"
		ip -n "$ns" link set lo up
	done
	veth "$NS_GW" up1 "$NS_WORM" eth0
	veth "$NS_GW" up2 "$NS_CLEAN" eth0
	veth "$NS_GW" in0 "$NS_MX" eth0
	addr "$NS_GW" up1 203.0.113.1/24 2001:db8:66::1/64
	addr "$NS_GW" up2 198.51.100.1/24 2001:db8:77::1/64
	addr "$NS_GW" in0 192.0.2.1/24 2001:db8:25::1/64
	addr "$NS_WORM" eth0 203.0.113.66/24 203.0.113.67/24 203.0.113.68/24 203.0.113.69/24 \
		203.0.113.70/24 203.0.113.71/24 2001:db8:66::66/64
	# More worms for the MAIL FROM AUTH= injection scenarios.
	addr "$NS_WORM" eth0 203.0.113.80/24 203.0.113.81/24 203.0.113.82/24 203.0.113.83/24 \
		203.0.113.84/24 203.0.113.85/24 2001:db8:66::80/64
	addr "$NS_CLEAN" eth0 198.51.100.7/24 2001:db8:77::7/64
	addr "$NS_MX" eth0 192.0.2.25/24 2001:db8:25::25/64
	local gw4 gw6
	for ns in worm:203.0.113.1:2001:db8:66::1 clean:198.51.100.1:2001:db8:77::1 mx:192.0.2.1:2001:db8:25::1; do
		IFS=: read -r name gw4 gw6 <<<"$ns"
		local var=NS_${name^^}
		ip -n "${!var}" route add default via "$gw4"
		ip -n "${!var}" -6 route add default via "$gw6"
	done
	# Forwarding in the gateway's namespace only.
	in_ns "$NS_GW" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
	mkdir -p "$dir/gw"
	# The shipped example, with the ban record kept in the lab's directory
	# instead of the host's /var/lib/wormgate.
	sed "s|^enforcer:\$|enforcer:\n  state_dir: $dir/gw/state|" "$deploy/example.yaml" >"$dir/gw/wormgate.yaml"
	grep -q "state_dir: $dir/gw/state" "$dir/gw/wormgate.yaml" || die "example.yaml has no enforcer section"
	wormgate_start "$dir"
	mx_start
	trap - ERR
	echo "lab up in $dir: namespaces $NS_WORM $NS_CLEAN $NS_GW $NS_MX"
}

down() {
	dir=${1:?state directory}
	[[ -f $dir/lab.env ]] || return 0
	load "$dir"
	mx_stop
	stop "$dir/gw/wormgate.pid" wormgate
	local ns
	for ns in "$NS_WORM" "$NS_CLEAN" "$NS_GW" "$NS_MX"; do
		[[ -e /var/run/netns/$ns ]] && ip netns del "$ns"
	done
	rm -rf "$dir"
}

worm_mail() { # FROM-ADDR SUBJECT: one worm mail, rejected by Postfix
	in_ns "$NS_WORM" swaks --timeout 5 --server 192.0.2.25 --local-interface "$1" \
		--to postmaster@mx.example.test --from a@worm.example --helo vm \
		--header "Subject: $2" --body "x" || true
}

run() {
	dir=$(mktemp -d /tmp/wormgate-lab.XXXXXX)
	rmdir "$dir"
	trap 'down "$dir"' EXIT
	up "$dir"
	echo "--- the worm sends one mail"
	worm_mail 203.0.113.66 "Re: Details" | grep -E '^ *<\*\*' || true
	sleep 0.5
	echo "--- the gateway's kernel:"
	in_ns "$NS_GW" nft list set inet wormgate blocked4
	echo "--- the worm's next connection:"
	if in_ns "$NS_WORM" timeout 2 bash -c 'exec 3<>/dev/tcp/192.0.2.25/25' 2>/dev/null; then
		echo "connected: NOT blocked" >&2
		exit 1
	fi
	echo "timed out: dropped"
	echo "--- the clean client still delivers:"
	in_ns "$NS_CLEAN" swaks --timeout 5 --server 192.0.2.25 --to postmaster@mx.example.test \
		--from ok@clean.example --helo clean.example | grep -E '^ *<- *250 .*queued'
	echo "--- wormgate's log:"
	cat "$dir/gw/wormgate.log"
}

case ${1:-} in
run) run ;;
up) up "${2:-}" ;;
down) down "${2:-}" ;;
wormgate-start) wormgate_start "${2:-}" ;;
wormgate-stop) wormgate_stop "${2:-}" ;;
*) sed -n '2,20s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
esac
