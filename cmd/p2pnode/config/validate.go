package config

import (
	"errors"
	"fmt"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/p2pnode/p2pnode/overlay"
)

// Examples used in error messages.
const (
	exampleListen    = "/ip4/0.0.0.0/tcp/4001"
	exampleBootstrap = "/ip4/203.0.113.7/tcp/4001/p2p/12D3KooW..."
	exampleTarget    = "127.0.0.1:22"
)

// Validate checks every value of f and returns an [*Error] listing every
// problem found, or nil. [Load] calls it; call it again after changing f
// (for example after applying flags). Problems about values that still hold
// what was read from the file name its line; others have Line 0.
//
// A service with an empty allow list and public = false is not a problem:
// it is reachable by no peer.
func (f *File) Validate() error {
	return newError(f.check())
}

// check returns every problem of f.
func (f *File) check() []Problem {
	c := checker{file: f.Path, pos: f.pos}
	c.node(&f.Node)
	c.services(f.Services)
	if f.Bootstrap.Listen != nil {
		c.listen("bootstrap", "[bootstrap]", f.Bootstrap.Listen, false)
	}
	for name, ids := range f.Names {
		if err := overlay.CheckServiceName(name); err != nil {
			c.add("names."+name, "", "bad name %q in [names]: %v", name, err)
		}
		c.peerIDs("names."+name, ids, fmt.Sprintf("bad peer ID for name %q in [names]", name))
	}
	c.peerIDs("bootstrap.relay_allow", f.Bootstrap.RelayAllow, `bad value for "relay_allow" in [bootstrap]`)
	return c.problems
}

func (c *checker) node(n *Node) {
	c.listen("node", "[node]", n.Listen, true)
	for i, s := range n.Bootstrap {
		if _, _, err := ParseBootstrapAddr(s); err != nil {
			c.add(fmt.Sprintf("node.bootstrap[%d]", i), s, "bad value for \"bootstrap\" in [node]: %v", err)
		}
	}
	if err := checkDHTProtocolPrefix(n.DHTProtocolPrefix); err != nil {
		c.add("node.dht_protocol_prefix", n.DHTProtocolPrefix, "bad value for \"dht_protocol_prefix\" in [node]: %v", err)
	}
}

func (c *checker) services(services []Service) {
	first := map[string]int{} // service name -> index of its first table
	for i, s := range services {
		base := fmt.Sprintf("service[%d]", i)
		where := servicePlace(i, s.Name)
		switch err := overlay.CheckServiceName(s.Name); {
		case s.Name == "":
			c.add(base, "", "missing \"name\" in %s: give the service a name, e.g. name = \"ssh\"", where)
		case err != nil:
			c.add(base+".name", s.Name, "bad value for \"name\" in %s: %v", where, nameError(s.Name, err))
		default:
			if j, dup := first[s.Name]; dup {
				prev := fmt.Sprintf("[[service]] #%d", j+1)
				if l := c.pos.line(fmt.Sprintf("service[%d]", j), ""); l > 0 {
					prev += fmt.Sprintf(" (line %d)", l)
				}
				c.add(base+".name", s.Name, "duplicate service name %q in [[service]] #%d: %s has it already; service names must be unique", s.Name, i+1, prev)
			} else {
				first[s.Name] = i
			}
		}
		if s.Target == "" {
			c.add(base, "", "missing \"target\" in %s: give the host:port to connect to, e.g. target = %q", where, exampleTarget)
		} else if err := CheckTarget(s.Target); err != nil {
			c.add(base+".target", s.Target, "bad value for \"target\" in %s: %v", where, err)
		}
		if s.Protocol != "" && s.Protocol != "tcp" && s.Protocol != "udp" {
			c.add(base+".protocol", s.Protocol, "bad value for \"protocol\" in %s: %q; use \"tcp\" or \"udp\"", where, s.Protocol)
		}
		c.peerIDs(base+".allow", s.Allow, fmt.Sprintf("bad value for \"allow\" in %s", where))
	}
}

// peerIDs records a problem "WHAT: REASON" for each bad peer ID of ids, the
// value of key.
func (c *checker) peerIDs(key string, ids []string, what string) {
	for i, s := range ids {
		if _, err := ParsePeerID(s); err != nil {
			c.add(fmt.Sprintf("%s[%d]", key, i), s, "%s: %v", what, err)
		}
	}
}

type checker struct {
	file     string
	pos      *positions
	problems []Problem
}

// add records a problem about key, whose current value is value ("" when
// the key is not a string).
func (c *checker) add(key, value, format string, args ...any) {
	c.problems = append(c.problems, Problem{
		File: c.file,
		Line: c.pos.line(key, value),
		Key:  key,
		Msg:  fmt.Sprintf(format, args...),
	})
}

func (c *checker) listen(table, where string, addrs []string, defaulted bool) {
	if len(addrs) == 0 {
		fix := "remove the key to use the defaults"
		if !defaulted {
			fix = "remove the key to use \"listen\" of [node]"
		}
		c.add(table+".listen", "", "empty \"listen\" %s: list at least one multiaddr, e.g. %q, or %s", "in "+where, exampleListen, fix)
		return
	}
	for i, s := range addrs {
		if _, err := ParseListenAddr(s); err != nil {
			c.add(fmt.Sprintf("%s.listen[%d]", table, i), s, "bad value for \"listen\" in %s: %v", where, err)
		}
	}
}

