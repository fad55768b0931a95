package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/filecoin-project/go-clock"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	ma "github.com/multiformats/go-multiaddr"
)

const (
	// dcutrReadyTimeout bounds the wait for this node's /libp2p/dcutr
	// handler. go-libp2p registers it only once identify has reported a
	// public observed address, polling every 250 ms at first.
	dcutrReadyTimeout = 3 * time.Second
	// punchTimeout bounds the wait for DCUtR's direct connection after a
	// relayed one: the remote first tries a direct dial to our public
	// addresses (connection reversal, up to directDialTimeout), then DCUtR
	// makes up to 3 attempts (go-libp2p's maxRetries), each one RTT to sync
	// plus simultaneous dials bounded by directDialTimeout.
	punchTimeout = 4*directDialTimeout + 2*time.Second
	// directDialTimeout bounds go-libp2p's connection reversal attempt and
	// each hole punch dial (holepunch.DirectDialTimeout; its default is
	// 10 s). Behind a firewall that drops, the reversal can only time out,
	// and DCUtR waits for it.
	directDialTimeout = 2 * time.Second
	// punchRetryInterval keeps a forward whose punches fail from redialing
	// the relay for every TCP connection it carries: a peer is punched at
	// most once per interval.
	punchRetryInterval = 30 * time.Second
	// punchHistoryMax bounds the per-peer history of attempts (a peer
	// entry is a few dozen bytes; entries older than punchRetryInterval
	// are dropped first).
	punchHistoryMax = 4096
	// punchRounds is how many relayed connections (each with up to 3
	// DCUtR attempts) a punch tries when the relay limits the circuit.
	punchRounds = 2
	// maxPunchAttempts is how many DCUtR attempts the initiating side makes
	// on one relayed connection (go-libp2p's holepunch maxRetries).
	maxPunchAttempts = 3
)

// punchFunc makes one hole punch attempt to p and returns the path after it.
type punchFunc func(ctx context.Context, p peer.ID) Path

// puncher upgrades relayed connections to direct ones with DCUtR. go-libp2p's
// holepunch.Service does the punching itself; the puncher decides when to
// make it try (see attempt), and owns:
//
//   - one attempt per peer at a time: a second caller for a peer whose punch
//     is in flight waits for that punch and gets its result, while punches
//     to different peers run concurrently;
//   - the history of the last attempt per peer, so that a peer is punched at
//     most once per punchRetryInterval; entries older than that are pruned
//     and the history is bounded by punchHistoryMax;
//   - the holepunch tracer that counts the remote's failed attempts, and a
//     network notifiee that wakes waiters on every new connection;
//   - the attempts' goroutines, which Close stops and waits for.
type puncher struct {
	h      host.Host // nil in unit tests that inject attempt and pathTo
	log    *slog.Logger
	clk    clock.Clock
	tracer *punchTracer
	// attempt and pathTo are p.upgrade and Node.PathTo, replaced in tests.
	attempt punchFunc
	pathTo  func(peer.ID) Path
	punched func(direct bool, took time.Duration) // metrics; may be nil
	// negotiate runs PunchProtocol with the peer first (nil: DCUtR only);
	// it returns the strategy, whether it made the path direct, and
	// whether the peer asks for a new relayed connection (its DCUtR missed
	// this one).
	negotiate func(ctx context.Context, id peer.ID) (strategy string, direct, redial bool)

	conns  *broadcast // fires on every new connection
	notify network.Notifiee
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	inflight map[peer.ID]*punchCall
	last     map[peer.ID]time.Time
	closed   bool
}

// punchCall is one attempt in flight; path is set before done closes.
type punchCall struct {
	done chan struct{}
	path Path
}

