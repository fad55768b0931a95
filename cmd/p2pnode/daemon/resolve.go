package daemon

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"

	"github.com/p2pnode/p2pnode/control"
	"github.com/p2pnode/p2pnode/node"
	"github.com/p2pnode/p2pnode/overlay"
)

// connect finds and connects to req's peer and returns a Forwarder for it,
// which checks the path again before each connection it carries.
func (l *Local) connect(ctx context.Context, req control.ForwardRequest) (*overlay.Forwarder, error) {
	timeout := req.Timeout
	if timeout <= 0 {
		timeout = DefaultConnectTimeout
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	p, path, err := l.resolve(cctx, req.Target)
	cancel()
	if err != nil {
		return nil, err
	}
	l.log.Info("connected", "peer", p, "path", path)
	l.warnRelayLimit(p)
	l.n.Host.ConnManager().Protect(p, "p2pnode-forward")
	n := l.n
	return &overlay.Forwarder{
		Host: n.Host, Peer: p, Service: req.Target.Service, Logger: l.log,
		// Streams go over a direct connection when there is one; the
		// relayed one carries them only when hole punching failed.
		DialOptions:   []overlay.DialOption{overlay.WithAllowLimitedConn()},
		ShutdownGrace: req.Grace,
		Metrics:       l.cfg.Metrics,
		Prepare: func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			_, err := n.Reconnect(ctx, p)
			return err
		},
	}, nil
}

// warnRelayLimit says, once per forward, that the path to p is a limited
// relayed connection: data through it stops at the relay's limit, which a
// user would otherwise only see as connections that break.
func (l *Local) warnRelayLimit(p peer.ID) {
	limited, dur, data := l.n.RelayLimit(p)
	if !limited {
		return
	}
	l.log.Warn(fmt.Sprintf("hole punching failed and the relay limits each relayed connection to %s and %d bytes each way; "+
		"connections will be cut at that limit. Ask the relay's operator to authorize both peers (relay_allow) for unlimited relaying", dur, data),
		"peer", p)
}

// resolve connects to t's peer. For a name, it tries the peers that
// advertise it, in the DHT's order, and takes the first that answers and
// lets this node use the service; it says which one it chose, since a name
// is only a hint.
func (l *Local) resolve(ctx context.Context, t control.Target) (peer.ID, node.Path, error) {
	if t.Name == "" {
		path, err := l.n.Connect(ctx, t.Peer)
		return t.Peer, path, err
	}
	peers, err := l.peersFor(ctx, t.Name)
	if err != nil {
		return "", "", err
	}
	if len(peers) == 0 {
		return "", "", fmt.Errorf("no peer advertises name %q on the DHT (asked through bootstrap peers %s)", t.Name, describePeers(l.n.BootstrapPeers()))
	}
	var tried []string
	for _, ai := range peers {
		fp := l.ask(ctx, ai)
		if fp.Error == "" && !slices.Contains(fp.Services, t.Service) {
			fp.Error = fmt.Sprintf("it offers this peer %v, not %q", fp.Services, t.Service)
		}
		if fp.Error != "" {
			tried = append(tried, fmt.Sprintf("%s (%s)", ai.ID, fp.Error))
			continue
		}
		l.log.Warn(fmt.Sprintf("name %q: chose peer %s of %d advertising it; a name is a hint, not an identity", t.Name, ai.ID, len(peers)), "peer", ai.ID)
		return ai.ID, node.Path(fp.Path), nil
	}
	return "", "", fmt.Errorf("none of the %d peers advertising name %q offers service %q to this peer: %s", len(peers), t.Name, t.Service, strings.Join(tried, "; "))
}

// peersFor returns the peers to try for name: the ones config.toml pins it
// to ([names]), if any, else the ones that advertise it on the DHT.
func (l *Local) peersFor(ctx context.Context, name string) ([]peer.AddrInfo, error) {
	pins := l.cfg.Names[name]
	if len(pins) == 0 {
		return l.n.FindByName(ctx, name)
	}
	l.log.Info("name is pinned in config.toml; using those peers only", "name", name, "peers", len(pins))
	out := make([]peer.AddrInfo, len(pins))
	for i, p := range pins {
		out[i] = peer.AddrInfo{ID: p}
	}
	return out, nil
}

// Find implements API: it looks name up and asks every peer found, at once.
func (l *Local) Find(ctx context.Context, name string) ([]control.FoundPeer, error) {
	if err := overlay.CheckServiceName(name); err != nil {
		return nil, control.BadInput("bad name %q: %v", name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, maxFindTimeout)
	defer cancel()
	peers, err := l.peersFor(ctx, name)
	if err != nil {
		return nil, err
	}
	found := make([]control.FoundPeer, len(peers))
	var wg sync.WaitGroup
	for i, ai := range peers {
		wg.Go(func() { found[i] = l.ask(ctx, ai) })
	}
	wg.Wait()
	return found, nil
}

// ask connects to one advertising peer and lists the services it lets this
// peer use.
func (l *Local) ask(ctx context.Context, ai peer.AddrInfo) control.FoundPeer {
	f := control.FoundPeer{Peer: ai.ID, Path: string(node.PathNone), Services: []string{}}
	l.n.Host.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.TempAddrTTL)
	path, err := l.n.Connect(ctx, ai.ID)
	if err == nil {
		f.Path = string(path)
		var svcs []string
		if svcs, err = overlay.ListServices(ctx, l.n.Host, ai.ID, overlay.WithAllowLimitedConn()); err == nil {
			f.Services = svcs
		}
	}
	if err != nil {
		f.Error = err.Error()
	}
	return f
}

// describePeers lists peer IDs for messages.
func describePeers(ais []peer.AddrInfo) string {
	ids := make([]string, len(ais))
	for i, ai := range ais {
		ids[i] = ai.ID.String()
	}
	return strings.Join(ids, ", ")
}
