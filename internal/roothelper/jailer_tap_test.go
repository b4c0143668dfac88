package roothelper_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/guestnet"
	"github.com/bangerdev/banger/internal/hostnat"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/testutil"
)

// tapOwner reads a tap's owner and group from sysfs, mounted afresh in a
// private mount namespace so it shows this network namespace's devices.
func tapOwner(t *testing.T, tap string) string {
	t.Helper()
	out, err := exec.Command("unshare", "-m", "sh", "-c",
		`mount -t sysfs sysfs /sys && cat /sys/class/net/"$1"/owner /sys/class/net/"$1"/group`, "sh", tap).CombinedOutput()
	if err != nil {
		t.Fatalf("read owner of tap %s: %v: %s", tap, err, out)
	}
	return strings.Join(strings.Fields(string(out)), ":")
}

// attachTapAs attaches tap as uid/gid the way a VMM does (TUNSETIFF by
// name). /dev/net/tun is opened as root (it may be 0600): the kernel checks
// the tap's owner when attaching. The descriptor stays attached until
// release runs.
func attachTapAs(t *testing.T, uid int, tap string) (release func(), err error) {
	t.Helper()
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = asUser(t, uid, uid, func() error {
		ifr, err := unix.NewIfreq(tap)
		if err != nil {
			return err
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		return unix.IoctlIfreq(int(f.Fd()), unix.TUNSETIFF, ifr)
	})
	if err != nil {
		f.Close()
		return func() {}, err
	}
	return func() { f.Close() }, nil
}

// TestJailerHandsTapToJail: vm.jailer.start gives the VM's own tap (named
// by the helper from the VM id) to the jail's uid and gid, stop (and a
// failed start) gives it back. The jailed fake attaches its tap as the
// jail's uid but not another VM's; the owner cannot attach it while the
// jail holds it. A tap of another uid, a tap the owner holds open and a
// request naming a tap are refused, leaving every tap as it was and no
// jail.
func TestJailerHandsTapToJail(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	f := newJailFixture(t)
	ctx := context.Background()
	if _, err := f.client.NetworkUp(ctx); err != nil {
		t.Fatalf("network.up: %v", err)
	}
	owned := fmt.Sprintf("%d:%d", ownerUID, ownerUID)
	newVM := func(uid int) (id, dir, tap string) {
		id, dir = f.vmDir(t)
		tap = guestnet.TapName(id)
		if err := f.client.CreateTap(ctx, tapReq(tap, uid, uid)); err != nil { // as root: any owner
			t.Fatalf("tap.create %s: %v", tap, err)
		}
		return id, dir, tap
	}
	id, _, tap := newVM(ownerUID)
	_, _, otherTap := newVM(ownerUID)

	file, res, err := f.start(t, ownerUID, id)
	if err != nil {
		t.Fatalf("vm.jailer.start: %v", err)
	}
	file.Close()
	if got, want := tapOwner(t, tap), fmt.Sprintf("%d:%d", res.UID, res.GID); got != want {
		t.Errorf("tap %s owner:group after start = %s, want the jail's %s", tap, got, want)
	}
	if got := tapOwner(t, otherTap); got != owned {
		t.Errorf("another vm's tap %s after start = %s, want %s", otherTap, got, owned)
	}
	// The jail attaches its own tap, not another VM's.
	tapAttach := func(name string) string {
		f2, _, err := asOwnerConnect(t, f, id)
		if err != nil {
			t.Fatalf("vm.jailer.connect: %v", err)
		}
		var out map[string]string
		get(t, f2, "/tap?name="+name, &out)
		return out["err"]
	}
	if e := tapAttach(tap); e != "" {
		t.Errorf("the jail's uid cannot attach its tap %s: %s", tap, e)
	}
	if e := tapAttach(otherTap); e == "" {
		t.Errorf("the jail's uid attached another vm's tap %s", otherTap)
	}
	// The owner cannot attach (or have the helper open) the jail's tap.
	if release, err := attachTapAs(t, ownerUID, tap); err == nil {
		release()
		t.Errorf("the owner attached tap %s while the jail holds it", tap)
	}
	if err := asUser(t, ownerUID, ownerUID, func() error {
		tf, err := f.client.OpenTap(ctx, tap)
		if tf != nil {
			tf.Close()
		}
		return err
	}); err == nil {
		t.Errorf("tap.open as the owner passed the jail's tap %s", tap)
	}

	// A request naming a tap cannot be made.
	raw := rpc.NewClient(f.sock)
	id2, _, _ := newVM(ownerUID)
	err = asUser(t, ownerUID, ownerUID, func() error {
		err := raw.CallRaw(ctx, api.MethodHelperVMJailerStart.Name, map[string]any{"vm_id": id2, "tap": otherTap}, nil)
		return err
	})
	wantCode(t, "start naming a tap", err, api.CodeInvalidArgument)
	f.assertClean(t, "start naming a tap", id2)
	if got := tapOwner(t, otherTap); got != owned {
		t.Errorf("tap %s after a request naming it = %s, want %s", otherTap, got, owned)
	}

	// A VM whose tap another uid owns is refused.
	strange, _, strangeTap := newVM(strayUID)
	_, _, err = f.start(t, ownerUID, strange)
	wantCode(t, "tap of another uid", err, api.CodePermissionDenied)
	f.assertClean(t, "tap of another uid", strange)
	if got, want := tapOwner(t, strangeTap), fmt.Sprintf("%d:%d", strayUID, strayUID); got != want {
		t.Errorf("stranger's tap after a refused start = %s, want %s", got, want)
	}

	// A tap the owner holds open (to watch the jail's traffic) is refused.
	busy, _, busyTap := newVM(ownerUID)
	release, err := attachTapAs(t, ownerUID, busyTap)
	if err != nil {
		t.Fatalf("owner attaches its own tap: %v", err)
	}
	_, _, err = f.start(t, ownerUID, busy)
	release()
	wantCode(t, "tap held open", err, api.CodeFailedPrecondition)
	f.assertClean(t, "tap held open", busy)
	if got := tapOwner(t, busyTap); got != owned {
		t.Errorf("held tap after a refused start = %s, want %s", got, owned)
	}

	// A start that fails after the hand-over gives the tap back.
	dies, diesDir, diesTap := newVM(ownerUID)
	if err := os.WriteFile(filepath.Join(diesDir, "vmlinux"), []byte("FAKE-JAILER-EXIT"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err = f.start(t, ownerUID, dies)
	// Failing after the hand-over: the process runs (in its cgroup) before
	// it exits.
	if err == nil || !strings.Contains(err.Error(), "exited before") && !strings.Contains(err.Error(), "cgroup") {
		t.Errorf("start of a jailer that exits: %v, want it to fail after the jailer ran", err)
	}
	f.assertClean(t, "jailer exits", dies)
	if got := tapOwner(t, diesTap); got != owned {
		t.Errorf("tap after a failed start = %s, want %s", got, owned)
	}

	// Stop gives the tap back; the owner attaches it again.
	if err := asUser(t, ownerUID, ownerUID, func() error { return f.client.StopJailer(ctx, id) }); err != nil {
		t.Fatalf("vm.jailer.stop: %v", err)
	}
	f.assertClean(t, "after stop", id)
	if got := tapOwner(t, tap); got != owned {
		t.Errorf("tap %s after stop = %s, want %s", tap, got, owned)
	}
	if release, err := attachTapAs(t, ownerUID, tap); err != nil {
		t.Errorf("the owner cannot attach its tap %s after stop: %v", tap, err)
	} else {
		release()
	}
	// A VM without a tap starts with none.
	bare, _ := f.vmDir(t)
	bf, _, err := f.start(t, ownerUID, bare)
	if err != nil {
		t.Fatalf("start a vm without a tap: %v", err)
	}
	bf.Close()
	if err := f.client.StopJailer(ctx, bare); err != nil {
		t.Fatal(err)
	}
}

func asOwnerConnect(t *testing.T, f *jailFixture, id string) (*os.File, api.VMJailerStarted, error) {
	t.Helper()
	var file *os.File
	var res api.VMJailerStarted
	err := asUser(t, ownerUID, ownerUID, func() error {
		var err error
		file, res, err = f.client.ConnectJailer(context.Background(), id, api.JailerSocketAPI)
		return err
	})
	return file, res, err
}

// tapRules fingerprints tap's rules in the bridge-family table (exact
// expressions, in order); "" when it has none or the table is gone.
func tapRules(t *testing.T, tap string) string {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tbl := &nftables.Table{Name: hostnat.DefaultTable, Family: nftables.TableFamilyBridge}
	var out []string
	for _, ch := range []string{hostnat.ChainTaps, hostnat.ChainIsolation} {
		rules, err := c.GetRules(tbl, &nftables.Chain{Name: ch, Table: tbl})
		if err != nil {
			continue // no table or chain: no rules
		}
		for _, r := range rules {
			if s, ok := userdata.GetString(r.UserData, userdata.TypeComment); !ok || s != "banger tap "+tap {
				continue
			}
			b, err := json.Marshal(r.Exprs)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, ch+" "+string(b))
		}
	}
	return strings.Join(out, "\n")
}

// dropTapRules deletes tap's rules, as a lost filter would leave it.
func dropTapRules(t *testing.T, tap string) {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tbl := &nftables.Table{Name: hostnat.DefaultTable, Family: nftables.TableFamilyBridge}
	for _, ch := range []string{hostnat.ChainTaps, hostnat.ChainIsolation} {
		rules, err := c.GetRules(tbl, &nftables.Chain{Name: ch, Table: tbl})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rules {
			if s, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok && s == "banger tap "+tap {
				if err := c.DelRule(r); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := tapRules(t, tap); got != "" {
		t.Fatalf("rules of %s still there after deleting them:\n%s", tap, got)
	}
}

func tapIndex(t *testing.T, tap string) int {
	t.Helper()
	l, err := netlink.LinkByName(tap)
	if err != nil {
		t.Fatalf("tap %s: %v", tap, err)
	}
	return l.Attrs().Index
}

// TestJailerTapCreateReappliesJailFilter: a restarted daemon's tap.create
// for a VM whose running jail holds its tap re-applies the tap's filter
// (rules deleted, then the whole table lost) and leaves the tap the jail's
// (owner, group, device, the jail still attaches it). Only the helper's
// own running-jail record admits it: another VM's tap given to the jail's
// uid, a jail whose record is gone and a jail whose process ended are
// refused, the tap's owner and rules unchanged.
func TestJailerTapCreateReappliesJailFilter(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	f := newJailFixture(t)
	ctx := context.Background()
	if _, err := f.client.NetworkUp(ctx); err != nil {
		t.Fatalf("network.up: %v", err)
	}
	id, _ := f.vmDir(t)
	tap := guestnet.TapName(id)
	req := tapReq(tap, ownerUID, ownerUID)
	if err := f.client.CreateTap(ctx, req); err != nil {
		t.Fatalf("tap.create %s: %v", tap, err)
	}
	want := tapRules(t, tap)
	if want == "" {
		t.Fatalf("tap %s has no rules after tap.create", tap)
	}
	file, res, err := f.start(t, ownerUID, id)
	if err != nil {
		t.Fatalf("vm.jailer.start: %v", err)
	}
	file.Close()
	jailOwned := fmt.Sprintf("%d:%d", res.UID, res.GID)
	idx := tapIndex(t, tap)
	asOwner := func(r api.TapCreate) error {
		return asUser(t, ownerUID, ownerUID, func() error { return f.client.CreateTap(ctx, r) })
	}
	jailAttaches := func(what string) {
		t.Helper()
		f2, _, err := asOwnerConnect(t, f, id)
		if err != nil {
			t.Fatalf("%s: vm.jailer.connect: %v", what, err)
		}
		var out map[string]string
		get(t, f2, "/tap?name="+tap, &out)
		if out["err"] != "" {
			t.Errorf("%s: the jail cannot attach its tap: %s", what, out["err"])
		}
	}
	held := func(what string, wantRules string) {
		t.Helper()
		if got := tapOwner(t, tap); got != jailOwned {
			t.Errorf("%s: tap owner:group = %s, want the jail's %s", what, got, jailOwned)
		}
		if got := tapIndex(t, tap); got != idx {
			t.Errorf("%s: tap is device %d, want %d", what, got, idx)
		}
		if got := tapRules(t, tap); got != wantRules {
			t.Errorf("%s: rules of %s =\n%s\nwant\n%s", what, tap, got, wantRules)
		}
	}

	// Rules deleted: the owner's tap.create puts them back.
	dropTapRules(t, tap)
	if err := asOwner(req); err != nil {
		t.Fatalf("tap.create of the jail's tap as the owner: %v", err)
	}
	held("rules deleted, tap.create", want)
	jailAttaches("after re-applying")

	// The whole bridge table lost: made again with the tap's rules.
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	c.DelTable(&nftables.Table{Name: hostnat.DefaultTable, Family: nftables.TableFamilyBridge})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := asOwner(req); err != nil {
		t.Fatalf("tap.create of the jail's tap after the table was lost: %v", err)
	}
	held("table lost, tap.create", want)

	// Another VM's tap given to the jail's uid has no record: refused, as
	// the owner and as root.
	otherID, _ := f.vmDir(t)
	other := guestnet.TapName(otherID)
	if err := f.client.CreateTap(ctx, tapReq(other, res.UID, res.GID)); err != nil { // root: any owner
		t.Fatalf("tap.create %s for the jail's uid: %v", other, err)
	}
	otherRules := tapRules(t, other)
	hostile := tapReq(other, ownerUID, ownerUID)
	hostile.IP, hostile.MAC = "10.213.77.250", "02:ba:00:00:00:fa"
	wantCode(t, "another vm's tap held by the jail's uid, as the owner", asOwner(hostile), api.CodeFailedPrecondition)
	wantCode(t, "another vm's tap held by the jail's uid, as root", f.client.CreateTap(ctx, hostile), api.CodeFailedPrecondition)
	if got := tapOwner(t, other); got != jailOwned {
		t.Errorf("another vm's tap after refused tap.create: owner %s, want %s", got, jailOwned)
	}
	if got := tapRules(t, other); got != otherRules {
		t.Errorf("another vm's tap's rules changed by a refused tap.create:\n%s\nwant\n%s", got, otherRules)
	}

	// The jail's record gone: refused, nothing changed.
	recPath := filepath.Join(f.cfg.JailDir(id), "banger-jail.json")
	if err := os.Rename(recPath, recPath+".aside"); err != nil {
		t.Fatal(err)
	}
	dropTapRules(t, tap)
	wantCode(t, "jail's tap without a record", asOwner(req), api.CodeFailedPrecondition)
	held("record gone, refused tap.create", "")
	if err := os.Rename(recPath+".aside", recPath); err != nil {
		t.Fatal(err)
	}
	if err := asOwner(req); err != nil {
		t.Fatalf("tap.create with the record back: %v", err)
	}
	held("record back", want)

	// The jail's process ended (record still there): refused, nothing
	// changed, even for a different guest identity.
	if err := unix.Kill(res.PID, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ { // reaped by the helper: bounded wait
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", res.PID)); os.IsNotExist(err) {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	moved := req
	moved.IP, moved.MAC = "10.213.77.251", "02:ba:00:00:00:fb"
	err = asOwner(moved)
	wantCode(t, "jail's tap after its process ended", err, api.CodeFailedPrecondition)
	if err != nil && !strings.Contains(err.Error(), "not running") {
		t.Errorf("refusal for an ended jail does not say so: %v", err)
	}
	held("jail ended, refused tap.create", want)

	// Stop gives the tap back; tap.create is then the owner's own again.
	if err := asUser(t, ownerUID, ownerUID, func() error { return f.client.StopJailer(ctx, id) }); err != nil {
		t.Fatalf("vm.jailer.stop: %v", err)
	}
	if err := asOwner(req); err != nil {
		t.Fatalf("tap.create after stop: %v", err)
	}
	if got, owned := tapOwner(t, tap), fmt.Sprintf("%d:%d", ownerUID, ownerUID); got != owned {
		t.Errorf("tap after stop = %s, want %s", got, owned)
	}
	if got := tapRules(t, tap); got != want {
		t.Errorf("rules after stop and tap.create =\n%s\nwant\n%s", got, want)
	}
}
