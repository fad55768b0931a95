package node

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/p2pnode/p2pnode/node/natcheck"
)

// PunchProtocol is p2pnode's hole punch next to DCUtR, run over the relayed
// connection: the two peers exchange their NAT behaviour (package
// natcheck) and pick a strategy. When one side's NAT maps each destination
// to a new port (endpoint-dependent mapping, "symmetric") and the other's
// does not, DCUtR cannot work (the hard side's port for the easy side is
// unknown), so they use the birthday method: the hard side opens
// birthdaySockets UDP sockets and sends from each to the easy side's QUIC
// address, creating as many mappings, all open to it; the easy side probes
// random ports of the hard side's public IP from its QUIC port; a probe
// that lands on one of the mappings opens the path both ways (with 256
// mappings and 2048 probes, about 99.97 % of the time). The hard side then
// listens for QUIC on that socket's port and the easy side dials it: a
// normal libp2p QUIC connection, peer identities checked by TLS. When both
// sides are hard and both NATs allocate ports sequentially, they predict
// each other's next ports (strategyPredict, predict.go); otherwise nothing
// works, and the relay carries the data at once instead of after DCUtR's
// timeouts.
//
// Two peers behind the same NAT (both NAT checks saw one public IP) need
// none of this: the one that opened the stream dials the other's LAN
// addresses, which the "nat" message carries.
//
// Messages are JSON lines: {"type":"nat",...} both ways, then from the hard
// side {"type":"ready","token":HEX} once its mappings exist, {"type":"hit"}
// when a probe landed, {"type":"listening"} once it listens, or
// {"type":"fail","reason":...}; for prediction, {"type":"predict",
// "port":N,"token":HEX} both ways, then "hit" from the side that dials and
// "listening" from the other.
const PunchProtocol protocol.ID = "/p2pnode/punch/1.0.0"

const (
	// birthdaySockets is how many mappings the hard side opens.
	birthdaySockets = 256
	// birthdayProbes bounds the easy side's probes per attempt, sent one
	// per birthdayPace (2 s in all): no burst that looks like a port scan.
	birthdayProbes = 2048
	birthdayPace   = time.Millisecond
	// birthdayTimeout bounds one attempt, negotiation included.
	birthdayTimeout = 10 * time.Second
	// birthdayMaxMsg bounds one message from the (untrusted) peer.
	birthdayMaxMsg = 1 << 10
	// lanMaxAddrs bounds the LAN addresses a message carries and that are
	// taken from one: a host has a few.
	lanMaxAddrs = 6
	// lanDialTimeout bounds the dial to a peer's LAN addresses: on a LAN
	// it takes a millisecond or two; behind a carrier-grade NAT that two
	// homes share, the addresses are another home's and it times out.
	lanDialTimeout = 2 * time.Second
	// openDialTimeout bounds the dial to a peer that takes unsolicited
	// connections: a handshake, a few round trips.
	openDialTimeout = 3 * time.Second
)

// The datagrams of the birthday method. The first byte has the 0x40 bit
// clear, as STUN's does, so that quic-go hands them to the non-QUIC reader
// of its socket (RFC 9443 demultiplexing) instead of taking them for QUIC
// short-header packets.
const (
	birthdayPrime = "!p2pnode-prime"
	birthdayProbe = "!p2pnode-probe"
	birthdayAck   = "!p2pnode-ack"
)

// Punch strategies, by the two peers' NAT behaviour.
const (
	strategyDCUtR    = "dcutr"    // both easy, or not known: go-libp2p's DCUtR
	strategyBirthday = "birthday" // one side endpoint-dependent
	strategyRelay    = "relay"    // nothing can punch (or no probes allowed)
	strategyLAN      = "lan"      // behind the same NAT: dial the LAN addresses
	strategyPredict  = "predict"  // both endpoint-dependent, both sequential: port prediction
	strategyOpen     = "open"     // the other side takes unsolicited connections: dial it
)

