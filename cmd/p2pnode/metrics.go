package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/p2pnode/p2pnode/overlay"
)

// serveMetrics serves Prometheus metrics (go-libp2p's, p2pnode's, and the
// Go runtime's, all on the default registry) at http://addr/metrics until
// the returned stop is called. A bad or busy address is an error.
func serveMetrics(g *globalFlags, addr string) (stop func(), err error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, usagef("bad --metrics %q: expected HOST:PORT, e.g. 127.0.0.1:9090 (%v)", addr, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			g.logger.Warn("metrics server stopped", "error", err)
		}
	}()
	g.logger.Info("serving metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}

// forwardMetrics registers the forwarding metrics when --metrics is on.
func forwardMetrics(nf *nodeFlags) (*overlay.Metrics, error) {
	if nf.metrics == "" {
		return nil, nil
	}
	return overlay.NewMetrics(prometheus.DefaultRegisterer)
}
