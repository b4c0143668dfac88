// Package events is the daemon's lifecycle event bus: VM state changes and
// snapshots are published once and fanned out to subscribers such as
// `banger events` and `banger vm ls -w`. Publishing never blocks: a
// subscriber that falls behind by more than its buffer is dropped, told so,
// and may subscribe again.
package events

import (
	"context"
	"sync"
	"time"

	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/opid"
)

// Event kinds. VM kinds follow the lifecycle's states; other kinds (a
// snapshot's) are published by whoever does the work.
const (
	KindCreated   = "created"   // the VM's disk, network and record exist
	KindStarted   = "started"   // a boot began
	KindReady     = "ready"     // the guest agent answered
	KindStopping  = "stopping"  // a stop was asked for
	KindStopped   = "stopped"   // the VMM is gone
	KindError     = "error"     // the VM failed; Reason says why
	KindSuspended = "suspended" // memory and device state saved, VMM gone
	KindResumed   = "resumed"   // running again from saved state
	KindRemoved   = "removed"   // the VM and its files are gone

	// Published ports (vm create/run --publish-all, -p): Reason says
	// which host address leads to which guest port.
	KindPortPublished   = "port.published"
	KindPortUnpublished = "port.unpublished"
	KindPortError       = "port.error"

	KindSnapshotCreated = "snapshot.created"
	KindSnapshotRemoved = "snapshot.removed"
)

// Event is one thing that happened to a VM (or one of its objects).
type Event struct {
	Time   time.Time     `json:"time"`
	Kind   string        `json:"kind"`
	VM     string        `json:"vm"`
	VMID   string        `json:"vm_id,omitempty"`
	State  model.VMState `json:"state,omitempty"`
	Reason string        `json:"reason,omitempty"`
	// Snapshot names the snapshot of a snapshot.* event.
	Snapshot string `json:"snapshot,omitempty"`
	OpID     string `json:"op_id,omitempty"`
}

// DefaultBuffer is how many events a subscriber may fall behind by.
const DefaultBuffer = 256

// Bus fans events out to subscribers. The zero value is not usable; a nil
// *Bus drops everything, so code may publish without checking.
type Bus struct {
	now    func() time.Time
	buffer int

	mu   sync.Mutex
	subs map[*Subscription]struct{}
}

// New returns a bus whose subscribers each buffer up to buffer events
// (DefaultBuffer when 0).
func New(now func() time.Time, buffer int) *Bus {
	if now == nil {
		now = time.Now
	}
	if buffer <= 0 {
		buffer = DefaultBuffer
	}
	return &Bus{now: now, buffer: buffer, subs: map[*Subscription]struct{}{}}
}

// Subscription receives events until it is cancelled or dropped.
type Subscription struct {
	bus     *Bus
	ch      chan Event
	dropped bool // set under bus.mu before ch is closed
}

// C delivers events; it is closed when the subscription ends.
func (s *Subscription) C() <-chan Event { return s.ch }

// Dropped reports whether the bus ended the subscription because it fell
// behind (only meaningful once C is closed).
func (s *Subscription) Dropped() bool {
	s.bus.mu.Lock()
	defer s.bus.mu.Unlock()
	return s.dropped
}

// Cancel ends the subscription; idempotent.
func (s *Subscription) Cancel() {
	s.bus.mu.Lock()
	defer s.bus.mu.Unlock()
	if _, ok := s.bus.subs[s]; ok {
		delete(s.bus.subs, s)
		close(s.ch)
	}
}

// Subscribe starts a subscription; the caller must Cancel it.
func (b *Bus) Subscribe() *Subscription {
	s := &Subscription{bus: b, ch: make(chan Event, b.buffer)}
	b.mu.Lock()
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	return s
}

// Subscribers is how many subscriptions are live.
func (b *Bus) Subscribers() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

// Publish hands ev to every subscriber without blocking: one whose buffer
// is full is dropped. Time and op_id are filled in when empty.
func (b *Bus) Publish(ctx context.Context, ev Event) {
	if b == nil {
		return
	}
	if ev.Time.IsZero() {
		ev.Time = b.now()
	}
	if ev.OpID == "" {
		ev.OpID = opid.From(ctx)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		select {
		case s.ch <- ev:
		default:
			s.dropped = true
			delete(b.subs, s)
			close(s.ch)
		}
	}
}

// FromTransition names the event a VM state change is, or "" for changes
// that are not worth an event (e.g. into creating).
func FromTransition(from, to model.VMState, reason string) string {
	switch to {
	case model.StateStopped:
		if from == model.StateCreating {
			return KindCreated
		}
		return KindStopped
	case model.StateStarting:
		return KindStarted
	case model.StateRunning:
		if from == model.StateSuspended {
			return KindResumed
		}
		return KindReady
	case model.StateStopping:
		return KindStopping
	case model.StateError:
		return KindError
	case model.StateSuspended:
		return KindSuspended
	}
	return ""
}
