package bootstrap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/p2pnode/p2pnode/internal/testenv"
)

var (
	loopback  = netip.MustParseAddr("127.0.0.1")
	loopback2 = netip.MustParseAddr("127.0.0.2")
)

// needAltIP skips the test when 127.0.0.2 cannot be bound (not Linux's
// whole 127/8 on lo), except on CI, where it fails.
func needAltIP(t *testing.T) {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback2, 0)))
	if err == nil {
		c.Close()
		return
	}
	testenv.Missing(t, "cannot bind 127.0.0.2 for the alternate IP: %v", err)
}

func newTestSTUN(t *testing.T, cfg STUNConfig) *STUNServer {
	t.Helper()
	if !cfg.IP.IsValid() {
		cfg.IP = loopback
	}
	s, err := NewSTUNServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newClient(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func clientAddr(c *net.UDPConn) netip.AddrPort {
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// changeRequest is a CHANGE-REQUEST setter (RFC 5780 section 7.2).
type changeRequest byte

func (c changeRequest) AddTo(m *stun.Message) error {
	m.Add(stun.AttrChangeRequest, []byte{0, 0, 0, byte(c)})
	return nil
}

// rawAttr adds an attribute of any type.
type rawAttr struct {
	t stun.AttrType
	v []byte
}

func (a rawAttr) AddTo(m *stun.Message) error {
	m.Add(a.t, a.v)
	return nil
}

func request(t *testing.T, setters ...stun.Setter) *stun.Message {
	t.Helper()
	m, err := stun.Build(append([]stun.Setter{stun.TransactionID, stun.BindingRequest}, setters...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// exchange sends req to server and returns the answer with its source, or
// a nil message when none comes within wait.
func exchange(t *testing.T, c *net.UDPConn, server netip.AddrPort, req []byte, wait time.Duration) (*stun.Message, netip.AddrPort) {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort(req, server); err != nil {
		t.Fatal(err)
	}
	return receive(t, c, req, wait)
}

// receive reads the answer to req, and fails on an answer to another
// transaction.
func receive(t *testing.T, c *net.UDPConn, req []byte, wait time.Duration) (*stun.Message, netip.AddrPort) {
	t.Helper()
	buf := make([]byte, 2048)
	if err := c.SetReadDeadline(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	n, from, err := c.ReadFromUDPAddrPort(buf)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil, netip.AddrPort{}
	}
	if err != nil {
		t.Fatal(err)
	}
	if n > len(req)+STUNMaxGrowth {
		t.Errorf("answer of %d bytes to a %d-byte request: more than %d bytes larger", n, len(req), STUNMaxGrowth)
	}
	m := new(stun.Message)
	if err := stun.Decode(buf[:n], m); err != nil {
		t.Fatalf("decode answer: %v", err)
	}
	if !bytes.Equal(m.TransactionID[:], req[8:20]) {
		t.Fatalf("answer to transaction %x; want %x", m.TransactionID, req[8:20])
	}
	return m, netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
}

func addrOf(ip net.IP, port int) netip.AddrPort {
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), uint16(port))
}

// unknownAttrs decodes UNKNOWN-ATTRIBUTES as RFC 5389 section 15.9 writes it.
func unknownAttrs(t *testing.T, m *stun.Message) []stun.AttrType {
	t.Helper()
	v, err := m.Get(stun.AttrUnknownAttributes)
	if err != nil || len(v)%2 != 0 {
		t.Fatalf("UNKNOWN-ATTRIBUTES %x: %v", v, err)
	}
	var out []stun.AttrType
	for i := 0; i < len(v); i += 2 {
		out = append(out, stun.AttrType(binary.BigEndian.Uint16(v[i:])))
	}
	return out
}

func TestSTUNChangeRequest(t *testing.T) {
	needAltIP(t)
	s := newTestSTUN(t, STUNConfig{AltIP: loopback2})
	primary, other := s.Addrs()
	if primary.Addr() != loopback || other.Addr() != loopback2 || primary.Port() == other.Port() {
		t.Fatalf("Addrs() = %s, %s; want 127.0.0.1:P, 127.0.0.2:Q with P != Q", primary, other)
	}
	pp, ap := primary.Port(), other.Port()
	at := func(ip netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(ip, port) }
	tests := []struct {
		name       string
		to         netip.AddrPort
		flags      byte // CHANGE-REQUEST; 0xff: none
		from       netip.AddrPort
		otherAddr  netip.AddrPort
		fingerprnt bool
	}{
		{"no CHANGE-REQUEST", primary, 0xff, primary, other, false},
		{"no flags", primary, 0, primary, other, false},
		{"change port", primary, stunChangePort, at(loopback, ap), other, false},
		{"change IP", primary, stunChangeIP, at(loopback2, pp), other, false},
		{"change IP and port", primary, stunChangeIP | stunChangePort, other, other, true},
		{"to the other address", other, 0xff, other, primary, false},
		{"to the other address, change IP and port", other, stunChangeIP | stunChangePort, primary, primary, false},
		{"to the alternate IP, change port", at(loopback2, pp), stunChangePort, other, at(loopback, ap), true},
	}
	c := newClient(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var setters []stun.Setter
			if tc.flags != 0xff {
				setters = append(setters, changeRequest(tc.flags))
			}
			if tc.fingerprnt {
				setters = append(setters, stun.Fingerprint)
			}
			req := request(t, setters...)
			m, from := exchange(t, c, tc.to, req.Raw, 2*time.Second)
			if m == nil {
				t.Fatal("no answer")
			}
			if m.Type != stun.BindingSuccess {
				t.Fatalf("answer %s; want a Binding success response", m.Type)
			}
			if from != tc.from {
				t.Errorf("answer from %s; want %s", from, tc.from)
			}
			var xor stun.XORMappedAddress
			var mapped stun.MappedAddress
			var origin stun.ResponseOrigin
			var oth stun.OtherAddress
			if err := m.Parse(&xor, &mapped, &origin, &oth); err != nil {
				t.Fatal(err)
			}
			if got := addrOf(xor.IP, xor.Port); got != clientAddr(c) {
				t.Errorf("XOR-MAPPED-ADDRESS %s; want the client's %s", got, clientAddr(c))
			}
			if got := addrOf(mapped.IP, mapped.Port); got != clientAddr(c) {
				t.Errorf("MAPPED-ADDRESS %s; want the client's %s", got, clientAddr(c))
			}
			if got := addrOf(origin.IP, origin.Port); got != from {
				t.Errorf("RESPONSE-ORIGIN %s; want the answer's source %s", got, from)
			}
			if got := addrOf(oth.IP, oth.Port); got != tc.otherAddr {
				t.Errorf("OTHER-ADDRESS %s; want %s", got, tc.otherAddr)
			}
			if got := m.Contains(stun.AttrFingerprint); got != tc.fingerprnt {
				t.Errorf("FINGERPRINT in answer: %v; want %v", got, tc.fingerprnt)
			} else if got && stun.Fingerprint.Check(m) != nil {
				t.Error("bad FINGERPRINT in answer")
			}
		})
	}
}

func TestSTUNWithoutAltIP(t *testing.T) {
	s := newTestSTUN(t, STUNConfig{})
	primary, other := s.Addrs()
	if primary.Addr() != loopback || primary.Port() == 0 || other.IsValid() {
		t.Fatalf("Addrs() = %s, %s; want 127.0.0.1:P and none", primary, other)
	}
	tests := []struct {
		name    string
		setters []stun.Setter
		unknown []stun.AttrType // nil: a success response
	}{
		{"plain", nil, nil},
		{"unknown optional attribute", []stun.Setter{rawAttr{0xC0FE, []byte{1, 2, 3}}}, nil},
		{"SOFTWARE", []stun.Setter{stun.NewSoftware("test")}, nil},
		{"change port", []stun.Setter{changeRequest(stunChangePort)}, []stun.AttrType{stun.AttrChangeRequest}},
		{"change IP", []stun.Setter{changeRequest(stunChangeIP)}, []stun.AttrType{stun.AttrChangeRequest}},
		{"no flags", []stun.Setter{changeRequest(0), stun.Fingerprint}, []stun.AttrType{stun.AttrChangeRequest}},
		{"unknown required attributes", []stun.Setter{rawAttr{0x7F00, nil}, rawAttr{stun.AttrPadding, make([]byte, 8)}, rawAttr{stun.AttrResponsePort, []byte{0, 1, 0, 0}}},
			[]stun.AttrType{0x7F00, stun.AttrPadding, stun.AttrResponsePort}},
		{"MESSAGE-INTEGRITY", []stun.Setter{stun.NewShortTermIntegrity("pw")}, []stun.AttrType{stun.AttrMessageIntegrity}},
	}
	c := newClient(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := request(t, tc.setters...)
			m, from := exchange(t, c, primary, req.Raw, 2*time.Second)
			if m == nil {
				t.Fatal("no answer")
			}
			if from != primary {
				t.Errorf("answer from %s; want %s", from, primary)
			}
			if m.Contains(stun.AttrOtherAddress) {
				t.Error("OTHER-ADDRESS from a server without alternate IP (RFC 5780 section 6 forbids it)")
			}
			if tc.unknown == nil {
				var xor stun.XORMappedAddress
				var origin stun.ResponseOrigin
				if m.Type != stun.BindingSuccess {
					t.Fatalf("answer %s; want a Binding success response", m.Type)
				}
				if err := m.Parse(&xor, &origin); err != nil {
					t.Fatal(err)
				}
				if got := addrOf(xor.IP, xor.Port); got != clientAddr(c) {
					t.Errorf("XOR-MAPPED-ADDRESS %s; want %s", got, clientAddr(c))
				}
				if got := addrOf(origin.IP, origin.Port); got != primary {
					t.Errorf("RESPONSE-ORIGIN %s; want %s", got, primary)
				}
				return
			}
			var code stun.ErrorCodeAttribute
			if m.Type != stun.BindingError || code.GetFrom(m) != nil || code.Code != stun.CodeUnknownAttribute {
				t.Fatalf("answer %s %v; want a 420 Binding error response", m.Type, code)
			}
			if got := unknownAttrs(t, m); !equalAttrs(got, tc.unknown) {
				t.Errorf("UNKNOWN-ATTRIBUTES %v; want %v", got, tc.unknown)
			}
		})
	}
}

