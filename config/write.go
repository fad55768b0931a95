package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// DefaultTOML is the commented config file that `p2pnode init` writes. Every
// key in it is commented out and shows its default (the listen multiaddrs and
// DHT prefix are node's), so it loads to [Default]; uncommenting the examples
// gives a valid file too (a test checks both).
var DefaultTOML = strings.NewReplacer(
	"@LISTEN@", `#   "`+strings.Join(defaultListen, "\",\n#   \"")+`",`,
	"@PREFIX@", strconv.Quote(defaultDHTProtocolPrefix),
).Replace(defaultTOML)

const defaultTOML = `# p2pnode configuration.
#
# Every key is optional: a commented-out key shows its default. Flags on the
# command line override this file. Unknown keys are errors, so a typo cannot
# silently change what the node does.

[node]
# Multiaddrs to listen on.
# Default: TCP and QUIC on port 4001, on every IPv4 and IPv6 address.
# listen = [
@LISTEN@
# ]

# Bootstrap peers, as full multiaddrs ending in /p2p/PEERID.
# Default (empty): libp2p's public default bootstrap peers (the Amino DHT).
# bootstrap = ["/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWRATtujoz8BAz4wNJGDM29FYToG8t3UTH1cNK63AK5Ntu"]

# Ask the router to forward a port to this node (UPnP, NAT-PMP). Default: true.
# nat_port_map = true

# Protocol prefix of the Kademlia DHT: "/ipfs" gives /ipfs/kad/1.0.0, the
# public Amino DHT. Use your own, e.g. "/myoverlay", for a separate network.
# dht_protocol_prefix = @PREFIX@

# p2pnode's own hole punch for a peer behind a symmetric NAT (the birthday
# method: up to 256 UDP sockets on one side, 2048 paced probes from the
# other); DCUtR runs either way. Default: true.
# birthday_punch = true

# Services this node exposes to peers, one [[service]] table each. Nothing is
# exposed by default. A service is reachable only by the peers on its allow
# list; public = true opens it to every peer.
#
# [[service]]
# name   = "ssh"            # 1-63 letters, digits, '.', '_', '-'
# target = "127.0.0.1:22"   # host:port to connect to on this machine
# allow  = ["12D3KooWRRcpVcrZTCVsqKe5cJmzD4aFG42euR739itet1Ua7iz5"]   # peer IDs
# public = false            # true: every peer may use it

# STUN servers for the NAT check ('p2pnode nat'), HOST:PORT, asked before
# those the bootstrap peers announce (every p2pnode bootstrap node runs one).
# [nat]
# stun = ["203.0.113.7:3478"]

# Settings used only by 'p2pnode bootstrap'.
# [bootstrap]
# Multiaddrs a bootstrap node listens on. Default: listen of [node].
# listen = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]
# Peer IDs whose relayed connections to each other are not limited (both
# ends must be listed). Default: none; every relayed connection keeps the
# circuit relay v2 limit of 2 minutes and 128 KiB each way.
# relay_allow = ["12D3KooWRRcpVcrZTCVsqKe5cJmzD4aFG42euR739itet1Ua7iz5"]
`

// WriteDefault writes [DefaultTOML] to path with mode 0600, creating the
// parent directory (mode 0700) if needed. It never overwrites: if path
// exists, it returns an error that says so and wraps [fs.ErrExist].
func WriteDefault(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("config %s: cannot create its directory: %w", path, err)
	}
	file, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("config %s already exists; not overwriting it (edit it, or remove it first): %w", path, fs.ErrExist)
	}
	if err != nil {
		return fmt.Errorf("config %s: cannot create it: %w", path, err)
	}
	_, err = file.WriteString(DefaultTOML)
	if err == nil {
		err = file.Sync()
	}
	if cerr := file.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("config %s: cannot write it: %w", path, err)
	}
	return nil
}
