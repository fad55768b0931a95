package node

import "sync"

// broadcast wakes every goroutine waiting on it when fire is called: a
// waiter takes the channel, checks its condition, then waits on the channel,
// so that a fire between the check and the wait is not lost. fire never
// blocks, so it may be called from go-libp2p callbacks that hold locks (the
// routing table's PeerAdded, network.Notifiee).
type broadcast struct {
	mu sync.Mutex
	ch chan struct{}
}

func newBroadcast() *broadcast { return &broadcast{ch: make(chan struct{})} }

// wait returns a channel closed at the next fire.
func (b *broadcast) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ch
}

func (b *broadcast) fire() {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.ch)
	b.ch = make(chan struct{})
}
