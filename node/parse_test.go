package node

import (
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

const (
	idA = "12D3KooWRATtujoz8BAz4wNJGDM29FYToG8t3UTH1cNK63AK5Ntu"
	idB = "12D3KooWHZeGMb51WTHunqpsmAJyqRv4QuE43i5kJaHJ4YwKyMuH"
)

func TestParse(t *testing.T) {
	id, err := ParsePeerID(idA)
	if err != nil || id.String() != idA {
		t.Errorf("ParsePeerID(%q) = %v, %v", idA, id, err)
	}
	// Legacy (SHA2-256, "Qm...") and CID forms are peer IDs too.
	for _, s := range []string{"QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N", "bafzbeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqxe"} {
		if _, err := ParsePeerID(s); err != nil {
			t.Errorf("ParsePeerID(%q) = %v", s, err)
		}
	}
	// peer.Decode accepts the first two (short identity multihashes); no
	// key gives them.
	for _, s := range []string{"12D3KooWnope", "11", "", "12D3KooW", "hello", idA + "x"} {
		if _, err := ParsePeerID(s); err == nil || !strings.Contains(err.Error(), "peer ID") {
			t.Errorf("ParsePeerID(%q) = %v, want an error about the peer ID", s, err)
		}
	}

	m, pid, err := ParseBootstrapAddr("/dnsaddr/bootstrap.example.net/p2p/" + idB)
	if err != nil || pid.String() != idB || m.String() != "/dnsaddr/bootstrap.example.net/p2p/"+idB {
		t.Errorf("ParseBootstrapAddr = %v, %v, %v", m, pid, err)
	}
	if _, _, err := ParseBootstrapAddr("/ip4/203.0.113.7/tcp/4001"); err == nil || !strings.Contains(err.Error(), "add /p2p/PEERID") {
		t.Errorf("ParseBootstrapAddr without /p2p = %v", err)
	}
	infos, err := peer.AddrInfosFromP2pAddrs(m)
	if err != nil || len(infos) != 1 {
		t.Errorf("AddrInfosFromP2pAddrs(ParseBootstrapAddr(...)) = %v, %v", infos, err)
	}

	for _, s := range []string{"/ip4/0.0.0.0/tcp/0", "/ip6/::/udp/4001/quic-v1", "/ip4/0.0.0.0/udp/4001/quic-v1/webtransport", "/ip4/0.0.0.0/tcp/4001/ws"} {
		if _, err := ParseListenAddr(s); err != nil {
			t.Errorf("ParseListenAddr(%q) = %v", s, err)
		}
	}
	if _, err := ParseListenAddr("/ip4/1.2.3.4/tcp/x"); err == nil || !strings.Contains(err.Error(), `a valid one looks like "/ip4/0.0.0.0/tcp/4001"`) {
		t.Errorf("ParseListenAddr(bad) = %v", err)
	}
}
