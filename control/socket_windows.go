package control

import (
	"errors"
	"fmt"
	"io/fs"
	"syscall"

	"golang.org/x/sys/windows"
)

// restrictSocket replaces the socket file's DACL with one that allows only
// the user this process runs as (protected: nothing is inherited from the
// home directory). Windows has no SO_PEERCRED; connecting to an AF_UNIX
// socket needs write access to its file, so this DACL is the check that
// keeps other users out. Between bind and this call the socket has the
// home directory's inherited ACL (under %AppData%: the user, SYSTEM and
// Administrators).
func restrictSocket(path string) error {
	u, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		return fmt.Errorf("reading the user this process runs as: %w", err)
	}
	// FA is FILE_ALL_ACCESS, for this user only; P makes the DACL protected.
	sd, err := windows.SecurityDescriptorFromString("D:P(A;;FA;;;" + u.User.Sid.String() + ")")
	if err != nil {
		return fmt.Errorf("owner-only security descriptor: %w", err)
	}
	dacl, _, err := sd.DACL()
	if err != nil {
		return fmt.Errorf("owner-only security descriptor: %w", err)
	}
	err = windows.SetNamedSecurityInfo(path, windows.SE_FILE_OBJECT,
		windows.DACL_SECURITY_INFORMATION|windows.PROTECTED_DACL_SECURITY_INFORMATION,
		nil, nil, dacl, nil)
	if err != nil {
		return fmt.Errorf("setting an owner-only DACL on %s: %w", path, err)
	}
	return nil
}

// isConnRefused reports whether err from dialing a Unix socket says that the
// socket file exists but no one listens on it: the daemon that made it died.
// Winsock reports that as WSAECONNREFUSED, not as syscall.ECONNREFUSED (an
// errno Go invents on Windows); both are checked.
func isConnRefused(err error) bool {
	return errors.Is(err, windows.WSAECONNREFUSED) || errors.Is(err, syscall.ECONNREFUSED)
}

// checkSocketOwner does nothing on Windows: another user cannot connect
// through the socket's owner-only DACL and gets "access denied" from the
// connect itself. The file's owner SID is no guide here: files that an
// elevated administrator creates are owned by the Administrators group.
func checkSocketOwner(string, fs.FileInfo) error {
	return nil
}
