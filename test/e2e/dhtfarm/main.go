//go:build linux

// Command dhtfarm is issue 14's simulated public DHT: many p2pnode DHT
// servers in one process, each on an address of its own, with churn, and
// a lookup client that measures how often and how fast a peer ID is found
// on it. The end-to-end test TestDHTAtScale and bench/dht-scale.sh run it
// in the NAT lab; it is not part of p2pnode.
//
//	dhtfarm farm -ip IP... -bootstrap MULTIADDR... [-churn FRACTION] [-settle PCT] [-ready-timeout 5m] [-pprof ADDR]
//	    starts one DHT server (node.New in server mode, with p2pnode's
//	    resource and connection manager) on QUIC port 4001 of each -ip, joined
//	    through the -bootstrap peers, and prints "ready N ..." once every
//	    one has a peer in its WAN routing table and the farm's CPU use has
//	    settled under PCT % of a core (default 60; see settled). Then, every minute, FRACTION
//	    of them (default 0.1) leave, spread over the minute, and as many
//	    new ones (fresh peer IDs) join on the addresses they left; it
//	    prints "churn LEFT JOINED" each minute and "stats ..." (servers,
//	    RSS, CPU, mean WAN routing-table size) every 30 s. It runs until
//	    SIGINT or SIGTERM.
//	dhtfarm lookup -bootstrap MULTIADDR -peer ID... [-every 10s] [-for 3m] [-timeout 30s]
//	    every -every, for each -peer, starts a fresh client node joined
//	    through -bootstrap only (as a `p2pnode forward` would be), looks
//	    the peer up in the DHT (FindPeer) and prints "lookup ID ok|fail
//	    DURATION ADDRS|ERROR"; at the end "summary lookups N ok M p50 D
//	    p99 D". Lookup durations count from a joined node (bootstrap
//	    connected, a peer in the routing table) to FindPeer's answer.
//
// Both exit with 1 and a message on stderr on a usage or start error; a
// failed lookup is a result, not an error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	_ "net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/p2pnode/p2pnode/node"
)

