//go:build linux

package netlab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/p2pnode/p2pnode/internal/testenv"
)

// udpIn opens a UDP socket on h's address, inside h's namespace, with a
// receive buffer big enough that a burst of test datagrams is not lost in
// the receiving socket rather than on the link. It is closed when t ends.
func udpIn(t testing.TB, h *Host) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := h.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: h.IP})
		return err
	})
	if err != nil {
		t.Fatalf("udp socket on %s: %v", h, err)
	}
	t.Cleanup(func() { c.Close() })
	// SO_RCVBUFFORCE: as root, past net.core.rmem_max.
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, 16<<20)
	}); err != nil || serr != nil {
		t.Fatalf("SO_RCVBUFFORCE: %v %v", err, serr)
	}
	return c
}

// tcpPair returns a TCP connection from a to z, both ends (client, server),
// closed when t ends.
func tcpPair(t testing.TB, a, z *Host) (client, server net.Conn) {
	t.Helper()
	var ln net.Listener
	if err := z.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", net.JoinHostPort(z.IP.String(), "0"))
		return err
	}); err != nil {
		t.Fatalf("listen on %s: %v", z, err)
	}
	defer ln.Close()
	type accepted struct {
		c   net.Conn
		err error
	}
	acc := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		acc <- accepted{c, err}
	}()
	if err := a.Do(func() error {
		var err error
		client, err = net.DialTimeout("tcp4", ln.Addr().String(), 10*time.Second)
		return err
	}); err != nil {
		t.Fatalf("dial %s from %s: %v", ln.Addr(), a, err)
	}
	t.Cleanup(func() { client.Close() })
	select {
	case r := <-acc:
		if r.err != nil {
			t.Fatalf("accept on %s: %v", z, r.err)
		}
		server = r.c
	case <-time.After(10 * time.Second):
		t.Fatalf("accept on %s: nothing within 10s", z)
	}
	t.Cleanup(func() { server.Close() })
	return client, server
}

// echo answers every datagram on c with itself, until c is closed.
func echo(t testing.TB, c *net.UDPConn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			_, _ = c.WriteToUDP(buf[:n], from)
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
}

// rtts sends n echo requests from c to to, every interval, and returns the
// round trips of those that came back, sorted.
func rtts(t testing.TB, c *net.UDPConn, to *net.UDPAddr, n int, interval time.Duration) []time.Duration {
	t.Helper()
	sent := make([]time.Time, n)
	var mu sync.Mutex
	stop := make(chan struct{})
	sendDone := make(chan error, 1)
	go func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		var msg [8]byte
		for i := 0; i < n; i++ {
			binary.BigEndian.PutUint64(msg[:], uint64(i))
			mu.Lock()
			sent[i] = time.Now()
			mu.Unlock()
			if _, err := c.WriteToUDP(msg[:], to); err != nil {
				sendDone <- err
				return
			}
			select {
			case <-tick.C:
			case <-stop:
				sendDone <- nil
				return
			}
		}
		sendDone <- nil
	}()
	defer func() {
		close(stop)
		if err := <-sendDone; err != nil {
			t.Errorf("send: %v", err)
		}
	}()
	var got []time.Duration
	seen := make([]bool, n)
	buf := make([]byte, 64)
	// Bound: every request sent, plus a generous round trip (a lost
	// echo costs this wait).
	_ = c.SetReadDeadline(time.Now().Add(time.Duration(n)*interval + 2*time.Second))
	defer c.SetReadDeadline(time.Time{})
	for len(got) < n {
		k, _, err := c.ReadFromUDP(buf)
		if err != nil {
			break
		}
		now := time.Now()
		if k != 8 {
			continue
		}
		i := binary.BigEndian.Uint64(buf[:8])
		if i >= uint64(n) || seen[i] {
			continue
		}
		seen[i] = true
		mu.Lock()
		got = append(got, now.Sub(sent[i]))
		mu.Unlock()
	}
	slices.Sort(got)
	return got
}

func ms(d time.Duration) time.Duration { return d * time.Millisecond }

