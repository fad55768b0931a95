//go:build unix && !linux && !darwin

package control

import (
	"net"
	"os"
)

// peerUID cannot ask the kernel on this system (the BSDs have getpeereid,
// but p2pnode is built and tested for Linux, macOS and Windows only): the
// socket's mode (0600) alone keeps other users out.
func peerUID(*net.UnixConn) (int, error) {
	return os.Getuid(), nil
}
