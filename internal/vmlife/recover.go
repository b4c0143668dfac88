package vmlife

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/opid"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/vmm"
)

// Recover runs at daemon start, before Adopt. Every row left in the
// operations journal is an operation a crash cut short; each is finished
// or rolled back from what the row lists:
//
//   - create (and `vm run`'s start): rolled back whole, as a failed create
//     is: VMM killed, tap and lease freed, disk and record removed;
//   - fork (one clone of vm fork, vm run --from/--template): rolled back
//     whole as a create (the record's fork link goes with it); clones of
//     the same request that were already done are whole VMs and stay;
//   - start: rolled back: VMM killed, runtime files cleared, VM stopped;
//   - stop: finished: VMM killed, VM stopped;
//   - remove: finished.
//
// A recovery that fails marks the VM error with the reason (vm rm removes
// it) and keeps the row, so the next start tries again. VMs left in
// creating by a daemon older than the journal are marked error too.
func (m *Manager) Recover(ctx context.Context) error {
	ctx = opid.With(ctx, opid.NewPrefixed("bg-recover"))
	ops, err := m.d.Store.ListOperations(ctx)
	if err != nil {
		return fmt.Errorf("read the operations journal: %w", err)
	}
	pending := map[string]bool{}
	for _, op := range ops {
		ctx := opid.WithVM(ctx, op.VMName)
		lg := m.d.Log.With("interrupted_op", op.OpID, "kind", op.Kind, "step", op.Step)
		lg.WarnContext(ctx, "finishing an operation a crash interrupted", "created", fmt.Sprintf("%+v", op.Created))
		if err := m.recoverOp(ctx, op); err != nil {
			pending[op.VMID] = true
			reason := fmt.Sprintf("%s interrupted at step %s and could not be undone: %v; remove it with banger vm rm %s", op.Kind, op.Step, err, op.VMName)
			lg.ErrorContext(ctx, "recover interrupted operation", "err", err)
			_, _ = m.d.Store.SetVMState(ctx, op.VMID, model.StateError, reason)
			continue
		}
		if err := m.d.Store.EndOperation(ctx, op.ID); err != nil {
			return err
		}
		lg.InfoContext(ctx, "interrupted operation recovered")
	}
	vms, err := m.d.Store.ListVMs(ctx)
	if err != nil {
		return fmt.Errorf("list vms to recover: %w", err)
	}
	for _, vm := range vms {
		if vm.State == model.StateCreating && !pending[vm.ID] {
			_, _ = m.d.Store.SetVMState(opid.WithVM(ctx, vm.Name), vm.ID, model.StateError,
				"creation was interrupted and not journalled: remove it with banger vm rm "+vm.Name)
		}
	}
	return nil
}

func (m *Manager) recoverOp(ctx context.Context, op store.Operation) error {
	vm, err := m.d.Store.GetVM(ctx, op.VMID)
	exists := err == nil && vm.ID == op.VMID
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if !exists {
		vm = model.VM{ID: op.VMID, Name: op.VMName, Dir: op.Created.Dir, Tap: op.Created.Tap}
	}
	dir := vm.Dir
	if dir == "" {
		dir = op.Created.Dir
	}
	if err := killVMMs(ctx, dir, procID{op.Created.PID, op.Created.PIDStartTime}, procID{vm.PID, vm.PIDStartTime}); err != nil {
		return err
	}
	switch op.Kind {
	case store.OpCreate, store.OpFork, store.OpRemove:
		return m.forget(ctx, vm, exists, dir)
	case store.OpStart, store.OpStop:
		if !exists {
			return nil
		}
		if inst, err := readInstance(vm); err == nil {
			_ = vmm.RemoveFiles(inst.Files...)
		}
		m.clearRuntime(ctx, vm.ID, vmm.Instance{})
		if op.Kind == store.OpStop {
			return m.park(ctx, vm, model.StateStopped, "stopped (finished after a daemon restart)")
		}
		if vm.State == model.StateStopped || vm.State == model.StateError {
			return nil // nothing began yet
		}
		// A boot that never became ready is a failed boot (error), as in
		// the model's transitions; vm start retries it, vm rm removes it.
		return m.park(ctx, vm, model.StateError, fmt.Sprintf(
			"the daemon stopped during vm start (step %s); its vmm was stopped: start it again (banger vm start %s) or remove it", op.Step, vm.Name))
	}
	return fmt.Errorf("unknown journalled operation %q", op.Kind)
}

// park moves a VM to state to, through error where the model has no
// direct way (the VM's own state may be any a crash left).
func (m *Manager) park(ctx context.Context, vm model.VM, to model.VMState, reason string) error {
	if !model.CanTransition(vm.State, to) {
		if _, err := m.d.Store.SetVMState(ctx, vm.ID, model.StateError, reason); err != nil {
			return err
		}
	}
	_, err := m.d.Store.SetVMState(ctx, vm.ID, to, reason)
	return err
}

// forget removes everything a VM holds: network, files, record.
func (m *Manager) forget(ctx context.Context, vm model.VM, exists bool, dir string) error {
	if m.d.Network != nil {
		if err := m.d.Network.Detach(ctx, vm); err != nil {
			return err
		}
	}
	if dir != "" {
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("remove vm directory: %w", err)
		}
	}
	if exists {
		if err := m.d.Store.DeleteVM(ctx, vm.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	return nil
}

// killVMMs kills the VMM processes of the VM in dir: those recorded (pid +
// start time, so a reused pid is left alone) and any other process of this
// uid whose command line names a file in dir, such as a VMM started an
// instant before a crash could record it.
func killVMMs(ctx context.Context, dir string, recorded ...procID) error {
	var procs []procID
	for _, p := range recorded {
		if p.pid > 0 {
			procs = append(procs, p)
		}
	}
	for _, pid := range vmmsUsing(dir) {
		if st, err := vmm.ProcStartTime(pid); err == nil {
			procs = append(procs, procID{pid, st})
		}
	}
	var errs []error
	for _, p := range procs {
		if err := vmm.KillAndWait(ctx, p.pid, p.start, 10*time.Second); err != nil {
			errs = append(errs, fmt.Errorf("kill vmm process %d: %w", p.pid, err))
		}
	}
	return errors.Join(errs...)
}

// procID names one process for good: a pid and its start time.
type procID struct {
	pid   int
	start uint64
}

// vmmsUsing lists this uid's VMM processes (qemu, firecracker, jailer)
// with an argument naming a path in dir.
func vmmsUsing(dir string) []int {
	if dir == "" || !filepath.IsAbs(dir) {
		return nil
	}
	prefix := filepath.Clean(dir) + "/"
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	uid := uint32(os.Geteuid())
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		fi, err := os.Stat("/proc/" + e.Name())
		if err != nil {
			continue
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Uid != uid {
			continue
		}
		exe, err := os.Readlink("/proc/" + e.Name() + "/exe")
		if base := filepath.Base(exe); err != nil || !(strings.HasPrefix(base, "qemu") || base == "firecracker" || base == "jailer") {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		for _, arg := range strings.Split(string(b), "\x00") {
			if strings.Contains(arg, prefix) {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}
