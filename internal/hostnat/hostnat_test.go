package hostnat

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/bangerdev/banger/internal/guestnet"
	"github.com/bangerdev/banger/internal/testutil"
)

// hostileNames are refused as tap names (and most as bridge names).
var hostileNames = []string{
	"", "eth0; rm -rf /", "../x", "bt-../x", "bt-x/y", "bt-0123456789abc", // 16 chars
	"bt-aaaaaaaaaaaaaaaaaaaaaaaa", "banger0", "BT-ABC", "bt-ABC", "eth0", "lo",
	"bt-a b", "bt-a\nb", "bt-", "bt-\x00", "-bt-a", "bt-a_b", "bt-ä",
}

func TestValidateNames(t *testing.T) {
	for _, name := range hostileNames {
		if err := ValidateTapName(name); !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidateTapName(%q) = %v, want ErrInvalidName", name, err)
		}
	}
	for _, name := range []string{"bt-a", "bt-0123456789ab", guestnet.TapName("vm1")} {
		if err := ValidateTapName(name); err != nil {
			t.Errorf("ValidateTapName(%q) = %v", name, err)
		}
	}
	for _, name := range []string{"eth0", "docker0", "virbr0", "lo", "bt-abc", "banger0;x", "Banger0", "banger0123456789"} {
		if err := ValidateBridgeName(name); !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidateBridgeName(%q) = %v, want ErrInvalidName", name, err)
		}
	}
	if err := ValidateBridgeName("banger-dev"); err != nil {
		t.Errorf("ValidateBridgeName(banger-dev) = %v", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Bridge: "eth0"},
		{Bridge: "docker0"},
		{Table: "filter"},
		{Table: "nat"},
		{Table: "banger; flush ruleset"},
		{Subnet: netip.MustParsePrefix("8.8.8.0/24")},
		{Subnet: netip.MustParsePrefix("10.213.77.9/24")},
		{Subnet: netip.MustParsePrefix("10.0.0.0/8")},
	} {
		if _, err := New(cfg); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("New(%+v) = %v, want ErrInvalidConfig", cfg, err)
		}
	}
	n, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	c := n.Config()
	if c.Bridge != DefaultBridge || c.Table != DefaultTable || c.Subnet != guestnet.DefaultSubnet {
		t.Errorf("defaults not filled: %+v", c)
	}
	if n.Plan().Gateway != netip.MustParseAddr("10.213.77.1") {
		t.Errorf("gateway = %s", n.Plan().Gateway)
	}
	if err := n.CheckPrefix(netip.MustParsePrefix("10.213.77.8/29")); err != nil {
		t.Errorf("in-pool prefix refused: %v", err)
	}
	for _, p := range []string{"10.213.0.0/16", "10.213.78.0/29", "0.0.0.0/0", "::/0"} {
		if err := n.CheckPrefix(netip.MustParsePrefix(p)); !errors.Is(err, ErrOutOfPool) {
			t.Errorf("CheckPrefix(%s) = %v, want ErrOutOfPool", p, err)
		}
	}
	if err := n.CheckGuestAddr(netip.MustParseAddr("192.168.1.5")); !errors.Is(err, ErrOutOfPool) {
		t.Errorf("out-of-pool address accepted: %v", err)
	}
}

// TestRefusesHostileInput: the operations themselves refuse bad arguments
// before touching anything.
func TestRefusesHostileInput(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	ctx := context.Background()
	n := mustNew(t, Config{})
	if err := n.EnsureBridge(ctx); err != nil {
		t.Fatal(err)
	}
	for _, name := range hostileNames {
		if err := n.CreateTap(ctx, name, 1000, 1000, testGuest(name)); !errors.Is(err, ErrInvalidName) {
			t.Errorf("CreateTap(%q) = %v, want ErrInvalidName", name, err)
		}
		if err := n.DeleteTap(ctx, name); !errors.Is(err, ErrInvalidName) {
			t.Errorf("DeleteTap(%q) = %v, want ErrInvalidName", name, err)
		}
	}
	for _, ids := range [][2]int{{-1, 0}, {0, -1}, {1 << 32, 0}, {1<<32 - 1, 0}, {1000, 1 << 33}} {
		if err := n.CreateTap(ctx, "bt-owner", ids[0], ids[1], testGuest("bt-owner")); !errors.Is(err, ErrInvalidOwner) {
			t.Errorf("CreateTap(uid %d, gid %d) = %v, want ErrInvalidOwner", ids[0], ids[1], err)
		}
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if name := l.Attrs().Name; name != "lo" && name != DefaultBridge {
			t.Errorf("refused calls left link %q behind", name)
		}
	}
}

