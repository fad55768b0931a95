// Package natcheck discovers the behaviour of the NAT (or firewall) in front
// of a UDP socket with STUN: the RFC 5780 behaviour discovery tests, which
// name the mapping and the filtering in RFC 4787 terms, plus the port
// allocation and hairpinning, and the classic RFC 3489 name a user knows
// ("port-restricted cone", "symmetric").
//
// It needs a STUN server that implements RFC 5780 (OTHER-ADDRESS and
// CHANGE-REQUEST), as every p2pnode bootstrap node does; with a plain RFC
// 5389 server, or one with a single IP address, the tests that cannot run
// are named in the report rather than guessed.
package natcheck

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"
)

// Behaviour is a NAT mapping or filtering behaviour, in RFC 4787 section 4.1
// and 5 terms.
type Behaviour string

// The behaviours, and Unknown when a test could not run.
const (
	EndpointIndependent     Behaviour = "endpoint-independent"
	AddressDependent        Behaviour = "address-dependent"
	AddressAndPortDependent Behaviour = "address-and-port-dependent"
	Unknown                 Behaviour = "unknown"
)

// Classic RFC 3489 names (section 5), as Report.UDP.Classic gives them.
const (
	ClassicOpen        = "open internet"
	ClassicFullCone    = "full cone"
	ClassicRestricted  = "restricted cone"
	ClassicPortRestr   = "port-restricted cone"
	ClassicSymmetric   = "symmetric"
	ClassicUDPFirewall = "symmetric UDP firewall"
	ClassicUDPBlocked  = "UDP blocked"
	ClassicUnknown     = "unknown"
)

// Config says which servers to ask and from which socket.
type Config struct {
	// Servers are STUN servers' primary addresses (IP and UDP port), tried
	// in order; the first that answers runs the tests, and one with another
	// IP address stands in for a missing alternate address.
	Servers []netip.AddrPort
	// Conn is the socket whose public address and mapping are reported (a
	// daemon's QUIC port, which is what hole punching uses). nil: a fresh
	// socket on an ephemeral port. The filtering and port allocation tests
	// always use fresh sockets, so that what earlier tests (or traffic)
	// opened in the NAT cannot make the filtering look more open than it
	// is.
	Conn net.PacketConn
	// RTO is the first retransmission interval of a request, doubled
	// after each; default 250 ms.
	RTO time.Duration
	// Wait bounds one transaction; a filtering test reads a timeout as
	// "filtered". Default 1.5 s: several RTOs, and more than an RTT to any
	// server on Earth.
	Wait time.Duration
	// Samples is how many fresh sockets the port allocation test maps;
	// default 4.
	Samples int
	// MappingOnly runs only the UDP mapping tests (a few answered
	// transactions, no timeout to wait for), and, alongside them, one STUN
	// over TCP binding for the TCP public address: what a hole punch needs
	// to pick its strategy and its addresses, in a round trip or two. When
	// the mapping is endpoint-dependent it also runs the port allocation
	// test (Samples more round trips): whether the next mapping's port can
	// be predicted decides whether two such NATs can punch at all.
	MappingOnly bool
	// TCPPort is the local port the TCP tests dial from, with SO_REUSEPORT
	// next to its listener: a node's libp2p TCP listen port, from which
	// go-libp2p's TCP transport dials too (hole punches included), so that
	// the public address found is the one a TCP hole punch uses. 0: an
	// ephemeral port.
	TCPPort uint16
}

// Report is what the tests found. Its JSON form is `p2pnode nat --json`'s.
type Report struct {
	UDP UDPReport `json:"udp"`
	TCP TCPReport `json:"tcp"`
	// Servers lists each server asked and whether it answered.
	Servers []ServerReport `json:"servers"`
	// Meaning is one line on what the result means for p2pnode.
	Meaning string `json:"meaning"`
	// Time is when the check finished.
	Time time.Time `json:"time"`
}

