package overlay

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestListServices: a peer learns only the services it may use.
func TestListServices(t *testing.T) {
	stranger := newHost(t, "tcp")
	f := newFixture(t, "tcp", func(client peer.ID) []Service {
		return []Service{
			{Name: "ssh", Target: "127.0.0.1:22", Allow: []peer.ID{client}},
			{Name: "web", Target: "127.0.0.1:80", Public: true},
			{Name: "db", Target: "127.0.0.1:5432", Allow: []peer.ID{stranger.ID()}},
			{Name: "secret", Target: "127.0.0.1:1"},
		}
	})
	connect(t, stranger, f.server)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for _, tc := range []struct {
		name string
		h    host.Host
		want []string
	}{
		{"allowed client", f.client, []string{"ssh", "web"}},
		{"other peer", stranger, []string{"db", "web"}},
	} {
		got, err := ListServices(ctx, tc.h, f.server.ID())
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%s: ListServices = %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
	// A peer that runs no server says so.
	_, err := ListServices(ctx, f.server, f.client.ID())
	if err == nil || !strings.Contains(err.Error(), "offers no services") {
		t.Errorf("ListServices of a peer with no server: %v; want \"offers no services\"", err)
	}
}

// TestServerAllows: a peer is allowed when a service's allow list has it
// or a service is public; nobody else.
func TestServerAllows(t *testing.T) {
	h := newHost(t, "tcp")
	a, b := newHost(t, "tcp").ID(), newHost(t, "tcp").ID()
	cases := []struct {
		name     string
		svcs     []Service
		a, other bool
	}{
		{"allow list", []Service{{Name: "ssh", Target: "127.0.0.1:22", Allow: []peer.ID{a}}}, true, false},
		{"public", []Service{{Name: "web", Target: "127.0.0.1:80", Public: true}}, true, true},
		{"no service", nil, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv, err := NewServer(h, c.svcs)
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			if got := srv.Allows(a); got != c.a {
				t.Errorf("Allows(listed peer) = %v, want %v", got, c.a)
			}
			if got := srv.Allows(b); got != c.other {
				t.Errorf("Allows(other peer) = %v, want %v", got, c.other)
			}
		})
	}
}
