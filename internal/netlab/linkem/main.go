//go:build linux

// Command linkem is netlab's link emulator: a bump in the wire between two
// network interfaces that delays, drops and rate-limits Ethernet frames, for
// a kernel without the netem qdisc. netlab runs it in a namespace of its own
// between two veths, "a" (towards the site router or host) and "b" (towards
// the public bridge); see netlab's Link.
//
//	linkem -a a -b b -up 'delay=10ms,jitter=0s,loss=1,rate=50,queue=125000' -down '...' -seed N
//
// "up" shapes frames read on -a and written to -b; "down" the other way. Every
// spec key is optional: delay and jitter are Go durations, loss is a
// percentage, rate is in Mbit/s (0: unlimited), queue in bytes (0: unlimited,
// only meaningful with a rate).
//
// # Model, per direction
//
// A frame read from the input interface is first dropped with probability
// loss. Otherwise it enters the bottleneck, a FIFO served at rate: its
// departure is max(now, previous departure) + wire/rate, where wire is the
// frame's size on an Ethernet link (14-byte header included, no preamble or
// FCS; a GSO super-frame counts as the segments it stands for). If the bytes
// still waiting for serialization when it arrives plus its own exceed queue,
// it is dropped (tail drop), except that a frame arriving at an empty queue
// is always accepted. It is released (written to the output interface) at
// departure + delay + a jitter drawn uniformly from [-jitter, +jitter], but
// never before the frame ahead of it: the delay line is a FIFO, so frames are
// never reordered, with or without jitter (with jitter, closely spaced frames
// thus see delays skewed upwards, as behind a real queue). ARP and every
// other frame type go through the same path unchanged.
//
// # Mechanics
//
// Each interface has an AF_PACKET socket (ETH_P_ALL, PACKET_IGNORE_OUTGOING
// so the emulator does not read back what it writes) with PACKET_VNET_HDR:
// veths pass frames with a partial checksum and GSO super-frames of up to
// 64 KiB, and the virtio header carries both through intact, so the emulator
// neither computes checksums nor segments. A reader goroutine per direction
// applies the model and hands the frame, stamped with its release time, to
// that direction's delay-line goroutine over a buffered channel (the FIFO);
// the delay line sleeps only when the frame at its head is not due yet, with
// nanosleep on a thread whose timer slack is 1 µs (Go timers round to
// milliseconds), and then writes every frame that is due without sleeping
// again. A full delay line (maxInFlight frames) drops the frame.
//
// It prints "ready" once both sockets are bound, and on SIGTERM or SIGINT one
// line of counters ("stats {json}") and exits 0. A socket error is fatal
// (exit 1, reason on stderr).
package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	vnetHdrLen = 10 // struct virtio_net_hdr
	// maxFrame bounds a read: a GSO super-frame of up to 64 KiB plus its
	// headers and the virtio header.
	maxFrame = 65536 + 256
	// maxInFlight bounds the frames held by one direction's delay line:
	// 1 Gbit/s of full-size frames for 500 ms is about 41,000.
	maxInFlight = 65536
	// smallBuf is the buffer class for frames that are not GSO.
	smallBuf = 2048
	// sockBuf is each socket's receive and send buffer, so that a burst
	// arriving while the reader is descheduled is not lost in the kernel.
	sockBuf = 16 << 20
)

// spec is one direction's shape.
type spec struct {
	delay, jitter time.Duration
	loss          float64 // percent
	rate          float64 // bytes per second; 0: unlimited
	queue         int     // bytes; 0: unlimited
}

