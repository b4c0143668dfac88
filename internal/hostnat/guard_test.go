package hostnat

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/bangerdev/banger/internal/testutil"
)

func setForwarding(t *testing.T, v string) {
	t.Helper()
	if err := os.WriteFile(ipForwardPath, []byte(v+"\n"), 0o644); err != nil {
		t.Fatalf("set ip_forward in the test namespace: %v", err)
	}
}

func sysctl6(t *testing.T, dev, key string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc/sys/net/ipv6/conf", dev, key))
	if err != nil {
		t.Fatalf("read ipv6 %s of %s: %v", key, dev, err)
	}
	return strings.TrimSpace(string(b))
}

func tableExists(t *testing.T, name string, fam nftables.TableFamily) bool {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTablesOfFamily(fam)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if tb.Name == name {
			return true
		}
	}
	return false
}

func nftList(t *testing.T, family string) string {
	t.Helper()
	nft := testutil.RequireBinary(t, "nft")
	out, err := exec.Command(nft, "list", "table", family, DefaultTable).CombinedOutput()
	if err != nil {
		t.Fatalf("nft list table %s: %v\n%s", family, err, out)
	}
	return string(out)
}

// TestGuardRulesAndForwardingRecord: the inet table replaces an older ip
// one, IPv6 is off on the bridge and taps, each tap gets exactly its own
// source rules (replaced, not added, when it is made again), and the
// ip_forward value found before Up survives a restarted helper and comes
// back on Teardown; with forwarding already on, nothing is recorded or
// changed.
func TestGuardRulesAndForwardingRecord(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	ctx := context.Background()
	stateDir := filepath.Join(t.TempDir(), "run")
	n := mustNew(t, Config{StateDir: stateDir})

	// An ip-family table as an older banger left it.
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	c.AddTable(n.legacyTable())
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	setForwarding(t, "0")
	if err := n.Up(ctx); err != nil {
		t.Fatalf("Up: %v", err)
	}
	if tableExists(t, DefaultTable, nftables.TableFamilyIPv4) {
		t.Error("the old ip-family table survived Up")
	}
	if !tableExists(t, DefaultTable, nftables.TableFamilyINet) || !tableExists(t, DefaultTable, nftables.TableFamilyBridge) {
		t.Fatal("Up did not make the inet and bridge tables")
	}
	for key, want := range map[string]string{"disable_ipv6": "1", "accept_ra": "0"} {
		if got := sysctl6(t, DefaultBridge, key); got != want {
			t.Errorf("bridge ipv6 %s = %s, want %s", key, got, want)
		}
	}

	ga, gb := testGuest("bt-a"), testGuest("bt-b")
	gb.Shared = true
	if err := n.CreateTap(ctx, "bt-a", 1000, 1000, ga); err != nil {
		t.Fatal(err)
	}
	if err := n.CreateTap(ctx, "bt-b", 1000, 1000, gb); err != nil {
		t.Fatal(err)
	}
	// Made again with another address: the old rules must go.
	old := ga.IP
	ga.IP = netip.MustParseAddr("10.213.77.200")
	if err := n.CreateTap(ctx, "bt-a", 1000, 1000, ga); err != nil {
		t.Fatal(err)
	}
	st, err := n.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantBridge := map[string]int{ChainPrerouting: 2, ChainForward: 1, ChainTaps: 18, ChainIsolation: 2, ChainOutput: 1}
	if !sameCounts(st.BridgeChains, wantBridge) {
		t.Errorf("bridge chains = %v, want %v", st.BridgeChains, wantBridge)
	}
	for _, ts := range st.Taps {
		if ts.SourceRules != 9 || !ts.IPv6Disabled || ts.Isolated != (ts.Name == "bt-a") {
			t.Errorf("tap state %+v: want 9 source rules (7 + own subnet + metadata), ipv6 off, isolated only for bt-a", ts)
		}
		if got := sysctl6(t, ts.Name, "disable_ipv6"); got != "1" {
			t.Errorf("tap %s disable_ipv6 = %s", ts.Name, got)
		}
	}
	if st.ForwardingWas != "0" || !st.Forwarding {
		t.Errorf("forwarding %v, was %q; want on, was 0", st.Forwarding, st.ForwardingWas)
	}
	if ch := strings.Join(st.Changes(), "\n"); !strings.Contains(ch, "ip_forward set to 1 (was 0") || !strings.Contains(ch, "bridge banger0 created") {
		t.Errorf("Changes() = %s", ch)
	}
	out := nftList(t, "bridge")
	for _, want := range []string{
		`iifname "bt-a" ether saddr != ` + ga.MAC.String() + ` drop`,
		`iifname "bt-a" arp saddr ip != 10.213.77.200 drop`,
		`iifname "bt-a" ip saddr != 10.213.77.200 drop`,
		`iifname "bt-a" ip daddr 10.213.77.0/24 accept`,
		`iifname "bt-a" ip daddr 169.254.0.0/16 drop`,
		`iifname "bt-a" oifname "bt-*" drop`,
		`iifname "bt-b" arp saddr ether != ` + gb.MAC.String() + ` drop`,
		`iifname "bt-*" drop`,
		`oifname "bt-*" ip saddr 10.213.77.0/24 ip saddr != 10.213.77.1 drop`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("bridge table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, old.String()+" drop") {
		t.Errorf("bt-a's old address %s still has rules:\n%s", old, out)
	}
	if strings.Contains(out, `iifname "bt-b" oifname`) {
		t.Errorf("shared tap bt-b is isolated:\n%s", out)
	}

	if err := n.DeleteTap(ctx, "bt-a"); err != nil {
		t.Fatal(err)
	}
	if out := nftList(t, "bridge"); strings.Contains(out, `"bt-a"`) {
		t.Errorf("DeleteTap left bt-a's rules:\n%s", out)
	}

	// A restarted helper still knows what to restore.
	n2 := mustNew(t, Config{StateDir: stateDir})
	if err := n2.Teardown(ctx); err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	if got := readForwarding(t); got != "0" {
		t.Errorf("ip_forward = %s after a restarted helper's Teardown, want the prior 0", got)
	}
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyINet, nftables.TableFamilyBridge, nftables.TableFamilyIPv4} {
		if tableExists(t, DefaultTable, fam) {
			t.Errorf("Teardown left table family %v", fam)
		}
	}
	if ents, _ := os.ReadDir(stateDir); len(ents) != 0 {
		t.Errorf("Teardown left records %v", ents)
	}

	// Forwarding already on: banger records nothing and leaves it on.
	setForwarding(t, "1")
	if err := n2.Up(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _ := n2.State(ctx); st.ForwardingWas != "" {
		t.Errorf("recorded %q though forwarding was already on", st.ForwardingWas)
	}
	if err := n2.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
	if got := readForwarding(t); got != "1" {
		t.Errorf("ip_forward = %s after Teardown, want the prior 1", got)
	}
}

// TestForwardingRecordDirMustBeRootOnly: a state dir another user could
// write (where a planted record would choose what root writes into
// ip_forward) is refused before anything changes.
func TestForwardingRecordDirMustBeRootOnly(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	dir := filepath.Join(t.TempDir(), "run")
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	setForwarding(t, "0")
	n := mustNew(t, Config{StateDir: dir})
	if _, err := n.EnsureForwarding(t.Context()); err == nil {
		t.Fatal("EnsureForwarding accepted a world-writable state dir")
	}
	if got := readForwarding(t); got != "0" {
		t.Errorf("ip_forward = %s after a refused EnsureForwarding, want 0 unchanged", got)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	if _, err := n.EnsureForwarding(t.Context()); err == nil {
		t.Fatal("EnsureForwarding accepted a state dir owned by uid 1000")
	}
	if got := readForwarding(t); got != "0" {
		t.Errorf("ip_forward = %s after a refused EnsureForwarding, want 0 unchanged", got)
	}
}

// TestGuardTraffic sends real frames through the bridge filter: guest
// namespaces on veths named like taps stand in for VMs.
func TestGuardTraffic(t *testing.T) {
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

	type guest struct {
		ns   netns.NsHandle
		tap  string
		addr netip.Addr
	}
	mk := func(tap, addr string, shared bool) guest {
		g := guest{ns: newNS(t), tap: tap, addr: netip.MustParseAddr(addr)}
		guestLink(t, g.ns, tap, netip.PrefixFrom(g.addr, 24), gw)
		eth, err := handleAt(t, g.ns).LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		if err := n.guardTap(t.Context(), tap, TapGuest{MAC: eth.Attrs().HardwareAddr, IP: g.addr, Shared: shared}); err != nil {
			t.Fatal(err)
		}
		return g
	}
	iso1 := mk("bt-g1", "10.213.77.11", false)
	iso2 := mk("bt-g2", "10.213.77.12", false)
	sh3 := mk("bt-g3", "10.213.77.13", true)
	sh4 := mk("bt-g4", "10.213.77.14", true)

	gwLn := listenIn(t, netns.None(), net.JoinHostPort(gw.String(), "0"))
	gwAddr := gwLn.Addr().String()
	listen := func(g guest) (net.Listener, string) {
		ln := listenIn(t, g.ns, net.JoinHostPort(g.addr.String(), "0"))
		return ln, ln.Addr().String()
	}
	_, iso2Addr := listen(iso2)
	_, iso1Addr := listen(iso1)
	sh4Ln, sh4Addr := listen(sh4)

	// Positive controls: every guest reaches the gateway; shared guests
	// reach each other.
	for _, g := range []guest{iso1, iso2, sh3, sh4} {
		if peer := dialFrom(t, g.ns, gwAddr, gwLn); peer != g.addr.String() {
			t.Errorf("gateway saw %s as %s", g.tap, peer)
		}
	}
	if peer := dialFrom(t, sh3.ns, sh4Addr, sh4Ln); peer != "10.213.77.13" {
		t.Errorf("shared guest 4 saw guest 3 as %s", peer)
	}
	// Isolation: no isolated guest talks to any other guest.
	for _, c := range []struct {
		from guest
		to   string
	}{{iso1, iso2Addr}, {sh3, iso1Addr}, {iso1, sh4Addr}} {
		if err := tryDial(c.from.ns, c.to); err == nil {
			t.Errorf("%s reached %s across isolation", c.from.tap, c.to)
		}
	}

	// Isolation cannot be routed around through the host: iso1 sends its
	// packets for iso2 to the gateway's MAC.
	mustAddr(t, handleAt(t, iso1.ns).RouteAdd(&netlink.Route{LinkIndex: linkIndexIn(t, iso1.ns, "eth0"),
		Dst: ipNet(netip.MustParsePrefix("10.213.77.12/32")), Gw: gw.AsSlice()}))
	if err := tryDial(iso1.ns, iso2Addr); err == nil {
		t.Error("iso1 reached iso2 routed through the host")
	}
	// One-way traffic needs no answer: a datagram routed so must not arrive.
	iso2UDP := listenUDPIn(t, iso2.ns, "10.213.77.12:0")
	sendUDP(t, iso1.ns, "10.213.77.11", iso2UDP.LocalAddr().String(), "routed-around")
	if got := readUDP(t, iso2UDP, 1, time.Second); len(got) != 0 {
		t.Errorf("isolated iso2 received %q routed through the host", got)
	}

	// Forged sources, over UDP so a forged datagram needs no answer to
	// arrive: each forged send is followed by a legitimate one, which must
	// arrive (the test can fail), while the forged ones never may.
	udp := listenUDPIn(t, netns.None(), net.JoinHostPort(gw.String(), "0"))
	udpAddr := udp.LocalAddr().String()
	h1 := handleAt(t, iso1.ns)
	eth1, err := h1.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	sendUDP(t, iso1.ns, "10.213.77.11", udpAddr, "legit-1")
	for _, forged := range []string{"10.213.77.99", "10.213.77.12"} {
		mustAddr(t, h1.AddrAdd(eth1, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(netip.MustParseAddr(forged), 32))}))
		sendUDP(t, iso1.ns, forged, udpAddr, "forged-ip-"+forged)
		if err := tryDialSrc(iso1.ns, forged, gwAddr); err == nil {
			t.Errorf("a connection from forged source %s reached the gateway", forged)
		}
	}
	sendUDP(t, iso1.ns, "10.213.77.11", udpAddr, "legit-2")
	// Forged MAC: the same guest with another hardware address.
	realMAC := eth1.Attrs().HardwareAddr
	mustAddr(t, h1.LinkSetHardwareAddr(eth1, net.HardwareAddr{0x02, 0x66, 0x66, 0x66, 0x66, 0x66}))
	// A new address flushes the guest's neighbours; a static entry for the
	// gateway lets the forged frame leave without an ARP exchange.
	brLink, err := netlink.LinkByName(DefaultBridge)
	if err != nil {
		t.Fatal(err)
	}
	mustAddr(t, h1.NeighSet(&netlink.Neigh{LinkIndex: eth1.Attrs().Index, Family: netlink.FAMILY_V4,
		State: netlink.NUD_PERMANENT, IP: gw.AsSlice(), HardwareAddr: brLink.Attrs().HardwareAddr}))
	sendUDP(t, iso1.ns, "10.213.77.11", udpAddr, "forged-mac")
	mustAddr(t, h1.LinkSetHardwareAddr(eth1, realMAC))
	sendUDP(t, iso1.ns, "10.213.77.11", udpAddr, "legit-3")

	got := readUDP(t, udp, 3, 3*time.Second)
	want := "legit-1 from 10.213.77.11|legit-2 from 10.213.77.11|legit-3 from 10.213.77.11"
	if strings.Join(got, "|") != want {
		t.Errorf("gateway received %q, want only %q", got, want)
	}
	if c, err := acceptWithin(gwLn, 500*time.Millisecond); err == nil {
		t.Errorf("the gateway accepted a forged connection from %s", c.RemoteAddr())
		c.Close()
	}
}

