// Package node builds the libp2p host of a p2pnode peer and joins it to the
// overlay: identity, transports (TCP, QUIC), security (Noise, TLS), yamux,
// resource and connection managers, AutoNAT v2, circuit relay v2 client and
// relay reservations, DCUtR hole punching, optional NAT port mapping, and the
// Kademlia DHT wrapped in a routed host so that dialing a bare peer ID looks
// it up.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/filecoin-project/go-clock"
	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p-kad-dht/dual"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/quicreuse"
	"go.uber.org/fx"

	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/p2pnode/p2pnode/node/natcheck"
	"github.com/prometheus/client_golang/prometheus"
)

// DHTMode says whether the node answers DHT queries (server) or only asks
// them (client). DHTModeAuto lets go-libp2p-kad-dht switch to server mode once
// AutoNAT reports public reachability, which is what an ordinary peer wants.
type DHTMode int

const (
	// DHTModeAuto is server when publicly reachable, client otherwise.
	DHTModeAuto DHTMode = iota
	// DHTModeServer always answers queries; for bootstrap nodes.
	DHTModeServer
	// DHTModeClient never answers queries.
	DHTModeClient
)

// DefaultDHTProtocolPrefix gives the public Amino DHT protocol /ipfs/kad/1.0.0.
const DefaultDHTProtocolPrefix protocol.ID = "/ipfs"

// DefaultListenAddrs are the addresses a long-running node listens on when
// none are configured: TCP and QUIC v1 on port 4001, IPv4 and IPv6.
func DefaultListenAddrs() []ma.Multiaddr {
	return mustAddrs("/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1",
		"/ip6/::/tcp/4001", "/ip6/::/udp/4001/quic-v1")
}

// EphemeralListenAddrs are like DefaultListenAddrs on ports the kernel picks,
// for short-lived nodes (a `forward` with no daemon) that must not clash with
// a daemon listening on 4001 on the same machine.
func EphemeralListenAddrs() []ma.Multiaddr {
	return mustAddrs("/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1",
		"/ip6/::/tcp/0", "/ip6/::/udp/0/quic-v1")
}

func mustAddrs(ss ...string) []ma.Multiaddr {
	out := make([]ma.Multiaddr, len(ss))
	for i, s := range ss {
		out[i] = ma.StringCast(s)
	}
	return out
}

// DefaultBootstrapPeers returns libp2p's public bootstrap peers of the Amino
// DHT (go-libp2p-kad-dht's DefaultBootstrapPeers).
func DefaultBootstrapPeers() []peer.AddrInfo {
	return dht.GetDefaultBootstrapPeerAddrInfos()
}

