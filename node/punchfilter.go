package node

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// tcpFirstTTL is how long an armed TCP-first punch waits for its DCUtR
// attempt. The attempt follows the negotiation within a few relayed round
// trips; an arming left over (DCUtR had already made the path direct) must
// not shape a punch much later.
const tcpFirstTTL = punchRetryInterval

// negotiateWait bounds how long the DCUtR initiator holds its first attempt
// with a p2pnode peer for PunchProtocol's verdict (which includes the
// peer's NAT check: a few round trips to a STUN server).
const negotiateWait = 3 * time.Second

// punchFilter is the holepunch.AddrFilter (go-libp2p's
// holepunch.WithAddrFilter) that makes DCUtR punch TCP first. DCUtR dials
// every address it has at once, and the first connection up wins; QUIC's
// handshake is shorter than TCP+TLS+yamux's, so QUIC always wins, and
// go-libp2p's swarm then refuses a second, TCP, connection to the same
// peer. But a forward's byte costs a third of the CPU over TCP that it
// costs over QUIC (README, Performance), and TCP keeps its rate under loss
// where quic-go's falls (issue 15's WAN figures). So when both peers agreed
// over PunchProtocol that TCP can be punched (see tcpPunchable), each arms
// the filter for the other: the next DCUtR attempt with that peer, on both
// sides, offers and dials TCP addresses only. The attempts after it are
// unfiltered, so where TCP cannot get through (routers that answer with a
// RST, when the RST comes before the other side's SYN has left) the next
// attempt punches QUIC (the NAT matrix: 244 ms median at 0 ms RTT).
//
// Each side calls FilterLocal once at the start of every attempt (the
// initiator before its CONNECT, the responder before answering it), then
// FilterRemote for the addresses the other side sent. DCUtR may start
// before both sides have armed (the initiator starts it when the relayed
// connection opens); one armed side is enough, because it adds the other's
// TCP public address (from the negotiation) to what it dials, and the
// unarmed side dials the TCP addresses it was sent: TCP against TCP.
type punchFilter struct {
	now func() time.Time

	// h is set once the host exists (setHost) when PunchProtocol runs on
	// this node; until then, and without it, the filter never waits.
	h atomic.Pointer[host.Host]
	// decided fires whenever a negotiation ends.
	decidedNow *broadcast
	// nat are this node's public addresses from its last NAT check
	// (natAddrs), offered in every attempt next to the observed ones.
	nat atomic.Pointer[[]ma.Multiaddr]

	mu      sync.Mutex
	decided map[peer.ID]time.Time // when the last negotiation with the peer ended
	armed   map[peer.ID]armed
	// current: the attempt in flight with this peer is TCP-only.
	current map[peer.ID]ma.Multiaddr // the peer's address from arm, or nil
}

// armed is a TCP-first attempt to come.
type armed struct {
	until time.Time
	// local and remote are this node's and the peer's TCP public
	// addresses as their NAT checks found them, or nil. A node that joined
	// over QUIC has no observed TCP address (identify observes the
	// connection it runs on), so without them DCUtR might have no TCP
	// address to offer or dial.
	local, remote ma.Multiaddr
}

func newPunchFilter(now func() time.Time) *punchFilter {
	return &punchFilter{now: now, armed: make(map[peer.ID]armed), current: make(map[peer.ID]ma.Multiaddr),
		decided: make(map[peer.ID]time.Time), decidedNow: newBroadcast()}
}

// setHost turns on the wait for negotiations (see FilterLocal): h runs
// PunchProtocol.
func (f *punchFilter) setHost(h host.Host) { f.h.Store(&h) }

// setNATAddrs records this node's public addresses from a NAT check.
func (f *punchFilter) setNATAddrs(addrs []ma.Multiaddr) { f.nat.Store(&addrs) }

// withNAT returns addrs and the NAT check's addresses.
func (f *punchFilter) withNAT(addrs []ma.Multiaddr) []ma.Multiaddr {
	nat := f.nat.Load()
	if nat == nil {
		return addrs
	}
	out := slices.Clone(addrs)
	for _, a := range *nat {
		out = withAddr(out, a)
	}
	return out
}

// decide records that a negotiation with p ended (armed or not).
func (f *punchFilter) decide(p peer.ID) {
	f.mu.Lock()
	now := f.now()
	if len(f.decided) >= missedMax {
		for q, at := range f.decided {
			if now.Sub(at) > tcpFirstTTL {
				delete(f.decided, q)
			}
		}
	}
	if len(f.decided) < 2*missedMax {
		f.decided[p] = now
	}
	f.mu.Unlock()
	f.decidedNow.fire()
}

