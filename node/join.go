package node

import (
	"context"
	"fmt"
	"github.com/filecoin-project/go-clock"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Backoff bounds for reconnecting to a bootstrap peer.
const (
	joinMinBackoff  = time.Second
	joinMaxBackoff  = time.Minute
	joinDialTimeout = 15 * time.Second
	// joinCheckInterval is how often a connected bootstrap peer is looked
	// at again with no event, which covers a missed one.
	joinCheckInterval = 30 * time.Second
	bootstrapTag      = "p2pnode-bootstrap"
)

// joiner keeps the node connected to its bootstrap peers: it dials each with
// exponential backoff and jitter, redials when a connection drops, protects
// those connections from the connection manager, and refreshes the DHT
// routing table whenever a bootstrap peer comes (back) online.
type joiner struct {
	h host.Host
	// refresh refreshes the DHT routing tables without waiting; nil
	// without a DHT.
	refresh func()
	peers   []peer.AddrInfo
	log     *slog.Logger
	clk     clock.Clock

	sub    event.Subscription // nil if the bus refused it
	cancel context.CancelFunc
	done   chan struct{}

	firstConnected chan struct{}
	once           sync.Once
}

// newJoiner subscribes to connection events; Start dials.
func newJoiner(h host.Host, refresh func(), peers []peer.AddrInfo, log *slog.Logger, clk clock.Clock) *joiner {
	j := &joiner{h: h, refresh: refresh, peers: peers, log: log, clk: clk, firstConnected: make(chan struct{}), done: make(chan struct{})}
	if len(peers) == 0 {
		// Nothing to wait for: a standalone node is as joined as it gets.
		close(j.firstConnected)
	}
	sub, err := h.EventBus().Subscribe(new(event.EvtPeerConnectednessChanged))
	if err != nil {
		log.Error("cannot watch connections; bootstrap peers are redialled only every 30 s", "error", err)
	} else {
		j.sub = sub
	}
	return j
}

// Start dials the bootstrap peers, and keeps doing so, in goroutines of the
// joiner's own until Close.
func (j *joiner) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	j.cancel = cancel
	go func() {
		defer close(j.done)
		j.run(ctx, j.sub)
	}()
}

// Close stops dialing and waits for the joiner's goroutines.
func (j *joiner) Close() {
	if j.cancel != nil {
		j.cancel()
		<-j.done
	}
	if j.sub != nil {
		j.sub.Close()
	}
}

func (j *joiner) run(ctx context.Context, sub event.Subscription) {
	wake := make(map[peer.ID]chan struct{}, len(j.peers))
	for _, ai := range j.peers {
		if ai.ID == j.h.ID() {
			continue // a bootstrap node listed in its own list
		}
		wake[ai.ID] = make(chan struct{}, 1)
	}
	var wg sync.WaitGroup
	for _, ai := range j.peers {
		ch, ok := wake[ai.ID]
		if !ok {
			continue
		}
		j.h.ConnManager().Protect(ai.ID, bootstrapTag)
		wg.Add(1)
		go func() {
			defer wg.Done()
			j.keep(ctx, ai, ch)
		}()
	}
	if sub != nil {
		defer sub.Close()
		for {
			select {
			case <-ctx.Done():
				wg.Wait()
				return
			case e := <-sub.Out():
				ev := e.(event.EvtPeerConnectednessChanged)
				if ch, ok := wake[ev.Peer]; ok && ev.Connectedness != network.Connected {
					j.log.Debug("bootstrap peer connectedness changed", "peer", ev.Peer, "connectedness", ev.Connectedness)
					select {
					case ch <- struct{}{}:
					default:
					}
				}
			}
		}
	}
	wg.Wait()
}

// keep dials ai until connected, then sleeps until the connection drops.
func (j *joiner) keep(ctx context.Context, ai peer.AddrInfo, disconnected <-chan struct{}) {
	backoff := joinMinBackoff
	for {
		if j.h.Network().Connectedness(ai.ID) != network.Connected {
			dctx, cancel := context.WithTimeout(ctx, joinDialTimeout)
			err := j.h.Connect(dctx, ai)
			cancel()
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				j.log.Warn("bootstrap peer unreachable, will retry", "peer", ai.ID, "retry_in", backoff.Round(time.Millisecond), "error", err)
				if !sleep(ctx, j.clk, backoff) {
					return
				}
				backoff = min(2*backoff, joinMaxBackoff)
				// Jitter spreads a fleet's redials after a bootstrap restart.
				backoff += time.Duration(rand.Int64N(int64(backoff / 4)))
				continue
			}
			if !identified(j.h, ai.ID) {
				// Connect waits for identify; it failed (its stream timed
				// out on a loaded host, say), and go-libp2p does not run
				// it again on a live connection. Without the peer's
				// protocols the DHT never takes it into its routing
				// table, so the connection is useless: drop it and dial
				// again.
				j.log.Warn("bootstrap peer connected but did not identify itself; reconnecting", "peer", ai.ID, "retry_in", backoff.Round(time.Millisecond))
				_ = j.h.Network().ClosePeer(ai.ID)
				if !sleep(ctx, j.clk, backoff) {
					return
				}
				backoff = min(2*backoff, joinMaxBackoff)
				continue
			}
			j.log.Info("connected to bootstrap peer", "peer", ai.ID)
			backoff = joinMinBackoff
			j.once.Do(func() { close(j.firstConnected) })
			if j.refresh != nil {
				j.refresh()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-disconnected:
		case <-j.clk.After(joinCheckInterval):
			// A periodic look covers a missed event, and a connection
			// the peer opened on which identify failed (see above).
			if j.h.Network().Connectedness(ai.ID) == network.Connected && !identified(j.h, ai.ID) {
				j.log.Warn("bootstrap peer connected but did not identify itself; reconnecting", "peer", ai.ID)
				_ = j.h.Network().ClosePeer(ai.ID)
			}
		}
	}
}

// identified reports whether identify has told this host which protocols
// p speaks.
func identified(h host.Host, p peer.ID) bool {
	protos, err := h.Peerstore().GetProtocols(p)
	return err == nil && len(protos) > 0
}

// sleep waits d on clk; it returns false if ctx ended first.
func sleep(ctx context.Context, clk clock.Clock, d time.Duration) bool {
	t := clk.Timer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (j *joiner) connectedCount() int {
	n := 0
	for _, ai := range j.peers {
		if j.h.Network().Connectedness(ai.ID) == network.Connected {
			n++
		}
	}
	return n
}

// describe lists the bootstrap peers and how many are connected, for errors.
func (j *joiner) describe() string {
	var b strings.Builder
	b.WriteString(describeAddrInfos(j.peers))
	fmt.Fprintf(&b, "; connected to %d of %d", j.connectedCount(), len(j.peers))
	return b.String()
}
