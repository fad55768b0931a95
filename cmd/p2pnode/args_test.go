package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/p2pnode/p2pnode/config"
	"github.com/p2pnode/p2pnode/node"
)

func newPeerID(t *testing.T) string {
	t.Helper()
	_, pub, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id.String()
}

type result struct {
	code           int
	stdout, stderr string
}

// runIn runs the CLI in-process with --home home.
func runIn(t *testing.T, home string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code := run(ctx, append([]string{"--home", home}, args...), &out, &errb)
	return result{code, out.String(), errb.String()}
}

// Bad input is refused before anything starts: exit code 2 and one line
// that names what was wrong; commands that need the daemon say so (exit 1).
func TestArgumentErrors(t *testing.T) {
	id := newPeerID(t)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"nat", "--stun", "stun.example"}, 2, "bad --stun: \"stun.example\" is not HOST:PORT"},
		{[]string{"nat", "--stun", "203.0.113.7:0"}, 2, "port \"0\" is not a number from 1 to 65535"},
		{[]string{"nat", "--timeout", "0s"}, 2, "bad --timeout"},
		{[]string{"nat", "extra"}, 2, "usage: p2pnode nat"},
		{[]string{"bootstrap", "--stun-alt-ip", "nope"}, 2, "bad --stun-alt-ip"},
		{[]string{"bootstrap", "--stun-port", "70000"}, 2, "bad --stun-port 70000"},
		{[]string{"forward"}, 2, "usage: p2pnode forward"},
		{[]string{"forward", "notapeer:22"}, 2, "notapeer"},
		{[]string{"forward", id}, 2, "expected PEERID:SERVICE"},
		{[]string{"forward", id + ":22", "--timeout", "0s"}, 2, "--timeout"},
		{[]string{"forward", id + ":22", "--grace", "-1s"}, 2, "--grace"},
		{[]string{"forward", id + ":22", "--stdio", "--udp"}, 2, "--stdio and --udp"},
		{[]string{"forward", id + ":22", "--stdio", "--listen", "127.0.0.1:1"}, 2, "--stdio and --listen"},
		{[]string{"forward", id + ":22", "--persist", "--udp"}, 2, "--persist"},
		{[]string{"forward", id + ":22", "--listen", "nonsense"}, 2, "--listen"},
		{[]string{"forward", "--close", "127.0.0.1:1", id + ":22"}, 2, "usage"},
		{[]string{"forward", id + ":22", "--persist"}, 1, "--persist needs a running `p2pnode serve`"},
		{[]string{"forward", "--close", "127.0.0.1:1"}, 1, "no p2pnode serve is running"},
		{[]string{"ping", "notapeer"}, 2, "notapeer"},
		{[]string{"ping", id, "--count", "0"}, 2, "--count"},
		{[]string{"ping", id, "--count", "101"}, 2, "--count"},
		{[]string{"ping", id, "--timeout", "-1s"}, 2, "--timeout"},
		{[]string{"find", "no spaces"}, 2, "bad name"},
		{[]string{"find", "movie-night", "--timeout", "0s"}, 2, "--timeout"},
		{[]string{"status"}, 1, "no p2pnode serve or bootstrap is running"},
		{[]string{"status", "extra"}, 2, "usage"},
		{[]string{"serve", "--allow", id}, 2, "--allow applies to --expose services"},
		{[]string{"serve", "--expose", "ssh=host"}, 2, "expose"},
		{[]string{"serve", "--expose", "22", "--allow", "notapeer"}, 2, "notapeer"},
		{[]string{"serve", "--grace", "-1s"}, 2, "--grace"},
		{[]string{"serve", "--advertise", "no spaces"}, 2, "--advertise"},
		{[]string{"serve", "--listen", "/ip4/1.2.3"}, 2, "/ip4/1.2.3"},
		{[]string{"serve", "--bootstrap", "/ip4/127.0.0.1/tcp/1"}, 2, "--bootstrap"},
		{[]string{"serve", "--metrics", "nonsense"}, 2, "--metrics"},
		{[]string{"bootstrap", "--max-peers", "0"}, 2, "--max-peers"},
		{[]string{"bootstrap", "--relay-allow", "notapeer"}, 2, "notapeer"},
		{[]string{"--log-format", "xml", "id"}, 2, "--log-format"},
		{[]string{"id"}, 2, "identity"},
		{[]string{"frobnicate"}, 1, "unknown command"},
		{[]string{"ping", id, "--frobnicate"}, 2, "frobnicate"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			home := t.TempDir()
			res := runIn(t, home, tc.args...)
			line := strings.TrimSpace(res.stderr)
			if res.code != tc.code || !strings.Contains(line, tc.want) || strings.Contains(line, "\n") {
				t.Errorf("exit %d, stderr %q; want exit %d and one line saying %q", res.code, res.stderr, tc.code, tc.want)
			}
			if entries, _ := os.ReadDir(home); tc.code == 2 && len(entries) > 0 {
				t.Errorf("bad input left %v in the home directory", entries)
			}
		})
	}
}

