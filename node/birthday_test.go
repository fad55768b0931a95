package node

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/event"
	ma "github.com/multiformats/go-multiaddr"
)

func TestPunchStrategy(t *testing.T) {
	const (
		eim, adm, apdm, unk = "endpoint-independent", "address-dependent", "address-and-port-dependent", "unknown"
		eif, adf, apdf      = "endpoint-independent", "address-dependent", "address-and-port-dependent"
		q                   = "203.0.113.9:4001"
	)
	cases := []struct {
		name              string
		mine, theirs      punchMsg
		strategy          string
		hardIsMine, check bool
	}{
		{"both cone", punchMsg{Mapping: eim, Filtering: apdf, QUIC: q}, punchMsg{Mapping: eim, Filtering: apdf, QUIC: q}, strategyDCUtR, false, false},
		{"unknown side", punchMsg{Mapping: unk, QUIC: q}, punchMsg{Mapping: apdm, QUIC: q}, strategyDCUtR, false, false},
		{"old peer without NAT info", punchMsg{Mapping: apdm, QUIC: q}, punchMsg{}, strategyDCUtR, false, false},
		{"both symmetric", punchMsg{Mapping: apdm, QUIC: q}, punchMsg{Mapping: adm, QUIC: q}, strategyRelay, false, false},
		{"both symmetric, both sequential", punchMsg{Mapping: apdm, QUIC: q, Delta: 1}, punchMsg{Mapping: apdm, QUIC: q, Delta: 2}, strategyPredict, false, false},
		{"both symmetric, one sequential", punchMsg{Mapping: apdm, QUIC: q, Delta: 1}, punchMsg{Mapping: apdm, QUIC: q}, strategyRelay, false, false},
		{"both sequential, one without QUIC", punchMsg{Mapping: apdm, QUIC: q, Delta: 1}, punchMsg{Mapping: apdm, Delta: 1}, strategyRelay, false, false},
		{"both sequential, one side allows no probes", punchMsg{Mapping: apdm, QUIC: q, Delta: 1, NoProbe: true}, punchMsg{Mapping: apdm, QUIC: q, Delta: 1}, strategyRelay, false, false},
		{"birthday case, one side allows no probes", punchMsg{Mapping: apdm, QUIC: q}, punchMsg{Mapping: eim, Filtering: apdf, QUIC: q, NoProbe: true}, strategyRelay, false, false},
		{"birthday case, no probes, filtering not known", punchMsg{Mapping: apdm, QUIC: q, NoProbe: true}, punchMsg{Mapping: eim, Filtering: unk, QUIC: q}, strategyDCUtR, false, false},
		{"sequential symmetric, port-restricted peer", punchMsg{Mapping: apdm, QUIC: q, Delta: 1}, punchMsg{Mapping: eim, Filtering: apdf, QUIC: q}, strategyBirthday, true, true},
		{"me symmetric, port-restricted peer", punchMsg{Mapping: apdm, QUIC: q}, punchMsg{Mapping: eim, Filtering: apdf, QUIC: q}, strategyBirthday, true, true},
		{"me port-restricted, symmetric peer", punchMsg{Mapping: eim, Filtering: apdf, QUIC: q}, punchMsg{Mapping: apdm, QUIC: q}, strategyBirthday, false, true},
		{"me restricted cone, symmetric peer", punchMsg{Mapping: eim, Filtering: adf, QUIC: q}, punchMsg{Mapping: adm, QUIC: q}, strategyBirthday, false, true},
		{"filtering not known: birthday works for any", punchMsg{Mapping: eim, Filtering: unk, QUIC: q}, punchMsg{Mapping: apdm, QUIC: q}, strategyBirthday, false, true},
		{"no QUIC on the easy side, filtering known: relay", punchMsg{Mapping: apdm, QUIC: q}, punchMsg{Mapping: eim, Filtering: apdf}, strategyRelay, false, false},
		{"no QUIC, filtering not known: DCUtR may work", punchMsg{Mapping: apdm}, punchMsg{Mapping: eim, Filtering: unk}, strategyDCUtR, false, false},
		{"full cone peer: DCUtR gets in", punchMsg{Mapping: apdm, QUIC: q}, punchMsg{Mapping: eim, Filtering: eif, QUIC: q}, strategyDCUtR, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, hard := punchStrategy(c.mine, c.theirs)
			if got != c.strategy || c.check && hard != c.hardIsMine {
				t.Errorf("punchStrategy = %s, hard side mine %v; want %s, %v", got, hard, c.strategy, c.hardIsMine)
			}
			// Both sides must agree.
			other, otherHard := punchStrategy(c.theirs, c.mine)
			if other != got || got == strategyBirthday && otherHard == hard {
				t.Errorf("the peer picks %s (hard side its own: %v), this side %s (%v)", other, otherHard, got, hard)
			}
		})
	}
}

