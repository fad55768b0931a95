package main

import (
	"github.com/p2pnode/p2pnode/cmd/p2pnode/control"
	"github.com/p2pnode/p2pnode/node"
)

// startDaemon takes the home's control socket, then starts the node and
// answers `status` and `ping` on the socket. The socket comes first so that
// a second daemon in the same home stops before it binds the first one's
// ports. backend, if not nil, wraps the node for the socket (serve adds
// forwarding); stop closes the socket, then the node.
func startDaemon(g *globalFlags, cfg node.Config, backend func(*node.Node) control.Backend) (n *node.Node, stop func(), err error) {
	ctl, err := control.Listen(g.home, g.logger)
	if err != nil {
		return nil, nil, err
	}
	n, err = node.New(cfg)
	if err != nil {
		ctl.Close()
		return nil, nil, err
	}
	if backend != nil {
		ctl.Serve(backend(n))
	} else {
		ctl.Serve(n)
	}
	return n, func() {
		ctl.Close()
		n.Close()
	}, nil
}

// daemonBackend is what serve answers on its control socket: the node's
// status and ping, and forwards for `p2pnode forward` run in the same home.
type daemonBackend struct {
	*node.Node
	*forwarding
}
