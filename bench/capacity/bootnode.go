//go:build capacitybench

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/p2pnode/p2pnode/node"
)

// peerIP gives peer i its own loopback address, so that the relay's limit
// of 8 reservations per IP address does not hide the 128 in total.
func peerIP(i int) string { return fmt.Sprintf("127.1.%d.%d", i/250, i%250+1) }

type bootResult struct {
	n                       int
	joined, joinFailed      int
	joinTime                time.Duration
	wantRsv, gotRsv         int
	bootConns               int // connections the bootstrap node reports
	peersConnected          int // peers that see a connection to it
	peersConnectedAfterIdle int
	bootConnsAfterIdle      int
	before, after           procStat
	joinCPU                 time.Duration
	idleCPUPct              float64
	idleWindow              time.Duration
	lookups                 []time.Duration
	lookupFails             int
	lookupNoJoin            bool
	peersRSS                int64
	peersGoroutines         int
}

func newPeer(ctx context.Context, ip string, boot peer.AddrInfo, reserve bool, log *slog.Logger) (*node.Node, error) {
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return nil, err
	}
	return node.New(node.Config{
		Identity:       key,
		ListenAddrs:    []ma.Multiaddr{ma.StringCast("/ip4/" + ip + "/tcp/0")},
		BootstrapPeers: []peer.AddrInfo{boot},
		DHTMode:        node.DHTModeClient,
		ReserveRelays:  reserve,
		Logger:         log,
	})
}

