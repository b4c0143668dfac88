package vmlife_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/vmm"
)

// TestRecoverInterruptedOps extends recover_test.go's cases through the
// seams: for each kind of operation a crash cut short at a step, with the
// VMM it had started still running, Recover ends that VMM and finishes
// (stop, remove) or rolls back (create, start) the operation; the journal
// is empty after.
func TestRecoverInterruptedOps(t *testing.T) {
	cases := []struct {
		kind, step string
		states     []model.VMState // the VM's state when the daemon died
		wantGone   bool            // the VM's record and dir are gone
		wantState  model.VMState
		wantReason string
	}{
		{kind: store.OpCreate, step: "parked", wantGone: true},
		{kind: store.OpStart, step: "vmm", states: []model.VMState{model.StateStarting},
			wantState: model.StateError, wantReason: "step vmm"},
		{kind: store.OpStart, step: "running", states: []model.VMState{model.StateStarting},
			wantState: model.StateError, wantReason: "step running"},
		{kind: store.OpStop, step: "poweroff", states: []model.VMState{model.StateStarting, model.StateRunning, model.StateStopping},
			wantState: model.StateStopped, wantReason: "finished after a daemon restart"},
		{kind: store.OpRemove, step: "files", wantGone: true},
	}
	for _, c := range cases {
		t.Run(c.kind+"@"+c.step, func(t *testing.T) {
			f := newLifeFixture(t, nil)
			ctx := t.Context()
			bystander := f.newVM(t, "bystander")
			if _, err := f.m.Start(ctx, bystander.Name, nil); err != nil {
				t.Fatal(err)
			}
			bystander, _ = f.st.GetVM(ctx, bystander.ID)
			// The interrupted VM's VMM, as the crashed daemon left it.
			vm := f.newVM(t, "cut")
			for _, s := range c.states {
				var err error
				if vm, err = f.st.SetVMState(ctx, vm.ID, s, ""); err != nil {
					t.Fatal(err)
				}
			}
			inst, err := f.drv.Start(ctx, vmm.Spec{ID: vm.ID, Dir: vm.Dir})
			if err != nil {
				t.Fatal(err)
			}
			vm.Tap = "tap-cut"
			res := store.OpResources{Record: true, Dir: vm.Dir, Tap: vm.Tap}
			// The row lists the pid (a VMM nobody recorded is found by its
			// command line: recover_test.go's TestRecoverInterruptedCreate).
			res.PID, res.PIDStartTime = inst.PID, inst.PIDStartTime
			if c.kind != store.OpCreate {
				vm.PID, vm.PIDStartTime = inst.PID, inst.PIDStartTime
			}
			if vm, err = f.st.UpdateVM(ctx, vm); err != nil {
				t.Fatal(err)
			}
			if _, err := f.st.BeginOperation(ctx, store.Operation{Kind: c.kind, VMID: vm.ID, VMName: vm.Name, Step: c.step, Created: res}); err != nil {
				t.Fatal(err)
			}
			if err := f.m.Recover(ctx); err != nil {
				t.Fatal(err)
			}
			if ok, _ := vmm.ProcessAlive(inst.PID, inst.PIDStartTime); ok {
				t.Fatal("the interrupted operation's vmm still runs")
			}
			if ok, _ := vmm.ProcessAlive(bystander.PID, bystander.PIDStartTime); !ok {
				t.Fatal("recovery ended another vm's vmm")
			}
			cur, err := f.st.GetVM(ctx, vm.ID)
			if c.wantGone {
				if !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("vm after recovery: %+v %v; want it gone", cur, err)
				}
				if _, err := os.Stat(vm.Dir); !os.IsNotExist(err) {
					t.Fatalf("vm dir after recovery: %v", err)
				}
				if f.log.Count("net.detach") != 1 {
					t.Fatalf("network detached %d times, want once", f.log.Count("net.detach"))
				}
			} else if err != nil || cur.State != c.wantState || cur.PID != 0 || !strings.Contains(cur.StateReason, c.wantReason) {
				t.Fatalf("vm after recovery: %s pid %d %q %v; want %s %q", cur.State, cur.PID, cur.StateReason, err, c.wantState, c.wantReason)
			}
			if ops, _ := f.st.ListOperations(ctx); len(ops) != 0 {
				t.Fatalf("journal after recovery: %+v", ops)
			}
		})
	}
}

// TestRecoverFailureKeepsRow: a rollback that cannot finish (the root
// helper refuses to free the tap) marks the VM error with the reason and
// the way out, and keeps the row; the next daemon start finishes it.
func TestRecoverFailureKeepsRow(t *testing.T) {
	f := newLifeFixture(t, nil)
	ctx := t.Context()
	vm := f.newVM(t, "stuck")
	if _, err := f.st.BeginOperation(ctx, store.Operation{Kind: store.OpCreate, VMID: vm.ID, VMName: vm.Name, Step: "network",
		Created: store.OpResources{Record: true, Dir: vm.Dir, Tap: "tap-stuck"}}); err != nil {
		t.Fatal(err)
	}
	f.net.detachErr = errors.New("root helper is not running")
	if err := f.m.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	cur, err := f.st.GetVM(ctx, vm.ID)
	if err != nil || cur.State != model.StateError || !strings.Contains(cur.StateReason, "root helper is not running") ||
		!strings.Contains(cur.StateReason, "banger vm rm stuck") {
		t.Fatalf("vm after a failed recovery: %s %q %v", cur.State, cur.StateReason, err)
	}
	if ops, _ := f.st.ListOperations(ctx); len(ops) != 1 {
		t.Fatalf("journal after a failed recovery: %+v; want the row kept", ops)
	}
	f.net.detachErr = nil
	if err := f.m.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.GetVM(ctx, vm.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("vm after the second recovery: %v; want it gone", err)
	}
	if ops, _ := f.st.ListOperations(ctx); len(ops) != 0 {
		t.Fatalf("journal after the second recovery: %+v", ops)
	}
	if n := f.log.Count("net.detach"); n != 2 {
		t.Fatalf("detach tried %d times, want 2", n)
	}
}
