package natcheck

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/pion/stun/v3"
)

// changeIP and changePort are CHANGE-REQUEST's flags (RFC 5780 section 7.2).
const (
	changeIP   = 0x04
	changePort = 0x02
)

// binding is what one Binding transaction learned.
type binding struct {
	mapped netip.AddrPort // XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS from an RFC 3489 server)
	other  netip.AddrPort // OTHER-ADDRESS; invalid if the server sent none
	origin netip.AddrPort // where the answer came from
}

// errNoAnswer is a transaction that timed out: for the filtering tests, the
// answer they look for.
var errNoAnswer = errors.New("no answer")

// Binding runs one STUN Binding transaction (RFC 8489) from conn to server
// and returns the public address the server saw the request come from: on
// a NAT that maps each new destination to the next port, where the next
// mapping's count starts. It retransmits after rto, then after twice as
// long each time, and gives up after wait with an error that names the
// server.
func Binding(ctx context.Context, conn net.PacketConn, server netip.AddrPort, rto, wait time.Duration) (netip.AddrPort, error) {
	b, err := transact(ctx, conn, server, 0, rto, wait) // its errors name the server
	return b.mapped, err
}

// transact sends a Binding request to server from conn and waits for its
// answer, retransmitting after rto, then after twice as long each time
// (RFC 5389 section 7.2.1), until wait has passed: with the defaults three
// sends, few enough that a server's per-source rate limit (a p2pnode
// bootstrap node allows a burst of 20) is not what a filtering test sees. An
// answer may come from another address than server (CHANGE-REQUEST): any
// answer with the request's transaction ID counts. change is the
// CHANGE-REQUEST flags, 0 for none.
func transact(ctx context.Context, conn net.PacketConn, server netip.AddrPort, change byte, rto, wait time.Duration) (binding, error) {
	req, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if change != 0 {
		req, err = stun.Build(stun.TransactionID, stun.BindingRequest,
			stun.RawAttribute{Type: stun.AttrChangeRequest, Value: []byte{0, 0, 0, change}}, stun.Fingerprint)
	}
	if err != nil {
		return binding{}, err
	}
	deadline := time.Now().Add(wait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	dst := net.UDPAddrFromAddrPort(server)
	buf := make([]byte, 1500)
	for next := time.Now(); ; {
		if !time.Now().Before(next) {
			if _, err := conn.WriteTo(req.Raw, dst); err != nil {
				return binding{}, fmt.Errorf("send to STUN server %s: %w", server, err)
			}
			next = time.Now().Add(rto)
			rto *= 2
		}
		until := next
		if deadline.Before(until) {
			until = deadline
		}
		if err := conn.SetReadDeadline(until); err != nil {
			return binding{}, err
		}
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return binding{}, ctx.Err()
			}
			if !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, context.DeadlineExceeded) {
				return binding{}, fmt.Errorf("read from the STUN socket: %w", err)
			}
			if !time.Now().Before(deadline) {
				return binding{}, fmt.Errorf("STUN server %s: %w within %v", server, errNoAnswer, wait)
			}
			continue
		}
		b, ok := parseAnswer(buf[:n], req.TransactionID)
		if !ok {
			continue // someone else's packet, or not STUN
		}
		b.origin = addrPortOf(from)
		return b, nil
	}
}

// parseAnswer decodes a Binding success response for transaction id. A
// server is untrusted: anything else, or one without a mapped address, is
// not an answer.
func parseAnswer(p []byte, id [stun.TransactionIDSize]byte) (binding, bool) {
	if !stun.IsMessage(p) {
		return binding{}, false
	}
	m := &stun.Message{Raw: append([]byte(nil), p...)}
	if err := m.Decode(); err != nil || m.TransactionID != id || m.Type != stun.BindingSuccess {
		return binding{}, false
	}
	var b binding
	var xor stun.XORMappedAddress
	var mapped stun.MappedAddress
	switch {
	case xor.GetFrom(m) == nil:
		b.mapped = toAddrPort(xor.IP, xor.Port)
	case mapped.GetFrom(m) == nil:
		b.mapped = toAddrPort(mapped.IP, mapped.Port)
	default:
		return binding{}, false
	}
	var other stun.OtherAddress
	if other.GetFrom(m) == nil {
		b.other = toAddrPort(other.IP, other.Port)
	}
	return b, b.mapped.IsValid()
}

func toAddrPort(ip net.IP, port int) netip.AddrPort {
	a, ok := netip.AddrFromSlice(ip)
	if !ok || port <= 0 || port > 65535 {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(port))
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if u, ok := a.(*net.UDPAddr); ok {
		ap := u.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// hairpin sends a Binding request from conn to its own mapped address and
// reports whether the NAT delivered it back (RFC 5780 section 4.5): the
// request itself arrives, with its transaction ID.
func hairpin(ctx context.Context, conn net.PacketConn, mapped netip.AddrPort, wait time.Duration) (bool, error) {
	req, err := stun.Build(stun.TransactionID, stun.BindingRequest)
	if err != nil {
		return false, err
	}
	if _, err := conn.WriteTo(req.Raw, net.UDPAddrFromAddrPort(mapped)); err != nil {
		return false, nil // the NAT or the host refused to send to it: no hairpin
	}
	deadline := time.Now().Add(wait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	buf := make([]byte, 1500)
	for {
		if err := conn.SetReadDeadline(deadline); err != nil {
			return false, err
		}
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			return false, nil
		}
		m := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		if stun.IsMessage(buf[:n]) && m.Decode() == nil && m.TransactionID == req.TransactionID {
			return true, nil
		}
	}
}
