package bootstrap

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pion/stun/v3"
)

// Default STUN ports (RFC 5389 section 18.4 registers 3478; RFC 5780
// servers commonly answer CHANGE-REQUEST's change-port from the next one).
const (
	DefaultSTUNPort    = 3478
	DefaultSTUNAltPort = 3479
)

// Default rate limits of STUNConfig. A client discovering its NAT's
// behaviour (RFC 5780 section 4) sends a handful of requests, each
// retransmitted up to 7 times (RFC 5389 section 7.2.1), so a burst of 20
// answers and 5 per second serve it; the global limit, 2000 answers per
// second with a burst of 500, bounds the server's output to 232 KB/s
// (2000 answers of at most 116 bytes) whatever the sources. One source, a
// victim whose address is spoofed included, gets at most 20 answers at once
// and 5 per second, at most 2.3 KB and then 580 bytes per second.
const (
	DefaultSTUNSourceRate  = 5.0
	DefaultSTUNSourceBurst = 20
	DefaultSTUNGlobalRate  = 2000.0
	DefaultSTUNGlobalBurst = 500
	DefaultSTUNMaxSources  = 16384
)

// STUNConfig configures a STUNServer. Only IP is required.
//
// The server binds its UDP sockets to IP and AltIP themselves, not to the
// wildcard address, so that an answer leaves from the address
// RESPONSE-ORIGIN names and a change-IP answer from the other IP: the
// addresses must be ones of this host's interfaces. Behind a 1:1 NAT (a
// cloud VM's elastic IP, say) RESPONSE-ORIGIN and OTHER-ADDRESS name the
// private addresses, and the RFC 5780 tests of a client are then wrong.
type STUNConfig struct {
	// IP is the primary address. It must be a unicast address of this
	// host, not 0.0.0.0 or ::.
	IP netip.Addr
	// AltIP is the alternate address (RFC 5780 section 6), of the same
	// family as IP; the zero value means none. With it the server binds
	// IP:Port, IP:AltPort, AltIP:Port and AltIP:AltPort, sends
	// OTHER-ADDRESS and answers CHANGE-REQUEST. Without it the server binds
	// IP:Port only and is a plain RFC 5389 Binding server: RFC 5780
	// section 6 forbids OTHER-ADDRESS when the server cannot bind the same
	// ports on two IP addresses, and asks for 420 Unknown Attribute to any
	// CHANGE-REQUEST, which is what it answers.
	AltIP netip.Addr
	// Port is the primary UDP port; 0 picks a free one (with AltIP, one
	// free on both IPs). Callers that want the standard port pass
	// DefaultSTUNPort.
	Port uint16
	// AltPort is the alternate UDP port, used only with AltIP; 0 picks a
	// free one. Callers pass DefaultSTUNAltPort for the usual one.
	AltPort uint16

	// SourceRate is the number of answers per second the server sends to
	// one source (an IPv4 address, or an IPv6 /64), sustained; 0 means
	// DefaultSTUNSourceRate. Requests beyond it are dropped.
	SourceRate float64
	// SourceBurst is the number of answers one source may get at once;
	// 0 means DefaultSTUNSourceBurst.
	SourceBurst int
	// GlobalRate is the number of answers per second to all sources
	// together; 0 means DefaultSTUNGlobalRate.
	GlobalRate float64
	// GlobalBurst is the number of answers all sources together may get
	// at once; 0 means DefaultSTUNGlobalBurst.
	GlobalBurst int
	// MaxSources bounds the number of sources whose rate the server
	// tracks (about 200 bytes each); 0 means DefaultSTUNMaxSources.
	MaxSources int

	// Logger receives the server's logs; default slog.Default(). Dropped
	// packets are counted (see Stats), not logged.
	Logger *slog.Logger
}

// STUNStats counts what a STUNServer did, since it started.
type STUNStats struct {
	// Responses is the number of answers sent (success and error).
	Responses uint64
	// Dropped is the number of datagrams that were not well-formed STUN
	// Binding requests (RFC 5389 section 7.3), or were larger than
	// STUNMaxRequest bytes.
	Dropped uint64
	// RateLimited is the number of requests not answered because their
	// source or the server as a whole was over its rate.
	RateLimited uint64
	// WriteErrors is the number of answers the kernel refused to send.
	WriteErrors uint64
}