func equalAttrs(a, b []stun.AttrType) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestSTUNDropsMalformed(t *testing.T) {
	s := newTestSTUN(t, STUNConfig{})
	primary, _ := s.Addrs()
	valid := request(t).Raw
	withLen := func(b []byte, n uint16) []byte {
		b = append([]byte(nil), b...)
		binary.BigEndian.PutUint16(b[2:4], n)
		return b
	}
	badCookie := append([]byte(nil), valid...)
	badCookie[4] ^= 0xff
	topBits := append([]byte(nil), valid...)
	topBits[0] |= 0x80
	badFingerprint := append([]byte(nil), request(t, stun.Fingerprint).Raw...)
	badFingerprint[len(badFingerprint)-1] ^= 1
	random := make([]byte, 64)
	for i := range random {
		random[i] = byte(i*37 + 11)
	}
	tests := []struct {
		name string
		pkt  []byte
	}{
		{"empty", nil},
		{"truncated header", valid[:12]},
		{"truncated datagram", request(t, stun.NewSoftware("abc")).Raw[:26]},
		{"truncated attribute", withLen(request(t, stun.NewSoftware("abc")).Raw[:24], 4)},
		{"length beyond datagram", withLen(valid, 8)},
		{"length not a multiple of 4", withLen(append(append([]byte(nil), valid...), 0, 0), 2)},
		{"trailing bytes", append(append([]byte(nil), valid...), 0, 0, 0, 0)},
		{"wrong magic cookie", badCookie},
		{"top bits set", topBits},
		{"Binding success response", request(t, stun.BindingSuccess).Raw},
		{"Binding indication", request(t, stun.NewType(stun.MethodBinding, stun.ClassIndication)).Raw},
		{"Allocate request", request(t, stun.NewType(stun.MethodAllocate, stun.ClassRequest)).Raw},
		{"bad fingerprint", badFingerprint},
		{"CHANGE-REQUEST of 2 bytes", request(t, rawAttr{stun.AttrChangeRequest, []byte{0, 6}}).Raw},
		{"random bytes", random},
		{"too large", append(withLen(valid, STUNMaxRequest), make([]byte, STUNMaxRequest)...)},
	}
	c := newClient(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := s.Stats().Dropped
			if _, err := c.WriteToUDPAddrPort(tc.pkt, primary); err != nil {
				t.Fatal(err)
			}
			// The answer to a valid request that follows is the first
			// datagram back: receive fails on an answer to the bad one.
			req := request(t).Raw
			if m, _ := exchange(t, c, primary, req, 2*time.Second); m == nil {
				t.Fatal("server stopped answering")
			}
			if got := s.Stats().Dropped; got != before+1 {
				t.Errorf("Dropped went from %d to %d; want one more", before, got)
			}
		})
	}
}

