package node

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/filecoin-project/go-clock"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
)

// TestPathWatchCheck: a direct connection whose peer does not answer the
// ping within pathDeadAfter is closed and reported dead; one that answers,
// and one whose peer has no ping protocol (a reset says nothing about the
// path), stay.
func TestPathWatchCheck(t *testing.T) {
	cases := []struct {
		name    string
		remote  func(h host.Host)
		session bool // an application stream is open
		closed  bool
	}{
		{"answers", func(host.Host) {}, false, false},
		{"silent", func(h host.Host) {
			h.SetStreamHandler(ping.ID, func(s network.Stream) { _, _ = io.Copy(io.Discard, s) })
		}, false, true},
		{"no ping protocol", func(h host.Host) { h.RemoveStreamHandler(ping.ID) }, false, false},
		// With a session open, one unanswered ping is not enough.
		{"silent once, with a session open", func(h host.Host) {
			var once sync.Once
			svc := ping.NewPingService(h)
			h.SetStreamHandler(ping.ID, func(s network.Stream) {
				first := false
				once.Do(func() { first = true })
				if first {
					_, _ = io.Copy(io.Discard, s)
					return
				}
				svc.PingHandler(s)
			})
		}, true, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			local, remote := newPingHost(t), newPingHost(t)
			c.remote(remote)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := local.Connect(ctx, peer.AddrInfo{ID: remote.ID(), Addrs: remote.Addrs()}); err != nil {
				t.Fatal(err)
			}
			if c.session {
				remote.SetStreamHandler(testAppProtocol, func(s network.Stream) { _, _ = io.Copy(io.Discard, s) })
				s, err := local.NewStream(ctx, remote.ID(), testAppProtocol)
				if err != nil {
					t.Fatal(err)
				}
				defer s.Reset()
				if _, err := s.Write([]byte("session")); err != nil {
					t.Fatal(err)
				}
			}
			var dead []peer.ID
			w := newPathWatch(local, slog.New(slog.DiscardHandler), clock.New(), func(p peer.ID) { dead = append(dead, p) })
			defer w.Close()
			closed := w.check(ctx, remote.ID())
			if closed != c.closed || hasDirectConn(local, remote.ID()) == c.closed {
				t.Errorf("check closed %v (direct connection left: %v), want closed %v", closed, hasDirectConn(local, remote.ID()), c.closed)
			}
			if c.closed && (len(dead) != 1 || dead[0] != remote.ID()) {
				t.Errorf("dead called with %v, want the peer once", dead)
			}
			if !c.closed && len(dead) != 0 {
				t.Errorf("dead called with %v for a live path", dead)
			}
		})
	}
}

// TestPathWatchNoDirect: without a direct connection there is nothing to
// probe, and nothing is dialled for it.
func TestPathWatchNoDirect(t *testing.T) {
	local, remote := newPingHost(t), newPingHost(t)
	local.Peerstore().AddAddrs(remote.ID(), remote.Addrs(), time.Minute)
	w := newPathWatch(local, slog.New(slog.DiscardHandler), clock.New(), nil)
	defer w.Close()
	if w.check(context.Background(), remote.ID()) {
		t.Error("check closed a connection that does not exist")
	}
	if len(local.Network().ConnsToPeer(remote.ID())) != 0 {
		t.Error("check dialled the peer")
	}
}

// testAppProtocol stands for a forward's stream: an application stream.
const testAppProtocol protocol.ID = "/p2pnode-test/app/1.0.0"

func newPingHost(t *testing.T) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics(), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}
