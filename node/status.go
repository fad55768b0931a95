package node

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/p2pnode/p2pnode/node/natcheck"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	ma "github.com/multiformats/go-multiaddr"
)

// Reachability is whether other peers can dial this node directly.
type Reachability string

const (
	// ReachabilityPublic: AutoNAT v1 says public, or AutoNAT v2 confirmed at
	// least one address as dialable from outside (or the role forced it, as
	// a bootstrap node does).
	ReachabilityPublic Reachability = "public"
	// ReachabilityPrivate: AutoNAT found no address that others can dial.
	ReachabilityPrivate Reachability = "private"
	// ReachabilityUnknown: AutoNAT has no verdict yet (always the case when
	// the node has no public IP address: AutoNAT only tests public ones).
	ReachabilityUnknown Reachability = "unknown"
)

// NAT mapping behaviour as go-libp2p tells it (from the addresses peers
// observe for this node's outgoing connections).
const (
	NATEndpointIndependent = "endpoint-independent"
	NATEndpointDependent   = "endpoint-dependent"
	NATUnknown             = "unknown"
)

// Status is a snapshot of what the node knows about its place in the
// network, for `p2pnode status` and the control socket.
type Status struct {
	PeerID peer.ID `json:"peer_id"`
	// Reachability combines AutoNAT v1 and v2; Since is when it last took
	// its current value, as seen by the node.
	Reachability      Reachability `json:"reachability"`
	ReachabilitySince time.Time    `json:"reachability_since"`
	// AutoNATv1 is AutoNAT v1's own verdict (public/private/unknown).
	AutoNATv1 Reachability `json:"autonat_v1"`
	// ReachableAddrs and UnreachableAddrs are the public addresses AutoNAT
	// v2 confirmed as dialable, or as not dialable, from outside.
	ReachableAddrs   []string `json:"reachable_addrs"`
	UnreachableAddrs []string `json:"unreachable_addrs"`
	// NATMapping is the NAT mapping behaviour per transport protocol; it
	// means something only when reachability is private.
	NATMapping NATMapping `json:"nat_mapping"`
	// ListenAddrs are the addresses the node's transports are bound to
	// (not the relay transport's bare /p2p-circuit: RelayReservations say
	// where the node can be reached through relays).
	ListenAddrs []string `json:"listen_addrs"`
	// AdvertisedAddrs are the addresses the node tells peers to dial it at,
	// /p2p-circuit addresses of relay reservations included.
	AdvertisedAddrs []string `json:"advertised_addrs"`
	// RelayReservations are the circuit relay v2 slots held on relays.
	RelayReservations []ReservationStatus `json:"relay_reservations"`
	// BootstrapPeers are the configured bootstrap peers.
	BootstrapPeers []BootstrapPeerStatus `json:"bootstrap_peers"`
	// Connections are the open connections, sorted by peer and age.
	Connections []ConnStatus `json:"connections"`
	// NAT is the last NAT check (STUN), absent before the first one.
	NAT *natcheck.Report `json:"nat,omitempty"`
}

// NATMapping is the NAT mapping behaviour per transport protocol:
// NATEndpointIndependent, NATEndpointDependent or NATUnknown.
type NATMapping struct {
	TCP string `json:"tcp"`
	UDP string `json:"udp"`
}

// ReservationStatus is a relay reservation: a slot on Relay that lets peers
// reach this node through the relay's /p2p-circuit address until Expiry.
type ReservationStatus struct {
	Relay  peer.ID   `json:"relay"`
	Expiry time.Time `json:"expiry"`
	// LimitDurationSeconds and LimitBytes are the relay's limits per relayed
	// connection (0: none).
	LimitDurationSeconds float64 `json:"limit_duration_s"`
	LimitBytes           uint64  `json:"limit_bytes"`
}

// BootstrapPeerStatus is a configured bootstrap peer and whether the node
// has a connection to it.
type BootstrapPeerStatus struct {
	Peer      peer.ID  `json:"peer"`
	Addrs     []string `json:"addrs"`
	Connected bool     `json:"connected"`
	// Relay says whether the peer offers a circuit relay v2: RelayOffered,
	// RelayNotOffered, or RelayUnknown before identify has answered.
	Relay string `json:"relay"`
}

// ConnStatus is one open connection.
type ConnStatus struct {
	Peer       peer.ID `json:"peer"`
	RemoteAddr string  `json:"remote_addr"`
	// Transport is the transport protocol of the connection as in its
	// multiaddr (tcp, quic-v1, webtransport, ...); for a relayed
	// connection, the one to the relay.
	Transport string `json:"transport"`
	// Path is PathDirect, or PathRelayed for a limited connection through a
	// circuit relay, in which case Relay is the relay's peer ID.
	Path  Path    `json:"path"`
	Relay peer.ID `json:"relay,omitempty"`
	// Direction is "inbound" or "outbound" (or "unknown").
	Direction string    `json:"direction"`
	OpenedAt  time.Time `json:"opened_at"`
	// RTTMillis is the peer's smoothed round-trip time (the peerstore's
	// latency EWMA, fed by pings and DHT queries); 0 when not measured.
	RTTMillis float64 `json:"rtt_ms"`
	Streams   int     `json:"streams"`
}

