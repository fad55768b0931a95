package bootstrap

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// stunLimiter decides whether the STUN server may answer one more request
// from a source: a token bucket per source (an IPv4 address, or the /64 of
// an IPv6 address, since one host commonly holds a whole /64), and one
// bucket for all sources.
//
// The table of sources is bounded by two generations of at most max/2
// entries each: when the current generation is full it becomes the previous
// one and the old previous one is dropped, and a source found in the
// previous generation moves to the current one. A flood of spoofed sources
// thus evicts the sources it pushed out rather than growing the table; an
// evicted source comes back with a full bucket, which the global bucket
// still bounds.
type stunLimiter struct {
	mu        sync.Mutex
	rate      rate.Limit
	burst     int
	half      int
	cur, prev map[netip.Addr]*rate.Limiter
	global    *rate.Limiter
}

func newSTUNLimiter(perSource float64, sourceBurst int, global float64, globalBurst, maxSources int) *stunLimiter {
	half := max(maxSources/2, 1)
	return &stunLimiter{
		rate:   rate.Limit(perSource),
		burst:  sourceBurst,
		half:   half,
		cur:    make(map[netip.Addr]*rate.Limiter),
		prev:   make(map[netip.Addr]*rate.Limiter),
		global: rate.NewLimiter(rate.Limit(global), globalBurst),
	}
}

// sourceKey is the rate-limit key of ip: the address itself for IPv4, its
// /64 prefix for IPv6.
func sourceKey(ip netip.Addr) netip.Addr {
	ip = ip.Unmap().WithZone("")
	if ip.Is4() {
		return ip
	}
	p, err := ip.Prefix(64)
	if err != nil {
		return ip
	}
	return p.Addr()
}

// allow takes one token from ip's bucket and one from the global bucket,
// and reports whether both had one.
func (l *stunLimiter) allow(ip netip.Addr, now time.Time) bool {
	key := sourceKey(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.cur[key]
	if !ok {
		if lim, ok = l.prev[key]; ok {
			delete(l.prev, key)
		} else {
			lim = rate.NewLimiter(l.rate, l.burst)
		}
		if len(l.cur) >= l.half {
			l.prev, l.cur = l.cur, make(map[netip.Addr]*rate.Limiter, l.half)
		}
		l.cur[key] = lim
	}
	if !lim.AllowN(now, 1) {
		return false
	}
	return l.global.AllowN(now, 1)
}

// sources is the number of sources in the table.
func (l *stunLimiter) sources() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.cur) + len(l.prev)
}
