// Package vmdns answers DNS for VM names: NAME.banger. resolves to the VM's
// address and the guest subnet's reverse names resolve back, read live from
// the store at query time. Other queries from the guest subnet are
// forwarded to the host's upstream resolvers, so guests can use this server
// (on the bridge address) as their only resolver; from anywhere else they
// are REFUSED. Queries for banger's own zones are never forwarded.
//
// The server is reachable by every guest and every local user, so it
// bounds what they can make it do: a token bucket per source address
// (floods are dropped before any goroutine starts), a cap on queries
// handled at once and on open TCP connections.
package vmdns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Defaults for Server's zero fields.
const (
	DefaultDomain     = "banger"
	DefaultResolvConf = "/etc/resolv.conf"
	DefaultTimeout    = 2 * time.Second
	// DefaultTTL is short: VMs come and go, and a removed name must stop
	// resolving promptly in caching resolvers (systemd-resolved) too.
	DefaultTTL = 5
)

// Lookup reads VM names and addresses at query time (the store, in bangerd).
// Names are single lower-case DNS labels without the domain.
type Lookup interface {
	LookupName(name string) (netip.Addr, bool)
	LookupAddr(addr netip.Addr) (name string, ok bool)
}

// Server is the VM name server. Set the fields before Listen.
type Server struct {
	Domain string       // zone for VM names, default "banger"
	Pool   netip.Prefix // guest subnet: its reverse names are answered here
	Lookup Lookup
	// Upstreams are "host:port" resolvers for everything else. nil means
	// the nameservers of /etc/resolv.conf; an empty slice means none.
	Upstreams []string
	Timeout   time.Duration // per upstream exchange, default 2s
	TTL       uint32        // answer TTL, default 5s
	Logger    *slog.Logger
	// ForwardFrom is where queries for other names may come from (the
	// guest subnet); the server's own address is never in it, as local
	// users' queries to the bridge address come from there. Everyone else
	// gets REFUSED for names outside banger's zones. Zero: nobody.
	ForwardFrom netip.Prefix

	// Limits; zero means the Default* value.
	MaxInFlight    int     // queries handled at once; more are dropped (UDP) or SERVFAIL (TCP)
	RatePerSource  float64 // queries (and TCP connections) per second per source address
	BurstPerSource int
	MaxTCPConns    int
}

// Listener is a Server bound to its UDP and TCP sockets.
type Listener struct {
	s         *Server
	zone      string
	upstreams []string
	log       *slog.Logger
	pc        net.PacketConn
	ln        net.Listener
	self      netip.Addr // the bound address: never a forwarding client
	limit     *rateLimiter
	inFlight  chan struct{}
	tcpSlots  int

	baseMu sync.Mutex
	base   context.Context // bounds forwarded exchanges; cancelled by Serve's ctx
}

// ListenAndServe answers on addr (UDP and TCP, same port) until ctx ends.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	l, err := s.Listen(addr)
	if err != nil {
		return err
	}
	return l.Serve(ctx)
}

// Listen binds UDP and TCP on addr. With port 0, both get the same
// kernel-chosen port.
func (s *Server) Listen(addr string) (*Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dns listen address %q: %w", addr, err)
	}
	const attempts = 10 // a random UDP port may be taken for TCP; bounded retry
	for i := 0; ; i++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen for dns on udp %s: %w", addr, err)
		}
		udpPort := strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port)
		ln, err := net.Listen("tcp", net.JoinHostPort(host, udpPort))
		if err == nil {
			return s.activate(pc, ln)
		}
		pc.Close()
		if port != "0" || i+1 >= attempts {
			return nil, fmt.Errorf("listen for dns on tcp %s: %w", net.JoinHostPort(host, udpPort), err)
		}
	}
}

// Activate serves on sockets opened elsewhere, e.g. bound to port 53 on the
// bridge address by the root helper and passed to the unprivileged daemon.
func (s *Server) Activate(pc net.PacketConn, ln net.Listener) (*Listener, error) {
	if pc == nil || ln == nil {
		return nil, errors.New("activate dns server: need both udp and tcp sockets")
	}
	return s.activate(pc, ln)
}

