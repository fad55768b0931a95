package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
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
	// the relay for every TCP connection it carries.
	punchRetryInterval = 30 * time.Second
	// unreachableRetryWindow bounds how long Connect keeps redialing a peer
	// whose known addresses do not answer, for a peer that is restarting;
	// the waits between attempts start at unreachableRetryFirst and double.
	unreachableRetryWindow = 4 * time.Second
	unreachableRetryFirst  = 250 * time.Millisecond
	// punchRounds is how many relayed connections (each with up to 3
	// DCUtR attempts) upgrade tries when the relay limits the circuit.
	punchRounds = 2
)

// Path says how this node is connected to a peer.
type Path string

const (
	// PathNone: no connection.
	PathNone Path = "none"
	// PathDirect: at least one connection that does not go through a relay.
	PathDirect Path = "direct"
	// PathRelayed: only limited connections through a circuit relay.
	PathRelayed Path = "relayed"
)

// PathTo reports whether this node has a direct or only a relayed connection
// to p. A relayed connection is not always limited (a relay can authorize
// unlimited circuits), so the remote address decides, not Connectedness.
func (n *Node) PathTo(p peer.ID) Path {
	path := PathNone
	for _, c := range n.Host.Network().ConnsToPeer(p) {
		if c.IsClosed() {
			continue
		}
		if !c.Stat().Limited && !isRelayAddr(c.RemoteMultiaddr()) {
			return PathDirect
		}
		path = PathRelayed
	}
	return path
}

// RelayLimit reports the limits of the relayed connection to p, if the only
// connections to p are limited ones: the relay resets it after duration or
// after data bytes in either direction (circuit relay v2 Limit).
func (n *Node) RelayLimit(p peer.ID) (limited bool, duration time.Duration, data uint64) {
	if n.PathTo(p) != PathRelayed {
		return false, 0, 0
	}
	for _, c := range n.Host.Network().ConnsToPeer(p) {
		st := c.Stat()
		if !st.Limited {
			return false, 0, 0 // an authorized, unlimited circuit
		}
		duration, _ = st.Extra[client.StatLimitDuration].(time.Duration)
		data, _ = st.Extra[client.StatLimitData].(uint64)
	}
	return true, duration, data
}

// Connect makes sure there is a connection to p, finding its addresses in the
// DHT when none are known, and returns the path it got. When p is reachable
// only through a limited relayed connection, Connect waits (bounded, about
// 20 s at worst) for DCUtR hole punching to turn it into a direct one; if the
// punch fails it returns PathRelayed and no error, and a later Connect or
// Reconnect punches again. Through a relay that does not limit the circuit,
// it returns PathRelayed at once and punches in the background.
//
// A peer whose known addresses do not answer is redialed, with a fresh DHT
// lookup, for up to 4 s (unreachableRetryWindow), so that a peer that is
// restarting is found again. The error says which bootstrap peers the lookup
// went through, so that a user can tell "peer offline" from "not joined".
func (n *Node) Connect(ctx context.Context, p peer.ID) (Path, error) {
	if p == n.Host.ID() {
		return PathNone, fmt.Errorf("peer %s is this node itself", p)
	}
	switch n.PathTo(p) {
	case PathDirect:
		return PathDirect, nil
	case PathRelayed:
		return n.upgrade(ctx, p), nil
	}
	// Waiting for a bootstrap peer first turns "routing table empty" into a
	// lookup that can succeed.
	if _, err := n.WaitBootstrap(ctx); err != nil {
		return PathNone, fmt.Errorf("cannot look up peer %s: %w", p, err)
	}
	if err := n.waitRoutingTable(ctx); err != nil {
		return PathNone, fmt.Errorf("cannot look up peer %s: no DHT server in the routing table (bootstrap peers %s): %w", p, n.join.describe(), err)
	}
	err := n.dialRetrying(ctx, p)
	if err != nil {
		if errors.Is(err, routing.ErrNotFound) || errors.Is(err, kb.ErrLookupFailure) || ctx.Err() != nil {
			return PathNone, fmt.Errorf("peer %s not found in the DHT (asked through bootstrap peers %s); is it running and joined to the same bootstrap peers?: %w",
				p, n.join.describe(), err)
		}
		return PathNone, fmt.Errorf("peer %s is unreachable at the addresses the DHT gave, tried for %v (is it running?): %w", p, unreachableRetryWindow, err)
	}
	if n.PathTo(p) == PathDirect {
		return PathDirect, nil
	}
	if limited, _, _ := n.RelayLimit(p); !limited {
		// A relay that carries our data without limit: use it now and
		// punch meanwhile; new connections go direct once that works.
		n.upgradeAsync(p)
		return PathRelayed, nil
	}
	// A limited relayed connection would cut the data: wait for the punch.
	return n.upgrade(ctx, p), nil
}