// newPuncher returns a puncher for h that counts DCUtR failures with tracer
// (the one given to libp2p.EnableHolePunching). pathTo reports the path to a
// peer now.
func newPuncher(h host.Host, tracer *punchTracer, pathTo func(peer.ID) Path, log *slog.Logger, clk clock.Clock) *puncher {
	p := &puncher{h: h, log: log, clk: clk, tracer: tracer, pathTo: pathTo, conns: newBroadcast(),
		inflight: make(map[peer.ID]*punchCall), last: make(map[peer.ID]time.Time)}
	p.attempt = p.upgrade
	p.ctx, p.cancel = context.WithCancel(context.Background())
	if h != nil {
		// A direct connection added next to an unlimited relayed one
		// changes no Connectedness, so no EvtPeerConnectednessChanged
		// fires for it; the notifiee's Connected fires per connection.
		p.notify = &network.NotifyBundle{ConnectedF: func(network.Network, network.Conn) { p.conns.fire() }}
		h.Network().Notify(p.notify)
	}
	return p
}

// Close stops the punches in flight and waits for them. Callers waiting for
// one get the path there is then.
func (p *puncher) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
	if p.notify != nil {
		p.h.Network().StopNotify(p.notify)
	}
}

// punch makes sure an attempt to reach peer id directly is made (or was made
// less than punchRetryInterval ago) and waits until it ends or ctx does; it
// returns the path to id then.
func (p *puncher) punch(ctx context.Context, id peer.ID) Path {
	call := p.start(id)
	if call == nil {
		return p.pathTo(id)
	}
	select {
	case <-call.done:
		return call.path
	case <-ctx.Done():
		return p.pathTo(id)
	}
}

// punchAsync starts an attempt, as punch does, without waiting for it.
func (p *puncher) punchAsync(id peer.ID) { p.start(id) }

// again starts an attempt now, whenever the last one was: the direct
// connection it made has died (pathWatch).
func (p *puncher) again(id peer.ID) {
	p.mu.Lock()
	delete(p.last, id)
	p.mu.Unlock()
	p.start(id)
}

// start returns the call in flight for id, or starts one, or returns nil
// when id is direct already, was tried less than punchRetryInterval ago,
// or the puncher is closed.
func (p *puncher) start(id peer.ID) *punchCall {
	if p.pathTo(id) == PathDirect {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if call, ok := p.inflight[id]; ok {
		return call
	}
	now := p.clk.Now()
	if last, ok := p.last[id]; p.closed || ok && now.Sub(last) < punchRetryInterval {
		return nil
	}
	p.remember(id, now)
	call := &punchCall{done: make(chan struct{})}
	p.inflight[id] = call
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		path := p.attempt(p.ctx, id)
		p.mu.Lock()
		delete(p.inflight, id)
		p.mu.Unlock()
		call.path = path
		close(call.done)
	}()
	return call
}

// remember records an attempt to id at now, first dropping the entries older
// than punchRetryInterval and, if the history is still full, the oldest one.
// p.mu is held.
func (p *puncher) remember(id peer.ID, now time.Time) {
	if len(p.last) >= punchHistoryMax/2 {
		for q, t := range p.last {
			if now.Sub(t) >= punchRetryInterval {
				delete(p.last, q)
			}
		}
	}
	if len(p.last) >= punchHistoryMax {
		var oldest peer.ID
		var at time.Time
		for q, t := range p.last {
			if oldest == "" || t.Before(at) {
				oldest, at = q, t
			}
		}
		delete(p.last, oldest)
	}
	p.last[id] = now
}

// historyLen is the number of peers in the attempt history, for tests.
func (p *puncher) historyLen() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.last)
}

