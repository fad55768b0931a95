package bootstrap

import (
	"net"
	"net/netip"
	"slices"

	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// STUNIPs picks the STUN server's addresses for a node listening on
// listen: the specific IPv4 addresses among them, in order (the first is
// the primary, a second one the alternate, RFC 5780 section 6); when the
// node listens on 0.0.0.0 only, the host's first public IPv4 address (or,
// without one, its first other non-loopback one, then loopback). alt is
// the zero value when there is no second address: pass one with
// --stun-alt-ip. ok is false when the host has no IPv4 address at all.
func STUNIPs(listen []ma.Multiaddr) (primary, alt netip.Addr, ok bool) {
	var specific []netip.Addr
	for _, a := range listen {
		s, err := a.ValueForProtocol(ma.P_IP4)
		if err != nil {
			continue
		}
		ip, err := netip.ParseAddr(s)
		if err != nil || ip.IsUnspecified() {
			continue
		}
		if !slices.Contains(specific, ip) {
			specific = append(specific, ip)
		}
	}
	switch len(specific) {
	case 0:
	case 1:
		return specific[0], netip.Addr{}, true
	default:
		return specific[0], specific[1], true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return netip.Addr{}, netip.Addr{}, false
	}
	var public, private, loopback []netip.Addr
	for _, a := range addrs {
		n, isNet := a.(*net.IPNet)
		if !isNet {
			continue
		}
		ip, isIP := netip.AddrFromSlice(n.IP)
		if !isIP || !ip.Unmap().Is4() {
			continue
		}
		ip = ip.Unmap()
		m, err := manet.FromIP(n.IP)
		switch {
		case ip.IsLoopback():
			loopback = append(loopback, ip)
		case err == nil && manet.IsPublicAddr(m):
			public = append(public, ip)
		case ip.IsGlobalUnicast():
			private = append(private, ip)
		}
	}
	for _, list := range [][]netip.Addr{public, private, loopback} {
		if len(list) > 0 {
			return list[0], netip.Addr{}, true
		}
	}
	return netip.Addr{}, netip.Addr{}, false
}
