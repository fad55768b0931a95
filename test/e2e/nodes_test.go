package e2e

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/p2pnode/p2pnode/internal/e2etest"
)

// Flags that keep a node on loopback and off the user's router.
const (
	p2pListen  = "/ip4/127.0.0.1/tcp/0"
	noPortMap  = "--nat-port-map=false"
	tcpListen  = "127.0.0.1:0"
	lookupWait = 60 * time.Second // finding a peer through the DHT and connecting
)

// peerIDPattern matches a base58btc peer ID as printed by init and id.
var peerIDPattern = regexp.MustCompile(`^[1-9A-HJ-NP-Za-km-z]{46,}$`)

// node is an initialised home directory and the peer ID stored in it.
type node struct {
	home string
	id   string
}

// newNode runs `p2pnode init` in a fresh home and checks what it created.
func newNode(t testing.TB, ctx context.Context) node {
	t.Helper()
	home := t.TempDir()
	res := run(t, ctx, "--home", home, "init")
	if res.code != 0 {
		t.Fatalf("p2pnode init: exit %d\nstderr: %s", res.code, res.stderr)
	}
	id := strings.TrimSuffix(res.stdout, "\n")
	if !peerIDPattern.MatchString(id) {
		t.Fatalf("p2pnode init printed %q, want one line holding a peer ID", res.stdout)
	}
	key := filepath.Join(home, "identity.key")
	if fi, err := os.Stat(key); err != nil {
		t.Fatalf("after init: %v", err)
	} else if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Fatalf("%s has mode %#o, want 0600", key, perm)
	}
	if _, err := os.Stat(filepath.Join(home, "config.toml")); err != nil {
		t.Fatalf("after init: %v", err)
	}
	return node{home: home, id: id}
}

// startBootstrap starts a bootstrap node on loopback and returns the full
// /p2p multiaddr it prints for 127.0.0.1.
func startBootstrap(t testing.TB, ctx context.Context) string {
	t.Helper()
	_, addr := startBootstrapNode(t, ctx)
	return addr
}

// startBootstrapNode is startBootstrap that also returns the node's home.
func startBootstrapNode(t testing.TB, ctx context.Context) (node, string) {
	t.Helper()
	n := newNode(t, ctx)
	// Any free STUN port: tests run bootstrap nodes side by side.
	p := start(t, ctx, "bootstrap", "--home", n.home, "bootstrap", "--listen", p2pListen, noPortMap, "--stun-port", "0")
	return n, p.WaitLine(t, 30*time.Second, "a /ip4/127.0.0.1/tcp/PORT/p2p/"+n.id+" multiaddr", func(line string) bool {
		return strings.HasPrefix(line, "/ip4/127.0.0.1/tcp/") && strings.HasSuffix(line, "/p2p/"+n.id)
	})
}

// startServe runs `p2pnode serve` for n with bootstrap peer boot and extra
// flags (--expose, --allow, --public), and waits until it says it is ready.
func startServe(t testing.TB, ctx context.Context, n node, boot string, extra ...string) *e2etest.Proc {
	t.Helper()
	args := append([]string{"--home", n.home, "serve", "--listen", p2pListen, "--bootstrap", boot, noPortMap}, extra...)
	p := start(t, ctx, "serve", args...)
	line := p.WaitLine(t, 30*time.Second, `"peer ID: ..."`, func(line string) bool { return strings.HasPrefix(line, "peer ID: ") })
	if got := strings.TrimSpace(strings.TrimPrefix(line, "peer ID: ")); got != n.id {
		t.Fatalf("serve printed %q, want peer ID %s (from init)", line, n.id)
	}
	var before []string // the lines between "peer ID:" and "ready:"
	p.WaitLine(t, lookupWait, `"ready: ..."`, func(line string) bool {
		before = append(before, line)
		return strings.HasPrefix(line, "ready:")
	})
	// One line per service, before ready: each exposed name is mentioned.
	for i, a := range extra {
		if a != "--expose" || i+1 == len(extra) {
			continue
		}
		spec := strings.TrimPrefix(strings.TrimPrefix(extra[i+1], "udp:"), "tcp:")
		name, _, _ := strings.Cut(spec, "=")
		if !strings.Contains(strings.Join(before, "\n"), name) {
			t.Errorf("serve did not print a line for service %q before ready:\n%s", name, strings.Join(before, "\n"))
		}
	}
	return p
}

// spawnForward starts `p2pnode forward TARGET` for n, listening for TCP on
// an ephemeral loopback port, and returns at once; waitForwarding waits for
// it to have found the peer.
func spawnForward(t testing.TB, ctx context.Context, n node, boot, target string, extra ...string) *e2etest.Proc {
	t.Helper()
	args := append([]string{"--home", n.home, "forward", target,
		"--bootstrap", boot, "--p2p-listen", p2pListen, noPortMap, "--listen", tcpListen}, extra...)
	return start(t, ctx, "forward "+target, args...)
}

var forwardingLine = regexp.MustCompile(`^forwarding (127\.0\.0\.1:[0-9]+) -> (\S+)$`)

// waitForwarding waits for a forward's "forwarding 127.0.0.1:PORT ->
// PEERID:SERVICE" line and returns the local address.
func waitForwarding(t testing.TB, p *e2etest.Proc, target string) string {
	t.Helper()
	line := p.WaitLine(t, lookupWait, `"forwarding 127.0.0.1:PORT -> `+target+`"`, func(line string) bool {
		m := forwardingLine.FindStringSubmatch(line)
		return m != nil && m[2] == target
	})
	return forwardingLine.FindStringSubmatch(line)[1]
}

// startForward is spawnForward and waitForwarding.
func startForward(t testing.TB, ctx context.Context, n node, boot, target string, extra ...string) (*e2etest.Proc, string) {
	t.Helper()
	p := spawnForward(t, ctx, n, boot, target, extra...)
	return p, waitForwarding(t, p, target)
}

// forwardStdioArgs are the arguments of `p2pnode forward --stdio TARGET` for n.
func forwardStdioArgs(n node, boot, target string) []string {
	return []string{"--home", n.home, "forward", "--stdio",
		"--bootstrap", boot, "--p2p-listen", p2pListen, noPortMap, target}
}

// peerOf returns the peer ID at the end of a /p2p multiaddr.
func peerOf(t testing.TB, ma string) string {
	t.Helper()
	i := strings.LastIndex(ma, "/p2p/")
	if i < 0 {
		t.Fatalf("%q has no /p2p/ part", ma)
	}
	return ma[i+len("/p2p/"):]
}
