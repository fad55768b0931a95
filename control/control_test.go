package control

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2pnode/p2pnode/node"
	"github.com/p2pnode/p2pnode/node/natcheck"
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

// fakeAPI answers like a node would; what it does not fake it refuses.
type fakeAPI struct {
	status node.Status
	// ping answers a ping; nil: three direct pings.
	ping func(ctx context.Context, p peer.ID, count int) (node.PingResult, error)
}

func (f *fakeAPI) Status(context.Context) (Status, error) {
	return Status{Status: f.status, PersistentForwards: []PersistentForward{}}, nil
}

func (f *fakeAPI) Ping(ctx context.Context, req PingRequest) (node.PingResult, error) {
	if err := CheckPing(req); err != nil {
		return node.PingResult{}, err
	}
	if f.ping != nil {
		return f.ping(ctx, req.Peer, req.Count)
	}
	res := node.PingResult{Peer: req.Peer, Path: node.PathDirect}
	for range req.Count {
		res.Pings = append(res.Pings, node.PingRTT{RTTMillis: 1.5, Path: node.PathDirect})
	}
	return res, nil
}

var errNotFaked = errors.New("not in this test")

func (f *fakeAPI) Find(context.Context, string) ([]FoundPeer, error) { return nil, errNotFaked }
func (f *fakeAPI) Forward(context.Context, ForwardRequest, func(Listening)) error {
	return errNotFaked
}
func (f *fakeAPI) ForwardStdio(context.Context, Target, io.Reader, io.WriteCloser, func()) error {
	return errNotFaked
}
func (f *fakeAPI) Persist(context.Context, ForwardRequest) (Listening, error) {
	return Listening{}, errNotFaked
}
func (f *fakeAPI) ClosePersistent(context.Context, string) error { return errNotFaked }

// NAT echoes the first STUN server asked as the public address.
func (f *fakeAPI) NAT(_ context.Context, req NATRequest) (natcheck.Report, error) {
	if len(req.STUN) == 0 {
		return natcheck.Report{}, errors.New("no STUN server known")
	}
	return natcheck.Report{UDP: natcheck.UDPReport{PublicAddress: req.STUN[0].String(), Mapping: natcheck.EndpointIndependent,
		Filtering: natcheck.AddressAndPortDependent, Classic: natcheck.ClassicPortRestr}}, nil
}

// serve listens in home and serves b until the test ends.
func serve(t *testing.T, home string, b API) *Server {
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
	b := &fakeAPI{status: node.Status{
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
	res, err := c.Ping(ctx, PingRequest{Peer: target, Count: 4, Timeout: time.Second})
	if err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if res.Peer != target || len(res.Pings) != 4 || res.Pings[0].Path != node.PathDirect {
		t.Errorf("Ping = %+v", res)
	}

	stun := netip.MustParseAddrPort("11.0.0.1:3478")
	rep, err := c.NAT(ctx, NATRequest{STUN: []netip.AddrPort{stun}})
	if err != nil || rep.UDP.PublicAddress != stun.String() || rep.UDP.Classic != natcheck.ClassicPortRestr || rep.UDP.Filtering != natcheck.AddressAndPortDependent {
		t.Errorf("NAT = %+v, %v; want the fake's port-restricted report for %s", rep, err, stun)
	}
	if _, err := c.NAT(ctx, NATRequest{}); err == nil || !strings.Contains(err.Error(), "no STUN server known") {
		t.Errorf("NAT without servers: %v, want the daemon's error", err)
	}

	// A failed ping says why, with the pings done before.
	b.ping = func(_ context.Context, p peer.ID, _ int) (node.PingResult, error) {
		return node.PingResult{Peer: p, Path: node.PathRelayed, Pings: []node.PingRTT{{RTTMillis: 9, Path: node.PathRelayed}}},
			errors.New("stream reset")
	}
	res, err = c.Ping(ctx, PingRequest{Peer: target, Count: 3})
	var ie *InputError
	if err == nil || err.Error() != "stream reset" || errors.As(err, &ie) {
		t.Errorf("failed Ping error = %#v, want a failure saying stream reset", err)
	}
	if len(res.Pings) != 1 || res.Path != node.PathRelayed {
		t.Errorf("failed Ping result = %+v, want the one ping done", res)
	}

	// Bad requests are bad input; wrong methods and versions are refused.
	for _, body := range []string{`{"peer":"nonsense","count":1}`, `{"peer":"` + target.String() + `","count":0}`, `{"peer":1}`, `{"frobnicate":1}`} {
		_, err := call[node.PingResult](ctx, c, "ping", json.RawMessage(body))
		if !errors.As(err, &ie) {
			t.Errorf("ping %s: error %v, want bad input", body, err)
		}
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://p2pnode/v2/status", nil)
	req.Header.Set(versionHeader, "2")
	if resp, err := c.hc.Do(req); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /v2/status: %v %v, want a 405", resp, err)
	}
}

// A client and a daemon of different control API versions refuse each
// other with an error that names both versions.
func TestVersionMismatch(t *testing.T) {
	home := t.TempDir()
	serve(t, home, &fakeAPI{status: node.Status{PeerID: newPeerID(t)}})
	c := dial(t, home)
	ctx := context.Background()
	for _, v := range []string{"", "1", "3"} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://p2pnode/v2/status", strings.NewReader("{}"))
		if v != "" {
			req.Header.Set(versionHeader, v)
		}
		resp, err := c.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusConflict || !strings.Contains(string(body), "version 2") {
			t.Errorf("a version %q client: %s %s, want a refusal naming version 2", v, resp.Status, body)
		}
	}
	// An older client (control API 1) gets an error it can print.
	resp, err := c.hc.Get("http://p2pnode/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	var old struct{ Error string }
	_ = json.NewDecoder(resp.Body).Decode(&old)
	resp.Body.Close()
	if !strings.Contains(old.Error, "version 2") || !strings.Contains(old.Error, "version 1") {
		t.Errorf("a version 1 client reads %q, want both versions named", old.Error)
	}

	// A daemon of the older schema (it answers 404 to /v2/).
	oldHome := t.TempDir()
	ln, err := net.Listen("unix", SocketPath(oldHome))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.NotFoundHandler()}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	_, err = dial(t, oldHome).Status(ctx)
	if err == nil || !strings.Contains(err.Error(), "version 1") || !strings.Contains(err.Error(), "version 2") {
		t.Errorf("Status from an older daemon: %v, want an error naming versions 1 and 2", err)
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
	serve(t, home, &fakeAPI{status: node.Status{PeerID: newPeerID(t)}})
	if _, err := dial(t, home).Status(context.Background()); err != nil {
		t.Fatalf("Status after replacing a stale socket: %v", err)
	}
}

func TestAlreadyRunning(t *testing.T) {
	home := t.TempDir()
	s := serve(t, home, &fakeAPI{status: node.Status{PeerID: newPeerID(t)}})
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
	s.Serve(&fakeAPI{status: node.Status{PeerID: newPeerID(t)}})
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
	s.Serve(&fakeAPI{ping: func(ctx context.Context, p peer.ID, _ int) (node.PingResult, error) {
		close(started)
		<-ctx.Done()
		ended <- ctx.Err()
		return node.PingResult{Peer: p}, ctx.Err()
	}})
	c := dial(t, home)
	pingErr := make(chan error, 1)
	go func() {
		_, err := c.Ping(context.Background(), PingRequest{Peer: newPeerID(t), Count: 1, Timeout: time.Minute})
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
