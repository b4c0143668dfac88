package guestnet

import (
	"errors"
	"net/netip"
	"regexp"
	"testing"
)

func TestNewPlan(t *testing.T) {
	p, err := NewPlan(DefaultSubnet)
	if err != nil {
		t.Fatalf("default subnet: %v", err)
	}
	if p.Gateway != netip.MustParseAddr("10.213.77.1") {
		t.Errorf("gateway = %s", p.Gateway)
	}
	if p.Broadcast() != netip.MustParseAddr("10.213.77.255") {
		t.Errorf("broadcast = %s", p.Broadcast())
	}
	first, last := p.GuestRange()
	if first != netip.MustParseAddr("10.213.77.2") || last != netip.MustParseAddr("10.213.77.254") {
		t.Errorf("guest range = %s-%s", first, last)
	}

	p29, err := NewPlan(netip.MustParsePrefix("192.168.50.8/29"))
	if err != nil {
		t.Fatal(err)
	}
	if p29.Gateway.String() != "192.168.50.9" || p29.Broadcast().String() != "192.168.50.15" {
		t.Errorf("/29 plan: gateway %s broadcast %s", p29.Gateway, p29.Broadcast())
	}
}

func TestValidateSubnetRejects(t *testing.T) {
	for _, s := range []string{
		"10.213.77.5/24",   // host bits
		"8.8.8.0/24",       // public
		"10.0.0.0/8",       // too wide
		"10.0.0.0/30",      // too narrow
		"172.32.0.0/24",    // just outside 172.16/12
		"fd00::/64",        // IPv6
		"169.254.0.0/24",   // link-local
		"127.0.0.0/24",     // loopback
		"100.128.0.0/24",   // just outside CGNAT
		"192.169.0.0/24",   // just outside 192.168/16
		"0.0.0.0/24",       // unspecified
		"224.0.0.0/24",     // multicast
		"255.255.255.0/24", // broadcast
	} {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := ValidateSubnet(p); !errors.Is(err, ErrInvalidSubnet) {
			t.Errorf("ValidateSubnet(%s) = %v, want ErrInvalidSubnet", s, err)
		}
	}
	if err := ValidateSubnet(netip.Prefix{}); !errors.Is(err, ErrInvalidSubnet) {
		t.Errorf("zero prefix accepted: %v", err)
	}
	for _, s := range []string{"172.16.5.0/24", "192.168.0.0/16", "100.100.0.0/24"} {
		if err := ValidateSubnet(netip.MustParsePrefix(s)); err != nil {
			t.Errorf("ValidateSubnet(%s) = %v", s, err)
		}
	}
}

func TestTapName(t *testing.T) {
	valid := regexp.MustCompile(`^bt-[0-9a-f]{12}$`)
	seen := map[string]string{}
	for _, id := range []string{"", "a", "01HZX3K8Q4", "vm with spaces", "../../etc", "01HZX3K8Q5"} {
		n := TapName(id)
		if !valid.MatchString(n) || len(n) > 15 {
			t.Errorf("TapName(%q) = %q: not a valid banger tap name", id, n)
		}
		if TapName(id) != n {
			t.Errorf("TapName(%q) not deterministic", id)
		}
		if other, dup := seen[n]; dup {
			t.Errorf("TapName(%q) = TapName(%q) = %q", id, other, n)
		}
		seen[n] = id
	}
}

func TestMACForVM(t *testing.T) {
	a, b := MACForVM("vm-a"), MACForVM("vm-b")
	if a.String() != MACForVM("vm-a").String() {
		t.Error("MAC not deterministic")
	}
	if a.String() == b.String() {
		t.Error("two VMs share a MAC")
	}
	for _, id := range []string{"vm-a", "vm-b", "x", ""} {
		m := MACForVM(id)
		if len(m) != 6 {
			t.Fatalf("MAC %s has %d bytes", m, len(m))
		}
		if m[0]&0x02 == 0 {
			t.Errorf("MAC %s is not locally administered", m)
		}
		if m[0]&0x01 != 0 {
			t.Errorf("MAC %s is multicast", m)
		}
	}
}

func TestGuestConfigNetwork(t *testing.T) {
	plan, err := NewPlan(DefaultSubnet)
	if err != nil {
		t.Fatal(err)
	}
	gn, err := GuestConfigNetwork(netip.MustParseAddr("10.213.77.9"), plan, nil)
	if err != nil {
		t.Fatal(err)
	}
	if gn.Address.String() != "10.213.77.9/24" || gn.Gateway != plan.Gateway {
		t.Errorf("got %+v", gn)
	}
	if len(gn.DNS) != 1 || gn.DNS[0] != plan.Gateway {
		t.Errorf("default DNS = %v, want the gateway", gn.DNS)
	}

	custom := []netip.Addr{netip.MustParseAddr("10.213.77.1"), netip.MustParseAddr("9.9.9.9")}
	gn, err = GuestConfigNetwork(netip.MustParseAddr("10.213.77.254"), plan, custom)
	if err != nil {
		t.Fatal(err)
	}
	custom[1] = netip.MustParseAddr("1.1.1.1") // the result must not alias the argument
	if len(gn.DNS) != 2 || gn.DNS[1].String() != "9.9.9.9" {
		t.Errorf("custom DNS = %v", gn.DNS)
	}

	for _, bad := range []string{"10.213.77.0", "10.213.77.1", "10.213.77.255", "10.213.78.2", "::1"} {
		_, err := GuestConfigNetwork(netip.MustParseAddr(bad), plan, nil)
		if !errors.Is(err, ErrOutOfPool) {
			t.Errorf("lease %s: err = %v, want ErrOutOfPool", bad, err)
		}
	}
	if _, err := GuestConfigNetwork(netip.MustParseAddr("10.213.77.3"), plan, []netip.Addr{{}}); err == nil {
		t.Error("invalid DNS server accepted")
	}
}
