package node

import (
	"fmt"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
)

// yamuxStreamReservation is the memory, in bytes, that go-yamux reserves in
// the resource manager for every stream it opens or accepts: the stream's
// initial 256 KiB receive window (go-yamux const.go, initialStreamWindow).
const yamuxStreamReservation = 256 << 10

// newResourceManager uses go-libp2p's default limits scaled to this machine's
// memory and file descriptors, with libp2p's own services' limits set, which
// is what libp2p.New does when no manager is given; it is built here so that
// the limits have one place to be tuned.
func newResourceManager(streams []StreamLimit, maxPeers int) (network.ResourceManager, error) {
	limits, opts := resourceLimits(streams, maxPeers, (*rcmgr.ScalingLimitConfig).AutoScale)
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits), opts...)
	if err != nil {
		return nil, fmt.Errorf("resource manager: %w", err)
	}
	return rm, nil
}

// resourceLimits is newResourceManager's limits, scaled by scale (AutoScale
// in a node; tests pass a fixed machine size).
func resourceLimits(streams []StreamLimit, maxPeers int, scale func(*rcmgr.ScalingLimitConfig) rcmgr.ConcreteLimitConfig) (rcmgr.ConcreteLimitConfig, []rcmgr.Option) {
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	var opts []rcmgr.Option
	if maxPeers > 0 {
		sb := &limits.SystemBaseLimit
		sb.ConnsInbound = max(sb.ConnsInbound, maxPeers)
		sb.Conns = max(sb.Conns, maxPeers+1024)
		sb.FD = max(sb.FD, maxPeers+1024)
		// Everyone redials at once after a restart.
		tb := &limits.TransientBaseLimit
		tb.ConnsInbound = max(tb.ConnsInbound, 256)
		tb.Conns = max(tb.Conns, 512)
		tb.FD = max(tb.FD, 512)
		opts = append(opts, rcmgr.WithLimitPerSubnet(
			[]rcmgr.ConnLimitPerSubnet{{PrefixLength: 32, ConnCount: 64}},
			[]rcmgr.ConnLimitPerSubnet{{PrefixLength: 56, ConnCount: 64}, {PrefixLength: 48, ConnCount: 512}},
		))
	}
	var maxPerPeer int
	for _, l := range streams {
		total := rcmgr.BaseLimit{Streams: l.Total, StreamsInbound: l.Total, StreamsOutbound: l.Total, Memory: 256 << 20}
		perPeer := rcmgr.BaseLimit{Streams: l.PerPeer, StreamsInbound: l.PerPeer, StreamsOutbound: l.PerPeer, Memory: 128 << 20}
		limits.AddProtocolLimit(l.Protocol, total, rcmgr.BaseLimitIncrease{})
		limits.AddProtocolPeerLimit(l.Protocol, perPeer, rcmgr.BaseLimitIncrease{})
		if l.Service != "" {
			limits.AddServiceLimit(l.Service, total, rcmgr.BaseLimitIncrease{})
			limits.AddServicePeerLimit(l.Service, perPeer, rcmgr.BaseLimitIncrease{})
		}
		maxPerPeer = max(maxPerPeer, l.PerPeer)
	}
	if maxPerPeer > 0 {
		// A peer's streams of every protocol count against the peer's own
		// limit too; leave room above the largest protocol limit.
		pb := &limits.PeerBaseLimit
		pb.Streams = max(pb.Streams, maxPerPeer+512)
		pb.StreamsInbound = max(pb.StreamsInbound, maxPerPeer+256)
		pb.StreamsOutbound = max(pb.StreamsOutbound, maxPerPeer+512)
		sb := &limits.SystemBaseLimit
		sb.Streams = max(sb.Streams, 4*maxPerPeer)
		sb.StreamsInbound = max(sb.StreamsInbound, 4*maxPerPeer)
		sb.StreamsOutbound = max(sb.StreamsOutbound, 4*maxPerPeer)
		// Streams cost memory (boundStreamsByMemory): one peer with many
		// forwarded connections gets a quarter of the system's memory
		// limit instead of go-libp2p's eighth (on this project's 2-core,
		// 24 GiB VM 849 instead of 456 MB, room for 1,600 streams).
		pi := &limits.PeerLimitIncrease
		pi.Memory = max(pi.Memory, 256<<20)
	}
	return boundStreamsByMemory(scale(&limits)), opts
}

// boundStreamsByMemory lowers the stream limits of the system scope and of
// every peer so that go-yamux's reservations for the streams they admit
// take at most half of the scope's memory limit.
//
// go-yamux reserves each stream's initial window (yamuxStreamReservation,
// at priority 255) when the SYN arrives, before the resource manager
// counts the stream, and if that reservation fails on an inbound stream it
// closes the whole connection (go-yamux session.go, incomingStream): every
// forwarded TCP connection of that peer would be cut at once. Bounded
// here, the stream past the limit is reset alone by the swarm and the
// others go on. Half, because go-yamux reserves window growth at priority
// 128, which the resource manager grants only while the scope is under
// about half its limit: the other half is left for that.
func boundStreamsByMemory(c rcmgr.ConcreteLimitConfig) rcmgr.ConcreteLimitConfig {
	p := c.ToPartialLimitConfig()
	bound := func(l *rcmgr.ResourceLimits) {
		if l.Memory == rcmgr.Unlimited64 || l.Memory == rcmgr.DefaultLimit64 {
			return
		}
		most := rcmgr.LimitVal(max(int64(l.Memory)/2/yamuxStreamReservation, 1))
		for _, v := range []*rcmgr.LimitVal{&l.Streams, &l.StreamsInbound, &l.StreamsOutbound} {
			if *v == rcmgr.Unlimited || *v > most {
				*v = most
			}
		}
	}
	bound(&p.System)
	bound(&p.PeerDefault)
	return p.Build(c)
}
