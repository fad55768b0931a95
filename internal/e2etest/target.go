package e2etest

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/p2pnode/p2pnode/internal/netlab"
)

// Target is a TCP server standing for a local service that a node exposes
// (or must never reach).
type Target struct {
	Addr    string // HOST:PORT it listens on
	Port    int    // Addr's port
	accepts atomic.Int64
}

// Serve accepts connections on l and runs handle (if not nil) for each in
// its own goroutine, closing the connection when handle returns. When t
// ends it closes l and every open connection and waits for the handlers, so
// that none outlives the test.
func Serve(t testing.TB, l net.Listener, handle func(c *net.TCPConn)) *Target {
	t.Helper()
	tg := &Target{Addr: l.Addr().String(), Port: l.Addr().(*net.TCPAddr).Port}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			tg.accepts.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				if handle != nil {
					handle(c.(*net.TCPConn))
				}
			}()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return tg
}

// Accepts is how many connections the target has accepted.
func (tg *Target) Accepts() int64 { return tg.accepts.Load() }

// ListenIn listens on 127.0.0.1:0 inside h's network namespace, which the
// socket stays in whatever goroutine uses it. It fails t on error and
// closes the listener when t ends.
func ListenIn(t testing.TB, h *netlab.Host) net.Listener {
	t.Helper()
	var l net.Listener
	NetnsDo(t, h, func() (err error) {
		l, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	})
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// NetnsDo runs f inside h's network namespace (netlab.Host.Do) and fails t
// if f returns an error.
func NetnsDo(t testing.TB, h *netlab.Host, f func() error) {
	t.Helper()
	if err := h.Do(f); err != nil {
		t.Fatalf("in %s: %v", h, err)
	}
}