// Config is what New needs to build a node. Zero values are filled in by New
// with the defaults documented on each field.
type Config struct {
	// Identity is the node's private key; required.
	Identity crypto.PrivKey
	// ListenAddrs are the multiaddrs to listen on; default DefaultListenAddrs.
	ListenAddrs []ma.Multiaddr
	// BootstrapPeers are the peers joined first; default DefaultBootstrapPeers
	// unless Standalone.
	BootstrapPeers []peer.AddrInfo
	// Standalone joins no bootstrap peer when BootstrapPeers is empty: the
	// first bootstrap node of a network.
	Standalone bool
	// NATPortMap asks the router for a port mapping with UPnP/NAT-PMP.
	NATPortMap bool
	// DHTMode chooses client, server or automatic DHT mode; default auto.
	DHTMode DHTMode
	// DHTProtocolPrefix is the DHT protocol prefix; default "/ipfs".
	DHTProtocolPrefix protocol.ID
	// ConnLowWater and ConnHighWater bound the connection manager's trimming
	// (counts of connections); defaults 100 and 400.
	ConnLowWater, ConnHighWater int
	// Logger receives the node's own logs; default slog.Default().
	Logger *slog.Logger
	// ReserveRelays makes the node hold circuit relay v2 reservations on its
	// bootstrap peers while it has no confirmed public address, and publish
	// the /p2p-circuit addresses, so that peers can reach it by peer ID
	// behind a NAT. For a serving node; a bootstrap node or a short-lived
	// forward does not need it.
	ReserveRelays bool
	// ClientOnly is for a node that only dials out (a forward): it
	// advertises none of its public addresses. A peer that knows a public
	// address of ours first tries to dial it back (connection reversal)
	// before hole punching; behind a stateful firewall that dial can only
	// time out, and it leaves a conntrack entry on the peer's NAT that makes
	// the hole punch after it fail (seen in the NAT lab as an invalid
	// SYN-ACK, and go-libp2p's "failed to reuse port"). The hole punch
	// itself still learns our public address from identify.
	ClientOnly bool
	// StreamLimits give protocols (and the resource-manager services their
	// streams are attached to) their own stream limits, in place of
	// go-libp2p's defaults, which allow about 70 inbound streams of one
	// protocol per peer: a forward with more open TCP connections than that
	// would be refused.
	StreamLimits []StreamLimit
	// MaxPeers, if not zero, replaces the resource manager's
	// memory-scaled connection limits (64 inbound on a 1 GiB machine) by
	// fixed ones: MaxPeers inbound connections, MaxPeers+1024 in all, and
	// 64 per IPv4 address (go-libp2p's default is 8: a CGNAT address
	// carries many peers). For a bootstrap node, which every peer joins.
	MaxPeers int
	// Metrics, if not nil, receives go-libp2p's metrics and p2pnode's own
	// (hole punching, relay reservations). Nil turns go-libp2p's off too.
	Metrics prometheus.Registerer
	// HostOptions are extra libp2p options a role adds (see package bootstrap).
	HostOptions []libp2p.Option
	// STUNServers are STUN servers (IP and UDP port) for the NAT check, on
	// top of those the bootstrap peers announce (STUNInfoProtocol).
	STUNServers []netip.AddrPort
	// NoPunchProtocol turns off PunchProtocol (the birthday hole punch for
	// a peer behind an endpoint-dependent NAT), leaving DCUtR alone.
	NoPunchProtocol bool
	// NATChecks makes the node test its NAT in the background: once it has
	// joined, then every 30 minutes and when its addresses change (see
	// LastNATCheck). For a daemon; a short-lived command has no use for it.
	NATChecks bool
	// NATMapping makes the node test its NAT mapping once it has joined
	// (a few STUN round trips to a bootstrap node, and one STUN over TCP),
	// so that its first hole punch does not wait for it. Implied by
	// NATChecks. For a forward, whose first connection is often its first
	// punch.
	NATMapping bool

	// clock drives the node's own timers (retries, backoffs, punch
	// timeouts); default the real clock. Tests in this package set it.
	clock clock.Clock
}

// StreamLimit bounds the streams of one protocol, in total and per peer,
// inbound and outbound alike (counts of streams).
type StreamLimit struct {
	// Protocol is the stream protocol ID.
	Protocol protocol.ID
	// Service, if not empty, is the resource-manager service name that
	// the protocol's handler attaches its streams to.
	Service string
	// PerPeer and Total are the stream counts allowed.
	PerPeer, Total int
}

// Node is a running libp2p host joined to the overlay. Its services (joiner,
// reachability tracker, relay reserver, puncher, name advertisers) each own
// their goroutines; Close stops them all.
type Node struct {
	// Host is a routed host: NewStream and Connect to a peer with no known
	// address look it up in the DHT.
	Host host.Host
	// DHT is the pair of Kademlia DHTs the host routes with: DHT.WAN for
	// peers with public addresses, DHT.LAN for the private network (see
	// go-libp2p-kad-dht's dual package).
	DHT *dual.DHT

	cfg     Config
	log     *slog.Logger
	clk     clock.Clock
	routing *kadRouting
	join    *joiner
	reach   *reachTracker
	rsv     *reserver // nil unless Config.ReserveRelays
	punch   *puncher
	watch   *pathWatch
	nat     *natChecker
	bday    *birthday // nil with Config.NoPunchProtocol
	metrics *nodeMetrics
	quicCM  *quicreuse.ConnManager // for the NAT check's STUN packets on the QUIC port

	mu          sync.Mutex
	closed      bool
	advertisers []*advertiser
	closeOnce   sync.Once
	closeErr    error
}

