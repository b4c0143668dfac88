package store

import (
	"context"
	"path/filepath"
	"testing"
)

func TestOperationsJournal(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "banger.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// A row for a VM that has no row yet: the journal comes first.
	op, err := s.BeginOperation(ctx, Operation{OpID: "op-1", Kind: OpCreate, VMID: "00000000000000ab", VMName: "x"})
	if err != nil || op.ID == 0 {
		t.Fatalf("BeginOperation = %+v, %v", op, err)
	}
	if _, err := s.BeginOperation(ctx, Operation{Kind: OpCreate}); err == nil {
		t.Fatal("an operation without a vm id was journalled")
	}
	res := OpResources{Record: true, Dir: "/v/x", Tap: "bgr0", IP: "10.0.0.2", PID: 42, PIDStartTime: 1 << 40}
	if err := s.UpdateOperation(ctx, op.ID, "network", res); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateOperation(ctx, op.ID+100, "network", res); err == nil {
		t.Fatal("updating a missing operation succeeded")
	}
	ops, err := s.ListOperations(ctx)
	if err != nil || len(ops) != 1 || ops[0].Step != "network" || ops[0].Created != res || ops[0].OpID != "op-1" || ops[0].Kind != OpCreate {
		t.Fatalf("ListOperations = %+v, %v", ops, err)
	}
	if err := s.EndOperation(ctx, op.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.EndOperation(ctx, op.ID); err != nil {
		t.Fatalf("ending an ended operation: %v", err)
	}
	if ops, err := s.ListOperations(ctx); err != nil || len(ops) != 0 {
		t.Fatalf("after end: %+v, %v", ops, err)
	}
}
