//go:build capacitybench

package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat
// (100 on every Linux this runs on).
const clockTicks = 100

// procStat is one reading of /proc/PID for a process.
type procStat struct {
	RSS, HWM int64 // VmRSS, VmHWM in bytes
	FDs      int   // entries in /proc/PID/fd
	Threads  int   // Threads: in /proc/PID/status
	CPU      time.Duration
}

func readProc(pid int) (procStat, error) {
	var s procStat
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			s.RSS = n << 10
		case "VmHWM":
			s.HWM = n << 10
		case "Threads":
			s.Threads = int(n)
		}
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, err
	}
	s.FDs = len(ents)
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// Fields after the command name (which may hold spaces) in ")".
	rest := string(stat[bytes.LastIndexByte(stat, ')')+2:])
	f := strings.Fields(rest)
	// rest starts at field 3 (state); utime is field 14, stime 15.
	if len(f) > 12 {
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		s.CPU = time.Duration(ut+st) * time.Second / clockTicks
	}
	return s, nil
}

// sampler reads /proc/PID every interval and keeps the peaks.
type sampler struct {
	pid  int
	stop chan struct{}
	done chan struct{}

	mu   sync.Mutex
	peak procStat // fields are each one's own maximum
	last procStat
}

func newSampler(pid int, every time.Duration) *sampler {
	s := &sampler{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			s.sample()
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *sampler) sample() {
	st, err := readProc(s.pid)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last = st
	s.peak.RSS = max(s.peak.RSS, st.RSS)
	s.peak.HWM = max(s.peak.HWM, st.HWM)
	s.peak.FDs = max(s.peak.FDs, st.FDs)
	s.peak.Threads = max(s.peak.Threads, st.Threads)
	s.peak.CPU = max(s.peak.CPU, st.CPU)
}

// resetPeak starts a new peak window from the current reading.
func (s *sampler) resetPeak() {
	s.sample()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.peak = s.last
}

func (s *sampler) Peak() procStat {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}

func (s *sampler) Close() {
	close(s.stop)
	<-s.done
}

// childGoMemLimit, if set, is the GOMEMLIMIT of every p2pnode process.
var childGoMemLimit string

// proc is a running p2pnode process with its stdout lines.
type proc struct {
	name  string
	cmd   *exec.Cmd
	lines chan string
	done  chan struct{}
	log   *os.File
}

// startProc runs bin args..., its stdout fed line by line to lines and
// copied with stderr to logPath.
func startProc(ctx context.Context, name, logPath, bin string, args ...string) (*proc, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "GOTRACEBACK=all")
	if childGoMemLimit != "" {
		cmd.Env = append(cmd.Env, "GOMEMLIMIT="+childGoMemLimit)
	}
	cmd.Stderr = lf
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, lines: make(chan string, 1000), done: make(chan struct{}), log: lf}
	go func() {
		sc := bufio.NewScanner(io.TeeReader(out, lf))
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
		close(p.lines)
	}()
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *proc) Pid() int { return p.cmd.Process.Pid }

// waitLine returns the first stdout line for which match is true.
func (p *proc) waitLine(d time.Duration, what string, match func(string) bool) (string, error) {
	timer := time.After(d)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				return "", fmt.Errorf("%s exited before printing %s (log %s)", p.name, what, p.log.Name())
			}
			if match(line) {
				return line, nil
			}
		case <-timer:
			return "", fmt.Errorf("%s did not print %s within %v (log %s)", p.name, what, d, p.log.Name())
		}
	}
}

// Stop sends SIGINT and waits (SIGKILL after 10 s).
func (p *proc) Stop() {
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.log.Close()
}

// initHome runs `p2pnode --home DIR init` and returns the peer ID.
func initHome(ctx context.Context, bin, home string) (string, error) {
	out, err := exec.CommandContext(ctx, bin, "--home", home, "init").Output()
	if err != nil {
		return "", fmt.Errorf("p2pnode init: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// startBootstrap starts `p2pnode bootstrap` in a fresh home under dir and
// returns it with its /ip4/127.0.0.1/tcp/PORT/p2p/ID address.
func startBootstrap(ctx context.Context, bin, dir string) (*proc, string, error) {
	home := dir + "/boot"
	id, err := initHome(ctx, bin, home)
	if err != nil {
		return nil, "", err
	}
	p, err := startProc(ctx, "bootstrap", dir+"/boot.log", bin, "--home", home, "bootstrap",
		"--listen", "/ip4/127.0.0.1/tcp/0", "--nat-port-map=false")
	if err != nil {
		return nil, "", err
	}
	addr, err := p.waitLine(30*time.Second, "its /ip4/127.0.0.1 multiaddr", func(l string) bool {
		return strings.HasPrefix(l, "/ip4/127.0.0.1/tcp/") && strings.HasSuffix(l, "/p2p/"+id)
	})
	if err != nil {
		p.Stop()
		return nil, "", err
	}
	return p, addr, nil
}

func mib(b int64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }
