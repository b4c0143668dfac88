package vmlife

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/vmm"
)

// fakeVMMProc starts a process named like a VMM (a copy of sleep called
// qemu-system-x86_64) whose command line names a file in dir, as QEMU's
// does; it is reaped in the background.
func fakeVMMProc(t *testing.T, dir string) (*exec.Cmd, uint64) {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	bin := filepath.Join(t.TempDir(), "qemu-system-x86_64")
	b, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	// sleep takes no other arguments: argv[0] names the file in dir.
	cmd := exec.Command(bin, "600")
	cmd.Args[0] = filepath.Join(dir, "root.ext4")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	go cmd.Wait()
	st, err := vmm.ProcStartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	return cmd, st
}

func waitDead(pid int, start uint64) bool {
	for i := 0; i < 100; i++ {
		if ok, _ := vmm.ProcessAlive(pid, start); !ok {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// TestRecoverInterruptedCreate: a create cut short after its VMM started
// but before anything recorded the pid is rolled back whole: the VMM found
// by its command line is killed, the dir and the record are gone, and the
// journal is empty.
func TestRecoverInterruptedCreate(t *testing.T) {
	ctx := context.Background()
	m, st := suspendTestManager(t)
	vm := suspendTestVM(t, st, "halfmade", model.VMMQEMU)
	proc, start := fakeVMMProc(t, vm.Dir)
	if _, err := st.BeginOperation(ctx, store.Operation{Kind: store.OpCreate, VMID: vm.ID, VMName: vm.Name, Step: "vmm",
		Created: store.OpResources{Record: true, Dir: vm.Dir}}); err != nil {
		t.Fatal(err)
	}
	if err := m.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if !waitDead(proc.Process.Pid, start) {
		t.Fatal("the unrecorded vmm of an interrupted create still runs")
	}
	if _, err := st.GetVM(ctx, vm.ID); err == nil {
		t.Fatal("the record of an interrupted create is still there")
	}
	if _, err := os.Stat(vm.Dir); !os.IsNotExist(err) {
		t.Fatalf("vm dir after recovery: %v", err)
	}
	if ops, _ := st.ListOperations(ctx); len(ops) != 0 {
		t.Fatalf("journal after recovery: %+v", ops)
	}
}

// TestRecoverInterruptedStartAndStop: a start is rolled back to stopped
// with the reason; a stop is finished; another VM's process is untouched.
func TestRecoverInterruptedStartAndStop(t *testing.T) {
	ctx := context.Background()
	m, st := suspendTestManager(t)
	bystander := suspendTestVM(t, st, "bystander", model.VMMQEMU, model.StateStopped)
	other, otherStart := fakeVMMProc(t, bystander.Dir)
	for _, c := range []struct {
		kind, want string
		wantState  model.VMState
		states     []model.VMState
	}{
		{store.OpStart, "daemon stopped during vm start (step ready)", model.StateError, []model.VMState{model.StateStopped, model.StateStarting}},
		{store.OpStop, "finished after a daemon restart", model.StateStopped, []model.VMState{model.StateStarting, model.StateRunning, model.StateStopping}},
	} {
		vm := suspendTestVM(t, st, "vm-"+c.kind, model.VMMQEMU, c.states...)
		proc, start := fakeVMMProc(t, vm.Dir)
		vm.PID, vm.PIDStartTime = proc.Process.Pid, start
		if err := m.save(ctx, &vm); err != nil {
			t.Fatal(err)
		}
		if _, err := st.BeginOperation(ctx, store.Operation{Kind: c.kind, VMID: vm.ID, VMName: vm.Name, Step: "ready",
			Created: store.OpResources{Dir: vm.Dir, PID: vm.PID, PIDStartTime: start}}); err != nil {
			t.Fatal(err)
		}
		if err := m.Recover(ctx); err != nil {
			t.Fatal(err)
		}
		if !waitDead(vm.PID, start) {
			t.Fatalf("%s: vmm still runs", c.kind)
		}
		cur, err := st.GetVM(ctx, vm.ID)
		if err != nil || cur.State != c.wantState || cur.PID != 0 || !strings.Contains(cur.StateReason, c.want) {
			t.Fatalf("%s: after recovery %+v, %v (want %s, %q)", c.kind, cur, err, c.wantState, c.want)
		}
	}
	if ok, _ := vmm.ProcessAlive(other.Process.Pid, otherStart); !ok {
		t.Fatal("recovery killed another vm's process")
	}
	if ops, _ := st.ListOperations(ctx); len(ops) != 0 {
		t.Fatalf("journal after recovery: %+v", ops)
	}
}

// TestRecoverMarksUnjournalledCreatingAsError: a VM left in creating by a
// daemon older than the journal is not left there for ever.
func TestRecoverMarksUnjournalledCreatingAsError(t *testing.T) {
	ctx := context.Background()
	m, st := suspendTestManager(t)
	vm := suspendTestVM(t, st, "stuck", model.VMMQEMU)
	if err := m.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	cur, err := st.GetVM(ctx, vm.ID)
	if err != nil || cur.State != model.StateError || !strings.Contains(cur.StateReason, "banger vm rm stuck") {
		t.Fatalf("stuck creating vm after recovery: %+v, %v", cur, err)
	}
}

// TestJournaledChainRecordsEachStepFirst: while a step runs, the journal
// already names it and lists what earlier steps made; the row goes when
// the operation ends.
func TestJournaledChainRecordsEachStepFirst(t *testing.T) {
	ctx := context.Background()
	m, st := suspendTestManager(t)
	vm := model.VM{ID: "00000000000000cd", Name: "j", Dir: "/v/j"}
	jctx, j, done, err := m.journalFor(ctx, store.OpCreate, vm)
	if err != nil {
		t.Fatal(err)
	}
	// An operation inside it writes to the same row.
	if _, j2, _, _ := m.journalFor(jctx, store.OpStart, vm); j2 != j {
		t.Fatal("a nested operation began a row of its own")
	}
	type state struct{ tap string }
	var seen []string
	check := func(step string) func(context.Context, *state, *vmm.Undo) error {
		return func(ctx context.Context, s *state, _ *vmm.Undo) error {
			ops, err := st.ListOperations(ctx)
			if err != nil || len(ops) != 1 {
				t.Fatalf("journal during %s: %+v, %v", step, ops, err)
			}
			seen = append(seen, ops[0].Step+":"+ops[0].Created.Tap)
			s.tap = "tap-" + step
			return nil
		}
	}
	chain := journaled(j, vmm.Steps[*state]{{Name: "a", Fn: check("a")}, {Name: "b", Fn: check("b")}},
		func(s *state) store.OpResources { return store.OpResources{Tap: s.tap} })
	if err := chain.Run(jctx, m.d.Log, &state{}, &vmm.Undo{}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(seen, ",") != "a:,b:tap-a" {
		t.Fatalf("journal seen by the steps: %v", seen)
	}
	done()
	if ops, _ := st.ListOperations(ctx); len(ops) != 0 {
		t.Fatalf("journal after the operation ended: %+v", ops)
	}
}
