// Package vmmtest is a fake vmm.Driver for unit tests of the code that
// drives VMs (vmlife, the daemon). Its "VMM" is a real process (sleep), so
// what watches a VMM through its pid (pidfds, start times) sees a real one;
// the guest side is a fake console and a fake agent. Every call is recorded
// in a Log shared with the agent, so a test can check the order of what
// happened across both (undo runs newest first), and any method can be
// made to fail.
package vmmtest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/vmm"
)

// Methods a Driver records and can be made to fail.
const (
	MethodAvailable = "available"
	MethodValidate  = "validate"
	MethodStart     = "start"
	MethodStop      = "stop"
	MethodKill      = "kill"
	MethodAdopt     = "adopt"
	// Agent methods (see Agent).
	MethodHealth   = "agent.health"
	MethodPoweroff = "agent.poweroff"
	MethodClose    = "agent.close"
)

// Log records calls in order; safe for concurrent use.
type Log struct {
	mu    sync.Mutex
	calls []Call
}

// Call is one recorded call. Ctx is the context the call got (nil for
// methods that take none) and CtxErr its Err() at the time of the call, so
// a test can check that a cleanup got a live context.
type Call struct {
	Method string
	ID     string // the VM's id (instance or spec), when the method has one
	Ctx    context.Context
	CtxErr error
}

// Record adds a call: other fakes of a test (a network, a store hook)
// record into the same log, so the order across them can be checked.
func (l *Log) Record(method, id string, ctx context.Context) { l.add(method, id, ctx) }

func (l *Log) add(method, id string, ctx context.Context) {
	var cerr error
	if ctx != nil {
		cerr = ctx.Err()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, Call{Method: method, ID: id, Ctx: ctx, CtxErr: cerr})
}

// Calls returns what was called so far.
func (l *Log) Calls() []Call {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.calls)
}

// Methods returns the names of the calls so far, in order.
func (l *Log) Methods() []string {
	var out []string
	for _, c := range l.Calls() {
		out = append(out, c.Method)
	}
	return out
}

// Count returns how many times method was called.
func (l *Log) Count(method string) int {
	n := 0
	for _, c := range l.Calls() {
		if c.Method == method {
			n++
		}
	}
	return n
}

// Driver is a fake vmm.Driver. The zero value is not usable: use New.
type Driver struct {
	t    testing.TB
	name model.VMMKind
	caps vmm.Capabilities
	log  *Log

	mu       sync.Mutex
	fail     map[string]error
	console  []string
	exitNow  bool // the "VMM" exits right after it starts (the guest died)
	procs    map[int]*exec.Cmd
	lastSpec vmm.Spec
}

var _ vmm.Driver = (*Driver)(nil)

// New returns a driver named name (a model.VMM* value) recording into log
// (a new one when nil). Processes it started are killed when the test ends.
func New(t testing.TB, name model.VMMKind, log *Log) *Driver {
	t.Helper()
	if log == nil {
		log = &Log{}
	}
	if _, err := exec.LookPath("sleep"); err != nil {
		t.Fatalf("vmmtest needs a sleep binary for its fake vmm process: %v", err)
	}
	// The fake speaks the agent over virtio-serial, as QEMU does; tests
	// that need another transport set it (SetCapabilities).
	d := &Driver{t: t, name: name, log: log, fail: map[string]error{}, procs: map[int]*exec.Cmd{},
		caps: vmm.Capabilities{AgentTransport: model.TransportVirtioSerial}}
	t.Cleanup(d.killAll)
	return d
}

// Log is where the driver records its calls.
func (d *Driver) Log() *Log { return d.log }

// SetCapabilities sets what Capabilities reports.
func (d *Driver) SetCapabilities(c vmm.Capabilities) { d.caps = c }

// Fail makes method return err (nil: succeed again).
func (d *Driver) Fail(method string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil {
		delete(d.fail, method)
		return
	}
	d.fail[method] = err
}

// Console sets the lines Start writes to the console log, as a guest would.
func (d *Driver) Console(lines ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.console = lines
}

