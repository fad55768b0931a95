package overlay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	basichost "github.com/libp2p/go-libp2p/p2p/host/basic"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
	ma "github.com/multiformats/go-multiaddr"
	msmux "github.com/multiformats/go-multistream"
)

// DefaultPreferTransports is the order in which [Dial] prefers the direct
// connections to a peer when it has several: TCP first, then QUIC.
//
// go-libp2p's swarm picks, among direct unlimited connections, the one with
// the most streams, and its dial ranking and hole punching end on QUIC when
// both transports are on. On loopback a forward over TCP + TLS + yamux
// carried about 4× the bytes per CPU second of one over QUIC (README,
// Performance), so a forward prefers TCP wherever a direct TCP connection
// exists, and keeps QUIC where there is none.
var DefaultPreferTransports = []string{"tcp", "quic-v1"}

// WithPreferTransports sets the order in which Dial prefers the direct
// connections to the peer by transport, the multiaddr protocol names as
// [ConnTransport] returns them ("tcp", "quic-v1", "webtransport", ...).
// Default [DefaultPreferTransports]. With no names, Dial leaves the choice to
// go-libp2p (the direct connection with the most streams).
//
// The choice applies to each new stream: streams already open stay on their
// connection until they end. It only chooses among connections that exist;
// Dial never opens a second connection for it. A transport not in the list
// ranks after every listed one; among connections of one rank go-libp2p's
// rule decides (most streams, then the newest). Limited (relayed)
// connections are never chosen while a direct one exists, as in go-libp2p.
//
// Errors: a name that is not a multiaddr protocol.
func WithPreferTransports(names ...string) DialOption {
	return func(c *dialConfig) error {
		for _, n := range names {
			if p := ma.ProtocolWithName(n); p.Code == 0 {
				return fmt.Errorf("prefer transports: %q is not a multiaddr protocol name (e.g. tcp, quic-v1)", n)
			}
		}
		c.prefer = slices.Clone(names)
		return nil
	}
}

// ConnTransport names the transport of c as its remote multiaddr says:
// "tcp", "quic-v1", "webtransport", "ws", "webrtc-direct", ... For a relayed
// connection (/p2p-circuit) it is the transport of the connection to the
// relay, as node's status reports it; whether a connection is relayed is
// [ConnPath]'s answer. "" if the multiaddr names no known transport.
func ConnTransport(c network.Conn) string {
	name := ""
	for _, comp := range c.RemoteMultiaddr() {
		switch comp.Code() {
		case ma.P_TCP, ma.P_QUIC, ma.P_QUIC_V1, ma.P_WS, ma.P_WSS, ma.P_WEBTRANSPORT,
			ma.P_WEBRTC_DIRECT, ma.P_WEBRTC:
			name = comp.Protocol().Name
		case ma.P_CIRCUIT:
			return name
		}
	}
	return name
}

// ConnPath is "relayed" for a limited connection or one through a circuit
// relay, else "direct".
func ConnPath(c network.Conn) string {
	if isRelayed(c) {
		return "relayed"
	}
	return "direct"
}

func isRelayed(c network.Conn) bool {
	_, err := c.RemoteMultiaddr().ValueForProtocol(ma.P_CIRCUIT)
	return err == nil || c.Stat().Limited
}

// preferredConn returns the direct connection to p that prefer ranks best,
// or nil when there is no choice to make: fewer than two direct
// connections, or all of one rank (go-libp2p's own choice then stands).
func preferredConn(h host.Host, p peer.ID, prefer []string) network.Conn {
	if len(prefer) == 0 {
		return nil
	}
	rank := func(c network.Conn) int {
		if i := slices.Index(prefer, ConnTransport(c)); i >= 0 {
			return i
		}
		return len(prefer)
	}
	var best network.Conn
	bestRank, ranks := 0, 0
	for _, c := range h.Network().ConnsToPeer(p) {
		if c.IsClosed() || isRelayed(c) {
			continue
		}
		r := rank(c)
		ranks |= 1 << min(r, 62)
		if best == nil || r < bestRank || r == bestRank && !fewerStreams(c, best) {
			best, bestRank = c, r
		}
	}
	if ranks&(ranks-1) == 0 {
		return nil // zero or one rank among the direct connections
	}
	return best
}

// fewerStreams is go-libp2p's tie-break (swarm.isBetterConn) inverted: c
// loses to best only if it carries fewer streams; on a tie the later one in
// the swarm's list wins, as there.
func fewerStreams(c, best network.Conn) bool {
	return c.Stat().NumStreams < best.Stat().NumStreams
}

