package control

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2pnode/p2pnode/node"
)

var quiet = slog.New(slog.DiscardHandler)

func newPeerID(t *testing.T) peer.ID {
	t.Helper()
	_, pub, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// fakeBackend answers like a node would.
type fakeBackend struct {
	status node.Status
	// ping answers a ping; nil: three direct pings.
	ping func(ctx context.Context, p peer.ID, count int) (node.PingResult, error)
}

func (f *fakeBackend) Status() node.Status { return f.status }

func (f *fakeBackend) Ping(ctx context.Context, p peer.ID, count int) (node.PingResult, error) {
	if f.ping != nil {
		return f.ping(ctx, p, count)
	}
	res := node.PingResult{Peer: p, Path: node.PathDirect}
	for range count {
		res.Pings = append(res.Pings, node.PingRTT{RTTMillis: 1.5, Path: node.PathDirect})
	}
	return res, nil
}

// serve listens in home and serves b until the test ends.
func serve(t *testing.T, home string, b Backend) *Server {
	t.Helper()
	s, err := Listen(home, quiet)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	s.Serve(b)
	return s
}

func dial(t *testing.T, home string) *Client {
	t.Helper()
	c, err := Dial(home)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestRoundTrip(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home") // Listen creates it
	id := newPeerID(t)
	b := &fakeBackend{status: node.Status{
		PeerID: id, Reachability: node.ReachabilityPublic, ReachabilitySince: time.Now().Round(0).UTC(),
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/4001"},
		Connections: []node.ConnStatus{{Peer: id, Transport: "tcp", Path: node.PathDirect, RTTMillis: 0.25}},
	}}
	s := serve(t, home, b)

	if s.Path() != filepath.Join(home, SocketName) {
		t.Errorf("socket at %s, want in %s", s.Path(), home)
	}
	fi, err := os.Lstat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}
	if di, err := os.Stat(home); err != nil || di.Mode().Perm() != 0o700 {
		t.Errorf("home directory: %v, mode %v; want 0700", err, di.Mode())
	}

	c := dial(t, home)
	ctx := context.Background()
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if st.PeerID != id || st.Reachability != node.ReachabilityPublic || !st.ReachabilitySince.Equal(b.status.ReachabilitySince) ||
		len(st.Connections) != 1 || st.Connections[0].RTTMillis != 0.25 || len(st.ListenAddrs) != 1 {
		t.Errorf("Status = %+v, want %+v", st, b.status)
	}

	target := newPeerID(t)
	res, err := c.Ping(ctx, target, 4, time.Second)
	if err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if res.Peer != target || len(res.Pings) != 4 || res.Pings[0].Path != node.PathDirect {
		t.Errorf("Ping = %+v", res)
	}

	// A failed ping says why, with the pings done before.
	b.ping = func(_ context.Context, p peer.ID, _ int) (node.PingResult, error) {
		return node.PingResult{Peer: p, Path: node.PathRelayed, Pings: []node.PingRTT{{RTTMillis: 9, Path: node.PathRelayed}}},
			errors.New("stream reset")
	}
	res, err = c.Ping(ctx, target, 3, 0)
	var ce *Error
	if !errors.As(err, &ce) || ce.Code != http.StatusBadGateway || ce.Message != "stream reset" {
		t.Errorf("failed Ping error = %#v, want a 502 saying stream reset", err)
	}
	if len(res.Pings) != 1 || res.Path != node.PathRelayed {
		t.Errorf("failed Ping result = %+v, want the one ping done", res)
	}

	// Bad requests are 400s; wrong methods are refused.
	for _, q := range []string{"peer=nonsense", "peer=" + target.String() + "&count=0", "peer=" + target.String() + "&timeout=soon"} {
		err := c.do(ctx, http.MethodPost, "/v1/ping?"+q, &res)
		if !errors.As(err, &ce) || ce.Code != http.StatusBadRequest {
			t.Errorf("ping?%s: error %v, want a 400", q, err)
		}
	}
	if err := c.do(ctx, http.MethodPost, "/v1/status", &st); !errors.As(err, &ce) || ce.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /v1/status: error %v, want a 405", err)
	}
}

