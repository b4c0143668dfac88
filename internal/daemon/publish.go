package daemon

import (
	"context"
	"time"

	"github.com/bangerdev/banger/internal/events"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/opid"
	"github.com/bangerdev/banger/internal/policy"
	"github.com/bangerdev/banger/internal/vmforward"
)

// startPublishing runs published ports for the daemon's lifetime: a VM's
// forwards start when it is ready (or resumed, or re-adopted) and end
// when it stops, fails, is suspended or removed. It follows the event bus,
// so the lifecycle never waits for it.
func (d *Daemon) startPublishing(ctx context.Context) {
	d.pub = vmforward.NewPublisher(ctx, d.log.With("component", "publish"), d.events)
	go func() {
		for ctx.Err() == nil {
			sub := d.events.Subscribe()
			d.reconcilePublished(ctx) // VMs already running (re-adopted), or missed while dropped
			d.followPublishEvents(ctx, sub)
			sub.Cancel()
		}
	}()
}

func (d *Daemon) followPublishEvents(ctx context.Context, sub *events.Subscription) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-sub.C():
			if !ok {
				d.log.Warn("publish fell behind the event bus; resynchronising")
				time.Sleep(100 * time.Millisecond)
				return
			}
			d.onPublishEvent(ctx, ev)
		}
	}
}

func (d *Daemon) onPublishEvent(ctx context.Context, ev events.Event) {
	switch ev.Kind {
	case events.KindReady, events.KindResumed:
		vm, err := d.store.GetVM(ctx, ev.VMID)
		if err == nil && vm.State == model.StateRunning {
			d.pub.Start(vm, d.resolveGuest(vm.Name))
		}
	case events.KindStopping, events.KindStopped, events.KindError, events.KindSuspended, events.KindRemoved:
		d.pub.Stop(ev.VMID)
	}
}

// reconcilePublished starts forwards for every running VM that publishes.
func (d *Daemon) reconcilePublished(ctx context.Context) {
	vms, err := d.store.ListVMs(ctx)
	if err != nil {
		d.log.Error("publish: list vms", "err", err)
		return
	}
	for _, vm := range vms {
		if vm.State == model.StateRunning && (vm.Publish.All || len(vm.Publish.Ports) > 0) && d.pub.Forwards(vm.ID) == nil {
			d.pub.Start(vm, d.resolveGuest(vm.Name))
		}
	}
}

func (d *Daemon) resolveGuest(name string) vmforward.Resolve {
	return func(ctx context.Context) (vmforward.Guest, policy.VM, error) {
		ctx = opid.WithVM(opid.With(ctx, opid.NewPrefixed("bg-publish")), name)
		vm, ga, err := d.agentOf(ctx, name, "publishing")
		if err != nil {
			return nil, policy.VM{}, err
		}
		pol, err := policy.FromModel(vm)
		if err != nil {
			return nil, policy.VM{}, err
		}
		return ga, pol, nil
	}
}
