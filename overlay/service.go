package overlay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Service is one local TCP service offered to other peers.
type Service struct {
	// Name is what a forwarding peer asks for (PEERID:NAME). It matches
	// [A-Za-z0-9][A-Za-z0-9._-]{0,62}.
	Name string
	// Target is the TCP address the listener dials for this service, as
	// host:port (an IPv6 host in brackets). Host may be an IP address or a
	// DNS name, resolved at dial time; port is decimal, 1-65535. This is the
	// only address the listener ever dials for the service.
	Target string
	// Allow lists the peers that may use the service.
	Allow []peer.ID
	// Public opens the service to every peer, whatever Allow says. It must
	// be set explicitly: an empty Allow with Public false denies everyone.
	Public bool
	// UDP makes the service a UDP one: datagrams to and from Target travel
	// over UDPProtocolID streams. Default TCP.
	UDP bool
}

// exposeForm is quoted in ParseExpose errors so the user sees what is accepted.
const exposeForm = "[udp:][NAME=][HOST:]PORT, e.g. 22, ssh=127.0.0.1:22, web=[::1]:8080, udp:dns=127.0.0.1:53"

// defaultExposeHost is the host of a target given as a bare port: loopback,
// so that `--expose 22` never reaches beyond this machine by accident.
const defaultExposeHost = "127.0.0.1"

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// checkName reports whether name is a valid service name.
func checkName(name string) error {
	if name == "" {
		return errors.New("empty name")
	}
	if len(name) > 63 {
		return fmt.Errorf("name is %d bytes long; the limit is 63", len(name))
	}
	if !nameRE.MatchString(name) {
		return errors.New("a name starts with a letter or digit and contains only letters, digits, '.', '_' and '-'")
	}
	return nil
}

// ParseExpose parses an --expose value of the form [NAME=][HOST:]PORT:
//
//	"22"                -> {Name: "22",  Target: "127.0.0.1:22"}
//	"ssh=127.0.0.1:22"  -> {Name: "ssh", Target: "127.0.0.1:22"}
//	"web=[::1]:8080"    -> {Name: "web", Target: "[::1]:8080"}
//	"10.0.0.5:5432"     -> {Name: "5432", Target: "10.0.0.5:5432"}
//
// Without NAME the service is named after its port; without HOST the target
// is on 127.0.0.1. PORT is decimal, 1-65535; an IPv6 HOST needs brackets.
// The returned Service has no allow list and is not public: the caller adds
// those. The error says what is wrong and shows the accepted form.
func ParseExpose(spec string) (Service, error) {
	fail := func(format string, args ...any) (Service, error) {
		return Service{}, fmt.Errorf("expose %q: %s; the accepted form is %s", spec, fmt.Sprintf(format, args...), exposeForm)
	}
	if strings.TrimSpace(spec) == "" {
		return fail("empty value")
	}
	rest, udp := strings.CutPrefix(spec, "udp:")
	if !udp {
		rest, _ = strings.CutPrefix(spec, "tcp:")
	}
	name, addr, named := strings.Cut(rest, "=")
	if !named {
		addr = rest
	}
	host, portStr := defaultExposeHost, addr
	if strings.ContainsAny(addr, ":[]") {
		h, p, err := net.SplitHostPort(addr)
		if err != nil {
			if strings.Count(addr, ":") > 1 && !strings.HasPrefix(addr, "[") {
				return fail("%q looks like an IPv6 address without brackets; write [HOST]:PORT", addr)
			}
			return fail("%q is not HOST:PORT", addr)
		}
		host, portStr = h, p
	}
	port, err := parsePort(portStr)
	if err != nil {
		return fail("%v", err)
	}
	if err := checkHost(host); err != nil {
		return fail("%v", err)
	}
	if !named {
		name = strconv.Itoa(int(port))
	} else if err := checkName(name); err != nil {
		return fail("service name %q: %v", name, err)
	}
	return Service{Name: name, Target: net.JoinHostPort(host, strconv.Itoa(int(port))), UDP: udp}, nil
}

// parsePort parses a decimal TCP port 1-65535 (no sign, no service names:
// "ssh" would depend on /etc/services of the exposing machine).
func parsePort(s string) (uint16, error) {
	if s == "" {
		return 0, errors.New("missing port")
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %q is not a number between 1 and 65535", s)
	}
	return uint16(n), nil
}

// checkHost accepts an IP address (IPv6 with an optional zone) or something
// shaped like a DNS name. It rejects an empty host because the Go dialer
// treats ":22" as "any local address", which is not what anyone means.
func checkHost(h string) error {
	if h == "" {
		return errors.New("empty host")
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return nil
	}
	if len(h) > 253 {
		return fmt.Errorf("host %q is longer than a DNS name can be", h)
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("host %q is neither an IP address nor a DNS name", h)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("host %q is neither an IP address nor a DNS name", h)
			}
		}
	}
	return nil
}

// checkTarget validates a Service.Target.
func checkTarget(target string) error {
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		return fmt.Errorf("target %q is not HOST:PORT (an IPv6 host in brackets): %w", target, err)
	}
	if _, err := parsePort(port); err != nil {
		return fmt.Errorf("target %q: %w", target, err)
	}
	if err := checkHost(host); err != nil {
		return fmt.Errorf("target %q: %w", target, err)
	}
	return nil
}

// ValidateServices checks a service list as a whole: every name valid and
// unique, every target HOST:PORT with a port 1-65535, every allow-list entry
// a valid peer ID. It returns nil or one error joining (errors.Join) every
// problem found, one line each, so a config with three mistakes is fixed in
// one round.
func ValidateServices(services []Service) error {
	var errs []error
	seen := make(map[string]int, len(services))
	for i, s := range services {
		label := fmt.Sprintf("service %q", s.Name)
		if s.Name == "" {
			label = fmt.Sprintf("service #%d", i+1)
		}
		if err := checkName(s.Name); err != nil {
			errs = append(errs, fmt.Errorf("%s: bad name: %w", label, err))
		} else if first, dup := seen[s.Name]; dup {
			errs = append(errs, fmt.Errorf("%s: defined twice (services #%d and #%d); names must be unique", label, first+1, i+1))
		} else {
			seen[s.Name] = i
		}
		if err := checkTarget(s.Target); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", label, err))
		}
		for _, p := range s.Allow {
			if err := p.Validate(); err != nil {
				errs = append(errs, fmt.Errorf("%s: allow list entry %q is not a peer ID: %w", label, string(p), err))
			}
		}
	}
	return errors.Join(errs...)
}

// clone returns a deep copy, so callers cannot change a running Server's
// allow lists through a slice they hold.
func (s Service) clone() Service {
	s.Allow = slices.Clone(s.Allow)
	return s
}
