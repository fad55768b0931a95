package control

import (
	"errors"
	"fmt"
	"path/filepath"
	"syscall"

	"github.com/gofrs/flock"
)

// homeLock is the exclusive lock a daemon holds on its home directory's
// lock file while it owns the control socket. It is flock(2) on Linux, macOS
// and the BSDs and LockFileEx on Windows (both through gofrs/flock): the
// kernel drops it when the process dies, so a crashed daemon never leaves a
// lock behind.
type homeLock struct {
	fl *flock.Flock
}

// lockHome takes home's lock file without waiting. An error wrapping
// ErrAlreadyRunning, naming home and the lock file, means another process
// (or another Listen in this one) holds it.
func lockHome(home string) (*homeLock, error) {
	lockPath := filepath.Join(home, lockName)
	fl := flock.New(lockPath, flock.SetPermissions(0o600))
	var (
		ok  bool
		err error
	)
	// The lock is non-blocking, so EINTR means only that a signal came in
	// the middle of it: try again.
	for range 3 {
		ok, err = fl.TryLock()
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("control socket lock %s: %w", lockPath, err)
	}
	if !ok {
		return nil, fmt.Errorf("%w in %s (it holds %s)", ErrAlreadyRunning, home, lockPath)
	}
	return &homeLock{fl: fl}, nil
}

// Close releases the lock. The file stays: removing it would let a daemon
// that opened it just before lock a file no other daemon can see.
func (l *homeLock) Close() error {
	return l.fl.Close()
}
