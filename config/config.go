// Package config loads, checks and writes p2pnode's config.toml.
//
// The file is decoded strictly: an unknown key, a key in the wrong case or a
// value of the wrong type is an error that names the file, the line and the
// key. Defaults live in one place, [Default]; [Load] decodes the file on top
// of them, so a key that is absent keeps its default. After decoding, every
// value is checked and every problem found is reported at once, in one
// [*Error].
//
// A typical caller:
//
//	f, err := config.Load(filepath.Join(home, config.FileName))
//	var cerr *config.Error
//	if errors.As(err, &cerr) {
//		// bad input: print err (one problem per line), exit 2
//	} else if err != nil {
//		// the file exists but cannot be read: exit 1
//	}
//	listen, _ := f.Node.ListenAddrs() // already checked by Load
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	toml "github.com/pelletier/go-toml/v2"

	"github.com/p2pnode/p2pnode/node"
)

// FileName is the name of the config file inside p2pnode's home directory
// (--home, $P2PNODE_HOME, default $XDG_CONFIG_HOME/p2pnode).
const FileName = "config.toml"

// defaultListen is the default value of [node] listen: node's
// DefaultListenAddrs, as strings. [Default] returns a copy.
var defaultListen = func() []string {
	var ss []string
	for _, m := range node.DefaultListenAddrs() {
		ss = append(ss, m.String())
	}
	return ss
}()

// defaultDHTProtocolPrefix is the default value of [node]
// dht_protocol_prefix: node's, which gives the public Amino DHT.
const defaultDHTProtocolPrefix = string(node.DefaultDHTProtocolPrefix)

// File is the content of config.toml, with defaults filled in.
type File struct {
	// Node configures the libp2p node: the [node] table.
	Node Node `toml:"node"`

	// Services are the local TCP services this node exposes to peers: the
	// [[service]] tables, in file order.
	Services []Service `toml:"service"`

	// Names pins names to peer IDs: `forward NAME/SERVICE` and `find NAME`
	// then consider only those peers, whoever else advertises the name.
	// The [names] table: movie-night = ["12D3KooW..."].
	Names map[string][]string `toml:"names"`

	// Bootstrap holds settings used only by `p2pnode bootstrap`: the
	// [bootstrap] table.
	Bootstrap Bootstrap `toml:"bootstrap"`

	// NAT configures the NAT check (`p2pnode nat`, and a daemon's own
	// checks): the [nat] table.
	NAT NAT `toml:"nat"`

	// Path is the file this value was loaded from, as given to [Load]. It
	// is empty for a value from [Default].
	Path string `toml:"-"`

	// Absent is true when [Load] found no file at Path and returned the
	// defaults.
	Absent bool `toml:"-"`

	// pos maps keys to the lines they were read from, for error messages.
	// nil when the value did not come from a file.
	pos *positions
}

// Node is the [node] table: how the node listens and joins the network.
type Node struct {
	// Listen lists the multiaddrs to listen on, for example
	// "/ip4/0.0.0.0/tcp/4001" or "/ip4/0.0.0.0/udp/4001/quic-v1".
	// Default: [node.DefaultListenAddrs] (TCP and QUIC on port 4001, IPv4
	// and IPv6). An explicit empty list is an error. Each multiaddr is
	// checked by [ParseListenAddr].
	Listen []string `toml:"listen"`

	// Bootstrap lists the bootstrap peers as full multiaddrs that end in
	// /p2p/PEERID, for example
	// "/ip4/203.0.113.7/tcp/4001/p2p/12D3KooW...". Empty (the default)
	// means libp2p's public default bootstrap peers; choosing those is up
	// to the caller.
	Bootstrap []string `toml:"bootstrap"`

	// NATPortMap asks the router to forward a port to this node with UPnP
	// or NAT-PMP. Default: true.
	NATPortMap bool `toml:"nat_port_map"`

	// DHTProtocolPrefix is the protocol prefix of the Kademlia DHT: the DHT
	// protocol is PREFIX/kad/1.0.0. Default: [node.DefaultDHTProtocolPrefix]
	// ("/ipfs", the public Amino DHT).
	DHTProtocolPrefix string `toml:"dht_protocol_prefix"`

	// BirthdayPunch turns p2pnode's own hole punch on or off: the birthday
	// method for a peer behind a NAT that maps each destination to a new
	// port (node.PunchProtocol). nil (key absent) means on; DCUtR runs
	// either way.
	BirthdayPunch *bool `toml:"birthday_punch"`
}

