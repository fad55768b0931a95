//go:build linux

package e2e

import (
	"bytes"
	"context"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/p2pnode/p2pnode/internal/e2etest"
	"github.com/p2pnode/p2pnode/internal/netlab"
)

// TestWANDHTNoPrivateAddrs (issue 14, the dual DHT): two serving peers in
// NAT'd sites advertise a name; a WAN DHT server on the public segment
// (dhtspy, one of their bootstrap peers) receives their provider records,
// and the same spy then asks the bootstrap node for those peers and that
// name. No address any of those messages carries is private (10.x) or
// loopback, while the records still hold the public addresses that let a
// third peer find both by name.
func TestWANDHTNoPrivateAddrs(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	spy := buildDHTSpy(t, ctx)
	ln := newLabNet(t, ctx, "default")
	spyHost := ln.lab.AddPublicHost("spy")
	sp := e2etest.Start(t, ctx, "dhtspy serve", spyHost.Command(ctx, spy, "serve", "-connect", ln.bootAddr,
		"-listen", "/ip4/0.0.0.0/tcp/4001", "-listen", "/ip4/0.0.0.0/udp/4001/quic-v1"))
	ready := "ready /ip4/" + spyHost.IP.String() + "/udp/4001/quic-v1/p2p/"
	spyAddr := strings.TrimPrefix(sp.WaitLine(t, 30*time.Second, "the spy's QUIC address", func(l string) bool {
		return strings.HasPrefix(l, ready)
	}), "ready ")
	// The bootstrap node checks a new routing-table peer with a FIND_NODE
	// (kad-dht's lookupCheck) before it takes it in: from then on the
	// serving peers' lookups find both DHT servers whichever they ask first.
	sp.WaitLine(t, 30*time.Second, "the bootstrap node's check", func(l string) bool {
		return l == "msg FIND_NODE "+ln.bootNode.id
	})

	const name = "spied"
	client := newNode(t, ctx)
	var servers []string
	for _, s := range []string{"a", "b"} {
		h := ln.lab.AddSite(s, netlab.NATPortRestricted).AddHost("srv" + s)
		server, p := ln.serveAs(t, ctx, h, newNode(t, ctx), client.id, "--advertise", name, "--bootstrap", spyAddr)
		p.WaitStderr(t, 30*time.Second, "advertised name on the DHT")
		servers = append(servers, server.id)
	}
	for _, id := range servers {
		sp.WaitLine(t, 30*time.Second, "a provider record from "+id, func(l string) bool {
			return strings.HasPrefix(l, "addr ADD_PROVIDER "+id+" ")
		})
	}

	// The records are usable: a peer that knows only the bootstrap node
	// finds both by name.
	cliHost := ln.lab.AddSite("c", netlab.NATPortRestricted).AddHost("cli")
	found, out := findIn(t, ctx, cliHost, client, name, ln.bootAddr, ln.transport)
	if len(found.Peers) != len(servers) {
		t.Errorf("find %s listed %d peers, want the %d advertising ones:\n%s", name, len(found.Peers), len(servers), out)
	}

	// What the bootstrap node, a WAN DHT server itself, tells others.
	var queried []string
	for _, id := range servers {
		var qout, qerr bytes.Buffer
		cmd := spyHost.Command(ctx, spy, "query", "-peer", ln.bootAddr, "-find", id, "-namespace", "p2pnode/name/"+name)
		cmd.Stdout, cmd.Stderr = &qout, &qerr
		if err := cmd.Run(); err != nil {
			t.Fatalf("dhtspy query: %v\nstdout: %s\nstderr: %s", err, qout.Bytes(), qerr.Bytes())
		}
		q := qout.Bytes()
		lines := strings.Split(strings.TrimSpace(string(q)), "\n")
		if n, _ := strconv.Atoi(strings.TrimPrefix(lines[len(lines)-1], "providers ")); n != len(servers) {
			t.Errorf("the bootstrap node returned %q for the name's providers, want %d records:\n%s", lines[len(lines)-1], len(servers), q)
		}
		if !strings.Contains(string(q), "addr FIND_NODE-reply "+id+" ") {
			t.Errorf("the bootstrap node gave no address for %s:\n%s", id, q)
		}
		queried = append(queried, lines...)
	}

	for _, l := range append(strings.Split(sp.Stdout.String(), "\n"), queried...) {
		f := strings.Fields(l)
		if len(f) != 4 || f[0] != "addr" {
			continue
		}
		a, err := ma.NewMultiaddr(f[3])
		if err != nil {
			t.Errorf("the spy printed %q: %v", l, err)
			continue
		}
		if !manet.IsPublicAddr(a) {
			t.Errorf("a WAN DHT message (%s) carried the non-public address %s of %s", f[1], a, f[2])
		}
	}
}

