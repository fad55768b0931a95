package overlay

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// startUDPEcho echoes every datagram back to its sender until the test ends.
func startUDPEcho(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, MaxDatagram)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
	return pc.LocalAddr().String()
}

func TestForwardUDP(t *testing.T) {
	echoAddr := startUDPEcho(t)
	f := newFixture(t, "tcp", func(client peer.ID) []Service {
		return []Service{
			{Name: "echo", Target: echoAddr, UDP: true, Allow: []peer.ID{client}},
			{Name: "closed", Target: echoAddr, UDP: true},
			{Name: "tcp", Target: "127.0.0.1:1"},
		}
	})
	serve := func(t *testing.T, service string) (*net.UDPConn, *logBuffer) {
		t.Helper()
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		log, buf := newLogger(t, "udp forwarder")
		fw := &Forwarder{Host: f.client, Peer: f.server.ID(), Service: service, Logger: log}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- fw.ServeUDP(ctx, pc) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("ServeUDP = %v", err)
			}
		})
		c, err := net.DialUDP("udp", nil, pc.LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, buf
	}

	t.Run("datagrams of mixed sizes come back intact", func(t *testing.T) {
		c, _ := serve(t, "echo")
		sizes := []int{0, 1, 100, 1400, 8000, 65000}
		got := make([]byte, MaxDatagram)
		for i := 0; i < 60; i++ {
			d := randomBytes(uint64(i), sizes[i%len(sizes)])
			if _, err := c.Write(d); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := c.Read(got)
			if err != nil {
				t.Fatalf("datagram %d (%d bytes): %v", i, len(d), err)
			}
			if !bytes.Equal(got[:n], d) {
				t.Fatalf("datagram %d: got %d bytes back, want the %d sent", i, n, len(d))
			}
		}
	})
	for _, tc := range []struct{ service, want string }{
		{"closed", "denied"},
		{"tcp", "no such service"},
	} {
		t.Run(tc.service, func(t *testing.T) {
			c, log := serve(t, tc.service)
			if _, err := c.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			if !waitUntil(5*time.Second, func() bool { return strings.Contains(log.String(), tc.want) }) {
				t.Errorf("forwarder log has no %q:\n%s", tc.want, log.String())
			}
			_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if n, err := c.Read(make([]byte, 10)); err == nil {
				t.Errorf("got %d bytes back from a refused UDP service", n)
			}
		})
	}
}

func TestParseExposeUDP(t *testing.T) {
	s, err := ParseExpose("udp:dns=127.0.0.1:53")
	if err != nil || !s.UDP || s.Name != "dns" || s.Target != "127.0.0.1:53" {
		t.Errorf("ParseExpose(udp:dns=127.0.0.1:53) = %+v, %v", s, err)
	}
	s, err = ParseExpose("udp:5353")
	if err != nil || !s.UDP || s.Name != "5353" {
		t.Errorf("ParseExpose(udp:5353) = %+v, %v", s, err)
	}
	if s, err := ParseExpose("tcp:ssh=22"); err != nil || s.UDP {
		t.Errorf("ParseExpose(tcp:ssh=22) = %+v, %v", s, err)
	}
}