// Service is one [[service]] table: a local TCP service exposed to peers.
//
// A service with an empty allow list and public = false is valid and
// reachable by no peer (default deny); callers may warn about it.
type Service struct {
	// Name is what peers ask for, e.g. "ssh"; see
	// [overlay.CheckServiceName]. Required, unique in the file.
	Name string `toml:"name"`

	// Target is the host:port this node connects to for each forwarded
	// connection, e.g. "127.0.0.1:22"; see [CheckTarget]. Required.
	Target string `toml:"target"`

	// Allow lists the peer IDs that may use the service.
	Allow []string `toml:"allow"`

	// Public opens the service to every peer, whatever Allow says. It must
	// be set explicitly; default false.
	Public bool `toml:"public"`

	// Protocol is "tcp" (the default) or "udp".
	Protocol string `toml:"protocol"`
}

// NAT is the [nat] table.
type NAT struct {
	// STUN lists STUN servers, "HOST:PORT", asked before those the
	// bootstrap peers announce; see [node.CheckSTUNServer].
	STUN []string `toml:"stun"`
}

// Bootstrap is the [bootstrap] table, read only by `p2pnode bootstrap`.
type Bootstrap struct {
	// Listen, when set, replaces [node] listen for the bootstrap role.
	// nil (key absent) means use [node] listen; an explicit empty list is
	// an error.
	Listen []string `toml:"listen"`

	// RelayAllow lists the peer IDs whose circuits between each other the
	// relay carries without limit (the fallback when hole punching cannot
	// work, e.g. both peers behind symmetric NATs). Other circuits keep
	// the circuit relay v2 default limit of 2 minutes and 128 KiB each way.
	RelayAllow []string `toml:"relay_allow"`

	// STUN runs the node's STUN server (RFC 5389 Binding with RFC 5780
	// behaviour discovery), which `p2pnode nat` on other peers asks.
	// nil (key absent) means on.
	STUN *bool `toml:"stun"`

	// STUNPort and STUNAltPort are its UDP ports; 0 (key absent) means
	// 3478 and 3479.
	STUNPort    int `toml:"stun_port"`
	STUNAltPort int `toml:"stun_alt_port"`

	// STUNAltIP is a second IPv4 address of this host for RFC 5780's
	// change-IP tests; empty: the second specific listen address, if any.
	STUNAltIP string `toml:"stun_alt_ip"`
}

// PinnedPeers returns the peer IDs name is pinned to, or nil if it is not.
// The error is [node.ParsePeerIDs]: one line per bad peer ID.
func (f *File) PinnedPeers(name string) ([]peer.ID, error) {
	ids, err := node.ParsePeerIDs(fmt.Sprintf("peer ID for name %q in [names]", name), f.Names[name])
	if len(ids) == 0 {
		return nil, err
	}
	return ids, err
}

// RelayAllowedPeers returns RelayAllow parsed as peer IDs. The error is
// [node.ParsePeerIDs]: one line per bad peer ID.
func (b Bootstrap) RelayAllowedPeers() ([]peer.ID, error) {
	return node.ParsePeerIDs(`value for "relay_allow" in [bootstrap]`, b.RelayAllow)
}

// Default returns the configuration used when no config file exists. Every
// default value is set here and nowhere else.
func Default() *File {
	return &File{
		Node: Node{
			Listen:            slices.Clone(defaultListen),
			NATPortMap:        true,
			DHTProtocolPrefix: defaultDHTProtocolPrefix,
		},
	}
}

