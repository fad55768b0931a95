// Command barestream is the minimal TCP-over-libp2p forwarder that
// bench/throughput.sh measures p2pnode against: the ceiling of the stack.
//
// Two go-libp2p hosts with the transports, security and muxer of node/
// (TCP + Noise + yamux, or QUIC), in two processes:
//
//	barestream serve -target 127.0.0.1:5201 -p2p-listen /ip4/127.0.0.1/tcp/0
//	    prints the host's full /p2p multiaddr, then, for every stream of
//	    /bench/bare/1.0.0, dials -target and copies both ways.
//	barestream forward -peer MULTIADDR/p2p/ID -listen 127.0.0.1:0
//	    connects to the peer, prints "listening 127.0.0.1:PORT", then opens
//	    one stream per accepted TCP connection and copies both ways.
//
// -security tls (on both) uses TLS 1.3 instead of Noise on TCP.
//
// Copying is io.Copy in each direction with CloseWrite at the end: no
// header, no access control, no pooling — only what any forwarder needs.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
)

const proto = protocol.ID("/bench/bare/1.0.0")

var security = new(string)

func main() {
	log.SetFlags(0)
	log.SetPrefix("barestream: ")
	if len(os.Args) < 2 {
		log.Fatal("usage: barestream serve|forward [flags]")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	fs.StringVar(security, "security", "noise", "noise (Noise, then TLS, as node/ does) or tls (TLS only)")
	switch os.Args[1] {
	case "serve":
		target := fs.String("target", "", "TCP address to forward each stream to")
		listen := fs.String("p2p-listen", "/ip4/127.0.0.1/tcp/0", "libp2p listen multiaddr")
		_ = fs.Parse(os.Args[2:])
		serve(ctx, *target, *listen)
	case "forward":
		peerAddr := fs.String("peer", "", "full multiaddr of the serve host, ending in /p2p/ID")
		listen := fs.String("listen", "127.0.0.1:0", "local TCP address to accept on")
		_ = fs.Parse(os.Args[2:])
		forward(ctx, *peerAddr, *listen)
	default:
		log.Fatalf("unknown role %q", os.Args[1])
	}
}

// newHost builds a host like node.New does, without the overlay services:
// TCP and QUIC, Noise then TLS, yamux, go-libp2p's default resource manager.
// -security tls puts TLS first (and alone), to compare with Noise on TCP.
func newHost(listen string) (host.Host, error) {
	sec := []libp2p.Option{libp2p.Security(noise.ID, noise.New), libp2p.Security(libp2ptls.ID, libp2ptls.New)}
	if *security == "tls" {
		sec = []libp2p.Option{libp2p.Security(libp2ptls.ID, libp2ptls.New)}
	}
	h, err := libp2p.New(append(sec,
		libp2p.ListenAddrStrings(listen),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.DisableRelay(),
	)...)
	if err != nil {
		return nil, err
	}
	return h, nil
}

func serve(ctx context.Context, target, listen string) {
	h, err := newHost(listen)
	if err != nil {
		log.Fatal(err)
	}
	defer h.Close()
	h.SetStreamHandler(proto, func(s network.Stream) {
		c, err := net.Dial("tcp", target)
		if err != nil {
			log.Printf("dial %s: %v", target, err)
			_ = s.Reset()
			return
		}
		pipe(c.(*net.TCPConn), s)
	})
	for _, a := range h.Addrs() {
		fmt.Printf("%s/p2p/%s\n", a, h.ID())
	}
	<-ctx.Done()
}

func forward(ctx context.Context, peerAddr, listen string) {
	m, err := ma.NewMultiaddr(peerAddr)
	if err != nil {
		log.Fatal(err)
	}
	ai, err := peer.AddrInfoFromP2pAddr(m)
	if err != nil {
		log.Fatal(err)
	}
	// Listen on the peer's transport so the one connection is of that kind.
	listenMA := "/ip4/127.0.0.1/tcp/0"
	if _, err := m.ValueForProtocol(ma.P_QUIC_V1); err == nil {
		listenMA = "/ip4/127.0.0.1/udp/0/quic-v1"
	}
	h, err := newHost(listenMA)
	if err != nil {
		log.Fatal(err)
	}
	defer h.Close()
	if err := h.Connect(ctx, *ai); err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		log.Fatal(err)
	}
	go func() { <-ctx.Done(); _ = ln.Close() }()
	fmt.Printf("listening %s\n", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			s, err := h.NewStream(ctx, ai.ID, proto)
			if err != nil {
				log.Printf("new stream: %v", err)
				_ = c.Close()
				return
			}
			pipe(c.(*net.TCPConn), s)
		}()
	}
}

// pipe copies both ways with plain io.Copy and passes each end of stream on
// as a close-write.
func pipe(c *net.TCPConn, s network.Stream) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(s, c)
		_ = s.CloseWrite()
	}()
	go func() {
		defer wg.Done()
		_, _ = io.Copy(c, s)
		_ = c.CloseWrite()
	}()
	wg.Wait()
	_ = c.Close()
	_ = s.Close()
}
