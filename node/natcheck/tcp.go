package natcheck

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	reuseport "github.com/libp2p/go-reuseport"
	"github.com/pion/stun/v3"
)

// TCPReport is the TCP part of a Report: how the NAT maps TCP connections,
// from STUN over TCP (RFC 5389 section 7.2.2) to the server's addresses,
// all dialled from one local port (as libp2p's TCP transport dials from its
// listen port).
type TCPReport struct {
	// PublicAddress is the connection's address as the server saw it.
	PublicAddress string    `json:"public_address"`
	Mapping       Behaviour `json:"mapping"`
	// NotRun names the tests that could not run, and why.
	NotRun []string `json:"not_run,omitempty"`
}

// tcpMapping maps one local port to the primary server address, then to
// the one with another IP, then to the one with another port, and compares
// as the UDP mapping test does.
func (r *run) tcpMapping(ctx context.Context) {
	t := &r.rep.TCP
	t.Mapping = Unknown
	primary := r.primary
	if !primary.IsValid() && len(r.cfg.Servers) > 0 {
		primary = r.cfg.Servers[0] // UDP blocked: TCP may still work
	}
	if !primary.IsValid() {
		return
	}
	first, local, err := tcpBinding(ctx, netip.AddrPortFrom(netip.IPv4Unspecified(), r.cfg.TCPPort), primary, r.cfg.Wait)
	if err != nil {
		t.NotRun = append(t.NotRun, fmt.Sprintf("mapping: no STUN over TCP from %s: %v", primary, err))
		return
	}
	x := first.mapped
	altIP, altPort := r.altIP, r.altPort
	if o := first.other; o.IsValid() && !r.primary.IsValid() {
		// UDP said nothing (blocked): the TCP answer's OTHER-ADDRESS does.
		if o.Addr() != primary.Addr() {
			altIP = netip.AddrPortFrom(o.Addr(), primary.Port())
		}
		if o.Port() != primary.Port() {
			altPort = netip.AddrPortFrom(primary.Addr(), o.Port())
		}
	}
	t.PublicAddress = x.String()
	if x == local || local.Addr().IsUnspecified() && x.Port() == local.Port() && IsOwnIP(x.Addr()) {
		t.Mapping = EndpointIndependent
		return
	}
	from := netip.AddrPortFrom(netip.IPv4Unspecified(), local.Port())
	if altIP.IsValid() {
		y, _, err := tcpBinding(ctx, from, altIP, r.cfg.Wait)
		if err == nil && y.mapped == x {
			t.Mapping = EndpointIndependent
			return
		}
		if err != nil {
			t.NotRun = append(t.NotRun, fmt.Sprintf("mapping: %s: %v", altIP, err))
		}
	}
	if !altPort.IsValid() {
		t.NotRun = append(t.NotRun, "mapping: the STUN server has no alternate port")
		return
	}
	z, _, err := tcpBinding(ctx, from, altPort, r.cfg.Wait)
	switch {
	case err != nil:
		t.NotRun = append(t.NotRun, fmt.Sprintf("mapping: %s: %v", altPort, err))
	case z.mapped != x:
		t.Mapping = AddressAndPortDependent
	case altIP.IsValid():
		t.Mapping = AddressDependent
	default:
		t.NotRun = append(t.NotRun, "mapping: endpoint-independent or address-dependent: telling them apart needs a STUN server with another IP address")
	}
}

// tcpAddress is the TCP part of a mapping-only check: the public address of
// local port port (0: an ephemeral one) as server sees it. The mapping is
// left unknown unless there is no NAT.
func tcpAddress(ctx context.Context, server netip.AddrPort, port uint16, wait time.Duration) TCPReport {
	t := TCPReport{Mapping: Unknown}
	b, local, err := tcpBinding(ctx, netip.AddrPortFrom(netip.IPv4Unspecified(), port), server, wait)
	if err != nil {
		t.NotRun = append(t.NotRun, fmt.Sprintf("address: no STUN over TCP from %s: %v", server, err))
		return t
	}
	t.PublicAddress = b.mapped.String()
	if b.mapped == local || local.Addr().IsUnspecified() && b.mapped.Port() == local.Port() && IsOwnIP(b.mapped.Addr()) {
		t.Mapping = EndpointIndependent
	}
	return t
}

// tcpBinding dials server from local (port 0: any) with SO_REUSEPORT, so
// that the next call can dial from the same port, and runs one Binding
// transaction on the connection.
func tcpBinding(ctx context.Context, local, server netip.AddrPort, wait time.Duration) (_ binding, bound netip.AddrPort, err error) {
	d := net.Dialer{Control: reuseport.Control, Timeout: wait}
	if local.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(local)
	}
	c, err := d.DialContext(ctx, "tcp4", server.String())
	if err != nil {
		return binding{}, netip.AddrPort{}, err
	}
	defer c.Close()
	bound = c.LocalAddr().(*net.TCPAddr).AddrPort()
	bound = netip.AddrPortFrom(bound.Addr().Unmap(), bound.Port())
	_ = c.SetDeadline(time.Now().Add(wait))
	req, err := stun.Build(stun.TransactionID, stun.BindingRequest)
	if err != nil {
		return binding{}, bound, err
	}
	if _, err := c.Write(req.Raw); err != nil {
		return binding{}, bound, err
	}
	head := make([]byte, 20)
	if _, err := io.ReadFull(c, head); err != nil {
		return binding{}, bound, fmt.Errorf("no answer: %w", err)
	}
	n := int(binary.BigEndian.Uint16(head[2:4]))
	if n > 1500 {
		return binding{}, bound, fmt.Errorf("an answer of %d bytes", n)
	}
	msg := append(head, make([]byte, n)...)
	if _, err := io.ReadFull(c, msg[20:]); err != nil {
		return binding{}, bound, fmt.Errorf("a cut answer: %w", err)
	}
	b, ok := parseAnswer(msg, req.TransactionID)
	if !ok {
		return binding{}, bound, fmt.Errorf("not a Binding success answer")
	}
	return b, bound, nil
}
