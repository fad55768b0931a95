package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2pnode/p2pnode/node/natcheck"
)

// Port prediction (strategyPredict) is PunchProtocol's strategy for two
// peers whose NATs both map each destination to a new port
// (endpoint-dependent mapping), when both allocate those ports
// sequentially: each new flow gets the last one's port plus a delta that
// the NAT check measured (natcheck's port allocation test). Neither side
// can know which port the other's NAT will give the flow between them, but
// each can count: right before the punch, each side asks its STUN server
// for a new mapping (its NAT's newest port, the "base") and sends it over
// the relayed stream. Then both open predictFlows new flows toward the
// other's predicted ports, in order: the dialer's i-th flow goes to the
// listener's base+delta*i, the listener's k-th flow to the dialer's
// base+delta*(2k-1). With no foreign flow in between, the first flows of
// both are each other's reverse, and both NATs let them in; when other
// flows took s₁ ports on the dialer's NAT and s₂ on the listener's, the
// pair k = 1+s₁+s₂, i = k+s₂ is (the two strides make some pair match for
// any such shift, as long as i and k stay within predictFlows). A probe
// or its ack that arrives tells the dialer the listener's public port; the
// listener then listens for QUIC on its probing socket's port, and the
// dialer dials it from its QUIC port, which sent its probes: a normal
// libp2p QUIC connection, identities checked by TLS.
//
// The side that opened the stream (the forwarding side) dials; the other
// listens. While a side counts, no NAT check of its own starts (checks
// open mappings) and DCUtR waits (punchFilter.awaitVerdict): its dials
// would open mappings too.

const (
	// predictFlows is how many new flows each side opens (one NAT port
	// each): enough for about predictFlows/2 foreign flows in between.
	predictFlows = 32
	// predictPace spaces the first sweep's probes (each opens a flow,
	// and the order of the flows is the prediction); predictResend spaces
	// the sweeps after it, which resend on the flows already open until
	// the other side's exist too, predictSweeps in all: at most
	// predictFlows*predictSweeps probes a side, over about 2 s.
	predictPace   = time.Millisecond
	predictResend = 100 * time.Millisecond
	predictSweeps = 20
	// predictRTO and predictWait bound the STUN transaction for the base.
	predictRTO  = 200 * time.Millisecond
	predictWait = 2 * time.Second
)

// predictable reports whether a peer's NAT, as m describes it, allocates
// ports sequentially, and it has QUIC to punch with.
func predictable(m punchMsg) bool { return m.Delta != 0 && m.QUIC != "" }

// predictTargets are the ports of the peer's NAT that this side's flows
// go to, in order: base+delta*i for i = 1, 2, … (the dialer) or 1, 3, 5, …
// (the listener); ports outside 1–65535 are left out.
func predictTargets(base, delta int, listener bool) []int {
	var out []int
	for n := 1; n <= predictFlows; n++ {
		idx := n
		if listener {
			idx = 2*n - 1
		}
		if p := base + delta*idx; p > 0 && p <= 65535 {
			out = append(out, p)
		}
	}
	return out
}

