package e2e

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/p2pnode/p2pnode/internal/e2etest"
)

// startTarget listens on 127.0.0.1:0 and serves each connection with handle
// (see e2etest.Serve) until t ends.
func startTarget(t testing.TB, handle func(c *net.TCPConn)) *e2etest.Target {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return e2etest.Serve(t, l, handle)
}

// closedPortAddr returns a loopback address where nothing listens.
func closedPortAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// pseudoRandom is n bytes of deterministic pseudo-random data named by seed.
func pseudoRandom(seed string, n int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8(sha256.Sum256([]byte(seed))), n)
}

// digest is the size and SHA-256 of a byte stream.
type digest struct {
	n   int64
	sum [sha256.Size]byte
}

func (d digest) String() string { return fmt.Sprintf("%d bytes, sha256 %x", d.n, d.sum[:8]) }

func digestOf(b []byte) digest { return digest{n: int64(len(b)), sum: sha256.Sum256(b)} }

// hashingWriter counts and hashes what goes through it.
type hashingWriter struct {
	h hash.Hash
	n int64
}

func newHashingWriter() *hashingWriter { return &hashingWriter{h: sha256.New()} }

func (w *hashingWriter) Write(b []byte) (int, error) {
	w.n += int64(len(b))
	return w.h.Write(b)
}

func (w *hashingWriter) digest() digest {
	var d digest
	d.n = w.n
	copy(d.sum[:], w.h.Sum(nil))
	return d
}

// sendAll writes src to c, hashing it, then half-closes c's write side.
func sendAll(c *net.TCPConn, src io.Reader) (digest, error) {
	hw := newHashingWriter()
	_, err := io.Copy(io.MultiWriter(c, hw), src)
	if err == nil {
		err = c.CloseWrite()
	}
	return hw.digest(), err
}

// receiveAll reads c until EOF, hashing what comes.
func receiveAll(c *net.TCPConn) (digest, error) {
	hw := newHashingWriter()
	_, err := io.Copy(hw, c)
	return hw.digest(), err
}

// exchange sends src on c and concurrently reads c until EOF, returning the
// digests of what it sent and what it received.
func exchange(c *net.TCPConn, src io.Reader) (sent, received digest, err error) {
	var sendErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		sent, sendErr = sendAll(c, src)
	}()
	received, recvErr := receiveAll(c)
	<-done
	if sendErr != nil {
		return sent, received, fmt.Errorf("sending: %w", sendErr)
	}
	if recvErr != nil {
		return sent, received, fmt.Errorf("receiving: %w", recvErr)
	}
	return sent, received, nil
}

// dial connects to a forward's local address with a deadline for the whole
// connection.
func dial(t testing.TB, addr string, timeout time.Duration) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatalf("dialling the forward at %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(timeout))
	return c.(*net.TCPConn)
}

// expectClosed connects to addr and expects the connection to be closed
// (EOF or reset) without any byte coming, within timeout.
func expectClosed(t testing.TB, addr string, timeout time.Duration) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if errors.Is(err, syscall.ECONNRESET) {
		// The forward accepted and reset the connection before this
		// process's connect(2) had returned (loopback, a busy machine).
		return
	}
	if err != nil {
		t.Fatalf("dialling the forward at %s: %v", addr, err)
	}
	t.Cleanup(func() { nc.Close() })
	c := nc.(*net.TCPConn)
	_ = c.SetDeadline(time.Now().Add(timeout))
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	var ne net.Error
	switch {
	case n > 0:
		t.Fatalf("%s: received %q, want the connection closed", addr, buf[:n])
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("%s: connection still open after %v, want it closed", addr, timeout)
	case err == nil:
		t.Fatalf("%s: empty read without error", addr)
	}
	// io.EOF or a reset: closed, as wanted.
}

func itoa(i int) string { return strconv.Itoa(i) }

// portOf is the port of a HOST:PORT address.
func portOf(t testing.TB, addr string) int {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