// TestLinkRTT checks that a UDP round trip through shaped links takes what
// the links' delays add up to: within ±10 % + 1 ms, median of 100 echoes.
func TestLinkRTT(t *testing.T) {
	l := New(t)
	cases := []struct {
		name string
		a, z Link // of the client and the echo host
		nat  bool // the client is behind a NAT router, a its WAN link
		want time.Duration
	}{
		// 40 ms, all on the client's link, here its router's.
		{"40ms-one-link-nat", SymmetricLink(Direction{Delay: ms(20)}), Link{}, true, ms(40)},
		// 150 ms over both links, asymmetric, and with a rate and loss
		// that must not change the idle round trip.
		{"150ms-two-links", Link{Up: Direction{Delay: ms(30), RateMbit: 20}, Down: Direction{Delay: ms(50), Loss: 1}},
			SymmetricLink(Direction{Delay: ms(35)}), false, ms(150)},
		// Jitter ±5 ms on each of four directions: the median stays.
		{"60ms-jitter", SymmetricLink(Direction{Delay: ms(20), Jitter: ms(5)}), SymmetricLink(Direction{Delay: ms(10), Jitter: ms(5)}), false, ms(60)},
		{"unshaped", Link{}, Link{}, false, 0},
	}
	type pair struct{ a, z *Host }
	var pairs []pair
	for i, c := range cases {
		p := pair{z: l.AddPublicHost("e"+strconv.Itoa(i), ShapeLink(c.z))}
		if c.nat {
			p.a = l.AddSite("n"+strconv.Itoa(i), NATPortRestricted, ShapeWAN(c.a)).AddHost("c" + strconv.Itoa(i))
		} else {
			p.a = l.AddPublicHost("c"+strconv.Itoa(i), ShapeLink(c.a))
		}
		pairs = append(pairs, p)
	}
	var wg sync.WaitGroup
	for i, c := range cases {
		wg.Add(1)
		// Concurrently: each case mostly waits.
		go func() {
			defer wg.Done()
			t.Run(c.name, func(t *testing.T) {
				p := pairs[i]
				srv := udpIn(t, p.z)
				echo(t, srv)
				cli := udpIn(t, p.a)
				to := srv.LocalAddr().(*net.UDPAddr)
				// Warm-up: ARP and the bridge's MAC learning.
				if got := rtts(t, cli, to, 3, 50*time.Millisecond); len(got) == 0 {
					t.Fatalf("no echo from %s", to)
				}
				const n = 100
				got := rtts(t, cli, to, n, 10*time.Millisecond)
				if len(got) < n*9/10 {
					t.Fatalf("%d of %d echoes came back", len(got), n)
				}
				med := got[len(got)/2]
				tol := c.want/10 + time.Millisecond
				t.Logf("configured %v: median %v, min %v, max %v over %d echoes", c.want, med, got[0], got[len(got)-1], len(got))
				if med < c.want-tol || med > c.want+tol {
					t.Errorf("median RTT %v, want %v ± %v", med, c.want, tol)
				}
			})
		}()
	}
	wg.Wait()
}

// oneWay sends n numbered datagrams from c to to, about rate per second,
// and returns how many the receiver r got and whether they came in order.
func oneWay(t testing.TB, c, r *net.UDPConn, to *net.UDPAddr, n, perSec int) (got int, reordered int) {
	t.Helper()
	type result struct{ got, reordered int }
	res := make(chan result, 1)
	lastSent := make(chan struct{})
	go func(sending <-chan struct{}) {
		buf := make([]byte, 256)
		var rs result
		next := uint32(0)
		for {
			// While the sender sends, then for as long again as any
			// datagram can take to arrive.
			select {
			case <-sending:
				_ = r.SetReadDeadline(time.Now().Add(2 * time.Second))
				sending = nil
			default:
				if sending != nil {
					_ = r.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				}
			}
			k, err := r.Read(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) && sending != nil {
				continue
			}
			if err != nil {
				break
			}
			if k < 4 {
				continue
			}
			seq := binary.BigEndian.Uint32(buf)
			if seq < next {
				rs.reordered++
			} else {
				next = seq + 1
			}
			rs.got++
		}
		res <- rs
	}(lastSent)
	msg := make([]byte, 100)
	const burst = 50
	start := time.Now()
	for i := 0; i < n; i++ {
		binary.BigEndian.PutUint32(msg, uint32(i))
		if _, err := c.WriteToUDP(msg, to); err != nil {
			t.Errorf("send #%d: %v", i, err)
			break
		}
		if i%burst == burst-1 {
			// Pace: no faster than perSec on average.
			if ahead := time.Duration(i+1)*time.Second/time.Duration(perSec) - time.Since(start); ahead > 0 {
				time.Sleep(ahead)
			}
		}
	}
	close(lastSent)
	rs := <-res
	return rs.got, rs.reordered
}

