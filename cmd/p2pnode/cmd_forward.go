package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/p2pnode/p2pnode/control"
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
	a.node.register(f, "p2p-listen", true)
	return cmd
}

// request checks the arguments and builds the forward request.
func (a *forwardArgs) request(cmd *cobra.Command, target string) (control.ForwardRequest, error) {
	t, err := control.ParseTarget(target)
	if err != nil {
		return control.ForwardRequest{}, err
	}
	switch {
	case a.timeout <= 0:
		return control.ForwardRequest{}, usagef("bad --timeout %s: must be positive, e.g. 30s", a.timeout)
	case a.grace < 0:
		return control.ForwardRequest{}, usagef("bad --grace %s: must be zero or positive, e.g. 10s", a.grace)
	case a.persist && (a.stdio || a.udp):
		return control.ForwardRequest{}, usagef("--persist keeps a TCP --listen forward in the daemon; it does not go with --stdio or --udp")
	case a.stdio && a.udp:
		return control.ForwardRequest{}, usagef("--stdio and --udp exclude each other: --stdio carries one TCP connection")
	case a.stdio && cmd.Flags().Changed("listen"):
		return control.ForwardRequest{}, usagef("--stdio and --listen exclude each other: --stdio carries one connection over stdin/stdout")
	}
	if !a.stdio {
		if _, _, err := net.SplitHostPort(a.listen); err != nil {
			return control.ForwardRequest{}, usagef("bad --listen %q: expected HOST:PORT, e.g. 127.0.0.1:2222 (%v)", a.listen, err)
		}
	}
	return control.ForwardRequest{Target: t, Listen: a.listen, UDP: a.udp, Timeout: a.timeout, Grace: a.grace}, nil
}

func (a *forwardArgs) run(cmd *cobra.Command, g *globalFlags, target string) error {
	req, err := a.request(cmd, target)
	if err != nil {
		return err
	}
	if a.stdio && g.verbose == 0 {
		// ssh shows a ProxyCommand's stderr in the user's terminal: only
		// say something when something is wrong.
		g.level.Set(slog.LevelWarn)
	}
	noDaemon := ""
	if a.persist {
		noDaemon = noDaemonf(g, "--persist needs a running `p2pnode serve` in %s to keep the forward")
	}
	api, closeAPI, err := useAPI(cmd, g, &a.node, "forwarding", noDaemon)
	if err != nil {
		return err
	}
	defer closeAPI()
	ctx, out := cmd.Context(), cmd.OutOrStdout()
	switch {
	case a.persist:
		at, err := api.Persist(ctx, req)
		if err != nil {
			return err
		}
		printForwarding(out, at, req)
		fmt.Fprintf(out, "the daemon keeps this forward; stop it with: p2pnode forward --close %s\n", at.Addr)
		return nil
	case a.stdio:
		return api.ForwardStdio(ctx, req.Target, os.Stdin, os.Stdout, nil)
	}
	stopLog := context.AfterFunc(ctx, func() {
		g.logger.Info("shutting down: no new connections; waiting for open ones", "grace", a.grace)
	})
	defer stopLog()
	err = api.Forward(ctx, req, func(at control.Listening) { printForwarding(out, at, req) })
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// printForwarding prints the lines users and scripts read: where to
// connect, and for a name, which peer was chosen.
func printForwarding(w io.Writer, at control.Listening, req control.ForwardRequest) {
	proto := ""
	if req.UDP {
		proto = "udp "
	}
	fmt.Fprintf(w, "forwarding %s%s -> %s:%s\n", proto, at.Addr, at.Peer, req.Target.Service)
	if req.Target.Name != "" {
		fmt.Fprintf(w, "name %s: peer %s\n", req.Target.Name, at.Peer)
	}
}

// closeForward stops a persistent forward in the daemon.
func (a *forwardArgs) closeForward(cmd *cobra.Command, g *globalFlags) error {
	api, closeAPI, err := useAPI(cmd, g, &a.node, "closing a forward", noDaemonf(g, "no p2pnode serve is running in %s, so no persistent forward either"))
	if err != nil {
		return err
	}
	defer closeAPI()
	if err := api.ClosePersistent(cmd.Context(), a.closeAddr); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "closed forward on %s\n", a.closeAddr)
	return nil
}
