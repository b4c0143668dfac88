package roothelper

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/guestnet"
	"github.com/bangerdev/banger/internal/hostnat"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/opid"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/vmdns"
)

// VM DNS lives in the root helper, not the daemon: it must listen on port 53
// of the bridge address, which needs privilege, and the owner daemon may be
// unprivileged. The helper only serves; it never reads the owner's store.
// The daemon pushes the whole name → address table with dns.update (at its
// start, whenever the table changes and periodically as a refresh), and the
// helper validates every entry: names must be VM names, addresses inside
// the helper's own guest subnet. The server starts when the network comes up
// (network.up, or dns.update finding the bridge already there, as after a
// helper restart) and stops on network.down. Names outside the VM domain are
// forwarded to the host's resolvers (/etc/resolv.conf) for guests only
// (sources in the guest subnet); local users reaching the bridge address
// get REFUSED for them. vmdns rate-limits every source and caps the work in
// flight: every guest and local user can reach this root-run server.

// dnsPort is where guests (and systemd-resolved) send queries.
const dnsPort = 53

// maxDNSRecords bounds a dns.update. A full table must fit in one helper
// request (MaxRequestBytes): 4096 VMs with the longest names do.
const maxDNSRecords = 4096

// dnsTable is the pushed name table; vmdns reads it at query time.
type dnsTable struct {
	mu    sync.RWMutex
	names map[string]netip.Addr
	addrs map[netip.Addr]string
}

func (t *dnsTable) LookupName(name string) (netip.Addr, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	a, ok := t.names[name]
	return a, ok
}

func (t *dnsTable) LookupAddr(addr netip.Addr) (string, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	n, ok := t.addrs[addr]
	return n, ok
}

func (t *dnsTable) replace(names map[string]netip.Addr) {
	addrs := make(map[netip.Addr]string, len(names))
	for n, a := range names {
		addrs[a] = n
	}
	t.mu.Lock()
	t.names, t.addrs = names, addrs
	t.mu.Unlock()
}

func (t *dnsTable) len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.names)
}

// dnsService runs the helper's one VM DNS server.
type dnsService struct {
	log     *slog.Logger
	life    context.Context // the helper's lifetime bounds the server
	bridge  string
	plan    guestnet.Plan
	planErr error
	table   dnsTable

	mu      sync.Mutex
	domain  string
	run     *dnsRun // nil: not serving
	lastErr string
}

type dnsRun struct {
	domain string
	addr   netip.AddrPort
	stop   context.CancelFunc
	done   chan struct{}
}

// dnsMethods adds dns.update and returns the DNS service, which the network
// methods start after network.up and stop before network.down, so the
// server follows the bridge.
func (h *Helper) dnsMethods(m *rpc.Methods) *dnsService {
	s := &dnsService{log: h.log.With("component", "vmdns"), life: h.life, domain: vmdns.DefaultDomain}
	n, err := hostnat.New(h.opts.NetworkConfig) // same validation as the network methods
	if err != nil {
		s.planErr = err
	} else {
		s.bridge, s.plan = n.Config().Bridge, n.Plan()
	}
	rpc.Register(m, api.MethodHelperDNSUpdate, s.update)
	go func() { // a helper's ctx ending stops the server with it
		<-h.life.Done()
		s.stopServing(context.Background())
	}()
	return s
}

func (s *dnsService) update(ctx context.Context, c *rpc.Call, p api.DNSUpdate) (api.DNSStatus, error) {
	if s.planErr != nil {
		return api.DNSStatus{}, api.Errorf(api.CodeFailedPrecondition, "root helper host network config: %v", s.planErr)
	}
	names, err := s.validate(p)
	if err != nil {
		return api.DNSStatus{}, api.Errorf(api.CodeInvalidArgument, "dns.update: %v", err)
	}
	s.table.replace(names)
	s.mu.Lock()
	changedDomain := s.domain != p.Domain
	s.domain = p.Domain
	s.mu.Unlock()
	if changedDomain {
		s.stopServing(ctx) // vmdns fixes its zone at start
	}
	if s.bridgeHasGateway() {
		s.ensure(ctx)
	}
	st := s.status()
	c.Log.DebugContext(ctx, "dns table updated", "names", len(names), "domain", p.Domain, "serving", st.Serving, "peer_uid", c.Peer.UID)
	return st, nil
}

