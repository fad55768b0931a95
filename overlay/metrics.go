package overlay

import (
	"errors"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts forwarded connections and their bytes, for Prometheus. A
// nil *Metrics counts nothing. Labels: side is "serve" (the peer that
// exposes the service) or "forward" (the peer that forwards a local port);
// path is "direct" or "relayed"; transport is the libp2p connection's
// transport as [ConnTransport] names it ("tcp", "quic-v1", ...; for a
// relayed connection the transport to the relay, so path and transport
// together say "relayed over tcp"); direction is "to_peer" (bytes sent into
// the libp2p stream) or "from_peer" (bytes read from it).
type Metrics struct {
	conns    *prometheus.CounterVec
	open     *prometheus.GaugeVec
	bytes    *prometheus.CounterVec
	refusals *prometheus.CounterVec
}

// NewMetrics registers the forwarding metrics (p2pnode_forward_*) on reg.
// It returns an error if reg refuses them (already registered, say).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		conns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "p2pnode_forward_connections_total",
			Help: "Forwarded TCP connections carried, by side, service, path (direct, relayed) and transport (tcp, quic-v1, ...).",
		}, []string{"side", "service", "path", "transport"}),
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "p2pnode_forward_connections_open",
			Help: "Forwarded TCP connections open now, by side, service, path (direct, relayed) and transport (tcp, quic-v1, ...).",
		}, []string{"side", "service", "path", "transport"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "p2pnode_forward_bytes_total",
			Help: "Bytes carried by forwarded connections, by side, service, direction (to_peer, from_peer) and transport (tcp, quic-v1, ...).",
		}, []string{"side", "service", "direction", "transport"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "p2pnode_forward_refusals_total",
			Help: "Forward requests refused, by side, service and reason (denied, no such service, target unreachable, bad request).",
		}, []string{"side", "service", "reason"}),
	}
	for _, c := range []prometheus.Collector{m.conns, m.open, m.bytes, m.refusals} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// refused counts a refusal.
func (m *Metrics) refused(side, service string, st Status) {
	if m == nil {
		return
	}
	m.refusals.WithLabelValues(side, service, st.String()).Inc()
}

// track counts a forwarded connection over s and returns s wrapped so that
// its bytes are counted, and a func to call when the connection ends.
func (m *Metrics) track(side, service string, s network.Stream) (network.Stream, func()) {
	if m == nil {
		return s, func() {}
	}
	path, tpt := ConnPath(s.Conn()), ConnTransport(s.Conn())
	m.conns.WithLabelValues(side, service, path, tpt).Inc()
	open := m.open.WithLabelValues(side, service, path, tpt)
	open.Inc()
	return &countingStream{
		Stream: s,
		in:     m.bytes.WithLabelValues(side, service, "from_peer", tpt),
		out:    m.bytes.WithLabelValues(side, service, "to_peer", tpt),
	}, open.Dec
}

// countingStream counts the bytes read from and written to a stream.
type countingStream struct {
	network.Stream
	in, out prometheus.Counter
}

func (s *countingStream) Read(p []byte) (int, error) {
	n, err := s.Stream.Read(p)
	s.in.Add(float64(n))
	return n, err
}

func (s *countingStream) Write(p []byte) (int, error) {
	n, err := s.Stream.Write(p)
	s.out.Add(float64(n))
	return n, err
}

// refusalStatus is the Status of a refusal error, if err is one.
func refusalStatus(err error) (Status, bool) {
	var re *RefusedError
	if errors.As(err, &re) {
		return re.Status, true
	}
	return 0, false
}
