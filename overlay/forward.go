package overlay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Forwarder forwards local connections to one service of one peer: the
// forwarding side of the protocol. Fill in the fields and call
// [Forwarder.Serve] (a TCP port, like `ssh -L`) or [Forwarder.Stdio]
// (stdin/stdout, for ssh's ProxyCommand). A Forwarder holds no state of its
// own; one value may run several Serve and Stdio calls at once.
type Forwarder struct {
	// Host is the local libp2p host streams are opened from. Required.
	Host host.Host
	// Peer is the peer ID of the serving peer. Required.
	Peer peer.ID
	// Service is the service name on Peer (a name, or a port number as
	// text for services exposed as --expose PORT). Required.
	Service string
	// Logger receives one line per connection that could not be forwarded
	// and a line per connection that ended with an error. Nil means
	// slog.Default().
	Logger *slog.Logger
	// DialOptions are passed to [Dial] for every connection.
	DialOptions []DialOption
	// Prepare, if not nil, runs before each connection's stream is opened,
	// to make sure the peer connection is there and as good as it gets
	// (redial a peer that restarted, punch again through a relay). An error
	// closes that connection and is logged; the others carry on.
	Prepare func(ctx context.Context) error
	// Metrics, if not nil, counts the connections, bytes and refusals
	// (side "forward").
	Metrics *Metrics
	// ShutdownGrace is how long Serve lets open connections finish after
	// ctx ends (it stops accepting at once); those still open then are
	// reset. Zero resets them at once.
	ShutdownGrace time.Duration
}

// prepare runs Prepare, if any.
func (f *Forwarder) prepare(ctx context.Context) error {
	if f.Prepare == nil {
		return nil
	}
	return f.Prepare(ctx)
}

func (f *Forwarder) check() error {
	switch {
	case f.Host == nil:
		return errors.New("overlay: Forwarder.Host is nil")
	case f.Peer == "":
		return errors.New("overlay: Forwarder.Peer is empty")
	}
	if err := CheckServiceName(f.Service); err != nil {
		return fmt.Errorf("service name %q: %w", f.Service, err)
	}
	return nil
}

func (f *Forwarder) log() *slog.Logger {
	if f.Logger != nil {
		return f.Logger
	}
	return slog.Default()
}

// Serve accepts TCP connections on ln and forwards each over its own stream
// (see [Dial] and [Pump]) until ctx is done. It then closes ln, resets every
// connection still being forwarded, waits for their goroutines and returns
// nil. ln is closed when Serve returns, whatever the reason.
//
// A connection whose Dial fails (the peer refused, is unreachable, ...) is
// closed and logged in one line; the other connections and the accept loop
// carry on. Serve returns an error only for a bad Forwarder or a permanent
// Accept failure.
func (f *Forwarder) Serve(ctx context.Context, ln net.Listener) error {
	if err := f.check(); err != nil {
		_ = ln.Close()
		return err
	}
	// On return: make sure ln is closed, give the open connections
	// ShutdownGrace to finish, then stop them (cancel conns) and wait for
	// every connection goroutine, so none outlives Serve.
	conns, cancelConns := context.WithCancel(context.WithoutCancel(ctx))
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		_ = ln.Close()
		f.drain(&wg, cancelConns)
	}()
	// Closing ln is what unblocks Accept when ctx ends.
	stopClose := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stopClose()

	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporaryAccept(err) {
				// Out of file descriptors and the like: wait and retry,
				// as net/http does, instead of spinning or giving up.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				f.log().Warn("accept failed; retrying", "listen", ln.Addr().String(), "err", err, "retry_in", backoff)
				t := time.NewTimer(backoff)
				select {
				case <-ctx.Done():
					t.Stop()
					return nil
				case <-t.C:
				}
				continue
			}
			return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
		}
		backoff = 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.forwardConn(conns, c)
		}()
	}
}

// drain waits up to ShutdownGrace for the connection goroutines in wg, then
// cancels the rest and waits for them.
func (f *Forwarder) drain(wg *sync.WaitGroup, cancelConns context.CancelFunc) {
	defer cancelConns()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	if f.ShutdownGrace > 0 {
		t := time.NewTimer(f.ShutdownGrace)
		defer t.Stop()
		select {
		case <-done:
			return
		case <-t.C:
			f.log().Warn("shutdown grace period over; resetting the connections still open", "grace", f.ShutdownGrace)
		}
	}
	cancelConns()
	<-done
}

// forwardConn forwards one accepted connection; it returns when the
// connection is done or ctx is cancelled.
func (f *Forwarder) forwardConn(ctx context.Context, c net.Conn) {
	log := f.log().With("client", c.RemoteAddr().String(), "peer", f.Peer, "service", f.Service)
	hc := netHalfConn(c)
	err := f.prepare(ctx)
	var s network.Stream
	if err == nil {
		// The client's first bytes go with the request: one round trip
		// less per connection. A refusal then ends the Pump below.
		s, err = DialEarly(ctx, f.Host, f.Peer, f.Service, f.DialOptions...)
	}
	if err != nil {
		_ = c.Close()
		if st, ok := refusalStatus(err); ok {
			f.Metrics.refused("forward", f.Service, st)
		}
		if ctx.Err() == nil {
			log.Warn("connection not forwarded", "err", err)
		}
		return
	}
	stop := context.AfterFunc(ctx, func() {
		_ = s.Reset()
		reset(hc)
	})
	defer stop()
	start := time.Now()
	counted, done := f.Metrics.track("forward", f.Service, s)
	defer done()
	if err := Pump(hc, counted); err != nil && ctx.Err() == nil {
		if st, ok := refusalStatus(err); ok {
			f.Metrics.refused("forward", f.Service, st)
			log.Warn("connection not forwarded", "err", err)
			return
		}
		log.Info("forwarded connection aborted", "duration", time.Since(start).Round(time.Millisecond), "err", err)
		return
	}
	log.Debug("forwarded connection closed", "duration", time.Since(start).Round(time.Millisecond))
}

