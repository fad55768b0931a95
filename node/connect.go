package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

const (
	// unreachableRetryWindow bounds how long Connect keeps redialing a peer
	// whose known addresses do not answer, for a peer that is restarting,
	// or that the DHT does not know yet: a serving peer that has just
	// joined is findable only once its relay address reached the bootstrap
	// node (identify push), a few round trips after its reservation (seen
	// at 150 ms RTT in the NAT matrix: 4 of 30 edm/eim-eif tries said "not
	// found"; none of 30 with the retry); the
	// waits between attempts start at unreachableRetryFirst and double.
	unreachableRetryWindow = 4 * time.Second
	unreachableRetryFirst  = 250 * time.Millisecond
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
// DHT when none are known, and returns the path it got. Its one policy for a
// relayed connection, whether it existed or Connect made it: when the relay
// limits it, Connect waits (bounded, about 20 s at worst) for DCUtR hole
// punching to turn it into a direct one, and if the punch fails it returns
// PathRelayed and no error (a later Connect or Reconnect punches again, at
// most every 30 s); through a relay that does not limit the circuit, it
// returns PathRelayed at once and punches in the background. Concurrent
// calls for different peers punch concurrently; for one peer they share one
// punch.
//
// A peer whose known addresses do not answer is redialed, with a fresh DHT
// lookup, for up to 4 s (unreachableRetryWindow), so that a peer that is
// restarting is found again. The error says which bootstrap peers the lookup
// went through, so that a user can tell "peer offline" from "not joined".
func (n *Node) Connect(ctx context.Context, p peer.ID) (Path, error) {
	if p == n.Host.ID() {
		return PathNone, fmt.Errorf("peer %s is this node itself", p)
	}
	n.watch.use(p)
	switch n.PathTo(p) {
	case PathDirect:
		return PathDirect, nil
	case PathRelayed:
		return n.overRelay(ctx, p), nil
	}
	// Waiting for a bootstrap peer first turns "routing table empty" into a
	// lookup that can succeed.
	if _, err := n.WaitBootstrap(ctx); err != nil {
		return PathNone, fmt.Errorf("cannot look up peer %s: %w", p, err)
	}
	if err := n.routing.waitRoutingTable(ctx); err != nil {
		return PathNone, fmt.Errorf("cannot look up peer %s: no DHT server in the routing table (bootstrap peers %s): %w", p, n.join.describe(), err)
	}
	err := n.dialRetrying(ctx, p)
	if err != nil {
		if errors.Is(err, routing.ErrNotFound) || errors.Is(err, kb.ErrLookupFailure) || ctx.Err() != nil {
			return PathNone, fmt.Errorf("peer %s not found in the DHT (asked through bootstrap peers %s); is it running and joined to the same bootstrap peers?%s: %w",
				p, n.join.describe(), n.noRelayHint(), err)
		}
		return PathNone, fmt.Errorf("peer %s is unreachable at the addresses the DHT gave, tried for %v (is it running?): %w", p, unreachableRetryWindow, err)
	}
	if n.PathTo(p) == PathDirect {
		return PathDirect, nil
	}
	return n.overRelay(ctx, p), nil
}

// overRelay is Connect's policy for a peer reachable only through a relay.
func (n *Node) overRelay(ctx context.Context, p peer.ID) Path {
	if limited, _, _ := n.RelayLimit(p); !limited {
		// A relay that carries our data without limit: use it now and
		// punch meanwhile; new connections go direct once that works.
		n.punch.punchAsync(p)
		return n.PathTo(p)
	}
	// A limited relayed connection would cut the data: wait for the punch.
	return n.punch.punch(ctx, p)
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
	start := n.clk.Now()
	delay := unreachableRetryFirst
	for {
		if sw, ok := n.Host.Network().(*swarm.Swarm); ok {
			sw.Backoff().Clear(p)
		}
		err := n.Host.Connect(lctx, peer.AddrInfo{ID: p})
		if err == nil || errors.Is(err, kb.ErrLookupFailure) || n.clk.Since(start)+delay > unreachableRetryWindow {
			return err
		}
		if !sleep(ctx, n.clk, delay) {
			return err
		}
		delay *= 2
	}
}

// Reconnect is meant for each new connection a forward carries: it returns
// at once when a direct connection to p exists (unless a probe of it is
// overdue: then it waits for the verdict, at most 2×pathDeadAfter; the
// direct connections to the peers of Connect and Reconnect are probed
// every pathCheckInterval and closed when they stop answering, see
// pathWatch); with only a relayed one it
// starts a new hole punch in the background (at most once every 30 s) and
// returns; with none (the peer restarted, or the connection died) it
// connects again as Connect does, looking p up in the DHT if need be.
func (n *Node) Reconnect(ctx context.Context, p peer.ID) (Path, error) {
	n.watch.use(p)
	n.watch.settle(ctx, p)
	switch n.PathTo(p) {
	case PathDirect:
		return PathDirect, nil
	case PathRelayed:
		n.punch.punchAsync(p)
		return PathRelayed, nil
	}
	return n.Connect(ctx, p)
}

// dialRanker is go-libp2p's DefaultDialRanker with two changes.
//
// When every direct address is private (a LAN, loopback), direct TCP
// addresses are dialled first, and the other direct ones (QUIC) one
// swarm.PrivateTCPDelay after the last TCP dial. go-libp2p prefers QUIC for
// its shorter handshake, but a forward carries its data over the connection
// for much longer than the handshake takes, and over TCP+TLS+yamux a byte
// costs a third of the CPU it costs over QUIC (bench/throughput.sh on
// loopback: 2.8 against 9.2 CPU s/GB, 3x the MB/s with both transports
// on). A TCP dial that fails at once (a RST) lets QUIC go at once: the swarm
// dials the next address as soon as none is in flight. Public addresses keep
// go-libp2p's order, QUIC first, on purpose: the connections to the
// (public) bootstrap peers are where identify learns this node's observed
// addresses, and DCUtR punches only with those. Dialled over TCP only, a
// node has no observed QUIC address, and the punch through routers that
// answer with RST, which only QUIC gets through, fails (the lab case
// "eim-apdf to eim-apdf rejecting, default transports" in TestNATTraversal).
//
// Relay addresses wait swarm.RelayDelay behind the direct ones whenever
// there are any, not only when there are public ones. Without that, a peer
// on the same LAN (or loopback) that also publishes a circuit address is
// often reached through the relay first, because a stream over the existing
// relay connection beats a fresh TCP handshake.
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
	return tcpFirst(ranked)
}

