//go:build linux && dhtbench

package e2e

import (
	"flag"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/p2pnode/p2pnode/internal/e2etest"
	"github.com/p2pnode/p2pnode/internal/netlab"
)

// The DHT-at-scale case's size; bench/dht-scale.sh passes the benchmark's
// (go test ./test/e2e/ -run TestDHTAtScale -args -dht-servers 1000 ...).
var (
	dhtServers = flag.Int("dht-servers", 200, "TestDHTAtScale: DHT servers in the farm (besides the 3 bootstrap nodes)")
	dhtFor     = flag.Duration("dht-for", 3*time.Minute, "TestDHTAtScale: how long lookups run")
	dhtEvery   = flag.Duration("dht-every", 10*time.Second, "TestDHTAtScale: time between rounds of lookups")
	dhtChurn   = flag.Float64("dht-churn", 0.1, "TestDHTAtScale: share of the farm replaced every minute")
)

var lookupSummary = regexp.MustCompile(`^summary lookups (\d+) ok (\d+) p50 (\S+) p99 (\S+)$`)

// TestDHTAtScale (issue 14): a simulated public DHT of 200 servers
// (dhtfarm, on addresses of 200 distinct /16 networks) and 3 bootstrap
// nodes, with 10 % of the servers replaced every minute. Three serving
// peers behind NATs join through the first bootstrap node; a client at
// another site, which knows only the second, looks each one up by peer ID
// every 10 s for 3 minutes, each time as a fresh node. Every lookup must
// succeed, with a median under a second; then a forward that joins through
// the third bootstrap node reaches each serving peer, and a find through
// the second lists all three by name.
//
// It is a benchmark (build tag dhtbench, bench/dht-scale.sh), not yet a CI
// case: it does not meet those targets yet (README, "DHT at scale"), and
// the farm needs 2 minutes and 3 GB to start on 2 cores.
func TestDHTAtScale(t *testing.T) {
	// Starting takes about 2 minutes for 200 servers on 2 cores.
	ready := max(5*time.Minute, time.Duration(*dhtServers)*1500*time.Millisecond)
	ctx := testContext(t, ready+*dhtFor+10*time.Minute)
	farmBin := buildTool(t, ctx, "dhtfarm")
	ln := newLabNet(t, ctx, "default")
	boots := []string{ln.bootAddr}
	for _, name := range []string{"boot2", "boot3"} {
		_, _, addr := bootstrapOn(t, ctx, ln.lab.AddPublicHost(name), "default", "--bootstrap", ln.bootAddr)
		boots = append(boots, addr)
	}

	farmHost := ln.lab.AddPublicHost("farm")
	args := []string{"farm", "-churn", strconv.FormatFloat(*dhtChurn, 'f', -1, 64), "-pprof", "127.0.0.1:6060", "-ready-timeout", ready.String()}
	for _, ip := range farmHost.AddRoutedIPs(*dhtServers) {
		args = append(args, "-ip", ip.String())
	}
	for _, b := range boots {
		args = append(args, "-bootstrap", b)
	}
	farm := e2etest.Start(t, ctx, "dhtfarm farm", farmHost.Command(ctx, farmBin, args...))
	t.Log(farm.WaitLine(t, ready+time.Minute, "the farm's ready line", func(l string) bool { return strings.HasPrefix(l, "ready ") }))

	const name = "scaled"
	client := newNode(t, ctx)
	var servers []string
	for _, s := range []string{"a", "b", "c"} {
		h := ln.lab.AddSite(s, netlab.NATPortRestricted).AddHost("srv" + s)
		server, _ := ln.serveAs(t, ctx, h, newNode(t, ctx), client.id, "--advertise", name)
		servers = append(servers, server.id)
	}

	cliHost := ln.lab.AddSite("d", netlab.NATPortRestricted).AddHost("cli")
	largs := []string{"lookup", "-bootstrap", boots[1], "-every", dhtEvery.String(), "-for", dhtFor.String()}
	for _, id := range servers {
		largs = append(largs, "-peer", id)
	}
	look := e2etest.Start(t, ctx, "dhtfarm lookup", cliHost.Command(ctx, farmBin, largs...))
	summary := look.WaitLine(t, *dhtFor+3*time.Minute, "the lookup summary", lookupSummary.MatchString)
	for _, l := range strings.Split(look.Stdout.String(), "\n") {
		if strings.HasPrefix(l, "lookup ") && !strings.Contains(l, " ok ") {
			t.Errorf("failed: %s", l)
		}
	}
	for _, l := range strings.Split(farm.Stdout.String(), "\n") {
		if strings.HasPrefix(l, "stats ") || strings.HasPrefix(l, "churn ") {
			t.Log("farm: " + l)
		}
	}
	t.Log(summary)
	m := lookupSummary.FindStringSubmatch(summary)
	if m[1] != m[2] || m[1] == "0" {
		t.Errorf("%s of %s lookups succeeded, want all", m[2], m[1])
	}
	if p50, err := time.ParseDuration(m[3]); err != nil || p50 > time.Second {
		t.Errorf("lookup median %s, want at most 1s", m[3])
	}

	found, out := findIn(t, ctx, cliHost, client, name, boots[1], "default")
	if len(found.Peers) != len(servers) {
		t.Errorf("find %s through the second bootstrap node listed %d peers, want %d:\n%s", name, len(found.Peers), len(servers), out)
	}
	third := *ln
	third.bootAddr = boots[2]
	for _, id := range servers {
		began := time.Now()
		fwd, addr := third.forwardIn(t, ctx, cliHost, client, id)
		third.echoThrough(t, ctx, cliHost, addr, 1<<20)
		t.Logf("forward to %s through the third bootstrap node: start to 1 MiB echoed %v", id, time.Since(began).Round(time.Millisecond))
		stop(t, fwd)
	}
}
