package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/policy"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/vmlife"
	"github.com/bangerdev/banger/internal/vmm"
)

func (d *Daemon) vmMethods(m *rpc.Methods) {
	rpc.Register(m, api.MethodVMCreate, d.vmCreate)
	rpc.Register(m, api.MethodVMStart, d.vmStart)
	rpc.Register(m, api.MethodVMStop, d.vmStop)
	rpc.Register(m, api.MethodVMRestart, d.vmRestart)
	rpc.Register(m, api.MethodVMRemove, d.vmRemove)
	rpc.Register(m, api.MethodVMList, d.vmList)
	rpc.Register(m, api.MethodVMGet, d.vmGet)
	rpc.Register(m, api.MethodVMLogs, d.vmLogs)
	rpc.Register(m, api.MethodVMExec, d.vmExec)
	rpc.Register(m, api.MethodVMSuspend, d.vmSuspend)
	rpc.Register(m, api.MethodVMResume, d.vmResume)
}

func (d *Daemon) vmSuspend(ctx context.Context, c *rpc.Call, p api.VMRef) (model.VM, error) {
	c.SetTarget(p.Name)
	return d.vms.Suspend(ctx, p.Name, c.ProgressFunc())
}

func (d *Daemon) vmResume(ctx context.Context, c *rpc.Call, p api.VMRef) (model.VM, error) {
	c.SetTarget(p.Name)
	return d.vms.Resume(ctx, p.Name, c.ProgressFunc())
}

func (d *Daemon) vmCreate(ctx context.Context, c *rpc.Call, p api.VMCreate) (model.VM, error) {
	c.SetTarget(p.Name)
	if err := checkOrigin(p.Origin); err != nil {
		return model.VM{}, err
	}
	if p.Origin == model.OriginMCP {
		unlock, err := d.mcpCreate(ctx, &p)
		if err != nil {
			return model.VM{}, err
		}
		defer unlock()
	}
	if p.VMM == "" || p.VMM == model.VMMAuto {
		p.VMM = d.cfg.VMM // config.toml's default (itself "auto" unless set)
	}
	// A VM's policy is config.toml's [policy] plus its create flags, fixed
	// at create: a later config change does not loosen existing VMs.
	p.Policy = policy.Merge(d.cfg.Policy.VMPolicy(), p.Policy)
	return d.vms.Create(ctx, vmlife.CreateRequest(p), c.ProgressFunc())
}

func (d *Daemon) vmStart(ctx context.Context, c *rpc.Call, p api.VMRef) (model.VM, error) {
	c.SetTarget(p.Name)
	return d.vms.Start(ctx, p.Name, c.ProgressFunc())
}

func (d *Daemon) vmStop(ctx context.Context, c *rpc.Call, p api.VMStop) (model.VM, error) {
	c.SetTarget(p.Name)
	return d.vms.Stop(ctx, p.Name, p.Force, time.Duration(p.TimeoutSeconds)*time.Second)
}

func (d *Daemon) vmRestart(ctx context.Context, c *rpc.Call, p api.VMStop) (model.VM, error) {
	c.SetTarget(p.Name)
	return d.vms.Restart(ctx, p.Name, time.Duration(p.TimeoutSeconds)*time.Second, c.ProgressFunc())
}

func (d *Daemon) vmRemove(ctx context.Context, c *rpc.Call, p api.VMRemove) (api.Empty, error) {
	c.SetTarget(p.Name)
	if err := d.vms.Remove(ctx, p.Name, p.Force); err != nil {
		return api.Empty{}, err
	}
	// Drop the removed VM from the ssh_config include and known_hosts.
	if err := d.refreshSSHFiles(ctx); err != nil {
		c.Log.WarnContext(ctx, "refresh ssh files after rm", "err", err)
	}
	return api.Empty{}, nil
}

func (d *Daemon) vmList(ctx context.Context, c *rpc.Call, _ api.Empty) (api.VMList, error) {
	vms, err := d.vms.List(ctx)
	if err != nil {
		return api.VMList{}, err
	}
	if vms == nil {
		vms = []model.VM{}
	}
	return api.VMList{VMs: vms}, nil
}

func (d *Daemon) vmGet(ctx context.Context, c *rpc.Call, p api.VMRef) (model.VM, error) {
	vm, err := d.vms.Get(ctx, p.Name)
	if err == nil && d.pub != nil {
		vm.Forwards = d.pub.Forwards(vm.ID)
	}
	return vm, err
}

// vmLogs streams the serial console; with Follow it keeps streaming until
// the client goes away.
func (d *Daemon) vmLogs(ctx context.Context, c *rpc.Call, p api.VMLogs) (api.Empty, error) {
	vm, err := d.vms.Get(ctx, p.Name)
	if err != nil {
		return api.Empty{}, err
	}
	path := vmlife.ConsoleLog(vm)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return api.Empty{}, api.Errorf(api.CodeNotFound, "vm %q has no console log yet (it has not been started)", vm.Name)
	} else if err != nil {
		return api.Empty{}, fmt.Errorf("open console log of vm %q: %w", vm.Name, err)
	}
	defer f.Close()
	if p.Lines > 0 {
		tail, err := vmm.TailFile(path, p.Lines)
		if err != nil {
			return api.Empty{}, err
		}
		if err := c.Send(api.KindLog, []byte(tail+"\n")); err != nil {
			return api.Empty{}, err
		}
		if _, err := f.Seek(0, io.SeekEnd); err != nil {
			return api.Empty{}, err
		}
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if serr := c.Send(api.KindLog, buf[:n]); serr != nil {
				return api.Empty{}, serr
			}
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return api.Empty{}, fmt.Errorf("read console log: %w", err)
		}
		if !p.Follow {
			return api.Empty{}, nil
		}
		// Following: the file grows as the guest prints. A short poll is
		// bounded by the client's lifetime (ctx ends when it disconnects).
		select {
		case <-ctx.Done():
			return api.Empty{}, nil
		case <-time.After(200 * time.Millisecond):
		}
		if st, err := f.Stat(); err == nil {
			if off, _ := f.Seek(0, io.SeekCurrent); st.Size() < off {
				_, _ = f.Seek(0, io.SeekStart) // trimmed under us
			}
		}
	}
}