func TestNotRunning(t *testing.T) {
	home := t.TempDir()
	if _, err := Dial(home); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Dial with no socket: %v, want ErrNotRunning", err)
	}
	leaveStaleSocket(t, home)
	if _, err := Dial(home); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Dial with a stale socket: %v, want ErrNotRunning", err)
	}
}

// leaveStaleSocket makes the socket file a daemon that crashed leaves: a
// socket with nothing listening.
func leaveStaleSocket(t *testing.T, home string) {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: SocketPath(home), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Lstat(SocketPath(home)); err != nil {
		t.Fatal(err)
	}
}

func TestStaleSocketRemoved(t *testing.T) {
	home := t.TempDir()
	leaveStaleSocket(t, home)
	serve(t, home, &fakeBackend{status: node.Status{PeerID: newPeerID(t)}})
	if _, err := dial(t, home).Status(context.Background()); err != nil {
		t.Fatalf("Status after replacing a stale socket: %v", err)
	}
}

func TestAlreadyRunning(t *testing.T) {
	home := t.TempDir()
	s := serve(t, home, &fakeBackend{status: node.Status{PeerID: newPeerID(t)}})
	if _, err := Listen(home, quiet); !errors.Is(err, ErrAlreadyRunning) {
		t.Errorf("second Listen: %v, want ErrAlreadyRunning", err)
	}
	// The refused daemon left the running one's socket alone.
	if _, err := dial(t, home).Status(context.Background()); err != nil {
		t.Errorf("Status after a refused second daemon: %v", err)
	}

	// Something that answers on the socket without holding the lock (an
	// older p2pnode) is not removed either.
	s.Close()
	ln, err := net.Listen("unix", SocketPath(home))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = Listen(home, quiet)
	if !errors.Is(err, ErrAlreadyRunning) || !strings.Contains(err.Error(), home) {
		t.Errorf("Listen on a live socket: %v, want ErrAlreadyRunning naming %s", err, home)
	}
	if _, err := os.Lstat(SocketPath(home)); err != nil {
		t.Errorf("live socket removed: %v", err)
	}
}

func TestNotASocket(t *testing.T) {
	home := t.TempDir()
	if err := os.WriteFile(SocketPath(home), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(home, quiet); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a regular file: %v, want an error", err)
	}
}

