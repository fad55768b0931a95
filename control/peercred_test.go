//go:build linux || darwin

package control

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestPeerUIDOwnUser: over a loopback Unix connection, the kernel's peer
// credentials name our own user on both ends.
func TestPeerUIDOwnUser(t *testing.T) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "s"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	if err := ln.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	accepted := make(chan *net.UnixConn, 1)
	go func() {
		c, err := ln.AcceptUnix()
		if err != nil {
			t.Errorf("Accept: %v", err)
		}
		accepted <- c
	}()
	d := net.Dialer{Timeout: 10 * time.Second}
	dc, err := d.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dc.Close() })
	sc := <-accepted
	if sc == nil {
		t.FailNow()
	}
	t.Cleanup(func() { sc.Close() })

	for name, c := range map[string]*net.UnixConn{"accepted": sc, "dialed": dc.(*net.UnixConn)} {
		uid, err := peerUID(c)
		if err != nil {
			t.Errorf("peerUID(%s end): %v", name, err)
		} else if uid != os.Getuid() {
			t.Errorf("peerUID(%s end) = %d, want our uid %d", name, uid, os.Getuid())
		}
	}
}
