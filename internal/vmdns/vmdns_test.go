package vmdns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

var pool = netip.MustParsePrefix("10.213.77.0/24")

// fakeStore is a Lookup whose contents the test changes while serving.
type fakeStore struct {
	mu    sync.Mutex
	names map[string]netip.Addr
}

func (f *fakeStore) set(name, addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if addr == "" {
		delete(f.names, name)
		return
	}
	f.names[name] = netip.MustParseAddr(addr)
}

func (f *fakeStore) LookupName(name string) (netip.Addr, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.names[name]
	return a, ok
}

func (f *fakeStore) LookupAddr(addr netip.Addr) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for n, a := range f.names {
		if a == addr {
			return n, true
		}
	}
	return "", false
}

// fakeUpstream is a resolver on 127.0.0.1 that records what reaches it.
type fakeUpstream struct {
	addr    string
	mu      sync.Mutex
	queries []string // "udp example.test. A"
}

func (u *fakeUpstream) seen() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.queries...)
}

const bigRecords = 40 // TXT records: far more than 512 bytes

func startUpstream(t *testing.T) *fakeUpstream {
	t.Helper()
	u := &fakeUpstream{}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		q := r.Question[0]
		netw := "udp"
		if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
			netw = "tcp"
		}
		u.mu.Lock()
		u.queries = append(u.queries, fmt.Sprintf("%s %s %s", netw, strings.ToLower(q.Name), dns.TypeToString[q.Qtype]))
		u.mu.Unlock()
		m := new(dns.Msg).SetReply(r)
		switch strings.ToLower(q.Name) {
		case "example.test.":
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP("192.0.2.7")})
		case "big.test.":
			for i := range bigRecords {
				m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
					Txt: []string{fmt.Sprintf("record %02d padding padding padding padding", i)}})
			}
			if netw == "udp" {
				m.Truncate(dns.MinMsgSize)
			}
		case "broken.test.":
			m.Rcode = dns.RcodeServerFailure
		default:
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.addr = pc.LocalAddr().String()
	ln, err := net.Listen("tcp", u.addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: handler}, {Listener: ln, Handler: handler}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { _ = srv.ActivateAndServe() }()
		select {
		case <-started:
		case <-time.After(5 * time.Second):
			t.Fatal("fake upstream did not start")
		}
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
	return u
}

// startServer runs a vmdns server on 127.0.0.1 with the given upstreams.
func startServer(t *testing.T, store *fakeStore, upstreams []string) string {
	t.Helper()
	return startServerWith(t, &Server{Pool: pool, Lookup: store, Upstreams: upstreams, Timeout: 500 * time.Millisecond,
		ForwardFrom: netip.MustParsePrefix("127.0.0.0/8")})
}

// startServerWith runs s on 127.0.0.1 until the test ends.
func startServerWith(t *testing.T, s *Server) string {
	t.Helper()
	l, err := s.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after cancel")
		}
	})
	return l.Addr().String()
}

// guestSrc is the source of test queries: in ForwardFrom, and not the
// server's own address (127.0.0.1), which never gets forwarding.
const guestSrc = "127.0.0.2"

func query(t *testing.T, server, netw, name string, qtype uint16) *dns.Msg {
	t.Helper()
	r, err := queryFrom(server, netw, guestSrc, name, qtype)
	if err != nil {
		t.Fatalf("%s query %s %s: %v", netw, name, dns.TypeToString[qtype], err)
	}
	return r
}

// queryFrom asks server from the loopback address src.
func queryFrom(server, netw, src, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg).SetQuestion(name, qtype)
	var local net.Addr = &net.UDPAddr{IP: net.ParseIP(src)}
	if netw == "tcp" {
		local = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c := &dns.Client{Net: netw, Timeout: 3 * time.Second, Dialer: &net.Dialer{LocalAddr: local, Timeout: 3 * time.Second}}
	r, _, err := c.Exchange(m, server)
	return r, err
}