// TestPredictTargets: the two strides of port prediction make one of the
// dialer's flows the reverse of one of the listener's for every shift (s1
// foreign flows on the dialer's NAT, s2 on the listener's) up to a few.
func TestPredictTargets(t *testing.T) {
	const dBase, lBase = 20000, 31000
	for _, delta := range []int{1, 2, -1} {
		dialer := predictTargets(lBase, delta, false)
		listener := predictTargets(dBase, delta, true)
		if len(dialer) != predictFlows || len(listener) != predictFlows {
			t.Fatalf("delta %d: %d and %d targets, want %d each", delta, len(dialer), len(listener), predictFlows)
		}
		for s1 := 0; s1 <= 8; s1++ {
			for s2 := 0; s2 <= 8; s2++ {
				match := false
				// The dialer's flow i leaves from its NAT's port
				// dBase+delta*(i+s1) to dialer[i-1]; the listener's k
				// from lBase+delta*(k+s2) to listener[k-1].
				for i := 1; i <= predictFlows; i++ {
					for k := 1; k <= predictFlows; k++ {
						if dialer[i-1] == lBase+delta*(k+s2) && listener[k-1] == dBase+delta*(i+s1) {
							match = true
						}
					}
				}
				if !match {
					t.Errorf("delta %d, shifts %d and %d: no flow pair meets", delta, s1, s2)
				}
			}
		}
	}
	if got := predictTargets(65530, 4, false); len(got) != 1 || got[0] != 65534 {
		t.Errorf("targets past port 65535: %v, want only 65534", got)
	}
}

func TestDirectAddrsChanged(t *testing.T) {
	direct := ma.StringCast("/ip4/203.0.113.9/udp/4001/quic-v1")
	circuit := ma.StringCast("/ip4/203.0.113.1/tcp/4001/p2p/12D3KooWRATtujoz8BAz4wNJGDM29FYToG8t3UTH1cNK63AK5Ntu/p2p-circuit")
	cases := []struct {
		name string
		e    any
		want bool
	}{
		{"direct address added", event.EvtLocalAddressesUpdated{Current: []event.UpdatedAddress{{Address: direct, Action: event.Added}}}, true},
		{"direct address removed", event.EvtLocalAddressesUpdated{Removed: []event.UpdatedAddress{{Address: direct, Action: event.Removed}}}, true},
		{"only maintained", event.EvtLocalAddressesUpdated{Current: []event.UpdatedAddress{{Address: direct, Action: event.Maintained}}}, false},
		{"only a relay address", event.EvtLocalAddressesUpdated{Current: []event.UpdatedAddress{{Address: circuit, Action: event.Added}}}, false},
		{"another event", "not an address update", false},
	}
	for _, c := range cases {
		if got := directAddrsChanged(c.e); got != c.want {
			t.Errorf("%s: directAddrsChanged = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestPeerLAN(t *testing.T) {
	got := peerLAN([]string{
		"/ip4/10.1.0.2/tcp/4001",
		"/ip4/192.168.1.7/udp/4001/quic-v1",
		"/ip4/127.0.0.1/tcp/4001",                    // loopback: theirs, not ours
		"/ip4/203.0.113.9/tcp/4001",                  // public: DCUtR's business
		"/ip4/11.0.0.3/udp/4001/quic-v1/p2p-circuit", // relayed
		"not a multiaddr",                            // garbage
		"/ip4/10.1.0.2/tcp/4001/p2p/12D3KooWA6GisziRDW35tALuarSzc8xSuL5kMUySCNUGyYqWFVWS", // a peer ID of its own
		"/ip4/10.0.0.1/tcp/1", "/ip4/10.0.0.2/tcp/1", "/ip4/10.0.0.3/tcp/1", "/ip4/10.0.0.4/tcp/1", "/ip4/10.0.0.5/tcp/1",
	})
	want := []string{"/ip4/10.1.0.2/tcp/4001", "/ip4/192.168.1.7/udp/4001/quic-v1",
		"/ip4/10.0.0.1/tcp/1", "/ip4/10.0.0.2/tcp/1", "/ip4/10.0.0.3/tcp/1", "/ip4/10.0.0.4/tcp/1"}
	if len(got) != len(want) {
		t.Fatalf("peerLAN = %v, want %v", got, want)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Fatalf("peerLAN = %v, want %v", got, want)
		}
	}
}

func TestSamePublicIP(t *testing.T) {
	cases := []struct {
		name string
		a, b punchMsg
		want bool
	}{
		{"same IP, QUIC ports differ", punchMsg{QUIC: "203.0.113.9:4001"}, punchMsg{QUIC: "203.0.113.9:4002"}, true},
		{"same IP, one from TCP", punchMsg{TCPAddr: "203.0.113.9:4001"}, punchMsg{QUIC: "203.0.113.9:5000"}, true},
		{"other IPs", punchMsg{QUIC: "203.0.113.9:4001"}, punchMsg{QUIC: "203.0.113.10:4001"}, false},
		{"nothing known", punchMsg{}, punchMsg{}, false},
		{"garbage", punchMsg{QUIC: "x"}, punchMsg{QUIC: "x"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := samePublicIP(c.a, c.b); got != c.want {
				t.Errorf("samePublicIP = %v, want %v", got, c.want)
			}
		})
	}
}
