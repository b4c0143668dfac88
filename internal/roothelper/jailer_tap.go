package roothelper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/guestnet"
	"github.com/bangerdev/banger/internal/hostnat"
	"github.com/bangerdev/banger/internal/model"
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

// errJailNotRunning: a tap's jail record exists but its process is gone.
var errJailNotRunning = errors.New("its jail is not running")

// withHeldTap runs fn, with no jail starting or stopping meanwhile, if a
// running jail holds the tap name: the jail record of the VM whose tap it
// is (guestnet.TapName of the record's id, the record's own tap) and a
// process that is still that jail's. It reports whether fn ran. A record
// whose process is gone is errJailNotRunning; no record, (false, nil).
// The tap name is a hash of the VM id, so the jails' ids are searched.
func (s *jailerService) withHeldTap(name string, fn func(rec jailRec) error) (bool, error) {
	if s == nil || s.cfgErr != nil || s.net == nil {
		return false, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	entries, err := os.ReadDir(filepath.Join(s.cfg.ChrootBase, s.cfg.ExecName()))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("list jails: %w", err)
	}
	for i, e := range entries {
		if i >= 1<<16 {
			break
		}
		id := e.Name()
		if model.ValidateVMID(id) != nil || guestnet.TapName(id) != name {
			continue
		}
		rec, err := s.readRecord(id)
		if err != nil || rec.Tap != name || rec.TapIndex <= 0 {
			continue
		}
		pfd, err := s.verify(rec)
		if err != nil {
			return false, fmt.Errorf("%w: tap %q is held by the jail of vm %s (uid %d) whose firecracker ended (%v): stop the vm to give the tap back", errJailNotRunning, name, id, rec.UID, err)
		}
		defer unix.Close(pfd) // pins the process while fn runs
		return true, fn(rec)
	}
	return false, nil
}
