//go:build linux

package netlab

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Direction is the shape of one direction of a link. The zero value adds
// nothing.
type Direction struct {
	// Delay is the one-way propagation delay added to every packet.
	Delay time.Duration
	// Jitter varies each packet's delay uniformly within ±Jitter; it must
	// not exceed Delay. Packets are never reordered: a packet that drew a
	// short delay waits for the one ahead of it.
	Jitter time.Duration
	// Loss is the probability, in percent (0-100), that a packet is
	// dropped, independently of every other. A direction with loss
	// carries single packets, not GSO super-frames (see the package doc),
	// which caps its throughput lower.
	Loss float64
	// RateMbit is the link's rate in Mbit/s (10^6 bit/s) of Ethernet frames
	// (headers included, no preamble or FCS); 0 is unlimited. A TCP flow's
	// goodput is then about 95 % of it (1448 payload bytes per 1514-byte
	// frame).
	RateMbit float64
	// QueueBytes is how many bytes may wait for the rate before further
	// packets are dropped (tail drop). 0 picks a default: the bytes the
	// rate carries in max(20 ms, the link's round trip Up.Delay+Down.Delay
	// plus both jitters), and at least 32 KiB, so that one TCP flow over
	// the link can fill it. It has no effect without RateMbit.
	QueueBytes int
}

func (d Direction) zero() bool { return d == Direction{} }

// Link is the shape of a link between a host or site router and the public
// segment. Up is from the host or router towards the segment, Down the
// other way. A path between two shaped hosts goes through both links: its
// round trip is the sum of the four delays.
type Link struct {
	Up, Down Direction
}

// SymmetricLink returns a link shaped as d in both directions; the round
// trip it adds is 2·d.Delay.
func SymmetricLink(d Direction) Link { return Link{Up: d, Down: d} }

func (k Link) zero() bool { return k.Up.zero() && k.Down.zero() }

// validate returns what is wrong with k, or nil.
func (k Link) validate() error {
	var errs []error
	for _, d := range []struct {
		name string
		d    Direction
	}{{"Up", k.Up}, {"Down", k.Down}} {
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("%s: "+format, append([]any{d.name}, args...)...))
		}
		if d.d.Delay < 0 || d.d.Delay > time.Minute {
			bad("Delay %v: want 0 to 1m", d.d.Delay)
		}
		if d.d.Jitter < 0 || d.d.Jitter > d.d.Delay {
			bad("Jitter %v: want 0 to Delay (%v)", d.d.Jitter, d.d.Delay)
		}
		if !(d.d.Loss >= 0 && d.d.Loss <= 100) {
			bad("Loss %v: want a percentage, 0 to 100", d.d.Loss)
		}
		if !(d.d.RateMbit >= 0 && d.d.RateMbit <= 100000) {
			bad("RateMbit %v: want 0 (unlimited) to 100000", d.d.RateMbit)
		}
		if d.d.QueueBytes < 0 {
			bad("QueueBytes %d: want >= 0 (0: default)", d.d.QueueBytes)
		}
		if d.d.QueueBytes > 0 && d.d.QueueBytes < 1514 {
			bad("QueueBytes %d: must hold at least one full-size frame (1514)", d.d.QueueBytes)
		}
	}
	return errors.Join(errs...)
}

// queueBytes is d's queue limit, with the default filled in.
func (k Link) queueBytes(d Direction) int {
	if d.RateMbit == 0 {
		return 0
	}
	if d.QueueBytes > 0 {
		return d.QueueBytes
	}
	rtt := max(20*time.Millisecond, k.Up.Delay+k.Down.Delay+k.Up.Jitter+k.Down.Jitter)
	return max(32<<10, int(math.Ceil(d.RateMbit*1e6/8*rtt.Seconds())))
}

// spec is d in linkem's -up/-down syntax.
func (k Link) spec(d Direction) string {
	return fmt.Sprintf("delay=%s,jitter=%s,loss=%s,rate=%s,queue=%d", d.Delay, d.Jitter,
		strconv.FormatFloat(d.Loss, 'g', -1, 64), strconv.FormatFloat(d.RateMbit, 'g', -1, 64), k.queueBytes(d))
}