// TestLANOnly (issue 14, the LAN DHT): a site with no use for the
// internet: its bootstrap node runs on the LAN. A serving peer advertises a
// name there (on the LAN DHT, with its LAN address), a client on the same
// LAN finds it by that name and forwards to it by peer ID; the bytes go
// over the LAN, none through the router's WAN side.
func TestLANOnly(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	lab := netlab.New(t)
	site := lab.AddSite("s", netlab.NATPortRestricted)
	bootHost, srvHost, cliHost := site.AddHost("boot"), site.AddHost("srv"), site.AddHost("cli")
	bn, bp, bootAddr := bootstrapOn(t, ctx, bootHost, "default")
	ln := &labNet{lab: lab, boot: bootHost, bootAddr: bootAddr, bootProc: bp, bootNode: bn, transport: "default"}

	const name = "lan-movie"
	client, server := newNode(t, ctx), newNode(t, ctx)
	tg := e2etest.Serve(t, e2etest.ListenIn(t, srvHost), func(c *net.TCPConn) { _, _ = io.Copy(c, c); _ = c.CloseWrite() })
	sp := startIn(t, ctx, srvHost.NS, "serve", append([]string{"--home", server.home, "serve", "--bootstrap", bootAddr, noPortMap,
		"--expose", "echo=" + tg.Addr, "--allow", client.id, "--advertise", name}, listenArgs("--listen", "default", false)...)...)
	sp.WaitStderr(t, 30*time.Second, "dht=lan")

	found, out := findIn(t, ctx, cliHost, client, name, bootAddr, "default")
	if len(found.Peers) != 1 || found.Peers[0].Peer != server.id || !slices.Equal(found.Peers[0].Services, []string{"echo"}) {
		t.Fatalf("find %s on the LAN: want %s with service echo:\n%s", name, server.id, out)
	}

	_, addr := ln.forwardIn(t, ctx, cliHost, client, server.id)
	const size = 4 << 20
	before := linkBytes(t, ctx, site.RouterNS(), "wan")
	ln.echoThrough(t, ctx, cliHost, addr, size)
	if wan := linkBytes(t, ctx, site.RouterNS(), "wan") - before; wan > size/8 {
		t.Errorf("the router's WAN interface moved %d bytes during a %d-byte echo on its LAN", wan, size)
	}
	if path := statusPath(t, ctx, server, client.id); path != "direct" {
		t.Errorf("the serving peer's path to the client is %s, want direct", path)
	}
}

// buildDHTSpy builds test/e2e/dhtspy and returns its path.
func buildDHTSpy(t *testing.T, ctx context.Context) string {
	t.Helper()
	return buildTool(t, ctx, "dhtspy")
}

// buildTool builds the test tool test/e2e/NAME (without -race: it is not
// code under test, and the DHT farm would be too slow with it) and returns
// its path.
func buildTool(t *testing.T, ctx context.Context, name string) string {
	t.Helper()
	root, err := e2etest.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", path, "./test/e2e/"+name)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./test/e2e/%s: %v\n%s", name, err, out)
	}
	return path
}
