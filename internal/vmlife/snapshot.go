package vmlife

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/bangerdev/banger/internal/events"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/opid"
	"github.com/bangerdev/banger/internal/progress"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/vmdisk"
	"github.com/bangerdev/banger/internal/vmm"
)

// Snapshots. A snapshot is a running VM's memory and device state and a
// copy of its root disk, taken at one instant: the guest's root filesystem
// is synced and frozen through the agent, the vCPUs paused, the state saved
// and the disk copied (a reflink where the filesystem has them, else a
// sparse copy: 0.09 s for the 2 GiB test disk on ext4), then the guest
// continues (or, with Stop, its VMM ends). Snapshots live in their own dir
// under the data dir, recorded in the store with the state's size and
// SHA-256, which every fork checks before anything is made.

// autoThaw bounds how long a guest stays frozen if the host never thaws
// it (a daemon that died mid-snapshot).
const autoThaw = 60 * time.Second

// snapshotStateFile and snapshotDisk are a snapshot's files.
func snapshotStateFile(sn model.Snapshot) string { return filepath.Join(sn.Dir, "state") }
func snapshotDisk(sn model.Snapshot) string      { return filepath.Join(sn.Dir, "root.ext4") }

// freezer is an agent that can quiesce the guest's filesystems.
type freezer interface {
	Freeze(ctx context.Context, autoThaw time.Duration) error
	Thaw(ctx context.Context) error
}

// reidentifier is an agent that can hand a clone its own identity.
type reidentifier interface {
	Reidentify(ctx context.Context, id agentproto.Identity) (agentproto.Reidentified, error)
}

// SnapshotRequest is vm.snapshot's input.
type SnapshotRequest struct {
	VM   string `json:"vm"`
	As   string `json:"as,omitempty"`   // the snapshot's name (default VM-YYYYMMDD-HHMMSS)
	Stop bool   `json:"stop,omitempty"` // end the VM after the snapshot
	Kind string `json:"kind,omitempty"` // model.SnapshotKindSnapshot (default) or ...Template
}

