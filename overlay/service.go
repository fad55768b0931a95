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
	// Name is what a forwarding peer asks for (PEERID:NAME); see
	// [CheckServiceName].
	Name string
	// Target is the address the listener dials for this service, as
	// HOST:PORT ([CheckTarget]); a DNS name is resolved at dial time. This is
	// the only address the listener ever dials for the service.
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

var (
	nameRE      = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	hostLabelRE = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$`)
)

// nameRule is what CheckServiceName's errors say a name must be.
const nameRule = "use 1 to 63 letters, digits, '.', '_' or '-'; a name starts with a letter or digit"

// CheckServiceName returns nil if name is a valid service name: 1 to 63
// letters, digits, '.', '_' or '-', starting with a letter or digit
// ([A-Za-z0-9][A-Za-z0-9._-]{0,62}); a port number such as "22" is one.
// [Service.Name], the name in a forward request and NAME of the --expose
// syntax follow this rule. The error says what is wrong without quoting
// name, so that the caller names it in its own words (a flag, a config key).
func CheckServiceName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case len(name) > 63:
		return fmt.Errorf("%s (this one is %d bytes long)", nameRule, len(name))
	case !nameRE.MatchString(name):
		return errors.New(nameRule)
	}
	return nil
}

// TargetError is the error of [CheckTarget]. It says which part of a service
// target is wrong, so that a caller can word the problem for its users.
type TargetError struct {
	// Target is the target as given.
	Target string
	// Part is "host" or "port" when that part is wrong, "" when Target is
	// not HOST:PORT at all.
	Part string
	// Value is the wrong host or port as written; "" when it is empty or
	// Part is "".
	Value string
	// Err says what is wrong.
	Err error
}

// Error names the target and what is wrong with it.
func (e *TargetError) Error() string {
	if e.Part == "" {
		return fmt.Sprintf("target %q is not HOST:PORT (an IPv6 host in brackets): %v", e.Target, e.Err)
	}
	return fmt.Sprintf("target %q: %v", e.Target, e.Err)
}

// Unwrap returns Err.
func (e *TargetError) Unwrap() error { return e.Err }

// CheckTarget returns nil if target is a valid [Service.Target]: HOST:PORT,
// where HOST is an IP address (IPv6 in brackets, with an optional zone) or a
// DNS host name and PORT is a decimal number from 1 to 65535. Otherwise it
// returns a [*TargetError].
func CheckTarget(target string) error {
	_, _, err := splitTarget(target)
	return err
}

// splitTarget checks target as CheckTarget does and returns its parts.
func splitTarget(target string) (host string, port uint16, err error) {
	host, portStr, err := splitHostPort(target)
	if err != nil {
		return "", 0, &TargetError{Target: target, Err: err}
	}
	if host == "" {
		// The Go dialer takes ":22" for "any local address", which is not
		// what anyone means.
		return "", 0, &TargetError{Target: target, Part: "host", Err: errors.New("empty host")}
	}
	if port, err = parsePort(portStr); err != nil {
		return "", 0, &TargetError{Target: target, Part: "port", Value: portStr, Err: err}
	}
	if _, err := netip.ParseAddr(host); err != nil && !isHostName(host) {
		return "", 0, &TargetError{Target: target, Part: "host", Value: host,
			Err: fmt.Errorf("host %q is neither an IP address nor a DNS name", host)}
	}
	return host, port, nil
}

// splitHostPort is net.SplitHostPort with errors that say what to write.
func splitHostPort(s string) (host, port string, err error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return "", "", errors.New("missing port")
	}
	host, port = s[:i], s[i+1:]
	if strings.HasPrefix(host, "[") {
		if !strings.HasSuffix(host, "]") {
			return "", "", errors.New("missing ']' after IPv6 address")
		}
		return host[1 : len(host)-1], port, nil
	}
	if strings.ContainsAny(host, ":[]") {
		return "", "", errors.New("an IPv6 address must be in brackets, e.g. [::1]:22")
	}
	return host, port, nil
}

// isHostName reports whether s is a syntactically valid DNS host name
// (RFC 1123 labels; '_' allowed, as resolvers accept it).
func isHostName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if !hostLabelRE.MatchString(label) {
			return false
		}
	}
	return true
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

// ParseExpose parses an --expose value of the form [udp:][NAME=][HOST:]PORT:
//
//	"22"                -> {Name: "22",  Target: "127.0.0.1:22"}
//	"ssh=127.0.0.1:22"  -> {Name: "ssh", Target: "127.0.0.1:22"}
//	"web=[::1]:8080"    -> {Name: "web", Target: "[::1]:8080"}
//	"10.0.0.5:5432"     -> {Name: "5432", Target: "10.0.0.5:5432"}
//	"udp:dns=53"        -> {Name: "dns", Target: "127.0.0.1:53", UDP: true}
//
// Without NAME the service is named after its port; without HOST the target
// is on 127.0.0.1. NAME follows [CheckServiceName], HOST:PORT [CheckTarget].
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
	target := addr
	if !strings.ContainsAny(addr, ":[]") {
		// A bare port: say what is wrong with it, not with a target the
		// user did not write.
		if _, err := parsePort(addr); err != nil {
			return fail("%v", err)
		}
		target = net.JoinHostPort(defaultExposeHost, addr)
	} else if strings.Count(addr, ":") > 1 && !strings.HasPrefix(addr, "[") {
		return fail("%q looks like an IPv6 address without brackets; write [HOST]:PORT", addr)
	}
	host, port, err := splitTarget(target)
	if err != nil {
		return fail("%v", err)
	}
	if !named {
		name = strconv.Itoa(int(port))
	} else if err := CheckServiceName(name); err != nil {
		return fail("service name %q: %v", name, err)
	}
	return Service{Name: name, Target: net.JoinHostPort(host, strconv.Itoa(int(port))), UDP: udp}, nil
}

// ValidateServices checks a service list as a whole: every name valid
// ([CheckServiceName]) and unique, every target valid ([CheckTarget]), every
// allow-list entry a valid peer ID. It returns nil or one error joining (errors.Join) every
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
		if err := CheckServiceName(s.Name); err != nil {
			errs = append(errs, fmt.Errorf("%s: bad name: %w", label, err))
		} else if first, dup := seen[s.Name]; dup {
			errs = append(errs, fmt.Errorf("%s: defined twice (services #%d and #%d); names must be unique", label, first+1, i+1))
		} else {
			seen[s.Name] = i
		}
		if err := CheckTarget(s.Target); err != nil {
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
