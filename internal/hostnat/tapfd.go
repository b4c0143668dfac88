package hostnat

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

var (
	// ErrNoTap: OpenTap was asked for a tap that does not exist.
	ErrNoTap = errors.New("tap does not exist")
	// ErrTapBusy: the tap is already open (single-queue taps take one
	// opener: its VMM is probably still running).
	ErrTapBusy = errors.New("tap is already in use")
)

// tapFlags are the flags CreateTap gives every tap; opening a tap asks for
// the same ones, so the VMM gets the device it was made as.
const tapFlags = unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR

// tunDevice is the clone device taps are opened through.
const tunDevice = "/dev/net/tun"

// OpenTap opens the existing persistent banger tap name and returns its
// descriptor, for a VMM that cannot open /dev/net/tun itself (mode 0600 on
// some hosts): the root helper opens it and passes the descriptor on.
// ownerUID >= 0 requires the tap to be owned by that uid (ErrNotOurs
// otherwise); -1 accepts any owner. A missing tap is ErrNoTap and is never
// created: TUNSETIFF on an unknown name would make a fresh transient one.
func (n *Network) OpenTap(ctx context.Context, name string, ownerUID int) (*os.File, error) {
	if err := ValidateTapName(name); err != nil {
		return nil, err
	}
	// Serialised with CreateTap and DeleteTap, so the tap checked here is
	// the one attached below.
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	before, err := persistentTap(name, ownerUID)
	if err != nil {
		return nil, fmt.Errorf("open tap %q: %w", name, err)
	}
	fd, err := unix.Open(tunDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open tap %q: open %s: %w", name, tunDevice, err)
	}
	f := os.NewFile(uintptr(fd), tunDevice+":"+name)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open tap %q: %w", name, err)
	}
	ifr.SetUint16(tapFlags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		f.Close()
		if errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("open tap %q: %w (is its vm's vmm still running?)", name, ErrTapBusy)
		}
		return nil, fmt.Errorf("open tap %q: attach to it: %w", name, err)
	}
	// Belt and braces: the device attached must still be the one checked.
	after, err := persistentTap(name, ownerUID)
	if err != nil || after.Attrs().Index != before.Attrs().Index {
		f.Close()
		return nil, fmt.Errorf("open tap %q: %w: it changed while being opened", name, ErrNotOurs)
	}
	n.log.DebugContext(ctx, "opened tap", "tap", name, "owner_uid", before.Owner)
	return f, nil
}

// persistentTap returns the tap name if it is one CreateTap could have made:
// a persistent tap (owned by ownerUID unless that is -1).
func persistentTap(name string, ownerUID int) (*netlink.Tuntap, error) {
	link, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, ErrNoTap
		}
		return nil, fmt.Errorf("look up tap: %w", err)
	}
	tt, ok := link.(*netlink.Tuntap)
	if !ok || tt.Mode != netlink.TUNTAP_MODE_TAP {
		return nil, fmt.Errorf("%w: it is a %s", ErrNotOurs, link.Type())
	}
	if tt.NonPersist {
		return nil, fmt.Errorf("%w: it is not a persistent tap", ErrNotOurs)
	}
	if ownerUID >= 0 && int64(tt.Owner) != int64(ownerUID) {
		return nil, fmt.Errorf("%w: owned by uid %d, not %d", ErrNotOurs, tt.Owner, ownerUID)
	}
	return tt, nil
}