func (s *Server) activate(pc net.PacketConn, ln net.Listener) (*Listener, error) {
	domain := s.Domain
	if domain == "" {
		domain = DefaultDomain
	}
	if err := ValidateDomain(domain); err != nil {
		pc.Close()
		ln.Close()
		return nil, err
	}
	if s.Lookup == nil {
		pc.Close()
		ln.Close()
		return nil, errors.New("dns server: no lookup")
	}
	lg := s.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	ups := s.Upstreams
	if ups == nil {
		var err error
		if ups, err = UpstreamsFromResolvConf(DefaultResolvConf); err != nil {
			lg.Warn("no upstream resolvers: names outside ."+domain+" will fail", "err", err)
		}
	}
	l := &Listener{s: s, zone: dns.Fqdn(domain), log: lg, pc: pc, ln: ln, base: context.Background()}
	l.self = l.Addr().Addr().Unmap()
	l.upstreams = l.withoutSelf(ups)
	rate, burst, inFlight, tcp := s.RatePerSource, s.BurstPerSource, s.MaxInFlight, s.MaxTCPConns
	if rate <= 0 {
		rate = DefaultRatePerSource
	}
	if burst <= 0 {
		burst = DefaultBurstPerSource
	}
	if inFlight <= 0 {
		inFlight = DefaultMaxInFlight
	}
	if tcp <= 0 {
		tcp = DefaultMaxTCPConns
	}
	l.limit = newRateLimiter(rate, burst, time.Now)
	l.inFlight = make(chan struct{}, inFlight)
	l.tcpSlots = tcp
	return l, nil
}

// Addr is the bound address (same port for UDP and TCP).
func (l *Listener) Addr() netip.AddrPort {
	return l.pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Upstreams are the resolvers this listener forwards to.
func (l *Listener) Upstreams() []string { return append([]string(nil), l.upstreams...) }

// withoutSelf drops upstreams that are this server: forwarding to ourselves
// would loop until the timeout.
func (l *Listener) withoutSelf(ups []string) []string {
	self := l.Addr()
	var out []string
	for _, u := range ups {
		ap, err := netip.ParseAddrPort(u)
		if err == nil && ap.Port() == self.Port() {
			a := ap.Addr().Unmap()
			s := self.Addr().Unmap()
			if a == s || (s.IsUnspecified() && a.IsLoopback()) {
				l.log.Warn("ignoring upstream resolver that is this server", "upstream", u)
				continue
			}
		}
		out = append(out, u)
	}
	return out
}

// Serve answers queries until ctx ends, then shuts both sockets down.
func (l *Listener) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	l.baseMu.Lock()
	l.base = ctx
	l.baseMu.Unlock()

	handler := dns.HandlerFunc(l.serveDNS)
	idle := func() time.Duration { return tcpIdleTimeout }
	servers := []*dns.Server{
		{PacketConn: l.pc, Handler: handler, DecorateReader: func(r dns.Reader) dns.Reader { return limitedReader{Reader: r, limit: l.limit} }},
		{Listener: &limitedListener{Listener: l.ln, limit: l.limit, slots: make(chan struct{}, l.tcpSlots)}, Handler: handler, IdleTimeout: idle},
	}
	started := make(chan struct{}, len(servers))
	errc := make(chan error, len(servers))
	for _, srv := range servers {
		srv.NotifyStartedFunc = func() { started <- struct{}{} }
		go func() { errc <- srv.ActivateAndServe() }()
	}
	// Shut down only started servers: miekg/dns refuses to stop one that has
	// not started yet, which would then run forever.
	running := 0
	var firstErr error
	for running < len(servers) && firstErr == nil {
		select {
		case <-started:
			running++
		case err := <-errc:
			firstErr = fmt.Errorf("serve dns: %w", err)
		}
	}
	l.log.InfoContext(ctx, "dns server listening", "addr", l.Addr().String(), "zone", l.zone, "upstreams", l.upstreams)
	if firstErr == nil {
		select {
		case <-ctx.Done():
		case err := <-errc:
			firstErr = fmt.Errorf("serve dns: %w", err)
		}
	}
	cancel()
	shutdownCtx, stop := context.WithTimeout(context.Background(), 3*time.Second)
	defer stop()
	for _, srv := range servers {
		_ = srv.ShutdownContext(shutdownCtx) // "not started" for a failed one
	}
	l.pc.Close()
	l.ln.Close()
	return firstErr
}

func (l *Listener) baseCtx() context.Context {
	l.baseMu.Lock()
	defer l.baseMu.Unlock()
	return l.base
}

func (l *Listener) ttl() uint32 {
	if l.s.TTL == 0 {
		return DefaultTTL
	}
	return l.s.TTL
}

func (l *Listener) timeout() time.Duration {
	if l.s.Timeout <= 0 {
		return DefaultTimeout
	}
	return l.s.Timeout
}

