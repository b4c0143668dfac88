package roothelper_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/guestnet"
	"github.com/bangerdev/banger/internal/testutil"
)

// tapOfFile asks the kernel which tap f is attached to (TUNGETIFF).
func tapOfFile(f *os.File) (string, uint16, error) {
	raw, err := f.SyscallConn()
	if err != nil {
		return "", 0, err
	}
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return "", 0, err
	}
	var ierr error
	if err := raw.Control(func(fd uintptr) { ierr = unix.IoctlIfreq(int(fd), unix.TUNGETIFF, ifr) }); err != nil {
		return "", 0, err
	}
	if ierr != nil {
		return "", 0, fmt.Errorf("TUNGETIFF: %w", ierr)
	}
	return ifr.Name(), ifr.Uint16(), nil
}

// sendFrame writes one Ethernet broadcast frame into the tap through f,
// behind the zeroed virtio-net header the tap's IFF_VNET_HDR expects.
func sendFrame(f *os.File) error {
	raw, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var hdrLen int
	var ierr error
	if err := raw.Control(func(fd uintptr) { hdrLen, ierr = unix.IoctlGetInt(int(fd), unix.TUNGETVNETHDRSZ) }); err != nil {
		return err
	}
	if ierr != nil {
		return fmt.Errorf("TUNGETVNETHDRSZ: %w", ierr)
	}
	frame := make([]byte, hdrLen+14+46)
	eth := frame[hdrLen:]
	copy(eth[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(eth[6:12], []byte{0x02, 0xba, 0x9e, 0x00, 0x00, 0x01})
	eth[12], eth[13] = 0x88, 0xb5 // local experimental ethertype
	n, err := f.Write(frame)
	if err != nil {
		return err
	}
	if n != len(frame) {
		return fmt.Errorf("wrote %d of %d bytes", n, len(frame))
	}
	return nil
}

func rxPackets(t *testing.T, name string) uint64 {
	t.Helper()
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if l.Attrs().Statistics == nil {
		t.Fatalf("no statistics for %s", name)
	}
	return l.Attrs().Statistics.RxPackets
}

// TestOpenTap: the owner, unprivileged and unable to open /dev/net/tun
// itself, gets a working descriptor of its own tap from the helper, and
// nothing else.
func TestOpenTap(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	c, _, logs := startHelper(t, ownerUID)
	bg := context.Background()
	if _, err := c.NetworkUp(bg); err != nil {
		t.Fatalf("network.up: %v", err)
	}
	tap := guestnet.TapName("0a0b0c0d0e0f")
	rootTap := guestnet.TapName("0f0e0d0c0b0a")
	if err := c.CreateTap(bg, tapReq(tap, ownerUID, ownerUID)); err != nil {
		t.Fatalf("tap.create %s: %v", tap, err)
	}
	if err := c.CreateTap(bg, tapReq(rootTap, 0, 0)); err != nil {
		t.Fatalf("tap.create %s for root: %v", rootTap, err)
	}
	st, err := os.Stat("/dev/net/tun")
	if err != nil {
		t.Fatal(err)
	}
	tunMode := st.Mode().Perm()

	var f *os.File
	err = asUser(t, ownerUID, ownerUID, func() error {
		if tunMode&0o006 == 0 {
			// The situation this method exists for: the owner cannot open
			// the clone device.
			if d, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0); err == nil {
				d.Close()
				return fmt.Errorf("uid %d opened /dev/net/tun (mode %o): the test cannot show the helper is needed", ownerUID, tunMode)
			}
		} else {
			t.Logf("/dev/net/tun is mode %o here: the owner could open it itself", tunMode)
		}
		var err error
		f, err = c.OpenTap(bg, tap)
		return err
	})
	if err != nil {
		t.Fatalf("owner opens its tap: %v", err)
	}
	name, flags, err := tapOfFile(f)
	if err != nil {
		f.Close()
		t.Fatalf("passed descriptor: %v", err)
	}
	if name != tap {
		t.Errorf("passed descriptor is attached to %q, want %q", name, tap)
	}
	const want = unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR
	if flags&want != want || flags&unix.IFF_TUN != 0 {
		t.Errorf("passed descriptor flags = %#x, want tap, no-pi, vnet-hdr (%#x)", flags, want)
	}
	before := rxPackets(t, tap)
	if err := sendFrame(f); err != nil {
		t.Errorf("write a frame through the passed descriptor: %v", err)
	}
	if got := rxPackets(t, tap); got <= before {
		t.Errorf("tap %s received %d packets after a write, had %d: the descriptor is not wired to it", tap, got, before)
	}

	// Single-queue: while the descriptor is held (a running VMM), the tap
	// cannot be opened again.
	wantOpenCode(t, "second open of a held tap", c, tap, api.CodeFailedPrecondition)
	f.Close()
	// The helper kept no copy: once ours is closed the tap opens again.
	var again *os.File
	err = asUser(t, ownerUID, ownerUID, func() error {
		var err error
		again, err = c.OpenTap(bg, tap)
		return err
	})
	if err != nil {
		t.Fatalf("reopen after close (did the helper keep a copy?): %v", err)
	}
	again.Close()

	// Refusals.
	// Interfaces with banger names that CreateTap did not make: a bridge,
	// and a tun (not tap) device owned by the owner.
	if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "bt-bridge"}}); err != nil {
		t.Fatal(err)
	}
	tun := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "bt-tun"}, Mode: netlink.TUNTAP_MODE_TUN,
		Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR, Owner: ownerUID, Group: ownerUID}
	if err := netlink.LinkAdd(tun); err != nil {
		t.Fatal(err)
	}
	err = asUser(t, ownerUID, ownerUID, func() error {
		wantOpenCode(t, "owner opens root's tap", c, rootTap, api.CodeFailedPrecondition)
		wantOpenCode(t, "owner opens a bridge with a banger name", c, "bt-bridge", api.CodeFailedPrecondition)
		wantOpenCode(t, "owner opens its tun device with a banger name", c, "bt-tun", api.CodeFailedPrecondition)
		wantOpenCode(t, "owner opens a missing tap", c, "bt-missing", api.CodeNotFound)
		for _, name := range append([]string{"lo", "banger0"}, hostileTapNames...) {
			wantOpenCode(t, fmt.Sprintf("owner opens %q", name), c, name, api.CodeInvalidArgument)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = asUser(t, strayUID, strayUID, func() error {
		wantOpenCode(t, "stray uid opens the owner's tap", c, tap, api.CodePermissionDenied)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName("bt-missing"); err == nil {
		t.Error("opening a missing tap created it")
	}
	wantOpenCode(t, "root opens a bridge with a banger name", c, "bt-bridge", api.CodeFailedPrecondition)
	wantOpenCode(t, "root opens a tun device with a banger name", c, "bt-tun", api.CodeFailedPrecondition)

	// Root may open any banger tap.
	rf, err := c.OpenTap(bg, rootTap)
	if err != nil {
		t.Fatalf("root opens a root-owned tap: %v", err)
	}
	if name, _, err := tapOfFile(rf); err != nil || name != rootTap {
		t.Errorf("root's descriptor is attached to %q (%v), want %q", name, err, rootTap)
	}
	rf.Close()

	deadline := time.Now().Add(5 * time.Second)
	for !hasLog(logs.Records(t), "tap opened and passed") {
		if time.Now().After(deadline) {
			t.Error("no helper log line \"tap opened and passed\"")
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func wantOpenCode(t *testing.T, what string, c interface {
	OpenTap(context.Context, string) (*os.File, error)
}, name, code string) {
	t.Helper()
	f, err := c.OpenTap(context.Background(), name)
	if f != nil {
		f.Close()
	}
	var ae *api.Error
	if err == nil || !errors.As(err, &ae) || ae.Code != code {
		t.Errorf("%s: got %v (code %s), want code %s", what, err, api.CodeOf(err), code)
	}
}

func hasLog(recs []map[string]any, msg string) bool {
	for _, r := range recs {
		if r["msg"] == msg {
			return true
		}
	}
	return false
}
