package netattach_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/guestnet"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/netattach"
	"github.com/bangerdev/banger/internal/roothelper"
	"github.com/bangerdev/banger/internal/roothelper/helpertest"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/testutil"
	"github.com/bangerdev/banger/internal/vmlife"
)

// owner is the daemon's uid and gid in these tests (unprivileged, need not
// exist); the helper runs as this test (root) with it as its owner.
const owner = 4242

// startHelper runs a real root helper in-process; its logs are returned.
func startHelper(t *testing.T) (*roothelper.Client, *helpertest.Logs) {
	t.Helper()
	h := helpertest.Start(t, roothelper.Options{OwnerUID: owner})
	return h.Client, h.Logs
}

func openStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "banger.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func createVMs(t *testing.T, st *store.Store, n int) []model.VM {
	t.Helper()
	var vms []model.VM
	for i := range n {
		vm, err := st.CreateVM(context.Background(), model.VM{Name: fmt.Sprintf("vm-%d", i), VMM: model.VMMQEMU,
			InitMode: model.InitFast, Dir: filepath.Join(t.TempDir(), "vm")})
		if err != nil {
			t.Fatal(err)
		}
		vms = append(vms, vm)
	}
	return vms
}

func newAttacher(t *testing.T, c *roothelper.Client, st *store.Store) *netattach.Attacher {
	t.Helper()
	a, err := netattach.New(netattach.Config{Helper: c, Store: st, OwnerUID: owner, OwnerGID: owner})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// bangerTaps lists the namespace's banger taps.
func bangerTaps(t *testing.T) []string {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, guestnet.TapPrefix) {
			names = append(names, l.Attrs().Name)
		}
	}
	return names
}

