package main

import (
	"github.com/p2pnode/p2pnode/cmd/p2pnode/control"
	"github.com/p2pnode/p2pnode/node"
)

// startDaemon takes the home's control socket, then starts the node and
// answers `status` and `ping` on the socket. The socket comes first so that
// a second daemon in the same home stops before it binds the first one's
// ports. stop closes the socket, then the node.
func startDaemon(g *globalFlags, cfg node.Config) (n *node.Node, stop func(), err error) {
	ctl, err := control.Listen(g.home, g.logger)
	if err != nil {
		return nil, nil, err
	}
	n, err = node.New(cfg)
	if err != nil {
		ctl.Close()
		return nil, nil, err
	}
	ctl.Serve(n)
	return n, func() {
		ctl.Close()
		n.Close()
	}, nil
}
