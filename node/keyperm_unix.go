//go:build unix

package node

import (
	"fmt"
	"io/fs"
)

// checkKeyPerm refuses a key file that group or others can read or write.
func checkKeyPerm(path string, info fs.FileInfo) error {
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("identity key %s is accessible by others (mode %04o); run `chmod 600 %s`", path, perm, path)
	}
	return nil
}
