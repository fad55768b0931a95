//go:build linux

// Command natprobe is a tiny network probe that netlab's tests (and any
// integration test) run inside lab namespaces to observe NAT behaviour from
// the outside: a STUN-like reflector tells a prober which source ip:port it
// saw, so mapping and filtering can be checked without trusting the router's
// own view.
//
// Every subcommand prints one line per event on stdout, so that a test can
// wait for "ready" before it goes on, and exits with a code a test can check
// without parsing (see the exit* constants).
//
//	natprobe udp-reflect -listen 0.0.0.0:3478   answer each datagram with "ip:port" of its source
//	natprobe tcp-reflect -listen 0.0.0.0:8080   write "ip:port" of each connection's source, then close
//	natprobe udp-probe -port 40000 -to A -to B [-wait 2s]
//	                                            from one socket, learn the mapping each reflector sees
//	                                            ("mapped A ip:port"), then print every datagram that
//	                                            arrives unsolicited ("recv FROM PAYLOAD") until -wait ends
//	natprobe udp-send -to A [-port P] -msg M    send M to A (a few times, it is UDP)
//	natprobe udp-dial -to A [-timeout 1s]       connected UDP socket: "reply X" | "refused" | "timeout"
//	natprobe tcp-dial -to A [-timeout 1s]       "connected LOCAL OBSERVED" | "refused" | "timeout"
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"
)

// Exit codes, so that "dropped" and "rejected" are distinguishable from a
// broken probe without parsing output.
const (
	exitOK      = 0
	exitError   = 1
	exitUsage   = 2
	exitTimeout = 3
	exitRefused = 4
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(s string) error { *m = append(*m, s); return nil }

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: natprobe udp-reflect|tcp-reflect|udp-probe|udp-send|udp-dial|tcp-dial [flags]")
		os.Exit(exitUsage)
	}
	cmd, args := os.Args[1], os.Args[2:]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	listen := fs.String("listen", "0.0.0.0:3478", "address to listen on")
	port := fs.Int("port", 0, "local port to send from (0: any)")
	var to multi
	fs.Var(&to, "to", "target ip:port (repeatable for udp-probe)")
	wait := fs.Duration("wait", 0, "udp-probe: how long to listen for unsolicited datagrams after probing")
	untilStdin := fs.Bool("until-stdin", false, "udp-probe: stop listening 500ms after standard input ends (-wait still caps it)")
	timeout := fs.Duration("timeout", time.Second, "how long to wait for an answer")
	msg := fs.String("msg", "hello", "udp-send: payload")
	_ = fs.Parse(args)

	var code int
	switch cmd {
	case "udp-reflect":
		code = udpReflect(*listen)
	case "tcp-reflect":
		code = tcpReflect(*listen)
	case "udp-probe":
		code = udpProbe(*port, to, *timeout, *wait, *untilStdin)
	case "udp-send":
		code = udpSend(*port, to, *msg)
	case "udp-dial":
		code = udpDial(to, *timeout)
	case "tcp-dial":
		code = tcpDial(to, *timeout)
	default:
		fmt.Fprintf(os.Stderr, "natprobe: unknown subcommand %q\n", cmd)
		code = exitUsage
	}
	os.Exit(code)
}

func fail(err error) int {
	fmt.Fprintln(os.Stderr, "natprobe:", err)
	return exitError
}

func udpReflect(listen string) int {
	c, err := net.ListenPacket("udp4", listen)
	if err != nil {
		return fail(err)
	}
	fmt.Println("ready", c.LocalAddr())
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return fail(err)
		}
		// Probes carry "probe"; anything else is echoed too, but the
		// reflector never answers its own kind, so two reflectors cannot
		// ping-pong forever.
		if strings.HasPrefix(string(buf[:n]), "observed ") {
			continue
		}
		if _, err := c.WriteTo([]byte("observed "+from.String()), from); err != nil {
			fmt.Fprintln(os.Stderr, "natprobe: reply:", err)
		}
	}
}

func tcpReflect(listen string) int {
	l, err := net.Listen("tcp4", listen)
	if err != nil {
		return fail(err)
	}
	fmt.Println("ready", l.Addr())
	for {
		c, err := l.Accept()
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(c, "observed %s\n", c.RemoteAddr())
		c.Close()
	}
}

