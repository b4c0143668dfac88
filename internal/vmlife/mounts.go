package vmlife

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/guest/guestconfig"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/virtiofs"
	"github.com/bangerdev/banger/internal/vmm"
)

// ErrNotMigratable: the VM's state cannot be saved and restored (suspend,
// snapshot, fork).
var ErrNotMigratable = errors.New("vm state cannot be saved")

// Migratable reports whether vm's running state can be saved and restored
// (suspend, snapshot, fork). A VM sharing host directories cannot: QEMU
// 7.2's vhost-user-fs device does not migrate, and virtiofsd's open files
// would not survive anyway.
func Migratable(vm model.VM) error {
	if len(vm.Mounts) > 0 {
		return fmt.Errorf("%w: vm %q shares host directories (--mount/--workspace), which QEMU cannot migrate", ErrNotMigratable, vm.Name)
	}
	return nil
}

// checkMounts validates the requested mounts and working directory before
// anything is made, resolving each host directory (the daemon runs as the
// owner, so the access checks are the owner's), and gives each its tag.
func checkMounts(r *CreateRequest, drv vmm.Driver) ([]model.Mount, error) {
	if len(r.Mounts) == 0 {
		if r.Workdir != "" {
			return nil, api.Errorf(api.CodeInvalidArgument, "working directory %q needs a mount (--workspace mounts the current directory)", r.Workdir)
		}
		return nil, nil
	}
	if !drv.Capabilities().SharedDirs {
		return nil, api.Errorf(api.CodeFailedPrecondition,
			"--mount needs virtio-fs, which the %s driver lacks: copy your project in with banger vm sync instead, or use --vmm qemu", drv.Name())
	}
	if len(r.Mounts) > model.MaxMounts {
		return nil, api.Errorf(api.CodeInvalidArgument, "%d mounts: at most %d per vm", len(r.Mounts), model.MaxMounts)
	}
	out := make([]model.Mount, 0, len(r.Mounts))
	targets := map[string]bool{}
	for i, m := range r.Mounts {
		if !filepath.IsAbs(m.Source) {
			return nil, api.Errorf(api.CodeInvalidArgument, "mount %d: host directory %q must be absolute", i, m.Source)
		}
		src, err := virtiofs.CheckSource(m.Source, m.ReadOnly)
		if err != nil {
			return nil, api.Errorf(api.CodeInvalidArgument, "mount %s: %v", m.Source, err)
		}
		if m.Target == "" {
			m.Target = m.Source
		}
		if err := model.ValidateGuestPath(m.Target); err != nil {
			return nil, api.Errorf(api.CodeInvalidArgument, "mount %s: %v", m.Source, err)
		}
		if targets[m.Target] {
			return nil, api.Errorf(api.CodeInvalidArgument, "two mounts at guest path %q: give each its own GUEST_DIR", m.Target)
		}
		targets[m.Target] = true
		out = append(out, model.Mount{Source: src, Target: m.Target, ReadOnly: m.ReadOnly, Tag: "banger" + strconv.Itoa(i)})
	}
	if r.Workdir != "" {
		if err := model.ValidateGuestPath(r.Workdir); err != nil {
			return nil, api.Errorf(api.CodeInvalidArgument, "working directory: %v", err)
		}
	}
	return out, nil
}

// recheckMounts runs before each boot: a shared directory that went away or
// lost its permissions since create is refused before any process starts.
func recheckMounts(vm model.VM) error {
	for _, m := range vm.Mounts {
		src, err := virtiofs.CheckSource(m.Source, m.ReadOnly)
		if err != nil {
			return api.Errorf(api.CodeFailedPrecondition, "vm %q: mount %s: %v", vm.Name, m.Source, err)
		}
		if src != m.Source {
			return api.Errorf(api.CodeFailedPrecondition, "vm %q: mount %s now resolves to %s: recreate the vm to share it", vm.Name, m.Source, src)
		}
	}
	return nil
}

func specShares(vm model.VM) []vmm.Share {
	var out []vmm.Share
	for _, m := range vm.Mounts {
		out = append(out, vmm.Share{Tag: m.Tag, Source: m.Source, ReadOnly: m.ReadOnly})
	}
	return out
}

func guestMounts(vm model.VM) []guestconfig.Mount {
	var out []guestconfig.Mount
	for _, m := range vm.Mounts {
		out = append(out, guestconfig.Mount{Tag: m.Tag, Path: m.Target, ReadOnly: m.ReadOnly})
	}
	return out
}

// endHelpers ends the helper processes (virtiofsd) of a VMM that is gone;
// each normally exits by itself when the VMM hangs up.
func endHelpers(ctx context.Context, log *slog.Logger, inst vmm.Instance) {
	for _, h := range inst.Helpers {
		if err := vmm.KillAndWait(ctx, h.PID, h.PIDStartTime, 10*time.Second); err != nil {
			log.WarnContext(ctx, "end vmm helper", "helper", h.Name, "pid", h.PID, "err", err)
		}
	}
}
