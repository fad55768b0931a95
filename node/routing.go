package node

import (
	"context"
	"sync/atomic"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p-kad-dht/dual"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/routing"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// kadRouting builds the node's Kademlia DHTs when libp2p.New asks for the
// host's router (libp2p.Routing), and keeps them: go-libp2p then wraps the
// basic host in its routed host, so that Connect and NewStream to a peer
// with no known address look it up in these DHTs. Building them inside
// libp2p.New, rather than after it with routedhost.Wrap, is what gives the
// DHTs' own dials and AutoNAT's the same host.
//
// There are two, as in kubo (go-libp2p-kad-dht's dual package): a WAN DHT
// on PREFIX/kad/1.0.0 whose routing table holds peers with public addresses
// and whose messages carry public addresses only, and a LAN DHT on
// PREFIX/lan/kad/1.0.0 for the peers reached over private addresses. So a
// node behind a NAT never publishes its 10.x or 192.168.x addresses on the
// public DHT, and peers of one LAN still find each other by them.
type kadRouting struct {
	mode   DHTMode
	prefix protocol.ID
	peers  []peer.AddrInfo

	// listening is set once the host listens: until then the DHTs are
	// given no bootstrap peer, because they would dial them from a port
	// that is not the listen port, and identify's observed address for that
	// connection is then discarded, which keeps hole punching off (see
	// waitProtocol). The joiner dials them once the host listens.
	listening atomic.Bool
	kad       *dual.DHT
	// rtChanged fires when a peer enters either routing table (kbucket's
	// PeerAdded callback).
	rtChanged *broadcast
}

func newKadRouting(cfg Config) *kadRouting {
	return &kadRouting{mode: cfg.DHTMode, prefix: cfg.DHTProtocolPrefix, peers: cfg.BootstrapPeers, rtChanged: newBroadcast()}
}

// construct is the libp2p.Routing constructor.
func (r *kadRouting) construct(h host.Host) (routing.PeerRouting, error) {
	kad, err := dual.New(h,
		dual.DHTOption(
			dht.BootstrapPeersFunc(func() []peer.AddrInfo {
				if !r.listening.Load() {
					return nil
				}
				return r.peers
			}),
		),
		dual.WanDHTOption(dht.ProtocolPrefix(r.prefix), dht.Mode(kadMode(r.mode))),
		// The LAN DHT serves unless told to be a client: AutoNAT's verdict
		// is about the internet, and a node behind a NAT is exactly the
		// one whose LAN neighbours need it to answer.
		//
		// The prefix is set per DHT, and the LAN's extension again after
		// it: the dual package adds "/lan" before the caller's options, so
		// a prefix given to both (dual.DHTOption) replaced it, and the LAN
		// DHT took over the WAN protocol's handler. Every query from the
		// internet was then answered from the LAN routing table, in which
		// no public peer is, and lookups ended at the first hop
		// (TestDHTAtScale, TestDHTProtocols).
		dual.LanDHTOption(dht.ProtocolPrefix(r.prefix), dht.ProtocolExtension(dual.LanExtension),
			dht.Mode(lanMode(r.mode)), dht.AddressFilter(lanDHTAddrs)),
	)
	if err != nil {
		return nil, err
	}
	// kad-dht tags routing-table peers in PeerAdded; keep that and wake
	// waitRoutingTable too. No peer can be added yet (the host has no
	// connection before it listens), so replacing the field is not racy.
	for _, d := range []*dht.IpfsDHT{kad.WAN, kad.LAN} {
		rt := d.RoutingTable()
		added := rt.PeerAdded
		rt.PeerAdded = func(p peer.ID) {
			added(p)
			r.rtChanged.fire()
		}
	}
	r.kad = kad
	return kad, nil
}

// lanDHTAddrs is the LAN DHT's address filter. The dual package drops every
// loopback address there; this drops them only from a list that has
// others. A peer whose only addresses are loopback ones runs on this host
// (several nodes on one machine, the demo), and dropping them would make it
// unfindable; a loopback address handed to a peer on another host costs
// that peer one failed local dial (the peer ID does not match).
func lanDHTAddrs(addrs []ma.Multiaddr) []ma.Multiaddr {
	if !hasNonLoopback(addrs) {
		return addrs
	}
	return ma.FilterAddrs(addrs, func(a ma.Multiaddr) bool { return !manet.IsIPLoopback(a) })
}

func hasNonLoopback(addrs []ma.Multiaddr) bool {
	for _, a := range addrs {
		if !manet.IsIPLoopback(a) {
			return true
		}
	}
	return false
}

// refresh asks both DHTs to refresh their routing tables, without waiting.
func (r *kadRouting) refresh() {
	if r.kad == nil {
		return
	}
	// The results arrive on channels we do not need; kad-dht logs its own
	// failures.
	_ = r.kad.WAN.RefreshRoutingTable()
	_ = r.kad.LAN.RefreshRoutingTable()
}

// waitRoutingTable waits until a DHT routing table holds a peer. A
// connected bootstrap peer enters a table only once identify has shown
// that it speaks the DHT protocol, a few milliseconds after the connection;
// a lookup before that fails at once with "failed to find any peer in table".
func (r *kadRouting) waitRoutingTable(ctx context.Context) error {
	if r.kad == nil || len(r.peers) == 0 {
		return nil
	}
	return r.waitTable(ctx, func() bool { return r.kad.WAN.RoutingTable().Size() > 0 || r.kad.LAN.RoutingTable().Size() > 0 })
}

// waitTable waits until ready, re-checking whenever a routing table gains a
// peer.
func (r *kadRouting) waitTable(ctx context.Context, ready func() bool) error {
	for {
		changed := r.rtChanged.wait()
		if ready() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

// relayCandidates lists the WAN routing table's peers: DHT servers with a
// public address, which is what a relay must have. Only when there are none
// (a node whose whole network is private, e.g. one LAN or the tests'
// loopback) does it list the LAN table's.
func (r *kadRouting) relayCandidates() []peer.ID {
	if r.kad == nil {
		return nil
	}
	if ps := r.kad.WAN.RoutingTable().ListPeers(); len(ps) > 0 {
		return ps
	}
	return r.kad.LAN.RoutingTable().ListPeers()
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

func lanMode(m DHTMode) dht.ModeOpt {
	if m == DHTModeClient {
		return dht.ModeClient
	}
	return dht.ModeServer
}
