package vmlife

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/opid"
	"github.com/bangerdev/banger/internal/progress"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/vmm"
)

// track holds a running VM and watches its VMM process: an exit nobody
// asked for marks the VM as errored with the reason.
func (m *Manager) track(vm model.VM, drv vmm.Driver, inst vmm.Instance, agent Agent) {
	wctx, cancel := context.WithCancel(m.life)
	r := &runningVM{inst: inst, driver: drv, agent: agent, cancel: cancel}
	m.mu.Lock()
	if old := m.running[vm.ID]; old != nil {
		old.cancel()
	}
	m.running[vm.ID] = r
	m.mu.Unlock()
	go m.watch(wctx, vm, r)
	if m.d.ConsoleMaxBytes > 0 && inst.ConsoleLog != "" {
		go m.boundConsole(wctx, inst.ConsoleLog)
	}
}

// boundConsole keeps a running VM's console log within ConsoleMaxBytes
// (QEMU appends to it; the tail is kept).
func (m *Manager) boundConsole(ctx context.Context, path string) {
	t := time.NewTicker(15 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := vmm.TrimConsole(path, m.d.ConsoleMaxBytes); err != nil {
				m.d.Log.DebugContext(ctx, "trim console", "path", path, "err", err)
			}
		}
	}
}

func (m *Manager) watch(ctx context.Context, vm model.VM, r *runningVM) {
	waitProcessExit(ctx, r.inst.PID)
	if ctx.Err() != nil {
		return // the daemon is stopping, or the VM was untracked
	}
	unlock := m.lock(vm.ID)
	defer unlock()
	m.mu.Lock()
	cur := m.running[vm.ID]
	expected := cur != r || r.stopping
	if cur == r {
		delete(m.running, vm.ID)
	}
	m.mu.Unlock()
	if expected {
		return
	}
	r.agent.Close()
	state, reason := model.StateError, "vmm process exited unexpectedly"
	tail, err := vmm.TailFile(r.inst.ConsoleLog, 60)
	switch {
	case err == nil && guestPoweredOff(tail):
		// poweroff inside the guest: a stop, not a failure. (A guest can
		// print this line and then crash: it is only shown as stopped.)
		state, reason = model.StateStopped, "the guest powered itself off"
	case err == nil && kernelPanic(tail) != "":
		// A panic's last lines are a register dump: name the panic.
		reason += ": the guest kernel panicked: " + kernelPanic(tail)
	case err == nil && tail != "":
		lines := strings.Split(tail, "\n")
		reason += "; console: " + compact(strings.Join(lines[max(len(lines)-5, 0):], "\n"))
	}
	// No request caused this: it is an operation of its own, with its own
	// op_id on its log lines.
	bg := opid.WithVM(opid.With(context.Background(), opid.NewPrefixed("bg-watch")), vm.Name)
	m.d.Log.WarnContext(bg, "vm's vmm exited", "pid", r.inst.PID, "reason", reason)
	_, _ = m.d.Store.SetVMState(bg, vm.ID, state, reason)
	m.clearRuntime(bg, vm.ID, r.inst)
}

// kernelPanic returns the last "Kernel panic - not syncing" line of a
// console (guest bytes: printable ASCII only, bounded), or "".
func kernelPanic(consoleTail string) string {
	lines := strings.Split(consoleTail, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		_, msg, ok := strings.Cut(lines[i], "Kernel panic - not syncing")
		if !ok {
			continue
		}
		clean := strings.Map(func(r rune) rune {
			if r < 0x20 || r > 0x7e {
				return -1
			}
			return r
		}, "Kernel panic - not syncing"+msg)
		if len(clean) > 200 {
			clean = clean[:200]
		}
		return strings.TrimSpace(clean)
	}
	return ""
}

// guestPoweredOff reports whether a console ends with the kernel's last
// words on a power-off.
func guestPoweredOff(consoleTail string) bool {
	lines := strings.Split(strings.TrimRight(consoleTail, "\r\n"), "\n")
	return strings.Contains(lines[len(lines)-1], "reboot: Power down")
}

// waitProcessExit blocks until pid exits or ctx ends, on a pidfd (an event).
func waitProcessExit(ctx context.Context, pid int) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return // already gone
	}
	defer unix.Close(fd)
	for ctx.Err() == nil {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 500)
		if err == nil && n > 0 {
			return
		}
	}
}

