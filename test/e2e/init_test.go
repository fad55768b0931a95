package e2e

import (
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
