package control

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// xucredVersion is XUCRED_VERSION from <sys/ucred.h>; x/sys/unix does not
// export it.
const xucredVersion = 0

// peerUID returns the effective user ID of the process at the other end of
// c, from the kernel (LOCAL_PEERCRED at level SOL_LOCAL: the credentials at
// connect time, as an xucred).
func peerUID(c *net.UnixConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	var cred *unix.Xucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptXucred(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	}); err != nil {
		return -1, err
	}
	if credErr != nil {
		return -1, credErr
	}
	// Only version 0 of struct xucred exists; another one could lay out
	// the uid elsewhere.
	if cred.Version != xucredVersion {
		return -1, fmt.Errorf("LOCAL_PEERCRED returned xucred version %d, want %d", cred.Version, xucredVersion)
	}
	return int(cred.Uid), nil
}
