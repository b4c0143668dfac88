package roothelper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/vishvananda/netlink"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/guestnet"
	"github.com/bangerdev/banger/internal/hostnat"
)

// handTap gives the VM's tap to the jail's uid and gid, so the jailed
// Firecracker (which opens it by name) can attach it. The helper names the
// tap itself from the VM id (guestnet.TapName, as the daemon names it):
// the request carries no tap name, so no other VM's tap can be asked for.
// The tap must be a persistent one of the owner uid and free; a VM without
// a tap gets none. The undo gives it back.
func (s *jailerService) handTap(ctx context.Context, rec *jailRec, u *undo, log *slog.Logger) error {
	name := guestnet.TapName(rec.VMID)
	if s.net == nil {
		var nf netlink.LinkNotFoundError
		if _, err := netlink.LinkByName(name); errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("%w: hand tap %s to the jail: the root helper's host network config is invalid (fix its --subnet/--bridge)", errTapRefused, name)
	}
	idx, prev, err := s.net.HandTap(ctx, name, s.ownerUID, 0, hostnat.TapOwner{UID: rec.UID, GID: rec.GID})
	if errors.Is(err, hostnat.ErrNoTap) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("hand the vm's tap to the jail's uid %d: %w", rec.UID, err)
	}
	rec.Tap, rec.TapIndex, rec.TapUID, rec.TapGID = name, idx, prev.UID, prev.GID
	r := *rec
	u.push(func() {
		if err := s.giveTapBack(context.WithoutCancel(ctx), r, log); err != nil {
			log.ErrorContext(ctx, "tap not given back", "vm", r.VMID, "tap", r.Tap, "err", err)
		}
	})
	return nil
}

var errTapRefused = errors.New("tap refused")

// giveTapBack gives the recorded tap back to its owner, if the jail's uid
// still holds that very device. A tap the helper cannot give back is
// removed rather than left to the jail's uid.
func (s *jailerService) giveTapBack(ctx context.Context, rec jailRec, log *slog.Logger) error {
	if rec.Tap == "" || s.net == nil {
		return nil
	}
	_, _, err := s.net.HandTap(ctx, rec.Tap, rec.UID, rec.TapIndex, hostnat.TapOwner{UID: rec.TapUID, GID: rec.TapGID})
	switch {
	case err == nil, errors.Is(err, hostnat.ErrNoTap), errors.Is(err, hostnat.ErrNotOurs):
		// Given back, gone, or no longer the jail's (another owner or device).
		return nil
	}
	log.WarnContext(ctx, "removing a tap that could not be given back from the jail", "vm", rec.VMID, "tap", rec.Tap, "err", err)
	if derr := s.net.DeleteTap(ctx, rec.Tap); derr != nil {
		return fmt.Errorf("give tap %s back to uid %d: %v; remove it: %w", rec.Tap, rec.TapUID, err, derr)
	}
	return nil
}

// tapErrorCode maps a failed hand-over to a wire code.
func tapErrorCode(err error) string {
	switch {
	case errors.Is(err, hostnat.ErrNotOurs):
		return api.CodePermissionDenied
	case errors.Is(err, hostnat.ErrTapBusy), errors.Is(err, errTapRefused):
		return api.CodeFailedPrecondition
	}
	return api.CodeInternal
}
