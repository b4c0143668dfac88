package hostnat

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/bangerdev/banger/internal/policy"
	"github.com/bangerdev/banger/internal/testutil"
)

// TestEgressPolicyTraffic attacks a VM's egress policy with real packets,
// inside the test's own network namespace:
//
//	guest "deny" (deny-private + 203.0.113.0/24) ─┐
//	                                              ├─ banger0 ── host (172.16.9.2 on up0) ── "outside" ns
//	guest "open" (defaults)               ────────┘            198.51.100.1, 192.168.50.1, 203.0.113.1
//
// The open guest is the positive control for every destination: what the
// denying guest cannot reach is reachable, so a drop is the policy's.
func TestEgressPolicyTraffic(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	ctx := context.Background()
	n := mustNew(t, Config{})
	if err := n.Up(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Teardown(context.Background()) })
	gw := n.Plan().Gateway

	outside := newNS(t)
	up := vethInto(t, "up0", outside, "eth0")
	for _, a := range []string{"198.51.100.2/24", "172.16.9.2/24"} {
		mustAddr(t, netlink.AddrAdd(up, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix(a))}))
	}
	mustAddr(t, netlink.LinkSetUp(up))
	oh := handleAt(t, outside)
	oeth, err := oh.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"198.51.100.1/24", "192.168.50.1/32", "203.0.113.1/32"} {
		mustAddr(t, oh.AddrAdd(oeth, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix(a))}))
	}
	mustAddr(t, oh.LinkSetUp(oeth))
	for _, dst := range []string{"192.168.50.1/32", "203.0.113.1/32"} {
		mustAddr(t, netlink.RouteAdd(&netlink.Route{LinkIndex: up.Attrs().Index,
			Dst: ipNet(netip.MustParsePrefix(dst)), Gw: net.ParseIP("198.51.100.1")}))
	}

	type guest struct {
		ns   netns.NsHandle
		addr string
	}
	mk := func(tap, addr string, deny []netip.Prefix) guest {
		g := guest{ns: newNS(t), addr: addr}
		guestLink(t, g.ns, tap, netip.PrefixFrom(netip.MustParseAddr(addr), 24), gw)
		eth, err := handleAt(t, g.ns).LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		tg := TapGuest{MAC: eth.Attrs().HardwareAddr, IP: netip.MustParseAddr(addr), Shared: true, DenyEgress: deny}
		if err := n.checkGuest(tg); err != nil {
			t.Fatal(err)
		}
		if err := n.guardTap(t.Context(), tap, tg); err != nil {
			t.Fatal(err)
		}
		return g
	}
	denyVM := policy.VM{DenyPrivate: true, DenyEgress: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}}
	deny := mk("bt-e1", "10.213.77.21", denyVM.Egress())
	open := mk("bt-e2", "10.213.77.22", nil)

	gwLn := listenIn(t, netns.None(), net.JoinHostPort(gw.String(), "0"))
	hostPriv := listenIn(t, netns.None(), "172.16.9.2:0")
	outLn := listenIn(t, outside, "0.0.0.0:0")
	openLn := listenIn(t, open.ns, "10.213.77.22:0")
	port := func(ln net.Listener) string { _, p, _ := net.SplitHostPort(ln.Addr().String()); return p }

	// Allowed for both: the gateway (inside 10/8, yet the own subnet is
	// accepted first), and an outside address no rule denies.
	for _, g := range []guest{deny, open} {
		if peer := dialFrom(t, g.ns, gw.String()+":"+port(gwLn), gwLn); peer != g.addr {
			t.Errorf("gateway saw %s as %s", g.addr, peer)
		}
		if peer := dialFrom(t, g.ns, "198.51.100.1:"+port(outLn), outLn); peer != "198.51.100.2" {
			t.Errorf("outside saw %s as %s, want the masquerade", g.addr, peer)
		}
	}
	// Shared guests still reach each other: a private-range deny does not
	// cut the VM's own subnet.
	if peer := dialFrom(t, deny.ns, "10.213.77.22:"+port(openLn), openLn); peer != deny.addr {
		t.Errorf("shared guest saw the denying guest as %s", peer)
	}

	// The denied destinations: routed (192.168.50.1, 203.0.113.1) and the
	// host's own private address (172.16.9.2, the input path). The open
	// guest reaches each; the denying guest reaches none.
	for _, c := range []struct {
		addr string
		ln   net.Listener
	}{{"192.168.50.1", outLn}, {"203.0.113.1", outLn}, {"172.16.9.2", hostPriv}} {
		target := c.addr + ":" + port(c.ln)
		if peer := dialFrom(t, open.ns, target, c.ln); peer == "" {
			t.Fatalf("control: open guest did not reach %s", target)
		}
		if err := tryDial(deny.ns, target); err == nil {
			t.Errorf("the denying guest reached %s", target)
		}
		if conn, err := acceptWithin(c.ln, 300*time.Millisecond); err == nil {
			t.Errorf("%s accepted a connection from %s despite the policy", target, conn.RemoteAddr())
			conn.Close()
		}
	}
	// One-way: a datagram to a denied address never arrives, while one from
	// the open guest does (the test can fail).
	udp := listenUDPIn(t, outside, "203.0.113.1:0")
	sendUDP(t, deny.ns, deny.addr, udp.LocalAddr().String(), "denied")
	sendUDP(t, open.ns, open.addr, udp.LocalAddr().String(), "control")
	if got := strings.Join(readUDP(t, udp, 1, 3*time.Second), "|"); got != "control from 198.51.100.2" {
		t.Errorf("denied destination received %q, want only the control", got)
	}
}

