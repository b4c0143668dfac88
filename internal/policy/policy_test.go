package policy

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/model"
)

func prefixes(t *testing.T, ss ...string) []netip.Prefix {
	t.Helper()
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestEgress(t *testing.T) {
	for name, tc := range map[string]struct {
		vm   VM
		want []string
	}{
		"default: metadata only": {VM{}, []string{"169.254.0.0/16"}},
		"deny private": {VM{DenyPrivate: true},
			[]string{"169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"}},
		"user prefixes after, duplicates once": {VM{DenyPrivate: true, DenyEgress: prefixes(t, "10.0.0.0/8", "203.0.113.0/24", "169.254.0.0/16")},
			[]string{"169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "203.0.113.0/24"}},
		"user only": {VM{DenyEgress: prefixes(t, "198.51.100.7/32")}, []string{"169.254.0.0/16", "198.51.100.7/32"}},
	} {
		t.Run(name, func(t *testing.T) {
			var got []string
			for _, p := range tc.vm.Egress() {
				got = append(got, p.String())
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Egress() = %v, want %v", got, tc.want)
			}
			if err := CheckEgress(tc.vm.Egress()); err != nil {
				t.Fatalf("CheckEgress(Egress()) = %v", err)
			}
		})
	}
}

func TestCheckEgress(t *testing.T) {
	many := []netip.Prefix{Metadata()}
	for i := range MaxEgress + len(PrivateRanges()) {
		many = append(many, netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i), 0}), 24))
	}
	for name, tc := range map[string]struct {
		list    []netip.Prefix
		wantErr string
		denied  bool
	}{
		"metadata":                {list: []netip.Prefix{Metadata()}},
		"wider prefix covers it":  {list: prefixes(t, "169.0.0.0/8")},
		"everything covers it":    {list: prefixes(t, "0.0.0.0/0")},
		"empty lifts the drop":    {list: nil, wantErr: "metadata", denied: true},
		"narrower does not cover": {list: prefixes(t, "169.254.169.254/32"), wantErr: "metadata", denied: true},
		"other ranges only":       {list: prefixes(t, "10.0.0.0/8"), wantErr: "metadata", denied: true},
		"ipv6":                    {list: append(prefixes(t, "fe80::/10"), Metadata()), wantErr: "not a masked IPv4"},
		"host bits":               {list: []netip.Prefix{Metadata(), netip.PrefixFrom(netip.MustParseAddr("10.1.2.3"), 8)}, wantErr: "not a masked IPv4"},
		"invalid":                 {list: []netip.Prefix{Metadata(), {}}, wantErr: "not a masked IPv4"},
		"too many":                {list: append(many, netip.MustParsePrefix("198.19.0.0/16")), wantErr: "at most"},
		"exactly the maximum":     {list: many},
	} {
		t.Run(name, func(t *testing.T) {
			err := CheckEgress(tc.list)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("CheckEgress = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("CheckEgress = %v, want error containing %q", err, tc.wantErr)
			}
			if errors.Is(err, ErrDenied) != tc.denied {
				t.Fatalf("errors.Is(%v, ErrDenied) = %v, want %v", err, !tc.denied, tc.denied)
			}
		})
	}
}

