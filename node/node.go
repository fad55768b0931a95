// Package node builds the libp2p host of a p2pnode peer and joins it to the
// overlay: identity, transports (TCP, QUIC), security (Noise, TLS), yamux,
// resource and connection managers, AutoNAT v2, circuit relay v2 client with
// AutoRelay, DCUtR hole punching, optional NAT port mapping, and the Kademlia
// DHT wrapped in a routed host so that dialing a bare peer ID looks it up.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
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

// Node is a running libp2p host joined to the overlay. Its goroutines stop on
// Close.
type Node struct {
	// Host is a routed host: NewStream and Connect to a peer with no known
	// address look it up in the DHT.
	Host host.Host
	// DHT is the Kademlia DHT the host routes with.
	DHT *dht.IpfsDHT

	cfg    Config
	log    *slog.Logger
	ctx    context.Context // ends on Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	join   *joiner
	rsv    *reserver
	status *statusTracker

	started atomic.Bool // set once the host listens

	metrics   *nodeMetrics
	punches   *punchTracer
	punchMu   sync.Mutex
	lastPunch map[peer.ID]time.Time
}

// New builds the host and starts joining the network through the bootstrap
// peers in the background (see WaitBootstrap). It returns an error when a
// listen address cannot be bound or the configuration is unusable.
func New(cfg Config) (*Node, error) {
	if cfg.Identity == nil {
		return nil, errors.New("node: no identity key given")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
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

	rm, err := newResourceManager(cfg.StreamLimits, cfg.MaxPeers)
	if err != nil {
		return nil, err
	}
	cm, err := connmgr.NewConnManager(cfg.ConnLowWater, cfg.ConnHighWater, connmgr.WithGracePeriod(time.Minute))
	if err != nil {
		return nil, fmt.Errorf("connection manager: %w", err)
	}

	n := &Node{cfg: cfg, log: cfg.Logger, lastPunch: make(map[peer.ID]time.Time), punches: newPunchTracer(cfg.Logger)}
	var kad *dht.IpfsDHT
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
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		libp2p.UserAgent("p2pnode"),
		libp2p.Ping(true),
		libp2p.EnableAutoNATv2(),
		libp2p.EnableRelay(),
		libp2p.EnableHolePunching(holepunch.DirectDialTimeout(directDialTimeout), holepunch.WithTracer(n.punches)),
		libp2p.SwarmOpts(swarm.WithDialRanker(dialRanker)),
		libp2p.EnableAutoRelayWithPeerSource(n.relayCandidates),
		libp2p.Routing(func(h host.Host) (routing.PeerRouting, error) {
			var err error
			kad, err = dht.New(h,
				dht.Mode(kadMode(cfg.DHTMode)),
				dht.ProtocolPrefix(cfg.DHTProtocolPrefix),
				// Not before New returns: the DHT would dial the bootstrap
				// peers while the host is not listening yet, from a port
				// that is not the listen port, and identify's observed
				// address for that connection is then discarded, which
				// keeps hole punching off (see waitProtocol). The joiner
				// dials them once the host listens.
				dht.BootstrapPeersFunc(func() []peer.AddrInfo {
					if !n.started.Load() {
						return nil
					}
					return cfg.BootstrapPeers
				}),
			)
			return kad, err
		}),
	}
	if cfg.NATPortMap {
		opts = append(opts, libp2p.NATPortMap())
	}
	if cfg.Metrics != nil {
		opts = append(opts, libp2p.PrometheusRegisterer(cfg.Metrics))
	} else {
		opts = append(opts, libp2p.DisableMetrics())
	}
	if cfg.ReserveRelays {
		n.rsv = newReserver(cfg.BootstrapPeers, cfg.Logger)
	}
	opts = append(opts, libp2p.AddrsFactory(n.addrsFactory))
	opts = append(opts, cfg.HostOptions...)

	h, err := libp2p.New(opts...)
	if err != nil {
		rm.Close()
		return nil, fmt.Errorf("start libp2p host: %w", err)
	}
	n.Host = h
	n.DHT = kad
	if cfg.Metrics != nil {
		if n.metrics, err = newNodeMetrics(cfg.Metrics, n); err != nil {
			h.Close()
			return nil, err
		}
	}
	n.started.Store(true)

	ctx, cancel := context.WithCancel(context.Background())
	n.ctx, n.cancel = ctx, cancel
	n.startStatusTracker(ctx)
	n.join = newJoiner(h, kad, cfg.BootstrapPeers, cfg.Logger)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.join.run(ctx)
	}()
	if n.rsv != nil {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.rsv.run(ctx, h)
		}()
	}
	return n, nil
}

func kadMode(m DHTMode) dht.ModeOpt {
	switch m {
	case DHTModeServer:
		return dht.ModeServer
	case DHTModeClient:
		return dht.ModeClient
	default:
		return dht.ModeAuto
	}
}

// addrsFactory shapes the addresses the host advertises: circuit addresses
// of our own relay reservations added, public ones hidden on a ClientOnly
// node.
func (n *Node) addrsFactory(addrs []ma.Multiaddr) []ma.Multiaddr {
	if n.cfg.ClientOnly {
		addrs = slices.DeleteFunc(slices.Clone(addrs), func(a ma.Multiaddr) bool {
			return !isRelayAddr(a) && manet.IsPublicAddr(a)
		})
	}
	if n.rsv != nil {
		addrs = n.rsv.addrsFactory(addrs)
	}
	return addrs
}

// relayCandidates feeds AutoRelay: the bootstrap peers first (p2pnode
// bootstrap nodes run a relay), then DHT servers from the routing table.
// AutoRelay itself checks that a candidate speaks the relay hop protocol.
func (n *Node) relayCandidates(ctx context.Context, num int) <-chan peer.AddrInfo {
	out := make(chan peer.AddrInfo, num)
	go func() {
		defer close(out)
		sent := 0
		send := func(ai peer.AddrInfo) bool {
			if sent >= num || len(ai.Addrs) == 0 {
				return sent < num
			}
			select {
			case out <- ai:
				sent++
				return true
			case <-ctx.Done():
				return false
			}
		}
		for _, ai := range n.cfg.BootstrapPeers {
			if !send(ai) {
				return
			}
		}
		if n.DHT == nil {
			return
		}
		for _, p := range n.DHT.RoutingTable().ListPeers() {
			if !send(n.Host.Peerstore().PeerInfo(p)) {
				return
			}
		}
	}()
	return out
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

// waitRoutingTable waits until the DHT routing table holds a peer. A
// connected bootstrap peer enters the table only once identify has shown
// that it speaks the DHT protocol, a few milliseconds after the connection;
// a lookup before that fails at once with "failed to find any peer in table".
func (n *Node) waitRoutingTable(ctx context.Context) error {
	if n.DHT == nil || len(n.cfg.BootstrapPeers) == 0 {
		return nil
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for n.DHT.RoutingTable().Size() == 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// Reservations returns the relay reservations the node holds now (none
// unless Config.ReserveRelays).
func (n *Node) Reservations() []Reservation {
	if n.rsv == nil {
		return nil
	}
	return n.rsv.Reservations()
}

// Close stops joining, the DHT and the host.
func (n *Node) Close() error {
	n.cancel()
	n.wg.Wait()
	var errs []error
	if n.DHT != nil {
		errs = append(errs, n.DHT.Close())
	}
	errs = append(errs, n.Host.Close())
	return errors.Join(errs...)
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