// predict runs strategyPredict with id on s (see above); it returns how
// many probes this side sent.
func (b *birthday) predict(ctx context.Context, s network.Stream, msgs <-chan punchMsg, id peer.ID, mine, theirs punchMsg) (sent int, err error) {
	peerAddr, err := netip.ParseAddrPort(theirs.QUIC)
	if err != nil {
		return 0, fmt.Errorf("the peer sent no public address (%q)", theirs.QUIC)
	}
	peerIP := peerAddr.Addr().Unmap()
	if !mine.stun.IsValid() {
		return 0, errors.New("no STUN server answered this node's NAT check")
	}
	listener := s.Stat().Direction == network.DirInbound
	// No check may start while this side counts; one in flight (a
	// daemon's full check after joining takes seconds) is not waited for:
	// its few new mappings are within what the strides absorb.
	release, _ := b.nat.tryHold()
	defer release()

	// The base: a new mapping's port, from the socket that probes (the
	// listener's fresh one) or from a throwaway one (the dialer probes
	// from its QUIC port, whose mappings are old).
	var sock net.PacketConn
	fresh, err := net.ListenUDP("udp4", &net.UDPAddr{})
	if err != nil {
		return 0, fmt.Errorf("open a UDP socket: %w", err)
	}
	defer fresh.Close()
	base, err := natcheck.Binding(ctx, fresh, mine.stun, predictRTO, predictWait)
	if err != nil {
		return 0, fmt.Errorf("learn this NAT's newest port: %w", err)
	}
	if listener {
		sock = fresh
	} else {
		fresh.Close()
		if sock, err = b.quic(); err != nil {
			return 0, fmt.Errorf("no QUIC port to probe from: %w", err)
		}
		defer sock.Close()
	}
	token := randomToken()
	if err := writePunchMsg(s, punchMsg{Type: "predict", Port: int(base.Port()), Token: token}); err != nil {
		return 0, err
	}
	var p punchMsg
	select {
	case p = <-msgs:
	case <-ctx.Done():
		return 0, fmt.Errorf("no prediction from the peer: %w", ctx.Err())
	}
	if p.Type != "predict" || p.Port <= 0 || p.Port > 65535 || p.Token == "" {
		return 0, fmt.Errorf("the peer sent no prediction: %s", p.Reason)
	}

	got := make(chan netip.AddrPort, 1)
	go readPredicted(sock, peerIP, token, p.Token, listener, got)
	probe := []byte(birthdayProbe + p.Token)
	targets := predictTargets(p.Port, theirs.Delta, listener)
	sweep := func() {
		for _, port := range targets {
			_, _ = sock.WriteTo(probe, &net.UDPAddr{IP: peerIP.AsSlice(), Port: port})
			sent++
			if sent <= len(targets) {
				time.Sleep(predictPace) // the first sweep opens the flows, in order
			}
		}
	}
	next := time.NewTimer(0)
	defer next.Stop()
	var hit netip.AddrPort // the listener's public port, as the dialer learned it
	for sweeps := 0; !hit.IsValid(); {
		select {
		case hit = <-got:
		case m, ok := <-msgs:
			// Only the dialer learns the port (from a probe's or an
			// ack's source); it says "hit", or gives up.
			if !ok || m.Type != "hit" || !listener {
				return sent, fmt.Errorf("the peer gave up after %d probes from here: %s", sent, m.Reason)
			}
			sock.Close() // free the port for the QUIC listener
			return sent, b.listenPunched(ctx, s, id, localPort(fresh))
		case <-next.C:
			if sweeps == predictSweeps {
				if listener {
					continue // the dialer says when it gives up
				}
				return sent, fmt.Errorf("none of %d probes got through", sent)
			}
			sweep()
			sweeps++
			next.Reset(predictResend)
		case <-ctx.Done():
			return sent, fmt.Errorf("none of %d probes got through: %w", sent, ctx.Err())
		}
	}
	if err := writePunchMsg(s, punchMsg{Type: "hit"}); err != nil {
		return sent, err
	}
	select {
	case m, ok := <-msgs:
		if !ok || m.Type != "listening" {
			return sent, fmt.Errorf("the peer did not listen on the punched port: %s", m.Reason)
		}
	case <-ctx.Done():
		return sent, fmt.Errorf("the peer did not listen on the punched port: %w", ctx.Err())
	}
	return sent, b.dialPunched(ctx, id, hit)
}

// readPredicted reads sock until it closes or birthdayTimeout passes. A
// datagram from peerIP carrying this side's token (mine) came through
// both NATs: the listener answers a probe with acks carrying the peer's
// token (theirs), so that the dialer learns the port too; the dialer
// reports the source of the first such datagram on got.
func readPredicted(sock net.PacketConn, peerIP netip.Addr, mine, theirs string, listener bool, got chan<- netip.AddrPort) {
	buf := make([]byte, 64)
	probe, ack := birthdayProbe+mine, birthdayAck+mine
	for {
		_ = sock.SetReadDeadline(time.Now().Add(birthdayTimeout))
		n, from, err := sock.ReadFrom(buf)
		if err != nil {
			return
		}
		u, ok := from.(*net.UDPAddr)
		if !ok {
			continue
		}
		ap := u.AddrPort()
		src := netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		msg := string(buf[:n])
		if src.Addr() != peerIP || msg != probe && msg != ack {
			continue
		}
		if listener {
			if msg == probe {
				for range 3 {
					_, _ = sock.WriteTo([]byte(birthdayAck+theirs), u)
				}
			}
			continue
		}
		select {
		case got <- src:
		default:
		}
		return
	}
}

// localPort is the port a UDP socket is bound to.
func localPort(c *net.UDPConn) int { return c.LocalAddr().(*net.UDPAddr).Port }
