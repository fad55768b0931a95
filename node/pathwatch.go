package node

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/filecoin-project/go-clock"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
)

const (
	// pathCheckInterval is how often a direct connection in use is
	// probed.
	pathCheckInterval = time.Second
	// pathDeadAfter bounds one probe: a direct connection that does not
	// answer within it is taken for dead (its path changed, the NAT
	// mapping expired, the laptop moved). QUIC would notice after its 30 s
	// idle timeout, yamux after its keepalive's; a forward's new
	// connections would hang on it until then.
	pathDeadAfter = 2 * time.Second
	// pathSuspectAfter: a probe unanswered for this long makes a new
	// forwarded connection wait for its verdict (see settle; at most
	// 2×pathDeadAfter) rather than go onto a connection that is probably
	// dead.
	pathSuspectAfter = time.Second
	// pathWatchIdle: a peer no forward asked for in this long is not
	// watched any more.
	pathWatchIdle = 2 * time.Minute
)

// pathWatch probes the direct connections to the peers this node forwards
// to (go-libp2p's /ipfs/ping/1.0.0, which every libp2p node serves) and
// closes one that stopped answering, so that new streams take the relayed
// connection at once and a new hole punch can start (dead is called):
// falling back to the relay, and forth to a direct path again. Streams
// still open on the dead connection are reset, with the reason in the log.
type pathWatch struct {
	h   host.Host
	log *slog.Logger
	clk clock.Clock
	// dead is called after a dead direct connection to a peer was closed.
	dead func(peer.ID)

	mu     sync.Mutex
	peers  map[peer.ID]*watched
	closed bool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// watched is one peer's state.
type watched struct {
	lastUse time.Time
	// probing: when the probe in flight started (zero: none); verdict is
	// closed when it ends.
	probing time.Time
	verdict chan struct{}
}

func newPathWatch(h host.Host, log *slog.Logger, clk clock.Clock, dead func(peer.ID)) *pathWatch {
	w := &pathWatch{h: h, log: log, clk: clk, dead: dead, peers: make(map[peer.ID]*watched)}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	return w
}

// Close stops every watch.
func (w *pathWatch) Close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.cancel()
	w.wg.Wait()
}

// use marks p in use by a forward and watches it until pathWatchIdle after
// the last use.
func (w *pathWatch) use(p peer.ID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	if st, ok := w.peers[p]; ok {
		st.lastUse = w.clk.Now()
		return
	}
	w.peers[p] = &watched{lastUse: w.clk.Now()}
	w.wg.Add(1)
	go w.watch(p)
}

// settle waits, when a probe of p's direct connection has gone unanswered
// for pathSuspectAfter, for its verdict (at most 2×pathDeadAfter), so
// that a new stream does not go onto a connection about to be closed.
func (w *pathWatch) settle(ctx context.Context, p peer.ID) {
	w.mu.Lock()
	st, ok := w.peers[p]
	var verdict chan struct{}
	if ok && !st.probing.IsZero() && w.clk.Since(st.probing) >= pathSuspectAfter {
		verdict = st.verdict
	}
	w.mu.Unlock()
	if verdict == nil {
		return
	}
	select {
	case <-verdict:
	case <-ctx.Done():
	}
}

func (w *pathWatch) watch(p peer.ID) {
	defer w.wg.Done()
	t := w.clk.Ticker(pathCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-t.C:
		}
		w.mu.Lock()
		st := w.peers[p]
		if w.clk.Since(st.lastUse) > pathWatchIdle {
			delete(w.peers, p)
			w.mu.Unlock()
			return
		}
		st.probing, st.verdict = w.clk.Now(), make(chan struct{})
		w.mu.Unlock()
		w.check(w.ctx, p)
		w.mu.Lock()
		st.probing = time.Time{}
		close(st.verdict)
		w.mu.Unlock()
	}
}

// check probes p's direct connection, if there is one, and closes it when
// it does not answer within pathDeadAfter; while it carries application
// streams, only when a second probe, sent at once, goes unanswered too (a
// slow answer behind a busy link must not cut a user's session). It
// reports whether it closed one.
func (w *pathWatch) check(ctx context.Context, p peer.ID) bool {
	c, dead := probeDirect(ctx, w.h, p, pathDeadAfter)
	if c == nil || !dead || ctx.Err() != nil || c.IsClosed() {
		return false
	}
	streams := len(appStreams(c))
	if streams > 0 {
		w.log.Info("the direct connection did not answer a ping; probing again", "peer", p, "within", pathDeadAfter)
		if c2, dead := probeDirect(ctx, w.h, p, pathDeadAfter); c2 != c || !dead || ctx.Err() != nil || c.IsClosed() {
			return false
		}
		streams = len(appStreams(c))
	}
	w.log.Warn("the direct connection stopped answering; closing it: new connections go through the relay, and hole punching starts again",
		"peer", p, "remote_addr", c.RemoteMultiaddr(), "streams_reset", streams)
	_ = c.Close()
	if w.dead != nil {
		w.dead(p)
	}
	return true
}

// probeDirect sends one ping to p over its best direct connection (never
// dialing) and waits up to timeout for the echo. go-libp2p's ping.Ping
// would do the exchange, but it allows relayed connections and does not
// say which connection it used, and that connection is the one to close. It returns the connection
// probed (nil when there is no direct one) and whether it stayed silent
// for the whole timeout; any other failure (a reset, a peer without the
// ping protocol) says nothing about the path.
func probeDirect(ctx context.Context, h host.Host, p peer.ID, timeout time.Duration) (network.Conn, bool) {
	if !hasDirectConn(h, p) {
		return nil, false
	}
	ctx, cancel := context.WithTimeout(network.WithNoDial(ctx, "p2pnode: path check"), timeout)
	defer cancel()
	s, err := h.NewStream(ctx, p, ping.ID)
	if err != nil {
		return nil, false // no direct connection by now; a stream that cannot open is QUIC's dead path too, seen next time by its deadline
	}
	defer s.Reset()
	c := s.Conn()
	if c.Stat().Limited || isRelayAddr(c.RemoteMultiaddr()) {
		return nil, false
	}
	if d, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(d)
	}
	out := make([]byte, ping.PingSize)
	_, _ = rand.Read(out)
	in := make([]byte, ping.PingSize)
	_, err = s.Write(out)
	if err == nil {
		_, err = io.ReadFull(s, in)
	}
	var ne net.Error
	silent := err != nil && (errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout())
	return c, silent
}

// hasDirectConn reports whether there is an open direct connection to p.
func hasDirectConn(h host.Host, p peer.ID) bool {
	for _, c := range h.Network().ConnsToPeer(p) {
		if !c.IsClosed() && !c.Stat().Limited && !isRelayAddr(c.RemoteMultiaddr()) {
			return true
		}
	}
	return false
}
