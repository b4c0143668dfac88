package api

import "github.com/bangerdev/banger/internal/model"

// Snapshot, fork and template methods of the owner daemon.
var (
	MethodVMSnapshot     = Method[VMSnapshot, model.Snapshot]{Name: "vm.snapshot", Tracked: true}
	MethodVMFork         = Method[VMFork, ForkResult]{Name: "vm.fork", Tracked: true}
	MethodSnapshotList   = Method[Empty, []model.Snapshot]{Name: "snapshot.list", Tracked: true}
	MethodSnapshotGet    = Method[SnapshotRef, model.Snapshot]{Name: "snapshot.get", Tracked: true}
	MethodSnapshotRemove = Method[SnapshotRemove, Empty]{Name: "snapshot.rm", Tracked: true}
	MethodTemplateCreate = Method[TemplateCreate, model.Snapshot]{Name: "template.create", Tracked: true}
	MethodTemplateMatch  = Method[TemplateMatch, TemplateMatchResult]{Name: "template.match", Tracked: true}
)

// VMSnapshot is vm.snapshot's params.
type VMSnapshot struct {
	Name string `json:"name"`           // the VM
	As   string `json:"as,omitempty"`   // the snapshot's name
	Stop bool   `json:"stop,omitempty"` // end the VM afterwards
}

// VMFork is vm.fork's params.
type VMFork struct {
	From   string        `json:"from"` // snapshot, template or running VM
	Name   string        `json:"name,omitempty"`
	Count  int           `json:"count,omitempty"`
	VMM    model.VMMKind `json:"vmm,omitempty"`
	Kernel string        `json:"kernel,omitempty"`
	// Origin "mcp" puts the fork under config.toml's [mcp] limits
	// (max_vms, max_memory with the snapshot's memory, allow_network).
	Origin string `json:"origin,omitempty"`
}

// ForkResult is vm.fork's answer.
type ForkResult struct {
	Snapshot model.Snapshot `json:"snapshot"`
	VMs      []model.VM     `json:"vms"`
}

// SnapshotRef names one snapshot or template.
type SnapshotRef struct {
	Name string `json:"name"`
}

// SnapshotRemove is snapshot.rm's params.
type SnapshotRemove struct {
	Name  string `json:"name"`
	Force bool   `json:"force,omitempty"`
}

// TemplateCreate is template.create's params: a VM is created from Image,
// booted, provisioned with Run (sh -c, through the agent), quiesced and
// snapshotted as the template, then removed.
type TemplateCreate struct {
	Name      string        `json:"name"`
	Image     string        `json:"image,omitempty"`
	Kernel    string        `json:"kernel,omitempty"`
	VMM       model.VMMKind `json:"vmm,omitempty"`
	CPUs      int           `json:"cpus,omitempty"`
	MemoryMiB int           `json:"memory_mib,omitempty"`
	DiskBytes int64         `json:"disk_bytes,omitempty"`
	Network   string        `json:"network,omitempty"`
	Run       string        `json:"run,omitempty"`
}

// TemplateMatch asks for a template fitting a vm run's shape (zero: defaults).
type TemplateMatch struct {
	Image     string         `json:"image,omitempty"`
	Kernel    string         `json:"kernel,omitempty"`
	VMM       model.VMMKind  `json:"vmm,omitempty"`
	CPUs      int            `json:"cpus,omitempty"`
	MemoryMiB int            `json:"memory_mib,omitempty"`
	DiskBytes int64          `json:"disk_bytes,omitempty"`
	InitMode  model.InitMode `json:"init_mode,omitempty"`
	Network   string         `json:"network,omitempty"`
	// Policy is the run's own policy flags (config defaults are added).
	Policy model.VMPolicy `json:"policy,omitzero"`
}

// TemplateMatchResult names the matching template, "" when none.
type TemplateMatchResult struct {
	Template string `json:"template,omitempty"`
}
