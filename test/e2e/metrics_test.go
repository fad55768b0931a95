package e2e

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/p2pnode/p2pnode/internal/e2etest"
)

var metricsURL = regexp.MustCompile(`url=(http://127\.0\.0\.1:[0-9]+/metrics)`)

// TestMetrics: with --metrics, serve and forward serve Prometheus metrics;
// a forward of 10 MiB moves their byte counters by at least 10 MiB, and
// go-libp2p's own metrics are there too.
func TestMetrics(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	tg := startTarget(t, func(c *net.TCPConn) { _, _ = io.Copy(io.Discard, c); _ = c.CloseWrite() })
	boot := startBootstrap(t, ctx)
	client, server := newNode(t, ctx), newNode(t, ctx)
	srv := startServe(t, ctx, server, boot, "--expose", "sink="+tg.Addr, "--allow", client.id, "--metrics", "127.0.0.1:0")
	fwd, addr := startForward(t, ctx, client, boot, server.id+":sink", "--metrics", "127.0.0.1:0")
	srvURL, fwdURL := scrapeURL(t, srv), scrapeURL(t, fwd)

	const size = 10 << 20
	c := dial(t, addr, time.Minute)
	if _, err := io.Copy(c, io.LimitReader(pseudoRandom("metrics", size), size)); err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite()
	_, _ = io.ReadAll(c) // the sink closes once it has read everything
	c.Close()

	checks := []struct {
		url, series string
	}{
		{fwdURL, `p2pnode_forward_bytes_total{direction="to_peer",service="sink",side="forward",transport="tcp"}`},
		{srvURL, `p2pnode_forward_bytes_total{direction="from_peer",service="sink",side="serve",transport="tcp"}`},
	}
	for _, ch := range checks {
		var got float64
		if !waitFor(10*time.Second, func() bool {
			got = scrape(t, ctx, ch.url)[ch.series]
			return got >= size
		}) {
			t.Errorf("%s = %.0f after a %d-byte forward, want at least %d", ch.series, got, size, size)
		}
	}
	fwdMetrics := scrape(t, ctx, fwdURL)
	if fwdMetrics[`p2pnode_forward_connections_total{path="direct",service="sink",side="forward",transport="tcp"}`] != 1 {
		t.Errorf("forward's connections_total: want 1 direct connection; metrics:\n%v", fwdMetrics)
	}
	libp2p := false
	for k := range fwdMetrics {
		libp2p = libp2p || strings.HasPrefix(k, "libp2p_")
	}
	if !libp2p {
		t.Error("no libp2p_* metrics from go-libp2p")
	}
}

// scrapeURL waits for the process to log where it serves metrics.
func scrapeURL(t *testing.T, p *e2etest.Proc) string {
	t.Helper()
	p.WaitStderr(t, 10*time.Second, "serving metrics")
	m := metricsURL.FindStringSubmatch(p.Stderr.String())
	if m == nil {
		t.Fatalf("%s: no metrics URL in its log", p.Name)
	}
	return m[1]
}

// scrape fetches url and returns its samples by series name with labels.
func scrape(t *testing.T, ctx context.Context, url string) map[string]float64 {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scraping %s: %v", url, err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}