// punchMsg is one message of PunchProtocol.
type punchMsg struct {
	Type      string `json:"type"`
	Mapping   string `json:"mapping,omitempty"`
	Filtering string `json:"filtering,omitempty"`
	// QUIC is the sender's QUIC socket's public IP:port (from its NAT
	// check); IP is its public IP.
	QUIC string `json:"quic,omitempty"`
	// TCP is the sender's TCP mapping behaviour (natcheck's names; unknown
	// when its last check did not test TCP), or empty when it does not
	// listen for TCP. Both sides' decide whether DCUtR punches TCP first
	// (tcpPunchable). Older p2pnode peers do not send it.
	TCP string `json:"tcp,omitempty"`
	// Redial: the sender's DCUtR was not ready when the relayed
	// connection it carries this stream on opened (go-libp2p issue
	// #3024), so DCUtR will not start on it; it is ready now, and a new
	// relayed connection from the other side starts it.
	Redial bool `json:"redial,omitempty"`
	// TCPAddr is the sender's TCP public IP:port (its NAT check's, for its
	// libp2p listen port), which DCUtR may not know: a node that joined
	// over QUIC has no observed TCP address (see punchFilter).
	TCPAddr string `json:"tcp_addr,omitempty"`
	// Open: the sender takes unsolicited connections, as far as it knows
	// (no NAT: its public address is its own; or a full cone). Against an
	// open side, a TCP punch is worse than none: its SYN meets the open
	// side's listener, both ends take the server's part in the security
	// handshake, and the attempt hangs until its timeout.
	Open bool `json:"open,omitempty"`
	// LAN are the sender's private direct multiaddrs (at most
	// lanMaxAddrs). go-libp2p's identify drops private addresses heard
	// over a public connection, so a bootstrap node never passes them on
	// and two peers behind one NAT router would meet at its public
	// address, which few routers hairpin: when both NAT checks saw the
	// same public IP, the peer that asked dials these.
	LAN []string `json:"lan,omitempty"`
	// Delta: the sender's NAT maps each new flow to the last flow's port
	// plus Delta (natcheck's sequential port allocation); 0 when not, or
	// not known. Two endpoint-dependent NATs can punch only with it (see
	// strategyPredict).
	Delta int `json:"delta,omitempty"`
	// Port, in a "predict" message, is the public port of the sender's
	// newest mapping, the one its next flows count on from.
	Port int `json:"port,omitempty"`
	// NoProbe: the sender does not run the strategies that send many
	// datagrams (birthday, prediction) with this peer (see
	// Node.SetProbePolicy); both sides then pick what remains.
	NoProbe bool   `json:"no_probe,omitempty"`
	Token   string `json:"token,omitempty"`
	Reason  string `json:"reason,omitempty"`

	// stun is the STUN server that answered this node's NAT check (own
	// messages only; not sent).
	stun netip.AddrPort
}

func hardMapping(m string) bool {
	return m == string(natcheck.AddressDependent) || m == string(natcheck.AddressAndPortDependent)
}

// punchStrategy picks the strategy for two peers' NAT behaviour, the same
// on both sides. hardIsMine says which side is the hard one for birthday.
func punchStrategy(mine, theirs punchMsg) (strategy string, hardIsMine bool) {
	known := func(m punchMsg) bool {
		return m.Mapping == string(natcheck.EndpointIndependent) || hardMapping(m.Mapping)
	}
	switch {
	case !known(mine) || !known(theirs):
		return strategyDCUtR, false
	case hardMapping(mine.Mapping) && hardMapping(theirs.Mapping):
		if predictable(mine) && predictable(theirs) && !mine.NoProbe && !theirs.NoProbe {
			return strategyPredict, false
		}
		return strategyRelay, false
	case !hardMapping(mine.Mapping) && !hardMapping(theirs.Mapping):
		return strategyDCUtR, false
	}
	hardIsMine = hardMapping(mine.Mapping)
	easy := theirs
	if !hardIsMine {
		easy = mine
	}
	switch {
	case easy.Filtering == string(natcheck.EndpointIndependent):
		// A full cone lets the hard side's DCUtR packets in: DCUtR works.
		return strategyDCUtR, false
	case mine.QUIC != "" && theirs.QUIC != "" && !mine.NoProbe && !theirs.NoProbe:
	case easy.Filtering == string(natcheck.Unknown) || easy.Filtering == "":
		// No birthday without QUIC on both sides (or with a side that
		// allows no probes); DCUtR may work if the filter turns out open.
		return strategyDCUtR, false
	default:
		// A filtering cone against an endpoint-dependent mapping, and no
		// birthday: nothing can punch through.
		return strategyRelay, false
	}
	return strategyBirthday, hardIsMine
}

