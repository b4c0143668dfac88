package vmlife

import (
	"context"
	"fmt"

	"github.com/bangerdev/banger/internal/faultinject"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/opid"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/vmm"
)

// The operations journal: create, start, stop, remove and each clone of a
// fork write a row
// to the store before their first side effect, record the step they reach
// and what they made (pid + start time, tap, lease, disk) as they go, and
// delete the row when they end, done or undone. A daemon killed part-way
// leaves the row; the next one finishes or rolls the operation back from it
// (Recover). An operation run inside another (the start of `vm run`, the
// stop inside `vm rm -f`) writes to the outer one's row: recovering the
// outer operation covers both.

// journal is one operation's row.
type journal struct {
	m   *Manager
	op  store.Operation
	res store.OpResources
}

type journalKey struct{}

// journalFor returns the operation already journalling ctx's work, or
// begins a row of kind for vm. done ends a row begun here.
func (m *Manager) journalFor(ctx context.Context, kind string, vm model.VM) (context.Context, *journal, func(), error) {
	if j, ok := ctx.Value(journalKey{}).(*journal); ok {
		return ctx, j, func() {}, nil
	}
	op, err := m.d.Store.BeginOperation(ctx, store.Operation{
		OpID: opid.From(ctx), Kind: kind, VMID: vm.ID, VMName: vm.Name,
		Created: store.OpResources{Dir: vm.Dir},
	})
	if err != nil {
		return ctx, nil, nil, err
	}
	j := &journal{m: m, op: op, res: op.Created}
	done := func() {
		if err := m.d.Store.EndOperation(context.WithoutCancel(ctx), op.ID); err != nil {
			m.d.Log.WarnContext(ctx, "end journalled operation", "err", err)
		}
	}
	return context.WithValue(ctx, journalKey{}, j), j, done, nil
}

// at records that the operation is about to run step, with what it made so
// far; a fault-injection build may pause here (see internal/faultinject).
func (j *journal) at(ctx context.Context, step string) error {
	if err := j.m.d.Store.UpdateOperation(ctx, j.op.ID, step, j.res); err != nil {
		return fmt.Errorf("%s vm %q: %w", j.op.Kind, j.op.VMName, err)
	}
	j.op.Step = step
	faultinject.Pause(ctx, faultinject.Point(j.op.Kind, step))
	return nil
}

// made merges what a step made into the row's resources (zero fields keep
// what was known).
func (j *journal) made(r store.OpResources) {
	if r.Record {
		j.res.Record = true
	}
	for _, f := range []struct {
		dst *string
		v   string
	}{{&j.res.Dir, r.Dir}, {&j.res.Disk, r.Disk}, {&j.res.Tap, r.Tap}, {&j.res.IP, r.IP}} {
		if f.v != "" {
			*f.dst = f.v
		}
	}
	if r.PID > 0 {
		j.res.PID, j.res.PIDStartTime = r.PID, r.PIDStartTime
	}
}

// journaled wraps each step of chain: the journal records the step (and
// what the state holds so far, from made) before the step runs. The hook
// sits at the chain level, so steps know nothing of it.
func journaled[S any](j *journal, chain vmm.Steps[S], made func(S) store.OpResources) vmm.Steps[S] {
	out := make(vmm.Steps[S], len(chain))
	for i, st := range chain {
		fn := st.Fn
		name := st.Name
		out[i] = vmm.Step[S]{Name: name, Fn: func(ctx context.Context, s S, undo *vmm.Undo) error {
			j.made(made(s))
			if err := j.at(ctx, name); err != nil {
				return err
			}
			err := fn(ctx, s, undo)
			j.made(made(s))
			return err
		}}
	}
	return out
}

func createMade(s *createState) store.OpResources {
	r := store.OpResources{Dir: s.vm.Dir, Tap: s.vm.Tap, IP: s.vm.IP}
	if !s.vm.CreatedAt.IsZero() {
		r.Record = true
		r.Disk = rootDisk(s.vm)
	}
	return r
}

func forkMade(s *forkState) store.OpResources {
	r := bootMade(s.boot)
	r.Record, r.Disk = true, rootDisk(s.boot.vm)
	return r
}

func bootMade(s *bootState) store.OpResources {
	return store.OpResources{Dir: s.vm.Dir, Tap: s.vm.Tap, IP: s.vm.IP, PID: s.inst.PID, PIDStartTime: s.inst.PIDStartTime}
}
