package roothelper_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/guestnet"
	"github.com/bangerdev/banger/internal/hostnat"
	"github.com/bangerdev/banger/internal/roothelper"
	"github.com/bangerdev/banger/internal/roothelper/helpertest"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/testutil"
)

// The helper's owner in these tests: an unprivileged uid (and gid) that
// need not exist in /etc/passwd.
const (
	ownerUID = 4242
	strayUID = 4343
)

// hostileTapNames must all be refused before anything is created.
var hostileTapNames = []string{
	"", "eth0; rm -rf /", "../x", "bt-../x", "bt-x/y", "banger0", "eth0", "lo",
	"bt-0123456789abc", "bt-aaaaaaaaaaaaaaaaaaaaaaaa", // 16 and 27 characters
	"BT-ABC", "bt-ABC", "bt-a b", "bt-a\nb", "bt-", "bt-\x00", "-bt-a", "bt-a_b", "bt-ä",
	"$(reboot)", "bt-`id`",
}

// startHelper runs a root helper in-process (see helpertest.Start).
func startHelper(t *testing.T, owner int) (*roothelper.Client, string, *helpertest.Logs) {
	t.Helper()
	h := helpertest.Start(t, roothelper.Options{OwnerUID: owner})
	return h.Client, h.Socket, h.Logs
}

// startHelperWith is startHelper with more options (Socket, Logger and
// Ready are the harness's).
func startHelperWith(t *testing.T, opts roothelper.Options) (*roothelper.Client, string, *helpertest.Logs) {
	t.Helper()
	h := helpertest.Start(t, opts)
	return h.Client, h.Socket, h.Logs
}

// asUser runs fn on a fresh OS thread whose credentials are uid/gid, so the
// helper sees an unprivileged peer (SO_PEERCRED records the connecting
// thread's credentials). The raw syscalls change this thread only; the
// thread is never unlocked, so it exits with the goroutine.
func asUser(t *testing.T, uid, gid int, fn func() error) error {
	t.Helper()
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(gid), uintptr(gid), uintptr(gid)); e != 0 {
			ch <- errors.New("setresgid: " + e.Error())
			return
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
			ch <- errors.New("setresuid: " + e.Error())
			return
		}
		ch <- fn()
	}()
	select {
	case err := <-ch:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("call as unprivileged user did not return within 30s")
		return nil
	}
}

func wantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	if got := api.CodeOf(err); err == nil || got != code {
		t.Errorf("%s: got %v (code %s), want code %s", what, err, got, code)
	}
}

// linkNames lists the namespace's interfaces.
func linkNames(t *testing.T) []string {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	slices.Sort(names)
	return names
}

func hasNFTable(t *testing.T, name string) bool {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(tables, func(tb *nftables.Table) bool { return tb.Name == name })
}

