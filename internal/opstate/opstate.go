// Package opstate is the registry of in-flight operations behind
// daemon.operations.list: an operation enters when its request starts and
// leaves when it ends, success or failure.
package opstate

import (
	"sort"
	"sync"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/progress"
)

// Registry is safe for concurrent use.
type Registry struct {
	mu  sync.Mutex
	ops map[string]*api.Operation
	now func() time.Time
}

// New returns an empty registry.
func New(now func() time.Time) *Registry {
	if now == nil {
		now = time.Now
	}
	return &Registry{ops: map[string]*api.Operation{}, now: now}
}

// Op is a handle on one registered operation.
type Op struct {
	r    *Registry
	opID string
}

// Start registers an operation. Two requests may not share an op_id while
// both run; the second is registered under a suffixed key but keeps its id.
func (r *Registry) Start(opID, method, target string) *Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	key := opID
	for i := 2; r.ops[key] != nil; i++ {
		key = opID + "#" + itoa(i)
	}
	r.ops[key] = &api.Operation{OpID: opID, Method: method, Target: target, StartedAt: r.now()}
	return &Op{r: r, opID: key}
}

// SetTarget names what the operation works on, once known.
func (o *Op) SetTarget(target string) {
	o.update(func(op *api.Operation) { op.Target = target })
}

// Progress records the operation's current stage and counters.
func (o *Op) Progress(ev progress.Event) {
	o.update(func(op *api.Operation) {
		stage := ev.Stage
		if ev.Item != "" {
			stage += " " + ev.Item
		}
		if stage != "" {
			op.Stage = stage
		}
		op.Done, op.Total, op.Unit = ev.Done, ev.Total, ev.Unit
	})
}

// End removes the operation from the registry.
func (o *Op) End() {
	o.r.mu.Lock()
	defer o.r.mu.Unlock()
	delete(o.r.ops, o.opID)
}

func (o *Op) update(fn func(*api.Operation)) {
	o.r.mu.Lock()
	defer o.r.mu.Unlock()
	if op := o.r.ops[o.opID]; op != nil {
		fn(op)
	}
}

// List returns a snapshot of running operations, oldest first.
func (r *Registry) List() []api.Operation {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]api.Operation, 0, len(r.ops))
	for _, op := range r.ops {
		out = append(out, *op)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].StartedAt.Equal(out[j].StartedAt) {
			return out[i].StartedAt.Before(out[j].StartedAt)
		}
		return out[i].OpID < out[j].OpID
	})
	return out
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}
