package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/spf13/cobra"

	"github.com/p2pnode/p2pnode/cmd/p2pnode/config"
	"github.com/p2pnode/p2pnode/cmd/p2pnode/control"
	"github.com/p2pnode/p2pnode/node"
	"github.com/p2pnode/p2pnode/overlay"
)

type forwardArgs struct {
	node    nodeFlags
	listen  string
	stdio   bool
	timeout time.Duration
	grace   time.Duration
	udp     bool
	persist bool
	// closeAddr is --close HOST:PORT.
	closeAddr string
}

func newForwardCmd(g *globalFlags) *cobra.Command {
	var a forwardArgs
	cmd := &cobra.Command{
		Use:   "forward PEERID:SERVICE [--listen HOST:PORT] [--stdio]",
		Short: "Reach SERVICE (a name, or a port number) on PEERID through a local port",
		Long: `forward finds PEERID through the DHT, connects to it (directly, or through a
relay and then by hole punching), and carries TCP connections to SERVICE on
that peer, like ssh -L. With --listen it accepts on HOST:PORT; without, on a
free 127.0.0.1 port that it prints. Each TCP connection is one libp2p stream.

--stdio carries one connection over standard input and output, for ssh:
  ssh -o ProxyCommand='p2pnode forward --stdio %n:22' PEERID
(%n is the host name as typed; ssh lower-cases %h, which breaks a base58 peer
ID. With the lower-case form from 'p2pnode id --cid', %h works as well.)`,
		Example: `  p2pnode forward 12D3KooW...:ssh --listen 127.0.0.1:2222
  ssh -o ProxyCommand='p2pnode forward --stdio %n:22' 12D3KooW...`,
		Args: cobraArgs(func(cmd *cobra.Command, args []string) error {
			if a.closeAddr != "" {
				return cobra.NoArgs(cmd, args)
			}
			return cobra.ExactArgs(1)(cmd, args)
		}),
		RunE: func(cmd *cobra.Command, args []string) error {
			if a.closeAddr != "" {
				return a.closeForward(cmd, g)
			}
			return a.run(cmd, g, args[0])
		},
	}
	f := cmd.Flags()
	f.BoolVar(&a.persist, "persist", false, "have the running serve daemon keep this forward after the command exits (stop it with --close)")
	f.StringVar(&a.closeAddr, "close", "", "stop the persistent forward that listens on HOST:PORT")
	f.StringVar(&a.listen, "listen", "127.0.0.1:0", "local TCP address to accept connections on (port 0: a free port, printed)")
	f.BoolVar(&a.stdio, "stdio", false, "carry one connection over stdin/stdout (for ssh ProxyCommand)")
	f.BoolVar(&a.udp, "udp", false, "forward UDP datagrams to a UDP service (exposed with --expose udp:NAME=HOST:PORT)")
	f.DurationVar(&a.timeout, "timeout", time.Minute, "how long to look for and connect to the peer")
	f.DurationVar(&a.grace, "grace", 10*time.Second, "on SIGINT/SIGTERM, how long open connections may take to finish (a second signal exits at once)")
	a.node.register(f, "p2p-listen")
	a.node.registerMetrics(f)
	return cmd
}

// warnRelayLimit says, once, that the path to p is a limited relayed
// connection: data through it stops at the relay's limit, which a user
// would otherwise only see as connections that break.
func warnRelayLimit(g *globalFlags, n *node.Node, p peer.ID) {
	limited, dur, data := n.RelayLimit(p)
	if !limited {
		return
	}
	g.logger.Warn(fmt.Sprintf("hole punching failed and the relay limits each relayed connection to %s and %d bytes each way; "+
		"connections will be cut at that limit. Ask the relay's operator to authorize both peers (relay_allow) for unlimited relaying", dur, data),
		"peer", p)
}

// target is what forward reaches: SERVICE on a peer given by its peer ID,
// or on one of the peers that advertise a name on the DHT.
type target struct {
	peer    peer.ID // set for PEERID:SERVICE
	name    string  // set for NAME/SERVICE
	service string
}

