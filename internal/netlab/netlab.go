//go:build linux

// Package netlab builds, for one test, a small internet out of Linux network
// namespaces, so that integration tests can run the real p2pnode binary on
// hosts behind NAT routers of a chosen RFC 4787 behaviour. It is test
// support: only tests import it.
//
// # Topology
//
//	                 public segment 11.0.0.0/24 (bridge in namespace "pub")
//	   ┌───────────────┬──────────────┴──────┬──────────────────────┐
//	public host    public host        router (site A)         router (site B)
//	11.0.0.1       11.0.0.2           wan 11.0.0.3            wan 11.0.0.4
//	                                  lan 10.1.0.1/24         lan 11.2.0.1/24   (firewall: public LAN)
//	                                     │                       │
//	                                  host 10.1.0.2           host 11.2.0.2
//
// The public range is 11.0.0.0/8 on purpose: go-libp2p treats private (RFC
// 1918) and documentation ranges as non-public and then disables AutoNAT,
// relays and DCUtR, which are exactly what the lab is for. One public host
// may also hold many addresses of RoutedRange (13.0.0.0/8), each in a /16
// of its own, routed to it from the whole public side (AddRoutedIPs).
//
// # Isolation
//
// Nothing is attached to the root namespace: veths are created directly
// between lab namespaces (`ip -n A link add ... peer ... netns B`), so their
// names live only inside the lab and cannot collide with another lab or the
// machine's own links. Namespace names carry a random per-lab ID. Public
// hosts and routers route only the lab's public subnets; site hosts have a
// default route to their router, which itself knows only the lab, so no
// packet can leave the lab. IPv6 is disabled in every lab namespace so that
// the lab is IPv4 only and has no link-local paths around the routers.
//
// # Requirements
//
// Root, iproute2 (`ip`) and nftables (`nft`). Without them New skips the
// test, except under CI=true, where it fails: CI installs them, so their
// absence there is a broken CI, not a reason to test less. Shaped links
// (see below) also need the go command and this module's source, from which
// netlab builds its link emulator: both are there wherever its tests run.
//
// # Link shaping
//
// A public host's or a site router's link to the public segment can be
// given a delay, jitter, loss and rate per direction (Link). This kernel
// has no netem qdisc, so a shaped link is not one veth but two, with a
// userspace emulator between them in a namespace of its own
// (nl<ID>-l-h-<host> or nl<ID>-l-r-<site>):
//
//	host/router ns          shaper ns "l-..."               pub ns
//	  eth0 | wan  <-veth->  a  [linkem]  b  <-veth->  pN (port of br0)
//
// linkem (package internal/netlab/linkem; its doc has the model) reads every
// frame arriving on a or b with an AF_PACKET socket and writes it to the
// other after its delay, so the router, the host and the bridge see plain
// Ethernet, ARP included. Userspace rather than tc: tbf/htb could do the
// rate, but delay and loss need netem, and one model for all four keeps
// them consistent (the queue a rate builds is the same queue the delay
// follows). An unshaped link stays one veth and has no emulator.
//
// Veths carry GSO super-frames (up to 64 KiB standing for many TCP
// segments) and the emulator passes them through whole, counting for the
// rate the segments they stand for: that is what lets it carry Gbit/s,
// since each frame costs syscalls and wake-ups. Loss needs single packets,
// though, or it would drop a burst of segments at once: in a direction with
// Loss, the sending end of the link (the host's or router's interface for
// Up, the bridge port for Down) gets gso_max_segs 1, so that the kernel
// segments before the emulator. Measured with BenchmarkLinkem on a 2-core
// VM, one TCP flow: a plain veth 950 MB/s; an emulated but unshaped link
// 535 MB/s, the emulator at 66 % of a core; a 1 Gbit/s link its full rate,
// 119 MB/s of payload, at 30 %; with single packets (a link with loss) 20
// MB/s at 69 %, where a plain veth with single packets reaches 29 MB/s on
// the same VM: the per-packet cost is mostly the kernel's.
//
// The emulator is built once per process (`go build`, never with -race: it
// is a separate process and the race detector would only slow it) and runs
// as `ip netns exec <shaper ns> linkem ...`, so Close's kill of every lab
// namespace would end it even if it did not stop on SIGTERM.
//
// # Teardown
//
// New registers Close with t.Cleanup, so namespaces are removed and every
// process still running in them is killed even when the test fails. A test
// binary that is killed outright (for example by `go test -timeout`) cannot
// run cleanups; the next New in any process removes labs whose owning
// process is gone (see sweepStale).
package netlab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/p2pnode/p2pnode/internal/testenv"
)