func TestSTUNRateLimit(t *testing.T) {
	const sent = 40
	tests := []struct {
		name string
		cfg  STUNConfig
		max  int
	}{
		{"per source", STUNConfig{SourceRate: 0.001, SourceBurst: 5, GlobalRate: 1000, GlobalBurst: 1000}, 5},
		{"global", STUNConfig{SourceRate: 1000, SourceBurst: 1000, GlobalRate: 0.001, GlobalBurst: 3}, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestSTUN(t, tc.cfg)
			primary, _ := s.Addrs()
			c := newClient(t)
			for range sent {
				if _, err := c.WriteToUDPAddrPort(request(t).Raw, primary); err != nil {
					t.Fatal(err)
				}
			}
			got := 0
			buf := make([]byte, 2048)
			for {
				_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
				if _, _, err := c.ReadFromUDPAddrPort(buf); err != nil {
					break
				}
				got++
			}
			if got != tc.max {
				t.Errorf("%d answers to %d requests; want %d", got, sent, tc.max)
			}
			st := s.Stats()
			if st.Responses != uint64(got) || st.Responses+st.RateLimited != sent {
				t.Errorf("stats %+v; want %d responses and %d rate limited", st, got, sent-got)
			}
		})
	}
}

func TestSTUNLimiterTable(t *testing.T) {
	l := newSTUNLimiter(1, 1, 1e9, 1e9, 100)
	now := time.Now()
	for i := range 10000 {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if !l.allow(ip, now) {
			t.Fatalf("first request of %s refused", ip)
		}
		if n := l.sources(); n > 100 {
			t.Fatalf("%d sources in the table; want at most 100", n)
		}
	}
	// A source seen recently keeps its (empty) bucket.
	recent := netip.AddrFrom4([4]byte{10, 0, 39, 15}) // i = 9999
	if l.allow(recent, now) {
		t.Error("second request of a recent source allowed")
	}
	// IPv6 sources share one bucket per /64.
	a, b := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::ffff:2")
	if !l.allow(a, now) || l.allow(b, now) {
		t.Error("two addresses of one /64 got two buckets")
	}
	if !l.allow(netip.MustParseAddr("2001:db8:0:1::1"), now) {
		t.Error("another /64 shares the bucket")
	}
}

