package overlay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"github.com/p2pnode/p2pnode/internal/testenv"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// onlyService exposes one allowed service on target.
func onlyService(name, target string) func(peer.ID) []Service {
	return func(client peer.ID) []Service {
		return []Service{{Name: name, Target: target, Allow: []peer.ID{client}}}
	}
}

func TestForwardHalfClose(t *testing.T) {
	data := randomBytes(3, 2<<20)
	tests := []struct {
		name string
		// target is the service; check drives the client side and gets
		// what the target reports.
		target func(c *net.TCPConn, report chan<- [32]byte)
		check  func(t *testing.T, c *net.TCPConn, report <-chan [32]byte)
	}{
		{
			// The target answers only after it sees EOF, so the client's
			// close-write has to cross both hops while the client still
			// reads.
			name: "reply after client close-write",
			target: func(c *net.TCPConn, _ chan<- [32]byte) {
				h := sha256.New()
				if _, err := io.Copy(h, c); err != nil {
					return
				}
				_, _ = c.Write(h.Sum(nil))
				_ = c.CloseWrite()
			},
			check: func(t *testing.T, c *net.TCPConn, _ <-chan [32]byte) {
				if _, err := c.Write(data); err != nil {
					t.Fatal(err)
				}
				if err := c.CloseWrite(); err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(c)
				if err != nil {
					t.Fatalf("reading the reply: %v", err)
				}
				if want := sum(data); !bytes.Equal(got, want[:]) {
					t.Fatalf("reply %x; want sha256 %x", got, want)
				}
			},
		},
		{
			// The target closes its write side first and still receives
			// everything sent afterwards.
			name: "target closes first, keeps receiving",
			target: func(c *net.TCPConn, report chan<- [32]byte) {
				if _, err := c.Write([]byte("greeting")); err != nil {
					return
				}
				if err := c.CloseWrite(); err != nil {
					return
				}
				b, err := io.ReadAll(c)
				if err != nil {
					return
				}
				report <- sum(b)
			},
			check: func(t *testing.T, c *net.TCPConn, report <-chan [32]byte) {
				got, err := io.ReadAll(c)
				if err != nil || string(got) != "greeting" {
					t.Fatalf("read %q, %v; want \"greeting\" and a clean EOF", got, err)
				}
				if _, err := c.Write(data); err != nil {
					t.Fatalf("writing after the target's close-write: %v", err)
				}
				if err := c.CloseWrite(); err != nil {
					t.Fatal(err)
				}
				select {
				case h := <-report:
					if h != sum(data) {
						t.Fatal("the target received different bytes than were sent")
					}
				case <-time.After(testTimeout):
					t.Fatal("the target never saw the end of the data")
				}
			},
		},
	}
	for _, tr := range transports {
		for _, tc := range tests {
			t.Run(tr+"/"+tc.name, func(t *testing.T) {
				report := make(chan [32]byte, 1)
				target := startTarget(t, func(c *net.TCPConn) { tc.target(c, report) })
				f := newFixture(t, tr, onlyService("svc", target))
				addr, _ := f.forward(t, "svc")
				tc.check(t, dialTCP(t, addr), report)
			})
		}
	}
}

// TestForwardThroughput sends 64 MiB each way at once through
// Forwarder.Serve, Server and a TCP target, and checks both by sha256.
func TestForwardThroughput(t *testing.T) {
	const size = 64 << 20
	testenv.SkipIfShort(t, "64 MiB transfer")
	up, down := randomBytes(4, size), randomBytes(5, size)
	type result struct {
		sum [32]byte
		err error
	}
	atTarget := make(chan result, 1)
	target := startTarget(t, func(c *net.TCPConn) {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Write(down); err == nil {
				_ = c.CloseWrite()
			}
		}()
		h := sha256.New()
		_, err := io.Copy(h, c)
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.err = err
		atTarget <- r
		wg.Wait()
	})
	f := newFixture(t, "tcp", onlyService("bulk", target))
	addr, _ := f.forward(t, "bulk")
	c := dialTCP(t, addr)

	start := time.Now()
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(up)
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	h := sha256.New()
	if _, err := io.Copy(h, c); err != nil {
		t.Fatalf("client read: %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("client write: %v", err)
	}
	r := <-atTarget
	elapsed := time.Since(start)
	if r.err != nil {
		t.Fatalf("target read: %v", r.err)
	}
	if r.sum != sum(up) {
		t.Error("upload arrived damaged")
	}
	if got := h.Sum(nil); !bytes.Equal(got, func() []byte { s := sum(down); return s[:] }()) {
		t.Error("download arrived damaged")
	}
	t.Logf("64 MiB each way in %v (%.0f MiB/s per direction)", elapsed.Round(time.Millisecond), float64(size>>20)/elapsed.Seconds())
}

