package vmlife

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/progress"
	"github.com/bangerdev/banger/internal/vmm"
)

// Suspend and resume. A suspended VM has no VMM process: its memory and
// device state sit in the VM's dir (StateFile), described by a manifest
// (StateManifest) that records the state's size and SHA-256. Resume checks
// both before handing the file to the VMM, so a truncated or corrupt file is
// refused rather than resumed as garbage; the VM then stays suspended, its
// state untouched, and `vm stop --force` discards it.

// savedStateFormat is the manifest's format version.
const savedStateFormat = 1

// StateFile is where a suspended VM's saved state is kept.
func StateFile(vm model.VM) string { return filepath.Join(vm.Dir, "suspend.state") }

// StateManifest describes StateFile.
func StateManifest(vm model.VM) string { return filepath.Join(vm.Dir, "suspend.json") }

// savedState is the manifest: what the state file must be and which VM
// shape it was saved from (a restore needs the same devices).
type savedState struct {
	Format    int           `json:"format"`
	VMM       model.VMMKind `json:"vmm"`
	BootID    string        `json:"boot_id"`
	CPUs      int           `json:"cpus"`
	MemoryMiB int           `json:"memory_mib"`
	Size      int64         `json:"size"`
	SHA256    string        `json:"sha256"`
	SavedAt   time.Time     `json:"saved_at"`
}

// Optional driver extras used around a save.
type (
	pauser interface {
		Pause(context.Context, vmm.Instance) error
	}
	resumer interface {
		Resume(context.Context, vmm.Instance) error
	}
	// ClockSetter is an agent that can step the guest's clock.
	ClockSetter interface {
		SetClock(ctx context.Context, t time.Time) error
	}
	// pausedRestorer restores with the guest paused, so the state's hash
	// can be checked while the VMM loads it and before anything runs.
	pausedRestorer interface {
		RestorePaused(ctx context.Context, spec vmm.Spec, statePath string) (vmm.Instance, error)
		Resume(ctx context.Context, inst vmm.Instance) error
	}
)

// refusedState is a saved state that failed its checks: the refusal is the
// whole message (wrapped api error).
type refusedState struct{ err error }

func (r *refusedState) Error() string { return r.err.Error() }
func (r *refusedState) Unwrap() error { return r.err }