// New builds the host and starts joining the network through the bootstrap
// peers in the background (see WaitBootstrap). It returns an error when a
// listen address cannot be bound or the configuration is unusable.
func New(cfg Config) (*Node, error) {
	cfg, err := withDefaults(cfg)
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Logger, clk: cfg.clock, routing: newKadRouting(cfg)}
	tracer := newPunchTracer(cfg.Logger)
	filter := newPunchFilter(time.Now)
	opts, rm, err := hostOptions(cfg, n.routing, tracer, filter)
	if err != nil {
		return nil, err
	}
	opts = append(opts, libp2p.WithFxOption(fx.Populate(&n.quicCM)))
	h, err := libp2p.New(opts...)
	if err != nil {
		rm.Close()
		return nil, fmt.Errorf("start libp2p host: %w", err)
	}
	n.Host, n.DHT = h, n.routing.kad
	n.routing.listening.Store(true)
	if err := n.startServices(tracer, filter); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// withDefaults checks cfg and fills in the documented defaults.
func withDefaults(cfg Config) (Config, error) {
	if cfg.Identity == nil {
		return cfg, errors.New("node: no identity key given")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.clock == nil {
		cfg.clock = clock.New()
	}
	if len(cfg.ListenAddrs) == 0 {
		cfg.ListenAddrs = DefaultListenAddrs()
	}
	if len(cfg.BootstrapPeers) == 0 && !cfg.Standalone {
		cfg.Logger.Info("no bootstrap peers configured; joining through libp2p's public bootstrap peers")
		cfg.BootstrapPeers = DefaultBootstrapPeers()
	}
	if cfg.DHTProtocolPrefix == "" {
		cfg.DHTProtocolPrefix = DefaultDHTProtocolPrefix
	}
	if cfg.ConnLowWater == 0 {
		cfg.ConnLowWater = 100
	}
	if cfg.ConnHighWater == 0 {
		cfg.ConnHighWater = 400
	}
	return cfg, nil
}

// hostOptions are the libp2p options of a node's host. The resource manager
// is returned too, for the caller to close if libp2p.New fails.
func hostOptions(cfg Config, kr *kadRouting, tracer *punchTracer, filter *punchFilter) ([]libp2p.Option, network.ResourceManager, error) {
	rm, err := newResourceManager(cfg.StreamLimits, cfg.MaxPeers)
	if err != nil {
		return nil, nil, err
	}
	cm, err := connmgr.NewConnManager(cfg.ConnLowWater, cfg.ConnHighWater, connmgr.WithGracePeriod(time.Minute))
	if err != nil {
		rm.Close()
		return nil, nil, fmt.Errorf("connection manager: %w", err)
	}
	opts := []libp2p.Option{
		libp2p.Identity(cfg.Identity),
		libp2p.ListenAddrs(cfg.ListenAddrs...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		// TLS first, as go-libp2p's defaults have it (AES-GCM with AES-NI),
		// with its records batched into one write per yamux frame
		// (tlsbatch.go: 3.5 instead of 4.0 CPU seconds per GB through a
		// forward, bench/throughput.sh); peers that only speak Noise
		// still negotiate Noise.
		libp2p.Security(libp2ptls.ID, newBatchedTLS),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamuxTransport()),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		libp2p.UserAgent(AgentVersion()),
		libp2p.Ping(true),
		libp2p.EnableAutoNATv2(),
		// The relay client (dialing and accepting /p2p-circuit). Relay
		// reservations and their circuit addresses are the reserver's
		// (reserve.go says why not AutoRelay's).
		libp2p.EnableRelay(),
		libp2p.EnableHolePunching(holepunch.DirectDialTimeout(directDialTimeout), holepunch.WithTracer(tracer),
			holepunch.WithAddrFilter(filter)),
		libp2p.SwarmOpts(swarm.WithDialRanker(dialRanker)),
		libp2p.Routing(kr.construct),
	}
	if cfg.ClientOnly {
		opts = append(opts, libp2p.AddrsFactory(clientOnlyAddrs))
	}
	if cfg.NATPortMap {
		opts = append(opts, libp2p.NATPortMap())
	}
	if cfg.Metrics != nil {
		opts = append(opts, libp2p.PrometheusRegisterer(cfg.Metrics))
	} else {
		opts = append(opts, libp2p.DisableMetrics())
	}
	return append(opts, cfg.HostOptions...), rm, nil
}

// clientOnlyAddrs is a ClientOnly node's address factory: it hides the
// public addresses (see Config.ClientOnly).
func clientOnlyAddrs(addrs []ma.Multiaddr) []ma.Multiaddr {
	return slices.DeleteFunc(slices.Clone(addrs), func(a ma.Multiaddr) bool {
		return !isRelayAddr(a) && manet.IsPublicAddr(a)
	})
}

// startServices builds and starts the node's services on its host. The
// reachability tracker starts first, so that its "since" counts from the
// start and the reserver reads a verdict from its first look.
func (n *Node) startServices(tracer *punchTracer, filter *punchFilter) error {
	cfg, h := n.cfg, n.Host
	n.reach = newReachTracker(h, n.log, n.clk)
	n.reach.Start()
	n.punch = newPuncher(h, tracer, n.PathTo, n.log, n.clk)
	// n.metrics is set below, before any punch can start (they start from
	// Connect and Reconnect, after New returns).
	n.punch.punched = func(direct bool, took time.Duration) { n.metrics.punched(direct, took) }
	n.watch = newPathWatch(h, n.log, n.clk, n.punch.again)
	n.join = newJoiner(h, n.routing.refresh, cfg.BootstrapPeers, n.log, n.clk)
	n.join.Start()
	n.nat = &natChecker{h: h, log: n.log, clk: n.clk, static: cfg.STUNServers, boot: cfg.BootstrapPeers,
		quic: n.quicCM, run: make(chan struct{}, 1), checked: func(r natcheck.Report) { n.metrics.natChecked(r) }, learned: filter.setNATAddrs}
	if cfg.NATChecks || cfg.NATMapping {
		n.nat.Start(n.join.firstConnected, cfg.NATChecks)
	}
	if !cfg.NoPunchProtocol {
		n.bday = newBirthday(h, n.nat, filter, n.log)
		n.bday.done = func(strategy string, direct bool, probes int) { n.metrics.punchNegotiated(strategy, direct, probes) }
		n.punch.negotiate = n.bday.try
	}
	if cfg.ReserveRelays {
		rsv, err := newReserver(h, cfg.BootstrapPeers, n.routing.relayCandidates, n.reach, n.log, n.clk)
		if err != nil {
			return err
		}
		n.rsv = rsv
		n.rsv.Start()
	}
	if cfg.Metrics != nil {
		// Last: the reservations gauge reads n.rsv.
		var err error
		if n.metrics, err = newNodeMetrics(cfg.Metrics, n); err != nil {
			return err
		}
	}
	return nil
}

// ID returns the node's peer ID.
func (n *Node) ID() peer.ID { return n.Host.ID() }

// FullAddrs returns the node's current addresses with /p2p/<peer ID>
// appended, the form others paste into --bootstrap.
func (n *Node) FullAddrs() []ma.Multiaddr {
	addrs, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: n.Host.ID(), Addrs: n.Host.Addrs()})
	if err != nil {
		return nil
	}
	return addrs
}

