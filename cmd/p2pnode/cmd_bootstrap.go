package main

import (
	"errors"
	"fmt"
	"net/netip"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/spf13/cobra"

	"github.com/p2pnode/p2pnode/bootstrap"
	"github.com/p2pnode/p2pnode/config"
	"github.com/p2pnode/p2pnode/node"
)

type bootstrapArgs struct {
	node        nodeFlags
	relayAllow  []string
	maxPeers    int
	noSTUN      bool
	stunPort    int
	stunAltPort int
	stunAltIP   string
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
	cmd.Flags().BoolVar(&a.noSTUN, "no-stun", false, "run no STUN server (the NAT check of 'p2pnode nat' on other peers)")
	cmd.Flags().IntVar(&a.stunPort, "stun-port", bootstrap.DefaultSTUNPort, "UDP port of the STUN server (0: any free port)")
	cmd.Flags().IntVar(&a.stunAltPort, "stun-alt-port", bootstrap.DefaultSTUNAltPort, "alternate UDP port of the STUN server, for RFC 5780's change-port test (0: any free port)")
	cmd.Flags().StringVar(&a.stunAltIP, "stun-alt-ip", "", "a second IPv4 address of this host, for RFC 5780's change-IP test (default: a second specific --listen address)")
	return cmd
}

// stunConfig is the STUN server's configuration from flags over
// [bootstrap], for a node listening on listen; nil when it is off.
// explicit says whether the user chose its ports: a busy default port is
// then only a warning.
func (a *bootstrapArgs) stunConfig(cmd *cobra.Command, b config.Bootstrap) (stun func(listen []ma.Multiaddr) (*bootstrap.STUNConfig, error), explicit bool, err error) {
	f := cmd.Flags()
	if a.noSTUN || !f.Changed("no-stun") && b.STUN != nil && !*b.STUN {
		return func([]ma.Multiaddr) (*bootstrap.STUNConfig, error) { return nil, nil }, false, nil
	}
	port, altPort, altIP := a.stunPort, a.stunAltPort, a.stunAltIP
	if !f.Changed("stun-port") && b.STUNPort != 0 {
		port = b.STUNPort
	}
	if !f.Changed("stun-alt-port") && b.STUNAltPort != 0 {
		altPort = b.STUNAltPort
	}
	if !f.Changed("stun-alt-ip") && b.STUNAltIP != "" {
		altIP = b.STUNAltIP
	}
	if port < 0 || port > 65535 {
		return nil, false, usagef("bad --stun-port %d: must be a UDP port from 0 to 65535", port)
	}
	if altPort < 0 || altPort > 65535 {
		return nil, false, usagef("bad --stun-alt-port %d: must be a UDP port from 0 to 65535", altPort)
	}
	if altIP != "" {
		if err := node.CheckSTUNAltIP(altIP); err != nil {
			return nil, false, usagef("bad --stun-alt-ip: %v", err)
		}
	}
	explicit = f.Changed("stun-port") || f.Changed("stun-alt-port") || b.STUNPort != 0 || b.STUNAltPort != 0
	return func(listen []ma.Multiaddr) (*bootstrap.STUNConfig, error) {
		primary, alt, ok := bootstrap.STUNIPs(listen)
		if !ok {
			return nil, errors.New("STUN server: this host has no IPv4 address; run with --no-stun")
		}
		if altIP != "" {
			alt = netip.MustParseAddr(altIP).Unmap()
		}
		return &bootstrap.STUNConfig{IP: primary, AltIP: alt, Port: uint16(port), AltPort: uint16(altPort)}, nil
	}, explicit, nil
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
	stunFor, stunExplicit, err := a.stunConfig(cmd, file.Bootstrap)
	if err != nil {
		return err
	}
	var listen []ma.Multiaddr
	run, err := startNode(g, &a.node, roleBootstrap, file, func(cfg *node.Config) {
		listen = cfg.ListenAddrs
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
	stun, err := stunFor(listen)
	if err != nil {
		return err
	}
	svc, err := bootstrap.Start(run.node.Host, bootstrap.Config{Logger: g.logger, RelayAuthorized: authorized, Relay: bootstrap.Resources(a.maxPeers),
		STUN: stun, STUNOptional: !stunExplicit})
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
