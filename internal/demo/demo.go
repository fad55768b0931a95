// Package demo is `p2pnode demo`: p2pnode's main job on one machine, in one
// process. A bootstrap node, a serving node that exposes an echo target, and
// a forwarding node that finds the serving one by peer ID alone (through the
// bootstrap node's DHT) and carries bytes to the target and back through a
// local TCP port. All on 127.0.0.1, with no other peer, no port mapping and
// no files.
package demo

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/p2pnode/p2pnode/bootstrap"
	"github.com/p2pnode/p2pnode/node"
	"github.com/p2pnode/p2pnode/overlay"
)

// Service is the name the serving node exposes the echo target under.
const Service = "echo"

// Config says how much data the demo moves and how long it may take; the
// zero value is ready for use.
type Config struct {
	// Logger receives the nodes' logs; nil means slog.Default().
	Logger *slog.Logger
	// Bytes go to the echo target and back; 0 means 16 MiB.
	Bytes int64
	// Timeout bounds everything before Hold; 0 means 60 s.
	Timeout time.Duration
	// Hold, if not nil, is called with the report while the nodes and the
	// forward still run; Run stops them when Hold returns.
	Hold func(Report)
}

// Report is what the demo did and measured. Path, Transport (tcp,
// quic-v1, as in the multiaddr) and RemoteAddr are the client's connection
// to the server; ConnectTime is the client's Connect by peer ID (DHT
// lookup and dial); FirstByte and Transfer run from the TCP connect to the
// forward to the first and the last byte back.
type Report struct {
	Bootstrap, Server, Client        peer.ID
	Target, Forward                  string // the echo target's and the forward's TCP addresses
	Path                             node.Path
	Transport, RemoteAddr            string
	ConnectTime, FirstByte, Transfer time.Duration
	Bytes                            int64             // came back
	Sum                              [sha256.Size]byte // of what came back
	Intact                           bool              // it is what was sent
}

// Run starts the nodes and the echo target, connects the client to the
// server by peer ID, moves cfg.Bytes through the forward and back, calls
// cfg.Hold and stops everything. Its errors name the step that failed and
// wrap ctx's error when the timeout or ctx ended it.
func Run(ctx context.Context, cfg Config) (Report, error) {
	cfg.Bytes, cfg.Timeout = cmp.Or(cfg.Bytes, 16<<20), cmp.Or(cfg.Timeout, time.Minute)
	d := &demo{log: cfg.Logger}
	defer d.close()
	checks, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	fw, err := d.start(checks)
	if err != nil {
		return d.rep, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return d.rep, fmt.Errorf("demo: listen for the forward: %w", err)
	}
	d.rep.Forward = ln.Addr().String()
	serveCtx, stopServe := context.WithCancel(ctx) // outlives checks during Hold
	served := make(chan error, 1)
	go func() { served <- fw.Serve(serveCtx, ln) }()
	d.later(func() { stopServe(); <-served })

	if err := d.transfer(checks, cfg.Bytes); err != nil {
		return d.rep, fmt.Errorf("demo: send %d bytes through the forward on %s: %w", cfg.Bytes, d.rep.Forward, err)
	}
	if !d.rep.Intact {
		return d.rep, fmt.Errorf("demo: sent %d bytes, %d came back, not the same (sha256 %x)", cfg.Bytes, d.rep.Bytes, d.rep.Sum[:8])
	}
	if cfg.Hold != nil {
		cfg.Hold(d.rep)
	}
	return d.rep, nil
}

// demo is one Run: its report so far, and the stops of what it started.
type demo struct {
	log   *slog.Logger
	rep   Report
	stops []func()
}

func (d *demo) later(stop func()) { d.stops = append(d.stops, stop) }

func (d *demo) close() {
	for i := len(d.stops) - 1; i >= 0; i-- {
		d.stops[i]()
	}
}

// node starts a node with a fresh identity on loopback TCP and QUIC.
func (d *demo) node(role string, cfg node.Config) (*node.Node, error) {
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return nil, fmt.Errorf("demo: generate the %s node's identity: %w", role, err)
	}
	cfg.Identity, cfg.Logger = key, d.log
	cfg.ListenAddrs = []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0"), ma.StringCast("/ip4/127.0.0.1/udp/0/quic-v1")}
	n, err := node.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("demo: start the %s node: %w", role, err)
	}
	d.later(func() { _ = n.Close() })
	return n, nil
}