// AgentVersion is what identify tells peers this node runs:
// "p2pnode/VERSION", the main module's version from the build info (a
// release tag, or Go's VCS pseudo-version; "devel" without one).
func AgentVersion() string {
	v := "devel"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	return "p2pnode/" + v
}

// NATCheck tests the NAT in front of the node now, from its QUIC port, with
// STUN (package natcheck) against extra, Config.STUNServers and the servers
// its connected bootstrap peers announce, in that order. It errors when no
// STUN server is known or ctx ends; a NAT that blocks UDP is a report, not
// an error.
func (n *Node) NATCheck(ctx context.Context, extra ...netip.AddrPort) (natcheck.Report, error) {
	return n.nat.Check(ctx, extra...)
}

// LastNATCheck is the last NAT check's report (the node tests once joined,
// then every 30 minutes and when its addresses change), nil before the
// first one ended.
func (n *Node) LastNATCheck() *natcheck.Report { return n.nat.Last() }

// BootstrapPeers returns the bootstrap peers in use.
func (n *Node) BootstrapPeers() []peer.AddrInfo { return n.cfg.BootstrapPeers }

// WaitBootstrap blocks until at least one bootstrap peer is connected and
// returns how many of them are. It returns ctx's error when ctx ends first.
func (n *Node) WaitBootstrap(ctx context.Context) (int, error) {
	select {
	case <-n.join.firstConnected:
		return n.join.connectedCount(), nil
	case <-ctx.Done():
		return 0, fmt.Errorf("no bootstrap peer reachable (tried %s): %w", n.join.describe(), ctx.Err())
	}
}

