package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/filecoin-project/go-clock"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/transport/quicreuse"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/p2pnode/p2pnode/node/natcheck"
)

// STUNInfoProtocol is the protocol on which a p2pnode bootstrap node tells
// a peer where its STUN server is: it writes one JSON object,
// {"servers":["IP:PORT",...],"other":"IP:PORT"}, and closes the stream.
// Package bootstrap serves it; node only reads it.
const STUNInfoProtocol protocol.ID = "/p2pnode/stun/1.0.0"

// maxSTUNInfo bounds a STUN info answer, in bytes: a remote peer is
// untrusted, and a real answer is a few addresses.
const maxSTUNInfo = 4 << 10

// natRecheck is how often a node tests its NAT again: mappings change when a
// router reboots or a laptop moves, and a test costs a few packets.
const natRecheck = 30 * time.Minute

// natChecker runs NAT checks for a node and keeps the last report.
type natChecker struct {
	h       host.Host
	log     *slog.Logger
	clk     clock.Clock
	static  []netip.AddrPort // Config.STUNServers
	boot    []peer.AddrInfo
	quic    *quicreuse.ConnManager
	checked func(natcheck.Report)
	// learned, if not nil, gets the public addresses of the node's own
	// listen ports that each check found (see natAddrs).
	learned func([]ma.Multiaddr)

	mu   sync.Mutex
	last *natcheck.Report
	// run admits one check at a time, and holds checks off while a
	// port-predicting hole punch counts this NAT's new mappings (hold).
	// Capacity 1; made with the checker.
	run chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

// Start tests the mapping once the node has joined; with full, then the
// whole NAT, every natRecheck and when the node's addresses change, until
// Close.
func (c *natChecker) Start(joined <-chan struct{}, full bool) {
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.done = make(chan struct{})
	sub, err := c.h.EventBus().Subscribe(new(event.EvtLocalAddressesUpdated))
	if err != nil {
		c.log.Debug("NAT check: no address events", "error", err)
	}
	go func() {
		defer close(c.done)
		var changes <-chan any
		if sub != nil {
			defer sub.Close()
			changes = sub.Out()
		}
		select {
		case <-joined:
		case <-c.ctx.Done():
			return
		}
		t := c.clk.Ticker(natRecheck)
		defer t.Stop()
		// First the mapping alone (a few answered round trips), kept as the
		// last report until the full check (with its filtering tests'
		// timeouts) ends: a hole punch right after joining picks its
		// strategy by the mapping, and must not wait for the rest.
		qctx, qcancel := context.WithTimeout(c.ctx, 20*time.Second)
		if _, err := c.check(qctx, true, true); err != nil && c.ctx.Err() == nil {
			c.log.Debug("NAT check (mapping)", "error", err)
		}
		qcancel()
		if !full {
			return
		}
		// Address changes come in bursts (every observed address, every
		// relay reservation): they are coalesced into one check at most
		// every natChangeMinInterval.
		var pending <-chan time.Time
		for {
			ctx, cancel := context.WithTimeout(c.ctx, time.Minute)
			if _, err := c.Check(ctx); err != nil && c.ctx.Err() == nil {
				c.log.Debug("NAT check", "error", err)
			}
			cancel()
			last := c.clk.Now()
		wait:
			for {
				select {
				case <-t.C:
					break wait
				case <-pending:
					pending = nil
					break wait
				case e := <-changes:
					if pending == nil && directAddrsChanged(e) {
						pending = c.clk.After(max(0, natChangeMinInterval-c.clk.Since(last)))
					}
				case <-c.ctx.Done():
					return
				}
			}
		}
	}()
}

// natChangeMinInterval spaces the checks that address changes start.
const natChangeMinInterval = 2 * time.Minute

// directAddrsChanged says whether an address update added or removed a
// direct address (not a relay's /p2p-circuit one): what a new network
// looks like.
func directAddrsChanged(e any) bool {
	u, ok := e.(event.EvtLocalAddressesUpdated)
	if !ok {
		return false
	}
	for _, a := range append(slices.Clone(u.Current), u.Removed...) {
		if a.Action != event.Maintained && !isRelayAddr(a.Address) {
			return true
		}
	}
	return false
}

// Close stops the background checks and waits for them.
func (c *natChecker) Close() {
	if c.cancel != nil {
		c.cancel()
		<-c.done
	}
}

// hold waits until no check runs and keeps checks from starting until
// release is called. A check opens new mappings in the NAT (fresh
// sockets), which moves a sequential NAT's next port away from where a
// port-predicting hole punch counts on it. It fails only when ctx ends.
func (c *natChecker) hold(ctx context.Context) (release func(), err error) {
	select {
	case c.run <- struct{}{}:
		return func() { <-c.run }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the NAT check in flight: %w", ctx.Err())
	}
}

// tryHold is hold without the wait: with a check in flight it returns
// held false (and a release that does nothing).
func (c *natChecker) tryHold() (release func(), held bool) {
	select {
	case c.run <- struct{}{}:
		return func() { <-c.run }, true
	default:
		return func() {}, false
	}
}

// Last is the last report, nil before the first check ended.
func (c *natChecker) Last() *natcheck.Report {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// Check runs one NAT check from the node's QUIC port (which is what hole
// punching uses) against the configured STUN servers and those the
// connected bootstrap peers announce.
func (c *natChecker) Check(ctx context.Context, extra ...netip.AddrPort) (natcheck.Report, error) {
	return c.check(ctx, false, true, extra...)
}

// Mapping is the last check's report, or else a quick one of the mapping
// alone (not kept as the last report), for a hole punch to choose how.
func (c *natChecker) Mapping(ctx context.Context) (natcheck.Report, error) {
	if last := c.Last(); last != nil {
		return *last, nil
	}
	return c.check(ctx, true, false)
}

// check runs a check; store keeps it as the last report (a mapping-only one
// only while there is none).
func (c *natChecker) check(ctx context.Context, mappingOnly, store bool, extra ...netip.AddrPort) (natcheck.Report, error) {
	release, err := c.hold(ctx)
	if err != nil {
		return natcheck.Report{}, err
	}
	defer release()
	if mappingOnly && !store {
		// Mapping waited for the check in flight: its result will do.
		if last := c.Last(); last != nil {
			return *last, nil
		}
	}
	servers := slices.Clone(extra)
	for _, s := range append(slices.Clone(c.static), c.discover(ctx)...) {
		if !slices.Contains(servers, s) {
			servers = append(servers, s)
		}
	}
	if len(servers) == 0 {
		return natcheck.Report{}, errors.New("no STUN server known: no bootstrap peer announced one, and none was given with --stun HOST:PORT")
	}
	cfg := natcheck.Config{Servers: servers, MappingOnly: mappingOnly, TCPPort: c.tcpListenPort()}
	if conn, err := c.sharedQUICConn(); err == nil {
		defer conn.Close()
		cfg.Conn = conn
	} else {
		c.log.Debug("NAT check: testing from a fresh port", "error", err)
	}
	rep, err := natcheck.Run(ctx, cfg)
	if err == nil && c.learned != nil {
		c.learned(natAddrs(rep, cfg.Conn != nil, cfg.TCPPort != 0))
	}
	if err != nil || !store {
		return rep, err
	}
	c.mu.Lock()
	if !mappingOnly || c.last == nil {
		c.last = &rep
	}
	c.mu.Unlock()
	if mappingOnly {
		return rep, nil
	}
	if c.checked != nil {
		c.checked(rep)
	}
	c.log.Info("NAT check", "udp_public_address", rep.UDP.PublicAddress, "mapping", rep.UDP.Mapping,
		"filtering", rep.UDP.Filtering, "classic", rep.UDP.Classic)
	return rep, nil
}

// natAddrs are the public multiaddrs of this node's listen ports that rep
// found: the QUIC port's when the check ran on it (onQUIC), the TCP listen
// port's when TCP was tested from it (fromTCPPort). DCUtR knows only the
// addresses identify observed, on the connections a node happens to have:
// joined over TCP, it has no public QUIC address, and over QUIC no TCP one.
func natAddrs(rep natcheck.Report, onQUIC, fromTCPPort bool) []ma.Multiaddr {
	var out []ma.Multiaddr
	if a := quicMultiaddr(rep.UDP.PublicAddress); a != nil && onQUIC {
		out = append(out, a)
	}
	if a := tcpMultiaddr(rep.TCP.PublicAddress); a != nil && fromTCPPort {
		out = append(out, a)
	}
	return slices.DeleteFunc(out, func(a ma.Multiaddr) bool { return !manet.IsPublicAddr(a) })
}

// tcpListenPort is the port of the node's first IPv4 TCP listen address
// (bound: not 0), or 0 when it has none. go-libp2p's TCP transport dials
// from it (SO_REUSEPORT), so the NAT check tests TCP from it too.
func (c *natChecker) tcpListenPort() uint16 {
	for _, a := range c.h.Network().ListenAddresses() {
		if !isDirectTCP(a) {
			continue
		}
		if _, err := a.ValueForProtocol(ma.P_WS); err == nil {
			continue
		}
		if _, err := a.ValueForProtocol(ma.P_IP4); err != nil {
			continue
		}
		v, err := a.ValueForProtocol(ma.P_TCP)
		if err != nil {
			continue
		}
		if port, err := strconv.ParseUint(v, 10, 16); err == nil && port != 0 {
			return uint16(port)
		}
	}
	return 0
}

// sharedQUICConn is a packet conn on the node's first IPv4 QUIC listen
// port, for non-QUIC packets (STUN, the birthday hole punch's probes).
func (c *natChecker) sharedQUICConn() (net.PacketConn, error) {
	if c.quic == nil {
		return nil, errors.New("no QUIC transport")
	}
	// The bound addresses: quicreuse keys a listener by its socket's
	// address once bound (a configured port 0 has become a real one).
	for _, a := range c.h.Network().ListenAddresses() {
		if _, err := a.ValueForProtocol(ma.P_QUIC_V1); err != nil {
			continue
		}
		ip, err := a.ValueForProtocol(ma.P_IP4)
		if err != nil {
			continue
		}
		port, err := a.ValueForProtocol(ma.P_UDP)
		if err != nil {
			continue
		}
		ua, err := net.ResolveUDPAddr("udp4", net.JoinHostPort(ip, port))
		if err != nil {
			continue
		}
		return c.quic.SharedNonQUICPacketConn("udp4", ua)
	}
	return nil, errors.New("no IPv4 QUIC listen address")
}

// stunInfo is the JSON a bootstrap node answers on STUNInfoProtocol.
type stunInfo struct {
	Servers []string `json:"servers"`
	Other   string   `json:"other"`
}

// discover asks the connected bootstrap peers where their STUN servers
// are. A peer that does not speak the protocol is skipped.
func (c *natChecker) discover(ctx context.Context) []netip.AddrPort {
	var out []netip.AddrPort
	for _, ai := range c.boot {
		if c.h.Network().Connectedness(ai.ID) != network.Connected {
			continue
		}
		servers, err := askSTUNInfo(ctx, c.h, ai.ID)
		if err != nil {
			c.log.Debug("bootstrap peer announces no STUN server", "peer", ai.ID, "error", err)
			continue
		}
		out = append(out, servers...)
	}
	return out
}

func askSTUNInfo(ctx context.Context, h host.Host, p peer.ID) ([]netip.AddrPort, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := h.NewStream(network.WithNoDial(ctx, "stun info"), p, STUNInfoProtocol)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(d)
	}
	var info stunInfo
	if err := json.NewDecoder(io.LimitReader(s, maxSTUNInfo)).Decode(&info); err != nil {
		return nil, fmt.Errorf("bad STUN info from %s: %w", p, err)
	}
	var out []netip.AddrPort
	for _, a := range info.Servers {
		ap, err := netip.ParseAddrPort(a)
		if err != nil || ap.Port() == 0 || !ap.Addr().Is4() && !ap.Addr().Is6() {
			continue
		}
		out = append(out, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s announced no usable STUN address", p)
	}
	return out, nil
}