// UDPReport is the UDP part of a Report.
type UDPReport struct {
	// PublicAddress is the socket's address as the server saw it ("" if
	// no server answered).
	PublicAddress string    `json:"public_address"`
	Mapping       Behaviour `json:"mapping"`
	Filtering     Behaviour `json:"filtering"`
	// PortAllocation is "preserved" (the public port is the local one),
	// "sequential (delta N)", "random", or "unknown".
	PortAllocation string `json:"port_allocation"`
	// PortDelta is N when PortAllocation is sequential: a new mapping's
	// public port is the last one's plus N. 0 otherwise.
	PortDelta int `json:"port_delta,omitempty"`
	// Hairpinning is "yes", "no" or "unknown" (RFC 5780 section 4.5).
	Hairpinning string `json:"hairpinning"`
	// Classic is the RFC 3489 name; see the Classic constants.
	Classic string `json:"classic"`
	// NotRun names the tests that could not run, and why.
	NotRun []string `json:"not_run,omitempty"`
}

// ServerReport is one server asked.
type ServerReport struct {
	Address  string `json:"address"`
	Other    string `json:"other,omitempty"` // its OTHER-ADDRESS
	Answered bool   `json:"answered"`
}

// Run runs the tests. It fails only when it cannot test at all (no server
// given, no socket); servers that do not answer give a report that says
// "UDP blocked".
func Run(ctx context.Context, cfg Config) (Report, error) {
	if len(cfg.Servers) == 0 {
		return Report{}, errors.New("no STUN server to ask: give one with --stun HOST:PORT, or join a bootstrap peer that runs one")
	}
	cfg.fill()
	main := cfg.Conn
	if main == nil {
		c, err := freshSocket()
		if err != nil {
			return Report{}, err
		}
		defer c.Close()
		main = c
	}
	r := &run{cfg: cfg, main: main}
	rep, err := r.do(ctx)
	rep.Time = time.Now()
	return rep, err
}

func (c *Config) fill() {
	if c.RTO <= 0 {
		c.RTO = 250 * time.Millisecond
	}
	if c.Wait <= 0 {
		c.Wait = 1500 * time.Millisecond
	}
	if c.Samples <= 0 {
		c.Samples = 4
	}
}

func freshSocket() (*net.UDPConn, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{})
	if err != nil {
		return nil, fmt.Errorf("open a UDP socket for the NAT check: %w", err)
	}
	return c, nil
}

type run struct {
	cfg  Config
	main net.PacketConn
	rep  Report

	primary netip.AddrPort // the server that answered test I
	first   binding        // its answer
	altIP   netip.AddrPort // an address with another IP than primary; invalid if none
	altPort netip.AddrPort // primary's IP with another port; invalid if none
}

func (r *run) transact(ctx context.Context, conn net.PacketConn, to netip.AddrPort, change byte) (binding, error) {
	return transact(ctx, conn, to, change, r.cfg.RTO, r.cfg.Wait)
}

func (r *run) notRun(format string, args ...any) {
	r.rep.UDP.NotRun = append(r.rep.UDP.NotRun, fmt.Sprintf(format, args...))
}

