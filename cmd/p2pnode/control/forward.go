package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2pnode/p2pnode/node"
	"github.com/p2pnode/p2pnode/overlay"
)

// Forwarder is what a daemon that can forward offers through the socket
// (serve does), so that `p2pnode forward` run next to it uses the daemon's
// node instead of putting the same peer ID online a second time.
type Forwarder interface {
	// ForwardListen forwards target ("PEERID:SERVICE" or "NAME/SERVICE")
	// from the local TCP address listen until ctx ends; it calls ready
	// once it listens.
	ForwardListen(ctx context.Context, target, listen string, ready func(addr string, p peer.ID)) error
	// ForwardUDP is ForwardListen for a UDP service, from a local UDP
	// address.
	ForwardUDP(ctx context.Context, target, listen string, ready func(addr string, p peer.ID)) error
	// ForwardStream opens one forwarded stream to target.
	ForwardStream(ctx context.Context, target string) (network.Stream, error)
}

// Finder is what a daemon that looks names up offers (serve does), so that
// `p2pnode find` run next to it uses the daemon's node.
type Finder interface {
	Find(ctx context.Context, name string) ([]FoundPeer, error)
}

// FoundPeer is one peer that advertises a name: the services it lets the
// asking peer use, or why it could not be asked.
type FoundPeer struct {
	Peer     peer.ID  `json:"peer"`
	Path     string   `json:"path"`
	Services []string `json:"services"`
	Error    string   `json:"error,omitempty"`
}

// find serves GET /v1/find?name=NAME.
func (s *Server) find(w http.ResponseWriter, r *http.Request, f Finder) {
	ctx, cancel := context.WithTimeout(r.Context(), maxFindTimeout)
	defer cancel()
	found, err := f.Find(ctx, r.URL.Query().Get("name"))
	if err != nil {
		writeError(w, http.StatusBadGateway, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, found)
}

// maxFindTimeout bounds a name lookup done by the daemon.
const maxFindTimeout = time.Minute

// Find has the daemon look name up.
func (c *Client) Find(ctx context.Context, name string) ([]FoundPeer, error) {
	var found []FoundPeer
	err := c.do(ctx, http.MethodGet, "/v1/find?"+url.Values{"name": {name}}.Encode(), &found)
	return found, err
}

// forwardReady is the first line of a /v1/forward answer.
type forwardReady struct {
	Addr string  `json:"addr"`
	Peer peer.ID `json:"peer"`
}

// forward serves POST /v1/forward: the answer is one JSON line once the
// daemon listens, then nothing until the forward ends. The forward lasts
// as long as the request: when the client goes away, it stops.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, f Forwarder) {
	q := r.URL.Query()
	if q.Get("persist") == "1" {
		s.forwardPersistent(w, q.Get("target"), q.Get("listen"), f)
		return
	}
	flusher, _ := w.(http.Flusher)
	started := false
	listen := f.ForwardListen
	if q.Get("udp") == "1" {
		listen = f.ForwardUDP
	}
	err := listen(r.Context(), q.Get("target"), q.Get("listen"), func(addr string, p peer.ID) {
		started = true
		writeJSON(w, http.StatusOK, forwardReady{Addr: addr, Peer: p})
		if flusher != nil {
			flusher.Flush()
		}
	})
	if err != nil && !started {
		writeError(w, http.StatusBadGateway, err.Error())
	}
}

// Status is what GET /v1/status answers: the node's status, and the
// forwards the daemon keeps for `forward --persist`.
type Status struct {
	node.Status
	// PersistentForwards lists them by listen address, oldest first.
	PersistentForwards []PersistentForward `json:"persistent_forwards"`
}

// PersistentForward is one forward started with `forward --persist`.
type PersistentForward struct {
	Listen  string    `json:"listen"`  // local HOST:PORT it accepts on
	Target  string    `json:"target"`  // PEER:SERVICE or NAME/SERVICE as given
	Peer    peer.ID   `json:"peer"`    // the peer it resolved to
	Started time.Time `json:"started"` // when it began listening
}