// parseTarget reads PEERID:SERVICE or NAME/SERVICE. A peer ID never
// contains a colon or a slash.
func parseTarget(s string) (target, error) {
	if name, svc, ok := strings.Cut(s, "/"); ok {
		if err := config.CheckServiceName(name); err != nil {
			return target{}, usagef("bad target %q: name %v", s, err)
		}
		if err := config.CheckServiceName(svc); err != nil {
			return target{}, usagef("bad target %q: service %v", s, err)
		}
		return target{name: name, service: svc}, nil
	}
	idStr, svc, ok := strings.Cut(s, ":")
	if !ok || idStr == "" || svc == "" {
		return target{}, usagef("bad target %q: expected PEERID:SERVICE (e.g. 12D3KooW...:22) or NAME/SERVICE (e.g. movie-night/web)", s)
	}
	id, err := config.ParsePeerID(idStr)
	if err != nil {
		return target{}, usagef("bad target %q: %v", s, err)
	}
	return target{peer: id, service: svc}, nil
}

// resolve connects to the target's peer. For a name, it tries the peers that
// advertise it, in the DHT's order, and takes the first that answers and
// lets this node use the service; it says which one it chose, since a name
// is only a hint.
func (t target) resolve(ctx context.Context, g *globalFlags, n *node.Node) (peer.ID, node.Path, error) {
	if t.name == "" {
		path, err := n.Connect(ctx, t.peer)
		return t.peer, path, err
	}
	peers, err := findByName(ctx, g, n, t.name)
	if err != nil {
		return "", "", err
	}
	if len(peers) == 0 {
		return "", "", fmt.Errorf("no peer advertises name %q on the DHT (asked through bootstrap peers %s)", t.name, describePeers(n.BootstrapPeers()))
	}
	var tried []string
	for _, ai := range peers {
		n.Host.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.TempAddrTTL)
		path, err := n.Connect(ctx, ai.ID)
		if err == nil {
			var svcs []string
			svcs, err = overlay.ListServices(ctx, n.Host, ai.ID, overlay.WithAllowLimitedConn())
			if err == nil && !slices.Contains(svcs, t.service) {
				err = fmt.Errorf("it offers this peer %v, not %q", svcs, t.service)
			}
		}
		if err != nil {
			tried = append(tried, fmt.Sprintf("%s (%v)", ai.ID, err))
			continue
		}
		g.logger.Warn(fmt.Sprintf("name %q: chose peer %s of %d advertising it; a name is a hint, not an identity", t.name, ai.ID, len(peers)), "peer", ai.ID)
		return ai.ID, path, nil
	}
	return "", "", fmt.Errorf("none of the %d peers advertising name %q offers service %q to this peer: %s", len(peers), t.name, t.service, strings.Join(tried, "; "))
}

// findByName returns the peers to try for name: the ones config.toml pins
// it to ([names]), if any, else the ones that advertise it on the DHT.
func findByName(ctx context.Context, g *globalFlags, n *node.Node, name string) ([]peer.AddrInfo, error) {
	file, err := g.loadConfig()
	if err != nil {
		return nil, err
	}
	pins, err := file.PinnedPeers(name)
	if err != nil {
		return nil, asUsage(err)
	}
	if pins == nil {
		return n.FindByName(ctx, name)
	}
	g.logger.Info("name is pinned in config.toml; using those peers only", "name", name, "peers", len(pins))
	out := make([]peer.AddrInfo, len(pins))
	for i, p := range pins {
		out[i] = peer.AddrInfo{ID: p}
	}
	return out, nil
}

// describePeers lists peer IDs for messages.
func describePeers(ais []peer.AddrInfo) string {
	ids := make([]string, len(ais))
	for i, ai := range ais {
		ids[i] = ai.ID.String()
	}
	return strings.Join(ids, ", ")
}

