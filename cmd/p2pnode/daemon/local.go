package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2pnode/p2pnode/control"
	"github.com/p2pnode/p2pnode/node"
	"github.com/p2pnode/p2pnode/node/natcheck"
	"github.com/p2pnode/p2pnode/overlay"
)

const (
	// DefaultConnectTimeout bounds finding and connecting to a forward's
	// peer, and each redial, when the request names no timeout.
	DefaultConnectTimeout = time.Minute
	// defaultPingTimeout and maxPingTimeout bound a ping request (lookup,
	// connect and pings).
	defaultPingTimeout = time.Minute
	maxPingTimeout     = 5 * time.Minute
	// maxFindTimeout bounds a name lookup and the questions to its peers.
	maxFindTimeout = time.Minute
)

// Config is what Local needs besides the node: a snapshot of the settings,
// taken once when the command starts.
type Config struct {
	// Logger receives the backend's logs; default slog.Default().
	Logger *slog.Logger
	// Metrics, if not nil, counts forwarded connections and bytes.
	Metrics *overlay.Metrics
	// Names pins names to peers (config.toml's [names]): a pinned name is
	// never looked up on the DHT.
	Names map[string][]peer.ID
	// KeepsForwards is set for the long-running daemon (serve): only it
	// can keep a forward after the request that started it.
	KeepsForwards bool
}

// Local is the API over a node in this process. Close stops the persistent
// forwards it keeps; the node stays the caller's.
type Local struct {
	n   *node.Node
	cfg Config
	log *slog.Logger

	ctx    context.Context // ends on Close; persistent forwards run under it
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	persist map[string]*persistent // by listen address
}

// persistent is a running persistent forward.
type persistent struct {
	control.PersistentForward
	cancel context.CancelFunc
}

var _ control.API = (*Local)(nil)

// NewLocal returns the API over n.
func NewLocal(n *node.Node, cfg Config) *Local {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Local{n: n, cfg: cfg, log: cfg.Logger, ctx: ctx, cancel: cancel, persist: map[string]*persistent{}}
}

// Close stops the persistent forwards and waits for them, their grace
// periods included.
func (l *Local) Close() error {
	l.cancel()
	l.wg.Wait()
	return nil
}

// Status implements API.
func (l *Local) Status(context.Context) (control.Status, error) {
	l.mu.Lock()
	fwds := make([]control.PersistentForward, 0, len(l.persist))
	for _, p := range l.persist {
		fwds = append(fwds, p.PersistentForward)
	}
	l.mu.Unlock()
	for i := range fwds {
		fwds[i].Carriers = overlay.Carriers(l.n.Host, fwds[i].Peer)
	}
	slices.SortFunc(fwds, func(a, b control.PersistentForward) int { return a.Started.Compare(b.Started) })
	return control.Status{Status: l.n.Status(), PersistentForwards: fwds}, nil
}

// NAT implements API: once the node has joined a bootstrap peer (which may
// announce a STUN server), it runs the check.
func (l *Local) NAT(ctx context.Context, req control.NATRequest) (natcheck.Report, error) {
	if len(l.n.BootstrapPeers()) > 0 {
		wctx, cancel := context.WithTimeout(ctx, natJoinWait)
		_, err := l.n.WaitBootstrap(wctx)
		cancel()
		if err != nil && len(req.STUN) == 0 {
			return natcheck.Report{}, err
		}
	}
	return l.n.NATCheck(ctx, req.STUN...)
}

// natJoinWait bounds how long NAT waits for a bootstrap peer before it
// tests with the servers it was given.
const natJoinWait = 20 * time.Second

// Ping implements API.
func (l *Local) Ping(ctx context.Context, req control.PingRequest) (node.PingResult, error) {
	if err := control.CheckPing(req); err != nil {
		return node.PingResult{Peer: req.Peer, Path: node.PathNone}, err
	}
	timeout := req.Timeout
	if timeout == 0 {
		timeout = defaultPingTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, min(timeout, maxPingTimeout))
	defer cancel()
	return l.n.Ping(ctx, req.Peer, req.Count)
}

// Forward implements API.
func (l *Local) Forward(ctx context.Context, req control.ForwardRequest, ready func(control.Listening)) error {
	fw, err := l.connect(ctx, req)
	if err != nil {
		return err
	}
	if req.UDP {
		pc, err := net.ListenPacket("udp", req.Listen)
		if err != nil {
			return fmt.Errorf("listen on udp %s: %w", req.Listen, err)
		}
		ready(control.Listening{Addr: pc.LocalAddr().String(), Peer: fw.Peer})
		return fw.ServeUDP(ctx, pc)
	}
	ln, err := net.Listen("tcp", req.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", req.Listen, err)
	}
	ready(control.Listening{Addr: ln.Addr().String(), Peer: fw.Peer})
	return fw.Serve(ctx, ln)
}

// ForwardStdio implements API.
func (l *Local) ForwardStdio(ctx context.Context, t control.Target, in io.Reader, out io.WriteCloser, ready func()) error {
	fw, err := l.connect(ctx, control.ForwardRequest{Target: t})
	if err != nil {
		return err
	}
	return fw.StdioReady(ctx, in, out, ready)
}

// Persist implements API: the forward runs until ClosePersistent or Close.
func (l *Local) Persist(ctx context.Context, req control.ForwardRequest) (control.Listening, error) {
	if !l.cfg.KeepsForwards {
		return control.Listening{}, fmt.Errorf("a persistent forward: %w", control.ErrNoDaemon)
	}
	if req.UDP {
		return control.Listening{}, control.BadInput("a persistent forward carries TCP; --persist does not go with --udp")
	}
	fctx, cancel := context.WithCancel(l.ctx)
	readyc := make(chan control.Listening, 1)
	errc := make(chan error, 1)
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer cancel()
		var me *persistent
		err := l.Forward(fctx, req, func(at control.Listening) {
			me = &persistent{control.PersistentForward{Listen: at.Addr, Target: req.Target, Peer: at.Peer, Started: time.Now()}, cancel}
			l.mu.Lock()
			l.persist[at.Addr] = me
			l.mu.Unlock()
			readyc <- at
		})
		if me != nil {
			// ClosePersistent may have removed it already, and a new
			// forward may hold the address by now.
			l.mu.Lock()
			if l.persist[me.Listen] == me {
				delete(l.persist, me.Listen)
			}
			l.mu.Unlock()
			l.log.Info("persistent forward stopped", "listen", me.Listen, "target", req.Target)
		}
		errc <- err
	}()
	select {
	case at := <-readyc:
		l.log.Info("persistent forward started", "listen", at.Addr, "target", req.Target)
		return at, nil
	case err := <-errc:
		return control.Listening{}, err
	case <-ctx.Done():
		cancel()
		return control.Listening{}, ctx.Err()
	}
}

// ClosePersistent implements API. The forward is gone from Status at once;
// its open connections still get their grace period.
func (l *Local) ClosePersistent(_ context.Context, listen string) error {
	l.mu.Lock()
	p, ok := l.persist[listen]
	delete(l.persist, listen)
	open := slices.Sorted(maps.Keys(l.persist))
	l.mu.Unlock()
	if !ok {
		return &control.NotFoundError{Err: fmt.Errorf("no persistent forward listens on %q (open: %v)", listen, open)}
	}
	p.cancel()
	return nil
}
