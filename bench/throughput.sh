#!/usr/bin/env bash
# Forward throughput and latency benchmark, on loopback only.
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
rtt_n=10000
setup_n=1000
do_latency=1
do_throughput=1
baseline=
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
	-h | -help | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "throughput: unknown argument $1 (see $0 -help)" >&2; exit 2 ;;
	esac
done
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
freeport() { "$tmp/latency" freeport; }

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

# wait_listen PORT: waits (20 s) until something listens on 127.0.0.1:PORT,
# without connecting to it.
wait_listen() {
	local hex i
	hex=$(printf ':%04X$' "$1")
	for ((i = 0; i < 200; i++)); do
		awk -v p="$hex" '$2 ~ p && $4 == "0A" { found = 1 } END { exit !found }' /proc/net/tcp && return 0
		sleep 0.1
	done
	die "nothing listens on 127.0.0.1:$1 after 20 s"
}

iperf_port=$(freeport)
start iperf3-server iperf3 -s -B 127.0.0.1 -p "$iperf_port"
wait_listen "$iperf_port"
start echo-server "$tmp/latency" echo
echo_addr=$(wait_line echo-server '^listening ' | cut -d' ' -f2)
echo_port=${echo_addr##*:}

declare -A port # path -> local port iperf3 connects to
declare -A cpupids # path -> the forwarder's processes (not iperf3's), for CPU per GB
declare -A eport # path -> local port of the echo server through that path
port[direct]=$iperf_port
eport[direct]=$echo_port

has_path() { [[ ",$paths," == *",$1,"* ]]; }

if has_path socat; then
	port[socat]=$(freeport)
	start socat socat "TCP-LISTEN:${port[socat]},bind=127.0.0.1,fork,reuseaddr" "TCP:127.0.0.1:$iperf_port"
	cpupids[socat]=${pids[-1]}
	eport[socat]=$(freeport)
	start socat-echo socat "TCP-LISTEN:${eport[socat]},bind=127.0.0.1,fork,reuseaddr" "TCP:127.0.0.1:$echo_port"
	wait_listen "${port[socat]}"
	wait_listen "${eport[socat]}"
fi

if has_path ssh-L; then
	mkdir -p "$tmp/ssh"
	ssh-keygen -q -t ed25519 -N '' -f "$tmp/ssh/host_key"
	ssh-keygen -q -t ed25519 -N '' -f "$tmp/ssh/user_key"
	[ "$(id -u)" != 0 ] || mkdir -p /run/sshd
	ssh_port=$(freeport)
	cat >"$tmp/ssh/sshd_config" <<EOF
ListenAddress 127.0.0.1
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
	start sshd "$SSHD" -D -e -f "$tmp/ssh/sshd_config"
	cpupids[ssh-L]=${pids[-1]}
	wait_listen "$ssh_port"
	port[ssh-L]=$(freeport)
	eport[ssh-L]=$(freeport)
	start ssh ssh -N -F none -p "$ssh_port" -i "$tmp/ssh/user_key" \
		-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o IdentitiesOnly=yes \
		-o BatchMode=yes -o LogLevel=ERROR -o ExitOnForwardFailure=yes \
		-L "${port[ssh-L]}:127.0.0.1:$iperf_port" -L "${eport[ssh-L]}:127.0.0.1:$echo_port" \
		-l "$(id -un)" 127.0.0.1
	cpupids[ssh-L]+=" ${pids[-1]}"
	wait_listen "${port[ssh-L]}"
	wait_listen "${eport[ssh-L]}"
fi

maddr() { # transport -> loopback listen multiaddr
	case $1 in
	tcp) echo /ip4/127.0.0.1/tcp/0 ;;
	quic) echo /ip4/127.0.0.1/udp/0/quic-v1 ;;
	esac
}

# listen_flags FLAG TRANSPORT: FLAG MA for each loopback listen address of
# TRANSPORT; "default" is both, like the default config.
listen_flags() {
	local t
	if [ "$2" = default ]; then t="tcp quic"; else t=$2; fi
	for t in $t; do printf '%s\n%s\n' "$1" "$(maddr "$t")"; done
}