// tcpPunchable reports whether a peer's NAT, as m describes it, lets a TCP
// hole punch through: it listens for TCP, and its NAT maps TCP (or, when
// TCP was not tested, UDP: home routers treat both alike) to one public
// port for every destination, so the port DCUtR was told is the one the
// other side's SYN must reach.
func tcpPunchable(m punchMsg) bool {
	switch m.TCP {
	case string(natcheck.EndpointIndependent):
		return true
	case string(natcheck.Unknown):
		return m.Mapping == string(natcheck.EndpointIndependent)
	}
	return false
}

// lanAddrs returns the direct, private, non-loopback addresses of addrs as
// strings, at most lanMaxAddrs.
func lanAddrs(addrs []ma.Multiaddr) []string {
	var out []string
	for _, a := range addrs {
		if len(out) == lanMaxAddrs {
			break
		}
		if isRelayAddr(a) || !manet.IsPrivateAddr(a) || manet.IsIPLoopback(a) {
			continue
		}
		out = append(out, a.String())
	}
	return out
}

// peerLAN parses a peer's LAN addresses (untrusted): at most lanMaxAddrs
// of them, each a private, non-loopback direct multiaddr.
func peerLAN(ss []string) []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, s := range ss {
		if len(out) == lanMaxAddrs {
			break
		}
		a, err := ma.NewMultiaddr(s)
		if err != nil || isRelayAddr(a) || !manet.IsPrivateAddr(a) || manet.IsIPLoopback(a) {
			continue
		}
		if _, err := a.ValueForProtocol(ma.P_P2P); err == nil {
			continue // the peer ID is the connection's, not the message's
		}
		out = append(out, a)
	}
	return out
}

// samePublicIP reports whether two punch messages' public addresses (from
// the senders' NAT checks) have the same IP: both peers are behind one NAT.
func samePublicIP(a, b punchMsg) bool {
	ip := func(m punchMsg) netip.Addr {
		for _, s := range []string{m.QUIC, m.TCPAddr} {
			if ap, err := netip.ParseAddrPort(s); err == nil {
				return ap.Addr().Unmap()
			}
		}
		return netip.Addr{}
	}
	x, y := ip(a), ip(b)
	return x.IsValid() && x == y
}

// dialLAN tries a direct connection to id at its LAN addresses; it
// reports whether there is a direct connection to id afterwards.
func (b *birthday) dialLAN(ctx context.Context, id peer.ID, lan []ma.Multiaddr) bool {
	b.h.Peerstore().AddAddrs(id, lan, peerstore.TempAddrTTL)
	ctx, cancel := context.WithTimeout(network.WithForceDirectDial(ctx, "p2pnode: same LAN"), lanDialTimeout)
	defer cancel()
	if err := b.h.Connect(ctx, peer.AddrInfo{ID: id, Addrs: lan}); err != nil {
		b.log.Debug("same NAT: no connection to the peer's LAN addresses", "peer", id, "error", err)
	}
	return slices.ContainsFunc(b.h.Network().ConnsToPeer(id), func(c network.Conn) bool { return !isRelayAddr(c.RemoteMultiaddr()) })
}

// dialOpen dials id at the public addresses its message gives (its NAT
// check's QUIC and TCP ones), as a peer that takes unsolicited connections
// can be dialled; it reports whether there is a direct connection to id
// afterwards.
func (b *birthday) dialOpen(ctx context.Context, id peer.ID, theirs punchMsg) bool {
	var addrs []ma.Multiaddr
	for _, a := range []ma.Multiaddr{quicMultiaddr(theirs.QUIC), tcpMultiaddr(theirs.TCPAddr)} {
		if a != nil {
			addrs = append(addrs, a)
		}
	}
	addrs = slices.DeleteFunc(addrs, func(a ma.Multiaddr) bool { return !manet.IsPublicAddr(a) })
	if len(addrs) == 0 {
		return false
	}
	b.h.Peerstore().AddAddrs(id, addrs, peerstore.TempAddrTTL)
	ctx, cancel := context.WithTimeout(network.WithForceDirectDial(ctx, "p2pnode: the peer is open"), openDialTimeout)
	defer cancel()
	if err := b.h.Connect(ctx, peer.AddrInfo{ID: id, Addrs: addrs}); err != nil {
		b.log.Debug("no direct connection to the open peer's public addresses", "peer", id, "error", err)
	}
	return hasDirectConn(b.h, id)
}

// ownAddress reports whether the IP of addr (IP:port) is one of this
// machine's: a STUN server saw it without a NAT in between.
func ownAddress(addr string) bool {
	ap, err := netip.ParseAddrPort(addr)
	return err == nil && natcheck.IsOwnIP(ap.Addr())
}

