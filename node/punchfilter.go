package node

import (
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// tcpFirstTTL is how long an armed TCP-first punch waits for its DCUtR
// attempt. The attempt follows the negotiation within a few relayed round
// trips; an arming left over (DCUtR had already made the path direct) must
// not shape a punch much later.
const tcpFirstTTL = punchRetryInterval

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
// RST) the next attempt punches QUIC, one relayed round trip later.
//
// Each side calls FilterLocal once at the start of every attempt (the
// initiator before its CONNECT, the responder before answering it), then
// FilterRemote for the addresses the other side sent.
type punchFilter struct {
	now func() time.Time

	mu    sync.Mutex
	armed map[peer.ID]armed
	// current: the attempt in flight with this peer is TCP-only.
	current map[peer.ID]bool
}

// armed is a TCP-first attempt to come.
type armed struct {
	until time.Time
	// addr is this node's TCP public address as its NAT check found it,
	// or nil. A node that joined over QUIC has no observed TCP address
	// (identify observes the connection it runs on), so without it DCUtR
	// would have no TCP address to offer.
	addr ma.Multiaddr
}

func newPunchFilter(now func() time.Time) *punchFilter {
	return &punchFilter{now: now, armed: make(map[peer.ID]armed), current: make(map[peer.ID]bool)}
}

// arm makes the next DCUtR attempt with p TCP-only, offering addr (if not
// nil and public) next to the TCP addresses go-libp2p knows.
func (f *punchFilter) arm(p peer.ID, addr ma.Multiaddr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	for q, a := range f.armed {
		if now.After(a.until) {
			delete(f.armed, q)
		}
	}
	if addr != nil && !manet.IsPublicAddr(addr) {
		addr = nil
	}
	f.armed[p] = armed{until: now.Add(tcpFirstTTL), addr: addr}
}

// FilterLocal implements holepunch.AddrFilter: the addresses this node
// offers p. An armed attempt offers the TCP ones and the NAT check's,
// unless there are none.
func (f *punchFilter) FilterLocal(p peer.ID, addrs []ma.Multiaddr) []ma.Multiaddr {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.armed[p]
	delete(f.armed, p)
	delete(f.current, p)
	if !ok || f.now().After(a.until) {
		return addrs
	}
	tcp := onlyTCP(addrs)
	if a.addr != nil && !slices.ContainsFunc(tcp, a.addr.Equal) {
		tcp = append(tcp, a.addr)
	}
	if len(tcp) == 0 {
		return addrs
	}
	f.current[p] = true
	return tcp
}

// FilterRemote implements holepunch.AddrFilter: the addresses of p this node
// dials. In a TCP-only attempt, the TCP ones, unless p sent none (it did not
// arm: an older p2pnode, or the negotiation did not finish on its side).
func (f *punchFilter) FilterRemote(p peer.ID, addrs []ma.Multiaddr) []ma.Multiaddr {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.current[p] {
		return addrs
	}
	delete(f.current, p)
	if tcp := onlyTCP(addrs); len(tcp) > 0 {
		return tcp
	}
	return addrs
}

// onlyTCP returns the direct TCP addresses of addrs.
func onlyTCP(addrs []ma.Multiaddr) []ma.Multiaddr {
	return slices.DeleteFunc(slices.Clone(addrs), func(a ma.Multiaddr) bool { return !isDirectTCP(a) })
}
