//go:build natbench

package natlab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/p2pnode/p2pnode/internal/e2etest"
	"github.com/p2pnode/p2pnode/internal/netlab"
)

// initHome runs `p2pnode init` in a new home directory (removed when t
// ends) and returns the directory and the peer ID it created.
func initHome(t *testing.T) (home, id string) {
	t.Helper()
	// Not t.TempDir: its name grows with the subtest's, and serve puts a
	// Unix socket (path limit 108 bytes) in its home.
	home, err := os.MkdirTemp("", "natb-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--home", home, "init")
	cmd.Env = e2etest.ChildEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("p2pnode init: %v\n%s", err, stderr.String())
	}
	return home, strings.TrimSpace(string(out))
}

// procs is the set of p2pnode processes of one try. Unlike e2etest.Start's
// processes, one that does not stop cleanly does not fail the test: it is
// a note in the try's result.
type procs struct {
	ctx    context.Context // killed when cancelled: only a safety net, stop comes first
	cancel context.CancelFunc
	list   []*e2etest.Proc
}

// newProcs returns an empty set whose processes are stopped when t ends (if
// stopAll has not done it already). Create it after the lab, so that they
// stop before the lab is torn down.
func newProcs(t *testing.T) *procs {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ps := &procs{ctx: ctx, cancel: cancel}
	t.Cleanup(func() { ps.stopAll() })
	return ps
}

// start starts `p2pnode args...` inside h's namespace.
func (ps *procs) start(t *testing.T, h *netlab.Host, name string, args ...string) *e2etest.Proc {
	t.Helper()
	p, err := e2etest.Launch(ps.ctx, name, h.Command(ps.ctx, bin, args...))
	if err != nil {
		t.Fatal(err)
	}
	ps.list = append(ps.list, p)
	return p
}

// stopAll stops the processes, newest first, and returns a note for each
// one that did not end as asked (see e2etest.Proc.Stop). A second call
// returns no notes.
func (ps *procs) stopAll() []string {
	var notes []string
	for i := len(ps.list) - 1; i >= 0; i-- {
		if err := ps.list[i].Stop(); err != nil {
			notes = append(notes, err.Error())
		}
	}
	ps.cancel()
	return notes
}

// dump is every process's output, for a failed try's log.
func (ps *procs) dump() string {
	var b strings.Builder
	for _, p := range ps.list {
		fmt.Fprintf(&b, "--- %s\n%s\n", p.Describe(), p.Output())
	}
	return b.String()
}

// logField is the value of key in a line of slog's text format
// (`time=... level=INFO msg="relay reservation made" relay=...`), unquoted;
// "" if the line has no such key.
func logField(line, key string) string {
	for rest := line; rest != ""; {
		k, v, ok := strings.Cut(rest, "=")
		if !ok {
			return ""
		}
		var val string
		if strings.HasPrefix(v, `"`) {
			q, err := strconv.QuotedPrefix(v)
			if err != nil {
				return ""
			}
			val, _ = strconv.Unquote(q)
			rest = strings.TrimPrefix(v[len(q):], " ")
		} else {
			val, rest, _ = strings.Cut(v, " ")
		}
		if k == key {
			return val
		}
	}
	return ""
}

// logMsg matches slog text lines whose msg is msg.
func logMsg(msg string) func(string) bool {
	return func(line string) bool { return logField(line, "msg") == msg }
}

// directTransport is the transport of home's node's direct connection to
// peer, from `p2pnode status --json` ("" if it has none).
func directTransport(ctx context.Context, home, peer string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, "--home", home, "status", "--json")
	cmd.Env = e2etest.ChildEnv()
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("p2pnode status --json: %w", err)
	}
	var st struct {
		Connections []struct {
			Peer, Path, Transport string
		} `json:"connections"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return "", fmt.Errorf("p2pnode status --json: %w", err)
	}
	for _, c := range st.Connections {
		if c.Peer == peer && c.Path == "direct" {
			return c.Transport, nil
		}
	}
	return "", nil
}