// shaping is how one public-side link is built.
type shaping struct {
	link Link
	// emulate forces the emulator even for a zero link (benchmarks and
	// tests of the emulator itself).
	emulate bool
}

func (s shaping) emulated() bool { return s.emulate || !s.link.zero() }

// ShapeWAN shapes the site router's link to the public segment (its "wan"
// side); Up is from the site towards the segment. For NATNone, whose hosts
// sit on the segment themselves, each host's own link gets the shape.
// AddSite fails the test if k is invalid (see Direction).
func ShapeWAN(k Link) SiteOption { return func(s *Site) { s.shape.link = k } }

// HostOption changes how AddPublicHost builds a host.
type HostOption func(*hostConfig)

type hostConfig struct {
	shape shaping
}

// ShapeLink shapes a public host's link to the public segment; Up is from
// the host towards the segment. AddPublicHost fails the test if k is
// invalid (see Direction).
func ShapeLink(k Link) HostOption { return func(c *hostConfig) { c.shape.link = k } }

// emulatedLink puts the emulator on a host's link even if it has no shape,
// to measure what the emulator itself costs.
func emulatedLink() HostOption { return func(c *hostConfig) { c.shape.emulate = true } }

// emulator is one running linkem.
type emulator struct {
	name string // the namespace suffix, for messages
	seed uint64 // of its loss and jitter, to replay a run
	cmd  *exec.Cmd

	stderr bytes.Buffer // written by exec until Wait returns
	ready  chan struct{}
	done   chan struct{} // closed when the process has been waited for
	mu     sync.Mutex
	lines  []string // stdout after "ready"
	err    error    // Wait's result, set before done is closed
}

// shapeLocked builds the shaped variant of attachPublic's veth: ifname in
// ns, the shaper namespace, and port in pub. Caller holds l.mu.
func (l *Lab) shapeLocked(ns, ifname, port, name string, sh shaping) {
	l.tb.Helper()
	if err := sh.link.validate(); err != nil {
		l.tb.Fatalf("netlab: link of %s: %v", name, err)
	}
	bin, err := linkemBinary()
	if err != nil {
		l.tb.Fatalf("netlab: %v", err)
	}
	shNS := l.newNS("l-" + name)
	l.mustIP("-n", ns, "link", "add", "name", ifname, "type", "veth", "peer", "name", "a", "netns", shNS)
	l.mustIP("-n", shNS, "link", "add", "name", "b", "type", "veth", "peer", "name", port, "netns", l.pubNS)
	// Single frames into the emulator where there is loss (see the
	// package's shaping notes): TCP in ns builds no super-frames for
	// ifname, and the bridge segments what it forwards to port.
	if sh.link.Up.Loss > 0 {
		l.mustIP("-n", ns, "link", "set", "dev", ifname, "gso_max_segs", "1")
	}
	if sh.link.Down.Loss > 0 {
		l.mustIP("-n", l.pubNS, "link", "set", "dev", port, "gso_max_segs", "1")
	}
	for _, dev := range []string{"a", "b"} {
		l.mustIP("-n", shNS, "link", "set", "dev", dev, "up")
	}
	l.mustIP("-n", l.pubNS, "link", "set", port, "master", "br0", "up")

	e := &emulator{name: name, seed: rand.Uint64(), ready: make(chan struct{}), done: make(chan struct{})}
	e.cmd = exec.Command(l.ipPath, "netns", "exec", shNS, bin, "-a", "a", "-b", "b",
		"-up", sh.link.spec(sh.link.Up), "-down", sh.link.spec(sh.link.Down), "-seed", strconv.FormatUint(e.seed, 10))
	e.cmd.Stderr = &e.stderr
	e.cmd.WaitDelay = time.Second
	out, err := e.cmd.StdoutPipe()
	if err != nil {
		l.tb.Fatalf("netlab: %v", err)
	}
	if err := e.cmd.Start(); err != nil {
		l.tb.Fatalf("netlab: start link emulator for %s: %v", name, err)
	}
	// Recorded at once, so that Close stops it even if setup fails below.
	l.emulators = append(l.emulators, e)
	go e.wait(out)
	select {
	case <-e.ready:
	case <-e.done:
		l.tb.Fatalf("netlab: link emulator for %s exited before it was ready: %v: %s", name, e.err, bytes.TrimSpace(e.stderr.Bytes()))
	case <-time.After(cmdTimeout):
		l.tb.Fatalf("netlab: link emulator for %s not ready within %v", name, cmdTimeout)
	}
}

