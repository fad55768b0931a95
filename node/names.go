package node

import (
	"context"
	"fmt"
	"github.com/filecoin-project/go-clock"
	"log/slog"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/event"
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
//
// The name goes to each of the two DHTs (see kadRouting) once it has a
// server in its routing table, each record with that DHT's addresses: the
// WAN DHT's with the public ones (a mapping, a relay address), which it
// waits for, so that no server is sent a record it must reject for having
// no address; the LAN DHT's with the private ones, for the peers of the
// same LAN.
func (n *Node) Advertise(name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	for _, d := range []struct {
		name string
		kad  *dht.IpfsDHT
	}{{"wan", n.DHT.WAN}, {"lan", n.DHT.LAN}} {
		ready := func(ctx context.Context) error { return n.waitAdvertisable(ctx, d.kad) }
		a := newAdvertiser(name, d.name, drouting.NewRoutingDiscovery(d.kad), ready, n.log, n.clk)
		n.advertisers = append(n.advertisers, a)
		a.Start()
	}
}

// waitAdvertisable waits for a bootstrap peer, a server in kad's routing
// table and an address that kad's messages may carry.
func (n *Node) waitAdvertisable(ctx context.Context, kad *dht.IpfsDHT) error {
	if _, err := n.WaitBootstrap(ctx); err != nil {
		return err
	}
	if err := n.routing.waitTable(ctx, func() bool { return kad.RoutingTable().Size() > 0 }); err != nil {
		return err
	}
	sub, err := n.Host.EventBus().Subscribe(new(event.EvtLocalAddressesUpdated))
	if err != nil {
		return fmt.Errorf("subscribe to address changes: %w", err)
	}
	defer sub.Close()
	for len(kad.FilteredAddrs()) == 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-sub.Out():
		}
	}
	return nil
}

// advertiser keeps one name advertised on the DHT until Close.
type advertiser struct {
	name  string
	dht   string // "wan" or "lan", for the log
	disc  *drouting.RoutingDiscovery
	ready func(context.Context) error // waits until the DHT can be used
	log   *slog.Logger
	clk   clock.Clock

	cancel context.CancelFunc
	done   chan struct{}
}

func newAdvertiser(name, dhtName string, disc *drouting.RoutingDiscovery, ready func(context.Context) error, log *slog.Logger, clk clock.Clock) *advertiser {
	return &advertiser{name: name, dht: dhtName, disc: disc, ready: ready, log: log, clk: clk, done: make(chan struct{})}
}

// Start advertises in a goroutine of the advertiser's own.
func (a *advertiser) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	go func() {
		defer close(a.done)
		a.run(ctx)
	}()
}

// Close stops advertising and waits for the advertiser's goroutine.
func (a *advertiser) Close() {
	if a.cancel != nil {
		a.cancel()
		<-a.done
	}
}

func (a *advertiser) run(ctx context.Context) {
	for ctx.Err() == nil {
		wait := advertiseRetry
		err := a.ready(ctx)
		if err == nil {
			var ttl time.Duration
			if ttl, err = a.disc.Advertise(ctx, nameNamespace(a.name)); err == nil {
				a.log.Info("advertised name on the DHT", "name", a.name, "dht", a.dht, "ttl", ttl)
				// As go-libp2p's discovery util does: renew at 7/8.
				wait = ttl * 7 / 8
			}
		}
		if err != nil && ctx.Err() == nil {
			a.log.Warn("cannot advertise name on the DHT; will retry", "name", a.name, "dht", a.dht, "retry_in", wait, "error", err)
		}
		if !sleep(ctx, a.clk, wait) {
			return
		}
	}
}

// FindByName returns the peers that advertise name on the DHT (this node
// excluded), as the DHT gives them, until ctx ends or the lookup completes.
// A name is a hint, not an identity: anyone can advertise any name.
func (n *Node) FindByName(ctx context.Context, name string) ([]peer.AddrInfo, error) {
	if _, err := n.WaitBootstrap(ctx); err != nil {
		return nil, fmt.Errorf("cannot look up name %q: %w", name, err)
	}
	if err := n.routing.waitRoutingTable(ctx); err != nil {
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