func (l *Listener) serveDNS(w dns.ResponseWriter, req *dns.Msg) {
	tcp := isTCP(w)
	src := sourceOf(w.RemoteAddr())
	// UDP queries were rate-limited as they were read; a TCP connection
	// pays per query here.
	if tcp && !l.limit.allow(src) {
		_ = w.Close()
		return
	}
	select {
	case l.inFlight <- struct{}{}:
		defer func() { <-l.inFlight }()
	default:
		if tcp { // an answer, so the client does not wait; UDP just drops
			m := new(dns.Msg).SetRcode(req, dns.RcodeServerFailure)
			_ = w.WriteMsg(m)
		}
		return
	}
	resp := l.answer(req, tcp, src)
	if !tcp {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil && int(opt.UDPSize()) > size {
			size = int(opt.UDPSize())
		}
		resp.Truncate(size)
	}
	if err := w.WriteMsg(resp); err != nil {
		l.log.Debug("write dns reply", "err", err)
	}
}

func isTCP(w dns.ResponseWriter) bool {
	_, ok := w.RemoteAddr().(*net.TCPAddr)
	return ok
}

// answer decides: our zone, our reverse zone, forward (for the guest
// subnet) or refuse.
func (l *Listener) answer(req *dns.Msg, tcp bool, src netip.Addr) *dns.Msg {
	if req.Opcode != dns.OpcodeQuery {
		return new(dns.Msg).SetRcode(req, dns.RcodeNotImplemented)
	}
	if len(req.Question) != 1 {
		return new(dns.Msg).SetRcode(req, dns.RcodeFormatError)
	}
	q := req.Question[0]
	name := strings.ToLower(dns.Fqdn(q.Name))
	if dns.IsSubDomain(l.zone, name) {
		return l.answerZone(req, q, name)
	}
	if p, extra, ok := reversePrefix(name); ok && l.s.Pool.IsValid() && p.Bits() >= l.s.Pool.Bits() && l.s.Pool.Contains(p.Addr()) {
		return l.answerReverse(req, q, p, extra)
	}
	if !l.mayForward(src) {
		return new(dns.Msg).SetRcode(req, dns.RcodeRefused)
	}
	return l.forward(req, tcp)
}

// mayForward: only guests use this server as their resolver.
func (l *Listener) mayForward(src netip.Addr) bool {
	return src.IsValid() && src != l.self && l.s.ForwardFrom.IsValid() && l.s.ForwardFrom.Contains(src)
}

func (l *Listener) reply(req *dns.Msg, rcode int) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(req, rcode)
	m.Authoritative = true
	m.RecursionAvailable = true
	return m
}

func (l *Listener) soa(zone string) dns.RR {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: l.ttl()},
		Ns:      "ns." + l.zone,
		Mbox:    "hostmaster." + l.zone,
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  l.ttl(), // negative answers are cached this long at most
	}
}

// nodata/nxdomain carry the SOA so resolvers cache the negative answer briefly.
func (l *Listener) negative(req *dns.Msg, rcode int, zone string) *dns.Msg {
	m := l.reply(req, rcode)
	m.Ns = []dns.RR{l.soa(zone)}
	return m
}

func (l *Listener) answerZone(req *dns.Msg, q dns.Question, name string) *dns.Msg {
	if name == l.zone {
		if q.Qtype == dns.TypeSOA {
			m := l.reply(req, dns.RcodeSuccess)
			m.Answer = []dns.RR{l.soa(l.zone)}
			return m
		}
		return l.negative(req, dns.RcodeSuccess, l.zone)
	}
	host := strings.TrimSuffix(name, "."+l.zone)
	if strings.Contains(host, ".") { // only NAME.banger. exists
		return l.negative(req, dns.RcodeNameError, l.zone)
	}
	addr, ok := l.s.Lookup.LookupName(host)
	if !ok || !addr.Is4() {
		return l.negative(req, dns.RcodeNameError, l.zone)
	}
	if q.Qtype != dns.TypeA && q.Qtype != dns.TypeANY {
		return l.negative(req, dns.RcodeSuccess, l.zone) // e.g. AAAA: the name exists, IPv4 only
	}
	m := l.reply(req, dns.RcodeSuccess)
	m.Answer = []dns.RR{&dns.A{
		Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: l.ttl()},
		A:   addr.AsSlice(),
	}}
	return m
}

