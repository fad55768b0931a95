//go:build linux

package netlab

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// NAT is a site router's behaviour, named in RFC 4787 terms (mapping, then
// filtering).
type NAT string

const (
	// NATNone: no router; the site's hosts sit on the public segment with
	// their own public addresses.
	NATNone NAT = "none"
	// NATFirewall: no translation (the LAN is a routed public subnet,
	// 11.K.0.0/24), but a stateful filter drops unsolicited inbound
	// connections, like a host firewall or an IPv6-style home router.
	NATFirewall NAT = "firewall"
	// NATPortRestricted: endpoint-independent mapping, address-and-port-
	// dependent filtering ("port-restricted cone"). Linux masquerade: it
	// keeps the source port when it is free, so the mapping does not depend
	// on the destination in practice.
	NATPortRestricted NAT = "eim-apdf"
	// NATRestricted: endpoint-independent mapping, address-dependent
	// filtering ("restricted cone"): once a host sent from a port to an IP
	// address, any port of that address may send to the mapped port.
	NATRestricted NAT = "eim-adf"
	// NATFullCone: endpoint-independent mapping and filtering ("full cone"):
	// once a host sent from a port, anyone may send to the mapped port.
	NATFullCone NAT = "eim-eif"
	// NATSymmetric: endpoint-dependent mapping ("symmetric"): masquerade
	// fully-random gives each new destination another external port, which
	// defeats hole punching by port prediction.
	NATSymmetric NAT = "edm"
	// NATSequential: endpoint-dependent mapping with sequential port
	// allocation, as many carrier-grade and enterprise NATs do: each new
	// flow gets the next external port of a counter that every flow
	// through the router shares, so the next mapping can be predicted from
	// the last one (RFC 4787 section 4.1 "port assignment"; what frp's
	// xtcp and Tailscale's port prediction rely on).
	NATSequential NAT = "edm-seq"
)

// NATs lists every behaviour, for table-driven tests.
var NATs = []NAT{NATNone, NATFirewall, NATPortRestricted, NATRestricted, NATFullCone, NATSymmetric, NATSequential}

// Site is a LAN behind one router (or, for NATNone, hosts on the public
// segment).
type Site struct {
	Name     string
	NAT      NAT
	Reject   bool // unsolicited inbound is answered (RST / ICMP) rather than dropped
	BlockUDP bool // the router forwards no UDP at all

	lab      *Lab
	routerNS string     // "" for NATNone
	wanIP    net.IP     // router's public address; nil for NATNone
	lan      *net.IPNet // nil for NATNone
	nextHost int        // last octet of the next host's LAN address
	shape    shaping    // of the WAN link (NATNone: of each host's link)
}

// SiteOption changes how AddSite builds a site.
type SiteOption func(*Site)

// RejectInbound makes the router answer unsolicited inbound traffic on its
// WAN side, with a TCP reset or an ICMP port unreachable, instead of
// silently dropping it as most home routers do. A peer then learns at once
// that a dial failed rather than after a timeout.
func RejectInbound() SiteOption { return func(s *Site) { s.Reject = true } }

// BlockUDP makes the router drop every UDP packet it would forward, both
// ways, like a network that allows only TCP: QUIC and STUN cannot work
// there.
func BlockUDP() SiteOption { return func(s *Site) { s.BlockUDP = true } }