// TestLinkLossOrder checks random loss (within ±1 point over 10,000
// datagrams, counted one way) and that nothing is reordered, with or
// without jitter.
func TestLinkLossOrder(t *testing.T) {
	l := New(t)
	cases := []struct {
		name string
		link Link // of the shaped host
		up   bool // datagrams from the shaped host (else towards it)
		loss float64
	}{
		{"up-1pct", Link{Up: Direction{Loss: 1, Delay: ms(5)}}, true, 1},
		{"down-5pct", Link{Down: Direction{Loss: 5, Delay: ms(5), RateMbit: 100}}, false, 5},
		{"jitter-no-loss", SymmetricLink(Direction{Delay: ms(10), Jitter: ms(8)}), true, 0},
	}
	type pair struct{ a, z *Host }
	var pairs []pair
	for i, c := range cases {
		pairs = append(pairs, pair{
			a: l.AddPublicHost("s"+strconv.Itoa(i), ShapeLink(c.link)),
			z: l.AddPublicHost("p" + strconv.Itoa(i)),
		})
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			from, to := pairs[i].a, pairs[i].z
			if !c.up {
				from, to = to, from
			}
			sc, rc, ec := udpIn(t, from), udpIn(t, to), udpIn(t, to)
			// ARP first, so that the count starts on a warm path.
			echo(t, ec)
			if got := rtts(t, sc, ec.LocalAddr().(*net.UDPAddr), 5, 20*time.Millisecond); len(got) == 0 {
				t.Fatalf("no echo from %s", to)
			}
			const n = 10000
			got, reordered := oneWay(t, sc, rc, rc.LocalAddr().(*net.UDPAddr), n, 20000)
			lost := 100 * float64(n-got) / n
			t.Logf("%d of %d datagrams arrived: %.2f %% lost (configured %g %%), %d out of order", got, n, lost, c.loss, reordered)
			if lost < c.loss-1 || lost > c.loss+1 {
				t.Errorf("lost %.2f %%, want %g ± 1", lost, c.loss)
			}
			if reordered > 0 {
				t.Errorf("%d datagrams arrived after a later one", reordered)
			}
		})
	}
}

// TestLinkRate checks that one TCP flow through a rate-limited link gets
// the rate: goodput within ±10 % of rate × 1448/1514 (TCP payload per
// full-size frame), measured for 3 s after 0.5 s of ramp-up.
func TestLinkRate(t *testing.T) {
	l := New(t)
	cases := []struct {
		name string
		link Link
		up   bool // the flow leaves the shaped host (else it arrives there)
		nat  bool // the shaped host is behind a NAT router, link its WAN
		rate float64
	}{
		{"up-50mbit", Link{Up: Direction{RateMbit: 50}}, true, false, 50},
		{"down-100mbit-20ms-rtt", Link{Up: Direction{Delay: ms(10)}, Down: Direction{Delay: ms(10), RateMbit: 100}}, false, false, 100},
		// Through a router, which forwards its LAN host's GSO frames.
		{"nat-up-50mbit-20ms-rtt", Link{Up: Direction{Delay: ms(10), RateMbit: 50}, Down: Direction{Delay: ms(10)}}, true, true, 50},
	}
	type pair struct{ a, z *Host }
	var pairs []pair
	for i, c := range cases {
		p := pair{z: l.AddPublicHost("p" + strconv.Itoa(i))}
		if c.nat {
			p.a = l.AddSite("n"+strconv.Itoa(i), NATPortRestricted, ShapeWAN(c.link)).AddHost("s" + strconv.Itoa(i))
		} else {
			p.a = l.AddPublicHost("s"+strconv.Itoa(i), ShapeLink(c.link))
		}
		pairs = append(pairs, p)
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			from, to := pairs[i].a, pairs[i].z
			if !c.up {
				if c.nat {
					t.Fatal("a flow into a NAT site needs a mapping; not a case here")
				}
				from, to = to, from
			}
			cli, srv := tcpPair(t, from, to)
			got := goodput(t, cli, srv, 500*time.Millisecond, 3*time.Second)
			want := c.rate * 1e6 / 8 * 1448 / 1514
			t.Logf("goodput %.2f MB/s = %.1f Mbit/s; configured %g Mbit/s of frames, %.1f Mbit/s of payload", got/1e6, got*8/1e6, c.rate, want*8/1e6)
			if got < want*0.9 || got > want*1.1 {
				t.Errorf("goodput %.1f Mbit/s, want %.1f ± 10 %%", got*8/1e6, want*8/1e6)
			}
		})
	}
}