// start brings up the bootstrap node (as `p2pnode bootstrap` does), the
// forwarding node, and the serving one, then connects the forwarding node
// to the serving one by peer ID.
func (d *demo) start(ctx context.Context) (*overlay.Forwarder, error) {
	boot, err := d.node("bootstrap", node.Config{DHTMode: node.DHTModeServer, Standalone: true, HostOptions: bootstrap.HostOptions()})
	if err != nil {
		return nil, err
	}
	svc, err := bootstrap.Start(boot.Host, bootstrap.Config{Logger: d.log})
	if err != nil {
		return nil, fmt.Errorf("demo: start the relay: %w", err)
	}
	d.later(func() { _ = svc.Close() })
	d.rep.Bootstrap = boot.ID()
	joined := []peer.AddrInfo{{ID: boot.ID(), Addrs: boot.Host.Addrs()}}
	identified, err := boot.Host.EventBus().Subscribe(new(event.EvtPeerIdentificationCompleted))
	if err != nil {
		return nil, fmt.Errorf("demo: watch the bootstrap node: %w", err)
	}
	defer identified.Close()

	// The client first: the server's allow list names it.
	client, err := d.node("forwarding", node.Config{BootstrapPeers: joined, DHTMode: node.DHTModeClient, ClientOnly: true})
	if err != nil {
		return nil, err
	}
	server, err := d.serve(joined, client.ID())
	if err != nil {
		return nil, err
	}
	// The bootstrap node tells others where the server is once identify
	// has given it the server's addresses (a real serve is long up).
	for seen := false; !seen; {
		select {
		case ev := <-identified.Out():
			seen = ev.(event.EvtPeerIdentificationCompleted).Peer == server.ID()
		case <-ctx.Done():
			return nil, fmt.Errorf("demo: the serving node did not join the bootstrap node: %w", ctx.Err())
		}
	}
	d.later(func() {
		// A node that closes pushes its emptied address list to the others
		// (identify push), and one that reads it while the connection goes
		// logs a warning: noise at the end of a demo.
		for _, n := range []*node.Node{boot, server, client} {
			n.Host.RemoveStreamHandler(identify.IDPush)
		}
	})
	began := time.Now()
	if d.rep.Path, err = client.Connect(ctx, server.ID()); err != nil {
		return nil, fmt.Errorf("demo: connect to the serving node by peer ID: %w", err)
	}
	d.rep.ConnectTime = time.Since(began)
	for _, c := range client.Status().Connections {
		if c.Peer == server.ID() && c.Path == d.rep.Path {
			d.rep.Transport, d.rep.RemoteAddr = c.Transport, c.RemoteAddr
		}
	}
	return &overlay.Forwarder{Host: client.Host, Peer: server.ID(), Service: Service, Logger: d.log,
		DialOptions: []overlay.DialOption{overlay.WithAllowLimitedConn()}}, nil
}

// serve starts the echo target and the serving node that exposes it to
// client only, holding a relay reservation as `p2pnode serve` does.
func (d *demo) serve(joined []peer.AddrInfo, client peer.ID) (*node.Node, error) {
	target, err := d.echo()
	if err != nil {
		return nil, err
	}
	server, err := d.node("serving", node.Config{BootstrapPeers: joined, ReserveRelays: true})
	if err != nil {
		return nil, err
	}
	d.rep.Client, d.rep.Server, d.rep.Target = client, server.ID(), target
	expose := []overlay.Service{{Name: Service, Target: target, Allow: []peer.ID{client}}}
	srv, err := overlay.NewServer(server.Host, expose, overlay.WithLogger(d.log))
	if err != nil {
		return nil, fmt.Errorf("demo: expose the echo target: %w", err)
	}
	d.later(func() { _ = srv.Close() })
	return server, nil
}

// transfer sends size pseudo-random bytes through the forward while it
// reads back what the echo target returns (writing all first would stall
// on the TCP buffers), and fills in the report's figures.
func (d *demo) transfer(ctx context.Context, size int64) error {
	var dialer net.Dialer
	c, err := dialer.DialContext(ctx, "tcp", d.rep.Forward)
	if err != nil {
		return err
	}
	defer c.Close()
	defer context.AfterFunc(ctx, func() { _ = c.Close() })()
	began := time.Now()
	sent, got := sha256.New(), sha256.New()
	wrote := make(chan error, 1)
	go func() {
		_, err := io.Copy(c, io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{}), size), sent))
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		wrote <- err
	}()
	first := make([]byte, 1)
	if _, err = io.ReadFull(c, first); err == nil {
		d.rep.FirstByte = time.Since(began)
		got.Write(first)
		d.rep.Bytes, err = io.Copy(got, c)
		d.rep.Bytes++
		d.rep.Transfer = time.Since(began)
	}
	if err != nil {
		_ = c.Close() // unblocks the writer
	}
	if err = errors.Join(err, <-wrote); err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	copy(d.rep.Sum[:], got.Sum(nil))
	d.rep.Intact = err == nil && d.rep.Bytes == size && d.rep.Sum == [sha256.Size]byte(sent.Sum(nil))
	return err
}

// echo serves a TCP echo target on 127.0.0.1 until the demo stops: each
// connection gets back what it sends, and its end of stream.
func (d *demo) echo() (addr string, err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("demo: listen for the echo target: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for c, err := ln.Accept(); err == nil; c, err = ln.Accept() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				defer context.AfterFunc(ctx, func() { _ = c.Close() })()
				if _, err := io.Copy(c, c); err == nil {
					_ = c.(*net.TCPConn).CloseWrite()
				}
			}()
		}
	}()
	d.later(func() { cancel(); _ = ln.Close(); wg.Wait() })
	return ln.Addr().String(), nil
}
