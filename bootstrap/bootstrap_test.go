package bootstrap

import (
	"testing"

	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
)

func TestResources(t *testing.T) {
	def := relayv2.DefaultResources()
	tests := []struct {
		maxPeers             int
		reservations, perASN int
	}{
		{maxPeers: 1, reservations: def.MaxReservations, perASN: def.MaxReservationsPerASN},
		{maxPeers: 4096, reservations: 2048, perASN: 512},
	}
	for _, tc := range tests {
		r := Resources(tc.maxPeers)
		if r.MaxReservations != tc.reservations || r.MaxReservationsPerASN != tc.perASN || r.MaxReservationsPerIP != 32 {
			t.Errorf("Resources(%d): %d reservations, %d per ASN, %d per IP; want %d, %d, 32",
				tc.maxPeers, r.MaxReservations, r.MaxReservationsPerASN, r.MaxReservationsPerIP, tc.reservations, tc.perASN)
		}
		if r.Limit == nil || *r.Limit != *def.Limit {
			t.Errorf("Resources(%d).Limit = %+v; want the default circuit limit %+v", tc.maxPeers, r.Limit, def.Limit)
		}
	}
	// Each call returns its own value.
	Resources(10).MaxReservations = 1
	if Resources(10).MaxReservations != def.MaxReservations {
		t.Error("changing one Resources result changed another")
	}
}

func TestConnLimits(t *testing.T) {
	for _, tc := range []struct{ maxPeers, low, high int }{{4096, 3584, 4096}, {8, 7, 8}, {1, 0, 1}} {
		if low, high := ConnLimits(tc.maxPeers); low != tc.low || high != tc.high {
			t.Errorf("ConnLimits(%d) = %d, %d; want %d, %d", tc.maxPeers, low, high, tc.low, tc.high)
		}
	}
}