// quicMultiaddr is the QUIC multiaddr of a UDP IP:port (nil for "" or a
// bad one).
func quicMultiaddr(addr string) ma.Multiaddr {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil
	}
	a, err := manet.FromNetAddr(net.UDPAddrFromAddrPort(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())))
	if err != nil {
		return nil
	}
	return a.Encapsulate(ma.StringCast("/quic-v1"))
}

// tcpMultiaddr is the multiaddr of a TCP IP:port (nil for "" or a bad one).
func tcpMultiaddr(addr string) ma.Multiaddr {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil
	}
	a, err := manet.FromNetAddr(net.TCPAddrFromAddrPort(ap))
	if err != nil {
		return nil
	}
	return a
}

// birthday runs PunchProtocol for a node: the handler, and attempts.
type birthday struct {
	h    host.Host
	log  *slog.Logger
	nat  *natChecker
	quic func() (net.PacketConn, error) // the QUIC port, for non-QUIC packets
	// filter makes the next DCUtR attempt TCP-only when both peers can
	// punch TCP.
	filter *punchFilter
	// probePolicy, when set, says whether a peer that asks this node for
	// a hole punch may have the many-datagram strategies: what the peer
	// sends as its public address is the peer's word only, and the
	// probes go there.
	probePolicy atomic.Pointer[func(peer.ID) bool]
	// done records each attempt (metrics): the strategy, whether it went
	// direct, and the probes this side sent.
	done func(strategy string, direct bool, probes int)

	// conns fires on every connection that opens or closes (a notifiee):
	// a direct connection next to a relayed one changes no Connectedness,
	// so no event of the bus says it came.
	conns  *broadcast
	notify network.Notifiee

	// missed: peers whose inbound relayed connection opened before this
	// node's DCUtR handler existed (go-libp2p's holepunch registers it
	// only once a public address is observed, and then ignores the
	// connections opened before). Bounded by missedMax.
	missedMu sync.Mutex
	missed   map[peer.ID]struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newBirthday(h host.Host, nat *natChecker, filter *punchFilter, log *slog.Logger) *birthday {
	b := &birthday{h: h, log: log, nat: nat, quic: nat.sharedQUICConn, filter: filter, conns: newBroadcast(),
		missed: make(map[peer.ID]struct{})}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.notify = &network.NotifyBundle{
		ConnectedF: func(_ network.Network, c network.Conn) {
			b.noteMissed(c)
			if !isRelayAddr(c.RemoteMultiaddr()) {
				filter.disarm(c.RemotePeer())
			}
			b.conns.fire()
		},
		DisconnectedF: func(network.Network, network.Conn) { b.conns.fire() },
	}
	h.Network().Notify(b.notify)
	h.SetStreamHandler(PunchProtocol, b.handle)
	if filter != nil {
		filter.setHost(h)
	}
	return b
}

// Close removes the handler and stops the attempts and listeners it owns.
func (b *birthday) Close() {
	b.h.RemoveStreamHandler(PunchProtocol)
	b.cancel()
	b.wg.Wait()
	b.h.Network().StopNotify(b.notify)
}

// missedMax bounds the peers remembered in birthday.missed: one entry per
// inbound relayed connection in a node's first seconds.
const missedMax = 1024

// noteMissed remembers the peer of an inbound relayed connection that
// opened before this node's DCUtR handler existed: go-libp2p's holepunch
// starts DCUtR on inbound relayed connections only, and only on those
// that open after it is ready.
func (b *birthday) noteMissed(c network.Conn) {
	if c.Stat().Direction != network.DirInbound || !isRelayAddr(c.RemoteMultiaddr()) || hasHandler(b.h, holepunch.Protocol) {
		return
	}
	b.missedMu.Lock()
	defer b.missedMu.Unlock()
	if len(b.missed) < missedMax {
		b.missed[c.RemotePeer()] = struct{}{}
	}
}

// takeMissed reports whether DCUtR missed id's relayed connection, and
// forgets it.
func (b *birthday) takeMissed(id peer.ID) bool {
	b.missedMu.Lock()
	defer b.missedMu.Unlock()
	_, ok := b.missed[id]
	delete(b.missed, id)
	return ok
}

// closeDead probes the direct connection to id, if there is one, and
// closes it when it does not answer within pathDeadAfter; it reports
// whether it closed one.
func (b *birthday) closeDead(ctx context.Context, id peer.ID) bool {
	c, dead := probeDirect(ctx, b.h, id, pathDeadAfter)
	if c == nil || !dead || c.IsClosed() {
		return false
	}
	b.log.Warn("the direct connection stopped answering (the peer asks for a new hole punch); closing it",
		"peer", id, "remote_addr", c.RemoteMultiaddr(), "streams_reset", len(appStreams(c)))
	_ = c.Close()
	return true
}

// local is this node's NAT behaviour as the protocol sends it.
func (b *birthday) local(ctx context.Context) punchMsg {
	m := punchMsg{Type: "nat", Mapping: string(natcheck.Unknown), Filtering: string(natcheck.Unknown)}
	listensTCP := slices.ContainsFunc(b.h.Network().ListenAddresses(), isDirectTCP)
	if listensTCP {
		m.TCP = string(natcheck.Unknown)
	}
	rep, err := b.nat.Mapping(ctx)
	if err != nil {
		b.log.Debug("hole punch: no NAT check", "error", err)
		return m
	}
	m.Mapping, m.Filtering, m.Delta = string(rep.UDP.Mapping), string(rep.UDP.Filtering), rep.UDP.PortDelta
	for _, sv := range rep.Servers {
		if ap, err := netip.ParseAddrPort(sv.Address); err == nil && sv.Answered {
			m.stun = ap
			break
		}
	}
	m.Open = rep.UDP.Filtering == natcheck.EndpointIndependent || ownAddress(rep.UDP.PublicAddress)
	m.LAN = lanAddrs(b.h.Addrs())
	if listensTCP && rep.TCP.Mapping != "" {
		m.TCP = string(rep.TCP.Mapping)
		m.TCPAddr = rep.TCP.PublicAddress
	}
	// The public address is the QUIC port's only when the check ran on it,
	// that is when the node listens for QUIC; without QUIC, no birthday.
	if c, err := b.quic(); err == nil {
		c.Close()
		m.QUIC = rep.UDP.PublicAddress
	}
	return m
}

// try negotiates with id over the relayed connection and, when the pair
// needs it, runs the birthday method as either side. It returns the
// strategy chosen, for birthday whether a direct connection resulted, and
// whether id asked for a new relayed connection (punchMsg.Redial).
func (b *birthday) try(ctx context.Context, id peer.ID) (strategy string, direct, redial bool) {
	ctx, cancel := context.WithTimeout(ctx, birthdayTimeout)
	defer cancel()
	s, err := b.h.NewStream(network.WithAllowLimitedConn(ctx, "p2pnode: hole punch"), id, PunchProtocol)
	if err != nil {
		return strategyDCUtR, false, false // an older peer: DCUtR alone
	}
	defer s.Close()
	return b.run(ctx, s)
}

func (b *birthday) handle(s network.Stream) {
	defer s.Close()
	ctx, cancel := context.WithTimeout(b.ctx, birthdayTimeout)
	defer cancel()
	strategy, direct, _ := b.run(ctx, s)
	b.log.Debug("hole punch negotiated", "peer", s.Conn().RemotePeer(), "strategy", strategy, "direct", direct)
}

// run is both sides of the protocol on s; it returns what try does.
func (b *birthday) run(ctx context.Context, s network.Stream) (string, bool, bool) {
	if d, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(d)
	}
	id := s.Conn().RemotePeer()
	msgs := readPunchMsgs(s)
	// A peer that asks for a punch has no direct connection to this node;
	// one that this node still has is dead (its path was cut, a mapping
	// expired), and keeps go-libp2p's DCUtR from starting ("already
	// connected") until a transport timeout, QUIC's 30 s.
	closedDead := s.Stat().Direction == network.DirInbound && b.closeDead(ctx, id)
	mine := b.local(ctx)
	if f := b.probePolicy.Load(); f != nil && s.Stat().Direction == network.DirInbound && !(*f)(id) {
		mine.NoProbe = true
	}
	if closedDead && hasHandler(b.h, holepunch.Protocol) {
		// DCUtR starts on a new relayed connection, not on this one.
		mine.Redial = true
	}
	if b.takeMissed(id) && !hardMapping(mine.Mapping) {
		// Ask for a new relayed connection once DCUtR is ready, or the
		// new one would be missed too. Behind an endpoint-dependent
		// mapping, no wait: each peer observes another port, go-libp2p
		// confirms no public address, and its DCUtR handler never comes
		// (the wait would cost its whole 3 s); the strategies that work
		// from there (birthday, prediction) are not DCUtR's.
		wctx, cancel := context.WithTimeout(ctx, dcutrReadyTimeout)
		mine.Redial = waitHandler(wctx, b.h, holepunch.Protocol)
		cancel()
	}
	if err := writePunchMsg(s, mine); err != nil {
		return strategyDCUtR, false, false
	}
	theirs, ok := <-msgs
	if !ok || theirs.Type != "nat" {
		return strategyDCUtR, false, false
	}
	if lan := peerLAN(theirs.LAN); len(lan) > 0 && samePublicIP(mine, theirs) {
		// Only the side that asked dials; the other side's DCUtR may run
		// meanwhile: the router's public address rarely hairpins.
		if s.Stat().Direction == network.DirOutbound && b.dialLAN(ctx, id, lan) {
			if b.filter != nil {
				b.filter.decide(id)
			}
			b.log.Info("direct connection over the LAN: both peers are behind one NAT", "peer", id)
			return strategyLAN, true, false
		}
	}
	if theirs.Filtering == string(natcheck.EndpointIndependent) && !mine.Open && s.Stat().Direction == network.DirOutbound && b.dialOpen(ctx, id, theirs) {
		// The peer's filter lets anyone in (a full cone, or no NAT and
		// no firewall; Open alone also covers a firewall that drops);
		// a plain dial does it.
		// Behind an endpoint-dependent mapping this side's DCUtR handler
		// never comes (no confirmed observed address), and the peer's
		// DCUtR does not start once its AutoNAT has found it public: a
		// punch would wait for nothing (3 s at 150 ms RTT in the NAT
		// matrix, edm/eim-eif).
		if b.filter != nil {
			b.filter.decide(id)
		}
		b.log.Info("direct connection by dialing the peer's public address: it takes unsolicited connections", "peer", id)
		return strategyOpen, true, false
	}
	strategy, hard := punchStrategy(mine, theirs)
	b.log.Info("hole punch strategy", "peer", id, "strategy", strategy, "mapping", mine.Mapping, "port_delta", mine.Delta,
		"peer_mapping", theirs.Mapping, "peer_port_delta", theirs.Delta)
	if b.filter != nil {
		if strategy == strategyDCUtR && !mine.Open && !theirs.Open && tcpPunchable(mine) && tcpPunchable(theirs) {
			b.filter.arm(id, tcpMultiaddr(mine.TCPAddr), tcpMultiaddr(theirs.TCPAddr))
			b.log.Debug("hole punch: DCUtR tries TCP first", "peer", id)
		}
		if strategy == strategyPredict {
			// DCUtR's dials would open mappings that move both NATs'
			// counters under the prediction: it waits for the end.
			defer b.filter.decide(id)
		} else {
			b.filter.decide(id) // DCUtR may go now (see punchFilter.awaitVerdict)
		}
	}
	if strategy != strategyBirthday && strategy != strategyPredict {
		if b.done != nil {
			b.done(strategy, false, 0)
		}
		return strategy, false, theirs.Redial
	}
	var err error
	probes := 0
	if strategy == strategyPredict {
		probes, err = b.predict(ctx, s, msgs, id, mine, theirs)
		if b.done != nil {
			b.done(strategy, err == nil, probes)
		}
		if err != nil {
			b.log.Info("port-predicting hole punch failed", "peer", id, "error", err)
			_ = writePunchMsg(s, punchMsg{Type: "fail", Reason: err.Error()})
			return strategy, false, theirs.Redial
		}
		return strategy, true, false
	}
	if hard {
		err = b.hardSide(ctx, s, msgs, id, theirs)
	} else {
		probes, err = b.easySide(ctx, s, msgs, id, theirs)
	}
	if b.done != nil {
		b.done(strategy, err == nil, probes)
	}
	if err != nil {
		b.log.Info("birthday hole punch failed", "peer", id, "role", map[bool]string{true: "hard", false: "easy"}[hard], "error", err)
		_ = writePunchMsg(s, punchMsg{Type: "fail", Reason: err.Error()})
		return strategy, false, theirs.Redial
	}
	return strategy, true, false
}