func TestSTUNConfigErrors(t *testing.T) {
	busy := newClient(t)
	busyPort := clientAddr(busy).Port()
	tests := []struct {
		name string
		cfg  STUNConfig
		want string
	}{
		{"no IP", STUNConfig{}, "not a unicast address"},
		{"wildcard", STUNConfig{IP: netip.IPv4Unspecified()}, "not a unicast address"},
		{"families", STUNConfig{IP: loopback, AltIP: netip.IPv6Loopback()}, "different families"},
		{"same IP", STUNConfig{IP: loopback, AltIP: loopback}, "is the primary IP"},
		{"same ports", STUNConfig{IP: loopback, AltIP: loopback2, Port: 4000, AltPort: 4000}, "must differ"},
		{"negative rate", STUNConfig{IP: loopback, SourceRate: -1}, "negative"},
		{"port in use", STUNConfig{IP: loopback, Port: busyPort}, "pick other STUN ports"},
		{"not our IP", STUNConfig{IP: netip.MustParseAddr("192.0.2.1")}, "listen on 192.0.2.1:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewSTUNServer(tc.cfg)
			if err == nil {
				s.Close()
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q; want it to say %q", err, tc.want)
			}
		})
	}
}

func TestSTUNClose(t *testing.T) {
	s, err := NewSTUNServer(STUNConfig{IP: loopback})
	if err != nil {
		t.Fatal(err)
	}
	primary, _ := s.Addrs()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The port is free again.
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(primary))
	if err != nil {
		t.Fatalf("port still bound after Close: %v", err)
	}
	c.Close()
}