func TestBridgeTapsNATLifecycle(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	ctx := context.Background()
	n := mustNew(t, Config{})
	// A new namespace inherits the host's ip_forward (devconf_inherit_init_net):
	// start from 0 so the test sees Up turn it on and Teardown restore it.
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("0\n"), 0o644); err != nil {
		t.Fatalf("reset ip_forward in the test namespace: %v", err)
	}
	if err := n.Up(ctx); err != nil {
		t.Fatalf("Up: %v", err)
	}
	if err := n.Up(ctx); err != nil {
		t.Fatalf("second Up: %v", err)
	}
	if got := readForwarding(t); got != "1" {
		t.Errorf("ip_forward = %s after Up", got)
	}

	br, err := netlink.LinkByName(DefaultBridge)
	if err != nil {
		t.Fatalf("bridge missing: %v", err)
	}
	if br.Type() != "bridge" {
		t.Errorf("bridge has type %s", br.Type())
	}
	addrs, err := netlink.AddrList(br, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 1 || addrs[0].IPNet.String() != "10.213.77.1/24" {
		t.Errorf("bridge addresses = %v, want exactly 10.213.77.1/24", addrs)
	}

	const tapA, tapB = "bt-aaaa", "bt-bbbb"
	if err := n.CreateTap(ctx, tapA, 65534, 65534, testGuest(tapA)); err != nil {
		t.Fatalf("CreateTap: %v", err)
	}
	if err := n.CreateTap(ctx, tapA, 65534, 65534, testGuest(tapA)); err != nil {
		t.Fatalf("CreateTap again (idempotent): %v", err)
	}
	if err := n.CreateTap(ctx, tapB, 4242, 4243, testGuest(tapB)); err != nil {
		t.Fatalf("CreateTap: %v", err)
	}
	if err := n.CreateTap(ctx, tapA, 4242, 4242, testGuest(tapA)); !errors.Is(err, ErrNotOurs) {
		t.Errorf("CreateTap with another owner = %v, want ErrNotOurs", err)
	}
	for name, uid := range map[string]uint32{tapA: 65534, tapB: 4242} {
		l, err := netlink.LinkByName(name)
		if err != nil {
			t.Fatalf("tap %s missing: %v", name, err)
		}
		tt, ok := l.(*netlink.Tuntap)
		if !ok {
			t.Fatalf("%s is a %s", name, l.Type())
		}
		if tt.Mode != netlink.TUNTAP_MODE_TAP || tt.NonPersist || tt.Owner != uid {
			t.Errorf("%s: mode %v persist %v owner %d, want tap persistent owner %d", name, tt.Mode, !tt.NonPersist, tt.Owner, uid)
		}
		if tt.Flags&netlink.TUNTAP_MULTI_QUEUE != 0 {
			t.Errorf("%s is multi-queue", name)
		}
		if l.Attrs().MasterIndex != br.Attrs().Index {
			t.Errorf("%s not attached to the bridge", name)
		}
		if got := sysfsOwner(t, name); got != strconv.Itoa(int(uid)) {
			t.Errorf("sysfs owner of %s = %q, want %d", name, got, uid)
		}
	}
	if l, _ := netlink.LinkByName(tapB); l != nil {
		if g := l.(*netlink.Tuntap).Group; g != 4243 {
			t.Errorf("tap group = %d, want 4243", g)
		}
	}

	st, err := n.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantChains := map[string]int{ChainPostrouting: 1, ChainForward: 6, ChainInput: 2}
	if !sameCounts(st.Chains, wantChains) {
		t.Errorf("chains = %v, want %v", st.Chains, wantChains)
	}
	if err := n.EnsureNAT(ctx); err != nil {
		t.Fatal(err)
	}
	if st2, err := n.State(ctx); err != nil || !sameCounts(st2.Chains, wantChains) {
		t.Errorf("after a second EnsureNAT chains = %v (%v), want %v", st2.Chains, err, wantChains)
	}
	if st.Bridge == nil || !st.Bridge.Up || len(st.Taps) != 2 || !st.Forwarding {
		t.Errorf("state = %+v", st)
	}
	for _, ts := range st.Taps {
		if ts.Master != DefaultBridge || !ts.Up {
			t.Errorf("tap state %+v", ts)
		}
	}
	checkTableWithLibrary(t, n.Config().Table)
	if nft, err := exec.LookPath("nft"); err == nil {
		out, err := exec.Command(nft, "list", "table", "inet", DefaultTable).CombinedOutput()
		if err != nil {
			t.Fatalf("nft list table: %v\n%s", err, out)
		}
		for _, want := range []string{
			`ip saddr 10.213.77.0/24 oifname != "banger0" masquerade`,
			`iifname "banger0" ip daddr 169.254.0.0/16 drop`,
			`iifname "banger0" meta nfproto ipv6 drop`,
			`oifname "banger0" ct state established,related accept`,
			"type nat hook postrouting priority srcnat",
		} {
			if !strings.Contains(string(out), want) {
				t.Errorf("nft list table lacks %q:\n%s", want, out)
			}
		}
	}

	if err := n.DeleteTap(ctx, tapB); err != nil {
		t.Fatal(err)
	}
	if err := n.DeleteTap(ctx, tapB); err != nil {
		t.Errorf("deleting a missing tap: %v", err)
	}
	if _, err := netlink.LinkByName(tapB); err == nil {
		t.Error("DeleteTap left the tap")
	}

	if err := n.Teardown(ctx); err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	if err := n.Teardown(ctx); err != nil {
		t.Fatalf("second Teardown: %v", err)
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if l.Attrs().Name != "lo" {
			t.Errorf("Teardown left link %q", l.Attrs().Name)
		}
	}
	st, err = n.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Chains != nil || st.Bridge != nil || len(st.Taps) != 0 {
		t.Errorf("state after teardown = %+v", st)
	}
	if got := readForwarding(t); got != "0" {
		t.Errorf("ip_forward = %s after Teardown, want the original 0", got)
	}
}

