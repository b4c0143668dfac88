package vmlife_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/testutil"
	"github.com/bangerdev/banger/internal/vmlife"
	"github.com/bangerdev/banger/internal/vmm"
	"github.com/bangerdev/banger/internal/vmm/vmmtest"
)

// lifeFixture is a manager over a real store (SQLite in t.TempDir()) and
// the fake driver, with one stopped VM whose disk exists.
type lifeFixture struct {
	m     *vmlife.Manager
	st    *store.Store
	drv   *vmmtest.Driver
	log   *vmmtest.Log
	net   *fakeNetwork
	vm    model.VM
	deps  vmlife.Deps
	agent func(vm model.VM) *vmmtest.Agent // the agent DialAgent hands out
}

// fakeNetwork is vmlife.Network recording into the test's log.
type fakeNetwork struct {
	log       *vmmtest.Log
	attachErr error
	detachErr error
}

func (n *fakeNetwork) Attach(ctx context.Context, vm model.VM) (vmlife.Attachment, error) {
	n.log.Record("net.attach", vm.ID, ctx)
	if n.attachErr != nil {
		return vmlife.Attachment{}, n.attachErr
	}
	return vmlife.Attachment{Tap: "tap-" + vm.Name, MAC: "02:00:00:00:00:01"}, nil
}

func (n *fakeNetwork) Detach(ctx context.Context, vm model.VM) error {
	n.log.Record("net.detach", vm.ID, ctx)
	return n.detachErr
}

func (n *fakeNetwork) OpenTap(ctx context.Context, vm model.VM) (*os.File, error) {
	return nil, api.Errorf(api.CodeUnimplemented, "no tap.open")
}

