package firecracker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	sdk "github.com/firecracker-microvm/firecracker-go-sdk"
	"github.com/firecracker-microvm/firecracker-go-sdk/client/models"

	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/vmm"
)

// Step names of the boot chain.
const (
	StepValidate  = "validate"
	StepAvailable = "check-version"
	StepConfigure = "configure-and-boot" // the SDK's handler chain, with banger's detached start
)

// startVMMHandlerName replaces the SDK's fcinit.StartVMM.
const startVMMHandlerName = sdk.StartVMMHandlerName

// Boot is the boot chain's state.
type Boot struct {
	Spec     vmm.Spec
	Config   sdk.Config
	Proc     *vmm.Process
	Instance vmm.Instance
}

// Steps is the default boot chain.
func (d *Driver) Steps() vmm.Steps[*Boot] {
	return vmm.Steps[*Boot]{
		{Name: StepValidate, Fn: func(ctx context.Context, b *Boot, _ *vmm.Undo) error { return d.Validate(b.Spec) }},
		{Name: StepAvailable, Fn: func(ctx context.Context, b *Boot, _ *vmm.Undo) error { return d.Available(ctx) }},
		{Name: StepConfigure, Fn: d.stepConfigure},
	}
}

// Start boots spec under the jailer. ctx bounds start-up only.
func (d *Driver) Start(ctx context.Context, spec vmm.Spec) (vmm.Instance, error) {
	b := &Boot{Spec: spec}
	var undo vmm.Undo
	log := d.log.With("vm", spec.Name, "vm_id", spec.ID, "vmm", model.VMMFirecracker)
	if err := d.Steps().Run(ctx, log, b, &undo); err != nil {
		return vmm.Instance{}, fmt.Errorf("start vm %q with firecracker: %w", spec.Name, err)
	}
	undo.Discard()
	log.InfoContext(ctx, "vm started", "pid", b.Instance.PID)
	return b.Instance, nil
}

func (d *Driver) stepConfigure(ctx context.Context, b *Boot, undo *vmm.Undo) error {
	b.Config = d.BuildConfig(b.Spec)
	logger := d.sdkLogger(b.Spec.ID)
	// The jail dir is ours to remove on failure (hard links and sockets).
	undo.Push(func() error { return os.RemoveAll(d.jailDir(b.Spec.ID)) })
	sock := filepath.Join(d.jailRoot(b.Spec.ID), apiSockName)
	client := sdk.NewClient(sock, logger, false, d.cfg.clientOpts...)
	m, err := sdk.NewMachine(ctx, b.Config, sdk.WithClient(client), sdk.WithLogger(logger))
	if err != nil {
		return fmt.Errorf("prepare firecracker machine: %w", err)
	}
	m.Handlers.FcInit = m.Handlers.FcInit.Swap(sdk.Handler{
		Name: startVMMHandlerName,
		Fn: func(ctx context.Context, m *sdk.Machine) error {
			return d.spawn(ctx, b, m, client, undo)
		},
	})
	// The SDK's Start never sees a cancellable context: it would SIGTERM the
	// VMM when it ends. ctx still bounds this call.
	done := make(chan error, 1)
	go func() { done <- m.Start(context.WithoutCancel(ctx)) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		return err
	}
	agent, err := d.AgentEndpoint(b.Spec)
	if err != nil {
		return err
	}
	b.Instance = vmm.Instance{
		Driver:        model.VMMFirecracker,
		ID:            b.Spec.ID,
		PID:           b.Proc.PID,
		PIDStartTime:  b.Proc.StartTime,
		ControlSocket: sock,
		Agent:         agent,
		ConsoleLog:    d.consolePath(b.Spec),
		Accel:         "kvm",
		Files:         []string{sock, agent.SocketPath},
	}
	return nil
}

func (d *Driver) consolePath(spec vmm.Spec) string {
	if spec.ConsoleLog != "" {
		return spec.ConsoleLog
	}
	return filepath.Join(spec.Dir, "console.log")
}

