// Package control is the control socket of a running p2pnode daemon (serve
// or bootstrap): HTTP with JSON bodies over a Unix socket in the home
// directory, through which `status` and `ping` use the daemon's node instead
// of starting one of their own, so that one peer ID is online once.
//
// Only the user who runs the daemon may use it: the socket has mode 0600 in a
// directory created 0700, and the server also refuses connections whose
// peer credentials (SO_PEERCRED on Linux, LOCAL_PEERCRED on macOS) name
// another user. Windows has no peer credentials on AF_UNIX: there the socket
// file gets a DACL that allows only the daemon's user (socket_windows.go).
//
//	GET  /v1/status                     Status (node.Status and persistent forwards)
//	POST /v1/ping?peer=PEERID&count=N   node.PingResult
//
// Errors are {"error": "..."} with status 400 (bad request), 502 (the
// operation failed) or 504 (it timed out).
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2pnode/p2pnode/node"
)

const (
	// SocketName is the control socket's file name in the home directory.
	SocketName = "control.sock"
	// lockName is the file a daemon holds a lock on (lock.go) while it
	// owns the socket, so that two daemons starting at once cannot both
	// take it.
	lockName = "control.lock"

	// DefaultPingCount is the number of pings when the request names none.
	DefaultPingCount = 3
	// maxPingTimeout bounds a ping request (lookup, connect, pings).
	maxPingTimeout = 5 * time.Minute
	// defaultPingTimeout is a ping request's bound when it names none.
	defaultPingTimeout = time.Minute

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

// Backend is what a daemon offers through the socket; *node.Node is one.
type Backend interface {
	Status() node.Status
	Ping(ctx context.Context, p peer.ID, count int) (node.PingResult, error)
}

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

	// persistent forwards (forward --persist), by listen address; they
	// stop on Close or with forward --close.
	persist   map[string]*persistent
	persistWG sync.WaitGroup

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

// Serve starts answering requests with b, in a goroutine that Close stops.
// It may be called once.
func (s *Server) Serve(b Backend) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.serving {
		return
	}
	s.serving = true
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, Status{Status: b.Status(), PersistentForwards: s.persistentForwards()})
	})
	mux.HandleFunc("POST /v1/ping", func(w http.ResponseWriter, r *http.Request) {
		s.ping(w, r, b)
	})
	if f, ok := b.(Finder); ok {
		mux.HandleFunc("GET /v1/find", func(w http.ResponseWriter, r *http.Request) {
			s.find(w, r, f)
		})
	}
	if f, ok := b.(Forwarder); ok {
		mux.HandleFunc("POST /v1/forward", func(w http.ResponseWriter, r *http.Request) {
			s.forward(w, r, f)
		})
		mux.HandleFunc("POST /v1/forward-stdio", func(w http.ResponseWriter, r *http.Request) {
			s.forwardStdio(w, r, f)
		})
		mux.HandleFunc("DELETE /v1/forward", func(w http.ResponseWriter, r *http.Request) {
			s.closeForward(w, r)
		})
	}
	s.srv = &http.Server{
		Handler:           s.track(mux),
		ReadHeaderTimeout: 5 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return s.ctx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	go func() {
		defer close(s.served)
		err := s.srv.Serve(&credListener{UnixListener: s.ln, uid: s.uid, log: s.log})
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("control socket stopped", "error", err)
		}
	}()
	s.log.Debug("control socket listening", "path", s.path)
}

// track counts the requests in flight, for Close.
func (s *Server) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Add under mu, and never once Close has begun, so that Close's
		// Wait does not race an Add.
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			writeError(w, http.StatusServiceUnavailable, "the daemon is shutting down")
			return
		}
		s.reqs.Add(1)
		s.mu.Unlock()
		defer s.reqs.Done()
		h.ServeHTTP(w, r)
	})
}

func (s *Server) ping(w http.ResponseWriter, r *http.Request, b Backend) {
	q := r.URL.Query()
	p, err := peer.Decode(q.Get("peer"))
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("bad peer %q: %v", q.Get("peer"), err))
		return
	}
	count := DefaultPingCount
	if c := q.Get("count"); c != "" {
		count, err = strconv.Atoi(c)
		if err != nil || count < 1 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("bad count %q: want a positive number", c))
			return
		}
	}
	timeout := defaultPingTimeout
	if t := q.Get("timeout"); t != "" {
		timeout, err = time.ParseDuration(t)
		if err != nil || timeout <= 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("bad timeout %q: want a duration such as 30s", t))
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), min(timeout, maxPingTimeout))
	defer cancel()
	res, err := b.Ping(ctx, p, count)
	if err != nil {
		code := http.StatusBadGateway
		if ctx.Err() != nil {
			code = http.StatusGatewayTimeout
		}
		writeErrorResult(w, code, err.Error(), res)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

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
		s.persistWG.Wait()
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

type errorBody struct {
	Error string `json:"error"`
	// Result is what was done before the error (the pings that came back).
	Result json.RawMessage `json:"result,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorBody{Error: msg})
}

func writeErrorResult(w http.ResponseWriter, code int, msg string, result any) {
	b, err := json.Marshal(result)
	if err != nil {
		writeError(w, code, msg)
		return
	}
	writeJSON(w, code, errorBody{Error: msg, Result: b})
}