func (r *run) do(ctx context.Context) (Report, error) {
	u := &r.rep.UDP
	u.Mapping, u.Filtering, u.PortAllocation, u.Hairpinning, u.Classic = Unknown, Unknown, "unknown", "unknown", ClassicUnknown
	began := time.Now()
	if err := r.testI(ctx); err != nil {
		if ctx.Err() != nil {
			return r.rep, ctx.Err()
		}
		u.Classic = ClassicUDPBlocked
		r.tcpMapping(ctx)
		r.rep.Meaning = meaning(u)
		return r.rep, ctx.Err()
	}
	u.PublicAddress = r.first.mapped.String()
	testITook := time.Since(began)
	var tcpDone chan TCPReport
	var open chan bool
	if r.cfg.MappingOnly {
		open = make(chan bool, 1)
		go func() { open <- r.quickOpen(ctx) }()
		// The TCP address costs a TCP handshake and a transaction to the
		// same server; done while the UDP tests run, it adds no time. The
		// goroutine ends within Wait even when nobody reads its result.
		tcpDone = make(chan TCPReport, 1)
		go func() { tcpDone <- tcpAddress(ctx, r.primary, r.cfg.TCPPort, r.cfg.Wait) }()
	}
	noNAT := isLocal(r.first.mapped, r.main)
	mapping := func(ctx context.Context) error { return r.mapping(ctx, noNAT) }
	steps := []func(context.Context) error{r.filtering, mapping, r.portAllocation, r.hairpinning}
	if r.cfg.MappingOnly {
		steps = []func(context.Context) error{mapping, func(ctx context.Context) error {
			if u.Mapping == AddressDependent || u.Mapping == AddressAndPortDependent {
				return r.portAllocation(ctx)
			}
			return nil
		}}
	}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			return r.rep, err
		}
	}
	if r.cfg.MappingOnly {
		// An open filter answers the quick test within a round trip; a
		// closed one never does, and the mapping-only check does not wait
		// for that timeout: filtering stays unknown.
		grace := time.NewTimer(max(testITook, 20*time.Millisecond))
		select {
		case ok := <-open:
			if ok {
				u.Filtering = EndpointIndependent
			}
		case <-grace.C:
		}
		grace.Stop()
	}
	u.Classic = classic(noNAT, u.Mapping, u.Filtering)
	if r.cfg.MappingOnly {
		r.rep.TCP = <-tcpDone
	} else {
		r.tcpMapping(ctx)
	}
	r.rep.Meaning = meaning(u)
	return r.rep, ctx.Err()
}