func expectRcode(t *testing.T, r *dns.Msg, rcode int, what string) {
	t.Helper()
	if r.Rcode != rcode {
		t.Errorf("%s: rcode %s, want %s", what, dns.RcodeToString[r.Rcode], dns.RcodeToString[rcode])
	}
}

func TestVMNames(t *testing.T) {
	store := &fakeStore{names: map[string]netip.Addr{}}
	store.set("web", "10.213.77.11")
	up := startUpstream(t)
	srv := startServer(t, store, []string{up.addr})

	for _, netw := range []string{"udp", "tcp"} {
		r := query(t, srv, netw, "web.banger.", dns.TypeA)
		expectRcode(t, r, dns.RcodeSuccess, netw+" web A")
		if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "10.213.77.11" || !r.Authoritative {
			t.Errorf("%s web A = %v (aa=%v)", netw, r.Answer, r.Authoritative)
		}
	}
	if r := query(t, srv, "udp", "WEB.Banger.", dns.TypeA); len(r.Answer) != 1 {
		t.Errorf("mixed-case query: %v", r)
	}
	r := query(t, srv, "udp", "web.banger.", dns.TypeAAAA)
	expectRcode(t, r, dns.RcodeSuccess, "web AAAA")
	if len(r.Answer) != 0 || len(r.Ns) != 1 {
		t.Errorf("web AAAA: answer %v authority %v, want empty with SOA", r.Answer, r.Ns)
	}
	expectRcode(t, query(t, srv, "udp", "nope.banger.", dns.TypeA), dns.RcodeNameError, "unknown name")
	expectRcode(t, query(t, srv, "udp", "nope.banger.", dns.TypeAAAA), dns.RcodeNameError, "unknown AAAA")
	expectRcode(t, query(t, srv, "udp", "x.web.banger.", dns.TypeA), dns.RcodeNameError, "name below a vm")
	if r := query(t, srv, "udp", "banger.", dns.TypeSOA); len(r.Answer) != 1 || r.Rcode != dns.RcodeSuccess {
		t.Errorf("zone SOA: %v", r)
	}

	// PTR for in-pool addresses, live.
	r = query(t, srv, "udp", "11.77.213.10.in-addr.arpa.", dns.TypePTR)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.PTR).Ptr != "web.banger." {
		t.Errorf("PTR = %v", r.Answer)
	}
	expectRcode(t, query(t, srv, "udp", "12.77.213.10.in-addr.arpa.", dns.TypePTR), dns.RcodeNameError, "unknown in-pool PTR")
	expectRcode(t, query(t, srv, "udp", "77.213.10.in-addr.arpa.", dns.TypeSOA), dns.RcodeSuccess, "reverse zone apex")
	expectRcode(t, query(t, srv, "udp", "x.11.77.213.10.in-addr.arpa.", dns.TypePTR), dns.RcodeNameError, "garbage below a reverse name")

	// The store changes under a running server.
	store.set("web", "")
	store.set("db", "10.213.77.12")
	expectRcode(t, query(t, srv, "udp", "web.banger.", dns.TypeA), dns.RcodeNameError, "removed name")
	expectRcode(t, query(t, srv, "udp", "11.77.213.10.in-addr.arpa.", dns.TypePTR), dns.RcodeNameError, "removed PTR")
	if r := query(t, srv, "tcp", "db.banger.", dns.TypeA); len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "10.213.77.12" {
		t.Errorf("new name: %v", r.Answer)
	}
	if r := query(t, srv, "udp", "12.77.213.10.in-addr.arpa.", dns.TypePTR); len(r.Answer) != 1 || r.Answer[0].(*dns.PTR).Ptr != "db.banger." {
		t.Errorf("new PTR: %v", r.Answer)
	}

	// None of that reached the upstream.
	if seen := up.seen(); len(seen) != 0 {
		t.Errorf("banger's zones were forwarded: %v", seen)
	}

	// An out-of-pool reverse name and the parent of the reverse zone are not ours.
	expectRcode(t, query(t, srv, "udp", "7.2.0.192.in-addr.arpa.", dns.TypePTR), dns.RcodeNameError, "forwarded PTR")
	query(t, srv, "udp", "213.10.in-addr.arpa.", dns.TypeSOA)
	seen := up.seen()
	if len(seen) != 2 || seen[0] != "udp 7.2.0.192.in-addr.arpa. PTR" || seen[1] != "udp 213.10.in-addr.arpa. SOA" {
		t.Errorf("upstream saw %v", seen)
	}
}

