package store

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/model"
)

func TestVMCRUD(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{t: time.Date(2025, 6, 1, 12, 0, 0, 123456789, time.UTC)}
	s, err := openWith(ctx, filepath.Join(t.TempDir(), "banger.db"), nil, options{now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	in := testVM("web")
	in.PIDStartTime = 1<<63 + 5 // the top bit must survive SQLite's signed INTEGER
	in.BootID = "boot-1"
	in.Policy = model.VMPolicy{DenyEgress: []string{"203.0.113.0/24"}, DenyPrivate: true, ForwardDeny: []int{22, 5432}}
	vm := mustCreateVM(t, s, in)
	if vm.ID == "" || vm.State != model.StateCreating || vm.CreatedAt.IsZero() || !vm.UpdatedAt.Equal(vm.CreatedAt) {
		t.Fatalf("CreateVM filled in %+v", vm)
	}
	for _, ref := range []string{"web", vm.ID} {
		got, err := s.GetVM(ctx, ref)
		if err != nil || !reflect.DeepEqual(got, vm) {
			t.Errorf("GetVM(%q) = %+v, %v\nwant %+v", ref, got, err, vm)
		}
	}
	if _, err := s.GetVM(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetVM(nope) = %v, want ErrNotFound", err)
	}
	dup := testVM("web")
	if _, err := s.CreateVM(ctx, dup); !errors.Is(err, ErrExists) {
		t.Errorf("CreateVM(duplicate name) = %v, want ErrExists", err)
	}
	dup = testVM("other")
	dup.ID = vm.ID
	if _, err := s.CreateVM(ctx, dup); !errors.Is(err, ErrExists) {
		t.Errorf("CreateVM(duplicate id) = %v, want ErrExists", err)
	}
	bad := testVM("Bad_Name")
	if _, err := s.CreateVM(ctx, bad); !errors.Is(err, model.ErrInvalidName) {
		t.Errorf("CreateVM(bad name) = %v, want ErrInvalidName", err)
	}

	// A name that spells another VM's id finds the VM named so.
	named := testVM("a")
	named.ID = "0123456789abcdef"
	tricky := mustCreateVM(t, s, named)
	spoof := testVM(tricky.ID)
	spoofed := mustCreateVM(t, s, spoof)
	if got, err := s.GetVM(ctx, tricky.ID); err != nil || got.ID != spoofed.ID {
		t.Errorf("GetVM(%q) = %s, %v; want the vm named so (%s)", tricky.ID, got.ID, err, spoofed.ID)
	}

	list, err := s.ListVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range list {
		names = append(names, v.Name)
		if v.Network != model.NetworkIsolated {
			t.Errorf("vm %s stored with network %q, want the default %q", v.Name, v.Network, model.NetworkIsolated)
		}
	}
	if strings.Join(names, ",") != "0123456789abcdef,a,web" {
		t.Errorf("ListVMs order = %v", names)
	}

	// Update: every field, state checked.
	vm.State = model.StateStarting
	vm.PID, vm.Tap, vm.IP = 4242, "bg-tap0", "10.0.0.2"
	vm.StartedAt = clock.now()
	up, err := s.UpdateVM(ctx, vm)
	if err != nil {
		t.Fatalf("UpdateVM: %v", err)
	}
	if !up.UpdatedAt.After(vm.CreatedAt) || !up.CreatedAt.Equal(vm.CreatedAt) {
		t.Errorf("UpdateVM times = created %v updated %v", up.CreatedAt, up.UpdatedAt)
	}
	if got, _ := s.GetVM(ctx, vm.ID); !reflect.DeepEqual(got, up) {
		t.Errorf("after UpdateVM GetVM = %+v\nwant %+v", got, up)
	}
	up.State = model.StateCreating
	if _, err := s.UpdateVM(ctx, up); !errors.Is(err, model.ErrInvalidTransition) {
		t.Errorf("UpdateVM(starting → creating) = %v, want ErrInvalidTransition", err)
	}
	up.State, up.Name = model.StateStarting, "a"
	if _, err := s.UpdateVM(ctx, up); !errors.Is(err, ErrExists) {
		t.Errorf("UpdateVM(rename onto a) = %v, want ErrExists", err)
	}
	ghost := testVM("ghost")
	ghost.ID, ghost.State, ghost.Network = "00000000000000ff", model.StateStopped, model.NetworkIsolated
	if _, err := s.UpdateVM(ctx, ghost); !errors.Is(err, ErrNotFound) {
		t.Errorf("UpdateVM(unknown) = %v, want ErrNotFound", err)
	}

	// SetVMState walks the table and refuses the rest.
	run, err := s.SetVMState(ctx, vm.ID, model.StateRunning, "")
	if err != nil || run.State != model.StateRunning || run.PID != 4242 {
		t.Fatalf("SetVMState(running) = %+v, %v", run, err)
	}
	if _, err := s.SetVMState(ctx, vm.ID, model.StateStarting, ""); !errors.Is(err, model.ErrInvalidTransition) {
		t.Errorf("SetVMState(running → starting) = %v, want ErrInvalidTransition", err)
	}
	failed, err := s.SetVMState(ctx, vm.ID, model.StateError, "vmm exited: status 1")
	if err != nil || failed.StateReason != "vmm exited: status 1" {
		t.Errorf("SetVMState(error) = %+v, %v", failed, err)
	}
	if got, _ := s.GetVM(ctx, vm.ID); got.State != model.StateError || got.StateReason != "vmm exited: status 1" {
		t.Errorf("stored state = %s %q", got.State, got.StateReason)
	}
	if _, err := s.SetVMState(ctx, "00000000000000ff", model.StateError, ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetVMState(unknown) = %v, want ErrNotFound", err)
	}

	if err := s.DeleteVM(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteVM(ctx, vm.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeleteVM twice = %v, want ErrNotFound", err)
	}
	if _, err := s.GetVM(ctx, vm.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetVM(deleted) = %v", err)
	}
}

func TestImagesKernelsAndInUse(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	img := model.Image{Name: "bookworm", Source: "debootstrap:bookworm", Digest: "aa", SizeBytes: 1 << 30, Path: "/i/bookworm.ext4"}
	put, err := s.PutImage(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetImage(ctx, "bookworm"); err != nil || !reflect.DeepEqual(got, put) {
		t.Errorf("GetImage = %+v, %v; want %+v", got, err, put)
	}
	put.Digest = "bb"
	if _, err := s.PutImage(ctx, put); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetImage(ctx, "bookworm"); got.Digest != "bb" {
		t.Errorf("PutImage did not replace: %+v", got)
	}
	if _, err := s.PutImage(ctx, model.Image{Name: "../etc"}); !errors.Is(err, model.ErrInvalidName) {
		t.Errorf("PutImage(../etc) = %v", err)
	}
	if _, err := s.PutImage(ctx, model.Image{Name: "alpine", Source: "oci:alpine", Path: "/i/alpine.ext4"}); err != nil {
		t.Fatal(err)
	}
	imgs, err := s.ListImages(ctx)
	if err != nil || len(imgs) != 2 || imgs[0].Name != "alpine" || imgs[1].Name != "bookworm" {
		t.Errorf("ListImages = %+v, %v", imgs, err)
	}

	k := model.Kernel{Name: "debian-6.1", Release: "6.1.0-56-cloud-amd64", Source: "apt", SHA256: "cc",
		Path: "/k/vmlinuz", ModulesDir: "/k/modules", VMMs: []model.VMMKind{"qemu"}}
	putK, err := s.PutKernel(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetKernel(ctx, "debian-6.1"); err != nil || !reflect.DeepEqual(got, putK) {
		t.Errorf("GetKernel = %+v, %v; want %+v", got, err, putK)
	}
	if ks, err := s.ListKernels(ctx); err != nil || len(ks) != 1 {
		t.Errorf("ListKernels = %v, %v", ks, err)
	}
	if _, err := s.GetKernel(ctx, "none"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetKernel(none) = %v", err)
	}

	a := mustCreateVM(t, s, testVM("zeta"))
	b := mustCreateVM(t, s, testVM("alpha"))
	c := testVM("other")
	c.Image, c.Kernel = "alpine", "other-kernel"
	mustCreateVM(t, s, c)
	if users, err := s.ImageInUse(ctx, "bookworm"); err != nil || !reflect.DeepEqual(users, []string{"alpha", "zeta"}) {
		t.Errorf("ImageInUse(bookworm) = %v, %v", users, err)
	}
	if users, err := s.KernelInUse(ctx, "debian-6.1"); err != nil || !reflect.DeepEqual(users, []string{"alpha", "zeta"}) {
		t.Errorf("KernelInUse(debian-6.1) = %v, %v", users, err)
	}
	if users, err := s.KernelInUse(ctx, "unused"); err != nil || len(users) != 0 {
		t.Errorf("KernelInUse(unused) = %v, %v", users, err)
	}
	err = s.DeleteImage(ctx, "bookworm")
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "alpha, zeta") {
		t.Errorf("DeleteImage(in use) = %v, want ErrInUse naming alpha, zeta", err)
	}
	if err := s.DeleteKernel(ctx, "debian-6.1"); !errors.Is(err, ErrInUse) {
		t.Errorf("DeleteKernel(in use) = %v, want ErrInUse", err)
	}
	for _, id := range []string{a.ID, b.ID} {
		if err := s.DeleteVM(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if users, err := s.ImageInUse(ctx, "bookworm"); err != nil || len(users) != 0 {
		t.Errorf("ImageInUse after deletes = %v, %v", users, err)
	}
	if err := s.DeleteImage(ctx, "bookworm"); err != nil {
		t.Errorf("DeleteImage(unused) = %v", err)
	}
	if err := s.DeleteKernel(ctx, "debian-6.1"); err != nil {
		t.Errorf("DeleteKernel(unused) = %v", err)
	}
	if err := s.DeleteImage(ctx, "bookworm"); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeleteImage twice = %v, want ErrNotFound", err)
	}
}

func TestAllocateLeaseConcurrent(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	pool := netip.MustParsePrefix("10.77.0.0/27") // 30 usable
	gateway := netip.MustParseAddr("10.77.0.1")
	const n = 20

	vms := make([]model.VM, n)
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range vms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			vm, err := s.CreateVM(ctx, testVM(fmt.Sprintf("vm-%02d", i)))
			vms[i] = vm
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	leases := make([]model.Lease, n)
	for i := range vms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := s.AllocateLease(ctx, vms[i].ID, pool, []netip.Addr{gateway})
			leases[i] = l
			if err != nil {
				errs <- err
			}
			if _, err := s.ListVMs(ctx); err != nil { // readers run beside the writers
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[netip.Addr]string{}
	for i, l := range leases {
		a, err := netip.ParseAddr(l.IP)
		if err != nil {
			t.Fatalf("lease %d has IP %q", i, l.IP)
		}
		if !pool.Contains(a) || a == pool.Addr() || a == netip.MustParseAddr("10.77.0.31") || a == gateway {
			t.Errorf("lease %s is outside the usable pool", a)
		}
		if other, dup := seen[a]; dup {
			t.Errorf("%s leased to both %s and %s", a, other, l.VMID)
		}
		seen[a] = l.VMID
		if l.VMID != vms[i].ID || l.MAC != vms[i].MAC {
			t.Errorf("lease %d = %+v, want vm %s mac %s", i, l, vms[i].ID, vms[i].MAC)
		}
	}
	// The lowest addresses were taken: .2 … .21.
	for i := 2; i < 2+n; i++ {
		if _, ok := seen[netip.AddrFrom4([4]byte{10, 77, 0, byte(i)})]; !ok {
			t.Errorf("10.77.0.%d not leased; leases: %v", i, seen)
		}
	}
	all, err := s.ListLeases(ctx)
	if err != nil || len(all) != n || all[0].IP != "10.77.0.2" || all[n-1].IP != "10.77.0.21" {
		t.Errorf("ListLeases = %d leases (%v), %v; want %d in address order", len(all), all, err, n)
	}
	// Asking again returns the same lease.
	again, err := s.AllocateLease(ctx, vms[3].ID, pool, []netip.Addr{gateway})
	if err != nil || again != leases[3] {
		t.Errorf("AllocateLease again = %+v, %v; want %+v", again, err, leases[3])
	}
}

func TestAllocateLeaseExhaustionAndRelease(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	pool := netip.MustParsePrefix("10.78.0.0/29") // .1–.6 usable, .1 reserved: 5 left
	reserved := []netip.Addr{netip.MustParseAddr("10.78.0.1")}
	var vms []model.VM
	for i := 0; i < 6; i++ {
		vms = append(vms, mustCreateVM(t, s, testVM(fmt.Sprintf("x%d", i))))
	}
	for i := 0; i < 5; i++ {
		l, err := s.AllocateLease(ctx, vms[i].ID, pool, reserved)
		if err != nil || l.IP != fmt.Sprintf("10.78.0.%d", i+2) {
			t.Fatalf("AllocateLease %d = %+v, %v", i, l, err)
		}
	}
	_, err := s.AllocateLease(ctx, vms[5].ID, pool, reserved)
	if !errors.Is(err, ErrPoolExhausted) || !strings.Contains(err.Error(), "10.78.0.0/29") || !strings.Contains(err.Error(), "all 6 usable") {
		t.Fatalf("AllocateLease on a full pool = %v, want ErrPoolExhausted naming the pool", err)
	}
	if err := s.ReleaseLease(ctx, vms[1].ID); err != nil { // frees .3
		t.Fatal(err)
	}
	if err := s.ReleaseLease(ctx, vms[1].ID); err != nil {
		t.Errorf("ReleaseLease twice = %v, want nil", err)
	}
	if _, err := s.LeaseForVM(ctx, vms[1].ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("LeaseForVM(released) = %v", err)
	}
	l, err := s.AllocateLease(ctx, vms[5].ID, pool, reserved)
	if err != nil || l.IP != "10.78.0.3" {
		t.Errorf("AllocateLease after release = %+v, %v; want 10.78.0.3", l, err)
	}
	// Deleting a VM frees its address too.
	if err := s.DeleteVM(ctx, vms[0].ID); err != nil {
		t.Fatal(err)
	}
	if l, err := s.AllocateLease(ctx, vms[1].ID, pool, reserved); err != nil || l.IP != "10.78.0.2" {
		t.Errorf("AllocateLease after DeleteVM = %+v, %v; want 10.78.0.2", l, err)
	}

	if _, err := s.AllocateLease(ctx, "00000000000000ff", netip.MustParsePrefix("10.79.0.0/24"), nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("AllocateLease(unknown vm) = %v, want ErrNotFound", err)
	}
	if _, err := s.AllocateLease(ctx, vms[5].ID, netip.MustParsePrefix("10.79.0.0/24"), nil); !errors.Is(err, ErrExists) {
		t.Errorf("AllocateLease(vm holding a lease elsewhere) = %v, want ErrExists", err)
	}
	if _, err := s.AllocateLease(ctx, vms[5].ID, netip.MustParsePrefix("fd00::/120"), nil); err == nil {
		t.Error("AllocateLease(IPv6 pool) succeeded")
	}
	if _, err := s.AllocateLease(ctx, vms[5].ID, netip.MustParsePrefix("10.80.0.0/31"), nil); err == nil {
		t.Error("AllocateLease(/31) succeeded")
	}
}

func TestGuestSessions(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	vm := mustCreateVM(t, s, testVM("web"))
	first, err := s.StartGuestSession(ctx, model.GuestSession{VMID: vm.ID, OpID: "op-1", Command: []string{"uname", "-a"}})
	if err != nil || first.ID == "" || first.EndedAt != nil {
		t.Fatalf("StartGuestSession = %+v, %v", first, err)
	}
	second, err := s.StartGuestSession(ctx, model.GuestSession{VMID: vm.ID, Command: []string{"sleep", "1"}, StartedAt: first.StartedAt.Add(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	ended, err := s.EndGuestSession(ctx, first.ID, 3)
	if err != nil || ended.EndedAt == nil || ended.ExitCode == nil || *ended.ExitCode != 3 {
		t.Fatalf("EndGuestSession = %+v, %v", ended, err)
	}
	if _, err := s.EndGuestSession(ctx, first.ID, 0); err == nil {
		t.Error("EndGuestSession twice succeeded")
	}
	if _, err := s.EndGuestSession(ctx, "nope", 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("EndGuestSession(unknown) = %v", err)
	}
	list, err := s.ListGuestSessions(ctx, vm.ID)
	if err != nil || len(list) != 2 || !reflect.DeepEqual(list[0], ended) || !reflect.DeepEqual(list[1], second) {
		t.Errorf("ListGuestSessions = %+v, %v\nwant [%+v %+v]", list, err, ended, second)
	}
	if _, err := s.StartGuestSession(ctx, model.GuestSession{VMID: "00000000000000ff", Command: []string{"true"}}); !errors.Is(err, ErrNotFound) {
		t.Errorf("StartGuestSession(unknown vm) = %v, want ErrNotFound", err)
	}
	if _, err := s.StartGuestSession(ctx, model.GuestSession{VMID: vm.ID}); err == nil {
		t.Error("StartGuestSession(no command) succeeded")
	}
	if err := s.DeleteVM(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	if list, err := s.ListGuestSessions(ctx, vm.ID); err != nil || len(list) != 0 {
		t.Errorf("sessions outlived their vm: %v, %v", list, err)
	}
}

func TestHostKeys(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	vm := mustCreateVM(t, s, testVM("web"))
	k := model.HostKey{VMID: vm.ID, Algorithm: "ssh-ed25519", Key: "ssh-ed25519 AAAAC3first"}
	pinned, err := s.PinHostKey(ctx, k)
	if err != nil || pinned.PinnedAt.IsZero() {
		t.Fatalf("PinHostKey = %+v, %v", pinned, err)
	}
	if again, err := s.PinHostKey(ctx, k); err != nil || !reflect.DeepEqual(again, pinned) {
		t.Errorf("PinHostKey(same key) = %+v, %v; want the first pin", again, err)
	}
	k2 := k
	k2.Key = "ssh-ed25519 AAAAC3second"
	if _, err := s.PinHostKey(ctx, k2); !errors.Is(err, ErrHostKeyMismatch) {
		t.Errorf("PinHostKey(other key) = %v, want ErrHostKeyMismatch", err)
	}
	rsa := model.HostKey{VMID: vm.ID, Algorithm: "rsa-sha2-512", Key: "ssh-rsa AAAAB3"}
	if _, err := s.PinHostKey(ctx, rsa); err != nil {
		t.Fatal(err)
	}
	keys, err := s.GetHostKeys(ctx, vm.ID)
	if err != nil || len(keys) != 2 || keys[0].Algorithm != "rsa-sha2-512" || keys[1].Key != k.Key {
		t.Errorf("GetHostKeys = %+v, %v", keys, err)
	}
	if _, err := s.PinHostKey(ctx, model.HostKey{VMID: "00000000000000ff", Algorithm: "a", Key: "b"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("PinHostKey(unknown vm) = %v, want ErrNotFound", err)
	}
	if err := s.ForgetHostKeys(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	if keys, err := s.GetHostKeys(ctx, vm.ID); err != nil || len(keys) != 0 {
		t.Errorf("GetHostKeys after Forget = %v, %v", keys, err)
	}
	if _, err := s.PinHostKey(ctx, k2); err != nil {
		t.Errorf("PinHostKey after Forget = %v", err)
	}
}

func TestNetObjects(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	vm := mustCreateVM(t, s, testVM("web"))
	bridge, err := s.RecordNetObject(ctx, model.NetObject{Kind: model.NetBridge, Name: "banger0"})
	if err != nil {
		t.Fatal(err)
	}
	tap, err := s.RecordNetObject(ctx, model.NetObject{Kind: model.NetTap, Name: "bg-" + vm.ID[:8], VMID: vm.ID})
	if err != nil {
		t.Fatal(err)
	}
	if again, err := s.RecordNetObject(ctx, tap); err != nil || !reflect.DeepEqual(again, tap) {
		t.Errorf("RecordNetObject(same) = %+v, %v", again, err)
	}
	if _, err := s.RecordNetObject(ctx, model.NetObject{Kind: model.NetTap, Name: tap.Name, VMID: "00000000000000ff"}); !errors.Is(err, ErrExists) {
		t.Errorf("RecordNetObject(other vm) = %v, want ErrExists", err)
	}
	if _, err := s.RecordNetObject(ctx, model.NetObject{Kind: model.NetTap}); err == nil {
		t.Error("RecordNetObject(no name) succeeded")
	}
	byVM, err := s.ListNetObjectsByVM(ctx, vm.ID)
	if err != nil || len(byVM) != 1 || !reflect.DeepEqual(byVM[0], tap) {
		t.Errorf("ListNetObjectsByVM = %+v, %v", byVM, err)
	}
	// The record outlives the VM row until the tap is removed.
	if err := s.DeleteVM(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	all, err := s.ListNetObjects(ctx)
	if err != nil || !reflect.DeepEqual(all, []model.NetObject{bridge, tap}) {
		t.Errorf("ListNetObjects = %+v, %v", all, err)
	}
	if err := s.RemoveNetObject(ctx, model.NetTap, tap.Name); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveNetObject(ctx, model.NetTap, tap.Name); err != nil {
		t.Errorf("RemoveNetObject twice = %v", err)
	}
	if all, err := s.ListNetObjects(ctx); err != nil || len(all) != 1 || all[0].Kind != model.NetBridge {
		t.Errorf("ListNetObjects after remove = %+v, %v", all, err)
	}
}

// TestConcurrentStateChanges: many goroutines racing one VM through
// transitions never corrupt it, and each change is checked against the
// state it really replaced.
func TestConcurrentStateChanges(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	vm := mustCreateVM(t, s, testVM("busy"))
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.SetVMState(ctx, vm.ID, model.StateStarting, "")
			switch {
			case err == nil:
				mu.Lock()
				wins++
				mu.Unlock()
			case !errors.Is(err, model.ErrInvalidTransition):
				t.Errorf("SetVMState: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Errorf("creating → starting succeeded %d times, want exactly once", wins)
	}
}

func BenchmarkListVMs(b *testing.B) {
	ctx := context.Background()
	s := openTest(b)
	for i := 0; i < 20; i++ {
		mustCreateVM(b, s, testVM(fmt.Sprintf("vm-%02d", i)))
	}
	for b.Loop() {
		vms, err := s.ListVMs(ctx)
		if err != nil || len(vms) != 20 {
			b.Fatalf("ListVMs = %d, %v", len(vms), err)
		}
	}
}
