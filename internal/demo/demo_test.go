package demo

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/p2pnode/p2pnode/node"
)

// testConfig is a quick demo whose logs go to t.
func testConfig(t *testing.T) Config {
	t.Helper()
	return Config{Logger: slog.New(slog.NewTextHandler(tWriter{t}, nil)), Bytes: 1 << 20, Timeout: 30 * time.Second}
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// TestRun: the report says what a user reads first: bytes intact, a direct
// path, three peers.
func TestRun(t *testing.T) {
	r, err := Run(testContext(t), testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	if !r.Intact || r.Bytes != 1<<20 {
		t.Errorf("%d bytes back (sha256 %x), intact %v; want 1 MiB intact", r.Bytes, r.Sum, r.Intact)
	}
	if r.Path != node.PathDirect || r.Transport == "" {
		t.Errorf("path %q over %q, want direct over a named transport", r.Path, r.Transport)
	}
	ids := map[string]bool{r.Bootstrap.String(): true, r.Server.String(): true, r.Client.String(): true}
	if len(ids) != 3 || ids[""] {
		t.Errorf("peer IDs %s, %s, %s; want three distinct ones", r.Bootstrap, r.Server, r.Client)
	}

	var out strings.Builder
	Print(&out, r)
	for _, want := range []string{"bytes intact (sha256 ", ": direct, ", r.Bootstrap.String(), r.Server.String(), r.Client.String(),
		"p2pnode serve --bootstrap", "p2pnode forward SERVER_ID:ssh"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

// TestHold: while Hold runs, the forward's port reaches the echo target;
// once Run returns, nothing listens there any more.
func TestHold(t *testing.T) {
	cfg := testConfig(t)
	held := false
	cfg.Hold = func(r Report) {
		held = true
		c, err := net.DialTimeout("tcp", r.Forward, 10*time.Second)
		if err != nil {
			t.Errorf("dial the forward during Hold: %v", err)
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "hello\n"); err != nil {
			t.Errorf("write: %v", err)
		}
		if line, err := bufio.NewReader(c).ReadString('\n'); line != "hello\n" {
			t.Errorf("echo through the forward = %q, %v; want hello", line, err)
		}
	}
	r, err := Run(testContext(t), cfg)
	if err != nil || !held {
		t.Fatalf("Run: %v; Hold called: %v", err, held)
	}
	if c, err := net.DialTimeout("tcp", r.Forward, 10*time.Second); err == nil {
		c.Close()
		t.Errorf("the forward on %s still accepts after Run returned", r.Forward)
	}
}

// TestRunCancelled: a demo cut short says so, with ctx's error.
func TestRunCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(testContext(t))
	cancel()
	if _, err := Run(ctx, testConfig(t)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run with a cancelled context = %v, want an error wrapping context.Canceled", err)
	}
}
