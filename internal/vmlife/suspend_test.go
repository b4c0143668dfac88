package vmlife

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/vmm"
	"github.com/bangerdev/banger/internal/vmm/firecracker"
	"github.com/bangerdev/banger/internal/vmm/vmmtest"
)

type nopAgent struct{}

func (nopAgent) Health(context.Context) (string, error) { return "", nil }
func (nopAgent) Poweroff(context.Context) error         { return nil }
func (nopAgent) Close() error                           { return nil }

// suspendTestVM records a VM in state (through the allowed transitions).
func suspendTestVM(t *testing.T, st *store.Store, name string, driver model.VMMKind, states ...model.VMState) model.VM {
	t.Helper()
	ctx := context.Background()
	id, err := model.NewVMID()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	vm, err := st.CreateVM(ctx, model.VM{ID: id, Name: name, State: model.StateCreating, Image: "img", Kernel: "k",
		VMM: driver, CPUs: 1, MemoryMiB: 256, InitMode: model.InitFast, Dir: dir, BootID: "b1", CreatedAt: now, UpdatedAt: now})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range states {
		if vm, err = st.SetVMState(ctx, id, s, ""); err != nil {
			t.Fatal(err)
		}
	}
	return vm
}

func suspendTestManager(t *testing.T) (*Manager, *store.Store) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "banger.db"), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	m := New(context.Background(), Deps{Store: st, Log: log,
		Drivers: map[model.VMMKind]vmm.Driver{model.VMMFirecracker: firecracker.New(firecracker.Config{})}})
	return m, st
}

// The Firecracker driver has no snapshot support yet: suspend and resume
// say so, and change nothing.
func TestSuspendRefusedByDriverWithoutSnapshots(t *testing.T) {
	ctx := context.Background()
	m, st := suspendTestManager(t)
	vm := suspendTestVM(t, st, "fc", model.VMMFirecracker, model.StateStarting, model.StateRunning)
	m.running[vm.ID] = &runningVM{driver: m.d.Drivers[model.VMMFirecracker], agent: nopAgent{}, cancel: func() {}}
	_, err := m.Suspend(ctx, "fc", nil)
	if api.CodeOf(err) != api.CodeUnimplemented || !strings.Contains(err.Error(), "not supported by the firecracker driver yet") {
		t.Fatalf("suspend under firecracker: %v", err)
	}
	if cur, _ := st.GetVM(ctx, vm.ID); cur.State != model.StateRunning {
		t.Fatalf("refused suspend changed the state to %s", cur.State)
	}
	if ents, _ := os.ReadDir(vm.Dir); len(ents) != 0 {
		t.Fatalf("refused suspend left files: %v", ents)
	}

	// Resume of a (hand-made) suspended firecracker VM is refused the same way.
	sus := suspendTestVM(t, st, "fcs", model.VMMFirecracker, model.StateStarting, model.StateRunning, model.StateSuspended)
	_, err = m.Resume(ctx, "fcs", nil)
	if api.CodeOf(err) != api.CodeUnimplemented {
		t.Fatalf("resume under firecracker: %v", err)
	}
	if cur, _ := st.GetVM(ctx, sus.ID); cur.State != model.StateSuspended {
		t.Fatalf("refused resume changed the state to %s", cur.State)
	}
}