// Suspend saves a running VM's state to its dir and ends its VMM, freeing
// its memory. A failed save (disk full, a device that cannot migrate)
// leaves the VM running and nothing saved.
func (m *Manager) Suspend(ctx context.Context, ref string, report progress.Func) (model.VM, error) {
	vm, err := m.Get(ctx, ref)
	if err != nil {
		return vm, err
	}
	unlock := m.lock(vm.ID)
	defer unlock()
	if vm, err = m.d.Store.GetVM(ctx, vm.ID); err != nil {
		return vm, err
	}
	if vm.State == model.StateSuspended {
		return vm, nil
	}
	m.mu.Lock()
	r := m.running[vm.ID]
	m.mu.Unlock()
	if vm.State != model.StateRunning || r == nil {
		return vm, api.Errorf(api.CodeFailedPrecondition, "vm %q is %s: only a running vm can be suspended", vm.Name, vm.State)
	}
	if err := Migratable(vm); err != nil {
		return vm, api.Errorf(api.CodeFailedPrecondition, "suspend vm %q: %v: stop it instead (banger vm stop %s)", vm.Name, err, vm.Name)
	}
	snap, ok := r.driver.(vmm.Snapshotter)
	if !ok || !r.driver.Capabilities().SupportsSnapshots {
		return vm, api.Errorf(api.CodeUnimplemented, "suspend vm %q: not supported by the %s driver yet: stop it instead (banger vm stop %s)", vm.Name, r.driver.Name(), vm.Name)
	}
	lg := m.d.Log.With("vm", vm.Name)
	begin := time.Now()
	if err := removeSavedState(vm); err != nil {
		return vm, fmt.Errorf("suspend vm %q: remove stale saved state: %w", vm.Name, err)
	}
	partial := StateFile(vm) + ".partial"
	// Until the manifest and state file are both complete, any failure puts
	// the VM back as it was: running, with no saved state.
	rollback := func(cause error) (model.VM, error) {
		err := removeSavedState(vm) // the partial file too
		if rs, ok := r.driver.(resumer); ok {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			err = errors.Join(err, rs.Resume(cctx, r.inst))
			cancel()
		}
		if err != nil {
			lg.WarnContext(ctx, "undo a failed suspend", "err", err)
		}
		return vm, fmt.Errorf("suspend vm %q: %w (the vm keeps running and nothing was saved)", vm.Name, cause)
	}
	report.Stage("save", "saving memory and device state")
	// Paused first: a stopped guest is saved in one pass, and its disks stop
	// changing at the moment the state is taken.
	if p, ok := r.driver.(pauser); ok {
		if err := p.Pause(ctx, r.inst); err != nil {
			return rollback(err)
		}
	}
	if err := snap.Save(ctx, r.inst, partial); err != nil {
		return rollback(fmt.Errorf("save state to %s (if the disk is full, free space and retry): %w", vm.Dir, err))
	}
	size, sum, err := hashFile(partial)
	if err != nil {
		return rollback(fmt.Errorf("checksum saved state: %w", err))
	}
	man := savedState{Format: savedStateFormat, VMM: vm.VMM, BootID: vm.BootID, CPUs: vm.CPUs, MemoryMiB: vm.MemoryMiB,
		Size: size, SHA256: sum, SavedAt: m.d.Now().UTC()}
	if err := writeManifest(vm, man); err != nil {
		return rollback(err)
	}
	if err := os.Rename(partial, StateFile(vm)); err != nil {
		return rollback(fmt.Errorf("commit saved state: %w", err))
	}
	if err := syncDir(vm.Dir); err != nil {
		return rollback(fmt.Errorf("commit saved state: %w", err))
	}
	// The state is on disk: the VMM can go. Its exit is expected.
	m.mu.Lock()
	r.stopping = true
	m.mu.Unlock()
	if err := r.driver.Kill(ctx, r.inst); err != nil && !errors.Is(err, vmm.ErrNotRunning) {
		m.mu.Lock()
		r.stopping = false
		m.mu.Unlock()
		return rollback(fmt.Errorf("end the vmm after saving: %w", err))
	}
	r.cancel()
	r.agent.Close()
	m.mu.Lock()
	delete(m.running, vm.ID)
	m.mu.Unlock()
	m.clearRuntime(ctx, vm.ID, r.inst)
	out, err := m.d.Store.SetVMState(ctx, vm.ID, model.StateSuspended, "suspended at "+man.SavedAt.Format(time.RFC3339))
	if err != nil {
		return vm, fmt.Errorf("suspend vm %q: record state: %w", vm.Name, err)
	}
	lg.InfoContext(ctx, "vm suspended", "state_bytes", size, "took", time.Since(begin).Round(time.Millisecond))
	return out, nil
}

// Resume restores a suspended VM from its saved state: same boot_id,
// processes and connections, its clock stepped to the host's. The saved
// state is checked against its manifest first; on any failure the VM stays
// suspended with its state untouched.
func (m *Manager) Resume(ctx context.Context, ref string, report progress.Func) (model.VM, error) {
	vm, err := m.Get(ctx, ref)
	if err != nil {
		return vm, err
	}
	unlock := m.lock(vm.ID)
	defer unlock()
	if vm, err = m.d.Store.GetVM(ctx, vm.ID); err != nil {
		return vm, err
	}
	if vm.State == model.StateRunning {
		return vm, nil
	}
	if vm.State != model.StateSuspended {
		return vm, api.Errorf(api.CodeFailedPrecondition, "vm %q is %s, not suspended: start it with banger vm start %s", vm.Name, vm.State, vm.Name)
	}
	return m.resumeLocked(ctx, vm, report)
}

