//go:build wanbench && linux

// Package wanlab is the WAN half of bench/throughput.sh: a test only
// because netlab, which builds the lab, is test support and takes a
// testing.TB. It is never part of `go test ./...` (build tag wanbench); run
// it as `bench/throughput.sh -rtt 50` (root), which calls
//
//	go test -tags wanbench -run TestWAN ./bench/wanlab/ -args -rtt 50 -rate 1000 -loss 0 -tcp-buf N -- SCRIPT-ARGS
//
// TestWAN builds two public hosts, server and client, with no NAT between
// them (the benchmark measures forwarders, not traversal); the client's
// link to the public segment carries the whole shape: half the round trip
// of delay, the rate and the loss in each direction, so that every path
// between the hosts crosses the same emulated link once each way. It then
// runs bench/throughput.sh again with SCRIPT-ARGS and P2PNODE_WAN_* set,
// which starts each process on its host with `ip netns exec`. The lab, and
// every process left in it, goes when the test ends.
package wanlab

import (
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/p2pnode/p2pnode/internal/e2etest"
	"github.com/p2pnode/p2pnode/internal/netlab"
)

var (
	flagRTT    = flag.Float64("rtt", 0, "round trip added between the hosts, ms")
	flagRate   = flag.Float64("rate", 1000, "link rate, Mbit/s (0: unlimited)")
	flagLoss   = flag.Float64("loss", 0, "packet loss, percent, in each direction")
	flagTCPBuf = flag.Int("tcp-buf", 0, "the lab hosts' tcp_rmem/tcp_wmem maximum, bytes (0: the kernel's); applied by the script")
)

// TestWAN builds the lab and runs bench/throughput.sh inside it; its table
// goes to the file named by $P2PNODE_WAN_TABLE (standard output if unset),
// its progress to standard error.
func TestWAN(t *testing.T) {
	if *flagRTT < 0 || *flagRTT > 2000 {
		t.Fatalf("-rtt %v: want 0 to 2000 ms", *flagRTT)
	}
	root, err := e2etest.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	// One direction of the client's link: half the round trip, so that the
	// RTT between the hosts is -rtt (the server's link is a plain veth).
	d := netlab.Direction{
		Delay:    time.Duration(*flagRTT * float64(time.Millisecond) / 2),
		Loss:     *flagLoss,
		RateMbit: *flagRate,
	}
	lab := netlab.New(t)
	server := lab.AddPublicHost("server")
	// An all-zero shape would leave the client on a plain veth, much faster
	// than the emulator: a tiny rate-free delay keeps -rate 0 -rtt 0 on the
	// same emulated path as every other run.
	if d == (netlab.Direction{}) {
		d.Delay = time.Microsecond
	}
	client := lab.AddPublicHost("client", netlab.ShapeLink(netlab.SymmetricLink(d)))
	t.Logf("wanlab: server %v, client %v, client link each way: %+v", server, client, d)

	out := os.Stdout
	if p := os.Getenv("P2PNODE_WAN_TABLE"); p != "" {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		out = f
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "bench", "throughput.sh"), flag.Args()...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(),
		"P2PNODE_WAN_SERVER_NS="+server.NS,
		"P2PNODE_WAN_CLIENT_NS="+client.NS,
		"P2PNODE_WAN_SERVER_IP="+server.IP.String(),
		"P2PNODE_WAN_CLIENT_IP="+client.IP.String(),
	)
	cmd.Stdout, cmd.Stderr = out, os.Stderr
	// The script's own trap stops its processes on SIGTERM; the lab's
	// teardown kills whatever would be left.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 30 * time.Second
	if err := cmd.Run(); err != nil {
		t.Fatalf("bench/throughput.sh in the lab: %v", err)
	}
}
