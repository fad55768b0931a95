package config

import (
	"errors"
	"fmt"
	"strings"

	"github.com/p2pnode/p2pnode/node"
	"github.com/p2pnode/p2pnode/overlay"
)

// Examples used in error messages.
const (
	exampleTarget = "127.0.0.1:22"
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
	for _, kp := range []struct {
		key  string
		port int
	}{{"stun_port", f.Bootstrap.STUNPort}, {"stun_alt_port", f.Bootstrap.STUNAltPort}} {
		if key, port := kp.key, kp.port; port < 0 || port > 65535 {
			c.add("bootstrap."+key, "", "bad value for %q in [bootstrap]: %d is not a port from 1 to 65535 (remove the key for the default)", key, port)
		}
	}
	if s := f.Bootstrap.STUNAltIP; s != "" {
		if err := node.CheckSTUNAltIP(s); err != nil {
			c.add("bootstrap.stun_alt_ip", s, "bad value for \"stun_alt_ip\" in [bootstrap]: %v", err)
		}
	}
	for i, s := range f.NAT.STUN {
		if err := node.CheckSTUNServer(s); err != nil {
			c.add(fmt.Sprintf("nat.stun[%d]", i), s, "bad value for \"stun\" in [nat]: %v", err)
		}
	}
	return c.problems
}

func (c *checker) node(n *Node) {
	c.listen("node", "[node]", n.Listen, true)
	for i, s := range n.Bootstrap {
		if _, _, err := node.ParseBootstrapAddr(s); err != nil {
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
		if _, err := node.ParsePeerID(s); err != nil {
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
		c.add(table+".listen", "", "empty \"listen\" %s: list at least one multiaddr, e.g. %q, or %s", "in "+where, node.ExampleListenAddr, fix)
		return
	}
	for i, s := range addrs {
		if _, err := node.ParseListenAddr(s); err != nil {
			c.add(fmt.Sprintf("%s.listen[%d]", table, i), s, "bad value for \"listen\" in %s: %v", where, err)
		}
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