// STUNServer answers STUN Binding requests over UDP (RFC 5389), with the
// RFC 5780 NAT behaviour discovery attributes when it has an alternate IP.
// It is rate limited per source and globally, and answers are at most
// STUNMaxGrowth bytes larger than requests, so that it is no useful
// reflector. Each socket has one goroutine reading it; Close stops them.
type STUNServer struct {
	conns    [4]*net.UDPConn
	tcp      [4]*net.TCPListener // STUN over TCP on the same addresses, where free
	tcpSlots chan struct{}
	layout   stunLayout
	limit    *stunLimiter
	log      *slog.Logger
	done     chan struct{}
	wg       sync.WaitGroup
	close    sync.Once

	responses, dropped, rateLimited, writeErrors atomic.Uint64
}

// NewSTUNServer binds the sockets of cfg and starts answering on them. It
// returns an error, and binds nothing, when cfg is invalid or a socket
// cannot be bound.
func NewSTUNServer(cfg STUNConfig) (*STUNServer, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	s := &STUNServer{
		limit: newSTUNLimiter(cfg.SourceRate, cfg.SourceBurst, cfg.GlobalRate, cfg.GlobalBurst, cfg.MaxSources),
		log:   cfg.Logger,
		done:  make(chan struct{}),

		tcpSlots: make(chan struct{}, stunTCPConns),
	}
	s.layout.hasAlt = cfg.AltIP.IsValid()
	if err := s.listen(cfg); err != nil {
		s.closeConns()
		return nil, err
	}
	for i, c := range s.conns {
		if c == nil {
			continue
		}
		ap := c.LocalAddr().(*net.UDPAddr).AddrPort()
		s.layout.addrs[i] = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	s.listenTCP()
	for i, c := range s.conns {
		if c != nil {
			s.wg.Add(1)
			go s.serve(i)
		}
		if s.tcp[i] != nil {
			s.wg.Add(1)
			go s.serveTCP(i)
		}
	}
	primary, other := s.Addrs()
	attrs := []any{"addr", primary, "source_rate", cfg.SourceRate, "source_burst", cfg.SourceBurst,
		"global_rate", cfg.GlobalRate, "global_burst", cfg.GlobalBurst}
	if other.IsValid() {
		attrs = append(attrs, "other_addr", other)
	} else {
		attrs = append(attrs, "rfc5780", "off: no alternate IP")
	}
	s.log.Info("STUN server started", attrs...)
	return s, nil
}

func (cfg *STUNConfig) defaults() error {
	if !cfg.IP.IsValid() || cfg.IP.IsUnspecified() || cfg.IP.IsMulticast() {
		return fmt.Errorf("stun: primary IP %q is not a unicast address: give one of this host's addresses", cfg.IP)
	}
	cfg.IP = cfg.IP.Unmap()
	if cfg.AltIP.IsValid() {
		cfg.AltIP = cfg.AltIP.Unmap()
		switch {
		case cfg.AltIP.IsUnspecified() || cfg.AltIP.IsMulticast():
			return fmt.Errorf("stun: alternate IP %s is not a unicast address: give another of this host's addresses, or none", cfg.AltIP)
		case cfg.AltIP.Is4() != cfg.IP.Is4():
			return fmt.Errorf("stun: alternate IP %s and primary IP %s are of different families: RFC 5780 needs two addresses of one family", cfg.AltIP, cfg.IP)
		case cfg.AltIP == cfg.IP:
			return fmt.Errorf("stun: alternate IP %s is the primary IP: give a second address of this host, or none", cfg.AltIP)
		case cfg.Port != 0 && cfg.Port == cfg.AltPort:
			return fmt.Errorf("stun: port and alternate port are both %d: they must differ", cfg.Port)
		}
	}
	if cfg.SourceRate < 0 || cfg.GlobalRate < 0 || cfg.SourceBurst < 0 || cfg.GlobalBurst < 0 || cfg.MaxSources < 0 {
		return errors.New("stun: negative rate limit setting")
	}
	if cfg.SourceRate == 0 {
		cfg.SourceRate = DefaultSTUNSourceRate
	}
	if cfg.SourceBurst == 0 {
		cfg.SourceBurst = DefaultSTUNSourceBurst
	}
	if cfg.GlobalRate == 0 {
		cfg.GlobalRate = DefaultSTUNGlobalRate
	}
	if cfg.GlobalBurst == 0 {
		cfg.GlobalBurst = DefaultSTUNGlobalBurst
	}
	if cfg.MaxSources == 0 {
		cfg.MaxSources = DefaultSTUNMaxSources
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return nil
}

// listen binds the sockets into s.conns; the caller closes them on error.
func (s *STUNServer) listen(cfg STUNConfig) error {
	if !cfg.AltIP.IsValid() {
		c, err := listenSTUN(netip.AddrPortFrom(cfg.IP, cfg.Port))
		s.conns[sockPrimary] = c
		return err
	}
	for _, port := range []struct {
		n    uint16
		sock int
	}{{cfg.Port, 0}, {cfg.AltPort, flipPort}} {
		a, b, err := listenSTUNPair(cfg.IP, cfg.AltIP, port.n)
		s.conns[port.sock], s.conns[port.sock|flipIP] = a, b
		if err != nil {
			return err
		}
	}
	return nil
}

// listenSTUNPair binds ip:port and alt:port; port 0 picks one free on both.
func listenSTUNPair(ip, alt netip.Addr, port uint16) (a, b *net.UDPConn, err error) {
	const attempts = 16
	for range attempts {
		if a, err = listenSTUN(netip.AddrPortFrom(ip, port)); err != nil {
			return nil, nil, err
		}
		p := port
		if p == 0 {
			p = a.LocalAddr().(*net.UDPAddr).AddrPort().Port()
		}
		if b, err = listenSTUN(netip.AddrPortFrom(alt, p)); err == nil {
			return a, b, nil
		}
		_ = a.Close()
		if port != 0 || !errors.Is(err, syscall.EADDRINUSE) {
			return nil, nil, err
		}
	}
	return nil, nil, fmt.Errorf("stun: no UDP port free on both %s and %s after %d attempts: %w", ip, alt, attempts, err)
}

func listenSTUN(ap netip.AddrPort) (*net.UDPConn, error) {
	network := "udp4"
	if ap.Addr().Is6() {
		network = "udp6"
	}
	c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(ap))
	if err == nil {
		return c, nil
	}
	hint := "check the STUN address and port"
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		hint = "another program (another STUN server?) has this port: pick other STUN ports"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		hint = "the IP is not one of this host's addresses: give the STUN server an IP of one of its interfaces"
	case errors.Is(err, syscall.EACCES):
		hint = "binding this port needs privileges: pick a port above 1023"
	}
	return nil, fmt.Errorf("stun: listen on %s: %w: %s", ap, err, hint)
}