// dialRetrying connects to p at the addresses the peerstore or the DHT has,
// and keeps trying for up to unreachableRetryWindow while they do not answer.
// A peer that has just restarted is reachable before the DHT knows its new
// addresses (the bootstrap peer learns them by identify, a moment after the
// connection) and before its new relay reservation is made; and after one
// failed dial, go-libp2p's swarm refuses to dial the same addresses again for
// 5 s or more (swarm.DialBackoff), although each dial here is a user's new
// TCP connection and the peer may be back. So each attempt clears that
// backoff, and go-libp2p's routed host asks the DHT again when the known
// addresses fail.
func (n *Node) dialRetrying(ctx context.Context, p peer.ID) error {
	lctx := network.WithAllowLimitedConn(ctx, "p2pnode: relayed connection, upgraded by DCUtR")
	start := time.Now()
	delay := unreachableRetryFirst
	for {
		if sw, ok := n.Host.Network().(*swarm.Swarm); ok {
			sw.Backoff().Clear(p)
		}
		err := n.Host.Connect(lctx, peer.AddrInfo{ID: p})
		if err == nil || errors.Is(err, routing.ErrNotFound) || errors.Is(err, kb.ErrLookupFailure) ||
			time.Since(start)+delay > unreachableRetryWindow {
			return err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		delay *= 2
	}
}

// Reconnect is meant for each new connection a forward carries: it returns
// at once when a direct connection to p exists; with only a relayed one it
// starts a new hole punch in the background (at most once every 30 s) and
// returns; with none (the peer restarted, or the connection died) it
// connects again as Connect does, looking p up in the DHT if need be.
func (n *Node) Reconnect(ctx context.Context, p peer.ID) (Path, error) {
	switch n.PathTo(p) {
	case PathDirect:
		return PathDirect, nil
	case PathRelayed:
		n.upgradeAsync(p)
		return PathRelayed, nil
	}
	return n.Connect(ctx, p)
}

// upgradeAsync runs upgrade in the background, owned by the node.
func (n *Node) upgradeAsync(p peer.ID) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.upgrade(n.ctx, p)
	}()
}

// upgrade tries to turn a relayed connection to p into a direct one with
// DCUtR. The hole punch is started by the peer that received the relayed
// connection, and only if this node's /libp2p/dcutr handler is registered
// when it asks (go-libp2p issue #3024: nothing retries). So: wait for the
// handler, give the punch in flight a chance, and if there is still no direct
// connection, redial through the relay so that the remote punches again.
func (n *Node) upgrade(ctx context.Context, p peer.ID) Path {
	if !n.punchMu.TryLock() {
		return n.PathTo(p) // a punch is under way; no need for two
	}
	defer n.punchMu.Unlock()
	if n.PathTo(p) == PathDirect {
		return PathDirect
	}
	if last, ok := n.lastPunch[p]; ok && time.Since(last) < punchRetryInterval {
		return n.PathTo(p)
	}
	n.lastPunch[p] = time.Now()

	start := time.Now()
	failedBefore, _ := n.punches.failures(p)
	hadHandler := n.hasProtocol(holepunch.Protocol)
	if !hadHandler {
		wctx, cancel := context.WithTimeout(ctx, dcutrReadyTimeout)
		ready := n.waitProtocol(wctx, holepunch.Protocol)
		cancel()
		if !ready {
			n.log.Warn("cannot hole punch: no public address observed for this node yet; staying relayed", "peer", p)
			return n.PathTo(p)
		}
	}
	// Through a limited relay a failed punch means a connection cut at the
	// limit, so it is worth a second round: a punch that failed on timing
	// (a loaded machine, SYNs crossing badly) often works the next time.
	rounds := 1
	if limited, _, _ := n.RelayLimit(p); limited {
		rounds = punchRounds
	}
	pctx, pcancel := context.WithTimeout(network.WithAllowLimitedConn(ctx, "p2pnode: hole punch"), time.Duration(rounds)*punchTimeout)
	defer pcancel()
	for round := 1; ; round++ {
		if !hadHandler || round > 1 {
			// The remote asked for DCUtR when the relayed connection
			// opened, and will not ask again on that connection (before
			// our handler existed, it could not even ask). A new relayed
			// connection makes it ask again (an attempt still in flight,
			// say a connection reversal, carries on: go-libp2p runs one
			// attempt per peer at a time).
			failedBefore, _ = n.punches.failures(p)
			if err := n.redialRelayed(pctx, p); err != nil {
				n.log.Warn("relay redial for hole punching failed", "peer", p, "error", err)
				break
			}
		}
		if n.waitDirect(pctx, p, punchTimeout, failedBefore) {
			n.metrics.punched(true, time.Since(start))
			n.log.Info("direct connection by hole punching", "peer", p, "took", time.Since(start).Round(time.Millisecond), "round", round)
			return PathDirect
		}
		if round >= rounds || pctx.Err() != nil {
			break
		}
		n.log.Info("hole punch failed; trying again through a new relayed connection", "peer", p)
	}
	n.metrics.punched(false, time.Since(start))
	n.log.Warn("hole punch failed; carrying data through the relay", "peer", p, "took", time.Since(start).Round(time.Millisecond))
	return n.PathTo(p)
}

