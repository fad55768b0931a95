package main

import (
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/p2pnode/p2pnode/node"
)

type idArgs struct {
	cid bool
}

func newIDCmd(g *globalFlags) *cobra.Command {
	var a idArgs
	cmd := &cobra.Command{
		Use:   "id",
		Short: "Print this node's peer ID",
		Long: `id prints the peer ID of the identity in the home directory.

--cid prints the same peer ID as a base32 CIDv1 (all lower case), a form that
survives tools that lower-case host names, such as ssh's %h.`,
		Args: cobraArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := node.LoadIdentity(g.identityPath())
			if err != nil {
				return asUsage(err)
			}
			id, err := node.PeerIDOf(key)
			if err != nil {
				return err
			}
			if a.cid {
				fmt.Fprintln(cmd.OutOrStdout(), peer.ToCid(id))
				return nil
			}
			fmt.Fprintln(cmd.OutOrStdout(), id)
			return nil
		},
	}
	cmd.Flags().BoolVar(&a.cid, "cid", false, "print the peer ID as a lower-case base32 CIDv1")
	return cmd
}