// Stdio forwards one connection between in/out and the service, for
// `ssh -o ProxyCommand='p2pnode forward --stdio %h:22'`: bytes read from in
// go to the service, bytes from the service are written to out. End of in
// becomes a close-write on the stream; end of the stream closes out.
//
// It returns nil when both directions ended cleanly, the [*RefusedError] (or
// other error) from [Dial] if the stream could not be set up, the first
// [Pump] error if the connection was aborted, or an error wrapping ctx.Err()
// if ctx ended first (the stream is then reset and out closed).
//
// in is read on a goroutine owned by Stdio. If in cannot be interrupted
// (a blocking pipe or terminal) and Stdio ends for another reason than the
// end of in, that goroutine stays in its Read until in yields data or EOF
// and then exits; nothing it reads afterwards is used.
func (f *Forwarder) Stdio(ctx context.Context, in io.Reader, out io.WriteCloser) error {
	return f.StdioReady(ctx, in, out, nil)
}

// StdioReady is Stdio that calls ready, if not nil, once the stream is open
// and before any byte is carried: a caller that relays in and out from
// elsewhere (the daemon's control socket) says "connected" only then.
func (f *Forwarder) StdioReady(ctx context.Context, in io.Reader, out io.WriteCloser, ready func()) error {
	if err := f.check(); err != nil {
		return err
	}
	if err := f.prepare(ctx); err != nil {
		return err
	}
	s, err := Dial(ctx, f.Host, f.Peer, f.Service, f.DialOptions...)
	if err != nil {
		if st, ok := refusalStatus(err); ok {
			f.Metrics.refused("forward", f.Service, st)
		}
		return err
	}
	counted, done := f.Metrics.track("forward", f.Service, s)
	defer done()
	if ready != nil {
		ready()
	}
	sc := newStdioConn(in, out)
	stop := context.AfterFunc(ctx, func() {
		_ = s.Reset()
		_ = sc.Reset()
	})
	err = Pump(sc, counted)
	if !stop() {
		return fmt.Errorf("forwarding to peer %s stopped: %w", f.Peer, ctx.Err())
	}
	return err
}

// Compile-time checks: a libp2p stream is a HalfConn that can be reset.
var (
	_ HalfConn = network.Stream(nil)
	_ Resetter = network.Stream(nil)
	_ HalfConn = (*stdioConn)(nil)
	_ Resetter = (*stdioConn)(nil)
)

// stdioConn makes a reader and a WriteCloser into a HalfConn. Reads go
// through a goroutine so that Close can unblock a Read stuck on a
// non-interruptible reader (os.Stdin on a pipe).
type stdioConn struct {
	out io.WriteCloser

	chunks chan chunk    // from the reader goroutine
	ack    chan struct{} // to the reader goroutine: chunk consumed
	done   chan struct{} // closed by Close
	once   sync.Once     // guards closing out
	stop   sync.Once     // guards closing done
	cur    chunk         // partly consumed chunk; used by Read only
	outErr error         // result of out.Close
}

type chunk struct {
	b   []byte
	err error
}

var errStdioClosed = errors.New("stdio forwarding closed")

func newStdioConn(in io.Reader, out io.WriteCloser) *stdioConn {
	c := &stdioConn{
		out:    out,
		chunks: make(chan chunk),
		ack:    make(chan struct{}),
		done:   make(chan struct{}),
	}
	go c.readLoop(in)
	return c
}

// readLoop reads in into its own buffer and hands each chunk over; it waits
// for the chunk to be consumed before reusing the buffer. It exits at the
// end of in, or at its next return from Read after Close.
func (c *stdioConn) readLoop(in io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := in.Read(buf)
		if n == 0 && err == nil {
			continue
		}
		select {
		case c.chunks <- chunk{b: buf[:n], err: err}:
		case <-c.done:
			return
		}
		if err != nil {
			return
		}
		select {
		case <-c.ack:
		case <-c.done:
			return
		}
	}
}

// Read returns data from in; after Close it returns errStdioClosed.
func (c *stdioConn) Read(p []byte) (int, error) {
	if len(c.cur.b) == 0 && c.cur.err == nil {
		select {
		case c.cur = <-c.chunks:
		case <-c.done:
			return 0, errStdioClosed
		}
	}
	n := copy(p, c.cur.b)
	c.cur.b = c.cur.b[n:]
	if len(c.cur.b) > 0 {
		return n, nil
	}
	if err := c.cur.err; err != nil {
		// Keep returning the final error, as readers do.
		return n, err
	}
	// Chunk consumed; let the reader goroutine reuse its buffer.
	select {
	case c.ack <- struct{}{}:
	case <-c.done:
	}
	return n, nil
}

// Write writes to out.
func (c *stdioConn) Write(p []byte) (int, error) { return c.out.Write(p) }

// CloseWrite closes out, which is how a pipe says "no more data".
func (c *stdioConn) CloseWrite() error {
	c.closeOut()
	return c.outErr
}

// Close closes out and stops reading in.
func (c *stdioConn) Close() error {
	c.closeOut()
	c.stop.Do(func() { close(c.done) })
	return nil
}

// Reset is Close: a pipe has no way to signal an abort.
func (c *stdioConn) Reset() error { return c.Close() }

func (c *stdioConn) closeOut() {
	c.once.Do(func() {
		c.outErr = c.out.Close()
	})
}

// isTemporaryAccept reports Accept errors worth retrying: the process or
// system ran out of descriptors or memory, or a client gave up while queued.
func isTemporaryAccept(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.ECONNABORTED)
}