// A manifest or state file that does not match is refused with what was
// wrong and the way out; only an exact copy passes.
func TestSavedStateChecks(t *testing.T) {
	vm := model.VM{Name: "v", VMM: model.VMMQEMU, BootID: "b1", CPUs: 2, MemoryMiB: 512, Dir: t.TempDir()}
	state := []byte(strings.Repeat("guest memory ", 10000))
	if err := os.WriteFile(StateFile(vm), state, 0o600); err != nil {
		t.Fatal(err)
	}
	size, sum, err := hashFile(StateFile(vm))
	if err != nil {
		t.Fatal(err)
	}
	good := savedState{Format: savedStateFormat, VMM: vm.VMM, BootID: vm.BootID, CPUs: 2, MemoryMiB: 512, Size: size, SHA256: sum}
	if err := writeManifest(vm, good); err != nil {
		t.Fatal(err)
	}
	if man, err := checkManifest(vm); err != nil || verifyHash(vm, man) != nil {
		t.Fatalf("good state refused: %v / %v", err, verifyHash(vm, man))
	}
	check := func(what, want string, err error) {
		t.Helper()
		if err == nil || api.CodeOf(err) != api.CodeFailedPrecondition || !strings.Contains(err.Error(), want) ||
			!strings.Contains(err.Error(), "banger vm stop --force v") {
			t.Fatalf("%s: %v (want a refusal with %q and the way out)", what, err, want)
		}
	}
	for what, mod := range map[string]func(*savedState){
		"other boot": func(s *savedState) { s.BootID = "b2" },
		"other size": func(s *savedState) { s.MemoryMiB = 1024 },
		"format":     func(s *savedState) { s.Format = 9 },
		"no sha":     func(s *savedState) { s.SHA256 = "" },
	} {
		bad := good
		mod(&bad)
		if err := writeManifest(vm, bad); err != nil {
			t.Fatal(err)
		}
		_, err := checkManifest(vm)
		check(what, "saved state", err)
	}
	if err := writeManifest(vm, good); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(StateFile(vm), state[:len(state)-1], 0o600)
	_, err = checkManifest(vm)
	check("truncated", "truncated or grown", err)
	flipped := []byte(string(state))
	flipped[100] ^= 1
	os.WriteFile(StateFile(vm), flipped, 0o600)
	man, err := checkManifest(vm)
	if err != nil {
		t.Fatal(err)
	}
	check("corrupt", "corrupt: sha256", verifyHash(vm, man))
	os.WriteFile(StateManifest(vm), []byte("{not json"), 0o600)
	_, err = checkManifest(vm)
	check("manifest", "manifest is corrupt", err)
}

// A daemon that died mid-resume: with the manifest still there the guest
// never ran, so the leftover VMM is ended and the VM stays suspended (and
// resumable); with the manifest consumed the guest runs on, so it is
// adopted as running and the spent state removed.
func TestAdoptInterruptedResume(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, consumed := range []bool{false, true} {
		m, st := suspendTestManager(t)
		drv := vmmtest.New(t, model.VMMQEMU, nil)
		m.d.Drivers = map[model.VMMKind]vmm.Driver{model.VMMQEMU: drv}
		m.d.DialAgent = func(vmm.AgentEndpoint) (Agent, error) { return nopAgent{}, nil }
		m.life = ctx
		vm := suspendTestVM(t, st, "half", model.VMMQEMU, model.StateStarting, model.StateRunning, model.StateSuspended)
		inst, err := drv.Start(ctx, vmm.Spec{ID: vm.ID, Dir: vm.Dir})
		if err != nil {
			t.Fatal(err)
		}
		if err := writeInstance(vm, inst); err != nil {
			t.Fatal(err)
		}
		vm.PID, vm.PIDStartTime = inst.PID, inst.PIDStartTime
		if err := m.save(ctx, &vm); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(StateFile(vm), []byte("state"), 0o600)
		if !consumed {
			if err := writeManifest(vm, savedState{Format: savedStateFormat}); err != nil {
				t.Fatal(err)
			}
		}
		if err := m.Adopt(ctx); err != nil {
			t.Fatal(err)
		}
		cur, err := st.GetVM(ctx, vm.ID)
		if err != nil {
			t.Fatal(err)
		}
		_, stateErr := os.Stat(StateFile(vm))
		killed := drv.Log().Count(vmmtest.MethodKill)
		if !consumed {
			if killed != 1 || len(drv.Running()) != 0 || cur.State != model.StateSuspended || cur.PID != 0 || stateErr != nil {
				t.Fatalf("unverified restore: killed %d, %s pid %d, state file %v; want the vmm ended and the vm suspended with its state",
					killed, cur.State, cur.PID, stateErr)
			}
		} else {
			if killed != 0 || len(drv.Running()) != 1 || cur.State != model.StateRunning || m.running[vm.ID] == nil || !os.IsNotExist(stateErr) {
				t.Fatalf("continued restore: killed %d, %s, tracked %v, state file %v; want it adopted running and the spent state gone",
					killed, cur.State, m.running[vm.ID] != nil, stateErr)
			}
			m.Close()
		}
	}
}

