package netattach_test

import (
	"context"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/testutil"
)

// TestOpenTap: the attached VM's tap comes back as an open descriptor of
// that very tap; a VM without a tap gets an error, not a descriptor.
func TestOpenTap(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	c, _ := startHelper(t)
	st := openStore(t)
	a := newAttacher(t, c, st)
	vms := createVMs(t, st, 1)
	ctx := context.Background()

	vm := vms[0]
	if f, err := a.OpenTap(ctx, vm); err == nil {
		f.Close()
		t.Fatal("OpenTap of a vm without a tap succeeded")
	}
	att, err := a.Attach(ctx, vm)
	if err != nil {
		t.Fatal(err)
	}
	vm.Tap = att.Tap
	f, err := a.OpenTap(ctx, vm)
	if err != nil {
		t.Fatalf("OpenTap: %v", err)
	}
	ifr, err := unix.NewIfreq("")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ierr error
	if err := raw.Control(func(fd uintptr) { ierr = unix.IoctlIfreq(int(fd), unix.TUNGETIFF, ifr) }); err != nil || ierr != nil {
		t.Fatalf("TUNGETIFF on the opened tap: %v %v", err, ierr)
	}
	if ifr.Name() != att.Tap {
		t.Errorf("opened descriptor is attached to %q, want %q", ifr.Name(), att.Tap)
	}
	f.Close()
	if err := a.Detach(ctx, vm); err != nil {
		t.Error(err)
	}
	checkNothingLeft(t, st)
}