// Timeouts. Setup commands are local netlink/nft calls that take
// milliseconds; the bound only keeps a wedged command from hanging a test.
const (
	cmdTimeout = 15 * time.Second
	// RunTimeout bounds Host.Run when the caller's context has no deadline.
	RunTimeout = 30 * time.Second
)

// markerDir holds one file per live lab naming the process that owns it, so
// that labs of a killed test binary can be found and removed later. /run is
// a tmpfs, like /run/netns, so both vanish together on reboot.
const markerDir = "/run/netlab"

// nsPrefix starts every lab namespace name; the lab ID follows.
const nsPrefix = "nl"

// Lab is one test's small internet. Its methods are safe for concurrent use,
// but a setup error fails the test given to New (FailNow), so add hosts and
// sites from that test's goroutine, before starting subtests.
type Lab struct {
	tb     testing.TB
	id     string // random, hex; part of every namespace name
	ipPath string
	nft    string

	mu         sync.Mutex
	namespaces []string // every namespace created, in creation order
	names      map[string]bool
	pubNS      string
	nextPub    int      // last octet of the next 11.0.0.N
	routedHost *Host    // the host RoutedRange is routed to; nil until AddRoutedIPs
	nextRouted int      // index of the next RoutedRange address
	nextSite   int      // K of the next site's LAN (10.K.0.0/24 or 11.K.0.0/24)
	cuts       int      // Site.Cut tables made so far
	publicSide []string // namespaces on the public segment: they get routes to firewall LANs
	routes     []route  // lab public subnets behind a router (firewall sites)
	emulators  []*emulator

	closeOnce sync.Once
	closeErr  error
}

type route struct {
	dst *net.IPNet
	via net.IP
}

