package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/p2pnode/p2pnode/cmd/p2pnode/daemon"
	"github.com/p2pnode/p2pnode/config"
	"github.com/p2pnode/p2pnode/control"
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
// forward, find and ping, whose --listen (if any) is a local address.
func (f *nodeFlags) register(fs *pflag.FlagSet, listenName string, withMetrics bool) {
	f.fs, f.listenName = fs, listenName
	fs.StringArrayVar(&f.listen, listenName, nil, "multiaddr to listen on, e.g. /ip4/0.0.0.0/tcp/4001 (repeatable; default from config.toml)")
	fs.StringArrayVar(&f.bootstrap, "bootstrap", nil, "bootstrap peer multiaddr ending in /p2p/PEERID (repeatable; default from config.toml, else libp2p's public bootstrap peers)")
	fs.BoolVar(&f.natPortMap, "nat-port-map", true, "ask the router for a port mapping with UPnP/NAT-PMP (default from config.toml)")
	if withMetrics {
		fs.StringVar(&f.metrics, "metrics", "", "serve Prometheus metrics at http://HOST:PORT/metrics")
	}
}

// changed lists the node flags given on the command line.
func (f *nodeFlags) changed() []string {
	var out []string
	if f == nil {
		return nil
	}
	for _, name := range []string{f.listenName, "bootstrap", "nat-port-map", "metrics"} {
		if fl := f.fs.Lookup(name); fl != nil && fl.Changed {
			out = append(out, name)
		}
	}
	return out
}

// role is what a node started by a command is for.
type role int

const (
	roleClient    role = iota // forward, find, ping without a daemon: dials out only
	roleServe                 // the machine's daemon
	roleBootstrap             // a public bootstrap node, also a daemon
)

// nodeConfig turns config.toml plus flags into the node.Config of role.
// Every error is bad input.
func (f *nodeFlags) nodeConfig(g *globalFlags, file *config.File, r role) (node.Config, error) {
	cfg := node.Config{
		Logger:            g.logger,
		NATPortMap:        file.Node.NATPortMap,
		DHTProtocolPrefix: protocol.ID(file.Node.DHTProtocolPrefix),
		// One stream per forwarded TCP connection: a forward may carry
		// thousands at once (a browser, a load test); past that, the
		// resource manager refuses more from that peer. 2048: the
		// 256 MiB target holds for ~1,000-1,300 busy connections (about
		// 170 KiB each, bench/capacity.sh).
		StreamLimits: []node.StreamLimit{{Protocol: overlay.ProtocolID, Service: overlay.ServiceName, PerPeer: 2048, Total: 16384}},
	}
	if f.fs.Changed("nat-port-map") {
		cfg.NATPortMap = f.natPortMap
	}
	cfg.NoPunchProtocol = file.Node.BirthdayPunch != nil && !*file.Node.BirthdayPunch
	if _, _, err := net.SplitHostPort(f.metrics); f.metrics != "" && err != nil {
		return cfg, usagef("bad --metrics %q: expected HOST:PORT, e.g. 127.0.0.1:9090 (%v)", f.metrics, err)
	}
	listen := file.Node.Listen
	switch r {
	case roleClient:
		// Ephemeral ports, so as not to clash with a daemon on 4001.
		cfg.ListenAddrs = node.EphemeralListenAddrs()
		cfg.DHTMode, cfg.ClientOnly = node.DHTModeClient, true
		cfg.NATMapping = true
	case roleServe:
		cfg.ReserveRelays, cfg.NATChecks = true, true
	case roleBootstrap:
		if file.Bootstrap.Listen != nil {
			listen = file.Bootstrap.Listen
		}
		cfg.DHTMode = node.DHTModeServer
	}
	var err error
	if len(f.listen) > 0 || r != roleClient {
		if cfg.ListenAddrs, err = f.listenAddrs(listen); err != nil {
			return cfg, err
		}
	}
	if len(f.bootstrap) > 0 {
		cfg.BootstrapPeers, err = parseBootstrapFlags(f.bootstrap)
	} else if cfg.BootstrapPeers, err = file.Node.BootstrapPeers(); err != nil {
		err = asUsage(err)
	}
	cfg.Standalone = r == roleBootstrap && len(cfg.BootstrapPeers) == 0
	cfg.STUNServers = resolveFileSTUN(g.logger, file.NAT.STUN)
	return cfg, err
}

// listenAddrs returns the --listen flags if given, else the file's listen
// (the role's list); both errors are usage errors.
func (f *nodeFlags) listenAddrs(fromFile []string) ([]ma.Multiaddr, error) {
	if len(f.listen) == 0 {
		addrs, err := config.ParseListenAddrs(fromFile)
		return addrs, asUsage(err)
	}
	addrs := make([]ma.Multiaddr, 0, len(f.listen))
	for _, s := range f.listen {
		m, err := node.ParseListenAddr(s)
		if err != nil {
			return nil, usagef("bad --%s: %v", f.listenName, err)
		}
		addrs = append(addrs, m)
	}
	return addrs, nil
}