func (m *Manager) clearRuntime(ctx context.Context, id string, inst vmm.Instance) {
	endHelpers(ctx, m.d.Log, inst)
	_ = vmm.RemoveFiles(inst.Files...)
	vm, err := m.d.Store.GetVM(ctx, id)
	if err != nil {
		return
	}
	os.Remove(instanceFile(vm))
	vm.PID, vm.PIDStartTime, vm.ControlSocket, vm.AgentSocket = 0, 0, "", ""
	_ = m.save(ctx, &vm)
}

// Stop ends a running VM: gracefully through the guest agent, then the VMM,
// then by force after timeout; force kills at once.
func (m *Manager) Stop(ctx context.Context, ref string, force bool, timeout time.Duration) (model.VM, error) {
	vm, err := m.Get(ctx, ref)
	if err != nil {
		return vm, err
	}
	unlock := m.lock(vm.ID)
	defer unlock()
	return m.stopLocked(ctx, vm, force, timeout)
}

func (m *Manager) stopLocked(ctx context.Context, vm model.VM, force bool, timeout time.Duration) (model.VM, error) {
	ctx = opid.WithVM(ctx, vm.Name)
	vm, err := m.d.Store.GetVM(ctx, vm.ID)
	if err != nil {
		return vm, err
	}
	m.mu.Lock()
	r := m.running[vm.ID]
	if r != nil {
		r.stopping = true
	}
	m.mu.Unlock()
	if r == nil {
		if vm.State == model.StateStopped {
			return vm, nil
		}
		if vm.State == model.StateSuspended {
			// Stopping a suspended VM throws away the saved guest: ask first.
			if !force {
				return vm, api.Errorf(api.CodeFailedPrecondition, "vm %q is suspended: stopping it discards its saved state (processes, memory); resume it with banger vm resume %s, or discard with banger vm stop --force %s", vm.Name, vm.Name, vm.Name)
			}
			return m.discardLocked(ctx, vm)
		}
		// Not tracked (error state, or a VMM we could not adopt): make sure.
		_, err := m.d.Store.SetVMState(ctx, vm.ID, model.StateStopped, "stopped")
		return m.getOr(ctx, vm, err)
	}
	ctx, j, done, err := m.journalFor(ctx, store.OpStop, vm)
	if err != nil {
		return vm, apiError(fmt.Errorf("stop vm %q: %w", vm.Name, err))
	}
	defer done()
	j.made(store.OpResources{Dir: vm.Dir, PID: r.inst.PID, PIDStartTime: r.inst.PIDStartTime})
	if err := j.at(ctx, "stopping"); err != nil {
		return vm, err
	}
	// A VM in error whose VMM still runs (a stop that failed) goes
	// straight to stopped: the model has no error → stopping.
	if model.CanTransition(vm.State, model.StateStopping) {
		if _, err := m.d.Store.SetVMState(ctx, vm.ID, model.StateStopping, ""); err != nil {
			return vm, err
		}
	}
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	if err := j.at(ctx, "poweroff"); err != nil {
		return vm, err
	}
	var stopErr error
	if !force {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		perr := r.agent.Poweroff(pctx)
		cancel()
		if perr == nil && vmm.WaitGone(ctx, r.inst.PID, r.inst.PIDStartTime, timeout) == nil {
			stopErr = nil
		} else {
			stopErr = r.driver.Stop(ctx, r.inst, true, timeout)
		}
	} else {
		stopErr = r.driver.Kill(ctx, r.inst)
	}
	if errors.Is(stopErr, vmm.ErrNotRunning) {
		stopErr = nil
	}
	if stopErr != nil {
		_, _ = m.d.Store.SetVMState(ctx, vm.ID, model.StateError, "stop failed: "+stopErr.Error())
		return vm, apiError(fmt.Errorf("stop vm %q: %w", vm.Name, stopErr))
	}
	r.cancel()
	r.agent.Close()
	m.mu.Lock()
	delete(m.running, vm.ID)
	m.mu.Unlock()
	if err := j.at(ctx, "stopped"); err != nil {
		return vm, err
	}
	m.clearRuntime(ctx, vm.ID, r.inst)
	_, err = m.d.Store.SetVMState(ctx, vm.ID, model.StateStopped, "stopped")
	return m.getOr(ctx, vm, err)
}

func (m *Manager) getOr(ctx context.Context, vm model.VM, err error) (model.VM, error) {
	if err != nil {
		return vm, err
	}
	return m.d.Store.GetVM(ctx, vm.ID)
}

