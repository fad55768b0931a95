package natcheck

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-reuseport"
	"github.com/pion/stun/v3"

	"github.com/p2pnode/p2pnode/internal/testenv"
)

// virtualNAT is the NAT a fakeServer pretends the client is behind: it
// decides the mapped address the server reports and whether an answer from
// another address than the one asked would get through. It lets the
// algorithm be tested on loopback, where there is no NAT.
type virtualNAT struct {
	mapping, filtering Behaviour
	none               bool // no NAT: report the real source address

	mu    sync.Mutex
	ports map[string]int // mapping key -> public port
	next  int
}

func (v *virtualNAT) key(b Behaviour, client, server netip.AddrPort) string {
	switch b {
	case AddressDependent:
		return client.String() + ">" + server.Addr().String()
	case AddressAndPortDependent:
		return client.String() + ">" + server.String()
	}
	return client.String()
}

func (v *virtualNAT) mapped(client, server netip.AddrPort) netip.AddrPort {
	if v.none {
		return client
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	k := v.key(v.mapping, client, server)
	p, ok := v.ports[k]
	if !ok {
		v.next += 7 // not sequential by 1, so the test sees "sequential (delta 7)" for EIM
		p = v.next
		v.ports[k] = p
	}
	return netip.AddrPortFrom(netip.MustParseAddr("203.0.113.9"), uint16(p))
}

// passes says whether an answer from `from` to a client that asked `asked`
// gets through the virtual filter.
func (v *virtualNAT) passes(asked, from netip.AddrPort) bool {
	switch v.filtering {
	case EndpointIndependent:
		return true
	case AddressDependent:
		return asked.Addr() == from.Addr()
	}
	return asked == from
}

// fakeServer is an RFC 5780 server on 127.0.0.1 and, when alt, 127.0.0.2,
// each on two ports, answering for a virtual NAT.
type fakeServer struct {
	socks map[netip.AddrPort]*net.UDPConn
	nat   *virtualNAT
	ips   []string
}

func startFake(t *testing.T, nat *virtualNAT, alt bool) (primary netip.AddrPort) {
	t.Helper()
	f := &fakeServer{socks: map[netip.AddrPort]*net.UDPConn{}, nat: nat, ips: []string{"127.0.0.1"}}
	if alt {
		f.ips = append(f.ips, "127.0.0.2")
	}
	var ports [2]int
	for i, ip := range f.ips {
		for j := range 2 {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip), Port: ports[j]})
			if err != nil {
				if i == 0 {
					t.Fatalf("bind %s: %v", ip, err)
				}
				testenv.Missing(t, "cannot bind %s (%v): no second loopback address", ip, err)
			}
			ports[j] = c.LocalAddr().(*net.UDPAddr).Port
			f.socks[addrPortOf(c.LocalAddr())] = c
			t.Cleanup(func() { c.Close() })
		}
	}
	primary = netip.AddrPortFrom(netip.MustParseAddr(f.ips[0]), uint16(ports[0]))
	other := netip.AddrPortFrom(netip.MustParseAddr(f.ips[len(f.ips)-1]), uint16(ports[1]))
	for at, c := range f.socks {
		go f.serve(at, c, primary, other)
	}
	return primary
}

func (f *fakeServer) serve(at netip.AddrPort, c *net.UDPConn, primary, other netip.AddrPort) {
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			return
		}
		req := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		if req.Decode() != nil || req.Type != stun.BindingRequest {
			continue
		}
		client := addrPortOf(from)
		mapped := f.nat.mapped(client, at)
		reply := at
		if v, err := req.Get(stun.AttrChangeRequest); err == nil && len(v) == 4 {
			ip, port := at.Addr(), at.Port()
			if v[3]&changeIP != 0 {
				ip = other.Addr()
				if at.Addr() == other.Addr() {
					ip = primary.Addr()
				}
			}
			if v[3]&changePort != 0 {
				port = other.Port()
				if at.Port() == other.Port() {
					port = primary.Port()
				}
			}
			reply = netip.AddrPortFrom(ip, port)
		}
		if !f.nat.passes(at, reply) {
			continue
		}
		res := stun.MustBuild(stun.NewTransactionIDSetter(req.TransactionID), stun.BindingSuccess,
			&stun.XORMappedAddress{IP: mapped.Addr().AsSlice(), Port: int(mapped.Port())},
			&stun.OtherAddress{IP: other.Addr().AsSlice(), Port: int(other.Port())})
		_, _ = f.socks[reply].WriteToUDP(res.Raw, from)
	}
}