func (m *Manager) resumeLocked(ctx context.Context, vm model.VM, report progress.Func) (model.VM, error) {
	drv, ok := m.d.Drivers[vm.VMM]
	if !ok {
		return vm, api.Errorf(api.CodeFailedPrecondition, "vm %q uses vmm %q, which this daemon does not have", vm.Name, vm.VMM)
	}
	snap, ok := drv.(vmm.Snapshotter)
	if !ok || !drv.Capabilities().SupportsSnapshots {
		return vm, api.Errorf(api.CodeUnimplemented, "resume vm %q: not supported by the %s driver yet", vm.Name, drv.Name())
	}
	k, err := m.d.Store.GetKernel(ctx, vm.Kernel)
	if err != nil {
		return vm, api.Errorf(api.CodeNotFound, "vm %q: kernel %q is gone: pull it again (banger kernel pull %s)", vm.Name, vm.Kernel, vm.Kernel)
	}
	s := &bootState{vm: vm, kernel: k, driver: drv, report: report}
	begin := time.Now()
	chain := vmm.Steps[*bootState]{
		{Name: "validate", Fn: m.stepValidate},
		{Name: "verify-manifest", Fn: func(ctx context.Context, s *bootState, _ *vmm.Undo) error {
			s.report.Stage("verify", "checking the saved state")
			man, err := checkManifest(s.vm)
			s.saved = man
			return err
		}},
		{Name: "initramfs", Fn: m.stepInitramfs},
		{Name: "network", Fn: m.stepResumeNetwork},
		{Name: "restore", Fn: func(ctx context.Context, s *bootState, undo *vmm.Undo) error {
			return m.restore(ctx, s, undo, snap)
		}},
		{Name: "ready", Fn: m.stepReady},
		{Name: "clock", Fn: m.stepClock},
		{Name: "running", Fn: m.stepResumed},
	}
	var undo vmm.Undo
	lg := m.d.Log.With("vm", vm.Name)
	if err := chain.Run(ctx, lg, s, &undo); err != nil {
		if s.inst.PID != 0 { // the undo ended it: forget it
			m.clearRuntime(context.WithoutCancel(ctx), vm.ID, s.inst)
		}
		var rs *refusedState
		if errors.As(err, &rs) {
			return vm, rs.err // a refusal that says it all
		}
		bg := context.WithoutCancel(ctx)
		msg := fmt.Sprintf("resume vm %q: %v\nthe vm is still suspended with its saved state: retry, or discard the state with banger vm stop --force %s", vm.Name, err, vm.Name)
		if _, serr := os.Stat(StateManifest(vm)); errors.Is(serr, os.ErrNotExist) {
			// The guest ran from the state before failing: it is spent.
			_ = removeSavedState(vm)
			_, _ = m.d.Store.SetVMState(bg, vm.ID, model.StateError, "resume failed after the guest ran: "+err.Error())
			msg = fmt.Sprintf("resume vm %q: %v\nthe guest ran from its saved state before this failure, so the state is spent: start it afresh with banger vm start %s", vm.Name, err, vm.Name)
		}
		if tail := m.consoleTail(s, 15); tail != "" {
			msg += "\nlast console lines:\n" + tail
		}
		return vm, errors.New(msg)
	}
	undo.Discard()
	lg.InfoContext(ctx, "vm resumed", "took", time.Since(begin).Round(time.Millisecond))
	return s.vm, nil
}

// refuseState says why a saved state will not be resumed, and the way out.
func refuseState(vm model.VM, format string, a ...any) error {
	return &refusedState{api.Errorf(api.CodeFailedPrecondition, "resume vm %q: saved state %s: %s: it will not be resumed; discard it with banger vm stop --force %s (the next start boots afresh)",
		vm.Name, StateFile(vm), fmt.Sprintf(format, a...), vm.Name)}
}

// checkManifest checks the manifest against the VM, and the state file's
// size against the manifest (the SHA-256 is checked by restore).
func checkManifest(vm model.VM) (savedState, error) {
	var man savedState
	b, err := os.ReadFile(StateManifest(vm))
	if err != nil {
		return man, refuseState(vm, "manifest unreadable: %v", err)
	}
	if err := json.Unmarshal(b, &man); err != nil {
		return man, refuseState(vm, "manifest is corrupt: %v", err)
	}
	switch {
	case man.Format != savedStateFormat:
		return man, refuseState(vm, "manifest format %d, want %d", man.Format, savedStateFormat)
	case man.VMM != vm.VMM || man.BootID != vm.BootID || man.CPUs != vm.CPUs || man.MemoryMiB != vm.MemoryMiB:
		return man, refuseState(vm, "saved from a different vm shape (vmm %s, boot_id %s, %d cpus, %d MiB)", man.VMM, man.BootID, man.CPUs, man.MemoryMiB)
	case len(man.SHA256) != 64:
		return man, refuseState(vm, "manifest has no valid sha256")
	}
	st, err := os.Stat(StateFile(vm))
	if err != nil {
		return man, refuseState(vm, "unreadable: %v", err)
	}
	if st.Size() != man.Size {
		return man, refuseState(vm, "truncated or grown: %d bytes, %d were saved", st.Size(), man.Size)
	}
	return man, nil
}

// verifyHash checks every byte of the state file against the manifest.
func verifyHash(vm model.VM, man savedState) error {
	size, sum, err := hashFile(StateFile(vm))
	if err != nil {
		return refuseState(vm, "unreadable: %v", err)
	}
	if size != man.Size {
		return refuseState(vm, "truncated or grown: %d bytes, %d were saved", size, man.Size)
	}
	if sum != man.SHA256 {
		return refuseState(vm, "corrupt: sha256 %s, %s was saved", sum, man.SHA256)
	}
	return nil
}

