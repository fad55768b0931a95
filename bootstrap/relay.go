package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	pbv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/multiformats/go-varint"
	gproto "google.golang.org/protobuf/proto"
)

// maxHopMessage bounds the first hop message we read ourselves; the relay
// itself allows 4 KiB.
const maxHopMessage = 4096

// tieredRelay runs go-libp2p's circuit relay v2 with two tiers: circuits
// whose both ends are authorized peers are unlimited, every other circuit
// keeps the limit (by default the spec's 2 min / 128 KiB each way).
//
// go-libp2p v0.51's relay has one limit for all circuits (makeLimitMsg
// ignores its peer argument), so the relay runs with infinite limits and
// this type puts the limit back for the circuits that need one: it tells
// both ends about the limit in the relay's own messages (HopMessage STATUS
// to the source, StopMessage CONNECT to the destination; that is what makes
// their clients mark the connection as limited), and enforces it on the
// source's hop stream: bytes each way, and the duration.
type tieredRelay struct {
	h          host.Host
	relay      *relayv2.Relay
	handler    network.StreamHandler
	limit      *relayv2.RelayLimit
	authorized map[peer.ID]bool
	log        *slog.Logger
}

// captureHost hands the relay a host whose hop handler we wrap, and whose
// stop streams (relay to destination) we rewrite.
type captureHost struct {
	host.Host
	tr *tieredRelay
}

func (c captureHost) SetStreamHandler(pid protocol.ID, handler network.StreamHandler) {
	if pid == proto.ProtoIDv2Hop {
		c.tr.handler = handler
		c.Host.SetStreamHandler(pid, c.tr.handleHop)
		return
	}
	c.Host.SetStreamHandler(pid, handler)
}

func (c captureHost) NewStream(ctx context.Context, p peer.ID, pids ...protocol.ID) (network.Stream, error) {
	s, err := c.Host.NewStream(ctx, p, pids...)
	if err != nil || len(pids) != 1 || pids[0] != proto.ProtoIDv2Stop {
		return s, err
	}
	// The relay's first write on a stop stream is the CONNECT naming the
	// source; the destination is p.
	return &limitStream{Stream: s, rewrite: func(raw []byte) ([]byte, bool) {
		var m pbv2.StopMessage
		if gproto.Unmarshal(raw, &m) != nil || m.GetType() != pbv2.StopMessage_CONNECT {
			return nil, false
		}
		src, err := peer.IDFromBytes(m.GetPeer().GetId())
		if err != nil || c.tr.unlimited(src, p) {
			return nil, false
		}
		m.Limit = c.tr.limitMsg()
		out, err := gproto.Marshal(&m)
		return out, err == nil
	}}, nil
}

func newTieredRelay(h host.Host, res relayv2.Resources, authorized []peer.ID, log *slog.Logger) (*tieredRelay, error) {
	tr := &tieredRelay{h: h, limit: res.Limit, authorized: make(map[peer.ID]bool), log: log}
	for _, p := range authorized {
		tr.authorized[p] = true
	}
	res.Limit = nil
	r, err := relayv2.New(captureHost{Host: h, tr: tr}, relayv2.WithResources(res), relayv2.WithInfiniteLimits())
	if err != nil {
		return nil, err
	}
	tr.relay = r
	return tr, nil
}

func (tr *tieredRelay) unlimited(a, b peer.ID) bool {
	return tr.limit == nil || (tr.authorized[a] && tr.authorized[b])
}

func (tr *tieredRelay) limitMsg() *pbv2.Limit {
	return &pbv2.Limit{
		Duration: gproto.Uint32(uint32(tr.limit.Duration / time.Second)),
		Data:     gproto.Uint64(uint64(tr.limit.Data)),
	}
}

// handleHop reads the first hop message itself to learn who the circuit
// connects, then hands the stream, replaying that message, to the relay.
func (tr *tieredRelay) handleHop(s network.Stream) {
	_ = s.SetReadDeadline(time.Now().Add(relayv2.StreamTimeout))
	raw, msg, err := readDelimited(s)
	if err != nil {
		tr.log.Debug("bad relay hop message", "peer", s.Conn().RemotePeer(), "error", err)
		_ = s.Reset()
		return
	}
	_ = s.SetReadDeadline(time.Time{})
	src := s.Conn().RemotePeer()
	var other peer.ID
	switch msg.GetType() {
	case pbv2.HopMessage_RESERVE:
		other = src // a reservation is limited unless the reserving peer is authorized
	case pbv2.HopMessage_CONNECT:
		other, err = peer.IDFromBytes(msg.GetPeer().GetId())
		if err != nil {
			tr.handler(&limitStream{Stream: s, replay: raw}) // the relay answers MALFORMED
			return
		}
	default:
		tr.handler(&limitStream{Stream: s, replay: raw})
		return
	}
	ls := &limitStream{Stream: s, replay: raw}
	if !tr.unlimited(src, other) {
		ls.rewrite = func(raw []byte) ([]byte, bool) {
			var m pbv2.HopMessage
			if gproto.Unmarshal(raw, &m) != nil || m.GetType() != pbv2.HopMessage_STATUS || m.GetStatus() != pbv2.Status_OK {
				return nil, false
			}
			m.Limit = tr.limitMsg()
			out, err := gproto.Marshal(&m)
			return out, err == nil
		}
		if msg.GetType() == pbv2.HopMessage_CONNECT {
			ls.enforce(tr.limit, func() {
				tr.log.Info("relayed connection reached its limit; authorize both peers on this relay for unlimited circuits",
					"source", src, "destination", other, "limit_bytes", tr.limit.Data, "limit_duration", tr.limit.Duration)
			})
		}
	}
	tr.handler(ls)
}

