package vmlife

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/store"
)

func forkTestSnapshot(t *testing.T, st *store.Store, name, srcID string) model.Snapshot {
	t.Helper()
	id, err := model.NewSnapshotID()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "state"), []byte("state"), 0o400); err != nil {
		t.Fatal(err)
	}
	sn, err := st.CreateSnapshot(context.Background(), model.Snapshot{ID: id, Name: name, Kind: model.SnapshotKindSnapshot,
		SourceVM: "src", SourceVMID: srcID, Image: "img", Kernel: "k", VMM: model.VMMQEMU, CPUs: 1, MemoryMiB: 256,
		InitMode: model.InitFast, Network: model.NetworkIsolated, BootID: "b1", Dir: dir, StateBytes: 5, StateSHA: "x"})
	if err != nil {
		t.Fatal(err)
	}
	return sn
}

// TestRemoveSnapshotRefusedWhileForking: while a fork holds a snapshot
// (its read lock), snapshot rm is refused even with force, and the
// snapshot's row and files stay; once the fork is over, rm works.
func TestRemoveSnapshotRefusedWhileForking(t *testing.T) {
	ctx := context.Background()
	m, st := suspendTestManager(t)
	sn := forkTestSnapshot(t, st, "busy", "src-id")
	l := m.snapLock(sn.ID)
	l.RLock()
	err := m.RemoveSnapshot(ctx, "busy", true)
	if api.CodeOf(err) != api.CodeFailedPrecondition || !strings.Contains(err.Error(), "being forked from right now") {
		t.Fatalf("rm during a fork: %v", err)
	}
	if _, err := st.GetSnapshot(ctx, "busy"); err != nil {
		t.Fatalf("the snapshot's row went during a fork: %v", err)
	}
	if _, err := os.Stat(filepath.Join(sn.Dir, "state")); err != nil {
		t.Fatalf("the snapshot's state went during a fork: %v", err)
	}
	l.RUnlock()
	if err := m.RemoveSnapshot(ctx, "busy", false); err != nil {
		t.Fatalf("rm after the fork: %v", err)
	}
	if _, err := os.Stat(sn.Dir); !os.IsNotExist(err) {
		t.Fatalf("the removed snapshot's dir: %v", err)
	}
}

// TestRecoverInterruptedFork: a clone cut short mid-fork (its VMM up, not
// yet ready) is rolled back whole: VMM killed, dir and record gone, the
// snapshot no longer lists it as a user, and the snapshot is untouched.
func TestRecoverInterruptedFork(t *testing.T) {
	ctx := context.Background()
	m, st := suspendTestManager(t)
	sn := forkTestSnapshot(t, st, "base", "src-id")
	vm := suspendTestVM(t, st, "clone-1", model.VMMQEMU)
	if err := st.RecordFork(ctx, vm.ID, sn.ID); err != nil {
		t.Fatal(err)
	}
	proc, start := fakeVMMProc(t, vm.Dir)
	if _, err := st.BeginOperation(ctx, store.Operation{Kind: store.OpFork, VMID: vm.ID, VMName: vm.Name, Step: "identity",
		Created: store.OpResources{Record: true, Dir: vm.Dir, PID: proc.Process.Pid, PIDStartTime: start}}); err != nil {
		t.Fatal(err)
	}
	if err := m.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if !waitDead(proc.Process.Pid, start) {
		t.Fatal("the vmm of an interrupted fork still runs")
	}
	if _, err := st.GetVM(ctx, vm.ID); err == nil {
		t.Fatal("the record of an interrupted fork is still there")
	}
	if _, err := os.Stat(vm.Dir); !os.IsNotExist(err) {
		t.Fatalf("the dir of an interrupted fork: %v", err)
	}
	if ops, _ := st.ListOperations(ctx); len(ops) != 0 {
		t.Fatalf("journal after recovery: %+v", ops)
	}
	got, err := st.GetSnapshot(ctx, "base")
	if err != nil || len(got.Users) != 0 {
		t.Fatalf("snapshot after the fork's recovery: %+v, %v", got, err)
	}
	if b, err := os.ReadFile(filepath.Join(sn.Dir, "state")); err != nil || string(b) != "state" {
		t.Fatalf("snapshot state after recovery: %q, %v", b, err)
	}
}

// TestVerifiedHashCacheStillRefusesChanges: once a file matched, its check
// is cached by identity; a later write in place, a truncation or a
// replacement must still be caught.
func TestVerifiedHashCacheStillRefusesChanges(t *testing.T) {
	m, _ := suspendTestManager(t)
	p := filepath.Join(t.TempDir(), "state")
	data := []byte(strings.Repeat("banger state ", 1000))
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	size, sha, err := hashFile(p)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second is served from the cache
		if gs, gh, err := m.verifiedHash(p, size, sha); err != nil || gs != size || gh != sha {
			t.Fatalf("intact file: %d %s %v", gs, gh, err)
		}
	}
	if len(m.verified) != 1 {
		t.Fatalf("cache holds %d entries, want 1", len(m.verified))
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{'X'}, 100); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, gh, _ := m.verifiedHash(p, size, sha); gh == sha {
		t.Fatal("a byte changed in place after a cached match was not caught")
	}
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, gh, _ := m.verifiedHash(p, size, sha); gh != sha {
		t.Fatal("the restored file does not match")
	}
	if err := os.Truncate(p, size/2); err != nil {
		t.Fatal(err)
	}
	if gs, _, _ := m.verifiedHash(p, size, sha); gs == size {
		t.Fatal("a truncation after a cached match was not caught")
	}
	m.forgetVerified(filepath.Dir(p))
	if len(m.verified) != 0 {
		t.Fatalf("forgetVerified left %d entries", len(m.verified))
	}
}
