package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/p2pnode/p2pnode/control"
	"github.com/p2pnode/p2pnode/node"
	"github.com/p2pnode/p2pnode/node/natcheck"
)

type natArgs struct {
	node    nodeFlags
	json    bool
	stun    []string
	timeout time.Duration
}

func newNATCmd(g *globalFlags) *cobra.Command {
	var a natArgs
	cmd := &cobra.Command{
		Use:   "nat [--json] [--stun HOST:PORT]",
		Short: "Test the NAT in front of this machine with STUN: mapping, filtering, and what it means for direct connections",
		Long: `nat runs the RFC 5780 NAT behaviour discovery tests against a STUN server
and prints, for UDP: the public address, the mapping and filtering
behaviour (endpoint-independent, address-dependent or
address-and-port-dependent, RFC 4787), the port allocation, hairpinning,
and the classic RFC 3489 name (full cone, restricted cone, port-restricted
cone, symmetric, ...), with a line on what it means for hole punching.

Every p2pnode bootstrap node runs a STUN server and announces it to the
peers that join it; --stun adds others. When a p2pnode serve or bootstrap
runs in --home, nat tests from that daemon's QUIC port (which is what hole
punching uses); otherwise it joins the network with a node of its own.`,
		Example: `  p2pnode nat
  p2pnode nat --json
  p2pnode nat --stun 203.0.113.7:3478`,
		Args: cobraArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error { return a.run(cmd, g) },
	}
	f := cmd.Flags()
	f.BoolVar(&a.json, "json", false, "print the report as JSON")
	f.StringArrayVar(&a.stun, "stun", nil, "a STUN server to ask first, HOST:PORT (repeatable)")
	f.DurationVar(&a.timeout, "timeout", time.Minute, "how long to join the network and test")
	a.node.register(f, "p2p-listen", false)
	return cmd
}

func (a *natArgs) run(cmd *cobra.Command, g *globalFlags) error {
	if a.timeout <= 0 {
		return usagef("bad --timeout %s: must be positive, e.g. 30s", a.timeout)
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), a.timeout)
	defer cancel()
	var req control.NATRequest
	for _, s := range a.stun {
		ap, err := resolveSTUN(ctx, s)
		if err != nil {
			return err
		}
		req.STUN = append(req.STUN, ap)
	}
	api, closeAPI, err := useAPI(cmd, g, &a.node, "testing the NAT", "")
	if err != nil {
		return err
	}
	defer closeAPI()
	rep, err := api.NAT(ctx, req)
	if err != nil {
		return fmt.Errorf("NAT check: %w", err)
	}
	if a.json {
		enc := json.NewEncoder(cmd.OutOrStdout())
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printNAT(cmd.OutOrStdout(), rep)
	return nil
}

// resolveSTUN reads HOST:PORT; a bad one is bad input, a name that does not
// resolve is not.
func resolveSTUN(ctx context.Context, s string) (netip.AddrPort, error) {
	if err := node.CheckSTUNServer(s); err != nil {
		return netip.AddrPort{}, usagef("bad --stun: %v", err)
	}
	return node.ResolveSTUNServer(ctx, s)
}

// printNAT prints the report for a person.
func printNAT(w io.Writer, r natcheck.Report) {
	u := r.UDP
	pub := u.PublicAddress
	if pub == "" {
		pub = "none (no STUN server answered)"
	}
	fmt.Fprintf(w, "UDP public address: %s\n", pub)
	fmt.Fprintf(w, "NAT type:           %s\n", u.Classic)
	fmt.Fprintf(w, "mapping:            %s\n", u.Mapping)
	fmt.Fprintf(w, "filtering:          %s\n", u.Filtering)
	fmt.Fprintf(w, "port allocation:    %s\n", u.PortAllocation)
	fmt.Fprintf(w, "hairpinning:        %s\n", u.Hairpinning)
	for _, nr := range u.NotRun {
		fmt.Fprintf(w, "not run:            %s\n", nr)
	}
	var servers []string
	for _, s := range r.Servers {
		state := "answered"
		if !s.Answered {
			state = "no answer"
		}
		servers = append(servers, s.Address+" ("+state+")")
	}
	fmt.Fprintf(w, "STUN servers:       %s\n", strings.Join(servers, ", "))
	fmt.Fprintf(w, "\n%s\n", r.Meaning)
}