// FuzzSTUNServer feeds arbitrary datagrams to the request handler, from
// IPv4 and IPv6 sources and on every socket, with and without alternate IP:
// it must not panic, and an answer must be a STUN message of the request's
// transaction at most STUNMaxGrowth bytes larger than the request.
func FuzzSTUNServer(f *testing.F) {
	seeds := []*stun.Message{
		stun.MustBuild(stun.TransactionID, stun.BindingRequest),
		stun.MustBuild(stun.TransactionID, stun.BindingRequest, changeRequest(stunChangeIP|stunChangePort), stun.Fingerprint),
		stun.MustBuild(stun.TransactionID, stun.BindingRequest, rawAttr{0x7F00, nil}, rawAttr{0x0001, nil}, stun.Fingerprint),
		stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewSoftware("x"), changeRequest(stunChangePort)),
		stun.MustBuild(stun.TransactionID, stun.BindingSuccess),
	}
	for _, m := range seeds {
		f.Add(m.Raw, uint8(0))
	}
	f.Add([]byte{0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42}, uint8(7))
	v4 := stunLayout{hasAlt: true, addrs: [4]netip.AddrPort{
		netip.MustParseAddrPort("192.0.2.1:3478"), netip.MustParseAddrPort("192.0.2.1:3479"),
		netip.MustParseAddrPort("192.0.2.2:3478"), netip.MustParseAddrPort("192.0.2.2:3479"),
	}}
	v6 := stunLayout{hasAlt: true, addrs: [4]netip.AddrPort{
		netip.MustParseAddrPort("[2001:db8::1]:3478"), netip.MustParseAddrPort("[2001:db8::1]:3479"),
		netip.MustParseAddrPort("[2001:db8::2]:3478"), netip.MustParseAddrPort("[2001:db8::2]:3479"),
	}}
	single := stunLayout{addrs: [4]netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:3478")}}
	srcs := []netip.AddrPort{
		netip.MustParseAddrPort("198.51.100.7:40000"),
		netip.MustParseAddrPort("[2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]:65535"),
		netip.MustParseAddrPort("[::ffff:198.51.100.7]:1"),
	}
	f.Fuzz(func(t *testing.T, pkt []byte, sel uint8) {
		req, resp := new(stun.Message), new(stun.Message)
		layout := []*stunLayout{&v4, &v6, &single}[int(sel>>2)%3]
		src := srcs[int(sel>>4)%len(srcs)]
		rx := int(sel & 3)
		if !layout.hasAlt {
			rx = 0
		}
		tx, act := layout.respond(pkt, src, rx, req, resp)
		if act == stunDrop {
			return
		}
		if len(resp.Raw) > len(pkt)+STUNMaxGrowth {
			t.Fatalf("answer of %d bytes to a %d-byte request", len(resp.Raw), len(pkt))
		}
		if tx < 0 || tx > 3 || !layout.addrs[tx].IsValid() {
			t.Fatalf("answer from socket %d", tx)
		}
		var got stun.Message
		if err := stun.Decode(resp.Raw, &got); err != nil {
			t.Fatalf("answer does not decode: %v", err)
		}
		if !bytes.Equal(got.TransactionID[:], pkt[8:20]) || got.Type.Method != stun.MethodBinding {
			t.Fatalf("answer %s to transaction %x; want Binding %x", got.Type, got.TransactionID, pkt[8:20])
		}
	})
}

func TestSTUNIPv6(t *testing.T) {
	c, err := net.ListenUDP("udp6", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.IPv6Loopback(), 0)))
	if err != nil {
		testenv.Missing(t, "no IPv6 loopback (::1): %v", err)
	}
	t.Cleanup(func() { c.Close() })
	s := newTestSTUN(t, STUNConfig{IP: netip.IPv6Loopback()})
	primary, _ := s.Addrs()
	req := request(t)
	m, from := exchange(t, c, primary, req.Raw, 2*time.Second)
	if m == nil || m.Type != stun.BindingSuccess || from != primary {
		t.Fatalf("answer %v from %s; want a Binding success response from %s", m, from, primary)
	}
	var xor stun.XORMappedAddress
	if err := xor.GetFrom(m); err != nil {
		t.Fatal(err)
	}
	if got := addrOf(xor.IP, xor.Port); got != clientAddr(c) {
		t.Errorf("XOR-MAPPED-ADDRESS %s; want %s", got, clientAddr(c))
	}
}
