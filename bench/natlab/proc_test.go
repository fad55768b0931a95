//go:build natbench

package natlab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/p2pnode/p2pnode/internal/netlab"
)

// stopGrace is how long a process gets to exit after SIGINT before SIGKILL.
const stopGrace = 5 * time.Second

// childEnv is our environment without P2PNODE_* settings, so that only the
// flags the benchmark gives count.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "P2PNODE_") {
			env = append(env, kv)
		}
	}
	return env
}

// initHome runs `p2pnode init` in a new home directory (removed when t
// ends) and returns the directory and the peer ID it created.
func initHome(t *testing.T) (home, id string) {
	t.Helper()
	// Not t.TempDir: its name grows with the subtest's, and serve puts a
	// Unix socket (path limit 108 bytes) in its home.
	home, err := os.MkdirTemp("", "natb-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--home", home, "init")
	cmd.Env = childEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("p2pnode init: %v\n%s", err, stderr.String())
	}
	return home, strings.TrimSpace(string(out))
}

// procs is the set of p2pnode processes of one try.
type procs struct {
	ctx    context.Context // killed when cancelled: only a safety net, stop comes first
	cancel context.CancelFunc
	list   []*proc
}

// newProcs returns an empty set whose processes are stopped when t ends (if
// stopAll has not done it already). Create it after the lab, so that they
// stop before the lab is torn down.
func newProcs(t *testing.T) *procs {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ps := &procs{ctx: ctx, cancel: cancel}
	t.Cleanup(func() { ps.stopAll() })
	return ps
}

// start starts `p2pnode args...` inside h's namespace.
func (ps *procs) start(t *testing.T, h *netlab.Host, name string, args ...string) *proc {
	t.Helper()
	p := &proc{
		name:   name,
		cmd:    h.Command(ps.ctx, bin, args...),
		stdout: newLineLog(),
		stderr: newLineLog(),
		done:   make(chan struct{}),
	}
	p.cmd.Env = childEnv()
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		p.stdout.close()
		p.stderr.close()
		close(p.done)
	}()
	ps.list = append(ps.list, p)
	return p
}

// stopAll stops the processes, newest first, and returns a note for each
// one that did not end as asked: it exited by itself, did not exit with
// status 0 on SIGINT, or had to be killed. It is idempotent.
func (ps *procs) stopAll() []string {
	var notes []string
	for i := len(ps.list) - 1; i >= 0; i-- {
		if note := ps.list[i].stop(); note != "" {
			notes = append(notes, note)
		}
	}
	ps.cancel()
	return notes
}

// dump is every process's output, for a failed try's log.
func (ps *procs) dump() string {
	var b strings.Builder
	for _, p := range ps.list {
		fmt.Fprintf(&b, "--- %s (%s)\n--- stdout:\n%s--- stderr:\n%s", p.name, strings.Join(p.cmd.Args, " "), p.stdout.all(), p.stderr.all())
	}
	return b.String()
}

// proc is one running p2pnode.
type proc struct {
	name    string
	cmd     *exec.Cmd
	started time.Time // just before the exec
	stdout  *lineLog
	stderr  *lineLog
	done    chan struct{} // closed once it has exited and been waited for
	err     error         // cmd.Wait's result, once done is closed

	stopOnce sync.Once
	note     string
}

// stop sends SIGINT, SIGKILL after stopGrace, and waits for the process.
// It returns what went wrong, if anything.
func (p *proc) stop() string {
	p.stopOnce.Do(func() {
		select {
		case <-p.done:
			p.note = fmt.Sprintf("%s exited by itself (%v)", p.name, p.exitDesc())
			return
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-p.done:
			if p.err != nil {
				p.note = fmt.Sprintf("%s: %s on SIGINT, want exit status 0", p.name, p.exitDesc())
			}
		case <-time.After(stopGrace):
			_ = p.cmd.Process.Kill()
			<-p.done
			p.note = fmt.Sprintf("%s did not exit within %v of SIGINT; killed", p.name, stopGrace)
		}
	})
	return p.note
}

func (p *proc) exitDesc() string {
	if p.err == nil {
		return "exit status 0"
	}
	return p.err.Error()
}

// waitLine waits, until ctx ends, for a line of out (p's stdout or stderr)
// that match accepts, and returns it with the time it arrived. what
// describes the line for the error.
func (p *proc) waitLine(ctx context.Context, out *lineLog, what string, match func(string) bool) (stamped, error) {
	for from := 0; ; {
		l, n, ended, changed := out.find(from, match)
		switch {
		case l != nil:
			return *l, nil
		case ended:
			<-p.done
			return stamped{}, fmt.Errorf("%s ended (%s) before printing %s", p.name, p.exitDesc(), what)
		}
		from = n
		select {
		case <-changed:
		case <-ctx.Done():
			return stamped{}, fmt.Errorf("%s printed no %s within %v", p.name, what, time.Since(p.started).Round(time.Millisecond))
		}
	}
}

// stamped is one line of output and when it arrived.
type stamped struct {
	text string
	at   time.Time
}

// lineLog is an io.Writer that splits what a process writes into lines,
// stamps each with its arrival time and keeps them all. It never blocks the
// writer.
type lineLog struct {
	mu      sync.Mutex
	partial []byte
	lines   []stamped
	ended   bool
	changed chan struct{} // closed and replaced when a line comes or it ends
}

func newLineLog() *lineLog { return &lineLog{changed: make(chan struct{})} }

func (l *lineLog) Write(b []byte) (int, error) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, b...)
	added := false
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, stamped{strings.TrimSuffix(string(l.partial[:i]), "\r"), now})
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
		l.lines = append(l.lines, stamped{string(l.partial), time.Now()})
		l.partial = nil
	}
	l.ended = true
	l.notify()
}

func (l *lineLog) notify() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// find returns the first line from index from on that match accepts; if
// there is none yet, the index to look from next time, whether the output
// has ended, and a channel closed when either may have changed.
func (l *lineLog) find(from int, match func(string) bool) (line *stamped, next int, ended bool, changed <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := from; i < len(l.lines); i++ {
		if match(l.lines[i].text) {
			s := l.lines[i]
			return &s, i + 1, false, nil
		}
	}
	return nil, len(l.lines), l.ended, l.changed
}

func (l *lineLog) all() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, s := range l.lines {
		b.WriteString(s.text + "\n")
	}
	if len(l.partial) > 0 {
		b.WriteString(string(l.partial) + "\n")
	}
	return b.String()
}

// logField is the value of key in a line of slog's text format
// (`time=... level=INFO msg="relay reservation made" relay=...`), unquoted;
// "" if the line has no such key.
func logField(line, key string) string {
	for rest := line; rest != ""; {
		k, v, ok := strings.Cut(rest, "=")
		if !ok {
			return ""
		}
		var val string
		if strings.HasPrefix(v, `"`) {
			q, err := strconv.QuotedPrefix(v)
			if err != nil {
				return ""
			}
			val, _ = strconv.Unquote(q)
			rest = strings.TrimPrefix(v[len(q):], " ")
		} else {
			val, rest, _ = strings.Cut(v, " ")
		}
		if k == key {
			return val
		}
	}
	return ""
}

// logMsg matches slog text lines whose msg is msg.
func logMsg(msg string) func(string) bool {
	return func(line string) bool { return logField(line, "msg") == msg }
}