func TestCreateTapNeedsBridge(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	n := mustNew(t, Config{})
	if err := n.CreateTap(context.Background(), "bt-early", 1000, 1000, testGuest("bt-early")); !errors.Is(err, ErrNoBridge) {
		t.Errorf("CreateTap before EnsureBridge = %v, want ErrNoBridge", err)
	}
}

func TestForeignLinksLeftAlone(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	ctx := context.Background()
	addForeign(t, "banger0")
	n := mustNew(t, Config{})
	if err := n.EnsureBridge(ctx); !errors.Is(err, ErrNotOurs) {
		t.Fatalf("EnsureBridge over a dummy banger0 = %v, want ErrNotOurs", err)
	}
	n2 := mustNew(t, Config{Bridge: "banger1"})
	if err := n2.EnsureBridge(ctx); err != nil {
		t.Fatal(err)
	}
	addForeign(t, "bt-dummy")
	if err := n2.CreateTap(ctx, "bt-dummy", 1000, 1000, testGuest("bt-dummy")); !errors.Is(err, ErrNotOurs) {
		t.Errorf("CreateTap over a dummy = %v, want ErrNotOurs", err)
	}
	if err := n2.DeleteTap(ctx, "bt-dummy"); !errors.Is(err, ErrNotOurs) {
		t.Errorf("DeleteTap of a dummy = %v, want ErrNotOurs", err)
	}
	if err := n2.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"banger0", "bt-dummy"} {
		if _, err := netlink.LinkByName(name); err != nil {
			t.Errorf("Teardown removed foreign link %s: %v", name, err)
		}
	}
	if _, err := netlink.LinkByName("banger1"); err == nil {
		t.Error("Teardown left banger1")
	}
}

