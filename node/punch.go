package node

import (
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
)

// maxPunchAttempts is how many DCUtR attempts the initiating side makes on
// one relayed connection (go-libp2p's holepunch maxRetries).
const maxPunchAttempts = 3

// punchTracer counts failed hole punch attempts per peer, from go-libp2p's
// holepunch tracer (holepunch.WithTracer), so that a forward waiting for a
// direct connection can stop waiting once the remote has given up, rather
// than at its timeout.
type punchTracer struct {
	log     *slog.Logger
	mu      sync.Mutex
	fails   map[peer.ID]int
	changed chan struct{} // closed and replaced on every counted event
}

func newPunchTracer(log *slog.Logger) *punchTracer {
	return &punchTracer{log: log, fails: make(map[peer.ID]int), changed: make(chan struct{})}
}

// Trace implements holepunch.EventTracer. Each failed attempt is logged
// with go-libp2p's reason, so that a punch that ends relayed says why.
func (t *punchTracer) Trace(evt *holepunch.Event) {
	switch e := evt.Evt.(type) {
	case *holepunch.DirectDialEvt:
		if !e.Success {
			t.log.Debug("direct dial before hole punching failed", "peer", evt.Remote, "took", e.EllapsedTime.Round(time.Millisecond), "error", e.Error)
		}
		return
	case *holepunch.ProtocolErrorEvt:
		t.log.Info("hole punch protocol error", "peer", evt.Remote, "error", e.Error)
		return
	}
	end, ok := evt.Evt.(*holepunch.EndHolePunchEvt)
	if !ok || end.Success {
		return
	}
	t.log.Info("hole punch attempt failed", "peer", evt.Remote, "took", end.EllapsedTime.Round(time.Millisecond), "error", end.Error)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.fails[evt.Remote]++
	close(t.changed)
	t.changed = make(chan struct{})
}

// failures returns how many attempts with p failed so far, and a channel
// closed at the next counted event.
func (t *punchTracer) failures(p peer.ID) (int, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.fails[p], t.changed
}
