#!/usr/bin/env bash
# NAT-traversal benchmark: runs the real p2pnode binary (bootstrap, serve,
# forward) in network namespaces behind NAT routers of every kind and prints
# how often a forward gets a direct connection and how fast.
#
# Usage (as root, from anywhere in the repository):
#   bench/nat-matrix.sh -tries 10
#   bench/nat-matrix.sh -tries 3 -pairs eim-apdf/eim-apdf -transports tcp
#   bench/nat-matrix.sh -tries 5 -pairs edm/eim-apdf,edm/edm -inbound drop
#
# Flags (all optional): -tries N (default 10), -rtt MS,MS,... (default 0:
# round trip between the two sites, the relay 1.25×RTT from each), -loss PCT,
# -jitter MS, -parallel N (tries at once), -pairs CLIENT/SERVER,...
# (eim-apdf/eim-apdf eim-eif/eim-apdf none/eim-apdf firewall/eim-apdf
# edm/eim-apdf eim-apdf/edm edm/eim-eif edm/edm edm-seq/edm-seq edm-seq/eim-apdf
# eim-apdf/edm-seq edm-seq/edm), -transports tcp,quic,any, -inbound drop,reject,
# -try-timeout 60s, -show-output (every process's output in the log).
#
# Only the table and one progress line per try are shown; the full verbose
# log (with every process's output for failed tries) goes to
# /tmp/nat-matrix-DATE.log. Needs root, iproute2 (ip) and nftables (nft).
# CI never runs this (build tag natbench).
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
	echo "nat-matrix: must run as root (it builds network namespaces and nftables routers)" >&2
	exit 2
fi
for tool in ip nft go; do
	if ! command -v "$tool" >/dev/null && [ ! -x "/usr/sbin/$tool" ] && [ ! -x "/sbin/$tool" ]; then
		echo "nat-matrix: $tool not found; install iproute2, nftables and Go" >&2
		exit 2
	fi
done

cd "$(dirname "$0")/.."
log=/tmp/nat-matrix-$(date +%Y%m%d-%H%M%S).log
echo "nat-matrix: full log in $log" >&2

go test -tags natbench -run TestNATMatrix -v -count=1 -timeout 90m ./bench/natlab/ -args "$@" 2>&1 |
	tee "$log" |
	awk '/^NAT matrix:/ { table = 1 }
	     table { print; fflush(); if (/^end of NAT matrix/) table = 0; next }
	     /^try |^(natlab:|# |FAIL|ok  |panic:|--- FAIL)/ { print > "/dev/stderr"; fflush("/dev/stderr") }'
