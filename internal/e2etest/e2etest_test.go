package e2etest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// helperEnv makes the test binary act as a stand-in for p2pnode (see
// helper), so that Proc is tested with a real process without building
// p2pnode.
const helperEnv = "E2ETEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helper(mode))
	}
	os.Exit(m.Run())
}

// helper prints a few lines and then, in mode "serve", runs until SIGINT
// and exits 0, like a node; in mode "exit3" it exits 3 at once.
func helper(mode string) int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt)
	fmt.Println("one")
	fmt.Println("two")
	fmt.Fprintln(os.Stderr, "warming up")
	fmt.Fprintln(os.Stderr, "ready to go")
	fmt.Print("no newline")
	if mode == "exit3" {
		return 3
	}
	<-sigs
	return 0
}

func helperCmd(ctx context.Context, mode string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0])
	cmd.Env = ChildEnv(helperEnv + "=" + mode)
	return cmd
}

func TestLinesCallStyles(t *testing.T) {
	var l Lines // the zero value is ready
	before := time.Now()
	fmt.Fprint(&l, "alpha\r\nbe")
	fmt.Fprint(&l, "ta\ngamma\nalpha again\ndel")

	// A consuming reader: each search starts after the last match.
	is := func(want string) func(string) bool { return func(s string) bool { return s == want } }
	starts := func(p string) func(string) bool { return func(s string) bool { return strings.HasPrefix(s, p) } }
	line, next, ok := l.Find(0, starts("alpha"))
	if !ok || line.Text != "alpha" || next != 1 {
		t.Fatalf("Find(0, alpha) = %q, %d, %v; want \"alpha\", 1, true", line.Text, next, ok)
	}
	line, next, ok = l.Find(next, starts("alpha"))
	if !ok || line.Text != "alpha again" || next != 4 {
		t.Fatalf("Find(1, alpha) = %q, %d, %v; want \"alpha again\", 4, true", line.Text, next, ok)
	}
	if _, next, ok = l.Find(next, starts("alpha")); ok || next != 4 {
		t.Fatalf("Find(4, alpha) = %d, %v; want 4, false (the partial line is not a line yet)", next, ok)
	}

	// A searching reader: always from the start.
	if line, _, ok = l.Find(0, is("beta")); !ok || line.At.Before(before) || line.At.After(time.Now()) {
		t.Fatalf("Find(0, beta) = %+v, %v; want beta stamped with its write's time", line, ok)
	}

	l.Close()
	if line, _, ok = l.Find(0, is("del")); !ok {
		t.Fatal("Close did not keep the unterminated last line")
	}
	if got, want := l.String(), "alpha\nbeta\ngamma\nalpha again\ndel\n"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestLinesWait(t *testing.T) {
	var l Lines
	fmt.Fprintln(&l, "first")
	go func() {
		time.Sleep(20 * time.Millisecond)
		fmt.Fprintln(&l, "second")
		time.Sleep(20 * time.Millisecond)
		l.Close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	line, next, err := l.Wait(ctx, 1, func(string) bool { return true })
	if err != nil || line.Text != "second" || next != 2 {
		t.Fatalf("Wait(1) = %q, %d, %v; want \"second\", 2, nil", line.Text, next, err)
	}
	if _, next, err = l.Wait(ctx, next, func(string) bool { return true }); !errors.Is(err, ErrEnded) || next != 2 {
		t.Fatalf("Wait after Close = %d, %v; want 2, ErrEnded", next, err)
	}

	var open Lines
	short, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if _, _, err := open.Wait(short, 0, func(string) bool { return true }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait on silent output = %v, want the context's deadline", err)
	}
}

func TestProcStartWaitStop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	p := Start(t, ctx, "helper", helperCmd(ctx, "serve"))

	every := func(string) bool { return true }
	if got := p.WaitLine(t, 10*time.Second, "a line", every); got != "one" {
		t.Fatalf("first WaitLine = %q, want one", got)
	}
	if got := p.WaitLine(t, 10*time.Second, "a line", every); got != "two" {
		t.Fatalf("second WaitLine = %q, want two (WaitLine consumes lines)", got)
	}
	p.WaitStderr(t, 10*time.Second, "ready")
	line, err := p.Await(ctx, p.Stderr, "warming", func(s string) bool { return strings.HasPrefix(s, "warming") })
	if err != nil || line.At.Before(p.Started) {
		t.Fatalf("Await = %+v, %v; want the first stderr line, stamped after the start", line, err)
	}
	if err := p.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := p.Stop(); err != nil {
		t.Fatalf("second Stop: %v, want nil", err)
	}
	if !strings.Contains(p.Output(), "no newline\n--- stderr:") {
		t.Errorf("Output lacks the unterminated last stdout line:\n%s", p.Output())
	}
}

func TestProcExitedByItself(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := Launch(ctx, "helper", helperCmd(ctx, "exit3"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Await(ctx, p.Stdout, "a line that never comes", func(string) bool { return false }); err == nil ||
		err.Error() != "helper ended (exit status 3) before printing a line that never comes" {
		t.Errorf("Await = %v, want the process's end", err)
	}
	<-p.Done()
	if err := p.Stop(); err == nil || err.Error() != "helper exited by itself: exit status 3" {
		t.Errorf("Stop = %v, want it to say the process exited by itself", err)
	}
}

func TestProcSignalWaitExit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	p := Start(t, ctx, "helper", helperCmd(ctx, "serve"))
	p.WaitStderr(t, 10*time.Second, "ready")
	p.Signal(t, syscall.SIGINT)
	p.WaitExit(t, 10*time.Second, 0)
}

func TestChildEnv(t *testing.T) {
	t.Setenv("P2PNODE_HOME", "/nowhere")
	env := ChildEnv("A=1")
	if slices.Contains(env, "P2PNODE_HOME=/nowhere") || env[len(env)-1] != "A=1" {
		t.Errorf("ChildEnv kept P2PNODE_HOME or lost the extra variable: %q", env)
	}
}

func TestShort(t *testing.T) {
	t.Setenv("CI", "true")
	if Short() {
		t.Error("Short() with CI=true, want false: CI runs everything")
	}
	t.Setenv("CI", "")
	if Short() != testing.Short() {
		t.Errorf("Short() = %v without CI, want testing.Short() (%v)", Short(), testing.Short())
	}
}

func TestModuleRoot(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "internal", "e2etest", "build.go")); err != nil {
		t.Errorf("ModuleRoot() = %s, which does not hold this package: %v", root, err)
	}
}

func TestServe(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tg := Serve(t, l, func(c *net.TCPConn) { _, _ = io.Copy(c, c) })
	for i := 0; i < 2; i++ {
		c, err := net.DialTimeout("tcp", tg.Addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "ping"); err != nil {
			t.Fatal(err)
		}
		_ = c.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(got) != "ping" {
			t.Fatalf("echo = %q, %v; want ping", got, err)
		}
	}
	if n := tg.Accepts(); n != 2 {
		t.Errorf("Accepts() = %d, want 2", n)
	}
}