// AddSite adds a site whose router behaves as nat. Every site gets its own
// LAN, 10.K.0.0/24 behind a NAT, or the routed public 11.K.0.0/24 behind a
// firewall; the router is .1, hosts are .2 and up.
func (l *Lab) AddSite(name string, nat NAT, opts ...SiteOption) *Site {
	l.tb.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reserve("site", name)
	s := &Site{Name: name, NAT: nat, lab: l, nextHost: 2}
	for _, o := range opts {
		o(s)
	}
	if err := s.shape.link.validate(); err != nil {
		l.tb.Fatalf("netlab: site %q: ShapeWAN: %v", name, err)
	}
	switch nat {
	case NATNone:
		if s.Reject || s.BlockUDP {
			l.tb.Fatalf("netlab: site %q: RejectInbound and BlockUDP need a router; %s has none", name, nat)
		}
		return s
	case NATFirewall, NATPortRestricted, NATRestricted, NATFullCone, NATSymmetric, NATSequential:
	default:
		l.tb.Fatalf("netlab: site %q: unknown NAT %q (want one of %v)", name, nat, NATs)
	}
	if l.nextSite > 254 {
		l.tb.Fatalf("netlab: too many sites")
	}
	k := byte(l.nextSite)
	l.nextSite++
	first := byte(10)
	if nat == NATFirewall {
		first = 11 // no translation: the LAN must be routable from the public side
	}
	s.lan = &net.IPNet{IP: net.IPv4(first, k, 0, 0).To4(), Mask: net.CIDRMask(24, 32)}
	gw := net.IPv4(first, k, 0, 1).To4()

	s.routerNS = l.newNS("r-" + name)
	s.wanIP = l.attachPublic(s.routerNS, "wan", "r-"+name, s.shape)
	l.mustIP("-n", s.routerNS, "link", "add", "lan", "type", "bridge")
	l.mustIP("-n", s.routerNS, "addr", "add", gw.String()+"/24", "dev", "lan")
	l.mustIP("-n", s.routerNS, "link", "set", "lan", "up")
	// Forwarding only inside this namespace; the machine's own setting is
	// not touched.
	l.mustSysctl(s.routerNS, "net.ipv4.ip_forward=1")
	l.mustNFT(s.routerNS, s.ruleset())

	if nat == NATFirewall {
		// Its LAN is a lab public subnet: every public-side namespace, now
		// and later, routes it via this router.
		r := route{dst: s.lan, via: s.wanIP}
		for _, ns := range l.publicSide {
			if ns != s.routerNS {
				l.mustIP("-n", ns, "route", "add", r.dst.String(), "via", r.via.String())
			}
		}
		l.routes = append(l.routes, r)
	}
	return s
}

// PublicIP is the router's address on the public segment, which NAT sites'
// hosts appear to come from; nil for NATNone, whose hosts have their own.
func (s *Site) PublicIP() net.IP { return s.wanIP }

// RouterNS is the router's namespace ("" for NATNone), for inspecting it
// (`ip netns exec NS nft list ruleset`, conntrack).
func (s *Site) RouterNS() string { return s.routerNS }

// AddHost adds a host to the site's LAN, with a default route to the router.
// For NATNone it adds a public host.
func (s *Site) AddHost(name string) *Host {
	l := s.lab
	l.tb.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reserve("host", name)
	if s.NAT == NATNone {
		return l.addPublicHostLocked(name, s, s.shape)
	}
	if s.nextHost > 254 {
		l.tb.Fatalf("netlab: site %q is full", s.Name)
	}
	n := s.nextHost
	s.nextHost++
	base := s.lan.IP.To4()
	ip := net.IPv4(base[0], base[1], base[2], byte(n)).To4()
	gw := net.IPv4(base[0], base[1], base[2], 1).To4()

	ns := l.newNS("h-" + name)
	port := "h" + strconv.Itoa(n)
	l.mustIP("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", s.routerNS)
	l.mustIP("-n", s.routerNS, "link", "set", port, "master", "lan", "up")
	l.mustIP("-n", ns, "addr", "add", ip.String()+"/24", "dev", "eth0")
	l.mustIP("-n", ns, "link", "set", "eth0", "up")
	// A default route is what a real host behind a home router has (and
	// what libp2p's gateway discovery looks for); it cannot lead out of the
	// lab because the router knows only lab subnets.
	l.mustIP("-n", ns, "route", "add", "default", "via", gw.String())
	return &Host{Name: name, NS: ns, IP: ip, Site: s, lab: l}
}

func (l *Lab) mustNFT(ns, ruleset string) {
	l.tb.Helper()
	if _, err := runTool(context.Background(), l.ipPath, []byte(ruleset), "netns", "exec", ns, l.nft, "-f", "-"); err != nil {
		l.tb.Fatalf("netlab: loading nftables ruleset into %s: %v\n%s", ns, err, ruleset)
	}
}

