package daemon

import (
	"context"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/vmlife"
)

func (d *Daemon) snapshotMethods(m *rpc.Methods) {
	rpc.Register(m, api.MethodVMSnapshot, d.vmSnapshot)
	rpc.Register(m, api.MethodVMFork, d.vmFork)
	rpc.Register(m, api.MethodSnapshotList, d.snapshotList)
	rpc.Register(m, api.MethodSnapshotGet, d.snapshotGet)
	rpc.Register(m, api.MethodSnapshotRemove, d.snapshotRemove)
}

func (d *Daemon) vmSnapshot(ctx context.Context, c *rpc.Call, p api.VMSnapshot) (model.Snapshot, error) {
	c.SetTarget(p.Name)
	return d.vms.Snapshot(ctx, vmlife.SnapshotRequest{VM: p.Name, As: p.As, Stop: p.Stop}, c.ProgressFunc())
}

func (d *Daemon) vmFork(ctx context.Context, c *rpc.Call, p api.VMFork) (api.ForkResult, error) {
	c.SetTarget(p.From)
	if err := checkOrigin(p.Origin); err != nil {
		return api.ForkResult{}, err
	}
	req := vmlife.ForkRequest{From: p.From, Name: p.Name, Count: p.Count, VMM: p.VMM, Kernel: p.Kernel, Origin: p.Origin}
	if p.Origin == model.OriginMCP {
		unlock, err := d.mcpFork(ctx, &req)
		if err != nil {
			return api.ForkResult{}, err
		}
		defer unlock()
	}
	res, err := d.vms.Fork(ctx, req, c.ProgressFunc())
	if err != nil {
		return api.ForkResult{}, err
	}
	return api.ForkResult{Snapshot: res.Snapshot, VMs: res.VMs}, nil
}

func (d *Daemon) snapshotList(ctx context.Context, c *rpc.Call, _ api.Empty) ([]model.Snapshot, error) {
	return d.vms.ListSnapshots(ctx)
}

func (d *Daemon) snapshotGet(ctx context.Context, c *rpc.Call, p api.SnapshotRef) (model.Snapshot, error) {
	c.SetTarget(p.Name)
	return d.vms.GetSnapshot(ctx, p.Name)
}

func (d *Daemon) snapshotRemove(ctx context.Context, c *rpc.Call, p api.SnapshotRemove) (api.Empty, error) {
	c.SetTarget(p.Name)
	return api.Empty{}, d.vms.RemoveSnapshot(ctx, p.Name, p.Force)
}