func readForwarding(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestNetworkMethods(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	c, sock, logs := startHelper(t, ownerUID)
	bg := context.Background()
	forwardingBefore := readForwarding(t)

	// network.up, twice: idempotent.
	upCtx := rpc.WithOpID(bg, "op-nettest-up")
	info, err := c.NetworkUp(upCtx)
	if err != nil {
		t.Fatalf("network.up: %v", err)
	}
	want := api.NetworkInfo{Bridge: hostnat.DefaultBridge, Subnet: guestnet.DefaultSubnet.String(), Gateway: "10.213.77.1", Table: hostnat.DefaultTable}
	if info != want {
		t.Errorf("network.up = %+v, want %+v", info, want)
	}
	if _, err := c.NetworkUp(bg); err != nil {
		t.Fatalf("second network.up: %v", err)
	}

	// tap.create for a valid name and the owner.
	tap := guestnet.TapName("0123456789abcdef")
	tapCtx := rpc.WithOpID(bg, "op-nettest-tap")
	if err := c.CreateTap(tapCtx, tapReq(tap, ownerUID, ownerUID)); err != nil {
		t.Fatalf("tap.create %s: %v", tap, err)
	}
	if err := c.CreateTap(tapCtx, tapReq(tap, ownerUID, ownerUID)); err != nil {
		t.Fatalf("tap.create %s again (idempotent): %v", tap, err)
	}

	st, err := c.NetworkState(bg)
	if err != nil {
		t.Fatalf("network.state: %v", err)
	}
	if st.Config != want {
		t.Errorf("state config = %+v, want %+v", st.Config, want)
	}
	if st.Bridge == nil || st.Bridge.Name != "banger0" || !st.Bridge.Up || !slices.Equal(st.Bridge.Addrs, []string{"10.213.77.1/24"}) {
		t.Errorf("state bridge = %+v, want banger0 up with 10.213.77.1/24", st.Bridge)
	}
	wantTap := api.NetworkTapState{Name: tap, OwnerUID: ownerUID, Up: true, Master: "banger0", SourceRules: 9, Isolated: true, IPv6Disabled: true}
	if len(st.Taps) != 1 || st.Taps[0] != wantTap {
		t.Errorf("state taps = %+v, want [%+v]", st.Taps, wantTap)
	}
	if !st.Forwarding {
		t.Error("state: forwarding is off after network.up")
	}
	if !st.Bridge.IPv6Disabled {
		t.Error("state: ipv6 is on on the bridge")
	}
	if len(st.Changes) == 0 {
		t.Error("state: no changes reported after network.up")
	}
	wantChains := map[string]int{hostnat.ChainPostrouting: 1, hostnat.ChainForward: 6, hostnat.ChainInput: 2}
	if len(st.Chains) != len(wantChains) {
		t.Errorf("state chains = %v, want %v", st.Chains, wantChains)
	}
	for ch, n := range wantChains {
		if st.Chains[ch] != n {
			t.Errorf("chain %s has %d rules, want %d", ch, st.Chains[ch], n)
		}
	}
	// The kernel agrees.
	l, err := netlink.LinkByName(tap)
	if err != nil {
		t.Fatalf("tap %s missing: %v", tap, err)
	}
	br, err := netlink.LinkByName("banger0")
	if err != nil {
		t.Fatalf("bridge missing: %v", err)
	}
	if tt, ok := l.(*netlink.Tuntap); !ok || tt.Owner != ownerUID || tt.Group != ownerUID || l.Attrs().MasterIndex != br.Attrs().Index {
		t.Errorf("tap %s = %#v, want a tap owned by %d:%d on banger0", tap, l, ownerUID, ownerUID)
	}
	if !hasNFTable(t, "banger") {
		t.Error("nftables table ip banger missing after network.up")
	}
	linksBefore := linkNames(t)

	// Hostile input is refused and creates nothing.
	badCtx := rpc.WithOpID(bg, "op-nettest-bad")
	for _, name := range hostileTapNames {
		wantCode(t, "tap.create "+strings.ToValidUTF8(name, "?"), c.CreateTap(badCtx, tapReq(name, ownerUID, ownerUID)), api.CodeInvalidArgument)
		wantCode(t, "tap.delete "+strings.ToValidUTF8(name, "?"), c.DeleteTap(badCtx, name), api.CodeInvalidArgument)
	}
	raw := rpc.NewClient(sock)
	wantCode(t, "tap.create with an unknown field",
		raw.CallRaw(badCtx, api.MethodHelperTapCreate.Name, map[string]any{"name": "bt-extra", "owner_uid": ownerUID, "owner_gid": ownerUID, "command": "rm -rf /"}, nil),
		api.CodeInvalidArgument)
	wantCode(t, "tap.create with a string uid",
		raw.CallRaw(badCtx, api.MethodHelperTapCreate.Name, map[string]any{"name": "bt-extra", "owner_uid": "0", "owner_gid": 0}, nil),
		api.CodeInvalidArgument)
	wantCode(t, "network.up with params",
		raw.CallRaw(badCtx, api.MethodHelperNetworkUp.Name, map[string]any{"bridge": "eth0"}, nil), api.CodeInvalidArgument)
	// A guest identity the tap could not be bound to.
	for what, mut := range map[string]func(*api.TapCreate){
		"no mac":            func(p *api.TapCreate) { p.MAC = "" },
		"broadcast mac":     func(p *api.TapCreate) { p.MAC = "ff:ff:ff:ff:ff:ff" },
		"zero mac":          func(p *api.TapCreate) { p.MAC = "00:00:00:00:00:00" },
		"long mac":          func(p *api.TapCreate) { p.MAC = "02:00:00:00:00:00:00:01" },
		"no ip":             func(p *api.TapCreate) { p.IP = "" },
		"gateway ip":        func(p *api.TapCreate) { p.IP = "10.213.77.1" },
		"broadcast ip":      func(p *api.TapCreate) { p.IP = "10.213.77.255" },
		"ip outside subnet": func(p *api.TapCreate) { p.IP = "192.168.1.5" },
		"ipv6":              func(p *api.TapCreate) { p.IP = "fe80::1" },
		"unknown network":   func(p *api.TapCreate) { p.Network = "bridged" },
		// Egress policies that would lift the metadata drop or are not
		// masked IPv4 prefixes.
		"egress without metadata": func(p *api.TapCreate) { p.DenyEgress = []string{"10.0.0.0/8"} },
		"egress narrower":         func(p *api.TapCreate) { p.DenyEgress = []string{"169.254.169.254/32"} },
		"egress ipv6":             func(p *api.TapCreate) { p.DenyEgress = []string{"169.254.0.0/16", "::/0"} },
		"egress host bits":        func(p *api.TapCreate) { p.DenyEgress = []string{"169.254.0.0/16", "10.1.2.3/8"} },
		"egress garbage":          func(p *api.TapCreate) { p.DenyEgress = []string{"169.254.0.0/16", "1.2.3.0/24; flush ruleset"} },
		"egress too long":         func(p *api.TapCreate) { p.DenyEgress = slices.Repeat([]string{"169.254.0.0/16"}, 1000) },
	} {
		p := tapReq("bt-badguest", ownerUID, ownerUID)
		mut(&p)
		wantCode(t, "tap.create with "+what, c.CreateTap(badCtx, p), api.CodeInvalidArgument)
	}
	for _, ids := range [][2]int{{-1, 0}, {0, -1}, {1 << 32, 0}, {1<<32 - 1, 0}} {
		wantCode(t, "tap.create with invalid owner ids", c.CreateTap(badCtx, tapReq("bt-badowner", ids[0], ids[1])), api.CodeInvalidArgument)
	}

	// The owner, unprivileged, may only make taps for itself.
	err = asUser(t, ownerUID, ownerUID, func() error {
		wantCode(t, "owner asks for a root-owned tap", c.CreateTap(badCtx, tapReq("bt-stolen", 0, 0)), api.CodePermissionDenied)
		wantCode(t, "owner asks for another uid", c.CreateTap(badCtx, tapReq("bt-stolen", strayUID, ownerUID)), api.CodePermissionDenied)
		wantCode(t, "owner asks for another gid", c.CreateTap(badCtx, tapReq("bt-stolen", ownerUID, 0)), api.CodePermissionDenied)
		wantCode(t, "owner sends a hostile name", c.CreateTap(badCtx, tapReq("eth0; rm -rf /", ownerUID, ownerUID)), api.CodeInvalidArgument)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Another unprivileged user is refused at the door.
	err = asUser(t, strayUID, strayUID, func() error {
		wantCode(t, "stray uid pings", c.Ping(bg), api.CodePermissionDenied)
		wantCode(t, "stray uid creates a tap for itself", c.CreateTap(badCtx, tapReq("bt-stray", strayUID, strayUID)), api.CodePermissionDenied)
		wantCode(t, "stray uid tears the network down", c.NetworkDown(badCtx), api.CodePermissionDenied)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := linkNames(t); !slices.Equal(got, linksBefore) {
		t.Errorf("refused calls changed the links: %v, want %v", got, linksBefore)
	}

	// The owner, unprivileged, makes and deletes its own tap.
	ownTap := guestnet.TapName("fedcba9876543210")
	err = asUser(t, ownerUID, ownerUID, func() error {
		if err := c.CreateTap(bg, tapReq(ownTap, ownerUID, ownerUID)); err != nil {
			return err
		}
		return c.DeleteTap(bg, ownTap)
	})
	if err != nil {
		t.Fatalf("owner creating and deleting its own tap: %v", err)
	}
	if _, err := netlink.LinkByName(ownTap); err == nil {
		t.Errorf("tap %s still exists after tap.delete", ownTap)
	}
	// A tap left for network.down to remove.
	leftTap := guestnet.TapName("aaaa")
	if err := c.CreateTap(bg, tapReq(leftTap, ownerUID, ownerUID)); err != nil {
		t.Fatal(err)
	}

	// tap.delete, twice (a missing tap is fine), then network.down.
	if err := c.DeleteTap(tapCtx, tap); err != nil {
		t.Fatalf("tap.delete: %v", err)
	}
	if err := c.DeleteTap(tapCtx, tap); err != nil {
		t.Fatalf("tap.delete of a missing tap: %v", err)
	}
	if _, err := netlink.LinkByName(tap); err == nil {
		t.Errorf("tap %s still exists after tap.delete", tap)
	}
	downCtx := rpc.WithOpID(bg, "op-nettest-down")
	if err := c.NetworkDown(downCtx); err != nil {
		t.Fatalf("network.down: %v", err)
	}
	if got := linkNames(t); !slices.Equal(got, []string{"lo"}) {
		t.Errorf("links after network.down = %v, want only lo", got)
	}
	if hasNFTable(t, "banger") {
		t.Error("nftables table ip banger still exists after network.down")
	}
	if got := readForwarding(t); got != forwardingBefore {
		t.Errorf("ip_forward after network.down = %s, want %s as before", got, forwardingBefore)
	}
	st, err = c.NetworkState(bg)
	if err != nil {
		t.Fatalf("network.state after down: %v", err)
	}
	if st.Bridge != nil || len(st.Taps) != 0 || st.Chains != nil {
		t.Errorf("state after network.down = %+v, want nothing", st)
	}
	if err := c.NetworkDown(bg); err != nil {
		t.Errorf("second network.down: %v", err)
	}

	// The client's op_id is on the helper's log lines for these calls.
	recs := logs.Records(t)
	for _, w := range []struct{ opID, msg string }{
		{"op-nettest-up", "host network up"},
		{"op-nettest-tap", "tap ready"},
		{"op-nettest-tap", "tap deleted"},
		{"op-nettest-bad", "call failed"},
		{"op-nettest-down", "host network down"},
	} {
		found := slices.ContainsFunc(recs, func(r map[string]any) bool { return r["op_id"] == w.opID && r["msg"] == w.msg })
		if !found {
			t.Errorf("no helper log line %q with op_id %s", w.msg, w.opID)
		}
	}
}

// TestNetworkMethodsBadConfig: a helper started with an invalid network
// config still serves, and its network methods say why they cannot work.
func TestNetworkMethodsBadConfig(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	ctx := t.Context()
	c := helpertest.Start(t, roothelper.Options{OwnerUID: ownerUID, NetworkConfig: hostnat.Config{Bridge: "eth0"}}).Client
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	_, err := c.NetworkUp(ctx)
	wantCode(t, "network.up with bridge eth0", err, api.CodeFailedPrecondition)
	wantCode(t, "tap.create with bridge eth0", c.CreateTap(ctx, tapReq("bt-a", ownerUID, ownerUID)), api.CodeFailedPrecondition)
	if got := linkNames(t); !slices.Equal(got, []string{"lo"}) {
		t.Errorf("links = %v, want only lo", got)
	}
}

// tapReq is a valid tap.create for name, with a guest identity of its own.
func tapReq(name string, uid, gid int) api.TapCreate {
	var h byte
	for _, c := range []byte(name) {
		h = h*31 + c
	}
	return api.TapCreate{Name: name, OwnerUID: uid, OwnerGID: gid,
		MAC: fmt.Sprintf("02:ba:00:00:00:%02x", h), IP: fmt.Sprintf("10.213.77.%d", 10+int(h)%200)}
}