// testI asks each server in turn until one answers; it also picks the
// addresses the other tests need.
func (r *run) testI(ctx context.Context) error {
	var err error
	for _, s := range r.cfg.Servers {
		var b binding
		b, err = r.transact(ctx, r.main, s, 0)
		sr := ServerReport{Address: s.String(), Answered: err == nil}
		if b.other.IsValid() {
			sr.Other = b.other.String()
		}
		r.rep.Servers = append(r.rep.Servers, sr)
		if err == nil && !r.primary.IsValid() {
			r.primary, r.first = s, b
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if !r.primary.IsValid() {
		return err
	}
	o := r.first.other
	if o.IsValid() && o.Addr() != r.primary.Addr() {
		r.altIP = netip.AddrPortFrom(o.Addr(), r.primary.Port())
	}
	if o.IsValid() && o.Port() != r.primary.Port() {
		r.altPort = netip.AddrPortFrom(r.primary.Addr(), o.Port())
	}
	if !r.altIP.IsValid() {
		// Another server with another IP address serves for the mapping
		// test's change of address.
		for _, s := range r.cfg.Servers {
			if s.Addr() != r.primary.Addr() {
				r.altIP = s
				break
			}
		}
	}
	return nil
}

// filtering is RFC 5780 section 4.4 on a fresh socket: ask for the answer
// from the other IP and port (test II), then from the other port (test
// III); the first that gets through says how open the filter is.
// quickOpen is the filtering test's first half alone, for a mapping-only
// check: from a fresh socket, ask the primary server to answer from its
// other IP and port; an answer means the NAT lets in what no packet went
// out to (endpoint-independent filtering). No answer proves nothing here.
func (r *run) quickOpen(ctx context.Context) bool {
	o := r.first.other
	if !o.IsValid() || o.Addr() == r.primary.Addr() {
		return false
	}
	conn, err := freshSocket()
	if err != nil {
		return false
	}
	defer conn.Close()
	b, err := r.transact(ctx, conn, r.primary, changeIP|changePort)
	return err == nil && b.origin.Addr() != r.primary.Addr()
}

func (r *run) filtering(ctx context.Context) error {
	o := r.first.other
	if !o.IsValid() {
		r.notRun("filtering: the STUN server %s sent no OTHER-ADDRESS (not an RFC 5780 server)", r.primary)
		return nil
	}
	conn, err := freshSocket()
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := r.transact(ctx, conn, r.primary, 0); err != nil {
		r.notRun("filtering: the STUN server %s did not answer a fresh socket", r.primary)
		return ctx.Err()
	}
	u := &r.rep.UDP
	if o.Addr() != r.primary.Addr() {
		b, err := r.transact(ctx, conn, r.primary, changeIP|changePort)
		switch {
		case err == nil && b.origin.Addr() != r.primary.Addr():
			u.Filtering = EndpointIndependent
			return nil
		case err == nil:
			r.notRun("filtering: the STUN server %s ignored CHANGE-REQUEST", r.primary)
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		}
	}
	b, err := r.transact(ctx, conn, r.primary, changePort)
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case err == nil && b.origin.Port() == r.primary.Port():
		r.notRun("filtering: the STUN server %s ignored CHANGE-REQUEST", r.primary)
	case o.Addr() == r.primary.Addr() && err == nil:
		r.notRun("filtering: endpoint-independent or address-dependent: telling them apart needs a STUN server with a second IP address")
	case o.Addr() == r.primary.Addr():
		u.Filtering = AddressAndPortDependent
	case err == nil:
		u.Filtering = AddressDependent
	default:
		u.Filtering = AddressAndPortDependent
	}
	return nil
}

// mapping is RFC 5780 section 4.3 on the main socket: the mapping to an
// address with another IP, and to the primary IP with another port,
// compared with the first.
func (r *run) mapping(ctx context.Context, noNAT bool) error {
	u := &r.rep.UDP
	if noNAT {
		u.Mapping = EndpointIndependent
		return nil
	}
	x := r.first.mapped
	mapTo := func(to netip.AddrPort) (netip.AddrPort, bool, error) {
		b, err := r.transact(ctx, r.main, to, 0)
		if err != nil {
			return netip.AddrPort{}, false, ctx.Err()
		}
		return b.mapped, true, nil
	}
	if r.altIP.IsValid() {
		y, ok, err := mapTo(r.altIP)
		if err != nil {
			return err
		}
		if ok && y == x {
			u.Mapping = EndpointIndependent
			return nil
		}
		if !ok {
			r.notRun("mapping: %s did not answer", r.altIP)
		}
	}
	if !r.altPort.IsValid() {
		r.notRun("mapping: the STUN server %s has no alternate port", r.primary)
		return nil
	}
	z, ok, err := mapTo(r.altPort)
	switch {
	case err != nil:
		return err
	case !ok:
		r.notRun("mapping: %s did not answer", r.altPort)
	case z != x:
		u.Mapping = AddressAndPortDependent
	case r.altIP.IsValid():
		u.Mapping = AddressDependent
	default:
		r.notRun("mapping: endpoint-independent or address-dependent: telling them apart needs a STUN server with another IP address")
	}
	return nil
}

// portAllocation maps several fresh sockets to the primary server and
// compares their public ports with their local ones and with each other.
func (r *run) portAllocation(ctx context.Context) error {
	var local, public []int
	for range r.cfg.Samples {
		conn, err := freshSocket()
		if err != nil {
			return err
		}
		b, err := r.transact(ctx, conn, r.primary, 0)
		lp := conn.LocalAddr().(*net.UDPAddr).Port
		conn.Close()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			continue
		}
		local, public = append(local, lp), append(public, int(b.mapped.Port()))
	}
	r.rep.UDP.PortAllocation, r.rep.UDP.PortDelta = portAllocation(local, public)
	if r.rep.UDP.PortAllocation == "unknown" {
		r.notRun("port allocation: fewer than 3 of %d fresh sockets got an answer", r.cfg.Samples)
	}
	return nil
}

