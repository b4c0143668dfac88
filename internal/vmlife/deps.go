// Package vmlife is the VM lifecycle the owner daemon runs: create, start,
// stop, restart, remove, re-adopt after a daemon restart, and watch for VMMs
// that die. Boot is a named chain of steps with validation first; a failure
// undoes every step done so far (LIFO) and reports the step and the
// console's last lines.
package vmlife

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/bangerdev/banger/internal/events"
	"github.com/bangerdev/banger/internal/guest/guestconfig"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/vmm"
)

// Agent is what the lifecycle needs of a guest agent client.
type Agent interface {
	// Health returns the guest's boot_id once the agent answers.
	Health(ctx context.Context) (bootID string, err error)
	// Poweroff asks the guest to shut down cleanly.
	Poweroff(ctx context.Context) error
	Close() error
}

// Network gives a VM its address and tap (through the root helper). Nil
// means VMs boot without a network interface.
type Network interface {
	Attach(ctx context.Context, vm model.VM) (Attachment, error)
	// Detach frees the tap and lease; idempotent.
	Detach(ctx context.Context, vm model.VM) error
	// OpenTap opens the attached VM's tap (the root helper does: an
	// unprivileged owner may not open /dev/net/tun) for a VMM that takes
	// an open descriptor. The caller closes it once the VMM has started.
	OpenTap(ctx context.Context, vm model.VM) (*os.File, error)
}

// VMMCgroups moves a VMM out of the daemon's cgroup into one of its own
// (through the root helper), so stopping or killing the daemon's service
// never reaches it. Nil means VMMs stay where they started.
type VMMCgroups interface {
	AdoptVMM(ctx context.Context, vmID string, pid int, startTime uint64) error
}

// Attachment is a VM's network identity.
type Attachment struct {
	Tap   string
	MAC   string
	Guest *guestconfig.Network
}

// Deps are the lifecycle's collaborators, injected.
type Deps struct {
	Store *store.Store
	Paths paths.User
	Log   *slog.Logger
	// Drivers by kind; Select picks one for a preference (model.VMMAuto or a kind).
	Drivers map[model.VMMKind]vmm.Driver
	Select  func(ctx context.Context, pref model.VMMKind) (vmm.Driver, error)
	// Initramfs returns the guest initramfs for a kernel (built or cached).
	Initramfs func(ctx context.Context, k model.Kernel) (string, error)
	// DialAgent makes an agent client for a running VM's endpoint; an
	// endpoint kind it does not know is an error naming it.
	DialAgent func(ep vmm.AgentEndpoint) (Agent, error)
	Network   Network
	Cgroups   VMMCgroups
	// AuthorizedKeys are put into every guest (banger's SSH key).
	AuthorizedKeys func(ctx context.Context) []string
	// DNS servers handed to guests.
	Now func() time.Time
	// ReadyTimeout bounds the wait for the agent after the VMM starts; TCG
	// boots are slow on loaded machines.
	ReadyTimeout time.Duration
	// HostCPUs and HostMemoryMiB bound what a VM may ask for.
	HostCPUs      int
	HostMemoryMiB int
	// ConsoleMaxBytes bounds each VM's console log.
	ConsoleMaxBytes int64
	// Events receives lifecycle events the store does not see (snapshots:
	// m.d.Events.Publish(ctx, events.Event{Kind: events.KindSnapshotCreated, ...})).
	// State changes are published by the daemon from the store. May be nil.
	Events *events.Bus
}
