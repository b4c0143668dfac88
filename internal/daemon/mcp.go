package daemon

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/config"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/policy"
	"github.com/bangerdev/banger/internal/vmlife"
)

// The [mcp] limits of config.toml apply to requests whose origin is
// model.OriginMCP (sent by `banger mcp`). They are checked here, in the
// daemon, so an MCP client (an agent) cannot lift them by asking the
// server differently.

func checkOrigin(origin string) error {
	if origin != "" && origin != model.OriginMCP {
		return api.Errorf(api.CodeInvalidArgument, "unknown request origin %q (want %q or none)", origin, model.OriginMCP)
	}
	return nil
}

// mcpCheckCreate applies [mcp] to a create from MCP, given the VMs that
// exist: it refuses a VM beyond max_vms, above max_memory or on the shared
// network when allow_network is false, and lowers a defaulted memory size
// to max_memory.
func mcpCheckCreate(lim config.MCP, existing []model.VM, p *api.VMCreate) error {
	var mine []string
	for _, vm := range existing {
		if vm.Origin == model.OriginMCP {
			mine = append(mine, vm.Name)
		}
	}
	if len(mine) >= lim.MaxVMs {
		return api.Errorf(api.CodeFailedPrecondition,
			"mcp.max_vms reached: %d VMs created through MCP exist (%s); remove one (vm_remove) or raise [mcp] max_vms in config.toml",
			len(mine), strings.Join(mine, ", "))
	}
	switch {
	case p.MemoryMiB < 0:
		return api.Errorf(api.CodeInvalidArgument, "memory %d MiB is negative", p.MemoryMiB)
	case p.MemoryMiB == 0:
		p.MemoryMiB = min(vmlife.DefaultMemoryMiB, lim.MaxMemory)
	case p.MemoryMiB > lim.MaxMemory:
		return api.Errorf(api.CodePermissionDenied,
			"memory %d MiB is above mcp.max_memory (%d MiB): ask for less, or raise [mcp] max_memory in config.toml",
			p.MemoryMiB, lim.MaxMemory)
	}
	if !lim.AllowNetwork {
		if p.Network == model.NetworkShared {
			return api.Errorf(api.CodePermissionDenied,
				"network %q is refused for VMs created through MCP: [mcp] allow_network is false in config.toml", model.NetworkShared)
		}
		p.Network = model.NetworkIsolated
		p.Policy = policy.Merge(p.Policy, mcpNoEgress())
	}
	return nil
}

// mcpNoEgress is the policy allow_network = false adds to an MCP VM: the
// host drops its traffic to every IPv4 destination (NAT egress, other
// VMs), on top of the isolated network. Exec and files go over the agent
// channel, which is not IP.
func mcpNoEgress() model.VMPolicy {
	return model.VMPolicy{DenyEgress: []string{"0.0.0.0/0"}}
}

// mcpCheckFork applies [mcp] to a fork from MCP of count clones of
// memoryMiB each (the snapshot's: a clone cannot be resized): max_vms
// counts every clone, max_memory the snapshot's memory, and with
// allow_network false the clones are isolated and denied all egress
// whatever the snapshot's network.
func mcpCheckFork(lim config.MCP, existing []model.VM, memoryMiB int, p *vmlife.ForkRequest) error {
	var mine []string
	for _, vm := range existing {
		if vm.Origin == model.OriginMCP {
			mine = append(mine, vm.Name)
		}
	}
	if p.Count < 0 {
		return api.Errorf(api.CodeInvalidArgument, "fork count %d is negative", p.Count)
	}
	count := max(p.Count, 1)
	if len(mine)+count > lim.MaxVMs {
		return api.Errorf(api.CodeFailedPrecondition,
			"mcp.max_vms would be exceeded: %d VMs created through MCP exist (%s) and %d more were asked for, at most %d; remove some (vm_remove), fork fewer or raise [mcp] max_vms in config.toml",
			len(mine), strings.Join(mine, ", "), count, lim.MaxVMs)
	}
	if memoryMiB > lim.MaxMemory {
		return api.Errorf(api.CodePermissionDenied,
			"%q has %d MiB of memory, above mcp.max_memory (%d MiB): a clone keeps its snapshot's memory; fork a smaller snapshot, or raise [mcp] max_memory in config.toml",
			p.From, memoryMiB, lim.MaxMemory)
	}
	if !lim.AllowNetwork {
		p.Isolated = true
		p.Policy = policy.Merge(p.Policy, mcpNoEgress())
	}
	return nil
}

// mcpFork serialises an MCP fork with MCP creates (see mcpCreate), after
// checking it against [mcp] with the memory of what it forks from.
func (d *Daemon) mcpFork(ctx context.Context, p *vmlife.ForkRequest) (unlock func(), err error) {
	d.mcpMu.Lock()
	err = func() error {
		memory := 0
		if sn, err := d.vms.GetSnapshot(ctx, p.From); err == nil {
			memory = sn.MemoryMiB
		} else if vm, verr := d.vms.Get(ctx, p.From); verr == nil {
			memory = vm.MemoryMiB
		} else {
			return err
		}
		vms, err := d.vms.List(ctx)
		if err != nil {
			return err
		}
		return mcpCheckFork(d.cfg.MCP, vms, memory, p)
	}()
	if err != nil {
		d.mcpMu.Unlock()
		return nil, err
	}
	return d.mcpMu.Unlock, nil
}

// mcpCheckForward refuses a port forward from MCP when allow_network is false.
func mcpCheckForward(lim config.MCP, origin string) error {
	if origin == model.OriginMCP && !lim.AllowNetwork {
		return api.Errorf(api.CodePermissionDenied,
			"port forwarding is refused through MCP: [mcp] allow_network is false in config.toml")
	}
	return nil
}

// execTimeout is how long an exec may run: what it asked for, and for MCP
// at most [mcp] default_timeout (also its default). 0 means no limit.
func execTimeout(lim config.MCP, origin string, askedSeconds int) (time.Duration, error) {
	if askedSeconds < 0 {
		return 0, api.Errorf(api.CodeInvalidArgument, "exec timeout %d s is negative", askedSeconds)
	}
	asked := time.Duration(askedSeconds) * time.Second
	if origin != model.OriginMCP {
		return asked, nil
	}
	limit, err := lim.Timeout()
	if err != nil {
		return 0, fmt.Errorf("mcp exec timeout: %w", err)
	}
	if asked == 0 || asked > limit {
		return limit, nil
	}
	return asked, nil
}

// mcpCreate serialises creates from MCP so two of them cannot both pass
// the max_vms check before either VM is stored.
func (d *Daemon) mcpCreate(ctx context.Context, p *api.VMCreate) (unlock func(), err error) {
	d.mcpMu.Lock()
	vms, err := d.vms.List(ctx)
	if err == nil {
		err = mcpCheckCreate(d.cfg.MCP, vms, p)
	}
	if err != nil {
		d.mcpMu.Unlock()
		return nil, err
	}
	return d.mcpMu.Unlock, nil
}
