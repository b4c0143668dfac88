package daemon

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/policy"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/termsafe"
	"github.com/bangerdev/banger/internal/vmlife"
)

// templateRunTimeout bounds a template's provisioning command.
const templateRunTimeout = 30 * time.Minute

func (d *Daemon) templateMethods(m *rpc.Methods) {
	rpc.Register(m, api.MethodTemplateCreate, d.templateCreate)
	rpc.Register(m, api.MethodTemplateMatch, d.templateMatch)
}

// templateCreate boots a VM from the image, runs the provisioning command
// in it, snapshots it (quiesced) as a template and removes the VM. On any
// failure the VM goes and no template is recorded.
func (d *Daemon) templateCreate(ctx context.Context, c *rpc.Call, p api.TemplateCreate) (model.Snapshot, error) {
	c.SetTarget(p.Name)
	if err := model.ValidateSnapshotName(p.Name); err != nil {
		return model.Snapshot{}, api.Errorf(api.CodeInvalidArgument, "%v", err)
	}
	if _, err := d.vms.GetSnapshot(ctx, p.Name); err == nil {
		return model.Snapshot{}, api.Errorf(api.CodeAlreadyExists, "template %q already exists: pick another name, or remove it (banger snapshot rm %s)", p.Name, p.Name)
	}
	if p.VMM == "" || p.VMM == model.VMMAuto {
		p.VMM = d.cfg.VMM
	}
	// The VM is named after the template (cut to a VM name's length) with
	// a random tail, so it cannot collide with a user's VM.
	base := "tmpl-" + p.Name
	if len(base) > 50 {
		base = strings.TrimRight(base[:50], "-")
	}
	suffix, err := model.NewSnapshotID()
	if err != nil {
		return model.Snapshot{}, err
	}
	name := base + "-" + suffix[:8]
	vm, err := d.vms.Create(ctx, vmlife.CreateRequest{
		Name: name, Image: p.Image, Kernel: p.Kernel, VMM: p.VMM, CPUs: p.CPUs, MemoryMiB: p.MemoryMiB,
		DiskBytes: p.DiskBytes, Network: p.Network, Start: true,
		Policy: policy.Merge(d.cfg.Policy.VMPolicy(), model.VMPolicy{}),
	}, c.ProgressFunc())
	if err != nil {
		return model.Snapshot{}, fmt.Errorf("template %q: boot its vm: %w", p.Name, err)
	}
	defer func() {
		if err := d.vms.Remove(context.WithoutCancel(ctx), vm.ID, true); err != nil {
			c.Log.WarnContext(ctx, "remove the template's vm", "vm", vm.Name, "err", err)
		}
	}()
	if p.Run != "" {
		c.ProgressFunc().Stage("provision", "running: "+p.Run)
		_, ga, err := d.agentOf(ctx, vm.Name, "exec")
		if err != nil {
			return model.Snapshot{}, err
		}
		rctx, cancel := context.WithTimeout(ctx, templateRunTimeout)
		var out tailBuffer
		code, err := ga.Exec(rctx, agentproto.ExecRequest{Argv: []string{"sh", "-c", p.Run}}, bytes.NewReader(nil), &out, &out, nil, nil)
		cancel()
		if err != nil {
			return model.Snapshot{}, fmt.Errorf("template %q: run %q: %w", p.Name, p.Run, err)
		}
		if code != 0 {
			return model.Snapshot{}, api.Errorf(api.CodeFailedPrecondition, "template %q: %q exited with %d, no template made; its last output:\n%s",
				p.Name, p.Run, code, termsafe.Text(out.String()))
		}
	}
	sn, err := d.vms.Snapshot(ctx, vmlife.SnapshotRequest{VM: vm.ID, As: p.Name, Stop: true, Kind: model.SnapshotKindTemplate}, c.ProgressFunc())
	if err != nil {
		return model.Snapshot{}, fmt.Errorf("template %q: %w", p.Name, err)
	}
	return sn, nil
}

func (d *Daemon) templateMatch(ctx context.Context, c *rpc.Call, p api.TemplateMatch) (api.TemplateMatchResult, error) {
	if p.VMM == "" || p.VMM == model.VMMAuto {
		p.VMM = d.cfg.VMM
	}
	name, err := d.vms.MatchTemplate(ctx, vmlife.CreateRequest{
		Image: p.Image, Kernel: p.Kernel, VMM: p.VMM, CPUs: p.CPUs, MemoryMiB: p.MemoryMiB, DiskBytes: p.DiskBytes,
		InitMode: p.InitMode, Network: p.Network, Policy: policy.Merge(d.cfg.Policy.VMPolicy(), p.Policy),
	})
	if err != nil {
		return api.TemplateMatchResult{}, err
	}
	return api.TemplateMatchResult{Template: name}, nil
}

// tailBuffer keeps the last 4 KiB written to it.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 4<<10 {
		t.b = t.b[len(t.b)-4<<10:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }
