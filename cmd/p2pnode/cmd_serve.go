package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/p2pnode/p2pnode/config"
	"github.com/p2pnode/p2pnode/node"
	"github.com/p2pnode/p2pnode/overlay"
)

type serveArgs struct {
	node      nodeFlags
	expose    []string
	allow     []string
	public    bool
	grace     time.Duration
	advertise []string
}

func newServeCmd(g *globalFlags) *cobra.Command {
	var a serveArgs
	cmd := &cobra.Command{
		Use:   "serve [--expose [NAME=][HOST:]PORT]... [--allow PEERID]... [--public]",
		Short: "Join the overlay and offer local TCP services to chosen peers",
		Long: `serve joins the overlay and offers local TCP services. --expose 22 offers
127.0.0.1:22 as service "22"; --expose ssh=127.0.0.1:22 offers it as "ssh".
Services in config.toml ([[service]] tables) are offered too.

A service is reachable only by the peers on its allow list (--allow applies to
the services given with --expose). --public opens the --expose services to
every peer and must be said explicitly. Nothing that was not exposed is
reachable, whatever a peer asks for.`,
		Example: `  p2pnode serve --expose ssh=22 --allow 12D3KooW...
  p2pnode serve --expose web=127.0.0.1:8080 --public`,
		Args: cobraArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.run(cmd, g)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&a.expose, "expose", nil, "offer a local service as [udp:][NAME=][HOST:]PORT (repeatable; TCP unless udp:)")
	f.StringArrayVar(&a.allow, "allow", nil, "peer ID allowed to use the --expose services (repeatable)")
	f.BoolVar(&a.public, "public", false, "let every peer use the --expose services")
	f.DurationVar(&a.grace, "grace", 10*time.Second, "on SIGINT/SIGTERM, how long open forwarded connections may take to finish (a second signal exits at once)")
	f.StringArrayVar(&a.advertise, "advertise", nil, "announce on the DHT that this peer offers services under NAME (repeatable); others use `p2pnode find NAME`")
	a.node.register(f, "listen", true)
	return cmd
}

func (a *serveArgs) services(file *config.File) ([]overlay.Service, error) {
	var errs []error
	allow, err := node.ParsePeerIDs("--allow", a.allow)
	if err != nil {
		errs = append(errs, err)
	}
	var svcs []overlay.Service
	for _, s := range file.Services {
		ids, err := s.AllowedPeers()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		svcs = append(svcs, overlay.Service{Name: s.Name, Target: s.Target, Allow: ids, Public: s.Public, UDP: s.Protocol == "udp"})
	}
	for _, spec := range a.expose {
		s, err := overlay.ParseExpose(spec)
		if err != nil {
			errs = append(errs, fmt.Errorf("bad --expose: %w", err))
			continue
		}
		s.Allow, s.Public = allow, a.public
		svcs = append(svcs, s)
	}
	if len(errs) > 0 {
		return nil, asUsage(errors.Join(errs...))
	}
	if len(a.allow) > 0 && len(a.expose) == 0 {
		return nil, usagef("--allow applies to --expose services, and none was given; add --expose [NAME=][HOST:]PORT")
	}
	if err := overlay.ValidateServices(svcs); err != nil {
		return nil, asUsage(err)
	}
	return svcs, nil
}

func (a *serveArgs) run(cmd *cobra.Command, g *globalFlags) error {
	if a.grace < 0 {
		return usagef("bad --grace %s: must be zero or positive, e.g. 10s", a.grace)
	}
	file, err := g.loadConfig()
	if err != nil {
		return err
	}
	svcs, err := a.services(file)
	if err != nil {
		return err
	}
	for _, name := range a.advertise {
		if err := overlay.CheckServiceName(name); err != nil {
			return usagef("bad --advertise %q: %v", name, err)
		}
	}
	run, err := startNode(g, &a.node, roleServe, file, nil)
	if err != nil {
		return err
	}
	defer run.stop()
	n, m := run.node, run.metrics
	srv, err := overlay.NewServer(n.Host, svcs, overlay.WithLogger(g.logger), overlay.WithMetrics(m))
	if err != nil {
		return err
	}
	defer srv.Close()
	// Only peers that may use a service get the hole punches that send
	// many datagrams to an address they name.
	n.SetProbePolicy(srv.Allows)

	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "peer ID: %s\n", n.ID())
	printServices(out, g.logger, svcs)
	for _, name := range a.advertise {
		n.Advertise(name)
	}
	ctx := cmd.Context()
	go reportReady(ctx, g, n, out)
	<-ctx.Done()
	g.logger.Info("shutting down: no new connections; waiting for open ones", "grace", a.grace)
	sctx, cancel := context.WithTimeout(context.Background(), a.grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		g.logger.Warn("grace period over; reset the connections still open", "grace", a.grace)
	}
	return nil
}

// printServices prints one line per service and warns about services
// nobody may use.
func printServices(out io.Writer, log *slog.Logger, svcs []overlay.Service) {
	for _, s := range svcs {
		proto := ""
		if s.UDP {
			proto = "udp "
		}
		fmt.Fprintf(out, "service %s -> %s%s (%s)\n", s.Name, proto, s.Target, whoMay(s))
		if !s.Public && len(s.Allow) == 0 {
			log.Warn("service is refused to every peer: it has no allow list and is not public; add --allow PEERID or --public",
				"service", s.Name)
		}
	}
	if len(svcs) == 0 {
		log.Warn("no service exposed; this node can still forward and be pinged. Add --expose [NAME=][HOST:]PORT")
	}
}

// reportReady prints the ready line once a bootstrap peer is connected, and
// nags in the log while none is.
func reportReady(ctx context.Context, g *globalFlags, n *node.Node, out io.Writer) {
	for {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		connected, err := n.WaitBootstrap(wctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			g.logger.Warn("not joined yet: no bootstrap peer reachable; peers cannot find this node by peer ID until one is", "error", err)
			continue
		}
		fmt.Fprintf(out, "ready: connected to %d of %d bootstrap peers\n", connected, len(n.BootstrapPeers()))
		return
	}
}

func whoMay(s overlay.Service) string {
	switch {
	case s.Public:
		return "public: every peer"
	case len(s.Allow) == 0:
		return "nobody: no allow list"
	default:
		ids := make([]string, len(s.Allow))
		for i, p := range s.Allow {
			ids[i] = p.String()
		}
		return "allowed: " + strings.Join(ids, ", ")
	}
}
