package node

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	drouting "github.com/libp2p/go-libp2p/p2p/discovery/routing"
)

// advertiseRetry is how long Advertise waits after a failed announcement.
const advertiseRetry = 30 * time.Second

// nameNamespace is the rendezvous namespace of a name: go-libp2p's routing
// discovery turns it into a CID and stores provider records for it on the
// DHT servers closest to that CID.
func nameNamespace(name string) string { return "p2pnode/name/" + name }

// Advertise announces on the DHT that this node offers services under name,
// with go-libp2p's routing discovery (kad-dht provider records), and
// announces again before the records expire, until the node closes. Records
// cannot be withdrawn from a Kademlia DHT: after Close they expire with
// their TTL, so whoever looks a name up must check that its peers answer
// (FindByName's callers do).
func (n *Node) Advertise(name string) {
	disc := drouting.NewRoutingDiscovery(n.DHT)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		for n.ctx.Err() == nil {
			wait := advertiseRetry
			if _, err := n.WaitBootstrap(n.ctx); err == nil {
				if err = n.waitRoutingTable(n.ctx); err == nil {
					var ttl time.Duration
					if ttl, err = disc.Advertise(n.ctx, nameNamespace(name)); err == nil {
						n.log.Info("advertised name on the DHT", "name", name, "ttl", ttl)
						// As go-libp2p's discovery util does: renew at 7/8.
						wait = ttl * 7 / 8
					}
				}
				if err != nil && n.ctx.Err() == nil {
					n.log.Warn("cannot advertise name on the DHT; will retry", "name", name, "retry_in", wait, "error", err)
				}
			}
			if !sleep(n.ctx, wait) {
				return
			}
		}
	}()
}

// FindByName returns the peers that advertise name on the DHT (this node
// excluded), as the DHT gives them, until ctx ends or the lookup completes.
// A name is a hint, not an identity: anyone can advertise any name.
func (n *Node) FindByName(ctx context.Context, name string) ([]peer.AddrInfo, error) {
	if _, err := n.WaitBootstrap(ctx); err != nil {
		return nil, fmt.Errorf("cannot look up name %q: %w", name, err)
	}
	if err := n.waitRoutingTable(ctx); err != nil {
		return nil, fmt.Errorf("cannot look up name %q: no DHT server in the routing table: %w", name, err)
	}
	found, err := drouting.NewRoutingDiscovery(n.DHT).FindPeers(ctx, nameNamespace(name))
	if err != nil {
		return nil, fmt.Errorf("look up name %q: %w", name, err)
	}
	var out []peer.AddrInfo
	seen := map[peer.ID]bool{n.Host.ID(): true}
	for ai := range found {
		if seen[ai.ID] {
			continue
		}
		seen[ai.ID] = true
		out = append(out, ai)
	}
	return out, nil
}
