package overlay

import (
	"bytes"
	"context"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pquic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
)

// newDualHost builds a loopback host with TCP and QUIC, as p2pnode runs by
// default.
func newDualHost(t *testing.T) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.DisableRelay(), libp2p.DisableMetrics(),
		libp2p.Transport(tcp.NewTCPTransport), libp2p.Transport(libp2pquic.NewTransport),
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"))
	if err != nil {
		t.Fatalf("libp2p.New: %v", err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

// addrsOf returns h's listen addresses over transport ("tcp", "quic-v1").
func addrsOf(t *testing.T, h host.Host, transport string) []ma.Multiaddr {
	t.Helper()
	var out []ma.Multiaddr
	for _, a := range h.Addrs() {
		if _, err := a.ValueForProtocol(ma.ProtocolWithName(transport).Code); err == nil {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		t.Fatalf("host has no %s address in %v", transport, h.Addrs())
	}
	return out
}

// dualConnected returns two dual-transport hosts, client and server, with a
// TCP and a QUIC connection between them, as after a hole punch where both
// sides' dials got through. go-libp2p never dials a peer it has a direct
// connection to, and cancels the other dials once one succeeds, so the two
// connections come from dials in both directions at once: client to
// server over TCP, server to client over QUIC. When one side's dial saw the
// other's connection first (a race), it tries again with new hosts.
func dualConnected(t *testing.T) (client, server host.Host, conns map[string]network.Conn) {
	t.Helper()
	for try := range 10 {
		if try > 0 {
			t.Logf("try %d: only %v", try, conns)
		}
		client, server = newDualHost(t), newDualHost(t)
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		errs := make(chan error, 2)
		go func() { errs <- client.Connect(ctx, peer.AddrInfo{ID: server.ID(), Addrs: addrsOf(t, server, "tcp")}) }()
		go func() {
			errs <- server.Connect(ctx, peer.AddrInfo{ID: client.ID(), Addrs: addrsOf(t, client, "quic-v1")})
		}()
		for range 2 {
			if err := <-errs; err != nil {
				cancel()
				t.Fatalf("connect: %v", err)
			}
		}
		cancel()
		conns = map[string]network.Conn{}
		for _, c := range client.Network().ConnsToPeer(server.ID()) {
			conns[ConnTransport(c)] = c
		}
		if conns["tcp"] != nil && conns["quic-v1"] != nil {
			return client, server, conns
		}
		_ = client.Close()
		_ = server.Close()
	}
	t.Fatal("no TCP and QUIC connection pair in 10 tries")
	return nil, nil, nil
}

// holdStreams opens n streams on c that stay open until the test ends, so
// that go-libp2p's own choice (the connection with the most streams) is c.
func holdStreams(t *testing.T, client, server host.Host, c network.Conn, n int) {
	t.Helper()
	const hold = "/p2pnode/test/hold"
	server.SetStreamHandler(hold, func(s network.Stream) { _, _ = io.Copy(io.Discard, s); _ = s.Reset() })
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for range n {
		s, err := newStreamOn(ctx, client, c, hold)
		if err != nil {
			t.Fatalf("open a stream on the %s connection: %v", ConnTransport(c), err)
		}
		if _, err := s.Write([]byte{1}); err != nil { // sends the lazy handshake
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Reset() })
	}
}

// echoOver sends data through s and checks that the echo comes back whole.
func echoOver(t *testing.T, s network.Stream, data []byte) {
	t.Helper()
	_ = s.SetDeadline(time.Now().Add(testTimeout))
	go func() { _, _ = s.Write(data); _ = s.CloseWrite() }()
	got, err := io.ReadAll(s)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("echo over the %s connection: %d of %d bytes, %v", ConnTransport(s.Conn()), len(got), len(data), err)
	}
}

func TestForwardPrefersTCP(t *testing.T) {
	client, server, conns := dualConnected(t)
	echoAddr := startTarget(t, echo)
	srv, err := NewServer(server, []Service{{Name: "echo", Target: echoAddr, Public: true}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	holdStreams(t, client, server, conns["quic-v1"], 3)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	// go-libp2p alone puts the stream on QUIC (it has the most streams)...
	onQUIC, err := Dial(ctx, client, server.ID(), "echo", WithPreferTransports())
	if err != nil {
		t.Fatal(err)
	}
	if got := ConnTransport(onQUIC.Conn()); got != "quic-v1" {
		t.Fatalf("without a preference the stream went over %s; the test needs go-libp2p to pick quic-v1", got)
	}
	// ... a forward, by default, on TCP; and the stream already open on
	// QUIC keeps working there.
	onTCP, err := DialEarly(ctx, client, server.ID(), "echo", WithAllowLimitedConn())
	if err != nil {
		t.Fatal(err)
	}
	if got := ConnTransport(onTCP.Conn()); got != "tcp" {
		t.Errorf("forward stream over %s, want tcp", got)
	}
	want := []Carrier{{"tcp", "direct", 1}, {"quic-v1", "direct", 1}}
	if got := Carriers(client, server.ID()); !sameCarriers(got, want) {
		t.Errorf("Carriers = %+v, want %+v", got, want)
	}
	data := randomBytes(11, 1<<20)
	echoOver(t, onTCP, data)
	echoOver(t, onQUIC, data)

	// A QUIC-first preference is honoured too.
	s, err := Dial(ctx, client, server.ID(), "echo", WithPreferTransports("quic-v1", "tcp"))
	if err != nil {
		t.Fatal(err)
	}
	if got := ConnTransport(s.Conn()); got != "quic-v1" {
		t.Errorf("with quic-v1 preferred the stream went over %s", got)
	}
	_ = s.Reset()

	// What a user sees: a Forwarder's connection counted under tcp.
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	forwardEcho(t, &Forwarder{Host: client, Peer: server.ID(), Service: "echo", Metrics: m}, data)
	if got := value(t, m.conns.WithLabelValues("forward", "echo", "direct", "tcp")); got != 1 {
		t.Errorf(`connections_total{path="direct",transport="tcp"} = %v, want 1`, got)
	}
}

func TestForwardQUICOnly(t *testing.T) {
	client, server := newDualHost(t), newDualHost(t)
	echoAddr := startTarget(t, echo)
	srv, err := NewServer(server, []Service{{Name: "echo", Target: echoAddr, Public: true}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	// Both listen on TCP too, but the only connection is QUIC.
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := client.Connect(ctx, peer.AddrInfo{ID: server.ID(), Addrs: addrsOf(t, server, "quic-v1")}); err != nil {
		t.Fatal(err)
	}

	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	forwardEcho(t, &Forwarder{Host: client, Peer: server.ID(), Service: "echo", Metrics: m}, randomBytes(12, 1<<20))
	if got := value(t, m.conns.WithLabelValues("forward", "echo", "direct", "quic-v1")); got != 1 {
		t.Errorf(`connections_total{path="direct",transport="quic-v1"} = %v, want 1`, got)
	}
	if n := len(client.Network().ConnsToPeer(server.ID())); n != 1 {
		t.Errorf("%d connections to the server after the forward, want the one QUIC connection", n)
	}
}

func TestNewStreamOnNotSupported(t *testing.T) {
	client, _, conns := dualConnected(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	_, err := newStreamOn(ctx, client, conns["tcp"], ProtocolID)
	if !isNotSupported(err) {
		t.Fatalf("stream for a protocol the peer does not serve: err = %v, want not supported", err)
	}
}

func TestWithPreferTransportsRejectsUnknown(t *testing.T) {
	if _, err := newDialConfig([]DialOption{WithPreferTransports("tcp", "carrier-pigeon")}); err == nil {
		t.Fatal("unknown transport name accepted")
	}
}

// forwardEcho runs f.Serve on a loopback port, echoes data through one
// connection (the forward counts it when its stream opens).
func forwardEcho(t *testing.T, f *Forwarder, data []byte) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	c := dialTCP(t, ln.Addr().String())
	go func() { _, _ = c.Write(data); _ = c.CloseWrite() }()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("echo through the forward: %d of %d bytes, %v", len(got), len(data), err)
	}
}

// sameCarriers compares carrier lists in any order.
func sameCarriers(a, b []Carrier) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}