// redialRelayed replaces the relayed connections to p by a new one. It
// refuses to close one that carries application streams (a forwarded
// connection in use): cutting a user's session to retry a punch would be
// worse than staying relayed.
func (n *Node) redialRelayed(ctx context.Context, p peer.ID) error {
	circuits := n.circuitAddrs(p)
	if len(circuits) == 0 {
		return errors.New("no circuit address known")
	}
	conns := n.Host.Network().ConnsToPeer(p)
	for _, c := range conns {
		if c.Stat().Limited && carriesAppStreams(c) {
			return errors.New("the relayed connection carries open streams; not replacing it")
		}
	}
	for _, c := range conns {
		if c.Stat().Limited {
			c.Close()
		}
	}
	return n.Host.Connect(ctx, peer.AddrInfo{ID: p, Addrs: circuits})
}

// carriesAppStreams reports whether c has a stream of a protocol other than
// libp2p's own (identify, ping, DCUtR, ...: all under /ipfs/ or /libp2p/).
func carriesAppStreams(c network.Conn) bool {
	for _, s := range c.GetStreams() {
		proto := string(s.Protocol())
		if !strings.HasPrefix(proto, "/ipfs/") && !strings.HasPrefix(proto, "/libp2p/") {
			return true
		}
	}
	return false
}

// circuitAddrs returns p's known /p2p-circuit addresses.
func (n *Node) circuitAddrs(p peer.ID) []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, a := range n.Host.Peerstore().Addrs(p) {
		if isRelayAddr(a) {
			out = append(out, a)
		}
	}
	return out
}

// waitDirect waits up to d for a direct connection to p, or until the
// remote's hole punch attempts have all failed (counted from failedBefore).
// It watches connection events, and also looks every 50 ms: a direct
// connection added next to an unlimited relayed one changes no
// Connectedness.
func (n *Node) waitDirect(ctx context.Context, p peer.ID, d time.Duration, failedBefore int) bool {
	sub, err := n.Host.EventBus().Subscribe(new(event.EvtPeerConnectednessChanged))
	if err != nil {
		return n.PathTo(p) == PathDirect
	}
	defer sub.Close()
	t := time.NewTimer(d)
	defer t.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for n.PathTo(p) != PathDirect {
		failed, changed := n.punches.failures(p)
		if failed-failedBefore >= maxPunchAttempts {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return false
		case <-sub.Out():
		case <-tick.C:
		case <-changed:
		}
	}
	return true
}

func (n *Node) hasProtocol(proto protocol.ID) bool {
	return slices.Contains(n.Host.Mux().Protocols(), proto)
}

// waitProtocol waits until this node has a handler for proto.
func (n *Node) waitProtocol(ctx context.Context, proto protocol.ID) bool {
	has := func() bool { return n.hasProtocol(proto) }
	sub, err := n.Host.EventBus().Subscribe(new(event.EvtLocalProtocolsUpdated))
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

// dialRanker is go-libp2p's DefaultDialRanker, except that relay addresses
// wait swarm.RelayDelay behind the direct ones whenever there are any, not
// only when there are public ones. Without that, a peer on the same LAN (or
// loopback) that also publishes a circuit address is often reached through
// the relay first, because a stream over the existing relay connection beats
// a fresh TCP handshake. A direct dial that fails at once (no route) does not
// hold the relay back: the swarm dials the next address as soon as none is
// in flight.
func dialRanker(addrs []ma.Multiaddr) []network.AddrDelay {
	ranked := swarm.DefaultDialRanker(addrs)
	if !slices.ContainsFunc(addrs, func(a ma.Multiaddr) bool { return !isRelayAddr(a) }) {
		return ranked
	}
	for i := range ranked {
		if isRelayAddr(ranked[i].Addr) && ranked[i].Delay < swarm.RelayDelay {
			ranked[i].Delay += swarm.RelayDelay
		}
	}
	return ranked
}

func isRelayAddr(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_CIRCUIT)
	return err == nil
}
