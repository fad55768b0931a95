package node

import "io/fs"

// checkKeyPerm does nothing on Windows: Go reports every writable file there
// as mode 0666, whoever may read it (access is the file's ACL, which the
// key inherits from the home directory; under %AppData% that is the user,
// SYSTEM and Administrators).
func checkKeyPerm(string, fs.FileInfo) error {
	return nil
}