// parseMultiaddr parses s and, if it is not a multiaddr, says why and shows
// example, a valid one.
func parseMultiaddr(s, example string) (multiaddr.Multiaddr, error) {
	m, err := multiaddr.NewMultiaddr(s)
	if err != nil {
		reason := strings.TrimPrefix(err.Error(), fmt.Sprintf("failed to parse multiaddr %q: ", s))
		return nil, fmt.Errorf("%q is not a valid multiaddr (%s); a valid one looks like %q", s, reason, example)
	}
	if _, err := m.ValueForProtocol(multiaddr.P_QUIC); err == nil {
		return nil, fmt.Errorf("%q uses /quic (QUIC draft-29), which libp2p no longer speaks; write /quic-v1 instead", s)
	}
	return m, nil
}

// ParseListenAddr parses a multiaddr to listen on, such as
// "/ip4/0.0.0.0/tcp/4001". Its error quotes s, says what is wrong and shows a
// valid multiaddr, so it can be printed as is (after naming the flag or key).
// A listen multiaddr must not end in /p2p/PEERID.
func ParseListenAddr(s string) (multiaddr.Multiaddr, error) {
	m, err := parseMultiaddr(s, exampleListen)
	if err != nil {
		return nil, err
	}
	if _, id := peer.SplitAddr(m); id != "" {
		return nil, fmt.Errorf("%q ends in /p2p/PEERID, which a listen multiaddr must not; remove it, e.g. %q", s, exampleListen)
	}
	return m, nil
}

// ParseBootstrapAddr parses the full multiaddr of a bootstrap peer, such as
// "/ip4/203.0.113.7/tcp/4001/p2p/12D3KooW...", and returns it with the peer
// ID it ends in. A multiaddr without /p2p/PEERID at the end, or with nothing
// before it, is an error. Errors can be printed as is.
func ParseBootstrapAddr(s string) (multiaddr.Multiaddr, peer.ID, error) {
	m, err := parseMultiaddr(s, exampleBootstrap)
	if err != nil {
		return nil, "", err
	}
	transport, id := peer.SplitAddr(m)
	if id == "" {
		return nil, "", fmt.Errorf("%q has no peer ID: add /p2p/PEERID at the end, e.g. %q", s, exampleBootstrap)
	}
	if err := checkPeerID(id); err != nil {
		return nil, "", fmt.Errorf("%q ends in /p2p/%s, which is not a valid peer ID (%v)", s, id, err)
	}
	if transport == nil {
		return nil, "", fmt.Errorf("%q has no address to dial: put the bootstrap peer's address before /p2p/, e.g. %q", s, exampleBootstrap)
	}
	return m, id, nil
}

// ParsePeerID parses a peer ID such as "12D3KooW...". Errors can be printed
// as is.
func ParsePeerID(s string) (peer.ID, error) {
	if s == "" {
		return "", errors.New(`empty peer ID; a peer ID looks like "12D3KooW..." ('p2pnode id' prints a node's)`)
	}
	id, err := peer.Decode(s)
	if err == nil {
		err = checkPeerID(id)
	}
	if err != nil {
		reason := strings.TrimPrefix(err.Error(), "failed to parse peer ID: ")
		return "", fmt.Errorf("%q is not a valid peer ID (%s); a peer ID looks like \"12D3KooW...\" ('p2pnode id' prints a node's)", s, reason)
	}
	return id, nil
}

// ParsePeerIDs parses each of ss with [ParsePeerID]. what names the list
// for the error, e.g. "--allow": the error holds one line "bad WHAT: REASON"
// per bad entry (errors.Join), so that every mistake is fixed in one round.
// The result is empty, not nil, when ss is.
func ParsePeerIDs(what string, ss []string) ([]peer.ID, error) {
	ids := make([]peer.ID, 0, len(ss))
	var errs []error
	for _, s := range ss {
		id, err := ParsePeerID(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("bad %s: %w", what, err))
			continue
		}
		ids = append(ids, id)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return ids, nil
}

// checkPeerID rejects IDs that decode as a multihash but that no key gives:
// peer.Decode accepts "12D3KooWnope" (a 7-byte identity multihash). A real
// peer ID is the identity multihash of a public key, or the SHA2-256
// multihash of one.
func checkPeerID(id peer.ID) error {
	_, err := id.ExtractPublicKey()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, peer.ErrNoPublicKey):
		if len(id) == 34 && id[0] == 0x12 && id[1] == 0x20 { // sha2-256, 32 bytes
			return nil
		}
		return errors.New("not the hash of a public key")
	default:
		return errors.New("does not hold a valid public key")
	}
}

func nameError(name string, err error) error {
	if err != nil {
		return fmt.Errorf("service name %q is not valid: %w", name, err)
	}
	return nil
}

// CheckTarget returns nil if target is a valid service target
// ([overlay.CheckTarget]: host:port, port 1-65535). Its error quotes target,
// says what is wrong in the words of config.toml and shows an example, so it
// can be printed as is.
func CheckTarget(target string) error {
	var te *overlay.TargetError
	if err := overlay.CheckTarget(target); !errors.As(err, &te) {
		return err
	}
	switch {
	case te.Part == "":
		return fmt.Errorf("%q is not host:port (%v); write it like %q", target, te.Err, exampleTarget)
	case te.Part == "port":
		return fmt.Errorf("%q: port %q is not a number from 1 to 65535", target, te.Value)
	case te.Value == "":
		return fmt.Errorf("%q has no host; write it like %q", target, exampleTarget)
	default:
		return fmt.Errorf("%q: %q is neither an IP address nor a host name", target, te.Value)
	}
}

// checkDHTProtocolPrefix returns nil if p can prefix DHT protocol IDs.
func checkDHTProtocolPrefix(p string) error {
	if p == "" || p == "/" || !strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") ||
		strings.Contains(p, "//") || strings.ContainsFunc(p, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return fmt.Errorf("%q is not a protocol prefix: it must start with \"/\", not end with \"/\" and hold no spaces, e.g. %q or \"/myoverlay\"", p, defaultDHTProtocolPrefix)
	}
	return nil
}
