package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/bangerdev/banger/internal/testutil"
)

// TestEgressPolicyOnRealVM: a real guest, root in its VM, tries to reach a
// destination its VM was created with --deny-egress for, and the metadata
// address, both of which answer on the host (inside the test's own network
// namespace); an address no rule denies is the positive control on the same
// path. The denied listeners must never see a connection.
func TestEgressPolicyOnRealVM(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := vmInstance(t)
	// Host addresses on the namespace's own loopback (no dummy module
	// here): the guest's packets to them take the host's input path.
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"198.51.100.1/32", "192.0.2.1/32", "169.254.169.254/32"} {
		p := netip.MustParsePrefix(a)
		if err := netlink.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}}); err != nil {
			t.Fatalf("add %s: %v", a, err)
		}
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	listen := func(addr string) net.Listener {
		ln, err := net.Listen("tcp4", addr+":0")
		if err != nil {
			t.Fatalf("listen on %s: %v", addr, err)
		}
		t.Cleanup(func() { ln.Close() })
		return ln
	}
	allowed, denied, metadata := listen("198.51.100.1"), listen("192.0.2.1"), listen("169.254.169.254")
	accepted := func(ln net.Listener, d time.Duration) bool {
		_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(d))
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
		return err == nil
	}

	in.startVM("walled", "--deny-egress", "192.0.2.0/24")
	vm := in.inspect("walled")
	if strings.Join(vm.Policy.DenyEgress, ",") != "192.0.2.0/24" {
		t.Fatalf("stored policy %+v, want deny_egress 192.0.2.0/24", vm.Policy)
	}
	connect := func(ln net.Listener) (string, string, int) {
		return in.run("banger", "vm", "exec", "walled", "--", "timeout", "5", "bash", "-c",
			fmt.Sprintf("exec 3<>/dev/tcp/%s && echo connected", strings.Replace(ln.Addr().String(), ":", "/", 1)))
	}
	// Positive control: the same path to an address no rule denies.
	if out, errOut, code := connect(allowed); code != 0 || !strings.Contains(out, "connected") {
		t.Fatalf("control: guest could not reach %s: exit %d %q %q", allowed.Addr(), code, out, errOut)
	}
	if !accepted(allowed, 5*time.Second) {
		t.Fatal("control: the allowed listener saw no connection")
	}
	for _, ln := range []net.Listener{denied, metadata} {
		if out, _, code := connect(ln); code == 0 || strings.Contains(out, "connected") {
			t.Errorf("guest reached %s despite its policy: exit %d %q", ln.Addr(), code, out)
		}
		if accepted(ln, 500*time.Millisecond) {
			t.Errorf("%s accepted a connection from the walled guest", ln.Addr())
		}
	}
}