func listenUDPIn(t *testing.T, ns netns.NsHandle, addr string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := onThreadIn(ns, func() error {
		pc, err := net.ListenPacket("udp4", addr)
		if err == nil {
			c = pc.(*net.UDPConn)
		}
		return err
	})
	if err != nil {
		t.Fatalf("listen udp on %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sendUDP sends msg from src inside ns.
func sendUDP(t *testing.T, ns netns.NsHandle, src, addr, msg string) {
	t.Helper()
	err := onThreadIn(ns, func() error {
		d := net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("udp4", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte(msg))
		return err
	})
	if err != nil {
		t.Fatalf("send udp from %s: %v", src, err)
	}
	time.Sleep(100 * time.Millisecond) // keep the order of arrival readable
}

// readUDP collects "msg from ip" until want datagrams came and a quiet
// period passed, or d ran out.
func readUDP(t *testing.T, c *net.UDPConn, want int, d time.Duration) []string {
	t.Helper()
	var got []string
	deadline := time.Now().Add(d)
	buf := make([]byte, 512)
	for time.Now().Before(deadline) {
		wait := deadline
		if len(got) >= want {
			wait = time.Now().Add(300 * time.Millisecond)
		}
		_ = c.SetReadDeadline(wait)
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			if len(got) >= want {
				break
			}
			continue
		}
		got = append(got, string(buf[:n])+" from "+from.IP.String())
	}
	return got
}

// tryDialSrc connects from src inside ns, with a short bound.
func tryDialSrc(ns netns.NsHandle, src, addr string) error {
	return onThreadIn(ns, func() error {
		d := net.Dialer{Timeout: 1500 * time.Millisecond, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp4", addr)
		if err == nil {
			c.Close()
		}
		return err
	})
}

func acceptWithin(ln net.Listener, d time.Duration) (net.Conn, error) {
	if tl, ok := ln.(*net.TCPListener); ok {
		_ = tl.SetDeadline(time.Now().Add(d))
		defer tl.SetDeadline(time.Time{})
	}
	return ln.Accept()
}

func linkIndexIn(t *testing.T, ns netns.NsHandle, name string) int {
	t.Helper()
	l, err := handleAt(t, ns).LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Index
}
