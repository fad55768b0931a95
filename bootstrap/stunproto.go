package bootstrap

import (
	"encoding/json"
	"net/netip"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
)

// STUNProtocolID is the libp2p protocol on which a bootstrap node with a
// STUN server tells a peer where the server is. The peer opens a stream
// and writes nothing; the bootstrap node writes one JSON object (UTF-8, at
// most STUNInfoMaxSize bytes, no newline) and closes the stream:
//
//	{"servers":["203.0.113.7:3478"],"other":"203.0.113.8:3479"}
//
// "servers" lists the STUN servers' primary addresses as IP:port (IPv6 as
// [IP]:port), at least one; a client sends its Binding requests there.
// "other" is the first server's OTHER-ADDRESS (RFC 5780 section 7.4): its
// alternate IP with its alternate port. It is absent when the server has no
// alternate IP, and such a server answers CHANGE-REQUEST with 420 (RFC 5780
// section 6), so only the mapping a server sees, not the NAT's filtering,
// can be learnt from it. Unknown fields are to be ignored, for later
// versions of this object.
//
// A bootstrap node without a STUN server does not serve the protocol, so
// opening the stream fails with a protocol negotiation error.
const STUNProtocolID = "/p2pnode/stun/1.0.0"

// STUNInfoMaxSize is the most bytes of JSON a client of STUNProtocolID
// needs to read.
const STUNInfoMaxSize = 1024

// stunInfoTimeout bounds the write of the STUNProtocolID answer.
const stunInfoTimeout = 10 * time.Second

// stunInfo is the JSON object of STUNProtocolID.
type stunInfo struct {
	Servers []string `json:"servers"`
	Other   string   `json:"other,omitempty"`
}

// stunInfoHandler returns the STUNProtocolID stream handler for a server
// at primary whose OTHER-ADDRESS is other (zero: none).
func stunInfoHandler(primary, other netip.AddrPort) (network.StreamHandler, error) {
	info := stunInfo{Servers: []string{primary.String()}}
	if other.IsValid() {
		info.Other = other.String()
	}
	body, err := json.Marshal(info)
	if err != nil {
		return nil, err
	}
	return func(s network.Stream) {
		_ = s.SetWriteDeadline(time.Now().Add(stunInfoTimeout))
		if _, err := s.Write(body); err != nil {
			_ = s.Reset()
			return
		}
		_ = s.Close()
	}, nil
}