func TestForwardResetPropagation(t *testing.T) {
	tests := []struct {
		name string
		// target serves one connection; it may report what it saw.
		target func(c *net.TCPConn, saw chan<- error)
		client func(t *testing.T, c *net.TCPConn, saw <-chan error)
	}{
		{
			name: "target resets",
			target: func(c *net.TCPConn, _ chan<- error) {
				buf := make([]byte, 5)
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
				_ = c.SetLinger(0)
				_ = c.Close() // RST
			},
			client: func(t *testing.T, c *net.TCPConn, _ <-chan error) {
				if _, err := c.Write([]byte("hello")); err != nil {
					t.Fatal(err)
				}
				_, err := io.ReadAll(c)
				if !errors.Is(err, syscall.ECONNRESET) {
					t.Fatalf("client read: %v; want ECONNRESET, not a clean end", err)
				}
			},
		},
		{
			name: "client resets",
			target: func(c *net.TCPConn, saw chan<- error) {
				buf := make([]byte, 5)
				if _, err := io.ReadFull(c, buf); err != nil {
					saw <- err
					return
				}
				saw <- nil // "hello" arrived; the client may reset now
				_, err := io.ReadAll(c)
				saw <- err
			},
			client: func(t *testing.T, c *net.TCPConn, saw <-chan error) {
				if _, err := c.Write([]byte("hello")); err != nil {
					t.Fatal(err)
				}
				if err := <-saw; err != nil {
					t.Fatalf("target: %v", err)
				}
				_ = c.SetLinger(0)
				_ = c.Close()
				select {
				case err := <-saw:
					if !errors.Is(err, syscall.ECONNRESET) {
						t.Fatalf("target read: %v; want ECONNRESET, not a clean end", err)
					}
				case <-time.After(testTimeout):
					t.Fatal("the target never saw the reset")
				}
			},
		},
	}
	for _, tr := range transports {
		for _, tc := range tests {
			t.Run(tr+"/"+tc.name, func(t *testing.T) {
				saw := make(chan error, 2)
				target := startTarget(t, func(c *net.TCPConn) { tc.target(c, saw) })
				f := newFixture(t, tr, onlyService("svc", target))
				addr, _ := f.forward(t, "svc")
				tc.client(t, dialTCP(t, addr), saw)
			})
		}
	}
}

// TestForwarderDialFailure: a connection that cannot be forwarded is closed
// and logged in one line; connections already open and later ones are not
// affected.
func TestForwarderDialFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	targetAddr := ln.Addr().String()
	// The target echoes connections until its listener is closed.
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(testTimeout))
				echo(c.(*net.TCPConn))
			}()
		}
	}()
	t.Cleanup(func() { _ = ln.Close() })

	f := newFixture(t, "tcp", onlyService("svc", targetAddr))
	addr, logs := f.forward(t, "svc")

	roundTrip := func(c *net.TCPConn, msg string) {
		t.Helper()
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo: %q, %v", buf, err)
		}
	}
	open := dialTCP(t, addr)
	roundTrip(open, "first")

	// Nothing listens at the target any more.
	_ = ln.Close()
	// The forward may reset the connection before connect(2) has returned
	// here: closed, as wanted.
	if failed, err := net.DialTimeout("tcp", addr, testTimeout); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatal(err)
	} else if err == nil {
		defer failed.Close()
		_ = failed.SetDeadline(time.Now().Add(testTimeout))
		if b, err := io.ReadAll(failed); err != nil && !isReset(err) || len(b) != 0 {
			t.Fatalf("the unforwardable connection got %q, %v; want it closed", b, err)
		}
	}
	waitUntil(5*time.Second, func() bool { return strings.Contains(logs.String(), "target unreachable") })
	out := logs.String()
	contains(t, "forwarder log", out, "connection not forwarded", "target unreachable", "connection refused")
	if n := strings.Count(out, "connection not forwarded"); n != 1 {
		t.Errorf("%d log lines for one failed connection; want 1:\n%s", n, out)
	}
	// The connection opened before still works.
	roundTrip(open, "second")
}

