package daemon

import (
	"context"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/vmlife"
)

func (d *Daemon) snapshotMethods(m map[string]rpc.Handler) {
	m[api.MethodVMSnapshot] = d.vmSnapshot
	m[api.MethodVMFork] = d.vmFork
	m[api.MethodSnapshotList] = d.snapshotList
	m[api.MethodSnapshotGet] = d.snapshotGet
	m[api.MethodSnapshotRemove] = d.snapshotRemove
}

func (d *Daemon) vmSnapshot(ctx context.Context, c *rpc.Call) (any, error) {
	var p api.VMSnapshot
	if err := c.Decode(&p); err != nil {
		return nil, err
	}
	c.SetTarget(p.Name)
	return d.vms.Snapshot(ctx, vmlife.SnapshotRequest{VM: p.Name, As: p.As, Stop: p.Stop}, c.ProgressFunc())
}

func (d *Daemon) vmFork(ctx context.Context, c *rpc.Call) (any, error) {
	var p api.VMFork
	if err := c.Decode(&p); err != nil {
		return nil, err
	}
	c.SetTarget(p.From)
	if err := checkOrigin(p.Origin); err != nil {
		return nil, err
	}
	req := vmlife.ForkRequest{From: p.From, Name: p.Name, Count: p.Count, VMM: p.VMM, Kernel: p.Kernel, Origin: p.Origin}
	if p.Origin == model.OriginMCP {
		unlock, err := d.mcpFork(ctx, &req)
		if err != nil {
			return nil, err
		}
		defer unlock()
	}
	res, err := d.vms.Fork(ctx, req, c.ProgressFunc())
	if err != nil {
		return nil, err
	}
	return api.ForkResult{Snapshot: res.Snapshot, VMs: res.VMs}, nil
}

func (d *Daemon) snapshotList(ctx context.Context, c *rpc.Call) (any, error) {
	return d.vms.ListSnapshots(ctx)
}

func (d *Daemon) snapshotGet(ctx context.Context, c *rpc.Call) (any, error) {
	var p api.SnapshotRef
	if err := c.Decode(&p); err != nil {
		return nil, err
	}
	c.SetTarget(p.Name)
	return d.vms.GetSnapshot(ctx, p.Name)
}

func (d *Daemon) snapshotRemove(ctx context.Context, c *rpc.Call) (any, error) {
	var p api.SnapshotRemove
	if err := c.Decode(&p); err != nil {
		return nil, err
	}
	c.SetTarget(p.Name)
	return api.Empty{}, d.vms.RemoveSnapshot(ctx, p.Name, p.Force)
}