func main() {
	if len(os.Args) < 2 {
		fail(errors.New("usage: dhtfarm farm|lookup ..."))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "farm":
		err = farm(ctx, os.Args[2:])
	case "lookup":
		err = lookup(ctx, os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q: want farm or lookup", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "dhtfarm:", err)
	os.Exit(1)
}

var out sync.Mutex

func say(format string, args ...any) {
	out.Lock()
	defer out.Unlock()
	fmt.Printf(format+"\n", args...)
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func parseBootstrap(ss []string) ([]peer.AddrInfo, error) {
	if len(ss) == 0 {
		return nil, errors.New("give at least one -bootstrap MULTIADDR/p2p/ID")
	}
	var ais []peer.AddrInfo
	for _, s := range ss {
		ai, err := peer.AddrInfoFromString(s)
		if err != nil {
			return nil, fmt.Errorf("-bootstrap %q: %w", s, err)
		}
		ais = append(ais, *ai)
	}
	return ais, nil
}

// logger is what every simulated node logs to: warnings and errors only,
// on stderr, so that a test's failure output shows what went wrong
// without 200 nodes' start-up chatter.
var logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

func newKey() crypto.PrivKey {
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		panic(err) // crypto/rand failing is not something to simulate
	}
	return k
}

// server is one simulated DHT server.
type server struct {
	ip   netip.Addr
	node *node.Node
}

// startServer starts a DHT server listening on QUIC only: its TCP dials
// would leave from the host's first address (go-libp2p's TCP reuse has no
// source selector to set, see quicFrom), and with no TCP address it
// never needs one.
func startServer(ip netip.Addr, boot []peer.AddrInfo) (*server, error) {
	listen, err := ma.NewMultiaddr("/ip4/" + ip.String() + "/udp/4001/quic-v1")
	if err != nil {
		return nil, err
	}
	n, err := node.New(node.Config{
		Identity:       newKey(),
		ListenAddrs:    []ma.Multiaddr{listen},
		BootstrapPeers: boot,
		DHTMode:        node.DHTModeServer,
		Logger:         logger,
		HostOptions:    []libp2p.Option{quicFrom(ip.AsSlice())},
	})
	if err != nil {
		return nil, fmt.Errorf("server on %s: %w", ip, err)
	}
	return &server{ip: ip, node: n}, nil
}

func farm(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("farm", flag.ContinueOnError)
	var ips, boots listFlag
	fs.Var(&ips, "ip", "IPv4 address of one server (repeatable)")
	fs.Var(&boots, "bootstrap", "bootstrap peer multiaddr with /p2p/ID (repeatable)")
	churn := fs.Float64("churn", 0.1, "share of the servers replaced every minute (0 to 1)")
	parallel := fs.Int("parallel", 8, "servers started at once")
	settle := fs.Float64("settle", 60, "after every server has a routing-table peer, wait until the farm uses less than this share of one core (percent, over 10 s; 0: do not wait)")
	readyTimeout := fs.Duration("ready-timeout", 5*time.Minute, "how long every server may take to get a routing-table peer")
	pprofAddr := fs.String("pprof", "", "serve net/http/pprof at this address (e.g. 127.0.0.1:6060, inside the farm's namespace)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	boot, err := parseBootstrap(boots)
	if err != nil {
		return err
	}
	if *churn < 0 || *churn > 1 {
		return fmt.Errorf("-churn %v: want a share between 0 and 1", *churn)
	}
	var addrs []netip.Addr
	for _, s := range ips {
		ip, err := netip.ParseAddr(s)
		if err != nil || !ip.Is4() {
			return fmt.Errorf("-ip %q: want an IPv4 address", s)
		}
		addrs = append(addrs, ip)
	}
	if len(addrs) == 0 {
		return errors.New("give at least one -ip")
	}

	if *pprofAddr != "" {
		go func() { logger.Warn("pprof server stopped", "error", http.ListenAndServe(*pprofAddr, nil)) }()
	}
	f := &farmState{boot: boot}
	defer f.closeAll()
	start := time.Now()
	if err := f.startAll(ctx, addrs, *parallel); err != nil {
		return err
	}
	if err := f.waitTables(ctx, *readyTimeout); err != nil {
		return err
	}
	pct, err := settled(ctx, *settle, start.Add(*readyTimeout))
	if err != nil {
		return err
	}
	say("ready %d in %v (CPU %.0f %% of a core)", len(addrs), time.Since(start).Round(time.Millisecond), pct)

	perMinute := int(float64(len(addrs))**churn + 0.5)
	stats := time.NewTicker(30 * time.Second)
	defer stats.Stop()
	gap := time.Minute
	if perMinute > 0 {
		gap = time.Minute / time.Duration(perMinute)
	}
	churnTick := time.NewTicker(gap)
	defer churnTick.Stop()
	left, joined, minute := 0, 0, time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-stats.C:
			say("stats %s", f.stats())
		case <-churnTick.C:
			if perMinute == 0 {
				continue
			}
			if err := f.replaceOne(); err != nil {
				logger.Warn("churn: a new server did not start", "error", err)
			} else {
				left++
				joined++
			}
			if time.Since(minute) >= time.Minute {
				say("churn %d %d", left, joined)
				left, joined, minute = 0, 0, time.Now()
			}
		}
	}
}

// settled waits until the process uses less than limit percent of one
// core over 10 s: the servers' first routing-table refreshes (every CPL at
// once, on every server) keep the machine busy for a minute or two after
// they have joined, and lookups measured then measure that load. It gives
// up at deadline.
func settled(ctx context.Context, limit float64, deadline time.Time) (float64, error) {
	const window = 10 * time.Second
	for {
		c0 := processCPU()
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(window):
		}
		pct := 100 * float64(processCPU()-c0) / float64(window)
		if limit <= 0 || pct < limit {
			return pct, nil
		}
		if time.Now().After(deadline) {
			return pct, fmt.Errorf("the farm still uses %.0f %% of a core (want under %.0f %%): too many servers for this machine?", pct, limit)
		}
	}
}

