package overlay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	msmux "github.com/multiformats/go-multistream"
)

// DefaultResponseTimeout is how long [Dial] waits for the listener's
// response once the stream is open. It is longer than the listener's default
// target dial timeout (10 s) so that a slow target is reported as "target
// unreachable" by the listener rather than as a timeout here.
const DefaultResponseTimeout = 20 * time.Second

// DialOption configures [Dial]. Options return an error for invalid values,
// which Dial returns before opening anything.
type DialOption func(*dialConfig) error

type dialConfig struct {
	responseTimeout time.Duration
	allowLimited    bool
	protocol        protocol.ID
	prefer          []string // see WithPreferTransports
}

func newDialConfig(opts []DialOption) (dialConfig, error) {
	cfg := dialConfig{responseTimeout: DefaultResponseTimeout, protocol: ProtocolID, prefer: DefaultPreferTransports}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

// WithResponseTimeout sets how long Dial waits, after the stream is open, for
// the listener's response; d must be positive. Default
// [DefaultResponseTimeout]. The time to connect and open the stream is bounded
// by Dial's context (and by go-libp2p's own stream negotiation timeout when
// the context has no deadline).
func WithResponseTimeout(d time.Duration) DialOption {
	return func(c *dialConfig) error {
		if d <= 0 {
			return fmt.Errorf("response timeout must be positive, got %v", d)
		}
		c.responseTimeout = d
		return nil
	}
}

// WithUDP makes Dial ask for a UDP service, over UDPProtocolID: the stream
// it returns then carries framed datagrams (see UDPProtocolID).
func WithUDP() DialOption {
	return func(c *dialConfig) error {
		c.protocol = UDPProtocolID
		return nil
	}
}

// WithAllowLimitedConn lets Dial use a limited (relayed) connection. Without
// it, go-libp2p opens the stream only on a direct connection: if the only
// connection is relayed, it waits for hole punching (DCUtR) or connection
// reversal to produce a direct one, and fails if none appears in time. Relay
// v2 reservations are limited in time and bytes (go-libp2p's relay service
// defaults to 2 minutes and 128 KiB per direction), which is enough for a
// short exchange but cuts most forwarded connections short.
func WithAllowLimitedConn() DialOption {
	return func(c *dialConfig) error {
		c.allowLimited = true
		return nil
	}
}

// RefusedError is returned by [Dial] (and so by [Forwarder.Stdio]) when the
// remote peer answered with a status other than ok. Message is the remote
// peer's explanation, with control characters replaced by '?'.
type RefusedError struct {
	Peer    peer.ID // the peer that refused
	Service string  // the service name that was asked for
	Status  Status  // never StatusOK
	Message string  // the peer's explanation; may be empty
}

// Error returns, for example:
//
//	peer 12D3KooW...: service "ssh": denied: peer 12D3KooX... is not on the allow list of service "ssh"
func (e *RefusedError) Error() string {
	s := fmt.Sprintf("peer %s: service %q: %s", e.Peer, e.Service, e.Status)
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Dial opens a forward stream to peer p for the named service and returns it
// once the listener has answered ok; the caller then owns the stream, copies
// bytes through it (for instance with [Pump]) and closes or resets it.
//
// ctx bounds the whole call: connecting (through h, so a routed host may
// look p up on the DHT), opening the stream and waiting for the response.
// The response wait is also bounded by [WithResponseTimeout]. The returned
// stream has no deadline set. When p has direct connections over several
// transports, the stream goes on the one [WithPreferTransports] ranks best
// (TCP before QUIC by default); streams already open stay where they are.
//
// Errors: a refusal is a [*RefusedError] (use errors.As). A peer that does
// not speak [ProtocolID] (it runs no p2pnode serve) yields an error saying
// so; connection failures and timeouts are wrapped with %w.
func Dial(ctx context.Context, h host.Host, p peer.ID, service string, opts ...DialOption) (network.Stream, error) {
	ctx, s, cfg, err := openStream(ctx, h, p, service, opts)
	if err != nil {
		return nil, err
	}

	// The deadline covers writing the request and reading the response.
	// Cancelling ctx resets the stream, which unblocks both at once.
	start := time.Now()
	deadline := start.Add(cfg.responseTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := s.SetDeadline(deadline); err != nil {
		_ = s.Reset()
		return nil, fmt.Errorf("set a deadline on the stream to peer %s: %w", p, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })

	resp, err := exchange(s, service)
	if !stop() {
		return nil, fmt.Errorf("forward to peer %s: %w", p, ctx.Err())
	}
	if err != nil {
		_ = s.Reset()
		switch {
		case isNotSupported(err):
			return nil, notSupportedError(p)
		case isRemoteLimit(err):
			return nil, fmt.Errorf("peer %s refused the stream because its resource limits are reached; try again later: %w", p, err)
		case isTimeout(err):
			return nil, fmt.Errorf("peer %s did not answer the forward request within %v: %w", p, time.Since(start).Round(100*time.Millisecond), err)
		default:
			return nil, fmt.Errorf("forward request to peer %s failed: %w", p, err)
		}
	}
	if resp.Status != StatusOK {
		_ = s.Close()
		return nil, &RefusedError{Peer: p, Service: service, Status: resp.Status, Message: resp.Message}
	}
	if err := s.SetDeadline(time.Time{}); err != nil {
		_ = s.Reset()
		return nil, fmt.Errorf("clear the deadline on the stream to peer %s: %w", p, err)
	}
	return s, nil
}

// exchange writes the request and reads the response.
func exchange(s network.Stream, service string) (response, error) {
	if err := writeRequest(s, request{Service: service}); err != nil {
		return response{}, err
	}
	return readResponse(s)
}

// isNotSupported reports whether the remote peer rejected ProtocolID. With
// lazy negotiation (go-libp2p opens the stream optimistically when identify
// said the peer speaks the protocol) the rejection may arrive as an "na"
// answer or, when the peer's muxer then chokes on our request bytes, as a
// stream reset with code StreamProtocolNegotiationFailed.
func isNotSupported(err error) bool {
	return errors.Is(err, msmux.ErrNotSupported[protocol.ID]{}) ||
		errors.Is(err, &network.StreamError{ErrorCode: network.StreamProtocolNegotiationFailed, Remote: true})
}

// isRemoteLimit reports whether the remote peer's resource manager refused
// the stream.
func isRemoteLimit(err error) bool {
	return errors.Is(err, &network.StreamError{ErrorCode: network.StreamResourceLimitExceeded, Remote: true})
}

func notSupportedError(p peer.ID) error {
	return fmt.Errorf("peer %s does not offer %s (is `p2pnode serve` running there, with a recent version?)", p, ProtocolID)
}

// isTimeout reports whether err is a deadline expiry (yamux, QUIC and the
// net package all report it as a net.Error with Timeout true).
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// DialEarly is Dial without the wait for the answer: it opens the stream,
// sends the request and returns at once, so that the caller's first bytes
// travel with the request and a new forwarded connection costs one round
// trip less. The answer is read by the stream's first Read, which fails with
// the *RefusedError (or a read error, or a timeout after the response
// timeout) if the listener did not say ok; bytes written before that are
// then lost, as on a refused TCP connection. Use Dial where a refusal must
// be known before any byte is sent.
func DialEarly(ctx context.Context, h host.Host, p peer.ID, service string, opts ...DialOption) (network.Stream, error) {
	_, s, cfg, err := openStream(ctx, h, p, service, opts)
	if err != nil {
		return nil, err
	}
	_ = s.SetWriteDeadline(time.Now().Add(cfg.responseTimeout))
	if err := writeRequest(s, request{Service: service}); err != nil {
		_ = s.Reset()
		return nil, fmt.Errorf("forward request to peer %s failed: %w", p, err)
	}
	_ = s.SetWriteDeadline(time.Time{})
	return &earlyStream{Stream: s, peer: p, service: service, timeout: cfg.responseTimeout}, nil
}

// openStream checks Dial's arguments and opens a forward stream to p,
// attributed to ServiceName; it returns the context Dial goes on with.
func openStream(ctx context.Context, h host.Host, p peer.ID, service string, opts []DialOption) (context.Context, network.Stream, dialConfig, error) {
	cfg, err := newDialConfig(opts)
	if err != nil {
		return ctx, nil, cfg, err
	}
	if h == nil {
		return ctx, nil, cfg, errors.New("overlay: Dial needs a host")
	}
	if err := p.Validate(); err != nil {
		return ctx, nil, cfg, fmt.Errorf("peer ID %q is not valid: %w", string(p), err)
	}
	if p == h.ID() {
		return ctx, nil, cfg, fmt.Errorf("peer %s is this node itself; forward to another peer or connect to the service directly", p)
	}
	if err := CheckServiceName(service); err != nil {
		return ctx, nil, cfg, fmt.Errorf("service name %q: %w", service, err)
	}
	if cfg.allowLimited {
		ctx = network.WithAllowLimitedConn(ctx, "p2pnode forward")
	}
	s, err := newStream(ctx, h, p, cfg)
	if err != nil {
		if ctx.Err() != nil {
			// go-libp2p ends a negotiation cut short by ctx with "i/o
			// deadline reached", which hides why.
			return ctx, nil, cfg, fmt.Errorf("open a stream to peer %s: %w (%v)", p, ctx.Err(), err)
		}
		if isNotSupported(err) {
			return ctx, nil, cfg, notSupportedError(p)
		}
		return ctx, nil, cfg, fmt.Errorf("open a stream to peer %s: %w", p, err)
	}
	if err := s.Scope().SetService(ServiceName); err != nil {
		_ = s.Reset()
		return ctx, nil, cfg, fmt.Errorf("stream to peer %s refused by the local resource manager: %w", p, err)
	}
	return ctx, s, cfg, nil
}

// newStream opens a stream for cfg.protocol to p on the direct connection
// cfg.prefer ranks best when there is a choice, else (no connection yet, a
// single transport, only a relayed connection) where go-libp2p's host puts
// it, connecting first.
func newStream(ctx context.Context, h host.Host, p peer.ID, cfg dialConfig) (network.Stream, error) {
	if c := preferredConn(h, p, cfg.prefer); c != nil {
		s, err := newStreamOn(ctx, h, c, cfg.protocol)
		if !errors.Is(err, errConnNewStream) || ctx.Err() != nil {
			return s, err
		}
		// The chosen connection went away under us: the others may not.
	}
	return h.NewStream(ctx, p, cfg.protocol)
}

// earlyStream reads and checks the listener's answer on its first Read.
type earlyStream struct {
	network.Stream
	peer    peer.ID
	service string
	timeout time.Duration
	checked bool // only the reading goroutine touches it
}

func (s *earlyStream) Read(b []byte) (int, error) {
	if !s.checked {
		s.checked = true
		_ = s.Stream.SetReadDeadline(time.Now().Add(s.timeout))
		resp, err := readResponse(s.Stream)
		_ = s.Stream.SetReadDeadline(time.Time{})
		switch {
		case err != nil && isNotSupported(err):
			return 0, notSupportedError(s.peer)
		case err != nil && isTimeout(err):
			return 0, fmt.Errorf("peer %s did not answer the forward request within %v: %w", s.peer, s.timeout, err)
		case err != nil:
			return 0, fmt.Errorf("forward request to peer %s failed: %w", s.peer, err)
		case resp.Status != StatusOK:
			return 0, &RefusedError{Peer: s.peer, Service: s.service, Status: resp.Status, Message: resp.Message}
		}
	}
	return s.Stream.Read(b)
}