// Snapshot captures a running VM. On failure nothing is recorded, no file
// is left, and the VM runs on as before.
func (m *Manager) Snapshot(ctx context.Context, req SnapshotRequest, report progress.Func) (model.Snapshot, error) {
	vm, err := m.Get(ctx, req.VM)
	if err != nil {
		return model.Snapshot{}, err
	}
	ctx = opid.WithVM(ctx, vm.Name)
	unlock := m.lock(vm.ID)
	defer unlock()
	if vm, err = m.d.Store.GetVM(ctx, vm.ID); err != nil {
		return model.Snapshot{}, err
	}
	m.mu.Lock()
	r := m.running[vm.ID]
	m.mu.Unlock()
	if vm.State != model.StateRunning || r == nil {
		return model.Snapshot{}, api.Errorf(api.CodeFailedPrecondition, "vm %q is %s: only a running vm can be snapshotted (banger vm start %s)", vm.Name, vm.State, vm.Name)
	}
	snap, ok := r.driver.(vmm.Snapshotter)
	if !ok || !r.driver.Capabilities().SupportsSnapshots {
		return model.Snapshot{}, api.Errorf(api.CodeUnimplemented, "snapshot vm %q: not supported by the %s driver yet", vm.Name, r.driver.Name())
	}
	if err := Migratable(vm); err != nil {
		return model.Snapshot{}, api.Errorf(api.CodeFailedPrecondition, "snapshot vm %q: %v", vm.Name, err)
	}
	if req.Kind == "" {
		req.Kind = model.SnapshotKindSnapshot
	}
	if req.As == "" {
		req.As = vm.Name + "-" + strings.ToLower(m.d.Now().UTC().Format("20060102-150405"))
	}
	if err := model.ValidateSnapshotName(req.As); err != nil {
		return model.Snapshot{}, api.Errorf(api.CodeInvalidArgument, "%v", err)
	}
	if _, err := m.d.Store.GetSnapshot(ctx, req.As); err == nil {
		return model.Snapshot{}, api.Errorf(api.CodeAlreadyExists, "snapshot %q already exists: pick another --as, or remove it (banger snapshot rm %s)", req.As, req.As)
	}
	id, err := model.NewSnapshotID()
	if err != nil {
		return model.Snapshot{}, err
	}
	sn := model.Snapshot{
		ID: id, Name: req.As, Kind: req.Kind, SourceVM: vm.Name, SourceVMID: vm.ID,
		Image: vm.Image, Kernel: vm.Kernel, VMM: vm.VMM, CPUs: vm.CPUs, MemoryMiB: vm.MemoryMiB, DiskBytes: vm.DiskBytes,
		InitMode: vm.InitMode, Network: vm.Network, Policy: vm.Policy, BootID: vm.BootID, MAC: vm.MAC,
		Dir: filepath.Join(m.d.Paths.SnapshotsDir(), id),
	}
	lg := m.d.Log.With("vm", vm.Name, "snapshot", sn.Name)
	begin := time.Now()
	var undo vmm.Undo
	fail := func(err error) (model.Snapshot, error) {
		if uerr := undo.Run(ctx); uerr != nil {
			lg.WarnContext(ctx, "undo a failed snapshot", "err", uerr)
		}
		return model.Snapshot{}, apiError(fmt.Errorf("snapshot vm %q: %w (the vm keeps running and nothing was saved)", vm.Name, err))
	}
	if err := os.MkdirAll(sn.Dir, 0o700); err != nil {
		return fail(fmt.Errorf("create snapshot directory: %w", err))
	}
	undo.Push(func(context.Context) error { return os.RemoveAll(sn.Dir) })

	report.Stage("quiesce", "syncing and freezing the guest's filesystems")
	if fz, ok := r.agent.(freezer); ok {
		fctx, cancel := context.WithTimeout(ctx, 100*time.Second) // the guest first finishes booting
		err := fz.Freeze(fctx, autoThaw)
		cancel()
		switch {
		case errors.Is(err, &agentproto.Error{Code: agentproto.CodeUnsupported}):
			lg.WarnContext(ctx, "guest agent cannot freeze: the disk is captured unfrozen (memory and disk are still taken at one paused instant)")
		case err != nil:
			return fail(fmt.Errorf("freeze the guest's filesystems: %w", err))
		default:
			undo.Push(func(ctx context.Context) error {
				tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				return fz.Thaw(tctx)
			})
		}
	}
	report.Stage("save", "saving memory and device state")
	if p, ok := r.driver.(pauser); ok {
		if err := p.Pause(ctx, r.inst); err != nil {
			return fail(err)
		}
		if rs, ok := r.driver.(resumer); ok {
			undo.Push(func(ctx context.Context) error {
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				return rs.Resume(cctx, r.inst)
			})
		}
	}
	if err := snap.Save(ctx, r.inst, snapshotStateFile(sn)); err != nil {
		return fail(fmt.Errorf("save state to %s (if the disk is full, free space and retry): %w", sn.Dir, err))
	}
	report.Stage("disk", "capturing the root disk")
	if _, err := vmdisk.Clone(rootDisk(vm), snapshotDisk(sn)); err != nil {
		return fail(fmt.Errorf("capture root disk: %w", err))
	}
	// The state and disk are whole: the source may go on (or stop).
	if req.Stop {
		m.mu.Lock()
		r.stopping = true
		m.mu.Unlock()
		if err := r.driver.Kill(ctx, r.inst); err != nil && !errors.Is(err, vmm.ErrNotRunning) {
			m.mu.Lock()
			r.stopping = false
			m.mu.Unlock()
			return fail(fmt.Errorf("end the vmm after the snapshot: %w", err))
		}
		undo.Discard()
		undo.Push(func(context.Context) error { return os.RemoveAll(sn.Dir) })
		r.cancel()
		r.agent.Close()
		m.mu.Lock()
		delete(m.running, vm.ID)
		m.mu.Unlock()
		m.clearRuntime(ctx, vm.ID, r.inst)
		if _, err := m.d.Store.SetVMState(ctx, vm.ID, model.StateStopped, "stopped after snapshot "+sn.Name); err != nil {
			return fail(err)
		}
	} else {
		undo.Discard() // resume and thaw now, in order
		undo.Push(func(context.Context) error { return os.RemoveAll(sn.Dir) })
		if rs, ok := r.driver.(resumer); ok {
			if err := rs.Resume(ctx, r.inst); err != nil {
				return fail(fmt.Errorf("continue the vm after the snapshot: %w", err))
			}
		}
		if fz, ok := r.agent.(freezer); ok {
			tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			if err := fz.Thaw(tctx); err != nil && !errors.Is(err, &agentproto.Error{Code: agentproto.CodeUnsupported}) {
				lg.WarnContext(ctx, "thaw the guest after the snapshot (it thaws itself after a minute)", "err", err)
			}
			cancel()
		}
	}
	report.Stage("memory", "keeping the guest's memory apart, for clones to share")
	if err := m.shareMemory(ctx, &sn, vm, r.driver, req.Stop); err != nil {
		lg.WarnContext(ctx, "memory stays in the state: clones will not share it", "err", err)
	}
	report.Stage("verify", "checksumming the snapshot")
	size, sum, err := hashFile(snapshotStateFile(sn))
	if err != nil {
		return fail(fmt.Errorf("checksum saved state: %w", err))
	}
	sn.StateBytes, sn.StateSHA = size, sum
	if st, err := os.Stat(snapshotDisk(sn)); err == nil {
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			sn.DiskAlloc = sys.Blocks * 512
		}
	}
	for _, p := range []string{snapshotStateFile(sn), snapshotDisk(sn)} {
		if err := os.Chmod(p, 0o400); err != nil {
			return fail(err)
		}
	}
	if sn.MemoryBytes > 0 {
		// The guest's memory, which may hold its secrets. Writable by the
		// owner only because QEMU 7.2 opens a memory file read-write even
		// to map it copy-on-write; it never writes to it.
		if err := os.Chmod(snapshotMemoryFile(sn), 0o600); err != nil {
			return fail(err)
		}
	}
	if err := syncDir(sn.Dir); err != nil {
		return fail(err)
	}
	sn.CreatedAt = m.d.Now()
	out, err := m.d.Store.CreateSnapshot(ctx, sn)
	if err != nil {
		if errors.Is(err, store.ErrExists) {
			return fail(api.Errorf(api.CodeAlreadyExists, "snapshot %q already exists", sn.Name))
		}
		return fail(err)
	}
	lg.InfoContext(ctx, "snapshot taken", "state_bytes", size, "took", time.Since(begin).Round(time.Millisecond))
	m.d.Events.Publish(ctx, events.Event{Kind: events.KindSnapshotCreated, VM: out.SourceVM, Snapshot: out.Name})
	return out, nil
}