// ruleset is the router's nftables configuration. "wan" faces the public
// segment, "lan" is the LAN bridge.
//
// Filtering: conntrack lets in what belongs to a flow the LAN started
// (established, related: replies and their ICMP errors); anything else from
// the WAN is dropped or rejected, both when it is forwarded and when it is
// addressed to the router itself (otherwise the router's own stack would
// answer with RST / port unreachable and "drop" would not be silent).
//
// Full cone (eim-eif) has no ready-made Linux target. The mechanism here:
//   - outbound: `snat to WAN` — without "random" the kernel keeps the source
//     port when the resulting tuple is free, so the mapping is the same for
//     every destination (endpoint-independent);
//   - learn: after source NAT (postrouting, priority srcnat+10) each
//     outbound LAN flow records (protocol, mapped port) -> (LAN address,
//     port) in a dynamic map, read from the conntrack entry's reply tuple
//     (the mapped port, even if the kernel had to change it) and original
//     tuple (the LAN endpoint); entries expire after mapTimeout without
//     traffic, like a NAT binding;
//   - inbound: a new flow from the WAN to a mapped port is DNATed to that
//     LAN endpoint (prerouting), whoever sends it (endpoint-independent
//     filtering), and the forward filter accepts flows with `ct status dnat`.
//     Replies to such a flow leave through the same conntrack entry, so they
//     carry the mapped port.
//
// Restricted cone (eim-adf) is full cone's mechanism plus a set of the
// remote addresses each mapped port sent to (learned in postrouting like
// the binding): a new inbound flow is DNATed only if its source address is
// in the set for that port, whatever its source port.
//
// Symmetric (edm) is `masquerade fully-random`: each new flow (each
// destination ip:port) gets a random external port.
//
// Sequential symmetric (edm-seq) is `snat` to the port that nftables'
// `numgen inc` counter picks from a map: the nat chain sees only a flow's
// first packet, so each new TCP or UDP flow takes the next port
// (seqPortBase and up, wrapping after seqPorts). The map is there because
// numgen's value is in host byte order and a NAT port is read in network
// order: `offset` alone gives ports 256 apart. Other protocols (ICMP) are
// masqueraded.
func (s *Site) ruleset() string {
	deny := "\t\tiifname \"wan\" drop\n"
	if s.Reject {
		// TCP reset for TCP; for everything else the default reject, ICMP
		// port unreachable.
		deny = "\t\tiifname \"wan\" meta l4proto tcp reject with tcp reset\n\t\tiifname \"wan\" reject\n"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "table ip netlab {\n")
	switch s.NAT {
	case NATPortRestricted:
		fmt.Fprintf(&b, "\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\toifname \"wan\" masquerade\n\t}\n")
	case NATSymmetric:
		fmt.Fprintf(&b, "\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\toifname \"wan\" masquerade fully-random\n\t}\n")
	case NATSequential:
		fmt.Fprintf(&b, "\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\toifname \"wan\" meta l4proto { tcp, udp } snat to %s : numgen inc mod %d map { %s }\n\t\toifname \"wan\" masquerade\n\t}\n", s.wanIP, seqPorts, seqPortMap())
	case NATFullCone, NATRestricted:
		fmt.Fprintf(&b, `	map fullcone {
		type inet_proto . inet_service : ipv4_addr . inet_service
		flags dynamic,timeout
		timeout %s
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan" snat to %s
	}
	chain learn {
		type filter hook postrouting priority srcnat + 10; policy accept;
		oifname "wan" ct direction original ct status snat meta l4proto { tcp, udp } update @fullcone { meta l4proto . ct reply proto-dst : ct original ip saddr . ct original proto-src }
	}
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		%s
	}
`, mapTimeout, s.wanIP, s.inboundDNAT())
	}
	if s.NAT == NATRestricted {
		// The same binding map, and a set of the remote addresses each
		// mapped port sent to: only those may open a flow to it.
		fmt.Fprintf(&b, `	set adf {
		type ipv4_addr . inet_proto . inet_service
		flags dynamic,timeout
		timeout %s
	}
	chain learnadf {
		type filter hook postrouting priority srcnat + 11; policy accept;
		oifname "wan" ct direction original ct status snat meta l4proto { tcp, udp } update @adf { ip daddr . meta l4proto . ct reply proto-dst }
	}
`, mapTimeout)
	}
	dnatAccept := ""
	if s.BlockUDP {
		dnatAccept = "\t\tmeta l4proto udp drop\n"
	}
	if s.NAT == NATFullCone || s.NAT == NATRestricted {
		dnatAccept += "\t\tiifname \"wan\" ct status dnat accept\n"
	}
	fmt.Fprintf(&b, `	counter udp_out { }
	chain forward {
		type filter hook forward priority filter; policy accept;
		oifname "wan" meta l4proto udp counter name "udp_out"
		ct state established,related accept
		ct state invalid drop
%s%s	}
	chain input {
		type filter hook input priority filter; policy accept;
		iifname "wan" ct state established,related accept
%s	}
}
`, dnatAccept, deny, deny)
	return b.String()
}

