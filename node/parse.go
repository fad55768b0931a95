package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
)

// Examples that errors show, so that a user sees a valid value next to
// the bad one.
const (
	// ExampleListenAddr is a valid listen multiaddr.
	ExampleListenAddr = "/ip4/0.0.0.0/tcp/4001"
	// ExampleBootstrapAddr is the form of a bootstrap peer's multiaddr.
	ExampleBootstrapAddr = "/ip4/203.0.113.7/tcp/4001/p2p/12D3KooW..."
)

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
	m, err := parseMultiaddr(s, ExampleListenAddr)
	if err != nil {
		return nil, err
	}
	if _, id := peer.SplitAddr(m); id != "" {
		return nil, fmt.Errorf("%q ends in /p2p/PEERID, which a listen multiaddr must not; remove it, e.g. %q", s, ExampleListenAddr)
	}
	return m, nil
}

// ParseBootstrapAddr parses the full multiaddr of a bootstrap peer, such as
// "/ip4/203.0.113.7/tcp/4001/p2p/12D3KooW...", and returns it with the peer
// ID it ends in. A multiaddr without /p2p/PEERID at the end, or with nothing
// before it, is an error. Errors can be printed as is.
func ParseBootstrapAddr(s string) (multiaddr.Multiaddr, peer.ID, error) {
	m, err := parseMultiaddr(s, ExampleBootstrapAddr)
	if err != nil {
		return nil, "", err
	}
	transport, id := peer.SplitAddr(m)
	if id == "" {
		return nil, "", fmt.Errorf("%q has no peer ID: add /p2p/PEERID at the end, e.g. %q", s, ExampleBootstrapAddr)
	}
	if err := checkPeerID(id); err != nil {
		return nil, "", fmt.Errorf("%q ends in /p2p/%s, which is not a valid peer ID (%v)", s, id, err)
	}
	if transport == nil {
		return nil, "", fmt.Errorf("%q has no address to dial: put the bootstrap peer's address before /p2p/, e.g. %q", s, ExampleBootstrapAddr)
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

// CheckSTUNServer checks a STUN server address, HOST:PORT (an IP address or
// a DNS name, and a UDP port from 1 to 65535), e.g. "203.0.113.7:3478". Its
// error says what is wrong, for the caller to prefix with where it came
// from.
func CheckSTUNServer(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not HOST:PORT (e.g. 203.0.113.7:3478)", s)
	}
	if host == "" {
		return fmt.Errorf("%q has no host (e.g. 203.0.113.7:3478)", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port %q is not a number from 1 to 65535", s, port)
	}
	return nil
}

// ResolveSTUNServer turns a HOST:PORT that CheckSTUNServer accepts into an
// IPv4 address and port, looking the name up if it is not an IP address.
// Errors: a bad address (CheckSTUNServer's), or a name that does not
// resolve in time.
func ResolveSTUNServer(ctx context.Context, s string) (netip.AddrPort, error) {
	if err := CheckSTUNServer(s); err != nil {
		return netip.AddrPort{}, err
	}
	host, port, _ := net.SplitHostPort(s)
	n, _ := strconv.Atoi(port)
	if ip, err := netip.ParseAddr(host); err == nil {
		return netip.AddrPortFrom(ip.Unmap(), uint16(n)), nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip4", host)
	if err == nil && len(ips) == 0 {
		err = errors.New("no IPv4 address")
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("STUN server %s: cannot resolve %s: %w", s, host, err)
	}
	return netip.AddrPortFrom(ips[0].Unmap(), uint16(n)), nil
}

// CheckSTUNAltIP checks a STUN server's alternate address (RFC 5780
// section 6): an IPv4 address of this host's, not 0.0.0.0. Its error says
// what is wrong.
func CheckSTUNAltIP(s string) error {
	ip, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return fmt.Errorf("%q is not an IP address (e.g. 203.0.113.8)", s)
	case !ip.Unmap().Is4() || ip.IsUnspecified():
		return fmt.Errorf("%q: give an IPv4 address of this host, e.g. 203.0.113.8", s)
	}
	return nil
}