// spawn launches the jailer (which execs firecracker under the same pid)
// detached, then waits for the API socket to answer, bounded.
func (d *Driver) spawn(ctx context.Context, b *Boot, m *sdk.Machine, client *sdk.Client, undo *vmm.Undo) error {
	jailer, err := lookPath(d.cfg.JailerBinary)
	if err != nil {
		return err
	}
	// Firecracker's serial console is its stdout.
	p, err := vmm.StartDetached(vmm.Command{Path: jailer, Args: d.jailerArgs(b.Config), LogPath: d.consolePath(b.Spec)})
	if err != nil {
		return err
	}
	b.Proc = p
	undo.Push(func() error { return vmm.KillAndWait(context.Background(), p.PID, p.StartTime, d.cfg.StopTimeout) })
	ctx, cancel := context.WithTimeout(ctx, d.cfg.StartTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.Exited():
			tail, _ := vmm.TailFile(d.consolePath(b.Spec), 20)
			return fmt.Errorf("jailer/firecracker exited during start-up (%v); output:\n%s", p.ExitErr(), tail)
		case <-ctx.Done():
			return fmt.Errorf("firecracker api socket %s not answering: %w", m.Cfg.SocketPath, ctx.Err())
		case <-tick.C:
		}
		if _, err := os.Stat(m.Cfg.SocketPath); err != nil {
			continue
		}
		if _, err := client.GetMachineConfiguration(); err == nil {
			return nil
		}
	}
}

// Alive reports whether the instance's firecracker still runs.
func (d *Driver) Alive(inst vmm.Instance) (bool, string) {
	return vmm.ProcessAlive(inst.PID, inst.PIDStartTime)
}

func (d *Driver) client(inst vmm.Instance) *sdk.Client {
	return sdk.NewClient(inst.ControlSocket, d.sdkLogger(inst.ID), false, d.cfg.clientOpts...)
}

// Adopt verifies a persisted instance: process alive with the recorded
// start time and the API answering.
func (d *Driver) Adopt(ctx context.Context, inst vmm.Instance) error {
	if ok, reason := d.Alive(inst); !ok {
		return fmt.Errorf("adopt vm %q: %w: %s", inst.ID, vmm.ErrNotRunning, reason)
	}
	if _, err := d.client(inst).GetMachineConfiguration(); err != nil {
		return fmt.Errorf("adopt vm %q: firecracker api does not answer: %w", inst.ID, err)
	}
	return nil
}

// Stop: graceful sends Ctrl-Alt-Del (the guest init powers off on it) and
// waits up to timeout; then SIGKILL. Firecracker has no quit command.
func (d *Driver) Stop(ctx context.Context, inst vmm.Instance, graceful bool, timeout time.Duration) error {
	if ok, _ := d.Alive(inst); ok && graceful {
		action := models.InstanceActionInfoActionTypeSendCtrlAltDel
		_, err := d.client(inst).CreateSyncAction(ctx, &models.InstanceActionInfo{ActionType: &action})
		if err == nil && vmm.WaitGone(ctx, inst.PID, inst.PIDStartTime, timeout) == nil {
			return d.cleanup(inst)
		}
		d.log.InfoContext(ctx, "vm did not power off in time; killing it", "vm_id", inst.ID, "err", err)
	}
	return d.Kill(ctx, inst)
}

// Kill ends the VM at once and removes its jail.
func (d *Driver) Kill(ctx context.Context, inst vmm.Instance) error {
	if err := vmm.KillAndWait(ctx, inst.PID, inst.PIDStartTime, d.cfg.StopTimeout); err != nil {
		return fmt.Errorf("kill vm %q: %w", inst.ID, err)
	}
	return d.cleanup(inst)
}

// cleanup removes the jail (hard links, sockets). Its path comes from the
// driver's own config and a validated id, never from persisted data.
func (d *Driver) cleanup(inst vmm.Instance) error {
	if !idRe.MatchString(inst.ID) {
		return fmt.Errorf("clean up vm: refusing id %q", inst.ID)
	}
	if err := os.RemoveAll(d.jailDir(inst.ID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove jail of vm %q: %w", inst.ID, err)
	}
	return nil
}

// ConsolePath is the serial console log (firecracker's stdout).
func (d *Driver) ConsolePath(inst vmm.Instance) string { return inst.ConsoleLog }

// TailConsole returns the console's last lines.
func (d *Driver) TailConsole(inst vmm.Instance, lines int) (string, error) {
	return vmm.TailFile(inst.ConsoleLog, lines)
}