// Status returns a snapshot of the node's reachability, NAT mapping
// behaviour, addresses, relay reservations, bootstrap peers and connections.
func (n *Node) Status() Status {
	h := n.Host
	st := Status{
		PeerID:            h.ID(),
		ListenAddrs:       addrStrings(boundAddrs(h.Network().ListenAddresses())),
		AdvertisedAddrs:   addrStrings(h.Addrs()),
		RelayReservations: []ReservationStatus{},
		BootstrapPeers:    []BootstrapPeerStatus{},
		Connections:       []ConnStatus{},
	}
	n.reach.fill(&st)
	st.NAT = n.LastNATCheck()

	for _, r := range n.Reservations() {
		st.RelayReservations = append(st.RelayReservations, ReservationStatus{
			Relay: r.Relay, Expiry: r.Expiry,
			LimitDurationSeconds: r.LimitDuration.Seconds(), LimitBytes: r.LimitData,
		})
	}
	for _, ai := range n.BootstrapPeers() {
		if ai.ID == h.ID() {
			continue // a bootstrap node listed in its own list
		}
		st.BootstrapPeers = append(st.BootstrapPeers, BootstrapPeerStatus{
			Peer: ai.ID, Addrs: addrStrings(ai.Addrs),
			Connected: h.Network().Connectedness(ai.ID) == network.Connected,
			Relay:     offersRelay(h, ai.ID),
		})
	}
	for _, c := range h.Network().Conns() {
		st.Connections = append(st.Connections, connStatus(h, c))
	}
	slices.SortFunc(st.Connections, func(a, b ConnStatus) int {
		if c := strings.Compare(a.Peer.String(), b.Peer.String()); c != 0 {
			return c
		}
		return a.OpenedAt.Compare(b.OpenedAt)
	})
	return st
}

func connStatus(h host.Host, c network.Conn) ConnStatus {
	stat := c.Stat()
	remote := c.RemoteMultiaddr()
	cs := ConnStatus{
		Peer:       c.RemotePeer(),
		RemoteAddr: remote.String(),
		Path:       PathDirect,
		Direction:  direction(stat.Direction),
		OpenedAt:   stat.Opened,
		RTTMillis:  millis(h.Peerstore().LatencyEWMA(c.RemotePeer())),
		Streams:    stat.NumStreams,
	}
	// A relayed connection's remote address is
	// RELAYADDR/p2p/RELAY/p2p-circuit(/p2p/PEER).
	hop := remote
	if i := slices.IndexFunc(remote, func(c ma.Component) bool { return c.Code() == ma.P_CIRCUIT }); i >= 0 {
		hop = remote[:i]
		if i > 0 && remote[i-1].Code() == ma.P_P2P {
			if id, err := peer.Decode(remote[i-1].Value()); err == nil {
				cs.Relay = id
			}
		}
	}
	if stat.Limited || isRelayAddr(remote) {
		cs.Path = PathRelayed
	}
	cs.Transport = transportOf(hop)
	if cs.Transport == "" {
		cs.Transport = c.ConnState().Transport
	}
	return cs
}

// transportOf names the transport of a multiaddr: the innermost of the
// protocols that carry libp2p connections.
func transportOf(a ma.Multiaddr) string {
	name := ""
	for _, c := range a {
		switch c.Code() {
		case ma.P_TCP, ma.P_QUIC, ma.P_QUIC_V1, ma.P_WS, ma.P_WSS, ma.P_WEBTRANSPORT,
			ma.P_WEBRTC_DIRECT, ma.P_WEBRTC:
			name = c.Protocol().Name
		case ma.P_CIRCUIT:
			return name
		}
	}
	return name
}

// boundAddrs drops the relay transport's /p2p-circuit "listen address".
func boundAddrs(addrs []ma.Multiaddr) []ma.Multiaddr {
	return slices.DeleteFunc(slices.Clone(addrs), func(a ma.Multiaddr) bool {
		return len(a) > 0 && a[0].Code() == ma.P_CIRCUIT
	})
}

func direction(d network.Direction) string {
	switch d {
	case network.DirInbound:
		return "inbound"
	case network.DirOutbound:
		return "outbound"
	default:
		return "unknown"
	}
}

func millis(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}

func addrStrings(addrs []ma.Multiaddr) []string {
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, a.String())
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// PingResult is what Ping measured.
type PingResult struct {
	Peer peer.ID `json:"peer"`
	// Path is how the node was connected to Peer after Connect.
	Path  Path      `json:"path"`
	Pings []PingRTT `json:"pings"`
}

// PingRTT is one ping's round-trip time and the path it took.
type PingRTT struct {
	RTTMillis float64 `json:"rtt_ms"`
	Path      Path    `json:"path"`
}

// maxPingCount bounds Ping's count.
const maxPingCount = 100

// Ping connects to p (see Connect: a DHT lookup, relay, hole punch) and
// measures count round trips with libp2p's ping protocol, one after the
// other on one stream. On an error it returns the pings done so far with it.
func (n *Node) Ping(ctx context.Context, p peer.ID, count int) (PingResult, error) {
	res := PingResult{Peer: p, Path: PathNone, Pings: []PingRTT{}}
	if count < 1 || count > maxPingCount {
		return res, fmt.Errorf("ping count %d out of range 1..%d", count, maxPingCount)
	}
	path, err := n.Connect(ctx, p)
	res.Path = path
	if err != nil {
		return res, err
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := ping.Ping(pctx, n.Host, p)
	for len(res.Pings) < count {
		select {
		case r, ok := <-results:
			if !ok {
				return res, fmt.Errorf("ping %s: %w", p, context.Cause(pctx))
			}
			if r.Error != nil {
				return res, fmt.Errorf("ping %s: %w", p, r.Error)
			}
			// The swarm opens streams on a direct connection when there is
			// one, so the path now is the path the ping took.
			res.Pings = append(res.Pings, PingRTT{RTTMillis: millis(r.RTT), Path: n.PathTo(p)})
		case <-ctx.Done():
			return res, fmt.Errorf("ping %s: %w", p, ctx.Err())
		}
	}
	return res, nil
}
