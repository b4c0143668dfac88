package firecracker

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	sdk "github.com/firecracker-microvm/firecracker-go-sdk"
	fcclient "github.com/firecracker-microvm/firecracker-go-sdk/client"
	"github.com/firecracker-microvm/firecracker-go-sdk/client/models"
	httptransport "github.com/go-openapi/runtime/client"
	"github.com/go-openapi/strfmt"

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
	sock := filepath.Join(d.jailRoot(b.Spec.ID), apiSockName)
	inst := vmm.Instance{Driver: model.VMMFirecracker, ID: b.Spec.ID, ControlSocket: sock}
	// The launcher removes the jail on failure (and the VMM once started).
	undo.Push(func(ctx context.Context) error { return d.launcher.Remove(ctx, inst) })
	// The first connection is the one the launcher returns (the root
	// helper's passed socket); later ones are dialled through it.
	conns := &firstConn{next: func(ctx context.Context) (net.Conn, error) { return d.launcher.DialAPI(ctx, inst) }}
	defer conns.close()
	client := d.newClient(b.Spec.ID, conns.dial)
	m, err := sdk.NewMachine(ctx, b.Config, sdk.WithClient(client), sdk.WithLogger(logger))
	if err != nil {
		return fmt.Errorf("prepare firecracker machine: %w", err)
	}
	m.Handlers.FcInit = m.Handlers.FcInit.Swap(sdk.Handler{
		Name: startVMMHandlerName,
		Fn: func(ctx context.Context, m *sdk.Machine) error {
			l, err := d.spawn(ctx, b, client, conns)
			inst.PID, inst.PIDStartTime = l.PID, l.StartTime
			return err
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
	}
	if !d.launcher.BuildsJail() {
		// The helper's jail is the helper's to remove (vm.jailer.stop).
		b.Instance.Files = []string{sock, agent.SocketPath}
	}
	return nil
}

// firstConn hands out a given connection once, then dials new ones.
type firstConn struct {
	mu    sync.Mutex
	first net.Conn
	next  func(context.Context) (net.Conn, error)
}

func (f *firstConn) set(c net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.first = c
}

func (f *firstConn) dial(ctx context.Context) (net.Conn, error) {
	f.mu.Lock()
	c := f.first
	f.first = nil
	f.mu.Unlock()
	if c != nil {
		return c, nil
	}
	return f.next(ctx)
}

// close closes a handed-out connection nobody used.
func (f *firstConn) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.first != nil {
		f.first.Close()
		f.first = nil
	}
}

// newClient is the SDK's client over connections from dial (not a socket
// path: the owner cannot open the jail), or the test's mock operations.
func (d *Driver) newClient(vmID string, dial func(context.Context) (net.Conn, error)) *sdk.Client {
	logger := d.sdkLogger(vmID)
	if len(d.cfg.clientOpts) > 0 {
		return sdk.NewClient("", logger, false, d.cfg.clientOpts...)
	}
	t := httptransport.New(fcclient.DefaultHost, fcclient.DefaultBasePath, fcclient.DefaultSchemes)
	t.Transport = &http.Transport{
		DialContext:     func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
		MaxConnsPerHost: 1, // one API connection at a time: each is a helper call
	}
	t.SetLogger(logger)
	fc := fcclient.NewHTTPClient(strfmt.NewFormats())
	fc.SetTransport(t)
	return sdk.NewClient("", logger, false, sdk.WithOpsClient(fc.Operations))
}

func (d *Driver) consolePath(spec vmm.Spec) string {
	if spec.ConsoleLog != "" {
		return spec.ConsoleLog
	}
	return filepath.Join(spec.Dir, "console.log")
}

// spawn has the launcher start the jailer (which execs firecracker under
// the same pid), detached, then waits, bounded, for the API to answer.
func (d *Driver) spawn(ctx context.Context, b *Boot, client *sdk.Client, conns *firstConn) (Launched, error) {
	l, err := d.launcher.Launch(ctx, b)
	if l.PID > 0 {
		b.Proc = &vmm.Process{PID: l.PID, StartTime: l.StartTime}
	}
	if err != nil {
		return l, err
	}
	if l.API != nil {
		conns.set(l.API)
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.StartTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if _, err := client.GetMachineConfiguration(); err == nil {
			return l, nil
		} else {
			last = err
		}
		select {
		case <-l.Exited:
			tail, _ := vmm.TailFile(d.consolePath(b.Spec), 20)
			return l, fmt.Errorf("jailer/firecracker exited during start-up; output:\n%s", tail)
		case <-ctx.Done():
			return l, fmt.Errorf("firecracker api not answering: %w (last: %v)", ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// Alive reports whether the instance's firecracker still runs.
func (d *Driver) Alive(inst vmm.Instance) (bool, string) {
	return vmm.ProcessAlive(inst.PID, inst.PIDStartTime)
}

func (d *Driver) client(inst vmm.Instance) *sdk.Client {
	return d.newClient(inst.ID, func(ctx context.Context) (net.Conn, error) { return d.launcher.DialAPI(ctx, inst) })
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
	return d.launcher.Remove(ctx, inst)
}

// cleanup removes the jail of a VMM that has ended.
func (d *Driver) cleanup(inst vmm.Instance) error {
	return d.launcher.Remove(context.Background(), inst)
}

// ConsolePath is the serial console log (firecracker's stdout).
func (d *Driver) ConsolePath(inst vmm.Instance) string { return inst.ConsoleLog }

// TailConsole returns the console's last lines.
func (d *Driver) TailConsole(inst vmm.Instance, lines int) (string, error) {
	return vmm.TailFile(inst.ConsoleLog, lines)
}
