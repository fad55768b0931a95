package bootstrap

import (
	"encoding/binary"
	"net/netip"

	"github.com/pion/stun/v3"
)

// Sizes of STUN messages handled by STUNServer, in bytes.
const (
	// STUNMaxRequest is the largest request the server reads: one
	// Ethernet MTU. Larger datagrams are dropped.
	STUNMaxRequest = 1500
	// STUNMaxGrowth is how many bytes a response may be larger than the
	// request it answers. The largest response is a Binding success
	// response over IPv6 to a 20-byte request: a 20-byte header and four
	// 24-byte address attributes (XOR-MAPPED-ADDRESS, MAPPED-ADDRESS,
	// OTHER-ADDRESS, RESPONSE-ORIGIN), 116 bytes, so 96 bytes more than
	// the request (68 bytes, 48 more, over IPv4). FINGERPRINT is added
	// only when the request carries one, so it adds nothing to the growth.
	// A 420 error response grows at most 32 bytes.
	STUNMaxGrowth = 96
)

const (
	// stunChangeIP and stunChangePort are the CHANGE-REQUEST flags
	// (RFC 5780 section 7.2), in the last byte of its 4-byte value.
	stunChangeIP   = 0x04
	stunChangePort = 0x02
)

// Socket indices of stunLayout: bit 1 is the IP (0 primary, 1 alternate),
// bit 0 the port (0 Port, 1 AltPort). Without an alternate IP only
// sockPrimary exists.
const (
	sockPrimary = 0
	flipPort    = 1
	flipIP      = 2
)

// stunLayout is what the request handler needs to know of the server's
// sockets: their addresses and whether there is an alternate IP.
type stunLayout struct {
	addrs  [4]netip.AddrPort
	hasAlt bool
}

// stunAction says what the handler made of a packet.
type stunAction int

const (
	stunDrop    stunAction = iota // not a well-formed Binding request: no answer
	stunSuccess                   // Binding success response in resp
	stunError                     // Binding error response in resp
)

