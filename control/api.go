// The API and its request and result types: one JSON schema, versioned by
// APIVersion, that both implementations speak.

package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2pnode/p2pnode/node"
	"github.com/p2pnode/p2pnode/node/natcheck"
	"github.com/p2pnode/p2pnode/overlay"
)

// APIVersion is the version of the control socket's JSON schema. A client
// and a daemon of different versions refuse each other with an error that
// names both.
const APIVersion = 2

// API is what p2pnode's commands ask of a node.
type API interface {
	// Status returns the node's status and the persistent forwards.
	Status(ctx context.Context) (Status, error)
	// Ping connects to req.Peer and measures req.Count round trips; on an
	// error it also returns the pings done before it.
	Ping(ctx context.Context, req PingRequest) (node.PingResult, error)
	// Find looks name up on the DHT and asks every peer found which
	// services it lets this node use.
	Find(ctx context.Context, name string) ([]FoundPeer, error)
	// Forward connects to req.Target, listens on req.Listen (TCP, or UDP
	// if req.UDP), calls ready once it listens, and forwards until ctx
	// ends (nil) or the forward fails (an error).
	Forward(ctx context.Context, req ForwardRequest, ready func(Listening)) error
	// ForwardStdio carries one connection to t over in and out: the end
	// of in closes the write side, and out is closed once the remote side
	// has finished. ready, if not nil, is called once the stream to the
	// peer is open, before any byte is carried.
	ForwardStdio(ctx context.Context, t Target, in io.Reader, out io.WriteCloser, ready func()) error
	// Persist starts a TCP forward that the daemon keeps after the call,
	// until ClosePersistent or the daemon stops.
	Persist(ctx context.Context, req ForwardRequest) (Listening, error)
	// ClosePersistent stops the persistent forward listening on listen;
	// its open connections still get the shutdown grace period.
	ClosePersistent(ctx context.Context, listen string) error
	// NAT tests the NAT in front of the node's QUIC port with STUN, asking
	// req.STUN first, then the node's configured and announced servers.
	NAT(ctx context.Context, req NATRequest) (natcheck.Report, error)
}

// NATRequest asks for a NAT check.
type NATRequest struct {
	// STUN are STUN servers to ask first (IP and UDP port).
	STUN []netip.AddrPort `json:"stun,omitempty"`
}

// Target is what a forward reaches: Service on the peer Peer, or on one of
// the peers that advertise Name on the DHT. Exactly one of Peer and Name is
// set. On the wire it is its text form, PEERID:SERVICE or NAME/SERVICE.
type Target struct {
	Peer    peer.ID
	Name    string
	Service string
}

// ParseTarget reads PEERID:SERVICE (e.g. 12D3KooW...:22) or NAME/SERVICE
// (e.g. movie-night/web); a peer ID never holds a colon or a slash. Its
// errors are *InputError.
func ParseTarget(s string) (Target, error) {
	if name, svc, ok := strings.Cut(s, "/"); ok {
		if err := overlay.CheckServiceName(name); err != nil {
			return Target{}, BadInput("bad target %q: name %q: %v", s, name, err)
		}
		if err := overlay.CheckServiceName(svc); err != nil {
			return Target{}, BadInput("bad target %q: service %q: %v", s, svc, err)
		}
		return Target{Name: name, Service: svc}, nil
	}
	idStr, svc, ok := strings.Cut(s, ":")
	if !ok || idStr == "" || svc == "" {
		return Target{}, BadInput("bad target %q: expected PEERID:SERVICE (e.g. 12D3KooW...:22) or NAME/SERVICE (e.g. movie-night/web)", s)
	}
	id, err := node.ParsePeerID(idStr)
	if err != nil {
		return Target{}, BadInput("bad target %q: %v", s, err)
	}
	return Target{Peer: id, Service: svc}, nil
}

// String returns the text form ParseTarget reads.
func (t Target) String() string {
	if t.Name != "" {
		return t.Name + "/" + t.Service
	}
	return t.Peer.String() + ":" + t.Service
}

// MarshalText implements encoding.TextMarshaler.
func (t Target) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler with ParseTarget.
func (t *Target) UnmarshalText(b []byte) error {
	v, err := ParseTarget(string(b))
	if err != nil {
		return err
	}
	*t = v
	return nil
}

// ForwardRequest asks for a forward from a local address.
type ForwardRequest struct {
	Target Target `json:"target"`
	// Listen is the local HOST:PORT to accept on (port 0: a free one).
	Listen string `json:"listen"`
	// UDP forwards datagrams to a UDP service instead of TCP connections.
	UDP bool `json:"udp,omitempty"`
	// Timeout bounds finding and connecting to the peer, for the forward
	// and for each redial (zero: DefaultConnectTimeout).
	Timeout time.Duration `json:"timeout_ns,omitempty"`
	// Grace is how long open connections may take to finish once the
	// forward stops; those still open then are reset.
	Grace time.Duration `json:"grace_ns,omitempty"`
}

// Listening says where a forward accepts and which peer it reached (for a
// name, the one chosen).
type Listening struct {
	Addr string  `json:"addr"`
	Peer peer.ID `json:"peer"`
}

// PingRequest asks for Count pings of Peer, all done within Timeout (zero:
// one minute).
type PingRequest struct {
	Peer    peer.ID       `json:"peer"`
	Count   int           `json:"count"`
	Timeout time.Duration `json:"timeout_ns,omitempty"`
}

// Status is the node's status and the forwards the daemon keeps.
type Status struct {
	node.Status
	// PersistentForwards lists them by age, oldest first.
	PersistentForwards []PersistentForward `json:"persistent_forwards"`
}

// PersistentForward is one forward started with `forward --persist`.
type PersistentForward struct {
	Listen  string    `json:"listen"`  // local HOST:PORT it accepts on
	Target  Target    `json:"target"`  // as given
	Peer    peer.ID   `json:"peer"`    // the peer it resolved to
	Started time.Time `json:"started"` // when it began listening
	// Carriers are the connections to Peer that carry forward streams now:
	// transport, direct or relayed, and how many streams.
	Carriers []overlay.Carrier `json:"carriers"`
}

// FoundPeer is one peer that advertises a name: the path to it and the
// services it lets the asking peer use, or why it could not be asked.
type FoundPeer struct {
	Peer     peer.ID  `json:"peer"`
	Path     string   `json:"path"`
	Services []string `json:"services"`
	Error    string   `json:"error,omitempty"`
}

// InputError is a request refused as malformed: bad input, which the CLI
// reports with exit code 2.
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// BadInput returns an *InputError with a formatted message.
func BadInput(format string, args ...any) error {
	return &InputError{fmt.Errorf(format, args...)}
}

// ErrNoDaemon says that an operation needs the long-running daemon (a
// persistent forward outlives the command that asked for it).
var ErrNoDaemon = errors.New("this needs a running `p2pnode serve`")

// MaxPingCount bounds PingRequest.Count.
const MaxPingCount = 100

// CheckPing returns an *InputError when req cannot be done.
func CheckPing(req PingRequest) error {
	if req.Count < 1 || req.Count > MaxPingCount {
		return BadInput("bad ping count %d: must be 1 to %d", req.Count, MaxPingCount)
	}
	if req.Timeout < 0 {
		return BadInput("bad ping timeout %s: must be positive, e.g. 30s", req.Timeout)
	}
	return nil
}

// NotFoundError says that what a request names does not exist.
type NotFoundError struct{ Err error }

func (e *NotFoundError) Error() string { return e.Err.Error() }
func (e *NotFoundError) Unwrap() error { return e.Err }
