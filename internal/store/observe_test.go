package store

import (
	"context"
	"fmt"
	"testing"

	"github.com/bangerdev/banger/internal/model"
)

// Every committed VM change reaches the observer with the before and after
// rows; a refused change reaches it not at all.
func TestObserverSeesCommittedChanges(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	var seen []string
	s.ObserveVMs(func(_ context.Context, prev, cur *model.VM) {
		switch {
		case prev == nil:
			seen = append(seen, "create "+cur.Name+" "+string(cur.State))
		case cur == nil:
			seen = append(seen, "delete "+prev.Name+" "+string(prev.State))
		default:
			seen = append(seen, fmt.Sprintf("%s %s→%s %s", cur.Name, prev.State, cur.State, cur.StateReason))
		}
	})
	vm := mustCreateVM(t, s, testVM("obs"))
	if _, err := s.SetVMState(ctx, vm.ID, model.StateStopped, "created"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetVMState(ctx, vm.ID, model.StateSuspended, "bad"); err == nil {
		t.Fatal("stopped→suspended allowed")
	}
	if err := s.DeleteVM(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteVM(ctx, vm.ID); err == nil {
		t.Fatal("second delete succeeded")
	}
	want := []string{"create obs creating", "obs creating→stopped created", "delete obs stopped"}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("observer saw %q, want %q", seen, want)
	}
}
