//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/p2pnode/p2pnode/internal/e2etest"
	"github.com/p2pnode/p2pnode/internal/netlab"
)

// Listen multiaddrs in the lab: one transport at a time so that a test
// proves that transport, or both, as a user runs p2pnode.
var labListen = map[string][]string{
	"tcp":     {"/ip4/0.0.0.0/tcp/4001"},
	"quic":    {"/ip4/0.0.0.0/udp/4001/quic-v1"},
	"default": {"/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"},
}

// listenArgs gives flag (--listen or --p2p-listen) once per listen multiaddr
// of transport; ephemeral ones (port 0) for a node that only dials out.
func listenArgs(flag, transport string, ephemeral bool) []string {
	var out []string
	for _, a := range labListen[transport] {
		if ephemeral {
			a = strings.Replace(a, "4001", "0", 1)
		}
		out = append(out, flag, a)
	}
	return out
}

// labNet is one lab with a bootstrap/relay node on its public segment.
type labNet struct {
	lab       *netlab.Lab
	boot      *netlab.Host
	bootAddr  string // full /p2p multiaddr on the public segment
	bootProc  *e2etest.Proc
	bootNode  node
	transport string
	wan       wanShape
}

// wanShape is the lab's internet at a real round-trip time: two sites are
// rtt apart, and about loss % of the packets between them are lost each
// way. The relay is farther: each site's link adds rtt/4 each way, the
// bootstrap host's 3·rtt/8, so a site is 1.25·rtt from the relay and the
// relayed path between two sites is 2.5·rtt, longer than the direct one as
// on the internet. The zero value is the lab's plain 0.1 ms links.
type wanShape struct {
	rtt  time.Duration
	loss float64 // percent, each way, split over the two sites' links
}

// site is the link of a site's router (or host) to the public segment.
func (w wanShape) site() netlab.Link {
	return netlab.SymmetricLink(netlab.Direction{Delay: w.rtt / 4, Loss: w.loss / 2})
}

// siteOpts are the AddSite options a site of this lab gets.
func (ln *labNet) siteOpts(opts ...netlab.SiteOption) []netlab.SiteOption {
	if ln.wan != (wanShape{}) {
		opts = append(opts, netlab.ShapeWAN(ln.wan.site()))
	}
	return opts
}

// newLabNet builds a lab and starts `p2pnode bootstrap` on a public host,
// with extra flags.
func newLabNet(t *testing.T, ctx context.Context, transport string, extra ...string) *labNet {
	t.Helper()
	return newWANLabNet(t, ctx, transport, wanShape{}, extra...)
}

// newWANLabNet is newLabNet with the links shaped as wan says; sites must
// be added with ln.siteOpts.
func newWANLabNet(t *testing.T, ctx context.Context, transport string, wan wanShape, extra ...string) *labNet {
	t.Helper()
	lab := netlab.New(t)
	var bootOpts []netlab.HostOption
	if wan != (wanShape{}) {
		bootOpts = append(bootOpts, netlab.ShapeLink(netlab.SymmetricLink(netlab.Direction{Delay: wan.rtt * 3 / 8})))
	}
	ln := &labNet{lab: lab, boot: lab.AddPublicHost("boot", bootOpts...), transport: transport, wan: wan}
	// A second address for the STUN server's RFC 5780 tests: the peers'
	// NAT checks then tell mapping and filtering apart, which the hole
	// punch's choice of strategy needs.
	alt := ln.boot.AddPublicIP()
	ln.bootNode, ln.bootProc, ln.bootAddr = bootstrapOn(t, ctx, ln.boot, transport, append([]string{"--stun-alt-ip", alt.String()}, extra...)...)
	return ln
}

// bootstrapOn starts `p2pnode bootstrap` on lab host h, listening on
// transport's addresses, and returns its node, its process and the
// multiaddr peers join it at. With both transports that is the QUIC one,
// as go-libp2p's QUIC-first ranking of public addresses makes it when the
// bootstrap list has both (the public Amino list does): DCUtR punches only
// with the addresses the bootstrap connection observed, and a node that
// joined over TCP alone has no QUIC address to punch through routers that
// answer with RST (issue 15's note).
func bootstrapOn(t *testing.T, ctx context.Context, h *netlab.Host, transport string, extra ...string) (node, *e2etest.Proc, string) {
	t.Helper()
	n := newNode(t, ctx)
	args := append(append([]string{"--home", n.home, "bootstrap", noPortMap}, listenArgs("--listen", transport, false)...), extra...)
	p := startIn(t, ctx, h.NS, "bootstrap on "+h.Name, args...)
	prefix := "/ip4/" + h.IP.String() + "/"
	addr := p.WaitLine(t, 30*time.Second, "a multiaddr on "+h.IP.String(), func(line string) bool {
		return strings.HasPrefix(line, prefix) && strings.HasSuffix(line, "/p2p/"+n.id) && (transport != "default" || strings.Contains(line, "/quic-v1/"))
	})
	return n, p, addr
}

