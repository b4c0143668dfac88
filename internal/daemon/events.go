package daemon

import (
	"context"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/events"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/rpc"
)

func (d *Daemon) eventMethods(m *rpc.Methods) {
	rpc.Register(m, api.MethodEventsWatch, d.eventsWatch)
}

// observeVM turns committed VM changes into lifecycle events. It runs on
// the lifecycle's path, so it only hands the event to the bus, which never
// blocks.
func (d *Daemon) observeVM(ctx context.Context, prev, cur *model.VM) {
	switch {
	case prev == nil && cur != nil:
		// Into creating: the "created" event comes once the VM is parked.
		return
	case cur == nil && prev != nil:
		d.events.Publish(ctx, events.Event{Kind: events.KindRemoved, VM: prev.Name, VMID: prev.ID})
	case prev != nil && cur != nil && (prev.State != cur.State || cur.State == model.StateError && prev.StateReason != cur.StateReason):
		kind := events.FromTransition(prev.State, cur.State, cur.StateReason)
		if kind == "" {
			return
		}
		d.events.Publish(ctx, events.Event{Kind: kind, VM: cur.Name, VMID: cur.ID, State: cur.State, Reason: cur.StateReason})
	}
}

// eventsWatch streams events until the client goes away. A client that
// cannot keep up is dropped with an error saying so, rather than slowing
// the lifecycle down.
func (d *Daemon) eventsWatch(ctx context.Context, c *rpc.Call, p api.EventsWatch) (api.Empty, error) {
	sub := d.events.Subscribe()
	defer sub.Cancel()
	if err := c.Send(api.KindSubscribed, nil); err != nil {
		return api.Empty{}, err
	}
	for {
		select {
		case <-ctx.Done():
			return api.Empty{}, nil
		case ev, ok := <-sub.C():
			if !ok {
				return api.Empty{}, api.Errorf(api.CodeUnavailable, "events: this watcher fell more than %d events behind and was dropped; run the command again to resubscribe", events.DefaultBuffer)
			}
			if p.VM != "" && ev.VM != p.VM {
				continue
			}
			if err := c.Send(api.KindEvent, ev); err != nil {
				return api.Empty{}, err
			}
		}
	}
}