func bootStatus(ctx context.Context, bin, home string) (conns int, err error) {
	out, err := exec.CommandContext(ctx, bin, "--home", home, "status", "--json").Output()
	if err != nil {
		return 0, fmt.Errorf("p2pnode status: %w", err)
	}
	var st struct {
		Connections []json.RawMessage `json:"connections"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return 0, err
	}
	return len(st.Connections), nil
}

// runBootstrapN is the bootstrap benchmark, step by step: start the
// bootstrap node, join n peers (parallel at a time, every reserveEvery-th
// with a relay reservation), let them idle, time lookups, and sample the
// bootstrap node throughout. One function (over 60 lines) for the same
// reason as runConns: the order of the steps is what the figures mean.
func runBootstrapN(ctx context.Context, bin, dir string, n, parallel, reserveEvery int, idle time.Duration, lookups int) (*bootResult, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	boot, bootAddr, err := startBootstrap(ctx, bin, dir)
	if err != nil {
		return nil, err
	}
	defer boot.Stop()
	bootInfo, err := peer.AddrInfoFromString(bootAddr)
	if err != nil {
		return nil, err
	}
	time.Sleep(2 * time.Second)
	r := &bootResult{n: n}
	r.before, _ = readProc(boot.Pid())
	smp := newSampler(boot.Pid(), 200*time.Millisecond)
	defer smp.Close()

	lf, err := os.Create(dir + "/peers.log")
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	log := slog.New(slog.NewTextHandler(lf, &slog.HandlerOptions{Level: slog.LevelWarn}))

	peers := make([]*node.Node, n)
	defer func() {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 64)
		for _, p := range peers {
			if p == nil {
				continue
			}
			wg.Add(1)
			sem <- struct{}{}
			go func() { defer wg.Done(); _ = p.Close(); <-sem }()
		}
		wg.Wait()
	}()

	t0 := time.Now()
	var joined, failed atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallel)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			// At most parallel peers starting (and connecting) at once; a
			// peer that the bootstrap node refuses keeps waiting (and
			// retrying, with node/'s backoff) without holding a slot.
			released := false
			release := func() {
				if !released {
					released = true
					<-sem
				}
			}
			defer release()
			start := time.Now()
			p, err := newPeer(ctx, peerIP(i), *bootInfo, i%reserveEvery == 0, log.With("peer", i))
			if err != nil {
				log.Error("node.New", "peer", i, "error", err)
				failed.Add(1)
				return
			}
			peers[i] = p
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err = p.WaitBootstrap(wctx)
			cancel()
			if err != nil {
				release()
				wctx, cancel := context.WithTimeout(ctx, 60*time.Second-time.Since(start))
				_, err = p.WaitBootstrap(wctx)
				cancel()
			}
			if err != nil {
				failed.Add(1)
				return
			}
			joined.Add(1)
		}()
	}
	wg.Wait()
	r.joinTime = time.Since(t0)
	r.joined, r.joinFailed = int(joined.Load()), int(failed.Load())

	// Reservations: wait until the count has not changed for 5 s (at most 40 s).
	countRsv := func() (want, got int) {
		for i, p := range peers {
			if p == nil || i%reserveEvery != 0 {
				continue
			}
			want++
			if len(p.Reservations()) > 0 {
				got++
			}
		}
		return
	}
	last, stableSince, deadline := -1, time.Now(), time.Now().Add(40*time.Second)
	for time.Now().Before(deadline) {
		_, got := countRsv()
		if got != last {
			last, stableSince = got, time.Now()
		} else if time.Since(stableSince) >= 5*time.Second {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	r.wantRsv, r.gotRsv = countRsv()
	countConnected := func() int {
		c := 0
		for _, p := range peers {
			if p != nil && p.Host.Network().Connectedness(bootInfo.ID) == network.Connected {
				c++
			}
		}
		return c
	}
	r.peersConnected = countConnected()
	r.bootConns, _ = bootStatus(ctx, bin, dir+"/boot")
	r.after, _ = readProc(boot.Pid())
	r.after.HWM = max(r.after.HWM, smp.Peak().HWM)
	r.joinCPU = r.after.CPU - r.before.CPU

	// Steady state: the bootstrap node's CPU over an idle window.
	c0, _ := readProc(boot.Pid())
	w0 := time.Now()
	time.Sleep(idle)
	c1, _ := readProc(boot.Pid())
	r.idleWindow = time.Since(w0)
	r.idleCPUPct = 100 * (c1.CPU - c0.CPU).Seconds() / r.idleWindow.Seconds()

	// A new peer looks joined peers up in the DHT.
	np, err := newPeer(ctx, "127.2.0.1", *bootInfo, false, log.With("peer", "lookup"))
	if err != nil {
		return nil, err
	}
	defer np.Close()
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	_, err = np.WaitBootstrap(wctx)
	cancel()
	if err != nil {
		// A bootstrap node at its connection limit refuses the new peer too.
		fmt.Fprintf(os.Stderr, "capacity: the lookup peer could not join: %v\n", err)
		r.lookupNoJoin = true
		r.lookupFails = lookups
		lookups = 0
	}
	for lookups > 0 && np.DHT.WAN.RoutingTable().Size()+np.DHT.LAN.RoutingTable().Size() == 0 {
		time.Sleep(20 * time.Millisecond)
	}
	var targets []int
	for i, p := range peers {
		if p != nil && p.Host.Network().Connectedness(bootInfo.ID) == network.Connected {
			targets = append(targets, i)
		}
	}
	rand.Shuffle(len(targets), func(i, j int) { targets[i], targets[j] = targets[j], targets[i] })
	for _, i := range targets[:min(lookups, len(targets))] {
		target := peers[i].ID()
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		t := time.Now()
		ai, err := np.DHT.FindPeer(lctx, target)
		d := time.Since(t)
		cancel()
		if err != nil || len(ai.Addrs) == 0 {
			r.lookupFails++
			fmt.Fprintf(os.Stderr, "capacity: FindPeer(%s): %v (%v)\n", target, err, d)
			continue
		}
		r.lookups = append(r.lookups, d)
	}
	r.peersConnectedAfterIdle = countConnected()
	r.bootConnsAfterIdle, _ = bootStatus(ctx, bin, dir+"/boot")

	runtime.GC()
	self, _ := readProc(os.Getpid())
	r.peersRSS = self.RSS
	r.peersGoroutines = runtime.NumGoroutine()
	return r, nil
}

// printLimits prints the resource-manager limits node/ builds (go-libp2p
// defaults with its service limits, autoscaled) for this machine and for
// smaller ones.
func printLimits() {
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	fmt.Printf("\n== resource-manager limits of node/ (rcmgr.DefaultLimits, autoscaled: memory/8, fds/2) ==\n")
	fmt.Printf("| machine                 | system ConnsInbound | system Conns | transient ConnsInbound | system FD | relay svc streams |\n")
	fmt.Printf("|-------------------------|---------------------|--------------|------------------------|-----------|-------------------|\n")
	row := func(name string, c rcmgr.ConcreteLimitConfig) {
		l := rcmgr.NewFixedLimiter(c)
		s, t := l.GetSystemLimits(), l.GetTransientLimits()
		fmt.Printf("| %-23s | %19d | %12d | %22d | %9d | %17d |\n", name,
			s.GetConnLimit(network.DirInbound), s.GetConnTotalLimit(), t.GetConnLimit(network.DirInbound), s.GetFDLimit(),
			l.GetServiceLimits("libp2p.relay/v2").GetStreamTotalLimit())
	}
	row("this one (AutoScale)", limits.AutoScale())
	for _, gib := range []int64{1, 2, 4, 8} {
		row(fmt.Sprintf("%d GiB, 65536 fds", gib), limits.Scale(gib<<30/8, 65536/2))
	}
}

func printBootTable(rs []*bootResult) {
	fmt.Printf("\n== bootstrap node capacity: N in-process peers (node.New, DHT client, every k-th with ReserveRelays: \"wanted\" below) joined to one `p2pnode bootstrap` ==\n")
	fmt.Printf("| N    | joined (60 s) | join wall | bootstrap conns | peers connected | reservations held / wanted | boot VmRSS MiB | boot VmHWM MiB | fds  | threads | CPU s during join | idle CPU %% (window) | FindPeer by a new peer: median / max (ok/tried) |\n")
	fmt.Printf("|------|---------------|-----------|-----------------|-----------------|----------------------------|----------------|----------------|------|---------|-------------------|---------------------|--------------------------------------------------|\n")
	for _, r := range rs {
		med, mx := time.Duration(0), time.Duration(0)
		if len(r.lookups) > 0 {
			s := slices.Clone(r.lookups)
			slices.Sort(s)
			med, mx = s[len(s)/2], s[len(s)-1]
		}
		lk := fmt.Sprintf("%s / %s (%d/%d)", med.Round(100*time.Microsecond), mx.Round(100*time.Microsecond), len(r.lookups), len(r.lookups)+r.lookupFails)
		if r.lookupNoJoin {
			lk = "new peer could not connect to the bootstrap node in 60 s"
		}
		fmt.Printf("| %4d | %13d | %9s | %6d → %-6d | %6d → %-6d | %12d / %-11d | %14s | %14s | %4d | %7d | %17.2f | %8.1f %% (%4.0f s) | %s |\n",
			r.n, r.joined, r.joinTime.Round(100*time.Millisecond), r.bootConns, r.bootConnsAfterIdle, r.peersConnected, r.peersConnectedAfterIdle,
			r.gotRsv, r.wantRsv, mib(r.after.RSS), mib(r.after.HWM), r.after.FDs, r.after.Threads, r.joinCPU.Seconds(),
			r.idleCPUPct, r.idleWindow.Seconds(), lk)
	}
	fmt.Printf("(bootstrap before any peer: ")
	for _, r := range rs[:1] {
		fmt.Printf("VmRSS %s MiB, fds %d, threads %d", mib(r.before.RSS), r.before.FDs, r.before.Threads)
	}
	fmt.Printf("; \"a → b\": right after the join, and after the idle window and the lookups)\n")
	fmt.Printf("peer process (all N peers in one Go process): ")
	for _, r := range rs {
		fmt.Printf("N=%d: VmRSS %s MiB, %d goroutines; ", r.n, mib(r.peersRSS), r.peersGoroutines)
	}
	fmt.Println()
}
