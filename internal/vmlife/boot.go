package vmlife

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/ext4"
	"github.com/bangerdev/banger/internal/guest/guestconfig"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/opid"
	"github.com/bangerdev/banger/internal/progress"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/vmdisk"
	"github.com/bangerdev/banger/internal/vmm"
)

func makeRootDisk(ctx context.Context, image, disk string, size int64) error {
	if _, err := vmdisk.Clone(image, disk); err != nil {
		return err
	}
	return ext4.Grow(ctx, disk, size)
}

// bootState flows through the start chain.
type bootState struct {
	vm     model.VM
	kernel model.Kernel
	driver vmm.Driver
	spec   vmm.Spec
	inst   vmm.Instance
	agent  Agent
	report progress.Func
	saved  savedState // resume: the saved state's manifest
}

// Start boots a stopped VM and waits until its agent answers.
func (m *Manager) Start(ctx context.Context, ref string, report progress.Func) (model.VM, error) {
	vm, err := m.Get(ctx, ref)
	if err != nil {
		return vm, err
	}
	unlock := m.lock(vm.ID)
	defer unlock()
	if vm, err = m.Get(ctx, vm.ID); err != nil {
		return vm, err
	}
	if vm.State == model.StateRunning {
		return vm, nil
	}
	if vm.State == model.StateSuspended {
		return m.resumeLocked(ctx, vm, report) // what a user starting it means
	}
	if vm.State != model.StateStopped && vm.State != model.StateError {
		return vm, api.Errorf(api.CodeFailedPrecondition, "vm %q is %s: wait for it (banger events --vm %s), or stop it first (banger vm stop %s)", vm.Name, vm.State, vm.Name, vm.Name)
	}
	return m.startLocked(ctx, vm, report)
}

func (m *Manager) startLocked(ctx context.Context, vm model.VM, report progress.Func) (model.VM, error) {
	ctx = opid.WithVM(ctx, vm.Name)
	drv, ok := m.d.Drivers[vm.VMM]
	if !ok {
		return vm, api.Errorf(api.CodeFailedPrecondition, "vm %q uses vmm %q, which this daemon does not have", vm.Name, vm.VMM)
	}
	k, err := m.d.Store.GetKernel(ctx, vm.Kernel)
	if err != nil {
		return vm, api.Errorf(api.CodeNotFound, "vm %q: kernel %q is gone: pull it again (banger kernel pull %s)", vm.Name, vm.Kernel, vm.Kernel)
	}
	ctx, j, done, err := m.journalFor(ctx, store.OpStart, vm)
	if err != nil {
		return vm, apiError(fmt.Errorf("start vm %q: %w", vm.Name, err))
	}
	defer done()
	s := &bootState{vm: vm, kernel: k, driver: drv, report: report}
	chain := journaled(j, vmm.Steps[*bootState]{
		{Name: "validate", Fn: m.stepValidate},
		{Name: "starting", Fn: m.stepStarting},
		{Name: "config", Fn: m.stepConfig},
		{Name: "initramfs", Fn: m.stepInitramfs},
		{Name: "vmm", Fn: m.stepVMM},
		{Name: "ready", Fn: m.stepReady},
		{Name: "running", Fn: m.stepRunning},
	}, bootMade)
	var undo vmm.Undo
	if err := chain.Run(ctx, m.d.Log, s, &undo); err != nil {
		serr := &StartError{VM: vm.Name, Err: err, Console: m.consoleTail(s, 15)}
		reason := err.Error()
		var se *vmm.StepError
		if errors.As(err, &se) {
			serr.Step = se.Step
			reason = fmt.Sprintf("start failed at step %s: %v", se.Step, se.Err)
		}
		bg := context.WithoutCancel(ctx)
		if cur, gerr := m.d.Store.GetVM(bg, vm.ID); gerr == nil && cur.State != model.StateStopped {
			_, _ = m.d.Store.SetVMState(bg, vm.ID, model.StateError, reason)
		}
		return vm, apiError(serr)
	}
	undo.Discard()
	return s.vm, nil
}