type farmState struct {
	boot []peer.AddrInfo

	mu      sync.Mutex
	servers []*server
	cpu0    time.Duration
	at0     time.Time
}

func (f *farmState) startAll(ctx context.Context, addrs []netip.Addr, parallel int) error {
	sem := make(chan struct{}, max(parallel, 1))
	errs := make(chan error, len(addrs))
	var wg sync.WaitGroup
	for _, ip := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if ctx.Err() != nil {
				errs <- ctx.Err()
				return
			}
			s, err := startServer(ip, f.boot)
			if err != nil {
				errs <- err
				return
			}
			f.mu.Lock()
			f.servers = append(f.servers, s)
			f.mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs // nil when the channel is empty
}

// waitTables waits until every server has a WAN routing-table peer,
// saying every 15 s how many have none yet and why, for one of them.
func (f *farmState) waitTables(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	report := time.Now().Add(15 * time.Second)
	for {
		f.mu.Lock()
		var empty []*server
		for _, s := range f.servers {
			if s.node.DHT.WAN.RoutingTable().Size() == 0 {
				empty = append(empty, s)
			}
		}
		f.mu.Unlock()
		if len(empty) == 0 {
			return nil
		}
		if time.Now().After(report) {
			fmt.Fprintf(os.Stderr, "dhtfarm: %d servers have an empty WAN routing table; %s\n", len(empty), describe(empty[0]))
			report = time.Now().Add(15 * time.Second)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d servers still have an empty WAN routing table (%s): %w", len(empty), describe(empty[0]), ctx.Err())
		case <-tick.C:
		}
	}
}

// describe says what a server is connected to and which of those peers
// it knows to be DHT servers.
func describe(s *server) string {
	h := s.node.Host
	var peers []string
	for _, p := range h.Network().Peers() {
		kad, _ := h.Peerstore().SupportsProtocols(p, node.DefaultDHTProtocolPrefix+"/kad/1.0.0")
		peers = append(peers, fmt.Sprintf("%s kad=%v", p.ShortString(), len(kad) > 0))
	}
	return fmt.Sprintf("%s is connected to %v", s.ip, peers)
}

// replaceOne stops a random server and starts a new one, with a new peer
// ID, on its address. Bootstrap peers are not in the farm, so they stay.
func (f *farmState) replaceOne() error {
	f.mu.Lock()
	i := rand.IntN(len(f.servers))
	old := f.servers[i]
	f.servers = slices.Delete(f.servers, i, i+1)
	f.mu.Unlock()
	_ = old.node.Close()
	s, err := startServer(old.ip, f.boot)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.servers = append(f.servers, s)
	f.mu.Unlock()
	return nil
}

func (f *farmState) closeAll() {
	f.mu.Lock()
	ss := f.servers
	f.servers = nil
	f.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range ss {
		wg.Add(1)
		go func() { defer wg.Done(); _ = s.node.Close() }()
	}
	wg.Wait()
}

func (f *farmState) stats() string {
	f.mu.Lock()
	n, table := len(f.servers), 0
	for _, s := range f.servers {
		table += s.node.DHT.WAN.RoutingTable().Size()
	}
	f.mu.Unlock()
	cpu := processCPU()
	now := time.Now()
	pct := 0.0
	if !f.at0.IsZero() {
		pct = 100 * float64(cpu-f.cpu0) / float64(now.Sub(f.at0))
	}
	f.cpu0, f.at0 = cpu, now
	return fmt.Sprintf("servers %d rss_kb %d cpu_pct %.0f mean_wan_table %.1f", n, rssKB(), pct, float64(table)/float64(max(n, 1)))
}