// TestEgressPolicyRefused: a tap request whose egress list would lift the
// metadata drop, or carries what is not a masked IPv4 prefix, is refused
// before anything is made: no tap, no rules.
func TestEgressPolicyRefused(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	ctx := context.Background()
	n := mustNew(t, Config{})
	if err := n.Up(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Teardown(context.Background()) })
	before := nftList(t, "bridge")
	for name, deny := range map[string][]netip.Prefix{
		"no metadata":      {netip.MustParsePrefix("10.0.0.0/8")},
		"narrower":         {netip.MustParsePrefix("169.254.169.254/32")},
		"ipv6":             {policy.Metadata(), netip.MustParsePrefix("fd00::/8")},
		"host bits":        {policy.Metadata(), netip.PrefixFrom(netip.MustParseAddr("192.0.2.9"), 24)},
		"zero prefix only": {{}},
	} {
		g := testGuest("bt-r")
		g.DenyEgress = deny
		err := n.CreateTap(ctx, "bt-r", 1000, 1000, g)
		if !errors.Is(err, ErrInvalidGuest) {
			t.Errorf("%s: CreateTap = %v, want ErrInvalidGuest", name, err)
		}
	}
	if _, err := netlink.LinkByName("bt-r"); err == nil {
		t.Error("a refused CreateTap made the tap")
	}
	if after := nftList(t, "bridge"); after != before {
		t.Errorf("a refused CreateTap changed the bridge table:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// Positive control: the same request with the metadata range is made.
	g := testGuest("bt-r")
	g.DenyEgress = []netip.Prefix{netip.MustParsePrefix("169.0.0.0/8")}
	if err := n.CreateTap(ctx, "bt-r", 1000, 1000, g); err != nil {
		t.Fatalf("CreateTap with a covering prefix: %v", err)
	}
	if out := nftList(t, "bridge"); !strings.Contains(out, `iifname "bt-r" ip daddr 169.0.0.0/8 drop`) {
		t.Errorf("bridge table lacks bt-r's egress drop:\n%s", out)
	}
}

// TestEgressDenyAllCutsTheGateway attacks the policy [mcp] allow_network =
// false gives a VM (0.0.0.0/0 denied, isolated) with real packets in the
// test's own namespace: that guest reaches neither the host's gateway
// address nor an outside one, by TCP or UDP, while a default guest (the
// control) reaches both.
func TestEgressDenyAllCutsTheGateway(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	n := mustNew(t, Config{})
	if err := n.Up(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Teardown(context.Background()) })
	gw := n.Plan().Gateway

	outside := newNS(t)
	up := vethInto(t, "up0", outside, "eth0")
	mustAddr(t, netlink.AddrAdd(up, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("198.51.100.2/24"))}))
	mustAddr(t, netlink.LinkSetUp(up))
	oh := handleAt(t, outside)
	oeth, err := oh.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	mustAddr(t, oh.AddrAdd(oeth, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("198.51.100.1/24"))}))
	mustAddr(t, oh.LinkSetUp(oeth))

	mk := func(tap, addr string, deny []netip.Prefix) netns.NsHandle {
		ns := newNS(t)
		guestLink(t, ns, tap, netip.PrefixFrom(netip.MustParseAddr(addr), 24), gw)
		eth, err := handleAt(t, ns).LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		tg := TapGuest{MAC: eth.Attrs().HardwareAddr, IP: netip.MustParseAddr(addr), DenyEgress: deny}
		if err := n.checkGuest(tg); err != nil {
			t.Fatal(err)
		}
		if err := n.guardTap(t.Context(), tap, tg); err != nil {
			t.Fatal(err)
		}
		return ns
	}
	all := policy.VM{DenyEgress: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}}
	closed := mk("bt-d1", "10.213.77.31", all.Egress())
	open := mk("bt-d2", "10.213.77.32", nil)
	if out := nftList(t, "bridge"); strings.Contains(out, `iifname "bt-d1" ip daddr 10.213.`) || !strings.Contains(out, `iifname "bt-d2" ip daddr 10.213.`) {
		t.Errorf("the subnet accept must be left out for the deny-all tap only:\n%s", out)
	}

	gwLn := listenIn(t, netns.None(), net.JoinHostPort(gw.String(), "0"))
	outLn := listenIn(t, outside, "0.0.0.0:0")
	port := func(ln net.Listener) string { _, p, _ := net.SplitHostPort(ln.Addr().String()); return p }
	for _, c := range []struct {
		addr string
		ln   net.Listener
	}{{gw.String(), gwLn}, {"198.51.100.1", outLn}} {
		target := net.JoinHostPort(c.addr, port(c.ln))
		if peer := dialFrom(t, open, target, c.ln); peer == "" {
			t.Fatalf("control: the default guest did not reach %s", target)
		}
		if err := tryDial(closed, target); err == nil {
			t.Errorf("the deny-all guest reached %s", target)
		}
		if conn, err := acceptWithin(c.ln, 300*time.Millisecond); err == nil {
			t.Errorf("%s accepted a connection from %s despite the policy", target, conn.RemoteAddr())
			conn.Close()
		}
	}
	udp := listenUDPIn(t, netns.None(), net.JoinHostPort(gw.String(), "0"))
	sendUDP(t, closed, "10.213.77.31", udp.LocalAddr().String(), "denied")
	sendUDP(t, open, "10.213.77.32", udp.LocalAddr().String(), "control")
	if got := strings.Join(readUDP(t, udp, 1, 3*time.Second), "|"); got != "control from 10.213.77.32" {
		t.Errorf("the gateway received %q, want only the control", got)
	}
}
