//go:build linux

package netlab

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p-kbucket/peerdiversity"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/p2pnode/p2pnode/internal/testenv"
)

// natprobe exit codes (see natprobe/main.go).
const (
	probeTimeout = 3
	probeRefused = 4
)

var (
	probeOnce sync.Once
	probePath string
	probeErr  error
	probeDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if probeDir != "" {
		os.RemoveAll(probeDir)
	}
	// The link emulator's binary, if a lab built one; sweepBinaries would
	// remove it later anyway.
	if linkemBuild.path != "" {
		os.RemoveAll(filepath.Dir(linkemBuild.path))
	}
	os.Exit(code)
}

// natprobe builds the probe once per test binary; the lab runs it from the
// host's file system, which every namespace shares.
func natprobe(t testing.TB) string {
	t.Helper()
	probeOnce.Do(func() {
		probeDir, probeErr = os.MkdirTemp("", "netlab-natprobe-")
		if probeErr != nil {
			return
		}
		probePath = filepath.Join(probeDir, "natprobe")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "go", "build", "-o", probePath, "github.com/p2pnode/p2pnode/internal/netlab/natprobe").CombinedOutput()
		if err != nil {
			probeErr = fmt.Errorf("go build natprobe: %v\n%s", err, out)
		}
	})
	if probeErr != nil {
		t.Fatal(probeErr)
	}
	return probePath
}

// proc is a natprobe running in the background whose output lines a test
// waits for.
type proc struct {
	t      testing.TB
	name   string
	lines  chan string
	done   chan struct{}
	code   int
	stderr bytes.Buffer
	stdin  io.WriteCloser
}

// closeStdin ends the probe's standard input: a udp-probe -until-stdin
// then stops listening shortly after.
func (p *proc) closeStdin() {
	if p.stdin != nil {
		_ = p.stdin.Close()
	}
}

func startProbe(t testing.TB, h *Host, args ...string) *proc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	cmd := h.Command(ctx, natprobe(t), args...)
	p := &proc{t: t, name: h.Name + " natprobe " + strings.Join(args, " "), lines: make(chan string, 100), done: make(chan struct{})}
	cmd.Stderr = &p.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
		err := cmd.Wait()
		p.code = exitCode(err)
		cancel()
		close(p.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-p.done
	})
	return p
}

// expect returns the next line, which must start with prefix.
func (p *proc) expect(prefix string) string {
	p.t.Helper()
	select {
	case line, ok := <-p.lines:
		if !ok {
			<-p.done
			p.t.Fatalf("%s: exited (%d) before printing %q; stderr: %s", p.name, p.code, prefix, p.stderr.String())
		}
		if !strings.HasPrefix(line, prefix) {
			p.t.Fatalf("%s: got %q, want a line starting with %q", p.name, line, prefix)
		}
		return line
	case <-time.After(10 * time.Second):
		p.t.Fatalf("%s: no %q within 10s", p.name, prefix)
	}
	return ""
}

