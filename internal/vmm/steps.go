package vmm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"
)

// Step is one named stage of a boot. S is the driver's boot state.
type Step[S any] struct {
	Name string
	Fn   func(ctx context.Context, s S, undo *Undo) error
}

// Steps is an ordered, editable chain of boot stages (validation first), in
// the style of firecracker-go-sdk's handler lists: each stage is logged and
// timed, and a failure names the stage.
type Steps[S any] []Step[S]

// Has reports whether a step with that name is in the chain.
func (l Steps[S]) Has(name string) bool {
	return slices.ContainsFunc(l, func(s Step[S]) bool { return s.Name == name })
}

// Remove returns the chain without the named step.
func (l Steps[S]) Remove(name string) Steps[S] {
	return slices.DeleteFunc(slices.Clone(l), func(s Step[S]) bool { return s.Name == name })
}

// Replace returns the chain with the step of the same name swapped for s.
func (l Steps[S]) Replace(s Step[S]) Steps[S] {
	out := slices.Clone(l)
	for i := range out {
		if out[i].Name == s.Name {
			out[i] = s
		}
	}
	return out
}

// InsertAfter returns the chain with s placed after the named step, or at
// the end if there is none.
func (l Steps[S]) InsertAfter(name string, s Step[S]) Steps[S] {
	i := slices.IndexFunc(l, func(x Step[S]) bool { return x.Name == name })
	if i < 0 {
		return append(slices.Clone(l), s)
	}
	return slices.Insert(slices.Clone(l), i+1, s)
}

// InsertBefore returns the chain with s placed before the named step, or at
// the start if there is none.
func (l Steps[S]) InsertBefore(name string, s Step[S]) Steps[S] {
	i := slices.IndexFunc(l, func(x Step[S]) bool { return x.Name == name })
	if i < 0 {
		i = 0
	}
	return slices.Insert(slices.Clone(l), i, s)
}

// Names lists the steps in order.
func (l Steps[S]) Names() []string {
	names := make([]string, len(l))
	for i, s := range l {
		names[i] = s.Name
	}
	return names
}

// StepError says which step failed.
type StepError struct {
	Step string
	Err  error
}

func (e *StepError) Error() string { return fmt.Sprintf("step %s: %v", e.Step, e.Err) }
func (e *StepError) Unwrap() error { return e.Err }

// Run executes the chain in order. On the first failure it runs undo (LIFO)
// and returns a *StepError joined with any undo errors, so a failed start
// leaves nothing behind. On success the undo list is left to the caller.
func (l Steps[S]) Run(ctx context.Context, log *slog.Logger, s S, undo *Undo) error {
	for _, step := range l {
		start := time.Now()
		err := step.Fn(ctx, s, undo)
		took := time.Since(start).Round(time.Millisecond)
		if err != nil {
			log.WarnContext(ctx, "vm boot step failed", "step", step.Name, "took", took, "err", err)
			uerr := undo.Run(ctx)
			if uerr != nil {
				log.WarnContext(ctx, "undo after failed boot step", "step", step.Name, "err", uerr)
			}
			return errors.Join(&StepError{Step: step.Name, Err: err}, uerr)
		}
		log.DebugContext(ctx, "vm boot step done", "step", step.Name, "took", took)
	}
	return nil
}

// Undo is a LIFO list of cleanups.
type Undo struct {
	fns []func(ctx context.Context) error
}

// Push adds a cleanup that runs before every earlier one.
func (u *Undo) Push(fn func(ctx context.Context) error) { u.fns = append(u.fns, fn) }

// Run runs the cleanups newest first, joining their errors, and empties the
// list. Each gets ctx without its cancellation: a cleanup usually runs
// because the operation failed or its caller went away, and must still
// finish, with the operation's op_id and vm on its log lines; one that
// waits bounds itself.
func (u *Undo) Run(ctx context.Context) error {
	ctx = context.WithoutCancel(ctx)
	var errs []error
	for i := len(u.fns) - 1; i >= 0; i-- {
		if err := u.fns[i](ctx); err != nil {
			errs = append(errs, err)
		}
	}
	u.fns = nil
	return errors.Join(errs...)
}

// Discard forgets the cleanups (the boot succeeded).
func (u *Undo) Discard() { u.fns = nil }