func parseSpec(s string) (spec, error) {
	var sp spec
	if s == "" {
		return sp, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return sp, fmt.Errorf("%q: want key=value", kv)
		}
		var err error
		switch k {
		case "delay":
			sp.delay, err = time.ParseDuration(v)
		case "jitter":
			sp.jitter, err = time.ParseDuration(v)
		case "loss":
			sp.loss, err = strconv.ParseFloat(v, 64)
		case "rate":
			var mbit float64
			mbit, err = strconv.ParseFloat(v, 64)
			sp.rate = mbit * 1e6 / 8
		case "queue":
			sp.queue, err = strconv.Atoi(v)
		default:
			err = errors.New("unknown key")
		}
		if err != nil {
			return sp, fmt.Errorf("%q: %v", kv, err)
		}
	}
	if sp.delay < 0 || sp.jitter < 0 || sp.loss < 0 || sp.loss > 100 || sp.rate < 0 || sp.queue < 0 {
		return sp, fmt.Errorf("%q: values must be >= 0 (loss <= 100)", s)
	}
	return sp, nil
}

type packet struct {
	buf     *[]byte
	n       int
	release int64 // ns on the monotonic clock since start
}

// stats are one direction's counters.
type stats struct {
	Rx         atomic.Uint64 `json:"rx"`          // frames read
	Lost       atomic.Uint64 `json:"lost"`        // dropped by the loss model
	QueueDrops atomic.Uint64 `json:"queue_drops"` // dropped because the queue was full
	LineDrops  atomic.Uint64 `json:"line_drops"`  // dropped because the delay line was full
	Tx         atomic.Uint64 `json:"tx"`          // frames written
	TxErrors   atomic.Uint64 `json:"tx_errors"`   // writes that failed (ENOBUFS and the like)
	Late       atomic.Uint64 `json:"late"`        // frames written more than 1 ms after their release time
}

func (s *stats) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]uint64{
		"rx": s.Rx.Load(), "lost": s.Lost.Load(), "queue_drops": s.QueueDrops.Load(),
		"line_drops": s.LineDrops.Load(), "tx": s.Tx.Load(), "tx_errors": s.TxErrors.Load(), "late": s.Late.Load(),
	})
}

var start = time.Now()

func mono() int64 { return int64(time.Since(start)) }

var (
	smallPool = sync.Pool{New: func() any { b := make([]byte, smallBuf); return &b }}
	bigPool   = sync.Pool{New: func() any { b := make([]byte, maxFrame); return &b }}
)

func putBuf(b *[]byte) {
	if cap(*b) == smallBuf {
		smallPool.Put(b)
	} else {
		bigPool.Put(b)
	}
}

// direction moves frames from in to out; its reader owns the model state
// (rng, lastDepart, lastRelease).
type direction struct {
	sp      spec
	in, out syscall.RawConn // non-blocking AF_PACKET sockets in Go's poller
	line    chan packet
	rng     *rand.Rand
	st      stats

	lastDepart, lastRelease int64
}

// read is the direction's reader: it applies loss and the bottleneck and
// feeds the delay line. The socket is non-blocking and waits in Go's
// poller, so that a quiet direction holds no thread; each wake-up takes
// every frame that has arrived. It returns on a socket error.
func (d *direction) read() error {
	scratch := make([]byte, maxFrame)
	var rerr error
	err := d.in.Read(func(fd uintptr) bool {
		for {
			n, err := unix.Read(int(fd), scratch)
			switch {
			case errors.Is(err, unix.EAGAIN):
				return false // wait for more
			case errors.Is(err, unix.EINTR):
				continue
			case err != nil:
				rerr = fmt.Errorf("read: %w", err)
				return true
			}
			d.frame(scratch[:n])
		}
	})
	return errors.Join(err, rerr)
}

