package node

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// IdentityFileName is the name of the private key file inside the home
// directory.
const IdentityFileName = "identity.key"

// ErrNoIdentity is returned by LoadIdentity when the key file does not exist.
var ErrNoIdentity = errors.New("no identity key")

// CreateIdentity generates a new Ed25519 key and writes it to path with mode
// 0600, in libp2p's protobuf key encoding (crypto.MarshalPrivateKey). It never
// overwrites: if path exists it returns an error wrapping fs.ErrExist, so a
// peer ID that others have on their allow lists cannot be lost by accident.
func CreateIdentity(path string) (crypto.PrivKey, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create home directory for identity: %w", err)
	}
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return nil, fmt.Errorf("generate Ed25519 key: %w", err)
	}
	raw, err := crypto.MarshalPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode identity key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("identity key %s already exists; remove it only if you want a new peer ID: %w", path, err)
		}
		return nil, fmt.Errorf("create identity key: %w", err)
	}
	if _, err := f.Write(raw); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("write identity key %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("write identity key %s: %w", path, err)
	}
	return key, nil
}

// LoadIdentity reads the private key at path. It returns an error wrapping
// ErrNoIdentity when the file does not exist, and refuses a key file that
// group or others can read or write (like OpenSSH does for private keys).
func LoadIdentity(path string) (crypto.PrivKey, error) {
	info, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w at %s; run `p2pnode init` first", ErrNoIdentity, path)
	}
	if err != nil {
		return nil, fmt.Errorf("read identity key: %w", err)
	}
	if err := checkKeyPerm(path, info); err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read identity key: %w", err)
	}
	key, err := crypto.UnmarshalPrivateKey(raw)
	if err != nil {
		return nil, fmt.Errorf("identity key %s is not a libp2p private key: %w", path, err)
	}
	return key, nil
}

// PeerIDOf returns the peer ID that key gives, as defined by the libp2p
// peer ID spec (identity multihash of the public key for Ed25519).
func PeerIDOf(key crypto.PrivKey) (peer.ID, error) {
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return "", fmt.Errorf("derive peer ID: %w", err)
	}
	return id, nil
}
