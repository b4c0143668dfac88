package vmlife

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
)

// The Firecracker driver has no snapshot support yet: snapshot and fork
// say so, and make nothing.
func TestSnapshotAndForkRefusedByDriverWithoutSnapshots(t *testing.T) {
	ctx := context.Background()
	m, st := suspendTestManager(t)
	m.d.Paths.Data = t.TempDir()
	vm := suspendTestVM(t, st, "fc", model.VMMFirecracker, model.StateStarting, model.StateRunning)
	m.running[vm.ID] = &runningVM{driver: m.d.Drivers[model.VMMFirecracker], agent: nopAgent{}, cancel: func() {}}
	_, err := m.Snapshot(ctx, SnapshotRequest{VM: "fc", As: "s"}, nil)
	if api.CodeOf(err) != api.CodeUnimplemented || !strings.Contains(err.Error(), "not supported by the firecracker driver yet") {
		t.Fatalf("snapshot under firecracker: %v", err)
	}
	if ents, _ := os.ReadDir(m.d.Paths.SnapshotsDir()); len(ents) != 0 {
		t.Fatalf("refused snapshot left files: %v", ents)
	}
	if all, _ := st.ListSnapshots(ctx); len(all) != 0 {
		t.Fatalf("refused snapshot recorded: %v", all)
	}
	// A (hand-made) firecracker snapshot cannot be forked.
	sn := model.Snapshot{ID: "aa", Name: "fcsnap", Kind: model.SnapshotKindSnapshot, SourceVM: "fc", SourceVMID: vm.ID,
		Image: "img", Kernel: "k", VMM: model.VMMFirecracker, CPUs: 1, MemoryMiB: 256, InitMode: model.InitFast,
		Network: model.NetworkIsolated, BootID: "b1", Dir: filepath.Join(t.TempDir(), "aa"), StateBytes: 1, StateSHA: "x"}
	if _, err := st.CreateSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}
	before, _ := st.ListVMs(ctx)
	_, err = m.Fork(ctx, ForkRequest{From: "fcsnap", Count: 2}, nil)
	if api.CodeOf(err) != api.CodeUnimplemented || !strings.Contains(err.Error(), "not supported by the firecracker driver yet") {
		t.Fatalf("fork under firecracker: %v", err)
	}
	if after, _ := st.ListVMs(ctx); len(after) != len(before) {
		t.Fatalf("refused fork made vms: %d → %d", len(before), len(after))
	}
	// Another VMM or kernel than the snapshot's is refused by name.
	_, err = m.Fork(ctx, ForkRequest{From: "fcsnap", VMM: model.VMMQEMU}, nil)
	if api.CodeOf(err) != api.CodeFailedPrecondition || !strings.Contains(err.Error(), "cannot be restored by qemu") {
		t.Fatalf("fork onto another vmm: %v", err)
	}
	_, err = m.Fork(ctx, ForkRequest{From: "fcsnap", Kernel: "other"}, nil)
	if api.CodeOf(err) != api.CodeFailedPrecondition || !strings.Contains(err.Error(), "cannot run under kernel other") {
		t.Fatalf("fork onto another kernel: %v", err)
	}
	if _, err := m.Fork(ctx, ForkRequest{From: "fcsnap", Count: MaxForkCount + 1}, nil); api.CodeOf(err) != api.CodeInvalidArgument {
		t.Fatalf("fork of too many: %v", err)
	}
}

// TestForkedSnapshotOnlyDeniesMore: a fork's policy is added to the
// snapshot's and Isolated overrides a shared snapshot; nothing is lifted.
func TestForkedSnapshotOnlyDeniesMore(t *testing.T) {
	sn := model.Snapshot{Name: "s", Network: model.NetworkShared, Policy: model.VMPolicy{DenyEgress: []string{"192.0.2.0/24"}, ForwardDeny: []int{22}}}
	got := forkedSnapshot(sn, ForkRequest{Policy: model.VMPolicy{DenyEgress: []string{"0.0.0.0/0"}}, Isolated: true})
	if got.Network != model.NetworkIsolated || !slices.Equal(got.Policy.DenyEgress, []string{"192.0.2.0/24", "0.0.0.0/0"}) || !slices.Equal(got.Policy.ForwardDeny, []int{22}) {
		t.Fatalf("forked: network %q policy %+v", got.Network, got.Policy)
	}
	if sn.Network != model.NetworkShared || len(sn.Policy.DenyEgress) != 1 {
		t.Fatalf("the snapshot itself changed: %+v", sn)
	}
	if plain := forkedSnapshot(sn, ForkRequest{}); plain.Network != model.NetworkShared || !slices.Equal(plain.Policy.DenyEgress, sn.Policy.DenyEgress) {
		t.Fatalf("a plain fork changed the shape: %+v", plain)
	}
}