for tr in tcp quic; do
	has_path "bare-$tr" || continue
	for t in iperf echo; do
		target=127.0.0.1:$iperf_port
		[ $t = iperf ] || target=127.0.0.1:$echo_port
		start "bare-$tr-$t-serve" "$tmp/barestream" serve -target "$target" -p2p-listen "$(maddr $tr)"
		[ $t = echo ] || cpupids[bare-$tr]=${pids[-1]}
		peer=$(wait_line "bare-$tr-$t-serve" '/p2p/')
		start "bare-$tr-$t-fwd" "$tmp/barestream" forward -peer "$peer"
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
	mapfile -t p2plisten < <(listen_flags --p2p-listen "$tr")
	for role in boot serve fwd fwdecho; do
		"$bin" --home "$tmp/$v-$role" init >/dev/null 2>"$tmp/init.err" || { cat "$tmp/init.err" >&2; exit 1; }
	done
	fwdid[$v]=$("$bin" --home "$tmp/$v-fwd" id)
	start "$v-boot" "$bin" --home "$tmp/$v-boot" bootstrap "${listen[@]}" --nat-port-map=false
	boot=$(wait_line "$v-boot" '/p2p/')
	start "$v-serve" "$bin" --home "$tmp/$v-serve" serve "${listen[@]}" --bootstrap "$boot" \
		--nat-port-map=false --public --expose "iperf=127.0.0.1:$iperf_port" --expose "echo=127.0.0.1:$echo_port"
	cpupids[$v]=${pids[-1]}
	wait_line "$v-serve" '^ready:' >/dev/null
	serve_id=$(wait_line "$v-serve" '^peer ID: ' | sed 's/^peer ID: //')
	start "$v-fwd" "$bin" --home "$tmp/$v-fwd" forward "$serve_id:iperf" --bootstrap "$boot" \
		"${p2plisten[@]}" --nat-port-map=false --listen 127.0.0.1:0
	cpupids[$v]+=" ${pids[-1]}"
	start "$v-fwdecho" "$bin" --home "$tmp/$v-fwdecho" forward "$serve_id:echo" --bootstrap "$boot" \
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
	out=$("${p2pbin[$1]}" --home "$tmp/$1-serve" status --json 2>/dev/null |
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
	iperf3 -c 127.0.0.1 -p "${port[$path]}" -t "$secs" -J "${extra[@]}" >"$json" || rc=$?
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
	echo "Throughput, loopback, iperf3 -t $secs, MB/s received (median of $rounds rounds; each round's value in brackets);"
	echo "CPU = seconds of CPU the forwarder's own processes (not iperf3) spent per GB carried, median of both directions;"
	echo "via = the transport of the connection that carried iperf3 (the serving node's status, half-way through each run)"
	printf '%-16s %10s %10s %9s %-8s   %s\n' path send "recv(-R)" "CPU s/GB" via "rounds send | recv"
	for p in "${order[@]}"; do
		for dir in send recv; do
			med["$p $dir"]=$(tr ' ' '\n' <<<"${runs["$p $dir"]}" | grep -v '^$' | median)
		done
		med["$p cpu"]=$(tr ' ' '\n' <<<"${cpus["$p"]}" | awk '$1 != "" && $1 != "-"' | median)
		[ "${med["$p cpu"]}" != nan ] || med["$p cpu"]="-"
		via=$(tr ' ' '\n' <<<"${vias["$p"]}" | grep -v '^$' | sort -u | paste -sd/)
		printf '%-16s %10s %10s %9s %-8s   [%s| %s]\n' "$p" "${med["$p send"]}" "${med["$p recv"]}" "${med["$p cpu"]}" "${via:--}" "${runs["$p send"]}" "${runs["$p recv"]}"
	done
	ratio() { # A B DIR -> A/B
		local a=${med["$1 $3"]:-} b=${med["$2 $3"]:-}
		[ -n "$a" ] && [ -n "$b" ] || { echo "-"; return; }
		awk -v a="$a" -v b="$b" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'
	}
	echo
	printf '%-30s %6s %6s   %s\n' ratio send recv target
	for tr in default tcp quic; do
		has_path "p2pnode-$tr" || continue
		has_path "base-$tr" && printf '%-30s %6s %6s   %s\n' "p2pnode-$tr / base-$tr" "$(ratio p2pnode-$tr base-$tr send)" "$(ratio p2pnode-$tr base-$tr recv)" "(after / before)"
		target=">= 1.20"
		[ $tr != quic ] || target=">= 0.80"
		has_path ssh-L && printf '%-30s %6s %6s   %s\n' "p2pnode-$tr / ssh-L" "$(ratio p2pnode-$tr ssh-L send)" "$(ratio p2pnode-$tr ssh-L recv)" "$target"
		has_path ssh-L && printf '%-30s %13s   %s\n' "ssh-L CPU / p2pnode-$tr CPU" "$(ratio ssh-L p2pnode-$tr cpu)" "(GB per CPU second, p2pnode over ssh -L)"
		has_path "bare-$tr" && printf '%-30s %6s %6s   %s\n' "p2pnode-$tr / bare-$tr" "$(ratio p2pnode-$tr bare-$tr send)" "$(ratio p2pnode-$tr bare-$tr recv)" ">= 0.85"
		has_path bare-tcp && [ $tr != tcp ] && printf '%-30s %6s %6s\n' "p2pnode-$tr / bare-tcp" "$(ratio p2pnode-$tr bare-tcp send)" "$(ratio p2pnode-$tr bare-tcp recv)"
	done
fi

if [ $do_latency = 1 ]; then
	echo
	echo "Latency, loopback, to an echo server (µs): rtt = 1-byte ping-pong on one connection ($rtt_n round trips);"
	echo "setup = connect + 1 byte echoed on a new connection ($setup_n connections, one after the other)"
	for p in "${order[@]}"; do
		flock "$LOCK" "$tmp/latency" rtt -addr "127.0.0.1:${eport[$p]}" -n "$rtt_n" -name "$(printf '%-16s rtt  ' "$p")"
		flock "$LOCK" "$tmp/latency" setup -addr "127.0.0.1:${eport[$p]}" -n "$setup_n" -name "$(printf '%-16s setup' "$p")"
	done
fi