// Restart stops (gracefully) and starts a VM.
func (m *Manager) Restart(ctx context.Context, ref string, timeout time.Duration, report progress.Func) (model.VM, error) {
	vm, err := m.Get(ctx, ref)
	if err != nil {
		return vm, err
	}
	unlock := m.lock(vm.ID)
	defer unlock()
	if vm, err = m.stopLocked(ctx, vm, false, timeout); err != nil {
		return vm, err
	}
	return m.startLocked(ctx, vm, report)
}

// Remove deletes a VM and everything it holds; a running VM needs force.
func (m *Manager) Remove(ctx context.Context, ref string, force bool) error {
	vm, err := m.Get(ctx, ref)
	if err != nil {
		return err
	}
	unlock := m.lock(vm.ID)
	defer unlock()
	return m.removeLocked(ctx, vm, force)
}

func (m *Manager) removeLocked(ctx context.Context, vm model.VM, force bool) error {
	ctx = opid.WithVM(ctx, vm.Name)
	vm, err := m.d.Store.GetVM(ctx, vm.ID)
	if err != nil {
		return err
	}
	ctx, j, done, err := m.journalFor(ctx, store.OpRemove, vm)
	if err != nil {
		return apiError(fmt.Errorf("remove vm %q: %w", vm.Name, err))
	}
	defer done()
	j.made(store.OpResources{Record: true, Dir: vm.Dir, Disk: rootDisk(vm), Tap: vm.Tap, IP: vm.IP, PID: vm.PID, PIDStartTime: vm.PIDStartTime})
	if err := j.at(ctx, "kill"); err != nil {
		return err
	}
	m.mu.Lock()
	running := m.running[vm.ID] != nil
	m.mu.Unlock()
	if running {
		if !force {
			return api.Errorf(api.CodeFailedPrecondition, "vm %q is running: stop it first (banger vm stop %s), or remove it at once with banger vm rm -f %s", vm.Name, vm.Name, vm.Name)
		}
		if _, err := m.stopLocked(ctx, vm, true, 10*time.Second); err != nil {
			return err
		}
	} else if vm.PID > 0 {
		// A VMM we never adopted but that may still run (error state).
		if inst, rerr := readInstance(vm); rerr == nil {
			if drv := m.d.Drivers[vm.VMM]; drv != nil {
				if alive, _ := drv.Alive(inst); alive {
					_ = drv.Kill(ctx, inst)
				}
				_ = vmm.RemoveFiles(inst.Files...)
			}
		}
	}
	// And any VMM of this VM nobody recorded (started an instant before a
	// crash): removing the VM must not leave one running.
	if err := killVMMs(ctx, vm.Dir); err != nil {
		return apiError(fmt.Errorf("remove vm %q: %w", vm.Name, err))
	}
	var errs []error
	if err := j.at(ctx, "detach"); err != nil {
		return err
	}
	if m.d.Network != nil {
		if err := m.d.Network.Detach(ctx, vm); err != nil {
			errs = append(errs, fmt.Errorf("detach network: %w", err))
		}
	}
	if err := j.at(ctx, "files"); err != nil {
		return err
	}
	if err := os.RemoveAll(vm.Dir); err != nil {
		errs = append(errs, fmt.Errorf("remove vm directory: %w", err))
	}
	if err := j.at(ctx, "forget"); err != nil {
		return err
	}
	if err := m.d.Store.DeleteVM(ctx, vm.ID); err != nil {
		errs = append(errs, fmt.Errorf("delete vm record: %w", err))
	}
	if len(errs) > 0 {
		return apiError(fmt.Errorf("remove vm %q: %w", vm.Name, errors.Join(errs...)))
	}
	m.mu.Lock()
	delete(m.locks, vm.ID)
	m.mu.Unlock()
	return nil
}