// respond handles one datagram pkt received from src on socket rx: it
// decodes pkt into req and, when pkt is a Binding request that deserves an
// answer, builds the answer in resp and returns the socket to send it from.
// It never returns an answer larger than len(pkt)+STUNMaxGrowth.
//
// Behaviour, by RFC:
//   - dropped without answer: datagrams that are not STUN requests of the
//     Binding method (RFC 5389 sections 6 and 7.3: top two bits zero, magic
//     cookie, length a multiple of 4 and equal to the datagram's), requests
//     whose FINGERPRINT is wrong (RFC 5389 section 7.3), and a
//     CHANGE-REQUEST whose value is not 4 bytes;
//   - 420 Unknown Attribute with UNKNOWN-ATTRIBUTES listing them, from rx:
//     requests with comprehension-required attributes other than
//     CHANGE-REQUEST (RFC 5389 section 7.3.1), which includes RFC 5780's
//     PADDING and RESPONSE-PORT (not implemented; RFC 5780 sections 7.5
//     and 7.6 expect that answer from a server without them), and, on a
//     server without an alternate IP, any request with CHANGE-REQUEST
//     (RFC 5780 section 6);
//   - otherwise a Binding success response with XOR-MAPPED-ADDRESS and
//     MAPPED-ADDRESS (src), RESPONSE-ORIGIN (the socket it is sent from),
//     OTHER-ADDRESS (the socket with the other IP and the other port of
//     rx) when there is an alternate IP, sent from the socket that
//     CHANGE-REQUEST's flags ask for (RFC 5780 section 6.1, table 1).
//
// FINGERPRINT is added to the answer when the request has one. RFC 3489
// requests (no magic cookie, RFC 5389 section 12) are dropped like any
// other datagram that is not an RFC 5389 message.
func (l *stunLayout) respond(pkt []byte, src netip.AddrPort, rx int, req, resp *stun.Message) (tx int, act stunAction) {
	const header = 20
	if len(pkt) < header || len(pkt) > STUNMaxRequest || pkt[0]&0xC0 != 0 {
		return 0, stunDrop
	}
	if n := int(binary.BigEndian.Uint16(pkt[2:4])); n%4 != 0 || header+n != len(pkt) {
		return 0, stunDrop
	}
	if !src.IsValid() || src.Port() == 0 || rx < 0 || rx >= len(l.addrs) || !l.addrs[rx].IsValid() {
		return 0, stunDrop
	}
	if err := stun.Decode(pkt, req); err != nil || req.Type != stun.BindingRequest {
		return 0, stunDrop
	}
	fingerprint := req.Contains(stun.AttrFingerprint)
	if fingerprint && stun.Fingerprint.Check(req) != nil {
		return 0, stunDrop
	}
	var unknown []stun.AttrType
	change, hasChange := byte(0), false
	for _, a := range req.Attributes {
		switch {
		case a.Type == stun.AttrChangeRequest:
			if len(a.Value) != 4 {
				return 0, stunDrop
			}
			if !hasChange {
				change, hasChange = a.Value[3], true
			}
		case a.Type.Required():
			unknown = append(unknown, a.Type)
		}
	}
	if len(unknown) == 0 && hasChange && !l.hasAlt {
		unknown = append(unknown, stun.AttrChangeRequest)
	}
	if len(unknown) > 0 {
		if err := buildUnknownAttributes(resp, req.TransactionID, unknown, fingerprint); err != nil {
			return 0, stunDrop
		}
		return rx, bounded(resp, pkt, stunError)
	}

	tx = rx
	if change&stunChangeIP != 0 {
		tx ^= flipIP
	}
	if change&stunChangePort != 0 {
		tx ^= flipPort
	}
	peer := src.Addr().Unmap()
	from := l.addrs[tx]
	setters := []stun.Setter{
		stun.NewTransactionIDSetter(req.TransactionID),
		stun.BindingSuccess,
		&stun.XORMappedAddress{IP: peer.AsSlice(), Port: int(src.Port())},
		&stun.MappedAddress{IP: peer.AsSlice(), Port: int(src.Port())},
		&stun.ResponseOrigin{IP: from.Addr().AsSlice(), Port: int(from.Port())},
	}
	if l.hasAlt {
		other := l.addrs[rx^flipIP^flipPort]
		setters = append(setters, &stun.OtherAddress{IP: other.Addr().AsSlice(), Port: int(other.Port())})
	}
	if fingerprint {
		setters = append(setters, stun.Fingerprint)
	}
	if err := resp.Build(setters...); err != nil {
		return 0, stunDrop
	}
	return tx, bounded(resp, pkt, stunSuccess)
}

// bounded returns act, or stunDrop when resp breaks the size bound.
func bounded(resp *stun.Message, pkt []byte, act stunAction) stunAction {
	if len(resp.Raw) > len(pkt)+STUNMaxGrowth {
		return stunDrop
	}
	return act
}

// buildUnknownAttributes builds in m a Binding error response 420 Unknown
// Attribute listing types (RFC 5389 sections 7.3.1 and 15.9). The
// UNKNOWN-ATTRIBUTES value is a list of 16-bit types, written here because
// pion/stun v3.1.1's UnknownAttributes setter writes each type in 4 bytes.
func buildUnknownAttributes(m *stun.Message, id [stun.TransactionIDSize]byte, types []stun.AttrType, fingerprint bool) error {
	if err := m.Build(stun.NewTransactionIDSetter(id), stun.BindingError, stun.CodeUnknownAttribute); err != nil {
		return err
	}
	v := make([]byte, 0, 2*len(types))
	for _, t := range types {
		v = binary.BigEndian.AppendUint16(v, uint16(t))
	}
	m.Add(stun.AttrUnknownAttributes, v)
	if fingerprint {
		return stun.Fingerprint.AddTo(m)
	}
	return nil
}
