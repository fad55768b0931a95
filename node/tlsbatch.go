package node

import (
	"context"
	"math/bits"
	"net"
	"sync"

	pool "github.com/libp2p/go-buffer-pool"
	ic "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/sec"
	tptu "github.com/libp2p/go-libp2p/p2p/net/upgrader"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
)

// batchedTLS is go-libp2p's TLS security transport (libp2ptls, the libp2p
// TLS handshake spec) with one change below it: the TLS records that one
// Write produces leave in one write(2) instead of one each.
//
// crypto/tls seals at most 16 KiB per record and hands each record to the
// connection on its own, so a 64 KiB yamux frame (what a forward writes
// under load) cost four write(2)s, and as many chances for the kernel to
// send a short segment and wake the receiver. Batching them cut the CPU a
// forward spends per GB from 4.0 to 3.5 s (bench/throughput.sh). Nothing changes on the wire
// but segment boundaries: peers see standard TLS 1.3.
type batchedTLS struct {
	*libp2ptls.Transport
}

// newBatchedTLS has the signature libp2p.Security expects (the key and the
// muxers are injected by go-libp2p's fx graph, as for libp2ptls.New).
func newBatchedTLS(id protocol.ID, key ic.PrivKey, muxers []tptu.StreamMuxer) (*batchedTLS, error) {
	t, err := libp2ptls.New(id, key, muxers)
	if err != nil {
		return nil, err
	}
	return &batchedTLS{t}, nil
}

// SecureInbound implements sec.SecureTransport.
func (t *batchedTLS) SecureInbound(ctx context.Context, insecure net.Conn, p peer.ID) (sec.SecureConn, error) {
	raw := &batchConn{Conn: insecure}
	return batched(raw)(t.Transport.SecureInbound(ctx, raw, p))
}

// SecureOutbound implements sec.SecureTransport.
func (t *batchedTLS) SecureOutbound(ctx context.Context, insecure net.Conn, p peer.ID) (sec.SecureConn, error) {
	raw := &batchConn{Conn: insecure}
	return batched(raw)(t.Transport.SecureOutbound(ctx, raw, p))
}

// batched wraps the result of a TLS handshake run over raw.
func batched(raw *batchConn) func(sec.SecureConn, error) (sec.SecureConn, error) {
	return func(c sec.SecureConn, err error) (sec.SecureConn, error) {
		if err != nil {
			return nil, err
		}
		return &batchedConn{SecureConn: c, raw: raw}, nil
	}
}

// batchedConn is the TLS connection; its Write gathers the records it
// produces and writes them at once.
type batchedConn struct {
	sec.SecureConn
	raw *batchConn

	// writeMu makes begin, the TLS write and end one step: two Writes
	// sharing a batch would have one send the other's records, or lose
	// them.
	writeMu sync.Mutex
}

// Write encrypts b (in as many TLS records as it takes) and sends them with
// one write to the underlying connection. Errors are those of tls.Conn.Write
// or of that write.
func (c *batchedConn) Write(b []byte) (int, error) {
	if len(b) <= batchMinWrite {
		return c.SecureConn.Write(b)
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.raw.begin()
	n, err := c.SecureConn.Write(b)
	if ferr := c.raw.end(); err == nil && ferr != nil {
		// The records were sealed but not sent: the stream is broken
		// either way, and tls.Conn would have said so had it written.
		return 0, ferr
	}
	return n, err
}

// batchMinWrite is the largest Write that fits one TLS record
// (crypto/tls's maxPlaintext, 16 KiB) and so gains nothing from batching.
const batchMinWrite = 16 << 10

// batchConn sits under tls.Conn: between begin and end it keeps what tls.Conn
// writes and sends it in one Write at end; otherwise it passes writes
// through. mu guards the batch against a write from tls.Conn's read side or
// Close (an alert) meanwhile; such a record lands after the data records,
// in the order tls.Conn's own out mutex gave them.
type batchConn struct {
	net.Conn

	mu       sync.Mutex
	batching bool
	buf      []byte // from go-buffer-pool while batching
}

func (c *batchConn) begin() {
	c.mu.Lock()
	c.batching = true
	c.buf = pool.Get(batchBufSize)[:0]
	c.mu.Unlock()
}

// Write implements net.Conn.
func (c *batchConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	if !c.batching {
		c.mu.Unlock()
		return c.Conn.Write(b)
	}
	c.buf = append(c.buf, b...)
	c.mu.Unlock()
	return len(b), nil
}

// end writes the batch and stops batching.
func (c *batchConn) end() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batching = false
	buf := c.buf
	c.buf = nil
	if cap(buf) == batchBufCap {
		// Only a buffer of the pool's own size goes back: go-buffer-pool
		// files buffers by capacity, and one grown by append has another.
		defer pool.Put(buf[:cap(buf)])
	}
	if len(buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(buf)
	return err
}

// batchBufSize holds a full 64 KiB yamux frame sealed in TLS records (each
// 16 KiB of plaintext plus a 5-byte header and a 16-byte tag, TLS 1.3); a
// larger batch grows by append.
const batchBufSize = 64<<10 + 5*(5+16+1)

// batchBufCap is the capacity go-buffer-pool gives a batchBufSize buffer:
// the next power of two.
var batchBufCap = 1 << bits.Len(uint(batchBufSize-1))