func TestOtherUserRefused(t *testing.T) {
	home := t.TempDir()
	var logs lockedBuffer
	s, err := Listen(home, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.uid = os.Getuid() + 1 // as if the daemon ran as another user
	s.Serve(&fakeBackend{status: node.Status{PeerID: newPeerID(t)}})
	c := dial(t, home)
	_, err = c.Status(context.Background())
	if err == nil {
		t.Error("Status from a refused user: no error")
	}
	if !strings.Contains(logs.String(), "refused a control socket connection from another user") {
		t.Errorf("no refusal in the log:\n%s", logs.String())
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Close ends the requests in flight and waits for them, removes the socket
// and frees the home for the next daemon.
func TestCloseCancelsRequests(t *testing.T) {
	home := t.TempDir()
	started := make(chan struct{})
	ended := make(chan error, 1)
	s, err := Listen(home, quiet)
	if err != nil {
		t.Fatal(err)
	}
	s.Serve(&fakeBackend{ping: func(ctx context.Context, p peer.ID, _ int) (node.PingResult, error) {
		close(started)
		<-ctx.Done()
		ended <- ctx.Err()
		return node.PingResult{Peer: p}, ctx.Err()
	}})
	c := dial(t, home)
	pingErr := make(chan error, 1)
	go func() {
		_, err := c.Ping(context.Background(), newPeerID(t), 1, time.Minute)
		pingErr <- err
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("ping request never reached the backend")
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	select {
	case <-ended: // Close waited for the handler
	default:
		t.Error("Close returned before the request in flight ended")
	}
	select {
	case err := <-pingErr:
		if err == nil {
			t.Error("ping cut by Close: no error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("client still waiting after Close")
	}
	if _, err := os.Lstat(SocketPath(home)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket after Close: %v, want it removed", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	s2, err := Listen(home, quiet)
	if err != nil {
		t.Fatalf("Listen after Close: %v", err)
	}
	s2.Close()
}

// A daemon that fails before it serves (its node did not start) still
// gives the socket back.
func TestCloseWithoutServe(t *testing.T) {
	home := t.TempDir()
	s, err := Listen(home, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(SocketPath(home)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket after Close: %v, want it removed", err)
	}
	if _, err := Dial(home); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Dial after Close: %v, want ErrNotRunning", err)
	}
}

func TestSocketPathTooLong(t *testing.T) {
	home := filepath.Join(t.TempDir(), strings.Repeat("d", 120))
	if _, err := Listen(home, quiet); err == nil || !strings.Contains(err.Error(), "shorter --home") {
		t.Errorf("Listen with a long home: %v, want an error", err)
	}
}

// forwardingBackend is a fakeBackend that also forwards: ForwardListen
// "listens" on listen until ctx ends, then takes drain to stop, as a forward
// letting its open connections finish does.
type forwardingBackend struct {
	fakeBackend
	peer    peer.ID
	drain   time.Duration
	stopped chan string
}

func (f *forwardingBackend) ForwardListen(ctx context.Context, target, listen string, ready func(string, peer.ID)) error {
	ready(listen, f.peer)
	<-ctx.Done()
	time.Sleep(f.drain)
	f.stopped <- listen
	return nil
}

func (f *forwardingBackend) ForwardUDP(context.Context, string, string, func(string, peer.ID)) error {
	return errors.New("not in this test")
}

func (f *forwardingBackend) ForwardStream(context.Context, string) (network.Stream, error) {
	return nil, errors.New("not in this test")
}

// TestPersistentForwardsInStatus: status lists what forward --persist
// started, and no longer lists it once --close returns, even while the
// forward is still letting its connections finish; closing it again is an
// error that lists what is open.
func TestPersistentForwardsInStatus(t *testing.T) {
	home := t.TempDir()
	b := &forwardingBackend{peer: newPeerID(t), drain: 300 * time.Millisecond, stopped: make(chan string, 2)}
	b.status.PeerID = newPeerID(t)
	serve(t, home, b)
	c := dial(t, home)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	for _, listen := range []string{"127.0.0.1:7001", "127.0.0.1:7002"} {
		if _, _, err := c.ForwardPersist(ctx, b.peer.String()+":ssh", listen); err != nil {
			t.Fatalf("ForwardPersist %s: %v", listen, err)
		}
	}
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.PersistentForwards) != 2 || st.PersistentForwards[0].Listen != "127.0.0.1:7001" ||
		st.PersistentForwards[1].Listen != "127.0.0.1:7002" || st.PersistentForwards[0].Peer != b.peer ||
		st.PersistentForwards[0].Target != b.peer.String()+":ssh" {
		t.Fatalf("status lists %+v, want the two forwards, oldest first", st.PersistentForwards)
	}

	if err := c.CloseForward(ctx, "127.0.0.1:7001"); err != nil {
		t.Fatalf("CloseForward: %v", err)
	}
	if st, _ = c.Status(ctx); len(st.PersistentForwards) != 1 || st.PersistentForwards[0].Listen != "127.0.0.1:7002" {
		t.Errorf("right after --close, status lists %+v, want only 127.0.0.1:7002", st.PersistentForwards)
	}
	err = c.CloseForward(ctx, "127.0.0.1:7001")
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:7002") {
		t.Errorf("closing it again: %v, want an error listing 127.0.0.1:7002", err)
	}
	select {
	case got := <-b.stopped:
		if got != "127.0.0.1:7001" {
			t.Errorf("stopped %s, want 127.0.0.1:7001", got)
		}
	case <-ctx.Done():
		t.Fatal("the closed forward never stopped")
	}
	if st, _ = c.Status(ctx); len(st.PersistentForwards) != 1 {
		t.Errorf("after the closed forward stopped, status lists %+v, want only 127.0.0.1:7002", st.PersistentForwards)
	}
}