func TestForwarding(t *testing.T) {
	store := &fakeStore{names: map[string]netip.Addr{}}
	up := startUpstream(t)

	// A dead upstream first: bound but never answering. The server must move on.
	dead, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	srv := startServer(t, store, []string{dead.LocalAddr().String(), up.addr})

	for _, netw := range []string{"udp", "tcp"} {
		r := query(t, srv, netw, "example.test.", dns.TypeA)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.7" {
			t.Errorf("%s forwarded example.test = %v", netw, r)
		}
	}
	expectRcode(t, query(t, srv, "udp", "missing.test.", dns.TypeA), dns.RcodeNameError, "upstream NXDOMAIN passed through")
	expectRcode(t, query(t, srv, "udp", "broken.test.", dns.TypeA), dns.RcodeServerFailure, "upstream SERVFAIL")

	// Truncation: the server fetches the full answer over TCP; a plain UDP
	// client gets TC and retries over TCP, as real stub resolvers do.
	r := query(t, srv, "udp", "big.test.", dns.TypeTXT)
	if !r.Truncated || len(r.Answer) >= bigRecords {
		t.Errorf("UDP big answer: tc=%v with %d records, want truncated", r.Truncated, len(r.Answer))
	}
	r = query(t, srv, "tcp", "big.test.", dns.TypeTXT)
	if r.Truncated || len(r.Answer) != bigRecords {
		t.Errorf("TCP big answer: tc=%v with %d records, want %d", r.Truncated, len(r.Answer), bigRecords)
	}
	var udpBig, tcpBig int
	for _, s := range up.seen() {
		switch s {
		case "udp big.test. TXT":
			udpBig++
		case "tcp big.test. TXT":
			tcpBig++
		}
	}
	if udpBig < 1 || tcpBig < 2 {
		t.Errorf("upstream saw big.test over udp %d / tcp %d times, want the UDP try then TCP fallbacks: %v", udpBig, tcpBig, up.seen())
	}
}

func TestServfailWithoutUpstreams(t *testing.T) {
	store := &fakeStore{names: map[string]netip.Addr{"web": netip.MustParseAddr("10.213.77.11")}}
	dead, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	for name, ups := range map[string][]string{"none": {}, "dead": {dead.LocalAddr().String()}} {
		srv := startServer(t, store, ups)
		start := time.Now()
		expectRcode(t, query(t, srv, "udp", "example.test.", dns.TypeA), dns.RcodeServerFailure, name+" upstreams")
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s: SERVFAIL took %s, want within the 500ms upstream timeout", name, d)
		}
		// Local names still work.
		if r := query(t, srv, "udp", "web.banger.", dns.TypeA); len(r.Answer) != 1 {
			t.Errorf("%s: local name failed: %v", name, r)
		}
	}
}

func TestNoForwardingToSelf(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Pool: pool, Lookup: &fakeStore{names: map[string]netip.Addr{}},
		Upstreams: []string{pc.LocalAddr().String(), "127.0.0.9:53"}}
	l, err := s.Activate(pc, ln)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	defer ln.Close()
	if ups := l.Upstreams(); len(ups) != 1 || ups[0] != "127.0.0.9:53" {
		t.Errorf("upstreams = %v, want the server itself removed", ups)
	}
}

func TestListenRejectsBadDomain(t *testing.T) {
	for _, d := range []string{"Banger", "banger.dev", "ban ger", "banger\nDNS=1.1.1.1", "-x"} {
		s := &Server{Domain: d, Lookup: &fakeStore{}, Upstreams: []string{}}
		if _, err := s.Listen("127.0.0.1:0"); err == nil {
			t.Errorf("domain %q accepted", d)
		}
	}
}