// awaitVerdict holds the DCUtR initiator's attempt with p until the
// negotiation with p ended, at most negotiateWait. go-libp2p starts DCUtR
// as soon as identify has run on the relayed connection, one relayed round
// trip, and PunchProtocol needs that round trip and the NAT check: at an
// internet RTT, DCUtR's first attempt would go before either side armed,
// and end on QUIC. Only the initiator waits (the side with the inbound
// relayed connection: it calls FilterLocal before sending CONNECT, and
// measures the RTT after); the responder calls it while the initiator's
// RTT clock runs. It waits only for peers that speak PunchProtocol, and
// not when a negotiation with p ended less than tcpFirstTTL ago.
func (f *punchFilter) awaitVerdict(p peer.ID) {
	hp := f.h.Load()
	if hp == nil {
		return
	}
	h := *hp
	if protos, err := h.Peerstore().SupportsProtocols(p, PunchProtocol); err != nil || len(protos) == 0 {
		return
	}
	if !slices.ContainsFunc(h.Network().ConnsToPeer(p), func(c network.Conn) bool {
		return c.Stat().Direction == network.DirInbound && isRelayAddr(c.RemoteMultiaddr())
	}) {
		return
	}
	deadline := time.NewTimer(negotiateWait)
	defer deadline.Stop()
	for {
		fired := f.decidedNow.wait()
		f.mu.Lock()
		at, ok := f.decided[p]
		recent := ok && f.now().Sub(at) < tcpFirstTTL
		f.mu.Unlock()
		if recent {
			return
		}
		select {
		case <-fired:
		case <-deadline.C:
			return
		}
	}
}

// arm makes the next DCUtR attempt with p TCP-only, offering local and
// dialling remote (each if not nil and public) next to the TCP addresses
// DCUtR has.
func (f *punchFilter) arm(p peer.ID, local, remote ma.Multiaddr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	for q, a := range f.armed {
		if now.After(a.until) {
			delete(f.armed, q)
		}
	}
	public := func(a ma.Multiaddr) ma.Multiaddr {
		if a == nil || !manet.IsPublicAddr(a) {
			return nil
		}
		return a
	}
	f.armed[p] = armed{until: now.Add(tcpFirstTTL), local: public(local), remote: public(remote)}
}

// disarm drops an arming for p: a direct connection is there.
func (f *punchFilter) disarm(p peer.ID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.armed, p)
}

// FilterLocal implements holepunch.AddrFilter: the addresses this node
// offers p. An armed attempt offers the TCP ones and the NAT check's,
// unless there are none.
func (f *punchFilter) FilterLocal(p peer.ID, addrs []ma.Multiaddr) []ma.Multiaddr {
	f.awaitVerdict(p)
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.armed[p]
	delete(f.armed, p)
	delete(f.current, p)
	addrs = f.withNAT(addrs)
	if !ok || f.now().After(a.until) {
		return addrs
	}
	tcp := withAddr(onlyTCP(addrs), a.local)
	if len(tcp) == 0 {
		return addrs
	}
	f.current[p] = a.remote
	return tcp
}

// FilterRemote implements holepunch.AddrFilter: the addresses of p this node
// dials. In a TCP-only attempt, the TCP ones and p's address from the
// negotiation; all of them if that makes none.
func (f *punchFilter) FilterRemote(p peer.ID, addrs []ma.Multiaddr) []ma.Multiaddr {
	f.mu.Lock()
	defer f.mu.Unlock()
	remote, ok := f.current[p]
	if !ok {
		return addrs
	}
	delete(f.current, p)
	if tcp := withAddr(onlyTCP(addrs), remote); len(tcp) > 0 {
		return tcp
	}
	return addrs
}

// withAddr returns addrs with a appended, unless a is nil or in addrs.
func withAddr(addrs []ma.Multiaddr, a ma.Multiaddr) []ma.Multiaddr {
	if a != nil && !slices.ContainsFunc(addrs, a.Equal) {
		addrs = append(addrs, a)
	}
	return addrs
}

// onlyTCP returns the direct TCP addresses of addrs.
func onlyTCP(addrs []ma.Multiaddr) []ma.Multiaddr {
	return slices.DeleteFunc(slices.Clone(addrs), func(a ma.Multiaddr) bool { return !isDirectTCP(a) })
}
