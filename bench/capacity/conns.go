//go:build capacitybench

package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"time"
)

var forwardingLine = regexp.MustCompile(`^forwarding (127\.0\.0\.1:[0-9]+) -> (\S+)$`)

// echoTarget accepts TCP connections and sends every byte back, closing
// its write side when the client closes its own.
func echoTarget() (net.Listener, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return l, nil
}

// exchange sends size pseudo-random bytes (seeded by seed) on c while
// reading what comes back, and checks that the sha256 and the length of
// what came back equal what was sent.
func exchange(c *net.TCPConn, seed uint64, size int64) error {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	src := rand.NewChaCha8(key)
	errc := make(chan error, 1)
	sentSum := make(chan []byte, 1)
	go func() {
		h := sha256.New()
		buf := make([]byte, 32<<10)
		for left := size; left > 0; {
			n := int(min(left, int64(len(buf))))
			_, _ = src.Read(buf[:n])
			h.Write(buf[:n])
			if _, err := c.Write(buf[:n]); err != nil {
				errc <- fmt.Errorf("write after %d bytes: %w", size-left, err)
				sentSum <- nil
				return
			}
			left -= int64(n)
		}
		sentSum <- h.Sum(nil)
		errc <- c.CloseWrite()
	}()
	h := sha256.New()
	got, rerr := io.Copy(h, c)
	werr := <-errc
	sent := <-sentSum
	switch {
	case werr != nil:
		return werr
	case rerr != nil:
		return fmt.Errorf("read after %d bytes: %w", got, rerr)
	case got != size:
		return fmt.Errorf("got %d bytes back, sent %d", got, size)
	case !bytes.Equal(sent, h.Sum(nil)):
		return errors.New("sha256 of the bytes received differs from the bytes sent")
	}
	return nil
}

type namedSampler struct {
	name string
	s    *sampler
}

