//go:build linux

package e2e

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/p2pnode/p2pnode/internal/netlab"
)

// natRuns is how many times each router kind is tested: a NAT check that
// is right by luck (a timeout read as "filtered") shows up as a wrong run.
const natRuns = 10

// TestNATCheck: behind each kind of router of the lab, `p2pnode nat --json`
// names the UDP mapping, the filtering and the classic NAT type, and the
// TCP mapping, right every run, with the STUN server the bootstrap node runs and announces (on two
// IP addresses, as RFC 5780 needs). The kinds run at once, each in a lab
// of its own.
func TestNATCheck(t *testing.T) {
	cases := []struct {
		name               string
		nat                netlab.NAT
		opts               []netlab.SiteOption
		mapping, filtering string
		classic            string
		tcpMapping         string
		ports              string // the port allocation's first word; "" not checked
	}{
		{"none", netlab.NATNone, nil, "endpoint-independent", "endpoint-independent", "open internet", "endpoint-independent", ""},
		{"firewall", netlab.NATFirewall, nil, "endpoint-independent", "address-and-port-dependent", "symmetric UDP firewall", "endpoint-independent", ""},
		{"eim-eif", netlab.NATFullCone, nil, "endpoint-independent", "endpoint-independent", "full cone", "endpoint-independent", ""},
		{"eim-adf", netlab.NATRestricted, nil, "endpoint-independent", "address-dependent", "restricted cone", "endpoint-independent", ""},
		{"eim-apdf", netlab.NATPortRestricted, nil, "endpoint-independent", "address-and-port-dependent", "port-restricted cone", "endpoint-independent", ""},
		{"edm", netlab.NATSymmetric, nil, "address-and-port-dependent", "address-and-port-dependent", "symmetric", "address-and-port-dependent", "random"},
		{"edm-seq", netlab.NATSequential, nil, "address-and-port-dependent", "address-and-port-dependent", "symmetric", "address-and-port-dependent", "sequential"},
		{"UDP blocked", netlab.NATPortRestricted, []netlab.SiteOption{netlab.BlockUDP()}, "unknown", "unknown", "UDP blocked", "endpoint-independent", ""},
	}
	// Goroutines rather than t.Parallel: most of a check is waiting for an
	// answer that a filter drops, and -parallel (GOMAXPROCS) would queue
	// those waits.
	var wg sync.WaitGroup
	for _, c := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(c.name, func(t *testing.T) {
				ctx := testContext(t, 4*time.Minute)
				lab := netlab.New(t)
				boot := lab.AddPublicHost("boot")
				alt := boot.AddPublicIP()
				bn := newNode(t, ctx)
				bp := startIn(t, ctx, boot.NS, "bootstrap", "--home", bn.home, "bootstrap", noPortMap,
					"--listen", "/ip4/0.0.0.0/tcp/4001", "--listen", "/ip4/0.0.0.0/udp/4001/quic-v1", "--stun-alt-ip", alt.String())
				prefix := "/ip4/" + boot.IP.String() + "/tcp/"
				bootAddr := bp.WaitLine(t, 30*time.Second, "a TCP multiaddr on "+boot.IP.String(), func(line string) bool {
					return strings.HasPrefix(line, prefix)
				})
				bp.WaitStderr(t, 10*time.Second, "STUN server started")
				h := lab.AddSite("s", c.nat, c.opts...).AddHost("h")
				cli := newNode(t, ctx)
				portsRight := 0
				for i := 1; i <= natRuns; i++ {
					res := runIn(t, ctx, h.NS, "--home", cli.home, "nat", "--json", "--bootstrap", bootAddr, noPortMap)
					if res.code != 0 {
						t.Fatalf("run %d: p2pnode nat: exit %d\n%s", i, res.code, res.stderr)
					}
					var rep natReport
					if err := json.Unmarshal([]byte(res.stdout), &rep); err != nil {
						t.Fatalf("run %d: no JSON report (%v):\n%s", i, err, res.stdout)
					}
					u := rep.UDP
					if u.Mapping != c.mapping || u.Filtering != c.filtering || u.Classic != c.classic {
						t.Errorf("run %d: mapping %s, filtering %s, classic %q; want %s, %s, %q (not run: %v)\n%s",
							i, u.Mapping, u.Filtering, u.Classic, c.mapping, c.filtering, c.classic, u.NotRun, res.stdout)
					}
					if strings.HasPrefix(u.PortAllocation, c.ports) {
						portsRight++
					} else {
						t.Logf("run %d: port allocation %q, want %s", i, u.PortAllocation, c.ports)
					}
					if rep.TCP.Mapping != c.tcpMapping {
						t.Errorf("run %d: TCP mapping %s, want %s (not run: %v)", i, rep.TCP.Mapping, c.tcpMapping, rep.TCP.NotRun)
					}
					if len(rep.Servers) == 0 || !strings.HasPrefix(rep.Servers[0].Address, boot.IP.String()+":") {
						t.Errorf("run %d: servers %+v, want the bootstrap node's STUN server on %s first", i, rep.Servers, boot.IP)
					}
					if i == 1 {
						t.Logf("%s: %s", c.name, strings.Join(strings.Fields(res.stdout), " "))
					}
				}
				// The port allocation samples fresh sockets while the command
				// joins the network: a second foreign flow between two samples
				// reads as "random" (1 run of 20 in CI): most runs, not all.
				if c.ports != "" && portsRight < natRuns-2 {
					t.Errorf("port allocation %s in %d of %d runs, want at least %d", c.ports, portsRight, natRuns, natRuns-2)
				}
			})
		}()
	}
	wg.Wait()
}

