package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/spf13/cobra"

	"github.com/p2pnode/p2pnode/cmd/p2pnode/config"
	"github.com/p2pnode/p2pnode/cmd/p2pnode/control"
	"github.com/p2pnode/p2pnode/node"
	"github.com/p2pnode/p2pnode/overlay"
)

type findArgs struct {
	node    nodeFlags
	json    bool
	timeout time.Duration
}

// foundPeer is one line of find's answer.
type foundPeer = control.FoundPeer

func newFindCmd(g *globalFlags) *cobra.Command {
	var a findArgs
	cmd := &cobra.Command{
		Use:   "find NAME [--json]",
		Short: "List the peers that advertise NAME on the DHT, and the services they let this peer use",
		Long: `find looks NAME up on the DHT (peers advertise it with serve --advertise NAME),
connects to each peer found, and asks it which of its services this peer may
use. It prints the peer ID, whether the path is direct or relayed, and those
services. A name is a hint, not an identity: anyone can advertise any name,
so check the peer ID before you trust it. forward NAME/SERVICE picks one of
these peers.`,
		Example: `  p2pnode find movie-night
  p2pnode forward movie-night/web --listen 127.0.0.1:8080`,
		Args: cobraArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.run(cmd, g, args[0])
		},
	}
	cmd.Flags().BoolVar(&a.json, "json", false, "print the peers as JSON")
	cmd.Flags().DurationVar(&a.timeout, "timeout", 30*time.Second, "how long to look the name up and ask the peers")
	a.node.register(cmd.Flags(), "p2p-listen")
	return cmd
}

func (a *findArgs) run(cmd *cobra.Command, g *globalFlags, name string) error {
	if err := config.CheckServiceName(name); err != nil {
		return usagef("bad name %q: %v", name, err)
	}
	if a.timeout <= 0 {
		return usagef("bad --timeout %s: must be positive, e.g. 30s", a.timeout)
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), a.timeout)
	defer cancel()
	var found []foundPeer
	if c, err := control.Dial(g.home); err == nil {
		defer c.Close()
		g.logger.Info("looking the name up through the p2pnode daemon", "home", g.home)
		if found, err = c.Find(ctx, name); err != nil {
			return err
		}
	} else if !errors.Is(err, control.ErrNotRunning) {
		return err
	} else {
		n, err := a.node.startClientNode(g)
		if err != nil {
			return err
		}
		defer n.Close()
		if found, err = findAndAsk(ctx, g, n, name); err != nil {
			return err
		}
	}

	out := cmd.OutOrStdout()
	if a.json {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Name  string      `json:"name"`
			Peers []foundPeer `json:"peers"`
		}{name, found})
	}
	if len(found) == 0 {
		fmt.Fprintf(out, "no peer advertises %q\n", name)
		return nil
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tPATH\tSERVICES")
	for _, f := range found {
		svcs := strings.Join(f.Services, ", ")
		if f.Error != "" {
			svcs = "unreachable: " + f.Error
		} else if svcs == "" {
			svcs = "none for this peer"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", f.Peer, f.Path, svcs)
	}
	return tw.Flush()
}

// findAndAsk looks name up and asks every peer found, at once.
func findAndAsk(ctx context.Context, g *globalFlags, n *node.Node, name string) ([]foundPeer, error) {
	peers, err := findByName(ctx, g, n, name)
	if err != nil {
		return nil, err
	}
	found := make([]foundPeer, len(peers))
	var wg sync.WaitGroup
	for i, ai := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			found[i] = ask(ctx, n, ai)
		}()
	}
	wg.Wait()
	return found, nil
}

// Find implements control.Finder for the daemon.
func (f *forwarding) Find(ctx context.Context, name string) ([]foundPeer, error) {
	if err := config.CheckServiceName(name); err != nil {
		return nil, fmt.Errorf("bad name %q: %w", name, err)
	}
	return findAndAsk(ctx, f.g, f.n, name)
}

// ask connects to one advertising peer and lists the services it lets this
// peer use.
func ask(ctx context.Context, n *node.Node, ai peer.AddrInfo) foundPeer {
	f := foundPeer{Peer: ai.ID, Path: string(node.PathNone), Services: []string{}}
	n.Host.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.TempAddrTTL)
	path, err := n.Connect(ctx, ai.ID)
	if err == nil {
		f.Path = string(path)
		var svcs []string
		if svcs, err = overlay.ListServices(ctx, n.Host, ai.ID, overlay.WithAllowLimitedConn()); err == nil {
			f.Services = svcs
		}
	}
	if err != nil {
		f.Error = err.Error()
	}
	return f
}