// validate checks a pushed table: the helper trusts none of it.
func (s *dnsService) validate(p api.DNSUpdate) (map[string]netip.Addr, error) {
	if err := vmdns.ValidateDomain(p.Domain); err != nil {
		return nil, err
	}
	if len(p.Records) > maxDNSRecords {
		return nil, fmt.Errorf("%d records is more than the %d allowed", len(p.Records), maxDNSRecords)
	}
	names := make(map[string]netip.Addr, len(p.Records))
	owner := make(map[netip.Addr]string, len(p.Records))
	for _, r := range p.Records {
		if err := model.ValidateVMName(r.Name); err != nil {
			return nil, fmt.Errorf("record %q: %w", r.Name, err)
		}
		a, err := netip.ParseAddr(r.IP)
		if err != nil {
			return nil, fmt.Errorf("record %q: address %q: %w", r.Name, r.IP, err)
		}
		if err := s.plan.CheckGuestAddr(a); err != nil {
			return nil, fmt.Errorf("record %q: %w", r.Name, err)
		}
		if _, dup := names[r.Name]; dup {
			return nil, fmt.Errorf("record %q appears twice", r.Name)
		}
		if other, dup := owner[a]; dup {
			return nil, fmt.Errorf("records %q and %q share address %s", other, r.Name, a)
		}
		names[r.Name], owner[a] = a, r.Name
	}
	return names, nil
}

// bridgeHasGateway reports whether the bridge exists with the gateway
// address (a previous helper may have brought the network up).
func (s *dnsService) bridgeHasGateway() bool {
	ifc, err := net.InterfaceByName(s.bridge)
	if err != nil {
		return false
	}
	addrs, err := ifc.Addrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok && ip.Unmap() == s.plan.Gateway {
				return true
			}
		}
	}
	return false
}

// ensure starts the server on gateway:53 unless it runs. A failure is kept
// for the status (and logged): VMs still work by address without DNS.
func (s *dnsService) ensure(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.planErr != nil || s.life.Err() != nil {
		return
	}
	if s.run != nil {
		select {
		case <-s.run.done: // it stopped on its own (e.g. socket error): restart
			s.run = nil
		default:
			return
		}
	}
	addr := netip.AddrPortFrom(s.plan.Gateway, dnsPort)
	// The server outlives the request that starts it: its own lines (upstream
	// warnings, query errors) carry an op_id of their own.
	runID := opid.NewPrefixed("bg-vmdns")
	srv := &vmdns.Server{Domain: s.domain, Pool: s.plan.Subnet, ForwardFrom: s.plan.Subnet, Lookup: &s.table, Logger: s.log.With(opid.KeyOpID, runID)}
	l, err := srv.Listen(addr.String())
	if err != nil {
		s.lastErr = err.Error()
		s.log.ErrorContext(ctx, "vm dns not serving", "addr", addr.String(), "err", err)
		return
	}
	serveCtx, stop := context.WithCancel(opid.With(s.life, runID))
	r := &dnsRun{domain: s.domain, addr: l.Addr(), stop: stop, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		if err := l.Serve(serveCtx); err != nil {
			s.log.ErrorContext(serveCtx, "vm dns stopped", "err", err)
			s.mu.Lock()
			s.lastErr = err.Error()
			s.mu.Unlock()
		}
	}()
	s.run, s.lastErr = r, ""
	s.log.InfoContext(ctx, "vm dns serving", "addr", r.addr.String(), "domain", s.domain, "upstreams", l.Upstreams())
}

// stopServing stops the server and waits (bounded) for its sockets to close,
// so the address can be bound again at once.
func (s *dnsService) stopServing(ctx context.Context) {
	s.mu.Lock()
	r := s.run
	s.run = nil
	s.mu.Unlock()
	if r == nil {
		return
	}
	r.stop()
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		s.log.WarnContext(ctx, "vm dns server did not stop within 5s")
	}
	s.log.InfoContext(ctx, "vm dns stopped serving", "addr", r.addr.String())
}

func (s *dnsService) status() api.DNSStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := api.DNSStatus{Domain: s.domain, Names: s.table.len(), Error: s.lastErr}
	if s.run != nil {
		select {
		case <-s.run.done:
		default:
			st.Serving, st.Addr, st.Error = true, s.run.addr.String(), ""
		}
	}
	if !st.Serving && st.Error == "" {
		st.Error = fmt.Sprintf("bridge %s is not up with %s (it comes up with the first VM)", s.bridge, s.plan.Gateway)
	}
	return st
}

var _ vmdns.Lookup = (*dnsTable)(nil)

// UpdateDNS replaces the helper's VM name table and reports its DNS server.
func (c *Client) UpdateDNS(ctx context.Context, u api.DNSUpdate) (api.DNSStatus, error) {
	return invoke(ctx, c, api.MethodHelperDNSUpdate, u)
}
