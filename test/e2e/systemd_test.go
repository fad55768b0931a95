package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/p2pnode/p2pnode/internal/testenv"
)

// TestSystemdUnits checks configs/*.service with `systemd-analyze verify`
// (unknown keys and bad values are reported there) and that the hardening
// keeps the exposure score low, with ExecStart pointing at the binary under
// test rather than /usr/local/bin.
func TestSystemdUnits(t *testing.T) {
	ctx := testContext(t, time.Minute)
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		testenv.Missing(t, "systemd-analyze not found: install the systemd package to check the units")
	}
	units, err := filepath.Glob(filepath.Join("..", "..", "configs", "*.service"))
	if err != nil || len(units) < 2 {
		t.Fatalf("want configs/p2pnode.service and configs/bootstrap.service, found %v (%v)", units, err)
	}
	dir := t.TempDir()
	for _, u := range units {
		raw, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(raw), "/usr/local/bin/p2pnode") {
			t.Fatalf("%s does not run /usr/local/bin/p2pnode", u)
		}
		test := filepath.Join(dir, filepath.Base(u))
		if err := os.WriteFile(test, []byte(strings.ReplaceAll(string(raw), "/usr/local/bin/p2pnode", bin)), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.CommandContext(ctx, analyze, "verify", test).CombinedOutput()
		if err != nil || strings.Contains(string(out), filepath.Base(u)) {
			t.Errorf("systemd-analyze verify %s: %v\n%s", filepath.Base(u), err, out)
		}
		out, err = exec.CommandContext(ctx, analyze, "security", "--offline=yes", "--threshold=25", test).CombinedOutput()
		if err != nil {
			t.Errorf("systemd-analyze security %s: exposure above 2.5 (%v):\n%s", filepath.Base(u), err, out)
		}
	}
}