// restore starts the VMM from the saved state. With a driver that can
// restore paused, the state is hashed while the VMM loads it and the guest
// is continued only once the hash matched; otherwise it is hashed first.
// Either way no guest instruction runs on an unverified state.
func (m *Manager) restore(ctx context.Context, s *bootState, undo *vmm.Undo, snap vmm.Snapshotter) error {
	s.report.Stage("restore", "restoring memory and device state")
	pr, ok := s.driver.(pausedRestorer)
	if !ok {
		if err := verifyHash(s.vm, s.saved); err != nil {
			return err
		}
		if err := m.launch(ctx, s, undo, func(ctx context.Context, spec vmm.Spec) (vmm.Instance, error) {
			return snap.Restore(ctx, spec, StateFile(s.vm))
		}); err != nil {
			return err
		}
		// The guest already runs: the state is consumed.
		return os.Remove(StateManifest(s.vm))
	}
	hashed := make(chan error, 1)
	go func() { hashed <- verifyHash(s.vm, s.saved) }()
	err := m.launch(ctx, s, undo, func(ctx context.Context, spec vmm.Spec) (vmm.Instance, error) {
		return pr.RestorePaused(ctx, spec, StateFile(s.vm))
	})
	// A bad hash explains a failed load best, and must stop a good one.
	if herr := <-hashed; herr != nil {
		return herr // the undo ends the paused VMM
	}
	if err != nil {
		return err
	}
	// From here the guest runs on and its disks change: the saved state is
	// consumed. Dropping the manifest first tells a daemon restarted after
	// a crash here which side of that line the VM is on (adoptSuspended).
	if err := os.Remove(StateManifest(s.vm)); err != nil {
		return fmt.Errorf("consume saved state: %w", err)
	}
	if err := syncDir(s.vm.Dir); err != nil {
		return fmt.Errorf("consume saved state: %w", err)
	}
	if err := pr.Resume(ctx, s.inst); err != nil {
		// Not continued: the state is still good (the undo ends the VMM).
		return errors.Join(fmt.Errorf("continue the restored vm: %w", err), writeManifest(s.vm, s.saved))
	}
	return nil
}

// stepResumeNetwork re-attaches the VM: after a host reboot (or `system
// network down`) its tap and the bridge are gone and must be made again
// before the VMM opens the tap.
func (m *Manager) stepResumeNetwork(ctx context.Context, s *bootState, _ *vmm.Undo) error {
	if m.d.Network == nil || s.vm.Tap == "" {
		return nil
	}
	s.report.Stage("network", "attaching to the bridge")
	_, err := m.d.Network.Attach(ctx, s.vm) // idempotent: same lease, tap made if missing
	return err
}

// stepClock steps the guest's wall clock, which stood still while it was
// suspended. A guest whose agent cannot do it still resumes.
func (m *Manager) stepClock(ctx context.Context, s *bootState, _ *vmm.Undo) error {
	cs, ok := s.agent.(ClockSetter)
	if !ok {
		m.d.Log.WarnContext(ctx, "agent cannot set the guest clock", "vm", s.vm.Name)
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := cs.SetClock(cctx, m.d.Now()); err != nil {
		m.d.Log.WarnContext(ctx, "step the guest clock after resume", "vm", s.vm.Name, "err", err)
	}
	return nil
}

func (m *Manager) stepResumed(ctx context.Context, s *bootState, _ *vmm.Undo) error {
	vm, err := m.d.Store.SetVMState(ctx, s.vm.ID, model.StateRunning, "resumed")
	if err != nil {
		return err
	}
	s.vm = vm
	m.track(vm, s.driver, s.inst, s.agent)
	// The guest runs on and its disks change: the saved state is stale.
	if err := removeSavedState(vm); err != nil {
		m.d.Log.WarnContext(ctx, "remove saved state after resume", "vm", vm.Name, "err", err)
	}
	return nil
}

// discardLocked drops a suspended VM's saved state, parking it stopped.
func (m *Manager) discardLocked(ctx context.Context, vm model.VM) (model.VM, error) {
	if err := removeSavedState(vm); err != nil {
		return vm, fmt.Errorf("discard saved state of vm %q: %w", vm.Name, err)
	}
	return m.d.Store.SetVMState(ctx, vm.ID, model.StateStopped, "saved state discarded")
}

func removeSavedState(vm model.VM) error {
	return vmm.RemoveFiles(StateFile(vm), StateManifest(vm), StateFile(vm)+".partial", StateManifest(vm)+".tmp")
}

func writeManifest(vm model.VM, man savedState) error {
	b, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return err
	}
	tmp := StateManifest(vm) + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write state manifest: %w", err)
	}
	_, err = f.Write(b)
	err = errors.Join(err, f.Sync(), f.Close())
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write state manifest: %w", err)
	}
	if err := os.Rename(tmp, StateManifest(vm)); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("commit state manifest: %w", err)
	}
	return nil
}