// udpProbe sends a probe to each target, prints the mapping each saw, then
// listens for unsolicited datagrams for wait, or, with untilStdin, until
// half a second after standard input ends: a test closes it once its
// senders have sent, so that a loaded machine cannot make the window close
// before the datagrams are even sent.
func udpProbe(port int, targets []string, timeout, wait time.Duration, untilStdin bool) int {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: port})
	if err != nil {
		return fail(err)
	}
	defer c.Close()
	buf := make([]byte, 1500)
	for _, t := range targets {
		ta, err := net.ResolveUDPAddr("udp4", t)
		if err != nil {
			return fail(err)
		}
		observed := ""
		// A few tries, because the first datagram may wait for ARP or be
		// lost; each try waits for an answer from this target only.
		for try := 0; try < 3 && observed == ""; try++ {
			if _, err := c.WriteToUDP([]byte("probe"), ta); err != nil {
				return fail(err)
			}
			deadline := time.Now().Add(timeout)
			for observed == "" {
				_ = c.SetReadDeadline(deadline)
				n, from, err := c.ReadFromUDP(buf)
				if err != nil {
					break
				}
				if from.String() == ta.String() && strings.HasPrefix(string(buf[:n]), "observed ") {
					observed = strings.TrimPrefix(string(buf[:n]), "observed ")
				}
			}
		}
		if observed == "" {
			fmt.Println("timeout", t)
			return exitTimeout
		}
		fmt.Println("mapped", t, observed)
	}
	if wait <= 0 {
		return exitOK
	}
	fmt.Println("waiting", c.LocalAddr())
	end := time.Now().Add(wait)
	_ = c.SetReadDeadline(end)
	if untilStdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			if soon := time.Now().Add(500 * time.Millisecond); soon.Before(end) {
				_ = c.SetReadDeadline(soon)
			}
		}()
	}
	got := false
	for {
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			break
		}
		if strings.HasPrefix(string(buf[:n]), "observed ") {
			continue // a late answer to a probe retry
		}
		got = true
		fmt.Println("recv", from, string(buf[:n]))
	}
	if !got {
		fmt.Println("timeout")
		return exitTimeout
	}
	return exitOK
}

func udpSend(port int, targets []string, msg string) int {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: port})
	if err != nil {
		return fail(err)
	}
	defer c.Close()
	for _, t := range targets {
		ta, err := net.ResolveUDPAddr("udp4", t)
		if err != nil {
			return fail(err)
		}
		for i := 0; i < 3; i++ {
			if _, err := c.WriteToUDP([]byte(msg), ta); err != nil {
				return fail(err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		fmt.Println("sent", t)
	}
	return exitOK
}

func udpDial(targets []string, timeout time.Duration) int {
	if len(targets) != 1 {
		return fail(errors.New("udp-dial needs exactly one -to"))
	}
	// A connected socket, so that an ICMP port unreachable comes back as
	// ECONNREFUSED on the next read: that is how "rejected" differs from
	// "dropped" for UDP.
	c, err := net.Dial("udp4", targets[0])
	if err != nil {
		return fail(err)
	}
	defer c.Close()
	buf := make([]byte, 1500)
	end := time.Now().Add(timeout)
	for time.Now().Before(end) {
		if _, err := c.Write([]byte("probe")); err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				fmt.Println("refused")
				return exitRefused
			}
			return fail(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := c.Read(buf)
		switch {
		case err == nil:
			fmt.Println("reply", string(buf[:n]))
			return exitOK
		case errors.Is(err, syscall.ECONNREFUSED):
			fmt.Println("refused")
			return exitRefused
		case errors.Is(err, os.ErrDeadlineExceeded):
		default:
			return fail(err)
		}
	}
	fmt.Println("timeout")
	return exitTimeout
}

func tcpDial(targets []string, timeout time.Duration) int {
	if len(targets) != 1 {
		return fail(errors.New("tcp-dial needs exactly one -to"))
	}
	c, err := net.DialTimeout("tcp4", targets[0], timeout)
	switch {
	case err == nil:
	case errors.Is(err, syscall.ECONNREFUSED):
		fmt.Println("refused")
		return exitRefused
	case errors.Is(err, os.ErrDeadlineExceeded), isTimeout(err):
		fmt.Println("timeout")
		return exitTimeout
	default:
		return fail(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 256)
	n, _ := c.Read(buf)
	observed := strings.TrimSpace(strings.TrimPrefix(string(buf[:n]), "observed "))
	fmt.Println("connected", c.LocalAddr(), observed)
	return exitOK
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
