package overlay

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	a := dialTCP(t, ln.Addr().String())
	b := <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	_ = b.SetDeadline(time.Now().Add(testTimeout))
	t.Cleanup(func() { _ = b.Close() })
	return a, b.(*net.TCPConn)
}

// pumped returns two TCP connections x and y whose far ends are joined by
// Pump, and a channel with Pump's result: bytes written to x come out of y
// and the other way round.
func pumped(t *testing.T) (x, y *net.TCPConn, res <-chan error) {
	t.Helper()
	x, px := tcpPair(t)
	y, py := tcpPair(t)
	result := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		result <- Pump(px, py)
	}()
	t.Cleanup(func() {
		_ = px.Close()
		_ = py.Close()
		<-finished
	})
	return x, y, result
}

func waitPump(t *testing.T, result <-chan error) error {
	t.Helper()
	select {
	case err := <-result:
		return err
	case <-time.After(testTimeout):
		t.Fatal("Pump did not return")
		return nil
	}
}

func TestPumpHalfClose(t *testing.T) {
	data := randomBytes(1, 3<<20)
	tests := []struct {
		name string
		run  func(t *testing.T, x, y *net.TCPConn)
	}{
		{
			// y answers only after x's end of stream: x's CloseWrite must
			// come through while x can still read.
			name: "reply after client EOF",
			run: func(t *testing.T, x, y *net.TCPConn) {
				go func() {
					h := sha256.New()
					_, _ = io.Copy(h, y)
					_, _ = y.Write(h.Sum(nil))
					_ = y.CloseWrite()
				}()
				if _, err := x.Write(data); err != nil {
					t.Fatal(err)
				}
				if err := x.CloseWrite(); err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(x)
				if err != nil {
					t.Fatalf("reading the reply: %v", err)
				}
				if want := sum(data); !bytes.Equal(got, want[:]) {
					t.Fatalf("reply %x; want %x", got, want)
				}
			},
		},
		{
			// y closes its write side first and keeps receiving.
			name: "server closes first",
			run: func(t *testing.T, x, y *net.TCPConn) {
				if _, err := y.Write([]byte("bye")); err != nil {
					t.Fatal(err)
				}
				if err := y.CloseWrite(); err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(x)
				if err != nil || string(got) != "bye" {
					t.Fatalf("x read %q, %v; want \"bye\", nil", got, err)
				}
				received := make(chan [32]byte, 1)
				go func() {
					b, _ := io.ReadAll(y)
					received <- sum(b)
				}()
				if _, err := x.Write(data); err != nil {
					t.Fatal(err)
				}
				_ = x.CloseWrite()
				if got := <-received; got != sum(data) {
					t.Fatal("data sent after the server's close-write arrived damaged")
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			x, y, result := pumped(t)
			tc.run(t, x, y)
			if err := waitPump(t, result); err != nil {
				t.Fatalf("Pump = %v; want nil after a clean end in both directions", err)
			}
		})
	}
}

func TestPumpReset(t *testing.T) {
	x, y, result := pumped(t)
	if _, err := x.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(y, buf); err != nil {
		t.Fatal(err)
	}
	// x aborts: RST.
	_ = x.SetLinger(0)
	_ = x.Close()
	_, err := io.ReadAll(y)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("y read error %v; want ECONNRESET (an abort must stay an abort)", err)
	}
	if err := waitPump(t, result); err == nil {
		t.Fatal("Pump = nil; want the reset error")
	}
}
