package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestInitAndID checks that init creates an identity (newNode checks the
// files) whose peer ID `id` prints again, with --home and with P2PNODE_HOME.
func TestInitAndID(t *testing.T) {
	ctx := testContext(t, time.Minute)
	n := newNode(t, ctx)
	other := newNode(t, ctx)
	if n.id == other.id {
		t.Fatalf("two homes got the same peer ID %s", n.id)
	}

	res := run(t, ctx, "--home", n.home, "id")
	if res.code != 0 || strings.TrimSpace(res.stdout) != n.id {
		t.Errorf("p2pnode --home H id: exit %d, stdout %q, stderr %q; want %s", res.code, res.stdout, res.stderr, n.id)
	}
	res = runEnv(t, ctx, []string{"P2PNODE_HOME=" + n.home}, "id")
	if res.code != 0 || strings.TrimSpace(res.stdout) != n.id {
		t.Errorf("P2PNODE_HOME=H p2pnode id: exit %d, stdout %q, stderr %q; want %s", res.code, res.stdout, res.stderr, n.id)
	}
}

// TestCompletion: shell completion scripts for the shells users have.
func TestCompletion(t *testing.T) {
	ctx := testContext(t, time.Minute)
	for _, shell := range []string{"bash", "zsh", "fish"} {
		res := run(t, ctx, "--home", t.TempDir(), "completion", shell)
		if res.code != 0 || !strings.Contains(res.stdout, "p2pnode") {
			t.Errorf("p2pnode completion %s: exit %d, %d bytes of script; stderr %q", shell, res.code, len(res.stdout), res.stderr)
		}
	}
}

// TestLogFormatJSON: --log-format json makes every log line on stderr a
// JSON object, go-libp2p's included.
func TestLogFormatJSON(t *testing.T) {
	ctx := testContext(t, time.Minute)
	bootNode, boot := startBootstrapNode(t, ctx)
	res := run(t, ctx, "--home", t.TempDir(), "--log-format", "json", "-vv", "ping", bootNode.id, "--count", "1",
		"--bootstrap", boot, "--p2p-listen", p2pListen, noPortMap)
	if res.code != 0 {
		t.Fatalf("ping: exit %d: %s", res.code, res.stderr)
	}
	libp2p := false
	for _, l := range nonEmptyLines(res.stderr) {
		var v map[string]any
		if err := json.Unmarshal([]byte(l), &v); err != nil || v["msg"] == nil {
			t.Errorf("log line is not a JSON record: %q", l)
		}
		_, ok := v["logger"] // go-libp2p's subsystem, through our handler
		libp2p = libp2p || ok
	}
	if !libp2p {
		t.Error("no go-libp2p log line (with a logger field) at -vv")
	}
	if res := run(t, ctx, "--home", t.TempDir(), "--log-format", "yaml", "id"); res.code != 2 {
		t.Errorf("--log-format yaml: exit %d, want 2", res.code)
	}
}