func (m *Manager) stepValidate(ctx context.Context, s *bootState, _ *vmm.Undo) error {
	if err := s.driver.Available(ctx); err != nil {
		return err
	}
	if _, err := os.Stat(rootDisk(s.vm)); err != nil {
		return fmt.Errorf("root disk: %w", err)
	}
	return recheckMounts(s.vm)
}

func (m *Manager) stepStarting(ctx context.Context, s *bootState, undo *vmm.Undo) error {
	vm, err := m.d.Store.SetVMState(ctx, s.vm.ID, model.StateStarting, "")
	if err != nil {
		return err
	}
	s.vm = vm
	return nil
}

func (m *Manager) stepConfig(ctx context.Context, s *bootState, _ *vmm.Undo) error {
	s.vm.BootID = newBootID()
	cfg := &guestconfig.Config{
		VMName: s.vm.Name, Hostname: s.vm.Name, BootID: s.vm.BootID,
		InitMode: s.vm.InitMode,
		Mounts:   guestMounts(s.vm),
	}
	agent, err := agentFor(s.driver)
	if err != nil {
		return err
	}
	cfg.Agent = guestconfig.Agent{Transport: agent.Transport, PortName: agent.PortName, VsockPort: agent.VsockPort}
	if m.d.AuthorizedKeys != nil {
		cfg.AuthorizedKeys = m.d.AuthorizedKeys(ctx)
	}
	if m.d.Network != nil && s.vm.Tap != "" {
		att, err := m.d.Network.Attach(ctx, s.vm) // idempotent: same lease and tap
		if err != nil {
			return err
		}
		cfg.Network = att.Guest
	}
	if err := guestconfig.Write(configDisk(s.vm), cfg); err != nil {
		return fmt.Errorf("write guest config: %w", err)
	}
	return m.save(ctx, &s.vm)
}

// agentFor is where the guest agent listens with drv: the driver says which
// transport (Capabilities.AgentTransport); the port names are banger's.
func agentFor(drv vmm.Driver) (vmm.Agent, error) {
	switch t := drv.Capabilities().AgentTransport; t {
	case model.TransportVirtioSerial:
		return vmm.Agent{Transport: t, PortName: AgentPortName}, nil
	case model.TransportVsock:
		return vmm.Agent{Transport: t, VsockCID: AgentVsockCID, VsockPort: AgentVsockPort}, nil
	default:
		return vmm.Agent{}, fmt.Errorf("vmm %s offers agent transport %q, which banger's guest agent does not speak (want %s or %s)",
			drv.Name(), t, model.TransportVirtioSerial, model.TransportVsock)
	}
}

func (m *Manager) stepInitramfs(ctx context.Context, s *bootState, _ *vmm.Undo) error {
	s.report.Stage("initramfs", "preparing the guest initramfs")
	path, err := m.d.Initramfs(ctx, s.kernel)
	if err != nil {
		return err
	}
	agent, err := agentFor(s.driver)
	if err != nil {
		return err
	}
	s.spec = vmm.Spec{
		ID: s.vm.ID, Name: s.vm.Name, Dir: s.vm.Dir,
		Kernel: vmm.Kernel{Path: s.kernel.Path, VMLinux: s.kernel.VMLinux},
		Initrd: path,
		Disks: []vmm.Disk{
			{ID: "root", Path: rootDisk(s.vm)},
			{ID: "config", Path: configDisk(s.vm), ReadOnly: true},
		},
		CPUs: s.vm.CPUs, MemoryMiB: s.vm.MemoryMiB, Agent: agent,
		ConsoleLog:      ConsoleLog(s.vm),
		ConsoleMaxBytes: m.d.ConsoleMaxBytes,
		Shares:          specShares(s.vm),
	}
	if s.vm.Tap != "" {
		s.spec.Net = &vmm.Net{Tap: s.vm.Tap, MAC: s.vm.MAC}
	}
	return s.driver.Validate(s.spec)
}

func (m *Manager) stepVMM(ctx context.Context, s *bootState, undo *vmm.Undo) error {
	s.report.Stage("vmm", "starting "+string(s.driver.Name()))
	return m.launch(ctx, s, undo, s.driver.Start)
}

