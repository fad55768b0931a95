package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/p2pnode/p2pnode/bootstrap"
	"github.com/p2pnode/p2pnode/cmd/p2pnode/config"
	"github.com/p2pnode/p2pnode/node"
)

func newBootstrapCmd(g *globalFlags) *cobra.Command {
	var nf nodeFlags
	var relayAllow []string
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
		RunE: func(cmd *cobra.Command, _ []string) error {
			file, err := g.loadConfig()
			if err != nil {
				return err
			}
			listen := file.Node.Listen
			if file.Bootstrap.Listen != nil {
				listen = file.Bootstrap.Listen
			}
			cfg, err := nf.nodeConfig(g, file, listen, nil)
			if err != nil {
				return err
			}
			authorized, err := file.Bootstrap.RelayAllowedPeers()
			if err != nil {
				return asUsage(err)
			}
			for _, s := range relayAllow {
				id, err := config.ParsePeerID(s)
				if err != nil {
					return usagef("bad --relay-allow: %v", err)
				}
				authorized = append(authorized, id)
			}
			key, err := g.identity()
			if err != nil {
				return err
			}
			cfg.Identity = key
			cfg.DHTMode = node.DHTModeServer
			cfg.Standalone = len(cfg.BootstrapPeers) == 0
			cfg.HostOptions = bootstrap.HostOptions()

			stopMetrics, err := nf.startMetrics(g)
			if err != nil {
				return err
			}
			defer stopMetrics()
			n, stop, err := startDaemon(g, cfg, nil)
			if err != nil {
				return err
			}
			defer stop()
			svc, err := bootstrap.Start(n.Host, bootstrap.Config{Logger: g.logger, RelayAuthorized: authorized})
			if err != nil {
				return err
			}
			defer svc.Close()

			for _, a := range n.FullAddrs() {
				fmt.Fprintln(cmd.OutOrStdout(), a)
			}
			g.logger.Info("bootstrap node running", "peer_id", n.ID())
			<-cmd.Context().Done()
			g.logger.Info("shutting down")
			return nil
		},
	}
	nf.register(cmd.Flags(), "listen")
	nf.registerMetrics(cmd.Flags())
	cmd.Flags().StringArrayVar(&relayAllow, "relay-allow", nil, "peer ID whose relayed connections to other --relay-allow peers are not limited (repeatable; adds to [bootstrap] relay_allow)")
	return cmd
}
