package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBadInput checks that bad usage exits 2 with one line on stderr naming
// what was wrong, before any network activity; and that a runtime failure
// (a peer that cannot be found) exits 1.
func TestBadInput(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	absent := newNode(t, ctx) // a valid peer ID that is never online
	// A well-formed bootstrap multiaddr where nothing listens: the commands
	// below must fail before they would try it.
	unusedBoot := "/ip4/127.0.0.1/tcp/" + itoa(portOf(t, closedPortAddr(t))) + "/p2p/" + absent.id

	cases := []struct {
		name  string
		args  []string // after --home HOME
		setup func(t *testing.T, home string)
		want  []string // in the one line of stderr
	}{
		{
			name: "invalid peer ID",
			args: []string{"forward", "notapeer:22", "--bootstrap", unusedBoot, "--p2p-listen", p2pListen, noPortMap},
			want: []string{"notapeer"},
		},
		{
			name: "invalid multiaddr",
			args: []string{"forward", absent.id + ":22", "--bootstrap", "/ip4/1.2.3", "--p2p-listen", p2pListen, noPortMap},
			want: []string{"/ip4/1.2.3"},
		},
		{
			name: "malformed expose",
			args: []string{"serve", "--expose", "ssh=127.0.0.1:99999", "--bootstrap", unusedBoot, "--listen", p2pListen, noPortMap},
			want: []string{"99999"},
		},
		{
			name:  "unknown config key",
			args:  []string{"serve", "--bootstrap", unusedBoot, "--listen", p2pListen, noPortMap},
			setup: prependConfig("frobnicate = true\n"),
			want:  []string{"config.toml", "frobnicate"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			home := newNode(t, ctx).home
			if c.setup != nil {
				c.setup(t, home)
			}
			ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			res := run(t, ctx, append([]string{"--home", home}, c.args...)...)
			stderr := strings.TrimSuffix(res.stderr, "\n")
			if res.code != 2 || stderr == "" || strings.Contains(stderr, "\n") {
				t.Fatalf("exit %d, stderr:\n%s\nwant exit 2 and a single line on stderr", res.code, res.stderr)
			}
			for _, w := range c.want {
				if w == "config.toml" {
					w = filepath.Join(home, "config.toml")
				}
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q does not mention %q", stderr, w)
				}
			}
		})
	}

	t.Run("absent peer", func(t *testing.T) {
		boot := startBootstrap(t, ctx)
		ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		begin := time.Now()
		res := run(t, ctx, "--home", newNode(t, ctx).home, "forward", absent.id+":ssh",
			"--bootstrap", boot, "--p2p-listen", p2pListen, noPortMap, "--listen", tcpListen, "--timeout", "5s")
		took := time.Since(begin).Round(time.Millisecond)
		if res.code != 1 {
			t.Fatalf("exit %d after %v, stderr:\n%s\nwant exit 1", res.code, took, res.stderr)
		}
		// The error itself (the last line, after any log lines) names the
		// bootstrap peers it asked.
		lines := nonEmptyLines(res.stderr)
		if len(lines) == 0 || !strings.Contains(lines[len(lines)-1], peerOf(t, boot)) {
			t.Errorf("the last line of stderr does not name the bootstrap peer %s it tried:\n%s", peerOf(t, boot), res.stderr)
		}
		if strings.Contains(res.stdout, "forwarding") {
			t.Errorf("it said it was forwarding to a peer it did not find:\n%s", res.stdout)
		}
		t.Logf("gave up after %v", took)
	})
}

// prependConfig returns a setup that puts text at the top of home's
// config.toml (top-level keys must come before any table).
func prependConfig(text string) func(t *testing.T, home string) {
	return func(t *testing.T, home string) {
		t.Helper()
		path := filepath.Join(home, "config.toml")
		old, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, append([]byte(text), old...), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