func newLifeFixture(t *testing.T, mod func(*vmlife.Deps)) *lifeFixture {
	t.Helper()
	ctx := t.Context()
	home := t.TempDir()
	p := testutil.UserPaths(t, home)
	if err := p.Ensure(); err != nil {
		t.Fatal(err)
	}
	lg := slog.New(slog.DiscardHandler)
	st, err := store.Open(ctx, p.StoreFile(), lg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	kernel := filepath.Join(home, "vmlinuz")
	initrd := filepath.Join(home, "initrd")
	for _, f := range []string{kernel, initrd} {
		if err := os.WriteFile(f, []byte("fake"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.PutKernel(ctx, model.Kernel{Name: "k1", Path: kernel, VMMs: []model.VMMKind{model.VMMQEMU}}); err != nil {
		t.Fatal(err)
	}
	calls := &vmmtest.Log{}
	f := &lifeFixture{st: st, log: calls, drv: vmmtest.New(t, model.VMMQEMU, calls), net: &fakeNetwork{log: calls}}
	agents := map[string]*vmmtest.Agent{}
	f.agent = func(vm model.VM) *vmmtest.Agent {
		if a := agents[vm.ID]; a != nil {
			return a
		}
		// The agent answers with the boot_id the daemon recorded for this
		// boot, as the guest reads it from its config disk.
		a := vmmtest.NewAgent(calls, vm.ID, func() string {
			cur, err := st.GetVM(context.Background(), vm.ID)
			if err != nil {
				return ""
			}
			return cur.BootID
		})
		agents[vm.ID] = a
		return a
	}
	f.deps = vmlife.Deps{
		Store: st, Paths: p, Log: lg,
		Drivers:   map[model.VMMKind]vmm.Driver{model.VMMQEMU: f.drv},
		Initramfs: func(context.Context, model.Kernel) (string, error) { return initrd, nil },
		DialAgent: func(ep vmm.AgentEndpoint) (vmlife.Agent, error) {
			// The endpoint lives in the VM's dir, named by the fake driver.
			id := filepath.Base(filepath.Dir(ep.SocketPath))
			return f.agent(model.VM{ID: id}), nil
		},
		Network:      f.net,
		ReadyTimeout: 5 * time.Second,
	}
	if mod != nil {
		mod(&f.deps)
	}
	life, cancel := context.WithCancel(context.Background())
	f.m = vmlife.New(life, f.deps)
	t.Cleanup(func() { f.m.Close(); cancel() })
	f.vm = f.newVM(t, "v1")
	return f
}

// newVM records a stopped VM with a root disk.
func (f *lifeFixture) newVM(t *testing.T, name string) model.VM {
	t.Helper()
	id, err := model.NewVMID()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	vm := model.VM{ID: id, Name: name, State: model.StateStopped, Image: "img", Kernel: "k1", VMM: model.VMMQEMU,
		CPUs: 1, MemoryMiB: 128, InitMode: model.InitFast, Dir: f.deps.Paths.VMDir(id), CreatedAt: now, UpdatedAt: now}
	if err := os.MkdirAll(vm.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vm.Dir, "root.ext4"), make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	if vm, err = f.st.CreateVM(t.Context(), vm); err != nil {
		t.Fatal(err)
	}
	return vm
}

// TestStartFailsAtEachStep: a boot failing at any step leaves the VM in
// error with the step in its reason, the error names the step (and, once
// the VMM ran, the console's last lines) with the right wire code, the
// VMM and its files are gone, undo ran newest first with a live context,
// and the journal is empty.
func TestStartFailsAtEachStep(t *testing.T) {
	boom := errors.New("boom")
	cases := []struct {
		name, step string
		code       string
		arrange    func(f *lifeFixture)
		deps       func(d *vmlife.Deps)
		vmmRan     bool   // the fake VMM started, so undo must end it
		console    bool   // the error carries the console tail
		want       string // in the error text
	}{
		{name: "driver unavailable", step: "validate", code: api.CodeFailedPrecondition,
			arrange: func(f *lifeFixture) {
				f.drv.Fail(vmmtest.MethodAvailable, fmt.Errorf("%w: no qemu here", vmm.ErrUnavailable))
			},
			want: "no qemu here"},
		{name: "disk gone", step: "validate", code: api.CodeInternal,
			arrange: func(f *lifeFixture) { os.Remove(filepath.Join(f.vm.Dir, "root.ext4")) },
			want:    "root disk"},
		{name: "network attach", step: "config", code: api.CodeUnavailable,
			arrange: func(f *lifeFixture) {
				f.net.attachErr = api.Errorf(api.CodeUnavailable, "root helper is not running")
				f.vm.Tap = "tap-v1"
				if _, err := f.st.UpdateVM(context.Background(), f.vm); err != nil {
					panic(err)
				}
			},
			want: "root helper is not running"},
		{name: "initramfs", step: "initramfs", code: api.CodeInternal,
			deps: func(d *vmlife.Deps) {
				d.Initramfs = func(context.Context, model.Kernel) (string, error) { return "", boom }
			},
			want: "boom"},
		{name: "spec refused", step: "initramfs", code: api.CodeInvalidArgument,
			arrange: func(f *lifeFixture) {
				f.drv.Fail(vmmtest.MethodValidate, fmt.Errorf("%w: tap name", vmm.ErrInvalidSpec))
			},
			want: "tap name"},
		{name: "vmm start", step: "vmm", code: api.CodeInternal,
			arrange: func(f *lifeFixture) { f.drv.Fail(vmmtest.MethodStart, boom) },
			want:    "boom"},
		{name: "guest died", step: "ready", code: api.CodeFailedPrecondition, vmmRan: true, console: true,
			arrange: func(f *lifeFixture) { f.drv.ExitAfterStart(true) },
			want:    "guest exited during boot"},
		{name: "wrong boot id", step: "ready", code: api.CodeInternal, vmmRan: true, console: true,
			arrange: func(f *lifeFixture) { f.agent(f.vm).BootID = func() string { return "\x1b[2Jnot-this-boot" } },
			want:    `boot_id "\x1b[2Jnot-this-boot"`},
		{name: "agent never answers", step: "ready", code: api.CodeUnavailable, vmmRan: true, console: true,
			deps:    func(d *vmlife.Deps) { d.ReadyTimeout = 300 * time.Millisecond },
			arrange: func(f *lifeFixture) { f.agent(f.vm).Fail(vmmtest.MethodHealth, errors.New("connection refused")) },
			want:    "guest agent not ready"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newLifeFixture(t, c.deps)
			f.drv.Console("[    0.1] Linux version 6.1", "[    1.2] init: mounting root", "[    1.3] Kernel panic - not syncing")
			if c.arrange != nil {
				c.arrange(f)
			}
			_, err := f.m.Start(t.Context(), f.vm.Name, nil)
			if err == nil {
				t.Fatal("start succeeded")
			}
			var se *vmlife.StartError
			if !errors.As(err, &se) || se.Step != c.step || se.VM != f.vm.Name {
				t.Fatalf("StartError = %+v, want step %s; err: %v", se, c.step, err)
			}
			if got := api.CodeOf(err); got != c.code {
				t.Errorf("code = %s, want %s (err: %v)", got, c.code, err)
			}
			msg := err.Error()
			if !strings.Contains(msg, "step "+c.step) || !strings.Contains(msg, c.want) {
				t.Errorf("error %q does not name step %s and %q", msg, c.step, c.want)
			}
			if c.console != strings.Contains(msg, "Kernel panic - not syncing") {
				t.Errorf("console tail in the error: %v, want %v (err: %q)", !c.console, c.console, msg)
			}
			// A boot refused before it began (validate) leaves the VM as
			// it was; any later failure is an error naming the step.
			cur, gerr := f.st.GetVM(t.Context(), f.vm.ID)
			if c.step == "validate" {
				if gerr != nil || cur.State != model.StateStopped {
					t.Errorf("vm after a refused start: %s %v; want it still stopped", cur.State, gerr)
				}
			} else if gerr != nil || cur.State != model.StateError || !strings.Contains(cur.StateReason, "step "+c.step) {
				t.Errorf("vm after failed start: %s %q %v; want error naming step %s", cur.State, cur.StateReason, gerr, c.step)
			}
			if n := f.log.Count(vmmtest.MethodStart); c.vmmRan && n != 1 {
				t.Errorf("vmm started %d times", n)
			}
			if pids := f.drv.Running(); len(pids) != 0 {
				t.Errorf("vmm processes left after a failed start: %v", pids)
			}
			if c.vmmRan {
				if _, err := os.Stat(filepath.Join(f.vm.Dir, "fake.ctl")); !os.IsNotExist(err) {
					t.Errorf("vmm's files left after a failed start: %v", err)
				}
				// Undo runs newest first: the agent client (made in step
				// ready) is closed before the VMM (made in step vmm) is killed.
				ms := f.log.Methods()
				ic, ik := slices.Index(ms, vmmtest.MethodClose), slices.Index(ms, vmmtest.MethodKill)
				if ic < 0 || ik < 0 || ic > ik {
					t.Errorf("undo order %v: want %s before %s", ms, vmmtest.MethodClose, vmmtest.MethodKill)
				}
				for _, call := range f.log.Calls() {
					if call.Method == vmmtest.MethodKill && (call.Ctx == nil || call.CtxErr != nil) {
						t.Errorf("undo's kill got a dead context: %v", call.CtxErr)
					}
				}
			} else if n := f.log.Count(vmmtest.MethodKill); n != 0 {
				t.Errorf("kill called %d times though no vmm ran", n)
			}
			if ops, _ := f.st.ListOperations(t.Context()); len(ops) != 0 {
				t.Errorf("journal after a failed start: %+v", ops)
			}
		})
	}
}

// TestStartCancelledStopsCleanly: a caller that goes away while the guest
// boots cancels the start: canceled code, the VMM killed with a context
// that still works (undo must not inherit the dead request), the VM left
// in error naming the step, and the journal empty.
func TestStartCancelledStopsCleanly(t *testing.T) {
	f := newLifeFixture(t, nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// The agent never answers; the caller gives up once the VMM runs.
	a := f.agent(f.vm)
	a.Fail(vmmtest.MethodHealth, errors.New("connection refused"))
	go func() {
		deadline := time.Now().Add(10 * time.Second)
		for f.log.Count(vmmtest.MethodHealth) == 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
	}()
	_, err := f.m.Start(ctx, f.vm.Name, nil)
	if !errors.Is(err, context.Canceled) || api.CodeOf(err) != api.CodeCanceled {
		t.Fatalf("cancelled start: %v (code %s), want canceled", err, api.CodeOf(err))
	}
	var se *vmlife.StartError
	if !errors.As(err, &se) || se.Step != "ready" {
		t.Fatalf("cancelled start failed at %+v, want step ready", se)
	}
	if pids := f.drv.Running(); len(pids) != 0 {
		t.Fatalf("vmm left running after a cancelled start: %v", pids)
	}
	kills := 0
	for _, c := range f.log.Calls() {
		if c.Method == vmmtest.MethodKill {
			kills++
			if c.CtxErr != nil {
				t.Fatalf("undo's kill got the cancelled request context: %v", c.CtxErr)
			}
		}
	}
	if kills != 1 {
		t.Fatalf("vmm killed %d times, want once", kills)
	}
	cur, _ := f.st.GetVM(t.Context(), f.vm.ID)
	if cur.State != model.StateError || !strings.Contains(cur.StateReason, "step ready") {
		t.Fatalf("vm after a cancelled start: %s %q", cur.State, cur.StateReason)
	}
	if ops, _ := f.st.ListOperations(t.Context()); len(ops) != 0 {
		t.Fatalf("journal after a cancelled start: %+v", ops)
	}
	// A failed boot is retried by vm start: it now boots.
	a.Fail(vmmtest.MethodHealth, nil)
	if vm, err := f.m.Start(t.Context(), f.vm.Name, nil); err != nil || vm.State != model.StateRunning {
		t.Fatalf("start after a cancelled one: %s %v", vm.State, err)
	}
}

// TestRunningVMLifecycle: one VM through a boot, a clean stop (the agent's
// poweroff ends the VMM: the driver is not asked to stop it), a second
// boot, and an unexpected VMM exit, which the watcher turns into error
// with the console's last lines.
func TestRunningVMLifecycle(t *testing.T) {
	f := newLifeFixture(t, nil)
	ctx := t.Context()
	f.drv.Console("booted", "last words of the guest")
	vm, err := f.m.Start(ctx, f.vm.Name, nil)
	if err != nil || vm.State != model.StateRunning || vm.PID == 0 {
		t.Fatalf("start: %+v %v", vm, err)
	}
	// The guest's boot_id is a random (v4) UUID, the form the agent checks.
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(vm.BootID) {
		t.Fatalf("boot_id %q is not a v4 uuid", vm.BootID)
	}
	// Starting a running VM is a no-op.
	if again, err := f.m.Start(ctx, f.vm.Name, nil); err != nil || again.PID != vm.PID {
		t.Fatalf("second start of a running vm: pid %d, %v", again.PID, err)
	}
	if n := f.log.Count(vmmtest.MethodStart); n != 1 {
		t.Fatalf("vmm started %d times", n)
	}
	a := f.agent(f.vm)
	a.OnPoweroff = func() { f.drv.Exit(vmm.Instance{PID: vm.PID, PIDStartTime: vm.PIDStartTime}) }
	stopped, err := f.m.Stop(ctx, f.vm.Name, false, 5*time.Second)
	if err != nil || stopped.State != model.StateStopped || stopped.PID != 0 {
		t.Fatalf("stop: %+v %v", stopped, err)
	}
	if f.log.Count(vmmtest.MethodPoweroff) != 1 || f.log.Count(vmmtest.MethodStop) != 0 || f.log.Count(vmmtest.MethodKill) != 0 {
		t.Fatalf("clean stop called %v; want a poweroff through the agent only", f.log.Methods())
	}
	if _, err := os.Stat(filepath.Join(f.vm.Dir, "fake.ctl")); !os.IsNotExist(err) {
		t.Fatalf("vmm files after stop: %v", err)
	}

	vm, err = f.m.Start(ctx, f.vm.Name, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.drv.Exit(vmm.Instance{PID: vm.PID, PIDStartTime: vm.PIDStartTime})
	deadline := time.Now().Add(10 * time.Second)
	var cur model.VM
	for time.Now().Before(deadline) {
		if cur, err = f.st.GetVM(ctx, f.vm.ID); err == nil && cur.State == model.StateError {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if cur.State != model.StateError || !strings.Contains(cur.StateReason, "exited unexpectedly") ||
		!strings.Contains(cur.StateReason, "last words of the guest") {
		t.Fatalf("vm after its vmm died: %s %q; want error with the console tail", cur.State, cur.StateReason)
	}
	if ops, _ := f.st.ListOperations(ctx); len(ops) != 0 {
		t.Fatalf("journal: %+v", ops)
	}
}

// TestStopFailureIsError: a VMM that cannot be stopped leaves the VM in
// error saying so, with the driver's error and an internal code.
func TestStopFailureIsError(t *testing.T) {
	f := newLifeFixture(t, nil)
	ctx := t.Context()
	if _, err := f.m.Start(ctx, f.vm.Name, nil); err != nil {
		t.Fatal(err)
	}
	f.drv.Fail(vmmtest.MethodKill, errors.New("permission denied"))
	_, err := f.m.Stop(ctx, f.vm.Name, true, time.Second)
	if err == nil || !strings.Contains(err.Error(), `stop vm "v1"`) || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("failed stop: %v", err)
	}
	cur, _ := f.st.GetVM(ctx, f.vm.ID)
	if cur.State != model.StateError || !strings.Contains(cur.StateReason, "stop failed: permission denied") {
		t.Fatalf("vm after a failed stop: %s %q", cur.State, cur.StateReason)
	}
	if ops, _ := f.st.ListOperations(ctx); len(ops) != 0 {
		t.Fatalf("journal after a failed stop: %+v", ops)
	}
	// vm rm -f still removes it, VMM included.
	f.drv.Fail(vmmtest.MethodKill, nil)
	if err := f.m.Remove(ctx, f.vm.Name, true); err != nil {
		t.Fatal(err)
	}
	if pids := f.drv.Running(); len(pids) != 0 {
		t.Fatalf("vmm left after vm rm -f: %v", pids)
	}
	if _, err := f.m.Get(ctx, f.vm.Name); api.CodeOf(err) != api.CodeNotFound {
		t.Fatalf("removed vm: %v", err)
	}
}
