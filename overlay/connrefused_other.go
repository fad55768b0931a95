//go:build !windows

package overlay

import (
	"errors"
	"syscall"
)

// isConnRefused reports whether a dial error says that the target refused
// the connection.
func isConnRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED)
}
