package node

import (
	"context"
	"fmt"
	"github.com/filecoin-project/go-clock"
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
	manet "github.com/multiformats/go-multiaddr/net"
)

const (
	// reserveTimeout bounds one reservation request (circuit relay v2 RESERVE).
	reserveTimeout = 10 * time.Second
	// reserveRefreshBefore renews a reservation this long before it expires
	// (relays default to a 1 h TTL).
	reserveRefreshBefore = 5 * time.Minute
	// reserveCheckInterval is how often the reserver looks again with no
	// event: a failed reservation is retried, and a reservation renewed.
	reserveCheckInterval = 30 * time.Second
	// fallbackRelays is how many relays the reserver takes from the DHT
	// routing table when no bootstrap peer gives it a reservation (as
	// go-libp2p's AutoRelay strives for 2).
	fallbackRelays = 2
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

// reserver holds relay reservations on the bootstrap peers while the node is
// not public (reachTracker's verdict), and is the node's one publisher of
// /p2p-circuit addresses: it emits EvtAutoRelayAddrsUpdated, the event
// go-libp2p's AutoRelay emits, from which the host's address manager takes
// relay addresses (and adds them only while AutoNAT v2 has confirmed no
// address of ours). go-libp2p's AutoRelay is not used: it starts only on
// AutoNAT v1's "private" verdict, about 17 s after start in the NAT lab, and
// with fewer than 4 relay candidates it waits 3 minutes more (its
// bootDelay), whereas a reservation here takes about 10 ms, so a serving
// peer is reachable by peer ID almost at once; and two emitters of that
// event would overwrite each other's addresses in the host. What AutoRelay
// did besides, finding relays among the DHT's peers when the bootstrap peers
// run none (the public Amino DHT's), the reserver does once AutoNAT says
// private: up to fallbackRelays connected routing-table peers that speak
// the relay hop protocol.
type reserver struct {
	h      host.Host
	relays []peer.AddrInfo
	// candidates lists the DHT routing table's peers, for fallback relays;
	// nil: bootstrap peers only.
	candidates func() []peer.ID
	reach      *reachTracker
	log        *slog.Logger
	clk        clock.Clock

	emit   event.Emitter
	sub    event.Subscription
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	rsvps    map[peer.ID]*client.Reservation
	fallback []peer.AddrInfo  // relays from candidates, reserved on
	noRelay  map[peer.ID]bool // bootstrap peers said to offer no relay, logged once
}

// newReserver subscribes to the events the reserver follows; Start runs it.
// It fails when the event bus refuses the emitter or the subscription.
func newReserver(h host.Host, relays []peer.AddrInfo, candidates func() []peer.ID, reach *reachTracker, log *slog.Logger, clk clock.Clock) (*reserver, error) {
	emit, err := h.EventBus().Emitter(new(event.EvtAutoRelayAddrsUpdated), eventbus.Stateful)
	if err != nil {
		return nil, fmt.Errorf("relay reservations: cannot publish relay addresses: %w", err)
	}
	sub, err := h.EventBus().Subscribe([]any{
		new(event.EvtPeerIdentificationCompleted),
		new(event.EvtPeerConnectednessChanged),
		new(event.EvtLocalAddressesUpdated), // a public address announced at last
	})
	if err != nil {
		emit.Close()
		return nil, fmt.Errorf("relay reservations: cannot watch connections: %w", err)
	}
	return &reserver{h: h, relays: relays, candidates: candidates, reach: reach, log: log, clk: clk, emit: emit, sub: sub,
		rsvps: make(map[peer.ID]*client.Reservation), done: make(chan struct{})}, nil
}

// Start reserves in a goroutine of its own until Close.
func (r *reserver) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() {
		defer close(r.done)
		r.run(ctx)
	}()
}

