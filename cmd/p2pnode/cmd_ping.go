package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/p2pnode/p2pnode/cmd/p2pnode/config"
	"github.com/p2pnode/p2pnode/cmd/p2pnode/control"
	"github.com/p2pnode/p2pnode/node"
)

// maxPingCount bounds --count (node.Ping refuses more).
const maxPingCount = 100

type pingArgs struct {
	node    nodeFlags
	count   int
	timeout time.Duration
}

func newPingCmd(g *globalFlags) *cobra.Command {
	var a pingArgs
	cmd := &cobra.Command{
		Use:   "ping PEERID [--count N]",
		Short: "Measure the round-trip time to PEERID, and whether the path is direct or relayed",
		Long: `ping finds PEERID through the DHT, connects to it (directly, or through a
relay and then by hole punching) and measures round trips with libp2p's ping
protocol. Each line gives the round-trip time and whether the connection is
direct or relayed.

When a p2pnode serve or bootstrap runs in --home, ping goes through it (and
its flags --bootstrap, --p2p-listen and --nat-port-map do not apply);
otherwise ping runs a node of its own for the time it takes.`,
		Example: `  p2pnode ping 12D3KooW...
  p2pnode ping 12D3KooW... --count 10`,
		Args: cobraArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.run(cmd, g, args[0])
		},
	}
	f := cmd.Flags()
	f.IntVarP(&a.count, "count", "c", control.DefaultPingCount, fmt.Sprintf("number of pings (1 to %d)", maxPingCount))
	f.DurationVar(&a.timeout, "timeout", time.Minute, "how long to look for and connect to the peer, and ping it")
	a.node.register(f, "p2p-listen")
	return cmd
}

func (a *pingArgs) run(cmd *cobra.Command, g *globalFlags, target string) error {
	p, err := config.ParsePeerID(target)
	if err != nil {
		return asUsage(fmt.Errorf("bad peer ID: %w", err))
	}
	if a.count < 1 || a.count > maxPingCount {
		return usagef("bad --count %d: must be 1 to %d", a.count, maxPingCount)
	}
	if a.timeout <= 0 {
		return usagef("bad --timeout %s: must be positive, e.g. 30s", a.timeout)
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), a.timeout)
	defer cancel()

	var res node.PingResult
	c, err := control.Dial(g.home)
	switch {
	case err == nil:
		defer c.Close()
		for _, name := range []string{a.node.listenName, "bootstrap", "nat-port-map"} {
			if cmd.Flags().Changed(name) {
				g.logger.Warn("a p2pnode daemon runs in the home directory: pinging through it, --"+name+" does not apply", "home", g.home)
			}
		}
		// The daemon's own bound is the timeout; ours leaves it time to
		// say what went wrong.
		cctx, ccancel := context.WithTimeout(cmd.Context(), a.timeout+5*time.Second)
		defer ccancel()
		res, err = c.Ping(cctx, p, a.count, a.timeout)
	case errors.Is(err, control.ErrNotRunning):
		res, err = a.pingOwnNode(ctx, g, p)
	default:
		return err
	}
	printPings(cmd.OutOrStdout(), res)
	var ce *control.Error
	if errors.As(err, &ce) && ce.Code == http.StatusBadRequest {
		return asUsage(err)
	}
	return err
}

// pingOwnNode runs a short-lived node, as forward does, and pings p from it.
func (a *pingArgs) pingOwnNode(ctx context.Context, g *globalFlags, p peer.ID) (node.PingResult, error) {
	n, err := a.node.startClientNode(g)
	if err != nil {
		return node.PingResult{}, err
	}
	defer n.Close()
	return n.Ping(ctx, p, a.count)
}

// printPings prints one line per ping: "PEERID: 1.23 ms (direct)".
func printPings(w io.Writer, res node.PingResult) {
	for _, r := range res.Pings {
		fmt.Fprintf(w, "%s: %.2f ms (%s)\n", res.Peer, r.RTTMillis, r.Path)
	}
}
