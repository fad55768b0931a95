package overlay

import (
	"errors"
	"syscall"

	"golang.org/x/sys/windows"
)

// isConnRefused reports whether a dial error says that the target refused
// the connection. Winsock reports WSAECONNREFUSED, not syscall.ECONNREFUSED
// (an errno Go invents on Windows); both are checked.
func isConnRefused(err error) bool {
	return errors.Is(err, windows.WSAECONNREFUSED) || errors.Is(err, syscall.ECONNREFUSED)
}
