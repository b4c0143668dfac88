package vmdns

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Names outside banger's zones are forwarded for the guest subnet only:
// other sources, and the server's own address (where local users' queries
// to the bridge address come from), get REFUSED, while banger's own names
// still answer everyone.
func TestForwardOnlyForGuests(t *testing.T) {
	store := &fakeStore{names: map[string]netip.Addr{"web": netip.MustParseAddr("10.213.77.11")}}
	up := startUpstream(t)
	srv := startServerWith(t, &Server{Pool: pool, Lookup: store, Upstreams: []string{up.addr}, Timeout: 500 * time.Millisecond,
		ForwardFrom: netip.MustParsePrefix("127.0.0.0/24")})
	noForward := startServerWith(t, &Server{Pool: pool, Lookup: store, Upstreams: []string{up.addr}, Timeout: 500 * time.Millisecond})

	for _, tc := range []struct {
		what, server, src, name string
		qtype                   uint16
		rcode                   int
	}{
		{"guest, other name", srv, "127.0.0.2", "example.test.", dns.TypeA, dns.RcodeSuccess},
		{"outsider, other name", srv, "127.0.1.5", "example.test.", dns.TypeA, dns.RcodeRefused},
		{"server's own address, other name", srv, "127.0.0.1", "example.test.", dns.TypeA, dns.RcodeRefused},
		{"outsider, other reverse name", srv, "127.0.1.5", "7.2.0.192.in-addr.arpa.", dns.TypePTR, dns.RcodeRefused},
		{"no ForwardFrom, other name", noForward, "127.0.0.2", "example.test.", dns.TypeA, dns.RcodeRefused},
		{"outsider, vm name", srv, "127.0.1.5", "web.banger.", dns.TypeA, dns.RcodeSuccess},
		{"server's own address, vm name", srv, "127.0.0.1", "web.banger.", dns.TypeA, dns.RcodeSuccess},
		{"outsider, vm reverse name", srv, "127.0.1.5", "11.77.213.10.in-addr.arpa.", dns.TypePTR, dns.RcodeSuccess},
		{"no ForwardFrom, vm name", noForward, "127.0.0.2", "web.banger.", dns.TypeA, dns.RcodeSuccess},
	} {
		for _, netw := range []string{"udp", "tcp"} {
			r, err := queryFrom(tc.server, netw, tc.src, tc.name, tc.qtype)
			if err != nil {
				t.Errorf("%s over %s: %v", tc.what, netw, err)
				continue
			}
			if r.Rcode != tc.rcode {
				t.Errorf("%s over %s: rcode %s, want %s", tc.what, netw, dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
			}
		}
	}
	// Only the guest's two queries (UDP, TCP) reached the upstream.
	if seen := up.seen(); len(seen) != 2 || seen[0] != "udp example.test. A" || seen[1] != "tcp example.test. A" {
		t.Errorf("upstream saw %v, want only the guest's queries", seen)
	}
}

// A flood from one source is cut to its burst plus its rate, while another
// source is still answered.
func TestRateLimitPerSource(t *testing.T) {
	const rate, burst = 5, 10
	store := &fakeStore{names: map[string]netip.Addr{"web": netip.MustParseAddr("10.213.77.11")}}
	srv := startServerWith(t, &Server{Pool: pool, Lookup: store, Upstreams: []string{}, RatePerSource: rate, BurstPerSource: burst})

	// UDP: 300 queries as fast as the socket takes them, from 127.0.0.2.
	conn, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP("127.0.0.2")}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(srv)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var answered atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			_ = conn.SetReadDeadline(time.Now().Add(time.Second))
			if _, err := conn.Read(buf); err != nil {
				return
			}
			answered.Add(1)
		}
	}()
	start := time.Now()
	const flood = 300
	for i := range flood {
		m := new(dns.Msg).SetQuestion("web.banger.", dns.TypeA)
		m.Id = uint16(i)
		b, _ := m.Pack()
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	sent := time.Since(start)
	// Meanwhile another source gets its answers (retrying as stub
	// resolvers do: the burst may overflow the socket's buffer).
	for i := range 5 {
		if r, err := queryRetry(srv, "127.0.0.3", "web.banger."); err != nil || len(r.Answer) != 1 {
			t.Fatalf("other source, query %d during the flood: %v %v", i, r, err)
		}
	}
	<-done // the reader stops a second after the last answer
	elapsed := time.Since(start) - time.Second
	got := answered.Load()
	max := int64(burst + rate*elapsed.Seconds() + 2)
	t.Logf("flood of %d sent in %s: %d answered over %s (at most %d allowed)", flood, sent, got, elapsed.Round(time.Millisecond), max)
	if got < burst || got > max {
		t.Fatalf("flooding source got %d answers, want between %d and %d", got, burst, max)
	}

	// TCP: the same bucket per source; over it the connection is closed.
	var tcpOK, tcpFail int
	for range 3 * burst {
		if r, err := queryFrom(srv, "tcp", "127.0.0.4", "web.banger.", dns.TypeA); err == nil && len(r.Answer) == 1 {
			tcpOK++
		} else {
			tcpFail++
		}
	}
	if tcpOK < burst/2 || tcpOK > burst+rate*3 || tcpFail == 0 {
		t.Fatalf("tcp from one source: %d answered, %d refused", tcpOK, tcpFail)
	}
	if r, err := queryFrom(srv, "tcp", "127.0.0.5", "web.banger.", dns.TypeA); err != nil || len(r.Answer) != 1 {
		t.Fatalf("another source over tcp: %v %v", r, err)
	}
}