// GetSnapshot returns a snapshot by name or id.
func (m *Manager) GetSnapshot(ctx context.Context, ref string) (model.Snapshot, error) {
	sn, err := m.d.Store.GetSnapshot(ctx, ref)
	if errors.Is(err, store.ErrNotFound) {
		return sn, api.Errorf(api.CodeNotFound, "snapshot %q not found (banger snapshot ls lists them)", ref)
	}
	return sn, err
}

// ListSnapshots returns every snapshot and template.
func (m *Manager) ListSnapshots(ctx context.Context) ([]model.Snapshot, error) {
	return m.d.Store.ListSnapshots(ctx)
}

// RemoveSnapshot deletes a snapshot and its files; one that VMs were forked
// from needs force (the VMs keep their own disks and run on). It is refused,
// even with force, while a fork restores from the snapshot: waiting would
// let a stream of forks hold it off, and a refusal says why at once.
func (m *Manager) RemoveSnapshot(ctx context.Context, ref string, force bool) error {
	sn, err := m.GetSnapshot(ctx, ref)
	if err != nil {
		return err
	}
	sl := m.snapLock(sn.ID)
	if !sl.TryLock() {
		return api.Errorf(api.CodeFailedPrecondition, "snapshot %q is being forked from right now: retry once that fork ends (banger ops ls shows it)", sn.Name)
	}
	defer sl.Unlock()
	// Read again under the lock: a fork that just ended added its clones.
	if sn, err = m.GetSnapshot(ctx, sn.ID); err != nil {
		return err
	}
	if len(sn.Users) > 0 && !force {
		return api.Errorf(api.CodeFailedPrecondition, "snapshot %q is in use: vm %s was forked from it: remove those vms first, or pass --force (they keep running on their own disks)",
			sn.Name, strings.Join(sn.Users, ", "))
	}
	if err := m.d.Store.DeleteSnapshot(ctx, sn.ID, force); err != nil {
		if errors.Is(err, store.ErrInUse) {
			return api.Errorf(api.CodeFailedPrecondition, "snapshot %q is in use by a vm forked from it: retry with --force", sn.Name)
		}
		return err
	}
	m.forgetVerified(sn.Dir)
	m.d.Events.Publish(ctx, events.Event{Kind: events.KindSnapshotRemoved, VM: sn.SourceVM, Snapshot: sn.Name})
	if err := os.RemoveAll(sn.Dir); err != nil {
		return fmt.Errorf("remove snapshot %q files: %w", sn.Name, err)
	}
	return nil
}