func TestReversePrefix(t *testing.T) {
	cases := []struct {
		name  string
		want  string
		extra bool
		ok    bool
	}{
		{"11.77.213.10.in-addr.arpa.", "10.213.77.11/32", false, true},
		{"77.213.10.in-addr.arpa.", "10.213.77.0/24", false, true},
		{"x.11.77.213.10.in-addr.arpa.", "10.213.77.11/32", true, true},
		{"011.77.213.10.in-addr.arpa.", "10.213.77.0/24", true, true},
		{"256.77.213.10.in-addr.arpa.", "10.213.77.0/24", true, true},
		{"example.com.", "", false, false},
		{"in-addr.arpa.", "", false, false},
	}
	for _, c := range cases {
		p, extra, ok := reversePrefix(c.name)
		if ok != c.ok || extra != c.extra || (ok && p.String() != c.want) {
			t.Errorf("reversePrefix(%q) = %s %v %v, want %s %v %v", c.name, p, extra, ok, c.want, c.extra, c.ok)
		}
	}
	if z := reverseZone(pool); z != "77.213.10.in-addr.arpa." {
		t.Errorf("reverseZone = %s", z)
	}
}

func TestUpstreamsFromResolvConf(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(path, []byte("# generated\nnameserver 127.0.0.53\nnameserver ::1\nsearch example.com\noptions edns0 trust-ad\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ups, err := UpstreamsFromResolvConf(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(ups) != 2 || ups[0] != "127.0.0.53:53" || ups[1] != "[::1]:53" {
		t.Errorf("upstreams = %v", ups)
	}
	if _, err := UpstreamsFromResolvConf(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("missing resolv.conf accepted")
	}
}

func TestResolvedDropIn(t *testing.T) {
	text, err := ResolvedDropIn("banger", netip.MustParseAddrPort("10.213.77.1:53"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, "[Resolve]\nDNS=10.213.77.1\nDomains=~banger\n") {
		t.Errorf("drop-in:\n%s", text)
	}
	text, err = ResolvedDropIn("banger", netip.MustParseAddrPort("127.0.0.1:5353"))
	if err != nil || !strings.Contains(text, "DNS=127.0.0.1:5353\n") {
		t.Errorf("non-53 port drop-in (%v):\n%s", err, text)
	}
	for _, d := range []string{"banger\nDNS=1.1.1.1", "a.b", "", "Banger"} {
		if _, err := ResolvedDropIn(d, netip.MustParseAddrPort("10.213.77.1:53")); err == nil {
			t.Errorf("domain %q accepted", d)
		}
	}
	if _, err := ResolvedDropIn("banger", netip.AddrPort{}); err == nil {
		t.Error("zero address accepted")
	}

	root := t.TempDir()
	addr := netip.MustParseAddrPort("10.213.77.1:53")
	changed, err := ApplyDropIn(root, "banger", addr)
	if err != nil || !changed {
		t.Fatalf("first ApplyDropIn = %v, %v", changed, err)
	}
	path := filepath.Join(root, "etc/systemd/resolved.conf.d/banger.conf")
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := ResolvedDropIn("banger", addr)
	if string(got) != want {
		t.Errorf("file:\n%s\nwant:\n%s", got, want)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("mode = %v (%v)", fi.Mode(), err)
	}
	if changed, err := ApplyDropIn(root, "banger", addr); err != nil || changed {
		t.Errorf("second ApplyDropIn = %v, %v, want unchanged", changed, err)
	}
	if changed, err := ApplyDropIn(root, "banger", netip.MustParseAddrPort("10.213.78.1:53")); err != nil || !changed {
		t.Errorf("ApplyDropIn with a new address = %v, %v", changed, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("drop-in dir holds %d entries, want only banger.conf", len(entries))
	}
	if removed, err := RemoveDropIn(root); err != nil || !removed {
		t.Errorf("RemoveDropIn = %v, %v", removed, err)
	}
	if removed, err := RemoveDropIn(root); err != nil || removed {
		t.Errorf("second RemoveDropIn = %v, %v", removed, err)
	}
}
