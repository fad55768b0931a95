package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// statusJSON is the part of `p2pnode status --json` these tests read.
type statusJSON struct {
	PeerID            string   `json:"peer_id"`
	Reachability      string   `json:"reachability"`
	ReachabilitySince string   `json:"reachability_since"`
	ListenAddrs       []string `json:"listen_addrs"`
	AdvertisedAddrs   []string `json:"advertised_addrs"`
	NATMapping        struct {
		TCP string `json:"tcp"`
		UDP string `json:"udp"`
	} `json:"nat_mapping"`
	RelayReservations []struct {
		Relay string `json:"relay"`
	} `json:"relay_reservations"`
	BootstrapPeers []struct {
		Peer      string `json:"peer"`
		Connected bool   `json:"connected"`
		Relay     string `json:"relay"`
	} `json:"bootstrap_peers"`
	NAT         *natReport `json:"nat"`
	Connections []struct {
		Peer       string  `json:"peer"`
		RemoteAddr string  `json:"remote_addr"`
		Transport  string  `json:"transport"`
		Path       string  `json:"path"`
		Direction  string  `json:"direction"`
		OpenedAt   string  `json:"opened_at"`
		RTTMillis  float64 `json:"rtt_ms"`
	} `json:"connections"`
	PersistentForwards []struct {
		Listen string `json:"listen"`
		Target string `json:"target"`
		Peer   string `json:"peer"`
	} `json:"persistent_forwards"`
}

// statusOf runs `p2pnode status --json` in n's home.
func statusOf(t *testing.T, ctx context.Context, n node) (statusJSON, string) {
	t.Helper()
	res := run(t, ctx, "--home", n.home, "status", "--json")
	if res.code != 0 {
		t.Fatalf("p2pnode status --json: exit %d\nstderr: %s", res.code, res.stderr)
	}
	var st statusJSON
	if err := json.Unmarshal([]byte(res.stdout), &st); err != nil {
		t.Fatalf("p2pnode status --json printed no status JSON (%v):\n%s", err, res.stdout)
	}
	return st, res.stdout
}

// connection returns the path and transport of st's connection to peer
// ("" if none).
func connection(st statusJSON, peer string) (path, transport string) {
	for _, c := range st.Connections {
		if c.Peer == peer {
			return c.Path, c.Transport
		}
	}
	return "", ""
}

// waitStatus polls n's status until ok accepts it.
func waitStatus(t *testing.T, ctx context.Context, n node, what string, ok func(statusJSON) bool) statusJSON {
	t.Helper()
	var st statusJSON
	var raw string
	if !waitFor(30*time.Second, func() bool {
		st, raw = statusOf(t, ctx, n)
		return ok(st)
	}) {
		t.Fatalf("status of %s never showed %s; last:\n%s", n.id, what, raw)
	}
	return st
}

