package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/spf13/cobra"

	"github.com/p2pnode/p2pnode/internal/demo"
)

type demoArgs struct {
	keep    bool
	timeout time.Duration
	mib     int
}

func newDemoCmd(g *globalFlags) *cobra.Command {
	var a demoArgs
	cmd := &cobra.Command{
		Use:   "demo [--keep]",
		Short: "See a forward carry bytes between two peers on this machine",
		Long: `demo runs a bootstrap node, a serving node that exposes an echo target, and a
forwarding node in this one process, on 127.0.0.1 only: the forwarding node
finds the serving one by peer ID alone, sends data through a local forward to
the echo target and back, and prints the path, the figures and the commands
that do the same on two machines. It needs no internet and writes no files.`,
		Args: cobraArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error { return a.run(cmd, g) },
	}
	f := cmd.Flags()
	f.BoolVar(&a.keep, "keep", false, "keep the nodes and the forward running, to try the forward's port yourself, until Ctrl-C")
	f.DurationVar(&a.timeout, "timeout", time.Minute, "how long starting the nodes, connecting and the transfer may take")
	f.IntVar(&a.mib, "mib", 16, "MiB to send through the forward to the echo target and back")
	return cmd
}

func (a *demoArgs) run(cmd *cobra.Command, g *globalFlags) error {
	if a.timeout <= 0 {
		return usagef("bad --timeout %s: must be positive, e.g. 60s", a.timeout)
	}
	if a.mib < 1 || a.mib > 4096 {
		return usagef("bad --mib %d: must be 1 to 4096", a.mib)
	}
	if g.verbose == 0 {
		g.level.Set(slog.LevelWarn) // results only, unless -v
	}
	ctx, out := cmd.Context(), cmd.OutOrStdout()
	cfg := demo.Config{Logger: g.logger, Bytes: int64(a.mib) << 20, Timeout: a.timeout}
	if a.keep {
		cfg.Hold = func(r demo.Report) {
			demo.Print(out, r)
			host, port, _ := net.SplitHostPort(r.Forward)
			fmt.Fprintf(out, "\nThe forward stays up: lines typed into `nc %s %s` (or telnet) come back through both peers. Ctrl-C stops the demo.\n", host, port)
			<-ctx.Done()
		}
	}
	r, err := demo.Run(ctx, cfg)
	switch {
	case ctx.Err() != nil:
		return nil // interrupted
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w (not done within --timeout %s)", err, a.timeout)
	case err != nil:
		return err
	}
	if !a.keep {
		demo.Print(out, r)
	}
	return nil
}
