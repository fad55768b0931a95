package node

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	ma "github.com/multiformats/go-multiaddr"
)

// Between private addresses the dial ranker tries TCP first (the cheaper
// transport per byte for a forward), QUIC a TCP delay later, relays last;
// public addresses keep go-libp2p's QUIC first (DCUtR punches with the
// observed addresses of the bootstrap connections); with one kind of
// address it changes nothing that go-libp2p decides.
func TestDialRankerTCPFirst(t *testing.T) {
	const relay = "/ip4/11.0.0.2/tcp/4001/p2p/12D3KooWQvsgzJrFVTim7FrE3GMP8dAqz5kToXuvVa7ZcAQukHBa/p2p-circuit"
	for _, tc := range []struct {
		name  string
		addrs []string
		// want: each address's delay, in the order given
		want []time.Duration
	}{
		{"private TCP and QUIC", []string{"/ip4/10.0.0.2/udp/4001/quic-v1", "/ip4/10.0.0.2/tcp/4001"},
			[]time.Duration{swarm.PrivateTCPDelay, 0}},
		{"loopback TCP and QUIC", []string{"/ip4/127.0.0.1/udp/4001/quic-v1", "/ip4/127.0.0.1/tcp/4001"},
			[]time.Duration{swarm.PrivateTCPDelay, 0}},
		{"QUIC only", []string{"/ip4/10.0.0.2/udp/4001/quic-v1"}, []time.Duration{0}},
		{"TCP only", []string{"/ip4/10.0.0.2/tcp/4001"}, []time.Duration{0}},
		{"relay after both", []string{"/ip4/10.0.0.2/udp/4001/quic-v1", "/ip4/10.0.0.2/tcp/4001", relay},
			[]time.Duration{swarm.PrivateTCPDelay, 0, swarm.RelayDelay}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var addrs []ma.Multiaddr
			for _, s := range tc.addrs {
				addrs = append(addrs, ma.StringCast(s))
			}
			got := map[string]time.Duration{}
			for _, r := range dialRanker(addrs) {
				got[r.Addr.String()] = r.Delay
			}
			if len(got) != len(addrs) {
				t.Fatalf("ranked %d addresses, want %d: %v", len(got), len(addrs), got)
			}
			for i, s := range tc.addrs {
				if got[s] < tc.want[i] || (tc.want[i] == 0 && got[s] != 0) {
					t.Errorf("%s dialled after %v, want %v", s, got[s], tc.want[i])
				}
			}
			// TCP strictly before QUIC, and relays after every direct address.
			for _, s := range tc.addrs {
				for _, o := range tc.addrs {
					if isDirectTCP(ma.StringCast(s)) && !isDirectTCP(ma.StringCast(o)) && got[s] >= got[o] {
						t.Errorf("%s (%v) not before %s (%v)", s, got[s], o, got[o])
					}
				}
			}
		})
	}
}

// Public addresses keep go-libp2p's order: QUIC first, TCP PublicTCPDelay
// later.
func TestDialRankerPublicKeepsQUICFirst(t *testing.T) {
	quic, tcp := ma.StringCast("/ip4/11.0.0.3/udp/4001/quic-v1"), ma.StringCast("/ip4/11.0.0.3/tcp/4001")
	got := map[string]time.Duration{}
	for _, r := range dialRanker([]ma.Multiaddr{tcp, quic}) {
		got[r.Addr.String()] = r.Delay
	}
	if got[quic.String()] != 0 || got[tcp.String()] < swarm.PublicTCPDelay {
		t.Errorf("public addresses ranked %v, want QUIC at once and TCP %v later", got, swarm.PublicTCPDelay)
	}
}
