package e2e

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestServeRestart: the serving node stops and starts again with the same
// identity (on another port); the forward that kept running finds it again
// for the next TCP connection, and a connection tried while it was down is
// closed promptly with a clear log line.
func TestServeRestart(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	tg := startTarget(t, func(c *net.TCPConn) { _, _ = io.Copy(c, c); _ = c.CloseWrite() })
	boot := startBootstrap(t, ctx)
	client, server := newNode(t, ctx), newNode(t, ctx)
	args := []string{"--expose", "echo=" + tg.Addr, "--allow", client.id}
	srv := startServe(t, ctx, server, boot, args...)
	fwd, addr := startForward(t, ctx, client, boot, server.id+":echo")

	echoOnce := func(word string) error {
		c := dial(t, addr, 30*time.Second)
		defer c.Close()
		if _, err := c.Write([]byte(word)); err != nil {
			return err
		}
		_ = c.CloseWrite()
		got, err := io.ReadAll(c)
		if err == nil && string(got) != word {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	if err := echoOnce("first"); err != nil {
		t.Fatalf("before the restart: %v", err)
	}

	stop(t, srv)
	start := time.Now()
	if err := echoOnce("while down"); err == nil {
		t.Fatal("a connection went through while the serving node was down")
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("the connection tried while the serving node was down took %v to fail", took)
	}
	fwd.WaitStderr(t, 10*time.Second, "connection not forwarded")
	if !strings.Contains(fwd.Stderr.String(), server.id) {
		t.Errorf("forward's log does not name the unreachable peer %s:\n%s", server.id, fwd.Stderr.String())
	}

	startServe(t, ctx, server, boot, args...)
	if err := echoOnce("after the restart"); err != nil {
		t.Fatalf("after the restart, through the same forward: %v\n--- forward's log:\n%s", err, fwd.Stderr.String())
	}
}
