package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// showOutput (P2PNODE_E2E_SHOW_OUTPUT=1) logs every process's output, not
// only a failed test's; with -v, to see what the nodes say.
var showOutput = os.Getenv("P2PNODE_E2E_SHOW_OUTPUT") == "1"

// stopGrace is how long a process gets to exit after SIGINT before SIGKILL.
const stopGrace = 5 * time.Second

// testContext bounds everything a test starts: processes are killed when it
// expires. It ends before `go test -timeout` would, so that a hang is
// reported with the processes' output rather than as a panic.
func testContext(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	// CI runs everything, -short or not.
	if testing.Short() && os.Getenv("CI") != "true" {
		t.Skip("end-to-end test: skipped in -short mode")
	}
	deadline := time.Now().Add(d)
	if td, ok := t.Deadline(); ok && td.Add(-30*time.Second).Before(deadline) {
		deadline = td.Add(-30 * time.Second)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	// Registered before any process's cleanup, so it runs after them all.
	t.Cleanup(cancel)
	return ctx
}

// childEnv is the environment of every p2pnode process: ours without
// P2PNODE_* settings, so that only the flags the test gives count.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "P2PNODE_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// result is what a p2pnode command that ran to its end did.
type result struct {
	code           int
	stdout, stderr string
}

// run runs `p2pnode args...` to its end (bounded by ctx) and returns its exit
// code and output. Its standard input is a pipe that stays open (no EOF)
// until it exits.
func run(t testing.TB, ctx context.Context, args ...string) result {
	t.Helper()
	return runEnv(t, ctx, nil, args...)
}

// runEnv is run with extra environment variables.
func runEnv(t testing.TB, ctx context.Context, env []string, args ...string) result {
	t.Helper()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = childEnv(env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = stopGrace
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdinW.Close()
	cmd.Stdin = stdinR
	start := time.Now()
	err = cmd.Start()
	stdinR.Close()
	if err == nil {
		err = cmd.Wait()
	}
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("p2pnode %s: still running after %v, killed\nstdout:\n%s\nstderr:\n%s",
			strings.Join(args, " "), time.Since(start).Round(time.Millisecond), res.stdout, res.stderr)
	case errors.As(err, &exit):
		res.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("p2pnode %s: %v", strings.Join(args, " "), err)
	}
	checkNoRace(t, "p2pnode "+strings.Join(args, " "), res.stderr)
	return res
}

// proc is a long-running p2pnode process (bootstrap, serve, forward).
type proc struct {
	name   string
	ctx    context.Context
	cmd    *exec.Cmd
	stdout *lineLog // its stdout, line by line
	stderr *syncBuffer
	done   chan struct{} // closed when it has exited and been waited for
	err    error         // cmd.Wait's result, once done is closed

	mu       sync.Mutex
	read     int  // stdout lines already looked at by waitLine
	signaled bool // we asked it to stop
}

// start starts `p2pnode args...`; when t ends it is stopped (SIGINT, SIGKILL
// after stopGrace), always waited for, and its output is shown if t failed.
// A process that exits by itself, or not with 0 after SIGINT, fails t.
func start(t testing.TB, ctx context.Context, name string, args ...string) *proc {
	t.Helper()
	return startCmd(t, ctx, name, exec.CommandContext(ctx, bin, args...))
}

// startIn is start inside network namespace ns (`ip netns exec`, which execs
// p2pnode, so signals reach it directly).
func startIn(t testing.TB, ctx context.Context, ns, name string, args ...string) *proc {
	t.Helper()
	return startCmd(t, ctx, name, exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, bin}, args...)...))
}

func startCmd(t testing.TB, ctx context.Context, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{
		name:   name,
		ctx:    ctx,
		stdout: newLineLog(),
		stderr: &syncBuffer{},
		done:   make(chan struct{}),
	}
	p.cmd = cmd
	p.cmd.Env = childEnv()
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.cmd.WaitDelay = stopGrace
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		p.stdout.close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(t)
		checkNoRace(t, p.name, p.stderr.String())
		if t.Failed() || showOutput {
			t.Logf("%s\n--- stdout:\n%s--- stderr:\n%s---", p.describe(), p.stdout.all(), p.stderr.String())
		}
	})
	return p
}

func (p *proc) describe() string {
	return fmt.Sprintf("%s (%s)", p.name, strings.Join(p.cmd.Args, " "))
}