// upgrade tries to turn a relayed connection to p into a direct one with
// DCUtR. The hole punch is started by the peer that received the relayed
// connection, and only if this node's /libp2p/dcutr handler is registered
// when it asks (go-libp2p issue #3024: nothing retries). So: wait for the
// handler, give the punch in flight a chance, and if there is still no direct
// connection, redial through the relay so that the remote punches again.
// Through a limited relay a failed punch means a connection cut at the
// limit, so it is worth punchRounds rounds: a punch that failed on timing (a
// loaded machine, SYNs crossing badly) often works the next time.
func (p *puncher) upgrade(ctx context.Context, id peer.ID) Path {
	start := p.clk.Now()
	p.tracer.watch(id)
	defer p.tracer.unwatch(id)
	redial := false
	if p.negotiate != nil {
		var strategy string
		var direct bool
		strategy, direct, redial = p.negotiate(ctx, id)
		switch {
		case direct || p.pathTo(id) == PathDirect:
			took := p.clk.Since(start)
			p.report(true, took)
			p.log.Info("direct connection by hole punching", "peer", id, "took", took.Round(time.Millisecond), "strategy", strategy)
			return PathDirect
		case strategy == strategyRelay:
			p.log.Info("no hole punch can work between the two peers' NATs (or the peer sends this node no probes); carrying data through the relay", "peer", id)
			return p.pathTo(id)
		case strategy == strategyPredict:
			// DCUtR cannot do better between two endpoint-dependent
			// mappings.
			p.log.Info("port-predicting hole punch failed; carrying data through the relay", "peer", id)
			return p.pathTo(id)
		case strategy == strategyBirthday:
			// The NAT behaviour may be wrong (a filtering not tested yet):
			// DCUtR gets its chance still.
			p.log.Info("birthday hole punch failed; trying DCUtR", "peer", id)
		}
	}
	failedBefore, _ := p.tracer.failures(id)
	hadHandler := hasHandler(p.h, holepunch.Protocol)
	if !hadHandler {
		wctx, cancel := p.clk.WithTimeout(ctx, dcutrReadyTimeout)
		ready := waitHandler(wctx, p.h, holepunch.Protocol)
		cancel()
		if !ready {
			p.log.Warn("cannot hole punch: no public address observed for this node yet; staying relayed", "peer", id)
			return p.pathTo(id)
		}
	}
	rounds := 1
	if p.limited(id) {
		rounds = punchRounds
	}
	pctx, pcancel := p.clk.WithTimeout(network.WithAllowLimitedConn(ctx, "p2pnode: hole punch"), time.Duration(rounds)*punchTimeout)
	defer pcancel()
	for round := 1; ; round++ {
		if !hadHandler || redial || round > 1 {
			// The remote asked for DCUtR when the relayed connection
			// opened, and will not ask again on that connection (before
			// our handler existed, it could not even ask; before its own
			// existed, it did not: then it says redial). A new relayed
			// connection makes it ask again (an attempt still in flight,
			// say a connection reversal, carries on: go-libp2p runs one
			// attempt per peer at a time).
			failedBefore, _ = p.tracer.failures(id)
			if err := p.redialRelayed(pctx, id); err != nil {
				p.log.Warn("relay redial for hole punching failed", "peer", id, "error", err)
				break
			}
		}
		if p.waitDirect(pctx, id, failedBefore) {
			took := p.clk.Since(start)
			p.report(true, took)
			p.log.Info("direct connection by hole punching", "peer", id, "took", took.Round(time.Millisecond), "round", round)
			return PathDirect
		}
		if round >= rounds || pctx.Err() != nil {
			break
		}
		p.log.Info("hole punch failed; trying again through a new relayed connection", "peer", id)
	}
	took := p.clk.Since(start)
	p.report(false, took)
	p.log.Warn("hole punch failed; carrying data through the relay", "peer", id, "took", took.Round(time.Millisecond))
	return p.pathTo(id)
}

func (p *puncher) report(direct bool, took time.Duration) {
	if p.punched != nil {
		p.punched(direct, took)
	}
}

// limited reports whether every connection to id is limited.
func (p *puncher) limited(id peer.ID) bool {
	conns := p.h.Network().ConnsToPeer(id)
	for _, c := range conns {
		if !c.Stat().Limited {
			return false
		}
	}
	return len(conns) > 0
}

// redialRelayed replaces the relayed connections to id by a new one. It
// refuses to close one that carries application streams (a forwarded
// connection in use): cutting a user's session to retry a punch would be
// worse than staying relayed.
func (p *puncher) redialRelayed(ctx context.Context, id peer.ID) error {
	circuits := p.circuitAddrs(id)
	if len(circuits) == 0 {
		return errors.New("no circuit address known")
	}
	conns := p.h.Network().ConnsToPeer(id)
	for _, c := range conns {
		if c.Stat().Limited {
			if protos := appStreams(c); len(protos) > 0 {
				return fmt.Errorf("the relayed connection carries open streams (%s); not replacing it", strings.Join(protos, ", "))
			}
		}
	}
	for _, c := range conns {
		if c.Stat().Limited {
			c.Close()
		}
	}
	return p.h.Connect(ctx, peer.AddrInfo{ID: id, Addrs: circuits})
}

