package e2e

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// demoPeerLine matches the report's lines naming the three peers.
var demoPeerLine = regexp.MustCompile(`(?m)^  (bootstrap|server|client) +(12D3KooW[1-9A-HJ-NP-Za-km-z]+) `)

// TestDemo runs the README's first command, `p2pnode demo`, as a newcomer
// would: it exits 0, says the bytes came back intact over a direct path
// between three peers, shows their peer IDs, logs nothing at the default
// level and writes nothing to the home directory. Bad flags exit 2.
func TestDemo(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	home := t.TempDir()
	res := run(t, ctx, "--home", home, "demo")
	if res.code != 0 {
		t.Fatalf("p2pnode demo: exit %d\nstdout:\n%s\nstderr:\n%s", res.code, res.stdout, res.stderr)
	}
	for _, want := range []string{"bytes intact (sha256 ", "connected by peer ID alone in ", ": direct, ", "p2pnode forward SERVER_ID:ssh"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, res.stdout)
		}
	}
	ids := map[string]string{}
	for _, m := range demoPeerLine.FindAllStringSubmatch(res.stdout, -1) {
		ids[m[2]] = m[1]
	}
	if len(ids) != 3 {
		t.Errorf("want three distinct peer IDs for bootstrap, server and client, got %v:\n%s", ids, res.stdout)
	}
	if res.stderr != "" {
		t.Errorf("stderr at the default log level, want none:\n%s", res.stderr)
	}
	if files, err := os.ReadDir(home); err != nil || len(files) != 0 {
		t.Errorf("home after demo: %v, %v; want it empty", files, err)
	}

	for _, args := range [][]string{{"--mib", "0"}, {"--timeout", "-1s"}, {"--frobnicate"}} {
		res := run(t, ctx, append([]string{"--home", home, "demo"}, args...)...)
		if stderr := strings.TrimSuffix(res.stderr, "\n"); res.code != 2 || stderr == "" || strings.Contains(stderr, "\n") {
			t.Errorf("demo %s: exit %d, stderr %q; want exit 2 and one line", strings.Join(args, " "), res.code, res.stderr)
		}
	}
}
