package qemu

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/bangerdev/banger/internal/hostnat"
	"github.com/bangerdev/banger/internal/testutil"
	"github.com/bangerdev/banger/internal/vmm"
)

// TestBootWithTapFile: QEMU attaches to a tap opened for it (Net.File, as
// the root helper passes it) without opening /dev/net/tun, keeps it after
// the caller closes its copy, and lets go of it when killed.
func TestBootWithTapFile(t *testing.T) {
	testutil.RequireQEMU(t)
	kernel, _ := testutil.Kernel(t)
	if !testutil.InNetNS(t) {
		return
	}
	const tap = "bt-qemutest"
	link := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: tap}, Mode: netlink.TUNTAP_MODE_TAP,
		Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR}
	if err := netlink.LinkAdd(link); err != nil {
		t.Fatal(err)
	}
	n, err := hostnat.New(hostnat.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	f, err := n.OpenTap(ctx, tap, -1)
	if err != nil {
		t.Fatal(err)
	}
	spec := testSpec(t, kernel, testInitrd(t))
	spec.Net = &vmm.Net{Tap: tap, MAC: "52:54:00:00:00:42", File: f}
	d := newTestDriver(t)
	inst, err := d.Start(ctx, spec)
	f.Close() // QEMU has its own copy now
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Kill(context.Background(), inst) })
	waitConsole(t, d, inst, readyLine)

	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(inst.PID) + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(cmdline, []byte("tap,id=net0,fd=3")) || bytes.Contains(cmdline, []byte("ifname=")) {
		t.Errorf("qemu command line does not take the tap by descriptor: %q", cmdline)
	}
	if target, err := os.Readlink("/proc/" + strconv.Itoa(inst.PID) + "/fd/3"); err != nil || target != "/dev/net/tun" {
		t.Errorf("qemu's descriptor 3 is %q (%v), want /dev/net/tun", target, err)
	}
	// QEMU holds the single-queue tap: nobody else can attach.
	if g, err := n.OpenTap(ctx, tap, -1); !errors.Is(err, hostnat.ErrTapBusy) {
		if g != nil {
			g.Close()
		}
		t.Errorf("open of the tap qemu holds: %v, want ErrTapBusy", err)
	}
	if err := d.Kill(ctx, inst); err != nil {
		t.Fatal(err)
	}
	g, err := n.OpenTap(ctx, tap, -1)
	if err != nil {
		t.Fatalf("tap still held after qemu was killed: %v", err)
	}
	g.Close()
}
