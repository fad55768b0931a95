package bootstrap

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/pion/stun/v3"
)

// STUN over TCP (RFC 5389 section 7.2.2): the same Binding requests on a
// TCP connection, answered on it. It tells a client how its NAT maps TCP
// connections (the TCP half of `p2pnode nat`); CHANGE-REQUEST has no
// meaning on a connection (RFC 5780 section 7.2), so a request with it gets
// 420 Unknown Attribute, like on a server without an alternate address.
// Unlike UDP it is not rate limited per source (the TCP handshake proves
// the source address: nothing to reflect), only bounded in connections.
const (
	// stunTCPTimeout bounds one connection: a request and its answer.
	stunTCPTimeout = 5 * time.Second
	// stunTCPConns bounds the connections served at once; more are closed
	// at once.
	stunTCPConns = 64
)

// listenTCP binds a TCP listener on each UDP socket's address. It is best
// effort: a port taken on TCP leaves that address without STUN over TCP.
func (s *STUNServer) listenTCP() {
	for i, ap := range s.layout.addrs {
		if !ap.IsValid() {
			continue
		}
		ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(ap))
		if err != nil {
			s.log.Info("STUN over TCP off on this address", "addr", ap, "error", err)
			continue
		}
		s.tcp[i] = ln
	}
}

// serveTCP accepts on listener i until Close closes it.
func (s *STUNServer) serveTCP(i int) {
	defer s.wg.Done()
	for {
		c, err := s.tcp[i].AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			select {
			case <-s.done:
				return
			case <-time.After(10 * time.Millisecond): // EMFILE and the like: do not spin
			}
			continue
		}
		select {
		case s.tcpSlots <- struct{}{}:
		default:
			_ = c.Close()
			s.dropped.Add(1)
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.tcpSlots }()
			s.answerTCP(c, i)
		}()
	}
}

// answerTCP reads one request from c and answers it, then closes c.
func (s *STUNServer) answerTCP(c *net.TCPConn, i int) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(stunTCPTimeout))
	stop := make(chan struct{})
	defer close(stop)
	go func() { // Close must not wait for a slow client's deadline
		select {
		case <-s.done:
			_ = c.Close()
		case <-stop:
		}
	}()
	pkt := make([]byte, 20, STUNMaxRequest)
	if _, err := io.ReadFull(c, pkt); err != nil {
		s.dropped.Add(1)
		return
	}
	n := int(binary.BigEndian.Uint16(pkt[2:4]))
	if 20+n > STUNMaxRequest {
		s.dropped.Add(1)
		return
	}
	pkt = pkt[:20+n]
	if _, err := io.ReadFull(c, pkt[20:]); err != nil {
		s.dropped.Add(1)
		return
	}
	src := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	req, resp := new(stun.Message), new(stun.Message)
	tx, act := s.layout.respond(pkt, src, i, req, resp)
	if act == stunDrop {
		s.dropped.Add(1)
		return
	}
	if tx != i {
		// CHANGE-REQUEST asked for another address: not on a connection.
		if err := buildUnknownAttributes(resp, req.TransactionID, []stun.AttrType{stun.AttrChangeRequest}, false); err != nil {
			return
		}
	}
	// No rate limit: the handshake proves the source, so an answer cannot
	// be reflected to a spoofed address; stunTCPConns bounds the work.
	if _, err := c.Write(resp.Raw); err != nil {
		s.writeErrors.Add(1)
		return
	}
	s.responses.Add(1)
}
