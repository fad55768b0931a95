//go:build natbench

package natlab

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/p2pnode/p2pnode/internal/e2etest"
	"github.com/p2pnode/p2pnode/internal/netlab"
)

var (
	flagTries      = flag.Int("tries", 10, "tries per combination (each in a fresh lab)")
	flagPairs      = flag.String("pairs", "", "comma list of CLIENT/SERVER router pairs to run, e.g. eim-apdf/eim-apdf,edm/edm (default: all)")
	flagTransports = flag.String("transports", "", "comma list of transports to run: tcp, quic (default: both)")
	flagInbound    = flag.String("inbound", "", "comma list of router behaviours for unsolicited inbound traffic: drop, reject (default: both)")
	flagTryTimeout = flag.Duration("try-timeout", 60*time.Second, "bound on one try, from starting the bootstrap node to the echo check")
	flagShowOutput = flag.Bool("show-output", false, "log every process's output for every try, not only for failed ones (with -v)")
	flagRTT        = flag.String("rtt", "0", "comma list of round-trip times between the two sites, in ms (the relay is farther: 1.25×RTT from each site)")
	flagLoss       = flag.Float64("loss", 0, "packet loss between the two sites, percent each way (split over the two sites' links)")
	flagJitter     = flag.Float64("jitter", 0, "delay variation between the two sites, ms (±half on each site's link; at most RTT/2)")
	flagParallel   = flag.Int("parallel", 1, "tries run at once, each in its own lab")
)

// pairs are the client/server router kinds measured, client first.
var pairs = [][2]netlab.NAT{
	{netlab.NATPortRestricted, netlab.NATPortRestricted},
	{netlab.NATFullCone, netlab.NATPortRestricted},
	{netlab.NATNone, netlab.NATPortRestricted},
	{netlab.NATFirewall, netlab.NATPortRestricted},
	{netlab.NATSymmetric, netlab.NATPortRestricted},
	{netlab.NATPortRestricted, netlab.NATSymmetric},
	{netlab.NATSymmetric, netlab.NATFullCone},
	{netlab.NATSymmetric, netlab.NATSymmetric},
	{netlab.NATSequential, netlab.NATSequential},
	{netlab.NATSequential, netlab.NATPortRestricted},
	{netlab.NATPortRestricted, netlab.NATSequential},
	{netlab.NATSequential, netlab.NATSymmetric},
}

// hardNAT: an endpoint-dependent mapping.
func hardNAT(n netlab.NAT) bool { return n == netlab.NATSymmetric || n == netlab.NATSequential }

// listenAddrs are bootstrap's and serve's listen addresses per transport;
// forward listens on the same with port 0. "any" is both, as a user runs
// p2pnode: whichever transport gets through counts.
var listenAddrs = map[string][]string{
	"tcp":  {"/ip4/0.0.0.0/tcp/4001"},
	"quic": {"/ip4/0.0.0.0/udp/4001/quic-v1"},
	"any":  {"/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"},
}

var transports = []string{"tcp", "quic", "any"}

// listenFlags repeats flag for each listen address of transport, with port
// 0 when ephemeral.
func listenFlags(flag, transport string, ephemeral bool) []string {
	var out []string
	for _, a := range listenAddrs[transport] {
		if ephemeral {
			a = strings.Replace(a, "4001", "0", 1)
		}
		out = append(out, flag, a)
	}
	return out
}

// banner is what the target service sends first, like sshd.
const banner = "SSH-2.0-p2pnode-bench\r\n"

// Targets the table is judged against.
const (
	targetPunch     = 100 * time.Millisecond
	targetReachable = 2 * time.Second
	targetFirstByte = 3 * time.Second
)

// combo is one row of the matrix.
type combo struct {
	client, server netlab.NAT
	reject         bool // routers answer unsolicited inbound (RST / ICMP) instead of dropping it
	transport      string
	rtt            time.Duration // between the two sites; 0: the lab's plain links
}

func (c combo) pair() string { return string(c.client) + "/" + string(c.server) }

// shaped says whether the lab's links are shaped for this combo.
func (c combo) shaped() bool { return c.rtt > 0 || *flagLoss > 0 || *flagJitter > 0 }