// tcpFirst re-ranks the direct addresses of ranked when none of them is
// public: TCP ones as DefaultDialRanker ranks them alone (happy eyeballs
// between IPv6 and IPv4), every other direct one a TCP delay after the
// last TCP dial.
func tcpFirst(ranked []network.AddrDelay) []network.AddrDelay {
	var tcpAddrs []ma.Multiaddr
	for _, r := range ranked {
		if isRelayAddr(r.Addr) {
			continue
		}
		if manet.IsPublicAddr(r.Addr) {
			return ranked
		}
		if isDirectTCP(r.Addr) {
			tcpAddrs = append(tcpAddrs, r.Addr)
		}
	}
	if len(tcpAddrs) == 0 || len(tcpAddrs) == len(ranked) {
		return ranked
	}
	tcpDelay := make(map[string]time.Duration, len(tcpAddrs))
	var last time.Duration
	for _, r := range swarm.DefaultDialRanker(tcpAddrs) {
		tcpDelay[string(r.Addr.Bytes())] = r.Delay
		last = max(last, r.Delay)
	}
	for i := range ranked {
		if d, ok := tcpDelay[string(ranked[i].Addr.Bytes())]; ok {
			ranked[i].Delay = d
		} else if !isRelayAddr(ranked[i].Addr) {
			ranked[i].Delay += last + swarm.PrivateTCPDelay
		}
	}
	return ranked
}

// isDirectTCP reports whether a is a TCP address (WebSocket included) that
// is not a relay's.
func isDirectTCP(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_TCP)
	return err == nil && !isRelayAddr(a)
}

func isRelayAddr(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_CIRCUIT)
	return err == nil
}

// noRelayHint names a likely cause of "not found" when no connected
// bootstrap peer offers a circuit relay: a peer behind NAT then has no
// relay reservation, hence no address others can use.
func (n *Node) noRelayHint() string {
	seen := false
	for _, ai := range n.cfg.BootstrapPeers {
		if n.Host.Network().Connectedness(ai.ID) != network.Connected {
			continue
		}
		switch offersRelay(n.Host, ai.ID) {
		case RelayOffered:
			return ""
		case RelayNotOffered:
			seen = true
		}
	}
	if !seen {
		return ""
	}
	return " (none of the connected bootstrap peers offers a circuit relay, so a peer behind a NAT has no address that others can reach: run a p2pnode bootstrap node, or use bootstrap peers that relay)"
}