// slowUpstream answers after delay and records the most queries it held
// at once.
type slowUpstream struct {
	addr          string
	delay         time.Duration
	mu            sync.Mutex
	now, max, all int
}

func startSlowUpstream(t *testing.T, delay time.Duration) *slowUpstream {
	t.Helper()
	u := &slowUpstream{delay: delay}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.addr = pc.LocalAddr().String()
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		u.mu.Lock()
		u.now++
		u.all++
		u.max = max(u.max, u.now)
		u.mu.Unlock()
		time.Sleep(u.delay)
		u.mu.Lock()
		u.now--
		u.mu.Unlock()
		_ = w.WriteMsg(new(dns.Msg).SetRcode(r, dns.RcodeNameError))
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	return u
}

// At most MaxInFlight queries are handled at once: the rest are dropped
// (UDP) rather than each holding a goroutine on a slow upstream.
func TestInFlightCap(t *testing.T) {
	up := startSlowUpstream(t, 700*time.Millisecond)
	srv := startServerWith(t, &Server{Pool: pool, Lookup: &fakeStore{names: map[string]netip.Addr{}}, Upstreams: []string{up.addr},
		Timeout: 2 * time.Second, ForwardFrom: netip.MustParsePrefix("127.0.0.0/8"), MaxInFlight: 2, BurstPerSource: 1000, RatePerSource: 1000})
	var wg sync.WaitGroup
	var answered, lost atomic.Int64
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := queryFrom(srv, "udp", guestSrc, fmt.Sprintf("q%d.test.", i), dns.TypeA); err != nil {
				lost.Add(1)
				return
			}
			answered.Add(1)
		}()
	}
	// TCP over the cap is told at once instead of waiting.
	time.Sleep(100 * time.Millisecond)
	r, err := queryFrom(srv, "tcp", guestSrc, "busy.test.", dns.TypeA)
	if err != nil || r.Rcode != dns.RcodeServerFailure {
		t.Errorf("tcp query while full: %v %v, want SERVFAIL", r, err)
	}
	wg.Wait()
	up.mu.Lock()
	defer up.mu.Unlock()
	t.Logf("answered %d, dropped %d; upstream saw %d, at most %d at once", answered.Load(), lost.Load(), up.all, up.max)
	if up.max > 2 || up.all > 4 || lost.Load() < 14 {
		t.Fatalf("in-flight cap of 2 not kept: upstream held %d at once, saw %d; %d queries dropped", up.max, up.all, lost.Load())
	}
}

// Open TCP connections are capped: one more is closed at once, and the
// slots come back when the holders leave.
func TestTCPConnectionCap(t *testing.T) {
	store := &fakeStore{names: map[string]netip.Addr{"web": netip.MustParseAddr("10.213.77.11")}}
	srv := startServerWith(t, &Server{Pool: pool, Lookup: store, Upstreams: []string{}, MaxTCPConns: 2})
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", srv)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	time.Sleep(100 * time.Millisecond) // let the server accept them
	_, err := queryFrom(srv, "tcp", guestSrc, "web.banger.", dns.TypeA)
	if err == nil {
		t.Fatal("a third tcp connection was served")
	}
	for _, c := range held {
		c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, err := queryFrom(srv, "tcp", guestSrc, "web.banger.", dns.TypeA)
		if err == nil && len(r.Answer) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tcp slots not freed: %v %v", r, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRateLimiterBuckets(t *testing.T) {
	now := time.Unix(1000, 0)
	r := newRateLimiter(2, 4, func() time.Time { return now })
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	for i := range 4 {
		if !r.allow(a) {
			t.Fatalf("burst query %d refused", i)
		}
	}
	if r.allow(a) {
		t.Fatal("fifth query of a burst of 4 allowed")
	}
	if !r.allow(b) {
		t.Fatal("another source refused")
	}
	now = now.Add(500 * time.Millisecond) // one token at 2/s
	if !r.allow(a) || r.allow(a) {
		t.Fatal("refill is not one token per half second")
	}
	now = now.Add(time.Hour)
	for range 4 {
		r.allow(a)
	}
	if r.allow(a) {
		t.Fatal("a long pause refilled past the burst")
	}

	// The table of sources is bounded: full of active sources, a new one is
	// refused; once they are quiet long enough to be full again, it is not.
	r = newRateLimiter(2, 4, func() time.Time { return now })
	for i := range maxSources {
		r.allow(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}))
	}
	newcomer := netip.MustParseAddr("10.9.9.9")
	if r.allow(newcomer) {
		t.Fatal("a source beyond the table's bound was admitted while all others are active")
	}
	now = now.Add(3 * time.Second) // 4 tokens at 2/s: everyone is full again
	if !r.allow(newcomer) {
		t.Fatal("a newcomer refused after the table went quiet")
	}
	if n := len(r.buckets); n > maxSources || n < 1 {
		t.Fatalf("table holds %d sources", n)
	}
}

// queryRetry is queryFrom over UDP with up to 6 tries of 500 ms.
func queryRetry(server, src, name string) (r *dns.Msg, err error) {
	for range 6 {
		m := new(dns.Msg).SetQuestion(name, dns.TypeA)
		c := &dns.Client{Net: "udp", Timeout: 500 * time.Millisecond,
			Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(src)}, Timeout: 500 * time.Millisecond}}
		if r, _, err = c.Exchange(m, server); err == nil {
			return r, nil
		}
	}
	return nil, err
}