// readDelimited reads one varint-delimited HopMessage and returns its raw
// bytes (prefix included) so that they can be replayed.
func readDelimited(r io.Reader) ([]byte, *pbv2.HopMessage, error) {
	br := &byteReader{r: r}
	n, err := varint.ReadUvarint(br)
	if err != nil {
		return nil, nil, err
	}
	if n > maxHopMessage {
		return nil, nil, fmt.Errorf("hop message of %d bytes is over %d", n, maxHopMessage)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, nil, err
	}
	var msg pbv2.HopMessage
	if err := gproto.Unmarshal(body, &msg); err != nil {
		return nil, nil, err
	}
	return append(br.read, body...), &msg, nil
}

type byteReader struct {
	r    io.Reader
	read []byte
}

func (b *byteReader) ReadByte() (byte, error) {
	var one [1]byte
	if _, err := io.ReadFull(b.r, one[:]); err != nil {
		return 0, err
	}
	b.read = append(b.read, one[0])
	return one[0], nil
}

// errRelayLimit is what a limited circuit's streams fail with at its limit.
var errRelayLimit = errors.New("relay limit reached")

// limitStream wraps one relay stream: it replays bytes already read, can
// rewrite the first message written (to add the limit), and can enforce a
// limit on the bytes relayed each way and on the circuit's duration.
type limitStream struct {
	network.Stream

	replay  []byte
	rewrite func(raw []byte) ([]byte, bool)
	pending []byte // bytes of the first written message, until complete

	mu               sync.Mutex
	limited          bool
	readLeft         int64 // bytes relayed from this stream (source to destination)
	writeLeft        int64 // bytes relayed to it; counted after the handshake
	handshakeWritten bool
	onLimit          func()
	once             sync.Once
	timer            *time.Timer
}

func (s *limitStream) enforce(l *relayv2.RelayLimit, onLimit func()) {
	s.limited = true
	s.readLeft, s.writeLeft = l.Data, l.Data
	s.onLimit = onLimit
	s.timer = time.AfterFunc(l.Duration, s.cut)
}

func (s *limitStream) cut() {
	s.once.Do(func() {
		if s.onLimit != nil {
			s.onLimit()
		}
		_ = s.Stream.Reset()
	})
}

func (s *limitStream) Read(p []byte) (int, error) {
	if len(s.replay) > 0 {
		n := copy(p, s.replay)
		s.replay = s.replay[n:]
		return n, nil
	}
	if !s.limited {
		return s.Stream.Read(p)
	}
	s.mu.Lock()
	left := s.readLeft
	s.mu.Unlock()
	if left <= 0 {
		s.cut()
		return 0, errRelayLimit
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	n, err := s.Stream.Read(p)
	s.mu.Lock()
	s.readLeft -= int64(n)
	s.mu.Unlock()
	return n, err
}

func (s *limitStream) Write(p []byte) (int, error) {
	if s.rewrite != nil {
		// The relay writes its first message as a length prefix, then the
		// body (pbio's fallback path): collect it whole, then rewrite it.
		s.pending = append(s.pending, p...)
		n, k, err := varint.FromUvarint(s.pending)
		if err != nil || uint64(len(s.pending)-k) < n {
			return len(p), nil
		}
		raw := s.pending[k : k+int(n)]
		rest := s.pending[k+int(n):]
		out, ok := s.rewrite(raw)
		s.rewrite, s.pending = nil, nil
		if !ok {
			out = raw
		}
		msg := append(varint.ToUvarint(uint64(len(out))), out...)
		if _, err := s.Stream.Write(append(msg, rest...)); err != nil {
			return 0, err
		}
		s.handshakeWritten = true
		return len(p), nil
	}
	if !s.limited || !s.handshakeWritten {
		return s.Stream.Write(p)
	}
	s.mu.Lock()
	left := s.writeLeft
	s.writeLeft -= int64(len(p))
	s.mu.Unlock()
	if int64(len(p)) > left {
		if left > 0 {
			_, _ = s.Stream.Write(p[:left])
		}
		s.cut()
		return int(max(left, 0)), errRelayLimit
	}
	return s.Stream.Write(p)
}

func (s *limitStream) Close() error {
	if s.timer != nil {
		s.timer.Stop()
	}
	return s.Stream.Close()
}

func (s *limitStream) Reset() error {
	if s.timer != nil {
		s.timer.Stop()
	}
	return s.Stream.Reset()
}
