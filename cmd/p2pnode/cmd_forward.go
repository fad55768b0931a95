package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/p2pnode/p2pnode/cmd/p2pnode/config"
	"github.com/p2pnode/p2pnode/node"
	"github.com/p2pnode/p2pnode/overlay"
)

type forwardArgs struct {
	node    nodeFlags
	listen  string
	stdio   bool
	timeout time.Duration
	grace   time.Duration
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
		Args: cobraArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.run(cmd, g, args[0])
		},
	}
	f := cmd.Flags()
	f.StringVar(&a.listen, "listen", "127.0.0.1:0", "local TCP address to accept connections on (port 0: a free port, printed)")
	f.BoolVar(&a.stdio, "stdio", false, "carry one connection over stdin/stdout (for ssh ProxyCommand)")
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

// parseTarget splits PEERID:SERVICE. A peer ID never contains a colon.
func parseTarget(s string) (peer.ID, string, error) {
	idStr, svc, ok := strings.Cut(s, ":")
	if !ok || idStr == "" || svc == "" {
		return "", "", usagef("bad target %q: expected PEERID:SERVICE, e.g. 12D3KooW...:22 or 12D3KooW...:ssh", s)
	}
	id, err := config.ParsePeerID(idStr)
	if err != nil {
		return "", "", usagef("bad target %q: %v", s, err)
	}
	return id, svc, nil
}

func (a *forwardArgs) run(cmd *cobra.Command, g *globalFlags, target string) error {
	p, svc, err := parseTarget(target)
	if err != nil {
		return err
	}
	if a.timeout <= 0 {
		return usagef("bad --timeout %s: must be positive, e.g. 30s", a.timeout)
	}
	if a.grace < 0 {
		return usagef("bad --grace %s: must be zero or positive, e.g. 10s", a.grace)
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
	file, err := g.loadConfig()
	if err != nil {
		return err
	}
	cfg, err := a.node.nodeConfig(g, file, nil, node.EphemeralListenAddrs())
	if err != nil {
		return err
	}
	key, err := g.identity()
	if err != nil {
		return err
	}
	cfg.Identity = key
	// A forward is a client of the DHT: it asks, it does not serve.
	cfg.DHTMode = node.DHTModeClient
	cfg.ClientOnly = true

	stopMetrics, err := a.node.startMetrics(g)
	if err != nil {
		return err
	}
	defer stopMetrics()
	m, err := forwardMetrics(&a.node)
	if err != nil {
		return err
	}
	n, err := node.New(cfg)
	if err != nil {
		return err
	}
	defer n.Close()

	ctx := cmd.Context()
	cctx, cancel := context.WithTimeout(ctx, a.timeout)
	path, err := n.Connect(cctx, p)
	cancel()
	if err != nil {
		return err
	}
	g.logger.Info("connected", "peer", p, "path", path)
	warnRelayLimit(g, n, p)
	n.Host.ConnManager().Protect(p, "p2pnode-forward")
	fw := &overlay.Forwarder{
		Host: n.Host, Peer: p, Service: svc, Logger: g.logger,
		// Streams go over a direct connection when there is one; the
		// relayed one carries them only when hole punching failed.
		DialOptions:   []overlay.DialOption{overlay.WithAllowLimitedConn()},
		ShutdownGrace: a.grace,
		Metrics:       m,
		Prepare: func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, a.timeout)
			defer cancel()
			_, err := n.Reconnect(ctx, p)
			return err
		},
	}

	if a.stdio {
		return fw.Stdio(ctx, os.Stdin, os.Stdout)
	}
	ln, err := net.Listen("tcp", a.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", a.listen, err)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "forwarding %s -> %s:%s\n", ln.Addr(), p, svc)
	stopLog := context.AfterFunc(ctx, func() {
		g.logger.Info("shutting down: no new connections; waiting for open ones", "grace", a.grace)
	})
	defer stopLog()
	if err := fw.Serve(ctx, ln); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}
