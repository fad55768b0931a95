package bootstrap

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	ma "github.com/multiformats/go-multiaddr"
)

const echoProto = "/p2pnode-test/echo"

func newHost(t *testing.T) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.EnableRelay(), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// relayed sets up relay r, a destination b with a reservation on r that
// echoes on echoProto, and a source a connected to b through r only.
func relayed(t *testing.T, authorize func(a, b peer.ID) []peer.ID) (a, b host.Host, conn network.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, a, b := newHost(t), newHost(t), newHost(t)
	svc, err := Start(r, Config{RelayAuthorized: authorize(a.ID(), b.ID())})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	b.SetStreamHandler(echoProto, func(s network.Stream) {
		_, _ = io.Copy(s, s)
		_ = s.CloseWrite()
	})
	rinfo := peer.AddrInfo{ID: r.ID(), Addrs: r.Addrs()}
	if err := b.Connect(ctx, rinfo); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Reserve(ctx, b, rinfo); err != nil {
		t.Fatalf("reserve: %v", err)
	}
	circuit := ma.StringCast("/p2p/" + r.ID().String() + "/p2p-circuit")
	var addrs []ma.Multiaddr
	for _, x := range r.Addrs() {
		addrs = append(addrs, x.Encapsulate(circuit))
	}
	if err := a.Connect(network.WithAllowLimitedConn(ctx, "test"), peer.AddrInfo{ID: b.ID(), Addrs: addrs}); err != nil {
		t.Fatalf("connect through relay: %v", err)
	}
	conns := a.Network().ConnsToPeer(b.ID())
	if len(conns) != 1 {
		t.Fatalf("%d connections from a to b, want 1 relayed", len(conns))
	}
	return a, b, conns[0]
}

// echo sends n random bytes to b over a new stream and reports whether they
// all came back intact.
func echo(t *testing.T, a host.Host, b peer.ID, n int) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(network.WithAllowLimitedConn(context.Background(), "test"), 20*time.Second)
	defer cancel()
	s, err := a.NewStream(ctx, b, echoProto)
	if err != nil {
		return err
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(20 * time.Second))
	data := make([]byte, n)
	_, _ = rand.Read(data)
	errc := make(chan error, 1)
	go func() {
		_, err := s.Write(data)
		if err == nil {
			err = s.CloseWrite()
		}
		errc <- err
	}()
	got, rerr := io.ReadAll(s)
	werr := <-errc
	if rerr != nil {
		return rerr
	}
	if werr != nil {
		return werr
	}
	if !bytes.Equal(got, data) {
		return io.ErrUnexpectedEOF
	}
	return nil
}

func TestTieredRelay(t *testing.T) {
	tests := []struct {
		name        string
		authorize   func(a, b peer.ID) []peer.ID
		wantLimited bool
	}{
		{"nobody authorized", func(a, b peer.ID) []peer.ID { return nil }, true},
		{"only the destination authorized", func(a, b peer.ID) []peer.ID { return []peer.ID{b} }, true},
		{"both ends authorized", func(a, b peer.ID) []peer.ID { return []peer.ID{a, b} }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b, conn := relayed(t, tt.authorize)
			if got := conn.Stat().Limited; got != tt.wantLimited {
				t.Fatalf("relayed connection Limited = %v, want %v", got, tt.wantLimited)
			}
			// Within the limit: always fine.
			if err := echo(t, a, b.ID(), 32<<10); err != nil {
				t.Fatalf("32 KiB echo: %v", err)
			}
			// 1 MiB is over the default 128 KiB limit.
			err := echo(t, a, b.ID(), 1<<20)
			if tt.wantLimited && err == nil {
				t.Fatal("1 MiB went through a limited circuit")
			}
			if !tt.wantLimited && err != nil {
				t.Fatalf("1 MiB through an unlimited circuit: %v", err)
			}
		})
	}
}
