package roothelper_test

import (
	"context"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/testutil"
)

// query asks the helper's VM DNS server on the default gateway.
func query(t *testing.T, name string, qtype uint16) (*dns.Msg, error) {
	t.Helper()
	m := new(dns.Msg).SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, "10.213.77.1:53")
	return r, err
}

func TestDNSUpdateRefusesBadTables(t *testing.T) {
	testutil.RequireRoot(t)
	c, _, _ := startHelper(t, ownerUID)
	ctx := context.Background()
	bad := map[string]api.DNSUpdate{
		"domain with dot":   {Domain: "a.b", Records: nil},
		"empty domain":      {Domain: ""},
		"hostile name":      {Domain: "banger", Records: []api.DNSRecord{{Name: "x;rm -rf", IP: "10.213.77.5"}}},
		"dotted name":       {Domain: "banger", Records: []api.DNSRecord{{Name: "a.evil", IP: "10.213.77.5"}}},
		"out of pool":       {Domain: "banger", Records: []api.DNSRecord{{Name: "a", IP: "8.8.8.8"}}},
		"gateway":           {Domain: "banger", Records: []api.DNSRecord{{Name: "a", IP: "10.213.77.1"}}},
		"broadcast":         {Domain: "banger", Records: []api.DNSRecord{{Name: "a", IP: "10.213.77.255"}}},
		"ipv6":              {Domain: "banger", Records: []api.DNSRecord{{Name: "a", IP: "fd00::1"}}},
		"not an address":    {Domain: "banger", Records: []api.DNSRecord{{Name: "a", IP: "10.213.77"}}},
		"duplicate name":    {Domain: "banger", Records: []api.DNSRecord{{Name: "a", IP: "10.213.77.5"}, {Name: "a", IP: "10.213.77.6"}}},
		"duplicate address": {Domain: "banger", Records: []api.DNSRecord{{Name: "a", IP: "10.213.77.5"}, {Name: "b", IP: "10.213.77.5"}}},
	}
	for what, u := range bad {
		err := asUser(t, ownerUID, ownerUID, func() error { _, err := c.UpdateDNS(ctx, u); return err })
		wantCode(t, what, err, api.CodeInvalidArgument)
	}
	err := asUser(t, strayUID, strayUID, func() error {
		_, err := c.UpdateDNS(ctx, api.DNSUpdate{Domain: "banger"})
		return err
	})
	wantCode(t, "stray uid", err, api.CodePermissionDenied)
	// Without a bridge the table is kept but nothing serves.
	st, err := c.UpdateDNS(ctx, api.DNSUpdate{Domain: "banger", Records: []api.DNSRecord{{Name: "a", IP: "10.213.77.5"}}})
	if err != nil {
		t.Fatal(err)
	}
	if st.Serving || st.Names != 1 || st.Error == "" {
		t.Fatalf("status without a bridge: %+v", st)
	}
}

func TestDNSServesPushedNamesOnTheBridge(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	c, _, _ := startHelper(t, ownerUID)
	ctx := context.Background()
	push := func(recs ...api.DNSRecord) api.DNSStatus {
		t.Helper()
		var st api.DNSStatus
		if err := asUser(t, ownerUID, ownerUID, func() (err error) {
			st, err = c.UpdateDNS(ctx, api.DNSUpdate{Domain: "banger", Records: recs})
			return err
		}); err != nil {
			t.Fatalf("dns.update as owner: %v", err)
		}
		return st
	}
	push(api.DNSRecord{Name: "alpha", IP: "10.213.77.2"})
	if _, err := c.NetworkUp(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.NetworkDown(context.Background()) })
	st := push(api.DNSRecord{Name: "alpha", IP: "10.213.77.2"}, api.DNSRecord{Name: "beta", IP: "10.213.77.3"})
	if !st.Serving || st.Addr != "10.213.77.1:53" || st.Names != 2 {
		t.Fatalf("after network.up: %+v", st)
	}
	r, err := query(t, "beta.banger", dns.TypeA)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "10.213.77.3" {
		t.Fatalf("beta.banger: %v", r)
	}
	r, err = query(t, "2.77.213.10.in-addr.arpa", dns.TypePTR)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Answer) != 1 || r.Answer[0].(*dns.PTR).Ptr != "alpha.banger." {
		t.Fatalf("reverse of 10.213.77.2: %v", r)
	}
	// Other names are not forwarded for the host's own queries (they come
	// from the bridge address, not from a guest).
	if r, err = query(t, "example.org", dns.TypeA); err != nil || r.Rcode != dns.RcodeRefused {
		t.Fatalf("example.org from the host: %v %v, want REFUSED", r, err)
	}
	// A removed VM stops resolving with the next push.
	push(api.DNSRecord{Name: "alpha", IP: "10.213.77.2"})
	if r, err = query(t, "beta.banger", dns.TypeA); err != nil || r.Rcode != dns.RcodeNameError {
		t.Fatalf("beta.banger after removal: %v %v", r, err)
	}
	// A new domain restarts the server on the same address.
	var st2 api.DNSStatus
	st2, err = c.UpdateDNS(ctx, api.DNSUpdate{Domain: "vm", Records: []api.DNSRecord{{Name: "alpha", IP: "10.213.77.2"}}})
	if err != nil || !st2.Serving || st2.Domain != "vm" {
		t.Fatalf("domain change: %+v %v", st2, err)
	}
	if r, err = query(t, "alpha.vm", dns.TypeA); err != nil || len(r.Answer) != 1 {
		t.Fatalf("alpha.vm: %v %v", r, err)
	}
	// network.down stops the server (and frees the port).
	if err := c.NetworkDown(ctx); err != nil {
		t.Fatal(err)
	}
	if r, err := query(t, "alpha.vm", dns.TypeA); err == nil {
		t.Fatalf("dns still answers after network.down: %v", r)
	}
	if _, err := c.NetworkUp(ctx); err != nil {
		t.Fatal(err)
	}
	if r, err = query(t, "alpha.vm", dns.TypeA); err != nil || len(r.Answer) != 1 {
		t.Fatalf("alpha.vm after network down/up: %v %v", r, err)
	}
}
