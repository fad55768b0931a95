package overlay

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pquic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
)

// testTimeout bounds every network wait in a test.
const testTimeout = 20 * time.Second

// transports are the libp2p transports the end-to-end tests run over: TCP
// (Noise + yamux, whose half-close is a FIN frame) and QUIC (native stream
// FIN and RESET_STREAM).
var transports = []string{"tcp", "quic"}

// newHost builds a plain go-libp2p host on loopback with one transport.
func newHost(t *testing.T, transport string) host.Host {
	t.Helper()
	opts := []libp2p.Option{libp2p.DisableRelay(), libp2p.DisableMetrics()}
	switch transport {
	case "tcp":
		opts = append(opts, libp2p.Transport(tcp.NewTCPTransport), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	case "quic":
		opts = append(opts, libp2p.Transport(libp2pquic.NewTransport), libp2p.ListenAddrStrings("/ip4/127.0.0.1/udp/0/quic-v1"))
	default:
		t.Fatalf("unknown transport %q", transport)
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		t.Fatalf("libp2p.New: %v", err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

// connect connects a to b.
func connect(t *testing.T, a, b host.Host) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := a.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err != nil {
		t.Fatalf("connect: %v", err)
	}
}

// randomPeer returns a valid peer ID that no host in the test has.
func randomPeer(t *testing.T) peer.ID {
	t.Helper()
	sk, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(sk)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// logBuffer collects log output from several goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// newLogger returns a debug logger into a buffer that is printed if the test
// fails.
func newLogger(t *testing.T, name string) (*slog.Logger, *logBuffer) {
	t.Helper()
	buf := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log:\n%s", name, buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// startTarget runs handle for every connection accepted on a loopback TCP
// listener until the test ends; it returns the listener's address. handle's
// connection is closed when handle returns.
func startTarget(t *testing.T, handle func(c *net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(testTimeout))
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					_ = c.Close()
				}()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// echo copies everything back and then closes its write side: the reply to
// a close-write is a close-write.
func echo(c *net.TCPConn) {
	_, _ = io.Copy(c, c)
	_ = c.CloseWrite()
}

// startSpy starts a listener that only counts connections; a forward server
// must never connect to it.
func startSpy(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	addr := startTarget(t, func(*net.TCPConn) { n.Add(1) })
	return addr, &n
}

// closedPort returns a loopback address with nothing listening.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// fixture is a client host connected to a server host running a Server.
type fixture struct {
	client, server host.Host
	srv            *Server
	serverLog      *logBuffer
}

// newFixture builds two hosts, connects them and starts a Server whose
// services come from mkServices (which gets the client's peer ID for allow
// lists).
func newFixture(t *testing.T, transport string, mkServices func(client peer.ID) []Service, opts ...ServerOption) *fixture {
	t.Helper()
	f := &fixture{client: newHost(t, transport), server: newHost(t, transport)}
	log, buf := newLogger(t, "server")
	f.serverLog = buf
	srv, err := NewServer(f.server, mkServices(f.client.ID()), append([]ServerOption{WithLogger(log)}, opts...)...)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	f.srv = srv
	connect(t, f.client, f.server)
	return f
}

// forward runs Forwarder.Serve for service on a loopback port until the test
// ends and returns the port's address and the forwarder's log.
func (f *fixture) forward(t *testing.T, service string) (string, *logBuffer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log, buf := newLogger(t, "forwarder "+service)
	fw := &Forwarder{Host: f.client, Peer: f.server.ID(), Service: service, Logger: log}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fw.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve returned %v", err)
			}
		case <-time.After(testTimeout):
			t.Errorf("Serve did not return after its context was cancelled")
		}
	})
	return ln.Addr().String(), buf
}

// dialTCP connects to addr with a deadline on the whole connection.
func dialTCP(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	t.Cleanup(func() { _ = c.Close() })
	return c.(*net.TCPConn)
}

// randomBytes returns n deterministic pseudo-random bytes.
func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	var s [32]byte
	s[0] = byte(seed)
	_, _ = mrand.NewChaCha8(s).Read(b)
	return b
}

// sum is the sha256 of b.
func sum(b []byte) [32]byte { return sha256.Sum256(b) }

// isReset reports whether err is an abort rather than a clean end.
func isReset(err error) bool {
	return err != nil && !errors.Is(err, io.EOF)
}

// contains fails the test unless s contains every part.
func contains(t *testing.T, what, s string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(s, p) {
			t.Errorf("%s = %q; want it to contain %q", what, s, p)
		}
	}
}