func TestNormalize(t *testing.T) {
	for name, tc := range map[string]struct {
		in      model.VMPolicy
		want    model.VMPolicy
		wantErr string
	}{
		"empty": {},
		"canonical": {in: model.VMPolicy{DenyEgress: []string{"10.0.0.0/8", "1.2.3.4", "10.0.0.0/8"}, ForwardDeny: []int{22, 5432, 22}, DenyPrivate: true},
			want: model.VMPolicy{DenyEgress: []string{"10.0.0.0/8", "1.2.3.4/32"}, ForwardDeny: []int{22, 5432}, DenyPrivate: true}},
		"host bits":     {in: model.VMPolicy{DenyEgress: []string{"10.1.2.3/8"}}, wantErr: "did you mean 10.0.0.0/8"},
		"ipv6":          {in: model.VMPolicy{DenyEgress: []string{"2001:db8::/32"}}, wantErr: "not IPv4"},
		"garbage":       {in: model.VMPolicy{DenyEgress: []string{"evil\x1b[2J"}}, wantErr: "not an IPv4 CIDR"},
		"port zero":     {in: model.VMPolicy{ForwardDeny: []int{0}}, wantErr: "not within 1..65535"},
		"port too big":  {in: model.VMPolicy{ForwardDeny: []int{65536}}, wantErr: "not within 1..65535"},
		"too many cidr": {in: model.VMPolicy{DenyEgress: slices.Repeat([]string{"10.0.0.0/8"}, MaxEgress+1)}, wantErr: "at most"},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := Normalize(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Normalize = %+v, %v; want error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got.DenyEgress, tc.want.DenyEgress) || !slices.Equal(got.ForwardDeny, tc.want.ForwardDeny) || got.DenyPrivate != tc.want.DenyPrivate {
				t.Fatalf("Normalize = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestMergeOnlyDeniesMore(t *testing.T) {
	cfg := model.VMPolicy{DenyEgress: []string{"10.0.0.0/8"}, DenyPrivate: true, ForwardDeny: []int{22}}
	got := Merge(cfg, model.VMPolicy{DenyEgress: []string{"1.1.1.1/32"}, ForwardDeny: []int{80}})
	if !got.DenyPrivate || !slices.Equal(got.DenyEgress, []string{"10.0.0.0/8", "1.1.1.1/32"}) || !slices.Equal(got.ForwardDeny, []int{22, 80}) {
		t.Fatalf("Merge = %+v", got)
	}
	if len(cfg.DenyEgress) != 1 || len(cfg.ForwardDeny) != 1 {
		t.Fatalf("Merge changed its input: %+v", cfg)
	}
}

func TestReport(t *testing.T) {
	vm := VM{ForwardDeny: []int{5432}}
	for name, tc := range map[string]struct {
		l       Listener
		visible bool
		labels  []string
	}{
		"wildcard":            {Listener{Proto: "tcp", Address: "0.0.0.0", Port: 22}, true, nil},
		"loopback v4":         {Listener{Proto: "tcp", Address: "127.0.0.1", Port: 8080}, true, []string{LabelLoopbackOnly}},
		"loopback 127/8":      {Listener{Proto: "udp", Address: "127.0.0.53", Port: 53}, true, []string{LabelLoopbackOnly}},
		"loopback v6":         {Listener{Proto: "tcp6", Address: "::1", Port: 8080}, true, []string{LabelLoopbackOnly}},
		"v4-mapped loopback":  {Listener{Proto: "tcp6", Address: "::ffff:127.0.0.1", Port: 8080}, true, []string{LabelLoopbackOnly}},
		"guest address":       {Listener{Proto: "tcp", Address: "10.213.77.2", Port: 80}, true, nil},
		"forward denied":      {Listener{Proto: "tcp", Address: "127.0.0.1", Port: 5432}, true, []string{LabelLoopbackOnly, LabelForwardDenied}},
		"udp not forwardable": {Listener{Proto: "udp", Address: "0.0.0.0", Port: 5432}, true, nil},
		"agent hidden":        {Listener{Proto: "tcp", Address: "0.0.0.0", Port: 9999, PID: 1, Command: AgentCommand}, false, nil},
		"agent by argv0":      {Listener{Proto: "tcp", Address: "0.0.0.0", Port: 9999, PID: 77, Command: "exe", Argv0: AgentProgram}, false, nil},
		"agent by full path":  {Listener{Proto: "tcp", Address: "0.0.0.0", Port: 9999, PID: 77, Command: "x", Argv0: "/usr/local/lib/banger/" + AgentProgram}, false, nil},
		"agent lookalike":     {Listener{Proto: "tcp", Address: "0.0.0.0", Port: 9999, PID: 77, Command: "banger", Argv0: AgentProgram + "2"}, true, nil},
		"pid 1 not the agent": {Listener{Proto: "tcp", Address: "0.0.0.0", Port: 22, PID: 1, Command: "systemd"}, true, nil},
		"garbage address":     {Listener{Proto: "tcp", Address: "\x1b[31m", Port: 1}, true, nil},
	} {
		t.Run(name, func(t *testing.T) {
			r := vm.Report(tc.l)
			if r.Visible != tc.visible || !slices.Equal(r.Labels, tc.labels) {
				t.Fatalf("Report(%+v) = %+v, want visible %v labels %v", tc.l, r, tc.visible, tc.labels)
			}
			if !r.Visible && r.Reason == "" {
				t.Fatalf("hidden listener without a reason: %+v", r)
			}
		})
	}
}

func TestForwardable(t *testing.T) {
	vm := VM{Name: "dev", Addr: netip.MustParseAddr("10.213.77.5"), ForwardDeny: []int{5432}, DenyPrivate: true}
	for name, tc := range map[string]struct {
		host string
		port int
		rule string // "" ok; "invalid" a plain error
	}{
		"loopback":              {"127.0.0.1", 8080, ""},
		"loopback v6":           {"::1", 8080, ""},
		"own address":           {"10.213.77.5", 8080, ""},
		"denied port":           {"127.0.0.1", 5432, RuleForwardDeny},
		"denied port own addr":  {"10.213.77.5", 5432, RuleForwardDeny},
		"another guest":         {"10.213.77.6", 80, RuleGuestOnly},
		"metadata":              {"169.254.169.254", 80, RuleGuestOnly},
		"outside":               {"192.0.2.1", 443, RuleGuestOnly},
		"port 0":                {"127.0.0.1", 0, "invalid"},
		"port too big":          {"127.0.0.1", 70000, "invalid"},
		"unspecified":           {"0.0.0.0", 80, "invalid"},
		"multicast":             {"224.0.0.1", 80, "invalid"},
		"mapped loopback":       {"::ffff:127.0.0.1", 80, ""},
		"mapped other guest v6": {"::ffff:10.213.77.6", 80, RuleGuestOnly},
	} {
		t.Run(name, func(t *testing.T) {
			err := vm.Forwardable(netip.MustParseAddr(tc.host), tc.port)
			var d *Denied
			switch tc.rule {
			case "":
				if err != nil {
					t.Fatalf("Forwardable = %v, want nil", err)
				}
			case "invalid":
				if err == nil || errors.As(err, &d) {
					t.Fatalf("Forwardable = %v, want a plain invalid-argument error", err)
				}
			default:
				if !errors.As(err, &d) || d.Rule != tc.rule || !errors.Is(err, ErrDenied) {
					t.Fatalf("Forwardable = %v, want denied by %s", err, tc.rule)
				}
				if d.Hint == "" || !strings.Contains(err.Error(), tc.rule) {
					t.Fatalf("refusal %q does not name its rule and how to override", err)
				}
			}
		})
	}
	// Without a lease only loopback is the guest.
	if err := (VM{Name: "x"}).Forwardable(netip.MustParseAddr("10.213.77.5"), 80); !errors.Is(err, ErrDenied) {
		t.Fatalf("no-address vm forwarding to a subnet address = %v, want denied", err)
	}
}

func TestFromModel(t *testing.T) {
	v, err := FromModel(model.VM{Name: "dev", IP: "10.213.77.9", Policy: model.VMPolicy{DenyEgress: []string{"203.0.113.0/24"}, ForwardDeny: []int{22}}})
	if err != nil || v.Addr != netip.MustParseAddr("10.213.77.9") || len(v.DenyEgress) != 1 || !slices.Equal(v.ForwardDeny, []int{22}) {
		t.Fatalf("FromModel = %+v, %v", v, err)
	}
	if _, err := FromModel(model.VM{Name: "bad", Policy: model.VMPolicy{DenyEgress: []string{"nope"}}}); err == nil || !strings.Contains(err.Error(), `vm "bad"`) {
		t.Fatalf("FromModel of a damaged row = %v, want an error naming the vm", err)
	}
}