// Close stops reserving and waits for the reserver's goroutine. The
// reservations lapse with the connections to the relays.
func (r *reserver) Close() {
	if r.cancel != nil {
		r.cancel()
		<-r.done
	}
	r.sub.Close()
	r.emit.Close()
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

// circuitAddrs returns RELAYADDR/p2p/RELAY/p2p-circuit for each reservation.
func (r *reserver) circuitAddrs() []ma.Multiaddr {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []ma.Multiaddr
	for _, ai := range append(slices.Clone(r.relays), r.fallback...) {
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

func (r *reserver) run(ctx context.Context) {
	t := r.clk.Ticker(reserveCheckInterval)
	defer t.Stop()
	for {
		reachChanged := r.reach.changed.wait()
		r.reconcile(ctx)
		select {
		case <-ctx.Done():
			return
		case <-r.sub.Out():
			drain(r.sub.Out()) // one look covers a burst of events
		case <-reachChanged:
		case <-t.C:
		}
	}
}

// reconcile reserves on every connected relay that lacks a fresh
// reservation, or drops all of them once the node is public.
func (r *reserver) reconcile(ctx context.Context) {
	// Public, and saying so: AutoNAT v1 may call the node public before
	// its host announces a public direct address (go-libp2p adds an
	// observed address once enough peers saw it); dropping the
	// reservations then would leave the node with no address anyone can
	// use: a forward at 150 ms RTT in the NAT matrix found a full-cone
	// serving peer "not found in the DHT" in 1 to 7 of 10 tries.
	public := r.reach.Reachability() == ReachabilityPublic && announcesPublicDirect(r.h.Addrs())
	r.mu.Lock()
	changed := false
	if public && len(r.rsvps) > 0 {
		clear(r.rsvps)
		r.fallback = nil
		changed = true
		r.log.Info("public address confirmed; relay reservations no longer needed")
	}
	r.mu.Unlock()

	if !public {
		held := 0
		for _, ai := range r.relays {
			changed = r.reserve(ctx, ai) || changed
			if r.holds(ai.ID) {
				held++
			}
		}
		if held == 0 {
			changed = r.reserveFallback(ctx) || changed
		}
	}
	if changed {
		r.publish()
	}
}

func (r *reserver) holds(id peer.ID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.rsvps[id]
	return ok
}

// reserveFallback keeps reservations on up to fallbackRelays relays from
// the routing table while AutoNAT says private; it reports whether the set
// of reservations changed.
func (r *reserver) reserveFallback(ctx context.Context) bool {
	r.mu.Lock()
	inUse := slices.Clone(r.fallback)
	r.mu.Unlock()
	changed := false
	var kept []peer.AddrInfo
	for _, ai := range inUse {
		changed = r.reserve(ctx, ai) || changed
		if r.holds(ai.ID) {
			kept = append(kept, ai)
		}
	}
	if r.candidates != nil && r.reach.Reachability() == ReachabilityPrivate {
		for _, id := range r.candidates() {
			if len(kept) >= fallbackRelays {
				break
			}
			if slices.ContainsFunc(r.relays, func(ai peer.AddrInfo) bool { return ai.ID == id }) ||
				slices.ContainsFunc(kept, func(ai peer.AddrInfo) bool { return ai.ID == id }) {
				continue
			}
			// The circuit address must be one that others can dial.
			ai := peer.AddrInfo{ID: id, Addrs: slices.DeleteFunc(slices.Clone(r.h.Peerstore().Addrs(id)), func(a ma.Multiaddr) bool {
				return !manet.IsPublicAddr(a)
			})}
			if len(ai.Addrs) > 0 && r.reserve(ctx, ai) {
				kept = append(kept, ai)
				changed = true
			}
		}
	}
	r.mu.Lock()
	r.fallback = kept
	r.mu.Unlock()
	return changed
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
	if cur != nil && r.clk.Until(cur.Expiration) > reserveRefreshBefore {
		return false
	}
	if offersRelay(r.h, ai.ID) != RelayOffered {
		r.noteNoRelay(ai.ID)
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

// noteNoRelay says once, at info, that a bootstrap peer runs no relay: a
// node behind NAT then cannot be reached through it (a kubo node that is
// not yet sure it is public offers none, for one).
func (r *reserver) noteNoRelay(id peer.ID) {
	if offersRelay(r.h, id) != RelayNotOffered || !slices.ContainsFunc(r.relays, func(ai peer.AddrInfo) bool { return ai.ID == id }) {
		return
	}
	r.mu.Lock()
	logged := r.noRelay[id]
	if r.noRelay == nil {
		r.noRelay = map[peer.ID]bool{}
	}
	r.noRelay[id] = true
	r.mu.Unlock()
	if !logged {
		r.log.Info("bootstrap peer offers no circuit relay: peers cannot reach this node through it while it is behind a NAT", "peer", id)
	}
}

// Whether a peer offers a circuit relay v2 (the hop protocol), as its
// identify said.
const (
	RelayUnknown    = "unknown" // not identified yet
	RelayOffered    = "yes"
	RelayNotOffered = "no"
)

// offersRelay reads the peer's protocols from the peerstore.
// announcesPublicDirect reports whether addrs (a host's announced ones)
// has a public address that is not a relay's.
func announcesPublicDirect(addrs []ma.Multiaddr) bool {
	return slices.ContainsFunc(addrs, func(a ma.Multiaddr) bool { return !isRelayAddr(a) && manet.IsPublicAddr(a) })
}

func offersRelay(h host.Host, id peer.ID) string {
	protos, err := h.Peerstore().GetProtocols(id)
	if err != nil || len(protos) == 0 {
		return RelayUnknown
	}
	if slices.Contains(protos, proto.ProtoIDv2Hop) {
		return RelayOffered
	}
	return RelayNotOffered
}

// publish makes the host recompute its addresses now rather than at its next
// 5 s tick: the host takes relay addresses from this event, and identify
// pushes the new addresses to connected peers, the bootstrap node among
// them, which answers DHT FIND_PEER with them.
func (r *reserver) publish() {
	if err := r.emit.Emit(event.EvtAutoRelayAddrsUpdated{RelayAddrs: r.circuitAddrs()}); err != nil {
		r.log.Warn("cannot publish relay addresses", "error", err)
	}
}

// drain takes what is queued on ch without waiting.
func drain(ch <-chan any) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}
