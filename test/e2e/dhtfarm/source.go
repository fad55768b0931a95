//go:build linux

package main

import (
	"context"
	"net"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/p2p/transport/quicreuse"
	"github.com/quic-go/quic-go"
	"go.uber.org/fx"
)

// fixedSource is a quicreuse.SourceIPSelector that names one address for
// every destination.
type fixedSource net.IP

func (s fixedSource) PreferredSourceIPForDestination(*net.UDPAddr) (net.IP, error) {
	return net.IP(s), nil
}

// quicFrom makes a server's QUIC dials leave from its listen socket on ip.
// All the farm's servers share one namespace, whose routes give every
// destination the host's first address as the source; go-libp2p's QUIC
// reuse picks the listen socket whose address is that source, finds none,
// and dials from a new socket on the first address. The bootstrap nodes
// then see 200 peers on one IP address and their resource managers refuse
// all but the first few (CONNECTION_REFUSED), which no real DHT server
// would meet. The constructor is go-libp2p's default QUIC reuse (config.go:
// the resource manager accounts each inbound connection before its
// handshake and verifies source addresses) with the source selector set.
func quicFrom(ip net.IP) libp2p.Option {
	return libp2p.QUICReuse(func(key quic.StatelessResetKey, tok quic.TokenGeneratorKey, rcmgr network.ResourceManager, lc fx.Lifecycle) (*quicreuse.ConnManager, error) {
		cm, err := quicreuse.NewConnManager(key, tok,
			quicreuse.ConnContext(func(ctx context.Context, ci *quic.ClientInfo) (context.Context, error) {
				addr, err := quicreuse.ToQuicMultiaddr(ci.RemoteAddr, quic.Version1)
				if err != nil {
					addr = nil
				}
				scope, err := rcmgr.OpenConnection(network.DirInbound, false, addr)
				if err != nil {
					return ctx, err
				}
				ctx = network.WithConnManagementScope(ctx, scope)
				context.AfterFunc(ctx, scope.Done)
				return ctx, nil
			}),
			quicreuse.VerifySourceAddress(rcmgr.VerifySourceAddress),
			quicreuse.OverrideSourceIPSelector(func() (quicreuse.SourceIPSelector, error) { return fixedSource(ip), nil }),
		)
		if err != nil {
			return nil, err
		}
		lc.Append(fx.StopHook(cm.Close))
		return cm, nil
	})
}