// persistent is a running persistent forward.
type persistent struct {
	PersistentForward
	cancel context.CancelFunc
}

// persistentForwards returns the running persistent forwards, oldest first.
func (s *Server) persistentForwards() []PersistentForward {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]PersistentForward, 0, len(s.persist))
	for _, p := range s.persist {
		out = append(out, p.PersistentForward)
	}
	slices.SortFunc(out, func(a, b PersistentForward) int { return a.Started.Compare(b.Started) })
	return out
}

// forwardPersistent starts a forward that the daemon keeps after the
// request (forward --persist), until Close or DELETE /v1/forward.
func (s *Server) forwardPersistent(w http.ResponseWriter, target, listen string, f Forwarder) {
	ctx, cancel := context.WithCancel(s.ctx)
	ready := make(chan forwardReady, 1)
	errc := make(chan error, 1)
	s.persistWG.Add(1)
	go func() {
		defer s.persistWG.Done()
		defer cancel()
		var me *persistent
		err := f.ForwardListen(ctx, target, listen, func(a string, p peer.ID) {
			me = &persistent{PersistentForward{Listen: a, Target: target, Peer: p, Started: time.Now()}, cancel}
			s.mu.Lock()
			if s.persist == nil {
				s.persist = make(map[string]*persistent)
			}
			s.persist[a] = me
			s.mu.Unlock()
			ready <- forwardReady{Addr: a, Peer: p}
		})
		if me != nil {
			// closeForward may have removed it already, and a new
			// forward may hold the address by now.
			s.mu.Lock()
			if s.persist[me.Listen] == me {
				delete(s.persist, me.Listen)
			}
			s.mu.Unlock()
			s.log.Info("persistent forward stopped", "listen", me.Listen, "target", target)
		}
		errc <- err
	}()
	select {
	case rd := <-ready:
		s.log.Info("persistent forward started", "listen", rd.Addr, "target", target)
		writeJSON(w, http.StatusOK, rd)
	case err := <-errc:
		writeError(w, http.StatusBadGateway, err.Error())
	}
}

// closeForward serves DELETE /v1/forward?listen=ADDR: it stops that
// persistent forward. It is gone from status at once; its open connections
// still get the shutdown grace period.
func (s *Server) closeForward(w http.ResponseWriter, r *http.Request) {
	addr := r.URL.Query().Get("listen")
	s.mu.Lock()
	pf, ok := s.persist[addr]
	delete(s.persist, addr)
	var open []string
	for a := range s.persist {
		open = append(open, a)
	}
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no persistent forward listens on %q (open: %v)", addr, open))
		return
	}
	pf.cancel()
	writeJSON(w, http.StatusOK, forwardClosed{Closed: addr})
}

// forwardStdio serves POST /v1/forward-stdio: once the stream to the target
// is open, the control connection itself carries its bytes, both ways, with
// half-close.
func (s *Server) forwardStdio(w http.ResponseWriter, r *http.Request, f Forwarder) {
	str, err := f.ForwardStream(r.Context(), r.URL.Query().Get("target"))
	if err != nil {
		writeError(w, http.StatusBadGateway, err.Error())
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		_ = str.Reset()
		writeError(w, http.StatusInternalServerError, "the control socket cannot carry a stream")
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		_ = str.Reset()
		return
	}
	defer conn.Close()
	if _, err := io.WriteString(brw, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"); err != nil || brw.Flush() != nil {
		_ = str.Reset()
		return
	}
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		_ = str.Reset()
		return
	}
	// Not r.Context(): net/http cancels it once the connection is hijacked.
	// The daemon's own context ends when it closes.
	stop := context.AfterFunc(s.ctx, func() { _ = str.Reset(); _ = conn.Close() })
	defer stop()
	if err := overlay.Pump(&bufferedUnixConn{UnixConn: uc, r: brw.Reader}, str); err != nil {
		s.log.Debug("forwarded stdio stream ended", "error", err)
	}
}

