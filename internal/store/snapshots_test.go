package store

import (
	"context"
	"errors"
	"testing"

	"github.com/bangerdev/banger/internal/model"
)

func TestSnapshotRowsAndForkUsers(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	vm, err := s.CreateVM(ctx, model.VM{Name: "clone-1", Image: "img", Kernel: "k", VMM: "qemu", CPUs: 1, MemoryMiB: 256, InitMode: model.InitFast, Dir: "/x"})
	if err != nil {
		t.Fatal(err)
	}
	sn := model.Snapshot{ID: "00aa", Name: "base", Kind: model.SnapshotKindSnapshot, SourceVM: "src", SourceVMID: "ff",
		Image: "img", Kernel: "k", VMM: "qemu", CPUs: 1, MemoryMiB: 256, DiskBytes: 1 << 30, InitMode: model.InitFast,
		Network: model.NetworkIsolated, BootID: "b", Dir: "/s", StateBytes: 10, StateSHA: "ab"}
	if _, err := s.CreateSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateSnapshot(ctx, sn); !errors.Is(err, ErrExists) {
		t.Fatalf("second CreateSnapshot = %v, want ErrExists", err)
	}
	if err := s.RecordFork(ctx, vm.ID, sn.ID); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetSnapshot(ctx, "base")
	if err != nil || len(got.Users) != 1 || got.Users[0] != "clone-1" || got.StateSHA != "ab" || got.MemoryMiB != 256 {
		t.Fatalf("GetSnapshot = %+v, %v", got, err)
	}
	if err := s.DeleteSnapshot(ctx, sn.ID, false); !errors.Is(err, ErrInUse) {
		t.Fatalf("DeleteSnapshot(in use) = %v, want ErrInUse", err)
	}
	// The fork record goes with its VM.
	if err := s.DeleteVM(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetSnapshot(ctx, "base"); len(got.Users) != 0 {
		t.Fatalf("users after the vm went: %v", got.Users)
	}
	if err := s.DeleteSnapshot(ctx, sn.ID, false); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSnapshot(ctx, "base"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetSnapshot after delete = %v", err)
	}
}
