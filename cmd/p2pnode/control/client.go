package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2pnode/p2pnode/node"
)

// Client talks to the daemon behind a home directory's control socket.
type Client struct {
	path string
	hc   *http.Client
}

// Error is an error the daemon answered with.
type Error struct {
	// Code is the HTTP status: 400 for a bad request, 502 when the operation
	// failed, 504 when it timed out.
	Code    int
	Message string
}

func (e *Error) Error() string { return e.Message }

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

// Status returns the daemon node's status and its persistent forwards.
func (c *Client) Status(ctx context.Context) (Status, error) {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	var st Status
	err := c.do(ctx, http.MethodGet, "/v1/status", &st)
	return st, err
}

// Ping has the daemon connect to p and ping it count times; timeout bounds
// the daemon's work (lookup, connect, pings), ctx the whole call. On an
// error it also returns the pings that came back before it.
func (c *Client) Ping(ctx context.Context, p peer.ID, count int, timeout time.Duration) (node.PingResult, error) {
	q := url.Values{"peer": {p.String()}, "count": {strconv.Itoa(count)}}
	if timeout > 0 {
		q.Set("timeout", timeout.String())
	}
	var res node.PingResult
	err := c.do(ctx, http.MethodPost, "/v1/ping?"+q.Encode(), &res)
	return res, err
}

func (c *Client) do(ctx context.Context, method, path string, out any) error {
	// The host part is ignored: DialContext always dials the socket.
	req, err := http.NewRequestWithContext(ctx, method, "http://p2pnode"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("the p2pnode daemon did not answer in time (%s): %w", c.path, ctx.Err())
		}
		return fmt.Errorf("no answer from the p2pnode daemon on %s: %w", c.path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("control socket %s: reading the answer: %w", c.path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		if json.Unmarshal(body, &eb) != nil || eb.Error == "" {
			return &Error{Code: resp.StatusCode, Message: fmt.Sprintf("the p2pnode daemon answered %s", resp.Status)}
		}
		if len(eb.Result) > 0 {
			_ = json.Unmarshal(eb.Result, out)
		}
		return &Error{Code: resp.StatusCode, Message: eb.Error}
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("control socket %s: bad answer: %w", c.path, err)
	}
	return nil
}
