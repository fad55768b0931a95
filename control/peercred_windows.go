package control

import (
	"net"
	"os"
)

// peerUID cannot ask the kernel on Windows (AF_UNIX there has no
// SO_PEERCRED; os.Getuid is -1): the socket file's owner-only DACL, set by
// restrictSocket, is what keeps other users out.
func peerUID(*net.UnixConn) (int, error) {
	return os.Getuid(), nil
}