// checkAttached asserts att and everything behind it: store rows and the
// kernel's tap.
func checkAttached(t *testing.T, st *store.Store, vm model.VM, att vmlife.Attachment) netip.Addr {
	t.Helper()
	ctx := context.Background()
	mac := guestnet.MACForVM(vm.ID).String()
	subnet, gw := guestnet.DefaultSubnet, netip.MustParseAddr("10.213.77.1")
	if att.Tap != guestnet.TapName(vm.ID) || att.MAC != mac || att.Guest == nil {
		t.Fatalf("vm %s: attachment %+v, want tap %s mac %s and a guest config", vm.Name, att, guestnet.TapName(vm.ID), mac)
	}
	g := att.Guest
	addr := g.Address.Addr()
	if g.Address.Bits() != 24 || !subnet.Contains(addr) || addr == gw || addr == subnet.Addr() || g.Gateway != gw ||
		!reflect.DeepEqual(g.DNS, []netip.Addr{gw}) || g.MAC != mac {
		t.Errorf("vm %s: guest network %+v, want an address in %s (not the gateway), gateway and dns %s, mac %s", vm.Name, g, subnet, gw, mac)
	}
	lease, err := st.LeaseForVM(ctx, vm.ID)
	if err != nil {
		t.Fatalf("vm %s: %v", vm.Name, err)
	}
	if lease.IP != addr.String() || lease.MAC != mac {
		t.Errorf("vm %s: lease %+v, want %s with mac %s", vm.Name, lease, addr, mac)
	}
	row, err := st.GetVM(ctx, vm.ID)
	if err != nil {
		t.Fatal(err)
	}
	if row.MAC != mac {
		t.Errorf("vm %s: stored mac %q, want %q", vm.Name, row.MAC, mac)
	}
	objs, err := st.ListNetObjectsByVM(ctx, vm.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 || objs[0].Kind != model.NetTap || objs[0].Name != att.Tap {
		t.Errorf("vm %s: net objects %+v, want the tap %s", vm.Name, objs, att.Tap)
	}
	l, err := netlink.LinkByName(att.Tap)
	if err != nil {
		t.Fatalf("vm %s: tap %s: %v", vm.Name, att.Tap, err)
	}
	br, err := netlink.LinkByName("banger0")
	if err != nil {
		t.Fatalf("bridge: %v", err)
	}
	if tt, ok := l.(*netlink.Tuntap); !ok || tt.Owner != owner || tt.Group != owner || l.Attrs().MasterIndex != br.Attrs().Index {
		t.Errorf("vm %s: link %s = %#v, want a tap owned by %d:%d on banger0", vm.Name, att.Tap, l, owner, owner)
	}
	return addr
}

func checkNothingLeft(t *testing.T, st *store.Store) {
	t.Helper()
	ctx := context.Background()
	if taps := bangerTaps(t); len(taps) != 0 {
		t.Errorf("taps left: %v", taps)
	}
	if ls, err := st.ListLeases(ctx); err != nil || len(ls) != 0 {
		t.Errorf("leases left: %+v (%v)", ls, err)
	}
	if objs, err := st.ListNetObjects(ctx); err != nil || len(objs) != 0 {
		t.Errorf("net object records left: %+v (%v)", objs, err)
	}
}

func TestAttachDetachConcurrent(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	c, logs := startHelper(t)
	st := openStore(t)
	a := newAttacher(t, c, st)
	vms := createVMs(t, st, 10)
	ctx := rpc.WithOpID(context.Background(), "op-attach-test")

	atts := make([]vmlife.Attachment, len(vms))
	errs := make([]error, len(vms))
	var wg sync.WaitGroup
	for i, vm := range vms {
		wg.Go(func() { atts[i], errs[i] = a.Attach(ctx, vm) })
	}
	wg.Wait()
	addrs, taps := map[netip.Addr]string{}, map[string]string{}
	for i, vm := range vms {
		if errs[i] != nil {
			t.Fatalf("attach %s: %v", vm.Name, errs[i])
		}
		addr := checkAttached(t, st, vm, atts[i])
		if other, dup := addrs[addr]; dup {
			t.Errorf("%s and %s both got %s", other, vm.Name, addr)
		}
		if other, dup := taps[atts[i].Tap]; dup {
			t.Errorf("%s and %s both got tap %s", other, vm.Name, atts[i].Tap)
		}
		addrs[addr], taps[atts[i].Tap] = vm.Name, vm.Name
	}
	if len(bangerTaps(t)) != len(vms) {
		t.Errorf("taps in the kernel: %v, want %d", bangerTaps(t), len(vms))
	}

	// Attach again: the same lease and tap, nothing new.
	for i, vm := range vms {
		again, err := a.Attach(ctx, vm)
		if err != nil {
			t.Fatalf("second attach of %s: %v", vm.Name, err)
		}
		if !reflect.DeepEqual(again, atts[i]) {
			t.Errorf("second attach of %s = %+v, want %+v", vm.Name, again, atts[i])
		}
	}
	if ls, err := st.ListLeases(ctx); err != nil || len(ls) != len(vms) {
		t.Errorf("leases after re-attach: %d (%v), want %d", len(ls), err, len(vms))
	}
	// The network was brought up once for all of this.
	if n := logs.Count(t, "host network up"); n != 1 {
		t.Errorf("helper brought the network up %d times, want once", n)
	}

	for i, vm := range vms {
		errs[i] = nil
		wg.Go(func() { errs[i] = a.Detach(ctx, vm) })
	}
	wg.Wait()
	for i, vm := range vms {
		if errs[i] != nil {
			t.Errorf("detach %s: %v", vm.Name, errs[i])
		}
	}
	checkNothingLeft(t, st)
	for _, vm := range vms {
		if err := a.Detach(ctx, vm); err != nil {
			t.Errorf("second detach of %s: %v", vm.Name, err)
		}
	}
	checkNothingLeft(t, st)
}

// TestAttachAfterNetworkDown: the network torn down under a running daemon
// comes back on the next Attach, with the VM's lease unchanged.
func TestAttachAfterNetworkDown(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	c, _ := startHelper(t)
	st := openStore(t)
	a := newAttacher(t, c, st)
	vms := createVMs(t, st, 2)
	ctx := context.Background()

	first, err := a.Attach(ctx, vms[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := c.NetworkDown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(first.Tap); err == nil {
		t.Fatal("tap survived network.down")
	}
	again, err := a.Attach(ctx, vms[0])
	if err != nil {
		t.Fatalf("attach after network.down: %v", err)
	}
	if !reflect.DeepEqual(again, first) {
		t.Errorf("attach after network.down = %+v, want %+v", again, first)
	}
	checkAttached(t, st, vms[0], again)
	second, err := a.Attach(ctx, vms[1])
	if err != nil {
		t.Fatal(err)
	}
	checkAttached(t, st, vms[1], second)
	for _, vm := range vms {
		if err := a.Detach(ctx, vm); err != nil {
			t.Error(err)
		}
	}
	checkNothingLeft(t, st)
}

// TestAttachFailureLeavesNothing: when the helper cannot make the tap
// because a foreign interface holds its name (another kind of device, or a
// tap of another owner), the new lease and record are undone and the
// foreign interface is left alone.
func TestAttachFailureLeavesNothing(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	c, _ := startHelper(t)
	st := openStore(t)
	a := newAttacher(t, c, st)
	vm := createVMs(t, st, 1)[0]
	ctx := context.Background()

	la := netlink.NewLinkAttrs()
	la.Name = guestnet.TapName(vm.ID)
	foreign := []netlink.Link{
		&netlink.Bridge{LinkAttrs: la},
		&netlink.Tuntap{LinkAttrs: la, Mode: netlink.TUNTAP_MODE_TAP, Owner: 7777, Group: 7777},
	}
	for _, link := range foreign {
		if err := netlink.LinkAdd(link); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Attach(ctx, vm); err == nil {
			t.Fatalf("attach succeeded over a foreign %s with the tap's name", link.Type())
		}
		if l, err := netlink.LinkByName(la.Name); err != nil || l.Type() != link.Type() {
			t.Errorf("foreign %s %s was touched: now %v (%v)", link.Type(), la.Name, l, err)
		}
		if ls, err := st.ListLeases(ctx); err != nil || len(ls) != 0 {
			t.Errorf("leases left: %+v (%v)", ls, err)
		}
		if objs, err := st.ListNetObjects(ctx); err != nil || len(objs) != 0 {
			t.Errorf("records left: %+v (%v)", objs, err)
		}
		if err := netlink.LinkDel(link); err != nil {
			t.Fatal(err)
		}
	}

	// A VM the store does not know gets nothing either.
	ghost := model.VM{ID: "0123456789abcdef", Name: "ghost"}
	if _, err := a.Attach(ctx, ghost); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("attach of an unknown vm = %v, want ErrNotFound", err)
	}
	if _, err := a.Attach(ctx, model.VM{ID: "../x", Name: "bad"}); !errors.Is(err, model.ErrInvalidName) {
		t.Errorf("attach with a hostile id = %v, want ErrInvalidName", err)
	}
	if ls, err := st.ListLeases(ctx); err != nil || len(ls) != 0 {
		t.Errorf("leases left: %+v (%v)", ls, err)
	}
	if _, err := a.Attach(ctx, vm); err != nil {
		t.Fatalf("attach once the name is free: %v", err)
	}
	if err := a.Detach(ctx, vm); err != nil {
		t.Fatal(err)
	}
	checkNothingLeft(t, st)
}

// TestDetachNeverAttached: a VM that never had a tap detaches without the
// helper (here: none running), and Attach without a helper fails cleanly.
func TestDetachNeverAttached(t *testing.T) {
	st := openStore(t)
	dir := t.TempDir()
	a := newAttacher(t, roothelper.NewClient(filepath.Join(dir, "no-helper.sock")), st)
	vm := createVMs(t, st, 1)[0]
	ctx := context.Background()
	if err := a.Detach(ctx, vm); err != nil {
		t.Fatalf("detach of a never-attached vm: %v", err)
	}
	if _, err := a.Attach(ctx, vm); !errors.Is(err, rpc.ErrNotRunning) {
		t.Errorf("attach without a helper = %v, want rpc.ErrNotRunning", err)
	}
	if ls, err := st.ListLeases(ctx); err != nil || len(ls) != 0 {
		t.Errorf("leases left: %+v (%v)", ls, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "no-helper.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket appeared: %v", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	st := openStore(t)
	c := roothelper.NewClient("/nonexistent/helper.sock")
	for _, cfg := range []netattach.Config{
		{Store: st},
		{Helper: c},
		{Helper: c, Store: st, OwnerUID: -1},
		{Helper: c, Store: st, OwnerGID: -1},
		{Helper: c, Store: st, DNS: []netip.Addr{{}}},
	} {
		if _, err := netattach.New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

// TestAttachCarriesEgressPolicy: the VM's stored policy reaches the host as
// per-tap drops (through the real helper), the metadata range first; a
// damaged policy row attaches nothing.
func TestAttachCarriesEgressPolicy(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	nft := testutil.RequireBinary(t, "nft")
	c, _ := startHelper(t)
	st := openStore(t)
	a := newAttacher(t, c, st)
	ctx := context.Background()
	vm, err := st.CreateVM(ctx, model.VM{Name: "walled", VMM: model.VMMQEMU, InitMode: model.InitFast, Dir: filepath.Join(t.TempDir(), "vm"),
		Policy: model.VMPolicy{DenyPrivate: true, DenyEgress: []string{"203.0.113.0/24"}}})
	if err != nil {
		t.Fatal(err)
	}
	open := createVMs(t, st, 1)[0]
	att, err := a.Attach(ctx, vm)
	if err != nil {
		t.Fatal(err)
	}
	openAtt, err := a.Attach(ctx, open)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(nft, "list", "table", "bridge", "banger").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list: %v\n%s", err, out)
	}
	rules := string(out)
	for _, d := range []string{"169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "203.0.113.0/24"} {
		if want := `iifname "` + att.Tap + `" ip daddr ` + d + ` drop`; !strings.Contains(rules, want) {
			t.Errorf("bridge table lacks %q:\n%s", want, rules)
		}
	}
	if !strings.Contains(rules, `iifname "`+openAtt.Tap+`" ip daddr 169.254.0.0/16 drop`) ||
		strings.Contains(rules, `iifname "`+openAtt.Tap+`" ip daddr 10.0.0.0/8 drop`) {
		t.Errorf("default-policy vm %s: want only the metadata drop:\n%s", openAtt.Tap, rules)
	}
	for _, v := range []model.VM{vm, open} {
		if err := a.Detach(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	checkNothingLeft(t, st)

	// A row whose policy cannot be parsed gets no lease and no tap.
	bad, err := st.CreateVM(ctx, model.VM{Name: "damaged", VMM: model.VMMQEMU, InitMode: model.InitFast, Dir: filepath.Join(t.TempDir(), "vm2"),
		Policy: model.VMPolicy{DenyEgress: []string{"not-a-cidr"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Attach(ctx, bad); err == nil || !strings.Contains(err.Error(), "not-a-cidr") {
		t.Fatalf("attach with a damaged policy = %v, want an error naming it", err)
	}
	checkNothingLeft(t, st)
}

// TestReattachRefusedKeepsAttachment is a restarted daemon re-applying the
// filter of a running VM whose tap another uid holds (a jail the helper has
// no running record of): the helper refuses, and the failed re-attach
// leaves the running VM's lease, tap record and tap (still that uid's) as
// they were.
func TestReattachRefusedKeepsAttachment(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	c, _ := startHelper(t)
	st := openStore(t)
	a := newAttacher(t, c, st)
	vm := createVMs(t, st, 1)[0]
	ctx := context.Background()
	att, err := a.Attach(ctx, vm)
	if err != nil {
		t.Fatal(err)
	}
	addr := checkAttached(t, st, vm, att)
	l, err := netlink.LinkByName(att.Tap)
	if err != nil {
		t.Fatal(err)
	}
	idx := l.Attrs().Index

	// Hand the tap to uid 7777 as vm.jailer.start would.
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ifr, err := unix.NewIfreq(att.Tap)
	if err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		t.Fatal(err)
	}
	for _, req := range []uint{unix.TUNSETOWNER, unix.TUNSETGROUP} {
		if err := unix.IoctlSetInt(fd, req, 7777); err != nil {
			t.Fatal(err)
		}
	}
	unix.Close(fd)

	vm.Tap = att.Tap
	_, err = a.Attach(ctx, vm)
	if err == nil || !strings.Contains(err.Error(), "owned by uid 7777") {
		t.Fatalf("re-attach of a tap uid 7777 holds: %v, want a refusal naming the holder", err)
	}
	lease, err := st.LeaseForVM(ctx, vm.ID)
	if err != nil || lease.IP != addr.String() {
		t.Errorf("lease after a refused re-attach: %+v (%v), want %s kept", lease, err, addr)
	}
	if objs, err := st.ListNetObjectsByVM(ctx, vm.ID); err != nil || len(objs) != 1 || objs[0].Name != att.Tap {
		t.Errorf("tap record after a refused re-attach: %+v (%v), want %s kept", objs, err, att.Tap)
	}
	l, err = netlink.LinkByName(att.Tap)
	if err != nil {
		t.Fatalf("tap %s gone after a refused re-attach: %v", att.Tap, err)
	}
	if tt, ok := l.(*netlink.Tuntap); !ok || tt.Owner != 7777 || tt.Group != 7777 || l.Attrs().Index != idx {
		t.Errorf("tap after a refused re-attach = %#v, want device %d still held by 7777:7777", l, idx)
	}
	if err := a.Detach(ctx, vm); err != nil {
		t.Fatal(err)
	}
	checkNothingLeft(t, st)
}
