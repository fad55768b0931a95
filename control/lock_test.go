package control

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// TestListenLock: while one Listen holds home, a second one fails with an
// error naming home and its lock file; once the first closes, home is free.
func TestListenLock(t *testing.T) {
	home := t.TempDir()
	first, err := Listen(home, quiet)
	if err != nil {
		t.Fatalf("first Listen: %v", err)
	}
	t.Cleanup(func() { first.Close() })

	_, err = Listen(home, quiet)
	if !errors.Is(err, ErrAlreadyRunning) {
		t.Fatalf("second Listen: %v, want ErrAlreadyRunning", err)
	}
	for _, want := range []string{home, filepath.Join(home, lockName)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("second Listen: %q does not name %s", err, want)
		}
	}

	if err := first.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	next, err := Listen(home, quiet)
	if err != nil {
		t.Fatalf("Listen after Close: %v", err)
	}
	if err := next.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}
