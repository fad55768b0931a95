package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/p2pnode/p2pnode/control"
	"github.com/p2pnode/p2pnode/internal/e2etest"
	"github.com/p2pnode/p2pnode/node"
	"github.com/p2pnode/p2pnode/overlay"
)

var quiet = slog.New(slog.DiscardHandler)

// newNode starts a node on 127.0.0.1 that joins boot (a standalone DHT
// server if boot is nil), closed when t ends.
func newNode(t *testing.T, boot *node.Node) *node.Node {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cfg := node.Config{
		Identity:    key,
		ListenAddrs: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")},
		Logger:      quiet,
		Standalone:  boot == nil,
		DHTMode:     node.DHTModeServer,
	}
	if boot != nil {
		cfg.BootstrapPeers = []peer.AddrInfo{{ID: boot.ID(), Addrs: boot.Host.Addrs()}}
		cfg.DHTMode = node.DHTModeClient
	}
	n, err := node.New(cfg)
	if err != nil {
		t.Fatalf("node.New: %v", err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// echoTarget is a TCP echo server on loopback with half-close.
func echoTarget(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return e2etest.Serve(t, ln, func(c *net.TCPConn) {
		_, _ = io.Copy(c, c)
		_ = c.CloseWrite()
	}).Addr
}

// world is a bootstrap node, a serving node exposing "echo" to the client
// node, and the API over the client node.
type world struct {
	boot, server, client *node.Node
	api                  *Local
}

func newWorld(t *testing.T, cfg Config) *world {
	t.Helper()
	w := &world{boot: newNode(t, nil)}
	// The bootstrap node answers a lookup of the serving node only once
	// identify has told it the serving node's addresses.
	sub, err := w.boot.Host.EventBus().Subscribe(new(event.EvtPeerIdentificationCompleted))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	w.server, w.client = newNode(t, w.boot), newNode(t, w.boot)
	for identified := false; !identified; {
		select {
		case e := <-sub.Out():
			identified = e.(event.EvtPeerIdentificationCompleted).Peer == w.server.ID()
		case <-time.After(10 * time.Second):
			t.Fatal("the bootstrap node never identified the serving node")
		}
	}
	srv, err := overlay.NewServer(w.server.Host, []overlay.Service{{Name: "echo", Target: echoTarget(t), Allow: []peer.ID{w.client.ID()}}},
		overlay.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	cfg.Logger = quiet
	w.api = NewLocal(w.client, cfg)
	t.Cleanup(func() { w.api.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, n := range []*node.Node{w.server, w.client} {
		if _, err := n.WaitBootstrap(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// echoThrough sends size bytes through addr and checks that they come back
// intact.
func echoThrough(t *testing.T, addr string, size int) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	data := make([]byte, size)
	_, _ = rand.Read(data)
	go func() {
		_, _ = c.Write(data)
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil || sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("echo through %s: %d of %d bytes back, err %v; want them intact", addr, len(got), size, err)
	}
}

// startForward runs Forward in the background until the test ends and
// returns where it listens.
func startForward(t *testing.T, ctx context.Context, api control.API, req control.ForwardRequest) control.Listening {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	readyc, errc := make(chan control.Listening, 1), make(chan error, 1)
	go func() { errc <- api.Forward(ctx, req, func(at control.Listening) { readyc <- at }) }()
	t.Cleanup(func() {
		cancel()
		<-errc
	})
	select {
	case at := <-readyc:
		return at
	case err := <-errc:
		t.Fatalf("Forward: %v", err)
	case <-ctx.Done():
		t.Fatal("Forward never listened")
	}
	return control.Listening{}
}

func TestForwardByPeerID(t *testing.T) {
	w := newWorld(t, Config{})
	ctx := testContext(t)
	at := startForward(t, ctx, w.api, control.ForwardRequest{Target: control.Target{Peer: w.server.ID(), Service: "echo"}, Listen: "127.0.0.1:0"})
	if at.Peer != w.server.ID() {
		t.Errorf("forward reached %s, want %s", at.Peer, w.server.ID())
	}
	echoThrough(t, at.Addr, 1<<20)
	if path := w.client.PathTo(w.server.ID()); path != node.PathDirect {
		t.Errorf("path to the serving peer %s, want direct", path)
	}
}

func TestForwardStdio(t *testing.T) {
	w := newWorld(t, Config{})
	ctx := testContext(t)
	in := strings.NewReader("hello through stdio")
	var out closeBuffer
	opened := false
	err := w.api.ForwardStdio(ctx, control.Target{Peer: w.server.ID(), Service: "echo"}, in, &out, func() { opened = out.Len() == 0 })
	if err != nil || out.String() != "hello through stdio" || !out.closed || !opened {
		t.Errorf("ForwardStdio: err %v, out %q (closed %v), ready before bytes %v", err, out.String(), out.closed, opened)
	}
	// A service the peer does not offer this node is refused, with the
	// peer's word for it.
	err = w.api.ForwardStdio(ctx, control.Target{Peer: w.server.ID(), Service: "ssh"}, strings.NewReader(""), &closeBuffer{}, nil)
	var re *overlay.RefusedError
	if !errors.As(err, &re) {
		t.Errorf("stdio to a service not exposed: %v, want a refusal", err)
	}
}

type closeBuffer struct {
	bytes.Buffer
	closed bool
}

func (b *closeBuffer) Close() error { b.closed = true; return nil }

// Status lists what Persist started, and no longer lists it once
// ClosePersistent returns, even while it lets its connections finish;
// closing it again says what is open.
func TestPersistentForwards(t *testing.T) {
	w := newWorld(t, Config{KeepsForwards: true})
	ctx := testContext(t)
	target := control.Target{Peer: w.server.ID(), Service: "echo"}
	var addrs []string
	for range 2 {
		at, err := w.api.Persist(ctx, control.ForwardRequest{Target: target, Listen: "127.0.0.1:0", Grace: time.Second})
		if err != nil {
			t.Fatalf("Persist: %v", err)
		}
		addrs = append(addrs, at.Addr)
	}
	echoThrough(t, addrs[1], 64<<10)
	st, err := w.api.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.PersistentForwards) != 2 || st.PersistentForwards[0].Listen != addrs[0] || st.PersistentForwards[1].Listen != addrs[1] ||
		st.PersistentForwards[0].Peer != w.server.ID() || st.PersistentForwards[0].Target != target {
		t.Fatalf("status lists %+v, want the forwards on %v, oldest first", st.PersistentForwards, addrs)
	}
	if err := w.api.ClosePersistent(ctx, addrs[0]); err != nil {
		t.Fatalf("ClosePersistent: %v", err)
	}
	if st, _ = w.api.Status(ctx); len(st.PersistentForwards) != 1 || st.PersistentForwards[0].Listen != addrs[1] {
		t.Errorf("right after closing, status lists %+v, want only %s", st.PersistentForwards, addrs[1])
	}
	err = w.api.ClosePersistent(ctx, addrs[0])
	var nf *control.NotFoundError
	if !errors.As(err, &nf) || !strings.Contains(err.Error(), addrs[1]) {
		t.Errorf("closing it again: %v, want a not-found error listing %s", err, addrs[1])
	}
	if err := w.api.Close(); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", addrs[1], time.Second); err == nil {
		c.Close()
		t.Errorf("after Close, the persistent forward on %s still accepts", addrs[1])
	}
}

// A name pinned in the config goes to the pinned peer without a DHT
// lookup; find reports the path and the services it may use.
func TestFindAndForwardPinnedName(t *testing.T) {
	w := newWorld(t, Config{})
	w.api.cfg.Names = map[string][]peer.ID{"movie-night": {w.server.ID()}}
	ctx := testContext(t)
	found, err := w.api.Find(ctx, "movie-night")
	if err != nil || len(found) != 1 || found[0].Peer != w.server.ID() || found[0].Path != string(node.PathDirect) ||
		len(found[0].Services) != 1 || found[0].Services[0] != "echo" {
		t.Fatalf("Find = %+v, %v; want the pinned peer, direct, offering echo", found, err)
	}
	at := startForward(t, ctx, w.api, control.ForwardRequest{Target: control.Target{Name: "movie-night", Service: "echo"}, Listen: "127.0.0.1:0"})
	if at.Peer != w.server.ID() {
		t.Errorf("forward by name chose %s, want %s", at.Peer, w.server.ID())
	}
	echoThrough(t, at.Addr, 4096)

	err = w.api.Forward(ctx, control.ForwardRequest{Target: control.Target{Name: "movie-night", Service: "ssh"}, Listen: "127.0.0.1:0"}, func(control.Listening) {
		t.Error("a forward to a service nobody offers listened")
	})
	if err == nil || !strings.Contains(err.Error(), `offers service "ssh"`) {
		t.Errorf("forward by name to a service not offered: %v", err)
	}
}

func TestBadRequests(t *testing.T) {
	w := newWorld(t, Config{})
	ctx := testContext(t)
	var ie *control.InputError
	if _, err := w.api.Ping(ctx, control.PingRequest{Peer: w.server.ID(), Count: 0}); !errors.As(err, &ie) {
		t.Errorf("ping count 0: %v, want bad input", err)
	}
	if _, err := w.api.Find(ctx, "no spaces allowed"); !errors.As(err, &ie) {
		t.Errorf("find with a bad name: %v, want bad input", err)
	}
	if _, err := w.api.Persist(ctx, control.ForwardRequest{Target: control.Target{Peer: w.server.ID(), Service: "echo"}, Listen: "127.0.0.1:0"}); !errors.Is(err, control.ErrNoDaemon) {
		t.Errorf("Persist on a command's own node: %v, want ErrNoDaemon", err)
	}
	res, err := w.api.Ping(ctx, control.PingRequest{Peer: w.server.ID(), Count: 2})
	if err != nil || len(res.Pings) != 2 || res.Path != node.PathDirect {
		t.Errorf("Ping = %+v, %v; want two direct pings", res, err)
	}
}
