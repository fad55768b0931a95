package main

import (
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/p2pnode/p2pnode/cmd/p2pnode/config"
	"github.com/p2pnode/p2pnode/node"
	"github.com/p2pnode/p2pnode/overlay"
)

// nodeFlags are the flags of every command that runs a node. Set flags
// override config.toml.
type nodeFlags struct {
	listen     []string
	bootstrap  []string
	natPortMap bool
	metrics    string

	fs         *pflag.FlagSet
	listenName string
}

// register adds the flags; listenName is "listen", or "p2p-listen" for
// forward, whose --listen is the local TCP address.
func (f *nodeFlags) register(fs *pflag.FlagSet, listenName string) {
	f.fs = fs
	fs.StringArrayVar(&f.listen, listenName, nil, "multiaddr to listen on, e.g. /ip4/0.0.0.0/tcp/4001 (repeatable; default from config.toml)")
	fs.StringArrayVar(&f.bootstrap, "bootstrap", nil, "bootstrap peer multiaddr ending in /p2p/PEERID (repeatable; default from config.toml, else libp2p's public bootstrap peers)")
	fs.BoolVar(&f.natPortMap, "nat-port-map", true, "ask the router for a port mapping with UPnP/NAT-PMP (default from config.toml)")

	f.listenName = listenName
}

// registerMetrics adds --metrics, for the commands that run for a while.
func (f *nodeFlags) registerMetrics(fs *pflag.FlagSet) {
	fs.StringVar(&f.metrics, "metrics", "", "serve Prometheus metrics at http://HOST:PORT/metrics")
}

// startMetrics serves metrics if --metrics was given; stop is never nil.
func (f *nodeFlags) startMetrics(g *globalFlags) (stop func(), err error) {
	if f.metrics == "" {
		return func() {}, nil
	}
	return serveMetrics(g, f.metrics)
}

// nodeConfig turns config.toml plus flags into a node.Config. defaultListen,
// when not nil, replaces the config file's listen addresses unless a flag
// names some (forward uses ephemeral ports). Every error is bad input.
func (f *nodeFlags) nodeConfig(g *globalFlags, file *config.File, listen []string, defaultListen []ma.Multiaddr) (node.Config, error) {
	cfg := node.Config{
		Logger:            g.logger,
		NATPortMap:        file.Node.NATPortMap,
		DHTProtocolPrefix: protocol.ID(file.Node.DHTProtocolPrefix),
		// One stream per forwarded TCP connection: a forward may carry
		// thousands at once (a browser, a load test); past that, the
		// resource manager refuses more from that peer.
		StreamLimits: []node.StreamLimit{{
			Protocol: overlay.ProtocolID, Service: overlay.ServiceName,
			// 2048: the 256 MiB target holds for ~1,000-1,300 busy
			// connections (about 170 KiB each, bench/capacity.sh).
			PerPeer: 2048, Total: 16384,
		}},
	}
	if f.metrics != "" {
		cfg.Metrics = prometheus.DefaultRegisterer
	}
	if f.fs.Changed("nat-port-map") {
		cfg.NATPortMap = f.natPortMap
	}

	switch {
	case len(f.listen) > 0:
		for _, s := range f.listen {
			m, err := config.ParseListenAddr(s)
			if err != nil {
				return cfg, usagef("bad --%s: %v", f.listenName, err)
			}
			cfg.ListenAddrs = append(cfg.ListenAddrs, m)
		}
	case defaultListen != nil:
		cfg.ListenAddrs = defaultListen
	default:
		addrs, err := config.ParseListenAddrs(listen)
		if err != nil {
			return cfg, asUsage(err)
		}
		cfg.ListenAddrs = addrs
	}

	if len(f.bootstrap) > 0 {
		peers, err := parseBootstrapFlags(f.bootstrap)
		if err != nil {
			return cfg, err
		}
		cfg.BootstrapPeers = peers
	} else {
		peers, err := file.Node.BootstrapPeers()
		if err != nil {
			return cfg, asUsage(err)
		}
		cfg.BootstrapPeers = peers
	}
	return cfg, nil
}

func parseBootstrapFlags(ss []string) ([]peer.AddrInfo, error) {
	addrs := make([]ma.Multiaddr, 0, len(ss))
	for _, s := range ss {
		m, _, err := config.ParseBootstrapAddr(s)
		if err != nil {
			return nil, usagef("bad --bootstrap: %v", err)
		}
		addrs = append(addrs, m)
	}
	peers, err := peer.AddrInfosFromP2pAddrs(addrs...)
	if err != nil {
		return nil, usagef("bad --bootstrap: %v", err)
	}
	return peers, nil
}

// startClientNode starts a short-lived node that only dials out (forward,
// ping, find): ephemeral ports unless --p2p-listen, DHT client, no public
// addresses advertised.
func (f *nodeFlags) startClientNode(g *globalFlags) (*node.Node, error) {
	file, err := g.loadConfig()
	if err != nil {
		return nil, err
	}
	cfg, err := f.nodeConfig(g, file, nil, node.EphemeralListenAddrs())
	if err != nil {
		return nil, err
	}
	key, err := g.identity()
	if err != nil {
		return nil, err
	}
	cfg.Identity = key
	cfg.DHTMode = node.DHTModeClient
	cfg.ClientOnly = true
	return node.New(cfg)
}