// hardSide opens the mappings, waits for a probe to land on one, and
// listens for QUIC on that socket's port.
func (b *birthday) hardSide(ctx context.Context, s network.Stream, msgs <-chan punchMsg, id peer.ID, easy punchMsg) error {
	easyAddr, err := netip.ParseAddrPort(easy.QUIC)
	if err != nil {
		return fmt.Errorf("the easy side sent no QUIC address (%q)", easy.QUIC)
	}
	token := randomToken()
	socks := openSockets(birthdaySockets)
	if len(socks) == 0 {
		return errors.New("cannot open UDP sockets")
	}
	defer func() {
		for _, c := range socks {
			if c != nil {
				c.Close()
			}
		}
	}()
	dst := net.UDPAddrFromAddrPort(easyAddr)
	for _, c := range socks {
		_, _ = c.WriteToUDP([]byte(birthdayPrime), dst)
	}
	hit := make(chan int, 1)
	for i, c := range socks {
		go func() {
			buf := make([]byte, 64)
			for {
				n, from, err := c.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				if string(buf[:n]) == birthdayProbe+token && from.Addr().Unmap() == easyAddr.Addr() {
					select {
					case hit <- i:
					default:
					}
					return
				}
			}
		}()
	}
	if err := writePunchMsg(s, punchMsg{Type: "ready", Token: token}); err != nil {
		return err
	}
	var i int
	select {
	case i = <-hit:
	case m := <-msgs:
		return fmt.Errorf("the easy side gave up: %s", m.Reason)
	case <-ctx.Done():
		return fmt.Errorf("no probe landed: %w", ctx.Err())
	}
	c := socks[i]
	port := c.LocalAddr().(*net.UDPAddr).Port
	for range 3 { // the easy side learns our public port from the ack's source
		_, _ = c.WriteToUDP([]byte(birthdayAck+token), dst)
	}
	if err := writePunchMsg(s, punchMsg{Type: "hit"}); err != nil {
		return err
	}
	for j := range socks { // free the port for the QUIC listener
		socks[j].Close()
	}
	return b.listenPunched(ctx, s, id, port)
}

