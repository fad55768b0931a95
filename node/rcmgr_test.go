package node

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
)

// TestStreamsPastMemoryAreResetAlone: a peer that opens more streams than
// the resource manager's memory covers (a forward with very many TCP
// connections to a small machine) gets the extra streams reset, and its
// connection and the streams already open go on. Without the bound, go-yamux
// closes the whole connection when an inbound stream's window cannot be
// reserved.
func TestStreamsPastMemoryAreResetAlone(t *testing.T) {
	const proto = protocol.ID("/p2pnode/test/hold/1.0.0")
	// A 64 MiB machine: 80 MiB for a peer, about 300 streams' windows.
	limits, opts := resourceLimits([]StreamLimit{{Protocol: proto, PerPeer: 2048, Total: 16384}}, 0,
		func(l *rcmgr.ScalingLimitConfig) rcmgr.ConcreteLimitConfig { return l.Scale(64<<20, 1024) })
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits), opts...)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.ResourceManager(rm), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	srv.SetStreamHandler(proto, func(s network.Stream) {
		defer s.Close()
		_, _ = io.Copy(s, s)
	})
	cli, err := libp2p.New(libp2p.NoListenAddrs, libp2p.ResourceManager(&network.NullResourceManager{}), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cli.Connect(ctx, peer.AddrInfo{ID: srv.ID(), Addrs: srv.Addrs()}); err != nil {
		t.Fatal(err)
	}
	conn := cli.Network().ConnsToPeer(srv.ID())[0]

	echo := func(s network.Stream) error {
		if err := s.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
			return err
		}
		if _, err := s.Write([]byte{7}); err != nil {
			return err
		}
		var b [1]byte
		_, err := io.ReadFull(s, b[:])
		return err
	}
	var open []network.Stream
	refused := 0
	for range 600 {
		s, err := cli.NewStream(ctx, srv.ID(), proto)
		if err == nil {
			err = echo(s)
		}
		if err != nil {
			if s == nil {
				refused++
				continue
			}
			refused++
			_ = s.Reset()
			continue
		}
		open = append(open, s)
	}
	t.Logf("%d streams open, %d reset", len(open), refused)
	if conn.IsClosed() {
		t.Fatalf("the connection was closed (%d streams open, %d reset): a stream past the memory limit must be reset alone", len(open), refused)
	}
	if refused == 0 {
		t.Fatalf("all 600 streams were accepted: the limit did not apply")
	}
	if len(open) < 100 {
		t.Fatalf("only %d streams open: the bound is far below what memory covers", len(open))
	}
	for i, s := range open {
		if err := echo(s); err != nil {
			t.Fatalf("stream %d of %d no longer echoes: %v", i, len(open), err)
		}
	}
}
