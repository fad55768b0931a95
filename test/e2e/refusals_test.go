package e2e

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/p2pnode/p2pnode/internal/e2etest"
)

// TestRefusals checks that a serving node refuses what it must — a peer not
// on the allow list, a service it does not expose, a target that is down —
// that the forwarding side says why, and that no request makes the serving
// node connect anywhere it was not told to expose.
func TestRefusals(t *testing.T) {
	ctx := testContext(t, 5*time.Minute)

	// exposed is the only target the serving node may ever connect to, and
	// only for allowed peers; notExposed must never see a connection.
	exposed := startTarget(t, func(c *net.TCPConn) { _, _ = io.Copy(c, c) })
	notExposed := startTarget(t, nil)
	dead := closedPortAddr(t)

	boot := startBootstrap(t, ctx)
	server := newNode(t, ctx)
	stranger := newNode(t, ctx)
	friends := []node{newNode(t, ctx), newNode(t, ctx), newNode(t, ctx), newNode(t, ctx)}
	serveArgs := []string{"--expose", "open=" + exposed.Addr, "--expose", "dead=" + dead}
	for _, f := range friends {
		serveArgs = append(serveArgs, "--allow", f.id)
	}
	startServe(t, ctx, server, boot, serveArgs...)

	cases := []struct {
		name    string
		from    node
		service string
		want    string // in forward's stderr
	}{
		{"peer not on the allow list", stranger, "open", "denied"},
		{"service not exposed", friends[0], "nosuch", "no such service"},
		{"port not exposed, by number", friends[1], itoa(notExposed.Port), "no such service"},
		{"nothing listening at the target", friends[2], "dead", "target unreachable"},
	}
	// Start every forward first, so that they find the server concurrently.
	fwds := make([]*e2etest.Proc, len(cases))
	for i, c := range cases {
		fwds[i] = spawnForward(t, ctx, c.from, boot, server.id+":"+c.service)
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			addr := waitForwarding(t, fwds[i], server.id+":"+c.service)
			expectClosed(t, addr, 30*time.Second)
			fwds[i].WaitStderr(t, 30*time.Second, c.want)
		})
	}

	t.Run("stdio, peer not on the allow list", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, lookupWait+30*time.Second)
		defer cancel()
		res := run(t, ctx, forwardStdioArgs(newNode(t, ctx), boot, server.id+":open")...)
		lines := nonEmptyLines(res.stderr)
		if res.code == 0 || len(lines) != 1 || !strings.Contains(lines[0], "denied") {
			t.Fatalf("forward --stdio: exit %d, stderr %q; want a non-zero exit and one line saying denied", res.code, res.stderr)
		}
	})

	if n := exposed.Accepts(); n != 0 {
		t.Errorf("the exposed target accepted %d connections for peers that were refused, want 0", n)
	}
	if n := notExposed.Accepts(); n != 0 {
		t.Errorf("a target that was never exposed accepted %d connections, want 0", n)
	}

	// The control: an allowed peer does get through, so the counts above
	// would have seen a connection.
	t.Run("allowed peer gets through", func(t *testing.T) {
		_, addr := startForward(t, ctx, friends[3], boot, server.id+":open")
		c := dial(t, addr, 30*time.Second)
		msg := "ping through the overlay\n"
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
			t.Fatalf("echo: got %q, %v; want %q", got, err, msg)
		}
		if n := exposed.Accepts(); n != 1 {
			t.Errorf("the exposed target accepted %d connections, want 1", n)
		}
	})
}

// nonEmptyLines splits s into lines, dropping empty ones.
func nonEmptyLines(s string) []string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	return lines
}
