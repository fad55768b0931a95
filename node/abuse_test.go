package node_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/p2pnode/p2pnode/node"
	"github.com/p2pnode/p2pnode/overlay"
)

// TestAbusivePeers: a peer that opens more forward streams than its limit,
// one that never sends its request header (slowloris) and one that sends a
// 1 MiB header are each cut off (resource manager, read deadline, size
// limit), and an honest peer's forwarded connection works meanwhile.
func TestAbusivePeers(t *testing.T) {
	const perPeer = 64
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srvNode, err := node.New(node.Config{
		Identity:     key,
		ListenAddrs:  []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")},
		Standalone:   true,
		Logger:       slog.New(slog.DiscardHandler),
		StreamLimits: []node.StreamLimit{{Protocol: overlay.ProtocolID, Service: overlay.ServiceName, PerPeer: perPeer, Total: 1024}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srvNode.Close() })

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	const requestTimeout = 2 * time.Second
	srv, err := overlay.NewServer(srvNode.Host,
		[]overlay.Service{{Name: "echo", Target: l.Addr().String(), Public: true}},
		overlay.WithRequestTimeout(requestTimeout), overlay.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	target := peer.AddrInfo{ID: srvNode.ID(), Addrs: srvNode.Host.Addrs()}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	attacker, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { attacker.Close() })
	if err := attacker.Connect(ctx, target); err != nil {
		t.Fatal(err)
	}

	// Slowloris: many streams, no header. The server takes perPeer of
	// them and refuses the rest; a refusal shows as an error on read (the
	// stream's protocol negotiation is lazy), a stream it holds as a read
	// that times out.
	var streams []network.Stream
	for i := 0; i < 4*perPeer; i++ {
		s, err := attacker.NewStream(ctx, srvNode.ID(), overlay.ProtocolID)
		if err == nil {
			streams = append(streams, s)
		}
	}
	var mu sync.Mutex
	var held []network.Stream
	var wg sync.WaitGroup
	deadline := time.Now().Add(time.Second)
	for _, s := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = s.SetReadDeadline(deadline)
			_, err := s.Read(make([]byte, 1))
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				_ = s.SetReadDeadline(time.Time{})
				mu.Lock()
				held = append(held, s)
				mu.Unlock()
				return
			}
			s.Reset()
		}()
	}
	wg.Wait()
	if len(held) == 0 || len(held) > perPeer {
		t.Errorf("attacker holds %d of %d header-less streams; want at most %d", len(held), 4*perPeer, perPeer)
	}

	// An oversize header is refused at once, not read to its end.
	big, err := attacker.NewStream(ctx, srvNode.ID(), overlay.ProtocolID)
	if err == nil {
		_ = big.SetDeadline(time.Now().Add(requestTimeout / 2))
		_, _ = big.Write(bytes.Repeat([]byte{0xff}, 1<<20))
		if _, err := io.ReadAll(big); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Error("a 1 MiB request header was not refused at once")
			}
		}
		big.Reset()
	}

	// Meanwhile an honest peer's forward works.
	honest, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { honest.Close() })
	if err := honest.Connect(ctx, target); err != nil {
		t.Fatal(err)
	}
	s, err := overlay.Dial(ctx, honest, srvNode.ID(), "echo")
	if err != nil {
		t.Fatalf("honest peer refused while the attacker holds %d streams: %v", len(held), err)
	}
	msg := []byte("honest bytes")
	_, _ = s.Write(msg)
	_ = s.CloseWrite()
	got, err := io.ReadAll(s)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("honest echo: %q, %v", got, err)
	}

	// The header-less streams are cut off by the request deadline.
	start := time.Now()
	for _, h := range held {
		_ = h.SetReadDeadline(time.Now().Add(3 * requestTimeout))
		if _, err := io.ReadAll(h); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("a header-less stream was still open %v after it was opened; want it cut after %v", time.Since(start), requestTimeout)
			}
		}
	}
}
