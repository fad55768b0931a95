// Command p2pnode makes this machine a peer of a libp2p overlay: reachable by
// peer ID behind NATs and firewalls, exposing chosen local TCP services to
// chosen peers, and forwarding local ports to other peers' services.
//
// This package only wires flags and config to packages node, overlay and
// bootstrap; see ../../README.md for usage.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/p2pnode/p2pnode/control"
)

// Exit codes of the CLI contract (DESIGN.md "CLI").
const (
	exitOK      = 0
	exitRuntime = 1
	exitUsage   = 2
)

func main() {
	ctx, stop := stopOnSignal()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the command line args, with results on stdout and logs and
// errors on stderr, and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "p2pnode: %s\n", err)
	var ue *usageError
	var ie *control.InputError
	if errors.As(err, &ue) || errors.As(err, &ie) {
		return exitUsage
	}
	return exitRuntime
}

// stopOnSignal returns a context that ends at the first SIGINT or SIGTERM:
// commands then stop taking work and let what is open finish (serve and
// forward give open connections --grace). A second signal exits at once,
// as users expect of Ctrl-C pressed twice.
func stopOnSignal() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	finished := make(chan struct{})
	go func() {
		select {
		case <-sigs:
		case <-finished:
			return
		}
		cancel()
		select {
		case <-sigs:
			fmt.Fprintln(os.Stderr, "p2pnode: second signal: exiting now")
			os.Exit(exitRuntime)
		case <-finished:
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		close(finished)
		cancel()
	}
}

// usageError marks bad usage or bad input: exit code 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// usagef returns a usageError with a formatted message.
func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// asUsage marks err, if not nil, as bad input.
func asUsage(err error) error {
	if err == nil {
		return nil
	}
	return &usageError{err}
}

func newRootCmd() *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:   "p2pnode",
		Short: "Reach machines behind NATs by peer ID, and forward TCP services to them",
		Long: `p2pnode makes this machine a peer of a libp2p overlay. Peers find each other
through a Kademlia DHT, learn their reachability with AutoNAT, reserve slots
on circuit relays when they are private, and upgrade relayed connections to
direct ones by hole punching (DCUtR). A peer exposes local TCP services to
chosen peers (serve); another forwards a local port to them (forward).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// `p2pnode completion bash|zsh|fish|powershell` comes from cobra.
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return g.setup(cmd)
		},
	}
	g.register(root)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &usageError{fmt.Errorf("%w (see --help)", err)}
	})
	root.AddCommand(
		newInitCmd(g),
		newIDCmd(g),
		newBootstrapCmd(g),
		newServeCmd(g),
		newForwardCmd(g),
		newFindCmd(g),
		newStatusCmd(g),
		newPingCmd(g),
		newNATCmd(g),
		newDemoCmd(g),
	)
	return root
}

// cobraArgs wraps a cobra argument validator so that its errors are usage
// errors (exit 2).
func cobraArgs(v cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := v(cmd, args); err != nil {
			return usagef("%s: %v; usage: %s", cmd.Name(), err, cmd.UseLine())
		}
		return nil
	}
}