func TestInitThenID(t *testing.T) {
	home := t.TempDir()
	first := runIn(t, home, "init")
	again := runIn(t, home, "init")
	id := runIn(t, home, "id")
	if first.code != 0 || again.stdout != first.stdout || id.stdout != first.stdout || !strings.HasPrefix(first.stdout, "12D3KooW") {
		t.Errorf("init %+v, init again %+v, id %+v: want one peer ID, three times", first, again, id)
	}
	if res := runIn(t, home, "id", "--cid"); res.code != 0 || strings.ToLower(res.stdout) != res.stdout {
		t.Errorf("id --cid: %+v, want a lower-case CID", res)
	}
}

// A config file with a problem is bad input that names the file and the key.
func TestConfigErrors(t *testing.T) {
	home := t.TempDir()
	path := filepath.Join(home, config.FileName)
	if err := os.WriteFile(path, []byte("[node]\nfrobnicate = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	res := runIn(t, home, "serve")
	if res.code != 2 || !strings.Contains(res.stderr, path) || !strings.Contains(res.stderr, "frobnicate") {
		t.Errorf("serve with a bad config: %+v, want exit 2 naming %s and the key", res, path)
	}
}

// nodeConfigFor parses args with command use's node flags and returns the
// node.Config of role r from file.
func nodeConfigFor(t *testing.T, r role, file *config.File, args ...string) (node.Config, error) {
	t.Helper()
	var nf nodeFlags
	cmd := &cobra.Command{Use: "x"}
	listenName := "listen"
	if r == roleClient {
		listenName = "p2p-listen"
	}
	nf.register(cmd.Flags(), listenName, true)
	if err := cmd.Flags().Parse(args); err != nil {
		t.Fatal(err)
	}
	return nf.nodeConfig(&globalFlags{}, file, r)
}

func TestNodeConfigByRole(t *testing.T) {
	boot := "/ip4/127.0.0.1/tcp/4001/p2p/" + newPeerID(t)
	withBoot := config.Default()
	withBoot.Node.Bootstrap = []string{boot}
	bootListen := config.Default()
	bootListen.Bootstrap.Listen = []string{"/ip4/0.0.0.0/tcp/4101"}

	addrs := func(c node.Config) []string {
		var out []string
		for _, a := range c.ListenAddrs {
			out = append(out, a.String())
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		role  role
		file  *config.File
		args  []string
		check func(node.Config) bool
	}{
		{"client: ephemeral ports, DHT client, no public addresses", roleClient, withBoot, nil, func(c node.Config) bool {
			return c.DHTMode == node.DHTModeClient && c.ClientOnly && slices.Equal(addrs(c), addrs(node.Config{ListenAddrs: node.EphemeralListenAddrs()})) &&
				len(c.BootstrapPeers) == 1 && !c.Standalone && !c.ReserveRelays
		}},
		{"client: --p2p-listen", roleClient, withBoot, []string{"--p2p-listen", "/ip4/127.0.0.1/tcp/0"}, func(c node.Config) bool {
			return slices.Equal(addrs(c), []string{"/ip4/127.0.0.1/tcp/0"})
		}},
		{"serve: config's listen addresses, relay reservations", roleServe, withBoot, nil, func(c node.Config) bool {
			return c.ReserveRelays && c.DHTMode == node.DHTModeAuto && len(c.ListenAddrs) == len(withBoot.Node.Listen) && c.NATPortMap
		}},
		{"serve: flags override the file", roleServe, withBoot, []string{"--nat-port-map=false", "--bootstrap", "/ip4/127.0.0.2/tcp/1/p2p/" + newPeerID(t)}, func(c node.Config) bool {
			return !c.NATPortMap && len(c.BootstrapPeers) == 1 && c.BootstrapPeers[0].Addrs[0].String() == "/ip4/127.0.0.2/tcp/1"
		}},
		{"bootstrap: DHT server, standalone without bootstrap peers, [bootstrap] listen", roleBootstrap, bootListen, nil, func(c node.Config) bool {
			return c.DHTMode == node.DHTModeServer && c.Standalone && slices.Equal(addrs(c), []string{"/ip4/0.0.0.0/tcp/4101"})
		}},
		{"bootstrap: joins configured bootstrap peers", roleBootstrap, withBoot, nil, func(c node.Config) bool {
			return !c.Standalone && len(c.BootstrapPeers) == 1
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := nodeConfigFor(t, tc.role, tc.file, tc.args...)
			if err != nil || !tc.check(c) {
				t.Errorf("node config %+v, err %v: not what role %d with %v should give", c, err, tc.role, tc.args)
			}
		})
	}
}
