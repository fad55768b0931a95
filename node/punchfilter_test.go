package node

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/p2pnode/p2pnode/node/natcheck"
)

func TestNATAddrs(t *testing.T) {
	var rep natcheck.Report
	rep.UDP.PublicAddress, rep.TCP.PublicAddress = "5.6.7.8:4001", "5.6.7.8:4002"
	got := natAddrs(rep, true, true)
	if len(got) != 2 || got[0].String() != "/ip4/5.6.7.8/udp/4001/quic-v1" || got[1].String() != "/ip4/5.6.7.8/tcp/4002" {
		t.Errorf("natAddrs = %v", got)
	}
	if got := natAddrs(rep, false, false); len(got) != 0 {
		t.Errorf("natAddrs of a check from other ports = %v, want none", got)
	}
	rep.UDP.PublicAddress = "10.0.0.1:4001"
	if got := natAddrs(rep, true, false); len(got) != 0 {
		t.Errorf("natAddrs of a private address = %v, want none", got)
	}
}

func TestTCPPunchable(t *testing.T) {
	const eim, apdm, unk = "endpoint-independent", "address-and-port-dependent", "unknown"
	cases := []struct {
		name string
		m    punchMsg
		want bool
	}{
		{"TCP mapping endpoint-independent", punchMsg{Mapping: apdm, TCP: eim}, true},
		{"TCP untested, UDP endpoint-independent", punchMsg{Mapping: eim, TCP: unk}, true},
		{"TCP untested, UDP symmetric", punchMsg{Mapping: apdm, TCP: unk}, false},
		{"TCP mapping symmetric", punchMsg{Mapping: eim, TCP: apdm}, false},
		{"no TCP listener", punchMsg{Mapping: eim}, false},
		{"nothing known", punchMsg{Mapping: unk, TCP: unk}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := tcpPunchable(c.m); got != c.want {
				t.Errorf("tcpPunchable(%+v) = %v, want %v", c.m, got, c.want)
			}
		})
	}
}

// TestPunchFilter: an armed peer's next DCUtR attempt offers and dials TCP
// only, the attempts after it everything; other peers are never filtered.
func TestPunchFilter(t *testing.T) {
	addrs := func(ss ...string) []ma.Multiaddr {
		out := make([]ma.Multiaddr, len(ss))
		for i, s := range ss {
			out[i] = ma.StringCast(s)
		}
		return out
	}
	const (
		tcp  = "/ip4/198.51.100.7/tcp/4001"
		quic = "/ip4/198.51.100.7/udp/4001/quic-v1"
	)
	both := addrs(tcp, quic)
	now := time.Unix(1e9, 0)
	f := newPunchFilter(func() time.Time { return now })
	a, b := peer.ID("a"), peer.ID("b")
	f.arm(a, nil, nil)

	check := func(what string, got []ma.Multiaddr, want ...string) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %v, want %v", what, got, want)
		}
		for i := range want {
			if got[i].String() != want[i] {
				t.Fatalf("%s: %v, want %v", what, got, want)
			}
		}
	}
	check("other peer, local", f.FilterLocal(b, both), tcp, quic)
	check("other peer, remote", f.FilterRemote(b, both), tcp, quic)
	check("armed attempt, local", f.FilterLocal(a, both), tcp)
	check("armed attempt, remote", f.FilterRemote(a, both), tcp)
	check("second attempt, local", f.FilterLocal(a, both), tcp, quic)
	check("second attempt, remote", f.FilterRemote(a, both), tcp, quic)
	if len(both) != 2 {
		t.Fatalf("the filter changed its argument: %v", both)
	}

	// The peer sent no TCP address (it did not arm): dial what it sent.
	f.arm(a, nil, nil)
	check("armed, local", f.FilterLocal(a, both), tcp)
	check("armed, peer sent QUIC only", f.FilterRemote(a, addrs(quic)), quic)

	// No TCP address here: the attempt is not filtered at all.
	f.arm(a, nil, nil)
	check("armed, no local TCP", f.FilterLocal(a, addrs(quic)), quic)
	check("armed, no local TCP, remote", f.FilterRemote(a, both), tcp, quic)

	// The NAT check's TCP address is offered too (a node joined over QUIC
	// has no observed TCP address); a private one is not. (5.6.7.8: an
	// address that go-multiaddr counts as public; nothing is dialled.)
	stunTCP := "/ip4/5.6.7.8/tcp/40123"
	f.arm(a, ma.StringCast(stunTCP), nil)
	check("armed with the NAT check's address", f.FilterLocal(a, addrs(quic)), stunTCP)
	f.arm(a, ma.StringCast(stunTCP), nil)
	check("armed with the NAT check's address, known already", f.FilterLocal(a, addrs(stunTCP, quic)), stunTCP)
	f.arm(a, ma.StringCast("/ip4/10.1.2.3/tcp/4001"), nil)
	check("armed with a private address", f.FilterLocal(a, addrs(quic)), quic)

	// The peer's TCP address from the negotiation is dialled too: the peer
	// had not armed yet and sent only QUIC.
	theirTCP := "/ip4/5.6.7.9/tcp/4001"
	f.arm(a, nil, ma.StringCast(theirTCP))
	check("armed, local", f.FilterLocal(a, both), tcp)
	check("armed, peer unarmed", f.FilterRemote(a, addrs(quic)), theirTCP)

	// A direct connection came: the arming is dropped.
	f.arm(a, nil, nil)
	f.disarm(a)
	check("disarmed", f.FilterLocal(a, both), tcp, quic)

	// The NAT check's addresses are offered in every attempt: a node that
	// joined over TCP has no observed QUIC address, and DCUtR needs one
	// behind routers that answer with a RST.
	natQUIC := "/ip4/5.6.7.8/udp/4001/quic-v1"
	f.setNATAddrs([]ma.Multiaddr{ma.StringCast(natQUIC), ma.StringCast(stunTCP)})
	check("NAT addresses, unarmed", f.FilterLocal(b, addrs(tcp)), tcp, natQUIC, stunTCP)
	f.arm(a, nil, nil)
	check("NAT addresses, armed", f.FilterLocal(a, addrs(quic)), stunTCP)
	f.setNATAddrs(nil)

	// An arming whose attempt never came expires.
	f.arm(a, nil, nil)
	now = now.Add(tcpFirstTTL + time.Second)
	check("expired arming", f.FilterLocal(a, both), tcp, quic)
}