// Host is one machine in the lab: a network namespace with one interface,
// eth0, and a loopback.
type Host struct {
	Name string // as given to AddPublicHost or Site.AddHost
	NS   string // network namespace, for `ip netns exec NS ...`
	IP   net.IP // its own address (a public 11.0.0.N, or its LAN address behind a router)
	Site *Site  // nil for a public host

	lab *Lab
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,30}$`)

// New creates an empty lab with its public segment and removes it when tb
// ends. It skips tb when not root (or a tool is missing), unless CI=true,
// where it fails instead.
func New(tb testing.TB) *Lab {
	tb.Helper()
	ipPath, nftPath := requirements(tb)

	l := &Lab{tb: tb, ipPath: ipPath, nft: nftPath, names: map[string]bool{}, nextPub: 1, nextSite: 1}
	sweepStale(tb, ipPath)
	sweepBinaries()
	l.id = l.claimID()
	tb.Cleanup(func() {
		if err := l.Close(); err != nil {
			tb.Errorf("netlab: teardown: %v", err)
		}
	})

	l.mu.Lock()
	defer l.mu.Unlock()
	l.pubNS = l.newNS("pub")
	l.mustIP("-n", l.pubNS, "link", "add", "br0", "type", "bridge")
	l.mustIP("-n", l.pubNS, "link", "set", "br0", "up")
	return l
}

// requirements returns the paths of ip and nft, or ends tb.
func requirements(tb testing.TB) (ipPath, nftPath string) {
	tb.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	ipPath = lookTool("ip")
	if ipPath == "" {
		missing = append(missing, "ip (iproute2)")
	}
	nftPath = lookTool("nft")
	if nftPath == "" {
		missing = append(missing, "nft (nftables)")
	}
	if len(missing) > 0 {
		msg := "netlab needs " + strings.Join(missing, ", ") + " to build network namespaces"
		testenv.Missing(tb, "%s (run as root with iproute2 and nftables)", msg)
	}
	return ipPath, nftPath
}

// lookTool also tries the sbin directories, which a non-login root shell or
// CI's PATH may lack.
func lookTool(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// claimID picks a lab ID nobody else holds, by creating its marker file
// exclusively.
func (l *Lab) claimID() string {
	l.tb.Helper()
	if err := os.MkdirAll(markerDir, 0o755); err != nil {
		l.tb.Fatalf("netlab: %v", err)
	}
	owner := fmt.Sprintf("%d %s\n", os.Getpid(), procStart(os.Getpid()))
	for i := 0; i < 10; i++ {
		b := make([]byte, 3)
		_, _ = rand.Read(b)
		id := hex.EncodeToString(b)
		f, err := os.OpenFile(filepath.Join(markerDir, id), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			l.tb.Fatalf("netlab: %v", err)
		}
		_, err = f.WriteString(owner)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			l.tb.Fatalf("netlab: %v", err)
		}
		return id
	}
	l.tb.Fatalf("netlab: could not pick a free lab ID")
	return ""
}

// procStart is the process's start time in clock ticks since boot, which
// together with the PID names a process even across PID reuse. Empty if the
// process does not exist.
func procStart(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// The command name (field 2) may contain spaces; fields after it are
	// plain. starttime is field 22 overall.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

// sweepStale removes labs whose owning process is gone: a test binary killed
// by a timeout or a signal runs no cleanups, and its namespaces (with any
// p2pnode still running inside) would otherwise stay until reboot.
func sweepStale(tb testing.TB, ipPath string) {
	entries, err := os.ReadDir(markerDir)
	if err != nil {
		return
	}
	var stale []string
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(markerDir, e.Name()))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) != 2 {
			continue
		}
		pid, err := strconv.Atoi(f[0])
		if err != nil {
			continue
		}
		if procStart(pid) != f[1] {
			stale = append(stale, e.Name())
		}
	}
	if len(stale) == 0 {
		return
	}
	all, err := listNamespaces(ipPath)
	if err != nil {
		return
	}
	for _, id := range stale {
		var errs []error
		for _, ns := range all {
			if strings.HasPrefix(ns, nsPrefix+id+"-") {
				errs = append(errs, removeNS(ipPath, ns))
			}
		}
		if err := errors.Join(errs...); err != nil {
			tb.Logf("netlab: removing stale lab %s: %v", id, err)
			continue
		}
		tb.Logf("netlab: removed stale lab %s left by a process that is gone", id)
		_ = os.Remove(filepath.Join(markerDir, id))
	}
}

// ID is the lab's random ID; every namespace name of the lab contains it.
func (l *Lab) ID() string { return l.id }

// Close kills every process still running in the lab's namespaces and
// deletes them. It is idempotent, and New already arranges for it to run
// when the test ends; call it yourself to tear down early.
func (l *Lab) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		nss := append([]string(nil), l.namespaces...)
		emus := append([]*emulator(nil), l.emulators...)
		l.mu.Unlock()
		var errs, reports []error
		// Link emulators first, cleanly, so that one that died during
		// the test is reported rather than silently swept away. Such a
		// report fails Close but is no failed teardown: the marker
		// still goes once the namespaces are gone.
		for _, e := range emus {
			stats, err := e.stop()
			reports = append(reports, err)
			if stats != "" {
				l.tb.Logf("netlab: link emulator %s (-seed %d): %s", e.name, e.seed, stats)
			}
		}
		// Kill everywhere first, so no process can keep talking across a
		// half-removed lab.
		for _, ns := range nss {
			errs = append(errs, killNS(l.ipPath, ns))
		}
		for _, e := range emus {
			select {
			case <-e.done:
			case <-time.After(5 * time.Second):
				errs = append(errs, fmt.Errorf("link emulator for %s still running after its namespace was killed", e.name))
			}
		}
		for i := len(nss) - 1; i >= 0; i-- {
			errs = append(errs, deleteNS(l.ipPath, nss[i]))
		}
		if left, err := listNamespaces(l.ipPath); err != nil {
			errs = append(errs, err)
		} else {
			for _, ns := range left {
				if strings.HasPrefix(ns, nsPrefix+l.id+"-") {
					errs = append(errs, fmt.Errorf("namespace %s still exists", ns))
				}
			}
		}
		teardownErr := errors.Join(errs...)
		if teardownErr == nil && l.id != "" {
			_ = os.Remove(filepath.Join(markerDir, l.id))
		}
		l.closeErr = errors.Join(append(reports, teardownErr)...)
	})
	return l.closeErr
}

func removeNS(ipPath, ns string) error {
	return errors.Join(killNS(ipPath, ns), deleteNS(ipPath, ns))
}

// killNS SIGKILLs every process in ns and waits (briefly) until none is left,
// so that deleting the namespace really frees it.
func killNS(ipPath, ns string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := runTool(context.Background(), ipPath, nil, "netns", "pids", ns)
		if err != nil {
			if strings.Contains(out, "No such file") || strings.Contains(out, "Invalid") {
				return nil // already gone
			}
			return err
		}
		pids := strings.Fields(out)
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v in %s survive SIGKILL", pids, ns)
		}
		for _, p := range pids {
			if pid, err := strconv.Atoi(p); err == nil && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func deleteNS(ipPath, ns string) error {
	if _, err := os.Stat(filepath.Join("/run/netns", ns)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	_, err := runTool(context.Background(), ipPath, nil, "netns", "delete", ns)
	return err
}

func listNamespaces(ipPath string) ([]string, error) {
	out, err := runTool(context.Background(), ipPath, nil, "netns", "list")
	if err != nil {
		return nil, err
	}
	var nss []string
	for _, line := range strings.Split(out, "\n") {
		// "NAME (id: N)" or just "NAME"
		if f := strings.Fields(line); len(f) > 0 {
			nss = append(nss, f[0])
		}
	}
	return nss, nil
}

// runTool runs one command with cmdTimeout and returns its combined output.
func runTool(ctx context.Context, path string, stdin []byte, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", filepath.Base(path), strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

func (l *Lab) mustIP(args ...string) {
	l.tb.Helper()
	if _, err := runTool(context.Background(), l.ipPath, nil, args...); err != nil {
		l.tb.Fatalf("netlab: %v", err)
	}
}

// mustSysctl sets sysctls (key=value) inside ns. `ip netns exec` is needed
// (not -n) because /proc/sys/net shows the namespace of the process reading
// it. It writes /proc/sys with sh rather than calling sysctl(8), which minimal
// images lack.
func (l *Lab) mustSysctl(ns string, kv ...string) {
	l.tb.Helper()
	var script []string
	for _, s := range kv {
		k, v, _ := strings.Cut(s, "=")
		script = append(script, fmt.Sprintf("echo %s > /proc/sys/%s", v, strings.ReplaceAll(k, ".", "/")))
	}
	if _, err := runTool(context.Background(), l.ipPath, nil, "netns", "exec", ns, "sh", "-ec", strings.Join(script, "\n")); err != nil {
		l.tb.Fatalf("netlab: %v", err)
	}
}

// newNS creates namespace nl<ID>-<suffix> with loopback up and IPv6 off.
// Caller holds l.mu, as do all setup helpers: setup is serialized, so that
// addresses and routes are handed out consistently.
func (l *Lab) newNS(suffix string) string {
	l.tb.Helper()
	ns := nsPrefix + l.id + "-" + suffix
	// Recorded before creation, so that Close removes it even if a later
	// step of the setup fails.
	l.namespaces = append(l.namespaces, ns)
	l.mustIP("netns", "add", ns)
	// Loopback up: services exposed on 127.0.0.1 inside a host must work.
	l.mustIP("-n", ns, "link", "set", "lo", "up")
	if _, err := os.Stat("/proc/sys/net/ipv6"); err == nil {
		l.mustSysctl(ns, "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	}
	return ns
}

// reserve checks and records a host or site name.
func (l *Lab) reserve(kind, name string) {
	l.tb.Helper()
	if !nameRE.MatchString(name) {
		l.tb.Fatalf("netlab: %s name %q: use 1-31 of a-z, 0-9 and '-'", kind, name)
	}
	key := kind + "/" + name
	if l.names[key] {
		l.tb.Fatalf("netlab: %s %q added twice", kind, name)
	}
	l.names[key] = true
}

// attachPublic plugs ns into the public bridge as ifname with the
// next public address, and routes the lab's other public subnets. A shaped
// link gets an emulator between ns and the bridge, in namespace "l-"+name.
// Caller holds l.mu.
func (l *Lab) attachPublic(ns, ifname, name string, sh shaping) net.IP {
	l.tb.Helper()
	if l.nextPub > 254 {
		l.tb.Fatalf("netlab: public segment is full")
	}
	n := l.nextPub
	l.nextPub++
	ip := net.IPv4(11, 0, 0, byte(n)).To4()
	port := "p" + strconv.Itoa(n)
	if sh.emulated() {
		l.shapeLocked(ns, ifname, port, name, sh)
	} else {
		l.mustIP("-n", ns, "link", "add", ifname, "type", "veth", "peer", "name", port, "netns", l.pubNS)
		l.mustIP("-n", l.pubNS, "link", "set", port, "master", "br0", "up")
	}
	l.mustIP("-n", ns, "addr", "add", ip.String()+"/24", "dev", ifname)
	l.mustIP("-n", ns, "link", "set", ifname, "up")
	for _, r := range l.routes {
		l.mustIP("-n", ns, "route", "add", r.dst.String(), "via", r.via.String())
	}
	l.publicSide = append(l.publicSide, ns)
	return ip
}

// AddPublicHost adds a host with its own address on the public segment, like
// a bootstrap node or relay on the internet. ShapeLink shapes its link to
// the segment; an invalid option fails the test.
func (l *Lab) AddPublicHost(name string, opts ...HostOption) *Host {
	l.tb.Helper()
	var c hostConfig
	for _, o := range opts {
		o(&c)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reserve("host", name)
	return l.addPublicHostLocked(name, nil, c.shape)
}

func (l *Lab) addPublicHostLocked(name string, site *Site, sh shaping) *Host {
	l.tb.Helper()
	ns := l.newNS("h-" + name)
	ip := l.attachPublic(ns, "eth0", "h-"+name, sh)
	return &Host{Name: name, NS: ns, IP: ip, Site: site, lab: l}
}

// Command returns a command that runs name inside the host's namespace
// (`ip netns exec NS name args...`). ctx bounds its life: give it a deadline
// or cancel it; the lab kills whatever is still running at teardown anyway.
// Its process is the command itself (ip execs it), so ctx's cancellation and
// cmd.Process.Signal reach it directly.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, h.lab.ipPath, append([]string{"netns", "exec", h.NS, name}, args...)...)
	// Without it, Wait blocks for as long as any grandchild keeps the
	// output pipes open, even after ctx killed the command.
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// Run runs name inside the host's namespace and returns its combined
// output. Without a deadline on ctx it is bounded by RunTimeout.
func (h *Host) Run(ctx context.Context, name string, args ...string) (string, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, RunTimeout)
		defer cancel()
	}
	out, err := h.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s on %s: %w: %s", strings.Join(append([]string{name}, args...), " "), h.Name, err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// Do runs f on an OS thread that has entered h's network namespace:
// sockets f creates (net.Listen, net.Dial) stay in that namespace whatever
// goroutine uses them later, so a test can be a client or a server on a lab
// host without a helper process. The thread goes back to the original
// namespace afterwards; if it cannot, it stays locked and the runtime ends
// it with its goroutine. Do returns f's error, or why it could not enter.
func (h *Host) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		origin, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(origin)
		target, err := unix.Open("/run/netns/"+h.NS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", h.NS, err)
			return
		}
		ferr := f()
		if err := unix.Setns(origin, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("leave namespace %s: %w", h.NS, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// AddPublicIP gives a host on the public segment (a public host, or one of
// a site without a router) a second address on eth0, the next free
// 11.0.0.N, and returns it: a server that needs two IP addresses, such as
// an RFC 5780 STUN server, gets its alternate address so.
func (h *Host) AddPublicIP() net.IP {
	l := h.lab
	l.tb.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	h.mustBePublic("AddPublicIP")
	if l.nextPub > 254 {
		l.tb.Fatalf("netlab: public segment is full")
	}
	ip := net.IPv4(11, 0, 0, byte(l.nextPub)).To4()
	l.nextPub++
	l.mustIP("-n", h.NS, "addr", "add", ip.String()+"/24", "dev", "eth0")
	return ip
}

// RoutedRange is the lab's public range for hosts that need many
// addresses in distinct /16 networks (AddRoutedIPs): a simulated internet
// of DHT servers, which kad-dht's routing-table diversity filter would
// otherwise take at most three of from one /16. It is public to go-libp2p
// (not RFC 1918, not a documentation range), not one of the legacy class A
// networks that the filter groups as a whole /8 (go-libp2p-kbucket's
// peerdiversity: 12.0.0.0/8 is one, and a farm there filled no routing
// table), and routed only inside the lab.
var RoutedRange = &net.IPNet{IP: net.IPv4(13, 0, 0, 0).To4(), Mask: net.CIDRMask(8, 32)}

// routedIP is address i of RoutedRange (see AddRoutedIPs).
func routedIP(i int) net.IP {
	return net.IPv4(RoutedRange.IP[0], byte(i%256), byte(i/256), 1).To4()
}

// MaxRoutedIPs is how many addresses AddRoutedIPs hands out in one lab.
const MaxRoutedIPs = 256 * 256

// AddRoutedIPs gives a host on the public segment n more addresses from
// RoutedRange and returns them: address i of the lab is 13.(i mod 256).(i
// div 256).1, so the first 256 are each in a /16 of their own. Every
// public-side namespace of the lab, now and later, routes RoutedRange via
// the host; so only one host of a lab may call it. It fails the test for a
// host behind a router, for a second host, or past MaxRoutedIPs.
func (h *Host) AddRoutedIPs(n int) []net.IP {
	l := h.lab
	l.tb.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	h.mustBePublic("AddRoutedIPs")
	if l.routedHost != nil && l.routedHost != h {
		l.tb.Fatalf("netlab: AddRoutedIPs: %s is routed to host %q already, not to %q", RoutedRange, l.routedHost.Name, h.Name)
	}
	if l.nextRouted+n > MaxRoutedIPs {
		l.tb.Fatalf("netlab: AddRoutedIPs(%d): the lab has %d of %d left", n, MaxRoutedIPs-l.nextRouted, MaxRoutedIPs)
	}
	if l.routedHost == nil {
		r := route{dst: RoutedRange, via: h.IP}
		for _, ns := range l.publicSide {
			if ns != h.NS {
				l.mustIP("-n", ns, "route", "add", r.dst.String(), "via", r.via.String())
			}
		}
		l.routes = append(l.routes, r)
		l.routedHost = h
	}
	ips := make([]net.IP, n)
	var batch bytes.Buffer
	for k := range ips {
		i := l.nextRouted + k
		ips[k] = routedIP(i)
		fmt.Fprintf(&batch, "addr add %s/32 dev eth0\n", ips[k])
	}
	l.nextRouted += n
	// One ip process for all of them: a thousand would take seconds one
	// by one.
	if _, err := runTool(context.Background(), l.ipPath, batch.Bytes(), "-n", h.NS, "-batch", "-"); err != nil {
		l.tb.Fatalf("netlab: AddRoutedIPs: %v", err)
	}
	return ips
}

// mustBePublic fails the test, in a message starting with what, unless h
// is on the public segment.
func (h *Host) mustBePublic(what string) {
	h.lab.tb.Helper()
	if h.Site != nil && h.Site.NAT != NATNone {
		h.lab.tb.Fatalf("netlab: %s: host %q is on a LAN behind a router, not on the public segment", what, h.Name)
	}
}

func (h *Host) String() string { return h.Name + "(" + h.IP.String() + ")" }
