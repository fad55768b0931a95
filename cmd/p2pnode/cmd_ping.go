package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/p2pnode/p2pnode/control"
	"github.com/p2pnode/p2pnode/node"
)

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
	f.IntVarP(&a.count, "count", "c", 3, fmt.Sprintf("number of pings (1 to %d)", control.MaxPingCount))
	f.DurationVar(&a.timeout, "timeout", time.Minute, "how long to look for and connect to the peer, and ping it")
	a.node.register(f, "p2p-listen", false)
	return cmd
}

func (a *pingArgs) run(cmd *cobra.Command, g *globalFlags, target string) error {
	p, err := node.ParsePeerID(target)
	if err != nil {
		return asUsage(fmt.Errorf("bad peer ID: %w", err))
	}
	req := control.PingRequest{Peer: p, Count: a.count, Timeout: a.timeout}
	if a.timeout <= 0 {
		return usagef("bad --timeout %s: must be positive, e.g. 30s", a.timeout)
	}
	if err := control.CheckPing(req); err != nil {
		return usagef("bad --count %d: must be 1 to %d", a.count, control.MaxPingCount)
	}
	api, closeAPI, err := useAPI(cmd, g, &a.node, "pinging", "")
	if err != nil {
		return err
	}
	defer closeAPI()
	// The API's own bound is the timeout; ours leaves it time to say what
	// went wrong.
	ctx, cancel := context.WithTimeout(cmd.Context(), a.timeout+5*time.Second)
	defer cancel()
	res, err := api.Ping(ctx, req)
	printPings(cmd.OutOrStdout(), res)
	return err
}

// printPings prints one line per ping: "PEERID: 1.23 ms (direct)".
func printPings(w io.Writer, res node.PingResult) {
	for _, r := range res.Pings {
		fmt.Fprintf(w, "%s: %.2f ms (%s)\n", res.Peer, r.RTTMillis, r.Path)
	}
}
