package vmm

import (
	"context"
	"errors"
	"log/slog"
	"testing"
)

type undoKey struct{}

// TestUndoGetsLiveContext: a chain whose caller went away still undoes
// everything: each cleanup gets the operation's values (op_id, vm) without
// its cancellation.
func TestUndoGetsLiveContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.WithValue(t.Context(), undoKey{}, "op-1"))
	var got []string
	steps := Steps[struct{}]{
		{Name: "make", Fn: func(ctx context.Context, _ struct{}, u *Undo) error {
			u.Push(func(ctx context.Context) error {
				if ctx.Err() != nil || ctx.Value(undoKey{}) != "op-1" {
					got = append(got, "dead")
					return nil
				}
				got = append(got, "undone")
				return nil
			})
			return nil
		}},
		{Name: "wait", Fn: func(ctx context.Context, _ struct{}, _ *Undo) error {
			cancel()
			<-ctx.Done()
			return ctx.Err()
		}},
	}
	var undo Undo
	err := steps.Run(ctx, slog.New(slog.DiscardHandler), struct{}{}, &undo)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled chain: %v", err)
	}
	if len(got) != 1 || got[0] != "undone" {
		t.Fatalf("undo saw %v, want one cleanup with a live context carrying the op's values", got)
	}
}