// frame applies the model to one frame just read (with its virtio header).
func (d *direction) frame(f []byte) {
	if len(f) < vnetHdrLen+14 {
		return
	}
	d.st.Rx.Add(1)
	if d.sp.loss > 0 && d.rng.Float64()*100 < d.sp.loss {
		d.st.Lost.Add(1)
		return
	}
	now := mono()
	depart := now
	if d.sp.rate > 0 {
		wire := wireBytes(f)
		begin := max(now, d.lastDepart)
		backlog := float64(begin-now) * d.sp.rate / 1e9
		if d.sp.queue > 0 && begin > now && backlog+float64(wire) > float64(d.sp.queue) {
			d.st.QueueDrops.Add(1)
			return
		}
		depart = begin + int64(float64(wire)*1e9/d.sp.rate)
		d.lastDepart = depart
	}
	release := depart + int64(d.sp.delay)
	if j := int64(d.sp.jitter); j > 0 {
		release += d.rng.Int64N(2*j+1) - j
	}
	// FIFO: never before the frame ahead.
	release = max(release, d.lastRelease)
	d.lastRelease = release

	var b *[]byte
	if len(f) <= smallBuf {
		b = smallPool.Get().(*[]byte)
	} else {
		b = bigPool.Get().(*[]byte)
	}
	copy(*b, f)
	select {
	case d.line <- packet{buf: b, n: len(f), release: release}:
	default:
		d.st.LineDrops.Add(1)
		putBuf(b)
	}
}

// deliver is the direction's delay line: it writes each frame at its
// release time. When the frame at the head is not due it arms a timerfd
// and waits for it in Go's poller: that wakes within microseconds, where Go
// timers round to a millisecond, and holds no thread meanwhile. Frames that
// are due are written one after the other without waiting again. It
// returns on a fatal socket error.
func (d *direction) deliver() error {
	tfd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("timerfd: %w", err)
	}
	timer, err := os.NewFile(uintptr(tfd), "timerfd").SyscallConn()
	if err != nil {
		return err
	}
	var expirations [8]byte
	for p := range d.line {
		if wait := p.release - mono(); wait > 0 {
			spec := unix.ItimerSpec{Value: unix.NsecToTimespec(wait)}
			if err := unix.TimerfdSettime(tfd, 0, &spec, nil); err != nil {
				return fmt.Errorf("timerfd: %w", err)
			}
			if err := timer.Read(func(fd uintptr) bool {
				_, err := unix.Read(int(fd), expirations[:])
				return !errors.Is(err, unix.EAGAIN)
			}); err != nil {
				return fmt.Errorf("timerfd: %w", err)
			}
		} else if wait < -int64(time.Millisecond) {
			d.st.Late.Add(1)
		}
		var werr error
		err := d.out.Write(func(fd uintptr) bool {
			_, werr = unix.Write(int(fd), (*p.buf)[:p.n])
			return !errors.Is(werr, unix.EAGAIN)
		})
		putBuf(p.buf)
		switch {
		case err != nil:
			return fmt.Errorf("write: %w", err)
		case werr == nil:
			d.st.Tx.Add(1)
		case errors.Is(werr, unix.ENOBUFS), errors.Is(werr, unix.ENETDOWN),
			errors.Is(werr, unix.EMSGSIZE), errors.Is(werr, unix.EINVAL):
			// A frame the kernel will not take is a frame lost on
			// the wire, not a reason to stop the link.
			d.st.TxErrors.Add(1)
		default:
			return fmt.Errorf("write: %w", werr)
		}
	}
	return nil
}

// wireBytes is the size the frame (after its virtio header) occupies on an
// Ethernet link: a GSO super-frame is as many frames as it has segments,
// each with a copy of its headers.
func wireBytes(b []byte) int {
	hdr, frame := b[:vnetHdrLen], b[vnetHdrLen:]
	gsoType := hdr[1] &^ 0x80 // VIRTIO_NET_HDR_GSO_ECN
	gsoSize := int(binary.NativeEndian.Uint16(hdr[4:6]))
	if gsoType == 0 || gsoSize == 0 {
		return len(frame)
	}
	h := headerLen(frame)
	if h <= 0 || h >= len(frame) {
		return len(frame)
	}
	segs := (len(frame) - h + gsoSize - 1) / gsoSize
	return len(frame) + (segs-1)*h
}

