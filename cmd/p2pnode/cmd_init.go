package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/p2pnode/p2pnode/node"
)

func newInitCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "init",
		Short: "Create the identity key and a default config; print the peer ID",
		Long: `init creates identity.key (Ed25519, mode 0600) and a commented config.toml in
the home directory, and prints the peer ID that other peers use to reach this
one. An existing key is never replaced: running init again prints its peer ID.`,
		Args: cobraArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := node.LoadIdentity(g.identityPath())
			switch {
			case errors.Is(err, node.ErrNoIdentity):
				if key, err = node.CreateIdentity(g.identityPath()); err != nil {
					return err
				}
			case err != nil:
				return asUsage(err)
			default:
				g.logger.Info("identity already exists; kept it", "file", g.identityPath())
			}
			wrote, err := g.writeDefaultConfig()
			if err != nil {
				return err
			}
			if wrote {
				g.logger.Info("wrote default config", "file", g.configPath())
			}
			id, err := node.PeerIDOf(key)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), id)
			return nil
		},
	}
}
