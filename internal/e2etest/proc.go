package e2etest

import (
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

// StopGrace is how long a process gets to exit after SIGINT before SIGKILL.
// It is also the commands' WaitDelay, so that a leftover child holding the
// output pipes open cannot make waiting for an exited process hang.
const StopGrace = 5 * time.Second

// ShowOutput (P2PNODE_E2E_SHOW_OUTPUT=1) makes Start log every process's
// output when its test ends, not only a failed test's; with -v, to see what
// the nodes say.
var ShowOutput = os.Getenv("P2PNODE_E2E_SHOW_OUTPUT") == "1"

// ChildEnv is the environment of a p2pnode process: ours without P2PNODE_*
// settings, so that only the flags the caller gives count, plus extra
// (KEY=VALUE).
func ChildEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "P2PNODE_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// CheckNoRace fails t if stderr, the output of process name built with
// -race, reports a data race.
func CheckNoRace(t testing.TB, name, stderr string) {
	t.Helper()
	if strings.Contains(stderr, "WARNING: DATA RACE") {
		t.Errorf("%s: the race detector found a data race (see its stderr)", name)
	}
}

// Proc is a long-running process (a p2pnode bootstrap, serve or forward)
// whose output is kept line by line.
type Proc struct {
	Name    string    // what messages call it ("serve")
	Cmd     *exec.Cmd // started; do not Wait on it, Done tells the exit
	Stdout  *Lines
	Stderr  *Lines
	Started time.Time // just before the exec

	ctx  context.Context
	done chan struct{} // closed when it has exited and been waited for
	err  error         // Cmd.Wait's result, once done is closed

	waitMu sync.Mutex // serialises WaitLine, which owns read
	read   int        // stdout lines already looked at by WaitLine

	stopMu  sync.Mutex
	stopped bool // Stop or Signal has been called: it is expected to exit
}

// Launch starts cmd, which must have been made with ctx
// (exec.CommandContext), as the process called name, with its stdout and
// stderr kept in Lines. A nil cmd.Env becomes ChildEnv(), a zero
// cmd.WaitDelay StopGrace. The caller must Stop the process; Start does it
// for a test.
func Launch(ctx context.Context, name string, cmd *exec.Cmd) (*Proc, error) {
	p := &Proc{
		Name:   name,
		Cmd:    cmd,
		Stdout: &Lines{},
		Stderr: &Lines{},
		ctx:    ctx,
		done:   make(chan struct{}),
	}
	if cmd.Env == nil {
		cmd.Env = ChildEnv()
	}
	if cmd.WaitDelay == 0 {
		cmd.WaitDelay = StopGrace
	}
	cmd.Stdout, cmd.Stderr = p.Stdout, p.Stderr
	p.Started = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		p.Stdout.Close()
		p.Stderr.Close()
		close(p.done)
	}()
	return p, nil
}

// Start is Launch for a test: it fails t if the process does not start.
// When t ends the process is stopped (an error from Stop fails t), always
// waited for, checked for data races, and its output logged if t failed or
// ShowOutput is set.
func Start(t testing.TB, ctx context.Context, name string, cmd *exec.Cmd) *Proc {
	t.Helper()
	p, err := Launch(ctx, name, cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Error(err)
		}
		CheckNoRace(t, p.Name, p.Stderr.String())
		if t.Failed() || ShowOutput {
			t.Logf("%s\n%s", p.Describe(), p.Output())
		}
	})
	return p
}

// Describe is the process's name and command line, for messages.
func (p *Proc) Describe() string {
	return fmt.Sprintf("%s (%s)", p.Name, strings.Join(p.Cmd.Args, " "))
}

// Output is everything the process has written so far, for a failure
// report.
func (p *Proc) Output() string {
	return fmt.Sprintf("--- stdout:\n%s--- stderr:\n%s---", p.Stdout, p.Stderr)
}

// Done is closed once the process has exited and been waited for.
func (p *Proc) Done() <-chan struct{} { return p.done }

// exitDesc says how the process exited; only once done is closed.
func (p *Proc) exitDesc() string {
	if p.err == nil {
		return "exit status 0"
	}
	if p.ctx.Err() != nil {
		return p.err.Error() + " (killed at the test's deadline)"
	}
	return p.err.Error()
}

