package store

import (
	"context"

	"github.com/bangerdev/banger/internal/model"
)

// VMObserver hears about every committed VM change: prev is nil for a
// created VM, cur is nil for a removed one. It runs after the commit,
// outside the write lock, and must not block (the daemon's event bus does
// not).
type VMObserver func(ctx context.Context, prev, cur *model.VM)

// ObserveVMs sets the one observer; call it before the store is shared.
func (s *Store) ObserveVMs(fn VMObserver) { s.observer = fn }

func (s *Store) notify(ctx context.Context, prev, cur *model.VM) {
	if s.observer != nil {
		s.observer(ctx, prev, cur)
	}
}