// runConns is the conns benchmark, step by step: start the processes, open
// n connections, move size bytes each way, sample RSS and file descriptors
// throughout, close, watch the descriptors come back, and repeat for
// rounds. It stays one function (over 60 lines) because the order of those
// steps is what the figures mean; split, the samplers' start and stop would
// sit in different places from what they measure.
func runConns(ctx context.Context, bin, dir string, n int, size int64, settle, afterWait time.Duration, rounds int) error {
	boot, bootAddr, err := startBootstrap(ctx, bin, dir)
	if err != nil {
		return err
	}
	defer boot.Stop()
	tg, err := echoTarget()
	if err != nil {
		return err
	}
	defer tg.Close()

	serveHome, fwdHome := dir+"/serve", dir+"/forward"
	serveID, err := initHome(ctx, bin, serveHome)
	if err != nil {
		return err
	}
	fwdID, err := initHome(ctx, bin, fwdHome)
	if err != nil {
		return err
	}
	serve, err := startProc(ctx, "serve", dir+"/serve.log", bin, "--home", serveHome, "serve",
		"--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", bootAddr, "--nat-port-map=false",
		"--expose", "echo="+tg.Addr().String(), "--allow", fwdID)
	if err != nil {
		return err
	}
	defer serve.Stop()
	if _, err := serve.waitLine(60*time.Second, `"ready:"`, func(l string) bool { return strings.HasPrefix(l, "ready:") }); err != nil {
		return err
	}
	target := serveID + ":echo"
	fwd, err := startProc(ctx, "forward", dir+"/forward.log", bin, "--home", fwdHome, "forward", target,
		"--bootstrap", bootAddr, "--p2p-listen", "/ip4/127.0.0.1/tcp/0", "--nat-port-map=false", "--listen", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer fwd.Stop()
	line, err := fwd.waitLine(60*time.Second, `"forwarding 127.0.0.1:PORT -> `+target+`"`, func(l string) bool {
		m := forwardingLine.FindStringSubmatch(l)
		return m != nil && m[2] == target
	})
	if err != nil {
		return err
	}
	fwdAddr := forwardingLine.FindStringSubmatch(line)[1]

	// Warm-up: one connection opens the libp2p connection (and waits for
	// the direct path), so "before" is a forward that has carried traffic.
	if err := dialExchange(fwdAddr, 1<<20, 1<<16); err != nil {
		return fmt.Errorf("warm-up connection: %w", err)
	}
	time.Sleep(settle)

	procs := []namedSampler{
		{"bootstrap", newSampler(boot.Pid(), 50*time.Millisecond)},
		{"serve", newSampler(serve.Pid(), 50*time.Millisecond)},
		{"forward", newSampler(fwd.Pid(), 50*time.Millisecond)},
	}
	defer func() {
		for _, p := range procs {
			p.s.Close()
		}
	}()
	before := make([]procStat, len(procs))
	for i, p := range procs {
		p.s.resetPeak()
		before[i] = p.s.Peak()
	}

	// All connections are open before any of them sends.
	t0 := time.Now()
	open := make([]*net.TCPConn, n)
	for i := range open {
		c, err := net.DialTimeout("tcp", fwdAddr, 30*time.Second)
		if err != nil {
			for _, c := range open[:i] {
				c.Close()
			}
			return fmt.Errorf("open connection %d of %d: %w", i+1, n, err)
		}
		open[i] = c.(*net.TCPConn)
	}
	opened := time.Since(t0)
	// Every connection has reached the target once serve holds n more fds
	// (one target connection each) than before.
	var endToEnd time.Duration = -1
	for time.Since(t0) < 60*time.Second {
		st, err := readProc(procs[1].s.pid)
		if err == nil && st.FDs >= before[1].FDs+n {
			endToEnd = time.Since(t0)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	// All open, nothing sent yet: what an idle connection costs.
	time.Sleep(time.Second)
	idle := make([]procStat, len(procs))
	for i, p := range procs {
		p.s.sample()
		idle[i], _ = readProc(p.s.pid)
	}
	t1 := time.Now()
	ex := exchangeAll(open, 1, size)
	transfer := time.Since(t1)
	peak := make([]procStat, len(procs))
	for i, p := range procs {
		peak[i] = p.s.Peak()
	}

	// After: fds back within fdSlack of the start for every process.
	const fdSlack = 2
	closedAt := time.Now()
	var backAfter time.Duration = -1
	var after5 []procStat
	for time.Since(closedAt) < max(60*time.Second, afterWait+time.Second) {
		back := true
		cur := make([]procStat, len(procs))
		for i, p := range procs {
			cur[i], _ = readProc(p.s.pid)
			if cur[i].FDs > before[i].FDs+fdSlack {
				back = false
			}
		}
		if after5 == nil && time.Since(closedAt) >= 5*time.Second {
			after5 = cur
		}
		if back && backAfter < 0 {
			backAfter = time.Since(closedAt)
		}
		if backAfter >= 0 && after5 != nil && time.Since(closedAt) >= afterWait {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	final := make([]procStat, len(procs))
	for i, p := range procs {
		final[i], _ = readProc(p.s.pid)
	}

	total := float64(2*int64(n)*size) / (1 << 20)
	fmt.Printf("\n== conns: %d simultaneous TCP connections through one forward, %s each way, sha256-checked ==\n", n, humanBytes(size))
	fmt.Printf("failed connections: %d of %d\n", ex.failed, n)
	for _, err := range ex.firstErrs {
		fmt.Printf("  %v\n", err)
	}
	if endToEnd >= 0 {
		fmt.Printf("all %d connections reached the echo target (serve holds %d more fds) %v after the first dial\n", n, n, endToEnd.Round(time.Millisecond))
	} else {
		fmt.Printf("serve did not hold %d more fds within 60 s of the first dial\n", n)
	}
	fmt.Printf("open all %d: %v; transfer (first byte to last close): %v; slowest connection %v; %.0f MiB moved through the forward (%.1f MiB/s both ways)\n",
		n, opened.Round(time.Millisecond), transfer.Round(time.Millisecond), ex.slowest.Round(time.Millisecond), total, total/transfer.Seconds())
	if backAfter >= 0 {
		fmt.Printf("fds back within %d of the start in all three processes %v after the last connection closed\n", fdSlack, backAfter.Round(time.Millisecond))
	} else {
		fmt.Printf("fds NOT back within %d of the start 60 s after the last connection closed\n", fdSlack)
	}
	fmt.Println()
	fmt.Printf("| process   | phase            | VmRSS MiB | VmHWM MiB | fds  | threads | CPU s  |\n")
	fmt.Printf("|-----------|------------------|-----------|-----------|------|---------|--------|\n")
	for i, p := range procs {
		rows := []struct {
			phase string
			s     procStat
		}{{"before", before[i]}, {"all open, idle", idle[i]}, {"peak", peak[i]}, {"after +5 s", after5[i]}, {"after (end)", final[i]}}
		for _, r := range rows {
			fmt.Printf("| %-9s | %-16s | %9s | %9s | %4d | %7d | %6.2f |\n", p.name, r.phase, mib(r.s.RSS), mib(r.s.HWM), r.s.FDs, r.s.Threads, r.s.CPU.Seconds())
		}
	}
	fmt.Printf("(peak = the maximum of each column over 50 ms samples during the run; \"after (end)\" is %v after the last close)\n",
		time.Since(closedAt).Round(time.Second))
	if ex.failed > 0 {
		return fmt.Errorf("%d of %d connections failed", ex.failed, n)
	}
	if rounds > 1 {
		// The same N connections again through the same processes: RSS that
		// keeps growing round after round would be a leak; RSS that stays
		// at the first round's level is memory the Go runtime keeps for reuse.
		fmt.Printf("\n| round | failed | transfer | serve VmRSS / VmHWM MiB | forward VmRSS / VmHWM MiB | serve fds / threads after | forward fds / threads after | libp2p streams open on serve after |\n")
		fmt.Printf("|-------|--------|----------|-------------------------|---------------------------|---------------------------|-----------------------------|------------------------------------|\n")
		row := func(k int, failed int, d time.Duration) {
			time.Sleep(2 * time.Second)
			s, _ := readProc(procs[1].s.pid)
			f, _ := readProc(procs[2].s.pid)
			streams := "?"
			if n, err := statusStreams(ctx, bin, serveHome); err == nil {
				streams = fmt.Sprint(n)
			}
			fmt.Printf("| %5d | %6d | %8s | %11s / %-9s | %13s / %-11s | %13d / %-9d | %15d / %-11d | %34s |\n", k, failed, d.Round(10*time.Millisecond),
				mib(s.RSS), mib(s.HWM), mib(f.RSS), mib(f.HWM), s.FDs, s.Threads, f.FDs, f.Threads, streams)
		}
		row(1, ex.failed, transfer)
		for k := 2; k <= rounds; k++ {
			f, d := oneRound(fwdAddr, n, size, uint64(k)<<32)
			row(k, f, d)
		}
	}
	return nil
}

// statusStreams sums the open streams of every connection that
// `p2pnode status --json` reports for the daemon in home.
func statusStreams(ctx context.Context, bin, home string) (int, error) {
	out, err := exec.CommandContext(ctx, bin, "--home", home, "status", "--json").Output()
	if err != nil {
		return 0, err
	}
	var st struct {
		Connections []struct {
			Streams int `json:"streams"`
		} `json:"connections"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return 0, err
	}
	n := 0
	for _, c := range st.Connections {
		n += c.Streams
	}
	return n, nil
}

// oneRound opens n connections, then exchanges size bytes on each at once;
// it returns the failures and the time from first byte to last close.
func oneRound(addr string, n int, size int64, seed uint64) (int, time.Duration) {
	open := make([]*net.TCPConn, 0, n)
	for range n {
		c, err := net.DialTimeout("tcp", addr, 30*time.Second)
		if err != nil {
			break
		}
		open = append(open, c.(*net.TCPConn))
	}
	t := time.Now()
	ex := exchangeAll(open, seed, size)
	return n - len(open) + ex.failed, time.Since(t)
}

// exchanged is what exchangeAll saw.
type exchanged struct {
	failed    int
	firstErrs []error // the first few, for the report
	slowest   time.Duration
}

// exchangeAll exchanges size bytes each way on every connection at once
// (connection i with seed+i) and closes them all.
func exchangeAll(open []*net.TCPConn, seed uint64, size int64) exchanged {
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		res exchanged
	)
	for i, c := range open {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Minute))
			start := time.Now()
			err := exchange(c, seed+uint64(i), size)
			d := time.Since(start)
			mu.Lock()
			defer mu.Unlock()
			res.slowest = max(res.slowest, d)
			if err != nil {
				res.failed++
				if len(res.firstErrs) < 5 {
					res.firstErrs = append(res.firstErrs, fmt.Errorf("connection %d: %w", i, err))
				}
			}
		}()
	}
	wg.Wait()
	return res
}

func dialExchange(addr string, seed uint64, size int64) error {
	c, err := net.DialTimeout("tcp", addr, 30*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	return exchange(c.(*net.TCPConn), seed, size)
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}