func (l *Listener) answerReverse(req *dns.Msg, q dns.Question, p netip.Prefix, extra bool) *dns.Msg {
	zone := reverseZone(l.s.Pool)
	if extra {
		return l.negative(req, dns.RcodeNameError, zone)
	}
	if p.Bits() < 32 { // the zone apex or an empty non-terminal inside it
		return l.negative(req, dns.RcodeSuccess, zone)
	}
	name, ok := l.s.Lookup.LookupAddr(p.Addr())
	if !ok {
		return l.negative(req, dns.RcodeNameError, zone)
	}
	target := dns.Fqdn(strings.ToLower(name) + "." + l.zone)
	if _, valid := dns.IsDomainName(target); !valid || strings.Contains(strings.ToLower(name), ".") {
		l.log.Warn("vm name is not a dns label", "name", name)
		return l.negative(req, dns.RcodeNameError, zone)
	}
	if q.Qtype != dns.TypePTR && q.Qtype != dns.TypeANY {
		return l.negative(req, dns.RcodeSuccess, zone)
	}
	m := l.reply(req, dns.RcodeSuccess)
	m.Answer = []dns.RR{&dns.PTR{
		Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: l.ttl()},
		Ptr: target,
	}}
	return m
}

// forward asks each upstream in turn (UDP, then TCP when truncated) and
// returns the first usable answer; SERVFAIL when none gives one.
func (l *Listener) forward(req *dns.Msg, tcp bool) *dns.Msg {
	var fallback *dns.Msg
	for _, up := range l.upstreams {
		ctx, cancel := context.WithTimeout(l.baseCtx(), l.timeout())
		resp, err := l.exchange(ctx, req, up, tcp)
		cancel()
		if err != nil {
			l.log.Debug("upstream dns failed", "upstream", up, "name", req.Question[0].Name, "err", err)
			continue
		}
		resp.Id = req.Id
		if resp.Rcode == dns.RcodeServerFailure || resp.Rcode == dns.RcodeRefused {
			fallback = resp // another upstream may do better
			continue
		}
		return resp
	}
	if fallback != nil {
		return fallback
	}
	m := new(dns.Msg).SetRcode(req, dns.RcodeServerFailure)
	m.RecursionAvailable = true
	return m
}

func (l *Listener) exchange(ctx context.Context, req *dns.Msg, up string, tcp bool) (*dns.Msg, error) {
	q := req.Copy()
	if !tcp {
		c := &dns.Client{Net: "udp", Timeout: l.timeout(), UDPSize: dns.DefaultMsgSize}
		resp, _, err := c.ExchangeContext(ctx, q, up)
		if err != nil || !resp.Truncated {
			return resp, err
		}
	}
	c := &dns.Client{Net: "tcp", Timeout: l.timeout()}
	resp, _, err := c.ExchangeContext(ctx, q, up)
	return resp, err
}

// reversePrefix parses an in-addr.arpa name into the prefix its numeric
// labels spell (8 bits per label). extra reports labels below those (not a
// valid address name). ok is false for names outside in-addr.arpa.
func reversePrefix(name string) (p netip.Prefix, extra, ok bool) {
	const suffix = ".in-addr.arpa."
	if !strings.HasSuffix(name, suffix) {
		return netip.Prefix{}, false, false
	}
	labels := dns.SplitDomainName(strings.TrimSuffix(name, suffix))
	var octets [4]byte
	n := 0
	for i := len(labels) - 1; i >= 0; i-- {
		v, err := strconv.Atoi(labels[i])
		if n == 4 || err != nil || v < 0 || v > 255 || strconv.Itoa(v) != labels[i] {
			extra = true
			break
		}
		octets[n] = byte(v)
		n++
	}
	if n == 0 {
		return netip.Prefix{}, false, false
	}
	return netip.PrefixFrom(netip.AddrFrom4(octets), n*8), extra, true
}

// reverseZone is the in-addr.arpa zone covering pool, rounded to octets.
func reverseZone(pool netip.Prefix) string {
	a := pool.Addr().As4()
	n := pool.Bits() / 8
	parts := make([]string, 0, n+2)
	for i := n - 1; i >= 0; i-- {
		parts = append(parts, strconv.Itoa(int(a[i])))
	}
	return strings.Join(append(parts, "in-addr", "arpa"), ".") + "."
}

// UpstreamsFromResolvConf returns the nameservers of a resolv.conf as
// host:port strings.
func UpstreamsFromResolvConf(path string) ([]string, error) {
	cc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("read resolvers from %s: %w", path, err)
	}
	out := make([]string, 0, len(cc.Servers))
	for _, s := range cc.Servers {
		out = append(out, net.JoinHostPort(s, cc.Port))
	}
	return out, nil
}
