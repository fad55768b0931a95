package node

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/eventbus"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
	ma "github.com/multiformats/go-multiaddr"
)

const (
	// reserveTimeout bounds one reservation request (circuit relay v2 RESERVE).
	reserveTimeout = 10 * time.Second
	// reserveRefreshBefore renews a reservation this long before it expires
	// (relays default to a 1 h TTL).
	reserveRefreshBefore = 5 * time.Minute
	reserveCheckInterval = 30 * time.Second
)

// Reservation is a circuit relay v2 slot this node holds on a relay.
type Reservation struct {
	// Relay is the relay's peer ID.
	Relay peer.ID
	// Expiry is when the relay drops the slot unless it is renewed.
	Expiry time.Time
	// LimitDuration and LimitData are the relay's per-connection limits
	// (0: unlimited), in time and bytes per direction.
	LimitDuration time.Duration
	LimitData     uint64
}

// reserver holds relay reservations on the bootstrap peers while the node has
// no confirmed public address, and publishes the matching /p2p-circuit
// addresses. go-libp2p's AutoRelay does the same only once AutoNAT v1 says
// "private", about 17 s after start in the NAT lab; a reservation takes about
// 10 ms, so a serving peer is reachable by peer ID almost at once. When
// AutoNAT confirms a public address the reservations are dropped.
type reserver struct {
	h      host.Host
	relays []peer.AddrInfo
	log    *slog.Logger

	mu     sync.Mutex
	rsvps  map[peer.ID]*client.Reservation
	public bool
	emit   event.Emitter
}

func newReserver(relays []peer.AddrInfo, log *slog.Logger) *reserver {
	return &reserver{relays: relays, log: log, rsvps: make(map[peer.ID]*client.Reservation)}
}

// addrsFactory appends the circuit addresses of the held reservations to the
// host's addresses; it is given to libp2p.AddrsFactory.
func (r *reserver) addrsFactory(addrs []ma.Multiaddr) []ma.Multiaddr {
	return append(addrs, r.circuitAddrs()...)
}

// circuitAddrs returns RELAYADDR/p2p/RELAY/p2p-circuit for each reservation.
func (r *reserver) circuitAddrs() []ma.Multiaddr {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []ma.Multiaddr
	for _, ai := range r.relays {
		if _, ok := r.rsvps[ai.ID]; !ok {
			continue
		}
		suffix, err := ma.NewMultiaddr("/p2p/" + ai.ID.String() + "/p2p-circuit")
		if err != nil {
			continue
		}
		for _, a := range ai.Addrs {
			out = append(out, a.Encapsulate(suffix))
		}
	}
	return out
}

// Reservations returns the reservations held now.
func (r *reserver) Reservations() []Reservation {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Reservation, 0, len(r.rsvps))
	for id, rv := range r.rsvps {
		out = append(out, Reservation{Relay: id, Expiry: rv.Expiration, LimitDuration: rv.LimitDuration, LimitData: rv.LimitData})
	}
	slices.SortFunc(out, func(a, b Reservation) int { return a.Expiry.Compare(b.Expiry) })
	return out
}

func (r *reserver) run(ctx context.Context, h host.Host) {
	r.h = h
	emit, err := h.EventBus().Emitter(new(event.EvtAutoRelayAddrsUpdated), eventbus.Stateful)
	if err != nil {
		r.log.Error("cannot publish relay addresses", "error", err)
		return
	}
	defer emit.Close()
	r.emit = emit
	sub, err := h.EventBus().Subscribe([]any{
		new(event.EvtHostReachableAddrsChanged),
		new(event.EvtLocalReachabilityChanged),
		new(event.EvtPeerIdentificationCompleted),
		new(event.EvtPeerConnectednessChanged),
	})
	if err != nil {
		r.log.Error("cannot watch reachability; relay reservations disabled", "error", err)
		return
	}
	defer sub.Close()
	t := time.NewTicker(reserveCheckInterval)
	defer t.Stop()
	r.reconcile(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-sub.Out():
			switch ev := e.(type) {
			case event.EvtHostReachableAddrsChanged:
				// AutoNAT v2 confirmed (or stopped confirming) addresses.
				r.setPublic(len(ev.Reachable) > 0)
			case event.EvtLocalReachabilityChanged:
				if ev.Reachability == network.ReachabilityPublic {
					r.setPublic(true)
				}
			}
		case <-t.C:
		}
		r.reconcile(ctx)
	}
}

func (r *reserver) setPublic(public bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if public != r.public {
		r.log.Info("reachability changed", "public", public)
	}
	r.public = public
}

// reconcile reserves on every connected relay that lacks a fresh
// reservation, or drops all of them once the node is public.
func (r *reserver) reconcile(ctx context.Context) {
	r.mu.Lock()
	public := r.public
	changed := false
	if public && len(r.rsvps) > 0 {
		clear(r.rsvps)
		changed = true
		r.log.Info("public address confirmed; relay reservations no longer needed")
	}
	r.mu.Unlock()

	if !public {
		for _, ai := range r.relays {
			changed = r.reserve(ctx, ai) || changed
		}
	}
	if changed {
		r.publish()
	}
}

// reserve makes or renews the reservation on one relay; it reports whether
// the set of reservations changed.
func (r *reserver) reserve(ctx context.Context, ai peer.AddrInfo) bool {
	r.mu.Lock()
	cur := r.rsvps[ai.ID]
	r.mu.Unlock()

	if r.h.Network().Connectedness(ai.ID) != network.Connected {
		// A reservation lives on the connection to the relay.
		if cur != nil {
			r.mu.Lock()
			delete(r.rsvps, ai.ID)
			r.mu.Unlock()
			r.log.Info("lost relay reservation: relay disconnected", "relay", ai.ID)
			return true
		}
		return false
	}
	if cur != nil && time.Until(cur.Expiration) > reserveRefreshBefore {
		return false
	}
	if ok, _ := r.h.Peerstore().SupportsProtocols(ai.ID, proto.ProtoIDv2Hop); len(ok) == 0 {
		return false // not identified yet, or not a relay
	}
	rctx, cancel := context.WithTimeout(ctx, reserveTimeout)
	rv, err := client.Reserve(rctx, r.h, peer.AddrInfo{ID: ai.ID})
	cancel()
	if err != nil {
		r.log.Warn("relay reservation failed", "relay", ai.ID, "error", err)
		return false
	}
	r.mu.Lock()
	r.rsvps[ai.ID] = rv
	r.mu.Unlock()
	if cur == nil {
		r.log.Info("relay reservation made", "relay", ai.ID, "expiry", rv.Expiration.Format(time.RFC3339),
			"limit_duration", rv.LimitDuration, "limit_bytes", rv.LimitData)
		return true
	}
	return false
}

// publish makes the host recompute its addresses now rather than at its next
// 5 s tick: the host takes relay addresses from this event (the one AutoRelay
// emits), and identify pushes the new addresses to connected peers, the
// bootstrap node among them, which answers DHT FIND_PEER with them.
func (r *reserver) publish() {
	addrs := r.circuitAddrs()
	if err := r.emit.Emit(event.EvtAutoRelayAddrsUpdated{RelayAddrs: addrs}); err != nil {
		r.log.Warn("cannot publish relay addresses", "error", err)
	}
}
