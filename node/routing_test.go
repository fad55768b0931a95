package node

import (
	"slices"
	"testing"

	ma "github.com/multiformats/go-multiaddr"
)

func TestLANDHTAddrs(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in, out []string
	}{
		{"loopback only: a peer on this host", []string{"/ip4/127.0.0.1/tcp/4001", "/ip6/::1/udp/4001/quic-v1"}, []string{"/ip4/127.0.0.1/tcp/4001", "/ip6/::1/udp/4001/quic-v1"}},
		{"loopback and LAN", []string{"/ip4/127.0.0.1/tcp/4001", "/ip4/192.168.1.7/tcp/4001"}, []string{"/ip4/192.168.1.7/tcp/4001"}},
		{"loopback and public", []string{"/ip4/11.0.0.1/udp/4001/quic-v1", "/ip4/127.0.0.1/udp/4001/quic-v1"}, []string{"/ip4/11.0.0.1/udp/4001/quic-v1"}},
		{"none", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var in []ma.Multiaddr
			for _, s := range tc.in {
				in = append(in, ma.StringCast(s))
			}
			var got []string
			for _, a := range lanDHTAddrs(in) {
				got = append(got, a.String())
			}
			if !slices.Equal(got, tc.out) {
				t.Errorf("lanDHTAddrs(%v) = %v, want %v", tc.in, got, tc.out)
			}
		})
	}
}
