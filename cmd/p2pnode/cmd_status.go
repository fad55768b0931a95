package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/p2pnode/p2pnode/control"
	"github.com/p2pnode/p2pnode/node"
	"github.com/p2pnode/p2pnode/overlay"
)

type statusArgs struct {
	json bool
}

func newStatusCmd(g *globalFlags) *cobra.Command {
	var a statusArgs
	cmd := &cobra.Command{
		Use:   "status [--json]",
		Short: "Show the running node's reachability, NAT mapping, addresses, relays and connections",
		Long: `status asks the p2pnode serve or bootstrap running in --home (through its
control socket) what it knows: its reachability (public, private or unknown,
from AutoNAT), the NAT mapping behaviour per transport (endpoint-independent
or endpoint-dependent), its listen and advertised addresses, its relay
reservations, its bootstrap peers, and each connection: peer, transport,
direct or relayed, direction, age and round-trip time.

--json prints the same as one JSON object.`,
		Args: cobraArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.run(cmd, g)
		},
	}
	cmd.Flags().BoolVar(&a.json, "json", false, "print the status as JSON")
	return cmd
}

func (a *statusArgs) run(cmd *cobra.Command, g *globalFlags) error {
	api, closeAPI, err := useAPI(cmd, g, nil, "", noDaemonf(g, "no p2pnode serve or bootstrap is running in %s; start one with `p2pnode serve`"))
	if err != nil {
		return err
	}
	defer closeAPI()
	st, err := api.Status(cmd.Context())
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if a.json {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printStatus(out, st, time.Now())
	return nil
}

// printStatus writes st for a person: one aligned "name  value" block, then
// a table of connections.
func printStatus(w io.Writer, st control.Status, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(name string, values ...string) {
		if len(values) == 0 {
			values = []string{"none"}
		}
		for i, v := range values {
			if i > 0 {
				name = ""
			}
			fmt.Fprintf(tw, "%s\t%s\n", name, v)
		}
	}
	row("peer ID", st.PeerID.String())
	row("reachability", describeReachability(st, now))
	if len(st.ReachableAddrs) > 0 || len(st.UnreachableAddrs) > 0 {
		row("AutoNAT v2", append(suffixed(st.ReachableAddrs, " reachable"), suffixed(st.UnreachableAddrs, " unreachable")...)...)
	}
	row("NAT mapping", fmt.Sprintf("TCP %s, UDP %s", st.NATMapping.TCP, st.NATMapping.UDP))
	if n := st.NAT; n != nil {
		row("NAT check (STUN)", fmt.Sprintf("%s: mapping %s, filtering %s, UDP %s, %s",
			n.UDP.Classic, n.UDP.Mapping, n.UDP.Filtering, n.UDP.PublicAddress, ago(now, n.Time)))
	}
	row("listen addresses", st.ListenAddrs...)
	row("advertised addresses", st.AdvertisedAddrs...)
	var rsv []string
	for _, r := range st.RelayReservations {
		rsv = append(rsv, fmt.Sprintf("on %s, expires %s", r.Relay, until(now, r.Expiry)))
	}
	row("relay reservations", rsv...)
	var boots []string
	for _, b := range st.BootstrapPeers {
		state := "not connected"
		if b.Connected {
			state = "connected"
		}
		boots = append(boots, fmt.Sprintf("%s %s", b.Peer, state))
	}
	row("bootstrap peers", boots...)
	direct := 0
	for _, c := range st.Connections {
		if c.Path == node.PathDirect {
			direct++
		}
	}
	row("connections", fmt.Sprintf("%d (%d direct, %d relayed)", len(st.Connections), direct, len(st.Connections)-direct))
	var fwds []string
	for _, f := range st.PersistentForwards {
		fwds = append(fwds, fmt.Sprintf("%s -> %s (peer %s), since %s%s", f.Listen, f.Target, shortID(f.Peer.String()), ago(now, f.Started), describeCarriers(f.Carriers)))
	}
	row("persistent forwards", fwds...)
	tw.Flush()
	printConnections(w, st.Connections, now)
}

// describeCarriers says which connections carry a forward's streams:
// ", via tcp direct (3 streams)".
func describeCarriers(cs []overlay.Carrier) string {
	var parts []string
	for _, c := range cs {
		parts = append(parts, fmt.Sprintf("%s %s (%d streams)", c.Transport, c.Path, c.Streams))
	}
	if len(parts) == 0 {
		return ""
	}
	return ", via " + strings.Join(parts, " and ")
}

func describeReachability(st control.Status, now time.Time) string {
	reach := string(st.Reachability)
	if !st.ReachabilitySince.IsZero() {
		reach += " since " + ago(now, st.ReachabilitySince)
	}
	if st.AutoNATv1 != st.Reachability {
		reach += fmt.Sprintf(" (AutoNAT v1: %s)", st.AutoNATv1)
	}
	return reach
}

func suffixed(ss []string, suffix string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s + suffix
	}
	return out
}

// printConnections writes the table of connections, if any.
func printConnections(w io.Writer, conns []node.ConnStatus, now time.Time) {
	if len(conns) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  PEER\tPATH\tTRANSPORT\tDIRECTION\tRTT\tOPENED\tREMOTE ADDRESS")
	for _, c := range conns {
		rtt := "-"
		if c.RTTMillis > 0 {
			rtt = fmt.Sprintf("%.2f ms", c.RTTMillis)
		}
		path := string(c.Path)
		if c.Relay != "" {
			path += " via " + shortID(c.Relay.String())
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.Peer, path, c.Transport, c.Direction, rtt, ago(now, c.OpenedAt), c.RemoteAddr)
	}
	tw.Flush()
}

// ago says when t was: "12:04:05 (3m20s ago)".
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return fmt.Sprintf("%s (%s ago)", t.Local().Format(time.TimeOnly), roundAge(now.Sub(t)))
}

// until says when t comes: "13:04:05 (in 59m)".
func until(now, t time.Time) string {
	d := t.Sub(now)
	if d < 0 {
		return fmt.Sprintf("%s (%s ago)", t.Local().Format(time.TimeOnly), roundAge(-d))
	}
	return fmt.Sprintf("%s (in %s)", t.Local().Format(time.TimeOnly), roundAge(d))
}

func roundAge(d time.Duration) string {
	if d < time.Minute {
		return d.Round(time.Second).String()
	}
	return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
}

// shortID abbreviates a peer ID for a table cell: 12D3KooW…x7Yz.
func shortID(s string) string {
	if len(s) <= 16 {
		return s
	}
	return s[:8] + "…" + s[len(s)-4:]
}
