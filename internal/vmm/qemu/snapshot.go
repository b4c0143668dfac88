package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/bangerdev/banger/internal/vmm"
)

// Step names used by Restore.
const (
	StepIncomingArgs    = "incoming-args"
	StepMigrateIncoming = "migrate-incoming"
)

// snapshotFDName is the name under which the state file's descriptor is
// handed to QEMU (getfd); migration then uses "fd:<name>". Passing the fd
// avoids a shell ("exec:") and file: URIs, which QEMU 7.2 lacks.
const snapshotFDName = "banger-state"

// defaultMigrateTimeout bounds a migration when ctx has no deadline.
const defaultMigrateTimeout = 5 * time.Minute

// Save writes the running VM's device and memory state to statePath and
// leaves the VM paused: its disks must not change until it is restored from
// that state, so the caller either kills it or calls Resume.
func (d *Driver) Save(ctx context.Context, inst vmm.Instance, statePath string) error {
	if ok, reason := d.Alive(inst); !ok {
		return fmt.Errorf("save vm %q: %w: %s", inst.ID, vmm.ErrNotRunning, reason)
	}
	if len(inst.Helpers) > 0 {
		// QEMU 7.2 cannot migrate vhost-user-fs devices.
		return fmt.Errorf("save vm %q: %w: it shares host directories (virtio-fs)", inst.ID, vmm.ErrUnsupported)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultMigrateTimeout)
		defer cancel()
	}
	f, err := os.OpenFile(statePath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("save vm %q: create state file: %w", inst.ID, err)
	}
	defer f.Close()
	err = d.migrate(ctx, inst.ControlSocket, f, "migrate", false)
	if err != nil {
		_ = os.Remove(statePath)
		return fmt.Errorf("save vm %q to %s: %w", inst.ID, statePath, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("save vm %q: sync state file: %w", inst.ID, err)
	}
	return nil
}

// migrate hands f to QEMU and runs cmd ("migrate" or "migrate-incoming")
// over it, waiting for the migration to finish. ignoreShared is the
// x-ignore-shared capability: RAM in a shared file is left out of the
// stream (the file holds it), which both ends must agree on. It is set
// either way: a clone restored with it on keeps it, and its own suspend
// must save a stream a plain restore reads.
func (d *Driver) migrate(ctx context.Context, qmpPath string, f *os.File, cmd string, ignoreShared bool) error {
	q, err := DialQMP(ctx, qmpPath)
	if err != nil {
		return err
	}
	defer q.Close()
	caps := map[string]any{"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": ignoreShared}}}
	if err := q.Execute(ctx, "migrate-set-capabilities", caps, nil); err != nil {
		return fmt.Errorf("set x-ignore-shared: %w", err)
	}
	if err := q.ExecuteWithFD(ctx, "getfd", map[string]string{"fdname": snapshotFDName}, f); err != nil {
		return err
	}
	if err := q.Execute(ctx, cmd, map[string]string{"uri": "fd:" + snapshotFDName}, nil); err != nil {
		return err
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var st struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := q.Execute(ctx, "query-migrate", nil, &st); err != nil {
			return err
		}
		switch st.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("migration %s: %s", st.Status, st.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			_ = q.Execute(context.Background(), "migrate_cancel", nil, nil)
			return fmt.Errorf("migration (status %q): %w", st.Status, ctx.Err())
		case <-tick.C:
		}
	}
}

// Resume continues a paused VM (after Save).
func (d *Driver) Resume(ctx context.Context, inst vmm.Instance) error {
	if err := d.command(ctx, inst, "cont"); err != nil {
		return fmt.Errorf("resume vm %q: %w", inst.ID, err)
	}
	return nil
}

// Pause stops the guest's vCPUs.
func (d *Driver) Pause(ctx context.Context, inst vmm.Instance) error {
	if err := d.command(ctx, inst, "stop"); err != nil {
		return fmt.Errorf("pause vm %q: %w", inst.ID, err)
	}
	return nil
}

// Restore starts a new QEMU for spec (which must match the saved VM's
// devices, with its disks as they were at Save) and loads statePath into it.
func (d *Driver) Restore(ctx context.Context, spec vmm.Spec, statePath string) (vmm.Instance, error) {
	return d.restore(ctx, spec, statePath, false)
}

// RestorePaused is Restore leaving the guest paused (QEMU -S): no guest
// instruction runs until Resume, so a caller can finish checking the state
// file (it hashes it while QEMU loads it) before the guest may touch its
// disks.
func (d *Driver) RestorePaused(ctx context.Context, spec vmm.Spec, statePath string) (vmm.Instance, error) {
	return d.restore(ctx, spec, statePath, true)
}