func (a *forwardArgs) run(cmd *cobra.Command, g *globalFlags, target string) error {
	t, err := parseTarget(target)
	if err != nil {
		return err
	}
	if a.timeout <= 0 {
		return usagef("bad --timeout %s: must be positive, e.g. 30s", a.timeout)
	}
	if a.grace < 0 {
		return usagef("bad --grace %s: must be zero or positive, e.g. 10s", a.grace)
	}
	if a.persist && (a.stdio || a.udp) {
		return usagef("--persist keeps a TCP --listen forward in the daemon; it does not go with --stdio or --udp")
	}
	if a.stdio && a.udp {
		return usagef("--stdio and --udp exclude each other: --stdio carries one TCP connection")
	}
	if a.stdio && cmd.Flags().Changed("listen") {
		return usagef("--stdio and --listen exclude each other: --stdio carries one connection over stdin/stdout")
	}
	if !a.stdio {
		if _, _, err := net.SplitHostPort(a.listen); err != nil {
			return usagef("bad --listen %q: expected HOST:PORT, e.g. 127.0.0.1:2222 (%v)", a.listen, err)
		}
	}
	if a.stdio && g.verbose == 0 {
		// ssh shows a ProxyCommand's stderr in the user's terminal: only
		// say something when something is wrong.
		g.level.Set(slog.LevelWarn)
	}
	ctx := cmd.Context()
	if c, err := control.Dial(g.home); err == nil {
		defer c.Close()
		return a.runThroughDaemon(ctx, cmd, g, c, target, t)
	} else if !errors.Is(err, control.ErrNotRunning) {
		return err
	} else if a.persist {
		return fmt.Errorf("--persist needs a running `p2pnode serve` in %s to keep the forward", g.home)
	}

	stopMetrics, err := a.node.startMetrics(g)
	if err != nil {
		return err
	}
	defer stopMetrics()
	m, err := forwardMetrics(&a.node)
	if err != nil {
		return err
	}
	n, err := a.node.startClientNode(g)
	if err != nil {
		return err
	}
	defer n.Close()
	f := &forwarding{g: g, n: n, timeout: a.timeout, grace: a.grace, metrics: m}
	if a.stdio {
		fw, err := f.connect(ctx, t)
		if err != nil {
			return err
		}
		return fw.Stdio(ctx, os.Stdin, os.Stdout)
	}
	stopLog := context.AfterFunc(ctx, func() {
		g.logger.Info("shutting down: no new connections; waiting for open ones", "grace", a.grace)
	})
	defer stopLog()
	listen := f.ForwardListen
	if a.udp {
		listen = f.ForwardUDP
	}
	err = listen(ctx, target, a.listen, func(addr string, p peer.ID) {
		printForwarding(cmd.OutOrStdout(), addr, p, t, a.udp)
	})
	if err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// printForwarding prints the lines users and scripts read: where to
// connect, and for a name, which peer was chosen.
func printForwarding(w io.Writer, addr string, p peer.ID, t target, udp bool) {
	proto := ""
	if udp {
		proto = "udp "
	}
	fmt.Fprintf(w, "forwarding %s%s -> %s:%s\n", proto, addr, p, t.service)
	if t.name != "" {
		fmt.Fprintf(w, "name %s: peer %s\n", t.name, p)
	}
}

// runThroughDaemon forwards through the p2pnode daemon running in the same
// home (DESIGN: one peer ID online once): the daemon's node carries the
// connections, and the forward lasts as long as this command.
// closeForward stops a persistent forward in the daemon.
func (a *forwardArgs) closeForward(cmd *cobra.Command, g *globalFlags) error {
	c, err := control.Dial(g.home)
	if errors.Is(err, control.ErrNotRunning) {
		return fmt.Errorf("no p2pnode serve is running in %s, so no persistent forward either", g.home)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.CloseForward(cmd.Context(), a.closeAddr); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "closed forward on %s\n", a.closeAddr)
	return nil
}

func (a *forwardArgs) runThroughDaemon(ctx context.Context, cmd *cobra.Command, g *globalFlags, c *control.Client, raw string, t target) error {
	for _, name := range []string{a.node.listenName, "bootstrap", "nat-port-map", "metrics"} {
		if cmd.Flags().Changed(name) {
			g.logger.Warn("a p2pnode daemon runs in the home directory: forwarding through it, --"+name+" does not apply", "home", g.home)
		}
	}
	g.logger.Info("forwarding through the p2pnode daemon", "home", g.home)
	if a.persist {
		addr, p, err := c.ForwardPersist(ctx, raw, a.listen)
		if err != nil {
			return err
		}
		printForwarding(cmd.OutOrStdout(), addr, p, t, false)
		fmt.Fprintf(cmd.OutOrStdout(), "the daemon keeps this forward; stop it with: p2pnode forward --close %s\n", addr)
		return nil
	}
	if a.stdio {
		return c.ForwardStdio(ctx, raw, os.Stdin, os.Stdout)
	}
	return c.ForwardListen(ctx, raw, a.listen, a.udp, func(addr string, p peer.ID) {
		printForwarding(cmd.OutOrStdout(), addr, p, t, a.udp)
	})
}

// forwarding sets up forwards on a node: the daemon's, or a forward
// command's own.
type forwarding struct {
	g       *globalFlags
	n       *node.Node
	timeout time.Duration // finding and connecting to the peer
	grace   time.Duration
	metrics *overlay.Metrics
}

// connect finds and connects to t's peer and returns a Forwarder for it.
func (f *forwarding) connect(ctx context.Context, t target) (*overlay.Forwarder, error) {
	cctx, cancel := context.WithTimeout(ctx, f.timeout)
	p, path, err := t.resolve(cctx, f.g, f.n)
	cancel()
	if err != nil {
		return nil, err
	}
	f.g.logger.Info("connected", "peer", p, "path", path)
	warnRelayLimit(f.g, f.n, p)
	f.n.Host.ConnManager().Protect(p, "p2pnode-forward")
	n := f.n
	return &overlay.Forwarder{
		Host: n.Host, Peer: p, Service: t.service, Logger: f.g.logger,
		// Streams go over a direct connection when there is one; the
		// relayed one carries them only when hole punching failed.
		DialOptions:   []overlay.DialOption{overlay.WithAllowLimitedConn()},
		ShutdownGrace: f.grace,
		Metrics:       f.metrics,
		Prepare: func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, f.timeout)
			defer cancel()
			_, err := n.Reconnect(ctx, p)
			return err
		},
	}, nil
}

