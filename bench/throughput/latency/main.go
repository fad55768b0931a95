// Command latency measures what bench/throughput.sh reports besides
// throughput: the round-trip time of 1-byte messages over one TCP
// connection, and the time to set up a new TCP connection (connect, send one
// byte, get it echoed), both against an echo server, straight or through a
// forward.
//
//	latency echo  [-listen 127.0.0.1:0]      echo server; prints "listening ADDR"
//	latency rtt   -addr ADDR [-n 10000]       1-byte ping-pong on one connection
//	latency setup -addr ADDR [-n 1000]        new connection + first byte echoed
//	latency freeport                          print a free 127.0.0.1 TCP port
//
// rtt and setup print one line: "NAME n=N p50=... p90=... p99=... max=... mean=..."
// in microseconds, after a short warm-up that is not counted.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"slices"
	"time"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("latency: ")
	if len(os.Args) < 2 {
		log.Fatal("usage: latency echo|rtt|setup|freeport [flags]")
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	addr := fs.String("addr", "", "address to measure (echo server, or a forward to one)")
	n := fs.Int("n", 0, "number of samples (default 10000 for rtt, 1000 for setup)")
	listen := fs.String("listen", "127.0.0.1:0", "echo: address to listen on")
	name := fs.String("name", "", "label for the output line (default: the subcommand)")
	_ = fs.Parse(os.Args[2:])
	label := *name
	if label == "" {
		label = os.Args[1]
	}
	switch os.Args[1] {
	case "echo":
		echo(*listen)
	case "freeport":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(ln.Addr().(*net.TCPAddr).Port)
		_ = ln.Close()
	case "rtt":
		if *n == 0 {
			*n = 10000
		}
		report(label, rtt(*addr, *n))
	case "setup":
		if *n == 0 {
			*n = 1000
		}
		report(label, setup(*addr, *n))
	default:
		log.Fatalf("unknown subcommand %q", os.Args[1])
	}
}

func echo(listen string) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening %s\n", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}

// rtt sends one byte and waits for it, n times, on one connection.
func rtt(addr string, n int) []time.Duration {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
	b := []byte{'x'}
	warm := min(n/10, 500)
	out := make([]time.Duration, 0, n)
	for i := 0; i < n+warm; i++ {
		t0 := time.Now()
		if _, err := c.Write(b); err != nil {
			log.Fatal(err)
		}
		if _, err := io.ReadFull(c, b); err != nil {
			log.Fatal(err)
		}
		if i >= warm {
			out = append(out, time.Since(t0))
		}
	}
	return out
}

// setup times connect + 1 byte echoed, n times, one connection after the
// other, each closed before the next.
func setup(addr string, n int) []time.Duration {
	b := []byte{'x'}
	warm := min(n/10, 50)
	out := make([]time.Duration, 0, n)
	for i := 0; i < n+warm; i++ {
		t0 := time.Now()
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			log.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(b); err != nil {
			log.Fatal(err)
		}
		if _, err := io.ReadFull(c, b); err != nil {
			log.Fatalf("connection %d: %v", i, err)
		}
		d := time.Since(t0)
		_ = c.Close()
		if i >= warm {
			out = append(out, d)
		}
	}
	return out
}

func report(name string, d []time.Duration) {
	slices.Sort(d)
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	q := func(p float64) float64 {
		i := int(p * float64(len(d)-1))
		return float64(d[i].Nanoseconds()) / 1e3
	}
	fmt.Printf("%s n=%d p50=%.1f p90=%.1f p99=%.1f max=%.1f mean=%.1f (µs)\n", name, len(d),
		q(0.50), q(0.90), q(0.99), float64(d[len(d)-1].Nanoseconds())/1e3, float64(sum.Nanoseconds())/1e3/float64(len(d)))
}
