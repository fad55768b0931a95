package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// versionHeader carries the client's APIVersion on every request.
const versionHeader = "P2pnode-Api-Version"

// maxRequestBody bounds a request's JSON body.
const maxRequestBody = 1 << 20

// envelope is every JSON answer: the schema version, and the result or the
// error (with the result done before it, e.g. the pings that came back).
type envelope struct {
	Version int             `json:"version"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   string          `json:"error,omitempty"`
	// Kind says what sort of error: bad_input, not_found, timeout, failed,
	// version.
	Kind string `json:"kind,omitempty"`
}

// Error kinds on the wire.
const (
	kindBadInput = "bad_input"
	kindNotFound = "not_found"
	kindTimeout  = "timeout"
	kindFailed   = "failed"
	kindVersion  = "version"
)

// Serve starts answering requests with api, in a goroutine that Close
// stops. It may be called once.
func (s *Server) Serve(api API) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.serving {
		return
	}
	s.serving = true
	mux := http.NewServeMux()
	mux.Handle("POST /v2/status", handle(func(ctx context.Context, _ struct{}) (Status, error) { return api.Status(ctx) }))
	mux.Handle("POST /v2/ping", handle(api.Ping))
	mux.Handle("POST /v2/find", handle(func(ctx context.Context, req findRequest) ([]FoundPeer, error) {
		return api.Find(ctx, req.Name)
	}))
	mux.Handle("POST /v2/persist", handle(api.Persist))
	mux.Handle("POST /v2/persist/close", handle(func(ctx context.Context, req closeRequest) (struct{}, error) {
		return struct{}{}, api.ClosePersistent(ctx, req.Listen)
	}))
	mux.Handle("POST /v2/nat", handle(api.NAT))
	mux.HandleFunc("POST /v2/forward", func(w http.ResponseWriter, r *http.Request) { forward(w, r, api) })
	mux.HandleFunc("POST /v2/forward/stdio", func(w http.ResponseWriter, r *http.Request) { s.forwardStdio(w, r, api) })
	// An older p2pnode's requests get an answer it can print.
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusConflict, map[string]string{"error": versionMismatch("1")})
	})
	s.srv = &http.Server{
		Handler:           s.track(checkVersion(mux)),
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

type findRequest struct {
	Name string `json:"name"`
}

type closeRequest struct {
	Listen string `json:"listen"`
}

// versionMismatch is the error a client of version theirs gets.
func versionMismatch(theirs string) string {
	return fmt.Sprintf("the p2pnode daemon speaks control API version %d and this p2pnode speaks version %s: "+
		"run the same p2pnode binary for both (restart the daemon after an upgrade)", APIVersion, theirs)
}

// checkVersion refuses requests of another schema version.
func checkVersion(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := r.Header.Get(versionHeader)
		if v != strconv.Itoa(APIVersion) && !strings.HasPrefix(r.URL.Path, "/v1/") {
			if v == "" {
				v = "unknown"
			}
			writeEnvelope(w, http.StatusConflict, envelope{Error: versionMismatch(v), Kind: kindVersion})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// track counts the requests in flight, for Close.
func (s *Server) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Add under mu, and never once Close has begun, so that Close's
		// Wait does not race an Add.
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			writeEnvelope(w, http.StatusServiceUnavailable, envelope{Error: "the daemon is shutting down", Kind: kindFailed})
			return
		}
		s.reqs.Add(1)
		s.mu.Unlock()
		defer s.reqs.Done()
		h.ServeHTTP(w, r)
	})
}

// handle turns one API call into a handler: JSON request body in, one
// envelope out.
func handle[Req, Res any](call func(context.Context, Req) (Res, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req Req
		if err := decodeRequest(r, &req); err != nil {
			writeErr(w, err, nil)
			return
		}
		res, err := call(r.Context(), req)
		if err != nil {
			writeErr(w, err, res)
			return
		}
		writeResult(w, res)
	})
}

// decodeRequest reads a JSON body strictly; a bad one is bad input.
func decodeRequest(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxRequestBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		var ie *InputError
		if errors.As(err, &ie) {
			return ie
		}
		return BadInput("bad request to the control socket: %v", err)
	}
	return nil
}

// forward serves POST /v2/forward: the answer is one envelope line once
// the daemon listens, then nothing until the forward ends, then a line
// with its error if it failed. The forward lasts as long as the request:
// when the client goes away, it stops.
func forward(w http.ResponseWriter, r *http.Request, api API) {
	var req ForwardRequest
	if err := decodeRequest(r, &req); err != nil {
		writeErr(w, err, nil)
		return
	}
	flusher, _ := w.(http.Flusher)
	started := false
	err := api.Forward(r.Context(), req, func(at Listening) {
		started = true
		writeResult(w, at)
		if flusher != nil {
			flusher.Flush()
		}
	})
	switch {
	case err != nil && !started:
		writeErr(w, err, nil)
	case err != nil:
		b, _ := json.Marshal(envelope{Version: APIVersion, Error: err.Error(), Kind: kindFailed})
		_, _ = w.Write(append(b, '\n'))
	}
}

// forwardStdio serves POST /v2/forward/stdio: once the stream to the
// target is open, the control connection itself carries its bytes, both
// ways, with half-close.
func (s *Server) forwardStdio(w http.ResponseWriter, r *http.Request, api API) {
	var req ForwardRequest
	if err := decodeRequest(r, &req); err != nil {
		writeErr(w, err, nil)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		writeErr(w, errors.New("the control socket cannot carry a stream"), nil)
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return
	}
	opened := false
	// Not r.Context(): net/http cancels it once the connection is
	// hijacked. The daemon's own context ends when it closes.
	err = api.ForwardStdio(s.ctx, req.Target, brw.Reader, halfCloser{uc}, func() {
		opened = true
		_, _ = io.WriteString(uc, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n")
	})
	if err != nil && !opened {
		code, env := errorEnvelope(err, nil)
		b, _ := json.Marshal(env)
		fmt.Fprintf(uc, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s\n",
			code, http.StatusText(code), len(b)+1, b)
		return
	}
	if err != nil {
		s.log.Debug("forwarded stdio stream ended", "error", err)
	}
}

// halfCloser makes Close a close-write, so the client sees the end of the
// remote's bytes while it may still send.
type halfCloser struct{ *net.UnixConn }

func (h halfCloser) Close() error { return h.CloseWrite() }

// errorEnvelope maps err to an HTTP status and an envelope.
func errorEnvelope(err error, result any) (int, envelope) {
	env := envelope{Version: APIVersion, Error: err.Error(), Kind: kindFailed}
	code := http.StatusBadGateway
	var ie *InputError
	var nf *NotFoundError
	switch {
	case errors.As(err, &ie):
		code, env.Kind = http.StatusBadRequest, kindBadInput
	case errors.As(err, &nf):
		code, env.Kind = http.StatusNotFound, kindNotFound
	case errors.Is(err, context.DeadlineExceeded):
		code, env.Kind = http.StatusGatewayTimeout, kindTimeout
	}
	if result != nil {
		if b, merr := json.Marshal(result); merr == nil && string(b) != "null" {
			env.Result = b
		}
	}
	return code, env
}

func writeErr(w http.ResponseWriter, err error, result any) {
	code, env := errorEnvelope(err, result)
	writeEnvelope(w, code, env)
}

func writeResult(w http.ResponseWriter, result any) {
	b, err := json.Marshal(result)
	if err != nil {
		writeErr(w, err, nil)
		return
	}
	writeEnvelope(w, http.StatusOK, envelope{Result: b})
}

func writeEnvelope(w http.ResponseWriter, code int, env envelope) {
	env.Version = APIVersion
	writeJSON(w, code, env)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}
