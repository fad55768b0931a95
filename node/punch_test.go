package node

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/filecoin-project/go-clock"
	"github.com/libp2p/go-libp2p/core/peer"
)

// fakePunches is an attempt function for a puncher with no host: each
// attempt reports that it started and blocks until released (or until the
// puncher's context ends), then returns PathDirect.
type fakePunches struct {
	started chan peer.ID
	release chan struct{}
	calls   sync.Map // peer.ID -> *atomic.Int32
}

func newFakePunches() *fakePunches {
	return &fakePunches{started: make(chan peer.ID, 16), release: make(chan struct{})}
}

func (f *fakePunches) attempt(ctx context.Context, p peer.ID) Path {
	n, _ := f.calls.LoadOrStore(p, new(atomic.Int32))
	n.(*atomic.Int32).Add(1)
	f.started <- p
	select {
	case <-f.release:
		return PathDirect
	case <-ctx.Done():
		return PathRelayed
	}
}

func (f *fakePunches) count(p peer.ID) int32 {
	n, ok := f.calls.Load(p)
	if !ok {
		return 0
	}
	return n.(*atomic.Int32).Load()
}

// newTestPuncher is a puncher with no host, fake attempts, a mock clock,
// and every peer relayed; it is closed when t ends.
func newTestPuncher(t *testing.T) (*puncher, *fakePunches, *clock.Mock) {
	t.Helper()
	clk := clock.NewMock()
	f := newFakePunches()
	p := newPuncher(nil, newPunchTracer(slog.New(slog.DiscardHandler)), func(peer.ID) Path { return PathRelayed },
		slog.New(slog.DiscardHandler), clk)
	p.attempt = f.attempt
	t.Cleanup(p.Close)
	return p, f, clk
}

// waitStarted waits for an attempt to start and returns its peer.
func waitStarted(t *testing.T, f *fakePunches) peer.ID {
	t.Helper()
	select {
	case p := <-f.started:
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("no punch attempt started")
		return ""
	}
}

func punchAll(p *puncher, ids ...peer.ID) []chan Path {
	out := make([]chan Path, len(ids))
	for i, id := range ids {
		out[i] = make(chan Path, 1)
		go func() { out[i] <- p.punch(context.Background(), id) }()
	}
	return out
}

func recvPath(t *testing.T, ch chan Path) Path {
	t.Helper()
	select {
	case path := <-ch:
		return path
	case <-time.After(10 * time.Second):
		t.Fatal("punch did not return")
		return ""
	}
}

func TestPuncherOnePunchPerPeer(t *testing.T) {
	p, f, _ := newTestPuncher(t)
	const a = peer.ID("peer-a")
	first := punchAll(p, a)
	waitStarted(t, f)
	// The second caller arrives while the first punch is in flight.
	second := punchAll(p, a)
	select {
	case path := <-second[0]:
		t.Fatalf("second caller returned %s before the punch in flight ended", path)
	case <-time.After(50 * time.Millisecond):
	}
	close(f.release)
	for i, ch := range [][]chan Path{first, second} {
		if path := recvPath(t, ch[0]); path != PathDirect {
			t.Errorf("caller %d got %s, want the punch's result, direct", i+1, path)
		}
	}
	if n := f.count(a); n != 1 {
		t.Errorf("%d punch attempts for one peer with two callers, want 1", n)
	}
}

func TestPuncherPeersConcurrently(t *testing.T) {
	p, f, _ := newTestPuncher(t)
	ids := []peer.ID{"peer-a", "peer-b", "peer-c"}
	results := punchAll(p, ids...)
	// Every attempt starts before any is released: they run at once.
	seen := map[peer.ID]bool{}
	for range ids {
		seen[waitStarted(t, f)] = true
	}
	if len(seen) != len(ids) {
		t.Fatalf("attempts started for %v, want each of %v", seen, ids)
	}
	close(f.release)
	for i, ch := range results {
		if path := recvPath(t, ch); path != PathDirect {
			t.Errorf("punch to %s: %s, want direct", ids[i], path)
		}
	}
}

func TestPuncherRetryInterval(t *testing.T) {
	p, f, clk := newTestPuncher(t)
	close(f.release)
	const a = peer.ID("peer-a")
	recvPath(t, punchAll(p, a)[0])
	// Within the interval the peer is not punched again: punch returns
	// the path there is.
	if path := p.punch(context.Background(), a); path != PathRelayed || f.count(a) != 1 {
		t.Fatalf("second punch within %v: path %s after %d attempts, want relayed after 1", punchRetryInterval, path, f.count(a))
	}
	clk.Add(punchRetryInterval)
	if path := recvPath(t, punchAll(p, a)[0]); path != PathDirect || f.count(a) != 2 {
		t.Fatalf("punch after %v: path %s after %d attempts, want direct after 2", punchRetryInterval, path, f.count(a))
	}
}

func TestPuncherHistoryPruned(t *testing.T) {
	p, f, clk := newTestPuncher(t)
	close(f.release)
	go func() { // the fake reports every start; nobody needs them here
		for range f.started {
		}
	}()
	for i := range punchHistoryMax + 10 {
		p.punch(context.Background(), peer.ID(fmt.Sprint("peer-", i)))
	}
	if n := p.historyLen(); n > punchHistoryMax {
		t.Errorf("history holds %d peers, want at most %d", n, punchHistoryMax)
	}
	clk.Add(punchRetryInterval)
	p.punch(context.Background(), "peer-late")
	if n := p.historyLen(); n != 1 {
		t.Errorf("after %v, history holds %d peers, want only the newest", punchRetryInterval, n)
	}
}

func TestPuncherCloseStopsPunches(t *testing.T) {
	p, f, _ := newTestPuncher(t)
	res := punchAll(p, "peer-a")
	waitStarted(t, f)
	closed := make(chan struct{})
	go func() {
		p.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return while a punch was in flight")
	}
	if path := recvPath(t, res[0]); path != PathRelayed {
		t.Errorf("caller of a punch stopped by Close got %s, want relayed", path)
	}
	if call := p.start("peer-b"); call != nil {
		t.Error("a closed puncher started a punch")
	}
}
