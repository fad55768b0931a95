package overlay

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2pquic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
)

// The benchmarks below run the whole forward path in one process, the way
// `p2pnode forward` and `p2pnode serve` do in two: a TCP client, a
// Forwarder, a libp2p connection (TCP + Noise + yamux, or QUIC), a Server,
// and a TCP target. Profile them with, for example:
//
//	go test -run '^$' -bench 'Forward/tcp' -benchtime 3s -cpuprofile /tmp/cpu.out ./overlay/
//	go tool pprof -top /tmp/cpu.out
//
// bench/throughput.sh measures the built binary against ssh -L and friends.

// benchHost builds a loopback host with node/'s transport, security and
// muxer choices.
func benchHost(b *testing.B, transport string) host.Host {
	b.Helper()
	opts := []libp2p.Option{
		libp2p.DisableRelay(),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
	}
	switch transport {
	case "tcp":
		opts = append(opts, libp2p.Transport(tcp.NewTCPTransport), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	case "quic":
		opts = append(opts, libp2p.Transport(libp2pquic.NewTransport), libp2p.ListenAddrStrings("/ip4/127.0.0.1/udp/0/quic-v1"))
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = h.Close() })
	return h
}

// benchForward starts a target running handle, a Server exposing it as
// "bench" and a Forwarder to it; it returns the forwarder's local address.
func benchForward(b *testing.B, transport string, handle func(net.Conn)) string {
	b.Helper()
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = tl.Close() })
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); handle(c) }()
		}
	}()
	client, server := benchHost(b, transport), benchHost(b, transport)
	log := slog.New(slog.DiscardHandler)
	srv, err := NewServer(server, []Service{{Name: "bench", Target: tl.Addr().String(), Public: true}}, WithLogger(log))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = srv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := client.Connect(ctx, peer.AddrInfo{ID: server.ID(), Addrs: server.Addrs()}); err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	fw := &Forwarder{Host: client, Peer: server.ID(), Service: "bench", Logger: log}
	sctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = fw.Serve(sctx, ln) }()
	b.Cleanup(func() { stop(); <-done })
	return ln.Addr().String()
}

const benchChunk = 1 << 20

// reportCPU reports the process's CPU time (user + system) per op, the
// measure that matters most on a shared or busy machine, where MB/s mostly
// says how much CPU the benchmark got. Call the returned func at the end.
func reportCPU(b *testing.B) func() {
	start := cpuTime()
	return func() {
		b.ReportMetric(float64((cpuTime()-start).Microseconds())/float64(b.N), "cpu-µs/op")
	}
}

// BenchmarkForward moves bytes through a forward: "up" from the forwarding
// side's client to the target, "down" from the target to the client. One
// op is 1 MiB; each run is one TCP connection.
func BenchmarkForward(b *testing.B) {
	for _, tr := range transports {
		b.Run(tr+"/up", func(b *testing.B) {
			got := make(chan int64, 1)
			addr := benchForward(b, tr, func(c net.Conn) {
				n, _ := io.Copy(io.Discard, c)
				got <- n
			})
			buf := make([]byte, benchChunk)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			b.SetBytes(benchChunk)
			b.ResetTimer()
			defer reportCPU(b)()
			for range b.N {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			_ = c.(*net.TCPConn).CloseWrite()
			select {
			case n := <-got:
				if n != int64(b.N)*benchChunk {
					b.Fatalf("target got %d bytes, want %d", n, int64(b.N)*benchChunk)
				}
			case <-time.After(testTimeout):
				b.Fatal("target did not see the end of the upload")
			}
		})
		b.Run(tr+"/down", func(b *testing.B) {
			total := make(chan int64, 1)
			addr := benchForward(b, tr, func(c net.Conn) {
				buf := make([]byte, benchChunk)
				n := <-total
				for sent := int64(0); sent < n; sent += benchChunk {
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			})
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			b.SetBytes(benchChunk)
			b.ResetTimer()
			defer reportCPU(b)()
			total <- int64(b.N) * benchChunk
			n, err := io.Copy(io.Discard, c)
			if err != nil || n != int64(b.N)*benchChunk {
				b.Fatalf("client got %d bytes (%v), want %d", n, err, int64(b.N)*benchChunk)
			}
		})
	}
}

// BenchmarkForwardSetup measures one new forwarded connection over an
// existing peer connection: connect, one byte to the target's echo and back.
func BenchmarkForwardSetup(b *testing.B) {
	for _, tr := range transports {
		b.Run(tr, func(b *testing.B) {
			addr := benchForward(b, tr, func(c net.Conn) { _, _ = io.Copy(c, c) })
			one := []byte{1}
			b.ResetTimer()
			for i := range b.N {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.Write(one); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, one); err != nil {
					b.Fatal(fmt.Errorf("connection %d: %w", i, err))
				}
				_ = c.Close()
			}
		})
	}
}
