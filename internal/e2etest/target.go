package e2etest

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
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
