package node

import (
	"context"
	"sync/atomic"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/routing"
)

// kadRouting builds the node's Kademlia DHT when libp2p.New asks for the
// host's router (libp2p.Routing), and keeps it: go-libp2p then wraps the
// basic host in its routed host, so that Connect and NewStream to a peer
// with no known address look it up in this DHT. Building the DHT inside
// libp2p.New, rather than after it with routedhost.Wrap, is what gives the
// DHT's own dials and AutoNAT's the same host.
type kadRouting struct {
	mode   DHTMode
	prefix protocol.ID
	peers  []peer.AddrInfo

	// listening is set once the host listens: until then the DHT is given
	// no bootstrap peer, because it would dial them from a port that is
	// not the listen port, and identify's observed address for that
	// connection is then discarded, which keeps hole punching off (see
	// waitProtocol). The joiner dials them once the host listens.
	listening atomic.Bool
	kad       *dht.IpfsDHT
	// rtChanged fires when a peer enters the routing table (kbucket's
	// PeerAdded callback).
	rtChanged *broadcast
}

func newKadRouting(cfg Config) *kadRouting {
	return &kadRouting{mode: cfg.DHTMode, prefix: cfg.DHTProtocolPrefix, peers: cfg.BootstrapPeers, rtChanged: newBroadcast()}
}

// construct is the libp2p.Routing constructor.
func (r *kadRouting) construct(h host.Host) (routing.PeerRouting, error) {
	kad, err := dht.New(h,
		dht.Mode(kadMode(r.mode)),
		dht.ProtocolPrefix(r.prefix),
		dht.BootstrapPeersFunc(func() []peer.AddrInfo {
			if !r.listening.Load() {
				return nil
			}
			return r.peers
		}),
	)
	if err != nil {
		return nil, err
	}
	// kad-dht tags routing-table peers in PeerAdded; keep that and wake
	// waitRoutingTable too. No peer can be added yet (the host has no
	// connection before it listens), so replacing the field is not racy.
	rt := kad.RoutingTable()
	added := rt.PeerAdded
	rt.PeerAdded = func(p peer.ID) {
		added(p)
		r.rtChanged.fire()
	}
	r.kad = kad
	return kad, nil
}

// waitRoutingTable waits until the DHT routing table holds a peer. A
// connected bootstrap peer enters the table only once identify has shown
// that it speaks the DHT protocol, a few milliseconds after the connection;
// a lookup before that fails at once with "failed to find any peer in table".
func (r *kadRouting) waitRoutingTable(ctx context.Context) error {
	if r.kad == nil || len(r.peers) == 0 {
		return nil
	}
	for {
		changed := r.rtChanged.wait()
		if r.kad.RoutingTable().Size() > 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
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