// launch hands the VM's tap to the VMM (when the driver takes one) and runs
// start (a cold boot, or a restore from saved state), recording the instance.
func (m *Manager) launch(ctx context.Context, s *bootState, undo *vmm.Undo, start func(context.Context, vmm.Spec) (vmm.Instance, error)) error {
	spec := s.spec
	if spec.Net != nil && m.d.Network != nil && s.driver.Capabilities().TapFile {
		f, err := m.d.Network.OpenTap(ctx, s.vm)
		switch {
		case api.CodeOf(err) == api.CodeUnimplemented:
			// A root helper older than tap.open: the VMM opens the tap by
			// name, as it did before.
			m.d.Log.WarnContext(ctx, "root helper cannot pass the tap: the vmm opens it itself", "err", err)
		case err != nil:
			return err
		default:
			// The VMM inherits its own copy and keeps the tap open for the
			// VM's life (a re-adopted VM needs nothing); ours goes once it
			// started.
			defer f.Close()
			n := *spec.Net
			n.File = f
			spec.Net = &n
		}
	}
	inst, err := start(ctx, spec)
	if err != nil {
		return err
	}
	s.inst = inst
	undo.Push(func(ctx context.Context) error {
		kctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		err := s.driver.Kill(kctx, inst)
		if errors.Is(err, vmm.ErrNotRunning) {
			err = nil
		}
		return errors.Join(err, vmm.RemoveFiles(inst.Files...))
	})
	s.vm.PID, s.vm.PIDStartTime = inst.PID, inst.PIDStartTime
	m.adoptCgroup(ctx, s.vm.ID, inst)
	s.vm.ControlSocket, s.vm.AgentSocket, s.vm.ConsoleLog = inst.ControlSocket, inst.Agent.SocketPath, inst.ConsoleLog
	if err := writeInstance(s.vm, inst); err != nil {
		return err
	}
	return m.save(ctx, &s.vm)
}

// stepReady waits for the agent to answer with this boot's id: an event
// (the agent's reply), bounded by ReadyTimeout, failing early if the VMM dies.
func (m *Manager) stepReady(ctx context.Context, s *bootState, undo *vmm.Undo) error {
	s.report.Stage("ready", "waiting for the guest agent")
	ctx, cancel := context.WithTimeout(ctx, m.d.ReadyTimeout)
	defer cancel()
	agent, err := m.d.DialAgent(s.inst.Agent)
	if err != nil {
		return err
	}
	undo.Push(func(context.Context) error { return agent.Close() })
	for {
		if alive, why := s.driver.Alive(s.inst); !alive {
			return fmt.Errorf("%w before it was ready: the vmm exited (%s)", ErrGuestExited, why)
		}
		hctx, hcancel := context.WithTimeout(ctx, 20*time.Second)
		bootID, err := agent.Health(hctx)
		hcancel()
		if err == nil {
			if bootID != s.vm.BootID {
				// The guest chose this text: quoted and cut, it cannot
				// reach a terminal or the store as anything but data.
				if len(bootID) > 64 {
					bootID = bootID[:64] + "…"
				}
				return fmt.Errorf("agent answered with boot_id %q, expected %s", bootID, s.vm.BootID)
			}
			s.agent = agent
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("guest agent not ready after %s: %w (last error: %v)", m.d.ReadyTimeout, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
			// The agent channel's connect fails fast until the guest opens
			// its port; a short pause keeps this from spinning.
		}
	}
}

func (m *Manager) stepRunning(ctx context.Context, s *bootState, _ *vmm.Undo) error {
	s.vm.StartedAt = m.d.Now()
	if err := m.save(ctx, &s.vm); err != nil {
		return err
	}
	vm, err := m.d.Store.SetVMState(ctx, s.vm.ID, model.StateRunning, "")
	if err != nil {
		return err
	}
	s.vm = vm
	m.track(vm, s.driver, s.inst, s.agent)
	return nil
}

func (m *Manager) consoleTail(s *bootState, n int) string {
	if s.inst.ConsoleLog == "" {
		return ""
	}
	tail, err := vmm.TailFile(s.inst.ConsoleLog, n)
	if err != nil || strings.TrimSpace(tail) == "" {
		return ""
	}
	return tail
}
