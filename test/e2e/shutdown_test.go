package e2e

import (
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/p2pnode/p2pnode/internal/e2etest"
)

// TestGracefulShutdown: on SIGINT, serve and forward stop taking new
// connections but let an open one finish, then exit 0; a second SIGINT makes
// them exit at once.
func TestGracefulShutdown(t *testing.T) {
	for _, who := range []string{"forward", "serve"} {
		t.Run(who, func(t *testing.T) {
			ctx := testContext(t, 2*time.Minute)
			tg := startTarget(t, func(c *net.TCPConn) { _, _ = io.Copy(c, c); _ = c.CloseWrite() })
			boot := startBootstrap(t, ctx)
			client, server := newNode(t, ctx), newNode(t, ctx)
			srv := startServe(t, ctx, server, boot, "--expose", "echo="+tg.Addr, "--allow", client.id, "--grace", "30s")
			fwd, addr := startForward(t, ctx, client, boot, server.id+":echo", "--grace", "30s")
			victim := map[string]*e2etest.Proc{"forward": fwd, "serve": srv}[who]

			c := dial(t, addr, time.Minute)
			roundTrip := func(word string) {
				t.Helper()
				if _, err := c.Write([]byte(word)); err != nil {
					t.Fatalf("write: %v", err)
				}
				buf := make([]byte, len(word))
				if _, err := io.ReadFull(c, buf); err != nil || string(buf) != word {
					t.Fatalf("echo: got %q, %v; want %q", buf, err, word)
				}
			}
			roundTrip("before the signal")
			victim.Signal(t, syscall.SIGINT)
			victim.WaitStderr(t, 10*time.Second, "shutting down")
			roundTrip("after the first signal")
			if who == "forward" {
				if c2, err := net.DialTimeout("tcp", addr, 2*time.Second); err == nil {
					c2.Close()
					t.Error("forward still accepts connections after SIGINT")
				}
			}
			// Closing the last connection lets the process exit, with 0.
			_ = c.CloseWrite()
			if _, err := io.ReadAll(c); err != nil {
				t.Errorf("finishing the open connection: %v", err)
			}
			victim.WaitExit(t, 10*time.Second, 0)
		})
	}
	t.Run("second signal", func(t *testing.T) {
		ctx := testContext(t, 2*time.Minute)
		tg := startTarget(t, func(c *net.TCPConn) { _, _ = io.Copy(c, c); _ = c.CloseWrite() })
		boot := startBootstrap(t, ctx)
		client, server := newNode(t, ctx), newNode(t, ctx)
		startServe(t, ctx, server, boot, "--expose", "echo="+tg.Addr, "--allow", client.id)
		fwd, addr := startForward(t, ctx, client, boot, server.id+":echo", "--grace", "5m")
		c := dial(t, addr, time.Minute)
		defer c.Close()
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		fwd.Signal(t, syscall.SIGINT)
		fwd.WaitStderr(t, 10*time.Second, "shutting down")
		fwd.Signal(t, syscall.SIGINT)
		fwd.WaitExit(t, 5*time.Second, 1)
		fwd.WaitStderr(t, time.Second, "second signal")
	})
}
