package overlay

import (
	"errors"
	"io"
	"net"
	"sync"

	pool "github.com/libp2p/go-buffer-pool"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
)

// HalfConn is one side of a forwarded connection that can end its write
// direction on its own (TCP shutdown(SHUT_WR), a libp2p stream's
// CloseWrite) while still reading. *net.TCPConn, *net.UnixConn and
// network.Stream implement it.
type HalfConn interface {
	io.ReadWriteCloser
	// CloseWrite tells the peer that no more bytes follow (a FIN), without
	// stopping reads.
	CloseWrite() error
}

// Resetter is implemented by a HalfConn that can abort abruptly, so that its
// peer sees an error instead of a clean end of stream: network.Stream's
// Reset sends a stream reset. Pump resets a *net.TCPConn (anything with
// SetLinger) by SetLinger(0) and Close, which makes the kernel send a TCP RST.
type Resetter interface {
	Reset() error
}

// pumpBufferSize is the copy buffer per direction, in bytes: the largest
// write that a libp2p stream over TCP sends as one yamux frame, hence one
// write(2), whichever security protocol the peers chose. A yamux data frame
// carries at most 64 KiB minus its 12-byte header. Over Noise a full frame
// must also fit one Noise record, 65535 minus its 16-byte MAC bytes of
// plaintext (go-libp2p's noise.MaxPlaintextLength), so it carries at most
// 65519 - 12 = 65507 bytes; with a 64 KiB buffer each full read became a
// 65524-byte frame split across two Noise records plus a 12-byte frame in a
// third. Over TLS (which node/ prefers) the frame is sealed in four 16 KiB
// records that node's batched TLS transport writes at once. QUIC streams are
// indifferent to the size. bench/throughput.sh measures it; larger frames
// (a 256 KiB buffer with yamux's MaxMessageSize raised to match) cost more
// CPU per byte, not less.
const pumpBufferSize = noise.MaxPlaintextLength - yamuxHeaderSize

// yamuxHeaderSize is github.com/libp2p/go-yamux/v5's headerSize (unexported).
const yamuxHeaderSize = 12

// Pump copies bytes between a and b in both directions at once and returns
// when both directions have ended, after closing a and b.
//
// Half-close: when one direction reaches end of stream (a Read returns
// io.EOF), Pump calls CloseWrite on the side it was writing to and keeps
// copying the other direction until that ends too. This is what lets a
// client shut down its sending side and still receive the reply (and a
// server close its side and still receive uploads), as TCP allows (RFC 9293
// section 3.6). Closing both directions when the first one ends would cut
// such replies off.
//
// Errors: any Read error other than io.EOF, or any Write error, aborts the
// whole connection: both sides are reset (see [Resetter]) so that each peer
// sees an error, not a clean end, and Pump returns the first such error.
// A CloseWrite error is returned too but does not abort the other direction.
// Pump returns nil when both directions ended cleanly.
//
// Pump sets no deadlines: an idle forwarded connection (an ssh session) may
// legitimately stay silent for hours. To stop a Pump, reset or close a or b;
// Pump then returns promptly.
func Pump(a, b HalfConn) error {
	p := &pump{a: a, b: b}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.copy(b, a) }()
	go func() { defer wg.Done(); p.copy(a, b) }()
	wg.Wait()
	_ = a.Close()
	_ = b.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

type pump struct {
	a, b HalfConn

	mu      sync.Mutex
	err     error // first error; guarded by mu
	aborted bool  // guarded by mu
}

// copy moves bytes from src to dst until src ends or something fails.
func (p *pump) copy(dst, src HalfConn) {
	buf := pool.Get(pumpBufferSize)
	defer pool.Put(buf)
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				p.abort(werr)
				return
			}
		}
		if rerr == nil {
			continue
		}
		if errors.Is(rerr, io.EOF) {
			if err := dst.CloseWrite(); err != nil {
				p.record(err)
			}
			return
		}
		p.abort(rerr)
		return
	}
}

// record keeps err if it is the first one.
func (p *pump) record(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.mu.Unlock()
}

// abort records err and resets both sides once; resetting unblocks the other
// direction's Read or Write, so it ends too.
func (p *pump) abort(err error) {
	p.mu.Lock()
	if p.aborted {
		p.mu.Unlock()
		return
	}
	p.aborted = true
	if p.err == nil {
		p.err = err
	}
	p.mu.Unlock()
	reset(p.a)
	reset(p.b)
}

// reset aborts c so that its peer sees an error rather than a clean close.
func reset(c io.Closer) {
	switch x := c.(type) {
	case Resetter:
		_ = x.Reset()
	case interface{ SetLinger(sec int) error }:
		// SO_LINGER with a zero timeout makes close(2) send RST and drop
		// unsent data, which is how TCP says "aborted" (RFC 9293 3.10.5).
		_ = x.SetLinger(0)
		_ = c.Close()
	default:
		_ = c.Close()
	}
}

// netHalfConn adapts a net.Conn to HalfConn. Connections that cannot
// half-close get a CloseWrite that does nothing: their peer sees the end
// only when Pump closes them after both directions are done, which is still
// better than cutting the other direction off.
func netHalfConn(c net.Conn) HalfConn {
	if hc, ok := c.(HalfConn); ok {
		return hc
	}
	return noHalfClose{c}
}

type noHalfClose struct{ net.Conn }

func (noHalfClose) CloseWrite() error { return nil }

// Reset resets the wrapped connection if it can be; see [Resetter].
func (c noHalfClose) Reset() error {
	reset(c.Conn)
	return nil
}
