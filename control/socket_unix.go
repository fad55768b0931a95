//go:build unix

package control

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// restrictSocket gives the socket file at path mode 0600, so that only its
// owner (and root) can connect. Between bind and chmod the socket has the
// umask's mode; the peer-credential check in Accept refuses other users in
// that window too.
func restrictSocket(path string) error {
	return os.Chmod(path, 0o600)
}

// isConnRefused reports whether err from dialing a Unix socket says that the
// socket file exists but no one listens on it: the daemon that made it died.
func isConnRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED)
}

// checkSocketOwner returns an error for a user who would be refused by the
// daemon that owns the socket file fi in home (the peer-credential check
// after the connect that root may make), saying why before connecting.
func checkSocketOwner(home string, fi fs.FileInfo) error {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		return fmt.Errorf("the p2pnode daemon in %s runs as another user (uid %d); run this command as that user", home, st.Uid)
	}
	return nil
}
