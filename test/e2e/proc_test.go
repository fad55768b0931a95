package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/p2pnode/p2pnode/internal/e2etest"
	"github.com/p2pnode/p2pnode/internal/testenv"
)

// testContext bounds everything a test starts: processes are killed when it
// expires. It ends before `go test -timeout` would, so that a hang is
// reported with the processes' output rather than as a panic.
func testContext(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	testenv.SkipIfShort(t, "end-to-end test")
	deadline := time.Now().Add(d)
	if td, ok := t.Deadline(); ok && td.Add(-30*time.Second).Before(deadline) {
		deadline = td.Add(-30 * time.Second)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	// Registered before any process's cleanup, so it runs after them all.
	t.Cleanup(cancel)
	return ctx
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
	cmd.Env = e2etest.ChildEnv(env...)
	return runCmd(t, ctx, cmd, args)
}

// runIn is run inside network namespace ns.
func runIn(t testing.TB, ctx context.Context, ns string, args ...string) result {
	t.Helper()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, bin}, args...)...)
	cmd.Env = e2etest.ChildEnv()
	return runCmd(t, ctx, cmd, args)
}

// runCmd runs cmd, which runs `p2pnode args...`, as run says.
func runCmd(t testing.TB, ctx context.Context, cmd *exec.Cmd, args []string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = e2etest.StopGrace
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
	e2etest.CheckNoRace(t, "p2pnode "+strings.Join(args, " "), res.stderr)
	return res
}

// start starts `p2pnode args...` (see e2etest.Start): when t ends it is
// stopped, and a process that exited by itself, or not with 0 after SIGINT,
// fails t.
func start(t testing.TB, ctx context.Context, name string, args ...string) *e2etest.Proc {
	t.Helper()
	return e2etest.Start(t, ctx, name, exec.CommandContext(ctx, bin, args...))
}

// startIn is start inside network namespace ns (`ip netns exec`, which execs
// p2pnode, so signals reach it directly).
func startIn(t testing.TB, ctx context.Context, ns, name string, args ...string) *e2etest.Proc {
	t.Helper()
	return e2etest.Start(t, ctx, name, exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, bin}, args...)...))
}

// stop stops p before the test ends (see e2etest.Proc.Stop), failing t if
// it did not stop cleanly.
func stop(t testing.TB, p *e2etest.Proc) {
	t.Helper()
	if err := p.Stop(); err != nil {
		t.Error(err)
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
