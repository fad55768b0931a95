#!/usr/bin/env bash
# Capacity and memory benchmarks of p2pnode on loopback, with the real
# binary built without -race:
#
#   bench/capacity.sh conns      [-n 1000] [-size 1048576]
#       N simultaneous TCP connections through one `p2pnode forward`, SIZE
#       bytes each way, sha256-checked; time, peak RSS (VmHWM), fds and
#       threads of bootstrap, serve and forward before / at peak / after.
#   bench/capacity.sh bootstrap  [-peers 100,500,1000] [-parallel 32] [-idle 30s]
#       N in-process peers (node.New, DHT client, half holding relay
#       reservations) joined to one `p2pnode bootstrap`: its RSS, CPU time,
#       connections, reservations, and a new peer's FindPeer time.
#
# Every measurement holds /tmp/p2pnode-bench.lock (flock) so that it never
# runs at the same time as another benchmark on this machine. Homes and logs
# go to a directory under /tmp (printed). CI never runs this (build tag
# capacitybench).
set -euo pipefail

mode=${1:-}
case "$mode" in
conns | bootstrap) shift ;;
*)
	echo "usage: bench/capacity.sh conns|bootstrap [flags]" >&2
	exit 2
	;;
esac

cd "$(dirname "$0")/.."
# 1,000 connections through a forward need ~2,000 fds in the bench process
# and ~1,000 in forward and serve each; 1,000 peers in one process ~3,000.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 8192 ]; then
	echo "capacity: ulimit -n is $(ulimit -n); raise the hard limit to at least 8192" >&2
	exit 2
fi

# The binary under test gets a name of its own (capbench-node) so that it is
# not taken for another p2pnode process on this machine (ps, pkill -f).
out=$(mktemp -d /tmp/capbench-build.XXXXXX)
trap 'rm -rf "$out"' EXIT
go build -o "$out/capbench-node" ./cmd/p2pnode
go build -tags capacitybench -o "$out/capbench" ./bench/capacity

flock /tmp/p2pnode-bench.lock "$out/capbench" -bin "$out/capbench-node" "$@" "$mode"
