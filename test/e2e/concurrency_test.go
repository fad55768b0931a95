package e2e

import (
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// TestManyConnections: one forward carries hundreds of TCP connections at
// once (go-libp2p's default resource limits allow about 70 streams of one
// protocol per peer), every byte intact.
func TestManyConnections(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	tg := startTarget(t, func(c *net.TCPConn) { _, _ = io.Copy(c, c); _ = c.CloseWrite() })
	boot := startBootstrap(t, ctx)
	client, server := newNode(t, ctx), newNode(t, ctx)
	startServe(t, ctx, server, boot, "--expose", "echo="+tg.Addr, "--allow", client.id)
	_, addr := startForward(t, ctx, client, boot, server.id+":echo")

	const conns, size = 300, 64 << 10
	// All connections are open before any sends, so that they are
	// concurrent for real.
	open := make([]*net.TCPConn, conns)
	for i := range open {
		open[i] = dial(t, addr, 2*time.Minute)
	}
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i, c := range open {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			sent, received, err := exchange(c, pseudoRandom(fmt.Sprint(i), size))
			switch {
			case err != nil:
				errs <- fmt.Errorf("connection %d: %w", i, err)
			case sent != received || received.n != size:
				errs <- fmt.Errorf("connection %d: sent %v, got back %v", i, sent, received)
			}
		}()
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if failed < 5 {
			t.Error(err)
		}
		failed++
	}
	if failed > 0 {
		t.Fatalf("%d of %d concurrent connections failed", failed, conns)
	}
	if tg.Accepts() != conns {
		t.Errorf("the target saw %d connections, want %d", tg.Accepts(), conns)
	}
}
