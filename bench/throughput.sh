#!/usr/bin/env bash
# Forward throughput and latency benchmark, on loopback or over an emulated
# WAN link (-rtt, -rate, -loss; see "WAN" below).
#
# Builds p2pnode (no -race) and two helpers (bench/throughput/barestream, a
# minimal forwarder over one bare go-libp2p stream; bench/throughput/latency,
# an echo server and RTT/setup timer) into a temporary directory, then runs
# iperf3 through every path below, interleaved in rounds (order rotated each
# round), sending and receiving (-R):
#
#   direct         iperf3 straight to its server (reference)
#   socat          socat TCP-LISTEN,fork -> TCP (a plain userspace forwarder)
#   ssh-L          ssh -N -L to a local sshd started here (throw-away keys)
#   bare-tcp       barestream over TCP + Noise + yamux (the stack's ceiling)
#   bare-quic      barestream over QUIC
#   p2pnode-default  p2pnode bootstrap + serve + forward, TCP and QUIC both
#                  listening on every node (as a user runs it), no forcing
#   p2pnode-tcp    the same, TCP transport only
#   p2pnode-quic   the same, QUIC only
#
# For every p2pnode path the table says which transport carried the data:
# in the middle of each iperf3 run the script asks the serving node
# (`p2pnode status --json` over its control socket) for its connections to
# the forward's peer ID, and names the one with the most streams (iperf3's
# control and data streams); "tcp:3 quic-v1:0" in the log lists them all.
#
# then 1-byte ping-pong RTT (one connection) and connection setup time
# (connect + first byte echoed) through the forwarders to an echo server.
#
# Usage (from anywhere in the repository):
#   bench/throughput.sh [-rounds 3] [-time 5] [-paths direct,ssh-L,...]
#                       [-rtt-n 10000] [-setup-n 1000] [-no-latency] [-no-throughput]
#                       [-baseline P2PNODE-BINARY]
#                       [-rtt MS] [-rate MBIT] [-loss PCT] [-tcp-buf BYTES]
#
# WAN: -rtt MS, -rate MBIT or -loss PCT runs the same paths between two
# hosts of a netlab lab (internal/netlab: network namespaces, as root)
# instead of loopback: the script hands over to
#   go test -tags wanbench -run TestWAN ./bench/wanlab/ -args ...
# which builds the lab (a server host and a client host on one public
# segment, no NAT; the client's link shaped with -rtt/2 of delay, -rate
# Mbit/s and -loss % in each direction) and runs this script again inside
# it: iperf3's server, the echo server, sshd, p2pnode bootstrap and serve
# and barestream serve run on the server host; iperf3's client, ssh -L,
# socat, p2pnode forward and barestream forward on the client host. Every
# process runs in a lab namespace (`ip netns exec`), none in the machine's.
#   -rtt MS      round trip added between the hosts (default 0)
#   -rate MBIT   link rate, Mbit/s, 0 = unlimited (default 1000)
#   -loss PCT    packet loss, percent, in each direction (default 0)
#   -tcp-buf N   the lab hosts' tcp_rmem/tcp_wmem maximum, bytes (default
#                33554432: a host tuned for a long fat path; 0 keeps the
#                kernel's); the machine's own settings are not touched
# WAN defaults differ: -rtt-n 20 -setup-n 50 (each sample costs RTTs), and
# the tables add each path's ratio to ssh-L, the 1-byte RTT measured on
# the direct path, and setup p50/p99 against ssh-L's minus one RTT.
#
# -baseline adds the paths base-default, base-tcp and base-quic: the same as
# the p2pnode-* paths with another p2pnode binary (say, one built before a
# change), measured in the same interleaved rounds, for before/after figures.
#
# Every measurement takes the lock $P2PNODE_BENCH_LOCK (default
# /tmp/p2pnode-bench.lock) with flock, so that benchmarks sharing a machine
# never measure at the same time. MB/s is 10^6 bytes per second as received
# (iperf3's sum_received); the table shows the median over the rounds.
set -euo pipefail

