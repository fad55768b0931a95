package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/p2pnode/p2pnode/node"
	"github.com/p2pnode/p2pnode/node/natcheck"
)

// Client is the API of the daemon behind a home directory's control
// socket.
type Client struct {
	path string
	hc   *http.Client
}

var _ API = (*Client)(nil)

// Dial checks that a daemon answers on home's control socket and returns a
// client for it. An error wrapping ErrNotRunning means there is no socket,
// or nothing behind it.
func Dial(home string) (*Client, error) {
	path := SocketPath(home)
	if fi, err := os.Lstat(path); err == nil {
		if err := checkSocketOwner(home, fi); err != nil {
			return nil, err
		}
	}
	c, err := net.DialTimeout("unix", path, dialTimeout)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || isConnRefused(err) {
			return nil, fmt.Errorf("%w in %s", ErrNotRunning, home)
		}
		return nil, fmt.Errorf("cannot reach the p2pnode daemon at %s: %w", path, err)
	}
	c.Close()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			d := net.Dialer{Timeout: dialTimeout}
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConns:    1,
		IdleConnTimeout: 10 * time.Second,
	}
	return &Client{path: path, hc: &http.Client{Transport: tr}}, nil
}

// Close releases the client's idle connection.
func (c *Client) Close() {
	c.hc.CloseIdleConnections()
}

// Status implements API.
func (c *Client) Status(ctx context.Context) (Status, error) {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	return call[Status](ctx, c, "status", struct{}{})
}

// Ping implements API; the daemon bounds its work by req.Timeout,
// ctx bounds the whole call.
func (c *Client) Ping(ctx context.Context, req PingRequest) (node.PingResult, error) {
	return call[node.PingResult](ctx, c, "ping", req)
}

// Find implements API.
func (c *Client) Find(ctx context.Context, name string) ([]FoundPeer, error) {
	return call[[]FoundPeer](ctx, c, "find", findRequest{Name: name})
}

// NAT implements API.
func (c *Client) NAT(ctx context.Context, req NATRequest) (natcheck.Report, error) {
	return call[natcheck.Report](ctx, c, "nat", req)
}

// Persist implements API.
func (c *Client) Persist(ctx context.Context, req ForwardRequest) (Listening, error) {
	return call[Listening](ctx, c, "persist", req)
}

// ClosePersistent implements API.
func (c *Client) ClosePersistent(ctx context.Context, listen string) error {
	_, err := call[struct{}](ctx, c, "persist/close", closeRequest{Listen: listen})
	return err
}

// Forward implements API: the daemon forwards for as long as this
// call lasts. It returns nil when ctx ends, an error when the daemon stops
// forwarding.
func (c *Client) Forward(ctx context.Context, req ForwardRequest, ready func(Listening)) error {
	resp, err := c.post(ctx, "forward", req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	var at Listening
	if err := c.decode(resp, dec, &at); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	ready(at)
	var end envelope
	err = dec.Decode(&end)
	switch {
	case ctx.Err() != nil:
		return nil
	case err == nil && end.Error != "":
		return errors.New(end.Error)
	default:
		return errors.New("the p2pnode daemon stopped forwarding (did it shut down?)")
	}
}

// ForwardStdio implements API over a control connection of its own,
// which carries the stream's bytes once the daemon has opened it.
func (c *Client) ForwardStdio(ctx context.Context, t Target, in io.Reader, out io.WriteCloser, ready func()) error {
	d := net.Dialer{Timeout: dialTimeout}
	conn, err := d.DialContext(ctx, "unix", c.path)
	if err != nil {
		return fmt.Errorf("cannot reach the p2pnode daemon at %s: %w", c.path, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	req, err := newRequest(context.Background(), "forward/stdio", ForwardRequest{Target: t})
	if err != nil {
		return err
	}
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
		return c.decode(resp, json.NewDecoder(resp.Body), nil)
	}
	if ready != nil {
		ready()
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

// call posts req to op and decodes the envelope's result.
func call[Res any](ctx context.Context, c *Client, op string, req any) (Res, error) {
	var res Res
	resp, err := c.post(ctx, op, req)
	if err != nil {
		return res, err
	}
	defer resp.Body.Close()
	err = c.decode(resp, json.NewDecoder(io.LimitReader(resp.Body, 16<<20)), &res)
	return res, err
}

func newRequest(ctx context.Context, op string, body any) (*http.Request, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	// The host part is ignored: the transport always dials the socket.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://p2pnode/v2/"+op, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(versionHeader, strconv.Itoa(APIVersion))
	return req, nil
}

func (c *Client) post(ctx context.Context, op string, body any) (*http.Response, error) {
	req, err := newRequest(ctx, op, body)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("the p2pnode daemon did not answer in time (%s): %w", c.path, ctx.Err())
		}
		return nil, fmt.Errorf("no answer from the p2pnode daemon on %s: %w", c.path, err)
	}
	return resp, nil
}

// decode reads one envelope from dec into out (nil: none expected) and
// turns an error answer into the error it stands for. An answer that is not
// an envelope comes from a daemon of an older schema.
func (c *Client) decode(resp *http.Response, dec *json.Decoder, out any) error {
	var env envelope
	if err := dec.Decode(&env); err != nil || env.Version == 0 {
		return fmt.Errorf("the p2pnode daemon on %s answered %s in an older control API (version 1; this p2pnode speaks version %d): "+
			"run the same p2pnode binary for both (restart the daemon after an upgrade)", c.path, resp.Status, APIVersion)
	}
	if env.Version != APIVersion && env.Kind != kindVersion {
		return fmt.Errorf("the p2pnode daemon on %s speaks control API version %d and this p2pnode speaks version %d: "+
			"run the same p2pnode binary for both (restart the daemon after an upgrade)", c.path, env.Version, APIVersion)
	}
	if len(env.Result) > 0 && out != nil {
		if err := json.Unmarshal(env.Result, out); err != nil && env.Error == "" {
			return fmt.Errorf("control socket %s: bad answer: %w", c.path, err)
		}
	}
	msg := errors.New(env.Error)
	switch {
	case env.Error == "" && resp.StatusCode == http.StatusOK:
		return nil
	case env.Error == "":
		return fmt.Errorf("the p2pnode daemon answered %s", resp.Status)
	case env.Kind == kindBadInput:
		return &InputError{Err: msg}
	case env.Kind == kindNotFound:
		return &NotFoundError{Err: msg}
	case env.Kind == kindTimeout:
		return fmt.Errorf("%w (%w)", msg, context.DeadlineExceeded)
	}
	return msg
}
