package overlay

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestMetrics(t *testing.T) {
	for _, tr := range []struct{ transport, label string }{{"tcp", "tcp"}, {"quic", "quic-v1"}} {
		t.Run(tr.transport, func(t *testing.T) { testMetrics(t, tr.transport, tr.label) })
	}
}

// testMetrics forwards over one transport, whose name in the transport
// label is tpt.
func testMetrics(t *testing.T, transport, tpt string) {
	echoAddr := startTarget(t, echo)
	srvMetrics, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	fwdMetrics, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, transport, func(peer.ID) []Service {
		return []Service{
			{Name: "echo", Target: echoAddr, Public: true},
			{Name: "closed", Target: echoAddr},
		}
	}, WithMetrics(srvMetrics))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fw := &Forwarder{Host: f.client, Peer: f.server.ID(), Service: "echo", Metrics: fwdMetrics}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fw.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })

	const size = 1 << 20
	c := dialTCP(t, ln.Addr().String())
	data := randomBytes(7, size)
	go func() { _, _ = c.Write(data); _ = c.CloseWrite() }()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("echo through the forward: %d bytes, %v", len(got), err)
	}
	c.Close()

	// The counters settle once both pumps have returned.
	waitUntil(5*time.Second, func() bool {
		return value(t, srvMetrics.open.WithLabelValues("serve", "echo", "direct", tpt)) == 0 &&
			value(t, fwdMetrics.open.WithLabelValues("forward", "echo", "direct", tpt)) == 0
	})
	for _, tc := range []struct {
		m          *Metrics
		side       string
		dir        string
		atLeastMiB float64
	}{
		{srvMetrics, "serve", "from_peer", 1}, {srvMetrics, "serve", "to_peer", 1},
		{fwdMetrics, "forward", "from_peer", 1}, {fwdMetrics, "forward", "to_peer", 1},
	} {
		if got := value(t, tc.m.bytes.WithLabelValues(tc.side, "echo", tc.dir, tpt)); got < size {
			t.Errorf("%s %s bytes = %.0f, want at least %d", tc.side, tc.dir, got, size)
		}
	}
	for _, m := range []*Metrics{srvMetrics, fwdMetrics} {
		side := map[*Metrics]string{srvMetrics: "serve", fwdMetrics: "forward"}[m]
		if got := value(t, m.conns.WithLabelValues(side, "echo", "direct", tpt)); got != 1 {
			t.Errorf("%s connections_total = %v, want 1", side, got)
		}
		if got := value(t, m.open.WithLabelValues(side, "echo", "direct", tpt)); got != 0 {
			t.Errorf("%s connections_open = %v after close, want 0", side, got)
		}
	}

	// A refusal is counted on both sides.
	fw2 := &Forwarder{Host: f.client, Peer: f.server.ID(), Service: "closed", Metrics: fwdMetrics}
	if err := fw2.Stdio(context.Background(), bytes.NewReader(nil), nopWriteCloser{io.Discard}); err == nil {
		t.Fatal("forward to a service with no allow list succeeded")
	}
	if got := value(t, srvMetrics.refusals.WithLabelValues("serve", "closed", "denied")); got != 1 {
		t.Errorf("serve refusals{denied} = %v, want 1", got)
	}
	if got := value(t, fwdMetrics.refusals.WithLabelValues("forward", "closed", "denied")); got != 1 {
		t.Errorf("forward refusals{denied} = %v, want 1", got)
	}
}

// value reads a counter's or gauge's current value.
func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}