rounds=3
secs=5
paths="p2pnode-default,direct,socat,ssh-L,bare-tcp,bare-quic,p2pnode-tcp,p2pnode-quic"
rtt_n=
setup_n=
do_latency=1
do_throughput=1
baseline=
wan=0
rtt=0
rate=1000
loss=0
tcp_buf=33554432
args=("$@") # for the run inside the WAN lab
while [ $# -gt 0 ]; do
	case "$1" in
	-rounds) rounds=$2; shift 2 ;;
	-time) secs=$2; shift 2 ;;
	-paths) paths=$2; shift 2 ;;
	-rtt-n) rtt_n=$2; shift 2 ;;
	-setup-n) setup_n=$2; shift 2 ;;
	-no-latency) do_latency=0; shift ;;
	-no-throughput) do_throughput=0; shift ;;
	-baseline) baseline=$(realpath "$2"); shift 2 ;;
	-rtt) rtt=$2; wan=1; shift 2 ;;
	-rate) rate=$2; wan=1; shift 2 ;;
	-loss) loss=$2; wan=1; shift 2 ;;
	-tcp-buf) tcp_buf=$2; wan=1; shift 2 ;;
	-h | -help | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "throughput: unknown argument $1 (see $0 -help)" >&2; exit 2 ;;
	esac