// portAllocation classifies the public ports of successive new mappings,
// and gives the delta when they are sequential.
func portAllocation(local, public []int) (string, int) {
	if len(public) < 3 {
		return "unknown", 0
	}
	if slices.Equal(local, public) {
		return "preserved", 0
	}
	// The gap all successive mappings but one share, when all are small
	// and of one sign: another flow through the NAT between two samples (the
	// node's own traffic, another host's) takes a port and makes one gap
	// larger; random ports almost never repeat a gap.
	count := map[int]int{}
	d, sign := 0, 0
	for i := 1; i < len(public); i++ {
		g := public[i] - public[i-1]
		if g == 0 || g > 64 || g < -64 {
			return "random", 0
		}
		if sign == 0 {
			sign = g
		}
		if g*sign < 0 {
			return "random", 0
		}
		count[g]++
		if count[g] > count[d] || count[g] == count[d] && abs(g) < abs(d) {
			d = g
		}
	}
	if abs(d) > 16 || count[d] < max(2, len(public)-2) { // all gaps but one

		return "random", 0
	}
	return fmt.Sprintf("sequential (delta %d)", d), d
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

func (r *run) hairpinning(ctx context.Context) error {
	ok, err := hairpin(ctx, r.main, r.first.mapped, min(r.cfg.Wait, 500*time.Millisecond))
	if err != nil {
		return err
	}
	r.rep.UDP.Hairpinning = map[bool]string{true: "yes", false: "no"}[ok]
	return nil
}

// isLocal says whether mapped is conn's own address: no NAT in between.
func isLocal(mapped netip.AddrPort, conn net.PacketConn) bool {
	la := addrPortOf(conn.LocalAddr())
	if la.Port() != mapped.Port() {
		return false
	}
	if la.Addr() == mapped.Addr() {
		return true
	}
	return la.Addr().IsUnspecified() && IsOwnIP(mapped.Addr())
}

// IsOwnIP reports whether ip is one of this machine's interface addresses:
// a STUN server that saw it as the public address saw no NAT in between.
func IsOwnIP(ip netip.Addr) bool {
	ip = ip.Unmap()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == ip {
				return true
			}
		}
	}
	return false
}

// classic names the result in RFC 3489's words.
func classic(noNAT bool, mapping, filtering Behaviour) string {
	switch {
	case noNAT && filtering == EndpointIndependent:
		return ClassicOpen
	case noNAT && filtering != Unknown:
		return ClassicUDPFirewall
	case mapping == AddressDependent || mapping == AddressAndPortDependent:
		return ClassicSymmetric
	case mapping != EndpointIndependent:
		return ClassicUnknown
	case filtering == EndpointIndependent:
		return ClassicFullCone
	case filtering == AddressDependent:
		return ClassicRestricted
	case filtering == AddressAndPortDependent:
		return ClassicPortRestr
	}
	return ClassicUnknown
}

// meaning is one line on what the result means for reaching this node.
func meaning(u *UDPReport) string {
	switch u.Classic {
	case ClassicOpen:
		return "peers can connect to this node directly: no NAT, no UDP filter"
	case ClassicFullCone, ClassicRestricted, ClassicPortRestr:
		return "direct connections likely with peers behind any cone NAT, by hole punching (DCUtR), and with peers behind a symmetric NAT by p2pnode's birthday hole punch (QUIC)"
	case ClassicUDPFirewall:
		return "no NAT, but a firewall drops unsolicited UDP: hole punching (DCUtR) gets through it to most peers"
	case ClassicSymmetric:
		if u.PortDelta != 0 {
			return "direct connections with cone-NAT peers by p2pnode's birthday hole punch (QUIC), and with peers behind another symmetric NAT whose ports are sequential too by port prediction; with one that picks ports at random only through a relay"
		}
		return "direct connections with cone-NAT peers by p2pnode's birthday hole punch (QUIC); with peers behind another symmetric NAT only through a relay"
	case ClassicUDPBlocked:
		return "no STUN server answered over UDP: QUIC cannot work here; p2pnode connects over TCP, and through a relay where TCP hole punching fails"
	}
	return "the NAT behaviour could not be fully determined (see not_run)"
}
