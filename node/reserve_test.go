package node

import (
	"context"
	"crypto/rand"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// TestReserverPublishesCircuitAddrs: a serving node reserves on its
// bootstrap peer's relay as soon as it is connected, and the host
// advertises the circuit address (the reserver's EvtAutoRelayAddrsUpdated is
// the one way circuit addresses reach it); once the node is public, the
// reservation and the address go.
func TestReserverPublishesCircuitAddrs(t *testing.T) {
	// The node announces a public address too, as go-libp2p does once
	// peers observed one: without it, public is not enough (see
	// TestReserverKeepsWithoutPublicAddr).
	public := ma.StringCast("/ip4/11.0.0.9/tcp/4001")
	boot, n := newReservingNode(t, libp2p.AddrsFactory(func(addrs []ma.Multiaddr) []ma.Multiaddr { return append(addrs, public) }))

	circuit := "/p2p/" + boot.ID().String() + "/p2p-circuit"
	advertised := func() bool {
		return slices.ContainsFunc(n.Host.Addrs(), func(a ma.Multiaddr) bool { return strings.HasSuffix(a.String(), circuit) })
	}
	waitFor(t, "a reservation on the bootstrap peer's relay", func() bool {
		r := n.Reservations()
		return len(r) == 1 && r[0].Relay == boot.ID()
	})
	waitFor(t, "the host to advertise the circuit address", advertised)
	if st := n.Status(); len(st.RelayReservations) != 1 || !slices.ContainsFunc(st.AdvertisedAddrs, func(a string) bool { return strings.HasSuffix(a, circuit) }) {
		t.Errorf("status: reservations %+v, advertised %v; want the reservation and its circuit address", st.RelayReservations, st.AdvertisedAddrs)
	}

	sayPublic(t, n)
	waitFor(t, "the reservation to be dropped once public", func() bool { return len(n.Reservations()) == 0 })
	waitFor(t, "the circuit address to go", func() bool { return !advertised() })
	if r := n.Status().Reachability; r != ReachabilityPublic {
		t.Errorf("status says %s, want public: Status and the reserver read one tracker", r)
	}
}

// TestReserverKeepsWithoutPublicAddr: AutoNAT v1 may call a node public
// before its host announces any public direct address; the reservation
// (its circuit address the only one others can use) stays meanwhile.
func TestReserverKeepsWithoutPublicAddr(t *testing.T) {
	boot, n := newReservingNode(t)
	waitFor(t, "a reservation on the bootstrap peer's relay", func() bool {
		r := n.Reservations()
		return len(r) == 1 && r[0].Relay == boot.ID()
	})
	sayPublic(t, n)
	waitFor(t, "the tracker to say public", func() bool { return n.Status().Reachability == ReachabilityPublic })
	// One more reconcile, now that the tracker says public: it is what
	// the reserver runs on that event.
	n.rsv.reconcile(context.Background())
	if len(n.Reservations()) != 1 {
		t.Errorf("reservations %+v after public with no public address announced; want the one kept", n.Reservations())
	}
}

// newReservingNode is a node that reserves on a loopback bootstrap relay.
func newReservingNode(t *testing.T, opts ...libp2p.Option) (boot, n *Node) {
	t.Helper()
	boot = newLoopbackNode(t, nil, libp2p.EnableRelayService(), libp2p.ForceReachabilityPublic())
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	n, err = New(Config{
		Identity:       key,
		ListenAddrs:    []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")},
		Logger:         slog.New(slog.DiscardHandler),
		BootstrapPeers: []peer.AddrInfo{{ID: boot.ID(), Addrs: boot.Host.Addrs()}},
		DHTMode:        DHTModeClient,
		ReserveRelays:  true,
		HostOptions:    opts,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return boot, n
}

// sayPublic tells n's event bus what AutoNAT v1 would: the node is public.
func sayPublic(t *testing.T, n *Node) {
	t.Helper()
	em, err := n.Host.EventBus().Emitter(new(event.EvtLocalReachabilityChanged))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { em.Close() })
	if err := em.Emit(event.EvtLocalReachabilityChanged{Reachability: network.ReachabilityPublic}); err != nil {
		t.Fatal(err)
	}
}