// Load reads the config file at path, decodes it on top of [Default] and
// checks it.
//
// A missing file is not an error: Load returns the defaults with Absent set.
// A file that exists but cannot be read gives an error wrapping the
// *fs.PathError. Content that is not valid TOML, has unknown keys, values of
// the wrong type or bad values gives an [*Error] listing every problem found,
// one per line; the returned *File is then nil.
func Load(path string) (*File, error) {
	if path == "" {
		return nil, errors.New("config: no file name given")
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		f := Default()
		f.Path = path
		f.Absent = true
		return f, nil
	}
	if err != nil {
		return nil, fmt.Errorf("config %s: cannot read it: %w", path, err)
	}
	return parse(path, data)
}

// parse decodes and checks data, the content of the file at path.
func parse(path string, data []byte) (*File, error) {
	// Some editors start UTF-8 files with a byte order mark; TOML does not
	// allow one, but it carries no meaning, so drop it.
	data = bytes.TrimPrefix(data, []byte("\uFEFF"))

	pos := index(data)
	f := Default()
	f.Path = path
	f.pos = pos

	var problems []Problem
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(f)
	var strict *toml.StrictMissingError
	var derr *toml.DecodeError
	switch {
	case err == nil:
	case errors.As(err, &strict):
		// Decoding went on past the unknown keys: f holds everything
		// else, so check it too and report all problems together.
		for i := range strict.Errors {
			problems = append(problems, pos.unknown(path, &strict.Errors[i]))
		}
	case errors.As(err, &derr):
		// Syntax or type error: decoding stopped here and f is only
		// partly filled, so checking it would report nonsense.
		problems = append(problems, pos.decodeProblem(path, derr))
		problems = append(problems, pos.caseProblems(path)...)
		return nil, newError(problems)
	default:
		return nil, newError([]Problem{{File: path, Msg: "invalid TOML: " + err.Error()}})
	}
	problems = append(problems, pos.caseProblems(path)...)
	problems = append(problems, f.check()...)
	if len(problems) > 0 {
		return nil, newError(problems)
	}
	return f, nil
}

// ListenAddrs returns Listen parsed as multiaddrs.
func (n Node) ListenAddrs() ([]multiaddr.Multiaddr, error) {
	return ParseListenAddrs(n.Listen)
}

// BootstrapPeers returns Bootstrap parsed into one AddrInfo per bootstrap
// peer, in the order the peers first appear (addresses of the same peer ID
// are merged). It returns nil when Bootstrap is empty, which means: use
// libp2p's public default bootstrap peers.
func (n Node) BootstrapPeers() ([]peer.AddrInfo, error) {
	var infos []peer.AddrInfo
	for _, s := range n.Bootstrap {
		m, id, err := node.ParseBootstrapAddr(s)
		if err != nil {
			return nil, err
		}
		i := slices.IndexFunc(infos, func(a peer.AddrInfo) bool { return a.ID == id })
		if i < 0 {
			i, infos = len(infos), append(infos, peer.AddrInfo{ID: id})
		}
		transport, _ := peer.SplitAddr(m)
		infos[i].Addrs = append(infos[i].Addrs, transport)
	}
	return infos, nil
}

// AllowedPeers returns Allow parsed as peer IDs. The error is
// [node.ParsePeerIDs]: one line per bad peer ID.
func (s Service) AllowedPeers() ([]peer.ID, error) {
	return node.ParsePeerIDs(fmt.Sprintf("value for \"allow\" of service %q", s.Name), s.Allow)
}

// ParseListenAddrs parses each of ss with [ParseListenAddr] and returns the
// first error. It does not reject an empty list.
func ParseListenAddrs(ss []string) ([]multiaddr.Multiaddr, error) {
	addrs := make([]multiaddr.Multiaddr, 0, len(ss))
	for _, s := range ss {
		m, err := node.ParseListenAddr(s)
		if err != nil {
			return nil, err
		}
		addrs = append(addrs, m)
	}
	return addrs, nil
}
