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
// Each interface has a non-blocking AF_PACKET socket (ETH_P_ALL,
// PACKET_IGNORE_OUTGOING so the emulator does not read back what it
// writes) with PACKET_VNET_HDR: veths pass frames with a partial checksum
// and GSO super-frames of up to 64 KiB, and the virtio header carries both
// through intact, so the emulator neither computes checksums nor segments.
//
// One OS thread runs an epoll loop over both sockets and a timerfd: it
// reads every frame that has arrived (recvmmsg, up to batch at a time),
// applies the model and appends it to its direction's delay line, writes
// every frame whose release time has come (sendmmsg), and arms the timerfd,
// on an absolute CLOCK_MONOTONIC time, for the next release. So a wake-up
// releases all that is due, timing has the kernel's hrtimer precision
// (microseconds, where Go timers round to a millisecond), and no frame
// crosses threads: on a VM, a thread wake-up costs more than the syscalls
// that move a frame. A full delay line (maxInFlight frames) drops the frame.
//
// It prints "ready" once both sockets are bound, and on SIGTERM or SIGINT one
// line of counters ("stats {json}", late_mean_us and late_max_us being how
// long after their release time frames were written) and exits 0. A socket
// error is fatal (exit 1, reason on stderr).
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
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

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
	// smallBuf is the buffer size for frames that are not GSO.
	smallBuf = 2048
	// batch is how many frames one recvmmsg or sendmmsg moves at most.
	batch = 64
	// sockBuf is each socket's receive and send buffer, so that a burst
	// arriving while the loop is busy is not lost in the kernel.
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
	buf     []byte // frame with its virtio header
	release int64  // ns on the monotonic clock since start
}

// stats are one direction's counters, read by main when it stops.
type stats struct {
	rx, rxErrors, lost, queueDrops, lineDrops, tx, txErrors, late atomic.Uint64
	lateSum, lateMax                                              atomic.Int64 // ns
}

func (s *stats) MarshalJSON() ([]byte, error) {
	tx := max(s.tx.Load()+s.txErrors.Load(), 1)
	return json.Marshal(map[string]any{
		"rx":           s.rx.Load(),         // frames read
		"rx_errors":    s.rxErrors.Load(),   // frames the kernel could not hand over (no virtio header for them)
		"lost":         s.lost.Load(),       // dropped by the loss model
		"queue_drops":  s.queueDrops.Load(), // dropped because the queue was full
		"line_drops":   s.lineDrops.Load(),  // dropped because the delay line was full
		"tx":           s.tx.Load(),         // frames written
		"tx_errors":    s.txErrors.Load(),   // writes the kernel refused (ENOBUFS and the like)
		"late":         s.late.Load(),       // frames written more than 1 ms after their release time
		"late_mean_us": s.lateSum.Load() / int64(tx) / 1000,
		"late_max_us":  s.lateMax.Load() / 1000,
	})
}

var start = time.Now()

// mono is the time since start on Go's monotonic clock, which is
// CLOCK_MONOTONIC read through the vDSO (no syscall).
func mono() int64 { return int64(time.Since(start)) }

// direction moves frames from in to out. The loop's thread owns everything
// but st.
type direction struct {
	sp      spec
	in, out int
	rng     *rand.Rand
	st      stats

	lastDepart, lastRelease int64
	rxErrRun                int      // consecutive recvmmsg EINVALs
	line                    []packet // the delay line, a FIFO from head
	head                    int

	// recvmmsg slots: each has a maxFrame buffer; a frame that is kept
	// is copied to a right-sized one, so the slots are reused.
	rbufs [batch][]byte
	riov  [batch]unix.Iovec
	rmsgs [batch]unix.Mmsghdr
	siov  [batch]unix.Iovec
	smsgs [batch]unix.Mmsghdr
	free  [][]byte // small buffers to reuse
}