func (d *Driver) restore(ctx context.Context, spec vmm.Spec, statePath string, paused bool) (vmm.Instance, error) {
	steps := d.Steps().
		InsertAfter(StepPrepare, vmm.Step[*Boot]{Name: StepIncomingArgs, Fn: func(ctx context.Context, b *Boot, _ *vmm.Undo) error {
			if _, err := os.Stat(statePath); err != nil {
				return fmt.Errorf("state file: %w", err)
			}
			b.Args = append(b.Args, "-incoming", "defer")
			if paused {
				b.Args = append(b.Args, "-S")
			}
			return nil
		}}).
		InsertBefore(StepCheckStatus, vmm.Step[*Boot]{Name: StepMigrateIncoming, Fn: func(ctx context.Context, b *Boot, _ *vmm.Undo) error {
			f, err := os.Open(statePath)
			if err != nil {
				return fmt.Errorf("open state file: %w", err)
			}
			defer f.Close()
			mctx, cancel := context.WithTimeout(ctx, defaultMigrateTimeout)
			defer cancel()
			// A clone's RAM maps the snapshot's memory file: the state
			// holds only the devices (saved by ShareMemory).
			cow := spec.Memory != nil && !spec.Memory.Shared
			if err := d.migrate(mctx, b.Paths.QMP, f, "migrate-incoming", cow); err != nil {
				return err
			}
			if paused {
				return nil
			}
			// Incoming migration ends in "running" (autostart), shortly after
			// "completed", unless the VM was saved paused (as banger's
			// suspend does): then it ends "paused" and is continued here.
			for range 100 {
				st, err := d.status(mctx, b.Paths.QMP)
				if err != nil || st.Running {
					return err
				}
				if st.Status == "paused" {
					if err := d.command(mctx, b.Instance, "cont"); err != nil {
						return fmt.Errorf("continue restored vm: %w", err)
					}
					continue
				}
				select {
				case <-b.Proc.Exited():
					return d.exitedEarly(b)
				case <-time.After(50 * time.Millisecond):
				}
			}
			return nil // check-status reports the state
		}})
	if paused {
		steps = steps.Replace(vmm.Step[*Boot]{Name: StepCheckStatus, Fn: d.stepCheckPaused})
	}
	return d.start(ctx, spec, steps)
}

// stepCheckPaused checks that a VM restored with -S waits, paused.
func (d *Driver) stepCheckPaused(ctx context.Context, b *Boot, _ *vmm.Undo) error {
	st, err := d.status(ctx, b.Paths.QMP)
	if err != nil {
		select {
		case <-b.Proc.Exited():
			return d.exitedEarly(b)
		default:
		}
		return err
	}
	if st.Running || st.Status != "paused" {
		return fmt.Errorf("restored vm is %q, want it paused", st.Status)
	}
	return nil
}

// ShareMemory splits a full saved state (statePath, from Save) into the
// guest's RAM as a file (ramPath) and its device state alone (devPath), so
// clones restored from devPath with spec.Memory{ramPath, not shared} map
// the RAM copy-on-write and share its unmodified pages. It loads the state
// into a paused QEMU whose RAM is ramPath (shared), saves it again without
// that RAM (x-ignore-shared) and ends that QEMU: the guest never runs.
// spec must match the saved VM's devices, its NIC's backend included (a
// virtio-net's features depend on the tap's); its disks are only opened.
func (d *Driver) ShareMemory(ctx context.Context, spec vmm.Spec, statePath, ramPath, devPath string) (err error) {
	spec.Memory = &vmm.MemoryFile{Path: ramPath, Shared: true}
	inst, err := d.restore(ctx, spec, statePath, true)
	if err != nil {
		return fmt.Errorf("load state into a memory file: %w", err)
	}
	defer func() {
		kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if kerr := d.Kill(kctx, inst); kerr != nil && !errors.Is(kerr, vmm.ErrNotRunning) {
			err = errors.Join(err, kerr)
		}
		_ = vmm.RemoveFiles(inst.Files...)
	}()
	f, err := os.OpenFile(devPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("create device state file: %w", err)
	}
	defer f.Close()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultMigrateTimeout)
		defer cancel()
	}
	if err := d.migrate(ctx, inst.ControlSocket, f, "migrate", true); err != nil {
		return fmt.Errorf("save device state apart from memory: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync device state: %w", err)
	}
	return nil
}