// Stop interrupts the process, kills it if it has not exited StopGrace
// later, and waits for it. Its error says what went wrong: the process had
// already exited by itself, did not exit with status 0 on SIGINT, or had to
// be killed. After an earlier Stop or a Signal it only waits for the exit
// and returns nil.
func (p *Proc) Stop() error {
	p.stopMu.Lock()
	already := p.stopped
	p.stopped = true
	p.stopMu.Unlock()
	if already {
		<-p.done
		return nil
	}

	select {
	case <-p.done:
		return fmt.Errorf("%s exited by itself: %v", p.Name, p.exitDesc())
	default:
	}
	_ = p.Cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("%s: %v when stopped with SIGINT, want exit status 0", p.Name, p.exitDesc())
		}
		return nil
	case <-time.After(StopGrace):
		_ = p.Cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not exit within %v of SIGINT; killed", p.Name, StopGrace)
	}
}

// Signal sends sig to the process and fails t if it cannot; from then on
// Stop no longer expects it to be running.
func (p *Proc) Signal(t testing.TB, sig os.Signal) {
	t.Helper()
	p.stopMu.Lock()
	p.stopped = true
	p.stopMu.Unlock()
	if err := p.Cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s: signal %v: %v", p.Name, sig, err)
	}
}

// WaitExit waits up to timeout for the process to exit, and fails t unless
// it did, with exit code code.
func (p *Proc) WaitExit(t testing.TB, timeout time.Duration, code int) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %v\n--- stderr:\n%s---", p.Describe(), timeout, p.Stderr)
	}
	if got := p.Cmd.ProcessState.ExitCode(); got != code {
		t.Fatalf("%s exited with %d, want %d\n--- stderr:\n%s---", p.Describe(), got, code, p.Stderr)
	}
}

// WaitLine returns the first line of stdout, after those earlier calls
// looked at, that match accepts. It fails t if none comes within timeout or
// the process ends first; what describes the line for that message.
func (p *Proc) WaitLine(t testing.TB, timeout time.Duration, what string, match func(string) bool) string {
	t.Helper()
	p.waitMu.Lock()
	defer p.waitMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	line, next, err := p.Stdout.Wait(ctx, p.read, match)
	p.read = next
	switch {
	case err == nil:
		return line.Text
	case errors.Is(err, ErrEnded):
		<-p.done
		t.Fatalf("%s ended (%s) before printing %s\n%s", p.Describe(), p.exitDesc(), what, p.Output())
	default:
		t.Fatalf("%s printed no %s within %v\n%s", p.Describe(), what, timeout, p.Output())
	}
	return ""
}

// WaitStderr waits up to timeout for a line of stderr that contains substr,
// and fails t if none comes.
func (p *Proc) WaitStderr(t testing.TB, timeout time.Duration, substr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, _, err := p.Stderr.Wait(ctx, 0, func(l string) bool { return strings.Contains(l, substr) })
	switch {
	case err == nil:
	case errors.Is(err, ErrEnded):
		<-p.done
		t.Fatalf("%s: stderr has no %q, and it ended (%s)\n--- stderr:\n%s---", p.Describe(), substr, p.exitDesc(), p.Stderr)
	default:
		t.Fatalf("%s: stderr has no %q after %v\n--- stderr:\n%s---", p.Describe(), substr, timeout, p.Stderr)
	}
}

// Await waits, until ctx ends, for a line of out (p.Stdout or p.Stderr),
// from its first on, that match accepts. The error says that the process
// ended first or, if ctx did, how long after the start it gave up; what
// describes the line in it.
func (p *Proc) Await(ctx context.Context, out *Lines, what string, match func(string) bool) (Line, error) {
	line, _, err := out.Wait(ctx, 0, match)
	switch {
	case err == nil:
		return line, nil
	case errors.Is(err, ErrEnded):
		<-p.done
		return Line{}, fmt.Errorf("%s ended (%s) before printing %s", p.Name, p.exitDesc(), what)
	default:
		return Line{}, fmt.Errorf("%s printed no %s within %v", p.Name, what, time.Since(p.Started).Round(time.Millisecond))
	}
}