// Adopt runs at daemon start: every VM the store says runs is re-adopted if
// its VMM still lives (same pid and start time, control socket answers),
// else marked stopped and what it held is freed.
func (m *Manager) Adopt(ctx context.Context) error {
	// Not a request: an operation of the daemon's own, with its own op_id.
	ctx = opid.With(ctx, opid.NewPrefixed("bg-adopt"))
	vms, err := m.d.Store.ListVMs(ctx)
	if err != nil {
		return fmt.Errorf("list vms to re-adopt: %w", err)
	}
	for _, vm := range vms {
		switch vm.State {
		case model.StateRunning, model.StateStarting, model.StateStopping:
		case model.StateSuspended:
			m.adoptSuspended(ctx, vm)
			continue
		default:
			continue
		}
		ctx := opid.WithVM(ctx, vm.Name)
		lg := m.d.Log
		drv := m.d.Drivers[vm.VMM]
		inst, ierr := readInstance(vm)
		if drv == nil || ierr != nil {
			lg.WarnContext(ctx, "cannot re-adopt vm", "err", ierr)
			_, _ = m.d.Store.SetVMState(ctx, vm.ID, model.StateError, "daemon restarted and could not re-adopt the vmm")
			continue
		}
		if err := drv.Adopt(ctx, inst); err != nil {
			if m.adoptSavedState(ctx, vm, inst) {
				continue
			}
			lg.InfoContext(ctx, "vm's vmm is gone; marking it stopped", "err", err)
			_, _ = m.d.Store.SetVMState(ctx, vm.ID, model.StateStopped, "vmm exited while the daemon was down")
			m.clearRuntime(ctx, vm.ID, inst)
			continue
		}
		// A daemon that died mid-suspend left the guest paused and maybe a
		// saved state that was never registered: drop it, run on.
		m.finishInterruptedSuspend(ctx, vm, drv, inst)
		agent := m.dialAdopted(ctx, inst)
		if vm.State != model.StateRunning {
			_, _ = m.d.Store.SetVMState(ctx, vm.ID, model.StateRunning, "re-adopted")
		}
		m.track(vm, drv, inst, agent)
		m.adoptCgroup(ctx, vm.ID, inst)
		lg.InfoContext(ctx, "re-adopted running vm", "pid", inst.PID)
		// Re-bind its tap to its lease: a helper of an older banger (or a
		// filter table lost since) would leave the running guest either
		// unfiltered or cut off. Idempotent; the same lease and tap.
		if m.d.Network != nil && vm.Tap != "" {
			m.reapplyNetwork(ctx, vm)
		}
	}
	return nil
}

// reapplyNetwork re-binds a re-adopted VM's tap to its lease (its filter
// rules). The VM runs on either way; a failure is an error line, not a
// warning: its guest may be unfiltered or cut off until it is restarted.
// (No event: nobody can be subscribed before the daemon listens.)
func (m *Manager) reapplyNetwork(ctx context.Context, vm model.VM) {
	if _, err := m.d.Network.Attach(ctx, vm); err != nil {
		m.d.Log.ErrorContext(ctx, "could not re-apply the re-adopted vm's network filter: restart the vm to rebuild its tap and filter", "tap", vm.Tap, "err", err)
		return
	}
	m.d.Log.InfoContext(ctx, "re-applied the re-adopted vm's network filter", "tap", vm.Tap)
}

// dialAdopted dials the agent of a re-adopted VMM. One it cannot dial (an
// endpoint kind this daemon does not know) stays tracked, so its exit is
// seen and stop still works (the driver's, once poweroff fails); every
// agent call then says why.
func (m *Manager) dialAdopted(ctx context.Context, inst vmm.Instance) Agent {
	agent, err := m.d.DialAgent(inst.Agent)
	if err != nil {
		m.d.Log.WarnContext(ctx, "cannot reach the re-adopted vm's agent", "err", err)
		return unreachableAgent{err: err}
	}
	return agent
}

// unreachableAgent answers every call with why the agent cannot be dialled.
type unreachableAgent struct{ err error }

func (u unreachableAgent) Health(context.Context) (string, error) { return "", u.err }
func (u unreachableAgent) Poweroff(context.Context) error         { return u.err }
func (u unreachableAgent) Close() error                           { return nil }

// AgentFor returns the agent of a running VM.
func (m *Manager) AgentFor(ctx context.Context, ref string) (model.VM, Agent, error) {
	vm, err := m.Get(ctx, ref)
	if err != nil {
		return vm, nil, err
	}
	m.mu.Lock()
	r := m.running[vm.ID]
	m.mu.Unlock()
	if r == nil {
		return vm, nil, api.Errorf(api.CodeFailedPrecondition, "vm %q is %s, not running: start it with banger vm start %s", vm.Name, vm.State, vm.Name)
	}
	return vm, r.agent, nil
}

// Close forgets running VMs without stopping them (the daemon is exiting;
// the next one re-adopts them).
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, r := range m.running {
		r.cancel()
		r.agent.Close()
		delete(m.running, id)
	}
}

func compact(s string) string {
	out := []rune{}
	for _, r := range s {
		if r == '\n' {
			r = ' '
		}
		out = append(out, r)
	}
	if len(out) > 300 {
		out = out[len(out)-300:]
	}
	return string(out)
}