// serveIn starts `p2pnode serve` on h exposing an echo target (which runs
// inside h's namespace) as service "echo" to allow, and waits until it holds
// a relay reservation: from then on it is reachable by peer ID.
func (ln *labNet) serveIn(t *testing.T, ctx context.Context, h *netlab.Host, allow string) (node, *e2etest.Proc) {
	t.Helper()
	return ln.serveAs(t, ctx, h, newNode(t, ctx), allow)
}

// serveAs is serveIn for an initialised home.
func (ln *labNet) serveAs(t *testing.T, ctx context.Context, h *netlab.Host, n node, allow string, extra ...string) (node, *e2etest.Proc) {
	t.Helper()
	tg := e2etest.Serve(t, e2etest.ListenIn(t, h), func(c *net.TCPConn) { _, _ = io.Copy(c, c); _ = c.CloseWrite() })
	args := append(append([]string{"--home", n.home, "serve", "--bootstrap", ln.bootAddr, noPortMap,
		"--expose", "echo=" + tg.Addr, "--allow", allow}, listenArgs("--listen", ln.transport, false)...), extra...)
	p := startIn(t, ctx, h.NS, "serve", args...)
	p.WaitLine(t, lookupWait, `"ready: ..."`, func(line string) bool { return strings.HasPrefix(line, "ready:") })
	if h.Site != nil && h.Site.PublicIP() != nil {
		p.WaitStderr(t, 30*time.Second, "relay reservation made")
	}
	return n, p
}

// forwardIn starts `p2pnode forward PEER:echo` on h and returns the local
// address it listens on (inside h's namespace).
func (ln *labNet) forwardIn(t *testing.T, ctx context.Context, h *netlab.Host, n node, peerID string) (*e2etest.Proc, string) {
	t.Helper()
	target := peerID + ":echo"
	args := append([]string{"--home", n.home, "forward", target, "--bootstrap", ln.bootAddr, noPortMap, "--listen", tcpListen},
		listenArgs("--p2p-listen", ln.transport, true)...)
	p := startIn(t, ctx, h.NS, "forward "+target, args...)
	return p, waitForwarding(t, p, target)
}

// relayBytes is how many bytes the bootstrap/relay host has received and
// sent so far: a connection relayed through it shows up here, a direct one
// does not.
func (ln *labNet) relayBytes(t *testing.T, ctx context.Context) int64 {
	t.Helper()
	return linkBytes(t, ctx, ln.boot.NS, "eth0")
}