// stop interrupts the process, kills it if it has not exited stopGrace later,
// and waits for it. It reports a process that had already exited, or did not
// exit with status 0 when interrupted.
func (p *proc) stop(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	already := p.signaled
	p.signaled = true
	p.mu.Unlock()
	if already {
		<-p.done
		return
	}

	select {
	case <-p.done:
		t.Errorf("%s exited by itself: %v", p.name, p.exitDesc())
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
		if p.err != nil {
			t.Errorf("%s: %v when stopped with SIGINT, want exit status 0", p.name, p.exitDesc())
		}
	case <-time.After(stopGrace):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s did not exit within %v of SIGINT; killed", p.name, stopGrace)
	}
}

// signal sends sig to the process; its cleanup then no longer expects it to
// be running.
func (p *proc) signal(t testing.TB, sig os.Signal) {
	t.Helper()
	p.mu.Lock()
	p.signaled = true
	p.mu.Unlock()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s: signal %v: %v", p.name, sig, err)
	}
}

// waitExit waits for the process to exit, and checks its exit code.
func (p *proc) waitExit(t testing.TB, timeout time.Duration, code int) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %v\n--- stderr:\n%s---", p.describe(), timeout, p.stderr.String())
	}
	if got := p.cmd.ProcessState.ExitCode(); got != code {
		t.Fatalf("%s exited with %d, want %d\n--- stderr:\n%s---", p.describe(), got, code, p.stderr.String())
	}
}

func (p *proc) exitDesc() string {
	if p.err == nil {
		return "exit status 0"
	}
	if p.ctx.Err() != nil {
		return p.err.Error() + " (killed at the test's deadline)"
	}
	return p.err.Error()
}

// waitLine returns the first line of stdout, after those earlier waits
// looked at, that match accepts. It fails t if none comes within timeout or
// the process ends first; what describes the line for that message.
func (p *proc) waitLine(t testing.TB, timeout time.Duration, what string, match func(string) bool) string {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		line, ok, ended, changed := p.stdout.line(p.read)
		switch {
		case ok:
			p.read++
			if match(line) {
				return line
			}
			continue
		case ended:
			<-p.done
			t.Fatalf("%s ended (%s) before printing %s\n--- stdout:\n%s--- stderr:\n%s---",
				p.describe(), p.exitDesc(), what, p.stdout.all(), p.stderr.String())
		}
		select {
		case <-changed:
		case <-timer.C:
			t.Fatalf("%s printed no %s within %v\n--- stdout:\n%s--- stderr:\n%s---",
				p.describe(), what, timeout, p.stdout.all(), p.stderr.String())
		}
	}
}

// waitStderr waits until the process's stderr contains substr.
func (p *proc) waitStderr(t testing.TB, timeout time.Duration, substr string) {
	t.Helper()
	if !waitFor(timeout, func() bool { return strings.Contains(p.stderr.String(), substr) }) {
		t.Fatalf("%s: stderr has no %q after %v\n--- stderr:\n%s---", p.describe(), substr, timeout, p.stderr.String())
	}
}

// waitFor polls cond until it holds or timeout passes, and says whether it
// held.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// checkNoRace fails t if a race-enabled binary reported a data race.
func checkNoRace(t testing.TB, name, stderr string) {
	t.Helper()
	if strings.Contains(stderr, "WARNING: DATA RACE") {
		t.Errorf("%s: the race detector found a data race (see its stderr)", name)
	}
}

// lineLog is an io.Writer that splits what a process writes into lines and
// keeps them all, for waitLine and for failure reports. It never blocks the
// writer.
type lineLog struct {
	mu      sync.Mutex
	partial []byte
	lines   []string
	ended   bool
	changed chan struct{} // closed and replaced when a line comes or it ends
}

func newLineLog() *lineLog { return &lineLog{changed: make(chan struct{})} }

func (l *lineLog) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, b...)
	added := false
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, strings.TrimSuffix(string(l.partial[:i]), "\r"))
		l.partial = l.partial[i+1:]
		added = true
	}
	if added {
		l.notify()
	}
	return len(b), nil
}

// close keeps an unterminated last line and marks the end of the output.
func (l *lineLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) > 0 {
		l.lines = append(l.lines, string(l.partial))
		l.partial = nil
	}
	l.ended = true
	l.notify()
}

func (l *lineLog) notify() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// line returns line i if there is one yet; otherwise whether the output has
// ended, and a channel closed when that may have changed.
func (l *lineLog) line(i int) (line string, ok, ended bool, changed <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if i < len(l.lines) {
		return l.lines[i], true, false, nil
	}
	return "", false, l.ended, l.changed
}

func (l *lineLog) all() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, line := range l.lines {
		b.WriteString(line + "\n")
	}
	if len(l.partial) > 0 {
		b.WriteString(string(l.partial) + "\n")
	}
	return b.String()
}

// syncBuffer is a bytes.Buffer that a process writes while a test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
