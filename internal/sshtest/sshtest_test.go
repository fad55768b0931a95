//go:build linux

package sshtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSSHDirect logs in to the test sshd with the plain ssh client and runs a
// command: the harness works before anything is put between the two.
func TestSSHDirect(t *testing.T) {
	s := Start(t)
	if s.Addr != "127.0.0.1:"+strconv.Itoa(s.Port) {
		t.Fatalf("Addr = %q, Port = %d", s.Addr, s.Port)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := fmt.Sprintf("hello-%d", rand.Uint32())
	args := append(s.ClientArgs("-p", strconv.Itoa(s.Port)), "127.0.0.1", "echo", want)
	out, err := exec.CommandContext(ctx, s.SSH, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if got := strings.TrimSpace(string(out)); got != want {
		t.Fatalf("ssh printed %q, want %q", got, want)
	}
}

// TestSSHWrongKeyRefused makes sure the server really checks keys, so that a
// passing TestSSHDirect means something.
func TestSSHWrongKeyRefused(t *testing.T) {
	s := Start(t)
	other := Start(t) // its user key is not authorized on s

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append(other.ClientArgs("-p", strconv.Itoa(s.Port)), "127.0.0.1", "true")
	out, err := exec.CommandContext(ctx, s.SSH, args...).CombinedOutput()
	if err == nil {
		t.Fatalf("ssh with a key that is not authorized succeeded:\n%s", out)
	}
	if !strings.Contains(string(out), "Permission denied") {
		t.Fatalf("ssh failed, but not with Permission denied: %v\n%s", err, out)
	}
}
