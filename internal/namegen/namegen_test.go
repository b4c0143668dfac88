package namegen

import (
	"testing"

	"github.com/bangerdev/banger/internal/model"
)

func TestNamesAreValidAndAvoidTaken(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 500; i++ {
		n := New(func(s string) bool { return seen[s] })
		if err := model.ValidateVMName(n); err != nil {
			t.Fatalf("generated invalid name %q: %v", n, err)
		}
		if seen[n] {
			t.Fatalf("generated a taken name %q", n)
		}
		seen[n] = true
	}
}