// Addrs returns the primary address (IP:Port) and its OTHER-ADDRESS
// (AltIP:AltPort, RFC 5780 section 7.4); other is the zero AddrPort when the
// server has no alternate IP. Ports are the bound ones, also when the
// configuration asked for port 0.
func (s *STUNServer) Addrs() (primary, other netip.AddrPort) {
	primary = s.layout.addrs[sockPrimary]
	if s.layout.hasAlt {
		other = s.layout.addrs[sockPrimary^flipIP^flipPort]
	}
	return primary, other
}

// Stats returns the server's counters.
func (s *STUNServer) Stats() STUNStats {
	return STUNStats{
		Responses:   s.responses.Load(),
		Dropped:     s.dropped.Load(),
		RateLimited: s.rateLimited.Load(),
		WriteErrors: s.writeErrors.Load(),
	}
}

// serve reads socket i until Close closes it.
func (s *STUNServer) serve(i int) {
	defer s.wg.Done()
	conn := s.conns[i]
	buf := make([]byte, STUNMaxRequest+1)
	req, resp := new(stun.Message), new(stun.Message)
	var backoff *time.Timer
	for {
		n, src, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient error (ENOBUFS, ICMP bookkeeping): wait a little
			// so that a persistent one does not spin.
			s.log.Debug("STUN read", "addr", s.layout.addrs[i], "error", err)
			if backoff == nil {
				backoff = time.NewTimer(10 * time.Millisecond)
			} else {
				backoff.Reset(10 * time.Millisecond)
			}
			select {
			case <-s.done:
				backoff.Stop()
				return
			case <-backoff.C:
			}
			continue
		}
		tx, act := s.layout.respond(buf[:n], src, i, req, resp)
		if act == stunDrop {
			s.dropped.Add(1)
			continue
		}
		if !s.limit.allow(src.Addr(), time.Now()) {
			s.rateLimited.Add(1)
			continue
		}
		if _, err := s.conns[tx].WriteToUDPAddrPort(resp.Raw, src); err != nil {
			s.writeErrors.Add(1)
			s.log.Debug("STUN write", "from", s.layout.addrs[tx], "to", src, "error", err)
			continue
		}
		s.responses.Add(1)
	}
}

// Close closes the server's sockets and waits for its goroutines to end.
// It returns nil; later calls do nothing.
func (s *STUNServer) Close() error {
	s.close.Do(func() {
		close(s.done)
		s.closeConns()
		s.wg.Wait()
	})
	return nil
}

func (s *STUNServer) closeConns() {
	for _, c := range s.conns {
		if c != nil {
			_ = c.Close()
		}
	}
	for _, ln := range s.tcp {
		if ln != nil {
			_ = ln.Close()
		}
	}
}