// goodput streams from cli to srv for warm+span and returns the bytes per
// second srv received during span.
func goodput(t testing.TB, cli, srv net.Conn, warm, span time.Duration) float64 {
	t.Helper()
	var received atomic.Int64
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		buf := make([]byte, 256<<10)
		for {
			n, err := srv.Read(buf)
			received.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	end := time.Now().Add(warm + span + 2*time.Second)
	_ = cli.SetWriteDeadline(end)
	writeDone := make(chan error, 1)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			if _, err := cli.Write(buf); err != nil {
				writeDone <- err
				return
			}
		}
	}()
	time.Sleep(warm) // a measurement window, not synchronisation
	b0, t0 := received.Load(), time.Now()
	time.Sleep(span)
	b1, t1 := received.Load(), time.Now()
	cli.Close()
	if err := <-writeDone; err != nil && !errors.Is(err, net.ErrClosed) {
		t.Errorf("write: %v", err)
	}
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	<-readDone
	return float64(b1-b0) / t1.Sub(t0).Seconds()
}

// TestLinkValidate checks that bad shapes are refused before anything is
// built.
func TestLinkValidate(t *testing.T) {
	for _, c := range []struct {
		link Link
		want string
	}{
		{SymmetricLink(Direction{Delay: -time.Millisecond}), "Delay"},
		{Link{Up: Direction{Delay: ms(1), Jitter: ms(2)}}, "Jitter"},
		{Link{Down: Direction{Loss: 101}}, "Loss"},
		{Link{Down: Direction{RateMbit: -1}}, "RateMbit"},
		{Link{Up: Direction{RateMbit: 1, QueueBytes: 100}}, "QueueBytes"},
	} {
		err := c.link.validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error about %s", c.link, err, c.want)
		}
	}
	if err := SymmetricLink(Direction{Delay: ms(10), Jitter: ms(10), Loss: 100, RateMbit: 1, QueueBytes: 1514}).validate(); err != nil {
		t.Errorf("valid link refused: %v", err)
	}
}

// emulatorCPU is the CPU time the lab's emulators have used so far.
func emulatorCPU(t testing.TB, l *Lab) time.Duration {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var total time.Duration
	for _, e := range l.emulators {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", e.cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		// utime and stime are fields 14 and 15, in clock ticks (100 Hz).
		for _, k := range f[11:13] {
			v, _ := strconv.Atoi(k)
			total += time.Duration(v) * 10 * time.Millisecond
		}
	}
	return total
}

// BenchmarkLinkem measures TCP through one emulated link: MB/s of payload
// and the emulator's CPU (emu-cpu-%, of one core). Run it with
//
//	go test -run '^$' -bench BenchmarkLinkem -benchtime 3s ./internal/netlab/
func BenchmarkLinkem(b *testing.B) {
	for _, c := range []struct {
		name string
		opt  HostOption
	}{
		{"plain-veth", ShapeLink(Link{})},
		{"emulated-unshaped", emulatedLink()},
		{"shaped-1gbit", ShapeLink(SymmetricLink(Direction{RateMbit: 1000}))},
		{"shaped-1gbit-10ms", ShapeLink(SymmetricLink(Direction{RateMbit: 1000, Delay: ms(5)}))},
		// Loss makes the kernel hand over single packets (no GSO): the
		// emulator's per-packet ceiling.
		{"shaped-1gbit-loss-0.01pct", ShapeLink(SymmetricLink(Direction{RateMbit: 1000, Loss: 0.01}))},
	} {
		b.Run(c.name, func(b *testing.B) {
			l := New(b)
			a := l.AddPublicHost("a", c.opt)
			z := l.AddPublicHost("z")
			cli, srv := tcpPair(b, a, z)
			drained := make(chan struct{})
			go func() { _, _ = io.Copy(io.Discard, srv); close(drained) }()
			b.Cleanup(func() { srv.Close(); <-drained })
			buf := make([]byte, 64<<10)
			b.SetBytes(int64(len(buf)))
			cpu0, t0 := emulatorCPU(b, l), time.Now()
			for b.Loop() {
				if _, err := cli.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(100*float64(emulatorCPU(b, l)-cpu0)/float64(time.Since(t0)), "emu-cpu-%")
		})
	}
}

// emulatorProcs lists the running processes whose executable is the link
// emulator binary this process built.
func emulatorProcs(t testing.TB) []int {
	t.Helper()
	bin, err := linkemBinary()
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink("/proc/" + e.Name() + "/exe"); err == nil && exe == bin {
			pids = append(pids, pid)
		}
	}
	return pids
}

