package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// serveMetrics serves Prometheus metrics at http://addr/metrics until the
// returned stop is called, from a registry of this process's own (not the
// global default, so that nothing registered elsewhere leaks in, and tests
// can run several nodes in one process) that holds the Go runtime's and the
// process's collectors; go-libp2p's and p2pnode's metrics go to the
// returned registerer. A busy address is an error (nodeConfig checked its form).
func serveMetrics(g *globalFlags, addr string) (_ prometheus.Registerer, stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			g.logger.Warn("metrics server stopped", "error", err)
		}
	}()
	g.logger.Info("serving metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return reg, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}