// resumableVMM adds the optional Resume (of a paused guest) to the fake.
type resumableVMM struct {
	*vmmtest.Driver
	resumed int
}

func (r *resumableVMM) Resume(context.Context, vmm.Instance) error { r.resumed++; return nil }

// A daemon that died mid-suspend left the guest paused and an unregistered
// saved state: the restarted daemon drops the state and continues the guest.
func TestAdoptInterruptedSuspend(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m, st := suspendTestManager(t)
	drv := &resumableVMM{Driver: vmmtest.New(t, model.VMMQEMU, nil)}
	m.d.Drivers = map[model.VMMKind]vmm.Driver{model.VMMQEMU: drv}
	m.d.DialAgent = func(vmm.AgentEndpoint) (Agent, error) { return nopAgent{}, nil }
	m.life = ctx
	defer m.Close()
	vm := suspendTestVM(t, st, "mid", model.VMMQEMU, model.StateStarting, model.StateRunning)
	inst, err := drv.Start(ctx, vmm.Spec{ID: vm.ID, Dir: vm.Dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := writeInstance(vm, inst); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(StateFile(vm)+".partial", []byte("half a state"), 0o600)
	if err := m.Adopt(ctx); err != nil {
		t.Fatal(err)
	}
	cur, _ := st.GetVM(ctx, vm.ID)
	if killed := drv.Log().Count(vmmtest.MethodKill); drv.resumed != 1 || killed != 0 || cur.State != model.StateRunning {
		t.Fatalf("after adopt: resumed %d killed %d state %s; want the guest continued, running", drv.resumed, killed, cur.State)
	}
	ents, _ := os.ReadDir(vm.Dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "suspend.") {
			t.Fatalf("unregistered saved state %s left", e.Name())
		}
	}
}

// A daemon that died after saving and ending the VMM but before recording
// it: a whole saved state makes the VM suspended; anything less is dropped
// and the VM stopped.
func TestAdoptSavedButUnrecorded(t *testing.T) {
	ctx := context.Background()
	for _, whole := range []bool{true, false} {
		m, st := suspendTestManager(t)
		drv := vmmtest.New(t, model.VMMQEMU, nil)
		drv.Fail(vmmtest.MethodAdopt, vmm.ErrNotRunning)
		m.d.Drivers = map[model.VMMKind]vmm.Driver{model.VMMQEMU: drv}
		vm := suspendTestVM(t, st, "saved", model.VMMQEMU, model.StateStarting, model.StateRunning)
		if err := writeInstance(vm, vmm.Instance{Driver: model.VMMQEMU, ID: vm.ID, PID: 1 << 22}); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(StateFile(vm), []byte("state"), 0o600)
		size, sum, _ := hashFile(StateFile(vm))
		man := savedState{Format: savedStateFormat, VMM: vm.VMM, BootID: vm.BootID, CPUs: vm.CPUs, MemoryMiB: vm.MemoryMiB, Size: size, SHA256: sum}
		if !whole {
			man.Size++ // as if the rename of a longer state never happened
		}
		if err := writeManifest(vm, man); err != nil {
			t.Fatal(err)
		}
		if err := m.Adopt(ctx); err != nil {
			t.Fatal(err)
		}
		cur, _ := st.GetVM(ctx, vm.ID)
		_, serr := os.Stat(StateFile(vm))
		if whole && (cur.State != model.StateSuspended || serr != nil) {
			t.Fatalf("whole saved state: vm %s, state file %v; want suspended with it", cur.State, serr)
		}
		if !whole && (cur.State != model.StateStopped || !os.IsNotExist(serr)) {
			t.Fatalf("partial saved state: vm %s, state file %v; want stopped and the files gone", cur.State, serr)
		}
	}
}