// wait reads e's output until it exits; it owns e.lines and e.err.
func (e *emulator) wait(out io.Reader) {
	sc := bufio.NewScanner(out)
	ready := false
	for sc.Scan() {
		if !ready && sc.Text() == "ready" {
			ready = true
			close(e.ready)
			continue
		}
		e.mu.Lock()
		e.lines = append(e.lines, sc.Text())
		e.mu.Unlock()
	}
	err := e.cmd.Wait()
	e.mu.Lock()
	e.err = err
	e.mu.Unlock()
	close(e.done)
}

// stop ends e with SIGTERM and returns its counters line ("stats {...}"),
// or an error if it had died before, did not stop, or failed.
func (e *emulator) stop() (string, error) {
	select {
	case <-e.done:
		return "", fmt.Errorf("link emulator for %s died before Close: %v: %s", e.name, e.err, bytes.TrimSpace(e.stderr.Bytes()))
	default:
	}
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.done:
	case <-time.After(5 * time.Second):
		return "", fmt.Errorf("link emulator for %s did not stop on SIGTERM within 5s", e.name)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.err != nil {
		return "", fmt.Errorf("link emulator for %s: %v: %s", e.name, e.err, bytes.TrimSpace(e.stderr.Bytes()))
	}
	for _, line := range e.lines {
		if strings.HasPrefix(line, "stats ") {
			return line, nil
		}
	}
	return "", nil
}

// linkem's binary, built once per process.
var linkemBuild struct {
	once sync.Once
	path string
	err  error
}

// binDirPrefix names the temporary directory that holds the emulator
// binary: netlab-linkem-<pid>-<start ticks>, so that sweepStale can remove
// those of processes that are gone.
const binDirPrefix = "netlab-linkem-"

// linkemBinary builds the emulator (once per process) and returns its path.
func linkemBinary() (string, error) {
	linkemBuild.once.Do(func() {
		dir := filepath.Join(os.TempDir(), fmt.Sprintf("%s%d-%s", binDirPrefix, os.Getpid(), procStart(os.Getpid())))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			linkemBuild.err = err
			return
		}
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		path := filepath.Join(dir, "linkem")
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		// No -race, not even from GOFLAGS: the emulator is a process of
		// its own, and the race detector would only make it slower.
		cmd := exec.CommandContext(ctx, goTool, "build", "-o", path, "github.com/p2pnode/p2pnode/internal/netlab/linkem")
		for _, kv := range os.Environ() {
			if v, ok := strings.CutPrefix(kv, "GOFLAGS="); ok {
				var keep []string
				for _, f := range strings.Fields(v) {
					if f != "-race" && f != "--race" {
						keep = append(keep, f)
					}
				}
				kv = "GOFLAGS=" + strings.Join(keep, " ")
			}
			cmd.Env = append(cmd.Env, kv)
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			linkemBuild.err = fmt.Errorf("go build link emulator (from this module's source, so run inside the module): %v: %s", err, bytes.TrimSpace(out))
			return
		}
		linkemBuild.path = path
	})
	return linkemBuild.path, linkemBuild.err
}

// sweepBinaries removes emulator binaries built by processes that are gone.
func sweepBinaries() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), binDirPrefix+"*"))
	for _, dir := range dirs {
		pid, start, ok := strings.Cut(strings.TrimPrefix(filepath.Base(dir), binDirPrefix), "-")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(pid)
		if err != nil || n == os.Getpid() {
			continue
		}
		if procStart(n) != start {
			_ = os.RemoveAll(dir)
		}
	}
}
