package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/p2pnode/p2pnode/bootstrap"
	"github.com/p2pnode/p2pnode/node"
)

type bootstrapArgs struct {
	node       nodeFlags
	relayAllow []string
	maxPeers   int
}

func newBootstrapCmd(g *globalFlags) *cobra.Command {
	var a bootstrapArgs
	cmd := &cobra.Command{
		Use:   "bootstrap",
		Short: "Run a bootstrap node: DHT server, circuit relay v2, AutoNAT server",
		Long: `bootstrap runs a public node that other peers join first: it answers DHT
queries, relays for private peers (circuit relay v2) and tells peers their
reachability (AutoNAT). Run it on a machine with a public address. It prints
every full /p2p multiaddr it can be reached at, one per line: paste one into
other peers' --bootstrap.

A bootstrap node is the first node of a network: it joins other bootstrap
peers only when --bootstrap (or [node] bootstrap in config.toml) names them.`,
		Args: cobraArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error { return a.run(cmd, g) },
	}
	a.node.register(cmd.Flags(), "listen", true)
	cmd.Flags().IntVar(&a.maxPeers, "max-peers", 4096, "peers this node accepts at once (about 100 KiB of memory each)")
	cmd.Flags().StringArrayVar(&a.relayAllow, "relay-allow", nil, "peer ID whose relayed connections to other --relay-allow peers are not limited (repeatable; adds to [bootstrap] relay_allow)")
	return cmd
}

func (a *bootstrapArgs) run(cmd *cobra.Command, g *globalFlags) error {
	if a.maxPeers < 1 {
		return usagef("bad --max-peers %d: must be positive", a.maxPeers)
	}
	file, err := g.loadConfig()
	if err != nil {
		return err
	}
	authorized, err := file.Bootstrap.RelayAllowedPeers()
	if err != nil {
		return asUsage(err)
	}
	flagged, err := node.ParsePeerIDs("--relay-allow", a.relayAllow)
	if err != nil {
		return asUsage(err)
	}
	authorized = append(authorized, flagged...)
	run, err := startNode(g, &a.node, roleBootstrap, file, func(cfg *node.Config) {
		cfg.HostOptions = bootstrap.HostOptions()
		// Every peer joins the bootstrap node and many hold a relay
		// reservation: the connection manager must not trim them, and the
		// resource manager must not stop at its memory-scaled default (252
		// here, 64 on a 1 GiB VPS; bench/capacity.sh).
		cfg.MaxPeers = a.maxPeers
		cfg.ConnLowWater, cfg.ConnHighWater = bootstrap.ConnLimits(a.maxPeers)
	})
	if err != nil {
		return err
	}
	defer run.stop()
	svc, err := bootstrap.Start(run.node.Host, bootstrap.Config{Logger: g.logger, RelayAuthorized: authorized, Relay: bootstrap.Resources(a.maxPeers)})
	if err != nil {
		return err
	}
	defer svc.Close()
	for _, addr := range run.node.FullAddrs() {
		fmt.Fprintln(cmd.OutOrStdout(), addr)
	}
	g.logger.Info("bootstrap node running", "peer_id", run.node.ID())
	<-cmd.Context().Done()
	g.logger.Info("shutting down")
	return nil
}