// TestNATThroughDaemon: a serving node behind a port-restricted cone NAT
// tests its NAT by itself once joined (status --json shows it), and
// `p2pnode nat` goes through it and tests from its QUIC port, 4001, which
// the NAT keeps: that is the mapping hole punching uses. Status also says
// that the bootstrap peer offers a relay.
func TestNATThroughDaemon(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	ln := newLabNet(t, ctx, "default")
	h := ln.lab.AddSite("s", netlab.NATPortRestricted).AddHost("srv")
	srv, _ := ln.serveIn(t, ctx, h, newNode(t, ctx).id)

	// The daemon checks its mapping first (classic "unknown" until the
	// filtering is tested), then everything.
	var st statusJSON
	if !waitFor(30*time.Second, func() bool {
		st, _ = statusOf(t, ctx, srv)
		return st.NAT != nil && st.NAT.UDP.Classic != "unknown"
	}) {
		t.Fatalf("status --json has no full NAT check 30 s after serve joined: %+v", st.NAT)
	}
	if st.NAT.UDP.Classic != "port-restricted cone" || st.NAT.UDP.Mapping != "endpoint-independent" {
		t.Errorf("the daemon's own NAT check says %q (mapping %s), want port-restricted cone", st.NAT.UDP.Classic, st.NAT.UDP.Mapping)
	}
	if len(st.BootstrapPeers) != 1 || st.BootstrapPeers[0].Relay != "yes" {
		t.Errorf("status bootstrap peers %+v, want one that offers a relay", st.BootstrapPeers)
	}
	res := runIn(t, ctx, h.NS, "--home", srv.home, "nat", "--json")
	if res.code != 0 {
		t.Fatalf("p2pnode nat through the daemon: exit %d\n%s", res.code, res.stderr)
	}
	var rep natReport
	if err := json.Unmarshal([]byte(res.stdout), &rep); err != nil {
		t.Fatalf("no JSON report (%v):\n%s", err, res.stdout)
	}
	want := h.Site.PublicIP().String() + ":4001"
	if rep.UDP.PublicAddress != want {
		t.Errorf("public address %q, want %s: the daemon's QUIC port behind the NAT", rep.UDP.PublicAddress, want)
	}
	if !strings.Contains(res.stderr, "through the p2pnode daemon") {
		t.Errorf("nat did not go through the daemon; its log:\n%s", res.stderr)
	}
}