// bufferedUnixConn reads what the HTTP server had buffered first.
type bufferedUnixConn struct {
	*net.UnixConn
	r *bufio.Reader
}

func (c *bufferedUnixConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// ForwardListen asks the daemon to forward target from the local address
// listen (a UDP one if udp); ready gets the address it listens on and the peer it reached.
// It returns when ctx ends (nil) or when the daemon stops forwarding (an
// error).
func (c *Client) ForwardListen(ctx context.Context, target, listen string, udp bool, ready func(addr string, p peer.ID)) error {
	q := url.Values{"target": {target}, "listen": {listen}}
	if udp {
		q.Set("udp", "1")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://p2pnode/v1/forward?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("no answer from the p2pnode daemon on %s: %w", c.path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return answerError(resp)
	}
	var first forwardReady
	if err := json.NewDecoder(resp.Body).Decode(&first); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("control socket %s: bad forward answer: %w", c.path, err)
	}
	ready(first.Addr, first.Peer)
	_, _ = io.Copy(io.Discard, resp.Body)
	if ctx.Err() != nil {
		return nil
	}
	return errors.New("the p2pnode daemon stopped forwarding (did it shut down?)")
}

// ForwardPersist asks the daemon to forward target from listen and to keep
// doing so after this call, until CloseForward or the daemon stops.
func (c *Client) ForwardPersist(ctx context.Context, target, listen string) (string, peer.ID, error) {
	q := url.Values{"target": {target}, "listen": {listen}, "persist": {"1"}}
	var rd forwardReady
	err := c.do(ctx, http.MethodPost, "/v1/forward?"+q.Encode(), &rd)
	return rd.Addr, rd.Peer, err
}

// CloseForward stops the persistent forward listening on addr.
func (c *Client) CloseForward(ctx context.Context, addr string) error {
	var fc forwardClosed
	return c.do(ctx, http.MethodDelete, "/v1/forward?"+url.Values{"listen": {addr}}.Encode(), &fc)
}

// forwardClosed answers DELETE /v1/forward.
type forwardClosed struct {
	Closed string `json:"closed"`
}

// ForwardStdio has the daemon open one forwarded stream to target and
// carries it over in and out: end of in closes the stream's write side, and
// it returns once the remote side has finished (out is then closed).
func (c *Client) ForwardStdio(ctx context.Context, target string, in io.Reader, out io.WriteCloser) error {
	d := net.Dialer{Timeout: dialTimeout}
	conn, err := d.DialContext(ctx, "unix", c.path)
	if err != nil {
		return fmt.Errorf("cannot reach the p2pnode daemon at %s: %w", c.path, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	q := url.Values{"target": {target}}
	req, _ := http.NewRequest(http.MethodPost, "http://p2pnode/v1/forward-stdio?"+q.Encode(), nil)
	if err := req.Write(conn); err != nil {
		return fmt.Errorf("control socket %s: %w", c.path, err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return fmt.Errorf("control socket %s: %w", c.path, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return answerError(resp)
	}
	uc := conn.(*net.UnixConn)
	go func() {
		if _, err := io.Copy(uc, in); err == nil {
			_ = uc.CloseWrite()
		}
	}()
	_, err = io.Copy(out, br)
	_ = out.Close()
	if ctx.Err() != nil {
		return fmt.Errorf("forwarding stopped: %w", ctx.Err())
	}
	return err
}

// answerError turns a daemon's error answer into an *Error.
func answerError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var eb errorBody
	if json.Unmarshal(body, &eb) != nil || eb.Error == "" {
		return &Error{Code: resp.StatusCode, Message: fmt.Sprintf("the p2pnode daemon answered %s", resp.Status)}
	}
	return &Error{Code: resp.StatusCode, Message: eb.Error}
}