// rest waits for the probe to exit and returns its remaining lines and exit
// code.
func (p *proc) rest() ([]string, int) {
	p.t.Helper()
	var lines []string
	timeout := time.After(15 * time.Second)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				<-p.done
				return lines, p.code
			}
			lines = append(lines, line)
		case <-timeout:
			p.t.Fatalf("%s: did not exit", p.name)
		}
	}
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// runProbe runs natprobe to completion and returns its output and exit code.
func runProbe(t testing.TB, h *Host, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := h.Command(ctx, natprobe(t), args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := exitCode(err)
	if code < 0 {
		t.Fatalf("%s natprobe %v: %v; stderr: %s", h.Name, args, err, stderr.String())
	}
	return strings.TrimSpace(stdout.String() + stderr.String()), code
}

func hostPort(ip net.IP, port int) string { return net.JoinHostPort(ip.String(), strconv.Itoa(port)) }

// portOf is the port of an IP:port that a probe printed.
func portOf(t *testing.T, hostport string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(hostport)
	n, err2 := strconv.Atoi(p)
	if err != nil || err2 != nil {
		t.Fatalf("not an IP:port: %q", hostport)
	}
	return n
}

type siteCase struct {
	site *Site
	host *Host
}

// visibleIP is where the outside sees the host come from.
func (c siteCase) visibleIP() net.IP {
	switch c.site.NAT {
	case NATNone, NATFirewall:
		return c.host.IP
	}
	return c.site.PublicIP()
}

func (c siteCase) name() string {
	if c.site.Reject {
		return string(c.site.NAT) + "+reject"
	}
	return string(c.site.NAT)
}

// TestLab builds one lab with a site of every kind and checks, in parallel
// subtests, reachability, isolation, NAT mapping and filtering, and
// drop-versus-reject.
func TestLab(t *testing.T) {
	start := time.Now()
	l := New(t)
	natprobe(t)
	built := time.Now()

	s1 := l.AddPublicHost("s1")
	s2 := l.AddPublicHost("s2")
	s3 := l.AddPublicHost("s3")
	var cases []siteCase
	add := func(name string, nat NAT, opts ...SiteOption) {
		s := l.AddSite(name, nat, opts...)
		cases = append(cases, siteCase{site: s, host: s.AddHost(name + "-a")})
	}
	add("none", NATNone)
	add("fw", NATFirewall)
	add("fwrej", NATFirewall, RejectInbound())
	add("apdf", NATPortRestricted)
	add("apdfrej", NATPortRestricted, RejectInbound())
	add("adf", NATRestricted)
	add("eif", NATFullCone)
	add("edm", NATSymmetric)
	add("edmseq", NATSequential)
	eif := cases[slices.IndexFunc(cases, func(c siteCase) bool { return c.site.NAT == NATFullCone })]
	eifB := eif.site.AddHost("eif-b")
	t.Logf("natprobe built in %v; lab of %d namespaces built in %v", built.Sub(start), len(l.namespaces), time.Since(built))

	startProbe(t, s1, "udp-reflect", "-listen", "0.0.0.0:3478").expect("ready")
	startProbe(t, s1, "tcp-reflect", "-listen", "0.0.0.0:8080").expect("ready")
	startProbe(t, s2, "udp-reflect", "-listen", "0.0.0.0:3478").expect("ready")

	// Subtests are started from goroutines rather than with t.Parallel:
	// most of them wait for something not to happen, and -parallel
	// (GOMAXPROCS, 2 here) would queue those waits one after the other.
	var wg sync.WaitGroup
	run := func(name string, f func(t *testing.T)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(name, f)
		}()
	}
	{
		for i, c := range cases {
			run("outbound/"+c.name(), func(t *testing.T) {
				out, code := runProbe(t, c.host, "tcp-dial", "-to", hostPort(s1.IP, 8080), "-timeout", "5s")
				f := strings.Fields(out)
				if code != 0 || len(f) != 3 {
					t.Fatalf("tcp to public host: code %d: %s", code, out)
				}
				if ip, _, _ := net.SplitHostPort(f[2]); ip != c.visibleIP().String() {
					t.Errorf("tcp: public host saw %s, want address %s", f[2], c.visibleIP())
				}
				out, code = runProbe(t, c.host, "udp-dial", "-to", hostPort(s1.IP, 3478), "-timeout", "5s")
				if code != 0 || !strings.HasPrefix(out, "reply observed "+c.visibleIP().String()+":") {
					t.Fatalf("udp to public host: code %d: %s (want it seen from %s)", code, out, c.visibleIP())
				}
			})

			if c.site.NAT != NATNone && c.site.NAT != NATFirewall {
				run("lan-unreachable/"+c.name(), func(t *testing.T) {
					if out, err := s3.Run(context.Background(), "ip", "route", "get", c.host.IP.String()); err == nil {
						t.Errorf("public host has a route to LAN address %s: %s", c.host.IP, out)
					}
					if out, code := runProbe(t, s3, "tcp-dial", "-to", hostPort(c.host.IP, 22), "-timeout", "1s"); code == 0 {
						t.Errorf("public host reached LAN address %s: %s", c.host.IP, out)
					}
				})
			}

			run("mapping/"+c.name(), func(t *testing.T) {
				port := 40000 + i
				out, code := runProbe(t, c.host, "udp-probe", "-port", strconv.Itoa(port),
					"-to", hostPort(s1.IP, 3478), "-to", hostPort(s2.IP, 3478))
				lines := strings.Split(out, "\n")
				if code != 0 || len(lines) != 2 {
					t.Fatalf("udp-probe: code %d: %s", code, out)
				}
				m1, m2 := strings.Fields(lines[0])[2], strings.Fields(lines[1])[2]
				t.Logf("local port %d mapped to %s (seen by s1), %s (seen by s2)", port, m1, m2)
				for _, m := range []string{m1, m2} {
					if ip, _, _ := net.SplitHostPort(m); ip != c.visibleIP().String() {
						t.Errorf("mapped address %s, want IP %s", m, c.visibleIP())
					}
				}
				switch c.site.NAT {
				case NATSymmetric:
					if m1 == m2 {
						t.Errorf("edm: both public hosts saw %s; want a different mapping per destination", m1)
					}
				case NATSequential:
					// The other subtests of this host open flows at the
					// same time, each taking a port: the next one, not
					// necessarily +1.
					if d := portOf(t, m2) - portOf(t, m1); d < 1 || d > 16 {
						t.Errorf("edm-seq: s1 saw %s, s2 saw %s; want the second mapping a few ports after the first", m1, m2)
					}
				default:
					if m1 != m2 {
						t.Errorf("%s: s1 saw %s, s2 saw %s; want one endpoint-independent mapping", c.site.NAT, m1, m2)
					}
				}
			})

			run("filtering/"+c.name(), func(t *testing.T) {
				port := 41000 + i
				p := startProbe(t, c.host, "udp-probe", "-port", strconv.Itoa(port), "-to", hostPort(s1.IP, 3478), "-wait", "20s", "-until-stdin")
				mapped := strings.Fields(p.expect("mapped "))[2]
				p.expect("waiting")
				// A third host, and the same host from another port: both
				// are unsolicited for an address-and-port-dependent filter.
				if out, code := runProbe(t, s3, "udp-send", "-to", mapped, "-msg", "from-s3"); code != 0 {
					t.Fatalf("udp-send: %s", out)
				}
				otherPort := strconv.Itoa(3500 + i) // per case: the cases run at once
				if out, code := runProbe(t, s1, "udp-send", "-port", otherPort, "-to", mapped, "-msg", "from-s1-other-port"); code != 0 {
					t.Fatalf("udp-send: %s", out)
				}
				p.closeStdin() // both sent: the probe may stop listening
				lines, _ := p.rest()
				got := strings.Join(lines, "\n")
				fromS3 := strings.Contains(got, "from-s3")
				fromS1 := strings.Contains(got, "from-s1-other-port")
				// Restricted cone: the address it sent to may send from
				// any port; nobody else may.
				wantS3 := c.site.NAT == NATNone || c.site.NAT == NATFullCone
				wantS1 := wantS3 || c.site.NAT == NATRestricted
				if fromS3 != wantS3 || fromS1 != wantS1 {
					t.Errorf("%s: unsolicited datagrams to mapped %s: from s3 arrived=%v (want %v), from s1:%s arrived=%v (want %v)\n%s",
						c.name(), mapped, fromS3, wantS3, otherPort, fromS1, wantS1, got)
				}
			})

			if c.site.NAT != NATNone {
				run("inbound/"+c.name(), func(t *testing.T) {
					// The firewall's host has a listener, so only the filter
					// can stop the SYN; behind a NAT nothing is mapped to
					// the port, so the router itself gets the SYN.
					target := hostPort(c.site.PublicIP(), 9000)
					if c.site.NAT == NATFirewall {
						startProbe(t, c.host, "tcp-reflect", "-listen", "0.0.0.0:9000").expect("ready")
						target = hostPort(c.host.IP, 9000)
					}
					want, wantCode := "timeout", probeTimeout
					if c.site.Reject {
						want, wantCode = "refused", probeRefused
					}
					t0 := time.Now()
					if out, code := runProbe(t, s3, "tcp-dial", "-to", target, "-timeout", "1s"); code != wantCode {
						t.Errorf("unsolicited TCP to %s: %q (code %d), want %q", target, out, code, want)
					}
					t.Logf("tcp %s after %v", want, time.Since(t0).Round(time.Millisecond))
					if out, code := runProbe(t, s3, "udp-dial", "-to", target, "-timeout", "1s"); code != wantCode {
						t.Errorf("unsolicited UDP to %s: %q (code %d), want %q", target, out, code, want)
					}
				})
			}
		}

		// Two LAN hosts using the same local port: the kernel must give the
		// second another external port, and the full-cone map must send
		// that port to the second host, not to the first.
		run("fullcone-port-clash", func(t *testing.T) {
			const port = "42000"
			out, code := runProbe(t, eif.host, "udp-probe", "-port", port, "-to", hostPort(s1.IP, 3478))
			if code != 0 {
				t.Fatalf("udp-probe from %s: %s", eif.host.Name, out)
			}
			mappedA := strings.Fields(out)[2]
			p := startProbe(t, eifB, "udp-probe", "-port", port, "-to", hostPort(s1.IP, 3478), "-wait", "20s", "-until-stdin")
			mappedB := strings.Fields(p.expect("mapped "))[2]
			p.expect("waiting")
			if mappedA == mappedB {
				t.Fatalf("two LAN hosts share the mapping %s", mappedA)
			}
			if out, code := runProbe(t, s3, "udp-send", "-to", mappedB, "-msg", "for-b"); code != 0 {
				t.Fatalf("udp-send: %s", out)
			}
			p.closeStdin()
			lines, _ := p.rest()
			if got := strings.Join(lines, "\n"); !strings.Contains(got, "for-b") {
				t.Errorf("datagram to %s (mapping of %s:%s) did not reach it; %s is mapped to %s\n%s", mappedB, eifB.IP, port, eif.host.IP, mappedA, got)
			}
			t.Logf("%s:%s -> %s, %s:%s -> %s", eif.host.IP, port, mappedA, eifB.IP, port, mappedB)
		})

		run("isolation", func(t *testing.T) {
			gateways := map[string]string{}
			hosts := []*Host{eifB}
			for _, c := range cases {
				hosts = append(hosts, c.host)
			}
			for _, h := range hosts {
				if h.Site.NAT != NATNone {
					b := h.IP.To4()
					gateways[h.NS] = net.IPv4(b[0], b[1], b[2], 1).String()
				}
			}
			for _, ns := range l.namespaces {
				out, err := runTool(context.Background(), l.ipPath, nil, "-n", ns, "route", "get", "8.8.8.8")
				gw, isSiteHost := gateways[ns]
				switch {
				case isSiteHost && err != nil:
					t.Errorf("%s: site host has no default route to its router: %v", ns, err)
				case isSiteHost && !strings.Contains(out, "via "+gw+" "):
					t.Errorf("%s: default route is not via its router %s: %s", ns, gw, out)
				case !isSiteHost && err == nil:
					t.Errorf("%s: has a route out of the lab: %s", ns, out)
				}
				if out, err := runTool(context.Background(), l.ipPath, nil, "-n", ns, "-6", "route", "show"); err != nil || strings.TrimSpace(out) != "" {
					t.Errorf("%s: IPv6 routes %q (%v), want none", ns, out, err)
				}
			}
			checkRootUnattached(t, l)
		})
	}
	wg.Wait()
	t.Logf("total %v", time.Since(start))
}

