// Package control is p2pnode's one typed API over a node and the control
// socket of a running p2pnode daemon (serve or bootstrap). [API] is what
// every command asks of a node: status, ping, find, forwards (TCP, UDP,
// stdio, persistent) and the NAT check. It is implemented twice, so that a
// command calls API and never knows which one it has (DESIGN: one peer ID
// online once, whether or not `serve` runs): in-process over a *node.Node by
// cmd/p2pnode/daemon, and here by [Client], which talks to the daemon whose
// [Server] serves an API as HTTP with JSON bodies over a Unix socket in the
// home directory.
//
// Only the user who runs the daemon may use it: the socket has mode 0600 in a
// directory created 0700, and the server also refuses connections whose
// peer credentials (SO_PEERCRED on Linux, LOCAL_PEERCRED on macOS) name
// another user. Windows has no peer credentials on AF_UNIX: there the socket
// file gets a DACL that allows only the daemon's user (socket_windows.go).
//
// Every request is POST /v2/OP with a JSON body and the header
// P2pnode-Api-Version: 2 (APIVersion); every answer is an envelope
// {"version": 2, "result": ...} or {"version": 2, "error": "...", "kind":
// "bad_input" | "not_found" | "timeout" | "failed" | "version"}. A client
// and a daemon of different versions refuse each other naming both.
//
//	status                 Status
//	ping                   PingRequest -> node.PingResult
//	find                   {"name"} -> []FoundPeer
//	forward                ForwardRequest -> Listening, then held open
//	forward/stdio          ForwardRequest -> 200, then the connection carries the stream
//	persist                ForwardRequest -> Listening
//	persist/close          {"listen"}
package control

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"
)

const (
	// SocketName is the control socket's file name in the home directory.
	SocketName = "control.sock"
	// lockName is the file a daemon holds a lock on (lock.go) while it
	// owns the socket, so that two daemons starting at once cannot both
	// take it.
	lockName = "control.lock"

	dialTimeout   = 2 * time.Second
	statusTimeout = 10 * time.Second
	// probeTimeout bounds the check whether a socket left in the home
	// directory still has a daemon behind it.
	probeTimeout = time.Second
	// maxSocketPath is the longest path a Unix socket address holds on Linux
	// (sun_path is 108 bytes with the terminating NUL).
	maxSocketPath = 107
)

// ErrNotRunning says that no daemon answers on the home directory's socket.
var ErrNotRunning = errors.New("no p2pnode daemon is running")

// ErrAlreadyRunning says that another daemon owns the home directory's socket.
var ErrAlreadyRunning = errors.New("another p2pnode is already running")

// SocketPath returns the control socket's path in home.
func SocketPath(home string) string { return filepath.Join(home, SocketName) }

// Server is a listening control socket. Listen takes the socket; Serve
// starts answering on it; Close stops, waits for the requests in flight and
// removes the socket.
type Server struct {
	path string
	ln   *net.UnixListener
	lock *homeLock
	log  *slog.Logger
	uid  int // the only user allowed to connect

	ctx    context.Context // ends on Close; the requests' base context
	cancel context.CancelFunc
	srv    *http.Server
	served chan struct{} // closed when the serving goroutine ends
	reqs   sync.WaitGroup

	mu       sync.Mutex
	serving  bool
	closed   bool
	closeErr error
}

// Listen takes the control socket in home: it creates home (mode 0700) if
// needed, locks it against a second daemon, removes a socket file that a
// daemon that died left behind (only if nothing answers on it), and listens
// with mode 0600. An error wrapping ErrAlreadyRunning means another daemon
// has the socket.
func Listen(home string, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	path := SocketPath(home)
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("control socket path %s is %d bytes, longer than a Unix socket address holds (%d); use a shorter --home",
			path, len(path), maxSocketPath)
	}
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	lock, err := lockHome(home)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			lock.Close()
		}
	}()
	if err := removeStale(path, log); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := restrictSocket(path); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ok = true
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		path: path, ln: ln, lock: lock, log: log, uid: os.Getuid(),
		ctx: ctx, cancel: cancel, served: make(chan struct{}),
	}, nil
}

// removeStale removes the socket file at path if nothing answers on it.
func removeStale(path string, log *slog.Logger) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket; move it away", path)
	}
	c, err := net.DialTimeout("unix", path, probeTimeout)
	if err == nil {
		c.Close()
		return fmt.Errorf("%w in %s (it answers on %s)", ErrAlreadyRunning, filepath.Dir(path), path)
	}
	if !isConnRefused(err) {
		return fmt.Errorf("control socket %s exists and cannot be checked: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale control socket: %w", err)
	}
	log.Info("removed a stale control socket; the daemon that made it is gone", "path", path)
	return nil
}

// Path returns the socket's path.
func (s *Server) Path() string { return s.path }

// Close stops answering, cancels and waits for the requests in flight,
// removes the socket and releases the lock. It may be called more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return s.closeErr
	}
	s.closed = true
	serving := s.serving
	s.mu.Unlock()

	s.cancel()
	var errs []error
	if serving {
		// Close, not Shutdown: a ping may take a minute, and its context
		// (from s.ctx) ends now.
		if err := s.srv.Close(); err != nil {
			errs = append(errs, err)
		}
		<-s.served
		s.reqs.Wait()
	} else if err := s.ln.Close(); err != nil {
		errs = append(errs, err)
	}
	// The listener removed the socket file; the lock goes last.
	if err := s.lock.Close(); err != nil {
		errs = append(errs, err)
	}
	s.mu.Lock()
	s.closeErr = errors.Join(errs...)
	s.mu.Unlock()
	return s.closeErr
}

// credListener accepts only connections from the user uid.
type credListener struct {
	*net.UnixListener
	uid int
	log *slog.Logger
}

func (l *credListener) Accept() (net.Conn, error) {
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return nil, err
		}
		uid, err := peerUID(c)
		if err == nil && uid == l.uid {
			return c, nil
		}
		if err != nil {
			l.log.Warn("refused a control socket connection: cannot read its peer credentials", "error", err)
		} else {
			l.log.Warn("refused a control socket connection from another user", "uid", uid)
		}
		c.Close()
	}
}
