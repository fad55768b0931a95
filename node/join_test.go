package node

import (
	"crypto/rand"
	"log/slog"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
	ma "github.com/multiformats/go-multiaddr"
)

// TestJoinRedialsUnidentified: a bootstrap peer whose identify fails (here
// it does not answer the protocol at all; on a loaded host the stream
// times out) leaves a connection the DHT can never use, and go-libp2p does
// not retry identify on it. The joiner drops that connection and dials
// again, with its backoff.
func TestJoinRedialsUnidentified(t *testing.T) {
	boot, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { boot.Close() })
	boot.RemoveStreamHandler(identify.ID)
	conns := make(chan struct{}, 16)
	boot.Network().Notify(&network.NotifyBundle{ConnectedF: func(network.Network, network.Conn) {
		select {
		case conns <- struct{}{}:
		default:
		}
	}})

	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	n, err := New(Config{Identity: key, ListenAddrs: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")},
		BootstrapPeers: []peer.AddrInfo{{ID: boot.ID(), Addrs: boot.Addrs()}}, DHTMode: DHTModeClient,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })

	// The first dial, then one after the 1 s backoff.
	timeout := time.After(10 * time.Second)
	for i := range 2 {
		select {
		case <-conns:
		case <-timeout:
			t.Fatalf("the bootstrap peer saw %d connection(s) in 10 s; want the unidentified one replaced by a new dial", i)
		}
	}
}
