package mcpserver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/rpc"
)

// maxForkCount bounds vm_fork's count before the daemon sees it; the
// operator's [mcp] max_vms is the real bound, enforced by the daemon.
const maxForkCount = 64

// SnapshotInput is vm_snapshot's input.
type SnapshotInput struct {
	Name string `json:"name" jsonschema:"the running VM to snapshot"`
	As   string `json:"as,omitempty" jsonschema:"the snapshot's name (default: a generated one)"`
}

// ForkInput is vm_fork's input.
type ForkInput struct {
	From  string `json:"from" jsonschema:"a snapshot or template (snapshot_list), or a running VM to snapshot first"`
	Name  string `json:"name,omitempty" jsonschema:"the clone's name; with count > 1 a prefix (NAME-1, NAME-2, ...)"`
	Count int    `json:"count,omitempty" jsonschema:"how many clones (default 1; the operator's [mcp] max_vms bounds it)"`
}

// SnapshotInfo is a snapshot or template as tools report it.
type SnapshotInfo struct {
	Name      string    `json:"name"`
	Kind      string    `json:"kind" jsonschema:"snapshot or template"`
	SourceVM  string    `json:"source_vm,omitempty"`
	Image     string    `json:"image"`
	CPUs      int       `json:"cpus"`
	MemoryMiB int       `json:"memory_mib" jsonschema:"a clone's memory: the operator's [mcp] max_memory applies to it"`
	DiskBytes int64     `json:"disk_bytes"`
	Network   string    `json:"network"`
	CreatedAt time.Time `json:"created_at"`
	Users     []string  `json:"users,omitempty" jsonschema:"VMs forked from it"`
}

func snapshotInfo(sn model.Snapshot) SnapshotInfo {
	return SnapshotInfo{Name: sn.Name, Kind: sn.Kind, SourceVM: sn.SourceVM, Image: sn.Image, CPUs: sn.CPUs,
		MemoryMiB: sn.MemoryMiB, DiskBytes: sn.DiskBytes, Network: sn.Network, CreatedAt: sn.CreatedAt, Users: sn.Users}
}

// ForkOutput is vm_fork's result.
type ForkOutput struct {
	Snapshot SnapshotInfo `json:"snapshot" jsonschema:"what the clones were restored from"`
	VMs      []VMInfo     `json:"vms"`
}

// SnapshotListOutput is snapshot_list's result.
type SnapshotListOutput struct {
	Snapshots []SnapshotInfo `json:"snapshots"`
}

func (s *Server) registerSnapshots() {
	m := s.mcp
	mcp.AddTool(m, &mcp.Tool{Name: "vm_snapshot", Description: "Snapshot a running VM (memory, device state and disk) under a name; the VM keeps running. vm_fork or vm_run with from restore it in about a second."}, s.vmSnapshot)
	mcp.AddTool(m, &mcp.Tool{Name: "vm_fork", Description: "Make count new running VMs restored from a snapshot or template (or from a running VM, snapshotted first). Each clone has its own identity; all or none are made. Sends progress notifications."}, s.vmFork)
	mcp.AddTool(m, &mcp.Tool{Name: "snapshot_list", Description: "List snapshots and templates with their shape and the VMs forked from them."}, s.snapshotList)
}

func (s *Server) vmSnapshot(ctx context.Context, req *mcp.CallToolRequest, in SnapshotInput) (*mcp.CallToolResult, SnapshotInfo, error) {
	if in.Name == "" {
		return nil, SnapshotInfo{}, errors.New("name is empty: give the running VM's name (vm_list shows them)")
	}
	if in.As != "" {
		if err := model.ValidateSnapshotName(in.As); err != nil {
			return nil, SnapshotInfo{}, fmt.Errorf("as: %w", err)
		}
	}
	p := api.VMSnapshot{Name: in.Name, As: in.As}
	sn, err := rpc.Invoke(ctx, s.c, api.MethodVMSnapshot, p, rpc.CallOptions{OnEvent: progressFunc(ctx, req)})
	if err != nil {
		return nil, SnapshotInfo{}, fmt.Errorf("snapshot vm %q: %w", in.Name, err)
	}
	return nil, snapshotInfo(sn), nil
}

func (s *Server) vmFork(ctx context.Context, req *mcp.CallToolRequest, in ForkInput) (*mcp.CallToolResult, ForkOutput, error) {
	if in.From == "" {
		return nil, ForkOutput{}, errors.New("from is empty: give a snapshot or template (snapshot_list) or a running VM")
	}
	if in.Count < 0 || in.Count > maxForkCount {
		return nil, ForkOutput{}, fmt.Errorf("count %d is outside 1..%d", in.Count, maxForkCount)
	}
	res, err := s.fork(ctx, req, api.VMFork{From: in.From, Name: in.Name, Count: in.Count})
	if err != nil {
		return nil, ForkOutput{}, err
	}
	out := ForkOutput{Snapshot: snapshotInfo(res.Snapshot), VMs: make([]VMInfo, 0, len(res.VMs))}
	for _, vm := range res.VMs {
		out.VMs = append(out.VMs, info(vm))
	}
	return nil, out, nil
}

// fork calls vm.fork as MCP: the daemon applies [mcp] to the clones.
func (s *Server) fork(ctx context.Context, req *mcp.CallToolRequest, p api.VMFork) (api.ForkResult, error) {
	p.Origin = model.OriginMCP
	res, err := rpc.Invoke(ctx, s.c, api.MethodVMFork, p, rpc.CallOptions{OnEvent: progressFunc(ctx, req)})
	if err != nil {
		return res, fmt.Errorf("fork from %q: %w", p.From, err)
	}
	return res, nil
}

func (s *Server) snapshotList(ctx context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, SnapshotListOutput, error) {
	l, err := rpc.Invoke(ctx, s.c, api.MethodSnapshotList, api.Empty{})
	if err != nil {
		return nil, SnapshotListOutput{}, fmt.Errorf("list snapshots: %w", err)
	}
	out := SnapshotListOutput{Snapshots: make([]SnapshotInfo, 0, len(l))}
	for _, sn := range l {
		out.Snapshots = append(out.Snapshots, snapshotInfo(sn))
	}
	return nil, out, nil
}

// restoreSource is what vm_run restores from ("" boots afresh): from, or
// template checked to be one. A restored VM has its snapshot's shape, so
// asking for another one is refused rather than ignored.
func (s *Server) restoreSource(ctx context.Context, in RunInput) (string, error) {
	if in.From == "" && in.Template == "" {
		return "", nil
	}
	if in.From != "" && in.Template != "" {
		return "", errors.New("from and template both name what to restore: give one")
	}
	for _, f := range []struct {
		name string
		set  bool
	}{{"image", in.Image != ""}, {"kernel", in.Kernel != ""}, {"cpus", in.CPUs != 0}, {"memory_mib", in.MemoryMiB != 0},
		{"disk_gib", in.DiskGiB != 0}, {"network", in.Network != ""}} {
		if f.set {
			return "", fmt.Errorf("%s cannot be combined with from or template: a VM restored from a snapshot has the snapshot's shape (snapshot_list shows it)", f.name)
		}
	}
	if in.From != "" {
		return in.From, nil
	}
	sn, err := rpc.Invoke(ctx, s.c, api.MethodSnapshotGet, api.SnapshotRef{Name: in.Template})
	if err != nil {
		return "", fmt.Errorf("template %q: %w", in.Template, err)
	}
	if sn.Kind != model.SnapshotKindTemplate {
		return "", fmt.Errorf("%q is a %s, not a template: give it as from instead", in.Template, sn.Kind)
	}
	return in.Template, nil
}