// siteLink is a site's link to the public segment: a quarter of the RTT
// each way (two sites are one RTT apart), half the loss and jitter.
func (c combo) siteLink() netlab.Link {
	return netlab.SymmetricLink(netlab.Direction{Delay: c.rtt / 4, Loss: *flagLoss / 2,
		Jitter: time.Duration(*flagJitter / 2 * float64(time.Millisecond))})
}

// bootLink puts the relay 1.25 RTT from each site, so that the relayed path
// (2.5 RTT) is longer than the direct one, as on the internet.
func (c combo) bootLink() netlab.Link {
	return netlab.SymmetricLink(netlab.Direction{Delay: c.rtt * 3 / 8})
}

func (c combo) inbound() string {
	if c.reject {
		return "reject"
	}
	return "drop"
}

func (c combo) String() string {
	return fmt.Sprintf("%s %s %s %dms", c.pair(), c.inbound(), c.transport, c.rtt.Milliseconds())
}

// siteOpts are AddSite's options for a site of kind nat: a site without a
// router (none) has nothing to reject with.
func (c combo) siteOpts(nat netlab.NAT) []netlab.SiteOption {
	var opts []netlab.SiteOption
	if c.reject && nat != netlab.NATNone {
		opts = append(opts, netlab.RejectInbound())
	}
	if c.shaped() {
		opts = append(opts, netlab.ShapeWAN(c.siteLink()))
	}
	return opts
}

// tryResult is what one try measured.
type tryResult struct {
	reachable   time.Duration // serve start → reachable by peer ID
	reachableOK bool
	path        string        // forward's "connected" path: direct or relayed ("" if unknown)
	punch       time.Duration // relayed → direct, from forward's hole punching line
	punched     bool
	firstByte   time.Duration // forward start → first banner byte through the forward
	firstByteOK bool
	via         string   // transport of serve's direct connection to forward ("" if none)
	failure     string   // why the try did not get the banner and its echo through
	notes       []string // processes that did not stop cleanly
}

