package daemon

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/opid"
)

// VM DNS is served by the root helper (see internal/roothelper/dns.go); the
// daemon owns the names. syncDNS keeps the helper's table equal to the
// store: it reads the VMs every dnsPollInterval and pushes the whole table
// when it changed, and at least every dnsRefreshInterval so a restarted
// helper (which starts empty) is refilled without waiting for a VM change.
const (
	dnsPollInterval    = time.Second
	dnsRefreshInterval = 15 * time.Second
	dnsCallTimeout     = 3 * time.Second
)

// dnsState is what the daemon last told the helper and heard back.
type dnsState struct {
	mu     sync.Mutex
	status *api.DNSStatus
}

func (s *dnsState) set(st api.DNSStatus) {
	s.mu.Lock()
	s.status = &st
	s.mu.Unlock()
}

// get returns a copy of the last status, nil before the first push.
func (s *dnsState) get() *api.DNSStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.status == nil {
		return nil
	}
	st := *s.status
	return &st
}

// syncDNS pushes the VM name table to the helper until ctx ends.
func (d *Daemon) syncDNS(ctx context.Context) {
	lg := d.log.With("component", "dns-sync")
	tick := time.NewTicker(dnsPollInterval)
	defer tick.Stop()
	var (
		pushed   string // key of the table the helper has
		pushedAt time.Time
		lastErr  string // logged once until it changes
	)
	for {
		recs, err := d.dnsRecords(ctx)
		key := dnsKey(d.cfg.DNS.Domain, recs)
		switch {
		case err != nil:
			if ctx.Err() == nil && err.Error() != lastErr {
				lg.Warn("read vm names for dns", "err", err)
				lastErr = err.Error()
			}
		case key != pushed || time.Since(pushedAt) >= dnsRefreshInterval:
			// Each push is an operation of the daemon's own: its op_id
			// (bg-dns-…) is on its lines here and in the helper's log.
			cctx, cancel := context.WithTimeout(opid.With(ctx, opid.NewPrefixed("bg-dns")), dnsCallTimeout)
			st, err := d.helper.UpdateDNS(cctx, api.DNSUpdate{Domain: d.cfg.DNS.Domain, Records: recs})
			cancel()
			if err != nil {
				if ctx.Err() == nil && err.Error() != lastErr {
					lg.WarnContext(cctx, "push vm names to the root helper's dns", "err", err)
					lastErr = err.Error()
				}
				break
			}
			if key != pushed {
				lg.InfoContext(cctx, "vm dns table pushed", "names", len(recs), "serving", st.Serving, "addr", st.Addr, "dns_error", st.Error)
			}
			d.dns.set(st)
			pushed, pushedAt, lastErr = key, time.Now(), ""
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// dnsRecords lists every VM holding an address, sorted by name. A VM keeps
// its address (lease) until it is removed, so its name resolves as long as
// it exists. The lease decides who holds an address: a VM being removed
// keeps its record (and IP field) a moment after its lease went back to
// the pool, and a VM created meanwhile may already hold that address.
func (d *Daemon) dnsRecords(ctx context.Context) ([]api.DNSRecord, error) {
	vms, err := d.store.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	leases, err := d.store.ListLeases(ctx)
	if err != nil {
		return nil, err
	}
	holder := make(map[string]string, len(leases)) // address → vm id
	for _, l := range leases {
		holder[l.IP] = l.VMID
	}
	recs := make([]api.DNSRecord, 0, len(vms))
	for _, vm := range vms {
		if a, err := netip.ParseAddr(vm.IP); err == nil && a.Is4() && holder[a.String()] == vm.ID {
			recs = append(recs, api.DNSRecord{Name: vm.Name, IP: a.String()})
		}
	}
	slices.SortFunc(recs, func(a, b api.DNSRecord) int { return strings.Compare(a.Name, b.Name) })
	return recs, nil
}

func dnsKey(domain string, recs []api.DNSRecord) string {
	var b strings.Builder
	b.WriteString(domain)
	for _, r := range recs {
		b.WriteString("\n" + r.Name + " " + r.IP)
	}
	return b.String()
}
