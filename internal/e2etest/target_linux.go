package e2etest

import (
	"net"
	"testing"

	"github.com/p2pnode/p2pnode/internal/netlab"
)

// ListenIn listens on 127.0.0.1:0 inside h's network namespace, which the
// socket stays in whatever goroutine uses it. It fails t on error and
// closes the listener when t ends.
func ListenIn(t testing.TB, h *netlab.Host) net.Listener {
	t.Helper()
	var l net.Listener
	NetnsDo(t, h, func() (err error) {
		l, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	})
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// NetnsDo runs f inside h's network namespace (netlab.Host.Do) and fails t
// if f returns an error.
func NetnsDo(t testing.TB, h *netlab.Host, f func() error) {
	t.Helper()
	if err := h.Do(f); err != nil {
		t.Fatalf("in %s: %v", h, err)
	}
}
