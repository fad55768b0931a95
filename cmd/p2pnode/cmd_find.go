package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/p2pnode/p2pnode/control"
	"github.com/p2pnode/p2pnode/overlay"
)

type findArgs struct {
	node    nodeFlags
	json    bool
	timeout time.Duration
}

func newFindCmd(g *globalFlags) *cobra.Command {
	var a findArgs
	cmd := &cobra.Command{
		Use:   "find NAME [--json]",
		Short: "List the peers that advertise NAME on the DHT, and the services they let this peer use",
		Long: `find looks NAME up on the DHT (peers advertise it with serve --advertise NAME),
connects to each peer found, and asks it which of its services this peer may
use. It prints the peer ID, whether the path is direct or relayed, and those
services. A name is a hint, not an identity: anyone can advertise any name,
so check the peer ID before you trust it. forward NAME/SERVICE picks one of
these peers.`,
		Example: `  p2pnode find movie-night
  p2pnode forward movie-night/web --listen 127.0.0.1:8080`,
		Args: cobraArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.run(cmd, g, args[0])
		},
	}
	cmd.Flags().BoolVar(&a.json, "json", false, "print the peers as JSON")
	cmd.Flags().DurationVar(&a.timeout, "timeout", 30*time.Second, "how long to look the name up and ask the peers")
	a.node.register(cmd.Flags(), "p2p-listen", false)
	return cmd
}

func (a *findArgs) run(cmd *cobra.Command, g *globalFlags, name string) error {
	if err := overlay.CheckServiceName(name); err != nil {
		return usagef("bad name %q: %v", name, err)
	}
	if a.timeout <= 0 {
		return usagef("bad --timeout %s: must be positive, e.g. 30s", a.timeout)
	}
	api, closeAPI, err := useAPI(cmd, g, &a.node, "looking the name up", "")
	if err != nil {
		return err
	}
	defer closeAPI()
	ctx, cancel := context.WithTimeout(cmd.Context(), a.timeout)
	defer cancel()
	found, err := api.Find(ctx, name)
	if err != nil {
		return err
	}

	out := cmd.OutOrStdout()
	if a.json {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Name  string              `json:"name"`
			Peers []control.FoundPeer `json:"peers"`
		}{name, found})
	}
	if len(found) == 0 {
		fmt.Fprintf(out, "no peer advertises %q\n", name)
		return nil
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tPATH\tSERVICES")
	for _, f := range found {
		svcs := strings.Join(f.Services, ", ")
		if f.Error != "" {
			svcs = "unreachable: " + f.Error
		} else if svcs == "" {
			svcs = "none for this peer"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", f.Peer, f.Path, svcs)
	}
	return tw.Flush()
}
