package hostnat

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// TapOwner is who may attach a persistent tap: a process whose euid is UID
// or (on newer kernels, either suffices) that is in group GID.
type TapOwner struct {
	UID, GID int
}

// HandTap gives the persistent banger tap name, which must be owned by
// fromUID (and, when index > 0, be that device), to `to`, so a VMM running
// as them can attach it: a jailed Firecracker runs as a uid of its own. It
// returns the tap's index and its owner before. A missing tap is ErrNoTap;
// a tap of another owner or device ErrNotOurs; an attached one ErrTapBusy.
func (n *Network) HandTap(ctx context.Context, name string, fromUID, index int, to TapOwner) (int, TapOwner, error) {
	if err := ValidateTapName(name); err != nil {
		return 0, TapOwner{}, err
	}
	if err := validateOwner(to.UID, to.GID); err != nil {
		return 0, TapOwner{}, fmt.Errorf("hand tap %q: %w", name, err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return 0, TapOwner{}, err
	}
	before, err := persistentTap(name, fromUID)
	if err != nil {
		return 0, TapOwner{}, fmt.Errorf("hand tap %q to uid %d: %w", name, to.UID, err)
	}
	idx := before.Attrs().Index
	if index > 0 && idx != index {
		return 0, TapOwner{}, fmt.Errorf("hand tap %q to uid %d: %w: it is device %d, not %d", name, to.UID, ErrNotOurs, idx, index)
	}
	prev := TapOwner{UID: int(before.Owner), GID: int(before.Group)}
	// Owner and group are set through a descriptor attached to the tap:
	// attaching fails if anything holds it, so no open descriptor survives
	// the hand-over.
	fd, err := unix.Open(tunDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, TapOwner{}, fmt.Errorf("hand tap %q: open %s: %w", name, tunDevice, err)
	}
	f := os.NewFile(uintptr(fd), tunDevice+":"+name)
	defer f.Close()
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, TapOwner{}, fmt.Errorf("hand tap %q: %w", name, err)
	}
	ifr.SetUint16(tapFlags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return 0, TapOwner{}, fmt.Errorf("hand tap %q: %w (a process still has it open)", name, ErrTapBusy)
		}
		return 0, TapOwner{}, fmt.Errorf("hand tap %q: attach to it: %w", name, err)
	}
	if after, err := persistentTap(name, fromUID); err != nil || after.Attrs().Index != idx {
		return 0, TapOwner{}, fmt.Errorf("hand tap %q: %w: it changed while being handed", name, ErrNotOurs)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETOWNER, to.UID); err != nil {
		return 0, TapOwner{}, fmt.Errorf("hand tap %q to uid %d: %w", name, to.UID, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETGROUP, to.GID); err != nil {
		_ = unix.IoctlSetInt(fd, unix.TUNSETOWNER, prev.UID)
		return 0, TapOwner{}, fmt.Errorf("hand tap %q to gid %d: %w", name, to.GID, err)
	}
	n.log.InfoContext(ctx, "handed tap", "tap", name, "from_uid", prev.UID, "uid", to.UID, "gid", to.GID)
	return idx, prev, nil
}