// appStreams lists c's streams of protocols other than libp2p's own
// (identify, ping, DCUtR, kad, ...: all under /ipfs/ or /libp2p/). A stream
// whose protocol is not negotiated yet does not count: right after the
// relayed connection opens, those are libp2p's own, identify's both ways
// and the remote's DCUtR stream that this node refuses while its handler is
// not registered (the very reason for the redial); both were seen in the
// NAT lab over QUIC, where they kept the punch from being retried. An
// application's stream is not among them: go-libp2p's host opens one only
// after identify, and then sets its protocol at once (lazy negotiation).
func appStreams(c network.Conn) []string {
	var out []string
	for _, s := range c.GetStreams() {
		proto := string(s.Protocol())
		if proto != "" && !strings.HasPrefix(proto, "/ipfs/") && !strings.HasPrefix(proto, "/libp2p/") {
			out = append(out, proto)
		}
	}
	return out
}

// circuitAddrs returns id's known /p2p-circuit addresses.
func (p *puncher) circuitAddrs(id peer.ID) []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, a := range p.h.Peerstore().Addrs(id) {
		if isRelayAddr(a) {
			out = append(out, a)
		}
	}
	return out
}

// waitDirect waits up to punchTimeout for a direct connection to id, or
// until the remote's hole punch attempts have all failed (counted from
// failedBefore). It wakes on every new connection (the notifiee) and on
// every failure the tracer counts.
func (p *puncher) waitDirect(ctx context.Context, id peer.ID, failedBefore int) bool {
	t := p.clk.Timer(punchTimeout)
	defer t.Stop()
	for {
		conns := p.conns.wait()
		failed, traced := p.tracer.failures(id)
		if p.pathTo(id) == PathDirect {
			return true
		}
		if failed-failedBefore >= maxPunchAttempts {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return false
		case <-conns:
		case <-traced:
		}
	}
}

// hasHandler reports whether h has a stream handler for proto.
func hasHandler(h host.Host, proto protocol.ID) bool {
	return slices.Contains(h.Mux().Protocols(), proto)
}

// waitHandler waits until h has a stream handler for proto, or ctx ends.
func waitHandler(ctx context.Context, h host.Host, proto protocol.ID) bool {
	has := func() bool { return hasHandler(h, proto) }
	sub, err := h.EventBus().Subscribe(new(event.EvtLocalProtocolsUpdated))
	if err != nil {
		return has()
	}
	defer sub.Close()
	for !has() {
		select {
		case <-ctx.Done():
			return false
		case <-sub.Out():
		}
	}
	return true
}

// punchTracer counts failed hole punch attempts of the peers a punch is
// waiting on, from go-libp2p's holepunch tracer (holepunch.WithTracer), so
// that the wait can stop once the remote has given up, rather than at its
// timeout. It logs every failed attempt, watched or not.
type punchTracer struct {
	log     *slog.Logger
	mu      sync.Mutex
	fails   map[peer.ID]int // watched peers only
	watched map[peer.ID]int // how many waits watch the peer
	changed *broadcast      // fires on every counted failure
}

func newPunchTracer(log *slog.Logger) *punchTracer {
	return &punchTracer{log: log, fails: make(map[peer.ID]int), watched: make(map[peer.ID]int), changed: newBroadcast()}
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
	_, ok = t.watched[evt.Remote]
	if ok {
		t.fails[evt.Remote]++
	}
	t.mu.Unlock()
	if ok {
		t.changed.fire()
	}
}

// watch starts counting p's failures; unwatch stops it (calls nest).
func (t *punchTracer) watch(p peer.ID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.watched[p]++
}

func (t *punchTracer) unwatch(p peer.ID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.watched[p]--; t.watched[p] <= 0 {
		delete(t.watched, p)
		delete(t.fails, p)
	}
}

// failures returns how many attempts with p failed since it is watched, and
// a channel closed at the next counted failure.
func (t *punchTracer) failures(p peer.ID) (int, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.fails[p], t.changed.wait()
}