// connectRaw is connect for a target given as text ("PEERID:SERVICE" or
// "NAME/SERVICE"), as the control socket passes it.
func (f *forwarding) connectRaw(ctx context.Context, raw string) (*overlay.Forwarder, error) {
	t, err := parseTarget(raw)
	if err != nil {
		return nil, err
	}
	return f.connect(ctx, t)
}

// ForwardListen implements control.Forwarder: a TCP forward from listen.
func (f *forwarding) ForwardListen(ctx context.Context, raw, listen string, ready func(addr string, p peer.ID)) error {
	fw, err := f.connectRaw(ctx, raw)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", listen, err)
	}
	ready(ln.Addr().String(), fw.Peer)
	return fw.Serve(ctx, ln)
}

// ForwardUDP implements control.Forwarder: a UDP forward from listen.
func (f *forwarding) ForwardUDP(ctx context.Context, raw, listen string, ready func(addr string, p peer.ID)) error {
	fw, err := f.connectRaw(ctx, raw)
	if err != nil {
		return err
	}
	pc, err := net.ListenPacket("udp", listen)
	if err != nil {
		return fmt.Errorf("listen on udp %s: %w", listen, err)
	}
	ready(pc.LocalAddr().String(), fw.Peer)
	return fw.ServeUDP(ctx, pc)
}

// ForwardStream implements control.Forwarder: one stream, for --stdio.
func (f *forwarding) ForwardStream(ctx context.Context, raw string) (network.Stream, error) {
	fw, err := f.connectRaw(ctx, raw)
	if err != nil {
		return nil, err
	}
	return overlay.Dial(ctx, fw.Host, fw.Peer, fw.Service, fw.DialOptions...)
}