func hashFile(p string) (int64, string, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// adoptSuspended runs at daemon start for a suspended VM that a daemon
// dying mid-resume may have left a VMM for. The manifest tells how far it
// got: resume removes it just before continuing the guest. Still there: the
// guest never ran, so its VMM is ended and the VM stays suspended. Gone:
// the guest runs on from the state, so it is adopted as running.
func (m *Manager) adoptSuspended(ctx context.Context, vm model.VM) {
	inst, err := readInstance(vm)
	if err != nil {
		return
	}
	lg := m.d.Log.With("vm", vm.Name)
	_, merr := os.Stat(StateManifest(vm))
	consumed := errors.Is(merr, os.ErrNotExist)
	drv := m.d.Drivers[vm.VMM]
	alive := false
	if drv != nil {
		alive, _ = drv.Alive(inst)
	}
	switch {
	case alive && consumed && drv.Adopt(ctx, inst) == nil:
		if _, err := m.d.Store.SetVMState(ctx, vm.ID, model.StateRunning, "resumed (re-adopted)"); err != nil {
			lg.WarnContext(ctx, "record re-adopted resume", "err", err)
			return
		}
		_ = removeSavedState(vm)
		m.track(vm, drv, inst, m.dialAdopted(ctx, inst))
		lg.InfoContext(ctx, "re-adopted a vm whose resume the daemon did not see finish", "pid", inst.PID)
		return
	case alive:
		lg.WarnContext(ctx, "ending the vmm of an interrupted resume; the vm stays suspended", "pid", inst.PID)
		if err := drv.Kill(ctx, inst); err != nil && !errors.Is(err, vmm.ErrNotRunning) {
			lg.WarnContext(ctx, "end vmm of interrupted resume", "err", err)
			return
		}
	}
	m.clearRuntime(ctx, vm.ID, inst)
	if consumed {
		// The guest ran from the state and is gone: nothing to resume.
		_ = removeSavedState(vm)
		_, _ = m.d.Store.SetVMState(ctx, vm.ID, model.StateStopped, "vmm exited during an interrupted resume")
	}
}

// adoptSavedState runs at daemon start for a running VM whose VMM is gone:
// a daemon that died after saving its state and ending the VMM, but before
// recording it, left a complete saved state, which makes it suspended.
func (m *Manager) adoptSavedState(ctx context.Context, vm model.VM, inst vmm.Instance) bool {
	if vm.State != model.StateRunning {
		return false
	}
	if _, err := checkManifest(vm); err != nil {
		_ = removeSavedState(vm) // none, or not a whole one
		return false
	}
	m.clearRuntime(ctx, vm.ID, inst)
	if _, err := m.d.Store.SetVMState(ctx, vm.ID, model.StateSuspended, "suspended (recorded after a daemon restart)"); err != nil {
		m.d.Log.WarnContext(ctx, "record suspended vm", "vm", vm.Name, "err", err)
		return false
	}
	m.d.Log.InfoContext(ctx, "vm's vmm is gone but its saved state is whole: suspended", "vm", vm.Name)
	return true
}

// finishInterruptedSuspend undoes a suspend the daemon died in: the saved
// state was never registered (the VM is not suspended), so it goes, and
// the guest, paused for the save, is continued.
func (m *Manager) finishInterruptedSuspend(ctx context.Context, vm model.VM, drv vmm.Driver, inst vmm.Instance) {
	if _, err := os.Stat(StateFile(vm) + ".partial"); err != nil {
		if _, err := os.Stat(StateFile(vm)); err != nil {
			return
		}
	}
	m.d.Log.WarnContext(ctx, "undoing an interrupted suspend", "vm", vm.Name)
	if err := removeSavedState(vm); err != nil {
		m.d.Log.WarnContext(ctx, "remove unregistered saved state", "vm", vm.Name, "err", err)
	}
	if rs, ok := drv.(resumer); ok {
		if err := rs.Resume(ctx, inst); err != nil {
			m.d.Log.WarnContext(ctx, "continue the guest after an interrupted suspend", "vm", vm.Name, "err", err)
		}
	}
}