func newDirection(sp spec, in, out int, rng *rand.Rand) *direction {
	d := &direction{sp: sp, in: in, out: out, rng: rng}
	for i := range d.rbufs {
		d.rbufs[i] = make([]byte, maxFrame)
		d.riov[i].Base = &d.rbufs[i][0]
		d.riov[i].SetLen(maxFrame)
		d.rmsgs[i].Hdr.Iov = &d.riov[i]
		d.rmsgs[i].Hdr.SetIovlen(1)
		d.smsgs[i].Hdr.Iov = &d.siov[i]
		d.smsgs[i].Hdr.SetIovlen(1)
	}
	return d
}

func mmsg(trap uintptr, fd int, msgs []unix.Mmsghdr) (int, error) {
	n, _, errno := unix.Syscall6(trap, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// readAll takes in up to rounds batches of frames that have arrived; the
// epoll loop comes back if more are waiting (it is level-triggered).
func (d *direction) readAll(rounds int) error {
	for r := 0; r < rounds; r++ {
		n, err := mmsg(unix.SYS_RECVMMSG, d.in, d.rmsgs[:])
		switch {
		case errors.Is(err, unix.EAGAIN):
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EINVAL) && d.rxErrRun < 1000:
			// The kernel dequeued a frame it cannot describe in a
			// virtio header (a GSO type it does not map): lost on
			// the wire. Only a long run of them means a broken socket.
			d.st.rxErrors.Add(1)
			d.rxErrRun++
			continue
		case err != nil:
			return fmt.Errorf("recvmmsg: %w", err)
		}
		d.rxErrRun = 0
		now := mono()
		for i := 0; i < n; i++ {
			d.frame(i, int(d.rmsgs[i].Len), now)
		}
		if n < batch {
			return nil
		}
	}
	return nil
}

// frame applies the model to the frame in slot i (with its virtio header).
func (d *direction) frame(i, n int, now int64) {
	f := d.rbufs[i][:n]
	if len(f) < vnetHdrLen+14 {
		return
	}
	d.st.rx.Add(1)
	if d.sp.loss > 0 && d.rng.Float64()*100 < d.sp.loss {
		d.st.lost.Add(1)
		return
	}
	depart := now
	if d.sp.rate > 0 {
		wire := wireBytes(f)
		begin := max(now, d.lastDepart)
		backlog := float64(begin-now) * d.sp.rate / 1e9
		if d.sp.queue > 0 && begin > now && backlog+float64(wire) > float64(d.sp.queue) {
			d.st.queueDrops.Add(1)
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

	if len(d.line)-d.head >= maxInFlight {
		d.st.lineDrops.Add(1)
		return
	}
	var b []byte
	if n <= smallBuf {
		if k := len(d.free); k > 0 {
			b, d.free = d.free[k-1][:n], d.free[:k-1]
		} else {
			b = make([]byte, n, smallBuf)
		}
		copy(b, f)
	} else {
		// Hand the slot's buffer over and give the slot a new one.
		b = f
		d.rbufs[i] = make([]byte, maxFrame)
		d.riov[i].Base = &d.rbufs[i][0]
	}
	if d.head > 0 && d.head == len(d.line) {
		d.line, d.head = d.line[:0], 0
	} else if d.head > 4096 && d.head > len(d.line)/2 {
		d.line, d.head = append(d.line[:0], d.line[d.head:]...), 0
	}
	d.line = append(d.line, packet{buf: b, release: release})
}

// flush writes every frame due by now and returns the release time of the
// next one (or -1 if the line is empty).
func (d *direction) flush(now int64) (int64, error) {
	for d.head < len(d.line) && d.line[d.head].release <= now {
		k := 0
		for ; k < batch && d.head+k < len(d.line) && d.line[d.head+k].release <= now; k++ {
			p := &d.line[d.head+k]
			d.siov[k].Base = &p.buf[0]
			d.siov[k].SetLen(len(p.buf))
		}
		n, err := mmsg(unix.SYS_SENDMMSG, d.out, d.smsgs[:k])
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ENOBUFS), errors.Is(err, unix.EAGAIN), errors.Is(err, unix.ENETDOWN),
			errors.Is(err, unix.EMSGSIZE), errors.Is(err, unix.EINVAL):
			// The first frame was refused: a frame lost on the wire,
			// not a reason to stop the link.
			d.st.txErrors.Add(1)
			n = 1
		case err != nil:
			return 0, fmt.Errorf("sendmmsg: %w", err)
		default:
			d.st.tx.Add(uint64(n))
		}
		for i := 0; i < n; i++ {
			p := &d.line[d.head]
			late := now - p.release
			d.st.lateSum.Add(late)
			if late > d.st.lateMax.Load() {
				d.st.lateMax.Store(late)
			}
			if late > int64(time.Millisecond) {
				d.st.late.Add(1)
			}
			if cap(p.buf) == smallBuf {
				d.free = append(d.free, p.buf)
			}
			*p = packet{}
			d.head++
		}
	}
	if d.head < len(d.line) {
		return d.line[d.head].release, nil
	}
	return -1, nil
}

// loop is the emulator: it returns only on a fatal error.
func loop(dirs [2]*direction) error {
	runtime.LockOSThread()
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("epoll: %w", err)
	}
	tfd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("timerfd: %w", err)
	}
	// base maps mono() onto CLOCK_MONOTONIC for absolute timer expiries.
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return err
	}
	base := ts.Nano() - mono()
	for _, fd := range []int{dirs[0].in, dirs[1].in, tfd} {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
		if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			return fmt.Errorf("epoll_ctl: %w", err)
		}
	}
	var (
		events [4]unix.EpollEvent
		armed  int64 = -1
		buf    [8]byte
	)
	for {
		n, err := unix.EpollWait(epfd, events[:], -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("epoll_wait: %w", err)
		}
		for _, ev := range events[:n] {
			switch int(ev.Fd) {
			case tfd:
				_, _ = unix.Read(tfd, buf[:])
				armed = -1
			default:
				for _, d := range dirs {
					if int(ev.Fd) == d.in {
						if err := d.readAll(4); err != nil {
							return err
						}
					}
				}
			}
		}
		next := int64(-1)
		now := mono()
		for _, d := range dirs {
			t, err := d.flush(now)
			if err != nil {
				return err
			}
			if t >= 0 && (next < 0 || t < next) {
				next = t
			}
		}
		if next >= 0 && next != armed {
			spec := unix.ItimerSpec{Value: unix.NsecToTimespec(base + next)}
			if err := unix.TimerfdSettime(tfd, unix.TFD_TIMER_ABSTIME, &spec, nil); err != nil {
				return fmt.Errorf("timerfd: %w", err)
			}
			armed = next
		}
	}
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
func openSocket(ifname string) (int, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return -1, err
	}
	// Protocol 0 receives nothing until bind names the interface, so no
	// frame of another interface slips in between.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
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
			return -1, fmt.Errorf("%s on %s: %w", o.name, ifname, err)
		}
	}
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind %s: %w", ifname, err)
	}
	return fd, nil
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
	dirs := [2]*direction{
		newDirection(up, fa, fb, rand.New(rand.NewPCG(seed, 1))),
		newDirection(down, fb, fa, rand.New(rand.NewPCG(seed, 2))),
	}
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT)
	errc := make(chan error, 1)
	// The loop ends with the process: it has no other way out, and the
	// process exits right after the stats line.
	go func() { errc <- loop(dirs) }()
	fmt.Println("ready")
	select {
	case <-sigc:
	case err := <-errc:
		return err
	}
	out, _ := json.Marshal(map[string]*stats{"up": &dirs[0].st, "down": &dirs[1].st})
	fmt.Printf("stats %s\n", out)
	return nil
}
