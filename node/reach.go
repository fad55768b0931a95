package node

import (
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/filecoin-project/go-clock"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	ma "github.com/multiformats/go-multiaddr"
)

// reachTracker is the node's one view of its reachability, read by Status
// and by the relay reserver. Its rules:
//
//   - public: AutoNAT v1 says public (or the role forced it, as a bootstrap
//     node does with libp2p.ForceReachabilityPublic), or AutoNAT v2 confirmed
//     at least one address as dialable from outside;
//   - private: otherwise, when AutoNAT v1 says private or AutoNAT v2 found an
//     address that others cannot dial;
//   - unknown: neither has a verdict (always so for a node with no public IP
//     address: AutoNAT only tests public ones).
//
// It follows go-libp2p's stateful emitters (EvtLocalReachabilityChanged from
// AutoNAT v1, EvtHostReachableAddrsChanged from the host's AutoNAT v2
// tracker, EvtNATDeviceTypeChanged from the observed-address manager), so it
// also learns what was emitted before it started.
type reachTracker struct {
	clk     clock.Clock
	sub     event.Subscription
	changed *broadcast // fires when the combined reachability changes
	done    chan struct{}

	mu          sync.Mutex
	v1          network.Reachability
	reachable   []ma.Multiaddr // AutoNAT v2
	unreachable []ma.Multiaddr
	nat         map[network.NATTransportProtocol]network.NATDeviceType
	reach       Reachability
	since       time.Time
}

// newReachTracker subscribes to h's reachability events and reads the
// state they describe from the host; Start follows them.
func newReachTracker(h host.Host, log *slog.Logger, clk clock.Clock) *reachTracker {
	t := &reachTracker{
		clk:     clk,
		changed: newBroadcast(),
		done:    make(chan struct{}),
		v1:      network.ReachabilityUnknown,
		nat:     make(map[network.NATTransportProtocol]network.NATDeviceType),
		reach:   ReachabilityUnknown,
		since:   clk.Now(),
	}
	sub, err := h.EventBus().Subscribe([]any{
		new(event.EvtLocalReachabilityChanged),
		new(event.EvtHostReachableAddrsChanged),
		new(event.EvtNATDeviceTypeChanged),
	})
	if err != nil {
		log.Error("cannot watch reachability; status will say unknown and relay reservations stay", "error", err)
	}
	t.sub = sub
	// The bus replays the stateful emitters' last events to a new
	// subscriber, but from a goroutine of its own: a Status right after a
	// lazy start would miss them. The basic host knows the current state
	// (the routed host lets these assertions through to it); the events
	// that follow, replays included, only update it.
	if bh, ok := h.(interface{ Reachability() network.Reachability }); ok {
		t.v1 = bh.Reachability()
	}
	if bh, ok := h.(interface {
		ConfirmedAddrs() (reachable, unreachable, unknown []ma.Multiaddr)
	}); ok {
		t.reachable, t.unreachable, _ = bh.ConfirmedAddrs()
	}
	t.reach = t.combined()
	return t
}

// Start follows the events in a goroutine of its own until Close.
func (t *reachTracker) Start() {
	if t.sub == nil {
		close(t.done)
		return
	}
	go func() {
		defer close(t.done)
		for e := range t.sub.Out() {
			t.handle(e)
		}
	}()
}

// Close stops following events and waits for the tracker's goroutine.
func (t *reachTracker) Close() {
	if t.sub != nil {
		t.sub.Close() // closes sub.Out(), which ends the goroutine
	}
	<-t.done
}

func (t *reachTracker) handle(e any) {
	t.mu.Lock()
	switch ev := e.(type) {
	case event.EvtLocalReachabilityChanged:
		t.v1 = ev.Reachability
	case event.EvtHostReachableAddrsChanged:
		t.reachable = slices.Clone(ev.Reachable)
		t.unreachable = slices.Clone(ev.Unreachable)
	case event.EvtNATDeviceTypeChanged:
		t.nat[ev.TransportProtocol] = ev.NatDeviceType
	}
	r := t.combined()
	changed := r != t.reach
	if changed {
		t.reach, t.since = r, t.clk.Now()
	}
	t.mu.Unlock()
	if changed {
		t.changed.fire()
	}
}

func (t *reachTracker) combined() Reachability {
	v1 := reachability(t.v1)
	switch {
	case v1 == ReachabilityPublic || len(t.reachable) > 0:
		return ReachabilityPublic
	case v1 == ReachabilityPrivate || len(t.unreachable) > 0:
		return ReachabilityPrivate
	default:
		return ReachabilityUnknown
	}
}

// Reachability returns the combined verdict now.
func (t *reachTracker) Reachability() Reachability {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.reach
}

// fill copies the tracker's state into st.
func (t *reachTracker) fill(st *Status) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st.Reachability = t.reach
	st.ReachabilitySince = t.since
	st.AutoNATv1 = reachability(t.v1)
	st.ReachableAddrs = addrStrings(t.reachable)
	st.UnreachableAddrs = addrStrings(t.unreachable)
	st.NATMapping = NATMapping{
		TCP: natMapping(t.nat[network.NATTransportTCP]),
		UDP: natMapping(t.nat[network.NATTransportUDP]),
	}
}

func reachability(r network.Reachability) Reachability {
	switch r {
	case network.ReachabilityPublic:
		return ReachabilityPublic
	case network.ReachabilityPrivate:
		return ReachabilityPrivate
	default:
		return ReachabilityUnknown
	}
}

func natMapping(t network.NATDeviceType) string {
	switch t {
	case network.NATDeviceTypeEndpointIndependent:
		return NATEndpointIndependent
	case network.NATDeviceTypeEndpointDependent:
		return NATEndpointDependent
	default:
		return NATUnknown
	}
}
