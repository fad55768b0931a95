package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ic "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/sec"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
)

// countingConn counts the writes that reach the socket.
type countingConn struct {
	net.Conn
	writes atomic.Int64
	fail   atomic.Bool
}

func (c *countingConn) Write(b []byte) (int, error) {
	if c.fail.Load() {
		return 0, errors.New("injected write failure")
	}
	c.writes.Add(1)
	return c.Conn.Write(b)
}

// tlsPair hands back a secured client/server pair over loopback TCP, the
// client's socket wrapped in a countingConn; batched says which side runs
// batchedTLS (the other runs go-libp2p's plain TLS transport, to show that
// the wire is unchanged).
func tlsPair(t *testing.T, clientBatched, serverBatched bool) (client, server sec.SecureConn, raw *countingConn) {
	t.Helper()
	newTransport := func(batched bool) (sec.SecureTransport, peer.ID) {
		key, _, err := ic.GenerateEd25519Key(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		id, _ := peer.IDFromPrivateKey(key)
		if batched {
			tr, err := newBatchedTLS(libp2ptls.ID, key, nil)
			if err != nil {
				t.Fatal(err)
			}
			return tr, id
		}
		tr, err := libp2ptls.New(libp2ptls.ID, key, nil)
		if err != nil {
			t.Fatal(err)
		}
		return tr, id
	}
	ct, _ := newTransport(clientBatched)
	st, sid := newTransport(serverBatched)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)

	type result struct {
		c   sec.SecureConn
		err error
	}
	accepted := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			accepted <- result{err: err}
			return
		}
		sc, err := st.SecureInbound(ctx, c, "")
		accepted <- result{sc, err}
	}()
	c, err := net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	raw = &countingConn{Conn: c}
	client, err = ct.SecureOutbound(ctx, raw, sid)
	if err != nil {
		t.Fatalf("TLS handshake (client): %v", err)
	}
	r := <-accepted
	if r.err != nil {
		t.Fatalf("TLS handshake (server): %v", r.err)
	}
	server = r.c
	t.Cleanup(func() { client.Close(); server.Close() })
	for _, c := range []net.Conn{client, server} {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	}
	return client, server, raw
}

// TestBatchedTLS: bytes written through batchedTLS arrive intact at a peer
// running either transport, and a 64 KiB write leaves in one write(2)
// instead of one per 16 KiB record.
func TestBatchedTLS(t *testing.T) {
	const frame = 64 << 10
	cases := []struct {
		name          string
		clientBatched bool
		serverBatched bool
	}{
		{"batched to batched", true, true},
		{"batched to plain TLS", true, false},
		{"plain TLS to batched", false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			client, server, raw := tlsPair(t, tc.clientBatched, tc.serverBatched)
			data := make([]byte, 16*frame+123)
			_, _ = rand.Read(data)

			got := make(chan []byte, 1)
			go func() {
				b, _ := io.ReadAll(io.LimitReader(server, int64(len(data))))
				got <- b
			}()
			before := raw.writes.Load()
			frames := int64(0)
			for off := 0; off < len(data); off += frame {
				end := min(off+frame, len(data))
				if n, err := client.Write(data[off:end]); err != nil || n != end-off {
					t.Fatalf("Write = %d, %v; want %d, nil", n, err, end-off)
				}
				frames++
			}
			if b := <-got; !bytes.Equal(b, data) {
				t.Fatalf("received %d bytes that differ from the %d sent", len(b), len(data))
			}
			// Plain crypto/tls writes each record of at most 16 KiB on
			// its own: that side shows the count is real.
			writes := raw.writes.Load() - before
			if tc.clientBatched && writes > frames {
				t.Errorf("%d socket writes for %d writes of up to 64 KiB, want at most one each", writes, frames)
			}
			if !tc.clientBatched && writes < 4*frames-4 {
				t.Errorf("plain TLS: %d socket writes for %d writes of 64 KiB, want about four each", writes, frames)
			}

			// And the other way, so that reading through it works too.
			go func() { _, _ = server.Write([]byte("reply")) }()
			buf := make([]byte, 5)
			if _, err := io.ReadFull(client, buf); err != nil || string(buf) != "reply" {
				t.Fatalf("reply = %q, %v", buf, err)
			}
		})
	}
}

// TestBatchedTLSWriteError: when the batched write fails, Write reports the
// failure instead of claiming the bytes were sent.
func TestBatchedTLSWriteError(t *testing.T) {
	client, _, raw := tlsPair(t, true, true)
	raw.fail.Store(true)
	if n, err := client.Write(make([]byte, 64<<10)); err == nil {
		t.Fatalf("Write over a failing socket = %d, nil; want an error", n)
	}
}

// TestBatchedTLSConcurrent: concurrent writers (yamux has one, but nothing
// in net.Conn's contract says so) never lose or mix up each other's records:
// a lost or misplaced record would fail TLS's authentication on the reading
// side. Run with -race.
func TestBatchedTLSConcurrent(t *testing.T) {
	client, server, _ := tlsPair(t, true, true)
	const writers, per, size = 4, 8, 40 << 10
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			chunk := bytes.Repeat([]byte{byte('a' + w)}, size)
			for i := 0; i < per; i++ {
				if _, err := client.Write(chunk); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		}(w)
	}
	b, err := io.ReadAll(io.LimitReader(server, writers*per*size))
	wg.Wait()
	if err != nil || len(b) != writers*per*size {
		t.Fatalf("read %d bytes, %v; want %d", len(b), err, writers*per*size)
	}
	counts := map[byte]int{}
	for _, c := range b {
		counts[c]++
	}
	for w := 0; w < writers; w++ {
		if counts[byte('a'+w)] != per*size {
			t.Errorf("writer %d: %d bytes arrived, want %d", w, counts[byte('a'+w)], per*size)
		}
	}
}