// TestStatusAndPing runs `status` and `ping` against a running bootstrap
// node and serve, through their control sockets, and `ping` with a node of
// its own where no daemon runs.
func TestStatusAndPing(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)

	bootNode := newNode(t, ctx)
	bp := start(t, ctx, "bootstrap", "--home", bootNode.home, "bootstrap", "--listen", p2pListen, noPortMap, "--stun-port", "0")
	boot := bp.WaitLine(t, 30*time.Second, "a /ip4/127.0.0.1/tcp/PORT/p2p/"+bootNode.id+" multiaddr", func(line string) bool {
		return strings.HasPrefix(line, "/ip4/127.0.0.1/tcp/") && strings.HasSuffix(line, "/p2p/"+bootNode.id)
	})
	srv := newNode(t, ctx)
	sp := startServe(t, ctx, srv, boot)

	// The control socket is the user's alone.
	sock := filepath.Join(srv.home, "control.sock")
	if fi, err := os.Lstat(sock); err != nil {
		t.Fatalf("serve made no control socket: %v", err)
	} else if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %v, want a socket with mode 0600", sock, fi.Mode())
	}

	// The bootstrap node is public by its operator's word, and sees serve's
	// connection as direct.
	bst := waitStatus(t, ctx, bootNode, "reachability public and a direct connection from serve", func(st statusJSON) bool {
		path, _ := connection(st, srv.id)
		return st.Reachability == "public" && path == "direct"
	})
	if bst.PeerID != bootNode.id || bst.ReachabilitySince == "" {
		t.Errorf("bootstrap status: peer ID %q (want %s), reachability since %q", bst.PeerID, bootNode.id, bst.ReachabilitySince)
	}

	st, raw := statusOf(t, ctx, srv)
	if st.PeerID != srv.id {
		t.Errorf("serve status: peer ID %q, want %s", st.PeerID, srv.id)
	}
	if path, transport := connection(st, bootNode.id); path != "direct" || transport != "tcp" {
		t.Errorf("serve's connection to the bootstrap node: path %q transport %q, want direct tcp:\n%s", path, transport, raw)
	}
	if len(st.BootstrapPeers) != 1 || st.BootstrapPeers[0].Peer != bootNode.id || !st.BootstrapPeers[0].Connected {
		t.Errorf("serve's bootstrap peers: %+v, want %s connected", st.BootstrapPeers, bootNode.id)
	}
	if len(st.ListenAddrs) == 0 || st.NATMapping.TCP == "" || st.NATMapping.UDP == "" {
		t.Errorf("serve status lacks listen addresses or NAT mapping:\n%s", raw)
	}

	// The human form uses the words of the design.
	res := run(t, ctx, "--home", srv.home, "status")
	if res.code != 0 {
		t.Fatalf("p2pnode status: exit %d\nstderr: %s", res.code, res.stderr)
	}
	for _, w := range []string{srv.id, bootNode.id, "reachability", "NAT mapping", "relay reservation", "direct"} {
		if !strings.Contains(res.stdout, w) {
			t.Errorf("p2pnode status does not say %q:\n%s", w, res.stdout)
		}
	}

	// ping through each daemon: serve -> bootstrap, bootstrap -> serve.
	checkPing(t, ctx, 3, "--home", srv.home, "ping", bootNode.id)
	checkPing(t, ctx, 2, "--home", bootNode.home, "ping", srv.id, "--count", "2")

	// A second daemon in the same home stops at once.
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	res = run(t, sctx, "--home", srv.home, "serve", "--listen", p2pListen, "--bootstrap", boot, noPortMap)
	cancel()
	if res.code != 1 || !strings.Contains(res.stderr, "another p2pnode is already running in "+srv.home) {
		t.Errorf("second serve in one home: exit %d, stderr %q; want exit 1 saying another p2pnode is running", res.code, res.stderr)
	}

	// Where no daemon runs, ping runs a node of its own; status says what
	// to do.
	lone := newNode(t, ctx)
	checkPing(t, ctx, 2, "--home", lone.home, "ping", bootNode.id, "--count", "2",
		"--bootstrap", boot, "--p2p-listen", p2pListen, noPortMap)
	res = run(t, ctx, "--home", lone.home, "status")
	want := "no p2pnode serve or bootstrap is running in " + lone.home + "; start one with `p2pnode serve`"
	if res.code != 1 || !strings.Contains(res.stderr, want) || strings.Count(strings.TrimSpace(res.stderr), "\n") != 0 {
		t.Errorf("status with no daemon: exit %d, stderr %q; want exit 1 and one line saying %q", res.code, res.stderr, want)
	}
	res = run(t, ctx, "--home", lone.home, "ping", "12D3KooWnotapeerid")
	if res.code != 2 || !strings.Contains(res.stderr, "12D3KooWnotapeerid") || strings.Count(strings.TrimSpace(res.stderr), "\n") != 0 {
		t.Errorf("ping with a bad peer ID: exit %d, stderr %q; want 2 and one line naming it", res.code, res.stderr)
	}

	// A stopped daemon takes its socket with it.
	stop(t, sp)
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("control socket after serve stopped: %v, want it gone", err)
	}
	if res := run(t, ctx, "--home", srv.home, "status"); res.code != 1 {
		t.Errorf("status after serve stopped: exit %d, want 1", res.code)
	}
}

var pingLine = regexp.MustCompile(`^(\S+): ([0-9]+\.[0-9]+) ms \((direct|relayed)\)$`)

// checkPing runs `p2pnode args...` (a ping) and checks that it prints count
// direct round-trip times.
func checkPing(t *testing.T, ctx context.Context, count int, args ...string) {
	t.Helper()
	res := run(t, ctx, args...)
	if res.code != 0 {
		t.Fatalf("p2pnode %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), res.code, res.stdout, res.stderr)
	}
	lines := nonEmptyLines(res.stdout)
	if len(lines) != count {
		t.Errorf("p2pnode %s printed %d lines, want %d:\n%s", strings.Join(args, " "), len(lines), count, res.stdout)
	}
	target := args[slices.Index(args, "ping")+1]
	for _, l := range lines {
		m := pingLine.FindStringSubmatch(l)
		if m == nil || m[1] != target || m[3] != "direct" {
			t.Errorf("p2pnode %s: line %q, want %q", strings.Join(args, " "), l, target+": N.NN ms (direct)")
		}
	}
}

// natReport is the part of `p2pnode nat --json` the tests read.
type natReport struct {
	UDP struct {
		PublicAddress  string   `json:"public_address"`
		Mapping        string   `json:"mapping"`
		Filtering      string   `json:"filtering"`
		PortAllocation string   `json:"port_allocation"`
		Classic        string   `json:"classic"`
		NotRun         []string `json:"not_run"`
	} `json:"udp"`
	TCP struct {
		Mapping string   `json:"mapping"`
		NotRun  []string `json:"not_run"`
	} `json:"tcp"`
	Servers []struct {
		Address  string `json:"address"`
		Answered bool   `json:"answered"`
	} `json:"servers"`
}