// checkRootUnattached fails if any link of the root namespace has its peer
// in one of the lab's namespaces.
func checkRootUnattached(t *testing.T, l *Lab) {
	t.Helper()
	out, err := runTool(context.Background(), l.ipPath, nil, "netns", "list")
	if err != nil {
		t.Fatal(err)
	}
	ids := map[int]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && strings.HasPrefix(f[0], nsPrefix+l.id+"-") && f[1] == "(id:" {
			if id, err := strconv.Atoi(strings.TrimSuffix(f[2], ")")); err == nil {
				ids[id] = f[0]
			}
		}
	}
	out, err = runTool(context.Background(), l.ipPath, nil, "-j", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	var links []struct {
		Name    string `json:"ifname"`
		NetnsID *int   `json:"link_netnsid"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		t.Fatalf("ip -j link: %v", err)
	}
	for _, k := range links {
		if k.NetnsID != nil {
			if ns, ok := ids[*k.NetnsID]; ok {
				t.Errorf("root namespace link %s is attached to lab namespace %s", k.Name, ns)
			}
		}
	}
}

// TestTeardown checks that a lab leaves nothing behind: no namespace, no
// process, no marker; and that Close is idempotent.
func TestTeardown(t *testing.T) {
	var (
		id  string
		cmd *exec.Cmd
	)
	t.Run("lab", func(t *testing.T) {
		l := New(t)
		id = l.ID()
		h := l.AddPublicHost("a")
		l.AddSite("x", NATFullCone).AddHost("b")
		// Shaped links: their emulators must go too.
		shape := SymmetricLink(Direction{Delay: time.Millisecond, RateMbit: 10})
		l.AddPublicHost("c", ShapeLink(shape))
		l.AddSite("z", NATSymmetric, ShapeWAN(shape)).AddHost("d")
		l.AddSite("n", NATNone, ShapeWAN(shape)).AddHost("e")
		if n := len(emulatorProcs(t)); n < 3 {
			t.Errorf("%d link emulators running, want at least 3", n)
		}
		// Left running on purpose: teardown must kill it.
		cmd = h.Command(context.Background(), "sleep", "300")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
	})
	if id == "" {
		// New skipped the subtest (no root or tools), which it does only
		// when CI is not "true"; under CI it fails the subtest instead.
		if t.Failed() {
			return
		}
		testenv.Missing(t, "the lab subtest set up no lab (no root, ip or nft)")
		return
	}
	assertGone(t, id)
	if pids := emulatorProcs(t); len(pids) > 0 {
		t.Errorf("link emulators %v survived teardown", pids)
	}
	if cmd != nil {
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			t.Error("process started in the lab survived teardown")
		}
	}

	t.Run("close-twice", func(t *testing.T) {
		l := New(t)
		l.AddSite("y", NATSymmetric).AddHost("c")
		for i := 0; i < 2; i++ {
			if err := l.Close(); err != nil {
				t.Fatalf("Close #%d: %v", i+1, err)
			}
		}
		assertGone(t, l.ID())
	})
}

// TestSweepStale checks that a lab whose owner died is removed by the next
// New.
func TestSweepStale(t *testing.T) {
	ipPath, _ := requirements(t)
	id := fmt.Sprintf("stale%d", os.Getpid())
	ns := nsPrefix + id + "-h-x"
	if err := os.MkdirAll(markerDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// PID 0 never names a test process: the owner is gone.
	if err := os.WriteFile(filepath.Join(markerDir, id), []byte("0 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := runTool(context.Background(), ipPath, nil, "netns", "add", ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeNS(ipPath, ns); os.Remove(filepath.Join(markerDir, id)) })
	New(t)
	assertGone(t, id)
}

func assertGone(t *testing.T, id string) {
	t.Helper()
	ipPath := lookTool("ip")
	nss, err := listNamespaces(ipPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range nss {
		if strings.Contains(ns, nsPrefix+id+"-") {
			t.Errorf("namespace %s left behind", ns)
		}
	}
	if _, err := os.Stat(filepath.Join(markerDir, id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("marker %s left behind (%v)", id, err)
	}
}

// TestBlockUDPAndSecondIP: a BlockUDP router lets TCP through and no UDP;
// a public host's second address answers like its first.
func TestBlockUDPAndSecondIP(t *testing.T) {
	l := New(t)
	natprobe(t)
	pub := l.AddPublicHost("pub")
	alt := pub.AddPublicIP()
	h := l.AddSite("tcponly", NATPortRestricted, BlockUDP()).AddHost("h")
	open := l.AddSite("open", NATPortRestricted).AddHost("o")
	// Bound to each address: a socket on 0.0.0.0 would answer from the
	// first one whatever was asked.
	startProbe(t, pub, "udp-reflect", "-listen", hostPort(pub.IP, 3478)).expect("ready")
	startProbe(t, pub, "udp-reflect", "-listen", hostPort(alt, 3478)).expect("ready")
	startProbe(t, pub, "tcp-reflect", "-listen", "0.0.0.0:8080").expect("ready")

	if out, code := runProbe(t, h, "tcp-dial", "-to", hostPort(pub.IP, 8080), "-timeout", "5s"); code != 0 {
		t.Errorf("TCP through a BlockUDP router: code %d: %s", code, out)
	}
	if out, code := runProbe(t, h, "udp-dial", "-to", hostPort(pub.IP, 3478), "-timeout", "1s"); code != probeTimeout {
		t.Errorf("UDP through a BlockUDP router: code %d (want a timeout): %s", code, out)
	}
	for _, ip := range []net.IP{pub.IP, alt} {
		out, code := runProbe(t, open, "udp-dial", "-to", hostPort(ip, 3478), "-timeout", "5s")
		if code != 0 || !strings.HasPrefix(out, "reply observed "+open.Site.PublicIP().String()+":") {
			t.Errorf("UDP to %s: code %d: %s", ip, code, out)
		}
	}
	if alt.Equal(pub.IP) {
		t.Errorf("AddPublicIP gave the host's own address %s", alt)
	}
}

// TestRoutedRangeDiverse: the first 256 routed addresses are public and
// fall in 256 different groups of kad-dht's routing-table diversity filter,
// so a DHT farm on them can fill a routing table (see RoutedRange).
func TestRoutedRangeDiverse(t *testing.T) {
	groups := map[peerdiversity.PeerIPGroupKey]bool{}
	for i := range 256 {
		ip := routedIP(i)
		if !manet.IsPublicAddr(mustIPAddr(t, ip)) {
			t.Fatalf("routed address %s is not public to go-multiaddr", ip)
		}
		groups[peerdiversity.IPGroupKey(ip)] = true
	}
	if len(groups) != 256 {
		t.Errorf("256 routed addresses fall in %d diversity groups, want 256", len(groups))
	}
}

func mustIPAddr(t *testing.T, ip net.IP) ma.Multiaddr {
	t.Helper()
	a, err := manet.FromIP(ip)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestRoutedIPs: a public host's routed addresses are each in a /16 of its
// own, and reachable from a NAT site (through its router, seen from the
// router's public address) and from a public host added after them.
func TestRoutedIPs(t *testing.T) {
	l := New(t)
	natprobe(t)
	farm := l.AddPublicHost("farm")
	ips := farm.AddRoutedIPs(3)
	more := farm.AddRoutedIPs(1)
	h := l.AddSite("s", NATPortRestricted).AddHost("h")
	late := l.AddPublicHost("late")
	want := []string{"13.0.0.1", "13.1.0.1", "13.2.0.1", "13.3.0.1"}
	for i, ip := range append(ips, more...) {
		if ip.String() != want[i] {
			t.Errorf("routed address %d is %s, want %s", i, ip, want[i])
		}
		if !RoutedRange.Contains(ip) {
			t.Errorf("%s is not in RoutedRange %s", ip, RoutedRange)
		}
		// Bound to the address: the reflector must answer from it.
		startProbe(t, farm, "tcp-reflect", "-listen", hostPort(ip, 8080)).expect("ready")
	}
	for _, c := range []struct {
		from     *Host
		observed net.IP
	}{{h, h.Site.PublicIP()}, {late, late.IP}} {
		for _, ip := range []net.IP{ips[1], more[0]} {
			out, code := runProbe(t, c.from, "tcp-dial", "-to", hostPort(ip, 8080), "-timeout", "5s")
			if f := strings.Fields(out); code != 0 || len(f) != 3 || !strings.HasPrefix(f[2], c.observed.String()+":") {
				t.Errorf("TCP from %s to %s: code %d: %q, want \"connected LOCAL %s:PORT\"", c.from, ip, code, out, c.observed)
			}
		}
	}
}
