package bootstrap

import (
	"context"
	"encoding/json"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/pion/stun/v3"
)

func TestSTUNProtocol(t *testing.T) {
	tests := []struct {
		name string
		alt  bool
	}{
		{"primary IP only", false},
		{"alternate IP", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &STUNConfig{IP: loopback}
			if tc.alt {
				needAltIP(t)
				cfg.AltIP = loopback2
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			b, p := newHost(t), newHost(t)
			svc, err := Start(b, Config{STUN: cfg})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { svc.Close() })
			if err := p.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err != nil {
				t.Fatal(err)
			}
			s, err := p.NewStream(ctx, b.ID(), STUNProtocolID)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
			body, err := io.ReadAll(io.LimitReader(s, STUNInfoMaxSize+1))
			if err != nil {
				t.Fatal(err)
			}
			if len(body) > STUNInfoMaxSize {
				t.Fatalf("answer of %d bytes; want at most %d", len(body), STUNInfoMaxSize)
			}
			var got struct {
				Servers []string `json:"servers"`
				Other   *string  `json:"other"`
			}
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("answer %q: %v", body, err)
			}
			primary, other := svc.STUN().Addrs()
			if len(got.Servers) != 1 || got.Servers[0] != primary.String() {
				t.Errorf("servers %q; want [%q]", got.Servers, primary)
			}
			switch {
			case tc.alt && (got.Other == nil || *got.Other != other.String()):
				t.Errorf("other %v; want %q", got.Other, other)
			case !tc.alt && got.Other != nil:
				t.Errorf("other %q from a server without alternate IP; want none", *got.Other)
			}

			// The address answers STUN.
			server, err := netip.ParseAddrPort(got.Servers[0])
			if err != nil {
				t.Fatal(err)
			}
			req := request(t)
			if m, _ := exchange(t, newClient(t), server, req.Raw, 2*time.Second); m == nil || m.Type != stun.BindingSuccess {
				t.Fatalf("advertised server %s: answer %v", server, m)
			}

			// Close stops both.
			if err := svc.Close(); err != nil {
				t.Fatal(err)
			}
			// go-libp2p negotiates the protocol lazily: the refusal comes on
			// the first read.
			if s, err := p.NewStream(ctx, b.ID(), STUNProtocolID); err == nil {
				_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
				if body, err := io.ReadAll(s); err == nil {
					t.Errorf("protocol still served after Close: %q", body)
				}
				s.Reset()
			}
			if m, _ := exchange(t, newClient(t), server, request(t).Raw, 200*time.Millisecond); m != nil {
				t.Error("STUN server still answers after Close")
			}
		})
	}
}

func TestStartSTUNError(t *testing.T) {
	h := newHost(t)
	if _, err := Start(h, Config{STUN: &STUNConfig{IP: netip.MustParseAddr("192.0.2.1")}}); err == nil {
		t.Fatal("Start with a STUN IP that is not ours: no error")
	}
	for _, pid := range h.Mux().Protocols() {
		if pid == STUNProtocolID {
			t.Error("STUN protocol served after a failed Start")
		}
	}
}