func TestForwarderStdio(t *testing.T) {
	echoAddr := startTarget(t, echo)
	f := newFixture(t, "tcp", func(client peer.ID) []Service {
		return []Service{
			{Name: "echo", Target: echoAddr, Allow: []peer.ID{client}},
			{Name: "closed", Target: echoAddr},
		}
	})
	fw := &Forwarder{Host: f.client, Peer: f.server.ID(), Service: "echo"}

	t.Run("echo", func(t *testing.T) {
		data := randomBytes(6, 1<<20)
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		done := make(chan error, 1)
		go func() { done <- fw.Stdio(context.Background(), inR, outW) }()
		go func() {
			_, _ = inW.Write(data)
			_ = inW.Close() // stdin EOF -> close-write on the stream
		}()
		got, err := io.ReadAll(outR) // stream EOF -> out closed
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("got %d bytes back that differ from the %d sent", len(got), len(data))
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Stdio = %v", err)
			}
		case <-time.After(testTimeout):
			t.Fatal("Stdio did not return")
		}
	})

	t.Run("refused", func(t *testing.T) {
		fw := *fw
		fw.Service = "closed"
		inR, _ := io.Pipe()
		_, outW := io.Pipe()
		err := fw.Stdio(context.Background(), inR, outW)
		var refused *RefusedError
		if !errors.As(err, &refused) || refused.Status != StatusDenied {
			t.Fatalf("Stdio = %v; want a denied *RefusedError", err)
		}
	})

	t.Run("cancel with stdin blocked", func(t *testing.T) {
		inR, inW := io.Pipe()
		t.Cleanup(func() { _ = inW.Close() }) // lets the reader goroutine end
		outR, outW := io.Pipe()
		go func() { _, _ = io.Copy(io.Discard, outR) }()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- fw.Stdio(ctx, inR, outW) }()
		// Cancel once the forward stream is open on the server side.
		if !waitUntil(5*time.Second, func() bool {
			for _, c := range f.server.Network().ConnsToPeer(f.client.ID()) {
				for _, s := range c.GetStreams() {
					if s.Protocol() == ProtocolID {
						return true
					}
				}
			}
			return false
		}) {
			t.Fatal("the forward stream never opened")
		}
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Stdio = %v; want context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Stdio did not return after its context was cancelled while stdin was blocked")
		}
	})
}

func TestServeStopsOnCancel(t *testing.T) {
	echoAddr := startTarget(t, echo)
	f := newFixture(t, "tcp", onlyService("echo", echoAddr))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fw := &Forwarder{Host: f.client, Peer: f.server.ID(), Service: "echo"}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fw.Serve(ctx, ln) }()

	c := dialTCP(t, ln.Addr().String())
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve = %v; want nil after cancel", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if _, err := io.ReadAll(c); !isReset(err) {
		t.Errorf("open connection after Serve returned: %v; want a reset", err)
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Error("the listener is still open after Serve returned")
	}
}

func TestForwarderCheck(t *testing.T) {
	h := newHost(t, "tcp")
	p := randomPeer(t)
	tests := []struct {
		name string
		fw   Forwarder
		want string
	}{
		{"no host", Forwarder{Peer: p, Service: "ssh"}, "Host is nil"},
		{"no peer", Forwarder{Host: h, Service: "ssh"}, "Peer is empty"},
		{"bad service", Forwarder{Host: h, Peer: p, Service: "a b"}, `service name "a b"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			err = tc.fw.Serve(context.Background(), ln)
			if err == nil {
				t.Fatal("Serve accepted a bad Forwarder")
			}
			contains(t, "Serve error", err.Error(), tc.want)
			if err := tc.fw.Stdio(context.Background(), strings.NewReader(""), nopWriteCloser{io.Discard}); err == nil {
				t.Fatal("Stdio accepted a bad Forwarder")
			}
		})
	}
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// TestServeShutdownGrace: after ctx ends, Serve accepts nothing new, lets an
// open connection go on for ShutdownGrace, then resets it.
func TestServeShutdownGrace(t *testing.T) {
	tests := []struct {
		name      string
		closeConn bool // the client finishes within the grace period
	}{
		{"connection finishes in time", true},
		{"connection outlives the grace period", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			echoAddr := startTarget(t, echo)
			f := newFixture(t, "tcp", onlyService("echo", echoAddr))
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			const grace = 500 * time.Millisecond
			fw := &Forwarder{Host: f.client, Peer: f.server.ID(), Service: "echo", ShutdownGrace: grace}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- fw.Serve(ctx, ln) }()

			c := dialTCP(t, ln.Addr().String())
			roundTrip := func(b byte) error {
				if _, err := c.Write([]byte{b}); err != nil {
					return err
				}
				_, err := io.ReadFull(c, make([]byte, 1))
				return err
			}
			if err := roundTrip('a'); err != nil {
				t.Fatal(err)
			}
			cancel()
			// Stopped accepting at once...
			if !waitUntil(2*time.Second, func() bool {
				c2, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second)
				if err == nil {
					c2.Close()
				}
				return err != nil
			}) {
				t.Error("the listener still accepts after ctx ended")
			}
			// ...while the open connection keeps working.
			if err := roundTrip('b'); err != nil {
				t.Fatalf("open connection during the grace period: %v", err)
			}
			start := time.Now()
			if tc.closeConn {
				_ = c.CloseWrite()
				if _, err := io.ReadAll(c); err != nil {
					t.Errorf("closing within the grace period: %v", err)
				}
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Serve = %v; want nil", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Serve did not return after the grace period")
			}
			took := time.Since(start)
			if tc.closeConn && took >= grace {
				t.Errorf("Serve returned %v after the last connection closed; want at once", took)
			}
			if !tc.closeConn {
				if took < grace/2 {
					t.Errorf("Serve returned after %v, before the %v grace period", took, grace)
				}
				if _, err := io.ReadAll(c); !isReset(err) {
					t.Errorf("connection after the grace period: %v; want a reset", err)
				}
			}
		})
	}
}

// waitUntil polls cond every 10 ms until it holds or d passes.
func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}