// linkBytes is how many bytes interface dev of namespace ns has received
// and sent so far.
func linkBytes(t *testing.T, ctx context.Context, ns, dev string) int64 {
	t.Helper()
	out, err := exec.CommandContext(ctx, "ip", "-n", ns, "-s", "-j", "link", "show", "dev", dev).Output()
	if err != nil {
		t.Fatalf("reading the counters of %s in %s: %v", dev, ns, err)
	}
	var links []struct {
		Stats64 struct {
			RX struct{ Bytes int64 } `json:"rx"`
			TX struct{ Bytes int64 } `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		t.Fatalf("parsing `ip -s -j link show`: %v (%s)", err, out)
	}
	return links[0].Stats64.RX.Bytes + links[0].Stats64.TX.Bytes
}

// echoThrough sends size bytes through the forward at addr (on host h)
// and checks they all come back; it returns how many bytes the relay host
// moved meanwhile.
func (ln *labNet) echoThrough(t *testing.T, ctx context.Context, h *netlab.Host, addr string, size int64) int64 {
	t.Helper()
	before := ln.relayBytes(t, ctx)
	conn := dialIn(t, h, addr)
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	sent, received, err := exchange(conn, pseudoRandom(addr, size))
	if err != nil {
		t.Fatalf("echo through the forward: %v", err)
	}
	checkSame(t, "echoed", sent, received)
	if sent.n != size {
		t.Fatalf("sent %d bytes, want %d", sent.n, size)
	}
	return ln.relayBytes(t, ctx) - before
}

// dialIn opens a TCP connection from lab host h.
func dialIn(t *testing.T, h *netlab.Host, addr string) *net.TCPConn {
	t.Helper()
	var conn *net.TCPConn
	e2etest.NetnsDo(t, h, func() error {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err == nil {
			conn = c.(*net.TCPConn)
		}
		return err
	})
	return conn
}

// statusPath is the path serve's status reports to peer.
func statusPath(t *testing.T, ctx context.Context, n node, peer string) string {
	t.Helper()
	st, _ := statusOf(t, ctx, n)
	return st.pathTo(peer)
}

// pathTo is the path of st's connections to peer: "direct" if any is.
func (st statusJSON) pathTo(peer string) string {
	path := "none"
	for _, c := range st.Connections {
		if c.Peer != peer {
			continue
		}
		if c.Path == "direct" {
			return "direct"
		}
		path = c.Path
	}
	return path
}

// findIn runs `p2pnode find NAME --json` on lab host h as n, joining
// through bootAddr with transport's listen addresses, and returns what it
// printed, parsed and raw.
func findIn(t *testing.T, ctx context.Context, h *netlab.Host, n node, name, bootAddr, transport string) (foundJSON, []byte) {
	t.Helper()
	var out, stderr bytes.Buffer
	cmd := h.Command(ctx, bin, append([]string{"--home", n.home, "find", name, "--json", "--bootstrap", bootAddr, noPortMap},
		listenArgs("--p2p-listen", transport, true)...)...)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("p2pnode find %s: %v\nstdout: %s\nstderr: %s", name, err, out.Bytes(), stderr.Bytes())
	}
	var found foundJSON
	if err := json.Unmarshal(out.Bytes(), &found); err != nil {
		t.Fatalf("find --json printed %q: %v", out.Bytes(), err)
	}
	return found, out.Bytes()
}

// TestNATTraversal: a serve behind a NAT, found by peer ID through the
// bootstrap node, reached by a forward at another site; the bytes must come
// through a direct connection (hole punched, or reversed), not the relay.
func TestNATTraversal(t *testing.T) {
	cases := []struct {
		name           string
		client, server netlab.NAT
		transport      string
		// reject: both routers answer unsolicited packets with a TCP RST
		// or an ICMP error (netlab.RejectInbound), which breaks TCP hole
		// punching; with default transports the path must still be direct.
		reject bool
		wan    wanShape
		// via is the transport the direct connection must have ("": any).
		via string
		// bootTCP: the nodes get the bootstrap node's TCP multiaddr only,
		// so they join over TCP and identify observes no QUIC address.
		bootTCP bool
	}{
		{"eim-apdf to eim-apdf over TCP", netlab.NATPortRestricted, netlab.NATPortRestricted, "tcp", false, wanShape{}, "", false},
		{"eim-apdf to eim-apdf over QUIC", netlab.NATPortRestricted, netlab.NATPortRestricted, "quic", false, wanShape{}, "", false},
		// Both transports on: DCUtR punches TCP first, where a byte costs
		// least (issue 15), and 256 MiB go over that connection.
		{"eim-apdf to eim-apdf, default transports", netlab.NATPortRestricted, netlab.NATPortRestricted, "default", false, wanShape{}, "tcp", false},
		// Behind routers that reject, only QUIC gets through.
		{"eim-apdf to eim-apdf rejecting, default transports", netlab.NATPortRestricted, netlab.NATPortRestricted, "default", true, wanShape{}, "quic-v1", false},
		// The QUIC address DCUtR needs then comes from the NAT check.
		{"eim-apdf to eim-apdf rejecting, default transports, TCP bootstrap address", netlab.NATPortRestricted, netlab.NATPortRestricted, "default", true, wanShape{}, "quic-v1", true},
		// At an internet round trip, with loss: DCUtR's synchronisation and
		// our waits must hold up (issue 10).
		{"eim-apdf to eim-apdf over TCP, 40 ms RTT, 1 % loss", netlab.NATPortRestricted, netlab.NATPortRestricted, "tcp", false, wanShape{40 * time.Millisecond, 1}, "", false},
		{"eim-apdf to eim-apdf over QUIC, 40 ms RTT, 1 % loss", netlab.NATPortRestricted, netlab.NATPortRestricted, "quic", false, wanShape{40 * time.Millisecond, 1}, "", false},
		// DCUtR goes after one relayed round trip; the TCP-first verdict
		// must come before it at an internet RTT too.
		{"eim-apdf to eim-apdf, default transports, 40 ms RTT, 1 % loss", netlab.NATPortRestricted, netlab.NATPortRestricted, "default", false, wanShape{40 * time.Millisecond, 1}, "tcp", false},
		{"eim-eif to eim-apdf", netlab.NATFullCone, netlab.NATPortRestricted, "tcp", false, wanShape{}, "", false},
		// A symmetric NAT on one side: the birthday hole punch (issue 12),
		// which is QUIC's.
		{"edm to eim-apdf, default transports", netlab.NATSymmetric, netlab.NATPortRestricted, "default", false, wanShape{}, "quic-v1", false},
		{"eim-apdf to edm, default transports", netlab.NATPortRestricted, netlab.NATSymmetric, "default", false, wanShape{}, "quic-v1", false},
		// Both symmetric, with sequential ports: port prediction (issue
		// 12), QUIC's too.
		{"edm-seq to edm-seq, default transports", netlab.NATSequential, netlab.NATSequential, "default", false, wanShape{}, "quic-v1", false},
		{"edm-seq to edm-seq, default transports, 40 ms RTT, 1 % loss", netlab.NATSequential, netlab.NATSequential, "default", false, wanShape{40 * time.Millisecond, 1}, "quic-v1", false},
		{"none to eim-apdf", netlab.NATNone, netlab.NATPortRestricted, "tcp", false, wanShape{}, "", false},
		{"firewall to eim-apdf", netlab.NATFirewall, netlab.NATPortRestricted, "tcp", false, wanShape{}, "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := testContext(t, 2*time.Minute)
			ln := newWANLabNet(t, ctx, c.transport, c.wan)
			if c.bootTCP {
				ln.bootAddr = "/ip4/" + ln.boot.IP.String() + "/tcp/4001/p2p/" + ln.bootNode.id
			}
			var opts []netlab.SiteOption
			if c.reject {
				opts = append(opts, netlab.RejectInbound())
			}
			srvHost := ln.lab.AddSite("s", c.server, ln.siteOpts(opts...)...).AddHost("srv")
			cliHost := ln.lab.AddSite("c", c.client, ln.siteOpts(opts...)...).AddHost("cli")
			client := newNode(t, ctx)
			server, _ := ln.serveIn(t, ctx, srvHost, client.id)
			fwd, addr := ln.forwardIn(t, ctx, cliHost, client, server.id)

			// 16 MiB each way through the relay would be over 64 MiB of
			// traffic on its link (in and out, both directions). At 1 %
			// loss and 40 ms a TCP flow carries a few MB/s: 4 MiB then.
			size := int64(16 << 20)
			switch {
			case c.wan.loss > 0:
				size = 4 << 20
			case c.via == "tcp":
				size = 256 << 20
			}
			if moved := ln.echoThrough(t, ctx, cliHost, addr, size); moved > min(2<<20, size/2) {
				t.Errorf("the relay host moved %d bytes during a %d-byte echo: the data was relayed, not direct", moved, size)
			}
			if !strings.Contains(fwd.Stderr.String(), "path=direct") {
				t.Errorf("forward did not report a direct path; its log:\n%s", fwd.Stderr.String())
			}
			// The serving peer's view: a direct connection to the client.
			st, raw := statusOf(t, ctx, server)
			var conns []string
			for _, c := range st.Connections {
				if c.Peer == client.id {
					conns = append(conns, c.Path+" over "+c.Transport)
				}
			}
			if !slices.ContainsFunc(conns, func(c string) bool { return strings.HasPrefix(c, "direct over ") }) {
				t.Errorf("the serving peer has no direct connection to the client (%v):\n%s", conns, raw)
			}
			if c.via != "" && !slices.Contains(conns, "direct over "+c.via) {
				t.Errorf("the direct connection to the client is not over %s (%v)", c.via, conns)
			}
			if c.via != "" && slices.ContainsFunc(conns, func(d string) bool { return strings.HasPrefix(d, "direct over ") && d != "direct over "+c.via }) {
				t.Errorf("a direct connection to the client other than over %s (%v): the forward's streams may not be on the one chosen", c.via, conns)
			}
			t.Logf("the serving peer's connections to the client: %v", conns)
		})
	}
}

// TestSameLAN: two peers behind one NAT router, on its LAN, reach each
// other over the LAN (issue 14): the serving peer's connection to the
// client is direct, to the client's LAN address, and the router's WAN
// interface carries none of the forwarded bytes (no relay, no hairpin).
// The bootstrap node never learns their LAN addresses (identify drops
// private addresses heard over a public connection); PunchProtocol carries
// them.
func TestSameLAN(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	ln := newWANLabNet(t, ctx, "default", wanShape{})
	site := ln.lab.AddSite("s", netlab.NATPortRestricted, ln.siteOpts()...)
	srvHost, cliHost := site.AddHost("srv"), site.AddHost("cli")
	client := newNode(t, ctx)
	server, _ := ln.serveIn(t, ctx, srvHost, client.id)
	_, addr := ln.forwardIn(t, ctx, cliHost, client, server.id)

	const size = 16 << 20
	before := linkBytes(t, ctx, site.RouterNS(), "wan")
	ln.echoThrough(t, ctx, cliHost, addr, size)
	wan := linkBytes(t, ctx, site.RouterNS(), "wan") - before
	if wan > size/8 {
		t.Errorf("the router's WAN interface moved %d bytes during a %d-byte echo between two hosts of its LAN", wan, size)
	}
	t.Logf("the router's WAN interface moved %d bytes during the %d-byte echo", wan, size)
	st, raw := statusOf(t, ctx, server)
	var conns []string
	lan := false
	for _, c := range st.Connections {
		if c.Peer != client.id {
			continue
		}
		conns = append(conns, c.Path+" to "+c.RemoteAddr)
		lan = lan || c.Path == "direct" && strings.Contains(c.RemoteAddr, "/ip4/"+cliHost.IP.String()+"/")
	}
	if !lan {
		t.Errorf("the serving peer has no direct connection to the client's LAN address %s (%v):\n%s", cliHost.IP, conns, raw)
	}
}

// TestOpenPeerDialed: a forward behind a symmetric NAT reaching a peer
// behind a full cone dials the peer's public address (the punch
// protocol says the peer's filter is open) instead of waiting for a punch
// that cannot start from its side, and the connection is direct.
func TestOpenPeerDialed(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	ln := newWANLabNet(t, ctx, "default", wanShape{})
	srvHost := ln.lab.AddSite("s", netlab.NATFullCone, ln.siteOpts()...).AddHost("srv")
	cliHost := ln.lab.AddSite("c", netlab.NATSymmetric, ln.siteOpts()...).AddHost("cli")
	client := newNode(t, ctx)
	server, _ := ln.serveIn(t, ctx, srvHost, client.id)
	fwd, addr := ln.forwardIn(t, ctx, cliHost, client, server.id)
	if moved := ln.echoThrough(t, ctx, cliHost, addr, 4<<20); moved > 2<<20 {
		t.Errorf("the relay host moved %d bytes during a 4 MiB echo: not direct", moved)
	}
	log := fwd.Stderr.String()
	if !strings.Contains(log, "path=direct") {
		t.Errorf("the forward's path is not direct; its log:\n%s", log)
	}
	// Either the serving peer was public already (a plain direct dial) or
	// the punch protocol ran: then it must have dialled, not punched.
	if strings.Contains(log, "hole punch strategy") && !strings.Contains(log, "by dialing the peer's public address") {
		t.Errorf("the punch protocol ran but the forward did not dial the open peer; its log:\n%s", log)
	}
	t.Logf("the forward dialled the open peer after the punch protocol: %v", strings.Contains(log, "by dialing the peer's public address"))
}

// TestPunchProbeBudget: the hole punches that send many datagrams (the
// birthday method, port prediction) stay within the bound the README
// states, counted on the routers: every UDP packet both sites' routers
// forwarded out, from the nodes' start to a direct connection and a small
// echo over it, is at most the punch's bound plus what joining, the QUIC
// handshakes and the echo take (udpSlack).
func TestPunchProbeBudget(t *testing.T) {
	const (
		birthdayBound = 256 + 2048 // hard side's mappings + easy side's probes
		predictBound  = 2 * 32 * 20
		udpSlack      = 600
	)
	cases := []struct {
		name           string
		client, server netlab.NAT
		bound          int64
	}{
		{"birthday, edm to eim-apdf", netlab.NATSymmetric, netlab.NATPortRestricted, birthdayBound},
		{"birthday, eim-apdf to edm", netlab.NATPortRestricted, netlab.NATSymmetric, birthdayBound},
		{"port prediction, edm-seq to edm-seq", netlab.NATSequential, netlab.NATSequential, predictBound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := testContext(t, 2*time.Minute)
			ln := newWANLabNet(t, ctx, "quic", wanShape{})
			srvSite := ln.lab.AddSite("s", c.server, ln.siteOpts()...)
			cliSite := ln.lab.AddSite("c", c.client, ln.siteOpts()...)
			client := newNode(t, ctx)
			server, _ := ln.serveIn(t, ctx, srvSite.AddHost("srv"), client.id)
			cliHost := cliSite.AddHost("cli")
			fwd, addr := ln.forwardIn(t, ctx, cliHost, client, server.id)
			ln.echoThrough(t, ctx, cliHost, addr, 64<<10)
			if !waitFor(15*time.Second, func() bool { return strings.Contains(fwd.Stderr.String(), "path=direct") }) {
				t.Fatalf("no direct connection; the forward's log:\n%s", fwd.Stderr.String())
			}
			var total int64
			for _, site := range []*netlab.Site{srvSite, cliSite} {
				n, err := site.UDPPacketsOut(ctx)
				if err != nil {
					t.Fatal(err)
				}
				total += n
			}
			if total > c.bound+udpSlack {
				t.Errorf("the routers forwarded %d UDP packets out; the bound is %d for the punch and %d for the rest", total, c.bound, udpSlack)
			}
			t.Logf("UDP packets out of both routers, start to direct: %d (bound %d + %d)", total, c.bound, udpSlack)
		})
	}
}

// TestDirectPathCut: falling back to the relay and forth to a direct path
// (issue 12). Two eim-apdf sites, default transports: the punched direct
// connection is TCP. The client's router then drops every TCP packet to or
// from the server's public IP, as a path that died would; the relay, on
// the bootstrap host, stays reachable. A new connection started within 5 s
// of the cut works again (through the relay: the
// forward found the direct connection dead and closed it), and after the
// new hole punch (QUIC: TCP stays cut) the forward is direct again and a
// 1 MiB echo does not go through the relay.
func TestDirectPathCut(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	ln := newWANLabNet(t, ctx, "default", wanShape{})
	srvSite := ln.lab.AddSite("s", netlab.NATPortRestricted, ln.siteOpts()...)
	cliSite := ln.lab.AddSite("c", netlab.NATPortRestricted, ln.siteOpts()...)
	cliHost := cliSite.AddHost("cli")
	client := newNode(t, ctx)
	server, _ := ln.serveIn(t, ctx, srvSite.AddHost("srv"), client.id)
	fwd, addr := ln.forwardIn(t, ctx, cliHost, client, server.id)
	ln.echoThrough(t, ctx, cliHost, addr, 1<<20)
	direct := func() []string {
		st, _ := statusOf(t, ctx, server)
		var out []string
		for _, c := range st.Connections {
			if c.Peer == client.id && c.Path == "direct" {
				out = append(out, c.Transport)
			}
		}
		return out
	}
	if d := direct(); !slices.Contains(d, "tcp") {
		t.Fatalf("before the cut: direct connections over %v, want tcp", d)
	}

	restore, err := cliSite.Cut(ctx, srvSite.PublicIP(), "tcp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = restore() })
	cut := time.Now()
	payload := int64(32 << 10) // within the relay's 128 KiB limit
	for try := 1; ; try++ {
		began := time.Since(cut)
		conn := dialIn(t, cliHost, addr)
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		sent, received, err := exchange(conn, pseudoRandom(addr, payload))
		conn.Close()
		if err == nil && sent == received && sent.n == payload {
			t.Logf("a new connection started %v after the cut carried its echo (try %d, done %v after the cut)",
				began.Round(time.Millisecond), try, time.Since(cut).Round(time.Millisecond))
			break
		}
		if time.Since(cut) > 5*time.Second {
			t.Fatalf("5 s after the cut, connections through the forward still fail (try %d: %v, sent %v, received %v); the forward's log:\n%s",
				try, err, sent, received, fwd.Stderr.String())
		}
	}
	if !strings.Contains(fwd.Stderr.String(), "stopped answering") {
		t.Errorf("the forward did not log the dead direct connection; its log:\n%s", fwd.Stderr.String())
	}

	if !waitFor(45*time.Second, func() bool { return slices.Contains(direct(), "quic-v1") }) {
		t.Fatalf("no direct connection again 45 s after the cut (direct over %v); the forward's log:\n%s", direct(), fwd.Stderr.String())
	}
	if moved := ln.echoThrough(t, ctx, cliHost, addr, 1<<20); moved > 512<<10 {
		t.Errorf("the relay host moved %d bytes during a 1 MiB echo after the new punch: not direct", moved)
	}
	t.Logf("direct again over %v, %v after the cut", direct(), time.Since(cut).Round(time.Millisecond))
}

// TestRelayFallback: between two symmetric NATs hole punching cannot work.
// A relay that authorizes both peers carries the data without limit, and
// status says the path is relayed; a relay that does not authorize them cuts
// the connection at its limit, and forward says why instead of hanging.
func TestRelayFallback(t *testing.T) {
	for _, authorized := range []bool{true, false} {
		t.Run(fmt.Sprintf("authorized=%v", authorized), func(t *testing.T) {
			ctx := testContext(t, 2*time.Minute)
			client, server := newNode(t, ctx), newNode(t, ctx)
			var extra []string
			if authorized {
				extra = []string{"--relay-allow", client.id, "--relay-allow", server.id}
			}
			ln := newLabNet(t, ctx, "tcp", extra...)
			srvHost := ln.lab.AddSite("s", netlab.NATSymmetric).AddHost("srv")
			cliHost := ln.lab.AddSite("c", netlab.NATSymmetric).AddHost("cli")
			ln.serveAs(t, ctx, srvHost, server, client.id)
			fwd, addr := ln.forwardIn(t, ctx, cliHost, client, server.id)
			fwd.WaitStderr(t, 10*time.Second, "path=relayed")
			if !authorized {
				conn := dialIn(t, cliHost, addr)
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
				if _, _, err := exchange(conn, pseudoRandom("limited", 1<<20)); err == nil {
					t.Fatal("1 MiB went through a relay that limits circuits to 128 KiB")
				}
				fwd.WaitStderr(t, 10*time.Second, "relay limits each relayed connection")
				return
			}
			const size = 16 << 20
			if moved := ln.echoThrough(t, ctx, cliHost, addr, size); moved < 2*size {
				t.Errorf("the relay host moved only %d bytes during a %d-byte echo: not relayed?", moved, size)
			}
			if got := statusPath(t, ctx, server, client.id); got != "relayed" {
				t.Errorf("serve's status says the path to the forwarding peer is %q, want relayed", got)
			}
		})
	}
}

// TestRelayDiesAfterDirect: once the connection is direct, the relay is no
// longer needed: a forwarded TCP connection that is open keeps flowing when
// the bootstrap/relay node stops, and a new one still works.
func TestRelayDiesAfterDirect(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	ln := newLabNet(t, ctx, "tcp")
	srvHost := ln.lab.AddSite("s", netlab.NATPortRestricted).AddHost("srv")
	cliHost := ln.lab.AddSite("c", netlab.NATPortRestricted).AddHost("cli")
	client := newNode(t, ctx)
	server, _ := ln.serveIn(t, ctx, srvHost, client.id)
	fwd, addr := ln.forwardIn(t, ctx, cliHost, client, server.id)
	fwd.WaitStderr(t, 10*time.Second, "path=direct")
	if got := statusPath(t, ctx, server, client.id); got != "direct" {
		t.Errorf("serve's status says the path to the forwarding peer is %q, want direct", got)
	}

	open := dialIn(t, cliHost, addr)
	defer open.Close()
	_ = open.SetDeadline(time.Now().Add(60 * time.Second))
	ping := func(word string) {
		t.Helper()
		if _, err := open.Write([]byte(word)); err != nil {
			t.Fatalf("write on the open connection: %v", err)
		}
		buf := make([]byte, len(word))
		if _, err := io.ReadFull(open, buf); err != nil || string(buf) != word {
			t.Fatalf("echo on the open connection: got %q, %v; want %q", buf, err, word)
		}
	}
	ping("before the relay stops")
	stop(t, ln.bootProc)
	ping("after the relay stopped")
	ln.echoThrough(t, ctx, cliHost, addr, 1<<20)
}

// TestReachabilityVerdicts takes the full AutoNAT path once: a serving peer
// behind a NAT is told it is private (AutoNAT v1 waits 15 s before its
// first probe), while the bootstrap node is public by its operator's word.
// Meanwhile the serving peer is reachable through its relay reservation.
func TestReachabilityVerdicts(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	ln := newLabNet(t, ctx, "tcp")
	srvHost := ln.lab.AddSite("s", netlab.NATPortRestricted).AddHost("srv")
	client := newNode(t, ctx)
	server, _ := ln.serveIn(t, ctx, srvHost, client.id)

	if st, raw := statusOf(t, ctx, ln.bootNode); st.Reachability != "public" {
		t.Errorf("bootstrap node's reachability is %q, want public:\n%s", st.Reachability, raw)
	}
	var last string
	ok := waitFor(60*time.Second, func() bool {
		st, _ := statusOf(t, ctx, server)
		last = st.Reachability
		return last == "private"
	})
	if !ok {
		t.Fatalf("serve behind a NAT still says reachability %q after 60 s, want private", last)
	}
}

// TestNamedServices: three peers in three NAT'd sites advertise a name on
// the DHT; a fourth finds all three with find, then forwards to one of them
// by name, says which peer it chose, and the bytes arrive.
func TestNamedServices(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	ln := newLabNet(t, ctx, "tcp")
	cliHost := ln.lab.AddSite("c", netlab.NATPortRestricted).AddHost("cli")
	var hosts []*netlab.Host
	for _, site := range []string{"a", "b", "d"} {
		hosts = append(hosts, ln.lab.AddSite(site, netlab.NATPortRestricted).AddHost("srv"+site))
	}
	client := newNode(t, ctx)
	servers := map[string]bool{}
	for _, h := range hosts {
		server, p := ln.serveAs(t, ctx, h, newNode(t, ctx), client.id, "--advertise", "movie-night")
		p.WaitStderr(t, 30*time.Second, "advertised name on the DHT")
		servers[server.id] = true
	}

	common := append([]string{"--bootstrap", ln.bootAddr, noPortMap}, listenArgs("--p2p-listen", ln.transport, true)...)
	found, out := findIn(t, ctx, cliHost, client, "movie-night", ln.bootAddr, ln.transport)
	seen := map[string]bool{}
	for _, f := range found.Peers {
		if !servers[f.Peer] || f.Error != "" || len(f.Services) != 1 || f.Services[0] != "echo" {
			t.Errorf("find: unexpected entry %+v", f)
		}
		seen[f.Peer] = true
	}
	if len(seen) != len(servers) {
		t.Fatalf("find listed %d of the %d advertising peers:\n%s", len(seen), len(servers), out)
	}

	fwd := startIn(t, ctx, cliHost.NS, "forward movie-night/echo",
		append([]string{"--home", client.home, "forward", "movie-night/echo", "--listen", tcpListen}, common...)...)
	line := fwd.WaitLine(t, lookupWait, "a forwarding line", func(l string) bool { return forwardingLine.MatchString(l) })
	addr := forwardingLine.FindStringSubmatch(line)[1]
	chosen := fwd.WaitLine(t, 10*time.Second, `"name movie-night: peer ..."`, func(l string) bool { return strings.HasPrefix(l, "name movie-night: peer ") })
	if id := strings.TrimPrefix(chosen, "name movie-night: peer "); !servers[id] {
		t.Errorf("forward chose %q, not one of the advertising peers", id)
	}
	ln.echoThrough(t, ctx, cliHost, addr, 1<<20)
	stop(t, fwd)

	// A name pinned in config.toml goes to the pinned peer only.
	var pinned string
	for id := range servers {
		if id != strings.TrimPrefix(chosen, "name movie-night: peer ") {
			pinned = id
			break
		}
	}
	cfgPath := filepath.Join(client.home, "config.toml")
	old, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, append(old, []byte("\n[names]\nmovie-night = [\""+pinned+"\"]\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	fwd2 := startIn(t, ctx, cliHost.NS, "forward movie-night/echo (pinned)",
		append([]string{"--home", client.home, "forward", "movie-night/echo", "--listen", tcpListen}, common...)...)
	fwd2.WaitLine(t, lookupWait, "a forwarding line", func(l string) bool { return forwardingLine.MatchString(l) })
	fwd2.WaitLine(t, 10*time.Second, "the pinned peer", func(l string) bool { return l == "name movie-night: peer "+pinned })
}

// TestUDPAcrossNATs: 10,000 datagrams of mixed sizes through a UDP forward
// between two NAT'd sites, each echoed back: none corrupted, and the loss,
// reported, is zero on the lab's loss-free links.
func TestUDPAcrossNATs(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	ln := newLabNet(t, ctx, "tcp")
	srvHost := ln.lab.AddSite("s", netlab.NATPortRestricted).AddHost("srv")
	cliHost := ln.lab.AddSite("c", netlab.NATPortRestricted).AddHost("cli")

	var echo net.PacketConn
	e2etest.NetnsDo(t, srvHost, func() (err error) {
		echo, err = net.ListenPacket("udp", "127.0.0.1:0")
		return err
	})
	t.Cleanup(func() { echo.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = echo.WriteTo(buf[:n], from)
		}
	}()

	client := newNode(t, ctx)
	server, _ := ln.serveAs(t, ctx, srvHost, newNode(t, ctx), client.id, "--expose", "udp:uecho="+echo.LocalAddr().String())
	fwd := startIn(t, ctx, cliHost.NS, "forward --udp", append([]string{"--home", client.home, "forward", "--udp", server.id + ":uecho",
		"--bootstrap", ln.bootAddr, noPortMap, "--listen", tcpListen}, listenArgs("--p2p-listen", ln.transport, true)...)...)
	line := fwd.WaitLine(t, lookupWait, `"forwarding udp ..."`, func(l string) bool { return strings.HasPrefix(l, "forwarding udp ") })
	addr := strings.Fields(line)[2]

	var conn *net.UDPConn
	e2etest.NetnsDo(t, cliHost, func() error {
		raddr, err := net.ResolveUDPAddr("udp", addr)
		if err == nil {
			conn, err = net.DialUDP("udp", nil, raddr)
		}
		return err
	})
	defer conn.Close()

	const count, window = 10000, 32
	payload := func(i int) []byte {
		size := 8 + (i*7919)%1400 // 8 to 1407 bytes
		b := make([]byte, size)
		binary.BigEndian.PutUint64(b, uint64(i))
		for j := 8; j < size; j++ {
			b[j] = byte(i + j)
		}
		return b
	}
	credits := make(chan struct{}, window)
	for range window {
		credits <- struct{}{}
	}
	var received, corrupted atomic.Int64
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		buf := make([]byte, 65535)
		for received.Load()+corrupted.Load() < count {
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := conn.Read(buf)
			if err != nil {
				return // the rest is lost
			}
			i := int(binary.BigEndian.Uint64(buf[:8]))
			if i < 0 || i >= count || !bytes.Equal(buf[:n], payload(i)) {
				corrupted.Add(1)
			} else {
				received.Add(1)
			}
			select { // never blocks, even if a lost datagram skewed the count
			case credits <- struct{}{}:
			default:
			}
		}
	}()
	for i := 0; i < count; i++ {
		select {
		case <-credits:
		case <-time.After(5 * time.Second):
			// A lost datagram took its credit with it: go on.
		}
		if _, err := conn.Write(payload(i)); err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
	}
	<-readDone
	lost := count - received.Load() - corrupted.Load()
	t.Logf("UDP through the forward: %d datagrams sent, %d echoed intact, %d corrupted, %d lost", count, received.Load(), corrupted.Load(), lost)
	if corrupted.Load() != 0 || lost != 0 {
		t.Errorf("%d corrupted and %d lost of %d datagrams; want none", corrupted.Load(), lost, count)
	}
}