// listenPunched listens for QUIC on the local port of a punched socket
// (closed by the caller: its NAT mapping outlives it), tells the peer, and
// waits for the peer's connection. The listener goes when the punch fails,
// or later when no connection uses it.
func (b *birthday) listenPunched(ctx context.Context, s network.Stream, id peer.ID, port int) error {
	laddr := ma.StringCast("/ip4/0.0.0.0/udp/" + strconv.Itoa(port) + "/quic-v1")
	if err := b.h.Network().Listen(laddr); err != nil {
		return fmt.Errorf("listen for QUIC on the punched port %d: %w", port, err)
	}
	err := writePunchMsg(s, punchMsg{Type: "listening"})
	if err == nil {
		err = b.waitDirect(ctx, id)
	}
	if err != nil {
		b.listenClose(laddr)
		return err
	}
	b.dropListenerLater(laddr, port)
	return nil
}

// easySide probes the hard side's ports from the QUIC port until one lands,
// learns the port from the hard side's ack, and dials QUIC to it.
func (b *birthday) easySide(ctx context.Context, s network.Stream, msgs <-chan punchMsg, id peer.ID, hard punchMsg) (sent int, err error) {
	conn, err := b.quic()
	if err != nil {
		return 0, fmt.Errorf("no QUIC port to probe from: %w", err)
	}
	defer conn.Close()
	hardIP, err := netip.ParseAddrPort(hard.QUIC)
	if err != nil {
		return 0, fmt.Errorf("the hard side sent no public address (%q)", hard.QUIC)
	}
	var ready punchMsg
	select {
	case ready = <-msgs:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	if ready.Type != "ready" || ready.Token == "" {
		return 0, fmt.Errorf("the hard side did not open its mappings: %s", ready.Reason)
	}
	acked := make(chan netip.AddrPort, 1)
	go func() {
		buf := make([]byte, 64)
		for {
			_ = conn.SetReadDeadline(time.Now().Add(birthdayTimeout))
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			if u, ok := from.(*net.UDPAddr); ok && string(buf[:n]) == birthdayAck+ready.Token {
				ap := u.AddrPort()
				acked <- netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
				return
			}
		}
	}()
	probe := []byte(birthdayProbe + ready.Token)
	ports := mrand.Perm(65536 - 1024)
	tick := time.NewTicker(birthdayPace)
	defer tick.Stop()
	var hardAddr netip.AddrPort
	hitSeen, listening := false, false
	var grace <-chan time.Time // after the last probe: time for its ack
	for !hardAddr.IsValid() {
		if sent < birthdayProbes && !hitSeen {
			to := &net.UDPAddr{IP: hardIP.Addr().AsSlice(), Port: 1024 + ports[sent]}
			_, _ = conn.WriteTo(probe, to)
			sent++
			if sent == birthdayProbes {
				grace = time.After(time.Second)
			}
		}
		select {
		case hardAddr = <-acked:
		case m, ok := <-msgs:
			switch {
			case ok && m.Type == "hit":
				hitSeen = true
			case ok && m.Type == "listening":
				hitSeen, listening = true, true
			default:
				return sent, fmt.Errorf("the hard side gave up: %s", m.Reason)
			}
		case <-tick.C:
		case <-grace:
			if !hitSeen {
				return sent, fmt.Errorf("none of %d probes landed", sent)
			}
		case <-ctx.Done():
			return sent, fmt.Errorf("none of %d probes landed: %w", sent, ctx.Err())
		}
	}
	// The hard side says when it listens on the punched port.
	for !listening {
		m, ok := <-msgs
		switch {
		case ok && m.Type == "listening":
			listening = true
		case !ok || m.Type != "hit":
			return sent, fmt.Errorf("the hard side gave up: %s", m.Reason)
		}
	}
	return sent, b.dialPunched(ctx, id, hardAddr)
}

// dialPunched dials QUIC from this node's QUIC port (quicreuse dials from
// the listening socket, whose NAT mapping the punch opened) to the peer's
// punched public address, and waits for the direct connection.
func (b *birthday) dialPunched(ctx context.Context, id peer.ID, to netip.AddrPort) error {
	addr := quicMultiaddr(to.String())
	if addr == nil {
		return fmt.Errorf("no QUIC multiaddr for the punched address %s", to)
	}
	b.h.Peerstore().AddAddr(id, addr, peerstore.TempAddrTTL)
	if _, err := b.h.Network().DialPeer(network.WithForceDirectDial(ctx, "p2pnode: hole punch"), id); err != nil {
		return fmt.Errorf("dial the punched address %s: %w", addr, err)
	}
	return b.waitDirect(ctx, id)
}

// waitDirect waits until there is a direct connection to id.
func (b *birthday) waitDirect(ctx context.Context, id peer.ID) error {
	for {
		changed := b.conns.wait()
		for _, c := range b.h.Network().ConnsToPeer(id) {
			if !c.IsClosed() && !c.Stat().Limited && !isRelayAddr(c.RemoteMultiaddr()) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no direct connection: %w", ctx.Err())
		case <-changed:
		}
	}
}

// dropListenerLater stops listening on the punched port once no connection
// uses it any more (looked at whenever a connection closes), or when the
// node closes.
func (b *birthday) dropListenerLater(laddr ma.Multiaddr, port int) {
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer b.listenClose(laddr)
		for {
			changed := b.conns.wait()
			used := false
			for _, c := range b.h.Network().Conns() {
				if p, err := c.LocalMultiaddr().ValueForProtocol(ma.P_UDP); err == nil && p == strconv.Itoa(port) {
					used = true
				}
			}
			if !used {
				return
			}
			select {
			case <-b.ctx.Done():
				return
			case <-changed:
			}
		}
	}()
}

func (b *birthday) listenClose(laddr ma.Multiaddr) {
	if sw, ok := b.h.Network().(interface{ ListenClose(...ma.Multiaddr) }); ok {
		sw.ListenClose(laddr)
	}
}

func openSockets(n int) []*net.UDPConn {
	var out []*net.UDPConn
	for range n {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{})
		if err != nil {
			break // out of file descriptors: go with what there is
		}
		out = append(out, c)
	}
	return out
}

func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func writePunchMsg(s network.Stream, m punchMsg) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	_, err = s.Write(append(b, '\n'))
	return err
}

// readPunchMsgs reads the peer's messages into a channel closed at the end
// of the stream or at the first bad message.
func readPunchMsgs(s network.Stream) <-chan punchMsg {
	out := make(chan punchMsg, 8)
	go func() {
		defer close(out)
		sc := bufio.NewScanner(s)
		sc.Buffer(make([]byte, 256), birthdayMaxMsg)
		for sc.Scan() {
			var m punchMsg
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				return
			}
			select {
			case out <- m:
			default:
				return // more than the protocol ever sends: a bad peer
			}
		}
	}()
	return out
}