// UDPPacketsOut is how many UDP packets the site's router has forwarded
// from its LAN to the public side since it was built: what its hosts sent
// (hole punch probes included), counted by an nftables counter. It fails
// for NATNone (no router) and when nft cannot be run.
func (s *Site) UDPPacketsOut(ctx context.Context) (int64, error) {
	if s.routerNS == "" {
		return 0, fmt.Errorf("netlab: site %q has no router", s.Name)
	}
	out, err := runTool(ctx, s.lab.ipPath, nil, "netns", "exec", s.routerNS, s.lab.nft, "-j", "list", "counter", "ip", "netlab", "udp_out")
	if err != nil {
		return 0, err
	}
	var doc struct {
		Nftables []struct {
			Counter *struct {
				Packets int64 `json:"packets"`
			} `json:"counter"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return 0, fmt.Errorf("netlab: parsing nft's counter: %w", err)
	}
	for _, o := range doc.Nftables {
		if o.Counter != nil {
			return o.Counter.Packets, nil
		}
	}
	return 0, fmt.Errorf("netlab: no udp_out counter in %s: %s", s.routerNS, out)
}

// Cut makes the site's router drop every forwarded packet of protocol
// proto ("tcp" or "udp") to or from ip, both ways, as a path that died
// would (the relay, elsewhere, stays reachable), until restore is called.
// Each cut is a table of its own, so cuts can overlap.
func (s *Site) Cut(ctx context.Context, ip net.IP, proto string) (restore func() error, err error) {
	if s.routerNS == "" {
		return nil, fmt.Errorf("netlab: site %q has no router to cut a path on", s.Name)
	}
	if proto != "tcp" && proto != "udp" {
		return nil, fmt.Errorf("netlab: Cut: protocol %q, want tcp or udp", proto)
	}
	s.lab.mu.Lock()
	s.lab.cuts++
	table := fmt.Sprintf("netlabcut%d", s.lab.cuts)
	s.lab.mu.Unlock()
	ruleset := fmt.Sprintf(`table ip %s {
	chain forward {
		type filter hook forward priority filter - 10; policy accept;
		ip daddr %s meta l4proto %s drop
		ip saddr %s meta l4proto %s drop
	}
}
`, table, ip, proto, ip, proto)
	if _, err := runTool(ctx, s.lab.ipPath, []byte(ruleset), "netns", "exec", s.routerNS, s.lab.nft, "-f", "-"); err != nil {
		return nil, err
	}
	return func() error {
		_, err := runTool(context.Background(), s.lab.ipPath, nil, "netns", "exec", s.routerNS, s.lab.nft, "delete", "table", "ip", table)
		return err
	}, nil
}

// inboundDNAT is the prerouting rule that lets a new flow from the WAN in
// to a mapped port: from anyone (full cone), or from an address the port
// sent to (restricted cone).
func (s *Site) inboundDNAT() string {
	if s.NAT == NATRestricted {
		return `iifname "wan" meta l4proto { tcp, udp } ip saddr . meta l4proto . th dport @adf dnat to meta l4proto . th dport map @fullcone`
	}
	return `iifname "wan" meta l4proto { tcp, udp } dnat to meta l4proto . th dport map @fullcone`
}

// The ports of a sequential symmetric router (NATSequential): seqPortBase
// to seqPortBase+seqPorts-1, the first flow getting seqPortBase. A lab's
// router sees far fewer flows than seqPorts before their conntrack entries
// expire, so a wrapped counter does not meet a port still in use.
const (
	seqPortBase = 20000
	seqPorts    = 4096
)

// seqPortMap is the body of the numgen-to-port map of NATSequential.
func seqPortMap() string {
	var b strings.Builder
	for i := range seqPorts {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d : %d", i, seqPortBase+i)
	}
	return b.String()
}

// mapTimeout is how long a full-cone binding outlives its last outbound
// packet: about the conntrack UDP stream timeout, so a binding lasts as long
// as the flow it came from would.
const mapTimeout = "3m"
