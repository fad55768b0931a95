package overlay

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-msgio"
)

// ServicesProtocolID is the protocol a peer asks which services it may use
// here. The asking peer sends nothing; the answer is one varint-delimited
// JSON array of service names (at most MaxServicesSize bytes), sorted, that
// lists only the services whose allow list has that peer or that are
// public: a peer learns nothing about services it may not use.
const ServicesProtocolID protocol.ID = "/p2pnode/services/1.0.0"

// MaxServicesSize bounds the services answer, in bytes.
const MaxServicesSize = 64 << 10

// servicesFor lists the names of the services p may use.
func (s *Server) servicesFor(p peer.ID) []string {
	var names []string
	for _, svc := range s.list {
		if _, ok := s.allow[svc.Name][p]; ok || svc.Public {
			names = append(names, svc.Name)
		}
	}
	slices.Sort(names)
	return names
}

// handleServices answers a services request.
func (s *Server) handleServices(str network.Stream) {
	defer str.Close()
	if err := str.Scope().SetService(ServiceName); err != nil {
		_ = str.Reset()
		return
	}
	_ = str.SetWriteDeadline(time.Now().Add(s.cfg.requestTimeout))
	names := s.servicesFor(str.Conn().RemotePeer())
	if names == nil {
		names = []string{}
	}
	body, err := json.Marshal(names)
	if err != nil || len(body) > MaxServicesSize {
		_ = str.Reset()
		return
	}
	if err := msgio.NewVarintWriter(str).WriteMsg(body); err != nil {
		_ = str.Reset()
	}
}

// ListServices asks peer p which of its services this host may use, over
// ServicesProtocolID. opts are [Dial]'s (WithAllowLimitedConn,
// WithResponseTimeout). It returns an error when p does not run a p2pnode
// serve (the protocol is not supported) or answers badly.
func ListServices(ctx context.Context, h host.Host, p peer.ID, opts ...DialOption) ([]string, error) {
	cfg, err := newDialConfig(opts)
	if err != nil {
		return nil, err
	}
	if cfg.allowLimited {
		ctx = network.WithAllowLimitedConn(ctx, "p2pnode services")
	}
	str, err := h.NewStream(ctx, p, ServicesProtocolID)
	if err != nil {
		if isNotSupported(err) {
			return nil, fmt.Errorf("peer %s offers no services (it runs no p2pnode serve)", p)
		}
		return nil, fmt.Errorf("ask peer %s for its services: %w", p, err)
	}
	defer str.Close()
	_ = str.CloseWrite()
	_ = str.SetReadDeadline(time.Now().Add(cfg.responseTimeout))
	body, err := msgio.NewVarintReaderSize(str, MaxServicesSize).ReadMsg()
	if err != nil {
		_ = str.Reset()
		return nil, fmt.Errorf("read services of peer %s: %w", p, err)
	}
	var names []string
	if err := json.Unmarshal(body, &names); err != nil {
		return nil, fmt.Errorf("peer %s sent a bad services answer: %w", p, err)
	}
	for _, n := range names {
		if CheckServiceName(n) != nil {
			return nil, fmt.Errorf("peer %s sent a bad service name %q", p, n)
		}
	}
	return names, nil
}
