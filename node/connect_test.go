package node

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	ma "github.com/multiformats/go-multiaddr"
)

// TestConnectFindsRestartedPeer: a peer that stops and comes back with the
// same identity, at the same address, is reachable again at once, although
// the dial tried while it was down put that address in go-libp2p's dial
// backoff; and the dial tried while it was down fails with words that say so.
func TestConnectFindsRestartedPeer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	boot := newLoopbackNode(t, nil)
	client := newLoopbackNode(t, boot)
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	server := newLoopbackNodeAt(t, boot, key, "/ip4/127.0.0.1/tcp/0")
	port, err := server.Host.Addrs()[0].ValueForProtocol(ma.P_TCP)
	if err != nil {
		t.Fatal(err)
	}
	listen := fmt.Sprintf("/ip4/127.0.0.1/tcp/%s", port)
	if _, err := server.WaitBootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	// The bootstrap peer tells others about the server once identify has
	// given it the server's addresses, a moment after the connection.
	waitFor(t, "the bootstrap peer to know the server's addresses", func() bool {
		return len(boot.Host.Peerstore().Addrs(server.ID())) > 0
	})
	if path, err := client.Connect(ctx, server.ID()); err != nil || path != PathDirect {
		t.Fatalf("before the restart: path %s, err %v", path, err)
	}

	if err := server.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the client to lose its connection to the stopped server", func() bool {
		return client.Host.Network().Connectedness(server.ID()) != network.Connected
	})
	_, err = client.Connect(ctx, server.ID())
	if err == nil || !strings.Contains(err.Error(), "unreachable") || !strings.Contains(err.Error(), server.ID().String()) {
		t.Fatalf("while the server is down: want an error naming it unreachable, got %v", err)
	}

	server = newLoopbackNodeAt(t, boot, key, listen)
	if _, err := server.WaitBootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	if path, err := client.Connect(ctx, server.ID()); err != nil || path != PathDirect {
		t.Fatalf("after the restart: path %s, err %v", path, err)
	}
}

// waitFor polls cond every 20 ms for up to 10 s, and fails t if it never
// holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