func TestRun(t *testing.T) {
	cases := []struct {
		name               string
		nat                *virtualNAT
		alt                bool
		mapping, filtering Behaviour
		classic            string
		alloc              string
	}{
		{"open internet", &virtualNAT{none: true, filtering: EndpointIndependent}, true, EndpointIndependent, EndpointIndependent, ClassicOpen, "preserved"},
		{"UDP firewall", &virtualNAT{none: true, filtering: AddressAndPortDependent}, true, EndpointIndependent, AddressAndPortDependent, ClassicUDPFirewall, "preserved"},
		{"full cone", &virtualNAT{mapping: EndpointIndependent, filtering: EndpointIndependent}, true, EndpointIndependent, EndpointIndependent, ClassicFullCone, "sequential (delta 7)"},
		{"restricted cone", &virtualNAT{mapping: EndpointIndependent, filtering: AddressDependent}, true, EndpointIndependent, AddressDependent, ClassicRestricted, "sequential (delta 7)"},
		{"port-restricted cone", &virtualNAT{mapping: EndpointIndependent, filtering: AddressAndPortDependent}, true, EndpointIndependent, AddressAndPortDependent, ClassicPortRestr, "sequential (delta 7)"},
		{"address-dependent mapping", &virtualNAT{mapping: AddressDependent, filtering: AddressDependent}, true, AddressDependent, AddressDependent, ClassicSymmetric, "sequential (delta 7)"},
		{"symmetric", &virtualNAT{mapping: AddressAndPortDependent, filtering: AddressAndPortDependent}, true, AddressAndPortDependent, AddressAndPortDependent, ClassicSymmetric, "sequential (delta 7)"},
		// One IP address: what cannot be told apart is said, not guessed.
		{"one IP, port-restricted", &virtualNAT{mapping: EndpointIndependent, filtering: AddressAndPortDependent}, false, Unknown, AddressAndPortDependent, ClassicUnknown, "sequential (delta 7)"},
		{"one IP, symmetric", &virtualNAT{mapping: AddressAndPortDependent, filtering: AddressAndPortDependent}, false, AddressAndPortDependent, AddressAndPortDependent, ClassicSymmetric, "sequential (delta 7)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.nat.ports = map[string]int{}
			c.nat.next = 40000
			primary := startFake(t, c.nat, c.alt)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			rep, err := Run(ctx, Config{Servers: []netip.AddrPort{primary}, Wait: 400 * time.Millisecond, RTO: 100 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			u := rep.UDP
			if u.Mapping != c.mapping || u.Filtering != c.filtering || u.Classic != c.classic || u.PortAllocation != c.alloc {
				t.Errorf("got mapping %s, filtering %s, classic %q, port allocation %q; want %s, %s, %q, %q (not run: %v)",
					u.Mapping, u.Filtering, u.Classic, u.PortAllocation, c.mapping, c.filtering, c.classic, c.alloc, u.NotRun)
			}
			if (u.Mapping == Unknown || u.Filtering == Unknown) && len(u.NotRun) == 0 {
				t.Errorf("an unknown behaviour without a not_run line saying why")
			}
			if len(rep.Servers) != 1 || !rep.Servers[0].Answered || rep.Meaning == "" {
				t.Errorf("servers %+v, meaning %q", rep.Servers, rep.Meaning)
			}
		})
	}
}

// TestMappingOnlyFiltering: a mapping-only check says "endpoint-independent"
// filtering when the quick test's answer comes through (no time to wait
// for the timeout that proves a filter), and "unknown" otherwise.
func TestMappingOnlyFiltering(t *testing.T) {
	cases := []struct {
		name string
		nat  *virtualNAT
		want Behaviour
	}{
		{"full cone", &virtualNAT{mapping: EndpointIndependent, filtering: EndpointIndependent}, EndpointIndependent},
		{"port-restricted cone", &virtualNAT{mapping: EndpointIndependent, filtering: AddressAndPortDependent}, Unknown},
		{"restricted cone", &virtualNAT{mapping: EndpointIndependent, filtering: AddressDependent}, Unknown},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.nat.ports, c.nat.next = map[string]int{}, 40000
			primary := startFake(t, c.nat, true)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			rep, err := Run(ctx, Config{Servers: []netip.AddrPort{primary}, MappingOnly: true, Wait: 3 * time.Second, RTO: 100 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if rep.UDP.Filtering != c.want || rep.UDP.Mapping != EndpointIndependent {
				t.Errorf("mapping %s, filtering %s; want endpoint-independent, %s", rep.UDP.Mapping, rep.UDP.Filtering, c.want)
			}
			// A closed filter's timeout (Wait, 3 s here) is not waited
			// for; the TCP address attempt, with no STUN over TCP server
			// here, is refused at once. The bound only tells "waited for a
			// timeout" from "did not" (the check takes milliseconds).
			if took := time.Since(start); took >= 2500*time.Millisecond {
				t.Errorf("the mapping-only check took %v: it waited for a filtering timeout", took)
			}
		})
	}
}

// TestMappingOnlyPortAllocation: a mapping-only check tests the port
// allocation when the mapping is endpoint-dependent (a hole punch between
// two such NATs needs to know whether the next port can be predicted), and
// not otherwise (it would cost round trips for nothing).
func TestMappingOnlyPortAllocation(t *testing.T) {
	cases := []struct {
		name  string
		nat   *virtualNAT
		alloc string
		delta int
	}{
		{"symmetric", &virtualNAT{mapping: AddressAndPortDependent, filtering: AddressAndPortDependent}, "sequential (delta 7)", 7},
		{"port-restricted cone", &virtualNAT{mapping: EndpointIndependent, filtering: AddressAndPortDependent}, "unknown", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.nat.ports, c.nat.next = map[string]int{}, 40000
			primary := startFake(t, c.nat, true)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			rep, err := Run(ctx, Config{Servers: []netip.AddrPort{primary}, MappingOnly: true, Wait: time.Second, RTO: 100 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if rep.UDP.PortAllocation != c.alloc || rep.UDP.PortDelta != c.delta {
				t.Errorf("port allocation %q, delta %d; want %q, %d", rep.UDP.PortAllocation, rep.UDP.PortDelta, c.alloc, c.delta)
			}
		})
	}
}

// TestBinding: one transaction gives the mapped address; a server that
// does not answer gives an error that names it.
func TestBinding(t *testing.T) {
	nat := &virtualNAT{mapping: AddressAndPortDependent, filtering: AddressAndPortDependent, ports: map[string]int{}, next: 40000}
	primary := startFake(t, nat, true)
	c := loopbackUDP(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := Binding(ctx, c, primary, 100*time.Millisecond, time.Second)
	if err != nil || got.Addr() != netip.MustParseAddr("203.0.113.9") || got.Port() < 40000 {
		t.Errorf("Binding = %v, %v; want the fake NAT's public address, 203.0.113.9, and one of its ports", got, err)
	}
	to := addrPortOf(loopbackUDP(t).LocalAddr())
	if _, err := Binding(ctx, c, to, 50*time.Millisecond, 200*time.Millisecond); err == nil || !strings.Contains(err.Error(), to.String()) {
		t.Errorf("Binding to a silent server: error %v, want one that names %s", err, to)
	}
}

// loopbackUDP is a UDP socket on 127.0.0.1, closed when the test ends.
func loopbackUDP(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestRunBlocked(t *testing.T) {
	// A socket that never answers: UDP blocked, not an error.
	c := loopbackUDP(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rep, err := Run(ctx, Config{Servers: []netip.AddrPort{addrPortOf(c.LocalAddr())}, Wait: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if rep.UDP.Classic != ClassicUDPBlocked || rep.Servers[0].Answered {
		t.Errorf("got %+v, want UDP blocked", rep)
	}
	if _, err := Run(ctx, Config{}); err == nil {
		t.Error("Run with no server: no error")
	}
}

func TestPortAllocation(t *testing.T) {
	cases := []struct {
		local, public []int
		want          string
		delta         int
	}{
		{[]int{5000, 6000, 7000}, []int{5000, 6000, 7000}, "preserved", 0},
		{[]int{5000, 6000, 7000}, []int{1024, 1025, 1026}, "sequential (delta 1)", 1},
		{[]int{5000, 6000, 7000, 8000}, []int{1030, 1028, 1026, 1024}, "sequential (delta -2)", -2},
		{[]int{5000, 6000, 7000}, []int{31337, 4211, 60001}, "random", 0},
		{[]int{5000, 6000, 7000}, []int{9000, 9000, 9000}, "random", 0},
		{[]int{5000, 6000}, []int{5000, 6000}, "unknown", 0},
		// Another flow took a port between two samples.
		{[]int{5000, 6000, 7000, 8000}, []int{1024, 1025, 1027, 1028}, "sequential (delta 1)", 1},
		{[]int{5000, 6000, 7000, 8000}, []int{1024, 1025, 1027, 1030}, "random", 0},
		{[]int{5000, 6000, 7000, 8000}, []int{1024, 1025, 1023, 1024}, "random", 0},
		{[]int{5000, 6000, 7000}, []int{1024, 1025, 1027}, "random", 0},
	}
	for _, c := range cases {
		if got, d := portAllocation(c.local, c.public); got != c.want || d != c.delta {
			t.Errorf("portAllocation(%v, %v) = %q, %d; want %q, %d", c.local, c.public, got, d, c.want, c.delta)
		}
	}
}

// startTCPSTUN answers STUN Binding requests over TCP (RFC 5389 section
// 7.2.2) on addr with the connection's source address.
func startTCPSTUN(t *testing.T, addr netip.AddrPort) {
	t.Helper()
	ln, err := net.Listen("tcp4", addr.String())
	if err != nil {
		t.Fatalf("STUN over TCP on %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				head := make([]byte, 20)
				if _, err := io.ReadFull(c, head); err != nil {
					return
				}
				raw := append(head, make([]byte, binary.BigEndian.Uint16(head[2:4]))...)
				if _, err := io.ReadFull(c, raw[20:]); err != nil {
					return
				}
				req := &stun.Message{Raw: raw}
				if req.Decode() != nil {
					return
				}
				from := addrPortOf(c.RemoteAddr())
				res := stun.MustBuild(stun.NewTransactionIDSetter(req.TransactionID), stun.BindingSuccess,
					&stun.XORMappedAddress{IP: from.Addr().AsSlice(), Port: int(from.Port())})
				_, _ = c.Write(res.Raw)
			}()
		}
	}()
}

// TestMappingOnlyTCPAddress: a mapping-only check also finds the TCP
// public address, of the port given (dialled from next to a listener on
// it, as libp2p's TCP transport does), and says there is no NAT on
// loopback.
func TestMappingOnlyTCPAddress(t *testing.T) {
	primary := startFake(t, &virtualNAT{none: true, filtering: EndpointIndependent}, false)
	startTCPSTUN(t, primary)
	var lc net.ListenConfig
	lc.Control = reuseport.Control
	ln, err := lc.Listen(context.Background(), "tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rep, err := Run(ctx, Config{Servers: []netip.AddrPort{primary}, MappingOnly: true, TCPPort: port, Wait: 400 * time.Millisecond, RTO: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	want := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port).String()
	if rep.TCP.PublicAddress != want || rep.TCP.Mapping != EndpointIndependent {
		t.Errorf("TCP public address %q, mapping %s (not run: %v); want %s, endpoint-independent",
			rep.TCP.PublicAddress, rep.TCP.Mapping, rep.TCP.NotRun, want)
	}
	if rep.UDP.Mapping != EndpointIndependent {
		t.Errorf("UDP mapping %s, want endpoint-independent", rep.UDP.Mapping)
	}
}
