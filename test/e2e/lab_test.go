package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/p2pnode/p2pnode/internal/netlab"
)

// Listen multiaddrs in the lab, one transport at a time so that a test
// proves that transport.
var labListen = map[string]string{
	"tcp":  "/ip4/0.0.0.0/tcp/4001",
	"quic": "/ip4/0.0.0.0/udp/4001/quic-v1",
}

// labNet is one lab with a bootstrap/relay node on its public segment.
type labNet struct {
	lab       *netlab.Lab
	boot      *netlab.Host
	bootAddr  string // full /p2p multiaddr on the public segment
	transport string
}

// newLabNet builds a lab and starts `p2pnode bootstrap` on a public host.
func newLabNet(t *testing.T, ctx context.Context, transport string) *labNet {
	t.Helper()
	lab := netlab.New(t)
	ln := &labNet{lab: lab, boot: lab.AddPublicHost("boot"), transport: transport}
	n := newNode(t, ctx)
	p := startIn(t, ctx, ln.boot.NS, "bootstrap", "--home", n.home, "bootstrap", "--listen", labListen[transport], noPortMap)
	prefix := "/ip4/" + ln.boot.IP.String() + "/"
	ln.bootAddr = p.waitLine(t, 30*time.Second, "a multiaddr on "+ln.boot.IP.String(), func(line string) bool {
		return strings.HasPrefix(line, prefix) && strings.HasSuffix(line, "/p2p/"+n.id)
	})
	return ln
}

// serveIn starts `p2pnode serve` on h exposing an echo target (which runs
// inside h's namespace) as service "echo" to allow, and waits until it holds
// a relay reservation: from then on it is reachable by peer ID.
func (ln *labNet) serveIn(t *testing.T, ctx context.Context, h *netlab.Host, allow string) (node, *proc) {
	t.Helper()
	n := newNode(t, ctx)
	var l net.Listener
	netnsDo(t, h.NS, func() (err error) {
		l, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	})
	tg := startTargetOn(t, l, func(c *net.TCPConn) { _, _ = io.Copy(c, c); _ = c.CloseWrite() })
	p := startIn(t, ctx, h.NS, "serve", "--home", n.home, "serve", "--listen", labListen[ln.transport],
		"--bootstrap", ln.bootAddr, noPortMap, "--expose", "echo="+tg.Addr, "--allow", allow)
	p.waitLine(t, lookupWait, `"ready: ..."`, func(line string) bool { return strings.HasPrefix(line, "ready:") })
	if h.Site != nil && h.Site.PublicIP() != nil {
		p.waitStderr(t, 30*time.Second, "relay reservation made")
	}
	return n, p
}

// forwardIn starts `p2pnode forward PEER:echo` on h and returns the local
// address it listens on (inside h's namespace).
func (ln *labNet) forwardIn(t *testing.T, ctx context.Context, h *netlab.Host, n node, peerID string) (*proc, string) {
	t.Helper()
	listen := strings.Replace(labListen[ln.transport], "4001", "0", 1)
	target := peerID + ":echo"
	p := startIn(t, ctx, h.NS, "forward "+target, "--home", n.home, "forward", target,
		"--bootstrap", ln.bootAddr, "--p2p-listen", listen, noPortMap, "--listen", tcpListen)
	return p, p.waitForwarding(t, target)
}

// relayBytes is how many bytes the bootstrap/relay host has received and
// sent so far: a connection relayed through it shows up here, a direct one
// does not.
func (ln *labNet) relayBytes(t *testing.T, ctx context.Context) int64 {
	t.Helper()
	out, err := exec.CommandContext(ctx, "ip", "-n", ln.boot.NS, "-s", "-j", "link", "show", "dev", "eth0").Output()
	if err != nil {
		t.Fatalf("reading the relay's interface counters: %v", err)
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

// netnsDo runs f on an OS thread that has entered network namespace ns;
// sockets f creates stay in ns whatever goroutine uses them later. The thread
// goes back to the root namespace afterwards; if it cannot, it stays locked
// and the runtime ends it with its goroutine.
func netnsDo(t testing.TB, ns string, f func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		origin, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(origin)
		target, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		ferr := f()
		if err := unix.Setns(origin, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("back from %s: %w", ns, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	if err := <-errc; err != nil {
		t.Fatalf("in namespace %s: %v", ns, err)
	}
}

// TestNATTraversal: a serve behind a NAT, found by peer ID through the
// bootstrap node, reached by a forward at another site; the bytes must come
// through a direct connection (hole punched, or reversed), not the relay.
func TestNATTraversal(t *testing.T) {
	cases := []struct {
		name           string
		client, server netlab.NAT
		transport      string
	}{
		{"eim-apdf to eim-apdf over TCP", netlab.NATPortRestricted, netlab.NATPortRestricted, "tcp"},
		{"eim-apdf to eim-apdf over QUIC", netlab.NATPortRestricted, netlab.NATPortRestricted, "quic"},
		{"eim-eif to eim-apdf", netlab.NATFullCone, netlab.NATPortRestricted, "tcp"},
		{"none to eim-apdf", netlab.NATNone, netlab.NATPortRestricted, "tcp"},
		{"firewall to eim-apdf", netlab.NATFirewall, netlab.NATPortRestricted, "tcp"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := testContext(t, 2*time.Minute)
			ln := newLabNet(t, ctx, c.transport)
			srvHost := ln.lab.AddSite("s", c.server).AddHost("srv")
			cliHost := ln.lab.AddSite("c", c.client).AddHost("cli")
			client := newNode(t, ctx)
			server, _ := ln.serveIn(t, ctx, srvHost, client.id)
			fwd, addr := ln.forwardIn(t, ctx, cliHost, client, server.id)

			before := ln.relayBytes(t, ctx)
			const size = 16 << 20
			var conn *net.TCPConn
			netnsDo(t, cliHost.NS, func() error {
				c, err := net.DialTimeout("tcp", addr, 10*time.Second)
				if err == nil {
					conn = c.(*net.TCPConn)
				}
				return err
			})
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
			sent, received, err := exchange(conn, pseudoRandom(c.name, size))
			if err != nil {
				t.Fatalf("echo through the forward: %v", err)
			}
			checkSame(t, "echoed", sent, received)
			if sent.n != size {
				t.Fatalf("sent %d bytes, want %d", sent.n, size)
			}
			// 16 MiB each way through the relay would be over 64 MiB of
			// traffic on its link (in and out, both directions).
			if moved := ln.relayBytes(t, ctx) - before; moved > 2<<20 {
				t.Errorf("the relay host moved %d bytes during a %d-byte echo: the data was relayed, not direct", moved, size)
			}
			if !strings.Contains(fwd.stderr.String(), "path=direct") {
				t.Errorf("forward did not report a direct path; its log:\n%s", fwd.stderr.String())
			}
		})
	}
}
