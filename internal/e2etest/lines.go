package e2etest

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"time"
)

// ErrEnded is what Lines.Wait returns when the output ended (the process
// exited) before a matching line came.
var ErrEnded = errors.New("e2etest: the output ended")

// Line is one line of a process's output, without its line end.
type Line struct {
	Text string
	At   time.Time // when the write that completed it arrived
}

// Lines is an io.Writer that splits what a process writes into lines,
// stamps each with its arrival time and keeps them all: a test waits for a
// line, a benchmark also reads when it came, and a failure report shows
// them all. It never blocks the writer. The zero value is an empty log,
// ready for use.
//
// Lines are numbered from 0 in arrival order and never change, so an index
// is a position a caller can search on from: Wait and Find take it and
// return the next one, which serves both a reader that consumes lines
// (pass back the returned index) and one that searches all the output every
// time (pass 0).
type Lines struct {
	mu      sync.Mutex
	partial []byte
	lines   []Line
	ended   bool
	changed chan struct{} // made by a waiter, closed when a line comes or the output ends
}

// Write keeps b; each complete line is stamped with the time of this call.
// It never fails.
func (l *Lines) Write(b []byte) (int, error) {
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
		l.lines = append(l.lines, Line{strings.TrimSuffix(string(l.partial[:i]), "\r"), now})
		l.partial = l.partial[i+1:]
		added = true
	}
	if added {
		l.notifyLocked()
	}
	return len(b), nil
}

// Close keeps an unterminated last line and marks the end of the output,
// so that waiters stop waiting. Call it once the writer is done (after
// exec.Cmd.Wait).
func (l *Lines) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) > 0 {
		l.lines = append(l.lines, Line{string(l.partial), time.Now()})
		l.partial = nil
	}
	l.ended = true
	l.notifyLocked()
}

func (l *Lines) notifyLocked() {
	if l.changed != nil {
		close(l.changed)
		l.changed = nil
	}
}

// snapshot returns the complete lines so far, whether the output has ended
// and a channel closed when either may have changed. The slice is safe to
// read unlocked: lines are only ever appended.
func (l *Lines) snapshot() ([]Line, bool, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.changed == nil && !l.ended {
		l.changed = make(chan struct{})
	}
	return l.lines, l.ended, l.changed
}

// Find returns the first line at index from or later that match accepts,
// and the index after it. If there is none yet, ok is false and next is the
// number of lines so far: where the next search may start.
func (l *Lines) Find(from int, match func(string) bool) (line Line, next int, ok bool) {
	lines, _, _ := l.snapshot()
	return find(lines, from, match)
}

func find(lines []Line, from int, match func(string) bool) (Line, int, bool) {
	for i := max(from, 0); i < len(lines); i++ {
		if match(lines[i].Text) {
			return lines[i], i + 1, true
		}
	}
	return Line{}, max(from, len(lines)), false
}

// Wait is Find that waits for the line: it returns ErrEnded if the output
// ends first, or ctx's error if ctx does; next is then the number of lines
// looked at.
func (l *Lines) Wait(ctx context.Context, from int, match func(string) bool) (line Line, next int, err error) {
	for {
		lines, ended, changed := l.snapshot()
		line, next, ok := find(lines, from, match)
		switch {
		case ok:
			return line, next, nil
		case ended:
			return Line{}, next, ErrEnded
		}
		from = next
		select {
		case <-changed:
		case <-ctx.Done():
			return Line{}, next, ctx.Err()
		}
	}
}

// String is the whole output so far, each line (an unterminated last one
// too) ended by "\n".
func (l *Lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, line := range l.lines {
		b.WriteString(line.Text + "\n")
	}
	if len(l.partial) > 0 {
		b.WriteString(string(l.partial) + "\n")
	}
	return b.String()
}