func TestSubnetOverlapRefused(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	ctx := context.Background()
	n := mustNew(t, Config{})

	// An address whose network contains the pool, on another interface.
	d := addForeign(t, "other0")
	addr, _ := netlink.ParseAddr("10.213.0.5/16")
	if err := netlink.AddrAdd(d, addr); err != nil {
		t.Fatal(err)
	}
	err := n.EnsureBridge(ctx)
	if !errors.Is(err, ErrSubnetOverlap) {
		t.Fatalf("EnsureBridge = %v, want ErrSubnetOverlap", err)
	}
	for _, want := range []string{"10.213.0.5/16 dev other0", "banger config set network.subnet 10.200.77.0/24"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if _, err := netlink.LinkByName(DefaultBridge); err == nil {
		t.Error("a refused EnsureBridge created the bridge")
	}
	if err := netlink.AddrDel(d, addr); err != nil {
		t.Fatal(err)
	}

	// A narrower route in a policy-routing table, like a VPN's.
	if err := netlink.LinkSetUp(d); err != nil {
		t.Fatal(err)
	}
	route := &netlink.Route{LinkIndex: d.Attrs().Index, Dst: ipNet(netip.MustParsePrefix("10.213.77.128/25")), Table: 100}
	if err := netlink.RouteAdd(route); err != nil {
		t.Fatal(err)
	}
	err = n.EnsureBridge(ctx)
	if !errors.Is(err, ErrSubnetOverlap) || !strings.Contains(err.Error(), "route 10.213.77.128/25 dev other0 table 100") {
		t.Fatalf("EnsureBridge with a table-100 route = %v", err)
	}
	if err := netlink.RouteDel(route); err != nil {
		t.Fatal(err)
	}

	// A default route and banger's own bridge route are not clashes.
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: d.Attrs().Index, Dst: ipNet(netip.MustParsePrefix("0.0.0.0/0"))}); err != nil {
		t.Fatal(err)
	}
	if err := n.EnsureBridge(ctx); err != nil {
		t.Fatalf("EnsureBridge with only a default route: %v", err)
	}
	if err := n.EnsureBridge(ctx); err != nil {
		t.Fatalf("EnsureBridge again (own route): %v", err)
	}
}

func TestBridgeReaddressedOnSubnetChange(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	ctx := context.Background()
	if err := mustNew(t, Config{}).EnsureBridge(ctx); err != nil {
		t.Fatal(err)
	}
	n := mustNew(t, Config{Subnet: netip.MustParsePrefix("172.20.9.0/24")})
	if err := n.EnsureBridge(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := n.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Bridge == nil || len(st.Bridge.Addrs) != 1 || st.Bridge.Addrs[0] != "172.20.9.1/24" {
		t.Errorf("bridge state after subnet change = %+v", st.Bridge)
	}
}

func mustNew(t *testing.T, cfg Config) *Network {
	t.Helper()
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// addForeign creates a link banger did not make: a veth (this kernel may
// lack the dummy driver) whose peer is named "p"+name.
func addForeign(t *testing.T, name string) netlink.Link {
	t.Helper()
	la := netlink.NewLinkAttrs()
	la.Name = name
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "p" + name}); err != nil {
		t.Fatalf("add veth %s: %v", name, err)
	}
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func readForwarding(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(ipForwardPath)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// sysfsOwner reads /sys/class/net/NAME/owner from a sysfs mounted in a
// private mount namespace: the host's /sys shows the host's interfaces.
func sysfsOwner(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("unshare", "-m", "--propagation", "private", "--", "sh", "-c",
		`mount -t sysfs sysfs /sys && cat "/sys/class/net/$1/owner"`, "sh", name).CombinedOutput()
	if err != nil {
		t.Fatalf("read sysfs owner of %s: %v\n%s", name, err, out)
	}
	return strings.TrimSpace(string(out))
}

func checkTableWithLibrary(t *testing.T, table string) {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tb, err := c.ListTableOfFamily(table, nftables.TableFamilyINet)
	if err != nil {
		t.Fatalf("table %s not found: %v", table, err)
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	hooks := map[string]nftables.ChainType{}
	for _, ch := range chains {
		if ch.Table.Name == tb.Name {
			hooks[ch.Name] = ch.Type
			if ch.Policy == nil || *ch.Policy != nftables.ChainPolicyAccept {
				t.Errorf("chain %s does not default to accept", ch.Name)
			}
		}
	}
	if hooks[ChainPostrouting] != nftables.ChainTypeNAT || hooks[ChainForward] != nftables.ChainTypeFilter || hooks[ChainInput] != nftables.ChainTypeFilter {
		t.Errorf("chains = %v", hooks)
	}
}

func sameCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// testGuest gives each tap name its own guest identity.
func testGuest(tap string) TapGuest {
	var h byte
	for _, c := range []byte(tap) {
		h = h*31 + c
	}
	return TapGuest{MAC: net.HardwareAddr{0x02, 0xba, 0, 0, 0, h}, IP: netip.AddrFrom4([4]byte{10, 213, 77, 10 + h%200})}
}
