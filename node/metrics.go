package node

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2pnode/p2pnode/node/natcheck"
)

// nodeMetrics are p2pnode's own node metrics; go-libp2p registers its own
// (swarm, identify, holepunch, relay, resource manager...) on the same
// registerer.
type nodeMetrics struct {
	punches      *prometheus.CounterVec
	timeToDirect prometheus.Histogram
	nat          *prometheus.GaugeVec
	birthday     *prometheus.CounterVec
	probes       prometheus.Counter
}

func newNodeMetrics(reg prometheus.Registerer, n *Node) (*nodeMetrics, error) {
	m := &nodeMetrics{
		punches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "p2pnode_holepunch_total",
			Help: "Upgrades of a relayed connection by DCUtR hole punching, by outcome (direct, failed).",
		}, []string{"outcome"}),
		timeToDirect: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "p2pnode_time_to_direct_seconds",
			Help:    "Time from a relayed connection to a direct one by hole punching, in seconds.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 12), // 10 ms to 20 s
		}),
	}
	m.nat = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "p2pnode_nat_info",
		Help: "The last NAT check (STUN, RFC 5780): 1 for its UDP mapping, filtering and RFC 3489 name.",
	}, []string{"mapping", "filtering", "classic"})
	m.birthday = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "p2pnode_punch_protocol_total",
		Help: "Hole punch negotiations (/p2pnode/punch/1.0.0) by strategy (dcutr, birthday, relay) and outcome (direct, failed, none).",
	}, []string{"strategy", "outcome"})
	m.probes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "p2pnode_punch_probes_total",
		Help: "UDP probes this node sent for birthday hole punches.",
	})
	reservations := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "p2pnode_relay_reservations",
		Help: "Circuit relay v2 reservations this node holds.",
	}, func() float64 { return float64(len(n.Reservations())) })
	for _, c := range []prometheus.Collector{m.punches, m.timeToDirect, m.nat, m.birthday, m.probes, reservations} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}

// punched records the outcome of one upgrade attempt.
func (m *nodeMetrics) punched(direct bool, took time.Duration) {
	if m == nil {
		return
	}
	if direct {
		m.punches.WithLabelValues("direct").Inc()
		m.timeToDirect.Observe(took.Seconds())
		return
	}
	m.punches.WithLabelValues("failed").Inc()
}

// natChecked records the last NAT check.
func (m *nodeMetrics) natChecked(r natcheck.Report) {
	if m == nil {
		return
	}
	m.nat.Reset()
	m.nat.WithLabelValues(string(r.UDP.Mapping), string(r.UDP.Filtering), r.UDP.Classic).Set(1)
}

// punchNegotiated records one PunchProtocol negotiation.
func (m *nodeMetrics) punchNegotiated(strategy string, direct bool, probes int) {
	if m == nil {
		return
	}
	outcome := "none"
	switch {
	case (strategy == strategyBirthday || strategy == strategyPredict) && direct:
		outcome = "direct"
	case strategy == strategyBirthday || strategy == strategyPredict:
		outcome = "failed"
	}
	m.birthday.WithLabelValues(strategy, outcome).Inc()
	m.probes.Add(float64(probes))
}
