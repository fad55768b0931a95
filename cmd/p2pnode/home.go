package main

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/p2pnode/p2pnode/config"
	"github.com/p2pnode/p2pnode/node"
)

func (g *globalFlags) configPath() string   { return filepath.Join(g.home, config.FileName) }
func (g *globalFlags) identityPath() string { return filepath.Join(g.home, node.IdentityFileName) }

// loadConfig reads config.toml from the home directory; a missing file gives
// the defaults. Any problem with the file is bad input (exit 2).
func (g *globalFlags) loadConfig() (*config.File, error) {
	f, err := config.Load(g.configPath())
	if err != nil {
		return nil, asUsage(err)
	}
	return f, nil
}

// identity loads the node's key, creating it on first use so that `serve`
// or `forward` work without a separate `init` step (as ssh-keygen-less tools
// like holesail do). A key file with loose permissions is bad input.
func (g *globalFlags) identity() (crypto.PrivKey, error) {
	key, err := node.LoadIdentity(g.identityPath())
	if errors.Is(err, node.ErrNoIdentity) {
		key, err = node.CreateIdentity(g.identityPath())
		if err != nil {
			return nil, err
		}
		id, _ := node.PeerIDOf(key)
		g.logger.Info("created a new identity", "peer_id", id, "file", g.identityPath())
		return key, nil
	}
	if err != nil {
		return nil, asUsage(err)
	}
	return key, nil
}

// writeDefaultConfig writes the commented default config unless one exists.
// It reports whether it wrote the file.
func (g *globalFlags) writeDefaultConfig() (bool, error) {
	err := config.WriteDefault(g.configPath())
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("write default config: %w", err)
	}
	return true, nil
}