done
num() { [[ $2 =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "throughput: $1 $2: want a number >= 0" >&2; exit 2; }; }
num -rtt "$rtt"; num -rate "$rate"; num -loss "$loss"; num -tcp-buf "$tcp_buf"
if [ $wan = 1 ]; then
	rtt_n=${rtt_n:-20}
	setup_n=${setup_n:-50}
else
	rtt_n=${rtt_n:-10000}
	setup_n=${setup_n:-1000}
fi
LOCK=${P2PNODE_BENCH_LOCK:-/tmp/p2pnode-bench.lock}
if [ -n "$baseline" ]; then
	[ -x "$baseline" ] || { echo "throughput: -baseline $baseline is not an executable" >&2; exit 2; }
	[[ ",$paths," == *,base-* ]] || paths+=",base-default,base-tcp,base-quic"
fi

missing=()
declare -A pkg=([iperf3]=iperf3 [socat]=socat [ssh]=openssh-client [ssh-keygen]=openssh-client
	[jq]=jq [flock]=util-linux [go]="Go (https://go.dev/dl/)")
for tool in iperf3 socat ssh ssh-keygen jq flock go; do
	command -v "$tool" >/dev/null || missing+=("${pkg[$tool]}")
done
SSHD=$(command -v sshd || true)
[ -n "$SSHD" ] || { [ -x /usr/sbin/sshd ] && SSHD=/usr/sbin/sshd; } || missing+=(openssh-server)
if [ ${#missing[@]} -gt 0 ]; then
	echo "throughput: missing tools; install them with: apt-get install $(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')" >&2
	exit 2
fi

cd "$(dirname "$0")/.."

# S and C prefix a command to run it on the server or the client host: in a
# lab namespace (WAN) or here (loopback). SIP is the server's address, the
# one its services listen on; CIP the client's.
S=() C=() SIP=127.0.0.1 CIP=127.0.0.1 where=loopback
if [ $wan = 1 ]; then
	if [ -z "${P2PNODE_WAN_SERVER_NS:-}" ]; then
		# Not yet in a lab: build one (a test, since netlab is test support)
		# and let it run this script again with the P2PNODE_WAN_* variables.
		[ "$(id -u)" = 0 ] || { echo "throughput: -rtt/-rate/-loss need root (network namespaces)" >&2; exit 2; }
		table=$(mktemp /tmp/p2pnode-wan-table.XXXXXX)
		trap 'rm -f "$table"' EXIT
		rc=0
		P2PNODE_WAN_TABLE=$table go test -tags wanbench -run '^TestWAN$' -v -count=1 -timeout 6h ./bench/wanlab/ \
			-args -rtt "$rtt" -rate "$rate" -loss "$loss" -tcp-buf "$tcp_buf" -- "${args[@]}" >&2 || rc=$?
		cat "$table"
		exit $rc
	fi
	S=(ip netns exec "$P2PNODE_WAN_SERVER_NS")
	C=(ip netns exec "$P2PNODE_WAN_CLIENT_NS")
	SIP=$P2PNODE_WAN_SERVER_IP
	CIP=$P2PNODE_WAN_CLIENT_IP
	where="WAN lab (RTT +$rtt ms, rate $rate Mbit/s (0 = unlimited), loss $loss % each way, tcp_[rw]mem max $tcp_buf)"
fi

tmp=$(mktemp -d /tmp/p2pnode-throughput.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "throughput: $*" >&2; }
die() { log "$*"; exit 1; }

log "building into $tmp"
go build -o "$tmp/p2pnode" ./cmd/p2pnode
go build -o "$tmp/barestream" ./bench/throughput/barestream
go build -o "$tmp/latency" ./bench/throughput/latency
P2PNODE=$tmp/p2pnode
# freeport S|C: a free TCP port on the server or the client host.
freeport() { if [ "$1" = S ]; then "${S[@]}" "$tmp/latency" freeport; else "${C[@]}" "$tmp/latency" freeport; fi; }

# start NAME CMD...: runs CMD in the background, stdout to $tmp/NAME.out,
# stderr to $tmp/NAME.err.
start() {
	local name=$1; shift
	"$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
	pids+=($!)
}

# wait_line NAME REGEX: waits (20 s) for a line of NAME's stdout matching
# REGEX and prints it.
wait_line() {
	local name=$1 re=$2 i line
	for ((i = 0; i < 200; i++)); do
		if line=$(grep -E -m1 -- "$re" "$tmp/$name.out" 2>/dev/null); then
			echo "$line"
			return 0
		fi
		sleep 0.1
	done
	log "$name did not print /$re/ in 20 s; its stderr:"
	tail -20 "$tmp/$name.err" >&2
	exit 1
}

# wait_listen S|C PORT: waits (20 s) until something listens on TCP PORT of
# the server or the client host, without connecting to it. /proc/net/tcp
# shows the namespace of the process reading it, hence cat on that host.
wait_listen() {
	local hex i pre=("${C[@]}")
	[ "$1" != S ] || pre=("${S[@]}")
	hex=$(printf ':%04X$' "$2")
	for ((i = 0; i < 200; i++)); do
		"${pre[@]}" cat /proc/net/tcp | awk -v p="$hex" '$2 ~ p && $4 == "0A" { found = 1 } END { exit !found }' && return 0
		sleep 0.1
	done
	die "nothing listens on port $2 of the $1 host after 20 s"
}

if [ $wan = 1 ] && [ "$tcp_buf" != 0 ]; then
	for ns in "$P2PNODE_WAN_SERVER_NS" "$P2PNODE_WAN_CLIENT_NS"; do
		ip netns exec "$ns" sysctl -q -w "net.ipv4.tcp_rmem=4096 131072 $tcp_buf" "net.ipv4.tcp_wmem=4096 16384 $tcp_buf"
	done
fi

iperf_port=$(freeport S)
start iperf3-server "${S[@]}" iperf3 -s -B "$SIP" -p "$iperf_port"
wait_listen S "$iperf_port"
start echo-server "${S[@]}" "$tmp/latency" echo -listen "$SIP:0"
echo_addr=$(wait_line echo-server '^listening ' | cut -d' ' -f2)
echo_port=${echo_addr##*:}

declare -A port # path -> port on the client host iperf3 connects to
declare -A chost # path -> address on the client host iperf3 connects to (default 127.0.0.1)
declare -A cpupids # path -> the forwarder's processes (not iperf3's), for CPU per GB
declare -A eport # path -> local port of the echo server through that path
port[direct]=$iperf_port
eport[direct]=$echo_port
chost[direct]=$SIP

has_path() { [[ ",$paths," == *",$1,"* ]]; }

if has_path socat; then
	port[socat]=$(freeport C)
	start socat "${C[@]}" socat "TCP-LISTEN:${port[socat]},bind=127.0.0.1,fork,reuseaddr" "TCP:$SIP:$iperf_port"
	cpupids[socat]=${pids[-1]}
	eport[socat]=$(freeport C)
	start socat-echo "${C[@]}" socat "TCP-LISTEN:${eport[socat]},bind=127.0.0.1,fork,reuseaddr" "TCP:$SIP:$echo_port"
	wait_listen C "${port[socat]}"
	wait_listen C "${eport[socat]}"
fi

if has_path ssh-L; then
	mkdir -p "$tmp/ssh"
	ssh-keygen -q -t ed25519 -N '' -f "$tmp/ssh/host_key"
	ssh-keygen -q -t ed25519 -N '' -f "$tmp/ssh/user_key"
	[ "$(id -u)" != 0 ] || mkdir -p /run/sshd
	ssh_port=$(freeport S)
	cat >"$tmp/ssh/sshd_config" <<EOF
ListenAddress $SIP
Port $ssh_port
HostKey $tmp/ssh/host_key
PidFile $tmp/ssh/sshd.pid
AuthorizedKeysFile $tmp/ssh/user_key.pub
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
UseDNS no
AllowTcpForwarding yes
LogLevel ERROR
EOF
	start sshd "${S[@]}" "$SSHD" -D -e -f "$tmp/ssh/sshd_config"
	cpupids[ssh-L]=${pids[-1]}
	wait_listen S "$ssh_port"
	port[ssh-L]=$(freeport C)
	eport[ssh-L]=$(freeport C)
	start ssh "${C[@]}" ssh -N -F none -p "$ssh_port" -i "$tmp/ssh/user_key" \
		-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o IdentitiesOnly=yes \
		-o BatchMode=yes -o LogLevel=ERROR -o ExitOnForwardFailure=yes \
		-L "${port[ssh-L]}:$SIP:$iperf_port" -L "${eport[ssh-L]}:$SIP:$echo_port" \
		-l "$(id -un)" "$SIP"
	cpupids[ssh-L]+=" ${pids[-1]}"
	wait_listen C "${port[ssh-L]}"
	wait_listen C "${eport[ssh-L]}"
fi

maddr() { # transport [IP] -> listen multiaddr (default: the server's)
	case $1 in
	tcp) echo "/ip4/${2:-$SIP}/tcp/0" ;;
	quic) echo "/ip4/${2:-$SIP}/udp/0/quic-v1" ;;
	esac
}

# listen_flags FLAG TRANSPORT [IP]: FLAG MA for each listen address of
# TRANSPORT on IP (default: the server's); "default" is both, like the
# default config.
listen_flags() {
	local t
	if [ "$2" = default ]; then t="tcp quic"; else t=$2; fi
	for t in $t; do printf '%s\n%s\n' "$1" "$(maddr "$t" "${3:-}")"; done
}

for tr in tcp quic; do
	has_path "bare-$tr" || continue
	for t in iperf echo; do
		target=$SIP:$iperf_port
		[ $t = iperf ] || target=$SIP:$echo_port
		start "bare-$tr-$t-serve" "${S[@]}" "$tmp/barestream" serve -target "$target" -p2p-listen "$(maddr $tr)"
		[ $t = echo ] || cpupids[bare-$tr]=${pids[-1]}
		peer=$(wait_line "bare-$tr-$t-serve" '/p2p/')
		start "bare-$tr-$t-fwd" "${C[@]}" "$tmp/barestream" forward -peer "$peer"
		[ $t = echo ] || cpupids[bare-$tr]+=" ${pids[-1]}"
		p=$(wait_line "bare-$tr-$t-fwd" '^listening ' | sed 's/.*://')
		if [ $t = iperf ]; then port[bare-$tr]=$p; else eport[bare-$tr]=$p; fi
	done
done

declare -A p2pbin # path -> the p2pnode binary, for its serving side's status
declare -A fwdid # path -> peer ID of the forward carrying iperf3
for v in p2pnode-default p2pnode-tcp p2pnode-quic base-default base-tcp base-quic; do
	has_path "$v" || continue
	tr=${v#*-}
	bin=$P2PNODE
	[[ $v != base-* ]] || bin=$baseline
	p2pbin[$v]=$bin
	mapfile -t listen < <(listen_flags --listen "$tr")
	mapfile -t p2plisten < <(listen_flags --p2p-listen "$tr" "$CIP")
	for role in boot serve fwd fwdecho; do
		"$bin" --home "$tmp/$v-$role" init >/dev/null 2>"$tmp/init.err" || { cat "$tmp/init.err" >&2; exit 1; }
	done
	fwdid[$v]=$("$bin" --home "$tmp/$v-fwd" id)
	start "$v-boot" "${S[@]}" "$bin" --home "$tmp/$v-boot" bootstrap "${listen[@]}" --nat-port-map=false
	boot=$(wait_line "$v-boot" '/p2p/')
	start "$v-serve" "${S[@]}" "$bin" --home "$tmp/$v-serve" serve "${listen[@]}" --bootstrap "$boot" \
		--nat-port-map=false --public --expose "iperf=$SIP:$iperf_port" --expose "echo=$SIP:$echo_port"
	cpupids[$v]=${pids[-1]}
	wait_line "$v-serve" '^ready:' >/dev/null
	serve_id=$(wait_line "$v-serve" '^peer ID: ' | sed 's/^peer ID: //')
	start "$v-fwd" "${C[@]}" "$bin" --home "$tmp/$v-fwd" forward "$serve_id:iperf" --bootstrap "$boot" \
		"${p2plisten[@]}" --nat-port-map=false --listen 127.0.0.1:0
	cpupids[$v]+=" ${pids[-1]}"
	start "$v-fwdecho" "${C[@]}" "$bin" --home "$tmp/$v-fwdecho" forward "$serve_id:echo" --bootstrap "$boot" \
		"${p2plisten[@]}" --nat-port-map=false --listen 127.0.0.1:0
	port[$v]=$(wait_line "$v-fwd" '^forwarding ' | sed 's/^forwarding [^ ]*:\([0-9]*\) .*/\1/')
	eport[$v]=$(wait_line "$v-fwdecho" '^forwarding ' | sed 's/^forwarding [^ ]*:\([0-9]*\) .*/\1/')
done

IFS=, read -r -a order <<<"$paths"
for p in "${order[@]}"; do
	[ -n "${port[$p]:-}" ] || die "unknown path $p (known: direct,socat,ssh-L,bare-tcp,bare-quic,p2pnode-default,p2pnode-tcp,p2pnode-quic; base-default,base-tcp,base-quic with -baseline)"
done

# cputicks PID...: CPU time (clock ticks, user + system) that the processes
# and all their descendants have used, including children already reaped
# (cutime, cstime): sshd and socat fork one process per connection.
cputicks() {
	local p t=0 c
	for p in "$@"; do
		[ -r "/proc/$p/stat" ] || continue
		t=$((t + $(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$p/stat" 2>/dev/null || echo 0)))
		for c in $(pgrep -P "$p" || true); do t=$((t + $(cputicks "$c"))); done
	done
	echo "$t"
}
HZ=$(getconf CLK_TCK)

# carriers PATH: the serving node's connections to PATH's forward, as
# "TRANSPORT:STREAMS ...", most streams first (the first one carries
# iperf3); "?" if the serving node did not answer.
carriers() {
	local out
	out=$("${S[@]}" "${p2pbin[$1]}" --home "$tmp/$1-serve" status --json 2>/dev/null |
		jq -r --arg p "${fwdid[$1]}" '[.connections[] | select(.peer == $p)] | sort_by(-.streams) | map("\(.transport):\(.streams)") | join(" ")' 2>/dev/null) || true
	echo "${out:-?}"
}

# mbps PATH DIR ROUND: one iperf3 run under the lock; prints MB/s received,
# the CPU seconds the forwarder's processes spent per GB ("-" for direct)
# and, for p2pnode paths, the carriers sampled half-way through ("-" else).
mbps() {
	local path=$1 dir=$2 r=$3 json=$tmp/iperf-$1-$2-$3.json via=$tmp/via-$1-$2-$3 extra=() before after rc=0 sampler=
	[ "$dir" = send ] || extra=(-R)
	exec 9>>"$LOCK"
	flock 9
	echo - >"$via"
	before=$(cputicks ${cpupids[$path]:-})
	if [ -n "${p2pbin[$path]:-}" ]; then
		{ sleep "$(awk -v s="$secs" 'BEGIN { print s / 2 }')"; carriers "$path" >"$via"; } &
		sampler=$!
	fi
	"${C[@]}" iperf3 -c "${chost[$path]:-127.0.0.1}" -p "${port[$path]}" -t "$secs" -J "${extra[@]}" >"$json" || rc=$?
	after=$(cputicks ${cpupids[$path]:-})
	[ -z "$sampler" ] || wait "$sampler" || true
	exec 9>&-
	if [ $rc != 0 ]; then
		log "iperf3 through $path ($dir) failed: $(jq -r '.error // empty' "$json" 2>/dev/null)"
		echo nan nan "$(cat "$via")"
		return
	fi
	jq -r --argjson ticks $((after - before)) --argjson hz "$HZ" --arg has "${cpupids[$path]:+y}" --arg via "$(cat "$via")" \
		'.end.sum_received | "\(.bits_per_second / 8 / 1e6 | . * 10 | round / 10) \(if $has == "y" then ($ticks / $hz / (.bytes / 1e9) | . * 100 | round / 100) else "-" end) \($via)"' "$json"
}

median() { # numbers on stdin -> median
	sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "nan"; exit } if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

declare -A runs # "path dir" -> space-separated MB/s of each round
declare -A cpus # path -> space-separated CPU s/GB of each run, both directions
declare -A vias # path -> the transport that carried each run, space-separated
if [ $do_throughput = 1 ]; then
	n=${#order[@]}
	for ((r = 0; r < rounds; r++)); do
		for ((i = 0; i < n; i++)); do
			p=${order[$(((i + r) % n))]}
			for dir in send recv; do
				read -r v c via < <(mbps "$p" $dir $r)
				runs["$p $dir"]="${runs["$p $dir"]:-}$v "
				cpus["$p"]="${cpus["$p"]:-}$c "
				vias["$p"]="${vias["$p"]:-}${via%%:*} "
				log "round $((r + 1))/$rounds $p $dir: $v MB/s, $c CPU s/GB${p2pbin[$p]:+, connections to the forward (transport:streams): $via}"
			done
		done
	done

	declare -A med
	echo
	echo "Throughput, $where, iperf3 -t $secs, MB/s received (median of $rounds rounds; each round's value in brackets);"
	echo "CPU = seconds of CPU the forwarder's own processes (not iperf3) spent per GB carried, median of both directions;"
	echo "via = the transport of the connection that carried iperf3 (the serving node's status, half-way through each run)"
	ratio() { # A B DIR -> A/B
		local a=${med["$1 $3"]:-} b=${med["$2 $3"]:-}
		[ -n "$a" ] && [ -n "$b" ] || { echo "-"; return; }
		awk -v a="$a" -v b="$b" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'
	}
	for p in "${order[@]}"; do
		for dir in send recv; do
			med["$p $dir"]=$(tr ' ' '\n' <<<"${runs["$p $dir"]}" | grep -v '^$' | median)
		done
		med["$p cpu"]=$(tr ' ' '\n' <<<"${cpus["$p"]}" | awk '$1 != "" && $1 != "-"' | median)
		[ "${med["$p cpu"]}" != nan ] || med["$p cpu"]="-"
	done
	# On a WAN the ratio to ssh -L is the point, so each row carries it.
	if [ $wan = 1 ] && has_path ssh-L; then
		echo "x ssh-L = the path's median over ssh-L's, send / recv"
		printf '%-16s %10s %10s %11s %9s %-8s   %s\n' path send "recv(-R)" "x ssh-L" "CPU s/GB" via "rounds send | recv"
	else
		printf '%-16s %10s %10s %9s %-8s   %s\n' path send "recv(-R)" "CPU s/GB" via "rounds send | recv"
	fi
	for p in "${order[@]}"; do
		via=$(tr ' ' '\n' <<<"${vias["$p"]}" | grep -v '^$' | sort -u | paste -sd/)
		if [ $wan = 1 ] && has_path ssh-L; then
			printf '%-16s %10s %10s %11s %9s %-8s   [%s| %s]\n' "$p" "${med["$p send"]}" "${med["$p recv"]}" \
				"$(ratio "$p" ssh-L send)/$(ratio "$p" ssh-L recv)" "${med["$p cpu"]}" "${via:--}" "${runs["$p send"]}" "${runs["$p recv"]}"
		else
			printf '%-16s %10s %10s %9s %-8s   [%s| %s]\n' "$p" "${med["$p send"]}" "${med["$p recv"]}" "${med["$p cpu"]}" "${via:--}" "${runs["$p send"]}" "${runs["$p recv"]}"
		fi
	done
	echo
	printf '%-30s %6s %6s   %s\n' ratio send recv target
	for tr in default tcp quic; do
		has_path "p2pnode-$tr" || continue
		has_path "base-$tr" && printf '%-30s %6s %6s   %s\n' "p2pnode-$tr / base-$tr" "$(ratio p2pnode-$tr base-$tr send)" "$(ratio p2pnode-$tr base-$tr recv)" "(after / before)"
		# Issue 10's targets on a WAN (TCP >= 2.5x ssh -L, QUIC >= 2x, TCP >=
		# 90 % of the bare stream); the loopback ones otherwise.
		if [ $wan = 1 ]; then
			target=">= 2.50"
			[ $tr = tcp ] || target=">= 2.00"
			bare_target=">= 0.90"
		else
			target=">= 1.20"
			[ $tr != quic ] || target=">= 0.80"
			bare_target=">= 0.85"
		fi
		has_path ssh-L && printf '%-30s %6s %6s   %s\n' "p2pnode-$tr / ssh-L" "$(ratio p2pnode-$tr ssh-L send)" "$(ratio p2pnode-$tr ssh-L recv)" "$target"
		has_path ssh-L && printf '%-30s %13s   %s\n' "ssh-L CPU / p2pnode-$tr CPU" "$(ratio ssh-L p2pnode-$tr cpu)" "(GB per CPU second, p2pnode over ssh -L)"
		has_path "bare-$tr" && printf '%-30s %6s %6s   %s\n' "p2pnode-$tr / bare-$tr" "$(ratio p2pnode-$tr bare-$tr send)" "$(ratio p2pnode-$tr bare-$tr recv)" "$bare_target"
		has_path bare-tcp && [ $tr != tcp ] && printf '%-30s %6s %6s\n' "p2pnode-$tr / bare-tcp" "$(ratio p2pnode-$tr bare-tcp send)" "$(ratio p2pnode-$tr bare-tcp recv)"
	done
fi

if [ $do_latency = 1 ]; then
	echo
	echo "Latency, $where, to an echo server (µs): rtt = 1-byte ping-pong on one connection ($rtt_n round trips);"
	echo "setup = connect + 1 byte echoed on a new connection ($setup_n connections, one after the other)"
	declare -A lat # "path rtt|setup" -> the latency helper's line
	for p in "${order[@]}"; do
		for m in rtt setup; do
			n=$rtt_n
			[ $m = rtt ] || n=$setup_n
			lat["$p $m"]=$(flock "$LOCK" "${C[@]}" "$tmp/latency" $m -addr "${chost[$p]:-127.0.0.1}:${eport[$p]}" -n "$n" \
				-name "$(printf '%-16s %-5s' "$p" $m)")
			echo "${lat["$p $m"]}"
		done
	done
	if [ $wan = 1 ]; then
		# q "PATH rtt|setup" p50|p99: that figure of the helper's line, in ms.
		q() { sed -n "s/.* $2=\([0-9.]*\) .*/\1/p" <<<"${lat[$1]:-}" | awk '{ printf "%.1f", $1 / 1000 }'; }
		echo
		rtt_ms=
		if has_path direct; then
			rtt_ms=$(q "direct rtt" p50)
			echo "RTT measured: $rtt_ms ms (direct path, 1-byte ping-pong p50; the link adds $rtt ms)"
		fi
		echo "New-connection setup (connect + first byte echoed), ms; target: p2pnode p50 <= ssh-L p50 - 1 RTT"
		printf '%-16s %8s %8s   %s\n' path p50 p99 "vs target"
		for p in "${order[@]}"; do
			verdict=
			if [[ $p == p2pnode-* || $p == base-* ]] && has_path ssh-L && [ -n "$rtt_ms" ]; then
				verdict=$(awk -v a="$(q "$p setup" p50)" -v s="$(q "ssh-L setup" p50)" -v r="$rtt_ms" \
					'BEGIN { printf "%s (<= %.1f)", (a <= s - r ? "met" : "not met"), s - r }')
			fi
			printf '%-16s %8s %8s   %s\n' "$p" "$(q "$p setup" p50)" "$(q "$p setup" p99)" "$verdict"
		done
	fi
fi
