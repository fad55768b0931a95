//go:build linux

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/p2pnode/p2pnode/node"
)

func lookup(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("lookup", flag.ContinueOnError)
	var boots, peers listFlag
	fs.Var(&boots, "bootstrap", "bootstrap peer multiaddr with /p2p/ID (repeatable)")
	fs.Var(&peers, "peer", "peer ID to look up (repeatable)")
	every := fs.Duration("every", 10*time.Second, "time between rounds of lookups")
	total := fs.Duration("for", 3*time.Minute, "how long to keep looking up")
	timeout := fs.Duration("timeout", 30*time.Second, "bound of one lookup")
	if err := fs.Parse(args); err != nil {
		return err
	}
	boot, err := parseBootstrap(boots)
	if err != nil {
		return err
	}
	var ids []peer.ID
	for _, s := range peers {
		id, err := peer.Decode(s)
		if err != nil {
			return fmt.Errorf("-peer %q: %w", s, err)
		}
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return errors.New("give at least one -peer")
	}

	var took []time.Duration
	n := 0
	end := time.Now().Add(*total)
	tick := time.NewTicker(*every)
	defer tick.Stop()
	for time.Now().Before(end) {
		for _, id := range ids {
			d, res, ok := lookupOnce(ctx, boot, id, *timeout)
			n++
			verdict := "fail"
			if ok {
				verdict = "ok"
				took = append(took, d)
			}
			say("lookup %s %s %v %s", id, verdict, d.Round(time.Millisecond), res)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	slices.Sort(took)
	say("summary lookups %d ok %d p50 %v p99 %v", n, len(took), quantile(took, 0.5), quantile(took, 0.99))
	return nil
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))].Round(time.Millisecond)
}

// lookupOnce joins a fresh client node and looks id up. res is the found
// addresses, or the error.
func lookupOnce(ctx context.Context, boot []peer.AddrInfo, id peer.ID, timeout time.Duration) (took time.Duration, res string, ok bool) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	n, err := node.New(node.Config{Identity: newKey(), ListenAddrs: []ma.Multiaddr{ma.StringCast("/ip4/0.0.0.0/tcp/0"), ma.StringCast("/ip4/0.0.0.0/udp/0/quic-v1")},
		BootstrapPeers: boot, DHTMode: node.DHTModeClient, ClientOnly: true, NoPunchProtocol: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return 0, "start client: " + err.Error(), false
	}
	defer n.Close()
	if _, err := n.WaitBootstrap(ctx); err != nil {
		return 0, "join: " + err.Error(), false
	}
	if err := n.WaitRoutingTable(ctx); err != nil {
		return 0, "join: empty routing table: " + err.Error(), false
	}
	start := time.Now()
	ai, err := n.DHT.FindPeer(ctx, id)
	took = time.Since(start)
	if err != nil {
		// What the client knew: a lookup that ends at once ran out of
		// peers to ask.
		closest, cerr := n.DHT.WAN.GetClosestPeers(ctx, string(id))
		return took, fmt.Sprintf("%s (WAN table %d, closest peers %d %v)", strings.ReplaceAll(err.Error(), "\n", " "),
			n.DHT.WAN.RoutingTable().Size(), len(closest), cerr), false
	}
	if len(ai.Addrs) == 0 {
		return took, "no addresses", false
	}
	return took, fmt.Sprint(ai.Addrs), true
}