// resolveFileSTUN resolves [nat] stun. The file's check validated the
// entries; a name that does not resolve now costs only that server.
func resolveFileSTUN(log *slog.Logger, servers []string) []netip.AddrPort {
	var out []netip.AddrPort
	for _, s := range servers {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ap, err := node.ResolveSTUNServer(ctx, s)
		cancel()
		if err != nil {
			log.Warn("skipping a STUN server of [nat] stun", "error", err)
			continue
		}
		out = append(out, ap)
	}
	return out
}

func parseBootstrapFlags(ss []string) ([]peer.AddrInfo, error) {
	addrs := make([]ma.Multiaddr, 0, len(ss))
	for _, s := range ss {
		m, _, err := node.ParseBootstrapAddr(s)
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

// running is a node a command started, with its API; stop undoes start in
// reverse order (control socket, API, node, metrics).
type running struct {
	node    *node.Node
	api     *daemon.Local
	metrics *overlay.Metrics
	stops   []func()
}

func (r *running) stop() {
	for i := len(r.stops) - 1; i >= 0; i-- {
		r.stops[i]()
	}
}

// startNode is the one start-up sequence of every node-running command:
// config, node config by role, identity, control socket (daemons), metrics,
// node, API. tune, if not nil, adjusts the node config for the role's own
// flags. A daemon takes the home's control socket first, so that a second
// daemon in the same home stops before it binds the first one's ports.
func startNode(g *globalFlags, f *nodeFlags, r role, file *config.File, tune func(*node.Config)) (_ *running, err error) {
	cfg, err := f.nodeConfig(g, file, r)
	if err != nil {
		return nil, err
	}
	if tune != nil {
		tune(&cfg)
	}
	if cfg.Identity, err = g.identity(); err != nil {
		return nil, err
	}
	names, err := pinnedNames(file)
	if err != nil {
		return nil, err
	}
	run := &running{}
	defer func() {
		if err != nil {
			run.stop()
		}
	}()
	var ctl *control.Server
	if r != roleClient {
		if ctl, err = control.Listen(g.home, g.logger); err != nil {
			return nil, err
		}
		run.stops = append(run.stops, func() { ctl.Close() })
	}
	if f.metrics != "" {
		reg, stop, err := serveMetrics(g, f.metrics)
		if err != nil {
			return nil, err
		}
		run.stops = append(run.stops, stop)
		cfg.Metrics = reg
		if run.metrics, err = overlay.NewMetrics(reg); err != nil {
			return nil, err
		}
	}
	if run.node, err = node.New(cfg); err != nil {
		return nil, err
	}
	run.stops = append(run.stops, func() { run.node.Close() })
	run.api = daemon.NewLocal(run.node, daemon.Config{Logger: g.logger, Metrics: run.metrics, Names: names, KeepsForwards: r != roleClient})
	run.stops = append(run.stops, func() { run.api.Close() })
	if ctl != nil {
		ctl.Serve(run.api)
	}
	return run, nil
}

// pinnedNames returns config.toml's [names], parsed (Load checked them).
func pinnedNames(file *config.File) (map[string][]peer.ID, error) {
	names := make(map[string][]peer.ID, len(file.Names))
	for name := range file.Names {
		ids, err := file.PinnedPeers(name)
		if err != nil {
			return nil, asUsage(err)
		}
		names[name] = ids
	}
	return names, nil
}

// useAPI is the one dispatch of the commands that work through a running
// daemon when there is one (DESIGN: one peer ID online once): it returns the
// daemon's API, or, when none runs, the API of a client node of the
// command's own, or the error noDaemon when the command needs the daemon
// (noDaemon empty: it does not). doing says what goes through the daemon,
// for the log (empty: nothing worth a line). close is never nil.
func useAPI(cmd *cobra.Command, g *globalFlags, f *nodeFlags, doing, noDaemon string) (api control.API, close func(), err error) {
	c, err := control.Dial(g.home)
	switch {
	case err == nil:
		for _, name := range f.changed() {
			g.logger.Warn("a p2pnode daemon runs in the home directory: "+doing+" through it, --"+name+" does not apply", "home", g.home)
		}
		if doing != "" {
			g.logger.Info(doing+" through the p2pnode daemon", "home", g.home)
		}
		return c, c.Close, nil
	case !errors.Is(err, control.ErrNotRunning):
		return nil, nil, err
	case noDaemon != "":
		return nil, nil, errors.New(noDaemon)
	}
	file, err := g.loadConfig()
	if err != nil {
		return nil, nil, err
	}
	run, err := startNode(g, f, roleClient, file, nil)
	if err != nil {
		return nil, nil, err
	}
	return run.api, run.stop, nil
}

// noDaemonf formats useAPI's noDaemon message with the home directory.
func noDaemonf(g *globalFlags, format string) string { return fmt.Sprintf(format, g.home) }
