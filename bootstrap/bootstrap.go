// Package bootstrap gives a libp2p host the public role of a p2pnode
// bootstrap node: it answers DHT queries (the caller builds the DHT in server
// mode), relays for private peers with a circuit relay v2 service, and tells
// peers their reachability with the AutoNAT v1 and v2 services. With
// Config.STUN it also runs a STUN server (RFC 5389, with RFC 5780's NAT
// behaviour discovery when it has two IP addresses) and tells peers where
// it is on the STUNProtocolID protocol.
//
// A bootstrap node is public by its operator's word: it is the first node of
// a network, so no other node can AutoNAT it. Joining the network (the
// bootstrap peer list, dialing with backoff) is package node's job.
//
// The caller that builds the host for this role gives it [HostOptions], the
// connection limits of [ConnLimits] and a DHT in server mode (joining no
// other bootstrap peer when it is the first of its network), then calls
// [Start] with the relay resources of [Resources].
package bootstrap

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
)

// Config tunes the bootstrap role. The zero value gives go-libp2p's default
// relay resources (circuit relay v2 spec defaults: 128 reservations, 2 min and
// 128 KiB per relayed connection).
type Config struct {
	// Relay overrides the relay v2 service's resources; nil means
	// relayv2.DefaultResources().
	Relay *relayv2.Resources
	// RelayAuthorized are the peers whose circuits between each other get no
	// limit (a serving peer and the peers that forward to it, say): the
	// relay fallback that carries data when hole punching cannot work, such
	// as between two symmetric NATs. Every other circuit keeps the limit.
	RelayAuthorized []peer.ID
	// STUN runs a STUN server (see STUNServer) and serves STUNProtocolID;
	// nil means neither. Its Logger defaults to this Config's.
	STUN *STUNConfig
	// STUNOptional makes a STUN server that cannot start (its default
	// port taken by another STUN server, say) a warning: Start goes on
	// without it. Otherwise Start fails.
	STUNOptional bool
	// Logger receives the role's logs; default slog.Default().
	Logger *slog.Logger
}

// HostOptions returns the libp2p options a bootstrap node's host must be
// built with: public reachability (forced, see the package comment) and the
// AutoNAT v1 service. go-libp2p v0.51's AutoRelay on other peers listens to
// v1's reachability verdict only; the v2 server comes with
// libp2p.EnableAutoNATv2, which package node always sets.
func HostOptions() []libp2p.Option {
	return []libp2p.Option{
		libp2p.ForceReachabilityPublic(),
		libp2p.EnableNATService(),
		// go-libp2p's defaults (30 global, 3 per peer, per minute) are made
		// for a node that serves a few peers; a bootstrap node is the first
		// one every peer asks.
		libp2p.AutoNATServiceRateLimit(300, 6, time.Minute),
	}
}

// Resources sizes the relay v2 service for a bootstrap node that accepts
// maxPeers peers at once: go-libp2p's defaults (128 reservations, 8 per IP
// address, 32 per ASN) refuse the 129th private peer, which then cannot be
// reached by peer ID. It keeps the defaults' circuit limit (2 min, 128 KiB
// each way) and raises the reservation counts to half of maxPeers in all, an
// eighth per ASN and 32 per IP address (several peers behind one NAT).
// Pass it as Config.Relay.
func Resources(maxPeers int) *relayv2.Resources {
	r := relayv2.DefaultResources()
	r.MaxReservations = max(r.MaxReservations, maxPeers/2)
	r.MaxReservationsPerIP = 32
	r.MaxReservationsPerASN = max(r.MaxReservationsPerASN, maxPeers/8)
	return &r
}

// ConnLimits returns the connection manager's low and high water marks
// (counts of connections) for a bootstrap node that accepts maxPeers peers:
// every peer joins it and many hold a relay reservation on it, so it must
// not trim connections before maxPeers; it trims back to seven eighths of
// maxPeers. The caller also lifts the resource manager's connection limits
// to maxPeers (its memory-scaled defaults stop at 252, or 64 on a 1 GiB VPS).
func ConnLimits(maxPeers int) (low, high int) {
	return maxPeers * 7 / 8, maxPeers
}

// Service is a running bootstrap role. Close stops the relay service and
// the STUN server; the host and the DHT belong to the caller.
type Service struct {
	h     host.Host
	relay *tieredRelay
	stun  *STUNServer
}

// Start attaches the relay v2 service to h and, with cfg.STUN, starts the
// STUN server and the STUNProtocolID handler. The DHT in server mode and
// the AutoNAT services come from the host's construction (see
// HostOptions). It returns an error, and leaves nothing running, when the
// relay service or the STUN server cannot start.
func Start(h host.Host, cfg Config) (*Service, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	res := relayv2.DefaultResources()
	if cfg.Relay != nil {
		res = *cfg.Relay
	}
	r, err := newTieredRelay(h, res, cfg.RelayAuthorized, log)
	if err != nil {
		return nil, fmt.Errorf("start relay v2 service: %w", err)
	}
	log.Info("relay v2 service started", "max_reservations", res.MaxReservations, "circuit_limit_bytes", limitData(res),
		"circuit_limit_duration", limitDuration(res), "authorized_peers", len(cfg.RelayAuthorized))
	svc := &Service{h: h, relay: r}
	if cfg.STUN != nil {
		if err := svc.startSTUN(*cfg.STUN, log); err != nil && cfg.STUNOptional {
			log.Warn("running without a STUN server: peers cannot test their NAT against this node", "error", err)
		} else if err != nil {
			_ = r.relay.Close()
			return nil, err
		}
	}
	return svc, nil
}

func (s *Service) startSTUN(cfg STUNConfig, log *slog.Logger) error {
	if cfg.Logger == nil {
		cfg.Logger = log
	}
	srv, err := NewSTUNServer(cfg)
	if err != nil {
		return fmt.Errorf("start STUN server: %w", err)
	}
	handler, err := stunInfoHandler(srv.Addrs())
	if err != nil {
		_ = srv.Close()
		return fmt.Errorf("start STUN server: %w", err)
	}
	s.stun = srv
	s.h.SetStreamHandler(STUNProtocolID, handler)
	return nil
}

// STUN returns the STUN server, or nil when Config.STUN was nil.
func (s *Service) STUN() *STUNServer {
	return s.stun
}

func limitData(r relayv2.Resources) int64 {
	if r.Limit == nil {
		return 0
	}
	return r.Limit.Data
}

func limitDuration(r relayv2.Resources) time.Duration {
	if r.Limit == nil {
		return 0
	}
	return r.Limit.Duration
}

// Close stops the relay service, the STUN server and its protocol handler.
func (s *Service) Close() error {
	var errs []error
	if s.stun != nil {
		s.h.RemoveStreamHandler(STUNProtocolID)
		errs = append(errs, s.stun.Close())
	}
	errs = append(errs, s.relay.relay.Close())
	return errors.Join(errs...)
}
