package overlay

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// UDPProtocolID carries one UDP "connection" (the datagrams between one
// local source address and the service's target) per stream. The request
// and response are the forward protocol's; after an ok, each datagram is a
// 2-byte big-endian length followed by that many bytes, both ways. Datagrams
// are at most MaxDatagram bytes; an empty one is allowed.
const UDPProtocolID protocol.ID = "/p2pnode/forward-udp/1.0.0"

// MaxDatagram is the largest datagram carried, in bytes (a UDP payload is
// at most 65,507 bytes over IPv4).
const MaxDatagram = 65535

// DefaultUDPIdleTimeout closes a UDP session after this long without a
// datagram either way, as NATs and conntrack do with UDP flows.
const DefaultUDPIdleTimeout = 2 * time.Minute

// writeDatagram writes one framed datagram in a single Write.
func writeDatagram(w io.Writer, b []byte) error {
	if len(b) > MaxDatagram {
		return fmt.Errorf("datagram of %d bytes is over the %d-byte limit", len(b), MaxDatagram)
	}
	frame := make([]byte, 2+len(b))
	binary.BigEndian.PutUint16(frame, uint16(len(b)))
	copy(frame[2:], b)
	_, err := w.Write(frame)
	return err
}

// readDatagram reads one framed datagram into buf (at least MaxDatagram
// bytes) and returns it.
func readDatagram(r io.Reader, buf []byte) ([]byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return buf[:n], nil
}

// idleTimer calls stop once no touch came for d.
type idleTimer struct {
	mu    sync.Mutex
	last  time.Time
	timer *time.Timer
}

func newIdleTimer(d time.Duration, stop func()) *idleTimer {
	t := &idleTimer{last: time.Now()}
	var check func()
	check = func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		if idle := time.Since(t.last); idle < d {
			t.timer.Reset(d - idle)
			return
		}
		stop()
	}
	t.timer = time.AfterFunc(d, check)
	return t
}

func (t *idleTimer) touch() {
	t.mu.Lock()
	t.last = time.Now()
	t.mu.Unlock()
}

func (t *idleTimer) stop() { t.timer.Stop() }

// relayUDP carries datagrams between str and the service's target until
// either side fails or the session is idle for the idle timeout.
func (s *Server) relayUDP(str network.Stream, svc Service, log *slog.Logger) {
	raddr, err := net.ResolveUDPAddr("udp", svc.Target)
	var conn *net.UDPConn
	if err == nil {
		conn, err = net.DialUDP("udp", nil, raddr)
	}
	if err != nil {
		log.Warn("forward failed: target unreachable", "target", svc.Target, "err", err)
		s.cfg.metrics.refused("serve", svc.Name, StatusUnreachable)
		s.refuse(str, StatusUnreachable, fmt.Sprintf("target %s of UDP service %q is unreachable: %v", svc.Target, svc.Name, err))
		return
	}
	defer conn.Close()
	if err := s.respond(str, response{Status: StatusOK}); err != nil {
		_ = str.Reset()
		return
	}
	_ = str.SetDeadline(time.Time{})
	log.Info("forwarding UDP", "target", svc.Target)
	stop := func() { _ = str.Reset(); _ = conn.Close() }
	idle := newIdleTimer(s.cfg.udpIdleTimeout, stop)
	defer idle.stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, MaxDatagram)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				stop()
				return
			}
			idle.touch()
			if writeDatagram(str, buf[:n]) != nil {
				stop()
				return
			}
		}
	}()
	buf := make([]byte, MaxDatagram)
	for {
		d, err := readDatagram(str, buf)
		if err != nil {
			break
		}
		idle.touch()
		// A datagram the target cannot take (ICMP port unreachable from an
		// earlier one, say) is dropped, as UDP would.
		_, _ = conn.Write(d)
	}
	stop()
	<-done
}

// ServeUDP forwards datagrams that arrive on pc to the UDP service, one
// stream per source address, until ctx ends; then it closes pc. A session
// closes after DefaultUDPIdleTimeout without a datagram either way. A
// source whose stream cannot be opened (the peer refused, say) has its
// datagrams dropped and the failure logged; the others carry on.
func (f *Forwarder) ServeUDP(ctx context.Context, pc net.PacketConn) error {
	if err := f.check(); err != nil {
		_ = pc.Close()
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		_ = pc.Close()
		wg.Wait()
	}()
	stopClose := context.AfterFunc(ctx, func() { _ = pc.Close() })
	defer stopClose()

	sessions := &udpSessions{f: f, pc: pc, byKey: map[string]*udpSession{}}
	buf := make([]byte, MaxDatagram)
	for {
		n, src, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read on %s: %w", pc.LocalAddr(), err)
		}
		sess := sessions.get(ctx, &wg, src)
		if sess == nil {
			continue
		}
		sess.idle.touch()
		if err := writeDatagram(sess.str, buf[:n]); err != nil {
			_ = sess.str.Reset()
		}
	}
}

// udpSession is one local source address's stream to the UDP service.
type udpSession struct {
	str  network.Stream
	idle *idleTimer
}

// udpSessions are a ServeUDP's sessions, by source address.
type udpSessions struct {
	f     *Forwarder
	pc    net.PacketConn
	mu    sync.Mutex
	byKey map[string]*udpSession
}

// get returns src's session, opening its stream (and the goroutine, owned
// by wg, that carries the answers back to src) for a new source; nil when
// the stream cannot be opened, which is logged.
func (u *udpSessions) get(ctx context.Context, wg *sync.WaitGroup, src net.Addr) *udpSession {
	key := src.String()
	u.mu.Lock()
	sess := u.byKey[key]
	u.mu.Unlock()
	if sess != nil {
		return sess
	}
	if err := u.f.prepare(ctx); err != nil {
		u.f.log().Warn("UDP datagrams not forwarded", "client", key, "err", err)
		return nil
	}
	str, err := Dial(ctx, u.f.Host, u.f.Peer, u.f.Service, append([]DialOption{WithUDP()}, u.f.DialOptions...)...)
	if err != nil {
		u.f.log().Warn("UDP datagrams not forwarded", "client", key, "err", err)
		return nil
	}
	sess = &udpSession{str: str}
	sess.idle = newIdleTimer(DefaultUDPIdleTimeout, func() { _ = str.Reset() })
	u.mu.Lock()
	u.byKey[key] = sess
	u.mu.Unlock()
	wg.Go(func() {
		defer func() {
			sess.idle.stop()
			_ = str.Reset()
			u.mu.Lock()
			delete(u.byKey, key)
			u.mu.Unlock()
		}()
		stop := context.AfterFunc(ctx, func() { _ = str.Reset() })
		defer stop()
		rbuf := make([]byte, MaxDatagram)
		for {
			d, err := readDatagram(str, rbuf)
			if err != nil {
				return
			}
			sess.idle.touch()
			if _, err := u.pc.WriteTo(d, src); err != nil {
				return
			}
		}
	})
	return sess
}