// WaitRoutingTable blocks until a DHT routing table (WAN or LAN) holds a
// peer: a connected bootstrap peer enters one only once identify has shown
// it speaks the DHT protocol, and a lookup before that fails at once. It
// returns ctx's error when ctx ends first, and nil at once for a node with
// no bootstrap peers.
func (n *Node) WaitRoutingTable(ctx context.Context) error {
	return n.routing.waitRoutingTable(ctx)
}

// Reservations returns the relay reservations the node holds now (none
// unless Config.ReserveRelays).
func (n *Node) Reservations() []Reservation {
	if n.rsv == nil {
		return nil
	}
	return n.rsv.Reservations()
}

// Close stops the node's services (waiting for their goroutines), then the
// DHT and the host. Calling it again returns the first call's error.
// SetProbePolicy limits the hole punches that send many datagrams (the
// birthday method and port prediction: up to 2,304 and 640 from this
// node per attempt) to the peers for which allowed says true, when they
// ask this node for a punch; the others get DCUtR or the relay. The
// address those datagrams go to is the asking peer's word, so a serving
// node should allow the peers its services allow (overlay.Server.Allows).
// nil allows every peer (the default). A node that asks for a punch
// (a forward) is not limited: it chose its peer.
func (n *Node) SetProbePolicy(allowed func(peer.ID) bool) {
	if n.bday == nil {
		return
	}
	if allowed == nil {
		n.bday.probePolicy.Store(nil)
		return
	}
	n.bday.probePolicy.Store(&allowed)
}

func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.mu.Lock()
		n.closed = true
		advs := n.advertisers
		n.mu.Unlock()
		for _, a := range advs {
			a.Close()
		}
		// Nil checks: New closes a node whose services did not all start.
		if n.watch != nil {
			n.watch.Close()
		}
		if n.punch != nil {
			n.punch.Close()
		}
		if n.bday != nil {
			n.bday.Close()
		}
		if n.nat != nil {
			n.nat.Close()
		}
		if n.rsv != nil {
			n.rsv.Close()
		}
		if n.join != nil {
			n.join.Close()
		}
		if n.reach != nil {
			n.reach.Close()
		}
		var errs []error
		if n.DHT != nil {
			errs = append(errs, n.DHT.Close())
		}
		errs = append(errs, n.Host.Close())
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

func describeAddrInfos(ais []peer.AddrInfo) string {
	parts := make([]string, 0, len(ais))
	for _, ai := range ais {
		addrs, err := peer.AddrInfoToP2pAddrs(&ai)
		if err != nil || len(addrs) == 0 {
			parts = append(parts, ai.ID.String())
			continue
		}
		parts = append(parts, addrs[0].String())
	}
	return strings.Join(parts, ", ")
}

// yamuxMaxStreamWindow is the largest receive window a yamux stream may
// grow to. go-libp2p's default, 16 MiB, carries at most about 250 MB/s at 50
// ms of RTT (the sender has between half the window and all of it in
// flight, since the receiver credits it back when half is consumed). 32 MiB
// fills a 1 Gbit/s path at 200 ms, or 500 MB/s at 50 ms. It is the most one
// stream can hold in memory if its reader stalls; the window only grows
// while the stream's data arrives fast (go-yamux's auto-tuning), and every
// doubling is reserved, at priority 128, in the connection's peer scope of
// the resource manager (go-libp2p gives yamux a span of it, not the
// stream's scope), so the peer and system memory limits bound all streams
// together: a doubling that does not fit leaves the window as it is.
const yamuxMaxStreamWindow = 32 << 20

// yamuxTransport is go-libp2p's yamux configuration with the larger
// maximum stream window.
func yamuxTransport() *yamux.Transport {
	t := *yamux.DefaultTransport
	t.MaxStreamWindowSize = yamuxMaxStreamWindow
	return &t
}