// TestNATMatrix runs every selected combination -tries times, each try in a
// fresh lab, and prints the table.
func TestNATMatrix(t *testing.T) {
	began := time.Now()
	results := make([][]tryResult, len(combos))
	for i := range results {
		results[i] = make([]tryResult, *flagTries)
	}
	// -parallel tries at once, each in a lab of its own; subtests started
	// from goroutines, as t.Parallel would queue them by GOMAXPROCS.
	slots := make(chan struct{}, *flagParallel)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, c := range combos {
		for n := 1; n <= *flagTries; n++ {
			slots <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-slots }()
				res := tryResult{failure: "harness error (see the subtest's log)"}
				name := fmt.Sprintf("%s_to_%s/%s/%s/%dms/try%d", c.client, c.server, c.inbound(), c.transport, c.rtt.Milliseconds(), n)
				ok := t.Run(name, func(t *testing.T) { res = runTry(t, c) })
				if !ok && res.failure == "" {
					res.notes = append(res.notes, "the try's subtest failed after measuring (see its log)")
				}
				mu.Lock()
				results[i][n-1] = res
				fmt.Printf("try %-40s %d/%d: %s\n", c, n, *flagTries, res.summary())
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	printTable(os.Stdout, combos, results, time.Since(began))
}

// combos is the matrix as the flags select it, set by TestMain.
var combos []combo

// selectCombos is the matrix, narrowed by -pairs, -inbound and -transports.
func selectCombos() ([]combo, error) {
	if *flagTries < 1 {
		return nil, fmt.Errorf("-tries %d: want at least 1", *flagTries)
	}
	var pairNames []string
	for _, p := range pairs {
		pairNames = append(pairNames, string(p[0])+"/"+string(p[1]))
	}
	wantPairs, err := commaList("-pairs", *flagPairs, pairNames)
	if err != nil {
		return nil, err
	}
	wantInbound, err := commaList("-inbound", *flagInbound, []string{"drop", "reject"})
	if err != nil {
		return nil, err
	}
	wantTransports, err := commaList("-transports", *flagTransports, transports)
	if err != nil {
		return nil, err
	}
	rtts, err := parseRTTs(*flagRTT)
	if err != nil {
		return nil, err
	}
	if *flagParallel < 1 {
		return nil, fmt.Errorf("-parallel %d: want at least 1", *flagParallel)
	}
	if *flagLoss < 0 || *flagLoss > 50 {
		return nil, fmt.Errorf("-loss %v: want 0 to 50 (percent)", *flagLoss)
	}
	var cs []combo
	for _, rtt := range rtts {
		if *flagJitter < 0 || time.Duration(*flagJitter*float64(time.Millisecond)) > rtt/2 {
			return nil, fmt.Errorf("-jitter %v: want 0 to RTT/2 (%v)", *flagJitter, rtt/2)
		}
		for _, p := range pairs {
			for _, reject := range []bool{false, true} {
				for _, tr := range transports {
					c := combo{client: p[0], server: p[1], reject: reject, transport: tr, rtt: rtt}
					if wantPairs[c.pair()] && wantInbound[c.inbound()] && wantTransports[tr] {
						cs = append(cs, c)
					}
				}
			}
		}
	}
	return cs, nil
}

// parseRTTs reads -rtt: a comma list of milliseconds.
func parseRTTs(s string) ([]time.Duration, error) {
	var out []time.Duration
	for _, f := range strings.Split(s, ",") {
		ms, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || ms < 0 || ms > 2000 {
			return nil, fmt.Errorf("-rtt: %q is not a round-trip time in ms from 0 to 2000", f)
		}
		out = append(out, time.Duration(ms*float64(time.Millisecond)))
	}
	return out, nil
}

// commaList parses flag value s, a comma list of some of valid ("" means
// all of them), into a set.
func commaList(flagName, s string, valid []string) (map[string]bool, error) {
	set := map[string]bool{}
	if strings.TrimSpace(s) == "" {
		for _, v := range valid {
			set[v] = true
		}
		return set, nil
	}
	for _, v := range strings.Split(s, ",") {
		v = strings.TrimSpace(v)
		if !slices.Contains(valid, v) {
			return nil, fmt.Errorf("%s: unknown %q; choose from %s", flagName, v, strings.Join(valid, ","))
		}
		set[v] = true
	}
	return set, nil
}

// runTry builds a fresh lab (conntrack state would carry over otherwise),
// starts bootstrap, serve and forward in it and measures. What the product
// fails to do is recorded in the result; t fails only for harness errors.
func runTry(t *testing.T, c combo) (res tryResult) {
	t.Helper()
	lab := netlab.New(t)
	var bootOpts []netlab.HostOption
	if c.shaped() {
		bootOpts = append(bootOpts, netlab.ShapeLink(c.bootLink()))
	}
	bootHost := lab.AddPublicHost("boot", bootOpts...)
	// A second address, so that the bootstrap node's STUN server answers
	// RFC 5780's tests and the peers know their NAT's behaviour (the hole
	// punch picks its strategy by it).
	altIP := bootHost.AddPublicIP()
	srvHost := lab.AddSite("s", c.server, c.siteOpts(c.server)...).AddHost("srv")
	cliHost := lab.AddSite("c", c.client, c.siteOpts(c.client)...).AddHost("cli")
	bootHome, bootID := initHome(t)
	srvHome, srvID := initHome(t)
	cliHome, cliID := initHome(t)
	targetAddr := startBannerTarget(t, srvHost)
	ps := newProcs(t)
	defer func() {
		res.notes = append(res.notes, ps.stopAll()...)
		if res.failure != "" || len(res.notes) > 0 || *flagShowOutput {
			t.Logf("%s: %s\n%s", c, res.summary(), ps.dump())
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), *flagTryTimeout)
	defer cancel()
	fail := func(err error) tryResult {
		res.failure = err.Error()
		return res
	}

	boot := ps.start(t, bootHost, "bootstrap", append([]string{"--home", bootHome, "bootstrap", "--nat-port-map=false", "--stun-alt-ip", altIP.String()},
		listenFlags("--listen", c.transport, false)...)...)
	prefix, suffix := "/ip4/"+bootHost.IP.String()+"/", "/p2p/"+bootID
	bootLine, err := boot.Await(ctx, boot.Stdout, "multiaddr on "+bootHost.IP.String(), func(l string) bool {
		return strings.HasPrefix(l, prefix) && strings.HasSuffix(l, suffix)
	})
	if err != nil {
		return fail(err)
	}
	bootAddr := bootLine.Text
	// Every multiaddr of the bootstrap node on its public address, as a
	// user's list has them (the public Amino list has TCP and QUIC): with
	// TCP alone, a node would join over TCP only, learn no QUIC address of
	// its own, and could not hole punch where only QUIC gets through.
	bootFlags := []string{"--bootstrap", bootAddr}
	if c.transport == "any" {
		quicLine, err := boot.Await(ctx, boot.Stdout, "QUIC multiaddr on "+bootHost.IP.String(), func(l string) bool {
			return strings.HasPrefix(l, prefix) && strings.HasSuffix(l, suffix) && strings.Contains(l, "/quic-v1/")
		})
		if err != nil {
			return fail(err)
		}
		if quicLine.Text != bootAddr {
			bootFlags = append(bootFlags, "--bootstrap", quicLine.Text)
		}
	}

	serve := ps.start(t, srvHost, "serve", append([]string{"--home", srvHome, "serve",
		"--nat-port-map=false", "--expose", "banner=" + targetAddr, "--allow", cliID}, append(bootFlags, listenFlags("--listen", c.transport, false)...)...)...)
	if res.reachable, err = reachableAfter(ctx, serve, srvHost); err != nil {
		return fail(err)
	}
	res.reachableOK = true

	target := srvID + ":banner"
	fwd := ps.start(t, cliHost, "forward", append([]string{"--home", cliHome, "forward", target,
		"--nat-port-map=false", "--listen", "127.0.0.1:0"}, append(bootFlags, listenFlags("--p2p-listen", c.transport, true)...)...)...)
	fwdLine, err := fwd.Await(ctx, fwd.Stdout, `"forwarding 127.0.0.1:PORT -> `+target+`"`, func(l string) bool {
		m := forwardingLine.FindStringSubmatch(l)
		return m != nil && m[2] == target
	})
	if err != nil {
		return fail(err)
	}
	local := forwardingLine.FindStringSubmatch(fwdLine.Text)[1]
	firstByteAt, bannerErr := readBanner(ctx, cliHost, local)
	if bannerErr == nil {
		res.firstByte, res.firstByteOK = firstByteAt.Sub(fwd.Started), true
	}

	// "connected" is logged before the forwarding line, and the hole punch
	// line before "connected": both are there (modulo pipe delivery).
	conn, err := fwd.Await(ctx, fwd.Stderr, `msg=connected`, logMsg("connected"))
	if err != nil {
		return fail(err)
	}
	res.path = logField(conn.Text, "path")
	if punch, _, found := fwd.Stderr.Find(0, logMsg("direct connection by hole punching")); found {
		took, err := time.ParseDuration(logField(punch.Text, "took"))
		if err != nil {
			return fail(fmt.Errorf("forward's hole punching line has no took=DURATION: %q", punch.Text))
		}
		res.punch, res.punched = took, true
	}
	if bannerErr != nil {
		return fail(bannerErr)
	}
	if res.path == "direct" {
		if res.via, err = directTransport(ctx, srvHome, cliID); err != nil {
			return fail(err)
		}
	}
	return res
}

var forwardingLine = regexp.MustCompile(`^forwarding (127\.0\.0\.1:[0-9]+) -> (\S+)$`)

// reachableAfter waits until serve is reachable by peer ID and returns how
// long after its start that was: behind a router, when it logged its relay
// reservation (slog's time=); on the public segment, when it printed ready.
func reachableAfter(ctx context.Context, serve *e2etest.Proc, h *netlab.Host) (time.Duration, error) {
	if h.Site == nil || h.Site.PublicIP() == nil {
		ready, err := serve.Await(ctx, serve.Stdout, `"ready: ..."`, func(l string) bool { return strings.HasPrefix(l, "ready:") })
		if err != nil {
			return 0, err
		}
		return ready.At.Sub(serve.Started), nil
	}
	line, err := serve.Await(ctx, serve.Stderr, `msg="relay reservation made"`, logMsg("relay reservation made"))
	if err != nil {
		return 0, err
	}
	at, err := time.Parse(time.RFC3339Nano, logField(line.Text, "time"))
	if err != nil {
		return 0, fmt.Errorf("serve's reservation line has no time=RFC3339: %q", line.Text)
	}
	return at.Sub(serve.Started), nil
}

// readBanner connects to the forward at addr from lab host h,
// returns when the banner's first byte arrived, and checks the whole banner
// and an echo.
func readBanner(ctx context.Context, h *netlab.Host, addr string) (time.Time, error) {
	var conn net.Conn
	err := h.Do(func() (err error) {
		var d net.Dialer
		conn, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("dial the forward at %s: %w", addr, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	r := bufio.NewReader(conn)
	first, err := r.ReadByte()
	at := time.Now()
	if err != nil {
		return at, fmt.Errorf("no banner through the forward: %w", err)
	}
	rest, err := r.ReadString('\n')
	if got := string(first) + rest; err != nil || got != banner {
		return at, fmt.Errorf("banner through the forward: got %q (%v), want %q", got, err, banner)
	}
	const ping = "ping\n"
	if _, err := io.WriteString(conn, ping); err != nil {
		return at, fmt.Errorf("write through the forward: %w", err)
	}
	if got, err := r.ReadString('\n'); err != nil || got != ping {
		return at, fmt.Errorf("echo through the forward: got %q (%v), want %q", got, err, ping)
	}
	return at, nil
}

// startBannerTarget listens on 127.0.0.1 inside h's namespace, as a
// stand-in for sshd: each connection gets the banner, then an echo. It
// returns the address; the listener and its connections close when t ends.
func startBannerTarget(t *testing.T, h *netlab.Host) string {
	t.Helper()
	tg := e2etest.Serve(t, e2etest.ListenIn(t, h), func(c *net.TCPConn) {
		if _, err := io.WriteString(c, banner); err == nil {
			_, _ = io.Copy(c, c)
		}
	})
	return tg.Addr
}

// summary is one line about a try, for progress and logs.
func (r tryResult) summary() string {
	var parts []string
	if r.path != "" {
		parts = append(parts, "path="+r.path)
	}
	if r.via != "" {
		parts = append(parts, "via="+r.via)
	}
	if r.punched {
		parts = append(parts, "relayed→direct="+r.punch.String())
	}
	if r.reachableOK {
		parts = append(parts, "reachable="+r.reachable.Round(time.Millisecond).String())
	}
	if r.firstByteOK {
		parts = append(parts, "first-byte="+r.firstByte.Round(time.Millisecond).String())
	}
	if r.failure != "" {
		parts = append(parts, "FAILED: "+r.failure)
	}
	for _, n := range r.notes {
		parts = append(parts, "note: "+n)
	}
	return strings.Join(parts, " ")
}

// row is one combination's aggregate.
type row struct {
	c                          combo
	tries, direct, failures    int
	punch, reachable, firstFwd []time.Duration
	failureReasons, notes      []string
	via                        map[string]int // direct tries by transport
}

func aggregate(c combo, results []tryResult) row {
	r := row{c: c, tries: len(results), via: map[string]int{}}
	for i, res := range results {
		if res.path == "direct" {
			r.direct++
		}
		if res.via != "" {
			r.via[res.via]++
		}
		if res.punched {
			r.punch = append(r.punch, res.punch)
		}
		if res.reachableOK {
			r.reachable = append(r.reachable, res.reachable)
		}
		if res.firstByteOK {
			r.firstFwd = append(r.firstFwd, res.firstByte)
		}
		if res.failure != "" {
			r.failures++
			r.failureReasons = append(r.failureReasons, fmt.Sprintf("try %d: %s", i+1, res.failure))
		}
		for _, n := range res.notes {
			r.notes = append(r.notes, fmt.Sprintf("try %d: %s", i+1, n))
		}
	}
	return r
}

func (r row) directPct() float64 { return 100 * float64(r.direct) / float64(r.tries) }

// viaText is how many direct tries went over each transport, e.g.
// "tcp 9, quic-v1 1", or "-".
func (r row) viaText() string {
	var parts []string
	for tr, n := range r.via {
		parts = append(parts, fmt.Sprintf("%s %d", tr, n))
	}
	if len(parts) == 0 {
		return "-"
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

// quantile is the nearest-rank q-quantile of ds (q=0.5 takes the mean of
// the two middle values of an even count); ok is false for no samples.
func quantile(ds []time.Duration, q float64) (time.Duration, bool) {
	if len(ds) == 0 {
		return 0, false
	}
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if q == 0.5 {
		n := len(s)
		if n%2 == 1 {
			return s[n/2], true
		}
		return (s[n/2-1] + s[n/2]) / 2, true
	}
	rank := int(q*float64(len(s)) + 0.999999)
	return s[max(rank, 1)-1], true
}

func ms(ds []time.Duration, q float64) string {
	d, ok := quantile(ds, q)
	if !ok {
		return "n/a"
	}
	return fmt.Sprintf("%d", d.Round(time.Millisecond).Milliseconds())
}

// printTable writes the table, the targets and what went wrong.
func printTable(w io.Writer, combos []combo, results [][]tryResult, took time.Duration) {
	rows := make([]row, len(combos))
	for i, c := range combos {
		rows[i] = aggregate(c, results[i])
	}
	fmt.Fprintf(w, "\nNAT matrix: p2pnode forward → serve, one fresh lab per try, %d tries per row, %v in all\n", *flagTries, took.Round(time.Second))
	fmt.Fprintf(w, "target service: a Go listener in the server's namespace that sends %q then echoes (a stand-in for sshd)\n", banner)
	fmt.Fprintf(w, "pair = client/server router; reject = RejectInbound() on every site with a router (none has none); transport any = TCP and QUIC both on\n")
	fmt.Fprintf(w, "links: RTT between the sites as the row says (the relay 1.25×RTT from each), loss %v %% and jitter ±%v ms between the sites\n\n", *flagLoss, *flagJitter)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RTT ms\tpair\tinbound\ttransport\ttries\tdirect %\tdirect over\trelayed→direct median ms\tp90 ms\tserve start→reachable median ms\tforward start→first byte median ms\tfailures")
	for _, r := range rows {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t%d\n", r.c.rtt.Milliseconds(), r.c.pair(), r.c.inbound(), r.c.transport, r.tries, r.directPct(),
			r.viaText(), ms(r.punch, 0.5), ms(r.punch, 0.9), ms(r.reachable, 0.5), ms(r.firstFwd, 0.5), r.failures)
	}
	tw.Flush()
	fmt.Fprintf(w, "relayed→direct: DCUtR's took= in forward's log; n/a when no hole punch happened (direct at once, or stayed relayed)\n")
	fmt.Fprintf(w, "direct over: the transport of the serving node's direct connection to the forwarding one (its status --json), per try\n")

	fmt.Fprintf(w, "\ntargets:\n")
	target(w, "100% direct when routers drop, but for pairs of symmetric NATs one of them random", rows, func(r row) (bool, string) {
		if r.c.reject || (hardNAT(r.c.client) && hardNAT(r.c.server) && (r.c.client == netlab.NATSymmetric || r.c.server == netlab.NATSymmetric)) {
			return true, ""
		}
		return r.direct == r.tries, fmt.Sprintf("%.0f%%", r.directPct())
	})
	target(w, fmt.Sprintf("relayed→direct median ≤ %d ms", targetPunch.Milliseconds()), rows, func(r row) (bool, string) {
		d, ok := quantile(r.punch, 0.5)
		return !ok || d <= targetPunch, medianDesc(d, ok)
	})
	target(w, fmt.Sprintf("serve reachable by peer ID ≤ %v (median)", targetReachable), rows, func(r row) (bool, string) {
		d, ok := quantile(r.reachable, 0.5)
		return ok && d <= targetReachable, medianDesc(d, ok)
	})
	target(w, fmt.Sprintf("forward first byte ≤ %v (median)", targetFirstByte), rows, func(r row) (bool, string) {
		d, ok := quantile(r.firstFwd, 0.5)
		return ok && d <= targetFirstByte, medianDesc(d, ok)
	})

	var problems []string
	for _, r := range rows {
		for _, f := range r.failureReasons {
			problems = append(problems, fmt.Sprintf("  %s %s", r.c, f))
		}
		for _, n := range r.notes {
			problems = append(problems, fmt.Sprintf("  %s %s", r.c, n))
		}
	}
	if len(problems) > 0 {
		fmt.Fprintf(w, "\nfailures and unclean exits:\n%s\n", strings.Join(problems, "\n"))
	}
	fmt.Fprintf(w, "end of NAT matrix\n")
}

func medianDesc(d time.Duration, ok bool) string {
	if !ok {
		return "no sample"
	}
	return fmt.Sprintf("%d ms", d.Round(time.Millisecond).Milliseconds())
}

// target prints one target: met, or the rows that miss it with their value.
func target(w io.Writer, what string, rows []row, check func(row) (bool, string)) {
	var missed []string
	for _, r := range rows {
		if ok, got := check(r); !ok {
			missed = append(missed, fmt.Sprintf("%s (%s)", r.c, got))
		}
	}
	if len(missed) == 0 {
		fmt.Fprintf(w, "  %s: met\n", what)
		return
	}
	fmt.Fprintf(w, "  %s: MISSED by %s\n", what, strings.Join(missed, ", "))
}