// errConnNewStream marks a failure to open a stream on the chosen
// connection itself (it was closing, say), before any negotiation.
var errConnNewStream = errors.New("failed to open stream")

// newStreamOn opens a stream for proto on the connection c to p, the way
// go-libp2p's basic host opens one on the connection its swarm picks
// (basichost.BasicHost.NewStream): the negotiation is bounded by ctx, or by
// basichost.DefaultNegotiationTimeout when ctx has no deadline; it waits for
// identify on c when the host exposes its identify service; when the
// peerstore says p speaks proto, the stream is returned at once and
// multistream-select runs lazily with the first write (so the request
// travels with the protocol proposal); otherwise it negotiates first and
// records proto in the peerstore. The protocol is set on the stream before
// it is returned, so that the resource manager scopes it to proto.
func newStreamOn(ctx context.Context, h host.Host, c network.Conn, proto protocol.ID) (_ network.Stream, err error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, basichost.DefaultNegotiationTimeout)
		defer cancel()
	}
	p := c.RemotePeer()
	s, err := c.NewStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errConnNewStream, err)
	}
	defer func() {
		if err != nil {
			_ = s.ResetWithError(network.StreamProtocolNegotiationFailed)
		}
	}()
	if ids, ok := h.(interface{ IDService() identify.IDService }); ok {
		select {
		case <-ids.IDService().IdentifyWait(c):
		case <-ctx.Done():
			return nil, fmt.Errorf("identify failed to complete: %w", ctx.Err())
		}
	}
	supported, err := h.Peerstore().SupportsProtocols(p, proto)
	if err != nil {
		return nil, err
	}
	if len(supported) > 0 {
		if err := s.SetProtocol(proto); err != nil {
			return nil, err
		}
		return &lazyStream{Stream: s, rw: msmux.NewMSSelect(s, proto)}, nil
	}
	errCh := make(chan error, 1)
	go func() { errCh <- msmux.SelectProtoOrFail(proto, s) }()
	select {
	case err = <-errCh:
		if err != nil {
			return nil, fmt.Errorf("failed to negotiate protocol: %w", err)
		}
	case <-ctx.Done():
		_ = s.ResetWithError(network.StreamProtocolNegotiationFailed)
		<-errCh // SelectProtoOrFail returns once the stream is reset
		return nil, fmt.Errorf("failed to negotiate protocol: %w", ctx.Err())
	}
	if err := s.SetProtocol(proto); err != nil {
		_ = s.ResetWithError(network.StreamResourceLimitExceeded)
		return nil, err
	}
	_ = h.Peerstore().AddProtocols(p, proto) // bookkeeping only, as in basichost
	return s, nil
}

// lazyStream is basichost's streamWrapper: reads and writes go through the
// lazy multistream-select client, which sends the protocol proposal with the
// first write and checks the answer on the first read.
type lazyStream struct {
	network.Stream
	rw io.ReadWriteCloser
}

func (s *lazyStream) Read(b []byte) (int, error)  { return s.rw.Read(b) }
func (s *lazyStream) Write(b []byte) (int, error) { return s.rw.Write(b) }

// Close bounds the wait for the handshake's answer, which Close reads (see
// go-multistream issue 47).
func (s *lazyStream) Close() error {
	_ = s.Stream.SetReadDeadline(time.Now().Add(basichost.DefaultNegotiationTimeout))
	return s.rw.Close()
}

// CloseWrite flushes a handshake not yet sent; an error there shows on the
// next read.
func (s *lazyStream) CloseWrite() error {
	if f, ok := s.rw.(interface{ Flush() error }); ok {
		_ = f.Flush()
	}
	return s.Stream.CloseWrite()
}

// Carrier is one connection to a peer that carries forwarded connections.
type Carrier struct {
	Transport string `json:"transport"` // as ConnTransport names it
	Path      string `json:"path"`      // "direct" or "relayed"
	Streams   int    `json:"streams"`   // forward streams (TCP and UDP) open on it
}

// Carriers lists the connections to p that carry forward streams (of
// [ProtocolID] or [UDPProtocolID], opened by either side) and how many each
// carries, oldest connection first: what `status` shows for a forward. A
// forward whose connection changed has streams on both the old and the new
// one until the old ones end.
func Carriers(h host.Host, p peer.ID) []Carrier {
	var out []Carrier
	for _, c := range h.Network().ConnsToPeer(p) {
		n := 0
		for _, s := range c.GetStreams() {
			if pr := s.Protocol(); pr == ProtocolID || pr == UDPProtocolID {
				n++
			}
		}
		if n > 0 {
			out = append(out, Carrier{Transport: ConnTransport(c), Path: ConnPath(c), Streams: n})
		}
	}
	return out
}
