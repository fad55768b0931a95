//go:build capacitybench

// Command capacity measures what a p2pnode process costs under load, on
// loopback, with the real binary:
//
//	capacity -bin ./p2pnode [-n 1000] [-size 1048576] [-after 5s] conns
//	capacity -bin ./p2pnode [-peers 100,500,1000] bootstrap
//
// conns opens N simultaneous TCP connections through one `p2pnode forward`
// (to a `p2pnode serve` exposing an echo target, both joined through a
// `p2pnode bootstrap`), sends and receives SIZE bytes on each, checks every
// byte by sha256, and prints time, peak RSS, file descriptors and threads
// of each p2pnode process before, at peak and after.
//
// bootstrap joins N in-process peers (node.New, DHT client mode, half of
// them holding relay reservations) to one `p2pnode bootstrap` and prints
// the bootstrap node's RSS, CPU time, connections, the reservations that
// succeeded and how long a new peer's DHT FindPeer of one of them takes.
//
// Run through bench/capacity.sh, which builds both binaries. Build tag
// capacitybench keeps it out of `go build ./...` and `go test ./...`.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"
)

// main parses the subcommand's flags and runs it; over 60 lines because
// each subcommand's flags are declared where they are read, so that the
// usage a user sees and the code stay side by side.
func main() {
	bin := flag.String("bin", "", "p2pnode binary (built without -race)")
	dir := flag.String("dir", "", "work directory (homes and logs); default a new one under /tmp")
	n := flag.Int("n", 1000, "conns: simultaneous TCP connections")
	size := flag.Int64("size", 1<<20, "conns: bytes each way per connection")
	settle := flag.Duration("settle", 3*time.Second, "conns: wait after the warm-up connection before the 'before' reading")
	afterWait := flag.Duration("after", 5*time.Second, "conns: keep reading the processes this long after the last close (RSS is returned to the OS slowly)")
	rounds := flag.Int("rounds", 1, "conns: repeat the N connections this many times through the same processes (a leak grows round after round)")
	flag.StringVar(&childGoMemLimit, "gomemlimit", "", "GOMEMLIMIT of the p2pnode processes (e.g. 192MiB); default none")
	peersList := flag.String("peers", "100,500,1000", "bootstrap: peer counts, comma-separated")
	parallel := flag.Int("parallel", 32, "bootstrap: peers started at once")
	reserveEvery := flag.Int("reserve-every", 2, "bootstrap: every k-th peer holds a relay reservation (2: half of them, 1: all)")
	idle := flag.Duration("idle", 30*time.Second, "bootstrap: window in which the bootstrap node's idle CPU is measured")
	lookups := flag.Int("lookups", 10, "bootstrap: FindPeer lookups by the new peer")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: capacity -bin P2PNODE [flags] conns|bootstrap\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *bin == "" || flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "capbench-")
		if err != nil {
			fatal(err)
		}
		*dir = d
	}
	fmt.Fprintf(os.Stderr, "capacity: work directory (homes, logs) %s\n", *dir)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	if childGoMemLimit != "" {
		fmt.Printf("p2pnode processes run with GOMEMLIMIT=%s\n", childGoMemLimit)
	}
	switch flag.Arg(0) {
	case "conns":
		if err := runConns(ctx, *bin, *dir, *n, *size, *settle, *afterWait, *rounds); err != nil {
			fatal(err)
		}
	case "bootstrap":
		var rs []*bootResult
		for _, s := range strings.Split(*peersList, ",") {
			k, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || k < 1 {
				fatal(fmt.Errorf("bad -peers %q", *peersList))
			}
			fmt.Fprintf(os.Stderr, "capacity: bootstrap with %d peers...\n", k)
			r, err := runBootstrapN(ctx, *bin, fmt.Sprintf("%s/n%d", *dir, k), k, *parallel, *reserveEvery, *idle, *lookups)
			if err != nil {
				fatal(err)
			}
			rs = append(rs, r)
			printBootTable(rs[len(rs)-1:])
		}
		printBootTable(rs)
		printLimits()
	default:
		flag.Usage()
		os.Exit(2)
	}
}

func fatal(err error) {
	fmt.Fprintf(os.Stderr, "capacity: %v\n", err)
	os.Exit(1)
}
