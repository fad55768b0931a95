package node

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// newLoopbackNode builds a node on 127.0.0.1 that joins boot (standalone if
// boot is nil) and closes it when t ends.
func newLoopbackNode(t *testing.T, boot *Node, opts ...libp2p.Option) *Node {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return newLoopbackNodeAt(t, boot, key, "/ip4/127.0.0.1/tcp/0", opts...)
}

// newLoopbackNodeAt is newLoopbackNode with a given identity and listen
// address, for a node that restarts.
func newLoopbackNodeAt(t *testing.T, boot *Node, key crypto.PrivKey, listen string, opts ...libp2p.Option) *Node {
	t.Helper()
	cfg := Config{
		Identity:    key,
		ListenAddrs: []ma.Multiaddr{ma.StringCast(listen)},
		Logger:      slog.New(slog.DiscardHandler),
		HostOptions: opts,
	}
	if boot == nil {
		cfg.Standalone = true
		cfg.DHTMode = DHTModeServer
	} else {
		cfg.BootstrapPeers = []peer.AddrInfo{{ID: boot.ID(), Addrs: boot.Host.Addrs()}}
		cfg.DHTMode = DHTModeClient
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// waitStatus polls n.Status until ok accepts it, or fails t.
func waitStatus(t *testing.T, n *Node, what string, ok func(Status) bool) Status {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := n.Status()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(st, "", "  ")
			t.Fatalf("status of %s never showed %s:\n%s", n.ID(), what, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func connTo(st Status, p peer.ID) (ConnStatus, bool) {
	i := slices.IndexFunc(st.Connections, func(c ConnStatus) bool { return c.Peer == p })
	if i < 0 {
		return ConnStatus{}, false
	}
	return st.Connections[i], true
}

func TestStatusDirectConnections(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	boot := newLoopbackNode(t, nil)
	peerNode := newLoopbackNode(t, boot)
	if _, err := peerNode.WaitBootstrap(ctx); err != nil {
		t.Fatal(err)
	}

	st := peerNode.Status()
	if st.PeerID != peerNode.ID() {
		t.Errorf("peer ID %s, want %s", st.PeerID, peerNode.ID())
	}
	c, ok := connTo(st, boot.ID())
	if !ok {
		t.Fatalf("no connection to the bootstrap peer in %+v", st.Connections)
	}
	if c.Path != PathDirect || c.Transport != "tcp" || c.Direction != "outbound" || c.Relay != "" {
		t.Errorf("connection to bootstrap peer = %+v, want direct tcp outbound", c)
	}
	if c.OpenedAt.IsZero() || time.Since(c.OpenedAt) > time.Minute {
		t.Errorf("connection opened at %v", c.OpenedAt)
	}
	if len(st.BootstrapPeers) != 1 || st.BootstrapPeers[0].Peer != boot.ID() || !st.BootstrapPeers[0].Connected {
		t.Errorf("bootstrap peers = %+v, want %s connected", st.BootstrapPeers, boot.ID())
	}
	if len(st.ListenAddrs) != 1 || !strings.HasPrefix(st.ListenAddrs[0], "/ip4/127.0.0.1/tcp/") || len(st.AdvertisedAddrs) == 0 {
		t.Errorf("listen %v, advertised %v: want the one TCP listen address, and some advertised", st.ListenAddrs, st.AdvertisedAddrs)
	}
	// Loopback addresses are not public: AutoNAT has nothing to say.
	if st.Reachability != ReachabilityUnknown || st.NATMapping.TCP != NATUnknown || st.NATMapping.UDP != NATUnknown {
		t.Errorf("reachability %s, NAT mapping %+v; want unknown", st.Reachability, st.NATMapping)
	}
	if st.RelayReservations == nil || len(st.RelayReservations) != 0 {
		t.Errorf("relay reservations = %#v, want an empty list", st.RelayReservations)
	}

	// The other side sees the same connection, inbound.
	bst := waitStatus(t, boot, "an inbound connection", func(st Status) bool {
		_, ok := connTo(st, peerNode.ID())
		return ok
	})
	c, _ = connTo(bst, peerNode.ID())
	if c.Path != PathDirect || c.Transport != "tcp" || c.Direction != "inbound" {
		t.Errorf("connection from peer = %+v, want direct tcp inbound", c)
	}
	if len(bst.BootstrapPeers) != 0 {
		t.Errorf("standalone node lists bootstrap peers %+v", bst.BootstrapPeers)
	}

	// JSON uses the documented snake_case names.
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"peer_id", "reachability", "reachability_since", "nat_mapping", "listen_addrs",
		"advertised_addrs", "relay_reservations", "bootstrap_peers", "connections"} {
		if _, ok := m[k]; !ok {
			t.Errorf("status JSON has no %q: %s", k, b)
		}
	}
	var back Status
	if err := json.Unmarshal(b, &back); err != nil || back.PeerID != st.PeerID || len(back.Connections) != len(st.Connections) {
		t.Errorf("status JSON does not round-trip (%v): %s", err, b)
	}
}

// A bootstrap node's host is built with ForceReachabilityPublic: go-libp2p
// then emits EvtLocalReachabilityChanged public once, while libp2p.New
// runs, on a stateful emitter, so that a later subscriber (the status
// tracker) still gets it. The status must say public with no AutoNAT probe.
func TestStatusForcedPublic(t *testing.T) {
	n := newLoopbackNode(t, nil, libp2p.ForceReachabilityPublic())
	sub, err := n.Host.EventBus().Subscribe(new(event.EvtLocalReachabilityChanged))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	select {
	case e := <-sub.Out():
		if r := e.(event.EvtLocalReachabilityChanged).Reachability; r != network.ReachabilityPublic {
			t.Errorf("EvtLocalReachabilityChanged %s, want public", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no EvtLocalReachabilityChanged replayed to a subscriber after New")
	}

	st := waitStatus(t, n, "reachability public", func(st Status) bool { return st.Reachability == ReachabilityPublic })
	if st.AutoNATv1 != ReachabilityPublic {
		t.Errorf("AutoNAT v1 %s, want public", st.AutoNATv1)
	}
	if st.ReachabilitySince.IsZero() || time.Since(st.ReachabilitySince) > time.Minute {
		t.Errorf("reachability since %v", st.ReachabilitySince)
	}
}

func TestPing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	boot := newLoopbackNode(t, nil)
	a := newLoopbackNode(t, boot)
	res, err := a.Ping(ctx, boot.ID(), 3)
	if err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if res.Peer != boot.ID() || res.Path != PathDirect || len(res.Pings) != 3 {
		t.Fatalf("Ping = %+v, want 3 direct pings to %s", res, boot.ID())
	}
	for _, p := range res.Pings {
		if p.RTTMillis <= 0 || p.Path != PathDirect {
			t.Errorf("ping %+v: want a positive RTT, direct", p)
		}
	}
	// Ping feeds the peerstore's latency, which Status reports.
	if c, ok := connTo(a.Status(), boot.ID()); !ok || c.RTTMillis <= 0 {
		t.Errorf("after ping, connection to %s = %+v, want an RTT", boot.ID(), c)
	}
	if _, err := a.Ping(ctx, boot.ID(), 0); err == nil {
		t.Error("Ping with count 0: no error")
	}
	if _, err := a.Ping(ctx, a.ID(), 1); err == nil {
		t.Error("Ping of itself: no error")
	}
}
