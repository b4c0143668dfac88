package vmdns

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Defaults for Server's zero limits. The server runs as root on the bridge
// address, where every guest and every local user reaches it: none of them
// may make it spend unbounded memory, goroutines or upstream queries.
const (
	DefaultMaxInFlight    = 64  // queries handled at once
	DefaultRatePerSource  = 50  // queries per second per source address
	DefaultBurstPerSource = 100 // queries a quiet source may send at once
	DefaultMaxTCPConns    = 32
	// maxSources bounds the per-source table. When it is full of active
	// sources, new ones are refused until old ones go quiet.
	maxSources = 4096
	// tcpIdleTimeout replaces miekg/dns's 8 s between queries on one TCP
	// connection: a held connection is a slot taken.
	tcpIdleTimeout = 2 * time.Second
)

// rateLimiter is a token bucket per source address.
type rateLimiter struct {
	rate  float64 // tokens per second
	burst float64
	now   func() time.Time

	mu      sync.Mutex
	buckets map[netip.Addr]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(rate float64, burst int, now func() time.Time) *rateLimiter {
	return &rateLimiter{rate: rate, burst: float64(burst), now: now, buckets: map[netip.Addr]*bucket{}}
}

// allow takes a token from src's bucket.
func (r *rateLimiter) allow(src netip.Addr) bool {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.buckets[src]
	if !ok {
		if len(r.buckets) >= maxSources && !r.sweep(now) {
			return false
		}
		b = &bucket{tokens: r.burst, last: now}
		r.buckets[src] = b
	}
	b.tokens = min(r.burst, b.tokens+now.Sub(b.last).Seconds()*r.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sweep forgets sources whose buckets have refilled (they are as good as
// new); it reports whether it made room.
func (r *rateLimiter) sweep(now time.Time) bool {
	full := time.Duration(r.burst / r.rate * float64(time.Second))
	for a, b := range r.buckets {
		if now.Sub(b.last) >= full {
			delete(r.buckets, a)
		}
	}
	return len(r.buckets) < maxSources
}

// sourceOf is the address a query came from.
func sourceOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// limitedReader drops UDP queries from sources over their rate before
// miekg/dns starts a goroutine for them: a flood costs a read, no more.
type limitedReader struct {
	dns.Reader
	limit *rateLimiter
}

func (r limitedReader) ReadUDP(conn *net.UDPConn, timeout time.Duration) ([]byte, *dns.SessionUDP, error) {
	for {
		m, s, err := r.Reader.ReadUDP(conn, timeout)
		if err != nil || r.limit.allow(sourceOf(s.RemoteAddr())) {
			return m, s, err
		}
	}
}

// limitedListener caps open TCP connections and rate-limits them per source
// like queries: over either limit a connection is closed at once.
type limitedListener struct {
	net.Listener
	limit *rateLimiter
	slots chan struct{}
}

func (l *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if !l.limit.allow(sourceOf(c.RemoteAddr())) {
			c.Close()
			continue
		}
		select {
		case l.slots <- struct{}{}:
			return &slotConn{Conn: c, free: func() { <-l.slots }}, nil
		default:
			c.Close()
		}
	}
}

// slotConn gives its slot back when closed (once).
type slotConn struct {
	net.Conn
	once sync.Once
	free func()
}

func (c *slotConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.free)
	return err
}