// recordTB keeps the errors a lab reports at teardown instead of failing
// the test with them, for tests that make teardown fail on purpose.
type recordTB struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recordTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// TestLinkEmulatorDied checks that an emulator that dies during the test is
// reported by Close, and still leaves nothing behind.
func TestLinkEmulatorDied(t *testing.T) {
	rec := &recordTB{TB: t}
	t.Cleanup(func() {
		// Runs after the lab's own cleanup (cleanups run last first).
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if len(rec.errs) != 1 || !strings.Contains(rec.errs[0], "died before Close") {
			t.Errorf("teardown reported %q, want one error saying the emulator died before Close", rec.errs)
		}
	})
	l := New(rec)
	l.AddPublicHost("a", ShapeLink(SymmetricLink(Direction{Delay: ms(1)})))
	l.mu.Lock()
	e := l.emulators[0]
	l.mu.Unlock()
	if err := e.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-e.done:
	case <-time.After(10 * time.Second):
		t.Fatal("killed emulator not reaped within 10s")
	}
	err := l.Close()
	if err == nil || !strings.Contains(err.Error(), "died before Close") {
		t.Errorf("Close: %v, want an error saying the emulator died", err)
	}
	assertGone(t, l.ID())
}

// TestLinkUDPGSO checks that UDP GSO super-frames (what QUIC stacks send)
// cross an emulated link: the receiver gets every segment as a datagram.
func TestLinkUDPGSO(t *testing.T) {
	l := New(t)
	for _, c := range []struct {
		name  string
		link  Link
		slack int // segments that may be lost
	}{
		{"whole", SymmetricLink(Direction{Delay: ms(2), RateMbit: 100}), 0},
		// Loss: the kernel segments before the emulator. 0.001 % of
		// about 210 frames: one lost in 500 runs, two in 200,000.
		{"segmented", SymmetricLink(Direction{Delay: ms(2), Loss: 0.001}), 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := l.AddPublicHost("g-"+c.name, ShapeLink(c.link))
			z := l.AddPublicHost("r-" + c.name)
			sc, rc, ec := udpIn(t, a), udpIn(t, z), udpIn(t, z)
			// ARP first: a neighbour entry being resolved queues only
			// a few packets.
			echo(t, ec)
			if got := rtts(t, sc, ec.LocalAddr().(*net.UDPAddr), 3, 20*time.Millisecond); len(got) == 0 {
				t.Fatalf("no echo from %s", z)
			}
			const seg, segs, rounds = 1200, 10, 20
			rcv, err := sc.SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			var serr error
			if err := rcv.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_UDP, 103 /* UDP_SEGMENT */, seg)
			}); err != nil || serr != nil {
				testenv.Missing(t, "UDP_SEGMENT (UDP GSO) not in this kernel: %v %v", err, serr)
			}
			to := rc.LocalAddr().(*net.UDPAddr)
			got := 0
			buf := make([]byte, 65536)
			for r := 0; r < rounds; r++ {
				if _, err := sc.WriteToUDP(make([]byte, seg*segs), to); err != nil {
					t.Fatalf("send: %v", err)
				}
			}
			_ = rc.SetReadDeadline(time.Now().Add(3 * time.Second))
			for got < rounds*segs {
				n, err := rc.Read(buf)
				if err != nil {
					break
				}
				if n != seg {
					t.Errorf("datagram of %d bytes, want %d", n, seg)
				}
				got++
			}
			if got < rounds*segs-c.slack {
				t.Errorf("%d of %d segments arrived", got, rounds*segs)
			}
		})
	}
}