// ExitAfterStart makes the next VMMs exit right after they start, as QEMU
// does when the guest's kernel panics (panic=-1, -no-reboot).
func (d *Driver) ExitAfterStart(exit bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.exitNow = exit
}

// LastSpec is the spec of the last Start.
func (d *Driver) LastSpec() vmm.Spec {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lastSpec
}

// Exit ends inst's process, as if the VMM died on its own.
func (d *Driver) Exit(inst vmm.Instance) {
	d.mu.Lock()
	cmd := d.procs[inst.PID]
	d.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Kill()
		_ = vmm.WaitGone(context.Background(), inst.PID, inst.PIDStartTime, 5*time.Second)
	}
}

// Running lists the pids of the fake VMMs still alive.
func (d *Driver) Running() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []int
	for pid, cmd := range d.procs {
		if cmd.ProcessState == nil {
			if st, err := vmm.ProcStartTime(pid); err == nil {
				if ok, _ := vmm.ProcessAlive(pid, st); ok {
					out = append(out, pid)
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

func (d *Driver) failed(method string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.fail[method]
}

func (d *Driver) Name() model.VMMKind            { return d.name }
func (d *Driver) Capabilities() vmm.Capabilities { return d.caps }

func (d *Driver) Available(ctx context.Context) error {
	d.log.add(MethodAvailable, "", ctx)
	return d.failed(MethodAvailable)
}

// Validate checks what every driver checks (vmm.ValidateShared), an id and
// disks that exist, then any programmed failure.
func (d *Driver) Validate(spec vmm.Spec) error {
	d.log.add(MethodValidate, spec.ID, nil)
	if spec.ID == "" {
		return vmm.Invalid("no vm id")
	}
	if err := vmm.ValidateShared(spec); err != nil {
		return err
	}
	for _, disk := range spec.Disks {
		if err := vmm.RegularFile(disk.Path); err != nil {
			return vmm.Invalid("disk %q: %v", disk.ID, err)
		}
	}
	return d.failed(MethodValidate)
}

// Start starts a real sleep process as the VMM, writes the programmed
// console lines and a control socket file (listed in Files, as drivers
// list theirs), and returns its instance.
func (d *Driver) Start(ctx context.Context, spec vmm.Spec) (vmm.Instance, error) {
	d.log.add(MethodStart, spec.ID, ctx)
	d.mu.Lock()
	d.lastSpec = spec
	lines, exitNow := d.console, d.exitNow
	d.mu.Unlock()
	if err := d.failed(MethodStart); err != nil {
		return vmm.Instance{}, err
	}
	if err := ctx.Err(); err != nil {
		return vmm.Instance{}, err
	}
	inst := vmm.Instance{
		Driver: d.name, ID: spec.ID, Accel: "tcg",
		ControlSocket: filepath.Join(spec.Dir, "fake.ctl"),
		ConsoleLog:    d.ConsolePath(vmm.Instance{ConsoleLog: spec.ConsoleLog, ID: spec.ID}),
		Agent:         vmm.AgentEndpoint{Kind: vmm.AgentVirtioSerialYamux, SocketPath: filepath.Join(spec.Dir, "fake.agent")},
	}
	if inst.ConsoleLog == "" {
		inst.ConsoleLog = filepath.Join(spec.Dir, "console.log")
	}
	if err := os.WriteFile(inst.ConsoleLog, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return vmm.Instance{}, fmt.Errorf("write fake console: %w", err)
	}
	if err := os.WriteFile(inst.ControlSocket, nil, 0o600); err != nil {
		return vmm.Instance{}, fmt.Errorf("write fake control socket: %w", err)
	}
	inst.Files = []string{inst.ControlSocket}
	cmd := exec.Command("sleep", "600")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return vmm.Instance{}, fmt.Errorf("start fake vmm: %w", err)
	}
	go func() { _ = cmd.Wait() }() // reap, so its pid is gone once killed
	st, err := vmm.ProcStartTime(cmd.Process.Pid)
	if err != nil {
		_ = cmd.Process.Kill()
		return vmm.Instance{}, fmt.Errorf("fake vmm start time: %w", err)
	}
	inst.PID, inst.PIDStartTime = cmd.Process.Pid, st
	d.mu.Lock()
	d.procs[inst.PID] = cmd
	d.mu.Unlock()
	if exitNow {
		d.Exit(inst)
	}
	return inst, nil
}

func (d *Driver) Stop(ctx context.Context, inst vmm.Instance, graceful bool, timeout time.Duration) error {
	d.log.add(MethodStop, inst.ID, ctx)
	if err := d.failed(MethodStop); err != nil {
		return err
	}
	return d.end(ctx, inst)
}

func (d *Driver) Kill(ctx context.Context, inst vmm.Instance) error {
	d.log.add(MethodKill, inst.ID, ctx)
	if err := d.failed(MethodKill); err != nil {
		return err
	}
	return d.end(ctx, inst)
}

func (d *Driver) end(ctx context.Context, inst vmm.Instance) error {
	if ok, _ := vmm.ProcessAlive(inst.PID, inst.PIDStartTime); !ok {
		return vmm.ErrNotRunning
	}
	return vmm.KillAndWait(ctx, inst.PID, inst.PIDStartTime, 5*time.Second)
}

func (d *Driver) Alive(inst vmm.Instance) (bool, string) {
	return vmm.ProcessAlive(inst.PID, inst.PIDStartTime)
}

func (d *Driver) Adopt(ctx context.Context, inst vmm.Instance) error {
	d.log.add(MethodAdopt, inst.ID, ctx)
	if err := d.failed(MethodAdopt); err != nil {
		return err
	}
	if ok, why := vmm.ProcessAlive(inst.PID, inst.PIDStartTime); !ok {
		return fmt.Errorf("%w: %s", vmm.ErrNotRunning, why)
	}
	return nil
}

func (d *Driver) ConsolePath(inst vmm.Instance) string { return inst.ConsoleLog }

func (d *Driver) TailConsole(inst vmm.Instance, lines int) (string, error) {
	return vmm.TailFile(inst.ConsoleLog, lines)
}

func (d *Driver) AgentEndpoint(spec vmm.Spec) (vmm.AgentEndpoint, error) {
	return vmm.AgentEndpoint{Kind: vmm.AgentVirtioSerialYamux, SocketPath: filepath.Join(spec.Dir, "fake.agent")}, nil
}

func (d *Driver) killAll() {
	d.mu.Lock()
	procs := slices.Collect(maps.Values(d.procs))
	d.mu.Unlock()
	for _, cmd := range procs {
		_ = cmd.Process.Kill()
	}
}

// Agent is a fake guest agent client recording into the same Log as the
// driver. Health answers with BootID (a func, so it can read what the
// daemon just wrote) unless a failure is programmed.
type Agent struct {
	ID     string
	BootID func() string
	// OnPoweroff runs when Poweroff is asked (a test ends the VMM there,
	// as a guest powering off does).
	OnPoweroff func()
	log        *Log

	mu   sync.Mutex
	fail map[string]error
}

// NewAgent returns an agent for the VM id recording into log.
func NewAgent(log *Log, id string, bootID func() string) *Agent {
	return &Agent{ID: id, BootID: bootID, log: log, fail: map[string]error{}}
}

// Fail makes method (MethodHealth, MethodPoweroff, MethodClose) return err.
func (a *Agent) Fail(method string, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.fail[method] = err
}

func (a *Agent) failed(method string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.fail[method]
}

func (a *Agent) Health(ctx context.Context) (string, error) {
	a.log.add(MethodHealth, a.ID, ctx)
	if err := a.failed(MethodHealth); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if a.BootID == nil {
		return "", errors.New("fake agent has no boot id")
	}
	return a.BootID(), nil
}

func (a *Agent) Poweroff(ctx context.Context) error {
	a.log.add(MethodPoweroff, a.ID, ctx)
	if err := a.failed(MethodPoweroff); err != nil {
		return err
	}
	if a.OnPoweroff != nil {
		a.OnPoweroff()
	}
	return nil
}

func (a *Agent) Close() error {
	a.log.add(MethodClose, a.ID, nil)
	return a.failed(MethodClose)
}