// headerLen is the length of the Ethernet, IP and TCP or UDP headers of
// frame, or 0 if it cannot tell.
func headerLen(f []byte) int {
	if len(f) < 14 {
		return 0
	}
	off := 14
	etype := binary.BigEndian.Uint16(f[12:14])
	for etype == 0x8100 || etype == 0x88a8 { // VLAN tags
		if len(f) < off+4 {
			return 0
		}
		etype = binary.BigEndian.Uint16(f[off+2 : off+4])
		off += 4
	}
	var proto byte
	switch etype {
	case 0x0800:
		if len(f) < off+20 {
			return 0
		}
		proto = f[off+9]
		off += int(f[off]&0x0f) * 4
	case 0x86dd:
		if len(f) < off+40 {
			return 0
		}
		proto = f[off+6]
		off += 40
	default:
		return 0
	}
	switch proto {
	case 6:
		if len(f) < off+13 {
			return 0
		}
		return off + int(f[off+12]>>4)*4
	case 17:
		return off + 8
	}
	return 0
}

// openSocket returns a non-blocking AF_PACKET socket bound to ifname that
// reads every frame the interface receives (not those it sends) with a
// virtio header.
func openSocket(ifname string) (syscall.RawConn, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, err
	}
	// Protocol 0 receives nothing until bind names the interface, so no
	// frame of another interface slips in between.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	opts := []struct {
		level, opt, val int
		name            string
	}{
		{unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1, "PACKET_VNET_HDR"},
		{unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1, "PACKET_IGNORE_OUTGOING"},
		{unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, sockBuf, "SO_RCVBUFFORCE"},
		{unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sockBuf, "SO_SNDBUFFORCE"},
	}
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.val); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("%s on %s: %w", o.name, ifname, err)
		}
	}
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind %s: %w", ifname, err)
	}
	// os.NewFile registers a non-blocking descriptor with the poller.
	return os.NewFile(uintptr(fd), ifname).SyscallConn()
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func main() {
	a := flag.String("a", "a", "interface towards the site (frames read here go up)")
	b := flag.String("b", "b", "interface towards the public segment (frames read here go down)")
	upSpec := flag.String("up", "", "shape of the a->b direction")
	downSpec := flag.String("down", "", "shape of the b->a direction")
	seed := flag.Uint64("seed", 1, "seed of the loss and jitter random numbers")
	flag.Parse()
	if err := run(*a, *b, *upSpec, *downSpec, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "linkem:", err)
		os.Exit(1)
	}
}

func run(a, b, upSpec, downSpec string, seed uint64) error {
	up, err := parseSpec(upSpec)
	if err != nil {
		return fmt.Errorf("-up: %v", err)
	}
	down, err := parseSpec(downSpec)
	if err != nil {
		return fmt.Errorf("-down: %v", err)
	}
	fa, err := openSocket(a)
	if err != nil {
		return err
	}
	fb, err := openSocket(b)
	if err != nil {
		return err
	}
	dirs := map[string]*direction{
		"up":   {sp: up, in: fa, out: fb, line: make(chan packet, maxInFlight), rng: rand.New(rand.NewPCG(seed, 1))},
		"down": {sp: down, in: fb, out: fa, line: make(chan packet, maxInFlight), rng: rand.New(rand.NewPCG(seed, 2))},
	}
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT)
	errc := make(chan error, 4)
	// The goroutines end with the process: their blocking reads have no
	// other way out, and the process exits right after the stats line.
	for name, d := range dirs {
		go func() { errc <- fmt.Errorf("%s: %w", name, d.read()) }()
		go func() { errc <- fmt.Errorf("%s: %w", name, d.deliver()) }()
	}
	fmt.Println("ready")
	select {
	case <-sigc:
	case err := <-errc:
		return err
	}
	out, _ := json.Marshal(map[string]*stats{"up": &dirs["up"].st, "down": &dirs["down"].st})
	fmt.Printf("stats %s\n", out)
	return nil
}
