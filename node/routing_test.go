package node

import (
	"crypto/rand"
	"log/slog"
	"slices"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/protocol"
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

// TestDHTProtocols: a DHT server serves the WAN and the LAN DHT each on its
// own protocol (PREFIX/kad/1.0.0 and PREFIX/lan/kad/1.0.0, as kubo's dual
// DHT does), whatever the prefix. With one protocol for both, the LAN DHT's
// handler answered the internet's queries from a routing table holding no
// public peer.
func TestDHTProtocols(t *testing.T) {
	for _, prefix := range []protocol.ID{"", "/p2pnode-test"} {
		t.Run(string(prefix), func(t *testing.T) {
			key, _, err := crypto.GenerateEd25519Key(rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			n, err := New(Config{Identity: key, ListenAddrs: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")},
				Standalone: true, DHTMode: DHTModeServer, DHTProtocolPrefix: prefix, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { n.Close() })
			if prefix == "" {
				prefix = DefaultDHTProtocolPrefix
			}
			served := n.Host.Mux().Protocols()
			for _, want := range []protocol.ID{prefix + "/kad/1.0.0", prefix + "/lan/kad/1.0.0"} {
				if !slices.Contains(served, want) {
					t.Errorf("the node does not serve %s; it serves %v", want, served)
				}
			}
		})
	}
}
